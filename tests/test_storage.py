"""The Storage protocol, method by method, through the protocol only (no SQL): the same
tests run on every backend: SQLite, and PostgreSQL in a database of the test's own
(conftest.postgres_url; skipped with one line when no server answers). Where a method is
SQLite upkeep (the WAL, incremental vacuum), PostgreSQL's meaning of it is tested instead
(docs/schema.md)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aggregator import dedup
from aggregator.errors import StoreError
from aggregator.models import (
    Document,
    FeedConfig,
    StoryMatch,
    document_etag,
    document_type,
)
from aggregator.store import (
    FEED_STATES,
    MIGRATIONS,
    NewEntry,
    Storage,
    StoredEntry,
    entry_uid,
    open_storage,
)

from .test_stories import OTHER, STORY

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = 86400.0

BACKENDS = ["sqlite", "postgresql"]

Opener = Callable[..., Storage]


def open_backend(backend: str, where: Path | str, *, readonly: bool = False) -> Storage:
    """``where``: the test's folder (SQLite) or its own database's URL (PostgreSQL)."""
    if backend == "sqlite":
        return open_storage(Path(where) / "store.db", readonly=readonly)
    if backend == "postgresql":
        return open_storage(str(where), readonly=readonly)
    raise AssertionError(f"unknown backend {backend}")


def is_postgres(st: Storage) -> bool:
    return type(st).__name__ == "PostgresStorage"


@pytest.fixture(params=BACKENDS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens (another connection to) the one database of the test, not migrated."""
    opened: list[Storage] = []
    where: Path | str = tmp_path
    if request.param == "postgresql":
        where = request.getfixturevalue("postgres_url")

    def open_(readonly: bool = False) -> Storage:
        st = open_backend(request.param, where, readonly=readonly)
        opened.append(st)
        return st

    yield open_
    for st in opened:
        try:
            st.close()
        except Exception:  # noqa: BLE001 - closed by the test already
            pass


@pytest.fixture
def storage(opener: Opener) -> Storage:
    st = opener()
    st.migrate()
    st.sync_feeds([FeedConfig(name=f"f{n}", url=f"https://f{n}.example/rss")
                   for n in range(3)], NOW)
    return st


# --------------------------------------------------------------------------- helpers


def feed_id(st: Storage, name: str) -> int:
    return next(f.id for f in st.feed_states([name]))


def entry(key: str, text: str = STORY, *, url: str | None = None,
          published: datetime | None = NOW, title: str = "Border talks resume",
          status: str = "skipped", content_hash: str | None = None) -> NewEntry:
    url = url or f"https://site.example/{key}"
    text_hash, sig, bands = dedup.features(title, text)
    return NewEntry(
        key=key, guid=key, url=url, url_norm=dedup.normalize_url(url), title=title,
        author=None, feed_html=f"<p>{text}</p>", content_html=f"<p>{text}</p>", text=text,
        summary=text[:100], word_count=len(text.split()), language="en", categories=(),
        enclosures=(), image=None, published=published, published_raw=None, date_note=None,
        content_hash=content_hash or key, extract_status=status, text_hash=text_hash,
        signature=sig, band_keys=tuple(bands),
    )


def matcher(e: Any, candidates: Sequence[Any]) -> StoryMatch | None:
    return dedup.decide(
        url_norm=e.url_norm, canonical_norm=getattr(e, "canonical_norm", None),
        text_hash=e.text_hash, signature=e.signature, title=e.title,
        word_count=e.word_count, candidates=candidates, threshold=0.7,
    )


def poll(st: Storage, feed: str, *entries: NewEntry, now: datetime = NOW,
         match: Any = matcher, next_poll: datetime | None = None) -> list[StoredEntry]:
    return st.record_success(
        feed_id(st, feed), now=now, status=200, next_poll=next_poll or now + HOUR,
        interval=3600.0, etag=None, last_modified=None, body_hash=None, permanent_url=None,
        entries=entries, matcher=match, window_days=7,
    )


def words(n: int, seed: int) -> str:
    """A text of n words no other seed shares (distinct LSH signatures and hashes)."""
    return " ".join(f"w{seed}x{i}q{(i * 7919 + seed) % 1009}" for i in range(n))


def story_of(st: Storage, entry_id: int) -> int:
    item = next(i for i in st.items(one_per_story=False, limit=1000) if i.id == entry_id)
    assert item.story_id is not None
    return item.story_id


# --------------------------------------------------------------------------- the protocol


def test_every_protocol_method_has_a_test_here() -> None:
    names = {n for n, _ in inspect.getmembers(Storage) if not n.startswith("_")}
    tests = {n for n in globals() if n.startswith("test_")}
    missing = sorted(n for n in names if not any(t.startswith(f"test_{n}") for t in tests))
    assert not missing, f"protocol methods without a test: {missing}"


def test_backend_implements_the_protocol(storage: Storage) -> None:
    assert isinstance(storage, Storage)
    for name, proto in inspect.getmembers(Storage):
        if name.startswith("_") or isinstance(proto, property):
            continue
        impl = getattr(type(storage), name)
        assert list(inspect.signature(impl).parameters) == list(
            inspect.signature(proto).parameters), name


# --------------------------------------------------------------------------- lifecycle


def test_migrate_applies_every_migration_once(opener: Opener) -> None:
    st = opener()
    assert st.migrate() == [name for name, _ in MIGRATIONS]
    assert st.migrate() == []


def test_schema_version_counts_applied_migrations(opener: Opener) -> None:
    st = opener()
    assert st.schema_version() == 0
    st.migrate()
    assert st.schema_version() == len(MIGRATIONS)


def test_close_keeps_everything_written_and_flushes_band_keys(
        storage: Storage, opener: Opener) -> None:
    first = poll(storage, "f0", entry("a"))[0]
    # PostgreSQL writes them in the entry's transaction (several writers): none wait.
    assert storage.pending_bands == (0 if is_postgres(storage) else 1)
    storage.close()
    again = opener()
    assert again.count_entries() == 1 and again.pending_bands == 0
    # The keys the closed writer held reach the index: a near-duplicate finds the story.
    near = poll(again, "f1", entry("b", STORY + " One more sentence here."))[0]
    assert not near.story_created and story_of(again, near.id) == story_of(again, first.id)


def test_describe_lists_the_documented_tables_and_views(storage: Storage) -> None:
    objects = storage.describe()
    assert {"feeds", "entries", "stories", "items", "feed_health", "story_outlets"} <= set(
        objects)
    assert {"state", "articles_waiting", "newest_entry"} <= set(objects["feed_health"])
    assert {"feed_name", "published", "story_id"} <= set(objects["items"])


def test_integrity_check_of_a_sound_database(storage: Storage) -> None:
    poll(storage, "f0", entry("a"))
    assert storage.integrity_check() == "ok"


def test_pending_bands_counts_entries_waiting(storage: Storage) -> None:
    assert storage.pending_bands == 0
    poll(storage, "f0", entry("a"), entry("b", words(80, 2)))
    assert storage.pending_bands == (0 if is_postgres(storage) else 2)
    storage.flush_bands()
    assert storage.pending_bands == 0


def test_flush_bands_writes_every_key_and_lookups_still_match(storage: Storage) -> None:
    first = poll(storage, "f0", entry("a"))[0]
    # PostgreSQL wrote them with the entry already (pending_bands).
    assert storage.flush_bands() == (0 if is_postgres(storage) else dedup.BANDS)
    assert storage.flush_bands() == 0
    near = poll(storage, "f1", entry("b", STORY + " A spokesman added a word."))[0]
    assert story_of(storage, near.id) == story_of(storage, first.id)


# --------------------------------------------------------------------------- feeds


def test_sync_feeds_adds_changes_and_deactivates(storage: Storage) -> None:
    assert [f.name for f in storage.due_feeds(NOW)] == ["f0", "f1", "f2"]  # new: due now
    f0 = feed_id(storage, "f0")
    storage.record_failure(f0, now=NOW, kind="http", message="500", status=500,
                           next_poll=NOW + HOUR)
    storage.sync_feeds([FeedConfig(name="f0", url="https://moved.example/rss"),
                        FeedConfig(name="f1", url="https://f1.example/rss")], NOW)
    states = {f.name: f for f in storage.feed_states()}
    assert set(states) == {"f0", "f1"}  # f2 is inactive
    assert states["f0"].url == "https://moved.example/rss"
    assert states["f0"].consecutive_errors == 0 and states["f0"].next_poll == NOW
    assert storage.feed_state("f2") == "removed"
    storage.sync_feeds([FeedConfig(name="f2", url="https://f2.example/rss")], NOW)
    assert [f.name for f in storage.feed_states()] == ["f2"]


def test_feed_states_of_named_feeds(storage: Storage) -> None:
    assert [f.name for f in storage.feed_states()] == ["f0", "f1", "f2"]
    got = storage.feed_states(["f2", "f0", "nope"])
    assert [f.name for f in got] == ["f0", "f2"]
    assert got[0].fetch_url == "https://f0.example/rss" and got[0].active


def test_due_feeds_leaves_out_later_and_disabled_feeds(storage: Storage) -> None:
    poll(storage, "f0", next_poll=NOW + HOUR)
    storage.record_failure(feed_id(storage, "f1"), now=NOW, kind="gone", message="410 Gone",
                           status=410, next_poll=NOW, disable=True)
    assert [f.name for f in storage.due_feeds(NOW)] == ["f2"]
    assert [f.name for f in storage.due_feeds(NOW + 2 * HOUR)] == ["f2", "f0"]


def test_next_due_is_the_earliest_poll(storage: Storage) -> None:
    for name, hours in (("f0", 3), ("f1", 2), ("f2", 5)):
        poll(storage, name, next_poll=NOW + hours * HOUR)
    assert storage.next_due() == NOW + 2 * HOUR


def test_record_success_upserts_by_key(storage: Storage) -> None:
    stored = poll(storage, "f0", entry("a"), entry("b", words(60, 1)))
    assert [(s.key, s.is_new, s.changed) for s in stored] == [("a", True, True),
                                                              ("b", True, True)]
    again = poll(storage, "f0", entry("a"), entry("b", words(60, 1), content_hash="edited"))
    assert [(s.key, s.is_new, s.changed) for s in again] == [("a", False, False),
                                                             ("b", False, True)]
    assert again[0].id == stored[0].id and storage.count_entries() == 2
    state = storage.feed_states(["f0"])[0]
    assert state.consecutive_errors == 0 and state.next_poll == NOW + HOUR


def test_record_success_joins_and_bridges_stories(storage: Storage) -> None:
    a = poll(storage, "f0", entry("a", url="https://one.example/x"))[0]
    b = poll(storage, "f1", entry("b", words(90, 5), url="https://two.example/y"))[0]
    assert a.story_created and b.story_created
    assert story_of(storage, a.id) != story_of(storage, b.id)
    # Same URL as b and the text of a: it bridges the two stories.
    c = poll(storage, "f2", entry("c", url="https://two.example/y"))[0]
    assert not c.story_created and c.stories_merged == 1
    assert len({story_of(storage, x.id) for x in (a, b, c)}) == 1
    # Without a matcher every entry starts its own story.
    d = poll(storage, "f2", entry("d"), match=None)[0]
    assert d.story_created


def test_record_success_first_poll_leaves_undated_entries_undated(storage: Storage) -> None:
    first = poll(storage, "f0", entry("a", published=None))[0]
    later = poll(storage, "f0", entry("b", words(50, 3), published=None), now=NOW + HOUR)[0]
    items = {i.id: i for i in storage.items(one_per_story=False)}
    assert items[first.id].published is None
    assert items[later.id].published == NOW + HOUR


def test_record_failure_counts_errors_and_disables(storage: Storage) -> None:
    f1 = feed_id(storage, "f1")
    for n in (1, 2):
        storage.record_failure(f1, now=NOW, kind="http", message="503", status=503,
                               next_poll=NOW + n * HOUR)
    state = storage.feed_states(["f1"])[0]
    assert state.consecutive_errors == 2 and state.next_poll == NOW + 2 * HOUR
    assert storage.feed_state("f1") == "failing"
    storage.record_failure(f1, now=NOW, kind="gone", message="410 Gone", status=410,
                           next_poll=NOW, disable=True)
    assert storage.feed_states(["f1"])[0].disabled_reason == "410 Gone"
    assert storage.feed_state("f1") == "disabled"


# --------------------------------------------------------------------------- entries, stories


def test_entry_feed_html_keeps_the_feeds_content(storage: Storage) -> None:
    e = poll(storage, "f0", entry("a", "Teaser text only.", status="pending"))[0]
    storage.record_article(e.id, now=NOW, status="done", method="test", error=None,
                           content_html="<p>Full article.</p>", text="Full article.",
                           summary="Full article.", word_count=2)
    assert storage.entry_feed_html(e.id) == ("<p>Teaser text only.</p>", "Border talks resume")
    assert storage.entry_feed_html(9999) == ("", "")


def test_count_entries(storage: Storage) -> None:
    assert storage.count_entries() == 0
    poll(storage, "f0", entry("a"), entry("b", words(40, 9)))
    assert storage.count_entries() == 2


def test_rematch_entry_moves_a_lone_entry_into_the_known_story(storage: Storage) -> None:
    a = poll(storage, "f0", entry("a"))[0]
    b = poll(storage, "f1", entry("b", "Short teaser.", status="pending"))[0]
    assert story_of(storage, a.id) != story_of(storage, b.id)
    # Still the teaser: nothing to match.
    assert not storage.rematch_entry(b.id, matcher, NOW, 7)
    text_hash, sig, bands = dedup.features("Border talks resume", STORY)
    storage.record_article(b.id, now=NOW, status="done", method="test", error=None,
                           content_html=f"<p>{STORY}</p>", text=STORY, summary=STORY[:100],
                           word_count=len(STORY.split()), text_hash=text_hash,
                           signature=sig, band_keys=bands)
    assert storage.rematch_entry(b.id, matcher, NOW, 7)
    assert story_of(storage, b.id) == story_of(storage, a.id)
    assert not storage.rematch_entry(b.id, matcher, NOW, 7)  # no longer alone


def test_one_poll_joining_two_stories_refreshes_both(storage: Storage) -> None:
    """A poll whose new entries join two stories and start a third: each joined story is
    recounted and re-picks its representative, each joining entry's provisional story is
    gone (PostgreSQL deletes and refreshes them once per poll, after its decisions)."""
    a, b = poll(storage, "f0", entry("a"), entry("b", OTHER, url="https://site.example/b",
                                                   title="Electoral code amended"))
    fuller_a = entry("a2", STORY + " A spokesman added a word.", url="https://two.example/a")
    fuller_b = entry("b2", OTHER + " Observers welcomed the vote.",
                     url="https://two.example/b", title="Electoral code amended")
    lone = entry("c2", "An unrelated note about the weather in the mountains this week.",
                 url="https://two.example/c", title="Weather")
    joined = poll(storage, "f1", fuller_b, lone, fuller_a, now=NOW + HOUR)
    assert story_of(storage, joined[2].id) == story_of(storage, a.id)
    assert story_of(storage, joined[0].id) == story_of(storage, b.id)
    assert joined[1].story_created and not joined[0].story_created
    for first, second in ((a, joined[2]), (b, joined[0])):
        row, members = storage.story(story_of(storage, first.id))
        assert row is not None and row["entry_count"] == 2 and row["outlet_count"] == 2
        assert row["representative_id"] == second.id  # the fullest early version
        assert [m["id"] for m in members] == [first.id, second.id]
    # Three stories, and no provisional story left behind (ids are drawn in order from 1
    # on both backends: five at most were ever made here).
    assert len({i.story_id for i in storage.items(one_per_story=False, limit=1000)}) == 3
    assert sum(storage.story(n)[0] is not None for n in range(1, 50)) == 3


def test_story_gives_the_row_and_its_members(storage: Storage) -> None:
    a = poll(storage, "f0", entry("a"))[0]
    b = poll(storage, "f1", entry("b", STORY + " And a closing line."), now=NOW + HOUR)[0]
    row, members = storage.story(story_of(storage, a.id))
    assert row is not None and row["entry_count"] == 2 and row["outlet_count"] == 2
    assert row["representative_id"] == b.id  # the fullest early version
    assert [m["id"] for m in members] == [a.id, b.id]
    assert [m["feed_name"] for m in members] == ["f0", "f1"]
    assert members[1]["match_reason"] in ("near", "text")
    assert storage.story(9999) == (None, [])


def test_join_links_either_order_translation_and_edition(storage: Storage) -> None:
    from dataclasses import replace
    # The Russian version names the Armenian one (one direction only); the Armenian one
    # arrives first, with no link of its own.
    hy = poll(storage, "f0", replace(entry("hy", words(60, 11), url="https://news.example/hy/a/1"),
                                     language="hy-AM"))[0]
    ru_entry = replace(entry("ru", words(60, 12), url="https://news.example/ru/a/1"),
                       language="ru", links=(("https://news.example/hy/a/1", "hy", "hreflang"),))
    ru = poll(storage, "f1", ru_entry, now=NOW + HOUR)[0]
    assert ru.stories_merged == 1  # record_success joins as it stores
    assert story_of(storage, hy.id) == story_of(storage, ru.id)
    # A page read later names a regional edition on another host, same language.
    gb = poll(storage, "f2", replace(entry("gb", words(60, 13),
                                           url="https://edition.news.example/hy/a/1"),
                                     language="hy"))[0]
    assert story_of(storage, gb.id) != story_of(storage, hy.id)
    storage.record_article(hy.id, now=NOW, status="feed", method="t", error=None,
                           links=[("https://edition.news.example/hy/a/1", "hy", "hreflang")],
                           page_language="hy")
    assert storage.join_links(hy.id, NOW) == 1
    assert storage.join_links(hy.id, NOW) == 0  # already one story
    members = {m["entry_id"]: m for m in storage.story_members(story_of(storage, hy.id))}
    assert set(members) == {hy.id, ru.id, gb.id}
    assert members[hy.id]["match_reason"] == "first"  # the oldest story survives
    assert members[ru.id]["match_reason"] == "translation"
    assert members[gb.id]["match_reason"] == "edition"
    assert members[hy.id]["language"] == "hy"


def test_join_links_from_a_feed_that_adds_them_to_an_unchanged_entry(
        storage: Storage) -> None:
    from dataclasses import replace
    ka = poll(storage, "f0", entry("ka", words(60, 31), url="https://g.example/ka/a/1"))[0]
    ru = replace(entry("ru", words(60, 32), url="https://g.example/ru/a/1"), language="ru")
    first = poll(storage, "f1", ru)[0]
    assert story_of(storage, first.id) != story_of(storage, ka.id)
    again = poll(storage, "f1", replace(ru, links=(("https://g.example/ka/a/1", "ka",
                                                    "hreflang"),)), now=NOW + HOUR)[0]
    assert not again.changed and again.stories_merged == 1
    assert story_of(storage, again.id) == story_of(storage, ka.id)


def test_join_links_from_a_stored_entry_to_a_new_one_of_the_same_poll(
        storage: Storage) -> None:
    """A feed adds to a stored entry a link to a version new in the same poll: one story,
    whichever way the new entry's own lookup goes (on PostgreSQL the new entry's
    provisional story is merged away before the entry is decided)."""
    from dataclasses import replace
    ru = replace(entry("ru", words(60, 41), url="https://h.example/ru/a/1"), language="ru")
    first = poll(storage, "f0", ru)[0]
    ka = replace(entry("ka", words(60, 42), url="https://h.example/ka/a/1"), language="ka")
    linked = replace(ru, links=(("https://h.example/ka/a/1", "ka", "hreflang"),))
    # Its duplicate elsewhere, so that the new entry also joins a story by its text.
    other = poll(storage, "f1", replace(ka, key="ka-f1", guid="ka-f1",
                                        url="https://mirror.example/ka/1",
                                        url_norm="https://mirror.example/ka/1"))[0]
    second = poll(storage, "f0", linked, ka, now=NOW + HOUR)
    assert second[0].id == first.id and not second[0].changed
    story = story_of(storage, first.id)
    assert story_of(storage, second[1].id) == story == story_of(storage, other.id)
    assert {m["entry_id"] for m in storage.story_members(story)} == {
        first.id, second[1].id, other.id}
    # And with nothing else to join: the two versions in one story.
    hy = replace(entry("hy", words(60, 43), url="https://h.example/hy/a/2"), language="hy")
    en = replace(entry("en", words(60, 44), url="https://h.example/en/a/2"), language="en")
    alone = poll(storage, "f2", en, now=NOW + HOUR)[0]
    third = poll(storage, "f2", replace(en, links=(("https://h.example/hy/a/2", "hy",
                                                    "hreflang"),)), hy, now=NOW + 2 * HOUR)
    assert third[0].id == alone.id and third[0].stories_merged == 1
    assert story_of(storage, third[1].id) == story_of(storage, alone.id)
    assert len(storage.story_members(story_of(storage, alone.id))) == 2


def test_join_links_same_language_same_host_does_not_join(storage: Storage) -> None:
    from dataclasses import replace
    a = poll(storage, "f0", entry("a", words(60, 21), url="https://n.example/en/a/1"))[0]
    b = poll(storage, "f1", replace(entry("b", words(60, 22), url="https://n.example/en/a/2"),
                                    links=(("https://n.example/en/a/1", "en", "hreflang"),)))[0]
    assert story_of(storage, a.id) != story_of(storage, b.id)
    assert storage.join_links(b.id, NOW) == 0


def test_story_members_one_row_per_member(storage: Storage) -> None:
    a = poll(storage, "f0", entry("a"))[0]
    b = poll(storage, "f1", entry("b", STORY + " Plus one."))[0]
    rows = storage.story_members(story_of(storage, a.id))
    assert [(r["entry_id"], r["feed_name"], r["language"]) for r in rows] == [
        (a.id, "f0", "en"), (b.id, "f1", "en")]
    assert rows[0]["match_reason"] == "first" and rows[1]["match_reason"] in ("text", "near")
    assert storage.story_members(9999) == []


def test_story_member_ids(storage: Storage) -> None:
    a = poll(storage, "f0", entry("a"))[0]
    b = poll(storage, "f1", entry("b", STORY + " Plus one."))[0]
    c = poll(storage, "f2", entry("c", words(70, 4)))[0]
    assert storage.story_member_ids([story_of(storage, a.id)]) == {a.id, b.id}
    assert storage.story_member_ids([story_of(storage, c.id), 9999]) == {c.id}
    assert storage.story_member_ids([]) == set()


def test_output_ids_are_fixed_at_first_publish(storage: Storage) -> None:
    ids = storage.output_ids({"all": "https://x/all.atom"}, NOW)
    assert ids["all"].startswith("urn:uuid:")  # a new store: no legacy id
    more = storage.output_ids({"all": "https://elsewhere/all.atom", "news": "n"}, NOW)
    assert more["all"] == ids["all"] and more["news"].startswith("urn:uuid:")
    assert more["news"] != more["all"]


# --------------------------------------------------------------------------- documents


def doc(name: str, body: bytes, when: datetime = NOW) -> Document:
    return Document(name, document_etag(body), document_type(name), when, len(body), body)


def test_write_documents_stores_and_replaces_in_one_transaction(opener: Opener) -> None:
    st = opener()
    st.migrate()
    st.write_documents([doc("all.atom", b"<feed/>"), doc(".all.archive.json", b"{}")])
    st.write_documents([doc("all.atom", b"<feed>2</feed>", NOW + HOUR),
                        doc("index.html", b"\x00\xff<html>")], remove=[".all.archive.json"])
    reader = opener(readonly=True)
    got = reader.document("all.atom")
    assert got == doc("all.atom", b"<feed>2</feed>", NOW + HOUR)
    assert got is not None and got.published == NOW + HOUR
    assert got.content_type.startswith("application/atom+xml")
    assert reader.document(".all.archive.json") is None
    # Bytes come back exactly (binary safe).
    assert (reader.document("index.html") or doc("x", b"")).body == b"\x00\xff<html>"
    # A document without a body is refused, and nothing of that call is written.
    with pytest.raises(ValueError):
        st.write_documents([doc("news.rss", b"<rss/>"),
                            Document("bad.rss", "x", "text/plain", NOW, 0)])
    assert reader.document("news.rss") is None


def test_document_of_an_unknown_name_is_none(storage: Storage) -> None:
    assert storage.document("nothing.atom") is None


def test_document_index_lists_without_bodies_by_name(storage: Storage) -> None:
    assert storage.document_index() == []
    storage.write_documents([doc("b.rss", b"bb"), doc("A.atom", b"a"), doc("a.json", b"{}")])
    index = storage.document_index()
    assert [d.name for d in index] == ["A.atom", "a.json", "b.rss"]
    assert all(d.body is None for d in index)
    assert index[2] == Document("b.rss", document_etag(b"bb"), document_type("b.rss"), NOW, 2)


def test_remove_documents_counts_those_there_were(storage: Storage) -> None:
    storage.write_documents([doc("a.atom", b"a"), doc("b.atom", b"b")])
    assert storage.remove_documents(["a.atom", "zz.atom"]) == 1
    assert storage.remove_documents([]) == 0
    assert [d.name for d in storage.document_index()] == ["b.atom"]


# --------------------------------------------------------------------------- articles


def test_backlog_newest_first_without_those_waiting_to_retry(storage: Storage) -> None:
    old = poll(storage, "f0", entry("old", words(30, 1), status="pending"))[0]
    new = poll(storage, "f1", entry("new", words(30, 2), status="pending"),
               now=NOW + HOUR)[0]
    poll(storage, "f2", entry("done", words(30, 3), status="skipped"))
    assert [b.id for b in storage.backlog(10, NOW + HOUR)] == [new.id, old.id]
    assert [b.id for b in storage.backlog(1, NOW + HOUR)] == [new.id]
    storage.record_article(new.id, now=NOW, status="pending", method=None, error="503",
                           retry_at=NOW + 3 * HOUR)
    assert [b.id for b in storage.backlog(10, NOW + HOUR)] == [old.id]
    later = storage.backlog(10, NOW + 3 * HOUR)
    assert [b.id for b in later] == [new.id, old.id] and later[0].attempts == 1
    assert later[0].feed_name == "f1" and later[0].url == "https://site.example/new"


def test_sync_feeds_from_two_connections_at_once(opener: Opener) -> None:
    import threading

    first = opener()
    first.migrate()
    second = opener()
    feeds = [FeedConfig(name=f"s{n}", url=f"https://s{n}.example/rss") for n in range(20)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def sync(st: Storage) -> None:
        barrier.wait()
        try:
            st.sync_feeds(feeds, NOW)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sync, args=(st,)) for st in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert [f.name for f in first.feed_states()] == sorted(f.name for f in feeds)


def test_backlog_of_one_feed(storage: Storage) -> None:
    a = poll(storage, "f0", entry("a", words(30, 1), status="pending"))[0]
    b = poll(storage, "f1", entry("b", words(30, 2), status="pending"), now=NOW + HOUR)[0]
    assert [x.id for x in storage.backlog(10, NOW + HOUR, feed="f0")] == [a.id]
    assert [x.id for x in storage.backlog(10, NOW + HOUR, feed="f1")] == [b.id]
    assert storage.backlog(10, NOW + HOUR, feed="f2") == []
    storage.record_article(a.id, now=NOW, status="pending", method=None, error="503",
                           retry_at=NOW + 3 * HOUR)
    assert storage.backlog(10, NOW + HOUR, feed="f0") == []  # its retry time has not come
    assert [x.id for x in storage.backlog(10, NOW + 3 * HOUR, feed="f0")] == [a.id]


def test_record_article_outcomes(storage: Storage) -> None:
    e = poll(storage, "f0", entry("a", "Teaser.", status="pending"))[0]
    with pytest.raises(StoreError):
        storage.record_article(e.id, now=NOW, status="pending", method=None, error="x")
    for _ in range(3):
        storage.record_article(e.id, now=NOW, status="failed", method=None, error="404")
    assert storage.feed_state("f0") == "degraded"
    storage.record_article(e.id, now=NOW, status="done", method="test", error=None,
                           content_html="<p>The whole article.</p>", text="The whole article.",
                           summary="The whole article.", word_count=3,
                           page=("https://site.example/a", None, "utf-8", b"<html>x</html>"))
    assert storage.feed_state("f0") == "ok"
    item = storage.items(one_per_story=False)[0]
    assert item.text == "The whole article." and item.word_count == 3
    assert storage.backlog_size() == 0


def test_stored_pages_round_trip(storage: Storage) -> None:
    a = poll(storage, "f0", entry("a", "One.", status="pending"))[0]
    b = poll(storage, "f1", entry("b", "Two.", status="pending"))[0]
    for e, body in ((a, b"<html>one</html>"), (b, b"<html>two</html>")):
        storage.record_article(e.id, now=NOW, status="feed", method="test", error=None,
                               page=(f"https://p/{e.id}", None, "utf-8", body))
    assert list(storage.stored_pages()) == [
        (a.id, f"https://p/{a.id}", None, "utf-8", b"<html>one</html>", "f0"),
        (b.id, f"https://p/{b.id}", None, "utf-8", b"<html>two</html>", "f1"),
    ]
    assert [p[0] for p in storage.stored_pages(feed="f1")] == [b.id]
    assert list(storage.stored_pages(since=NOW + HOUR)) == []


def test_prune_pages_forgets_old_pages(storage: Storage) -> None:
    e = poll(storage, "f0", entry("a", "One.", status="pending"))[0]
    storage.record_article(e.id, now=NOW, status="feed", method="t", error=None,
                           page=("https://p", None, None, b"body"))
    assert storage.prune_pages(NOW) == 0
    assert storage.prune_pages(NOW + HOUR) == 1
    assert list(storage.stored_pages()) == [] and storage.count_entries() == 1


# --------------------------------------------------------------------------- reads


def test_items_one_per_story_with_outlets_newest_first(storage: Storage) -> None:
    a = poll(storage, "f0", entry("a"), now=NOW)[0]
    b = poll(storage, "f1", entry("b", STORY + " Extra words here for b.",
                                  published=NOW + HOUR))[0]
    u = poll(storage, "f2", entry("u", words(50, 9), published=None))[0]  # first poll: ''
    c = poll(storage, "f2", entry("c", words(50, 8), published=NOW + 2 * HOUR))[0]
    items = storage.items()
    assert [i.id for i in items] == [c.id, b.id, u.id]  # undated last; b represents a
    assert [o.feed_name for o in items[1].outlets] == ["f0"]
    # Published under the id fixed by the story's first entry, whoever represents it now.
    assert items[1].uid == entry_uid("f0", "a") and items[1].feed_name == "f1"
    everything = storage.items(one_per_story=False)
    assert [i.id for i in everything] == [c.id, b.id, a.id, u.id]
    page = storage.items(one_per_story=False, limit=2,
                         before=(NOW.strftime("%Y-%m-%dT%H:%M:%SZ"), a.id + 1))
    assert [i.id for i in page] == [a.id, u.id]


def test_iter_items_pages_through_every_story(storage: Storage) -> None:
    stored = [poll(storage, "f0", entry(f"k{n}", words(40, n), published=NOW + n * HOUR))[0]
              for n in range(5)]
    got = [i.id for i in storage.iter_items(batch=2)]
    assert got == [s.id for s in reversed(stored)]
    assert len(list(storage.iter_items(batch=2, max_items=3))) == 3


def test_search_finds_substrings(storage: Storage) -> None:
    a = poll(storage, "f0", entry("a", "The harbour of Zanzibarquux reopened.",
                                  title="Harbour news"))[0]
    poll(storage, "f1", entry("b", words(40, 3)))
    rows = storage.search("zibarqu")
    assert [r["id"] for r in rows] == [a.id] and rows[0]["feed_name"] == "f0"
    assert [r["id"] for r in storage.search("Ha")] == [a.id]  # under 3 characters
    assert storage.search("nothing like this") == []


def test_feed_health_decodes_its_columns(storage: Storage) -> None:
    storage.record_success(
        feed_id(storage, "f0"), now=NOW, status=200, next_poll=NOW + HOUR, interval=60.0,
        etag=None, last_modified=None, body_hash=None, permanent_url=None,
        title="Feed Zero", warnings=["odd date"], entries=[entry("a")])
    health = {h["name"]: h for h in storage.feed_health()}
    assert list(health) == ["f0", "f1", "f2"]
    f0 = health["f0"]
    assert f0["warnings"] == ["odd date"] and f0["active"] is True
    assert f0["title"] == "Feed Zero" and f0["entries"] == 1 and f0["state"] == "ok"


def test_feed_metrics(storage: Storage) -> None:
    poll(storage, "f0")
    storage.record_failure(feed_id(storage, "f1"), now=NOW, kind="http", message="500",
                           status=500, next_poll=NOW)
    metrics = {m.name: m for m in storage.feed_metrics()}
    assert metrics["f0"].state == "ok" and metrics["f0"].last_success == NOW.timestamp()
    assert metrics["f1"].state == "failing" and metrics["f1"].consecutive_errors == 1
    assert metrics["f2"].last_success is None


def test_feed_state_counts_has_every_state(storage: Storage) -> None:
    storage.record_failure(feed_id(storage, "f1"), now=NOW, kind="http", message="500",
                           status=500, next_poll=NOW)
    counts = storage.feed_state_counts()
    assert list(counts) == list(FEED_STATES)
    assert counts == {"ok": 2, "degraded": 0, "failing": 1, "disabled": 0, "removed": 0}
    assert storage.feed_state_counts(storage.feed_health()) == counts


def test_feed_state_of_one_feed(storage: Storage) -> None:
    assert storage.feed_state("f0") == "ok"
    assert storage.feed_state("never configured") is None


def test_backlog_size_counts_retries_too(storage: Storage) -> None:
    a, b = poll(storage, "f0", entry("a", words(30, 1), status="pending"),
                entry("b", words(30, 2), status="pending"))
    assert storage.backlog_size() == 2
    storage.record_article(a.id, now=NOW, status="pending", method=None, error="503",
                           retry_at=NOW + HOUR)
    assert storage.backlog_size() == 2
    storage.record_article(b.id, now=NOW, status="failed", method=None, error="404")
    assert storage.backlog_size() == 1


def test_backlog_retrying(storage: Storage) -> None:
    a = poll(storage, "f0", entry("a", words(30, 1), status="pending"))[0]
    assert storage.backlog_retrying(NOW) == 0
    storage.record_article(a.id, now=NOW, status="pending", method=None, error="503",
                           retry_at=NOW + HOUR)
    assert storage.backlog_retrying(NOW) == 1
    assert storage.backlog_retrying(NOW + 2 * HOUR) == 0


def test_activity_per_day_and_last_24_hours(storage: Storage) -> None:
    poll(storage, "f0", entry("a", published=NOW - HOUR))
    poll(storage, "f1", entry("b", STORY + " More.", published=NOW - 2 * HOUR))
    poll(storage, "f2", entry("c", words(40, 1), published=NOW - timedelta(days=2)))
    act = storage.activity(NOW, days=3)
    assert act["entries_24h"] == 2 and act["stories_24h"] == 1
    assert act["entries_per_day"] == [
        {"day": "2026-11-22", "entries": 1}, {"day": "2026-11-23", "entries": 0},
        {"day": "2026-11-24", "entries": 2}]


def test_status_document(storage: Storage) -> None:
    poll(storage, "f0", entry("a", words(30, 1), status="pending"), now=NOW - HOUR)
    doc = storage.status(NOW)
    assert doc["backlog"] == 1 and doc["backlog_retrying"] == 0
    assert doc["states"]["ok"] == 3 and [f["name"] for f in doc["feeds"]] == ["f0", "f1", "f2"]
    assert doc["entries_24h"] == 1 and len(doc["entries_per_day"]) == 30


# --------------------------------------------------------------------------- retention, upkeep


def _old_and_new(storage: Storage) -> tuple[list[StoredEntry], list[StoredEntry]]:
    old = [poll(storage, "f0", entry(f"o{n}", words(150, n),
                                     published=NOW - timedelta(days=30, hours=n)))[0]
           for n in range(30)]
    new = [poll(storage, "f1", entry(f"n{n}", words(150, 100 + n), published=NOW))[0]
           for n in range(3)]
    return old, new


def test_prune_by_age_with_protection_and_dry_run(storage: Storage) -> None:
    old, new = _old_and_new(storage)
    dry = storage.prune(now=NOW, entry_retention=10 * DAY, dry_run=True)
    assert dry.dry_run and dry.entries == 30 and storage.count_entries() == 33
    report = storage.prune(now=NOW, entry_retention=10 * DAY, protect={old[0].id})
    assert report.entries == 29 and report.protected == 1 and report.by_feed == (("f0", 29),)
    assert storage.count_entries() == 4 and storage.pending_bands == 0
    # A feed listing a pruned entry again does not bring it back.
    assert poll(storage, "f0", entry("o5", words(150, 5))) == []
    kept = storage.prune(now=NOW, entry_retention=0,
                         feeds=[FeedConfig(name="f1", url="u", max_entries=1)])
    assert kept.entries == 2 and storage.count_entries() == 2


def test_prune_forgets_the_links_of_pruned_entries(storage: Storage) -> None:
    from dataclasses import replace
    old = NOW - timedelta(days=30)
    a = poll(storage, "f0", replace(entry("a", words(60, 41), url="https://x.example/hy/1",
                                          published=old),
                                    links=(("https://x.example/ru/1", "ru", "hreflang"),)),
             now=old)[0]
    storage.record_article(a.id, now=old, status="feed", method="t", error=None,
                           links=[("https://x.example/ka/1", "ka", "hreflang")])
    report = storage.prune(now=NOW, entry_retention=10 * DAY)
    assert report.entries == 1 and storage.count_entries() == 0
    # The versions it named arrive later: nothing is left for them to join.
    ru = poll(storage, "f1", replace(entry("ru", words(60, 42), url="https://x.example/ru/1"),
                                     language="ru"))[0]
    assert ru.story_created and ru.stories_merged == 0
    assert storage.integrity_check() == "ok"


def test_optimize_search_returns_the_pruned_rows_space(storage: Storage) -> None:
    _old_and_new(storage)
    assert storage.optimize_search() == 0  # nothing pruned yet
    storage.prune(now=NOW, entry_retention=10 * DAY)
    assert storage.optimize_search() > 0
    assert storage.optimize_search() == 0
    assert storage.search("w3x1q") == [] and storage.integrity_check() == "ok"


def test_checkpoint_resets_the_log_without_readers(storage: Storage, opener: Opener) -> None:
    poll(storage, "f0", entry("a"))
    assert storage.checkpoint() is True
    reader = opener(readonly=True)
    assert reader.checkpoint() in (True, False)  # a reader may ask; it never waits


def test_fold_wal_truncates_the_log(storage: Storage) -> None:
    poll(storage, "f0", entry("a"))
    # PostgreSQL's server folds its own log: this store counts none (always 0).
    assert storage.disk_usage()[1] > 0 or is_postgres(storage)
    storage.fold_wal()
    assert storage.disk_usage()[1] == 0


def test_size_is_database_and_log(storage: Storage) -> None:
    poll(storage, "f0", entry("a"))
    assert storage.size() == sum(storage.disk_usage()) > 0


def test_disk_usage_grows_with_writes(storage: Storage) -> None:
    storage.fold_wal()
    before = storage.disk_usage()
    _old_and_new(storage)
    storage.fold_wal()
    assert storage.disk_usage()[0] > before[0]


def test_page_size(storage: Storage) -> None:
    size = storage.page_size()
    assert size >= 512 and size & (size - 1) == 0


def test_auto_vacuum_of_a_new_store_is_incremental(storage: Storage) -> None:
    assert storage.auto_vacuum() == "incremental"


def test_vacuum_compacts_and_keeps_the_data(storage: Storage) -> None:
    _old_and_new(storage)
    storage.prune(now=NOW, entry_retention=10 * DAY)
    before = storage.size()
    storage.vacuum()
    assert storage.size() < before and storage.count_entries() == 3
    assert storage.auto_vacuum() == "incremental" and storage.integrity_check() == "ok"


def test_incremental_vacuum_gives_pages_back(storage: Storage) -> None:
    _old_and_new(storage)
    storage.prune(now=NOW, entry_retention=10 * DAY)
    if is_postgres(storage):
        # A plain VACUUM: pages cannot be counted out one by one; only empty pages at a
        # table's end go back (here the pruned rows are at its start: none), the rest is
        # reused; a second VACUUM finds nothing more.
        assert storage.incremental_vacuum(1) >= 0
        assert storage.incremental_vacuum() == 0
        return
    assert storage.incremental_vacuum(1) == 1
    assert storage.incremental_vacuum() > 0
    assert storage.incremental_vacuum() == 0


def test_write_problem_none_for_a_writer_and_said_for_a_reader(
        storage: Storage, opener: Opener) -> None:
    assert storage.write_problem() is None
    problem = opener(readonly=True).write_problem()
    assert problem is not None and "read-only" in problem


def test_near_duplicates_in_one_poll_the_oldest_starts_the_story(storage: Storage) -> None:
    """Two versions of one story in one poll: stored oldest first (the feed lists newest
    first), the oldest starts the story and the newer one joins it, never the other way
    round (on PostgreSQL both are inserted before either is decided)."""
    newer = entry("newer", STORY + " A later paragraph.", url="https://site.example/2")
    older = entry("older", STORY, url="https://site.example/1")
    stored = poll(storage, "f0", newer, older)
    story = story_of(storage, stored[1].id)
    assert story_of(storage, stored[0].id) == story
    assert stored[1].story_created and not stored[0].story_created
    reasons = {m["entry_id"]: m["match_reason"] for m in storage.story_members(story)}
    assert reasons[stored[1].id] == "first" and reasons[stored[0].id] != "first"
