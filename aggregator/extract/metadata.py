"""Page metadata from one pass over the tree: meta tags, JSON-LD, canonical URL, language,
titles, dates and authors (with trafilatura's byline search in the page body)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import unescape
from typing import Any

import htmldate
from lxml import etree
from trafilatura.json_metadata import normalize_authors

from aggregator.extract.decode import _norm, _squash
from aggregator.models import Alternate

# --------------------------------------------------------------------------- page metadata


@dataclass
class _Page:
    """What the scan of the parsed page collects."""

    meta: dict[str, str] = field(default_factory=dict)  # property/name/itemprop -> content
    canonical: str | None = None
    lang: str | None = None
    json_ld: list[str] = field(default_factory=list)
    noscripts: list[Any] = field(default_factory=list)
    title: str | None = None
    h1: list[str] = field(default_factory=list)  # the first five
    h1_count: int = 0
    json_data: list[Any] | None = None  # json_ld parsed, on first use
    # <link rel="alternate"> other than feeds: (href, hreflang or None, lang or None)
    alternates: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    locale_alternates: list[str] = field(default_factory=list)  # og:locale:alternate


# <time datetime> inside <article> or <main>; itemprop="datePublished" elements other than
# <meta> and <time>. Written from the attributes up: libxml2 finds them faster.
_ARTICLE_TIMES = etree.XPath("(//time/@datetime)/parent::*[ancestor::article or ancestor::main]")
_DATE_PUBLISHED = etree.XPath(
    "(//*/@itemprop[. = 'datePublished'])/parent::*[not(self::meta) and not(self::time)]"
)


def _scan(root: Any) -> _Page:
    page = _Page()
    # Tag-filtered iteration runs in C: only the few elements we read reach Python.
    for node in root.iter("meta", "link", "script", "title", "h1", "noscript"):
        name = node.tag
        if name == "meta":
            key = (
                node.get("property")
                or node.get("name")
                or node.get("itemprop")
                or node.get("http-equiv")
            )
            content = node.get("content")
            if key and content and content.strip():
                page.meta.setdefault(key.strip().lower(), content.strip())
                if key.strip().lower() == "og:locale:alternate":
                    page.locale_alternates.append(content.strip())
        elif name == "link":
            rels = (node.get("rel") or "").lower().split()
            if page.canonical is None and "canonical" in rels:
                page.canonical = node.get("href")
            elif "alternate" in rels and (node.get("href") or "").strip() and (
                    not node.get("type") or "html" in node.get("type").lower()):
                # A typed alternate (RSS, Atom, oEmbed JSON) is another format, not another
                # version of the article.
                page.alternates.append((node.get("href").strip(), node.get("hreflang"),
                                        node.get("lang") or node.get("xml:lang")))
        elif name == "noscript":
            page.noscripts.append(node)
        elif name == "script":
            if (node.get("type") or "").lower() == "application/ld+json" and node.text:
                page.json_ld.append(node.text)
        elif name == "title":
            if page.title is None:
                page.title = " ".join(s.strip() for s in node.itertext() if s.strip()) or None
        else:  # h1
            page.h1_count += 1
            if len(page.h1) < 5:
                page.h1.append(" ".join(s.strip() for s in node.itertext() if s.strip()))
    html = root if root.tag == "html" else next(root.iter("html"), None)
    if html is not None:
        page.lang = html.get("lang") or html.get("xml:lang")
    return page


def _meta(page: _Page, *names: str) -> str | None:
    for name in names:
        if name in page.meta:
            return page.meta[name]
    return None


def _parse_datetime(value: object) -> datetime | None:
    """ISO 8601 (as found in meta tags, JSON-LD, <time datetime>) to aware UTC."""
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    if re.fullmatch(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?[+-]\d{4}", value):
        value = value[:-2] + ":" + value[-2:]  # "+0400" -> "+04:00" for fromisoformat
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if not 1990 <= parsed.year <= datetime.now(UTC).year + 1:
        return None
    return parsed.astimezone(UTC)


def _json_ld_values(page: _Page, key: str) -> Iterator[Any]:
    """Every value of ``key`` in the page's JSON-LD blocks (any nesting, @graph included)."""
    for data in _json_ld_data(page):
        stack = [data]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if key in node:
                    yield node[key]
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)


_PUBLISHED_META = (
    "article:published_time", "og:published_time", "datepublished", "pubdate", "date", "dc.date",
)  # fmt: skip


def _published_candidates(page: _Page, root: Any) -> Iterator[object]:
    """Publication times in order of trust: the first meta tag of _PUBLISHED_META present
    (an itemprop="datePublished" element other than <meta> and <time> counts as the
    "datepublished" one when no meta tag has it), JSON-LD, the first dated <time> of the
    article itself (a page header may show today's date). The tree is searched (two whole-
    page XPaths) only when what comes before does not give a date."""
    if not any(key in page.meta for key in _PUBLISHED_META[:3]):
        for node in _DATE_PUBLISHED(root):
            value = node.get("content") or node.get("datetime")
            if value:
                page.meta["datepublished"] = value
                break
    yield _meta(page, *_PUBLISHED_META)
    yield from _json_ld_values(page, "datePublished")
    for element in _ARTICLE_TIMES(root):
        yield str(element.get("datetime"))
        break


def _published(page: _Page, root: Any) -> datetime | None:
    """Publication time with its time of day: meta tags, JSON-LD, itemprop, <time>."""
    for candidate in _published_candidates(page, root):
        parsed = _parse_datetime(candidate)
        if parsed is not None:
            return parsed
    return None


def _found_date(root: Any, url: str | None) -> datetime | None:
    """A day for pages without a machine-readable date: htmldate's quick search (URL, meta
    tags, text patterns; its free-text search is off: dateparser costs up to 0.7 s a page).
    Runs before extraction, which prunes the tree."""
    found = htmldate.find_date(
        root,
        url=url,
        original_date=True,
        extensive_search=False,
        max_date=datetime.now(UTC).strftime("%Y-%m-%d"),
    )
    return _parse_datetime(found)


_AUTHOR_META = (
    "author", "article:author", "og:article:author", "dc.creator", "parsely-author",
    "sailthru.author", "citation_author", "byl",
)  # fmt: skip


_BY = re.compile(r"^(by|von|par|por|di|door|автор:?)\s+", re.IGNORECASE)
_MAX_AUTHORS = 4  # names kept from a JSON-LD author list (more are contributors' lists)


def _clean_author(value: object) -> str | None:
    """A byline as a name: "By " dropped, entities and JSON escapes decoded; None for profile
    URLs, one-word handles and overlong strings."""
    if not isinstance(value, str):
        return None
    if "\\u" in value:
        try:
            value = value.encode("latin-1", "backslashreplace").decode("unicode_escape")
        except UnicodeDecodeError:
            pass
    if "&" in value:
        value = unescape(value)
    name = _squash(_BY.sub("", value.strip()))
    if name and " " in name and "://" not in name and len(name) <= 120:
        return name
    return None


_ARTICLE_TYPE = re.compile(r"article|posting|^report$", re.IGNORECASE)


def _json_ld_data(page: _Page) -> list[Any]:
    """The page's JSON-LD blocks, parsed on first use."""
    if page.json_data is None:
        page.json_data = []
        for script in page.json_ld:
            try:
                page.json_data.append(json.loads(script))
            except (ValueError, RecursionError):
                continue
    return page.json_data


def _json_ld_nodes(page: _Page) -> Iterator[dict[str, Any]]:
    """Every JSON-LD object of the page in document order (any nesting, @graph included)."""
    for data in _json_ld_data(page):
        stack = [data]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                yield node
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(reversed(node))


def _json_ld_authors(page: _Page) -> tuple[list[str], list[str]]:
    """(people, organisations) named as author of the article in JSON-LD: the authors of the
    first Article-like object that names any (not those of its images, videos or related
    items); people up to _MAX_AUTHORS. An author given by reference ({"@id": ...}, as
    Yoast's @graph does) is looked up."""
    nodes = list(_json_ld_nodes(page))
    by_id = {n["@id"]: n for n in nodes if isinstance(n.get("@id"), str) and "name" in n}
    for node in nodes:
        kind = node.get("@type")
        kinds = [k for k in (kind if isinstance(kind, list) else [kind]) if isinstance(k, str)]
        if "author" not in node or not any(_ARTICLE_TYPE.search(k) for k in kinds):
            continue
        value = node["author"]
        people: list[str] = []
        organisations: list[str] = []
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and "name" not in item:
                item = by_id.get(item.get("@id"), item)
            item_kind = item.get("@type") if isinstance(item, dict) else None
            name = _clean_author(item.get("name") if isinstance(item, dict) else item)
            if name is None:
                continue
            item_kinds = item_kind if isinstance(item_kind, list) else [item_kind]
            if "Person" not in item_kinds and any(item_kinds):
                organisations.append(name)  # Organization, NewsMediaOrganization...
            elif name not in people:
                people.append(name)
        if people or organisations:
            return people[:_MAX_AUTHORS], organisations
    return [], []


def _declared_author(page: _Page) -> tuple[str | None, str | None]:
    """(author, fallback) from JSON-LD and meta tags: JSON-LD people first, then meta tags.

    Names that are the publisher's (og:site_name, JSON-LD publisher or organisation) are
    only the fallback: many sites put their own name in <meta name="author"> and the
    reporter's in JSON-LD or in the byline.
    """
    people, organisations = _json_ld_authors(page)
    if people:
        return ", ".join(people), None
    publishers = {_norm(n) for n in organisations}
    site = _meta(page, "og:site_name", "application-name")
    if site:
        publishers.add(_norm(site))
    for value in _json_ld_values(page, "publisher"):
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                publishers.add(_norm(item["name"]))
    fallback = None
    for key in _AUTHOR_META:
        name = _clean_author(page.meta.get(key))
        if name is None:
            continue
        if _norm(name) not in publishers:
            return name, None
        fallback = fallback or name
    return None, fallback or (organisations[0] if organisations else None)


def _author(page: _Page, root: Any) -> str | None:
    """The byline: declared (JSON-LD, meta tags), else found in the page body as
    trafilatura finds it, else the publisher's name when that is all the page declares.
    Reads the tree before extraction prunes it."""
    author, fallback = _declared_author(page)
    if author:
        return author
    byline = _byline(root)
    if byline:
        return _clean_author(byline) or byline
    return fallback


# trafilatura's byline search in the page (trafilatura.metadata.extract_author: its
# AUTHOR_XPATHS on a copy of the page pruned by AUTHOR_DISCARD_XPATHS), done
# without the copy and without its regular expressions called from libxml2 on every element:
# libxml2 picks the few elements with an attribute value holding one of the
# XPaths' words or a shorter part of it ("name" for username, screenname, channel-name...),
# and the XPaths' predicates, kept verbatim below, are tested on those alone, in the same
# order. Same author as trafilatura's on every corpus page (bench_extract.py --authors).
_BYLINE_CANDIDATES = etree.XPath(
    "(//*/@class[contains(., 'uthor') or contains(., 'yline') or . = 'byl' or . = 'BBL'"
    " or contains(., 'name') or contains(., '-by') or contains(., 'writer')"
    " or contains(., 'zuozhe') or contains(., 'bian')]"
    " | //*/@id[contains(., 'uthor') or contains(., 'zuozhe') or contains(., 'bian')]"
    " | //*/@itemprop[contains(., 'author')] | //*/@rel[. = 'author']"
    " | //*/@data-testid[contains(., 'Author')] | //*/@data-component[contains(., 'Byline')]"
    ")/.. | //author"
)
_BYLINE_TAGS_1 = frozenset("a address div link p span strong".split())
_BYLINE_TAGS_2 = frozenset("a div h3 h4 p span".split())
_BYLINE_CLASS_1 = re.compile("author-?name|AuthorName|authorName")
_BYLINE_ID_2 = re.compile("author|zuozhe|bianji|xiaobian")
_BYLINE_CLASS_2 = re.compile(
    "author|channel-name|zuozhe|bianji|xiaobian|submitted-by|posted-by|journalist-name"
)
_BYLINE_ID_3 = re.compile("[Aa]uthor")
_BYLINE_CLASS_3 = re.compile("[Aa]uthor|screenname|writer|[Bb]yline")
_DISCARD_TAGS = frozenset("a div section span".split())
_DISCARD_ID = re.compile("^comments|comment-?list|ProductReviews")
_DISCARD_CLASS = re.compile(
    "^[Cc]omments|commentlist|comments-list|sidebar|is-hidden|quote|embedly-instagram|"
    "article-(?:share|support)|print|category|meta-date|meta-reviewer"
)


def _byline_1(el: Any) -> bool:
    # AUTHOR_XPATHS[0] (its "rel='me'" tests a <rel> child element, which HTML never has)
    if el.tag == "author":
        return True
    if el.tag not in _BYLINE_TAGS_1:
        return False
    get = el.get
    return (
        get("rel") == "author"
        or get("id") == "author"
        or get("class") == "author"
        or get("itemprop") == "author name"
        or get("data-testid") in ("AuthorCard", "AuthorURL")
        or bool(_BYLINE_CLASS_1.search(get("class") or ""))
    )


def _byline_2(el: Any) -> bool:
    if el.tag not in _BYLINE_TAGS_2:
        return False
    get = el.get
    return (
        get("class") in ("byline", "username", "byl", "BBL")
        or "author" in (get("itemprop") or "")
        or bool(_BYLINE_ID_2.search(get("id") or ""))
        or bool(_BYLINE_CLASS_2.search(get("class") or ""))
    )


def _byline_3(el: Any) -> bool:
    get = el.get
    return (
        "Byline" in (get("data-component") or "")
        or "author" in (get("itemprop") or "")
        or bool(_BYLINE_ID_3.search(get("id") or ""))
        or bool(_BYLINE_CLASS_3.search(get("class") or ""))
    )


def _byline_discarded(el: Any) -> bool:
    """AUTHOR_DISCARD_XPATHS: comment sections, sidebars, dates, figures..."""
    tag = el.tag
    if tag in ("time", "figure"):
        return True
    if tag not in _DISCARD_TAGS:
        return False
    get = el.get
    ident, cls = get("id") or "", get("class") or ""
    return (
        ident == "comments"
        or cls in ("comments", "title", "date")
        or bool(_DISCARD_ID.search(ident))
        or bool(_DISCARD_CLASS.search(cls))
        or "Figure" in (get("data-component") or "")
    )


def _kept_pieces(el: Any) -> list[str]:
    """el.itertext() once the discarded elements inside are removed (their tails joined to
    the text before them, as trafilatura's delete_element does)."""
    head = el.text or ""
    rest: list[list[str]] = []  # per kept child: its pieces, its tail last
    for child in el:
        if not isinstance(child.tag, str):
            continue
        if _byline_discarded(child):
            if child.tail:
                if rest:
                    rest[-1][-1] += child.tail
                else:
                    head += child.tail
            continue
        rest.append([*_kept_pieces(child), child.tail or ""])
    return [head, *(piece for pieces in rest for piece in pieces)]


def _byline(root: Any) -> str | None:
    """The author named in the page body (bylines, rel="author" links...), as trafilatura
    finds it when the meta tags and JSON-LD name none."""
    candidates = [
        el
        for el in _BYLINE_CANDIDATES(root)
        if not any(_byline_discarded(a) for a in (el, *el.iterancestors()))
    ]
    for test in (_byline_1, _byline_2, _byline_3):
        for el in candidates:
            if test(el):
                content = _squash(" ".join(_kept_pieces(el)))
                if 2 < len(content) < 120:
                    return normalize_authors(None, content)
    return None


def _json_ld_works(value: Any) -> Iterator[tuple[str, str | None]]:
    """(url, language) of each work a JSON-LD workTranslation/translationOfWork value names:
    a URL string, or an object with ``url``/``@id`` and perhaps ``inLanguage``."""
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str):
            yield item, None
        elif isinstance(item, dict):
            url = item.get("url") or item.get("@id") or item.get("mainEntityOfPage")
            if isinstance(url, dict):
                url = url.get("@id") or url.get("url")
            lang = item.get("inLanguage")
            if isinstance(lang, dict):
                lang = lang.get("alternateName") or lang.get("name")
            if isinstance(url, str) and url.strip():
                yield url.strip(), lang if isinstance(lang, str) else None


def _alternates(page: _Page) -> list[Alternate]:
    """The page's translations and regional editions, as the page names them: <link
    rel="alternate" hreflang> (x-default, the language chooser, left out), JSON-LD
    workTranslation / translationOfWork, and og:locale:alternate with its alternate URL
    (a <link rel="alternate"> without hreflang carrying that locale in ``lang``, or the one
    such link when the page declares one alternate locale). URLs as written: the caller
    makes them absolute and normalises them."""
    found: list[Alternate] = []
    plain: list[tuple[str, str | None]] = []
    for href, hreflang, lang in page.alternates:
        if hreflang is not None:
            if hreflang.strip() and hreflang.strip().lower() != "x-default":
                found.append(Alternate(href, hreflang.strip(), "hreflang"))
        else:
            plain.append((href, lang))
    for key in ("workTranslation", "translationOfWork"):
        for value in _json_ld_values(page, key):
            for url, lang in _json_ld_works(value):
                found.append(Alternate(url, lang, "translation"))
    locales = [x for x in page.locale_alternates if x.lower() != "x-default"]
    if locales and plain:
        wanted = {_primary(x): x for x in locales}
        tagged = [(href, lang) for href, lang in plain if lang and _primary(lang) in wanted]
        for href, lang in tagged:
            found.append(Alternate(href, wanted[_primary(lang or "")], "og_locale"))
        if not tagged and len(locales) == 1 and len(plain) == 1:
            found.append(Alternate(plain[0][0], locales[0], "og_locale"))
    return found


def _primary(tag: str) -> str:
    return re.split(r"[-_,;\s]", tag.strip(), maxsplit=1)[0].lower()


def _language(page: _Page) -> str | None:
    for value in (page.lang, _meta(page, "content-language", "og:locale", "language")):
        if isinstance(value, str):
            primary = re.split(r"[-_,;\s]", value.strip(), maxsplit=1)[0].lower()
            if re.fullmatch(r"[a-z]{2,3}", primary):
                return primary
    return None


