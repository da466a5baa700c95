"""copy-store: a whole store copied from one database to an empty other (SQLite to
PostgreSQL and back; also SQLite to SQLite and PostgreSQL to PostgreSQL), ids kept.

Backend-independent: the tables are read from one side and written to the other through
small per-backend hooks (a CopySide: SQLiteCopySide here, postgres.PgCopySide). Values are
converted between the backends' types by the PostgreSQL side's column types: ISO text times
and timestamptz, '' (an undated entry's published) and NULL, 0/1 and boolean, JSON text and
jsonb; blobs are bytes on both.

One transaction on each side: the source is read in one snapshot (so the counts it is
checked against are those of the rows copied, even while a daemon writes), and the target
is written in one transaction that is committed only once its row counts and id sums match
the source's. A copy that fails or does not verify leaves the target as it was (empty), so
it can simply be run again; the target's tables are locked meanwhile, so no writer slips
rows in between the emptiness check and the commit."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from ..errors import StoreError
from ..models import CopyReport, TableCopy
from .pg_url import display_database, is_postgres_url
from .values import _json, parse_ts, ts

log = logging.getLogger(__name__)

# Tables in the order they are written (references first), each with its key columns (the
# read order) and the integer column(s) whose sum checks that the ids came over intact.
TABLES: tuple[tuple[str, str, str], ...] = (
    ("feeds", "id", "id"),
    ("stories", "id", "id + COALESCE(representative_id, 0)"),
    ("entries", "id", "id + feed_id + COALESCE(story_id, 0)"),
    ("pages", "entry_id", "entry_id"),
    ("entry_bands", "band_key, entry_id", "entry_id"),
    ("entry_links", "entry_id, source, url_norm", "entry_id"),
    ("pruned_keys", "feed_id, key", "feed_id"),
    ("output_ids", "output", "0"),
    ("store_state", "name", "0"),
)

# Tables whose identity sequence follows the copied ids (PostgreSQL).
ID_TABLES = ("feeds", "stories", "entries")

# store_state rows not copied: the trigram indexes' garbage count means nothing to a
# freshly filled index.
SKIP_STATE = ("search_pruned",)

DEFAULT_BATCH = 2000

# (table, rows written in this batch, rows of the whole copy)
Progress = Callable[[str, int, int], None]


class CopySide(Protocol):
    """One database of a copy, the source or the target."""

    kind: str  # "sqlite" or "postgres"
    name: str  # as logs may show it

    def columns(self, table: str) -> dict[str, str]:
        """The table's columns with their declared types, in column order."""
        ...

    def begin_read(self) -> None:
        """Open the snapshot every later read and stat sees."""
        ...

    def batches(self, table: str, columns: Sequence[str], order: str,
                size: int) -> Iterator[list[tuple[Any, ...]]]:
        ...

    def begin_write(self) -> None:
        """Open the write transaction and keep other writers out until it ends."""
        ...

    def write(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        ...

    def delete_all(self, table: str) -> None:
        ...

    def stats(self, table: str, id_sum: str) -> tuple[int, int]:
        """(rows, sum of ``id_sum``) in the open transaction."""
        ...

    def finish_write(self) -> None:
        """After the rows, before the commit (PostgreSQL: identity sequences reset)."""
        ...

    def commit(self) -> None:
        ...

    def rollback(self) -> None:
        ...


class SQLiteCopySide:
    """A SQLite store's hooks, on the connection of an open SQLiteStorage."""

    kind = "sqlite"

    def __init__(self, conn: sqlite3.Connection, name: str) -> None:
        self.conn = conn
        self.name = name

    def _run(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self.conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.name}: {exc}") from None

    def columns(self, table: str) -> dict[str, str]:
        return {r[1]: str(r[2]).upper()
                for r in self._run(f"PRAGMA table_info({table})").fetchall()}

    def begin_read(self) -> None:
        self._run("BEGIN")
        self._run("SELECT COUNT(*) FROM sqlite_master").fetchone()  # the snapshot starts

    def batches(self, table: str, columns: Sequence[str], order: str,
                size: int) -> Iterator[list[tuple[Any, ...]]]:
        cur = self._run(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}")
        while True:
            try:
                rows = cur.fetchmany(size)
            except sqlite3.Error as exc:
                raise StoreError(f"{self.name}: {exc}") from None
            if not rows:
                return
            yield [tuple(r) for r in rows]

    def begin_write(self) -> None:
        self._run("BEGIN IMMEDIATE")

    def write(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" * len(columns))
        try:
            self.conn.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.name}: writing {table}: {exc}") from None

    def delete_all(self, table: str) -> None:
        self._run(f"DELETE FROM {table}")

    def stats(self, table: str, id_sum: str) -> tuple[int, int]:
        count, total = self._run(f"SELECT COUNT(*), SUM({id_sum}) FROM {table}").fetchone()
        return int(count), int(total or 0)

    def finish_write(self) -> None:
        """Nothing: INTEGER PRIMARY KEY continues from the largest id, and the FTS5
        triggers filled entries_fts row by row."""

    def commit(self) -> None:
        self._run("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


# --------------------------------------------------------------------------- conversion


def to_postgres(value: Any, pg_type: str) -> Any:
    """A SQLite value for a PostgreSQL column of ``pg_type``."""
    if value is None:
        return None
    if pg_type.startswith("timestamp"):
        return parse_ts(value) if isinstance(value, str) else value  # '' (undated): NULL
    if pg_type == "boolean":
        return bool(value)
    if pg_type == "bytea" and isinstance(value, str):
        return value.encode()
    return value


def to_sqlite(value: Any, pg_type: str, not_null: bool) -> Any:
    """A PostgreSQL value of ``pg_type`` for a SQLite column."""
    if value is None:
        # entries.published: NULL (undated) is '' in SQLite, where the column is NOT NULL.
        return "" if not_null and pg_type.startswith("timestamp") else None
    if pg_type == "jsonb":
        return _json(value)  # a JSON string scalar too: psycopg gives it as a str
    if isinstance(value, datetime):
        return ts(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def _converter(source: CopySide, target: CopySide, pg_types: dict[str, str],
               columns: Sequence[str],
               not_null: set[str]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]] | None:
    types = [pg_types[c] for c in columns]
    if source.kind == target.kind == "postgres" and "jsonb" in types:
        # jsonb comes decoded (lists, dicts, str): COPY takes it back as JSON text.
        return lambda row: tuple(v if v is None or t != "jsonb" else _json(v)
                                 for v, t in zip(row, types, strict=True))
    if source.kind == target.kind:
        return None
    if target.kind == "postgres":
        return lambda row: tuple(to_postgres(v, t) for v, t in zip(row, types, strict=True))
    flags = [c in not_null for c in columns]
    return lambda row: tuple(to_sqlite(v, t, n)
                             for v, t, n in zip(row, types, flags, strict=True))


# --------------------------------------------------------------------------- the copy


def check_empty(target: CopySide) -> None:
    """StoreError naming the tables that hold rows (store_state aside: migrate fills it)."""
    full = [f"{table} ({rows})" for table, _, id_sum in TABLES if table != "store_state"
            for rows, _ in [target.stats(table, id_sum)] if rows]
    if full:
        raise StoreError(
            f"target {target.name} is not empty: {', '.join(full)}; copy-store only "
            "copies into an empty store (give it a new database or file)")


def copy_tables(source: CopySide, target: CopySide, *, batch: int = DEFAULT_BATCH,
                progress: Progress | None = None,
                not_null: dict[str, set[str]] | None = None) -> CopyReport:
    """Copy every table of TABLES from ``source`` to ``target`` (both migrated to the
    same version), verify, commit. Either side's transaction is rolled back on an error."""
    started = time.monotonic()
    pg = target if target.kind == "postgres" else source
    plan: list[tuple[str, list[str], str, str, dict[str, str]]] = []
    for table, order, id_sum in TABLES:
        wanted = target.columns(table)
        have = source.columns(table)
        if set(wanted) != set(have):
            raise StoreError(
                f"{table} differs between {source.name} and {target.name} "
                f"({sorted(set(wanted) ^ set(have))}): run `aggregator migrate` on both "
                "with this version")
        plan.append((table, list(wanted), order, id_sum, pg.columns(table)))
    source.begin_read()
    try:
        counts = {table: source.stats(table, id_sum) for table, _, _, id_sum, _ in plan}
        skipped = _skipped_state(source)
        counts["store_state"] = (counts["store_state"][0] - len(skipped),
                                 counts["store_state"][1])
        total = sum(n for n, _ in counts.values())
        target.begin_write()
        try:
            check_empty(target)
            target.delete_all("store_state")
            for table, columns, order, _, pg_types in plan:
                convert = _converter(source, target, pg_types, columns,
                                     (not_null or {}).get(table, set()))
                for rows in source.batches(table, columns, order, batch):
                    if table == "store_state":
                        rows = [r for r in rows if r[columns.index("name")] not in skipped]
                    try:
                        converted = [convert(r) for r in rows] if convert else rows
                    except (TypeError, ValueError) as exc:
                        raise StoreError(f"{table}: a value the target cannot take "
                                         f"({exc}) in rows {rows[0][:1]}..{rows[-1][:1]}"
                                         ) from None
                    target.write(table, columns, converted)
                    if progress:
                        progress(table, len(rows), total)
            target.finish_write()
            tables = tuple(_verify(table, counts[table], target.stats(table, id_sum))
                           for table, _, _, id_sum, _ in plan)
            committed = all(t.ok for t in tables)
            if committed:
                target.commit()
            else:
                target.rollback()
        except BaseException:
            target.rollback()
            raise
    finally:
        source.rollback()
    return CopyReport(source.name, target.name, tables,
                      time.monotonic() - started, committed)


def _verify(table: str, source: tuple[int, int], target: tuple[int, int]) -> TableCopy:
    return TableCopy(table, source[0], target[0], source[1], target[1])


def _skipped_state(source: CopySide) -> set[str]:
    names: set[str] = set()
    for rows in source.batches("store_state", ["name"], "name", 1000):
        names.update(r[0] for r in rows if r[0] in SKIP_STATE)
    return names


def same_database(a: str, b: str) -> bool:
    if is_postgres_url(a) or is_postgres_url(b):
        return a == b
    return Path(a).resolve() == Path(b).resolve()


def copy_store(source_db: str, target_db: str, *, batch: int = DEFAULT_BATCH,
               progress: Progress | None = None) -> CopyReport:
    """`aggregator copy-store`: the store at ``source_db`` (migrated, its band buffer
    flushed) into ``target_db`` (migrated first, must be empty). StoreError when the
    target is not empty or a side cannot be reached; a report whose ``ok`` is False when
    the counts did not verify (nothing committed then)."""
    from . import migrate_database, open_storage

    if same_database(source_db, target_db):
        raise StoreError(f"the target is the configured database ({display_database(target_db)})")
    if not is_postgres_url(source_db) and not Path(source_db).exists():
        raise StoreError(f"no database at {source_db}")
    source = open_storage(source_db)
    try:
        source.migrate()
        source.flush_bands()  # every entry's band keys in entry_bands, as copied
        migrate_database(target_db)
        target = open_storage(target_db)
        try:
            report = copy_tables(_side(source), _side(target), batch=batch,
                                 progress=progress, not_null=_sqlite_not_null(source, target))
        finally:
            target.close()
    finally:
        source.close()
    log.info("copied %s to %s in %.1fs: %s", report.source, report.target, report.seconds,
             ", ".join(f"{t.table} {t.target_rows}" for t in report.tables))
    return report


def _side(store: Any) -> CopySide:
    if isinstance(getattr(store, "conn", None), sqlite3.Connection):
        return SQLiteCopySide(store.conn, display_database(store.path))
    from .postgres import PgCopySide

    return PgCopySide(store)


def _sqlite_not_null(*stores: Any) -> dict[str, set[str]]:
    """The NOT NULL columns of the SQLite side's tables (where PostgreSQL's NULL becomes
    ''), if one side is SQLite."""
    for store in stores:
        conn = getattr(store, "conn", None)
        if isinstance(conn, sqlite3.Connection):
            return {table: {r[1] for r in conn.execute(f"PRAGMA table_info({table})")
                            if r[3]} for table, _, _ in TABLES}
    return {}
