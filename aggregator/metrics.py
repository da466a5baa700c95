"""Prometheus metrics of one process: the only module importing prometheus_client.

Each `Metrics` owns its own `CollectorRegistry` (never the library's global one), so several
pipelines in one process, and tests, never see each other's counts. Counters and histograms
are updated by the code that does the work (the pipeline's verbs); values that are cheaper
to read than to track (backlog, feeds by state, database and WAL size, last poll cycle) are
read when a scrape asks for them, through `_ScrapeCollector` and a `snapshot` callable.

Labels stay bounded: outcomes and error kinds come from fixed sets (an unknown kind counts
as ``other``), and nothing is labelled by entry or URL. Series per feed (labelled by the
configured feed name) exist only with the ``metrics_per_feed`` setting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from .models import MetricsSnapshot

log = logging.getLogger("aggregator.metrics")

# No `<counter>_created` series: each would double the exposition for a start time the
# process already exports nowhere else useful (a restart shows as a counter reset anyway).
disable_created_metrics()

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Feed states as the store knows them (Store.feed_state_counts): every one is exported,
# zero included, so a dashboard never has to guess whether a missing series means 0.
FEED_STATES = ("ok", "degraded", "failing", "disabled", "removed")

# The outcomes of a poll that are not errors; errors are counted under their kind.
POLL_OUTCOMES = ("ok", "not_modified", "unchanged")
# FetchError kinds (errors.FetchError), ParseError kinds (errors.ParseError) and the
# pipeline's fallback "error": the bounded set of failed-poll outcomes.
ERROR_KINDS = frozenset({
    "timeout", "deadline", "connect", "too_large", "redirects", "redirect_loop", "blocked",
    "bad_url", "http", "gone", "rate_limited", "content_type", "robots",
    "robots_unavailable", "decode",
    "empty", "not_a_feed", "malformed", "crashed", "memory", "closed", "error",
})  # fmt: skip
# Why an article page was not used: its fetch failed (a FetchError kind) or its extraction
# did (an ExtractError kind, or the extraction worker crashed, timed out, ran out of memory).
EXTRACT_REASONS = frozenset({
    "bad_rule", "too_large", "empty", "too_deep", "no_content", "crashed", "timeout",
    "memory", "error",
})  # fmt: skip
OTHER = "other"

# Seconds. Feeds and pages: from a local 304 to the 60 s fetch deadline.
FETCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
PUBLISH_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

Snapshot = Callable[[], MetricsSnapshot]


def poll_outcome(status: str, error_kind: str | None) -> str:
    """The bounded label of one poll: ok, not_modified, unchanged, or the error kind."""
    if status in POLL_OUTCOMES:
        return status
    if status == "gone":
        return "gone"
    return error_kind if error_kind in ERROR_KINDS else OTHER


def _bounded(value: str, allowed: Iterable[str]) -> str:
    return value if value in allowed else OTHER


class Metrics:
    """The metrics of one pipeline (one process's work), in a registry of their own."""

    def __init__(self, *, per_feed: bool = False, snapshot: Snapshot | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.per_feed = per_feed
        self.snapshot = snapshot
        r = self.registry
        self.polls = Counter(
            "aggregator_polls", "Feed polls by outcome: ok, not_modified (304), unchanged "
            "(same body as last time), or the error kind (timeout, http, malformed, ...)",
            ["outcome"], registry=r)
        self.fetch_seconds = Histogram(
            "aggregator_fetch_duration_seconds",
            "Wall time of one fetch (waits for the host included), by kind: feed or page",
            ["kind"], buckets=FETCH_BUCKETS, registry=r)
        self.entries = Counter(
            "aggregator_entries", "Entries stored from feeds: new, or updated in place",
            ["change"], registry=r)
        self.article_pages = Counter(
            "aggregator_article_pages_fetched", "Article pages fetched", registry=r)
        self.articles_extracted = Counter(
            "aggregator_articles_extracted",
            "Article pages extracted, by the content kept: article, or feed (the feed's own "
            "text was longer)", ["kept"], registry=r)
        self.articles_failed = Counter(
            "aggregator_articles_failed",
            "Article pages not used, by stage (fetch, extract) and reason (the error kind)",
            ["stage", "reason"], registry=r)
        self.stories_created = Counter(
            "aggregator_stories_created", "Stories started by a new entry", registry=r)
        self.stories_merged = Counter(
            "aggregator_stories_merged",
            "Stories merged into another (an entry bridged them, or full text matched a "
            "lone entry to a known story)", registry=r)
        self.publish_seconds = Histogram(
            "aggregator_publish_duration_seconds", "Wall time of publishing every output",
            buckets=PUBLISH_BUCKETS, registry=r)
        self.publish_files = Counter(
            "aggregator_publish_files_written", "Files written by publishing", registry=r)
        self.publish_failures = Counter(
            "aggregator_publish_output_failures", "Outputs that could not be published",
            registry=r)
        # Per feed, only with metrics_per_feed: label values are configured feed names.
        self.feed_polls = Counter(
            "aggregator_feed_polls", "Polls of one feed by outcome (metrics_per_feed)",
            ["feed", "outcome"], registry=r)
        self.feed_entries = Counter(
            "aggregator_feed_entries", "Entries stored from one feed (metrics_per_feed)",
            ["feed", "change"], registry=r)
        self._feed_series: set[tuple[str, ...]] = set()
        self._feed_lock = threading.Lock()
        # Every fixed label value from the start: rate() needs a series before its first
        # increment, and a scrape shows what can be counted.
        for outcome in POLL_OUTCOMES:
            self.polls.labels(outcome)
        for change in ("new", "updated"):
            self.entries.labels(change)
        for kept in ("article", "feed"):
            self.articles_extracted.labels(kept)
        for kind in ("feed", "page"):
            self.fetch_seconds.labels(kind)
        r.register(_ScrapeCollector(self))

    # ----------------------------------------------------------------------- updates

    def poll(self, feed: str, status: str, error_kind: str | None, *, new: int = 0,
             updated: int = 0, stories_created: int = 0, stories_merged: int = 0) -> None:
        """One poll of one feed, as its outcome line reports it."""
        outcome = poll_outcome(status, error_kind)
        self.polls.labels(outcome).inc()
        if new:
            self.entries.labels("new").inc(new)
        if updated:
            self.entries.labels("updated").inc(updated)
        if stories_created:
            self.stories_created.inc(stories_created)
        if stories_merged:
            self.stories_merged.inc(stories_merged)
        if self.per_feed:
            with self._feed_lock:
                self._feed_series.add(("polls", feed, outcome))
                self.feed_polls.labels(feed, outcome).inc()
                for change, n in (("new", new), ("updated", updated)):
                    self._feed_series.add(("entries", feed, change))
                    self.feed_entries.labels(feed, change).inc(n)

    def fetched(self, kind: str, seconds: float) -> None:
        self.fetch_seconds.labels("page" if kind == "page" else "feed").observe(seconds)

    def article_failed(self, stage: str, reason: str) -> None:
        allowed = ERROR_KINDS if stage == "fetch" else EXTRACT_REASONS
        self.articles_failed.labels(stage, _bounded(reason, allowed)).inc()

    def published(self, seconds: float, files: int, failures: int) -> None:
        self.publish_seconds.observe(seconds)
        self.publish_files.inc(files)
        if failures:
            self.publish_failures.inc(failures)

    def configure(self, *, per_feed: bool, feeds: Iterable[str]) -> None:
        """After a reload: per-feed series on or off, and none kept for a removed feed."""
        keep = set(feeds) if per_feed else set()
        with self._feed_lock:
            self.per_feed = per_feed
            for series in sorted(self._feed_series):
                which, feed, value = series
                if feed in keep:
                    continue
                counter = self.feed_polls if which == "polls" else self.feed_entries
                try:
                    counter.remove(feed, value)
                except KeyError:
                    pass
                self._feed_series.discard(series)

    # ----------------------------------------------------------------------- exposition

    def render(self) -> bytes:
        """The text exposition format of every metric of this registry."""
        return generate_latest(self.registry)


class _ScrapeCollector(Collector):
    """Values read when scraped: from the store (one read-only snapshot) and the pipeline."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterator[Metric]:
        return iter(())  # unchecked: the families depend on the snapshot and the setting

    def collect(self) -> Iterator[Metric]:
        source = self._metrics.snapshot
        if source is None:
            return
        try:
            snap = source()
        except Exception as exc:  # the counters must still be served
            log.warning("metrics: cannot read the store: %s", exc)
            yield GaugeMetricFamily(
                "aggregator_store_readable", "1 when the store could be read for this scrape",
                value=0)
            return
        yield GaugeMetricFamily(
            "aggregator_store_readable", "1 when the store could be read for this scrape",
            value=1)
        yield GaugeMetricFamily(
            "aggregator_extraction_backlog", "Entries waiting for their article page",
            value=snap.backlog)
        states = GaugeMetricFamily(
            "aggregator_feeds", "Feeds by state: ok, degraded, failing, disabled, removed",
            labels=["state"])
        extra = sorted(set(snap.feeds_by_state) - set(FEED_STATES))
        for state in (*FEED_STATES, *extra):
            states.add_metric([state], snap.feeds_by_state.get(state, 0))
        yield states
        yield GaugeMetricFamily(
            "aggregator_database_bytes", "Size of the SQLite database file",
            value=snap.database_bytes)
        yield GaugeMetricFamily(
            "aggregator_database_wal_bytes", "Size of the SQLite write-ahead log file",
            value=snap.wal_bytes)
        if snap.last_poll_cycle is not None:
            yield GaugeMetricFamily(
                "aggregator_last_poll_cycle_timestamp_seconds",
                "Unix time the last poll cycle completed (every due feed polled and recorded)",
                value=snap.last_poll_cycle)
        if self._metrics.per_feed and snap.feeds:
            errors = GaugeMetricFamily(
                "aggregator_feed_consecutive_errors",
                "Consecutive failed polls of one feed (metrics_per_feed)", labels=["feed"])
            success = GaugeMetricFamily(
                "aggregator_feed_last_success_timestamp_seconds",
                "Unix time of one feed's last successful poll (metrics_per_feed)",
                labels=["feed"])
            feed_state = GaugeMetricFamily(
                "aggregator_feed_state", "1 for the state one feed is in (metrics_per_feed)",
                labels=["feed", "state"])
            for f in snap.feeds:
                errors.add_metric([f.name], f.consecutive_errors)
                if f.last_success is not None:
                    success.add_metric([f.name], f.last_success)
                feed_state.add_metric([f.name, f.state], 1)
            yield errors
            yield success
            yield feed_state
