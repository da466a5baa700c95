"""Stories end to end: the same story from several outlets is published once, with every
outlet; related-but-different stories stay apart; `aggregator story` explains each join."""

from __future__ import annotations

import json
import re
from pathlib import Path

import feedparser
import pytest

from .backends import Backend
from .feedserver import FeedServer
from .util import cli, env_for, rss, write_feeds

STORY = (
    "Armenia and Azerbaijan agreed on Tuesday to resume talks on the delimitation of their "
    "shared border, the foreign ministries of both countries said in a joint statement issued "
    "after a meeting of the commissions in the border town of Ijevan. The statement said the "
    "commissions would meet again next month to discuss the northern section of the border, "
    "where villages on both sides depend on the same roads and water supplies. Officials said "
    "experts would use Soviet-era maps from the nineteen seventies as the basis for the work, "
    "and that the parties had agreed on the rules of procedure for the joint commissions. "
    "Observers in Yerevan and Baku described the meeting as constructive but cautioned that "
    "difficult questions about enclaves and transport routes remained open for negotiation."
)
OTHER = (
    "Georgia's parliament on Tuesday adopted amendments to the electoral code that change the "
    "threshold for parties entering the legislature, after a debate that lasted late into the "
    "night. Opposition deputies walked out before the vote, saying the changes had been "
    "drafted without consultation, while the governing party said the reform followed the "
    "recommendations of international observers. The amendments will apply to the elections "
    "scheduled for next autumn, and the central election commission said it would publish "
    "updated rules for the registration of candidates and observers within two weeks. Civil "
    "society groups called on the president to return the bill to parliament for review."
)


def test_same_story_published_once_with_all_outlets(tmp_path: Path, backend: Backend) -> None:
    with FeedServer() as s:
        s.route("/a.xml", body=rss("Outlet A", [
            ("a1", "Armenia and Azerbaijan resume border talks",
             "https://news-a.example/2026/11/border-talks?utm_source=rss", STORY),
            ("a2", "Georgian parliament changes the electoral code",
             "https://news-a.example/2026/11/electoral-code", OTHER),
        ]))
        # Outlet B republishes A's story with a new headline, a byline and a footer.
        s.route("/b.xml", body=rss("Outlet B", [
            ("b1", "Border commissions to meet again next month",
             "https://www.news-b.example/amp/border/", "By our correspondent in Yerevan. "
             + STORY + " Follow us on social networks."),
        ]))
        # Outlet C reports the same link (a re-post under a tracking URL).
        s.route("/c.xml", body=rss("Outlet C", [
            ("c1", "Border talks resume",
             "http://news-a.example/2026/11/border-talks/?fbclid=xyz#top",
             "Short teaser that links to outlet A's report."),
        ]))
        feeds = write_feeds(tmp_path / "feeds.yaml", [
            {"name": "a", "url": s.url("/a.xml")},
            {"name": "b", "url": s.url("/b.xml")},
            {"name": "c", "url": s.url("/c.xml")},
        ])
        env = env_for(tmp_path, **backend.env(), AGGREGATOR_FULL_TEXT="false")
        r = cli(["update", "--all"], env, feeds=feeds)
        assert r.returncode == 0, r.stderr
    rows = {r["guid"]: r for r in backend.query("SELECT * FROM items")}
    assert len(rows) == 4  # nothing is deleted: every outlet's copy stays
    story = rows["a1"]["story_id"]
    assert rows["b1"]["story_id"] == story and rows["c1"]["story_id"] == story
    # Feeds are stored in completion order: whichever came first started the story, the
    # others joined by URL (a and c) or as a near copy (b and the rest): the reasons are the
    # same set in any order. A story that arrived apart is merged when a bridge appears.
    assert sorted(rows[g]["match_reason"] for g in ("a1", "b1", "c1")) == ["first", "near",
                                                                          "url"]
    assert rows["a2"]["story_id"] != story  # same day, same region, different story
    outlets = backend.query("SELECT * FROM story_outlets WHERE story_id = ?", (story,))[0]
    assert outlets["outlet_count"] == 3 and outlets["outlets"] == "a, b, c"

    # The combined feed shows the story once, with the other outlets.
    atom = feedparser.parse(backend.read("all.atom"))
    assert len(atom.entries) == 2
    entry = next(e for e in atom.entries if "border" in e.title.lower())
    content = entry.content[0].value
    assert "Also reported by" in content
    assert len(re.findall(r"Outlet [ABC]", content)) == 2
    data = json.loads(backend.read("all.json"))
    assert len(data["items"]) == 2

    # `aggregator story ID` explains each join.
    r = cli(["story", str(story)], env, feeds=feeds)
    assert r.returncode == 0, r.stderr
    assert "3 entries from 3 outlets" in r.stdout
    assert "near match, score" in r.stdout and "url match" in r.stdout
    assert "first of the story" in r.stdout


def test_outlet_joining_moves_updated(tmp_path: Path, backend: Backend) -> None:
    with FeedServer() as s:
        s.route("/a.xml", body=rss("Outlet A", [("a1", "Talks", "https://a.example/x", STORY)]))
        s.route("/b.xml", body=rss("Outlet B", []))
        feeds = write_feeds(tmp_path / "feeds.yaml", [{"name": "a", "url": s.url("/a.xml")},
                                                      {"name": "b", "url": s.url("/b.xml")}])
        env = env_for(tmp_path, **backend.env(), AGGREGATOR_FULL_TEXT="false")
        assert cli(["update", "--all"], env, feeds=feeds).returncode == 0
        first = feedparser.parse(backend.read("all.atom")).entries[0]
        # Pretend the first poll happened an hour ago, so the join is visibly later.
        backend.execute("UPDATE stories SET updated = '2026-01-01T00:00:00Z'")
        backend.execute("UPDATE entries SET updated = '2026-01-01T00:00:00Z'")
        s.route("/b.xml", body=rss("Outlet B", [("b1", "Talks again", "https://b.example/y",
                                                 STORY)]))
        assert cli(["update", "--all"], env, feeds=feeds).returncode == 0
    entries = feedparser.parse(backend.read("all.atom")).entries
    assert len(entries) == 1
    assert entries[0].id == first.id
    assert entries[0].updated_parsed > (2026, 1, 1)
    assert "Outlet B" in entries[0].content[0].value


def test_bridging_entry_merges_stories_that_arrived_apart(tmp_path: Path, backend: Backend
                                                           ) -> None:
    """c (same URL as a) and b (a near copy of a) arrive first, apart; a bridges them."""
    with FeedServer() as s:
        s.route("/a.xml", body=rss("Outlet A", [
            ("a1", "Border talks", "https://news-a.example/talks?utm_medium=x", STORY)]))
        s.route("/b.xml", body=rss("Outlet B", [
            ("b1", "Commissions meet", "https://news-b.example/meet",
             "Our correspondent reports. " + STORY)]))
        s.route("/c.xml", body=rss("Outlet C", [
            ("c1", "Talks", "http://www.news-a.example/talks/", "A short teaser.")]))
        feeds = write_feeds(tmp_path / "feeds.yaml", [
            {"name": n, "url": s.url(f"/{n}.xml")} for n in ("a", "b", "c")])
        env = env_for(tmp_path, **backend.env(), AGGREGATOR_FULL_TEXT="false")
        for name in ("c", "b", "a"):
            assert cli(["update", "--feed", name], env, feeds=feeds).returncode == 0
    rows = dict(backend.query("SELECT guid, story_id FROM entries"))
    assert rows["a1"] == rows["b1"] == rows["c1"]
    assert backend.query("SELECT COUNT(*) FROM stories")[0][0] == 1
    reasons = dict(backend.query("SELECT guid, match_reason FROM entries"))
    assert reasons == {"c1": "first", "b1": "near", "a1": "url"}


# An outlet's own lead paragraphs and closing lines around the agency text STORY.
OWN_LEDE = (
    "The long-stalled process of fixing the frontier between the two South Caucasus neighbours "
    "took a modest step forward this week, our regional desk writes. For the families of the "
    "villages along the northern section, whose fields and pastures were cut in two when the "
    "Soviet Union collapsed, the question of where the line runs is not an abstraction but a "
    "matter of daily life, of which road the school bus may take and which well the herds may "
    "use. Diplomats in both capitals have repeatedly promised progress over the past years, "
    "and previous rounds ended without any agreement on even the order of the agenda. Here is "
    "the report of the news agency on the meeting, in full."
)
OWN_CLOSING = (
    "Our newsroom will follow the work of the commissions closely and report on the next "
    "round. Readers living in the border villages are invited to tell us how the talks affect "
    "their communities, their farms and their journeys to the markets of the nearest towns. "
    "Letters may be shortened for publication, and anonymous letters are not considered."
)
LIVE_UPDATES = [
    OTHER,
    "Heavy snowfall closed the mountain pass on the main road to the north on Tuesday morning, "
    "the emergency service said, and about two hundred lorries were waiting at the checkpoint "
    "for the road to be cleared. Drivers were advised to postpone their journeys until the "
    "evening, when the forecast promises a break in the weather and ploughs will be out.",
    "The central bank kept its key interest rate unchanged at its meeting on Tuesday, citing "
    "slowing inflation and uncertainty about the prices of imported food and fuel in the "
    "coming months. The governor said the board would consider a cut in the spring if the "
    "currency remained stable and wages did not grow faster than productivity in industry.",
]


@pytest.mark.parametrize("containment", ["true", "false"])
def test_wire_copy_under_a_new_lede_joins_by_containment(tmp_path: Path, backend: Backend,
                                                          containment: str) -> None:
    """Outlet B carries the agency text STORY whole under its own headline, lead paragraphs
    and closing lines (Jaccard under the threshold: B is twice as long): one story, reason
    `containment`. Outlet C's live blog quotes one sentence of it among other updates: apart.
    With `dedup_containment: false` the wire copy stays a story of its own."""
    quote = STORY.split(". ")[1] + "."
    with FeedServer() as s:
        s.route("/a.xml", body=rss("Agency", [
            ("a1", "Armenia and Azerbaijan resume border talks", "https://agency.example/1",
             STORY)]))
        s.route("/b.xml", body=rss("Outlet B", [
            ("b1", "A small step on a long road", "https://news-b.example/border",
             f"{OWN_LEDE} {STORY} {OWN_CLOSING}")]))
        s.route("/c.xml", body=rss("Outlet C", [
            ("c1", "Live: the region today", "https://news-c.example/live",
             " ".join([LIVE_UPDATES[0], f"The border commissions: {quote}", *LIVE_UPDATES[1:]]))]))
        feeds = write_feeds(tmp_path / "feeds.yaml", [
            {"name": n, "url": s.url(f"/{n}.xml")} for n in ("a", "b", "c")])
        env = env_for(tmp_path, **backend.env(), AGGREGATOR_FULL_TEXT="false",
                      AGGREGATOR_DEDUP_CONTAINMENT=containment)
        for name in ("a", "b", "c"):
            assert cli(["update", "--feed", name], env, feeds=feeds).returncode == 0
    rows = {g: (story, reason) for g, story, reason in backend.query(
        "SELECT guid, story_id, match_reason FROM entries")}
    if containment == "false":
        assert rows["b1"][0] != rows["a1"][0] and rows["b1"][1] == "first"
        assert backend.value("SELECT COUNT(*) FROM entries WHERE contain_bands IS NOT NULL"
                             ) == 0
        return
    assert rows["b1"] == (rows["a1"][0], "containment")
    assert rows["c1"][0] != rows["a1"][0] and rows["c1"][1] == "first"
    r = cli(["story", str(rows["a1"][0])], env, feeds=feeds)
    assert r.returncode == 0, r.stderr
    assert "2 entries from 2 outlets" in r.stdout and "containment match, score" in r.stdout
