"""Story assignment with concurrent writers on PostgreSQL: two OS processes, each with its
own store, store near-duplicates of one story at the same instant (a barrier releases
them), round after round; every round must end with ONE story holding both entries.

Without serialisation of the lookup-and-assign step each transaction finds no candidate
(the other's entry is not committed yet) and both create a story."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

import pytest

from aggregator import dedup
from aggregator.models import FeedConfig
from aggregator.store import open_storage

from .test_storage import NOW, entry, feed_id, matcher, poll, words

ROUNDS = 40
WRITERS = 2


def _text(round_: int, writer: int) -> str:
    # One story per round (its own words), each writer's version a little different.
    return words(120, 5000 + round_) + f" Writer {writer} adds a closing remark."


def _writer(url: str, writer: int, barrier: Any, results: Any) -> None:
    st = open_storage(url)
    try:
        fid = feed_id(st, f"w{writer}")
        for r in range(ROUNDS):
            e = entry(f"r{r}-w{writer}", _text(r, writer),
                      url=f"https://w{writer}.example/r{r}")
            barrier.wait(timeout=60)
            stored = st.record_success(
                fid, now=NOW, status=200, next_poll=NOW, interval=3600.0, etag=None,
                last_modified=None, body_hash=None, permanent_url=None, entries=[e],
                matcher=matcher, window_days=7)
            results.put((r, writer, stored[0].id))
    finally:
        st.close()


def test_near_duplicates_stored_at_once_by_two_processes_end_in_one_story(
        postgres_url: str) -> None:
    st = open_storage(postgres_url)
    st.migrate()
    st.sync_feeds([FeedConfig(name=f"w{n}", url=f"https://w{n}.example/rss")
                   for n in range(WRITERS)], NOW)
    # The story policy itself joins the two versions (the race is all the test is about).
    first = poll(st, "w0", entry("check-0", _text(-1, 0)))[0]
    second = poll(st, "w1", entry("check-1", _text(-1, 1)))[0]
    assert not second.story_created and second.id != first.id

    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(WRITERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(postgres_url, w, barrier, results))
             for w in range(WRITERS)]
    for p in procs:
        p.start()
    ids: dict[int, list[int]] = {}
    for _ in range(ROUNDS * WRITERS):
        r, _w, entry_id = results.get(timeout=120)
        ids.setdefault(r, []).append(entry_id)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    stories = {i.id: i.story_id for i in st.items(one_per_story=False, limit=10_000)}
    split = sorted(r for r, members in ids.items()
                   if len({stories[i] for i in members}) != 1)
    assert len(ids) == ROUNDS and all(len(m) == WRITERS for m in ids.values())
    assert split == [], f"{len(split)} of {ROUNDS} rounds ended in two stories: {split}"
    st.close()


def _article_writer(url: str, writer: int, teasers: list[int], barrier: Any,
                    results: Any) -> None:
    """Writer 0 stores each round's article over its teaser and rematches it (the article
    path: record_article, rematch_entry); writer 1 polls a new entry with that article's
    text at the same instant."""
    st = open_storage(url)
    try:
        fid = feed_id(st, f"w{writer}")
        for r, teaser in enumerate(teasers):
            text = _text(100 + r, writer)
            barrier.wait(timeout=60)
            if writer == 0:
                text_hash, sig, bands = dedup.features("Border talks resume", text)
                st.record_article(teaser, now=NOW, status="done", method="test", error=None,
                                  content_html=f"<p>{text}</p>", text=text,
                                  summary=text[:100], word_count=len(text.split()),
                                  text_hash=text_hash, signature=sig, band_keys=bands)
                st.rematch_entry(teaser, matcher, NOW, 7)
                results.put((r, writer, teaser))
            else:
                e = entry(f"a{r}", text, url=f"https://w1.example/a{r}")
                stored = st.record_success(
                    fid, now=NOW, status=200, next_poll=NOW, interval=3600.0, etag=None,
                    last_modified=None, body_hash=None, permanent_url=None, entries=[e],
                    matcher=matcher, window_days=7)
                results.put((r, writer, stored[0].id))
    finally:
        st.close()


def test_an_article_and_a_poll_of_its_text_at_once_end_in_one_story(
        postgres_url: str) -> None:
    st = open_storage(postgres_url)
    st.migrate()
    st.sync_feeds([FeedConfig(name=f"w{n}", url=f"https://w{n}.example/rss")
                   for n in range(WRITERS)], NOW)
    rounds = ROUNDS // 2
    # Teasers that share nothing with their article to come.
    teasers = [poll(st, "w0", entry(f"t{r}", words(30, 9000 + r), title=f"Teaser {r}",
                                    url=f"https://w0.example/t{r}"))[0].id
               for r in range(rounds)]
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(WRITERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=_article_writer,
                         args=(postgres_url, w, teasers, barrier, results))
             for w in range(WRITERS)]
    for p in procs:
        p.start()
    ids: dict[int, list[int]] = {}
    for _ in range(rounds * WRITERS):
        r, _w, entry_id = results.get(timeout=120)
        ids.setdefault(r, []).append(entry_id)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    stories = {i.id: i.story_id for i in st.items(one_per_story=False, limit=10_000)}
    split = sorted(r for r, members in ids.items()
                   if len({stories[i] for i in members}) != 1)
    assert split == [], f"{len(split)} of {rounds} rounds ended in two stories: {split}"
    st.close()


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
