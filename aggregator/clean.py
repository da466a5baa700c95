"""Sanitising and text hygiene: pure, idempotent functions.

Owns nh3 (ammonia). Everything published passes through sanitize_html (HTML) or
clean_line / clean_text (plain text). Text conversion is a regex scan of the
sanitised HTML, so this module needs no other HTML library.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from html import unescape
from urllib.parse import urljoin, urlsplit

import nh3

from .models import Article, CleanedArticle
from .storable import (
    ASTRAL_CANDIDATES,
    BMP_NONCHARACTERS,
    SURROGATES,
    escape_unstorable,
    is_astral_noncharacter,
    strip_unstorable,
)

# --------------------------------------------------------------------------- URLs

# Parameters that only identify a click or a campaign; removed from every URL we publish.
_TRACKING_EXACT = frozenset(
    """fbclid gclid gclsrc dclid gbraid wbraid msclkid mc_cid mc_eid yclid ysclid _ga _gl
    igshid igsh ref_src ref_url twclid ttclid li_fat_id mkt_tok _hsenc _hsmi __hssc __hstc
    __hsfp hsctatracking oly_anon_id oly_enc_id vero_id vero_conv rb_clickid s_cid srsltid
    wt_mc wt_zmc xtor at_medium at_campaign fb_action_ids fb_action_types fb_source
    fb_ref action_object_map action_type_map action_ref_map""".split()
)
_TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "hsa_")

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*):")
# Browsers remove ASCII tab/newline anywhere in a URL and strip C0 controls and spaces at
# both ends before looking at the scheme: "jav&#9;ascript:" is "javascript:".
_URL_INVISIBLE = re.compile(r"[\t\n\r]")
_LINK_SCHEMES = frozenset({"http", "https", "mailto"})
_IMAGE_SCHEMES = frozenset({"http", "https"})
# data: images are inert in <img>, except SVG (a document that can carry script).
_DATA_IMAGE = re.compile(r"^data:image/(png|jpe?g|gif|webp|avif|bmp|x-icon)[;,]", re.IGNORECASE)


def _is_tracking(name: str) -> bool:
    name = name.lower()
    return name in _TRACKING_EXACT or name.startswith(_TRACKING_PREFIXES)


def strip_tracking(url: str) -> str:
    """Remove click and campaign parameters (utm_*, fbclid, gclid, ...), keeping the others
    byte for byte and in order."""
    head, sep, rest = url.partition("?")
    if not sep:
        return url
    query, hash_sep, fragment = rest.partition("#")
    kept = [p for p in query.split("&") if p and not _is_tracking(p.split("=", 1)[0])]
    if len(kept) == len([p for p in query.split("&") if p]):
        return url
    new_query = "&".join(kept)
    return head + ("?" + new_query if new_query else "") + (hash_sep + fragment)


def _scheme(url: str) -> str | None:
    m = _SCHEME.match(url)
    return m.group(1).lower() if m else None


def _tidy(url: str) -> str:
    return _URL_INVISIBLE.sub("", url).strip(
        " \x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f"
        "\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f"
    )


def absolute_url(url: str | None, base: str | None) -> str | None:
    """``url`` resolved against ``base`` with tracking stripped; None when it is empty, not
    http/https/mailto (javascript:, data:, ...), or relative with no usable base."""
    if not url:
        return None
    url = _tidy(url)
    if not url:
        return None
    scheme = _scheme(url)
    if scheme is None:
        if url.startswith("//") and not base:
            url = "https:" + url
        elif base and _scheme(_tidy(base)) in ("http", "https"):
            try:
                url = urljoin(_tidy(base), url)
            except ValueError:
                return None
        else:
            return None
        scheme = _scheme(url)
    if scheme not in _LINK_SCHEMES:
        return None
    if scheme in ("http", "https"):
        try:
            if not urlsplit(url).hostname:
                return None
        except ValueError:
            return None
        url = url.replace(" ", "%20")
    return escape_unstorable(strip_tracking(url))


# --------------------------------------------------------------------------- HTML

_ALLOWED_TAGS = frozenset(
    """p br a img figure figcaption blockquote q cite ul ol li dl dt dd h2 h3 h4 h5 h6 em strong
    b i u s sub sup small mark abbr code pre kbd samp var hr table caption thead tbody tfoot tr
    th td col colgroup div span time""".split()
)
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"},
    "col": {"span"},
    "colgroup": {"span"},
    "ol": {"start", "reversed"},
    "abbr": {"title"},
    "time": {"datetime"},
}
# Dropped with everything inside them: never article text, sometimes active content.
_CLEAN_CONTENT_TAGS = frozenset(
    """script style noscript template svg math iframe frame frameset object embed applet
    form button select textarea input option datalist head title meta base link audio video
    canvas map dialog""".split()
)
_URL_SCHEMES = frozenset({"http", "https", "mailto", "data"})
_H1 = re.compile(r"<(/?)h1(?=[\s>/])", re.IGNORECASE)
# nh3 serialises every attribute as name="value" with '"' escaped, so tags can be matched.
_IMG_TAG = re.compile(r'<img((?:\s+[^\s="/>]+="[^"]*")*)\s*/?>')
_LINK_WITHOUT_HREF = re.compile(r'<a rel="noopener noreferrer">(.*?)</a>', re.DOTALL)
_SIZE = re.compile(r"^\d{1,5}%?$")


def _filter_attribute(base: str | None) -> Callable[[str, str, str], str | None]:
    def attribute_filter(tag: str, attr: str, value: str) -> str | None:
        if attr in ("href", "src"):
            return _safe_url(tag, attr, value, base)
        if attr in ("width", "height"):
            return value if _SIZE.match(value.strip()) else None
        return value

    return attribute_filter


def _safe_url(tag: str, attr: str, value: str, base: str | None) -> str | None:
    tidy = _tidy(value)
    if not tidy:
        return None
    scheme = _scheme(tidy)
    if tag == "img" and attr == "src":
        if scheme == "data":
            return tidy if _DATA_IMAGE.match(tidy) else None
        resolved = absolute_url(tidy, base)
        if resolved is None and scheme is None and not base:
            return strip_tracking(tidy)  # relative and nothing to resolve against: keep
        return resolved if resolved and _scheme(resolved) in _IMAGE_SCHEMES else None
    if tag == "a" and attr == "href":
        if tidy.startswith("#"):
            return None  # in-page anchors point into a page we do not republish
        resolved = absolute_url(tidy, base)
        if resolved is None and scheme is None and not base:
            return strip_tracking(tidy)
        return resolved
    return None


def sanitize_html(html: str, base_url: str | None = None) -> str:
    """Allow-list sanitising with nh3: safe tags and attributes only, links and images made
    absolute against ``base_url`` with tracking parameters stripped, http/https/mailto links
    and http/https (or raster data:) images, ``rel="noopener noreferrer"`` on links."""
    if not html:
        return ""
    # An <h1> inside an article is the title again or a section heading: keep as <h2>.
    html = _H1.sub(r"<\1h2", html)
    cleaned = nh3.clean(
        html,
        tags=set(_ALLOWED_TAGS),
        clean_content_tags=set(_CLEAN_CONTENT_TAGS),
        attributes={k: set(v) for k, v in _ALLOWED_ATTRIBUTES.items()},
        attribute_filter=_filter_attribute(base_url),
        url_schemes=set(_URL_SCHEMES),
        link_rel="noopener noreferrer",
        strip_comments=True,
    )
    # an <img> whose src was refused is an empty box: drop it
    cleaned = _IMG_TAG.sub(lambda m: m.group(0) if ' src="' in m.group(1) else "", cleaned)
    cleaned = _LINK_WITHOUT_HREF.sub(r"\1", cleaned)
    # html5ever keeps C0 controls and noncharacters in text: stored HTML holds none.
    return strip_unstorable(cleaned).strip()


# --------------------------------------------------------------------------- plain text

_BLOCK_TAGS = frozenset(
    """p div h1 h2 h3 h4 h5 h6 ul ol li dl dt dd blockquote pre figure figcaption table
    caption thead tbody tfoot tr section article header footer aside nav main hr address
    details summary""".split()
)
_SKIP_TAGS = frozenset({"script", "style", "noscript", "template", "head", "title", "svg", "math"})


# Markers in the parser's output: a line break (<br>, a newline inside <pre>) and a
# paragraph break (block boundary). Raw newlines in HTML text are only whitespace.
_LINE = "\x01"
_PARA = "\x02"


# Comments, declarations, processing instructions, and tags (name, attributes with any
# quoting, self-closing slash). Text is everything between matches.
_MARKUP = re.compile(
    r"<!--.*?(?:-->|\Z)|<![^>]*>?|<\?[^>]*>?"
    r"|<(/?)([a-zA-Z][^\s/>]*)"
    r"(?:\s+[^\s/>=]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s\"'>]*))?)*\s*(/?)>",
    re.DOTALL,
)


def _text_parts(html: str) -> list[str]:
    """Text runs with _LINE/_PARA markers. A regex scan rather than html.parser: half the
    cost, and identical on what it is given (sanitize_html output, checked on the corpus)."""
    parts: list[str] = []
    skip = pre = 0
    cell_open = False
    pos = 0
    for m in _MARKUP.finditer(html):
        start = m.start()
        if start > pos and not skip:
            data = unescape(html[pos:start])
            parts.append(data.replace("\n", _LINE) if pre else data)
        pos = m.end()
        name = m.group(2)
        if name is None:  # comment, doctype, processing instruction
            continue
        tag = name.lower()
        if m.group(1):  # </tag>
            if tag in _SKIP_TAGS:
                skip = max(0, skip - 1)
            elif tag in _BLOCK_TAGS:
                parts.append(_PARA)
                if tag == "pre":
                    pre = max(0, pre - 1)
        elif m.group(3):  # <tag/>
            if tag == "br":
                parts.append(_LINE)
            elif tag in _BLOCK_TAGS:
                parts.append(_PARA)
        elif tag in _SKIP_TAGS:
            skip += 1
        elif tag == "br":
            parts.append(_LINE)
        elif tag in ("td", "th"):
            if cell_open:
                parts.append(" | ")
            cell_open = True
        elif tag in _BLOCK_TAGS:
            parts.append(_PARA)
            if tag == "tr":
                cell_open = False
            elif tag == "pre":
                pre += 1
    if pos < len(html) and not skip:
        data = unescape(html[pos:])
        parts.append(data.replace("\n", _LINE) if pre else data)
    return parts


def html_to_text(html: str) -> str:
    """Plain text of an HTML fragment: blocks as paragraphs separated by a blank line,
    <br> as a line break, whitespace normalised, entities decoded. Already what clean_text
    makes of it (a fixed point: tested)."""
    if not html:
        return ""
    paragraphs = []
    parts = _text_parts(html.replace(_LINE, "").replace(_PARA, ""))
    for chunk in "".join(parts).split(_PARA):
        lines = [clean_line(line, max_len=len(line) + 1) for line in chunk.split(_LINE)]
        text = "\n".join(line for line in lines if line)
        if text:
            paragraphs.append(text)
    return "\n\n".join(paragraphs)


# --------------------------------------------------------------------------- field hygiene

# C0 and C1 controls, DEL, the bidi embedding/override/isolate characters that let a title
# reorder the text around it, BOM/zero-width no-break space, and the BMP's noncharacters.
_CONTROL = re.compile(
    f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ufeff{BMP_NONCHARACTERS}]")
# Lone surrogates, and candidates for the noncharacters above the BMP (storable.py).
_NON_BMP = re.compile(f"[{SURROGATES}{ASTRAL_CANDIDATES}]")


def _fix_non_bmp(m: re.Match[str]) -> str:
    ch = m.group()
    if ch <= "\udfff":
        return "\ufffd"  # a lone surrogate
    return "" if is_astral_noncharacter(ch) else ch
_LINE_BREAKS = re.compile("\r\n|[\r\n\u2028\u2029\x85\x0b\x0c]")


def _hygiene(s: str) -> str:
    if not s.isascii():
        s = _NON_BMP.sub(_fix_non_bmp, s)
    s = _CONTROL.sub("", s)
    return unicodedata.normalize("NFC", s)


def _cap(s: str, max_len: int) -> str:
    if len(s) <= max_len:
        return s
    cut = s[: max_len - 1]
    space = cut.rfind(" ")
    if space > max_len * 0.6:
        cut = cut[:space]
    return cut.rstrip(" ,;:-") + "…"


def clean_line(s: str | None, max_len: int = 2000) -> str:
    """One-line field: controls, lone surrogates and bidi overrides removed, whitespace
    collapsed to single spaces, NFC, at most ``max_len`` characters (ellipsis when cut)."""
    if not s:
        return ""
    s = _LINE_BREAKS.sub(" ", s)
    s = " ".join(_hygiene(s).split())
    return _cap(s, max_len)


def clean_text(s: str) -> str:
    """Multi-line text: same hygiene as clean_line per line, line breaks kept, runs of blank
    lines reduced to one (a paragraph break)."""
    if not s:
        return ""
    lines = [" ".join(_hygiene(line).split()) for line in _LINE_BREAKS.sub("\n", s).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


# --------------------------------------------------------------------------- words, summary

# Han, kana and other scripts written without spaces: one word per character.
_CJK = re.compile(
    "[\u2e80-\u2fdf\u3005-\u3007\u3021-\u3029\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]"
)
# A word: a letter or digit, then letters, digits, combining marks (Indic vowel signs are
# not \w) and joiners, optionally joined by an apostrophe or hyphen ("don't", "e-mail").
_MARKS = "\u0300-\u036f\u0483-\u0489\u0591-\u05c7\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed\u0900-\u0dff\u0e31-\u0e3a\u0e47-\u0e4e\u1000-\u109f\u200c\u200d"
_WORD = re.compile(rf"[^\W_][\w{_MARKS}]*(?:['’\-][^\W_][\w{_MARKS}]*)*")


def word_count(text: str) -> int:
    """Words in any script; Chinese and Japanese count one word per character."""
    if not text:
        return 0
    cjk = len(_CJK.findall(text))
    rest = _CJK.sub(" ", text) if cjk else text
    return cjk + len(_WORD.findall(rest))


_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def summarize(text: str, max_chars: int = 400, *, normalized: bool = False) -> str:
    """The first paragraph(s) that fit in ``max_chars``; a longer first paragraph is cut at a
    word boundary and ends with an ellipsis. ``normalized``: ``text`` is html_to_text output
    (clean lines, paragraphs split by exactly one blank line), so no hygiene is redone."""
    out = ""
    # Lazily: a long article's later paragraphs are never cleaned.
    chunks = (text or "").split("\n\n") if normalized else _PARAGRAPH_BREAK.split(text or "")
    for raw in chunks:
        paragraph = raw.replace("\n", " ") if normalized else clean_line(raw, max_len=1_000_000)
        if not paragraph:
            continue
        if not out:
            if len(paragraph) > max_chars:
                return _cap(paragraph, max_chars)
            out = paragraph
            continue
        if len(out) + 2 + len(paragraph) > max_chars:
            break
        out = f"{out}\n\n{paragraph}"
    return out


# --------------------------------------------------------------------------- placeholders

_HAS_WORD_CHAR = re.compile(r"[^\W_]")
# What a teaser ends with where it was cut: an ellipsis, "[…]", "(...)", a dash.
_CUT_MARK = re.compile(r"(?:\s*(?:\[\s*(?:…|\.{2,})\s*\]|\(\s*(?:…|\.{2,})\s*\)|…|\.{2,}|[-–—]+))+\s*$")
_IMG = re.compile(r"<img\b", re.IGNORECASE)


def _comparable(text: str) -> str:
    return " ".join(text.casefold().split())


def is_placeholder(html: str, text: str, reference_text: str = "") -> bool:
    """Whether feed or article content is a stand-in rather than content, so that it must not
    replace ``reference_text`` (the other text the entry has: the feed's description, or the
    feed's content when an article arrives) nor be summarised.

    ``html`` is the sanitised content and ``text`` its html_to_text. Placeholder means:
    - no letter or digit in any script, and no image: empty after cleaning, "...", "…",
      "[…]", "—";
    - a proper prefix of ``reference_text`` (case and whitespace ignored), with or without a
      cut mark at its end ("Everyone wants…" for "Everyone wants good compression. But...").
    Equal texts are not placeholders of each other: either is the content.
    """
    if not _HAS_WORD_CHAR.search(text):
        return _IMG.search(html) is None  # a picture alone is content
    if not reference_text:
        return False
    mine = _comparable(text)
    other = _comparable(reference_text)
    if len(mine) >= len(other):
        return False
    if other.startswith(mine):
        return True
    stem = _CUT_MARK.sub("", mine)
    return bool(stem) and stem != mine and other.startswith(stem)


# --------------------------------------------------------------------------- articles


def clean_article(article: Article, url: str, *, feed_html: str = "",
                  feed_words: int | None = None,
                  normalize_url: Callable[[str], str] | None = None) -> CleanedArticle:
    """The one cleaning of an extracted article, for the pipeline's article path, `reprocess`
    and `aggregator extract`: sanitise against the page's final ``url``, plain text, word
    count, summary, absolute lead image, the canonical URL (escaped for storage, then
    ``normalize_url``: dedup's form, passed in because stages do not import each other).

    ``feed_html`` is the entry's (sanitised) feed content and ``feed_words`` its word count
    (counted from ``feed_html`` when not given): ``keeps_feed`` says the article must not
    replace it: it has no words, fewer words, or as many and is a stand-in of the feed's
    text (is_placeholder: the one case the counts cannot tell is a prefix cut inside a word).
    """
    html = sanitize_html(article.html, url)
    text = html_to_text(html)
    words = word_count(text)
    feed_text: str | None = None
    if feed_words is None:
        feed_text = html_to_text(feed_html)
        feed_words = word_count(feed_text)
    keeps_feed = words == 0 or words < feed_words or (
        words == feed_words and is_placeholder(
            html, text, html_to_text(feed_html) if feed_text is None else feed_text))
    canonical = None
    if article.canonical_url:
        canonical = escape_unstorable(article.canonical_url)
        if normalize_url is not None:
            canonical = normalize_url(canonical)
    return CleanedArticle(
        html=html, text=text, word_count=words,
        summary=summarize(text, normalized=True),
        canonical_url=canonical, image=absolute_url(article.image, url),
        keeps_feed=keeps_feed, method=article.method, title=article.title,
        author=article.author, language=article.language,
    )
