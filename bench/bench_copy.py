"""copy-store at scale: a generated SQLite store (N entries of a few paragraphs in the region's
scripts, with band keys and their index, stories of several members, article pages,
translation links, pruned keys) copied into a new PostgreSQL database, and back into a new
SQLite file: wall time, CPU (this process, and the PostgreSQL backends of the database),
and the verified counts.

    make bench-copy   # python bench/bench_copy.py [--entries 100000] [--postgres URL]

The rows are written with executemany into a store migrated by the code (every table and
trigger as a real one has them); the database made for the run is dropped at the end."""

from __future__ import annotations

import argparse
import os
import random
import resource
import sqlite3
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from aggregator.store import SQLiteStorage, pack_bands
from aggregator.store.copy import copy_store
from aggregator.store.postgres import create_database, drop_database

WORDS = {
    "hy": "Հայաստանի կառավարությունը երեքշաբթի օրը հայտարարեց նոր ծրագրի մասին որը "
          "կներառի սահմանային համայնքների ենթակառուցվածքների վերականգնումը".split(),
    "ru": "Правительство во вторник объявило о новой программе восстановления "
          "инфраструктуры приграничных общин и дорог региона".split(),
    "ka": "მთავრობამ სამშაბათს გამოაცხადა ახალი პროგრამა სასაზღვრო თემების "
          "ინფრასტრუქტურის აღდგენის შესახებ".split(),
    "en": "The government announced on Tuesday a new programme to rebuild the "
          "infrastructure of border communities and regional roads".split(),
}


def ts(d: datetime) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


def paragraph(rng: random.Random, lang: str, n: int) -> str:
    words = WORDS[lang]
    return " ".join(rng.choice(words) for _ in range(n)) + f" {rng.randrange(10**6)}."


def build(path: Path, entries: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    store = SQLiteStorage(path)
    store.migrate()
    store.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = OFF")
    now = datetime(2026, 11, 1, tzinfo=UTC)
    feeds = max(entries // 200, 10)
    langs = list(WORDS)
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO feeds (id, name, url, title, language, tags, active, interval,"
        " last_attempt, last_success, last_status, next_poll, created, warnings)"
        " VALUES (?, ?, ?, ?, ?, '[\"news\"]', ?, 900, ?, ?, 200, ?, ?, '[]')",
        [(i, f"feed{i}", f"https://outlet{i}.example/rss", f"Outlet {i}", langs[i % 4],
          int(i % 50 != 0), ts(now), ts(now), ts(now + timedelta(minutes=15)),
          ts(now - timedelta(days=90))) for i in range(1, feeds + 1)])
    # A story every 3 entries on average, of 1 to 5 members.
    story_of: list[int | None] = []
    stories: list[tuple[int, int, str, str, int, int, str]] = []
    while len(story_of) < entries:
        size = rng.choice((1, 1, 1, 2, 3, 5))
        if size == 1:
            story_of.append(None)
            continue
        sid = len(stories) + 1
        first = len(story_of) + 1
        day = ts(now - timedelta(minutes=len(story_of)))
        stories.append((sid, first, day, day, size, size, f"tag:agg,2026:{sid}"))
        story_of.extend([sid] * size)
    story_of = story_of[:entries]
    db.executemany(
        "INSERT INTO stories (id, representative_id, first_seen, updated, entry_count,"
        " outlet_count, item_id) VALUES (?, ?, ?, ?, ?, ?, ?)", stories)
    batch: list[tuple[object, ...]] = []
    bands: list[tuple[int, int]] = []
    for i in range(1, entries + 1):
        lang = langs[i % 4]
        text = "\n\n".join(paragraph(rng, lang, 40) for _ in range(4))
        keys = [rng.getrandbits(63) - (1 << 62) for _ in range(16)]
        bands += [(k, i) for k in keys]
        when = now - timedelta(minutes=i)
        published = "" if i % 97 == 0 else ts(when)
        batch.append((
            i, i % feeds + 1, f"key{i}", f"guid-{i}", f"https://outlet.example/n/{i}",
            f"outlet.example/n/{i}", f"Headline {i} {WORDS[lang][i % 5]}",
            "<p>" + text.replace("\n\n", "</p><p>") + "</p>", text, text[:200],
            len(text.split()), lang, '["politics"]', "[]", published, ts(when), ts(when),
            ts(when), ts(when), f"h{i}", "done" if i % 3 else "feed", f"t{i}",
            pack_bands(keys), story_of[i - 1],
            "first" if story_of[i - 1] else None, 0.8 if story_of[i - 1] else None))
        if len(batch) == 5000 or i == entries:
            db.executemany(
                "INSERT INTO entries (id, feed_id, key, guid, url, url_norm, title,"
                " content_html, text, summary, word_count, language, categories, enclosures,"
                " published, updated, first_seen, last_seen, extracted_at, content_hash,"
                " extract_status, text_hash, bands, story_id, match_reason, match_score)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", batch)
            batch = []
    bands.sort()
    db.executemany("INSERT OR IGNORE INTO entry_bands VALUES (?, ?)", bands)
    db.execute("INSERT OR REPLACE INTO store_state VALUES ('bands_indexed_upto', ?)",
               (entries,))
    body = ("<html><body>" + "<p>page text</p>" * 1000 + "</body></html>").encode()
    db.executemany(
        "INSERT INTO pages (entry_id, url, final_url, fetched_at, charset, body)"
        " VALUES (?, ?, ?, ?, 'utf-8', ?)",
        [(i, f"https://outlet.example/n/{i}", None, ts(now), body)
         for i in range(1, entries + 1, 10)])
    db.executemany(
        "INSERT INTO entry_links VALUES (?, 'page', ?, 'ru', 'hreflang')",
        [(i, f"outlet.example/ru/n/{i}") for i in range(1, entries + 1, 7)])
    db.executemany("INSERT INTO pruned_keys VALUES (?, ?, ?)",
                   [(i % feeds + 1, f"old{i}", ts(now)) for i in range(1000)])
    db.execute("COMMIT")
    db.close()


class BackendCPU:
    """CPU seconds of the PostgreSQL backends serving one database (their process titles
    name it), sampled until stopped: a backend's last sample before it exits counts."""

    def __init__(self, dbname: str) -> None:
        self.dbname = dbname.encode()
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK")

    def _sample(self) -> None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if self.dbname not in f.read():
                        continue
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            self.seen[int(pid)] = (int(fields[11]) + int(fields[12])) / self._tick

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def __enter__(self) -> BackendCPU:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def seconds(self) -> float:
        return sum(self.seen.values())


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(source: str, target: str, label: str, dbname: str) -> None:
    c0, w0 = cpu(), time.monotonic()
    with BackendCPU(dbname) as backends:
        report = copy_store(source, target, batch=2000)
    wall, own = time.monotonic() - w0, cpu() - c0
    print(f"\n{label}: {'verified' if report.ok else 'MISMATCH'}; wall {wall:.1f}s, "
          f"CPU {own:.1f}s this process + {backends.seconds:.1f}s PostgreSQL backends")
    print(f"  {'table':<12} {'source':>9} {'target':>9}")
    for t in report.tables:
        print(f"  {t.table:<12} {t.source_rows:>9} {t.target_rows:>9} "
              f"{'ok' if t.ok else 'MISMATCH'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=100_000)
    # The test server (AGGREGATOR_TEST_POSTGRES); the run's database is made from its
    # maintenance database.
    server = os.environ.get("AGGREGATOR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/")
    ap.add_argument("--postgres", default=urlunsplit(urlsplit(server)._replace(
        path="/postgres")), help="a URL of the server, in a database that exists")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "source.db"
        t0 = time.monotonic()
        build(src, args.entries)
        print(f"built {args.entries} entries in {time.monotonic() - t0:.1f}s "
              f"({src.stat().st_size / 1e6:.0f} MB)")
        name = f"aggbench_{uuid.uuid4().hex[:8]}"
        url = create_database(args.postgres, name)
        try:
            run(str(src), url, "SQLite -> PostgreSQL", name)
            run(url, str(Path(tmp) / "back.db"), "PostgreSQL -> SQLite", name)
        finally:
            drop_database(args.postgres, name)


if __name__ == "__main__":
    main()
