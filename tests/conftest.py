"""Shared fixtures: the corpus in ../shared, the local feed server and the raw TCP server.
Tests never touch the internet."""

from __future__ import annotations

import os
import socket
import ssl
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .backends import BACKENDS, Backend
from .feedserver import FeedServer
from .util import RawServer

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AGGREGATOR_SHARED", ROOT.parent / "shared")).resolve()
CORPUS = SHARED / "corpus"


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.fail(f"corpus not found at {CORPUS}: ../shared must sit beside the repository")
    return CORPUS


@pytest.fixture(scope="session")
def seed_article() -> Path:
    return SHARED / "seed" / "example-article.txt"


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The CLI caches validated configurations under XDG_CACHE_HOME: never the user's own
    cache during tests (subprocesses inherit this environment)."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    os.environ.pop("CACHE_DIRECTORY", None)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[FeedServer]:
    """A FeedServer of ``FEED_SERVER = {"feeds": n, "entries": m}`` from the test module
    (4 feeds of 4 entries by default). Modules that mean another server (pytest-httpserver,
    the aggregator's own) define a fixture of this name themselves."""
    size = getattr(request.module, "FEED_SERVER", {"feeds": 4, "entries": 4})
    with FeedServer(**size) as s:
        yield s


@pytest.fixture
def raw() -> Iterator[Callable[..., RawServer]]:
    """Start RawServers (handler, optional TLS context); all are closed after the test."""
    servers: list[RawServer] = []

    def start(
        handler: Callable[[RawServer, socket.socket, str], None], tls: ssl.SSLContext | None = None
    ) -> RawServer:
        srv = RawServer(handler, tls)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.close()


# --------------------------------------------------------------------------- PostgreSQL

POSTGRES_URL = os.environ.get("AGGREGATOR_TEST_POSTGRES",
                              "postgresql://postgres@127.0.0.1:5432/test")
NO_POSTGRES = "no PostgreSQL server for the PostgreSQL tests (AGGREGATOR_TEST_POSTGRES)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Every test skipped for want of a server is reported at one place, so the summary
    shows ONE line for all of them (pytest folds skips by place and reason)."""
    outcome = yield
    report = outcome.get_result()
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple) and str(longrepr[2]).startswith(
            f"Skipped: {NO_POSTGRES}"):
        report.longrepr = (__file__, _SKIP_LINE, longrepr[2])


_SKIP_LINE = sys._getframe().f_lineno + 4  # the fixture's def (pytest shows it 1-based)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The server URL of AGGREGATOR_TEST_POSTGRES, once it answered; every PostgreSQL test
    skips with this one reason when it does not, unless AGGREGATOR_REQUIRE_POSTGRES=1
    (.ci/run), which makes that a failure."""
    from urllib.parse import urlsplit, urlunsplit

    from aggregator.errors import StoreError
    from aggregator.store.postgres import check_server

    url = POSTGRES_URL
    try:
        try:
            check_server(url)
        except StoreError as exc:
            if "database missing" not in str(exc):
                raise
            # A server without that database: the tests create theirs from the
            # maintenance database instead.
            url = urlunsplit(urlsplit(url)._replace(path="/postgres"))
            check_server(url)
    except StoreError as exc:
        reason = f"{NO_POSTGRES}: {exc}"
        if os.environ.get("AGGREGATOR_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"AGGREGATOR_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    return url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A database of the test's own (UTF-8, C.UTF-8), dropped afterwards."""
    import uuid

    from aggregator.store.postgres import create_database, drop_database

    name = f"aggtest_{uuid.uuid4().hex[:12]}"
    url = create_database(postgres_server, name)
    yield url
    drop_database(postgres_server, name)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The test's database on each backend (tests/backends.py): SQLite in tmp_path, and
    PostgreSQL in a database of its own (postgres_url; skipped with the one line)."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    b = Backend(request.param, tmp_path, url)
    yield b
    b.close()
