"""What a subscriber's reader gets from an entry's text (issue 11): the richer of content and
description wins over a placeholder, author names are names (never an address or a piece of
one), every text column of every view is clean, and identity keys have one storable encoding
that entries stored before the upgrade are migrated to."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import feedparser
import pytest

from aggregator import clean
from aggregator.config import load_config
from aggregator.parse import author_name, parse_feed
from aggregator.pipeline import ArticleJob, Pipeline
from aggregator.storable import escape_unstorable, is_storable, strip_unstorable
from aggregator.store import MIGRATIONS, Store
from aggregator.store import schema as store  # where migrate() reads MIGRATIONS

from .feedserver import FeedServer
from .util import env_for, write_feeds

# C0 controls but tab/LF/CR, noncharacters of every plane, lone surrogates.
UNSTORABLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\ufdd0-\ufdef\ufffe\uffff\ud800-\udfff"
    + "".join(chr(p << 16 | 0xFFFE) + chr(p << 16 | 0xFFFF) for p in range(1, 17)) + "]"
)

DESCRIPTION = ("Everyone wants good compression. But what exactly &lt;em&gt;is&lt;/em&gt; good "
               "compression? Ratio, speed and memory pull in different directions.")
COMPRESSION = f"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel>
<title>Insanity Industries</title><link>https://insanity.industries/</link>
<item><title>Compression</title><link>https://insanity.industries/post/compression/</link>
<guid>https://insanity.industries/post/compression/</guid>
<pubDate>Sat, 21 Nov 2026 10:00:00 +0000</pubDate>
<author>jonas@insanity.industries (Jonas Große Sundrup)</author>
<description>{DESCRIPTION}</description>
<content:encoded>...</content:encoded></item>
<item><title>Teaser content</title><link>https://insanity.industries/post/teaser/</link>
<author>Արամ Պետրոսյան &lt;aram@example.photography&gt;</author>
<description>Both have words; the description is the longer text and is the content.</description>
<content:encoded><![CDATA[<p>Both have words…</p>]]></content:encoded></item>
<item><title>Real content</title><link>https://insanity.industries/post/real/</link>
<author>editor@example.com</author>
<description>A short teaser.</description>
<content:encoded><![CDATA[<p>The full story, with <b>markup</b>, longer than its teaser.</p>]]></content:encoded></item>
</channel></rss>"""


def _run(tmp_path: Path, feeds: list[dict[str, Any]], **env: str) -> Pipeline:
    path = write_feeds(tmp_path / "feeds.yaml", feeds)
    config = load_config(None, str(path), env_for(tmp_path, **env))
    return Pipeline(config, processes=1)


def _cycle(tmp_path: Path, feeds: list[dict[str, Any]], **env: str) -> None:
    env.setdefault("AGGREGATOR_FULL_TEXT", "false")
    p = _run(tmp_path, feeds, **env)
    try:
        p.run_cycle(all_feeds=True)
    finally:
        p.close()


# --------------------------------------------------------------------------- placeholders


@pytest.mark.parametrize(("html", "text", "reference", "expected"), [
    ("", "", "", True),
    ("<p>...</p>", "...", "A real description.", True),
    ("<p>…</p>", "…", "", True),
    ("<p>[…]</p>", "[…]", "", True),
    ("<p>— </p>", "—", "", True),
    ('<p><img src="https://example.org/a.png"></p>', "", "Words.", False),
    ("<p>Everyone wants</p>", "Everyone wants", "Everyone wants good compression.", True),
    ("<p>EVERYONE  wants good compr…</p>", "EVERYONE  wants good compr…",
     "Everyone wants good compression.", True),
    ("<p>Everyone wants good [...]</p>", "Everyone wants good [...]",
     "Everyone wants good compression.", True),
    ("<p>Same text.</p>", "Same text.", "Same text.", False),
    ("<p>Other words</p>", "Other words", "Everyone wants good compression.", False),
    ("<p>Հայերեն</p>", "Հայերեն", "", False),
    ("<p>Everyone wants more</p>", "Everyone wants more", "Everyone wants", False),
])
def test_placeholder_definition(html: str, text: str, reference: str, expected: bool) -> None:
    assert clean.is_placeholder(html, text, reference) is expected


def test_placeholder_content_never_replaces_the_description(tmp_path: Path) -> None:
    """The issue's feed through the real pipeline, the items view and all three formats."""
    with FeedServer(feeds=0) as s:
        _cycle(tmp_path, [{"name": "insanity", "url": s.route("/c.xml", body=COMPRESSION)}])
    conn = sqlite3.connect(tmp_path / "agg.db")
    conn.row_factory = sqlite3.Row
    rows = {r["title"]: r for r in conn.execute("SELECT * FROM items")}
    comp = rows["Compression"]
    assert comp["content_html"].startswith("Everyone wants good compression. But what exactly")
    assert "<em>is</em>" in comp["content_html"]
    assert comp["summary"].startswith("Everyone wants good compression.")
    assert comp["text"].startswith("Everyone wants good compression.")
    assert comp["word_count"] > 10
    assert rows["Teaser content"]["summary"].startswith("Both have words; the description")
    assert rows["Real content"]["content_html"].startswith("<p>The full story, with <b>")
    assert rows["Real content"]["summary"].startswith("The full story")

    out = tmp_path / "public"
    atom = feedparser.parse((out / "all.atom").read_bytes())
    rss = feedparser.parse((out / "all.rss").read_bytes())
    for parsed in (atom, rss):
        entry = next(e for e in parsed.entries if e.title == "Compression")
        bodies = [c.value for c in entry.get("content", [])] + [entry.get("summary", "")]
        assert all("Everyone wants good compression" in b for b in bodies if b), bodies
        assert all(b.strip() not in ("...", "<p>...</p>") for b in bodies)
    item = next(i for i in json.loads((out / "all.json").read_text())["items"]
                if i["title"] == "Compression")
    assert item["content_html"].startswith("Everyone wants good compression")
    assert item.get("summary", "Everyone wants good").startswith("Everyone wants good")


def test_both_placeholders_publish_no_content(tmp_path: Path) -> None:
    body = COMPRESSION.replace(f"<description>{DESCRIPTION}</description>",
                               "<description>[…]</description>")
    with FeedServer(feeds=0) as s:
        _cycle(tmp_path, [{"name": "insanity", "url": s.route("/c.xml", body=body)}])
    conn = sqlite3.connect(tmp_path / "agg.db")
    row = conn.execute("SELECT content_html, text, summary FROM items"
                       " WHERE title = 'Compression'").fetchone()
    assert row == ("", "", "")


def test_article_that_is_a_placeholder_of_the_feed_text_is_not_used(tmp_path: Path) -> None:
    """The better-of rule on the article path: same word count, but the article is the feed
    text cut inside a word (what a paywalled page often serves)."""
    feed = COMPRESSION.replace(
        f"<description>{DESCRIPTION}</description>",
        "<description>Everyone wants good compression</description>").replace(
        "<content:encoded>...</content:encoded>", "")
    with FeedServer(feeds=0) as s:
        p = _run(tmp_path, [{"name": "insanity", "url": s.route("/c.xml", body=feed)}],
                 AGGREGATOR_FULL_TEXT="true")
        try:
            p.run_cycle(all_feeds=True, articles=False)
            backlog = p.writer.call(lambda st: st.backlog(10))
            entry = next(b for b in backlog if b.title == "Compression")
            assert entry.word_count == 4
            from aggregator.models import Article

            for html, expect in (("<p>Everyone wants good compr…</p>", "feed"),
                                 ("<p>...</p>", "feed"),
                                 ("<p>Nobody wants bad compression</p>", "done")):
                article = clean.clean_article(
                    Article(html=html, text=clean.html_to_text(html), method="test"),
                    "https://example.org/c", feed_html=entry.feed_html,
                    feed_words=entry.word_count)
                job = ArticleJob(entry, article=article)
                p.writer.call(lambda st, job=job: p._write_article(st, job))
                status, stored = p.writer.call(lambda st: st.conn.execute(
                    "SELECT extract_status, text FROM entries WHERE id = ?",
                    (entry.id,)).fetchone())
                assert status == expect, html
                assert stored == ("Nobody wants bad compression" if expect == "done"
                                  else "Everyone wants good compression")
        finally:
            p.close()


# --------------------------------------------------------------------------- authors

AUTHORS = [
    ("jonas@insanity.industries (Jonas Große Sundrup)", "Jonas Große Sundrup"),
    ("Jonas Große Sundrup <jonas@insanity.industries>", "Jonas Große Sundrup"),
    ("Jonas Große Sundrup (jonas@insanity.industries)", "Jonas Große Sundrup"),
    ("jonas@insanity.industries", None),
    ("mailto:jonas@insanity.industries", None),
    ("<jonas@insanity.industries>", None),
    ("name <a@b.co.uk>", "name"),
    ("a@example.photography (Name)", "Name"),
    ("имя@пример.рф (Имя Фамилия)", "Имя Фамилия"),
    ("Имя Фамилия <имя@пример.рф>", "Имя Фамилия"),
    ("aram@news.am (Արամ Պետրոսյան)", "Արամ Պետրոսյան"),
    ("გიორგი ბერიძე <giorgi@example.ge>", "გიორგი ბერიძე"),
    ("Ayşə Məmmədova (ayse@example.az)", "Ayşə Məmmədova"),
    ("jonas@insanity.industries (Jonas Große Sundrup", "Jonas Große Sundrup"),
    ("Jonas Große Sundrup <jonas@insanity.industries", "Jonas Große Sundrup"),
    ("Ann Lee (ann@x.org), Bob Roe <bob@y.international>", "Ann Lee, Bob Roe"),
    ("ann@x.org, bob@y.org", None),
    ('"Doe, John" <john@example.com>', "Doe, John"),
    ("Doe, John", "Doe, John"),
    ("Jonas (editor)", "Jonas (editor)"),
    ("@handle", "@handle"),
    ("Tom & Jerry", "Tom & Jerry"),
]


@pytest.mark.parametrize(("raw", "name"), AUTHORS)
def test_author_is_a_name_in_rss_atom_and_json(raw: str, name: str | None) -> None:
    for element in ("author", "dc:creator"):
        body = ('<?xml version="1.0" encoding="utf-8"?><rss version="2.0" '
                'xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>t</title><item>'
                f"<guid isPermaLink='false'>1</guid><title>x</title>"
                f"<{element}>{escape(raw)}</{element}></item></channel></rss>").encode()
        assert parse_feed(body, "http://example.org/f").entries[0].author == name, element
    atom = (f'<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title><entry><id>1</id>'
            f"<title>x</title><author><name>{escape(raw)}</name></author></entry></feed>")
    assert parse_feed(atom.encode(), "http://example.org/f").entries[0].author == name
    doc = {"version": "https://jsonfeed.org/version/1.1", "title": "t",
           "items": [{"id": "1", "title": "x", "authors": [{"name": raw}]}]}
    assert parse_feed(json.dumps(doc).encode(), "http://example.org/f").entries[0].author == name
    assert author_name(raw) == name  # an article page's author metadata


def test_several_author_elements_each_parsed_from_the_raw_value() -> None:
    body = ('<?xml version="1.0" encoding="utf-8"?><rss version="2.0" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>t</title><item>'
            "<guid isPermaLink='false'>1</guid><title>x</title>"
            "<author>jonas@insanity.industries (Jonas Große Sundrup)</author>"
            "<dc:creator>aram@news.am (Արամ Պետրոսյան)</dc:creator>"
            "</item></channel></rss>").encode()
    assert parse_feed(body, "http://example.org/f").entries[0].author == (
        "Jonas Große Sundrup, Արամ Պետրոսյան")
    atom = (b'<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title><entry><id>1</id>'
            b"<title>x</title><author><name>Ann</name><email>ann@x.org</email></author>"
            b"<author><name>bob@y.org</name></author><author><name>Carl</name></author>"
            b"</entry></feed>")
    assert parse_feed(atom, "http://example.org/f").entries[0].author == "Ann, Carl"


def test_author_stored_is_the_name(tmp_path: Path) -> None:
    feeds = [{"name": "insanity", "url": "/c.xml"}]
    with FeedServer(feeds=0) as s:
        feeds[0]["url"] = s.route("/c.xml", body=COMPRESSION)
        _cycle(tmp_path, feeds)
        # A row stored by an earlier version, with the fragment it published then, is
        # repaired the next time the feed carries the entry (not counted as an edit).
        conn = sqlite3.connect(tmp_path / "agg.db")
        with conn:
            conn.execute("UPDATE entries SET author = 'stries (Jonas Große Sundrup'"
                         " WHERE title = 'Compression'")
        s.route("/c.xml", body=COMPRESSION + "\n")
        p = _run(tmp_path, feeds, AGGREGATOR_FULL_TEXT="false")
        try:
            outcomes = p.poll(p.due(all_feeds=True))
            p.publish()
        finally:
            p.close()
    assert [(o.status, o.new, o.updated) for o in outcomes] == [("ok", 0, 0)]
    authors = dict(conn.execute("SELECT title, author FROM items"))
    assert authors == {"Compression": "Jonas Große Sundrup",
                       "Teaser content": "Արամ Պետրոսյան", "Real content": None}
    for f in ("all.atom", "all.rss", "all.json"):
        data = (tmp_path / "public" / f).read_text()
        assert "Jonas Große Sundrup" in data and "stries (Jonas" not in data, f
        assert "@example.photography" not in data and "editor@example.com" not in data, f


# --------------------------------------------------------------------------- clean storage


def test_storable_text_and_identity_encoding() -> None:
    assert strip_unstorable("a\x00b\x01\x1b[31m\tc\nd\re\ufffe\uffff\U0010fffe\ufdd0") == (
        "ab[31m\tc\nd\re")
    assert strip_unstorable("x\ud800y") == "x\ufffdy"
    # Above the BMP only U+xFFFE/U+xFFFF go: CJK extension B and emoji stay.
    assert strip_unstorable("\U00020000\U0002fffe\U0001f600\U0001ffff") == "\U00020000\U0001f600"
    assert clean.clean_line("a\U0002ffff\U00020000 b\ufdd0\ud800") == "a\U00020000 b\ufffd"
    assert escape_unstorable("k\U0010ffff\U00020000") == "k%F4%8F%BF%BF\U00020000"
    assert escape_unstorable("guid\x00-\ufffe") == "guid%00-%EF%BF%BE"
    assert escape_unstorable("https://example.org/a%20b?q=1") == "https://example.org/a%20b?q=1"
    for value in ("guid\x00-\ufffe", "x\ud800y", "ok"):
        once = escape_unstorable(value)
        assert escape_unstorable(once) == once and is_storable(once)
        assert strip_unstorable(strip_unstorable(value)) == strip_unstorable(value)


HOSTILE_RSS = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">'
    "<channel><title>Hostile\x07 \ufffe outlet\x1b[0m</title><link>{base}/</link>"
    "<item><guid isPermaLink='false'>id\x00-\ufffe-1</guid>"
    "<title>Noncharacters \ufffe in \uffff the title</title>"
    "<link>{base}/a\x00b\x01.html</link>"
    "<author>ctl@example.org (Ctl\x08 Name\x07)</author>"
    "<category>cat\x01\ufffe</category><pubDate>Sat, 21 Nov 2026 10:00:00 +0000\x07</pubDate>"
    "<enclosure url='{base}/e.mp3' type='audio/mpeg\x01' length='1'/>"
    "<description>Plain \x01 text</description>"
    "<content:encoded><![CDATA[<p>Colour \x01\x02\x07\x08\x0b\x0c\x1b[31mred\x1b[0m and"
    " a bell, with enough words to be content.</p>]]></content:encoded></item>"
    "</channel></rss>"
)
HOSTILE_JSON = {
    "version": "https://jsonfeed.org/version/1.1", "title": "JSON \x01outlet\ufffe",
    "home_page_url": "https://example.org/",
    "items": [{"id": "j\x00\ufffe1", "url": "/j\x00.html",  # relative: the local server
               "title": "JSON \uffff title\x0b", "content_html": "<p>Body\x1b[1m\x00 text</p>",
               "summary": "Sum\x02mary", "authors": [{"name": "Ann\x01 Lee <ann@x.org>"}],
               "tags": ["t\x01ag\ufffe"], "date_published": "2026-11-21T10:00:00Z"}],
}


def assert_views_clean(db: Path) -> int:
    """Every text column of every view, read with one query per view over all its columns
    (JSON columns decoded too: an escaped control comes back when a tool decodes it)."""
    conn = sqlite3.connect(db)
    checked = 0
    for view in ("items", "feed_health", "story_outlets"):
        columns = [r[1] for r in conn.execute(f"PRAGMA table_info({view})")]
        rows = conn.execute(f"SELECT {', '.join(columns)} FROM {view}").fetchall()
        assert rows, view
        for row in rows:
            for column, value in zip(columns, row, strict=True):
                if not isinstance(value, str):
                    continue
                checked += 1
                assert not UNSTORABLE.search(value), (view, column, value)
                if value[:1] in "[{":
                    try:
                        decoded = json.dumps(json.loads(value), ensure_ascii=False)
                    except ValueError:
                        continue
                    assert not UNSTORABLE.search(decoded), (view, column, decoded)
    return checked


@pytest.fixture
def hostile_server() -> Iterator[FeedServer]:
    with FeedServer(feeds=0) as s:
        s.route("/hostile.xml", body=HOSTILE_RSS.format(base=s.base).encode("utf-8"))
        s.route("/hostile.json", body=json.dumps(HOSTILE_JSON).encode(),
                headers={"Content-Type": "application/feed+json"})
        # The RSS item's article page, as its escaped link asks for it.
        paragraphs = "".join(f"<p>Paragraph {k}\x01 with\x1b[31m colour codes and a bell\x07"
                             f" in the article page's text, long enough to be the article"
                             f" \ufffe rather than the feed's short content.</p>"
                             for k in range(6))
        s.route("/a%00b%01.html", headers={"Content-Type": "text/html; charset=utf-8"}, body=(
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<title>Page\x07 title</title><meta name='author' content='page@example.org'>"
            f"</head><body><article><h1>Page\x07 title</h1>{paragraphs}</article></body>"
            "</html>"))
        yield s


def test_every_text_column_of_every_view_is_clean(tmp_path: Path,
                                                  hostile_server: FeedServer) -> None:
    s = hostile_server
    feeds = [{"name": "hostile", "url": s.url("/hostile.xml")},
             {"name": "hostilejson", "url": s.url("/hostile.json")}]
    _cycle(tmp_path, feeds, AGGREGATOR_FULL_TEXT="true")
    conn = sqlite3.connect(tmp_path / "agg.db")
    conn.row_factory = sqlite3.Row
    assert conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 2
    # The RSS item's page was extracted (its text is the article's); the JSON one's is 404.
    assert dict(conn.execute("SELECT feed_name, extract_status FROM items").fetchall()) == {
        "hostile": "done", "hostilejson": "failed"}
    assert assert_views_clean(tmp_path / "agg.db") > 40
    # The same check on every text column of the tables behind them.
    for table in ("entries", "feeds"):
        for row in conn.execute(f"SELECT * FROM {table}"):
            for column in row.keys():
                if isinstance(row[column], str):
                    assert not UNSTORABLE.search(row[column]), (table, column, row[column])
    rss = conn.execute("SELECT * FROM items WHERE feed_name = 'hostile'").fetchone()
    assert rss["guid"] == "id%00-%EF%BF%BE-1"
    assert rss["title"] == "Noncharacters in the title"
    assert rss["feed_title"] == "Hostile outlet[0m"
    assert rss["author"] == "Ctl Name"
    assert json.loads(rss["categories"]) == ["cat"]
    assert "Paragraph 0 with[31m colour codes" in rss["content_html"]
    assert rss["url"].endswith("/a%00b%01.html")
    feed_html = conn.execute("SELECT feed_html FROM entries WHERE guid = ?",
                             (rss["guid"],)).fetchone()[0]
    assert "[31mred[0m" in feed_html
    js = conn.execute("SELECT * FROM items WHERE feed_name = 'hostilejson'").fetchone()
    assert js["guid"] == "j%00%EF%BF%BE1" and js["author"] == "Ann Lee"
    assert js["title"] == "JSON title" and "Body[1m text" in js["content_html"]
    # Polling again finds the same rows by their escaped keys: nothing new, no duplicate.
    s.route("/hostile.xml", body=HOSTILE_RSS.format(base=s.base).encode("utf-8")
            + b"<!-- changed bytes -->")
    p = _run(tmp_path, feeds, AGGREGATOR_FULL_TEXT="false")
    try:
        outcomes = p.poll(p.due(all_feeds=True))
    finally:
        p.close()
    assert sum(o.new for o in outcomes) == 0
    assert conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 2
    assert assert_views_clean(tmp_path / "agg.db") > 40


# --------------------------------------------------------------------------- migration

def _migration() -> int:
    """Index of this change's migration (others may come after it)."""
    return next(i for i, (name, _) in enumerate(MIGRATIONS)
                if name.startswith("stored text holds no control characters"))


def test_migration_cleans_stored_rows_and_keeps_identity(
        tmp_path: Path, hostile_server: FeedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    s = hostile_server
    migration = _migration()
    feeds = [{"name": "hostile", "url": s.url("/hostile.xml")}]
    path = write_feeds(tmp_path / "feeds.yaml", feeds)
    config = load_config(None, str(path), env_for(tmp_path, AGGREGATOR_FULL_TEXT="false"))
    # The schema before this migration, with a row as the old code stored it.
    with monkeypatch.context() as m:
        m.setattr(store, "MIGRATIONS", MIGRATIONS[:migration])
        old = Store(tmp_path / "agg.db")
        old.migrate()
    now = datetime(2026, 11, 21, 10, tzinfo=UTC)
    old.sync_feeds(config.feeds, now)
    at = "2026-11-21T10:00:00Z"
    old.conn.execute("UPDATE feeds SET title = ?, warnings = ?, last_error = ?",
                     ("Old\x07 title\ufffe", json.dumps(["warn\x01ing"]), "err\x00or"))
    old.conn.execute(
        "INSERT INTO stories(id, first_seen, updated, entry_count, outlet_count)"
        " VALUES (1, ?, ?, 1, 1)", (at, at))
    old.conn.execute(
        "INSERT INTO entries(feed_id, key, guid, url, title, author, content_html, text,"
        " summary, categories, published, updated, first_seen, last_seen, content_hash,"
        " extract_status, story_id, match_reason, match_score)"
        " VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'old', 'skipped', 1, 'first', 1.0)",
        ("id\x00-\ufffe-1", "id\x00-\ufffe-1", f"{s.base}/a\x00b\x01.html",
         "Old \ufffetitle\uffff", "Ctl\x08 Name", "<p>Colour \x01\x1b[31mred</p>",
         "Colour \x01\x1b[31mred", "Colour \x01\x1b[31mred", json.dumps(["cat\x01"]),
         at, at, at, at))
    old.conn.execute("UPDATE stories SET representative_id = 1")
    old.close()

    p = _run(tmp_path, feeds, AGGREGATOR_FULL_TEXT="false")  # migrates, then polls again
    try:
        outcomes = p.poll(p.due(all_feeds=True))
    finally:
        p.close()
    assert [o.new for o in outcomes] == [0] and [o.updated for o in outcomes] == [1]
    conn = sqlite3.connect(tmp_path / "agg.db")
    assert conn.execute("SELECT id, key FROM entries").fetchall() == [(1, "id%00-%EF%BF%BE-1")]
    assert conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] == len(
        MIGRATIONS)
    assert_views_clean(tmp_path / "agg.db")
    # The search index followed the rows: consistent, and finds the clean title.
    conn.execute("INSERT INTO entries_fts(entries_fts) VALUES ('integrity-check')")
    assert conn.execute("SELECT rowid FROM entries_fts WHERE entries_fts MATCH"
                        " '\"Noncharacters in\"'").fetchall() == [(1,)]


def test_migration_alone_cleans_rows_and_search_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    migration = _migration()
    with monkeypatch.context() as m:
        m.setattr(store, "MIGRATIONS", MIGRATIONS[:migration])
        old = Store(tmp_path / "a.db")
        old.migrate()
    at = "2026-11-21T10:00:00Z"
    old.conn.execute("INSERT INTO feeds(id, name, url, created) VALUES (1, 'f', 'http://x/', ?)",
                     (at,))
    for key in ("k\x00", "k%00"):  # the escaped form of the first is taken: left alone
        old.conn.execute(
            "INSERT INTO entries(feed_id, key, guid, title, content_html, text, published,"
            " updated, first_seen, last_seen, content_hash, extract_status)"
            " VALUES (1, ?, ?, ?, '', ?, ?, ?, ?, ?, 'h', 'skipped')",
            (key, key, "Tit\ufffele", "Body\x07 text", at, at, at, at))
    old.close()
    new = Store(tmp_path / "a.db")
    assert new.migrate() == [MIGRATIONS[migration][0], *(n for n, _ in MIGRATIONS[migration + 1:])]
    rows = new.conn.execute("SELECT key, guid, title, text FROM entries ORDER BY id").fetchall()
    assert [tuple(r) for r in rows] == [("k\x00", "k%00", "Title", "Body text"),
                                        ("k%00", "k%00", "Title", "Body text")]
    new.conn.execute("INSERT INTO entries_fts(entries_fts) VALUES ('integrity-check')")
    assert len(new.conn.execute("SELECT rowid FROM entries_fts WHERE entries_fts MATCH"
                                " '\"Title\"'").fetchall()) == 2
    new.close()


def test_corpus_feed_of_the_issue(tmp_path: Path, corpus: Path) -> None:
    """The real feed the issue quotes (insanity.industries, from feed-rs's fixtures)."""
    body = (corpus / "feeds" / "feed-rs" / "rss2__rss_2.0_relurl_1.xml").read_bytes()
    with FeedServer(feeds=0) as s:
        _cycle(tmp_path, [{"name": "insanity", "url": s.route("/relurl.xml", body=body)}])
    conn = sqlite3.connect(tmp_path / "agg.db")
    rows = conn.execute("SELECT author, content_html, summary FROM items").fetchall()
    assert rows and {r[0] for r in rows} == {"Jonas Große Sundrup"}
    for _author, content, summary in rows:
        assert clean.html_to_text(content).strip(". …") and summary.strip(". …")
    out = (tmp_path / "public" / "all.json").read_text()
    assert "stries (Jonas" not in out and '"..."' not in out
