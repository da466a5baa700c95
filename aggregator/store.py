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
import sqlite3
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from .errors import StoreError
from .models import Candidate, Enclosure, FeedConfig, Item, Outlet

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
]

# Band rows waiting in memory before they are written to entry_bands in one sorted batch.
# Written per entry, 32 random keys each dirty 32 random B-tree pages, and every feed's
# commit rewrites them all: most of a cold cycle's cost. 40k rows is ~6 MB of dict.
BAND_FLUSH_ROWS = 40_000


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
    published: datetime | None  # None: use first-seen time (see docs/schema.md)
    published_raw: str | None
    date_note: str | None
    content_hash: str
    extract_status: str  # "pending" (full text wanted) or "skipped"
    text_hash: str | None
    signature: bytes | None
    band_keys: tuple[int, ...]


@dataclass(frozen=True)
class StoredEntry:
    """What the pipeline needs back about an entry after an upsert."""

    id: int
    feed_id: int
    key: str
    is_new: bool
    changed: bool


@dataclass(frozen=True)
class BacklogEntry:
    id: int
    feed_name: str
    url: str
    feed_html: str
    word_count: int
    title: str
    story_id: int | None


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

    def disk_usage(self) -> tuple[int, int]:
        """(database file bytes, WAL file bytes); 0 for a file that does not exist."""
        sizes = []
        for path in (self.path, self.path + "-wal"):
            try:
                sizes.append(os.stat(path).st_size)
            except OSError:
                sizes.append(0)
        return sizes[0], sizes[1]

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
    ) -> list[StoredEntry]:
        """Record a successful poll (200 or 304) and upsert its entries in ONE transaction.
        ``warnings`` of the parse replace the feed's; None (a 304, an unchanged body) keeps them.

        ``matcher(entry, candidates) -> StoryMatch | None`` decides the story of each new
        entry (the pipeline passes dedup.decide bound to its settings).
        """
        with self.transaction() as c:
            existing = self._existing(c, feed_id, [e.key for e in entries])
            stored = [
                self._upsert_entry(c, feed_id, e, now, matcher, window_days, existing.get(e.key))
                for e in entries
            ]
            c.execute(
                "UPDATE feeds SET last_attempt = ?, last_success = ?, last_status = ?,"
                " consecutive_errors = 0, last_error = NULL, last_error_kind = NULL,"
                " next_poll = ?, interval = ?, retry_after_until = NULL,"
                " etag = COALESCE(?, etag), last_modified = COALESCE(?, last_modified),"
                " body_hash = COALESCE(?, body_hash),"
                " effective_url = COALESCE(?, effective_url),"
                " title = COALESCE(title, ?), link = COALESCE(?, link),"
                " language = COALESCE(language, ?), format = COALESCE(?, format),"
                " warnings = COALESCE(?, warnings) WHERE id = ?",
                (
                    ts(now), ts(now), status, ts(next_poll), interval, etag, last_modified,
                    body_hash, permanent_url, title, link, language, format,
                    None if warnings is None else _json(list(warnings)), feed_id,
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
                "SELECT id, key, content_hash FROM entries WHERE feed_id = ?"
                f" AND key IN ({marks})", (feed_id, *chunk)):
                found[r["key"]] = r
        return found

    def _upsert_entry(
        self,
        c: sqlite3.Connection,
        feed_id: int,
        e: NewEntry,
        now: datetime,
        matcher: Any,
        window_days: int,
        row: sqlite3.Row | None,
    ) -> StoredEntry:
        """``row``: the stored entry with the same key (id, content_hash), if any."""
        published = ts(e.published or now)
        if row is not None:
            if row["content_hash"] == e.content_hash:
                return StoredEntry(row["id"], feed_id, e.key, is_new=False, changed=False)
            # Edited in place: same identity, new content. The published date stays unless
            # the feed now gives a sane one; full text is fetched again.
            c.execute(
                "UPDATE entries SET guid = ?, url = ?, url_norm = ?, title = ?, author = ?,"
                " feed_html = ?, content_html = ?, text = ?, summary = ?, word_count = ?,"
                " language = ?, categories = ?, enclosures = ?, image = ?,"
                " published = CASE WHEN ? IS NULL THEN published ELSE ? END,"
                " published_raw = ?, date_note = ?, updated = ?, last_seen = ?,"
                " content_hash = ?, extract_status = ?, extract_error = NULL,"
                " text_hash = ?, signature = ? WHERE id = ?",
                (
                    e.guid, e.url, e.url_norm, e.title, e.author,
                    None if e.feed_html == e.content_html else e.feed_html, e.content_html,
                    e.text, e.summary, e.word_count, e.language, _json(list(e.categories)),
                    _enclosures_json(e.enclosures), e.image, ts(e.published), ts(e.published),
                    e.published_raw, e.date_note, ts(now), ts(now), e.content_hash,
                    e.extract_status, e.text_hash, e.signature, row["id"],
                ),
            )
            self._set_bands(c, row["id"], e.band_keys)
            self._touch_story_of(c, row["id"], now)
            return StoredEntry(row["id"], feed_id, e.key, is_new=False, changed=True)

        # The story is decided before the insert, so the entry row is written once.
        match = None
        if matcher is not None and (e.url_norm or e.text_hash or e.band_keys):
            since = (e.published or now) - timedelta(days=window_days)
            candidates = self._candidates(
                c, 0, e.url_norm, None, e.text_hash, e.band_keys, since
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
        else:
            story_id = int(c.execute(
                "INSERT INTO stories(first_seen, updated, entry_count, outlet_count)"
                " VALUES (?, ?, 1, 1)", (ts(now), ts(now))).lastrowid or 0)
            reason, score = "first", 1.0
        cur = c.execute(
            "INSERT INTO entries(feed_id, key, guid, url, url_norm, title, author, feed_html,"
            " content_html, text, summary, word_count, language, categories, enclosures, image,"
            " published, published_raw, date_note, updated, first_seen, last_seen,"
            " content_hash, extract_status, text_hash, signature, bands, story_id,"
            " match_reason, match_score)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                # feed_html stays NULL while content_html *is* the feed's content: the HTML
                # is stored once (record_article keeps it aside when an article replaces it).
                feed_id, e.key, e.guid, e.url, e.url_norm, e.title, e.author,
                None if e.feed_html == e.content_html else e.feed_html,
                e.content_html, e.text, e.summary, e.word_count, e.language,
                _json(list(e.categories)), _enclosures_json(e.enclosures), e.image, published,
                e.published_raw, e.date_note, ts(now), ts(now), ts(now), e.content_hash,
                e.extract_status, e.text_hash, e.signature, pack_bands(e.band_keys), story_id,
                reason, score,
            ),
        )
        entry_id = int(cur.lastrowid or 0)
        if e.band_keys:
            self._stage(entry_id, e.band_keys)
        if reason == "first":
            c.execute("UPDATE stories SET representative_id = ? WHERE id = ?",
                      (entry_id, story_id))
        else:
            self._refresh_story(c, story_id, now)
        return StoredEntry(entry_id, feed_id, e.key, is_new=True, changed=True)

    def _set_bands(self, c: sqlite3.Connection, entry_id: int, keys: Sequence[int]) -> None:
        """Replace an entry's band keys. Rare (an edit, an article replacing a teaser), so
        written through to entry_bands at once, unless the entry is still waiting in memory."""
        c.execute("UPDATE entries SET bands = ? WHERE id = ?", (pack_bands(keys), entry_id))
        c.execute("DELETE FROM entry_bands WHERE entry_id = ?", (entry_id,))
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
                "SELECT id FROM entries WHERE id > ? AND bands IS NOT NULL", (upto,))
            if i not in self._pending_of
        ]
        for lo in range(0, len(missing), 500):
            chunk = missing[lo : lo + 500]
            marks = ",".join("?" * len(chunk))
            for entry_id, blob in c.execute(
                    f"SELECT id, bands FROM entries WHERE id IN ({marks})", chunk):
                pairs += [(k, entry_id) for k in unpack_bands(blob)]
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
    ) -> list[Candidate]:
        """Entries that may be the same story: same normalised URL or canonical URL, same text
        hash, or sharing an LSH band, within the window. Every lookup goes through an index,
        and all of them are one statement (a new entry costs one round trip, not five)."""
        parts: list[str] = []
        args: list[Any] = []
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
            " e.text_hash, e.signature, e.title, e.published, e.word_count"
            " FROM entries e JOIN feeds f ON f.id = e.feed_id"
            f" WHERE e.id IN ({' UNION '.join(parts)}) AND e.id != ? AND e.published >= ?"
            " ORDER BY e.published, e.id",
            (*args, entry_id, ts(since)),
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
            )
            for r in rows
        ]

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
    def _refresh_story(c: sqlite3.Connection, story_id: int, now: datetime) -> None:
        """Recount a story and re-pick its representative: the fullest early version, i.e.
        among the members published within 6 hours of the earliest, the one with the most
        words (ties: earliest, then lowest id)."""
        members = c.execute(
            "SELECT id, feed_id, published, word_count FROM entries WHERE story_id = ?"
            " ORDER BY published, id",
            (story_id,),
        ).fetchall()
        if not members:
            return
        first = parse_ts(members[0]["published"]) or now
        early = [m for m in members if (parse_ts(m["published"]) or now) - first
                 <= timedelta(hours=6)]
        rep = max(early, key=lambda m: (m["word_count"], -members.index(m)))
        c.execute(
            "UPDATE stories SET representative_id = ?, updated = ?, entry_count = ?,"
            " outlet_count = ? WHERE id = ?",
            (
                rep["id"], ts(now), len(members), len({m["feed_id"] for m in members}),
                story_id,
            ),
        )

    def rematch_entry(
        self, entry_id: int, matcher: Any, now: datetime, window_days: int,
        canonical_norm: str | None = None,
    ) -> None:
        """After full text arrives, a lone entry may now be recognisable as a known story."""
        with self.transaction() as c:
            row = c.execute(
                "SELECT e.*, (SELECT COUNT(*) FROM entries x WHERE x.story_id = e.story_id)"
                " AS members FROM entries e WHERE e.id = ?",
                (entry_id,),
            ).fetchone()
            if row is None or row["members"] > 1:
                return
            keys = unpack_bands(row["bands"]) or [r[0] for r in c.execute(
                "SELECT band_key FROM entry_bands WHERE entry_id = ?", (entry_id,))]
            published = parse_ts(row["published"]) or now
            candidates = self._candidates(
                c, entry_id, row["url_norm"], canonical_norm, row["text_hash"], keys,
                published - timedelta(days=window_days),
            )
            candidates = [x for x in candidates if x.story_id != row["story_id"]]
            if not candidates:
                return
            match = matcher(_RowEntry(row), candidates)
            if match is None or match.story_id is None:
                return
            old = row["story_id"]
            c.execute(
                "UPDATE entries SET story_id = ?, match_reason = ?, match_score = ? WHERE id = ?",
                (match.story_id, match.reason, match.score, entry_id),
            )
            if old is not None:
                c.execute("DELETE FROM stories WHERE id = ?", (old,))
            self._refresh_story(c, match.story_id, now)

    # ----------------------------------------------------------------------- full text

    def backlog(self, limit: int) -> list[BacklogEntry]:
        """Entries waiting for their article page, newest first."""
        rows = self.conn.execute(
            "SELECT e.id, f.name AS feed_name, e.url,"
            " COALESCE(e.feed_html, e.content_html) AS feed_html, e.word_count, e.title,"
            " e.story_id FROM entries e JOIN feeds f ON f.id = e.feed_id"
            " WHERE e.extract_status = 'pending' AND e.url IS NOT NULL"
            " ORDER BY e.first_seen DESC, e.id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            BacklogEntry(r["id"], r["feed_name"], r["url"], r["feed_html"] or "",
                         r["word_count"], r["title"], r["story_id"])
            for r in rows
        ]

    def backlog_size(self) -> int:
        return int(self.conn.execute(
            "SELECT COUNT(*) FROM entries WHERE extract_status = 'pending'").fetchone()[0])

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
        page: tuple[str, str | None, str | None, bytes] | None = None,
    ) -> None:
        """Store the outcome of an article fetch. ``status``: done (content replaced),
        feed (the feed's own content was better), failed (reason in ``error``)."""
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
                    " signature = ?, updated = ? WHERE id = ?",
                    (
                        content_html, text, summary, word_count, language, image, author,
                        canonical_url, text_hash, signature, ts(now), entry_id,
                    ),
                )
                if band_keys is not None:
                    self._set_bands(c, entry_id, band_keys)
            elif canonical_url:
                c.execute(
                    "UPDATE entries SET canonical_url = COALESCE(?, canonical_url) WHERE id = ?",
                    (canonical_url, entry_id),
                )
            c.execute(
                "UPDATE entries SET extract_status = ?, extract_method = ?, extract_error = ?,"
                " extracted_at = ? WHERE id = ?",
                (status, method, error, ts(now), entry_id),
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
        (published, id) of the last item of the previous page (keyset pagination)."""
        where = "WHERE (e.published, e.id) < (?, ?)" if before else ""
        args: list[Any] = list(before) if before else []
        story_join = ("JOIN stories s ON s.representative_id = e.id" if one_per_story
                      else "LEFT JOIN stories s ON 0")
        sql = (
            "SELECT e.*, f.name AS feed_name, COALESCE(f.title, f.name) AS feed_title,"
            " COALESCE(f.effective_url, f.url) AS feed_url, f.link AS feed_link,"
            " f.language AS feed_language, f.tags AS feed_tags, s.updated AS story_updated"
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
            before = (ts(last.published) or "", last.id)

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
                " ORDER BY e.published, e.id",
                chunk,
            ):
                result.setdefault(r["story_id"], []).append(
                    (r["id"], Outlet(r["name"], r["title"], r["url"],
                                     parse_ts(r["published"]) or datetime.now(UTC)))
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
        rows = self.conn.execute("SELECT * FROM feed_health ORDER BY name").fetchall()
        result = []
        for r in rows:
            d = dict(r)
            d["warnings"] = json.loads(d.get("warnings") or "[]")
            d["active"] = bool(d["active"])
            result.append(d)
        return result

    def story(self, story_id: int) -> tuple[sqlite3.Row | None, list[sqlite3.Row]]:
        s = self.conn.execute("SELECT * FROM stories WHERE id = ?", (story_id,)).fetchone()
        members = self.conn.execute(
            "SELECT e.id, f.name AS feed_name, e.title, e.url, e.published, e.word_count,"
            " e.match_reason, e.match_score FROM entries e JOIN feeds f ON f.id = e.feed_id"
            " WHERE e.story_id = ? ORDER BY e.published, e.id",
            (story_id,),
        ).fetchall()
        return s, members

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
    published = parse_ts(r["published"]) or datetime.now(UTC)
    updated = parse_ts(r["updated"]) or published
    story_updated = parse_ts(r["story_updated"]) if r["story_updated"] else None
    if story_updated and story_updated > updated:
        updated = story_updated  # an outlet joining the story moves the item's `updated`
    others = tuple(o for (eid, o) in members if eid != r["id"])
    encs = tuple(
        Enclosure(d.get("url", ""), d.get("type"), d.get("length"))
        for d in json.loads(r["enclosures"] or "[]")
        if d.get("url")
    )
    return Item(
        id=r["id"],
        uid=entry_uid(r["feed_name"], r["key"]),
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
        updated=max(updated, published),
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
    )


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
