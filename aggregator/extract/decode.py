"""Page bytes to text (BOM, HTTP and <meta> charsets, detection) and text to one lxml tree."""

from __future__ import annotations

import codecs
import re
from typing import Any

import charset_normalizer
from lxml import etree
from lxml.html import HtmlComment, HtmlElement, HtmlEntity, HtmlProcessingInstruction
from trafilatura.utils import DOCTYPE_TAG, FAULTY_HTML, repair_faulty_html

# Guards against hostile or broken pages: the parse cost grows with the number of tags, and
# a hundred thousand tags already take seconds in trafilatura. Real article pages stay far
# below the limit.
MAX_BYTES = 10 * 1024 * 1024
MAX_TAGS = 40_000

_BS4_PARSER = "lxml"  # the fastest tree builder bs4 offers

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
    return _decode(body, charset)[0]


def _decode(body: bytes, charset: str | None) -> tuple[str, bool]:
    """decode_html(body, charset), and whether the text is body decoded as strict UTF-8 (the
    text encoded in UTF-8 is then body itself)."""
    for bom, name in _BOMS:
        if body.startswith(bom):
            return body[len(bom) :].decode(name, errors="replace").replace("\x00", ""), False
    encoding = _codec(charset) or _declared_charset(body)
    # The strict UTF-8 decoding that tests the bytes is the text when it succeeds (the page
    # is decoded once).
    text = None
    if encoding != "utf-8" and (encoding is None or not body.isascii()):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            if encoding is None:
                encoding = _detect(body)
    elif encoding == "utf-8":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            # Declared UTF-8 but is not: trust the bytes (old pages behind new servers).
            encoding = _detect(body)
    if text is None:
        return body.decode(encoding or "utf-8", errors="replace").replace("\x00", ""), False
    if "\x00" in text:
        return text.replace("\x00", ""), False
    return text, True


# --------------------------------------------------------------------------- parsing

# trafilatura's own parser settings (comments and processing instructions dropped, so
# commented-out markup never comes back as content), with lxml's C-level class lookup:
# lxml.html's default lookup calls into Python for every element proxy, a noticeable share
# of trafilatura's run time. Elements are still HtmlElement; only lxml.html's form classes
# (FormElement, InputElement...) are not used, and nothing here or in trafilatura needs them.
_PARSER = etree.HTMLParser(
    collect_ids=False, default_doctype=False, encoding="utf-8", remove_comments=True,
    remove_pis=True,
)  # fmt: skip
_PARSER.set_element_class_lookup(
    etree.ElementDefaultClassLookup(
        element=HtmlElement, comment=HtmlComment, pi=HtmlProcessingInstruction, entity=HtmlEntity
    )
)


# In UTF-8, the characters trafilatura's repair_faulty_html deletes (INVALID_XML_CHARS: C0
# controls but tab, LF and CR; U+FFFE and U+FFFF) are these single bytes, which never occur
# inside a multi-byte sequence, and two three-byte sequences.
_CONTROL_BYTES = bytes([*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20)])
# They all map to NUL (itself one of them), every other byte to itself: a page holds one iff
# its translation holds a NUL. A translation by table runs faster than one that deletes.
_CONTROL_TO_NUL = bytes(0 if b in _CONTROL_BYTES else b for b in range(256))


def _repaired(html: str, beginning: str, utf8: bytes | None = None) -> bytes:
    """repair_faulty_html(html, beginning) as UTF-8. Its regular-expression scan of the whole
    page for invalid characters is replaced by a byte translation of the encoded
    page and a search of the text for the two non-characters, which find them faster; pages that hold any go through repair_faulty_html. ``utf8``, when given, is html in
    UTF-8 (the page's bytes: not encoded again)."""
    fixed = html
    # repair_faulty_html's other two fixes, on the first lines; its doctype fix rebuilds the
    # page only when it changes the first line or the page has one line (it adds a newline)
    if "doctype" in beginning and ("\n" not in html or DOCTYPE_TAG.match(html) is not None):
        firstline, _, rest = fixed.partition("\n")
        fixed = DOCTYPE_TAG.sub("", firstline, count=1) + "\n" + rest
    for line in fixed[:4096].splitlines()[:4]:
        if "<html" in line and line.endswith("/>"):
            fixed = FAULTY_HTML.sub(r"\1>", fixed, count=1)
            break
    data = utf8 if utf8 is not None and fixed is html else fixed.encode("utf-8", "surrogatepass")
    # (U+FFFE and U+FFFF are looked for in the text: faster than their bytes in UTF-8)
    if b"\x00" in data.translate(_CONTROL_TO_NUL) or "\ufffe" in fixed or "\uffff" in fixed:
        data = repair_faulty_html(html, beginning).encode("utf-8", "surrogatepass")
    return data


def _parse(html: str, utf8: bytes | None = None) -> HtmlElement | None:
    """The page's tree, or None when it is not HTML (trafilatura.load_html's checks).
    ``utf8``, when given, is html in UTF-8."""
    beginning = html[:50].lower()
    try:
        root = etree.fromstring(_repaired(html, beginning, utf8), _PARSER)
    except (etree.ParserError, etree.XMLSyntaxError, ValueError):
        return None
    if root is None or ("html" not in beginning and len(root) < 2):
        return None  # a fragment or something that is not HTML at all
    return root


def _remove(elem: Any) -> None:
    """Remove an element and its content, keeping the text that follows it (its tail)."""
    parent = elem.getparent()
    if parent is None:
        return
    if elem.tail:
        previous = elem.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + elem.tail
        else:
            parent.text = (parent.text or "") + elem.tail
    parent.remove(elem)


def _attached(elem: Any, root: Any) -> bool:
    return elem is root or any(ancestor is root for ancestor in elem.iterancestors())


def _text(elem: Any) -> str:
    """All text inside an element, pieces joined by spaces (bs4's get_text(" "))."""
    return " ".join(elem.itertext())



def _squash(text: str) -> str:
    return " ".join(text.split())


_WORD = re.compile(r"\w+")


def _norm(text: str) -> str:
    """Comparison key: case-folded words without punctuation."""
    return " ".join(_WORD.findall(text.casefold()))


