"""Article pages to Article: decoding, preprocessing, main-content extraction, metadata.

Owns trafilatura, beautifulsoup4 and charset-normalizer. The HTML in the returned Article is
NOT sanitised: the clean stage does that. Pipeline of extract_article:

1. decode_html (bytes only): BOM, HTTP charset, <meta> charset, detection.
2. beautifulsoup4 preprocessing: site rule (strip / body), lazy images, noscript fallbacks,
   figure captions set aside (trafilatura drops <figcaption>), page metadata read.
3. trafilatura: main content (HTML with images, links, formatting) and metadata.
4. Post-processing: captions put back as <figure>, leading repeats of the metadata
   (title heading, date line, breadcrumbs, teaser) removed, plain text built.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import charset_normalizer
import trafilatura
from bs4 import BeautifulSoup, Comment, NavigableString, Tag
from soupsieve import SelectorSyntaxError
from trafilatura.htmlprocessing import build_html_output

from aggregator.errors import ExtractError
from aggregator.models import Article, SiteRule

# trafilatura logs every discarded page at WARNING; our callers get an ExtractError instead.
logging.getLogger("trafilatura").setLevel(logging.ERROR)
logging.getLogger("htmldate").setLevel(logging.ERROR)

# Guards against hostile or broken pages: the parse cost grows with the number of tags, and
# 100,000 tags already take seconds in trafilatura. Real article pages stay far below (the
# largest corpus page has ~10,000 "<").
MAX_BYTES = 10 * 1024 * 1024
MAX_TAGS = 40_000

_BS4_PARSER = "lxml"  # the fastest tree builder bs4 offers; html.parser is ~3x slower

# --------------------------------------------------------------------------- decoding

# WHATWG maps these labels to supersets; decoding with the narrow codec garbles real pages
# (cp1252 quotes in "iso-8859-1" pages, GBK characters in "gb2312" pages...).
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "ascii": "cp1252",
    "us-ascii": "cp1252",
    "iso-8859-9": "cp1254",
    "latin5": "cp1254",
    "iso-8859-11": "cp874",
    "tis-620": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "gb_2312-80": "gb18030",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "windows-31j": "cp932",
    "big5": "big5hkscs",
    "utf-16": "utf-8",  # a <meta> cannot truthfully declare UTF-16 (it would be unreadable)
    "utf-16le": "utf-8",
    "utf-16be": "utf-8",
    "x-user-defined": "cp1252",
}

_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: same first two bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

_META_CHARSET = re.compile(
    rb"""<meta[^>]+?charset\s*=\s*["']?\s*([A-Za-z0-9._:\-]+)""", re.IGNORECASE
)
_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9._\-]+)""")
_PRESCAN_BYTES = 8192
_DETECT_BYTES = 65536


def _codec(label: str | None) -> str | None:
    """Python codec for a charset label, or None when the label is unknown."""
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    label = _CHARSET_ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def _valid_utf8_with_multibyte(body: bytes) -> bool:
    """True when the bytes are strict UTF-8 and use at least one non-ASCII character."""
    if body.isascii():
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _declared_charset(body: bytes) -> str | None:
    head = body[:_PRESCAN_BYTES]
    m = _XML_ENCODING.match(head) or _META_CHARSET.search(head)
    return _codec(m.group(1).decode("ascii", "replace")) if m else None


def _detect(body: bytes) -> str:
    try:
        body.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    best = charset_normalizer.from_bytes(body[:_DETECT_BYTES]).best()
    return _codec(best.encoding if best else None) or "cp1252"


def decode_html(body: bytes, charset: str | None = None) -> str:
    """Bytes of an HTML page to text.

    Order: BOM, the HTTP charset (when Python knows it), <meta charset> / http-equiv /
    XML declaration, then detection. A declared single- or multi-byte charset loses to UTF-8
    when the bytes are valid UTF-8 with non-ASCII characters: such a coincidence does not
    happen in real text, while mislabelled UTF-8 pages are common.
    """
    for bom, name in _BOMS:
        if body.startswith(bom):
            return body[len(bom) :].decode(name, errors="replace").replace("\x00", "")
    encoding = _codec(charset) or _declared_charset(body)
    if encoding is None:
        encoding = _detect(body)
    elif encoding != "utf-8" and _valid_utf8_with_multibyte(body):
        encoding = "utf-8"
    elif encoding == "utf-8":
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            # Declared UTF-8 but is not: trust the bytes (old pages behind new servers).
            encoding = _detect(body)
    return body.decode(encoding, errors="replace").replace("\x00", "")


# --------------------------------------------------------------------------- preprocessing

_LAZY_SRC_ATTRS = ("data-src", "data-lazy-src", "data-original", "data-lazy", "data-url")
_LAZY_SRCSET_ATTRS = ("data-srcset", "data-lazy-srcset")
_PLACEHOLDER = re.compile(
    r"^data:|blank\.|spacer\.|pixel\.|placeholder|transparent\.|lazy[-_.]|loading\.|/1x1\.|grey\.gif|gray\.gif",
    re.IGNORECASE,
)


def _is_placeholder(src: str | None) -> bool:
    return not src or not src.strip() or bool(_PLACEHOLDER.search(src.strip()))


def _best_from_srcset(srcset: str | None) -> str | None:
    """The largest candidate of a srcset ("a.jpg 320w, b.jpg 640w" or "a.jpg 1x, b.jpg 2x")."""
    if not srcset:
        return None
    best: tuple[float, str] | None = None
    for part in srcset.split(","):
        bits = part.split()
        if not bits or _is_placeholder(bits[0]):
            continue
        size = 1.0
        if len(bits) > 1 and bits[1][:-1].replace(".", "", 1).isdigit():
            size = float(bits[1][:-1])
        if best is None or size > best[0]:
            best = (size, bits[0])
    return best[1] if best else None


def _real_src(img: Tag) -> str | None:
    """The image a browser with JavaScript would end up showing."""
    for attr in _LAZY_SRC_ATTRS:
        value = img.get(attr)
        if isinstance(value, str) and not _is_placeholder(value):
            return value.strip()
    src = img.get("src")
    if isinstance(src, str) and not _is_placeholder(src):
        return src.strip()
    for attr in (*_LAZY_SRCSET_ATTRS, "srcset"):
        value = img.get(attr)
        best = _best_from_srcset(value if isinstance(value, str) else None)
        if best:
            return best
    picture = img.find_parent("picture")
    if picture is not None:
        for source in picture.find_all("source"):
            srcset = source.get("data-srcset") or source.get("srcset")
            best = _best_from_srcset(srcset if isinstance(srcset, str) else None)
            if best:
                return best
    return None


def _abs(url: str | None, base: str) -> str | None:
    if not url:
        return None
    url = re.sub(r"[\t\n\r]", "", url).strip()
    try:
        joined = urljoin(base, url) if base else url
    except ValueError:
        return None
    return joined if urlsplit(joined).scheme in ("http", "https") else None


def _fix_images(soup: BeautifulSoup, base: str) -> None:
    """Give every <img> its real, absolute src; swap placeholders for <noscript> fallbacks."""
    for noscript in soup.find_all("noscript"):
        fallback = noscript.find("img")
        if fallback is None:
            # Text such as "please enable JavaScript" is never content.
            noscript.decompose()
            continue
        placeholder = None
        for candidate in (noscript.find_previous_sibling("img"), noscript.parent and noscript.parent.find("img")):
            if isinstance(candidate, Tag) and candidate is not fallback:
                if _is_placeholder(candidate.get("src")) or _real_src(candidate) is None:  # type: ignore[arg-type]
                    placeholder = candidate
                    break
        if placeholder is not None:
            placeholder.replace_with(fallback.extract())
            noscript.decompose()
        else:
            sibling = noscript.find_previous_sibling("img")
            if isinstance(sibling, Tag) and _real_src(sibling):
                noscript.decompose()  # the image is already there: avoid a duplicate
            else:
                noscript.unwrap()
    for img in soup.find_all("img"):
        src = _abs(_real_src(img), base)
        if src is None:
            img.decompose()
            continue
        img["src"] = src
        for attr in (*_LAZY_SRC_ATTRS, *_LAZY_SRCSET_ATTRS, "srcset", "sizes"):
            if attr in img.attrs:
                del img[attr]


def _set_captions_aside(soup: BeautifulSoup) -> dict[str, str]:
    """Reduce each <figure> to its image; return image src -> caption text.

    trafilatura drops <figcaption> and, with images enabled, keeps the rest of a figure
    (credits, share buttons, galleries' text) as content. Captions are put back after
    extraction, on the images trafilatura kept.
    """
    captions: dict[str, str] = {}
    for figure in soup.find_all("figure"):
        if figure.decomposed:
            continue
        img = figure.find("img")
        if img is None:
            continue  # a figure without image (quote, table, embed): trafilatura decides
        caption = figure.find("figcaption")
        text = _squash(caption.get_text(" ")) if caption is not None else ""
        src = img.get("src")
        if text and isinstance(src, str):
            captions.setdefault(src, text)
        figure.replace_with(img.extract())
    return captions


def _apply_rule(soup: BeautifulSoup, rule: SiteRule, url: str) -> list[Tag]:
    """Remove rule.strip matches; return the rule.body matches (empty list: no body rule)."""
    try:
        for selector in rule.strip:
            for node in soup.select(selector):
                if not node.decomposed:
                    node.decompose()
        matches = list(soup.select(rule.body)) if rule.body else []
    except (SelectorSyntaxError, ValueError) as exc:
        raise ExtractError("bad_rule", f"{url}: invalid CSS selector in site rule: {exc}") from exc
    # Drop matches nested in other matches: their content is already included once.
    chosen = set(map(id, matches))
    return [m for m in matches if not any(id(p) in chosen for p in m.parents)]


def validate_rule(rule: SiteRule) -> list[str]:
    """Problems with a site rule's selectors (empty when all parse), for config checks."""
    problems = []
    probe = BeautifulSoup("<p></p>", "html.parser")
    for selector in ((rule.body,) if rule.body else ()) + tuple(rule.strip):
        try:
            probe.select(selector)
        except (SelectorSyntaxError, ValueError) as exc:
            problems.append(f"invalid CSS selector {selector!r}: {exc}")
    return problems


# --------------------------------------------------------------------------- page metadata


def _meta(soup: BeautifulSoup, *names: str) -> str | None:
    for name in names:
        tag = soup.find("meta", attrs={"property": name}) or soup.find("meta", attrs={"name": name})
        if isinstance(tag, Tag):
            content = tag.get("content")
            if isinstance(content, str) and content.strip():
                return content.strip()
    return None


def _parse_datetime(value: str | None) -> datetime | None:
    """ISO 8601 (as found in meta tags, JSON-LD, <time datetime>) to aware UTC."""
    if not value:
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


def _json_ld_values(soup: BeautifulSoup, key: str) -> Iterator[Any]:
    """Every value of ``key`` in the page's JSON-LD blocks (any nesting, @graph included)."""
    for script in soup.find_all("script", attrs={"type": "application/ld+json"}):
        try:
            data = json.loads(script.string or "")
        except (ValueError, RecursionError):
            continue
        stack = [data]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if key in node:
                    yield node[key]
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)


def _published(soup: BeautifulSoup) -> datetime | None:
    candidates: list[str | None] = [
        _meta(soup, "article:published_time", "og:published_time", "datePublished", "pubdate", "date"),
    ]
    candidates.extend(v for v in _json_ld_values(soup, "datePublished") if isinstance(v, str))
    itemprop = soup.find(attrs={"itemprop": "datePublished"})
    if isinstance(itemprop, Tag):
        value = itemprop.get("content") or itemprop.get("datetime")
        candidates.append(value if isinstance(value, str) else None)
    for candidate in candidates:
        parsed = _parse_datetime(candidate)
        if parsed is not None:
            return parsed
    return None


def _language(soup: BeautifulSoup) -> str | None:
    html = soup.find("html")
    values = [html.get("lang") if isinstance(html, Tag) else None]
    equiv = soup.find("meta", attrs={"http-equiv": re.compile("^content-language$", re.I)})
    if isinstance(equiv, Tag):
        values.append(equiv.get("content"))
    values.append(_meta(soup, "og:locale", "language"))
    for value in values:
        if isinstance(value, str):
            primary = re.split(r"[-_,;\s]", value.strip(), maxsplit=1)[0].lower()
            if re.fullmatch(r"[a-z]{2,3}", primary):
                return primary
    return None


def _canonical(soup: BeautifulSoup, url: str) -> str | None:
    for link in soup.find_all("link", href=True):
        rel = link.get("rel") or []
        rels = rel if isinstance(rel, list) else str(rel).split()
        if "canonical" in (r.lower() for r in rels):
            return _abs(str(link["href"]), url)
    return _abs(_meta(soup, "og:url"), url)


# --------------------------------------------------------------------------- post-processing

_BLOCKS = ("p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "blockquote", "pre", "figure", "ul", "ol", "table", "div")

_MONTHS_AND_DATE_WORDS = {
    # Stems (first four letters, case-folded) of months, weekdays and "published/updated"
    # words in the languages of the region and the corpus.
    *"janu febr marc apri may june july augu sept octo nove dece".split(),
    *"jan feb mar apr jun jul aug sep oct nov dec".split(),
    *"mond tues wedn thur frid satu sund publ upda post last modi".split(),
    *"янва февр март апре мая май июня июнь июля июль авгу сент октя нояб дека".split(),
    *"поне втор сред четв пятн субб воск опуб обно".split(),
    *"հունվ փետր մարտ ապրի մայի հունի հուլի օգոս սեպտ հոկտ նոյե դեկտ".split(),
    *"yanv fevr mart apre iyun iyul avqu sent okty noya deka".split(),
    *"იანვ თებე მარტ აპრი მაის ივნი ივლი აგვი სექტ ოქტო ნოემ დეკე".split(),
    *"janv févr mars avri juin juil août sept octo nove déce".split(),
    *"ener febr marz abri mayo juni juli agos sept octu novi dici".split(),
    *"janu febr märz apri juni juli augu sept okto nove deze".split(),
}


def _squash(text: str) -> str:
    return " ".join(text.split())


def _norm(text: str) -> str:
    """Comparison key: case-folded words without punctuation."""
    return " ".join(re.findall(r"\w+", text.casefold()))


def _is_date_line(text: str) -> bool:
    if len(text) > 80:
        return False
    words = re.findall(r"\w+", text.casefold())
    if not words or not any(w.isdigit() for w in words):
        return False
    dateish = sum(1 for w in words if w.isdigit() or len(w) <= 2 or w[:4] in _MONTHS_AND_DATE_WORDS or w[:3] in _MONTHS_AND_DATE_WORDS)
    return dateish >= 0.8 * len(words)


_BREADCRUMB_START = re.compile(r"^\s*(home|main|главная|главная страница|գլխավոր|ana səhifə|მთავარი|startseite|accueil|inicio)\b", re.I)
_BREADCRUMB_SEP = re.compile(r"\s[»›>/•|→]\s|^[•›»]")


def _is_breadcrumb(text: str, title_key: str) -> bool:
    if len(text) > 200:
        return False
    if _BREADCRUMB_START.search(text):
        return True
    return bool(_BREADCRUMB_SEP.search(text)) and title_key != "" and title_key in _norm(text)


def _top_blocks(body: Tag, limit: int = 6) -> list[Tag]:
    """The first top-level blocks of the extracted body, where repeats of the metadata sit."""
    out = []
    for child in body.children:
        if isinstance(child, Tag):
            out.append(child)
            if len(out) >= limit:
                break
    return out


def _drop_metadata_repeats(body: Tag, title: str | None) -> None:
    title_key = _norm(title or "")
    for heading in body.find_all(["h1"]):
        if title_key and _norm(heading.get_text(" ")) == title_key:
            heading.decompose()
    for block in _top_blocks(body):
        if block.name == "img" or block.find("img") is not None:
            continue
        text = _squash(block.get_text(" "))
        key = _norm(text)
        if not key:
            continue
        if (
            (title_key and key == title_key)
            or _is_date_line(text)
            or _is_breadcrumb(text, title_key)
        ):
            block.decompose()
        elif len(text) > 150:
            break  # the article proper has begun
    for img in body.find_all("img"):
        alt = img.get("alt")
        if title_key and isinstance(alt, str) and _norm(alt) == title_key:
            del img["alt"]  # the image alt is the title a third time (seen on real outlets)


def _restore_captions(soup: BeautifulSoup, body: Tag, captions: dict[str, str]) -> None:
    """Wrap each extracted image that had a caption in <figure><img><figcaption>."""
    for img in body.find_all("img"):
        src = img.get("src")
        caption = captions.get(src) if isinstance(src, str) else None
        if caption is None:
            continue
        figure = soup.new_tag("figure")
        parent = img.parent
        if isinstance(parent, Tag) and parent is not body and parent.name == "p":
            if _squash(parent.get_text()) or len(parent.find_all(True)) > 1:
                parent.insert_after(figure)  # a <figure> cannot sit inside a <p>
            else:
                parent.replace_with(figure)
            figure.append(img.extract())
        else:
            img.replace_with(figure)
            figure.append(img)
        figcaption = soup.new_tag("figcaption")
        figcaption.string = caption
        figure.append(figcaption)
        # trafilatura may have kept the caption text as a paragraph of its own
        following = figure.find_next_sibling()
        if isinstance(following, Tag) and _norm(following.get_text(" ")) == _norm(caption):
            following.decompose()


def _block_text(body: Tag) -> str:
    """Plain text: blocks as paragraphs separated by a blank line, <br> as a line break."""
    for br in body.find_all("br"):
        br.replace_with("\n")
    for block in body.find_all(_BLOCKS):
        block.insert_before("\n\n")
        block.insert_after("\n\n")
    paragraphs = []
    for chunk in re.split(r"\n\s*\n", body.get_text()):
        lines = [_squash(line) for line in chunk.split("\n")]
        text = "\n".join(line for line in lines if line)
        if text:
            paragraphs.append(text)
    return "\n\n".join(paragraphs)


def _inner_html(tag: Tag) -> str:
    return "".join(str(child) for child in tag.children).strip()


# --------------------------------------------------------------------------- extraction


def _run_trafilatura(html: str, url: str) -> Any:
    return trafilatura.bare_extraction(
        html,
        url=url or None,
        with_metadata=True,
        include_images=True,
        include_links=True,
        include_formatting=True,
        include_tables=True,
        include_comments=False,
        output_format="html",
    )


def _check_size(text_len: int, tags: int, url: str) -> None:
    if text_len > MAX_BYTES:
        raise ExtractError("too_large", f"{url}: page of {text_len} characters exceeds {MAX_BYTES}")
    if tags > MAX_TAGS:
        raise ExtractError("too_large", f"{url}: page has {tags} tags, more than the {MAX_TAGS} allowed")


def extract_article(
    body: bytes | str,
    url: str,
    *,
    charset: str | None = None,
    rule: SiteRule | None = None,
) -> Article:
    """Main content and metadata of an article page; raises ExtractError(kind, message).

    Kinds: ``empty`` (no bytes or only whitespace), ``too_large`` (bytes or tag count over the
    guards), ``no_content`` (no article text found), ``too_deep`` (nesting beyond recursion),
    ``bad_rule`` (invalid CSS selector in the site rule).
    """
    if isinstance(body, bytes):
        if len(body) > MAX_BYTES:
            raise ExtractError("too_large", f"{url}: page of {len(body)} bytes exceeds {MAX_BYTES}")
        text = decode_html(body, charset)
    else:
        text = body.replace("\x00", "")
    if not text.strip():
        raise ExtractError("empty", f"{url}: empty page")
    _check_size(len(text), text.count("<"), url)
    try:
        return _extract(text, url, rule)
    except RecursionError as exc:
        raise ExtractError("too_deep", f"{url}: page nested too deeply to parse") from exc


def _extract(html: str, url: str, rule: SiteRule | None) -> Article:
    soup = BeautifulSoup(html, _BS4_PARSER)
    for comment in soup.find_all(string=lambda s: isinstance(s, Comment)):
        comment.extract()  # commented-out markup must not come back as content

    published = _published(soup)
    language = _language(soup)
    canonical = _canonical(soup, url)
    description = _meta(soup, "og:description", "description", "twitter:description")
    meta_image = _abs(_meta(soup, "og:image", "og:image:url", "twitter:image"), url)

    method = "trafilatura"
    rule_body: list[Tag] = _apply_rule(soup, rule, url) if rule is not None else []
    _fix_images(soup, url)
    captions = _set_captions_aside(soup)
    if rule_body:
        # Keep <head> so trafilatura still reads title, author and date from meta tags.
        head = soup.find("head")
        inner = "".join(str(node) for node in rule_body if not node.decomposed)
        page = f"<html>{head if head is not None else ''}<body><article>{inner}</article></body></html>"
        method = "rule+trafilatura"
    else:
        page = str(soup)

    document = _run_trafilatura(page, url)
    if document is None or document.body is None:
        if not rule_body:
            raise ExtractError("no_content", f"{url}: no article text found")
        # The rule names the body: trust it even when trafilatura finds it too short.
        out = BeautifulSoup(f"<html><body>{inner}</body></html>", _BS4_PARSER)
        method = "rule"
        title = _meta(soup, "og:title") or (soup.title.get_text(strip=True) if soup.title else None)
        author = _meta(soup, "author", "article:author")
        date = None
        image = meta_image
    else:
        out = BeautifulSoup(build_html_output(document), _BS4_PARSER)
        title, author, date, image = document.title, document.author, document.date, document.image
    result = out.body
    if result is None:
        raise ExtractError("no_content", f"{url}: no article text found")

    _restore_captions(out, result, captions)
    _drop_metadata_repeats(result, title)
    content_html = _inner_html(result)
    text = _block_text(result)
    if not text and result.find("img") is None:
        raise ExtractError("no_content", f"{url}: no article text found")

    image = meta_image or _abs(image, url)
    if published is None:
        published = _parse_datetime(date)  # trafilatura/htmldate: a day, no time
    return Article(
        html=content_html,
        text=text,
        title=_squash(title) if title else None,
        author=_squash(author) if author else None,
        published=published,
        image=image,
        image_caption=captions.get(image) if image else None,
        language=language,
        canonical_url=canonical,
        method=method,
        description=_squash(description) if description else None,
    )
