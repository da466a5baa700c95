"""The schema: ordered migrations (a public contract, docs/schema.md) and applying them.

A new migration is appended at the END of MIGRATIONS; a version is a position in it."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, datetime
from typing import Any

from ..storable import escape_unstorable, is_storable, strip_unstorable
from .values import _json, ts

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
    (
        "translations and regional editions: entry_links, entries.page_language, story_members",
        # The links each entry's feed or page names to its other language versions, kept
        # so that either side may arrive first (across polls and restarts): a new entry
        # looks up the links pointing at its URL, and its own links' targets. items.language
        # gains the page's language as the last fallback; every column stays.
        """
CREATE TABLE entry_links (
    entry_id INTEGER NOT NULL REFERENCES entries(id),
    source TEXT NOT NULL,
    url_norm TEXT NOT NULL,
    language TEXT,
    kind TEXT NOT NULL,
    PRIMARY KEY (entry_id, source, url_norm)
) WITHOUT ROWID;
CREATE INDEX entry_links_url ON entry_links(url_norm);
ALTER TABLE entries ADD COLUMN page_language TEXT;
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
    COALESCE(e.language, f.language, e.page_language) AS language,
    e.categories AS categories,
    e.guid AS guid,
    e.first_seen AS first_seen,
    e.extract_status AS extract_status,
    e.story_id AS story_id,
    e.match_reason AS match_reason,
    e.match_score AS match_score
FROM entries e JOIN feeds f ON f.id = e.feed_id;
CREATE VIEW story_members AS
SELECT
    e.story_id AS story_id,
    e.id AS entry_id,
    f.name AS feed_name,
    COALESCE(f.title, f.name) AS outlet,
    NULLIF(LOWER(SUBSTR(
        REPLACE(COALESCE(e.language, f.language, e.page_language), '_', '-'), 1,
        INSTR(REPLACE(COALESCE(e.language, f.language, e.page_language), '_', '-') || '-',
              '-') - 1)), '') AS language,
    e.match_reason AS match_reason,
    e.match_score AS match_score,
    e.url AS url,
    e.title AS title,
    NULLIF(e.published, '') AS published
FROM entries e JOIN feeds f ON f.id = e.feed_id
WHERE e.story_id IS NOT NULL;
""",
    ),
    (
        "documents: published documents kept in the database (PostgreSQL serve nodes)",
        # On PostgreSQL, publish writes here and every `aggregator serve` node reads from
        # here; SQLite keeps publishing files, and has the twin table for the same protocol.
        """
CREATE TABLE documents (
    name TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    etag TEXT NOT NULL,
    content_type TEXT NOT NULL,
    published TEXT NOT NULL,
    size INTEGER NOT NULL
) WITHOUT ROWID;
""",
    ),
    (
        "task_migrations: the task engine's migrations applied (PostgreSQL workers)",
        # Filled by `aggregator migrate` on PostgreSQL only (procrastinate's versioned
        # migrations); the same table here keeps both backends' schemas alike.
        """
CREATE TABLE task_migrations (
    name TEXT PRIMARY KEY,
    applied TEXT NOT NULL
);
""",
    ),
    (
        "host politeness shared by workers",
        # PostgreSQL's workers share per-host spacing and Retry-After through this table
        # (store.pg_gate); one SQLite process keeps them in memory: the twin stays empty.
        """
CREATE TABLE host_politeness (
    host TEXT PRIMARY KEY,
    next_start TEXT,
    retry_after_until TEXT
) WITHOUT ROWID;
""",
    ),
]


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply pending migrations in order, in the caller's transaction; returns their names."""
    applied: list[str] = []
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied TEXT NOT NULL)"
    )
    done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
    for version, (name, sql) in enumerate(MIGRATIONS, start=1):
        if version in done:
            continue
        for statement in _split_sql(sql):
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_migrations(version, name, applied) VALUES (?, ?, ?)",
            (version, name, ts(datetime.now(UTC))),
        )
        applied.append(name)
    return applied


def schema_version(conn: sqlite3.Connection) -> int:
    try:
        row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0] or 0)


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
