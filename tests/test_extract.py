"""extract: decoding, preprocessing (rules, lazy images), trafilatura, metadata, guards."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, date, datetime
from html import escape
from pathlib import Path

import lxml.html
import pytest
from trafilatura import html2txt

from aggregator.clean import html_to_text, sanitize_html
from aggregator.config import load_config
from aggregator.errors import ExtractError
from aggregator.extract import (
    accelerator,
    cascade,
    decode,
    decode_html,
    discover_feeds,
    extract_article,
    install_accelerator,
    metadata,
    validate_rule,
)
from aggregator.models import Article, SiteRule
from aggregator.pipeline import Pipeline

from .feedserver import FeedServer
from .util import env_for, write_feeds

URL = "https://caucasus.example.org/news/2023/09/separatists-accept-ceasefire"


def blocks(html: str) -> list[tuple[str, str]]:
    """Top-level elements of an HTML fragment as (tag, normalised text)."""
    return [
        (el.tag, " ".join(el.text_content().split()))
        for el in lxml.html.fragments_fromstring(html)
        if isinstance(el.tag, str)
    ]


def para(i: int, topic: str = "Talks") -> str:
    return (
        f"<p>{topic} paragraph {i}: the delegations discussed border delimitation, transit routes "
        f"and the return of displaced people in considerable detail over several hours.</p>"
    )


# --------------------------------------------------------------------------- seed article


def seed_page(seed_article: Path) -> tuple[str, dict[str, object]]:
    """An HTML page in the shape of the seed's outlet, built from the seed's own text.

    The seed flattens: breadcrumb, date, title, teaser, title again (image alt), image
    credit, body paragraphs.
    """
    # whitespace (the seed has no-break spaces) is normalised as extraction normalises it
    parts = [
        " ".join(p.split())
        for p in seed_article.read_text(encoding="utf-8").split("\n\n")
        if p.strip()
    ]
    breadcrumb, date_line, title, teaser, alt, credit, *body = parts
    assert alt == title and breadcrumb.startswith("• Home") and len(body) >= 5
    day = datetime.strptime(date_line, "%d %B %Y").date()
    e = escape
    html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{e(title)} | Caucasus Watch</title>
<meta property="og:title" content="{e(title)}">
<meta property="og:site_name" content="Caucasus Watch">
<meta property="og:image" content="/files/images/ceasefire.jpg">
<meta name="description" content="{e(teaser)}">
<link rel="canonical" href="/news/separatists-accept-ceasefire">
</head><body>
<div id="cookie-consent" class="cookie-banner"><p>We use cookies to improve your experience of our website. By continuing to browse you agree to our use of cookies.</p><button>Accept all cookies</button></div>
<header><a class="logo" href="/"><img src="/static/logo.svg" alt="Caucasus Watch"></a>
<nav class="menu"><ul><li><a href="/news">News</a></li><li><a href="/analysis">Analysis</a></li><li><a href="/about">About us</a></li></ul></nav></header>
<main>
<nav class="breadcrumb"><ul><li><a href="/">Home</a></li><li>{e(title)}</li></ul></nav>
<article class="node-article">
<div class="date"><time datetime="{day.isoformat()}T14:05:00+04:00">{e(date_line)}</time></div>
<h1 class="page-title">{e(title)}</h1>
<p class="article-lead">{e(teaser)}</p>
<div class="share-bar"><a href="https://www.facebook.com/sharer.php?u=x">Share on Facebook</a> <a href="https://twitter.com/share?url=x">Tweet this story</a></div>
<figure class="lead-image"><img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" data-src="/files/images/ceasefire.jpg?utm_source=site&amp;w=800" alt="{e(title)}" width="800" height="450"><figcaption>{e(credit)}</figcaption></figure>
<div class="field-body">{"".join(f"<p>{e(p)}</p>" for p in body)}</div>
<div class="share-bar bottom"><span>Share this article:</span> <a href="https://t.me/share/url?url=x">Telegram</a></div>
</article>
<section class="related"><h2>Related news</h2><ul>
<li><a href="/news/a"><img src="/files/thumbs/a.jpg"></a><a href="/news/a">Armenia and Azerbaijan hold talks in Brussels over a peace treaty</a></li>
<li><a href="/news/b">Georgian parliament debates new media law amid protests in Tbilisi</a></li></ul></section>
</main>
<footer class="site-footer"><p>© 2023 Caucasus Watch. All rights reserved.</p><ul><li><a href="/privacy">Privacy policy</a></li><li><a href="/contact">Contact the editors</a></li></ul></footer>
</body></html>"""
    facts = {
        "title": title,
        "day": day,
        "teaser": teaser,
        "credit": credit,
        "body": body,
        "date_line": date_line,
    }
    return html, facts


def test_seed_article_exactly(seed_article: Path) -> None:
    html, facts = seed_page(seed_article)
    article = extract_article(html.encode("utf-8"), URL, charset="utf-8")
    clean = sanitize_html(article.html, URL)
    title, body = str(facts["title"]), list(facts["body"])  # type: ignore[call-overload]

    assert article.title == title
    day = facts["day"]
    assert isinstance(day, date)
    assert article.published == datetime(day.year, day.month, day.day, 10, 5, tzinfo=UTC)
    assert article.canonical_url == "https://caucasus.example.org/news/separatists-accept-ceasefire"
    assert article.language == "en"
    assert article.image == "https://caucasus.example.org/files/images/ceasefire.jpg"
    assert article.image_caption == facts["credit"]

    # Exactly: lead paragraph, the image with its credit, the body paragraphs in order.
    assert blocks(clean) == [
        ("p", facts["teaser"]),
        ("figure", facts["credit"]),
        *[("p", p) for p in body],
    ]
    figure = lxml.html.fragments_fromstring(clean)[1]
    assert [child.tag for child in figure] == ["img", "figcaption"]
    assert figure[0].get("src") == "https://caucasus.example.org/files/images/ceasefire.jpg?w=800"
    assert html_to_text(clean) == "\n\n".join([str(facts["teaser"]), str(facts["credit"]), *body])
    # The title is metadata only: not in the body, not even as the image's alt text.
    assert title not in clean and title.split("’")[0] not in html_to_text(clean)
    assert str(facts["date_line"]) not in clean
    for boilerplate in (
        "Home",
        "Share",
        "Tweet",
        "Telegram",
        "Related",
        "Brussels",
        "cookies",
        "All rights",
        "Privacy",
        "About us",
    ):
        assert boilerplate not in clean, boilerplate


# --------------------------------------------------------------------------- decoding


def test_decode_windows_1251_corpus_page(corpus: Path) -> None:
    raw = (corpus / "articles/encodings/miniflux-windows_1251/source.html").read_bytes()
    assert "Новый цитатник Рунета" in decode_html(raw)
    # The same bytes with the declaration removed: detection must find windows-1251 too.
    undeclared = re.sub(rb"<meta http-equiv=\"Content-Type\"[^>]*>", b"", raw)
    assert undeclared != raw
    assert "Новый цитатник Рунета" in decode_html(undeclared)


def test_decode_gb2312_corpus_page(corpus: Path) -> None:
    raw = (corpus / "articles/encodings/miniflux-gb2312/source.html").read_bytes()
    text = decode_html(raw)
    assert "警惕7大最常见的网络钓鱼主题行，看看你中招没？" in text
    assert "\ufffd" not in text[:5000]
    undeclared = re.sub(rb"<meta http-equiv=\"Content-Type\"[^>]*>", b"", raw)
    assert "警惕7大最常见的网络钓鱼主题行" in decode_html(undeclared)


RUSSIAN = (
    "<html><head>{meta}<title>Новости Кавказа</title></head><body><p>Премьер-министр Армении "
    "Никол Пашинян заявил во вторник, что Ереван готов подписать мирный договор с "
    "Азербайджаном до конца года, если стороны согласуют принципы делимитации границы. "
    "Переговоры министров иностранных дел продолжатся на следующей неделе в Вашингтоне.</p></body></html>"
)


@pytest.mark.parametrize(
    ("meta", "http_charset"),
    [
        ('<meta charset="koi8-r">', None),
        ('<meta http-equiv="Content-Type" content="text/html; charset=KOI8-R">', None),
        ("", "koi8-r"),  # HTTP header only
        ("", None),  # undeclared: detection
        ("", "no-such-charset"),  # an unknown label is ignored
    ],
)
def test_decode_koi8_r(meta: str, http_charset: str | None) -> None:
    page = RUSSIAN.format(meta=meta)
    assert decode_html(page.encode("koi8-r"), http_charset) == page


def test_decode_prefers_bom_and_valid_utf8_over_wrong_labels() -> None:
    page = "<p>Tbilisi — თბილისი, Yerevan — Երևան</p>"
    assert decode_html(b"\xef\xbb\xbf" + page.encode("utf-8"), "windows-1251") == page
    assert decode_html(b"\xff\xfe" + page.encode("utf-16-le")) == page
    # Header says latin-1 but the bytes are UTF-8 (a common server misconfiguration).
    assert decode_html(page.encode("utf-8"), "iso-8859-1") == page
    # Header says UTF-8 but the bytes are windows-1251: the bytes win.
    assert decode_html(RUSSIAN.format(meta="").encode("cp1251"), "utf-8") == RUSSIAN.format(meta="")
    # iso-8859-1 is read as windows-1252, as browsers do (curly quotes survive).
    assert decode_html("“Zürich”".encode("cp1252"), "iso-8859-1") == "“Zürich”"


def test_extract_decodes_bytes_with_http_charset() -> None:
    page = (
        RUSSIAN.format(meta="")
        .replace("<p>", "<article><h1>Пашинян о мирном договоре</h1><p>")
        .replace("</p>", "</p></article>")
    )
    article = extract_article(page.encode("koi8-r"), "https://news.example.ru/a", charset="koi8-r")
    assert "Никол Пашинян заявил во вторник" in article.text


# --------------------------------------------------------------------------- site rules

TWO_STORIES = """<html><head><title>Two stories</title></head><body>
<div class="txt"><h1>Border talks resume</h1>{story}<div class="box"><p>Also today: the finance ministry
published new inflation figures that surprised analysts and markets across the region.</p></div>{more}</div>
<div class="col">{other}</div></body></html>"""


def two_stories() -> str:
    return TWO_STORIES.format(
        story="".join(para(i) for i in range(1, 3)),
        more=para(3),
        other="".join(para(i, "Unrelated football report") for i in range(1, 9)),
    )


def test_rule_body_and_strip_select_the_article() -> None:
    page = two_stories()
    unruled = extract_article(page, "https://news.example.am/a")
    assert "Unrelated football report" in unruled.text  # without a rule the longer block wins

    article = extract_article(
        page, "https://news.example.am/a", rule=SiteRule(body=".txt", strip=(".box",))
    )
    assert article.method == "rule+trafilatura"
    assert [p.split(":")[0] for p in article.text.split("\n\n")] == [
        "Talks paragraph 1",
        "Talks paragraph 2",
        "Talks paragraph 3",
    ]
    assert "inflation" not in article.text and "football" not in article.text


def test_rule_body_kept_when_trafilatura_finds_nothing() -> None:
    # trafilatura discards <aside> wholesale; the rule says this is the article.
    page = f"""<html><head><title>T</title></head><body><aside id="story">{para(1)}<img src="/p/a.jpg">{para(2)}</aside>
    <div>{"".join(para(i, "Other") for i in range(5))}</div></body></html>"""
    article = extract_article(page, "https://news.example.ge/a", rule=SiteRule(body="#story"))
    assert article.method == "rule"
    assert article.text.split("\n\n") == [
        lxml.html.fromstring(para(1)).text_content(),
        lxml.html.fromstring(para(2)).text_content(),
    ]
    assert '<img src="https://news.example.ge/p/a.jpg"/>' in article.html


def test_rule_body_matching_nothing_falls_back_to_trafilatura() -> None:
    article = extract_article(
        two_stories(), "https://news.example.am/a", rule=SiteRule(body=".missing")
    )
    assert article.method == "trafilatura" and "Talks paragraph 1" in article.text


def test_invalid_rule_selector() -> None:
    with pytest.raises(ExtractError) as info:
        extract_article(
            two_stories(), "https://news.example.am/a", rule=SiteRule(body="div[", strip=())
        )
    assert info.value.kind == "bad_rule" and "https://news.example.am/a" in str(info.value)
    assert validate_rule(SiteRule(body=".txt", strip=(".box", "aside > p"))) == []
    problems = validate_rule(SiteRule(body="div[", strip=("..x",)))
    assert len(problems) == 2 and "div[" in problems[0] and "..x" in problems[1]


# --------------------------------------------------------------------------- images


def test_lazy_images_get_real_sources() -> None:
    page = f"""<html><head><title>Lazy</title></head><body>
    <header><img src="/static/logo.png" alt="Site"></header>
    <article><h1>Talks in Yerevan continue for a second day</h1>
    {para(1)}<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" data-src="/img/one.jpg" alt="one">
    {para(2)}<img class="lazy" data-lazy-src="https://cdn.example.org/two.jpg" src="/img/placeholder.png">
    {para(3)}<img data-original="three.jpg">
    {para(4)}<img src="/img/blank.gif" data-srcset="/img/four-320.jpg 320w, /img/four-1280.jpg 1280w, /img/four-640.jpg 640w">
    {para(5)}<img srcset="/img/five@1x.jpg 1x, /img/five@2x.jpg 2x">
    {para(6)}<figure><img src="/img/lazy-placeholder.svg"><noscript><img src="/img/six.jpg" alt="six"></noscript><figcaption>Photo: Armenpress</figcaption></figure>
    {para(7)}<a href="/news/other-story"><img src="/img/teaser.jpg"></a>
    {para(8)}<img src="/img/stats.gif" width="1" height="1">
    </article><aside><img src="/img/sidebar.jpg"><p>Read also: a sidebar story about something else.</p></aside>
    </body></html>"""
    article = extract_article(page, "https://news.example.am/politics/talks")
    doc = lxml.html.fragment_fromstring(article.html, create_parent="div")
    assert [img.get("src") for img in doc.iter("img")] == [
        "https://news.example.am/img/one.jpg",
        "https://cdn.example.org/two.jpg",
        "https://news.example.am/politics/three.jpg",
        "https://news.example.am/img/four-1280.jpg",
        "https://news.example.am/img/five@2x.jpg",
        "https://news.example.am/img/six.jpg",
    ]
    # Each image sits where it was: right before the paragraph that followed it.
    order = [el.tag if el.tag != "p" else el.text_content().split(":")[0] for el in doc]
    assert order == [
        "Talks paragraph 1", "img", "Talks paragraph 2", "img", "Talks paragraph 3", "img",
        "Talks paragraph 4", "img", "Talks paragraph 5", "img", "Talks paragraph 6", "figure",
        "Talks paragraph 7", "Talks paragraph 8",
    ]  # fmt: skip
    assert doc.find(".//figcaption").text == "Photo: Armenpress"
    assert article.image == "https://news.example.am/img/one.jpg"  # no og:image: the first one


# --------------------------------------------------------------------------- metadata


def test_canonical_language_and_dates() -> None:
    head = """<html lang="hy-AM"><head><title>Լուրեր</title>
    <link rel="canonical" href="/hy/news/123?utm_source=rss">
    <script type="application/ld+json">{"@graph": [{"@type": "NewsArticle", "datePublished": "2024-03-05T09:30:00+04:00"}]}</script>
    </head><body><article><h1>Խորհրդարանը քննարկեց նոր օրենքը</h1>"""
    body = "".join(
        f"<p>Պարբերություն {i}. Ազգային ժողովը երկար քննարկումներից հետո ընդունեց օրինագիծը, որը վերաբերում է սահմանային համագործակցությանը։</p>"
        for i in range(4)
    )
    article = extract_article(
        head + body + "</article></body></html>", "https://news.example.am/x/y"
    )
    assert article.canonical_url == "https://news.example.am/hy/news/123?utm_source=rss"
    assert article.language == "hy"
    assert article.published == datetime(2024, 3, 5, 5, 30, tzinfo=UTC)
    assert article.title == "Խորհրդարանը քննարկեց նոր օրենքը"
    assert "Խորհրդարանը" not in article.text

    # og:url when there is no <link rel=canonical>; meta published time with "+0400" offset
    page = head.replace(
        '<link rel="canonical" href="/hy/news/123?utm_source=rss">',
        '<meta property="og:url" content="https://news.example.am/og">',
    )
    page = page.replace('"datePublished": "2024-03-05T09:30:00+04:00"', '"x": 1')
    page = page.replace(
        "<title>",
        '<meta property="article:published_time" content="2024-03-06T10:00:00+0400"><title>',
    )
    article = extract_article(
        page + body + "</article></body></html>", "https://news.example.am/x/y"
    )
    assert article.canonical_url == "https://news.example.am/og"
    assert article.published == datetime(2024, 3, 6, 6, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "date_line",
    [
        "20 сентября 2023, 14:05",
        "Published: 20.09.2023 | 14:05",
        "20 სექტემბერი 2023",
        "Սեպտեմբերի 20, 2023",
    ],
)
def test_leading_date_line_and_breadcrumb_dropped(date_line: str) -> None:
    page = f"""<html><head><title>Story</title></head><body><article>
    <p>Главная » Политика » Переговоры продолжаются</p><p>{date_line}</p>
    <h1>Переговоры продолжаются</h1>{"".join(para(i) for i in range(4))}</article></body></html>"""
    article = extract_article(page, "https://news.example.ru/a")
    assert article.title == "Переговоры продолжаются"
    assert article.text.split("\n\n")[0].startswith("Talks paragraph 0")
    assert date_line not in article.text and "Главная" not in article.text


# --------------------------------------------------------------------------- errors and guards


def test_empty_and_contentless_pages() -> None:
    for body in (b"", b"   \n\t "):
        with pytest.raises(ExtractError) as info:
            extract_article(body, "https://x.example/a")
        assert info.value.kind == "empty"
    with pytest.raises(ExtractError) as info:
        extract_article(
            "<html><body><script>render()</script><div id='app'></div></body></html>",
            "https://x.example/b",
        )
    assert info.value.kind == "no_content" and "https://x.example/b" in str(info.value)


def test_too_large_body() -> None:
    with pytest.raises(ExtractError) as info:
        extract_article(b"<p>" + b"a" * (11 * 1024 * 1024), "https://x.example/big")
    assert info.value.kind == "too_large"


@pytest.mark.parametrize(
    "page",
    [
        "<html><body>" + "<div>" * 100_000 + "<p>deep</p>" + "</div>" * 100_000 + "</body></html>",
        "<html><body>" + "<div>" * 100_000 + "<p>unclosed</p></body></html>",
        "<html><body>" + "<div>" * 19_000 + para(1) * 3 + "</div>" * 19_000 + "</body></html>",
        "<html><body>"
        + para(1)
        + "<b>" * 19_000
        + "x"
        + "</b>" * 19_000
        + para(2)
        + "</body></html>",
        "<html><body>" + para(1) + "<span>a</span>" * 19_000 + "</body></html>",
    ],
    ids=["nested-100k", "unclosed-100k", "nested-19k", "inline-19k", "flat-19k"],
)
def test_pathological_pages_finish_fast(page: str) -> None:
    start = time.process_time()
    try:
        article = extract_article(page, "https://x.example/deep")
        assert article.text
    except ExtractError as exc:
        assert exc.kind in ("too_large", "no_content", "too_deep")
    assert time.process_time() - start < 5


# --------------------------------------------------------------------------- corpus


def _traf_case(corpus: Path, name: str) -> tuple[bytes, dict[str, object]]:
    folder = corpus / "articles/trafilatura" / name
    return (folder / "source.html").read_bytes(), json.loads((folder / "expected.json").read_text())


@pytest.mark.parametrize(
    "name",
    [
        "spiegel.de.albtraum",
        "tagesschau.de.rheinmetall",
        "caymancompass.com-prison",
        "assabah.com.tn.article",
        "jamaicaobserver.com-attacks",
        "taz.de.siemens",
    ],
)
def test_corpus_trafilatura_snippets(corpus: Path, name: str) -> None:
    raw, expected = _traf_case(corpus, name)
    article = extract_article(raw, str(expected["url"]))
    text = " ".join(html_to_text(sanitize_html(article.html, str(expected["url"]))).split())
    shown = f"{article.title} {text}"
    for snippet in expected["with"]:  # type: ignore[attr-defined]
        assert " ".join(snippet.split()) in shown, snippet
    for snippet in expected["without"]:  # type: ignore[attr-defined]
        assert " ".join(snippet.split()) not in text, snippet


def test_corpus_armenian_goose_case(corpus: Path) -> None:
    folder = corpus / "articles/goose3/content/test_panarmenian_armenian"
    expected = json.loads((folder / "expected.json").read_text())["expected"]
    article = extract_article((folder / "source.html").read_bytes(), expected["final_url"])
    assert expected["cleaned_text"] in article.text
    assert article.description == expected["meta_description"]


def test_corpus_newspaper_case_metadata(corpus: Path) -> None:
    folder = corpus / "articles/newspaper4k/arabic_article"
    meta = json.loads((folder / "expected-metadata.json").read_text())
    expected = (folder / "expected.txt").read_text(encoding="utf-8")
    article = extract_article((folder / "source.html").read_bytes(), meta["url"])
    assert article.title == meta["title"]
    assert article.language == "ar"
    first = expected.split("\n\n")[0].strip()
    assert article.text.startswith(first[:80])


def test_date_from_trafilatura_when_page_has_no_machine_date(corpus: Path) -> None:
    raw, expected = _traf_case(corpus, "zdf.de.corona")
    article = extract_article(raw, str(expected["url"]))
    assert article.published is not None
    assert article.published.date() == date.fromisoformat(str(expected["date"]))


def test_title_without_site_name_and_logo_h1() -> None:
    page = f"""<html><head><title>Parliament passes the budget | Caucasus Watch</title>
    <meta property="og:site_name" content="Caucasus Watch"></head><body>
    <h1 class="logo">Caucasus Watch</h1><article>
    <figure><img src="/i/budget.jpg"><figcaption>Parliament passes the budget</figcaption></figure>
    {"".join(para(i) for i in range(4))}</article></body></html>"""
    article = extract_article(page, "https://news.example.ge/budget")
    assert article.title == "Parliament passes the budget"
    # the image stays; its "caption" only repeated the title
    assert article.html.startswith('<img src="https://news.example.ge/i/budget.jpg"/><p>')
    assert "Parliament passes" not in article.html and article.image_caption is None


def test_discover_feeds() -> None:
    page = """<html><head><title>Outlet</title>
    <link rel="alternate" type="application/rss+xml" title=" All  news " href="/rss.xml">
    <link rel="alternate" type="application/atom+xml" href="https://news.example.am/atom">
    <link rel="alternate" type="application/rss+xml" href="/rss.xml">
    <link rel="alternate" type="application/json" href="/wp-json/wp/v2/posts/1">
    <link rel="alternate" hreflang="ru" href="/ru/">
    <link rel="stylesheet" type="application/rss+xml" href="/not-a-feed.xml">
    <link rel="Alternate feed" type="application/feed+json; charset=utf-8" href="feed.json">
    </head><body><p>x</p></body></html>"""
    assert discover_feeds(page.encode("utf-8"), "https://news.example.am/hy/index.html") == [
        ("https://news.example.am/rss.xml", "All news"),
        ("https://news.example.am/atom", None),
        ("https://news.example.am/hy/feed.json", None),
    ]
    assert discover_feeds("<html><body><p>no feeds</p></body></html>", "https://x.example/") == []


# --------------------------------------------------------------------------- trafilatura cascade


def _fulltext_case(corpus: Path, name: str) -> tuple[bytes, str]:
    folder = corpus / "articles/newspaper4k-fulltext" / name
    return (folder / "source.html").read_bytes(), (folder / "expected.txt").read_text()


def test_fallback_extractors_run_only_for_short_extractions(
    corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = cascade.compare_extraction

    def counting(*args: object) -> object:
        calls.append(len(str(args[3])))
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(cascade, "compare_extraction", counting)
    # A long article: trafilatura's own extraction is enough, readability/jusText never run.
    raw, expected = _traf_case(corpus, "tagesschau.de.rheinmetall")
    assert len(extract_article(raw, str(expected["url"])).text) > 2000
    assert calls == []
    # Its own extraction finds a teaser only (~140 characters); the fallback finds the article.
    raw, text = _fulltext_case(corpus, "bhg.com1")
    article = extract_article(raw, "https://www.bhg.com/")
    assert len(calls) == 1 and len(article.text) > 5000
    assert text.split("\n")[0].strip()[:60] in " ".join(article.text.split())
    # fast=True never runs them.
    assert len(extract_article(raw, "https://www.bhg.com/", fast=True).text) < 1000
    assert len(calls) == 1


def test_page_text_bound_never_below_trafilatura_measure(corpus: Path) -> None:
    """The cheap bound decides the escalation only when it is a true upper bound."""
    pages = sorted((corpus / "articles").glob("*/*/source.html"))[::7]
    assert len(pages) > 40
    for page in pages:
        root = decode._parse(decode_html(page.read_bytes()))
        if root is None:
            continue
        body = root.find(".//body")
        body = root if body is None else body
        assert cascade._page_text_bound(body) >= len(html2txt(root)), page


def test_comment_sections_pruned() -> None:
    comments = "".join(
        f"<div class='comment-body'><p>Reader {i} wrote a long comment disagreeing with the "
        f"ministry's figures and asking for the full data to be published.</p></div>"
        for i in range(6)
    )
    page = f"""<html><head><title>T</title></head><body><article><h1>Budget passed after a long debate</h1>
    {"".join(para(i) for i in range(4))}</article><section id="comments">{comments}</section>
    </body></html>"""
    article = extract_article(page, "https://news.example.am/a")
    assert "Talks paragraph 3" in article.text and "Reader" not in article.text


# --------------------------------------------------------------------------- authors


def _byline_page(byline: str, head: str = "") -> str:
    body = "".join(para(i) for i in range(6))
    return (
        f"<html><head><title>Border talks resume</title>{head}</head><body>"
        f"<article><h1>Border talks resume</h1>{byline}{body}</article></body></html>"
    )


@pytest.mark.parametrize(
    "byline",
    [
        '<div class="author">By Anna Petrosyan</div>',
        '<div class="post-meta">Story by <a rel="author" href="/a/7">Anna Petrosyan</a></div>',
        '<span class="byline">By Anna Petrosyan <time datetime="2023-09-20">20 Sep</time></span>',
    ],
)
def test_author_from_byline_in_body(byline: str) -> None:
    article = extract_article(_byline_page(byline), URL)
    assert article.author == "Anna Petrosyan"
    assert "Petrosyan" not in article.text  # the byline stays out of the body
    assert "paragraph 5" in article.text


def test_byline_search_matches_trafilatura(corpus: Path) -> None:
    """Same author as trafilatura.metadata.extract_author (its XPaths on a pruned copy)."""
    from trafilatura.metadata import extract_author

    pages = sorted((corpus / "articles" / "trafilatura").glob("*/source.html"))[:60]
    found = 0
    for source in pages:
        root = decode._parse(decode_html(source.read_bytes()))
        assert root is not None
        ours = metadata._byline(root)
        assert ours == extract_author(root), source.parent.name
        found += ours is not None
    assert found >= 20


def test_author_prefers_json_ld_person_over_publisher_meta() -> None:
    ld = {
        "@context": "https://schema.org",
        "@graph": [
            {"@type": "NewsArticle", "author": {"@id": "#p1"},
             "image": {"@type": "ImageObject", "author": "Photo Agency Staff"}},
            {"@type": "Person", "@id": "#p1", "name": "Levon Hakobyan"},
        ],
    }  # fmt: skip
    head = (
        '<meta name="author" content="Caucasus Watch">'
        '<meta property="og:site_name" content="Caucasus Watch">'
        f'<script type="application/ld+json">{json.dumps(ld)}</script>'
    )
    page = _byline_page('<div class="author">By Anna Petrosyan</div>', head)
    assert extract_article(page, URL).author == "Levon Hakobyan"
    # the publisher's name in <meta name="author"> loses to the byline...
    head = '<meta name="author" content="Caucasus Watch"><meta property="og:site_name" content="Caucasus Watch">'
    page = _byline_page('<div class="author">By Anna Petrosyan</div>', head)
    assert extract_article(page, URL).author == "Anna Petrosyan"
    # ...and is kept when it is all the page names
    assert extract_article(_byline_page("", head), URL).author == "Caucasus Watch"


def test_author_entities_and_escapes_decoded() -> None:
    head = '<meta name="author" content="Lindsey O&amp;#039;Donnell">'
    assert extract_article(_byline_page("", head), URL).author == "Lindsey O'Donnell"
    ld = '{"@type": "NewsArticle", "author": {"@type": "Person", "name": "Luis \\\\u00c1vila"}}'
    head = f'<script type="application/ld+json">{ld}</script>'
    assert extract_article(_byline_page("", head), URL).author == "Luis Ávila"


# --------------------------------------------------------------------------- trafilatura parity


@pytest.mark.parametrize(
    "html",
    [
        "<!DOCTYPE html/>\n<html/>\x01<body><p>a\ufffe b\x1f</p></body>",
        "<html/>\n<body><p>x</p></body>",
        "<!doctype html>\n<html><body><p>\x0bx\uffff</p></body></html>",
        "<!DOCTYPE html PUBLIC '-//W3C//DTD XHTML 1.0//EN' '/x.dtd'><p>no newline</p>",
        "<p>plain \U0001f600 text</p>",
    ],
)
def test_repaired_html_same_as_trafilatura_repair(html: str) -> None:
    from trafilatura.utils import repair_faulty_html

    beginning = html[:50].lower()
    expected = repair_faulty_html(html, beginning).encode("utf-8", "surrogatepass")
    assert decode._repaired(html, beginning) == expected


def _same_elements(ours: object, theirs: object, roots: list[lxml.html.HtmlElement]) -> int:
    """Both XPaths (an emulation and trafilatura's) find the same elements in the same order
    on every tree; returns how many."""
    found = 0
    for root in roots:
        expected, got = theirs(root), ours(root)  # type: ignore[operator]
        assert len(got) == len(expected)
        assert all(a is b for a, b in zip(got, expected, strict=True))
        found += len(got)
    return found


def test_comment_prune_same_as_trafilatura_xpath(corpus: Path) -> None:
    from trafilatura.xpaths import REMOVE_COMMENTS_AND_LISTS_XPATH

    roots = _corpus_roots(corpus, step=3)
    ours = cascade._COMMENT_SECTIONS
    assert _same_elements(ours, REMOVE_COMMENTS_AND_LISTS_XPATH[0], roots) >= 100


def test_infinite_scroll_prune_same_as_trafilatura_xpath(corpus: Path) -> None:
    from trafilatura.xpaths import RAW_TREE_PRUNE_XPATH

    assert len(RAW_TREE_PRUNE_XPATH) == 2  # _prune_raw replaces the first, runs the second
    roots = []  # the pages _prune_raw runs it on: their markup holds its words
    for source in sorted((corpus / "articles").glob("*/*/source.html")):
        markup = decode_html(source.read_bytes())
        if any(w in markup for w in cascade._INFINITE_WORDS):
            root = decode._parse(markup)
            if root is not None:
                roots.append(root)
    assert len(roots) >= 20
    assert _same_elements(cascade._INFINITE_SCROLL, RAW_TREE_PRUNE_XPATH[0], roots) >= 1


@pytest.mark.parametrize(
    "body",
    [
        '<div id="infinite-scroll"><p>next article</p></div>',
        '<section class="x infinitescroll"><h1>kept: holds the h1</h1></section>',
        '<div class="mvp-post-add-box"><h1>dropped despite the h1</h1></div>',
        '<aside id="mvp-post-add-wrap"><p>x</p></aside>',
        '<div class="infinite-loader"><p>kept: not a scroll container</p></div>',
        '<span class="infinite-scroll"><p>kept: not a div</p></span>',
        '<div class="elementor-share-buttons"><a>share</a></div>',
    ],
)
def test_raw_prune_same_as_trafilatura(body: str) -> None:
    from trafilatura.htmlprocessing import prune_unwanted_nodes
    from trafilatura.xpaths import RAW_TREE_PRUNE_XPATH

    html = f"<html><body><main><p>intro</p>{body}<p>tail</p></main></body></html>"
    ours = cascade._prune_raw(decode._parse(html), html)
    expected = prune_unwanted_nodes(decode._parse(html), RAW_TREE_PRUNE_XPATH)
    assert lxml.html.tostring(ours) == lxml.html.tostring(expected)


@pytest.mark.parametrize(
    "html",
    [
        "<!DOCTYPE html/>\n<html><body><p>Žluťoučký kůň \u2014 "
        + "slovo " * 40
        + "</p></body></html>",
        "<!doctype html>\n<html/>\n<body><p>" + "mot été " * 40 + "</p></body>",
        "<html><body><p>a\x01b " + "word " * 60 + "</p></body></html>",
    ],
)
def test_utf8_bytes_parse_like_their_text(html: str) -> None:
    data = html.encode("utf-8")
    assert decode._decode(data, None) == (html, True)
    beginning = html[:50].lower()
    assert decode._repaired(html, beginning, data) == decode._repaired(html, beginning)
    from_bytes, from_text = extract_article(data, URL), extract_article(html, URL)
    assert (from_bytes.html, from_bytes.text) == (from_text.html, from_text.text)


def _corpus_roots(corpus: Path, step: int = 1) -> list[lxml.html.HtmlElement]:
    roots = []
    for source in sorted((corpus / "articles").glob("*/*/source.html"))[::step]:
        root = decode._parse(decode_html(source.read_bytes()))
        if root is not None:
            roots.append(root)
    return roots


def _converted(root: lxml.html.HtmlElement) -> lxml.html.HtmlElement:
    """The tree trafilatura's main extractor evaluates its XPaths on."""
    from copy import copy

    from trafilatura.htmlprocessing import convert_tags, tree_cleaning

    options = cascade._FAST
    return convert_tags(tree_cleaning(copy(root), options), options)


def test_accelerator_guard_matches_the_installed_libraries() -> None:
    # A trafilatura or jusText whose guarded sources changed runs its own code, unaccelerated:
    # this says it happened (then check the equivalents and paste the new fingerprint).
    assert accelerator.mismatches() == []
    assert set(accelerator.PINNED) == set(accelerator.fingerprint())


def test_emulated_xpaths_same_as_trafilatura(corpus: Path) -> None:
    from trafilatura.settings import BASIC_CLEAN_XPATH
    from trafilatura.xpaths import BODY_XPATH, OVERALL_DISCARD_XPATH

    emulated = accelerator.emulations()
    assert emulated is not None
    roots = _corpus_roots(corpus, step=2)
    trees = roots + [_converted(root) for root in roots]
    matched = sum(
        _same_elements(ours, theirs, trees)
        for ours, theirs in zip(emulated.overall, OVERALL_DISCARD_XPATH, strict=True)
    )
    # the caller of BODY_XPATH takes the first element found, and only that
    bodies = sum(
        _same_elements(lambda t, x=ours: x(t)[:1], lambda t, x=theirs: x(t)[:1], trees)
        for ours, theirs in zip(emulated.body, BODY_XPATH, strict=True)
    )
    cleaned = _same_elements(emulated.basic, BASIC_CLEAN_XPATH, roots)
    assert matched >= 5000 and bodies >= 200 and cleaned >= 5000


@pytest.mark.parametrize(
    "attributes",
    [
        'id="cookie-law" class="x"',
        'class="x" id="cookie-law"',
        'id="x" class="cookie-law"',
        'class="cookie" id="x"',
        'id="reply-1" class="x"',
        'class="x" id="reply-1"',
        'style="x" id="hidden-part"',
        'id="x" style="visibility:hidden"',
        'style="visibility:hidden" id="x"',
        'role="Navigation"',
        'data-lp-replacement-content=""',
        'class="page ad-slot"',
        'class="load-ad-x"',
        'class="dfpAd"',
        'aria-hidden="true"',
        'style="display: none"',
        'class="post-entry"',
        'id="article-body"',
        'class="FullText"',
        'class="article intro"',
        'id="primary-x"',
        'id="x-Main-Content"',
        'class="Page-Content"',
        'class="content__body"',
        'id="content"',
        'itemprop="articleBody"',
        'class="x" id="site-footer"',
        'id="x" class="footer"',
        'class="Cookie-Banner"',
        'id="notice__cookie"',
        'class="co\u212akie_law"',  # KELVIN SIGN: a case of k
        'id="con\u017fent-manager"',  # LONG S: a case of s
        "",
    ],
)
def test_emulated_xpaths_attribute_order_and_spelling(attributes: str) -> None:
    """string(@id|@class) is the attribute written first; the spellings each regex allows."""
    from trafilatura.settings import BASIC_CLEAN_XPATH
    from trafilatura.xpaths import BODY_XPATH, OVERALL_DISCARD_XPATH

    emulated = accelerator.emulations()
    assert emulated is not None
    overall, body = emulated.overall, emulated.body
    html = (
        "<html><body><main><div class='a'><p>intro</p></div>"
        f"<div {attributes}><p>x</p></div><span {attributes}>y</span>"
        f"<section {attributes}><p>z</p></section></main></body></html>"
    )
    root = decode._parse(html)
    for ours, theirs in zip(overall, OVERALL_DISCARD_XPATH, strict=True):
        assert ours(root) == theirs(root)
    for ours, theirs in zip(body, BODY_XPATH, strict=True):
        assert ours(root)[:1] == theirs(root)[:1]
    assert emulated.basic(root) == BASIC_CLEAN_XPATH(root)


def _paragraphs(maker: type, tree: lxml.html.HtmlElement) -> list[tuple[object, ...]]:
    from justext.core import classify_paragraphs, revise_paragraph_classification
    from trafilatura.external import JT_STOPLIST, jt_stoplist_init

    paragraphs = maker.make_paragraphs(tree)
    classify_paragraphs(
        paragraphs, JT_STOPLIST or jt_stoplist_init(), 50, 150, 0.1, 0.2, 0.25, True
    )
    revise_paragraph_classification(paragraphs, 150)
    return [
        (p.dom_path, p.xpath, p.text, p.tags_count, p.chars_count_in_links, p.class_type)
        for p in paragraphs
    ]


def test_justext_paragraphs_same_as_saxified(corpus: Path) -> None:
    from copy import deepcopy

    from justext.core import ParagraphMaker
    from trafilatura.baseline import basic_cleaning

    good = 0
    for root in _corpus_roots(corpus, step=8):
        tree = basic_cleaning(deepcopy(root))
        expected = _paragraphs(ParagraphMaker, tree)
        assert _paragraphs(accelerator._ParagraphMaker, tree) == expected
        good += sum(p[-1] == "good" for p in expected)
    assert good >= 200


def test_justext_paragraphs_with_comments_instructions_and_namespaces() -> None:
    from justext.core import ParagraphMaker

    root = lxml.html.fromstring(
        "<html><body><div>lead <!-- note -->text<?pi x?> more"
        "<p>First <a href='/x'>linked</a> paragraph<br><br>after breaks</p>"
        "<h2>Heading</h2><select><option>choice</option></select></div></body></html>"
    )
    root.find(".//h2").append(lxml.html.Element("{urn:x}span"))
    root.find(".//h2")[-1].text = "namespaced"
    assert _paragraphs(accelerator._ParagraphMaker, root) == _paragraphs(ParagraphMaker, root)


def test_trafilatura_left_as_found_after_an_in_process_extraction() -> None:
    import sys

    from justext.core import ParagraphMaker
    from trafilatura import external, main_extractor
    from trafilatura.settings import BASIC_CLEAN_XPATH
    from trafilatura.xpaths import BODY_XPATH, OVERALL_DISCARD_XPATH

    page = "<html><body><article><p>" + "Short text. " * 5 + "</p></article></body></html>"
    with pytest.raises(ExtractError):
        extract_article(page.replace("Short text. ", ""), URL)
    extract_article(page, URL)  # through the fallback extractors (jusText included)
    assert not accelerator.installed()  # only an extraction worker installs it
    assert main_extractor.OVERALL_DISCARD_XPATH is OVERALL_DISCARD_XPATH
    assert main_extractor.BODY_XPATH is BODY_XPATH
    assert external.ParagraphMaker is ParagraphMaker
    assert sys.modules["trafilatura.baseline"].BASIC_CLEAN_XPATH is BASIC_CLEAN_XPATH



def _trafilatura_globals() -> list[object]:
    import sys

    from trafilatura import external, main_extractor

    baseline = sys.modules["trafilatura.baseline"]
    return [
        main_extractor.OVERALL_DISCARD_XPATH, main_extractor.BODY_XPATH,
        baseline.BASIC_CLEAN_XPATH, external.ParagraphMaker,
    ]  # fmt: skip


def test_accelerator_installs_its_equivalents_and_uninstalls() -> None:
    from justext.core import ParagraphMaker
    from trafilatura.settings import BASIC_CLEAN_XPATH
    from trafilatura.xpaths import BODY_XPATH, OVERALL_DISCARD_XPATH

    own = [OVERALL_DISCARD_XPATH, BODY_XPATH, BASIC_CLEAN_XPATH, ParagraphMaker]
    assert _trafilatura_globals() == own
    try:
        assert install_accelerator() is True
        assert accelerator.install() is True  # once per process: a second call changes nothing
        emulated = accelerator.emulations()
        assert _trafilatura_globals() == [
            emulated.overall, emulated.body, emulated.basic, accelerator._ParagraphMaker
        ]
        assert accelerator.installed()
    finally:
        accelerator.uninstall()
    assert _trafilatura_globals() == own
    assert not accelerator.installed()


def _changed_path_info() -> type:
    from justext.core import PathInfo

    class ChangedPathInfo(PathInfo):  # type: ignore[misc]
        """A jusText whose PathInfo is not the one the paragraph maker was written for."""

    return ChangedPathInfo


@pytest.mark.parametrize("change", ["trafilatura version", "jusText version", "source"])
def test_accelerator_guard_mismatch_warns_once_and_runs_unaccelerated(
    change: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import justext.core

    if change == "source":
        monkeypatch.setattr(justext.core, "PathInfo", _changed_path_info())
        changed = "justext.core:PathInfo"
    else:
        changed = change.split()[0]
        monkeypatch.setitem(accelerator.PINNED, changed, "0.0.1")
    own = _trafilatura_globals()
    page = "<html><body><article>" + para(1) + para(2) + "</article></body></html>"
    expected = extract_article(page, URL)
    with caplog.at_level("WARNING", logger="aggregator.extract.accelerator"):
        try:
            assert install_accelerator() is False
            assert _trafilatura_globals() == own and not accelerator.installed()
            assert extract_article(page, URL) == expected
        finally:
            accelerator.uninstall()
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and changed in warnings[0].getMessage()
    assert "extracting with their own code" in warnings[0].getMessage()


def _corpus_articles(pages: list[Path]) -> dict[Path, Article | str]:
    found: dict[Path, Article | str] = {}
    for page in pages:
        try:
            found[page] = extract_article(page.read_bytes(), f"https://{page.parent.name}.test/")
        except ExtractError as exc:
            found[page] = exc.kind
    return found


def _same_with_and_without_accelerator(pages: list[Path]) -> None:
    """extract_accelerator on and off: the same Article (text, HTML and metadata)."""
    own = _corpus_articles(pages)
    assert accelerator.install()
    try:
        accelerated = _corpus_articles(pages)
    finally:
        accelerator.uninstall()
    assert [str(p) for p in pages if own[p] != accelerated[p]] == []
    assert sum(isinstance(a, Article) for a in own.values()) >= len(pages) * 0.9


def test_accelerator_same_articles_on_a_corpus_sample(corpus: Path) -> None:
    pages = sorted((corpus / "articles").rglob("source.html"))
    sample = pages[:: len(pages) // 20][:20]
    # and a page where trafilatura's fallback extractors (readability, jusText) run
    sample.append(corpus / "articles/newspaper4k-fulltext/bhg.com1/source.html")
    _same_with_and_without_accelerator(sample)


@pytest.mark.slow
def test_accelerator_same_articles_on_every_corpus_page(corpus: Path) -> None:
    pages = sorted((corpus / "articles").rglob("source.html"))
    assert len(pages) > 400
    _same_with_and_without_accelerator(pages)


@pytest.mark.parametrize("setting", ["true", "false"])
def test_accelerator_installed_in_extraction_workers_never_in_the_daemon(
    tmp_path: Path, setting: str
) -> None:
    with FeedServer(feeds=1, entries=2) as server:
        feeds = write_feeds(tmp_path / "feeds.yaml", [{"name": "ft", "url": server.url("/feed/0.xml")}])
        env = env_for(tmp_path, AGGREGATOR_EXTRACT_ACCELERATOR=setting)
        config = load_config(None, str(feeds), env)
        assert config.settings.extract_accelerator is (setting == "true")
        own = _trafilatura_globals()
        p = Pipeline(config, processes=1)
        try:
            assert p.run_cycle(all_feeds=True).articles_done == 2
            # the daemon's own process: trafilatura's globals as they were
            assert _trafilatura_globals() == own and not accelerator.installed()
            # the extraction worker that did the work: installed when the setting is on
            worker = p.extractor.call(60, accelerator.installed)
            assert worker is (setting == "true")
        finally:
            p.close()


# --------------------------------------------------------------------------- related links


@pytest.mark.parametrize(
    ("block", "dropped"),
    [
        ('<p>Read also: <a href="/news/2023/09/talks">Border talks resume in Tbilisi</a></p>', True),
        ('<p>Читайте также: <a href="/ru/news/1">Переговоры о границе возобновились</a></p>', True),
        ('<p><strong>Կարդացեք նաև՝</strong> <a href="/hy/news/2">Սահմանային բանակցությունները</a></p>', True),
        ('<p>Həmçinin oxuyun: <a href="https://www.caucasus.example.org/az/3">Sərhəd danışıqları bərpa olunub</a></p>', True),
        ('<h3>ასევე წაიკითხეთ » <a href="/ka/4">საზღვრის მოლაპარაკებები განახლდა</a></h3>', True),
        ('<blockquote>VEA TAMBIÉN: <a href="/x/5">Entre heces y guaricha: la educación</a></blockquote>', True),
        # another site's page: a source, not a teaser
        ('<p>Source: <a href="https://news.example.net/report">Reuters report on the talks</a></p>', False),
        # a label without a separator reads as a sentence
        ('<p>See the <a href="/x/6">full list of the delegations here</a></p>', False),
        # a short link text is not another article's headline
        ('<p>Tags: <a href="/x/7">Politics</a></p>', False),
        # a link with text after it, or two links, is part of the article
        ('<p>Read: <a href="/x/8">the ceasefire agreement in full</a>, signed on Monday.</p>', False),
        ('<p>Also: <a href="/x/9">Border talks resume here</a> <a href="/x/10">and there too</a></p>', False),
        # a paragraph that is only a link
        ('<p><a href="/x/11">The full text of the ceasefire agreement</a></p>', False),
    ],
)
def test_related_article_links_between_paragraphs_dropped(block: str, dropped: bool) -> None:
    body = "".join(para(i) for i in range(3)) + block + "".join(para(i) for i in range(3, 6))
    page = f"<html><head><title>T</title></head><body><article>{body}</article></body></html>"
    article = extract_article(page, URL)
    link = lxml.html.fromstring(block).find(".//a")
    assert (link.text_content() not in article.text) is dropped
    assert article.text.count("paragraph") == 6


@pytest.mark.parametrize(
    ("line", "dropped"),
    [
        ("Photo: AP Photo/Evan Vucci", True),
        ("Фото: Sputnik Армения", True),
        ("Լուսանկարը՝ Photolure", True),  # the Armenian comma, as Armenian outlets write it
        ("Լուսանկարը: Photolure", True),
        ("ფოტო: Interpressnews", True),
        ("Şəkil: APA", True),
        ("(Credit: Clayton Aldern / Grist)", True),
        ("Crédits photos : Bestimage", True),
        ("Photo by Joedson Alves/Reuters", True),
        ("Courtesy of the Ministry of Defence", True),
        # a sentence that starts like a credit
        ("Photos: the delegations met in Tbilisi on Monday and talked for hours", False),
        ("Courtesy calls between the two presidents lasted for over an hour on Monday", False),
        ("Photographers waited outside the ministry", False),
    ],
)
def test_picture_credit_lines_dropped(line: str, dropped: bool) -> None:
    body = "".join(para(i) for i in range(3)) + f"<p>{line}</p>" + para(3)
    page = f"<html><head><title>T</title></head><body><article>{body}</article></body></html>"
    assert (line not in extract_article(page, URL).text) is dropped


@pytest.mark.parametrize(
    ("after_link", "expected"),
    [
        (" in Baku today", "the summit in Baku today"),  # the page's space, which trafilatura trims
        ("s in Baku today", "the summits in Baku today"),  # no space on the page: none added
    ],
)
def test_space_after_a_kept_link_as_on_the_page(after_link: str, expected: str) -> None:
    # A <div> of loose text between paragraphs: trafilatura keeps its link as a paragraph of
    # its own and trims the text after it.
    loose = (
        f"<div class='text'>One run mentions <a href='/x'>the summit</a>{after_link} and more"
        " words follow here to make it long enough for anything.</div>"
    )
    body = "".join(para(i) for i in range(4)) + loose + "".join(para(i) for i in range(4, 8))
    page = f"<html><head><title>T</title></head><body><article>{body}</article></body></html>"
    text = extract_article(page, URL).text
    assert expected in text


def test_run_of_loose_text_split_at_a_link_is_one_paragraph_again() -> None:
    # Paragraphs written as text runs between <br>s beside a picture block, links inside
    # (an old CMS's article body): trafilatura starts a new paragraph at each link it keeps.
    inner = (
        "TBILISI -- The talks went on late into the night, said the ministers of both."
        "<br/><br/>In a <a href='/speech'>speech</a> in Tbilisi, the minister spoke of the"
        " border and of the return of displaced people after the war.<br/>"
        "<div class='media'><img src='/p.jpg' alt='x'/><div class='caption'>Delegations at the"
        " talks on Monday in Tbilisi.</div></div><br/>The sides did not say whether the"
        " <a href='/review'>review</a> of the border would end this year, and more words follow."
        "<div><a href='/z'>A linked headline of another kind</a> opens a block of its own on"
        " the page, with more words after it to make a paragraph of it.</div>"
    )
    page = f"<html><body><div class='article'><div class='entry-content'>{inner}</div></div></body></html>"
    lines = [line for line in extract_article(page, URL).text.splitlines() if line]
    assert "In a speech in Tbilisi, the minister spoke of the border and of the return of" \
        " displaced people after the war." in lines
    assert "The sides did not say whether the review of the border would end this year, and" \
        " more words follow." in lines
    # a link that starts a block on the page still starts its paragraph
    assert any(line.startswith("A linked headline of another kind opens") for line in lines)
