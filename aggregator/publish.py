"""Render outputs as Atom 1.0, RSS 2.0 and JSON Feed 1.1 files, with RFC 5005 archives.

Only the standard library is used: markup is built by hand with strict escaping.

Text hygiene: every string that reaches XML, HTML or JSON first loses the characters XML 1.0
forbids (C0 controls except tab/newline/CR, lone surrogates, U+FFFE/U+FFFF) and C1 controls,
which are never meaningful in news text and are invalid in HTML. Titles and other text fields
are always escaped text, never markup; content HTML (already sanitised by the pipeline) is
published as escaped text too (Atom ``type="html"``, RSS ``content:encoded``), never raw.

Archives (RFC 5005 archived feeds): the current document of an output holds its newest
``output.limit`` items (newest ``published`` first). Older items go to archive pages
``<name>-archive-<n>.<fmt>`` of ``output.limit`` items each, filled from the OLDEST item:
page 1 holds the oldest items and only the newest page is partial. A page is sealed once
full: its boundary (its newest item) is kept in ``.<name>.archive.json`` beside the files, so
pages keep their items and bytes when new items arrive, even when the caller passes only the
newest items (a window): the oldest page the window cuts short is left out rather than
shrunk (a caller passing every item says so with ``complete``: then no page is cut). An item
arriving late, with an old date, joins the sealed page its date falls in. Changing
``output.limit`` restarts paging.

The chain: the current document's ``prev-archive`` names the newest page, each page's
``prev-archive`` the next older page written and its ``next-archive`` the next newer one
(JSON Feed: ``next_url`` follows ``prev-archive``), so walking back from the current document
reaches every archived item exactly once. Only the newest ``archive_pages`` pages holding
items are written (numbers unchanged); older pages beyond that limit are dropped: their files
are removed, and the oldest page kept ends the chain with no ``prev-archive`` link (its items
stay; only that link goes). Other ``<name>-archive-<n>.<fmt>`` files are removed too.

Ids: every document of an output carries the output's feed id (Atom ``<id>``), given by the
caller (stored when the output was first published, so it never follows an address); items
carry ``Item.uid``, their story's id.

Files are written atomically and only when their bytes change, with their mtime set to the
newest item's ``updated`` so the server's Last-Modified follows the newest item (or to the
publish time when the bytes changed without a newer item, so Last-Modified still advances).
Everything is written and read back through a ``Documents`` object: ``FileDocuments`` (a
directory, as above) by default, or one the caller passes (the pipeline's database-backed
documents on PostgreSQL, where the same dates are stored as ``published``).
"""

from __future__ import annotations

import bisect
import email.utils
import html
import json
import mimetypes
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import quote, urlsplit

from aggregator import __version__, files
from aggregator.errors import PublishError, PublishWriteError
from aggregator.models import (
    ArchiveLinks,
    Item,
    Outlet,
    OutputConfig,
    OutputSummary,
    primary_language,
)

ATOM_NS = "http://www.w3.org/2005/Atom"
FH_NS = "http://purl.org/syndication/history/1.0"
MEDIA_NS = "http://search.yahoo.com/mrss/"
CONTENT_NS = "http://purl.org/rss/1.0/modules/content/"
DC_NS = "http://purl.org/dc/elements/1.1/"
JSONFEED_VERSION = "https://jsonfeed.org/version/1.1"
GENERATOR = "aggregator"

FORMATS = ("atom", "rss", "json")
MEDIA_TYPES = {
    "atom": "application/atom+xml",
    "rss": "application/rss+xml",
    "json": "application/feed+json",
}
FORMAT_LABELS = {"atom": "Atom", "rss": "RSS", "json": "JSON Feed"}

# Characters XML 1.0 forbids, plus C1 controls (allowed by XML but invalid in HTML).
_INVALID = re.compile("[^\t\n\r\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ARCHIVE_SUFFIX = re.compile(r"-archive-\d+$")
_LANG_TAG = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")


# --------------------------------------------------------------------------- text helpers


def clean_text(text: str) -> str:
    """``text`` without characters that are invalid in XML 1.0 (and C1 controls)."""
    return _INVALID.sub("", text)


def _t(text: str) -> str:
    """Escaped XML element text (CR as a reference: parsers would turn a raw one into LF)."""
    # Chained str.replace: several times faster than str.translate on non-ASCII text.
    text = clean_text(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("\r", "&#13;")


def _a(text: str) -> str:
    """Escaped XML attribute value, for use inside double quotes (whitespace as references,
    which attribute-value normalisation would otherwise turn into spaces)."""
    text = _t(text).replace('"', "&quot;")
    return text.replace("\n", "&#10;").replace("\t", "&#9;")


def _h(text: str) -> str:
    """Escaped HTML text or attribute value."""
    return html.escape(clean_text(text), quote=True)


def _http(url: str | None) -> str | None:
    """``url`` when it is an absolute http(s) URL, else None (no javascript: or data: links)."""
    if not url:
        return None
    url = clean_text(url).strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url


def _utc(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).replace(microsecond=0)


def rfc3339(dt: datetime) -> str:
    d = _utc(dt)
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}Z"


def rfc822(dt: datetime) -> str:
    return email.utils.format_datetime(_utc(dt), usegmt=True)


def _lang(tag: str | None) -> str | None:
    if tag and _LANG_TAG.fullmatch(tag.replace("_", "-")):
        return tag.replace("_", "-")
    return None


def _file_url(base_url: str, name: str) -> str:
    return base_url.rstrip("/") + "/" + quote(name)


def document_url(base_url: str, name: str, fmt: str) -> str:
    """The URL of output ``name``'s current document in format ``fmt`` under ``base_url``."""
    return _file_url(base_url, f"{name}.{fmt}")


def _home_url(base_url: str) -> str:
    return base_url if base_url.endswith("/") else base_url + "/"


def _categories(item: Item) -> list[str]:
    seen: dict[str, None] = {}
    for c in item.categories:
        c = clean_text(c).strip()
        if c:
            seen.setdefault(c, None)
    return list(seen)


def _guess_type(url: str) -> str | None:
    return mimetypes.guess_type(urlsplit(url).path)[0]


def also_reported_html(outlets: Sequence[Outlet]) -> str:
    """The "Also reported by" paragraph for a story's other outlets ("" when none)."""
    parts = []
    for outlet in outlets:
        title = _h(outlet.title.strip() or outlet.feed_name)
        href = _http(outlet.url)
        label = f'<a href="{_h(href)}">{title}</a>' if href else title
        if outlet.published is not None:
            label += f" ({_utc(outlet.published):%Y-%m-%d %H:%M} UTC)"
        parts.append(label)
    if not parts:
        return ""
    return "<p>Also reported by: " + ", ".join(parts) + "</p>"


@dataclass(frozen=True)
class Translation:
    """A link to the story's version in another language (Atom ``hreflang`` link, RSS
    ``atom:link``, JSON Feed ``_translations``)."""

    language: str  # primary subtag: ru, ka, hy
    url: str  # absolute http(s)
    title: str
    source: str = ""  # the outlet's feed title, for the "Also in" line


def translations(item: Item) -> tuple[Translation, ...]:
    """The story's versions in the other languages it has, one per language (the fullest
    early one of that language, see Item.version_in), in the order the languages first
    appear; a version without an http(s) link is left out (nothing to link to)."""
    out = []
    for version in item.translations():
        href = _http(version.url)
        if href and version.lang and _lang(version.lang):
            source = clean_text(version.feed_title or version.feed_name).strip()
            out.append(Translation(version.lang, href, clean_text(version.title).strip(),
                                   source))
    return tuple(out)


def translations_html(links: Sequence[Translation]) -> str:
    """The "Also in" paragraph: the story's other language versions, for readers that show
    no hreflang links ("" when none)."""
    if not links:
        return ""
    parts = [
        f'<a href="{_h(t.url)}" hreflang="{_h(t.language)}" lang="{_h(t.language)}">'
        f"{_h(t.title or t.url)}</a> ({_h(t.language)}"
        + (f", {_h(t.source)})" if t.source else ")")
        for t in links
    ]
    return "<p>Also in: " + ", ".join(parts) + "</p>"


def content_html(item: Item, links: Sequence[Translation] | None = None) -> str:
    """The HTML published as an item's content: its content (or summary), outlets and
    translations (``links``, default :func:`translations`)."""
    body = item.content_html.strip()
    if not body and item.summary.strip():
        body = f"<p>{_h(item.summary.strip())}</p>"
    if links is None:
        links = translations(item)
    # A version linked under "Also in" (with its outlet) is not listed twice.
    linked = {t.url for t in links}
    outlets = [o for o in item.outlets if _http(o.url) not in linked] if linked else item.outlets
    return clean_text(body + also_reported_html(outlets) + translations_html(links))


@dataclass(frozen=True)
class ItemFields:
    """What every format publishes of one item: the one place where each field's rule lives,
    so that Atom, RSS and JSON Feed carry the same title, link, author, content and dates.

    - ``title``: the item's title as text.
    - ``link``: its absolute http(s) link, else None.
    - ``author``: the entry's own author, else None in every format (never the outlet's
      name: the outlet is the source; Atom's required author comes from ``<source>``).
    - ``content_html``: the body (content, else the summary as a paragraph) with the "Also
      reported by" line; None when there is none: the element is left out, not blank.
    - ``content_text``: the title, only when there is neither content nor a link (Atom then
      requires content, RSS a title or description); else None.
    - ``summary``: the plain-text summary, else None.
    - ``published``: None for an undated item (no pubDate / published / date_published).
    - ``updated``: the item's own updated date, never before ``published``.
    - ``language``: the item's language tag (its own, else its feed's), else None.
    - ``translations``: the story's versions in other languages, one per language (see
      :func:`translations`); with any, ``content_html`` ends with an "Also in" line.
    """

    title: str
    link: str | None
    author: str | None
    content_html: str | None
    content_text: str | None
    summary: str | None
    published: datetime | None
    updated: datetime
    language: str | None = None
    translations: tuple[Translation, ...] = ()


def item_fields(item: Item) -> ItemFields:
    """The field values all three renderers publish for ``item`` (see ItemFields)."""
    link = _http(item.url)
    author = clean_text(item.author or "").strip() or None
    links = translations(item)
    body = content_html(item, links) or None
    published = _utc(item.published) if item.published is not None else None
    updated = _utc(item.updated)
    if published is not None and published > updated:
        updated = published
    return ItemFields(
        title=clean_text(item.title).strip(),
        link=link,
        author=author,
        content_html=body,
        content_text=clean_text(item.title).strip() if body is None and link is None else None,
        summary=clean_text(item.summary).strip() or None,
        published=published,
        updated=updated,
        language=_lang(item.language or item.feed_language),
        translations=links,
    )


def _newest(items: Sequence[Item]) -> datetime | None:
    return max((_utc(i.updated) for i in items), default=None)


def _feed_updated(items: Sequence[Item], now: datetime) -> datetime:
    # The newest item, not the clock: re-rendering unchanged items gives identical bytes.
    return _newest(items) or _utc(now)


def _self_url(output: OutputConfig, fmt: str, base_url: str, archive: ArchiveLinks | None) -> str:
    if archive is not None and archive.page:
        return archive.page
    return _file_url(base_url, f"{output.name}.{fmt}")


# --------------------------------------------------------------------------- Atom


def _atom_entry(item: Item) -> list[str]:
    f = item_fields(item)
    lang = f.language
    out = [f'<entry xml:lang="{_a(lang)}">' if lang else "<entry>"]
    out.append(f"<id>{_t(item.uid)}</id>")
    out.append(f'<title type="text">{_t(f.title)}</title>')
    if f.link:
        out.append(_alternate_link("", f.link, None))
    out.extend(_translation_links(f))
    for enc in item.enclosures:
        href = _http(enc.url)
        if not href:
            continue
        attrs = f'rel="enclosure" href="{_a(href)}"'
        if enc.type:
            attrs += f' type="{_a(enc.type)}"'
        if enc.length is not None and enc.length >= 0:
            attrs += f' length="{enc.length}"'
        out.append(f"<link {attrs}/>")
    if f.author:
        out.append(f"<author><name>{_t(f.author)}</name></author>")
    if f.published is not None:
        out.append(f"<published>{rfc3339(f.published)}</published>")
    out.append(f"<updated>{rfc3339(f.updated)}</updated>")
    for term in _categories(item):
        out.append(f'<category term="{_a(term)}"/>')
    image = _http(item.image)
    if image:
        out.append(f'<media:thumbnail url="{_a(image)}"/>')
    if f.summary:
        out.append(f'<summary type="text">{_t(f.summary)}</summary>')
    # No content: the element is left out (RFC 4287 then requires the alternate link,
    # which content_text stands in for when there is none).
    if f.content_html:
        out.append(f'<content type="html">{_t(f.content_html)}</content>')
    elif f.content_text:
        out.append(f'<content type="text">{_t(f.content_text)}</content>')
    # The outlet: its author stands in for the entry's when the item has none (RFC 4287
    # requires an author per entry, in the entry, the feed or the entry's source), and
    # its own updated date is the source's (RFC 4287 4.2.11), else the item's.
    feed_title = clean_text(item.feed_title or item.feed_name).strip() or item.feed_name
    out.append("<source>")
    out.append(f"<id>{_t(item.feed_url)}</id>")
    out.append(f'<title type="text">{_t(feed_title)}</title>')
    feed_url = _http(item.feed_url)
    if feed_url:
        out.append(f'<link rel="self" href="{_a(feed_url)}"/>')
    feed_link = _http(item.feed_link)
    if feed_link:
        out.append(f'<link rel="alternate" type="text/html" href="{_a(feed_link)}"/>')
    source_updated = item.feed_updated if item.feed_updated is not None else f.updated
    out.append(f"<updated>{rfc3339(source_updated)}</updated>")
    out.append(f"<author><name>{_t(feed_title)}</name></author>")
    out.append("</source>")
    out.append("</entry>")
    return out


def render_atom(
    output: OutputConfig,
    items: Sequence[Item],
    *,
    base_url: str,
    now: datetime,
    archive: ArchiveLinks | None = None,
    feed_id: str | None = None,
) -> bytes:
    """An Atom 1.0 document of ``items`` (in the given order); RFC 5005 links from ``archive``.
    ``feed_id``: the output's stored id (default: the current document's URL)."""
    self_url = _self_url(output, "atom", base_url, archive)
    if feed_id is None:
        feed_id = archive.current if archive is not None else self_url
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<feed xmlns="{ATOM_NS}" xmlns:fh="{FH_NS}" xmlns:media="{MEDIA_NS}">',
        f"<id>{_t(feed_id)}</id>",
        f'<title type="text">{_t(output.title)}</title>',
    ]
    if output.description.strip():
        out.append(f'<subtitle type="text">{_t(output.description.strip())}</subtitle>')
    out.append(f"<updated>{rfc3339(_feed_updated(items, now))}</updated>")
    out.append(f'<link rel="self" type="application/atom+xml" href="{_a(self_url)}"/>')
    out.append(f'<link rel="alternate" type="text/html" href="{_a(_home_url(base_url))}"/>')
    out.extend(_atom_archive_links(archive))
    out.append(f'<generator version="{_a(__version__)}">{GENERATOR}</generator>')
    for item in items:
        out.extend(_atom_entry(item))
    out.append("</feed>")
    return ("\n".join(out) + "\n").encode("utf-8")


def _atom_archive_links(archive: ArchiveLinks | None, prefix: str = "") -> list[str]:
    """RFC 5005 links (``prefix`` is "atom:" inside RSS) and fh:archive for archive pages."""
    if archive is None:
        return []
    out = []
    if archive.page:
        out.append("<fh:archive/>")
        out.append(f'<{prefix}link rel="current" href="{_a(archive.current)}"/>')
    if archive.prev_archive:
        out.append(f'<{prefix}link rel="prev-archive" href="{_a(archive.prev_archive)}"/>')
    if archive.next_archive:
        out.append(f'<{prefix}link rel="next-archive" href="{_a(archive.next_archive)}"/>')
    return out


def _alternate_link(prefix: str, href: str, language: str | None, title: str = "") -> str:
    """An alternate link (``prefix`` "atom:" inside RSS), with hreflang when ``language``."""
    attrs = 'rel="alternate" type="text/html"'
    if language:
        attrs += f' hreflang="{_a(language)}"'
    attrs += f' href="{_a(href)}"'
    if title:
        attrs += f' title="{_a(title)}"'
    return f"<{prefix}link {attrs}/>"


def _translation_links(f: ItemFields, prefix: str = "") -> list[str]:
    """One hreflang alternate link per translation, then the item's own link again with its
    own hreflang: readers that take an entry's first alternate link and readers that take
    its last (feedparser) both find the item's own, and the hreflang set names every
    language. RFC 4287 4.2.7.2 allows it: no two alternates share type and hreflang."""
    if not f.translations:
        return []
    out = [_alternate_link(prefix, t.url, t.language, t.title) for t in f.translations]
    if f.link and f.language:
        out.append(_alternate_link(prefix, f.link, primary_language(f.language), f.title))
    return out


# --------------------------------------------------------------------------- RSS


def _rss_item(item: Item) -> list[str]:
    f = item_fields(item)
    out = ["<item>", f"<title>{_t(f.title)}</title>"]
    if f.link:
        out.append(f"<link>{_t(f.link)}</link>")
    # Translations as Atom links (the atom namespace is declared on <rss>).
    out.extend(_translation_links(f, prefix="atom:"))
    out.append(f'<guid isPermaLink="false">{_t(item.uid)}</guid>')
    if f.published is not None:
        out.append(f"<pubDate>{rfc822(f.published)}</pubDate>")
    out.append(f"<atom:updated>{rfc3339(f.updated)}</atom:updated>")
    if f.author:
        # RSS <author> must be an e-mail address; a name goes to dc:creator.
        out.append(f"<dc:creator>{_t(f.author)}</dc:creator>")
    for term in _categories(item):
        out.append(f"<category>{_t(term)}</category>")
    # description: the summary (what RSS readers show in lists), else the content.
    description = f"<p>{_h(f.summary)}</p>" if f.summary else f.content_html or f.content_text
    if description:
        out.append(f"<description>{_t(description)}</description>")
    if f.content_html:
        out.append(f"<content:encoded>{_t(f.content_html)}</content:encoded>")
    # RSS allows one enclosure per item, and requires its length and type.
    for enc in item.enclosures:
        href = _http(enc.url)
        if href:
            length = enc.length if enc.length is not None and enc.length >= 0 else 0
            mime = enc.type or _guess_type(href) or "application/octet-stream"
            out.append(f'<enclosure url="{_a(href)}" length="{length}" type="{_a(mime)}"/>')
            break
    image = _http(item.image)
    if image:
        out.append(f'<media:thumbnail url="{_a(image)}"/>')
    feed_url = _http(item.feed_url)
    source_title = _t(item.feed_title or item.feed_name)
    if feed_url:
        out.append(f'<source url="{_a(feed_url)}">{source_title}</source>')
    out.append("</item>")
    return out


def render_rss(
    output: OutputConfig,
    items: Sequence[Item],
    *,
    base_url: str,
    now: datetime,
    archive: ArchiveLinks | None = None,
) -> bytes:
    """An RSS 2.0 document of ``items``; RFC 5005 links as atom:link from ``archive``."""
    self_url = _self_url(output, "rss", base_url, archive)
    updated = _feed_updated(items, now)
    published = max((_utc(i.published) for i in items if i.published is not None),
                    default=updated)
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<rss version="2.0" xmlns:atom="{ATOM_NS}" xmlns:content="{CONTENT_NS}" '
        f'xmlns:dc="{DC_NS}" xmlns:fh="{FH_NS}" xmlns:media="{MEDIA_NS}">',
        "<channel>",
        f"<title>{_t(output.title)}</title>",
        f"<link>{_t(_home_url(base_url))}</link>",
        f"<description>{_t(output.description.strip() or output.title)}</description>",
        f'<atom:link rel="self" type="application/rss+xml" href="{_a(self_url)}"/>',
        *_atom_archive_links(archive, prefix="atom:"),
        f"<pubDate>{rfc822(published)}</pubDate>",
        f"<lastBuildDate>{rfc822(updated)}</lastBuildDate>",
        f"<generator>{GENERATOR} {_t(__version__)}</generator>",
        "<docs>https://www.rssboard.org/rss-specification</docs>",
    ]
    for item in items:
        out.extend(_rss_item(item))
    out.append("</channel>")
    out.append("</rss>")
    return ("\n".join(out) + "\n").encode("utf-8")


# --------------------------------------------------------------------------- JSON Feed


def _json_clean(value: object) -> object:
    """Apply text hygiene to every string of a JSON value (lone surrogates cannot be UTF-8)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {k: _json_clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_clean(v) for v in value]
    return value


def _json_item(item: Item) -> dict[str, object]:
    f = item_fields(item)
    entry: dict[str, object] = {"id": item.uid}
    if f.link:
        entry["url"] = f.link
    entry["title"] = f.title
    if f.content_html:
        entry["content_html"] = f.content_html
    elif f.content_text:
        entry["content_text"] = f.content_text
    else:
        # JSON Feed requires content_html or content_text: an empty one says "none".
        entry["content_html"] = ""
    if f.summary:
        entry["summary"] = f.summary
    image = _http(item.image)
    if image:
        entry["image"] = image
    if f.published is not None:
        entry["date_published"] = rfc3339(f.published)
    entry["date_modified"] = rfc3339(f.updated)
    feed_link = _http(item.feed_link)
    if f.author:
        entry["authors"] = [{"name": f.author}]
    tags = _categories(item)
    if tags:
        entry["tags"] = tags
    if f.language:
        entry["language"] = f.language
    if f.translations:
        # An extension (JSON Feed 1.1 section 5: names starting with "_"): see docs.
        entry["_translations"] = [
            {"language": t.language, "url": t.url, "title": t.title} for t in f.translations
        ]
    attachments = []
    for enc in item.enclosures:
        href = _http(enc.url)
        if href:
            att: dict[str, object] = {
                "url": href,
                "mime_type": enc.type or _guess_type(href) or "application/octet-stream",
            }
            if enc.length is not None and enc.length >= 0:
                att["size_in_bytes"] = enc.length
            attachments.append(att)
    if attachments:
        entry["attachments"] = attachments
    source: dict[str, object] = {"id": item.feed_name, "title": item.feed_title or item.feed_name}
    if _http(item.feed_url):
        source["feed_url"] = item.feed_url
    if feed_link:
        source["home_page_url"] = feed_link
    source["updated"] = rfc3339(item.feed_updated if item.feed_updated is not None else f.updated)
    entry["_source"] = source
    return entry


def render_json(
    output: OutputConfig,
    items: Sequence[Item],
    *,
    base_url: str,
    now: datetime,
    archive: ArchiveLinks | None = None,
) -> bytes:
    """A JSON Feed 1.1 document of ``items``. ``next_url`` points to the next OLDER archive
    page (JSON Feed pagination); ``_archive`` carries the RFC 5005 links."""
    feed: dict[str, object] = {
        "version": JSONFEED_VERSION,
        "title": output.title,
        "home_page_url": _home_url(base_url),
        "feed_url": _self_url(output, "json", base_url, archive),
    }
    if output.description.strip():
        feed["description"] = output.description.strip()
    if archive is not None:
        if archive.prev_archive:
            feed["next_url"] = archive.prev_archive
        ext: dict[str, object] = {"current": archive.current, "archive": bool(archive.page)}
        if archive.prev_archive:
            ext["prev_archive"] = archive.prev_archive
        if archive.next_archive:
            ext["next_archive"] = archive.next_archive
        feed["_archive"] = ext
    feed["_aggregator"] = {
        "generator": f"{GENERATOR} {__version__}",
        "updated": rfc3339(_feed_updated(items, now)),
    }
    feed["items"] = [_json_item(item) for item in items]
    text = json.dumps(_json_clean(feed), ensure_ascii=False, indent=1)
    return (text + "\n").encode("utf-8")


Renderer = Callable[..., bytes]
RENDERERS: dict[str, Renderer] = {"atom": render_atom, "rss": render_rss, "json": render_json}


# --------------------------------------------------------------------------- files


@runtime_checkable
class Documents(Protocol):
    """Where publish writes its documents and reads back what it wrote (current documents,
    archive pages, their manifests, index.html, OPML): a directory (FileDocuments), or the
    database (the pipeline's store-backed implementation on PostgreSQL, where every serve
    node reads them). Times are seconds since the epoch (a file's mtime, a document's
    ``published``): the document's Last-Modified."""

    def prepare(self) -> None:
        """Make the place ready for writing (create the directory); OSError when it cannot."""
        ...

    def location(self, name: str) -> Path:
        """What a log line names for ``name`` (a path; the bare name in the database)."""
        ...

    def modified(self, name: str) -> float | None:
        """``name``'s Last-Modified, None when there is no such document."""
        ...

    def read(self, name: str) -> bytes | None:
        """``name``'s bytes, None when there is no such document."""
        ...

    def write(self, name: str, data: bytes, mtime: float | None = None) -> bool:
        """Replace ``name`` with ``data`` (atomically) dated ``mtime``; False, writing
        nothing, when it already holds exactly ``data``. OSError when it cannot."""
        ...

    def names(self) -> list[str]:
        """Every document's name."""
        ...

    def remove(self, name: str) -> None:
        """Remove ``name`` (nothing when there is none)."""
        ...


class FileDocuments:
    """Documents as files in ``out_dir``, written atomically (see files.write_atomic)."""

    def __init__(self, out_dir: Path | str) -> None:
        self.out_dir = Path(out_dir)

    def prepare(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def location(self, name: str) -> Path:
        return self.out_dir / name

    def modified(self, name: str) -> float | None:
        try:
            return (self.out_dir / name).stat().st_mtime
        except FileNotFoundError:
            return None

    def read(self, name: str) -> bytes | None:
        try:
            return (self.out_dir / name).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, name: str, data: bytes, mtime: float | None = None) -> bool:
        return write_atomic(self.out_dir / name, data, mtime)

    def names(self) -> list[str]:
        return [p.name for p in self.out_dir.iterdir()]

    def remove(self, name: str) -> None:
        (self.out_dir / name).unlink(missing_ok=True)


def _documents(out: Path | str | Documents) -> Documents:
    return FileDocuments(out) if isinstance(out, str | os.PathLike) else out


def write_atomic(path: Path, data: bytes, mtime: float | None = None) -> bool:
    """Atomically replace ``path`` (see files.write_atomic); False when unchanged."""
    return files.write_atomic(path, data, mtime=mtime)


def _publish_file(
    docs: Documents,
    name: str,
    render: Callable[[datetime], bytes],
    newest: datetime | None,
    now: datetime,
) -> bool:
    """Render and write one document; ``render`` takes the clock used for an empty feed."""
    old_mtime = docs.modified(name)
    now_ts = float(int(_utc(now).timestamp()))
    if newest is None and old_mtime is not None:
        # An empty feed is dated by the clock: re-render it with the date it was written
        # with (its mtime) so an unchanged empty feed is not rewritten every cycle.
        same = render(datetime.fromtimestamp(old_mtime, UTC))
        if docs.read(name) == same:
            return False
    data = render(datetime.fromtimestamp(now_ts, UTC))
    mtime = newest.timestamp() if newest is not None else now_ts
    if old_mtime is not None and mtime <= old_mtime:
        # Changed bytes must move Last-Modified forward, or If-Modified-Since clients miss
        # the change (an item dropped or updated without a newer item).
        if docs.read(name) != data:
            mtime = max(now_ts, old_mtime + 1)
    return docs.write(name, data, mtime)


def _reason(exc: OSError) -> str:
    """`[Errno 28] No space left on device`, without the path (logged beside it)."""
    if exc.errno is not None and exc.strerror:
        return f"[Errno {exc.errno}] {exc.strerror}"
    return str(exc) or type(exc).__name__


def _check_name(name: str) -> None:
    # A name ending in -archive-<n> would collide with another output's archive pages (and
    # be deleted as stale); a path separator or leading dot would escape or hide the file.
    if (
        not name
        or "/" in name
        or "\\" in name
        or name.startswith(".")
        or _ARCHIVE_SUFFIX.search(name)
    ):
        raise PublishError(
            f"output name {name!r} cannot be published: it must be a plain file name, "
            "not starting with a dot nor ending in -archive-<number>"
        )


def _archive_name(name: str, number: int, fmt: str) -> str:
    return f"{name}-archive-{number}.{fmt}"


Key = tuple[str, str]  # (published as RFC 3339, uid): the order of items in an output


def _order_key(item: Item) -> Key:
    if item.published is None:
        # Undated items sort behind every dated one ("" < any date), in their feed's own
        # order: the store gives a feed's top entry the highest id (see Store.record_success).
        return ("", f"{item.id:020d}")
    return (rfc3339(item.published), item.uid)


def _manifest_name(name: str) -> str:
    # A dot file: the server refuses to serve those.
    return f".{name}.archive.json"


def _load_sealed(docs: Documents, name: str, size: int) -> list[tuple[Key, int]]:
    """Sealed archive pages (newest key, item count) from the manifest, oldest page first; []
    when it is missing, unreadable or was made for another page size."""
    try:
        raw = docs.read(name)
        if raw is None:
            return []
        data = json.loads(raw)
        if data.get("version") != 1 or data.get("size") != size:
            return []
        return [((str(k[0]), str(k[1])), int(c)) for k, c in data["pages"]]
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return []


def _paginate(
    older: list[Item], sealed: list[tuple[Key, int]], size: int, complete: bool = False
) -> tuple[list[tuple[int, list[Item]]], list[tuple[Key, int]]]:
    """Split ``older`` (oldest first) into archive pages: (number, items oldest first).

    Sealed pages keep their boundaries. Unless ``complete`` (``older`` holds every item), the
    oldest page holding items may be cut short by the caller passing only the newest items:
    it is left out while it holds fewer items than when it was sealed. Items newer than every
    sealed page fill new pages of ``size``, and each full one is sealed. Returns the pages
    holding items and the updated seals.
    """
    keys = [_order_key(i) for i in older]
    pages: list[tuple[int, list[Item]]] = []
    seals: list[tuple[Key, int]] = []
    start = 0
    bottom = not complete  # no older page holds items: this one may be cut by the window
    for number, (last, count) in enumerate(sealed, start=1):
        end = bisect.bisect_right(keys, last, lo=start)
        members = older[start:end]
        start = end
        if members and (not bottom or len(members) >= count):
            pages.append((number, members))
            count = len(members)  # items added late, or removed from the output
        bottom = bottom and not members
        seals.append((last, count))
    number = len(sealed)
    for i in range(start, len(older), size):
        number += 1
        chunk = older[i : i + size]
        pages.append((number, chunk))
        if len(chunk) == size:
            seals.append((keys[i + size - 1], size))
    return pages, seals


def current_items(output: OutputConfig, items: Sequence[Item]) -> list[Item]:
    """The items of an output's current document, newest first: the newest ``output.limit``
    of ``items`` (the rest go to archive pages)."""
    return sorted(items, key=_order_key, reverse=True)[: max(1, output.limit)]


def _plan(
    output: OutputConfig, items: Sequence[Item], docs: Documents, archive_pages: int | None,
    complete: bool,
) -> tuple[list[Item], list[tuple[int, list[Item]]], list[tuple[Key, int]]]:
    """What publishing ``items`` writes: the current document's items, the archive pages kept
    (number, items oldest first) and the updated seals."""
    size = max(1, output.limit)
    newest_first = sorted(items, key=_order_key, reverse=True)
    pages, seals = _paginate(
        newest_first[size:][::-1], _load_sealed(docs, _manifest_name(output.name), size),
        size, complete,
    )
    keep_pages = output.archive_pages if archive_pages is None else archive_pages
    # The newest pages (slicing from the end: fewer pages than the limit keeps them all).
    numbered = pages[-keep_pages:] if keep_pages > 0 else []
    return current_items(output, newest_first), numbered, seals


def published_items(
    output: OutputConfig, items: Sequence[Item], out_dir: Path | Documents, *,
    complete: bool = False,
) -> list[Item]:
    """The items that publishing ``items`` shows in any document of the output: its current
    document and every archive page it keeps (nothing is written). ``out_dir``: the
    directory, or the Documents, it is published into."""
    current, numbered, _ = _plan(output, items, _documents(out_dir), None, complete)
    return current + [item for _, page in numbered for item in page]


def publish_output(
    output: OutputConfig,
    items: Sequence[Item],
    out_dir: Path | Documents,
    *,
    base_url: str,
    now: datetime,
    archive_pages: int | None = None,
    feed_id: str | None = None,
    complete: bool = False,
) -> list[Path]:
    """Write ``<name>.<fmt>`` for each of the output's formats with its newest ``output.limit``
    items, and up to ``archive_pages`` (default ``output.archive_pages``) archive pages of the
    older ones (see the module docstring); remove stale archive files and files of formats
    the output no longer has. Items may come in any order; ``complete``: they are all of the
    output's items, not a window of the newest. ``feed_id``: the output's stored feed id.
    Returns the files whose bytes changed. Files that cannot be written (OSError) do not
    stop the others: PublishWriteError then lists them, after every file was tried."""
    _check_name(output.name)
    for fmt in output.formats:
        if fmt not in RENDERERS:
            raise PublishError(
                f"output {output.name!r}: unknown format {fmt!r} (expected one of {', '.join(FORMATS)})"
            )
    docs = _documents(out_dir)
    docs.prepare()
    size = max(1, output.limit)
    manifest = _manifest_name(output.name)
    current, numbered, seals = _plan(output, items, docs, archive_pages, complete)
    numbers = [n for n, _ in numbered]

    written: list[Path] = []
    failures: list[tuple[Path, str]] = []
    keep: set[str] = set()
    for fmt in output.formats:
        render = RENDERERS[fmt]
        current_url = _file_url(base_url, f"{output.name}.{fmt}")

        def page_url(n: int, fmt: str = fmt) -> str:
            return _file_url(base_url, _archive_name(output.name, n, fmt))

        pages: list[tuple[str, list[Item], ArchiveLinks]] = [
            (
                f"{output.name}.{fmt}",
                current,
                ArchiveLinks(current_url, prev_archive=page_url(numbers[-1]) if numbers else None),
            )
        ]
        for i, (n, page) in enumerate(numbered):
            # Neighbours in the list, not n - 1 and n + 1: a sealed page left without items
            # (its stories merged away or filtered out) is not written, and the chain steps
            # over it rather than breaking there.
            links = ArchiveLinks(
                current_url,
                prev_archive=page_url(numbers[i - 1]) if i > 0 else None,
                next_archive=page_url(numbers[i + 1]) if i + 1 < len(numbers) else None,
                page=page_url(n),
            )
            pages.append((_archive_name(output.name, n, fmt), page[::-1], links))

        for file_name, doc_items, links in pages:
            keep.add(file_name)
            path = docs.location(file_name)

            def render_doc(
                clock: datetime,
                doc_items: list[Item] = doc_items,
                links: ArchiveLinks = links,
                render: Renderer = render,
                fmt: str = fmt,
            ) -> bytes:
                # Only Atom has a feed id: RSS 2.0 and JSON Feed 1.1 name none.
                extra = {"feed_id": feed_id} if fmt == "atom" and feed_id else {}
                return render(output, doc_items, base_url=base_url, now=clock, archive=links,
                              **extra)

            # Each file on its own: a full or read-only disk failing one must not keep the
            # others (other formats, archive pages) from being written.
            try:
                if _publish_file(docs, file_name, render_doc, _newest(doc_items), now):
                    written.append(path)
            except OSError as exc:
                failures.append((path, _reason(exc)))

    own = re.compile(re.escape(output.name) + r"(?:-archive-\d+)?\.(?:atom|rss|json)")
    try:
        for name in docs.names():
            if own.fullmatch(name) and name not in keep:
                docs.remove(name)
        if seals:
            state = {"version": 1, "size": size, "pages": [[list(k), c] for k, c in seals]}
            docs.write(manifest, json.dumps(state, ensure_ascii=False).encode("utf-8") + b"\n")
        else:
            docs.remove(manifest)
    except OSError as exc:
        failures.append((Path(exc.filename) if exc.filename else docs.location(manifest),
                         _reason(exc)))
    if failures:
        raise PublishWriteError(failures, written)
    return written


# --------------------------------------------------------------------------- index and OPML


def _preferred_format(output: OutputConfig) -> str | None:
    for fmt in FORMATS:
        if fmt in output.formats:
            return fmt
    return None


def summarize(output: OutputConfig, items: Sequence[Item]) -> OutputSummary:
    """The index page's line about ``output`` once published with ``items``: its current
    document's item count and newest update (what its Last-Modified says)."""
    current = sorted(items, key=_order_key, reverse=True)[: max(1, output.limit)]
    return OutputSummary(items=len(current), updated=_newest(current))


_INDEX_STYLE = (
    ":root{color-scheme:light dark}"
    "body{font:16px/1.5 system-ui,sans-serif;margin:0 auto;padding:1.2rem;max-width:48rem}"
    "li{margin:.5rem 0}small{color:GrayText;display:block}"
)


def render_index(
    outputs: Sequence[OutputConfig],
    *,
    base_url: str,
    title: str,
    summaries: Mapping[str, OutputSummary] | None = None,
) -> bytes:
    """index.html: every output with a link per format, its item count and last update (from
    ``summaries``, by output name), autodiscovery links and a link to the status page.
    Polyglot markup (void elements self-closed, no named entities) so it also parses as XML."""
    summaries = summaries or {}
    head = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8"/>',
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>',
        f"<title>{_h(title)}</title>",
        f"<style>{_INDEX_STYLE}</style>",
    ]
    body = ["<body>", f"<h1>{_h(title)}</h1>"]
    if outputs:
        body.append("<ul>")
    for output in outputs:
        links = []
        for fmt in output.formats:
            if fmt not in MEDIA_TYPES:
                continue
            href = _h(_file_url(base_url, f"{output.name}.{fmt}"))
            label = FORMAT_LABELS[fmt]
            head.append(
                f'<link rel="alternate" type="{MEDIA_TYPES[fmt]}" '
                f'title="{_h(output.title)} ({label})" href="{href}"/>'
            )
            links.append(f'<a href="{href}" type="{MEDIA_TYPES[fmt]}">{label}</a>')
        line = f"<li><strong>{_h(output.title)}</strong>"
        description = output.description.strip()
        if description:
            line += f" \u2014 {_h(description)}"
        # A description that ends a sentence (or with its own colon) is not followed by a
        # second mark: "one item per story. Atom | RSS", never "story.: Atom".
        line += (" " if description.endswith((".", "!", "?", ":", "\u2026")) else ": ")
        line += " | ".join(links)
        summary = summaries.get(output.name)
        if summary is not None:
            count = f"{summary.items} item{'' if summary.items == 1 else 's'}"
            if summary.updated is not None:
                when = _utc(summary.updated)
                count += (f', updated <time datetime="{rfc3339(when)}">'
                          f"{when:%Y-%m-%d %H:%M} UTC</time>")
            line += f"<small>{count}</small>"
        body.append(line + "</li>")
    if outputs:
        body.append("</ul>")
    else:
        body.append("<p>No outputs are configured.</p>")
    opml = _h(_file_url(base_url, "outputs.opml"))
    body.append(f'<p><a href="{opml}" type="text/x-opml">All feeds as OPML</a></p>')
    # Relative: the page served by the daemon (which serves /status beside it), whatever
    # base_url says, and behind a proxy that maps base_url onto it.
    body.append('<p><a href="status">Status</a>: feeds, errors and activity</p>')
    body.append("</body>")
    doc = head + ["</head>"] + body + ["</html>"]
    return ("\n".join(doc) + "\n").encode("utf-8")


def render_opml(outputs: Sequence[OutputConfig], *, base_url: str, title: str) -> bytes:
    """OPML 2.0: one outline per output, pointing at its preferred format (Atom, RSS, JSON),
    so that importing it subscribes once to each output."""
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<opml version="2.0">',
        f"<head><title>{_t(title)}</title></head>",
        "<body>",
    ]
    for output in outputs:
        fmt = _preferred_format(output)
        if fmt is None:
            continue
        attrs = (
            f'type="rss" text="{_a(output.title)}" title="{_a(output.title)}" '
            f'xmlUrl="{_a(_file_url(base_url, f"{output.name}.{fmt}"))}" '
            f'htmlUrl="{_a(_home_url(base_url))}"'
        )
        if output.description.strip():
            attrs += f' description="{_a(output.description.strip())}"'
        out.append(f"<outline {attrs}/>")
    out.append("</body>")
    out.append("</opml>")
    return ("\n".join(out) + "\n").encode("utf-8")


def write_index(
    outputs: Sequence[OutputConfig],
    out_dir: Path | Documents,
    *,
    base_url: str,
    title: str = "aggregator",
    summaries: Mapping[str, OutputSummary] | None = None,
) -> None:
    """Write ``index.html`` and ``outputs.opml`` (each only when its bytes change), each
    independently of the other; PublishWriteError lists the ones that failed."""
    docs = _documents(out_dir)
    docs.prepare()
    failures: list[tuple[Path, str]] = []
    written: list[Path] = []
    documents = (
        ("index.html", lambda: render_index(outputs, base_url=base_url, title=title,
                                            summaries=summaries)),
        ("outputs.opml", lambda: render_opml(outputs, base_url=base_url, title=title)),
    )
    for name, render in documents:
        path = docs.location(name)
        try:
            if docs.write(name, render()):
                written.append(path)
        except OSError as exc:
            failures.append((path, _reason(exc)))
    if failures:
        raise PublishWriteError(failures, written)
