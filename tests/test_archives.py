"""What a subscriber's reader sees, end to end: stories polled from a local feed server into a
real SQLite store, published by the pipeline, served by the built-in server over real HTTP.
Walking the RFC 5005 chain back from the current document (JSON Feed: next_url) reaches every
archived story once, up to `archive_pages`; links point where the feeds are served; ids
never move with addresses or with a story's representative."""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from lxml import etree

from aggregator.config import load_config
from aggregator.models import Item, OutputConfig, Settings
from aggregator.pipeline import Pipeline
from aggregator.publish import publish_output
from aggregator.server import FeedServer as OutputServer
from aggregator.store import MIGRATIONS, Store, entry_uid

from .feedserver import FeedServer
from .util import cli, env_for, rss, write_feeds

ATOM = "{http://www.w3.org/2005/Atom}"
LIMIT = 4
PAGES = 3
ID_MIGRATION = next(n for n, _ in MIGRATIONS if n.startswith("published ids"))


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - 127.0.0.1 only
        assert resp.status == 200, url
        return bytes(resp.read())


def atom_doc(data: bytes) -> tuple[list[str], dict[str, str]]:
    root = etree.fromstring(data)
    links = {a.get("rel"): a.get("href") for a in root.findall(f"{ATOM}link")}
    return [e.findtext(f"{ATOM}id") for e in root.findall(f"{ATOM}entry")], links


def rss_doc(data: bytes) -> tuple[list[str], dict[str, str]]:
    channel = etree.fromstring(data).find("channel")
    links = {a.get("rel"): a.get("href") for a in channel.findall(f"{ATOM}link")}
    return [i.findtext("guid") for i in channel.findall("item")], links


def json_doc(data: bytes) -> tuple[list[str], dict[str, str]]:
    feed = json.loads(data)
    links = {"self": feed["feed_url"]}
    if "next_url" in feed:
        links["prev-archive"] = feed["next_url"]  # JSON Feed pages to older items
    if feed.get("_archive", {}).get("archive"):
        links["current"] = feed["_archive"]["current"]
    return [i["id"] for i in feed["items"]], links


READERS = {"atom": atom_doc, "rss": rss_doc, "json": json_doc}


def walk(start: str, fmt: str, netloc: str) -> tuple[list[str], list[str]]:
    """Every item id met walking back from ``start``, and the archive pages visited."""
    seen: list[str] = []
    pages: list[str] = []
    url: str | None = start
    while url is not None:
        assert urlsplit(url).netloc == netloc, url  # where the feed is actually served
        ids, links = READERS[fmt](get(url))
        assert links["self"] == url
        if url != start:
            assert links["current"] == start
            pages.append(url)
        assert len(pages) <= 50, "prev-archive loops"
        seen += ids
        url = links.get("prev-archive")
    return seen, pages


@pytest.fixture
def source() -> Iterator[FeedServer]:
    with FeedServer(feeds=1, entries=6) as s:
        yield s


def pipeline_for(tmp_path: Path, source: FeedServer, **env: str) -> Pipeline:
    feeds = write_feeds(tmp_path / "feeds.yaml", [{"name": "f0", "url": source.url("/feed/0.xml")}])
    config = load_config(None, str(feeds), env_for(
        tmp_path, AGGREGATOR_FULL_TEXT="false", AGGREGATOR_COMBINED_LIMIT=str(LIMIT),
        AGGREGATOR_ARCHIVE_PAGES=str(PAGES), **env))
    return Pipeline(config, processes=1)


def stories_newest_first(tmp_path: Path) -> list[str]:
    """The published id of every stored story (one entry each here: the id of its entry)."""
    conn = sqlite3.connect(tmp_path / "agg.db")
    try:
        assert conn.execute("SELECT COUNT(*) FROM entries").fetchone() == (
            conn.execute("SELECT COUNT(*) FROM stories").fetchone())
        return [entry_uid(name, key) for name, key in conn.execute(
            "SELECT f.name, e.key FROM stories s JOIN entries e ON e.id = s.representative_id"
            " JOIN feeds f ON f.id = e.feed_id ORDER BY e.published DESC, e.id DESC")]
    finally:
        conn.close()


@pytest.mark.parametrize(("total", "pages"), [(3, 0), (7, 1), (9, 2), (30, 7)],
                         ids=["no-archive", "one-page", "several-pages", "beyond-the-limit"])
def test_prev_archive_chain_reaches_every_archived_story_once(
    tmp_path: Path, source: FeedServer, total: int, pages: int
) -> None:
    """Stories arrive a few at a time and each cycle publishes, so pages fill and seal as
    they would in a running daemon; beyond `archive_pages` the oldest pages are dropped."""
    p = pipeline_for(tmp_path, source)
    server = OutputServer(tmp_path / "public", p.config.settings.listen)
    server.start()
    try:
        for step in range(3, total + 3, 3):  # three new stories per cycle (the feed keeps 6)
            source.round = min(step, total) - source.entries
            p.run_cycle(all_feeds=True)
        stories = stories_newest_first(tmp_path)
        assert len(stories) == total
        host, port = server.address
        netloc = f"{host}:{port}"
        older = max(0, total - LIMIT)
        made = -(-older // LIMIT)  # archive pages ever made, filled from the oldest story
        assert made == pages
        dropped = max(0, made - PAGES)
        expected = stories[: total - dropped * LIMIT]
        for fmt in ("atom", "rss", "json"):
            seen, walked = walk(f"http://{netloc}/all.{fmt}", fmt, netloc)
            assert len(seen) == len(set(seen)), f"{fmt}: an item twice"
            assert seen == expected, fmt  # newest first, back to the oldest page kept
            assert len(walked) == min(pages, PAGES)
            # No page is written that the chain does not reach.
            on_disk = sorted((tmp_path / "public").glob(f"all-archive-*.{fmt}"))
            assert sorted(urlsplit(u).path[1:] for u in walked) == [f.name for f in on_disk]
    finally:
        server.stop()
        p.close()


def test_a_page_that_lost_a_story_stays_in_the_chain(tmp_path: Path, source: FeedServer) -> None:
    """The pipeline passes every item of a small store: a sealed page that lost a story (it
    merged into another) is not mistaken for one the window cut short, and stays linked."""
    p = pipeline_for(tmp_path, source)
    try:
        p.run_cycle(all_feeds=True)
        source.round = 3  # the feed holds 6 items: 9 stories in two polls
        p.run_cycle(all_feeds=True)  # the current 4, page 1 (4, sealed), page 2 (1)
        oldest, other = [r[0] for r in sqlite3.connect(tmp_path / "agg.db").execute(
            "SELECT s.id FROM stories s JOIN entries e ON e.id = s.representative_id"
            " ORDER BY e.published LIMIT 2")]
        conn = sqlite3.connect(tmp_path / "agg.db")
        with conn:  # as Store._merge_story does
            conn.execute("UPDATE entries SET story_id = ? WHERE story_id = ?", (other, oldest))
            conn.execute("DELETE FROM stories WHERE id = ?", (oldest,))
        conn.close()
        p.publish()
        stories = [entry_uid(n, k) for n, k in sqlite3.connect(tmp_path / "agg.db").execute(
            "SELECT f.name, e.key FROM stories s JOIN entries e ON e.id = s.representative_id"
            " JOIN feeds f ON f.id = e.feed_id ORDER BY e.published DESC, e.id DESC")]
        assert len(stories) == 8
        out = tmp_path / "public"
        for fmt in ("atom", "rss", "json"):
            seen: list[str] = []
            name: str | None = f"all.{fmt}"
            while name is not None:
                ids, links = READERS[fmt]((out / name).read_bytes())
                seen += ids
                nxt = links.get("prev-archive")
                name = urlsplit(nxt).path[1:] if nxt else None
            assert seen == stories, fmt
    finally:
        p.close()


@pytest.mark.parametrize("limit_pages", [1, 2, 5, 20])
def test_chain_from_files_at_every_page_count(tmp_path: Path, limit_pages: int) -> None:
    """publish_output alone, every page count from none to past the limit, all formats:
    fewer pages than the limit must all be written and linked (they were not)."""
    base = "https://feeds.example/"
    output = OutputConfig(name="all", title="All", limit=3, archive_pages=limit_pages)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for count in range(0, 3 * (limit_pages + 3) + 1):
        out = tmp_path / f"n{count}"
        items = [Item(id=n, uid=f"u{n}", feed_name="f", feed_title="F", feed_url=base + "f",
                      feed_link=None, feed_language=None, feed_tags=(), title=f"t{n}",
                      url=None, author=None, published=now + timedelta(hours=n),
                      updated=now + timedelta(hours=n), content_html="", summary="s",
                      text="") for n in range(count)]
        publish_output(output, items, out, base_url=base, now=now, complete=True)
        pages = -(-max(0, count - 3) // 3)
        kept = min(pages, limit_pages)
        dropped = pages - kept
        expected = [f"u{n}" for n in range(count - 1, dropped * 3 - 1, -1)]
        for fmt in ("atom", "rss", "json"):
            seen: list[str] = []
            name: str | None = f"all.{fmt}"
            walked = 0
            while name is not None:
                ids, links = READERS[fmt]((out / name).read_bytes())
                seen += ids
                nxt = links.get("prev-archive")
                name = nxt.removeprefix(base) if nxt else None
                walked += nxt is not None
            assert seen == expected, (count, fmt)
            assert walked == kept == len(list(out.glob(f"all-archive-*.{fmt}"))), (count, fmt)


def test_links_follow_listen_and_the_index_and_opml_too(tmp_path: Path, source: FeedServer) -> None:
    p = pipeline_for(tmp_path, source)
    try:
        p.run_cycle(all_feeds=True)
        base = f"http://{p.config.settings.listen}/"
        assert base != "http://127.0.0.1:8080/"
        index = (tmp_path / "public" / "index.html").read_text()
        assert f'href="{base}all.atom"' in index and f'href="{base}outputs.opml"' in index
        opml = (tmp_path / "public" / "outputs.opml").read_text()
        assert f'xmlUrl="{base}all.atom"' in opml and f'htmlUrl="{base}"' in opml
        _, links = atom_doc((tmp_path / "public" / "all.atom").read_bytes())
        assert links["self"] == base + "all.atom" and links["prev-archive"].startswith(base)
        assert json.loads((tmp_path / "public" / "all.json").read_bytes())["feed_url"] == (
            base + "all.json")
    finally:
        p.close()
    # base_url, when set, wins over listen.
    p = pipeline_for(tmp_path, source, AGGREGATOR_BASE_URL="https://news.example/feeds")
    try:
        p.publish()
        _, links = atom_doc((tmp_path / "public" / "all.atom").read_bytes())
        assert links["self"] == "https://news.example/feeds/all.atom"
    finally:
        p.close()


def test_link_base() -> None:
    assert Settings().link_base == "http://127.0.0.1:8080/"  # the default listen address
    assert Settings(listen="127.0.0.1:52855").link_base == "http://127.0.0.1:52855/"
    assert Settings(listen="[::1]:9000").link_base == "http://[::1]:9000/"
    assert Settings(listen="localhost:9000").link_base == "http://localhost:9000/"
    # A wildcard names no host: the loopback of its family stands in (and `check` warns).
    assert Settings(listen="0.0.0.0:9000").link_base == "http://127.0.0.1:9000/"
    assert Settings(listen="[::]:9000").link_base == "http://[::1]:9000/"
    assert Settings(listen="[::]:9000", base_url="https://a.example/x/").link_base == (
        "https://a.example/x/")


def test_archive_pages_setting_and_per_output(tmp_path: Path) -> None:
    feeds = write_feeds(tmp_path / "feeds.yaml", [{"name": "a", "url": "https://a.example/rss"}],
                        extra="outputs:\n  - name: short\n    archive_pages: 2\n"
                              "  - name: long\n")
    env = env_for(tmp_path, AGGREGATOR_ARCHIVE_PAGES="7", AGGREGATOR_BASE_URL="")
    config = load_config(None, str(feeds), env)
    assert config.settings.archive_pages == 7
    assert config.settings.base_url is None  # an empty variable leaves it unset
    assert {o.name: o.archive_pages for o in config.outputs} == {"short": 2, "long": 7}
    assert load_config(None, None, {}).outputs[0].archive_pages == Settings().archive_pages == 20
    bad = write_feeds(tmp_path / "bad.yaml", [{"name": "a", "url": "https://a.example/rss"}],
                      extra="outputs:\n  - name: short\n    archive_pages: -1\n")
    r = cli(["check"], env, feeds=bad)
    assert r.returncode == 2 and "archive_pages: must be 0 or more, got -1" in r.stdout
    r = cli(["check"], {**env, "AGGREGATOR_ARCHIVE_PAGES": "-3"}, feeds=feeds)
    assert r.returncode == 2 and "AGGREGATOR_ARCHIVE_PAGES: archive_pages must be 0 or more" in (
        r.stdout)


@pytest.mark.parametrize("listen", ["0.0.0.0:9000", "[::]:9000"])
def test_check_warns_about_a_wildcard_listen_without_base_url(tmp_path: Path, listen: str) -> None:
    feeds = write_feeds(tmp_path / "feeds.yaml", [{"name": "a", "url": "https://a.example/rss"}])
    env = env_for(tmp_path, AGGREGATOR_LISTEN=listen)
    r = cli(["check"], env, feeds=feeds)
    assert r.returncode == 0, r.stdout + r.stderr
    warnings = [line for line in r.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "base_url" in warnings[0] and listen in warnings[0]
    assert "ok: 1 feeds" in r.stdout
    r = cli(["check"], {**env, "AGGREGATOR_BASE_URL": "https://news.example/"}, feeds=feeds)
    assert r.returncode == 0 and "warning:" not in r.stdout
    r = cli(["check"], {**env, "AGGREGATOR_LISTEN": "127.0.0.1:9000"}, feeds=feeds)
    assert r.returncode == 0 and "warning:" not in r.stdout
    # Problems keep their exit code; the warning still shows.
    r = cli(["check"], {**env, "AGGREGATOR_WORKERS": "none"}, feeds=feeds)
    assert r.returncode == 2 and "warning:" in r.stdout


# --------------------------------------------------------------------------- ids

STORY = (
    "Armenia and Azerbaijan agreed on Tuesday to resume talks on the delimitation of their "
    "shared border, the foreign ministries of both countries said in a joint statement issued "
    "after a meeting of the commissions in the border town of Ijevan. The statement said the "
    "commissions would meet again next month to discuss the northern section of the border, "
    "where villages on both sides depend on the same roads and water supplies. Officials said "
    "experts would use Soviet-era maps from the nineteen seventies as the basis for the work."
)


def published_ids(out: Path) -> dict[str, list[str]]:
    return {fmt: READERS[fmt]((out / f"all.{fmt}").read_bytes())[0]
            for fmt in ("atom", "rss", "json")}


def test_item_id_stays_when_the_representative_or_outlets_change(tmp_path: Path) -> None:
    with FeedServer() as s:
        s.route("/a.xml", body=rss("Outlet A", [("a1", "a1", "https://a.example/talks", STORY)]))
        s.route("/b.xml", body=rss("Outlet B", []))
        feeds = write_feeds(tmp_path / "feeds.yaml", [{"name": "a", "url": s.url("/a.xml")},
                                                      {"name": "b", "url": s.url("/b.xml")}])
        env = env_for(tmp_path, AGGREGATOR_FULL_TEXT="false")
        assert cli(["update", "--all"], env, feeds=feeds).returncode == 0
        first = published_ids(tmp_path / "public")
        assert first["atom"] == first["rss"] == first["json"] == [entry_uid("a", "a1")]
        # A new outlet carries the story with more words: its copy becomes the representative.
        s.route("/b.xml", body=rss("Outlet B", [
            ("b1", "b1", "https://b.example/border", STORY + " More details followed in the evening "
             "from officials of both delegations, who spoke to reporters after the meeting.")]))
        assert cli(["update", "--all"], env, feeds=feeds).returncode == 0
    conn = sqlite3.connect(tmp_path / "agg.db")
    rep = conn.execute("SELECT f.name FROM stories s JOIN entries e ON e.id ="
                       " s.representative_id JOIN feeds f ON f.id = e.feed_id").fetchall()
    assert rep == [("b",)]  # the representative did change
    assert published_ids(tmp_path / "public") == first
    assert conn.execute("SELECT item_id FROM stories").fetchall() == [(first["atom"][0],)]


def feed_id(out: Path) -> str:
    return str(etree.parse(str(out / "all.atom")).getroot().findtext(f"{ATOM}id"))


def test_feed_id_is_stored_at_first_publish_and_never_moves(
    tmp_path: Path, source: FeedServer
) -> None:
    p = pipeline_for(tmp_path, source)
    try:
        p.run_cycle(all_feeds=True)
        first = feed_id(tmp_path / "public")
        assert first.startswith("urn:uuid:")
    finally:
        p.close()
    archive = tmp_path / "public" / "all-archive-1.atom"
    assert etree.parse(str(archive)).getroot().findtext(f"{ATOM}id") == first
    # Served elsewhere now: links move, the id does not.
    p = pipeline_for(tmp_path, source, AGGREGATOR_BASE_URL="https://news.example/")
    try:
        p.publish()
        assert feed_id(tmp_path / "public") == first
        assert atom_doc((tmp_path / "public" / "all.atom").read_bytes())[1]["self"] == (
            "https://news.example/all.atom")
    finally:
        p.close()


def to_old_store(path: Path) -> None:
    """Undo the ids migration on a store made by this code: a store as it was before."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("ALTER TABLE stories DROP COLUMN item_id")
        conn.execute("DROP TABLE output_ids")
        conn.execute("DELETE FROM store_state WHERE name = 'legacy_feed_ids'")
        conn.execute("DELETE FROM schema_migrations WHERE name = ?", (ID_MIGRATION,))
    conn.close()


def test_migration_keeps_the_ids_an_existing_store_publishes(
    tmp_path: Path, source: FeedServer
) -> None:
    p = pipeline_for(tmp_path, source)
    try:
        p.run_cycle(all_feeds=True)
    finally:
        p.close()
    db = tmp_path / "agg.db"
    conn = sqlite3.connect(db)
    # A story whose representative is not its first entry: the old code published the
    # representative's id, and that is the id to keep.
    story, rep = conn.execute("SELECT id, representative_id FROM stories LIMIT 1").fetchone()
    other = conn.execute("SELECT id FROM entries WHERE id != ? LIMIT 1", (rep,)).fetchone()[0]
    with conn:
        conn.execute("DELETE FROM stories WHERE representative_id = ?", (other,))
        conn.execute("UPDATE entries SET story_id = ? WHERE id = ?", (story, other))
        conn.execute("UPDATE stories SET representative_id = ? WHERE id = ?", (other, story))
    conn.close()
    to_old_store(db)
    store = Store(db)
    assert store.migrate() == [ID_MIGRATION]
    store.close()
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT s.item_id, f.name, e.key FROM stories s JOIN entries e"
                        " ON e.id = s.representative_id JOIN feeds f ON f.id = e.feed_id")
    for item_id, feed, key in rows:
        assert item_id == entry_uid(feed, key)
    conn.close()
    # The feed id the old code emitted (base_url unset: its old default) is the one stored,
    # whatever listen says now, and it stays.
    p = pipeline_for(tmp_path, source)
    try:
        p.publish()
        assert feed_id(tmp_path / "public") == "http://127.0.0.1:8080/all.atom"
        assert p.config.settings.listen not in feed_id(tmp_path / "public")
    finally:
        p.close()
    p = pipeline_for(tmp_path, source, AGGREGATOR_BASE_URL="https://news.example/")
    try:
        p.publish()
        assert feed_id(tmp_path / "public") == "http://127.0.0.1:8080/all.atom"
    finally:
        p.close()
