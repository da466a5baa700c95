"""Output filters: decide which items an output republishes, and say why one was dropped.

Semantics
---------
An item is kept iff every constraint holds, no exclude term matches, and (there are no
include terms or at least one include term matches). ``CompiledFilter.check`` tests, in
this order, and reports the first failure: languages (which chooses the
version representing a story), sources, max_age, min_words,
min_outlets, exclude terms, include terms.

Terms
    A term matches when any of its spellings matches (``war | война | պատերազմ``).

    * Keyword spelling (the default): matched as a whole word or phrase, in any script, on
      folded text (see :func:`fold`: NFKC, case-folded, Turkish/Azerbaijani dotted and dotless
      i together, Georgian Mtavruli as Mkhedruli, Russian ё as е). Word edges are Unicode
      lookarounds ``(?<!\\w)`` / ``(?!\\w)``, so ``war`` does not match "award" and ``Ереван``
      does not match "Ереванский" (whole words by design: spell out inflected forms as
      alternatives, or use a regex such as ``Ереван\\w*``). Whitespace inside a phrase matches
      any run of whitespace.
    * Regex spelling (``FilterTerm.regex``): ``re.search`` with IGNORECASE on the raw field,
      then on the folded field; no implicit word edges.

Fields
    ``title``, ``text`` (the full article text, and the feed summary, which matters when no
    full text was fetched), ``author``, ``category`` (any category), ``url``; no field means
    title or text.

Constraints
    * ``sources``: the item's feed name, one of its feed tags, or its feed language (the
      full tag or its primary subtag) equals one of the values (case-insensitive).
    * ``languages``: the item language, else its feed language, compared by primary subtag
      (``en`` matches ``en-US``; see :func:`aggregator.models.primary_language`). An item of
      unknown language is dropped. A story with versions in several languages is kept when
      any version is in a listed language, and is then represented by one of those: the
      first listed language it has (in ``prefer_languages`` order where that lists it).
    * ``max_age`` (seconds): kept when published >= now - max_age.
    * ``min_words``: ``item.word_count`` >= min_words.
    * ``min_outlets``: 1 + len(item.outlets) >= min_outlets (the story's outlet count).

Stories
    A story is one item (its representative) whose ``members`` are every version of it, in
    any language (see :class:`aggregator.models.Item`). Terms are searched in every version:
    ``include`` keeps the story when any version matches (a Georgian keyword finds the story
    its English version represents) and ``exclude`` drops it when any version matches. The
    other constraints read the version that represents the story.

Representation (``prefer_languages``, the output's setting)
    The story is represented by its version in the first listed language it has (see
    ``Item.version_in``), else by its earliest version. Without ``prefer_languages`` (and
    without a ``languages`` constraint choosing) the store's representative stays. The
    item's ``uid`` is the story's whichever version represents it.

Regular expressions are compiled once by :func:`compile_filter`; ``check`` only searches.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aggregator.errors import FilterError
from aggregator.models import FilterSpec, FilterTerm, Item, primary_language

FIELDS = ("title", "text", "author", "category", "url")

# Folded after NFKC + casefold: "İ".casefold() is "i" + U+0307 (combining dot above), and
# Turkic dotless ı has no case pair in casefold, so both are mapped to plain i here.
_PRE_FOLD = str.maketrans({"İ": "i", "I": "i", "ı": "i"})
_POST_FOLD = str.maketrans({"ё": "е"})


def fold(text: str) -> str:
    """Fold ``text`` for matching: NFKC, casefold, İ/I/i/ı together, Mtavruli as Mkhedruli,
    ё as е. Works for Latin, Cyrillic, Armenian and Georgian (all handled by casefold)."""
    text = unicodedata.normalize("NFKC", text).translate(_PRE_FOLD).casefold()
    # A stray U+0307 after i (from decomposed İ input) would break word matching.
    return text.replace("i\u0307", "i").translate(_POST_FOLD)


def _format_duration(seconds: float) -> str:
    """7d, 12h, 1d12h, 90s: how a max_age is named in drop reasons."""
    total = int(round(seconds))
    if total <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _field_values(item: Item, field: str | None) -> tuple[tuple[str, str], ...]:
    """(field name, raw value) pairs a term with ``field`` is searched in."""
    if field == "title":
        return (("title", item.title),)
    if field == "text":
        return (("text", item.text), ("text", item.summary))
    if field == "author":
        return (("author", item.author or ""),)
    if field == "category":
        return tuple(("category", c) for c in item.categories)
    if field == "url":
        return (("url", item.url or ""),)
    return (("title", item.title), ("text", item.text), ("text", item.summary))


@dataclass(frozen=True)
class _CompiledTerm:
    term: FilterTerm
    label: str  # how reasons name the term: "sport", "war | война" or regex "/sport/"
    keywords: re.Pattern[str] | None  # all keyword spellings, on folded text
    regexes: tuple[re.Pattern[str], ...]  # regex spellings, on raw then folded text

    def match(self, item: Item, folded: Callable[[str], str]) -> str | None:
        """The name of the first field the term matches in, or None."""
        for name, value in _field_values(item, self.term.field):
            if not value:
                continue
            if self.keywords is not None and self.keywords.search(folded(value)):
                return name
            for rx in self.regexes:
                if rx.search(value) or rx.search(folded(value)):
                    return name
        return None


def _where(term: FilterTerm) -> str:
    return f" (line {term.line}, col {term.col})" if term.line else ""


def _keyword_pattern(spelling: str) -> str:
    words = fold(spelling).split()
    return r"\s+".join(re.escape(w) for w in words)


def _compile_term(term: FilterTerm, kind: str) -> _CompiledTerm:
    if term.field is not None and term.field not in FIELDS:
        raise FilterError(
            f"{kind} term {' | '.join(term.spellings)!r}{_where(term)}: unknown field "
            f"{term.field!r} (expected one of {', '.join(FIELDS)})"
        )
    if not term.spellings:
        raise FilterError(f"{kind} term{_where(term)} has no spelling")
    keywords: list[str] = []
    regexes: list[re.Pattern[str]] = []
    for spelling in term.spellings:
        if not spelling.strip():
            raise FilterError(f"{kind} term{_where(term)}: empty spelling")
        if term.regex:
            try:
                regexes.append(re.compile(spelling, re.IGNORECASE))
            except re.error as exc:
                raise FilterError(
                    f"{kind} term{_where(term)}: invalid regular expression {spelling!r}: {exc}"
                ) from exc
        else:
            keywords.append(_keyword_pattern(spelling))
    keyword_rx = None
    if keywords:
        keyword_rx = re.compile(r"(?<!\w)(?:" + "|".join(keywords) + r")(?!\w)")
    if term.regex:
        label = 'regex "' + " | ".join(term.spellings) + '"'
    else:
        label = '"' + " | ".join(term.spellings) + '"'
    return _CompiledTerm(term, label, keyword_rx, tuple(regexes))


@dataclass(frozen=True)
class CompiledFilter:
    """A FilterSpec with its terms compiled; build it with :func:`compile_filter`."""

    spec: FilterSpec
    include: tuple[_CompiledTerm, ...]
    exclude: tuple[_CompiledTerm, ...]
    # The output's prefer_languages, as primary subtags, most wanted first.
    prefer: tuple[str, ...] = ()

    def represent(self, item: Item) -> tuple[Item, str | None]:
        """The story ``item`` as this output shows it: represented by its version in the
        first wanted language it has (``prefer_languages``, then the ``languages``
        constraint's order, restricted to ``languages`` when it is set), else by its
        earliest version (with ``prefer_languages``) or as it is. The reason is set when the
        ``languages`` constraint drops the story (no version in a listed language)."""
        allowed = tuple(dict.fromkeys(
            p for p in (primary_language(lang) for lang in self.spec.languages) if p))
        order = tuple(dict.fromkeys(
            [p for p in self.prefer if not allowed or p in allowed] + list(allowed)))
        for language in order:
            version = item.version_in(language)
            if version is not None:
                return item.represented_by(version), None
        if allowed:
            have = item.languages()
            # One language: named as tagged (en-US); several: by their primary subtags.
            lang = ", ".join(have) if len(have) > 1 else (item.language or item.feed_language)
            return item, f"language {lang or 'unknown'} not in [{', '.join(self.spec.languages)}]"
        if self.prefer:
            return item.represented_by(item.versions[0]), None
        return item, None

    def choose(self, item: Item, now: datetime) -> tuple[Item, str | None]:
        """``item`` as this output represents it (see represent) and None when kept, else a
        short reason naming the rule that dropped it."""
        item, reason = self.represent(item)
        return item, reason or self._check(item, now)

    def check(self, item: Item, now: datetime) -> str | None:
        """None when ``item`` is kept, else a short reason naming the rule that dropped it."""
        return self.choose(item, now)[1]

    def _check(self, item: Item, now: datetime) -> str | None:
        """The constraints after ``languages`` (already applied by represent) on the
        representing version, then the terms on every version."""
        spec = self.spec
        if spec.sources:
            wanted = {s.casefold() for s in spec.sources}
            have = {item.feed_name.casefold(), *(t.casefold() for t in item.feed_tags)}
            if item.feed_language:
                have.add(item.feed_language.casefold())
                have.add(primary_language(item.feed_language) or item.feed_language.casefold())
            if not wanted & have:
                return f"source {item.feed_name} not in [{', '.join(spec.sources)}]"
        if spec.max_age is not None:
            # An undated item (no knowable date) counts from when it was first seen.
            published = item.published or item.updated
            if published.tzinfo is None:
                published = published.replace(tzinfo=UTC)
            if published < now - timedelta(seconds=spec.max_age):
                return f"older than max_age {_format_duration(spec.max_age)}"
        if spec.min_words is not None and item.word_count < spec.min_words:
            return f"{item.word_count} words < min_words {spec.min_words}"
        if spec.min_outlets is not None:
            outlets = 1 + len(item.outlets)
            if outlets < spec.min_outlets:
                noun = "outlet" if outlets == 1 else "outlets"
                return f"{outlets} {noun} < min_outlets {spec.min_outlets}"

        cache: dict[str, str] = {}

        def folded(value: str) -> str:
            # Each field is folded at most once per item, whatever the number of terms.
            if value not in cache:
                cache[value] = fold(value)
            return cache[value]

        # The representing version first: its match is the one a reason names plainly.
        versions = (item, *(m for m in item.versions if m.id != item.id))
        for term in self.exclude:
            for version in versions:
                where = term.match(version, folded)
                if where is not None:
                    if version is not item:
                        where += f" of the {version.lang or 'other'} version ({version.feed_name})"
                    return f"exclude {term.label} matched {where}"
        if self.include and not any(t.match(v, folded) for t in self.include for v in versions):
            if len(versions) > 1:
                return f"no include term matched (in {len(versions)} versions)"
            return "no include term matched"
        return None

    def keep(self, item: Item, now: datetime) -> bool:
        return self.check(item, now) is None

    def select(self, items: Iterable[Item], now: datetime) -> list[Item]:
        """The kept items, each as this output represents it, in their given order."""
        kept = []
        for item in items:
            shown, reason = self.choose(item, now)
            if reason is None:
                kept.append(shown)
        return kept


def compile_filter(spec: FilterSpec, prefer_languages: Iterable[str] = ()) -> CompiledFilter:
    """Compile ``spec`` for an output that prefers ``prefer_languages`` (its setting); raises
    FilterError for an invalid regex, unknown field or empty term."""
    prefer = tuple(dict.fromkeys(
        p for p in (primary_language(lang) for lang in prefer_languages) if p))
    return CompiledFilter(
        spec=spec,
        include=tuple(_compile_term(t, "include") for t in spec.include),
        exclude=tuple(_compile_term(t, "exclude") for t in spec.exclude),
        prefer=prefer,
    )
