"""Retention: pruning the entries the settings let go, and merging the search index so
that their rows leave it."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from ..errors import StoreError
from ..models import FeedConfig, PruneReport
from .connection import SQLiteBase
from .stories import refresh_story
from .values import ts


class RetentionMixin(SQLiteBase):
    def prune(
        self,
        *,
        now: datetime,
        entry_retention: float,
        feeds: Sequence[FeedConfig] = (),
        protect: Collection[int] = (),
        dry_run: bool = False,
    ) -> PruneReport:
        """Delete the entries the retention settings let go, in one transaction: older than
        their feed's ``entry_retention`` (else the global one; 0 keeps them), or beyond their
        feed's newest ``max_entries``. Age is the ``published`` column, which holds the
        first-seen time when the feed gave no usable date. Entries in ``protect`` (what the
        current documents show) stay. With each entry go its search (FTS) rows, band rows,
        stored page and story membership; a story re-picks its representative, or goes when
        no member is left. The entries' keys are remembered (pruned_keys) while their feed
        still lists them. ``dry_run``: the same work, rolled back."""
        config = {f.name: f for f in feeds}
        if self.bands and not dry_run:
            self.flush_bands()  # no band key of a deleted entry may wait in memory
        with self._lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot prune {self.path}: {exc}") from exc
            try:
                report = self._prune(self.conn, now, entry_retention, config, set(protect),
                                     dry_run)
                self.conn.execute("ROLLBACK" if dry_run else "COMMIT")
            except BaseException as exc:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"cannot prune {self.path}: {exc}") from exc
                raise
        return report

    def _prune(self, c: sqlite3.Connection, now: datetime, default: float,
               config: dict[str, FeedConfig], protect: set[int], dry_run: bool) -> PruneReport:
        free_before = int(c.execute("PRAGMA freelist_count").fetchone()[0])
        due: set[int] = set()
        names: dict[int, str] = {}
        for feed_id, name in c.execute("SELECT id, name FROM feeds ORDER BY name").fetchall():
            names[feed_id] = name
            cfg = config.get(name)  # a feed no longer configured follows the global setting
            retention = default if cfg is None or cfg.entry_retention is None \
                else cfg.entry_retention
            if retention > 0:
                cutoff = ts(now - timedelta(seconds=retention))
                due.update(i for (i,) in c.execute(
                    "SELECT id FROM entries WHERE feed_id = ? AND published < ?",
                    (feed_id, cutoff)))
            if cfg is not None and cfg.max_entries:
                due.update(i for (i,) in c.execute(
                    "SELECT id FROM entries WHERE feed_id = ?"
                    " ORDER BY published DESC, id DESC LIMIT -1 OFFSET ?",
                    (feed_id, cfg.max_entries)))
        ids = sorted(due - protect)
        stories: set[int] = set()
        per_feed: dict[int, int] = {}
        pages = bands = 0
        for lo in range(0, len(ids), 500):
            chunk = ids[lo : lo + 500]
            marks = ",".join("?" * len(chunk))
            for feed_id, story_id in c.execute(
                    f"SELECT feed_id, story_id FROM entries WHERE id IN ({marks})", chunk):
                per_feed[feed_id] = per_feed.get(feed_id, 0) + 1
                if story_id is not None:
                    stories.add(story_id)
            c.execute(
                "INSERT OR IGNORE INTO pruned_keys(feed_id, key, pruned)"
                f" SELECT feed_id, key, ? FROM entries WHERE id IN ({marks})",
                (ts(now), *chunk))
            pages += c.execute(f"DELETE FROM pages WHERE entry_id IN ({marks})", chunk).rowcount
            bands += c.execute(
                f"DELETE FROM entry_bands WHERE entry_id IN ({marks})", chunk).rowcount
            c.execute(f"DELETE FROM entry_links WHERE entry_id IN ({marks})", chunk)
            # The entries_fts_ad trigger removes each entry's search rows.
            c.execute(f"DELETE FROM entries WHERE id IN ({marks})", chunk)
        if ids:  # counted towards the next merge of the search index (optimize_search)
            c.execute("INSERT INTO store_state(name, value) VALUES ('search_pruned', ?)"
                      " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                      (len(ids),))
        deleted = 0
        for story_id in sorted(stories):
            if c.execute("SELECT 1 FROM entries WHERE story_id = ? LIMIT 1",
                         (story_id,)).fetchone() is None:
                c.execute("DELETE FROM stories WHERE id = ?", (story_id,))
                deleted += 1
            else:
                refresh_story(c, story_id, now, touch=False)
        free_after = int(c.execute("PRAGMA freelist_count").fetchone()[0])
        page_size = int(c.execute("PRAGMA page_size").fetchone()[0])
        for entry_id in ids:  # flushed above, unless dry: count what the flush would write
            if entry_id in self.bands:
                bands += len(self.bands.keys_of(entry_id))
                if not dry_run:
                    self.bands.unstage(entry_id)
        return PruneReport(
            dry_run=dry_run,
            entries=len(ids),
            pages=pages,
            band_rows=bands,
            stories_touched=len(stories) - deleted,
            stories_deleted=deleted,
            protected=len(due & protect),
            by_feed=tuple(sorted(((names[f], n) for f, n in per_feed.items()),
                                 key=lambda x: (-x[1], x[0]))),
            freed=max(0, free_after - free_before) * page_size,
        )

    def optimize_search(self, max_pages: int | None = None, garbage: float = 0.1) -> int:
        """Merge the search index's segments, so that the rows of pruned entries leave it:
        FTS5 records a deletion as a marker, and the deleted rows take space until the
        segments holding them are merged, which for its oldest, largest segments may be
        never. ``max_pages`` None: merge it all into one segment now, if anything was pruned
        since the last time. Else a merge in steps of about ``max_pages`` pages written per
        call, started once pruned entries are a ``garbage`` share of the index and run until
        about the index's size has been written (one rewrite per such share, however often
        this is called). Returns the database pages this freed."""
        try:
            return self._optimize_search(max_pages, garbage)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot merge the search index of {self.path}: {exc}") from exc

    def _optimize_search(self, max_pages: int | None, garbage: float) -> int:
        with self.transaction() as c:
            state = dict(c.execute("SELECT name, value FROM store_state"
                                   " WHERE name IN ('search_pruned', 'search_merge_left')"))
            pruned = int(state.get("search_pruned", 0))
            left = int(state.get("search_merge_left", 0))
            if not pruned and left <= 0:
                return 0
            before = int(c.execute("PRAGMA freelist_count").fetchone()[0])
            if max_pages is None:
                c.execute("INSERT INTO entries_fts(entries_fts) VALUES ('optimize')")
                pruned = left = 0
            else:
                if left <= 0:
                    kept = int(c.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
                    if pruned < garbage * (kept + pruned):
                        return 0
                    left = int(c.execute("SELECT COUNT(*) FROM entries_fts_data").fetchone()[0])
                    pruned = 0  # this merge takes them out; later ones count towards the next
                # Negative: the segments of every level are merged together (an optimize in
                # steps), not only levels already holding `automerge` segments.
                c.execute("INSERT INTO entries_fts(entries_fts, rank) VALUES ('merge', ?)",
                          (-max(1, int(max_pages)),))
                left = max(0, left - max(1, int(max_pages)))
            c.executemany("INSERT OR REPLACE INTO store_state(name, value) VALUES (?, ?)",
                          [("search_pruned", pruned), ("search_merge_left", left)])
            after = int(c.execute("PRAGMA freelist_count").fetchone()[0])
        return max(0, after - before)
