"""Serve the published output directory (and a status document) over HTTP.

Operations routes, when the daemon provides them: ``/metrics`` (Prometheus text format,
rendered by the caller), ``/healthz`` (200 while the process serves) and ``/readyz`` (200 or
503 with a JSON document naming the failed check). Their requests are logged at DEBUG only:
scrapers and probes call every few seconds.

Standard library only. Publish replaces files atomically (write + rename), so every request
reads through one open file descriptor: a rename mid-request can never mix old and new bytes.
File bytes, their ETag and a gzip copy are cached by file identity, so repeated requests
neither re-read nor re-compress.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import logging
import math
import os
import socket
import socketserver
import stat
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_to_bytes, urlsplit

from aggregator import statuspage
from aggregator.errors import ServerError
from aggregator.models import DOCUMENT_TYPES, Document, document_etag

logger = logging.getLogger("aggregator.server")
# One line per request, at DEBUG: a scraper or monitor polling every few seconds would
# otherwise bury what matters. `log_level: DEBUG` (or enabling this logger) shows them.
access_log = logging.getLogger("aggregator.access")

CONTENT_TYPES: dict[str, str] = DOCUMENT_TYPES
CACHE_CONTROL = "public, max-age=60"
# HTML may style itself inline but load nothing, run nothing, be framed by no one.
HTML_CSP = (
    "default-src 'none'; script-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
STATUS_PATH = "status.json"
STATUS_PAGE = "status"  # the same document as HTML for a person (statuspage)
INDEX_NAME = "index.html"
METRICS_PATH = "metrics"
HEALTHZ_PATH = "healthz"
READYZ_PATH = "readyz"
# Probe and scrape routes: answered on every listener, logged at DEBUG.
OPERATIONS_PATHS = frozenset({METRICS_PATH, HEALTHZ_PATH, READYZ_PATH})

_CACHE_MAX_BYTES = 64 * 1024 * 1024
_MAX_CONNECTIONS = 100  # beyond this, new connections are closed at once (keeps threads bounded)
_IDLE_TIMEOUT = 30.0  # seconds a keep-alive connection may sit idle (or a client stall)
_POLL_INTERVAL = 0.1  # serve_forever's shutdown check; bounds how long stop() waits
_READ_ATTEMPTS = 3
# Escape control characters so a hostile request line cannot forge log lines.
_LOG_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}

StatusProvider = Callable[[], dict[str, Any]]
MetricsProvider = Callable[[], tuple[bytes, str]]  # (body, Content-Type)
ReadyProvider = Callable[[], tuple[bool, dict[str, Any]]]  # (ready, document)
IndexProvider = Callable[[], list[Document]]  # every document, without bodies
DocumentProvider = Callable[[str], Document | None]  # one document with its body


# --------------------------------------------------------------------------- helpers


def parse_listen(listen: str) -> tuple[str, int]:
    """Split ``host:port`` (IPv6 as ``[::1]:8080``); port 0 asks the OS for a free port."""
    host, sep, port_text = listen.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ServerError(f"listen: expected HOST:PORT such as 127.0.0.1:8080, got {listen!r}")
    return host, int(port_text)


def route(target: str) -> str | None:
    """Map a request target to a file name directly inside the output directory.

    Returns "" for the root, the decoded name otherwise, or None for anything that could
    leave the directory or name a hidden/temporary file (traversal, separators, NUL).
    """
    if target.startswith(("http://", "https://")):  # absolute-form request target
        target = urlsplit(target).path or "/"
    path = target.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        return None
    try:
        decoded = unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        return None
    name = decoded[1:]
    if name == "":
        return ""
    # One path segment only; a leading dot covers "..", "." and publish's temporary files.
    if "/" in name or "\\" in name or "\x00" in name or name.startswith("."):
        return None
    return name


def content_type(name: str) -> str | None:
    """The Content-Type served for ``name``, or None when that extension is not served."""
    return CONTENT_TYPES.get(os.path.splitext(name)[1])


def accepts_gzip(header: str | None) -> bool:
    """Whether an Accept-Encoding header allows gzip (explicitly or via ``*``, with q > 0)."""
    if not header:
        return False
    q_gzip: float | None = None
    q_star: float | None = None
    for part in header.split(","):
        token, _, params = part.partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        token = token.strip().lower()
        if token in ("gzip", "x-gzip"):
            q_gzip = q
        elif token == "*":
            q_star = q
    q_final = q_gzip if q_gzip is not None else q_star
    return q_final is not None and q_final > 0


def etag_matches(if_none_match: str, etag: str) -> bool:
    """If-None-Match uses weak comparison: ``W/"x"`` matches ``"x"``; ``*`` matches anything."""
    if if_none_match.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        if candidate.strip().removeprefix("W/") == opaque:
            return True
    return False


def _http_date_seconds(value: str) -> int | None:
    try:
        return int(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


# --------------------------------------------------------------------------- file cache


class _Entry:
    """One file's bytes as read through one descriptor, with its validators."""

    __slots__ = ("key", "body", "etag", "gz_etag", "gz", "mtime")

    def __init__(self, key: tuple[int | str, ...], body: bytes, mtime: int) -> None:
        self.key = key
        self.body = body
        digest = document_etag(body)
        self.etag = f'"{digest}"'
        self.gz_etag = f'"{digest}-gz"'  # a different representation needs a different tag
        self.gz: bytes | None = None
        self.mtime = mtime


class _FileCache:
    """LRU of file entries, bounded in bytes.

    The key is the file's identity, not only (mtime, size): publish may rewrite a file with
    the same size and mtime (mtime is the newest item's date), but a rename always brings a
    new inode and change time, which no one can set by hand.
    """

    def __init__(self, max_bytes: int = _CACHE_MAX_BYTES) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._max_bytes = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()
        self.reads = 0
        self.compressions = 0

    def load(self, directory: Path, name: str) -> _Entry | None:
        """The current content of ``directory/name``; None unless it is a regular file."""
        for attempt in range(_READ_ATTEMPTS):
            # O_NOFOLLOW: no symlink out of the directory; O_NONBLOCK: a FIFO cannot hang us.
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            try:
                fd = os.open(os.path.join(directory, name), flags)
            except OSError:
                return None
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    return None
                key = _identity(st)
                with self._lock:
                    entry = self._entries.get(name)
                    if entry is not None and entry.key == key:
                        self._entries.move_to_end(name)
                        return entry
                body = _read_all(fd, st.st_size)
                after_key = _identity(os.fstat(fd))
            finally:
                os.close(fd)
            with self._lock:
                self.reads += 1
            entry = _Entry(key, body, st.st_mtime_ns // 1_000_000_000)
            if len(body) == st.st_size and after_key == key:
                self._store(name, entry)
                return entry
            # Written in place while we read (publish never does this): read again.
            if attempt == _READ_ATTEMPTS - 1:
                logger.warning("%s keeps changing while read; serving it uncached", name)
                return entry
        return None  # pragma: no cover - the loop always returns

    def gzipped(self, entry: _Entry) -> bytes:
        """The gzip copy of ``entry``, compressed once (mtime=0 keeps it deterministic)."""
        if entry.gz is None:
            data = gzip.compress(entry.body, compresslevel=6, mtime=0)
            with self._lock:
                self.compressions += 1
                if entry.gz is None:
                    entry.gz = data
                    if any(e is entry for e in self._entries.values()):
                        self._bytes += len(data)
                        self._evict()
        return entry.gz

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "entries": len(self._entries),
                "bytes": self._bytes,
                "reads": self.reads,
                "compressions": self.compressions,
            }

    def _store(self, name: str, entry: _Entry) -> None:
        if len(entry.body) > self._max_bytes:
            return
        with self._lock:
            old = self._entries.pop(name, None)
            if old is not None:
                self._bytes -= _size(old)
            self._entries[name] = entry
            self._bytes += _size(entry)
            self._evict()

    def _evict(self) -> None:
        while self._bytes > self._max_bytes and self._entries:
            _, old = self._entries.popitem(last=False)
            self._bytes -= _size(old)


class _StoredCache:
    """Documents read from the database through providers (PostgreSQL: what publish
    stored), cached per node. The index (names, ETags, dates; no bodies) is read again at
    most once per ``interval`` seconds; a body only when its ETag changed. ETag and
    Last-Modified come from the stored bytes and ``published`` time, and gzip has mtime 0:
    every node gives the same bytes and validators. When the database does not answer, what
    was cached is served on (a document never read raises: 503)."""

    def __init__(self, index: IndexProvider, fetch: DocumentProvider, *,
                 interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._index_provider = index
        self._fetch = fetch
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._index: dict[str, Document] | None = None
        self._checked = -math.inf
        self._failing = False  # the last revalidation failed (logged once)
        self._entries: dict[str, _Entry] = {}
        self.reads = 0
        self.compressions = 0

    def _current_index(self) -> dict[str, Document]:
        with self._lock:
            if self._index is not None and self._clock() - self._checked < self._interval:
                return self._index
            try:
                self._index = {d.name: d for d in self._index_provider()}
                if self._failing:
                    logger.info("documents revalidated again")
                self._failing = False
            except Exception as exc:
                if self._index is None:
                    raise
                if not self._failing:  # one line per outage, not one per second
                    logger.warning("documents not revalidated (serving the cached ones): %s",
                                   exc)
                self._failing = True
            self._checked = self._clock()
            for name in set(self._entries) - set(self._index):
                del self._entries[name]
            return self._index

    def load(self, name: str) -> _Entry | None:
        doc = self._current_index().get(name)
        if doc is None:
            return None
        with self._lock:
            entry = self._entries.get(name)
        if entry is not None and entry.key == (doc.etag,):
            return entry
        stored = self._fetch(name)
        if stored is None or stored.body is None:
            return None
        entry = _Entry((document_etag(stored.body),), stored.body,
                       int(stored.published.timestamp()))
        with self._lock:
            self.reads += 1
            self._entries[name] = entry
        return entry

    def listing(self) -> list[tuple[str, int, float]]:
        return [(d.name, d.size, d.published.timestamp())
                for d in self._current_index().values()]

    def gzipped(self, entry: _Entry) -> bytes:
        if entry.gz is None:
            data = gzip.compress(entry.body, compresslevel=6, mtime=0)
            with self._lock:
                self.compressions += 1
                entry.gz = data
        return entry.gz

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"entries": len(self._entries),
                    "bytes": sum(_size(e) for e in self._entries.values()),
                    "reads": self.reads, "compressions": self.compressions}


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _size(entry: _Entry) -> int:
    return len(entry.body) + (len(entry.gz) if entry.gz is not None else 0)


def _read_all(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = max(size, 0) + 1  # one byte more reveals a file that grew
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------- HTTP plumbing


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() closes connections itself instead of joining threads
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], feed_server: FeedServer) -> None:
        self.feed_server = feed_server
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) we have no use for.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self._connections_lock:
            if len(self._connections) >= _MAX_CONNECTIONS:
                logger.warning(
                    "refusing %s: %d connections open", client_address[0], _MAX_CONNECTIONS
                )
                return False
            self._connections.add(request)
        return True

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake every handler blocked on a keep-alive read so its thread ends now."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-response are routine; anything else is a bug worth a trace.
        # (The base class would print the traceback to stderr.)
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            logger.debug("connection from %s dropped", client_address[0], exc_info=True)
        else:
            logger.exception("error while serving %s", client_address[0])


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    server_version = "aggregator"
    timeout = _IDLE_TIMEOUT
    # Headers and body go out in two writes; with Nagle on, a small body waits for the
    # client's delayed ACK on every response of a keep-alive connection.
    disable_nagle_algorithm = True
    error_content_type = "text/plain; charset=utf-8"
    error_message_format = "%(code)d %(message)s\n"

    def version_string(self) -> str:
        return self.server_version  # the base class would advertise the Python version too

    # ------------------------------------------------------------------ methods

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def __getattr__(self, name: str) -> Callable[[], None]:
        # BaseHTTPRequestHandler looks up do_<METHOD>; any other method gets 405, not 501.
        if name.startswith("do_"):
            return self._method_not_allowed
        raise AttributeError(name)

    def _method_not_allowed(self) -> None:
        self.close_connection = True  # a request body may follow; we will not read it
        self._send_plain(
            HTTPStatus.METHOD_NOT_ALLOWED,
            head=False,
            extra=(("Allow", "GET, HEAD"), ("Connection", "close")),
        )

    # ------------------------------------------------------------------ routing

    def _serve(self, *, head: bool) -> None:
        feed_server = self.server.feed_server
        name = route(self.path)
        if name in OPERATIONS_PATHS:
            self._serve_operations(name, feed_server, head=head)
        elif name is None or not feed_server.serve_files:
            self._send_plain(HTTPStatus.NOT_FOUND, head=head)
        elif name == STATUS_PATH:
            self._serve_status(feed_server.status_provider, head=head)
        elif name == STATUS_PAGE:
            self._serve_status_page(feed_server.status_provider, head=head)
        elif name == "":
            try:
                entry = feed_server.load(INDEX_NAME)
            except Exception as exc:  # the database does not answer: nothing cached to serve
                logger.debug("cannot read %s: %s", INDEX_NAME, exc)
                self._send_plain(HTTPStatus.SERVICE_UNAVAILABLE, head=head)
                return
            if entry is not None:
                self._serve_entry(entry, content_type(INDEX_NAME) or "", head=head)
            else:
                self._serve_listing(head=head)
        else:
            ctype = content_type(name)
            try:
                entry = feed_server.load(name) if ctype else None
            except Exception as exc:  # /readyz reports the outage, once (ServeNode)
                logger.debug("cannot read %s: %s", name, exc)
                self._send_plain(HTTPStatus.SERVICE_UNAVAILABLE, head=head)
                return
            if entry is None or ctype is None:
                self._send_plain(HTTPStatus.NOT_FOUND, head=head)
            else:
                self._serve_entry(entry, ctype, head=head)

    def _serve_entry(self, entry: _Entry, ctype: str, *, head: bool) -> None:
        feed_server = self.server.feed_server
        use_gzip = accepts_gzip(self.headers.get("Accept-Encoding"))
        etag = entry.gz_etag if use_gzip else entry.etag
        # Last-Modified must not lie in the future (RFC 9110 8.8.2.1).
        last_modified = min(entry.mtime, int(time.time()))
        headers: list[tuple[str, str]] = [
            ("ETag", etag),
            ("Last-Modified", formatdate(last_modified, usegmt=True)),
            ("Cache-Control", CACHE_CONTROL),
            ("Vary", "Accept-Encoding"),
        ]
        if self._not_modified(etag, last_modified):
            self._send(HTTPStatus.NOT_MODIFIED, headers, None, head=True)
            return
        body = feed_server.gzipped(entry) if use_gzip else entry.body
        headers.insert(0, ("Content-Type", ctype))
        if use_gzip:
            headers.append(("Content-Encoding", "gzip"))
        if ctype.startswith("text/html"):
            headers.append(("Content-Security-Policy", HTML_CSP))
        self._send(HTTPStatus.OK, headers, body, head=head)

    def _not_modified(self, etag: str, last_modified: int | None) -> bool:
        if_none_match = self.headers.get_all("If-None-Match")
        if if_none_match:  # takes precedence over If-Modified-Since (RFC 9110 13.2.2)
            return etag_matches(",".join(if_none_match), etag)
        since = self.headers.get("If-Modified-Since")
        if since and last_modified is not None:
            since_s = _http_date_seconds(since)
            return since_s is not None and last_modified <= since_s
        return False

    def _serve_listing(self, *, head: bool) -> None:
        feed_server = self.server.feed_server
        status = feed_server.status_provider is not None
        if feed_server.stored is not None:
            body = render_listing_of(feed_server.stored.listing(),
                                     status_link=status).encode("utf-8")
        else:
            body = render_listing(feed_server.out_dir, status_link=status).encode("utf-8")
        etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        headers = [
            ("ETag", etag),
            ("Cache-Control", CACHE_CONTROL),
            ("Content-Security-Policy", HTML_CSP),
        ]
        if self._not_modified(etag, None):
            self._send(HTTPStatus.NOT_MODIFIED, headers, None, head=True)
            return
        headers.insert(0, ("Content-Type", CONTENT_TYPES[".html"]))
        self._send(HTTPStatus.OK, headers, body, head=head)

    def _serve_status(self, provider: StatusProvider | None, *, head: bool) -> None:
        if provider is None:
            self._send_plain(HTTPStatus.NOT_FOUND, head=head)
            return
        try:
            document = provider()
            body = (json.dumps(document, ensure_ascii=False, indent=2, default=str) + "\n").encode()
        except Exception:
            logger.exception("status provider failed")
            self._send_plain(HTTPStatus.INTERNAL_SERVER_ERROR, head=head)
            return
        headers = [
            ("Content-Type", "application/json; charset=utf-8"),
            ("Cache-Control", "no-store"),
        ]
        self._send(HTTPStatus.OK, headers, body, head=head)

    def _serve_operations(self, name: str, feed_server: FeedServer, *, head: bool) -> None:
        no_store = ("Cache-Control", "no-store")
        if name == HEALTHZ_PATH:
            # The process is up and this thread answers: nothing else is asked.
            body = b"ok\n"
            self._send(HTTPStatus.OK, [("Content-Type", "text/plain; charset=utf-8"),
                                       no_store], body, head=head)
            return
        if name == METRICS_PATH:
            metrics = feed_server.metrics_provider
            if metrics is None:
                self._send_plain(HTTPStatus.NOT_FOUND, head=head)
                return
            try:
                body, ctype = metrics()
            except Exception:
                logger.exception("metrics provider failed")
                self._send_plain(HTTPStatus.INTERNAL_SERVER_ERROR, head=head)
                return
            self._send(HTTPStatus.OK, [("Content-Type", ctype), no_store], body, head=head)
            return
        ready = feed_server.ready_provider
        if ready is None:
            self._send_plain(HTTPStatus.NOT_FOUND, head=head)
            return
        try:
            ok, document = ready()
        except Exception as exc:  # a failing check is an unready process, with the reason
            logger.exception("readiness check failed")
            ok, document = False, {"ready": False, "failed": ["readiness"],
                                   "error": f"{type(exc).__name__}: {exc}"}
        body = (json.dumps(document, ensure_ascii=False, indent=2, default=str) + "\n").encode()
        status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
        self._send(status, [("Content-Type", "application/json; charset=utf-8"), no_store],
                   body, head=head)

    def _serve_status_page(self, provider: StatusProvider | None, *, head: bool) -> None:
        if provider is None:
            self._send_plain(HTTPStatus.NOT_FOUND, head=head)
            return
        try:
            body = statuspage.render_status(provider()).encode("utf-8")
        except Exception:
            logger.exception("status page failed")
            self._send_plain(HTTPStatus.INTERNAL_SERVER_ERROR, head=head)
            return
        headers = [
            ("Content-Type", CONTENT_TYPES[".html"]),
            ("Cache-Control", "no-store"),
            ("Content-Security-Policy", HTML_CSP),
            ("Vary", "Accept-Encoding"),
        ]
        if accepts_gzip(self.headers.get("Accept-Encoding")):
            body = gzip.compress(body, compresslevel=6, mtime=0)
            headers.append(("Content-Encoding", "gzip"))
        self._send(HTTPStatus.OK, headers, body, head=head)

    # ------------------------------------------------------------------ output

    def _send(
        self,
        status: HTTPStatus,
        headers: list[tuple[str, str]],
        body: bytes | None,
        *,
        head: bool,
    ) -> None:
        self._body_length = len(body) if body is not None and not head else 0  # for the log
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        if body is not None:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body is not None and not head:
            self.wfile.write(body)

    def _send_plain(
        self,
        status: HTTPStatus,
        *,
        head: bool,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        body = f"{status.value} {status.phrase}\n".encode()
        headers = [("Content-Type", "text/plain; charset=utf-8"), *extra]
        self._send(status, headers, body, head=head)

    def end_headers(self) -> None:
        # Every response, errors from the base class included: never let a browser sniff.
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()

    # ------------------------------------------------------------------ logging

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if isinstance(code, HTTPStatus):
            code = code.value
        # Popped: the handler lives as long as the connection, across keep-alive requests.
        length = self.__dict__.pop("_body_length", size)
        access_log.debug(
            '%s "%s" %s %s',
            self.client_address[0],
            self.requestline.translate(_LOG_ESCAPES),
            code,
            length,
        )

    def log_error(self, format: str, *args: Any) -> None:
        # Malformed or timed-out requests are the client's business, one per request too.
        access_log.debug("%s %s", self.client_address[0], (format % args).translate(_LOG_ESCAPES))

    def log_message(self, format: str, *args: Any) -> None:
        access_log.debug("%s %s", self.client_address[0], (format % args).translate(_LOG_ESCAPES))


def render_listing(out_dir: Path, *, status_link: bool = False) -> str:
    """A small HTML list of the files the server would serve, every name escaped (and a link
    to the status page when there is one)."""
    files: list[tuple[str, int, float]] = []
    try:
        entries = sorted(os.scandir(out_dir), key=lambda e: e.name)
    except OSError:
        entries = []
    for entry in entries:
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        files.append((entry.name, info.st_size, info.st_mtime))
    return render_listing_of(files, status_link=status_link)


def render_listing_of(files: list[tuple[str, int, float]], *, status_link: bool = False) -> str:
    """The listing of ``files`` (name, size, mtime), those served only."""
    rows: list[str] = []
    for name, size, mtime in sorted(files):
        if name.startswith(".") or content_type(name) is None:
            continue
        href = html.escape(quote(name), quote=True)
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(mtime))
        rows.append(
            f'<li><a href="{href}">{html.escape(name)}</a> '
            f"<small>{size} bytes, {when}</small></li>"
        )
    items = "\n".join(rows) or "<li>No feeds published yet.</li>"
    status = f'<p><a href="{STATUS_PAGE}">Status</a></p>' if status_link else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>Feeds</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:50em}li{margin:.3em 0}</style>"
        f"</head><body><h1>Feeds</h1>\n<ul>\n{items}\n</ul>{status}</body></html>\n"
    )


# --------------------------------------------------------------------------- public API


class FeedServer:
    """Serves ``out_dir`` (and ``/status.json`` from ``status_provider``) on ``listen``,
    with ``/healthz`` always and ``/metrics``, ``/readyz`` when their providers are given.
    ``serve_files=False``: the operations routes only (a separate metrics listener).
    ``documents``: (index, fetch) providers of documents kept in the database, served
    instead of ``out_dir``'s files (PostgreSQL; the server never opens the store itself)."""

    def __init__(
        self,
        out_dir: Path,
        listen: str,
        *,
        status_provider: StatusProvider | None = None,
        metrics_provider: MetricsProvider | None = None,
        ready_provider: ReadyProvider | None = None,
        serve_files: bool = True,
        documents: tuple[IndexProvider, DocumentProvider] | None = None,
        revalidate: float = 1.0,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.stored = _StoredCache(*documents, interval=revalidate) if documents else None
        self.listen = listen
        self._host, self._port = parse_listen(listen)
        self.status_provider = status_provider
        self.metrics_provider = metrics_provider
        self.ready_provider = ready_provider
        self.serve_files = serve_files
        self._cache = _FileCache()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve in a daemon thread; raises ServerError when the address is unusable."""
        if self._httpd is not None:
            raise ServerError(f"server on {self.listen} already started")
        server_class = _HTTPServer6 if ":" in self._host else _HTTPServer
        try:
            httpd = server_class((self._host, self._port), self)
        except (OSError, OverflowError) as exc:
            raise ServerError(f"cannot listen on {self.listen!r}: {exc}") from exc
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name="aggregator-server",
            daemon=True,
        )
        self._thread.start()
        if self.serve_files:
            logger.info("serving %s at %s", self.source, self.url)
        else:
            logger.info("serving /metrics, /healthz and /readyz at %s", self.url)

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the real port when ``listen`` asked for port 0."""
        if self._httpd is None:
            raise ServerError("server not started")
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        """Base URL to reach the server (wildcard binds are reached through loopback)."""
        host, port = self.address
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/"

    def stop(self) -> None:
        """Stop accepting, close the listening socket and every open connection."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._httpd = None
        self._thread = None
        httpd.shutdown()  # returns once serve_forever has left its loop
        httpd.server_close()
        httpd.close_connections()
        if thread is not None:
            thread.join(timeout=5)
        logger.info("stopped serving %s", self.source if self.serve_files else self.listen)

    def cache_stats(self) -> dict[str, int]:
        """Counters of the file cache: entries, bytes, reads (disk), compressions."""
        return self.stored.stats() if self.stored is not None else self._cache.stats()

    def load(self, name: str) -> _Entry | None:
        """The served document ``name`` (a file, or from the database)."""
        if self.stored is not None:
            return self.stored.load(name)
        return self._cache.load(self.out_dir, name)

    def gzipped(self, entry: _Entry) -> bytes:
        if self.stored is not None:
            return self.stored.gzipped(entry)
        return self._cache.gzipped(entry)

    @property
    def source(self) -> str:
        return "the database" if self.stored is not None else str(self.out_dir)

    def __enter__(self) -> FeedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
