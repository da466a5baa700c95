"""Cost of matching ONE new entry against 10k, 100k and 1M stored entries (`make bench-dedup`).

One match = signature + band keys + containment keys + text hash of the new entry, the
candidate lookup through SQLite (URL, text hash and LSH band indexes, the containment lookup
over the second band family, then the candidates' rows within the window, the containment
candidates' with their text, as the store does it) and dedup.decide(). The database is a
real SQLite file in a temporary directory with the store's dedup schema. Filler entries stand
for unrelated stories: random signatures and random containment-family keys (articles of 80
words or more are indexed under that family only, dedup.lookup_keys; unrelated texts share
no band), spread over 30 days; their text is not stored (only containment
candidates' text is ever read, and a filler never is one). Planted among them and to be
found: near-duplicates of corpus articles, and wire copies (the article whole under a new
lede and closing, twice its length) that only the containment lookup finds.

Translation matching (stories.join_linked_stories) is measured on the same databases: every
stored entry names two language versions in entry_links (indexed on url_norm, as in the
store); a new entry's lookups are its links' targets (entries by url_norm) and the links
naming its URL, and each probe must find the one planted link that names it.

Usage: python bench/bench_dedup.py [--sizes 10000,100000,1000000] [--probes 100] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aggregator import dedup  # noqa: E402
from aggregator.models import Candidate  # noqa: E402

SCHEMA = """
CREATE TABLE entries (id INTEGER PRIMARY KEY, feed_id INTEGER, story_id INTEGER, url_norm TEXT,
    text_hash TEXT, signature BLOB, title TEXT, published TEXT, word_count INTEGER, text TEXT);
CREATE TABLE entry_bands (band_key INTEGER NOT NULL, entry_id INTEGER NOT NULL,
    PRIMARY KEY (band_key, entry_id)) WITHOUT ROWID;
"""
INDEXES = """
CREATE INDEX entries_url_norm ON entries(url_norm);
CREATE INDEX entries_text_hash ON entries(text_hash);
"""
NOW = datetime(2020, 9, 29, 12, 0, tzinfo=UTC)
WINDOW = timedelta(days=7)
THRESHOLD = 0.7
BATCH = 50_000
PLANTED = 20  # near copies of probes 0..19, wire copies of probes 20..39
CANDIDATE_LIMIT = 200
BAND_ROWS_PER_BUCKET = 2_000_000  # band rows generated, sorted and inserted at once


def ts(d: datetime) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


def load_texts() -> list[tuple[str, str]]:
    """(title, text) of real articles from the corpus; synthetic ones if it is absent."""
    corpus = Path(os.environ.get("AGGREGATOR_SHARED", ROOT.parent / "shared")) / "corpus"
    out = []
    for p in sorted((corpus / "articles" / "newspaper4k-fulltext").glob("*/expected.txt")):
        text = p.read_text(encoding="utf-8")
        if len(dedup.tokens(text)) >= 150:
            out.append((p.parent.name, text))
    if len(out) < 50:
        rng = random.Random(1)
        vocab = [f"w{i}" for i in range(20_000)]
        out = [(f"t{i}", " ".join(rng.choices(vocab, k=600))) for i in range(100)]
    return out


def copy_of(text: str) -> str:
    """A syndicated copy: byline and footer added, last sentence dropped."""
    return "By Staff Reporter\n\n" + text.strip().rsplit(".", 1)[0] + ".\n\nAll rights reserved."


def wire_copy_of(text: str, others: list[str], rng: random.Random) -> str:
    """An outlet's article carrying ``text`` whole under its own lede and closing, twice its
    length: Jaccard about 0.5, found by the containment keys. The outlet's words are other
    articles' words shuffled, so that they contain no other probe's text."""
    n = len(text.split())
    words = [w for o in others for w in o.split()][:n]
    rng.shuffle(words)
    lede, closing = " ".join(words[: n * 2 // 3]), " ".join(words[n * 2 // 3 :])
    return f"{lede}\n\n{text}\n\n{closing}"


def build(path: Path, size: int, texts: list[tuple[str, str]], seed: int = 0) -> dict[int, int]:
    """Fill ``path`` with ``size`` entries; returns {probe index: planted entry id}."""
    rng = np.random.default_rng(seed)
    prng = random.Random(seed)
    db = sqlite3.connect(path)
    db.executescript(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;"
    )
    db.executescript(SCHEMA)
    planted_ids = dict(
        zip(range(2 * PLANTED), sorted(prng.sample(range(1, size + 1), 2 * PLANTED)), strict=True)
    )
    by_id = {eid: i for i, eid in planted_ids.items()}
    start = NOW - timedelta(days=30)
    planted_keys: list[tuple[int, int]] = []
    for lo in range(1, size + 1, BATCH):
        hi = min(size + 1, lo + BATCH)
        n = hi - lo
        sigs = rng.integers(0, 2**32, size=(n, dedup.NUM_PERM), dtype=np.uint32).astype("<u4")
        offsets = rng.integers(0, 30 * 86400, size=n)
        hashes = rng.integers(0, 2**63, size=(n, 2), dtype=np.int64)
        words = rng.integers(80, 2000, size=n)
        rows: list[tuple[object, ...]] = []
        for k in range(n):
            eid = lo + k
            if eid in by_id:
                i = by_id[eid]
                title, text = texts[i % len(texts)]
                if i < PLANTED:
                    copy = copy_of(text)
                else:
                    others = [texts[(i + k) % len(texts)][1] for k in range(1, 20)]
                    copy = wire_copy_of(text, others, prng)
                    title = "Our own headline " + title
                sig = dedup.signature(title, copy)
                assert sig is not None
                n_words = len(dedup.tokens(copy))
                rows.append(
                    (
                        eid,
                        eid % 300,
                        None,
                        f"https://planted.example/{eid}",
                        dedup.text_hash(title, copy),
                        sig,
                        title,
                        ts(NOW - timedelta(hours=6)),
                        n_words,
                        copy,
                    )
                )
                plan = dedup.lookup_keys(sig, n_words, THRESHOLD, True)
                keys = [*plan.near, *plan.contain]
                planted_keys += [(key, eid) for key in keys]
                continue
            rows.append(
                (
                    eid,
                    eid % 300,
                    eid // 3,
                    f"https://site{eid % 300}.example/news/{eid}",
                    f"{hashes[k, 0]:016x}{hashes[k, 1]:016x}",
                    sigs[k].tobytes(),
                    f"Entry {eid}",
                    ts(start + timedelta(seconds=int(offsets[k]))),
                    int(words[k]),
                    None,
                )
            )
        db.executemany("INSERT INTO entries VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    # Band rows in key order (the WITHOUT ROWID B-tree then grows at its right edge), made
    # bucket by bucket of the key space so that memory stays bounded at any size: the
    # fillers' CONTAIN_BANDS random keys each, as pairs (random key, random filler).
    fillers = np.array(sorted(set(range(1, size + 1)) - set(by_id)), dtype=np.int64)
    total = len(fillers) * dedup.CONTAIN_BANDS
    buckets = max(1, total // BAND_ROWS_PER_BUCKET)
    counts = rng.multinomial(total, [1 / buckets] * buckets)
    edges = np.linspace(-(2**63), 2**63 - 1, buckets + 1, dtype=np.float64)
    planted_keys.sort()
    for b, count in enumerate(counts):
        lo_key = -(2**63) if b == 0 else int(edges[b])
        hi_key = 2**63 - 1 if b == buckets - 1 else int(edges[b + 1])
        keys = np.sort(rng.integers(lo_key, hi_key, size=count, dtype=np.int64))
        ids = fillers[rng.integers(0, len(fillers), size=count)]
        db.executemany(
            "INSERT OR IGNORE INTO entry_bands VALUES (?, ?)",
            zip(keys.tolist(), ids.tolist(), strict=True),
        )
    db.executemany("INSERT OR IGNORE INTO entry_bands VALUES (?, ?)", planted_keys)
    db.executescript(INDEXES)
    db.commit()
    db.close()
    return planted_ids


def containment_ids(db: sqlite3.Connection, keys: list[int]) -> list[int]:
    """The store's containment lookup: entries sharing CONTAIN_MIN_SHARED containment keys."""
    if not keys:
        return []
    marks = ",".join("?" * len(keys))
    shared = db.execute(
        f"SELECT entry_id, COUNT(*) FROM entry_bands WHERE band_key IN ({marks})"
        " GROUP BY entry_id HAVING COUNT(*) >= ?",
        (*keys, dedup.CONTAIN_MIN_SHARED),
    ).fetchall()
    found = sorted((-n, i) for i, n in shared)
    return [i for _, i in found[:CANDIDATE_LIMIT]]


LINKS_PER_ENTRY = 2
LINK_LIMIT = 50  # as stories._LINK_LIMIT


def build_links(path: Path, size: int, probes: int, seed: int = 0) -> None:
    """Add entry_links to the database ``build`` made: each entry names the same story's
    other language versions (the neighbouring ids' URLs); probe i's URL is named by one
    random stored entry."""
    prng = random.Random(seed + 1)
    db = sqlite3.connect(path)
    db.executescript(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;"
        "CREATE TABLE entry_links (entry_id INTEGER NOT NULL, source TEXT NOT NULL,"
        " url_norm TEXT NOT NULL, language TEXT, kind TEXT NOT NULL,"
        " PRIMARY KEY (entry_id, source, url_norm)) WITHOUT ROWID;"
    )
    urls = dict(db.execute("SELECT id, url_norm FROM entries"))
    for lo in range(1, size + 1, BATCH):
        rows = []
        for eid in range(lo, min(size + 1, lo + BATCH)):
            for k in range(1, LINKS_PER_ENTRY + 1):
                other = (eid + k - 1) % size + 1
                rows.append((eid, "page", dedup.normalize_url(urls[other]), "ru", "hreflang"))
        db.executemany("INSERT OR IGNORE INTO entry_links VALUES (?,?,?,?,?)", rows)
    for i in range(probes):
        db.execute("INSERT OR IGNORE INTO entry_links VALUES (?, 'page', ?, 'hy', 'hreflang')",
                   (prng.randint(1, size), f"https://new.example/translated/{i}"))
    db.execute("CREATE INDEX entry_links_url ON entry_links(url_norm)")
    db.commit()
    db.close()


def links_one(db: sqlite3.Connection, url_norm: str, links: list[str]) -> tuple[int, int]:
    """The store's two lookups for a new entry: its links' targets, and the links naming it.
    Returns (targets found, entries naming it)."""
    targets = 0
    for link in links:
        targets += len(db.execute(
            "SELECT e.id, e.story_id FROM entries e WHERE e.id IN (SELECT id FROM entries"
            " WHERE url_norm = ? LIMIT ?)", (link, LINK_LIMIT)).fetchall())
    naming = db.execute(
        "SELECT l.entry_id, e.story_id FROM (SELECT entry_id FROM entry_links"
        " WHERE url_norm = ? LIMIT ?) l JOIN entries e ON e.id = l.entry_id",
        (url_norm, LINK_LIMIT)).fetchall()
    return targets, len(naming)


def candidates(
    db: sqlite3.Connection,
    url_norm: str,
    text_hash: str | None,
    keys: list[int],
    contained: Sequence[int] = (),
) -> list[Candidate]:
    """The store's lookup: ids through the indexes, then the rows within the window (the
    containment candidates' with their text)."""
    ids: set[int] = {
        r[0]
        for r in db.execute(
            "SELECT id FROM entries WHERE url_norm = ? LIMIT ?", (url_norm, CANDIDATE_LIMIT)
        )
    }
    if text_hash:
        ids.update(
            r[0]
            for r in db.execute(
                "SELECT id FROM entries WHERE text_hash = ? LIMIT ?", (text_hash, CANDIDATE_LIMIT)
            )
        )
    if keys:
        marks = ",".join("?" * len(keys))
        ids.update(
            r[0]
            for r in db.execute(
                f"SELECT DISTINCT entry_id FROM entry_bands WHERE band_key IN ({marks}) LIMIT ?",
                (*keys, CANDIDATE_LIMIT),
            )
        )
    ids.update(contained)
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    rows = db.execute(
        "SELECT id, story_id, feed_id, url_norm, text_hash, signature, title, published,"
        " word_count, CASE WHEN id IN (SELECT value FROM json_each(?)) THEN text END"
        f" FROM entries WHERE id IN ({marks}) AND published >= ? ORDER BY published, id",
        (json.dumps(list(contained)), *ids, ts(NOW - WINDOW)),
    ).fetchall()
    return [
        Candidate(
            entry_id=r[0],
            story_id=r[1],
            feed_name=f"feed{r[2]}",
            url_norm=r[3],
            text_hash=r[4],
            signature=r[5],
            title=r[6],
            published=datetime.fromisoformat(r[7]),
            word_count=r[8],
            text=r[9],
        )
        for r in rows
    ]


def match_one(
    db: sqlite3.Connection, title: str, text: str, url: str
) -> tuple[object, float, float]:
    """One complete match; returns (StoryMatch or None, seconds spent in SQLite, of which
    seconds in the containment lookup)."""
    sig = dedup.signature(title, text)
    words = len(dedup.tokens(text))
    plan = dedup.lookup_keys(sig, words, THRESHOLD, True)
    keys = [*plan.near, *plan.probe_near]
    contain_keys = [*plan.contain, *plan.probe_contain]
    th = dedup.text_hash(title, text)
    url_norm = dedup.normalize_url(url)
    t = time.perf_counter()
    contained = containment_ids(db, contain_keys)
    contain = time.perf_counter() - t
    cands = candidates(db, url_norm, th, keys, contained)
    lookup = time.perf_counter() - t
    m = dedup.decide(
        url_norm=url_norm,
        canonical_norm=None,
        text_hash=th,
        signature=sig,
        title=title,
        word_count=words,
        candidates=cands,
        threshold=THRESHOLD,
        text=text,
    )
    return m, lookup, contain


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--probes", type=int, default=100, help="new entries matched per size")
    ap.add_argument("--keep", help="build the databases in this directory and keep them")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    texts = load_texts()
    probes = [texts[i % len(texts)] for i in range(args.probes)]

    # Signature cost for a typical 600-word article
    title, long_text = max(texts, key=lambda t: len(dedup.tokens(t[1])))
    words = re.findall(r"\S+", long_text)[:600]
    article = " ".join(words)
    n_tokens = len(dedup.tokens(article))
    times = []
    for _ in range(200):
        t = time.perf_counter()
        dedup.band_keys(dedup.signature(title, article) or b"")
        times.append(time.perf_counter() - t)
    sig_ms = statistics.median(times) * 1000
    print(
        f"signature + band keys of a 600-word article ({n_tokens} tokens): median {sig_ms:.2f} ms, p95 {pct(times, 0.95) * 1000:.2f} ms"
    )

    results = []
    link_results: list[tuple[int, float, float, int, int]] = []
    tmp = tempfile.TemporaryDirectory(prefix="bench-dedup-") if not args.keep else None
    where = Path(args.keep or (tmp.name if tmp else "."))
    where.mkdir(parents=True, exist_ok=True)
    try:
        for size in sizes:
            path = where / f"dedup-{size}.db"
            path.unlink(missing_ok=True)
            t = time.perf_counter()
            # Built in a child process so that this process's peak RSS is the matching's.
            with multiprocessing.get_context("fork").Pool(1) as pool:
                planted = pool.apply(build, (path, size, texts))
                pool.apply(build_links, (path, size, len(probes)))
            build_s = time.perf_counter() - t
            db = sqlite3.connect(path)
            link_times, linked = [], 0
            lrng = random.Random(size)
            for round_ in range(2):
                for i in range(len(probes)):
                    named = [f"https://site{e % 300}.example/news/{e}"
                             for e in (lrng.randint(1, size) for _ in range(LINKS_PER_ENTRY))]
                    t = time.perf_counter()
                    targets, naming = links_one(
                        db, f"https://new.example/translated/{i}",
                        [dedup.normalize_url(u) for u in named])
                    link_times.append(time.perf_counter() - t)
                    if round_ == 0:
                        linked += naming >= 1
            total, lookups, contains, found, wrong = [], [], [], 0, 0
            found_contained = 0
            for round_ in range(2):  # first round warms the page cache; both are counted
                for i, (title, text) in enumerate(probes):
                    t = time.perf_counter()
                    m, lookup, contain = match_one(
                        db, title, text, f"https://new.example/{round_}/{i}"
                    )
                    total.append(time.perf_counter() - t)
                    lookups.append(lookup)
                    contains.append(contain)
                    expected = planted.get(i % len(texts))
                    got = getattr(m, "entry_id", None)
                    if round_ == 0:
                        found += expected is not None and got == expected
                        wrong += got is not None and got != expected
                        found_contained += (
                            got == expected and getattr(m, "reason", None) == "containment"
                        )
            db.close()
            size_mb = path.stat().st_size / 2**20
            n_planted = sum(1 for i in range(len(probes)) if i % len(texts) in planted)
            results.append(
                (
                    size,
                    statistics.median(total),
                    pct(total, 0.95),
                    statistics.median(lookups),
                    pct(lookups, 0.95),
                    size_mb,
                    rss_mb(),
                    build_s,
                    found,
                    n_planted,
                    wrong,
                    statistics.median(contains),
                    pct(contains, 0.95),
                    found_contained,
                )
            )
            link_results.append((size, statistics.median(link_times), pct(link_times, 0.95),
                                 linked, len(probes)))
            print(f"  {size:>9,} entries built in {build_s:.1f} s", flush=True)
            path.unlink(missing_ok=True)
    finally:
        if tmp:
            tmp.cleanup()

    print()
    print(
        f"{'entries':>10} {'match p50':>10} {'match p95':>10} {'lookup p50':>11} {'lookup p95':>11} {'contain p50':>12} {'contain p95':>12} {'DB MB':>8} {'peak RSS MB':>12} {'planted found':>14} {'by contain':>11} {'wrong':>6}"
    )
    for size, m50, m95, l50, l95, mb, rss, _b, found, n_planted, wrong, c50, c95, fc in results:
        print(
            f"{size:>10,} {m50 * 1000:>8.2f}ms {m95 * 1000:>8.2f}ms {l50 * 1000:>9.3f}ms {l95 * 1000:>9.3f}ms {c50 * 1000:>10.3f}ms {c95 * 1000:>10.3f}ms {mb:>8.1f} {rss:>12.0f} {found:>9}/{n_planted:<4} {fc:>8}/{PLANTED:<2} {wrong:>6}"
        )
    if len(results) > 1:
        first, last = results[0], results[-1]
        print(
            f"ratio {last[0]:,}/{first[0]:,}: match p50 {last[1] / first[1]:.2f}x, lookup p50 {last[3] / first[3]:.2f}x,"
            f" containment lookup p50 {last[11] / first[11]:.2f}x (goal <= 2x)"
        )
    print()
    print(f"{'entries':>10} {'links p50':>10} {'links p95':>10} {'named found':>12}"
          "   (translation matching: link lookups per new entry)")
    for size, l50, l95, linked, n in link_results:
        print(f"{size:>10,} {l50 * 1000:>8.3f}ms {l95 * 1000:>8.3f}ms {linked:>7}/{n:<4}")
    if len(link_results) > 1:
        print(f"ratio {link_results[-1][0]:,}/{link_results[0][0]:,}: link lookups p50"
              f" {link_results[-1][1] / link_results[0][1]:.2f}x (goal <= 2x)")
    print(
        f"signature: {sig_ms:.2f} ms per 600-word article; peak RSS of the matching process {rss_mb():.0f} MB,"
        f" of the builder process {rss_mb(resource.RUSAGE_CHILDREN):.0f} MB"
    )


if __name__ == "__main__":
    main()
