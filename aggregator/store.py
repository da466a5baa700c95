"""SQLite storage: the only module that touches the database (through sqlite-utils).

The schema is a public contract documented in docs/schema.md. Downstream tools read the
`items`, `feed_health` and `story_outlets` views while the daemon writes: the database runs in
WAL mode, so readers never block the writer and the writer never blocks readers.

Writes happen on one thread (the pipeline's writer); each feed's results are one short
transaction. Migrations are ordered and applied automatically at open.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import struct
import threading
import uuid
import zlib
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from .errors import StoreError
from .models import Candidate, Enclosure, FeedConfig, FeedMetrics, Item, Outlet, PruneReport
from .storable import escape_unstorable, is_storable, strip_unstorable

# --------------------------------------------------------------------------- time helpers


def ts(dt: datetime | None) -> str | None:
    """UTC ISO 8601 with a Z, second precision: sortable as text."""
    if dt is None:
        return None
    if dt.tzinfo is not UTC:
        dt = dt.astimezone(UTC)
    return dt.replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def parse_ts(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value)  # 3.11 reads the trailing Z as UTC


# --------------------------------------------------------------------------- migrations

MIGRATIONS: list[tuple[str, str]] = [
    (
        "initial schema",
        """
CREATE TABLE feeds (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    effective_url TEXT,
    title TEXT,
    link TEXT,
    language TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    format TEXT,
    active INTEGER NOT NULL DEFAULT 1,
    disabled_reason TEXT,
    etag TEXT,
    last_modified TEXT,
    body_hash TEXT,
    interval REAL,
    last_attempt TEXT,
    last_success TEXT,
    last_status INTEGER,
    consecutive_errors INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_error_kind TEXT,
    next_poll TEXT,
    retry_after_until TEXT,
    warnings TEXT NOT NULL DEFAULT '[]',
    created TEXT NOT NULL
);
CREATE TABLE stories (
    id INTEGER PRIMARY KEY,
    representative_id INTEGER,
    first_seen TEXT NOT NULL,
    updated TEXT NOT NULL,
    entry_count INTEGER NOT NULL DEFAULT 0,
    outlet_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE entries (
    id INTEGER PRIMARY KEY,
    feed_id INTEGER NOT NULL REFERENCES feeds(id),
    key TEXT NOT NULL,
    guid TEXT,
    url TEXT,
    url_norm TEXT,
    canonical_url TEXT,
    title TEXT NOT NULL,
    author TEXT,
    feed_html TEXT,
    content_html TEXT NOT NULL,
    text TEXT NOT NULL,
    summary TEXT NOT NULL DEFAULT '',
    word_count INTEGER NOT NULL DEFAULT 0,
    language TEXT,
    categories TEXT NOT NULL DEFAULT '[]',
    enclosures TEXT NOT NULL DEFAULT '[]',
    image TEXT,
    published TEXT NOT NULL,
    published_raw TEXT,
    date_note TEXT,
    updated TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    extract_status TEXT NOT NULL,
    extract_method TEXT,
    extract_error TEXT,
    extracted_at TEXT,
    text_hash TEXT,
    signature BLOB,
    story_id INTEGER REFERENCES stories(id),
    match_reason TEXT,
    match_score REAL,
    UNIQUE (feed_id, key)
);
CREATE INDEX entries_published ON entries(published, id);
CREATE INDEX stories_representative ON stories(representative_id);
CREATE INDEX entries_feed_published ON entries(feed_id, published);
CREATE INDEX entries_url_norm ON entries(url_norm);
CREATE INDEX entries_canonical ON entries(canonical_url);
CREATE INDEX entries_text_hash ON entries(text_hash);
CREATE INDEX entries_story ON entries(story_id);
CREATE INDEX entries_backlog ON entries(first_seen) WHERE extract_status = 'pending';
CREATE TABLE entry_bands (
    band_key INTEGER NOT NULL,
    entry_id INTEGER NOT NULL,
    PRIMARY KEY (band_key, entry_id)
) WITHOUT ROWID;
CREATE INDEX entry_bands_entry ON entry_bands(entry_id);
CREATE TABLE pages (
    entry_id INTEGER PRIMARY KEY REFERENCES entries(id),
    url TEXT NOT NULL,
    final_url TEXT,
    fetched_at TEXT NOT NULL,
    charset TEXT,
    body BLOB NOT NULL
);
CREATE VIRTUAL TABLE entries_fts USING fts5(
    title, text, content='entries', content_rowid='id', tokenize='trigram'
);
CREATE TRIGGER entries_fts_ai AFTER INSERT ON entries BEGIN
    INSERT INTO entries_fts(rowid, title, text) VALUES (new.id, new.title, new.text);
END;
CREATE TRIGGER entries_fts_ad AFTER DELETE ON entries BEGIN
    INSERT INTO entries_fts(entries_fts, rowid, title, text)
    VALUES ('delete', old.id, old.title, old.text);
END;
CREATE TRIGGER entries_fts_au AFTER UPDATE OF title, text ON entries BEGIN
    INSERT INTO entries_fts(entries_fts, rowid, title, text)
    VALUES ('delete', old.id, old.title, old.text);
    INSERT INTO entries_fts(rowid, title, text) VALUES (new.id, new.title, new.text);
END;
CREATE VIEW items AS
SELECT
    e.id AS id,
    f.name AS feed_name,
    COALESCE(f.title, f.name) AS feed_title,
    e.title AS title,
    e.url AS url,
    e.author AS author,
    e.published AS published,
    e.updated AS updated,
    e.text AS text,
    e.content_html AS content_html,
    e.summary AS summary,
    e.word_count AS word_count,
    COALESCE(e.language, f.language) AS language,
    e.categories AS categories,
    e.guid AS guid,
    e.first_seen AS first_seen,
    e.extract_status AS extract_status,
    e.story_id AS story_id,
    e.match_reason AS match_reason,
    e.match_score AS match_score
FROM entries e JOIN feeds f ON f.id = e.feed_id;
CREATE VIEW feed_health AS
SELECT
    f.name AS name,
    f.url AS url,
    f.effective_url AS effective_url,
    f.active AS active,
    f.disabled_reason AS disabled_reason,
    f.last_attempt AS last_attempt,
    f.last_success AS last_success,
    f.last_status AS last_status,
    f.consecutive_errors AS consecutive_errors,
    f.last_error AS last_error,
    f.last_error_kind AS last_error_kind,
    f.next_poll AS next_poll,
    f.interval AS interval,
    (SELECT COUNT(*) FROM entries e WHERE e.feed_id = f.id) AS entries,
    (SELECT MAX(e.published) FROM entries e WHERE e.feed_id = f.id) AS newest_entry,
    (SELECT ROUND(AVG(CASE WHEN r.extract_status = 'done' THEN 1.0 ELSE 0.0 END), 3)
       FROM (SELECT extract_status FROM entries e
             WHERE e.feed_id = f.id AND e.extract_status IN ('done', 'failed', 'feed')
             ORDER BY e.first_seen DESC LIMIT 50) r) AS extracted_share,
    (SELECT CAST(AVG(m.word_count) AS INTEGER) FROM (
        SELECT w.word_count, ROW_NUMBER() OVER (ORDER BY w.word_count) AS rn,
               COUNT(*) OVER () AS cnt
        FROM (SELECT word_count FROM entries e
              WHERE e.feed_id = f.id AND e.extract_status = 'done'
              ORDER BY e.first_seen DESC LIMIT 50) w) m
       WHERE m.rn IN ((m.cnt + 1) / 2, (m.cnt + 2) / 2)) AS median_words,
    -- 1 when the last 10 processed entries were extracted at under half the rate of the 40
    -- before them (which were mostly extracted): the site was probably redesigned.
    (SELECT CASE WHEN COUNT(*) = 50
                  AND AVG(CASE WHEN x.rn > 10 THEN x.ok END) >= 0.5
                  AND AVG(CASE WHEN x.rn <= 10 THEN x.ok END)
                      < AVG(CASE WHEN x.rn > 10 THEN x.ok END) / 2
             THEN 1 ELSE 0 END
       FROM (SELECT CASE WHEN e.extract_status = 'done' THEN 1.0 ELSE 0.0 END AS ok,
                    ROW_NUMBER() OVER (ORDER BY e.first_seen DESC, e.id DESC) AS rn
             FROM entries e WHERE e.feed_id = f.id
               AND e.extract_status IN ('done', 'failed', 'feed')
             ORDER BY e.first_seen DESC, e.id DESC LIMIT 50) x) AS extraction_drop,
    f.warnings AS warnings
FROM feeds f;
CREATE VIEW story_outlets AS
SELECT
    s.id AS story_id,
    r.title AS title,
    r.url AS url,
    s.first_seen AS first_seen,
    s.updated AS updated,
    COUNT(DISTINCT e.feed_id) AS outlet_count,
    COUNT(e.id) AS entry_count,
    (SELECT GROUP_CONCAT(name, ', ') FROM (
        SELECT DISTINCT f2.name AS name FROM entries e2 JOIN feeds f2 ON f2.id = e2.feed_id
        WHERE e2.story_id = s.id ORDER BY f2.name)) AS outlets
FROM stories s
JOIN entries e ON e.story_id = s.id
LEFT JOIN entries r ON r.id = s.representative_id
GROUP BY s.id;
""",
    ),
    (
        "band keys kept on the entry, band index filled in batches",
        """
ALTER TABLE entries ADD COLUMN bands BLOB;
CREATE TABLE store_state (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO store_state(name, value)
    SELECT 'bands_indexed_upto', COALESCE(MAX(id), 0) FROM entries;
""",
    ),
    (
        "search index merges 16 segments at a time",
        # FTS5 merges a level's segments once it holds `automerge` of them (default 4):
        # each token is rewritten log4(n) times as the index grows, a quarter of the cost of
        # storing an entry. At 16, log16(n) times; a search probes a few more segments.
        """
INSERT INTO entries_fts(entries_fts, rank) VALUES ('automerge', 16);
""",
    ),
    (
        "article failures: retry state on entries, article health and state in feed_health",
        # An article page that failed for a temporary reason (robots.txt unreachable, 5xx,
        # timeouts) stays pending with a retry time instead of failing for good; a feed's
        # article failures in a row make it `degraded`. Entries of the last two days failed
        # only because robots.txt was unreachable go back to the backlog.
        """
ALTER TABLE entries ADD COLUMN extract_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE entries ADD COLUMN extract_retry_at TEXT;
ALTER TABLE feeds ADD COLUMN article_errors INTEGER NOT NULL DEFAULT 0;
ALTER TABLE feeds ADD COLUMN last_article_error TEXT;
ALTER TABLE feeds ADD COLUMN last_article_error_at TEXT;
UPDATE entries SET extract_status = 'pending', extract_attempts = 1
 WHERE extract_status = 'failed' AND extract_error LIKE 'robots: %robots.txt unreachable%'
   AND first_seen >= strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-2 days');
DROP VIEW feed_health;
CREATE VIEW feed_health AS
SELECT
    f.name AS name,
    f.url AS url,
    f.effective_url AS effective_url,
    f.active AS active,
    f.disabled_reason AS disabled_reason,
    f.last_attempt AS last_attempt,
    f.last_success AS last_success,
    f.last_status AS last_status,
    f.consecutive_errors AS consecutive_errors,
    f.last_error AS last_error,
    f.last_error_kind AS last_error_kind,
    f.next_poll AS next_poll,
    f.interval AS interval,
    (SELECT COUNT(*) FROM entries e WHERE e.feed_id = f.id) AS entries,
    NULLIF((SELECT MAX(e.published) FROM entries e WHERE e.feed_id = f.id), '')
        AS newest_entry,
    (SELECT ROUND(AVG(CASE WHEN r.extract_status = 'done' THEN 1.0 ELSE 0.0 END), 3)
       FROM (SELECT extract_status FROM entries e
             WHERE e.feed_id = f.id AND e.extract_status IN ('done', 'failed', 'feed')
             ORDER BY e.first_seen DESC LIMIT 50) r) AS extracted_share,
    (SELECT CAST(AVG(m.word_count) AS INTEGER) FROM (
        SELECT w.word_count, ROW_NUMBER() OVER (ORDER BY w.word_count) AS rn,
               COUNT(*) OVER () AS cnt
        FROM (SELECT word_count FROM entries e
              WHERE e.feed_id = f.id AND e.extract_status = 'done'
              ORDER BY e.first_seen DESC LIMIT 50) w) m
       WHERE m.rn IN ((m.cnt + 1) / 2, (m.cnt + 2) / 2)) AS median_words,
    -- 1 when the last 10 processed entries were extracted at under half the rate of the 40
    -- before them (which were mostly extracted): the site was probably redesigned.
    (SELECT CASE WHEN COUNT(*) = 50
                  AND AVG(CASE WHEN x.rn > 10 THEN x.ok END) >= 0.5
                  AND AVG(CASE WHEN x.rn <= 10 THEN x.ok END)
                      < AVG(CASE WHEN x.rn > 10 THEN x.ok END) / 2
             THEN 1 ELSE 0 END
       FROM (SELECT CASE WHEN e.extract_status = 'done' THEN 1.0 ELSE 0.0 END AS ok,
                    ROW_NUMBER() OVER (ORDER BY e.first_seen DESC, e.id DESC) AS rn
             FROM entries e WHERE e.feed_id = f.id
               AND e.extract_status IN ('done', 'failed', 'feed')
             ORDER BY e.first_seen DESC, e.id DESC LIMIT 50) x) AS extraction_drop,
    f.warnings AS warnings,
    -- The one derivation of a feed's state (see FEED_STATES and docs/schema.md).
    CASE WHEN f.active = 0 THEN 'removed'
         WHEN f.disabled_reason IS NOT NULL THEN 'disabled'
         WHEN f.consecutive_errors > 0 THEN 'failing'
         WHEN f.article_errors >= 3 THEN 'degraded'
         ELSE 'ok' END AS state,
    f.article_errors AS article_errors,
    f.last_article_error AS last_article_error,
    f.last_article_error_at AS last_article_error_at,
    (SELECT COUNT(*) FROM entries e
      WHERE e.feed_id = f.id AND e.extract_status = 'pending') AS articles_waiting
FROM feeds f;
""",
    ),
    (
        "published ids: a story's item id fixed at its creation, each output's feed id",
        # An item's id (Atom id, RSS guid, JSON Feed id) was the tag URI of the story's current
        # representative, so it changed when another outlet's copy became the representative,
        # and readers showed the story again as new. Each story keeps the id it is published
        # under today. Feed ids were the self URL, which moves with base_url/listen: stores
        # that existed before (they have feeds) mark that their next publish stores the id the
        # old code emitted; a new store's outputs get a random urn:uuid.
        """
ALTER TABLE stories ADD COLUMN item_id TEXT;
UPDATE stories SET item_id = (
    SELECT aggregator_entry_uid(f.name, e.key) FROM entries e JOIN feeds f ON f.id = e.feed_id
    WHERE e.id = stories.representative_id);
CREATE TABLE output_ids (
    output TEXT PRIMARY KEY,
    feed_id TEXT NOT NULL,
    first_published TEXT NOT NULL
);
INSERT INTO store_state(name, value)
    SELECT 'legacy_feed_ids', 1 WHERE EXISTS (SELECT 1 FROM feeds);
""",
    ),
    (
        "dates a reader can sort by: undated entries, entries' own updated, feeds' updated",
        # entries.published stays NOT NULL (a rebuild would redo the FTS triggers and every
        # index): '' marks an entry with no knowable date, and the items view shows NULL.
        # Entries stored before this migration had updated = first-seen; one never changed
        # since takes its own date, and each story the newest of its members'.
        """
ALTER TABLE feeds ADD COLUMN updated TEXT;
UPDATE entries SET updated = published
    WHERE updated = first_seen AND published <> '' AND published < updated;
UPDATE stories SET updated = COALESCE(
    (SELECT MAX(e.updated) FROM entries e WHERE e.story_id = stories.id), updated);
DROP VIEW items;
CREATE VIEW items AS
SELECT
    e.id AS id,
    f.name AS feed_name,
    COALESCE(f.title, f.name) AS feed_title,
    e.title AS title,
    e.url AS url,
    e.author AS author,
    NULLIF(e.published, '') AS published,
    e.updated AS updated,
    e.text AS text,
    e.content_html AS content_html,
    e.summary AS summary,
    e.word_count AS word_count,
    COALESCE(e.language, f.language) AS language,
    e.categories AS categories,
    e.guid AS guid,
    e.first_seen AS first_seen,
    e.extract_status AS extract_status,
    e.story_id AS story_id,
    e.match_reason AS match_reason,
    e.match_score AS match_score
FROM entries e JOIN feeds f ON f.id = e.feed_id;
""",
    ),
    (
        "keys of pruned entries, so a feed that still lists them does not bring them back",
        """
CREATE TABLE pruned_keys (
    feed_id INTEGER NOT NULL REFERENCES feeds(id),
    key TEXT NOT NULL,
    pruned TEXT NOT NULL,
    PRIMARY KEY (feed_id, key)
) WITHOUT ROWID;
""",
    ),
    (
        "stored text holds no control characters, noncharacters or lone surrogates",
        # Rows stored before text was cleaned at ingest. The functions are the ingest path's
        # own (aggregator.storable, registered by Store.migrate): identity values (keys,
        # guids, URLs) are escaped the way parse escapes new ones, so an entry polled again
        # finds its row; text loses the characters. A key whose escaped form another entry
        # of the feed already holds is left alone (OR IGNORE) rather than merging two rows.
        # Updating title/text fires the FTS trigger: the index follows.
        # One scan of the entries finds the rows to clean (most have nothing to clean).
        """
CREATE TEMP TABLE agg_unclean AS SELECT id FROM entries
WHERE agg_unclean(key, guid, url, url_norm, canonical_url, image, title, text, author,
                  feed_html, content_html, summary, language, published_raw, extract_method,
                  extract_error, categories, enclosures);
UPDATE OR IGNORE entries SET key = agg_escape(key)
WHERE id IN (SELECT id FROM temp.agg_unclean) AND NOT agg_storable(key);
UPDATE entries SET guid = agg_escape(guid), url = agg_escape(url),
    url_norm = agg_escape(url_norm), canonical_url = agg_escape(canonical_url),
    image = agg_escape(image), title = agg_strip(title), text = agg_strip(text),
    author = agg_strip(author), feed_html = agg_strip(feed_html),
    content_html = agg_strip(content_html), summary = agg_strip(summary),
    language = agg_strip(language), published_raw = agg_strip(published_raw),
    extract_method = agg_strip(extract_method), extract_error = agg_strip(extract_error),
    categories = agg_json(categories), enclosures = agg_json(enclosures)
WHERE id IN (SELECT id FROM temp.agg_unclean);
DROP TABLE temp.agg_unclean;
UPDATE feeds SET title = agg_strip(title), link = agg_escape(link),
    effective_url = agg_escape(effective_url), last_error = agg_strip(last_error),
    disabled_reason = agg_strip(disabled_reason)
WHERE NOT (agg_storable(title) AND agg_storable(link) AND agg_storable(effective_url)
           AND agg_storable(last_error) AND agg_storable(disabled_reason));
UPDATE feeds SET warnings = agg_json(warnings) WHERE warnings <> agg_json(warnings);
UPDATE pages SET url = agg_escape(url), final_url = agg_escape(final_url)
WHERE NOT (agg_storable(url) AND agg_storable(final_url));
""",
    ),
    (
        "containment band keys kept on the entry (wire copy under a new lede)",
        # dedup.containment_keys: a second LSH band family, indexed in entry_bands beside
        # the first (their keys never coincide). Entries stored before have none: they are
        # found by containment only once their text is stored again (an edit, an article).
        """
ALTER TABLE entries ADD COLUMN contain_bands BLOB;
""",
    ),
]

# The states a feed can be in, as feed_health.state derives them (the one place): `removed`
# (no longer in feeds.yaml), `disabled` (disabled_reason set, e.g. 410 Gone), `failing` (its
# last poll failed), `degraded` (it polls fine but its last DEGRADED_ARTICLE_ERRORS article
# attempts or more, in a row, all failed: the subscriber gets the feed's text only), `ok`.
FEED_STATES: tuple[str, ...] = ("ok", "degraded", "failing", "disabled", "removed")
DEGRADED_ARTICLE_ERRORS = 3  # written into the feed_health view by its migration

# Band rows waiting in memory before they are written to entry_bands in one sorted batch.
# Written per entry, 32 random keys each dirty 32 random B-tree pages, and every feed's
# commit rewrites them all: most of a cold cycle's cost. 40k rows is ~6 MB of dict.
BAND_FLUSH_ROWS = 40_000

# Containment keys (dedup.CONTAIN_MIN_SHARED, kept equal by a test) a stored entry must share
# with a new one to be a containment candidate: one shared key is chance at a million entries.
CONTAIN_MIN_SHARED = 2


# Below this much free space beside the database, writes are about to fail.
MIN_FREE_BYTES = 1024 * 1024


def pack_bands(keys: Sequence[int]) -> bytes | None:
    """Band keys as stored in entries.bands: signed 64-bit little-endian integers."""
    return struct.pack(f"<{len(keys)}q", *keys) if keys else None


def unpack_bands(blob: bytes | None) -> list[int]:
    if not blob:
        return []
    return [k for (k,) in struct.iter_unpack("<q", blob)]


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class FeedState:
    """The scheduling state of one feed, as the pipeline needs it."""

    id: int
    name: str
    url: str
    effective_url: str | None
    etag: str | None
    last_modified: str | None
    body_hash: str | None
    consecutive_errors: int
    next_poll: datetime | None
    interval: float | None
    disabled_reason: str | None
    active: bool

    @property
    def fetch_url(self) -> str:
        return self.effective_url or self.url


@dataclass(frozen=True)
class NewEntry:
    """An entry ready for storage (cleaned by the pipeline)."""

    key: str
    guid: str | None
    url: str | None
    url_norm: str | None
    title: str
    author: str | None
    feed_html: str
    content_html: str
    text: str
    summary: str
    word_count: int
    language: str | None
    categories: tuple[str, ...]
    enclosures: tuple[Enclosure, ...]
    image: str | None
    published: datetime | None  # None: undated (see docs/schema.md, "Dates")
    published_raw: str | None
    date_note: str | None
    content_hash: str
    extract_status: str  # "pending" (full text wanted) or "skipped"
    text_hash: str | None
    signature: bytes | None
    band_keys: tuple[int, ...]
    updated: datetime | None = None  # the feed's own updated date for the entry, if sane
    contain_keys: tuple[int, ...] = ()  # dedup.containment_keys: articles only


@dataclass(frozen=True)
class StoredEntry:
    """What the pipeline needs back about an entry after an upsert."""

    id: int
    feed_id: int
    key: str
    is_new: bool
    changed: bool
    story_created: bool = False  # a new entry that started a story of its own
    stories_merged: int = 0  # other stories this new entry bridged into its own


@dataclass(frozen=True)
class BacklogEntry:
    id: int
    feed_name: str
    url: str
    feed_html: str
    word_count: int
    title: str
    story_id: int | None
    attempts: int = 0  # article attempts so far (failed ones, since it is still pending)
    first_seen: datetime | None = None


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _enclosures_json(encs: Iterable[Enclosure]) -> str:
    return _json([{"url": e.url, "type": e.type, "length": e.length} for e in encs])


class Store:
    """All reads and writes of the database. Not shared across threads: open one per thread
    (readers) and use one for the writer."""

    def __init__(self, path: str | Path, *, readonly: bool = False, timeout: float = 30.0) -> None:
        self.path = str(path)
        self.readonly = readonly
        self._busy_ms = int(timeout * 1000)
        self._timeout = timeout
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            if readonly:
                conn = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, timeout=timeout,
                    check_same_thread=False,
                )
            else:
                conn = sqlite3.connect(self.path, timeout=timeout, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        # For the migration that gives existing stories the id they are published under.
        conn.create_function("aggregator_entry_uid", 2, entry_uid, deterministic=True)
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
        conn.isolation_level = None
        self.conn = conn
        self._lock = threading.RLock()
        # Band keys of entries inserted since the last flush_bands (key -> entry ids), seen
        # by candidate lookups alongside entry_bands; _staged: the open transaction's.
        # One id per key in _pending; the rare further ids of a shared key in _pending_more.
        self._pending: dict[int, int] = {}
        self._pending_more: dict[int, list[int]] = {}
        self._pending_of: dict[int, tuple[int, ...]] = {}
        self._staged: list[int] = []
        self._bands_ready = False
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            if not readonly:
                # A new database frees space page by page after a prune (incremental_vacuum):
                # the mode must be set before the first table, and before WAL mode writes the
                # header. An older database is switched by one VACUUM (`prune --vacuum`).
                if conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0:
                    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("PRAGMA foreign_keys = ON")
                # Keep the WAL bounded even when readers pin old snapshots for a while.
                conn.execute("PRAGMA wal_autocheckpoint = 1000")
                conn.execute("PRAGMA journal_size_limit = 67108864")
                # 16 MB of page cache (default 2 MB): index probes (entry_bands, url_norm,
                # text_hash) of a large store stay in memory instead of costing a read each.
                conn.execute("PRAGMA cache_size = -16384")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot configure database {self.path}: {exc}") from exc

    @cached_property
    def db(self) -> Any:
        """sqlite-utils' view of the same connection, for introspection (tables, views,
        columns): imported on first use, since the write path is plain SQL."""
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

    def describe(self) -> dict[str, list[str]]:
        """Every table and view with its columns (FTS5 shadow tables left out)."""
        db = self.db
        names = [n for n in db.table_names() if not n.startswith("entries_fts_")]
        return {
            **{n: [c.name for c in db[n].columns] for n in names},
            **{v: [c.name for c in db[v].columns] for v in db.view_names()},
        }

    # ----------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Close; a writer first folds the WAL back and truncates it, unless a reader still
        holds a snapshot (then it returns at once: never wait on readers)."""
        if not self.readonly:
            if self._pending_of:
                try:
                    self.flush_bands()
                except (sqlite3.Error, StoreError):
                    pass  # the keys are on the entries: the next writer indexes them
            try:
                self.conn.execute("PRAGMA busy_timeout = 0")
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
        self.conn.close()

    def migrate(self) -> list[str]:
        """Apply pending migrations in order; returns their names."""
        applied: list[str] = []
        _register_functions(self.conn)
        with self.transaction():
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied TEXT NOT NULL)"
            )
            done = {r[0] for r in self.conn.execute("SELECT version FROM schema_migrations")}
            for version, (name, sql) in enumerate(MIGRATIONS, start=1):
                if version in done:
                    continue
                for statement in _split_sql(sql):
                    self.conn.execute(statement)
                self.conn.execute(
                    "INSERT INTO schema_migrations(version, name, applied) VALUES (?, ?, ?)",
                    (version, name, ts(datetime.now(UTC))),
                )
                applied.append(name)
        return applied

    def schema_version(self) -> int:
        try:
            row = self.conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        except sqlite3.OperationalError:
            return 0
        return int(row[0] or 0)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; rolled back on any error."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                for entry_id in self._staged:  # their rows are gone: so are their keys
                    self._unstage(entry_id)
                raise
            else:
                self.conn.execute("COMMIT")
            finally:
                self._staged.clear()

    def checkpoint(self) -> bool:
        """Fold the WAL back into the database and truncate it, never waiting for readers:
        PASSIVE first, then TRUNCATE once every frame is copied. Returns whether the WAL was
        reset; False means a reader still holds a snapshot in it (the WAL cannot restart
        from its beginning until that reader ends its transaction)."""
        with self._lock:
            try:
                timeout = self.conn.execute("PRAGMA busy_timeout").fetchone()[0]
                self.conn.execute("PRAGMA busy_timeout = 0")
                try:
                    busy, frames, copied = self.conn.execute(
                        "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if busy or frames != copied:
                        return False
                    busy, _, _ = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                    return not busy
                finally:
                    self.conn.execute(f"PRAGMA busy_timeout = {int(timeout)}")
            except sqlite3.OperationalError:
                return False

    def integrity_check(self) -> str:
        return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])

    # ----------------------------------------------------------------------- feeds

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
        matcher: Any = None,
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
        if len(self._pending) >= BAND_FLUSH_ROWS:
            self.flush_bands()
        return stored

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
        matcher: Any,
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
                return StoredEntry(row["id"], feed_id, e.key, is_new=False, changed=False)
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
            self._set_bands(c, row["id"], e.band_keys, e.contain_keys)
            self._touch_story_of(c, row["id"], now)
            return StoredEntry(row["id"], feed_id, e.key, is_new=False, changed=True)

        # The story is decided before the insert, so the entry row is written once.
        match = None
        merged = 0
        if matcher is not None and (e.url_norm or e.text_hash or e.band_keys):
            since = (e.published or now) - timedelta(days=window_days)
            candidates = self._candidates(
                c, 0, e.url_norm, None, e.text_hash, e.band_keys, since,
                contain_keys=e.contain_keys,
            )
            match = matcher(e, candidates) if candidates else None
        if match is not None and match.story_id is not None:
            story_id, reason, score = match.story_id, match.reason, match.score
            # The new entry may also match another story (it bridges two reports that
            # arrived apart): those stories become one.
            others = {x.story_id for x in candidates} - {story_id, None}
            for other in sorted(o for o in others if o is not None):
                bridge = matcher(e, [x for x in candidates if x.story_id == other])
                if bridge is not None:
                    self._merge_story(c, other, into=story_id, reason=bridge.reason,
                                      score=bridge.score)
                    merged += 1
        else:
            # The story's published id is fixed here, from its first entry, for good.
            feed_name = c.execute("SELECT name FROM feeds WHERE id = ?", (feed_id,)).fetchone()[0]
            story_id = int(c.execute(
                "INSERT INTO stories(first_seen, updated, entry_count, outlet_count, item_id)"
                " VALUES (?, ?, 1, 1, ?)",
                (ts(now), ts(own), entry_uid(feed_name, e.key))).lastrowid or 0)
            reason, score = "first", 1.0
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
            self._stage(entry_id, (*e.band_keys, *e.contain_keys))
        if reason == "first":
            c.execute("UPDATE stories SET representative_id = ? WHERE id = ?",
                      (entry_id, story_id))
        else:
            self._refresh_story(c, story_id, now)
        return StoredEntry(entry_id, feed_id, e.key, is_new=True, changed=True,
                           story_created=reason == "first", stories_merged=merged)

    def _set_bands(self, c: sqlite3.Connection, entry_id: int, keys: Sequence[int],
                   contain: Sequence[int] = ()) -> None:
        """Replace an entry's band keys (both families). Rare (an edit, an article replacing a
        teaser), so written through to entry_bands at once, unless the entry is still waiting
        in memory."""
        c.execute("UPDATE entries SET bands = ?, contain_bands = ? WHERE id = ?",
                  (pack_bands(keys), pack_bands(contain), entry_id))
        c.execute("DELETE FROM entry_bands WHERE entry_id = ?", (entry_id,))
        keys = (*keys, *contain)
        if entry_id in self._pending_of:
            self._unstage(entry_id)
            if keys:
                self._stage(entry_id, keys)
        elif keys:
            c.executemany(
                "INSERT OR IGNORE INTO entry_bands(band_key, entry_id) VALUES (?, ?)",
                [(k, entry_id) for k in keys],
            )

    # ----------------------------------------------------------------------- band index

    def _stage(self, entry_id: int, keys: Sequence[int]) -> None:
        keys = tuple(keys)
        self._pending_of[entry_id] = keys
        pending = self._pending
        if pending.keys().isdisjoint(keys):  # the usual case, at C speed
            pending.update(dict.fromkeys(keys, entry_id))
        else:  # a key already taken: most likely a near-duplicate of a pending entry
            for k in keys:
                if k in pending:
                    self._pending_more.setdefault(k, []).append(entry_id)
                else:
                    pending[k] = entry_id
        self._staged.append(entry_id)

    def _unstage(self, entry_id: int) -> None:
        """Rare (a rollback, new keys for a pending entry): the slow path is fine."""
        for k in self._pending_of.pop(entry_id, ()):
            more = self._pending_more.get(k)
            if self._pending.get(k) == entry_id:
                if more:
                    self._pending[k] = more.pop(0)
                else:
                    del self._pending[k]
            elif more and entry_id in more:
                more.remove(entry_id)
            if more is not None and not more:
                del self._pending_more[k]

    def _pending_ids(self, keys: Sequence[int]) -> set[int]:
        ids: set[int] = set()
        for k in self._pending.keys() & set(keys):
            ids.add(self._pending[k])
            ids.update(self._pending_more.get(k, ()))
        return ids

    def _ensure_bands(self, c: sqlite3.Connection) -> None:
        """Once per connection: index what an earlier process left unflushed (a crash, a
        kill -9). Runs inside the caller's transaction."""
        if not self._bands_ready:
            self._flush_bands(c)
            self._bands_ready = True

    @property
    def pending_bands(self) -> int:
        """Entries whose band keys wait in memory for flush_bands."""
        return len(self._pending_of)

    def flush_bands(self) -> int:
        """Write the band keys of entries not yet in entry_bands, in key order (each B-tree
        page is touched once per batch); returns the rows written."""
        with self.transaction() as c:
            written = self._flush_bands(c)
        self._bands_ready = True
        self._pending.clear()  # all on disk now
        self._pending_more.clear()
        self._pending_of.clear()
        return written

    def _flush_bands(self, c: sqlite3.Connection) -> int:
        row = c.execute(
            "SELECT value FROM store_state WHERE name = 'bands_indexed_upto'").fetchone()
        upto = int(row[0]) if row else 0
        top = int(c.execute("SELECT COALESCE(MAX(id), 0) FROM entries").fetchone()[0])
        # This writer's entries come from memory; others' (another process, or a crash
        # before the last flush) from entries.bands.
        pairs = list(self._pending.items())
        pairs += [(k, i) for k, more in self._pending_more.items() for i in more]
        missing = [
            i for (i,) in c.execute(
                "SELECT id FROM entries WHERE id > ?"
                " AND (bands IS NOT NULL OR contain_bands IS NOT NULL)", (upto,))
            if i not in self._pending_of
        ]
        for lo in range(0, len(missing), 500):
            chunk = missing[lo : lo + 500]
            marks = ",".join("?" * len(chunk))
            for entry_id, blob, contain in c.execute(
                    f"SELECT id, bands, contain_bands FROM entries WHERE id IN ({marks})",
                    chunk):
                pairs += [(k, entry_id) for k in (*unpack_bands(blob), *unpack_bands(contain))]
        pairs.sort()
        c.executemany("INSERT OR IGNORE INTO entry_bands(band_key, entry_id) VALUES (?, ?)",
                      pairs)
        c.execute("INSERT OR REPLACE INTO store_state(name, value)"
                  " VALUES ('bands_indexed_upto', ?)", (max(upto, top),))
        return len(pairs)

    def _candidates(
        self,
        c: sqlite3.Connection,
        entry_id: int,
        url_norm: str | None,
        canonical_norm: str | None,
        text_hash: str | None,
        band_keys: Sequence[int],
        since: datetime,
        limit: int = 200,
        contain_keys: Sequence[int] = (),
    ) -> list[Candidate]:
        """Entries that may be the same story: same normalised URL or canonical URL, same text
        hash, or sharing an LSH band, within the window. Every lookup goes through an index,
        and all of them are one statement (a new entry costs one round trip, not five),
        besides the containment lookup (:meth:`_containment_ids`): only its candidates come
        with their text, which dedup compares."""
        parts: list[str] = []
        args: list[Any] = []
        contained = json.dumps(self._containment_ids(c, contain_keys, limit))
        if contained != "[]":
            parts.append("SELECT value FROM json_each(?)")
            args.append(contained)
        for value in {url_norm, canonical_norm} - {None}:
            parts.append("SELECT id FROM (SELECT id FROM entries WHERE url_norm = ? UNION"
                         " SELECT id FROM entries WHERE canonical_url = ? LIMIT ?)")
            args += [value, value, limit]
        if text_hash:
            parts.append("SELECT id FROM (SELECT id FROM entries WHERE text_hash = ? LIMIT ?)")
            args += [text_hash, limit]
        if band_keys:
            self._ensure_bands(c)
            marks = ",".join("?" * len(band_keys))
            parts.append("SELECT entry_id FROM (SELECT DISTINCT entry_id FROM entry_bands"
                         f" WHERE band_key IN ({marks}) LIMIT ?)")
            args += [*band_keys, limit]
            pending = sorted(self._pending_ids(band_keys))
            if pending:
                parts.append("SELECT value FROM json_each(?)")
                args.append(json.dumps(pending))
        if not parts:
            return []
        rows = c.execute(
            "SELECT e.id, e.story_id, f.name AS feed_name, e.url_norm, e.canonical_url,"
            " e.text_hash, e.signature, e.title, e.word_count,"
            " COALESCE(NULLIF(e.published, ''), e.first_seen) AS published,"
            " CASE WHEN e.id IN (SELECT value FROM json_each(?)) THEN e.text END AS text"
            " FROM entries e JOIN feeds f ON f.id = e.feed_id"
            f" WHERE e.id IN ({' UNION '.join(parts)}) AND e.id != ?"
            " AND COALESCE(NULLIF(e.published, ''), e.first_seen) >= ?"
            " ORDER BY 10, e.id",
            (contained, *args, entry_id, ts(since)),
        ).fetchall()
        return [
            Candidate(
                entry_id=r["id"],
                story_id=r["story_id"],
                feed_name=r["feed_name"],
                url_norm=r["url_norm"],
                text_hash=r["text_hash"],
                signature=r["signature"],
                title=r["title"],
                published=parse_ts(r["published"]) or since,
                word_count=r["word_count"],
                canonical_norm=r["canonical_url"],
                text=r["text"],
            )
            for r in rows
        ]

    def _containment_ids(
        self, c: sqlite3.Connection, keys: Sequence[int], limit: int
    ) -> list[int]:
        """Entries sharing CONTAIN_MIN_SHARED or more of the containment band keys ``keys``
        (dedup.containment_keys), in entry_bands or still waiting in memory. Each key's rows
        are a short index range (unrelated texts rarely share a 2-row band), so the cost
        does not grow with the store."""
        if not keys:
            return []
        self._ensure_bands(c)
        marks = ",".join("?" * len(keys))
        shared = dict(c.execute(
            f"SELECT entry_id, COUNT(*) FROM entry_bands WHERE band_key IN ({marks})"
            " GROUP BY entry_id", tuple(keys)).fetchall())
        for k in self._pending.keys() & set(keys):
            for entry_id in (self._pending[k], *self._pending_more.get(k, ())):
                shared[entry_id] = shared.get(entry_id, 0) + 1
        found = sorted((-n, i) for i, n in shared.items() if n >= CONTAIN_MIN_SHARED)
        return [i for _, i in found[:limit]]

    @staticmethod
    def _merge_story(c: sqlite3.Connection, other: int, *, into: int, reason: str,
                     score: float) -> None:
        """Move every entry of story `other` into story `into`. The entry that started
        `other` now carries the reason it joined (the bridging match)."""
        c.execute(
            "UPDATE entries SET match_reason = ?, match_score = ?"
            " WHERE story_id = ? AND match_reason = 'first'",
            (reason, score, other),
        )
        c.execute("UPDATE entries SET story_id = ? WHERE story_id = ?", (into, other))
        c.execute("DELETE FROM stories WHERE id = ?", (other,))

    def _touch_story_of(self, c: sqlite3.Connection, entry_id: int, now: datetime) -> None:
        row = c.execute("SELECT story_id FROM entries WHERE id = ?", (entry_id,)).fetchone()
        if row and row[0] is not None:
            self._refresh_story(c, row[0], now)

    @staticmethod
    def _refresh_story(c: sqlite3.Connection, story_id: int, now: datetime, *,
                       touch: bool = True) -> None:
        """Recount a story and re-pick its representative: the fullest early version, i.e.
        among the members published within 6 hours of the earliest, the one with the most
        words (ties: earliest, then lowest id). The story's `updated` is its members' newest:
        it moves when an outlet joins (to that entry's own date) or a member changes, never
        to the time of the poll that noticed it. ``touch`` False (a prune only takes members
        away, which is no news): `updated` stays as it is."""
        # An undated entry (published '') counts from when it was first seen.
        members = c.execute(
            "SELECT id, feed_id, COALESCE(NULLIF(published, ''), first_seen) AS published,"
            " word_count, updated FROM entries WHERE story_id = ? ORDER BY 3, id",
            (story_id,),
        ).fetchall()
        if not members:
            return
        first = parse_ts(members[0]["published"]) or now
        early = [m for m in members if (parse_ts(m["published"]) or now) - first
                 <= timedelta(hours=6)]
        rep = max(early, key=lambda m: (m["word_count"], -members.index(m)))
        c.execute(
            "UPDATE stories SET representative_id = ?,"
            " updated = CASE WHEN ? THEN ? ELSE updated END, entry_count = ?,"
            " outlet_count = ? WHERE id = ?",
            (
                rep["id"], touch, max(m["updated"] for m in members), len(members),
                len({m["feed_id"] for m in members}),
                story_id,
            ),
        )

    def rematch_entry(
        self, entry_id: int, matcher: Any, now: datetime, window_days: int,
        canonical_norm: str | None = None,
    ) -> bool:
        """After full text arrives, a lone entry may now be recognisable as a known story.
        Returns True when its story was merged into that one."""
        with self.transaction() as c:
            row = c.execute(
                "SELECT e.*, (SELECT COUNT(*) FROM entries x WHERE x.story_id = e.story_id)"
                " AS members FROM entries e WHERE e.id = ?",
                (entry_id,),
            ).fetchone()
            if row is None or row["members"] > 1:
                return False
            keys = unpack_bands(row["bands"]) or [r[0] for r in c.execute(
                "SELECT band_key FROM entry_bands WHERE entry_id = ?", (entry_id,))]
            published = parse_ts(row["published"]) or parse_ts(row["first_seen"]) or now
            candidates = self._candidates(
                c, entry_id, row["url_norm"], canonical_norm, row["text_hash"], keys,
                published - timedelta(days=window_days),
                contain_keys=unpack_bands(row["contain_bands"]),
            )
            candidates = [x for x in candidates if x.story_id != row["story_id"]]
            if not candidates:
                return False
            match = matcher(_RowEntry(row), candidates)
            if match is None or match.story_id is None:
                return False
            old = row["story_id"]
            c.execute(
                "UPDATE entries SET story_id = ?, match_reason = ?, match_score = ? WHERE id = ?",
                (match.story_id, match.reason, match.score, entry_id),
            )
            if old is not None:
                c.execute("DELETE FROM stories WHERE id = ?", (old,))
            self._refresh_story(c, match.story_id, now)
        return old is not None

    # ----------------------------------------------------------------------- full text

    def backlog(self, limit: int, now: datetime | None = None) -> list[BacklogEntry]:
        """Entries waiting for their article page, newest first; those waiting for a retry
        (``extract_retry_at`` after ``now``) are left for a later run."""
        rows = self.conn.execute(
            "SELECT e.id, f.name AS feed_name, e.url,"
            " COALESCE(e.feed_html, e.content_html) AS feed_html, e.word_count, e.title,"
            " e.story_id, e.extract_attempts, e.first_seen"
            " FROM entries e JOIN feeds f ON f.id = e.feed_id"
            " WHERE e.extract_status = 'pending' AND e.url IS NOT NULL"
            " AND (e.extract_retry_at IS NULL OR e.extract_retry_at <= ?)"
            " ORDER BY e.first_seen DESC, e.id DESC LIMIT ?",
            (ts(now or datetime.now(UTC)), limit),
        ).fetchall()
        return [
            BacklogEntry(r["id"], r["feed_name"], r["url"], r["feed_html"] or "",
                         r["word_count"], r["title"], r["story_id"], r["extract_attempts"],
                         parse_ts(r["first_seen"]))
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
        keeps its own date, so a first poll does not date a feed's backlog "now"."""
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
                    self._set_bands(c, entry_id, band_keys, contain_keys)
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
            if page is not None:
                url, final_url, charset, body = page
                c.execute(
                    "INSERT OR REPLACE INTO pages(entry_id, url, final_url, fetched_at, charset,"
                    " body) VALUES (?, ?, ?, ?, ?, ?)",
                    (entry_id, url, final_url, ts(now), charset, zlib.compress(body, 6)),
                )
            self._touch_story_of(c, entry_id, now)

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

    # ----------------------------------------------------------------------- retention

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
        if self._pending_of and not dry_run:
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
                self._refresh_story(c, story_id, now, touch=False)
        free_after = int(c.execute("PRAGMA freelist_count").fetchone()[0])
        page_size = int(c.execute("PRAGMA page_size").fetchone()[0])
        for entry_id in ids:  # flushed above, unless dry: count what the flush would write
            if entry_id in self._pending_of:
                bands += len(self._pending_of[entry_id])
                if not dry_run:
                    self._unstage(entry_id)
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

    def size(self) -> int:
        """Bytes the database takes on disk: its file and its WAL."""
        if self.path == ":memory:":
            return 0
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += Path(self.path + suffix).stat().st_size
            except OSError:
                pass
        return total

    def page_size(self) -> int:
        return int(self.conn.execute("PRAGMA page_size").fetchone()[0])

    def auto_vacuum(self) -> str:
        mode = int(self.conn.execute("PRAGMA auto_vacuum").fetchone()[0])
        return {0: "none", 1: "full", 2: "incremental"}.get(mode, str(mode))

    def vacuum(self) -> None:
        """Rewrite the database (VACUUM) with auto_vacuum = INCREMENTAL: every free page is
        returned, and later prunes can return theirs with incremental_vacuum. Needs free disk
        space for a copy of the database; blocks other writers meanwhile (never readers)."""
        with self._lock:
            try:
                self.conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                self.conn.execute("VACUUM")
            except sqlite3.Error as exc:
                raise StoreError(f"VACUUM of {self.path} failed: {exc}") from exc
        self.fold_wal()

    def incremental_vacuum(self, max_pages: int | None = None) -> int:
        """Return up to ``max_pages`` free pages (all when None) to the file system; only a
        database in auto_vacuum = INCREMENTAL mode can. Returns the pages given back."""
        with self._lock:
            if self.auto_vacuum() != "incremental":
                return 0
            before = int(self.conn.execute("PRAGMA page_count").fetchone()[0])
            arg = "" if max_pages is None else f"({max(1, int(max_pages))})"
            # Each step of this pragma frees one page, and execute() steps a statement
            # without result columns once: executescript steps it to the end. (Autocommit
            # mode: executescript has no transaction of ours to commit first.)
            try:
                self.conn.executescript(f"PRAGMA incremental_vacuum{arg};")
            except sqlite3.Error as exc:
                raise StoreError(f"incremental vacuum of {self.path} failed: {exc}") from exc
            after = int(self.conn.execute("PRAGMA page_count").fetchone()[0])
        return before - after

    def fold_wal(self) -> None:
        """Checkpoint and truncate the WAL now, unless a reader holds a snapshot (then
        leave it to a later checkpoint: never wait on readers)."""
        with self._lock:
            try:
                self.conn.execute("PRAGMA busy_timeout = 0")
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error:
                pass
            finally:
                self.conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")

    def story_member_ids(self, story_ids: Iterable[int]) -> set[int]:
        """Every entry of the given stories."""
        ids = sorted(set(story_ids))
        found: set[int] = set()
        for lo in range(0, len(ids), 500):
            chunk = ids[lo : lo + 500]
            marks = ",".join("?" * len(chunk))
            found.update(i for (i,) in self.conn.execute(
                f"SELECT id FROM entries WHERE story_id IN ({marks})", chunk))
        return found

    def prune_pages(self, older_than: datetime) -> int:
        with self.transaction() as c:
            cur = c.execute("DELETE FROM pages WHERE fetched_at < ?", (ts(older_than),))
            return cur.rowcount

    def entry_feed_html(self, entry_id: int) -> tuple[str, str]:
        """(sanitised feed content, title) of an entry."""
        row = self.conn.execute(
            "SELECT COALESCE(feed_html, content_html), title FROM entries WHERE id = ?",
            (entry_id,)
        ).fetchone()
        return (row[0] or "", row[1]) if row else ("", "")

    # ----------------------------------------------------------------------- reading

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
        return [_item(r, outlets.get(r["story_id"], ())) for r in rows]

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
            " snippet(entries_fts, 1, '[', ']', '…', 12) AS snippet"
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

    def disk_usage(self) -> tuple[int, int]:
        """(database file bytes, WAL file bytes); 0 for a file that does not exist."""
        sizes = []
        for p in (self.path, self.path + "-wal"):
            try:
                sizes.append(os.stat(p).st_size if self.path != ":memory:" else 0)
            except OSError:
                sizes.append(0)
        return sizes[0], sizes[1]

    def write_problem(self, timeout: float = 2.0) -> str | None:
        """Why this connection could not write the database now, or None when it could.

        Checks what a write needs without writing anything: the files and their directory
        writable (a read-only file or mount, a file deleted under the daemon), some free
        space, and the write lock obtainable within ``timeout`` seconds (another process
        holding it longer blocks every write). Run it on the writer's thread: the lock
        check takes and releases the write lock."""
        if self.readonly:
            return f"{self.path}: opened read-only"
        if self.path != ":memory:":
            if not os.path.exists(self.path):
                return f"{self.path}: the database file is gone"
            for p in (self.path, self.path + "-wal", self.path + "-shm"):
                if os.path.exists(p) and not os.access(p, os.W_OK):
                    return f"{p}: not writable"
            folder = os.path.dirname(os.path.abspath(self.path))
            if not os.access(folder, os.W_OK | os.X_OK):
                return f"{folder}: directory not writable"
            try:
                st = os.statvfs(folder)
                if st.f_bavail * st.f_frsize < MIN_FREE_BYTES:
                    return f"{folder}: no space left ({st.f_bavail * st.f_frsize} bytes free)"
            except OSError:
                pass
        with self._lock:
            if self.conn.in_transaction:
                return None  # writing right now
            try:
                self.conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                return f"{self.path}: cannot take the write lock: {exc}"
            finally:
                try:
                    self.conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
                except sqlite3.Error:
                    pass
        return None

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

    def story(self, story_id: int) -> tuple[sqlite3.Row | None, list[sqlite3.Row]]:
        s = self.conn.execute("SELECT * FROM stories WHERE id = ?", (story_id,)).fetchone()
        members = self.conn.execute(
            "SELECT e.id, f.name AS feed_name, e.title, e.url, e.published, e.word_count,"
            " e.match_reason, e.match_score FROM entries e JOIN feeds f ON f.id = e.feed_id"
            " WHERE e.story_id = ? ORDER BY e.published, e.id",
            (story_id,),
        ).fetchall()
        return s, members

    def output_ids(self, legacy: Mapping[str, str], now: datetime) -> dict[str, str]:
        """The stored feed id of each output named in ``legacy`` (name -> the id the code
        emitted before ids were stored: its self URL). An output without one gets it now, for
        good: the legacy id on the first publish after the migration of a store that existed
        before it, else a new ``urn:uuid``."""
        ids = {r["output"]: r["feed_id"] for r in self.conn.execute(
            "SELECT output, feed_id FROM output_ids")}
        flag = self.conn.execute(
            "SELECT value FROM store_state WHERE name = 'legacy_feed_ids'").fetchone()
        if all(name in ids for name in legacy) and not (flag and flag[0]):
            return {name: ids[name] for name in legacy}
        with self.transaction() as c:
            flag = c.execute(
                "SELECT value FROM store_state WHERE name = 'legacy_feed_ids'").fetchone()
            use_legacy = bool(flag and flag[0])
            for name, old_id in legacy.items():
                new_id = old_id if use_legacy else f"urn:uuid:{uuid.uuid4()}"
                c.execute("INSERT OR IGNORE INTO output_ids(output, feed_id, first_published)"
                          " VALUES (?, ?, ?)", (name, new_id, ts(now)))
            c.execute("UPDATE store_state SET value = 0 WHERE name = 'legacy_feed_ids'")
            ids = {r["output"]: r["feed_id"] for r in c.execute(
                "SELECT output, feed_id FROM output_ids")}
        return {name: ids[name] for name in legacy}

    def count_entries(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])


class _RowEntry:
    """Adapts an entries row to the attributes a matcher reads from a NewEntry."""

    def __init__(self, row: sqlite3.Row) -> None:
        self.url_norm = row["url_norm"]
        self.text_hash = row["text_hash"]
        self.signature = row["signature"]
        self.title = row["title"]
        self.word_count = row["word_count"]
        self.text = row["text"]
        self.canonical_norm: str | None = None


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


def entry_uid(feed_name: str, key: str) -> str:
    """A stable, opaque id for published feeds (a tag URI, RFC 4151)."""
    digest = hashlib.sha1(f"{feed_name}\0{key}".encode()).hexdigest()[:20]
    return f"tag:aggregator,2026:{feed_name}/{digest}"


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


def _sql_storable(value: Any) -> bool:
    return not isinstance(value, str) or is_storable(value)


def _sql_strip(value: Any) -> Any:
    return strip_unstorable(value) if isinstance(value, str) else value


def _sql_escape(value: Any) -> Any:
    return escape_unstorable(value) if isinstance(value, str) else value


def _clean_json_value(value: Any) -> Any:
    if isinstance(value, str):
        return strip_unstorable(value)
    if isinstance(value, list):
        return [_clean_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean_json_value(v) for k, v in value.items()}
    return value


def _sql_json(value: Any) -> Any:
    """A JSON column with unstorable characters removed from its strings, including those
    written as \\u escapes (a reader decoding the JSON would get them back)."""
    if not isinstance(value, str) or ("\\u" not in value and is_storable(value)):
        return value
    try:
        decoded = json.loads(strip_unstorable(value))
    except ValueError:
        return strip_unstorable(value)
    cleaned = _json(_clean_json_value(decoded))
    return value if cleaned == _json(decoded) and is_storable(value) else cleaned


# A JSON string escape of an unstorable code point (C0 control, surrogate, noncharacter).
_JSON_UNSTORABLE = re.compile(
    r"\\u(?:00[01][0-9a-fA-F]|[dD][89a-fA-F][0-9a-fA-F]{2}|[fF][dD][dDeE][0-9a-fA-F]"
    r"|[fF]{3}[eEfF])")


def _sql_unclean(*values: Any) -> bool:
    """Whether any of the values holds an unstorable character, or the JSON escape of one."""
    return any(isinstance(v, str) and (not is_storable(v) or (
        "\\u" in v and _JSON_UNSTORABLE.search(v) is not None)) for v in values)


def _register_functions(conn: sqlite3.Connection) -> None:
    """The text hygiene of the ingest path, as SQL functions for migrations."""
    conn.create_function("agg_unclean", -1, _sql_unclean, deterministic=True)
    conn.create_function("agg_storable", 1, _sql_storable, deterministic=True)
    conn.create_function("agg_strip", 1, _sql_strip, deterministic=True)
    conn.create_function("agg_escape", 1, _sql_escape, deterministic=True)
    conn.create_function("agg_json", 1, _sql_json, deterministic=True)


def _split_sql(sql: str) -> list[str]:
    """Split a migration into statements (triggers contain semicolons inside BEGIN...END)."""
    statements: list[str] = []
    buf: list[str] = []
    for line in sql.strip().splitlines():
        buf.append(line)
        joined = "\n".join(buf).strip()
        if sqlite3.complete_statement(joined):
            statements.append(joined)
            buf = []
    if "\n".join(buf).strip():
        statements.append("\n".join(buf).strip())
    return statements
