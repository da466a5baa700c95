"""Shared fixtures: the corpus in ../shared and small helpers. Tests never touch the internet."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AGGREGATOR_SHARED", ROOT.parent / "shared")).resolve()
CORPUS = SHARED / "corpus"


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.fail(f"corpus not found at {CORPUS}: ../shared must sit beside the repository")
    return CORPUS


@pytest.fixture(scope="session")
def seed_article() -> Path:
    return SHARED / "seed" / "example-article.txt"


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The CLI caches validated configurations under XDG_CACHE_HOME: never the user's own
    cache during tests (subprocesses inherit this environment)."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    os.environ.pop("CACHE_DIRECTORY", None)
