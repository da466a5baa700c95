"""Published documents kept in the database (SQLite's twin of the PostgreSQL table): on
PostgreSQL, publish writes here and every `aggregator serve` node reads from here; a SQLite
store publishes files, and keeps the table for the same Storage protocol."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import cast

from ..models import Document
from .connection import SQLiteBase
from .values import parse_ts, ts


class DocumentsMixin(SQLiteBase):
    def write_documents(self, documents: Sequence[Document],
                        remove: Collection[str] = ()) -> None:
        with self.transaction() as c:
            for d in documents:
                if d.body is None:
                    raise ValueError(f"document {d.name!r} has no body")
                c.execute(
                    "INSERT INTO documents(name, body, etag, content_type, published, size)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET"
                    " body = excluded.body, etag = excluded.etag,"
                    " content_type = excluded.content_type, published = excluded.published,"
                    " size = excluded.size",
                    (d.name, d.body, d.etag, d.content_type, ts(d.published), len(d.body)))
            written = {d.name for d in documents}
            c.executemany("DELETE FROM documents WHERE name = ?",
                          [(n,) for n in sorted(set(remove) - written)])

    def document(self, name: str) -> Document | None:
        r = self.conn.execute(
            "SELECT name, body, etag, content_type, published, size FROM documents"
            " WHERE name = ?", (name,)).fetchone()
        if r is None:
            return None
        return Document(r[0], r[2], r[3], cast(datetime, parse_ts(r[4])), r[5],
                        bytes(r[1]))

    def document_index(self) -> list[Document]:
        return sorted((Document(r[0], r[1], r[2], cast(datetime, parse_ts(r[3])), r[4])
                       for r in self.conn.execute(
                           "SELECT name, etag, content_type, published, size FROM documents")),
                      key=lambda d: d.name)

    def remove_documents(self, names: Collection[str]) -> int:
        with self.transaction() as c:
            return sum(c.execute("DELETE FROM documents WHERE name = ?", (n,)).rowcount
                       for n in sorted(set(names)))
