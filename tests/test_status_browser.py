"""/status as a person sees it: the real daemon in a subprocess, polling local feeds (one of
them failing, one with a hostile title), its pages read over HTTP and in a real headless
browser (Debian's chromium driven by Selenium through chromedriver).

Without a browser the browser test is skipped with its reason, except when
AGGREGATOR_REQUIRE_BROWSER=1 (set by .ci/run): then it fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .feedserver import FeedServer
from .test_daemon import Daemon
from .util import free_port, write_feeds

HOSTILE_FEED = (
    "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
    "<title>&lt;script&gt;alert(1)&lt;/script&gt;\"&gt;&lt;img src=x onerror=alert(2)&gt;"
    "</title><link>http://127.0.0.1/</link><description>x</description>"
    "<item><title>Only story</title><link>http://127.0.0.1/a</link><guid>h1</guid>"
    "<pubDate>Fri, 20 Nov 2026 08:00:00 GMT</pubDate><description>text</description></item>"
    "</channel></rss>"
)
# A feed nobody answers, at an address with one long unbreakable path: its error message
# quotes the URL, which must wrap inside its cell rather than widen the table.
UNREACHABLE_PATH = "/feeds/" + "very-long-section-name-" * 8 + "rss.xml"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars",
)


class Running:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.base = daemon.base

    def status(self) -> dict[str, Any]:
        return dict(json.loads(self.daemon.get("/status.json")))


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("status-daemon")
    with FeedServer(feeds=2, entries=4) as feeds_server:
        feeds_server.route("/feed/broken.xml", status=503, body="busy",
                           headers={"Content-Type": "text/plain"})
        feeds_server.route("/feed/hostile.xml", body=HOSTILE_FEED)
        feeds = write_feeds(tmp / "feeds.yaml", [
            {"name": "local-0", "url": feeds_server.url("/feed/0.xml"), "language": "hy"},
            {"name": "local-1", "url": feeds_server.url("/feed/1.xml"), "language": "ru"},
            {"name": "broken", "url": feeds_server.url("/feed/broken.xml")},
            {"name": "hostile", "url": feeds_server.url("/feed/hostile.xml")},
            {"name": "unreachable",
             "url": f"http://127.0.0.1:{free_port()}{UNREACHABLE_PATH}"},
        ])
        daemon = Daemon(tmp, feeds, AGGREGATOR_FULL_TEXT="false")
        try:
            assert daemon.notify.wait_for("READY=1"), daemon.logtext()
            run = Running(daemon)

            def settled() -> bool:
                doc = run.status()
                return doc["last_cycle"] is not None and all(
                    f["last_attempt"] for f in doc["feeds"]) and b"9 items" in daemon.get("/")

            assert daemon.wait_until(settled), daemon.logtext()
            yield run
        finally:
            daemon.stop()


def test_daemon_serves_the_status_page_and_links_it_from_the_index(running: Running) -> None:
    doc = running.status()
    assert doc["states"] == {"ok": 3, "degraded": 0, "failing": 2, "disabled": 0, "removed": 0}
    assert doc["last_cycle"]["feeds"] >= 1 and doc["last_cycle"]["seconds"] >= 0
    assert len(doc["entries_per_day"]) == 30 and doc["backlog"] == 0
    with urllib.request.urlopen(running.base + "/status", timeout=10) as resp:
        csp = resp.headers["Content-Security-Policy"]
        page = resp.read().decode()
    assert "script-src 'none'" in csp
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    first_row = page.index("<tbody>")
    assert page.index('<tr class="failing">', first_row) < page.index('<tr class="ok">')
    index = running.daemon.get("/").decode()
    assert '<a href="status">Status</a>' in index
    assert "<small>9 items, updated <time" in index  # 2 feeds × 4 entries, the hostile one's 1


def _browser() -> tuple[str, str] | str:
    """(chromium, chromedriver) paths, or why there is no browser to test with."""
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        return ("no headless browser: install Debian's chromium and chromium-driver "
                "(apt-get install -y chromium chromium-driver; .ci/run does)")
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -e '.[dev]')"
    return chromium, driver


def test_status_page_in_a_real_browser(running: Running, tmp_path: Path) -> None:
    found = _browser()
    if isinstance(found, str):
        if os.environ.get("AGGREGATOR_REQUIRE_BROWSER") == "1":
            pytest.fail(f"AGGREGATOR_REQUIRE_BROWSER=1 but {found}")
        pytest.skip(found)
    chromium, chromedriver = found
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    try:
        driver.set_page_load_timeout(30)
        driver.get(running.base + "/status")
        assert driver.title == "aggregator status"
        assert driver.find_elements(By.TAG_NAME, "script") == []
        # The summary: five state counts, the day's entries, the last cycle.
        summary = driver.find_element(By.ID, "summary").find_element(By.XPATH, "..").text
        for expected in ("3 ok", "2 failing", "0 disabled", "ENTRIES, LAST 24 H",
                         "EXTRACTION BACKLOG", "LAST CYCLE"):
            assert expected in summary, summary
        # The failing feeds come first, with their HTTP status and error.
        rows = driver.find_elements(By.CSS_SELECTOR, "table tbody tr")
        assert len(rows) == 5
        failing = [r.text for r in rows[:2]]
        assert all("failing" in text for text in failing), failing
        broken = next(text for text in failing if "broken" in text)
        assert "503" in broken, broken
        assert [r.get_attribute("class") for r in rows[2:]] == ["ok", "ok", "ok"]
        # The hostile title reads as text, and the stylesheet applied (CSP allows it).
        assert '<script>alert(1)</script>"><img src=x onerror=alert(2)>' in \
            driver.find_element(By.TAG_NAME, "tbody").text
        pill = rows[0].find_element(By.CSS_SELECTOR, ".pill")
        assert pill.value_of_css_property("background-color") not in ("rgba(0, 0, 0, 0)", "")
        # The chart is drawn and visible: 30 bars, a title and a description.
        svg = driver.find_element(By.CSS_SELECTOR, ".chart svg")
        assert svg.is_displayed() and svg.size["width"] > 600 and svg.size["height"] > 100
        assert len(svg.find_elements(By.CSS_SELECTOR, "rect.bar")) == 30
        assert svg.find_element(By.TAG_NAME, "desc").get_attribute("textContent").startswith(
            "Bar chart of entries per day")
        # On a desktop window every column is in view: an error quoting a long URL wraps in
        # its cell instead of pushing Entries, Extracted and Next poll out of the box.
        assert UNREACHABLE_PATH in driver.find_element(By.TAG_NAME, "tbody").text
        box = driver.find_element(By.CSS_SELECTOR, ".scroll")
        assert int(box.get_property("scrollWidth")) <= int(box.get_property("clientWidth")), \
            (box.get_property("scrollWidth"), box.get_property("clientWidth"))
        for cell in driver.find_elements(By.CSS_SELECTOR, "td.err"):
            assert int(cell.get_property("scrollWidth")) <= int(cell.get_property("clientWidth"))
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, max(900, int(height) + 40))
        shot = tmp_path / "status.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        print(f"status page screenshot: {shot}")
        # On a phone the page does not scroll sideways: the table scrolls in its box.
        driver.set_window_size(400, 900)
        width = driver.execute_script("return document.documentElement.scrollWidth")
        inner = driver.execute_script("return window.innerWidth")
        assert int(width) <= int(inner)
        narrow = tmp_path / "status-narrow.png"
        driver.save_screenshot(str(narrow))
        print(f"narrow screenshot: {narrow}")
    finally:
        driver.quit()
