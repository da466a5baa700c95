"""`aggregator copy-store TARGET`: a store built by the real pipeline (several feeds, stories
of several members, an article page, a translation link, an undated entry, a pruned key)
copied SQLite -> PostgreSQL -> a new SQLite file reads the same through the protocol and
holds the same rows; a non-empty target is refused; a password in the URL is never shown.
PostgreSQL tests get a database of their own (conftest.postgres_url)."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aggregator.store import SQLiteStorage, Storage, migrate_database, open_storage
from aggregator.store.copy import TABLES, SQLiteCopySide, copy_store, copy_tables

from .feedserver import FeedServer
from .test_translations import HTML, RSS, hreflang, page, rss
from .util import cli, env_for, write_feeds

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SECRET = "Sw0rdf1sh-zz"


def with_password(url: str, password: str = SECRET) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(
        netloc=f"{parts.username or 'postgres'}:{password}@{parts.hostname}:{parts.port or 5432}"))


UNDATED = ("<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>U</title>"
           "<link>http://example.org/</link><item><guid isPermaLink='false'>u1</guid>"
           "<title>Без даты</title><description>Заметка без даты публикации, только текст."
           "</description></item></channel></rss>".encode())


def build_store(tmp_path: Path) -> tuple[Path, Path]:
    """A SQLite store written by `aggregator update`, plus one pruned entry; returns the
    database and feeds.yaml."""
    db = tmp_path / "agg.db"
    with FeedServer(feeds=0) as s:
        s.route("/hy/news/1", headers=HTML, body=page("hy-AM", 1, hreflang(
            ("ru", "/ru/news/1"))))
        s.route("/ru/news/1", headers=HTML, body=page("ru", 1))
        for outlet in ("a", "b", "c"):  # one story in three outlets
            s.route(f"/{outlet}/news/7", headers=HTML, body=page("en", 7))
            s.route(f"/{outlet}/news/8", headers=HTML, body=page("en", 8 + ord(outlet)))
            s.route(f"/{outlet}.xml", headers=RSS, body=rss([
                (f"{outlet}7", "Talks resume", s.url(f"/{outlet}/news/7")),
                (f"{outlet}8", f"Other {outlet}", s.url(f"/{outlet}/news/8"))]))
        s.route("/hy.xml", headers=RSS, body=rss([("hy1", "Պատմություն 1", s.url("/hy/news/1"))]))
        s.route("/ru.xml", headers=RSS, body=rss([("ru1", "История 1", s.url("/ru/news/1"))],
                                                 language="ru-RU"))
        s.route("/u.xml", headers=RSS, body=UNDATED)
        feeds = write_feeds(tmp_path / "feeds.yaml", [
            {"name": n, "url": s.url(f"/{n}.xml")} for n in ("hy", "ru", "a", "b", "c", "u")])
        r = cli(["update", "--all"], env_for(tmp_path, AGGREGATOR_DATABASE=str(db)),
                feeds=feeds)
        assert r.returncode == 0, r.stderr
    st = SQLiteStorage(db)
    try:
        ids = [r[0] for r in st.conn.execute("SELECT id FROM entries ORDER BY id")]
        gone = st.conn.execute("SELECT id FROM entries WHERE guid = 'c8'").fetchone()[0]
        report = st.prune(now=NOW + timedelta(days=3650), entry_retention=86400,
                          protect=[i for i in ids if i != gone])
        assert report.entries == 1
    finally:
        st.close()
    return db, feeds


def copy(tmp_path: Path, feeds: Path, source: str, target: str
         ) -> Any:
    return cli(["copy-store", target], env_for(tmp_path, AGGREGATOR_DATABASE=source),
               feeds=feeds)


def snapshot(st: Storage) -> dict[str, Any]:
    """What the protocol reads from a store (times and values as the protocol gives them)."""
    items = sorted(st.items(one_per_story=False), key=lambda i: i.url or "")
    stories = sorted({i.story_id for i in items if i.story_id is not None})
    health = sorted((dict(r) for r in st.feed_health()), key=lambda r: r["name"])
    status = st.status(NOW)
    return {
        "items": [(i.url, i.title, i.story_id, i.published, i.language, i.text, i.feed_name)
                  for i in items],
        "members": {s: [dict(r) for r in st.story_members(s)] for s in stories},
        "health": health,
        "search": {q: sorted(r["id"] for r in st.search(q))
                   for q in ("Armenia", "Армении", "Հայաստան", "без даты", "delimitation")},
        "pages": list(st.stored_pages()),
        "status": {k: status[k] for k in sorted(status) if k not in ("database", "size",
                                                                   "disk", "wal")},
        "entries": st.count_entries(),
    }


def rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(db)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY {order}").fetchall()
                for t, order, _ in TABLES}
    finally:
        conn.close()


def test_sqlite_to_postgres_and_back_keeps_every_row_and_reads_the_same(
        tmp_path: Path, postgres_url: str) -> None:
    db, feeds = build_store(tmp_path)
    r = copy(tmp_path, feeds, str(db), postgres_url)
    assert r.returncode == 0, r.stderr
    assert "counts verified" in r.stdout and "Traceback" not in r.stderr
    # Not a TTY: plain progress lines.
    assert "copying entries:" in r.stderr
    back = tmp_path / "back.db"
    r = copy(tmp_path, feeds, postgres_url, str(back))
    assert r.returncode == 0, r.stderr

    original = rows(db)
    assert len(original["entries"]) == 8 and original["pruned_keys"]
    assert original["pages"] and original["entry_links"] and original["entry_bands"]
    assert any(n >= 3 for (n,) in sqlite3.connect(db).execute(
        "SELECT COUNT(*) FROM entries GROUP BY story_id"))
    copied = rows(back)
    # The search index's garbage count stays behind: the target's index is new.
    assert ("search_pruned", 1) in original["store_state"]
    original["store_state"].remove(("search_pruned", 1))
    for table in original:
        assert copied[table] == original[table], table

    stores = [open_storage(db), open_storage(postgres_url), open_storage(back)]
    try:
        views = [snapshot(st) for st in stores]
    finally:
        for st in stores:
            st.close()
    assert views[0]["search"]["Հայաստան"] and views[0]["search"]["без даты"]
    assert views[1] == views[0]
    assert views[2] == views[0]


def test_postgres_target_keeps_ids_and_continues_them(tmp_path: Path, postgres_url: str
                                                      ) -> None:
    db, feeds = build_store(tmp_path)
    report = copy_store(str(db), postgres_url)
    assert report.ok and all(t.ok for t in report.tables)
    pg = open_storage(postgres_url)
    try:
        # New rows take ids after the copied ones (the identity sequences were reset).
        r = cli(["update", "--all"], env_for(tmp_path, AGGREGATOR_DATABASE=postgres_url),
                feeds=feeds)
        assert r.returncode == 0, r.stderr
        assert pg.count_entries() == report.tables[2].source_rows
    finally:
        pg.close()
    source = SQLiteStorage(db)
    try:
        top = source.conn.execute("SELECT MAX(id) FROM entries").fetchone()[0]
    finally:
        source.close()
    conn_rows = open_storage(postgres_url)
    try:
        found = conn_rows.search("Talks")
        assert found and max(r["id"] for r in found) <= top
    finally:
        conn_rows.close()


def test_a_non_empty_target_is_refused_and_left_alone(tmp_path: Path, postgres_url: str
                                                      ) -> None:
    db, feeds = build_store(tmp_path)
    assert copy(tmp_path, feeds, str(db), postgres_url).returncode == 0
    again = copy(tmp_path, feeds, str(db), with_password(postgres_url))
    assert again.returncode != 0
    assert "not empty" in again.stderr and "entries" in again.stderr
    assert "Traceback" not in again.stderr
    assert SECRET not in again.stderr + again.stdout
    assert ":***@" in again.stderr
    other = tmp_path / "other.db"
    assert copy(tmp_path, feeds, postgres_url, str(other)).returncode == 0
    into_sqlite = copy(tmp_path, feeds, postgres_url, str(other))
    assert into_sqlite.returncode != 0 and "not empty" in into_sqlite.stderr
    # The refused copies added nothing.
    assert len(rows(other)["entries"]) == 8


def test_a_password_is_never_shown_on_error_paths(tmp_path: Path, postgres_url: str) -> None:
    db, feeds = build_store(tmp_path)
    parts = urlsplit(postgres_url)
    refused = f"postgresql://postgres:{SECRET}@127.0.0.1:1/db"
    missing = with_password(urlunsplit(parts._replace(path="/aggtest_no_such_db")))
    for target in (refused, missing):
        r = copy(tmp_path, feeds, str(db), target)
        assert r.returncode != 0
        assert SECRET not in r.stdout + r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert "***" in r.stderr
    # A PostgreSQL source with a password, copied fine: nothing shows it either.
    r = copy(tmp_path, feeds, str(db), with_password(postgres_url))
    assert r.returncode == 0 and SECRET not in r.stdout + r.stderr
    r = copy(tmp_path, feeds, with_password(postgres_url), str(tmp_path / "b.db"))
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout + r.stderr


def test_sqlite_to_sqlite_without_a_server(tmp_path: Path) -> None:
    db, feeds = build_store(tmp_path)
    target = tmp_path / "copy.db"
    r = copy(tmp_path, feeds, str(db), str(target))
    assert r.returncode == 0, r.stderr
    copied, original = rows(target), rows(db)
    original["store_state"].remove(("search_pruned", 1))
    assert copied == original
    same = copy(tmp_path, feeds, str(db), str(db))
    assert same.returncode != 0 and "configured database" in same.stderr


class Lossy(SQLiteCopySide):
    """A target that loses the last row of each batch of band keys: the copy must notice."""

    def write(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        super().write(table, columns, rows[:-1] if table == "entry_bands" else rows)


def test_a_count_that_differs_commits_nothing(tmp_path: Path) -> None:
    db, _ = build_store(tmp_path)
    target = tmp_path / "lossy.db"
    migrate_database(target)
    src, dst = SQLiteStorage(db), SQLiteStorage(target)
    try:
        report = copy_tables(SQLiteCopySide(src.conn, str(db)),
                             Lossy(dst.conn, str(target)), batch=3)
    finally:
        src.close()
        dst.close()
    assert not report.ok and not report.committed
    bad = [t for t in report.tables if not t.ok]
    assert [t.table for t in bad] == ["entry_bands"]
    assert bad[0].target_rows == bad[0].source_rows - -(-bad[0].source_rows // 3)
    assert all(not rows for name, rows in rows_of(target).items() if name != "store_state")


def rows_of(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    return rows(db)


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    db, feeds = build_store(tmp_path)
    primary, secondary = os.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "aggregator.cli", "--feeds", str(feeds), "copy-store",
             str(tmp_path / "tty.db")],
            env=env_for(tmp_path, AGGREGATOR_DATABASE=str(db)), stdout=subprocess.PIPE,
            stderr=secondary, text=True, timeout=120)
        os.close(secondary)
        out = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(primary)
    assert proc.returncode == 0, out
    shown = out.decode()
    assert "copying entries:" not in shown  # no plain lines on a terminal
    # click's bar, filled to the total, closed before the log line that follows it.
    assert "copying entries " in shown and "[####" in shown
    assert re.search(r"\] +(\d+)/\1(\x1b\[\?25h)?\r?\n", shown), shown


def test_postgres_to_postgres(tmp_path: Path, postgres_url: str, postgres_server: str) -> None:
    import uuid

    from aggregator.store.postgres import create_database, drop_database

    db, feeds = build_store(tmp_path)
    assert copy(tmp_path, feeds, str(db), postgres_url).returncode == 0
    name = f"aggtest_{uuid.uuid4().hex[:12]}"
    second = create_database(postgres_server, name)
    try:
        r = copy(tmp_path, feeds, postgres_url, second)
        assert r.returncode == 0, r.stderr
        stores = [open_storage(postgres_url), open_storage(second)]
        try:
            assert snapshot(stores[1]) == snapshot(stores[0])
        finally:
            for st in stores:
                st.close()
    finally:
        drop_database(postgres_server, name)


def test_values_converted_between_the_backends_types() -> None:
    from aggregator.store.copy import to_postgres, to_sqlite

    when = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    stamp = "timestamp with time zone"
    assert to_postgres("2026-11-24T10:00:00Z", stamp) == when
    assert to_postgres("", stamp) is None  # an undated entry
    assert to_postgres(0, "boolean") is False and to_postgres(1, "boolean") is True
    assert to_postgres('["a"]', "jsonb") == '["a"]' and to_postgres(b"\x00", "bytea") == b"\x00"
    assert to_sqlite(when, stamp, True) == "2026-11-24T10:00:00Z"
    assert to_sqlite(None, stamp, True) == "" and to_sqlite(None, stamp, False) is None
    assert to_sqlite(True, "boolean", True) == 1
    assert to_sqlite(["é", {"u": 1}], "jsonb", True) == '["é",{"u":1}]'
    assert to_sqlite("x", "jsonb", True) == '"x"'
