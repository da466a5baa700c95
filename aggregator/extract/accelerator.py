"""Faster equivalents of the trafilatura XPaths and the jusText paragraph maker that
trafilatura calls through its modules' globals, installed in place of those globals.

install() is called once per extraction worker process (pipeline's pool initializer), never in
the daemon's own process: the globals are process-wide, and in a worker no other caller shares
them. It installs nothing unless a full guard matches: the SHA-256 of the source of every name
it replaces, of every trafilatura and jusText function that reads those names or that our
cascade calls or re-implements, and the trafilatura and jusText versions. On a mismatch it
logs one warning and the extraction runs on trafilatura's and jusText's own code, which gives
the same text (tests compare both on the corpus), only slower.

Each XPath family trafilatura evaluates calls a Python regular expression from libxml2 (EXSLT
re:test) on every element of a kind: OVERALL_DISCARD_XPATH (boilerplate sections), BODY_XPATH
(the article's container) and BASIC_CLEAN_XPATH (before its fallbacks and its page measure).
Here each is evaluated as libxml2 picking the elements that carry one of the attributes its
predicate reads, then its predicate, written out verbatim in Python, on those: the same
elements in the same order (tests run both on corpus pages). Spelling the regular expressions
out as contains() calls instead is slower: libxml2 copies the attribute's string for each call.

jusText (trafilatura's last fallback) walks the page through lxml.sax and recomputes each
paragraph's normalised text several times while classifying it. _ParagraphMaker sends its
handler the same events in the same order without the SAX layer, and its paragraphs compute
their text once.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
import threading
from dataclasses import dataclass
from functools import cache, cached_property
from hashlib import sha256
from importlib.metadata import version
from typing import Any

from justext.core import ParagraphMaker
from justext.paragraph import Paragraph
from lxml import etree
from trafilatura.settings import BASIC_CLEAN_XPATH
from trafilatura.xpaths import BODY_XPATH, OVERALL_DISCARD_XPATH

from aggregator.extract.cascade import _EmulatedXPath, _first_of

log = logging.getLogger(__name__)


# OVERALL_DISCARD_XPATH[0]
_BOILERPLATE_ID = re.compile(
    "^shar|social|viral|newsletter|syndication|tags|sidebar|banner|bread-?crumb|button|author|"
    "^(?:jp-|dpsp-content)|bmdh|footer|Footer|share|Share|nav|Nav|menu|related|"
    "message-container|premium|^ad-"
)
_BOILERPLATE_CLASS = re.compile(
    "^shar|social|viral|newsletter|syndication|tags|sidebar|banner|bread-?crumb|button|author|"
    "^(?:nav|post-nav|ZendeskForm)|subnav|avigation|navbar|navbox|menu|bar| ad |-ad-|"
    "(?:^| )ad-|dfp[Aa]d|outbrain|taboola|criteo|paid-?content|widget|footer|Footer|byline|"
    "Byline|share-|sociable|embedded|embed|tag-list|consent|modal-content|permission|elated|"
    "next-|-stories|most-popular|more-on|meta|rating|attachment|timestamp|user-info|"
    "user-profile|-icon|article-infos|message-container|slide|viewport|overlay|options|expand|"
    "obfuscated|blurred|mol-factbox|yin|zlylin|nfoline"
)


def _boilerplate(el: Any) -> bool:
    get = el.get
    if get("data-lp-replacement-content") is not None:
        return True
    role = get("role")
    if role and "nav" in role.replace("N", "n"):
        return True
    component = get("data-component")
    if component and "MostPopularStories" in component:
        return True
    ident, cls = get("id"), get("class")
    first = _first_of(el, "id", "class")
    if first and "cookie" in first:
        return True
    return bool((ident and _BOILERPLATE_ID.search(ident)) or (cls and _BOILERPLATE_CLASS.search(cls)))


# OVERALL_DISCARD_XPATH[1]
_HIDDEN_ID = re.compile("reader-comments|akismet")
_HIDDEN_CLASS = re.compile(
    "^hide-|comments-title|nocomments|-reply-|message|akismet|suggest-links|-hide-|hide-print|"
    " hidden| hide|noprint|notloaded"
)


def _hidden_or_reply(el: Any) -> bool:
    get = el.get
    cls, style = get("class"), get("style")
    if cls == "comments-title" or get("aria-hidden") == "true":
        return True
    first = _first_of(el, "id", "class")
    if first and first.startswith("reply-"):
        return True
    first = _first_of(el, "id", "style")
    if first and "hidden" in first:
        return True
    if style and ("display:none" in style or "display: none" in style):
        return True
    ident = get("id")
    return bool((ident and _HIDDEN_ID.search(ident)) or (cls and _HIDDEN_CLASS.search(cls)))


# BODY_XPATH[0], [2], [3] ([1] and [4] call no regular expression)
_BODY0_ID = re.compile(
    "(?:entry|article|art)-content|article__content|article(?:-|__)?body|articleBody|body-text"
)
_BODY0_CLASS = re.compile(
    "post[-_]text|post-body|post-?entry|post[-_]?content|postContent|post_inner_wrapper|"
    "article-?text|articleText|(?:entry|page|text|article|art)-content|article__content|"
    "article(?:-|__)?body|articleBody|ArticleContent|body-text|article__container"
)
_BODY2_ID = re.compile("^primary|story-body")
_BODY2_FULLTEXT = re.compile("fulltext", re.IGNORECASE)
_BODY2_CLASS = re.compile(
    "^article |post-bodycopy|story-?content|(?:theme|blog|section|single)-content|single-post|"
    "main-column|wpb_text_column|story-body|field-body"
)
_BODY3_ID = re.compile("content-main|content-body|contentBody")
_BODY3_CLASS = re.compile("content[-_]main|content(?:-|__)body")


def _article_body(el: Any) -> bool:
    get = el.get
    cls, ident = get("class"), get("id")
    return (
        cls in ("post", "entry")
        or get("itemprop") == "articleBody"
        or ident == "articleContent"
        or bool(ident and _BODY0_ID.search(ident))
        or bool(cls and _BODY0_CLASS.search(cls))
    )


def _story_body(el: Any) -> bool:
    get = el.get
    cls, ident = get("class"), get("id")
    return (
        get("role") == "article"
        or ident in ("article", "story")
        or cls in ("postarea", "art-postcontent", "text", "cell", "story")
        or bool(ident and _BODY2_ID.search(ident))
        or bool(cls and (_BODY2_FULLTEXT.search(cls) or _BODY2_CLASS.search(cls)))
    )


def _main_content(el: Any) -> bool:
    get = el.get
    cls, ident = get("class"), get("id")
    if ident == "content" or cls == "content":
        return True
    if ident and (
        _BODY3_ID.search(ident) or "main-content" in ident.replace("C", "c").replace("M", "m")
    ):
        return True
    return bool(
        cls
        and (
            _BODY3_CLASS.search(cls)
            or "main-content" in cls.replace("C", "c").replace("M", "m")
            or "page-content" in cls.replace("C", "c").replace("P", "p")
        )
    )


# BASIC_CLEAN_XPATH (trafilatura.baseline's cleaning, run before html2txt, jusText and its
# baseline extractor)
_ALWAYS_CLEANED = frozenset("aside fencedframe footer script style svg template".split())
_CONSENT = re.compile(
    "cookie[-_]?(?:banner|bar|consent|law|notice|policy|description)|notice[-_]{0,2}cookie"
    "|consent[-_]?(?:banner|manager|sdk)|borlabs|cookiebot|cmplz|onetrust|moove[-_]?gdpr",
    re.IGNORECASE,
)


def _basic_clean(el: Any) -> bool:
    tag = el.tag
    if tag in _ALWAYS_CLEANED:
        return True
    if tag == "div":
        first = _first_of(el, "class", "id")
        if first and "footer" in first:
            return True
    cls, ident = el.get("class"), el.get("id")
    return bool((cls and _CONSENT.search(cls)) or (ident and _CONSENT.search(ident)))


@dataclass(frozen=True)
class _Emulations:
    overall: list[Any]  # for trafilatura.main_extractor.OVERALL_DISCARD_XPATH
    body: list[Any]  # for trafilatura.main_extractor.BODY_XPATH
    basic: Any  # for trafilatura.baseline.BASIC_CLEAN_XPATH


@cache
def emulations() -> _Emulations:
    """The XPath equivalents (built on first use; install() only uses them once the guard
    has matched, tests compare them with trafilatura's own XPaths)."""
    blocks = ".//*[self::article or self::div or self::main or self::section]"
    overall = [
        _EmulatedXPath(
            OVERALL_DISCARD_XPATH[0],
            ".//*[self::div or self::item or self::list or self::p or self::section"
            " or self::span][@data-lp-replacement-content or @role or @data-component"
            " or @id or @class]",
            _boilerplate,
        ),
        _EmulatedXPath(
            OVERALL_DISCARD_XPATH[1], ".//*[@class or @id or @style or @aria-hidden]",
            _hidden_or_reply,
        ),
    ]
    body = [
        _EmulatedXPath(
            BODY_XPATH[0], blocks + "[@class or @id or @itemprop]", _article_body, first=True
        ),
        BODY_XPATH[1],
        _EmulatedXPath(BODY_XPATH[2], blocks + "[@class or @id or @role]", _story_body, True),
        _EmulatedXPath(BODY_XPATH[3], blocks + "[@class or @id]", _main_content, first=True),
        BODY_XPATH[4],
    ]
    basic = _EmulatedXPath(
        BASIC_CLEAN_XPATH,
        ".//aside|.//fencedframe|.//footer|.//script|.//style|.//svg|.//template"
        "|.//*[@class or @id]",
        _basic_clean,
    )
    return _Emulations(overall, body, basic)


class _Paragraph(Paragraph):  # type: ignore[misc]
    """jusText's paragraph, its text normalised once: classify_paragraphs reads it about six
    times, and only once the paragraph is complete. Its DOM path and XPath are written when
    read: a paragraph starts at every block element, and most stay empty and are dropped."""

    def __init__(self, path: Any) -> None:
        self._path = list(path._elements)  # (tag, position, children) per level, from the root
        self.text_nodes: list[str] = []
        self.chars_count_in_links = 0
        self.tags_count = 0
        self.class_type = ""

    @cached_property
    def dom_path(self) -> str:
        return ".".join(e[0] for e in self._path)

    @cached_property
    def xpath(self) -> str:
        return "/" + "/".join(f"{tag}[{position}]" for tag, position, _ in self._path)

    @cached_property
    def text(self) -> str:  # type: ignore[override]
        return str(Paragraph.text.fget(self))

    @cached_property
    def words_count(self) -> int:  # type: ignore[override]
        return len(self.text.split())

    def stopwords_count(self, stopwords: frozenset[str]) -> int:
        # jusText lowers word by word; lowering never adds or removes whitespace
        return sum(map(stopwords.__contains__, self.text.lower().split()))


class _ParagraphMaker(ParagraphMaker):  # type: ignore[misc]
    """jusText's ParagraphMaker fed the events lxml.sax.saxify would send, in the same order
    (elements, their text and tails; comments and processing instructions only by their
    tails), without building SAX names and attributes it does not read."""

    @classmethod
    def make_paragraphs(cls, root: Any) -> list[Any]:
        handler = cls()
        handler.startDocument()
        before = []
        sibling = root.getprevious()
        while sibling is not None and sibling.tag is etree.ProcessingInstruction:
            before.append(sibling)
            sibling = sibling.getprevious()
        for sibling in reversed(before):
            handler._walk(sibling)
        handler._walk(root)
        sibling = root.getnext()
        while sibling is not None and sibling.tag is etree.ProcessingInstruction:
            handler._walk(sibling)
            sibling = sibling.getnext()
        handler.endDocument()
        return list(handler.paragraphs)

    def _start_new_pragraph(self) -> None:  # jusText's spelling
        current: Any = self.paragraph  # type: ignore[has-type]
        if current and current.contains_text():
            self.paragraphs.append(current)
        self.paragraph = _Paragraph(self.path)

    def _walk(self, element: Any) -> None:
        tag = element.tag
        if tag is etree.Comment or tag is etree.ProcessingInstruction:
            if element.tail:
                self.characters(element.tail)
            return
        if not isinstance(tag, str):  # an entity: saxify fails on it, and so does jusText
            raise TypeError(f"unexpected node {tag!r}")
        name = (None, tag.rpartition("}")[2])
        self.startElementNS(name, None, None)
        if element.text:
            self.characters(element.text)
        for child in element:
            self._walk(child)
        self.endElementNS(name, None)
        if element.tail:
            self.characters(element.tail)


# --------------------------------------------------------------------------- the guard

# Module globals replaced, and by what (an attribute of emulations(), or the paragraph maker).
_PATCHES = (
    ("trafilatura.main_extractor", "OVERALL_DISCARD_XPATH", "overall"),
    ("trafilatura.main_extractor", "BODY_XPATH", "body"),
    ("trafilatura.baseline", "BASIC_CLEAN_XPATH", "basic"),
    ("trafilatura.external", "ParagraphMaker", "paragraph_maker"),
)

# Names whose source the equivalents were written from or rely on, each as module:qualname.
_GUARDED = (
    # what is emulated
    "trafilatura.xpaths:OVERALL_DISCARD_XPATH",
    "trafilatura.xpaths:BODY_XPATH",
    "trafilatura.settings:BASIC_CLEAN_XPATH",
    "justext.core:ParagraphMaker",
    "justext.core:PathInfo",
    "justext.paragraph:Paragraph",
    # what reads the replaced globals, and how
    "trafilatura.main_extractor:prune_unwanted_sections",
    "trafilatura.main_extractor:_extract",
    "trafilatura.baseline:basic_cleaning",
    "trafilatura.external:try_justext",
    "justext.core:classify_paragraphs",
    # the cascade: trafilatura_sequence is re-implemented in cascade.py on the others
    "trafilatura.core:trafilatura_sequence",
    "trafilatura.main_extractor:extract_content",
    "trafilatura.external:compare_extraction",
    "trafilatura.external:justext_rescue",
    "trafilatura.baseline:baseline",
    "trafilatura.htmlprocessing:tree_cleaning",
    "trafilatura.htmlprocessing:convert_tags",
)
_DISTRIBUTIONS = ("trafilatura", "jusText")

# What the equivalents were written and tested against: fingerprint() as printed then. After
# an upgrade, check the equivalents against the new sources (the parity tests) and paste the
# new fingerprint() here.
PINNED: dict[str, str] = {
    "trafilatura": "2.3.1",
    "jusText": "3.0.2",
    "trafilatura.xpaths:OVERALL_DISCARD_XPATH": (
        "e0f0992fedd02ac196225237652051a55faeb25833b6f992cc290c51f4a72600"
    ),
    "trafilatura.xpaths:BODY_XPATH": (
        "1cbf719d5948b3bbd5a27762b0d60452eb214d7434c84f4e67a535539c704570"
    ),
    "trafilatura.settings:BASIC_CLEAN_XPATH": (
        "db6c25acd08aef99afbf1be38c751d8c7cf7132256d1a013d1d2e4e4fe86651f"
    ),
    "justext.core:ParagraphMaker": (
        "b41fe77fbc5b6a64e0f6e1f62061d3dcadb9dfd3620a0dbda60ae3d2866844a1"
    ),
    "justext.core:PathInfo": (
        "a0654d40b436e45da8a568e655984801d0fac638a285fc15472e6f07f6c6e93b"
    ),
    "justext.paragraph:Paragraph": (
        "638810ac2d88e31cf1533f5602577e48a8b97a308ce73db6190804d8c9de8c41"
    ),
    "trafilatura.main_extractor:prune_unwanted_sections": (
        "e6eb7afcc64d3f3792b8584d742acd9dc6eee5700aa822e23960f688f7b8e283"
    ),
    "trafilatura.main_extractor:_extract": (
        "3e0e39ed3e03e8e473b874bc3b87ceb6a4ae3b06df10a3f9489d62bfb9dbc085"
    ),
    "trafilatura.baseline:basic_cleaning": (
        "80877b2ccdefda2db182ec8a78d1360b0308a4d97e4112bfa416cce67c7cfa6c"
    ),
    "trafilatura.external:try_justext": (
        "6f0fa6cffc365def23443fc7f20dbba7ca157c3c4ed5823a5c905f8abc2a05d2"
    ),
    "justext.core:classify_paragraphs": (
        "37149c0348a99b3c193a658a17caba961ea59b53bdfb7edd4050b30d9cab7b42"
    ),
    "trafilatura.core:trafilatura_sequence": (
        "f03dc4d2946dacbd0e023ca1c51fdf329e0fdc0be342fd0f14924396ec646e05"
    ),
    "trafilatura.main_extractor:extract_content": (
        "f0270c94ac5f30b587af9038adf70bc04082aaef15249c854bc6f8044074af3a"
    ),
    "trafilatura.external:compare_extraction": (
        "2d3d1ffea3ba469f7cfe7a0198968d7ff7dfc1fe50842605761644a044858962"
    ),
    "trafilatura.external:justext_rescue": (
        "43d803082a76d38a3ca0285e42825f572cba82224092922eb4d15226dd1631c4"
    ),
    "trafilatura.baseline:baseline": (
        "4a4215f815e627456a13a7d6976a0f04dacf25767ce736d466e7adfb1bed3b41"
    ),
    "trafilatura.htmlprocessing:tree_cleaning": (
        "828e83a7393082def65c10022aa7cf43d0debfb0039e1de8ee8c9ecb2d23b903"
    ),
    "trafilatura.htmlprocessing:convert_tags": (
        "3b91547711b762a529cc269ab48db44fea6dd729a6d5f4c2a8c6341aa3bfd347"
    ),
}


def _source(obj: Any) -> str:
    if isinstance(obj, etree.XPath):
        return obj.path
    if isinstance(obj, (list, tuple)):
        return "\x00".join(_source(item) for item in obj)
    return inspect.getsource(obj)


def fingerprint() -> dict[str, str]:
    """The installed libraries' versions and the SHA-256 of each guarded name's source."""
    found = {name: version(name) for name in _DISTRIBUTIONS}
    for name in _GUARDED:
        module, _, attribute = name.partition(":")
        try:
            obj = getattr(importlib.import_module(module), attribute)
            found[name] = sha256(_source(obj).encode()).hexdigest()
        except (AttributeError, ImportError, OSError, TypeError):
            found[name] = "missing"
    return found


def mismatches() -> list[str]:
    """Guarded names (and distributions) that differ from PINNED."""
    found = fingerprint()
    return sorted(name for name in PINNED.keys() | found.keys() if PINNED.get(name) != found.get(name))


_lock = threading.Lock()
_originals: dict[tuple[str, str], Any] = {}


def _replacement(kind: str) -> Any:
    return _ParagraphMaker if kind == "paragraph_maker" else getattr(emulations(), kind)


def install() -> bool:
    """Replace trafilatura's globals by the equivalents in this process, once; only in an
    extraction worker process. Returns whether they are installed."""
    with _lock:
        if _originals:
            return True
        differing = mismatches()
        if differing:
            log.warning(
                "extraction accelerator not installed: trafilatura %s / jusText %s differ from"
                " what it was written for (%s); extracting with their own code",
                version("trafilatura"), version("jusText"), ", ".join(differing),
            )
            return False
        for module, name, kind in _PATCHES:
            target = importlib.import_module(module)
            _originals[(module, name)] = getattr(target, name)
            setattr(target, name, _replacement(kind))
        return True


def uninstall() -> None:
    """Put trafilatura's own globals back (tests and the benchmark)."""
    with _lock:
        for (module, name), original in _originals.items():
            setattr(importlib.import_module(module), name, original)
        _originals.clear()


def installed() -> bool:
    """Whether trafilatura's globals in this process are the equivalents (read from them)."""
    return any(
        getattr(importlib.import_module(module), name) is _replacement(kind)
        for module, name, kind in _PATCHES
    )
