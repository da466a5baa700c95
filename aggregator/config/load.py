"""Loading: settings, then feeds.yaml, into one ``Config``; every problem of both files in
one ``ConfigError`` (or listed, for ``aggregator check``), optionally through the cache."""

from __future__ import annotations

import os
from collections.abc import Mapping

from aggregator.config.cache import _cache_get, _cache_key, _cache_put
from aggregator.config.feeds import _default_output, _feeds_tree
from aggregator.config.positioned import _parse, _Problems, _read_file, _sorted
from aggregator.config.settings import _load_settings, settings_warnings, shared_store_problem
from aggregator.config.values import _Checker
from aggregator.errors import ConfigError, Problem
from aggregator.models import Config, FeedConfig


def _load(
    config_path: str | None, feeds_path: str | None, env: Mapping[str, str] | None,
    origin: dict[str, tuple[str, int, int]] | None = None,
) -> tuple[Config, list[Problem]]:
    problems: list[Problem] = []
    settings = _load_settings(config_path, os.environ if env is None else env, problems,
                              origin)
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
    result of an earlier load of the very same inputs (see :mod:`aggregator.config.cache`)."""
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
    origin: dict[str, tuple[str, int, int]] = {}
    config, problems = _load(config_path, feeds_path, env, origin)
    if not problems and (problem := shared_store_problem(config.settings)):
        # Named where the database was set (the file's line, or the environment variable).
        where = origin.get("database", (config_path or "settings", 1, 1))
        problems = [*problems, Problem(*where, problem)]
    return problems, settings_warnings(config.settings)
