"""clean: sanitising (attacks, URLs, tracking), text conversion, field hygiene, words."""

from __future__ import annotations

import re
from pathlib import Path

import lxml.html
import pytest

from aggregator.clean import (
    absolute_url,
    clean_article,
    clean_line,
    clean_text,
    html_to_text,
    sanitize_html,
    strip_tracking,
    summarize,
    word_count,
)
from aggregator.dedup import normalize_url
from aggregator.models import Article

BASE = "https://news.example.am/politics/2024/article.html"

# Everything a browser could run or that could change the page around the content.
FORBIDDEN = re.compile(
    r"<script|<iframe|<form|<base|<meta|<svg|<math|<object|<embed|<style|<link|style=|"
    r"javascript:|vbscript:|data:text|\son\w+\s*=|<input|<button|<textarea",
    re.IGNORECASE,
)

ATTACKS = [
    '<p onclick="steal()">hi<script>alert(1)</script></p>',
    '<img src="x.jpg" onerror="alert(1)" onload=alert(2)>',
    '<a href="javascript:alert(1)">x</a>',
    '<a href="JaVaScRiPt:alert(1)">x</a>',
    '<a href=" \tjavascript:alert(1)">x</a>',
    '<a href="jav&#x09;ascript:alert(1)">x</a>',
    '<a href="jav&#10;ascript:alert(1)">x</a>',
    '<a href="&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1)">x</a>',
    '<a href="&#x6A;avascript&colon;alert(1)">x</a>',
    '<a href="java\0script:alert(1)">x</a>',
    '<a href="vbscript:msgbox(1)">x</a>',
    '<img src="javascript:alert(1)">',
    '<svg onload="alert(1)"><a xlink:href="javascript:alert(1)"><text>t</text></a><script>alert(1)</script></svg>',
    '<svg><image href="javascript:alert(1)"/><style>@import "x"</style></svg>',
    '<math><a href="javascript:alert(1)">m</a><mtext><script>alert(1)</script></mtext></math>',
    '<math href="javascript:alert(1)"><mi>x</mi></math>',
    '<form action="https://evil.example/"><input name="q"><button>Go</button><textarea>t</textarea></form>',
    '<base href="https://evil.example/"><a href="/x">x</a>',
    '<meta http-equiv="refresh" content="0;url=https://evil.example/">',
    '<iframe src="https://evil.example/"></iframe><object data="x.swf"></object><embed src="x.swf">',
    '<style>body{background:url(javascript:alert(1))}</style><p style="position:fixed;top:0">s</p>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">d</a>',
    '<img src="data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+">',
    '<link rel="stylesheet" href="https://evil.example/x.css"><p>t</p>',
    "<!-- <script>alert(1)</script> --><p>c</p>",
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>"></p></noscript>',
    '<table><tr><td background="javascript:alert(1)">c</td></tr></table>',
    '<a href="https://ok.example/" target="_blank" rel="opener">x</a>',
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_sanitizer_defeats_attack(attack: str) -> None:
    out = sanitize_html(attack, BASE)
    assert not FORBIDDEN.search(out), out
    assert sanitize_html(out, BASE) == out  # idempotent
    # every remaining link is safe and carries rel=noopener noreferrer
    for a in lxml.html.fragment_fromstring(out or "<p></p>", create_parent="div").iter("a"):
        assert a.get("rel") == "noopener noreferrer"
        assert a.get("href") is None or a.get("href").startswith(("https://", "http://", "mailto:"))
        assert a.get("target") is None


def test_sanitizer_keeps_article_markup() -> None:
    html = (
        "<h1>Heading</h1><p>Text with <strong>bold</strong>, <em>italic</em> and a "
        '<a href="/news/other" title="Other">link</a>.</p>'
        '<figure><img src="/img/a.jpg" alt="Alt" width="640" height="360" class="x"><figcaption>Photo: Armenpress</figcaption></figure>'
        '<blockquote><p>Quote</p></blockquote><ul><li>one</li></ul><ol start="3"><li>three</li></ol>'
        '<table><thead><tr><th>A</th></tr></thead><tbody><tr><td colspan="2">1</td></tr></tbody></table>'
        "<pre><code>x = 1</code></pre><h3>Sub</h3><div>div text</div>"
    )
    out = sanitize_html(html, BASE)
    assert out == (
        "<h2>Heading</h2><p>Text with <strong>bold</strong>, <em>italic</em> and a "
        '<a href="https://news.example.am/news/other" title="Other" rel="noopener noreferrer">link</a>.</p>'
        '<figure><img src="https://news.example.am/img/a.jpg" alt="Alt" width="640" height="360"><figcaption>Photo: Armenpress</figcaption></figure>'
        '<blockquote><p>Quote</p></blockquote><ul><li>one</li></ul><ol start="3"><li>three</li></ol>'
        '<table><thead><tr><th>A</th></tr></thead><tbody><tr><td colspan="2">1</td></tr></tbody></table>'
        "<pre><code>x = 1</code></pre><h3>Sub</h3><div>div text</div>"
    )
    assert sanitize_html(out, BASE) == out


def test_sanitizer_urls_and_tracking() -> None:
    html = (
        '<a href="../other.html?id=5&utm_source=rss&utm_medium=feed&fbclid=abc#part">rel</a>'
        '<a href="//cdn.example.org/file.pdf?gclid=1">proto</a>'
        '<a href="mailto:editor@example.am">mail</a><a href="tel:+37410">tel</a><a href="#top">top</a>'
        '<img src="img/p.jpg?utm_campaign=x&w=640" alt="i">'
        '<img src="data:image/png;base64,iVBORw0KGgo=" alt="dot">'
        '<img src="ftp://example.org/a.jpg" alt="ftp">'
    )
    out = sanitize_html(html, BASE)
    assert out == (
        '<a href="https://news.example.am/politics/other.html?id=5#part" rel="noopener noreferrer">rel</a>'
        '<a href="https://cdn.example.org/file.pdf" rel="noopener noreferrer">proto</a>'
        '<a href="mailto:editor@example.am" rel="noopener noreferrer">mail</a>teltop'
        '<img src="https://news.example.am/politics/2024/img/p.jpg?w=640" alt="i">'
        '<img src="data:image/png;base64,iVBORw0KGgo=" alt="dot">'
    )
    # without a base, relative URLs stay relative (nothing to resolve against) but are cleaned
    assert (
        sanitize_html('<a href="/a?utm_source=x&b=1">a</a>')
        == '<a href="/a?b=1" rel="noopener noreferrer">a</a>'
    )
    assert sanitize_html("") == ""


def test_html_to_text() -> None:
    html = (
        "<h2>Title&nbsp;here</h2><p>First   line<br>second\nline &amp; more</p>"
        "<div><p>Nested</p>tail text</div><ul><li>one</li><li>two</li></ul>"
        "<script>var x = 1;</script><style>p{}</style>"
        "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>"
        "<pre>code  line 1\n  line 2</pre><p>caf&eacute; &#8212; &#x4E2D;</p><p>\u202eevil\u0000</p>"
    )
    assert html_to_text(html) == (
        "Title here\n\nFirst line\nsecond line & more\n\nNested\n\ntail text\n\none\n\ntwo\n\n"
        "a | b\n\nc | d\n\ncode line 1\nline 2\n\ncafé — 中\n\nevil"
    )
    assert html_to_text("") == ""
    assert html_to_text("plain") == "plain"


def test_clean_line() -> None:
    assert clean_line(None) == ""
    assert clean_line("  a\x00b\x07c\x1b[31m  d\u0085e\x9f\n\tf  ") == "abc[31m d e f"
    assert clean_line("x\ud800y\udfffz") == "x\ufffdy\ufffdz"
    bidi = "".join(chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)])
    assert clean_line(f"a{bidi}b \ufeffc") == "ab c"
    assert clean_line("Cafe\u0301") == "Café"  # NFC
    assert clean_line("ზ\u200dე") == "ზ\u200dე"  # joiners are not controls
    long = "word " * 1000
    capped = clean_line(long, max_len=50)
    assert len(capped) <= 50 and capped.endswith("…") and capped[:-1].endswith("word")
    assert clean_line("x" * 100, max_len=10) == "x" * 9 + "…"


def test_clean_text_keeps_paragraphs() -> None:
    text = "  First\x00 para  \r\n line two\n\n\n\nSecond\u2029para\t end \n"
    assert clean_text(text) == "First para\nline two\n\nSecond\npara end"
    assert clean_text("") == ""


def test_strip_tracking() -> None:
    url = "https://x.example/a?b=1&utm_source=rss&UTM_Medium=x&fbclid=F&gclid=G&dclid=D&msclkid=M&mc_cid=1&mc_eid=2&yclid=Y&_ga=1&igshid=I&ref_src=twsrc&c=%20a+b&d#frag"
    assert strip_tracking(url) == "https://x.example/a?b=1&c=%20a+b&d#frag"
    assert strip_tracking("https://x.example/a?utm_source=rss") == "https://x.example/a"
    assert strip_tracking("https://x.example/a?utm_source=rss#f") == "https://x.example/a#f"
    untouched = "https://x.example/a?z=1&a=2&ref=home&source=feed"
    assert strip_tracking(untouched) == untouched
    assert strip_tracking("https://x.example/a") == "https://x.example/a"


def test_absolute_url() -> None:
    assert (
        absolute_url("../b?utm_source=x&k=1", "https://x.example/a/c/d.html")
        == "https://x.example/a/b?k=1"
    )
    assert (
        absolute_url("//cdn.example.org/i.jpg", "http://x.example/")
        == "http://cdn.example.org/i.jpg"
    )
    assert absolute_url("//cdn.example.org/i.jpg", None) == "https://cdn.example.org/i.jpg"
    assert absolute_url(" https://x.example/a b ", None) == "https://x.example/a%20b"
    assert absolute_url("mailto:a@x.example", None) == "mailto:a@x.example"
    for bad in (
        "javascript:alert(1)",
        " JAVA\tSCRIPT:alert(1)",
        "java\nscript:x",
        "data:image/png;base64,AA",
        "ftp://x/a",
        "tel:1",
        "",
        None,
        "https://",
    ):
        assert absolute_url(bad, "https://x.example/") is None, bad
    assert absolute_url("/relative", None) is None
    assert absolute_url("/relative", "javascript:x") is None


def test_word_count() -> None:
    assert word_count("") == 0
    assert word_count("The talks, in Yerevan, don't end; e-mail 2024!") == 8
    assert word_count("Премьер-министр Армении заявил во вторник") == 5
    assert word_count("Հայաստանի վարչապետ Նիկոլ Փաշինյանը հայտարարեց") == 5
    assert word_count("საქართველოს პარლამენტმა კანონი მიიღო") == 4
    assert word_count("Azərbaycan Respublikasının Prezidenti İlham Əliyev") == 5
    assert word_count("香港行政长官") == 6  # one per character
    assert word_count("東京で会議 held in Tokyo") == 8
    assert word_count("हिन्दी भाषा") == 2  # vowel signs do not split words
    assert word_count("— … !!! ---") == 0


def test_summarize() -> None:
    assert summarize("Short text.") == "Short text."
    assert summarize("") == ""
    text = "First paragraph here.\n\nSecond one.\n\n" + "Third " * 200
    assert summarize(text, max_chars=40) == "First paragraph here.\n\nSecond one."
    long = "Ceasefire " + "agreement reached between the parties " * 30
    out = summarize(long, max_chars=100)
    assert len(out) <= 100 and out.endswith("…")
    assert long.startswith(out[:-1]) and long[len(out) - 1] == " "  # cut at a word boundary
    cjk = "香港行政长官梁振英在各方压力下就其大宅的违章建筑问题到立法会接受质询" * 5
    assert len(summarize(cjk, max_chars=30)) == 30


def test_text_of_sanitised_corpus_pages_is_already_clean(corpus: Path) -> None:
    """The pipeline stores html_to_text(sanitize_html(page)) without a clean_text pass: that
    is only right while the text is a fixed point of clean_text."""
    pages = sorted((corpus / "articles").glob("**/source.html"))[:150]
    assert len(pages) >= 100
    for page in pages:
        html = sanitize_html(page.read_bytes().decode("utf-8", "replace"), "https://x.example/")
        text = html_to_text(html)
        assert clean_text(text) == text, page
        for size in (80, 400):
            assert summarize(text, size, normalized=True) == summarize(text, size), page
        assert "\n\n\n" not in text, page


def test_summary_is_lazy_but_unchanged() -> None:
    text = "First  paragraph.\n\nSecond one.\n \nThird\u202e one." + "\n\nmore" * 10_000
    assert summarize(text, 40) == "First paragraph.\n\nSecond one."
    assert summarize(text, 12) == "First parag…"  # no space late enough to cut at
    assert summarize("\n\n\n", 40) == ""


# --------------------------------------------------------------------------- clean_article


def _article(html: str, **kw: str) -> Article:
    return Article(html=html, text="", method="test", **kw)


def test_clean_article_is_the_one_cleaning() -> None:
    """sanitise against the page URL → text → word count → summary, the lead image made
    absolute, the canonical URL escaped and normalised by the matcher's function."""
    a = _article('<p onclick="x()">Five <a href="/more?utm_source=x">words</a> in this '
                 'paragraph</p><script>alert(1)</script>',
                 image="/img/lead.jpg",
                 canonical_url="https://WWW.Example.am/politics/2024/article.html?utm_source=t")
    c = clean_article(a, BASE, normalize_url=normalize_url)
    assert c.html == sanitize_html(a.html, BASE)
    assert "script" not in c.html and "onclick" not in c.html
    assert 'href="https://news.example.am/more"' in c.html
    assert c.text == "Five words in this paragraph"
    assert c.word_count == 5
    assert c.summary == summarize(c.text, normalized=True)
    assert c.image == "https://news.example.am/img/lead.jpg"
    assert c.canonical_url == normalize_url(a.canonical_url or "")
    assert c.method == "test" and not c.keeps_feed
    # Without a normaliser (`aggregator extract`), the canonical URL is only made storable.
    raw = clean_article(_article("<p>x</p>", canonical_url="https://e.am/a\x01"), BASE)
    assert raw.canonical_url is not None and "\x01" not in raw.canonical_url


@pytest.mark.parametrize(("html", "feed", "keeps"), [
    ("<p>Nobody wants bad compression</p>", "<p>Everyone wants good compression</p>", False),
    ("<p>Everyone wants good compr…</p>", "<p>Everyone wants good compression</p>", True),
    ("<p>...</p>", "<p>Everyone wants good compression</p>", True),
    ("<p>Short</p>", "<p>The feed carries a longer text</p>", True),
    ("<p>A much longer article than the teaser ever was</p>", "<p>Teaser</p>", False),
    ("", "", True),
])
def test_clean_article_keeps_the_feed_when_it_is_better(html: str, feed: str,
                                                       keeps: bool) -> None:
    c = clean_article(_article(html), BASE, feed_html=feed)
    assert c.keeps_feed is keeps
    # The stored count of the feed's words, when given, is what is compared.
    assert clean_article(_article(html), BASE, feed_html=feed,
                         feed_words=word_count(html_to_text(feed))).keeps_feed is keeps
