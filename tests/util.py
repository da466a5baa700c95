"""Shared test helpers: the CLI and daemon in subprocesses, builders of items and feeds, and
the small HTTP/TCP servers that tests script byte by byte (FeedServer is in feedserver.py)."""

from __future__ import annotations

import http.server
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aggregator.models import Item

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_feeds(path: Path, feeds: list[dict[str, Any]], extra: str = "") -> Path:
    lines = ["feeds:"]
    for f in feeds:
        lines.append(f"  - name: {f['name']}")
        lines.append(f"    url: {f['url']}")
        for k, v in f.items():
            if k in ("name", "url"):
                continue
            if isinstance(v, bool):
                v = "true" if v else "false"
            elif isinstance(v, list | tuple):
                v = "[" + ", ".join(str(x) for x in v) + "]"
            lines.append(f"    {k}: {v}")
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path


def env_for(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AGGREGATOR_DATABASE=str(tmp / "agg.db"),
        AGGREGATOR_OUTPUT_DIR=str(tmp / "public"),
        AGGREGATOR_LISTEN=f"127.0.0.1:{free_port()}",
        AGGREGATOR_ALLOW_PRIVATE_HOSTS="127.0.0.1",
        AGGREGATOR_PER_HOST_DELAY="0",
        AGGREGATOR_FETCH_DEADLINE="5",
        AGGREGATOR_READ_TIMEOUT="3",
        AGGREGATOR_CONNECT_TIMEOUT="2",
        AGGREGATOR_EXTRACT_PROCESSES="1",
        AGGREGATOR_LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


def cli(args: list[str], env: dict[str, str], feeds: Path | None = None,
        config: Path | None = None, timeout: float = 120, input: bytes | None = None
        ) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "aggregator.cli"]
    if config is not None:
        cmd += ["--config", str(config)]
    if feeds is not None:
        cmd += ["--feeds", str(feeds)]
    return subprocess.run(cmd + args, env=env, capture_output=True, timeout=timeout,
                          cwd=feeds.parent if feeds else None,
                          input=input.decode() if input else None, text=True)


# --------------------------------------------------------------------------- builders

ITEM_TIME = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make_item(n: int = 1, *, now: datetime = ITEM_TIME, **kw: object) -> Item:
    """Item number ``n`` of the feed "news-am", every field filled ("Story n", "Author n",
    published 100 - n hours before ``now``); ``kw`` overrides fields."""
    published = now - timedelta(hours=100 - n)
    base: dict[str, object] = dict(
        id=n,
        uid=f"tag:aggregator,2024:news-am/{n}",
        feed_name="news-am",
        feed_title="News.am",
        feed_url="https://news.example/rss",
        feed_link="https://news.example/",
        feed_language="hy",
        feed_tags=("armenia",),
        title=f"Story {n}",
        url=f"https://news.example/a/{n}",
        author=f"Author {n}",
        published=published,
        updated=published + timedelta(minutes=5),
        content_html=f"<p>Body of story {n}.</p>",
        summary=f"Summary {n}",
        text=f"Body of story {n}.",
        categories=("Politics", "Armenia"),
        language="hy",
    )
    base.update(kw)
    return Item(**base)  # type: ignore[arg-type]


def rss(title: str, items: Iterable[tuple[str, str, str, str]],
        pub_date: str = "Tue, 24 Nov 2026 10:00:00 GMT") -> str:
    """An RSS 2.0 document; ``items`` are (guid, title, link, description)."""
    body = "".join(
        f"<item><guid isPermaLink='false'>{g}</guid><title>{t}</title><link>{link}</link>"
        f"<pubDate>{pub_date}</pubDate><description>{text}</description></item>"
        for g, t, link, text in items)
    return (f"<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
            f"<title>{title}</title><link>http://example.org/</link>{body}</channel></rss>")


# --------------------------------------------------------------------------- servers


@contextmanager
def serve_http(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[int]:
    """A threading HTTP server on 127.0.0.1 with ``handler``; yields its port."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


class RawServer:
    """One-request-per-connection TCP server on 127.0.0.1 whose handler writes raw bytes."""

    def __init__(
        self,
        handler: Callable[[RawServer, socket.socket, str], None],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.handler = handler
        self.tls = tls
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.arrivals: list[tuple[float, str]] = []  # (monotonic time, path)
        self.sent = 0  # bytes the handler managed to send
        self.in_flight = 0
        self.max_in_flight = 0
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def paths(self) -> list[str]:
        with self.lock:
            return [p for _, p in self.arrivals]

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        with self.lock:
            self.sent += len(data)

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            head = b""
            try:
                if self.tls is not None:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                path = head.split(b" ", 2)[1].decode()
                with self.lock:
                    self.arrivals.append((time.monotonic(), path))
                self.handler(self, conn, path)
            except OSError:
                pass  # the client hung up: exactly what several tests provoke

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        for thread in self._threads:
            thread.join(timeout=3)
