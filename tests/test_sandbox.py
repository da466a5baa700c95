"""aggregator.sandbox: the one start-up of limited worker processes (parser and extraction
pools). Real spawned processes; no timing assertions."""

from __future__ import annotations

import os
import threading

import pytest

from aggregator import sandbox
from aggregator.parse import ParserPool

MARK = "AGGREGATOR_TEST_SANDBOX_INITIALIZED"


def mark_initialized() -> None:
    """An extra initializer (what extraction workers use to preload their library)."""
    os.environ[MARK] = str(os.getpid())


def worker_facts() -> tuple[int, str | None, int, int]:
    import resource
    import signal

    soft_as, _ = resource.getrlimit(resource.RLIMIT_AS)
    core, _ = resource.getrlimit(resource.RLIMIT_CORE)
    sigint = signal.getsignal(signal.SIGINT)
    return os.getpid(), os.environ.get(MARK), soft_as, core if sigint == signal.SIG_IGN else -1


def wait_for(event_path: str) -> None:
    """A task that never ends on its own: blocks until the test removes its file."""
    import time

    while os.path.exists(event_path):
        time.sleep(0.05)


def test_worker_pool_runs_the_initializer_after_the_limits() -> None:
    pool = sandbox.WorkerPool(1, memory_mb=512, initializer=mark_initialized)
    try:
        pid, mark, soft_as, core = pool.call(60.0, worker_facts)
    finally:
        pool.close()
    assert pid != os.getpid()
    assert mark == str(pid)  # ran in the worker, not in the parent
    assert MARK not in os.environ
    assert soft_as != -1 and soft_as >= 512 * 1024 * 1024  # RLIMIT_AS set (with headroom)
    assert core == 0  # no core dump, Ctrl-C ignored


def test_worker_pool_without_initializer_still_limits() -> None:
    pool = sandbox.WorkerPool(1, memory_mb=256)
    try:
        _, mark, soft_as, core = pool.call(60.0, worker_facts)
    finally:
        pool.close()
    assert mark is None
    assert soft_as > 0 and core == 0


def test_overrunning_task_kills_the_workers_and_the_pool_recovers(tmp_path) -> None:
    """A task past its timeout raises FutureTimeout; its worker is killed (not left running
    with its slot), and the next call gets a fresh pool."""
    flag = tmp_path / "running"
    flag.write_text("")
    pool = sandbox.WorkerPool(1, memory_mb=256)
    try:
        first_pid = pool.call(60.0, worker_facts)[0]
        with pytest.raises(sandbox.FutureTimeout):
            pool.call(0.2, wait_for, str(flag))
        assert not pool.started()
        # The killed worker is gone although its task never returned (the flag is still there).
        with pytest.raises(ProcessLookupError):
            for _ in range(200):
                os.kill(first_pid, 0)
                threading.Event().wait(0.05)
        assert flag.exists()
        assert pool.call(60.0, worker_facts)[0] != first_pid
    finally:
        flag.unlink(missing_ok=True)
        pool.close()


def test_parser_pool_workers_go_through_the_sandbox() -> None:
    """The parser pool's workers get the same start-up: limits and Ctrl-C ignored."""
    with ParserPool(1, memory_mb=256) as pool:
        feed = pool.parse(b"<rss version='2.0'><channel><title>t</title></channel></rss>",
                          "http://example.org/feed")
        assert feed.title == "t"
        (pid,) = pool.pids()
        with open(f"/proc/{pid}/limits") as f:
            limits = f.read()
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
    line = next(x for x in limits.splitlines() if x.startswith("Max address space"))
    assert "unlimited" not in line.split()[3]
    core = next(x for x in limits.splitlines() if x.startswith("Max core file size"))
    assert core.split()[4] == "0"
    ignored = int(next(x for x in status.splitlines() if x.startswith("SigIgn:")).split()[1], 16)
    assert ignored & (1 << (2 - 1))  # SIGINT


def test_tasks_queued_behind_an_overrunning_one_get_their_second_try(tmp_path) -> None:
    """Tasks still queued when another task's timeout replaces the pool are cancelled with
    it: that is not their doing, so they run again in the fresh pool instead of failing with
    CancelledError."""
    flag = tmp_path / "running"
    flag.write_text("")
    pool = sandbox.WorkerPool(1, memory_mb=256)
    results: list[object] = []
    go, finish = threading.Event(), threading.Event()

    def queued() -> None:
        go.wait(30)
        try:
            results.append(pool.call(60.0, worker_facts)[0])
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            results.append(exc)
        # Live on, as the pipeline's pool threads do: a worker dies with the thread that
        # started it (PR_SET_PDEATHSIG), and one of these threads starts the fresh pool's.
        finish.wait(90)

    try:
        pool.call(60.0, worker_facts)  # the worker is up
        threads = [threading.Thread(target=queued) for _ in range(6)]
        for t in threads:
            t.start()
        overrun = threading.Thread(target=lambda: results.append(pytest.raises(
            sandbox.FutureTimeout, pool.call, 1.0, wait_for, str(flag))))
        overrun.start()
        # The overrunning task holds the only worker; six more are submitted behind it, more
        # than the executor's call queue takes, so some are still pending when it is killed.
        threading.Event().wait(0.3)
        go.set()
        overrun.join(90)
        for _ in range(1200):
            if len(results) == 7:
                break
            threading.Event().wait(0.05)
        finish.set()
        for t in threads:
            t.join(90)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, errors
        assert sum(isinstance(r, int) for r in results) == 6
    finally:
        flag.unlink(missing_ok=True)
        pool.close()
