"""The daemon: scheduler, HTTP server, signals, reload and systemd notification.

Scheduling state (next poll per feed) lives in the database, so a restart resumes where it
stopped. APScheduler runs three jobs: a short `poll` tick that polls the feeds that are due,
an `articles` job that drains the full-text backlog within its budget, and `maintenance`
(config file watch, WAL checkpoint, page retention). Jobs never overlap themselves.
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
from .models import Config
from .pipeline import WAL_BOUND, Pipeline
from .server import FeedServer

log = logging.getLogger("aggregator.daemon")

POLL_TICK = 10.0  # seconds between looks at which feeds are due
ARTICLE_TICK = 20.0
MAINTENANCE_TICK = 5.0
PUBLISH_TICK = 15.0


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


class Daemon:
    def __init__(self, config: Config, *, config_path: str | None, feeds_path: str | None,
                 env: dict[str, str] | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.feeds_path = feeds_path
        self.env = env
        self.pipeline = Pipeline(config)
        self.server = FeedServer(Path(config.settings.output_dir), config.settings.listen,
                                 status_provider=self.status)
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
        self._last_watchdog = 0.0

    # ----------------------------------------------------------------------- jobs

    def _poll_job(self) -> None:
        if self._stop.is_set():
            return
        if self.pipeline.poll(self.pipeline.due()):
            # Every polled feed wrote its row: fold the WAL back while it is small.
            self.pipeline.checkpoint()
        self._cycles += 1

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
        # WATCHDOG only while the scheduler makes progress: the poll tick must have completed
        # recently (a wedged cycle stops the pings and systemd restarts us).
        if interval and now - self._last_watchdog >= interval:
            if now - self.pipeline.last_progress < max(interval * 4, POLL_TICK * 6) \
                    or not self.pipeline.due():
                sd_notify("WATCHDOG=1")
                self._last_watchdog = now
        if int(now) % 3600 < MAINTENANCE_TICK:
            retention = self.config.settings.page_retention_days
            cutoff = datetime.now(UTC) - timedelta(days=retention)
            self.pipeline.writer.call(lambda st: st.prune_pages(cutoff))
        # Cycles checkpoint after writing; this catches a WAL that grew anyway (a reader
        # held it, or writes outside cycles).
        self.pipeline.checkpoint(if_larger_than=WAL_BOUND)

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
            sd_notify("READY=1")
            return False
        self.config = config
        self.pipeline.reload(config)
        log.info("configuration reloaded: %d feeds, %d outputs", len(config.feeds),
                 len(config.outputs))
        self._publish()  # filters may have changed: republish from what is stored
        sd_notify("READY=1")
        return True

    # ----------------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        from .store import Store

        store = Store(self.config.settings.database, readonly=True)
        try:
            feeds = store.feed_health()
            backlog = store.backlog_size()
            db_bytes, wal_bytes = store.disk_usage()
        finally:
            store.close()
        return {
            "uptime": round(time.monotonic() - self._started, 1),
            "cycles": self._cycles,
            "backlog": backlog,
            "database_bytes": db_bytes,
            "wal_bytes": wal_bytes,
            "feeds": feeds,
        }

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
        self.server.start()
        log.info("serving %s on http://%s:%d/", self.config.settings.output_dir,
                 *self.server.address)
        now = datetime.now(UTC)
        self.scheduler.add_job(self._poll_job, "interval", seconds=POLL_TICK, id="poll",
                               next_run_time=now, jitter=1)
        self.scheduler.add_job(self._article_job, "interval", seconds=ARTICLE_TICK,
                               id="articles", next_run_time=now + timedelta(seconds=3))
        self.scheduler.add_job(self._maintenance_job, "interval", seconds=MAINTENANCE_TICK,
                               id="maintenance")
        self.scheduler.add_job(self._publish_job, "interval", seconds=PUBLISH_TICK,
                               id="publish", next_run_time=now + timedelta(seconds=2))
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
        self.pipeline.stop()
        self.scheduler.shutdown(wait=False)
        self.server.stop()
        self.pipeline.close()
        log.info("stopped")
