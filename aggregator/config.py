"""Configuration: deployment settings and the operator's feeds.yaml.

Settings come from ``config/aggregator.yaml``, each overridable by ``AGGREGATOR_<NAME>``.
``feeds.yaml`` lists feeds, spelling aliases and published outputs.

Both files are *composed* (not constructed) with ruamel.yaml's round-trip loader (YAML 1.2):
every value keeps its line/col, no tag is ever turned into an object (``!!python/...`` is
refused, not run), and validation walks the node tree collecting every problem instead of
stopping at the first. Editing (``add_feeds``) inserts text after the operator's last feed,
so comments, order and formatting stay byte for byte (a flow-style or empty ``feeds:`` list
goes through a ruamel round trip instead, which keeps comments and order).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import io
import ipaddress
import math
import os
import pickle
import re
import sys
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit
from xml.parsers import expat

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from aggregator.errors import ConfigError, Problem
from aggregator.files import write_atomic
from aggregator.models import (
    Config,
    FeedConfig,
    FilterSpec,
    FilterTerm,
    OutputConfig,
    Settings,
    SiteRule,
)

__all__ = [
    "ENV_PREFIX",
    "add_feeds",
    "check_files",
    "derive_name",
    "export_opml",
    "load_config",
    "parse_bool",
    "parse_duration",
    "parse_size",
    "read_opml",
]

ENV_PREFIX = "AGGREGATOR_"
MAX_FILE_BYTES = 5 * 1024 * 1024  # a feeds.yaml is kilobytes; refuse before parsing junk
MAX_ALIAS_NODES = 10_000  # nodes that aliases may add on expansion (alias bombs)
MAX_DEPTH = 64  # our schema nests 6 deep; deeper is junk or an attack
MAX_OPML_OUTLINES = 20_000

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*\Z")
_LANG_RE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*\Z")
_TAG_RE = re.compile(r"[\w.-]+\Z")  # no spaces, commas or slashes: tags travel in OPML categories
_HOST_RE = re.compile(
    r"(?=.{1,253}\Z)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?\Z",
    re.I,
)
_FIELDS = ("title", "text", "author", "category", "url")
_FORMATS = ("atom", "rss", "json")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LOG_FORMATS = ("text", "json")
_TAG = "tag:yaml.org,2002:"

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

# --------------------------------------------------------------------------- scalar parsing

_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])", re.I)
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?\s*\Z", re.I)
_SIZE_UNITS = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def parse_duration(value: object) -> float:
    """Seconds from ``900``, ``"900"``, ``"15m"``, ``"1h30m"``, ``"7d"`` (units s m h d w)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"invalid duration {value!r}: expected seconds or a text like '15m'")
    if isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for m in _DURATION_PART.finditer(text):
                if m.start() != pos:
                    break
                seconds += float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]
                pos = m.end()
            if not text or pos != len(text):
                raise ValueError(
                    f"invalid duration {value!r}: use seconds (900) or a number with a unit"
                    " s, m, h, d or w (30s, 15m, 1h, 7d, 1h30m)"
                ) from None
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must be a finite number >= 0")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from ``1048576``, ``"512KB"``, ``"15MB"``, ``"1GiB"`` (K/M/G are powers of 1024)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"invalid size {value!r}: expected bytes or a text like '15MB'")
    if isinstance(value, int):
        size = value
    else:
        m = _SIZE_RE.match(value)
        if not m:
            raise ValueError(f"invalid size {value!r}: use bytes or a number with KB, MB or GB")
        size = int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b")[0].lower()])
    if size < 0:
        raise ValueError(f"invalid size {value!r}: must be >= 0")
    return size


def parse_bool(value: object) -> bool:
    """A boolean from true/false/yes/no/on/off/1/0 (any case) or a real bool."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"invalid boolean {value!r}: use true/false, yes/no, on/off or 1/0")


# --------------------------------------------------------------------------- YAML -> positioned tree


@dataclass
class _Y:
    """A YAML value with its 1-based position. ``kind``: map seq str int float bool null bad.

    ``map`` values are ``{key: (key_Y, value_Y)}`` in file order; ``bad`` marks a value
    already reported (unsupported tag, ...) so later checks stay quiet about it."""

    kind: str
    value: Any
    line: int
    col: int
    text: str = ""  # the scalar as written, for messages


class _Problems:
    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[Problem] = []

    def add(self, line: int, col: int, message: str) -> None:
        self.items.append(Problem(self.file, max(line, 1), max(col, 1), message))

    def at(self, y: _Y, message: str) -> None:
        self.add(y.line, y.col, message)


def _show_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


def _pos(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


class _Recursive(Exception):
    def __init__(self, node: Node) -> None:
        self.node = node


def _expanded_size(root: Node) -> tuple[int, int, dict[str, int]]:
    """(nodes after expanding aliases, distinct nodes, expanded size per anchor).

    Memoised on node identity, so a billion-laughs document costs linear time here."""
    memo: dict[int, int] = {}
    path: set[int] = set()
    anchors: dict[str, int] = {}

    def size(node: Node) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        if key in path:
            raise _Recursive(node)
        path.add(key)
        total = 1 + sum(size(child) for child in _children(node))
        path.discard(key)
        memo[key] = total
        anchor = getattr(node, "anchor", None)
        if anchor:
            anchors[str(anchor)] = max(anchors.get(str(anchor), 0), total)
        return total

    return size(root), len(memo), anchors


class _Builder:
    """Turns composed nodes into ``_Y`` values, reporting tags, duplicate keys and depth."""

    def __init__(self, problems: _Problems) -> None:
        self.problems = problems

    def build(self, node: Node, depth: int = 0) -> _Y:
        line, col = _pos(node)
        if depth > MAX_DEPTH:
            self.problems.add(line, col, f"nesting deeper than {MAX_DEPTH} levels")
            return _Y("bad", None, line, col)
        tag = str(node.tag)
        if isinstance(node, ScalarNode):
            return self._scalar(node, tag, line, col)
        if isinstance(node, SequenceNode) and tag == _TAG + "seq":
            return _Y("seq", [self.build(n, depth + 1) for n in node.value], line, col)
        if isinstance(node, MappingNode) and tag == _TAG + "map":
            return self._mapping(node, depth, line, col)
        return self._refuse(tag, line, col)

    def _refuse(self, tag: str, line: int, col: int) -> _Y:
        self.problems.add(
            line, col, f"YAML tag {_show_tag(tag)} is not allowed (only plain values are)"
        )
        return _Y("bad", None, line, col)

    def _scalar(self, node: ScalarNode, tag: str, line: int, col: int) -> _Y:
        text = str(node.value)
        kind = tag[len(_TAG) :] if tag.startswith(_TAG) else ""
        try:
            if kind == "str":
                return _Y("str", text, line, col, text)
            if kind == "null":
                return _Y("null", None, line, col, text)
            if kind == "bool":
                return _Y("bool", text.lower() == "true", line, col, text)
            if kind == "int":
                digits = text.replace("_", "")
                try:
                    number = int(digits, 0)
                except ValueError:
                    number = int(digits, 10)  # leading zeros: decimal
                return _Y("int", number, line, col, text)
            if kind == "float":
                low = text.lower().replace("_", "")
                value = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf}.get(low)
                if value is None:
                    value = math.nan if low == ".nan" else float(low)
                return _Y("float", value, line, col, text)
        except ValueError:
            self.problems.add(line, col, f"{text!r} is not a valid {kind}")
            return _Y("bad", None, line, col, text)
        return self._refuse(tag, line, col)

    def _mapping(self, node: MappingNode, depth: int, line: int, col: int) -> _Y:
        items: dict[str, tuple[_Y, _Y]] = {}
        merges: list[_Y] = []
        for knode, vnode in node.value:
            if isinstance(knode, ScalarNode) and str(knode.tag) == _TAG + "merge":
                merges.append(self.build(vnode, depth + 1))
                continue
            key = self.build(knode, depth + 1)
            value = self.build(vnode, depth + 1)
            if value.kind == "null" and not value.text:
                # an empty value's mark points at the next token: the key is where to look
                value = _Y("null", None, key.line, key.col, "")
            if key.kind != "str":
                if key.kind != "bad":
                    self.problems.at(key, f"key {key.text or key.kind!r} must be a string: quote it")
                continue
            if key.value in items:
                first = items[key.value][0]
                self.problems.at(
                    key, f"duplicate key '{key.value}' (first defined at line {first.line})"
                )
                continue
            items[key.value] = (key, value)
        for merge in merges:  # '<<: *base': keys written here win, then earlier sources
            sources = merge.value if merge.kind == "seq" else [merge]
            for source in sources:
                if source.kind == "map":
                    for name, pair in source.value.items():
                        items.setdefault(name, pair)
                elif source.kind != "bad":
                    self.problems.at(source, "merge key '<<' expects a mapping or a list of them")
        return _Y("map", items, line, col)


def _rt_yaml() -> YAML:
    return YAML(typ="rt")


def _reading_yaml() -> YAML:
    """For reading only: the round-trip loader's comment handling is a quarter of its cost
    and nodes are all we use; the pure-Python safe loader resolves scalars to the same tags
    (YAML 1.2) and reports errors from the same scanner."""
    return YAML(typ="safe", pure=True)


def _decode(data: bytes, problems: _Problems) -> str | None:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        problems.add(line, col, f"not valid UTF-8 (byte 0x{data[exc.start]:02x}): save as UTF-8")
        return None
    # One newline convention for ruamel and for our own line arithmetic.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _read_file(path: str, problems: _Problems) -> str | None:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        problems.add(1, 1, "file not found")
        return None
    except OSError as exc:
        problems.add(1, 1, f"cannot read file: {exc.strerror or exc}")
        return None
    if len(data) > MAX_FILE_BYTES:
        problems.add(1, 1, f"file larger than {MAX_FILE_BYTES} bytes")
        return None
    return _decode(data, problems)


def _tab_lines(text: str) -> list[tuple[int, int]]:
    """(line, col) of the first tab in each line's indentation."""
    found = []
    for number, line in enumerate(text.split("\n"), 1):
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in indent:
            found.append((number, indent.index("\t") + 1))
    return found


def _could_nest_deeper(text: str, limit: int) -> bool:
    """Cheap upper bound on nesting: flow brackets opened, plus block levels (a block
    sequence may share its parent key's indentation, so every column of indentation or of
    "- "/"? " prefix adds at most one level, and the top adds two)."""
    flow = text.count("[") + text.count("{")
    if flow > limit // 2:
        return True
    widest = max((len(line) - len(line.lstrip(" -?")) for line in text.split("\n")), default=0)
    return flow + widest + 2 >= limit


def _compose(text: str, problems: _Problems) -> tuple[bool, Node | None]:
    """(ok, root node); ok with None is an empty document."""
    try:
        # Events first: the parser is iterative, the composer recursive (and ruamel's scanner
        # slows down quadratically with flow depth), so junk nesting stops here, early.
        depth = 0
        # Without that many flow brackets or indentation levels the limit cannot be
        # reached: skip the extra pass (it doubles the parse of a 1000-feed file).
        if _could_nest_deeper(text, MAX_DEPTH):
            events = _reading_yaml().parse(text)
        else:
            events = iter(())
        for event in events:
            if isinstance(event, CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    line, col = event.start_mark.line + 1, event.start_mark.column + 1
                    problems.add(line, col, f"nesting deeper than {MAX_DEPTH} levels")
                    return False, None
            elif isinstance(event, CollectionEndEvent):
                depth -= 1
        return True, _reading_yaml().compose(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        lines = text.split("\n")
        if mark and 0 <= mark.line < len(lines) and lines[mark.line][mark.column : mark.column + 1] == "\t":
            tabs = _tab_lines(text)
            for tab_line, tab_col in sorted(set(tabs) | {(line, col)}):
                problems.add(tab_line, tab_col, "tab character: YAML indents with spaces")
            return False, None
        message = str(exc.problem or exc.context or "invalid YAML")
        if exc.context and exc.problem and exc.context_mark:
            message += f" ({exc.context} at line {exc.context_mark.line + 1})"
        problems.add(line, col, f"YAML syntax error: {message}")
    except ReaderError as exc:
        before = text[: exc.position]
        line, col = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        problems.add(line, col, f"character U+{exc.character:04X} is not allowed in YAML")
    except RecursionError:
        problems.add(1, 1, "YAML nesting too deep")
    except YAMLError as exc:
        problems.add(1, 1, f"YAML error: {exc}")
    return False, None


def _parse(text: str, problems: _Problems) -> tuple[bool, _Y | None]:
    """Parse and check one document: (ok, tree). ok with None is an empty document."""
    ok, root = _compose(text, problems)
    if not ok or root is None:
        return ok, None
    try:
        total, distinct, anchors = _expanded_size(root)
    except _Recursive as exc:
        line, col = _pos(exc.node)
        problems.add(line, col, "recursive YAML alias: an anchored value contains itself")
        return False, None
    except RecursionError:
        problems.add(1, 1, "YAML nesting too deep")
        return False, None
    if total - distinct > MAX_ALIAS_NODES:
        line, col = _worst_alias(text, anchors)
        problems.add(
            line,
            col,
            f"YAML aliases expand to {total} values (limit {distinct + MAX_ALIAS_NODES}):"
            " refusing a possible alias bomb",
        )
        return False, None
    return True, _Builder(problems).build(root)


def _worst_alias(text: str, anchors: dict[str, int]) -> tuple[int, int]:
    """Position of the first alias to the largest expansion: where the bomb is lit."""
    best, where = -1, (1, 1)
    for event in _rt_yaml().parse(text):
        if isinstance(event, AliasEvent) and anchors.get(str(event.anchor), 0) > best:
            best = anchors.get(str(event.anchor), 0)
            where = (event.start_mark.line + 1, event.start_mark.column + 1)
    return where


# --------------------------------------------------------------------------- typed getters

_KIND_NAMES = {
    "map": "a mapping",
    "seq": "a list",
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "null": "nothing",
}


def _describe(y: _Y) -> str:
    if y.kind == "str":
        shown = y.value if len(y.value) <= 40 else y.value[:37] + "..."
        return f"a string ({shown!r})"
    if y.kind in ("int", "float", "bool") or (y.kind == "null" and y.text):
        return f"{_KIND_NAMES[y.kind]} ({y.text})"
    return _KIND_NAMES.get(y.kind, y.kind)


def _suggest(word: str, options: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class _Checker:
    """Typed access to ``_Y`` values; every failure becomes a problem at the value."""

    def __init__(self, problems: _Problems) -> None:
        self.p = problems

    def wrong(self, y: _Y, key: str, expected: str) -> None:
        if y.kind == "bad":
            return  # already reported
        hint = ""
        if expected == "a string" and y.kind in ("int", "float", "bool", "null") and y.text:
            hint = f': quote it ({key}: "{y.text}")'
        elif expected.startswith("a list") and y.kind == "str":
            hint = f": write {key}: [{y.value}]"
        self.p.at(y, f"{key}: expected {expected}, got {_describe(y)}{hint}")

    def fields(
        self,
        y: _Y,
        allowed: Sequence[str],
        what: str,
        required: Sequence[str] = (),
        elsewhere: Mapping[str, str] | None = None,
    ) -> dict[str, _Y]:
        """Known keys of mapping ``y`` (null values dropped); unknown and missing reported."""
        out: dict[str, _Y] = {}
        for key, (key_y, value) in y.value.items():
            if key not in allowed:
                where = (elsewhere or {}).get(key)
                hint = f"; it belongs {where}" if where else _suggest(key, allowed)
                self.p.at(key_y, f"unknown key '{key}' in {what}{hint}")
            elif value.kind == "null":
                if key in required:
                    self.p.at(key_y, f"'{key}' has no value")
            else:
                out[key] = value
        for key in required:
            if key not in y.value:
                self.p.at(y, f"{what} is missing required key '{key}'")
        return out

    def mapping(self, y: _Y, key: str) -> bool:
        if y.kind == "map":
            return True
        self.wrong(y, key, "a mapping")
        return False

    def string(self, y: _Y, key: str, *, empty_ok: bool = False) -> str | None:
        if y.kind != "str":
            self.wrong(y, key, "a string")
            return None
        if not empty_ok and not y.value.strip():
            self.p.at(y, f"{key}: must not be empty")
            return None
        return str(y.value)

    def strings(self, y: _Y, key: str, example: str) -> list[tuple[str, _Y]] | None:
        if y.kind != "seq":
            self.wrong(y, key, f"a list, e.g. {key}: [{example}]")
            return None
        out = []
        for item in y.value:
            text = self.string(item, f"{key} item")
            if text is not None:
                out.append((text.strip(), item))
        return out

    def boolean(self, y: _Y, key: str) -> bool | None:
        if y.kind == "bool":
            return bool(y.value)
        if y.kind == "str" and y.value.strip().lower() in (*_TRUE, *_FALSE):
            return parse_bool(y.value)  # yes/no/on/off: YAML 1.1 habits, meaning is clear
        self.wrong(y, key, "true or false")
        return None

    def integer(self, y: _Y, key: str, minimum: int) -> int | None:
        if y.kind != "int":
            self.wrong(y, key, "an integer")
            return None
        if y.value < minimum:
            self.p.at(y, f"{key}: must be {minimum} or more, got {y.value}")
            return None
        return int(y.value)

    def duration(self, y: _Y, key: str) -> float | None:
        if y.kind not in ("int", "float", "str"):
            self.wrong(y, key, "a duration (900, 15m, 1h, 7d)")
            return None
        try:
            return parse_duration(y.value)
        except ValueError as exc:
            self.p.at(y, f"{key}: {exc}")
            return None


# --------------------------------------------------------------------------- URLs and hosts


def _url_error(url: str) -> str | None:
    """Why ``url`` is not a usable http(s) URL, or None."""
    if any(ch.isspace() for ch in url):
        return f"invalid URL {url!r}: contains a space (percent-encode it as %20)"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return f"invalid URL {url!r}: contains a control character"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"invalid URL {url!r}: {exc}"
    if parts.scheme.lower() not in ("http", "https"):
        got = f"'{parts.scheme}'" if parts.scheme else "none"
        return f"invalid URL {url!r}: scheme must be http or https, got {got}"
    host = parts.hostname or ""
    if not host:
        return f"invalid URL {url!r}: no host"
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.split("%")[0])
        except ValueError:
            return f"invalid URL {url!r}: bad IPv6 address {host!r}"
    elif not re.fullmatch(r"[\w.-]+", host):
        return f"invalid URL {url!r}: bad host name {host!r}"
    return None


def _url_key(url: str) -> str:
    """Identity of a feed URL: scheme-less, host lower-cased, no trailing slash, no fragment."""
    try:
        parts = urlsplit(url.strip())
        netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return url.strip()
    key = netloc + parts.path.rstrip("/")
    return key + (f"?{parts.query}" if parts.query else "")


def _host_entry_error(entry: str) -> str | None:
    """``allow_private_hosts`` entries: a host name, an IP address or a CIDR network."""
    if "/" in entry:
        try:
            ipaddress.ip_network(entry, strict=True)
        except ValueError as exc:
            try:
                loose = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                return f"{entry!r} is not a valid CIDR network ({exc})"
            return f"{entry!r} has host bits set; did you mean '{loose}'?"
        return None
    try:
        ipaddress.ip_address(entry.strip("[]"))
        return None
    except ValueError:
        pass
    if _HOST_RE.match(entry):
        return None
    return f"{entry!r} is not a host name, IP address or CIDR network"


def _listen_error(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        return f"listen must be host:port (e.g. 127.0.0.1:8080), got {value!r}"
    if not port.isdigit() or not 0 < int(port) < 65536:
        return f"listen port must be 1-65535, got {port!r}"
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host.strip("[]"))
        except ValueError:
            return f"listen host {host!r} is not an IPv6 address"
    elif _host_entry_error(host) is not None or ":" in host:
        return f"listen host {host!r} is not a host name or IP address (IPv6 goes in [])"
    return None


# --------------------------------------------------------------------------- settings

_SETTING_TYPES: dict[str, Any] = get_type_hints(Settings)
_DURATIONS = frozenset(
    {
        "default_interval", "min_interval", "max_interval", "max_backoff", "retry_after_max",
        "connect_timeout", "read_timeout", "fetch_deadline", "per_host_delay", "parse_timeout",
        "entry_retention",
    }
)  # fmt: skip
_SIZES = frozenset({"feed_max_bytes", "page_max_bytes"})
_ZERO_OK = frozenset({
    "per_host_delay", "jitter", "max_redirects", "article_budget", "extract_processes",
    "archive_pages",
    "entry_retention",  # 0: entries are kept forever
})  # fmt: skip
# String settings where empty means "off".
_EMPTY_OK = frozenset({"metrics_listen"})
# Settings that may be left unset (None): an empty AGGREGATOR_<NAME> unsets them too.
_OPTIONAL = frozenset(f.name for f in dataclasses.fields(Settings) if f.default is None)
_FRACTIONS = {"jitter": (0.0, 1.0, "0 <= jitter < 1"), "dedup_threshold": (0.0, 1.0, "0 < x <= 1")}


def _setting_kind(name: str) -> str:
    if name in _DURATIONS:
        return "duration"
    if name in _SIZES:
        return "size"
    kind = _SETTING_TYPES[name]
    if kind is bool:
        return "bool"
    if kind is int:
        return "int"
    if kind is float:
        return "float"
    if kind is str or kind == str | None:
        return "str"
    return "list"  # tuple[str, ...]


def _setting_from_yaml(name: str, y: _Y, check: _Checker) -> Any:
    """The value of setting ``name`` in the settings file, or None after reporting."""
    kind = _setting_kind(name)
    if kind == "str":
        if name in _EMPTY_OK and y.kind == "null":
            return ""
        return check.string(y, name, empty_ok=name in _EMPTY_OK)
    if kind == "bool":
        return check.boolean(y, name)
    if kind == "duration":
        return check.duration(y, name)
    if kind == "list":
        items = check.strings(y, name, "a, b")
        if items is None:
            return None
        hosts = name == "allow_private_hosts"
        errors = [(it, err) for text, it in items if hosts and (err := _host_entry_error(text))]
        for item, err in errors:  # each entry at its own position
            check.p.at(item, f"{name}: {err}")
        return None if errors else tuple(text for text, _ in items)
    if kind == "size":
        if y.kind in ("int", "str"):
            try:
                return parse_size(y.value)
            except ValueError as exc:
                check.p.at(y, f"{name}: {exc}")
                return None
        check.wrong(y, name, "a size in bytes (or 15MB)")
        return None
    if kind == "int":
        return y.value if y.kind == "int" else check.wrong(y, name, "an integer")
    if y.kind in ("int", "float"):
        return float(y.value)
    check.wrong(y, name, "a number")
    return None


def _setting_from_env(name: str, raw: str) -> Any:
    """Convert an environment value; raises ValueError with a readable message."""
    kind = _setting_kind(name)
    text = raw.strip()
    if kind == "list":
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if not text and name in _EMPTY_OK:
        return ""
    if not text:
        if name in _OPTIONAL:
            return None
        raise ValueError("empty value")
    if kind == "str":
        return text
    if kind == "bool":
        return parse_bool(text)
    if kind == "duration":
        return parse_duration(text)
    if kind == "size":
        return parse_size(text)
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {raw!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {raw!r}")
    return number


def _setting_error(name: str, value: Any) -> str | None:
    """Range and format rules of one setting's converted value."""
    if value is None and name in _OPTIONAL:
        return None
    if name == "listen":
        return _listen_error(value)
    if name == "metrics_listen":
        error = _listen_error(value) if value else None
        return None if error is None else "metrics_" + error  # its messages open "listen"
    if name == "base_url":
        return (error := _url_error(value)) and f"base_url: {error}"
    if name == "log_level":
        return None if value.upper() in _LOG_LEVELS else (
            f"log_level must be one of {', '.join(_LOG_LEVELS)}, got {value!r}"
        )
    if name == "log_format":
        return None if value.lower() in _LOG_FORMATS else (
            f"log_format must be one of {', '.join(_LOG_FORMATS)}, got {value!r}"
        )
    if name == "user_agent" and any(ord(ch) < 32 for ch in value):
        return "user_agent must not contain control characters or line breaks"
    if name == "allow_private_hosts":
        errors = [err for entry in value if (err := _host_entry_error(entry))]
        return "; ".join(errors) or None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value):
        return f"{name} must be a finite number"
    if name in _FRACTIONS:
        low, high, rule = _FRACTIONS[name]
        ok = (low <= value < high) if name == "jitter" else (low < value <= high)
        return None if ok else f"{name} must satisfy {rule}, got {value}"
    if name in _ZERO_OK:
        return None if value >= 0 else f"{name} must be 0 or more, got {value}"
    return None if value > 0 else f"{name} must be positive, got {value}"


def _load_settings(
    config_path: str | None, env: Mapping[str, str], problems: list[Problem]
) -> Settings:
    """Defaults < settings file < environment. Problems are appended; defaults stand in."""
    values: dict[str, Any] = {}
    origin: dict[str, tuple[str, int, int]] = {}
    if config_path is not None:
        file_problems = _Problems(config_path)
        text = _read_file(config_path, file_problems)
        ok, tree = _parse(text, file_problems) if text is not None else (False, None)
        if tree is not None:
            check = _Checker(file_problems)
            if tree.kind != "map":
                file_problems.at(tree, f"expected a mapping of settings, got {_describe(tree)}")
            else:
                names = [f.name for f in dataclasses.fields(Settings)]
                elsewhere = {key: "in feeds.yaml" for key in _TOP_KEYS}
                for name, y in check.fields(tree, names, "settings", elsewhere=elsewhere).items():
                    value = _setting_from_yaml(name, y, check)
                    if value is None:
                        continue
                    # Checked here even if the environment overrides it: the file stays wrong.
                    if error := _setting_error(name, value):
                        file_problems.at(y, error)
                    else:
                        values[name] = value
                        origin[name] = (config_path, y.line, y.col)
        problems.extend(_sorted(file_problems.items))
    for f in dataclasses.fields(Settings):
        var = ENV_PREFIX + f.name.upper()
        if var not in env:
            continue
        try:
            value = _setting_from_env(f.name, env[var])
        except ValueError as exc:
            problems.append(Problem("$" + var, 1, 1, f"{var}: {exc}"))
            continue
        if error := _setting_error(f.name, value):
            problems.append(Problem("$" + var, 1, 1, f"{var}: {error}"))
        else:
            values[f.name] = value
            origin[f.name] = ("$" + var, 1, 1)
    if "log_level" in values:
        values["log_level"] = values["log_level"].upper()
    if "log_format" in values:
        values["log_format"] = values["log_format"].lower()
    if values.get("base_url") and not values["base_url"].endswith("/"):
        values["base_url"] += "/"  # outputs are joined onto it
    settings = Settings(**values)
    if settings.metrics_listen and settings.metrics_listen == settings.listen:
        where = origin.get("metrics_listen", (config_path or "settings", 1, 1))
        problems.append(Problem(*where, "metrics_listen must differ from listen (it is a "
                                "second listener; leave it empty to serve /metrics on listen)"))
    if not settings.min_interval <= settings.default_interval <= settings.max_interval:
        where = next(
            (origin[n] for n in ("default_interval", "min_interval", "max_interval") if n in origin),
            (config_path or "settings", 1, 1),
        )
        problems.append(
            Problem(
                *where,
                "intervals must satisfy min_interval <= default_interval <= max_interval"
                f" (got {_fmt_seconds(settings.min_interval)}"
                f" <= {_fmt_seconds(settings.default_interval)}"
                f" <= {_fmt_seconds(settings.max_interval)})",
            )
        )
    return settings


# --------------------------------------------------------------------------- feeds.yaml


def _fmt_seconds(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


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


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.line, p.col))


def _load(
    config_path: str | None, feeds_path: str | None, env: Mapping[str, str] | None
) -> tuple[Config, list[Problem]]:
    problems: list[Problem] = []
    settings = _load_settings(config_path, os.environ if env is None else env, problems)
    feeds: list[FeedConfig] = []
    outputs = [_default_output(settings)]
    aliases: dict[str, tuple[str, tuple[str, ...]]] = {}
    if feeds_path is not None:
        file_problems = _Problems(feeds_path)
        text = _read_file(feeds_path, file_problems)
        ok, tree = _parse(text, file_problems) if text is not None else (False, None)
        if ok:
            feeds, outputs, aliases = _feeds_tree(_Checker(file_problems), tree, settings)
        problems.extend(_sorted(file_problems.items))
    config = Config(
        settings=settings,
        feeds=tuple(feeds),
        outputs=tuple(outputs),
        aliases=tuple(aliases.values()),
        config_path=config_path,
        feeds_path=feeds_path,
    )
    rank = {config_path: 0, feeds_path: 2}  # settings file, then $AGGREGATOR_*, then feeds
    problems.sort(key=lambda p: (rank.get(p.file, 1), p.line, p.col))
    return config, problems


def load_config(
    config_path: str | None,
    feeds_path: str | None,
    env: Mapping[str, str] | None = None,
    *,
    cached: bool = False,
) -> Config:
    """Settings (file, then ``AGGREGATOR_*`` env) and feeds; ConfigError lists every problem.

    ``None`` for a path means defaults (no feeds, one output ``all``). ``cached``: reuse the
    result of an earlier load of the very same inputs (see :func:`_cache_key`)."""
    env = os.environ if env is None else env
    key = _cache_key(config_path, feeds_path, env) if cached else None
    if key is not None and (hit := _cache_get(key, env)) is not None:
        return hit
    config, problems = _load(config_path, feeds_path, env)
    if problems:
        raise ConfigError(problems)
    if key is not None:
        _cache_put(key, config, env)
    return config


# --------------------------------------------------------------------------- load cache
#
# A command-line run (`aggregator update` from cron, say) reads feeds.yaml each time, and a
# YAML parse of 1,000 feeds costs more CPU than polling them when nothing changed. A
# validated configuration is kept, pickled, in the user's cache directory, under a hash of
# everything it was made from: both files' bytes, the AGGREGATOR_* environment, the working
# directory, and this module's and the models' source. Only a successful load is cached; a
# cache file that is not ours, is writable by others, or does not unpickle is ignored.

_CACHE_KEEP = 8  # cached configurations kept (one per distinct set of inputs)


def _cache_dir(env: Mapping[str, str]) -> Path | None:
    if env.get("CACHE_DIRECTORY"):  # systemd's CacheDirectory=
        return Path(env["CACHE_DIRECTORY"].split(":")[0])
    root = env.get("XDG_CACHE_HOME") or (
        str(Path(env["HOME"]) / ".cache") if env.get("HOME") else None)
    return Path(root) / "aggregator" if root else None


def _cache_key(config_path: str | None, feeds_path: str | None,
               env: Mapping[str, str]) -> str | None:
    digest = hashlib.sha256()
    try:
        for part in (Path(__file__), Path(__file__).with_name("models.py"), config_path,
                     feeds_path):
            if part is None:
                digest.update(b"\0none\0")
                continue
            digest.update(str(Path(part).resolve()).encode("utf-8", "surrogateescape"))
            digest.update(Path(part).read_bytes())
            digest.update(b"\0")
        items = sorted((k, v) for k, v in env.items() if k.startswith(ENV_PREFIX))
        digest.update(repr((config_path, feeds_path, items, os.getcwd(), sys.version,
                            pickle.HIGHEST_PROTOCOL)).encode(
            "utf-8", "surrogateescape"))
    except (OSError, ValueError):
        return None  # an unreadable file: the real load reports it
    return digest.hexdigest()


def _cache_get(key: str, env: Mapping[str, str]) -> Config | None:
    folder = _cache_dir(env)
    if folder is None:
        return None
    path = folder / f"config-{key}.pickle"
    try:
        info = path.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o022:
            return None  # someone else could have written it
        value = pickle.loads(path.read_bytes())
    except Exception:  # missing, unreadable, or from an incompatible version: just parse
        return None
    return value if isinstance(value, Config) else None


def _cache_put(key: str, config: Config, env: Mapping[str, str]) -> None:
    folder = _cache_dir(env)
    if folder is None:
        return
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(folder / f"config-{key}.pickle", pickle.dumps(config), mode=0o600,
                     skip_unchanged=False)
        older = sorted(folder.glob("config-*.pickle"), key=lambda p: p.stat().st_mtime)
        for stale in older[:-_CACHE_KEEP]:
            stale.unlink(missing_ok=True)
    except Exception:  # a read-only or full disk costs the next run a parse, nothing else
        pass


def check_files(
    config_path: str | None, feeds_path: str | None, env: Mapping[str, str] | None = None
) -> list[Problem]:
    """Every problem ``load_config`` would raise, for ``aggregator check``."""
    return _load(config_path, feeds_path, env)[1]


def check_report(
    config_path: str | None, feeds_path: str | None, env: Mapping[str, str] | None = None
) -> tuple[list[Problem], list[str]]:
    """``aggregator check``: every problem (as :func:`check_files`) and the warnings about a
    configuration that loads but cannot work as meant (see :func:`settings_warnings`)."""
    config, problems = _load(config_path, feeds_path, env)
    return problems, settings_warnings(config.settings)


def settings_warnings(settings: Settings) -> list[str]:
    """Valid settings that still cannot do what they are for, one sentence each."""
    warnings = []
    host = settings.listen.strip().rpartition(":")[0].strip("[]")
    try:
        wildcard = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        wildcard = not host
    if wildcard and not settings.base_url:
        warnings.append(
            f"listen {settings.listen} is a wildcard address and base_url is unset: the links"
            f" in published feeds, the index page and the OPML point to {settings.link_base},"
            " which only this machine can reach; set base_url to the address subscribers use"
        )
    return warnings


# --------------------------------------------------------------------------- editing feeds.yaml


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


def _yaml_value(value: object) -> object:
    """Plain Python -> ruamel round-trip values (lists of scalars in flow style)."""
    if isinstance(value, Mapping):
        out = CommentedMap()
        for key, item in value.items():
            if item is not None:
                out[str(key)] = _yaml_value(item)
        return out
    if isinstance(value, list | tuple):
        seq = CommentedSeq(_yaml_value(v) for v in value)
        if all(not isinstance(v, Mapping | list | tuple) for v in value):
            seq.fa.set_flow_style()
        return seq
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"cannot write a {type(value).__name__} into feeds.yaml")


def _render_items(items: Sequence[Mapping[str, object]], seq_indent: int, map_indent: int) -> str:
    ordered = []
    for feed in items:
        keys = [k for k in _FEED_KEYS if k in feed] + [k for k in feed if k not in _FEED_KEYS]
        ordered.append(_yaml_value({k: feed[k] for k in keys}))
    yaml = _rt_yaml()
    yaml.indent(mapping=map_indent, sequence=seq_indent, offset=0)
    yaml.width = 4096  # never fold a long URL or title
    buf = io.StringIO()
    yaml.dump(CommentedSeq(ordered), buf)
    return buf.getvalue()


def _last_end(node: Node) -> int:
    """Text index just after the last value written inside ``node``.

    A block collection's own end mark lies past trailing comments; its deepest last scalar
    (or flow collection) ends where the operator's text for it ends."""
    while isinstance(node, MappingNode | SequenceNode) and not node.flow_style and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(last, tuple) else last
    return int(node.end_mark.index)


def _map_indent(root: Node | None) -> int:
    """The operator's mapping indentation: a block mapping nested under a key, default 2."""
    todo = [root] if root is not None else []
    seen: set[int] = set()
    while todo:
        node = todo.pop(0)  # breadth first: the outermost example is the most telling
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            for knode, vnode in node.value:
                if isinstance(vnode, MappingNode) and not vnode.flow_style and vnode.value:
                    indent = vnode.start_mark.column - knode.start_mark.column
                    if 0 < indent <= 8:
                        return int(indent)
        todo.extend(_children(node))
    return 2


def _find(node: Node | None, key: str) -> tuple[ScalarNode, Node] | None:
    if isinstance(node, MappingNode):
        for knode, vnode in node.value:
            if isinstance(knode, ScalarNode) and knode.value == key:
                return knode, vnode
    return None


def _scalar_of(node: Node, key: str) -> str | None:
    found = _find(node, key)
    if found and isinstance(found[1], ScalarNode):
        return str(found[1].value)
    return None


def _insert_feeds(text: str, root: Node | None, rendered_for: Any) -> str | None:
    """New document text with the feeds inserted as text, or None when ruamel must re-dump.

    ``rendered_for(seq_indent, dash_col)`` renders the new items indented at ``dash_col``."""
    map_indent = _map_indent(root)
    found = _find(root, "feeds")
    if root is None or (isinstance(root, MappingNode) and not root.flow_style and found is None):
        # No feeds key yet: append one at the end, after whatever comments are there.
        head = text if not text or text.endswith("\n") else text + "\n"
        return head + "feeds:\n" + rendered_for(2, map_indent)
    if found is None:
        return None
    seq = found[1]
    if not isinstance(seq, SequenceNode) or seq.flow_style or not seq.value:
        return None
    dash_col = seq.start_mark.column
    seq_indent = max(seq.value[0].start_mark.column - dash_col, 2)
    end = _last_end(seq.value[-1])
    if end > 0 and text[end - 1 : end] == "\n":
        at = end  # block scalar: its end is already a line start
    else:
        newline = text.find("\n", end)
        at = len(text) if newline < 0 else newline + 1
    head = text[:at] if text[:at].endswith("\n") else text[:at] + "\n"
    return head + rendered_for(seq_indent, dash_col) + text[at:]


def _redump(text: str, items: Sequence[Mapping[str, object]], map_indent: int) -> str:
    """Fallback for flow or empty feed lists: ruamel round trip keeps comments and order."""
    yaml = _rt_yaml()
    yaml.indent(mapping=map_indent, sequence=map_indent + 2, offset=map_indent)
    yaml.width = 4096
    yaml.preserve_quotes = True
    data = yaml.load(text)
    seq = data.get("feeds")
    if not isinstance(seq, CommentedSeq):
        seq = CommentedSeq()
    seq.fa.set_block_style()
    for feed in items:
        keys = [k for k in _FEED_KEYS if k in feed] + [k for k in feed if k not in _FEED_KEYS]
        seq.append(_yaml_value({k: feed[k] for k in keys}))
    data["feeds"] = seq
    buf = io.StringIO()
    yaml.dump(data, buf)
    return buf.getvalue()


def add_feeds(
    feeds_path: str,
    feeds: Sequence[Mapping[str, object]],
    *,
    settings: Settings | None = None,
) -> list[str]:
    """Append feeds to feeds.yaml, skipping any whose URL or name is already there.

    The operator's text (comments, order, quoting) is kept byte for byte; CRLF and a BOM
    are preserved. The result is validated first: if a new feed has a problem nothing is
    written and ConfigError names it. Returns the names added (creates the file if needed)."""
    path = Path(os.path.realpath(feeds_path))
    problems = _Problems(feeds_path)
    raw = path.read_bytes() if path.exists() else b""
    bom = raw.startswith(b"\xef\xbb\xbf")
    crlf = b"\r\n" in raw
    text = _decode(raw, problems)
    if text is None:
        raise ConfigError(problems.items)
    ok, root = _compose(text, problems)
    if not ok:
        raise ConfigError(problems.items)

    names: set[str] = set()
    urls: set[str] = set()
    old_count = 0
    found = _find(root, "feeds")
    if found and isinstance(found[1], SequenceNode):
        old_count = len(found[1].value)
        for item in found[1].value:
            if (old_name := _scalar_of(item, "name")) is not None:
                names.add(old_name)
            if (old_url := _scalar_of(item, "url")) is not None:
                urls.add(_url_key(old_url))
    accepted: list[Mapping[str, object]] = []
    for feed in feeds:
        name, url = feed.get("name"), feed.get("url")
        if isinstance(url, str) and _url_key(url) in urls:
            continue
        if name is None and isinstance(url, str):  # `aggregator add URL` without --name
            title = feed.get("title")
            name = derive_name(url, title if isinstance(title, str) else None, names)
            feed = {"name": name, **{k: v for k, v in feed.items() if k != "name"}}
        if str(name) in names:
            continue
        names.add(str(name))
        if isinstance(url, str):
            urls.add(_url_key(url))
        accepted.append(feed)
    if not accepted:
        return []

    try:
        map_indent = _map_indent(root)

        def rendered_for(seq_indent: int, dash_col: int) -> str:
            block = _render_items(accepted, seq_indent, map_indent)
            return "".join(" " * dash_col + line if line else line for line in block.splitlines(True))

        new_text = _insert_feeds(text, root, rendered_for)
        if new_text is None:
            new_text = _redump(text, accepted, map_indent)
    except (TypeError, YAMLError) as exc:
        raise ConfigError([Problem(feeds_path, 1, 1, f"cannot add feeds: {exc}")]) from exc

    _check_added(feeds_path, new_text, old_count, settings or Settings())
    if crlf:
        new_text = new_text.replace("\n", "\r\n")
    write_atomic(path, (b"\xef\xbb\xbf" if bom else b"") + new_text.encode("utf-8"),
                 keep_mode=True, skip_unchanged=False)
    return [str(feed.get("name")) for feed in accepted]


def _check_added(feeds_path: str, new_text: str, old_count: int, settings: Settings) -> None:
    """Raise ConfigError for problems inside the newly added items (others were there before)."""
    problems = _Problems(feeds_path)
    ok, tree = _parse(new_text, problems)
    if ok:
        _feeds_tree(_Checker(problems), tree, settings)
    ok_root, root = _compose(new_text, _Problems(feeds_path))
    found = _find(root, "feeds") if ok_root else None
    if not found or not isinstance(found[1], SequenceNode):
        raise ConfigError(problems.items or [Problem(feeds_path, 1, 1, "could not add feeds")])
    new_items = found[1].value[old_count:]
    first = new_items[0].start_mark.line + 1
    last = max(_last_end_line(n, new_text) for n in new_items)
    mine = [p for p in problems.items if first <= p.line <= last]
    if mine or not ok:
        raise ConfigError([
            Problem(p.file, p.line, p.col, f"new feed: {p.message} (nothing was written)")
            for p in (mine or problems.items)
        ])


def _last_end_line(node: Node, text: str) -> int:
    return text.count("\n", 0, _last_end(node)) + 1


# --------------------------------------------------------------------------- OPML


class _Refused(Exception):
    pass


def _opml_error(source: str, line: int, col: int, message: str) -> ConfigError:
    return ConfigError([Problem(source, line, col, message)])


def _feed_scheme(url: str) -> str:
    """``feed://host/x`` and ``feed:https://host/x`` (feed-reader links) -> http(s)."""
    if url.lower().startswith("feed:"):
        rest = url[5:]
        return rest if rest.lower().startswith(("http://", "https://")) else "http:" + rest
    return url


def _category_tags(category: str) -> list[str]:
    tags = []
    for path in category.split(","):
        for part in path.split("/"):
            tag = re.sub(r"[\s,/|]+", "-", part.strip().lower()).strip("-")
            if tag:
                tags.append(tag)
    return tags


def read_opml(data: bytes, *, source: str = "OPML") -> list[dict[str, object]]:
    """Feeds of an OPML subscription list, as mappings ready for ``add_feeds``.

    DOCTYPE and entity declarations are refused before anything is expanded (billion
    laughs, external entities). Folder outlines and ``category`` become tags; each feed gets
    a unique slug ``name``. Raises ConfigError naming the line and column of a problem."""
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[str] = []
    folders: list[str | None] = []
    feeds: dict[str, dict[str, object]] = {}
    count = 0

    def refuse(*_args: object) -> None:
        raise _Refused("DOCTYPE and ENTITY declarations are not allowed in OPML")

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal count
        if not stack and tag != "opml":
            raise _Refused(f"not an OPML document: root element is <{tag}>")
        stack.append(tag)
        if tag != "outline":
            return
        count += 1
        if count > MAX_OPML_OUTLINES:
            raise _Refused(f"more than {MAX_OPML_OUTLINES} outlines")
        attrs = {k.lower(): v for k, v in attrs.items()}
        label = (attrs.get("title") or attrs.get("text") or "").strip()
        url = _feed_scheme((attrs.get("xmlurl") or "").strip())
        if not url:
            folders.append(label or None)  # a folder: its label tags the feeds inside
            return
        folders.append(None)
        tags = [tag for folder in folders if folder for tag in _category_tags(folder)]
        tags += _category_tags(attrs.get("category", ""))
        key = _url_key(url)
        if key in feeds:  # the same feed in two folders: one feed, both tags
            old = feeds[key]
            old["tags"] = list(dict.fromkeys([*old["tags"], *tags]))  # type: ignore[misc]
            return
        feed: dict[str, object] = {"url": url, "title": label or None}
        if attrs.get("htmlurl", "").strip():
            feed["site_url"] = attrs["htmlurl"].strip()
        if attrs.get("language", "").strip():
            feed["language"] = attrs["language"].strip()
        feed["tags"] = list(dict.fromkeys(tags))
        feeds[key] = feed

    def end(tag: str) -> None:
        stack.pop()
        if tag == "outline":
            folders.pop()

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse  # type: ignore[assignment]
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(data, True)
    except _Refused as exc:
        raise _opml_error(
            source, parser.CurrentLineNumber, parser.CurrentColumnNumber + 1, str(exc)
        ) from None
    except expat.ExpatError as exc:
        message = f"not well-formed XML: {expat.ErrorString(exc.code)}"
        raise _opml_error(source, exc.lineno, exc.offset + 1, message) from None

    taken: set[str] = set()
    out = []
    for feed in feeds.values():
        name = derive_name(str(feed["url"]), feed["title"] if isinstance(feed["title"], str) else None, taken)
        taken.add(name)
        item: dict[str, object] = {"name": name}
        item.update({k: v for k, v in feed.items() if v not in (None, [])})
        out.append(item)
    return out


def _xml_text(text: str) -> str:
    """Drop characters XML 1.0 cannot carry (control characters in a title)."""
    return "".join(ch for ch in text if ch in "\t\n\r" or ord(ch) >= 32)


def export_opml(config: Config) -> bytes:
    """OPML 2.0 subscription list of the configured feeds (tags as categories)."""
    opml = ET.Element("opml", version="2.0")
    head = ET.SubElement(opml, "head")
    ET.SubElement(head, "title").text = "aggregator feeds"
    body = ET.SubElement(opml, "body")
    for feed in config.feeds:
        attrs = {"type": "rss", "text": _xml_text(feed.title or feed.name)}
        if feed.title:
            attrs["title"] = _xml_text(feed.title)
        attrs["xmlUrl"] = feed.url
        if feed.site_url:
            attrs["htmlUrl"] = feed.site_url
        if feed.language:
            attrs["language"] = feed.language
        if feed.tags:
            attrs["category"] = ",".join("/" + tag for tag in feed.tags)
        ET.SubElement(body, "outline", attrs)
    ET.indent(opml)
    body_xml = ET.tostring(opml, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body_xml + "\n").encode("utf-8")
