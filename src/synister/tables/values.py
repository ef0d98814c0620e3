"""Checked values of table columns: exact ids, numbers, x,y,z lists, unique ids.

Each raises :class:`~synister.tables.read.TableError` at the first bad value, naming the place
as ``FILE, column C, line N: problem`` (``row N`` for Parquet/Feather), whichever command reads.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .read import TableError, row_name
from .text import first_bad_text

_INT64_MAX = np.iinfo(np.int64).max
_INTEGER = r"[+-]?\d+"


def _bad(where: str, column: str, i: int, csv: bool, problem: str) -> TableError:
    return TableError(f"{where}, column {column}, {row_name(i, csv)}: {problem}")


def exact_ids(
    values: pd.Series,
    where: str,
    column: str,
    csv: bool,
    missing_ok: bool,
    first: int = 0,
    integers_only: bool = False,
):
    """Whole-number ids as int64 (never through floats: FlyWire root ids exceed 2**53), any
    other text as strings (or an error with ``integers_only``); missing ones raise unless
    ``missing_ok`` (then <NA>). ``first`` is the row number of ``values``' first entry."""
    if pd.api.types.is_integer_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values):
        absent = values.isna().to_numpy(dtype=bool)
        if absent.any() and not missing_ok:
            raise _bad(where, column, first + int(np.flatnonzero(absent)[0]), csv, "no id")
        return values.astype("Int64" if missing_ok else np.int64)
    if pd.api.types.is_float_dtype(values.dtype):
        fraction = (values.notna() & (values != np.floor(values))).to_numpy()
        inexact = (values.abs() >= 2**53).to_numpy()  # floats lose whole numbers beyond
        if fraction.any() or inexact.any():
            i = int(np.flatnonzero(fraction | inexact)[0])
            what = "a whole number" if fraction[i] else "exact as a float"
            problem = f"id {values.iloc[i]} is not {what} (store ids as integers or text)"
            raise _bad(where, column, first + i, csv, problem)
        values = values.astype("Int64")
    try:
        text = values.astype("string").str.strip()
    except (TypeError, ValueError) as error:  # bytes that are not UTF-8, lists, ...
        problem = f"ids must be text or whole numbers ({str(error).splitlines()[0]})"
        raise TableError(f"{where}, column {column}: {problem}") from None
    # (not isna() | == "": pandas reserves a gigabyte of address space for that on 1M rows)
    absent = (text.fillna("") == "").to_numpy(dtype=bool)
    if absent.any() and not missing_ok:
        raise _bad(where, column, first + int(np.flatnonzero(absent)[0]), csv, "no id")
    bad = first_bad_text(text.where(~absent, pd.NA))  # before any is converted
    if bad is not None:
        raise _bad(where, column, first + bad[0], csv, bad[1])
    present = text[~absent]
    whole = present.str.fullmatch(_INTEGER).to_numpy(dtype=bool)
    numbers = [int(v) for v in present[whole]] if whole.all() else []
    if whole.all() and all(abs(v) <= _INT64_MAX for v in numbers):
        result = pd.Series(pd.NA, index=values.index, dtype="Int64")
        result[~absent] = np.array(numbers, dtype=np.int64)  # a list would go through objects
        return result if missing_ok else result.astype(np.int64)
    if integers_only:
        i = next(
            i
            for i, v in zip(np.flatnonzero(~absent), present, strict=True)
            if not re.fullmatch(_INTEGER, v) or abs(int(v)) > _INT64_MAX
        )
        problem = f"{values.iloc[i]!r} is not an integer id (of at most 64 bits)"
        raise _bad(where, column, first + int(i), csv, problem)
    return text.where(~absent, pd.NA)


def numbers(
    values: pd.Series, where: str, column: str, csv: bool, first: int = 0, required: bool = True
) -> np.ndarray:
    """A column of numbers as float64; text, infinity or (where ``required``) a missing value
    raises naming the row; a missing value is NaN otherwise."""
    numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    missing = values.isna().to_numpy(dtype=bool)
    bad = np.isinf(numeric) | (np.isnan(numeric) & (required | ~missing))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = values.iloc[i]
        problem = "no value" if pd.isna(what) else f"{str(what)!r} is not a number"
        raise _bad(where, column, first + i, csv, problem)
    return numeric


def position_list(
    values: pd.Series, where: str, column: str, csv: bool, first: int = 0
) -> np.ndarray:
    """One list column of x, y, z (FlyWire's ``pre_pt_position``), from lists or text."""
    out = np.empty((len(values), 3))
    for i, value in enumerate(values):
        if isinstance(value, str):
            parts = [p for p in re.split(r"[\[\]\(\),;\s]+", value) if p]
        elif value is None or (np.ndim(value) == 0 and pd.isna(value)):
            parts = []
        else:
            parts = list(np.asarray(value).reshape(-1))
        try:
            xyz = [float(p) for p in parts]
        except (TypeError, ValueError):
            xyz = []
        if len(xyz) != 3 or not all(np.isfinite(xyz)):
            problem = f"expected three numbers x, y, z, got {value!r}"
            raise _bad(where, column, first + i, csv, problem)
        out[i] = xyz
    return out


def first_duplicate(ids: pd.Series) -> tuple[int, int] | None:
    """The first row whose id comes again, and the row where it does (positions)."""
    duplicated = ids.duplicated(keep=False).to_numpy()
    if not duplicated.any():
        return None
    first = int(np.flatnonzero(duplicated)[0])
    again = (ids.iloc[first + 1 :] == ids.iloc[first]).to_numpy(dtype=bool)
    return first, first + 1 + int(np.flatnonzero(again)[0])


def duplicate_id_error(
    where: str, column: str, value, first: int, second: int, csv: bool
) -> TableError:
    """The error for an id on two rows (``first``, ``second``: row numbers)."""
    return TableError(
        f"{where}, column {column}: id {value} is on {row_name(first, csv)} and "
        f"{row_name(second, csv)}; ids must be unique"
    )
