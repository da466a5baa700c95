"""`make bench-scale`: the same feeds polled by SQLite `update --all`, then by one and by two
PostgreSQL workers, each round cold on a fresh store, in one run.

The feed server runs in its own process (its CPU is not counted): `--feeds` feeds spread over
`--hosts` loopback addresses 127.0.0.1 ... 127.0.0.<hosts> (one listening socket per address,
all on one port), `--latency` seconds before each answer, RSS 2.0 and Atom (every third feed),
`--entries` entries per feed of which every fourth is a wire story that the five feeds of a
group carry with their own title and a sentence of their own (so story matching has work),
ETag / Last-Modified and conditional GET. It counts requests per feed, per host and the most
requests in flight at once per host.

Rounds (settings: the defaults, politeness included, except full_text: false, so the figure is
feed throughput, not article extraction; allow_private_hosts: 127.0.0.0/8):
  1. sqlite      `aggregator update --all` on a fresh SQLite file; CPU from wait4 (children
                 included), peak RSS = ru_maxrss.
  2. pg-1w       fresh PostgreSQL database, `aggregator migrate`, ONE `aggregator worker`
                 (default --concurrency) until every feed has a `last_attempt` after the round
                 start, then SIGTERM; CPU = the worker (wait4, children included) + the CPU of
                 the PostgreSQL backends serving that database (pg_stat_activity pids, /proc,
                 read just before SIGTERM). The delta over all `postgres` processes of the
                 machine is shown too: an upper bound that includes other users of the server.
  3. pg-2w       the same with two workers (`--workers-max`).
Each round also reports the cores the whole machine kept busy (/proc/stat, feed server and
every postgres process included): when one worker already fills the machine, a second can
only add what the first leaves idle, and the report says to compare CPU per feed instead;
it also prints the most any number of workers could reach here at one worker's CPU per
feed (the cores / the cores one worker kept busy). The feed server's CPU is shown, not
counted.
`--stagger S` starts the workers of a round S seconds apart (default: at once). For iterating:
`--no-sqlite` skips round 1, `--many-only` round 2.
`--pg-mode update` runs `aggregator update --all` on the PostgreSQL database instead of
workers (one process per round): a check of the measuring code where `worker` does not exist.

Prints a table, writes it as JSON (`--json PATH`), exits non-zero only when a round broke
(a command failed, a round timed out, feeds were not polled), not on a missed target.

Usage: python bench/bench_scale.py [--feeds 5000] [--hosts 50] [--latency 0.05] [--entries 20]
       [--workers-max 2] [--json PATH] [--keep] [--pg-url postgresql://postgres@127.0.0.1:5432]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import escape

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aggregator.models import Settings  # noqa: E402
from tests.util import free_port, write_feeds  # noqa: E402

PER_HOST = Settings().per_host_concurrency  # the default politeness the rounds run with

TICKS = os.sysconf("SC_CLK_TCK")
GROUP = 5  # feeds of one group carry the same wire stories
WORDS = (
    "government parliament minister border agreement talks economy energy pipeline railway "
    "election court protest reform budget investment tourism wine mountain river village "
    "security peace region capital statement delegation summit trade exports harvest school "
    "hospital bridge airport festival museum football weather drought flood vineyard"
).split()


# =========================================================================== feed server

def words(seed: str, count: int) -> str:
    h = int(hashlib.sha256(seed.encode()).hexdigest(), 16)
    out = []
    for k in range(count):
        h = (h * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out.append(WORDS[h % len(WORDS)] if k % 6 else f"w{h % 99991}")
    return " ".join(out)


class FeedFarm:
    """Feeds and counters shared by the per-address servers of the feed-server process."""

    def __init__(self, feeds: int, hosts: int, entries: int, latency: float, port: int) -> None:
        self.feeds, self.hosts, self.entries = feeds, hosts, entries
        self.latency, self.port = latency, port
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.lock = threading.Lock()
        self.cache: dict[int, tuple[bytes, str, datetime]] = {}
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.per_feed: Counter[int] = Counter()
            self.per_host: Counter[str] = Counter()
            self.not_modified = 0
            self.other = 0
            self.in_flight: Counter[str] = Counter()
            self.max_in_flight: Counter[str] = Counter()

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"per_feed": {str(k): v for k, v in self.per_feed.items()},
                    "per_host": dict(self.per_host), "not_modified": self.not_modified,
                    "other": self.other, "max_in_flight": dict(self.max_in_flight)}

    def host_of(self, n: int) -> str:
        return f"127.0.0.{n % self.hosts + 1}"

    def feed(self, n: int) -> tuple[bytes, str, datetime]:
        got = self.cache.get(n)
        if got is None:
            got = self.cache[n] = self._render(n)
        return got

    def _render(self, n: int) -> tuple[bytes, str, datetime]:
        base = f"http://{self.host_of(n)}:{self.port}"
        atom = n % 3 == 2
        items = []
        for i in range(self.entries):
            pub = self.now - timedelta(minutes=37 * i + n % 60)
            if i % 4 == 0:  # a wire story shared by the group, in this outlet's words
                story = f"wire{n // GROUP}-{i}"
                title = f"{words(story, 9).capitalize()}"
                body = f"{words(story, 90)}. Reported by outlet {n}: {words(f'{n}/{i}', 8)}."
            else:
                story = f"own{n}-{i}"
                title = words(story, 9).capitalize()
                body = words(story, 90) + "."
            link = f"{base}/article/{n}/{i}.html"
            if atom:
                items.append(
                    f"<entry><title>{escape(title)}</title><link href='{link}'/>"
                    f"<id>urn:bench:{n}:{i}</id><updated>{pub.isoformat()}</updated>"
                    f"<summary type='html'>{escape('<p>' + body + '</p>')}</summary></entry>")
            else:
                items.append(
                    f"<item><title>{escape(title)}</title><link>{link}</link>"
                    f"<guid isPermaLink='false'>bench-{n}-{i}</guid>"
                    f"<pubDate>{format_datetime(pub)}</pubDate>"
                    f"<description>{escape('<p>' + body + '</p>')}</description></item>")
        if atom:
            doc = ("<?xml version='1.0' encoding='utf-8'?>"
                   "<feed xmlns='http://www.w3.org/2005/Atom'>"
                   f"<title>Outlet {n}</title><id>urn:bench:{n}</id>"
                   f"<updated>{self.now.isoformat()}</updated><link href='{base}/'/>"
                   f"{''.join(items)}</feed>")
        else:
            doc = ("<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
                   f"<title>Outlet {n}</title><link>{base}/</link>"
                   f"<description>bench outlet</description>{''.join(items)}</channel></rss>")
        body_b = doc.encode()
        return body_b, '"' + hashlib.sha1(body_b).hexdigest() + '"', self.now

    def handle(self, h: BaseHTTPRequestHandler, host: str) -> None:
        path = h.path.split("?", 1)[0]
        if host == "127.0.0.1" and path in ("/_stats", "/_reset"):
            if path == "/_reset":
                self.reset()
            self._send(h, 200, {"Content-Type": "application/json"},
                       json.dumps(self.stats()).encode())
            return
        n = -1
        if path.startswith("/feed/") and path.endswith(".xml"):
            try:
                n = int(path[6:-4])
            except ValueError:
                n = -1
        with self.lock:
            self.per_host[host] += 1
            if 0 <= n < self.feeds:
                self.per_feed[n] += 1
            else:
                self.other += 1
            self.in_flight[host] += 1
            self.max_in_flight[host] = max(self.max_in_flight[host], self.in_flight[host])
        try:
            time.sleep(self.latency)
            if 0 <= n < self.feeds:
                body, etag, modified = self.feed(n)
                ctype = ("application/atom+xml" if n % 3 == 2 else "application/rss+xml")
                headers = {"Content-Type": ctype + "; charset=utf-8", "ETag": etag,
                           "Last-Modified": format_datetime(modified, usegmt=True)}
                if _not_modified(h, etag, modified):
                    with self.lock:
                        self.not_modified += 1
                    self._send(h, 304, headers, b"")
                else:
                    self._send(h, 200, headers, body)
            elif path == "/robots.txt":
                self._send(h, 200, {"Content-Type": "text/plain"}, b"User-agent: *\n")
            elif path.startswith("/article/"):
                page = (f"<!doctype html><html><head><title>{path}</title></head><body>"
                        f"<article><h1>{path}</h1><p>{words(path, 400)}.</p></article>"
                        "</body></html>").encode()
                self._send(h, 200, {"Content-Type": "text/html; charset=utf-8"}, page)
            else:
                self._send(h, 404, {"Content-Type": "text/plain"}, b"not found")
        finally:
            with self.lock:
                self.in_flight[host] -= 1

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, headers: dict[str, str],
              body: bytes) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if body and h.command != "HEAD":
            try:
                h.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass


def _not_modified(h: BaseHTTPRequestHandler, etag: str, modified: datetime) -> bool:
    inm = h.headers.get("If-None-Match")
    if inm is not None:
        return etag in [t.strip() for t in inm.split(",")]
    ims = h.headers.get("If-Modified-Since")
    if ims:
        try:
            return parsedate_to_datetime(ims) >= modified
        except (TypeError, ValueError):
            return False
    return False


def serve(argv: list[str]) -> None:
    """The feed-server process: bind every address, print the port, serve until killed."""
    ap = argparse.ArgumentParser()
    for name in ("feeds", "hosts", "entries"):
        ap.add_argument(f"--{name}", type=int, required=True)
    ap.add_argument("--latency", type=float, required=True)
    args = ap.parse_args(argv)
    farm: FeedFarm | None = None
    servers: list[ThreadingHTTPServer] = []

    def make(address: str, port: int) -> ThreadingHTTPServer:
        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                assert farm is not None
                farm.handle(self, address)

            do_HEAD = do_GET  # noqa: N815

        srv = ThreadingHTTPServer((address, port), H)
        srv.daemon_threads = True
        srv.request_queue_size = 256
        return srv

    for attempt in range(20):  # the first address picks a port; the others must get it too
        first = make("127.0.0.1", 0)
        port = first.server_address[1]
        try:
            servers = [first] + [make(f"127.0.0.{h + 1}", port) for h in range(1, args.hosts)]
            break
        except OSError:
            first.server_close()
            if attempt == 19:
                raise
    farm = FeedFarm(args.feeds, args.hosts, args.entries, args.latency, port)
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    print(port, flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


class FeedServerProcess:
    def __init__(self, feeds: int, hosts: int, entries: int, latency: float) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        try:  # the child inherits the mask: sigwait needs the signals blocked
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "_serve", "--feeds", str(feeds), "--hosts",
                 str(hosts), "--entries", str(entries), "--latency", str(latency)],
                stdout=subprocess.PIPE, text=True)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            raise SystemExit(f"feed server did not start (exit {self.proc.poll()})")
        self.port = int(line)
        self.hosts = hosts

    def url(self, n: int) -> str:
        return f"http://127.0.0.{n % self.hosts + 1}:{self.port}/feed/{n}.xml"

    def control(self, what: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_{what}", timeout=30) as r:
            return dict(json.load(r))

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# =========================================================================== measuring

def proc_cpu(pid: int) -> float:
    """utime+stime+cutime+cstime of one process, seconds (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / TICKS
    except (OSError, IndexError, ValueError):
        return 0.0


def children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                out.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                continue
    return out


def tree(pid: int) -> list[int]:
    kids, out, todo = children_map(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def vm_hwm_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith("VmHWM")) / 1024
    except (OSError, StopIteration, ValueError):
        return 0.0


def postgres_pids() -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() in ("postgres", "postmaster"):
                        pids.append(int(d))
            except OSError:
                continue
    return pids


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of every core since boot, from /proc/stat: the whole machine,
    the feed server and PostgreSQL's own processes included (the "is the machine full?"
    question that the measured processes' CPU alone does not answer)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def machine_busy_cores(start: tuple[int, int]) -> float:
    """Cores kept busy on average since ``start`` (a machine_ticks reading)."""
    busy, total = machine_ticks()
    return round((busy - start[0]) / max(total - start[1], 1) * (os.cpu_count() or 1), 2)


def all_postgres_cpu() -> float:
    return sum(proc_cpu(p) for p in postgres_pids())


class Pg:
    """Administration and the round's progress queries, on one connection per database
    (psql once a second was a twentieth of a core taken from the round it measured)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._conns: dict[str, psycopg.Connection[Any]] = {}

    def db_url(self, name: str) -> str:
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path="/" + name))

    def sql(self, query: str, db: str = "postgres") -> str:
        """Rows as psql -At prints them: fields joined by |, rows by newlines."""
        try:
            conn = self._conns.get(db)
            if conn is None or conn.closed:
                conn = self._conns[db] = psycopg.connect(self.db_url(db), autocommit=True,
                                                         connect_timeout=30)
            cur = conn.execute(query)  # type: ignore[arg-type]
            rows = cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            self.disconnect(db)
            raise RuntimeError(f"{query[:60]}: {exc}") from None
        return "\n".join("|".join("" if v is None else str(v) for v in r) for r in rows)

    def disconnect(self, db: str) -> None:
        conn = self._conns.pop(db, None)
        if conn is not None:
            conn.close()

    def create(self, name: str) -> str:
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.sql(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' "
                 "LOCALE 'C.UTF-8'")
        return self.db_url(name)

    def drop(self, name: str) -> None:
        self.disconnect(name)
        try:
            self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"warning: could not drop database {name}: {exc}", file=sys.stderr)

    def backend_pids(self, name: str) -> list[int]:
        out = self.sql("SELECT pid FROM pg_stat_activity WHERE datname = "
                       f"'{name}' AND pid <> pg_backend_pid()")
        return [int(x) for x in out.split()]


# =========================================================================== rounds

class Broken(Exception):
    """A round that could not measure what it should (not a missed target)."""


def write_config(tmp: Path, database: str, port: int) -> Path:
    cfg = tmp / "aggregator.yaml"
    cfg.write_text(
        f"database: {database}\n"
        f"output_dir: {tmp / 'public'}\n"
        f"listen: 127.0.0.1:{port}\n"
        f"base_url: http://127.0.0.1:{port}/\n"
        "allow_private_hosts: [127.0.0.0/8]\n"
        "full_text: false\n"
        "log_level: WARNING\n", encoding="utf-8")
    return cfg


def agg(cfg: Path, feeds: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "aggregator.cli", "--config", str(cfg), "--feeds",
            str(feeds), *args]


def base_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["XDG_CACHE_HOME"] = str(tmp / "cache")
    return env


def run_measured(cmd: list[str], env: dict[str, str], cwd: Path, log: Path,
                 timeout: float) -> tuple[float, float, float]:
    """(wall s, CPU s incl. children, peak RSS MB) of a command that must exit 0."""
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        _pid, status, ru = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    wall = time.perf_counter() - t0
    if status != 0:
        tail = log.read_text(errors="replace")[-1500:]
        why = f"killed after the {timeout:.0f} s round timeout" if wall >= timeout else \
            f"exit status {os.waitstatus_to_exitcode(status)}"
        raise Broken(f"{' '.join(cmd[3:])}: {why}\n{tail}")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024


def sqlite_polled(db: Path, since: str) -> tuple[int, int]:
    conn = sqlite3.connect(db)
    try:
        polled, failed = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(last_status IS NULL OR last_status NOT IN (200, 304)),"
            " 0) FROM feeds WHERE active = 1 AND last_attempt >= ?", (since,)).fetchone()
        return int(polled), int(failed)
    finally:
        conn.close()


def pg_polled(pg: Pg, name: str, since: str) -> tuple[int, int]:
    out = pg.sql("SELECT COUNT(*), COALESCE(SUM(CASE WHEN last_status IN (200, 304) THEN 0 "
                 f"ELSE 1 END), 0) FROM feeds WHERE last_attempt >= '{since}'", name)
    a, b = out.split("|")
    return int(a), int(b)


def round_result(name: str, n: int, wall: float, cpu_proc: float, cpu_pg: float,
                 cpu_pg_all: float, rss: list[float], stats: dict[str, Any], polled: int,
                 failed: int, per_host_limit: int, machine_cores: float) -> dict[str, Any]:
    per_feed = [int(v) for v in stats["per_feed"].values()]
    return {
        "round": name, "feeds": n, "polled": polled, "failed": failed,
        "wall_s": round(wall, 2), "feeds_per_s": round(polled / wall, 2) if wall else 0.0,
        "cpu_process_s": round(cpu_proc, 2), "cpu_pg_backends_s": round(cpu_pg, 2),
        "cpu_pg_all_s": round(cpu_pg_all, 2),
        "cpu_ms_per_feed": round((cpu_proc + cpu_pg) / max(polled, 1) * 1000, 2),
        "cpu_util_cores": round((cpu_proc + cpu_pg) / wall, 2) if wall else 0.0,
        "machine_cores_busy": machine_cores,
        "requests_per_feed_max": max(per_feed, default=0),
        "feeds_requested": len(per_feed),
        "feeds_requested_twice": sum(1 for v in per_feed if v > 1),
        "twice_examples": sorted(f"outlet{k}" for k, v in stats["per_feed"].items()
                                 if int(v) > 1)[:20],
        "other_requests": stats["other"],
        "peak_rss_mb_per_worker": [round(x, 1) for x in rss],
        "max_in_flight_per_host": max(stats["max_in_flight"].values(), default=0),
        "per_host_concurrency": per_host_limit,
    }


def sqlite_round(server: FeedServerProcess, feeds: Path, tmp: Path, n: int,
                 timeout: float) -> dict[str, Any]:
    d = tmp / "sqlite"
    d.mkdir()
    cfg = write_config(d, str(d / "agg.db"), free_port())
    env = base_env(d)
    server.control("reset")
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    ticks = machine_ticks()
    wall, cpu, rss = run_measured(agg(cfg, feeds, "update", "--all"), env, d,
                                  d / "update.log", timeout)
    machine = machine_busy_cores(ticks)
    stats = server.control("stats")
    polled, failed = sqlite_polled(d / "agg.db", since)
    return round_result("sqlite update --all", n, wall, cpu, 0.0, 0.0, [rss], stats, polled,
                        failed, PER_HOST, machine)


def pg_round(server: FeedServerProcess, feeds: Path, tmp: Path, pg: Pg, n: int, workers: int,
             mode: str, timeout: float, keep: bool, stagger: float = 0.0) -> dict[str, Any]:
    name = f"bench_scale_{os.getpid()}_{workers}w"
    d = tmp / f"pg{workers}"
    d.mkdir()
    try:
        url = pg.create(name)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        raise Broken(f"cannot create database {name} on {pg.url}: {exc}") from None
    try:
        cfg = write_config(d, url, free_port())
        env = base_env(d)
        r = subprocess.run(agg(cfg, feeds, "migrate"), env=env, cwd=d, capture_output=True,
                           text=True, timeout=300)
        if r.returncode != 0:
            raise Broken(f"aggregator migrate failed ({r.returncode}): {r.stderr[-1500:]}")
        server.control("reset")
        since = pg.sql("SELECT now()", name)
        pg_all0 = all_postgres_cpu()
        ticks = machine_ticks()
        if mode == "update":
            wall, cpu, rss = run_measured(agg(cfg, feeds, "update", "--all"), env, d,
                                          d / "update.log", timeout)
            # The update's backends are gone by now: count its connections' CPU through
            # the machine-wide delta only.
            cpu_pg = 0.0
            rss_list = [rss]
            machine = machine_busy_cores(ticks)
        else:
            wall, cpu, cpu_pg, rss_list, machine = _workers_round(cfg, feeds, env, d, pg, name, n,
                                                         workers, since, timeout, stagger)
        pg_all = all_postgres_cpu() - pg_all0
        if mode == "update":
            cpu_pg = pg_all  # upper bound: the only measure left for a finished process
        stats = server.control("stats")
        polled, failed = pg_polled(pg, name, since)
        label = (f"postgresql {workers} worker{'s' if workers > 1 else ''}" if mode == "worker"
                 else "postgresql update --all")
        return round_result(label, n, wall, cpu, cpu_pg, pg_all, rss_list, stats, polled,
                            failed, PER_HOST, machine)
    finally:
        if not keep:
            pg.drop(name)


def _workers_round(cfg: Path, feeds: Path, env: dict[str, str], d: Path, pg: Pg, name: str,
                   n: int, workers: int, since: str, timeout: float, stagger: float
                   ) -> tuple[float, float, float, list[float], float]:
    t0 = time.perf_counter()
    ticks = machine_ticks()
    procs = []
    for w in range(workers):
        if w and stagger:
            time.sleep(stagger)
        log = open(d / f"worker{w}.log", "wb")  # noqa: SIM115 (closed with the process)
        procs.append((subprocess.Popen(agg(cfg, feeds, "worker"), env=env, cwd=d, stdout=log,
                                       stderr=subprocess.STDOUT), log))
    hwm: dict[int, float] = {}
    backend_cpu: dict[int, float] = {}
    done = False
    shown = t0
    try:
        while True:
            time.sleep(1.0)
            for p, _ in procs:
                if p.poll() is not None:
                    tail = (d / f"worker{procs.index((p, _))}.log").read_text(
                        errors="replace")[-1500:]
                    raise Broken(f"aggregator worker exited early with {p.returncode}:\n{tail}")
            for p, _ in procs:  # peak RSS per worker: its own VmHWM plus its children's
                hwm[p.pid] = max(hwm.get(p.pid, 0.0), sum(vm_hwm_mb(q) for q in tree(p.pid)))
            for b in pg.backend_pids(name):
                backend_cpu[b] = max(backend_cpu.get(b, 0.0), proc_cpu(b))
            polled, _ = pg_polled(pg, name, since)
            if time.perf_counter() - shown >= 30:
                shown = time.perf_counter()
                print(f"  ... {polled}/{n} feeds polled after {shown - t0:.0f} s", flush=True)
            if polled >= n:
                done = True
                break
            if time.perf_counter() - t0 > timeout:
                raise Broken(f"{workers} worker(s): only {polled} of {n} feeds polled within "
                             f"the {timeout:.0f} s round timeout (logs in {d})")
        wall = time.perf_counter() - t0
        machine = machine_busy_cores(ticks)  # to the last feed, not the workers' shutdown
        for b in pg.backend_pids(name):  # last reading before the workers disconnect
            backend_cpu[b] = max(backend_cpu.get(b, 0.0), proc_cpu(b))
    finally:
        cpu = 0.0
        for p, _log in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p, log in procs:
            try:
                _pid, _status, ru = os.wait4(p.pid, 0) if done else (0, 0, None)
                if ru is not None:
                    cpu += ru.ru_utime + ru.ru_stime
                    hwm[p.pid] = max(hwm.get(p.pid, 0.0), ru.ru_maxrss / 1024)
                else:
                    p.wait(60)
            except (ChildProcessError, subprocess.TimeoutExpired):
                p.kill()
            log.close()
    return wall, cpu, sum(backend_cpu.values()), [hwm[p.pid] for p, _ in procs], machine


# =========================================================================== report

def report(rows: list[dict[str, Any]], workers_max: int) -> dict[str, Any]:
    by = {r["round"]: r for r in rows}
    sqlite = by.get("sqlite update --all")
    one = next((r for r in rows if r["round"] == "postgresql 1 worker"), None)
    many = next((r for r in rows if r["round"] == f"postgresql {workers_max} workers"), None)
    print(f"\nbench-scale: {rows[0]['feeds']} feeds, {os.cpu_count()} cores, "
          "full_text: false, default politeness\n")
    head = (f"{'round':<26}{'feeds/s':>8}{'vs 1w':>7}{'CPU ms/feed':>12}{'vs SQLite':>10}"
            f"{'req/feed':>9}{'peak RSS MB/worker':>20}{'in flight/host':>15}")
    print(head)
    for r in rows:
        ratio = (f"{r['feeds_per_s'] / one['feeds_per_s']:.2f}x"
                 if one and one["feeds_per_s"] and r is not sqlite else "")
        vs = (f"{r['cpu_ms_per_feed'] / sqlite['cpu_ms_per_feed']:.2f}x"
              if sqlite and sqlite["cpu_ms_per_feed"] else "")
        rss = "/".join(f"{x:.0f}" for x in r["peak_rss_mb_per_worker"])
        print(f"{r['round']:<26}{r['feeds_per_s']:>8.1f}{ratio:>7}{r['cpu_ms_per_feed']:>12.1f}"
              f"{vs:>10}{r['requests_per_feed_max']:>9}{rss:>20}"
              f"{r['max_in_flight_per_host']:>9} (<= {r['per_host_concurrency']})")
    print()
    for r in rows:
        print(f"{r['round']}: {r['polled']}/{r['feeds']} polled ({r['failed']} failed) in "
              f"{r['wall_s']:.1f} s; CPU {r['cpu_process_s']:.1f} s process(es) + "
              f"{r['cpu_pg_backends_s']:.1f} s PG backends (all postgres processes: "
              f"{r['cpu_pg_all_s']:.1f} s; feed server, not counted: "
              f"{r.get('cpu_feed_server_s', 0.0):.1f} s), {r['cpu_util_cores']:.2f} cores busy counted, "
              f"{r['machine_cores_busy']:.2f} of {os.cpu_count()} machine-wide")
    targets: dict[str, Any] = {}
    if one and many and one["feeds_per_s"]:
        targets["throughput_ratio"] = round(many["feeds_per_s"] / one["feeds_per_s"], 2)
        targets["one_worker_cores_busy"] = one["cpu_util_cores"]
        targets["one_worker_machine_cores_busy"] = one["machine_cores_busy"]
        # The machine as a whole (the feed server and PostgreSQL's own processes too): a
        # second worker can only add what one leaves idle.
        busy = one["machine_cores_busy"] >= 0.9 * (os.cpu_count() or 1)
        # At one worker's machine-wide CPU per feed, more workers can at most fill what it
        # leaves idle: the most any number of them could reach on this machine.
        bound = (os.cpu_count() or 1) / max(one["machine_cores_busy"], 1e-9)
        targets["throughput_ratio_machine_bound"] = round(bound, 2)
        print(f"\n{workers_max} workers / 1 worker throughput = {targets['throughput_ratio']}x"
              " (target >= 1.7x)" + (" -- one worker already keeps every core busy: compare"
                                     " CPU per feed instead" if busy else ""))
        print(f"  one worker kept {one['machine_cores_busy']:.2f} of {os.cpu_count()} cores busy:"
              f" at its CPU per feed, this machine allows at most {bound:.2f}x")
    pg_rows = [r for r in rows if r["round"].startswith("postgresql")]
    if sqlite and pg_rows:
        worst = max(r["cpu_ms_per_feed"] for r in pg_rows) / max(sqlite["cpu_ms_per_feed"], 1e-9)
        targets["pg_cpu_vs_sqlite_max"] = round(worst, 2)
        print(f"PostgreSQL CPU per feed / SQLite's = {worst:.2f}x at most (target <= 1.5x)")
    twice = sum(r["feeds_requested_twice"] for r in rows)
    targets["feeds_fetched_twice"] = twice
    print(f"feeds fetched twice in a round: {twice} (target 0)"
          + "".join(f"\n  {r['round']}: {', '.join(r['twice_examples'])}" for r in rows
                    if r["twice_examples"]))
    if pg_rows:
        rss_max = max(x for r in pg_rows for x in r["peak_rss_mb_per_worker"])
        targets["peak_rss_mb_per_worker_max"] = rss_max
        print(f"peak RSS per worker: {rss_max:.0f} MB (target <= 200 MB)")
    return {"feeds": rows[0]["feeds"], "cores": os.cpu_count(), "rounds": rows,
            "targets": targets}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--feeds", type=int, default=5000)
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--entries", type=int, default=20)
    ap.add_argument("--workers-max", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write the table as JSON here")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory and the PostgreSQL databases")
    ap.add_argument("--pg-url", default=os.environ.get(
        "AGGREGATOR_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432"),
        help="server on which the bench creates (and drops) databases of its own")
    ap.add_argument("--pg-mode", choices=("worker", "update"), default="worker",
                    help="worker: `aggregator worker` processes; update: one `update --all`")
    ap.add_argument("--stagger", type=float, default=0.0,
                    help="seconds between the starts of the workers of a round (default 0: "
                         "all at once, as after a database outage or a fleet restart)")
    ap.add_argument("--no-pg", action="store_true", help="the SQLite round only")
    ap.add_argument("--many-only", action="store_true",
                    help="the --workers-max round alone, no one-worker round (for iterating)")
    ap.add_argument("--no-sqlite", action="store_true",
                    help="the PostgreSQL rounds only (no CPU ratio to SQLite)")
    ap.add_argument("--round-timeout", type=float, default=0.0,
                    help="seconds per round (default: 600 + feeds / 2)")
    args = ap.parse_args()
    if not 1 <= args.hosts <= 254:
        ap.error("--hosts must be 1..254")
    timeout = args.round_timeout or 600 + args.feeds / 2
    # SIGTERM as ^C: the finally blocks stop the feed server, the workers, drop the databases.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    server = FeedServerProcess(args.feeds, args.hosts, args.entries, args.latency)
    rows: list[dict[str, Any]] = []
    broken: list[str] = []
    try:
        feeds = write_feeds(tmp / "feeds.yaml", [{"name": f"outlet{n}", "url": server.url(n)}
                                                 for n in range(args.feeds)])
        print(f"feed server: {args.feeds} feeds on 127.0.0.1-{args.hosts}:{server.port}, "
              f"{args.latency * 1000:.0f} ms latency; work dir {tmp}", flush=True)
        plan: list[tuple[str, Any]] = [] if args.no_sqlite else [("sqlite", None)]
        if not args.no_pg:
            counts = ([args.workers_max] if args.many_only else [1, args.workers_max]) \
                if args.pg_mode == "worker" else [1]
            plan += [("pg", w) for w in dict.fromkeys(counts)]
        pg = Pg(args.pg_url)
        for kind, w in plan:
            label = "sqlite update --all" if kind == "sqlite" else f"postgresql, {w} worker(s)"
            print(f"round: {label} ...", flush=True)
            server_cpu0 = proc_cpu(server.proc.pid)
            try:
                if kind == "sqlite":
                    row = sqlite_round(server, feeds, tmp, args.feeds, timeout)
                else:
                    row = pg_round(server, feeds, tmp, pg, args.feeds, w, args.pg_mode,
                                   timeout, args.keep, args.stagger)
            except Broken as exc:
                broken.append(f"{label}: {exc}")
                print(f"  BROKEN: {exc}", file=sys.stderr, flush=True)
                continue
            # Not counted (it stands for the internet) but it shares the machine's cores.
            row["cpu_feed_server_s"] = round(proc_cpu(server.proc.pid) - server_cpu0, 2)
            rows.append(row)
            print(f"  {row['polled']} feeds in {row['wall_s']:.1f} s, "
                  f"{row['cpu_ms_per_feed']:.1f} ms CPU per feed", flush=True)
            if row["polled"] < args.feeds:
                broken.append(f"{label}: only {row['polled']} of {args.feeds} feeds polled")
    finally:
        server.close()
    result = report(rows, args.workers_max) if rows else {"rounds": []}
    result["broken"] = broken
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.keep:
        print(f"kept: {tmp}")
    else:
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    if broken:
        print("\nbroken rounds:\n  " + "\n  ".join(b.splitlines()[0] for b in broken),
              file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
