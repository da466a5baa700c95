"""The SQLite connection: opening, WAL and pragmas, transactions, migrations, the band
buffer's flushes, and the file's upkeep (checkpoints, vacuum, disk checks). The domain
parts (feeds, entries, stories, articles, reads, retention) build on it."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

from ..errors import StoreError
from . import schema
from .bands import BandBuffer, write_bands
from .schema import _register_functions
from .values import entry_uid

# Below this much free space beside the database, writes are about to fail.
MIN_FREE_BYTES = 1024 * 1024


class SQLiteBase:
    """One SQLite connection. Not shared across threads: open one per thread (readers) and
    use one for the writer."""

    def __init__(self, path: str | Path, *, readonly: bool = False, timeout: float = 30.0) -> None:
        self.path = str(path)
        self.readonly = readonly
        self._busy_ms = int(timeout * 1000)
        self._timeout = timeout
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            if readonly:
                conn = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, timeout=timeout,
                    check_same_thread=False,
                )
            else:
                conn = sqlite3.connect(self.path, timeout=timeout, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        # For the migration that gives existing stories the id they are published under.
        conn.create_function("aggregator_entry_uid", 2, entry_uid, deterministic=True)
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
        conn.isolation_level = None
        self.conn = conn
        self._lock = threading.RLock()
        # Band keys of entries inserted since the last flush_bands, seen by candidate
        # lookups alongside entry_bands.
        self.bands = BandBuffer()
        self._bands_ready = False
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            if not readonly:
                # A new database frees space page by page after a prune (incremental_vacuum):
                # the mode must be set before the first table, and before WAL mode writes the
                # header. An older database is switched by one VACUUM (`prune --vacuum`).
                if conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0:
                    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("PRAGMA foreign_keys = ON")
                # Keep the WAL bounded even when readers pin old snapshots for a while.
                conn.execute("PRAGMA wal_autocheckpoint = 1000")
                conn.execute("PRAGMA journal_size_limit = 67108864")
                # 16 MB of page cache (default 2 MB): index probes (entry_bands, url_norm,
                # text_hash) of a large store stay in memory instead of costing a read each.
                conn.execute("PRAGMA cache_size = -16384")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot configure database {self.path}: {exc}") from exc

    @cached_property
    def db(self) -> Any:
        """sqlite-utils' view of the same connection, for introspection (tables, views,
        columns): imported on first use, since the write path is plain SQL."""
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

    def describe(self) -> dict[str, list[str]]:
        """Every table and view with its columns (FTS5 shadow tables left out)."""
        db = self.db
        names = [n for n in db.table_names() if not n.startswith("entries_fts_")]
        return {
            **{n: [c.name for c in db[n].columns] for n in names},
            **{v: [c.name for c in db[v].columns] for v in db.view_names()},
        }

    # ----------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Close; a writer first folds the WAL back and truncates it, unless a reader still
        holds a snapshot (then it returns at once: never wait on readers)."""
        if not self.readonly:
            if self.bands:
                try:
                    self.flush_bands()
                except (sqlite3.Error, StoreError):
                    pass  # the keys are on the entries: the next writer indexes them
            try:
                self.conn.execute("PRAGMA busy_timeout = 0")
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
        self.conn.close()

    def migrate(self) -> list[str]:
        """Apply pending migrations in order; returns their names."""
        _register_functions(self.conn)
        with self.transaction():
            return schema.migrate(self.conn)

    def schema_version(self) -> int:
        return schema.schema_version(self.conn)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; rolled back on any error."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                self.bands.rollback()
                raise
            else:
                self.conn.execute("COMMIT")
                self.bands.commit()

    def checkpoint(self) -> bool:
        """Fold the WAL back into the database and truncate it, never waiting for readers:
        PASSIVE first, then TRUNCATE once every frame is copied. Returns whether the WAL was
        reset; False means a reader still holds a snapshot in it (the WAL cannot restart
        from its beginning until that reader ends its transaction)."""
        with self._lock:
            try:
                timeout = self.conn.execute("PRAGMA busy_timeout").fetchone()[0]
                self.conn.execute("PRAGMA busy_timeout = 0")
                try:
                    busy, frames, copied = self.conn.execute(
                        "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if busy or frames != copied:
                        return False
                    busy, _, _ = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                    return not busy
                finally:
                    self.conn.execute(f"PRAGMA busy_timeout = {int(timeout)}")
            except sqlite3.OperationalError:
                return False

    def integrity_check(self) -> str:
        return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])

    # ----------------------------------------------------------------------- band index

    def _ensure_bands(self, c: sqlite3.Connection) -> None:
        """Once per connection: index what an earlier process left unflushed (a crash, a
        kill -9). Runs inside the caller's transaction."""
        if not self._bands_ready:
            write_bands(c, self.bands)
            self._bands_ready = True

    @property
    def pending_bands(self) -> int:
        """Entries whose band keys wait in memory for flush_bands."""
        return len(self.bands)

    def flush_bands(self) -> int:
        """Write the band keys of entries not yet in entry_bands, in key order (each B-tree
        page is touched once per batch); returns the rows written."""
        with self.transaction() as c:
            written = write_bands(c, self.bands)
        self._bands_ready = True
        self.bands.clear()  # all on disk now
        return written

    # ----------------------------------------------------------------------- disk

    def size(self) -> int:
        """Bytes the database takes on disk: its file and its WAL."""
        if self.path == ":memory:":
            return 0
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += Path(self.path + suffix).stat().st_size
            except OSError:
                pass
        return total

    def page_size(self) -> int:
        return int(self.conn.execute("PRAGMA page_size").fetchone()[0])

    def auto_vacuum(self) -> str:
        mode = int(self.conn.execute("PRAGMA auto_vacuum").fetchone()[0])
        return {0: "none", 1: "full", 2: "incremental"}.get(mode, str(mode))

    def vacuum(self) -> None:
        """Rewrite the database (VACUUM) with auto_vacuum = INCREMENTAL: every free page is
        returned, and later prunes can return theirs with incremental_vacuum. Needs free disk
        space for a copy of the database; blocks other writers meanwhile (never readers)."""
        with self._lock:
            try:
                self.conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                self.conn.execute("VACUUM")
            except sqlite3.Error as exc:
                raise StoreError(f"VACUUM of {self.path} failed: {exc}") from exc
        self.fold_wal()

    def incremental_vacuum(self, max_pages: int | None = None) -> int:
        """Return up to ``max_pages`` free pages (all when None) to the file system; only a
        database in auto_vacuum = INCREMENTAL mode can. Returns the pages given back."""
        with self._lock:
            if self.auto_vacuum() != "incremental":
                return 0
            before = int(self.conn.execute("PRAGMA page_count").fetchone()[0])
            arg = "" if max_pages is None else f"({max(1, int(max_pages))})"
            # Each step of this pragma frees one page, and execute() steps a statement
            # without result columns once: executescript steps it to the end. (Autocommit
            # mode: executescript has no transaction of ours to commit first.)
            try:
                self.conn.executescript(f"PRAGMA incremental_vacuum{arg};")
            except sqlite3.Error as exc:
                raise StoreError(f"incremental vacuum of {self.path} failed: {exc}") from exc
            after = int(self.conn.execute("PRAGMA page_count").fetchone()[0])
        return before - after

    def fold_wal(self) -> None:
        """Checkpoint and truncate the WAL now, unless a reader holds a snapshot (then
        leave it to a later checkpoint: never wait on readers)."""
        with self._lock:
            try:
                self.conn.execute("PRAGMA busy_timeout = 0")
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error:
                pass
            finally:
                self.conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")

    def disk_usage(self) -> tuple[int, int]:
        """(database file bytes, WAL file bytes); 0 for a file that does not exist."""
        sizes = []
        for p in (self.path, self.path + "-wal"):
            try:
                sizes.append(os.stat(p).st_size if self.path != ":memory:" else 0)
            except OSError:
                sizes.append(0)
        return sizes[0], sizes[1]

    def write_problem(self, timeout: float = 2.0) -> str | None:
        """Why this connection could not write the database now, or None when it could.

        Checks what a write needs without writing anything: the files and their directory
        writable (a read-only file or mount, a file deleted under the daemon), some free
        space, and the write lock obtainable within ``timeout`` seconds (another process
        holding it longer blocks every write). Run it on the writer's thread: the lock
        check takes and releases the write lock."""
        if self.readonly:
            return f"{self.path}: opened read-only"
        if self.path != ":memory:":
            if not os.path.exists(self.path):
                return f"{self.path}: the database file is gone"
            for p in (self.path, self.path + "-wal", self.path + "-shm"):
                if os.path.exists(p) and not os.access(p, os.W_OK):
                    return f"{p}: not writable"
            folder = os.path.dirname(os.path.abspath(self.path))
            if not os.access(folder, os.W_OK | os.X_OK):
                return f"{folder}: directory not writable"
            try:
                st = os.statvfs(folder)
                if st.f_bavail * st.f_frsize < MIN_FREE_BYTES:
                    return f"{folder}: no space left ({st.f_bavail * st.f_frsize} bytes free)"
            except OSError:
                pass
        with self._lock:
            if self.conn.in_transaction:
                return None  # writing right now
            try:
                self.conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                return f"{self.path}: cannot take the write lock: {exc}"
            finally:
                try:
                    self.conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
                except sqlite3.Error:
                    pass
        return None
