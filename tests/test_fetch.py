"""Fetcher against real local servers: pytest-httpserver for well-behaved HTTP, a raw socket
server for misbehaving peers (dripping, stalling, endless, bombs)."""

from __future__ import annotations

import gzip
import http.server
import shutil
import socket
import ssl
import subprocess
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from email.utils import formatdate

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

import aggregator.fetch as fetch_module
from aggregator.errors import BlockedAddressError, FetchError
from aggregator.fetch import Fetcher, check_url
from aggregator.models import FetchRequest, Settings

from .util import RawServer, serve_http

LOCAL = Settings(
    allow_private_hosts=("127.0.0.1",),
    per_host_delay=0.0,
    per_host_concurrency=4,
    fetch_deadline=5.0,
    connect_timeout=2.0,
    read_timeout=5.0,
    max_redirects=3,
    retry_after_max=600.0,
    user_agent="aggregator-test/1.0 (+https://example.org/bot)",
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def _module_server() -> Iterator[HTTPServer]:
    srv = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    srv.start()
    yield srv
    srv.stop()  # takes werkzeug's 0.5 s poll interval: once per module, not per test


@pytest.fixture
def server(_module_server: HTTPServer) -> Iterator[HTTPServer]:
    _module_server.clear()
    yield _module_server
    _module_server.clear()


@pytest.fixture
def make_fetcher() -> Iterator[Callable[..., Fetcher]]:
    made: list[Fetcher] = []

    def make(**overrides: object) -> Fetcher:
        fetcher = Fetcher(replace(LOCAL, **overrides))  # type: ignore[arg-type]
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        fetcher.close()


def head(status: str = "200 OK", **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Connection: close"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def not_found(srv: RawServer, conn: socket.socket) -> None:
    srv.send(conn, head("404 Not Found", Content_Length="0"))


def fails(fetcher: Fetcher, req: FetchRequest) -> tuple[FetchError, float]:
    start = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetcher.fetch(req)
    return info.value, time.monotonic() - start


# --------------------------------------------------------------------------- basics


def test_conditional_get_round_trip(
    server: HTTPServer, make_fetcher: Callable[..., Fetcher]
) -> None:
    def handler(request: Request) -> Response:
        if request.headers.get("If-None-Match") == '"v1"':
            return Response(status=304, headers={"ETag": '"v1"'})
        return Response(
            b"<rss/>",
            headers={
                "Content-Type": 'Application/RSS+XML; charset="Windows-1251"',
                "ETag": '"v1"',
                "Last-Modified": "Tue, 01 Oct 2024 10:00:00 GMT",
                "Cache-Control": "public, max-age=300",
            },
        )

    server.expect_request("/feed").respond_with_handler(handler)
    fetcher = make_fetcher()
    first = fetcher.fetch(FetchRequest(server.url_for("/feed")))
    assert (first.status, first.body, first.not_modified) == (200, b"<rss/>", False)
    assert first.content_type == "application/rss+xml"
    assert first.charset == "windows-1251"
    assert first.etag == '"v1"'
    assert first.last_modified == "Tue, 01 Oct 2024 10:00:00 GMT"
    assert first.max_age == 300.0
    assert first.header("cache-control") == "public, max-age=300"

    second = fetcher.fetch(
        FetchRequest(server.url_for("/feed"), etag=first.etag, last_modified=first.last_modified)
    )
    assert (second.status, second.not_modified, second.body) == (304, True, b"")
    assert second.etag == '"v1"'
    sent = server.log[-1][0]
    assert sent.headers["If-None-Match"] == '"v1"'
    assert sent.headers["If-Modified-Since"] == "Tue, 01 Oct 2024 10:00:00 GMT"


def test_user_agent_and_accept_suit_the_kind(
    server: HTTPServer, make_fetcher: Callable[..., Fetcher]
) -> None:
    server.expect_request("/robots.txt").respond_with_data("", status=404)
    server.expect_request("/x").respond_with_data("<html></html>", content_type="text/html")
    fetcher = make_fetcher()
    fetcher.fetch(FetchRequest(server.url_for("/x"), kind="feed"))
    fetcher.fetch(FetchRequest(server.url_for("/x"), kind="page"))
    feed_req, page_req = (r for r, _ in server.log if r.path == "/x")
    assert feed_req.headers["User-Agent"] == LOCAL.user_agent
    assert "application/rss+xml" in feed_req.headers["Accept"]
    assert "application/atom+xml" in feed_req.headers["Accept"]
    assert "text/html" not in feed_req.headers["Accept"]
    assert page_req.headers["Accept"].startswith("text/html")
    assert "gzip" in feed_req.headers["Accept-Encoding"]


@pytest.mark.parametrize(
    "encoding, encode",
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as some servers send
    ],
)
def test_compressed_bodies_are_decoded(
    server: HTTPServer,
    make_fetcher: Callable[..., Fetcher],
    encoding: str,
    encode: Callable[[bytes], bytes],
) -> None:
    text = "Ереван, Тбилиси, Bakı — ".encode() * 500
    server.expect_request("/feed").respond_with_data(
        encode(text), headers={"Content-Encoding": encoding}, content_type="application/rss+xml"
    )
    result = make_fetcher().fetch(FetchRequest(server.url_for("/feed")))
    assert result.body == text


def test_multi_member_gzip_is_decoded_whole(
    server: HTTPServer, make_fetcher: Callable[..., Fetcher]
) -> None:
    server.expect_request("/feed").respond_with_data(
        gzip.compress(b"first ") + gzip.compress(b"second"), headers={"Content-Encoding": "gzip"}
    )
    assert make_fetcher().fetch(FetchRequest(server.url_for("/feed"))).body == b"first second"


@pytest.mark.parametrize(
    "body",
    [b"this is not gzip at all", gzip.compress(b"x" * 5000)[:-30]],
    ids=["garbage", "truncated"],
)
def test_undecodable_gzip_is_a_decode_error(
    server: HTTPServer, make_fetcher: Callable[..., Fetcher], body: bytes
) -> None:
    server.expect_request("/feed").respond_with_data(body, headers={"Content-Encoding": "gzip"})
    error, _ = fails(make_fetcher(), FetchRequest(server.url_for("/feed")))
    assert error.kind == "decode"
    assert server.url_for("/feed") in str(error)


# --------------------------------------------------------------------------- size limits


def test_huge_content_length_refused_without_reading(
    raw: Callable[..., RawServer], make_fetcher: Callable[..., Fetcher]
) -> None:
    def handler(srv: RawServer, conn: socket.socket, path: str) -> None:
        srv.send(conn, head(Content_Type="application/rss+xml", Content_Length="2147483648"))
        srv.stop.wait(10)  # a body read would block here until the deadline

    srv = raw(handler)
    error, _ = fails(make_fetcher(), FetchRequest(srv.url("/feed"), max_bytes=1 << 20))
    assert error.kind == "too_large"
    assert "2147483648" in str(error)
    # No body ever comes: a fetcher that tried to read one would end in "deadline".


def test_endless_body_stops_at_the_cap(
    raw: Callable[..., RawServer], make_fetcher: Callable[..., Fetcher]
) -> None:
    def handler(srv: RawServer, conn: socket.socket, path: str) -> None:
        srv.send(conn, head(Content_Type="application/rss+xml"))  # no length: until close
        while not srv.stop.is_set():
            srv.send(conn, b"<item>spam</item>" * 4096)

    srv = raw(handler)
    error, _ = fails(make_fetcher(), FetchRequest(srv.url("/feed"), max_bytes=256 * 1024))
    assert error.kind == "too_large"  # the body never ends: only the cap can end the fetch


def test_gzip_bomb_stops_at_the_cap_with_bounded_memory(
    raw: Callable[..., RawServer], make_fetcher: Callable[..., Fetcher]
) -> None:
    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)  # ~64 KiB on the wire

    def handler(srv: RawServer, conn: socket.socket, path: str) -> None:
        srv.send(conn, head(Content_Encoding="gzip", Content_Length=str(len(bomb))) + bomb)

    srv = raw(handler)
    fetcher = make_fetcher()
    tracemalloc.start()
    try:
        error, _ = fails(fetcher, FetchRequest(srv.url("/feed"), max_bytes=1 << 20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.kind == "too_large"
    assert peak < 12 << 20, f"decoding peaked at {peak >> 20} MiB for a 1 MiB cap"


def test_body_exactly_at_the_cap_is_accepted(
    server: HTTPServer, make_fetcher: Callable[..., Fetcher]
) -> None:
    server.expect_request("/exact").respond_with_data(
        gzip.compress(b"a" * 1000), headers={"Content-Encoding": "gzip"}
    )
    server.expect_request("/over").respond_with_data(
        gzip.compress(b"a" * 1001), headers={"Content-Encoding": "gzip"}
    )
    fetcher = make_fetcher()
    assert len(fetcher.fetch(FetchRequest(server.url_for("/exact"), max_bytes=1000)).body) == 1000
    error, _ = fails(fetcher, FetchRequest(server.url_for("/over"), max_bytes=1000))
    assert error.kind == "too_large"


# --------------------------------------------------------------------------- time limits


def test_dripping_body_is_cut_at_the_deadline(
    raw: Callable[..., RawServer], make_fetcher: Callable[..., Fetcher]
) -> None:
    def handler(srv: RawServer, conn: socket.socket, path: str) -> None:
        srv.send(conn, head(Content_Type="application/rss+xml", Content_Length="100"))
        while not srv.stop.wait(1.0):
            srv.send(conn, b"x")  # every byte arrives well within the read timeout

    srv = raw(handler)
    fetcher = make_fetcher(fetch_deadline=2.0, read_timeout=30.0)
    error, elapsed = fails(fetcher, FetchRequest(srv.url("/feed")))
    # The body never completes and the read timeout is far: only the deadline ends it.
    assert error.kind == "deadline"
    assert elapsed >= 1.8  # not before it (a lower bound: a busy machine only adds time)


def test_headers_that_never_finish_are_cut_at_the_deadline(
    raw: Callable[..., RawServer], make_fetcher: Callable[..., Fetcher]
) -> None:
    def handler(srv: RawServer, conn: socket.socket, path: str) -> None:
        srv.send(conn, b"HTTP/1.1 200 OK\r\n")
        n = 0
        while not srv.stop.wait(0.5):
            n += 1
            srv.send(conn, f"X-Drip-{n}: still coming\r\n".encode())

    srv = raw(handler)
    fetcher = make_fetcher(fetch_deadline=2.0, read_timeout=30.0)
    error, elapsed = fails(fetcher, FetchRequest(srv.url("/feed")))
    # The body never completes and the read timeout is far: only the deadline ends it.
    assert error.kind == "deadline"
    assert elapsed >= 1.8  # not before it (a lower bound: a busy machine only adds time)


def test_silent_server_read_timeout_and_deadline(
    raw: Callable[..., RawServer], make_fetcher: Callable[..., Fetcher]
) -> None:
    def handler(srv: RawServer, conn: socket.socket, path: str) -> None:
        srv.stop.wait(10)

    srv = raw(handler)
    # The server never answers: the kind tells which limit ended each fetch (lower bounds
    # only: a busy machine only adds time).
    error, elapsed = fails(make_fetcher(read_timeout=0.5), FetchRequest(srv.url("/a")))
    assert error.kind == "timeout"
    assert elapsed >= 0.4
    error, elapsed = fails(
        make_fetcher(read_timeout=30.0, fetch_deadline=1.0), FetchRequest(srv.url("/b"))
    )
    assert error.kind == "deadline"
    assert elapsed >= 0.9


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A throw-away self-signed certificate for 127.0.0.1 (cert path, key path)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_https_through_guarded_connections(
    raw: Callable[..., RawServer],
    make_fetcher: Callable[..., Fetcher],
    certificate: tuple[str, str],
) -> None:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(*certificate)

    def handler(srv: RawServer, conn: socket.socket, path: str) -> None:
        if path == "/feed":
            body = gzip.compress(b"<rss>secure</rss>")
            srv.send(conn, head(Content_Encoding="gzip", Content_Length=str(len(body))) + body)
            return
        srv.send(conn, head(Content_Length="100"))
        while not srv.stop.wait(0.5):
            srv.send(conn, b"x")

    srv = raw(handler, tls)
    untrusting = make_fetcher()
    error, _ = fails(untrusting, FetchRequest(srv.url("/feed")))
    assert error.kind == "connect"
    assert "TLS" in str(error)

    fetcher = make_fetcher(fetch_deadline=1.5, read_timeout=30.0)
    fetcher._session.verify = certificate[0]  # trust the test certificate (no setting for it)
    assert fetcher.fetch(FetchRequest(srv.url("/feed"))).body == b"<rss>secure</rss>"
    error, elapsed = fails(fetcher, FetchRequest(srv.url("/drip")))
    assert error.kind == "deadline"  # the drip never ends and the read timeout is far
    assert elapsed >= 1.4


# --------------------------------------------------------------------------- redirects


def chain(server: HTTPServer, hops: list[int], final: str = "/end") -> str:
    """Serve /r0 -> /r1 -> ... -> final with the given redirect statuses; return first URL."""
    for i, status in enumerate(hops):
        target = f"/r{i + 1}" if i + 1 < len(hops) else final
        server.expect_request(f"/r{i}").respond_with_data(
            "", status=status, headers={"Location": target}
        )
    server.expect_request(final).respond_with_data("<rss/>", content_type="application/rss+xml")
    return server.url_for("/r0")


def test_redirect_chain_of_exactly_max_hops(
    server: HTTPServer, make_fetcher: Callable[..., Fetcher]
) -> None:
    url = chain(server, [302, 307, 303])  # max_redirects=3
    result = make_fetcher().fetch(FetchRequest(url))
    assert result.url == url
    assert result.final_url == server.url_for("/end")
    assert result.body == b"<rss/>"
    assert result.permanent_url is None  # temporary hops are followed, not recorded


def test_one_redirect_too_many(server: HTTPServer, make_fetcher: Callable[..., Fetcher]) -> None:
    url = chain(server, [301, 301, 301, 301])
    error, _ = fails(make_fetcher(), FetchRequest(url))
    assert error.kind == "redirects"
    assert "/end" not in [r.path for r, _ in server.log]


def test_redirect_loop(server: HTTPServer, make_fetcher: Callable[..., Fetcher]) -> None:
    server.expect_request("/a").respond_with_data("", status=302, headers={"Location": "/b"})
    server.expect_request("/b").respond_with_data("", status=302, headers={"Location": "/a#frag"})
    error, _ = fails(make_fetcher(max_redirects=10), FetchRequest(server.url_for("/a")))
    assert error.kind == "redirect_loop"
    assert len(server.log) == 2


def test_cookie_setting_self_redirect_is_not_a_loop(
    server: HTTPServer, make_fetcher: Callable[..., Fetcher]
) -> None:
    def handler(request: Request) -> Response:
        if request.cookies.get("seen") == "1":
            return Response(b"<rss/>")
        return Response(status=302, headers={"Location": "/feed", "Set-Cookie": "seen=1; Path=/"})

    server.expect_request("/feed").respond_with_handler(handler)
    assert make_fetcher().fetch(FetchRequest(server.url_for("/feed"))).body == b"<rss/>"


@pytest.mark.parametrize(
    "hops, permanent",
    [([301], True), ([308, 301], True), ([301, 302], False), ([307, 308], False)],
)
def test_permanent_url_only_when_every_hop_was_permanent(
    server: HTTPServer, make_fetcher: Callable[..., Fetcher], hops: list[int], permanent: bool
) -> None:
    url = chain(server, hops)
    result = make_fetcher().fetch(FetchRequest(url))
    assert result.final_url == server.url_for("/end")
    assert result.permanent_url == (server.url_for("/end") if permanent else None)


def test_redirect_to_a_utf8_location(
    raw: Callable[..., RawServer], make_fetcher: Callable[..., Fetcher]
) -> None:
    def handler(srv: RawServer, conn: socket.socket, path: str) -> None:
        if path == "/start":
            srv.send(
                conn,
                head("301 Moved", Content_Length="0").replace(
                    b"\r\n\r\n", "\r\nLocation: /новости/1\r\n\r\n".encode()
                ),
            )
        else:
            srv.send(conn, head(Content_Length="6") + b"<rss/>")

    srv = raw(handler)
    result = make_fetcher().fetch(FetchRequest(srv.url("/start")))
    assert srv.paths() == ["/start", "/%D0%BD%D0%BE%D0%B2%D0%BE%D1%81%D1%82%D0%B8/1"]
    assert result.permanent_url == result.final_url
    assert result.final_url.endswith("/новости/1")


def test_redirect_to_file_scheme_is_blocked(
    server: HTTPServer, make_fetcher: Callable[..., Fetcher]
) -> None:
    server.expect_request("/feed").respond_with_data(
        "", status=302, headers={"Location": "file:///etc/passwd"}
    )
    error, _ = fails(make_fetcher(), FetchRequest(server.url_for("/feed")))
    assert isinstance(error, BlockedAddressError)
    assert error.kind == "blocked"


@pytest.mark.parametrize(
    "location",
    [
        "/elsewhere",  # the same loopback server: allowed for the first URL only
        "http://127.0.0.1:9/",
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
    ],
)
def test_allow_private_does_not_extend_to_redirects(
    server: HTTPServer, make_fetcher: Callable[..., Fetcher], location: str
) -> None:
    server.expect_request("/feed").respond_with_data("", status=301, headers={"Location": location})
    server.expect_request("/elsewhere").respond_with_data("secret")
    fetcher = make_fetcher(allow_private_hosts=())
    error, _ = fails(fetcher, FetchRequest(server.url_for("/feed"), allow_private=True))
    assert isinstance(error, BlockedAddressError)
    assert [r.path for r, _ in server.log] == ["/feed"]


def test_allow_private_hosts_covers_redirects(
    server: HTTPServer, make_fetcher: Callable[..., Fetcher]
) -> None:
    url = chain(server, [301])
    assert (
        make_fetcher(allow_private_hosts=("127.0.0.0/8",)).fetch(FetchRequest(url)).body
        == b"<rss/>"
    )


# --------------------------------------------------------------------------- network policy

BLOCKED = [
    "http://127.0.0.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0x7f.0.0.1/",
    "http://0177.0.0.1/",
    "http://017700000001/",
    "http://127.1/",
    "http://127.0.0.1./",
    "http://0/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://[::1]/",
    "http://evil.example@127.0.0.1/",
    "http://user:pass@10.0.0.1:8080/",
    "http://127.0.0.1#@example.com/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[64:ff9b::a00:1]/",
    "http://[2002:7f00:1::]/",
    "http://[2002:c0a8:101::]/",
    "http://10.1.2.3/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://169.254.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/",
    "http://100.100.100.200/",
    "http://[fc00::1]/",
    "http://[fe80::1]/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://240.0.0.1/",
    "http://255.255.255.255/",
    "http://localhost/",
    "http://foo.localhost/",
    "http://metadata.google.internal/",
    "http://１２７.０.０.１/",  # full-width digits: the resolver would fold them
    "file:///etc/passwd",
    "ftp://example.com/feed",
    "gopher://example.com:70/",
    "javascript:alert(1)",
]


@pytest.mark.parametrize("url", BLOCKED)
def test_check_url_refuses(url: str) -> None:
    with pytest.raises(BlockedAddressError) as info:
        check_url(url)
    assert info.value.kind == "blocked"
    assert url in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/feed",
        "https://news.am/rss/",
        "http://93.184.216.34/",
        "http://[2606:2800:220:1:248:1893:25c8:1946]/",
        "http://[2002:5db8:d822::]/",  # 6to4 of a public address
        "http://[64:ff9b::5db8:d822]/",  # NAT64 of a public address
        "https://сайт.рф/новости",
        "http://example.com:8080/a b",
    ],
)
def test_check_url_allows_public(url: str) -> None:
    check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "not a url",
        "http://",
        "http:///path",
        "http://exa mple.com/",
        "http://host:99999/",
        "http://a..b/",
        "http://256.1.1.1.1/x\n",
    ],
)
def test_check_url_bad_urls(url: str) -> None:
    with pytest.raises(FetchError) as info:
        check_url(url)
    assert info.value.kind == "bad_url"


def test_check_url_allow_lists() -> None:
    check_url("http://10.1.2.3/", allow_private_hosts=("10.0.0.0/8",))
    check_url("http://intranet.example/", allow_private_hosts=("Intranet.Example",))
    check_url("http://127.0.0.1:8080/", allow_private=True)
    check_url("http://localhost/", allow_private=True)
    with pytest.raises(BlockedAddressError):
        check_url("http://192.168.0.1/", allow_private_hosts=("10.0.0.0/8",))
    # Metadata endpoints open only when listed by address, never by a range or allow_private.
    with pytest.raises(BlockedAddressError):
        check_url("http://169.254.169.254/", allow_private=True)
    with pytest.raises(BlockedAddressError):
        check_url("http://169.254.169.254/", allow_private_hosts=("169.254.0.0/16",))
    check_url("http://169.254.169.254/", allow_private_hosts=("169.254.169.254",))
    with pytest.raises(BlockedAddressError):
        check_url("http://0.0.0.0/", allow_private=True)


@pytest.mark.parametrize(
    "spelling",
    ["127.0.0.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.1", "[::ffff:127.0.0.1]"],
)
def test_fetch_refuses_ssrf_spellings_without_connecting(
    server: HTTPServer, make_fetcher: Callable[..., Fetcher], spelling: str
) -> None:
    server.expect_request("/feed").respond_with_data("secret")
    fetcher = make_fetcher(allow_private_hosts=())
    error, _ = fails(fetcher, FetchRequest(f"http://{spelling}:{server.port}/feed"))
    assert isinstance(error, BlockedAddressError)
    assert server.log == []


class KeepAliveHandler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 with persistent connections (werkzeug's test server closes every one)."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[int, str]]  # (client port, path), set per server

    def do_GET(self) -> None:
        self.seen.append((self.client_address[1], self.path))
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml")
        self.send_header("Content-Length", "6")
        self.end_headers()
        self.wfile.write(b"<rss/>")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def keepalive() -> Iterator[tuple[int, list[tuple[int, str]]]]:
    seen: list[tuple[int, str]] = []
    with serve_http(type("Handler", (KeepAliveHandler,), {"seen": seen})) as port:
        yield port, seen


def fake_dns(host: str, port: int, *args: object) -> list[tuple[object, ...]]:
    """Stand-in resolver (no DNS server can run here): news.example -> 127.0.0.1."""
    if host == "news.example":
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def test_connect_time_check_catches_dns_rebinding(
    keepalive: tuple[int, list[tuple[int, str]]],
    make_fetcher: Callable[..., Fetcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A public-looking name that resolves to loopback at connect time is refused, also on a
    pooled connection opened earlier by a request that was allowed to reach it."""
    monkeypatch.setattr(fetch_module, "_getaddrinfo", fake_dns)
    port, seen = keepalive
    url = f"http://news.example:{port}/feed"
    check_url(url)  # statically fine: only the connection can tell
    fetcher = make_fetcher(allow_private_hosts=())
    assert fetcher.fetch(FetchRequest(url, allow_private=True)).body == b"<rss/>"
    assert fetcher.fetch(FetchRequest(url, allow_private=True)).body == b"<rss/>"
    assert len({client for client, _ in seen}) == 1  # the pooled connection was reused...
    error, _ = fails(fetcher, FetchRequest(url))
    assert isinstance(error, BlockedAddressError)  # ...but not for a request without the right
    assert "127.0.0.1" in str(error)
    assert len(seen) == 2

    error, _ = fails(fetcher, FetchRequest(f"http://nowhere.example:{port}/"))
    assert error.kind == "connect"
    assert "DNS" in str(error)


def test_allow_private_hosts_by_name_opens_its_addresses(
    keepalive: tuple[int, list[tuple[int, str]]],
    make_fetcher: Callable[..., Fetcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fetch_module, "_getaddrinfo", fake_dns)
    port, seen = keepalive
    fetcher = make_fetcher(allow_private_hosts=("news.example",))
    assert fetcher.fetch(FetchRequest(f"http://news.example:{port}/feed")).status == 200
    error, _ = fails(fetcher, FetchRequest(f"http://127.0.0.1:{port}/feed"))
    assert isinstance(error, BlockedAddressError)  # the name is trusted, not its address
    assert len(seen) == 1


def test_connection_refused(make_fetcher: Callable[..., Fetcher]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    error, _ = fails(make_fetcher(), FetchRequest(f"http://127.0.0.1:{port}/feed"))
    assert error.kind == "connect"
    assert "refused" in str(error)
    assert f"127.0.0.1:{port}/feed" in str(error)


def test_bad_url_kind_from_fetch(make_fetcher: Callable[..., Fetcher]) -> None:
    error, _ = fails(make_fetcher(), FetchRequest("http://exa mple.com/feed"))
    assert error.kind == "bad_url"


# --------------------------------------------------------------------------- status codes


def test_gone_and_other_http_errors(
    server: HTTPServer, make_fetcher: Callable[..., Fetcher]
) -> None:
    server.expect_request("/gone").respond_with_data("", status=410)
    server.expect_request("/missing").respond_with_data("", status=404)
    server.expect_request("/broken").respond_with_data("", status=500)
    fetcher = make_fetcher()
    error, _ = fails(fetcher, FetchRequest(server.url_for("/gone")))
    assert (error.kind, error.status) == ("gone", 410)
    error, _ = fails(fetcher, FetchRequest(server.url_for("/missing")))
    assert (error.kind, error.status) == ("http", 404)
    error, _ = fails(fetcher, FetchRequest(server.url_for("/broken")))
    assert (error.kind, error.status) == ("http", 500)


def test_retry_after_seconds_then_fast_fail(
    server: HTTPServer, make_fetcher: Callable[..., Fetcher]
) -> None:
    server.expect_request("/feed").respond_with_data("", status=429, headers={"Retry-After": "120"})
    fetcher = make_fetcher()
    error, _ = fails(fetcher, FetchRequest(server.url_for("/feed")))
    assert (error.kind, error.status, error.retry_after) == ("rate_limited", 429, 120.0)
    left = fetcher.retry_after_for("127.0.0.1")
    assert left is not None and 118 < left <= 120
    error, _ = fails(fetcher, FetchRequest(server.url_for("/other")))
    assert error.kind == "rate_limited"
    assert error.retry_after is not None and 118 < error.retry_after <= 120
    assert len(server.log) == 1  # the second request never reached the host
    assert fetcher.retry_after_for("example.com") is None


@pytest.mark.parametrize(
    "status, value, expected",
    [
        (429, "date+300", 300.0),
        (503, "100000", 600.0),  # clamped to retry_after_max
        (503, "date+1000000", 600.0),
    ],
)
def test_retry_after_dates_and_clamping(
    server: HTTPServer,
    make_fetcher: Callable[..., Fetcher],
    status: int,
    value: str,
    expected: float,
) -> None:
    if value.startswith("date+"):  # built now, not at collection time
        value = formatdate(time.time() + float(value[5:]), usegmt=True)
    server.expect_request("/feed").respond_with_data(
        "", status=status, headers={"Retry-After": value}
    )
    fetcher = make_fetcher()
    error, _ = fails(fetcher, FetchRequest(server.url_for("/feed")))
    assert error.kind == "rate_limited"
    assert error.retry_after == pytest.approx(expected, abs=3)
    assert fetcher.retry_after_for("127.0.0.1") == pytest.approx(expected, abs=3)


def test_retry_after_in_the_past_is_zero_and_not_remembered(
    server: HTTPServer, make_fetcher: Callable[..., Fetcher]
) -> None:
    server.expect_request("/feed").respond_with_data(
        "", status=429, headers={"Retry-After": formatdate(time.time() - 3600, usegmt=True)}
    )
    fetcher = make_fetcher()
    error, _ = fails(fetcher, FetchRequest(server.url_for("/feed")))
    assert (error.kind, error.retry_after) == ("rate_limited", 0.0)
    assert fetcher.retry_after_for("127.0.0.1") is None
    fails(fetcher, FetchRequest(server.url_for("/feed")))
    assert len(server.log) == 2


def test_503_without_retry_after_is_a_plain_http_error(
    server: HTTPServer, make_fetcher: Callable[..., Fetcher]
) -> None:
    server.expect_request("/feed").respond_with_data("", status=503)
    error, _ = fails(make_fetcher(), FetchRequest(server.url_for("/feed")))
    assert (error.kind, error.status) == ("http", 503)


# --------------------------------------------------------------------------- pages


@pytest.mark.parametrize("content_type", ["application/pdf", "image/jpeg", "application/rss+xml"])
def test_page_content_type_checked_before_the_body(
    raw: Callable[..., RawServer], make_fetcher: Callable[..., Fetcher], content_type: str
) -> None:
    def handler(srv: RawServer, conn: socket.socket, path: str) -> None:
        if path == "/robots.txt":
            return not_found(srv, conn)
        srv.send(conn, head(Content_Type=content_type))
        while not srv.stop.is_set():  # endless: reading any of it would end in too_large
            srv.send(conn, b"%PDF" * 16384)

    srv = raw(handler)
    error, _ = fails(
        make_fetcher(), FetchRequest(srv.url("/doc"), kind="page", max_bytes=1 << 30)
    )
    assert error.kind == "content_type"
    assert content_type in str(error)


@pytest.mark.parametrize(
    "content_type", ["text/html; charset=windows-1251", "application/xhtml+xml", None]
)
def test_page_html_or_unlabelled_is_accepted(
    raw: Callable[..., RawServer], make_fetcher: Callable[..., Fetcher], content_type: str | None
) -> None:
    def handler(srv: RawServer, conn: socket.socket, path: str) -> None:
        if path == "/robots.txt":
            return not_found(srv, conn)
        typed = {"Content_Type": content_type} if content_type else {}
        srv.send(conn, head(Content_Length="9", **typed) + b"<p>hi</p>")

    srv = raw(handler)
    result = make_fetcher().fetch(FetchRequest(srv.url("/a"), kind="page"))
    assert result.body == b"<p>hi</p>"
    assert result.content_type == (content_type.split(";")[0] if content_type else None)
    assert srv.paths() == ["/robots.txt", "/a"]


ROBOTS = """\
User-agent: *
Disallow: /private

User-agent: aggregator-test
Disallow: /no-aggregator
"""


def test_robots_disallow_allow_and_fetched_once(
    server: HTTPServer, make_fetcher: Callable[..., Fetcher]
) -> None:
    server.expect_request("/robots.txt").respond_with_data(ROBOTS, content_type="text/plain")
    for path in ("/news/1", "/news/2", "/private/x", "/no-aggregator/y"):
        server.expect_request(path).respond_with_data("<p/>", content_type="text/html")
    fetcher = make_fetcher()
    assert fetcher.fetch(FetchRequest(server.url_for("/news/1"), kind="page")).body == b"<p/>"
    assert fetcher.fetch(FetchRequest(server.url_for("/news/2"), kind="page")).body == b"<p/>"
    # our product token has its own group, which replaces the "*" group
    error, _ = fails(fetcher, FetchRequest(server.url_for("/no-aggregator/y"), kind="page"))
    assert error.kind == "robots"
    paths = [r.path for r, _ in server.log]
    assert paths.count("/robots.txt") == 1
    assert "/no-aggregator/y" not in paths
    # feeds are not subject to robots.txt
    assert fetcher.fetch(FetchRequest(server.url_for("/no-aggregator/y"))).body == b"<p/>"


def test_robots_fetched_once_by_concurrent_pages(
    server: HTTPServer, make_fetcher: Callable[..., Fetcher]
) -> None:
    def slow_robots(request: Request) -> Response:
        time.sleep(0.3)  # every page thread arrives while the first robots fetch is running
        return Response("User-agent: *\nDisallow: /private\n", content_type="text/plain")

    server.expect_request("/robots.txt").respond_with_handler(slow_robots)
    for i in range(4):
        server.expect_request(f"/news/{i}").respond_with_data("<p/>", content_type="text/html")
    fetcher = make_fetcher()
    threads = [
        threading.Thread(
            target=fetcher.fetch, args=(FetchRequest(server.url_for(f"/news/{i}"), kind="page"),)
        )
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    paths = [r.path for r, _ in server.log]
    assert paths.count("/robots.txt") == 1
    assert sorted(p for p in paths if p.startswith("/news/")) == [f"/news/{i}" for i in range(4)]


def test_robots_cache_expires_with_max_age(
    server: HTTPServer, make_fetcher: Callable[..., Fetcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch_module, "ROBOTS_MIN_TTL", 0.3)  # the real floor is a minute
    server.expect_request("/robots.txt").respond_with_data(
        "User-agent: *\nDisallow:\n", headers={"Cache-Control": "max-age=0"}
    )
    server.expect_request("/a").respond_with_data("<p/>", content_type="text/html")
    fetcher = make_fetcher()
    fetcher.fetch(FetchRequest(server.url_for("/a"), kind="page"))
    fetcher.fetch(FetchRequest(server.url_for("/a"), kind="page"))
    assert [r.path for r, _ in server.log].count("/robots.txt") == 1
    time.sleep(0.35)
    fetcher.fetch(FetchRequest(server.url_for("/a"), kind="page"))
    assert [r.path for r, _ in server.log].count("/robots.txt") == 2


def test_robots_star_group(server: HTTPServer, make_fetcher: Callable[..., Fetcher]) -> None:
    server.expect_request("/robots.txt").respond_with_data("User-agent: *\nDisallow: /private\n")
    server.expect_request("/public").respond_with_data("<p/>", content_type="text/html")
    fetcher = make_fetcher()
    error, _ = fails(fetcher, FetchRequest(server.url_for("/private/1"), kind="page"))
    assert error.kind == "robots"
    assert fetcher.fetch(FetchRequest(server.url_for("/public"), kind="page")).status == 200


@pytest.mark.parametrize("status", [400, 401, 403, 404, 451])
def test_robots_missing_allows_all(
    server: HTTPServer, make_fetcher: Callable[..., Fetcher], status: int
) -> None:
    """RFC 9309 2.3.1.3: any 4xx ("unavailable"), 401 and 403 included, means no rules."""
    server.expect_request("/robots.txt").respond_with_data("nope", status=status)
    server.expect_request("/private/1").respond_with_data("<p/>", content_type="text/html")
    assert (
        make_fetcher().fetch(FetchRequest(server.url_for("/private/1"), kind="page")).status == 200
    )


def test_robots_server_error_disallows_for_a_while(
    server: HTTPServer, make_fetcher: Callable[..., Fetcher]
) -> None:
    """RFC 9309 2.3.1.4: a 5xx robots.txt means complete disallow for now. It is a temporary
    failure of its own kind (not "robots", which is the site's rules), with a retry time."""
    server.expect_request("/robots.txt").respond_with_data("oops", status=500)
    server.expect_request("/a").respond_with_data("<p/>", content_type="text/html")
    fetcher = make_fetcher()
    for _ in range(2):
        error, _ = fails(fetcher, FetchRequest(server.url_for("/a"), kind="page"))
        assert error.kind == "robots_unavailable"
        assert "unreachable (HTTP 500)" in str(error)
        assert error.retry_after is not None and 0 < error.retry_after <= 300
    assert [r.path for r, _ in server.log] == ["/robots.txt"]


def test_robots_unreachable_backs_off_then_recovers(
    server: HTTPServer, make_fetcher: Callable[..., Fetcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked again once the disallow expires, after twice as long per failure in a row; once
    robots.txt answers, its rules apply and the pages are fetched."""
    monkeypatch.setattr(fetch_module, "ROBOTS_UNREACHABLE_TTL", 0.1)  # really 5 minutes
    monkeypatch.setattr(fetch_module, "ROBOTS_UNREACHABLE_MAX_TTL", 0.4)
    answers = iter([500, 502, 503, 500, 200])

    def robots(request: Request) -> Response:
        status = next(answers)
        return Response("User-agent: *\nDisallow: /private\n" if status == 200 else "down",
                        status=status, content_type="text/plain")

    server.expect_request("/robots.txt").respond_with_handler(robots)
    server.expect_request("/a").respond_with_data("<p/>", content_type="text/html")
    fetcher = make_fetcher()
    for ttl in ("0.1", "0.2", "0.4", "0.4"):
        error, _ = fails(fetcher, FetchRequest(server.url_for("/a"), kind="page"))
        assert error.kind == "robots_unavailable"
        assert f"not fetched for {ttl} s" in str(error)
        time.sleep(float(ttl) + 0.05)  # let the disallow expire
    assert fetcher.fetch(FetchRequest(server.url_for("/a"), kind="page")).status == 200
    error, _ = fails(fetcher, FetchRequest(server.url_for("/private/x"), kind="page"))
    assert error.kind == "robots"
    paths = [r.path for r, _ in server.log]
    assert paths.count("/robots.txt") == 5 and paths.count("/a") == 1


def test_robots_connection_failure_is_unreachable(
    raw: Callable[..., RawServer], make_fetcher: Callable[..., Fetcher]
) -> None:
    """A robots.txt request that gets no response (the connection is dropped) is a network
    error: the host's pages are not fetched now."""

    def handler(srv: RawServer, conn: socket.socket, path: str) -> None:
        if path == "/robots.txt":
            return  # hang up without a word
        srv.send(conn, head(Content_Type="text/html", Content_Length="4") + b"<p/>")

    srv = raw(handler)
    error, _ = fails(make_fetcher(), FetchRequest(srv.url("/a"), kind="page"))
    assert error.kind == "robots_unavailable"
    assert "robots.txt unreachable (connect" in str(error)
    assert srv.paths() == ["/robots.txt"]


def test_robots_dripping_past_the_deadline_is_unreachable(
    raw: Callable[..., RawServer], make_fetcher: Callable[..., Fetcher]
) -> None:
    """A robots.txt that drips for the whole deadline is unreachable: cached as such, so the
    next pages of the host fail at once instead of each waiting out its own deadline."""

    def handler(srv: RawServer, conn: socket.socket, path: str) -> None:
        if path != "/robots.txt":
            return srv.send(conn, head(Content_Type="text/html", Content_Length="4") + b"<p/>")
        srv.send(conn, head(Content_Type="text/plain"))
        while not srv.stop.is_set():
            srv.send(conn, b"#")
            time.sleep(0.05)

    srv = raw(handler)
    fetcher = make_fetcher(fetch_deadline=1.0)
    error, _ = fails(fetcher, FetchRequest(srv.url("/a"), kind="page"))
    assert error.kind == "robots_unavailable" and "deadline" in str(error)
    error, _ = fails(fetcher, FetchRequest(srv.url("/b"), kind="page"))
    assert error.kind == "robots_unavailable"
    assert srv.paths() == ["/robots.txt"]


def test_robots_redirects_followed_five_hops(
    server: HTTPServer, make_fetcher: Callable[..., Fetcher]
) -> None:
    """RFC 9309 2.3.1.2: at least five redirects of robots.txt are followed, whatever the
    limit for feeds and pages (3 here); past five, robots.txt counts as unavailable."""
    for i in range(5):
        server.expect_request(f"/r{i}").respond_with_data(
            "", status=301, headers={"Location": f"/r{i + 1}"})
    server.expect_request("/r5").respond_with_data("User-agent: *\nDisallow: /private\n")
    server.expect_request("/robots.txt").respond_with_data(
        "", status=302, headers={"Location": "/r1"})
    server.expect_request("/private/1").respond_with_data("<p/>", content_type="text/html")
    fetcher = make_fetcher()
    error, _ = fails(fetcher, FetchRequest(server.url_for("/private/1"), kind="page"))
    assert error.kind == "robots"  # robots.txt -> r1 -> ... -> r5: five hops, rules found

    server.clear()
    for i in range(7):
        server.expect_request(f"/r{i}").respond_with_data(
            "", status=301, headers={"Location": f"/r{i + 1}"})
    server.expect_request("/robots.txt").respond_with_data(
        "", status=302, headers={"Location": "/r0"})
    server.expect_request("/private/1").respond_with_data("<p/>", content_type="text/html")
    fetcher = make_fetcher()
    assert fetcher.fetch(FetchRequest(server.url_for("/private/1"), kind="page")).status == 200
    assert "/r5" not in [r.path for r, _ in server.log]


# --------------------------------------------------------------------------- politeness


def slow_ok(hold: float) -> Callable[[RawServer, socket.socket, str], None]:
    def handler(srv: RawServer, conn: socket.socket, path: str) -> None:
        with srv.lock:
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
        try:
            srv.stop.wait(hold)
        finally:
            # Counted out before answering: once the client has the answer it may free its
            # slot and send the next request before this thread would get to run again.
            with srv.lock:
                srv.in_flight -= 1
        srv.send(conn, head(Content_Type="application/rss+xml", Content_Length="6") + b"<rss/>")

    return handler


def run_parallel(fetcher: Fetcher, urls: list[str]) -> list[object]:
    results: list[object] = [None] * len(urls)

    def work(i: int) -> None:
        try:
            results[i] = fetcher.fetch(FetchRequest(urls[i]))
        except FetchError as e:
            results[i] = e

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(urls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    return results


def test_per_host_concurrency_limit(
    raw: Callable[..., RawServer], make_fetcher: Callable[..., Fetcher]
) -> None:
    srv = raw(slow_ok(0.3))
    fetcher = make_fetcher(per_host_concurrency=2)
    results = run_parallel(fetcher, [srv.url(f"/feed{i}") for i in range(6)])
    assert all(getattr(r, "status", None) == 200 for r in results), results
    assert srv.max_in_flight == 2


def test_per_host_delay_spaces_request_starts(
    raw: Callable[..., RawServer], make_fetcher: Callable[..., Fetcher]
) -> None:
    srv = raw(slow_ok(0.0))
    fetcher = make_fetcher(per_host_concurrency=4, per_host_delay=0.3)
    results = run_parallel(fetcher, [srv.url(f"/feed{i}") for i in range(4)])
    assert all(getattr(r, "status", None) == 200 for r in results), results
    starts = sorted(t for t, _ in srv.arrivals)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.25, gaps


def test_waiting_for_a_host_slot_respects_the_deadline(
    raw: Callable[..., RawServer], make_fetcher: Callable[..., Fetcher]
) -> None:
    srv = raw(slow_ok(5.0))
    fetcher = make_fetcher(per_host_concurrency=1, fetch_deadline=1.0)
    results = run_parallel(fetcher, [srv.url("/a"), srv.url("/b")])
    # The first answer takes longer than the deadline: both end by it, and the second
    # request, which waited for the slot, never reached the host.
    assert [getattr(r, "kind", None) for r in results] == ["deadline", "deadline"]
    assert len(srv.arrivals) == 1


def test_connections_are_kept_alive_after_a_complete_body(
    make_fetcher: Callable[..., Fetcher],
) -> None:
    """A body read to its end (200 or 304) returns the connection to the pool: polling many
    feeds of one host must not open a TCP connection per request."""
    connections: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            connections.append(1)
            super().setup()

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            if self.headers.get("If-None-Match") == '"v1"':
                self.send_response(304)
                self.send_header("ETag", '"v1"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = b"<rss version='2.0'><channel><title>t</title></channel></rss>"
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("ETag", '"v1"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve_http(Handler) as port:
        fetcher = make_fetcher(per_host_concurrency=1)
        url = f"http://127.0.0.1:{port}/feed"
        for i in range(10):
            res = fetcher.fetch(FetchRequest(url, etag='"v1"' if i % 2 else None))
            assert res.status == (304 if i % 2 else 200)
        assert len(connections) == 1
