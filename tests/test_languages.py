"""Outputs in their readers' language: a story published by an outlet in several languages is
one item per output, represented by the version in the output's `prefer_languages`, with
hreflang links to the other versions; filters read every version; the item id never moves."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import pytest
from lxml import etree

from .feedserver import FeedServer, article_words
from .util import cli, env_for, write_feeds

ATOM = "{http://www.w3.org/2005/Atom}"
OUTLETS = ("civil", "jam", "oc")
LANGS = ("en", "ru", "ka")
STORIES = 20
BASE = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
TITLES = {"en": "Story {o} {k}", "ru": "Сюжет {o} {k}", "ka": "ამბავი {o} {k}"}
# A word only the Georgian version of story (civil, 3) has, and one only its Russian one.
KA_WORD = "გიუმრი"
RU_WORD = "Гюмри"


def published(k: int, lang: str) -> datetime:
    # The English version first, the Russian 10 minutes later, the Georgian 20.
    return BASE + timedelta(hours=k, minutes=10 * LANGS.index(lang))


def url(outlet: str, lang: str, k: int) -> str:
    return f"https://{outlet}.example/{lang}/{k}"


def feed_xml(outlet: str, lang: str) -> str:
    items = []
    for k in range(STORIES):
        text = article_words(OUTLETS.index(outlet) * 10 + LANGS.index(lang), k, 120)
        if (outlet, k) == ("civil", 3):
            text += f" {KA_WORD}" if lang == "ka" else f" {RU_WORD}" if lang == "ru" else ""
        when = published(k, lang).strftime("%a, %d %b %Y %H:%M:%S GMT")
        items.append(
            f"<item><guid isPermaLink='false'>{outlet}-{lang}-{k}</guid>"
            f"<title>{TITLES[lang].format(o=outlet, k=k)}</title>"
            f"<link>{url(outlet, lang, k)}</link><pubDate>{when}</pubDate>"
            f"<description>{text}</description></item>"
        )
    return (f"<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
            f"<title>{outlet} {lang}</title><link>https://{outlet}.example/</link>"
            f"<language>{'ka-GE' if lang == 'ka' else lang}</language>"
            f"{''.join(items)}</channel></rss>")


OUTPUTS = """
outputs:
  - name: all
    title: Everything
  - name: ru
    title: По-русски
    prefer_languages: [ru-RU, en]
  - name: ka-only
    title: Georgian only
    filter:
      languages: [ka]
  - name: gyumri
    title: Gyumri, in English
    prefer_languages: [en]
    filter:
      include: ["გიუმრი"]
  - name: no-gyumri
    title: Without Gyumri
    filter:
      exclude: ["Гюмри"]
  - name: hy
    title: Armenian first
    prefer_languages: [hy]
"""


def join_translations(db: Path) -> None:
    """Join each outlet's three versions of a story into one story (what the translation
    join of issue 15 does; here directly in the store, like a merge)."""
    conn = sqlite3.connect(db)
    with conn:
        for outlet in OUTLETS:
            for k in range(STORIES):
                (story,) = conn.execute("SELECT story_id FROM entries WHERE guid = ?",
                                        (f"{outlet}-en-{k}",)).fetchone()
                for lang in ("ru", "ka"):
                    conn.execute("UPDATE entries SET story_id = ?, match_reason = 'translation'"
                                 " WHERE guid = ?", (story, f"{outlet}-{lang}-{k}"))
        conn.execute("DELETE FROM stories WHERE id NOT IN (SELECT story_id FROM entries)")
        conn.execute("UPDATE stories SET entry_count = 3, outlet_count = 3")
    conn.close()


@pytest.fixture(scope="module")
def published_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("languages")
    with FeedServer() as s:
        feeds = []
        for outlet in OUTLETS:
            for lang in LANGS:
                s.route(f"/{outlet}-{lang}.xml", body=feed_xml(outlet, lang),
                        headers={"Content-Type": "application/rss+xml"})
                feeds.append({"name": f"{outlet}-{lang}", "url": s.url(f"/{outlet}-{lang}.xml"),
                              "title": f"{outlet.title()} ({lang})"})
        path = write_feeds(tmp / "feeds.yaml", feeds, OUTPUTS)
        env = env_for(tmp, AGGREGATOR_FULL_TEXT="false", AGGREGATOR_DEDUP_THRESHOLD="0.99")
        r = cli(["update", "--all"], env, feeds=path)
        assert r.returncode == 0, r.stderr
    join_translations(tmp / "agg.db")
    r = cli(["publish"], env, feeds=path)
    assert r.returncode == 0, r.stderr
    return tmp, env


def entries(tmp: Path, name: str) -> list[etree._Element]:
    doc = etree.fromstring((tmp / "public" / f"{name}.atom").read_bytes())
    return doc.findall(f"{ATOM}entry")


def by_title(tmp: Path, name: str) -> dict[str, etree._Element]:
    return {e.findtext(f"{ATOM}title"): e for e in entries(tmp, name)}


def test_one_item_per_story_with_translation_links(
        published_dir: tuple[Path, dict[str, str]]) -> None:
    tmp, _ = published_dir
    conn = sqlite3.connect(tmp / "agg.db")
    assert conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 180
    conn.close()
    items = by_title(tmp, "all")
    assert len(items) == 60  # not 180
    # Without prefer_languages the store's representative (here the English, earliest).
    entry = items["Story civil 3"]
    links = [(ln.get("hreflang"), ln.get("href"))
             for ln in entry.findall(f"{ATOM}link[@rel='alternate']")]
    assert links == [(None, url("civil", "en", 3)), ("ru", url("civil", "ru", 3)),
                     ("ka", url("civil", "ka", 3)), ("en", url("civil", "en", 3))]
    assert entry.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
    content = entry.findtext(f"{ATOM}content") or ""
    assert "Also in:" in content and "ამბავი civil 3" in content and "Civil (ru)" in content
    parsed = feedparser.parse((tmp / "public" / "all.atom").read_bytes())
    assert not parsed.bozo
    assert {e.link for e in parsed.entries} == {url(o, "en", k) for o in OUTLETS
                                                for k in range(STORIES)}
    rss = etree.fromstring((tmp / "public" / "all.rss").read_bytes())
    assert len(rss.findall("channel/item")) == 60
    js = json.loads((tmp / "public" / "all.json").read_text())
    assert len(js["items"]) == 60
    item = next(i for i in js["items"] if i["title"] == "Story civil 3")
    assert [t["language"] for t in item["_translations"]] == ["ru", "ka"]


def test_prefer_languages_picks_the_version_and_keeps_the_id(
        published_dir: tuple[Path, dict[str, str]]) -> None:
    tmp, _ = published_dir
    everything = {e.findtext(f"{ATOM}id"): e for e in entries(tmp, "all")}
    russian = {e.findtext(f"{ATOM}id"): e for e in entries(tmp, "ru")}
    # The same stories under the same ids: a reader never sees a story as new.
    assert set(russian) == set(everything) and len(russian) == 60
    for uid, entry in russian.items():
        assert entry.findtext(f"{ATOM}title").startswith("Сюжет")
        assert entry.get("{http://www.w3.org/XML/1998/namespace}lang") == "ru"
        english = everything[uid].findtext(f"{ATOM}title").replace("Story", "Сюжет")
        assert entry.findtext(f"{ATOM}title") == english
        langs = [ln.get("hreflang") for ln in entry.findall(f"{ATOM}link[@rel='alternate']")]
        assert langs == [None, "en", "ka", "ru"]
        # The other versions are linked once, with their outlets, under "Also in".
        content = entry.findtext(f"{ATOM}content") or ""
        assert "Also reported by" not in content
        assert re.search(r"Also in: .*\(en, \w+ \(en\)\).*\(ka, \w+ \(ka\)\)", content)
    # A language the stories do not have: the earliest version (English here).
    armenian = entries(tmp, "hy")
    assert len(armenian) == 60
    assert all(e.findtext(f"{ATOM}title").startswith("Story") for e in armenian)


def test_filters_read_every_version(published_dir: tuple[Path, dict[str, str]]) -> None:
    tmp, _ = published_dir
    # languages: kept when any version is in a listed language, represented by that one.
    georgian = entries(tmp, "ka-only")
    assert len(georgian) == 60
    assert all(e.findtext(f"{ATOM}title").startswith("ამბავი") for e in georgian)
    # A Georgian keyword finds the story its English version represents.
    gyumri = entries(tmp, "gyumri")
    assert [e.findtext(f"{ATOM}title") for e in gyumri] == ["Story civil 3"]
    # exclude drops the story when any version matches (the Russian one here).
    without = by_title(tmp, "no-gyumri")
    assert len(without) == 59 and "Story civil 3" not in without


def test_preview_names_the_version_that_matched(
        published_dir: tuple[Path, dict[str, str]]) -> None:
    tmp, env = published_dir
    r = cli(["preview", "no-gyumri", "--limit", "100"], env, feeds=tmp / "feeds.yaml")
    assert r.returncode == 0, r.stderr
    assert "keeps 59 of the 60 newest stories" in r.stdout
    assert 'exclude "Гюмри" matched text of the ru version (civil-ru)' in r.stdout
    r = cli(["preview", "ru", "--limit", "100"], env, feeds=tmp / "feeds.yaml")
    assert "+ 2026-11-24 09:10 civil-ru: Сюжет civil 3" in r.stdout
