"""`aggregator worker` on PostgreSQL (procrastinate): real worker processes of the CLI, the
local feed server, a database of the test's own (postgres_url; skipped without a server)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aggregator.store.postgres import PostgresBase

from .feedserver import FeedServer
from .util import cli, env_for, write_feeds

FEED_SERVER = {"feeds": 6, "entries": 3}

STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_worker_left_behind() -> Iterator[None]:
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


class Setup:
    def __init__(self, tmp: Path, url: str, server: FeedServer, feeds: int, **env: str
                 ) -> None:
        self.tmp = tmp
        self.url = url
        self.server = server
        self.feeds = write_feeds(tmp / "feeds.yaml", [
            {"name": f"f{n}", "url": server.url(f"/feed/{n}.xml")} for n in range(feeds)])
        self.env = env_for(
            tmp, AGGREGATOR_DATABASE=url, AGGREGATOR_BASE_URL="http://feeds.test/",
            AGGREGATOR_FULL_TEXT="false",
            AGGREGATOR_DEFAULT_INTERVAL="1h", AGGREGATOR_JITTER="0",
            AGGREGATOR_HEARTBEAT_INTERVAL="1", AGGREGATOR_STALLED_TIMEOUT="4",
            AGGREGATOR_SHUTDOWN_TIMEOUT="30", **env)
        self.db = PostgresBase(url)
        self.logs: list[Path] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = self.tmp / f"worker{len(self.logs)}.log"
        self.logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "aggregator.cli", "--feeds", str(self.feeds), "worker",
             *args], env=self.env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
            cwd=self.tmp)
        STARTED.append(proc)
        return proc

    def logtext(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs)

    def query(self, sql: str, params: Any = None) -> list[Any]:
        return self.db._query(sql, params)

    def value(self, sql: str, params: Any = None) -> Any:
        return self.query(sql, params)[0][0]

    def document(self, name: str) -> bytes | None:
        """A published document as serve nodes read it (on PostgreSQL, publish stores them
        in the database, not in output_dir)."""
        rows = self.query("SELECT body FROM documents WHERE name = %s", (name,))
        return bytes(rows[0][0]) if rows else None

    def wait(self, check: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except Exception:  # noqa: BLE001 - the schema may not exist yet
                pass
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}\n{self.logtext()[-4000:]}")

    def polled(self) -> int:
        return int(self.value("SELECT COUNT(*) FROM feeds WHERE last_success IS NOT NULL"))

    def feed_hits(self) -> dict[str, int]:
        return {p: n for p, n in self.server.hits.items() if p.startswith("/feed/")}


@pytest.fixture
def setup(tmp_path: Path, postgres_url: str, server: FeedServer) -> Iterator[Setup]:
    s = Setup(tmp_path, postgres_url, server, FEED_SERVER["feeds"])
    yield s
    s.db.close()


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    return proc.wait(60)


def test_worker_on_sqlite_is_refused_with_one_line(tmp_path: Path, server: FeedServer) -> None:
    feeds = write_feeds(tmp_path / "feeds.yaml", [{"name": "a", "url": server.url("/feed/0.xml")}])
    done = cli(["worker"], env_for(tmp_path), feeds=feeds)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "postgresql://" in lines[0] and "run" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_migrate_applies_the_task_schema_once(setup: Setup) -> None:
    done = cli(["migrate"], setup.env, feeds=setup.feeds)
    assert done.returncode == 0, done.stderr
    assert "procrastinate schema" in done.stdout
    assert setup.value("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
    recorded = setup.value("SELECT COUNT(*) FROM task_migrations")
    assert recorded > 10  # every versioned migration recorded as applied with the schema
    again = cli(["migrate"], setup.env, feeds=setup.feeds)
    assert again.returncode == 0 and "schema up to date" in again.stdout, again.stdout
    # procrastinate's tables are not "another project's": check accepts the database.
    checked = cli(["check"], setup.env, feeds=setup.feeds)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.slow
def test_two_workers_poll_every_feed_once_and_publish(setup: Setup) -> None:
    workers = [setup.start("--concurrency", "3") for _ in range(2)]
    n = FEED_SERVER["feeds"]
    setup.wait(lambda: setup.polled() == n, "every feed polled")
    setup.wait(lambda: setup.document("index.html") is not None, "outputs published")
    # Several more scheduling ticks: nothing is due again within the hour.
    time.sleep(12)
    hits = setup.feed_hits()
    assert hits == {f"/feed/{i}.xml": 1 for i in range(n)}, hits
    entries = setup.value("SELECT COUNT(*) FROM entries")
    assert entries == n * FEED_SERVER["entries"]
    assert setup.value("SELECT COUNT(DISTINCT (feed_id, key)) FROM entries") == entries
    # Each scheduling tick was deferred by one worker only: one job per tick.
    ticks = tick_jobs(setup)
    assert len(ticks) >= 3 and all(count == 1 for count in ticks.values()), ticks
    # Both workers took jobs (registered, with heartbeats).
    assert setup.value("SELECT COUNT(DISTINCT worker_id) FROM procrastinate_jobs"
                       " WHERE worker_id IS NOT NULL") >= 1
    # Published after the last change: every entry in the output.
    setup.wait(lambda: (setup.document("all.atom") or b"").count(b"<entry>") == entries,
               "every entry published")
    assert all(stop(w) == 0 for w in workers), setup.logtext()[-3000:]
    # Quiet logs: a job's one-feed poll is no INFO line (thousands a day on a big fleet).
    assert "feeds polled" not in setup.logtext(), setup.logtext()[-3000:]


@pytest.mark.slow
def test_periodic_tick_deferred_once_with_three_workers(setup: Setup) -> None:
    for _ in range(3):
        setup.start("--concurrency", "1")
    setup.wait(lambda: setup.value("SELECT COUNT(*) FROM procrastinate_workers") == 3,
               "three workers registered")
    first = max(tick_jobs(setup), default=0)
    setup.wait(lambda: len([t for t in tick_jobs(setup) if t > first]) >= 4,
               "four scheduling ticks with three workers")
    ticks = tick_jobs(setup)
    assert all(count == 1 for count in ticks.values()), ticks
    # Every worker ran the deferrer (each tick was offered three times), one won each tick.
    assert setup.value("SELECT COUNT(*) FROM procrastinate_workers") == 3


def tick_jobs(setup: Setup) -> dict[int, int]:
    """schedule_due jobs per periodic tick (procrastinate_periodic_defers keeps only the
    latest tick; each job carries its tick's timestamp)."""
    return {int(r[0]): int(r[1]) for r in setup.query(
        "SELECT args->>'timestamp', COUNT(*) FROM procrastinate_jobs"
        " WHERE task_name = 'schedule_due' GROUP BY 1")}


def _runs(setup: Setup, feed_id: int) -> list[tuple[Any, Any]]:
    """(started, finished) of every poll job of one feed, from procrastinate's events."""
    return [(r[0], r[1]) for r in setup.query(
        "SELECT MIN(e.at) FILTER (WHERE e.type = 'started'),"
        " MAX(e.at) FILTER (WHERE e.type IN ('succeeded', 'failed', 'aborted'))"
        " FROM procrastinate_jobs j JOIN procrastinate_events e ON e.job_id = j.id"
        " WHERE j.task_name = 'poll_feed' AND j.lock = %s GROUP BY j.id"
        " HAVING MIN(e.at) FILTER (WHERE e.type = 'started') IS NOT NULL ORDER BY 1",
        (f"feed:{feed_id}",))]


@pytest.mark.slow
def test_two_poll_jobs_of_one_feed_never_run_at_once(setup: Setup) -> None:
    # The feed answers slowly and is due again at once (interval 0 is refused: min 1 s via
    # a failing feed's backoff is too slow; here the feed's jobs are deferred by hand too).
    setup.server.delay["/feed/0.xml"] = 2.0
    feeds = write_feeds(setup.feeds, [{"name": "f0", "url": setup.server.url("/feed/0.xml")}])
    setup.feeds = feeds
    done = cli(["migrate"], setup.env, feeds=feeds)
    assert done.returncode == 0, done.stderr
    workers = [setup.start("--concurrency", "4") for _ in range(2)]
    setup.wait(lambda: setup.polled() == 1, "the feed polled")
    feed_id = setup.value("SELECT id FROM feeds WHERE name = 'f0'")
    # Make it due again, several times, while workers run: each round's jobs wait on the
    # lock, never overlap.
    for _ in range(3):
        setup.query("UPDATE feeds SET next_poll = now() - interval '1 second'"
                    " WHERE id = %s RETURNING id", (feed_id,))
        setup.wait(lambda: setup.value("SELECT next_poll > now() FROM feeds WHERE id = %s",
                                       (feed_id,)), "the feed polled again")
    runs = _runs(setup, feed_id)
    assert len(runs) >= 4
    for (_, end), (start, _) in zip(runs, runs[1:], strict=False):
        assert end is not None and start >= end, runs
    # Polled once per round: the first poll and three rounds.
    assert setup.server.hits["/feed/0.xml"] == 4
    assert all(stop(w) == 0 for w in workers)


@pytest.mark.slow
def test_a_killed_workers_job_is_retried_and_nothing_is_stored_twice(setup: Setup) -> None:
    setup.server.held.add("/feed/0.xml")  # in flight until released
    setup.env.update(AGGREGATOR_READ_TIMEOUT="60", AGGREGATOR_FETCH_DEADLINE="90")
    first = setup.start("--concurrency", "2")
    setup.wait(lambda: setup.server.hits["/feed/0.xml"] >= 1, "the slow feed in flight")
    setup.wait(lambda: setup.polled() == FEED_SERVER["feeds"] - 1, "the other feeds polled")
    feed_id = setup.value("SELECT id FROM feeds WHERE name = 'f0'")
    killed = setup.value("SELECT id FROM procrastinate_jobs WHERE lock = %s"
                         " AND status = 'doing'", (f"feed:{feed_id}",))
    first.kill()
    first.wait(10)
    setup.server.release.set()
    second = setup.start("--concurrency", "2")
    setup.wait(lambda: setup.polled() == FEED_SERVER["feeds"], "the killed job retried")
    setup.wait(lambda: setup.value(
        "SELECT COUNT(*) FROM procrastinate_jobs WHERE lock = %s AND status = 'doing'",
        (f"feed:{feed_id}",)) == 0, "the feed's lock free")
    # The killed job itself was retried and completed (no other job of the feed ran it).
    assert "job(s) of stalled workers" in setup.logtext()
    assert setup.value("SELECT status FROM procrastinate_jobs WHERE id = %s",
                       (killed,)) == "succeeded"
    assert setup.server.hits["/feed/0.xml"] == 2  # the killed attempt and the retry
    entries = setup.value("SELECT COUNT(*) FROM entries")
    assert entries == FEED_SERVER["feeds"] * FEED_SERVER["entries"]
    assert setup.value("SELECT COUNT(DISTINCT (feed_id, key)) FROM entries") == entries
    assert stop(second) == 0


@pytest.mark.slow
def test_sigterm_drains_the_job_in_flight_and_exits_zero(setup: Setup) -> None:
    setup.server.delay["/feed/0.xml"] = 2.5  # under the read timeout (env_for: 3 s)
    proc = setup.start("--concurrency", "6")
    setup.wait(lambda: setup.server.hits["/feed/0.xml"] >= 1, "the slow feed in flight")
    assert setup.value("SELECT last_success FROM feeds WHERE name = 'f0'") is None
    assert stop(proc) == 0, setup.logtext()[-3000:]
    # The job in flight completed before the worker exited: the feed is recorded.
    assert setup.value("SELECT last_success FROM feeds WHERE name = 'f0'") is not None
    assert setup.value("SELECT COUNT(*) FROM procrastinate_jobs WHERE status = 'doing'") == 0
    assert setup.value("SELECT COUNT(*) FROM procrastinate_workers") == 0


def test_update_runs_one_cycle_in_process_on_postgres(setup: Setup) -> None:
    done = cli(["update"], setup.env, feeds=setup.feeds)
    assert done.returncode == 0, done.stdout + done.stderr
    n = FEED_SERVER["feeds"]
    assert f"{n} feeds polled, 0 failed, {n * FEED_SERVER['entries']} new entries" in done.stdout
    assert setup.polled() == n
    assert setup.document("index.html") is not None
    assert not (setup.tmp / "public").exists()  # documents live in the database
    again = cli(["update"], setup.env, feeds=setup.feeds)  # nothing due within the hour
    assert again.returncode == 0 and "0 feeds polled" in again.stdout, again.stdout


@pytest.mark.slow
def test_run_on_postgres_is_worker_and_server_in_one_process(setup: Setup) -> None:
    import urllib.request

    log = setup.tmp / "run.log"
    setup.logs.append(log)
    proc = subprocess.Popen(
        [sys.executable, "-m", "aggregator.cli", "--feeds", str(setup.feeds), "run"],
        env=setup.env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=setup.tmp)
    STARTED.append(proc)
    base = "http://" + setup.env["AGGREGATOR_LISTEN"]

    def get(path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(base + path, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    n = FEED_SERVER["feeds"]
    setup.wait(lambda: setup.polled() == n, "every feed polled by run's worker")
    # Published after the polls (the publish job), and served by run's HTTP server.
    total = n * FEED_SERVER["entries"]
    setup.wait(lambda: get("/all.atom")[1].count(b"<entry>") == total, "every entry served")
    assert get("/healthz")[0] == 200
    setup.wait(lambda: get("/readyz")[0] == 200, "ready")
    assert get("/index.html")[0] == 200
    assert setup.value("SELECT COUNT(*) FROM procrastinate_workers") == 1
    assert stop(proc) == 0, setup.logtext()[-3000:]
    assert setup.value("SELECT COUNT(*) FROM procrastinate_workers") == 0


def test_the_publish_job_is_enqueued_in_the_writes_transaction(setup: Setup) -> None:
    from aggregator.config import load_config
    from aggregator.tasks import Workers, migrate

    from .test_storage import entry, poll, words

    migrate(setup.url)
    config = load_config(None, str(setup.feeds), setup.env)
    workers = Workers(config)
    try:
        store: Any = workers.pipeline.store
        assert workers.transactional and store.write_hook is not None

        def publish_jobs() -> int:
            return int(setup.value("SELECT COUNT(*) FROM procrastinate_jobs"
                                   " WHERE task_name = 'publish_outputs'"))

        # A write that stores nothing new enqueues nothing.
        workers.pipeline.writer.call(lambda st: poll(st, "f0"))
        assert publish_jobs() == 0
        # A new entry: the job is committed with it.
        workers.pipeline.writer.call(lambda st: poll(st, "f0", entry("a", words(30, 1))))
        assert publish_jobs() == 1
        # Another change while that job waits: its queueing lock refuses a second, within a
        # savepoint, and the write still commits.
        workers.pipeline.writer.call(lambda st: poll(st, "f1", entry("b", words(30, 2))))
        assert publish_jobs() == 1
        assert setup.value("SELECT COUNT(*) FROM entries") == 2
        # A transaction rolled back takes its job with it.
        setup.query("DELETE FROM procrastinate_jobs RETURNING id")
        with pytest.raises(RuntimeError), store._tx() as c:
            c.execute("UPDATE feeds SET title = 'changed' WHERE name = 'f0'")
            store.write_hook(c)
            raise RuntimeError("the write failed")
        assert publish_jobs() == 0
        assert setup.value("SELECT title FROM feeds WHERE name = 'f0'") != "changed"
    finally:
        workers.pipeline.close()


@pytest.mark.slow
def test_sigterm_past_the_bound_exits_zero_and_the_job_is_retried(setup: Setup) -> None:
    setup.server.held.add("/feed/0.xml")  # never answers until released
    setup.env.update(AGGREGATOR_SHUTDOWN_TIMEOUT="1", AGGREGATOR_READ_TIMEOUT="120",
                     AGGREGATOR_FETCH_DEADLINE="180")
    proc = setup.start("--concurrency", "6")
    setup.wait(lambda: setup.server.hits["/feed/0.xml"] >= 1, "the held feed in flight")
    assert stop(proc) == 0, setup.logtext()[-3000:]
    assert "jobs still running" in setup.logtext()
    assert setup.value("SELECT last_success FROM feeds WHERE name = 'f0'") is None
    # Nothing lost: another worker retries the abandoned job once its heartbeat is stale.
    setup.server.release.set()
    other = setup.start("--concurrency", "2")
    setup.wait(lambda: setup.polled() == FEED_SERVER["feeds"], "the abandoned job retried")
    assert stop(other) == 0


def test_maintenance_prunes_old_article_pages(setup: Setup) -> None:
    import asyncio
    from datetime import timedelta

    from aggregator.config import load_config
    from aggregator.tasks import Workers, migrate

    from .test_storage import NOW, entry, poll, words

    migrate(setup.url)
    workers = Workers(load_config(None, str(setup.feeds), setup.env))
    try:
        p = workers.pipeline

        def store_page(st: Any) -> None:
            e = poll(st, "f0", entry("a", words(30, 1), status="pending"))[0]
            st.record_article(e.id, now=NOW - timedelta(days=400), status="failed",
                              method=None, error="x", page=("u", None, None, b"<p>x</p>"))

        p.writer.call(store_page)
        assert setup.value("SELECT COUNT(*) FROM pages") == 1

        async def run() -> None:
            async with workers.app.open_async():
                await workers.maintenance()

        asyncio.run(run())
        assert setup.value("SELECT COUNT(*) FROM pages") == 0
    finally:
        p.close()


def test_a_stalled_timeout_shorter_than_two_heartbeats_is_refused(tmp_path: Path) -> None:
    feeds = write_feeds(tmp_path / "feeds.yaml", [])
    done = cli(["check"], env_for(tmp_path, AGGREGATOR_HEARTBEAT_INTERVAL="10",
                                  AGGREGATOR_STALLED_TIMEOUT="15"), feeds=feeds)
    assert done.returncode != 0
    assert "stalled_timeout must be at least twice heartbeat_interval" in done.stdout


def test_schedule_due_skips_feeds_whose_poll_job_waits_or_runs(setup: Setup) -> None:
    """One job per due feed, in one batch; none for a feed whose job waits (todo) or runs
    (doing): a second one would only wait on the feed's lock, then skip, and every tick
    would retry the refused defers of every feed still due."""
    from aggregator.config import load_config
    from aggregator.tasks import Workers, migrate

    migrate(setup.url)
    config = load_config(None, str(setup.feeds), setup.env)
    workers = Workers(config)
    feeds = FEED_SERVER["feeds"]

    def jobs(status: str) -> int:
        return int(setup.value("SELECT COUNT(*) FROM procrastinate_jobs WHERE task_name ="
                               " 'poll_feed' AND status = %s", (status,)))
    try:
        with workers.app.open():
            assert workers.schedule_due() == feeds  # every feed is due at first
            assert jobs("todo") == feeds
            assert workers.schedule_due() == 0  # each already waits
            assert jobs("todo") == feeds
            # One feed's job runs (as a worker's would), still due meanwhile: no second job.
            setup.query("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = (SELECT"
                        " MIN(id) FROM procrastinate_jobs) RETURNING id")
            assert workers.schedule_due() == 0
            assert jobs("todo") == feeds - 1 and jobs("doing") == 1
            # That job ended without polling (the feed is still due): it is scheduled again.
            setup.query("UPDATE procrastinate_jobs SET status = 'failed' WHERE status ="
                        " 'doing' RETURNING id")
            assert workers.schedule_due() == 1
            assert jobs("todo") == feeds
    finally:
        workers.pipeline.close()


def test_a_large_batch_of_due_feeds_refreshes_the_job_tables_statistics(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """procrastinate's job fetch needs statistics on its jobs table (unanalysed, a cold round
    of thousands of waiting jobs was fetched ~1.4 jobs/s): a large batch ANALYZEs it."""
    import aggregator.tasks as tasks
    from aggregator.config import load_config

    tasks.migrate(setup.url)
    config = load_config(None, str(setup.feeds), setup.env)
    workers = tasks.Workers(config)

    def reltuples() -> float:  # -1: never analysed (PostgreSQL 14+)
        return float(setup.value("SELECT reltuples FROM pg_class"
                                 " WHERE relname = 'procrastinate_jobs'"))
    try:
        with workers.app.open():
            assert reltuples() == -1
            monkeypatch.setattr(tasks, "ANALYZE_AFTER", FEED_SERVER["feeds"] + 1)
            assert workers.schedule_due() == FEED_SERVER["feeds"]  # under the bound
            assert reltuples() == -1
            setup.query("DELETE FROM procrastinate_jobs RETURNING id")
            monkeypatch.setattr(tasks, "ANALYZE_AFTER", FEED_SERVER["feeds"])
            assert workers.schedule_due() == FEED_SERVER["feeds"]
            assert reltuples() == FEED_SERVER["feeds"]
    finally:
        workers.pipeline.close()


def test_a_stalled_job_that_ended_meanwhile_is_left_alone(
        setup: Setup, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """retry_stalled lists a stalled job (its worker's heartbeat lapsed: a database outage
    does that to a live worker), and the job ends before it is retried (that late worker
    finished it, or another worker's retry_stalled got to it first): one info line, no
    error, and the job stays as it ended. (The interleaving is forced by running the
    ending right after the real listing: the race a database restart test met.)"""
    import asyncio
    import logging

    from aggregator.config import load_config
    from aggregator.tasks import Workers, migrate

    migrate(setup.url)
    config = load_config(None, str(setup.feeds), setup.env)
    workers = Workers(config)
    try:
        with workers.app.open():
            assert workers.schedule_due() == FEED_SERVER["feeds"]
        late = setup.value("INSERT INTO procrastinate_workers(last_heartbeat) VALUES"
                           " (now() - interval '1 hour') RETURNING id")
        job_id = setup.value("UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s"
                             " WHERE id = (SELECT MIN(id) FROM procrastinate_jobs) RETURNING id",
                             (late,))
        manager = workers.app.job_manager
        listed = manager.get_stalled_jobs

        async def listed_then_ended(*args: Any, **kwargs: Any) -> Any:
            jobs = list(await listed(*args, **kwargs))
            assert [j.id for j in jobs] == [job_id]
            setup.query("UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = %s"
                        " RETURNING id", (job_id,))
            return jobs

        monkeypatch.setattr(manager, "get_stalled_jobs", listed_then_ended)

        async def run() -> int:
            async with workers.app.open_async():
                return await workers.retry_stalled(4.0)

        with caplog.at_level(logging.INFO, logger="aggregator"):
            assert asyncio.run(run()) == 0
        assert setup.value("SELECT status FROM procrastinate_jobs WHERE id = %s",
                           (job_id,)) == "succeeded"
        lines = [r.getMessage() for r in caplog.records if "ended meanwhile" in r.getMessage()]
        assert len(lines) == 1 and f"stalled job {job_id} " in lines[0], caplog.text
        assert "not found" in lines[0] and "\n" not in lines[0], lines
    finally:
        workers.pipeline.close()
