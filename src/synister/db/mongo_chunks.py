"""MongoDB requests of bounded size: no query and no bulk write names more than :data:`CHUNK`
ids (one ``$in`` of all ids would pass MongoDB's 16 MB document limit at about 800,000 ids)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

#: Most ids in one request (a query's ``$in`` or a bulk write): ~1 MB of BSON.
CHUNK = 50_000


def chunks(values: Sequence, size: int | None = None):
    """``values`` in slices of at most ``size`` (default :data:`CHUNK`, read at call time)."""
    size = size or CHUNK
    values = list(values)
    for start in range(0, len(values), size):
        yield values[start : start + size]


def find_in(collection, field: str, values: Iterable, query: dict | None, projection: dict):
    """Documents whose ``field`` is one of ``values`` (and that match ``query``), one request
    per chunk of values."""
    wanted = sorted({plain(v) for v in values}, key=lambda v: (v is None, v))
    docs: list[dict] = []
    for chunk in chunks(wanted):
        term = {field: {"$in": chunk}}
        docs.extend(collection.find({"$and": [query, term]} if query else term, projection))
    return docs


def distinct(collection, field: str, query: dict | None = None) -> list:
    """Distinct values of ``field``; streamed by an aggregation, not returned as one document
    as ``distinct`` does (16 MB limit)."""
    pipeline = ([{"$match": query}] if query else []) + [{"$group": {"_id": f"${field}"}}]
    return [doc["_id"] for doc in collection.aggregate(pipeline) if doc["_id"] is not None]


def plain(value):
    """A value as BSON can store it (numpy scalars and pandas NA become Python values)."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float | np.floating):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
