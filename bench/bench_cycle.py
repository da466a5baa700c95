"""`make bench`: one cold and one warm poll cycle through the real CLI and database, next to
the raw limit measured in the same run (plain requests + feedparser over the same feeds with
the same thread count), and that limit plus only the trigram FTS5 insert the store must do
(a floor for the cold cycle).

Each measured command runs as a child process; its CPU time (user+system, its own worker
processes included) and peak RSS come from os.wait4, so the feed server's own work is not
counted. Usage: python bench/bench_cycle.py [--feeds N] [--entries N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.feedserver import FeedServer  # noqa: E402
from tests.util import env_for, write_feeds  # noqa: E402

SETUP = r"""
import sys, feedparser, requests
from concurrent.futures import ThreadPoolExecutor
urls = sys.argv[2:]
workers = int(sys.argv[1])
session = requests.Session()
adapter = requests.adapters.HTTPAdapter(pool_connections=workers, pool_maxsize=workers)
session.mount("http://", adapter)
def fetch_parse(u):
    r = session.get(u, timeout=30)
    return feedparser.parse(r.content, response_headers={"content-type": r.headers.get("content-type", "")})
"""
RAW = SETUP + r"""
with ThreadPoolExecutor(workers) as ex:
    print(sum(ex.map(lambda u: len(fetch_parse(u).entries), urls)))
"""
# The floor the issue's own requirements set: the raw loop plus only the trigram FTS5 index
# the store must keep (title and tag-stripped text of every entry, one transaction per feed
# from one writer thread, automerge as in the store). No entry table, no dedup, no sanitiser.
FLOOR = SETUP + r"""
import queue, re, sqlite3, threading
db = sqlite3.connect("floor.db", check_same_thread=False)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.execute("CREATE VIRTUAL TABLE fts USING fts5(title, text, tokenize='trigram')")
db.execute("INSERT INTO fts(fts, rank) VALUES ('automerge', 16)")
tags = re.compile(r"<[^>]*>")
q = queue.Queue(64)
def write():
    while (rows := q.get()) is not None:
        with db:
            db.executemany("INSERT INTO fts(title, text) VALUES (?, ?)", rows)
writer = threading.Thread(target=write)
writer.start()
def one(u):
    entries = fetch_parse(u).entries
    q.put([(e.get("title", ""), tags.sub(" ", e.get("summary", ""))) for e in entries])
    return len(entries)
with ThreadPoolExecutor(workers) as ex:
    n = sum(ex.map(one, urls))
q.put(None)
writer.join()
print(n)
"""


def measure(cmd: list[str], env: dict[str, str], cwd: Path) -> dict[str, float]:
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    _pid, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    if status != 0:
        raise SystemExit(f"command failed ({status}): {' '.join(cmd[:4])}...\n{err[-2000:]}")
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024,
            "out": len(out)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--feeds", type=int, default=1000)
    ap.add_argument("--entries", type=int, default=30)
    args = ap.parse_args()
    py = sys.executable
    with FeedServer(feeds=args.feeds, entries=args.entries) as server, \
            tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        urls = [server.url(f"/feed/{n}.xml") for n in range(args.feeds)]
        feeds = write_feeds(tmp / "feeds.yaml",
                            [{"name": f"f{n}", "url": u} for n, u in enumerate(urls)])
        env = env_for(tmp, AGGREGATOR_FULL_TEXT="false", AGGREGATOR_LOG_LEVEL="WARNING",
                      XDG_CACHE_HOME=str(tmp / "cache"))  # the CLI's config cache
        workers = "8"
        env["AGGREGATOR_WORKERS"] = workers
        agg = [py, "-m", "aggregator.cli", "--feeds", str(feeds), "update"]
        startup = measure([py, "-c", "import aggregator.pipeline"], env, tmp)
        raw = measure([py, "-c", RAW, workers, *urls], env, tmp)
        floor = measure([py, "-c", FLOOR, workers, *urls], env, tmp)
        cold = measure(agg + ["--all"], env, tmp)
        warm = measure(agg + ["--all"], env, tmp)
    n = args.feeds
    print(f"\nbench: {n} feeds x {args.entries} entries, {workers} fetch threads, "
          f"{os.cpu_count()} cores\n")
    print(f"{'run':<34}{'wall s':>9}{'CPU s':>9}{'peak RSS MB':>13}{'CPU vs raw':>12}")
    rows = [("raw requests+feedparser (limit)", raw),
            ("raw + trigram FTS insert only", floor), ("aggregator cold cycle", cold),
            ("aggregator warm cycle (all 304)", warm), ("python + imports only", startup)]
    for label, m in rows:
        ratio = m["cpu"] / raw["cpu"]
        print(f"{label:<34}{m['wall']:>9.2f}{m['cpu']:>9.2f}{m['rss_mb']:>13.1f}{ratio:>11.2f}x")
    print()
    print(f"cold CPU / raw CPU           = {cold['cpu'] / raw['cpu']:.2f}x   (target <= 1.30x; "
          f"the FTS floor alone is {floor['cpu'] / raw['cpu']:.2f}x)")
    print(f"warm CPU per feed            = {warm['cpu'] / n * 1000:.2f} ms (target <= 1 ms), "
          f"{(warm['cpu'] - startup['cpu']) / n * 1000:.2f} ms net of interpreter start-up")
    print(f"peak RSS (largest process)   = {max(cold['rss_mb'], warm['rss_mb']):.1f} MB "
          "(target <= 150 MB)")


if __name__ == "__main__":
    main()
