"""Round-trip editing of feeds.yaml (``aggregator add``, ``import``): new feeds go in as
text after the operator's last feed, so comments, order and formatting stay byte for byte;
a flow-style or empty ``feeds:`` list goes through a ruamel round trip instead."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aggregator.config.addresses import _url_key
from aggregator.config.feeds import _FEED_KEYS, _feeds_tree, derive_name
from aggregator.config.positioned import (
    CommentedMap,
    CommentedSeq,
    MappingNode,
    Node,
    ScalarNode,
    SequenceNode,
    YAMLError,
    _children,
    _compose,
    _decode,
    _parse,
    _Problems,
    _rt_yaml,
)
from aggregator.config.values import _Checker
from aggregator.errors import ConfigError, Problem
from aggregator.files import write_atomic
from aggregator.models import Settings


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
