"""Helpers for tests that drive the real CLI and daemon in subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_feeds(path: Path, feeds: list[dict[str, Any]], extra: str = "") -> Path:
    lines = ["feeds:"]
    for f in feeds:
        lines.append(f"  - name: {f['name']}")
        lines.append(f"    url: {f['url']}")
        for k, v in f.items():
            if k in ("name", "url"):
                continue
            if isinstance(v, bool):
                v = "true" if v else "false"
            elif isinstance(v, list | tuple):
                v = "[" + ", ".join(str(x) for x in v) + "]"
            lines.append(f"    {k}: {v}")
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path


def env_for(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AGGREGATOR_DATABASE=str(tmp / "agg.db"),
        AGGREGATOR_OUTPUT_DIR=str(tmp / "public"),
        AGGREGATOR_LISTEN=f"127.0.0.1:{free_port()}",
        AGGREGATOR_ALLOW_PRIVATE_HOSTS="127.0.0.1",
        AGGREGATOR_PER_HOST_DELAY="0",
        AGGREGATOR_FETCH_DEADLINE="5",
        AGGREGATOR_READ_TIMEOUT="3",
        AGGREGATOR_CONNECT_TIMEOUT="2",
        AGGREGATOR_EXTRACT_PROCESSES="1",
        AGGREGATOR_LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


def cli(args: list[str], env: dict[str, str], feeds: Path | None = None,
        config: Path | None = None, timeout: float = 120, input: bytes | None = None
        ) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "aggregator.cli"]
    if config is not None:
        cmd += ["--config", str(config)]
    if feeds is not None:
        cmd += ["--feeds", str(feeds)]
    return subprocess.run(cmd + args, env=env, capture_output=True, timeout=timeout,
                          cwd=feeds.parent if feeds else None,
                          input=input.decode() if input else None, text=True)
