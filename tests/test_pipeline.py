"""End to end: real local feed server, the real pipeline and CLI, on each backend (a SQLite
file, a PostgreSQL database of the test's own: the `backend` fixture, tests/backends.py)."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import feedparser
import pytest

from aggregator.config import load_config
from aggregator.pipeline import Pipeline

from .backends import Backend, Row, from_json, iso
from .feedserver import FeedServer, Request
from .util import cli, env_for, write_feeds

FEED_SERVER = {"feeds": 3, "entries": 5}  # the conftest `server` fixture's size


def make_pipeline(tmp_path: Path, backend: Backend, feeds: list[dict[str, object]],
                  **env: str) -> Pipeline:
    path = write_feeds(tmp_path / "feeds.yaml", feeds)
    config = load_config(None, str(path), env_for(tmp_path, **backend.env(),
                                                  AGGREGATOR_FULL_TEXT="false", **env))
    return Pipeline(config, processes=1)


def health(backend: Backend, name: str) -> Row:
    row = backend.one("SELECT * FROM feed_health WHERE name = ?", (name,))
    assert row is not None, name
    return row


def test_cycle_stores_publishes_and_revalidates(tmp_path: Path, backend: Backend,
                                                server: FeedServer) -> None:
    feeds = [{"name": f"f{n}", "url": server.url(f"/feed/{n}.xml")} for n in range(3)]
    p = make_pipeline(tmp_path, backend, feeds)
    try:
        report = p.run_cycle(all_feeds=True)
        assert sorted(o.status for o in report.feeds) == ["ok"] * 3
        assert sum(o.new for o in report.feeds) == 15
        for ext in ("atom", "rss", "json"):
            assert backend.document(f"all.{ext}") is not None
        parsed = feedparser.parse(backend.read("all.atom"))
        assert not parsed.bozo
        assert len(parsed.entries) == 15
        assert {e.source.title for e in parsed.entries} == {"Local feed 0", "Local feed 1",
                                                             "Local feed 2"}
        # Second cycle: the server answers 304 to our conditional GET.
        report = p.run_cycle(all_feeds=True)
        assert [o.status for o in report.feeds] == ["not_modified"] * 3
        # A new entry appears in every feed.
        server.round = 1
        report = p.run_cycle(all_feeds=True)
        assert sum(o.new for o in report.feeds) == 3
        assert backend.query("SELECT COUNT(*) FROM items")[0][0] == 18
    finally:
        p.close()


def test_polls_are_written_in_parallel_beside_the_writer(tmp_path: Path, backend: Backend,
                                                        server: FeedServer) -> None:
    """PostgreSQL: polls are written by writers of their own (parallel_writers, each on a
    connection of its own), so neither a writer busy with a long transaction or a wait on
    STORY_LOCK nor the main writer's other calls hold a poll back. SQLite: one writer."""
    feeds = [{"name": f"f{n}", "url": server.url(f"/feed/{n}.xml")} for n in range(3)]
    p = make_pipeline(tmp_path, backend, feeds)
    try:
        states = p.due(all_feeds=True)
        if not backend.postgres:
            assert p.store.parallel_writers == 1 and p.poll_writer is p.writer
            assert p.stores == [p.store]
            assert sum(o.new for o in p.poll(states)) == 15
            return
        assert len(p.poll_writer.stores) == p.store.parallel_writers == 2
        assert len({id(st) for st in p.stores}) == 3
        release = threading.Event()
        # The main writer and one poll writer busy until released.
        held = [w.submit(lambda st: release.wait(20)) for w in (p.writer, p.poll_writer)]
        try:
            outcomes = p.poll(states)  # would wait for `release` with one writer
            assert sorted(o.status for o in outcomes) == ["ok"] * 3
            assert sum(o.new for o in outcomes) == 15
            assert not any(h.done() for h in held)
            assert sorted(p.poll_writer.done) == [0, 3]
            assert backend.value("SELECT COUNT(*) FROM items") == 15  # committed
        finally:
            release.set()
        assert [h.result(10) for h in held] == [True, True]
    finally:
        p.close()


def test_identical_body_not_parsed_again(tmp_path: Path, backend: Backend) -> None:
    with FeedServer(feeds=1, entries=3, conditional=False) as server:
        p = make_pipeline(tmp_path, backend,
                          [{"name": "plain", "url": server.url("/feed/0.xml")}])
        try:
            assert p.run_cycle(all_feeds=True).feeds[0].status == "ok"
            assert p.run_cycle(all_feeds=True).feeds[0].status == "unchanged"
        finally:
            p.close()


def test_moved_gone_and_rate_limited(tmp_path: Path, backend: Backend, server: FeedServer) -> None:
    server.route("/moved.xml", status=301, headers={"Location": server.url("/feed/0.xml")})
    server.route("/temp.xml", status=302, headers={"Location": server.url("/feed/1.xml")})
    server.route("/gone.xml", status=410, body="gone")
    server.route("/busy.xml", status=429, headers={"Retry-After": "3600"}, body="slow down")
    feeds = [
        {"name": "moved", "url": server.url("/moved.xml")},
        {"name": "temp", "url": server.url("/temp.xml")},
        {"name": "gone", "url": server.url("/gone.xml")},
        # Retry-After holds a whole host: put the busy feed on another host name.
        {"name": "busy", "url": server.url("/busy.xml").replace("127.0.0.1", "localhost")},
    ]
    p = make_pipeline(tmp_path, backend, feeds,
                      AGGREGATOR_ALLOW_PRIVATE_HOSTS="127.0.0.1,localhost")
    try:
        before = datetime.now(UTC)
        p.run_cycle(all_feeds=True)
        moved = health(backend, "moved")
        assert moved["effective_url"] == server.url("/feed/0.xml")
        assert moved["entries"] == 5
        assert health(backend, "temp")["effective_url"] is None
        gone = health(backend, "gone")
        assert gone["disabled_reason"] and gone["last_status"] == 410
        busy = health(backend, "busy")
        assert busy["last_error_kind"] == "rate_limited" and busy["consecutive_errors"] == 1
        next_poll = datetime.strptime(busy["next_poll"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=UTC)
        assert next_poll >= before + timedelta(seconds=3500)
        # The moved feed is polled at its new address from now on; the gone feed no more.
        hits_moved = server.hits["/moved.xml"]
        hits_gone = server.hits["/gone.xml"]
        p.run_cycle(all_feeds=True)
        assert server.hits["/moved.xml"] == hits_moved
        assert server.hits["/gone.xml"] == hits_gone
        assert not any(s.name == "gone" for s in p.due())
    finally:
        p.close()


def test_not_a_feed_stores_nothing_and_backs_off(tmp_path: Path, backend: Backend,
                                                 server: FeedServer) -> None:
    server.route("/html.xml", body="<!doctype html><html><body><p>Hello</p></body></html>",
                 headers={"Content-Type": "text/html"})
    server.route("/empty.xml", body="")
    server.route("/truncated.xml",
                 body=server.feed_xml(0)[: len(server.feed_xml(0)) // 2])
    feeds = [{"name": n, "url": server.url(f"/{n}.xml")} for n in ("html", "empty", "truncated")]
    p = make_pipeline(tmp_path, backend, feeds, AGGREGATOR_JITTER="0")
    try:
        p.run_cycle(all_feeds=True)
        p.run_cycle(all_feeds=True)
        for name in ("html", "empty", "truncated"):
            h = health(backend, name)
            assert h["entries"] == 0, name
            assert h["consecutive_errors"] == 2, name
            assert h["last_error"], name
        # Exponential backoff: the second failure in a row waits twice the 900 s interval.
        h = health(backend, "html")
        waited = (datetime.fromisoformat(h["next_poll"])
                  - datetime.fromisoformat(h["last_attempt"])).total_seconds()
        assert waited == 2 * 900
    finally:
        p.close()


def test_dates_duplicates_and_edits(tmp_path: Path, backend: Backend, server: FeedServer) -> None:
    def feed(title_b: str) -> str:
        return f"""<?xml version="1.0"?><rss version="2.0"><channel><title>Dates</title>
<item><guid isPermaLink="false">a</guid><title>No date</title><link>http://example.org/a</link></item>
<item><guid isPermaLink="false">b</guid><title>{title_b}</title><link>http://example.org/b</link>
<pubDate>Wed, 01 Jan 2999 00:00:00 GMT</pubDate></item>
<item><guid isPermaLink="false">c</guid><title>Epoch</title><pubDate>Thu, 01 Jan 1970 00:00:00 GMT</pubDate></item>
<item><guid isPermaLink="false">d</guid><title>Garbage</title><pubDate>yesterday-ish</pubDate></item>
<item><guid isPermaLink="false">a</guid><title>Duplicate of a</title></item>
</channel></rss>"""

    server.route("/dates.xml", body=feed("Future"))
    p = make_pipeline(tmp_path, backend, [{"name": "dates", "url": server.url("/dates.xml")}])
    try:
        p.run_cycle(all_feeds=True)
        rows = {r["guid"]: r for r in backend.query(
            "SELECT e.guid, e.title, e.published, e.date_note, e.published_raw FROM entries e")}
        assert set(rows) == {"a", "b", "c", "d"}
        assert rows["a"]["title"] == "No date"  # first occurrence wins
        assert rows["a"]["date_note"] == "missing"
        assert rows["b"]["date_note"] == "future"
        assert rows["c"]["date_note"] == "ancient"
        assert rows["d"]["date_note"] == "unparseable"
        assert rows["d"]["published_raw"] == "yesterday-ish"
        for r in rows.values():
            # The feed's first poll: no date anybody can know (see docs/schema.md, "Dates").
            assert iso(r["published"]) is None  # '' on SQLite, NULL on PostgreSQL
        assert backend.query(
            "SELECT COUNT(*) FROM items WHERE published IS NULL")[0][0] == 4
        # An edited entry (same guid, new title) is updated in place, not duplicated.
        server.route("/dates.xml", body=feed("Future, edited"))
        p.run_cycle(all_feeds=True)
        titles = [r[0] for r in backend.query("SELECT title FROM entries WHERE guid='b'")]
        assert titles == ["Future, edited"]
        assert backend.query("SELECT COUNT(*) FROM entries")[0][0] == 4
    finally:
        p.close()


def test_search_any_script(tmp_path: Path, backend: Backend, server: FeedServer) -> None:
    body = """<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>S</title>
<item><guid isPermaLink="false">1</guid><title>Գյումրիում նոր դպրոց է բացվել</title>
<description>Armenian text about Gyumri</description></item>
<item><guid isPermaLink="false">2</guid><title>ქუთაისში ახალი ხიდი გაიხსნა</title>
<description>Georgian text</description></item>
<item><guid isPermaLink="false">3</guid><title>В Гюмри открылась школа</title><description>Russian</description></item>
</channel></rss>"""
    server.route("/s.xml", body=body)
    feeds_path = write_feeds(tmp_path / "feeds.yaml", [{"name": "s", "url": server.url("/s.xml")}])
    env = env_for(tmp_path, **backend.env(), AGGREGATOR_FULL_TEXT="false")
    r = cli(["update", "--all"], env, feeds=feeds_path)
    assert r.returncode == 0, r.stderr
    assert "s: ok" in r.stdout
    for query, guid_title in (("Գյումր", "Գյումրիում"), ("ხიდი", "ქუთაისში"),
                              ("Гюмри", "В Гюмри")):
        r = cli(["search", "--json", query], env, feeds=feeds_path)
        assert r.returncode == 0, r.stderr
        hits = json.loads(r.stdout)
        assert [h["title"].split()[0] for h in hits] == [guid_title.split()[0]], query


def test_search_shows_each_hit_on_three_lines_with_its_context(tmp_path: Path, backend: Backend,
                                                                server: FeedServer) -> None:
    """`aggregator search Нагорн` on the ua-2020 feeds printed "…й в [Нагорн]ом К…" (twelve
    trigram tokens: a dozen characters) and snippets that kept the text's line breaks ran
    into the next hit. Each hit is three lines: date, feed and title; link; a snippet of
    the text around the match, on one line."""
    lines = [f"Line {n} of the report, with nothing special in it." for n in range(8)]
    text = "\n".join(lines[:4] + ["Бои в Нагорном Карабахе продолжаются второй день подряд."]
                     + lines[4:])
    body = f"""<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>S</title>
<item><guid isPermaLink="false">1</guid><title>Хроника</title><link>http://x.test/1</link>
<description>{text}</description></item>
<item><guid isPermaLink="false">2</guid><title>Нагорный</title><link>http://x.test/2</link>
<description>a\nb</description></item>
</channel></rss>"""
    server.route("/s.xml", body=body)
    feeds_path = write_feeds(tmp_path / "feeds.yaml", [{"name": "s", "url": server.url("/s.xml")}])
    env = env_for(tmp_path, **backend.env(), AGGREGATOR_FULL_TEXT="false")
    assert cli(["update", "--all"], env, feeds=feeds_path).returncode == 0
    r = cli(["search", "Нагорн"], env, feeds=feeds_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert len(out) == 6, r.stdout  # two hits, three lines each
    snippet = next(out[i + 2] for i in (0, 3) if "Хроника" in out[i])
    assert "[Нагорн]ом Карабахе продолжаются" in snippet and "Бои в" in snippet, snippet
    r = cli(["search", "Li"], env, feeds=feeds_path)  # under 3 characters: a plain scan
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 3, r.stdout


def test_cli_update_exit_codes_and_status(tmp_path: Path, backend: Backend,
                                          server: FeedServer) -> None:
    server.route("/bad.xml", status=500, body="oops")
    feeds_path = write_feeds(tmp_path / "feeds.yaml", [
        {"name": "good", "url": server.url("/feed/0.xml")},
        {"name": "bad", "url": server.url("/bad.xml")},
    ])
    env = env_for(tmp_path, **backend.env(), AGGREGATOR_FULL_TEXT="false")
    r = cli(["update"], env, feeds=feeds_path)
    assert r.returncode == 0, r.stderr  # some feeds failed: still 0
    lines = r.stdout.splitlines()
    assert any(line.startswith("good: ok") for line in lines)
    assert any(line.startswith("bad: error (http)") for line in lines)
    r = cli(["status", "--json"], env, feeds=feeds_path)
    data = json.loads(r.stdout)
    by_name = {f["name"]: f for f in data["feeds"]}
    assert by_name["good"]["entries"] == 5 and by_name["good"]["last_status"] == 200
    assert by_name["bad"]["consecutive_errors"] == 1 and by_name["bad"]["last_status"] == 500
    # Invalid configuration: exit 2 with file:line:col.
    (tmp_path / "broken.yaml").write_text("feeds:\n  - name: x\n    ur: http://x/\n")
    r = cli(["check"], env, feeds=tmp_path / "broken.yaml")
    assert r.returncode == 2
    assert "broken.yaml:3:5:" in r.stdout


# SQLite only: a directory where the database file should be is a SQLite path's fault.
def test_cli_update_fails_on_a_directory_database(tmp_path: Path, server: FeedServer) -> None:
    feeds_path = write_feeds(tmp_path / "feeds.yaml",
                             [{"name": "good", "url": server.url("/feed/0.xml")}])
    (tmp_path / "dir.db").mkdir()
    env = env_for(tmp_path, AGGREGATOR_FULL_TEXT="false",
                  AGGREGATOR_DATABASE=str(tmp_path / "dir.db"))
    # A cycle that cannot run exits non-zero.
    assert cli(["update"], env, feeds=feeds_path).returncode != 0


def test_status_columns_align_whatever_the_feed_names(tmp_path: Path, backend: Backend,
                                                       server: FeedServer) -> None:
    """`aggregator status` as a table a person scans: names longer than 24 characters (the
    corpus farm has many) and the failing state with its count shifted every column after
    them; one failed poll read "1 errors"."""
    server.route("/bad.xml", status=500, body="oops")
    feeds_path = write_feeds(tmp_path / "feeds.yaml", [
        {"name": "a-rather-long-feed-name-from-an-opml-import", "url": server.url("/feed/0.xml")},
        {"name": "short", "url": server.url("/feed/1.xml")},
        {"name": "bad", "url": server.url("/bad.xml")},
    ])
    env = env_for(tmp_path, **backend.env(), AGGREGATOR_FULL_TEXT="false")
    assert cli(["update"], env, feeds=feeds_path).returncode == 0
    r = cli(["status"], env, feeds=feeds_path)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if " http=" in line]
    assert len(rows) == 3, r.stdout
    for field in ("http=", "entries=", "last_success=", "next="):
        assert len({line.index(field) for line in rows}) == 1, (field, rows)
    bad = next(line for line in rows if line.startswith("bad "))
    assert "failing (1 error) " in bad, bad


def test_full_text_replaces_teaser(tmp_path: Path, backend: Backend, server: FeedServer) -> None:
    feeds_path = write_feeds(tmp_path / "feeds.yaml",
                             [{"name": "ft", "url": server.url("/feed/0.xml")}])
    config = load_config(None, str(feeds_path), env_for(tmp_path, **backend.env()))
    p = Pipeline(config, processes=1)
    try:
        report = p.run_cycle(all_feeds=True)
        assert report.articles_done == 5, report
        rows = backend.query(
            "SELECT extract_status, word_count, content_html FROM entries")
        assert {r["extract_status"] for r in rows} == {"done"}
        assert all(r["word_count"] > 300 for r in rows)
        assert not any("Copyright local test outlet" in r["content_html"] for r in rows)
        assert not any("Home" in r["content_html"] for r in rows)
    finally:
        p.close()


def test_retry_after_http_date(tmp_path: Path, backend: Backend, server: FeedServer) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(hours=2), usegmt=True)
    server.route("/busy.xml", status=503, headers={"Retry-After": when})
    p = make_pipeline(tmp_path, backend, [{"name": "busy", "url": server.url("/busy.xml")}])
    try:
        p.run_cycle(all_feeds=True)
        h = health(backend, "busy")
        assert h["last_error_kind"] == "rate_limited"
        assert h["next_poll"] >= (datetime.now(UTC) + timedelta(minutes=110)).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
    finally:
        p.close()


def test_ttl_and_max_age_lengthen_the_interval(tmp_path: Path, backend: Backend,
                                               server: FeedServer) -> None:
    body = server.feed_xml(0).replace(b"<channel>", b"<channel><ttl>180</ttl>")
    server.route("/ttl.xml", body=body)
    server.route("/maxage.xml", body=server.feed_xml(1),
                 headers={"Cache-Control": "public, max-age=7200"})
    p = make_pipeline(tmp_path, backend, [{"name": "ttl", "url": server.url("/ttl.xml")},
                                          {"name": "maxage", "url": server.url("/maxage.xml")},
                                          {"name": "plain", "url": server.url("/feed/2.xml")}],
                      AGGREGATOR_JITTER="0")
    try:
        p.run_cycle(all_feeds=True)
    finally:
        p.close()
    assert health(backend, "ttl")["interval"] == 3 * 3600  # <ttl> is in minutes
    assert health(backend, "maxage")["interval"] == 7200
    assert health(backend, "plain")["interval"] == 900  # the default


def test_feed_full_text_kept_and_robots_honoured(tmp_path: Path, backend: Backend,
                                                 server: FeedServer) -> None:
    long_text = " ".join(f"Sentence {i} of the complete report from the feed itself."
                         for i in range(80))
    server.route("/full.xml", body=(
        "<?xml version='1.0'?><rss version='2.0'><channel><title>Full</title>"
        f"<item><guid isPermaLink='false'>f1</guid><title>Full text in feed</title>"
        f"<link>{server.url('/short.html')}</link><description>{long_text}</description>"
        "</item></channel></rss>"))
    server.route("/short.html", headers={"Content-Type": "text/html"}, body=(
        "<html><body><article><h1>Full text in feed</h1><p>Only a teaser on the page, "
        "with a link to subscribe for the rest of it.</p></article></body></html>"))
    feeds_path = write_feeds(tmp_path / "feeds.yaml", [
        {"name": "full", "url": server.url("/full.xml")}])
    config = load_config(None, str(feeds_path), env_for(tmp_path, **backend.env()))
    p = Pipeline(config, processes=1)
    try:
        p.run_cycle(all_feeds=True)
    finally:
        p.close()
    row = backend.query("SELECT extract_status, text, word_count FROM entries")[0]
    assert row["extract_status"] == "feed"  # the page was shorter: the feed's text stays
    assert "Sentence 79" in row["text"] and row["word_count"] > 700


def test_robots_disallow_recorded_on_the_entry(tmp_path: Path, backend: Backend) -> None:
    with FeedServer(feeds=1, entries=2) as server:
        server.route("/robots.txt", headers={"Content-Type": "text/plain"},
                     body="User-agent: *\nDisallow: /article/\n")
        feeds_path = write_feeds(tmp_path / "feeds.yaml",
                                 [{"name": "r", "url": server.url("/feed/0.xml")}])
        config = load_config(None, str(feeds_path), env_for(tmp_path, **backend.env()))
        p = Pipeline(config, processes=1)
        try:
            report = p.run_cycle(all_feeds=True)
        finally:
            p.close()
        assert not any(k.startswith("/article/") for k in server.hits)
    assert report.feeds[0].status == "ok"
    rows = backend.query("SELECT extract_status, extract_error FROM entries ORDER BY id")
    assert [r["extract_status"] for r in rows] == ["failed", "failed"]
    assert all(r["extract_error"].startswith("robots") for r in rows)


def test_extraction_timeout_costs_the_page_only(tmp_path: Path, backend: Backend,
                                                server: FeedServer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A page whose extraction outlives the limit is recorded as failed, its worker is
    killed and the pool replaced; the feed and the next pages are unaffected."""
    import aggregator.pipeline as pipeline_mod

    feeds_path = write_feeds(tmp_path / "feeds.yaml",
                             [{"name": "slow", "url": server.url("/feed/0.xml")}])
    config = load_config(None, str(feeds_path), env_for(tmp_path, **backend.env()))
    p = Pipeline(config, processes=1)
    try:
        monkeypatch.setattr(pipeline_mod, "EXTRACT_TIMEOUT", 0.001)
        report = p.run_cycle(all_feeds=True)
        assert report.feeds[0].status == "ok"
        assert report.articles_done == 0
        rows = backend.query("SELECT extract_status, extract_error FROM entries")
        assert {r["extract_status"] for r in rows} == {"failed"}
        assert all(r["extract_error"].startswith("timeout") for r in rows), [tuple(r) for r in rows]
        assert not p.extractor.started()  # its workers were killed
        # With a sane limit the pool works again for new pages.
        monkeypatch.setattr(pipeline_mod, "EXTRACT_TIMEOUT", 60.0)
        server.round = 1
        report = p.run_cycle(all_feeds=True)
        assert report.articles_done == 1
    finally:
        p.close()


def test_parse_warnings_survive_a_304(tmp_path: Path, backend: Backend) -> None:
    """A 304 (or an identical body) says nothing new about the document: the warnings of
    its last parse stay visible in feed_health."""
    body = (b"<?xml version='1.0'?><rss version='2.0'><channel><title>t</title>"
            b"<item><guid>https://x.example/1</guid><title>one</title></item>"
            b"</channel></rss>")

    def handler(req: Request) -> tuple[int, dict[str, str], bytes]:
        if req.headers.get("if-none-match") == '"v1"':
            return 304, {"ETag": '"v1"'}, b""
        return 200, {"Content-Type": "text/html; charset=utf-8", "ETag": '"v1"'}, body

    with FeedServer() as server:
        server.route("/mislabelled.xml", handler=handler)
        p = make_pipeline(tmp_path, backend,
                          [{"name": "m", "url": server.url("/mislabelled.xml")}])
        try:
            assert p.run_cycle(all_feeds=True).feeds[0].status == "ok"
            first = from_json(health(backend, "m")["warnings"])
            assert first and "content type" in " ".join(first).lower(), first
            assert p.run_cycle(all_feeds=True).feeds[0].status == "not_modified"
            assert from_json(health(backend, "m")["warnings"]) == first
        finally:
            p.close()


# --------------------------------------------------------------------------- dates


def _atom_dates(atom: bytes) -> dict[str, tuple[str | None, str, str | None]]:
    """title -> (published, updated, source updated) of every entry of an Atom document, as
    written (RFC 3339 text), in document order."""
    ns = {"a": "http://www.w3.org/2005/Atom"}
    from lxml import etree

    out: dict[str, tuple[str | None, str, str | None]] = {}
    for e in etree.fromstring(atom).findall("a:entry", ns):
        out[e.findtext("a:title", namespaces=ns)] = (
            e.findtext("a:published", namespaces=ns),
            e.findtext("a:updated", namespaces=ns),
            e.findtext("a:source/a:updated", namespaces=ns),
        )
    return out


def test_updated_is_the_entrys_own_date_not_the_poll(tmp_path: Path, backend: Backend,
                                                     server: FeedServer
                                                     ) -> None:
    server.route("/atom.xml", headers={"Content-Type": "application/atom+xml"}, body="""<?xml
version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>A</title>
<id>urn:a</id><updated>2023-04-02T00:00:00Z</updated>
<entry><id>urn:a:1</id><title>Edited later</title><link href="http://example.org/a1"/>
<published>2023-03-01T10:00:00Z</published><updated>2023-03-02T08:00:00Z</updated>
<content type="html">&lt;p&gt;First story text about a bridge.&lt;/p&gt;</content></entry>
<entry><id>urn:a:2</id><title>Never edited</title><link href="http://example.org/a2"/>
<published>2023-04-01T09:30:00Z</published>
<content type="html">&lt;p&gt;Second story text about a school.&lt;/p&gt;</content></entry>
</feed>""")
    server.route("/rss.xml", body="""<?xml version="1.0"?><rss version="2.0"><channel>
<title>R</title><link>http://example.org/</link><description>d</description>
<item><guid>r1</guid><title>Newer RSS</title><link>http://example.org/r1</link>
<pubDate>Tue, 02 Jan 2024 07:00:00 GMT</pubDate><description>Third story, a road.</description></item>
<item><guid>r2</guid><title>Older RSS</title><link>http://example.org/r2</link>
<pubDate>Mon, 01 Jan 2024 07:00:00 GMT</pubDate><description>Fourth story, a park.</description></item>
</channel></rss>""")
    p = make_pipeline(tmp_path, backend, [{"name": "a", "url": server.url("/atom.xml")},
                                          {"name": "r", "url": server.url("/rss.xml")}])
    try:
        p.run_cycle(all_feeds=True)
        assert _atom_dates(backend.read("all.atom")) == {
            "Newer RSS": ("2024-01-02T07:00:00Z", "2024-01-02T07:00:00Z", "2024-01-02T07:00:00Z"),
            "Older RSS": ("2024-01-01T07:00:00Z", "2024-01-01T07:00:00Z", "2024-01-02T07:00:00Z"),
            "Never edited": ("2023-04-01T09:30:00Z", "2023-04-01T09:30:00Z",
                             "2023-04-02T00:00:00Z"),
            "Edited later": ("2023-03-01T10:00:00Z", "2023-03-02T08:00:00Z",
                             "2023-04-02T00:00:00Z"),
        }
        conn = backend
        assert dict(conn.query("SELECT name, updated FROM feeds")) == {
            "a": "2023-04-02T00:00:00Z",  # the feed's own <updated>
            "r": "2024-01-02T07:00:00Z",  # no channel date: its newest entry's
        }
        assert dict(conn.query("SELECT title, updated FROM items"))[
            "Edited later"] == "2023-03-02T08:00:00Z"
        assert sorted(r[0] for r in conn.query("SELECT updated FROM story_outlets")) == [
            "2023-03-02T08:00:00Z", "2023-04-01T09:30:00Z", "2024-01-01T07:00:00Z",
            "2024-01-02T07:00:00Z"]
        rss = feedparser.parse(backend.read("all.rss"))
        js = json.loads(backend.read("all.json"))
        assert [e.updated for e in rss.entries] == [i["date_modified"] for i in js["items"]] == [
            "2024-01-02T07:00:00Z", "2024-01-01T07:00:00Z", "2023-04-01T09:30:00Z",
            "2023-03-02T08:00:00Z"]

        # Edits: an Atom entry's updated moves to the feed's new date; an RSS item, which
        # has none, to the time the edit was seen. Unchanged entries keep theirs.
        atom = server.routes["/atom.xml"].body.replace(
            b"Second story text about a school.", b"Second story, corrected.").replace(
            b"<published>2023-04-01T09:30:00Z</published>",
            b"<published>2023-04-01T09:30:00Z</published><updated>2023-05-01T00:00:00Z</updated>")
        server.route("/atom.xml", headers={"Content-Type": "application/atom+xml"}, body=atom)
        server.route("/rss.xml", body=server.routes["/rss.xml"].body.replace(
            b"Fourth story, a park.", b"Fourth story, a bigger park."))
        t0 = datetime.now(UTC).replace(microsecond=0)
        p.run_cycle(all_feeds=True)
        updated = dict(conn.query("SELECT title, updated FROM items"))
        assert updated["Never edited"] == "2023-05-01T00:00:00Z"
        assert t0 <= datetime.fromisoformat(updated["Older RSS"]) <= datetime.now(UTC)
        assert updated["Newer RSS"] == "2024-01-02T07:00:00Z"
        assert updated["Edited later"] == "2023-03-02T08:00:00Z"
    finally:
        p.close()


def test_undated_entries_of_a_first_poll_sort_behind_in_feed_order(
    tmp_path: Path, backend: Backend, server: FeedServer
) -> None:
    def feed(*items: tuple[str, str | None]) -> str:
        body = "".join(
            f"<item><guid>{t}</guid><title>{t}</title><link>http://example.org/{t}</link>"
            + (f"<pubDate>{d}</pubDate>" if d else "")
            + f"<description>Text of {t} about the {t} affair.</description></item>"
            for t, d in items
        )
        return ('<?xml version="1.0"?><rss version="2.0"><channel><title>U</title>'
                f"<link>http://example.org/</link><description>d</description>{body}"
                "</channel></rss>")

    first = [("u1", None), ("d1", "Thu, 02 May 2024 10:00:00 GMT"), ("u2", None),
             ("d2", "Wed, 01 May 2024 10:00:00 GMT"), ("u3", None)]
    server.route("/u.xml", body=feed(*first))
    p = make_pipeline(tmp_path, backend, [{"name": "u", "url": server.url("/u.xml")}])
    try:
        t0 = datetime.now(UTC).replace(microsecond=0)
        p.run_cycle(all_feeds=True)
        t1 = datetime.now(UTC)
        dates = _atom_dates(backend.read("all.atom"))
        # Dated first (newest first), then the undated ones in the feed's own order.
        assert list(dates) == ["d1", "d2", "u1", "u2", "u3"]
        for t in ("u1", "u2", "u3"):
            published, updated, _ = dates[t]
            assert published is None  # no date anybody could know
            assert t0 <= datetime.fromisoformat(updated) <= t1  # Atom requires one: first seen
        rss = feedparser.parse(backend.read("all.rss"))
        assert [e.title for e in rss.entries] == list(dates)
        assert [("published" in e) for e in rss.entries] == [True, True, False, False, False]
        js = json.loads(backend.read("all.json"))
        assert [("date_published" in i) for i in js["items"]] == [True, True, False, False,
                                                                    False]
        conn = backend
        assert {r[0]: r[1] for r in conn.query("SELECT title, published FROM items")} == {
            "d1": "2024-05-02T10:00:00Z", "d2": "2024-05-01T10:00:00Z",
            "u1": None, "u2": None, "u3": None}
        assert health(backend, "u")["newest_entry"] == "2024-05-02T10:00:00Z"

        # A later poll: a new undated entry appeared then, and is dated by first-seen time.
        server.route("/u.xml", body=feed(("u4", None), *first))
        t2 = datetime.now(UTC).replace(microsecond=0)
        p.run_cycle(all_feeds=True)
        dates = _atom_dates(backend.read("all.atom"))
        assert list(dates) == ["u4", "d1", "d2", "u1", "u2", "u3"]
        published, updated, _ = dates["u4"]
        assert published is not None and published == updated
        assert t2 <= datetime.fromisoformat(published) <= datetime.now(UTC)
        assert conn.query("SELECT date_note FROM entries WHERE title = 'u4'")[0][0] \
            == "missing"
    finally:
        p.close()


def test_story_updated_moves_to_the_joining_outlets_date(tmp_path: Path, backend: Backend,
                                                          server: FeedServer) -> None:
    text = "The regional parliament approved the new budget for schools and roads today"

    def feed(title: str, pub: str, with_item: bool = True) -> str:
        item = (f"<item><guid>{title}</guid><title>{title}</title>"
                "<link>http://example.org/budget</link>"
                f"<pubDate>{pub}</pubDate><description>{text}.</description></item>")
        return ('<?xml version="1.0"?><rss version="2.0"><channel><title>' + title
                + "</title><link>http://example.org/</link><description>d</description>"
                + (item if with_item else "") + "</channel></rss>")

    server.route("/a.xml", body=feed("Outlet A", "Wed, 01 May 2024 10:00:00 GMT"))
    server.route("/b.xml", body=feed("Outlet B", "Wed, 01 May 2024 12:00:00 GMT", False))
    p = make_pipeline(tmp_path, backend, [{"name": "a", "url": server.url("/a.xml")},
                                          {"name": "b", "url": server.url("/b.xml")}])
    try:
        p.run_cycle(all_feeds=True)
        assert _atom_dates(backend.read("all.atom"))["Outlet A"][1] == "2024-05-01T10:00:00Z"
        server.route("/b.xml", body=feed("Outlet B", "Wed, 01 May 2024 12:00:00 GMT"))
        p.run_cycle(all_feeds=True)
        # One story, two outlets: it changed, at the date the second outlet reported it.
        assert backend.query("SELECT outlet_count, updated FROM story_outlets"
                                    )[0][:] == (2, "2024-05-01T12:00:00Z")
        dates = _atom_dates(backend.read("all.atom"))
        assert dates == {"Outlet A": ("2024-05-01T10:00:00Z", "2024-05-01T12:00:00Z",
                                      "2024-05-01T10:00:00Z")}
        assert "Also reported by" in backend.read("all.atom").decode()
    finally:
        p.close()


def test_full_text_moves_updated_only_once_readers_saw_the_teaser(
    tmp_path: Path, backend: Backend, server: FeedServer
) -> None:
    feeds_path = write_feeds(tmp_path / "feeds.yaml",
                             [{"name": "ft", "url": server.url("/feed/0.xml")},
                              {"name": "late", "url": server.url("/feed/1.xml")}])
    p = Pipeline(load_config(None, str(feeds_path), env_for(tmp_path, **backend.env())),
                 processes=1)
    try:
        # Polled and extracted before anything was published: the feed's dates stay.
        p.run_cycle(names=["ft"])
        rows = backend.query(
            "SELECT extract_status, published, updated FROM entries")
        assert {r["extract_status"] for r in rows} == {"done"}
        assert all(r["updated"] == r["published"] for r in rows)
        # Published with the teaser first, the full text later: that is a change.
        p.run_cycle(names=["late"], articles=False)
        t0 = datetime.now(UTC).replace(microsecond=0)
        p.run_cycle(names=["late"])
        late = backend.query(
            "SELECT e.extract_status, e.updated FROM entries e JOIN feeds f"
            " ON f.id = e.feed_id WHERE f.name = 'late'")
        assert {r["extract_status"] for r in late} == {"done"}
        assert all(datetime.fromisoformat(r["updated"]) >= t0 for r in late)
    finally:
        p.close()


# SQLite only: it migrates an old SQLite file (PostgreSQL's migrations start after it).
def test_migration_gives_stored_entries_their_own_dates(tmp_path: Path) -> None:
    """A store written before the dates migration: entries never changed since they were
    stored take their own date instead of first-seen, stories their members' newest; the
    views keep every column."""
    from aggregator.store import MIGRATIONS, Store, _split_sql, entry_uid

    mine = next(i for i, (name, _) in enumerate(MIGRATIONS) if name.startswith("dates a"))
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    # what Store registers on its connections for the migrations before this one
    conn.create_function("aggregator_entry_uid", 2, entry_uid, deterministic=True)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
                 " name TEXT NOT NULL, applied TEXT NOT NULL)")
    for version, (name, sql) in enumerate(MIGRATIONS[:mine], start=1):
        for statement in _split_sql(sql):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, '2026-11-01T00:00:00Z')",
                     (version, name))
    columns = {v: [r[1] for r in conn.execute(f"PRAGMA table_info({v})")]
               for v in ("items", "feed_health", "story_outlets")}
    conn.execute("INSERT INTO feeds(id, name, url, created) VALUES (1, 'f', 'https://f/',"
                 " '2026-11-01T00:00:00Z')")
    conn.execute("INSERT INTO stories(id, representative_id, first_seen, updated) VALUES"
                 " (1, 1, '2026-12-01T00:00:00Z', '2026-12-01T00:00:00Z')")
    for id_, published, updated in ((1, "2023-05-01T10:00:00Z", "2026-12-01T00:00:00Z"),
                                    (2, "2023-05-02T10:00:00Z", "2026-12-03T00:00:00Z")):
        # 1 was never changed (updated = first seen); 2 was edited on December 3rd.
        conn.execute(
            "INSERT INTO entries(id, feed_id, key, title, content_html, text, published,"
            " updated, first_seen, last_seen, content_hash, extract_status, story_id)"
            " VALUES (?, 1, ?, 't', '', '', ?, ?, '2026-12-01T00:00:00Z',"
            " '2026-12-01T00:00:00Z', 'h', 'skipped', 1)",
            (id_, str(id_), published, updated))
    conn.commit()
    conn.close()

    st = Store(path)
    st.migrate()
    try:
        assert st.schema_version() == len(MIGRATIONS)
        c = st.conn
        assert [r[0] for r in c.execute("SELECT updated FROM entries ORDER BY id")] == [
            "2023-05-01T10:00:00Z", "2026-12-03T00:00:00Z"]
        assert c.execute("SELECT updated FROM stories").fetchone()[0] == "2026-12-03T00:00:00Z"
        for view, names in columns.items():
            assert [r[1] for r in c.execute(f"PRAGMA table_info({view})")] == names
        assert "updated" in [r[1] for r in c.execute("PRAGMA table_info(feeds)")]
    finally:
        st.close()


def test_article_job_is_stopped_failed_or_extracted() -> None:
    """The article path's job type admits exactly one end state."""
    from aggregator import clean
    from aggregator.models import Article
    from aggregator.pipeline import ArticleFailure, ArticleJob
    from aggregator.store import BacklogEntry

    entry = BacklogEntry(id=1, feed_name="f", url="https://e.am/a", feed_html="<p>x</p>",
                         word_count=1, title="t", story_id=None)
    failure = ArticleFailure(error="http: 404", reason="http: 404")
    article = clean.clean_article(Article(html="<p>a b</p>", text="a b"), entry.url)
    for ok in (ArticleJob(entry, stopped=True), ArticleJob(entry, failure=failure),
               ArticleJob(entry, article=article)):
        assert ok.entry is entry
    for bad in ({}, {"stopped": True, "failure": failure},
                {"failure": failure, "article": article}):
        with pytest.raises(ValueError):
            ArticleJob(entry, **bad)  # type: ignore[arg-type]
