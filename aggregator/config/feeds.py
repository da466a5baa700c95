"""``feeds.yaml``: feeds (with site rules and retention), spelling aliases, outputs and their
filters, validated from the positioned tree; and the feed name rule (``derive_name``)."""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

from aggregator.config.addresses import _url_error, _url_key
from aggregator.config.positioned import _Y
from aggregator.config.values import _Checker, _describe, _fmt_seconds, _suggest
from aggregator.models import FeedConfig, FilterSpec, FilterTerm, OutputConfig, Settings, SiteRule

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*\Z")
_LANG_RE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*\Z")
_TAG_RE = re.compile(r"[\w.-]+\Z")  # no spaces, commas or slashes: tags travel in OPML categories
_FIELDS = ("title", "text", "author", "category", "url")
_FORMATS = ("atom", "rss", "json")
_FEED_KEYS = (
    "name", "url", "title", "site_url", "language", "tags", "interval", "full_text",
    "allow_private_network", "rules", "entry_retention", "max_entries",
)  # fmt: skip
_RULE_KEYS = ("body", "strip")
_OUTPUT_KEYS = (
    "name", "title", "description", "limit", "archive_pages", "formats", "prefer_languages",
    "filter",
)  # fmt: skip
_FILTER_KEYS = (
    "include", "exclude", "sources", "languages", "max_age", "min_words", "min_outlets",
)  # fmt: skip
_TERM_KEYS = ("pattern", "any", "field", "regex")
_TOP_KEYS = ("feeds", "aliases", "outputs")


def _name(check: _Checker, y: _Y, what: str) -> str | None:
    name = check.string(y, "name")
    if name is None:
        return None
    if not NAME_RE.match(name):
        fixed = derive_name("", name) if name.strip() else ""
        hint = f" (e.g. '{fixed}')" if fixed and fixed != name else ""
        check.p.at(
            y,
            f"invalid {what} name {name!r}: use lower-case letters, digits, '.', '_' and '-',"
            f" starting with a letter or digit{hint}",
        )
        return None
    return name


def _language(check: _Checker, y: _Y, key: str) -> str | None:
    lang = check.string(y, key)
    if lang is not None and not _LANG_RE.match(lang):
        check.p.at(y, f"{key}: {lang!r} is not a language code such as en, ru, hy, az, ka")
        return None
    return lang


def _feed(check: _Checker, item: _Y, settings: Settings) -> FeedConfig | None:
    if item.kind != "map":
        check.wrong(item, "feeds item", "a mapping with name and url")
        return None
    f = check.fields(
        item, _FEED_KEYS, "feed", required=("name", "url"), elsewhere={"filter": "under outputs"}
    )
    ok = True
    name = _name(check, f["name"], "feed") if "name" in f else None
    url = check.string(f["url"], "url") if "url" in f else None
    if url is not None and (error := _url_error(url.strip())):
        check.p.at(f["url"], f"url: {error}")
        url = None
    kwargs: dict[str, Any] = {}
    if "title" in f:
        kwargs["title"] = check.string(f["title"], "title")
        ok &= kwargs["title"] is not None
    if "site_url" in f:
        site = check.string(f["site_url"], "site_url")
        if site is not None and (error := _url_error(site.strip())):
            check.p.at(f["site_url"], f"site_url: {error}")
            site = None
        kwargs["site_url"] = site.strip() if site else None
        ok &= site is not None
    if "language" in f:
        kwargs["language"] = _language(check, f["language"], "language")
        ok &= kwargs["language"] is not None
    if "tags" in f:
        tags = check.strings(f["tags"], "tags", "georgia, south-caucasus")
        clean: list[str] = []
        for tag, tag_y in tags or []:
            if not _TAG_RE.match(tag):
                check.p.at(tag_y, f"tag {tag!r}: use letters, digits, '.', '_' and '-' only")
                ok = False
            elif tag not in clean:
                clean.append(tag)
        kwargs["tags"] = tuple(clean)
        ok &= tags is not None
    if "interval" in f:
        interval = check.duration(f["interval"], "interval")
        if interval is not None and not settings.min_interval <= interval <= settings.max_interval:
            check.p.at(
                f["interval"],
                f"interval: {_fmt_seconds(interval)} is outside the allowed range"
                f" {_fmt_seconds(settings.min_interval)}..{_fmt_seconds(settings.max_interval)}"
                " (settings min_interval/max_interval)",
            )
            interval = None
        kwargs["interval"] = interval
        ok &= interval is not None
    for key in ("full_text", "allow_private_network"):
        if key in f:
            kwargs[key] = check.boolean(f[key], key)
            ok &= kwargs[key] is not None
    if "rules" in f:
        kwargs["rule"] = _rule(check, f["rules"])
        ok &= kwargs["rule"] is not None
    if "entry_retention" in f:  # 0 keeps this feed's entries forever, whatever the setting
        kwargs["entry_retention"] = check.duration(f["entry_retention"], "entry_retention")
        ok &= kwargs["entry_retention"] is not None
    if "max_entries" in f:
        kwargs["max_entries"] = check.integer(f["max_entries"], "max_entries", 1)
        ok &= kwargs["max_entries"] is not None
    if not ok or name is None or url is None:
        return None
    return FeedConfig(name=name, url=url.strip(), line=item.line, **kwargs)


def _rule(check: _Checker, y: _Y) -> SiteRule | None:
    if not check.mapping(y, "rules"):
        return None
    f = check.fields(y, _RULE_KEYS, "rules")
    body = check.string(f["body"], "body") if "body" in f else None
    strip = check.strings(f["strip"], "strip", '".share", ".related"') if "strip" in f else []
    if ("body" in f and body is None) or strip is None:
        return None
    return SiteRule(body=body.strip() if body else None, strip=tuple(s for s, _ in strip))


def _aliases(check: _Checker, y: _Y) -> dict[str, tuple[str, tuple[str, ...]]]:
    """casefolded name -> (name as written, spellings including the name itself)."""
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    if not check.mapping(y, "aliases"):
        return out
    for key, (key_y, value) in y.value.items():
        spellings = check.strings(value, key, "Gyumri, Гюмри")
        if spellings is None:
            continue
        folded = key.casefold()
        if folded in out:
            check.p.at(key_y, f"alias '{key}' repeats alias '{out[folded][0]}' (case is ignored)")
            continue
        words = [key] + [s for s, _ in spellings if s]
        unique = tuple(dict.fromkeys(words, None))
        out[folded] = (key, unique)
    return out


def _term(check: _Checker, y: _Y, aliases: Mapping[str, tuple[str, tuple[str, ...]]]) -> FilterTerm | None:
    field: str | None = None
    regex = False
    if y.kind == "str":
        spellings = [part.strip() for part in y.value.split("|")]
    elif y.kind == "map":
        f = check.fields(y, _TERM_KEYS, "filter term")
        if ("pattern" in f) == ("any" in f):
            check.p.at(y, "filter term needs exactly one of 'pattern' or 'any'")
            return None
        if "field" in f:
            field = check.string(f["field"], "field")
            if field is not None and field not in _FIELDS:
                check.p.at(
                    f["field"],
                    f"field: unknown field {field!r}; use one of {', '.join(_FIELDS)}"
                    + _suggest(field, _FIELDS),
                )
                return None
            if field is None:
                return None
        if "regex" in f:
            flag = check.boolean(f["regex"], "regex")
            if flag is None:
                return None
            regex = flag
        if "pattern" in f:
            pattern = check.string(f["pattern"], "pattern")
            if pattern is None:
                return None
            spellings = [pattern] if regex else [p.strip() for p in pattern.split("|")]
        else:
            listed = check.strings(f["any"], "any", "Tbilisi, Тбилиси")
            if listed is None:
                return None
            spellings = [s for s, _ in listed]
    else:
        check.wrong(y, "filter term", "a string or a mapping with 'pattern'")
        return None
    if any(not s for s in spellings):
        check.p.at(y, "empty alternative in filter term (check the '|' separators)")
        return None
    if regex:
        for pattern in spellings:
            try:
                re.compile(pattern)
            except re.error as exc:
                check.p.at(y, f"invalid regular expression {pattern!r}: {exc}")
                return None
    else:
        expanded: list[str] = []
        for spelling in spellings:
            alias = aliases.get(spelling.casefold())
            expanded.extend(alias[1] if alias else [spelling])
        spellings = list(dict.fromkeys(expanded))
    return FilterTerm(tuple(spellings), field=field, regex=regex, line=y.line, col=y.col)


def _filter(
    check: _Checker,
    y: _Y,
    aliases: Mapping[str, tuple[str, tuple[str, ...]]],
    known_sources: Collection[str],
) -> FilterSpec | None:
    if not check.mapping(y, "filter"):
        return None
    f = check.fields(y, _FILTER_KEYS, "filter",
                     elsewhere={"prefer_languages": "in the output, beside 'filter:'"})
    ok = True
    kwargs: dict[str, Any] = {}
    for key in ("include", "exclude"):
        if key not in f:
            continue
        if f[key].kind != "seq":
            check.wrong(f[key], key, f'a list, e.g. {key}: ["Karabakh | Карабах"]')
            ok = False
            continue
        terms = [_term(check, item, aliases) for item in f[key].value]
        ok &= all(t is not None for t in terms)
        kwargs[key] = tuple(t for t in terms if t is not None)
    if "sources" in f:
        sources = check.strings(f["sources"], "sources", "civil-ge, georgia, ka")
        for source, source_y in sources or []:
            if source.casefold() not in {k.casefold() for k in known_sources}:
                check.p.at(
                    source_y,
                    f"sources: {source!r} is no feed name, tag or language"
                    + _suggest(source, known_sources),
                )
                ok = False
        kwargs["sources"] = tuple(s for s, _ in sources or [])
        ok &= sources is not None
    if "languages" in f:
        langs = check.strings(f["languages"], "languages", "en, ru")
        for lang, lang_y in langs or []:
            if not _LANG_RE.match(lang):
                check.p.at(lang_y, f"languages: {lang!r} is not a language code")
                ok = False
        kwargs["languages"] = tuple(s for s, _ in langs or [])
        ok &= langs is not None
    if "max_age" in f:
        kwargs["max_age"] = check.duration(f["max_age"], "max_age")
        if kwargs["max_age"] == 0:
            check.p.at(f["max_age"], "max_age: must be more than 0")
            kwargs["max_age"] = None
        ok &= kwargs["max_age"] is not None
    for key, minimum in (("min_words", 0), ("min_outlets", 1)):
        if key in f:
            kwargs[key] = check.integer(f[key], key, minimum)
            ok &= kwargs[key] is not None
    return FilterSpec(**kwargs) if ok else None


def _output(
    check: _Checker,
    item: _Y,
    settings: Settings,
    aliases: Mapping[str, tuple[str, tuple[str, ...]]],
    known_sources: Collection[str],
) -> OutputConfig | None:
    if item.kind != "map":
        check.wrong(item, "outputs item", "a mapping with a name")
        return None
    elsewhere = {key: "under 'filter:'" for key in _FILTER_KEYS}
    f = check.fields(item, _OUTPUT_KEYS, "output", required=("name",), elsewhere=elsewhere)
    name = _name(check, f["name"], "output") if "name" in f else None
    ok = name is not None
    kwargs: dict[str, Any] = {}
    for key in ("title", "description"):
        if key in f:
            kwargs[key] = check.string(f[key], key, empty_ok=key == "description")
            ok &= kwargs[key] is not None
    if "limit" in f:
        kwargs["limit"] = check.integer(f["limit"], "limit", 1)
        ok &= kwargs["limit"] is not None
    if "archive_pages" in f:
        kwargs["archive_pages"] = check.integer(f["archive_pages"], "archive_pages", 0)
        ok &= kwargs["archive_pages"] is not None
    if "formats" in f:
        formats = check.strings(f["formats"], "formats", "atom, rss, json")
        for fmt, fmt_y in formats or []:
            if fmt not in _FORMATS:
                check.p.at(fmt_y, f"formats: unknown format {fmt!r}" + _suggest(fmt, _FORMATS))
                ok = False
        if formats == []:
            check.p.at(f["formats"], "formats: list at least one of atom, rss, json")
            ok = False
        kwargs["formats"] = tuple(dict.fromkeys(s for s, _ in formats or []))
        ok &= formats is not None
    if "prefer_languages" in f:
        langs = check.strings(f["prefer_languages"], "prefer_languages", "en, ru")
        for lang, lang_y in langs or []:
            if not _LANG_RE.match(lang):
                check.p.at(lang_y, f"prefer_languages: {lang!r} is not a language code")
                ok = False
        kwargs["prefer_languages"] = tuple(dict.fromkeys(s for s, _ in langs or []))
        ok &= langs is not None
    if "filter" in f:
        kwargs["filter"] = _filter(check, f["filter"], aliases, known_sources)
        ok &= kwargs["filter"] is not None
    if not ok or name is None:
        return None
    kwargs.setdefault("title", name)
    kwargs.setdefault("limit", settings.combined_limit)
    kwargs.setdefault("archive_pages", settings.archive_pages)
    return OutputConfig(name=name, line=item.line, **kwargs)


def _default_output(settings: Settings) -> OutputConfig:
    return OutputConfig(
        name="all", title="All feeds", limit=settings.combined_limit, formats=_FORMATS,
        archive_pages=settings.archive_pages,
    )


def _feeds_tree(
    check: _Checker, tree: _Y | None, settings: Settings
) -> tuple[list[FeedConfig], list[OutputConfig], dict[str, tuple[str, tuple[str, ...]]]]:
    if tree is None:
        check.p.add(1, 1, "empty file: expected a mapping with a `feeds:` list")
        return [], [], {}
    if tree.kind != "map":
        check.p.at(tree, f"expected a mapping with a `feeds:` list, got {_describe(tree)}")
        return [], [], {}
    elsewhere = {f.name: "in config/aggregator.yaml" for f in dataclasses.fields(Settings)}
    elsewhere.update({key: "under a feed in `feeds:`" for key in _FEED_KEYS})
    # Top-level `x-...` keys are ignored: a home for YAML anchors (`x-common: &common`).
    visible = {k: v for k, v in tree.value.items() if not k.startswith("x-")}
    top = check.fields(
        _Y("map", visible, tree.line, tree.col), _TOP_KEYS, "feeds file", elsewhere=elsewhere
    )
    if "feeds" not in tree.value:
        check.p.at(tree, "feeds file is missing required key 'feeds'")
    aliases = _aliases(check, top["aliases"]) if "aliases" in top else {}

    feeds: list[FeedConfig] = []
    if "feeds" in top and top["feeds"].kind != "seq":
        check.wrong(top["feeds"], "feeds", "a list of feeds")
    elif "feeds" in top:
        # Duplicates are judged on the raw text, so a feed with another problem still counts.
        names: dict[str, int] = {}
        urls: dict[str, tuple[str, int]] = {}
        for item in top["feeds"].value:
            feed = _feed(check, item, settings)
            name_y, url_y = _raw(item, "name"), _raw(item, "url")
            duplicate = False
            if name_y is not None:
                if name_y.value in names:
                    check.p.at(
                        name_y,
                        f"duplicate feed name '{name_y.value}' (first at line {names[name_y.value]})",
                    )
                    duplicate = True
                else:
                    names[name_y.value] = name_y.line
            if url_y is not None:
                key = _url_key(url_y.value)
                if key in urls:
                    first_name, first_line = urls[key]
                    check.p.at(
                        url_y,
                        f"duplicate feed URL: feed '{first_name}' at line {first_line}"
                        " already polls it",
                    )
                    duplicate = True
                else:
                    urls[key] = (name_y.value if name_y else "?", url_y.line)
            if feed is not None and not duplicate:
                feeds.append(feed)

    known = {f.name for f in feeds} | {t for f in feeds for t in f.tags}
    known |= {f.language for f in feeds if f.language}
    known |= {f.language.split("-")[0] for f in feeds if f.language}  # filters match en ~ en-US
    outputs: list[OutputConfig] = []
    if "outputs" in top and top["outputs"].kind != "seq":
        check.wrong(top["outputs"], "outputs", "a list of outputs")
    elif "outputs" in top:
        seen: dict[str, int] = {}
        for item in top["outputs"].value:
            output = _output(check, item, settings, aliases, known)
            name_y = _raw(item, "name")
            if name_y is not None and name_y.value in seen:
                check.p.at(
                    name_y,
                    f"duplicate output name '{name_y.value}' (first at line {seen[name_y.value]})",
                )
                continue
            if name_y is not None:
                seen[name_y.value] = name_y.line
            if output is not None:
                outputs.append(output)
    elif "outputs" not in top:
        outputs.append(_default_output(settings))
    return feeds, outputs, aliases


def _raw(item: _Y, key: str) -> _Y | None:
    """The string value of ``key`` in mapping ``item``, whatever else is wrong with it."""
    if item.kind == "map" and key in item.value and item.value[key][1].kind == "str":
        value: _Y = item.value[key][1]
        return value
    return None


def derive_name(url: str, title: str | None = None, taken: Collection[str] = ()) -> str:
    """A valid, unused feed name: slug of the title, else of the URL's host, then -2, -3..."""

    def slug(text: str) -> str:
        ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
        return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:48].strip("-")

    base = slug(title or "")
    if not base:
        try:
            host = urlsplit(url).hostname or ""
        except ValueError:
            host = ""
        base = slug(host.removeprefix("www.")) or "feed"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name
