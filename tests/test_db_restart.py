"""The database restarting under running workers, `run` and serve nodes: a PostgreSQL server
of the test's own (pgcluster.PrivateCluster: initdb as an unprivileged user, a free port;
the shared server is never restarted), stopped in ``immediate`` mode (as a crash) while
poll jobs are in flight, started again a few seconds later. Real processes of the CLI, the
local feed server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aggregator.store.postgres import PostgresBase, create_database

from .feedserver import FeedServer
from .pgcluster import PrivateCluster, pg_bindir
from .util import cli, env_for, free_port, write_feeds

pytestmark = pytest.mark.slow

FEEDS = 10
ENTRIES = 3
HELD = {1, 4, 7}  # feeds whose requests get no answer until released: in flight at the stop
OUTAGE = 8.0  # seconds the server stays down


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    if pg_bindir() is None:
        reason = "no PostgreSQL server binaries (initdb) for a private cluster"
        if os.environ.get("AGGREGATOR_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"AGGREGATOR_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    c = PrivateCluster()
    try:
        c.start()
        c.wait_ready()
        yield c
    finally:
        c.destroy()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


class Node:
    """One process of the CLI (worker, serve or run) with its log."""

    def __init__(self, tmp: Path, feeds: Path, env: dict[str, str], role: str,
                 *args: str) -> None:
        self.role = role
        self.port = free_port()
        self.log = tmp / f"{role}-{self.port}.log"
        env = {**env, "AGGREGATOR_LISTEN": f"127.0.0.1:{self.port}"}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "aggregator.cli", "--feeds", str(feeds), role, *args],
                env=env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def lines(self, pattern: str) -> list[str]:
        return [line for line in self.text().splitlines() if re.search(pattern, line)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def wait(check: Callable[[], bool], what: str, logs: Callable[[], str],
         timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - the database may be down or starting
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{logs()[-6000:]}")


def test_workers_run_and_serve_survive_a_database_restart(
        tmp_path: Path, cluster: PrivateCluster) -> None:
    url = create_database(cluster.url, "agg")
    with FeedServer(feeds=FEEDS, entries=ENTRIES) as server:
        held = {f"/feed/{n}.xml" for n in HELD}
        server.held |= held
        feeds = write_feeds(tmp_path / "feeds.yaml", [
            {"name": f"f{n}", "url": server.url(f"/feed/{n}.xml")} for n in range(FEEDS)])
        env = env_for(
            tmp_path, AGGREGATOR_DATABASE=url, AGGREGATOR_BASE_URL="http://feeds.test/",
            AGGREGATOR_FULL_TEXT="false", AGGREGATOR_DEFAULT_INTERVAL="1h",
            AGGREGATOR_JITTER="0", AGGREGATOR_HEARTBEAT_INTERVAL="1",
            AGGREGATOR_STALLED_TIMEOUT="4", AGGREGATOR_SHUTDOWN_TIMEOUT="10",
            AGGREGATOR_READ_TIMEOUT="60", AGGREGATOR_FETCH_DEADLINE="90",
            AGGREGATOR_PER_HOST_CONCURRENCY="20")
        done = cli(["migrate"], env, feeds=feeds)
        assert done.returncode == 0, done.stderr
        nodes = [Node(tmp_path, feeds, env, "worker", "--concurrency", "3"),
                 Node(tmp_path, feeds, env, "worker", "--concurrency", "3"),
                 Node(tmp_path, feeds, env, "run"),
                 Node(tmp_path, feeds, env, "serve")]
        workers, run, serve = nodes[:2], nodes[2], nodes[3]
        pids = [n.proc.pid for n in nodes]

        def logs() -> str:
            return "\n".join(f"--- {n.role} {n.proc.pid}\n{n.text()}" for n in nodes)

        db = PostgresBase(url)
        try:
            def value(sql: str) -> Any:
                return db._query(sql)[0][0]

            def polled() -> int:
                return int(value("SELECT COUNT(*) FROM feeds WHERE last_success IS NOT NULL"))

            try:
                # Every feed but the held ones polled; the held ones' requests in flight.
                wait(lambda: polled() == FEEDS - len(HELD), "the other feeds polled", logs)
                wait(lambda: all(server.hits[p] >= 1 for p in held), "held requests", logs)
                for n in (run, serve):
                    wait(lambda n=n: get(n.url("readyz"))[0] == 200,  # type: ignore[misc]
                         f"{n.role} ready", logs)
                db.close()
                cluster.stop("immediate")
                stopped = time.monotonic()
                for n in (run, serve):
                    wait(lambda n=n: get(n.url("readyz"))[0] == 503,  # type: ignore[misc]
                         f"{n.role} /readyz 503 while the database is down", logs,
                         timeout=OUTAGE * 3)
                # The held requests answer now: their jobs write to a database that is gone.
                server.release.set()
                time.sleep(max(0.0, OUTAGE - (time.monotonic() - stopped)))
                for n in (run, serve):
                    assert get(n.url("readyz"))[0] == 503, f"{n.role}\n{logs()[-6000:]}"
                cluster.start()
                cluster.wait_ready()
                db = PostgresBase(url)
                wait(lambda: polled() == FEEDS, "every feed polled after the restart", logs)
                for n in (run, serve):
                    wait(lambda n=n: get(n.url("readyz"))[0] == 200,  # type: ignore[misc]
                         f"{n.role} /readyz 200 again", logs)
                for n in workers + [run]:
                    wait(lambda n=n: len(n.lines("reachable again")) >= 1,  # type: ignore[misc]
                         f"{n.role} {n.proc.pid} back", logs)
                recovered = time.monotonic() - stopped
                # Every job in flight at the stop ended: committed, or retried as a
                # stalled worker's job (its worker id is dead), or failed and deferred
                # again while its feed was still due.
                wait(lambda: int(value("SELECT COUNT(*) FROM procrastinate_jobs WHERE "
                                       "status = 'doing' AND task_name = 'poll_feed'")) == 0,
                     "no poll job left doing", logs)
                # Each of the three processes with a worker has one heartbeating again (a
                # new worker id where its worker stopped; the old ids go stale, pruned).
                wait(lambda: int(value(
                    "SELECT COUNT(*) FROM procrastinate_workers "
                    "WHERE last_heartbeat > now() - interval '3 seconds'")) == 3,
                     "three live workers", logs)
                wait(lambda: get(serve.url("index.html"))[0] == 200, "documents served", logs)
                # Nothing stored twice, nothing missing.
                total = int(value("SELECT COUNT(*) FROM entries"))
                distinct = int(value("SELECT COUNT(DISTINCT (feed_id, key)) FROM entries"))
                assert total == distinct == FEEDS * ENTRIES, (total, distinct)
                assert int(value("SELECT COUNT(DISTINCT feed_id) FROM entries")) == FEEDS
                # The same processes throughout, each saying the outage once, without a
                # traceback.
                assert [n.proc.pid for n in nodes] == pids
                assert all(n.proc.poll() is None for n in nodes), logs()[-6000:]
                for n in workers + [run]:
                    down = n.lines("database unreachable: ")
                    up = n.lines("database reachable again after")
                    assert len(down) == 1 and len(up) == 1, f"{n.role}\n{n.text()[-6000:]}"
                    assert f"127.0.0.1:{cluster.port}/agg" in down[0], down
                for n in nodes:
                    assert "Traceback" not in n.text(), f"{n.role}\n{n.text()[-6000:]}"
                assert len(serve.lines("database does not answer")) == 1, serve.text()
                assert len(serve.lines("database answers")) >= 1, serve.text()
                print(f"recovered {recovered:.1f} s after the stop "
                      f"(down {OUTAGE:.0f} s)")
            finally:
                for n in nodes:
                    n.stop()
        finally:
            db.close()
