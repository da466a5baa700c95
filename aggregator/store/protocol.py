"""The Storage protocol: everything the pipeline, the daemon, the CLI and the server may ask
of the store. The SQLite implementation (sqlite.SQLiteStorage) is the first; a second
backend (PostgreSQL) implements the same methods with the same contracts, and passes the
same tests (tests/test_storage.py).

Conventions every backend honours:
- Times are timezone-aware datetimes in, UTC at second precision out. An entry with no
  knowable date has published None (stored as '' in SQLite; see docs/schema.md, "Dates").
- Each write method is one transaction: all of it or none of it.
- One instance is used by one thread at a time (the pipeline's writer has its own; readers
  open their own, ``readonly`` when they never write).
- Failures to read or write the database raise errors.StoreError or the backend's own
  database error; they never leave a transaction open.
- Story membership is decided by the ``matcher`` the caller passes (stories.Matcher:
  dedup.decide bound to the settings); the storage finds candidates and applies the
  decision (stories.decide_story), it holds no matching policy of its own.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from ..models import Document, FeedConfig, FeedMetrics, Item, PruneReport
from .values import BacklogEntry, FeedState, Matcher, NewEntry, StoredEntry


class Row(Protocol):
    """A result row read by column name (or position): sqlite3.Row, a dict-like record."""

    def __getitem__(self, key: Any, /) -> Any: ...

    def keys(self) -> list[str]: ...


@runtime_checkable
class Storage(Protocol):
    # How many instances of this store one process may write through at once, each on a
    # thread of its own (pipeline.Pipeline's poll writers): 1 for SQLite (one writer at a
    # time), 2 for PostgreSQL, whose concurrent writers take turns only where stories are
    # assigned (STORY_LOCK).
    parallel_writers: int

    # ------------------------------------------------------------------- lifecycle

    def migrate(self) -> list[str]:
        """Bring the schema up to date (schema.MIGRATIONS, in order, each once); returns
        the names applied. Idempotent: a second call returns []."""
        ...

    def schema_version(self) -> int:
        """How many migrations are applied (0 for an empty database)."""
        ...

    def close(self) -> None:
        """Write what waits in memory (band keys), give back what the backend holds
        (a writer folds the WAL), and close. Never waits on readers."""
        ...

    def describe(self) -> dict[str, list[str]]:
        """Every table and view the schema documents, with its columns (docs/schema.md)."""
        ...

    def integrity_check(self) -> str:
        """"ok", or the backend's description of the damage."""
        ...

    @property
    def pending_bands(self) -> int:
        """Entries whose band keys a writer still holds in memory (0 after flush_bands;
        always 0 on PostgreSQL, which writes them in the entry's transaction)."""
        ...

    def flush_bands(self) -> int:
        """Index the band keys held in memory (and any an earlier writer left unindexed);
        returns the index rows written. Candidate lookups see keys before and after."""
        ...

    # ------------------------------------------------------------------- feeds

    def sync_feeds(self, feeds: Sequence[FeedConfig], now: datetime) -> None:
        """Make the stored feeds match the configuration: a new feed is due now; a new URL
        forgets the feed's moves, cache validators, errors and disabled reason; a feed no
        longer configured becomes inactive (its entries stay); one configured again is
        active again."""
        ...

    def feed_states(self, names: Iterable[str] | None = None) -> list[FeedState]:
        """The active feeds (those among ``names``, when given), by name."""
        ...

    def due_feeds(self, now: datetime) -> list[FeedState]:
        """Active, not disabled feeds whose next poll is at or before ``now``, soonest
        first."""
        ...

    def next_due(self) -> datetime | None:
        """The earliest next poll of an active, not disabled feed (None: none)."""
        ...

    def record_success(
        self,
        feed_id: int,
        *,
        now: datetime,
        status: int,
        next_poll: datetime,
        interval: float,
        etag: str | None,
        last_modified: str | None,
        body_hash: str | None,
        permanent_url: str | None,
        title: str | None = None,
        link: str | None = None,
        language: str | None = None,
        format: str | None = None,
        warnings: Sequence[str] | None = None,
        entries: Sequence[NewEntry] = (),
        matcher: Matcher | None = None,
        window_days: int = 7,
        updated: datetime | None = None,
    ) -> list[StoredEntry]:
        """One successful poll, in ONE transaction: the feed's errors reset, its schedule
        and cache validators (None keeps a stored validator) recorded, and ``entries``
        upserted by key, one StoredEntry each in the given order. A new entry joins the
        story ``matcher`` picks among candidates published within ``window_days`` (same
        URL, canonical URL, text hash or LSH band), merging other stories it bridges, else
        starts one; an entry whose content hash changed is an edit (full text fetched
        again); an unchanged one is left alone. Keys of pruned entries the feed still lists
        are not stored again. Undated entries of a feed's first successful poll stay
        undated, later ones are dated by their first sight."""
        ...

    def record_failure(
        self,
        feed_id: int,
        *,
        now: datetime,
        kind: str,
        message: str,
        status: int | None,
        next_poll: datetime,
        disable: bool = False,
        retry_after_until: datetime | None = None,
        permanent_url: str | None = None,
    ) -> None:
        """A failed poll: consecutive errors + 1, the error recorded, the next poll set;
        ``disable`` sets the disabled reason to ``message`` (the feed is no longer due)."""
        ...

    # ------------------------------------------------------------------- entries, stories

    def entry_feed_html(self, entry_id: int) -> tuple[str, str]:
        """(the feed's own sanitised content, title) of an entry, even after an article
        replaced its content; ("", "") for an unknown id."""
        ...

    def count_entries(self) -> int:
        """Entries stored."""
        ...

    def rematch_entry(
        self, entry_id: int, matcher: Matcher, now: datetime, window_days: int,
        canonical_norm: str | None = None,
    ) -> bool:
        """A lone entry (the only member of its story) whose full text arrived joins the
        story ``matcher`` now recognises (its old story goes); True when it moved."""
        ...

    def story(self, story_id: int) -> tuple[Row | None, Sequence[Row]]:
        """A story's row (None: unknown) and its members (id, feed_name, title, url,
        published, word_count, match_reason, match_score, language: the primary subtag)
        by publication date."""
        ...

    def join_links(self, entry_id: int, now: datetime) -> int:
        """Join the entry's story with those of the entries its stored links (feed and
        page) name, and of the entries whose links name its URL or canonical URL: reason
        ``translation`` (languages differ, or a declared translation) or ``edition`` (same
        language, another host); the oldest story survives. Returns stories merged."""
        ...

    def story_members(self, story_id: int) -> Sequence[Row]:
        """The story_members view's rows of one story (docs/schema.md)."""
        ...

    def story_member_ids(self, story_ids: Iterable[int]) -> set[int]:
        """Every entry of the given stories."""
        ...

    def output_ids(self, legacy: Mapping[str, str], now: datetime) -> dict[str, str]:
        """The feed id each named output is published under, fixed at its first publish:
        ``legacy[name]`` for a store that published before ids were stored, else a new
        urn:uuid. The same name always gets the same id."""
        ...

    # ------------------------------------------------------------------- documents

    def write_documents(self, documents: Sequence[Document],
                        remove: Collection[str] = ()) -> None:
        """Store every document (each with its body; replacing one of the same name) and
        remove the ``remove`` names, in ONE transaction: a reader sees the whole published
        set before or after, never half of it."""
        ...

    def document(self, name: str) -> Document | None:
        """The document ``name`` with its body; None when there is none."""
        ...

    def document_index(self) -> list[Document]:
        """Every document without its body (body None), by name: what a serve node
        compares with its cache."""
        ...

    def remove_documents(self, names: Collection[str]) -> int:
        """Remove the named documents (one transaction); how many there were."""
        ...

    # ------------------------------------------------------------------- articles

    def backlog(self, limit: int, now: datetime | None = None,
                feed: str | None = None) -> list[BacklogEntry]:
        """Up to ``limit`` entries waiting for their article page, newest first seen
        first; those whose retry time is after ``now`` wait; only the named ``feed``'s
        when given (a worker's job drains the backlog of the feed it polled)."""
        ...

    def record_article(
        self,
        entry_id: int,
        *,
        now: datetime,
        status: str,
        method: str | None,
        error: str | None,
        content_html: str | None = None,
        text: str | None = None,
        summary: str | None = None,
        word_count: int | None = None,
        language: str | None = None,
        image: str | None = None,
        author: str | None = None,
        canonical_url: str | None = None,
        text_hash: str | None = None,
        signature: bytes | None = None,
        band_keys: Sequence[int] | None = None,
        contain_keys: Sequence[int] = (),
        page: tuple[str, str | None, str | None, bytes] | None = None,
        retry_at: datetime | None = None,
        attempt: bool = True,
        shown_before: datetime | None = None,
        links: Sequence[tuple[str, str | None, str]] | None = None,
        page_language: str | None = None,
    ) -> None:
        """An article fetch's outcome: ``status`` done (content replaced, the feed's kept
        for entry_feed_html), feed, failed, or pending (needs ``retry_at``, else
        StoreError). Failed and pending attempts count towards the feed's article errors
        (the degraded state), done/feed reset them; ``attempt`` False counts nothing.
        ``page`` (url, final url, charset, body) is kept for stored_pages. ``links``
        (normalised URL, declared language, kind) replace the page's stored links (None
        keeps them); ``page_language`` is the entry's last language fallback."""
        ...

    def stored_pages(
        self, feed: str | None = None, since: datetime | None = None
    ) -> Iterator[tuple[int, str, str | None, str | None, bytes, str]]:
        """(entry id, url, final url, charset, body, feed name) of the kept article pages,
        of one feed and entries published since ``since`` when given, by entry id."""
        ...

    def prune_pages(self, older_than: datetime) -> int:
        """Forget article pages fetched before ``older_than``; returns how many."""
        ...

    # ------------------------------------------------------------------- reads

    def items(
        self,
        *,
        limit: int = 200,
        one_per_story: bool = True,
        before: tuple[str, int] | None = None,
    ) -> list[Item]:
        """Newest items first (undated ones last, in their feed's order); with
        ``one_per_story`` one per story, its representative carrying the other outlets;
        ``before``: the (published text, id) of the previous page's last item."""
        ...

    def iter_items(self, *, batch: int = 500, max_items: int = 20000) -> Iterator[Item]:
        """items(), one per story, page after page, up to ``max_items``."""
        ...

    def search(self, query: str, limit: int = 20) -> Sequence[Row]:
        """Entries whose title or text contain ``query`` (any substring; rows with id,
        feed_name, title, url, published, snippet)."""
        ...

    def feed_health(self) -> list[dict[str, Any]]:
        """The feed_health view, one dict per feed by name, with title and language;
        warnings decoded, active a bool."""
        ...

    def feed_metrics(self) -> list[FeedMetrics]:
        """Each feed's state, consecutive errors and last success, by name."""
        ...

    def feed_state_counts(self, rows: Iterable[Mapping[str, Any]] | None = None
                          ) -> dict[str, int]:
        """Feeds per state, every state of FEED_STATES present (counted from ``rows``,
        feed_health() already read, when given)."""
        ...

    def feed_state(self, name: str) -> str | None:
        """One feed's state (FEED_STATES); None for a name never configured."""
        ...

    def backlog_size(self) -> int:
        """Entries waiting for their article page, those waiting for a retry included."""
        ...

    def backlog_retrying(self, now: datetime | None = None) -> int:
        """Of the backlog, those waiting for a retry time after ``now``."""
        ...

    def activity(self, now: datetime, days: int = 30) -> dict[str, Any]:
        """entries_24h, stories_24h and entries_per_day ([{day, entries}] over ``days``
        UTC days up to ``now``, oldest first, empty days included), by publication date."""
        ...

    def status(self, now: datetime) -> dict[str, Any]:
        """The store's part of the status document: feeds (feed_health), states, backlog,
        backlog_retrying, last_poll (the newest feeds.last_attempt) and activity, read as one
        consistent snapshot."""
        ...

    # ------------------------------------------------------------------- retention, upkeep

    def prune(
        self,
        *,
        now: datetime,
        entry_retention: float,
        feeds: Sequence[FeedConfig] = (),
        protect: Collection[int] = (),
        dry_run: bool = False,
    ) -> PruneReport:
        """Delete, in one transaction, the entries older than their feed's retention (else
        ``entry_retention`` seconds; 0 keeps them) or beyond its ``max_entries``, except
        ``protect``; with them go their search rows, band keys, pages and story membership
        (an emptied story goes). Their keys are remembered while the feed lists them.
        ``dry_run`` reports the same and changes nothing."""
        ...

    def optimize_search(self, max_pages: int | None = None, garbage: float = 0.1) -> int:
        """Rewrite the search index so pruned entries' rows leave it (all at once with
        ``max_pages`` None, else in steps); returns the pages freed."""
        ...

    def checkpoint(self) -> bool:
        """Fold the write-ahead log back without waiting on readers; True when it was
        reset."""
        ...

    def fold_wal(self) -> None:
        """Fold and truncate the write-ahead log now, unless a reader holds a snapshot."""
        ...

    def size(self) -> int:
        """Bytes the database takes on disk."""
        ...

    def disk_usage(self) -> tuple[int, int]:
        """(database bytes, write-ahead log bytes)."""
        ...

    def page_size(self) -> int:
        """Bytes per database page (what optimize_search and incremental_vacuum count)."""
        ...

    def auto_vacuum(self) -> str:
        """"none", "full" or "incremental": whether freed pages go back to the disk."""
        ...

    def vacuum(self) -> None:
        """Rewrite the database compactly; later prunes can give space back."""
        ...

    def incremental_vacuum(self, max_pages: int | None = None) -> int:
        """Give up to ``max_pages`` free pages back to the file system; returns how many."""
        ...

    def write_problem(self, timeout: float = 2.0) -> str | None:
        """Why a write would fail now (read-only, file gone, not writable, no space, the
        write lock held elsewhere past ``timeout``), or None; writes nothing."""
        ...
