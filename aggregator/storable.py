"""What a stored text column may hold, shared by the stages that produce text (parse, clean)
and the store's migrations.

Like `models`, `errors` and `files`, this is a base module every stage may import: it holds
no verb of the pipeline, only the one definition of a storable string, so that text cleaned
at ingest and rows cleaned by a migration agree character for character.

Unstorable: C0 controls other than tab, newline and carriage return (PostgreSQL text refuses
NUL; downstream tools choke on the rest), Unicode noncharacters (U+FDD0..U+FDEF and the last
two code points of every plane) and lone surrogates (not encodable as UTF-8).

Text fields drop them (`strip_unstorable`). Identity values (entry keys, guids, URLs) must
not lose information, so they are percent-escaped instead (`escape_unstorable`): the UTF-8
bytes of each unstorable code point as ``%XX``, as in a URL. Readable values are unchanged;
a literal ``%`` is left as it is, so keys already stored without such characters keep their
value (and the published ids derived from them).
"""

from __future__ import annotations

import re

# Character-class bodies, for modules that build their own classes around them.
C0 = "\x00-\x08\x0b\x0c\x0e-\x1f"
BMP_NONCHARACTERS = "\ufdd0-\ufdef\ufffe\uffff"
SURROGATES = "\ud800-\udfff"
# The noncharacters above the BMP are U+1FFFE, U+1FFFF, ... U+10FFFF: a class listing the 32
# of them makes every search twenty times slower, so the one range from the first to the last
# finds candidates (CJK extension B and later also fall in it) and is_noncharacter decides.
ASTRAL_CANDIDATES = "\U0001fffe-\U0010ffff"

_BMP_UNSTORABLE = re.compile(f"[{C0}{BMP_NONCHARACTERS}{SURROGATES}]")
_CANDIDATES = re.compile(f"[{C0}{BMP_NONCHARACTERS}{SURROGATES}{ASTRAL_CANDIDATES}]")


def is_astral_noncharacter(ch: str) -> bool:
    """U+1FFFE, U+1FFFF, U+2FFFE, ... U+10FFFF."""
    code = ord(ch)
    return code > 0xFFFF and code & 0xFFFE == 0xFFFE


def _unstorable(ch: str) -> bool:
    return ord(ch) <= 0xFFFF or is_astral_noncharacter(ch)  # BMP matches are all unstorable


def is_storable(value: str) -> bool:
    """True when ``value`` holds no unstorable code point."""
    if value.isascii():
        return _BMP_UNSTORABLE.search(value) is None
    return not any(_unstorable(m.group()) for m in _CANDIDATES.finditer(value))


def _strip(m: re.Match[str]) -> str:
    ch = m.group()
    if "\ud800" <= ch <= "\udfff":
        return "\ufffd"
    return "" if _unstorable(ch) else ch


def strip_unstorable(value: str) -> str:
    """Text with C0 controls (except tab, newline, CR) and noncharacters removed, and lone
    surrogates replaced by U+FFFD. Idempotent."""
    if is_storable(value):  # the common case: no copy
        return value
    return _CANDIDATES.sub(_strip, value)


def _escape(m: re.Match[str]) -> str:
    ch = m.group()
    if "\ud800" <= ch <= "\udfff":
        return "\ufffd"  # no UTF-8 form; keys have always stored U+FFFD for them
    if not _unstorable(ch):
        return ch
    return "".join(f"%{b:02X}" for b in ch.encode("utf-8"))


def escape_unstorable(value: str) -> str:
    """An identity value (key, guid, URL) with each unstorable code point written as the
    ``%XX`` escapes of its UTF-8 bytes; lone surrogates (which have no UTF-8 form) become
    U+FFFD, as keys have always stored them. Idempotent; readable values are unchanged."""
    if is_storable(value):
        return value
    return _CANDIDATES.sub(_escape, value)
