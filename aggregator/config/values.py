"""Scalar values of both files: durations, sizes and booleans from text, and typed access
to positioned values (``_Checker``) that reports every mismatch at the value's position."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection, Mapping, Sequence

from aggregator.config.positioned import _Y, _Problems

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


def _fmt_seconds(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
