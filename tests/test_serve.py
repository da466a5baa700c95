"""`aggregator serve` on PostgreSQL: publish stores the documents in the database, and serve
nodes on any machine give the same bytes, ETags and Last-Modified without a shared disk
(here: two serve processes with different working and output directories). Also /readyz
while the database does not answer, `check` refusing PostgreSQL without base_url, and
`serve` on SQLite serving output_dir's files. Real subprocesses, a real PostgreSQL
(conftest.postgres_url: skipped with one line when none answers)."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator.store import open_storage

from .feedserver import FeedServer
from .util import cli, env_for, free_port, write_feeds

RSS = {"Content-Type": "application/rss+xml; charset=utf-8"}
BASE_URL = "https://news.example/feeds/"
OUTPUTS = "outputs:\n  - name: short\n    limit: 2\n    archive_pages: 3\n"
TOPICS = [
    "Parliament passes the budget after a long night of debate",
    "Storm closes mountain roads across the northern provinces",
    "Central bank holds interest rates steady for the third month",
    "National football team wins the regional championship final",
    "Archaeologists uncover a medieval monastery beneath a vineyard",
    "New railway line links the capital with the southern border",
    "Hospital opens a children's wing funded by local donors",
]


def feed(n: int) -> str:
    items = "".join(
        f"<item><guid isPermaLink='false'>g{i}</guid><title>{TOPICS[i]}</title>"
        f"<link>https://example.org/news/{i}</link>"
        f"<pubDate>Tue, {10 + i:02d} Nov 2026 10:00:00 GMT</pubDate>"
        f"<description>{TOPICS[i]}. Report number {i} with its own words.</description></item>"
        for i in range(n))
    return ("<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
            f"<title>Wire</title><link>https://example.org/</link>{items}</channel></rss>")


def get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class Serve:
    """One `aggregator serve` process in a directory of its own."""

    def __init__(self, tmp: Path, feeds: Path, database: str, **env: str) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = tmp / "serve.log"
        environment = env_for(tmp, AGGREGATOR_DATABASE=database,
                              AGGREGATOR_LISTEN=f"127.0.0.1:{self.port}",
                              AGGREGATOR_BASE_URL=BASE_URL, **env)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "aggregator.cli", "--feeds", str(feeds), "serve"],
                env=environment, cwd=tmp, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if get(self.url("healthz"))[0] == 200:
                    return
            except OSError:
                pass
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.1)
        raise AssertionError(f"serve did not start: {self.log.read_text()}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@pytest.fixture
def nodes() -> Iterator[list[Serve]]:
    started: list[Serve] = []
    yield started
    for node in started:
        node.stop()


def update(tmp: Path, feeds: Path, database: str) -> None:
    r = cli(["update", "--all"], env_for(tmp, AGGREGATOR_DATABASE=database,
                                         AGGREGATOR_BASE_URL=BASE_URL,
                                         AGGREGATOR_FULL_TEXT="false"), feeds=feeds)
    assert r.returncode == 0, r.stderr


def served_names(database: str) -> list[str]:
    st = open_storage(database, readonly=True)
    try:
        return [d.name for d in st.document_index() if not d.name.startswith(".")]
    finally:
        st.close()


def test_two_serve_nodes_give_the_same_bytes_etags_and_dates(
        tmp_path: Path, postgres_url: str, nodes: list[Serve]) -> None:
    with FeedServer(feeds=0) as s:
        s.route("/wire.xml", headers=RSS, body=feed(6))
        feeds = write_feeds(tmp_path / "feeds.yaml", [{"name": "wire",
                                                       "url": s.url("/wire.xml")}], OUTPUTS)
        update(tmp_path / "publisher", feeds, postgres_url)
        # Nothing was written to the publisher's output directory: the documents are stored.
        assert not (tmp_path / "publisher" / "public").exists()
        names = served_names(postgres_url)
        # Publishing again with nothing new stores nothing: the same bytes, no new dates.
        again = cli(["publish"], env_for(tmp_path / "publisher",
                                         AGGREGATOR_DATABASE=postgres_url,
                                         AGGREGATOR_BASE_URL=BASE_URL), feeds=feeds)
        assert again.returncode == 0 and "0 documents written to the database" in again.stdout, \
            again.stdout + again.stderr
        assert {"index.html", "outputs.opml", "short.atom", "short-archive-1.atom"} <= set(
            names), names
        nodes += [Serve(tmp_path / "a", feeds, postgres_url),
                  Serve(tmp_path / "b", feeds, postgres_url)]
        a, b = nodes
        for name in ["", *names]:
            ra, rb = get(a.url(name)), get(b.url(name))
            assert ra[0] == rb[0] == 200, (name, ra[0], rb[0])
            assert ra[2] == rb[2] and ra[2], name
            for header in ("ETag", "Last-Modified", "Content-Type"):
                assert ra[1][header] == rb[1][header], (name, header)
            assert BASE_URL.encode() in ra[2] or name == "", name
            # Revalidation: 304 on either node with the other's ETag.
            assert get(b.url(name), **{"If-None-Match": ra[1]["ETag"]})[0] == 304
            ga = get(a.url(name), **{"Accept-Encoding": "gzip"})
            gb = get(b.url(name), **{"Accept-Encoding": "gzip"})
            assert ga[2] == gb[2] and gzip.decompress(ga[2]) == ra[2], name
            assert ga[1]["ETag"] == gb[1]["ETag"] == ra[1]["ETag"][:-1] + '-gz"'
        # Nothing served from the nodes' own directories, and no dot file (a manifest).
        assert not (tmp_path / "a" / "public").exists()
        assert get(a.url(".short.archive.json"))[0] == 404
        status = get(a.url("status.json"))
        assert status[0] == 200 and b'"role": "serve"' in status[2]
        assert get(a.url("readyz"))[0] == 200
        metrics = get(b.url("metrics"))
        assert metrics[0] == 200 and b"aggregator_" in metrics[2]

        # A new publish: both nodes serve it (each revalidates within a second or so).
        before = get(a.url("short.atom"))[1]["ETag"]
        s.route("/wire.xml", headers=RSS, body=feed(7))
        update(tmp_path / "publisher", feeds, postgres_url)
        deadline = time.monotonic() + 30
        seen: dict[str, bytes] = {}
        while time.monotonic() < deadline and len(seen) < 2:
            for node in (a, b):
                code, headers, body = get(node.url("short.atom"))
                if code == 200 and headers["ETag"] != before:
                    seen[node.url("")] = body
            time.sleep(0.2)
        assert len(seen) == 2 and len(set(seen.values())) == 1
        assert TOPICS[6].encode() in next(iter(seen.values()))
    assert [node.stop() for node in nodes] == [0, 0]  # SIGTERM: a clean stop


def test_serve_starts_without_its_database_and_reports_503(
        tmp_path: Path, postgres_server: str, nodes: list[Serve]) -> None:
    feeds = write_feeds(tmp_path / "feeds.yaml", [])
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/news"
    node = Serve(tmp_path / "a", feeds, closed)
    nodes.append(node)
    code, _, body = get(node.url("readyz"))
    assert code == 503 and b'"database"' in body and b"connection refused" in body, body
    assert get(node.url("healthz"))[0] == 200
    assert get(node.url("all.atom"))[0] == 503


def test_check_requires_base_url_with_postgresql(tmp_path: Path, postgres_url: str) -> None:
    feeds = write_feeds(tmp_path / "feeds.yaml", [])
    env = env_for(tmp_path, AGGREGATOR_DATABASE=postgres_url)
    env.pop("AGGREGATOR_BASE_URL", None)
    r = cli(["migrate"], env, feeds=feeds)
    assert r.returncode == 0, r.stderr
    r = cli(["check"], env, feeds=feeds)
    assert r.returncode == 2
    assert "base_url is required" in r.stdout and "every node must publish the same links" \
        in r.stdout, r.stdout
    assert r.stdout.startswith("$AGGREGATOR_DATABASE:1:1: base_url is required"), r.stdout
    for command in ("run", "serve"):
        r = cli([command], env, feeds=feeds, timeout=60)
        assert r.returncode == 2 and "base_url is required" in r.stderr, (command, r.stderr)
    # Set in the settings file: named with its line.
    settings = tmp_path / "aggregator.yaml"
    settings.write_text(f"log_level: INFO\ndatabase: {postgres_url}\n", encoding="utf-8")
    file_env = {k: v for k, v in env.items() if k != "AGGREGATOR_DATABASE"}
    r = cli(["check"], file_env, feeds=feeds, config=settings)
    assert r.returncode == 2 and r.stdout.startswith(f"{settings}:2:"), r.stdout
    r = cli(["check"], {**env, "AGGREGATOR_BASE_URL": BASE_URL}, feeds=feeds)
    assert r.returncode == 0, r.stdout + r.stderr
    # SQLite needs none: one node publishes its own links.
    r = cli(["check"], {**env, "AGGREGATOR_DATABASE": str(tmp_path / "x.db")}, feeds=feeds)
    assert r.returncode == 0, r.stdout + r.stderr


def test_serve_on_sqlite_serves_output_dir_read_only(tmp_path: Path, nodes: list[Serve]
                                                     ) -> None:
    with FeedServer(feeds=0) as s:
        s.route("/wire.xml", headers=RSS, body=feed(3))
        feeds = write_feeds(tmp_path / "feeds.yaml", [{"name": "wire",
                                                       "url": s.url("/wire.xml")}])
        db = str(tmp_path / "agg.db")
        update(tmp_path, feeds, db)
    public = tmp_path / "public"
    before = {p.name: p.read_bytes() for p in public.iterdir()}
    node = Serve(tmp_path, feeds, db)  # the same output_dir (env_for: tmp/public)
    nodes.append(node)
    code, _, body = get(node.url("all.atom"))
    assert code == 200 and body == before["all.atom"]
    assert get(node.url("readyz"))[0] == 200
    node.proc.send_signal(signal.SIGHUP)  # reloads, keeps serving
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "configuration reloaded" not in node.log.read_text():
        time.sleep(0.1)
    assert "configuration reloaded" in node.log.read_text()
    assert get(node.url("all.atom"))[2] == before["all.atom"]
    assert node.stop() == 0
    assert {p.name: p.read_bytes() for p in public.iterdir()} == before
    assert os.listdir(public)


def test_a_serve_node_whose_database_goes_away_serves_its_cache_and_is_not_ready(
        tmp_path: Path, postgres_server: str, postgres_url: str, nodes: list[Serve]) -> None:
    from aggregator.store.postgres import drop_database

    with FeedServer(feeds=0) as s:
        s.route("/wire.xml", headers=RSS, body=feed(2))
        feeds = write_feeds(tmp_path / "feeds.yaml", [{"name": "wire",
                                                       "url": s.url("/wire.xml")}])
        update(tmp_path / "publisher", feeds, postgres_url)
    node = Serve(tmp_path / "a", feeds, postgres_url)
    nodes.append(node)
    code, headers, body = get(node.url("all.atom"))
    assert code == 200 and get(node.url("readyz"))[0] == 200
    drop_database(postgres_server, postgres_url.rsplit("/", 1)[1])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and get(node.url("readyz"))[0] != 503:
        time.sleep(0.2)
    assert get(node.url("readyz"))[0] == 503
    # What it had read is served on, with the same validators; what it never read cannot be.
    again = get(node.url("all.atom"))
    assert again[0] == 200 and again[2] == body and again[1]["ETag"] == headers["ETag"]
    assert get(node.url("all.json"))[0] == 503
    # One line for the outage, not a traceback per request.
    log = node.log.read_text()
    assert "Traceback" not in log and log.count("database does not answer") == 1, log


def test_run_on_postgresql_serves_what_it_stored_in_the_database(
        tmp_path: Path, postgres_url: str) -> None:
    with FeedServer(feeds=0) as s:
        s.route("/wire.xml", headers=RSS, body=feed(3))
        feeds = write_feeds(tmp_path / "feeds.yaml", [{"name": "wire",
                                                       "url": s.url("/wire.xml")}])
        port = free_port()
        env = env_for(tmp_path, AGGREGATOR_DATABASE=postgres_url,
                      AGGREGATOR_LISTEN=f"127.0.0.1:{port}", AGGREGATOR_BASE_URL=BASE_URL,
                      AGGREGATOR_FULL_TEXT="false")
        log = tmp_path / "run.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "aggregator.cli", "--feeds", str(feeds), "run"],
                env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            body = b""
            while time.monotonic() < deadline and TOPICS[2].encode() not in body:
                try:
                    code, _, body = get(f"http://127.0.0.1:{port}/all.atom")
                except OSError:
                    pass
                time.sleep(0.3)
            assert TOPICS[2].encode() in body, log.read_text()
            st = open_storage(postgres_url, readonly=True)
            try:
                stored = st.document("all.atom")
            finally:
                st.close()
            assert stored is not None and stored.body == body
            assert not (tmp_path / "public").exists()  # nothing on this machine's disk
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log.read_text()
