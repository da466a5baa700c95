"""Stories: which story a new entry joins (candidates → decide → merge), a story's
representative and counts, and the ids stories and outputs are published under.

The decision is policy over plain values (``decide_story``, ``pick_representative``); the
SQL is small data-access calls around it (``find_candidates``, ``merge_story``,
``refresh_story``), so a second backend reuses the policy as it is."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..models import Candidate
from .bands import BandBuffer, unpack_bands
from .connection import SQLiteBase
from .values import CONTAIN_MIN_SHARED, Matcher, parse_ts, primary_language, ts

# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class StoryDecision:
    """Where a new entry goes. ``story_id`` None: it starts a story of its own (reason
    "first"). ``bridges``: other stories the entry also matches (it bridges two reports that
    arrived apart), each (story id, reason, score), to be merged into ``story_id``."""

    story_id: int | None
    reason: str
    score: float
    bridges: tuple[tuple[int, str, float], ...] = ()


NEW_STORY = StoryDecision(None, "first", 1.0)


def decide_story(entry: Any, candidates: Sequence[Candidate],
                 matcher: Matcher | None) -> StoryDecision:
    """The story of a new entry among ``candidates``, as ``matcher`` decides it."""
    if matcher is None or not candidates:
        return NEW_STORY
    match = matcher(entry, candidates)
    if match is None or match.story_id is None:
        return NEW_STORY
    bridges = []
    others = {x.story_id for x in candidates} - {match.story_id, None}
    for other in sorted(o for o in others if o is not None):
        bridge = matcher(entry, [x for x in candidates if x.story_id == other])
        if bridge is not None:
            bridges.append((other, bridge.reason, bridge.score))
    return StoryDecision(match.story_id, match.reason, match.score, tuple(bridges))


def pick_representative(members: Sequence[Mapping[str, Any]], now: datetime) -> Any:
    """The fullest early version: among the members (ordered by published, then id)
    published within 6 hours of the earliest, the one with the most words (ties: earliest,
    then lowest id). ``published`` is '' for an undated member counted from first-seen by
    the caller."""
    first = parse_ts(members[0]["published"]) or now
    early = [m for m in members if (parse_ts(m["published"]) or now) - first
             <= timedelta(hours=6)]
    return max(early, key=lambda m: (m["word_count"], -members.index(m)))


def link_reason(kind: str, source_language: str | None, target_language: str | None,
                source_host: str, target_host: str) -> str | None:
    """Why an entry joins the story of a version its page or feed names (languages are
    primary subtags): ``translation`` when the languages differ, or when the link declares
    a translation (JSON-LD workTranslation/translationOfWork), or when a language is
    unknown; ``edition`` for the same language on another host (a regional edition);
    None for the same language on the same host (nothing says it is another version of
    the article rather than another article)."""
    if kind == "translation" or not source_language or not target_language:
        return "translation"
    if source_language != target_language:
        return "translation"
    return "edition" if source_host != target_host else None


def url_host(url_norm: str | None) -> str:
    return (url_norm or "").split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0]


# --------------------------------------------------------------------------- data access


def find_candidates(
    c: sqlite3.Connection,
    entry_id: int,
    url_norm: str | None,
    canonical_norm: str | None,
    text_hash: str | None,
    band_keys: Sequence[int],
    since: datetime,
    pending: Iterable[int] = (),
    limit: int = 200,
    contained: Sequence[int] = (),
) -> list[Candidate]:
    """Entries that may be the same story: same normalised URL or canonical URL, same text
    hash, or sharing an LSH band (in entry_bands, or ``pending``: entries whose band keys
    still wait in memory), within the window. Every lookup goes through an index, and all
    of them are one statement (a new entry costs one round trip, not five), besides the
    containment lookup (``contained``, from :func:`containment_ids`): only its candidates
    come with a reader of their text (``load_text``), which dedup calls for the few whose
    signature estimate passes (most never need their text read)."""
    parts: list[str] = []
    args: list[Any] = []
    contained_json = json.dumps(sorted(contained))
    if contained:
        parts.append("SELECT value FROM json_each(?)")
        args.append(contained_json)
    for value in {url_norm, canonical_norm} - {None}:
        parts.append("SELECT id FROM (SELECT id FROM entries WHERE url_norm = ? UNION"
                     " SELECT id FROM entries WHERE canonical_url = ? LIMIT ?)")
        args += [value, value, limit]
    if text_hash:
        parts.append("SELECT id FROM (SELECT id FROM entries WHERE text_hash = ? LIMIT ?)")
        args += [text_hash, limit]
    if band_keys:
        marks = ",".join("?" * len(band_keys))
        parts.append("SELECT entry_id FROM (SELECT DISTINCT entry_id FROM entry_bands"
                     f" WHERE band_key IN ({marks}) LIMIT ?)")
        args += [*band_keys, limit]
        waiting = sorted(pending)
        if waiting:
            parts.append("SELECT value FROM json_each(?)")
            args.append(json.dumps(waiting))
    if not parts:
        return []
    rows = c.execute(
        "SELECT e.id, e.story_id, f.name AS feed_name, e.url_norm, e.canonical_url,"
        " e.text_hash, e.signature, e.title, e.word_count,"
        " COALESCE(NULLIF(e.published, ''), e.first_seen) AS published"
        " FROM entries e JOIN feeds f ON f.id = e.feed_id"
        f" WHERE e.id IN ({' UNION '.join(parts)}) AND e.id != ?"
        " AND COALESCE(NULLIF(e.published, ''), e.first_seen) >= ?"
        " ORDER BY 10, e.id",
        (*args, entry_id, ts(since)),
    ).fetchall()
    wanted = set(contained)

    def reader(i: int) -> Callable[[], str | None]:
        def read() -> str | None:
            row = c.execute("SELECT text FROM entries WHERE id = ?", (i,)).fetchone()
            return row[0] if row else None
        return read

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
            load_text=reader(r["id"]) if r["id"] in wanted else None,
        )
        for r in rows
    ]


def containment_ids(c: sqlite3.Connection, buffer: BandBuffer, keys: Sequence[int],
                    limit: int = 200) -> list[int]:
    """Entries sharing CONTAIN_MIN_SHARED or more of the containment band keys ``keys``
    (dedup.containment_keys), in entry_bands or still waiting in ``buffer``. Each key's rows
    are a short index range (unrelated texts rarely share a 2-row band), so the cost does
    not grow with the store."""
    if not keys:
        return []
    marks = ",".join("?" * len(keys))
    # An entry's keys are all in entry_bands or all waiting in the buffer (write_bands
    # moves them together), so each side counts on its own: SQLite keeps only the entries
    # reaching the bar instead of handing every single-key hit to Python.
    shared = dict(c.execute(
        f"SELECT entry_id, COUNT(*) FROM entry_bands WHERE band_key IN ({marks})"
        " GROUP BY entry_id HAVING COUNT(*) >= ?", (*keys, CONTAIN_MIN_SHARED)).fetchall())
    for entry_id, n in buffer.shared_counts(keys).items():
        if n >= CONTAIN_MIN_SHARED:
            shared[entry_id] = shared.get(entry_id, 0) + n
    found = sorted((-n, i) for i, n in shared.items())
    return [i for _, i in found[:limit]]


def create_story(c: sqlite3.Connection, now: datetime, updated: datetime,
                 item_id: str) -> int:
    """A new story of one entry; its published id is fixed here, for good."""
    return int(c.execute(
        "INSERT INTO stories(first_seen, updated, entry_count, outlet_count, item_id)"
        " VALUES (?, ?, 1, 1, ?)", (ts(now), ts(updated), item_id)).lastrowid or 0)


def merge_story(c: sqlite3.Connection, other: int, *, into: int, reason: str,
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


def touch_story_of(c: sqlite3.Connection, entry_id: int, now: datetime) -> None:
    row = c.execute("SELECT story_id FROM entries WHERE id = ?", (entry_id,)).fetchone()
    if row and row[0] is not None:
        refresh_story(c, row[0], now)


def refresh_story(c: sqlite3.Connection, story_id: int, now: datetime, *,
                  touch: bool = True) -> None:
    """Recount a story and re-pick its representative (pick_representative). The story's
    `updated` is its members' newest: it moves when an outlet joins (to that entry's own
    date) or a member changes, never to the time of the poll that noticed it. ``touch``
    False (a prune only takes members away, which is no news): `updated` stays as it is."""
    # An undated entry (published '') counts from when it was first seen.
    members = c.execute(
        "SELECT id, feed_id, COALESCE(NULLIF(published, ''), first_seen) AS published,"
        " word_count, updated FROM entries WHERE story_id = ? ORDER BY 3, id",
        (story_id,),
    ).fetchall()
    if not members:
        return
    rep = pick_representative(members, now)
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


def set_links(c: sqlite3.Connection, entry_id: int, source: str,
              links: Iterable[tuple[str, str | None, str]]) -> None:
    """Replace the links an entry's ``source`` (``feed`` or ``page``) names."""
    c.execute("DELETE FROM entry_links WHERE entry_id = ? AND source = ?", (entry_id, source))
    c.executemany(
        "INSERT OR IGNORE INTO entry_links(entry_id, source, url_norm, language, kind)"
        " VALUES (?, ?, ?, ?, ?)",
        [(entry_id, source, url, primary_language(lang), kind) for url, lang, kind in links])


_ENTRY_LANG = (
    "SELECT e.id, e.story_id, e.url_norm, e.canonical_url,"
    " COALESCE(e.language, f.language, e.page_language) AS language"
    " FROM entries e JOIN feeds f ON f.id = e.feed_id"
)
_LINK_LIMIT = 50  # entries one URL may name or be named by: bounds a hostile page's cost


def link_joins(me: Mapping[str, Any], links: Iterable[Mapping[str, Any]],
               targets: Callable[[str], Iterable[Mapping[str, Any]]],
               linkers: Callable[[str], Iterable[Mapping[str, Any]]]) -> list[tuple[int, str]]:
    """Policy of join_linked_stories over plain rows, for both backends: the stories an
    entry ``me`` (story_id, url_norm, canonical_url, language) joins, each (story id,
    reason ``link_reason`` gives), in order. ``links``: its stored links (url_norm,
    language, kind); ``targets(url)``: the other entries at that URL or canonical URL
    (story_id, language); ``linkers(url)``: the other entries whose links name that URL
    (declared, kind, story_id, url_norm, language)."""
    own = {x for x in (me["url_norm"], me["canonical_url"]) if x}
    my_lang = primary_language(me["language"])
    my_host = url_host(me["url_norm"] or me["canonical_url"])
    joins: list[tuple[int, str]] = []  # (story id, reason)
    for link in links:
        if link["url_norm"] in own:
            continue
        for t in targets(link["url_norm"]):
            reason = link_reason(link["kind"], my_lang,
                                 link["language"] or primary_language(t["language"]),
                                 my_host, url_host(link["url_norm"]))
            if reason and t["story_id"] is not None:
                joins.append((t["story_id"], reason))
    for url in sorted(own):
        for t in linkers(url):
            reason = link_reason(t["kind"], primary_language(t["language"]),
                                 t["declared"] or my_lang, url_host(t["url_norm"]),
                                 url_host(url))
            if reason and t["story_id"] is not None:
                joins.append((t["story_id"], reason))
    return joins


def join_linked_stories(c: sqlite3.Connection, entry_id: int, now: datetime) -> int:
    """Join the stories of the entries an entry's links name, and of the entries whose
    links name it (its URL or canonical URL), each with the reason ``link_reason`` gives
    (the policy: ``link_joins``); either side may have arrived first. Stories merge into
    the oldest (its published item id stays) through ``merge_story``. Returns the number
    of stories merged."""
    me = c.execute(_ENTRY_LANG + " WHERE e.id = ?", (entry_id,)).fetchone()
    if me is None or me["story_id"] is None:
        return 0
    joins = link_joins(
        me,
        c.execute("SELECT url_norm, language, kind FROM entry_links WHERE entry_id = ?",
                  (entry_id,)).fetchall(),
        lambda url: c.execute(
            _ENTRY_LANG + " WHERE e.id IN (SELECT id FROM entries WHERE url_norm = ?"
            " UNION SELECT id FROM entries WHERE canonical_url = ? LIMIT ?) AND e.id != ?",
            (url, url, _LINK_LIMIT, entry_id)).fetchall(),
        lambda url: c.execute(
            "SELECT l.language AS declared, l.kind, x.story_id, x.url_norm, x.language"
            " FROM (SELECT entry_id, language, kind FROM entry_links WHERE url_norm = ?"
            " AND entry_id != ? LIMIT ?) l JOIN (" + _ENTRY_LANG + ") x"
            " ON x.id = l.entry_id", (url, entry_id, _LINK_LIMIT)).fetchall())
    return merge_joins(
        int(me["story_id"]), joins,
        exists=lambda s: c.execute("SELECT 1 FROM stories WHERE id = ?", (s,)).fetchone()
        is not None,
        merge=lambda gone, keep, reason: merge_story(c, gone, into=keep, reason=reason,
                                                     score=1.0),
        refresh=lambda s: refresh_story(c, s, now))


def merge_joins(story: int, joins: Iterable[tuple[int, str]], *,
                exists: Callable[[int], bool], merge: Callable[[int, int, str], None],
                refresh: Callable[[int], None]) -> int:
    """Apply link_joins' verdicts, the same on every backend: each other story still there
    merges into the older of the two (which keeps its item id); the survivor is refreshed
    once. Returns how many stories were merged away."""
    merged = 0
    for other, reason in joins:
        if other == story or not exists(other):
            continue
        keep, gone = min(story, other), max(story, other)
        merge(gone, keep, reason)
        story = keep
        merged += 1
    if merged:
        refresh(story)
    return merged


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


# --------------------------------------------------------------------------- storage


class StoriesMixin(SQLiteBase):
    def _waiting(self, c: sqlite3.Connection, band_keys: Sequence[int]) -> set[int]:
        """For find_candidates: the entries sharing ``band_keys`` whose keys wait in this
        writer's memory (entry_bands holds everyone else's)."""
        if not band_keys:
            return set()
        self._ensure_bands(c)
        return self.bands.ids_for(band_keys)

    def _contained(self, c: sqlite3.Connection, contain_keys: Sequence[int]) -> list[int]:
        """For find_candidates: the containment candidates of ``contain_keys``."""
        if not contain_keys:
            return []
        self._ensure_bands(c)
        return containment_ids(c, self.bands, contain_keys)

    def rematch_entry(
        self, entry_id: int, matcher: Matcher, now: datetime, window_days: int,
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
            # An entry stored before entries.bands existed: its keys are in entry_bands only.
            # (An article stored with containment keys only has no 32x4 keys at all.)
            keys = unpack_bands(row["bands"]) if (
                row["bands"] is not None or row["contain_bands"] is not None) else [
                r[0] for r in c.execute(
                    "SELECT band_key FROM entry_bands WHERE entry_id = ?", (entry_id,))]
            published = parse_ts(row["published"]) or parse_ts(row["first_seen"]) or now
            candidates = find_candidates(
                c, entry_id, row["url_norm"], canonical_norm, row["text_hash"], keys,
                published - timedelta(days=window_days), self._waiting(c, keys),
                contained=self._contained(c, unpack_bands(row["contain_bands"])),
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
            refresh_story(c, match.story_id, now)
        return old is not None

    def join_links(self, entry_id: int, now: datetime) -> int:
        """Join the entry's story with the stories of the versions its links name and of
        the entries whose links name it (join_linked_stories); returns stories merged."""
        with self.transaction() as c:
            return join_linked_stories(c, entry_id, now)

    def story_members(self, story_id: int) -> list[sqlite3.Row]:
        """The rows of the story_members view for one story, earliest first."""
        return self.conn.execute(
            "SELECT * FROM story_members WHERE story_id = ? ORDER BY published, entry_id",
            (story_id,)).fetchall()

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

    def story(self, story_id: int) -> tuple[sqlite3.Row | None, list[sqlite3.Row]]:
        s = self.conn.execute("SELECT * FROM stories WHERE id = ?", (story_id,)).fetchone()
        members = self.conn.execute(
            "SELECT e.id, f.name AS feed_name, e.title, e.url, e.published, e.word_count,"
            " e.match_reason, e.match_score, m.language FROM entries e"
            " JOIN feeds f ON f.id = e.feed_id JOIN story_members m ON m.entry_id = e.id"
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
