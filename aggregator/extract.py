"""Article pages to Article: decoding, preprocessing, main-content extraction, metadata.

Owns trafilatura, beautifulsoup4 and charset-normalizer. The HTML of the returned Article
is NOT sanitised (the clean stage does that). extract_article:

1. decode_html (bytes only): BOM, HTTP charset, <meta> charset, detection.
2. beautifulsoup4: one walk collects metadata (meta tags, JSON-LD, canonical, language,
   <h1>s) and images; the site rule is applied (strip, body); lazy images get their real
   source (data-src..., srcset, <noscript> fallbacks); captions are read from <figure>.
3. trafilatura on the page as received (or on the rule's body): main content as HTML with
   links, plus author and a fallback date. Images are off there: with them on, teaser
   lists and photo credits leak into the text (measured on the corpus).
4. Post-processing: each image is put back next to the extracted paragraph that holds the
   text around it (as <figure> with its <figcaption> when it had one); the title heading,
   date line and breadcrumbs repeated at the top are dropped; plain text is built.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import urljoin, urlsplit

import charset_normalizer
import trafilatura
from bs4 import (
    BeautifulSoup,
    Comment,
    MarkupResemblesLocatorWarning,
    NavigableString,
    SoupStrainer,
    Tag,
    XMLParsedAsHTMLWarning,
)
from soupsieve import SelectorSyntaxError

from aggregator.errors import ExtractError
from aggregator.models import Article, SiteRule

# trafilatura logs every discarded page at WARNING; our callers get an ExtractError instead.
logging.getLogger("trafilatura").setLevel(logging.ERROR)
logging.getLogger("htmldate").setLevel(logging.ERROR)
# XHTML pages with an XML declaration are still HTML to us; tiny pages are not file names.
warnings.filterwarnings("ignore", category=XMLParsedAsHTMLWarning)
warnings.filterwarnings("ignore", category=MarkupResemblesLocatorWarning)

# Guards against hostile or broken pages: the parse cost grows with the number of tags, and
# 100,000 tags already take seconds in trafilatura. Real article pages stay far below (the
# largest corpus page has ~10,000 "<").
MAX_BYTES = 10 * 1024 * 1024
MAX_TAGS = 40_000

_BS4_PARSER = "lxml"  # the fastest tree builder bs4 offers; html.parser is ~3x slower

# --------------------------------------------------------------------------- decoding

# WHATWG maps these labels to supersets; decoding with the narrow codec garbles real pages
# (cp1252 quotes in "iso-8859-1" pages, GBK characters in "gb2312" pages...).
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "ascii": "cp1252",
    "us-ascii": "cp1252",
    "iso-8859-9": "cp1254",
    "latin5": "cp1254",
    "iso-8859-11": "cp874",
    "tis-620": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "gb_2312-80": "gb18030",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "windows-31j": "cp932",
    "big5": "big5hkscs",
    "utf-16": "utf-8",  # a <meta> cannot truthfully declare UTF-16 (it would be unreadable)
    "utf-16le": "utf-8",
    "utf-16be": "utf-8",
    "x-user-defined": "cp1252",
}

_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: same first two bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

_META_CHARSET = re.compile(
    rb"""<meta[^>]+?charset\s*=\s*["']?\s*([A-Za-z0-9._:\-]+)""", re.IGNORECASE
)
_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9._\-]+)""")
_PRESCAN_BYTES = 8192
_DETECT_BYTES = 65536


def _codec(label: str | None) -> str | None:
    """Python codec for a charset label, or None when the label is unknown."""
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    label = _CHARSET_ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def _valid_utf8_with_multibyte(body: bytes) -> bool:
    """True when the bytes are strict UTF-8 and use at least one non-ASCII character."""
    if body.isascii():
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _declared_charset(body: bytes) -> str | None:
    head = body[:_PRESCAN_BYTES]
    m = _XML_ENCODING.match(head) or _META_CHARSET.search(head)
    return _codec(m.group(1).decode("ascii", "replace")) if m else None


def _detect(body: bytes) -> str:
    try:
        body.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    best = charset_normalizer.from_bytes(body[:_DETECT_BYTES]).best()
    return _codec(best.encoding if best else None) or "cp1252"


def decode_html(body: bytes, charset: str | None = None) -> str:
    """Bytes of an HTML page to text.

    Order: BOM, the HTTP charset (when Python knows it), <meta charset> / http-equiv /
    XML declaration, then detection. A declared single- or multi-byte charset loses to UTF-8
    when the bytes are valid UTF-8 with non-ASCII characters: such a coincidence does not
    happen in real text, while mislabelled UTF-8 pages are common.
    """
    for bom, name in _BOMS:
        if body.startswith(bom):
            return body[len(bom) :].decode(name, errors="replace").replace("\x00", "")
    encoding = _codec(charset) or _declared_charset(body)
    if encoding is None:
        encoding = _detect(body)
    elif encoding != "utf-8" and _valid_utf8_with_multibyte(body):
        encoding = "utf-8"
    elif encoding == "utf-8":
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            # Declared UTF-8 but is not: trust the bytes (old pages behind new servers).
            encoding = _detect(body)
    return body.decode(encoding, errors="replace").replace("\x00", "")


# --------------------------------------------------------------------------- preprocessing

_LAZY_SRC_ATTRS = ("data-src", "data-lazy-src", "data-original", "data-lazy", "data-url")
_LAZY_SRCSET_ATTRS = ("data-srcset", "data-lazy-srcset")
_PLACEHOLDER = re.compile(
    r"^data:|blank\.|spacer\.|pixel\.|placeholder|transparent\.|lazy[-_.]|loading\.|/1x1\.|gr[ae]y\.gif",
    re.IGNORECASE,
)
# Pictures that are never article images, judged by their file path.
_NOT_CONTENT_IMAGE = re.compile(
    r"logo|icon|avatar|sprite|emoji|gravatar|badge|button|banner[-_]?ad|/ads?/|pixel|spacer|1x1",
    re.IGNORECASE,
)


def _is_placeholder(src: object) -> bool:
    return not isinstance(src, str) or not src.strip() or bool(_PLACEHOLDER.search(src.strip()))


def _best_from_srcset(srcset: object) -> str | None:
    """The largest candidate of a srcset ("a.jpg 320w, b.jpg 640w" or "a.jpg 1x, b.jpg 2x")."""
    if not isinstance(srcset, str):
        return None
    best: tuple[float, str] | None = None
    for part in srcset.split(","):
        bits = part.split()
        if not bits or _is_placeholder(bits[0]):
            continue
        size = 1.0
        if len(bits) > 1 and re.fullmatch(r"\d+(\.\d+)?[wx]", bits[1]):
            size = float(bits[1][:-1])
        if best is None or size > best[0]:
            best = (size, bits[0])
    return best[1] if best else None


def _real_src(img: Tag) -> str | None:
    """The image a browser running the page's lazy-loading script would end up showing."""
    for attr in _LAZY_SRC_ATTRS:
        value = img.get(attr)
        if isinstance(value, str) and not _is_placeholder(value):
            return value.strip()
    src = img.get("src")
    if isinstance(src, str) and not _is_placeholder(src):
        return src.strip()
    for attr in (*_LAZY_SRCSET_ATTRS, "srcset"):
        best = _best_from_srcset(img.get(attr))
        if best:
            return best
    picture = img.find_parent("picture")
    if picture is not None:
        for source in picture.find_all("source"):
            best = _best_from_srcset(source.get("data-srcset") or source.get("srcset"))
            if best:
                return best
    return None


def _abs(url: object, base: str) -> str | None:
    """Absolute http(s) URL, or None."""
    if not isinstance(url, str) or not url.strip():
        return None
    url = re.sub(r"[\t\n\r]", "", url).strip()
    try:
        joined = urljoin(base, url) if base else url
        return joined if urlsplit(joined).scheme in ("http", "https") else None
    except ValueError:
        return None


def _fix_images(page: _Page, base: str) -> None:
    """Give every <img> its real, absolute src; swap placeholders for <noscript> fallbacks."""
    for noscript in page.noscripts:
        if noscript.decomposed:
            continue
        fallback = noscript.find("img")
        if fallback is None:
            noscript.decompose()  # "please enable JavaScript" is never content
            continue
        placeholder = None
        for candidate in (
            noscript.find_previous_sibling("img"),
            noscript.parent.find("img") if noscript.parent else None,
        ):
            if (
                isinstance(candidate, Tag)
                and candidate is not fallback
                and _is_placeholder(candidate.get("src"))
            ):
                placeholder = candidate
                break
        if placeholder is not None:
            placeholder.replace_with(fallback.extract())
            noscript.decompose()
        else:
            noscript.unwrap()
    for img in page.imgs:
        if img.decomposed:
            continue
        src = _abs(_real_src(img), base)
        if src is None:
            img.decompose()
            continue
        img["src"] = src
        for attr in (*_LAZY_SRC_ATTRS, *_LAZY_SRCSET_ATTRS, "srcset", "sizes"):
            if attr in img.attrs:
                del img[attr]


@dataclass
class _Image:
    """A candidate article image and the text around it, to place it in the extracted body."""

    src: str
    alt: str
    caption: str
    before: str  # comparison key of the text that follows the image (the image sits before it)
    after: str  # comparison key of the text that precedes it


_ANCHOR_MIN = 20  # characters of comparison key: shorter keys match by chance
_ANCHOR_MAX = 80
_ANCHOR_SCAN = 60  # text nodes looked at on each side


def _anchor(nodes: Iterator[Any], skip: Tag | None, backwards: bool) -> str:
    """Comparison key of the first text met walking from an image (either direction)."""
    words: list[str] = []
    length = 0
    for count, node in enumerate(nodes):
        if count >= _ANCHOR_SCAN:
            break
        if not isinstance(node, NavigableString) or isinstance(node, Comment):
            continue
        if skip is not None and any(parent is skip for parent in node.parents):
            continue  # the image's own caption
        if node.parent is not None and node.parent.name in ("script", "style", "title"):
            continue
        key = _norm(str(node))
        if not key:
            continue
        words = [key, *words] if backwards else [*words, key]
        length += len(key) + 1
        if length > _ANCHOR_MIN:
            break
    key = " ".join(words)
    if len(key) < _ANCHOR_MIN:
        return ""
    return key[-_ANCHOR_MAX:] if backwards else key[:_ANCHOR_MAX]


def _small(img: Tag) -> bool:
    for attr in ("width", "height"):
        value = img.get(attr)
        if isinstance(value, str) and value.strip().isdigit() and int(value) <= 32:
            return True
    return False


_IMAGE_FILE = re.compile(r"\.(jpe?g|png|gif|webp|avif|bmp|tiff?)$", re.IGNORECASE)


def _teaser_or_aside(img: Tag, base: str) -> bool:
    """Images that illustrate something else: links to other pages (teasers, ads) and
    images in asides, navigation or footers. Links to the image file, to this page or to
    scripts (lightboxes) are fine."""
    link = img.find_parent("a")
    target = _abs(link.get("href"), base) if link is not None else None
    if target is not None:
        path = urlsplit(target).path
        if path != urlsplit(base).path and not _IMAGE_FILE.search(path):
            return True
    return img.find_parent(["aside", "nav", "footer"]) is not None


def _collect_images(page: _Page, base: str) -> list[_Image]:
    """Candidate content images in page order, with caption and surrounding text.

    trafilatura extracts better text with images off (with images on, image-rich teaser
    lists and figure credits leak in), so images are placed back by their neighbouring text:
    an image whose neighbours did not make it into the article was not part of it.
    """
    images: list[_Image] = []
    seen: set[str] = set()
    for img in page.imgs:
        if img.decomposed:
            continue
        src = img.get("src")
        if (
            not isinstance(src, str)
            or src in seen
            or _small(img)
            or _NOT_CONTENT_IMAGE.search(urlsplit(src).path)
        ):
            continue
        if _teaser_or_aside(img, base):
            continue
        seen.add(src)
        figure = img.find_parent("figure")
        caption_tag = figure.find("figcaption") if figure is not None else None
        caption = _squash(caption_tag.get_text(" ")) if isinstance(caption_tag, Tag) else ""
        alt = img.get("alt")
        images.append(
            _Image(
                src=src,
                alt=_squash(alt) if isinstance(alt, str) else "",
                caption=caption,
                before=_anchor(img.next_elements, figure, backwards=False),
                after=_anchor(img.previous_elements, figure, backwards=True),
            )
        )
    return images


def _apply_rule(soup: BeautifulSoup, rule: SiteRule, url: str) -> list[Tag]:
    """Remove rule.strip matches; return the rule.body matches (empty list: no body rule)."""
    try:
        for selector in rule.strip:
            for node in soup.select(selector):
                if not node.decomposed:
                    node.decompose()
        matches = list(soup.select(rule.body)) if rule.body else []
    except (SelectorSyntaxError, ValueError) as exc:
        raise ExtractError("bad_rule", f"{url}: invalid CSS selector in site rule: {exc}") from exc
    # Drop matches nested in other matches: their content is already included once.
    chosen = set(map(id, matches))
    return [m for m in matches if not any(id(p) in chosen for p in m.parents)]


def validate_rule(rule: SiteRule) -> list[str]:
    """Problems with a site rule's CSS selectors (empty when all parse), for config checks."""
    problems = []
    probe = BeautifulSoup("<p></p>", "html.parser")
    for selector in ((rule.body,) if rule.body else ()) + tuple(rule.strip):
        try:
            probe.select(selector)
        except (SelectorSyntaxError, ValueError) as exc:
            problems.append(f"invalid CSS selector {selector!r}: {exc}")
    return problems


# --------------------------------------------------------------------------- page metadata


@dataclass
class _Page:
    """What one walk over the parsed page collects (bs4's find() walks the whole tree per
    call; a dozen of them cost more than trafilatura itself)."""

    meta: dict[str, str] = field(default_factory=dict)  # property/name/itemprop -> content
    canonical: str | None = None
    lang: str | None = None
    json_ld: list[str] = field(default_factory=list)
    times: list[str] = field(default_factory=list)  # datetime of <time> inside <article>/<main>
    imgs: list[Tag] = field(default_factory=list)
    noscripts: list[Tag] = field(default_factory=list)
    comments: list[Comment] = field(default_factory=list)
    title: str | None = None
    h1: list[str] = field(default_factory=list)


def _scan(soup: BeautifulSoup) -> _Page:
    page = _Page()
    for node in soup.descendants:
        if isinstance(node, Comment):
            page.comments.append(node)
            continue
        if not isinstance(node, Tag):
            continue
        name = node.name
        if name == "img":
            page.imgs.append(node)
        elif name == "meta":
            key = (
                node.get("property")
                or node.get("name")
                or node.get("itemprop")
                or node.get("http-equiv")
            )
            content = node.get("content")
            if isinstance(key, str) and isinstance(content, str) and content.strip():
                page.meta.setdefault(key.strip().lower(), content.strip())
        elif name == "link":
            rel = node.get("rel")
            rels = rel if isinstance(rel, list) else str(rel or "").split()
            if page.canonical is None and "canonical" in (r.lower() for r in rels):
                href = node.get("href")
                page.canonical = href if isinstance(href, str) else None
        elif name == "noscript":
            page.noscripts.append(node)
        elif name == "script":
            if str(node.get("type") or "").lower() == "application/ld+json" and node.string:
                page.json_ld.append(str(node.string))
        elif name == "time":
            value = node.get("datetime")
            if isinstance(value, str) and node.find_parent(["article", "main"]) is not None:
                page.times.append(value)
        elif name == "html" and page.lang is None:
            lang = node.get("lang") or node.get("xml:lang")
            page.lang = lang if isinstance(lang, str) else None
        elif name == "title" and page.title is None:
            page.title = node.get_text(" ", strip=True) or None
        elif name == "h1" and len(page.h1) < 5:
            page.h1.append(node.get_text(" ", strip=True))
        if name not in ("meta", "time") and node.get("itemprop") == "datePublished":
            value = node.get("content") or node.get("datetime")
            if isinstance(value, str):
                page.meta.setdefault("datepublished", value)
    return page


def _meta(page: _Page, *names: str) -> str | None:
    for name in names:
        if name in page.meta:
            return page.meta[name]
    return None


def _parse_datetime(value: object) -> datetime | None:
    """ISO 8601 (as found in meta tags, JSON-LD, <time datetime>) to aware UTC."""
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    if re.fullmatch(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?[+-]\d{4}", value):
        value = value[:-2] + ":" + value[-2:]  # "+0400" -> "+04:00" for fromisoformat
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if not 1990 <= parsed.year <= datetime.now(UTC).year + 1:
        return None
    return parsed.astimezone(UTC)


def _json_ld_values(page: _Page, key: str) -> Iterator[Any]:
    """Every value of ``key`` in the page's JSON-LD blocks (any nesting, @graph included)."""
    for script in page.json_ld:
        try:
            data = json.loads(script)
        except (ValueError, RecursionError):
            continue
        stack = [data]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if key in node:
                    yield node[key]
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)


def _published(page: _Page) -> datetime | None:
    """Publication time with its time of day: meta tags, JSON-LD, itemprop, <time>."""
    candidates: list[object] = [
        _meta(
            page,
            "article:published_time",
            "og:published_time",
            "datepublished",
            "pubdate",
            "date",
            "dc.date",
        ),
        *_json_ld_values(page, "datePublished"),
        # the first dated <time> of the article itself (a page header may show today's date)
        *page.times[:1],
    ]
    for candidate in candidates:
        parsed = _parse_datetime(candidate)
        if parsed is not None:
            return parsed
    return None


def _language(page: _Page) -> str | None:
    for value in (page.lang, _meta(page, "content-language", "og:locale", "language")):
        if isinstance(value, str):
            primary = re.split(r"[-_,;\s]", value.strip(), maxsplit=1)[0].lower()
            if re.fullmatch(r"[a-z]{2,3}", primary):
                return primary
    return None


# --------------------------------------------------------------------------- trafilatura

_TRAFILATURA_OPTIONS: dict[str, Any] = {
    "with_metadata": True,
    "include_images": False,  # placed back by _place_images
    "include_links": True,
    "include_formatting": False,  # on, trafilatura loses body text on some pages
    "include_tables": True,
    "include_comments": False,
    "output_format": "txt",  # only the tree is used; "python" would also render text
}

_HI = {"#b": "strong", "#i": "em", "#u": "u", "#t": "code", "#sub": "sub", "#sup": "sup"}
_SIMPLE = {
    "p": "p", "quote": "blockquote", "code": "pre", "table": "table", "row": "tr", "item": "li",
    "del": "s", "div": "div", "lb": "br", "figure": "figure",
}  # fmt: skip
_VOID = {"br", "img"}


def _html_tag(elem: Any) -> tuple[str | None, str]:
    """HTML tag and attribute string for one element of trafilatura's XML output."""
    tag, rend = elem.tag, elem.get("rend") or ""
    if tag == "head":
        return (rend if re.fullmatch(r"h[1-6]", rend) else "h3"), ""
    if tag == "list":
        return ("ol" if rend == "ol" else "ul"), ""
    if tag == "hi":
        return _HI.get(rend, "em"), ""
    if tag == "cell":
        return ("th" if elem.get("role") == "head" else "td"), ""
    if tag == "ref":
        target = elem.get("target")
        return "a", f' href="{escape(target)}"' if target else ""
    if tag == "graphic":
        src = elem.get("src")
        return ("img", f' src="{escape(src)}"') if src else (None, "")
    return _SIMPLE.get(tag), ""


def _xml_to_html(body: Any) -> str:
    """trafilatura's XML tree as HTML, without the whitespace that pretty printing adds
    between inline elements (it would split words such as "NDR-Recherchen")."""
    parts: list[str] = []

    def walk(elem: Any) -> None:
        name, attrs = _html_tag(elem) if isinstance(elem.tag, str) else (None, "")
        if name:
            parts.append(f"<{name}{attrs}>")
        if elem.text and isinstance(elem.tag, str):
            parts.append(escape(elem.text, quote=False))
        for child in elem:
            walk(child)
        if name and name not in _VOID:
            parts.append(f"</{name}>")
        if elem.tail:
            parts.append(escape(elem.tail, quote=False))

    if body.text:
        parts.append(escape(body.text, quote=False))
    for child in body:
        walk(child)
    return "".join(parts)


# --------------------------------------------------------------------------- post-processing

_BLOCKS = tuple(
    "p h1 h2 h3 h4 h5 h6 li blockquote pre figure figcaption ul ol table tr div".split()
)

_MONTHS_AND_DATE_WORDS = {
    # Stems (first three or four letters, case-folded) of months, weekdays and "published /
    # updated" in the languages of the region and of the corpus.
    *"janu febr marc apri may june july augu sept octo nove dece".split(),
    *"jan feb mar apr jun jul aug sep oct nov dec".split(),
    *"mond tues wedn thur frid satu sund publ upda post last modi".split(),
    *"янва февр март апре мая май июня июнь июля июль авгу сент октя нояб дека".split(),
    *"поне втор сред четв пятн субб воск опуб обно".split(),
    *"հունվ փետր մարտ ապրի մայի հունի հուլի օգոս սեպտ հոկտ նոյե դեկտ".split(),
    *"yanv fevr mart apre iyun iyul avqu sent okty noya deka".split(),
    *"იანვ თებე მარტ აპრი მაის ივნი ივლი აგვი სექტ ოქტო ნოემ დეკე".split(),
    *"janv févr mars avri juin juil août sept octo nove déce".split(),
    *"ener febr marz abri mayo juni juli agos sept octu novi dici".split(),
    *"janu febr märz apri juni juli augu sept okto nove deze stand".split(),
}


def _squash(text: str) -> str:
    return " ".join(text.split())


def _norm(text: str) -> str:
    """Comparison key: case-folded words without punctuation."""
    return " ".join(re.findall(r"\w+", text.casefold()))


def _is_date_line(text: str) -> bool:
    """A short line made of a date, a time and words such as "Published" or "Updated"."""
    if len(text) > 80:
        return False
    words = re.findall(r"\w+", text.casefold())
    if not words or not any(w.isdigit() for w in words):
        return False
    dateish = sum(
        1
        for w in words
        if w.isdigit()
        or len(w) <= 2
        or w[:4] in _MONTHS_AND_DATE_WORDS
        or w[:3] in _MONTHS_AND_DATE_WORDS
    )
    return dateish >= 0.8 * len(words)


_BREADCRUMB_START = re.compile(
    r"^\s*(home|main page|главная|գլխավոր|ana səhifə|მთავარი|startseite|accueil|inicio)\b",
    re.IGNORECASE,
)
_BREADCRUMB_SEP = re.compile(r"\s[»›>/•|→]\s|^\s*[•›»]")


def _is_breadcrumb(text: str, title_key: str) -> bool:
    if len(text) > 200:
        return False
    if _BREADCRUMB_START.search(text) and len(text.split()) <= 25:
        return True
    return bool(_BREADCRUMB_SEP.search(text)) and bool(title_key) and title_key in _norm(text)


def _drop_metadata_repeats(body: Tag, titles: list[str]) -> None:
    """Remove what repeats the metadata at the top: title heading, date line, breadcrumbs."""
    keys = {k for k in map(_norm, titles) if k}
    title_key = _norm(titles[0]) if titles else ""
    for heading in body.find_all("h1"):
        if _norm(heading.get_text(" ")) in keys:
            heading.decompose()
    seen = 0
    for block in [c for c in body.children if isinstance(c, Tag)]:
        if block.name in ("figure", "img") or block.find("img") is not None:
            continue
        text = _squash(block.get_text(" "))
        if not text:
            continue
        if _norm(text) in keys or _is_date_line(text) or _is_breadcrumb(text, title_key):
            block.decompose()
            continue
        seen += 1
        if len(text) > 150 or seen >= 4:
            break  # the article proper has begun
    for img in body.find_all("img"):
        alt = img.get("alt")
        if isinstance(alt, str) and _norm(alt) in keys:
            del img["alt"]  # the image alt is the title a third time (seen on real outlets)
    for caption in body.find_all("figcaption"):
        if _norm(caption.get_text(" ")) in keys:
            caption.decompose()  # a "caption" that only repeats the title


_TITLE_SEPARATORS = re.compile(r"\s*(?:[|–—·:»]|\s-)\s*")


def _choose_title(page: _Page, extracted: str | None) -> str | None:
    """The headline: the page's <h1> when it agrees with the declared titles (og:title,
    <title>, trafilatura's), else the declared title without a " | Site name" suffix.

    On the corpus the <h1> matches the reference headline far more often than og:title or
    <title>, which carry site names and kickers; requiring agreement skips logo <h1>s.
    """
    site = _norm(_meta(page, "og:site_name", "application-name") or "")
    candidates = (extracted, _meta(page, "og:title", "twitter:title"), page.title)
    declared = [t for t in candidates if t and _norm(t) and _norm(t) != site]
    reference = " ".join(_norm(t) for t in declared)
    longest = max((len(_norm(t)) for t in declared), default=0)
    for h1 in page.h1:
        key = _norm(h1)
        if len(key) >= 10 and key != site and key in reference and len(key) >= 0.4 * longest:
            return _squash(h1)
    if not declared:
        return _squash(page.h1[0]) if page.h1 and page.h1[0].strip() else None
    title = _squash(declared[0])
    if site:  # "Headline | Site", "Site - Headline"
        for sep in reversed(list(_TITLE_SEPARATORS.finditer(title))):
            if _norm(title[sep.end() :]) == site:
                return title[: sep.start()]
        for sep in _TITLE_SEPARATORS.finditer(title):
            if _norm(title[: sep.start()]) == site:
                return title[sep.end() :]
    return title


def _figure(soup: BeautifulSoup, image: _Image) -> Tag:
    attrs = {"src": image.src}
    if image.alt:
        attrs["alt"] = image.alt
    img = soup.new_tag("img", attrs=attrs)
    if not image.caption:
        return img
    figure = soup.new_tag("figure")
    figure.append(img)
    figcaption = soup.new_tag("figcaption")
    figcaption.string = image.caption
    figure.append(figcaption)
    return figure


def _place_images(soup: BeautifulSoup, body: Tag, images: list[_Image]) -> list[_Image]:
    """Insert each image next to the extracted block that holds its neighbouring text.

    Returns the images placed, in page order.
    """
    blocks = [
        (child, _norm(child.get_text(" "))) for child in body.children if isinstance(child, Tag)
    ]
    placed: list[_Image] = []
    last_after: dict[int, Tag] = {}
    for image in images:
        target = None
        if image.before:
            target = next((b for b, key in blocks if image.before in key), None)
        if target is not None:
            target.insert_before(_figure(soup, image))
        elif (
            image.after
            and (target := next((b for b, key in blocks if image.after in key), None)) is not None
        ):
            anchor = last_after.get(id(target), target)
            node = _figure(soup, image)
            anchor.insert_after(node)
            last_after[id(target)] = node
        else:
            continue
        placed.append(image)
    return placed


def _drop_empty(body: Tag) -> None:
    for block in body.find_all(
        ["p", "li", "blockquote", "div", "h2", "h3", "h4", "h5", "h6", "a", "strong", "em"]
    ):
        if not block.decomposed and not block.get_text(strip=True) and block.find("img") is None:
            block.decompose()


def _block_text(body: Tag) -> str:
    """Plain text: blocks as paragraphs separated by a blank line, <br> as a line break."""
    for br in body.find_all("br"):
        br.replace_with("\x01")
    for block in body.find_all(_BLOCKS):
        block.insert_before("\x02")
        block.append("\x02")
    paragraphs = []
    for chunk in body.get_text().split("\x02"):
        lines = [_squash(line) for line in chunk.split("\x01")]
        text = "\n".join(line for line in lines if line)
        if text:
            paragraphs.append(text)
    return "\n\n".join(paragraphs)


# --------------------------------------------------------------------------- extraction


def extract_article(
    body: bytes | str,
    url: str,
    *,
    charset: str | None = None,
    rule: SiteRule | None = None,
    fast: bool = False,
) -> Article:
    """Main content and metadata of an article page; raises ExtractError(kind, message).

    ``fast`` skips trafilatura's fallback extractors (readability, jusText): on the corpus
    ~10 % less CPU in all, for ~3 points less recall (bench/bench_extract.py --variants).

    Kinds: ``empty`` (no bytes or only whitespace), ``too_large`` (bytes or tag count over the
    guards), ``no_content`` (no article text found), ``too_deep`` (nesting beyond recursion),
    ``bad_rule`` (invalid CSS selector in the site rule).
    """
    if isinstance(body, bytes):
        if len(body) > MAX_BYTES:
            raise ExtractError("too_large", f"{url}: page of {len(body)} bytes exceeds {MAX_BYTES}")
        text = decode_html(body, charset)
    else:
        text = body.replace("\x00", "")
    if not text.strip():
        raise ExtractError("empty", f"{url}: empty page")
    if len(text) > MAX_BYTES:
        raise ExtractError(
            "too_large", f"{url}: page of {len(text)} characters exceeds {MAX_BYTES}"
        )
    tags = text.count("<")
    if tags > MAX_TAGS:
        raise ExtractError(
            "too_large", f"{url}: page has {tags} tags, more than the {MAX_TAGS} allowed"
        )
    try:
        return _extract(text, url, rule, fast)
    except RecursionError as exc:
        raise ExtractError("too_deep", f"{url}: page nested too deeply to parse") from exc


def _extract(html: str, url: str, rule: SiteRule | None, fast: bool) -> Article:
    soup = BeautifulSoup(html, _BS4_PARSER)
    page = _scan(soup)
    for comment in page.comments:
        comment.extract()  # commented-out markup must not come back as content

    published = _published(page)
    language = _language(page)
    canonical = _abs(page.canonical, url) or _abs(_meta(page, "og:url"), url)
    description = _meta(page, "og:description", "description", "twitter:description")
    meta_image = _abs(_meta(page, "og:image", "og:image:url", "twitter:image"), url)

    rule_body = _apply_rule(soup, rule, url) if rule is not None else []
    _fix_images(page, url)
    images = _collect_images(page, url)
    rule_html = "".join(str(node) for node in rule_body if not node.decomposed)
    if rule_body:
        # <head> stays so that trafilatura still reads title, author and date from meta tags.
        head = soup.find("head")
        source = f"<html>{head if head is not None else ''}<body><article>{rule_html}</article></body></html>"
        method = "rule+trafilatura"
    else:
        # The page as received: a bs4 round trip collapses whitespace-only strings and
        # normalises class attributes, which changes trafilatura's choices (for the worse
        # on the corpus). Image fixes need not reach trafilatura: images are placed after.
        source = html
        method = "trafilatura"

    # No free-text date search (dateparser: up to 0.7 s a page); meta tags have been read.
    date_params = {
        "original_date": True,
        "extensive_search": False,
        "max_date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }
    document: Any = trafilatura.bare_extraction(  # a Document: as_dict is not set
        source,
        url=url or None,
        fast=fast,
        date_extraction_params=date_params,
        **_TRAFILATURA_OPTIONS,
    )
    found = document is not None and document.body is not None and len(document.body) > 0
    if not found and not rule_body:
        raise ExtractError("no_content", f"{url}: no article text found")
    extracted_title = document.title if found else None
    title = _choose_title(page, extracted_title)
    titles = [t for t in (title, extracted_title, _meta(page, "og:title")) if t]
    for image in images:
        if image.caption and _norm(image.caption) in {_norm(t) for t in titles}:
            image.caption = ""  # a "caption" that only repeats the title
    if found:
        out = BeautifulSoup(f"<html><body>{_xml_to_html(document.body)}</body></html>", _BS4_PARSER)
        author, date = document.author, document.date
        result = out.body
        placed = _place_images(out, result, images) if result is not None else []
    else:
        # The rule names the body: trust it even where trafilatura finds too little text.
        out = BeautifulSoup(f"<html><body>{rule_html}</body></html>", _BS4_PARSER)
        author, date, method = _meta(page, "author", "article:author"), None, "rule"
        result = out.body
        placed = [i for i in images if result is not None and result.find("img", src=i.src)]
    if result is None:
        raise ExtractError("no_content", f"{url}: no article text found")

    _drop_metadata_repeats(result, titles)
    _drop_empty(result)
    content_html = "".join(str(child) for child in result.children).strip()
    text = _block_text(result)
    if not text and not placed:
        raise ExtractError("no_content", f"{url}: no article text found")

    lead = _lead_image(meta_image, placed)
    return Article(
        html=content_html,
        text=text,
        title=_squash(title) if title else None,
        author=_squash(author) if author else None,
        published=published or _parse_datetime(date),  # trafilatura's date: a day, no time
        image=lead.src if lead else meta_image,
        image_caption=(lead.caption or None) if lead else None,
        language=language,
        canonical_url=canonical,
        method=method,
        description=_squash(description) if description else None,
    )


def _lead_image(meta_image: str | None, placed: list[_Image]) -> _Image | None:
    """The page's declared image (og:image) if it is in the body, else the first body image."""
    if meta_image:
        path = urlsplit(meta_image).path
        for image in placed:
            if image.src == meta_image or urlsplit(image.src).path == path:
                return _Image(meta_image, image.alt, image.caption, "", "")
        return None
    return placed[0] if placed else None


# --------------------------------------------------------------------------- feed discovery

# Types a page uses to announce its feeds. Plain application/json is left out: WordPress
# announces its REST API with it.
_FEED_TYPES = frozenset(
    {"application/rss+xml", "application/atom+xml", "application/rdf+xml", "application/feed+json"}
)


def discover_feeds(
    body: bytes | str, url: str, *, charset: str | None = None
) -> list[tuple[str, str | None]]:
    """Feeds an HTML page announces with <link rel="alternate" type="...">: (absolute URL,
    title) in page order, without duplicates. Raises ExtractError("too_large") like
    extract_article for oversized pages."""
    text = decode_html(body, charset) if isinstance(body, bytes) else body
    if len(text) > MAX_BYTES:
        raise ExtractError(
            "too_large", f"{url}: page of {len(text)} characters exceeds {MAX_BYTES}"
        )
    found: list[tuple[str, str | None]] = []
    for link in BeautifulSoup(text, _BS4_PARSER, parse_only=SoupStrainer("link")).find_all("link"):
        rel = link.get("rel")
        rels = rel if isinstance(rel, list) else str(rel or "").split()
        kind = str(link.get("type") or "").split(";")[0].strip().lower()
        if "alternate" not in (r.lower() for r in rels) or kind not in _FEED_TYPES:
            continue
        href = _abs(link.get("href"), url)
        title = link.get("title")
        if href and href not in (f for f, _ in found):
            found.append(
                (href, _squash(title) if isinstance(title, str) and title.strip() else None)
            )
    return found
