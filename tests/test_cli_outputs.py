"""Filtered outputs through the real CLI: publish after a filter edit (no refetch), preview,
OPML import/export, `add` with feed discovery, `extract` on a file."""

from __future__ import annotations

import json
from pathlib import Path

import feedparser

from .feedserver import FeedServer
from .util import cli, env_for, write_feeds

ITEMS = [
    ("1", "Gyumri opens a new school", "en", "politics"),
    ("2", "Гюмри: открылась новая школа", "ru", "society"),
    ("3", "Football: Ararat wins the derby", "en", "sport"),
    ("4", "Tbilisi metro extends its hours", "en", "city"),
    ("5", "İstanbul hosts Caucasus trade fair", "az", "economy"),
]


def feed_xml() -> str:
    items = "".join(
        f"<item><guid isPermaLink='false'>{g}</guid><title>{t}</title>"
        f"<link>https://example.org/{g}</link><category>{c}</category>"
        f"<description>Report number {g} about {t}.</description></item>"
        for g, t, _lang, c in ITEMS
    )
    return ("<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
            f"<title>Regional</title><link>https://example.org/</link>{items}</channel></rss>")


OUTPUTS = """
aliases:
  Gyumri: [Gyumri, Гюмри, Գյումրի, Gümrü, გიუმრი]
outputs:
  - name: gyumri
    title: Gyumri in any script
    filter:
      include: [Gyumri]
  - name: no-sport
    title: Everything but sport
    formats: [atom, json]
    filter:
      exclude: [{pattern: sport, field: category}]
"""


def test_outputs_preview_and_republish_after_filter_edit(tmp_path: Path) -> None:
    with FeedServer() as s:
        s.route("/r.xml", body=feed_xml())
        feeds = write_feeds(tmp_path / "feeds.yaml", [{"name": "regional",
                                                       "url": s.url("/r.xml")}], OUTPUTS)
        env = env_for(tmp_path, AGGREGATOR_FULL_TEXT="false")
        r = cli(["update", "--all"], env, feeds=feeds)
        assert r.returncode == 0, r.stderr
        out = tmp_path / "public"
    gyumri = feedparser.parse((out / "gyumri.atom").read_bytes())
    assert sorted(e.title for e in gyumri.entries) == ["Gyumri opens a new school",
                                                      "Гюмри: открылась новая школа"]
    assert (out / "gyumri.rss").exists() and (out / "gyumri.json").exists()
    no_sport = json.loads((out / "no-sport.json").read_text())
    assert len(no_sport["items"]) == 4
    assert not (out / "no-sport.rss").exists()
    index = (out / "index.html").read_text()
    assert 'rel="alternate"' in index and "gyumri.atom" in index and "no-sport.json" in index
    assert "gyumri" in (out / "outputs.opml").read_text()

    r = cli(["preview", "no-sport"], env, feeds=feeds)
    assert r.returncode == 0, r.stderr
    assert "keeps 4" in r.stdout
    assert "Football: Ararat wins the derby" in r.stdout
    assert 'exclude "sport" matched category' in r.stdout

    # Edit the filter: `publish` re-renders from the store, without refetching.
    feeds.write_text(feeds.read_text().replace("include: [Gyumri]", "include: [Tbilisi]"))
    r = cli(["publish"], env, feeds=feeds)
    assert r.returncode == 0, r.stderr
    gyumri = feedparser.parse((out / "gyumri.atom").read_bytes())
    assert [e.title for e in gyumri.entries] == ["Tbilisi metro extends its hours"]

    # An invalid pattern is reported with its line and column.
    feeds.write_text(feeds.read_text().replace("include: [Tbilisi]",
                                               "include: [{pattern: '(unclosed', regex: true}]"))
    r = cli(["check"], env, feeds=feeds)
    assert r.returncode == 2
    line = next(i for i, t in enumerate(feeds.read_text().splitlines(), 1) if "(unclosed" in t)
    assert f"feeds.yaml:{line}:" in r.stdout


def test_opml_round_trip_and_add_with_discovery(tmp_path: Path) -> None:
    with FeedServer(feeds=2, entries=2) as s:
        feeds = tmp_path / "feeds.yaml"
        feeds.write_text("# my feeds\nfeeds:\n  # the first one\n"
                         f"  - name: first\n    url: {s.url('/feed/0.xml')}\n")
        env = env_for(tmp_path)
        opml = tmp_path / "in.opml"
        opml.write_text(
            '<?xml version="1.0"?><opml version="2.0"><head><title>t</title></head><body>'
            '<outline text="Georgia"><outline text="Second" type="rss" '
            f'xmlUrl="{s.url("/feed/1.xml")}"/></outline></body></opml>')
        r = cli(["import-opml", str(opml)], env, feeds=feeds)
        assert r.returncode == 0, r.stderr
        assert "1 feeds added" in r.stdout
        text = feeds.read_text()
        assert text.startswith("# my feeds\nfeeds:\n  # the first one\n")
        assert s.url("/feed/1.xml") in text
        r = cli(["export-opml"], env, feeds=feeds)
        assert r.returncode == 0 and s.url("/feed/1.xml") in r.stdout
        # `add` finds the feed announced by an HTML page.
        s.route("/site.html", headers={"Content-Type": "text/html; charset=utf-8"}, body=(
            '<html><head><link rel="alternate" type="application/rss+xml" title="Site feed" '
            'href="/feed/5.xml"></head><body>Hello</body></html>'))
        r = cli(["add", s.url("/site.html"), "--language", "ka", "--tag", "georgia"], env,
                feeds=feeds)
        assert r.returncode == 0, r.stderr
        assert s.url("/feed/5.xml") in feeds.read_text()
        r = cli(["check"], env, feeds=feeds)
        assert r.returncode == 0, r.stdout
        assert "3 feeds" in r.stdout
        # A page with no feed is a clear error and changes nothing.
        s.route("/plain.html", headers={"Content-Type": "text/html"}, body="<p>no feed</p>")
        before = feeds.read_text()
        r = cli(["add", s.url("/plain.html")], env, feeds=feeds)
        assert r.returncode != 0 and "announces no feed" in r.stderr
        assert feeds.read_text() == before


def test_extract_command_on_a_file(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text(
        "<html><head><title>Page</title></head><body><nav>Home » News</nav>"
        "<article><h1>Bridge opens in Kutaisi</h1>"
        + "".join(f"<p>Paragraph {i}: the new bridge over the Rioni river opened to traffic "
                  "on Monday after three years of construction work by local firms.</p>"
                  for i in range(6))
        + "<p><a href='/more?utm_source=x&id=3'>More</a></p></article>"
        "<footer>All rights reserved</footer></body></html>", encoding="utf-8")
    feeds = write_feeds(tmp_path / "feeds.yaml", [{"name": "x", "url": "https://example.ge/rss"}])
    r = cli(["extract", str(page), "--url", "https://example.ge/news/1", "--format", "json"],
            env_for(tmp_path), feeds=feeds)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert "Paragraph 5" in data["text"] and "All rights reserved" not in data["text"]
    assert "Home » News" not in data["text"]
    assert data["word_count"] > 100
