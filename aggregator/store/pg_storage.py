"""The PostgreSQL backend's data methods: feeds, entries and stories, articles, reads,
retention. Same contracts as the SQLite parts (protocol.Storage; tests/test_storage.py runs
on both), the same policy (stories.decide_story, pick_representative), PostgreSQL's SQL
and types: timestamptz in and out (UTC, to the second), NULL for an undated entry, jsonb
lists, bytea, trigram search.

Several processes write at once: band keys go to entry_bands in the entry's own transaction
(no write-behind buffer, which the other writers could not see), and every transaction that
looks up and assigns stories holds STORY_LOCK from its first lookup to its commit (one story
per story, never two, when two writers store near-duplicates at once). A poll's write
inserts its new entries before taking the lock, each in a provisional story of its own, so
that only the lookups and the story changes are serialised between writers.

Uses the connection of postgres.PostgresBase (``_use``/``_tx``) and never imports psycopg
itself (postgres.py is the one module that does)."""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from ..errors import StoreError
from ..models import (
    Candidate,
    Document,
    FeedConfig,
    FeedMetrics,
    Item,
    Outlet,
    PruneReport,
)
from .bands import BAND_FLUSH_ENTRIES, BandBuffer, pack_bands, unpack_bands
from .reads import _item
from .stories import (
    _LINK_LIMIT,
    NEW_STORY,
    _RowEntry,
    decide_story,
    link_joins,
    merge_joins,
    pick_representative,
)
from .values import (
    CONTAIN_MIN_SHARED,
    FEED_STATES,
    BacklogEntry,
    FeedState,
    Matcher,
    NewEntry,
    StoredEntry,
    _json,
    entry_uid,
    parse_ts,
    primary_language,
    ts,
)


def t(dt: datetime | None) -> datetime | None:
    """A time as stored: UTC, to the second (what the SQLite backend's text keeps)."""
    if dt is None:
        return None
    return dt.astimezone(UTC).replace(microsecond=0)


def out(dt: datetime | None) -> datetime | None:
    """A stored time as handed out: UTC (the server's zone object becomes datetime.UTC)."""
    return None if dt is None else dt.astimezone(UTC)


def lite(row: Any) -> dict[str, Any]:
    """A row in the SQLite backend's value conventions (times as sortable UTC text, JSON as
    text), for the backend-independent helpers that read them (reads._item,
    stories.pick_representative) and for what the protocol returns as rows."""
    return {k: ts(v) if isinstance(v, datetime) else
            _json(v) if isinstance(v, list | dict) else v for k, v in row.items()}


class PgRow:
    """A result row read by column name or by position, iterated as its values: what
    sqlite3.Row is to the SQLite backend (protocol.Row; ``dict(row)`` works)."""

    __slots__ = ("_index", "_values")

    def __init__(self, names: Sequence[str], values: Sequence[Any]) -> None:
        self._index = {n: i for i, n in enumerate(names)}
        self._values = tuple(values)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PgRow):
            return self._values == other._values and self.keys() == other.keys()
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def keys(self) -> list[str]:
        return list(self._index)

    def items(self) -> list[tuple[str, Any]]:
        return list(zip(self._index, self._values, strict=True))

    def get(self, key: str, default: Any = None) -> Any:
        i = self._index.get(key)
        return default if i is None else self._values[i]

    def __repr__(self) -> str:
        return f"PgRow({dict(self.items())!r})"


def row_factory(cursor: Any) -> Any:
    names = [d.name for d in cursor.description or ()]

    def make(values: Sequence[Any]) -> PgRow:
        return PgRow(names, values)

    return make


def _snippet(text: str, query: str, size: int = 64) -> str:
    """The text around the first match of ``query``, marked ``[...]``, cut with ``…``: what
    SQLite's FTS5 snippet() gives search (reads.search; its tokens are trigrams, about a
    character each). No match in the text (the title matched): its first ``size``."""
    import re

    m = re.search(re.escape(query), text, re.IGNORECASE)
    if m is None:
        return text[:size] + ("…" if len(text) > size else "")
    start = max(0, m.start() - max(0, size - len(m.group())) // 2)
    end = min(len(text), start + max(size, len(m.group())))
    return ("…" if start else "") + text[start:m.start()] + "[" + m.group() + "]" \
        + text[m.end():end] + ("…" if end < len(text) else "")


def _lite_row(row: Any) -> PgRow:
    converted = lite(row)
    return PgRow(list(converted), list(converted.values()))


_ITEM_COLUMNS = (
    "e.*, f.name AS feed_name, COALESCE(f.title, f.name) AS feed_title,"
    " COALESCE(f.effective_url, f.url) AS feed_url, f.link AS feed_link,"
    " f.language AS feed_language, f.tags AS feed_tags, f.updated AS feed_updated,"
    " s.updated AS story_updated, s.item_id AS story_item_id")


def _feed_state(r: Any) -> FeedState:
    return FeedState(
        id=r["id"], name=r["name"], url=r["url"], effective_url=r["effective_url"],
        etag=r["etag"], last_modified=r["last_modified"], body_hash=r["body_hash"],
        consecutive_errors=r["consecutive_errors"], next_poll=out(r["next_poll"]),
        interval=r["interval"], disabled_reason=r["disabled_reason"],
        active=bool(r["active"]),
    )


# --------------------------------------------------------------------------- band index


def pg_set_bands(c: Any, buffer: BandBuffer, entry_id: int, keys: Sequence[int],
                 contain: Sequence[int] = ()) -> None:
    """bands.set_bands in PostgreSQL's SQL."""
    c.execute("UPDATE entries SET bands = %s, contain_bands = %s WHERE id = %s",
              (pack_bands(keys), pack_bands(contain), entry_id))
    c.execute("DELETE FROM entry_bands WHERE entry_id = %s", (entry_id,))
    every = (*keys, *contain)
    if entry_id in buffer:
        buffer.unstage(entry_id)
        if every:
            buffer.stage(entry_id, every)
    elif every:
        c.execute("INSERT INTO entry_bands(band_key, entry_id)"
                  " SELECT k, %s FROM unnest(%s::bigint[]) AS k ON CONFLICT DO NOTHING",
                  (entry_id, list(every)))


# Held (pg_advisory_xact_lock) by every transaction that looks up a story's candidates and
# assigns, merges or re-links stories, from before its first lookup to its commit: two
# writers storing near-duplicates take turns, and the second one's lookup (READ COMMITTED:
# a statement sees what committed before it) finds the first one's entry. One lock for the
# store, not one per lookup key: a feed's entries have thousands of band keys, more than
# PostgreSQL's shared lock table holds (max_locks_per_transaction x connections) once a few
# writers do it at once. "stories" in ASCII.
STORY_LOCK = 0x73746F72_696573


# The tables a poll grows, and the entries from which their statistics matter. PostgreSQL
# plans a statement it runs often once (the foreign-key checks of every insert, psycopg's
# prepared statements) and keeps that plan until the table's statistics change. Planned
# while a table was near empty, a primary-key lookup became a sequential scan: with
# autovacuum off, or not yet round after a cold start, the foreign-key check of
# entries.story_id read the whole stories table for every entry stored (bench-scale, two
# workers, 5,000 feeds: 145,000 scans reading 5.6 billion rows, most of the round's CPU).
GROWING_TABLES = "entries, stories, entry_bands, entry_links"
ANALYZE_FROM = 1000
# Held while one writer ANALYZEs; the others skip it rather than queue behind it.
ANALYZE_LOCK = 0x616E616C_797A65  # "analyze"


def keep_statistics(c: Any, newest: int, analyze_at: int | None) -> int:
    """ANALYZE the tables polls grow once the newest entry id (standing for the store's
    size) reaches ``analyze_at``; ``None`` (this process's first call): at once when their
    statistics describe less than half the store (never analyzed, or long ago). Returns
    the next threshold: twice the size. ``c``: a transaction of its own, committed right
    after (the ANALYZE, and the try-lock that keeps other writers from queueing behind it)."""
    if analyze_at is None:
        stale = c.execute("SELECT reltuples FROM pg_class WHERE oid = 'entries'::regclass"
                          ).fetchone()[0] * 2 < newest
        analyze_at = ANALYZE_FROM if stale else max(ANALYZE_FROM, 2 * newest)
    if newest < analyze_at:
        return analyze_at
    if c.execute("SELECT pg_try_advisory_xact_lock(%s)", (ANALYZE_LOCK,)).fetchone()[0]:
        c.execute(f"ANALYZE {GROWING_TABLES}")
    return max(ANALYZE_FROM, 2 * newest)


def story_lock(c: Any) -> None:
    """Take STORY_LOCK for the transaction (see there); before any row lock on feeds, which
    every holder may take after it (one order: no deadlock)."""
    c.execute("SELECT pg_advisory_xact_lock(%s)", (STORY_LOCK,))


def pg_write_bands(c: Any, buffer: BandBuffer) -> int:
    """bands.write_bands in PostgreSQL's SQL: the keys an earlier writer left unindexed
    (after bands_indexed_upto; ``buffer`` stays empty on PostgreSQL), sorted, in one
    statement; returns the rows actually inserted."""
    row = c.execute(
        "SELECT value FROM store_state WHERE name = 'bands_indexed_upto'").fetchone()
    upto = int(row[0]) if row else 0
    top = int(c.execute("SELECT COALESCE(MAX(id), 0) FROM entries").fetchone()[0])
    pairs = list(buffer.pairs())
    for r in c.execute(
            "SELECT id, bands, contain_bands FROM entries WHERE id > %s"
            " AND (bands IS NOT NULL OR contain_bands IS NOT NULL)", (upto,)).fetchall():
        if r[0] not in buffer:
            pairs += [(k, r[0]) for k in (*unpack_bands(r[1]), *unpack_bands(r[2]))]
    pairs.sort()
    written = 0
    if pairs:
        # Counted by the statement, not by rowcount (unset in a pipeline until its sync).
        written = c.execute(
            "WITH x AS (INSERT INTO entry_bands(band_key, entry_id)"
            " SELECT * FROM unnest(%s::bigint[], %s::bigint[]) ON CONFLICT DO NOTHING"
            " RETURNING 1) SELECT COUNT(*) FROM x",
            ([k for k, _ in pairs], [i for _, i in pairs])).fetchone()[0]
    # GREATEST: several writers move the mark, never back.
    c.execute("INSERT INTO store_state(name, value) VALUES ('bands_indexed_upto', %s)"
              " ON CONFLICT (name) DO UPDATE SET"
              " value = GREATEST(store_state.value, excluded.value)", (max(upto, top),))
    return int(written)


# --------------------------------------------------------------------------- stories


def _text_reader(c: Any, entry_id: int) -> Callable[[], str | None]:
    """A containment candidate's text, read only when dedup asks for it."""
    def read() -> str | None:
        row = c.execute("SELECT text FROM entries WHERE id = %s", (entry_id,)).fetchone()
        return row["text"] if row else None
    return read


def _candidate(c: Any, r: Any, published: datetime, with_text: bool) -> Candidate:
    """A _SELECT_CANDIDATE row as a Candidate (``published`` when the row has none)."""
    return Candidate(
        entry_id=r["id"], story_id=r["story_id"], feed_name=r["feed_name"],
        url_norm=r["url_norm"], text_hash=r["text_hash"],
        signature=bytes(r["signature"]) if r["signature"] is not None else None,
        title=r["title"], published=out(r["published"]) or published,
        word_count=r["word_count"], canonical_norm=r["canonical_url"],
        load_text=_text_reader(c, r["id"]) if with_text else None)


_SELECT_CANDIDATE = (
    "SELECT e.id, e.story_id, f.name AS feed_name, e.url_norm, e.canonical_url,"
    " e.text_hash, e.signature, e.title, e.word_count,"
    " COALESCE(e.published, e.first_seen) AS published"
    " FROM entries e JOIN feeds f ON f.id = e.feed_id")


def find_candidates(
    c: Any, entry_id: int, url_norm: str | None, canonical_norm: str | None,
    text_hash: str | None, band_keys: Sequence[int], since: datetime,
    pending: Iterable[int] = (), limit: int = 200, contained: Sequence[int] = (),
) -> list[Candidate]:
    """stories.find_candidates in PostgreSQL's SQL: one statement, every lookup by index."""
    parts: list[str] = []
    args: list[Any] = []
    contained = sorted(contained)
    if contained:
        parts.append("SELECT unnest(%s::bigint[])")
        args.append(contained)
    for value in sorted(v for v in {url_norm, canonical_norm} if v):
        parts.append("(SELECT id FROM entries WHERE url_norm = %s UNION"
                     " SELECT id FROM entries WHERE canonical_url = %s LIMIT %s)")
        args += [value, value, limit]
    if text_hash:
        parts.append("(SELECT id FROM entries WHERE text_hash = %s LIMIT %s)")
        args += [text_hash, limit]
    if band_keys:
        # OFFSET 0 fences the band-key lookup: a generic plan (psycopg prepares a query run
        # five times) otherwise walks entry_bands in entry_id order for DISTINCT, filtering
        # every row: one pass over the whole index per stored entry.
        parts.append("(SELECT DISTINCT entry_id FROM (SELECT entry_id FROM entry_bands"
                     " WHERE band_key = ANY(%s::bigint[]) OFFSET 0) b LIMIT %s)")
        args += [array_text(band_keys), limit]
        waiting = sorted(pending)
        if waiting:
            parts.append("SELECT unnest(%s::bigint[])")
            args.append(waiting)
    if not parts:
        return []
    rows = c.execute(
        _SELECT_CANDIDATE
        # = ANY(ARRAY(...)): the few candidate ids first, then the primary key; `IN (...)`
        # let the planner hash-join a scan of every entry, once per stored entry.
        + f" WHERE e.id = ANY(ARRAY({' UNION '.join(parts)})) AND e.id != %s"
        " AND COALESCE(e.published, e.first_seen) >= %s"
        " ORDER BY 10, e.id",
        (*args, entry_id, t(since)),
        # Never prepared: a prepared statement may get a generic plan, blind to the
        # arrays of keys and ids; one such plan scanned for seconds per entry
        # (bench-scale). Planned with its values each time, as it has to be.
        prepare=False,
    ).fetchall()
    wanted = set(contained)
    return [_candidate(c, r, since, r["id"] in wanted) for r in rows]


@dataclass(frozen=True)
class _Fresh:
    """A new entry as record_success's first phase inserted it."""

    entry: NewEntry
    entry_id: int
    story_id: int  # its provisional story
    links: list[Any]  # its entry_links rows
    language: str | None  # its own, else its feed's


def _keyed(pairs: Iterable[tuple[int, Iterable[Any]]]) -> tuple[list[int], list[Any]]:
    idx: list[int] = []
    vals: list[Any] = []
    for i, values in pairs:
        for v in values:
            idx.append(i)
            vals.append(v)
    return idx, vals


def array_text(values: Iterable[int]) -> str:
    """A list of integers as a PostgreSQL array literal, for a ``%s::bigint[]`` parameter:
    psycopg adapts a Python list element by element in Python, which was a tenth of a
    worker's writing time with a poll's thousands of band keys (py-spy, bench-scale)."""
    return "{" + ",".join(map(str, values)) + "}"


def prefetch_candidates(c: Any, fresh: Sequence[_Fresh], now: datetime, window_days: int,
                        limit: int = 200) -> list[list[Candidate]]:
    """find_candidates and containment_ids for every entry of a poll in two statements
    (they were two per entry: the lookups of a cold poll cost more than its inserts): the
    candidate ids of each entry by URL, text hash, near-duplicate band keys and
    containment keys (each lookup limited per entry as there), then the candidates' rows.
    Each entry's candidates in find_candidates' order, within its window, itself left out."""
    near = _keyed((i, sorted({*f.entry.band_keys, *f.entry.probe_bands}))
                  for i, f in enumerate(fresh))
    contain = _keyed((i, sorted({*f.entry.contain_keys, *f.entry.probe_contain}))
                     for i, f in enumerate(fresh))
    urls = _keyed((i, [f.entry.url_norm] if f.entry.url_norm else [])
                  for i, f in enumerate(fresh))
    hashes = _keyed((i, [f.entry.text_hash] if f.entry.text_hash else [])
                    for i, f in enumerate(fresh))
    # OFFSET 0 fences each key lookup, as in find_candidates and containment_ids.
    rows = c.execute(
        "WITH k AS (SELECT i, array_agg(k) AS keys FROM unnest(%s::int[], %s::bigint[])"
        " AS t(i, k) GROUP BY i),"
        " ck AS (SELECT i, array_agg(k) AS keys FROM unnest(%s::int[], %s::bigint[])"
        " AS t(i, k) GROUP BY i)"
        " SELECT 0 AS kind, k.i, x.entry_id AS id, 0::bigint AS n FROM k CROSS JOIN LATERAL"
        " (SELECT DISTINCT entry_id FROM (SELECT entry_id FROM entry_bands"
        " WHERE band_key = ANY(k.keys) OFFSET 0) b LIMIT %s) x"
        " UNION ALL SELECT 0, u.i, x.id, 0 FROM unnest(%s::int[], %s::text[]) AS u(i, v)"
        " CROSS JOIN LATERAL (SELECT id FROM entries WHERE url_norm = u.v UNION"
        " SELECT id FROM entries WHERE canonical_url = u.v LIMIT %s) x"
        " UNION ALL SELECT 0, h.i, x.id, 0 FROM unnest(%s::int[], %s::text[]) AS h(i, v)"
        " CROSS JOIN LATERAL (SELECT id FROM entries WHERE text_hash = h.v LIMIT %s) x"
        " UNION ALL SELECT 1, ck.i, b.entry_id, COUNT(*) FROM ck CROSS JOIN LATERAL"
        " (SELECT entry_id FROM entry_bands WHERE band_key = ANY(ck.keys) OFFSET 0) b"
        " GROUP BY ck.i, b.entry_id HAVING COUNT(*) >= %s",
        (array_text(near[0]), array_text(near[1]), array_text(contain[0]),
         array_text(contain[1]), limit, array_text(urls[0]), urls[1], limit,
         array_text(hashes[0]), hashes[1], limit, CONTAIN_MIN_SHARED),
        prepare=False).fetchall()
    ids: list[set[int]] = [set() for _ in fresh]
    shared: list[list[tuple[int, int]]] = [[] for _ in fresh]
    for kind, i, entry_id, n in rows:
        if kind == 0:
            ids[i].add(int(entry_id))
        else:
            shared[i].append((-int(n), int(entry_id)))
    contained: list[set[int]] = []
    for i, found in enumerate(shared):
        found.sort()
        contained.append({x for _, x in found[:limit]})
        ids[i] |= contained[i]
    wanted = sorted(set().union(*ids)) if ids else []
    if not wanted:
        return [[] for _ in fresh]
    byid = {r["id"]: r for r in c.execute(
        _SELECT_CANDIDATE + " WHERE e.id = ANY(%s::bigint[])", (wanted,),
        prepare=False).fetchall()}

    result: list[list[Candidate]] = []
    for i, f in enumerate(fresh):
        since = t((f.entry.published or now) - timedelta(days=window_days))
        rows_i = sorted((byid[x] for x in ids[i] if x in byid and x != f.entry_id
                         and byid[x]["published"] >= since),
                        key=lambda r: (r["published"], r["id"]))
        result.append([_candidate(c, r, now, r["id"] in contained[i]) for r in rows_i])
    return result


def linked_urls(c: Any, urls: Sequence[str]) -> Callable[[], set[str]]:
    """Which of these URLs an entry_links row names (pg_join_linked_stories' second lookup
    is skipped for the others: the usual case). The statement is sent now, its answer read
    by the function returned: in a pipeline, it goes with the next statement read."""
    if not urls:
        return set
    cur = c.execute(
        "SELECT DISTINCT url_norm FROM entry_links WHERE url_norm = ANY(%s::text[])",
        (sorted(set(urls)),))
    return lambda: {r[0] for r in cur.fetchall()}


def containment_ids(c: Any, buffer: BandBuffer, keys: Sequence[int],
                    limit: int = 200) -> list[int]:
    """stories.containment_ids in PostgreSQL's SQL."""
    if not keys:
        return []
    # OFFSET 0 fences the key lookup (as in find_candidates): without it, on a table whose
    # statistics are missing or stale (autovacuum off, or a table growing fast), the
    # planner aggregates a (parallel) sequential scan of every band key: one pass over
    # the whole index per stored entry, the per-feed cost growing with the store.
    shared = {r[0]: int(r[1]) for r in c.execute(
        "SELECT entry_id, COUNT(*) FROM (SELECT entry_id FROM entry_bands"
        " WHERE band_key = ANY(%s::bigint[]) OFFSET 0) b"
        " GROUP BY entry_id HAVING COUNT(*) >= %s",
        (array_text(keys), CONTAIN_MIN_SHARED), prepare=False).fetchall()}  # find_candidates
    for entry_id, n in buffer.shared_counts(keys).items():
        if n >= CONTAIN_MIN_SHARED:
            shared[entry_id] = shared.get(entry_id, 0) + n
    found = sorted((-n, i) for i, n in shared.items())
    return [i for _, i in found[:limit]]


_ENTRY_COLUMNS = (
    "feed_id, key, guid, url, url_norm, title, author, feed_html, content_html, text,"
    " summary, word_count, language, categories, enclosures, image, published,"
    " published_raw, date_note, updated, first_seen, last_seen, content_hash,"
    " extract_status, text_hash, signature, bands, story_id, match_reason, match_score,"
    " contain_bands")
_ENTRY_VALUES = ("%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s::jsonb,%s::jsonb,%s,%s,%s,%s,"
                 "%s,%s,%s,%s,%s,%s,%s,%s,{story},%s,%s,%s")
# No ON CONFLICT: the entry's id is new and its keys are passed deduplicated, and the
# speculative insertion's extra probe of the primary key per row was an eighth of
# PostgreSQL's CPU in a cold round (perf, bench-scale).
_BANDS_OF_E = (" b AS (INSERT INTO entry_bands(band_key, entry_id)"
               " SELECT k, e.id FROM e, unnest(%s::bigint[]) AS k)")
# A new entry in a story of its own, in one statement: the entry's id drawn first so that
# the story is inserted with it as representative (create_story, the INSERT, its band keys
# and the representative's UPDATE were four round trips).
_INSERT_FIRST = (
    "WITH n AS (SELECT nextval(pg_get_serial_sequence('entries', 'id')) AS id),"
    " s AS (INSERT INTO stories(first_seen, updated, entry_count, outlet_count, item_id,"
    " representative_id) VALUES (%s, %s, 1, 1, %s, (SELECT id FROM n)) RETURNING id),"
    f" e AS (INSERT INTO entries(id, {_ENTRY_COLUMNS}) VALUES ((SELECT id FROM n),"
    f" {_ENTRY_VALUES.format(story='(SELECT id FROM s)')}) RETURNING id, story_id),"
    f"{_BANDS_OF_E} SELECT id, story_id FROM e")


def merge_story(c: Any, other: int, *, into: int, reason: str, score: float) -> None:
    c.execute("UPDATE entries SET match_reason = %s, match_score = %s"
              " WHERE story_id = %s AND match_reason = 'first'", (reason, score, other))
    c.execute("UPDATE entries SET story_id = %s WHERE story_id = %s", (into, other))
    c.execute("DELETE FROM stories WHERE id = %s", (other,))


def refresh_story(c: Any, story_id: int, now: datetime, *, touch: bool = True) -> None:
    """stories.refresh_story: recount, re-pick the representative (pick_representative),
    `updated` to the members' newest unless ``touch`` is False."""
    refresh_stories(c, [story_id], now, touch=touch)


def refresh_stories(c: Any, story_ids: Iterable[int], now: datetime, *,
                    touch: bool = True) -> None:
    """refresh_story for several stories: every member in one statement, the updates sent
    as one batch (a poll joining five stories paid ten round trips under STORY_LOCK). A
    story with no members left is not touched."""
    ids = sorted(set(story_ids))
    if not ids:
        return
    stories: dict[int, list[dict[str, Any]]] = {}
    for r in c.execute(
            "SELECT story_id, id, feed_id, COALESCE(published, first_seen) AS published,"
            " word_count, updated FROM entries WHERE story_id = ANY(%s::bigint[])"
            " ORDER BY story_id, 4, id", (ids,)).fetchall():
        stories.setdefault(r["story_id"], []).append(lite(r))
    params = []
    for story_id, members in stories.items():
        rep = pick_representative(members, now)
        params.append((rep["id"], touch, max(m["updated"] for m in members), len(members),
                       len({m["feed_id"] for m in members}), story_id))
    with c.cursor() as cur:
        cur.executemany(
            "UPDATE stories SET representative_id = %s,"
            " updated = CASE WHEN %s THEN %s::timestamptz ELSE updated END, entry_count = %s,"
            " outlet_count = %s WHERE id = %s", params)


def touch_story_of(c: Any, entry_id: int, now: datetime) -> None:
    row = c.execute("SELECT story_id FROM entries WHERE id = %s", (entry_id,)).fetchone()
    if row and row[0] is not None:
        refresh_story(c, row[0], now)


def pg_set_links(c: Any, entry_id: int, source: str,
                 links: Iterable[tuple[str, str | None, str]], *,
                 fresh: bool = False) -> list[PgRow]:
    """stories.set_links in PostgreSQL's SQL: replace the links an entry's ``source``
    (``feed`` or ``page``) names. ``fresh``: the entry was inserted in this transaction, so
    it has no links to delete (a round trip saved per new entry). Returns the rows written
    (url_norm, language, kind), as entry_links holds them."""
    if not fresh:
        c.execute("DELETE FROM entry_links WHERE entry_id = %s AND source = %s",
                  (entry_id, source))
    rows = [(url, primary_language(lang), kind) for url, lang, kind in links]
    firsts: dict[str, tuple[str, str | None, str]] = {}
    for r in rows:  # the first row of a URL wins, as ON CONFLICT DO NOTHING has it
        firsts.setdefault(r[0], r)
    rows = list(firsts.values())
    if rows:
        c.execute(
            "INSERT INTO entry_links(entry_id, source, url_norm, language, kind)"
            " SELECT %s, %s, u, l, k FROM unnest(%s::text[], %s::text[], %s::text[])"
            " AS x(u, l, k) ON CONFLICT DO NOTHING",
            (entry_id, source, [r[0] for r in rows], [r[1] for r in rows],
             [r[2] for r in rows]))
    return [PgRow(("url_norm", "language", "kind"), r) for r in rows]


_ENTRY_LANG = (
    "SELECT e.id, e.story_id, e.url_norm, e.canonical_url,"
    " COALESCE(e.language, f.language, e.page_language) AS language"
    " FROM entries e JOIN feeds f ON f.id = e.feed_id"
)


def pg_join_linked_stories(c: Any, entry_id: int, now: datetime, *,
                           me: Any = None, links: Sequence[Any] | None = None,
                           linked: bool = True, moved: dict[int, int] | None = None) -> int:
    """stories.join_linked_stories in PostgreSQL's SQL, with its policy (link_joins).
    ``me`` (the _ENTRY_LANG row) and ``links`` (its entry_links rows): what the caller
    just wrote, given to save two round trips per new entry; read here otherwise.
    ``linked`` False: the caller knows no other entry's link names this one's URL (under
    STORY_LOCK: the links of every writer before it have committed; a writer after it
    looks this entry up itself), so that lookup is skipped. ``moved``: records each
    story merged away (gone: kept)."""
    if me is None:
        me = c.execute(_ENTRY_LANG + " WHERE e.id = %s", (entry_id,)).fetchone()
    if me is None or me["story_id"] is None:
        return 0
    if links is None:
        links = c.execute("SELECT url_norm, language, kind FROM entry_links"
                          " WHERE entry_id = %s", (entry_id,)).fetchall()
    joins = link_joins(
        me,
        links,
        lambda url: c.execute(
            _ENTRY_LANG + " WHERE e.id IN (SELECT id FROM entries WHERE url_norm = %s"
            " UNION SELECT id FROM entries WHERE canonical_url = %s LIMIT %s)"
            " AND e.id != %s", (url, url, _LINK_LIMIT, entry_id)).fetchall(),
        lambda url: [] if not linked else c.execute(
            "SELECT l.language AS declared, l.kind, x.story_id, x.url_norm, x.language"
            " FROM (SELECT entry_id, language, kind FROM entry_links WHERE url_norm = %s"
            " AND entry_id != %s LIMIT %s) l JOIN (" + _ENTRY_LANG + ") x"
            " ON x.id = l.entry_id", (url, entry_id, _LINK_LIMIT)).fetchall())
    return merge_joins(
        int(me["story_id"]), joins,
        exists=lambda s: c.execute("SELECT 1 FROM stories WHERE id = %s", (s,)).fetchone()
        is not None,
        merge=lambda gone, keep, reason: _merge_noted(c, gone, keep, reason, moved),
        refresh=lambda s: refresh_story(c, s, now))


def _merge_noted(c: Any, gone: int, keep: int, reason: str,
                 moved: dict[int, int] | None) -> None:
    merge_story(c, gone, into=keep, reason=reason, score=1.0)
    if moved is not None:
        moved[gone] = keep


def _enclosures(encs: Iterable[Any]) -> str:
    return _json([{"url": e.url, "type": e.type, "length": e.length} for e in encs])


class PgDataMixin:
    """The data methods; the connection, transactions and upkeep are PostgresBase's."""

    bands: BandBuffer
    readonly: bool
    path: str
    _bands_ready: bool
    _analyze_at: int | None

    if TYPE_CHECKING:  # PostgresBase's
        def _use(self) -> AbstractContextManager[Any]: ...

        def _tx(self, rollback: bool = False) -> AbstractContextManager[Any]: ...

        write_hook: Callable[[Any], None] | None

    # ----------------------------------------------------------------------- bands

    def _ensure_bands(self, c: Any) -> None:
        if not self._bands_ready:
            pg_write_bands(c, self.bands)
            self._bands_ready = True

    @property
    def pending_bands(self) -> int:
        return len(self.bands)

    def flush_bands(self) -> int:
        """Band keys are written in each entry's own transaction on PostgreSQL (several
        writers: a key in one process's memory would be invisible to the others), so
        nothing waits here; this indexes what an older writer left unindexed (entries.bands
        after bands_indexed_upto) and moves the mark. Returns the rows written."""
        with self._tx() as c:
            written = pg_write_bands(c, self.bands)
        self._bands_ready = True
        self.bands.clear()
        return written

    def _waiting(self, c: Any, band_keys: Sequence[int]) -> set[int]:
        if not band_keys:
            return set()
        self._ensure_bands(c)
        return self.bands.ids_for(band_keys)

    def _contained(self, c: Any, contain_keys: Sequence[int]) -> list[int]:
        if not contain_keys:
            return []
        self._ensure_bands(c)
        return containment_ids(c, self.bands, contain_keys)

    # ----------------------------------------------------------------------- feeds

    def sync_feeds(self, feeds: Sequence[FeedConfig], now: datetime) -> None:
        with self._tx() as c:
            # Processes starting at once (workers, `run`, `update`) sync one after the
            # other: the second reads the feeds the first inserted, never inserts them again.
            c.execute("SELECT pg_advisory_xact_lock(hashtext('aggregator.sync_feeds'))")
            existing = {r["name"]: r for r in c.execute(
                "SELECT id, name, url, active FROM feeds").fetchall()}
            names = set()
            for f in feeds:
                names.add(f.name)
                row = existing.get(f.name)
                tags = _json(list(f.tags))
                if row is None:
                    c.execute(
                        "INSERT INTO feeds(name, url, title, language, tags, next_poll, created)"
                        " VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s)"
                        # Workers starting at once sync the same feeds: the first one wins.
                        " ON CONFLICT (name) DO NOTHING",
                        (f.name, f.url, f.title, f.language, tags, t(now), t(now)))
                    continue
                if row["url"] != f.url:
                    c.execute(
                        "UPDATE feeds SET url = %s, effective_url = NULL, etag = NULL,"
                        " last_modified = NULL, body_hash = NULL, disabled_reason = NULL,"
                        " consecutive_errors = 0, next_poll = %s WHERE id = %s",
                        (f.url, t(now), row["id"]))
                c.execute(
                    "UPDATE feeds SET active = TRUE, language = %s, tags = %s::jsonb,"
                    " title = COALESCE(%s, title) WHERE id = %s",
                    (f.language, tags, f.title, row["id"]))
            gone = [r["id"] for name, r in existing.items() if name not in names and r["active"]]
            if gone:
                c.execute("UPDATE feeds SET active = FALSE WHERE id = ANY(%s::bigint[])",
                          (gone,))

    def feed_states(self, names: Iterable[str] | None = None) -> list[FeedState]:
        wanted = set(names) if names is not None else None
        with self._use() as c:
            # By name in SQL: a worker's job reads its one feed among thousands.
            rows = c.execute("SELECT * FROM feeds WHERE active AND (%s::text[] IS NULL"
                             " OR name = ANY(%s::text[])) ORDER BY name",
                             (None if wanted is None else sorted(wanted),) * 2).fetchall()
        return [_feed_state(r) for r in rows if wanted is None or r["name"] in wanted]

    def due_feeds(self, now: datetime) -> list[FeedState]:
        with self._use() as c:
            rows = c.execute(
                "SELECT * FROM feeds WHERE active AND disabled_reason IS NULL"
                " AND (next_poll IS NULL OR next_poll <= %s)"
                " ORDER BY next_poll NULLS FIRST, name", (t(now),)).fetchall()
        return [_feed_state(r) for r in rows]

    def next_due(self) -> datetime | None:
        with self._use() as c:
            row = c.execute("SELECT MIN(next_poll) FROM feeds"
                            " WHERE active AND disabled_reason IS NULL").fetchone()
        return out(row[0]) if row else None

    def record_failure(
        self, feed_id: int, *, now: datetime, kind: str, message: str, status: int | None,
        next_poll: datetime, disable: bool = False, retry_after_until: datetime | None = None,
        permanent_url: str | None = None,
    ) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE feeds SET last_attempt = %s, last_status = %s,"
                " consecutive_errors = consecutive_errors + 1, last_error = %s,"
                " last_error_kind = %s, next_poll = %s, retry_after_until = %s,"
                " effective_url = COALESCE(%s, effective_url),"
                " disabled_reason = CASE WHEN %s THEN %s ELSE disabled_reason END"
                " WHERE id = %s",
                (t(now), status, message, kind, t(next_poll), t(retry_after_until),
                 permanent_url, disable, message, feed_id))

    # ----------------------------------------------------------------------- entries

    def record_success(
        self, feed_id: int, *, now: datetime, status: int, next_poll: datetime,
        interval: float, etag: str | None, last_modified: str | None, body_hash: str | None,
        permanent_url: str | None, title: str | None = None, link: str | None = None,
        language: str | None = None, format: str | None = None,
        warnings: Sequence[str] | None = None, entries: Sequence[NewEntry] = (),
        matcher: Matcher | None = None, window_days: int = 7, updated: datetime | None = None,
    ) -> list[StoredEntry]:
        with self._tx() as c:
            with c.pipeline():
                # In a pipeline, the whole write but the hook: a statement whose result is not
                # read (the links, the feed's counters, STORY_LOCK, the story updates) goes with
                # the next one that is, so a poll costs a few round trips, not one per
                # statement; in a worker whose other threads are busy, each is also a wait for
                # the GIL, and under STORY_LOCK every other writer waits with it.
                # The feed's row is locked for the transaction: two writers storing one feed's
                # poll at once take turns (one poll's upserts see the other's rows). NO KEY
                # UPDATE: prune's pruned_keys rows (a key share on the feed) do not wait on it.
                # Its pruned keys and stored entries are read in the same round trip.
                feed_row = c.execute("SELECT last_success, name, language FROM feeds"
                                     " WHERE id = %s FOR NO KEY UPDATE", (feed_id,))
                pruned = c.execute("SELECT key FROM pruned_keys WHERE feed_id = %s",
                                   (feed_id,)) if entries else None
                stored_rows = c.execute(
                    "SELECT id, key, content_hash, updated, author FROM entries"
                    " WHERE feed_id = %s AND key = ANY(%s::text[])",
                    (feed_id, [e.key for e in entries])) if entries else None
                row = feed_row.fetchone()
                first_poll = row is not None and row[0] is None
                # The feed's name (new stories' item ids) and language (its new entries' own,
                # when they name none) as the upserts below read them: once, not per entry.
                feed = (row[1], row[2]) if row is not None else (
                    c.execute("SELECT name, language FROM feeds WHERE id = %s",
                              (feed_id,)).fetchone() or (None, None))
                existing: dict[str, Any] = {}
                if pruned is not None and stored_rows is not None:
                    gone = self._pruned_keys(c, feed_id, {e.key for e in entries},
                                             {r[0] for r in pruned.fetchall()})
                    if gone:
                        entries = [e for e in entries if e.key not in gone]
                    existing = {r["key"]: r for r in stored_rows.fetchall() if r["key"] not in gone}
                order = list(reversed(entries))  # oldest first, as the feed lists newest first
                # Phase 1, outside STORY_LOCK: each new entry inserted in a provisional story of
                # its own, with its band keys and links (the bulk of a poll's writing: rows and
                # index upkeep), invisible to the other writers until commit.
                fresh = self._insert_new(c, feed_id, [e for e in order if e.key not in existing],
                                         now, first_poll, feed)
                results: dict[str, StoredEntry] = {}
                # Stories this transaction merged away (gone: kept), for the new entries'
                # decisions: a stored entry's new link may merge a new entry's provisional story.
                moved: dict[int, int] = {}
                # The feed's own row before STORY_LOCK (it is ours since the first statement):
                # nothing in it depends on the stories, and the lock is held for less.
                c.execute(
                    "UPDATE feeds SET last_attempt = %s, last_success = %s, last_status = %s,"
                    " consecutive_errors = 0, last_error = NULL, last_error_kind = NULL,"
                    " next_poll = %s, interval = %s, retry_after_until = NULL,"
                    " etag = COALESCE(%s, etag), last_modified = COALESCE(%s, last_modified),"
                    " body_hash = COALESCE(%s, body_hash),"
                    " effective_url = COALESCE(%s, effective_url),"
                    " title = COALESCE(title, %s), link = COALESCE(%s, link),"
                    " language = COALESCE(language, %s), format = COALESCE(%s, format),"
                    " warnings = COALESCE(%s::jsonb, warnings), updated = COALESCE(%s, updated)"
                    " WHERE id = %s",
                    (t(now), t(now), status, t(next_poll), interval, etag, last_modified,
                     body_hash, permanent_url, title, link, language, format,
                     None if warnings is None else _json(list(warnings)), t(updated), feed_id))
                if entries:
                    # Phase 2, under STORY_LOCK to the commit: every lookup and every story
                    # change. The writers before us have committed (their entries are seen);
                    # those after us wait here and see ours. Taken after the feed's row lock:
                    # every holder that locks a feeds row locks it first (one order, no deadlock).
                    story_lock(c)
                    for e in order:
                        if e.key in existing:
                            results[e.key] = self._update_entry(c, feed_id, e, now,
                                                                existing[e.key], moved)
                    if fresh:
                        results.update(self._assign_stories(c, feed_id, fresh, now, matcher,
                                                            window_days, moved))
                stored = [results[e.key] for e in entries]
            if self.write_hook is not None and any(
                    x.is_new or x.changed or x.stories_merged for x in stored):
                self.write_hook(c)  # outside the pipeline: its savepoint may be refused
        newest = max((x.id for x in stored if x.is_new), default=0)
        if newest and (self._analyze_at is None or newest >= self._analyze_at):
            try:
                with self._tx() as c:
                    # ANALYZE waits for a VACUUM of the same table (autovacuum gives way
                    # after deadlock_timeout, an anti-wraparound one does not): not long.
                    c.execute("SET LOCAL lock_timeout = '2s'")
                    self._analyze_at = keep_statistics(c, newest, self._analyze_at)
            except Exception:  # noqa: BLE001 - the poll is committed; statistics can wait
                self._analyze_at = newest + ANALYZE_FROM  # tried again a little later
        if len(self.bands) >= BAND_FLUSH_ENTRIES:
            self.flush_bands()
        return stored

    @staticmethod
    def _pruned_keys(c: Any, feed_id: int, listed: set[str], pruned: set[str]) -> set[str]:
        """Of the feed's ``pruned`` keys, those it still lists (not stored again); the
        others are forgotten."""
        if not pruned:
            return pruned
        stale = sorted(pruned - listed)
        if stale:
            c.execute("DELETE FROM pruned_keys WHERE feed_id = %s AND key = ANY(%s::text[])",
                      (feed_id, stale))
        return pruned & listed

    def _update_entry(self, c: Any, feed_id: int, e: NewEntry, now: datetime,
                      row: Mapping[str, Any], moved: dict[int, int] | None = None
                      ) -> StoredEntry:
        """A listed entry already stored: unchanged (its links re-read), or edited."""
        if row["content_hash"] == e.content_hash:
            if e.author is not None and row["author"] != e.author:
                c.execute("UPDATE entries SET author = %s WHERE id = %s",
                          (e.author, row["id"]))
            merged = self._relink(c, row["id"], e, now, moved)
            return StoredEntry(row["id"], feed_id, e.key, is_new=False, changed=False,
                               stories_merged=merged)
        stored_updated = out(row["updated"]) or now
        edited = max(stored_updated, e.updated) if e.updated else max(stored_updated, now)
        c.execute(
            "UPDATE entries SET guid = %s, url = %s, url_norm = %s, title = %s,"
            " author = %s, feed_html = %s, content_html = %s, text = %s, summary = %s,"
            " word_count = %s, language = %s, categories = %s::jsonb,"
            " enclosures = %s::jsonb, image = %s,"
            " published = COALESCE(%s::timestamptz, published),"
            " published_raw = %s, date_note = %s, updated = %s, last_seen = %s,"
            " content_hash = %s, extract_status = %s, extract_error = NULL,"
            " extract_attempts = 0, extract_retry_at = NULL,"
            " text_hash = %s, signature = %s WHERE id = %s",
            (e.guid, e.url, e.url_norm, e.title, e.author,
             None if e.feed_html == e.content_html else e.feed_html, e.content_html,
             e.text, e.summary, e.word_count, e.language, _json(list(e.categories)),
             _enclosures(e.enclosures), e.image, t(e.published), e.published_raw,
             e.date_note, t(edited), t(now), e.content_hash, e.extract_status,
             e.text_hash, e.signature, row["id"]))
        pg_set_bands(c, self.bands, row["id"], e.band_keys, e.contain_keys)
        pg_set_links(c, row["id"], "feed", e.links)
        touch_story_of(c, row["id"], now)
        merged = pg_join_linked_stories(c, row["id"], now, moved=moved)
        return StoredEntry(row["id"], feed_id, e.key, is_new=False, changed=True,
                           stories_merged=merged)

    def _insert_new(self, c: Any, feed_id: int, new: Sequence[NewEntry], now: datetime,
                    first_poll: bool, feed: tuple[str | None, str | None]) -> list[_Fresh]:
        """Phase 1 of record_success: each new entry in a provisional story of its own (the
        entry its representative) with its band keys, one statement per entry sent in one
        pipeline (one round trip for the poll), then every entry's links in one statement."""
        if not new:
            return []
        params = []
        for e in new:
            published = t(e.published) if e.published is not None else (
                None if first_poll else t(now))
            dates = [d for d in (e.published, e.updated) if d is not None]
            own = max(dates) if dates else now
            params.append((
                t(now), t(own), entry_uid(feed[0] or "", e.key),
                feed_id, e.key, e.guid, e.url, e.url_norm, e.title, e.author,
                None if e.feed_html == e.content_html else e.feed_html,
                e.content_html, e.text, e.summary, e.word_count, e.language,
                _json(list(e.categories)), _enclosures(e.enclosures), e.image, published,
                e.published_raw, e.date_note, t(own), t(now), t(now), e.content_hash,
                e.extract_status, e.text_hash, e.signature, pack_bands(e.band_keys),
                NEW_STORY.reason, NEW_STORY.score, pack_bands(e.contain_keys),
                array_text(sorted({*e.band_keys, *e.contain_keys}))))
        got = []
        with c.cursor() as cur:
            cur.executemany(_INSERT_FIRST, params, returning=True)
            while True:
                got.append(cur.fetchone())
                if not cur.nextset():
                    break
        fresh = []
        rows: list[tuple[int, str, str | None, str]] = []
        for e, r in zip(new, got, strict=True):
            entry_id = int(r[0])
            firsts: dict[str, tuple[str, str | None, str]] = {}
            for url, lang, kind in e.links:  # the first row of a URL wins, as in pg_set_links
                firsts.setdefault(url, (url, primary_language(lang), kind))
            links = [PgRow(("url_norm", "language", "kind"), x) for x in firsts.values()]
            rows += [(entry_id, *x) for x in firsts.values()]
            fresh.append(_Fresh(e, entry_id, int(r[1]), links,
                                e.language if e.language is not None else feed[1]))
        if rows:
            c.execute(
                "INSERT INTO entry_links(entry_id, source, url_norm, language, kind)"
                " SELECT i, 'feed', u, l, k FROM unnest(%s::bigint[], %s::text[], %s::text[],"
                " %s::text[]) AS x(i, u, l, k)",  # new entries, one row per URL: no conflict
                ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                 [r[3] for r in rows]))
        return fresh

    def _assign_stories(self, c: Any, feed_id: int, fresh: Sequence[_Fresh], now: datetime,
                        matcher: Matcher | None, window_days: int,
                        moved: dict[int, int]) -> dict[str, StoredEntry]:
        """Phase 2 of record_success, under STORY_LOCK: each new entry, in the feed's order,
        keeps its provisional story or joins (and bridges) the story its candidates name,
        then joins the stories its links name. The candidates of every new entry come from
        two statements (prefetch_candidates); an entry of this poll is a candidate only of
        the entries after it, as when each was looked up right before its insert."""
        linked_of = linked_urls(c, [f.entry.url_norm for f in fresh if f.entry.url_norm])
        if matcher is not None:
            self._ensure_bands(c)  # an older writer's unindexed keys, once per process
            found = prefetch_candidates(c, fresh, now, window_days)
        else:
            found = [[] for _ in fresh]
        linked = linked_of()
        # Stories as this transaction has changed them: a new entry moved (story_of) or a
        # story merged away (moved), so that a later entry's candidates name the live one.
        story_of: dict[int, int] = {}

        def live(story: int | None) -> int | None:
            while story is not None and story in moved:
                story = moved[story]
            return story

        out: dict[str, StoredEntry] = {}
        # Provisional stories their entry left, and stories an entry joined: deleted when
        # empty and refreshed once each, after the loop (one round trip each, not per
        # entry). Nothing in the loop reads a story's counts or representative.
        left: list[int] = []
        touched: list[int] = []
        order = {f.entry_id: n for n, f in enumerate(fresh)}  # this poll's, in feed order
        for n, f in enumerate(fresh):
            e = f.entry
            candidates = [
                replace(x, story_id=live(story_of.get(x.entry_id, x.story_id)))
                for x in found[n] if order.get(x.entry_id, -1) < n]
            decision = decide_story(e, candidates, matcher)
            mine = live(story_of.get(f.entry_id, f.story_id))
            assert mine is not None
            story_id = mine
            if decision.story_id is not None:
                story_id = decision.story_id
                for other, why, how in decision.bridges:
                    if other != story_id:
                        merge_story(c, other, into=story_id, reason=why, score=how)
                        moved[other] = story_id
                if story_id != mine:
                    c.execute("UPDATE entries SET story_id = %s, match_reason = %s,"
                              " match_score = %s WHERE id = %s",
                              (story_id, decision.reason, decision.score, f.entry_id))
                    story_of[f.entry_id] = story_id
                    left.append(mine)
                else:
                    c.execute("UPDATE entries SET match_reason = %s, match_score = %s"
                              " WHERE id = %s", (decision.reason, decision.score, f.entry_id))
                touched.append(story_id)
            me = PgRow(("id", "story_id", "url_norm", "canonical_url", "language"),
                       (f.entry_id, story_id, e.url_norm, None, f.language))
            merged = pg_join_linked_stories(c, f.entry_id, now, me=me, links=f.links,
                                            linked=e.url_norm in linked, moved=moved)
            out[e.key] = StoredEntry(f.entry_id, feed_id, e.key, is_new=True, changed=True,
                                     story_created=decision.reason == NEW_STORY.reason,
                                     stories_merged=len(decision.bridges) + merged)
        if left:
            # Not read back (in the pipeline, it goes with refresh_stories' read): a story
            # deleted here has no members, and refresh_stories leaves such a story alone.
            c.execute("DELETE FROM stories s WHERE id = ANY(%s::bigint[]) AND NOT EXISTS"
                      " (SELECT 1 FROM entries WHERE story_id = s.id)", (sorted(set(left)),))
        refresh_stories(c, {s for s in map(live, touched + left) if s is not None}, now)
        return out

    @staticmethod
    def _relink(c: Any, entry_id: int, e: NewEntry, now: datetime,
                moved: dict[int, int] | None = None) -> int:
        """entries._relink: an unchanged entry whose feed now names other versions."""
        stored = {r[0] for r in c.execute(
            "SELECT url_norm FROM entry_links WHERE entry_id = %s AND source = 'feed'",
            (entry_id,))} if e.links else set()
        if stored == {url for url, _, _ in e.links}:
            return 0
        pg_set_links(c, entry_id, "feed", e.links)
        return pg_join_linked_stories(c, entry_id, now, moved=moved)

    def entry_feed_html(self, entry_id: int) -> tuple[str, str]:
        with self._use() as c:
            row = c.execute("SELECT COALESCE(feed_html, content_html), title FROM entries"
                            " WHERE id = %s", (entry_id,)).fetchone()
        return (row[0] or "", row[1]) if row else ("", "")

    def count_entries(self) -> int:
        with self._use() as c:
            return int(c.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    # ----------------------------------------------------------------------- stories

    def rematch_entry(self, entry_id: int, matcher: Matcher, now: datetime,
                      window_days: int, canonical_norm: str | None = None) -> bool:
        with self._tx() as c:
            story_lock(c)
            row = c.execute(
                "SELECT e.*, (SELECT COUNT(*) FROM entries x WHERE x.story_id = e.story_id)"
                " AS members FROM entries e WHERE e.id = %s", (entry_id,)).fetchone()
            if row is None or row["members"] > 1:
                return False
            keys = unpack_bands(row["bands"]) if (
                row["bands"] is not None or row["contain_bands"] is not None) else [
                r[0] for r in c.execute(
                    "SELECT band_key FROM entry_bands WHERE entry_id = %s", (entry_id,))]
            published = out(row["published"]) or out(row["first_seen"]) or now
            candidates = find_candidates(
                c, entry_id, row["url_norm"], canonical_norm, row["text_hash"], keys,
                published - timedelta(days=window_days), self._waiting(c, keys),
                contained=self._contained(c, unpack_bands(row["contain_bands"])))
            candidates = [x for x in candidates if x.story_id != row["story_id"]]
            if not candidates:
                return False
            entry = _RowEntry(row)
            if entry.signature is not None:
                entry.signature = bytes(entry.signature)
            match = matcher(entry, candidates)
            if match is None or match.story_id is None:
                return False
            old = row["story_id"]
            c.execute("UPDATE entries SET story_id = %s, match_reason = %s, match_score = %s"
                      " WHERE id = %s", (match.story_id, match.reason, match.score, entry_id))
            if old is not None:
                c.execute("DELETE FROM stories WHERE id = %s", (old,))
            refresh_story(c, match.story_id, now)
        return old is not None

    def join_links(self, entry_id: int, now: datetime) -> int:
        with self._tx() as c:
            story_lock(c)
            return pg_join_linked_stories(c, entry_id, now)

    def story_members(self, story_id: int) -> list[PgRow]:
        """The rows of the story_members view for one story, earliest first (undated
        ones first, as SQLite sorts their '' before any date)."""
        with self._use() as c:
            rows = c.execute(
                "SELECT * FROM story_members WHERE story_id = %s"
                " ORDER BY published NULLS FIRST, entry_id", (story_id,)).fetchall()
        return [_lite_row(r) for r in rows]

    def story_member_ids(self, story_ids: Iterable[int]) -> set[int]:
        ids = sorted(set(story_ids))
        if not ids:
            return set()
        with self._use() as c:
            return {r[0] for r in c.execute(
                "SELECT id FROM entries WHERE story_id = ANY(%s::bigint[])", (ids,))}

    def story(self, story_id: int) -> tuple[PgRow | None, list[PgRow]]:
        with self._use() as c:
            s = c.execute("SELECT * FROM stories WHERE id = %s", (story_id,)).fetchone()
            members = c.execute(
                "SELECT e.id, f.name AS feed_name, e.title, e.url, e.published, e.word_count,"
                " e.match_reason, e.match_score, m.language FROM entries e"
                " JOIN feeds f ON f.id = e.feed_id JOIN story_members m ON m.entry_id = e.id"
                " WHERE e.story_id = %s ORDER BY e.published NULLS FIRST, e.id",
                (story_id,)).fetchall()
        return (_lite_row(s) if s else None), [_lite_row(m) for m in members]

    def output_ids(self, legacy: Mapping[str, str], now: datetime) -> dict[str, str]:
        # A PostgreSQL store never published under the old self-URL ids: every output
        # gets a urn:uuid at its first publish.
        with self._tx() as c:
            for name in legacy:
                c.execute("INSERT INTO output_ids(output, feed_id, first_published)"
                          " VALUES (%s, %s, %s) ON CONFLICT (output) DO NOTHING",
                          (name, f"urn:uuid:{uuid.uuid4()}", t(now)))
            ids = {r[0]: r[1] for r in c.execute(
                "SELECT output, feed_id FROM output_ids WHERE output = ANY(%s::text[])",
                (list(legacy),))}
        return {name: ids[name] for name in legacy}

    # ----------------------------------------------------------------------- documents

    def write_documents(self, documents: Sequence[Document],
                        remove: Collection[str] = ()) -> None:
        with self._tx() as c:
            for d in documents:
                if d.body is None:
                    raise ValueError(f"document {d.name!r} has no body")
                c.execute(
                    "INSERT INTO documents(name, body, etag, content_type, published, size)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET"
                    " body = excluded.body, etag = excluded.etag,"
                    " content_type = excluded.content_type, published = excluded.published,"
                    " size = excluded.size",
                    (d.name, d.body, d.etag, d.content_type, t(d.published), len(d.body)))
            gone = sorted(set(remove) - {d.name for d in documents})
            if gone:
                c.execute("DELETE FROM documents WHERE name = ANY(%s::text[])", (gone,))

    def document(self, name: str) -> Document | None:
        with self._use() as c:
            r = c.execute(
                "SELECT name, body, etag, content_type, published, size FROM documents"
                " WHERE name = %s", (name,)).fetchone()
        if r is None:
            return None
        return Document(r[0], r[2], r[3], cast(datetime, out(r[4])), r[5], bytes(r[1]))

    def document_index(self) -> list[Document]:
        with self._use() as c:
            rows = c.execute("SELECT name, etag, content_type, published, size"
                             " FROM documents").fetchall()
        # Sorted here: the same order as SQLite's whatever the database's collation.
        return sorted((Document(r[0], r[1], r[2], cast(datetime, out(r[3])), r[4])
                       for r in rows), key=lambda d: d.name)

    def remove_documents(self, names: Collection[str]) -> int:
        wanted = sorted(set(names))
        if not wanted:
            return 0
        with self._tx() as c:
            return int(c.execute("DELETE FROM documents WHERE name = ANY(%s::text[])",
                                 (wanted,)).rowcount)

    # ----------------------------------------------------------------------- articles

    def backlog(self, limit: int, now: datetime | None = None,
                feed: str | None = None) -> list[BacklogEntry]:
        with self._use() as c:
            rows = c.execute(
                "SELECT e.id, f.name AS feed_name, e.url,"
                " COALESCE(e.feed_html, e.content_html) AS feed_html, e.word_count, e.title,"
                " e.story_id, e.extract_attempts, e.first_seen"
                " FROM entries e JOIN feeds f ON f.id = e.feed_id"
                " WHERE e.extract_status = 'pending' AND e.url IS NOT NULL"
                " AND (e.extract_retry_at IS NULL OR e.extract_retry_at <= %s)"
                " AND (%s::text IS NULL OR f.name = %s)"
                " ORDER BY e.first_seen DESC, e.id DESC LIMIT %s",
                (t(now or datetime.now(UTC)), feed, feed, limit)).fetchall()
        return [BacklogEntry(r["id"], r["feed_name"], r["url"], r["feed_html"] or "",
                             r["word_count"], r["title"], r["story_id"],
                             r["extract_attempts"], out(r["first_seen"])) for r in rows]

    def record_article(
        self, entry_id: int, *, now: datetime, status: str, method: str | None,
        error: str | None, content_html: str | None = None, text: str | None = None,
        summary: str | None = None, word_count: int | None = None,
        language: str | None = None, image: str | None = None, author: str | None = None,
        canonical_url: str | None = None, text_hash: str | None = None,
        signature: bytes | None = None, band_keys: Sequence[int] | None = None,
        contain_keys: Sequence[int] = (),
        page: tuple[str, str | None, str | None, bytes] | None = None,
        retry_at: datetime | None = None, attempt: bool = True,
        shown_before: datetime | None = None,
        links: Sequence[tuple[str, str | None, str]] | None = None,
        page_language: str | None = None,
    ) -> None:
        if status == "pending" and retry_at is None:
            raise StoreError("record_article: a pending outcome needs its retry time")
        with self._tx() as c:
            # The feed's counters first: a feeds row is locked before STORY_LOCK by every
            # holder of both (record_success locks its feed, then waits for STORY_LOCK).
            if not attempt:
                pass
            elif status in ("failed", "pending"):
                c.execute(
                    "UPDATE feeds SET article_errors = article_errors + 1,"
                    " last_article_error = %s, last_article_error_at = %s"
                    " WHERE id = (SELECT feed_id FROM entries WHERE id = %s)",
                    (error, t(now), entry_id))
            else:
                c.execute("UPDATE feeds SET article_errors = 0"
                          " WHERE id = (SELECT feed_id FROM entries WHERE id = %s)"
                          " AND article_errors != 0", (entry_id,))
            if content_html is not None or links is not None:
                story_lock(c)  # new band keys or links: what others' lookups read
            if content_html is not None:
                c.execute("UPDATE entries SET feed_html = COALESCE(feed_html, content_html)"
                          " WHERE id = %s", (entry_id,))
                c.execute(
                    "UPDATE entries SET content_html = %s, text = %s, summary = %s,"
                    " word_count = %s, language = COALESCE(language, %s),"
                    " image = COALESCE(image, %s), author = COALESCE(author, %s),"
                    " canonical_url = COALESCE(%s, canonical_url), text_hash = %s,"
                    " signature = %s, updated = CASE WHEN content_html IS DISTINCT FROM %s"
                    " AND (%s::timestamptz IS NULL OR first_seen < %s)"
                    " THEN GREATEST(updated, %s) ELSE updated END WHERE id = %s",
                    (content_html, text, summary, word_count, language, image, author,
                     canonical_url, text_hash, signature, content_html, t(shown_before),
                     t(shown_before), t(now), entry_id))
                if band_keys is not None:
                    pg_set_bands(c, self.bands, entry_id, band_keys, contain_keys)
            elif canonical_url:
                c.execute("UPDATE entries SET canonical_url = COALESCE(%s, canonical_url)"
                          " WHERE id = %s", (canonical_url, entry_id))
            c.execute(
                "UPDATE entries SET extract_status = %s, extract_method = %s,"
                " extract_error = %s, extracted_at = %s,"
                " extract_attempts = extract_attempts + %s, extract_retry_at = %s"
                " WHERE id = %s",
                (status, method, error, t(now), int(attempt), t(retry_at), entry_id))
            if links is not None:
                pg_set_links(c, entry_id, "page", links)
            if page_language is not None:
                c.execute("UPDATE entries SET page_language = %s WHERE id = %s",
                          (page_language, entry_id))
            if page is not None:
                url, final_url, charset, body = page
                c.execute(
                    "INSERT INTO pages(entry_id, url, final_url, fetched_at, charset, body)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (entry_id) DO UPDATE SET"
                    " url = excluded.url, final_url = excluded.final_url,"
                    " fetched_at = excluded.fetched_at, charset = excluded.charset,"
                    " body = excluded.body",
                    (entry_id, url, final_url, t(now), charset, zlib.compress(body, 6)))
            touch_story_of(c, entry_id, now)
            if self.write_hook is not None and content_html is not None:
                self.write_hook(c)

    def stored_pages(self, feed: str | None = None, since: datetime | None = None
                     ) -> Iterator[tuple[int, str, str | None, str | None, bytes, str]]:
        sql = ("SELECT p.entry_id, p.url, p.final_url, p.charset, p.body, f.name FROM pages p"
               " JOIN entries e ON e.id = p.entry_id JOIN feeds f ON f.id = e.feed_id"
               " WHERE TRUE")
        args: list[Any] = []
        if feed:
            sql += " AND f.name = %s"
            args.append(feed)
        if since:
            sql += " AND e.published >= %s"
            args.append(t(since))
        with self._use() as c:
            rows = c.execute(sql + " ORDER BY p.entry_id", args).fetchall()
        for r in rows:
            yield r[0], r[1], r[2], r[3], zlib.decompress(r[4]), r[5]

    def prune_pages(self, older_than: datetime) -> int:
        with self._tx() as c:
            return int(c.execute("DELETE FROM pages WHERE fetched_at < %s",
                                 (t(older_than),)).rowcount)

    # ----------------------------------------------------------------------- reads

    def items(self, *, limit: int = 200, one_per_story: bool = True,
              before: tuple[str, int] | None = None) -> list[Item]:
        """As the SQLite backend: newest first, undated (NULL) ones last by id; ``before``
        is the previous page's last (published text, '' when undated; id)."""
        args: list[Any] = []
        where = ""
        if before:
            when, last_id = before
            if when:
                where = ("WHERE (e.published < %s OR (e.published = %s AND e.id < %s)"
                         " OR e.published IS NULL)")
                stamp = parse_ts(when)
                args += [stamp, stamp, last_id]
            else:
                where = "WHERE e.published IS NULL AND e.id < %s"
                args.append(last_id)
        story_join = ("JOIN stories s ON s.representative_id = e.id" if one_per_story
                      else "LEFT JOIN stories s ON FALSE")
        with self._use() as c:
            rows = [lite(r) for r in c.execute(
                f"SELECT {_ITEM_COLUMNS} FROM entries e {story_join}"
                f" JOIN feeds f ON f.id = e.feed_id {where}"
                " ORDER BY e.published DESC NULLS LAST, e.id DESC LIMIT %s",
                (*args, limit)).fetchall()]
            if not one_per_story:
                return [_item(cast(Any, r), ()) for r in rows]
            outlets = self._outlets(c, [r["story_id"] for r in rows if r["story_id"]])
            items = [_item(cast(Any, r), outlets.get(r["story_id"], ())) for r in rows]
            return self._with_members(c, items)

    def iter_items(self, *, batch: int = 500, max_items: int = 20000) -> Iterator[Item]:
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

    @staticmethod
    def _outlets(c: Any, story_ids: Sequence[int]
                 ) -> dict[int, tuple[tuple[int, Outlet], ...]]:
        result: dict[int, list[tuple[int, Outlet]]] = {}
        if not story_ids:
            return {}
        for r in c.execute(
                "SELECT e.id, e.story_id, e.url, e.published, f.name,"
                " COALESCE(f.title, f.name) AS title FROM entries e"
                " JOIN feeds f ON f.id = e.feed_id WHERE e.story_id = ANY(%s::bigint[])"
                " ORDER BY e.published NULLS LAST, e.id", (sorted(set(story_ids)),)):
            result.setdefault(r["story_id"], []).append(
                (r["id"], Outlet(r["name"], r["title"], r["url"], out(r["published"]))))
        return {k: tuple(v) for k, v in result.items()}

    @staticmethod
    def _with_members(c: Any, items: Sequence[Item]) -> list[Item]:
        ids = sorted({i.story_id for i in items if i.story_id is not None and i.outlets})
        found: dict[int, list[Item]] = {}
        if ids:
            for r in c.execute(
                    f"SELECT {_ITEM_COLUMNS} FROM entries e JOIN stories s ON s.id = e.story_id"
                    " JOIN feeds f ON f.id = e.feed_id WHERE e.story_id = ANY(%s::bigint[])"
                    " ORDER BY e.published NULLS LAST, e.id", (ids,)):
                found.setdefault(r["story_id"], []).append(_item(cast(Any, lite(r)), ()))
        return [replace(i, members=tuple(found[i.story_id]))
                if i.story_id in found and len(found[i.story_id]) > 1 else i for i in items]

    def search(self, query: str, limit: int = 20) -> list[PgRow]:
        """Entries whose title or text contain ``query``, case-insensitively: ILIKE, which
        the trigram GIN indexes serve for 3+ characters (shorter ones scan)."""
        needle = query.strip() if len(query.strip()) < 3 else query
        like = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._use() as c:
            rows = c.execute(
                "SELECT i.id, i.feed_name, i.title, i.url, i.published,"
                " i.text AS snippet FROM items i JOIN entries e ON e.id = i.id"
                " WHERE e.title ILIKE %s OR e.text ILIKE %s"
                " ORDER BY i.published DESC NULLS LAST, i.id DESC LIMIT %s",
                (like, like, limit)).fetchall()
        out = []
        for r in rows:
            d = lite(r)
            text = d["snippet"] or ""
            # SQLite's: the text's start for a short query (a scan), else the match in context
            d["snippet"] = text[:200] if len(query.strip()) < 3 else _snippet(text, query)
            out.append(PgRow(list(d), list(d.values())))
        return out

    def feed_health(self) -> list[dict[str, Any]]:
        with self._use() as c:
            rows = c.execute(
                "SELECT h.*, f.title AS title, f.language AS language"
                " FROM feed_health h JOIN feeds f ON f.name = h.name ORDER BY h.name"
            ).fetchall()
        result = []
        for r in rows:
            d: dict[str, Any] = {k: ts(v) if isinstance(v, datetime) else v
                                 for k, v in r.items()}
            d["warnings"] = list(d.get("warnings") or [])
            d["active"] = bool(d["active"])
            if d.get("extracted_share") is not None:
                d["extracted_share"] = float(d["extracted_share"])
            result.append(d)
        return result

    def feed_metrics(self) -> list[FeedMetrics]:
        with self._use() as c:
            rows = c.execute("SELECT name, state, consecutive_errors, last_success"
                             " FROM feed_health ORDER BY name").fetchall()
        return [FeedMetrics(r["name"], r["state"], int(r["consecutive_errors"]),
                            r["last_success"].timestamp() if r["last_success"] else None)
                for r in rows]

    def backlog_size(self) -> int:
        with self._use() as c:
            return int(c.execute("SELECT COUNT(*) FROM entries"
                                 " WHERE extract_status = 'pending'").fetchone()[0])

    def backlog_retrying(self, now: datetime | None = None) -> int:
        with self._use() as c:
            return int(c.execute(
                "SELECT COUNT(*) FROM entries WHERE extract_status = 'pending'"
                " AND extract_retry_at > %s", (t(now or datetime.now(UTC)),)).fetchone()[0])

    def feed_state_counts(self, rows: Iterable[Mapping[str, Any]] | None = None
                          ) -> dict[str, int]:
        counts = dict.fromkeys(FEED_STATES, 0)
        if rows is None:
            with self._use() as c:
                for r in c.execute("SELECT state, COUNT(*) FROM feed_health GROUP BY state"):
                    counts[r[0]] = int(r[1])
            return counts
        for d in rows:
            counts[d["state"]] = counts.get(d["state"], 0) + 1
        return counts

    def feed_state(self, name: str) -> str | None:
        with self._use() as c:
            row = c.execute("SELECT state FROM feed_health WHERE name = %s",
                            (name,)).fetchone()
        return str(row[0]) if row else None

    def status(self, now: datetime) -> dict[str, Any]:
        """One REPEATABLE READ transaction: every part reads the same snapshot."""
        with self._use() as c:
            c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            feeds = self.feed_health()
            last = c.execute("SELECT MAX(last_attempt) FROM feeds").fetchone()[0]
            return {
                "backlog": self.backlog_size(),
                "backlog_retrying": self.backlog_retrying(),
                "last_poll": ts(last),
                "states": self.feed_state_counts(feeds),
                **self.activity(now),
                "feeds": feeds,
            }

    def activity(self, now: datetime, days: int = 30) -> dict[str, Any]:
        day0 = (now.astimezone(UTC) - timedelta(days=days - 1)).date()
        since = datetime(day0.year, day0.month, day0.day, tzinfo=UTC)
        per_day = dict.fromkeys(((day0 + timedelta(days=i)).isoformat() for i in range(days)),
                                0)
        with self._use() as c:
            for r in c.execute(
                    "SELECT to_char(published AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,"
                    " COUNT(*) FROM entries WHERE published >= %s AND published <= %s"
                    " GROUP BY day", (t(since), t(now))):
                if r[0] in per_day:
                    per_day[r[0]] = int(r[1])
            row = c.execute(
                "SELECT COUNT(*), COUNT(DISTINCT story_id) FROM entries"
                " WHERE published > %s AND published <= %s",
                (t(now - timedelta(hours=24)), t(now))).fetchone()
        return {"entries_24h": int(row[0]), "stories_24h": int(row[1]),
                "entries_per_day": [{"day": d, "entries": n} for d, n in per_day.items()]}

    # ----------------------------------------------------------------------- retention

    def prune(self, *, now: datetime, entry_retention: float,
              feeds: Sequence[FeedConfig] = (), protect: Collection[int] = (),
              dry_run: bool = False) -> PruneReport:
        config = {f.name: f for f in feeds}
        if self.bands and not dry_run:
            self.flush_bands()
        with self._tx(rollback=dry_run) as c:
            story_lock(c)  # deletes stories another writer may be joining
            return self._prune(c, now, entry_retention, config, set(protect), dry_run)

    def _prune(self, c: Any, now: datetime, default: float, config: dict[str, FeedConfig],
               protect: set[int], dry_run: bool) -> PruneReport:
        size_before = self._relations_size(c)
        due: set[int] = set()
        names: dict[int, str] = {}
        for feed_id, name in c.execute("SELECT id, name FROM feeds ORDER BY name").fetchall():
            names[feed_id] = name
            cfg = config.get(name)
            retention = default if cfg is None or cfg.entry_retention is None \
                else cfg.entry_retention
            if retention > 0:
                due.update(r[0] for r in c.execute(
                    "SELECT id FROM entries WHERE feed_id = %s"
                    " AND COALESCE(published, first_seen) < %s",
                    (feed_id, t(now - timedelta(seconds=retention)))))
            if cfg is not None and cfg.max_entries:
                due.update(r[0] for r in c.execute(
                    "SELECT id FROM entries WHERE feed_id = %s"
                    " ORDER BY published DESC NULLS LAST, id DESC OFFSET %s",
                    (feed_id, cfg.max_entries)))
        ids = sorted(due - protect)
        stories: set[int] = set()
        per_feed: dict[int, int] = {}
        pages = bands = 0
        if ids:
            for feed_id, story_id in c.execute(
                    "SELECT feed_id, story_id FROM entries WHERE id = ANY(%s::bigint[])",
                    (ids,)).fetchall():
                per_feed[feed_id] = per_feed.get(feed_id, 0) + 1
                if story_id is not None:
                    stories.add(story_id)
            c.execute("INSERT INTO pruned_keys(feed_id, key, pruned)"
                      " SELECT feed_id, key, %s FROM entries WHERE id = ANY(%s::bigint[])"
                      " ON CONFLICT DO NOTHING", (t(now), ids))
            pages = c.execute("DELETE FROM pages WHERE entry_id = ANY(%s::bigint[])",
                              (ids,)).rowcount
            bands = c.execute("DELETE FROM entry_bands WHERE entry_id = ANY(%s::bigint[])",
                              (ids,)).rowcount
            c.execute("DELETE FROM entry_links WHERE entry_id = ANY(%s::bigint[])", (ids,))
            c.execute("DELETE FROM entries WHERE id = ANY(%s::bigint[])", (ids,))
            c.execute("INSERT INTO store_state(name, value) VALUES ('search_pruned', %s)"
                      " ON CONFLICT (name) DO UPDATE SET"
                      " value = store_state.value + excluded.value", (len(ids),))
        deleted = 0
        for story_id in sorted(stories):
            if c.execute("SELECT 1 FROM entries WHERE story_id = %s LIMIT 1",
                         (story_id,)).fetchone() is None:
                c.execute("DELETE FROM stories WHERE id = %s", (story_id,))
                deleted += 1
            else:
                refresh_story(c, story_id, now, touch=False)
        for entry_id in ids:
            if entry_id in self.bands:
                bands += len(self.bands.keys_of(entry_id))
                if not dry_run:
                    self.bands.unstage(entry_id)
        return PruneReport(
            dry_run=dry_run, entries=len(ids), pages=pages, band_rows=bands,
            stories_touched=len(stories) - deleted, stories_deleted=deleted,
            protected=len(due & protect),
            by_feed=tuple(sorted(((names[f], n) for f, n in per_feed.items()),
                                 key=lambda x: (-x[1], x[0]))),
            # PostgreSQL frees a deleted row's space at the next VACUUM (autovacuum): none
            # is free within this transaction.
            freed=max(0, size_before - self._relations_size(c)),
        )

    @staticmethod
    def _relations_size(c: Any) -> int:
        return int(c.execute(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind = 'r'").fetchone()[0])
