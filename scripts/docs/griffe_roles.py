"""A griffe extension for the API reference: the code's docstrings cite other objects with
reST roles (``:func:`load_model```, ``:class:`~synister.models.ModelError```), which Markdown
would show as written; here they become code spans (the last part of a ``~`` name)."""

import re

import griffe

ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj):`(~?)([^`]+)`")


def _code(match: re.Match) -> str:
    short, name = match.groups()
    return f"`{name.rsplit('.', 1)[-1] if short else name}`"


class ReSTRoles(griffe.Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
