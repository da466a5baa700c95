"""Atomic file replacement, shared by the modules that write files (config, publish).

Like `models` and `errors`, this is a base module every stage may import: it holds no verb
of the pipeline, only the one correct way to replace a file that others read concurrently.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def write_atomic(
    path: Path | str,
    data: bytes,
    *,
    mtime: float | None = None,
    mode: int | None = 0o644,
    keep_mode: bool = False,
    skip_unchanged: bool = True,
) -> bool:
    """Replace ``path`` with ``data`` through a temporary file in the same directory (write,
    fsync, rename, fsync of the directory): readers see the old or the new file, never a mix,
    and a crash leaves one of the two.

    Returns False, writing nothing, when ``skip_unchanged`` and ``path`` already holds exactly
    ``data``. ``mtime`` (seconds since the epoch) is set on the new file. The new file gets
    ``mode`` (mkstemp's 0600 would hide published files from a web server), or the existing
    file's mode with ``keep_mode``.
    """
    path = Path(path)
    if skip_unchanged:
        try:
            if path.stat().st_size == len(data) and path.read_bytes() == data:
                return False
        except FileNotFoundError:
            pass
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if keep_mode and path.exists():
            os.chmod(tmp_name, stat.S_IMODE(path.stat().st_mode))
        elif mode is not None:
            os.chmod(tmp_name, mode)
        if mtime is not None:
            os.utime(tmp_name, (mtime, mtime))
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return True
