"""The `backend` fixture's value: one database of either backend for a test that runs the
real pipeline or CLI, and the reads those tests make of it, the same on both (rows by
column name, times as ISO text, published documents). psycopg stays in
aggregator/store/postgres.py: PostgreSQL is read through its PostgresBase."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aggregator.store import Storage, open_storage

BACKENDS = ["sqlite", "postgresql"]


def iso(value: Any) -> Any:
    """A stored time as SQLite keeps it ('YYYY-MM-DDTHH:MM:SSZ'), whichever the backend:
    a timestamptz (datetime) becomes that text; SQLite's '' for an undated entry (NULL on
    PostgreSQL, docs/schema.md) becomes None; other values pass unchanged."""
    if isinstance(value, datetime):
        text = value.astimezone(UTC).replace(tzinfo=None).isoformat()
        return text + "Z"
    if value == "":
        return None
    return value


def from_json(value: Any) -> Any:
    """A JSON column's value, whichever the backend: SQLite's JSON text decoded, PostgreSQL's
    jsonb (psycopg decodes it) as it comes."""
    return json.loads(value) if isinstance(value, str | bytes) else value


class Row(tuple[Any, ...]):
    """A row by position or by column name; times (datetime) as ISO text (iso)."""

    names: tuple[str, ...]

    def __new__(cls, names: Sequence[str], values: Iterable[Any]) -> Row:
        row = super().__new__(cls, (iso(v) if isinstance(v, datetime) else v
                                    for v in values))
        row.names = tuple(names)
        return row

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return super().__getitem__(self.names.index(key))
        return super().__getitem__(key)

    def keys(self) -> tuple[str, ...]:
        return self.names


class Backend:
    """``name``: "sqlite" or "postgresql"; ``database``: the AGGREGATOR_DATABASE value (a
    file in the test's folder, or the test's own database's URL)."""

    def __init__(self, name: str, tmp: Path, url: str | None = None) -> None:
        self.name = name
        self.tmp = tmp
        self.database = str(tmp / "agg.db") if url is None else url
        self._pg: Any = None

    @property
    def postgres(self) -> bool:
        return self.name == "postgresql"

    def env(self) -> dict[str, str]:
        """The settings that put the pipeline or CLI on this database (PostgreSQL requires
        base_url: every node publishes the same links)."""
        env = {"AGGREGATOR_DATABASE": self.database}
        if self.postgres:
            env["AGGREGATOR_BASE_URL"] = "http://feeds.test/"
        return env

    def _postgres(self) -> Any:
        if self._pg is None:
            from aggregator.store.postgres import PostgresBase

            self._pg = PostgresBase(self.database, max_size=1)
        return self._pg

    @staticmethod
    def _pg_sql(sql: str, params: Sequence[Any]) -> str:
        return sql.replace("%", "%%").replace("?", "%s") if params else sql

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Rows of ``sql`` (``?`` placeholders) in a transaction of its own, committed."""
        if self.postgres:
            rows = self._postgres()._query(self._pg_sql(sql, params), tuple(params) or None)
            return [Row(list(r.keys()), list(r)) for r in rows]
        import sqlite3

        conn = sqlite3.connect(self.database)
        try:
            with conn:  # committed: a query may write (INSERT ... RETURNING)
                cur = conn.execute(sql, tuple(params))
                names = [d[0] for d in cur.description or ()]
                return [Row(names, r) for r in cur.fetchall()]
        finally:
            conn.close()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """One statement that writes (a test's setup), committed. Times are written as ISO
        text, which PostgreSQL reads into timestamptz."""
        if self.postgres:
            with self._postgres()._use() as c:
                c.execute(self._pg_sql(sql, params), tuple(params) or None)
            return
        import sqlite3

        conn = sqlite3.connect(self.database)
        try:
            with conn:
                conn.execute(sql, tuple(params))
        finally:
            conn.close()

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.one(sql, params)
        assert row is not None, sql
        return row[0]

    def storage(self, *, readonly: bool = False) -> Storage:
        """The database through the Storage protocol (the caller closes it)."""
        return open_storage(self.database if self.postgres else Path(self.database),
                            readonly=readonly)

    def document(self, name: str) -> bytes | None:
        """A published document: output_dir/NAME on SQLite, the `documents` table on
        PostgreSQL (where publish writes; docs/schema.md)."""
        if self.postgres:
            row = self.one("SELECT body FROM documents WHERE name = ?", (name,))
            return None if row is None else bytes(row[0])
        path = self.tmp / "public" / name
        return path.read_bytes() if path.exists() else None

    def read(self, name: str) -> bytes:
        """A published document that must exist."""
        body = self.document(name)
        assert body is not None, f"{name} was not published"
        return body

    def documents(self) -> dict[str, bytes]:
        """Every published document (feeds and archive pages) by name; not the archive
        indexes (".NAME.archive.json", publish's own bookkeeping)."""
        if self.postgres:
            found = {r["name"]: bytes(r["body"])
                     for r in self.query("SELECT name, body FROM documents ORDER BY name")}
        else:
            found = {p.name: p.read_bytes() for p in sorted((self.tmp / "public").iterdir())}
        return {n: b for n, b in found.items()
                if Path(n).suffix in (".atom", ".rss", ".json") and not n.startswith(".")}

    def dump(self) -> list[Any]:
        """The whole database's content, to compare before and after (SQLite: its SQL dump;
        PostgreSQL: every table's rows in order)."""
        if not self.postgres:
            import sqlite3

            with sqlite3.connect(self.database) as c:
                return list(c.iterdump())
        tables = [r[0] for r in self.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            " AND table_type = 'BASE TABLE' ORDER BY table_name")]
        return [(t, self.query(f"SELECT * FROM {t} ORDER BY 1")) for t in tables]

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
            self._pg = None
