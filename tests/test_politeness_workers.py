"""Per-host politeness across workers on PostgreSQL: two OS processes, each with its own
Fetcher and the store's shared gate (store.pg_gate), fetch many URLs of one host at once
from a local server that records how many requests it has in flight: together they never
exceed per_host_concurrency, with per_host_delay their starts are spaced, and a 429's
Retry-After seen by one makes the other wait. A control run with each process's own
in-memory gate shows the server does see the excess when nothing is shared."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from aggregator.store import open_storage

from .util import serve_http

LIMIT = 2
SLEEP = 0.2

CHILD = r"""
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from aggregator.errors import FetchError
from aggregator.fetch import Fetcher
from aggregator.models import FetchRequest, Settings
from aggregator.store import open_storage, shared_host_gate

db, base, paths, mode, delay, go = sys.argv[1:7]
s = Settings(allow_private_hosts=("127.0.0.1",), per_host_concurrency=LIMIT_,
             per_host_delay=float(delay), fetch_deadline=60.0, connect_timeout=5.0,
             read_timeout=10.0, retry_after_max=600.0)
store = open_storage(db)
gate = shared_host_gate(store, s) if mode == "pg" else None
assert (gate is None) == (mode != "pg")
fetcher = Fetcher(s, gate=gate)
print("ready", flush=True)
while not Path(go).exists():
    time.sleep(0.005)

def one(path):
    try:
        fetcher.fetch(FetchRequest(base + path))
        return "ok"
    except FetchError as e:
        return e.kind

with ThreadPoolExecutor(8) as pool:
    results = list(pool.map(one, paths.split(",")))
print(json.dumps(results), flush=True)
fetcher.close()
if gate is not None:
    gate.close()
store.close()
""".replace("LIMIT_", str(LIMIT))


@dataclass
class Recorder:
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    peak: int = 0
    starts: list[float] = field(default_factory=list)
    hits: list[str] = field(default_factory=list)
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)
    agents: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


@pytest.fixture
def server() -> Iterator[tuple[str, Recorder]]:
    rec = Recorder()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            start = time.monotonic()
            with rec.lock:
                rec.hits.append(self.path)
                rec.starts.append(start)
                rec.in_flight += 1
                rec.peak = max(rec.peak, rec.in_flight)
            try:
                if self.path.startswith("/limit"):
                    self.send_response(429)
                    self.send_header("Retry-After", "120")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                time.sleep(SLEEP)
                body = b"<rss version='2.0'><channel><title>t</title></channel></rss>"
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            finally:
                with rec.lock:
                    rec.in_flight -= 1
                    rec.spans[self.path] = (start, time.monotonic())
                    rec.agents.setdefault(self.headers.get("User-Agent", ""), []).append(
                        (start, time.monotonic()))

    with serve_http(Handler) as port:
        yield f"http://127.0.0.1:{port}", rec


def run_workers(db: str, base: str, jobs: list[list[str]], mode: str, delay: float,
                tmp: Path) -> list[list[str]]:
    """One process per list of paths, released at once; each one's fetch outcomes."""
    go = tmp / f"go-{time.monotonic_ns()}"
    env_path = str(Path(__file__).resolve().parent.parent)
    procs = [subprocess.Popen(
        [sys.executable, "-c", CHILD, db, base, ",".join(paths), mode, str(delay), str(go)],
        stdout=subprocess.PIPE, text=True, env={"PYTHONPATH": env_path, "PATH": "/usr/bin"})
        for paths in jobs]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        go.touch()
        outs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0] * len(procs), outs
    return [json.loads(o.strip().splitlines()[-1]) for o in outs]


@pytest.fixture
def db(postgres_url: str) -> str:
    st = open_storage(postgres_url)
    st.migrate()
    st.close()
    return postgres_url


def test_two_workers_together_stay_within_per_host_concurrency(
        db: str, server: tuple[str, Recorder], tmp_path: Path) -> None:
    base, rec = server
    jobs = [[f"/slow/{w}-{i}" for i in range(10)] for w in range(2)]
    # Control: each process with its own in-memory gate exceeds the limit together.
    results = run_workers(db, base, jobs, "memory", 0.0, tmp_path)
    assert all(r == "ok" for rs in results for r in rs)
    assert rec.peak > LIMIT, "the processes did not overlap: the test proves nothing"
    rec.peak = 0
    results = run_workers(db, base, jobs, "pg", 0.0, tmp_path)
    assert all(r == "ok" for rs in results for r in rs)
    assert rec.peak == LIMIT  # both slots used, never more


def test_two_workers_space_their_starts_by_per_host_delay(
        db: str, server: tuple[str, Recorder], tmp_path: Path) -> None:
    base, rec = server
    delay = 0.3
    jobs = [[f"/slow/{w}-{i}" for i in range(4)] for w in range(2)]
    results = run_workers(db, base, jobs, "pg", delay, tmp_path)
    assert all(r == "ok" for rs in results for r in rs)
    starts = sorted(rec.starts)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert len(starts) == 8
    # Reserved on the server's clock, observed here: a little jitter either way.
    assert min(gaps) >= delay - 0.08, gaps


def test_retry_after_seen_by_one_worker_makes_the_other_wait(
        db: str, server: tuple[str, Recorder], tmp_path: Path) -> None:
    base, rec = server
    assert run_workers(db, base, [["/limit"]], "pg", 0.0, tmp_path) == [["rate_limited"]]
    # Another process: it does not ask the host at all while the window lasts.
    assert run_workers(db, base, [["/slow/after"]], "pg", 0.0, tmp_path) == [
        ["rate_limited"]]
    assert rec.hits == ["/limit"]
    # Control: with its own memory gate, that process would have asked.
    assert run_workers(db, base, [["/slow/after"]], "memory", 0.0, tmp_path) == [["ok"]]


HOLDER = r"""
import sys, time
from aggregator.store import open_storage
store = open_storage(sys.argv[1])
gate = store.host_gate(2, 0.0)
tokens = [gate.acquire("example.org", time.monotonic() + 10) for _ in range(2)]
assert all(t is not None for t in tokens)
print("held", flush=True)
time.sleep(120)
"""


def test_a_killed_worker_leaves_no_slot_of_a_host_taken(db: str) -> None:
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent), "PATH": "/usr/bin"}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, db], stdout=subprocess.PIPE,
                              text=True, env=env)
    st = open_storage(db)
    gate = st.host_gate(2, 0.0)  # type: ignore[attr-defined]
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert gate.acquire("example.org", time.monotonic() + 0.5) is None  # both taken
        holder.kill()  # SIGKILL: no release, the connection just drops
        holder.wait(timeout=30)
        token = gate.acquire("example.org", time.monotonic() + 30)
        assert token is not None
        gate.release(token)
    finally:
        if holder.poll() is None:
            holder.kill()
        gate.close()
        st.close()


def test_the_pipeline_shares_politeness_through_postgresql_only(
        postgres_url: str, tmp_path: Path) -> None:
    from aggregator.config import load_config
    from aggregator.models import HostGate
    from aggregator.pipeline import Pipeline
    from aggregator.store.pg_gate import PgHostGate

    from .util import env_for, write_feeds

    feeds = write_feeds(tmp_path / "feeds.yaml", [])
    for database, shared in ((postgres_url, True), (str(tmp_path / "agg.db"), False)):
        env = env_for(tmp_path, AGGREGATOR_DATABASE=database, AGGREGATOR_BASE_URL="http://x/")
        p = Pipeline(load_config(None, str(feeds), env), processes=1)
        try:
            gate = p.fetcher._gate
            assert isinstance(gate, HostGate)
            assert isinstance(gate, PgHostGate) is shared and (p.gate is gate) is shared
        finally:
            p.close()


def test_two_update_runs_on_one_database_stay_within_per_host_concurrency(
        postgres_url: str, server: tuple[str, Recorder], tmp_path: Path) -> None:
    """The real thing: two `aggregator update` processes on one PostgreSQL database (both
    migrating and syncing the feeds as they start), their feeds all on one host; the
    Pipeline picks the shared gate by itself. The server tells the two apart by their
    User-Agent. A try in which one finished before the other began proves nothing and is
    run again (the limit must hold in every try)."""
    from .util import env_for, write_feeds

    base, rec = server
    feeds = write_feeds(tmp_path / "feeds.yaml", [
        {"name": f"f{n}", "url": f"{base}/feed/{n}"} for n in range(24)])
    overlapped = False
    for attempt in range(3):
        rec.agents.clear()
        rec.peak = 0
        procs = []
        for w in range(2):
            env = env_for(tmp_path, AGGREGATOR_DATABASE=postgres_url,
                          AGGREGATOR_BASE_URL="http://news.test/",
                          AGGREGATOR_PER_HOST_CONCURRENCY=str(LIMIT), AGGREGATOR_WORKERS="8",
                          AGGREGATOR_FULL_TEXT="false",
                          AGGREGATOR_USER_AGENT=f"worker{w}/1.0 (+https://news.test/bot)",
                          AGGREGATOR_OUTPUT_DIR=str(tmp_path / f"public{attempt}-{w}"),
                          PYTHONPATH=str(Path(__file__).parent.parent))
            names = [f"f{n}" for n in range(w * 12, w * 12 + 12)]
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "aggregator.cli", "--feeds", str(feeds), "update",
                 "--all", "--no-articles", *[x for name in names for x in ("--feed", name)]],
                env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True))
        outs = [p.communicate(timeout=180)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        spans = [rec.agents.get(f"worker{w}/1.0 (+https://news.test/bot)", [])
                 for w in range(2)]
        assert [len(x) for x in spans] == [12, 12], rec.agents.keys()
        # Never more than LIMIT requests in flight to the host, both runs together.
        assert rec.peak <= LIMIT
        if max(min(s for s, _ in x) for x in spans) < min(max(e for _, e in x) for x in spans):
            overlapped = True
            break
    assert overlapped, "the two runs never fetched at the same time: the test proves nothing"


def test_a_request_holds_one_slot_and_gives_it_back(db: str) -> None:
    """Each acquire takes exactly one advisory lock of the host and release frees it: none
    is left held in the gate's session (which would keep a slot from every other worker
    for as long as this one lives)."""
    st = open_storage(db)
    gate = st.host_gate(3, 0.0)  # type: ignore[attr-defined]
    try:
        tokens = [gate.acquire("example.org", time.monotonic() + 5) for _ in range(3)]
        assert all(t is not None for t in tokens) and len(set(tokens)) == 3
        assert gate.acquire("example.org", time.monotonic() + 0.2) is None

        def held() -> int:
            row = gate._execute("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory'"
                                " AND pid = pg_backend_pid()", ())
            return int(row[0])

        assert held() == 3
        for t in tokens:
            gate.release(t)
        assert held() == 0
        one = gate.acquire("example.org", time.monotonic() + 5)
        assert held() == 1
        gate.release(one)
    finally:
        gate.close()
        st.close()
