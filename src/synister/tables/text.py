"""The text a table carries into outputs: ids and neuron ids within a length and a character
set, and CSV cells a spreadsheet will not run as formulas.

Ids reach the per-synapse tables, the report and its neuroglancer links. One long or odd id
(a megabyte of text, a line break, a right-to-left override that shows ``cod.exe`` as
``exe.doc``) would make every output that big or that misleading, so an id is at most
:data:`MAX_ID_CHARACTERS` printable characters, whichever front-end reads the table.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

#: the longest id or neuron id a table may hold (FlyWire's root ids have 18 digits)
MAX_ID_CHARACTERS = 100
#: what a spreadsheet takes for the start of a formula (OWASP, "CSV injection")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be an id (too long, or a character that is not printable: control
    characters, line breaks, bidirectional overrides, zero-width characters), else None."""
    if len(value) > MAX_ID_CHARACTERS:
        return f"an id of {len(value)} characters (at most {MAX_ID_CHARACTERS})"
    if not value.isprintable():
        bad = next(c for c in value if not c.isprintable())
        return f"id {value[:40]!r} holds the character U+{ord(bad):04X}, which is not printable"
    return None


def first_bad_text(text: pd.Series) -> tuple[int, str] | None:
    """The position of the first id in ``text`` (strings, or missing) that breaks the rule,
    with the problem; lengths are compared before any value is looked at."""
    present = text.notna().to_numpy(dtype=bool)
    lengths = text.str.len().to_numpy(dtype=np.float64, na_value=0)
    long = np.flatnonzero(present & (lengths > MAX_ID_CHARACTERS))
    candidates = [int(long[0])] if len(long) else []
    unique = pd.unique(text[present])
    odd = {v for v in unique if not v.isprintable()}
    if odd:
        candidates.append(int(np.flatnonzero(text.isin(odd).to_numpy(dtype=bool))[0]))
    if not candidates:
        return None
    i = min(candidates)
    return i, text_problem(text.iloc[i])


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text cell that a spreadsheet would run as a formula (starting
    with =, +, -, @, a tab or a carriage return) prefixed with a single quote, as OWASP
    advises. Numeric columns stay as they are, and so does text that is a plain number
    (``-12.5``): a spreadsheet reads those as numbers, never as formulas."""
    out = frame
    for name in frame.columns:
        column = frame[name]
        if not (pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column)):
            continue
        text = column.astype("string")
        risky = text.str.startswith(FORMULA_STARTS) & ~text.str.fullmatch(_NUMBER.pattern)
        risky = risky.fillna(False).to_numpy(dtype=bool)
        if risky.any():
            if out is frame:
                out = frame.copy()
            out[name] = text.where(~risky, "'" + text)
    return out
