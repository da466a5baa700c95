"""The values the storage exchanges with its callers, and the conventions of its columns
(timestamps as sortable UTC text, JSON lists). Shared by every backend."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..models import Candidate, Enclosure, StoryMatch
from ..models import primary_language as models_primary_language

# --------------------------------------------------------------------------- time helpers


def ts(dt: datetime | None) -> str | None:
    """UTC ISO 8601 with a Z, second precision: sortable as text."""
    if dt is None:
        return None
    if dt.tzinfo is not UTC:
        dt = dt.astimezone(UTC)
    return dt.replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def parse_ts(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value)  # 3.11 reads the trailing Z as UTC


# The states a feed can be in, as feed_health.state derives them (the one place): `removed`
# (no longer in feeds.yaml), `disabled` (disabled_reason set, e.g. 410 Gone), `failing` (its
# last poll failed), `degraded` (it polls fine but its last DEGRADED_ARTICLE_ERRORS article
# attempts or more, in a row, all failed: the subscriber gets the feed's text only), `ok`.
FEED_STATES: tuple[str, ...] = ("ok", "degraded", "failing", "disabled", "removed")
DEGRADED_ARTICLE_ERRORS = 3  # written into the feed_health view by its migration


# --------------------------------------------------------------------------- values


# matcher(entry, candidates) -> StoryMatch | None decides a new entry's story: the
# pipeline passes dedup.decide bound to its settings. The entry has the attributes of a
# NewEntry that dedup reads (url_norm, text_hash, signature, title, word_count).
Matcher = Callable[[Any, Sequence[Candidate]], StoryMatch | None]


@dataclass(frozen=True)
class FeedState:
    """The scheduling state of one feed, as the pipeline needs it."""

    id: int
    name: str
    url: str
    effective_url: str | None
    etag: str | None
    last_modified: str | None
    body_hash: str | None
    consecutive_errors: int
    next_poll: datetime | None
    interval: float | None
    disabled_reason: str | None
    active: bool

    @property
    def fetch_url(self) -> str:
        return self.effective_url or self.url


@dataclass(frozen=True)
class NewEntry:
    """An entry ready for storage (cleaned by the pipeline)."""

    key: str
    guid: str | None
    url: str | None
    url_norm: str | None
    title: str
    author: str | None
    feed_html: str
    content_html: str
    text: str
    summary: str
    word_count: int
    language: str | None
    categories: tuple[str, ...]
    enclosures: tuple[Enclosure, ...]
    image: str | None
    published: datetime | None  # None: undated (see docs/schema.md, "Dates")
    published_raw: str | None
    date_note: str | None
    content_hash: str
    extract_status: str  # "pending" (full text wanted) or "skipped"
    text_hash: str | None
    signature: bytes | None
    band_keys: tuple[int, ...]
    updated: datetime | None = None  # the feed's own updated date for the entry, if sane
    contain_keys: tuple[int, ...] = ()  # dedup.containment_keys: articles only
    # Keys looked up but not stored (dedup.lookup_keys): an article's 32x4 keys (it may be
    # a near-duplicate of a summary, or of an entry stored while containment was off),
    # a summary's containment-family keys (it may be a near-duplicate of an article, whose
    # near-duplicate keys are its containment keys).
    probe_bands: tuple[int, ...] = ()
    probe_contain: tuple[int, ...] = ()
    # The entry's translations and regional editions as its feed names them (Atom
    # <link rel="alternate" hreflang>): (normalised URL of an article, declared language
    # or None, kind as in models.Alternate).
    links: tuple[tuple[str, str | None, str], ...] = ()


@dataclass(frozen=True)
class StoredEntry:
    """What the pipeline needs back about an entry after an upsert."""

    id: int
    feed_id: int
    key: str
    is_new: bool
    changed: bool
    story_created: bool = False  # a new entry that started a story of its own
    stories_merged: int = 0  # other stories this new entry bridged into its own


@dataclass(frozen=True)
class BacklogEntry:
    id: int
    feed_name: str
    url: str
    feed_html: str
    word_count: int
    title: str
    story_id: int | None
    attempts: int = 0  # article attempts so far (failed ones, since it is still pending)
    first_seen: datetime | None = None


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _enclosures_json(encs: Iterable[Enclosure]) -> str:
    return _json([{"url": e.url, "type": e.type, "length": e.length} for e in encs])


def entry_uid(feed_name: str, key: str) -> str:
    """A stable, opaque id for published feeds (a tag URI, RFC 4151)."""
    digest = hashlib.sha1(f"{feed_name}\0{key}".encode()).hexdigest()[:20]
    return f"tag:aggregator,2026:{feed_name}/{digest}"


# Containment keys (dedup.CONTAIN_MIN_SHARED, kept equal by a test) a stored entry must share
# with a new one to be a containment candidate: one shared key is chance at a million entries.
CONTAIN_MIN_SHARED = 2

# The one language rule (models.primary_language), for the store's reads.
primary_language = models_primary_language
