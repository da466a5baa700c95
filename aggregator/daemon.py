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
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor as APThreadPool
from apscheduler.schedulers.background import BackgroundScheduler

from .config import load_config
from .errors import ConfigError
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .models import Config, Settings
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
        self.server = FeedServer(Path(s.output_dir), s.listen, status_provider=self.status,
                                 metrics_provider=self.metrics, ready_provider=self.readiness)
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
        # held it, or writes outside cycles).
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
            for problem in exc.problems:
                log.error("reload refused: %s", problem)
            log.error("reload refused: keeping the previous configuration")
            self._config_refused = {
                "at": _iso(time.time()),
                "problems": len(exc.problems),
                "first_problems": [str(p) for p in exc.problems[:MAX_REPORTED_PROBLEMS]],
            }
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

        now = datetime.now(UTC).replace(microsecond=0)
        store = open_storage(self.config.settings.database, readonly=True)
        try:
            document = store.status(now)
            db_bytes, wal_bytes = store.disk_usage()
        finally:
            store.close()
        return {
            "generated": now.isoformat().replace("+00:00", "Z"),
            "uptime": round(time.monotonic() - self._started, 1),
            "cycles": self._cycles,
            "last_cycle": self._last_cycle,
            **document,
            "database_bytes": db_bytes,
            "wal_bytes": wal_bytes,
        }

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
        config: dict[str, Any] = {
            "ok": True,
            "loaded": _iso(self._config_loaded),
            "feeds": len(self.config.feeds),
            "outputs": len(self.config.outputs),
            "refused": self._config_refused,
        }
        if self._config_refused:
            config["note"] = (
                f"running the configuration loaded at {config['loaded']}; the files on disk "
                f"were refused at {self._config_refused['at']} with "
                f"{self._config_refused['problems']} problem(s)"
            )
        database: dict[str, Any] = {
            "ok": self._write_checked is not None and self._write_problem is None,
            "checked": _iso(self._write_checked) if self._write_checked else None,
            "error": self._write_problem if self._write_checked is not None
            else "not checked yet",
        }
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
        log.info("stopped")
