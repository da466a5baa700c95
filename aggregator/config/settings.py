"""Deployment settings: ``config/aggregator.yaml``, each overridden by ``AGGREGATOR_<NAME>``;
conversions by the type of the ``Settings`` field, ranges, cross-setting rules and the
warnings ``aggregator check`` gives about settings that load but cannot work as meant."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Mapping
from typing import Any, get_type_hints

from aggregator.config.addresses import _host_entry_error, _listen_error, _url_error
from aggregator.config.feeds import _TOP_KEYS
from aggregator.config.positioned import _Y, _parse, _Problems, _read_file, _sorted
from aggregator.config.values import (
    _Checker,
    _describe,
    _fmt_seconds,
    parse_bool,
    parse_duration,
    parse_size,
)
from aggregator.errors import Problem
from aggregator.models import Settings

ENV_PREFIX = "AGGREGATOR_"
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LOG_FORMATS = ("text", "json")

_SETTING_TYPES: dict[str, Any] = get_type_hints(Settings)
_DURATIONS = frozenset(
    {
        "default_interval", "min_interval", "max_interval", "max_backoff", "retry_after_max",
        "connect_timeout", "read_timeout", "fetch_deadline", "per_host_delay", "parse_timeout",
        "entry_retention", "heartbeat_interval", "stalled_timeout", "shutdown_timeout",
    }
)  # fmt: skip
_SIZES = frozenset({"feed_max_bytes", "page_max_bytes"})
_ZERO_OK = frozenset({
    "per_host_delay", "jitter", "max_redirects", "article_budget", "extract_processes",
    "archive_pages", "worker_concurrency",
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
    config_path: str | None, env: Mapping[str, str], problems: list[Problem],
    origin: dict[str, tuple[str, int, int]] | None = None,
) -> Settings:
    """Defaults < settings file < environment. Problems are appended; defaults stand in.
    ``origin`` (filled when given): where each setting that is not a default was set."""
    values: dict[str, Any] = {}
    origin = {} if origin is None else origin
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
    if settings.stalled_timeout < 2 * settings.heartbeat_interval:
        # A live worker between two heartbeats would count as dead: its jobs run twice.
        where = origin.get("stalled_timeout", origin.get(
            "heartbeat_interval", (config_path or "settings", 1, 1)))
        problems.append(Problem(*where, "stalled_timeout must be at least twice "
                                "heartbeat_interval (got "
                                f"{_fmt_seconds(settings.stalled_timeout)} and "
                                f"{_fmt_seconds(settings.heartbeat_interval)})"))
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


def shared_store_problem(settings: Settings) -> str | None:
    """Why these settings cannot run against a shared (PostgreSQL) store, or None: there,
    base_url is required, since every node (workers publishing, serve nodes serving) must
    publish the same links, whatever address each one listens on."""
    if settings.database.startswith(("postgresql://", "postgres://")) and not settings.base_url:
        return ("base_url is required with a postgresql:// database: every node must publish"
                " the same links (set base_url, or AGGREGATOR_BASE_URL, to the address"
                " subscribers use)")
    return None


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
