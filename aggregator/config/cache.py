"""The command line's cache of validated configurations.

A command-line run (`aggregator update` from cron, say) reads feeds.yaml each time, and for
a large feeds.yaml the YAML parse costs more CPU than polling the feeds when nothing changed.
A validated configuration is kept, pickled, in the user's cache directory, under a hash of
everything it was made from: both files' bytes, the AGGREGATOR_* environment, the working
directory, and the source of every module of this package and of the models. Only a
successful load is cached; a cache file that is not ours, is writable by others, or does not
unpickle is ignored."""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
from collections.abc import Mapping
from pathlib import Path

from aggregator.config.settings import ENV_PREFIX
from aggregator.files import write_atomic
from aggregator.models import Config

# The code that turns the files into a Config: a change to any of it is a new key.
_PACKAGE = Path(__file__).resolve().parent
_MODELS = _PACKAGE.parent / "models.py"

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
        code = sorted(_PACKAGE.glob("*.py"))
        for part in (*code, _MODELS, config_path, feeds_path):
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
