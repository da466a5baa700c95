"""/metrics, /healthz and /readyz over real HTTP: an in-process daemon over local feeds (the
counts checked against the store), and a daemon subprocess (second listener, access log)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aggregator.config import load_config
from aggregator.daemon import Daemon, progress_bound
from aggregator.metrics import Metrics
from aggregator.models import Settings

from .feedserver import FeedServer
from .test_daemon import Daemon as DaemonProcess
from .test_daemon import Notify
from .util import env_for, free_port, write_feeds

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base: str, path: str = "/metrics") -> tuple[int, str, str]:
    """(status, Content-Type, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(base + path, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over the samples of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and set(labels.items()) <= set(ls))


def readyz(base: str) -> tuple[int, dict[str, Any]]:
    status, ctype, body = scrape(base, "/readyz")
    assert ctype.startswith("application/json")
    return status, json.loads(body)


# --------------------------------------------------------------------------- in-process


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def feeds_server() -> Iterator[FeedServer]:
    with FeedServer(feeds=2, entries=3) as s:
        yield s


def make_daemon(tmp_path: Path, feeds: list[dict[str, Any]], clock: Clock | None = None,
                **env: str) -> Daemon:
    feeds_path = write_feeds(tmp_path / "feeds.yaml", feeds)
    environ = env_for(tmp_path, **env)
    config = load_config(None, str(feeds_path), environ)
    daemon = Daemon(config, config_path=None, feeds_path=str(feeds_path), env=environ,
                    clock=clock or time.monotonic)
    daemon.server.start()
    if daemon.metrics_server is not None:
        daemon.metrics_server.start()
    return daemon


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    made: list[Daemon] = []
    yield made
    for d in made:
        d.server.stop()
        if d.metrics_server is not None:
            d.metrics_server.stop()
        d.pipeline.close()


def test_metrics_after_two_cycles_match_the_store(
        tmp_path: Path, feeds_server: FeedServer, daemons: list[Daemon]) -> None:
    s = feeds_server
    test_started = int(time.time())  # the last cycle's timestamp falls between this and now
    # No validators: the second poll gets the same bytes ("unchanged", not parsed again).
    s.route("/static.xml", body=s.feed_xml(0).replace(b"feed0-", b"static-"))
    s.route("/broken.xml", body=b"<rss><channel><title>cut off")
    s.route("/missing.xml", status=404, body=b"gone fishing", headers={"Content-Type": "text/plain"})
    s.route("/empty.html", body=b"<!doctype html><html><body><p></p></body></html>",
            headers={"Content-Type": "text/html; charset=utf-8"})
    s.route("/pages.xml", body=(
        "<?xml version='1.0'?><rss version='2.0'><channel><title>Pages</title>"
        f"<link>{s.base}/</link><description>d</description>"
        f"<item><title>No page here</title><link>{s.base}/nowhere.html</link>"
        "<guid>p1</guid><description>short teaser one</description></item>"
        f"<item><title>An empty page</title><link>{s.base}/empty.html</link>"
        "<guid>p2</guid><description>short teaser two</description></item>"
        "</channel></rss>").encode())
    feeds = [
        {"name": "f0", "url": s.url("/feed/0.xml")},
        {"name": "f1", "url": s.url("/feed/1.xml")},
        {"name": "static", "url": s.url("/static.xml")},
        {"name": "broken", "url": s.url("/broken.xml")},
        {"name": "missing", "url": s.url("/missing.xml")},
        {"name": "pages", "url": s.url("/pages.xml")},
    ]
    # Generous timeouts: on a loaded machine a slow local fetch must not change the counts.
    d = make_daemon(tmp_path, feeds, AGGREGATOR_FETCH_DEADLINE="60",
                    AGGREGATOR_READ_TIMEOUT="30")
    daemons.append(d)
    base = d.server.url.rstrip("/")
    first = d.pipeline.run_cycle(all_feeds=True)
    assert first.articles_done + first.articles_failed > 0
    d.pipeline.run_cycle(all_feeds=True, articles=False)

    status, ctype, text = scrape(base)
    assert status == 200 and ctype.startswith("text/plain; version=")
    m = parse(text)
    db = sqlite3.connect(tmp_path / "agg.db")

    def q(sql: str) -> int:
        return int(db.execute(sql).fetchone()[0])

    # Polls by outcome: two rounds over six feeds.
    assert value(m, "aggregator_polls_total", outcome="ok") == 4  # f0, f1, static, pages
    assert value(m, "aggregator_polls_total", outcome="not_modified") == 2  # f0, f1 (304)
    assert value(m, "aggregator_polls_total", outcome="unchanged") == 2  # static, pages
    assert value(m, "aggregator_polls_total", outcome="http") == 2  # missing (404)
    broken_kind = db.execute("SELECT last_error_kind FROM feeds WHERE name = 'broken'"
                             ).fetchone()[0]
    assert value(m, "aggregator_polls_total", outcome=broken_kind) == 2
    assert total(m, "aggregator_polls_total") == 12
    assert value(m, "aggregator_fetch_duration_seconds_count", kind="feed") == 12
    # Entries and stories.
    assert value(m, "aggregator_entries_total", change="new") == q("SELECT COUNT(*) FROM entries")
    assert value(m, "aggregator_entries_total", change="updated") == 0
    created = value(m, "aggregator_stories_created_total")
    merged = value(m, "aggregator_stories_merged_total")
    assert created > 0
    assert created - merged == q("SELECT COUNT(*) FROM stories")
    # Articles: every page attempted is fetched or failed; failures by stage and reason.
    done = q("SELECT COUNT(*) FROM entries WHERE extract_status IN ('done', 'feed')")
    failed = q("SELECT COUNT(*) FROM entries WHERE extract_status = 'failed'")
    assert done > 0 and failed >= 2
    assert total(m, "aggregator_articles_extracted_total") == done
    assert value(m, "aggregator_articles_extracted_total", kept="article") == q(
        "SELECT COUNT(*) FROM entries WHERE extract_status = 'done'")
    assert total(m, "aggregator_articles_failed_total") == failed
    for reason, n in db.execute(
            "SELECT substr(extract_error, 1, instr(extract_error, ':') - 1) AS reason, COUNT(*)"
            " FROM entries WHERE extract_status = 'failed' GROUP BY reason"):
        assert total(m, "aggregator_articles_failed_total", reason=reason) == n, reason
    nowhere, empty = (
        db.execute("SELECT extract_error FROM entries WHERE url LIKE ?", (f"%/{page}",)
                   ).fetchone()[0].split(":")[0]
        for page in ("nowhere.html", "empty.html"))
    assert nowhere == "http"
    assert value(m, "aggregator_articles_failed_total", stage="fetch", reason="http") >= 1
    assert value(m, "aggregator_articles_failed_total", stage="extract", reason=empty) >= 1
    extract_failed = total(m, "aggregator_articles_failed_total", stage="extract")
    assert value(m, "aggregator_article_pages_fetched_total") == done + extract_failed
    assert value(m, "aggregator_fetch_duration_seconds_count", kind="page") == done + failed
    assert value(m, "aggregator_extraction_backlog") == q(
        "SELECT COUNT(*) FROM entries WHERE extract_status = 'pending'")
    # Publishing, the last cycle, the files.
    assert value(m, "aggregator_publish_duration_seconds_count") >= 1
    assert value(m, "aggregator_publish_files_written_total") >= 1
    assert test_started <= value(m, "aggregator_last_poll_cycle_timestamp_seconds") \
        <= time.time()
    assert value(m, "aggregator_database_bytes") == os.path.getsize(tmp_path / "agg.db")
    assert value(m, "aggregator_database_wal_bytes") > 0  # the daemon's writer is open
    # Feeds by state: every state, zeros included.
    states = {dict(ls)["state"]: v for (n, ls), v in m.items() if n == "aggregator_feeds"}
    # As the store derives them (a page timing out on a loaded machine can make a feed
    # degraded: the metric must say what the store says, whatever that is).
    expected = dict.fromkeys(("ok", "degraded", "failing", "disabled", "removed"), 0)
    expected.update(db.execute("SELECT state, COUNT(*) FROM feed_health GROUP BY state"))
    assert states == expected
    assert states["failing"] == 2 and states["ok"] + states["degraded"] == 4
    # No per-feed series unless asked for.
    assert not [n for n, _ in m if n.startswith("aggregator_feed_")]
    # The probes.
    assert scrape(base, "/healthz")[0] == 200
    d.check_database()  # the maintenance job's check (the daemon runs it before serving)
    status, doc = readyz(base)
    assert status == 200 and doc["ready"] and doc["failed"] == [], doc


def test_feed_states_count_removed_and_disabled(
        tmp_path: Path, feeds_server: FeedServer, daemons: list[Daemon]) -> None:
    s = feeds_server
    s.route("/gone.xml", status=410, body=b"gone", headers={"Content-Type": "text/plain"})
    feeds = [{"name": "f0", "url": s.url("/feed/0.xml")},
             {"name": "f1", "url": s.url("/feed/1.xml")},
             {"name": "gone", "url": s.url("/gone.xml")}]
    d = make_daemon(tmp_path, feeds, AGGREGATOR_FULL_TEXT="false",
                    AGGREGATOR_METRICS_PER_FEED="true")
    daemons.append(d)
    d.pipeline.run_cycle(all_feeds=True)
    # f1 leaves the configuration: removed (its entries stay).
    write_feeds(tmp_path / "feeds.yaml", [feeds[0], feeds[2]])
    assert d.reload()
    m = parse(scrape(d.server.url.rstrip("/"))[2])
    states = {dict(ls)["state"]: v for (n, ls), v in m.items() if n == "aggregator_feeds"}
    assert states == {"ok": 1, "degraded": 0, "failing": 0, "disabled": 1, "removed": 1}
    assert value(m, "aggregator_polls_total", outcome="gone") == 1
    # Per-feed series: by feed name, none left for a feed no longer configured.
    assert value(m, "aggregator_feed_polls_total", feed="f0", outcome="ok") == 1
    assert value(m, "aggregator_feed_polls_total", feed="gone", outcome="gone") == 1
    assert ("aggregator_feed_polls_total", (("feed", "f1"), ("outcome", "ok"))) not in m
    assert value(m, "aggregator_feed_entries_total", feed="f0", change="new") == 3
    assert value(m, "aggregator_feed_state", feed="gone", state="disabled") == 1
    assert value(m, "aggregator_feed_state", feed="f1", state="removed") == 1
    assert value(m, "aggregator_feed_consecutive_errors", feed="gone") == 1
    assert value(m, "aggregator_feed_last_success_timestamp_seconds", feed="f0") > 0


def test_readyz_and_watchdog_share_one_notion_of_progress(
        tmp_path: Path, feeds_server: FeedServer, daemons: list[Daemon],
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    d = make_daemon(tmp_path, [{"name": "f0", "url": feeds_server.url("/feed/0.xml")}],
                    clock, AGGREGATOR_FULL_TEXT="false")
    daemons.append(d)
    notify = Notify(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    base = d.server.url.rstrip("/")
    d.check_database()
    status, doc = readyz(base)
    assert status == 200, doc
    bound = doc["checks"]["progress"]["bound_seconds"]
    assert bound == progress_bound(d.config.settings) >= 60

    # No progress for longer than the bound: not ready, and no watchdog ping.
    clock.now += bound + 1
    status, doc = readyz(base)
    assert status == 503 and doc["failed"] == ["progress"], doc
    assert doc["checks"]["progress"]["seconds_since"] > bound
    d._maintenance_job()
    assert not notify.wait_for("WATCHDOG=1", 0.5)
    assert scrape(base, "/healthz")[0] == 200  # alive all the same

    # A completed poll tick is progress: ready again, and the watchdog is pinged.
    d._poll_job()
    assert readyz(base)[0] == 200
    d._maintenance_job()
    assert notify.wait_for("WATCHDOG=1", 5)


def test_readyz_503_while_the_database_cannot_be_written(
        tmp_path: Path, feeds_server: FeedServer, daemons: list[Daemon]) -> None:
    d = make_daemon(tmp_path, [{"name": "f0", "url": feeds_server.url("/feed/0.xml")}],
                    AGGREGATOR_FULL_TEXT="false")
    daemons.append(d)
    base = d.server.url.rstrip("/")
    status, doc = readyz(base)
    assert status == 503 and doc["failed"] == ["database"]  # not checked yet
    d.check_database()
    assert readyz(base)[0] == 200

    # Another process holds the write lock: no write can happen.
    other = sqlite3.connect(tmp_path / "agg.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        d.check_database()
        status, doc = readyz(base)
        assert status == 503 and doc["failed"] == ["database"], doc
        assert "locked" in doc["checks"]["database"]["error"]
    finally:
        other.execute("ROLLBACK")
        other.close()
    d.check_database()
    assert readyz(base)[0] == 200

    # The database file made read-only.
    db = tmp_path / "agg.db"
    with read_only(db):
        d.check_database()
        status, doc = readyz(base)
        assert status == 503 and doc["failed"] == ["database"], doc
        assert "not writable" in doc["checks"]["database"]["error"]
        assert scrape(base, "/metrics")[0] == 200  # metrics are still served
    d.check_database()
    assert readyz(base)[0] == 200


class read_only:  # noqa: N801 - used as a context manager
    """Make a file read-only, for root too (the immutable flag; mode bits do not bind root)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mode = path.stat().st_mode

    def __enter__(self) -> None:
        self.path.chmod(0o444)
        if os.geteuid() == 0:
            done = subprocess.run(["chattr", "+i", str(self.path)], capture_output=True)
            if done.returncode != 0:
                self.path.chmod(self.mode)
                pytest.skip(f"cannot make a file read-only for root here: {done.stderr!r}")

    def __exit__(self, *exc: object) -> None:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(self.path)], check=True)
        self.path.chmod(self.mode)


def test_readyz_reports_a_refused_configuration_and_stays_ready(
        tmp_path: Path, feeds_server: FeedServer, daemons: list[Daemon]) -> None:
    d = make_daemon(tmp_path, [{"name": "f0", "url": feeds_server.url("/feed/0.xml")}],
                    AGGREGATOR_FULL_TEXT="false")
    daemons.append(d)
    d.check_database()
    base = d.server.url.rstrip("/")
    status, doc = readyz(base)
    assert status == 200 and doc["checks"]["config"]["refused"] is None
    (tmp_path / "feeds.yaml").write_text("feeds:\n  - name: f0\n    url: [oops\n  - nme: x\n")
    assert not d.reload()
    status, doc = readyz(base)
    assert status == 200 and doc["ready"], doc
    config = doc["checks"]["config"]
    assert config["refused"]["problems"] == len(config["refused"]["first_problems"]) >= 1
    assert "feeds.yaml:" in config["refused"]["first_problems"][0]
    assert config["loaded"] in config["note"] and "refused" in config["note"]
    # Fixed on disk: the report goes away.
    write_feeds(tmp_path / "feeds.yaml", [{"name": "f0", "url": feeds_server.url("/feed/0.xml")}])
    assert d.reload()
    assert readyz(base)[1]["checks"]["config"]["refused"] is None


def test_metrics_listen_serves_only_the_operations_routes(
        tmp_path: Path, feeds_server: FeedServer, daemons: list[Daemon]) -> None:
    port = free_port()
    d = make_daemon(tmp_path, [{"name": "f0", "url": feeds_server.url("/feed/0.xml")}],
                    AGGREGATOR_FULL_TEXT="false", AGGREGATOR_METRICS_LISTEN=f"127.0.0.1:{port}")
    daemons.append(d)
    d.check_database()
    d.pipeline.run_cycle(all_feeds=True)
    side = f"http://127.0.0.1:{port}"
    main = d.server.url.rstrip("/")
    assert value(parse(scrape(side)[2]), "aggregator_polls_total", outcome="ok") == 1
    assert value(parse(scrape(main)[2]), "aggregator_polls_total", outcome="ok") == 1
    assert scrape(side, "/healthz")[0] == 200
    assert readyz(side)[0] == 200
    for path in ("/", "/all.atom", "/status.json"):
        assert scrape(side, path)[0] == 404, path
        assert scrape(main, path)[0] == 200, path


def test_each_pipeline_counts_in_a_registry_of_its_own() -> None:
    a, b = Metrics(), Metrics()
    a.poll("x", "ok", None, new=2)
    a.poll("x", "error", "timeout")
    a.poll("x", "error", "something-new")  # unknown kinds stay one bounded label
    assert value(parse(a.render().decode()), "aggregator_polls_total", outcome="ok") == 1
    assert value(parse(a.render().decode()), "aggregator_polls_total", outcome="other") == 1
    assert value(parse(a.render().decode()), "aggregator_entries_total", change="new") == 2
    assert value(parse(b.render().decode()), "aggregator_polls_total", outcome="ok") == 0


def test_metrics_settings_are_validated(tmp_path: Path) -> None:
    feeds = write_feeds(tmp_path / "feeds.yaml", [{"name": "f", "url": "https://example.org/f"}])
    config = load_config(None, str(feeds), {"AGGREGATOR_METRICS_PER_FEED": "yes",
                                            "AGGREGATOR_METRICS_LISTEN": "127.0.0.1:9108"})
    assert config.settings.metrics_per_feed is True
    assert config.settings.metrics_listen == "127.0.0.1:9108"
    assert Settings().metrics_per_feed is False and Settings().metrics_listen == ""
    assert load_config(None, str(feeds), {"AGGREGATOR_METRICS_LISTEN": ""}
                       ).settings.metrics_listen == ""
    settings = tmp_path / "aggregator.yaml"
    settings.write_text("listen: 127.0.0.1:8080\nmetrics_listen: 127.0.0.1:8080\n")
    with pytest.raises(Exception, match="metrics_listen must differ from listen"):
        load_config(str(settings), str(feeds), {})
    settings.write_text("metrics_listen: nowhere\n")
    with pytest.raises(Exception, match=r"aggregator.yaml:1:\d+: metrics_listen must be host:port"):
        load_config(str(settings), str(feeds), {})


# --------------------------------------------------------------------------- subprocess


def test_daemon_serves_metrics_on_both_listeners_without_access_lines(
        tmp_path: Path, feeds_server: FeedServer) -> None:
    feeds = write_feeds(tmp_path / "feeds.yaml",
                        [{"name": f"f{n}", "url": feeds_server.url(f"/feed/{n}.xml")}
                         for n in range(2)])
    port = free_port()
    d = DaemonProcess(tmp_path, feeds, AGGREGATOR_FULL_TEXT="false",
                      AGGREGATOR_METRICS_LISTEN=f"127.0.0.1:{port}",
                      AGGREGATOR_METRICS_PER_FEED="true")
    side = f"http://127.0.0.1:{port}"
    try:
        assert d.notify.wait_for("READY=1"), d.logtext()

        def polled() -> bool:
            m = parse(scrape(side)[2])
            return value(m, "aggregator_polls_total", outcome="ok") == 2 and \
                value(m, "aggregator_last_poll_cycle_timestamp_seconds") > 0
        assert d.wait_until(polled), d.logtext()
        m = parse(scrape(d.base)[2])
        assert value(m, "aggregator_entries_total", change="new") == 6
        assert value(m, "aggregator_feed_polls_total", feed="f1", outcome="ok") == 1
        assert d.wait_until(lambda: readyz(d.base)[0] == 200), d.logtext()
        assert readyz(side)[0] == 200
        assert scrape(d.base, "/healthz")[0] == 200
        d.get("/all.atom")
    finally:
        assert d.stop() == 0, d.logtext()
    log = d.logtext()
    # At the default level no request writes an access line (aggregator.access is DEBUG).
    assert '"GET /all.atom HTTP/1.1"' not in log, log
    for path in ("/metrics", "/readyz", "/healthz"):
        assert f'"GET {path} ' not in log, log
    assert f"serving /metrics, /healthz and /readyz at http://127.0.0.1:{port}/" in log


def test_every_error_kind_raised_has_its_own_label() -> None:
    """Each kind a FetchError or ParseError is raised with is in the bounded label set, so
    no failure hides under "other" (``stopped``, a fetch abandoned at shutdown, is never
    counted)."""
    import pathlib
    import re

    from aggregator import metrics

    raised: set[str] = set()
    for path in pathlib.Path(metrics.__file__).parent.rglob("*.py"):
        raised |= set(re.findall(r'(?:FetchError|ParseError)\(\s*"([a-z_]+)"', path.read_text()))
    assert "robots_unavailable" in raised
    assert raised - {"stopped"} <= metrics.ERROR_KINDS
