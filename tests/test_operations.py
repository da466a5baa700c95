"""Operations (issue 14): quiet and structured logs, and faults an operator must not have to
notice: orphaned worker processes, a WAL pinned by a long reader, a full or failing disk."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import feedparser
import pytest

import aggregator.files
import aggregator.pipeline as pipeline_module
from aggregator.config import load_config
from aggregator.errors import ConfigError
from aggregator.pipeline import PUBLISH_RETRY_MAX, PUBLISH_RETRY_MIN, WAL_BOUND, Pipeline

from .feedserver import FeedServer
from .test_daemon import Daemon
from .test_daemon import _no_daemon_left_behind as _no_daemon_left_behind  # autouse
from .util import cli, env_for, write_feeds


def make_pipeline(tmp_path: Path, server: FeedServer, n: int, **env: str) -> Pipeline:
    path = write_feeds(tmp_path / "feeds.yaml",
                       [{"name": f"f{i}", "url": server.url(f"/feed/{i}.xml")} for i in range(n)])
    config = load_config(None, str(path), env_for(tmp_path, AGGREGATOR_FULL_TEXT="false", **env))
    return Pipeline(config, processes=1)


def items_in(path: Path) -> int:
    if path.suffix == ".json":
        return len(json.loads(path.read_bytes())["items"])
    parsed = feedparser.parse(path.read_bytes())
    assert not parsed.bozo, path
    return len(parsed.entries)


class _Later:
    """Stands in for the `time` module in aggregator.pipeline: the clock jumps forward."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def monotonic(self) -> float:
        return time.monotonic() + self.seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


# --------------------------------------------------------------------------- settings


def test_log_format_setting(tmp_path: Path) -> None:
    feeds = write_feeds(tmp_path / "feeds.yaml", [{"name": "a", "url": "https://example.com/"}])
    assert load_config(None, str(feeds), {}).settings.log_format == "text"
    config = load_config(None, str(feeds), {"AGGREGATOR_LOG_FORMAT": "JSON"})
    assert config.settings.log_format == "json"
    with pytest.raises(ConfigError) as exc:
        load_config(None, str(feeds), {"AGGREGATOR_LOG_FORMAT": "xml"})
    assert "log_format must be one of text, json" in str(exc.value.problems[0])


# --------------------------------------------------------------------------- logs


def test_json_log_lines_carry_structured_fields(tmp_path: Path) -> None:
    with socket.socket() as s:  # nothing listens there: the fetch fails
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    url = f"http://127.0.0.1:{dead}/feed.xml"
    feeds = write_feeds(tmp_path / "feeds.yaml", [{"name": "dead", "url": url}])
    r = cli(["update", "--all"], env_for(tmp_path, AGGREGATOR_LOG_FORMAT="json"), feeds)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    for rec in records:
        assert {"time", "level", "logger", "message"} <= rec.keys()
        assert rec["time"].endswith("Z")
    failure = next(rec for rec in records if rec.get("feed") == "dead")
    assert failure["level"] == "WARNING" and failure["logger"] == "aggregator.pipeline"
    assert failure["url"] == url and failure["kind"] == "connect"
    summary = next(rec for rec in records if rec.get("kind") == "poll")
    assert summary["level"] == "INFO" and summary["failed"] == 1 and summary["feeds"] == 1


@pytest.mark.slow  # among the longest of the suite: make test-fast skips it
def test_idle_daemon_writes_nothing_at_the_default_level(tmp_path: Path) -> None:
    with FeedServer(feeds=2, entries=3) as server:
        feeds = write_feeds(tmp_path / "feeds.yaml",
                            [{"name": f"f{n}", "url": server.url(f"/feed/{n}.xml")}
                             for n in range(2)])
        # Feeds due on every poll tick, answering 304 after the first poll.
        d = Daemon(tmp_path, feeds, AGGREGATOR_FULL_TEXT="false", AGGREGATOR_MIN_INTERVAL="1s",
                   AGGREGATOR_DEFAULT_INTERVAL="1s", AGGREGATOR_JITTER="0")
        try:
            assert d.notify.wait_for("READY=1"), d.logtext()
            assert d.wait_until(lambda: len(feedparser.parse(d.get("/all.atom")).entries) == 6), \
                d.logtext()
            # The first poll did something: one summary line.
            assert d.wait_until(lambda: "poll: 2 feeds polled, 6 new entries" in d.logtext())
            cycles = json.loads(d.get("/status.json"))["cycles"]
            before = d.logtext()
            # Two more poll ticks of 304s, several maintenance ticks, HTTP requests.
            assert d.wait_until(
                lambda: json.loads(d.get("/status.json"))["cycles"] >= cycles + 2, 60)
            assert server.hits["/feed/0.xml"] >= 3
            assert d.logtext() == before, d.logtext()[len(before):]
        finally:
            assert d.stop() == 0, d.logtext()
    assert "Running job" not in before and "executed successfully" not in before
    assert "GET /" not in before


# --------------------------------------------------------------------------- orphans


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = (task / "children").read_text().split()
            except OSError:
                continue
            for k in map(int, kids):
                if k not in found:
                    found.add(k)
                    todo.append(k)
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its new parent to reap it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_workers_exit_when_the_daemon_is_killed(tmp_path: Path) -> None:
    with FeedServer(feeds=2, entries=3) as server:
        feeds = write_feeds(tmp_path / "feeds.yaml",
                            [{"name": f"f{n}", "url": server.url(f"/feed/{n}.xml")}
                             for n in range(2)])
        d = Daemon(tmp_path, feeds)  # full text: parse and extraction pools both start
        kids: set[int] = set()
        try:
            assert d.notify.wait_for("READY=1"), d.logtext()
            db = tmp_path / "agg.db"

            def extracted() -> bool:
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                try:
                    return bool(conn.execute(
                        "SELECT COUNT(*) FROM entries WHERE extract_status = 'done'"
                    ).fetchone()[0])
                finally:
                    conn.close()

            assert d.wait_until(extracted, 60), d.logtext()
            kids = _descendants(d.proc.pid)
            # A parser worker, an extraction worker and multiprocessing's resource tracker.
            assert len(kids) >= 3, kids
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait(10)
            end = time.monotonic() + 30
            while time.monotonic() < end and any(_alive(k) for k in kids):
                time.sleep(0.1)
            left = {k: Path(f"/proc/{k}/cmdline").read_bytes()[:80] for k in kids if _alive(k)}
            assert not left, f"orphans of the killed daemon: {left}"
        finally:
            for k in kids:  # never leave the orphans of a failing run behind
                if _alive(k):
                    os.kill(k, signal.SIGKILL)
            d.stop()


# --------------------------------------------------------------------------- WAL


def test_long_reader_warned_once_and_wal_truncated_after(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with FeedServer(feeds=10, entries=20) as server:
        p = make_pipeline(tmp_path, server, 10)
        try:
            p.run_cycle(all_feeds=True)
            assert p.checkpoint()
            assert p.store.disk_usage()[1] == 0  # folded back and truncated
            # A downstream tool holding a snapshot: BEGIN; SELECT; and nothing more.
            reader = sqlite3.connect(tmp_path / "agg.db")
            reader.execute("BEGIN")
            reader.execute("SELECT COUNT(*) FROM items").fetchone()
            with caplog.at_level(logging.INFO, logger="aggregator.pipeline"):
                cycles = 0
                while p.store.disk_usage()[1] <= 2 * WAL_BOUND:
                    cycles += 1
                    assert cycles < 40
                    server.round = cycles
                    p.run_cycle(all_feeds=True)
                    assert not p.checkpoint()  # as the daemon does after each cycle
                    assert not p.checkpoint(if_larger_than=WAL_BOUND)  # maintenance tick
                held = [r for r in caplog.records if "WAL" in r.getMessage()]
                assert len(held) == 1, [r.getMessage() for r in held]
                assert held[0].levelno == logging.WARNING
                assert "MB" in held[0].getMessage() and held[0].wal_bytes > WAL_BOUND
                reader.execute("COMMIT")
                reader.close()
                assert p.checkpoint()
            assert p.store.disk_usage()[1] == 0
            recovered = [r for r in caplog.records if "WAL" in r.getMessage()][1:]
            assert len(recovered) == 1 and recovered[0].levelno == logging.INFO
        finally:
            p.close()


def test_status_reports_database_and_wal_size(tmp_path: Path) -> None:
    with FeedServer(feeds=1, entries=3) as server:
        feeds = write_feeds(tmp_path / "feeds.yaml", [{"name": "a", "url": server.url("/feed/0.xml")}])
        env = env_for(tmp_path, AGGREGATOR_FULL_TEXT="false")
        assert cli(["update", "--all"], env, feeds).returncode == 0
        reader = sqlite3.connect(tmp_path / "agg.db")  # keeps the WAL from being truncated
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM entries").fetchone()
        try:
            server.round = 1
            assert cli(["update", "--all"], env, feeds).returncode == 0
            wal = (tmp_path / "agg.db-wal").stat().st_size
            assert wal > 0
            r = cli(["status", "--json"], env, feeds)
            assert r.returncode == 0, r.stderr
            data = json.loads(r.stdout)
            assert data["wal_bytes"] >= wal
            assert data["database_bytes"] == (tmp_path / "agg.db").stat().st_size
            r = cli(["status"], env, feeds)
            assert "WAL" in r.stdout.splitlines()[-1], r.stdout
        finally:
            reader.close()


# --------------------------------------------------------------------------- publish faults


def test_failed_files_do_not_stop_the_others_and_are_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = aggregator.files.write_atomic
    failing = {"all.rss", "index.html"}

    def faulty(path: Path | str, data: bytes, **kw: Any) -> bool:
        if Path(path).name in failing:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_write(path, data, **kw)

    monkeypatch.setattr(aggregator.files, "write_atomic", faulty)
    out = tmp_path / "public"
    with FeedServer(feeds=2, entries=3) as server:
        p = make_pipeline(tmp_path, server, 2)
        try:
            p.poll(p.due(all_feeds=True))
            assert p.dirty.is_set()
            with caplog.at_level(logging.INFO, logger="aggregator.pipeline"):
                written = p.publish()  # before: OSError at all.rss, nothing after it
            assert out / "all.atom" in written and out / "all.json" in written
            assert items_in(out / "all.json") == 6 and items_in(out / "all.atom") == 6
            assert not (out / "all.rss").exists() and not (out / "index.html").exists()
            assert (out / "outputs.opml").exists()
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert sorted(r.path for r in errors) == [str(out / "all.rss"),
                                                      str(out / "index.html")]
            for r in errors:  # one line each, with the path and the reason, no traceback
                msg = r.getMessage()
                assert "\n" not in msg and r.exc_info is None
                assert r.path in msg and "No space left on device" in msg
            # Kept to publish, with backoff: not before the first retry is due.
            assert p.dirty.is_set() and not p.publish_due()
            assert p.publish_retry_in() == pytest.approx(PUBLISH_RETRY_MIN, abs=2)
            p.publish()
            assert p.publish_retry_in() == pytest.approx(2 * PUBLISH_RETRY_MIN, abs=2)
            for _ in range(10):
                p.publish()
            assert p.publish_retry_in() == pytest.approx(PUBLISH_RETRY_MAX, abs=2)

            # Space comes back; no new entry arrives: the retry publishes what failed.
            failing.clear()
            caplog.clear()
            monkeypatch.setattr(pipeline_module, "time", _Later(PUBLISH_RETRY_MAX + 1))
            assert p.publish_due()
            with caplog.at_level(logging.INFO, logger="aggregator.pipeline"):
                p.publish()
            assert items_in(out / "all.rss") == 6
            assert (out / "index.html").exists()
            assert p.publish_retry_in() is None and not p.publish_due()
            assert any("recovered" in r.getMessage() for r in caplog.records)
        finally:
            p.close()


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "public"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", f"h7test{uuid.uuid4().hex[:6]}",
                        str(mount)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_then_space_back_publishes_without_a_new_entry(
    tmp_path: Path, small_tmpfs: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    filler = small_tmpfs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # take every byte of the disk
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    with FeedServer(feeds=2, entries=3) as server:
        p = make_pipeline(tmp_path, server, 2)
        try:
            p.poll(p.due(all_feeds=True))
            with caplog.at_level(logging.ERROR, logger="aggregator.pipeline"):
                p.publish()  # before: OSError out of publish
            failed = {Path(r.path).name for r in caplog.records}
            assert {"all.atom", "all.rss", "all.json", "index.html"} <= failed
            assert all("No space left on device" in r.getMessage() for r in caplog.records)
            assert not [f for f in small_tmpfs.iterdir() if f.name.startswith(".")]  # no temps
            # The command line says so: exit 1, one line per file, no traceback.
            r = cli(["publish"], env_for(tmp_path), tmp_path / "feeds.yaml")
            assert r.returncode == 1, r.stderr
            assert "Traceback" not in r.stderr
            lines = [line for line in r.stderr.splitlines() if "No space left on device" in line]
            assert any(line.endswith("all.rss: [Errno 28] No space left on device; retry in 15 s")
                       for line in lines), r.stderr
            assert len(lines) == len(failed)
            filler.unlink()
            monkeypatch.setattr(pipeline_module, "time", _Later(PUBLISH_RETRY_MIN + 1))
            assert p.publish_due()
            p.publish()
            for ext in ("atom", "rss", "json"):
                assert items_in(small_tmpfs / f"all.{ext}") == 6
            assert (small_tmpfs / "index.html").exists()
            assert not p.publish_due()
        finally:
            p.close()
