"""The PostgreSQL store's foundation: its migrations (same names and the same tables, views
and columns as SQLite's, natural types, trigram search in every script), `aggregator
migrate` and `check` on a postgresql:// database, and the refusals (unreachable server,
missing database, C locale, a newer schema, another project's tables), never showing a
password. Each test gets a database of its own (conftest.postgres_url)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from aggregator.errors import StoreError
from aggregator.store import MIGRATIONS, SQLiteStorage, Storage, open_storage
from aggregator.store.pg_schema import PG_MIGRATIONS
from aggregator.store.postgres import PostgresBase, create_database, drop_database

from .util import cli, env_for, free_port, write_feeds

TIMESTAMPTZ = "timestamp with time zone"


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(
        netloc=f"{parts.username or 'postgres'}:{password}@{parts.hostname}:{parts.port or 5432}"))


def with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def run_cli(tmp_path: Path, database: str, *args: str) -> subprocess.CompletedProcess[str]:
    feeds = write_feeds(tmp_path / "feeds.yaml", [])
    return cli(list(args), env_for(tmp_path, AGGREGATOR_DATABASE=database,
                                   AGGREGATOR_BASE_URL="https://news.example/"), feeds=feeds)


def test_postgres_migrations_are_the_sqlite_ones_by_name() -> None:
    # A SQLite migration appended without its PostgreSQL twin fails here.
    assert [n for n, _ in PG_MIGRATIONS] == [n for n, _ in MIGRATIONS]


def test_migrate_creates_the_same_tables_views_and_columns(postgres_url: str,
                                                           tmp_path: Path) -> None:
    db = PostgresBase(postgres_url)
    try:
        assert db.schema_version() == 0
        assert db.migrate() == [n for n, _ in MIGRATIONS]
        assert db.migrate() == []
        assert db.schema_version() == len(MIGRATIONS)
        pg = db.describe()
        sqlite = SQLiteStorage(tmp_path / "s.db")
        sqlite.migrate()
        lite = sqlite.describe()
        sqlite.close()
        # FTS5's table is SQLite's search index; PostgreSQL's is the trigram indexes.
        lite = {k: v for k, v in lite.items() if k != "entries_fts"}
        assert pg.keys() == lite.keys()
        for name, columns in lite.items():
            assert pg[name] == columns, name
        assert db.integrity_check() == "ok"
        assert db.column_types("items")["published"] == TIMESTAMPTZ
        assert db.column_types("feed_health")["next_poll"] == TIMESTAMPTZ
        assert db.column_types("story_outlets")["first_seen"] == TIMESTAMPTZ
        assert db.column_types("story_members")["published"] == TIMESTAMPTZ
        assert db.column_types("feeds")["active"] == "boolean"
        assert db.column_types("entries")["signature"] == "bytea"
        assert db.size() > 0 and db.disk_usage()[1] == 0
    finally:
        db.close()


def test_trigram_indexes_find_substrings_in_every_script(postgres_url: str) -> None:
    db = PostgresBase(postgres_url)
    db.migrate()
    texts = ["Գյումրիում բացվեց նոր դպրոց", "ქუთაისში ახალი ხიდი გაიხსნა",
             "В Гродно открыли новый мост", "Border talks resume"]
    with db.pool.connection() as conn:
        conn.execute("INSERT INTO feeds(name, url, created) VALUES ('f', 'u', now())")
        for n, text in enumerate(texts):
            conn.execute(
                "INSERT INTO entries(feed_id, key, title, content_html, text, updated, "
                "first_seen, last_seen, content_hash, extract_status) SELECT id, %s, %s, '', "
                "%s, now(), now(), now(), %s, 'done' FROM feeds", (str(n), text, text, str(n)))
    with db.pool.connection() as conn:
        conn.execute("SET enable_seqscan = off")
        for needle, want in (("ումրի", 0), ("ხიდ", 1), ("РОДН", 2), ("lks re", 3)):
            rows = conn.execute("SELECT key FROM entries WHERE text ILIKE %s",
                                (f"%{needle}%",)).fetchall()
            assert [r[0] for r in rows] == [str(want)], needle
            plan = "\n".join(r[0] for r in conn.execute(
                "EXPLAIN SELECT key FROM entries WHERE text ILIKE %s", (f"%{needle}%",)))
            assert "entries_text_trgm" in plan, plan
    db.close()


def test_cli_migrate_from_several_processes_at_once(postgres_url: str, tmp_path: Path) -> None:
    feeds = write_feeds(tmp_path / "feeds.yaml", [])
    env = env_for(tmp_path, AGGREGATOR_DATABASE=postgres_url)
    procs = [subprocess.Popen([sys.executable, "-m", "aggregator.cli", "--feeds", str(feeds),
                               "migrate"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    applied = sorted(out.count("applied: ") for out, _ in outs)
    # One process applied everything, procrastinate's schema (the workers' queue) included.
    assert applied == [0, 0, len(MIGRATIONS) + 1], outs
    assert sum("applied: procrastinate schema" in out for out, _ in outs) == 1
    db = PostgresBase(postgres_url)
    assert db.schema_version() == len(MIGRATIONS)
    db.close()
    done = run_cli(tmp_path, postgres_url, "check")
    assert done.returncode == 0, done.stderr
    assert f"schema version {len(MIGRATIONS)} of {len(MIGRATIONS)}" in done.stdout


def test_a_c_locale_database_is_refused_with_how_to_create_one(postgres_server: str,
                                                                tmp_path: Path) -> None:
    url = create_database(postgres_server, "aggtest_c_locale_h17", locale="C")
    try:
        for command in ("migrate", "check"):
            done = run_cli(tmp_path, url, command)
            assert done.returncode == 1, (command, done.stdout, done.stderr)
            said = done.stdout + done.stderr
            assert "LC_CTYPE C" in said and "createdb -T template0 -E UTF8" in said, said
            assert "Traceback" not in said
        db = PostgresBase(url)
        assert db.describe() == {}  # nothing created
        db.close()
    finally:
        drop_database(postgres_server, "aggtest_c_locale_h17")


def test_unreachable_server_and_missing_database_are_named_without_password(
        postgres_server: str, tmp_path: Path) -> None:
    port = free_port()
    refused = f"postgresql://postgres:hunter2secret@127.0.0.1:{port}/news"
    done = run_cli(tmp_path, refused, "migrate")
    said = done.stdout + done.stderr
    assert done.returncode == 1
    assert f"127.0.0.1:{port}/news" in said and "connection refused" in said, said
    assert "hunter2secret" not in said and "Traceback" not in said
    done = run_cli(tmp_path, refused, "check")
    assert done.returncode == 1 and "connection refused" in done.stdout + done.stderr
    missing = with_db(with_password(postgres_server, "hunter2secret"), "aggtest_no_such_db")
    done = run_cli(tmp_path, missing, "migrate")
    said = done.stdout + done.stderr
    assert done.returncode == 1
    assert "/aggtest_no_such_db" in said and "database missing" in said, said
    assert "createdb -T template0" in said
    assert "hunter2secret" not in said and "Traceback" not in said
    parts = urlsplit(postgres_server)
    stranger = urlunsplit(parts._replace(
        netloc=f"nosuchrole_h17:pw@{parts.hostname}:{parts.port or 5432}"))
    with pytest.raises(StoreError, match="authentication failed") as err:
        PostgresBase(stranger)
    assert "pw@" not in str(err.value)


def test_a_newer_schema_is_refused_with_the_versions_named(postgres_url: str) -> None:
    db = PostgresBase(postgres_url)
    db.migrate()
    newer = len(MIGRATIONS) + 1
    with db.pool.connection() as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (%s, 'from the future', now())",
                     (newer,))
    with pytest.raises(StoreError, match=f"schema version {newer}, newer than this code's "
                                         f"{len(MIGRATIONS)}"):
        db.migrate()
    with pytest.raises(StoreError, match="newer"):
        db.schema_version()
    db.close()


def test_another_projects_tables_are_refused_and_left_alone(postgres_url: str,
                                                            tmp_path: Path) -> None:
    db = PostgresBase(postgres_url)
    with db.pool.connection() as conn:
        conn.execute("CREATE TABLE invoices (id int)")
    with pytest.raises(StoreError, match="another project"):
        db.migrate()
    assert set(db.describe()) == {"invoices"}
    with db.pool.connection() as conn:
        conn.execute("CREATE TABLE schema_migrations (version int, name text, applied text)")
        conn.execute("INSERT INTO schema_migrations VALUES (1, 'create invoices', 'x')")
    with pytest.raises(StoreError, match="another project"):
        db.migrate()
    db.close()
    done = run_cli(tmp_path, postgres_url, "check")
    assert done.returncode == 1 and "another project" in done.stdout, done.stdout


def test_open_storage_picks_postgres_from_the_url_and_hides_its_password(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    url = with_password(postgres_url, "hunter2secret")
    st = open_storage(url)
    try:
        assert type(st).__name__ == "PostgresStorage"
        with caplog.at_level("INFO"):
            assert st.migrate()
        assert st.schema_version() == len(MIGRATIONS)
        said = st.path + caplog.text + (st.write_problem() or "")
        assert "hunter2secret" not in said and urlsplit(postgres_url).path in said
    finally:
        st.close()
    reader = open_storage(url, readonly=True)
    assert "read-only" in (reader.write_problem() or "")
    reader.close()


def test_a_growing_store_analyzes_the_tables_polls_grow(postgres_url: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """pg_storage.keep_statistics, with autovacuum off for those tables: the store's own
    writers ANALYZE them once the entries reach ANALYZE_FROM, then each time they double;
    a writer starting on a store whose statistics are older than half its size analyzes
    at its first poll. (Plans made on a near-empty table were kept for the whole round:
    a sequential scan of stories per entry stored.)"""
    from aggregator.models import FeedConfig
    from aggregator.store import pg_storage

    from .test_storage import NOW, entry, poll

    monkeypatch.setattr(pg_storage, "ANALYZE_FROM", 10)
    tables = [t.strip() for t in pg_storage.GROWING_TABLES.split(",")]
    st = open_storage(postgres_url)
    st.migrate()
    st.sync_feeds([FeedConfig(name="f0", url="https://f0.example/rss")], NOW)

    probe = PostgresBase(postgres_url)

    def reltuples() -> dict[str, float]:
        with probe.pool.connection() as conn:
            return {r[0]: r[1] for r in conn.execute(
                "SELECT relname, reltuples FROM pg_class WHERE relname = ANY(%s)", (tables,))}

    with probe.pool.connection() as conn:
        for table in tables:
            conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")

    def store(st: Storage, first: int, count: int) -> None:
        poll(st, "f0", *(entry(f"k{n}", f"Story number {n} with words of its own {n}.",
                               title=f"Title {n}") for n in range(first, first + count)))

    store(st, 0, 5)
    assert all(v < 0 for v in reltuples().values())  # never analyzed: below ANALYZE_FROM
    store(st, 5, 10)
    assert reltuples()["entries"] == 15 and reltuples()["stories"] == 15
    store(st, 15, 5)  # 20 entries: not yet twice 15
    assert reltuples()["entries"] == 15
    st.close()
    again = open_storage(postgres_url)  # a new writer, statistics from 15 entries
    store(again, 20, 15)  # 35 entries, more than twice 15
    assert reltuples()["entries"] == 35
    again.close()
    probe.close()


def test_a_table_locked_elsewhere_delays_the_statistics_never_the_poll(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """ANALYZE waits behind a VACUUM of the same table (here: a SHARE UPDATE EXCLUSIVE lock
    held by another session): the poll is stored and returned all the same, after at most
    the lock timeout, and the statistics are taken a little later."""
    import time

    from aggregator.models import FeedConfig
    from aggregator.store import pg_storage

    from .test_storage import NOW, entry, poll

    monkeypatch.setattr(pg_storage, "ANALYZE_FROM", 10)
    st = open_storage(postgres_url)
    st.migrate()
    st.sync_feeds([FeedConfig(name="f0", url="https://f0.example/rss")], NOW)
    probe = PostgresBase(postgres_url)

    def store(first: int, count: int) -> list[object]:
        return list(poll(st, "f0", *(entry(f"k{n}", f"Story {n} with words of its own {n}.",
                                           title=f"Title {n}")
                                     for n in range(first, first + count))))

    def reltuples() -> float:
        with probe.pool.connection() as conn:
            return float(conn.execute("SELECT reltuples FROM pg_class"
                                      " WHERE relname = 'stories'").fetchone()[0])

    with probe.pool.connection() as holder:
        holder.execute("LOCK TABLE stories IN SHARE UPDATE EXCLUSIVE MODE")
        started = time.monotonic()
        assert len(store(0, 12)) == 12
        assert time.monotonic() - started < 10
        assert reltuples() < 0  # not analyzed: the table was locked
        holder.rollback()
    assert len(store(12, 5)) == 5  # 17 entries: not yet 12 + ANALYZE_FROM
    assert reltuples() < 0
    assert len(store(17, 6)) == 6  # 23: tried again, analyzed
    assert reltuples() == 23
    st.close()
    probe.close()
