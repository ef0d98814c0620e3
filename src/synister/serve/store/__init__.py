"""Jobs and tokens of the service: one interface (:class:`Store`), backends chosen by URL."""

from __future__ import annotations

from .base import (
    ACTIVE_STATES,
    FINAL_STATES,
    STATES,
    Job,
    JobFinished,
    NewJob,
    Principal,
    QueueFull,
    Store,
    StoreError,
    TokenInfo,
)

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "STATES",
    "Job",
    "JobFinished",
    "NewJob",
    "Principal",
    "QueueFull",
    "Store",
    "StoreError",
    "TokenInfo",
    "open_store",
]


def open_store(url: str) -> Store:
    """The store at ``url``: ``sqlite:///path`` or ``postgresql://...``."""
    if url.startswith("sqlite:"):
        from .sqlite import SQLiteStore

        return SQLiteStore(url)
    if url.startswith(("postgresql:", "postgres:")):
        from .postgres import PostgresStore

        return PostgresStore(url)
    raise StoreError(
        "the service keeps its jobs in SQLite (sqlite:///path) or PostgreSQL "
        f"(postgresql://...); unsupported database URL scheme {url.split(':', 1)[0]!r}"
    )
