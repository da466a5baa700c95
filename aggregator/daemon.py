"""The daemon: scheduler, HTTP server, signals, reload and systemd notification.

Scheduling state (next poll per feed) lives in the database, so a restart resumes where it
stopped. APScheduler runs four jobs: a short `poll` tick that polls the feeds that are due,
an `articles` job that drains the full-text backlog within its budget, `publish`, and
`maintenance` (config file watch, watchdog, database write check, WAL checkpoint, page
and entry retention). Jobs never overlap themselves.

Progress has one definition (`Progress`), consulted by both the systemd watchdog ping and
`/readyz`: the scheduler made progress when a poll tick completed, a feed's poll was
recorded or an article was stored, within `progress_bound(settings)` seconds.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from apscheduler.executors.pool import ThreadPoolExecutor as APThreadPool
from apscheduler.schedulers.background import BackgroundScheduler

from .config import load_config
from .errors import ConfigError
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .models import Config, MetricsSnapshot, Settings
from .pipeline import EXTRACT_TIMEOUT, WAL_BOUND, Pipeline
from .server import FeedServer
from .store import is_postgres_url

log = logging.getLogger("aggregator.daemon")

POLL_TICK = 10.0  # seconds between looks at which feeds are due
ARTICLE_TICK = 20.0
MAINTENANCE_TICK = 5.0
# Pages of search-index merging, and free pages returned to the file system, per hourly
# prune: the rest follows in the next hours, so the writer never pauses long.
VACUUM_PAGES = 25_000
PUBLISH_TICK = 15.0
WRITE_CHECK_TIMEOUT = 2.0  # seconds the database write check waits for the write lock
MAX_REPORTED_PROBLEMS = 5  # problems of a refused configuration listed by /readyz


def progress_bound(settings: Settings) -> float:
    """Seconds without progress after which the daemon counts as stuck (/readyz answers
    503 and the systemd watchdog is no longer pinged).

    Progress is marked when a poll tick completes (every POLL_TICK when nothing is due),
    when a feed's poll is recorded and when an article is stored. The longest legitimate
    silence is every fetch thread busy with one slow job: a fetch that runs to its deadline,
    then its parse or extraction to their timeouts. Two poll ticks on top, and never under
    six ticks (60 s).
    """
    slowest = settings.fetch_deadline + max(settings.parse_timeout, EXTRACT_TIMEOUT)
    return max(6 * POLL_TICK, slowest + 2 * POLL_TICK)


class Progress:
    """When the scheduler last made progress, on an injectable monotonic clock."""

    def __init__(self, bound: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.bound = bound
        self._clock = clock
        self._last = clock()

    def mark(self) -> None:
        self._last = self._clock()

    def age(self) -> float:
        return max(0.0, self._clock() - self._last)

    def ok(self) -> bool:
        return self.age() <= self.bound


def sd_notify(message: str) -> bool:
    """Send a systemd notification (READY=1, WATCHDOG=1, STOPPING=1, ...) if under systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(addr)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        log.debug("sd_notify failed: %s", exc)
        return False


def _watchdog_interval() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or not usec.isdigit():
        return None
    return int(usec) / 1e6 / 2  # ping twice per watchdog period


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).replace(microsecond=0).isoformat() \
        .replace("+00:00", "Z")


def status_document(store: Any, *, started: float, cycles: int = 0,
                    last_cycle: dict[str, Any] | None = None) -> dict[str, Any]:
    """The status document (/status.json, what /status renders) from ``store`` (a Storage,
    read-only), for a process up since ``started`` (monotonic)."""
    now = datetime.now(UTC).replace(microsecond=0)
    document = store.status(now)
    db_bytes, wal_bytes = store.disk_usage()
    return {
        "generated": now.isoformat().replace("+00:00", "Z"),
        "uptime": round(time.monotonic() - started, 1),
        "cycles": cycles,
        "last_cycle": last_cycle,
        **document,
        "database_bytes": db_bytes,
        "wal_bytes": wal_bytes,
    }


def config_check(config: Config, loaded: float, refused: dict[str, Any] | None
                 ) -> dict[str, Any]:
    """/readyz's configuration check: the running configuration (loaded at ``loaded``, Unix
    time) and the last refused reload, reported, never a failure."""
    check: dict[str, Any] = {
        "ok": True,
        "loaded": _iso(loaded),
        "feeds": len(config.feeds),
        "outputs": len(config.outputs),
        "refused": refused,
    }
    if refused:
        check["note"] = (
            f"running the configuration loaded at {check['loaded']}; the files on disk "
            f"were refused at {refused['at']} with {refused['problems']} problem(s)"
        )
    return check


def _refusal(exc: ConfigError) -> dict[str, Any]:
    for problem in exc.problems:
        log.error("reload refused: %s", problem)
    log.error("reload refused: keeping the previous configuration")
    return {
        "at": _iso(time.time()),
        "problems": len(exc.problems),
        "first_problems": [str(p) for p in exc.problems[:MAX_REPORTED_PROBLEMS]],
    }


class Daemon:
    def __init__(self, config: Config, *, config_path: str | None, feeds_path: str | None,
                 env: dict[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.config_path = config_path
        self.feeds_path = feeds_path
        self.env = env
        self.pipeline = Pipeline(config)
        self.progress = Progress(progress_bound(config.settings), clock)
        self.pipeline.on_progress = self.progress.mark
        s = config.settings
        # On PostgreSQL publish stores the documents in the database: served from there.
        self.reader = StoreReader(s.database) if self.pipeline.documents_in_store else None
        self.server = FeedServer(Path(s.output_dir), s.listen, status_provider=self.status,
                                 metrics_provider=self.metrics, ready_provider=self.readiness,
                                 documents=self.reader.documents() if self.reader else None)
        # A listener of its own for scrapers and probes: /metrics, /healthz, /readyz only.
        self.metrics_server = FeedServer(
            Path(s.output_dir), s.metrics_listen, serve_files=False,
            metrics_provider=self.metrics, ready_provider=self.readiness,
        ) if s.metrics_listen else None
        self._config_loaded = time.time()
        self._config_refused: dict[str, Any] | None = None
        # The database write check: its last result and time (None: not run yet).
        self._write_problem: str | None = None
        self._write_checked: float | None = None
        self._write_check_running = threading.Event()
        self.scheduler = BackgroundScheduler(
            executors={"default": APThreadPool(4)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._mtimes = self._file_mtimes()
        self._started = time.monotonic()
        self._cycles = 0
        self._last_cycle: dict[str, Any] | None = None
        self._last_watchdog = 0.0
        # On PostgreSQL the polling, articles and publishing are a worker's jobs (tasks):
        # one runs in this process, beside any number elsewhere.
        self.worker: Any = None

    # ----------------------------------------------------------------------- jobs

    def _poll_job(self) -> None:
        if self._stop.is_set():
            return
        due = self.pipeline.due()
        started = datetime.now(UTC)
        clock = time.monotonic()
        outcomes = self.pipeline.poll(due)
        if outcomes:
            # Every polled feed wrote its row: fold the WAL back while it is small.
            self.pipeline.checkpoint()
        self._cycles += 1
        self.progress.mark()  # a completed tick is progress, even with nothing due
        if outcomes:  # a tick with nothing due is not a cycle worth showing
            self._last_cycle = {
                "started": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
                "seconds": round(time.monotonic() - clock, 2),
                "feeds": len(outcomes),
                "errors": sum(o.status in ("error", "gone") for o in outcomes),
            }

    def _article_job(self) -> None:
        if self._stop.is_set() or not self.config.settings.full_text:
            return
        if any(self.pipeline.process_articles()):
            self.pipeline.checkpoint()

    def _publish_job(self) -> None:
        """Publishing is debounced: at most once per PUBLISH_TICK, only after a change, and
        after a failure when its retry is due (with backoff)."""
        if self.pipeline.publish_due() and not self._stop.is_set():
            self._publish()

    def _publish(self) -> None:
        try:
            self.pipeline.publish()
        except Exception as exc:  # a bug or an unreadable store: one line, retried
            self.pipeline.publish_failed(exc)

    def _maintenance_job(self) -> None:
        if self._file_mtimes() != self._mtimes:
            self._reload.set()
        if self._reload.is_set():
            self._reload.clear()
            self.reload()
        interval = _watchdog_interval()
        now = time.monotonic()
        # WATCHDOG only while the scheduler makes progress, by the same test as /readyz: a
        # wedged scheduler stops the pings and systemd restarts us.
        if interval and now - self._last_watchdog >= interval and self.progress.ok():
            sd_notify("WATCHDOG=1")
            self._last_watchdog = now
        self.check_database(wait=False)
        if int(now) % 3600 < MAINTENANCE_TICK and self.worker is None:
            # (On PostgreSQL the workers' hourly `maintenance` job does this, once.)
            retention = self.config.settings.page_retention_days
            cutoff = datetime.now(UTC) - timedelta(days=retention)
            self.pipeline.writer.call(lambda st: st.prune_pages(cutoff))
            self._prune()
        # Cycles checkpoint after writing; this catches a WAL that grew anyway (a reader
        # held it, or writes outside cycles). (PostgreSQL: no WAL of ours to fold.)
        if self.worker is None:
            self.pipeline.checkpoint(if_larger_than=WAL_BOUND)

    def _prune(self) -> None:
        """Entry retention (entry_retention, max_entries); published files stay as they are."""
        try:
            report = self.pipeline.prune(vacuum_pages=VACUUM_PAGES)
        except Exception:
            log.exception("pruning entries failed")
            return
        if report.entries or report.vacuumed:
            log.info("pruned %d entries (%d article pages, %d stories deleted);"
                     " database %d -> %d bytes", report.entries, report.pages,
                     report.stories_deleted, report.size_before, report.size_after)

    def _file_mtimes(self) -> tuple[float, ...]:
        result = []
        for p in (self.config_path, self.feeds_path):
            try:
                result.append(os.stat(p).st_mtime if p else 0.0)
            except OSError:
                result.append(-1.0)
        return tuple(result)

    # ----------------------------------------------------------------------- reload

    def reload(self) -> bool:
        """Load the files again; an invalid file keeps the old configuration running."""
        sd_notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        self._mtimes = self._file_mtimes()
        try:
            config = load_config(self.config_path, self.feeds_path, self.env)
        except ConfigError as exc:
            self._config_refused = _refusal(exc)
            sd_notify("READY=1")
            return False
        self.config = config
        self.pipeline.reload(config)
        self._config_loaded = time.time()
        self._config_refused = None
        log.info("configuration reloaded: %d feeds, %d outputs", len(config.feeds),
                 len(config.outputs))
        self._publish()  # filters may have changed: republish from what is stored
        sd_notify("READY=1")
        return True

    # ----------------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        """The status document: /status.json as is, and what /status renders."""
        from .store import open_storage

        store = open_storage(self.config.settings.database, readonly=True)
        try:
            return status_document(store, started=self._started, cycles=self._cycles,
                                   last_cycle=self._last_cycle)
        finally:
            store.close()

    def metrics(self) -> tuple[bytes, str]:
        """The body and Content-Type of /metrics."""
        return self.pipeline.metrics.render(), METRICS_CONTENT_TYPE

    def check_database(self, *, wait: bool = True) -> None:
        """Run the database write check on the writer's thread (it takes the write lock, so
        it must not race the writer). Without ``wait``, at most one check is in flight: a
        writer busy for long leaves the last result standing (progress reports the rest)."""
        if self._write_check_running.is_set():
            return
        self._write_check_running.set()

        def done(problem: str | None) -> None:
            if problem != self._write_problem:
                if problem:
                    log.error("database not writable: %s", problem)
                else:
                    log.info("database writable")
            self._write_problem = problem
            self._write_checked = time.time()
            self._write_check_running.clear()

        def check(st: Any) -> None:
            try:
                problem = st.write_problem(WRITE_CHECK_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - reported, never raised into the writer
                problem = f"write check failed: {exc}"
            done(problem)

        future = self.pipeline.writer.submit(check)
        if wait:
            future.result()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, document) for /readyz: the running configuration, the database writable,
        the scheduler making progress. A refused file on disk is reported, not a failure."""
        config = config_check(self.config, self._config_loaded, self._config_refused)
        database: dict[str, Any] = {
            "ok": self._write_checked is not None and self._write_problem is None,
            "checked": _iso(self._write_checked) if self._write_checked else None,
            "error": self._write_problem if self._write_checked is not None
            else "not checked yet",
        }
        # On PostgreSQL the worker knows of an outage at once (the write check waits on
        # the writer, which may be blocked on the pool meanwhile).
        lost = self.worker.database_problem if self.worker is not None else None
        if lost:
            database.update(ok=False, error=f"database unreachable: {lost}")
        age = self.progress.age()
        progress = {
            "ok": self.progress.ok(),
            "seconds_since": round(age, 1),
            "bound_seconds": self.progress.bound,
            "cycles": self._cycles,
        }
        checks = {"config": config, "database": database, "progress": progress}
        failed = [name for name, check in checks.items() if not check["ok"]]
        return not failed, {"ready": not failed, "failed": failed, "checks": checks}

    # ----------------------------------------------------------------------- run

    def _install_signals(self) -> None:
        def on_term(signum: int, _frame: Any) -> None:
            log.info("signal %d: stopping", signum)
            self._stop.set()

        def on_hup(_signum: int, _frame: Any) -> None:
            self._reload.set()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_hup)

    def run(self, *, ready: Callable[[], None] | None = None) -> int:
        self._install_signals()
        self._publish()  # valid (possibly empty) feeds from the first second
        self.check_database()
        self.server.start()  # logs where it serves
        if self.metrics_server is not None:
            self.metrics_server.start()
        now = datetime.now(UTC)
        if is_postgres_url(self.config.settings.database):
            from .tasks import WorkerThread

            self.worker = WorkerThread(self.config, self.pipeline,
                                       on_alive=self.progress.mark)
            self.worker.start()
        else:
            self.scheduler.add_job(self._poll_job, "interval", seconds=POLL_TICK, id="poll",
                                   next_run_time=now, jitter=1)
            self.scheduler.add_job(self._article_job, "interval", seconds=ARTICLE_TICK,
                                   id="articles", next_run_time=now + timedelta(seconds=3))
            self.scheduler.add_job(self._publish_job, "interval", seconds=PUBLISH_TICK,
                                   id="publish", next_run_time=now + timedelta(seconds=2))
        self.scheduler.add_job(self._maintenance_job, "interval", seconds=MAINTENANCE_TICK,
                               id="maintenance")
        self.scheduler.start()
        sd_notify(f"READY=1\nSTATUS=polling {len(self.config.feeds)} feeds")
        if ready:
            ready()
        try:
            while not self._stop.wait(0.5):
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload()
        finally:
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        """Stop taking work, let the writer finish the transaction in flight, close."""
        sd_notify("STOPPING=1")
        if self.worker is not None:
            self.worker.stop()  # in-flight jobs drain within shutdown_timeout
        self.pipeline.stop()
        self.scheduler.shutdown(wait=False)
        self.server.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.pipeline.close()
        if self.reader is not None:
            self.reader.close()
        log.info("stopped")


# --------------------------------------------------------------------------- serve


class StoreReader:
    """One read-only Storage for the HTTP server's threads (one at a time: a Storage is
    used by one thread at a time), opened on first use and again after a failure (the
    database restarted, or was not up yet when the process started)."""

    def __init__(self, database: str, *, timeout: float = 2.0) -> None:
        self.database = database
        self.timeout = timeout
        self._lock = threading.Lock()
        self._store: Any = None

    def read(self, fn: Callable[[Any], Any]) -> Any:
        from .store import open_storage

        with self._lock:
            if self._store is None:
                self._store = open_storage(self.database, readonly=True, timeout=self.timeout)
            try:
                return fn(self._store)
            except Exception:
                store, self._store = self._store, None
                try:
                    store.close()
                except Exception:  # noqa: BLE001 - already broken
                    pass
                raise

    def documents(self) -> tuple[Callable[[], list[Any]], Callable[[str], Any]]:
        """The (index, fetch) providers FeedServer serves stored documents through."""
        return (lambda: list(self.read(lambda st: st.document_index())),
                lambda name: self.read(lambda st: st.document(name)))

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


class ServeNode:
    """`aggregator serve`: the HTTP server alone, no scheduler. On PostgreSQL the documents
    come from the database (what publish stored, cached per node and revalidated at most
    once per REVALIDATE seconds), so every serve node gives the same bytes, ETags and
    Last-Modified without a shared disk; on SQLite, output_dir's files, read-only.
    /status and /metrics read the store; /readyz answers 503 while the database does not
    (a quick query, its answer kept READY_CACHE seconds). The node starts without its
    database (systemd may start it first) and reports 503 until the database answers."""

    REVALIDATE = 1.0
    READY_CACHE = 1.0
    DB_TIMEOUT = 2.0

    def __init__(self, config: Config, *, config_path: str | None, feeds_path: str | None,
                 env: dict[str, str] | None = None) -> None:
        from .metrics import Metrics
        from .store import is_postgres_url

        self.config = config
        self.config_path = config_path
        self.feeds_path = feeds_path
        self.env = env
        s = config.settings
        self.reader = StoreReader(s.database, timeout=self.DB_TIMEOUT)
        self._ready_at = -1e9
        self._ready: tuple[bool, str | None] = (False, "not checked yet")
        self._ready_lock = threading.Lock()
        self._started = time.monotonic()
        self._config_loaded = time.time()
        self._config_refused: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._reload = threading.Event()
        self.metrics_registry = Metrics(per_feed=s.metrics_per_feed, snapshot=self._snapshot)
        self.in_database = is_postgres_url(s.database)
        documents = self.reader.documents() if self.in_database else None
        self.server = FeedServer(Path(s.output_dir), s.listen, status_provider=self.status,
                                 metrics_provider=self.metrics,
                                 ready_provider=self.readiness, documents=documents,
                                 revalidate=self.REVALIDATE)
        self.metrics_server = FeedServer(
            Path(s.output_dir), s.metrics_listen, serve_files=False,
            metrics_provider=self.metrics, ready_provider=self.readiness,
        ) if s.metrics_listen else None

    # ----------------------------------------------------------------------- the store

    def _read(self, fn: Callable[[Any], Any]) -> Any:
        return self.reader.read(fn)

    def _snapshot(self) -> MetricsSnapshot:
        def snap(st: Any) -> MetricsSnapshot:
            database_bytes, wal_bytes = st.disk_usage()
            return MetricsSnapshot(
                backlog=st.backlog_size(), feeds_by_state=st.feed_state_counts(),
                database_bytes=database_bytes, wal_bytes=wal_bytes, last_poll_cycle=None,
                feeds=tuple(st.feed_metrics()) if self.metrics_registry.per_feed else ())
        return cast(MetricsSnapshot, self._read(snap))

    # ----------------------------------------------------------------------- providers

    def status(self) -> dict[str, Any]:
        document = self._read(lambda st: status_document(st, started=self._started))
        return {**document, "role": "serve"}

    def metrics(self) -> tuple[bytes, str]:
        return self.metrics_registry.render(), METRICS_CONTENT_TYPE

    def database_ok(self) -> tuple[bool, str | None]:
        """Whether the database answers a quick query (kept READY_CACHE seconds)."""
        with self._ready_lock:
            if time.monotonic() - self._ready_at < self.READY_CACHE:
                return self._ready
            try:
                self._read(lambda st: st.schema_version())
                result: tuple[bool, str | None] = (True, None)
            except Exception as exc:  # noqa: BLE001 - reported by /readyz
                result = (False, str(exc) or type(exc).__name__)
            if result[0] != self._ready[0]:
                if result[0]:
                    log.info("database answers")
                else:
                    log.error("database does not answer: %s", result[1])
            self._ready = result
            self._ready_at = time.monotonic()
            return result

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        ok, error = self.database_ok()
        checks = {
            "config": config_check(self.config, self._config_loaded, self._config_refused),
            "database": {"ok": ok, "checked": _iso(time.time()), "error": error},
        }
        failed = [name for name, check in checks.items() if not check["ok"]]
        return not failed, {"ready": not failed, "failed": failed, "checks": checks}

    # ----------------------------------------------------------------------- run

    def reload(self) -> bool:
        """Load the files again (an invalid file keeps the old configuration). A new
        listen address or database takes a restart."""
        sd_notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            config = load_config(self.config_path, self.feeds_path, self.env)
        except ConfigError as exc:
            self._config_refused = _refusal(exc)
            sd_notify("READY=1")
            return False
        if (config.settings.listen, config.settings.database) != (
                self.config.settings.listen, self.config.settings.database):
            log.warning("listen and database changes take effect at the next start")
        self.config = config
        self._config_loaded = time.time()
        self._config_refused = None
        log.info("configuration reloaded: %d outputs", len(config.outputs))
        sd_notify("READY=1")
        return True

    def run(self, *, ready: Callable[[], None] | None = None) -> int:
        def on_term(signum: int, _frame: Any) -> None:
            log.info("signal %d: stopping", signum)
            self._stop.set()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, lambda _s, _f: self._reload.set())
        self.server.start()
        if self.metrics_server is not None:
            self.metrics_server.start()
        self.database_ok()  # logs whether the database answers
        sd_notify("READY=1\nSTATUS=serving")
        if ready:
            ready()
        try:
            while not self._stop.wait(0.5):
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload()
        finally:
            sd_notify("STOPPING=1")
            self.server.stop()
            if self.metrics_server is not None:
                self.metrics_server.stop()
            self.reader.close()
            log.info("stopped")
        return 0
