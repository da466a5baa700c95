"""Article pages to Article: decoding, preprocessing, main-content extraction, metadata.

Owns trafilatura, jusText, lxml, htmldate, beautifulsoup4 and charset-normalizer. The HTML of the
returned Article is NOT sanitised (the clean stage does that). extract_article:

1. decode_html (bytes only; decode): BOM, HTTP charset, <meta> charset, detection.
2. A site rule, when there is one, is applied with beautifulsoup4 (rules: strip, body).
3. lxml parses the page once, with trafilatura's parser settings (decode). One pass (metadata)
   over the tree collects metadata (meta tags, JSON-LD, canonical, language, <h1>s; without
   a declared author, trafilatura's byline search runs on the page body); lazy images get their
   real source (data-src..., srcset, <noscript> fallbacks) and are collected with their
   captions and surrounding text (images). Images are off in trafilatura (with them on, teaser lists
   and photo credits leak into the text, measured on the corpus), so these fixes do not
   change what it extracts.
4. trafilatura's extraction cascade runs on the same tree (cascade): its fallback
   extractors (readability, jusText) only when its own extraction found little text. In an
   extraction worker process, trafilatura's regular-expression XPaths and jusText's
   paragraph maker are the accelerator's equivalents (installed by install_accelerator
   when the setting extract_accelerator is on and its guard matches); elsewhere, their own.
5. Post-processing on trafilatura's output tree (postprocess): each image is put back next to the
   extracted paragraph that holds the text around it (as <figure> with its <figcaption>
   when it had one); the title heading, date line and breadcrumbs repeated at the top are
   dropped, and so are "Read also: <link>" lines and standalone picture credits; HTML and
   plain text are written out.

Feed discovery in HTML pages: discover.

Its CPU cost per page against trafilatura.extract's is in bench/bench_extract.py's output and
CHANGES.md.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import replace
from urllib.parse import urlsplit

from bs4 import MarkupResemblesLocatorWarning, XMLParsedAsHTMLWarning

from aggregator.errors import ExtractError
from aggregator.extract.accelerator import install as install_accelerator
from aggregator.extract.cascade import _FORUM_POSTING, _trafilatura
from aggregator.extract.decode import (
    MAX_BYTES,
    MAX_TAGS,
    _decode,
    _norm,
    _parse,
    _squash,
    decode_html,
)
from aggregator.extract.discover import discover_feeds
from aggregator.extract.images import _abs, _collect_images, _fix_images, _Image
from aggregator.extract.metadata import (
    _alternates,
    _author,
    _found_date,
    _language,
    _meta,
    _published,
    _scan,
)
from aggregator.extract.postprocess import (
    _block_text,
    _choose_title,
    _drop_empty,
    _drop_metadata_repeats,
    _drop_related_links,
    _place_images,
    _rejoin_split_runs,
    _restore_link_spaces,
    _to_html,
    _to_html_tree,
)
from aggregator.extract.rules import _rule_sources, validate_rule
from aggregator.models import Article, SiteRule

__all__ = [
    "MAX_BYTES",
    "MAX_TAGS",
    "decode_html",
    "discover_feeds",
    "extract_article",
    "install_accelerator",
    "validate_rule",
]

# trafilatura logs every discarded page at WARNING; our callers get an ExtractError instead.
logging.getLogger("trafilatura").setLevel(logging.ERROR)
logging.getLogger("htmldate").setLevel(logging.ERROR)
# XHTML pages with an XML declaration are still HTML to us; tiny pages are not file names.
warnings.filterwarnings("ignore", category=XMLParsedAsHTMLWarning)
warnings.filterwarnings("ignore", category=MarkupResemblesLocatorWarning)


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
    alternates = tuple(
        replace(a, url=absolute) for a in _alternates(page)
        if (absolute := _abs(a.url, url)) is not None
    )
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
        alternates=alternates,
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

