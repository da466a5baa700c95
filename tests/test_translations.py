"""Translations and regional editions join their story: the links an article page (hreflang,
JSON-LD workTranslation/translationOfWork, og:locale:alternate) or an Atom entry names,
either order, across polls and restarts, `reprocess`; never a home or section page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import feedparser

from aggregator.config import load_config
from aggregator.extract import extract_article
from aggregator.models import Alternate
from aggregator.parse import parse_feed
from aggregator.pipeline import Pipeline
from aggregator.store import open_storage

from .backends import Backend, Row
from .feedserver import FeedServer
from .util import cli, env_for, write_feeds

HTML = {"Content-Type": "text/html; charset=utf-8"}
RSS = {"Content-Type": "application/rss+xml; charset=utf-8"}
ATOM = {"Content-Type": "application/atom+xml; charset=utf-8"}

# Sentences in the region's scripts; each story's text is made distinct by its number.
SENTENCES = {
    "hy": ["Հայաստանի և Ադրբեջանի պատվիրակությունները երեքշաբթի օրը վերսկսեցին բանակցությունները"
           " սահմանազատման վերաբերյալ",
           "Արտաքին գործերի նախարարությունները համատեղ հայտարարություն տարածեցին հանդիպումից հետո",
           "Հանձնաժողովները կհանդիպեն հաջորդ ամիս՝ քննարկելու սահմանի հյուսիսային հատվածը",
           "Փորձագետները կօգտագործեն խորհրդային տարիների քարտեզները որպես աշխատանքի հիմք"],
    "ka": ["საქართველოს პარლამენტმა სამშაბათს მიიღო ცვლილებები საარჩევნო კოდექსში",
           "ოპოზიციის დეპუტატებმა კენჭისყრამდე დატოვეს სხდომათა დარბაზი",
           "ცვლილებები ამოქმედდება მომავალი შემოდგომის არჩევნებისთვის",
           "ცენტრალურმა საარჩევნო კომისიამ განაცხადა რომ ორ კვირაში გამოაქვეყნებს ახალ წესებს"],
    "ru": ["Делегации Армении и Азербайджана во вторник возобновили переговоры о делимитации"
           " границы",
           "Министерства иностранных дел распространили совместное заявление после встречи",
           "Комиссии встретятся в следующем месяце, чтобы обсудить северный участок границы",
           "Эксперты будут использовать советские карты семидесятых годов как основу работы"],
    "en": ["The delegations of Armenia and Azerbaijan resumed talks on the delimitation of the"
           " border on Tuesday",
           "The foreign ministries issued a joint statement after the meeting of the commissions",
           "The commissions will meet again next month to discuss the northern section",
           "Experts will use Soviet-era maps from the nineteen seventies as the basis of the work"],
}


def text(lang: str, n: int) -> list[str]:
    """Three paragraphs in ``lang``, distinct for each story number ``n``."""
    s = SENTENCES[lang]
    return [f"{s[(n + k) % 4]} ({n}-{k}). {s[(n + k + 1) % 4]} №{n * 31 + k}. "
            f"{s[(n + k + 2) % 4]}, {n + k} {s[(n + k + 3) % 4]}." for k in range(3)]


def page(lang: str | None, n: int, links: str = "", title: str | None = None,
         text_lang: str | None = None) -> bytes:
    body = "".join(f"<p>{p}</p>" for p in text(text_lang or (lang or "en")[:2], n))
    head_lang = f' lang="{lang}"' if lang else ""
    return (f"<!doctype html><html{head_lang}><head><meta charset='utf-8'>"
            f"<title>{title or f'Story {n}'}</title>{links}</head><body><nav><a href='/'>Home"
            f"</a></nav><article><h1>{title or f'Story {n}'}</h1>{body}</article>"
            "<footer>© outlet</footer></body></html>").encode()


def rss(items: list[tuple[str, str, str]], language: str | None = None) -> bytes:
    """items: (guid, title, link)."""
    lang = f"<language>{language}</language>" if language else ""
    body = "".join(
        f"<item><guid isPermaLink='false'>{g}</guid><title>{t}</title><link>{link}</link>"
        f"<pubDate>Tue, 24 Nov 2026 10:00:00 GMT</pubDate><description>{t}: short teaser."
        "</description></item>" for g, t, link in items)
    return (f"<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
            f"<title>Feed</title><link>http://example.org/</link>{lang}{body}"
            "</channel></rss>").encode()


def hreflang(*pairs: tuple[str, str]) -> str:
    return "".join(f'<link rel="alternate" hreflang="{lang}" href="{href}">'
                   for lang, href in pairs)


def members(backend: Backend) -> list[Row]:
    return backend.query("SELECT m.*, e.guid FROM story_members m JOIN entries e"
                         " ON e.id = m.entry_id ORDER BY m.entry_id")


def stories_by_guid(backend: Backend) -> dict[str, int]:
    return {r["guid"]: r["story_id"] for r in members(backend)}


def update(tmp_path: Path, backend: Backend, feeds: Path, **extra: str) -> None:
    r = cli(["update", "--all"], env_for(tmp_path, **backend.env(), **extra), feeds=feeds)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr


# --------------------------------------------------------------------------- extraction


def test_page_names_its_alternates_in_every_form() -> None:
    links = (
        hreflang(("ru", "/ru/news/1"), ("en-GB", "//edition.example.org/en/news/1"),
                 ("x-default", "/news/1"))
        + '<link rel="alternate" type="application/rss+xml" href="/rss">'
        + '<script type="application/ld+json">{"@context": "https://schema.org",'
          ' "@type": "NewsArticle", "workTranslation": [{"@id": "https://example.org/ka/news/1",'
          ' "inLanguage": "ka"}], "translationOfWork": "https://example.org/az/news/1"}</script>'
        + '<meta property="og:locale" content="hy_AM">'
        + '<meta property="og:locale:alternate" content="tr_TR">'
        + '<link rel="alternate" href="/tr/news/1">'
    )
    article = extract_article(page(None, 1, links, text_lang="hy"),
                              "https://example.org/hy/news/1")
    assert article.language == "hy"  # og:locale, without <html lang>
    assert set(article.alternates) == {
        Alternate("https://example.org/ru/news/1", "ru", "hreflang"),
        Alternate("https://edition.example.org/en/news/1", "en-GB", "hreflang"),
        Alternate("https://example.org/ka/news/1", "ka", "translation"),
        Alternate("https://example.org/az/news/1", None, "translation"),
        Alternate("https://example.org/tr/news/1", "tr_TR", "og_locale"),
    }


def test_atom_entry_links_with_hreflang() -> None:
    body = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="ka"><title>t</title><id>urn:f</id>
<updated>2026-11-24T10:00:00Z</updated>
<entry><id>urn:1</id><title>x</title><updated>2026-11-24T10:00:00Z</updated>
<link rel="alternate" hreflang="ka" href="/ka/news/1"/>
<link rel="alternate" hreflang="ru" href="/ru/news/1"/>
<link rel="alternate" hreflang="x-default" href="/news/1"/>
<link rel="alternate" hreflang="en" href="//example.ge/en/news/1"/></entry></feed>"""
    entry = parse_feed(body, "https://example.ge/feed.atom").entries[0]
    assert entry.url == "https://example.ge/ka/news/1"  # its own, not the last alternate
    assert entry.alternates == (Alternate("https://example.ge/ru/news/1", "ru"),
                                Alternate("https://example.ge/en/news/1", "en"))


# --------------------------------------------------------------------------- pages


def test_hreflang_both_ways_one_way_relative_and_x_default(
        tmp_path: Path, backend: Backend) -> None:
    with FeedServer(feeds=0) as s:
        base = s.url("")
        # Story 1: hy names ru (relative) and en (protocol-relative, tracking parameter);
        # ru names hy back; en names nobody. x-default points at story 2's English page,
        # which must not join.
        s.route("/hy/news/1", headers=HTML, body=page("hy-AM", 1, hreflang(
            ("ru", "/ru/news/1"), ("en", base.replace("http:", "") + "/en/news/1?utm_source=x"),
            ("x-default", "/en/news/2"))))
        s.route("/ru/news/1", headers=HTML, body=page("ru", 1, hreflang(
            ("hy", "../../hy/news/1"))))
        s.route("/en/news/1", headers=HTML, body=page("en", 1))
        s.route("/en/news/2", headers=HTML, body=page("en", 2))
        s.route("/hy.xml", headers=RSS, body=rss([("hy1", "Պատմություն 1", s.url("/hy/news/1"))]))
        s.route("/ru.xml", headers=RSS, body=rss([("ru1", "История 1", s.url("/ru/news/1"))],
                                                 language="ru-RU"))
        s.route("/en.xml", headers=RSS, body=rss([("en1", "Story 1", s.url("/en/news/1")),
                                                  ("en2", "Story 2", s.url("/en/news/2"))]))
        feeds = write_feeds(tmp_path / "feeds.yaml", [
            {"name": n, "url": s.url(f"/{n}.xml")} for n in ("hy", "ru", "en")])
        update(tmp_path, backend, feeds)
    rows = {r["guid"]: r for r in members(backend)}
    assert rows["hy1"]["story_id"] == rows["ru1"]["story_id"] == rows["en1"]["story_id"]
    assert rows["en2"]["story_id"] != rows["hy1"]["story_id"]
    assert {rows[g]["language"] for g in ("hy1", "ru1", "en1")} == {"hy", "ru", "en"}
    assert sorted(rows[g]["match_reason"] for g in ("hy1", "ru1", "en1")) == [
        "first", "translation", "translation"]
    # items.language: the entry's own, else the feed's (as before), else the page's.
    langs = dict(backend.query("SELECT guid, language FROM items"))
    assert langs["ru1"] == "ru-ru" and langs["hy1"] == "hy"
    story = rows["hy1"]["story_id"]
    assert backend.query("SELECT outlet_count, entry_count FROM story_outlets"
                         " WHERE story_id = ?", (story,))[0] == (3, 3)
    r = cli(["story", str(story)], env_for(tmp_path, **backend.env()), feeds=feeds)
    assert r.returncode == 0, r.stderr
    assert "languages: en, hy, ru" in r.stdout
    assert "[ru]" in r.stdout and "translation match" in r.stdout


def test_pages_join_their_translations_through_the_protocol_on_either_backend(
        backend: Backend, tmp_path: Path) -> None:
    # The pipeline through the CLI, read back through the Storage protocol: the same
    # joins, reasons, member languages and items.language on both stores.
    database = backend.database
    with FeedServer(feeds=0) as s:
        s.route("/hy/news/1", headers=HTML, body=page("hy-AM", 1, hreflang(
            ("ru", "/ru/news/1"), ("x-default", "/en/news/2"))))
        s.route("/ru/news/1", headers=HTML, body=page("ru", 1))
        s.route("/en/news/2", headers=HTML, body=page(None, 2, hreflang(("en", "/en/news/2"))))
        s.route("/hy.xml", headers=RSS, body=rss([("hy1", "Պատմություն 1", s.url("/hy/news/1"))]))
        s.route("/ru.xml", headers=RSS, body=rss([("ru1", "История 1", s.url("/ru/news/1"))],
                                                 language="ru-RU"))
        s.route("/en.xml", headers=RSS, body=rss([("en2", "Story 2", s.url("/en/news/2"))]))
        feeds = write_feeds(tmp_path / "feeds.yaml", [
            {"name": n, "url": s.url(f"/{n}.xml")} for n in ("hy", "ru", "en")])
        update(tmp_path, backend, feeds)
    st = open_storage(database if backend.postgres else Path(database), readonly=True)
    try:
        items = {(i.url or "").rsplit("/", 3)[1] + (i.url or "")[-1]: i
                 for i in st.items(one_per_story=False)}  # hy1, ru1, en2
        assert set(items) == {"hy1", "ru1", "en2"}
        story = items["hy1"].story_id
        assert story is not None and items["ru1"].story_id == story != items["en2"].story_id
        rows = {r["feed_name"]: r for r in st.story_members(story)}
        assert set(rows) == {"hy", "ru"}
        # The feed's language (ru-RU) for one, the page's (hy-AM) as the last fallback for
        # the other, whose feed names none: primary subtags.
        assert (rows["hy"]["language"], rows["ru"]["language"]) == ("hy", "ru")
        assert sorted(r["match_reason"] for r in rows.values()) == ["first", "translation"]
        assert [m["language"] for m in st.story(story)[1]] == [
            r["language"] for r in st.story_members(story)]
    finally:
        st.close()


def test_switcher_pointing_at_a_section_page_joins_nothing(
        tmp_path: Path, backend: Backend) -> None:
    with FeedServer(feeds=0) as s:
        # Both Georgian articles' language switchers point at the Russian section page,
        # which a Russian article names (wrongly) as its canonical URL; one of them also
        # names its real translation, which joins.
        s.route("/ka/news/1", headers=HTML, body=page("ka", 1, hreflang(
            ("ru", "/ru/"), ("en", "/en/news/1"))))
        s.route("/ka/news/2", headers=HTML, body=page("ka", 2, hreflang(("ru", "/ru/")),
                                                      title="Story 2"))
        s.route("/ru/news/3", headers=HTML, body=page(
            "ru", 3, '<link rel="canonical" href="/ru/">', title="Story 3"))
        s.route("/en/news/1", headers=HTML, body=page("en", 1))
        s.route("/ka.xml", headers=RSS, body=rss([("ka1", "ამბავი 1", s.url("/ka/news/1")),
                                                  ("ka2", "ამბავი 2", s.url("/ka/news/2"))]))
        s.route("/ru.xml", headers=RSS, body=rss([("ru3", "История 3", s.url("/ru/news/3"))]))
        s.route("/en.xml", headers=RSS, body=rss([("en1", "Story 1", s.url("/en/news/1"))]))
        feeds = write_feeds(tmp_path / "feeds.yaml", [
            {"name": n, "url": s.url(f"/{n}.xml")} for n in ("ka", "ru", "en")])
        update(tmp_path, backend, feeds)
    stories = stories_by_guid(backend)
    assert stories["ka1"] == stories["en1"]
    assert len({stories["ka1"], stories["ka2"], stories["ru3"]}) == 3
    assert backend.value("SELECT COUNT(*) FROM entry_links WHERE url_norm LIKE '%/ru'"
                         ) == 0  # never stored


def test_regional_edition_on_another_host(tmp_path: Path, backend: Backend) -> None:
    with FeedServer(feeds=0) as s, FeedServer(feeds=0) as edition:
        s.route("/en/news/1", headers=HTML, body=page("en-CA", 1, hreflang(
            ("en-gb", edition.url("/en/news/1")))))
        # The edition's text differs (another intro, other paragraphs): no text match.
        edition.route("/en/news/1", headers=HTML, body=page("en-GB", 7))
        s.route("/ca.xml", headers=RSS, body=rss([("ca1", "Story", s.url("/en/news/1"))]))
        edition.route("/gb.xml", headers=RSS, body=rss([("gb1", "Story",
                                                         edition.url("/en/news/1"))]))
        feeds = write_feeds(tmp_path / "feeds.yaml", [
            {"name": "ca", "url": s.url("/ca.xml")}, {"name": "gb", "url": edition.url("/gb.xml")}])
        update(tmp_path, backend, feeds)
    rows = {r["guid"]: r for r in members(backend)}
    assert rows["ca1"]["story_id"] == rows["gb1"]["story_id"]
    assert {rows["ca1"]["match_reason"], rows["gb1"]["match_reason"]} == {"first", "edition"}


# --------------------------------------------------------------------------- order


def _pipeline(tmp_path: Path, backend: Backend, feeds: list[dict[str, Any]]) -> Pipeline:
    path = write_feeds(tmp_path / "feeds.yaml", feeds)
    return Pipeline(load_config(None, str(path), env_for(tmp_path, **backend.env())),
                    processes=1)


def test_translation_arriving_a_poll_later_and_after_a_restart(
        tmp_path: Path, backend: Backend) -> None:
    with FeedServer(feeds=0) as s:
        s.route("/hy/news/1", headers=HTML, body=page("hy", 1, hreflang(
            ("ru", "/ru/news/1"), ("ka", "/ka/news/1"))))
        s.route("/ru/news/1", headers=HTML, body=page("ru", 1))
        s.route("/ka/news/1", headers=HTML, body=page("ka", 1))
        s.route("/hy.xml", headers=RSS, body=rss([("hy1", "Պատմություն", s.url("/hy/news/1"))]))
        s.route("/ru.xml", headers=RSS, body=rss([]))
        s.route("/ka.xml", headers=RSS, body=rss([]))
        feeds = [{"name": n, "url": s.url(f"/{n}.xml")} for n in ("hy", "ru", "ka")]
        p = _pipeline(tmp_path, backend, feeds)
        try:
            p.run_cycle(all_feeds=True)
            # The Russian version appears a poll later, in the same process.
            s.route("/ru.xml", headers=RSS, body=rss([("ru1", "История", s.url("/ru/news/1"))]))
            p.run_cycle(all_feeds=True)
        finally:
            p.close()
        stories = stories_by_guid(backend)
        assert stories["hy1"] == stories["ru1"]
        # The Georgian version appears after a restart (a new process).
        s.route("/ka.xml", headers=RSS, body=rss([("ka1", "ამბავი", s.url("/ka/news/1"))]))
        update(tmp_path, backend, tmp_path / "feeds.yaml")
    stories = stories_by_guid(backend)
    assert stories["hy1"] == stories["ru1"] == stories["ka1"]


def test_reprocess_joins_pages_already_stored(tmp_path: Path, backend: Backend) -> None:
    with FeedServer(feeds=0) as s:
        s.route("/ru/news/1", headers=HTML, body=page("ru", 1, hreflang(("hy", "/hy/news/1"))))
        s.route("/hy/news/1", headers=HTML, body=page("hy", 1))
        s.route("/ru.xml", headers=RSS, body=rss([("ru1", "История", s.url("/ru/news/1"))]))
        s.route("/hy.xml", headers=RSS, body=rss([("hy1", "Պատմություն", s.url("/hy/news/1"))]))
        feeds = write_feeds(tmp_path / "feeds.yaml", [
            {"name": n, "url": s.url(f"/{n}.xml")} for n in ("ru", "hy")])
        update(tmp_path, backend, feeds)
    db = backend
    assert len(set(stories_by_guid(db).values())) == 1
    # A store from before translations were read: no links, one story per language.
    db.execute("DELETE FROM entry_links")
    ru_id = db.value("SELECT id FROM entries WHERE guid = 'ru1'")
    story = db.value("INSERT INTO stories(first_seen, updated, entry_count, outlet_count,"
                     " item_id, representative_id) VALUES ('2026-11-24T10:00:00Z',"
                     " '2026-11-24T10:00:00Z', 1, 1, 'urn:x', ?) RETURNING id", (ru_id,))
    db.execute("UPDATE entries SET story_id = ?, match_reason = 'first' WHERE id = ?",
               (story, ru_id))
    assert len(set(stories_by_guid(db).values())) == 2
    r = cli(["reprocess"], env_for(tmp_path, **backend.env()), feeds=feeds)
    assert r.returncode == 0, r.stderr
    rows = {r["guid"]: r for r in members(db)}
    assert rows["ru1"]["story_id"] == rows["hy1"]["story_id"]
    assert "translation" in {rows["ru1"]["match_reason"], rows["hy1"]["match_reason"]}


# --------------------------------------------------------------------------- the figure


def atom_entry(n: int, lang: str, base: str, langs: tuple[str, ...]) -> str:
    own = f"{base}/{lang}/story/{n}"
    links = "".join(f'<link rel="alternate" hreflang="{x}" href="{x}/story/{n}"/>'
                    for x in langs if x != lang)
    paragraphs = "".join(f"&lt;p&gt;{p}&lt;/p&gt;" for p in text(lang, n + 100))
    return (f"<entry><id>urn:{lang}:{n}</id><title>{lang} {n}</title>"
            f"<updated>2026-11-24T10:{n:02d}:00Z</updated><link rel='alternate' href='{own}'/>"
            f"{links}<content type='html'>{paragraphs}</content></entry>")


def test_three_outlets_twenty_stories_three_languages_publish_sixty_items(
        tmp_path: Path, backend: Backend) -> None:
    langs = ("hy", "ru", "en")
    feeds: list[dict[str, Any]] = []
    with FeedServer(feeds=0) as s:
        # Outlet "armpress": article pages with hreflang both ways (full text).
        for lang in langs:
            items = []
            for n in range(20):
                path = f"/armpress/{lang}/news/{n}"
                others = [(x, f"/armpress/{x}/news/{n}") for x in langs if x != lang]
                s.route(path, headers=HTML, body=page(lang, n, hreflang(*others),
                                                      title=f"{lang} {n}"))
                items.append((f"armpress-{lang}-{n}", f"{lang} {n}", s.url(path)))
            s.route(f"/armpress-{lang}.xml", headers=RSS, body=rss(items, language=lang))
            feeds.append({"name": f"armpress-{lang}", "url": s.url(f"/armpress-{lang}.xml")})
        # Outlet "civil": Atom entries that carry their translations, no full text.
        for lang in ("ka", "ru", "en"):
            entries = "".join(atom_entry(n, lang, s.url("/civil"), ("ka", "ru", "en"))
                              for n in range(20))
            s.route(f"/civil-{lang}.atom", headers=ATOM, body=(
                f"<?xml version='1.0' encoding='utf-8'?><feed xmlns='http://www.w3.org/2005/Atom'"
                f" xml:lang='{lang}' xml:base='{s.url('/civil/')}'><title>Civil {lang}</title>"
                f"<id>urn:civil:{lang}</id><updated>2026-11-24T11:00:00Z</updated>{entries}"
                "</feed>"))
            feeds.append({"name": f"civil-{lang}", "url": s.url(f"/civil-{lang}.atom"),
                          "full_text": False})
        # Outlet "jam": one direction only, from JSON-LD workTranslation on the Russian page.
        for lang in ("ru", "ka", "hy"):
            items = []
            for n in range(20):
                path = f"/jam/{lang}/a/{n}"
                links = ""
                if lang == "ru":
                    works = [{"@id": s.url(f"/jam/{x}/a/{n}"), "inLanguage": x}
                             for x in ("ka", "hy")]
                    links = ('<script type="application/ld+json">' + json.dumps(
                        {"@type": "NewsArticle", "workTranslation": works}) + "</script>")
                s.route(path, headers=HTML, body=page(lang, n + 200, links,
                                                      title=f"jam {lang} {n}"))
                items.append((f"jam-{lang}-{n}", f"jam {lang} {n}", s.url(path)))
            s.route(f"/jam-{lang}.xml", headers=RSS, body=rss(items))
            feeds.append({"name": f"jam-{lang}", "url": s.url(f"/jam-{lang}.xml")})
        path = write_feeds(tmp_path / "feeds.yaml", feeds)
        update(tmp_path, backend, path, AGGREGATOR_ARTICLE_BUDGET="500")
    assert backend.value("SELECT COUNT(*) FROM entries") == 180
    assert backend.value("SELECT COUNT(*) FROM stories") == 60
    per_story = backend.query("SELECT COUNT(DISTINCT language) FROM story_members"
                              " GROUP BY story_id")
    assert per_story == [(3,)] * 60
    atom = feedparser.parse(backend.read("all.atom"))
    assert len(atom.entries) == 60


def test_corpus_page_names_its_regional_editions(corpus: Path) -> None:
    """A real page (CNN, in the corpus): the edition on edition.cnn.com is kept for the
    store, the page's own URL (named again as en-us and en-ca) is not."""
    from aggregator.pipeline import _links

    url = ("https://www.cnn.com/2023/11/06/politics/alito-prelogar-supreme-court-analysis/"
           "index.html")
    body = (corpus / "articles" / "newspaper4k" / "cnn_001" / "source.html").read_bytes()
    article = extract_article(body, url)
    assert article.language == "en"
    assert Alternate(url.replace("www.", "edition."), "en-gb") in article.alternates
    links = _links(article.alternates, url, url, article.canonical_url)
    assert links == ((url.replace("https://www.", "https://edition."), "en-gb", "hreflang"),)
