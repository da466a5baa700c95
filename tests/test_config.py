"""Configuration: settings + env, feeds.yaml validation with exact positions, editing, OPML."""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from aggregator.config import (
    add_feeds,
    check_files,
    derive_name,
    export_opml,
    load_config,
    parse_bool,
    parse_duration,
    parse_size,
    read_opml,
)
from aggregator.errors import ConfigError, Problem
from aggregator.models import FeedConfig, FilterTerm, Settings, SiteRule

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_SETTINGS = ROOT / "config" / "aggregator.yaml"
BUNDLED_FEEDS = ROOT / "feeds.yaml"


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def feed_problems(tmp_path: Path, text: str | bytes, env: dict[str, str] | None = None) -> list[str]:
    """``line:col: message`` of every problem in a feeds file (settings: defaults)."""
    path = write(tmp_path / "feeds.yaml", text)
    problems = check_files(None, str(path), env={} if env is None else env)
    assert all(p.file == str(path) for p in problems)
    return [f"{p.line}:{p.col}: {p.message}" for p in problems]


def settings_problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    path = write(tmp_path / "aggregator.yaml", text)
    problems = check_files(str(path), None, env={} if env is None else env)
    return [
        f"{'' if p.file == str(path) else p.file + ':'}{p.line}:{p.col}: {p.message}"
        for p in problems
    ]


def load_feeds(tmp_path: Path, text: str, env: dict[str, str] | None = None):  # noqa: ANN201
    path = write(tmp_path / "feeds.yaml", text)
    return load_config(None, str(path), env={} if env is None else env)


# --------------------------------------------------------------------------- scalars


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (900, 900.0),
        (1.5, 1.5),
        ("900", 900.0),
        ("15m", 900.0),
        ("1h", 3600.0),
        ("7d", 604800.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("2W", 1209600.0),
        (" 30 s ", 30.0),
        (0, 0.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["fast", "", "15x", "m", "-5", "1h fast", True, None, [1], "inf"])
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(value)


def test_parse_size_and_bool() -> None:
    assert parse_size(1024) == 1024
    assert parse_size("15MB") == 15 * 1024 * 1024
    assert parse_size("512 KiB") == 512 * 1024
    assert parse_size("1g") == 1024**3
    with pytest.raises(ValueError, match="invalid size"):
        parse_size("lots")
    for text in ("true", "YES", "on", "1"):
        assert parse_bool(text) is True
    for text in ("false", "No", "OFF", "0"):
        assert parse_bool(text) is False
    with pytest.raises(ValueError, match="invalid boolean"):
        parse_bool("maybe")


# --------------------------------------------------------------------------- bundled files


def test_bundled_settings_file_lists_every_field_with_its_default() -> None:
    text = BUNDLED_SETTINGS.read_text(encoding="utf-8")
    data = YAML(typ="safe").load(text)
    # Settings unset by default (None) are shown commented out, with an example.
    optional = {f.name for f in dataclasses.fields(Settings) if f.default is None}
    assert optional == {"base_url"}
    assert set(data) == {f.name for f in dataclasses.fields(Settings)} - optional
    for name in optional:
        assert re.search(rf"^# {name}: \S", text, re.M), name
    config = load_config(str(BUNDLED_SETTINGS), None, env={})
    assert config.settings == Settings()
    assert config.settings.database == "var/aggregator.db"
    assert config.settings.output_dir == "var/public"
    assert config.settings.listen == "127.0.0.1:8080"


def test_bundled_feeds_pass_check() -> None:
    assert check_files(str(BUNDLED_SETTINGS), str(BUNDLED_FEEDS), env={}) == []


def test_bundled_feeds_cover_the_region_languages_and_outputs() -> None:
    config = load_config(str(BUNDLED_SETTINGS), str(BUNDLED_FEEDS), env={})
    assert len(config.feeds) >= 15
    by_lang: dict[str, int] = {}
    for feed in config.feeds:
        assert feed.language and feed.tags and feed.title, feed.name
        assert feed.url.startswith("https://"), feed.name
        by_lang[feed.language] = by_lang.get(feed.language, 0) + 1
    for lang in ("en", "ru", "hy", "az", "ka"):
        assert by_lang.get(lang, 0) >= 2, (lang, by_lang)
    tags = {t for f in config.feeds for t in f.tags}
    assert {"georgia", "armenia", "azerbaijan", "south-caucasus"} <= tags

    outputs = {o.name: o for o in config.outputs}
    assert len(outputs) == 3
    karabakh = outputs["karabakh"].filter.include[0]
    # The alias turned one word into every spelling.
    assert {"Karabakh", "Ղարաբաղ", "Карабах", "Qarabağ", "ყარაბაღი"} <= set(karabakh.spellings)
    georgian = outputs["georgian"].filter
    assert georgian.languages == ("ka",)
    assert georgian.exclude[0].field == "category"
    assert "sport" in georgian.exclude[0].spellings
    assert dict(config.aliases)["Gyumri"][0] == "Gyumri"


# --------------------------------------------------------------------------- feeds.yaml: values

FULL = """\
feeds:
  - name: civil-ge            # a comment
    url: https://civil.ge/feed
    title: Civil.ge
    language: en
    tags: [georgia, south-caucasus]
    interval: 30m
    full_text: false
    allow_private_network: true
    site_url: https://civil.ge/
    rules:
      body: "article .entry-content"
      strip: [".share", ".related"]
  - name: news-am
    url: https://news.am/eng/rss/
aliases:
  Gyumri: [Գյումրի, Гюмри]
outputs:
  - name: gyumri
    title: Gyumri
    description: All about Gyumri
    limit: 50
    formats: [atom, json]
    filter:
      include: ["gyumri | Ширак", {pattern: "^Breaking", field: title, regex: true}, {any: [a, b]}]
      exclude: [{pattern: sport, field: category}]
      sources: [civil-ge, georgia, en]
      languages: [en, ru]
      max_age: 7d
      min_words: 100
      min_outlets: 2
"""


def test_full_feeds_file_becomes_models(tmp_path: Path) -> None:
    config = load_feeds(tmp_path, FULL)
    civil, news = config.feeds
    assert civil == FeedConfig(
        name="civil-ge",
        url="https://civil.ge/feed",
        language="en",
        tags=("georgia", "south-caucasus"),
        title="Civil.ge",
        interval=1800.0,
        full_text=False,
        allow_private_network=True,
        rule=SiteRule(body="article .entry-content", strip=(".share", ".related")),
        line=2,
        site_url="https://civil.ge/",
    )
    assert news.interval is None and news.full_text is None and news.line == 14
    (output,) = config.outputs
    assert (output.name, output.title, output.limit, output.formats) == (
        "gyumri", "Gyumri", 50, ("atom", "json"),
    )  # fmt: skip
    assert output.line == 19
    spec = output.filter
    # Alias key matched case-insensitively; the key itself is one of its spellings.
    assert spec.include[0] == FilterTerm(("Gyumri", "Գյումրի", "Гюмри", "Ширак"), line=25, col=17)
    assert spec.include[1] == FilterTerm(("^Breaking",), field="title", regex=True, line=25, col=35)
    assert spec.include[2].spellings == ("a", "b")
    assert spec.exclude == (FilterTerm(("sport",), field="category", line=26, col=17),)
    assert spec.sources == ("civil-ge", "georgia", "en")
    assert spec.languages == ("en", "ru")
    assert (spec.max_age, spec.min_words, spec.min_outlets) == (604800.0, 100, 2)
    assert config.aliases == (("Gyumri", ("Gyumri", "Գյումրի", "Гюмри")),)


def test_without_outputs_one_output_all(tmp_path: Path) -> None:
    config = load_feeds(
        tmp_path,
        "feeds:\n  - name: a\n    url: https://a.example/\n",
        env={"AGGREGATOR_COMBINED_LIMIT": "77"},
    )
    (output,) = config.outputs
    assert (output.name, output.title, output.limit, output.formats) == (
        "all", "All feeds", 77, ("atom", "rss", "json"),
    )  # fmt: skip
    assert output.filter.include == ()


def test_no_paths_means_defaults() -> None:
    config = load_config(None, None, env={})
    assert config.settings == Settings() and config.feeds == ()
    assert [o.name for o in config.outputs] == ["all"]


def test_regex_is_not_split_and_keywords_are(tmp_path: Path) -> None:
    config = load_feeds(
        tmp_path,
        "feeds: []\noutputs:\n  - name: o\n    filter:\n"
        "      include: [{pattern: 'a|b', regex: true}, {pattern: 'a | b'}, solo]\n",
    )
    terms = config.outputs[0].filter.include
    assert [t.spellings for t in terms] == [("a|b",), ("a", "b"), ("solo",)]


def test_yaml_12_no_is_a_string_name(tmp_path: Path) -> None:
    config = load_feeds(tmp_path, "feeds:\n  - name: no\n    url: https://no.example/\n")
    assert config.feeds[0].name == "no"


def test_aliases_and_merge_keys_work_within_limits(tmp_path: Path) -> None:
    config = load_feeds(
        tmp_path,
        "x-common: &common {language: ka, tags: [georgia]}\n"
        "feeds:\n"
        "  - <<: *common\n    name: a\n    url: https://a.example/\n"
        "  - <<: *common\n    name: b\n    url: https://b.example/\n    language: ru\n",
    )
    assert [(f.language, f.tags) for f in config.feeds] == [
        ("ka", ("georgia",)),
        ("ru", ("georgia",)),
    ]


# --------------------------------------------------------------------------- feeds.yaml: problems


def test_unknown_keys_suggest_the_right_one(tmp_path: Path) -> None:
    text = (
        "feeds:\n"
        "  - name: a\n"
        "    url: https://a.example/\n"
        "    intervall: 30m\n"
        "    rules: {bodi: x}\n"
        "workers: 3\n"
        "outputz: []\n"
        "outputs:\n"
        "  - name: o\n"
        "    include: [x]\n"
        "    filter: {languages: [en], sourcez: [a]}\n"
    )
    assert feed_problems(tmp_path, text) == [
        "4:5: unknown key 'intervall' in feed; did you mean 'interval'?",
        "5:13: unknown key 'bodi' in rules; did you mean 'body'?",
        "6:1: unknown key 'workers' in feeds file; it belongs in config/aggregator.yaml",
        "7:1: unknown key 'outputz' in feeds file; did you mean 'outputs'?",
        "10:5: unknown key 'include' in output; it belongs under 'filter:'",
        "11:31: unknown key 'sourcez' in filter; did you mean 'sources'?",
    ]


def test_missing_required_keys(tmp_path: Path) -> None:
    text = (
        "feeds:\n"
        "  - name: a\n"
        "  - url: https://b.example/\n"
        "    title: B\n"
        "  - name:\n"
        "    url: https://c.example/\n"
        "outputs:\n"
        "  - title: nameless\n"
    )
    assert feed_problems(tmp_path, text) == [
        "2:5: feed is missing required key 'url'",
        "3:5: feed is missing required key 'name'",
        "5:5: 'name' has no value",
        "8:5: output is missing required key 'name'",
    ]
    assert feed_problems(tmp_path, "outputs: []\n") == [
        "1:1: feeds file is missing required key 'feeds'"
    ]


def test_wrong_types(tmp_path: Path) -> None:
    text = (
        "feeds:\n"
        "  - name: a\n"
        "    url: https://a.example/\n"
        "    tags: georgia\n"
        "    interval: fast\n"
        "    full_text: maybe\n"
        "    title: [x]\n"
        "    rules: strip\n"
        "outputs:\n"
        "  - name: o\n"
        "    limit: many\n"
        "    formats: [atom, html]\n"
        "    filter:\n"
        "      min_outlets: 0\n"
        "      max_age: soon\n"
        "      include: Karabakh\n"
    )
    assert feed_problems(tmp_path, text) == [
        "4:11: tags: expected a list, e.g. tags: [georgia, south-caucasus], got a string"
        " ('georgia'): write tags: [georgia]",
        "5:15: interval: invalid duration 'fast': use seconds (900) or a number with a unit"
        " s, m, h, d or w (30s, 15m, 1h, 7d, 1h30m)",
        "6:16: full_text: expected true or false, got a string ('maybe')",
        "7:12: title: expected a string, got a list",
        "8:12: rules: expected a mapping, got a string ('strip')",
        "11:12: limit: expected an integer, got a string ('many')",
        "12:21: formats: unknown format 'html'",
        "14:20: min_outlets: must be 1 or more, got 0",
        "15:16: max_age: invalid duration 'soon': use seconds (900) or a number with a unit"
        " s, m, h, d or w (30s, 15m, 1h, 7d, 1h30m)",
        '16:16: include: expected a list, e.g. include: ["Karabakh | Карабах"], got a string'
        " ('Karabakh'): write include: [Karabakh]",
    ]


def test_names_must_be_strings_and_slugs(tmp_path: Path) -> None:
    text = (
        "feeds:\n"
        "  - name: false\n"
        "    url: https://a.example/\n"
        "  - name: 123\n"
        "    url: https://b.example/\n"
        '  - name: "123"\n'
        "    url: https://c.example/\n"
        "  - name: Civil GE\n"
        "    url: https://d.example/\n"
    )
    assert feed_problems(tmp_path, text) == [
        '2:11: name: expected a string, got a boolean (false): quote it (name: "false")',
        '4:11: name: expected a string, got an integer (123): quote it (name: "123")',
        "8:11: invalid feed name 'Civil GE': use lower-case letters, digits, '.', '_' and '-',"
        " starting with a letter or digit (e.g. 'civil-ge')",
    ]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://a.example/feed", "scheme must be http or https, got 'ftp'"),
        ("a.example/feed", "scheme must be http or https, got none"),
        ("'https://'", "no host"),
        ("'https://a.example/my feed'", "contains a space (percent-encode it as %20)"),
        ("https://a.example:99999/", "Port out of range 0-65535"),
    ],
)
def test_bad_urls(tmp_path: Path, url: str, message: str) -> None:
    problems = feed_problems(tmp_path, f"feeds:\n  - name: a\n    url: {url}\n")
    assert len(problems) == 1
    assert problems[0].startswith("3:10: url: invalid URL ")
    assert problems[0].endswith(message)


def test_duplicates(tmp_path: Path) -> None:
    text = (
        "feeds:\n"
        "  - name: a\n"
        "    url: https://News.AM/eng/rss/\n"
        "  - name: a\n"
        "    url: https://other.example/\n"
        "  - name: b\n"
        "    url: http://news.am/eng/rss\n"  # same feed: host case, scheme, slash
        "  - name: c\n"
        "    url: https://c.example/\n"
        "    url: https://c2.example/\n"
        "outputs:\n"
        "  - name: o\n"
        "  - name: o\n"
    )
    assert feed_problems(tmp_path, text) == [
        "4:11: duplicate feed name 'a' (first at line 2)",
        "7:10: duplicate feed URL: feed 'a' at line 3 already polls it",
        "10:5: duplicate key 'url' (first defined at line 9)",
        "13:11: duplicate output name 'o' (first at line 12)",
    ]


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    text = (
        "feeds:\n"
        "  - name: A\n    url: ftp://x\n    tags: x\n"
        "  - name: b\n    url: https://b.example/\n    language: english\n"
    )
    path = write(tmp_path / "feeds.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config(None, str(path), env={})
    assert len(info.value.problems) == 4
    assert str(info.value).splitlines()[0].startswith(f"{path}:2:11: invalid feed name 'A'")
    assert f"{path}:7:15: language: 'english' is not a language code" in str(info.value)


def test_interval_bounds_come_from_settings(tmp_path: Path) -> None:
    text = (
        "feeds:\n"
        "  - name: a\n    url: https://a.example/\n    interval: 1m\n"
        "  - name: b\n    url: https://b.example/\n    interval: 2d\n"
        "  - name: c\n    url: https://c.example/\n    interval: 600\n"
    )
    assert feed_problems(tmp_path, text) == [
        "4:15: interval: 1m is outside the allowed range 5m..1d (settings min_interval/max_interval)",
        "7:15: interval: 2d is outside the allowed range 5m..1d (settings min_interval/max_interval)",
    ]
    assert feed_problems(tmp_path, text, env={"AGGREGATOR_MIN_INTERVAL": "30s",
                                              "AGGREGATOR_MAX_INTERVAL": "7d"}) == []


def test_filter_term_problems(tmp_path: Path) -> None:
    text = (
        "feeds:\n"
        "  - name: a\n    url: https://a.example/\n    language: en\n    tags: [georgia]\n"
        "outputs:\n"
        "  - name: o\n"
        "    filter:\n"
        "      include:\n"
        "        - 'Karabakh | '\n"
        "        - {pattern: '(unclosed', regex: true}\n"
        "        - {pattern: x, field: titel}\n"
        "        - {pattern: x, any: [y]}\n"
        "        - 42\n"
        "      sources: [a, Georgia, EN, georgai]\n"
        "      languages: [english]\n"
    )
    assert feed_problems(tmp_path, text) == [
        "10:11: empty alternative in filter term (check the '|' separators)",
        "11:11: invalid regular expression '(unclosed': missing ), unterminated subpattern"
        " at position 0",
        "12:31: field: unknown field 'titel'; use one of title, text, author, category, url;"
        " did you mean 'title'?",
        "13:11: filter term needs exactly one of 'pattern' or 'any'",
        "14:11: filter term: expected a string or a mapping with 'pattern', got an integer (42)",
        "15:33: sources: 'georgai' is no feed name, tag or language; did you mean 'georgia'?",
        "16:19: languages: 'english' is not a language code",
    ]


def test_prefer_languages_per_output(tmp_path: Path) -> None:
    text = (
        "feeds:\n  - name: a\n    url: https://a.example/\n"
        "outputs:\n"
        "  - name: ru\n"
        "    prefer_languages: [ru, en-GB, ru]\n"
        "  - name: plain\n"
    )
    outputs = load_feeds(tmp_path, text).outputs
    assert outputs[0].prefer_languages == ("ru", "en-GB")  # duplicates once
    assert outputs[1].prefer_languages == ()
    bad = (
        "feeds:\n  - name: a\n    url: https://a.example/\n"
        "outputs:\n"
        "  - name: o\n"
        "    prefer_languages: [english, ka]\n"
        "  - name: p\n"
        "    prefer_languages: ru\n"
        "  - name: q\n"
        "    filter: {prefer_languages: [ru]}\n"
    )
    assert feed_problems(tmp_path, bad) == [
        "6:24: prefer_languages: 'english' is not a language code",
        "8:23: prefer_languages: expected a list, e.g. prefer_languages: [en, ru], got a"
        " string ('ru'): write prefer_languages: [ru]",
        "10:14: unknown key 'prefer_languages' in filter; it belongs in the output, beside"
        " 'filter:'",
    ]


def test_duplicate_alias_names_ignore_case(tmp_path: Path) -> None:
    text = "feeds: []\naliases:\n  Gyumri: [Гюмри]\n  gyumri: [Gümrü]\n  Kars: Карс\n"
    assert feed_problems(tmp_path, text) == [
        "4:3: alias 'gyumri' repeats alias 'Gyumri' (case is ignored)",
        "5:9: Kars: expected a list, e.g. Kars: [Gyumri, Гюмри], got a string ('Карс'):"
        " write Kars: [Карс]",
    ]


# --------------------------------------------------------------------------- feeds.yaml: YAML level


def test_empty_files(tmp_path: Path) -> None:
    message = "1:1: empty file: expected a mapping with a `feeds:` list"
    assert feed_problems(tmp_path, "") == [message]
    assert feed_problems(tmp_path, "# nothing but a comment\n\n") == [message]
    assert feed_problems(tmp_path, "- name: a\n") == [
        "1:1: expected a mapping with a `feeds:` list, got a list"
    ]


def test_syntax_errors_have_ruamel_positions(tmp_path: Path) -> None:
    assert feed_problems(tmp_path, "feeds:\n  - name: a\n    url: [x\n") == [
        "4:1: YAML syntax error: expected ',' or ']', but got '<stream end>'"
        " (while parsing a flow sequence at line 3)"
    ]
    assert feed_problems(tmp_path, "feeds:\n  - name: a\n   url: b\n") == [
        "3:4: YAML syntax error: expected <block end>, but found '<block mapping start>'"
        " (while parsing a block collection at line 2)"
    ]
    assert feed_problems(tmp_path, "feeds: []\n---\nfeeds: []\n") == [
        "2:1: YAML syntax error: but found another document"
        " (expected a single document in the stream at line 1)"
    ]


def test_tabs_are_named(tmp_path: Path) -> None:
    text = "feeds:\n  - name: a\n\turl: https://a.example/\n  - name: b\n  \ttags: [x]\n"
    assert feed_problems(tmp_path, text) == [
        "3:1: tab character: YAML indents with spaces",
        "5:3: tab character: YAML indents with spaces",
    ]


def test_bom_and_crlf_keep_line_numbers(tmp_path: Path) -> None:
    text = "\ufefffeeds:\r\n  - name: a\r\n    url: https://a.example/\r\n    tags: x\r\n"
    assert feed_problems(tmp_path, text) == [
        "4:11: tags: expected a list, e.g. tags: [georgia, south-caucasus], got a string ('x'):"
        " write tags: [x]"
    ]
    config = load_feeds(tmp_path, text.replace("tags: x", "tags: [x]"))
    assert config.feeds[0].name == "a" and config.feeds[0].tags == ("x",)


def test_not_utf8_and_control_characters(tmp_path: Path) -> None:
    assert feed_problems(tmp_path, b"feeds:\n  - name: caf\xe9\n") == [
        "2:14: not valid UTF-8 (byte 0xe9): save as UTF-8"
    ]
    assert feed_problems(tmp_path, "feeds:\n  - name: a\x07\n") == [
        "2:12: character U+0007 is not allowed in YAML"
    ]


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert check_files(None, str(missing), env={}) == [Problem(str(missing), 1, 1, "file not found")]


def test_python_tags_are_refused_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = (
        "feeds:\n"
        "  - name: a\n"
        "    url: https://a.example/\n"
        f"    title: !!python/object/apply:os.system ['touch {marker}']\n"
        "  - !custom {name: b, url: 'https://b.example/'}\n"
        "  - name: !!binary aGVsbG8=\n"
        "    url: https://c.example/\n"
    )
    assert feed_problems(tmp_path, text) == [
        "4:12: YAML tag !!python/object/apply:os.system is not allowed (only plain values are)",
        "5:5: YAML tag !custom is not allowed (only plain values are)",
        "6:11: YAML tag !!binary is not allowed (only plain values are)",
    ]
    assert not marker.exists()


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [" + ",".join(["*" + prev] * 9) + "]")
        prev = name
    lines.append("feeds: *i")
    # Refused before expanding (9**9 strings would never fit): the message says so.
    problems = feed_problems(tmp_path, "\n".join(lines) + "\n")
    assert len(problems) == 1
    # Pointed at the first use of the largest anchor: `feeds: *i` on line 10.
    assert problems[0].startswith("10:8: YAML aliases expand to ")
    assert problems[0].endswith("refusing a possible alias bomb")


def test_recursive_alias_and_deep_nesting(tmp_path: Path) -> None:
    assert feed_problems(tmp_path, "feeds: &x [*x]\n") == [
        "1:8: recursive YAML alias: an anchored value contains itself"
    ]
    problems = feed_problems(tmp_path, "feeds: " + "[" * 5000 + "]" * 5000 + "\n")
    assert problems == ["1:71: nesting deeper than 64 levels"]


def test_deep_block_nesting_is_caught_too(tmp_path: Path) -> None:
    """Block style, deep enough that ruamel's recursive composer would overflow the stack:
    the quick bound that skips the event pass must not let these through, and the event pass
    stops them at the limit, with its position."""
    compact = "feeds:\n" + "- " * 2000 + "x\n"  # sequences nested on one line
    assert feed_problems(tmp_path, compact) == ["2:127: nesting deeper than 64 levels"]
    # Mappings whose sequences share the key's indentation: two levels per two columns.
    lines = ["feeds:"] + [f"{'  ' * depth}- k{depth}:" for depth in range(1000)]
    deep = "\n".join(lines) + "\n"
    assert feed_problems(tmp_path, deep) == ["33:65: nesting deeper than 64 levels"]


# --------------------------------------------------------------------------- settings and env


def test_settings_file_values_and_units(tmp_path: Path) -> None:
    path = write(
        tmp_path / "aggregator.yaml",
        "database: /srv/agg.db\nlisten: '[::1]:9000'\nbase_url: https://news.example/feeds\n"
        "default_interval: 30m\nfeed_max_bytes: 2MB\nfull_text: no\nlog_level: debug\n"
        "allow_private_hosts: [10.0.0.0/8, intranet.example, '192.168.1.5']\njitter: 0\n",
    )
    s = load_config(str(path), None, env={}).settings
    assert s.database == "/srv/agg.db" and s.listen == "[::1]:9000"
    assert s.base_url == "https://news.example/feeds/"  # outputs are joined onto it
    assert (s.default_interval, s.feed_max_bytes, s.full_text) == (1800.0, 2 * 1024**2, False)
    assert s.log_level == "DEBUG" and s.jitter == 0.0
    assert s.allow_private_hosts == ("10.0.0.0/8", "intranet.example", "192.168.1.5")
    assert s.workers == Settings().workers  # untouched fields keep defaults


def test_settings_file_problems(tmp_path: Path) -> None:
    text = (
        "listen: localhost\n"
        "workers: -1\n"
        "allow_private_hosts: [10.0.0.1/8, 'bad host', 192.168.0.0/16]\n"
        "full_text: maybe\n"
        "workerz: 3\n"
        "per_host_delay: 1 minute\n"
        "dedup_threshold: 1.5\n"
        "connect_timeout: 0\n"
        "database: 5\n"
        "feeds: []\n"
    )
    assert settings_problems(tmp_path, text) == [
        "1:9: listen must be host:port (e.g. 127.0.0.1:8080), got 'localhost'",
        "2:10: workers must be positive, got -1",
        "3:23: allow_private_hosts: '10.0.0.1/8' has host bits set; did you mean '10.0.0.0/8'?",
        "3:35: allow_private_hosts: 'bad host' is not a host name, IP address or CIDR network",
        "4:12: full_text: expected true or false, got a string ('maybe')",
        "5:1: unknown key 'workerz' in settings; did you mean 'workers'?",
        "6:17: per_host_delay: invalid duration '1 minute': use seconds (900) or a number with"
        " a unit s, m, h, d or w (30s, 15m, 1h, 7d, 1h30m)",
        "7:18: dedup_threshold must satisfy 0 < x <= 1, got 1.5",
        "8:18: connect_timeout must be positive, got 0.0",
        '9:11: database: expected a string, got an integer (5): quote it (database: "5")',
        "10:1: unknown key 'feeds' in settings; it belongs in feeds.yaml",
    ]


def test_settings_cross_check_and_empty_file(tmp_path: Path) -> None:
    assert settings_problems(tmp_path, "min_interval: 1h\ndefault_interval: 15m\n") == [
        "2:19: intervals must satisfy min_interval <= default_interval <= max_interval"
        " (got 1h <= 15m <= 1d)"
    ]
    path = write(tmp_path / "empty.yaml", "# all defaults\n")
    assert load_config(str(path), None, env={}).settings == Settings()


def test_env_overrides_every_kind(tmp_path: Path) -> None:
    path = write(tmp_path / "aggregator.yaml", "database: from-file.db\nworkers: 3\n")
    env = {
        "AGGREGATOR_DATABASE": "/tmp/env.db",
        "AGGREGATOR_OUTPUT_DIR": "/tmp/public",
        "AGGREGATOR_LISTEN": "0.0.0.0:9999",
        "AGGREGATOR_PER_HOST_DELAY": "2.5",
        "AGGREGATOR_ALLOW_PRIVATE_HOSTS": "127.0.0.1, 10.0.0.0/8,,intranet",
        "AGGREGATOR_FULL_TEXT": "off",
        "AGGREGATOR_DEFAULT_INTERVAL": "1h",
        "AGGREGATOR_PAGE_MAX_BYTES": "1MB",
        "AGGREGATOR_SHARED": "/not/a/setting",  # other AGGREGATOR_* variables are ignored
    }
    s = load_config(str(path), None, env=env).settings
    assert s.database == "/tmp/env.db" and s.output_dir == "/tmp/public"
    assert s.workers == 3  # the file still counts where env says nothing
    assert s.listen == "0.0.0.0:9999" and s.per_host_delay == 2.5
    assert s.allow_private_hosts == ("127.0.0.1", "10.0.0.0/8", "intranet")
    assert s.full_text is False and s.default_interval == 3600.0
    assert s.page_max_bytes == 1024**2
    empty = load_config(None, None, env={"AGGREGATOR_ALLOW_PRIVATE_HOSTS": ""}).settings
    assert empty.allow_private_hosts == ()


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGGREGATOR_WORKERS", "5")
    assert load_config(None, None).settings.workers == 5


def test_env_problems_name_the_variable(tmp_path: Path) -> None:
    env = {
        "AGGREGATOR_WORKERS": "many",
        "AGGREGATOR_FULL_TEXT": "perhaps",
        "AGGREGATOR_DEFAULT_INTERVAL": "soon",
        "AGGREGATOR_LISTEN": "8080",
        "AGGREGATOR_ALLOW_PRIVATE_HOSTS": "10.0.0.0/33",
        "AGGREGATOR_JITTER": "",
    }
    problems = check_files(None, None, env=env)
    assert {p.file for p in problems} == {"$" + k for k in env}
    assert all((p.line, p.col) == (1, 1) for p in problems)
    text = "\n".join(str(p) for p in problems)
    assert "$AGGREGATOR_WORKERS:1:1: AGGREGATOR_WORKERS: expected an integer, got 'many'" in text
    assert "$AGGREGATOR_FULL_TEXT:1:1: AGGREGATOR_FULL_TEXT: invalid boolean 'perhaps'" in text
    assert "AGGREGATOR_DEFAULT_INTERVAL: invalid duration 'soon'" in text
    assert "AGGREGATOR_LISTEN: listen must be host:port" in text
    assert "AGGREGATOR_ALLOW_PRIVATE_HOSTS: '10.0.0.0/33' is not a valid CIDR network" in text
    assert "$AGGREGATOR_JITTER:1:1: AGGREGATOR_JITTER: empty value" in text


def test_problems_are_ordered_settings_env_feeds(tmp_path: Path) -> None:
    settings = write(tmp_path / "s.yaml", "workers: 0\n")
    feeds = write(tmp_path / "f.yaml", "feeds:\n  - name: a\n")
    problems = check_files(str(settings), str(feeds), env={"AGGREGATOR_JITTER": "2"})
    assert [p.file for p in problems] == [str(settings), "$AGGREGATOR_JITTER", str(feeds)]


# --------------------------------------------------------------------------- add_feeds

OPERATOR_FILE = """\
# My feeds. Keep this comment.
feeds:
  # Georgia first
  - name: civil-ge   # English
    url: https://civil.ge/feed
    tags: [georgia]

  - name: netgazeti
    url: "https://netgazeti.ge/feed/"
    rules:
      strip: [".share"]
# --- below the list: aliases

aliases:
  Tbilisi: [Тбилиси, თბილისი]   # capital
outputs:
  - name: all
"""


def test_add_feeds_keeps_the_operators_text(tmp_path: Path) -> None:
    path = write(tmp_path / "feeds.yaml", OPERATOR_FILE)
    added = add_feeds(
        str(path),
        [
            {"name": "agenda-ge", "url": "https://agenda.ge/en/rss", "title": "Agenda.ge",
             "language": "en", "tags": ["georgia", "south-caucasus"], "interval": "30m",
             "rules": {"body": "article", "strip": [".ad"]}},
            {"name": "civil-ge", "url": "https://elsewhere.example/feed"},  # name taken
            {"name": "civil-again", "url": "https://CIVIL.ge/feed/"},  # URL taken
            {"url": "https://oc-media.org/feed/", "title": "OC Media"},  # name derived
        ],
    )
    assert added == ["agenda-ge", "oc-media"]
    text = path.read_text(encoding="utf-8")
    head, tail = OPERATOR_FILE.split("# --- below the list")
    assert text.startswith(head)  # everything above is byte for byte the same
    assert text.endswith("# --- below the list" + tail)
    inserted = text[len(head) : -len("# --- below the list" + tail)]
    assert inserted == (
        "  - name: agenda-ge\n"
        "    url: https://agenda.ge/en/rss\n"
        "    title: Agenda.ge\n"
        "    language: en\n"
        "    tags: [georgia, south-caucasus]\n"
        "    interval: 30m\n"
        "    rules:\n"
        "      body: article\n"
        "      strip: [.ad]\n"
        "  - name: oc-media\n"
        "    url: https://oc-media.org/feed/\n"
        "    title: OC Media\n"
    )
    config = load_config(None, str(path), env={})
    assert [f.name for f in config.feeds] == ["civil-ge", "netgazeti", "agenda-ge", "oc-media"]
    assert config.feeds[2].rule == SiteRule(body="article", strip=(".ad",))
    assert add_feeds(str(path), [{"name": "agenda-ge", "url": "https://agenda.ge/en/rss"}]) == []
    assert path.read_text(encoding="utf-8") == text


def test_add_feeds_refuses_invalid_feeds_and_writes_nothing(tmp_path: Path) -> None:
    path = write(tmp_path / "feeds.yaml", OPERATOR_FILE)
    with pytest.raises(ConfigError) as info:
        add_feeds(
            str(path),
            [{"name": "ok", "url": "https://ok.example/"},
             {"name": "Bad Name", "url": "ftp://x.example/", "colour": "red"}],
        )
    messages = [p.message for p in info.value.problems]
    assert len(messages) == 3
    assert all(m.startswith("new feed: ") and m.endswith("(nothing was written)") for m in messages)
    assert any("invalid feed name 'Bad Name'" in m for m in messages)
    assert any("scheme must be http or https, got 'ftp'" in m for m in messages)
    assert any("unknown key 'colour' in feed" in m for m in messages)
    assert path.read_text(encoding="utf-8") == OPERATOR_FILE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feeds.yaml"]  # no temp file left


def test_add_feeds_keeps_bom_crlf_and_mode(tmp_path: Path) -> None:
    path = write(tmp_path / "feeds.yaml", "\ufefffeeds:\r\n- name: x\r\n  url: https://x.example/\r\n")
    os.chmod(path, 0o640)
    assert add_feeds(str(path), [{"name": "y", "url": "https://y.example/", "tags": ["a"]}]) == ["y"]
    assert path.read_bytes() == (
        b"\xef\xbb\xbffeeds:\r\n- name: x\r\n  url: https://x.example/\r\n"
        b"- name: y\r\n  url: https://y.example/\r\n  tags: [a]\r\n"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [f.name for f in load_config(None, str(path), env={}).feeds] == ["x", "y"]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (None, "feeds:\n  - name: n\n    url: https://n.example/\n"),
        ("# comments only\n", "# comments only\nfeeds:\n  - name: n\n    url: https://n.example/\n"),
        ("outputs: []\n", "outputs: []\nfeeds:\n  - name: n\n    url: https://n.example/\n"),
    ],
)
def test_add_feeds_creates_the_list(tmp_path: Path, before: str | None, after: str) -> None:
    path = tmp_path / "feeds.yaml"
    if before is not None:
        write(path, before)
    assert add_feeds(str(path), [{"name": "n", "url": "https://n.example/"}]) == ["n"]
    assert path.read_text(encoding="utf-8") == after


def test_add_feeds_to_flow_or_empty_list_keeps_comments(tmp_path: Path) -> None:
    path = write(tmp_path / "feeds.yaml", "# head\nfeeds: []\n# tail comment\noutputs: []\n")
    assert add_feeds(str(path), [{"name": "n", "url": "https://n.example/"}]) == ["n"]
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# head\n") and "# tail comment\n" in text
    assert [f.name for f in load_config(None, str(path), env={}).feeds] == ["n"]
    assert load_config(None, str(path), env={}).outputs == ()


def test_add_feeds_on_broken_yaml_raises(tmp_path: Path) -> None:
    path = write(tmp_path / "feeds.yaml", "feeds: [\n")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        add_feeds(str(path), [{"name": "n", "url": "https://n.example/"}])
    assert path.read_text(encoding="utf-8") == "feeds: [\n"


def test_derive_name() -> None:
    assert derive_name("https://civil.ge/feed", "Civil.ge") == "civil-ge"
    assert derive_name("https://www.news.am/rus/rss/", "Новости Армении") == "news-am"
    assert derive_name("https://x.example/", "Café Ünïcode") == "cafe-unicode"
    assert derive_name("https://a.example/", "A", taken={"a", "a-2"}) == "a-3"
    assert derive_name("not a url", None) == "feed"


# --------------------------------------------------------------------------- OPML

OPML = """\
<?xml version="1.0" encoding="UTF-8"?>
<opml version="2.0">
  <head><title>Subscriptions</title></head>
  <body>
    <outline text="Georgia">
      <outline text="Civil.ge" title="Civil.ge" type="rss" xmlUrl="https://civil.ge/feed"
               htmlUrl="https://civil.ge/" category="/news,/South Caucasus"/>
      <outline text="Нетгазети" xmlUrl="https://netgazeti.ge/feed/" language="ka"/>
    </outline>
    <outline text="Also here">
      <outline text="Civil.ge copy" xmlUrl="https://civil.ge/feed/"/>
    </outline>
    <outline text="Civil.ge" xmlUrl="feed://civil.ge/ru/feed/"/>
    <outline text="A link, not a feed" type="link" url="https://example.org/"/>
  </body>
</opml>
"""


def test_read_opml_nested_outlines_tags_and_names() -> None:
    assert read_opml(OPML.encode()) == [
        {"name": "civil-ge", "url": "https://civil.ge/feed", "title": "Civil.ge",
         "site_url": "https://civil.ge/", "tags": ["georgia", "news", "south-caucasus", "also-here"]},
        {"name": "netgazeti-ge", "url": "https://netgazeti.ge/feed/", "title": "Нетгазети",
         "language": "ka", "tags": ["georgia"]},
        {"name": "civil-ge-2", "url": "http://civil.ge/ru/feed/", "title": "Civil.ge"},
    ]  # fmt: skip


def test_read_opml_in_a_legacy_encoding() -> None:
    data = (
        '<?xml version="1.0" encoding="windows-1251"?>\n<opml version="1.0"><body>'
        '<outline text="Новости Армении" xmlUrl="https://news.am/rus/rss/"/></body></opml>'
    ).encode("cp1251")
    assert read_opml(data) == [
        {"name": "news-am", "url": "https://news.am/rus/rss/", "title": "Новости Армении"}
    ]


BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE opml [\n <!ENTITY a "lollollollollollollol">\n'
    + "".join(
        f' <!ENTITY {chr(98 + i)} "' + f"&{chr(97 + i)};" * 10 + '">\n' for i in range(9)
    )
    + ']>\n<opml version="2.0"><body><outline text="&j;" xmlUrl="https://x.example/"/></body></opml>\n'
)


@pytest.mark.parametrize(
    ("data", "line", "message"),
    [
        (BILLION_LAUGHS, 2, "DOCTYPE and ENTITY declarations are not allowed in OPML"),
        (
            '<?xml version="1.0"?>\n<!DOCTYPE opml [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
            '<opml><body><outline text="&x;" xmlUrl="https://x.example/"/></body></opml>',
            2,
            "DOCTYPE and ENTITY declarations are not allowed in OPML",
        ),
        ('<opml><body>\n<outline text="&x;" xmlUrl="https://x.example/"/></body></opml>', 2,
         "not well-formed XML: undefined entity"),
        ("<rss version='2.0'><channel/></rss>", 1, "not an OPML document: root element is <rss>"),
        ("<opml><body><outline text='x'></body></opml>", 1, "not well-formed XML: mismatched tag"),
        ("", 1, "not well-formed XML: no element found"),
    ],
)
def test_read_opml_refuses_entity_tricks_and_junk(data: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError) as info:  # refused, never expanded
        read_opml(data.encode())
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.message) == ("OPML", line, message)
    assert "root:" not in str(info.value)  # nothing of /etc/passwd leaked into a message


def test_opml_export_import_round_trip(tmp_path: Path) -> None:
    text = (
        "feeds:\n"
        "  - name: civil-ge\n    url: https://civil.ge/feed\n    title: Civil.ge\n"
        "    site_url: https://civil.ge/\n    language: en\n    tags: [georgia, south-caucasus]\n"
        "  - name: tricky\n    url: 'https://t.example/rss?a=1&b=<2>'\n"
        "    title: 'Q & A \"quoted\" <tag>'\n    tags: [x]\n"
        "  - name: bare\n    url: https://bare.example/feed\n"
    )
    config = load_feeds(tmp_path, text)
    data = export_opml(config)
    root = ET.fromstring(data)  # well-formed, special characters escaped
    assert root.tag == "opml" and root.get("version") == "2.0"
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    outlines = root.findall("./body/outline")
    assert [o.get("xmlUrl") for o in outlines] == [f.url for f in config.feeds]
    assert outlines[1].get("title") == 'Q & A "quoted" <tag>'

    # OPML requires `text`: a feed without a title is exported under its name, and that
    # name comes back as its title.
    expected = [(f.url, f.title or f.name, f.tags, f.language, f.site_url) for f in config.feeds]
    imported = read_opml(data)
    assert [(f["url"], f.get("title"), tuple(f.get("tags", ())), f.get("language"),
             f.get("site_url")) for f in imported] == expected  # fmt: skip
    # And into a fresh feeds.yaml: the same feeds come back.
    fresh = tmp_path / "fresh.yaml"
    assert add_feeds(str(fresh), imported) == ["civil-ge", "q-a-quoted-tag", "bare"]
    again = load_config(None, str(fresh), env={})
    assert [(f.url, f.title, f.tags, f.language, f.site_url) for f in again.feeds] == expected


# --------------------------------------------------------------------------- load cache


def test_cached_load_reuses_a_validated_configuration_and_notices_every_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aggregator.config.load as config_module  # where feeds.yaml is parsed on a load

    feeds = write(tmp_path / "feeds.yaml",
                  "feeds:\n  - name: a\n    url: https://a.example/rss\n")
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "AGGREGATOR_WORKERS": "3"}
    first = load_config(None, str(feeds), env, cached=True)
    cache = list((tmp_path / "cache" / "aggregator").glob("config-*.pickle"))
    assert len(cache) == 1 and stat.S_IMODE(cache[0].stat().st_mode) == 0o600

    parses: list[str] = []
    real_parse = config_module._parse
    monkeypatch.setattr(config_module, "_parse",
                        lambda text, problems: parses.append(text) or real_parse(text, problems))
    assert load_config(None, str(feeds), env, cached=True) == first
    assert parses == []  # served from the cache
    assert load_config(None, str(feeds), env) == first and len(parses) == 1  # not asked to

    # Any change to the inputs is a new key: the file, the environment.
    write(feeds, "feeds:\n  - name: b\n    url: https://b.example/rss\n")
    assert [f.name for f in load_config(None, str(feeds), env, cached=True).feeds] == ["b"]
    changed = load_config(None, str(feeds), {**env, "AGGREGATOR_WORKERS": "5"}, cached=True)
    assert changed.settings.workers == 5

    # An invalid file is never cached: every load reports it.
    write(feeds, "feeds:\n  - name: b\n    ulr: https://b.example/rss\n")
    for _ in range(2):
        with pytest.raises(ConfigError):
            load_config(None, str(feeds), env, cached=True)


def test_cache_files_others_could_write_or_that_do_not_load_are_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aggregator.config.load as config_module  # where feeds.yaml is parsed on a load

    feeds = write(tmp_path / "feeds.yaml",
                  "feeds:\n  - name: a\n    url: https://a.example/rss\n")
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    good = load_config(None, str(feeds), env, cached=True)
    (entry,) = (tmp_path / "cache" / "aggregator").glob("config-*.pickle")
    parses: list[str] = []
    real_parse = config_module._parse
    monkeypatch.setattr(config_module, "_parse",
                        lambda text, problems: parses.append(text) or real_parse(text, problems))

    os.chmod(entry, 0o666)  # group/world writable: not trusted
    assert load_config(None, str(feeds), env, cached=True) == good
    assert len(parses) == 1
    entry.write_bytes(b"not a pickle")
    os.chmod(entry, 0o600)
    assert load_config(None, str(feeds), env, cached=True) == good
    assert len(parses) == 2
    # No cache directory at all (no HOME, no XDG_CACHE_HOME): loads still work.
    assert load_config(None, str(feeds), {}, cached=True) == good


def test_cache_key_covers_the_code_of_every_module_of_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change to any part of the configuration code (a validation rule in the feeds module,
    a conversion in the settings module, ...) must not serve a configuration it made before."""
    import shutil

    import aggregator.config.cache as cache_module
    import aggregator.config.load as load_module

    code = tmp_path / "code"
    shutil.copytree(Path(cache_module.__file__).parent, code,
                    ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache_module, "_PACKAGE", code)
    parses: list[str] = []
    real_parse = load_module._parse
    monkeypatch.setattr(load_module, "_parse",
                        lambda text, problems: parses.append(text) or real_parse(text, problems))
    feeds = write(tmp_path / "feeds.yaml",
                  "feeds:\n  - name: a\n    url: https://a.example/rss\n")
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}

    modules = sorted(code.glob("*.py"))
    assert {"positioned.py", "settings.py", "feeds.py", "load.py", "cache.py"} <= {
        m.name for m in modules}
    load_config(None, str(feeds), env, cached=True)
    load_config(None, str(feeds), env, cached=True)
    assert len(parses) == 1
    for number, module in enumerate(modules, 2):
        module.write_text(module.read_text() + "\n# changed\n")
        load_config(None, str(feeds), env, cached=True)
        assert len(parses) == number, f"a change to {module.name} still hit the cache"
    # A part added to the package counts too.
    (code / "new_part.py").write_text("RULE = 1\n")
    load_config(None, str(feeds), env, cached=True)
    assert len(parses) == len(modules) + 2


def test_config_parts_import_ruamel_in_one_place_and_only_earlier_parts() -> None:
    """docs/architecture.md: ruamel.yaml in `config.positioned` only; each part imports only
    the parts listed before it in the table (no cycles, one direction)."""
    order = ["positioned", "values", "addresses", "feeds", "settings", "cache", "load", "edit",
             "opml"]
    package = ROOT / "aggregator" / "config"
    parts = {p.stem for p in package.glob("*.py")} - {"__init__"}
    assert parts == set(order)
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert [p for p in re.findall(r"^\| `config\.(\w+)` \|", doc, re.M)] == order
    for part in order:
        source = (package / f"{part}.py").read_text()
        uses_ruamel = bool(re.search(r"^\s*(from|import) ruamel", source, re.M))
        assert uses_ruamel == (part == "positioned"), part
        imported = set(re.findall(r"^from aggregator\.config\.(\w+) import", source, re.M))
        later = imported - set(order[: order.index(part)])
        assert not later, f"config.{part} imports {later}"
    outside = [p for p in (ROOT / "aggregator").rglob("*.py")
               if "config" not in p.relative_to(ROOT / "aggregator").parts
               and re.search(r"^\s*(from|import) ruamel", p.read_text(), re.M)]
    assert outside == []
