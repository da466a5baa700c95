"""HTTP server over a real socket on 127.0.0.1, and the systemd unit file."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

import pytest

import aggregator.server as server_module
from aggregator.errors import AggregatorError, ServerError
from aggregator.server import FeedServer, accepts_gzip, parse_listen, route

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "aggregator.service"
PAST = 1_700_000_000  # 2023-11-14, a fixed mtime in the past

CONTENT_TYPES = {
    "all.atom": "application/atom+xml; charset=utf-8",
    "all.rss": "application/rss+xml; charset=utf-8",
    "all.json": "application/feed+json; charset=utf-8",
    "outputs.opml": "text/x-opml; charset=utf-8",
    "page.html": "text/html; charset=utf-8",
}


# --------------------------------------------------------------------------- helpers


def write(path: Path, data: bytes, mtime: float = PAST) -> None:
    """Write like publish does: temp file in the same directory, utime, atomic rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.utime(tmp, (mtime, mtime))
    os.replace(tmp, path)


def etag_of(data: bytes) -> str:
    return f'"{hashlib.sha256(data).hexdigest()[:32]}"'


class Response:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def request(
    server: FeedServer, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> Response:
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def raw(server: FeedServer, data: bytes) -> bytes:
    """Send bytes verbatim (request lines http.client refuses to build) and read to EOF."""
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    out = tmp_path / "public"
    out.mkdir()
    return out


@pytest.fixture
def server(out_dir: Path) -> Iterator[FeedServer]:
    srv = FeedServer(out_dir, "127.0.0.1:0")
    srv.start()
    yield srv
    srv.stop()


# --------------------------------------------------------------------------- pure helpers


def test_route_accepts_one_segment_and_refuses_everything_else() -> None:
    assert route("/") == ""
    assert route("/all.atom?x=1#frag") == "all.atom"
    assert route("/%D5%A5.atom") == "\u0565.atom"  # percent-encoded UTF-8 names are fine
    assert route("http://example.org/all.rss") == "all.rss"
    for bad in ["/../x", "/%2e%2e/x", "/a/b.atom", "/a%2fb.atom", "/..\\x", "/x%5cy.atom",
                "/x%00.atom", "/.hidden.atom", "x.atom", "/%ff.atom", "*"]:  # fmt: skip
        assert route(bad) is None, bad


def test_accepts_gzip_honours_q_values() -> None:
    assert accepts_gzip("gzip, deflate, br")
    assert accepts_gzip("br;q=1.0, gzip;q=0.5")
    assert accepts_gzip("*")
    assert accepts_gzip("X-GZIP")
    assert not accepts_gzip(None)
    assert not accepts_gzip("identity")
    assert not accepts_gzip("gzip;q=0")
    assert not accepts_gzip("*;q=0.5, gzip;q=0")
    assert not accepts_gzip("deflate, br")


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen(":9000") == ("", 9000)
    for bad in ["127.0.0.1", "host:http", "h:70000", ""]:
        with pytest.raises(ServerError, match="HOST:PORT"):
            parse_listen(bad)


# --------------------------------------------------------------------------- serving


@pytest.mark.parametrize("name", sorted(CONTENT_TYPES))
def test_content_types_and_common_headers(server: FeedServer, out_dir: Path, name: str) -> None:
    data = f"<x>{name} \u0535\u0580\u0587\u0561\u0576</x>\n".encode()
    write(out_dir / name, data)
    resp = request(server, f"/{name}")
    assert resp.status == 200
    assert resp.body == data
    assert resp.headers["Content-Type"] == CONTENT_TYPES[name]
    assert resp.headers["Content-Length"] == str(len(data))
    assert resp.headers["Cache-Control"] == "public, max-age=60"
    assert resp.headers["Vary"] == "Accept-Encoding"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "Python" not in resp.headers["Server"]
    csp = resp.headers.get("Content-Security-Policy")
    if name.endswith(".html"):
        assert csp is not None and "default-src 'none'" in csp
    else:
        assert csp is None


def test_etag_last_modified_and_conditional_requests(server: FeedServer, out_dir: Path) -> None:
    data = b"<feed>etag</feed>"
    write(out_dir / "all.atom", data, mtime=PAST + 0.75)
    resp = request(server, "/all.atom")
    etag = resp.headers["ETag"]
    assert etag == etag_of(data) and not etag.startswith("W/")
    assert parsedate_to_datetime(resp.headers["Last-Modified"]).timestamp() == PAST

    lm = resp.headers["Last-Modified"]
    cases: list[tuple[dict[str, str], int]] = [
        ({"If-None-Match": etag}, 304),
        ({"If-None-Match": f'"other", W/{etag}'}, 304),  # weak comparison, lists
        ({"If-None-Match": "*"}, 304),
        ({"If-None-Match": '"other"'}, 200),
        ({"If-Modified-Since": lm}, 304),
        ({"If-Modified-Since": formatdate(PAST + 3600, usegmt=True)}, 304),
        ({"If-Modified-Since": formatdate(PAST - 1, usegmt=True)}, 200),
        ({"If-Modified-Since": "not a date"}, 200),
        # If-None-Match takes precedence over a matching If-Modified-Since, both ways.
        ({"If-None-Match": '"other"', "If-Modified-Since": lm}, 200),
        ({"If-None-Match": etag, "If-Modified-Since": formatdate(PAST - 10, usegmt=True)}, 304),
    ]
    for headers, expected in cases:
        got = request(server, "/all.atom", headers)
        assert got.status == expected, headers
        if expected == 304:
            assert got.body == b""
            assert got.headers["ETag"] == etag
            assert got.headers["Last-Modified"] == lm
        else:
            assert got.body == data

    # A new version gets a new validator; the old one no longer matches.
    write(out_dir / "all.atom", b"<feed>etag v2</feed>", mtime=PAST + 60)
    again = request(server, "/all.atom", {"If-None-Match": etag})
    assert again.status == 200 and again.body == b"<feed>etag v2</feed>"
    assert again.headers["ETag"] == etag_of(b"<feed>etag v2</feed>")


def test_last_modified_never_in_the_future(server: FeedServer, out_dir: Path) -> None:
    write(out_dir / "all.rss", b"<rss/>", mtime=time.time() + 86400)
    resp = request(server, "/all.rss")
    last_modified = parsedate_to_datetime(resp.headers["Last-Modified"]).timestamp()
    assert last_modified <= time.time() + 1


def test_gzip_variant(server: FeedServer, out_dir: Path) -> None:
    data = ("<entry>Тбилиси Ереван Bakı</entry>\n" * 500).encode()
    write(out_dir / "all.json", data)
    plain = request(server, "/all.json", {"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers and plain.body == data

    zipped = request(server, "/all.json", {"Accept-Encoding": "gzip, deflate"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(zipped.body) == data
    assert len(zipped.body) < len(data) // 5
    assert zipped.headers["Content-Length"] == str(len(zipped.body))
    assert zipped.headers["ETag"] != plain.headers["ETag"]
    assert zipped.headers["ETag"].endswith('-gz"')

    # Validators are per representation.
    gz_etag = zipped.headers["ETag"]
    assert (
        request(server, "/all.json", {"Accept-Encoding": "gzip", "If-None-Match": gz_etag}).status
        == 304
    )
    assert request(server, "/all.json", {"If-None-Match": gz_etag}).status == 200
    refused = request(server, "/all.json", {"Accept-Encoding": "gzip;q=0, br"})
    assert "Content-Encoding" not in refused.headers and refused.body == data


def test_repeated_requests_read_and_compress_once(server: FeedServer, out_dir: Path) -> None:
    write(out_dir / "all.atom", b"<feed>" + b"x" * 10000 + b"</feed>")
    for _ in range(5):
        assert request(server, "/all.atom", {"Accept-Encoding": "gzip"}).status == 200
        assert request(server, "/all.atom").status == 200
    stats = server.cache_stats()
    assert stats["reads"] == 1
    assert stats["compressions"] == 1


def test_replacement_with_same_size_and_mtime_is_noticed(server: FeedServer, out_dir: Path) -> None:
    # publish sets mtime to the newest item: a corrected title can keep size and mtime.
    write(out_dir / "all.atom", b"<title>Old</title>")
    assert request(server, "/all.atom").body == b"<title>Old</title>"
    write(out_dir / "all.atom", b"<title>New</title>")
    resp = request(server, "/all.atom", {"Accept-Encoding": "gzip"})
    assert gzip.decompress(resp.body) == b"<title>New</title>"
    assert request(server, "/all.atom").body == b"<title>New</title>"


def test_head_sends_headers_without_body(server: FeedServer, out_dir: Path) -> None:
    data = b"<rss>head</rss>" * 100
    write(out_dir / "all.rss", data)
    got = request(server, "/all.rss")
    head = request(server, "/all.rss", method="HEAD")
    assert head.status == 200 and head.body == b""
    for name in ("Content-Type", "Content-Length", "ETag", "Last-Modified"):
        assert head.headers[name] == got.headers[name]
    # On the wire: the response ends right after the header block.
    wire = raw(server, b"HEAD /all.rss HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    header_block, _, rest = wire.partition(b"\r\n\r\n")
    assert header_block.startswith(b"HTTP/1.1 200") and rest == b""
    missing = raw(server, b"HEAD /nope.rss HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert missing.startswith(b"HTTP/1.1 404") and missing.endswith(b"\r\n\r\n")


def test_traversal_and_non_served_files_are_404(
    server: FeedServer, out_dir: Path, tmp_path: Path
) -> None:
    secret = b"TOP-SECRET"
    (tmp_path / "secret.atom").write_bytes(secret)
    (out_dir / "sub").mkdir()
    (out_dir / "sub" / "inner.atom").write_bytes(secret)
    (out_dir / "notes.txt").write_bytes(secret)
    (out_dir / ".hidden.atom").write_bytes(secret)
    (out_dir / "all.atom.tmp").write_bytes(secret)
    (out_dir / "dir.atom").mkdir()
    os.symlink(tmp_path / "secret.atom", out_dir / "link.atom")
    os.mkfifo(out_dir / "pipe.atom")  # opening it without O_NONBLOCK would hang
    write(out_dir / "all.atom", b"<feed/>")

    absolute = str(tmp_path / "secret.atom")
    targets = [
        "/../secret.atom",
        "/%2e%2e/secret.atom",
        "/%2E%2E%2Fsecret.atom",
        "/..%2fsecret.atom",
        "/..\\secret.atom",
        "/..%5csecret.atom",
        "/%252e%252e%252fsecret.atom",
        "/" + absolute,
        "//" + absolute.lstrip("/"),
        "/" + absolute.replace("/", "%2f"),
        "http://127.0.0.1/../secret.atom",
        "/sub/inner.atom",
        "/sub%2finner.atom",
        "/notes.txt",
        "/.hidden.atom",
        "/all.atom.tmp",
        "/all.atom%00.html",
        "/dir.atom",
        "/link.atom",
        "/pipe.atom",
    ]
    for target in targets:
        wire = raw(
            server, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        assert wire.startswith(b"HTTP/1.1 404"), (target, wire[:80])
        assert secret not in wire, target
    nul = raw(server, b"GET /all.atom\x00.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert nul.startswith(b"HTTP/1.1 404")
    # Control: the legitimate file is served by the same server.
    assert request(server, "/all.atom").body == b"<feed/>"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW"])
def test_other_methods_are_405(server: FeedServer, out_dir: Path, method: str) -> None:
    write(out_dir / "all.atom", b"<feed/>")
    resp = request(server, "/all.atom", method=method)
    assert resp.status == 405
    assert resp.headers["Allow"] == "GET, HEAD"
    assert (out_dir / "all.atom").read_bytes() == b"<feed/>"


def test_root_lists_files_when_there_is_no_index(server: FeedServer, out_dir: Path) -> None:
    write(out_dir / "all.atom", b"<feed/>")
    write(out_dir / 'a"<b>&c.rss', b"<rss/>")
    (out_dir / ".all.atom.tmp").write_bytes(b"partial")
    (out_dir / "notes.txt").write_bytes(b"notes")
    resp = request(server, "/")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "style-src 'unsafe-inline'" in csp
    page = resp.body.decode()
    assert '<a href="all.atom">all.atom</a>' in page
    assert "<b>" not in page and "a&quot;&lt;b&gt;&amp;c.rss" in page
    assert 'href="a%22%3Cb%3E%26c.rss"' in page
    assert "tmp" not in page and "notes" not in page
    # The listed link works.
    assert request(server, "/a%22%3Cb%3E%26c.rss").body == b"<rss/>"
    # Revalidation of the listing.
    assert request(server, "/", {"If-None-Match": resp.headers["ETag"]}).status == 304


def test_root_serves_index_html(server: FeedServer, out_dir: Path) -> None:
    index = b"<!DOCTYPE html><title>Feeds</title><p>published index</p>"
    write(out_dir / "index.html", index)
    resp = request(server, "/")
    assert resp.body == index
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["ETag"] == etag_of(index)
    assert request(server, "/index.html").body == index


def test_status_json(out_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def status() -> dict[str, object]:
        calls.append(1)
        return {"feeds": 12, "last_cycle": datetime(2024, 5, 1, tzinfo=UTC), "name": "Ереван"}

    with FeedServer(out_dir, "127.0.0.1:0", status_provider=status) as srv:
        first = request(srv, "/status.json")
        second = request(srv, "/status.json")
        assert first.status == 200
        assert first.headers["Content-Type"] == "application/json; charset=utf-8"
        assert first.headers["Cache-Control"] == "no-store"
        doc = json.loads(first.body)
        assert doc == {"feeds": 12, "last_cycle": "2024-05-01 00:00:00+00:00", "name": "Ереван"}
        assert second.status == 200 and len(calls) == 2  # asked afresh every time

    with FeedServer(out_dir, "127.0.0.1:0") as srv:
        assert request(srv, "/status.json").status == 404

    def broken() -> dict[str, object]:
        raise RuntimeError("database locked")

    with caplog.at_level(logging.ERROR, logger="aggregator.server"):
        with FeedServer(out_dir, "127.0.0.1:0", status_provider=broken) as srv:
            resp = request(srv, "/status.json")
    assert resp.status == 500 and b"database locked" not in resp.body
    assert any("status provider failed" in r.getMessage() for r in caplog.records)


def test_access_log_goes_to_logging_not_stderr(
    out_dir: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    write(out_dir / "all.atom", b"<feed/>")
    with caplog.at_level(logging.DEBUG, logger="aggregator.access"):
        with FeedServer(out_dir, "127.0.0.1:0") as srv:
            request(srv, "/all.atom")
            request(srv, "/missing.atom")
            raw(srv, b"GET /\x1b[31mfake\nline HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            raw(srv, b"garbage\r\n\r\n")
    # One line per request, on its own logger and below INFO: every scrape would speak.
    access = [r for r in caplog.records if r.name == "aggregator.access"]
    assert access and all(r.levelno < logging.INFO for r in access)
    lines = [r.getMessage() for r in access]
    assert any('"GET /all.atom HTTP/1.1" 200 7' in line for line in lines)
    assert any('"GET /missing.atom HTTP/1.1" 404' in line for line in lines)
    assert all("\x1b" not in line and "\n" not in line for line in lines)
    assert any("\\x1b" in line for line in lines)
    captured = capfd.readouterr()
    assert captured.err == ""


def test_atomic_replacement_never_mixes_versions(server: FeedServer, out_dir: Path) -> None:
    size = 256 * 1024
    # Same size and mtime for every version: only the file identity tells them apart.
    versions = [bytes([65 + i]) * size for i in range(4)]
    etags = {etag_of(v): v for v in versions}
    write(out_dir / "all.atom", versions[0])
    stop = threading.Event()
    seen: list[bytes] = []
    errors: list[str] = []
    written = [0]

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            write(out_dir / "all.atom", versions[n % len(versions)])
            written[0] = n
            time.sleep(0.002)

    def reader(use_gzip: bool) -> None:
        host, port = server.address
        conn = http.client.HTTPConnection(host, port, timeout=5)  # keep-alive
        headers = {"Accept-Encoding": "gzip"} if use_gzip else {}
        try:
            while not stop.is_set():
                conn.request("GET", "/all.atom", headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                if use_gzip:
                    body = gzip.decompress(body)
                    etag = resp.headers["ETag"].replace('-gz"', '"')
                else:
                    etag = resp.headers["ETag"]
                if body not in versions:
                    errors.append(f"mixed body: {len(body)} bytes, {set(body[::4096])}")
                elif etags.get(etag) != body:
                    errors.append("ETag does not describe the body")
                seen.append(body[:1])
        except Exception as exc:  # surfaced below with the other errors
            errors.append(repr(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=writer)]
    threads += [threading.Thread(target=reader, args=(i % 2 == 1,)) for i in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert not errors, errors[:5]
    assert written[0] > 10
    assert len(seen) > 20
    assert len(set(seen)) >= 2, "the readers never observed a replacement"
    final = (out_dir / "all.atom").read_bytes()
    assert request(server, "/all.atom").body == final


# --------------------------------------------------------------------------- lifecycle


def test_stop_closes_listener_and_idle_connections(out_dir: Path) -> None:
    write(out_dir / "all.atom", b"<feed/>")
    srv = FeedServer(out_dir, "127.0.0.1:0")
    srv.start()
    host, port = srv.address
    assert port != 0 and srv.url == f"http://127.0.0.1:{port}/"
    idle = socket.create_connection((host, port), timeout=5)
    idle.sendall(b"GET /all.atom HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive
    first = b""
    while not first.endswith(b"<feed/>"):  # the whole response, headers and body
        first += idle.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    srv.stop()
    # The idle keep-alive connection is closed by stop(), not after the 30 s idle timeout.
    idle.settimeout(5)
    assert idle.recv(1024) == b""
    idle.close()
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=1).close()
    srv.stop()  # idempotent


def test_connection_cap_and_idle_timeout(out_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slow or idle clients cannot pile up threads: connections are capped and time out."""
    monkeypatch.setattr(server_module, "_MAX_CONNECTIONS", 2)
    monkeypatch.setattr(server_module._Handler, "timeout", 1.0)
    write(out_dir / "all.atom", b"<feed/>")
    with FeedServer(out_dir, "127.0.0.1:0") as srv:
        held = [socket.create_connection(srv.address, timeout=5) for _ in range(2)]
        time.sleep(0.05)  # let the accept loop register both
        # Closed at once, nothing served (well before the 1 s idle timeout would close it).
        extra = socket.create_connection(srv.address, timeout=0.5)
        assert extra.recv(1024) == b""
        extra.close()
        # Idle connections are dropped after the idle timeout (not 30 s); then there is room.
        for sock in held:
            assert sock.recv(1024) == b""
            sock.close()
        time.sleep(0.05)
        assert request(srv, "/all.atom").body == b"<feed/>"


def test_start_errors(out_dir: Path) -> None:
    with FeedServer(out_dir, "127.0.0.1:0") as first:
        port = first.address[1]
        taken = FeedServer(out_dir, f"127.0.0.1:{port}")
        with pytest.raises(ServerError, match=f"127.0.0.1:{port}") as info:
            taken.start()
        assert isinstance(info.value, AggregatorError)
        with pytest.raises(ServerError, match="already started"):
            first.start()
    with pytest.raises(ServerError, match="not started"):
        _ = FeedServer(out_dir, "127.0.0.1:0").address


def test_ipv6_listen(out_dir: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support in this Python")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"cannot bind ::1 here: {exc}")
    write(out_dir / "all.atom", b"<feed/>")
    with FeedServer(out_dir, "[::1]:0") as srv:
        assert srv.url.startswith("http://[::1]:")
        assert request(srv, "/all.atom").body == b"<feed/>"


def test_missing_out_dir_is_served_empty(tmp_path: Path) -> None:
    with FeedServer(tmp_path / "not-yet", "127.0.0.1:0") as srv:
        assert request(srv, "/all.atom").status == 404
        listing = request(srv, "/")
        assert listing.status == 200 and b"No feeds published yet" in listing.body


# --------------------------------------------------------------------------- systemd unit


def unit_directives(text: str) -> dict[str, list[str]]:
    """``Section.Key`` -> every value (keys may repeat, as Environment= does)."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return found


HARDENING = {
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "NoNewPrivileges": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallFilter": "@system-service",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
    "UMask": "0027",
}


def test_unit_file_directives() -> None:
    text = UNIT.read_text()
    d = unit_directives(text)
    svc = {k.removeprefix("Service."): v for k, v in d.items() if k.startswith("Service.")}
    assert svc["Type"] == ["notify"]
    assert svc["NotifyAccess"] == ["main"]
    assert svc["WatchdogSec"] == ["120"]
    assert svc["ExecStart"] == [
        "/opt/aggregator/.venv/bin/aggregator --config /etc/aggregator/aggregator.yaml "
        "--feeds /etc/aggregator/feeds.yaml run"
    ]
    assert svc["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert svc["TimeoutStopSec"] == ["30"]
    assert svc["Restart"] == ["on-failure"]
    assert (svc.get("User") == ["aggregator"] and svc.get("Group") == ["aggregator"]) or svc.get(
        "DynamicUser"
    ) == ["yes"]
    assert svc["StateDirectory"] == ["aggregator"]
    assert "AGGREGATOR_DATABASE=/var/lib/aggregator/aggregator.db" in svc["Environment"]
    assert "AGGREGATOR_OUTPUT_DIR=/var/lib/aggregator/public" in svc["Environment"]
    for key, value in HARDENING.items():
        assert value in svc.get(key, []), f"{key}={value} missing"
    assert svc["MemoryMax"] and svc["TasksMax"]
    assert d["Install.WantedBy"] == ["multi-user.target"]

    # Every hardening directive carries a comment right above it.
    lines = text.splitlines()
    for key in HARDENING:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{key}="))
        assert lines[index - 1].startswith("#"), f"{key} has no comment above it"
    # A header explains how to install.
    assert lines[0].startswith("#") and "useradd" in text and "daemon-reload" in text


def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = UNIT.read_text().replace("/opt/aggregator/.venv/bin/aggregator", sys.executable)
    copy = tmp_path / "aggregator.service"
    copy.write_text(text)
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "Unknown key" not in result.stderr and "Failed to parse" not in result.stderr, (
        result.stderr
    )
    # The check can fail: an unknown directive is reported.
    broken = tmp_path / "broken.service"
    broken.write_text(text.replace("Type=notify", "Type=notifyy"))
    bad = subprocess.run(
        [analyze, "verify", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert "notifyy" in bad.stderr


TEMPLATES = {"worker": ROOT / "systemd" / "aggregator-worker@.service",
             "serve": ROOT / "systemd" / "aggregator-serve@.service"}


@pytest.mark.parametrize("role", sorted(TEMPLATES))
def test_template_units_for_the_roles(role: str) -> None:
    """aggregator-worker@ / aggregator-serve@: the role's command, the sandbox of
    aggregator.service line for line, the database URL from a root-owned file."""
    text = TEMPLATES[role].read_text()
    d = unit_directives(text)
    svc = {k.removeprefix("Service."): v for k, v in d.items() if k.startswith("Service.")}
    assert svc["ExecStart"] == [
        "/opt/aggregator/.venv/bin/aggregator --config /etc/aggregator/aggregator.yaml "
        f"--feeds /etc/aggregator/feeds.yaml {role}"
    ]
    assert svc["Restart"] == ["on-failure"]
    assert svc["EnvironmentFile"] == ["/etc/aggregator/database.env"]
    assert not any(e.startswith("AGGREGATOR_DATABASE=") for e in svc.get("Environment", []))
    assert svc["User"] == ["aggregator"] and svc["Group"] == ["aggregator"]
    # The same hardening as the daemon's unit: every sandbox and resource-free directive of
    # aggregator.service, with the same values.
    base = unit_directives(UNIT.read_text())
    for key, value in HARDENING.items():
        assert value in svc.get(key, []), f"{key}={value} missing"
    sandbox_keys = [k for k in base if k.startswith("Service.") and k.split(".", 1)[1] in (
        *HARDENING, "RemoveIPC", "SystemCallErrorNumber", "AmbientCapabilities",
        "ProtectProc")]
    for key in sandbox_keys:
        assert d.get(key) == base[key], f"{key}: {d.get(key)} != {base[key]}"
    assert "network-online.target" in d["Unit.Wants"][0].split()
    after = d["Unit.After"][0].split()
    assert "network-online.target" in after and "postgresql.service" in after
    # postgresql.service is an ordering only: the database may be on another machine.
    assert "postgresql.service" not in " ".join(d.get("Unit.Wants", []) + d.get(
        "Unit.Requires", []))
    stop = int(svc["TimeoutStopSec"][0])
    if role == "worker":
        assert stop > 30  # the worker's ~30 s drain bound plus a margin
    else:
        assert "AGGREGATOR_LISTEN=127.0.0.1:%i" in svc["Environment"]
    assert d["Install.WantedBy"] == ["multi-user.target"]
    lines = text.splitlines()
    assert lines[0].startswith("#") and "docs/deploy.md" in text


@pytest.mark.parametrize("role", sorted(TEMPLATES))
def test_template_units_pass_systemd_analyze_verify(role: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = TEMPLATES[role].read_text().replace("/opt/aggregator/.venv/bin/aggregator",
                                               sys.executable)
    copy = tmp_path / f"aggregator-{role}@8080.service"  # an instance of the template
    copy.write_text(text)
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Unknown key" not in result.stderr and "Failed to parse" not in result.stderr, (
        result.stderr
    )
    broken = tmp_path / f"aggregator-{role}@1.service"
    kind = re.search(r"^Type=(\w+)$", text, re.M)
    assert kind is not None
    broken.write_text(text.replace(kind.group(0), f"Type={kind.group(1)}x"))
    bad = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True,
                         timeout=60)
    assert f"{kind.group(1)}x" in bad.stderr


MDWE_PROBE = r"""
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN (Linux >= 6.3)
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("W+X mapping allowed: the restriction is not in force")
except OSError:
    pass
import numpy, lxml.html, nh3, sqlite3, charset_normalizer, trafilatura
a = numpy.arange(10000, dtype=float).reshape(100, 100)
assert float((a @ a.T).sum()) > 0
assert lxml.html.fromstring("<p>a<b>b</b></p>").text_content() == "ab"
assert nh3.clean("<script>x</script><b>y</b>") == "<b>y</b>"
sqlite3.connect(":memory:").execute("create virtual table t using fts5(x)")
assert charset_normalizer.from_bytes("Привет, мир! Как дела?".encode("cp1251")).best()
page = "<html><body><article>" + "<p>Officials in Yerevan and Baku met on Tuesday.</p>" * 20
assert "Yerevan" in (trafilatura.extract(page + "</article></body></html>") or "")
assert ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 7)() == 7
print("ok")
"""


def test_memory_deny_write_execute_is_safe_for_the_stack() -> None:
    """The libraries the daemon loads run with W+X mappings refused (as MemoryDenyWriteExecute)."""
    result = subprocess.run(
        [sys.executable, "-c", MDWE_PROBE], capture_output=True, text=True, timeout=120
    )
    if result.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
