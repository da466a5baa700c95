"""Entries: a successful poll and its entries' upserts (one transaction per feed), the
keys of pruned entries, and single-entry reads."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta

from ..models import Candidate
from .bands import BAND_FLUSH_ENTRIES, pack_bands, set_bands
from .stories import (
    StoriesMixin,
    create_story,
    decide_story,
    find_candidates,
    join_linked_stories,
    merge_story,
    refresh_story,
    set_links,
    touch_story_of,
)
from .values import Matcher, NewEntry, StoredEntry, _enclosures_json, _json, entry_uid, parse_ts, ts


class EntriesMixin(StoriesMixin):
    def record_success(
        self,
        feed_id: int,
        *,
        now: datetime,
        status: int,
        next_poll: datetime,
        interval: float,
        etag: str | None,
        last_modified: str | None,
        body_hash: str | None,
        permanent_url: str | None,
        title: str | None = None,
        link: str | None = None,
        language: str | None = None,
        format: str | None = None,
        warnings: Sequence[str] | None = None,
        entries: Sequence[NewEntry] = (),
        matcher: Matcher | None = None,
        window_days: int = 7,
        updated: datetime | None = None,
    ) -> list[StoredEntry]:
        """Record a successful poll (200 or 304) and upsert its entries in ONE transaction.
        ``warnings`` of the parse replace the feed's; None (a 304, an unchanged body) keeps them.
        ``updated``: the feed's own last-change time (None keeps the stored one).

        Undated entries of the feed's first successful poll get no date (published ''):
        nobody can know when they appeared. Undated entries of later polls appeared then,
        and are dated by their first-seen time. Entries are stored bottom-up (a feed lists
        its newest first), so ids follow the feed's own order: undated entries sort by it.

        ``matcher(entry, candidates) -> StoryMatch | None`` decides the story of each new
        entry (the pipeline passes dedup.decide bound to its settings).
        """
        with self.transaction() as c:
            row = c.execute("SELECT last_success FROM feeds WHERE id = ?", (feed_id,)).fetchone()
            first_poll = row is not None and row[0] is None
            if entries:
                gone = self._pruned_keys(c, feed_id, {e.key for e in entries})
                if gone:
                    entries = [e for e in entries if e.key not in gone]
            existing = self._existing(c, feed_id, [e.key for e in entries])
            stored = [
                self._upsert_entry(c, feed_id, e, now, matcher, window_days,
                                   existing.get(e.key), first_poll)
                for e in reversed(entries)
            ][::-1]
            c.execute(
                "UPDATE feeds SET last_attempt = ?, last_success = ?, last_status = ?,"
                " consecutive_errors = 0, last_error = NULL, last_error_kind = NULL,"
                " next_poll = ?, interval = ?, retry_after_until = NULL,"
                " etag = COALESCE(?, etag), last_modified = COALESCE(?, last_modified),"
                " body_hash = COALESCE(?, body_hash),"
                " effective_url = COALESCE(?, effective_url),"
                " title = COALESCE(title, ?), link = COALESCE(?, link),"
                " language = COALESCE(language, ?), format = COALESCE(?, format),"
                " warnings = COALESCE(?, warnings), updated = COALESCE(?, updated) WHERE id = ?",
                (
                    ts(now), ts(now), status, ts(next_poll), interval, etag, last_modified,
                    body_hash, permanent_url, title, link, language, format,
                    None if warnings is None else _json(list(warnings)), ts(updated), feed_id,
                ),
            )
        if len(self.bands) >= BAND_FLUSH_ENTRIES:
            self.flush_bands()
        return stored

    # ----------------------------------------------------------------------- entries

    @staticmethod
    def _existing(c: sqlite3.Connection, feed_id: int, keys: Sequence[str]
                  ) -> dict[str, sqlite3.Row]:
        """The feed's stored entries among ``keys``: one query per 500 keys, not per entry."""
        found: dict[str, sqlite3.Row] = {}
        for lo in range(0, len(keys), 500):
            chunk = keys[lo : lo + 500]
            marks = ",".join("?" * len(chunk))
            for r in c.execute(
                "SELECT id, key, content_hash, updated, author FROM entries WHERE feed_id = ?"
                f" AND key IN ({marks})", (feed_id, *chunk)):
                found[r["key"]] = r
        return found

    @staticmethod
    def _pruned_keys(c: sqlite3.Connection, feed_id: int, listed: set[str]) -> set[str]:
        """The keys among ``listed`` (every key the feed lists now) whose entries were pruned:
        they are not stored again. Keys the feed no longer lists are forgotten (were one to
        come back, it would be a new entry), so this table stays as small as the feeds."""
        pruned = {r[0] for r in c.execute(
            "SELECT key FROM pruned_keys WHERE feed_id = ?", (feed_id,))}
        if not pruned:
            return pruned
        stale = sorted(pruned - listed)
        for lo in range(0, len(stale), 500):
            chunk = stale[lo : lo + 500]
            marks = ",".join("?" * len(chunk))
            c.execute(f"DELETE FROM pruned_keys WHERE feed_id = ? AND key IN ({marks})",
                      (feed_id, *chunk))
        return pruned & listed

    def _upsert_entry(
        self,
        c: sqlite3.Connection,
        feed_id: int,
        e: NewEntry,
        now: datetime,
        matcher: Matcher | None,
        window_days: int,
        row: sqlite3.Row | None,
        first_poll: bool = False,
    ) -> StoredEntry:
        """``row``: the stored entry with the same key (id, content_hash, updated, author), if any."""
        if e.published is not None:
            published = ts(e.published)
        else:
            published = "" if first_poll else ts(now)
        # The entry's own date, never the poll's: its updated, else its published; an
        # undated entry has only the time it was first seen.
        dates = [d for d in (e.published, e.updated) if d is not None]
        own = max(dates) if dates else now
        if row is not None:
            if row["content_hash"] == e.content_hash:
                if e.author is not None and row["author"] != e.author:
                    # The author is read better than when the row was stored (an address
                    # fragment then): repaired quietly, it is not an edit of the entry.
                    c.execute("UPDATE entries SET author = ? WHERE id = ?", (e.author, row["id"]))
                merged = self._relink(c, row["id"], e, now)
                return StoredEntry(row["id"], feed_id, e.key, is_new=False, changed=False,
                                   stories_merged=merged)
            # Edited in place: same identity, new content. The published date stays unless
            # the feed now gives a sane one; full text is fetched again. `updated` moves to
            # the feed's newer updated date, else (no date from the feed) to now.
            stored_updated = parse_ts(row["updated"]) or now
            edited = max(stored_updated, e.updated) if e.updated else max(stored_updated, now)
            c.execute(
                "UPDATE entries SET guid = ?, url = ?, url_norm = ?, title = ?, author = ?,"
                " feed_html = ?, content_html = ?, text = ?, summary = ?, word_count = ?,"
                " language = ?, categories = ?, enclosures = ?, image = ?,"
                " published = CASE WHEN ? IS NULL THEN published ELSE ? END,"
                " published_raw = ?, date_note = ?, updated = ?, last_seen = ?,"
                " content_hash = ?, extract_status = ?, extract_error = NULL,"
                " extract_attempts = 0, extract_retry_at = NULL,"
                " text_hash = ?, signature = ? WHERE id = ?",
                (
                    e.guid, e.url, e.url_norm, e.title, e.author,
                    None if e.feed_html == e.content_html else e.feed_html, e.content_html,
                    e.text, e.summary, e.word_count, e.language, _json(list(e.categories)),
                    _enclosures_json(e.enclosures), e.image, ts(e.published), ts(e.published),
                    e.published_raw, e.date_note, ts(edited), ts(now), e.content_hash,
                    e.extract_status, e.text_hash, e.signature, row["id"],
                ),
            )
            set_bands(c, self.bands, row["id"], e.band_keys, e.contain_keys)
            set_links(c, row["id"], "feed", e.links)
            touch_story_of(c, row["id"], now)
            merged = join_linked_stories(c, row["id"], now)
            return StoredEntry(row["id"], feed_id, e.key, is_new=False, changed=True,
                               stories_merged=merged)

        # The story is decided before the insert, so the entry row is written once:
        # candidates -> decide (policy: stories.decide_story) -> merge or create.
        candidates: list[Candidate] = []
        near_keys = (*e.band_keys, *e.probe_bands)
        contain_keys = (*e.contain_keys, *e.probe_contain)
        if matcher is not None and (e.url_norm or e.text_hash or near_keys or contain_keys):
            since = (e.published or now) - timedelta(days=window_days)
            candidates = find_candidates(c, 0, e.url_norm, None, e.text_hash, near_keys,
                                         since, self._waiting(c, near_keys),
                                         contained=self._contained(c, contain_keys))
        decision = decide_story(e, candidates, matcher)
        reason, score = decision.reason, decision.score
        if decision.story_id is not None:
            story_id = decision.story_id
            for other, why, how in decision.bridges:
                merge_story(c, other, into=story_id, reason=why, score=how)
        else:
            feed_name = c.execute("SELECT name FROM feeds WHERE id = ?", (feed_id,)).fetchone()[0]
            story_id = create_story(c, now, own, entry_uid(feed_name, e.key))
        cur = c.execute(
            "INSERT INTO entries(feed_id, key, guid, url, url_norm, title, author, feed_html,"
            " content_html, text, summary, word_count, language, categories, enclosures, image,"
            " published, published_raw, date_note, updated, first_seen, last_seen,"
            " content_hash, extract_status, text_hash, signature, bands, story_id,"
            " match_reason, match_score, contain_bands)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                # feed_html stays NULL while content_html *is* the feed's content: the HTML
                # is stored once (record_article keeps it aside when an article replaces it).
                feed_id, e.key, e.guid, e.url, e.url_norm, e.title, e.author,
                None if e.feed_html == e.content_html else e.feed_html,
                e.content_html, e.text, e.summary, e.word_count, e.language,
                _json(list(e.categories)), _enclosures_json(e.enclosures), e.image, published,
                e.published_raw, e.date_note, ts(own), ts(now), ts(now), e.content_hash,
                e.extract_status, e.text_hash, e.signature, pack_bands(e.band_keys), story_id,
                reason, score, pack_bands(e.contain_keys),
            ),
        )
        entry_id = int(cur.lastrowid or 0)
        if e.band_keys or e.contain_keys:
            self.bands.stage(entry_id, (*e.band_keys, *e.contain_keys))
        if reason == "first":
            c.execute("UPDATE stories SET representative_id = ? WHERE id = ?",
                      (entry_id, story_id))
        else:
            refresh_story(c, story_id, now)
        # Its translations and editions, whichever arrived first (the links of both sides
        # are in entry_links).
        set_links(c, entry_id, "feed", e.links)
        merged = join_linked_stories(c, entry_id, now)
        return StoredEntry(entry_id, feed_id, e.key, is_new=True, changed=True,
                           story_created=reason == "first",
                           stories_merged=len(decision.bridges) + merged)

    @staticmethod
    def _relink(c: sqlite3.Connection, entry_id: int, e: NewEntry, now: datetime) -> int:
        """An unchanged entry whose feed now names other language versions (links are not
        part of the content hash: adding them is no edit of the entry). One primary-key
        probe, only for entries that carry links."""
        stored = {r[0] for r in c.execute(
            "SELECT url_norm FROM entry_links WHERE entry_id = ? AND source = 'feed'",
            (entry_id,))} if e.links else set()
        if stored == {url for url, _, _ in e.links}:
            return 0
        set_links(c, entry_id, "feed", e.links)
        return join_linked_stories(c, entry_id, now)

    def entry_feed_html(self, entry_id: int) -> tuple[str, str]:
        """(sanitised feed content, title) of an entry."""
        row = self.conn.execute(
            "SELECT COALESCE(feed_html, content_html), title FROM entries WHERE id = ?",
            (entry_id,)
        ).fetchone()
        return (row[0] or "", row[1]) if row else ("", "")

    def count_entries(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
