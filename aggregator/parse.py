"""Feed parsing: raw bytes -> models.ParsedFeed (RSS 0.9x/1.0/2.0, Atom 0.3/1.0, JSON Feed 1.x).

feedparser does the XML work; this module defends it against hostile input first (DOCTYPE
internal subsets and entity declarations are stripped, invalid character references are
neutralised, oversized feeds are cut), refuses bodies that are not feeds, and normalises what
feedparser returns (plain-text titles, UTC dates with a sanity policy, stable entry keys).

``ParserPool`` runs ``parse_feed`` in persistent worker processes with resource limits, so one
pathological feed costs at most one worker, never the daemon.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import os
import queue
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from aggregator import sandbox
from aggregator.errors import ParseError
from aggregator.models import Alternate, Enclosure, ParsedEntry, ParsedFeed
from aggregator.storable import escape_unstorable, strip_unstorable

__all__ = ["ParserPool", "author_name", "parse_feed"]

MAX_TITLE_CHARS = 2000
MAX_SHORT_CHARS = 500  # authors, categories
MAX_URL_CHARS = 8192
MAX_KEY_CHARS = 2048  # longer guids are hashed: keys are stored and indexed
MAX_WARNINGS = 50
MAX_RAW_DATE_CHARS = 200
EARLIEST_DATE = datetime(1995, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)

_NON_SPACE = re.compile(rb"[^ \t\r\n]")
_CHARSET_PARAM = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.I)
_SURROGATES = re.compile("[\ud800-\udfff]")
_SPACES = re.compile(r"\s+")
_LANG = re.compile(r"^[a-z]{2,8}(?:-[a-z0-9]{1,8})*$")

# --------------------------------------------------------------------------- public API


def parse_feed(
    body: bytes,
    url: str,
    *,
    content_type: str | None = None,
    charset: str | None = None,
    now: datetime | None = None,
    max_entries: int = 2000,
) -> ParsedFeed:
    """Parse a feed body fetched from ``url``; raise ParseError when it is not a usable feed.

    ``content_type`` is the HTTP media type (a full header value is accepted too) and
    ``charset`` its charset parameter; ``now`` anchors the "future date" check (default: the
    current time). Entries beyond ``max_entries`` are dropped, first ones kept.
    """
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    try:
        data = body if isinstance(body, bytes) else bytes(body)
        return _parse(data, url, content_type, charset, now, max(0, max_entries))
    except MemoryError:
        raise ParseError("memory", f"out of memory while parsing {len(body)} bytes") from None
    except RecursionError:
        raise ParseError("malformed", "document nests too deeply to parse") from None


def _parse(
    body: bytes,
    url: str,
    content_type: str | None,
    charset: str | None,
    now: datetime,
    max_entries: int,
) -> ParsedFeed:
    if not body:
        raise ParseError("empty", "empty body (0 bytes)")
    start = _first_non_space(body)
    if start < 0:
        raise ParseError("empty", f"body is only whitespace ({len(body)} bytes)")
    # Tolerate a full header value ("text/xml; charset=koi8-r") as well as the bare type.
    ctype, _, params = (content_type or "").partition(";")
    ctype = ctype.strip().lower()
    if not charset and (m := _CHARSET_PARAM.search(params)):
        charset = m.group(1)
    charset = (charset or "").strip().strip("\"'").lower() or None
    if body[start : start + 1] in (b"{", b"[") or (
        "json" in ctype and body[start : start + 1] != b"<"
    ):
        return _parse_json(body, url, charset, now, max_entries)
    return _parse_xml(body, url, ctype, charset, now, max_entries)


# --------------------------------------------------------------------------- XML feeds


@dataclass
class _Prepared:
    data: bytes
    root: str
    netscape: bool  # a Netscape RSS 0.91 DOCTYPE was removed: feedparser reports rss091n for it


# A guid that is a permalink (no isPermaLink="false") or an Atom id, whose value has no URI
# scheme: feedparser resolves such an id against the base URI, and the result is the
# entry's identity. Those documents (and any with xml:base) are parsed with the base as
# before; for all others the base changes nothing feedparser returns that we use.
_RELATIVE_ID = re.compile(
    rb"<(?:guid(?![^>]*ispermalink\s*=\s*[\"']?false)[^>]*|(?:[\w.-]+:)?id(?:\s[^>]*)?)>"
    rb"\s*(?:<!\[CDATA\[\s*)?(?![a-z][a-z0-9+.\-]*:)",
    re.IGNORECASE,
)


def _parse_xml(
    body: bytes,
    url: str,
    ctype: str,
    charset: str | None,
    now: datetime,
    max_entries: int,
) -> ParsedFeed:
    warnings: list[str] = []
    data, charset = _to_ascii_compatible(body, charset, warnings)
    charset = _check_charset(data, charset, warnings)
    prep = _defuse(data, warnings)
    data = _cap_entries(prep.data, max_entries, warnings)

    # feedparser picks the encoding from these headers per RFC 3023. A text/* type without a
    # charset would force us-ascii, so it is passed as application/xml: the XML declaration
    # (or UTF-8) then decides, as for an untyped body.
    media = ctype if ctype and (charset or not ctype.startswith("text/")) else "application/xml"
    headers = {"content-type": f"{media}; charset={charset}" if charset else media}
    # With a base URI, feedparser joins it to every element's (absent) xml:base: a third of
    # a parse. Without xml:base in the document the base is the feed URL throughout, and the
    # few values it would resolve are resolved here instead (links, enclosures, guids).
    xml_base = b"xml:base" in data
    with_base = xml_base or _RELATIVE_ID.search(data) is not None
    if with_base and _http_url(url):
        headers["content-location"] = url
    import feedparser  # here, not at the top: only parser processes need it

    _keep_raw_authors()
    try:
        result = feedparser.parse(
            io.BytesIO(data),  # never a str/bytes path: feedparser would open files and URLs
            response_headers=headers,
            sanitize_html=False,  # raw HTML is kept; clean sanitises it later
            # Relative URLs in content are resolved by _resolve_urls and again by the
            # sanitiser: feedparser's pure-Python pass would do the work a third time, at a
            # large share of a parse. Only xml:base, which neither can see, needs it.
            resolve_relative_uris=xml_base,
        )
    except (MemoryError, RecursionError):
        raise
    except Exception as exc:  # feedparser has crash bugs on hostile input; it is still a bad feed
        raise ParseError("malformed", f"feedparser failed: {type(exc).__name__}: {exc}") from None

    version = str(result.get("version") or "")
    if prep.netscape and version == "rss091u":
        version = "rss091n"
    entries_raw = list(result.get("entries") or [])
    if not version:
        raise ParseError(
            "not_a_feed",
            f"not an RSS/Atom feed: root element <{prep.root}> is not a known feed format",
        )
    if result.get("bozo"):
        warnings.append(_describe_bozo(result.get("bozo_exception")))

    feed: Mapping[str, Any] = result.get("feed") or {}
    feed_link = _clean_url(_get(feed, "link"), url)
    feed_lang = _language(_get(feed, "language"))
    entries = [_xml_entry(e, url, feed_lang, now) for e in entries_raw]
    return ParsedFeed(
        title=_plain_or_none(_get(feed, "title"), _detail_type(feed, "title_detail")),
        link=feed_link,
        language=feed_lang,
        format=version,
        entries=_finish_entries(entries, max_entries, warnings),
        ttl=_ttl(_get(feed, "ttl")),
        warnings=_finish_warnings(warnings),
        updated=_feed_date(feed, now),
    )


def _feed_date(feed: Mapping[str, Any], now: datetime) -> datetime | None:
    """The feed's own last-change time: Atom <updated> / RSS <lastBuildDate> (feedparser's
    ``updated``), else RSS <pubDate> / dc:date (``published``); None unless sane."""
    for name in ("updated", "published"):
        raw = _text(_get(feed, name)) or None
        value = _entry_date(raw, _get(feed, f"{name}_parsed"))
        if raw and _date_note(raw, value, now) is None:
            return value
    return None


def _xml_entry(
    e: Mapping[str, Any], base: str, feed_lang: str | None, now: datetime
) -> ParsedEntry:
    # Links are resolved against the feed URL here (feedparser did it already where it was
    # given the base: see _RELATIVE_ID).
    link = _clean_url(_own_link(e, feed_lang), base)
    title = _plain(_get(e, "title"), _detail_type(e, "title_detail"), MAX_TITLE_CHARS)
    summary = _resolve_urls(_html_value(_get(e, "summary"), _detail_type(e, "summary_detail")),
                            base)
    content = _resolve_urls(_longest_content(e), base)
    guid = _text(_get(e, "id")).strip() or None
    pub_raw, upd_raw = _text(_get(e, "published")) or None, _text(_get(e, "updated")) or None
    published, updated, date_note = _date_policy(
        pub_raw,
        _entry_date(pub_raw, _get(e, "published_parsed")),
        upd_raw,
        _entry_date(upd_raw, _get(e, "updated_parsed")),
        now,
    )
    lang = _language(_get(e, "language"))
    if lang is None:
        for key in ("content", "summary_detail", "title_detail"):
            detail = _get(e, key)
            if isinstance(detail, list):
                detail = detail[0] if detail else None
            if isinstance(detail, Mapping) and (lang := _language(detail.get("language"))):
                break
    return ParsedEntry(
        key=_entry_key(guid, link, title, content or summary),
        guid=escape_unstorable(_cut(guid, MAX_KEY_CHARS)) if guid else None,
        url=link,
        title=title,
        author=_authors(e),
        summary_html=_scrub(summary),
        content_html=_scrub(content),
        published=published,
        updated=updated,
        published_raw=_raw_date(pub_raw or upd_raw),
        date_note=date_note,
        categories=_categories(
            (t.get("term") or t.get("label")) for t in _list(e, "tags") if isinstance(t, Mapping)
        ),
        enclosures=_enclosures(e, base),
        language=lang or feed_lang,
        alternates=_alternates(e, base, link),
    )


def _own_link(e: Mapping[str, Any], feed_lang: str | None) -> Any:
    """The entry's own link. feedparser keeps the last <link rel="alternate"> of an Atom
    entry, which is a translation when the entry lists its language versions: the entry's
    own is the alternate without hreflang, else the one in the entry's (or feed's) language,
    else the first."""
    links = [x for x in _list(e, "links") if isinstance(x, Mapping)
             and (x.get("rel") or "alternate") == "alternate" and _text(x.get("href"))
             and "html" in (_text(x.get("type")) or "text/html").lower()]
    if not any(_text(x.get("hreflang")) for x in links):
        return _get(e, "link")
    for x in links:
        if not _text(x.get("hreflang")).strip():
            return x.get("href")
    lang = _language(_get(e, "language")) or feed_lang
    primary = (lang or "").split("-")[0].lower()
    for x in links:
        if primary and _text(x.get("hreflang")).split("-")[0].lower() == primary:
            return x.get("href")
    return links[0].get("href")


def _alternates(e: Mapping[str, Any], base: str, link: str | None) -> tuple[Alternate, ...]:
    """The entry's <link rel="alternate" hreflang> other than its own link: its translations
    and regional editions (x-default, the language chooser, left out)."""
    found: list[Alternate] = []
    for item in _list(e, "links"):
        if not isinstance(item, Mapping) or (item.get("rel") or "alternate") != "alternate":
            continue
        hreflang = _text(item.get("hreflang")).strip()
        kind = _text(item.get("type")).lower()
        if not hreflang or hreflang.lower() == "x-default" or (kind and "html" not in kind):
            continue
        url = _clean_url(item.get("href"), base)
        if url and url != link and all(a.url != url for a in found):
            found.append(Alternate(url, hreflang, "hreflang"))
    return tuple(found)


def _longest_content(e: Mapping[str, Any]) -> str | None:
    """The longest content value: Atom/RSS content, else Yandex full-text or Turbo content."""
    values = [
        _html_value(c.get("value"), c.get("type"))
        for c in _list(e, "content")
        if isinstance(c, Mapping)
    ]
    # Yandex formats are common in the region's feeds; their full text is often only here.
    turbo = _text(_get(e, "turbo_content"))
    if turbo.strip():
        values.append(turbo)
    full = _text(_get(e, "yandex_full-text"))
    if full.strip():
        if "<" not in full and "&lt;" in full:  # escaped HTML inside CDATA: unescape once
            values.append(html.unescape(full))
        elif re.search(r"</?[a-zA-Z][^>]*>", full):
            values.append(full)
        else:
            values.append(_text_to_html(full))
    nonempty = [v for v in values if v and v.strip()]
    return max(nonempty, key=len) if nonempty else None


def _authors(e: Mapping[str, Any]) -> str | None:
    """The entry's author names, comma-separated; never an address or a piece of one.
    Text authors (RSS <author>, <dc:creator>) are read from their raw value (see
    _keep_raw_authors); structured ones (Atom <name>) from the name, which some feeds fill
    with an address too. Names may carry entities or markup like titles do."""
    names: list[str] = []
    authors = [a for a in _list(e, "authors") if isinstance(a, Mapping)]
    for a in authors:
        raw = a.get("raw")
        names.append(_author_names(raw if isinstance(raw, str) else a.get("name"), "text/html"))
    if not authors:
        names = [_author_names(_get(e, "author"), "text/html")]
    return _cut(", ".join(dict.fromkeys(n for n in names if n)), MAX_SHORT_CHARS) or None


# An e-mail address, as authors write them: anything but spaces, brackets, quotes and list
# separators around one '@' (internationalised local parts and domains, TLDs of any length),
# with an optional mailto: and ?subject=.
_ADDRESS_CHAR = r"[^\s@<>()\[\]{},;:\"'`«»“”]"
_ADDRESS = re.compile(rf"(?:mailto:)?{_ADDRESS_CHAR}+@{_ADDRESS_CHAR}+(?:\?\S*)?", re.I)
_EMPTY_BRACKETS = re.compile(r"\(\s*\)|<\s*>|\[\s*\]|\{\s*\}")
_BRACKET_PAIRS = ("()", "<>", "[]", "{}")
_NAME_EDGES = " \t\"'“”«»,;:-–—/|"
_LETTER = re.compile(r"[^\W\d_]")


def author_name(value: str | None) -> str | None:
    """The name(s) in a plain-text author value from anywhere (an article page's metadata):
    the same reading as feed authors, so an address never becomes an author."""
    return _cut(_author_names(value, "text/plain"), MAX_SHORT_CHARS) or None


def _split_authors(text: str) -> list[str]:
    """Split a list of authors at commas and semicolons outside brackets and quotes
    ("Doe, John" splits too, and is joined back the same way)."""
    parts: list[str] = []
    buf: list[str] = []
    depth, quoted = 0, False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in "(<[{":
            depth += 1
        elif not quoted and ch in ")>]}":
            depth = max(0, depth - 1)
        elif not quoted and depth == 0 and ch in ",;":
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    parts.append("".join(buf))
    return parts


def _without_addresses(part: str) -> str:
    """One author with any address removed: "email (Name)", "Name <email>", "Name (email)",
    a bare address (nothing left) and unbalanced brackets around what is left."""
    if "@" not in part:
        return part
    rest = _EMPTY_BRACKETS.sub(" ", _ADDRESS.sub(" ", part))
    for pair in _BRACKET_PAIRS:
        if rest.count(pair[0]) != rest.count(pair[1]):
            rest = rest.replace(pair[0], " ").replace(pair[1], " ")
    rest = _collapse(rest).strip(_NAME_EDGES)
    for pair in _BRACKET_PAIRS:  # "(Name)": the brackets only held the name
        if rest.startswith(pair[0]) and rest.endswith(pair[1]) and rest.count(pair[0]) == 1:
            rest = rest[1:-1].strip(_NAME_EDGES)
    return rest


def _author_names(value: Any, mime: str) -> str:
    """The names in one raw author value, in order, comma-separated (a list of initials such
    as "Lu, A., Auger, A." stays whole); addresses and parts without a letter dropped."""
    text = _text(value)[: MAX_SHORT_CHARS * 32]
    if "html" in mime and "&" in text:
        text = html.unescape(text)  # "Name &lt;a@b.c&gt;": ';' would split it
    names = []
    for part in _split_authors(text):
        name = _without_addresses(_plain(_without_addresses(part), mime, MAX_SHORT_CHARS))
        if _LETTER.search(name):
            names.append(name)
    return ", ".join(names)


def _keep_raw_authors() -> None:
    """feedparser reads a text author ("jonas@insanity.industries (Jonas Große Sundrup)")
    with an address pattern that only knows 2-4 letter TLDs and keeps the fragments it cut
    ("stries (Jonas Große Sundrup"); the raw value is lost when the entry has several
    authors. Its end-of-author handler is wrapped (in parser processes, once) so each text
    author keeps its raw value as "raw" in the authors list, for _authors to parse."""
    try:
        from feedparser.namespaces._base import Namespace
    except ImportError:  # another feedparser layout: names fall back to its own reading
        return
    original = Namespace.__dict__.get("_end_author")
    if original is None or getattr(original, "keeps_raw", False):
        return

    def _end_author(self: Any) -> None:
        context = self._get_context()
        authors = context.get("authors")
        target = authors[-1] if authors else None
        fresh = target is not None and not target  # no <name>/<email> inside: a text author
        original(self)
        raw = dict.get(context, "author")
        if fresh and isinstance(raw, str) and target is not None:
            target["raw"] = raw

    _end_author.keeps_raw = True  # type: ignore[attr-defined]
    Namespace._end_author = _end_author


def _enclosures(e: Mapping[str, Any], base: str) -> tuple[Enclosure, ...]:
    found: dict[str, Enclosure] = {}
    candidates: list[tuple[Any, Any, Any]] = [
        (link.get("href"), link.get("type"), link.get("length"))
        for link in _list(e, "links")
        if isinstance(link, Mapping) and link.get("rel") == "enclosure"
    ]
    candidates += [
        (m.get("url"), m.get("type"), m.get("filesize") or m.get("fileSize"))
        for m in _list(e, "media_content")
        if isinstance(m, Mapping)
    ]
    for href, mime, length in candidates:
        url = _clean_url(href, base)
        if url and url not in found:
            found[url] = Enclosure(
                url=url, type=_scrub(_text(mime).strip()) or None, length=_int(length)
            )
    return tuple(found.values())


# --------------------------------------------------------------------------- hostile XML


_UTF16_32 = (
    (b"\x00\x00\xfe\xff", "utf-32-be", 4),
    (b"\xff\xfe\x00\x00", "utf-32-le", 4),
    (b"\xfe\xff", "utf-16-be", 2),
    (b"\xff\xfe", "utf-16-le", 2),
    (b"\x00\x00\x00<", "utf-32-be", 0),
    (b"<\x00\x00\x00", "utf-32-le", 0),
    (b"\x00<\x00?", "utf-16-be", 0),
    (b"<\x00?\x00", "utf-16-le", 0),
)
_XML_DECL = re.compile(rb"^(\s*<\?xml[^>]*?encoding\s*=\s*)([\"'])[^\"']*\2")


def _to_ascii_compatible(
    body: bytes, charset: str | None, warnings: list[str]
) -> tuple[bytes, str | None]:
    """Re-encode UTF-16/32 bodies as UTF-8 so the byte-level defences below can see markup."""
    for marker, codec, skip in _UTF16_32:  # noqa: B007 - the match is used after the loop
        if body.startswith(marker):
            break
    else:
        label = (charset or "").lower().replace("_", "-")
        if not (label.startswith("utf-16") or label.startswith("utf-32")):
            return body, charset
        if b"\x00" not in body[:4]:  # labelled UTF-16/32 but plainly ASCII-compatible
            warnings.append(f"encoding: charset {charset} ignored; the body is not {label}")
            return body, None
        codec, skip = label, 0
        if codec in ("utf-16", "utf-32") and body[:1] == b"<":
            codec += "-le"  # no BOM and '<' first: little endian is the only reading
    try:
        text = body[skip:].decode(codec)
    except (UnicodeDecodeError, LookupError):
        warnings.append(f"encoding: body is not valid {codec}; decoded leniently")
        text = body[skip:].decode(codec, "replace") if codec.startswith("utf") else ""
        if not text:
            return body, charset
    data = _SURROGATES.sub("\ufffd", text).encode("utf-8")
    return _XML_DECL.sub(rb"\1\2utf-8\2", data, count=1), "utf-8"


_UTF8_NAMES = frozenset({"utf-8", "utf8", "utf_8", "unicode-1-1-utf-8"})
_DECL_ENCODING = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([^\"']*)[\"']")


def _check_charset(data: bytes, charset: str | None, warnings: list[str]) -> str | None:
    """Prefer UTF-8 over a declared legacy charset when the bytes are valid UTF-8.

    Non-ASCII text in a legacy charset practically never forms valid UTF-8, while servers that
    label UTF-8 feeds with a default charset (windows-1251, iso-8859-1) are common: decoding
    those with the label gives mojibake without any error.
    """
    m = _DECL_ENCODING.match(data[:512])
    declared = (charset or (m.group(1).decode("ascii", "replace") if m else "")).strip().lower()
    if not declared or declared in _UTF8_NAMES or declared.startswith(("utf-16", "utf-32")):
        return charset
    if data.isascii():
        return charset
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return charset
    source = "HTTP charset" if charset else "XML declaration"
    warnings.append(
        f"encoding: {source} says {declared}, but the body is valid UTF-8; read as UTF-8"
    )
    return "utf-8"


_PROLOG_WS = re.compile(rb"[ \t\r\n]*")
_NAME = re.compile(rb"[A-Za-z_][-\w.:]*")
_DECL_END = re.compile(rb"[\"'>\[\]]|<!--")
_TAG_END = re.compile(rb"[ \t\r\n]*>")


def _defuse(data: bytes, warnings: list[str]) -> _Prepared:
    """Strip DOCTYPE/ENTITY declarations, neutralise bad character references, find the root.

    Raises ParseError for bodies without a root element, HTML pages and truncated documents.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    pos = _PROLOG_WS.match(data).end()  # type: ignore[union-attr]
    kept: list[bytes] = []
    netscape = False
    root: str | None = None
    n = len(data)
    while pos < n:
        if data.startswith(b"<?", pos):
            end = data.find(b"?>", pos + 2)
            if end < 0:
                raise ParseError("malformed", "truncated: processing instruction never closed")
            kept.append(data[pos : end + 2])
            pos = end + 2
        elif data.startswith(b"<!--", pos):
            end = data.find(b"-->", pos + 4)
            if end < 0:
                raise ParseError("malformed", "truncated: comment before the root never closed")
            kept.append(data[pos : end + 3])
            pos = end + 3
        elif data.startswith(b"<!", pos):
            end, had_subset = _skip_declaration(data, pos)
            decl = data[pos:end]
            head = decl[:9].upper()
            if head == b"<!DOCTYPE":
                netscape = netscape or b"netscape" in decl.lower()
                if had_subset:
                    warnings.append(
                        "hostile XML: DOCTYPE internal subset removed (entity declarations are not allowed)"
                    )
            else:
                warnings.append(
                    f"hostile XML: declaration {decl[:20]!r}... before the root removed"
                )
            pos = end
        elif data.startswith(b"<", pos):
            m = _NAME.match(data, pos + 1)
            if not m:
                break
            root = m.group().decode("ascii")
            break
        else:  # stray text before the root (e.g. a PHP warning): keep it, feedparser copes
            nxt = data.find(b"<", pos)
            if nxt < 0:
                break
            kept.append(data[pos:nxt])
            pos = nxt
        ws = _PROLOG_WS.match(data, pos).end()  # type: ignore[union-attr]
        kept.append(data[pos:ws])
        pos = ws

    if root is None:
        if pos >= n and all(k.strip() == b"" or k.startswith((b"<?", b"<!--")) for k in kept):
            raise ParseError("empty", "no root element: the body holds only an XML prolog")
        sample = data[:60].decode("utf-8", "replace")
        raise ParseError("not_a_feed", f"not XML: no root element found (body starts {sample!r})")
    local = root.rsplit(":", 1)[-1].lower()
    if local == "html":
        raise ParseError("not_a_feed", "HTML page, not a feed" + _advertised_feed(data))

    body = data[pos:]
    if not _root_closed(body, root):
        raise ParseError(
            "malformed",
            f"truncated document: root element <{root}> is never closed ({len(data)} bytes)",
        )
    body = _neutralise_body(body, warnings)
    return _Prepared(data=b"".join(kept) + body, root=root, netscape=netscape)


def _skip_declaration(data: bytes, pos: int) -> tuple[int, bool]:
    """End offset of the ``<!...>`` declaration at ``pos`` (quotes, subset and comments aware)."""
    depth, had_subset, i = 0, False, pos + 2
    while True:
        m = _DECL_END.search(data, i)
        if m is None:
            raise ParseError("malformed", "truncated: declaration before the root never closed")
        tok = m.group()
        if tok in (b'"', b"'"):
            end = data.find(tok, m.end())
            if end < 0:
                raise ParseError("malformed", "truncated: unterminated string in a declaration")
            i = end + 1
        elif tok == b"<!--":
            end = data.find(b"-->", m.end())
            if end < 0:
                raise ParseError("malformed", "truncated: unterminated comment in a declaration")
            i = end + 3
        elif tok == b"[":
            depth += 1
            had_subset = True
            i = m.end()
        elif tok == b"]":
            depth = max(0, depth - 1)
            i = m.end()
        elif depth == 0:  # '>'
            return m.end(), had_subset
        else:
            i = m.end()


def _root_closed(body: bytes, root: str) -> bool:
    """Whether the document element is ever closed (trailing junk after it is tolerated)."""
    start_end = body.find(b">")
    if start_end > 0 and body[start_end - 1 : start_end] == b"/":
        return True  # <rss/>: an empty document element
    close = f"</{root}".encode()
    idx = body.rfind(close)
    while idx >= 0:
        if _TAG_END.match(body, idx + len(close)):
            return True
        idx = body.rfind(close, 0, idx)
    # XML is case-sensitive but lenient parsing is not; accept </RSS> for <rss>.
    return re.search(rb"</" + re.escape(root.encode()) + rb"\s*>", body, re.I) is not None


# Character references that cannot be XML characters. feedparser's lenient parser turns them
# into lone surrogates or crashes (chr() of a huge number, int() of 5000 digits). The pattern
# over-approximates cheaply (1-2 digit values, 55xxx-57xxx, 655xx, 7+ digits); the callback
# decides exactly. A missing ';' is tolerated because the lenient parser accepts that too.
_CHARREF = re.compile(
    rb"&#(?:[xX]0*([0-9a-fA-F]{1,2}|[dD][89a-fA-F][0-9a-fA-F]{2}|[fF]{3}[eEfF]|[0-9a-fA-F]{6,})"
    rb"(?![0-9a-fA-F])|0*([0-9]{1,2}|5[5-7][0-9]{3}|655[0-9]{2}|[0-9]{7,})(?![0-9]));?"
)
_BODY_DECL = re.compile(rb"<!\[CDATA\[.*?(?:\]\]>|\Z)|<!(?=(?i:ENTITY|DOCTYPE)\b)", re.S)


def _valid_xml_char(cp: int) -> bool:
    return (
        cp in (0x9, 0xA, 0xD)
        or 0x20 <= cp <= 0xD7FF
        or 0xE000 <= cp <= 0xFFFD
        or 0x10000 <= cp <= 0x10FFFF
    )


def _neutralise_body(body: bytes, warnings: list[str]) -> bytes:
    bad = 0

    def charref(m: re.Match[bytes]) -> bytes:
        nonlocal bad
        digits = m.group(1) or m.group(2)
        if len(digits) <= 8 and _valid_xml_char(int(digits, 16 if m.group(1) else 10)):
            return m.group()
        bad += 1
        return b"&#xFFFD;"

    if b"&#" in body:
        body = _CHARREF.sub(charref, body)
        if bad:
            warnings.append(f"hostile XML: {bad} invalid character reference(s) replaced by U+FFFD")
    lowered = body.lower() if len(body) < 64 * 1024 * 1024 else body
    if b"<!entity" in lowered or b"<!doctype" in lowered:
        hits = 0

        def decl(m: re.Match[bytes]) -> bytes:
            nonlocal hits
            if m.group().startswith(b"<![CDATA["):
                return m.group()
            hits += 1
            return b"&lt;!"

        body = _BODY_DECL.sub(decl, body)
        if hits:
            warnings.append(
                f"hostile XML: {hits} DOCTYPE/ENTITY declaration(s) inside the document neutralised"
            )
    return body


_ADVERTISED = re.compile(
    rb"<link\b[^>]*\btype\s*=\s*[\"']application/(?:rss|atom)\+xml[\"'][^>]*>", re.I
)
_HREF = re.compile(rb"\bhref\s*=\s*[\"']([^\"']+)[\"']", re.I)


def _advertised_feed(data: bytes) -> str:
    """Name the feed an HTML page advertises, so an operator can fix the feed URL."""
    m = _ADVERTISED.search(data[: 256 * 1024])
    href = _HREF.search(m.group()) if m else None
    if not href:
        return ""
    return f"; the page advertises a feed at {html.unescape(href.group(1).decode('utf-8', 'replace'))!r}"


_ENTRY_START = re.compile(
    rb"<!\[CDATA\[.*?(?:\]\]>|\Z)|<!--.*?(?:-->|\Z)|<(?:[A-Za-z_][-\w.]*:)?(?:item|entry)(?=[\s/>])",
    re.S,
)
_ENTRY_END = re.compile(rb"</(?:[A-Za-z_][-\w.]*:)?(?:item|entry)\s*>")


def _cap_entries(data: bytes, max_entries: int, warnings: list[str]) -> bytes:
    """Cut entries beyond ``max_entries`` out of the bytes before feedparser builds them all.

    A 50,000-entry feed would otherwise cost hundreds of MB of dicts. The span from the first
    surplus entry to the end of the last entry is removed, so the document stays well formed.
    """
    if (
        data.count(b"<item") + data.count(b"<entry") + data.count(b":item") + data.count(b":entry")
        <= max_entries
    ):
        return data
    count, cut = 0, -1
    for m in _ENTRY_START.finditer(data):
        if m.group().startswith(b"<!"):
            continue
        count += 1
        if count == max_entries + 1:
            cut = m.start()
    if cut < 0:
        return data
    last_end = -1
    for m in _ENTRY_END.finditer(data, cut):
        last_end = m.end()
    if last_end < 0:
        return data
    warnings.append(f"feed has {count} entries; only the first {max_entries} were kept")
    return data[:cut] + data[last_end:]


def _describe_bozo(exc: object) -> str:
    name = type(exc).__name__
    if name == "CharacterEncodingOverride":
        return f"encoding: {exc}"
    if name == "CharacterEncodingUnknown":
        return f"encoding: {exc}; decoded with replacement characters"
    if name == "NonXMLContentType":
        return f"content type: {exc}"
    get_line = getattr(exc, "getLineNumber", None)
    if callable(get_line):
        col = getattr(exc, "getColumnNumber", lambda: "?")()
        msg = getattr(exc, "getMessage", lambda: str(exc))()
        return f"not well-formed XML (line {get_line()}, column {col}: {msg}); parsed leniently"
    return f"feed is not well formed ({name}: {exc}); parsed leniently"


# --------------------------------------------------------------------------- JSON Feed


def _parse_json(
    body: bytes, url: str, charset: str | None, now: datetime, max_entries: int
) -> ParsedFeed:
    warnings: list[str] = []
    try:
        doc = json.loads(body)  # detects UTF-8/16/32 as RFC 8259 requires
    except UnicodeDecodeError:
        warnings.append(f"encoding: JSON is not UTF-8; decoded as {charset or 'windows-1252'}")
        try:
            doc = json.loads(body.decode(charset or "windows-1252", "replace"))
        except (ValueError, LookupError) as exc:
            raise ParseError("malformed", f"invalid JSON: {exc}") from None
    except ValueError as exc:  # JSONDecodeError, and int() digit limits
        raise ParseError("malformed", f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ParseError(
            "not_a_feed", f"JSON document is a {type(doc).__name__}, not a JSON Feed object"
        )
    version = doc.get("version")
    if not (isinstance(version, str) and "jsonfeed.org/version/" in version):
        raise ParseError(
            "not_a_feed",
            "JSON document is not a JSON Feed (no https://jsonfeed.org/version/ 'version')",
        )
    fmt = "json11" if version.rstrip("/").endswith("1.1") else "json10"
    items = doc.get("items")
    if not isinstance(items, list):
        warnings.append("JSON Feed without an 'items' array")
        items = []
    feed_link = _clean_url(doc.get("home_page_url"), url)
    feed_lang = _language(doc.get("language"))
    base = url
    entries = [
        _json_entry(item, base, feed_lang, now)
        for item in items[: max_entries + 1]
        if isinstance(item, dict)
    ]
    if len(items) > max_entries:
        warnings.append(f"feed has {len(items)} entries; only the first {max_entries} were kept")
    return ParsedFeed(
        title=_json_title(doc.get("title")) or None,
        link=feed_link,
        language=feed_lang,
        format=fmt,
        entries=_finish_entries(entries, max_entries, warnings),
        ttl=None,
        warnings=_finish_warnings(warnings),
    )


def _json_entry(
    item: dict[str, Any], base: str, feed_lang: str | None, now: datetime
) -> ParsedEntry:
    link = _clean_url(item.get("url"), base) or _clean_url(item.get("external_url"), base)
    title = _json_title(item.get("title"))
    content = _text(item.get("content_html")) or None
    if not content and _text(item.get("content_text")).strip():
        content = _text_to_html(_text(item.get("content_text")))
    summary = (
        _text_to_html(_text(item.get("summary"))) if _text(item.get("summary")).strip() else None
    )
    raw_id = item.get("id")
    guid = (
        str(raw_id).strip()
        if isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool)
        else ""
    )
    pub_raw, upd_raw = (
        _text(item.get("date_published")) or None,
        _text(item.get("date_modified")) or None,
    )
    published, updated, note = _date_policy(
        pub_raw, _parse_iso(pub_raw), upd_raw, _parse_iso(upd_raw), now
    )
    authors = item.get("authors")
    if not isinstance(authors, list):
        authors = [item.get("author")]
    names = [_author_names(a.get("name"), "text/plain") for a in authors if isinstance(a, dict)]
    names = list(dict.fromkeys(n for n in names if n))
    tags = item.get("tags")
    enclosures: dict[str, Enclosure] = {}
    attachments = item.get("attachments")
    for att in attachments if isinstance(attachments, list) else []:
        if isinstance(att, dict) and (att_url := _clean_url(att.get("url"), base)):
            enclosures.setdefault(
                att_url,
                Enclosure(
                    att_url,
                    _scrub(_text(att.get("mime_type")).strip()) or None,
                    _int(att.get("size_in_bytes")),
                ),
            )
    return ParsedEntry(
        key=_entry_key(guid or None, link, title, content or summary),
        guid=escape_unstorable(_cut(guid, MAX_KEY_CHARS)) or None,
        url=link,
        title=title,
        author=_cut(", ".join(names), MAX_SHORT_CHARS) or None,
        summary_html=_scrub(summary),
        content_html=_scrub(content),
        published=published,
        updated=updated,
        published_raw=_raw_date(pub_raw or upd_raw),
        date_note=note,
        categories=_categories(tags if isinstance(tags, list) else []),
        enclosures=tuple(enclosures.values()),
        language=_language(item.get("language")) or feed_lang,
    )


def _json_title(value: Any) -> str:
    # JSON Feed titles are plain text, but publishers (WordPress) often leave entities in them.
    text = _text(value)[: MAX_TITLE_CHARS * 32]
    return _scrub(_cut(_collapse(html.unescape(text)), MAX_TITLE_CHARS)) or ""


def _parse_iso(raw: str | None) -> datetime | None:
    if not raw:
        return None
    value = raw.strip()
    try:
        dt = datetime.fromisoformat(value[:-1] + "+00:00" if value[-1:] in "zZ" else value)
    except ValueError:
        try:
            dt = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return _localised_date(value)
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


# --------------------------------------------------------------------------- entries


def _finish_entries(
    entries: list[ParsedEntry], max_entries: int, warnings: list[str]
) -> tuple[ParsedEntry, ...]:
    """Keep the first ``max_entries`` in document order, then drop repeated keys (first wins)
    and entries with nothing in them (no title, link, guid, text or enclosure)."""
    if len(entries) > max_entries:
        if not any(w.startswith("feed has ") for w in warnings):
            warnings.append(
                f"feed has {len(entries)} entries; only the first {max_entries} were kept"
            )
        entries = entries[:max_entries]
    seen: set[str] = set()
    kept: list[ParsedEntry] = []
    dups: list[str] = []
    empty = 0
    for entry in entries:
        if not (
            entry.title
            or entry.url
            or entry.guid
            or entry.summary_html
            or entry.content_html
            or entry.enclosures
        ):
            empty += 1
            continue
        if entry.key in seen:
            dups.append(entry.key)
            continue
        seen.add(entry.key)
        kept.append(entry)
    if empty:
        warnings.append(
            f"{empty} empty entr{'y' if empty == 1 else 'ies'} (no title, link or text) dropped"
        )
    if dups:
        sample = ", ".join(repr(k[:80]) for k in list(dict.fromkeys(dups))[:3])
        warnings.append(
            f"{len(dups)} entr{'y' if len(dups) == 1 else 'ies'} with a duplicate key dropped "
            f"(first occurrence kept): {sample}"
        )
    return tuple(kept)


def _finish_warnings(warnings: list[str]) -> tuple[str, ...]:
    out = [_scrub(w) or "" for w in dict.fromkeys(warnings)]
    if len(out) > MAX_WARNINGS:
        out = out[: MAX_WARNINGS - 1] + [f"... {len(out) - MAX_WARNINGS + 1} more warnings"]
    return tuple(out)


def _entry_key(guid: str | None, link: str | None, title: str, body: str | None) -> str:
    """guid, else link, else a content hash; overlong guids are hashed to keep keys indexable.
    Unstorable characters are escaped (storable.escape_unstorable), as the store's migration
    escaped the keys stored before, so an entry keeps its identity."""
    if guid:
        if len(guid) <= MAX_KEY_CHARS:
            return escape_unstorable(guid)
        return "sha256:" + hashlib.sha256(guid.encode("utf-8", "replace")).hexdigest()
    if link:
        return link
    digest = hashlib.sha256(f"{title}\n{body or ''}".encode("utf-8", "replace")).hexdigest()
    return "sha256:" + digest


def _date_policy(
    pub_raw: str | None,
    pub: datetime | None,
    upd_raw: str | None,
    upd: datetime | None,
    now: datetime,
) -> tuple[datetime | None, datetime | None, str | None]:
    """Sane published/updated datetimes and a note on why published is None.

    published falls back to updated when only updated is sane.
    """
    pub_note = _date_note(pub_raw, pub, now)
    upd_note = _date_note(upd_raw, upd, now)
    published = pub if pub_note is None else None
    updated = upd if upd_note is None else None
    if published is None and updated is not None:
        published = updated
    if published is not None:
        return published, updated, None
    note = pub_note if pub_raw else upd_note
    return None, updated, note


def _raw_date(raw: str | None) -> str | None:
    return _scrub(_cut(raw.strip(), MAX_RAW_DATE_CHARS)) or None if raw else None


def _date_note(raw: str | None, value: datetime | None, now: datetime) -> str | None:
    if not raw or not raw.strip():
        return "missing"
    if value is None:
        return "unparseable"
    if value > now + FUTURE_SLACK:
        return "future"
    if value < EARLIEST_DATE:
        return "ancient"
    return None


_CLOCK_12H = re.compile(r"\b(1[0-2]|0?[1-9]):[0-5]\d(?::[0-5]\d)?\s*([AaPp])\.?[Mm]\b\.?")


def _entry_date(raw: str | None, parsed: Any) -> datetime | None:
    """feedparser's UTC value, else our fallbacks. feedparser ignores AM/PM and then the zone
    after it, so 12-hour clock dates are rewritten to 24 hours and parsed here instead."""
    if raw and (m := _CLOCK_12H.search(raw)):
        hour = int(m.group(1)) % 12 + (12 if m.group(2) in "Pp" else 0)
        clock = m.group()[len(m.group(1)) :].rstrip(".")
        clock = re.sub(r"\s*[AaPp]\.?[Mm]$", "", clock)
        fixed = f"{raw[: m.start()]}{hour:02d}{clock}{raw[m.end() :]}"
        try:
            dt = parsedate_to_datetime(fixed)
            return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
        except (TypeError, ValueError, IndexError):
            return _localised_date(fixed)
    return _struct_to_dt(parsed) or _localised_date(raw)


def _struct_to_dt(value: Any) -> datetime | None:
    """feedparser's *_parsed values are UTC struct_time tuples."""
    if value is None:
        return None
    try:
        y, mo, d, h, mi, s = tuple(value)[:6]
        return datetime(y, mo, d, h, mi, min(s, 59), tzinfo=UTC)  # leap second 60
    except (TypeError, ValueError, OverflowError):
        return None


# Month-name stems of the languages the aggregator meets (English, Romance, German, Russian,
# Ukrainian, Azerbaijani, Turkish, Georgian, Armenian): localised RFC 822 dates such as
# "Seg, 24 Set 2018 19:42:40 -0300" or "28 сентября 2020 18:25" defeat feedparser.
_MONTH_STEMS: dict[str, int] = {}
for _month, _stems in enumerate(
    (
        "jan janv ene gen янв січ yan oca იან հունվ",
        "feb fev fév фев лют şub sub თებ փետ",
        "mar mär mrz мар бер მარ մարտ",
        "apr abr avr апр кві nis აპრ ապր",
        "may mai mag май мая тра მაი մայ",
        "jun juin giu июн чер iyn haz ივნ հունի",
        "jul juil lug июл лип iyl tem ივლ հուլ",
        "aug ago aoû aou авг сер avq ağu agu აგვ օգո",
        "sep set сен вер sen eyl სექ սեպ",
        "oct out ott okt окт жов eki ოქტ հոկ",
        "nov ноя лис noy kas ნოე նոյ",
        "dec dez dic déc dek дек гру ara დეკ դեկ",
    ),
    start=1,
):
    for _stem in _stems.split():
        _MONTH_STEMS[_stem] = _month
_STEMS_LONGEST_FIRST = sorted(_MONTH_STEMS, key=len, reverse=True)
_LOCAL_DATE = re.compile(
    r"^\s*(?:[^\W\d]+\.?,?\s+)?(\d{1,2})\.?\s+([^\W\d]+)\.?,?\s+(\d{4}),?\s+"
    r"(?:[^\W\d]\s+)?(\d{1,2}):(\d{2})(?::(\d{2}))?\s*(.*?)\s*$"
)
_NUMERIC_DATE = re.compile(
    r"^\s*(\d{1,2})\.(\d{1,2})\.(\d{4})(?:[\sT,]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?\s*(.*?)\s*$"
)


def _localised_date(raw: str | None) -> datetime | None:
    """Fallback for dates feedparser cannot read: localised month names, dd.mm.yyyy."""
    if not raw or len(raw) > 100:
        return None
    m = _LOCAL_DATE.match(raw)
    if m:
        word = m.group(2).lower()
        month = next((_MONTH_STEMS[s] for s in _STEMS_LONGEST_FIRST if word.startswith(s)), None)
        day, year, hour, minute, sec, zone = m.group(1, 3, 4, 5, 6, 7)
    else:
        m = _NUMERIC_DATE.match(raw)
        if not m:
            return None
        day, month_s, year, hour, minute, sec, zone = m.groups()
        month = int(month_s)
    if month is None:
        return None
    try:
        local = datetime(
            int(year), month, int(day), int(hour or 0), int(minute or 0), int(sec or 0)
        )
    except ValueError:
        return None
    offset = _zone_offset(zone or "")
    if offset is None:
        return None
    return (local - offset).replace(tzinfo=UTC)


def _zone_offset(zone: str) -> timedelta | None:
    zone = zone.strip()
    if not zone or zone.upper() in ("GMT", "UTC", "UT", "Z"):
        return timedelta(0)
    m = re.fullmatch(r"(?:GMT|UTC)?\s*([+-])(\d{1,2}):?(\d{2})?", zone, re.I)
    if not m:
        return None
    delta = timedelta(hours=int(m.group(2)), minutes=int(m.group(3) or 0))
    return -delta if m.group(1) == "-" else delta


# --------------------------------------------------------------------------- text helpers


class _TextExtractor(HTMLParser):
    """HTML -> text: entities decoded, tags dropped, script/style content skipped."""

    _SKIP = frozenset({"script", "style", "template"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in ("br", "p", "div", "li"):
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def _html_to_text(value: str) -> str:
    parser = _TextExtractor()
    try:
        parser.feed(value)
        parser.close()
    except (AssertionError, ValueError):  # html.parser's rare internal errors on junk
        return html.unescape(re.sub(r"<[^>]*>", " ", value))
    return "".join(parser.parts)


def _plain(value: Any, mime: str | None, limit: int) -> str:
    """Plain text from a feedparser text construct: tags stripped, entities decoded, spaces collapsed."""
    text = _text(value)
    if not text:
        return ""
    text = text[: limit * 32]  # bound the work on megabyte titles; the tail is cut anyway
    if mime and ("html" in mime or "xml" in mime):
        text = _html_to_text(text)
    return _scrub(_cut(_collapse(text), limit)) or ""


def _plain_or_none(value: Any, mime: str | None) -> str | None:
    return _plain(value, mime, MAX_TITLE_CHARS) or None


def _html_value(value: Any, mime: Any) -> str | None:
    """Content/summary as HTML: plain-text values are escaped so the HTML reading is faithful."""
    text = _text(value)
    if not text.strip():
        return None
    if isinstance(mime, str) and mime.startswith("text/plain"):
        return _text_to_html(text)
    return text


def _text_to_html(text: str) -> str:
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)


def _categories(values: Iterable[Any]) -> tuple[str, ...]:
    out = (_plain(v, "text/html", MAX_SHORT_CHARS) for v in values if isinstance(v, str))
    return tuple(dict.fromkeys(c for c in out if c))


def _collapse(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit].rstrip()


def _scrub(value: str | None) -> str | None:
    """Lone surrogates break SQLite and UTF-8 encoding: replaced by U+FFFD; C0 controls and
    noncharacters cannot be stored: dropped (storable.strip_unstorable)."""
    if value is None:
        return None
    return strip_unstorable(value)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _get(d: Mapping[str, Any], key: str) -> Any:
    # dict.get skips FeedParserDict's fallbacks (updated -> published, description -> summary)
    return dict.get(d, key) if isinstance(d, dict) else None  # type: ignore[arg-type]


def _list(d: Mapping[str, Any], key: str) -> list[Any]:
    value = _get(d, key)
    return value if isinstance(value, list) else []


# href/src attribute values in a tag, whichever the quoting.
_URL_ATTR = re.compile(
    r"""(<[a-zA-Z][^<>]*?\s(?:href|src)\s*=\s*)(?:"([^"]*)"|'([^']*)'|([^\s"'<>]+))""",
    re.IGNORECASE,
)
_HAS_SCHEME = re.compile(r"^\s*[a-zA-Z][a-zA-Z0-9+.\-]*:")


def _resolve_urls(value: str | None, base: str) -> str | None:
    """Relative href/src values made absolute against the feed URL, as feedparser's
    resolve_relative_uris does, for a fraction of its cost (xml:base is still left to
    feedparser). The sanitiser resolves again, so a tag this misses is still handled."""
    if not value or ("href" not in value and "src" not in value and "HREF" not in value
                     and "SRC" not in value) or not _http_url(base):
        return value

    def fix(m: re.Match[str]) -> str:
        raw = next(g for g in m.groups()[1:] if g is not None)
        if not raw.strip() or raw.lstrip().startswith("#") or _HAS_SCHEME.match(raw):
            return m.group(0)
        try:
            joined = urljoin(base, html.unescape(raw.strip()))
        except ValueError:
            return m.group(0)
        return f'{m.group(1)}"{html.escape(joined)}"'

    return _URL_ATTR.sub(fix, value)


def _detail_type(d: Mapping[str, Any], key: str) -> str | None:
    detail = _get(d, key)
    return detail.get("type") if isinstance(detail, Mapping) else None


def _http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _clean_url(value: Any, base: str) -> str | None:
    """Absolute http(s) URL resolved against ``base``, or None."""
    text = _text(value).strip()
    if not text or len(text) > MAX_URL_CHARS:
        return None
    try:
        parts = urlsplit(urljoin(base, text) if base else text)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host:
        return None
    # Normalise what is case-insensitive or implied, so equal URLs compare equal downstream.
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + (f"[{host}]" if ":" in host else host)
    if port is not None:
        netloc += f":{port}"
    return escape_unstorable(
        urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, parts.fragment))
    )


def _language(value: Any) -> str | None:
    text = _text(value).strip().lower().replace("_", "-")
    return text if _LANG.match(text) else None


def _ttl(value: Any) -> float | None:
    minutes = _int(value)
    return float(minutes * 60) if minutes is not None and minutes > 0 else None


def _int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    text = _text(value).strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def _first_non_space(body: bytes) -> int:
    m = _NON_SPACE.search(body, 3 if body.startswith(b"\xef\xbb\xbf") else 0)
    return m.start() if m else -1


# --------------------------------------------------------------------------- worker pool


def _worker_main(conn: Connection, memory_mb: int, cpu_seconds: float) -> None:
    """Serve parse requests until EOF or a None request. Runs in the worker process, after
    sandbox.setup_worker (limits, die-with-parent)."""
    conn.send(("ready", os.getpid()))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # parent gone
        except MemoryError:  # the body alone does not fit under the limit
            conn.send((True, None, ("memory", "out of memory while receiving the feed body")))
            return
        if request is None:
            return
        sandbox.set_cpu_budget(cpu_seconds)
        result: ParsedFeed | None = None
        error: tuple[str, str] | None = None
        try:
            result = parse_feed(**request)
        except ParseError as exc:
            error = (exc.kind, str(exc))
        except MemoryError:
            error = ("memory", "out of memory while parsing")
        except Exception as exc:  # a bug, but the caller still needs an answer
            error = ("malformed", f"internal parser error: {type(exc).__name__}: {exc}")
        request = None
        # After a memory scare, or once the heap has grown past half the limit, start afresh;
        # the reply says so, so the parent never hands this worker another request.
        recycle = (error is not None and error[0] == "memory") or (
            sandbox.address_space() > memory_mb * 1024 * 1024 // 2
        )
        try:
            conn.send((recycle, result, error))
        except MemoryError:
            result = None
            conn.send((True, None, ("memory", "out of memory while returning the parse result")))
            recycle = True
        except (OSError, ValueError):
            return
        if recycle:
            return


def _poll(conn: Connection, timeout: float) -> bool:
    try:
        return conn.poll(timeout)
    except (OSError, ValueError, EOFError):
        return True  # let recv() report the broken connection


class _Worker:
    def __init__(self, memory_mb: int, cpu_seconds: float) -> None:
        parent, child = sandbox.spawn_context().Pipe(duplex=True)
        self.conn: Connection = parent
        self.process = sandbox.start_worker(_worker_main, (child, memory_mb, cpu_seconds),
                                            name="aggregator-parse", memory_mb=memory_mb)
        child.close()

    def wait_ready(self, timeout: float) -> None:
        if not self.conn.poll(timeout):
            self.kill()
            raise ParseError("crashed", f"parser worker did not start within {timeout:.0f} s")
        try:
            self.conn.recv()
        except (EOFError, OSError):
            self.kill()
            raise ParseError(
                "crashed", f"parser worker died on start ({self.exit_reason()})"
            ) from None

    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(1)
        self.kill()

    def exit_reason(self) -> str:
        return sandbox.exit_reason(self.process)


class ParserPool:
    """``parse_feed`` in persistent, resource-limited worker processes; thread-safe.

    Workers start on demand (at most ``processes``) and are reused. A call that exceeds
    ``timeout`` seconds kills its worker (ParseError "timeout"); a worker that dies mid-call
    gives ParseError "crashed"; running out of ``memory_mb`` gives ParseError "memory". Either
    way the worker is replaced on the next call, so the pool keeps serving.
    """

    START_TIMEOUT = 60.0

    def __init__(self, processes: int = 1, *, timeout: float = 30.0, memory_mb: int = 512) -> None:
        if processes < 1:
            raise ValueError(f"ParserPool needs at least one process, got {processes}")
        if memory_mb < 64:  # an idle worker already maps ~35 MB
            raise ValueError(f"ParserPool memory_mb must be at least 64, got {memory_mb}")
        if timeout <= 0:
            raise ValueError(f"ParserPool timeout must be positive, got {timeout}")
        self.processes = processes
        self.timeout = timeout
        self.memory_mb = memory_mb
        self._slots = threading.BoundedSemaphore(processes)
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._all: set[_Worker] = set()
        self._closed = False

    def __enter__(self) -> ParserPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def parse(
        self,
        body: bytes,
        url: str,
        *,
        content_type: str | None = None,
        charset: str | None = None,
        now: datetime | None = None,
    ) -> ParsedFeed:
        """Like ``parse_feed``, in a worker process; raises ParseError on failure."""
        request = {
            "body": body if isinstance(body, bytes) else bytes(body),
            "url": url,
            "content_type": content_type,
            "charset": charset,
            "now": now,
        }
        with self._slots:
            worker = self._checkout()
            reusable = False
            try:
                recycle, result, error = self._call(worker, request)
                reusable = not recycle
            finally:
                self._checkin(worker, reusable)
        if error is not None:
            raise ParseError(error[0], error[1])
        return result  # type: ignore[no-any-return]

    def pids(self) -> list[int]:
        """Process ids of the live workers (for monitoring and tests)."""
        with self._lock:
            return [w.process.pid for w in self._all if w.process.pid is not None and w.alive()]

    def close(self) -> None:
        """Stop every worker. Calls in flight finish; later calls raise ParseError "closed"."""
        with self._lock:
            self._closed = True
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                break
            worker.stop()
            with self._lock:
                self._all.discard(worker)

    # -- internals

    def _checkout(self) -> _Worker:
        while True:
            with self._lock:
                if self._closed:
                    raise ParseError("closed", "parser pool is closed")
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                break
            if worker.alive():
                return worker
            self._forget(worker)  # exited on its own (recycled after a large feed)
        worker = _Worker(self.memory_mb, self.timeout)
        with self._lock:
            self._all.add(worker)
        try:
            worker.wait_ready(self.START_TIMEOUT)
        except ParseError:
            self._forget(worker)
            raise
        return worker

    def _checkin(self, worker: _Worker, reusable: bool) -> None:
        with self._lock:
            closed = self._closed
        if reusable and not closed and worker.alive():
            self._idle.put(worker)
        else:
            worker.stop()  # asks politely first: a recycling worker is exiting anyway
            self._forget(worker)

    def _forget(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._all.discard(worker)

    def _call(self, worker: _Worker, request: dict[str, Any]) -> tuple[Any, ...]:
        started = time.monotonic()
        try:
            worker.conn.send(request)
        except (OSError, ValueError):
            # A worker that cannot even hold the body says so (memory) and exits mid-send.
            if _poll(worker.conn, 1.0):
                try:
                    return worker.conn.recv()  # type: ignore[no-any-return]
                except (EOFError, OSError):
                    pass
            raise ParseError("crashed", f"parser worker died ({worker.exit_reason()})") from None
        ready = _poll(worker.conn, self.timeout)
        if not ready:
            worker.kill()
            raise ParseError(
                "timeout", f"parsing took longer than {self.timeout:g} s; worker killed"
            )
        try:
            reply = worker.conn.recv()
        except (EOFError, OSError):
            reason = worker.exit_reason()
            if "SIGXCPU" in reason:
                raise ParseError("timeout", f"parsing exceeded its CPU budget ({reason})") from None
            elapsed = time.monotonic() - started
            raise ParseError(
                "crashed", f"parser worker died after {elapsed:.1f} s ({reason})"
            ) from None
        return reply  # type: ignore[no-any-return]
