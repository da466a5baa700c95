"""The store: everything the aggregator keeps, behind one interface (protocol.Storage).

Layout (docs/architecture.md): ``protocol`` (the Storage interface every backend honours),
``values`` (what crosses it), ``schema`` (migrations), ``sqlite`` (the SQLite backend,
assembled from ``connection``, ``feeds``, ``entries``, ``stories``, ``articles``,
``reads``, ``retention``), ``bands`` (the LSH band index and its write-behind buffer).
Callers import from here; ``open_storage`` picks the backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..models import HostGate, Settings
from .bands import BAND_FLUSH_ENTRIES, BandBuffer, pack_bands, unpack_bands
from .connection import MIN_FREE_BYTES
from .pg_url import display_database, is_postgres_url
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
    """The storage at ``database``: a SQLite file path, or a ``postgresql://`` URL (the
    PostgreSQL backend, store.postgres; psycopg is imported only then)."""
    if is_postgres_url(str(database)):
        from .postgres import PostgresStorage

        return PostgresStorage(str(database), readonly=readonly, timeout=timeout)
    return SQLiteStorage(database, readonly=readonly, timeout=timeout)


def shared_host_gate(store: Storage, settings: Settings) -> HostGate | None:
    """The per-host politeness gate every worker of ``store`` shares: PostgreSQL's, through
    the database (store.pg_gate); None for SQLite (one process: the Fetcher's own, in
    memory)."""
    host_gate = getattr(store, "host_gate", None)
    if host_gate is None or getattr(store, "readonly", False):
        return None
    gate: HostGate = host_gate(settings.per_host_concurrency, settings.per_host_delay)
    return gate


def migrate_database(database: str | Path,
                     tasks: tuple[str, Sequence[tuple[str, str]]] | None = None) -> list[str]:
    """Create or upgrade the store at ``database`` (either backend); the names applied.
    On PostgreSQL, ``tasks`` (the task engine's schema and versioned migrations, from
    tasks.task_schema) are applied too, under the same advisory lock."""
    if is_postgres_url(str(database)):
        from .postgres import migrate_database as migrate_pg

        return migrate_pg(str(database), tasks=tasks)
    store = SQLiteStorage(database)
    try:
        return store.migrate()
    finally:
        store.close()


def check_database(database: str | Path) -> str | None:
    """`aggregator check`'s look at a PostgreSQL database (reachable, UTF-8 with a usable
    LC_CTYPE, a schema of ours no newer than the code): a line to print, StoreError for a
    problem; None for a SQLite path (nothing to reach)."""
    if not is_postgres_url(str(database)):
        return None
    from .postgres import check_database as check_pg

    return check_pg(str(database))


__all__ = [
    "BAND_FLUSH_ENTRIES",
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
    "shared_host_gate",
    "ts",
    "check_database",
    "display_database",
    "is_postgres_url",
    "migrate_database",
    "unpack_bands",
]
