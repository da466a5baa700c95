"""Retention: entry_retention (global and per feed) and max_entries, applied by `aggregator
prune` and the daemon's maintenance job. Pruning keeps the store consistent (search rows,
band rows, pages, stories), spares what the current documents show, does not let a feed bring
pruned entries back, and returns the freed space to the file system."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator import dedup
from aggregator.config import load_config
from aggregator.errors import ConfigError
from aggregator.models import FeedConfig
from aggregator.store import NewEntry, Store

from .backends import Backend
from .feedserver import BASE_TIME, FeedServer, article_words
from .test_band_index import matcher, variant
from .util import cli, env_for, write_feeds

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
DAY = 86400.0

# --------------------------------------------------------------------------- settings


def test_retention_settings_global_env_and_per_feed(tmp_path: Path) -> None:
    settings = tmp_path / "aggregator.yaml"
    settings.write_text("entry_retention: 90d\n")
    feeds = tmp_path / "feeds.yaml"
    feeds.write_text(
        "feeds:\n"
        "  - name: busy\n    url: https://busy.example/rss\n"
        "    entry_retention: 2w\n    max_entries: 500\n"
        "  - name: archive\n    url: https://archive.example/rss\n    entry_retention: 0\n"
        "  - name: plain\n    url: https://plain.example/rss\n"
    )
    config = load_config(str(settings), str(feeds), env={})
    assert config.settings.entry_retention == 90 * DAY
    by_name = {f.name: f for f in config.feeds}
    assert (by_name["busy"].entry_retention, by_name["busy"].max_entries) == (14 * DAY, 500)
    assert by_name["archive"].entry_retention == 0.0  # kept forever, whatever the setting
    assert (by_name["plain"].entry_retention, by_name["plain"].max_entries) == (None, None)
    env = {"AGGREGATOR_ENTRY_RETENTION": "12h"}
    assert load_config(str(settings), str(feeds), env=env).settings.entry_retention == 43200.0
    # Off by default.
    assert load_config(None, str(feeds), env={}).settings.entry_retention == 0.0


def test_retention_setting_problems_have_positions(tmp_path: Path) -> None:
    settings = tmp_path / "aggregator.yaml"
    settings.write_text("entry_retention: soon\n")
    feeds = tmp_path / "feeds.yaml"
    feeds.write_text(
        "feeds:\n"
        "  - name: a\n    url: https://a.example/rss\n    max_entries: 0\n"
        "  - name: b\n    url: https://b.example/rss\n    entry_retention: -3d\n"
        "  - name: c\n    url: https://c.example/rss\n    max_entries: many\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(str(settings), str(feeds), env={"AGGREGATOR_ENTRY_RETENTION": "1 year"})
    problems = [str(p) for p in err.value.problems]
    assert problems == [
        f"{settings}:1:18: entry_retention: invalid duration 'soon': use seconds (900) or a"
        " number with a unit s, m, h, d or w (30s, 15m, 1h, 7d, 1h30m)",
        "$AGGREGATOR_ENTRY_RETENTION:1:1: AGGREGATOR_ENTRY_RETENTION: invalid duration"
        " '1 year': use seconds (900) or a number with a unit s, m, h, d or w"
        " (30s, 15m, 1h, 7d, 1h30m)",
        f"{feeds}:4:18: max_entries: must be 1 or more, got 0",
        f"{feeds}:7:22: entry_retention: invalid duration '-3d': use seconds (900) or a"
        " number with a unit s, m, h, d or w (30s, 15m, 1h, 7d, 1h30m)",
        f"{feeds}:10:18: max_entries: expected an integer, got a string ('many')",
    ]


# --------------------------------------------------------------------------- the store
# SQLite only: these check SQLite's own structures (Store.conn, the FTS index, the file's
# vacuum); the protocol's prune on both backends is in test_storage.py.


def entry(key: str, text: str, published: datetime, title: str = "Border talks resume"
          ) -> NewEntry:
    text_hash, sig, bands = dedup.features(title, text)
    url = f"https://{key}.example/story"
    return NewEntry(
        key=key, guid=key, url=url, url_norm=dedup.normalize_url(url), title=title,
        author=None, feed_html=f"<p>{text}</p>", content_html=f"<p>{text}</p>", text=text,
        summary=text[:100], word_count=len(text.split()), language="en", categories=(),
        enclosures=(), image=None, published=published, published_raw=None, date_note=None,
        content_hash=key + text[-20:], extract_status="skipped", text_hash=text_hash,
        signature=sig, band_keys=tuple(bands),
    )


def open_store(path: Path) -> tuple[Store, dict[str, int]]:
    st = Store(path)
    st.migrate()
    st.sync_feeds([FeedConfig(name=f"f{n}", url=f"https://f{n}.example/rss")
                   for n in range(4)], NOW)
    return st, {r["name"]: r["id"] for r in st.conn.execute("SELECT id, name FROM feeds")}


def record(st: Store, feed_id: int, *entries: NewEntry) -> None:
    st.record_success(
        feed_id, now=NOW, status=200, next_poll=NOW, interval=900.0, etag=None,
        last_modified=None, body_hash=None, permanent_url=None, entries=entries,
        matcher=matcher, window_days=30,
    )


def ids(st: Store) -> dict[str, int]:
    return {k: i for k, i in st.conn.execute("SELECT key, id FROM entries")}


def dump(path: Path) -> list[str]:
    with sqlite3.connect(path) as c:
        return list(c.iterdump())


def fts_ids(conn: sqlite3.Connection, word: str) -> list[int]:
    return [r[0] for r in conn.execute(
        "SELECT rowid FROM entries_fts WHERE entries_fts MATCH ?", (f'"{word}"',))]


ORPHANS = {  # rows that hang off an entry without it; stories not whole
    "pages": "SELECT COUNT(*) FROM pages WHERE entry_id NOT IN (SELECT id FROM entries)",
    "bands": "SELECT COUNT(*) FROM entry_bands WHERE entry_id NOT IN"
             " (SELECT id FROM entries)",
    "empty stories": "SELECT COUNT(*) FROM stories s WHERE NOT EXISTS"
                     " (SELECT 1 FROM entries e WHERE e.story_id = s.id)",
    "representatives": "SELECT COUNT(*) FROM stories s WHERE representative_id IS NULL"
                       " OR representative_id NOT IN (SELECT id FROM entries e"
                       " WHERE e.story_id = s.id)",
    "counts": "SELECT COUNT(*) FROM stories s WHERE entry_count !="
              " (SELECT COUNT(*) FROM entries e WHERE e.story_id = s.id) OR outlet_count"
              " != (SELECT COUNT(DISTINCT feed_id) FROM entries e WHERE e.story_id = s.id)",
}


def consistent(conn: sqlite3.Connection) -> None:
    """Every row that hangs off an entry has its entry; every story is whole."""
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.execute("INSERT INTO entries_fts(entries_fts) VALUES ('integrity-check')")
    if conn.in_transaction:  # the check is an INSERT: Python's sqlite3 opened a transaction
        conn.commit()
    found = {name: conn.execute(sql).fetchone()[0] for name, sql in ORPHANS.items()}
    assert found == dict.fromkeys(ORPHANS, 0)
    assert conn.execute("SELECT COUNT(*) FROM entries_fts_docsize WHERE id NOT IN"
                        " (SELECT id FROM entries)").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM entries_fts_docsize").fetchone()[0] == \
        conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]


def test_prune_by_age_keeps_a_story_with_its_remaining_members(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    st, feed = open_store(db)
    # One story from three outlets: the oldest report is the fullest (its representative).
    record(st, feed["f0"], entry("a", variant(0) + " Zanzibarquux said the old report.",
                                 NOW - timedelta(days=10)))
    record(st, feed["f1"], entry("b", variant(1), NOW - timedelta(days=1)))
    record(st, feed["f2"], entry("c", variant(2), NOW - timedelta(hours=1)))
    # An unrelated old report, alone in its story.
    record(st, feed["f3"], entry("d", article_words(1, 1, 120),
                                 NOW - timedelta(days=9), title="Electoral code"))
    st.flush_bands()
    # A late one whose band keys still wait in memory.
    record(st, feed["f3"], entry("e", article_words(2, 2, 120),
                                 NOW - timedelta(days=8), title="Harvest"))
    assert st.pending_bands == 1
    st.record_article(ids(st)["a"], now=NOW, status="feed", method=None, error=None,
                      page=("https://a.example/story", None, "utf-8", b"<html>a</html>"))
    key = ids(st)
    story = st.conn.execute("SELECT * FROM stories WHERE id = (SELECT story_id FROM entries"
                            " WHERE key = 'a')").fetchone()
    assert (story["representative_id"], story["entry_count"]) == (key["a"], 3)
    assert fts_ids(st.conn, "Zanzibarquux") == [key["a"]]
    before = dump(db)

    dry = st.prune(now=NOW, entry_retention=5 * DAY, dry_run=True)
    assert dump(db) == before  # a dry run changes nothing
    report = st.prune(now=NOW, entry_retention=5 * DAY)
    assert replace(dry, dry_run=False) == report
    assert (report.entries, report.pages, report.stories_touched, report.stories_deleted) == \
        (3, 1, 1, 2)
    assert report.band_rows == 3 * dedup.BANDS
    assert dict(report.by_feed) == {"f0": 1, "f3": 2}
    assert set(ids(st)) == {"b", "c"}
    assert st.pending_bands == 0
    after = st.conn.execute("SELECT * FROM stories WHERE id = ?", (story["id"],)).fetchone()
    # The earliest remaining report represents the story now; removing members is no news.
    assert (after["representative_id"], after["entry_count"], after["outlet_count"]) == \
        (key["b"], 2, 2)
    assert after["updated"] == story["updated"]
    assert fts_ids(st.conn, "Zanzibarquux") == []
    assert st.search("Zanzibarquux") == []
    consistent(st.conn)
    st.flush_bands()
    consistent(st.conn)
    st.close()


def test_max_entries_per_feed_and_protected_entries(tmp_path: Path) -> None:
    st, feed = open_store(tmp_path / "a.db")
    for i in range(6):
        record(st, feed["f0"], entry(f"k{i}", f"Report number {i} about the river {i * 7}.",
                                     NOW - timedelta(hours=6 - i), title=f"Report {i}"))
    record(st, feed["f1"], entry("other", "A report from another outlet about the mountain.",
                                 NOW - timedelta(days=3), title="Other"))
    key = ids(st)
    feeds = [FeedConfig(name="f0", url="https://f0.example/rss", max_entries=2),
             FeedConfig(name="f1", url="https://f1.example/rss", entry_retention=0.0)]
    # k1 is shown by a current document: it stays although it is beyond the newest 2.
    report = st.prune(now=NOW, entry_retention=DAY, feeds=feeds, protect={key["k1"]})
    assert (report.entries, report.protected) == (3, 1)
    # f1's own entry_retention (0: forever) wins over the global day.
    assert set(ids(st)) == {"k1", "k4", "k5", "other"}
    consistent(st.conn)
    st.close()


def test_a_feed_still_listing_pruned_entries_does_not_bring_them_back(tmp_path: Path) -> None:
    st, feed = open_store(tmp_path / "a.db")
    old = entry("old", "An old report about the railway and the border crossing.",
                NOW - timedelta(days=40), title="Old")
    new = entry("new", "A new report about the budget and the investment plans.",
                NOW - timedelta(hours=2), title="New")
    record(st, feed["f0"], old, new)
    assert st.prune(now=NOW, entry_retention=30 * DAY).entries == 1
    record(st, feed["f0"], old, new)  # the feed still lists it: it stays pruned
    assert set(ids(st)) == {"new"}
    record(st, feed["f0"], new)  # the feed dropped it: forgotten ...
    assert st.conn.execute("SELECT COUNT(*) FROM pruned_keys").fetchone()[0] == 0
    record(st, feed["f0"], old, new)  # ... so coming back, it is a new entry again
    assert set(ids(st)) == {"new", "old"}
    st.close()


def test_search_index_is_merged_in_steps_once_pruned_rows_are_a_tenth(tmp_path: Path) -> None:
    st, feed = open_store(tmp_path / "a.db")
    for i in range(40):  # one transaction each: many small index segments
        record(st, feed["f0"], entry(f"k{i}", article_words(0, i, 150),
                                     NOW - timedelta(days=40 - i), title=f"Report {i}"))

    def state() -> dict[str, int]:
        return {"search_pruned": 0, "search_merge_left": 0} | dict(st.conn.execute(
            "SELECT name, value FROM store_state WHERE name LIKE 'search_%'"))

    def index_rows() -> int:
        return int(st.conn.execute("SELECT COUNT(*) FROM entries_fts_data").fetchone()[0])

    assert st.prune(now=NOW, entry_retention=39.5 * DAY).entries == 1
    assert st.optimize_search(max_pages=20) == 0  # 1 of 40: not worth a rewrite yet
    assert state() == {"search_pruned": 1, "search_merge_left": 0}
    assert st.prune(now=NOW, entry_retention=20.5 * DAY).entries == 19
    rows = index_rows()
    st.optimize_search(max_pages=20)
    assert state()["search_pruned"] == 0 and 0 < state()["search_merge_left"] < rows
    steps = 1
    while state()["search_merge_left"] and steps < 1000:
        st.optimize_search(max_pages=20)
        steps += 1
    assert 1 < steps < 1000
    assert index_rows() < rows * 0.7
    assert st.optimize_search(max_pages=20) == 0
    assert state() == {"search_pruned": 0, "search_merge_left": 0}
    consistent(st.conn)
    # The command merges it all at once, whatever the share.
    assert st.prune(now=NOW, entry_retention=19.5 * DAY).entries == 1
    st.optimize_search()
    assert state() == {"search_pruned": 0, "search_merge_left": 0}
    consistent(st.conn)
    st.close()


def test_new_store_vacuums_incrementally_and_an_old_one_is_switched(tmp_path: Path) -> None:
    st = Store(tmp_path / "new.db")
    st.migrate()
    assert st.auto_vacuum() == "incremental"
    st.close()
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as c:  # a store created before this release
        c.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
                  " name TEXT NOT NULL, applied TEXT NOT NULL)")
    st = Store(old)
    st.migrate()
    assert st.auto_vacuum() == "none"
    st.vacuum()
    assert st.auto_vacuum() == "incremental"
    st.close()


# --------------------------------------------------------------------------- end to end

OUTPUTS = """outputs:
  - name: all
    title: All feeds
    limit: 10
    archive_pages: 1
  - name: f23
    title: Feeds 2 and 3
    limit: 5
    archive_pages: 1
    filter:
      sources: [feed-2, feed-3]
"""


def search_ids(backend: Backend, word: str) -> list[int]:
    """The entries `search` finds (SQLite's FTS index, PostgreSQL's trigram indexes)."""
    st = backend.storage(readonly=True)
    try:
        return [r["id"] for r in st.search(word)]
    finally:
        st.close()


def consistent_store(backend: Backend) -> None:
    """consistent() on either backend: SQLite's own checks (file, FTS index) there, the
    orphan checks on both."""
    if not backend.postgres:  # SQLite's file and FTS index (PostgreSQL has neither)
        conn = sqlite3.connect(backend.database)
        try:
            consistent(conn)
        finally:
            conn.close()
        return
    for name, sql in ORPHANS.items():
        assert backend.value(sql) == 0, name


def test_prune_farm_store_keeps_it_consistent_and_current_documents_unchanged(
        tmp_path: Path, backend: Backend) -> None:
    with FeedServer(feeds=4, entries=16) as s:
        feeds = write_feeds(
            tmp_path / "feeds.yaml",
            [{"name": f"feed-{n}", "url": s.url(f"/feed/{n}.xml")} for n in range(4)],
            OUTPUTS)
        text = feeds.read_text()
        # feed-2 keeps its newest entry, but the published documents (each output's current
        # document and its one archive page) show its newest 5.
        feeds.write_text(text.replace(f"url: {s.url('/feed/2.xml')}\n",
                                      f"url: {s.url('/feed/2.xml')}\n    max_entries: 1\n"))
        env = env_for(tmp_path, **backend.env())
        r = cli(["update", "--all"], env, feeds=feeds)
        assert r.returncode == 0, r.stderr
        assert backend.query("SELECT COUNT(*), COUNT(DISTINCT story_id) FROM entries"
                             " WHERE extract_status = 'done'")[0] == (64, 64)
        assert backend.value("SELECT COUNT(*) FROM pages") == 64
        # Items are published every 10 minutes from BASE_TIME on: keep those from +75 min,
        # the newer half.
        age = datetime.now(UTC) - (BASE_TIME + timedelta(minutes=75))
        env["AGGREGATOR_ENTRY_RETENTION"] = f"{int(age.total_seconds())}s"
        # A word only the oldest entry of feed 0 has.
        doomed = backend.query("SELECT id, text FROM entries WHERE guid = 'feed0-item0'")[0]
        word = next(w for w in doomed[1].split() if len(w) >= 3 and backend.value(
            "SELECT COUNT(*) FROM entries WHERE text LIKE ?", (f"%{w}%",)) == 1)
        assert search_ids(backend, word) == [doomed[0]]
        current = backend.documents()
        assert len(current) == 2 * 2 * 3  # two outputs, each a current and an archive page
        before = backend.dump()

        r = cli(["prune", "--dry-run"], env, feeds=feeds)
        assert r.returncode == 0, r.stderr
        assert "would delete 35 entries (feed-2 11, feed-0 8, feed-1 8, feed-3 8)," \
            " 35 article pages" in r.stdout
        assert "4 due entries kept: a published document shows them" in r.stdout
        assert backend.dump() == before

        size = 0 if backend.postgres else Path(backend.database).stat().st_size
        r = cli(["prune"], env, feeds=feeds)
        assert r.returncode == 0, r.stderr
        assert "deleted 35 entries (feed-2 11, feed-0 8, feed-1 8, feed-3 8)" in r.stdout
        if not backend.postgres:  # the file's space: SQLite's upkeep (docs/schema.md)
            assert "(incremental vacuum)" in r.stdout
            assert Path(backend.database).stat().st_size < size * 0.8
            with sqlite3.connect(backend.database) as c:
                assert c.execute("PRAGMA freelist_count").fetchone()[0] == 0
        counts = dict(backend.query("SELECT f.name, COUNT(*) FROM entries e JOIN feeds f"
                                    " ON f.id = e.feed_id GROUP BY f.name"))
        assert counts == {"feed-0": 8, "feed-1": 8, "feed-2": 5, "feed-3": 8}
        assert search_ids(backend, word) == []
        consistent_store(backend)

        # Published documents are not touched, and publishing again gives the same bytes.
        assert backend.documents() == current
        r = cli(["publish"], env, feeds=feeds)
        assert r.returncode == 0, r.stderr
        assert backend.documents() == current

        # A new item: the pruned entries the feeds still list stay away.
        s.round = 1
        r = cli(["update", "--all"], env, feeds=feeds)
        assert r.returncode == 0, r.stderr
        assert "0 failed, 4 new entries" in r.stdout
        assert backend.value("SELECT COUNT(*) FROM entries") == 29 + 4
        consistent_store(backend)


# SQLite only: a WAL file created before auto_vacuum, and SQLite's VACUUM.
def test_prune_without_retention_and_vacuum_of_an_old_store(tmp_path: Path) -> None:
    with FeedServer(feeds=2, entries=5) as s:
        feeds = write_feeds(tmp_path / "feeds.yaml", [
            {"name": f"feed-{n}", "url": s.url(f"/feed/{n}.xml")} for n in range(2)])
        db = tmp_path / "agg.db"
        with sqlite3.connect(db) as c:  # created before auto_vacuum was set
            c.execute("PRAGMA journal_mode = WAL")
        env = env_for(tmp_path, AGGREGATOR_FULL_TEXT="false")
        r = cli(["update", "--all"], env, feeds=feeds)
        assert r.returncode == 0, r.stderr
    r = cli(["prune"], env, feeds=feeds)
    assert r.returncode == 0, r.stderr
    assert "no retention configured" in r.stdout and "deleted 0 entries" in r.stdout
    assert "`aggregator prune --vacuum` returns the free space" in r.stdout
    r = cli(["prune", "--vacuum"], env, feeds=feeds)
    assert r.returncode == 0, r.stderr
    assert "(full vacuum)" in r.stdout
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
        assert c.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 10


def test_daemon_maintenance_prunes(tmp_path: Path, backend: Backend) -> None:
    from aggregator.daemon import Daemon

    with FeedServer(feeds=1, entries=6) as s:
        feeds = write_feeds(tmp_path / "feeds.yaml", [
            {"name": "one", "url": s.url("/feed/0.xml"), "max_entries": 2}],
            "outputs:\n  - name: latest\n    title: Latest\n    limit: 1\n"
            "    archive_pages: 0\n")
        env = env_for(tmp_path, **backend.env(), AGGREGATOR_FULL_TEXT="false")
        r = cli(["update", "--all"], env, feeds=feeds)
        assert r.returncode == 0, r.stderr
    config = load_config(None, str(feeds), env=env)
    daemon = Daemon(config, config_path=None, feeds_path=str(feeds), env=env)
    try:
        daemon._prune()
    finally:
        daemon.pipeline.close()
    assert [g for (g,) in backend.query("SELECT guid FROM entries ORDER BY guid")] == \
        ["feed0-item4", "feed0-item5"]
