"""The LSH band index: new entries' keys wait in memory and reach entry_bands in sorted
batches; lookups see both, a crash loses nothing, a rollback leaves no phantom keys."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aggregator import dedup
from aggregator.models import BandKeys, FeedConfig, StoryMatch
from aggregator.store import (
    BAND_FLUSH_ENTRIES,
    CONTAIN_MIN_SHARED,
    NewEntry,
    Store,
    unpack_bands,
)

from .test_stories import STORY

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def entry(key: str, text: str, url: str, title: str = "Border talks resume") -> NewEntry:
    text_hash, sig, bands = dedup.features(title, text)
    return NewEntry(
        key=key, guid=key, url=url, url_norm=dedup.normalize_url(url), title=title,
        author=None, feed_html=f"<p>{text}</p>", content_html=f"<p>{text}</p>", text=text,
        summary=text[:100], word_count=len(text.split()), language="en", categories=(),
        enclosures=(), image=None, published=NOW, published_raw=None, date_note=None,
        content_hash=key, extract_status="skipped", text_hash=text_hash, signature=sig,
        band_keys=tuple(bands),
    )


def matcher(e: Any, candidates: Sequence[Any]) -> StoryMatch | None:
    return dedup.decide(
        url_norm=e.url_norm, canonical_norm=None, text_hash=e.text_hash,
        signature=e.signature, title=e.title, word_count=e.word_count,
        candidates=candidates, threshold=0.7,
    )


def variant(n: int) -> str:
    """The story with one sentence changed: another text hash, a near-identical signature."""
    return STORY + f" A spokesman for outlet {n} added that the talks were useful."


def open_store(path: Path, feeds: int = 4) -> tuple[Store, dict[str, int]]:
    st = Store(path)
    st.migrate()
    st.sync_feeds([FeedConfig(name=f"f{n}", url=f"https://f{n}.example/rss") for n in
                   range(feeds)], NOW)
    ids = {r["name"]: r["id"] for r in st.conn.execute("SELECT id, name FROM feeds")}
    return st, ids


def store(st: Store, feed_id: int, *entries: NewEntry) -> None:
    st.record_success(
        feed_id, now=NOW, status=200, next_poll=NOW, interval=900.0, etag=None,
        last_modified=None, body_hash=None, permanent_url=None, entries=entries,
        matcher=matcher, window_days=7,
    )


def story_of(st: Store, key: str) -> tuple[int, str]:
    row = st.conn.execute("SELECT story_id, match_reason FROM entries WHERE key = ?",
                          (key,)).fetchone()
    return row[0], row[1]


def band_rows(path: Path) -> int:
    with sqlite3.connect(path) as c:
        return int(c.execute("SELECT COUNT(*) FROM entry_bands").fetchone()[0])


def test_near_duplicate_found_while_pending_and_after_flush(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    st, ids = open_store(db)
    store(st, ids["f0"], entry("a", variant(0), "https://a.example/1"))
    assert st.pending_bands == 1 and band_rows(db) == 0  # in memory only
    store(st, ids["f1"], entry("b", variant(1), "https://b.example/1"))
    assert story_of(st, "b") == (story_of(st, "a")[0], "near")

    assert st.flush_bands() == 2 * dedup.BANDS
    assert st.pending_bands == 0 and band_rows(db) == 2 * dedup.BANDS
    blob = st.conn.execute("SELECT bands FROM entries WHERE key = 'a'").fetchone()[0]
    rows = {k for (k,) in st.conn.execute(
        "SELECT band_key FROM entry_bands WHERE entry_id = (SELECT id FROM entries"
        " WHERE key = 'a')")}
    assert rows == set(unpack_bands(blob))
    # Now found through entry_bands alone.
    store(st, ids["f2"], entry("c", variant(2), "https://c.example/1"))
    assert story_of(st, "c") == (story_of(st, "a")[0], "near")
    st.close()


def test_unrelated_story_is_not_matched(tmp_path: Path) -> None:
    st, ids = open_store(tmp_path / "a.db")
    store(st, ids["f0"], entry("a", variant(0), "https://a.example/1"))
    other = ("Georgia's parliament on Tuesday adopted amendments to the electoral code that "
             "change the threshold for parties entering the legislature, after a debate that "
             "lasted late into the night, while opposition deputies walked out before the vote.")
    store(st, ids["f1"], entry("b", other, "https://b.example/1", title="Electoral code"))
    assert story_of(st, "b")[0] != story_of(st, "a")[0]
    st.close()


def test_keys_left_unflushed_by_a_crash_are_indexed_by_the_next_writer(
    tmp_path: Path,
) -> None:
    db = tmp_path / "a.db"
    st, ids = open_store(db)
    store(st, ids["f0"], entry("a", variant(0), "https://a.example/1"))
    st.conn.close()  # killed: no flush, no close()
    assert band_rows(db) == 0

    st2 = Store(db)
    st2.migrate()
    store(st2, ids["f1"], entry("b", variant(1), "https://b.example/1"))
    assert story_of(st2, "b") == (story_of(st2, "a")[0], "near")
    assert band_rows(db) == dedup.BANDS  # a's keys, written by the recovery pass
    st2.close()  # close() flushes b's
    assert band_rows(db) == 2 * dedup.BANDS


def test_rolled_back_feed_leaves_no_phantom_keys(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    st, ids = open_store(db)
    bad = entry("bad", "x", "https://a.example/2")
    bad = NewEntry(**{**bad.__dict__, "title": None})  # type: ignore[arg-type]  # NOT NULL
    with pytest.raises(sqlite3.IntegrityError):
        store(st, ids["f0"], entry("a", variant(0), "https://a.example/1"), bad)
    assert st.pending_bands == 0
    assert st.conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 0
    # The same story later starts its own story instead of joining a ghost.
    store(st, ids["f1"], entry("b", variant(1), "https://b.example/1"))
    assert story_of(st, "b")[1] == "first"
    st.close()
    assert band_rows(db) == dedup.BANDS


def test_edited_pending_entry_replaces_its_keys(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    st, ids = open_store(db)
    store(st, ids["f0"], entry("a", variant(0), "https://a.example/1"))
    other = ("Georgia's parliament on Tuesday adopted amendments to the electoral code that "
             "change the threshold for parties entering the legislature, after a debate that "
             "lasted late into the night, while opposition deputies walked out before the vote.")
    edited = entry("a", other, "https://a.example/1", title="Electoral code")
    store(st, ids["f0"], NewEntry(**{**edited.__dict__, "content_hash": "a2"}))
    assert st.pending_bands == 1
    # The old text's keys are gone: a copy of the old story does not join entry a.
    store(st, ids["f1"], entry("b", variant(1), "https://b.example/1"))
    assert story_of(st, "b")[1] == "first"
    st.flush_bands()
    a_id = st.conn.execute("SELECT id FROM entries WHERE key = 'a'").fetchone()[0]
    keys = {k for (k,) in st.conn.execute(
        "SELECT band_key FROM entry_bands WHERE entry_id = ?", (a_id,))}
    assert keys == set(edited.band_keys)
    st.close()


def test_database_from_schema_1_is_upgraded_with_its_band_index(tmp_path: Path) -> None:
    """Migrations 2 and 3 on a database written before them: its entry_bands rows still
    find candidates, and the search index takes the new merge setting."""
    from aggregator.store import MIGRATIONS, _split_sql

    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
                 " name TEXT NOT NULL, applied TEXT NOT NULL)")
    for statement in _split_sql(MIGRATIONS[0][1]):
        conn.execute(statement)
    conn.execute("INSERT INTO schema_migrations VALUES (1, ?, '2026-11-01T00:00:00Z')",
                 (MIGRATIONS[0][0],))
    conn.execute("INSERT INTO feeds(id, name, url, created) VALUES (1, 'f0',"
                 " 'https://f0.example/rss', '2026-11-01T00:00:00Z')")
    old = entry("a", variant(0), "https://a.example/1")
    conn.execute("INSERT INTO stories(id, representative_id, first_seen, updated, entry_count,"
                 " outlet_count) VALUES (1, 7, '2026-11-24T10:00:00Z', '2026-11-24T10:00:00Z',"
                 " 1, 1)")
    conn.execute(
        "INSERT INTO entries(id, feed_id, key, url, url_norm, title, content_html, text,"
        " word_count, published, updated, first_seen, last_seen, content_hash, extract_status,"
        " text_hash, signature, story_id, match_reason, match_score) VALUES (7, 1, 'a', ?, ?,"
        " ?, ?, ?, ?, '2026-11-24T10:00:00Z', '2026-11-24T10:00:00Z', '2026-11-24T10:00:00Z',"
        " '2026-11-24T10:00:00Z', 'a', 'skipped', ?, ?, 1, 'first', 1.0)",
        (old.url, old.url_norm, old.title, old.content_html, old.text, old.word_count,
         old.text_hash, old.signature),
    )
    conn.executemany("INSERT INTO entry_bands(band_key, entry_id) VALUES (?, 7)",
                     [(k,) for k in old.band_keys])
    conn.commit()
    conn.close()

    st, ids = open_store(db)
    assert st.schema_version() == len(MIGRATIONS)
    assert st.conn.execute("SELECT value FROM store_state WHERE name = 'bands_indexed_upto'"
                           ).fetchone()[0] == 7
    assert st.conn.execute("SELECT v FROM entries_fts_config WHERE k = 'automerge'"
                           ).fetchone()[0] == 16
    store(st, ids["f1"], entry("b", variant(1), "https://b.example/1"))
    assert story_of(st, "b") == (1, "near")
    st.close()
    assert band_rows(db) == 2 * dedup.BANDS


def article(key: str, text: str, url: str, title: str) -> NewEntry:
    """An entry with its containment keys, as the pipeline stores an article."""
    e = entry(key, text, url, title)
    return NewEntry(**{**e.__dict__, "contain_keys": tuple(
        dedup.containment_keys(e.signature, len(dedup.tokens(text))))})


def text_matcher(e: Any, candidates: Sequence[Any]) -> StoryMatch | None:
    return dedup.decide(
        url_norm=e.url_norm, canonical_norm=None, text_hash=e.text_hash,
        signature=e.signature, title=e.title, word_count=e.word_count,
        candidates=candidates, threshold=0.7, text=e.text,
    )


def store_articles(st: Store, feed_id: int, *entries: NewEntry) -> None:
    st.record_success(
        feed_id, now=NOW, status=200, next_poll=NOW, interval=900.0, etag=None,
        last_modified=None, body_hash=None, permanent_url=None, entries=entries,
        matcher=text_matcher, window_days=7,
    )


def test_containment_keys_found_pending_flushed_and_after_a_crash(tmp_path: Path) -> None:
    """The agency text, then outlets carrying it under their own lede and closing: found by
    containment while its keys wait in memory, through entry_bands after a flush, and after
    a crash that left them unflushed (read back from entries.contain_bands)."""
    from .test_stories import OWN_CLOSING, OWN_LEDE

    assert CONTAIN_MIN_SHARED == dedup.CONTAIN_MIN_SHARED
    db = tmp_path / "a.db"
    st, ids = open_store(db)
    store_articles(st, ids["f0"], article("a", STORY, "https://agency.example/1", "Talks"))
    a_story = story_of(st, "a")[0]
    a_id = st.conn.execute("SELECT id FROM entries WHERE key = 'a'").fetchone()[0]
    assert len(unpack_bands(st.conn.execute(
        "SELECT contain_bands FROM entries WHERE id = ?", (a_id,)).fetchone()[0])) == 64
    copy = f"{OWN_LEDE} {STORY} {OWN_CLOSING}"
    store_articles(st, ids["f1"], article("b", copy, "https://b.example/1", "A small step"))
    assert story_of(st, "b") == (a_story, "containment")
    st.conn.close()  # killed: no flush
    assert band_rows(db) == 0

    st2 = Store(db)
    st2.migrate()
    store_articles(st2, ids["f2"], article("c", f"{OWN_CLOSING} {STORY}",
                                           "https://c.example/1", "Border"))
    assert story_of(st2, "c") == (a_story, "containment")
    # a's and b's keys of both families, written by the recovery pass
    assert band_rows(db) == 2 * (dedup.BANDS + dedup.CONTAIN_BANDS)
    st2.flush_bands()
    store_articles(st2, ids["f3"], article("d", f"{OWN_LEDE} {STORY}", "https://d.example/1",
                                           "Talks resume"))
    assert story_of(st2, "d")[0] == a_story
    st2.close()


def test_article_text_arriving_later_joins_by_containment(tmp_path: Path) -> None:
    """A teaser stays alone; when its article (the agency text under the outlet's own lede
    and closing) is stored with its containment keys, the rematch joins the agency's story."""
    from .test_stories import OWN_CLOSING, OWN_LEDE

    st, ids = open_store(tmp_path / "a.db")
    store_articles(st, ids["f0"], article("a", STORY, "https://agency.example/1", "Talks"))
    store_articles(st, ids["f1"], article("b", "Border talks: our report.",
                                          "https://b.example/1", "A small step"))
    assert story_of(st, "b")[1] == "first"
    b_id = st.conn.execute("SELECT id FROM entries WHERE key = 'b'").fetchone()[0]
    text = f"{OWN_LEDE} {STORY} {OWN_CLOSING}"
    text_hash, sig, bands = dedup.features("A small step", text)
    words = len(dedup.tokens(text))
    st.record_article(
        b_id, now=NOW, status="done", method="test", error=None, content_html=f"<p>{text}</p>",
        text=text, summary=text[:100], word_count=words, text_hash=text_hash, signature=sig,
        band_keys=bands, contain_keys=dedup.containment_keys(sig, words),
    )
    assert st.rematch_entry(b_id, text_matcher, NOW, 7)
    assert story_of(st, "b") == (story_of(st, "a")[0], "containment")
    st.close()


def planned(key: str, text: str, url: str, title: str = "Border talks resume") -> NewEntry:
    """An entry with the band keys dedup.lookup_keys plans for it, as the pipeline stores
    it with containment on."""
    e = entry(key, text, url, title)
    keys = dedup.lookup_keys(e.signature, e.word_count, 0.7, True)
    return NewEntry(**{**e.__dict__, "band_keys": keys.near, "contain_keys": keys.contain,
                       "probe_bands": keys.probe_near, "probe_contain": keys.probe_contain})


def test_an_article_is_indexed_under_its_containment_keys_only(tmp_path: Path) -> None:
    """With containment on, an article's 32x4 keys are not stored: its containment keys
    find its near-duplicates, pending and after a flush; a summary keeps the 32x4 keys."""
    db = tmp_path / "a.db"
    st, ids = open_store(db)
    store_articles(st, ids["f0"], planned("a", STORY, "https://a.example/1"))
    store_articles(st, ids["f1"], planned("b", variant(1), "https://b.example/1"))
    assert story_of(st, "b") == (story_of(st, "a")[0], "near")
    st.flush_bands()
    assert band_rows(db) == 2 * dedup.CONTAIN_BANDS
    store_articles(st, ids["f2"], planned("c", variant(2), "https://c.example/1"))
    assert story_of(st, "c") == (story_of(st, "a")[0], "near")
    summary = " ".join(STORY.split()[:30])
    store_articles(st, ids["f3"], planned("d", summary, "https://d.example/1"))
    st.flush_bands()
    assert band_rows(db) == 3 * dedup.CONTAIN_BANDS + dedup.BANDS
    st.close()


@pytest.mark.parametrize("flush", [False, True])
@pytest.mark.parametrize("summary_first", [False, True])
def test_summary_and_article_near_the_length_bar_meet(tmp_path: Path, flush: bool,
                                                      summary_first: bool) -> None:
    """A 45-word summary and a 55-word article of one text are indexed under different
    band families; each finds the other (whichever came first) by probing the other's."""
    words = STORY.split()
    summary = planned("s", " ".join(words[:45]), "https://s.example/1")
    article_ = planned("a", " ".join(words[:55]), "https://a.example/1")
    assert summary.contain_keys == () and summary.probe_contain
    assert article_.band_keys == () and article_.probe_bands
    first, second = (summary, article_) if summary_first else (article_, summary)
    st, ids = open_store(tmp_path / "a.db")
    store_articles(st, ids["f0"], first)
    if flush:
        st.flush_bands()
    store_articles(st, ids["f1"], second)
    assert story_of(st, second.key) == (story_of(st, first.key)[0], "near")
    st.close()


def test_articles_find_entries_stored_while_containment_was_off(tmp_path: Path) -> None:
    """An article stored with containment off has only 32x4 keys; an article stored later
    with containment on (containment keys only) still finds it, by probing them."""
    st, ids = open_store(tmp_path / "a.db")
    store_articles(st, ids["f0"], entry("a", STORY, "https://a.example/1"))
    st.flush_bands()
    store_articles(st, ids["f1"], planned("b", variant(1), "https://b.example/1"))
    assert story_of(st, "b") == (story_of(st, "a")[0], "near")
    st.close()


def test_lookup_keys_follow_the_setting_and_the_length() -> None:
    _, sig, bands = dedup.features("Border talks resume", STORY)
    words = len(dedup.tokens(STORY))
    assert dedup.lookup_keys(sig, words, 0.7, False) == BandKeys(near=tuple(bands))
    on = dedup.lookup_keys(sig, words, 0.7, True)
    assert on == BandKeys(contain=tuple(dedup.containment_keys(sig, words)),
                          probe_near=tuple(bands))
    # A summary too short for `near` to accept any article probes nothing more.
    assert dedup.lookup_keys(sig, 25, 0.7, True) == BandKeys(near=tuple(bands))
    assert dedup.lookup_keys(sig, 30, 0.7, True).probe_contain
    assert dedup.lookup_keys(None, words, 0.7, True) == BandKeys()


def test_the_flush_batch_is_counted_in_entries_not_keys(tmp_path: Path) -> None:
    """Articles carry twice the keys of summaries; they wait in memory as many at a time
    (a flush costs about the index's size, so more keys must not mean more flushes)."""
    db = tmp_path / "a.db"
    st, ids = open_store(db)
    rng = random.Random(7)
    waiting = BAND_FLUSH_ENTRIES - 1
    for lo in range(0, waiting, 100):
        batch = [NewEntry(**{**entry(f"k{i}", "", f"https://x.example/{i}").__dict__,
                             "contain_keys": tuple(rng.getrandbits(63) for _ in range(64))})
                 for i in range(lo, min(lo + 100, waiting))]
        store(st, ids["f0"], *batch)
    assert st.pending_bands == waiting and band_rows(db) == 0
    store(st, ids["f0"], NewEntry(**{**entry("last", "", "https://x.example/last").__dict__,
                                     "contain_keys": (1, 2)}))
    assert st.pending_bands == 0
    assert band_rows(db) == waiting * 64 + 2
    st.close()
