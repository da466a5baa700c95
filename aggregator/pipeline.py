"""The only orchestrator: config → fetch → parse → clean → dedup → store → filters → publish,
and the article path (backlog → fetch page → extract → clean → store).

Concurrency model:
- a bounded thread pool fetches (network-bound) and hands bodies to the parser pool
  (worker processes with memory/CPU limits, so a hostile feed costs one feed);
- every database write runs on ONE writer thread, one short transaction per feed;
- article extraction runs in a process pool sized to the cores;
- publishing reads through its own connection (WAL snapshot) under a lock.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from . import clean, dedup, fetch, filters, parse, publish, sandbox
from .errors import (
    AggregatorError,
    DatabaseUnreachable,
    ExtractError,
    FetchError,
    FilterError,
    ParseError,
    PublishWriteError,
)
from .metrics import Metrics
from .models import (
    Alternate,
    Article,
    BandKeys,
    CleanedArticle,
    Config,
    Document,
    FeedConfig,
    FetchRequest,
    Item,
    MetricsSnapshot,
    OutputConfig,
    OutputSummary,
    ParsedEntry,
    PruneReport,
    SiteRule,
    StoryMatch,
    document_etag,
    document_type,
)
from .storable import escape_unstorable
from .store import (
    BacklogEntry,
    FeedState,
    NewEntry,
    Storage,
    display_database,
    is_postgres_url,
    open_storage,
    shared_host_gate,
)

log = logging.getLogger("aggregator.pipeline")
# Where links pointed before base_url became optional (its default then): the feed id stored
# for an output of an existing store is the self URL the code emitted from it.
LEGACY_BASE_URL = "http://127.0.0.1:8080/"
# A failed publish (disk full, read-only) is retried after 15 s, 30 s, 1 min, ... at most
# every 10 min, until it succeeds.
PUBLISH_RETRY_MIN = 15.0
PUBLISH_RETRY_MAX = 600.0
# Past this size (wal_autocheckpoint's 1000 pages) the WAL is checkpointed from the
# maintenance job too, and a checkpoint that a reader keeps from completing is worth a warning.
WAL_BOUND = 4 * 1024 * 1024
T = TypeVar("T")

# --------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class FeedOutcome:
    """What one poll of one feed did (one summary line per feed in `update`)."""

    name: str
    status: str  # "ok", "not_modified", "unchanged", "error", "gone"
    new: int = 0
    updated: int = 0
    entries: int = 0
    error: str | None = None
    error_kind: str | None = None
    http_status: int | None = None
    seconds: float = 0.0
    stories_created: int = 0
    stories_merged: int = 0

    def line(self) -> str:
        if self.status == "error" or self.status == "gone":
            return f"{self.name}: {self.status} ({self.error_kind}) {self.error}"
        extra = f", {self.new} new, {self.updated} updated" if self.status == "ok" else ""
        return f"{self.name}: {self.status}{extra} [{self.seconds:.2f}s]"


@dataclass
class CycleReport:
    feeds: list[FeedOutcome] = field(default_factory=list)
    articles_done: int = 0
    articles_failed: int = 0  # of which articles_retrying wait for a retry
    articles_retrying: int = 0
    published: list[Path] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(f.new or f.updated for f in self.feeds) or self.articles_done > 0


# --------------------------------------------------------------------------- writer thread


def _entry_feed_html(st: Storage, entry_id: int) -> tuple[str, str]:
    return st.entry_feed_html(entry_id)


class Writer:
    """Runs store calls on one thread per store, taken from one queue in submission order:
    with one store (every writer on SQLite) the calls run one after the other, in order;
    with several (PostgreSQL's poll writers), as many at once, each with its thread's store."""

    def __init__(self, *stores: Storage, name: str = "aggregator-writer") -> None:
        self.stores = stores
        self.store = stores[0]
        self._queue: queue.Queue[tuple[Callable[[Storage], Any], Future[Any]] | None] = (
            queue.Queue()
        )
        self.done = [0] * len(stores)  # calls each thread has run (monitoring and tests)
        self._threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True,
                             name=name if len(stores) == 1 else f"{name}-{n}")
            for n in range(len(stores))]
        for t in self._threads:
            t.start()

    def _run(self, n: int) -> None:
        store = self.stores[n]
        while True:
            job = self._queue.get()
            if job is None:
                return
            fn, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                result = fn(store)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                self.done[n] += 1  # counted before the caller hears of it
                fut.set_exception(exc)
                continue
            self.done[n] += 1
            fut.set_result(result)

    def submit(self, fn: Callable[[Storage], T]) -> Future[T]:
        fut: Future[T] = Future()
        self._queue.put((fn, fut))
        return fut

    def call(self, fn: Callable[[Storage], T]) -> T:
        return self.submit(fn).result()

    def close(self, timeout: float = 10.0) -> None:
        """Let the calls already queued finish, then stop: ``timeout`` for all threads."""
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))


# --------------------------------------------------------------------------- helpers


def _nothing() -> None:
    pass


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# Language versions kept per entry: a page listing every language of a large site names a
# few dozen; more is a page naming anything, and each link costs a lookup per store.
MAX_LINKS = 64


def _links(alternates: Sequence[Alternate], base: str, *own: str | None
           ) -> tuple[tuple[str, str | None, str], ...]:
    """(normalised URL, declared language, kind) of each translation or edition named,
    for the store's entry_links: absolute against ``base`` (relative and protocol-relative
    hrefs), normalised as story URLs are (tracking parameters, AMP and mobile variants),
    the entry's own URLs (``own``) left out, and never a home or section page (a language
    switcher pointing at ``/ru/``): only an article can be another feed's entry."""
    mine = {dedup.normalize_url(escape_unstorable(u)) for u in own if u}
    found: dict[str, tuple[str, str | None, str]] = {}
    for a in alternates[:MAX_LINKS]:
        url = clean.absolute_url(a.url, base)
        if not url:
            continue
        norm = dedup.normalize_url(escape_unstorable(url))
        if norm in mine or norm in found or not dedup.names_an_article(norm):
            continue
        language = clean.clean_line(a.language, 35) if a.language else None
        found[norm] = (norm, language or None, a.kind)
    return tuple(found.values())


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _jittered(seconds: float, fraction: float) -> float:
    if fraction <= 0:
        return seconds
    return seconds * (1 + random.uniform(-fraction, fraction))


# An article page that fails for a temporary reason (robots.txt unreachable, the host
# overloaded or unreachable) stays in the backlog and is tried again after
# ARTICLE_RETRY_BASE seconds, doubled per failed attempt up to ARTICLE_RETRY_MAX, and never
# sooner than the host asked (Retry-After, the robots.txt retry); it keeps the feed's text
# meanwhile. A retry that would fall more than ARTICLE_RETRY_WINDOW after the entry was
# first seen is not made: the entry is failed then (news that old is not worth the wait).
ARTICLE_RETRY_BASE = 300.0
ARTICLE_RETRY_MAX = 6 * 3600.0
ARTICLE_RETRY_WINDOW = timedelta(days=2)
RETRYABLE_FETCH_KINDS = frozenset(
    {"robots_unavailable", "rate_limited", "timeout", "deadline", "connect"}
)


def _retryable(exc: FetchError) -> bool:
    """A failure the host may not repeat later (5xx included), as opposed to a page that is
    not there, not HTML, forbidden by robots.txt or by the network policy."""
    return exc.kind in RETRYABLE_FETCH_KINDS or (
        exc.kind == "http" and exc.status is not None and exc.status >= 500
    )


def _host_of(url: str) -> str:
    """host[:port] of a page URL, for the per-host log line."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    return parts.netloc.rpartition("@")[2].lower() or url


EXTRACT_TIMEOUT = 60.0  # seconds of wall time for one page in an extraction worker
EXTRACT_MEMORY_MB = 1024  # address-space limit of an extraction worker


def _accelerate_worker() -> None:
    """Extraction workers' own initializer with the setting extract_accelerator: installs the
    extraction accelerator, which swaps trafilatura's globals: only in those workers, where no
    other caller shares them, never in the daemon's own process. Top-level (picklable), and
    trafilatura is imported in the worker, not here."""
    from . import extract

    extract.install_accelerator()


def _extract_job(body: bytes, url: str, charset: str | None, rule: SiteRule | None) -> Article:
    """Runs in an extraction worker process. extract (trafilatura, lxml) is imported here,
    not at module level, so a poll-only cycle never pays for loading it."""
    from . import extract

    return extract.extract_article(body, url, charset=charset, rule=rule)


@dataclass(frozen=True)
class _Fetched:
    state: FeedState
    feed: FeedConfig
    outcome: str  # "parsed", "not_modified", "unchanged", "error"
    result: Any = None
    parsed: Any = None
    entries: tuple[NewEntry, ...] = ()
    error: AggregatorError | None = None
    body_hash: str | None = None
    started: float = 0.0


@dataclass(frozen=True)
class FetchedPage:
    """An article page as fetched; stored with the entry, for `reprocess`."""

    url: str
    final_url: str  # escaped for storage
    charset: str | None
    body: bytes

    def row(self) -> tuple[str, str | None, str | None, bytes]:
        return (self.url, self.final_url, self.charset, self.body)


@dataclass(frozen=True)
class ArticleFailure:
    """Why a page gave no article."""

    error: str  # "<kind>: <message>", stored on the entry
    reason: str  # the same for every page of a host that failed alike (per-host log line)
    retry_after: float | None = None  # a temporary failure: seconds the host asked (0: none)


@dataclass(frozen=True)
class ArticleJob:
    """One backlog entry through the article path, in one of three end states: ``stopped``
    (abandoned at shutdown, nothing recorded), ``failure`` (fetch or extraction failed; the
    page, if fetched, is not kept), or ``article`` (cleaned, with the ``page`` it came from;
    ``reprocess``: from a stored page, so no fetch attempt is counted)."""

    entry: BacklogEntry
    page: FetchedPage | None = None
    article: CleanedArticle | None = None
    failure: ArticleFailure | None = None
    stopped: bool = False
    reprocess: bool = False
    # The page's translations and editions (pipeline._links): for the store's entry_links.
    links: tuple[tuple[str, str | None, str], ...] | None = None

    def __post_init__(self) -> None:
        if sum((self.stopped, self.failure is not None, self.article is not None)) != 1:
            raise ValueError("an ArticleJob is stopped, failed or extracted: exactly one")


@dataclass(frozen=True)
class ArticleWritten:
    """What recording an ArticleJob did."""

    stored: bool  # the entry has its article (or keeps its feed text, deliberately)
    retry_at: datetime | None = None  # a temporary failure: the entry waits until then


class StoreDocuments:
    """publish.Documents kept in the database (PostgreSQL: every serve node reads them
    there). Reads see what is stored plus what this publish wrote; writes are held until
    `commit`, which stores them all in ONE transaction (Storage.write_documents), so no node
    ever serves half of a publish. Last-Modified is the stored ``published`` time."""

    def __init__(self, reader: Storage,
                 store: Callable[[list[Document], set[str]], None]) -> None:
        self._reader = reader
        self._store = store
        self._index = {d.name: d for d in reader.document_index()}
        self._pending: dict[str, Document] = {}
        self._removed: set[str] = set()

    def _current(self, name: str) -> Document | None:
        if name in self._pending:
            return self._pending[name]
        return None if name in self._removed else self._index.get(name)

    def prepare(self) -> None:
        pass

    def location(self, name: str) -> Path:
        return Path(name)

    def modified(self, name: str) -> float | None:
        d = self._current(name)
        return d.published.timestamp() if d is not None else None

    def read(self, name: str) -> bytes | None:
        d = self._current(name)
        if d is None:
            return None
        if d.body is None:
            stored = self._reader.document(name)
            return stored.body if stored is not None else None
        return d.body

    def write(self, name: str, data: bytes, mtime: float | None = None) -> bool:
        etag = document_etag(data)
        d = self._current(name)
        if d is not None and d.etag == etag:
            return False
        when = datetime.fromtimestamp(int(mtime if mtime is not None else time.time()), UTC)
        self._pending[name] = Document(name, etag, document_type(name), when, len(data), data)
        self._removed.discard(name)
        return True

    def names(self) -> list[str]:
        return sorted((set(self._index) | set(self._pending)) - self._removed)

    def remove(self, name: str) -> None:
        self._pending.pop(name, None)
        if name in self._index:
            self._removed.add(name)

    def commit(self) -> None:
        """Store what this publish wrote and removed, in one transaction."""
        if self._pending or self._removed:
            self._store(list(self._pending.values()), set(self._removed))
            self._index.update(self._pending)
            for name in self._removed:
                self._index.pop(name, None)
            self._pending.clear()
            self._removed.clear()


class Pipeline:
    """Owns the pools and the writer; `poll`, `process_articles` and `publish` are the verbs."""

    def __init__(self, config: Config, *, processes: int | None = None) -> None:
        self.config = config
        s = config.settings
        self.store = open_storage(s.database)
        self.store.migrate()
        self.writer = Writer(self.store)
        # Polls are written by `poll_writer`: on SQLite the writer itself; on PostgreSQL
        # parallel_writers threads with a store (a connection) each, so that one writer,
        # waiting on the server most of its time, no longer bounds a worker (bench-scale:
        # a quarter more feeds/s, at no more CPU per feed), and no poll waits behind the
        # writer's other calls (each job's feed_states, articles, maintenance).
        self.poll_writer = self.writer if self.store.parallel_writers <= 1 else Writer(
            *(open_storage(s.database) for _ in range(self.store.parallel_writers)),
            name="aggregator-poll-writer")
        # Several workers on one PostgreSQL store share per-host politeness through it.
        self.gate = shared_host_gate(self.store, s)
        self.fetcher = fetch.Fetcher(s, gate=self.gate)
        self.parser = parse.ParserPool(
            processes=max(1, processes if processes is not None else min(2, os.cpu_count() or 1)),
            timeout=s.parse_timeout,
            memory_mb=s.parse_memory_mb,
        )
        self.threads = ThreadPoolExecutor(max_workers=max(1, s.workers),
                                          thread_name_prefix="aggregator-fetch")
        self.extractor = sandbox.WorkerPool(
            max(1, s.extract_processes or os.cpu_count() or 1), memory_mb=EXTRACT_MEMORY_MB,
            initializer=_accelerate_worker if s.extract_accelerator else None)
        self._publish_lock = threading.Lock()
        self._reader: Storage | None = None
        self.stopping = threading.Event()
        self.dirty = threading.Event()
        # Entries first seen before this may have been published (by this process, or by
        # an earlier one before it started): full text replacing their teaser is a change
        # readers should see, so it moves their `updated`. Set at each publish. (Stored
        # times are whole seconds: an entry first seen in the second this process started
        # counts as unpublished.)
        self.shown_before = _now()
        self._publish_attempts = 0  # consecutive failed publishes
        self._publish_retry_at: float | None = None  # monotonic time of the next retry
        self._wal_held = False  # a reader kept the last checkpoint from resetting the WAL
        self._wal_lock = threading.Lock()
        self._wal_refused = 0  # checkpoints refused in a row with the WAL past WAL_BOUND
        self.max_lateness = 0.0  # seconds after its due time the latest-started fetch began
        self._lateness: list[float] = []  # something publishable changed since the last publish
        # Called whenever work completes (a feed recorded, an article stored): the daemon's
        # one notion of progress, shared by the systemd watchdog and /readyz.
        self.on_progress: Callable[[], None] = _nothing
        self.last_cycle: float | None = None  # Unix time the last poll cycle completed
        self.metrics = Metrics(per_feed=s.metrics_per_feed, snapshot=self.metrics_snapshot)
        self.articles_retrying = 0  # pages of the last article run that wait for a retry
        self.writer.call(lambda st: st.sync_feeds(config.feeds, _now()))

    # ----------------------------------------------------------------------- lifecycle

    def reload(self, config: Config) -> None:
        """Swap in a new configuration (already validated); feeds are synced to the store."""
        self.config = config
        self.writer.call(lambda st: st.sync_feeds(config.feeds, _now()))
        self.metrics.configure(per_feed=config.settings.metrics_per_feed,
                               feeds=[f.name for f in config.feeds])

    def stop(self) -> None:
        """Stop taking work: no new fetches start; in-flight ones are abandoned."""
        self.stopping.set()

    def close(self) -> None:
        self.stopping.set()
        self.threads.shutdown(wait=False, cancel_futures=True)
        self.fetcher.close()
        if self.gate is not None:
            self.gate.close()
        self.writer.close()
        if self.poll_writer is not self.writer:
            self.poll_writer.close()
        self.parser.close()
        self.extractor.close()
        if self._reader is not None:
            self._reader.close()
        for store in self.stores[1:]:
            store.close()
        self.store.close()

    def checkpoint(self, *, if_larger_than: int = 0) -> bool:
        """Fold the WAL back into the database and truncate it (never waiting for readers);
        with ``if_larger_than``, only when the WAL file is larger. Returns whether the WAL
        was reset. A reader holding a snapshot (a long transaction) keeps the WAL from being
        reset, and writes then grow it without bound: once the WAL is past WAL_BOUND and two
        checkpoints in a row were refused, that is logged once as a warning with the WAL
        size, and its end once as info."""
        if if_larger_than and self.store.disk_usage()[1] <= if_larger_than:
            return False
        with self._wal_lock:  # jobs on several scheduler threads: one warning, not two
            return self._checkpoint()

    def _checkpoint(self) -> bool:
        reset = self.writer.call(lambda st: st.checkpoint())
        wal = self.store.disk_usage()[1]
        if reset:
            if self._wal_held:
                log.info("WAL checkpointed again: the reader that held it has let go",
                         extra={"kind": "wal", "wal_bytes": wal})
            self._wal_held = False
            self._wal_refused = 0
            return True
        # Twice in a row: a single refusal may be our own publisher reading at that moment.
        self._wal_refused = self._wal_refused + 1 if wal > WAL_BOUND else 0
        if self._wal_refused >= 2 and not self._wal_held:
            self._wal_held = True
            log.warning(
                "the WAL (%.1f MB) cannot be checkpointed: another connection to %s holds a "
                "read transaction open; it grows with each write until that reader ends it",
                wal / 1e6, display_database(self.config.settings.database),
                extra={"kind": "wal", "wal_bytes": wal},
            )
        return False

    @property
    def stores(self) -> list[Storage]:
        """The writers' stores: ``store``, then the poll writer's own, if any."""
        return [self.store] + ([] if self.poll_writer is self.writer
                               else list(self.poll_writer.stores))

    @property
    def feeds_by_name(self) -> dict[str, FeedConfig]:
        return {f.name: f for f in self.config.feeds}

    # ----------------------------------------------------------------------- polling

    def due(self, *, all_feeds: bool = False, names: Iterable[str] | None = None
            ) -> list[FeedState]:
        if all_feeds or names is not None:
            states = self.writer.call(lambda st: st.feed_states(names))
            return [s for s in states if s.disabled_reason is None or names is not None]
        return self.writer.call(lambda st: st.due_feeds(_now()))

    def poll(
        self,
        states: Sequence[FeedState],
        *,
        on_done: Callable[[FeedOutcome], None] | None = None,
        summary: bool = True,
    ) -> list[FeedOutcome]:
        """Fetch and parse the given feeds concurrently; store each as it completes. The
        cycle's summary line is INFO when it did something; without ``summary`` (a worker's
        job of one feed: thousands a day) it is DEBUG, and failures keep their own lines."""
        feeds = self.feeds_by_name
        self._lateness = []
        tick = time.monotonic()
        # Each fetch thread hands its result straight to the writer, and at most `pending`
        # results wait for it: memory stays bounded however many feeds are due, and a
        # result is freed as soon as it is stored.
        pending = threading.BoundedSemaphore(max(2, self.config.settings.workers))

        def fetch_and_queue(st: FeedState, feed: FeedConfig) -> Future[FeedOutcome]:
            fetched = self._fetch_one(st, feed)
            if self.stopping.is_set():
                # Shutting down: whatever this fetch got (often an error caused by closing
                # the fetcher) is dropped, never recorded; the feed is simply polled again.
                dropped: Future[FeedOutcome] = Future()
                dropped.set_result(FeedOutcome(feed.name, "error", error="shutting down",
                                               error_kind="stopped"))
                return dropped
            pending.acquire()
            fut = self.poll_writer.submit(partial(self._write, f=fetched))
            fut.add_done_callback(lambda _f: pending.release())
            return fut

        futures = [
            self.threads.submit(fetch_and_queue, st, feeds[st.name])
            for st in states
            if st.name in feeds and not self.stopping.is_set()
        ]
        outcomes: list[FeedOutcome] = []
        for fut in as_completed(futures):
            try:
                outcome = fut.result().result()
            except DatabaseUnreachable as exc:
                # The feed stays due (nothing of its poll committed, or its entries
                # without its state: stored again by key, never twice). The outage is
                # said once by whoever runs the pipeline (tasks: the worker's supervisor).
                log.debug("polling a feed: not recorded: %s", exc)
                continue
            except Exception as exc:  # a bug must cost one feed, never the cycle
                log.exception("polling a feed failed: %s", exc)
                continue
            outcomes.append(outcome)
            if outcome.error_kind != "stopped":  # abandoned at shutdown: not a poll
                self.metrics.poll(outcome.name, outcome.status, outcome.error_kind,
                                  new=outcome.new, updated=outcome.updated,
                                  stories_created=outcome.stories_created,
                                  stories_merged=outcome.stories_merged)
            self.on_progress()
            if on_done:
                on_done(outcome)
        if any(o.new for o in outcomes):
            # The band keys of this cycle's new entries go to the on-disk index in one batch.
            # (Only where a writer holds band keys in memory: SQLite's. PostgreSQL writes
            # them with the entry, and the call would wait behind the writer's other work.)
            try:
                if self.poll_writer is self.writer:
                    self.writer.call(lambda st: st.flush_bands() if st.pending_bands else 0)
            except Exception as exc:  # the keys are on the entries; a later flush takes them
                log.warning("could not write the band index: %s", exc)
        if states:
            # Lateness: how long after its due time each fetch actually started.
            self.max_lateness = max(self._lateness, default=0.0)
            new = sum(o.new for o in outcomes)
            updated = sum(o.updated for o in outcomes)
            failed = sum(o.status in ("error", "gone") and o.error_kind != "stopped"
                         for o in outcomes)
            # One line for a cycle that did something; a cycle of 304s is routine (DEBUG),
            # so an idle daemon writes nothing at the default level.
            log.log(
                logging.INFO if summary and (new or updated or failed) else logging.DEBUG,
                "poll: %d feeds polled, %d new entries, %d updated, %d failed in %.1f s; "
                "max lateness %.1f s", len(outcomes), new, updated, failed,
                time.monotonic() - tick, self.max_lateness,
                extra={"kind": "poll", "feeds": len(outcomes), "new": new,
                       "updated": updated, "failed": failed},
            )
        if not self.stopping.is_set():
            # Every due feed polled and recorded (its own failures included).
            self.last_cycle = time.time()
        return outcomes

    def _fetch_one(self, state: FeedState, feed: FeedConfig) -> _Fetched:
        """Runs on a fetch thread: network, parse (in the parser pool), entry preparation."""
        started = time.monotonic()
        if state.next_poll is not None:
            self._lateness.append((datetime.now(UTC) - state.next_poll).total_seconds())
        if self.stopping.is_set():
            return _Fetched(state, feed, "error", error=FetchError("stopped", "shutting down"),
                            started=started)
        s = self.config.settings
        url = state.fetch_url
        req = FetchRequest(
            url=url,
            kind="feed",
            etag=state.etag,
            last_modified=state.last_modified,
            max_bytes=s.feed_max_bytes,
            # The opt-in covers the configured URL only: never a recorded move, nor redirects.
            allow_private=feed.allow_private_network and url == state.url,
        )
        try:
            result = self.fetcher.fetch(req)
        except FetchError as exc:
            self.metrics.fetched("feed", time.monotonic() - started)
            return _Fetched(state, feed, "error", error=exc, started=started)
        self.metrics.fetched("feed", time.monotonic() - started)
        if result.not_modified:
            return _Fetched(state, feed, "not_modified", result=result, started=started)
        body_hash = _sha256(result.body)
        if state.body_hash == body_hash:
            # Many servers ignore conditional GET: same bytes, nothing to parse.
            return _Fetched(state, feed, "unchanged", result=replace(result, body=b""),
                            started=started)
        try:
            # Parsed against the configured URL, not where it redirected: feedparser resolves
            # bare guids against it, and entry identity must survive a move (e.g. to https).
            parsed = self.parser.parse(
                result.body, state.url, content_type=result.content_type,
                charset=result.charset, now=_now(),
            )
        except ParseError as exc:
            return _Fetched(state, feed, "error", result=result, error=exc, started=started)
        base = result.final_url
        entries = []
        for pe in parsed.entries:  # keys are unique: parse drops later duplicates
            try:
                entries.append(self._prepare_entry(pe, feed, base))
            except Exception as exc:  # one odd entry must not cost the feed
                log.warning("%s: skipped entry %r: %s", feed.name, pe.key[:80], exc)
        # The body is not needed any more: only its hash is stored.
        return _Fetched(state, feed, "parsed", result=replace(result, body=b""),
                        parsed=replace(parsed, entries=()), entries=tuple(entries),
                        body_hash=body_hash, started=started)

    def _prepare_entry(self, pe: ParsedEntry, feed: FeedConfig, base: str) -> NewEntry:
        s = self.config.settings
        url = clean.absolute_url(pe.url, base) if pe.url else None
        raw_html, feed_html, text = self._feed_content(pe, base)
        title = clean.clean_line(pe.title) or clean.clean_line(
            clean.summarize(text, 80, normalized=True))
        title = title or "(untitled)"
        full_text = feed.full_text if feed.full_text is not None else s.full_text
        words = clean.word_count(text)
        text_hash, sig, bands = dedup.features(title, text)
        keys = self._band_keys(sig, words, bands)
        content_hash = _sha256(
            "\0".join([title, raw_html, pe.url or "", pe.published_raw or ""]).encode(
                "utf-8", "replace"
            )
        )
        enclosures = tuple(
            replace(e, url=u, type=clean.clean_line(e.type, 200) or None) for e in pe.enclosures
            if (u := clean.absolute_url(e.url, base))
        )
        return NewEntry(
            key=escape_unstorable(pe.key),
            guid=escape_unstorable(pe.guid) if pe.guid else None,
            url=url,
            url_norm=dedup.normalize_url(url) if url else None,
            title=title,
            author=clean.clean_line(pe.author) or None,
            feed_html=feed_html,
            content_html=feed_html,
            text=text,
            summary=clean.summarize(text, normalized=True),
            word_count=words,
            language=pe.language or feed.language,
            categories=tuple(c for c in (clean.clean_line(x, 200) for x in pe.categories) if c),
            enclosures=enclosures,
            image=None,
            published=pe.published,
            updated=pe.updated,
            published_raw=clean.clean_line(pe.published_raw) or None,
            date_note=pe.date_note,
            content_hash=content_hash,
            extract_status="pending" if (full_text and url) else "skipped",
            text_hash=text_hash,
            signature=sig,
            band_keys=keys.near,
            contain_keys=keys.contain,
            probe_bands=keys.probe_near,
            probe_contain=keys.probe_contain,
            links=_links(pe.alternates, base, url),
        )

    @staticmethod
    def _feed_content(pe: ParsedEntry, base: str) -> tuple[str, str, str]:
        """(raw HTML, sanitised HTML, text) of the entry's own content: its content, unless
        that is a placeholder of its description (clean.is_placeholder: "...", nothing, the
        description's first words), then the description. The summary is made from the
        text chosen here, so it never comes from a placeholder either."""
        # Relative URLs in feed content are relative to the feed document (as feedparser
        # resolves them), not to the entry's page.
        content_html = clean.sanitize_html(pe.content_html or "", base)
        content_text = clean.html_to_text(content_html)
        summary_html = summary_text = ""
        # A placeholder prefix is shorter than the description's text, which is no longer
        # than its HTML: a longer content needs no second sanitising to be compared.
        if pe.summary_html and len(content_text) < len(pe.summary_html):
            summary_html = clean.sanitize_html(pe.summary_html, base)
            summary_text = clean.html_to_text(summary_html)
        if not clean.is_placeholder(content_html, content_text, summary_text):
            return pe.content_html or "", content_html, content_text
        if summary_html and not clean.is_placeholder(summary_html, summary_text):
            return pe.summary_html or "", summary_html, summary_text
        # Only stand-ins ("...", nothing): an empty content rather than a published "...".
        return pe.content_html or pe.summary_html or "", "", ""

    def _matcher(self) -> Callable[[Any, Sequence[Any]], StoryMatch | None]:
        threshold = self.config.settings.dedup_threshold

        def match(e: Any, candidates: Sequence[Any]) -> StoryMatch | None:
            return dedup.decide(
                url_norm=e.url_norm,
                canonical_norm=getattr(e, "canonical_norm", None),
                text_hash=e.text_hash,
                signature=e.signature,
                title=e.title,
                word_count=e.word_count,
                candidates=candidates,
                threshold=threshold,
                text=getattr(e, "text", None),
            )

        return match

    def _next_poll(self, feed: FeedConfig, now: datetime, *, errors: int = 0,
                   max_age: float | None = None, ttl: float | None = None,
                   retry_after: float | None = None) -> tuple[datetime, float]:
        s = self.config.settings
        base = feed.interval or s.default_interval
        if errors:
            # Exponential backoff on consecutive errors, capped.
            delay = min(base * (2 ** min(errors - 1, 16)), max(s.max_backoff, base))
        else:
            # Cache-Control max-age and RSS <ttl> may lengthen the interval, within bounds.
            hint = max(max_age or 0.0, ttl or 0.0)
            delay = min(max(base, min(hint, s.max_interval)), s.max_interval)
            delay = max(delay, min(s.min_interval, base))
        interval = delay
        delay = _jittered(delay, s.jitter)
        if retry_after:
            delay = max(delay, retry_after)  # jitter never brings a poll inside Retry-After
        return now + timedelta(seconds=delay), interval

    def _write(self, st: Storage, f: _Fetched) -> FeedOutcome:
        """Runs on the writer thread: one transaction for the feed."""
        now = _now()
        elapsed = time.monotonic() - f.started
        s = self.config.settings
        if f.outcome == "error":
            err = f.error
            assert err is not None
            kind = getattr(err, "kind", "error")
            if kind == "stopped":  # abandoned at shutdown: not the feed's failure
                return FeedOutcome(f.feed.name, "error", error=str(err), error_kind=kind,
                                   seconds=elapsed)
            status = getattr(err, "status", None)
            retry_after = getattr(err, "retry_after", None)
            gone = kind == "gone"
            next_poll, _ = self._next_poll(f.feed, now, errors=f.state.consecutive_errors + 1,
                                           retry_after=retry_after)
            permanent = f.result.permanent_url if f.result is not None else None
            st.record_failure(
                # Messages quote what servers and documents said: stored text holds no
                # control characters (docs/schema.md).
                f.state.id, now=now, kind=kind, message=clean.clean_line(str(err), 4000),
                status=status,
                next_poll=next_poll, disable=gone,
                retry_after_until=(now + timedelta(seconds=retry_after)) if retry_after else None,
                permanent_url=escape_unstorable(permanent) if permanent else None,
            )
            # Logged once per attempt, with the reason.
            log.warning("%s: %s: %s", f.feed.name, kind, err,
                        extra={"feed": f.feed.name, "url": f.state.fetch_url, "kind": kind})
            return FeedOutcome(f.feed.name, "gone" if gone else "error", error=str(err),
                               error_kind=kind, http_status=status, seconds=elapsed)
        result = f.result
        ttl = f.parsed.ttl if f.parsed is not None else None
        next_poll, interval = self._next_poll(f.feed, now, max_age=result.max_age, ttl=ttl)
        common: dict[str, Any] = dict(
            now=now, status=result.status, next_poll=next_poll, interval=interval,
            etag=result.etag, last_modified=result.last_modified,
            permanent_url=escape_unstorable(result.permanent_url) if result.permanent_url
            else None,
        )
        if f.outcome in ("not_modified", "unchanged"):
            st.record_success(f.state.id, body_hash=None, **common)
            return FeedOutcome(f.feed.name, f.outcome, http_status=result.status,
                               seconds=elapsed)
        parsed = f.parsed
        # The feed's own last-change time, else its newest entry's date.
        feed_updated = parsed.updated or max(
            (d for e in f.entries for d in (e.published, e.updated) if d is not None),
            default=None,
        )
        stored = st.record_success(
            f.state.id,
            body_hash=f.body_hash,
            title=clean.clean_line(parsed.title) or None,
            link=parsed.link,
            language=parsed.language,
            format=parsed.format,
            warnings=parsed.warnings,
            entries=f.entries,
            matcher=self._matcher(),
            window_days=s.dedup_window_days,
            updated=feed_updated,
            **common,
        )
        new = sum(1 for x in stored if x.is_new)
        changed = sum(1 for x in stored if x.changed and not x.is_new)
        # A story merged by language links an unchanged entry's feed added changes outputs.
        if new or changed or any(x.stories_merged for x in stored):
            self.dirty.set()
        return FeedOutcome(f.feed.name, "ok", new=new, updated=changed,
                           entries=len(stored), http_status=result.status, seconds=elapsed,
                           stories_created=sum(1 for x in stored if x.story_created),
                           stories_merged=sum(x.stories_merged for x in stored))

    # ----------------------------------------------------------------------- articles

    def _extract(self, body: bytes, url: str, charset: str | None,
                 rule: SiteRule | None) -> Article:
        """Extract in the sandboxed pool (see sandbox.WorkerPool.call for the timeout and
        the second try after a pool broken by another page)."""
        return self.extractor.call(EXTRACT_TIMEOUT, _extract_job, body, url, charset, rule)

    def process_articles(self, budget: int | None = None, *,
                         feed: str | None = None) -> tuple[int, int]:
        """Drain up to `budget` entries of the backlog (newest first), of one ``feed`` when
        given (a worker's poll job). Returns (done, failed).
        A page that cannot be fetched or extracted keeps the feed's content; the reason is
        recorded on the entry and on the feed (`article_errors`, `degraded`), never as a poll
        failure. A temporary failure leaves the entry pending with a retry time. Failures are
        logged once per host per run."""
        s = self.config.settings
        budget = s.article_budget if budget is None else budget
        self.articles_retrying = 0
        if budget <= 0 or self.stopping.is_set():
            return 0, 0
        backlog = self.writer.call(lambda st: st.backlog(budget, _now(), feed=feed))
        if not backlog:
            return 0, 0
        futures = [self.threads.submit(self._article_one, b) for b in backlog]
        done = failed = 0
        writes: list[tuple[ArticleJob, Future[ArticleWritten]]] = []
        for fut in as_completed(futures):
            try:
                job = fut.result()
            except Exception as exc:
                log.exception("article worker crashed: %s", exc)
                continue
            write = self.writer.submit(partial(self._write_article, job=job))
            # Progress as each article is stored, not once the whole batch is.
            write.add_done_callback(lambda _w: self.on_progress())
            writes.append((job, write))
        failures: dict[str, list[tuple[ArticleFailure, datetime | None]]] = {}
        for job, w in writes:
            try:
                written = w.result()
            except Exception as exc:
                log.exception("storing an article failed: %s", exc)
                failed += 1
                continue
            done += written.stored
            failed += not written.stored
            if job.failure is not None:
                failures.setdefault(_host_of(job.entry.url), []).append(
                    (job.failure, written.retry_at))
                self.articles_retrying += written.retry_at is not None
        for host, host_failures in sorted(failures.items()):
            self._log_host_failures(host, host_failures)
        if done:
            self.dirty.set()
        return done, failed

    @staticmethod
    def _log_host_failures(host: str,
                           failures: list[tuple[ArticleFailure, datetime | None]]) -> None:
        """One WARNING line for a host's failed pages of this run: the commonest reason, and
        when the temporary ones are tried again."""
        reasons = Counter(f.reason for f, _ in failures)
        reason, _ = reasons.most_common(1)[0]
        if len(reasons) > 1:
            reason += f"; {len(reasons) - 1} other reason{'s' if len(reasons) > 2 else ''}"
        retries = sorted(at for _, at in failures if at is not None)
        given_up = len(failures) - len(retries)
        if retries:
            when = retries[0].strftime("%Y-%m-%dT%H:%M:%SZ")
            tail = f", retrying after {when}"
            if given_up:
                tail += f" ({given_up} not retried)"
        else:
            tail = ", not retried"
        log.warning("articles on %s: %d failed (%s)%s", host, len(failures), reason, tail,
                    extra={"host": host, "kind": "article", "failed": len(failures),
                           "reason": reason})

    def _article_one(self, b: BacklogEntry) -> ArticleJob:
        """Fetch, extract and clean one backlog entry's page (on a fetch thread)."""
        s = self.config.settings
        feed = self.feeds_by_name.get(b.feed_name)
        rule = feed.rule if feed else None
        if self.stopping.is_set():
            return ArticleJob(b, stopped=True)
        started = time.monotonic()
        try:
            result = self.fetcher.fetch(FetchRequest(url=b.url, kind="page",
                                                     max_bytes=s.page_max_bytes))
        except FetchError as exc:
            self.metrics.fetched("page", time.monotonic() - started)
            if self.stopping.is_set():  # closing the fetcher broke it: not the page's fault
                return ArticleJob(b, stopped=True)
            self.metrics.article_failed("fetch", exc.kind)
            return ArticleJob(b, failure=ArticleFailure(
                error=f"{exc.kind}: {exc}",
                # The same reason for every page of a host, for the per-host log line.
                reason=f"{exc.kind}: {str(exc).removeprefix(f'{b.url}: ')}",
                retry_after=(exc.retry_after or 0.0) if _retryable(exc) else None))
        self.metrics.fetched("page", time.monotonic() - started)
        self.metrics.article_pages.inc()
        page = FetchedPage(b.url, escape_unstorable(result.final_url), result.charset,
                           result.body)
        error: str | None = None
        try:
            article = self._extract(result.body, result.final_url, result.charset, rule)
        except ExtractError as exc:
            error = f"{exc.kind}: {exc}"
        except BrokenProcessPool:
            error = "crashed: the extraction worker died on this page"
        except FutureTimeout:
            error = f"timeout: extraction took longer than {EXTRACT_TIMEOUT:g} s"
        except MemoryError:
            error = f"memory: extraction needed more than {EXTRACT_MEMORY_MB} MB"
        except Exception as exc:  # unexpected library errors
            error = f"error: {type(exc).__name__}: {exc}"
        if error is not None:
            # Each message above opens with its kind: the bounded reason label.
            self.metrics.article_failed("extract", error.split(":", 1)[0])
            return ArticleJob(b, page=page, failure=ArticleFailure(error=error, reason=error))
        cleaned = clean.clean_article(article, result.final_url, feed_html=b.feed_html,
                                      feed_words=b.word_count,
                                      normalize_url=dedup.normalize_url)
        return ArticleJob(b, page=page, article=cleaned,
                          links=_links(article.alternates, result.final_url, b.url,
                                       article.canonical_url))

    def _write_article(self, st: Storage, job: ArticleJob) -> ArticleWritten:
        """Runs on the writer thread: record one job's outcome on its entry."""
        now = _now()
        b = job.entry
        if job.stopped:
            return ArticleWritten(stored=False)
        if job.article is None:
            failure = job.failure
            assert failure is not None
            retry_at = self._retry_at(b, failure, now)
            if retry_at is not None:
                st.record_article(b.id, now=now, status="pending", method=None,
                                  error=clean.clean_line(failure.error, 4000),
                                  retry_at=retry_at)
                return ArticleWritten(stored=False, retry_at=retry_at)
            error = failure.error
            if failure.retry_after is not None:
                error += f" (gave up after {b.attempts + 1} attempts)"
            st.record_article(b.id, now=now, status="failed", method=None,
                              error=clean.clean_line(error, 4000), page=None)
            return ArticleWritten(stored=False)
        article = job.article
        page = job.page.row() if job.page is not None else None
        attempt = not job.reprocess
        if article.keeps_feed:
            st.record_article(b.id, now=now, status="feed", method=article.method,
                              error=None, canonical_url=article.canonical_url, page=page,
                              attempt=attempt, links=job.links,
                              page_language=article.language)
            self.metrics.articles_extracted.labels("feed").inc()
            self._join_links(st, b.id, now)
            return ArticleWritten(stored=True)
        text_hash, sig, bands = dedup.features(b.title, article.text)
        keys = self._band_keys(sig, article.word_count, bands)
        st.record_article(
            b.id, now=now, status="done", method=article.method, error=None,
            content_html=article.html, text=article.text, summary=article.summary,
            word_count=article.word_count, page_language=article.language, links=job.links,
            image=article.image,
            author=clean.clean_line(parse.author_name(article.author)) or None,
            canonical_url=article.canonical_url, text_hash=text_hash,
            signature=sig, band_keys=keys.near, contain_keys=keys.contain, page=page,
            attempt=attempt,
            shown_before=self.shown_before,
        )
        self.metrics.articles_extracted.labels("article").inc()
        if st.rematch_entry(b.id, self._matcher(), now, self.config.settings.dedup_window_days,
                            canonical_norm=article.canonical_url):
            self.metrics.stories_merged.inc()
        self._join_links(st, b.id, now)
        return ArticleWritten(stored=True)

    def _band_keys(self, sig: bytes | None, words: int, bands: Sequence[int]) -> BandKeys:
        """The band keys an entry is indexed under and looks up (dedup.lookup_keys); the
        containment family only while the setting dedup_containment is on."""
        s = self.config.settings
        return dedup.lookup_keys(sig, words, s.dedup_threshold, s.dedup_containment, bands)

    def _join_links(self, st: Storage, entry_id: int, now: datetime) -> None:
        """The page's translations and editions join the entry's story (after its own
        rematch, which moves only a lone entry)."""
        merged = st.join_links(entry_id, now)
        if merged:
            self.metrics.stories_merged.inc(merged)
            self.dirty.set()

    @staticmethod
    def _retry_at(b: BacklogEntry, failure: ArticleFailure, now: datetime
                  ) -> datetime | None:
        """When a temporarily failed page is tried again; None: not retried (a lasting
        failure, or the retry would fall past ARTICLE_RETRY_WINDOW)."""
        if failure.retry_after is None:
            return None
        backoff = min(ARTICLE_RETRY_BASE * 2 ** b.attempts, ARTICLE_RETRY_MAX)
        delay = max(backoff, failure.retry_after)
        retry_at = now + timedelta(seconds=math.ceil(delay))
        first_seen = b.first_seen or now
        if retry_at > first_seen + ARTICLE_RETRY_WINDOW:
            return None
        return retry_at

    def reprocess(self, *, feed: str | None = None, since: datetime | None = None
                  ) -> tuple[int, int]:
        """Re-apply extraction and cleaning to stored pages, without refetching."""
        pages = self.writer.call(lambda st: list(st.stored_pages(feed, since)))
        feeds = self.feeds_by_name
        done = failed = 0
        for entry_id, url, final_url, charset, body, feed_name in pages:
            cfg = feeds.get(feed_name)
            base = final_url or url
            try:
                article = self._extract(body, base, charset, cfg.rule if cfg else None)
            except Exception as exc:  # keep going: one bad page costs one entry
                log.warning("reprocess #%d: %s", entry_id, exc)
                failed += 1
                continue
            feed_html, title = self.writer.call(partial(_entry_feed_html, entry_id=entry_id))
            # The entry as the backlog would list it, its words counted from the feed's
            # content (its stored count may be the earlier extraction's).
            entry = BacklogEntry(id=entry_id, feed_name=feed_name, url=url,
                                 feed_html=feed_html,
                                 word_count=clean.word_count(clean.html_to_text(feed_html)),
                                 title=title, story_id=None)
            cleaned = clean.clean_article(article, base, feed_html=feed_html,
                                          feed_words=entry.word_count,
                                          normalize_url=dedup.normalize_url)
            job = ArticleJob(entry, article=cleaned, reprocess=True,
                             links=_links(article.alternates, base, url,
                                          article.canonical_url))
            ok = self.writer.call(partial(self._write_article, job=job)).stored
            done += ok
            failed += not ok
        return done, failed

    # ----------------------------------------------------------------------- publishing

    def _read_store(self) -> Storage:
        if self._reader is None:
            self._reader = open_storage(self.config.settings.database)
        return self._reader

    def output_items(self, output: OutputConfig, *, pages: int | None = None,
                     now: datetime | None = None, max_scan: int = 20000
                     ) -> tuple[list[Item], bool]:
        """The items an output publishes (newest first): its current document and up to
        ``pages`` (default ``output.archive_pages``) archive pages, and one page more; and
        whether they are all of its items (False: a window of the newest; publish may then
        find its oldest page cut short). Stories are read from the store a batch at a time,
        newest first, each represented by the version the output's ``prefer_languages`` (and
        filter) choose, with its stable id; only the ones the filter keeps are held, each
        sanitised again (the sanitizer runs last)."""
        now = now or _now()
        try:
            flt = filters.compile_filter(output.filter, output.prefer_languages)
        except FilterError as exc:
            raise AggregatorError(f"output {output.name}: {exc}") from exc
        # One page more than is kept: a sealed page that took late items holds more than
        # `limit`, and the window must not cut short a page that is kept (publish leaves a cut
        # page out); the extra page is not written.
        wanted = output.limit * ((output.archive_pages if pages is None else pages) + 2)
        kept: list[Item] = []
        scanned = 0
        for item in self._read_store().iter_items(max_items=max_scan):
            scanned += 1
            # Each story as this output shows it: the version in its readers' language.
            shown, reason = flt.choose(item, now)
            if reason is None:
                # The versions' texts were for the filter: publishing reads only their links,
                # titles, languages, dates and sizes, and a window of thousands of stories is
                # held here.
                members = tuple(replace(m, text="", summary="", content_html="")
                                for m in shown.members)
                kept.append(replace(shown, members=members, content_html=clean.sanitize_html(
                    shown.content_html, shown.url)))
                if len(kept) >= wanted:
                    return kept, False
        return kept, scanned < max_scan

    @property
    def documents_in_store(self) -> bool:
        """Whether documents are published into the database (PostgreSQL: serve nodes on
        any machine read them there) rather than as files into output_dir (SQLite)."""
        return is_postgres_url(self.config.settings.database)

    def _documents(self) -> publish.Documents:
        if self.documents_in_store:
            return StoreDocuments(self._read_store(), lambda docs, gone: self.writer.call(
                lambda st: st.write_documents(docs, gone)))
        return publish.FileDocuments(self.config.settings.output_dir)

    def publish(self) -> list[Path]:
        """Render every output from the store (no refetch) and write them atomically. Each
        output, and index.html and OPML, is published independently: a file that cannot be
        written (disk full, read-only) is logged with its path and reason on one line, the
        others are still written, and a retry is scheduled with backoff (see publish_due).
        On PostgreSQL the documents go into the database, all of one publish in one
        transaction (output_dir is not used); on SQLite, files into output_dir."""
        s = self.config.settings
        out_dir = Path(s.output_dir)
        now = _now()
        written: list[Path] = []
        failures: list[tuple[str, Path, str]] = []  # (output or "index", path, reason)
        refused = 0  # outputs that cannot be published as configured (no retry helps)
        summaries: dict[str, OutputSummary] = {}
        base_url = s.link_base
        with self._publish_lock:
            started = time.monotonic()
            self.dirty.clear()  # before rendering: a change made meanwhile publishes again
            docs = self._documents()
            try:
                docs.prepare()
                dir_ok = True
            except OSError as exc:  # no directory to write into: nothing else to try
                failures.append(("*", out_dir, f"[Errno {exc.errno}] {exc.strerror or exc}"))
                dir_ok = False
            # Feed ids are stored, never derived from where the feeds are served.
            legacy = {o.name: publish.document_url(s.base_url or LEGACY_BASE_URL, o.name, "atom")
                      for o in self.config.outputs}
            feed_ids = self.writer.call(lambda st: st.output_ids(legacy, now))
            # Times are stored to the second: an entry first seen in this second may be in
            # what is published now.
            self.shown_before = now + timedelta(seconds=1)
            for output in self.config.outputs if dir_ok else ():
                # One broken output must not stop the others from being published.
                try:
                    items, complete = self.output_items(output, now=now)
                    written += publish.publish_output(output, items, docs,
                                                      base_url=base_url, now=now,
                                                      feed_id=feed_ids[output.name],
                                                      complete=complete)
                    summaries[output.name] = publish.summarize(output, items)
                except PublishWriteError as exc:
                    written += exc.written
                    failures += [(output.name, path, reason) for path, reason in exc.failures]
                except AggregatorError as exc:  # the output itself is wrong: no retry helps
                    refused += 1
                    log.error("output %s not published: %s", output.name, exc,
                              extra={"output": output.name, "kind": "publish"})
            try:
                if dir_ok:
                    publish.write_index(self.config.outputs, docs, base_url=base_url,
                                        summaries=summaries)
            except PublishWriteError as exc:
                failures += [("index", path, reason) for path, reason in exc.failures]
            if isinstance(docs, StoreDocuments):
                try:
                    docs.commit()
                except AggregatorError as exc:  # the database refused: all of it is retried
                    failures.append(("*", Path("database"), str(exc)))
                    written = []
            self.metrics.published(time.monotonic() - started, len(written),
                                   refused + len({name for name, _, _ in failures}))
            self._publish_outcome(failures)
        return written

    def _publish_outcome(self, failures: Sequence[tuple[str, Path, str]]) -> None:
        """Log each failed file once per attempt and schedule the retry (exponential backoff,
        capped), or note the recovery."""
        if not failures:
            if self._publish_attempts:
                log.info("publishing recovered after %d failed attempts",
                         self._publish_attempts, extra={"kind": "publish"})
            self._publish_attempts = 0
            self._publish_retry_at = None
            return
        delay = self._schedule_publish_retry()
        for name, path, reason in failures:
            log.error("output %s: cannot write %s: %s; retry in %.0f s", name, path, reason,
                      delay, extra={"output": name, "path": str(path), "kind": "publish"})

    def _schedule_publish_retry(self) -> float:
        self._publish_attempts += 1
        delay = min(PUBLISH_RETRY_MIN * 2 ** (self._publish_attempts - 1), PUBLISH_RETRY_MAX)
        self._publish_retry_at = time.monotonic() + delay
        self.dirty.set()  # what failed is still to be published
        return delay

    def publish_failed(self, exc: BaseException) -> None:
        """An unexpected error stopped publishing (a bug, or the store unreadable): retried
        with the same backoff as a failed write; the traceback is logged the first time."""
        first = self._publish_attempts == 0
        delay = self._schedule_publish_retry()
        log.error("publishing failed: %s: %s; retry in %.0f s", type(exc).__name__, exc, delay,
                  exc_info=exc if first else None, extra={"kind": "publish"})

    def publish_retry_in(self) -> float | None:
        """Seconds until the next retry of a failed publish (0 when due); None when the
        last publish succeeded."""
        if self._publish_retry_at is None:
            return None
        return max(0.0, self._publish_retry_at - time.monotonic())

    def publish_due(self) -> bool:
        """Whether the daemon should publish now: after a change, or, once publishing
        failed, when the retry is due (even with nothing new: what failed is still unpublished)."""
        if self._publish_retry_at is not None:
            return time.monotonic() >= self._publish_retry_at
        return self.dirty.is_set()

    def metrics_snapshot(self) -> MetricsSnapshot:
        """The values /metrics reads at scrape time, from a read-only connection of its own
        (scrapes run on the HTTP server's threads, never on the writer)."""
        st = open_storage(self.config.settings.database, readonly=True, timeout=5.0)
        try:
            database_bytes, wal_bytes = st.disk_usage()
            return MetricsSnapshot(
                backlog=st.backlog_size(),
                feeds_by_state=st.feed_state_counts(),
                database_bytes=database_bytes,
                wal_bytes=wal_bytes,
                last_poll_cycle=self.last_cycle,
                feeds=tuple(st.feed_metrics()) if self.metrics.per_feed else (),
            )
        finally:
            st.close()

    # ----------------------------------------------------------------------- retention

    def retention_configured(self) -> bool:
        """Whether any entry can be due for pruning: a global or per-feed entry_retention,
        or a feed's max_entries."""
        return self.config.settings.entry_retention > 0 or any(
            f.entry_retention or f.max_entries for f in self.config.feeds)

    def protected_entries(self, now: datetime) -> set[int]:
        """Every member of every story a published document shows (each output's current
        document and the archive pages it keeps), selected as `publish` selects them: a prune
        leaves every published document as it is, and archives still page back to their
        first item. An entry goes once its page has left the output's archive window."""
        docs = self._documents()
        items: list[Item] = []
        for output in self.config.outputs:
            # An output whose items cannot be selected (a filter error) stops the prune:
            # what its documents show is unknown.
            selected, complete = self.output_items(output, now=now)
            items += publish.published_items(output, selected, docs, complete=complete)
        stories = {i.story_id for i in items if i.story_id is not None}
        return {i.id for i in items} | self._read_store().story_member_ids(stories)

    def prune(self, *, dry_run: bool = False, vacuum: bool = False,
              vacuum_pages: int | None = None) -> PruneReport:
        """Delete the entries the retention settings let go (store.prune), except those the
        current documents show; then merge the search index (the deleted entries' rows leave
        it only then) and return the freed space to the file system: all of it with
        ``vacuum`` (a full VACUUM, which also switches an older database to incremental
        vacuum), else by incremental vacuum. ``vacuum_pages`` bounds both steps (pages
        written, pages returned) so that the writer never pauses long; None: no bound.
        Published files are not rewritten: the current documents keep their items, and
        sealed archive pages are history."""
        s = self.config.settings
        now = _now()
        size_before = self.writer.call(lambda st: st.size())
        report = PruneReport(dry_run=dry_run)
        if self.retention_configured():
            # Under the publish lock: no publish picks items between the two steps.
            with self._publish_lock:
                protect = self.protected_entries(now)
                report = self.writer.call(lambda st: st.prune(
                    now=now, entry_retention=s.entry_retention,
                    feeds=self.config.feeds, protect=protect, dry_run=dry_run))
        vacuumed = None
        if not dry_run:  # also goes on with a merge an earlier prune started
            freed = self.writer.call(lambda st: st.optimize_search(vacuum_pages))
            page = self.writer.call(lambda st: st.page_size())
            report = replace(report, freed=report.freed + freed * page)
        if not dry_run and vacuum:
            self.writer.call(lambda st: st.vacuum())
            vacuumed = "full"
        elif not dry_run:  # also the pages earlier deletions left free (article pages)
            if self.writer.call(lambda st: st.incremental_vacuum(vacuum_pages)):
                vacuumed = "incremental"
        if not dry_run and (report.entries or vacuumed):
            # The deletions sit in the WAL until a checkpoint: fold them into the file now.
            self.writer.call(lambda st: st.fold_wal())
        return replace(report, size_before=size_before,
                       size_after=self.writer.call(lambda st: st.size()), vacuumed=vacuumed)

    # ----------------------------------------------------------------------- cycle

    def run_cycle(
        self,
        *,
        all_feeds: bool = False,
        names: Iterable[str] | None = None,
        on_done: Callable[[FeedOutcome], None] | None = None,
        on_start: Callable[[int], None] | None = None,
        articles: bool = True,
    ) -> CycleReport:
        report = CycleReport()
        states = self.due(all_feeds=all_feeds, names=names)
        if on_start:
            on_start(len(states))
        report.feeds = self.poll(states, on_done=on_done)
        if articles and self.config.settings.full_text:
            report.articles_done, report.articles_failed = self.process_articles()
            report.articles_retrying = self.articles_retrying
        if self.dirty.is_set() or not self.outputs_exist():
            report.published = self.publish()
        return report

    def outputs_exist(self) -> bool:
        if self.documents_in_store:
            names = {d.name for d in self._read_store().document_index()}
            return "index.html" in names and all(
                f"{o.name}.{fmt}" in names for o in self.config.outputs for fmt in o.formats)
        out = Path(self.config.settings.output_dir)
        return (out / "index.html").exists() and all(
            (out / f"{o.name}.{fmt}").exists() for o in self.config.outputs for fmt in o.formats
        )


def discover_feed(config: Config, url: str) -> tuple[str, str | None]:
    """The feed URL for `url`: the URL itself when it serves a feed, else the first feed its
    HTML page announces with <link rel="alternate">. Returns (feed_url, title)."""
    fetcher = fetch.Fetcher(config.settings)
    try:
        res = fetcher.fetch(FetchRequest(url=url, max_bytes=config.settings.feed_max_bytes))
        try:
            parsed = parse.parse_feed(res.body, res.final_url, content_type=res.content_type,
                                      charset=res.charset)
            return res.final_url, parsed.title
        except ParseError:
            pass
        from . import extract  # lazily: see _extract_job

        found = extract.discover_feeds(res.body, res.final_url, charset=res.charset)
        if not found:
            raise AggregatorError(f"{url}: not a feed, and the page announces no feed")
        feed_url, title = found[0]
        res2 = fetcher.fetch(FetchRequest(url=feed_url, max_bytes=config.settings.feed_max_bytes))
        parsed = parse.parse_feed(res2.body, res2.final_url, content_type=res2.content_type,
                                  charset=res2.charset)
        return res2.final_url, parsed.title or title
    finally:
        fetcher.close()
