"""Synapse database: one interface (:class:`Database`), backends chosen by URL."""

from __future__ import annotations

import os
from pathlib import Path

from .base import (
    SPLIT_PARTS,
    Database,
    DatabaseError,
    DuplicateIdError,
    PredictionRunExists,
    SplitExists,
    UnknownSplit,
    ValidationReport,
    split_exists,
)
from .names import MAX_NAME_BYTES, BadName, check_name
from .records import UNKNOWN_HEMI_LINEAGE_PATTERN, unknown_hemi_lineage, unknown_hemi_lineage_ids
from .urls import hide_secrets, public_url

DEFAULT_DB_FILE = "synister.db"

__all__ = [
    "MAX_NAME_BYTES",
    "SPLIT_PARTS",
    "UNKNOWN_HEMI_LINEAGE_PATTERN",
    "BadName",
    "Database",
    "DatabaseError",
    "DuplicateIdError",
    "PredictionRunExists",
    "SplitExists",
    "UnknownSplit",
    "ValidationReport",
    "check_name",
    "default_url",
    "hide_secrets",
    "open_database",
    "public_url",
    "split_exists",
    "unknown_hemi_lineage",
    "unknown_hemi_lineage_ids",
]


def default_url() -> str:
    """``$SYNISTER_DB``, else a SQLite file ``synister.db`` in the working folder."""
    return os.environ.get("SYNISTER_DB") or f"sqlite:///{Path.cwd() / DEFAULT_DB_FILE}"


def open_database(url: str | None = None, *, create: bool = True) -> Database:
    """Open the database at ``url``: ``sqlite:///path``, ``postgresql://...`` or ``mongodb://...``.

    ``create=True`` (commands that write: import, split make, predict) makes the SQLite file,
    its folders and synister's tables or indexes where missing. Commands that only read pass
    ``create=False``: a database that does not exist is then an error naming it, and nothing is
    created, so a mistyped path cannot leave an empty database behind.
    """
    url = url or default_url()
    if url.startswith("sqlite:"):
        from .sqlite import SQLiteDatabase

        return SQLiteDatabase(url, create=create)
    if url.startswith(("postgresql:", "postgres:")):
        from .postgres import PostgresDatabase

        return PostgresDatabase(url, create=create)
    if url.startswith(("mongodb:", "mongodb+srv:")):
        from .mongo import MongoDatabase

        return MongoDatabase(url, create=create)
    raise DatabaseError(
        f"unsupported database URL {public_url(url)!r}: use sqlite:///path, postgresql://... "
        "or mongodb://..."
    )
