"""Articles: the extraction backlog, an article fetch's outcome, and stored pages."""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from ..errors import StoreError
from .bands import set_bands
from .connection import SQLiteBase
from .stories import set_links, touch_story_of
from .values import BacklogEntry, parse_ts, ts


class ArticlesMixin(SQLiteBase):
    def backlog(self, limit: int, now: datetime | None = None,
                feed: str | None = None) -> list[BacklogEntry]:
        """Entries waiting for their article page, newest first; those waiting for a retry
        (``extract_retry_at`` after ``now``) are left for a later run; of one ``feed``
        when given."""
        rows = self.conn.execute(
            "SELECT e.id, f.name AS feed_name, e.url,"
            " COALESCE(e.feed_html, e.content_html) AS feed_html, e.word_count, e.title,"
            " e.story_id, e.extract_attempts, e.first_seen"
            " FROM entries e JOIN feeds f ON f.id = e.feed_id"
            " WHERE e.extract_status = 'pending' AND e.url IS NOT NULL"
            " AND (e.extract_retry_at IS NULL OR e.extract_retry_at <= ?)"
            + (" AND f.name = ?" if feed is not None else "") +
            " ORDER BY e.first_seen DESC, e.id DESC LIMIT ?",
            (ts(now or datetime.now(UTC)), *((feed,) if feed is not None else ()), limit),
        ).fetchall()
        return [
            BacklogEntry(r["id"], r["feed_name"], r["url"], r["feed_html"] or "",
                         r["word_count"], r["title"], r["story_id"], r["extract_attempts"],
                         parse_ts(r["first_seen"]))
            for r in rows
        ]

    def record_article(
        self,
        entry_id: int,
        *,
        now: datetime,
        status: str,
        method: str | None,
        error: str | None,
        content_html: str | None = None,
        text: str | None = None,
        summary: str | None = None,
        word_count: int | None = None,
        language: str | None = None,
        image: str | None = None,
        author: str | None = None,
        canonical_url: str | None = None,
        text_hash: str | None = None,
        signature: bytes | None = None,
        band_keys: Sequence[int] | None = None,
        contain_keys: Sequence[int] = (),
        page: tuple[str, str | None, str | None, bytes] | None = None,
        retry_at: datetime | None = None,
        attempt: bool = True,
        shown_before: datetime | None = None,
        links: Sequence[tuple[str, str | None, str]] | None = None,
        page_language: str | None = None,
    ) -> None:
        """Store the outcome of an article fetch. ``status``: done (content replaced),
        feed (the feed's own content was better), failed (reason in ``error``), pending
        (a temporary failure, reason in ``error``: tried again from ``retry_at`` on; the
        entry keeps the feed's content meanwhile).

        The feed's ``article_errors`` counts failed attempts in a row (pending and failed
        alike) and a done/feed outcome resets it: it drives the `degraded` state. With
        ``attempt`` False (reprocessing a stored page: nothing was fetched) the attempt and
        failure counts are left alone.

        Replacing the content moves the entry's `updated` to ``now`` when readers may have
        seen the teaser: the entry was first seen before ``shown_before`` (when outputs were
        last published; None: always). An entry extracted before it was ever published
        keeps its own date, so a first poll does not date a feed's backlog "now".

        ``links`` (normalised URL, declared language, kind): the translations and editions
        the page names, replacing those stored from the page before (None keeps them);
        ``page_language``: the page's own language (``<html lang>``, ``og:locale``), the
        last fallback of the entry's language. Joining the linked stories is
        ``join_links``, called after the article's own rematch."""
        if status == "pending" and retry_at is None:
            raise StoreError("record_article: a pending outcome needs its retry time")
        with self.transaction() as c:
            if content_html is not None:
                c.execute(
                    "UPDATE entries SET feed_html = COALESCE(feed_html, content_html)"
                    " WHERE id = ?", (entry_id,))
                c.execute(
                    "UPDATE entries SET content_html = ?, text = ?, summary = ?,"
                    " word_count = ?, language = COALESCE(language, ?),"
                    " image = COALESCE(image, ?), author = COALESCE(author, ?),"
                    " canonical_url = COALESCE(?, canonical_url), text_hash = ?,"
                    " signature = ?, updated = CASE WHEN content_html IS NOT ?"
                    " AND (? IS NULL OR first_seen < ?) THEN MAX(updated, ?) ELSE updated END"
                    " WHERE id = ?",
                    (
                        content_html, text, summary, word_count, language, image, author,
                        canonical_url, text_hash, signature, content_html, ts(shown_before),
                        ts(shown_before), ts(now), entry_id,
                    ),
                )
                if band_keys is not None:
                    set_bands(c, self.bands, entry_id, band_keys, contain_keys)
            elif canonical_url:
                c.execute(
                    "UPDATE entries SET canonical_url = COALESCE(?, canonical_url) WHERE id = ?",
                    (canonical_url, entry_id),
                )
            c.execute(
                "UPDATE entries SET extract_status = ?, extract_method = ?, extract_error = ?,"
                " extracted_at = ?, extract_attempts = extract_attempts + ?,"
                " extract_retry_at = ? WHERE id = ?",
                (status, method, error, ts(now), int(attempt), ts(retry_at), entry_id),
            )
            if not attempt:
                pass
            elif status in ("failed", "pending"):
                c.execute(
                    "UPDATE feeds SET article_errors = article_errors + 1,"
                    " last_article_error = ?, last_article_error_at = ?"
                    " WHERE id = (SELECT feed_id FROM entries WHERE id = ?)",
                    (error, ts(now), entry_id),
                )
            else:
                c.execute(
                    "UPDATE feeds SET article_errors = 0"
                    " WHERE id = (SELECT feed_id FROM entries WHERE id = ?)"
                    " AND article_errors != 0",
                    (entry_id,),
                )
            if links is not None:
                set_links(c, entry_id, "page", links)
            if page_language is not None:
                c.execute("UPDATE entries SET page_language = ? WHERE id = ?",
                          (page_language, entry_id))
            if page is not None:
                url, final_url, charset, body = page
                c.execute(
                    "INSERT OR REPLACE INTO pages(entry_id, url, final_url, fetched_at, charset,"
                    " body) VALUES (?, ?, ?, ?, ?, ?)",
                    (entry_id, url, final_url, ts(now), charset, zlib.compress(body, 6)),
                )
            touch_story_of(c, entry_id, now)

    def stored_pages(
        self, feed: str | None = None, since: datetime | None = None
    ) -> Iterator[tuple[int, str, str | None, str | None, bytes, str]]:
        """(entry_id, url, final_url, charset, body, feed_name) for reprocessing."""
        sql = (
            "SELECT p.entry_id, p.url, p.final_url, p.charset, p.body, f.name FROM pages p"
            " JOIN entries e ON e.id = p.entry_id JOIN feeds f ON f.id = e.feed_id WHERE 1=1"
        )
        args: list[Any] = []
        if feed:
            sql += " AND f.name = ?"
            args.append(feed)
        if since:
            sql += " AND e.published >= ?"
            args.append(ts(since))
        for r in self.conn.execute(sql + " ORDER BY p.entry_id", args):
            yield r[0], r[1], r[2], r[3], zlib.decompress(r[4]), r[5]

    def prune_pages(self, older_than: datetime) -> int:
        with self.transaction() as c:
            cur = c.execute("DELETE FROM pages WHERE fetched_at < ?", (ts(older_than),))
            return cur.rowcount
