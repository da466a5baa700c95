"""A local feed server for integration tests and benchmarks (127.0.0.1 only).

Generated feeds live at /feed/<n>.xml (RSS 2.0, `entries` items each, honouring ETag and
If-Modified-Since), their article pages at /article/<n>/<i>.html. Tests add fixed routes with
`server.route(path, status=..., body=..., headers=...)` or a handler callable.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.sax.saxutils import escape

Handler = Callable[["Request"], tuple[int, dict[str, str], bytes]]

BASE_TIME = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)

WORDS = (
    "government parliament minister border agreement talks economy energy pipeline railway "
    "election court protest reform budget investment tourism wine mountain river village "
    "security peace region capital statement delegation summit trade exports harvest"
).split()


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    handler: Handler | None = None


def article_words(n: int, i: int, count: int = 220) -> str:
    h = int(hashlib.sha256(f"{n}/{i}".encode()).hexdigest(), 16)
    out = []
    for k in range(count):
        out.append(WORDS[(h >> (k % 200)) % len(WORDS)] if k % 7 else f"w{(h + k) % 9973}")
    return " ".join(out)


class FeedServer:
    def __init__(self, feeds: int = 10, entries: int = 30, *, conditional: bool = True) -> None:
        self.feeds = feeds
        self.entries = entries
        self.conditional = conditional
        self.round = 0  # bump to publish one new entry per feed
        self.feed_rounds: dict[int, int] = {}  # per-feed extra rounds (load benchmark)
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.delay: dict[str, float] = {}
        # Requests for these paths get no answer until `release` is set (or the server
        # closes): "in flight" for as long as a test needs, whatever the machine's speed.
        self.held: set[str] = set()
        self.release = threading.Event()
        server = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                server._handle(self)

            def do_HEAD(self) -> None:  # noqa: N802
                server._handle(self, head=True)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # ----------------------------------------------------------------------- control

    def __enter__(self) -> FeedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def base(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def route(self, path: str, *, status: int = 200, body: bytes | str = b"",
              headers: dict[str, str] | None = None, handler: Handler | None = None) -> str:
        if isinstance(body, str):
            body = body.encode()
        self.routes[path] = Route(status, body, dict(headers or {}), handler)
        return self.url(path)

    # ----------------------------------------------------------------------- content

    def feed_xml(self, n: int) -> bytes:
        items = []
        total = self.entries + self.round + self.feed_rounds.get(n, 0)
        for i in range(total - 1, max(-1, total - 1 - self.entries), -1):
            pub = BASE_TIME + timedelta(minutes=10 * i + n)
            body = article_words(n, i, 60)
            items.append(
                f"<item><title>Feed {n} story {i}: {escape(body[:40])}</title>"
                f"<link>{self.base}/article/{n}/{i}.html</link>"
                f"<guid isPermaLink='false'>feed{n}-item{i}</guid>"
                f"<pubDate>{format_datetime(pub)}</pubDate>"
                f"<description>{escape('<p>' + body + '</p>')}</description></item>"
            )
        return (
            "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
            f"<title>Local feed {n}</title><link>{self.base}/</link>"
            f"<description>test feed</description>{''.join(items)}</channel></rss>"
        ).encode()

    def article_html(self, n: int, i: int) -> bytes:
        paras = "".join(f"<p>{article_words(n, i * 10 + k, 90)}.</p>" for k in range(5))
        return (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>Feed {n} story {i}</title></head><body>"
            "<nav class='breadcrumb'><a href='/'>Home</a></nav>"
            f"<article><h1>Feed {n} story {i}</h1>{paras}</article>"
            "<footer>Copyright local test outlet</footer></body></html>"
        ).encode()

    # ----------------------------------------------------------------------- serving

    def _handle(self, h: BaseHTTPRequestHandler, head: bool = False) -> None:
        path = h.path.split("?", 1)[0]
        with self.lock:
            self.hits[path] += 1
        req = Request(h.command, h.path, {k.lower(): v for k, v in h.headers.items()})
        if path in self.held:
            self.release.wait()
        if path in self.delay:
            time.sleep(self.delay[path])
        status, headers, body = 404, {"Content-Type": "text/plain"}, b"not found"
        route = self.routes.get(path)
        if route is not None:
            if route.handler is not None:
                status, headers, body = route.handler(req)
            else:
                status, headers, body = route.status, dict(route.headers), route.body
                headers.setdefault("Content-Type", "application/rss+xml")
        elif path.startswith("/feed/") and path.endswith(".xml"):
            n = int(path[6:-4])
            body = self.feed_xml(n)
            etag = '"' + hashlib.sha1(body).hexdigest() + '"'
            modified = BASE_TIME + timedelta(
                minutes=10 * (self.entries + self.round + self.feed_rounds.get(n, 0)) + n)
            headers = {"Content-Type": "application/rss+xml; charset=utf-8", "ETag": etag,
                       "Last-Modified": format_datetime(modified, usegmt=True)}
            if self.conditional and _not_modified(req, etag, modified):
                status, body = 304, b""
            else:
                status = 200
        elif path.startswith("/article/"):
            _, _, n_s, rest = path.split("/", 3)
            body = self.article_html(int(n_s), int(rest.split(".")[0]))
            status, headers = 200, {"Content-Type": "text/html; charset=utf-8"}
        elif path == "/robots.txt":
            status, headers, body = 200, {"Content-Type": "text/plain"}, b"User-agent: *\n"
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        if "Content-Length" not in headers:
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head and status != 304:
            try:
                h.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass


def _not_modified(req: Request, etag: str, modified: datetime) -> bool:
    inm = req.headers.get("if-none-match")
    if inm is not None:
        return etag in [t.strip() for t in inm.split(",")]
    ims = req.headers.get("if-modified-since")
    if ims:
        try:
            return parsedate_to_datetime(ims) >= modified.replace(microsecond=0)
        except (TypeError, ValueError):
            return False
    return False
