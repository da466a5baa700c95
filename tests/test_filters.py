"""Output filters: folding, keyword and regex terms in every field and script, constraints,
and the drop reasons shown by ``aggregator preview``."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import pytest

from aggregator import filters
from aggregator.errors import FilterError
from aggregator.filters import compile_filter, fold
from aggregator.models import FilterSpec, FilterTerm, Item, Outlet

from . import util

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


# A plain item: no author, no text or categories, in English, an hour old.
PLAIN: dict[str, object] = dict(
    uid="tag:aggregator,2024:test/1", feed_language="en", title="Plain title",
    author=None, published=NOW - timedelta(hours=1), updated=NOW - timedelta(hours=1),
    content_html="<p>body</p>", summary="", text="", categories=(), language=None,
)


def make_item(**kw: object) -> Item:
    return util.make_item(1, now=NOW, **{**PLAIN, **kw})


def term(
    *spellings: str, field: str | None = None, regex: bool = False, line: int = 0
) -> FilterTerm:
    return FilterTerm(
        spellings=spellings, field=field, regex=regex, line=line, col=3 if line else 0
    )


def keeps(spec: FilterSpec, item: Item) -> bool:
    return compile_filter(spec).check(item, NOW) is None


def includes(t: FilterTerm, **item_fields: object) -> bool:
    return keeps(FilterSpec(include=(t,)), make_item(**item_fields))


# --------------------------------------------------------------------------- fold


@pytest.mark.parametrize(
    "a, b",
    [
        ("ПАШИНЯН", "пашинян"),  # Cyrillic
        ("Ёлка", "елка"),  # ё folded into е
        ("ԵՐԵՎԱՆ", "երեվան"),  # Armenian
        ("Երևան", "երեւան"),  # Armenian ligature և (NFKC: ե + ւ)
        ("ᲗᲑᲘᲚᲘᲡᲘ", "თბილისი"),  # Georgian Mtavruli to Mkhedruli
        ("İstanbul", "istanbul"),
        ("ISTANBUL", "istanbul"),
        ("ıstanbul", "istanbul"),
        ("I\u0307STANBUL", "istanbul"),  # decomposed dotted capital I
        ("ƏLİYEV", "əliyev"),  # Azerbaijani schwa keeps its identity
        ("ＷＡＲ", "war"),  # NFKC: full-width Latin
        ("Straße", "strasse"),
    ],
)
def test_fold(a: str, b: str) -> None:
    assert fold(a) == b


def test_fold_keeps_distinct_letters_distinct() -> None:
    assert fold("Əli") != fold("Eli")
    assert fold("ş") != fold("s")


# --------------------------------------------------------------------------- keyword terms


@pytest.mark.parametrize(
    "spelling, title, expected",
    [
        ("war", "War in the region", True),
        ("war", "An award ceremony", False),  # no match inside a word
        ("war", "Warsaw talks", False),
        ("ran", "Tehran visit", False),  # nor at the end of a word
        ("Iran", "Tehran and Iran", True),
        ("war", "post-war reconstruction", True),  # hyphen is a word edge
        ("war", "WAR!", True),
        ("Ереван", "ЕРЕВАН сегодня", True),
        ("Ереван", "Ереванский мэр", False),  # whole words by design
        ("ереван", "«Ереван» принимает", True),
        ("Երևան", "ԵՐԵՒԱՆ, մայիսի 5", True),  # ligature vs its two-letter capital form
        ("Երևան", "Երևանում", False),
        ("თბილისი", "ᲗᲑᲘᲚᲘᲡᲘ: ახალი ამბები", True),
        ("თბილისი", "თბილისში", False),
        ("İstanbul", "istanbul görüşü", True),
        ("İstanbul", "ISTANBUL summit", True),
        ("istanbul", "ıstanbul", True),
        ("ISTANBUL", "İSTANBULDA", False),
        ("Əliyev", "ƏLİYEV Bakıda", True),
        ("South Caucasus", "the South\n  Caucasus region", True),  # any whitespace run
        ("South Caucasus", "South of the Caucasus", False),
        ("Нагорный Карабах", "В НАГОРНЫЙ  КАРАБАХ прибыли", True),
        ("C++", "Learning C++ today", True),  # edges need no word character
        ("G7", "G7 summit", True),
        ("G7", "G77 summit", False),
        ("Ёлка", "ЕЛКА у мэрии", True),
    ],
)
def test_keyword_matches_whole_words_in_any_script(
    spelling: str, title: str, expected: bool
) -> None:
    assert includes(term(spelling), title=title) is expected


def test_multi_script_spellings() -> None:
    karabakh = term("Karabakh", "Карабах", "Ղարաբաղ", "Qarabağ")
    for title in ("Karabakh talks", "Новости: Карабах", "Ղարաբաղ", "QARABAĞ bölgəsi"):
        assert includes(karabakh, title=title), title
    assert not includes(karabakh, title="Baku and Yerevan")


def test_keyword_regex_special_characters_are_literal() -> None:
    assert includes(term("a.b"), title="see a.b here")
    assert not includes(term("a.b"), title="see axb here")


# --------------------------------------------------------------------------- fields


def test_fields() -> None:
    item = dict(
        title="Summit in Tbilisi",
        text="The full text mentions Batumi.",
        summary="Summary mentions Gyumri.",
        author="Anna Petrosyan",
        categories=("Politics", "Sport"),
        url="https://news.example/sport/123",
    )
    assert includes(term("tbilisi", field="title"), **item)
    assert not includes(term("batumi", field="title"), **item)
    assert includes(term("batumi", field="text"), **item)
    assert includes(term("gyumri", field="text"), **item)  # the summary counts as text
    assert not includes(term("tbilisi", field="text"), **item)
    assert includes(term("petrosyan", field="author"), **item)
    assert not includes(term("petrosyan"), **item)  # default field is title or text
    assert includes(term("sport", field="category"), **item)  # any category
    assert not includes(term("sport"), **item)
    assert includes(term("/sport/", field="url", regex=True), **item)
    assert not includes(term("tbilisi", field="url"), **item)
    # Default field: title or text.
    assert includes(term("tbilisi"), **item) and includes(term("batumi"), **item)
    # Missing values never match.
    assert not includes(term("x", field="author"), author=None)
    assert not includes(term("x", field="url"), url=None)
    assert not includes(term("x", field="category"), categories=())


# --------------------------------------------------------------------------- regex terms


def test_regex_terms() -> None:
    inflected = term(r"Ереван\w*", regex=True)
    assert includes(inflected, title="Ереванский мэр")
    assert includes(term(r"pashinyan", regex=True), title="PASHINYAN said")  # IGNORECASE
    # No implicit word edges for regexes.
    assert includes(term("war", regex=True), title="An award")
    # Searched on the folded field too: ı/İ and Mtavruli.
    assert includes(term(r"^istanbul\b", regex=True), title="İSTANBUL summit")
    assert includes(term(r"^istanbul\b", regex=True), title="ıstanbul summit")
    assert includes(term("თბილის", regex=True), title="ᲗᲑᲘᲚᲘᲡᲘ")
    assert not includes(term(r"^\d+$", regex=True), title="no digits")


def test_invalid_regex_raises_filter_error_naming_it() -> None:
    with pytest.raises(FilterError) as info:
        compile_filter(FilterSpec(exclude=(term("ok", "(unclosed", regex=True, line=12),)))
    message = str(info.value)
    assert "(unclosed" in message and "line 12" in message and "exclude" in message


def test_unknown_field_raises_filter_error() -> None:
    with pytest.raises(FilterError, match=r"unknown field 'body'.*title, text"):
        compile_filter(FilterSpec(include=(term("x", field="body", line=4),)))


def test_empty_spelling_raises_filter_error() -> None:
    with pytest.raises(FilterError, match="empty spelling"):
        compile_filter(FilterSpec(include=(term("ok", "  "),)))
    with pytest.raises(FilterError, match="no spelling"):
        compile_filter(FilterSpec(include=(FilterTerm(spellings=()),)))


def test_check_does_not_compile_regexes(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = compile_filter(
        FilterSpec(include=(term("armenia", "Армения"), term(r"arm\w+", regex=True)))
    )

    def boom(*args: object, **kw: object) -> None:
        raise AssertionError("regex compiled during check")

    for name in ("compile", "search", "match", "fullmatch", "findall", "sub"):
        monkeypatch.setattr(filters.re, name, boom)
    items = [make_item(id=i, title=f"Армения {i}") for i in range(20)]
    assert compiled.select(items, NOW) == items


# --------------------------------------------------------------------------- include/exclude


def test_include_exclude_semantics_and_reasons() -> None:
    spec = FilterSpec(
        include=(term("armenia"), term("georgia")),
        exclude=(term("sport", field="category"), term("/ads/", field="url", regex=True)),
    )
    f = compile_filter(spec)
    assert f.check(make_item(title="Armenia today"), NOW) is None
    assert f.check(make_item(title="Georgia today"), NOW) is None  # any include term
    assert f.check(make_item(title="Azerbaijan today"), NOW) == "no include term matched"
    assert (
        f.check(make_item(title="Armenia wins", categories=("News", "SPORT")), NOW)
        == 'exclude "sport" matched category'
    )
    assert (
        f.check(make_item(title="Armenia", url="https://x.example/ads/1"), NOW)
        == 'exclude regex "/ads/" matched url'
    )
    # No include terms: everything not excluded is kept.
    only_exclude = compile_filter(FilterSpec(exclude=(term("war"),)))
    assert only_exclude.check(make_item(title="Award"), NOW) is None
    assert (
        only_exclude.check(make_item(title="War", text="..."), NOW) == 'exclude "war" matched title'
    )
    assert (
        only_exclude.check(make_item(text="The war goes on"), NOW) == 'exclude "war" matched text'
    )


def test_exclude_reason_names_the_whole_term() -> None:
    f = compile_filter(FilterSpec(exclude=(term("football", "футбол"),)))
    assert f.check(make_item(title="Футбол"), NOW) == 'exclude "football | футбол" matched title'


def test_empty_spec_keeps_everything() -> None:
    assert compile_filter(FilterSpec()).check(make_item(), NOW) is None


# --------------------------------------------------------------------------- constraints


def test_sources() -> None:
    f = compile_filter(FilterSpec(sources=("civil-ge", "armenia", "ru")))
    assert f.check(make_item(feed_name="civil-ge", feed_tags=()), NOW) is None  # name
    assert f.check(make_item(feed_name="x", feed_tags=("Armenia",)), NOW) is None  # tag
    assert f.check(make_item(feed_name="x", feed_tags=(), feed_language="ru-RU"), NOW) is None
    assert (
        f.check(make_item(feed_name="apa", feed_tags=("azerbaijan",), feed_language="az"), NOW)
        == "source apa not in [civil-ge, armenia, ru]"
    )


def test_languages() -> None:
    f = compile_filter(FilterSpec(languages=("en",)))
    assert f.check(make_item(language="en-US", feed_language="ru"), NOW) is None
    assert f.check(make_item(language=None, feed_language="en_GB"), NOW) is None
    assert f.check(make_item(language="ru", feed_language="en"), NOW) == "language ru not in [en]"
    assert (
        f.check(make_item(language=None, feed_language=None), NOW) == "language unknown not in [en]"
    )
    assert (
        compile_filter(FilterSpec(languages=("hy-AM", "ka"))).check(make_item(language="hy"), NOW)
        is None
    )


def test_max_age() -> None:
    f = compile_filter(FilterSpec(max_age=7 * 86400))
    assert f.check(make_item(published=NOW - timedelta(days=7)), NOW) is None  # boundary kept
    assert (
        f.check(make_item(published=NOW - timedelta(days=7, seconds=1)), NOW)
        == "older than max_age 7d"
    )
    g = compile_filter(FilterSpec(max_age=36 * 3600))
    assert g.check(make_item(published=NOW - timedelta(days=2)), NOW) == "older than max_age 1d12h"


def test_min_words() -> None:
    f = compile_filter(FilterSpec(min_words=200))
    assert f.check(make_item(word_count=200), NOW) is None
    assert f.check(make_item(word_count=120), NOW) == "120 words < min_words 200"


def test_min_outlets() -> None:
    outlet = Outlet("b", "B", "https://b.example/1", NOW)
    f = compile_filter(FilterSpec(min_outlets=3))
    assert f.check(make_item(outlets=(outlet, outlet)), NOW) is None
    assert f.check(make_item(outlets=(outlet,)), NOW) == "2 outlets < min_outlets 3"
    assert f.check(make_item(outlets=()), NOW) == "1 outlet < min_outlets 3"


def test_first_failing_rule_is_reported_in_documented_order() -> None:
    spec = FilterSpec(
        include=(term("armenia"),), exclude=(term("sport"),), languages=("en",), min_words=10
    )
    f = compile_filter(spec)
    item = make_item(title="Sport", language="ru", word_count=1)
    assert f.check(item, NOW) == "language ru not in [en]"
    assert f.check(replace(item, language="en"), NOW) == "1 words < min_words 10"
    assert (
        f.check(replace(item, language="en", word_count=50), NOW) == 'exclude "sport" matched title'
    )
    item = replace(item, language="en", word_count=50, title="Other")
    assert f.check(item, NOW) == "no include term matched"
    assert f.check(replace(item, title="Armenia"), NOW) is None


# --------------------------------------------------------------------------- real feeds


def _corpus_items(corpus: Path) -> list[Item]:
    items: list[Item] = []
    for path in sorted((corpus / "feeds" / "ua-2020").glob("*.xml")):
        parsed = feedparser.parse(path.read_bytes())
        for n, e in enumerate(parsed.entries):
            items.append(
                make_item(
                    id=len(items),
                    uid=f"tag:test,2020:{path.stem}/{n}",
                    feed_name=path.stem,
                    feed_language=parsed.feed.get("language"),
                    title=e.get("title", ""),
                    summary=re.sub("<[^>]+>", " ", e.get("summary", "")),
                )
            )
    return items


def test_real_feeds_keyword_versus_regex(corpus: Path) -> None:
    items = _corpus_items(corpus)
    assert len(items) > 50
    nato = compile_filter(FilterSpec(include=(term("НАТО", "NATO"),))).select(items, NOW)
    nato_titles = {i.title for i in nato}
    assert "Генсек НАТО призвал Грузию готовиться к членству" in nato_titles
    assert "Генсек НАТО призвал Грузию ускорить подготовку к членству в Альянсе" in nato_titles
    for item in nato:
        assert re.search(r"(?<!\w)(нато|nato)(?!\w)", fold(item.title + " " + item.summary))
    # Whole-word keywords miss inflected forms ("в Нагорном Карабахе"); a regex finds them.
    keyword = compile_filter(FilterSpec(include=(term("Карабах", field="title"),)))
    regex = compile_filter(
        FilterSpec(include=(term(r"Карабах\w*", r"Карабас\w*", field="title", regex=True),))
    )
    assert keyword.select(items, NOW) == []
    found = {i.title for i in regex.select(items, NOW)}
    assert any("Нагорном Карабахе" in t for t in found)
    assert any("Нагірному Карабасі" in t for t in found)


# --------------------------------------------------------------------------- stories in languages


def story(**kw: object) -> Item:
    """A story with an English (representative, earliest), a Russian and a Georgian version;
    each version's text names it."""
    en = make_item(id=1, feed_name="civil-ge", language="en", title="Border talks resume",
                   text="The commissions met in Ijevan.", word_count=200)
    ru = make_item(id=2, feed_name="civil-ge-ru", language="ru-RU", feed_language="ru",
                   title="Переговоры возобновились", text="Комиссии встретились в Иджеване.",
                   url="https://news.example/ru/1", published=en.published + timedelta(minutes=5),
                   word_count=150)
    ka = make_item(id=3, feed_name="civil-ge-ka", language=None, feed_language="ka",
                   title="მოლაპარაკებები განახლდა", text="კომისიები შეიკრიბნენ იჯევანში.",
                   url="https://news.example/ka/1", published=en.published + timedelta(minutes=9),
                   word_count=180)
    members = (en, ru, ka)
    return replace(en, story_id=7, uid="tag:story/7", members=members, outlets=tuple(
        Outlet(m.feed_name, m.feed_title, m.url, m.published) for m in members[1:]), **kw)


def choose(spec: FilterSpec, item: Item, prefer: tuple[str, ...] = ()) -> tuple[Item, str | None]:
    return compile_filter(spec, prefer).choose(item, NOW)


def test_include_matches_any_version_and_exclude_drops_on_any() -> None:
    item = story()
    # A Georgian keyword finds the story its English version represents.
    shown, reason = choose(FilterSpec(include=(term("იჯევანში"),)), item)
    assert reason is None and shown.title == "Border talks resume"
    assert choose(FilterSpec(include=(term("Ijevan"),)), item)[1] is None
    assert choose(FilterSpec(include=(term("Gyumri"),)), item)[1] == \
        "no include term matched (in 3 versions)"
    # exclude: any version; the reason names the version that matched.
    assert choose(FilterSpec(exclude=(term("Переговоры"),)), item)[1] == \
        'exclude "Переговоры" matched title of the ru version (civil-ge-ru)'
    assert choose(FilterSpec(exclude=(term("Ijevan"),)), item)[1] == \
        'exclude "Ijevan" matched text'
    # A single entry keeps its old reason.
    assert choose(FilterSpec(include=(term("Gyumri"),)), make_item())[1] == \
        "no include term matched"


def test_prefer_languages_picks_the_version_and_keeps_the_uid() -> None:
    item = story()
    shown, reason = choose(FilterSpec(), item, ("ru", "en"))
    assert reason is None
    assert (shown.title, shown.id, shown.uid, shown.story_id) == (
        "Переговоры возобновились", 2, "tag:story/7", 7)
    assert {o.feed_name for o in shown.outlets} == {"civil-ge", "civil-ge-ka"}
    assert shown.members == item.members
    assert [t.feed_name for t in shown.translations()] == ["civil-ge", "civil-ge-ka"]
    # Tags compare by primary subtag: ka-GE finds the version of a feed tagged ka.
    assert choose(FilterSpec(), item, ("ka-GE",))[0].feed_name == "civil-ge-ka"
    # None of the listed languages: the earliest version.
    assert choose(FilterSpec(), replace(item, id=2), ("hy",))[0].id == 1
    # Without prefer_languages the store's representative stays.
    assert choose(FilterSpec(), item)[0] is item


def test_languages_keeps_a_story_with_any_version_listed_and_represents_it_by_one() -> None:
    item = story()
    shown, reason = choose(FilterSpec(languages=("ka",)), item)
    assert reason is None and shown.feed_name == "civil-ge-ka"
    # The first listed language the story has, or prefer_languages order among them.
    assert choose(FilterSpec(languages=("ru", "ka")), item)[0].feed_name == "civil-ge-ru"
    assert choose(FilterSpec(languages=("ru", "ka")), item, ("ka", "en"))[0].feed_name == \
        "civil-ge-ka"
    # prefer_languages never brings back a language the filter leaves out.
    assert choose(FilterSpec(languages=("ru",)), item, ("en",))[0].feed_name == "civil-ge-ru"
    assert choose(FilterSpec(languages=("hy", "az")), item)[1] == \
        "language en, ru, ka not in [hy, az]"
    # The constraints after it read the representing version.
    spec = FilterSpec(languages=("ka",), sources=("civil-ge",))
    assert choose(spec, item)[1] == "source civil-ge-ka not in [civil-ge]"
    # select() returns the stories as represented.
    kept = compile_filter(FilterSpec(languages=("ru",))).select([item, make_item(id=9)], NOW)
    assert [k.id for k in kept] == [2]


def test_the_fullest_early_version_of_a_language_represents_it() -> None:
    item = story()
    short = make_item(id=4, feed_name="other-ru", language="ru", title="Кратко", word_count=20,
                      published=item.published + timedelta(minutes=1))
    late = make_item(id=5, feed_name="late-ru", language="ru", title="Позже", word_count=900,
                     published=item.published + timedelta(hours=8))
    members = (item.members[0], short, item.members[1], item.members[2], late)
    item = replace(item, members=members)
    assert item.version_in("ru").id == 2  # fuller than the teaser, earlier than 6 h later
    assert choose(FilterSpec(), item, ("ru",))[0].title == "Переговоры возобновились"
