"""Workers: the pipeline's work as procrastinate jobs in the PostgreSQL database (the only
module that imports procrastinate).

Any number of `aggregator worker` processes, on any machines that reach the database, share
the work; there is no queue, lease table or polling loop of ours, only procrastinate's:

- ``poll_feed(feed_id)``: polls one feed, then that feed's article backlog. Its ``lock``
  ``feed:<id>`` keeps two jobs of one feed from running at once, its ``queueing_lock`` (the
  same name) keeps two from waiting; a job that waited while another polled the feed finds
  it no longer due and skips it (one fetch per feed per round).
- ``publish_outputs()``: renders every output (lock and queueing lock ``publish``), deferred
  by a poll job that changed something publishable.
- ``schedule_due`` (periodic, every SCHEDULE_SECONDS): defers ``poll_feed`` for every due
  feed (the store's ``due_feeds``, today's next_poll arithmetic). Every worker runs the
  periodic deferrer; procrastinate records each tick (procrastinate_periodic_defers), so
  one worker defers it: scheduling has no single point of failure.
- ``retry_stalled`` (periodic): procrastinate marks workers by heartbeat but never retries
  the jobs of a dead one; this finds them (``get_stalled_jobs`` past ``stalled_timeout``)
  and retries them, so a SIGKILLed worker loses nothing (entries are upserted by feed and
  key: a poll done twice stores nothing twice).
- ``maintenance`` (periodic, hourly): article page retention, entry retention, old jobs.

A database outage does not end the process: the worker procrastinate stops when its
database goes away is replaced by a new one once the database answers again, after one
warning line and retries with backoff (Workers.run_async).

Sync tasks run in the worker's threads (procrastinate's sync_to_async); they share the
process's one Pipeline, whose writer thread serialises this process's writes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from procrastinate import App, PsycopgConnector, SyncPsycopgConnector
from procrastinate.exceptions import AlreadyEnqueued, ConnectorException
from procrastinate.jobs import Status
from procrastinate.manager import JobManager
from procrastinate.schema import SchemaManager
from procrastinate.worker import Worker

from .errors import AggregatorError
from .models import Config
from .pipeline import Pipeline
from .store import migrate_database
from .store.pg_url import redact
from .store.postgres import database_problem, describe_failure, is_connection_failure

log = logging.getLogger("aggregator.tasks")

SCHEDULE_SECONDS = 5  # how often due feeds are looked for (cron field 6, the last: seconds)
RETRY_SECONDS = 10  # how often stalled jobs are looked for
OLD_JOBS_HOURS = 24  # finished jobs kept this long (what `procrastinate` shows), then deleted
MAINTENANCE_LOCK = "maintenance"
PUBLISH_LOCK = "publish"
# Seconds past shutdown_timeout a stopping worker waits for jobs that ignored the stop (a
# thread blocked in a fetch), before it exits anyway.
EXIT_GRACE = 5.0
# While the database does not answer: tries to connect this long apart, doubling up to
# BACKOFF_MAX, before the worker is started again.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
RESTART_SECONDS = 5.0  # before a worker that stopped for another reason is started again
# procrastinate's loggers that report a failed side task, job or shutdown with a traceback:
# a lost database is said once by the supervisor instead (Workers._outage).
PROCRASTINATE_LOGGERS = ("procrastinate.worker", "procrastinate.utils")


# The queueing locks of a task's jobs waiting or running. list_jobs filters on one status
# with an "IS NULL OR" the planner cannot match to procrastinate's partial index on
# todo/doing jobs, and the table keeps finished jobs OLD_JOBS_HOURS: this one is an index
# scan of the jobs not finished.
WAITING_OR_RUNNING = (
    "SELECT queueing_lock FROM procrastinate_jobs WHERE status = ANY("
    "ARRAY['todo', 'doing']::procrastinate_job_status[]) AND task_name = %(task)s")


# A publish job waiting (procrastinate's unique partial index on todo queueing locks).
PUBLISH_WAITING = ("SELECT 1 FROM procrastinate_jobs WHERE queueing_lock = %(lock)s"
                   " AND status = 'todo'")


# A batch of at least this many deferred jobs refreshes the jobs table's statistics.
ANALYZE_AFTER = 100


def feed_lock(feed_id: int) -> str:
    return f"feed:{feed_id}"


def task_schema() -> tuple[str, list[tuple[str, str]]]:
    """procrastinate's schema and its versioned migrations (file name, SQL), in order: what
    `aggregator migrate` applies on PostgreSQL (store.postgres.PostgresBase.migrate_tasks)."""
    folder = Path(SchemaManager.get_migrations_path())
    migrations = sorted((p.name, p.read_text(encoding="utf-8")) for p in folder.glob("*.sql"))
    return SchemaManager.get_schema(), migrations


def migrate(url: str) -> list[str]:
    """The store's migrations and the task engine's, as `aggregator migrate` applies them."""
    return migrate_database(url, tasks=task_schema())


def default_concurrency(config: Config) -> int:
    """Jobs at once in one worker: ``worker_concurrency``, else ``workers`` (the fetches one
    process runs at once today): a job waits on the network most of its time, and its CPU
    work (parsing, extraction) runs in the pipeline's process pools, not in these threads."""
    s = config.settings
    return max(1, s.worker_concurrency or s.workers)


class Workers:
    """One process's procrastinate App bound to its Pipeline: the tasks above."""

    def __init__(self, config: Config, pipeline: Pipeline | None = None, *,
                 concurrency: int | None = None) -> None:
        self.config = config
        self.pipeline = pipeline or Pipeline(config)
        self.concurrency = concurrency or default_concurrency(config)
        # The pool: a connection per job at once, the notification listener, the heartbeat
        # and the periodic deferrer. The URL (and its password) is never logged.
        self.app = App(connector=PsycopgConnector(
            conninfo=config.settings.database, min_size=1, max_size=self.concurrency + 4,
            kwargs={"application_name": "aggregator-worker"}))
        self._register()
        self.worker: Worker | None = None
        # Why the database does not answer (None: it does): what `run`'s /readyz reports.
        self.database_problem: str | None = None
        self._outage_since: float | None = None  # monotonic start of the current outage
        self._outage_lock = threading.Lock()
        self._quiet = _OutageFilter(self._suspected)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._suspect = asyncio.Event()
        self._suspect_exc: BaseException | None = None
        # The publish job is enqueued inside the store's transaction that made the change
        # (PostgreSQL store's write_hook), on that transaction's connection.
        self._in_tx = JobManager(SyncPsycopgConnector())
        self.transactional = hasattr(self.pipeline.store, "write_hook")
        if self.transactional:
            for store in self.pipeline.stores:  # every writer's
                store.write_hook = self._defer_publish_on  # type: ignore[attr-defined]

    # ----------------------------------------------------------------------- tasks

    def _register(self) -> None:
        app = self.app
        s = self.config.settings

        @app.task(name="poll_feed")
        def poll_feed(feed_id: int, feed: str) -> str:
            return self.poll_feed(feed_id, feed)

        @app.task(name="publish_outputs", lock=PUBLISH_LOCK, queueing_lock=PUBLISH_LOCK)
        def publish_outputs() -> int:
            return self.publish()

        @app.periodic(cron=f"* * * * * */{SCHEDULE_SECONDS}", periodic_id="schedule_due")
        @app.task(name="schedule_due", lock="schedule_due", queueing_lock="schedule_due")
        def schedule_due(timestamp: int) -> int:
            return self.schedule_due()

        @app.periodic(cron=f"* * * * * */{RETRY_SECONDS}", periodic_id="retry_stalled")
        @app.task(name="retry_stalled", lock="retry_stalled", queueing_lock="retry_stalled")
        async def retry_stalled(timestamp: int) -> int:
            return await self.retry_stalled(s.stalled_timeout)

        @app.periodic(cron="17 * * * *", periodic_id="maintenance")
        @app.task(name="maintenance", lock=MAINTENANCE_LOCK, queueing_lock=MAINTENANCE_LOCK)
        async def maintenance(timestamp: int) -> None:
            await self.maintenance()

        self._poll_task = poll_feed
        self._publish_task = publish_outputs

    def poll_feed(self, feed_id: int, feed: str) -> str:
        """One feed's poll and its article backlog; "skipped" when it is no longer due (a
        job that waited on the feed's lock while another polled it), or no longer
        configured under that name."""
        p = self.pipeline
        now = datetime.now(UTC)
        states = [st for st in p.writer.call(lambda st: st.feed_states([feed]))
                  if st.id == feed_id]
        if not states or states[0].disabled_reason is not None or (
                states[0].next_poll is not None and states[0].next_poll > now):
            return "skipped"
        state = states[0]
        outcomes = p.poll([state], summary=False)
        changed = any(o.new or o.updated or o.stories_merged for o in outcomes)
        if p.config.settings.full_text and not p.stopping.is_set():  # reloaded config
            done, _failed = p.process_articles(feed=state.name)
            changed = changed or done > 0
        if changed and not self.transactional:
            self.defer_publish()  # (the store enqueued it in the feed's transaction)
        return outcomes[0].status if outcomes else "stopped"

    def defer_publish(self) -> bool:
        """Enqueue the publish job unless one already waits (its queueing lock)."""
        try:
            self._publish_task.defer()
        except AlreadyEnqueued:
            return False
        return True

    def _defer_publish_on(self, conn: Any) -> None:
        """Enqueue the publish job on ``conn``, in its open transaction, within a savepoint
        (``conn.transaction()`` nested): a refused duplicate (a publish job already waits:
        its queueing lock) rolls back to the savepoint, never the caller's transaction.
        The store calls it after its own statements, so a transaction is open and
        ``transaction()`` is a savepoint, not a transaction of its own."""
        # One waiting already (the usual case while polls go on): it runs after this
        # commit... or has just started, exactly as when its queueing lock refuses ours;
        # asking first spares the savepoint and the refused INSERT, three round trips.
        if conn.execute(PUBLISH_WAITING, {"lock": PUBLISH_LOCK}).fetchone() is not None:
            return
        job = self._publish_task.configure().job
        try:
            with conn.transaction():
                self._in_tx.defer_job(job, connection=conn)
        except AlreadyEnqueued:
            pass

    def publish(self) -> int:
        """The one place a worker publishes (pipeline.publish: files in output_dir)."""
        try:
            return len(self.pipeline.publish())
        except Exception as exc:  # a bug or an unreadable store: one line, retried next change
            self.pipeline.publish_failed(exc)
            return 0

    def schedule_due(self) -> int:
        """Defer poll_feed for every due feed; returns how many were enqueued. A feed
        whose poll job already waits (todo) or runs (doing) gets none: a waiting one would
        only find the feed polled and skip it, and each refused defer (the queueing lock)
        is a failed INSERT, every tick, for every feed still due. The rest go in one
        batch; should one of them be enqueued meanwhile (retry_stalled), one by one."""
        manager = self.app.job_manager
        # Jobs first, then due feeds: a job that finishes in between has committed its
        # feed's next poll, so its feed is no longer due (a job deferred for a feed that
        # was polled meanwhile finds it not due and skips it).
        busy = {row["queueing_lock"] for row in
                self.app.connector.get_sync_connector().execute_query_all(
                    query=WAITING_OR_RUNNING, task="poll_feed")}
        due = self.pipeline.due()
        if not due:
            return 0
        jobs = []
        for st in due:
            lock = feed_lock(st.id)
            if lock not in busy:
                jobs.append(self._poll_task.configure(lock=lock, queueing_lock=lock)
                            .make_new_job(feed_id=st.id, feed=st.name))
        if not jobs:
            return 0
        try:
            manager.batch_defer_jobs(jobs)
            deferred = len(jobs)
        except AlreadyEnqueued:  # the batch is one INSERT: none of it was enqueued
            deferred = 0
            for job in jobs:
                try:
                    manager.defer_job(job)
                except AlreadyEnqueued:
                    continue
                deferred += 1
        if deferred >= ANALYZE_AFTER:
            # The job fetch (procrastinate_fetch_job) looks up each waiting job's lock among
            # the others: without fresh statistics on the jobs table (autovacuum off, or not
            # yet run after a burst) PostgreSQL plans it as a scan per candidate, and a cold
            # round of thousands of waiting jobs fetched ~1.4 jobs/s (bench-scale) instead of
            # what the workers can run. ANALYZE samples the table: milliseconds.
            self.app.connector.get_sync_connector().execute_query(
                query="ANALYZE procrastinate_jobs")
        if deferred:
            log.debug("scheduled %d due feeds", deferred)
        return deferred

    async def retry_stalled(self, stalled_timeout: float) -> int:
        """Retry the jobs of workers silent for ``stalled_timeout``; forget those workers."""
        manager = self.app.job_manager
        retried = 0
        for job in await manager.get_stalled_jobs(seconds_since_heartbeat=stalled_timeout):
            assert job.id is not None
            if job.queueing_lock:
                # A job of the same feed deferred meanwhile (the stalled one was 'doing', so
                # the queueing lock let it in) is this one's duplicate, waiting on its lock:
                # it goes, and the stalled job itself is retried (the lock cannot be left
                # held by a dead worker's job, and two cannot wait).
                for waiting in await manager.list_jobs_async(
                        queueing_lock=job.queueing_lock, status="todo"):
                    if waiting.id is not None and waiting.task_name == job.task_name:
                        await manager.cancel_job_by_id_async(waiting.id, delete_job=True)
            try:
                await manager.retry_job(job)
                retried += 1
                continue
            except Exception as exc:  # noqa: BLE001 - another waiting job took the lock
                why = _reason(exc)
            try:
                # That job does the work; this one must not hold the lock forever.
                await manager.finish_job_by_id_async(job.id, status=Status.FAILED,
                                                     delete_job=False)
                log.info("stalled job %s not retried (%s): marked failed", job.id, why)
            except Exception as exc:
                # procrastinate_finish_job refuses (RAISE: sqlstate P0001) a job no longer
                # doing or todo. Its worker was late, not dead (its heartbeat lapsed while
                # the database was away) and finished it, or another worker's retry_stalled
                # got to it first: no longer doing is all this task is for.
                if getattr(exc.__cause__, "sqlstate", None) != "P0001":
                    raise
                log.info("stalled job %s ended meanwhile, left as it is (%s)", job.id,
                         _reason(exc))
        if retried:
            log.warning("retried %d job(s) of stalled workers", retried)
        await manager.prune_stalled_workers(stalled_timeout)
        return retried

    async def maintenance(self) -> None:
        """What the daemon's hourly upkeep does that makes sense on PostgreSQL: article
        page retention, entry retention (pipeline.prune; in a thread, it blocks), and
        finished jobs older than OLD_JOBS_HOURS deleted."""
        await asyncio.to_thread(self._prune)
        await self.app.job_manager.delete_old_jobs(nb_hours=OLD_JOBS_HOURS)

    def _prune(self) -> None:
        p = self.pipeline
        days = p.config.settings.page_retention_days
        pages = p.writer.call(
            lambda st: st.prune_pages(datetime.now(UTC) - timedelta(days=days)))
        try:
            report = p.prune()
        except AggregatorError as exc:
            log.error("pruning entries failed: %s", exc)
            return
        if report.entries or pages:
            log.info("pruned %d entries (%d stories deleted), %d article pages",
                     report.entries, report.stories_deleted, pages)

    # ----------------------------------------------------------------------- running

    def make_worker(self, *, install_signal_handlers: bool = False) -> Worker:
        s = self.config.settings
        self.worker = Worker(
            self.app, name=f"{socket.gethostname()}:{os.getpid()}",
            concurrency=self.concurrency,
            shutdown_graceful_timeout=s.shutdown_timeout,
            update_heartbeat_interval=s.heartbeat_interval,
            stalled_worker_timeout=s.stalled_timeout,
            install_signal_handlers=install_signal_handlers,
        )
        return self.worker

    async def run_async(self, stop: asyncio.Event | None = None,
                        on_started: Callable[[], None] | None = None) -> None:
        """Run a worker until ``stop`` is set: in-flight jobs then get ``shutdown_timeout``
        to finish, after which the pipeline stops taking work (fetches not started are
        dropped, the feed stays due) and the worker exits.

        A worker that stops by itself has lost its database (procrastinate stops a worker
        whose heartbeat, listener or job fetch fails): the outage is logged once, the
        database tried again with exponential backoff (BACKOFF_FIRST doubling up to
        BACKOFF_MAX), and a new worker (a new worker id, with a fresh connection pool) is
        started once it answers. Its jobs in flight either committed before the outage,
        or stay 'doing' under the old worker id until retry_stalled retries them
        (stalled_timeout after its last heartbeat), or failed and their feed is still due
        (schedule_due defers it again)."""
        stop = stop or asyncio.Event()
        asyncio.get_running_loop().set_exception_handler(_loop_exception)
        for name in PROCRASTINATE_LOGGERS:
            logging.getLogger(name).addFilter(self._quiet)
        try:
            while not stop.is_set():
                failure = await self._run_once(stop, on_started)
                on_started = None
                if stop.is_set():
                    break
                url = self.config.settings.database
                why: str | None
                if failure is not None and is_connection_failure(failure):
                    why = describe_failure(url, failure)
                else:
                    why = await asyncio.to_thread(database_problem, url)
                    if why is None and self._outage_since is None:
                        # Not the database (a bug in a side task): one line, restarted.
                        log.error("the worker stopped (%s); restarting", "by itself"
                                  if failure is None else f"{type(failure).__name__}: "
                                  f"{failure}")
                        await _sleep_unless(stop, RESTART_SECONDS)
                        continue
                self._outage(why or f"{redact(url)}: connection lost")
                if await self._await_database(stop):
                    self._recovered()
        finally:
            for name in PROCRASTINATE_LOGGERS:
                logging.getLogger(name).removeFilter(self._quiet)

    async def _run_once(self, stop: asyncio.Event,
                        on_started: Callable[[], None] | None) -> BaseException | None:
        """One worker, on a pool of its own, until ``stop`` or until it stops by itself;
        what ended it (None: a stop, or a worker that simply returned). A connection
        failure procrastinate reported meanwhile (_OutageFilter) is checked at once, so
        that the outage is known (and /readyz says so) while the worker still drains."""
        url = self.config.settings.database
        worker = self.make_worker()
        worker.logger.addFilter(self._quiet)  # (a child logger: filters are not inherited)
        self._loop = asyncio.get_running_loop()
        self._suspect = asyncio.Event()
        try:
            async with self.app.open_async():
                run = asyncio.create_task(worker.run())
                if on_started:
                    on_started()
                waiter = asyncio.create_task(stop.wait())
                delay = BACKOFF_FIRST
                while not run.done() and not stop.is_set():
                    suspect = asyncio.create_task(self._suspect.wait())
                    await asyncio.wait(
                        [run, waiter, suspect], return_when=asyncio.FIRST_COMPLETED,
                        timeout=delay if self._outage_since is not None else None)
                    suspect.cancel()
                    if run.done() or stop.is_set():
                        break
                    problem = await asyncio.to_thread(database_problem, url)
                    if self._suspect.is_set():
                        self._suspect.clear()
                        if problem is not None:
                            self._outage(problem)
                        elif self._outage_since is None and self._suspect_exc is not None:
                            log.warning("a database connection failed (%s); reconnected",
                                        describe_failure(url, self._suspect_exc))
                    elif problem is None:
                        # (procrastinate has no public "stopping": a worker that stops
                        # itself has lost its database, the restart below then says so)
                        stopping = getattr(worker, "_stop_event", None)
                        if stopping is None or not stopping.is_set():
                            self._recovered("")  # an outage the worker lived through
                        delay = BACKOFF_FIRST
                    else:
                        delay = min(delay * 2, BACKOFF_MAX)
                waiter.cancel()
                if not run.done():
                    self.stop_worker()
                await run
        except Exception as exc:  # noqa: BLE001 - said by run_async, once
            return exc
        return None

    def _suspected(self, exc: BaseException) -> None:
        """From _OutageFilter (any thread): procrastinate hit a connection failure."""
        self._suspect_exc = exc
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._suspect.set)

    def _outage(self, why: str) -> None:
        """The database went away: ONE warning line per outage."""
        with self._outage_lock:
            self.database_problem = why
            if self._outage_since is not None:
                return
            self._outage_since = time.monotonic()
        log.warning("database unreachable: %s; retrying", why)

    async def _await_database(self, stop: asyncio.Event) -> bool:
        """Try the database with exponential backoff until it answers (True) or ``stop``."""
        delay = BACKOFF_FIRST
        url = self.config.settings.database
        while not stop.is_set():
            problem = await asyncio.to_thread(database_problem, url)
            if problem is None:
                return True
            self.database_problem = problem
            await _sleep_unless(stop, delay)
            delay = min(delay * 2, BACKOFF_MAX)
        return False

    def _recovered(self, restarted: str = "; worker restarted") -> None:
        with self._outage_lock:
            since, self._outage_since = self._outage_since, None
            self.database_problem = None
        # Connections the server dropped would fail the next transactions: replaced now.
        for store in (*self.pipeline.stores, getattr(self.pipeline, "_reader", None)):
            drop = getattr(store, "drop_broken_connections", None)
            if drop is not None:
                try:
                    drop()
                except Exception:  # noqa: BLE001 - the pool replaces them on use anyway
                    pass
        took = time.monotonic() - since if since is not None else 0.0
        log.info("database reachable again after %.0f s%s", took, restarted)

    def stop_worker(self) -> None:
        """Stop fetching jobs; abandon what still runs after ``shutdown_timeout``."""
        if self.worker is not None:
            self.worker.stop()
        timer = threading.Timer(self.config.settings.shutdown_timeout, self.pipeline.stop)
        timer.daemon = True
        timer.start()


class _OutageFilter(logging.Filter):
    """Drops procrastinate's records (with their tracebacks) of a lost database, and
    reports the outage instead (once: Workers._outage)."""

    def __init__(self, on_suspect: Callable[[BaseException], None]) -> None:
        super().__init__()
        self._on_suspect = on_suspect

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and is_connection_failure(exc):
            self._on_suspect(exc)
            return False
        return True


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A job task of a worker that lost its database can end with its status not
    recorded, an exception nobody retrieves (procrastinate's shutdown only waits for its
    jobs): said in one line, without the traceback asyncio would print."""
    exc = context.get("exception")
    if isinstance(exc, ConnectorException):
        if is_connection_failure(exc):
            log.debug("job task ended without its database: %s", exc.__cause__)
            return
        task = context.get("future") or context.get("task")
        cause = str(exc.__cause__ or exc).strip().splitlines()
        log.info("%s: its end not recorded (%s); a stalled job's retry ran it meanwhile "
                 "or retries it", getattr(task, "get_name", lambda: "a job")(),
                 cause[0] if cause else type(exc).__name__)
        return
    loop.default_exception_handler(context)


def _reason(exc: BaseException) -> str:
    """One line for a failed job-manager call: procrastinate's ConnectorException says only
    "Database error."; the database's own message is its cause."""
    inner = exc.__cause__ or exc
    lines = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {lines[0]}" if lines else type(inner).__name__


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


def run_worker(config: Config, *, concurrency: int | None = None) -> int:
    """`aggregator worker`: the task schema brought up to date, then a worker until SIGTERM
    or SIGINT, which drain in-flight jobs within ``shutdown_timeout``. Exit code 0."""
    migrate(config.settings.database)
    workers = Workers(config, concurrency=concurrency)
    log.info("worker started: concurrency %d", workers.concurrency)

    bound = config.settings.shutdown_timeout + EXIT_GRACE

    def on_signal(stop: asyncio.Event) -> None:
        if stop.is_set():
            return
        stop.set()
        # A job blocked past the bound (a fetch that does not answer) would hold the exit:
        # the process ends anyway; that job stays 'doing' and retry_stalled retries it.
        timer = threading.Timer(bound, _exit_abandoning)
        timer.daemon = True
        timer.start()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, stop)
        await workers.run_async(stop)

    try:
        asyncio.run(main())
    finally:
        workers.pipeline.close()
    log.info("worker stopped")
    return 0


def _exit_abandoning() -> None:
    log.warning("jobs still running %.0f s after the stop: exiting; another worker retries "
                "them once this one's heartbeat is stale", EXIT_GRACE)
    logging.shutdown()
    os._exit(0)


class WorkerThread:
    """A worker in a thread of its own, with its own event loop, sharing a Pipeline: the
    daemon's work on PostgreSQL (`aggregator run`: the worker, the HTTP server and the
    daemon's upkeep in one process). ``on_alive`` is called every ``heartbeat_interval``
    while the worker runs (the daemon's progress: an idle worker is not a stuck one)."""

    def __init__(self, config: Config, pipeline: Pipeline, *,
                 on_alive: Callable[[], None] | None = None) -> None:
        migrate(config.settings.database)
        self.workers = Workers(config, pipeline)
        self._on_alive = on_alive
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._run, name="aggregator-worker",
                                       daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self.thread.start()
        self._started.wait(timeout)
        log.info("worker started: concurrency %d", self.workers.concurrency)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            alive = asyncio.create_task(self._alive())
            try:
                await self.workers.run_async(self._stop, on_started=self._started.set)
            finally:
                alive.cancel()

        try:
            asyncio.run(main())
        except Exception:  # logged; the daemon's progress check then reports it
            log.exception("the worker stopped")
        finally:
            self._started.set()

    async def _alive(self) -> None:
        while True:
            if self._on_alive is not None:
                self._on_alive()
            await asyncio.sleep(self.workers.config.settings.heartbeat_interval)

    @property
    def database_problem(self) -> str | None:
        """Why the worker's database does not answer, None while it does."""
        return self.workers.database_problem

    def stop(self) -> None:
        """Drain as `aggregator worker` does on SIGTERM (within shutdown_timeout)."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self.thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
            self.thread.join(self.workers.config.settings.shutdown_timeout + 10)

