"""Reads: the items published, search, feed health and states, the status document and
activity, the counts metrics export."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ..models import Enclosure, FeedMetrics, Item, Outlet
from .connection import SQLiteBase
from .values import FEED_STATES, entry_uid, parse_ts, ts


class ReadsMixin(SQLiteBase):
    def items(
        self,
        *,
        limit: int = 200,
        one_per_story: bool = True,
        before: tuple[str, int] | None = None,
    ) -> list[Item]:
        """Newest items for publishing, newest first. With ``one_per_story`` each story
        appears once: its representative, carrying the other outlets. ``before`` is the
        (published, id) of the last item of the previous page (keyset pagination; '' for an
        undated one). Undated entries (published '') sort behind every dated one, by id:
        their feed's own order (see record_success)."""
        where = "WHERE (e.published, e.id) < (?, ?)" if before else ""
        args: list[Any] = list(before) if before else []
        story_join = ("JOIN stories s ON s.representative_id = e.id" if one_per_story
                      else "LEFT JOIN stories s ON 0")
        sql = (
            "SELECT e.*, f.name AS feed_name, COALESCE(f.title, f.name) AS feed_title,"
            " COALESCE(f.effective_url, f.url) AS feed_url, f.link AS feed_link,"
            " f.language AS feed_language, f.tags AS feed_tags, f.updated AS feed_updated,"
            " s.updated AS story_updated, s.item_id AS story_item_id"
            f" FROM entries e {story_join} JOIN feeds f ON f.id = e.feed_id {where}"
            " ORDER BY e.published DESC, e.id DESC LIMIT ?"
        )
        rows = self.conn.execute(sql, (*args, limit)).fetchall()
        outlets = self._outlets([r["story_id"] for r in rows if r["story_id"]]) \
            if one_per_story else {}
        items = [_item(r, outlets.get(r["story_id"], ())) for r in rows]
        return self._with_members(items) if one_per_story else items

    def iter_items(self, *, batch: int = 500, max_items: int = 20000) -> Iterator[Item]:
        """Every story's representative, newest first, fetched a batch at a time."""
        before: tuple[str, int] | None = None
        seen = 0
        while seen < max_items:
            page = self.items(limit=min(batch, max_items - seen), before=before)
            if not page:
                return
            yield from page
            seen += len(page)
            last = page[-1]
            before = (ts(last.published) or "", last.id)  # "": an undated item

    def _outlets(self, story_ids: Sequence[int]) -> dict[int, tuple[tuple[int, Outlet], ...]]:
        result: dict[int, list[tuple[int, Outlet]]] = {}
        ids = list(set(story_ids))
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.conn.execute(
                "SELECT e.id, e.story_id, e.url, e.published, e.first_seen, f.name,"
                " COALESCE(f.title, f.name) AS title FROM entries e"
                f" JOIN feeds f ON f.id = e.feed_id WHERE e.story_id IN ({marks})"
                " ORDER BY e.published = '', e.published, e.id",  # undated ones last
                chunk,
            ):
                result.setdefault(r["story_id"], []).append(
                    (r["id"], Outlet(r["name"], r["title"], r["url"],
                                     parse_ts(r["published"])))
                )
        return {k: tuple(v) for k, v in result.items()}

    def _with_members(self, items: Sequence[Item]) -> list[Item]:
        """``items`` with ``members`` attached: every version of each story of several
        entries, as full items (earliest first, undated last), so that an output can pick
        the version in its readers' language and filters can read every version. A story
        of one entry (no other outlets) needs no read: it is its only version."""
        ids = list({i.story_id for i in items if i.story_id is not None and i.outlets})
        found: dict[int, list[Item]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.conn.execute(
                "SELECT e.*, f.name AS feed_name, COALESCE(f.title, f.name) AS feed_title,"
                " COALESCE(f.effective_url, f.url) AS feed_url, f.link AS feed_link,"
                " f.language AS feed_language, f.tags AS feed_tags,"
                " f.updated AS feed_updated, s.updated AS story_updated,"
                " s.item_id AS story_item_id"
                " FROM entries e JOIN stories s ON s.id = e.story_id"
                f" JOIN feeds f ON f.id = e.feed_id WHERE e.story_id IN ({marks})"
                " ORDER BY e.published = '', e.published, e.id",  # undated ones last
                chunk,
            ):
                found.setdefault(r["story_id"], []).append(_item(r, ()))
        return [replace(i, members=tuple(found[i.story_id]))
                if i.story_id in found and len(found[i.story_id]) > 1 else i for i in items]

    def search(self, query: str, limit: int = 20) -> list[sqlite3.Row]:
        """Full-text search (trigram: substrings of 3+ characters in any script)."""
        phrase = '"' + query.replace('"', '""') + '"'
        if len(query.strip()) < 3:
            like = f"%{query.strip()}%"
            return self.conn.execute(
                "SELECT id, feed_name, title, url, published, substr(text, 1, 200) AS snippet"
                " FROM items WHERE title LIKE ? OR text LIKE ? ORDER BY published DESC LIMIT ?",
                (like, like, limit),
            ).fetchall()
        return self.conn.execute(
            "SELECT i.id, i.feed_name, i.title, i.url, i.published,"
            # Tokens are trigrams, about one character each: the most SQLite gives (64)
            # is a phrase of context, where 12 was a fragment of a word or two.
            " snippet(entries_fts, 1, '[', ']', '…', 64) AS snippet"
            " FROM entries_fts JOIN items i ON i.id = entries_fts.rowid"
            " WHERE entries_fts MATCH ? ORDER BY rank LIMIT ?",
            (phrase, limit),
        ).fetchall()

    def feed_health(self) -> list[dict[str, Any]]:
        """The ``feed_health`` view, one dict per feed by name, with the feed's ``title`` and
        ``language`` (from ``feeds``); ``state`` is the view's (see FEED_STATES)."""
        rows = self.conn.execute(
            "SELECT h.*, f.title AS title, f.language AS language"
            " FROM feed_health h JOIN feeds f ON f.name = h.name ORDER BY h.name"
        ).fetchall()
        result = []
        for r in rows:
            d = dict(r)
            d["warnings"] = json.loads(d.get("warnings") or "[]")
            d["active"] = bool(d["active"])
            result.append(d)
        return result

    def feed_metrics(self) -> list[FeedMetrics]:
        """Each feed's state, consecutive errors and last success, for per-feed metrics
        (cheap: SQLite skips the view's per-feed entry statistics when they are not read)."""
        rows = self.conn.execute(
            "SELECT name, state, consecutive_errors, last_success"
            " FROM feed_health ORDER BY name").fetchall()
        return [
            FeedMetrics(r["name"], r["state"], int(r["consecutive_errors"]),
                        (when.timestamp() if (when := parse_ts(r["last_success"])) else None))
            for r in rows
        ]

    def backlog_size(self) -> int:
        """Entries waiting for their article page, those waiting for a retry included."""
        return int(self.conn.execute(
            "SELECT COUNT(*) FROM entries WHERE extract_status = 'pending'").fetchone()[0])

    def backlog_retrying(self, now: datetime | None = None) -> int:
        """Of the backlog, the entries whose page failed for a temporary reason and which
        wait for their retry time."""
        return int(self.conn.execute(
            "SELECT COUNT(*) FROM entries WHERE extract_status = 'pending'"
            " AND extract_retry_at > ?", (ts(now or datetime.now(UTC)),)).fetchone()[0])

    def feed_state_counts(self, rows: Iterable[Mapping[str, Any]] | None = None
                          ) -> dict[str, int]:
        """How many feeds are in each state of ``FEED_STATES`` (every state present, 0 or
        more), as the feed_health view derives them; ``rows``: ``feed_health()`` already
        read, to count those instead."""
        counts = dict.fromkeys(FEED_STATES, 0)
        if rows is None:
            for state, n in self.conn.execute(
                    "SELECT state, COUNT(*) FROM feed_health GROUP BY state"):
                counts[state] = int(n)
            return counts
        for d in rows:
            counts[d["state"]] = counts.get(d["state"], 0) + 1
        return counts

    def feed_state(self, name: str) -> str | None:
        """One feed's state (see FEED_STATES); None for a name never configured."""
        row = self.conn.execute(
            "SELECT state FROM feed_health WHERE name = ?", (name,)).fetchone()
        return str(row[0]) if row else None

    def status(self, now: datetime) -> dict[str, Any]:
        """The store's part of the status document (/status.json, the /status page): every
        feed's health with its state, the counts per state, the extraction backlog and the
        activity, all read in one transaction so that they agree with each other."""
        with self._lock:
            self.conn.execute("BEGIN")
            try:
                feeds = self.feed_health()
                document = {
                    "backlog": self.backlog_size(),  # entries waiting, retries included
                    "backlog_retrying": self.backlog_retrying(),
                    "last_poll": self.conn.execute(
                        "SELECT MAX(last_attempt) FROM feeds").fetchone()[0],
                    "states": self.feed_state_counts(feeds),
                    **self.activity(now),
                    "feeds": feeds,
                }
            finally:
                self.conn.execute("COMMIT")
        return document

    def activity(self, now: datetime, days: int = 30) -> dict[str, Any]:
        """Entries by publication date: how many (and how many stories they belong to) in the
        24 hours before ``now``, and per UTC day over the last ``days`` days, oldest first,
        days without entries included (the range scan runs on ``entries_published``)."""
        day0 = (now.astimezone(UTC) - timedelta(days=days - 1)).date()
        since = datetime(day0.year, day0.month, day0.day, tzinfo=UTC)
        per_day = dict.fromkeys(((day0 + timedelta(days=i)).isoformat() for i in range(days)), 0)
        for day, count in self.conn.execute(
            "SELECT substr(published, 1, 10) AS day, COUNT(*) FROM entries"
            " WHERE published >= ? AND published <= ? GROUP BY day",
            (ts(since), ts(now)),
        ):
            if day in per_day:
                per_day[day] = int(count)
        row = self.conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT story_id) FROM entries"
            " WHERE published > ? AND published <= ?",
            (ts(now - timedelta(hours=24)), ts(now)),
        ).fetchone()
        return {
            "entries_24h": int(row[0]),
            "stories_24h": int(row[1]),
            "entries_per_day": [{"day": d, "entries": n} for d, n in per_day.items()],
        }


def _item(r: sqlite3.Row, members: tuple[tuple[int, Outlet], ...]) -> Item:
    published = parse_ts(r["published"])  # None: undated ('')
    updated = parse_ts(r["updated"]) or parse_ts(r["first_seen"]) or datetime.now(UTC)
    story_updated = parse_ts(r["story_updated"]) if r["story_updated"] else None
    if story_updated and story_updated > updated:
        updated = story_updated  # an outlet joining the story moves the item's `updated`
    if published is not None and published > updated:
        updated = published
    others = tuple(o for (eid, o) in members if eid != r["id"])
    encs = tuple(
        Enclosure(d.get("url", ""), d.get("type"), d.get("length"))
        for d in json.loads(r["enclosures"] or "[]")
        if d.get("url")
    )
    return Item(
        id=r["id"],
        uid=r["story_item_id"] or entry_uid(r["feed_name"], r["key"]),
        feed_name=r["feed_name"],
        feed_title=r["feed_title"],
        feed_url=r["feed_url"],
        feed_link=r["feed_link"],
        feed_language=r["feed_language"],
        feed_tags=tuple(json.loads(r["feed_tags"] or "[]")),
        title=r["title"],
        url=r["url"],
        author=r["author"],
        published=published,
        updated=updated,
        content_html=r["content_html"],
        summary=r["summary"],
        text=r["text"],
        categories=tuple(json.loads(r["categories"] or "[]")),
        language=r["language"] or r["feed_language"],
        word_count=r["word_count"],
        image=r["image"],
        enclosures=encs,
        story_id=r["story_id"],
        outlets=others,
        feed_updated=parse_ts(r["feed_updated"]),
    )
