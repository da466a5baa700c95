"""Feeds: the configured set, their scheduling state, and a failed poll."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime

from ..models import FeedConfig
from .connection import SQLiteBase
from .values import FeedState, _json, parse_ts, ts


class FeedsMixin(SQLiteBase):
    def sync_feeds(self, feeds: Sequence[FeedConfig], now: datetime) -> None:
        """Make the feeds table match the configuration: add new feeds (due now), update
        changed URLs and metadata, mark removed feeds inactive (their entries stay)."""
        with self.transaction() as c:
            existing = {r["name"]: r for r in c.execute("SELECT * FROM feeds")}
            names = set()
            for f in feeds:
                names.add(f.name)
                row = existing.get(f.name)
                tags = _json(list(f.tags))
                if row is None:
                    c.execute(
                        "INSERT INTO feeds(name, url, title, language, tags, next_poll, created)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (f.name, f.url, f.title, f.language, tags, ts(now), ts(now)),
                    )
                    continue
                if row["url"] != f.url:
                    # A new configured URL replaces any recorded move and its cache state.
                    c.execute(
                        "UPDATE feeds SET url = ?, effective_url = NULL, etag = NULL,"
                        " last_modified = NULL, body_hash = NULL, disabled_reason = NULL,"
                        " consecutive_errors = 0, next_poll = ? WHERE id = ?",
                        (f.url, ts(now), row["id"]),
                    )
                c.execute(
                    "UPDATE feeds SET active = 1, language = ?, tags = ?,"
                    " title = COALESCE(?, title) WHERE id = ?",
                    (f.language, tags, f.title, row["id"]),
                )
            for name, row in existing.items():
                if name not in names and row["active"]:
                    c.execute("UPDATE feeds SET active = 0 WHERE id = ?", (row["id"],))

    def feed_states(self, names: Iterable[str] | None = None) -> list[FeedState]:
        rows = self.conn.execute("SELECT * FROM feeds WHERE active = 1 ORDER BY name").fetchall()
        wanted = set(names) if names is not None else None
        return [_feed_state(r) for r in rows if wanted is None or r["name"] in wanted]

    def due_feeds(self, now: datetime) -> list[FeedState]:
        rows = self.conn.execute(
            "SELECT * FROM feeds WHERE active = 1 AND disabled_reason IS NULL"
            " AND (next_poll IS NULL OR next_poll <= ?) ORDER BY next_poll, name",
            (ts(now),),
        ).fetchall()
        return [_feed_state(r) for r in rows]

    def next_due(self) -> datetime | None:
        row = self.conn.execute(
            "SELECT MIN(next_poll) FROM feeds WHERE active = 1 AND disabled_reason IS NULL"
        ).fetchone()
        return parse_ts(row[0]) if row else None

    def record_failure(
        self,
        feed_id: int,
        *,
        now: datetime,
        kind: str,
        message: str,
        status: int | None,
        next_poll: datetime,
        disable: bool = False,
        retry_after_until: datetime | None = None,
        permanent_url: str | None = None,
    ) -> None:
        with self.transaction() as c:
            c.execute(
                "UPDATE feeds SET last_attempt = ?, last_status = ?,"
                " consecutive_errors = consecutive_errors + 1, last_error = ?,"
                " last_error_kind = ?, next_poll = ?, retry_after_until = ?,"
                " effective_url = COALESCE(?, effective_url),"
                " disabled_reason = CASE WHEN ? THEN ? ELSE disabled_reason END"
                " WHERE id = ?",
                (
                    ts(now), status, message, kind, ts(next_poll), ts(retry_after_until),
                    permanent_url, 1 if disable else 0, message, feed_id,
                ),
            )


def _feed_state(r: sqlite3.Row) -> FeedState:
    return FeedState(
        id=r["id"],
        name=r["name"],
        url=r["url"],
        effective_url=r["effective_url"],
        etag=r["etag"],
        last_modified=r["last_modified"],
        body_hash=r["body_hash"],
        consecutive_errors=r["consecutive_errors"],
        next_poll=parse_ts(r["next_poll"]),
        interval=r["interval"],
        disabled_reason=r["disabled_reason"],
        active=bool(r["active"]),
    )
