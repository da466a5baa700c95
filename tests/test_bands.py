"""The store's plain parts, without a database: the write-behind band buffer and the story
decision (policy over candidates)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from aggregator.models import Candidate, StoryMatch
from aggregator.store import (
    BandBuffer,
    StoryDecision,
    decide_story,
    pack_bands,
    pick_representative,
    unpack_bands,
)

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def test_pack_and_unpack_bands_round_trip_signed_keys() -> None:
    keys = [0, 1, -1, 2**63 - 1, -(2**63)]
    assert unpack_bands(pack_bands(keys)) == keys
    assert pack_bands([]) is None and unpack_bands(None) == []


def test_buffer_finds_every_entry_sharing_a_key() -> None:
    buf = BandBuffer()
    buf.stage(1, [10, 11])
    buf.stage(2, [11, 12])  # shares 11 with entry 1
    buf.stage(3, [13])
    assert len(buf) == 3 and 2 in buf and 4 not in buf
    assert buf.rows == 4  # distinct keys
    assert buf.ids_for([11]) == {1, 2}
    assert buf.ids_for([12, 13, 99]) == {2, 3}
    assert sorted(buf.pairs()) == [(10, 1), (11, 1), (11, 2), (12, 2), (13, 3)]
    assert buf.keys_of(2) == (11, 12) and buf.keys_of(9) == ()


def test_unstage_hands_a_shared_key_to_the_next_entry() -> None:
    buf = BandBuffer()
    buf.stage(1, [10, 11])
    buf.stage(2, [11])
    buf.stage(3, [11])
    buf.unstage(1)
    assert buf.ids_for([11]) == {2, 3} and buf.ids_for([10]) == set()
    buf.unstage(3)
    assert buf.ids_for([11]) == {2}
    assert sorted(buf.pairs()) == [(11, 2)]
    buf.unstage(2)
    assert len(buf) == 0 and list(buf.pairs()) == [] and buf.rows == 0


def test_rollback_forgets_only_the_open_transactions_entries() -> None:
    buf = BandBuffer()
    buf.stage(1, [10])
    buf.commit()
    buf.stage(2, [10, 20])
    buf.rollback()
    assert 1 in buf and 2 not in buf
    assert buf.ids_for([10, 20]) == {1}
    buf.rollback()  # nothing staged since: nothing to forget
    assert 1 in buf


def test_clear_empties_the_buffer() -> None:
    buf = BandBuffer()
    buf.stage(1, [10])
    buf.stage(2, [10])
    buf.clear()
    assert len(buf) == 0 and buf.ids_for([10]) == set() and list(buf.pairs()) == []


def cand(entry_id: int, story_id: int | None) -> Candidate:
    return Candidate(entry_id=entry_id, story_id=story_id, feed_name="f", url_norm=None,
                     text_hash=None, signature=None, title="t", published=NOW,
                     word_count=10, canonical_norm=None)


def test_decide_story_picks_the_match_and_the_stories_it_bridges() -> None:
    calls: list[list[int]] = []

    def matcher(e: Any, candidates: Sequence[Candidate]) -> StoryMatch | None:
        calls.append([c.entry_id for c in candidates])
        best = [c for c in candidates if c.story_id in (7, 9)]
        return StoryMatch(best[0].story_id, best[0].entry_id, "near", 0.9) if best else None

    got = decide_story(object(), [cand(1, 7), cand(2, 8), cand(3, 9), cand(4, None)], matcher)
    assert got == StoryDecision(7, "near", 0.9, ((9, "near", 0.9),))
    assert calls == [[1, 2, 3, 4], [2], [3]]  # each other story asked alone


def test_decide_story_starts_a_story_without_match_matcher_or_candidates() -> None:
    def never(e: Any, candidates: Sequence[Candidate]) -> StoryMatch | None:
        return None

    new = StoryDecision(None, "first", 1.0)
    assert decide_story(object(), [cand(1, 7)], never) == new
    assert decide_story(object(), [cand(1, 7)], None) == new
    assert decide_story(object(), [], never) == new


def test_pick_representative_is_the_fullest_early_version() -> None:
    def member(i: int, hours: float, words: int) -> dict[str, Any]:
        at = NOW + timedelta(hours=hours)
        return {"id": i, "published": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "word_count": words}

    members = [member(1, 0, 100), member(2, 1, 300), member(3, 2, 300), member(4, 7, 900)]
    assert pick_representative(members, NOW)["id"] == 2  # 4 is too late, 3 ties later
    assert pick_representative([member(5, 0, 10)], NOW)["id"] == 5
