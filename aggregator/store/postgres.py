"""The PostgreSQL connection: a `postgresql://` URL opened through a psycopg 3 pool, its
errors said without a password or a traceback, the database's encoding and LC_CTYPE
checked, and the ordered migrations of pg_schema applied under an advisory lock. The only
module of the project that imports psycopg.

PostgresStorage is the backend: this module's connection, transactions, migrations and
upkeep, with the data methods of pg_storage.PgDataMixin. The SQLite-specific upkeep of the
protocol has its PostgreSQL meaning here (docs/schema.md): checkpoint and fold_wal have no
log of ours to fold, vacuum is VACUUM FULL, incremental_vacuum a plain VACUUM,
optimize_search rebuilds the trigram indexes, disk_usage is (pg_database_size, 0)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import DatabaseUnreachable, StoreError
from .bands import BandBuffer
from .pg_gate import PgHostGate
from .pg_schema import PG_MIGRATIONS
from .pg_storage import PgDataMixin, row_factory
from .pg_url import redact, target

log = logging.getLogger(__name__)
# The pool warns at every failed connection attempt and every broken connection it drops:
# during an outage, a line every few seconds per pool. The outage is said once by whoever
# notices it (a worker's supervisor, a serve node's /readyz, a command's error).
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

# Taken by migrate() for its transaction (pg_advisory_xact_lock): processes that start at
# once apply the migrations one after the other. "aggregator" in ASCII.
MIGRATE_LOCK = 0x61676772_65676174

# The tables of this schema: a database holding other tables than these (and no
# schema_migrations of ours) belongs to another project.
OWN_TABLES = frozenset({
    "feeds", "stories", "entries", "entry_bands", "pages", "store_state", "output_ids",
    "pruned_keys", "entry_links", "documents", "host_politeness", "schema_migrations",
    "task_migrations",
})
# The task engine's own tables (procrastinate, in the same database: `aggregator worker`)
# all start with this; they are not another project's.
TASK_PREFIX = "procrastinate_"

CREATEDB_HINT = ("create one with: createdb -T template0 -E UTF8 --locale=C.UTF-8 NAME "
                 "(any UTF-8 locale of `locale -a` but C/POSIX)")


def _why(exc: BaseException, url: str) -> str:
    """refused / auth failed / database missing / ..., with the password cut out."""
    text = str(exc).strip()
    password = urlsplit(url).password
    if password:
        text = text.replace(password, "***").replace(unquote(password), "***")
    low = text.lower()
    if "connection refused" in low:
        why = "connection refused (is PostgreSQL running and listening there?)"
    elif "authentication failed" in low or "no password supplied" in low \
            or ("role" in low and "does not exist" in low):
        why = "authentication failed (user or password wrong; PGPASSWORD and .pgpass work too)"
    elif "does not exist" in low and "database" in low:
        why = f"database missing ({CREATEDB_HINT})"
    elif "could not translate host name" in low or "name or service not known" in low:
        why = "unknown host"
    elif "shutting down" in low or "terminating connection due to administrator" in low:
        why = "the server is shutting down"
    elif "starting up" in low or "in recovery mode" in low:
        why = "the server is starting up"
    elif "server closed the connection" in low or "connection is lost" in low \
            or "connection is closed" in low:
        why = "connection lost (the server closed it)"
    elif "timeout" in low or "timed out" in low:
        why = "no answer (timeout)"
    else:
        why = text.splitlines()[0] if text else type(exc).__name__
    return why


def connect_error(url: str, exc: BaseException) -> StoreError:
    return DatabaseUnreachable(
        f"cannot connect to PostgreSQL at {target(url)}: {_why(exc, url)}")


def is_connection_failure(exc: BaseException) -> bool:
    """Whether ``exc`` or one of its causes is the server gone (a refused or lost
    connection, an administrator shutdown, the pool out of connections): not a bug."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (DatabaseUnreachable, psycopg.OperationalError,
                            psycopg.InterfaceError)):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def describe_failure(url: str, exc: BaseException) -> str:
    """``host:port/db: why`` for a failure (its innermost cause's first line), the
    password cut out."""
    cur = exc
    while cur.__cause__ is not None:
        cur = cur.__cause__
    if isinstance(cur, DatabaseUnreachable):
        return str(cur).removeprefix("cannot connect to PostgreSQL at ")
    return f"{target(url)}: {_why(cur, url)}"


def database_problem(url: str, timeout: float = 5.0) -> str | None:
    """None when a connection to ``url`` works; else ``host:port/db: why``."""
    try:
        check_server(url, timeout)
    except DatabaseUnreachable as exc:
        return describe_failure(url, exc)
    return None


class PostgresBase:
    """A pool of connections to one PostgreSQL database."""

    def __init__(self, url: str, *, readonly: bool = False, timeout: float = 30.0,
                 max_size: int = 4) -> None:
        self.url = url
        self.path = redact(url)  # what logs and errors may show
        self.readonly = readonly
        self._timeout = timeout
        # One connection first, outside the pool: its failure (refused, auth, missing
        # database) is reported at once, not after the pool's retries until its timeout.
        try:
            probe = psycopg.connect(url, connect_timeout=max(1, int(min(timeout, 10))))
        except psycopg.Error as exc:
            raise connect_error(url, exc) from None
        probe.close()
        # Times come back in UTC; a reader's transactions cannot write. No JIT: a poll's
        # batched candidate lookup (pg_storage.prefetch_candidates) is costed high enough to
        # be compiled, which took 30-150 ms for a statement that runs in 5 (bench-scale);
        # none of the store's statements scans enough rows to gain from it.
        options = "-c TimeZone=UTC -c jit=off" + (" -c default_transaction_read_only=on"
                                        if readonly else "")
        kwargs: dict[str, Any] = {"autocommit": False, "row_factory": row_factory,
                                  "options": options}
        self.pool = ConnectionPool(url, min_size=1, max_size=max_size, kwargs=kwargs,
                                   timeout=timeout, open=False, name="aggregator")
        try:
            self.pool.open(wait=True, timeout=timeout)
        except PoolTimeout as exc:
            self.pool.close()
            raise connect_error(url, exc) from None
        self._lock = threading.RLock()
        self._current: Any = None  # the connection of the open transaction, if any
        # Called with the connection inside a write transaction that changed something
        # publishable (entries stored or edited, stories merged, an article's text): the
        # workers enqueue their publish job there, committed with the change or not at
        # all (tasks.Workers; the hook brings its own savepoint).
        self.write_hook: Callable[[Any], None] | None = None
        # Stays empty: PostgreSQL writes band keys in the entry's transaction (several
        # writers; pg_storage); kept for the shared code paths of the SQLite backend's.
        self.bands = BandBuffer()
        self._bands_ready = False
        # The largest entry id after which this process ANALYZEs the tables polls grow
        # (pg_storage.keep_statistics); None until its first poll with new entries.
        self._analyze_at: int | None = None

    # ----------------------------------------------------------------------- connections

    @contextmanager
    def _use(self) -> Iterator[Any]:
        """A connection for one transaction (committed at the end, rolled back on an
        error): the open transaction's when there is one, so nested reads share it."""
        if self._current is not None:
            yield self._current
            return
        try:
            with self.pool.connection() as conn:
                self._current = conn
                try:
                    yield conn
                finally:
                    self._current = None
        except psycopg.OperationalError as exc:
            raise connect_error(self.url, exc) from None

    @contextmanager
    def _tx(self, rollback: bool = False) -> Iterator[Any]:
        """One write transaction; ``rollback``: undone at the end (a dry run)."""
        with self._lock:
            try:
                with self._use() as c:
                    yield c
                    if rollback:
                        c.rollback()
            except BaseException:
                self.bands.rollback()
                raise
            self.bands.commit()

    def _query(self, sql: str, params: Any = None) -> list[Any]:
        with self._use() as c:
            return list(c.execute(sql, params).fetchall())

    @contextmanager
    def _autocommit(self) -> Iterator[Any]:
        """A connection outside any transaction (VACUUM, REINDEX CONCURRENTLY)."""
        try:
            with self.pool.connection() as conn:
                conn.autocommit = True
                try:
                    yield conn
                finally:
                    conn.autocommit = False
        except psycopg.OperationalError as exc:
            raise connect_error(self.url, exc) from None
        except psycopg.Error as exc:
            raise StoreError(f"{target(self.url)}: {_why(exc, self.url)}") from None

    def drop_broken_connections(self) -> None:
        """Test the pool's idle connections, replacing those the server dropped (after an
        outage: the next transaction then does not fail on one of them)."""
        self.pool.check()

    def host_gate(self, limit: int, delay: float) -> PgHostGate:
        """Per-host politeness shared with every worker of this database (pg_gate), on a
        connection of its own: its session advisory locks are the slots in flight."""
        # synchronous_commit off: a reservation or Retry-After lost in a crash costs nothing
        # worth a disk flush per request (it was ~7 ms of each request's wait here).
        def connect() -> Any:
            try:
                return psycopg.connect(self.url, autocommit=True,
                                       options="-c TimeZone=UTC -c synchronous_commit=off",
                                       connect_timeout=max(1, int(min(self._timeout, 10))))
            except psycopg.Error as exc:
                raise connect_error(self.url, exc) from None
        return PgHostGate(connect, limit, delay)

    # ----------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Index the band keys still in memory (a writer), then close the pool."""
        if not self.readonly and self.bands:
            try:
                self.flush_bands()  # type: ignore[attr-defined]
            except (psycopg.Error, StoreError):
                pass  # the keys are on the entries: the next writer indexes them
        self.pool.close()

    def locale_problem(self) -> str | None:
        """Why this database cannot search every script (not UTF-8, or LC_CTYPE C/POSIX:
        pg_trgm then builds no trigram from Armenian, Georgian or Cyrillic), or None."""
        encoding, ctype = self._query(
            "SELECT pg_encoding_to_char(encoding), datctype FROM pg_database "
            "WHERE datname = current_database()")[0]
        name = target(self.url)
        if encoding != "UTF8":
            return f"database {name} has encoding {encoding}, not UTF8; {CREATEDB_HINT}"
        if ctype in ("C", "POSIX"):
            return (f"database {name} has LC_CTYPE {ctype}: search would find no Armenian, "
                    f"Georgian or Cyrillic text; {CREATEDB_HINT}")
        return None

    def _tables(self, conn: psycopg.Connection[Any]) -> set[str]:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'").fetchall()
        return {r[0] for r in rows if not r[0].startswith(TASK_PREFIX)}

    def _check_owner(self, conn: psycopg.Connection[Any]) -> int:
        """The applied version; StoreError for another project's tables or a schema newer
        than this code."""
        tables = self._tables(conn)
        name = target(self.url)
        if "schema_migrations" not in tables:
            if tables:
                raise StoreError(
                    f"database {name} holds another project's tables ({', '.join(sorted(tables)[:5])}) "
                    "and no aggregator schema: refusing to use it; give the aggregator a "
                    "database of its own")
            return 0
        foreign = tables - OWN_TABLES
        cols = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'schema_migrations'")}
        if not {"version", "name", "applied"} <= cols:
            raise StoreError(
                f"database {name} has a schema_migrations table that is not the "
                "aggregator's: refusing to use it")
        applied = dict(conn.execute("SELECT version, name FROM schema_migrations").fetchall())
        version = max(applied, default=0)
        ours = dict(enumerate((n for n, _ in PG_MIGRATIONS), start=1))
        strangers = [f"{v} {n!r}" for v, n in sorted(applied.items())
                     if v in ours and ours[v] != n]
        if strangers or (foreign and not applied):
            raise StoreError(
                f"database {name} holds another project's schema (migrations "
                f"{', '.join(strangers[:3]) or 'none'}; tables "
                f"{', '.join(sorted(foreign)[:5])}): refusing to use it")
        if version > len(PG_MIGRATIONS):
            raise StoreError(
                f"database {name} has schema version {version}, newer than this code's "
                f"{len(PG_MIGRATIONS)}: upgrade the aggregator (nothing was changed)")
        return int(version)

    def migrate(self) -> list[str]:
        """Apply pending migrations in order, in one transaction under an advisory lock
        (several processes starting at once apply them once); returns their names."""
        if self.readonly and self.schema_version() == len(PG_MIGRATIONS):
            return []
        if self.readonly:
            raise StoreError(f"database {target(self.url)} was opened read-only")
        problem = self.locale_problem()
        if problem:
            raise StoreError(problem)
        applied: list[str] = []
        try:
            with self._lock, self.pool.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
                version = self._check_owner(conn)
                if version == 0:
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER "
                        "PRIMARY KEY, name TEXT NOT NULL, applied TIMESTAMPTZ NOT NULL)")
                for number, (name, sql) in enumerate(PG_MIGRATIONS, start=1):
                    if number <= version:
                        continue
                    if sql.strip():
                        conn.execute(sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations(version, name, applied) "
                        "VALUES (%s, %s, %s)", (number, name, datetime.now(UTC)))
                    applied.append(name)
        except psycopg.OperationalError as exc:
            raise connect_error(self.url, exc) from None
        except psycopg.Error as exc:
            raise StoreError(f"migrating {target(self.url)} failed: "
                             f"{_why(exc, self.url)}") from None
        if applied:
            log.info("migrated %s: %s", target(self.url), "; ".join(applied))
        return applied

    def migrate_tasks(self, schema: str, migrations: Sequence[tuple[str, str]]) -> list[str]:
        """Create or upgrade the task engine's schema (procrastinate's ``schema``, then
        those of its versioned ``migrations`` not yet recorded in task_migrations, by name
        in order), in one transaction under migrate()'s advisory lock. A fresh schema is
        the current one: every migration is recorded as applied. Returns what was applied
        (the schema as "procrastinate schema"). Call after migrate()."""
        if self.readonly:
            raise StoreError(f"database {target(self.url)} was opened read-only")
        applied: list[str] = []
        try:
            with self._lock, self.pool.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
                done = {r[0] for r in conn.execute("SELECT name FROM task_migrations")}
                row = conn.execute(
                    "SELECT to_regclass('procrastinate_jobs') IS NULL").fetchone()
                fresh = bool(row and row[0])
                if fresh:
                    conn.execute(schema.encode())
                    applied.append("procrastinate schema")
                now = datetime.now(UTC)
                for name, sql in migrations:
                    if name in done:
                        continue
                    if not fresh:
                        conn.execute(sql.encode())
                        applied.append(name)
                    conn.execute("INSERT INTO task_migrations(name, applied) VALUES (%s, %s)",
                                 (name, now))
        except psycopg.OperationalError as exc:
            raise connect_error(self.url, exc) from None
        except psycopg.Error as exc:
            raise StoreError(f"migrating the task schema of {target(self.url)} failed: "
                             f"{_why(exc, self.url)}") from None
        if applied:
            log.info("migrated %s: %s", target(self.url), "; ".join(applied))
        return applied

    def schema_version(self) -> int:
        with self._use() as conn:
            return self._check_owner(conn)

    def describe(self) -> dict[str, list[str]]:
        """Every table and view of the schema with its columns, in column order."""
        rows = self._query(
            "SELECT c.table_name, c.column_name FROM information_schema.columns c "
            "JOIN information_schema.tables t ON t.table_name = c.table_name "
            " AND t.table_schema = c.table_schema "
            "WHERE c.table_schema = current_schema() ORDER BY c.table_name, c.ordinal_position")
        out: dict[str, list[str]] = {}
        for table, column in rows:
            if not table.startswith(TASK_PREFIX):  # the task engine's, documented as such
                out.setdefault(table, []).append(column)
        return out

    def column_types(self, relation: str) -> dict[str, str]:
        """A table's or view's columns with their PostgreSQL types (docs/schema.md)."""
        return {r[0]: r[1] for r in self._query(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s "
            "ORDER BY ordinal_position", (relation,))}

    def indexes(self) -> dict[str, str]:
        """Index name to its definition."""
        return {r[0]: r[1] for r in self._query(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()")}

    def integrity_check(self) -> str:
        """"ok" when every index is valid (PostgreSQL checks pages itself; an index left
        invalid by a failed concurrent build is the damage worth naming)."""
        bad = self._query(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND NOT i.indisvalid")
        return "ok" if not bad else "invalid indexes: " + ", ".join(r[0] for r in bad)

    def size(self) -> int:
        """pg_database_size: bytes the whole database takes."""
        return int(self._query("SELECT pg_database_size(current_database())")[0][0])

    def disk_usage(self) -> tuple[int, int]:
        """(database bytes, 0): the server's WAL is shared by all its databases and
        recycled by the server, not this store's to count."""
        return self.size(), 0

    def checkpoint(self) -> bool:
        """True: the server folds its own write-ahead log; this store has none to fold."""
        return True

    def fold_wal(self) -> None:
        """Nothing to do: the server manages its write-ahead log (see checkpoint)."""

    def page_size(self) -> int:
        return int(self._query("SELECT current_setting('block_size')::int")[0][0])

    def auto_vacuum(self) -> str:
        """"incremental": incremental_vacuum (a plain VACUUM) gives a PostgreSQL store's
        free pages back whenever it is called, whatever the server's autovacuum setting;
        no store of this backend needs the one-time VACUUM an old SQLite file does."""
        return "incremental"

    def _own_tables(self, c: Any) -> list[str]:
        return [r[0] for r in c.execute(
            "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = current_schema()"
            " ORDER BY tablename").fetchall()]

    def vacuum(self) -> None:
        """VACUUM FULL of the store's tables: rewritten compactly, every free page given
        back (takes an exclusive lock on each table while it is rewritten)."""
        with self._lock, self._autocommit() as c:
            for table in self._own_tables(c):
                c.execute(f"VACUUM (FULL, ANALYZE) {table}".encode())

    def incremental_vacuum(self, max_pages: int | None = None) -> int:
        """A plain VACUUM of the store's tables (no exclusive lock): dead rows' space is
        reusable, and empty pages at each table's end go back to the file system. Returns
        the pages given back (of the tables' and indexes' main data; VACUUM's own free
        space and visibility maps may grow); ``max_pages`` cannot bound a VACUUM and is not
        used."""
        with self._lock, self._autocommit() as c:
            before = _main_pages(c)
            for table in self._own_tables(c):
                c.execute(f"VACUUM {table}".encode())
            return max(0, before - _main_pages(c))

    def optimize_search(self, max_pages: int | None = None, garbage: float = 0.1) -> int:
        """Rebuild the trigram indexes (REINDEX CONCURRENTLY: writers go on) once entries
        were pruned since the last rebuild: a GIN index keeps the pages deleted rows held.
        With ``max_pages`` the rebuild waits until pruned entries are a ``garbage`` share
        (PostgreSQL cannot rebuild an index in steps). Returns the pages freed."""
        with self._lock, self._use() as c:
            row = c.execute("SELECT value FROM store_state WHERE name = 'search_pruned'"
                            ).fetchone()
            pruned = int(row[0]) if row else 0
            kept = int(c.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
        if not pruned or (max_pages is not None and pruned < garbage * (kept + pruned)):
            return 0
        indexes = ("entries_title_trgm", "entries_text_trgm")
        size = "SELECT SUM(pg_relation_size(quote_ident(i)::regclass)) FROM unnest(%s::text[]) i"
        with self._lock, self._autocommit() as c:
            before = int(c.execute(size, (list(indexes),)).fetchone()[0])
            for index in indexes:
                c.execute(f"REINDEX INDEX CONCURRENTLY {index}".encode())
            after = int(c.execute(size, (list(indexes),)).fetchone()[0])
            block = int(c.execute("SELECT current_setting('block_size')::int").fetchone()[0])
            c.execute("UPDATE store_state SET value = 0 WHERE name = 'search_pruned'")
        return max(0, before - after) // block

    def write_problem(self, timeout: float = 2.0) -> str | None:
        """Why a write would fail now: opened read-only, the server unreachable, in
        recovery (a standby) or read-only, or the feeds table locked elsewhere past
        ``timeout``; None when a write would go through. Writes nothing."""
        name = target(self.url)
        if self.readonly:
            return f"{name}: opened read-only"
        if self._current is not None:
            return None  # writing right now
        try:
            with self._lock, self.pool.connection(timeout=timeout) as conn:
                if (conn.execute("SELECT pg_is_in_recovery()").fetchone() or (False,))[0]:
                    return f"{name}: the server is a standby in recovery (read-only)"
                if (conn.execute("SHOW transaction_read_only").fetchone() or ("",))[0] == "on":
                    return f"{name}: transactions are read-only"
                conn.execute(f"SET LOCAL lock_timeout = {max(1, int(timeout * 1000))}")
                conn.execute("LOCK TABLE feeds, entries IN ROW EXCLUSIVE MODE")
                conn.rollback()
        except PoolTimeout:
            return f"{name}: no connection within {timeout:g}s"
        except psycopg.Error as exc:
            return f"{name}: {_why(exc, self.url)}"
        return None


def _main_pages(c: Any) -> int:
    """Pages of the main data of the store's tables and indexes (TOAST included)."""
    return int(c.execute(
        "SELECT COALESCE(SUM(pg_relation_size(c.oid, 'main')), 0)"
        " / current_setting('block_size')::int FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE (n.nspname = current_schema() AND c.relkind IN ('r', 'i'))"
        " OR c.oid IN (SELECT reltoastrelid FROM pg_class x JOIN pg_namespace y"
        "  ON y.oid = x.relnamespace WHERE y.nspname = current_schema())"
        " OR c.oid IN (SELECT i.indexrelid FROM pg_index i JOIN pg_class x"
        "  ON x.oid = i.indrelid WHERE x.oid IN (SELECT reltoastrelid FROM pg_class z"
        "  JOIN pg_namespace w ON w.oid = z.relnamespace"
        "  WHERE w.nspname = current_schema()))").fetchone()[0])


class PostgresStorage(PgDataMixin, PostgresBase):  # type: ignore[misc]
    """All reads and writes of one PostgreSQL database, through a small pool. Like the
    SQLite backend, one instance is used by one thread at a time."""

    # Two writers' poll transactions overlap: one's inserts while the other waits on the
    # server or holds STORY_LOCK. A third added 3% (bench-scale, 1,500 feeds, one worker:
    # 21.2 against 20.7 feeds/s, two runs each): the worker's Python work bounds it next.
    parallel_writers = 2


def check_database(url: str, timeout: float = 10.0) -> str:
    """`aggregator check` on a PostgreSQL URL: reachable, UTF-8 with a usable LC_CTYPE, and
    a schema of ours no newer than this code. A line to print; StoreError otherwise."""
    db = PostgresBase(url, readonly=True, timeout=timeout)
    try:
        problem = db.locale_problem()
        if problem:
            raise StoreError(problem)
        version = db.schema_version()
    finally:
        db.close()
    state = ("empty: `aggregator migrate` creates the schema" if version == 0 else
             f"schema version {version} of {len(PG_MIGRATIONS)}")
    return f"database {target(url)}: {state}"


def migrate_database(url: str, timeout: float = 30.0,
                     tasks: tuple[str, Sequence[tuple[str, str]]] | None = None) -> list[str]:
    """The store's migrations, then with ``tasks`` (schema, migrations) the task
    engine's (PostgresBase.migrate_tasks)."""
    db = PostgresBase(url, timeout=timeout)
    try:
        applied = db.migrate()
        if tasks is not None:
            applied += db.migrate_tasks(*tasks)
        return applied
    finally:
        db.close()


def _admin(url: str, sql: str) -> None:
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.encode())
    except psycopg.OperationalError as exc:
        raise connect_error(url, exc) from None
    except psycopg.Error as exc:
        raise StoreError(f"{target(url)}: {_why(exc, url)}") from None


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def create_database(url: str, name: str, *, locale: str = "C.UTF-8") -> str:
    """Create database ``name`` on the server of ``url`` (UTF-8, ``locale``, from
    template0, as CREATEDB_HINT says); returns the new database's URL."""
    _admin(url, f"CREATE DATABASE {_quote_ident(name)} TEMPLATE template0 ENCODING 'UTF8' "
                f"LOCALE '{locale.replace(chr(39), '')}'")
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def drop_database(url: str, name: str) -> None:
    """Drop database ``name`` on the server of ``url``, its sessions ended first."""
    _admin(url, f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")


def check_server(url: str, timeout: float = 5.0) -> None:
    """StoreError (host, port, database and why) unless a connection to ``url`` works."""
    try:
        psycopg.connect(url, connect_timeout=max(1, int(timeout))).close()
    except psycopg.Error as exc:
        raise connect_error(url, exc) from None


class PgCopySide:
    """A PostgreSQL store's hooks for copy-store (store.copy.CopySide): one connection of
    the pool held from the snapshot or write transaction to its end; rows written with
    COPY; identity sequences set past the copied ids; errors said without a password."""

    kind = "postgres"

    def __init__(self, store: PostgresBase) -> None:
        self.store = store
        self.name = store.path  # redacted
        self._conn: Any = None

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self.store.pool.getconn()
        return self._conn

    def _error(self, exc: BaseException, doing: str = "") -> StoreError:
        url = self.store.url
        return StoreError(f"{target(url)}: {doing}{_why(exc, url)}")

    def _run(self, sql: str, params: Any = None) -> Any:
        try:
            return self._connection().execute(sql.encode(), params)
        except psycopg.Error as exc:
            raise self._error(exc) from None

    def columns(self, table: str) -> dict[str, str]:
        try:
            return self.store.column_types(table)
        except psycopg.Error as exc:
            raise self._error(exc) from None

    def begin_read(self) -> None:
        self._run("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")

    def batches(self, table: str, columns: Sequence[str], order: str,
                size: int) -> Iterator[list[tuple[Any, ...]]]:
        try:
            with self._connection().cursor(name=f"aggregator_copy_{table}") as cur:
                cur.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}"
                            .encode())
                while rows := cur.fetchmany(size):
                    yield [tuple(r) for r in rows]
        except psycopg.Error as exc:
            raise self._error(exc, f"reading {table}: ") from None

    def begin_write(self) -> None:
        from .copy import TABLES

        # Other writers wait until the copy commits or rolls back (readers do not).
        self._run(f"LOCK TABLE {', '.join(t for t, _, _ in TABLES)} "
                  "IN SHARE ROW EXCLUSIVE MODE")

    def write(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        try:
            with self._connection().cursor() as cur, cur.copy(
                    f"COPY {table} ({', '.join(columns)}) FROM STDIN".encode()) as copy:
                for row in rows:
                    copy.write_row(row)
        except psycopg.Error as exc:
            raise self._error(exc, f"writing {table}: ") from None

    def delete_all(self, table: str) -> None:
        self._run(f"DELETE FROM {table}")

    def stats(self, table: str, id_sum: str) -> tuple[int, int]:
        count, total = self._run(f"SELECT COUNT(*), SUM({id_sum}) FROM {table}").fetchone()
        return int(count), int(total or 0)

    def finish_write(self) -> None:
        """Each identity sequence continues after the largest copied id (COPY with explicit
        ids leaves it at 1); ANALYZE so that the first queries are planned on the real
        sizes (the trigram indexes were filled by the COPY itself)."""
        from .copy import ID_TABLES, TABLES

        for table in ID_TABLES:
            self._run(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                      f"COALESCE(MAX(id), 0) + 1, false) FROM {table}")
        for table, _, _ in TABLES:
            self._run(f"ANALYZE {table}")

    def _release(self) -> None:
        if self._conn is not None:
            self.store.pool.putconn(self._conn)
            self._conn = None

    def commit(self) -> None:
        try:
            if self._conn is not None:
                self._conn.commit()
        except psycopg.Error as exc:
            raise self._error(exc, "commit: ") from None
        finally:
            self._release()

    def rollback(self) -> None:
        try:
            if self._conn is not None:
                self._conn.rollback()
        except psycopg.Error:
            pass  # the connection is gone: so is its transaction
        finally:
            self._release()
