"""Feeds an HTML page announces."""

from __future__ import annotations

from bs4 import (
    BeautifulSoup,
    SoupStrainer,
)

from aggregator.errors import ExtractError
from aggregator.extract.decode import _BS4_PARSER, MAX_BYTES, _squash, decode_html
from aggregator.extract.images import _abs

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

