"""Configuration: deployment settings and the operator's feeds.yaml.

Settings come from ``config/aggregator.yaml``, each overridable by ``AGGREGATOR_<NAME>``.
``feeds.yaml`` lists feeds, spelling aliases and published outputs.

Both files are *composed* (not constructed) with ruamel.yaml (YAML 1.2): every value keeps
its line/col, no tag is ever turned into an object (``!!python/...`` is refused, not run),
and validation walks the node tree collecting every problem instead of stopping at the
first. One module per job:

- ``positioned``: file bytes -> positioned tree (the only module importing ruamel.yaml)
- ``values``: durations, sizes, booleans; typed access to positioned values
- ``addresses``: URLs, host entries, listen addresses
- ``settings``: the settings file and ``AGGREGATOR_*``, ranges, warnings
- ``feeds``: feeds, aliases, outputs and filters of feeds.yaml; feed names
- ``load``: ``load_config`` and ``aggregator check``
- ``cache``: the command line's cache of validated configurations
- ``edit``: adding feeds to feeds.yaml, keeping the operator's text
- ``opml``: OPML import and export

The names below are the public interface; import them from ``aggregator.config``.
"""

from __future__ import annotations

from aggregator.config.edit import add_feeds
from aggregator.config.feeds import NAME_RE, derive_name
from aggregator.config.load import check_files, check_report, load_config
from aggregator.config.opml import MAX_OPML_OUTLINES, export_opml, read_opml
from aggregator.config.positioned import MAX_ALIAS_NODES, MAX_DEPTH, MAX_FILE_BYTES
from aggregator.config.settings import ENV_PREFIX, settings_warnings, shared_store_problem
from aggregator.config.values import parse_bool, parse_duration, parse_size

__all__ = [
    "ENV_PREFIX",
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_OPML_OUTLINES",
    "NAME_RE",
    "add_feeds",
    "check_files",
    "check_report",
    "derive_name",
    "export_opml",
    "load_config",
    "parse_bool",
    "parse_duration",
    "parse_size",
    "read_opml",
    "settings_warnings",
    "shared_store_problem",
]
