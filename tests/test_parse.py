"""parse_feed and ParserPool: formats, policies, hostile input, and a pool that survives it."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.errors import ParseError
from aggregator.models import ParsedEntry, ParsedFeed
from aggregator.parse import ParserPool, parse_feed

URL = "https://news.example.org/rss/feed.xml"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def rss(items: str, channel: str = "<title>Feed</title>") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<rss version="2.0"><channel>{channel}{items}</channel></rss>'
    ).encode()


def item(inner: str) -> str:
    return f"<item>{inner}</item>"


def parse(body: bytes, **kw: object) -> ParsedFeed:
    kw.setdefault("now", NOW)
    return parse_feed(body, URL, **kw)  # type: ignore[arg-type]


def error_of(body: bytes, **kw: object) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse(body, **kw)
    return info.value


def big_feed(entries: int = 50_000) -> bytes:
    """~20 MB of RSS with ``entries`` items."""
    text = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor. " * 2
    parts = [
        f"<item><title>Entry {i}</title><link>https://news.example.org/a/{i}</link>"
        f"<guid>https://news.example.org/a/{i}</guid>"
        f"<pubDate>Mon, 28 Sep 2020 18:25:00 +0300</pubDate><description>{text}{i}</description></item>\n"
        for i in range(entries)
    ]
    return rss("".join(parts))


# --------------------------------------------------------------------------- not a feed


@pytest.mark.parametrize(
    ("body", "kind", "words"),
    [
        (b"", "empty", "empty body"),
        (b" \r\n\t \n", "empty", "only whitespace"),
        (b'<?xml version="1.0" encoding="utf-8"?>\n', "empty", "only an XML prolog"),
        (b'\xef\xbb\xbf<?xml version="1.0"?><!-- nothing -->', "empty", "only an XML prolog"),
        (
            b"<!DOCTYPE html>\n<html><head><title>News</title>"
            b'<link rel="alternate" type="application/rss+xml" href="/rss.xml"></head>'
            b"<body><p>Hello</p></body></html>",
            "not_a_feed",
            "advertises a feed at '/rss.xml'",
        ),
        (b'<html xmlns="http://www.w3.org/1999/xhtml"><body/></html>', "not_a_feed", "HTML page"),
        (b"<HTML><BODY>Moved</BODY></HTML>", "not_a_feed", "HTML page"),
        (b'{"data": [1, 2, 3]}', "not_a_feed", "not a JSON Feed"),
        (b"[1, 2, 3]", "not_a_feed", "not a JSON Feed"),
        (b"Service temporarily unavailable", "not_a_feed", "no root element"),
        (b"<note><to>Tove</to><body>Hi</body></note>", "not_a_feed", "root element <note>"),
        (
            rss(item("<title>a</title>")).replace(b"</channel></rss>", b""),
            "malformed",
            "<rss> is never closed",
        ),
        (
            b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>'
            b"<entry><title>cut he",
            "malformed",
            "<feed> is never closed",
        ),
        (
            b'{"version": "https://jsonfeed.org/version/1.1", "title": "t", "items": [{"id": "1"',
            "malformed",
            "invalid JSON",
        ),
        (b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "x">', "malformed", "never closed"),
    ],
    ids=[
        "empty",
        "whitespace",
        "xml-declaration-alone",
        "bom-and-comment",
        "html-page",
        "xhtml",
        "html-uppercase",
        "json-object",
        "json-array",
        "plain-text",
        "other-xml",
        "truncated-rss",
        "truncated-atom",
        "truncated-json-feed",
        "unterminated-doctype",
    ],
)
def test_not_a_feed(body: bytes, kind: str, words: str) -> None:
    err = error_of(body)
    assert err.kind == kind
    assert words in str(err)


def test_body_that_names_a_file_is_not_opened(tmp_path: Path) -> None:
    # feedparser.parse(bytes) would open a path or fetch a URL; we hand it a stream.
    target = tmp_path / "feed.xml"
    target.write_bytes(rss(item("<title>from disk</title><link>https://x.org/1</link>")))
    assert error_of(str(target).encode()).kind == "not_a_feed"
    assert error_of(b"http://127.0.0.1:9/feed.xml").kind == "not_a_feed"


def test_an_empty_channel_is_a_feed_without_entries() -> None:
    feed = parse(rss(""))
    assert feed.format == "rss20" and feed.title == "Feed" and feed.entries == ()


def test_small_glitch_in_a_complete_feed_is_a_warning() -> None:
    # An unescaped '&' and an HTML entity: not XML, but the feed is complete.
    feed = parse(rss(item("<title>Tom & Jerry&nbsp;return</title><link>https://x.org/1</link>")))
    assert feed.entries[0].title == "Tom & Jerry return"  # &nbsp; decoded, then collapsed
    assert any("not well-formed XML" in w for w in feed.warnings)


def test_feed_served_as_html_is_a_warning() -> None:
    feed = parse(
        rss(item("<title>x</title><link>https://x.org/1</link>")),
        content_type="text/html",
        charset="utf-8",
    )
    assert [e.title for e in feed.entries] == ["x"]
    assert any(w.startswith("content type: text/html") for w in feed.warnings), feed.warnings


def test_trailing_junk_after_the_root_is_tolerated() -> None:
    body = (
        rss(item("<title>a</title><link>https://x.org/1</link>"))
        + b"\n<!-- 0.1s -->\n<b>Notice</b>"
    )
    assert [e.title for e in parse(body).entries] == ["a"]


# --------------------------------------------------------------------------- formats


def test_rss_091_netscape_doctype() -> None:
    body = (
        b'<?xml version="1.0"?>\n<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN"'
        b' "http://my.netscape.com/publish/formats/rss-0.91.dtd">\n<rss version="0.91"><channel>'
        b"<title>Old</title><link>http://old.example.com/</link><language>en-us</language>"
        b"<item><title>One</title><link>http://old.example.com/1</link></item></channel></rss>"
    )
    feed = parse(body)
    assert feed.format == "rss091n"
    assert feed.language == "en-us"
    assert feed.entries[0].key == "http://old.example.com/1"
    assert feed.warnings == ()  # an external DOCTYPE without a subset is not hostile


def test_rss_092() -> None:
    body = b'<rss version="0.92"><channel><title>T</title><item><title>x</title><link>http://a.b/1</link></item></channel></rss>'
    assert parse(body).format == "rss092"


def test_rss_10_rdf() -> None:
    body = b"""<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/"
  xmlns:dc="http://purl.org/dc/elements/1.1/">
 <channel rdf:about="http://a.b/"><title>RDF</title><link>http://a.b/</link>
  <items><rdf:Seq><rdf:li resource="http://a.b/1"/></rdf:Seq></items></channel>
 <item rdf:about="http://a.b/1"><title>One</title><link>http://a.b/1</link>
  <dc:date>2024-04-30T10:00:00+02:00</dc:date><dc:creator>Ann</dc:creator><dc:language>hy</dc:language></item>
</rdf:RDF>"""
    feed = parse(body)
    assert feed.format == "rss10"
    e = feed.entries[0]
    assert (e.title, e.author, e.language) == ("One", "Ann", "hy")
    assert e.published == datetime(2024, 4, 30, 8, 0, tzinfo=UTC)


def test_atom_10_and_03() -> None:
    atom10 = b"""<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="ka"><title>Atom</title>
<link href="/"/><entry><id>tag:a.b,2024:1</id><title type="html">&lt;b&gt;Bold&lt;/b&gt; news</title>
<link href="/news/1"/><updated>2024-04-30T09:00:00Z</updated>
<content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>Full <em>text</em></p></div></content>
<summary>Short</summary><author><name>Nino</name></author><category term="Politics"/></entry></feed>"""
    feed = parse(atom10)
    assert feed.format == "atom10"
    assert feed.link == "https://news.example.org/"
    e = feed.entries[0]
    assert e.key == e.guid == "tag:a.b,2024:1"
    assert e.title == "Bold news"
    assert e.url == "https://news.example.org/news/1"
    assert "<em>text</em>" in (e.content_html or "")
    assert e.summary_html == "<p>Short</p>"  # Atom text is plain: escaped into HTML
    assert e.published == e.updated == datetime(2024, 4, 30, 9, 0, tzinfo=UTC)
    assert (e.author, e.categories, e.language) == ("Nino", ("Politics",), "ka")

    atom03 = b"""<feed version="0.3" xmlns="http://purl.org/atom/ns#"><title>Old Atom</title>
<entry><id>urn:x:1</id><title>Legacy</title><link rel="alternate" href="http://a.b/1"/>
<issued>2004-01-01T00:00:00Z</issued></entry></feed>"""
    feed = parse(atom03)
    assert feed.format == "atom03"
    assert feed.entries[0].published == datetime(2004, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("version", ["1", "1.1"])
def test_json_feed(version: str) -> None:
    body = f"""{{"version": "https://jsonfeed.org/version/{version}", "title": "J &amp; F",
    "home_page_url": "https://j.example.com", "language": "az",
    "items": [
      {{"id": 17, "url": "/p/17", "title": "Seventeen", "content_html": "<p>Hi</p>",
        "summary": "S <1>", "date_published": "2024-04-30T10:00:00+04:00",
        "authors": [{{"name": "Aygun"}}], "tags": ["news", "news", "baku"],
        "attachments": [{{"url": "https://j.example.com/a.mp3", "mime_type": "audio/mpeg",
                         "size_in_bytes": 123}}]}},
      {{"id": "x", "content_text": "line one\\n\\nline <two>", "date_modified": "2024-04-29T00:00:00Z",
        "author": {{"name": "Old style"}}}}
    ]}}""".encode()
    feed = parse(body, content_type="application/feed+json")
    assert feed.format == ("json11" if version == "1.1" else "json10")
    assert (feed.title, feed.link, feed.language) == ("J & F", "https://j.example.com/", "az")
    a, b = feed.entries
    assert (a.key, a.url, a.title, a.author) == (
        "17",
        "https://news.example.org/p/17",
        "Seventeen",
        "Aygun",
    )
    assert a.summary_html == "<p>S &lt;1&gt;</p>"
    assert a.published == datetime(2024, 4, 30, 6, 0, tzinfo=UTC)
    assert a.categories == ("news", "baku")
    assert a.enclosures[0].url == "https://j.example.com/a.mp3" and a.enclosures[0].length == 123
    assert b.content_html == "<p>line one</p><p>line &lt;two&gt;</p>"
    assert b.published == b.updated == datetime(2024, 4, 29, tzinfo=UTC)
    assert b.author == "Old style"


def test_feed_fields_and_ttl() -> None:
    feed = parse(
        rss(
            "",
            "<title> My  <b>Feed</b> </title><link>/home</link><language>RU_ru</language><ttl>30</ttl>",
        )
    )
    assert (feed.title, feed.link, feed.language, feed.ttl) == (
        "My Feed",
        "https://news.example.org/home",
        "ru-ru",
        1800.0,
    )
    assert parse(rss("", "<ttl>soon</ttl>")).ttl is None


# --------------------------------------------------------------------------- dates


def one(inner: str) -> ParsedEntry:
    title = "" if "<title>" in inner else "<title>t</title>"
    return parse(rss(item(f"{title}<link>https://x.org/1</link>{inner}"))).entries[0]


def test_dates_to_utc() -> None:
    e = one("<pubDate>Mon, 28 Sep 2020 18:25:00 +0300</pubDate>")
    assert e.published == datetime(2020, 9, 28, 15, 25, tzinfo=UTC)
    assert e.published.tzinfo is not None
    assert e.date_note is None


@pytest.mark.parametrize(
    ("inner", "note", "raw"),
    [
        ("", "missing", None),
        ("<pubDate>  </pubDate>", "missing", None),
        ("<pubDate>yesterday-ish</pubDate>", "unparseable", "yesterday-ish"),
        (
            "<pubDate>Wed, 01 Jan 2999 00:00:00 GMT</pubDate>",
            "future",
            "Wed, 01 Jan 2999 00:00:00 GMT",
        ),
        (
            "<pubDate>Thu, 01 Jan 1970 00:00:00 GMT</pubDate>",
            "ancient",
            "Thu, 01 Jan 1970 00:00:00 GMT",
        ),
    ],
)
def test_date_policy(inner: str, note: str, raw: str | None) -> None:
    e = one(inner)
    assert e.published is None
    assert e.date_note == note
    assert (e.published_raw or None) == raw


def test_date_a_few_hours_ahead_is_kept() -> None:
    soon = (NOW + timedelta(hours=20)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert one(f"<pubDate>{soon}</pubDate>").published == NOW + timedelta(hours=20)


def test_published_falls_back_to_sane_updated() -> None:
    e = one(
        "<pubDate>Wed, 01 Jan 2999 00:00:00 GMT</pubDate>"
        '<dc:date xmlns:dc="http://purl.org/dc/elements/1.1/">2024-04-01T10:00:00Z</dc:date>'
    )
    assert e.published == e.updated == datetime(2024, 4, 1, 10, 0, tzinfo=UTC)
    assert e.date_note is None


def test_insane_updated_is_dropped() -> None:
    e = one(
        "<pubDate>Mon, 29 Apr 2024 10:00:00 GMT</pubDate>"
        '<dc:date xmlns:dc="http://purl.org/dc/elements/1.1/">1970-01-01T00:00:00Z</dc:date>'
    )
    assert e.published == datetime(2024, 4, 29, 10, 0, tzinfo=UTC)
    assert e.updated is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Пн, 29 апр 2024 10:00:00 +0400", datetime(2024, 4, 29, 6, 0, tzinfo=UTC)),
        ("29 апреля 2024 10:00", datetime(2024, 4, 29, 10, 0, tzinfo=UTC)),
        ("29.04.2024 10:00 +0400", datetime(2024, 4, 29, 6, 0, tzinfo=UTC)),
        ("Seg, 29 Abr 2024 10:00:00 -0300", datetime(2024, 4, 29, 13, 0, tzinfo=UTC)),
        ("29 აპრილი 2024 10:00", datetime(2024, 4, 29, 10, 0, tzinfo=UTC)),
        ("Mon, Apr 29 2024 02:30:00 PM", datetime(2024, 4, 29, 14, 30, tzinfo=UTC)),
        ("Mon, 29 Apr 2024 12:30 AM +0400", datetime(2024, 4, 28, 20, 30, tzinfo=UTC)),
    ],
)
def test_localised_and_12_hour_dates(raw: str, expected: datetime) -> None:
    assert one(f"<pubDate>{raw}</pubDate>").published == expected


# --------------------------------------------------------------------------- identity


def test_duplicate_guids_first_wins() -> None:
    body = rss(
        item('<guid isPermaLink="false">a-1</guid><title>first</title>')
        + item('<guid isPermaLink="false">b-2</guid><title>other</title>')
        + item('<guid isPermaLink="false">a-1</guid><title>second</title>')
    )
    for _ in range(2):  # deterministic
        feed = parse(body)
        assert [(e.key, e.title) for e in feed.entries] == [("a-1", "first"), ("b-2", "other")]
        assert any("duplicate key" in w and "'a-1'" in w for w in feed.warnings)


def test_key_falls_back_to_link_then_content_hash() -> None:
    body = rss(
        item("<title>linked</title><link>/story/1</link>")
        + item("<title>bare</title><description>text one</description>")
        + item("<title>bare</title><description>text two</description>")
    )
    linked, bare1, bare2 = parse(body).entries
    assert linked.key == linked.url == "https://news.example.org/story/1"
    assert linked.guid is None
    assert bare1.key.startswith("sha256:") and len(bare1.key) == 7 + 64
    assert bare1.key != bare2.key
    assert parse(body).entries[1].key == bare1.key  # stable across parses


def test_max_entries_keeps_the_first_in_document_order() -> None:
    body = rss(
        "".join(item(f"<title>n{i}</title><link>https://x.org/{i}</link>") for i in range(5))
    )
    feed = parse(body, max_entries=3)
    assert [e.title for e in feed.entries] == ["n0", "n1", "n2"]
    assert any("only the first 3" in w for w in feed.warnings)


def test_empty_items_are_dropped() -> None:
    body = rss(
        item("<title></title><link></link><description></description>") + item("<title>x</title>")
    )
    feed = parse(body)
    assert [e.title for e in feed.entries] == ["x"]
    assert any("empty entr" in w for w in feed.warnings)


# --------------------------------------------------------------------------- text and links


def test_titles_authors_categories_become_plain_text() -> None:
    e = one(
        "<title>  Tom &amp;amp; Jerry &lt;b&gt;bold&lt;/b&gt;\n\t again </title>"
        "<author>desk@x.org (News &amp;amp; Desk)</author>"
        "<category>A &amp;amp; B</category><category><![CDATA[<i>C</i>]]></category><category>A &amp;amp; B</category>"
    )
    assert e.title == "Tom & Jerry bold again"
    assert e.author == "News & Desk"
    assert e.categories == ("A & B", "C")


def test_cdata_title_with_markup() -> None:
    e = one("<title><![CDATA[<b>Breaking:</b> Yerevan &amp; Tbilisi]]></title>")
    assert e.title == "Breaking: Yerevan & Tbilisi"


def test_megabyte_title_is_cut() -> None:
    words = "Ереван " * 150_000  # ~1 MB of UTF-8
    e = one(f"<title>{words}</title>")
    assert len(e.title) == 2000 or len(e.title) == 1999
    assert e.title.startswith("Ереван Ереван")


def test_summary_and_longest_content_are_raw_html() -> None:
    e = one(
        "<description>&lt;p&gt;Short &lt;script&gt;x()&lt;/script&gt;&lt;/p&gt;</description>"
        '<content:encoded xmlns:content="http://purl.org/rss/1.0/modules/content/">'
        "<![CDATA[<p>The <b>full</b> story <img src='/i.png'></p>]]></content:encoded>"
    )
    assert e.summary_html == "<p>Short <script>x()</script></p>"
    assert "<b>full</b>" in (e.content_html or "")
    assert "https://news.example.org/i.png" in (e.content_html or "")


def test_relative_urls_in_content_resolved_against_the_feed_url() -> None:
    e = one(
        '<content:encoded xmlns:content="http://purl.org/rss/1.0/modules/content/"><![CDATA['
        "<p><a href='../a/b?x=1&amp;y=2'>one</a> <img alt='src=no' src=img/p.png>"
        ' <a href="https://other.example/z">abs</a> <a href="#top">frag</a>'
        ' <a href="mailto:ed@example.org">mail</a> <A HREF="/up">caps</A>'
        ' <span data-href="/not-a-link">x</span></p>]]></content:encoded>'
    )
    html = e.content_html or ""
    assert 'href="https://news.example.org/a/b?x=1&amp;y=2"' in html
    assert 'src="https://news.example.org/rss/img/p.png"' in html
    assert "alt='src=no'" in html
    assert '"https://other.example/z"' in html and '"#top"' in html
    assert '"mailto:ed@example.org"' in html
    assert 'HREF="https://news.example.org/up"' in html
    assert 'data-href="/not-a-link"' in html


def test_links_resolved_and_unsafe_schemes_dropped() -> None:
    body = rss(
        item("<title>a</title><link>../story?id=1</link>")
        + item("<title>b</title><link>javascript:alert(1)</link>")
        + item("<title>c</title><link>HTTPS://News.Example.ORG</link>")
    )
    a, b, c = parse(body).entries
    assert a.url == "https://news.example.org/story?id=1"
    assert b.url is None
    assert c.url == "https://news.example.org/"


def test_enclosures_collected() -> None:
    e = one(
        '<enclosure url="/audio/1.mp3" type="audio/mpeg" length="1234"/>'
        '<media:content xmlns:media="http://search.yahoo.com/mrss/" url="https://cdn.x.org/p.jpg" type="image/jpeg"/>'
    )
    assert [(x.url, x.type, x.length) for x in e.enclosures] == [
        ("https://news.example.org/audio/1.mp3", "audio/mpeg", 1234),
        ("https://cdn.x.org/p.jpg", "image/jpeg", None),
    ]


def test_entry_language_falls_back_to_feed() -> None:
    feed = parse(
        rss(
            item("<title>x</title><link>https://x.org/1</link>"),
            "<title>t</title><language>hy-AM</language>",
        )
    )
    assert feed.entries[0].language == "hy-am"


# --------------------------------------------------------------------------- encodings


CYRILLIC = "Новости Южного Кавказа: Баку, Ереван, Тбилиси"


def cyr_feed(encoding: str | None) -> str:
    decl = f'<?xml version="1.0" encoding="{encoding}"?>' if encoding else '<?xml version="1.0"?>'
    return f'{decl}<rss version="2.0"><channel><title>{CYRILLIC}</title><item><title>{CYRILLIC}</title><link>https://x.org/1</link></item></channel></rss>'


@pytest.mark.parametrize(
    ("codec", "declared", "content_type", "charset"),
    [
        ("windows-1251", "windows-1251", None, None),
        ("windows-1251", None, "application/rss+xml", "windows-1251"),
        ("koi8-r", "koi8-r", None, None),
        ("koi8-r", None, "text/xml", "koi8-r"),
        ("koi8-r", None, "text/xml; charset=KOI8-R", None),  # a whole header value
        ("utf-8", None, "text/xml", None),  # text/* without charset is not us-ascii here
        ("utf-16", "utf-16", None, None),  # BOM
    ],
)
def test_legacy_encodings(
    codec: str, declared: str | None, content_type: str | None, charset: str | None
) -> None:
    feed = parse(cyr_feed(declared).encode(codec), content_type=content_type, charset=charset)
    assert feed.title == CYRILLIC
    assert feed.entries[0].title == CYRILLIC
    assert not any(w.startswith("encoding") for w in feed.warnings), feed.warnings


def test_utf8_labelled_windows_1251_by_the_server() -> None:
    feed = parse(cyr_feed("utf-8").encode("utf-8"), content_type="text/xml", charset="windows-1251")
    assert feed.title == CYRILLIC
    assert any("valid UTF-8" in w for w in feed.warnings)


def test_windows_1251_labelled_utf8_by_the_server() -> None:
    feed = parse(
        cyr_feed("windows-1251").encode("windows-1251"), content_type="text/xml", charset="utf-8"
    )
    assert feed.title == CYRILLIC
    assert any(w.startswith("encoding") for w in feed.warnings)


# --------------------------------------------------------------------------- hostile XML (in process)


def test_invalid_character_references_are_neutralised() -> None:
    body = rss(
        item(
            "<title>a&#xD800;b&#55296;c&#x110000;d&#0;e&#99999999999999999999999999;f&#x1;g&#xDFFF</title>"
            "<link>https://x.org/1</link><description>&#xD800;</description>"
        ),
        "<title>&#xDBFF;&#xDC00;</title>",
    )
    feed = parse(body)
    title = feed.entries[0].title
    assert title.replace("\ufffd", "") == "abcdefg"
    for text in (title, feed.title, feed.entries[0].summary_html):
        assert text is not None
        text.encode("utf-8")  # no lone surrogates
    pickle.loads(pickle.dumps(feed))
    assert any("invalid character reference" in w for w in feed.warnings)


def test_valid_character_references_survive() -> None:
    e = one("<title>&#1344;&#x10D0; &#x1F600; &#39;q&#39; &#9;x</title>")
    assert e.title == "Հა 😀 'q' x"


def test_entity_declarations_in_the_body_are_neutralised_but_cdata_is_kept() -> None:
    body = rss(
        item(
            "<title>t</title><link>https://x.org/1</link>"
            '<description><![CDATA[<p>XML uses <!ENTITY x "y"> declarations</p>]]></description>'
        )
        + '<!DOCTYPE x [<!ENTITY boom "BOOM">]>'
    )
    feed = parse(body)
    # feedparser's URL-resolving pass escapes the '<'; the CDATA text itself is untouched.
    assert '!ENTITY x "y"> declarations' in (feed.entries[0].summary_html or "")
    assert "BOOM" not in repr(feed)
    assert (
        "hostile XML: 2 DOCTYPE/ENTITY declaration(s) inside the document neutralised"
        in feed.warnings
    )


# --------------------------------------------------------------------------- the pool


@pytest.fixture(scope="module")
def pool() -> Iterator[ParserPool]:
    with ParserPool(2, timeout=20.0, memory_mb=256) as p:
        yield p


@pytest.fixture(scope="module")
def huge() -> bytes:
    body = big_feed()
    assert 18_000_000 < len(body) < 24_000_000
    return body


def timed(pool: ParserPool, body: bytes, **kw: object) -> tuple[ParsedFeed | ParseError, float]:
    start = time.monotonic()
    try:
        result: ParsedFeed | ParseError = pool.parse(body, URL, now=NOW, **kw)  # type: ignore[arg-type]
    except ParseError as exc:
        result = exc
    return result, time.monotonic() - start


def test_pool_result_equals_in_process(pool: ParserPool, corpus: Path) -> None:
    body = (corpus / "feeds/ua-2020/liga_rss.xml").read_bytes()
    assert pool.parse(body, URL, now=NOW) == parse_feed(body, URL, now=NOW)


def test_pool_forwards_parse_errors(pool: ParserPool) -> None:
    with pytest.raises(ParseError) as info:
        pool.parse(b"<html><body>no</body></html>", URL)
    assert info.value.kind == "not_a_feed"
    assert pool.parse(rss(item("<title>ok</title>")), URL).entries[0].title == "ok"


def test_billion_laughs_is_bounded(pool: ParserPool) -> None:
    levels = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(2, 12))
    body = (
        '<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY lol1 "lol">' + levels + "]>"
        '<rss version="2.0"><channel><title>&lol11;</title>'
        "<item><title>&lol11;</title><link>https://x.org/1</link><description>&lol11;</description></item>"
        "</channel></rss>"
    ).encode()
    # A parse that expanded the entities would end in the pool's timeout, not a ParsedFeed.
    result, _ = timed(pool, body)
    assert isinstance(result, ParsedFeed), result
    assert "lollol" not in repr(result)
    assert any("DOCTYPE internal subset removed" in w for w in result.warnings)


def test_quadratic_blowup_is_bounded(pool: ParserPool) -> None:
    body = (
        b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "' + b"A" * 200_000 + b'">]>'
        b'<rss version="2.0"><channel><title>t</title><item><title>x</title><link>https://x.org/1</link>'
        b"<description>" + b"&a;" * 50_000 + b"</description></item></channel></rss>"
    )  # expanded, this is 10 GB
    # A parse that expanded the entities would end in the pool's timeout, not a ParsedFeed.
    result, _ = timed(pool, body)
    assert isinstance(result, ParsedFeed), result
    assert "AAAA" not in (result.entries[0].summary_html or "")
    assert len(result.entries[0].summary_html or "") <= len(body)


def test_xxe_does_not_read_local_files(pool: ParserPool, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-4711")
    body = (
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY xxe SYSTEM "file://{secret}">'
        f'<!ENTITY % p SYSTEM "file://{secret}"> %p;]>'
        '<rss version="2.0"><channel><title>&xxe;</title><item><title>&xxe;</title>'
        "<link>https://x.org/1</link><description>&xxe;</description></item></channel></rss>"
    ).encode()
    result, _ = timed(pool, body)
    assert isinstance(result, ParsedFeed), result
    assert "TOP-SECRET" not in repr(result)
    in_process = parse_feed(body, URL)
    assert "TOP-SECRET" not in repr(in_process)


def test_xinclude_is_never_resolved(tmp_path: Path) -> None:
    secret = tmp_path / "inc.txt"
    secret.write_text("XINCLUDED-SECRET")
    body = (
        '<rss version="2.0" xmlns:xi="http://www.w3.org/2001/XInclude"><channel><title>t</title>'
        f'<item><title>x</title><link>https://x.org/1</link><description><xi:include href="file://{secret}" parse="text"/></description>'
        "</item></channel></rss>"
    ).encode()
    assert "XINCLUDED-SECRET" not in repr(parse(body))


def test_surrogate_refs_through_the_pool(pool: ParserPool) -> None:
    result = pool.parse(rss(item("<title>&#xD800;x</title><link>https://x.org/1</link>")), URL)
    assert result.entries[0].title == "\ufffdx"


def test_huge_feed_bounded_memory_via_pool(pool: ParserPool, huge: bytes) -> None:
    # The pool's workers are limited to 256 MB of address space: parsing must fit.
    result, _ = timed(pool, huge)  # within the pool's timeout: a ParsedFeed, not an error
    assert isinstance(result, ParsedFeed), result
    assert len(result.entries) == 2000
    assert result.entries[0].title == "Entry 0" and result.entries[-1].title == "Entry 1999"
    assert any("50000 entries; only the first 2000" in w for w in result.warnings)


def test_pool_is_thread_safe(pool: ParserPool) -> None:
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for k in range(5):
                feed = pool.parse(
                    rss(item(f"<title>t{n}-{k}</title><link>https://x.org/{n}/{k}</link>")), URL
                )
                results[n * 10 + k] = feed.entries[0].title
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert results == {n * 10 + k: f"t{n}-{k}" for n in range(6) for k in range(5)}
    assert len(pool.pids()) <= 2


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_worker_killed_mid_parse_is_replaced(huge: bytes) -> None:
    with ParserPool(1, timeout=60.0) as pool:
        pool.parse(rss(""), URL)
        (pid,) = pool.pids()
        idle = _cpu_ticks(pid)
        outcome: list[object] = []
        thread = threading.Thread(target=lambda: outcome.append(timed(pool, huge)[0]))
        thread.start()
        deadline = time.monotonic() + 30
        while _cpu_ticks(pid) < idle + 10 and time.monotonic() < deadline:  # 0.1 s of work
            time.sleep(0.005)
        os.kill(pid, signal.SIGKILL)
        thread.join(60)
        (err,) = outcome
        assert isinstance(err, ParseError) and err.kind == "crashed", err
        assert "SIGKILL" in str(err)
        assert pool.parse(rss(item("<title>after</title>")), URL).entries[0].title == "after"
        assert pool.pids() and pool.pids() != [pid]


def test_hung_worker_times_out_and_is_replaced() -> None:
    with ParserPool(1, timeout=0.5) as pool:
        pool.parse(rss(""), URL)
        (pid,) = pool.pids()
        os.kill(pid, signal.SIGSTOP)  # a worker that never answers, whatever the machine speed
        err, elapsed = timed(pool, rss(item("<title>x</title>")))
        assert isinstance(err, ParseError) and err.kind == "timeout", err
        assert elapsed > 0.4  # not before the timeout (a busy machine only adds time)
        assert pool.parse(rss(item("<title>next</title>")), URL).entries[0].title == "next"
        assert pool.pids() != [pid]


def test_memory_limit_gives_memory_error_and_pool_recovers() -> None:
    hog = rss(item("<title>hog</title><description>" + "A" * 120_000_000 + "</description>"))
    with ParserPool(1, timeout=60.0, memory_mb=100) as pool:
        err, _ = timed(pool, hog)
        assert isinstance(err, ParseError) and err.kind == "memory", err
        assert pool.parse(rss(item("<title>small</title>")), URL).entries[0].title == "small"


def test_closed_pool_refuses_calls() -> None:
    pool = ParserPool(1)
    pool.parse(rss(""), URL)
    (pid,) = pool.pids()
    pool.close()
    with pytest.raises(ParseError) as info:
        pool.parse(rss(""), URL)
    assert info.value.kind == "closed"
    assert pool.pids() == []
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not Path(f"/proc/{pid}").exists()


def test_pool_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        ParserPool(0)
    with pytest.raises(ValueError):
        ParserPool(1, memory_mb=8)


def test_guid_identity_as_feedparser_resolves_it() -> None:
    """Permalink guids and Atom ids without a scheme are resolved against the feed URL
    (feedparser's rule, and entry identity); isPermaLink="false" guids are kept as given;
    feeds with only absolute or non-permalink ids parse to the same values without the base
    pass (which is most of the cost of a parse)."""
    feed = parse(rss(
        item("<title>a</title><guid>story/1</guid>")
        + item("<title>b</title><guid isPermaLink='false'>story-2</guid>")
        + item("<title>c</title><link>https://x.org/c</link><guid>https://x.org/c</guid>")
    ))
    assert [e.key for e in feed.entries] == [
        "https://news.example.org/rss/story/1", "story-2", "https://x.org/c"]
    assert feed.entries[0].url == "https://news.example.org/rss/story/1"
    plain = parse(rss(item("<title>b</title><guid isPermaLink='false'>story-2</guid>"
                           "<link>../b</link><description>&lt;img src='/i.png'&gt;"
                           "</description>")))
    (e,) = plain.entries
    assert (e.key, e.url) == ("story-2", "https://news.example.org/b")
    assert e.summary_html == "<img src=\"https://news.example.org/i.png\">"
    atom = parse(
        b'<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>'
        b"<entry><id>t3_abc</id><title>x</title></entry>"
        b"<entry><id>urn:uuid:1</id><title>y</title></entry></feed>"
    )
    assert [e.key for e in atom.entries] == ["https://news.example.org/rss/t3_abc", "urn:uuid:1"]


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        ("<lastBuildDate>Tue, 30 Apr 2024 10:00:00 GMT</lastBuildDate>"
         "<pubDate>Mon, 29 Apr 2024 10:00:00 GMT</pubDate>", datetime(2024, 4, 30, 10, tzinfo=UTC)),
        ("<pubDate>Mon, 29 Apr 2024 10:00:00 +0200</pubDate>", datetime(2024, 4, 29, 8, tzinfo=UTC)),
        ("<lastBuildDate>Wed, 01 Jan 2999 00:00:00 GMT</lastBuildDate>", None),  # future
        ("<lastBuildDate>soon</lastBuildDate>", None),
        ("", None),
    ],
)
def test_feed_updated_rss(channel: str, expected: datetime | None) -> None:
    body = (f"<rss version='2.0'><channel><title>t</title>{channel}<item><title>x</title>"
            "</item></channel></rss>").encode()
    assert parse_feed(body, "https://e.example/rss", now=NOW).updated == expected


def test_feed_updated_atom_and_json() -> None:
    atom = (b"<feed xmlns='http://www.w3.org/2005/Atom'><title>t</title><id>urn:x</id>"
            b"<updated>2024-04-30T09:15:00+01:00</updated></feed>")
    assert parse_feed(atom, "https://e.example/atom", now=NOW).updated == datetime(
        2024, 4, 30, 8, 15, tzinfo=UTC)
    js = b'{"version": "https://jsonfeed.org/version/1.1", "title": "t", "items": []}'
    assert parse_feed(js, "https://e.example/feed.json", now=NOW).updated is None
