"""A PostgreSQL server of a test's own: ``initdb`` into a temporary directory, started on a
free port, stopped and started again at will. The shared server (AGGREGATOR_TEST_POSTGRES) is
never restarted by a test. PostgreSQL refuses to run as root: as root, the cluster belongs to
the unprivileged user ``nobody`` and its commands run through ``setpriv``."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .util import free_port

UNPRIVILEGED = "nobody"


TOOLS = ("initdb", "pg_ctl", "pg_isready")


def pg_bindir() -> Path | None:
    """Where initdb, pg_ctl and pg_isready are, together (Debian keeps them out of PATH;
    a machine may have copied only some into PATH), or None."""
    found = shutil.which("initdb")
    dirs = [Path(found).resolve().parent] if found else []
    dirs += [Path(p).parent for p in sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True,
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)]
    for d in dirs:
        if all((d / tool).exists() for tool in TOOLS):
            return d
    return None


class PrivateCluster:
    """initdb + pg_ctl on 127.0.0.1:<free port>, trust auth for ``postgres``."""

    def __init__(self) -> None:
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError("initdb not found (PostgreSQL server binaries)")
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="aggpg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam(UNPRIVILEGED)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                        "--clear-groups", "--"]
        self._run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                   "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                       "max_connections = 60\n")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run(self._as + argv, capture_output=True, text=True, timeout=120,
                              cwd=self.root)
        if done.returncode:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr[-2000:]}"
                               f"{done.stdout[-2000:]}")

    def start(self) -> None:
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                   "-w", "-t", "60", "start"])

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate``: as a crash would, no shutdown checkpoint)."""
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                   "-t", "60", "stop"])

    def running(self) -> bool:
        done = subprocess.run(self._as + [str(self.bindir / "pg_ctl"), "-D", str(self.data),
                                          "status"], capture_output=True, cwd=self.root)
        return done.returncode == 0

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = subprocess.run([str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1",
                                   "-p", str(self.port)], capture_output=True)
            if done.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"private PostgreSQL on port {self.port} not ready in {timeout} s")

    def destroy(self) -> None:
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
