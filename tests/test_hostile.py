"""Hostile input end to end: each bad feed costs itself only, with a clear recorded error; the
good feed keeps working; nothing published could run in a browser."""

from __future__ import annotations

import gzip
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import feedparser
import pytest
from lxml import etree

from aggregator.config import load_config
from aggregator.pipeline import Pipeline

from .feedserver import FeedServer, Request
from .util import env_for, write_feeds

SECRET = "TOP-SECRET-LOCAL-FILE-CONTENT"

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
<!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">
<!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;"><!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;">]>
<rss version="2.0"><channel><title>Laughs</title>
<item><guid isPermaLink="false">1</guid><title>&h;</title></item></channel></rss>"""

QUADRATIC = ('<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY big "' + "x" * 100_000 + '">]>'
             '<rss version="2.0"><channel><title>Q</title><item><guid isPermaLink="false">1</guid><title>'
             + "&big;" * 5000 + "</title></item></channel></rss>")

SCRIPTED = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Scripted &lt;b&gt;outlet&lt;/b&gt;</title>
<item><guid isPermaLink="false">s1</guid>
<title>&lt;script&gt;alert(1)&lt;/script&gt;Headline &lt;img src=x onerror=alert(2)&gt;</title>
<link>javascript:alert(3)</link>
<author>&lt;svg onload=alert(4)&gt;</author>
<category>&lt;iframe src=//evil&gt;</category>
<enclosure url="javascript:alert(5)" type="audio/mpeg" length="1"/>
<description><![CDATA[<p onclick="alert(6)">Body <script>alert(7)</script>
<a href="javascript:alert(8)">x</a> <a href="&#106;avascript:alert(9)">y</a>
<a href=" java&#x09;script:alert(10)">z</a>
<svg><a xlink:href="javascript:alert(11)"><text>t</text></a></svg>
<math><maction actiontype="statusline" xlink:href="javascript:alert(12)">m</maction></math>
<form action="http://evil/"><input name=a></form><base href="http://evil/">
<meta http-equiv="refresh" content="0;url=http://evil/"><iframe src="http://evil/"></iframe>
<object data="http://evil/x.swf"></object>
<div style="background:url(javascript:alert(13))">styled</div>
<img src="data:text/html;base64,PHNjcmlwdD5hbGVydCgxNCk8L3NjcmlwdD4=">
<a href="data:text/html,<script>alert(15)</script>">d</a>
<img src="https://example.org/ok.png" alt="fine"></p>]]></description>
</item>
<item><guid isPermaLink="false">s2</guid><title>Bidi ‮evil‬ and NUL\x00 and \x07 bell</title>
<description>Text with control \x01 chars</description></item>
</channel></rss>"""


def assert_inert(html: str) -> None:
    """Nothing in this HTML would run in a browser."""
    low = html.lower()
    for bad in ("<script", "<iframe", "<form", "<base", "<meta", "<svg", "<math", "<object",
                "<embed", "style=", "data:text"):
        assert bad not in low, bad
    assert not re.search(r"<[^>]+\son\w+\s*=", low)
    # Every URL attribute is http(s), mailto or a data: image: no script scheme.
    for url in re.findall(r"(?:href|src|action)\s*=\s*[\"']([^\"']*)", low):
        assert url.startswith(("http://", "https://", "mailto:", "data:image/")), url


def _drip(req: Request) -> tuple[int, dict[str, str], bytes]:
    time.sleep(4)  # longer than the test deadline of 2 s
    return 200, {"Content-Type": "application/rss+xml"}, b"<rss/>"


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[tuple[FeedServer, Path]]:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    with FeedServer(feeds=1, entries=3) as s:
        s.route("/laughs.xml", body=BILLION_LAUGHS)
        s.route("/quadratic.xml", body=QUADRATIC)
        s.route("/xxe.xml", body=(
            f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY x SYSTEM "file://{secret}">]>'
            '<rss version="2.0"><channel><title>X</title><item><guid isPermaLink="false">1</guid>'
            "<title>&x;</title></item></channel></rss>"))
        s.route("/surrogate.xml", body=(
            '<?xml version="1.0"?><rss version="2.0"><channel><title>S</title><item>'
            "<guid isPermaLink='false'>1</guid><title>bad &#xD800; ref</title></item></channel></rss>"))
        bomb = gzip.compress(b"<rss>" + b" " * (40 * 1024 * 1024) + b"</rss>")
        s.route("/bomb.xml", body=bomb, headers={"Content-Encoding": "gzip",
                                                  "Content-Type": "application/rss+xml"})
        s.route("/huge.xml", body=b"<rss>", headers={"Content-Length": str(2 * 1024**3)})
        s.route("/drip.xml", handler=_drip)
        s.route("/html.xml", body="<html><body>Not a feed</body></html>",
                headers={"Content-Type": "text/html"})
        s.route("/empty.xml", body="")
        s.route("/space.xml", body="   \n\t  ")
        s.route("/decl.xml", body='<?xml version="1.0"?>')
        s.route("/busy.xml", status=429, body="<html>slow down</html>",
                headers={"Retry-After": "120"})
        s.route("/down.xml", status=503, body="<rss version='2.0'><channel><title>maint"
                                              "</title><item><guid isPermaLink='false'>x</guid></item></channel>"
                                              "</rss>")
        s.route("/tofile.xml", status=302, headers={"Location": f"file://{secret}"})
        s.route("/tometa.xml", status=302,
                headers={"Location": "http://169.254.169.254/latest/meta-data/"})
        s.route("/toloop.xml", status=302, headers={"Location": s.url("/feed/0.xml")})
        s.route("/loop.xml", status=301, headers={"Location": s.url("/loop2.xml")})
        s.route("/loop2.xml", status=301, headers={"Location": s.url("/loop.xml")})
        s.route("/scripted.xml", body=SCRIPTED.encode())
        yield s, secret


NAMES = ["laughs", "quadratic", "xxe", "surrogate", "bomb", "huge", "drip", "html", "empty",
         "space", "decl", "busy", "down", "tofile", "tometa", "toloop", "loop", "scripted"]


def test_hostile_feeds_cost_only_themselves(tmp_path: Path,
                                            hostile: tuple[FeedServer, Path]) -> None:
    server, _secret = hostile
    feeds = [{"name": "good", "url": server.url("/feed/0.xml"), "allow_private_network": True}]
    # Retry-After holds a whole host: the rate-limited feed lives on another host name, alone
    # (a feed there fetched after its 429 would be refused as rate_limited, whatever it
    # serves: which comes first depends on thread timing).
    feeds += [{"name": n, "url": server.url(f"/{n}.xml").replace(
               "127.0.0.1", "localhost" if n == "busy" else "127.0.0.1"),
               "allow_private_network": True} for n in NAMES]
    path = write_feeds(tmp_path / "feeds.yaml", feeds)
    # No global allow-list here: each feed's own opt-in covers its configured URL only.
    env = env_for(tmp_path, AGGREGATOR_ALLOW_PRIVATE_HOSTS="", AGGREGATOR_FETCH_DEADLINE="2",
                  AGGREGATOR_FEED_MAX_BYTES=str(5 * 1024 * 1024), AGGREGATOR_PARSE_TIMEOUT="10")
    config = load_config(None, str(path), env)
    p = Pipeline(config, processes=1)
    try:
        report = p.run_cycle(all_feeds=True)  # each feed bounded by its 2 s fetch deadline
    finally:
        p.close()
    by_name = {o.name: o for o in report.feeds}
    assert by_name["good"].status == "ok" and by_name["good"].new == 3
    conn = sqlite3.connect(tmp_path / "agg.db")
    conn.row_factory = sqlite3.Row
    health = {r["name"]: r for r in conn.execute("SELECT * FROM feed_health")}
    entries = {r["name"]: r["entries"] for r in health.values()}
    expect_error = {
        "laughs": None, "quadratic": None, "html": "not_a_feed", "empty": "empty",
        "space": "empty", "decl": "empty", "busy": "rate_limited", "down": "http",
        "bomb": "too_large", "huge": "too_large", "drip": "deadline",
        "tofile": "blocked", "tometa": "blocked", "toloop": "blocked", "loop": None,
    }
    for name, kind in expect_error.items():
        h = health[name]
        if name in ("laughs", "quadratic"):
            # Entities are stripped, never expanded: stored or refused, but bounded.
            if h["last_error"] is None:
                titles = [r[0] for r in conn.execute(
                    "SELECT i.title FROM items i WHERE i.feed_name = ?", (name,))]
                assert all(len(t) < 5000 for t in titles)
            continue
        assert h["last_error"], name
        assert entries[name] == 0, name
        if kind:
            assert h["last_error_kind"] == kind, (name, h["last_error_kind"], h["last_error"])
    # The XXE never resolves the local file; the surrogate reference stores valid text.
    for row in conn.execute("SELECT title, text FROM entries"):
        assert SECRET not in row[0] and SECRET not in row[1]
        row[0].encode("utf-8")
    # Titles and other text fields stay text; bidi/NUL/controls are gone.
    titles = [r[0] for r in conn.execute(
        "SELECT title FROM items WHERE feed_name = 'scripted' ORDER BY guid")]
    assert titles[0].startswith("<script>alert(1)</script>Headline")
    assert "\u202e" not in titles[1] and "\x00" not in titles[1] and "\x07" not in titles[1]
    links = [r[0] for r in conn.execute("SELECT url FROM items WHERE feed_name='scripted'")]
    assert links == [None, None]


def test_published_files_contain_nothing_executable(tmp_path: Path,
                                                    hostile: tuple[FeedServer, Path]) -> None:
    server, _ = hostile
    path = write_feeds(tmp_path / "feeds.yaml", [
        {"name": "scripted", "url": server.url("/scripted.xml")},
        {"name": "good", "url": server.url("/feed/0.xml")},
    ])
    config = load_config(None, str(path), env_for(tmp_path, AGGREGATOR_FULL_TEXT="false"))
    p = Pipeline(config, processes=1)
    try:
        p.run_cycle(all_feeds=True)
    finally:
        p.close()
    out = tmp_path / "public"
    for f in ("all.atom", "all.rss"):
        data = (out / f).read_bytes()
        etree.fromstring(data)  # well-formed
        parsed = feedparser.parse(data)
        assert not parsed.bozo
        # Unescape once, as a reader does, and look for anything a browser would run.
        for e in parsed.entries:
            assert_inert(" ".join(c.value for c in e.get("content", [])) + e.get("summary", ""))
    data = json.loads((out / "all.json").read_text())
    for item in data["items"]:
        assert_inert(item.get("content_html", ""))
        assert "javascript:" not in item.get("url", "")
    assert "<script" not in (out / "index.html").read_text().lower()


def test_same_guid_in_two_feeds_is_two_entries(tmp_path: Path) -> None:
    body = ('<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>'
            "<item><guid isPermaLink='false'>shared</guid><title>One</title></item></channel></rss>")
    with FeedServer() as s:
        s.route("/a.xml", body=body)
        s.route("/b.xml", body=body.replace("One", "Two"))
        path = write_feeds(tmp_path / "feeds.yaml", [{"name": "a", "url": s.url("/a.xml")},
                                                     {"name": "b", "url": s.url("/b.xml")}])
        config = load_config(None, str(path), env_for(tmp_path, AGGREGATOR_FULL_TEXT="false"))
        p = Pipeline(config, processes=1)
        try:
            p.run_cycle(all_feeds=True)
        finally:
            p.close()
    conn = sqlite3.connect(tmp_path / "agg.db")
    assert sorted(r[0] for r in conn.execute("SELECT title FROM entries")) == ["One", "Two"]


def test_article_links_never_reach_private_addresses(tmp_path: Path) -> None:
    """A feed on a private address (opted in) whose article links point at loopback: the
    opt-in covers the feed URL only, so the pages are refused and the reason recorded."""
    with FeedServer(feeds=1, entries=2) as s:
        path = write_feeds(tmp_path / "feeds.yaml", [
            {"name": "private", "url": s.url("/feed/0.xml"), "allow_private_network": True}])
        env = env_for(tmp_path, AGGREGATOR_ALLOW_PRIVATE_HOSTS="")
        config = load_config(None, str(path), env)
        p = Pipeline(config, processes=1)
        try:
            report = p.run_cycle(all_feeds=True)
        finally:
            p.close()
        assert report.feeds[0].status == "ok"
        assert not any(k.startswith("/article/") for k in s.hits)
    conn = sqlite3.connect(tmp_path / "agg.db")
    rows = conn.execute("SELECT extract_status, extract_error FROM entries").fetchall()
    assert len(rows) == 2
    assert all(r[0] == "failed" and r[1].startswith("blocked") for r in rows)
    # The feed itself is not marked failing for its articles.
    assert conn.execute("SELECT consecutive_errors FROM feeds").fetchone()[0] == 0
