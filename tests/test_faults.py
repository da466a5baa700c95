"""Faults: kill -9 mid-cycle, long readers, WAL growth. Nothing stored is lost."""

from __future__ import annotations

import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lxml import etree

from .feedserver import FeedServer
from .util import env_for, write_feeds


def _start_update(feeds: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-u", "-m", "aggregator.cli", "--feeds", str(feeds), "update", "--all"],
        env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=feeds.parent,
    )


@pytest.mark.slow  # among the longest of the suite: make test-fast skips it
def test_kill_9_at_random_points(tmp_path: Path) -> None:
    rng = random.Random(20261127)
    with FeedServer(feeds=60, entries=15) as server:
        feeds = write_feeds(tmp_path / "feeds.yaml",
                            [{"name": f"f{n}", "url": server.url(f"/feed/{n}.xml")}
                             for n in range(60)])
        env = env_for(tmp_path, AGGREGATOR_FULL_TEXT="false", AGGREGATOR_WORKERS="4")
        out = tmp_path / "public"
        kills = 0
        for attempt in range(45):
            if kills >= 22:
                break
            server.round = attempt  # every cycle has new entries to write
            log = tmp_path / f"update-{attempt}.log"
            proc = _start_update(feeds, env, log)
            time.sleep(rng.uniform(0.3, 1.6))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(30)
            conn = sqlite3.connect(tmp_path / "agg.db", timeout=10)
            try:
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                # Every feed whose commit was logged has its entries.
                logged = re.findall(r"^(f\d+): ok, (\d+) new", log.read_text(), re.M)
                for name, _new in logged:
                    count = conn.execute(
                        "SELECT entries FROM feed_health WHERE name = ?", (name,)).fetchone()[0]
                    assert count >= 15, (attempt, name)
                    guid = f"feed{name[1:]}-item{14 + attempt}"
                    assert conn.execute("SELECT 1 FROM entries WHERE guid = ?",
                                        (guid,)).fetchone(), (attempt, guid)
            finally:
                conn.close()
            # Published files are whole: the old or the new version, never partial.
            for f in out.glob("all.*"):
                if f.suffix in (".atom", ".rss"):
                    etree.fromstring(f.read_bytes())
        assert kills >= 20, f"only {kills} cycles were killed mid-way"
        # The next start resumes and completes.
        server.round = 50
        r = subprocess.run([sys.executable, "-m", "aggregator.cli", "--feeds", str(feeds),
                            "update", "--all"], env=env, capture_output=True, text=True,
                           timeout=120, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert r.stdout.count(": ok") == 60
        conn = sqlite3.connect(tmp_path / "agg.db")
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


HELD_CYCLES = 8  # each writes some 2.5 MB of WAL (new entries, feed state, outputs)
WAL_BOUND = 4 * 1024 * 1024


@pytest.mark.slow  # among the longest of the suite: make test-fast skips it
def test_long_reader_does_not_block_and_wal_stays_bounded(tmp_path: Path) -> None:
    with FeedServer(feeds=20, entries=20) as server:
        feeds = write_feeds(tmp_path / "feeds.yaml",
                            [{"name": f"f{n}", "url": server.url(f"/feed/{n}.xml")}
                             for n in range(20)])
        env = env_for(tmp_path, AGGREGATOR_FULL_TEXT="false")
        cmd = [sys.executable, "-m", "aggregator.cli", "--feeds", str(feeds), "update", "--all"]
        assert subprocess.run(cmd, env=env, capture_output=True, timeout=120).returncode == 0
        reader = sqlite3.connect(f"file:{tmp_path / 'agg.db'}?mode=ro", uri=True, timeout=1)
        reader.execute("BEGIN")
        first = reader.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        # A downstream tool holding its snapshot across HELD_CYCLES whole cycles, each with
        # new entries to write (a count of cycles, not a span of time: what the snapshot
        # holds back is the cycles' writes).
        for cycles in range(1, HELD_CYCLES + 1):
            server.round = cycles
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            assert "locked" not in r.stderr
            # The reader keeps its consistent snapshot and is never refused.
            assert reader.execute("SELECT COUNT(*) FROM items").fetchone()[0] == first
            time.sleep(0.2)
        wal = tmp_path / "agg.db-wal"
        # Nothing could be checkpointed past the snapshot: the WAL grew past the bound below
        # (so that the bound checks the checkpoint after the reader, not a small WAL).
        assert wal.stat().st_size > WAL_BOUND, wal.stat().st_size
        reader.execute("COMMIT")
        reader.close()
        # Once the reader is gone, the next cycle checkpoints: the WAL does not keep growing.
        server.round = cycles + 1
        assert subprocess.run(cmd, env=env, capture_output=True, timeout=120).returncode == 0
        assert not wal.exists() or wal.stat().st_size < WAL_BOUND
        conn = sqlite3.connect(tmp_path / "agg.db")
        assert conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 20 * (20 + cycles + 1)
