"""Limited worker processes: the one place that starts them, for the parser pool (parse) and
the extraction pool (pipeline).

Like `models`, `errors` and `files`, a base module any stage may import. Every worker:

- is started with the *spawn* context (the parent has threads; fork would copy their locks
  mid-flight);
- dies with the process that started it, however that one dies (`die_with_parent`);
- ignores Ctrl-C (the parent's business), writes no core dump, and runs under an
  address-space limit (RLIMIT_AS), so a pathological input costs one worker (MemoryError, or
  the worker dies), never the machine;
- runs an optional extra initializer (e.g. one that preloads a library) after the limits.

Two pool shapes share that start-up: `start_worker` gives one persistent process on a pipe
(the parser pool, which recycles a worker after a memory scare and re-arms a CPU budget per
call with `set_cpu_budget`), and `WorkerPool` is an executor with a per-task timeout that
kills its workers when a task overruns (the extraction pool).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any, TypeVar

__all__ = [
    "BrokenProcessPool",
    "FutureTimeout",
    "WorkerPool",
    "address_space",
    "die_with_parent",
    "exit_reason",
    "set_cpu_budget",
    "spawn_context",
    "start_worker",
]

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Room left above what the worker maps once started, whatever the parent's __main__ made the
# spawned worker import: a limit below that would fail every task, not the pathological one.
_HEADROOM = 64 * 1024 * 1024


def spawn_context() -> SpawnContext:
    """The multiprocessing context every pool uses."""
    return multiprocessing.get_context("spawn")


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux), and exit now if
    the parent already died before we asked (then we would never get the signal).

    A worker must never outlive the daemon: SIGTERM lets the pools stop their workers, but
    SIGKILL (or the OOM killer) gives the parent no chance to, and the orphans (plus the
    multiprocessing resource tracker they keep alive through its pipe) would live on.

    PR_SET_PDEATHSIG fires when the *thread* that started this process ends, not only the
    process: pools must start workers from threads that live as long as the pool (the
    pipeline's fetch threads, or the main thread), which they do. Elsewhere than Linux the
    workers still exit when their pipe to the parent closes.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no usable libc: the pipe check below remains
            pass
    if os.getppid() != parent_pid:
        os._exit(1)  # orphaned between fork and prctl: the signal will never come


def address_space() -> int:
    """Bytes this process maps now (0 when unknown)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _limit_memory(memory_mb: int) -> None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    limit = max(memory_mb * 1024 * 1024, address_space() + _HEADROOM)
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or hard >= limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        pass


def set_cpu_budget(seconds: float) -> None:
    """CPU-time backstop for the next task of this worker: RLIMIT_CPU is cumulative, so it is
    re-armed per task (SIGXCPU past it)."""
    try:
        import resource
    except ImportError:  # pragma: no cover
        return
    used = resource.getrusage(resource.RUSAGE_SELF)
    budget = int(used.ru_utime + used.ru_stime + seconds) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        budget = min(budget, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (budget, hard))


def setup_worker(memory_mb: int, parent_pid: int,
                 initializer: Callable[[], None] | None = None) -> None:
    """Runs first in every worker process (both pool shapes)."""
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _limit_memory(memory_mb)
    if initializer is not None:
        initializer()


def _run_worker(target: Callable[..., None], args: tuple[Any, ...], memory_mb: int,
                parent_pid: int, initializer: Callable[[], None] | None) -> None:
    setup_worker(memory_mb, parent_pid, initializer)
    target(*args)


def start_worker(target: Callable[..., None], args: tuple[Any, ...], *, name: str,
                 memory_mb: int, initializer: Callable[[], None] | None = None
                 ) -> SpawnProcess:
    """Start one limited worker process running ``target(*args)`` (picklable, top level)."""
    process = spawn_context().Process(
        target=_run_worker, args=(target, args, memory_mb, os.getpid(), initializer),
        name=name, daemon=True)
    process.start()
    return process


def exit_reason(process: multiprocessing.process.BaseProcess) -> str:
    """How a worker ended, for error messages ("killed by SIGKILL", "exit code 1")."""
    process.join(1)
    code = process.exitcode
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _kill_workers(executor: ProcessPoolExecutor) -> None:
    """Kill an executor's worker processes now, tasks in flight included. Python 3.14 has
    `kill_workers()` for this; before it, the executor's private `_processes` map is the only
    handle on them, and this is the one place that reaches into it."""
    kill = getattr(executor, "kill_workers", None)
    if callable(kill):
        kill()
        return
    for proc in list((getattr(executor, "_processes", None) or {}).values()):
        proc.kill()


class WorkerPool:
    """A process pool of limited workers (see the module docstring) with a per-task timeout;
    thread-safe. A task that overruns its timeout, or whose worker dies, kills the pool's
    workers (a running task cannot be cancelled, and would hold its slot forever); the next
    call starts a fresh pool. Workers start on first use."""

    def __init__(self, processes: int, *, memory_mb: int,
                 initializer: Callable[[], None] | None = None) -> None:
        if processes < 1:
            raise ValueError(f"WorkerPool needs at least one process, got {processes}")
        self.processes = processes
        self.memory_mb = memory_mb
        self.initializer = initializer
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    max_workers=self.processes, mp_context=spawn_context(),
                    initializer=setup_worker,
                    initargs=(self.memory_mb, os.getpid(), self.initializer))
            return self._executor

    def started(self) -> bool:
        """Whether worker processes may be running (a pool was started and not reset)."""
        with self._lock:
            return self._executor is not None

    def reset(self, broken: ProcessPoolExecutor | None = None) -> None:
        """Kill the workers and drop the pool; with ``broken``, only if that is still the
        current pool (another thread may have replaced it already)."""
        with self._lock:
            if broken is not None and self._executor is not broken:
                return
            executor, self._executor = self._executor, None
        if executor is not None:
            _kill_workers(executor)
            executor.shutdown(wait=False, cancel_futures=True)

    close = reset

    def call(self, timeout: float, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker, waiting at most ``timeout`` seconds. Raises the task's
        exception, FutureTimeout (workers killed), or BrokenProcessPool when the pool broke
        twice under this task (a pool broken by another task gets this one a second try in a
        fresh pool: the task that breaks it twice is the culprit)."""
        for attempt in (1, 2):
            executor = self._current()
            try:
                future: Future[T] = executor.submit(fn, *args)
            except RuntimeError:  # shut down by another thread since _current returned it
                if attempt == 2:
                    raise
                continue
            try:
                return future.result(timeout=timeout)
            except FutureTimeout:
                self.reset(executor)
                raise
            except (BrokenProcessPool, CancelledError):
                # Broken, or cancelled still queued when another task's timeout replaced the
                # pool: not this task's doing, so it gets its second try in the fresh pool.
                self.reset(executor)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")
