"""Every real feed of the corpus parses; fields agree with the oracles (rss-parser, feed-rs).

Oracle files are other projects' parser output, so a few differences are semantic, not bugs;
each is named and explained in ORACLE_EXCEPTIONS and checked for what it should be instead.
"""

from __future__ import annotations

import html
import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import pytest

from aggregator.errors import ParseError
from aggregator.models import ParsedFeed
from aggregator.parse import parse_feed

FEED_URL = "https://feeds.example.org/feed.xml"
NOW = datetime(2030, 1, 1, tzinfo=UTC)  # the corpus spans 2003-2024; nothing is "future"

# Same resolution as tests/conftest.py, only to build parameter ids at collection time;
# the tests themselves read through the ``corpus`` fixture.
_SHARED = Path(
    os.environ.get("AGGREGATOR_SHARED", Path(__file__).resolve().parents[2] / "shared")
).resolve()
_FEEDS_DIR = _SHARED / "corpus" / "feeds"


def _feed_files() -> list[str]:
    if not _FEEDS_DIR.is_dir():
        return []
    return sorted(
        str(p.relative_to(_FEEDS_DIR))
        for p in _FEEDS_DIR.rglob("*")
        if p.is_file() and not p.name.endswith(".expected.json")
    )


FEEDS = _feed_files()
ORACLES = [f for f in FEEDS if (_FEEDS_DIR / f).with_suffix(".expected.json").exists()]

# A real truncated feed (Reuters' server died mid-output): the root is never closed.
TRUNCATED = {"feed-rs/rss2__rss_2.0_invalid_1.xml"}

ORACLE_EXCEPTIONS = {
    # rss-parser read these windows-1252 bytes as UTF-8 (U+FFFD in its titles) and cannot read
    # Portuguese dates ("Seg, 24 Set 2018"): we decode correctly and do read the dates.
    "rss-parser/uolNoticias.rss": "mojibake titles, unparsed localised dates in the oracle",
    # feed-rs rejects "Sat, Dec 16 2023 02:02:33 PM" (12-hour clock); we read it as 14:02:33.
    "feed-rs/rss2__rss_2.0_nbcny.xml": "oracle has no date for a 12-hour clock date",
}


def _parse(corpus: Path, rel: str) -> ParsedFeed:
    return parse_feed((corpus / "feeds" / rel).read_bytes(), FEED_URL, now=NOW)


def test_corpus_has_feeds(corpus: Path) -> None:
    assert len(FEEDS) >= 80, f"expected the corpus feeds under {_FEEDS_DIR}"
    assert len(ORACLES) >= 50


@pytest.mark.parametrize("rel", [f for f in FEEDS if f not in TRUNCATED])
def test_every_corpus_feed_parses(corpus: Path, rel: str) -> None:
    feed = _parse(corpus, rel)
    assert feed.format, rel
    assert feed.entries, f"{rel}: no entries"
    keys = [e.key for e in feed.entries]
    assert len(keys) == len(set(keys)), f"{rel}: duplicate keys survived"
    for e in feed.entries:
        assert e.key
        assert e.title or e.url or e.summary_html or e.content_html, f"{rel}: empty entry"
        for dt in (e.published, e.updated):
            assert dt is None or dt.utcoffset() == timedelta(0)
        if e.published is None:
            assert e.date_note in ("missing", "unparseable", "future", "ancient")
        else:
            assert e.date_note is None
        assert e.url is None or e.url.startswith(("http://", "https://"))
        for text in (e.title, e.summary_html, e.content_html, e.author, *e.categories):
            assert text is None or not re.search("[\ud800-\udfff]", text)
        assert "<" not in e.title or not re.search(r"</?[a-z]+[ >]", e.title), e.title


@pytest.mark.parametrize("rel", sorted(TRUNCATED))
def test_truncated_corpus_feed_is_refused(corpus: Path, rel: str) -> None:
    with pytest.raises(ParseError) as info:
        _parse(corpus, rel)
    assert info.value.kind == "malformed"
    assert "never closed" in str(info.value)


# --------------------------------------------------------------------------- oracles


def _load_json(path: Path) -> Any:
    raw = path.read_bytes()
    try:
        return json.loads(raw)
    except UnicodeDecodeError:  # one oracle file was saved in latin-1
        return json.loads(raw.decode("latin-1"))


def _norm_text(value: str | None) -> str:
    return re.sub(r"\s+", " ", value or "").strip()


def _oracle_title(value: str | None) -> str:
    # rss-parser returns titles as found, HTML included; we return plain text.
    text = value or ""
    if "<" in text or "&" in text:
        text = html.unescape(re.sub(r"<[^>]*>", "", text))
    return _norm_text(text)


def _norm_url(value: str | None) -> str | None:
    if not value or not value.strip():
        return None
    parts = urlsplit(urljoin(FEED_URL, value.strip()))  # rss-parser keeps relative links
    return urlunsplit(
        (parts.scheme, parts.netloc.lower(), parts.path or "/", parts.query, parts.fragment)
    )


def _oracle_date(value: str | None) -> datetime | None:
    if not value:
        return None
    dt = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    return dt.replace(microsecond=0)  # feedparser keeps whole seconds


def _oracle_rows(data: Any, source: str) -> list[tuple[str, str | None, datetime | None]]:
    if source == "rss-parser":
        return [
            (
                _oracle_title(i.get("title")),
                _norm_url(i.get("link")),
                _oracle_date(i.get("isoDate")),
            )
            for i in data["feed"]["items"]
        ]
    rows = []
    for entry in data["entries"]:
        links = entry.get("links") or []
        date = entry.get("published") or entry.get("updated")
        title = (entry.get("title") or {}).get("content")
        rows.append(
            (_norm_text(title), _norm_url(links[0]["href"] if links else None), _oracle_date(date))
        )
    return rows


@pytest.mark.parametrize("rel", ORACLES)
def test_fields_match_oracle(corpus: Path, rel: str) -> None:
    source = rel.split("/")[0]
    expected = _oracle_rows(
        _load_json((corpus / "feeds" / rel).with_suffix(".expected.json")), source
    )
    feed = _parse(corpus, rel)
    got = [(e.title, _norm_url(e.url), e.published) for e in feed.entries]
    assert len(got) == len(expected), f"{rel}: {len(got)} entries, oracle has {len(expected)}"
    for i, ((title, link, date), (x_title, x_link, x_date)) in enumerate(
        zip(got, expected, strict=True)
    ):
        where = f"{rel} entry {i}"
        if rel == "rss-parser/uolNoticias.rss":
            # Each U+FFFD in the oracle stands for one windows-1252 byte = one character.
            pattern = "".join("." if ch == "\ufffd" else re.escape(ch) for ch in x_title)
            assert re.fullmatch(pattern, title), f"{where}: {title!r} vs {x_title!r}"
            assert "\ufffd" not in title
            assert x_date is None and date is not None and date.year == 2018, where
        elif rel == "feed-rs/rss2__rss_2.0_nbcny.xml":
            assert title == x_title, where
            assert x_date is None and date == datetime(2023, 12, 16, 14, 2, 33, tzinfo=UTC), where
        else:
            assert title == x_title, f"{where}: title {title!r} != {x_title!r}"
            assert date == x_date, f"{where}: date {date} != {x_date}"
        assert link == x_link, f"{where}: link {link!r} != {x_link!r}"


def test_oracle_exceptions_are_real_files() -> None:
    assert set(ORACLE_EXCEPTIONS) <= set(ORACLES)


# --------------------------------------------------------------------------- encodings


def _titles(feed: ParsedFeed) -> list[str]:
    return [e.title for e in feed.entries]


def test_windows_1251_pravda(corpus: Path) -> None:
    feed = _parse(corpus, "ua-2020/pravda_rss.xml")
    assert feed.title == "Украинская правда"
    assert feed.entries[0].title == 'День сердца: инфаркты и инсульты значительно "помолодели"'
    assert "В Украине усиливают ответственность за продажу электронных сигарет детям" in _titles(
        feed
    )
    assert not feed.warnings


def test_windows_1251_pravda_with_http_charset(corpus: Path) -> None:
    body = (corpus / "feeds/ua-2020/pravda_rss.xml").read_bytes()
    feed = parse_feed(body, FEED_URL, content_type="text/xml", charset="windows-1251", now=NOW)
    assert feed.title == "Украинская правда"


def test_windows_1251_miniflux(corpus: Path) -> None:
    feed = _parse(corpus, "miniflux/encoding_WINDOWS-1251.xml")
    assert feed.title == "iBash.Org.Ru"
    assert feed.entries[0].title == "Цитата #17703"
    assert "есть у кого жаба программер" in (feed.entries[0].summary_html or "")
    assert feed.language == "ru"


def test_iso_8859_1_declared(corpus: Path) -> None:
    feed = _parse(corpus, "miniflux/encoding_ISO-8859-1.xml")
    assert feed.title == "Golem.de"
    assert "Viele Spieler wünschen sich eine PC-Version" in (feed.entries[0].summary_html or "")


def test_iso_8859_1_undeclared_and_not_utf8(corpus: Path) -> None:
    body = (corpus / "feeds/miniflux/no_encoding_ISO-8859-1.xml").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")
    feed = parse_feed(body, FEED_URL, now=NOW)
    assert feed.entries[1].title == "Masters en Psycho : une simplificationet#8230; très complexe"
    assert "nombre d'études montrent" in (feed.entries[0].summary_html or "")
    assert any(w.startswith("encoding:") for w in feed.warnings)


def test_gb2312(corpus: Path) -> None:
    feed = _parse(corpus, "rss-parser/encoding-gb2312.xml")
    assert feed.title == "新闻国内"
    assert feed.entries[0].title == "习近平为何如此强调崇尚英雄？"
    assert feed.language == "zh-cn"


def test_uol_undeclared_windows_1252(corpus: Path) -> None:
    feed = _parse(corpus, "rss-parser/uolNoticias.rss")
    assert feed.entries[0].title == (
        "Ibope: Bolsonaro perde de Haddad, Ciro e Alckmin em simulações de 2º turno"
    )
    assert feed.entries[4].title == "Rival de Putin é condenado a mais 20 dias de prisão"
    # "Seg, 24 Set 2018 19:42:40 -0300": Portuguese names, read by the localised fallback
    assert feed.entries[0].published == datetime(2018, 9, 24, 22, 42, 40, tzinfo=UTC)


def test_ukranews_default_namespace_wrapper(corpus: Path) -> None:
    feed = _parse(corpus, "ua-2020/ukranews_rss.xml")
    assert feed.format == "rss20"
    assert feed.title == "Українські Новини"
    assert len(feed.entries) == 2
    first = feed.entries[0]
    assert first.title == "Херсонский губернатор Гусев купил квартиру в кредит"
    assert first.published == datetime(2020, 9, 28, 15, 25, tzinfo=UTC)
    assert first.categories == ("Экономика",)
    assert first.enclosures[0].type == "image/jpeg" and first.enclosures[0].length == 157261
    # The article text only exists in yandex:full-text (escaped HTML in CDATA).
    assert (first.content_html or "").startswith("<p>Глава Херсонской обладминистрации")


def test_json_feed_1_1(corpus: Path) -> None:
    feed = _parse(corpus, "feed-rs/jsonfeed__jsonfeed_elastic_1.1.json")
    assert feed.format == "json11"
    assert feed.title == "Blog – InfluxData"  # &#8211; decoded
    first = feed.entries[0]
    assert first.author == "Chris Churilo, Fake Author 1"
    assert "Time Series Database" in first.categories
    assert first.published == datetime(2019, 5, 31, 19, 17, 58, tzinfo=UTC)
