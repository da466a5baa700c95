"""Lazy images given their real source, and the article images collected with their captions
and the text around them (to be put back next to it after extraction)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from lxml import etree

from aggregator.extract.decode import _attached, _norm, _remove, _squash, _text

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
    these alternations several times slower); other text is searched with re.IGNORECASE, whose Unicode
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
            return url  # already absolute (most images): urljoin would cost more
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


