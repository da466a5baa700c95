"""The /status page: a real store, the real server on 127.0.0.1, hostile feed text escaped,
no script allowed, failing feeds first, the 30-day chart drawn server-side."""

from __future__ import annotations

import gzip
import html.parser
import http.client
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aggregator.models import FeedConfig
from aggregator.server import FeedServer
from aggregator.statuspage import relative, render_status
from aggregator.store import FEED_STATES, Store

from .test_band_index import entry

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
HOSTILE_TITLE = '<script>alert("title")</script>"><img src=x onerror=alert(1)>\x1b[2J\x07'
HOSTILE_ERROR = 'HTTP 503 <script>alert(1)</script> "><img src=x onerror=alert(2)> \x00\x1b\x9b'


class Page(html.parser.HTMLParser):
    """Elements, their attributes and the text a person reads (scripts would show here)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def build_store(path: Path) -> Store:
    """Five feeds, one in every state, with entries over the last days."""
    st = Store(path)
    st.migrate()
    feeds = [FeedConfig(name=n, url=f"https://{n}.example/rss", language=lang)
             for n, lang in (("alpha", "hy"), ("broken", "ru"), ("gone", "en"),
                             ("zeta", "ka"), ("old", "en"))]
    st.sync_feeds(feeds, NOW - timedelta(days=40))
    ids = {r["name"]: r["id"] for r in st.conn.execute("SELECT id, name FROM feeds")}
    ok = dict(now=NOW, status=200, next_poll=NOW + timedelta(minutes=15), interval=900.0,
              etag=None, last_modified=None, body_hash=None, permanent_url=None)
    # Entries on three days: today (two within 24 h), yesterday and 40 days ago (off the chart).
    dated = [("a1", NOW - timedelta(hours=1)), ("a2", NOW - timedelta(hours=5)),
             ("a3", NOW - timedelta(hours=30)), ("a4", NOW - timedelta(days=40))]
    entries = []
    for n, (key, when) in enumerate(dated):
        e = entry(key, f"story {key} " * 30, f"https://alpha.example/{n}", title=f"Title {key}")
        entries.append(replace(e, published=when))
    st.record_success(ids["alpha"], **ok, entries=entries)
    st.record_success(ids["zeta"], **ok, title="Zeta news")
    st.record_success(ids["broken"], **ok, title=HOSTILE_TITLE)
    for _ in range(3):
        st.record_failure(ids["broken"], now=NOW, kind="http", message=HOSTILE_ERROR,
                          status=503, next_poll=NOW + timedelta(minutes=30))
    st.record_failure(ids["gone"], now=NOW, kind="gone", message="410 Gone", status=410,
                      next_poll=NOW + timedelta(days=1), disable=True)
    st.sync_feeds(feeds[:4], NOW)  # "old" is no longer configured
    return st


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    st = build_store(tmp_path / "agg.db")
    yield st
    st.close()


def get(srv: FeedServer, path: str, headers: dict[str, str] | None = None,
        method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    host, port = srv.address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------- the store


def test_store_status_states_activity_and_languages(store: Store) -> None:
    doc = store.status(NOW)
    states = {f["name"]: f["state"] for f in doc["feeds"]}
    assert states == {"alpha": "ok", "broken": "failing", "gone": "disabled", "zeta": "ok",
                      "old": "removed"}
    assert doc["states"] == {"ok": 2, "degraded": 0, "failing": 1, "disabled": 1, "removed": 1}
    assert list(doc["states"]) == list(FEED_STATES)
    assert store.feed_state_counts() == doc["states"]
    assert {f["name"]: f["language"] for f in doc["feeds"]}["zeta"] == "ka"
    assert {f["name"]: f["title"] for f in doc["feeds"]}["zeta"] == "Zeta news"
    assert (doc["entries_24h"], doc["stories_24h"]) == (2, 2)
    days = doc["entries_per_day"]
    assert len(days) == 30 and days[-1]["day"] == "2026-11-24" and days[0]["day"] == "2026-10-26"
    assert [(d["day"], d["entries"]) for d in days if d["entries"]] == [
        ("2026-11-23", 1), ("2026-11-24", 2)]
    assert doc["backlog"] == 0


# --------------------------------------------------------------------------- the page


def test_page_escapes_hostile_text_and_sends_a_csp_without_scripts(store: Store,
                                                                   tmp_path: Path) -> None:
    with FeedServer(tmp_path / "public", "127.0.0.1:0",
                    status_provider=lambda: store.status(NOW)) as srv:
        status, headers, body = get(srv, "/status")
        head_status, head_headers, head_body = get(srv, "/status", method="HEAD")
        gz_status, gz_headers, gz_body = get(srv, "/status", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    csp = headers["Content-Security-Policy"]
    assert "script-src 'none'" in csp and "default-src 'none'" in csp
    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert head_status == 200 and head_body == b"" and "script-src 'none'" in \
        head_headers["Content-Security-Policy"]
    assert gz_status == 200 and gz_headers["Content-Encoding"] == "gzip"
    page = body.decode("utf-8")
    assert gzip.decompress(gz_body).decode() == page

    # Nothing hostile survives as markup: no script, no img, no event handler attribute.
    parsed = Page(page)
    tags = {t for t, _ in parsed.tags}
    assert "script" not in tags and "img" not in tags
    assert not [a for _, attrs in parsed.tags for a in attrs if a.startswith("on")]
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&quot;title&quot;)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in page
    # Control characters are shown, not sent raw (raw ones are invalid in HTML).
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", page)
    assert r"\x1b[2J\x07" in page and r"\x00\x1b\x9b" in page
    text = "".join(parsed.text)
    assert '<script>alert("title")</script>' in text  # what a person reads: the literal text


def test_page_shows_summary_failing_feed_first_and_chart(store: Store) -> None:
    doc = store.status(NOW)
    doc.update(uptime=7300.0, cycles=12,
               last_cycle={"started": "2026-11-24T09:57:00Z", "seconds": 3.25, "feeds": 4,
                           "errors": 1})
    page = render_status(doc, now=NOW)
    parsed = Page(page)
    text = " ".join(" ".join(parsed.text).split())
    for expected in ("2 ok", "0 degraded", "1 failing", "1 disabled", "1 removed",
                     "Entries, last 24 h 2", "Stories, last 24 h 2", "Extraction backlog 0",
                     "3 min ago", "took 3.2 s; 4 feeds polled, 1 failed", "2 h 1 min"):
        assert expected in text, expected
    rows = re.findall(r'<tr class="([a-z]+)">.*?<a href="https://([a-z]+)\.example', page)
    assert rows == [("failing", "broken"), ("disabled", "gone"), ("ok", "alpha"),
                    ("ok", "zeta"), ("removed", "old")]
    broken = page[page.index('<tr class="failing">'):page.index('<tr class="disabled">')]
    assert ">503<" in broken and ">3<" in broken and "ru" in broken
    svg = [attrs for tag, attrs in parsed.tags if tag == "svg"]
    assert len(svg) == 1 and svg[0]["role"] == "img"
    assert sum(1 for tag, attrs in parsed.tags if tag == "rect"
               and attrs.get("class") == "bar") == 30
    assert "2026-11-24: 2 entries" in page and "2026-11-23: 1 entry" in page
    assert '<title id="chart-title">' in page and '<desc id="chart-desc">' in page
    # Every time is given in UTC beside its relative form.
    assert "2026-11-24 10:00 UTC" in text


def test_relative_times() -> None:
    assert relative(NOW, NOW) == "just now"
    assert relative(NOW - timedelta(minutes=3), NOW) == "3 min ago"
    assert relative(NOW + timedelta(minutes=12), NOW) == "in 12 min"
    assert relative(NOW - timedelta(hours=5), NOW) == "5 h ago"
    assert relative(NOW - timedelta(days=3), NOW) == "3 days ago"
    assert relative(NOW - timedelta(days=1, hours=13), NOW) == "2 days ago"


def test_status_page_needs_a_provider_and_survives_a_broken_one(tmp_path: Path) -> None:
    with FeedServer(tmp_path, "127.0.0.1:0") as srv:
        assert get(srv, "/status")[0] == 404

    def broken() -> dict[str, Any]:
        raise RuntimeError("database <locked>")

    with FeedServer(tmp_path, "127.0.0.1:0", status_provider=broken) as srv:
        status, _, body = get(srv, "/status")
        # Before the first publish, the file listing links the status page too.
        listing = get(srv, "/")[2].decode()
    assert status == 500 and b"locked" not in body
    assert '<a href="status">Status</a>' in listing
    # An empty document (a fresh daemon) renders too.
    page = render_status({}, now=NOW)
    assert "No feeds are configured." in page and "none yet" in page


def test_degraded_feed_shows_its_article_failure_and_last_poll_without_a_cycle(
        store: Store) -> None:
    """A degraded feed polls fine: its row names the article pages' last failure (escaped);
    before this process ran a cycle, the summary says when the store last polled a feed."""
    store.conn.execute(
        "UPDATE feeds SET article_errors = 4, last_article_error = ? WHERE name = 'zeta'",
        ("robots_unavailable: <b>https://zeta.example/robots.txt</b> unreachable",))
    store.conn.commit()
    doc = store.status(NOW)
    assert doc["last_poll"] == "2026-11-24T10:00:00Z"
    page = render_status(doc, now=NOW)
    zeta = page[page.index('<tr class="degraded">'):]
    zeta = zeta[:zeta.index("</tr>")]
    assert "Article pages: 4 failed in a row: " in zeta
    assert "&lt;b&gt;https://zeta.example/robots.txt&lt;/b&gt; unreachable" in zeta
    assert "<b>" not in zeta
    text = " ".join(" ".join(Page(page).text).split())
    assert "Last poll just now" in text or "Last poll 0 s ago" in text, text
