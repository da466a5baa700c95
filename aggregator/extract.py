"""Article pages to Article: decoding, preprocessing, main-content extraction, metadata.

Owns trafilatura, jusText, lxml, htmldate, beautifulsoup4 and charset-normalizer. The HTML of the
returned Article is NOT sanitised (the clean stage does that). extract_article:

1. decode_html (bytes only): BOM, HTTP charset, <meta> charset, detection.
2. A site rule, when there is one, is applied with beautifulsoup4 (strip, body).
3. lxml parses the page once, with trafilatura's parser settings. One pass over the tree
   collects metadata (meta tags, JSON-LD, canonical, language, <h1>s; without a declared
   author, trafilatura's byline search runs on the page body); lazy images get their
   real source (data-src..., srcset, <noscript> fallbacks) and are collected with their
   captions and surrounding text. Images are off in trafilatura (with them on, teaser lists
   and photo credits leak into the text, measured on the corpus), so these fixes do not
   change what it extracts.
4. trafilatura's extraction cascade runs on the same tree (_trafilatura): its fallback
   extractors (readability, jusText) only when its own extraction found little text; its
   regular-expression XPaths and jusText's paragraph maker replaced, while it runs, by
   equivalents that give the same results at a fraction of the cost (_accelerated).
5. Post-processing on trafilatura's output tree: each image is put back next to the
   extracted paragraph that holds the text around it (as <figure> with its <figcaption>
   when it had one); the title heading, date line and breadcrumbs repeated at the top are
   dropped, and so are "Read also: <link>" lines and standalone picture credits; HTML and
   plain text are written out.

Per page this is about 60 % of trafilatura.extract's default CPU cost
(bench/bench_extract.py).
"""

from __future__ import annotations

import codecs
import json
import logging
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from copy import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from hashlib import sha256
from html import escape, unescape
from typing import Any
from urllib.parse import urljoin, urlsplit

import charset_normalizer
import htmldate
from bs4 import (
    BeautifulSoup,
    MarkupResemblesLocatorWarning,
    SoupStrainer,
    XMLParsedAsHTMLWarning,
)
from justext.core import ParagraphMaker
from justext.paragraph import Paragraph
from lxml import etree
from lxml.html import HtmlComment, HtmlElement, HtmlEntity, HtmlProcessingInstruction
from soupsieve import SelectorSyntaxError
from trafilatura import external as _tf_external
from trafilatura import main_extractor as _tf_main
from trafilatura.baseline import baseline, html2txt
from trafilatura.core import (
    ESCALATION_ACCEPT_RATIO,
    ESCALATION_JUSTEXT_RATIO,
    ESCALATION_MAX_LENGTH,
    ESCALATION_PAGE_SHARE,
)
from trafilatura.external import compare_extraction, justext_rescue
from trafilatura.htmlprocessing import convert_tags, prune_unwanted_nodes, tree_cleaning
from trafilatura.json_metadata import normalize_authors
from trafilatura.main_extractor import extract_content
from trafilatura.settings import BASIC_CLEAN_XPATH, Extractor
from trafilatura.utils import DOCTYPE_TAG, FAULTY_HTML, repair_faulty_html
from trafilatura.xml import delete_element
from trafilatura.xpaths import (
    BODY_XPATH,
    OVERALL_DISCARD_XPATH,
    RAW_TREE_PRUNE_XPATH,
    REMOVE_COMMENTS_AND_LISTS_XPATH,
)

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
    return _decode(body, charset)[0]


def _decode(body: bytes, charset: str | None) -> tuple[str, bool]:
    """decode_html(body, charset), and whether the text is body decoded as strict UTF-8 (the
    text encoded in UTF-8 is then body itself)."""
    for bom, name in _BOMS:
        if body.startswith(bom):
            return body[len(bom) :].decode(name, errors="replace").replace("\x00", ""), False
    encoding = _codec(charset) or _declared_charset(body)
    # The strict UTF-8 decoding that tests the bytes is the text when it succeeds (the page
    # is decoded once).
    text = None
    if encoding != "utf-8" and (encoding is None or not body.isascii()):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            if encoding is None:
                encoding = _detect(body)
    elif encoding == "utf-8":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            # Declared UTF-8 but is not: trust the bytes (old pages behind new servers).
            encoding = _detect(body)
    if text is None:
        return body.decode(encoding or "utf-8", errors="replace").replace("\x00", ""), False
    if "\x00" in text:
        return text.replace("\x00", ""), False
    return text, True


# --------------------------------------------------------------------------- parsing

# trafilatura's own parser settings (comments and processing instructions dropped, so
# commented-out markup never comes back as content), with lxml's C-level class lookup:
# lxml.html's default lookup calls into Python for every element proxy, which costs ~15 %
# of trafilatura's run time. Elements are still HtmlElement; only lxml.html's form classes
# (FormElement, InputElement...) are not used, and nothing here or in trafilatura needs them.
_PARSER = etree.HTMLParser(
    collect_ids=False, default_doctype=False, encoding="utf-8", remove_comments=True,
    remove_pis=True,
)  # fmt: skip
_PARSER.set_element_class_lookup(
    etree.ElementDefaultClassLookup(
        element=HtmlElement, comment=HtmlComment, pi=HtmlProcessingInstruction, entity=HtmlEntity
    )
)


# In UTF-8, the characters trafilatura's repair_faulty_html deletes (INVALID_XML_CHARS: C0
# controls but tab, LF and CR; U+FFFE and U+FFFF) are these single bytes, which never occur
# inside a multi-byte sequence, and two three-byte sequences.
_CONTROL_BYTES = bytes([*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20)])
# They all map to NUL (itself one of them), every other byte to itself: a page holds one iff
# its translation holds a NUL. A translation by table runs 4x faster than one that deletes.
_CONTROL_TO_NUL = bytes(0 if b in _CONTROL_BYTES else b for b in range(256))


def _repaired(html: str, beginning: str, utf8: bytes | None = None) -> bytes:
    """repair_faulty_html(html, beginning) as UTF-8. Its regular-expression scan of the whole
    page for invalid characters (~0.15 ms) is replaced by a byte translation of the encoded
    page and a search of the text for the two non-characters, which find them faster (~0.07
    ms); pages that hold any go through repair_faulty_html. ``utf8``, when given, is html in
    UTF-8 (the page's bytes: not encoded again)."""
    fixed = html
    # repair_faulty_html's other two fixes, on the first lines; its doctype fix rebuilds the
    # page only when it changes the first line or the page has one line (it adds a newline)
    if "doctype" in beginning and ("\n" not in html or DOCTYPE_TAG.match(html) is not None):
        firstline, _, rest = fixed.partition("\n")
        fixed = DOCTYPE_TAG.sub("", firstline, count=1) + "\n" + rest
    for line in fixed[:4096].splitlines()[:4]:
        if "<html" in line and line.endswith("/>"):
            fixed = FAULTY_HTML.sub(r"\1>", fixed, count=1)
            break
    data = utf8 if utf8 is not None and fixed is html else fixed.encode("utf-8", "surrogatepass")
    # (U+FFFE and U+FFFF are looked for in the text: 10x faster than their bytes in UTF-8)
    if b"\x00" in data.translate(_CONTROL_TO_NUL) or "\ufffe" in fixed or "\uffff" in fixed:
        data = repair_faulty_html(html, beginning).encode("utf-8", "surrogatepass")
    return data


def _parse(html: str, utf8: bytes | None = None) -> HtmlElement | None:
    """The page's tree, or None when it is not HTML (trafilatura.load_html's checks).
    ``utf8``, when given, is html in UTF-8."""
    beginning = html[:50].lower()
    try:
        root = etree.fromstring(_repaired(html, beginning, utf8), _PARSER)
    except (etree.ParserError, etree.XMLSyntaxError, ValueError):
        return None
    if root is None or ("html" not in beginning and len(root) < 2):
        return None  # a fragment or something that is not HTML at all
    return root


def _remove(elem: Any) -> None:
    """Remove an element and its content, keeping the text that follows it (its tail)."""
    parent = elem.getparent()
    if parent is None:
        return
    if elem.tail:
        previous = elem.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + elem.tail
        else:
            parent.text = (parent.text or "") + elem.tail
    parent.remove(elem)


def _attached(elem: Any, root: Any) -> bool:
    return elem is root or any(ancestor is root for ancestor in elem.iterancestors())


def _text(elem: Any) -> str:
    """All text inside an element, pieces joined by spaces (bs4's get_text(" "))."""
    return " ".join(elem.itertext())


# --------------------------------------------------------------------------- preprocessing

_LAZY_SRC_ATTRS = ("data-src", "data-lazy-src", "data-original", "data-lazy", "data-url")
_LAZY_SRCSET_ATTRS = ("data-srcset", "data-lazy-srcset")
_LAZY_ATTRS = (*_LAZY_SRC_ATTRS, *_LAZY_SRCSET_ATTRS, "srcset", "sizes")  # dropped once resolved
_PLACEHOLDER = r"^data:|blank\.|spacer\.|pixel\.|placeholder|transparent\.|lazy[-_.]|loading\.|/1x1\.|gr[ae]y\.gif"
# Pictures that are never article images, judged by their file path.
_NOT_CONTENT_IMAGE = (
    r"logo|icon|avatar|sprite|emoji|gravatar|badge|button|banner[-_]?ad|/ads?/|pixel|spacer|1x1"
)
_IMAGE_FILE = r"\.(jpe?g|png|gif|webp|avif|bmp|tiff?)$"


class _CaselessPattern:
    """A case-insensitive search that runs on ASCII text lowercased (re.IGNORECASE makes
    these alternations ~7x slower); other text is searched with re.IGNORECASE, whose Unicode
    case folding lowercasing does not reproduce."""

    def __init__(self, pattern: str) -> None:
        self._lower = re.compile(pattern)
        self._caseless = re.compile(pattern, re.IGNORECASE)

    def search(self, text: str) -> bool:
        if text.isascii():
            return self._lower.search(text.lower()) is not None
        return self._caseless.search(text) is not None


_PLACEHOLDER_RE = _CaselessPattern(_PLACEHOLDER)
_NOT_CONTENT_IMAGE_RE = _CaselessPattern(_NOT_CONTENT_IMAGE)
_IMAGE_FILE_RE = _CaselessPattern(_IMAGE_FILE)


def _is_placeholder(src: object) -> bool:
    if not isinstance(src, str):
        return True
    src = src.strip()
    return not src or _PLACEHOLDER_RE.search(src)


def _url_path(url: str) -> str:
    """urlsplit(url).path; without urlsplit for absolute http(s) URLs in ASCII without
    whitespace or brackets (as _abs returns them), whose path is what follows the host up to
    the query or fragment."""
    if (
        url.startswith(("https://", "http://"))
        and url.isascii()
        and "[" not in url
        and "]" not in url
        and "\t" not in url
        and "\n" not in url
        and "\r" not in url
    ):
        start = url.index("//") + 2
        end = len(url)
        for delimiter in "/?#":
            found = url.find(delimiter, start, end)
            if found >= 0:
                end = found
        path = url[end:]
        if "#" in path:
            path = path.split("#", 1)[0]
        if "?" in path:
            path = path.split("?", 1)[0]
        return path
    return urlsplit(url).path


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


def _real_src(img: Any) -> str | None:
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
    picture = next(img.iterancestors("picture"), None)
    if picture is not None:
        for source in picture.iter("source"):
            best = _best_from_srcset(source.get("data-srcset") or source.get("srcset"))
            if best:
                return best
    return None


_URL_WHITESPACE = re.compile(r"[\t\n\r]")


def _abs(url: object, base: str) -> str | None:
    """Absolute http(s) URL, or None."""
    if not isinstance(url, str) or not url.strip():
        return None
    if "\t" in url or "\n" in url or "\r" in url:
        url = _URL_WHITESPACE.sub("", url)
    url = url.strip()
    try:
        if url.startswith(("https://", "http://")):
            # urlsplit raises on a malformed host: brackets (IPv6) or non-ASCII characters
            # that normalise to URL delimiters; other URLs pass, so it is skipped for them
            if not url.isascii() or "[" in url or "]" in url:
                urlsplit(url)
            return url  # already absolute (most images): urljoin would cost 4x more
        joined = urljoin(base, url) if base else url
        return joined if urlsplit(joined).scheme in ("http", "https") else None
    except ValueError:
        return None


def _fix_images(root: Any, noscripts: list[Any], base: str) -> list[Any]:
    """Give every <img> its real, absolute src; swap placeholders for <noscript> fallbacks.

    Returns the images still in the tree, in page order.
    """
    for noscript in noscripts:
        if not _attached(noscript, root):
            continue
        fallback = next(noscript.iter("img"), None)
        if fallback is None:
            _remove(noscript)  # "please enable JavaScript" is never content
            continue
        placeholder = None
        parent = noscript.getparent()
        for candidate in (
            next(noscript.itersiblings("img", preceding=True), None),
            next(parent.iter("img"), None) if parent is not None else None,
        ):
            if (
                candidate is not None
                and candidate is not fallback
                and _is_placeholder(candidate.get("src"))
            ):
                placeholder = candidate
                break
        if placeholder is not None and placeholder.getparent() is not None:
            fallback.getparent().remove(fallback)
            fallback.tail = placeholder.tail
            placeholder.getparent().replace(placeholder, fallback)
            _remove(noscript)
        else:
            noscript.drop_tag()
    kept: list[tuple[Any, str | None]] = []
    for img in root.iter("img"):
        src = _abs(_real_src(img), base)
        if src is None:
            kept.append((img, None))
            continue
        img.set("src", src)
        attrib = img.attrib
        for attr in _LAZY_ATTRS:
            if attr in attrib:
                del attrib[attr]
        kept.append((img, src))
    for img, src in kept:
        if src is None:
            _remove(img)
    return [img for img, src in kept if src is not None]


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
_ANCHOR_SCAN = 60  # text pieces and elements looked at on each side
_NOT_TEXT = frozenset({"script", "style", "title"})


def _texts_after(elem: Any) -> Iterator[tuple[str | None, Any]]:
    """(text, element holding it) for every piece of text after elem, in page order, and
    (None, element) for every element met."""
    node = elem
    while True:
        parent = node.getparent()
        if parent is None:
            return
        if node.tail:
            yield node.tail, parent
        for sibling in node.itersiblings():
            for event, el in etree.iterwalk(sibling, events=("start", "end")):
                if event == "start":
                    yield None, el
                    if el.text:
                        yield el.text, el
                elif el is not sibling and el.tail:
                    yield el.tail, el.getparent()
            if sibling.tail:
                yield sibling.tail, parent
        node = parent


def _texts_within_reversed(elem: Any) -> Iterator[tuple[str | None, Any]]:
    """The pieces of text inside elem (not its tail) and its elements, last first; walked
    backwards as they are asked for (a long preceding sibling is not read whole)."""
    stack = [(elem, reversed(elem))]
    while stack:
        node, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            if node.text:
                yield node.text, node
            yield None, node
            continue
        if child.tail:
            yield child.tail, node
        stack.append((child, reversed(child)))


def _texts_before(elem: Any) -> Iterator[tuple[str | None, Any]]:
    """Like _texts_after, walking backwards from elem."""
    node = elem
    while True:
        parent = node.getparent()
        if parent is None:
            return
        for sibling in node.itersiblings(preceding=True):
            if sibling.tail:
                yield sibling.tail, parent
            yield from _texts_within_reversed(sibling)
        yield None, parent
        if parent.text:
            yield parent.text, parent
        node = parent


def _anchor(pieces: Iterator[tuple[str | None, Any]], skip: Any, backwards: bool) -> str:
    """Comparison key of the first text met walking from an image (either direction)."""
    words: list[str] = []
    length = 0
    for count, (text, holder) in enumerate(pieces):
        if count >= _ANCHOR_SCAN:
            break
        if not text or holder.tag in _NOT_TEXT:
            continue
        if skip is not None and (holder is skip or any(a is skip for a in holder.iterancestors())):
            continue  # the image's own caption
        key = _norm(text)
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


def _small(img: Any) -> bool:
    for attr in ("width", "height"):
        value = img.get(attr)
        if isinstance(value, str) and value.strip().isdigit() and int(value) <= 32:
            return True
    return False


def _teaser_or_aside(img: Any, base: str) -> bool:
    """Images that illustrate something else: links to other pages (teasers, ads) and
    images in asides, navigation or footers. Links to the image file, to this page or to
    scripts (lightboxes) are fine."""
    if next(img.iterancestors("aside", "nav", "footer"), None) is not None:
        return True
    link = next(img.iterancestors("a"), None)
    target = _abs(link.get("href"), base) if link is not None else None
    if target is not None:
        path = _url_path(target)
        return path != _url_path(base) and not _IMAGE_FILE_RE.search(path)
    return False


def _collect_images(imgs: list[Any], base: str) -> list[_Image]:
    """Candidate content images in page order, with caption and surrounding text.

    trafilatura extracts better text with images off (with images on, image-rich teaser
    lists and figure credits leak in), so images are placed back by their neighbouring text:
    an image whose neighbours did not make it into the article was not part of it.
    """
    images: list[_Image] = []
    seen: set[str] = set()
    for img in imgs:
        src = img.get("src")
        if (
            not isinstance(src, str)
            or src in seen
            or _small(img)
            or _NOT_CONTENT_IMAGE_RE.search(_url_path(src))
        ):
            continue
        if _teaser_or_aside(img, base):
            continue
        seen.add(src)
        figure = next(img.iterancestors("figure"), None)
        caption_tag = next(figure.iter("figcaption"), None) if figure is not None else None
        caption = _squash(_text(caption_tag)) if caption_tag is not None else ""
        alt = img.get("alt")
        images.append(
            _Image(
                src=src,
                alt=_squash(alt) if isinstance(alt, str) else "",
                caption=caption,
                before=_anchor(_texts_after(img), figure, backwards=False),
                after=_anchor(_texts_before(img), figure, backwards=True),
            )
        )
    return images


# --------------------------------------------------------------------------- site rules


def _apply_rule(soup: BeautifulSoup, rule: SiteRule, url: str) -> list[Any]:
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


def _rule_sources(html: str, rule: SiteRule, url: str) -> tuple[str, str | None, str | None]:
    """(page, trafilatura's input, the rule's body) after beautifulsoup4 applied the rule.

    The page loses what rule.strip names; with body matches, trafilatura reads only them
    (with the <head>, for the meta tags), else the stripped page.
    """
    soup = BeautifulSoup(html, _BS4_PARSER)
    matches = _apply_rule(soup, rule, url)
    page = str(soup) if rule.strip else html
    if not matches:
        return page, None, None
    rule_html = "".join(str(node) for node in matches if not node.decomposed)
    head = soup.find("head")
    source = f"<html>{head if head is not None else ''}<body><article>{rule_html}</article></body></html>"
    return page, source, rule_html


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
    """What the scan of the parsed page collects."""

    meta: dict[str, str] = field(default_factory=dict)  # property/name/itemprop -> content
    canonical: str | None = None
    lang: str | None = None
    json_ld: list[str] = field(default_factory=list)
    noscripts: list[Any] = field(default_factory=list)
    title: str | None = None
    h1: list[str] = field(default_factory=list)  # the first five
    h1_count: int = 0
    json_data: list[Any] | None = None  # json_ld parsed, on first use


# <time datetime> inside <article> or <main>; itemprop="datePublished" elements other than
# <meta> and <time>. Written from the attributes up: libxml2 finds them ~25 % faster.
_ARTICLE_TIMES = etree.XPath("(//time/@datetime)/parent::*[ancestor::article or ancestor::main]")
_DATE_PUBLISHED = etree.XPath(
    "(//*/@itemprop[. = 'datePublished'])/parent::*[not(self::meta) and not(self::time)]"
)


def _scan(root: Any) -> _Page:
    page = _Page()
    # Tag-filtered iteration runs in C: only the few elements we read reach Python.
    for node in root.iter("meta", "link", "script", "title", "h1", "noscript"):
        name = node.tag
        if name == "meta":
            key = (
                node.get("property")
                or node.get("name")
                or node.get("itemprop")
                or node.get("http-equiv")
            )
            content = node.get("content")
            if key and content and content.strip():
                page.meta.setdefault(key.strip().lower(), content.strip())
        elif name == "link":
            if page.canonical is None and "canonical" in (node.get("rel") or "").lower().split():
                page.canonical = node.get("href")
        elif name == "noscript":
            page.noscripts.append(node)
        elif name == "script":
            if (node.get("type") or "").lower() == "application/ld+json" and node.text:
                page.json_ld.append(node.text)
        elif name == "title":
            if page.title is None:
                page.title = " ".join(s.strip() for s in node.itertext() if s.strip()) or None
        else:  # h1
            page.h1_count += 1
            if len(page.h1) < 5:
                page.h1.append(" ".join(s.strip() for s in node.itertext() if s.strip()))
    html = root if root.tag == "html" else next(root.iter("html"), None)
    if html is not None:
        page.lang = html.get("lang") or html.get("xml:lang")
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
    for data in _json_ld_data(page):
        stack = [data]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if key in node:
                    yield node[key]
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)


_PUBLISHED_META = (
    "article:published_time", "og:published_time", "datepublished", "pubdate", "date", "dc.date",
)  # fmt: skip


def _published_candidates(page: _Page, root: Any) -> Iterator[object]:
    """Publication times in order of trust: the first meta tag of _PUBLISHED_META present
    (an itemprop="datePublished" element other than <meta> and <time> counts as the
    "datepublished" one when no meta tag has it), JSON-LD, the first dated <time> of the
    article itself (a page header may show today's date). The tree is searched (two whole-
    page XPaths, ~0.25 ms) only when what comes before does not give a date."""
    if not any(key in page.meta for key in _PUBLISHED_META[:3]):
        for node in _DATE_PUBLISHED(root):
            value = node.get("content") or node.get("datetime")
            if value:
                page.meta["datepublished"] = value
                break
    yield _meta(page, *_PUBLISHED_META)
    yield from _json_ld_values(page, "datePublished")
    for element in _ARTICLE_TIMES(root):
        yield str(element.get("datetime"))
        break


def _published(page: _Page, root: Any) -> datetime | None:
    """Publication time with its time of day: meta tags, JSON-LD, itemprop, <time>."""
    for candidate in _published_candidates(page, root):
        parsed = _parse_datetime(candidate)
        if parsed is not None:
            return parsed
    return None


def _found_date(root: Any, url: str | None) -> datetime | None:
    """A day for pages without a machine-readable date: htmldate's quick search (URL, meta
    tags, text patterns; its free-text search is off: dateparser costs up to 0.7 s a page).
    Runs before extraction, which prunes the tree."""
    found = htmldate.find_date(
        root,
        url=url,
        original_date=True,
        extensive_search=False,
        max_date=datetime.now(UTC).strftime("%Y-%m-%d"),
    )
    return _parse_datetime(found)


_AUTHOR_META = (
    "author", "article:author", "og:article:author", "dc.creator", "parsely-author",
    "sailthru.author", "citation_author", "byl",
)  # fmt: skip


_BY = re.compile(r"^(by|von|par|por|di|door|автор:?)\s+", re.IGNORECASE)
_MAX_AUTHORS = 4  # names kept from a JSON-LD author list (more are contributors' lists)


def _clean_author(value: object) -> str | None:
    """A byline as a name: "By " dropped, entities and JSON escapes decoded; None for profile
    URLs, one-word handles and overlong strings."""
    if not isinstance(value, str):
        return None
    if "\\u" in value:
        try:
            value = value.encode("latin-1", "backslashreplace").decode("unicode_escape")
        except UnicodeDecodeError:
            pass
    if "&" in value:
        value = unescape(value)
    name = _squash(_BY.sub("", value.strip()))
    if name and " " in name and "://" not in name and len(name) <= 120:
        return name
    return None


_ARTICLE_TYPE = re.compile(r"article|posting|^report$", re.IGNORECASE)


def _json_ld_data(page: _Page) -> list[Any]:
    """The page's JSON-LD blocks, parsed on first use."""
    if page.json_data is None:
        page.json_data = []
        for script in page.json_ld:
            try:
                page.json_data.append(json.loads(script))
            except (ValueError, RecursionError):
                continue
    return page.json_data


def _json_ld_nodes(page: _Page) -> Iterator[dict[str, Any]]:
    """Every JSON-LD object of the page in document order (any nesting, @graph included)."""
    for data in _json_ld_data(page):
        stack = [data]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                yield node
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(reversed(node))


def _json_ld_authors(page: _Page) -> tuple[list[str], list[str]]:
    """(people, organisations) named as author of the article in JSON-LD: the authors of the
    first Article-like object that names any (not those of its images, videos or related
    items); people up to _MAX_AUTHORS. An author given by reference ({"@id": ...}, as
    Yoast's @graph does) is looked up."""
    nodes = list(_json_ld_nodes(page))
    by_id = {n["@id"]: n for n in nodes if isinstance(n.get("@id"), str) and "name" in n}
    for node in nodes:
        kind = node.get("@type")
        kinds = [k for k in (kind if isinstance(kind, list) else [kind]) if isinstance(k, str)]
        if "author" not in node or not any(_ARTICLE_TYPE.search(k) for k in kinds):
            continue
        value = node["author"]
        people: list[str] = []
        organisations: list[str] = []
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and "name" not in item:
                item = by_id.get(item.get("@id"), item)
            item_kind = item.get("@type") if isinstance(item, dict) else None
            name = _clean_author(item.get("name") if isinstance(item, dict) else item)
            if name is None:
                continue
            item_kinds = item_kind if isinstance(item_kind, list) else [item_kind]
            if "Person" not in item_kinds and any(item_kinds):
                organisations.append(name)  # Organization, NewsMediaOrganization...
            elif name not in people:
                people.append(name)
        if people or organisations:
            return people[:_MAX_AUTHORS], organisations
    return [], []


def _declared_author(page: _Page) -> tuple[str | None, str | None]:
    """(author, fallback) from JSON-LD and meta tags: JSON-LD people first, then meta tags.

    Names that are the publisher's (og:site_name, JSON-LD publisher or organisation) are
    only the fallback: many sites put their own name in <meta name="author"> and the
    reporter's in JSON-LD or in the byline.
    """
    people, organisations = _json_ld_authors(page)
    if people:
        return ", ".join(people), None
    publishers = {_norm(n) for n in organisations}
    site = _meta(page, "og:site_name", "application-name")
    if site:
        publishers.add(_norm(site))
    for value in _json_ld_values(page, "publisher"):
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                publishers.add(_norm(item["name"]))
    fallback = None
    for key in _AUTHOR_META:
        name = _clean_author(page.meta.get(key))
        if name is None:
            continue
        if _norm(name) not in publishers:
            return name, None
        fallback = fallback or name
    return None, fallback or (organisations[0] if organisations else None)


def _author(page: _Page, root: Any) -> str | None:
    """The byline: declared (JSON-LD, meta tags), else found in the page body as
    trafilatura finds it, else the publisher's name when that is all the page declares.
    Reads the tree before extraction prunes it."""
    author, fallback = _declared_author(page)
    if author:
        return author
    byline = _byline(root)
    if byline:
        return _clean_author(byline) or byline
    return fallback


# trafilatura's byline search in the page (trafilatura.metadata.extract_author: its
# AUTHOR_XPATHS on a copy of the page pruned by AUTHOR_DISCARD_XPATHS, ~4.5 ms a page), done
# without the copy and without its regular expressions called from libxml2 on every element
# (~0.9 ms): libxml2 picks the few elements with an attribute value holding one of the
# XPaths' words or a shorter part of it ("name" for username, screenname, channel-name...),
# and the XPaths' predicates, kept verbatim below, are tested on those alone, in the same
# order. Same author as trafilatura's on every corpus page (bench_extract.py --authors).
_BYLINE_CANDIDATES = etree.XPath(
    "(//*/@class[contains(., 'uthor') or contains(., 'yline') or . = 'byl' or . = 'BBL'"
    " or contains(., 'name') or contains(., '-by') or contains(., 'writer')"
    " or contains(., 'zuozhe') or contains(., 'bian')]"
    " | //*/@id[contains(., 'uthor') or contains(., 'zuozhe') or contains(., 'bian')]"
    " | //*/@itemprop[contains(., 'author')] | //*/@rel[. = 'author']"
    " | //*/@data-testid[contains(., 'Author')] | //*/@data-component[contains(., 'Byline')]"
    ")/.. | //author"
)
_BYLINE_TAGS_1 = frozenset("a address div link p span strong".split())
_BYLINE_TAGS_2 = frozenset("a div h3 h4 p span".split())
_BYLINE_CLASS_1 = re.compile("author-?name|AuthorName|authorName")
_BYLINE_ID_2 = re.compile("author|zuozhe|bianji|xiaobian")
_BYLINE_CLASS_2 = re.compile(
    "author|channel-name|zuozhe|bianji|xiaobian|submitted-by|posted-by|journalist-name"
)
_BYLINE_ID_3 = re.compile("[Aa]uthor")
_BYLINE_CLASS_3 = re.compile("[Aa]uthor|screenname|writer|[Bb]yline")
_DISCARD_TAGS = frozenset("a div section span".split())
_DISCARD_ID = re.compile("^comments|comment-?list|ProductReviews")
_DISCARD_CLASS = re.compile(
    "^[Cc]omments|commentlist|comments-list|sidebar|is-hidden|quote|embedly-instagram|"
    "article-(?:share|support)|print|category|meta-date|meta-reviewer"
)


def _byline_1(el: Any) -> bool:
    # AUTHOR_XPATHS[0] (its "rel='me'" tests a <rel> child element, which HTML never has)
    if el.tag == "author":
        return True
    if el.tag not in _BYLINE_TAGS_1:
        return False
    get = el.get
    return (
        get("rel") == "author"
        or get("id") == "author"
        or get("class") == "author"
        or get("itemprop") == "author name"
        or get("data-testid") in ("AuthorCard", "AuthorURL")
        or bool(_BYLINE_CLASS_1.search(get("class") or ""))
    )


def _byline_2(el: Any) -> bool:
    if el.tag not in _BYLINE_TAGS_2:
        return False
    get = el.get
    return (
        get("class") in ("byline", "username", "byl", "BBL")
        or "author" in (get("itemprop") or "")
        or bool(_BYLINE_ID_2.search(get("id") or ""))
        or bool(_BYLINE_CLASS_2.search(get("class") or ""))
    )


def _byline_3(el: Any) -> bool:
    get = el.get
    return (
        "Byline" in (get("data-component") or "")
        or "author" in (get("itemprop") or "")
        or bool(_BYLINE_ID_3.search(get("id") or ""))
        or bool(_BYLINE_CLASS_3.search(get("class") or ""))
    )


def _byline_discarded(el: Any) -> bool:
    """AUTHOR_DISCARD_XPATHS: comment sections, sidebars, dates, figures..."""
    tag = el.tag
    if tag in ("time", "figure"):
        return True
    if tag not in _DISCARD_TAGS:
        return False
    get = el.get
    ident, cls = get("id") or "", get("class") or ""
    return (
        ident == "comments"
        or cls in ("comments", "title", "date")
        or bool(_DISCARD_ID.search(ident))
        or bool(_DISCARD_CLASS.search(cls))
        or "Figure" in (get("data-component") or "")
    )


def _kept_pieces(el: Any) -> list[str]:
    """el.itertext() once the discarded elements inside are removed (their tails joined to
    the text before them, as trafilatura's delete_element does)."""
    head = el.text or ""
    rest: list[list[str]] = []  # per kept child: its pieces, its tail last
    for child in el:
        if not isinstance(child.tag, str):
            continue
        if _byline_discarded(child):
            if child.tail:
                if rest:
                    rest[-1][-1] += child.tail
                else:
                    head += child.tail
            continue
        rest.append([*_kept_pieces(child), child.tail or ""])
    return [head, *(piece for pieces in rest for piece in pieces)]


def _byline(root: Any) -> str | None:
    """The author named in the page body (bylines, rel="author" links...), as trafilatura
    finds it when the meta tags and JSON-LD name none."""
    candidates = [
        el
        for el in _BYLINE_CANDIDATES(root)
        if not any(_byline_discarded(a) for a in (el, *el.iterancestors()))
    ]
    for test in (_byline_1, _byline_2, _byline_3):
        for el in candidates:
            if test(el):
                content = _squash(" ".join(_kept_pieces(el)))
                if 2 < len(content) < 120:
                    return normalize_authors(None, content)
    return None


def _language(page: _Page) -> str | None:
    for value in (page.lang, _meta(page, "content-language", "og:locale", "language")):
        if isinstance(value, str):
            primary = re.split(r"[-_,;\s]", value.strip(), maxsplit=1)[0].lower()
            if re.fullmatch(r"[a-z]{2,3}", primary):
                return primary
    return None


# --------------------------------------------------------------------------- trafilatura


def _options(fast: bool, recall: bool = False) -> Extractor:
    return Extractor(
        fast=fast,
        recall=recall,
        links=True,
        images=False,  # placed back by _place_images
        formatting=False,  # on, trafilatura loses body text on some pages
        tables=True,
        comments=False,
    )


# Built once: an Extractor reads trafilatura's config file settings when constructed.
_FAST, _FULL = _options(fast=True), _options(fast=False)
_RECALL_FAST, _RECALL_FULL = _options(fast=True, recall=True), _options(fast=False, recall=True)
# trafilatura's own extraction finding less text than this triggers its fallback extractors
# (readability, jusText). Above it they changed 3 of the 433 corpus pages, for the worse
# on the sets taken together, at ~40 % of the extraction cost (bench_extract.py).
_FALLBACK_BELOW = 1000
_FORUM_POSTING = re.compile(
    r'"@type"\s*:\s*"DiscussionForumPosting"|"@type"\s*:\s*\[[^\]]*"DiscussionForumPosting"'
)


# An upper bound of html2txt's length, computed mostly by libxml2: the body's text with
# whitespace collapsed (XPath collapses less than str.split), less the collapsed text of
# elements html2txt drops (removing a run of text shortens the collapsed whole by at least
# the run's own collapsed length), plus the two spaces html2txt may add per block element.
_NORMALIZED_LENGTH = etree.XPath("string-length(normalize-space(.))")
_DROPPED_TAGS = ("script", "style", "template", "svg", "aside", "footer")
_BLOCK_TAGS = (
    "address article aside blockquote br dd div dl dt figcaption figure footer form h1 h2 h3 "
    "h4 h5 h6 header hr li main nav ol p pre section summary table td th tr ul"
).split()  # trafilatura.baseline's block elements


def _page_text_bound(body: Any) -> float:
    dropped = 0.0
    for element in body.iter(_DROPPED_TAGS):
        if next(element.iterancestors(_DROPPED_TAGS), None) is None:  # outermost only
            dropped += _NORMALIZED_LENGTH(element)
    blocks = sum(1 for _ in body.iter(_BLOCK_TAGS))
    return float(_NORMALIZED_LENGTH(body)) - dropped + 2 * blocks


def _covers_little(length: int, tree: Any) -> bool:
    """trafilatura's test for an extraction covering too little of the page's text.

    Its measure (html2txt: a cleaned copy of the page as text, ~3 ms) is only taken when a
    cheap upper bound of it, computed by libxml2, does not already settle the question.
    """
    body = tree.find(".//body")
    if body is None:
        body = tree
    if length >= ESCALATION_PAGE_SHARE * _page_text_bound(body):
        return False
    return length < ESCALATION_PAGE_SHARE * len(html2txt(tree))


# Words that the id or class of every element these XPaths remove contains: on a page whose
# markup has none of them the XPaths (regular expressions called from libxml2, ~1 ms each on
# the whole page) cannot match.
_INFINITE_WORDS = ("mvp-post-add-", "infinite")  # RAW_TREE_PRUNE_XPATH[0]
_ELEMENTOR_WORD = "elementor-share-buttons"  # RAW_TREE_PRUNE_XPATH[1]
_COMMENTS_WORDS = ("omment", "comol", "disqus_thread")

# trafilatura's RAW_TREE_PRUNE_XPATH[0] (infinite-scroll containers) without its regular
# expressions called from libxml2 on every div, section and aside (~0.9 ms on the pages
# whose markup holds "infinite", often in CSS): libxml2 picks those whose id or class holds
# "mvp-post-add-" or "infinite" (every match does), and its predicates, verbatim below, are
# tested on those. Same elements, same order (tests).
_INFINITE_CANDIDATES = (
    "(.//div | .//section | .//aside)[@id[contains(., 'mvp-post-add-') or contains(., 'infinite')]"
    " or @class[contains(., 'mvp-post-add-') or contains(., 'infinite')]]"
)
_INFINITE = re.compile("mvp-post-add-(?:box|wrap)|infinite-?scroll")
_MVP_POST_ADD = re.compile("mvp-post-add-(?:box|wrap)")


def _is_infinite_scroll(el: Any) -> bool:
    ident, cls = el.get("id") or "", el.get("class") or ""
    if not (_INFINITE.search(ident) or _INFINITE.search(cls)):
        return False
    return (
        next(el.iterdescendants("h1"), None) is None
        or bool(_MVP_POST_ADD.search(ident))
        or bool(_MVP_POST_ADD.search(cls))
    )


def _prune_raw(tree: Any, markup: str) -> Any:
    """prune_unwanted_nodes(tree, RAW_TREE_PRUNE_XPATH), same result; each XPath only on
    pages whose markup holds its words."""
    if any(w in markup for w in _INFINITE_WORDS):
        for element in _INFINITE_SCROLL(tree):
            delete_element(element)  # the tail text is kept, as trafilatura does
    if _ELEMENTOR_WORD in markup:
        prune_unwanted_nodes(tree, RAW_TREE_PRUNE_XPATH[1:])
    return tree


# trafilatura's REMOVE_COMMENTS_AND_LISTS_XPATH (comment sections and comment lists) without
# its regular expressions called from libxml2 on every element (~0.85 ms a page): libxml2
# picks the elements whose id or class holds "omment" or "comol" (every match does), and its
# predicates, verbatim below, are tested on those. Same elements, same order (tests).
_COMMENT_CANDIDATES = (
    "(//*/@id[contains(., 'omment') or contains(., 'comol') or contains(., 'disqus_thread')]"
    " | //*/@class[contains(., 'omment')])/.."
)
_COMMENT_TAGS = frozenset(("div", "list", "section", "details", "ol", "ul"))
_COMMENTS_ID = re.compile(r"^(?:[Cc]omment(?!ary)|comol)")
_COMMENTS_ID_OR_THREAD = re.compile(r"^(?:[Cc]omment(?!ary)|comol|disqus_thread|dsq-comments)")
_COMMENTS_CLASS = re.compile(r"^[Cc]omment(?!ary)|(?:article|post)-comments")


def _is_comment_section(el: Any) -> bool:
    tag = el.tag
    if tag not in _COMMENT_TAGS:
        return False
    ident, cls = el.get("id") or "", el.get("class") or ""
    if _COMMENTS_CLASS.search(cls):
        return True
    if tag in ("ol", "ul"):  # a list counts only by a comment id, not by a disqus one
        return bool(_COMMENTS_ID.search(ident))
    return bool(_COMMENTS_ID_OR_THREAD.search(ident))


def _prune_comments(tree: Any, markup: str) -> Any:
    """prune_unwanted_nodes(tree, REMOVE_COMMENTS_AND_LISTS_XPATH), same result."""
    if not any(w in markup for w in _COMMENTS_WORDS):
        return tree
    for element in _COMMENT_SECTIONS(tree):
        delete_element(element)  # the tail text is kept, as trafilatura does
    return tree


# --------------------------------------------------------------------------- faster, same result
#
# trafilatura evaluates three families of XPaths on every page, each calling a Python
# regular expression from libxml2 (EXSLT re:test) on every element of a kind, with or
# without attributes: OVERALL_DISCARD_XPATH (boilerplate sections, ~1.1 ms a page),
# BODY_XPATH (the article's container, ~0.9 ms) and BASIC_CLEAN_XPATH (before its fallbacks
# and its page measure, ~2.6 ms a call). Below, each is evaluated as libxml2 picking the
# elements that carry one of the attributes its predicate reads, then its predicate, written
# out verbatim in Python, on those: the same elements in the same order (tests run both on
# corpus pages). Spelling the regular expressions out as contains() calls instead is slower:
# libxml2 copies the attribute's string for each call.
#
# jusText (trafilatura's last fallback, ~11 ms a call on the ~10 % of pages that reach it)
# walks the page through lxml.sax and recomputes each paragraph's normalised text about six
# times while classifying it. _ParagraphMaker sends its handler the same events in the same
# order without the SAX layer, and its paragraphs compute their text once.
#
# trafilatura reads these from its modules' globals at each call, so _accelerated() installs
# them for the duration of one extraction (plain trafilatura elsewhere in the process is left
# as it is), and only when the XPaths' source is the one they were written from.

# sha256 of the sources of OVERALL_DISCARD_XPATH, BODY_XPATH and BASIC_CLEAN_XPATH
_EMULATED_XPATHS = "4520d6f56704bf90"


def _first_of(el: Any, a: str, b: str) -> str | None:
    """string(@a|@b) in XPath: the value of whichever attribute comes first in the tag."""
    va, vb = el.get(a), el.get(b)
    if va is None or vb is None:
        return vb if va is None else va
    for key in el.keys():
        if key == a:
            return va
        if key == b:
            break
    return vb


class _EmulatedXPath:
    """A trafilatura XPath as a libxml2 prefilter plus its predicate in Python.

    ``first``: only the first match in document order is returned; for BODY_XPATH, whose
    caller takes the first element of the result and nothing else.
    """

    def __init__(
        self, original: Any, candidates: str, test: Any, first: bool = False
    ) -> None:
        self.path: str = original.path
        self._candidates = etree.XPath(candidates)
        self._test = test
        self._first = first

    def __call__(self, tree: Any) -> list[Any]:
        if self._first:
            return next(([el] for el in self._candidates(tree) if self._test(el)), [])
        return [el for el in self._candidates(tree) if self._test(el)]

    def __str__(self) -> str:  # trafilatura logs the expression that found the body
        return self.path


# Written the same way last, for _prune_raw and _prune_comments (run on pages whose markup
# holds their words; their candidates picked by words every match holds).
_INFINITE_SCROLL = _EmulatedXPath(RAW_TREE_PRUNE_XPATH[0], _INFINITE_CANDIDATES, _is_infinite_scroll)
_COMMENT_SECTIONS = _EmulatedXPath(
    REMOVE_COMMENTS_AND_LISTS_XPATH[0], _COMMENT_CANDIDATES, _is_comment_section
)


# OVERALL_DISCARD_XPATH[0]
_BOILERPLATE_ID = re.compile(
    "^shar|social|viral|newsletter|syndication|tags|sidebar|banner|bread-?crumb|button|author|"
    "^(?:jp-|dpsp-content)|bmdh|footer|Footer|share|Share|nav|Nav|menu|related|"
    "message-container|premium|^ad-"
)
_BOILERPLATE_CLASS = re.compile(
    "^shar|social|viral|newsletter|syndication|tags|sidebar|banner|bread-?crumb|button|author|"
    "^(?:nav|post-nav|ZendeskForm)|subnav|avigation|navbar|navbox|menu|bar| ad |-ad-|"
    "(?:^| )ad-|dfp[Aa]d|outbrain|taboola|criteo|paid-?content|widget|footer|Footer|byline|"
    "Byline|share-|sociable|embedded|embed|tag-list|consent|modal-content|permission|elated|"
    "next-|-stories|most-popular|more-on|meta|rating|attachment|timestamp|user-info|"
    "user-profile|-icon|article-infos|message-container|slide|viewport|overlay|options|expand|"
    "obfuscated|blurred|mol-factbox|yin|zlylin|nfoline"
)


def _boilerplate(el: Any) -> bool:
    get = el.get
    if get("data-lp-replacement-content") is not None:
        return True
    role = get("role")
    if role and "nav" in role.replace("N", "n"):
        return True
    component = get("data-component")
    if component and "MostPopularStories" in component:
        return True
    ident, cls = get("id"), get("class")
    first = _first_of(el, "id", "class")
    if first and "cookie" in first:
        return True
    return bool((ident and _BOILERPLATE_ID.search(ident)) or (cls and _BOILERPLATE_CLASS.search(cls)))


# OVERALL_DISCARD_XPATH[1]
_HIDDEN_ID = re.compile("reader-comments|akismet")
_HIDDEN_CLASS = re.compile(
    "^hide-|comments-title|nocomments|-reply-|message|akismet|suggest-links|-hide-|hide-print|"
    " hidden| hide|noprint|notloaded"
)


def _hidden_or_reply(el: Any) -> bool:
    get = el.get
    cls, style = get("class"), get("style")
    if cls == "comments-title" or get("aria-hidden") == "true":
        return True
    first = _first_of(el, "id", "class")
    if first and first.startswith("reply-"):
        return True
    first = _first_of(el, "id", "style")
    if first and "hidden" in first:
        return True
    if style and ("display:none" in style or "display: none" in style):
        return True
    ident = get("id")
    return bool((ident and _HIDDEN_ID.search(ident)) or (cls and _HIDDEN_CLASS.search(cls)))


# BODY_XPATH[0], [2], [3] ([1] and [4] call no regular expression)
_BODY0_ID = re.compile(
    "(?:entry|article|art)-content|article__content|article(?:-|__)?body|articleBody|body-text"
)
_BODY0_CLASS = re.compile(
    "post[-_]text|post-body|post-?entry|post[-_]?content|postContent|post_inner_wrapper|"
    "article-?text|articleText|(?:entry|page|text|article|art)-content|article__content|"
    "article(?:-|__)?body|articleBody|ArticleContent|body-text|article__container"
)
_BODY2_ID = re.compile("^primary|story-body")
_BODY2_FULLTEXT = re.compile("fulltext", re.IGNORECASE)
_BODY2_CLASS = re.compile(
    "^article |post-bodycopy|story-?content|(?:theme|blog|section|single)-content|single-post|"
    "main-column|wpb_text_column|story-body|field-body"
)
_BODY3_ID = re.compile("content-main|content-body|contentBody")
_BODY3_CLASS = re.compile("content[-_]main|content(?:-|__)body")


def _article_body(el: Any) -> bool:
    get = el.get
    cls, ident = get("class"), get("id")
    return (
        cls in ("post", "entry")
        or get("itemprop") == "articleBody"
        or ident == "articleContent"
        or bool(ident and _BODY0_ID.search(ident))
        or bool(cls and _BODY0_CLASS.search(cls))
    )


def _story_body(el: Any) -> bool:
    get = el.get
    cls, ident = get("class"), get("id")
    return (
        get("role") == "article"
        or ident in ("article", "story")
        or cls in ("postarea", "art-postcontent", "text", "cell", "story")
        or bool(ident and _BODY2_ID.search(ident))
        or bool(cls and (_BODY2_FULLTEXT.search(cls) or _BODY2_CLASS.search(cls)))
    )


def _main_content(el: Any) -> bool:
    get = el.get
    cls, ident = get("class"), get("id")
    if ident == "content" or cls == "content":
        return True
    if ident and (
        _BODY3_ID.search(ident) or "main-content" in ident.replace("C", "c").replace("M", "m")
    ):
        return True
    return bool(
        cls
        and (
            _BODY3_CLASS.search(cls)
            or "main-content" in cls.replace("C", "c").replace("M", "m")
            or "page-content" in cls.replace("C", "c").replace("P", "p")
        )
    )


# BASIC_CLEAN_XPATH (trafilatura.baseline's cleaning, run before html2txt, jusText and its
# baseline extractor; ~2.6 ms a page evaluated by libxml2, ~1.2 ms here)
_ALWAYS_CLEANED = frozenset("aside fencedframe footer script style svg template".split())
_CONSENT = re.compile(
    "cookie[-_]?(?:banner|bar|consent|law|notice|policy|description)|notice[-_]{0,2}cookie"
    "|consent[-_]?(?:banner|manager|sdk)|borlabs|cookiebot|cmplz|onetrust|moove[-_]?gdpr",
    re.IGNORECASE,
)


def _basic_clean(el: Any) -> bool:
    tag = el.tag
    if tag in _ALWAYS_CLEANED:
        return True
    if tag == "div":
        first = _first_of(el, "class", "id")
        if first and "footer" in first:
            return True
    cls, ident = el.get("class"), el.get("id")
    return bool((cls and _CONSENT.search(cls)) or (ident and _CONSENT.search(ident)))


@dataclass(frozen=True)
class _Emulations:
    overall: list[Any]  # for trafilatura.main_extractor.OVERALL_DISCARD_XPATH
    body: list[Any]  # for trafilatura.main_extractor.BODY_XPATH
    basic: Any  # for trafilatura.baseline.BASIC_CLEAN_XPATH


def _emulated_xpaths() -> _Emulations | None:
    sources = "\x00".join(
        x.path for x in (*OVERALL_DISCARD_XPATH, *BODY_XPATH, BASIC_CLEAN_XPATH)
    )
    if sha256(sources.encode()).hexdigest()[:16] != _EMULATED_XPATHS:
        return None  # another trafilatura: its own XPaths, as they are
    blocks = ".//*[self::article or self::div or self::main or self::section]"
    overall = [
        _EmulatedXPath(
            OVERALL_DISCARD_XPATH[0],
            ".//*[self::div or self::item or self::list or self::p or self::section"
            " or self::span][@data-lp-replacement-content or @role or @data-component"
            " or @id or @class]",
            _boilerplate,
        ),
        _EmulatedXPath(
            OVERALL_DISCARD_XPATH[1], ".//*[@class or @id or @style or @aria-hidden]",
            _hidden_or_reply,
        ),
    ]
    body = [
        _EmulatedXPath(
            BODY_XPATH[0], blocks + "[@class or @id or @itemprop]", _article_body, first=True
        ),
        BODY_XPATH[1],
        _EmulatedXPath(BODY_XPATH[2], blocks + "[@class or @id or @role]", _story_body, True),
        _EmulatedXPath(BODY_XPATH[3], blocks + "[@class or @id]", _main_content, first=True),
        BODY_XPATH[4],
    ]
    basic = _EmulatedXPath(
        BASIC_CLEAN_XPATH,
        ".//aside|.//fencedframe|.//footer|.//script|.//style|.//svg|.//template"
        "|.//*[@class or @id]",
        _basic_clean,
    )
    return _Emulations(overall, body, basic)


_EMULATED = _emulated_xpaths()
# the module, not the function the package exports under the same name
_tf_baseline: Any = sys.modules["trafilatura.baseline"]


class _Paragraph(Paragraph):  # type: ignore[misc]
    """jusText's paragraph, its text normalised once: classify_paragraphs reads it about six
    times, and only once the paragraph is complete. Its DOM path and XPath are written when
    read: a paragraph starts at every block element, and most stay empty and are dropped."""

    def __init__(self, path: Any) -> None:
        self._path = list(path._elements)  # (tag, position, children) per level, from the root
        self.text_nodes: list[str] = []
        self.chars_count_in_links = 0
        self.tags_count = 0
        self.class_type = ""

    @cached_property
    def dom_path(self) -> str:
        return ".".join(e[0] for e in self._path)

    @cached_property
    def xpath(self) -> str:
        return "/" + "/".join(f"{tag}[{position}]" for tag, position, _ in self._path)

    @cached_property
    def text(self) -> str:  # type: ignore[override]
        return str(Paragraph.text.fget(self))

    @cached_property
    def words_count(self) -> int:  # type: ignore[override]
        return len(self.text.split())

    def stopwords_count(self, stopwords: frozenset[str]) -> int:
        # jusText lowers word by word; lowering never adds or removes whitespace
        return sum(map(stopwords.__contains__, self.text.lower().split()))


class _ParagraphMaker(ParagraphMaker):  # type: ignore[misc]
    """jusText's ParagraphMaker fed the events lxml.sax.saxify would send, in the same order
    (elements, their text and tails; comments and processing instructions only by their
    tails), without building SAX names and attributes it does not read."""

    @classmethod
    def make_paragraphs(cls, root: Any) -> list[Any]:
        handler = cls()
        handler.startDocument()
        before = []
        sibling = root.getprevious()
        while sibling is not None and sibling.tag is etree.ProcessingInstruction:
            before.append(sibling)
            sibling = sibling.getprevious()
        for sibling in reversed(before):
            handler._walk(sibling)
        handler._walk(root)
        sibling = root.getnext()
        while sibling is not None and sibling.tag is etree.ProcessingInstruction:
            handler._walk(sibling)
            sibling = sibling.getnext()
        handler.endDocument()
        return list(handler.paragraphs)

    def _start_new_pragraph(self) -> None:  # jusText's spelling
        current: Any = self.paragraph  # type: ignore[has-type]
        if current and current.contains_text():
            self.paragraphs.append(current)
        self.paragraph = _Paragraph(self.path)

    def _walk(self, element: Any) -> None:
        tag = element.tag
        if tag is etree.Comment or tag is etree.ProcessingInstruction:
            if element.tail:
                self.characters(element.tail)
            return
        if not isinstance(tag, str):  # an entity: saxify fails on it, and so does jusText
            raise TypeError(f"unexpected node {tag!r}")
        name = (None, tag.rpartition("}")[2])
        self.startElementNS(name, None, None)
        if element.text:
            self.characters(element.text)
        for child in element:
            self._walk(child)
        self.endElementNS(name, None)
        if element.tail:
            self.characters(element.tail)


_swap_lock = threading.Lock()
_swap_depth = 0


@contextmanager
def _accelerated() -> Iterator[None]:
    """Install the equivalents above into trafilatura's modules while one extraction runs
    (counted, so overlapping extractions in threads restore the originals once, last)."""
    global _swap_depth
    with _swap_lock:
        if _swap_depth == 0:
            if _EMULATED is not None:
                _tf_main.OVERALL_DISCARD_XPATH = _EMULATED.overall
                _tf_main.BODY_XPATH = _EMULATED.body
                _tf_baseline.BASIC_CLEAN_XPATH = _EMULATED.basic
            _tf_external.ParagraphMaker = _ParagraphMaker
        _swap_depth += 1
    try:
        yield
    finally:
        with _swap_lock:
            _swap_depth -= 1
            if _swap_depth == 0:
                _tf_main.OVERALL_DISCARD_XPATH = OVERALL_DISCARD_XPATH
                _tf_main.BODY_XPATH = BODY_XPATH
                _tf_baseline.BASIC_CLEAN_XPATH = BASIC_CLEAN_XPATH
                _tf_external.ParagraphMaker = ParagraphMaker


def _trafilatura(tree: Any, markup: str, forum: bool, fast: bool) -> Any | None:
    """trafilatura's extraction cascade (trafilatura.core.trafilatura_sequence with comments
    off), with the fallback extractors only where its own extraction found little text.

    ``markup`` is the HTML the tree was parsed from. Returns trafilatura's output tree
    (<body> of <p>, <head>, <list>...) or None. The tree is pruned in place. Links are left
    relative: sanitize_html makes the kept ones absolute (trafilatura would resolve every
    link of the page, most of them navigation).
    """
    with _accelerated():
        return _cascade(tree, markup, forum, fast)


def _cascade(tree: Any, markup: str, forum: bool, fast: bool) -> Any | None:
    tree = _prune_raw(tree, markup)
    if not forum:  # on forums, comment-like containers hold the posts
        tree = _prune_comments(tree, markup)
    options = _FAST
    body, text = extract_content(convert_tags(tree_cleaning(copy(tree), options), options), options)
    full = not fast and len(text) < _FALLBACK_BELOW
    if full:
        options = _FULL
        cleaned = tree_cleaning(copy(tree), options)
        body, text = compare_extraction(cleaned, copy(tree), body, text, options)
    # rescue: baseline on the whole page, kept only if it finds more text
    if len(text) < options.min_extracted_size:
        b_body, b_text, b_len = baseline(tree)
        if b_len > len(text):
            body, text = b_body, b_text
    # escalation: a short extraction covering little of the page is retried in recall mode
    if 0 < len(text) < ESCALATION_MAX_LENGTH and _covers_little(len(text), tree):
        r_options = _RECALL_FULL if full else _RECALL_FAST
        cleaned = tree_cleaning(copy(tree), r_options)
        backup = copy(cleaned) if full else None
        r_body, r_text = extract_content(convert_tags(cleaned, r_options), r_options)
        if backup is not None:
            r_body, r_text = compare_extraction(backup, copy(tree), r_body, r_text, r_options)
        r_long = len(r_text) >= options.min_extracted_size
        j_body, j_text = justext_rescue(copy(tree), options) if full else (None, "")
        if len(j_text) > len(r_text) and len(j_text) > ESCALATION_JUSTEXT_RATIO * len(text):
            body, text = j_body, j_text
        elif r_long and len(r_text) > ESCALATION_ACCEPT_RATIO * len(text):
            body, text = r_body, r_text
    return body if len(text) >= options.min_output_size else None


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


_WORD = re.compile(r"\w+")


def _norm(text: str) -> str:
    """Comparison key: case-folded words without punctuation."""
    return " ".join(_WORD.findall(text.casefold()))


def _is_date_line(text: str) -> bool:
    """A short line made of a date, a time and words such as "Published" or "Updated"."""
    if len(text) > 80:
        return False
    words = _WORD.findall(text.casefold())
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


# "Read also: <a>another article's headline</a>": a block made of a short label and one link
# to another page of the same site, which outlets put between paragraphs in every language
# ("Читайте также:", "Lea también:", "À lire aussi »", "Czytaj też:"...). The label is told
# by its length and the separator it ends with, not by its words.
_LABEL_END = frozenset(":：»›>–—-։՝")
_LABEL_MAX, _LABEL_WORDS, _HEADLINE_MIN, _TEASER_MAX = 40, 5, 15, 300


def _site(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower()
    return host[4:] if host.startswith("www.") else host


def _is_related_link(block: Any, link: Any, text: str, site: str, base: str) -> bool:
    headline = _squash(_text(link))
    if len(headline) < _HEADLINE_MIN or not text.endswith(headline):
        return False
    label = text[: len(text) - len(headline)].strip()
    if not label or len(label) > _LABEL_MAX or len(label.split()) > _LABEL_WORDS:
        return False
    if label[-1] not in _LABEL_END:
        return False
    target = _abs(link.get("href"), base)
    return target is not None and _site(target) == site and target.split("#")[0] != base


# A picture credit left standing as a paragraph of its own once its picture is gone: a
# "Photo:" label (in the languages of the region and of the corpus) and a few words.
_CREDIT_LABEL = (
    r"^\W{0,2}(?:"
    r"(?:photos?|foto|fotos|fotó|kuva|bild|image|picture|credits?|crédits? photos?|фото|"
    r"фотография|լուսանկար(?:ը|ներ)?|ფოტო|şəkil|foto\s?şəkil)(?:\s*credit)?\s*[:：©՝]"
    r"|(?:photo|screenshot|image|picture|illustration)s?\s+(?:by|via|courtesy(?:\s+of)?)"
    r"|courtesy(?:\s+of)?)"
)
_CREDIT_LINE = re.compile(_CREDIT_LABEL + r"\s*\S(?:\S*\s*){0,6}$", re.IGNORECASE)
_CREDIT_LINE_START = re.compile(_CREDIT_LABEL, re.IGNORECASE)


def _drop_related_links(body: Any, base: str) -> None:
    """Remove "Read also" link lines and picture credit lines (above)."""
    site = _site(base)
    for block in list(body.iter(*_RELATED_BLOCKS)):
        links = list(block.iter("a"))
        related = bool(site) and len(links) == 1
        # a credit's label opens the block: its first words tell (cheaper than its text)
        if not related and not _CREDIT_LINE_START.match(_squash(_first_words(block))):
            continue
        raw = _text(block)
        if len(raw) > 2 * _TEASER_MAX:  # even with its whitespace collapsed, too long for either
            continue
        text = _squash(raw)
        if len(text) > _TEASER_MAX:
            continue
        if (related and _is_related_link(block, links[0], text, site, base)) or (
            _CREDIT_LINE.match(text) and next(block.iter("img"), None) is None
        ):
            _remove(block)


def _first_words(block: Any) -> str:
    """The block's text up to its first 40 characters (whole pieces)."""
    head = ""
    for piece in block.itertext():
        head += piece
        if len(head.strip()) >= 40:
            break
    return head


_RELATED_BLOCKS = ("p", "li", "blockquote", "h2", "h3", "h4", "h5", "h6", "div")


# trafilatura trims the text after a link it keeps as a paragraph of its own ("Written by
# <a>Miami Today</a> on November 7" comes out as "Miami Todayon November 7"). Where the
# page has the same link followed by whitespace, the space is put back.
def _restore_link_spaces(body: Any, page: Any) -> None:
    joined = [
        a for a in body.iter("a") if a.tail and a.tail[0].isalnum() and a.get("href") is not None
    ]
    if not joined:
        return
    hrefs = {a.get("href") for a in joined}
    spaced = {
        (a.get("href"), _squash(_text(a)))
        for a in page.iter("a")
        if a.get("href") in hrefs and a.tail and a.tail[0].isspace()
    }
    for a in joined:
        if (a.get("href"), _squash(_text(a))) in spaced:
            a.tail = " " + a.tail


# trafilatura also splits a run of loose text at a link it keeps ("<div>...rushed off to a
# <a>security fair</a> in Las Vegas...<br><br>...</div>" comes out as two paragraphs, the
# second starting with the link). Where the page has the link right after the text that
# ends the paragraph before, in one run (no block element or double <br> between), the two
# are one paragraph again.
_RUN_BREAKS = frozenset(_BLOCK_TAGS) - {"br"}


def _text_before_in_run(link: Any) -> str:
    """The text before a link in its run of loose text and inline elements, up to 80
    characters, as it stands on the page."""
    pieces: list[str] = []
    node, size = link, 0
    while size < 80:
        prev = node.getprevious()
        if prev is None:
            parent = node.getparent()
            if parent is None:
                break
            pieces.append(parent.text or "")
            if parent.tag in _RUN_BREAKS or parent.tag in ("body", "td", "th", "li"):
                break
            node = parent
        elif not isinstance(prev.tag, str):
            pieces.append(prev.tail or "")
            node = prev
        elif prev.tag in _RUN_BREAKS:
            pieces.append(prev.tail or "")
            break
        elif prev.tag == "br":
            pieces.append(" " + (prev.tail or ""))  # a line break, as whitespace
            twin = prev.getprevious()
            if twin is not None and twin.tag == "br" and not (twin.tail or "").strip():
                break
            node = prev
        else:
            pieces.append("".join(prev.itertext()) + (prev.tail or ""))
            node = prev
        size += len(pieces[-1])
    return "".join(reversed(pieces))


def _rejoin_split_runs(body: Any, page: Any) -> None:
    starts = [
        p
        for p in body
        if p.tag == "p"
        and not (p.text or "").strip()
        and len(p)
        and p[0].tag == "a"
        and p.getprevious() is not None
        and p.getprevious().tag == "p"
    ]
    if not starts:
        return
    hrefs = {p[0].get("href") for p in starts}
    sources: dict[tuple[str | None, str], Any] = {}
    for link in page.iter("a"):
        if link.get("href") in hrefs:
            sources.setdefault((link.get("href"), _squash(_text(link))), link)
    for p in starts:
        source = sources.get((p[0].get("href"), _squash(_text(p[0]))))
        raw = _text_before_in_run(source) if source is not None else ""
        before = _squash(raw)
        # "text<a>" with no space between: two pieces of the page's furniture, not prose
        if not before or not raw[-1].isspace():
            continue
        prev = p.getprevious()
        if not _squash(_text(prev)).endswith(before[-40:]):
            continue
        if len(prev):
            prev[-1].tail = (prev[-1].tail or "").rstrip() + " "
        else:
            prev.text = (prev.text or "").rstrip() + " "
        for child in list(p):
            prev.append(child)
        body.remove(p)


def _drop_metadata_repeats(body: Any, titles: list[str]) -> None:
    """Remove what repeats the metadata at the top: title heading, date line, breadcrumbs."""
    keys = {k for k in map(_norm, titles) if k}
    title_key = _norm(titles[0]) if titles else ""
    for heading in list(body.iter("h1")):
        if _norm(_text(heading)) in keys:
            _remove(heading)
    seen = 0
    for block in list(body):
        if block.tag in ("figure", "img") or next(block.iter("img"), None) is not None:
            continue
        text = _squash(_text(block))
        if not text:
            continue
        if _norm(text) in keys or _is_date_line(text) or _is_breadcrumb(text, title_key):
            _remove(block)
            continue
        seen += 1
        if len(text) > 150 or seen >= 4:
            break  # the article proper has begun
    for img in body.iter("img"):
        alt = img.get("alt")
        if alt is not None and _norm(alt) in keys:
            del img.attrib["alt"]  # the image alt is the title a third time (seen on real outlets)
    for caption in list(body.iter("figcaption")):
        if _norm(_text(caption)) in keys:
            _remove(caption)  # a "caption" that only repeats the title


_TITLE_SEPARATORS = re.compile(r"\s*(?:[|–—·:»]|\s-)\s*")


def _choose_title(page: _Page) -> str | None:
    """The headline: the page's <h1> when it agrees with the declared titles (og:title,
    JSON-LD headline, a lone <h1>, <title>), else the declared title without a " | Site name" suffix.

    On the corpus the <h1> matches the reference headline far more often than og:title or
    <title>, which carry site names and kickers; requiring agreement skips logo <h1>s.
    """
    site = _norm(_meta(page, "og:site_name", "application-name") or "")
    headline = next((h for h in _json_ld_values(page, "headline") if isinstance(h, str)), None)
    only_h1 = page.h1[0] if page.h1_count == 1 else None  # trafilatura's choice, in this order
    candidates = (_meta(page, "og:title", "twitter:title"), headline, only_h1, page.title)
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


def _figure(image: _Image) -> Any:
    img = etree.Element("img", src=image.src)
    if image.alt:
        img.set("alt", image.alt)
    if not image.caption:
        return img
    figure = etree.Element("figure")
    figure.append(img)
    etree.SubElement(figure, "figcaption").text = image.caption
    return figure


def _insert_after(anchor: Any, node: Any) -> None:
    node.tail, anchor.tail = anchor.tail, None
    anchor.addnext(node)


def _place_images(body: Any, images: list[_Image]) -> list[_Image]:
    """Insert each image next to the extracted block that holds its neighbouring text.

    Returns the images placed, in page order.
    """
    if not images:
        return []
    blocks = [(child, _norm(_text(child))) for child in body]
    placed: list[_Image] = []
    last_after: dict[int, Any] = {}
    for image in images:
        target = None
        if image.before:
            target = next((b for b, key in blocks if image.before in key), None)
        if target is not None:
            target.addprevious(_figure(image))
        elif (
            image.after
            and (target := next((b for b, key in blocks if image.after in key), None)) is not None
        ):
            anchor = last_after.get(id(target), target)
            node = _figure(image)
            _insert_after(anchor, node)
            last_after[id(target)] = node
        else:
            continue
        placed.append(image)
    return placed


_EMPTY_CHECKED = ("p", "li", "blockquote", "div", "h2", "h3", "h4", "h5", "h6", "a", "strong", "em")


def _drop_empty(body: Any) -> None:
    for block in list(body.iter(*_EMPTY_CHECKED)):
        # a block inside one removed before is detached: removing it again is harmless
        if not "".join(block.itertext()).strip() and next(block.iter("img"), None) is None:
            _remove(block)


def _block_text(body: Any) -> str:
    """Plain text: blocks as paragraphs separated by a blank line, <br> as a line break."""
    parts: list[str] = []
    for event, el in etree.iterwalk(body, events=("start", "end")):
        if event == "start":
            if el.tag == "br":
                parts.append("\x01")
            elif el.tag in _BLOCKS:
                parts.append("\x02")
            if el.text:
                parts.append(el.text)
        else:
            if el.tag in _BLOCKS:
                parts.append("\x02")
            if el.tail and el is not body:
                parts.append(el.tail)
    paragraphs = []
    for chunk in "".join(parts).split("\x02"):
        lines = [_squash(line) for line in chunk.split("\x01")]
        text = "\n".join(line for line in lines if line)
        if text:
            paragraphs.append(text)
    return "\n\n".join(paragraphs)


# --------------------------------------------------------------------------- trafilatura's XML

_HI = {"#b": "strong", "#i": "em", "#u": "u", "#t": "code", "#sub": "sub", "#sup": "sup"}
_SIMPLE = {
    "p": "p", "quote": "blockquote", "code": "pre", "table": "table", "row": "tr", "item": "li",
    "del": "s", "div": "div", "lb": "br", "figure": "figure",
}  # fmt: skip
_VOID = frozenset({"br", "img"})
_UNWRAP = "x-unwrap"  # elements with no HTML counterpart: their content is kept


def _to_html_tree(body: Any) -> None:
    """trafilatura's XML vocabulary (head, list, item, hi, ref, cell...) to HTML, in place."""
    unwrap = False
    for elem in body.iter(etree.Element):
        if elem is body:
            continue
        tag, rend = elem.tag, elem.get("rend") or ""
        attrs: dict[str, str] = {}
        if tag == "head":
            name: str | None = rend if re.fullmatch(r"h[1-6]", rend) else "h3"
        elif tag == "list":
            name = "ol" if rend == "ol" else "ul"
        elif tag == "hi":
            name = _HI.get(rend, "em")
        elif tag == "cell":
            name = "th" if elem.get("role") == "head" else "td"
        elif tag == "ref":
            name = "a"
            if elem.get("target"):
                attrs["href"] = elem.get("target")
        elif tag == "graphic":
            name = "img" if elem.get("src") else None
            if name:
                attrs["src"] = elem.get("src")
        else:
            name = _SIMPLE.get(tag)
        elem.attrib.clear()
        elem.attrib.update(attrs)
        if name is None:
            name, unwrap = _UNWRAP, True
        elem.tag = name
    if unwrap:
        etree.strip_tags(body, _UNWRAP)


def _to_html(body: Any) -> str:
    """The content of an element as HTML (void elements written as <img .../>)."""
    parts: list[str] = []
    if body.text:
        parts.append(escape(body.text, quote=False))
    for event, el in etree.iterwalk(body, events=("start", "end")):
        if el is body or not isinstance(el.tag, str):
            continue
        if event == "start":
            attrs = "".join(f' {k}="{escape(v)}"' for k, v in el.attrib.items())
            if el.tag in _VOID:
                parts.append(f"<{el.tag}{attrs}/>")
            else:
                parts.append(f"<{el.tag}{attrs}>")
            if el.text:
                parts.append(escape(el.text, quote=False))
        else:
            if el.tag not in _VOID:
                parts.append(f"</{el.tag}>")
            if el.tail:
                parts.append(escape(el.tail, quote=False))
    return "".join(parts)


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

    ``fast`` never runs trafilatura's fallback extractors (readability, jusText), which
    otherwise run on pages where its own extraction finds little text.

    Kinds: ``empty`` (no bytes or only whitespace), ``too_large`` (bytes or tag count over the
    guards), ``no_content`` (no article text found), ``too_deep`` (nesting beyond recursion),
    ``bad_rule`` (invalid CSS selector in the site rule).
    """
    if isinstance(body, bytes):
        if len(body) > MAX_BYTES:
            raise ExtractError("too_large", f"{url}: page of {len(body)} bytes exceeds {MAX_BYTES}")
        text, is_utf8 = _decode(body, charset)
        utf8 = body if is_utf8 else None
    else:
        text, utf8 = body.replace("\x00", ""), None
    if not text or text.isspace():  # text.strip() would copy the page
        raise ExtractError("empty", f"{url}: empty page")
    if len(text) > MAX_BYTES:
        raise ExtractError(
            "too_large", f"{url}: page of {len(text)} characters exceeds {MAX_BYTES}"
        )
    tags = text.count("<") if len(text) > MAX_TAGS else 0  # fewer characters, fewer tags
    if tags > MAX_TAGS:
        raise ExtractError(
            "too_large", f"{url}: page has {tags} tags, more than the {MAX_TAGS} allowed"
        )
    try:
        return _extract(text, url, rule, fast, utf8)
    except RecursionError as exc:
        raise ExtractError("too_deep", f"{url}: page nested too deeply to parse") from exc


def _extract(
    html: str, url: str, rule: SiteRule | None, fast: bool, utf8: bytes | None = None
) -> Article:
    """``utf8``, when given, is html in UTF-8 (the page's bytes)."""
    source, rule_html = None, None
    if rule is not None:
        html, source, rule_html = _rule_sources(html, rule, url)
        utf8 = None  # html is now the page as beautifulsoup4 wrote it back
    root = _parse(html, utf8)
    if root is None:
        raise ExtractError("no_content", f"{url}: no article text found")
    page = _scan(root)

    language = _language(page)
    canonical = _abs(page.canonical, url) or _abs(_meta(page, "og:url"), url)
    description = _meta(page, "og:description", "description", "twitter:description")
    meta_image = _abs(_meta(page, "og:image", "og:image:url", "twitter:image"), url)
    published = _published(page, root) or _found_date(root, canonical or url or None)
    title = _choose_title(page)
    author = _author(page, root)

    images = _collect_images(_fix_images(root, page.noscripts, url), url)
    method = "trafilatura"
    tree = root
    if source is not None:
        tree, method = _parse(source), "rule+trafilatura"
    forum = any(_FORUM_POSTING.search(script) for script in page.json_ld)
    try:
        result = _trafilatura(tree, source or html, forum, fast) if tree is not None else None
    except (TypeError, ValueError):  # what trafilatura.bare_extraction treats as no result
        result = None

    titles = [t for t in (title, _meta(page, "og:title")) if t]
    title_keys = {_norm(t) for t in titles}
    for image in images:
        if image.caption and _norm(image.caption) in title_keys:
            image.caption = ""  # a "caption" that only repeats the title
    if result is not None:
        _to_html_tree(result)
        placed = _place_images(result, images)
    elif rule_html is not None:
        # The rule names the body: trust it even where trafilatura finds too little text.
        result = _parse(f"<html><body>{rule_html}</body></html>")
        result = result.find("body") if result is not None else None
        if result is None:
            raise ExtractError("no_content", f"{url}: no article text found")
        sources = {
            img.get("src") for img in _fix_images(result, list(result.iter("noscript")), url)
        }
        placed = [image for image in images if image.src in sources]
        method = "rule"
    else:
        raise ExtractError("no_content", f"{url}: no article text found")

    _drop_metadata_repeats(result, titles)
    _restore_link_spaces(result, root)
    _rejoin_split_runs(result, root)
    _drop_related_links(result, url)
    _drop_empty(result)
    content_html = _to_html(result).strip()
    text = _block_text(result)
    if not text and not placed:
        raise ExtractError("no_content", f"{url}: no article text found")

    lead = _lead_image(meta_image, placed)
    return Article(
        html=content_html,
        text=text,
        title=_squash(title) if title else None,
        author=author,
        published=published,
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
