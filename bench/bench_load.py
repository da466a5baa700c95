"""`make bench-load`: 10,000 feeds on the local feed server, the real daemon, several rounds.

The clock is compressed: the feeds' interval is `--interval` seconds (default 120) instead of
15 minutes, so one round takes minutes, not a quarter of an hour. CPU is measured per round
(daemon process and all its worker processes, from /proc) and converted to the average CPU the
same work costs at the real 15-minute interval; peak RSS is sampled every second; lateness is
what the daemon logs for each poll tick (how long after its due time each fetch started).

Each round, `--share` of the feeds publish one new entry with an article page, so full-text
extraction and story matching run too. Before the measured rounds, a cold `aggregator update
--all --no-articles` fills the database (not measured), and the cold backlog of article pages
is marked skipped so the rounds measure the steady state, not the one-off catch-up.

Usage: python bench/bench_load.py [--feeds 10000] [--rounds 3] [--interval 120] [--share 0.1]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.feedserver import FeedServer  # noqa: E402
from tests.util import env_for, write_feeds  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
REAL_INTERVAL = 900.0


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(d))
        except (OSError, IndexError):
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_and_rss(pid: int) -> tuple[float, float, float]:
    """(CPU seconds of the process tree incl. reaped children, main RSS MB, tree RSS MB)."""
    cpu = 0.0
    main_rss = tree_rss = 0.0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu += sum(int(x) for x in fields[11:15]) / TICKS  # utime stime cutime cstime
            with open(f"/proc/{p}/status") as f:
                rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
            tree_rss += rss / 1024
            if p == pid:
                main_rss = rss / 1024
        except (OSError, StopIteration, ValueError):
            continue
    return cpu, main_rss, tree_rss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--feeds", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--interval", type=float, default=120.0)
    ap.add_argument("--share", type=float, default=0.1)
    args = ap.parse_args()
    rng = random.Random(7)
    py = sys.executable
    with FeedServer(feeds=args.feeds, entries=10) as server, \
            tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        feeds = write_feeds(tmp / "feeds.yaml",
                            [{"name": f"f{n}", "url": server.url(f"/feed/{n}.xml")}
                             for n in range(args.feeds)])
        env = env_for(tmp, AGGREGATOR_DEFAULT_INTERVAL=str(args.interval),
                      AGGREGATOR_MIN_INTERVAL=str(min(60.0, args.interval)),
                      AGGREGATOR_ARTICLE_BUDGET="400", AGGREGATOR_WORKERS="8",
                      AGGREGATOR_LOG_LEVEL="INFO", AGGREGATOR_EXTRACT_PROCESSES="1")
        print(f"cold fill: {args.feeds} feeds ...", flush=True)
        t0 = time.time()
        subprocess.run([py, "-m", "aggregator.cli", "--feeds", str(feeds), "update", "--all",
                        "--no-articles"], env=env, check=True, cwd=tmp,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"  done in {time.time() - t0:.0f} s", flush=True)
        conn = sqlite3.connect(tmp / "agg.db")
        conn.execute("UPDATE entries SET extract_status = 'skipped'"
                     " WHERE extract_status = 'pending'")
        # Spread the first due times over one interval, as a long-running daemon has them.
        conn.execute("UPDATE feeds SET next_poll = strftime('%Y-%m-%dT%H:%M:%SZ', 'now',"
                     f" '+' || (abs(random()) % {int(args.interval)}) || ' seconds')")
        conn.commit()
        conn.close()

        log_path = tmp / "daemon.log"
        proc = subprocess.Popen([py, "-m", "aggregator.cli", "--feeds", str(feeds), "run"],
                                env=env, cwd=tmp, stdout=open(log_path, "wb"),
                                stderr=subprocess.STDOUT)
        peak = {"main": 0.0, "tree": 0.0}
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(1.0):
                _, m, t = cpu_and_rss(proc.pid)
                peak["main"] = max(peak["main"], m)
                peak["tree"] = max(peak["tree"], t)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        time.sleep(5)
        rounds = []
        for r in range(args.rounds):
            for n in rng.sample(range(args.feeds), int(args.feeds * args.share)):
                server.feed_rounds[n] = server.feed_rounds.get(n, 0) + 1
            cpu0, _, _ = cpu_and_rss(proc.pid)
            t0 = time.time()
            time.sleep(args.interval)
            cpu1, _, _ = cpu_and_rss(proc.pid)
            rounds.append((cpu1 - cpu0, time.time() - t0))
            print(f"round {r + 1}: {cpu1 - cpu0:.1f} CPU s in {time.time() - t0:.0f} s",
                  flush=True)
        stop.set()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log = log_path.read_text(errors="replace")
        lateness = [float(x) for x in re.findall(r"max lateness ([\d.-]+) s", log)]
        conn = sqlite3.connect(tmp / "agg.db")
        extracted = conn.execute(
            "SELECT COUNT(*) FROM entries WHERE extract_status IN ('done','feed')").fetchone()[0]
        polls = conn.execute("SELECT COUNT(*) FROM feeds WHERE last_success IS NOT NULL"
                             ).fetchone()[0]
        conn.close()
    per_round = sum(c for c, _ in rounds) / len(rounds)
    avg_cpu_real = per_round / REAL_INTERVAL
    print(f"\nbench-load: {args.feeds} feeds, interval {args.interval:.0f} s (standing in for "
          f"15 min), {args.share:.0%} of feeds with a new entry + article each round, "
          f"{os.cpu_count()} cores\n")
    print(f"{'figure':<52}{'measured':>14}{'target':>14}")
    print(f"{'CPU per round (daemon + workers)':<52}{per_round:>12.1f} s{'':>14}")
    print(f"{'average CPU at a 15-minute interval (one core)':<52}{avg_cpu_real:>13.1%}"
          f"{'< 25%':>14}")
    print(f"{'average CPU at the compressed interval':<52}"
          f"{per_round / args.interval:>13.1%}{'':>14}")
    print(f"{'peak RSS, daemon process':<52}{peak['main']:>11.0f} MB{'< 300 MB':>14}")
    print(f"{'peak RSS, daemon + worker processes':<52}{peak['tree']:>11.0f} MB{'':>14}")
    print(f"{'max lateness of a poll after its due time':<52}"
          f"{max(lateness, default=0):>12.1f} s{'< 60 s':>14}")
    print(f"{'articles extracted during the rounds':<52}{extracted:>14}")
    print(f"{'feeds polled successfully':<52}{polls:>14}")


if __name__ == "__main__":
    main()
