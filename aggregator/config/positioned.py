"""The positioned YAML reader: file bytes -> a tree of ``_Y`` values that keep their line and
column, with every problem collected (syntax, tabs, tags, duplicate keys, depth, alias bombs).

The only module that imports ruamel.yaml: the editing module takes the round-trip loader,
node types and containers from here."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML

# Containers and node types are re-exported for the editing module (``X as X``).
from ruamel.yaml.comments import CommentedMap as CommentedMap
from ruamel.yaml.comments import CommentedSeq as CommentedSeq
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.error import YAMLError as YAMLError
from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent
from ruamel.yaml.nodes import MappingNode as MappingNode
from ruamel.yaml.nodes import Node as Node
from ruamel.yaml.nodes import ScalarNode as ScalarNode
from ruamel.yaml.nodes import SequenceNode as SequenceNode
from ruamel.yaml.reader import ReaderError

from aggregator.errors import Problem

MAX_FILE_BYTES = 5 * 1024 * 1024  # a feeds.yaml is kilobytes; refuse before parsing junk
MAX_ALIAS_NODES = 10_000  # nodes that aliases may add on expansion (alias bombs)
MAX_DEPTH = 64  # our schema nests 6 deep; deeper is junk or an attack
_TAG = "tag:yaml.org,2002:"


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
    """For reading only: nodes are all we use, so the round-trip loader's comment handling
    would be paid for nothing; the pure-Python safe loader resolves scalars to the same tags
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
        # reached: skip the extra pass (a second full parse of every ordinary file).
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


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.line, p.col))
