"""The daemon as systemd runs it: a real subprocess, signals, sd_notify, reload, HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import feedparser
import pytest

from .feedserver import FeedServer
from .util import env_for, write_feeds


class Notify:
    """A fake systemd notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink(missing_ok=True)  # a previous daemon's socket in the same directory
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def wait_for(self, text: str, timeout: float = 30) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(text in m for m in self.messages):
                return True
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                pass
        return any(text in m for m in self.messages)


STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_daemon_left_behind() -> Iterator[None]:
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


class Daemon:
    def __init__(self, tmp: Path, feeds: Path, **env: str) -> None:
        self.tmp = tmp
        self.notify = Notify(tmp / "notify.sock")
        self.env = env_for(tmp, NOTIFY_SOCKET=str(self.notify.path), **env)
        self.log = open(tmp / "daemon.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aggregator.cli", "--feeds", str(feeds), "run"],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT, cwd=tmp,
        )
        STARTED.append(self.proc)
        self.base = "http://" + self.env["AGGREGATOR_LISTEN"]

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.base + path, timeout=5) as r:
            return bytes(r.read())

    def logtext(self) -> str:
        return (self.tmp / "daemon.log").read_text(errors="replace")

    def wait_until(self, predicate: object, timeout: float = 30) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if predicate():  # type: ignore[operator]
                    return True
            except Exception:
                pass
            time.sleep(0.2)
        return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # never leave a daemon behind; the test still fails
            self.proc.wait(10)
            raise
        finally:
            self.log.close()


def test_run_ready_serve_and_sigterm(tmp_path: Path, server: FeedServer) -> None:
    feeds = write_feeds(tmp_path / "feeds.yaml",
                        [{"name": f"f{n}", "url": server.url(f"/feed/{n}.xml")}
                         for n in range(4)])
    d = Daemon(tmp_path, feeds, AGGREGATOR_FULL_TEXT="false")
    try:
        assert d.notify.wait_for("READY=1"), d.logtext()
        assert d.wait_until(lambda: len(feedparser.parse(d.get("/all.atom")).entries) == 16), \
            d.logtext()
        index = d.get("/").decode()
        assert "all.atom" in index
        status = json.loads(d.get("/status.json"))
        assert {f["name"] for f in status["feeds"]} == {"f0", "f1", "f2", "f3"}
    finally:
        code = d.stop()  # within Daemon.stop's timeout, else the test fails
    assert code == 0, d.logtext()
    assert d.notify.wait_for("STOPPING=1", 2)
    # Where it serves is said once (the server's line, with a bracketed IPv6 host when there
    # is one), not a second time by the daemon in other words.
    serving = [line for line in d.logtext().splitlines() if ": serving " in line]
    assert len(serving) == 1 and serving[0].endswith(f" at {d.base}/"), serving
    conn = sqlite3.connect(tmp_path / "agg.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.slow  # among the longest of the suite: make test-fast skips it
def test_reload_keeps_old_config_when_broken(tmp_path: Path, server: FeedServer) -> None:
    feeds = write_feeds(tmp_path / "feeds.yaml",
                        [{"name": "f0", "url": server.url("/feed/0.xml")}])
    d = Daemon(tmp_path, feeds, AGGREGATOR_FULL_TEXT="false")
    try:
        assert d.notify.wait_for("READY=1"), d.logtext()
        assert d.wait_until(lambda: len(feedparser.parse(d.get("/all.atom")).entries) == 4)
        # A broken file: SIGHUP logs the problem with its line and keeps running.
        feeds.write_text("feeds:\n  - name: f0\n    url: [oops\n")
        d.proc.send_signal(signal.SIGHUP)
        assert d.wait_until(lambda: "reload refused" in d.logtext(), 15), d.logtext()
        assert "feeds.yaml:" in d.logtext()
        assert d.proc.poll() is None
        assert len(feedparser.parse(d.get("/all.atom")).entries) == 4
        # A valid edit on disk is picked up without a signal.
        write_feeds(feeds, [{"name": "f0", "url": server.url("/feed/0.xml")},
                            {"name": "f1", "url": server.url("/feed/1.xml")}])
        assert d.wait_until(
            lambda: len(feedparser.parse(d.get("/all.atom")).entries) == 8, 40), d.logtext()
    finally:
        assert d.stop() == 0, d.logtext()


def test_sigterm_during_busy_cycle(tmp_path: Path) -> None:
    with FeedServer(feeds=6, entries=3) as server:
        # Every fetch stays in flight (no answer) until the test is over.
        server.held.update(f"/feed/{n}.xml" for n in range(6))
        feeds = write_feeds(tmp_path / "feeds.yaml",
                            [{"name": f"f{n}", "url": server.url(f"/feed/{n}.xml")}
                             for n in range(6)])
        d = Daemon(tmp_path, feeds, AGGREGATOR_FULL_TEXT="false",
                   AGGREGATOR_FETCH_DEADLINE="30", AGGREGATOR_READ_TIMEOUT="30")
        assert d.notify.wait_for("READY=1"), d.logtext()
        assert d.wait_until(lambda: sum(server.hits.values()) >= 2, 15)
        code = d.stop()  # a daemon waiting for its fetches would wait for their 30 s deadline
        assert code == 0, d.logtext()
        assert not server.release.is_set()  # it exited with every fetch still unanswered
    conn = sqlite3.connect(tmp_path / "agg.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_offline_feeds_still_serve_valid_empty_feeds(tmp_path: Path) -> None:
    # Nothing listens on these ports: every fetch fails with a connection error.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    feeds = write_feeds(tmp_path / "feeds.yaml",
                        [{"name": f"dead{n}", "url": f"http://127.0.0.1:{dead}/{n}.xml"}
                         for n in range(2)])
    d = Daemon(tmp_path, feeds)
    try:
        assert d.notify.wait_for("READY=1"), d.logtext()
        # Each feed's failure, as its kind (one line holds "connect" twice: "connect: ...
        # connection refused", so a count of "connect" was met by the first feed's line).
        assert d.wait_until(lambda: all(f"dead{n}: connect: " in d.logtext() for n in range(2)),
                            20), d.logtext()
        atom = feedparser.parse(d.get("/all.atom"))
        assert not atom.bozo and atom.entries == []
        rss = feedparser.parse(d.get("/all.rss"))
        assert not rss.bozo
        assert "dead0" in d.logtext() and "dead1" in d.logtext()
    finally:
        assert d.stop() == 0, d.logtext()


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_restart_resumes_schedule(tmp_path: Path, server: FeedServer) -> None:
    feeds = write_feeds(tmp_path / "feeds.yaml",
                        [{"name": "f0", "url": server.url("/feed/0.xml")}])
    d = Daemon(tmp_path, feeds, AGGREGATOR_FULL_TEXT="false")
    assert d.notify.wait_for("READY=1")
    # Wait until the poll is committed (not merely sent), then restart.
    assert d.wait_until(
        lambda: json.loads(d.get("/status.json"))["feeds"][0]["last_success"] is not None)
    assert d.stop() == 0
    hits = server.hits["/feed/0.xml"]
    d = Daemon(tmp_path, feeds, AGGREGATOR_FULL_TEXT="false")
    try:
        assert d.notify.wait_for("READY=1")
        time.sleep(3)
        # The feed is not due for another ~15 minutes: a restart must not refetch it.
        assert server.hits["/feed/0.xml"] == hits
    finally:
        assert d.stop() == 0
