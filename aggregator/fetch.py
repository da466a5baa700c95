"""Fetching feeds and article pages over HTTP(S), safely and politely.

One ``Fetcher`` (one requests.Session, so one connection pool) is shared by worker threads.
What it guarantees, per request:

* network policy on every hop, both statically (``check_url``: scheme, IP spellings, names)
  and on the address actually connected (our own connection class resolves the name, vets
  every address and connects to a vetted one, so DNS rebinding cannot slip through);
* a total deadline, redirects included: a watchdog thread shuts down the sockets of a request
  whose deadline passed, which unblocks a read stuck on a dripping server;
* a cap on the decoded body (gzip bombs stop at the cap), manual redirects, Retry-After
  memory per host, per-host concurrency and spacing, and robots.txt for pages.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import re
import socket
import threading
import time
import unicodedata
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from functools import lru_cache
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import SplitResult, urldefrag, urljoin, urlsplit

import requests
import urllib3  # requests' own transport; we subclass its connections to vet addresses
from protego import Protego
from requests.adapters import HTTPAdapter
from requests.cookies import RequestsCookieJar
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from aggregator.errors import AggregatorError, BlockedAddressError, FetchError
from aggregator.models import FetchRequest, FetchResult, HostGate, Settings

__all__ = ["Fetcher", "check_url"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CHUNK = 64 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
PERMANENT_STATUSES = frozenset({301, 308})
PAGE_TYPES = frozenset({"text/html", "application/xhtml+xml"})
ACCEPT = {
    "feed": (
        "application/rss+xml, application/atom+xml, application/feed+json, "
        "application/rdf+xml;q=0.9, application/xml;q=0.9, text/xml;q=0.9, "
        "application/json;q=0.8, */*;q=0.5"
    ),
    "page": "text/html, application/xhtml+xml;q=0.9, */*;q=0.5",
    "robots": "text/plain, */*;q=0.5",
}

DEADLINE_SLACK = 0.05  # s: a timeout ending this close to the deadline is the deadline

ROBOTS_MAX_BYTES = 512 * 1024  # RFC 9309: parse at least 500 KiB, ignore the rest
ROBOTS_DEFAULT_TTL = 86400.0  # RFC 9309: do not cache for more than 24 h
ROBOTS_MIN_TTL = 60.0  # a max-age of 0 must not mean one robots.txt fetch per page
ROBOTS_CACHE_ORIGINS = 4096  # beyond this many cached origins, expired rules are dropped
ROBOTS_MAX_REDIRECTS = 5  # RFC 9309 2.3.1.2: follow at least five consecutive redirects
# 5xx/unreachable: the host's pages are not fetched (RFC 9309 2.3.1.4: complete disallow)
# until robots.txt is asked again, after this long, doubled per failure in a row up to the max.
ROBOTS_UNREACHABLE_TTL = 300.0
ROBOTS_UNREACHABLE_MAX_TTL = 3600.0

# --------------------------------------------------------------------------- network policy

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
CGNAT = ipaddress.ip_network("100.64.0.0/10")
UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")

# Categories a refusal falls in; ``allow_private`` opens only "private".
PRIVATE, METADATA, UNROUTABLE = "private", "metadata", "unroutable"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NUMERIC_PART = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)$")
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


def _ip_refusal(ip: IPAddress) -> tuple[str, str] | None:
    """(category, reason) when the address may not be fetched, else None."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        # Wrappers of IPv4 addresses are judged by the address they wrap.
        wrapped: tuple[str, ipaddress.IPv4Address] | None = None
        if ip.ipv4_mapped is not None:
            wrapped = ("IPv4-mapped", ip.ipv4_mapped)
        elif ip in NAT64:
            wrapped = ("NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        elif ip.sixtofour is not None:
            wrapped = ("6to4", ip.sixtofour)
        if wrapped is not None:
            inner = _ip_refusal(wrapped[1])
            if inner is None:
                return None
            return inner[0], f"{inner[1]} ({wrapped[0]} {wrapped[1]})"
    if ip in METADATA_ADDRESSES:
        return METADATA, "cloud metadata"
    if ip.is_unspecified:
        return UNROUTABLE, "unspecified"
    if ip.is_multicast:
        return UNROUTABLE, "multicast"
    if ip.is_loopback:
        return PRIVATE, "loopback"
    if ip in CGNAT:
        return PRIVATE, "shared (CGNAT)"
    if ip.is_link_local:
        return PRIVATE, "link-local"
    if ip in UNIQUE_LOCAL or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local):
        return PRIVATE, "unique-local"
    if ip.is_reserved or ip in NAT64_LOCAL:
        return UNROUTABLE, "reserved"
    if ip.is_private:
        return PRIVATE, "private"
    if not ip.is_global:
        return UNROUTABLE, "non-global"
    return None


def _inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a numeric host means to inet_aton (and so to getaddrinfo): decimal,
    hex and octal parts, 1 to 4 of them (127.1, 0x7f.1, 2130706433). None if not numeric."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_NUMERIC_PART.match(p) for p in parts):
        return None
    values = []
    for p in parts:
        if p[:2].lower() == "0x":
            values.append(int(p[2:] or "0", 16))
        elif len(p) > 1 and p.startswith("0"):
            if not set(p) <= set("01234567"):
                raise ValueError(f"invalid octal part {p!r}")
            values.append(int(p, 8))
        else:
            values.append(int(p))
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        raise ValueError("IPv4 part out of range")
    number = last
    for i, v in enumerate(head):
        number |= v << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


@dataclass(frozen=True)
class _Target:
    """The parts of a URL that the policy and the politeness rules need."""

    scheme: str
    host: str  # lower case, ASCII, no brackets or trailing dot
    port: int
    ip: IPAddress | None  # set when the host is an address, in whatever spelling

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def _parse_target(url: str) -> _Target:
    """Split and normalise ``url``; FetchError("bad_url") or BlockedAddressError (scheme)."""
    if not isinstance(url, str) or not url.strip():
        raise FetchError("bad_url", f"{url!r}: empty URL", url=str(url))
    if _CONTROL.search(url):
        raise FetchError("bad_url", f"{url!r}: URL contains control characters", url=url)
    try:
        parts: SplitResult = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        raise FetchError("bad_url", f"{url}: malformed URL ({e})", url=url) from None
    scheme = parts.scheme.lower()
    if not scheme or (not parts.netloc and scheme in ("http", "https")):
        what = "no scheme" if not scheme else "no host"
        raise FetchError("bad_url", f"{url}: {what}; expected http(s)://host/...", url=url)
    if scheme not in ("http", "https"):
        raise BlockedAddressError(
            f"{url}: scheme {scheme!r} is not allowed (http/https only)", url=url
        )
    authority = parts.netloc.rpartition("@")[2]
    if "\\" in authority or any(c.isspace() for c in authority):
        raise FetchError("bad_url", f"{url}: invalid characters in host", url=url)
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise FetchError("bad_url", f"{url}: no host", url=url)
    port = port or (443 if scheme == "https" else 80)
    try:
        if ":" in host:  # only IPv6 literals contain a colon once the port is split off
            ip: IPAddress | None = ipaddress.IPv6Address(host)
        else:
            host = _ascii_host(host)
            ip = _inet_aton(host) if host.isascii() else None
    except ValueError as e:
        raise FetchError("bad_url", f"{url}: invalid host {host!r} ({e})", url=url) from None
    if ip is not None:  # one spelling per address, for per-host bookkeeping
        return _Target(scheme, str(ip), port, ip)
    if host.isascii() and (
        len(host) > 253 or not all(_LABEL.match(label) for label in host.split("."))
    ):
        raise FetchError("bad_url", f"{url}: invalid host name {host!r}", url=url)
    return _Target(scheme, host, port, None)


def _ascii_host(host: str) -> str:
    """IDNA form of a non-ASCII host, so that e.g. full-width digits are seen as digits."""
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii").lower().rstrip(".")
    except UnicodeError:
        # Still non-ASCII: a name only the resolver can judge (and the connect check will).
        return unicodedata.normalize("NFKC", host).lower().rstrip(".")


class _Policy:
    """Which addresses may be fetched: everything global, plus ``allow_private_hosts``."""

    def __init__(self, allow_private_hosts: Sequence[str]) -> None:
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        names: set[str] = set()
        for entry in allow_private_hosts:
            text = entry.strip().lower().rstrip(".")
            try:
                nets.append(ipaddress.ip_network(text.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if not text or not all(_LABEL.match(label) for label in _ascii_host(text).split(".")):
                raise AggregatorError(
                    f"allow_private_hosts: {entry!r} is neither a host name nor an IP/CIDR"
                )
            names.add(_ascii_host(text))
        self.nets = tuple(nets)
        self.names = frozenset(names)

    def _listed(self, ip: IPAddress, *, exact: bool) -> bool:
        for net in self.nets:
            if ip.version == net.version and ip in net and (not exact or net.num_addresses == 1):
                return True
        return False

    def refusal(self, host: str, ip: IPAddress | None, allow_private: bool) -> str | None:
        """Why ``host`` (resolved to ``ip`` when known) may not be fetched, or None."""
        if ip is None:
            return self._name_refusal(host, allow_private)
        found = _ip_refusal(ip)
        if found is None:
            return None
        category, reason = found
        candidates = [ip]
        if isinstance(ip, ipaddress.IPv6Address):
            inner = ip.ipv4_mapped or ip.sixtofour
            if inner is None and ip in NAT64:
                inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            if inner is not None:
                candidates.append(inner)
        if category == METADATA:
            # Metadata endpoints open only when listed one by one, never via a range or name.
            if any(self._listed(c, exact=True) for c in candidates):
                return None
        elif host in self.names or any(self._listed(c, exact=False) for c in candidates):
            return None
        elif allow_private and category == PRIVATE:
            return None
        return f"{reason} address {ip}"

    def _name_refusal(self, host: str, allow_private: bool) -> str | None:
        if host in self.names:
            return None
        if host in METADATA_NAMES:
            return "cloud metadata host name"
        if host in LOOPBACK_NAMES or host.endswith(".localhost"):
            return None if allow_private else "loopback host name"
        return None


@lru_cache(maxsize=32)
def _policy_for(allow_private_hosts: tuple[str, ...]) -> _Policy:
    return _Policy(allow_private_hosts)


def check_url(
    url: str, *, allow_private_hosts: Sequence[str] = (), allow_private: bool = False
) -> None:
    """Static network policy for ``url`` (no DNS): raise BlockedAddressError if refused.

    Refuses non-http(s) schemes, loopback/private/link-local/multicast/reserved/metadata
    addresses in any spelling (decimal, hex, octal, short, IPv6 wrappers) and loopback names.
    A malformed URL raises FetchError("bad_url"). ``allow_private`` opens private and
    loopback addresses (never metadata); ``allow_private_hosts`` lists trusted names/CIDRs.
    """
    target = _parse_target(url)
    reason = _policy_for(tuple(allow_private_hosts)).refusal(target.host, target.ip, allow_private)
    if reason is not None:
        raise BlockedAddressError(f"{url}: refused by the network policy: {reason}", url=url)


# --------------------------------------------------------------------------- deadline


@dataclass(eq=False)
class _Attempt:
    """One call to Fetcher.fetch: its deadline and the hop in progress."""

    deadline: float  # time.monotonic()
    budget: float  # the configured deadline, for messages
    policy: _Policy
    settings: Settings
    resolver: ThreadPoolExecutor
    watchdog: _Watchdog
    url: str = ""
    allow_private: bool = False
    done: bool = False
    socks: set[socket.socket] = field(default_factory=set)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def deadline_error(self, url: str | None = None) -> FetchError:
        url = url or self.url
        return FetchError(
            "deadline", f"{url}: gave up after the {self.budget:g} s fetch deadline", url=url
        )

    def check(self) -> None:
        if self.remaining() <= 0:
            raise self.deadline_error()

    def over(self) -> bool:
        """Whether a failure is due to the deadline (socket timeouts are cut to end on it)."""
        return self.remaining() <= DEADLINE_SLACK

    def timeout(self, limit: float) -> float:
        """A socket timeout no longer than ``limit`` nor the time left."""
        left = self.remaining()
        if left <= 0:
            raise self.deadline_error()
        return max(0.001, min(limit, left))


class _Watchdog:
    """Shuts down the sockets of attempts whose deadline passed (one thread for all).

    Sockets are owned by one attempt at a time: a pooled connection reused by a later
    request is claimed by it, so an old attempt's deadline never hits someone else's socket.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Attempt]] = []
        self._owner: dict[socket.socket, _Attempt] = {}
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, attempt: _Attempt) -> None:
        with self._cond:
            heapq.heappush(self._heap, (attempt.deadline, next(self._seq), attempt))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="fetch-watchdog", daemon=True
                )
                self._thread.start()
            if self._heap[0][2] is attempt:  # only an earlier deadline changes its sleep
                self._cond.notify()

    def claim(self, attempt: _Attempt, sock: socket.socket) -> None:
        with self._cond:
            previous = self._owner.get(sock)
            if previous is not None and previous is not attempt:
                previous.socks.discard(sock)
            self._owner[sock] = attempt
            attempt.socks.add(sock)
            if time.monotonic() >= attempt.deadline:
                _shutdown(sock)

    def release(self, attempt: _Attempt) -> None:
        with self._cond:
            attempt.done = True
            for sock in attempt.socks:
                if self._owner.get(sock) is attempt:
                    del self._owner[sock]
            attempt.socks.clear()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, _, attempt = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                if not attempt.done:
                    for sock in list(attempt.socks):
                        _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    """Wake any thread blocked on ``sock`` (close() alone would not on Linux)."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # base method: also right for TLS sockets
    except OSError:
        pass


# --------------------------------------------------------------------------- guarded connections

_LOCAL = threading.local()  # .attempt: the _Attempt of the request this thread is sending
_getaddrinfo = socket.getaddrinfo  # module attribute so tests can stand in for DNS


def _current_attempt() -> _Attempt:
    attempt: _Attempt | None = getattr(_LOCAL, "attempt", None)
    if attempt is None:  # fail closed: these connections only serve Fetcher requests
        raise BlockedAddressError("connection attempted outside a Fetcher request")
    return attempt


class _GuardedMixin:
    """Resolve, vet and connect ourselves, so the address connected is the address checked."""

    _dns_host: str
    port: int
    socket_options: Any
    sock: socket.socket | None
    _peer: IPAddress | None = None

    def _vetted_host(self) -> str:
        return self._dns_host.rstrip(".").lower()

    def _new_conn(self) -> socket.socket:
        attempt = _current_attempt()
        host = self._vetted_host()
        infos = _resolve(attempt, self._dns_host, self.port)
        allowed: list[tuple[int, Any, IPAddress, str | None]] = []
        refused: list[tuple[int, Any, IPAddress, str | None]] = []
        for family, _type, _proto, _name, sockaddr in infos:
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            reason = attempt.policy.refusal(host, ip, attempt.allow_private)
            (refused if reason else allowed).append((family, sockaddr, ip, reason))
        if not allowed:
            reason = refused[0][3] if refused else "no address"
            raise BlockedAddressError(
                f"{attempt.url}: {host} resolves to a refused address: {reason}", url=attempt.url
            )
        error: OSError | None = None
        for family, sockaddr, ip, _ in allowed:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                sock.settimeout(attempt.timeout(attempt.settings.connect_timeout))
                attempt.watchdog.claim(attempt, sock)
                sock.connect(sockaddr)
            except OSError as e:
                sock.close()
                error = e
                continue
            self._peer = ip
            return sock
        raise _connect_error(attempt, host, self.port, error)

    def request(self, *args: Any, **kwargs: Any) -> None:
        attempt = _current_attempt()
        if self.sock is not None:
            # A pooled connection may have been opened under a looser policy (a request's
            # own private URL): re-vet its peer for this request, reconnect if refused.
            if self._peer is None or attempt.policy.refusal(
                self._vetted_host(), self._peer, attempt.allow_private
            ):
                self.close()  # type: ignore[attr-defined]
            else:
                attempt.watchdog.claim(attempt, self.sock)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _GuardedHTTPConnection(_GuardedMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedMixin, HTTPSConnection):
    pass


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {  # type: ignore[attr-defined]
            "http": _GuardedHTTPPool,
            "https": _GuardedHTTPSPool,
        }


def _resolve(attempt: _Attempt, host: str, port: int) -> list[Any]:
    """getaddrinfo bounded by the connect timeout and the deadline (it cannot be interrupted,
    so it runs in a helper thread that is abandoned when too slow)."""
    bare = host.strip("[]")
    try:
        ip = ipaddress.ip_address(bare.split("%", 1)[0])
    except ValueError:
        ip = None
    if ip is not None:
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        sockaddr = (bare, port, 0, 0) if ip.version == 6 else (bare, port)
        return [(family, socket.SOCK_STREAM, 0, "", sockaddr)]
    limit = attempt.timeout(attempt.settings.connect_timeout)
    future = attempt.resolver.submit(_getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        return list(future.result(timeout=limit))
    except FutureTimeout:
        future.cancel()
        if attempt.over():
            raise attempt.deadline_error() from None
        raise FetchError(
            "timeout", f"{attempt.url}: DNS lookup of {host} timed out", url=attempt.url
        ) from None
    except (socket.gaierror, UnicodeError) as e:
        why = getattr(e, "strerror", None) or str(e)
        raise FetchError(
            "connect", f"{attempt.url}: DNS lookup of {host} failed: {why}", url=attempt.url
        ) from None


def _connect_error(attempt: _Attempt, host: str, port: int, error: OSError | None) -> FetchError:
    url = attempt.url
    if attempt.over():
        return attempt.deadline_error()
    if isinstance(error, TimeoutError | socket.timeout):
        return FetchError("timeout", f"{url}: connecting to {host}:{port} timed out", url=url)
    if isinstance(error, ConnectionRefusedError):
        return FetchError("connect", f"{url}: connection refused by {host}:{port}", url=url)
    why = (error.strerror if error else None) or str(error)
    return FetchError("connect", f"{url}: cannot connect to {host}:{port}: {why}", url=url)


# --------------------------------------------------------------------------- politeness


SLOT_SLACK = 0.1  # seconds: less time than this left at the deadline, don't start a request


class MemoryHostGate:
    """models.HostGate in this process's memory: at most ``limit`` requests in flight per
    host, starts at least ``delay`` s apart, Retry-After per host (the default: one process).

    One lock, one condition per host: a freed slot wakes one thread waiting for that host
    (notify_all on a shared condition woke every waiting fetch thread for every release)."""

    @dataclass
    class _State:
        cond: threading.Condition
        in_flight: int = 0
        waiting: int = 0
        next_start: float = 0.0

    def __init__(self, limit: int, delay: float) -> None:
        self._limit = max(1, limit)
        self._delay = max(0.0, delay)
        self._lock = threading.Lock()
        self._hosts: dict[str, MemoryHostGate._State] = {}
        self._rate_limited: dict[str, float] = {}  # host -> monotonic end of Retry-After

    def acquire(self, host: str, deadline: float) -> object | None:
        with self._lock:
            state = self._hosts.get(host)
            if state is None:
                state = self._hosts[host] = self._State(threading.Condition(self._lock))
            state.waiting += 1
            try:
                while True:
                    now = time.monotonic()
                    wait = deadline - now
                    if state.in_flight < self._limit and now >= state.next_start and wait > 0:
                        state.in_flight += 1
                        state.next_start = now + self._delay
                        if state.in_flight < self._limit:
                            state.cond.notify()  # room for another: pass the wake-up on
                        return host
                    if wait <= 0:
                        state.cond.notify()  # whatever woke us is not lost on the others
                        return None
                    if state.in_flight < self._limit:
                        wait = min(wait, state.next_start - now)
                    state.cond.wait(wait)
            finally:
                state.waiting -= 1

    def release(self, token: object) -> None:
        host = str(token)
        with self._lock:
            state = self._hosts[host]
            state.in_flight -= 1
            state.cond.notify()
            if len(self._hosts) > 1024:  # forget idle hosts whose spacing has elapsed
                now = time.monotonic()
                for name in [
                    h for h, s in self._hosts.items()
                    if not s.in_flight and not s.waiting and s.next_start <= now
                ]:
                    del self._hosts[name]

    def retry_after(self, host: str) -> float | None:
        with self._lock:
            until = self._rate_limited.get(host)
            if until is None:
                return None
            left = until - time.monotonic()
            if left <= 0:
                del self._rate_limited[host]
                return None
            return left

    def set_retry_after(self, host: str, seconds: float) -> None:
        with self._lock:
            self._rate_limited[host] = time.monotonic() + seconds

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class _Robots:
    parser: Protego | None  # None: allow or disallow everything, per ``allow_all``
    allow_all: bool
    expires: float  # time.monotonic()
    note: str  # why, for messages
    # robots.txt could not be had (5xx, network): a temporary disallow, not the site's rules
    unreachable: bool = False

    def allows(self, url: str, agent: str) -> bool:
        if self.parser is None:
            return self.allow_all
        return bool(self.parser.can_fetch(url, agent))


# --------------------------------------------------------------------------- fetcher


class Fetcher:
    """Thread-safe HTTP fetcher for feeds and pages (see the module docstring)."""

    def __init__(self, settings: Settings, gate: HostGate | None = None) -> None:
        """``gate``: per-host politeness shared with other fetchers (the PostgreSQL store's,
        across workers); by default this fetcher's own, in memory."""
        self.settings = settings
        self._policy = _Policy(settings.allow_private_hosts)
        self._agent = re.split(r"[/\s]", settings.user_agent.strip(), maxsplit=1)[0] or "*"
        self._session = requests.Session()
        self._session.trust_env = False  # no proxies or .netrc from the environment
        self._session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        self._session.headers.clear()
        pool_size = max(settings.workers, settings.per_host_concurrency, 4)
        adapter = _GuardedAdapter(pool_connections=64, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._adapter = adapter
        self._resolver = ThreadPoolExecutor(
            max_workers=max(2, settings.workers), thread_name_prefix="fetch-dns"
        )
        self._watchdog = _Watchdog()
        self._gate: HostGate = gate if gate is not None else MemoryHostGate(
            settings.per_host_concurrency, settings.per_host_delay)
        self._lock = threading.Lock()
        self._robots: dict[str, _Robots] = {}  # origin -> rules
        self._robots_locks: dict[str, threading.Lock] = {}
        self._robots_failures: dict[str, int] = {}  # origin -> unreachable robots.txt in a row

    def close(self) -> None:
        """Close pooled connections and stop helper threads."""
        self._session.close()
        self._watchdog.close()
        self._resolver.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def retry_after_for(self, host: str) -> float | None:
        """Seconds left of ``host``'s Retry-After window, or None when not rate limited."""
        host = _ascii_host(host.strip().strip("[]").lower().rstrip("."))
        return self._gate.retry_after(host)

    def fetch(self, req: FetchRequest) -> FetchResult:
        """GET ``req.url`` under every rule of the module; raise FetchError (see ``kind``)."""
        if req.kind not in ("feed", "page"):
            raise AggregatorError(f"{req.url}: unknown fetch kind {req.kind!r} (feed or page)")
        start = time.monotonic()
        attempt = _Attempt(
            deadline=start + self.settings.fetch_deadline,
            budget=self.settings.fetch_deadline,
            policy=self._policy,
            settings=self.settings,
            resolver=self._resolver,
            watchdog=self._watchdog,
            url=req.url,
        )
        self._watchdog.watch(attempt)
        try:
            return self._follow(req, attempt, start)
        finally:
            self._watchdog.release(attempt)

    # ----------------------------------------------------------------------- one request

    def _follow(
        self,
        req: FetchRequest,
        attempt: _Attempt,
        start: float,
        truncate: bool = False,
        max_redirects: int | None = None,
    ) -> FetchResult:
        """Fetch ``req`` following redirects by hand, every hop re-checked."""
        if max_redirects is None:
            max_redirects = self.settings.max_redirects
        url = req.url
        jar = RequestsCookieJar()  # per request: cookie-setting redirects work, nothing leaks
        statuses: list[int] = []
        seen = {self._loop_key(url, jar)}
        while True:
            allow_private = req.allow_private and not statuses  # the configured URL only
            target = _parse_target(url)
            reason = self._policy.refusal(target.host, target.ip, allow_private)
            if reason is not None:
                hop = f" (redirected from {req.url})" if statuses else ""
                raise BlockedAddressError(
                    f"{url}{hop}: refused by the network policy: {reason}", url=url
                )
            self._check_rate_limit(target.host, url)
            if req.kind == "page":
                self._check_robots(url, target, attempt, allow_private)
            # A slot freed in the last instants before the deadline is not worth taking:
            # the request could not complete, and it would only load the host.
            token = self._gate.acquire(target.host, attempt.deadline - SLOT_SLACK)
            if token is None:
                raise FetchError(
                    "deadline",
                    f"{url}: gave up waiting for a free slot on {target.host} "
                    f"within the {attempt.budget:g} s fetch deadline",
                    url=url,
                )
            try:
                self._check_rate_limit(target.host, url)  # may have started while we waited
                outcome = self._hop(req, url, target, attempt, allow_private, jar, truncate)
            finally:
                self._gate.release(token)
            if isinstance(outcome, _Response):
                return self._result(req, url, outcome, statuses, start)
            status, location = outcome
            next_url = urljoin(url, location)
            jar_key = self._loop_key(next_url, jar)
            if jar_key in seen:
                raise FetchError(
                    "redirect_loop", f"{req.url}: redirect loop at {next_url}", url=req.url
                )
            if len(statuses) >= max_redirects:
                raise FetchError(
                    "redirects",
                    f"{req.url}: more than {max_redirects} redirects (next: {next_url})",
                    url=req.url,
                )
            seen.add(jar_key)
            statuses.append(status)
            url = next_url

    @staticmethod
    def _loop_key(url: str, jar: RequestsCookieJar) -> tuple[str, tuple[tuple[str, str, str], ...]]:
        # Revisiting a URL is a loop unless cookies changed meanwhile (cookie-check redirects).
        cookies = tuple(sorted((c.domain, c.name, c.value or "") for c in jar))
        return urldefrag(url)[0], cookies

    def _hop(
        self,
        req: FetchRequest,
        url: str,
        target: _Target,
        attempt: _Attempt,
        allow_private: bool,
        jar: RequestsCookieJar,
        truncate: bool,
    ) -> _Response | tuple[int, str]:
        """One HTTP exchange: a final response, or (status, Location) of a redirect."""
        headers = {
            "User-Agent": self.settings.user_agent,
            "Accept": ACCEPT[req.kind],
            "Accept-Encoding": "gzip, deflate",
        }
        if req.etag:
            headers["If-None-Match"] = req.etag
        if req.last_modified:
            headers["If-Modified-Since"] = req.last_modified
        attempt.url, attempt.allow_private = url, allow_private
        _LOCAL.attempt = attempt
        try:
            # Prepared here and sent through the adapter: Session.request would only merge
            # session settings we have emptied (headers, cookies, auth, proxies, hooks), at
            # a quarter of a 304's CPU. Redirects are followed by hand in _follow anyway.
            prepared = requests.PreparedRequest()
            prepared.prepare(method="GET", url=url, headers=headers, cookies=jar)
            resp = self._adapter.send(
                prepared,
                stream=True,
                # The session still holds TLS trust settings (a CA bundle in tests).
                verify=True if self._session.verify is None else self._session.verify,
                cert=self._session.cert,
                timeout=(
                    attempt.timeout(self.settings.connect_timeout),
                    attempt.timeout(self.settings.read_timeout),
                ),
            )
        except FetchError:
            raise
        except Exception as e:  # requests/urllib3/http.client failures, mapped to kinds
            raise _transport_error(attempt, url, e) from None
        finally:
            _LOCAL.attempt = None
        reusable = False
        try:
            attempt.check()  # headers cut short by the watchdog look complete: don't trust them
            status = resp.status_code
            if status in REDIRECT_STATUSES:
                location = _header_text(resp.headers.get("location") or "").strip()
                if not location:
                    raise FetchError(
                        "http",
                        f"{url}: HTTP {status} without a Location header",
                        url=url,
                        status=status,
                    )
                jar.update(resp.cookies)
                return status, location
            if status == 304:
                reusable = True
                return _Response(status, _headers(resp), b"")
            if not 200 <= status < 300:
                self._raise_for_status(url, target.host, resp)
            media, _ = _content_type(resp.headers.get("content-type"))
            if req.kind == "page" and media is not None and media not in PAGE_TYPES:
                raise FetchError(
                    "content_type", f"{url}: content type {media!r} is not an HTML page", url=url
                )
            body = self._read_body(resp, url, req.max_bytes, attempt, truncate)
            reusable = len(body) < req.max_bytes or not truncate
            return _Response(status, _headers(resp), body)
        finally:
            if reusable:
                # Read to the end: the connection goes back to the pool (keep-alive).
                resp.raw.release_conn()
            else:
                resp.close()  # unread bodies are not drained: the connection is dropped

    def _read_body(
        self,
        resp: requests.Response,
        url: str,
        cap: int,
        attempt: _Attempt,
        truncate: bool,
    ) -> bytes:
        """The decoded body, never more than ``cap`` bytes of it held or decoded."""
        length = _int_header(resp.headers.get("content-length"))
        if length is not None and length > cap and not truncate:
            raise FetchError(
                "too_large",
                f"{url}: Content-Length {length} exceeds the {cap}-byte limit",
                url=url,
            )
        decoder = _Decoder(resp.headers.get("content-encoding", ""), url)
        out = bytearray()
        try:
            while True:
                chunk = resp.raw.read(CHUNK, decode_content=False)
                if not chunk:
                    break
                out += decoder.feed(chunk, cap - len(out) + 1)
                if len(out) > cap:
                    if truncate:
                        return bytes(out[:cap])
                    raise FetchError(
                        "too_large", f"{url}: body exceeds the {cap}-byte limit", url=url
                    )
                attempt.check()
        except FetchError:
            raise
        except Exception as e:  # urllib3 ProtocolError/ReadTimeoutError, OSError
            raise _transport_error(attempt, url, e) from None
        attempt.check()  # the watchdog's shutdown looks like a clean end of body
        decoder.finish()
        return bytes(out)

    def _raise_for_status(self, url: str, host: str, resp: requests.Response) -> None:
        status = resp.status_code
        reason = f"HTTP {status} {resp.reason or ''}".strip()
        if status == 410:
            raise FetchError("gone", f"{url}: {reason}", url=url, status=status)
        if status in (429, 503):
            seconds = _retry_after(resp.headers.get("retry-after"), self.settings.retry_after_max)
            if status == 429 or seconds is not None:
                if seconds:
                    self._gate.set_retry_after(host, seconds)
                when = f", retry after {seconds:g} s" if seconds is not None else ""
                raise FetchError(
                    "rate_limited",
                    f"{url}: {reason}{when}",
                    url=url,
                    status=status,
                    retry_after=seconds,
                )
        raise FetchError("http", f"{url}: {reason}", url=url, status=status)

    def _check_rate_limit(self, host: str, url: str) -> None:
        left = self.retry_after_for(host)
        if left is not None:
            raise FetchError(
                "rate_limited",
                f"{url}: {host} asked us to wait (Retry-After), {left:.0f} s left",
                url=url,
                retry_after=left,
            )

    def _result(
        self, req: FetchRequest, url: str, resp: _Response, statuses: list[int], start: float
    ) -> FetchResult:
        get = resp.header
        media, charset = _content_type(get("content-type"))
        not_modified = resp.status == 304
        permanent = bool(statuses) and all(s in PERMANENT_STATUSES for s in statuses)
        return FetchResult(
            url=req.url,
            final_url=url,
            status=resp.status,
            headers=resp.headers,
            body=resp.body,
            not_modified=not_modified,
            permanent_url=url if permanent else None,
            content_type=media,
            charset=charset,
            etag=get("etag") or (req.etag if not_modified else None),
            last_modified=get("last-modified") or (req.last_modified if not_modified else None),
            max_age=_max_age(get("cache-control")),
            elapsed=time.monotonic() - start,
        )

    # ----------------------------------------------------------------------- robots.txt

    def _check_robots(
        self, url: str, target: _Target, attempt: _Attempt, allow_private: bool
    ) -> None:
        origin = target.origin
        rules = self._cached_robots(origin)
        if rules is None:
            with self._lock:
                lock = self._robots_locks.setdefault(origin, threading.Lock())
            # One fetch per origin: others wait for it, but never past their deadline.
            if not lock.acquire(timeout=max(0.0, attempt.remaining())):
                raise attempt.deadline_error(url)
            try:
                rules = self._cached_robots(origin)
                if rules is None:
                    rules = self._load_robots(target, attempt, allow_private)
                    with self._lock:
                        self._robots[origin] = rules
                        if len(self._robots) > ROBOTS_CACHE_ORIGINS:  # a long-lived daemon
                            now = time.monotonic()
                            for name in [o for o, r in self._robots.items() if r.expires <= now]:
                                del self._robots[name]
            finally:
                lock.release()
        if not rules.allows(url, self._agent):
            if rules.unreachable:
                # Not the site's rules: the page is to be tried again once robots.txt is.
                left = max(0.0, rules.expires - time.monotonic())
                raise FetchError(
                    "robots_unavailable", f"{url}: {rules.note}", url=url, retry_after=left
                )
            raise FetchError("robots", f"{url}: {rules.note}", url=url)

    def _cached_robots(self, origin: str) -> _Robots | None:
        with self._lock:
            rules = self._robots.get(origin)
            if rules is not None and rules.expires <= time.monotonic():
                del self._robots[origin]
                return None
            return rules

    def _load_robots(self, target: _Target, attempt: _Attempt, allow_private: bool) -> _Robots:
        """Fetch and parse robots.txt; RFC 9309 2.3.1 for what failures mean:

        * 2xx: the rules, cached per Cache-Control max-age within [1 min, 24 h];
        * 4xx "unavailable" (401 and 403 included, as the RFC says; 410 too): no rules,
          every page may be fetched; so too after more than five redirects, a redirect loop
          or a redirect the network policy refuses (the RFC's "MAY assume unavailable");
        * 5xx, network errors and timeouts "unreachable": complete disallow for now, asked
          again after ROBOTS_UNREACHABLE_TTL, doubled per failure in a row (up to the max);
          pages then fail as ``robots_unavailable``, a temporary failure.

        429, and 503 with Retry-After, are the host asking us to slow down: the page fails as
        ``rate_limited`` (temporary) and the host's Retry-After window applies.
        """
        origin = target.origin
        host = f"[{target.host}]" if ":" in target.host else target.host
        default_port = (target.scheme, target.port) in (("http", 80), ("https", 443))
        netloc = host if default_port else f"{host}:{target.port}"
        robots_url = f"{target.scheme}://{netloc}/robots.txt"
        req = FetchRequest(
            url=robots_url, kind="robots", max_bytes=ROBOTS_MAX_BYTES, allow_private=allow_private
        )
        now = time.monotonic()
        # A robots.txt that outlives a fair share of the deadline is unreachable; one that
        # merely started too late (after slow redirect hops of the page) says nothing.
        fair_chance = attempt.remaining() >= attempt.budget / 2
        try:
            result = self._follow(
                req, attempt, now, truncate=True, max_redirects=ROBOTS_MAX_REDIRECTS
            )
        except FetchError as e:
            if e.kind == "rate_limited" or (e.kind == "deadline" and not fair_chance):
                raise
            if e.kind == "gone" or (e.kind == "http" and e.status is not None and e.status < 500):
                self._robots_recovered(origin)
                return _Robots(None, True, now + ROBOTS_DEFAULT_TTL, f"{robots_url} missing")
            if e.kind in ("redirects", "redirect_loop", "blocked", "bad_url"):
                self._robots_recovered(origin)
                return _Robots(
                    None, True, now + ROBOTS_UNREACHABLE_TTL, f"{robots_url} unavailable"
                )
            with self._lock:
                failures = self._robots_failures.get(origin, 0) + 1
                self._robots_failures[origin] = failures
            ttl = min(ROBOTS_UNREACHABLE_TTL * 2 ** (failures - 1), ROBOTS_UNREACHABLE_MAX_TTL)
            why = f"HTTP {e.status}" if e.kind == "http" and e.status else f"{e.kind}: {e}"
            return _Robots(
                None,
                False,
                now + ttl,
                f"{robots_url} unreachable ({why}); pages of {origin} not fetched"
                f" for {ttl:g} s",
                unreachable=True,
            )
        self._robots_recovered(origin)
        ttl = result.max_age if result.max_age is not None else ROBOTS_DEFAULT_TTL
        ttl = min(max(ttl, ROBOTS_MIN_TTL), ROBOTS_DEFAULT_TTL)
        parser = Protego.parse(result.body.decode("utf-8", errors="replace"))
        return _Robots(parser, True, now + ttl, f"disallowed by {robots_url}")

    def _robots_recovered(self, origin: str) -> None:
        with self._lock:
            self._robots_failures.pop(origin, None)


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class _Response:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


def _headers(resp: requests.Response) -> tuple[tuple[str, str], ...]:
    return tuple((k.lower(), v) for k, v in resp.raw.headers.items())


class _Decoder:
    """Incremental gzip/deflate decoding whose output per call is bounded (bomb-proof)."""

    def __init__(self, content_encoding: str, url: str) -> None:
        codings = [c.strip().lower() for c in content_encoding.split(",")]
        codings = [c for c in codings if c and c != "identity"]
        self._url = url
        self._coding = codings[0] if codings else ""
        if len(codings) > 1 or self._coding not in ("", "gzip", "x-gzip", "deflate"):
            raise FetchError(
                "decode", f"{url}: unsupported Content-Encoding {content_encoding!r}", url=url
            )
        self._z: Any = None  # zlib decompressor of the current gzip member / deflate stream
        self._pending = b""  # first byte of a deflate stream, until its header can be sniffed
        self._ended = False

    def feed(self, data: bytes, limit: int) -> bytes:
        """Decode ``data``; stop once ``limit`` bytes came out (the caller then gives up)."""
        if not self._coding:
            return data
        try:
            return self._feed(data, max(1, limit))
        except zlib.error as e:
            raise FetchError(
                "decode", f"{self._url}: corrupt {self._coding} body: {e}", url=self._url
            ) from None

    def _feed(self, data: bytes, limit: int) -> bytes:
        out: list[bytes] = []
        produced = 0
        data = self._pending + data
        self._pending = b""
        while data and produced < limit:
            if self._z is None:
                if self._ended and (self._coding == "deflate" or not data.strip(b"\0")):
                    break  # trailing padding after the last gzip member
                if self._coding == "deflate":
                    if len(data) < 2:
                        self._pending = data
                        break
                    # "deflate" is meant to be zlib-wrapped but many servers send it raw.
                    zlib_header = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
                    self._z = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
                else:
                    self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
            piece = self._z.decompress(data, limit - produced)
            out.append(piece)
            produced += len(piece)
            if self._z.eof:
                data = self._z.unused_data
                self._z, self._ended = None, True
            elif not piece and self._z.unconsumed_tail == data:
                break
            else:
                data = self._z.unconsumed_tail
        return b"".join(out)

    def finish(self) -> None:
        if self._z is not None or self._pending:
            raise FetchError("decode", f"{self._url}: truncated {self._coding} body", url=self._url)


def _transport_error(attempt: _Attempt, url: str, error: Exception) -> FetchError:
    """Map a requests/urllib3/socket exception to a FetchError kind."""
    if attempt.over():
        return attempt.deadline_error(url)
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return FetchError("timeout", f"{url}: connecting timed out", url=url)
    if isinstance(
        error, requests.exceptions.ReadTimeout | urllib3.exceptions.ReadTimeoutError | TimeoutError
    ):
        return FetchError(
            "timeout",
            f"{url}: no data for {attempt.settings.read_timeout:g} s (read timeout)",
            url=url,
        )
    if isinstance(
        error,
        requests.exceptions.InvalidURL
        | requests.exceptions.MissingSchema
        | requests.exceptions.InvalidSchema
        | urllib3.exceptions.LocationParseError
        | UnicodeError,
    ):
        return FetchError("bad_url", f"{url}: invalid URL ({error})", url=url)
    if isinstance(error, requests.exceptions.SSLError):
        return FetchError("connect", f"{url}: TLS error: {_innermost(error)}", url=url)
    return FetchError("connect", f"{url}: connection failed: {_innermost(error)}", url=url)


def _innermost(error: BaseException) -> str:
    """The most specific message in a chain of wrapped transport exceptions."""
    for _ in range(10):
        nested = getattr(error, "reason", None)
        if not isinstance(nested, BaseException):
            nested = next((a for a in error.args if isinstance(a, BaseException)), None)
        if nested is None:
            break
        error = nested
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _header_text(value: str) -> str:
    """http.client decodes headers as Latin-1; servers often mean UTF-8 (non-ASCII paths)."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def _content_type(value: str | None) -> tuple[str | None, str | None]:
    """(media type, charset) of a Content-Type header, both lower case."""
    if not value:
        return None, None
    media, *params = value.split(";")
    charset = None
    for param in params:
        name, _, val = param.partition("=")
        if name.strip().lower() == "charset":
            charset = val.strip().strip("'\"").lower() or None
    return media.strip().lower() or None, charset


def _int_header(value: str | None) -> int | None:
    if not value:
        return None
    try:  # repeated values arrive joined by commas
        return int(value.split(",")[0].strip())
    except ValueError:
        return None


def _max_age(cache_control: str | None) -> float | None:
    if not cache_control:
        return None
    for directive in cache_control.split(","):
        name, _, value = directive.partition("=")
        if name.strip().lower() == "max-age":
            try:
                seconds = int(value.strip().strip('"'))
            except ValueError:
                return None
            return float(seconds) if seconds >= 0 else None
    return None


def _retry_after(value: str | None, ceiling: float) -> float | None:
    """Retry-After as seconds (delay or HTTP-date), clamped to [0, ceiling]; None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:  # "-0000": UTC per RFC 5322, but naive to email.utils
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, min(seconds, ceiling))
