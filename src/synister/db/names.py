"""Names that become part of a prediction run's name, checked where the user gives them.

A prediction run is named ``<split>_<experiment>_t<train id>_p<predict number>`` and becomes a
table (SQLite, PostgreSQL) or collection (MongoDB) name. PostgreSQL cuts identifiers at 63
bytes, so the budget is split: at most :data:`MAX_NAME_BYTES` (24) bytes for the split name and
24 for the experiment name, plus the joining ``_``, leaves 14 bytes for the ``_t<id>_p<n>``
suffix (``_t123456_p1234``: ten digits for both numbers together). Checking both names here,
when ``split make`` and ``prepare-training`` are run, turns a failure days later at ``predict``
into an error at once.
"""

from __future__ import annotations

import re

from .base import DatabaseError

#: PostgreSQL's longest identifier (NAMEDATALEN - 1).
MAX_IDENTIFIER_BYTES = 63
#: Longest split or experiment name, in bytes (see the module docstring for the budget).
MAX_NAME_BYTES = 24
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
#: A prediction run's name (a table or collection name of every backend).
RUN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class BadName(DatabaseError, ValueError):
    """A split or experiment name that cannot become part of a prediction run's name."""


def check_name(name: str, what: str = "name") -> str:
    """``name`` if it can be part of a run name, else :class:`BadName` saying why.

    Allowed: letters, digits, ``_`` and ``-``, starting with a letter or digit, at most
    :data:`MAX_NAME_BYTES` bytes. ``what`` ("split name", "experiment name") starts the message.
    """
    if not isinstance(name, str) or not name:
        raise BadName(f"{what} must be a non-empty text, got {name!r}")
    size = len(name.encode())
    if size > MAX_NAME_BYTES:
        raise BadName(
            f"{what} {name!r} is {size} bytes long; at most {MAX_NAME_BYTES} are allowed, since "
            "it becomes part of prediction run names <split>_<experiment>_t<id>_p<n>, which "
            f"PostgreSQL cuts at {MAX_IDENTIFIER_BYTES} bytes"
        )
    if not NAME_PATTERN.match(name):
        bad = sorted({c for c in name if not re.match(r"[A-Za-z0-9_\-]", c)})
        why = (
            f"it holds {', '.join(repr(c) for c in bad)}"
            if bad
            else "it must start with a letter or digit"
        )
        raise BadName(
            f"{what} {name!r} cannot be part of a prediction run name: {why}; use letters, "
            "digits, '_' and '-', starting with a letter or digit"
        )
    return name


def check_run_name(run: str) -> str:
    if not isinstance(run, str) or not RUN_NAME.match(run):
        raise DatabaseError(
            f"invalid prediction run name {run!r}: use letters, digits, '_', '.', '-' "
            "(not starting with '.' or '-')"
        )
    return run
