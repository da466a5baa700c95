"""OPML subscription lists: reading one (``aggregator import``: hostile XML refused, folders
and categories as tags, unique names) and exporting the configured feeds."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from xml.parsers import expat

from aggregator.config.addresses import _url_key
from aggregator.config.feeds import derive_name
from aggregator.errors import ConfigError, Problem
from aggregator.models import Config

MAX_OPML_OUTLINES = 20_000


class _Refused(Exception):
    pass


def _opml_error(source: str, line: int, col: int, message: str) -> ConfigError:
    return ConfigError([Problem(source, line, col, message)])


def _feed_scheme(url: str) -> str:
    """``feed://host/x`` and ``feed:https://host/x`` (feed-reader links) -> http(s)."""
    if url.lower().startswith("feed:"):
        rest = url[5:]
        return rest if rest.lower().startswith(("http://", "https://")) else "http:" + rest
    return url


def _category_tags(category: str) -> list[str]:
    tags = []
    for path in category.split(","):
        for part in path.split("/"):
            tag = re.sub(r"[\s,/|]+", "-", part.strip().lower()).strip("-")
            if tag:
                tags.append(tag)
    return tags


def read_opml(data: bytes, *, source: str = "OPML") -> list[dict[str, object]]:
    """Feeds of an OPML subscription list, as mappings ready for ``add_feeds``.

    DOCTYPE and entity declarations are refused before anything is expanded (billion
    laughs, external entities). Folder outlines and ``category`` become tags; each feed gets
    a unique slug ``name``. Raises ConfigError naming the line and column of a problem."""
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[str] = []
    folders: list[str | None] = []
    feeds: dict[str, dict[str, object]] = {}
    count = 0

    def refuse(*_args: object) -> None:
        raise _Refused("DOCTYPE and ENTITY declarations are not allowed in OPML")

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal count
        if not stack and tag != "opml":
            raise _Refused(f"not an OPML document: root element is <{tag}>")
        stack.append(tag)
        if tag != "outline":
            return
        count += 1
        if count > MAX_OPML_OUTLINES:
            raise _Refused(f"more than {MAX_OPML_OUTLINES} outlines")
        attrs = {k.lower(): v for k, v in attrs.items()}
        label = (attrs.get("title") or attrs.get("text") or "").strip()
        url = _feed_scheme((attrs.get("xmlurl") or "").strip())
        if not url:
            folders.append(label or None)  # a folder: its label tags the feeds inside
            return
        folders.append(None)
        tags = [tag for folder in folders if folder for tag in _category_tags(folder)]
        tags += _category_tags(attrs.get("category", ""))
        key = _url_key(url)
        if key in feeds:  # the same feed in two folders: one feed, both tags
            old = feeds[key]
            old["tags"] = list(dict.fromkeys([*old["tags"], *tags]))  # type: ignore[misc]
            return
        feed: dict[str, object] = {"url": url, "title": label or None}
        if attrs.get("htmlurl", "").strip():
            feed["site_url"] = attrs["htmlurl"].strip()
        if attrs.get("language", "").strip():
            feed["language"] = attrs["language"].strip()
        feed["tags"] = list(dict.fromkeys(tags))
        feeds[key] = feed

    def end(tag: str) -> None:
        stack.pop()
        if tag == "outline":
            folders.pop()

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse  # type: ignore[assignment]
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(data, True)
    except _Refused as exc:
        raise _opml_error(
            source, parser.CurrentLineNumber, parser.CurrentColumnNumber + 1, str(exc)
        ) from None
    except expat.ExpatError as exc:
        message = f"not well-formed XML: {expat.ErrorString(exc.code)}"
        raise _opml_error(source, exc.lineno, exc.offset + 1, message) from None

    taken: set[str] = set()
    out = []
    for feed in feeds.values():
        name = derive_name(str(feed["url"]), feed["title"] if isinstance(feed["title"], str) else None, taken)
        taken.add(name)
        item: dict[str, object] = {"name": name}
        item.update({k: v for k, v in feed.items() if v not in (None, [])})
        out.append(item)
    return out


def _xml_text(text: str) -> str:
    """Drop characters XML 1.0 cannot carry (control characters in a title)."""
    return "".join(ch for ch in text if ch in "\t\n\r" or ord(ch) >= 32)


def export_opml(config: Config) -> bytes:
    """OPML 2.0 subscription list of the configured feeds (tags as categories)."""
    opml = ET.Element("opml", version="2.0")
    head = ET.SubElement(opml, "head")
    ET.SubElement(head, "title").text = "aggregator feeds"
    body = ET.SubElement(opml, "body")
    for feed in config.feeds:
        attrs = {"type": "rss", "text": _xml_text(feed.title or feed.name)}
        if feed.title:
            attrs["title"] = _xml_text(feed.title)
        attrs["xmlUrl"] = feed.url
        if feed.site_url:
            attrs["htmlUrl"] = feed.site_url
        if feed.language:
            attrs["language"] = feed.language
        if feed.tags:
            attrs["category"] = ",".join("/" + tag for tag in feed.tags)
        ET.SubElement(body, "outline", attrs)
    ET.indent(opml)
    body_xml = ET.tostring(opml, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body_xml + "\n").encode("utf-8")
