"""Publishing: Atom (RFC 4287 schema), RSS and JSON Feed rendering, text hygiene, RFC 5005
archive pages, atomic writes, index.html and OPML."""

from __future__ import annotations

import calendar
import html
import json
import os
import re
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import feedparser
import pytest
from lxml import etree

from aggregator.errors import PublishError
from aggregator.models import (
    ArchiveLinks,
    Enclosure,
    Item,
    Outlet,
    OutputConfig,
    OutputSummary,
)
from aggregator.publish import (
    ItemFields,
    also_reported_html,
    item_fields,
    publish_output,
    render_atom,
    render_json,
    render_rss,
    summarize,
    write_atomic,
    write_index,
)

from .util import make_item

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
BASE = "https://feeds.example.org/pub/"
ATOM = "{http://www.w3.org/2005/Atom}"
FH = "{http://purl.org/syndication/history/1.0}"
CONTENT = "http://purl.org/rss/1.0/modules/content/"
RENDER = {"atom": render_atom, "rss": render_rss, "json": render_json}
OUTPUT = OutputConfig(name="caucasus", title="South Caucasus <news> & more", description="All")

# Every regional script, right-to-left text with an override, and markup-looking text.
SCRIPTS = (
    "Երևանում նոր կառավարություն | "  # Armenian
    "თბილისში მიტინგი | "  # Georgian
    "Ереван и Тбилиси | "  # Cyrillic
    "Əliyev İstanbulda, ıslahat | "  # Azerbaijani Latin
    "عاجل \u202eשלום\u202c"  # Arabic, Hebrew with right-to-left override
)
HOSTILE = (
    "<b>bold</b> <script>alert('x')</script> & ]]> \"q\" 'a' "
    "nul\x00 bell\x07 esc\x1b del\x7f c1\x85 nonchar\ufffe\uffff lone\ud800\udfff surrogates "
    "tab\there"
)
STRIPPED = "\x00\x07\x1b\x7f\x85\ufffe\uffff\ud800\udfff"


def strip_invalid(text: str) -> str:
    return "".join(c for c in text if c not in STRIPPED)


def rich_items() -> list[Item]:
    """Items exercising every optional field (and their absence)."""
    outlet_time = NOW - timedelta(hours=3)
    return [
        make_item(
            1,
            image="https://news.example/img/1.jpg",
            enclosures=(
                Enclosure("https://news.example/a.mp3", "audio/mpeg", 1234),
                Enclosure("https://news.example/b.pdf"),
            ),
            outlets=(
                Outlet("civil-ge", "Civil.ge", "https://civil.example/x", outlet_time),
                Outlet("apa", "APA <Baku>", None, outlet_time + timedelta(minutes=7)),
            ),
            story_id=9,
        ),
        make_item(
            2, author=None, categories=(), language=None, feed_language=None, summary="", url=None
        ),
        make_item(3, feed_link=None, content_html="", feed_title=""),
    ]


@pytest.fixture(scope="session")
def atom_schema() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(Path(__file__).parent / "data" / "atom.rng")))


def assert_valid_atom(schema: etree.RelaxNG, data: bytes) -> etree._Element:
    doc = etree.fromstring(data)
    assert schema.validate(doc), schema.error_log
    # RFC 4287's Schematron rules, which RELAX NG cannot express.
    for entry in doc.iter(f"{ATOM}entry"):
        assert (
            entry.find(f"{ATOM}author") is not None
            or entry.find(f"{ATOM}source/{ATOM}author") is not None
        )
        alternate = entry.find(f"{ATOM}link[@rel='alternate']")
        assert alternate is not None or entry.find(f"{ATOM}content") is not None
    return doc


def alternate_links(entry: feedparser.FeedParserDict) -> list[str]:
    # Not entry.link: feedparser falls back to the id when an entry has no link.
    return [link.href for link in entry.get("links", []) if link.rel == "alternate"]


def parsed_time(value: object) -> int:
    assert value is not None
    return calendar.timegm(value)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- Atom schema


def test_atom_schema_rejects_invalid_feeds(atom_schema: etree.RelaxNG) -> None:
    valid = (
        b'<feed xmlns="http://www.w3.org/2005/Atom"><id>urn:x</id><title>t</title>'
        b"<updated>2024-05-01T12:00:00Z</updated></feed>"
    )
    assert atom_schema.validate(etree.fromstring(valid))
    no_id = valid.replace(b"<id>urn:x</id>", b"")
    assert not atom_schema.validate(etree.fromstring(no_id))
    bad_date = valid.replace(b"2024-05-01T12:00:00Z", b"yesterday")
    assert not atom_schema.validate(etree.fromstring(bad_date))
    unknown = valid.replace(b"</feed>", b"<entry><bogus/></entry></feed>")
    assert not atom_schema.validate(etree.fromstring(unknown))
    rss = b"<rss version='2.0'><channel><title>t</title></channel></rss>"
    assert not atom_schema.validate(etree.fromstring(rss))


def test_atom_is_valid_rfc4287(atom_schema: etree.RelaxNG) -> None:
    data = render_atom(OUTPUT, rich_items(), base_url=BASE, now=NOW)
    doc = assert_valid_atom(atom_schema, data)
    assert doc.findtext(f"{ATOM}id") == BASE + "caucasus.atom"
    assert doc.find(f"{ATOM}link[@rel='self']").get("href") == BASE + "caucasus.atom"
    assert doc.find(f"{ATOM}link[@rel='alternate']").get("href") == BASE
    assert doc.findtext(f"{ATOM}generator") == "aggregator"
    # Feed updated: the newest item's, not the clock's.
    assert doc.findtext(f"{ATOM}updated") == "2024-04-27T11:05:00Z"
    entries = doc.findall(f"{ATOM}entry")
    assert [e.findtext(f"{ATOM}id") for e in entries] == [i.uid for i in rich_items()]
    first = entries[0]
    assert first.get("{http://www.w3.org/XML/1998/namespace}lang") == "hy"
    enclosures = first.findall(f"{ATOM}link[@rel='enclosure']")
    assert [(e.get("href"), e.get("type"), e.get("length")) for e in enclosures] == [
        ("https://news.example/a.mp3", "audio/mpeg", "1234"),
        ("https://news.example/b.pdf", None, None),
    ]
    source = first.find(f"{ATOM}source")
    assert source.findtext(f"{ATOM}id") == "https://news.example/rss"
    assert source.findtext(f"{ATOM}title") == "News.am"
    assert source.find(f"{ATOM}link[@rel='self']").get("href") == "https://news.example/rss"
    assert source.find(f"{ATOM}link[@rel='alternate']").get("href") == "https://news.example/"
    # Outlet title falls back to the feed name.
    assert entries[2].find(f"{ATOM}source").findtext(f"{ATOM}title") == "news-am"


def test_atom_archive_page_is_valid(atom_schema: etree.RelaxNG) -> None:
    links = ArchiveLinks(
        current=BASE + "caucasus.atom",
        prev_archive=BASE + "caucasus-archive-1.atom",
        next_archive=BASE + "caucasus-archive-3.atom",
        page=BASE + "caucasus-archive-2.atom",
    )
    data = render_atom(OUTPUT, rich_items(), base_url=BASE, now=NOW, archive=links)
    doc = assert_valid_atom(atom_schema, data)
    assert doc.find(f"{FH}archive") is not None
    rels = {link.get("rel"): link.get("href") for link in doc.findall(f"{ATOM}link")}
    assert rels["self"] == links.page
    assert rels["current"] == links.current
    assert rels["prev-archive"] == links.prev_archive
    assert rels["next-archive"] == links.next_archive
    assert doc.findtext(f"{ATOM}id") == links.current  # one logical feed


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", ["atom", "rss"])
def test_feedparser_round_trip(fmt: str) -> None:
    items = rich_items()
    parsed = feedparser.parse(RENDER[fmt](OUTPUT, items, base_url=BASE, now=NOW))
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.version == {"atom": "atom10", "rss": "rss20"}[fmt]
    assert parsed.feed.title == OUTPUT.title
    assert parsed.feed.link == BASE
    self_links = [link.href for link in parsed.feed.links if link.rel == "self"]
    assert self_links == [f"{BASE}caucasus.{fmt}"]
    assert len(parsed.entries) == len(items)
    for item, entry in zip(items, parsed.entries, strict=True):
        assert entry.id == item.uid
        assert entry.title == item.title
        assert alternate_links(entry) == ([item.url] if item.url else [])
        assert parsed_time(entry.published_parsed) == int(item.published.timestamp())
        assert parsed_time(entry.updated_parsed) == int(item.updated.timestamp())
        assert [t.term for t in entry.get("tags", [])] == list(item.categories)
        assert entry.get("author") == item.author
        content = entry.content[0].value
        if item.content_html:
            assert content.startswith(item.content_html)
        else:
            assert item.summary in content or content == ""
        if item.summary:
            assert item.summary in entry.summary
        source = entry.source
        assert source.get("title") == (item.feed_title or item.feed_name)
        key = "href" if fmt == "rss" else "id"
        assert source.get(key) == item.feed_url
    first = parsed.entries[0]
    assert first.enclosures[0].href == "https://news.example/a.mp3"
    assert first.enclosures[0].type == "audio/mpeg"
    assert first.media_thumbnail[0]["url"] == "https://news.example/img/1.jpg"
    content = first.content[0].value
    assert "Also reported by: " in content
    assert '<a href="https://civil.example/x">Civil.ge</a> (2024-05-01 09:00 UTC)' in content
    assert "APA &lt;Baku&gt; (2024-05-01 09:07 UTC)" in content


def test_rss_content_is_escaped_text_and_dates_rfc822() -> None:
    data = render_rss(OUTPUT, rich_items(), base_url=BASE, now=NOW)
    doc = etree.fromstring(data)
    item = doc.find("channel/item")
    encoded = item.find("{http://purl.org/rss/1.0/modules/content/}encoded")
    assert len(encoded) == 0 and encoded.text.startswith("<p>Body of story 1.</p>")
    description = item.find("description")
    assert len(description) == 0 and description.text == "<p>Summary 1</p>"
    assert item.findtext("pubDate") == "Sat, 27 Apr 2024 09:00:00 GMT"
    assert item.find("guid").get("isPermaLink") == "false"
    assert item.find("source").get("url") == "https://news.example/rss"
    # RSS allows one enclosure, with length and type.
    enclosures = item.findall("enclosure")
    assert [(e.get("url"), e.get("length"), e.get("type")) for e in enclosures] == [
        ("https://news.example/a.mp3", "1234", "audio/mpeg")
    ]
    assert doc.findtext("channel/lastBuildDate") == "Sat, 27 Apr 2024 11:05:00 GMT"


def test_json_feed() -> None:
    items = rich_items()
    data = render_json(OUTPUT, items, base_url=BASE, now=NOW)
    feed = json.loads(data.decode("utf-8"))
    # JSON Feed 1.1 required fields and types.
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert feed["title"] == OUTPUT.title
    assert feed["feed_url"] == BASE + "caucasus.json"
    assert feed["home_page_url"] == BASE
    assert isinstance(feed["items"], list) and len(feed["items"]) == 3
    for key in feed:
        assert key in {
            "version",
            "title",
            "home_page_url",
            "feed_url",
            "description",
            "items",
            "next_url",
            "icon",
            "favicon",
            "authors",
            "language",
            "expired",
            "hubs",
        } or key.startswith("_")
    for item, entry in zip(items, feed["items"], strict=True):
        assert isinstance(entry["id"], str) and entry["id"] == item.uid
        assert isinstance(entry.get("content_html") or entry.get("content_text"), str)
        assert entry["title"] == item.title
        assert entry.get("url") == item.url
        assert datetime.fromisoformat(entry["date_published"]) == item.published
        assert datetime.fromisoformat(entry["date_modified"]) == item.updated
        for author in entry.get("authors", []):
            assert isinstance(author["name"], str) and author["name"]
        for attachment in entry.get("attachments", []):
            assert attachment["url"].startswith("https://") and "/" in attachment["mime_type"]
        assert entry["_source"]["id"] == item.feed_name
        assert entry["_source"]["feed_url"] == item.feed_url
        assert entry.get("tags", []) == list(item.categories)
    first, second, third = feed["items"]
    assert first["authors"] == [{"name": "Author 1"}]
    assert "authors" not in second  # no author: the outlet is the source, not the author
    assert first["image"] == "https://news.example/img/1.jpg"
    assert first["attachments"][0] == {
        "url": "https://news.example/a.mp3",
        "mime_type": "audio/mpeg",
        "size_in_bytes": 1234,
    }
    assert first["attachments"][1]["mime_type"] == "application/pdf"  # guessed
    assert first["language"] == "hy" and "language" not in second
    assert third["language"] == "hy"  # the feed's language when the item has none
    assert "Also reported by" in first["content_html"]
    assert third["content_html"] == "<p>Summary 3</p>"  # no content: the summary


# --------------------------------------------------------------------------- hygiene


@pytest.mark.parametrize("fmt", ["atom", "rss", "json"])
def test_hostile_and_multiscript_text(fmt: str, atom_schema: etree.RelaxNG) -> None:
    title = f"{SCRIPTS} {HOSTILE}"
    # Content is sanitised HTML upstream; its text may still hold anything but markup.
    content = f"<p>{SCRIPTS}</p><p>{html.escape(HOSTILE)}</p>"
    item = make_item(
        1,
        title=title,
        content_html=content,
        summary=HOSTILE,
        author="Ани\x00 <Петросян>",
        categories=("Политика\x07", "ქართული"),
        outlets=(Outlet("x", "<i>Ə</i>\x01", "javascript:alert(1)", NOW),),
    )
    output = replace(OUTPUT, title=f"Feed {HOSTILE}", description=SCRIPTS)
    data = RENDER[fmt](output, [item], base_url=BASE, now=NOW)
    text = data.decode("utf-8")  # strict: no lone surrogates made it through
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]", text)
    if fmt == "json":
        entry = json.loads(text)["items"][0]
        assert entry["title"] == strip_invalid(title)
        assert entry["content_html"].startswith(strip_invalid(content))
        assert "javascript:" not in entry["content_html"]
        return
    doc = etree.fromstring(data)  # well-formed
    assert not list(doc.iter("script", "{*}script", "b", "{*}b"))  # markup stayed text
    if fmt == "atom":
        assert_valid_atom(atom_schema, data)
    parsed = feedparser.parse(data)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    entry = parsed.entries[0]
    assert entry.title == strip_invalid(title)
    assert parsed.feed.title == strip_invalid(output.title)
    assert entry.author == "Ани <Петросян>"
    assert [t.term for t in entry.tags] == ["Политика", "ქართული"]
    published_content = entry.content[0].value
    for script in SCRIPTS.split(" | "):
        assert script in published_content
    assert "javascript:" not in published_content
    assert "&lt;i&gt;Ə&lt;/i&gt;" in published_content  # outlet title escaped, not linked


def test_content_html_is_escaped_never_raw() -> None:
    content = "<p>a</p><script>alert(1)</script></content>]]><![CDATA[x]]></description>"
    item = make_item(1, content_html=content, summary="")
    atom = etree.fromstring(render_atom(OUTPUT, [item], base_url=BASE, now=NOW))
    element = atom.find(f"{ATOM}entry/{ATOM}content")
    assert element.get("type") == "html" and len(element) == 0 and element.text == content
    rss = etree.fromstring(render_rss(OUTPUT, [item], base_url=BASE, now=NOW))
    for name in ("description", "{http://purl.org/rss/1.0/modules/content/}encoded"):
        element = rss.find(f"channel/item/{name}")
        assert len(element) == 0 and element.text == content
    entry = json.loads(render_json(OUTPUT, [item], base_url=BASE, now=NOW))["items"][0]
    assert entry["content_html"] == content


def test_unsafe_and_missing_links_are_dropped() -> None:
    item = make_item(
        1,
        url="javascript:alert(1)",
        image="data:image/png;base64,AAAA",
        feed_link="vbscript:x",
        enclosures=(Enclosure("file:///etc/passwd", "text/plain"),),
    )
    for fmt, render in RENDER.items():
        data = render(OUTPUT, [item], base_url=BASE, now=NOW).decode()
        for bad in ("javascript:", "data:image", "vbscript:", "file:///"):
            assert bad not in data, (fmt, bad)


def test_also_reported_by_block() -> None:
    t = datetime(2024, 5, 1, 9, 30, 59, tzinfo=UTC)
    block = also_reported_html(
        [
            Outlet("a", "A & B", 'https://a.example/?x=1&y="2"', t),
            Outlet("b", "<script>x</script>", "ftp://b.example/", t + timedelta(hours=1)),
            Outlet("c", "  ", "http://c.example/", t),
        ]
    )
    assert block == (
        '<p>Also reported by: <a href="https://a.example/?x=1&amp;y=&quot;2&quot;">A &amp; B</a>'
        " (2024-05-01 09:30 UTC), &lt;script&gt;x&lt;/script&gt; (2024-05-01 10:30 UTC), "
        '<a href="http://c.example/">c</a> (2024-05-01 09:30 UTC)</p>'
    )
    assert also_reported_html([]) == ""
    # An outlet whose entry has no date: no made-up time.
    assert also_reported_html([Outlet("d", "D", None, None)]) == "<p>Also reported by: D</p>"


# --------------------------------------------------------------------------- write_atomic


def test_write_atomic(tmp_path: Path) -> None:
    path = tmp_path / "feed.atom"
    assert write_atomic(path, b"one", mtime=1_700_000_000) is True
    assert path.read_bytes() == b"one"
    assert path.stat().st_mtime == 1_700_000_000
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    # Unchanged bytes: nothing written, mtime untouched.
    assert write_atomic(path, b"one", mtime=1_800_000_000) is False
    assert path.stat().st_mtime == 1_700_000_000
    inode = path.stat().st_ino
    assert write_atomic(path, b"two") is True
    assert path.read_bytes() == b"two"
    assert path.stat().st_ino != inode  # replaced by rename, not rewritten in place
    assert write_atomic(path, b"tw") is True  # same prefix, different size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feed.atom"]  # no temp files left


def test_write_atomic_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "dir-not-file"
    target.mkdir()
    (target / "x").write_text("keep")  # os.replace cannot replace a non-empty directory
    with pytest.raises(OSError):
        write_atomic(target, b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir-not-file"]


# --------------------------------------------------------------------------- archives


def links_of(path: Path) -> dict[str, str]:
    doc = etree.parse(str(path)).getroot()
    return {link.get("rel"): link.get("href") for link in doc.findall(f"{ATOM}link")}


def ids_of(path: Path) -> list[str]:
    doc = etree.parse(str(path)).getroot()
    return [e.findtext(f"{ATOM}id") for e in doc.findall(f"{ATOM}entry")]


def snapshot(out: Path) -> dict[str, tuple[bytes, float]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime) for p in sorted(out.iterdir())}


def series(count: int) -> list[Item]:
    return [make_item(n) for n in range(1, count + 1)]


def test_archive_pages_and_links(tmp_path: Path, atom_schema: etree.RelaxNG) -> None:
    output = replace(OUTPUT, limit=10)
    items = series(25)[::-1]  # any order in
    written = publish_output(output, items, tmp_path, base_url=BASE, now=NOW)
    names = {p.name for p in written}
    assert names == {
        f"caucasus{suffix}.{fmt}"
        for suffix in ("", "-archive-1", "-archive-2")
        for fmt in ("atom", "rss", "json")
    }
    assert {p.name for p in tmp_path.iterdir()} == names | {".caucasus.archive.json"}
    current, page1, page2 = (
        tmp_path / f"caucasus{s}.atom" for s in ("", "-archive-1", "-archive-2")
    )
    uid = "tag:aggregator,2024:news-am/{}".format
    assert ids_of(current) == [uid(n) for n in range(25, 15, -1)]  # newest 10, newest first
    assert ids_of(page1) == [uid(n) for n in range(10, 0, -1)]  # the OLDEST 10
    assert ids_of(page2) == [uid(n) for n in range(15, 10, -1)]  # the partial, newest page
    for path in (current, page1, page2):
        assert_valid_atom(atom_schema, path.read_bytes())
    assert links_of(current) == {
        "self": BASE + "caucasus.atom",
        "alternate": BASE,
        "prev-archive": BASE + "caucasus-archive-2.atom",
    }
    assert links_of(page2) == {
        "self": BASE + "caucasus-archive-2.atom",
        "alternate": BASE,
        "current": BASE + "caucasus.atom",
        "prev-archive": BASE + "caucasus-archive-1.atom",
    }
    assert links_of(page1) == {
        "self": BASE + "caucasus-archive-1.atom",
        "alternate": BASE,
        "current": BASE + "caucasus.atom",
        "next-archive": BASE + "caucasus-archive-2.atom",
    }
    assert etree.parse(str(current)).getroot().find(f"{FH}archive") is None
    assert etree.parse(str(page1)).getroot().find(f"{FH}archive") is not None
    # RSS carries the same links as atom:link; JSON Feed pages to older items by next_url.
    rss = etree.parse(str(tmp_path / "caucasus-archive-2.rss")).getroot()
    rss_links = {a.get("rel"): a.get("href") for a in rss.findall(f"channel/{ATOM}link")}
    assert rss_links["prev-archive"] == BASE + "caucasus-archive-1.rss"
    assert rss_links["current"] == BASE + "caucasus.rss"
    assert rss.find(f"channel/{FH}archive") is not None
    assert feedparser.parse((tmp_path / "caucasus-archive-2.rss").read_bytes()).bozo == 0
    current_json = json.loads((tmp_path / "caucasus.json").read_bytes())
    assert current_json["next_url"] == BASE + "caucasus-archive-2.json"
    page2_json = json.loads((tmp_path / "caucasus-archive-2.json").read_bytes())
    assert page2_json["next_url"] == BASE + "caucasus-archive-1.json"
    assert page2_json["_archive"]["current"] == BASE + "caucasus.json"
    assert page2_json["_archive"]["archive"] is True
    assert "next_url" not in json.loads((tmp_path / "caucasus-archive-1.json").read_bytes())


def test_archive_pages_are_stable_across_republish(tmp_path: Path) -> None:
    output = replace(OUTPUT, limit=10, formats=("atom", "json"))
    publish_output(output, series(25), tmp_path, base_url=BASE, now=NOW)
    before = snapshot(tmp_path)
    # Nothing new: nothing written, nothing touched.
    assert publish_output(output, series(25), tmp_path, base_url=BASE, now=NOW) == []
    assert snapshot(tmp_path) == before
    # One new item: the current feed and the partial newest page change, page 1 does not.
    written = publish_output(output, series(26), tmp_path, base_url=BASE, now=NOW)
    assert sorted(p.name for p in written) == [
        "caucasus-archive-2.atom",
        "caucasus-archive-2.json",
        "caucasus.atom",
        "caucasus.json",
    ]
    after = snapshot(tmp_path)
    assert after["caucasus-archive-1.atom"] == before["caucasus-archive-1.atom"]
    assert len(ids_of(tmp_path / "caucasus-archive-2.atom")) == 6
    # Filling page 2 and starting page 3: page 1 still untouched.
    written = publish_output(output, series(31), tmp_path, base_url=BASE, now=NOW)
    assert "caucasus-archive-1.atom" not in {p.name for p in written}
    assert snapshot(tmp_path)["caucasus-archive-1.atom"] == before["caucasus-archive-1.atom"]
    assert links_of(tmp_path / "caucasus-archive-2.atom")["next-archive"] == (
        BASE + "caucasus-archive-3.atom"
    )
    assert ids_of(tmp_path / "caucasus-archive-3.atom") == ["tag:aggregator,2024:news-am/21"]


def test_archive_pages_stable_when_given_only_the_newest_items(tmp_path: Path) -> None:
    """The pipeline passes a window of the newest items: pages must not shift with it."""
    output = replace(OUTPUT, limit=5, formats=("atom",))
    window = 5 * 4  # the current feed and three pages

    def publish(count: int) -> set[str]:
        items = series(count)[-window:]
        return {p.name for p in publish_output(output, items, tmp_path, base_url=BASE, now=NOW)}

    publish(20)  # pages 1-3: items 1-5, 6-10, 11-15
    assert ids_of(tmp_path / "caucasus-archive-3.atom")[-1] == "tag:aggregator,2024:news-am/11"
    # Item 1 leaves the window: page 1 is cut short, so it is left out, not shrunk.
    assert publish(21) == {
        "caucasus.atom",
        "caucasus-archive-2.atom",  # lost its prev-archive link
        "caucasus-archive-3.atom",  # gained a next-archive link
        "caucasus-archive-4.atom",  # new: item 16
    }
    assert not (tmp_path / "caucasus-archive-1.atom").exists()
    settled = snapshot(tmp_path)
    for count in (22, 23, 24):
        assert publish(count) == {"caucasus.atom", "caucasus-archive-4.atom"}
        now = snapshot(tmp_path)
        for page in ("caucasus-archive-2.atom", "caucasus-archive-3.atom"):
            assert now[page] == settled[page]
    uid = "tag:aggregator,2024:news-am/{}".format
    assert ids_of(tmp_path / "caucasus-archive-2.atom") == [uid(n) for n in range(10, 5, -1)]
    assert ids_of(tmp_path / "caucasus-archive-4.atom") == [uid(n) for n in range(19, 15, -1)]


def test_late_item_joins_its_sealed_page(tmp_path: Path) -> None:
    output = replace(OUTPUT, limit=10, formats=("atom",))
    items = series(25)
    publish_output(output, items, tmp_path, base_url=BASE, now=NOW)
    before = snapshot(tmp_path)
    late = make_item(99, published=items[2].published + timedelta(minutes=30))  # 3 < it < 4
    written = publish_output(output, [*items, late], tmp_path, base_url=BASE, now=NOW)
    assert [p.name for p in written] == ["caucasus-archive-1.atom"]
    assert late.uid in ids_of(tmp_path / "caucasus-archive-1.atom")
    assert len(ids_of(tmp_path / "caucasus-archive-1.atom")) == 11
    assert snapshot(tmp_path)["caucasus-archive-2.atom"] == before["caucasus-archive-2.atom"]
    # The seal now counts 11 items: a window cutting item 1 leaves the page out.
    publish_output(output, [*items[1:], late], tmp_path, base_url=BASE, now=NOW)
    assert not (tmp_path / "caucasus-archive-1.atom").exists()
    assert "prev-archive" not in links_of(tmp_path / "caucasus-archive-2.atom")


def test_paging_restarts_on_limit_change_or_bad_manifest(tmp_path: Path) -> None:
    output = replace(OUTPUT, limit=10, formats=("json",))
    publish_output(output, series(25), tmp_path, base_url=BASE, now=NOW)
    publish_output(replace(output, limit=5), series(25), tmp_path, base_url=BASE, now=NOW)
    names = sorted(p.name for p in tmp_path.glob("caucasus*"))
    assert names == [f"caucasus-archive-{n}.json" for n in (1, 2, 3, 4)] + ["caucasus.json"]
    first = json.loads((tmp_path / "caucasus-archive-1.json").read_bytes())
    assert [i["id"] for i in first["items"]][-1] == "tag:aggregator,2024:news-am/1"
    (tmp_path / ".caucasus.archive.json").write_text('{"version": 1, "size": 5, "pages": [7]}')
    publish_output(replace(output, limit=5), series(25), tmp_path, base_url=BASE, now=NOW)
    assert json.loads((tmp_path / "caucasus-archive-1.json").read_bytes()) == first


def test_archive_page_limit_and_stale_files(tmp_path: Path) -> None:
    output = replace(OUTPUT, limit=5)
    publish_output(output, series(25), tmp_path, base_url=BASE, now=NOW)  # pages 1-4
    assert (tmp_path / "caucasus-archive-1.rss").exists()
    unrelated = ["caucasus-extra.atom", "other.atom", "index.html", "caucasus-archive-x.atom"]
    for name in unrelated:
        (tmp_path / name).write_text("keep")
    publish_output(output, series(25), tmp_path, base_url=BASE, now=NOW, archive_pages=2)
    assert not any(tmp_path.glob("caucasus-archive-[12].*"))
    assert (tmp_path / "caucasus-archive-4.json").exists()
    assert links_of(tmp_path / "caucasus-archive-3.atom").get("prev-archive") is None
    assert ids_of(tmp_path / "caucasus-archive-3.atom")[0] == "tag:aggregator,2024:news-am/15"
    # Formats dropped from the output lose their files; other files stay.
    publish_output(
        replace(output, formats=("atom",)),
        series(25),
        tmp_path,
        base_url=BASE,
        now=NOW,
        archive_pages=0,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".caucasus.archive.json", "caucasus.atom", *unrelated]
    )
    assert "prev-archive" not in links_of(tmp_path / "caucasus.atom")


def test_mtime_follows_newest_item(tmp_path: Path) -> None:
    output = replace(OUTPUT, limit=10, formats=("atom", "rss"))
    items = series(15)
    publish_output(output, items, tmp_path, base_url=BASE, now=NOW)
    newest = items[-1].updated.timestamp()
    assert (tmp_path / "caucasus.atom").stat().st_mtime == newest
    assert (tmp_path / "caucasus.rss").stat().st_mtime == newest
    assert (tmp_path / "caucasus-archive-1.atom").stat().st_mtime == items[4].updated.timestamp()
    # A newer item moves it forward.
    items.append(make_item(16, updated=NOW))
    publish_output(output, items, tmp_path, base_url=BASE, now=NOW)
    assert (tmp_path / "caucasus.atom").stat().st_mtime == NOW.timestamp()


def test_changed_bytes_without_newer_item_still_advance_mtime(tmp_path: Path) -> None:
    output = replace(OUTPUT, formats=("atom",))
    items = series(3)
    publish_output(output, items, tmp_path, base_url=BASE, now=NOW)
    first = (tmp_path / "caucasus.atom").stat().st_mtime
    later = NOW + timedelta(hours=1)
    items[0] = replace(items[0], title="Corrected title")  # same updated
    assert publish_output(output, items, tmp_path, base_url=BASE, now=later)
    assert (tmp_path / "caucasus.atom").stat().st_mtime == later.timestamp() > first


def test_empty_output_is_valid_and_not_rewritten(
    tmp_path: Path, atom_schema: etree.RelaxNG
) -> None:
    written = publish_output(OUTPUT, [], tmp_path, base_url=BASE, now=NOW)
    assert len(written) == 3
    assert_valid_atom(atom_schema, (tmp_path / "caucasus.atom").read_bytes())
    assert feedparser.parse((tmp_path / "caucasus.rss").read_bytes()).bozo == 0
    assert json.loads((tmp_path / "caucasus.json").read_bytes())["items"] == []
    assert (tmp_path / "caucasus.atom").stat().st_mtime == NOW.timestamp()
    assert publish_output(OUTPUT, [], tmp_path, base_url=BASE, now=NOW + timedelta(hours=2)) == []
    assert (tmp_path / "caucasus.atom").stat().st_mtime == NOW.timestamp()


def test_unknown_format_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="unknown format 'html'"):
        publish_output(
            replace(OUTPUT, formats=("atom", "html")), [], tmp_path, base_url=BASE, now=NOW
        )
    assert list(tmp_path.iterdir()) == []  # checked before anything is written


@pytest.mark.parametrize("name", ["news-archive-2", "../up", "a/b", ".hidden", ""])
def test_unsafe_output_names_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="cannot be published"):
        publish_output(replace(OUTPUT, name=name), [], tmp_path, base_url=BASE, now=NOW)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- index and OPML


class _HtmlCheck(HTMLParser):
    """Collects the head's elements and every start tag, in order."""

    VOID = {"meta", "link", "br", "img", "hr", "input"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.decl: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.head: list[str] = []
        self.text: list[str] = []

    def handle_decl(self, decl: str) -> None:
        self.decl.append(decl)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if self.stack and self.stack[-1] == "head":
            self.head.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag in self.VOID, tag
        self.tags.append((tag, dict(attrs)))
        if self.stack and self.stack[-1] == "head":
            self.head.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack.pop() == tag, f"misnested </{tag}>"

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_index_and_opml(tmp_path: Path) -> None:
    outputs = [
        OutputConfig(name="all", title='All <news> & "more"', description="Everything"),
        OutputConfig(name="ge", title="Georgia — საქართველო", formats=("json", "rss")),
    ]
    # "all" has three items but shows two (its limit); "ge" was not published this time.
    limited = replace(outputs[0], limit=2)
    items = [make_item(1), make_item(3, updated=NOW), make_item(2)]
    summaries = {"all": summarize(limited, items)}
    assert summaries["all"] == OutputSummary(items=2, updated=NOW)
    write_index(outputs, tmp_path, base_url=BASE, title="Caucasus <b>wire</b>",
                summaries=summaries)
    raw = (tmp_path / "index.html").read_bytes()
    page = raw.decode("utf-8")
    assert page.startswith("<!DOCTYPE html>\n")
    check = _HtmlCheck()
    check.feed(page)
    check.close()
    assert check.stack == []  # every element closed
    assert check.tags[0] == ("html", {"lang": "en"})
    assert check.head[0] == "meta" and check.tags[2][1] == {"charset": "utf-8"}
    assert set(check.head) <= {"meta", "title", "link", "style"}
    assert check.head.count("title") == 1
    assert "<b>" not in page and "Caucasus &lt;b&gt;wire&lt;/b&gt;" in page
    alternates = [a for t, a in check.tags if t == "link" and a.get("rel") == "alternate"]
    assert [(a["type"], a["href"]) for a in alternates] == [
        ("application/atom+xml", BASE + "all.atom"),
        ("application/rss+xml", BASE + "all.rss"),
        ("application/feed+json", BASE + "all.json"),
        ("application/feed+json", BASE + "ge.json"),
        ("application/rss+xml", BASE + "ge.rss"),
    ]
    assert alternates[0]["title"] == 'All <news> & "more" (Atom)'
    anchors = [a["href"] for t, a in check.tags if t == "a"]
    assert anchors == [a["href"] for a in alternates] + [BASE + "outputs.opml", "status"]
    # Each output's item count and last update, where it was published.
    lines = re.findall(r"<li>.*?</li>", page)
    assert lines[0].endswith('<small>2 items, updated <time datetime="2024-05-01T12:00:00Z">'
                             "2024-05-01 12:00 UTC</time></small></li>")
    assert "<small>" not in lines[1]
    etree.fromstring(raw.split(b"\n", 1)[1])  # polyglot: also well-formed XML

    opml = etree.parse(str(tmp_path / "outputs.opml")).getroot()
    assert opml.tag == "opml" and opml.get("version") == "2.0"
    assert opml.findtext("head/title") == "Caucasus <b>wire</b>"
    outlines = opml.findall("body/outline")
    assert [(o.get("text"), o.get("type"), o.get("xmlUrl")) for o in outlines] == [
        ('All <news> & "more"', "rss", BASE + "all.atom"),
        ("Georgia — საქართველო", "rss", BASE + "ge.rss"),
    ]
    assert outlines[0].get("htmlUrl") == BASE
    # Unchanged: not rewritten.
    mtime = os.stat(tmp_path / "index.html").st_mtime_ns
    os.utime(tmp_path / "index.html", ns=(mtime - 10**9, mtime - 10**9))
    write_index(outputs, tmp_path, base_url=BASE, title="Caucasus <b>wire</b>",
                summaries=summaries)
    assert os.stat(tmp_path / "index.html").st_mtime_ns == mtime - 10**9


# --------------------------------------------------------------------------- real feeds


def test_real_feeds_republished(corpus: Path, atom_schema: etree.RelaxNG, tmp_path: Path) -> None:
    """Entries of four Ukrainian feeds (one in windows-1251) survive every format."""
    items: list[Item] = []
    for path in sorted((corpus / "feeds" / "ua-2020").glob("*.xml")):
        source = feedparser.parse(path.read_bytes())
        for n, e in enumerate(source.entries):
            stamp = e.get("published_parsed")
            when = datetime.fromtimestamp(calendar.timegm(stamp), UTC) if stamp else NOW
            items.append(
                make_item(
                    len(items),
                    uid=f"tag:test,2020:{path.stem}/{n}",
                    feed_name=path.stem,
                    feed_title=source.feed.get("title", path.stem),
                    title=e.get("title", ""),
                    url=e.get("link"),
                    published=when,
                    updated=when,
                    content_html=e.get("summary", ""),
                    summary="",
                    categories=tuple(t.term for t in e.get("tags", []) if t.term),
                    language=source.feed.get("language"),
                )
            )
    assert len(items) > 50
    output = replace(OUTPUT, limit=len(items))
    publish_output(output, items, tmp_path, base_url=BASE, now=NOW)
    atom = (tmp_path / "caucasus.atom").read_bytes()
    assert_valid_atom(atom_schema, atom)
    expected = {i.uid: i for i in items}
    for fmt in ("atom", "rss"):
        parsed = feedparser.parse((tmp_path / f"caucasus.{fmt}").read_bytes())
        assert parsed.bozo == 0, parsed.get("bozo_exception")
        assert len(parsed.entries) == len(items)
        for entry in parsed.entries:
            item = expected[entry.id]
            assert entry.title == item.title
            # Relative links (one feed has them) are dropped, never published as is.
            absolute = item.url and item.url.startswith(("http://", "https://"))
            assert alternate_links(entry) == ([item.url] if absolute else [])
    feed = json.loads((tmp_path / "caucasus.json").read_bytes())
    assert {e["id"]: e["title"] for e in feed["items"]} == {u: i.title for u, i in expected.items()}


# --------------------------------------------------------------------------- one rule per field


def agreement_items() -> list[Item]:
    """Items that differ in every field the formats must agree on."""
    return [
        make_item(1, outlets=(Outlet("civil-ge", "Civil.ge", "https://civil.example/x",
                                     NOW - timedelta(hours=3)),)),
        make_item(2, author=None, summary=""),  # no author, no summary
        make_item(3, content_html="", summary=""),  # no body at all, a link
        make_item(4, published=None),  # undated
        make_item(5, content_html="", summary="", url=None, author=" "),  # nothing but a title
        make_item(6, content_html="", summary="A summary only"),
        make_item(7, updated=NOW - timedelta(days=30)),  # updated before published: published
        translated_story(0),  # versions in other languages: translation links
    ]


def translated_story(n: int) -> Item:
    """Story ``n`` represented by its English version, with versions in Russian (two: the
    fuller one is linked), Georgian (tagged ka-GE) and one of unknown language."""
    en = make_item(n, feed_name="civil-ge", feed_title="Civil.ge", language="en",
                   title=f"Story {n} in English", url=f"https://civil.example/en/{n}",
                   word_count=300)
    ru_short = make_item(n + 100, feed_name="civil-ge-ru", language="ru", word_count=40,
                         title=f"Сюжет {n} (кратко)", url=f"https://civil.example/ru/{n}-short",
                         published=en.published + timedelta(minutes=5))
    ru = make_item(n + 200, feed_name="civil-ge-ru", language="ru", word_count=280,
                   title=f"Сюжет {n}", url=f"https://civil.example/ru/{n}",
                   published=en.published + timedelta(minutes=30))
    ka = make_item(n + 300, feed_name="civil-ge-ka", language="ka-GE", feed_language="ka",
                   title=f"ამბავი {n} & <მეტი>", url=f"https://civil.example/ka/{n}",
                   published=en.published + timedelta(hours=1))
    unknown = make_item(n + 400, feed_name="misc", language=None, feed_language=None,
                        url=f"https://misc.example/{n}",
                        published=en.published + timedelta(hours=2))
    members = (en, ru_short, ru, ka, unknown)
    return replace(en, members=members, story_id=n, outlets=tuple(
        Outlet(m.feed_name, m.feed_title, m.url, m.published) for m in members[1:]))


def _text(value: str | None) -> str | None:
    """Markup-free, whitespace-collapsed text; None for nothing."""
    if not value:
        return None
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", value)).split())
    return text or None


def _when(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    return datetime.fromtimestamp(calendar.timegm(value), UTC)  # type: ignore[arg-type]


def _fields_read_back(fmt: str, data: bytes) -> list[dict[str, object]]:
    """What a reader gets from each entry: feedparser for Atom and RSS, the JSON itself for
    JSON Feed (feedparser does not read it)."""
    out: list[dict[str, object]] = []
    if fmt == "json":
        for i in json.loads(data)["items"]:
            authors = i.get("authors") or []
            out.append(dict(
                title=i["title"], link=i.get("url"),
                author=authors[0]["name"] if authors else None,
                content=_text(i.get("content_html") or i.get("content_text")),
                summary=_text(i.get("summary") or i.get("content_html") or i.get("content_text")),
                published=_when(i.get("date_published")), updated=_when(i["date_modified"]),
                translations=[(t["language"], t["url"], t["title"])
                              for t in i.get("_translations", [])],
            ))
        return out
    parsed = feedparser.parse(data)
    assert not parsed.bozo, parsed.get("bozo_exception")
    for e in parsed.entries:
        content = _text(e.content[0].value) if e.get("content") else None
        if fmt == "rss" and content is None:
            content = _text(e.get("summary"))  # no content:encoded: the description is all
        link = e.get("link")
        out.append(dict(
            title=e.title, link=link if link and link.startswith("http") else None,
            author=e.get("author"), content=content,
            # feedparser shows the content where there is no summary (Atom), as RSS does
            summary=_text(e.get("summary")),
            published=_when(e.get("published_parsed")), updated=_when(e.get("updated_parsed")),
            translations=[(ln.hreflang, ln.href, ln.get("title")) for ln in e.get("links", [])
                          if ln.rel == "alternate" and ln.get("hreflang") and ln.href != link],
        ))
    return out


def _expected(f: ItemFields) -> dict[str, object]:
    content = _text(f.content_html) or _text(f.content_text)
    return dict(
        title=f.title, link=f.link, author=f.author, content=content,
        summary=_text(f.summary) or content,  # what a reader lists: the summary, else content
        published=f.published, updated=f.updated,
        translations=[(t.language, t.url, t.title) for t in f.translations],
    )


def test_item_fields_one_rule_per_field() -> None:
    one, two, three, four, five, six, seven, eight = (item_fields(i) for i in agreement_items())
    assert one.author == "Author 1" and two.author is None and five.author is None
    assert one.content_html is not None and "Also reported by" in one.content_html
    assert three.content_html is None and three.content_text is None  # the link suffices
    assert five.content_html is None and five.content_text == "Story 5"  # no link: title
    assert six.content_html == "<p>A summary only</p>" and six.summary == "A summary only"
    assert four.published is None and four.updated == make_item(4).updated
    assert seven.updated == seven.published == make_item(7).published
    assert one.translations == () and one.content_html is not None
    assert "Also in" not in one.content_html
    # One link per other language: the fuller early Russian version, Georgian by its
    # primary subtag; the version of unknown language is no translation (it is an outlet).
    assert [(t.language, t.url) for t in eight.translations] == [
        ("ru", "https://civil.example/ru/0"), ("ka", "https://civil.example/ka/0")]
    assert eight.translations[1].title == "ამბავი 0 & <მეტი>"
    assert eight.content_html is not None and "Also in:" in eight.content_html
    assert 'hreflang="ka"' in eight.content_html
    # Outlets not linked as a translation stay under "Also reported by"; linked ones are
    # named once, under "Also in", with their outlet.
    reported = re.search(r"Also reported by: (.*?)</p>", eight.content_html)
    assert reported is not None
    assert re.findall(r'href="([^"]+)"', reported.group(1)) == [
        "https://civil.example/ru/0-short", "https://misc.example/0"]
    assert "</a> (ru, News.am), " in eight.content_html


@pytest.mark.parametrize("fmt", ["atom", "rss", "json"])
def test_three_formats_agree_field_by_field(fmt: str) -> None:
    items = agreement_items()
    data = RENDER[fmt](OUTPUT, items, base_url=BASE, now=NOW)
    expected = [_expected(item_fields(i)) for i in items]
    assert _fields_read_back(fmt, data) == expected


def test_formats_leave_out_what_an_item_lacks() -> None:
    items = agreement_items()
    atom = etree.fromstring(render_atom(OUTPUT, items, base_url=BASE, now=NOW))
    entries = atom.findall(f"{ATOM}entry")
    # No blank content: left out where the alternate link stands in for it.
    assert all((c.text or "").strip() for c in atom.iter(f"{ATOM}content"))
    assert entries[2].find(f"{ATOM}content") is None
    assert entries[2].find(f"{ATOM}link[@rel='alternate']") is not None
    assert entries[4].find(f"{ATOM}content").get("type") == "text"
    assert entries[3].find(f"{ATOM}published") is None
    rss = etree.fromstring(render_rss(OUTPUT, items, base_url=BASE, now=NOW))
    rss_items = rss.findall("channel/item")
    assert rss_items[3].find("pubDate") is None
    assert rss_items[2].find("description") is None
    assert rss_items[2].find(f"{{{CONTENT}}}encoded") is None
    js = json.loads(render_json(OUTPUT, items, base_url=BASE, now=NOW))["items"]
    assert "date_published" not in js[3]
    assert "authors" not in js[1] and "authors" not in js[4]
    assert js[2]["content_html"] == "" and "content_text" not in js[2]
    # The channel's pubDate is the newest dated item's.
    assert rss.findtext("channel/pubDate") == "Sat, 27 Apr 2024 15:00:00 GMT"


def test_atom_source_carries_the_source_feeds_updated() -> None:
    fed = NOW - timedelta(days=2)
    items = [make_item(1, feed_updated=fed), make_item(2)]
    atom = etree.fromstring(render_atom(OUTPUT, items, base_url=BASE, now=NOW))
    sources = [e.find(f"{ATOM}source") for e in atom.findall(f"{ATOM}entry")]
    # RFC 4287 4.2.11: the source feed's own updated; unknown: the entry's own.
    assert [s.findtext(f"{ATOM}updated") for s in sources] == [
        "2024-04-29T12:00:00Z", "2024-04-27T10:05:00Z"]
    js = json.loads(render_json(OUTPUT, items, base_url=BASE, now=NOW))["items"]
    assert [i["_source"]["updated"] for i in js] == [
        "2024-04-29T12:00:00Z", "2024-04-27T10:05:00Z"]


def test_undated_items_sort_behind_dated_ones_in_feed_order(tmp_path: Path) -> None:
    dated = [make_item(n) for n in (1, 2)]
    undated = [make_item(n, published=None, updated=NOW) for n in (10, 11, 12)]
    out = tmp_path / "out"
    publish_output(replace(OUTPUT, limit=3), [*undated, *dated], out, base_url=BASE, now=NOW)
    # The store gives a feed's top entry the highest id: 12, 11, 10 is the feed's order.
    assert ids_of(out / "caucasus.atom") == [dated[1].uid, dated[0].uid, undated[2].uid]
    assert ids_of(out / "caucasus-archive-1.atom") == [undated[1].uid, undated[0].uid]


def test_translation_links_in_every_format(atom_schema: etree.RelaxNG) -> None:
    story = translated_story(8)
    items = [story, make_item(2)]
    atom = assert_valid_atom(atom_schema, render_atom(OUTPUT, items, base_url=BASE, now=NOW))
    entry = atom.findall(f"{ATOM}entry")[0]
    links = [(ln.get("hreflang"), ln.get("href"), ln.get("title"))
             for ln in entry.findall(f"{ATOM}link[@rel='alternate']")]
    # The item's own link first, each translation, then its own again with its language.
    assert links == [
        (None, "https://civil.example/en/8", None),
        ("ru", "https://civil.example/ru/8", "Сюжет 8"),
        ("ka", "https://civil.example/ka/8", "ამბავი 8 & <მეტი>"),
        ("en", "https://civil.example/en/8", "Story 8 in English"),
    ]
    # A single-language item carries no hreflang links.
    plain = atom.findall(f"{ATOM}entry")[1]
    assert [ln.get("hreflang") for ln in plain.findall(f"{ATOM}link")] == [None]
    # Readers that take the first alternate or (feedparser) the last find the item's own.
    parsed = feedparser.parse(render_atom(OUTPUT, items, base_url=BASE, now=NOW))
    assert parsed.entries[0].link == "https://civil.example/en/8"

    rss_data = render_rss(OUTPUT, items, base_url=BASE, now=NOW)
    rss = etree.fromstring(rss_data)
    item = rss.findall("channel/item")[0]
    assert item.findtext("link") == "https://civil.example/en/8"
    assert [(ln.get("rel"), ln.get("hreflang"), ln.get("href"))
            for ln in item.findall(f"{ATOM}link")] == [
        ("alternate", "ru", "https://civil.example/ru/8"),
        ("alternate", "ka", "https://civil.example/ka/8"),
        ("alternate", "en", "https://civil.example/en/8"),
    ]
    assert rss.findall("channel/item")[1].findall(f"{ATOM}link") == []
    assert feedparser.parse(rss_data).entries[0].link == "https://civil.example/en/8"

    js = json.loads(render_json(OUTPUT, items, base_url=BASE, now=NOW))["items"]
    assert js[0]["url"] == "https://civil.example/en/8" and js[0]["language"] == "en"
    assert js[0]["_translations"] == [
        {"language": "ru", "url": "https://civil.example/ru/8", "title": "Сюжет 8"},
        {"language": "ka", "url": "https://civil.example/ka/8", "title": "ამბავი 8 & <მეტი>"},
    ]
    assert "_translations" not in js[1]


def test_index_line_reads_as_a_sentence_whatever_the_description_ends_with(
        tmp_path: Path) -> None:
    """The bundled feeds.yaml describes `all` as "Every configured feed, one item per story."
    The index printed "... per story.: Atom | RSS": the links follow a description's own final
    punctuation, and a colon only where it has none."""
    outputs = [
        OutputConfig(name="a", title="A", description="Every feed, one item per story."),
        OutputConfig(name="b", title="B", description="Georgian news without sport"),
        OutputConfig(name="c", title="C", description="What happened today?"),
        OutputConfig(name="d", title="D", description="Formats:"),
    ]
    write_index(outputs, tmp_path, base_url=BASE, title="t")
    page = (tmp_path / "index.html").read_text("utf-8")
    text = [re.sub(r"<[^>]+>", "", line) for line in re.findall(r"<li>.*?</li>", page)]
    assert text == [
        "A \u2014 Every feed, one item per story. Atom | RSS | JSON Feed",
        "B \u2014 Georgian news without sport: Atom | RSS | JSON Feed",
        "C \u2014 What happened today? Atom | RSS | JSON Feed",
        "D \u2014 Formats: Atom | RSS | JSON Feed",
    ]
    assert ".:" not in page and "?:" not in page and "::" not in page
