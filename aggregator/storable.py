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

NONCHARACTERS = "\ufdd0-\ufdef\ufffe\uffff" + "".join(
    f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(1, 17)
)
# Character-class bodies, for modules that build their own classes around them.
C0 = "\x00-\x08\x0b\x0c\x0e-\x1f"
_SURROGATE = "\ud800-\udfff"
UNSTORABLE = re.compile(f"[{C0}{NONCHARACTERS}{_SURROGATE}]")
_LONE_SURROGATE = re.compile(f"[{_SURROGATE}]")
_DROPPED = re.compile(f"[{C0}{NONCHARACTERS}]")


def is_storable(value: str) -> bool:
    """True when ``value`` holds no unstorable code point."""
    return UNSTORABLE.search(value) is None


def strip_unstorable(value: str) -> str:
    """Text with C0 controls (except tab, newline, CR) and noncharacters removed, and lone
    surrogates replaced by U+FFFD. Idempotent."""
    if UNSTORABLE.search(value) is None:  # the common case: no copy
        return value
    return _DROPPED.sub("", _LONE_SURROGATE.sub("\ufffd", value))


def _escape(m: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in m.group().encode("utf-8"))


def escape_unstorable(value: str) -> str:
    """An identity value (key, guid, URL) with each unstorable code point written as the
    ``%XX`` escapes of its UTF-8 bytes; lone surrogates (which have no UTF-8 form) become
    U+FFFD, as keys have always stored them. Idempotent; readable values are unchanged."""
    if UNSTORABLE.search(value) is None:
        return value
    return _DROPPED.sub(_escape, _LONE_SURROGATE.sub("\ufffd", value))
