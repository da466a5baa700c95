"""Frozen values that cross module boundaries.

Stages (config, fetch, parse, extract, clean, dedup, store, filters, publish) exchange only
these types; none imports another stage. Times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Settings:
    """Deployment settings (config/aggregator.yaml; each overridable by AGGREGATOR_<NAME>).

    Durations are in seconds, sizes in bytes. A tuple setting takes a comma-separated value
    in its environment variable.
    """

    database: str = "var/aggregator.db"
    output_dir: str = "var/public"
    listen: str = "127.0.0.1:8080"
    # Absolute URL under which the output directory is reachable (self links, archive links,
    # index page, OPML); None: links follow `listen` (see link_base).
    base_url: str | None = None
    user_agent: str = "aggregator/0.1 (+https://github.com/aggregator/aggregator; regional news reader)"
    log_level: str = "INFO"
    log_format: str = "text"  # "text", or "json": one JSON object per line

    # Scheduling
    default_interval: float = 900.0
    min_interval: float = 300.0
    max_interval: float = 86400.0
    jitter: float = 0.1  # fraction of the interval, +/-
    max_backoff: float = 86400.0
    retry_after_max: float = 21600.0
    workers: int = 8

    # Fetching
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    fetch_deadline: float = 60.0  # total wall time for one request, redirects included
    feed_max_bytes: int = 15 * 1024 * 1024
    page_max_bytes: int = 5 * 1024 * 1024
    max_redirects: int = 5
    per_host_concurrency: int = 2
    per_host_delay: float = 1.0
    allow_private_hosts: tuple[str, ...] = ()  # hosts or CIDRs trusted globally

    # Parsing in a worker process
    parse_timeout: float = 30.0
    parse_memory_mb: int = 512

    # Full text
    full_text: bool = True
    article_budget: int = 200  # article pages per cycle
    extract_processes: int = 0  # 0: one per core
    # The extraction workers swap faster equivalents into trafilatura's and jusText's globals
    # (aggregator/extract/accelerator.py) when their sources match; false: their own code.
    # Same text either way.
    extract_accelerator: bool = True
    page_retention_days: int = 30

    # Retention of entries (seconds; 0 keeps them forever). A feed may set its own.
    entry_retention: float = 0.0

    # Stories
    dedup_threshold: float = 0.7
    dedup_window_days: int = 7
    # Wire copy under a new lede (match reason `containment`): a second band family per
    # article and a lookup per new entry; false trades those matches for a cheaper cycle.
    dedup_containment: bool = True

    # Publishing
    combined_limit: int = 200
    archive_pages: int = 20  # RFC 5005 archive pages kept behind each output's current document

    @property
    def link_base(self) -> str:
        """The absolute URL published links start from: ``base_url``, else the server's own
        address from ``listen`` (``http://host:port/``, IPv6 in brackets). A wildcard listen
        address (0.0.0.0, ::) names no reachable host: its loopback stands in, and `check`
        warns about it."""
        if self.base_url:
            return self.base_url if self.base_url.endswith("/") else self.base_url + "/"
        host, _, port = self.listen.strip().rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None  # a host name
        if address is not None and address.is_unspecified:
            host = "127.0.0.1" if address.version == 4 else "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/"

    # Operations
    # Series per feed on /metrics (labelled by feed name): off by default, since their
    # number grows with the feed list.
    metrics_per_feed: bool = False
    # host:port of a second listener serving only /metrics, /healthz and /readyz;
    # empty: they are served on `listen` only.
    metrics_listen: str = ""

    # Workers (PostgreSQL only; `aggregator worker`, and `run` on PostgreSQL)
    # Jobs one worker runs at once; 0: the `workers` setting.
    worker_concurrency: int = 0
    heartbeat_interval: float = 10.0  # seconds between a worker's heartbeats
    # A worker silent this long is dead: its jobs are retried by another worker.
    stalled_timeout: float = 30.0
    # SIGTERM/SIGINT: in-flight jobs may finish within this; then they are abandoned.
    shutdown_timeout: float = 30.0


@dataclass(frozen=True)
class SiteRule:
    """Per-site extraction rule from feeds.yaml: applied before extraction."""

    body: str | None = None  # CSS selector of the article body
    strip: tuple[str, ...] = ()  # CSS selectors removed before extraction


@dataclass(frozen=True)
class FeedConfig:
    name: str
    url: str
    language: str | None = None
    tags: tuple[str, ...] = ()
    title: str | None = None
    interval: float | None = None  # seconds; None: Settings.default_interval
    full_text: bool | None = None  # None: Settings.full_text
    allow_private_network: bool = False  # for this feed's own configured URL only
    rule: SiteRule | None = None
    line: int = 0  # line in feeds.yaml, for messages
    site_url: str | None = None  # the outlet's home page (OPML htmlUrl)
    entry_retention: float | None = None  # seconds; None: Settings.entry_retention; 0: forever
    max_entries: int | None = None  # newest entries kept; None: no limit


@dataclass(frozen=True)
class FilterTerm:
    """One include/exclude term. ``pattern`` is a keyword (word-bounded, case-folded) unless
    ``regex`` is set. ``spellings`` are alternatives (``a | b | c`` or an alias)."""

    spellings: tuple[str, ...]
    field: str | None = None  # title, text, author, category, url; None: title and text
    regex: bool = False
    line: int = 0
    col: int = 0


@dataclass(frozen=True)
class FilterSpec:
    include: tuple[FilterTerm, ...] = ()
    exclude: tuple[FilterTerm, ...] = ()
    sources: tuple[str, ...] = ()  # feed names, tags or languages
    languages: tuple[str, ...] = ()
    max_age: float | None = None  # seconds
    min_words: int | None = None
    min_outlets: int | None = None


@dataclass(frozen=True)
class OutputConfig:
    name: str  # URL path component: <name>.atom, <name>.rss, <name>.json
    title: str
    description: str = ""
    filter: FilterSpec = field(default_factory=FilterSpec)
    limit: int = 200
    formats: tuple[str, ...] = ("atom", "rss", "json")
    line: int = 0
    archive_pages: int = 20  # RFC 5005 archive pages kept; Settings.archive_pages unless set
    # Languages the output's readers read, most wanted first: a story is represented by its
    # version in the first of them it has (see Item.version_in), else by its earliest one.
    prefer_languages: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    settings: Settings
    feeds: tuple[FeedConfig, ...]
    outputs: tuple[OutputConfig, ...]
    aliases: tuple[tuple[str, tuple[str, ...]], ...] = ()
    config_path: str | None = None
    feeds_path: str | None = None


# --------------------------------------------------------------------------- fetching


@dataclass(frozen=True)
class FetchRequest:
    url: str
    kind: str = "feed"  # "feed" or "page" (pages: HTML content type required, robots.txt)
    etag: str | None = None
    last_modified: str | None = None
    max_bytes: int = 15 * 1024 * 1024
    allow_private: bool = False  # the configured URL itself may be private (never redirects)


@dataclass(frozen=True)
class FetchResult:
    url: str  # as requested
    final_url: str  # after redirects
    status: int  # 200, or 304 when not_modified
    headers: tuple[tuple[str, str], ...]  # lower-cased names
    body: bytes = b""
    not_modified: bool = False
    permanent_url: str | None = None  # set when every redirect in the chain was 301/308
    content_type: str | None = None  # media type without parameters, lower case
    charset: str | None = None  # from the Content-Type header
    etag: str | None = None
    last_modified: str | None = None
    max_age: float | None = None  # Cache-Control max-age, seconds
    elapsed: float = 0.0

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Enclosure:
    url: str
    type: str | None = None
    length: int | None = None


@dataclass(frozen=True)
class Alternate:
    """Another version of a page that the page (or its feed entry) names: a translation or
    a regional edition. ``url`` as found (absolute or relative to the page); ``language``
    as declared (``hreflang``, JSON-LD ``inLanguage``, ``og:locale:alternate``), None when
    the source names none; ``kind``: ``hreflang`` (an HTML or Atom ``<link rel="alternate"
    hreflang>``), ``translation`` (JSON-LD ``workTranslation``/``translationOfWork``: a
    translation whatever the languages say) or ``og_locale`` (``og:locale:alternate`` with
    its alternate URL)."""

    url: str
    language: str | None
    kind: str = "hreflang"


@dataclass(frozen=True)
class ParsedEntry:
    key: str  # identity within its feed: guid, else link, else content hash (%XX-escaped:
    # storable.escape_unstorable)
    guid: str | None  # escaped like the key
    url: str | None
    title: str  # plain text, hygiene applied
    author: str | None  # name(s), comma-separated; never an e-mail address or part of one
    summary_html: str | None  # raw (unsanitised) HTML from the feed
    content_html: str | None  # raw (unsanitised) HTML from the feed
    published: datetime | None  # UTC; None when missing/unparseable/future (see date_note)
    updated: datetime | None
    published_raw: str | None  # the value as found in the feed
    date_note: str | None = None  # None, "missing", "unparseable", "future", "ancient"
    categories: tuple[str, ...] = ()
    enclosures: tuple[Enclosure, ...] = ()
    language: str | None = None
    # Atom <link rel="alternate" hreflang>: the entry's translations and editions.
    alternates: tuple[Alternate, ...] = ()


@dataclass(frozen=True)
class ParsedFeed:
    title: str | None
    link: str | None
    language: str | None
    format: str  # feedparser's version string, e.g. "rss20", "atom10", "json11"
    entries: tuple[ParsedEntry, ...]
    ttl: float | None = None  # RSS <ttl>, seconds
    warnings: tuple[str, ...] = ()
    # The feed's own last-change time (Atom <updated>, RSS <lastBuildDate>, else <pubDate>);
    # None when missing or not sane (see ParsedEntry.date_note for the same checks).
    updated: datetime | None = None


# --------------------------------------------------------------------------- articles


@dataclass(frozen=True)
class Article:
    """What extraction found on an article page, before cleaning."""

    html: str  # main content HTML (unsanitised)
    text: str
    title: str | None = None
    author: str | None = None
    published: datetime | None = None
    image: str | None = None  # lead image URL (absolute)
    image_caption: str | None = None
    language: str | None = None
    canonical_url: str | None = None
    method: str = "trafilatura"
    description: str | None = None  # the page's meta / og description (teaser)
    # The page's translations and regional editions (absolute URLs, x-default left out).
    alternates: tuple[Alternate, ...] = ()


@dataclass(frozen=True)
class CleanedArticle:
    """An extracted article after cleaning (clean.clean_article): what is stored and shown."""

    html: str  # sanitised content, links absolute
    text: str  # its plain text
    word_count: int
    summary: str
    canonical_url: str | None  # the page's canonical URL, normalised for matching
    image: str | None  # lead image, absolute
    keeps_feed: bool  # the feed's text is longer, or this is a stand-in of it: keep the feed's
    method: str
    title: str | None = None
    author: str | None = None  # as the page gave it (unparsed)
    language: str | None = None


# --------------------------------------------------------------------------- languages


def primary_language(tag: str | None) -> str | None:
    """The primary subtag of a language tag, lower case (``hy-AM`` and ``hy`` are one
    language, ``az-Latn`` is ``az``, ``pt_BR`` is ``pt``); None for no tag or nothing usable. The one rule by
    which filters, publishing and the store's read compare languages."""
    if not tag:
        return None
    primary = tag.strip().replace("_", "-").split("-", 1)[0].lower()
    return primary if 2 <= len(primary) <= 3 and primary.isascii() and primary.isalpha() else None


# A story's version within this long of its language's earliest counts as early (the same
# window as the store's representative rule: a fuller text published soon after a teaser
# represents the story rather than the teaser).
EARLY_WINDOW = timedelta(hours=6)


# --------------------------------------------------------------------------- publishing


@dataclass(frozen=True)
class Outlet:
    """One outlet that carried a story (for "Also reported by")."""

    feed_name: str
    title: str
    url: str | None
    published: datetime | None  # None: the outlet's entry has no date (see Item.published)


@dataclass(frozen=True)
class Item:
    """One entry as publishing and filtering see it (a row of the ``items`` view plus story)."""

    id: int
    # The published id (Atom id, RSS guid, JSON Feed id): the story's item_id, fixed when the
    # story was created, so a new representative or outlet never shows the story as new; an
    # entry read without its story: the tag URI of its feed and key.
    uid: str
    feed_name: str
    feed_title: str
    feed_url: str
    feed_link: str | None
    feed_language: str | None
    feed_tags: tuple[str, ...]
    title: str
    url: str | None
    author: str | None
    # None: an undated entry of its feed's first poll, whose date nobody can know (it sorts
    # behind dated items); otherwise the feed's date, or first-seen for a later undated one.
    published: datetime | None
    # The entry's own updated date (else published), moved forward only when the story
    # changes (an edit, an outlet joining, full text replacing a teaser); never the poll time.
    updated: datetime
    content_html: str  # sanitised
    summary: str  # plain text
    text: str  # plain text of the full article
    categories: tuple[str, ...] = ()
    language: str | None = None
    word_count: int = 0
    image: str | None = None
    enclosures: tuple[Enclosure, ...] = ()
    story_id: int | None = None
    outlets: tuple[Outlet, ...] = ()  # the other outlets of the story, earliest first
    feed_updated: datetime | None = None  # the source feed's own updated (feeds.updated)
    # Every version of the story (this item's entry among them), earliest first, undated
    # ones last; each without members or outlets of its own. () for a story of one entry
    # (and an entry read without its story): the item is its only version.
    members: tuple[Item, ...] = ()

    @property
    def lang(self) -> str | None:
        """The item's language as compared: its own, else its feed's, primary subtag."""
        return primary_language(self.language or self.feed_language)

    @property
    def versions(self) -> tuple[Item, ...]:
        """The story's versions, earliest first (the item alone for a one-entry story)."""
        return self.members or (self,)

    def languages(self) -> tuple[str, ...]:
        """The languages the story has a version in, in the order they first appear."""
        return tuple(dict.fromkeys(m.lang for m in self.versions if m.lang))

    def version_in(self, language: str) -> Item | None:
        """The story's version in ``language`` (primary subtag), None when it has none: this
        item when it is in that language, else the fullest early one of that language (the
        most words among those published within EARLY_WINDOW of the language's earliest;
        ties: the earliest)."""
        if self.lang == language:
            return self
        group = [m for m in self.versions if m.lang == language]
        if not group:
            return None
        dated = [m.published for m in group if m.published is not None]
        if dated:
            first = dated[0]
            group = [m for m in group
                     if m.published is not None and m.published - first <= EARLY_WINDOW]
        return max(group, key=lambda m: (m.word_count, -group.index(m)))

    def translations(self) -> tuple[Item, ...]:
        """One version per other language the story has (see version_in), in the order the
        languages first appear; versions of no known language are left out."""
        out = []
        for language in self.languages():
            if language != self.lang:
                version = self.version_in(language)
                if version is not None:
                    out.append(version)
        return tuple(out)

    def represented_by(self, member: Item) -> Item:
        """The story represented by its version ``member``: the member's title, link,
        author, content and dates, the story's fixed ``uid`` and members, and every other
        version as an outlet. ``self`` when ``member`` is its own entry."""
        if member.id == self.id:
            return self
        others = tuple(Outlet(m.feed_name, m.feed_title, m.url, m.published)
                       for m in self.versions if m.id != member.id)
        return replace(member, uid=self.uid, story_id=self.story_id, outlets=others,
                       members=self.members, updated=max(self.updated, member.updated))


# --------------------------------------------------------------------------- politeness


@runtime_checkable
class HostGate(Protocol):
    """Per-host politeness the fetches of every process sharing one gate obey together: at
    most ``limit`` requests in flight per host, starts ``delay`` s apart, and the host's
    Retry-After. fetch keeps one in memory (one process: SQLite, ``run``, ``update``); the
    PostgreSQL store has one shared through the database (several workers), which the
    pipeline hands to the Fetcher."""

    def acquire(self, host: str, deadline: float) -> object | None:
        """Wait for a slot on ``host`` and for its turn to start; None when that cannot
        happen by ``deadline`` (time.monotonic()). The token goes back to ``release``."""
        ...

    def release(self, token: object) -> None:
        """The request holding ``token`` is over: its slot is free."""
        ...

    def retry_after(self, host: str) -> float | None:
        """Seconds left of ``host``'s Retry-After window, or None when there is none."""
        ...

    def set_retry_after(self, host: str, seconds: float) -> None:
        """``host`` asked for ``seconds`` of quiet (Retry-After): every fetch waits."""
        ...

    def close(self) -> None:
        ...


# --------------------------------------------------------------------------- stories


@dataclass(frozen=True)
class Candidate:
    """A stored entry that may be the same story as a new one (from the store's indexes)."""

    entry_id: int
    story_id: int | None
    feed_name: str
    url_norm: str | None
    text_hash: str | None
    signature: bytes | None
    title: str
    published: datetime
    word_count: int
    canonical_norm: str | None = None  # the stored entry's canonical URL, normalised
    # The stored entry's text, given only for containment candidates (dedup compares the
    # two bodies); None: no containment decision for this candidate, unless ``load_text``
    # (the store's reader of that text, called only for a candidate whose signature
    # estimate passes: most containment candidates never need their text read).
    text: str | None = None
    load_text: Callable[[], str | None] | None = field(default=None, compare=False,
                                                       repr=False)


@dataclass(frozen=True)
class BandKeys:
    """An entry's LSH band keys as dedup.lookup_keys plans them: ``near`` (32x4 family) and
    ``contain`` (64x2 family) are stored and looked up; ``probe_near`` and ``probe_contain``
    are only looked up (keys of a family the entry is not indexed under, in which texts it
    may match are)."""

    near: tuple[int, ...] = ()
    contain: tuple[int, ...] = ()
    probe_near: tuple[int, ...] = ()
    probe_contain: tuple[int, ...] = ()


@dataclass(frozen=True)
class StoryMatch:
    """Why a new entry joins an existing story: reason is "url", "canonical", "text",
    "near" or "containment"; score is the similarity (1.0 for exact reasons; for
    containment the share of the shorter text found in the other)."""

    story_id: int | None
    entry_id: int
    reason: str
    score: float


@dataclass(frozen=True)
class ArchiveLinks:
    """RFC 5005 archive links of one published feed document (all absolute URLs).

    ``page`` is the URL of this document when it is an archive page (it then carries
    ``fh:archive``); None for the current (subscription) document.
    """

    current: str
    prev_archive: str | None = None  # the next older archive page
    next_archive: str | None = None  # the next newer archive page
    page: str | None = None


# --------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class FeedMetrics:
    """One feed as /metrics shows it with ``metrics_per_feed`` (name as configured)."""

    name: str
    state: str  # ok, degraded, failing, disabled, removed (Store.feed_state_counts)
    consecutive_errors: int
    last_success: float | None  # Unix time


@dataclass(frozen=True)
class MetricsSnapshot:
    """The values /metrics reads when scraped rather than counts as work happens."""

    backlog: int
    feeds_by_state: dict[str, int]
    database_bytes: int
    wal_bytes: int
    last_poll_cycle: float | None  # Unix time the last poll cycle completed
    feeds: tuple[FeedMetrics, ...] = ()


@dataclass(frozen=True)
class OutputSummary:
    """What the index page says about one published output: the items in its current
    document and the newest ``updated`` among them (None when it has no items)."""

    items: int
    updated: datetime | None


# --------------------------------------------------------------------------- retention


@dataclass(frozen=True)
class PruneReport:
    """What a prune deleted (or, with ``dry_run``, would delete). Sizes are in bytes."""

    dry_run: bool
    entries: int = 0
    pages: int = 0  # stored article pages
    band_rows: int = 0
    stories_touched: int = 0  # stories that lost members and kept some
    stories_deleted: int = 0  # stories left without members
    protected: int = 0  # entries due for pruning but kept: a published document (current or archive page) shows them
    by_feed: tuple[tuple[str, int], ...] = ()  # entries per feed name, most first
    freed: int = 0  # database pages the deletion left free (reused before the file grows)
    size_before: int = 0  # database file size (with its WAL) before
    size_after: int = 0  # ... and after (space is returned by incremental vacuum or VACUUM)
    vacuumed: str | None = None  # None, "incremental" or "full"


@dataclass(frozen=True)
class TableCopy:
    """One table of a copy-store: rows and a sum of its id column(s), in the source's
    snapshot and in the target before the copy was committed."""

    table: str
    source_rows: int
    target_rows: int
    source_sum: int
    target_sum: int

    @property
    def ok(self) -> bool:
        return self.source_rows == self.target_rows and self.source_sum == self.target_sum


@dataclass(frozen=True)
class CopyReport:
    """What `aggregator copy-store` copied; ``committed`` is False when a count or an id
    sum differed (the target was left as it was: empty)."""

    source: str  # as logs may show it (no password)
    target: str
    tables: tuple[TableCopy, ...]
    seconds: float
    committed: bool

    @property
    def ok(self) -> bool:
        return self.committed and all(t.ok for t in self.tables)


# Content types of published documents, by extension (the server sends these).
DOCUMENT_TYPES: dict[str, str] = {
    ".atom": "application/atom+xml; charset=utf-8",
    ".rss": "application/rss+xml; charset=utf-8",
    ".json": "application/feed+json; charset=utf-8",
    ".opml": "text/x-opml; charset=utf-8",
    ".html": "text/html; charset=utf-8",
}


def document_etag(body: bytes) -> str:
    """The opaque part of a document's ETag (no quotes): derived from its bytes only, so
    every node serving the same bytes gives the same tag."""
    return hashlib.sha256(body).hexdigest()[:32]


def document_type(name: str) -> str:
    """The Content-Type of the published document ``name`` (JSON for the archive manifests)."""
    dot = name.rfind(".")
    return DOCUMENT_TYPES.get(name[dot:] if dot > 0 else "", "application/json")


@dataclass(frozen=True)
class Document:
    """A published document as the database keeps it (PostgreSQL: every serve node reads
    it from there). ``published`` is its Last-Modified; ``etag`` is document_etag(body);
    ``body`` is None in a listing (document_index), which reads no bodies."""

    name: str
    etag: str
    content_type: str
    published: datetime
    size: int
    body: bytes | None = None
