"""Article pages that keep failing: RFC 9309 robots.txt failures defer pages (they are retried,
never failed for good), the feed shows `degraded` in feed_health, `status` and /status.json,
and the log says it once per host per run. Real local servers, each backend (SQLite,
PostgreSQL), real CLI and daemon subprocesses."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator import store as store_module
from aggregator.config import load_config
from aggregator.pipeline import Pipeline
from aggregator.store import FEED_STATES, Store

from .backends import Backend, Row
from .feedserver import FeedServer, Request, article_words
from .util import cli, env_for, write_feeds

PAST = "2000-01-01T00:00:00Z"  # a retry time that has come: "later" without waiting


class Robots:
    """A robots.txt whose answer the test switches: an HTTP status, or "drop" (the
    connection closes without a response: a network error)."""

    def __init__(self, answer: int | str) -> None:
        self.answer = answer

    def __call__(self, req: Request) -> tuple[int, dict[str, str], bytes]:
        if self.answer == "drop":
            raise ConnectionAbortedError("robots.txt: connection dropped on purpose")
        assert isinstance(self.answer, int)
        body = b"User-agent: *\nDisallow: /private/\n" if self.answer == 200 else b"no"
        return self.answer, {"Content-Type": "text/plain"}, body


@pytest.fixture
def good() -> Iterator[FeedServer]:
    with FeedServer(feeds=1, entries=3) as s:
        s.route("/robots.txt", status=404, body="not here", headers={"Content-Type": "text/plain"})
        yield s


@pytest.fixture
def bad() -> Iterator[FeedServer]:
    with FeedServer(feeds=1, entries=3) as s:
        yield s


def pipeline(tmp_path: Path, backend: Backend, feeds: list[dict[str, object]]) -> Pipeline:
    path = write_feeds(tmp_path / "feeds.yaml", feeds)
    return Pipeline(load_config(None, str(path), env_for(tmp_path, **backend.env())),
                    processes=1)


def entries(backend: Backend, feed: str) -> list[Row]:
    return backend.query(
        "SELECT e.* FROM entries e JOIN feeds f ON f.id = e.feed_id WHERE f.name = ?"
        " ORDER BY e.id DESC", (feed,))  # the feed's order (stored oldest first)


def health(backend: Backend, feed: str) -> Row:
    row = backend.one("SELECT * FROM feed_health WHERE name = ?", (feed,))
    assert row is not None, feed
    return row


def article_hits(server: FeedServer) -> int:
    return sum(n for path, n in server.hits.items() if path.startswith("/article/"))


@pytest.mark.parametrize("answer", [500, 503, "drop"])
def test_unreachable_robots_defers_pages_until_it_recovers(
    tmp_path: Path, backend: Backend, good: FeedServer, bad: FeedServer, answer: int | str
) -> None:
    robots = Robots(answer)
    bad.route("/robots.txt", handler=robots)
    feeds = [{"name": "good", "url": good.url("/feed/0.xml")},
             {"name": "bad", "url": bad.url("/feed/0.xml")}]
    p = pipeline(tmp_path, backend, feeds)
    try:
        report = p.run_cycle(all_feeds=True)
        assert [o.status for o in report.feeds] == ["ok", "ok"]
        # robots.txt 404: no restrictions, the pages are fetched and extracted.
        assert article_hits(good) == 3
        assert {r["extract_status"] for r in entries(backend, "good")} == {"done"}
        # robots.txt 5xx or unreachable: no page of that host is asked for.
        assert article_hits(bad) == 0 and bad.hits["/robots.txt"] == 1
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for i, row in enumerate(reversed(entries(backend, "bad"))):
            assert row["extract_status"] == "pending"  # not failed for good
            assert row["extract_error"].startswith("robots_unavailable: ")
            assert "robots.txt unreachable" in row["extract_error"]
            assert row["extract_retry_at"] > now and row["extract_attempts"] == 1
            # the feed's own text meanwhile
            assert row["text"] == article_words(0, i, 60) and row["word_count"] == 60
        h = health(backend, "bad")
        assert (h["state"], h["article_errors"], h["consecutive_errors"]) == ("degraded", 3, 0)
        assert "robots.txt unreachable" in h["last_article_error"]
        assert h["articles_waiting"] == 3
        assert health(backend, "good")["state"] == "ok"
        # Before its retry time nothing is asked again, robots.txt included.
        assert p.process_articles() == (0, 0)
        assert bad.hits["/robots.txt"] == 1 and article_hits(bad) == 0
    finally:
        p.close()
    reader = backend.storage(readonly=True)
    try:
        assert reader.backlog_size() == 3 and reader.backlog_retrying() == 3
        assert reader.feed_state_counts() == {"ok": 1, "degraded": 1, "failing": 0,
                                              "disabled": 0, "removed": 0}
        assert reader.feed_state("bad") == "degraded"
    finally:
        reader.close()

    # Later: robots.txt is back, the retry time has come; the next run extracts the pages.
    robots.answer = 200
    backend.execute("UPDATE entries SET extract_retry_at = ?", (PAST,))
    p = pipeline(tmp_path, backend, feeds)
    try:
        assert p.process_articles() == (3, 0)
    finally:
        p.close()
    assert article_hits(bad) == 3
    rows = entries(backend, "bad")
    assert {r["extract_status"] for r in rows} == {"done"}
    assert all(r["word_count"] > 60 and r["extract_retry_at"] is None for r in rows)
    h = health(backend, "bad")
    assert (h["state"], h["article_errors"], h["articles_waiting"]) == ("ok", 0, 0)


def test_a_page_failing_for_a_temporary_reason_is_retried_then_given_up(
    tmp_path: Path, backend: Backend, bad: FeedServer
) -> None:
    """A 503 page waits for its retry (backoff doubles); an entry whose next retry would fall
    past the retry window is failed, with the reason and the attempts."""
    bad.route("/article/0/2.html", status=503, body="busy", headers={"Content-Type": "text/html"})
    p = pipeline(tmp_path, backend, [{"name": "busy", "url": bad.url("/feed/0.xml")}])
    try:
        p.run_cycle(all_feeds=True)
        row = entries(backend, "busy")[0]  # story 2, the newest
        assert (row["extract_status"], row["extract_attempts"]) == ("pending", 1)
        assert row["extract_error"].startswith("http: ") and "503" in row["extract_error"]
        first_wait = (datetime.fromisoformat(row["extract_retry_at"])
                      - datetime.fromisoformat(row["extracted_at"]))
        assert first_wait == timedelta(minutes=5)
        # The two other pages worked: one failure is not "degraded".
        assert health(backend, "busy")["state"] == "ok"

        backend.execute("UPDATE entries SET extract_retry_at = ? WHERE id = ?",
                        (PAST, row["id"]))
        assert p.process_articles() == (0, 1)
        row = entries(backend, "busy")[0]
        assert (row["extract_status"], row["extract_attempts"]) == ("pending", 2)
        second_wait = (datetime.fromisoformat(row["extract_retry_at"])
                       - datetime.fromisoformat(row["extracted_at"]))
        assert second_wait == timedelta(minutes=10)

        # Two days later the news is stale: the next failure is the last.
        old = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
        backend.execute("UPDATE entries SET extract_retry_at = ?, first_seen = ? WHERE id = ?",
                        (PAST, old, row["id"]))
        assert p.process_articles() == (0, 1)
    finally:
        p.close()
    row = entries(backend, "busy")[0]
    assert row["extract_status"] == "failed" and row["extract_retry_at"] is None
    assert row["extract_error"].endswith("(gave up after 3 attempts)")
    assert row["word_count"] == 60  # the feed's text stays


def test_status_and_log_show_the_degraded_feed(tmp_path: Path, backend: Backend,
                                               good: FeedServer, bad: FeedServer) -> None:
    bad.route("/robots.txt", handler=Robots(500))
    feeds = write_feeds(tmp_path / "feeds.yaml", [
        {"name": "good", "url": good.url("/feed/0.xml")},
        {"name": "bad", "url": bad.url("/feed/0.xml")}])
    env = env_for(tmp_path, **backend.env())
    run = cli(["update", "--all"], env, feeds)
    assert run.returncode == 0, run.stderr
    # One WARNING line for the host, not one per page; none for the healthy host.
    host = bad.base.removeprefix("http://")
    lines = [line for line in run.stderr.splitlines() if "articles on " in line]
    assert len(lines) == 1, run.stderr
    assert "3 articles extracted, 3 failed (3 to retry)" in run.stdout
    assert "WARNING" in lines[0]
    assert re.search(
        rf"articles on {re.escape(host)}: 3 failed \(robots_unavailable: "
        r"http://\S+/robots.txt unreachable \(HTTP 500\).*\), retrying after "
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", lines[0]), lines[0]

    out = cli(["status", "--json"], env, feeds)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert (status["backlog"], status["backlog_retrying"]) == (3, 3)
    by_name = {f["name"]: f for f in status["feeds"]}
    assert by_name["good"]["state"] == "ok"
    bad_row = by_name["bad"]
    assert (bad_row["state"], bad_row["article_errors"]) == ("degraded", 3)
    assert "robots.txt unreachable (HTTP 500)" in bad_row["last_article_error"]
    assert bad_row["last_error"] is None  # the feed itself polls fine

    text = cli(["status"], env, feeds)
    assert text.returncode == 0, text.stderr
    bad_line = next(line for line in text.stdout.splitlines() if line.startswith("bad "))
    assert bad_line.split()[1] == "degraded"
    assert "article pages: 3 failed in a row" in text.stdout
    assert "robots.txt unreachable (HTTP 500)" in text.stdout
    assert "\n2 feeds, 3 articles waiting (3 waiting for a retry)\n" in text.stdout


def test_daemon_status_json_counts_the_waiting_pages(tmp_path: Path, backend: Backend,
                                                     bad: FeedServer) -> None:
    bad.route("/robots.txt", handler=Robots(502))
    feeds = write_feeds(tmp_path / "feeds.yaml", [{"name": "bad", "url": bad.url("/feed/0.xml")}])
    env = env_for(tmp_path, **backend.env())
    log = open(tmp_path / "daemon.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "aggregator.cli", "--feeds", str(feeds), "run"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        status: dict[str, object] = {}
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                with urllib.request.urlopen(f"http://{env['AGGREGATOR_LISTEN']}/status.json",
                                            timeout=5) as r:
                    status = json.loads(r.read())
            except OSError:
                pass
            feeds_status = status.get("feeds") or []
            assert isinstance(feeds_status, list)
            if feeds_status and feeds_status[0]["state"] == "degraded":
                break
            time.sleep(0.3)
        assert status.get("backlog") == 3 and status.get("backlog_retrying") == 3, status
        feed = status["feeds"][0]  # type: ignore[index]
        assert feed["state"] == "degraded" and feed["article_errors"] == 3
        assert "unreachable" in feed["last_article_error"]
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    text = (tmp_path / "daemon.log").read_text(errors="replace")
    assert text.count("articles on ") == 1, text


# SQLite only: it migrates an old SQLite file (PostgreSQL's migrations start after it).
def test_migration_requeues_pages_failed_for_an_unreachable_robots_txt(tmp_path: Path) -> None:
    """Entries of the last two days recorded as failed for good because robots.txt was
    unreachable (before this migration) go back to the backlog; others stay as they are."""
    mine = next(m for m in store_module.MIGRATIONS if m[0].startswith("article failures"))
    at = store_module.MIGRATIONS.index(mine)
    before = store_module.MIGRATIONS[:at]  # versions are positions: the ones before it
    path = tmp_path / "old.db"
    st = Store(path)
    try:
        saved = list(store_module.MIGRATIONS)
        store_module.MIGRATIONS[:] = before
        try:
            st.migrate()
        finally:
            store_module.MIGRATIONS[:] = saved
        now = datetime.now(UTC)
        fresh = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        stale = (now - timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
        conn = st.conn
        conn.execute("INSERT INTO feeds(name, url, created) VALUES ('f', 'http://x/', ?)",
                     (fresh,))
        unreachable = ("robots: http://x/1: http://x/robots.txt unreachable (HTTP 500 );"
                       " assuming disallow for 300 s")
        for key, error, seen in [
            ("a", unreachable, fresh),
            ("b", unreachable, stale),
            ("c", "robots: http://x/3: disallowed by http://x/robots.txt", fresh),
            ("d", "http: http://x/4: HTTP 404 Not Found", fresh),
        ]:
            conn.execute(
                "INSERT INTO entries(feed_id, key, url, title, content_html, text, published,"
                " updated, first_seen, last_seen, content_hash, extract_status, extract_error)"
                " VALUES (1, ?, 'http://x/', 't', '<p>x</p>', 'x', ?, ?, ?, ?, 'h', 'failed', ?)",
                (key, seen, seen, seen, seen, error))
        assert st.migrate() == [m[0] for m in store_module.MIGRATIONS[at:]]
        rows = {r["key"]: r["extract_status"] for r in conn.execute("SELECT * FROM entries")}
        assert rows == {"a": "pending", "b": "failed", "c": "failed", "d": "failed"}
        assert st.backlog_size() == 1
        assert [b.url for b in st.backlog(10)] == ["http://x/"]
        assert set(st.feed_state_counts()) == set(FEED_STATES)
    finally:
        st.close()
