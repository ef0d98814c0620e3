"""Help output that fits the terminal and never cuts a text.

Typer's rich panels crop long words with "…" in a narrow terminal, and click's command list
shortens each command's summary to what fits one line. The ``synister`` group therefore turns
rich off (``rich_markup_mode=None`` on the app), gives every command of the tree its full first
paragraph as summary, and formats help with :class:`WrappingHelpFormatter`: lines break between
words only (never inside a word, nor at a hyphen, so ``--label-column`` stays whole), and the
help of options and commands moves below their names where the column beside them is too narrow.
"""

from __future__ import annotations

import inspect
import re
import shutil
import textwrap

import typer
from typer.core import TyperGroup

# Recent typer versions carry their own copy of click; take the classes from typer, not click.
_HelpFormatter = typer.Context.formatter_class

#: Help is never wider than this, even in a wide terminal (click's default).
MAX_WIDTH = 80
#: Narrowest help column beside the names; below it the help goes under the names.
MIN_HELP_COLUMN = 28
#: Indent of help placed under its name.
STACKED_INDENT = 4


def wrap(text: str, width: int, indent: str = "") -> str:
    """``text`` wrapped to ``width`` columns between words, paragraph by paragraph; a
    paragraph whose first line is click's ``\\b`` marker keeps its lines."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.splitlines()
        if lines and lines[0].strip() == "\b":
            paragraphs.append("\n".join(indent + line.strip() for line in lines[1:]))
            continue
        paragraphs.append(
            textwrap.fill(
                " ".join(block.split()),
                max(width, len(indent) + 1),
                initial_indent=indent,
                subsequent_indent=indent,
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return "\n\n".join(paragraphs)


class WrappingHelpFormatter(_HelpFormatter):
    """Click's help formatter for the terminal's width (down to 30 columns, where click stops at
    50), wrapping between words only and stacking a definition list (name, then its help
    indented below) where the help column would be narrower than a word or
    :data:`MIN_HELP_COLUMN`."""

    def __init__(self, indent_increment: int = 2, width=None, max_width=None) -> None:
        if width is None:
            columns = shutil.get_terminal_size().columns
            width = max(min(columns, max_width or MAX_WIDTH) - 2, 30)
        super().__init__(indent_increment=indent_increment, width=width, max_width=max_width)

    def write_text(self, text: str) -> None:
        self.write(wrap(text, self.width, " " * self.current_indent) + "\n")

    def write_dl(self, rows, col_max: int = 30, col_spacing: int = 2) -> None:
        rows = [(term, text or "") for term, text in rows]
        indent = " " * self.current_indent
        first_col = min(max((len(term) for term, _ in rows), default=0), col_max) + col_spacing
        help_width = self.width - self.current_indent - first_col
        longest_word = max((len(word) for _, text in rows for word in text.split()), default=0)
        stacked = help_width < max(longest_word, MIN_HELP_COLUMN)
        for term, text in rows:
            self.write(f"{indent}{term}")
            if not text:
                self.write("\n")
            elif stacked:
                below = indent + " " * STACKED_INDENT
                self.write("\n" + wrap(text, self.width, below) + "\n")
            else:
                if len(term) <= first_col - col_spacing:
                    self.write(" " * (first_col - len(term)))
                else:
                    self.write("\n" + indent + " " * first_col)
                lines = wrap(text, help_width).splitlines()
                beside = "\n" + indent + " " * first_col
                self.write(beside.join(line for line in lines if line) + "\n")


class HelpContext(typer.Context):
    formatter_class = WrappingHelpFormatter


class SynisterGroup(TyperGroup):
    """The root group: every command below it formats its help with
    :class:`WrappingHelpFormatter` and lists its subcommands with their whole summary."""

    context_class = HelpContext

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _use_wrapping_help(self.commands.values())


def _use_wrapping_help(commands) -> None:
    for command in commands:
        command.context_class = HelpContext
        if not command.short_help and command.help:
            command.short_help = first_paragraph(command.help)
        _use_wrapping_help(getattr(command, "commands", {}).values())


def first_paragraph(text: str) -> str:
    """The first paragraph of a docstring, on one line."""
    return " ".join(inspect.cleandoc(text).split("\f")[0].split("\n\n")[0].split())
