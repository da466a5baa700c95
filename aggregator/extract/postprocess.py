"""trafilatura's output tree made into the article: images put back, repeats of the title, date
line and breadcrumbs dropped, related-article links and picture credits dropped, HTML and text."""

from __future__ import annotations

import re
from html import escape
from typing import Any
from urllib.parse import urlsplit

from lxml import etree

from aggregator.extract.cascade import _BLOCK_TAGS
from aggregator.extract.decode import _WORD, _norm, _remove, _squash, _text
from aggregator.extract.images import _abs, _Image
from aggregator.extract.metadata import _json_ld_values, _meta, _Page

# --------------------------------------------------------------------------- post-processing

_BLOCKS = tuple(
    "p h1 h2 h3 h4 h5 h6 li blockquote pre figure figcaption ul ol table tr div".split()
)

_MONTHS_AND_DATE_WORDS = {
    # Stems (first three or four letters, case-folded) of months, weekdays and "published /
    # updated" in the languages of the region and of the corpus.
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
    *"janu febr märz apri juni juli augu sept okto nove deze stand".split(),
}



def _is_date_line(text: str) -> bool:
    """A short line made of a date, a time and words such as "Published" or "Updated"."""
    if len(text) > 80:
        return False
    words = _WORD.findall(text.casefold())
    if not words or not any(w.isdigit() for w in words):
        return False
    dateish = sum(
        1
        for w in words
        if w.isdigit()
        or len(w) <= 2
        or w[:4] in _MONTHS_AND_DATE_WORDS
        or w[:3] in _MONTHS_AND_DATE_WORDS
    )
    return dateish >= 0.8 * len(words)


_BREADCRUMB_START = re.compile(
    r"^\s*(home|main page|главная|գլխավոր|ana səhifə|მთავარი|startseite|accueil|inicio)\b",
    re.IGNORECASE,
)
_BREADCRUMB_SEP = re.compile(r"\s[»›>/•|→]\s|^\s*[•›»]")


def _is_breadcrumb(text: str, title_key: str) -> bool:
    if len(text) > 200:
        return False
    if _BREADCRUMB_START.search(text) and len(text.split()) <= 25:
        return True
    return bool(_BREADCRUMB_SEP.search(text)) and bool(title_key) and title_key in _norm(text)


# "Read also: <a>another article's headline</a>": a block made of a short label and one link
# to another page of the same site, which outlets put between paragraphs in every language
# ("Читайте также:", "Lea también:", "À lire aussi »", "Czytaj też:"...). The label is told
# by its length and the separator it ends with, not by its words.
_LABEL_END = frozenset(":：»›>–—-։՝")
_LABEL_MAX, _LABEL_WORDS, _HEADLINE_MIN, _TEASER_MAX = 40, 5, 15, 300


def _site(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower()
    return host[4:] if host.startswith("www.") else host


def _is_related_link(block: Any, link: Any, text: str, site: str, base: str) -> bool:
    headline = _squash(_text(link))
    if len(headline) < _HEADLINE_MIN or not text.endswith(headline):
        return False
    label = text[: len(text) - len(headline)].strip()
    if not label or len(label) > _LABEL_MAX or len(label.split()) > _LABEL_WORDS:
        return False
    if label[-1] not in _LABEL_END:
        return False
    target = _abs(link.get("href"), base)
    return target is not None and _site(target) == site and target.split("#")[0] != base


# A picture credit left standing as a paragraph of its own once its picture is gone: a
# "Photo:" label (in the languages of the region and of the corpus) and a few words.
_CREDIT_LABEL = (
    r"^\W{0,2}(?:"
    r"(?:photos?|foto|fotos|fotó|kuva|bild|image|picture|credits?|crédits? photos?|фото|"
    r"фотография|լուսանկար(?:ը|ներ)?|ფოტო|şəkil|foto\s?şəkil)(?:\s*credit)?\s*[:：©՝]"
    r"|(?:photo|screenshot|image|picture|illustration)s?\s+(?:by|via|courtesy(?:\s+of)?)"
    r"|courtesy(?:\s+of)?)"
)
_CREDIT_LINE = re.compile(_CREDIT_LABEL + r"\s*\S(?:\S*\s*){0,6}$", re.IGNORECASE)
_CREDIT_LINE_START = re.compile(_CREDIT_LABEL, re.IGNORECASE)


def _drop_related_links(body: Any, base: str) -> None:
    """Remove "Read also" link lines and picture credit lines (above)."""
    site = _site(base)
    for block in list(body.iter(*_RELATED_BLOCKS)):
        links = list(block.iter("a"))
        related = bool(site) and len(links) == 1
        # a credit's label opens the block: its first words tell (cheaper than its text)
        if not related and not _CREDIT_LINE_START.match(_squash(_first_words(block))):
            continue
        raw = _text(block)
        if len(raw) > 2 * _TEASER_MAX:  # even with its whitespace collapsed, too long for either
            continue
        text = _squash(raw)
        if len(text) > _TEASER_MAX:
            continue
        if (related and _is_related_link(block, links[0], text, site, base)) or (
            _CREDIT_LINE.match(text) and next(block.iter("img"), None) is None
        ):
            _remove(block)


def _first_words(block: Any) -> str:
    """The block's text up to its first 40 characters (whole pieces)."""
    head = ""
    for piece in block.itertext():
        head += piece
        if len(head.strip()) >= 40:
            break
    return head


_RELATED_BLOCKS = ("p", "li", "blockquote", "h2", "h3", "h4", "h5", "h6", "div")


# trafilatura trims the text after a link it keeps as a paragraph of its own ("Written by
# <a>Miami Today</a> on November 7" comes out as "Miami Todayon November 7"). Where the
# page has the same link followed by whitespace, the space is put back.
def _restore_link_spaces(body: Any, page: Any) -> None:
    joined = [
        a for a in body.iter("a") if a.tail and a.tail[0].isalnum() and a.get("href") is not None
    ]
    if not joined:
        return
    hrefs = {a.get("href") for a in joined}
    spaced = {
        (a.get("href"), _squash(_text(a)))
        for a in page.iter("a")
        if a.get("href") in hrefs and a.tail and a.tail[0].isspace()
    }
    for a in joined:
        if (a.get("href"), _squash(_text(a))) in spaced:
            a.tail = " " + a.tail


# trafilatura also splits a run of loose text at a link it keeps ("<div>...rushed off to a
# <a>security fair</a> in Las Vegas...<br><br>...</div>" comes out as two paragraphs, the
# second starting with the link). Where the page has the link right after the text that
# ends the paragraph before, in one run (no block element or double <br> between), the two
# are one paragraph again.
_RUN_BREAKS = frozenset(_BLOCK_TAGS) - {"br"}


def _text_before_in_run(link: Any) -> str:
    """The text before a link in its run of loose text and inline elements, up to 80
    characters, as it stands on the page."""
    pieces: list[str] = []
    node, size = link, 0
    while size < 80:
        prev = node.getprevious()
        if prev is None:
            parent = node.getparent()
            if parent is None:
                break
            pieces.append(parent.text or "")
            if parent.tag in _RUN_BREAKS or parent.tag in ("body", "td", "th", "li"):
                break
            node = parent
        elif not isinstance(prev.tag, str):
            pieces.append(prev.tail or "")
            node = prev
        elif prev.tag in _RUN_BREAKS:
            pieces.append(prev.tail or "")
            break
        elif prev.tag == "br":
            pieces.append(" " + (prev.tail or ""))  # a line break, as whitespace
            twin = prev.getprevious()
            if twin is not None and twin.tag == "br" and not (twin.tail or "").strip():
                break
            node = prev
        else:
            pieces.append("".join(prev.itertext()) + (prev.tail or ""))
            node = prev
        size += len(pieces[-1])
    return "".join(reversed(pieces))


def _rejoin_split_runs(body: Any, page: Any) -> None:
    starts = [
        p
        for p in body
        if p.tag == "p"
        and not (p.text or "").strip()
        and len(p)
        and p[0].tag == "a"
        and p.getprevious() is not None
        and p.getprevious().tag == "p"
    ]
    if not starts:
        return
    hrefs = {p[0].get("href") for p in starts}
    sources: dict[tuple[str | None, str], Any] = {}
    for link in page.iter("a"):
        if link.get("href") in hrefs:
            sources.setdefault((link.get("href"), _squash(_text(link))), link)
    for p in starts:
        source = sources.get((p[0].get("href"), _squash(_text(p[0]))))
        raw = _text_before_in_run(source) if source is not None else ""
        before = _squash(raw)
        # "text<a>" with no space between: two pieces of the page's furniture, not prose
        if not before or not raw[-1].isspace():
            continue
        prev = p.getprevious()
        if not _squash(_text(prev)).endswith(before[-40:]):
            continue
        if len(prev):
            prev[-1].tail = (prev[-1].tail or "").rstrip() + " "
        else:
            prev.text = (prev.text or "").rstrip() + " "
        for child in list(p):
            prev.append(child)
        body.remove(p)


def _drop_metadata_repeats(body: Any, titles: list[str]) -> None:
    """Remove what repeats the metadata at the top: title heading, date line, breadcrumbs."""
    keys = {k for k in map(_norm, titles) if k}
    title_key = _norm(titles[0]) if titles else ""
    for heading in list(body.iter("h1")):
        if _norm(_text(heading)) in keys:
            _remove(heading)
    seen = 0
    for block in list(body):
        if block.tag in ("figure", "img") or next(block.iter("img"), None) is not None:
            continue
        text = _squash(_text(block))
        if not text:
            continue
        if _norm(text) in keys or _is_date_line(text) or _is_breadcrumb(text, title_key):
            _remove(block)
            continue
        seen += 1
        if len(text) > 150 or seen >= 4:
            break  # the article proper has begun
    for img in body.iter("img"):
        alt = img.get("alt")
        if alt is not None and _norm(alt) in keys:
            del img.attrib["alt"]  # the image alt is the title a third time (seen on real outlets)
    for caption in list(body.iter("figcaption")):
        if _norm(_text(caption)) in keys:
            _remove(caption)  # a "caption" that only repeats the title


_TITLE_SEPARATORS = re.compile(r"\s*(?:[|–—·:»]|\s-)\s*")


def _choose_title(page: _Page) -> str | None:
    """The headline: the page's <h1> when it agrees with the declared titles (og:title,
    JSON-LD headline, a lone <h1>, <title>), else the declared title without a " | Site name" suffix.

    On the corpus the <h1> matches the reference headline far more often than og:title or
    <title>, which carry site names and kickers; requiring agreement skips logo <h1>s.
    """
    site = _norm(_meta(page, "og:site_name", "application-name") or "")
    headline = next((h for h in _json_ld_values(page, "headline") if isinstance(h, str)), None)
    only_h1 = page.h1[0] if page.h1_count == 1 else None  # trafilatura's choice, in this order
    candidates = (_meta(page, "og:title", "twitter:title"), headline, only_h1, page.title)
    declared = [t for t in candidates if t and _norm(t) and _norm(t) != site]
    reference = " ".join(_norm(t) for t in declared)
    longest = max((len(_norm(t)) for t in declared), default=0)
    for h1 in page.h1:
        key = _norm(h1)
        if len(key) >= 10 and key != site and key in reference and len(key) >= 0.4 * longest:
            return _squash(h1)
    if not declared:
        return _squash(page.h1[0]) if page.h1 and page.h1[0].strip() else None
    title = _squash(declared[0])
    if site:  # "Headline | Site", "Site - Headline"
        for sep in reversed(list(_TITLE_SEPARATORS.finditer(title))):
            if _norm(title[sep.end() :]) == site:
                return title[: sep.start()]
        for sep in _TITLE_SEPARATORS.finditer(title):
            if _norm(title[: sep.start()]) == site:
                return title[sep.end() :]
    return title


def _figure(image: _Image) -> Any:
    img = etree.Element("img", src=image.src)
    if image.alt:
        img.set("alt", image.alt)
    if not image.caption:
        return img
    figure = etree.Element("figure")
    figure.append(img)
    etree.SubElement(figure, "figcaption").text = image.caption
    return figure


def _insert_after(anchor: Any, node: Any) -> None:
    node.tail, anchor.tail = anchor.tail, None
    anchor.addnext(node)


def _place_images(body: Any, images: list[_Image]) -> list[_Image]:
    """Insert each image next to the extracted block that holds its neighbouring text.

    Returns the images placed, in page order.
    """
    if not images:
        return []
    blocks = [(child, _norm(_text(child))) for child in body]
    placed: list[_Image] = []
    last_after: dict[int, Any] = {}
    for image in images:
        target = None
        if image.before:
            target = next((b for b, key in blocks if image.before in key), None)
        if target is not None:
            target.addprevious(_figure(image))
        elif (
            image.after
            and (target := next((b for b, key in blocks if image.after in key), None)) is not None
        ):
            anchor = last_after.get(id(target), target)
            node = _figure(image)
            _insert_after(anchor, node)
            last_after[id(target)] = node
        else:
            continue
        placed.append(image)
    return placed


_EMPTY_CHECKED = ("p", "li", "blockquote", "div", "h2", "h3", "h4", "h5", "h6", "a", "strong", "em")


def _drop_empty(body: Any) -> None:
    for block in list(body.iter(*_EMPTY_CHECKED)):
        # a block inside one removed before is detached: removing it again is harmless
        if not "".join(block.itertext()).strip() and next(block.iter("img"), None) is None:
            _remove(block)


def _block_text(body: Any) -> str:
    """Plain text: blocks as paragraphs separated by a blank line, <br> as a line break."""
    parts: list[str] = []
    for event, el in etree.iterwalk(body, events=("start", "end")):
        if event == "start":
            if el.tag == "br":
                parts.append("\x01")
            elif el.tag in _BLOCKS:
                parts.append("\x02")
            if el.text:
                parts.append(el.text)
        else:
            if el.tag in _BLOCKS:
                parts.append("\x02")
            if el.tail and el is not body:
                parts.append(el.tail)
    paragraphs = []
    for chunk in "".join(parts).split("\x02"):
        lines = [_squash(line) for line in chunk.split("\x01")]
        text = "\n".join(line for line in lines if line)
        if text:
            paragraphs.append(text)
    return "\n\n".join(paragraphs)


# --------------------------------------------------------------------------- trafilatura's XML

_HI = {"#b": "strong", "#i": "em", "#u": "u", "#t": "code", "#sub": "sub", "#sup": "sup"}
_SIMPLE = {
    "p": "p", "quote": "blockquote", "code": "pre", "table": "table", "row": "tr", "item": "li",
    "del": "s", "div": "div", "lb": "br", "figure": "figure",
}  # fmt: skip
_VOID = frozenset({"br", "img"})
_UNWRAP = "x-unwrap"  # elements with no HTML counterpart: their content is kept


def _to_html_tree(body: Any) -> None:
    """trafilatura's XML vocabulary (head, list, item, hi, ref, cell...) to HTML, in place."""
    unwrap = False
    for elem in body.iter(etree.Element):
        if elem is body:
            continue
        tag, rend = elem.tag, elem.get("rend") or ""
        attrs: dict[str, str] = {}
        if tag == "head":
            name: str | None = rend if re.fullmatch(r"h[1-6]", rend) else "h3"
        elif tag == "list":
            name = "ol" if rend == "ol" else "ul"
        elif tag == "hi":
            name = _HI.get(rend, "em")
        elif tag == "cell":
            name = "th" if elem.get("role") == "head" else "td"
        elif tag == "ref":
            name = "a"
            if elem.get("target"):
                attrs["href"] = elem.get("target")
        elif tag == "graphic":
            name = "img" if elem.get("src") else None
            if name:
                attrs["src"] = elem.get("src")
        else:
            name = _SIMPLE.get(tag)
        elem.attrib.clear()
        elem.attrib.update(attrs)
        if name is None:
            name, unwrap = _UNWRAP, True
        elem.tag = name
    if unwrap:
        etree.strip_tags(body, _UNWRAP)


def _to_html(body: Any) -> str:
    """The content of an element as HTML (void elements written as <img .../>)."""
    parts: list[str] = []
    if body.text:
        parts.append(escape(body.text, quote=False))
    for event, el in etree.iterwalk(body, events=("start", "end")):
        if el is body or not isinstance(el.tag, str):
            continue
        if event == "start":
            attrs = "".join(f' {k}="{escape(v)}"' for k, v in el.attrib.items())
            if el.tag in _VOID:
                parts.append(f"<{el.tag}{attrs}/>")
            else:
                parts.append(f"<{el.tag}{attrs}>")
            if el.text:
                parts.append(escape(el.text, quote=False))
        else:
            if el.tag not in _VOID:
                parts.append(f"</{el.tag}>")
            if el.tail:
                parts.append(escape(el.tail, quote=False))
    return "".join(parts)


