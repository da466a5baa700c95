"""A `postgresql://` database setting: recognised, named in messages without its
password. No database driver here: importable by any module that names the database."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit


def is_postgres_url(database: str) -> bool:
    """Whether ``database`` names a PostgreSQL database rather than a SQLite file."""
    return database.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """The URL without its password (user:***@host)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def target(url: str) -> str:
    """host:port/database of a URL, as errors name it (libpq's defaults filled in)."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    try:
        port = parts.port or 5432
    except ValueError:
        port = 5432
    dbname = unquote(parts.path.lstrip("/")) or unquote(parts.username or "") or "postgres"
    return f"{host}:{port}/{dbname}"


def display_database(database: str) -> str:
    """The database setting as a log line or an error may show it: a SQLite path as it
    is, a URL without its password."""
    return redact(database) if is_postgres_url(database) else database
