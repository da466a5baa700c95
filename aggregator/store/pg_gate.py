"""Per-host politeness shared by every worker of one PostgreSQL store (models.HostGate).

- Concurrency: a request holds one of ``limit`` session advisory locks of its host,
  (host hash, slot) for slot in 0..limit-1, taken with pg_try_advisory_lock (one statement
  tries the free slots in turn) and polled every POLL seconds while all are taken. The
  locks live on one connection of the process's own (autocommit): a session lock is
  reentrant within its session, so the slots this process holds are skipped by name. A
  worker that dies loses its connection and with it its slots: none stays taken.
- Spacing: host_politeness.next_start, reserved atomically (``GREATEST(next_start, now())
  + delay``): each start waits for its own reserved instant, ``delay`` after the previous.
- Retry-After: host_politeness.retry_after_until, read before each request.

Per request: one lock statement (more only while the host is full), one reservation when
``delay`` > 0, the Retry-After reads of the Fetcher, one unlock. Times are the server's
(clock_timestamp()), so workers on machines with skewed clocks still agree.

Never imports psycopg (postgres.py does): the connection comes from a factory."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, cast

log = logging.getLogger(__name__)

POLL = 0.05  # seconds between tries while every slot of a host is taken


def host_key(host: str) -> int:
    """A host's advisory-lock key (int4; the slot is the second key of the pair, a lock
    space of its own beside the bigint keys of STORY_LOCK and the migrations)."""
    return int.from_bytes(hashlib.blake2b(host.encode(), digest_size=4).digest(), "big",
                          signed=True)


class PgHostGate:
    """models.HostGate through the database (see the module docstring)."""

    def __init__(self, connect: Callable[[], Any], limit: int, delay: float) -> None:
        self._connect = connect
        self._limit = max(1, limit)
        self._delay = max(0.0, delay)
        self._lock = threading.Lock()  # one statement at a time on the shared connection
        self._conn: Any = None
        self._held: set[tuple[int, int]] = set()  # (host key, slot) this process holds
        self._broken_logged = False

    def _execute(self, sql: str, params: Any) -> Any:
        with self._lock:
            return self._run(sql, params)

    def _run(self, sql: str, params: Any) -> Any:
        """One statement on the gate's connection (opened again after a failure, whose
        slots went with the old session); the first row, or None. Under self._lock."""
        try:
            if self._conn is None or self._conn.closed:
                self._held.clear()  # the old session's locks are gone with it
                self._conn = self._connect()
            row = self._conn.execute(sql, params).fetchone()
            self._broken_logged = False
            return row
        except Exception as exc:  # psycopg's errors: the server gone, restarting
            if not self._broken_logged:
                # (debug: the outage is said once, by the worker's supervisor, tasks)
                log.debug("per-host politeness: database connection lost (%s); retrying",
                            exc.__class__.__name__)
                self._broken_logged = True
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:  # noqa: BLE001 - closing a broken connection
                    pass
            self._conn = None
            self._held.clear()
            raise

    def acquire(self, host: str, deadline: float) -> object | None:
        key = host_key(host)
        while True:
            slot = None
            # One lock around choosing and taking: a session lock is reentrant, so two
            # threads of this process must never try the same slot.
            with self._lock:
                mine = sorted(s for k, s in self._held if k == key)
                if len(mine) < self._limit:
                    try:
                        # No ORDER BY: a sort would run the filter, and so take a lock,
                        # on every free slot; unsorted, LIMIT stops at the first one taken.
                        row = self._run(
                            "SELECT s FROM generate_series(0, %s - 1) AS s"
                            " WHERE s <> ALL(%s::int[]) AND pg_try_advisory_lock(%s, s)"
                            " LIMIT 1", (self._limit, mine, key))
                    except Exception:  # noqa: BLE001 - logged by _run; try again
                        row = None
                    if row is not None:
                        slot = int(row[0])
                        self._held.add((key, slot))
            if slot is not None:
                if self._wait_turn(host, deadline):
                    return (key, slot)
                self.release((key, slot))
                return None
            if time.monotonic() + POLL >= deadline:
                return None
            time.sleep(POLL)

    def _wait_turn(self, host: str, deadline: float) -> bool:
        """Reserve this request's start, ``delay`` after the previous one, and sleep until
        it; False when it falls after ``deadline``."""
        if self._delay <= 0:
            return time.monotonic() < deadline
        try:
            row = self._execute(
                "INSERT INTO host_politeness AS h (host, next_start)"
                " VALUES (%s, clock_timestamp() + make_interval(secs => %s))"
                " ON CONFLICT (host) DO UPDATE SET next_start ="
                " GREATEST(h.next_start, clock_timestamp()) + make_interval(secs => %s)"
                " RETURNING EXTRACT(EPOCH FROM h.next_start - clock_timestamp())",
                (host, self._delay, self._delay))
        except Exception:  # noqa: BLE001 - logged by _execute
            return False
        wait = max(0.0, float(row[0]) - self._delay) if row else 0.0
        if time.monotonic() + wait >= deadline:
            return False
        if wait:
            time.sleep(wait)
        return True

    def release(self, token: object) -> None:
        key, slot = cast(tuple[int, int], token)
        with self._lock:
            if (key, slot) not in self._held:
                return  # its session is gone (a reconnect): so is the lock
            try:
                self._run("SELECT pg_advisory_unlock(%s, %s)", (key, slot))
            except Exception:  # noqa: BLE001 - the session died: the lock with it
                pass
            self._held.discard((key, slot))

    def retry_after(self, host: str) -> float | None:
        try:
            row = self._execute(
                "SELECT EXTRACT(EPOCH FROM retry_after_until - clock_timestamp())"
                " FROM host_politeness WHERE host = %s", (host,))
        except Exception:  # noqa: BLE001 - logged by _execute; nothing known
            return None
        if row is None or row[0] is None or float(row[0]) <= 0:
            return None
        return float(row[0])

    def set_retry_after(self, host: str, seconds: float) -> None:
        try:
            self._execute(
                "INSERT INTO host_politeness AS h (host, retry_after_until)"
                " VALUES (%s, clock_timestamp() + make_interval(secs => %s))"
                " ON CONFLICT (host) DO UPDATE SET retry_after_until ="
                " GREATEST(h.retry_after_until, excluded.retry_after_until)",
                (host, seconds))
        except Exception:  # noqa: BLE001 - logged by _execute; the 429 still fails this fetch
            pass

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()  # every slot still held goes with the session
                except Exception:  # noqa: BLE001
                    pass
            self._conn = None
            self._held.clear()
