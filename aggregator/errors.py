"""Every error the aggregator raises derives from AggregatorError.

Errors carry enough context (file/line/col, URL, kind) for an operator to act on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class AggregatorError(Exception):
    """Base of every error raised on purpose by the aggregator."""


@dataclass(frozen=True)
class Problem:
    """One configuration problem, printed as ``file:line:col: message`` (1-based)."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class ConfigError(AggregatorError):
    """Settings or feeds.yaml are invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid configuration")


class FetchError(AggregatorError):
    """A fetch failed. ``kind`` is a stable short code recorded in the database.

    Kinds: ``timeout``, ``deadline``, ``connect``, ``too_large``, ``redirects``,
    ``redirect_loop``, ``blocked`` (network policy), ``bad_url``, ``http`` (4xx/5xx),
    ``gone`` (410), ``rate_limited`` (429/503 with Retry-After), ``content_type``,
    ``robots`` (disallowed by robots.txt), ``robots_unavailable`` (robots.txt answered 5xx
    or could not be fetched: the host's pages wait, ``retry_after`` says how long),
    ``decode`` (bad gzip etc.).
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        url: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.kind = kind
        self.url = url
        self.status = status
        self.retry_after = retry_after
        super().__init__(message)


class BlockedAddressError(FetchError):
    """The network policy refused the address (loopback, private, metadata, non-http scheme)."""

    def __init__(self, message: str, *, url: str = "") -> None:
        super().__init__("blocked", message, url=url)


class ParseError(AggregatorError):
    """A body is not a usable feed (empty, HTML, truncated, hostile). Nothing is stored from it.

    ``kind``: ``empty``, ``not_a_feed``, ``malformed``, ``too_large``, ``timeout``,
    ``crashed``, ``memory``.
    """

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


class ExtractError(AggregatorError):
    """An article page could not be turned into an article (kept with the feed's content)."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


class StoreError(AggregatorError):
    """The database could not be opened, migrated or written."""


class DatabaseUnreachable(StoreError):
    """The database server does not answer (refused, gone, restarting): a condition that
    passes, which long-running processes wait out (tasks: retried with backoff)."""


class FilterError(AggregatorError):
    """An output filter is invalid (bad regular expression, unknown field)."""


class ServerError(AggregatorError):
    """The HTTP server cannot start: a malformed ``listen`` value or an unusable address."""


class DedupError(AggregatorError, ValueError):
    """Dedup was given an invalid signature or threshold (a programming or data error)."""


class PublishError(AggregatorError):
    """An output could not be published (e.g. an unknown format)."""


class PublishWriteError(PublishError):
    """Some files could not be written (disk full, read-only, permissions). Every other
    file was still attempted: ``written`` lists those whose bytes changed, ``failures`` each
    failed path with its reason. Retrying later can succeed (unlike a bad output name)."""

    def __init__(self, failures: list[tuple[Path, str]], written: list[Path]) -> None:
        self.failures = tuple(failures)
        self.written = tuple(written)
        first, reason = self.failures[0]
        more = f" (and {len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
        super().__init__(f"cannot write {first}: {reason}{more}")
