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
)

DEFAULT_DB_FILE = "synister.db"

__all__ = [
    "SPLIT_PARTS",
    "Database",
    "DatabaseError",
    "DuplicateIdError",
    "PredictionRunExists",
    "SplitExists",
    "UnknownSplit",
    "ValidationReport",
    "default_url",
    "open_database",
]


def default_url() -> str:
    """``$SYNISTER_DB``, else a SQLite file ``synister.db`` in the working folder."""
    return os.environ.get("SYNISTER_DB") or f"sqlite:///{Path.cwd() / DEFAULT_DB_FILE}"


def open_database(url: str | None = None) -> Database:
    """Open the database at ``url``: ``sqlite:///path``, ``postgresql://...`` or ``mongodb://...``."""
    url = url or default_url()
    if url.startswith("sqlite:"):
        from .sqlite import SQLiteDatabase

        return SQLiteDatabase(url)
    if url.startswith(("postgresql:", "postgres:")):
        from .postgres import PostgresDatabase

        return PostgresDatabase(url)
    if url.startswith(("mongodb:", "mongodb+srv:")):
        from .mongo import MongoDatabase

        return MongoDatabase(url)
    raise DatabaseError(
        f"unsupported database URL {url!r}: use sqlite:///path, postgresql://... or mongodb://..."
    )
