"""The store: everything the aggregator keeps, behind one interface (protocol.Storage).

Layout (docs/architecture.md): ``protocol`` (the Storage interface every backend honours),
``values`` (what crosses it), ``schema`` (migrations), ``sqlite`` (the SQLite backend,
assembled from ``connection``, ``feeds``, ``entries``, ``stories``, ``articles``,
``reads``, ``retention``), ``bands`` (the LSH band index and its write-behind buffer).
Callers import from here; ``open_storage`` picks the backend.
"""

from __future__ import annotations

from pathlib import Path

from .bands import BAND_FLUSH_ROWS, BandBuffer, pack_bands, unpack_bands
from .connection import MIN_FREE_BYTES
from .protocol import Row, Storage
from .schema import MIGRATIONS, _split_sql
from .sqlite import SQLiteStorage, Store
from .stories import StoryDecision, decide_story, pick_representative
from .values import (
    CONTAIN_MIN_SHARED,
    DEGRADED_ARTICLE_ERRORS,
    FEED_STATES,
    BacklogEntry,
    FeedState,
    Matcher,
    NewEntry,
    StoredEntry,
    entry_uid,
    parse_ts,
    ts,
)


def open_storage(database: str | Path, *, readonly: bool = False,
                 timeout: float = 30.0) -> Storage:
    """The storage at ``database``: a SQLite file path (the only backend so far; a second
    one is chosen here, e.g. by a URL scheme)."""
    return SQLiteStorage(database, readonly=readonly, timeout=timeout)


__all__ = [
    "BAND_FLUSH_ROWS",
    "CONTAIN_MIN_SHARED",
    "DEGRADED_ARTICLE_ERRORS",
    "FEED_STATES",
    "MIGRATIONS",
    "MIN_FREE_BYTES",
    "BacklogEntry",
    "BandBuffer",
    "FeedState",
    "Matcher",
    "NewEntry",
    "Row",
    "SQLiteStorage",
    "Storage",
    "Store",
    "StoredEntry",
    "StoryDecision",
    "_split_sql",
    "decide_story",
    "entry_uid",
    "open_storage",
    "pack_bands",
    "parse_ts",
    "pick_representative",
    "ts",
    "unpack_bands",
]
