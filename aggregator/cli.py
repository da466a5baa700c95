"""Command line: `aggregator [--config FILE] [--feeds FILE] COMMAND`.

Command and option names are a contract with operators' scripts: keep them stable.
Exit codes: 0 success; 1 the command could not do its work; 2 invalid configuration or usage.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import __version__
from .config import (
    add_feeds,
    check_report,
    export_opml,
    load_config,
    read_opml,
    shared_store_problem,
)
from .errors import AggregatorError, ConfigError
from .models import Config

if TYPE_CHECKING:  # the store is imported when a command needs it
    from .store import Storage

DEFAULT_CONFIG = "config/aggregator.yaml"
DEFAULT_FEEDS = "feeds.yaml"


class Ctx:
    def __init__(self, config_path: str | None, feeds_path: str | None) -> None:
        self.config_path = config_path
        self.feeds_path = feeds_path

    def load(self, *, node: bool = False) -> Config:
        """The configuration; ``node``: a long-running role (run, serve, worker), which
        refuses a PostgreSQL store without base_url (every node must publish the same
        links), as `check` does."""
        try:
            config = load_config(self.config_path, self.feeds_path, cached=True)
        except ConfigError as exc:
            for p in exc.problems:
                click.echo(str(p), err=True)
            raise SystemExit(2) from exc
        if node and (problem := shared_store_problem(config.settings)):
            click.echo(f"error: {problem}", err=True)
            raise SystemExit(2)
        _setup_logging(config.settings.log_level, config.settings.log_format)
        return config


# LogRecord's own attributes: everything else on a record came from `extra=` (feed, url,
# kind, output, path, ...) and becomes a field of its JSON line.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, then the
    structured fields passed with `extra=`, and the traceback as `exception` if any. A
    message never spans lines, so journald and log shippers keep each record whole."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and not key.startswith("_") and key not in doc:
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


# Third-party loggers that speak once per scheduled job (every few seconds on an idle
# daemon): kept to warnings unless the operator asks for DEBUG.
_CHATTY_LOGGERS = ("apscheduler.executors.default", "apscheduler.scheduler", "procrastinate")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (click's test runner swaps it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def _setup_logging(level: str, fmt: str = "text") -> None:
    """One handler on stderr for the process, in the configured format. Like
    logging.basicConfig, it leaves alone a process whose logging someone else configured
    (an embedding program, pytest), except for the third-party loggers kept quiet."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if numeric <= logging.DEBUG
                                         else max(numeric, logging.WARNING))
    root = logging.getLogger()
    if any(not isinstance(h, _StderrHandler) for h in root.handlers):
        return
    handler = _StderrHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for old in root.handlers[:]:  # ours from an earlier call: the format may have changed
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)


def _default(path: str, env: str) -> str | None:
    value = os.environ.get(env)
    if value:
        return value
    return path if Path(path).exists() else None


@click.group()
@click.version_option(__version__, prog_name="aggregator")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help=f"Settings file (default: {DEFAULT_CONFIG} if present; "
                   "env AGGREGATOR_CONFIG).")
@click.option("--feeds", "feeds_path", type=click.Path(dir_okay=False),
              help=f"Feed list (default: {DEFAULT_FEEDS}; env AGGREGATOR_FEEDS).")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, feeds_path: str | None) -> None:
    """Regional news aggregator: polls feeds, extracts articles, clusters stories and
    republishes filtered feeds."""
    ctx.obj = Ctx(
        config_path or _default(DEFAULT_CONFIG, "AGGREGATOR_CONFIG"),
        feeds_path or _default(DEFAULT_FEEDS, "AGGREGATOR_FEEDS") or DEFAULT_FEEDS,
    )


# --------------------------------------------------------------------------- check


@main.command()
@click.pass_obj
def check(obj: Ctx) -> None:
    """Validate settings and feeds.yaml; print every problem as file:line:col: message."""
    problems, warnings = check_report(obj.config_path, obj.feeds_path)
    for p in problems:
        click.echo(str(p))
    for warning in warnings:  # the exit code stays that of the problems
        click.echo(f"warning: {warning}")
    if problems:
        click.echo(f"{len(problems)} problem(s) found", err=True)
        raise SystemExit(2)
    config = load_config(obj.config_path, obj.feeds_path)
    from .store import check_database

    try:
        line = check_database(config.settings.database)
    except AggregatorError as exc:
        click.echo(f"database: {exc}")
        raise SystemExit(1) from None
    if line:
        click.echo(line)
    click.echo(f"ok: {len(config.feeds)} feeds, {len(config.outputs)} outputs")


@main.command()
@click.pass_obj
def migrate(obj: Ctx) -> None:
    """Create or upgrade the database's schema (a SQLite path or a postgresql:// URL);
    safe to run from several processes at once."""
    from .store import is_postgres_url, migrate_database

    config = obj.load()
    try:
        if is_postgres_url(config.settings.database):
            from .tasks import migrate as migrate_with_tasks  # the workers' queue too

            applied = migrate_with_tasks(config.settings.database)
        else:
            applied = migrate_database(config.settings.database)
    except AggregatorError as exc:
        raise click.ClickException(str(exc)) from None
    for name in applied:
        click.echo(f"applied: {name}")
    click.echo("schema up to date" if not applied else f"{len(applied)} migration(s) applied")


@main.command("copy-store")
@click.argument("target")
@click.option("--batch", default=2000, show_default=True, type=click.IntRange(1),
              help="Rows read and written per batch.")
@click.pass_obj
def copy_store_cmd(obj: Ctx, target: str, batch: int) -> None:
    """Copy the whole store (feeds' state, entries, articles, stories, band index) from the
    configured database into TARGET, an empty SQLite path or postgresql:// URL (migrated
    first), then compare the row counts of every table: how a store moves to PostgreSQL
    (or back). Exits 1 and commits nothing when a count differs."""
    from .store import display_database
    from .store.copy import copy_store

    config = obj.load()
    source = config.settings.database
    click.echo(f"copying {display_database(source)} to {display_database(target)}",
               err=True)
    tty = sys.stderr.isatty()
    bar: Any = None
    done = shown = 0
    current = ""

    def progress(table: str, rows: int, total: int) -> None:
        nonlocal bar, done, shown, current
        done += rows
        if tty:
            if bar is None:
                bar = click.progressbar(length=max(total, 1), label="copying",
                                        file=sys.stderr, show_pos=True)
                bar.__enter__()
            bar.label = f"copying {table:<12}"
            bar.update(rows)
            if done >= total:  # closed before the lines that follow
                bar.__exit__(None, None, None)
                bar = None
            return
        # Plain lines for logs and pipes: one per table change, and every 10%.
        step = max(total // 10, 1)
        if table != current or done - shown >= step or done == total:
            current, shown = table, done
            click.echo(f"copying {table}: {done}/{total} rows", err=True)

    try:
        report = copy_store(source, target, batch=batch, progress=progress)
    except AggregatorError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    for t in report.tables:
        mark = "ok" if t.ok else "MISMATCH"
        click.echo(f"{t.table:<12} {t.source_rows:>10} -> {t.target_rows:<10} {mark}")
    if not report.ok:
        click.echo(f"copy-store: the counts differ; nothing was committed to "
                   f"{report.target}", err=True)
        raise SystemExit(1)
    rows = sum(t.target_rows for t in report.tables)
    click.echo(f"copied {rows} rows in {report.seconds:.1f}s to {report.target}; "
               "counts verified")


# --------------------------------------------------------------------------- update / publish


@main.command()
@click.option("--all", "all_feeds", is_flag=True, help="Poll every feed, not only those due.")
@click.option("--feed", "names", multiple=True, help="Poll only this feed (repeatable).")
@click.option("--no-articles", is_flag=True, help="Skip the full-text backlog this time.")
@click.pass_obj
def update(obj: Ctx, all_feeds: bool, names: tuple[str, ...], no_articles: bool) -> None:
    """One poll cycle now over the feeds that are due, then publish."""
    from .pipeline import FeedOutcome, Pipeline

    config = obj.load()
    unknown = set(names) - {f.name for f in config.feeds}
    if unknown:
        raise click.UsageError(f"unknown feed(s): {', '.join(sorted(unknown))}")
    try:
        pipeline = Pipeline(config)
    except AggregatorError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from exc
    tty = sys.stdout.isatty()
    bar: Any = None
    failed = 0

    def on_start(n: int) -> None:
        nonlocal bar
        if tty:
            bar = click.progressbar(length=n, label="polling", show_pos=True)
            bar.__enter__()

    def on_done(o: FeedOutcome) -> None:
        nonlocal failed
        failed += o.status in ("error", "gone")
        if bar is not None:
            bar.update(1)
        else:
            click.echo(o.line())

    try:
        report = pipeline.run_cycle(all_feeds=all_feeds, names=names or None,
                                    on_start=on_start, on_done=on_done,
                                    articles=not no_articles)
    except AggregatorError as exc:
        click.echo(f"error: cycle could not run: {exc}", err=True)
        raise SystemExit(1) from exc
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
        pipeline.close()
    new = sum(o.new for o in report.feeds)
    retrying = f" ({report.articles_retrying} to retry)" if report.articles_retrying else ""
    click.echo(
        f"{len(report.feeds)} feeds polled, {failed} failed, {new} new entries, "
        f"{report.articles_done} articles extracted, {report.articles_failed} failed{retrying}, "
        f"{len(report.published)} files published"
    )
    _exit_if_publish_failed(pipeline)


def _exit_if_publish_failed(pipeline: Any) -> None:
    # Each file that could not be written was logged with its path and reason.
    if pipeline.publish_retry_in() is not None:
        click.echo("error: some files could not be published (see the log above)", err=True)
        raise SystemExit(1)


@main.command()
@click.pass_obj
def publish(obj: Ctx) -> None:
    """Render the published feeds now from the database."""
    from .pipeline import Pipeline

    config = obj.load()
    pipeline = Pipeline(config)
    try:
        written = pipeline.publish()
    finally:
        pipeline.close()
    if pipeline.documents_in_store:
        click.echo(f"{len(written)} documents written to the database")
    else:
        click.echo(f"{len(written)} files written to {config.settings.output_dir}")
    _exit_if_publish_failed(pipeline)


@main.command()
@click.pass_obj
def run(obj: Ctx) -> None:
    """Run the daemon: scheduler, HTTP server, signals (SIGTERM stops, SIGHUP reloads)."""
    from .daemon import Daemon

    config = obj.load(node=True)
    daemon = Daemon(config, config_path=obj.config_path, feeds_path=obj.feeds_path)
    code = daemon.run()
    # The writer has finished its transaction and the database is closed; fetches still in
    # flight are abandoned rather than waited for (SIGTERM must exit within seconds).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@main.command()
@click.pass_obj
def serve(obj: Ctx) -> None:
    """The HTTP server alone on `listen`: outputs, /status, /status.json, /metrics, /healthz,
    /readyz. On PostgreSQL it serves the documents publish stored in the database (any
    number of serve nodes give the same bytes and ETags); on SQLite, output_dir's files,
    read-only, beside a `run` or `update` that publishes them. SIGTERM stops, SIGHUP
    reloads the configuration."""
    from .daemon import ServeNode

    config = obj.load(node=True)
    node = ServeNode(config, config_path=obj.config_path, feeds_path=obj.feeds_path)
    try:
        code = node.run()
    except AggregatorError as exc:
        raise click.ClickException(str(exc)) from None
    logging.shutdown()
    sys.exit(code)


@main.command()
@click.option("--concurrency", type=click.IntRange(1), default=None,
              help="Jobs run at once (default: the worker_concurrency setting, else workers).")
@click.pass_obj
def worker(obj: Ctx, concurrency: int | None) -> None:
    """Run a worker (PostgreSQL only): polls feeds, extracts articles and publishes, with any
    number of others on any machines that reach the database. SIGTERM drains in-flight
    jobs within shutdown_timeout."""
    from .store import display_database, is_postgres_url

    config = obj.load(node=True)
    if not is_postgres_url(config.settings.database):
        click.echo(f"error: workers need a postgresql:// database (database is "
                   f"{display_database(config.settings.database)}); on SQLite, "
                   "`aggregator run` does all the work in one process", err=True)
        raise SystemExit(2)
    from .tasks import run_worker

    try:
        code = run_worker(config, concurrency=concurrency)
    except AggregatorError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
    # As `run`: pools and fetch threads are not waited for once the jobs are done.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# --------------------------------------------------------------------------- reading


def _open_store(config: Config) -> Storage:
    from .store import is_postgres_url, open_storage

    path = config.settings.database
    if not is_postgres_url(path) and not Path(path).exists():
        raise click.ClickException(f"no database at {path}: run `aggregator update` first")
    store = open_storage(path)
    store.migrate()
    return store


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status(obj: Ctx, as_json: bool) -> None:
    """Per-feed health: last attempt and success, HTTP status, errors, next poll, entries."""
    config = obj.load()
    store = _open_store(config)
    try:
        rows = store.feed_health()
        backlog = store.backlog_size()
        retrying = store.backlog_retrying()
        db_bytes, wal_bytes = store.disk_usage()
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({"feeds": rows, "backlog": backlog,
                               "backlog_retrying": retrying, "database_bytes": db_bytes,
                               "wal_bytes": wal_bytes}, ensure_ascii=False, indent=2))
        return
    states = [_state_text(r) for r in rows]
    # Columns as wide as their widest value, so the table stays aligned whatever the names
    # (OPML imports bring long ones) and counts.
    name_w = max((len(r["name"]) for r in rows), default=0)
    state_w = max((len(s) for s in states), default=0)
    entries_w = max((len(str(r["entries"])) for r in rows), default=0)
    success_w = max((len(r["last_success"] or "-") for r in rows), default=0)
    for r, state in zip(rows, states, strict=True):
        click.echo(
            f"{r['name']:<{name_w}} {state:<{state_w}} http={r['last_status'] or '-':<4} "
            f"entries={r['entries']:<{entries_w}} "
            f"last_success={r['last_success'] or '-':<{success_w}} "
            f"next={r['next_poll'] or '-'}"
        )
        if r["effective_url"]:
            click.echo(f"  moved to {r['effective_url']}")
        if r["last_error"]:
            click.echo(f"  last error ({r['last_error_kind']}): {r['last_error']}")
        if r["disabled_reason"]:
            click.echo(f"  disabled: {r['disabled_reason']}")
        if r["article_errors"]:
            click.echo(f"  article pages: {r['article_errors']} failed in a row, last at "
                       f"{r['last_article_error_at'] or '-'}: {r['last_article_error']}")
        if r["extracted_share"] is not None:
            waiting = f", {r['articles_waiting']} waiting" if r["articles_waiting"] else ""
            click.echo(f"  full text: {r['extracted_share']:.0%} extracted, "
                       f"median {r['median_words'] or 0} words{waiting}")
        elif r["articles_waiting"]:
            click.echo(f"  full text: {r['articles_waiting']} waiting")
        if r.get("extraction_drop"):
            click.echo("  WARNING: extraction success dropped sharply: the site may have been "
                       "redesigned; check its site rule with `aggregator extract URL`")
    waiting = f" ({retrying} waiting for a retry)" if retrying else ""
    click.echo(f"{len(rows)} feeds, {backlog} articles waiting{waiting}")
    click.echo(f"database {_mb(db_bytes)}, WAL {_mb(wal_bytes)}")


def _state_text(row: Mapping[str, Any]) -> str:
    """The state column of `status`: a failing feed with its count of failed polls."""
    state = str(row["state"])
    if state == "failing":
        errors = int(row["consecutive_errors"])
        return f"failing ({errors} error{'' if errors == 1 else 's'})"
    return state


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.0f} kB"


@main.command()
@click.argument("query")
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def search(obj: Ctx, query: str, limit: int, as_json: bool) -> None:
    """Full-text search over stored entries (substrings, any script)."""
    config = obj.load()
    store = _open_store(config)
    try:
        rows = [dict(r) for r in store.search(query, limit)]
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for r in rows:
        # One line each: the text's own line breaks would run into the next hit.
        snippet = " ".join(str(r["snippet"] or "").split())
        click.echo(f"{r['published'] or '(undated)'}  {r['feed_name']}  {r['title']}\n  {r['url']}\n"
                   f"  {snippet}")
    if not rows:
        click.echo("no match")


@main.command()
@click.argument("story_id", type=int)
@click.pass_obj
def story(obj: Ctx, story_id: int) -> None:
    """Print a story with its members and why each joined."""
    config = obj.load()
    store = _open_store(config)
    try:
        s, members = store.story(story_id)
    finally:
        store.close()
    if s is None:
        raise click.ClickException(f"no story {story_id}")
    rep = next((m for m in members if m["id"] == s["representative_id"]), None)
    click.echo(f"story {story_id}: {rep['title'] if rep else '?'}")
    click.echo(f"  {len(members)} entries from {len({m['feed_name'] for m in members})} "
               f"outlets; first seen {s['first_seen']}, updated {s['updated']}")
    languages = sorted({m["language"] for m in members if m["language"]})
    if languages:
        click.echo(f"  languages: {', '.join(languages)}")
    for m in members:
        marker = "*" if m["id"] == s["representative_id"] else " "
        reason = m["match_reason"]
        why = "first of the story" if reason == "first" else \
            f"{reason} match, score {m['match_score']:.2f}"
        click.echo(f" {marker} #{m['id']} {m['published'] or '(undated)'} {m['feed_name']}"
                   f" [{m['language'] or '?'}]: {m['title']}")
        click.echo(f"     {m['url']} ({m['word_count']} words; {why})")


@main.command()
@click.argument("output_name")
@click.option("--limit", default=20, show_default=True, help="How many items to show.")
@click.pass_obj
def preview(obj: Ctx, output_name: str, limit: int) -> None:
    """List what an output keeps and, for dropped recent items, the rule that dropped each."""
    from . import filters

    config = obj.load()
    output = next((o for o in config.outputs if o.name == output_name), None)
    if output is None:
        names = ", ".join(o.name for o in config.outputs)
        raise click.UsageError(f"no output {output_name!r} (outputs: {names})")
    store = _open_store(config)
    try:
        pool = store.items(limit=max(limit * 20, 500))
    finally:
        store.close()
    flt = filters.compile_filter(output.filter, output.prefer_languages)
    now = datetime.now(UTC)
    kept: list[tuple[Any, str | None]] = []
    dropped: list[tuple[Any, str | None]] = []
    for story in pool:
        # As the output shows it: the version in its readers' language.
        item, reason = flt.choose(story, now)
        (kept if reason is None else dropped).append((item, reason))
    click.echo(f"{output.name}: keeps {len(kept)} of the {len(pool)} newest stories")
    for item, _ in kept[:limit]:
        click.echo(f"  + {_when(item.published)} {item.feed_name}: {item.title}")
    if dropped:
        click.echo("dropped:")
    for item, reason in dropped[:limit]:
        click.echo(f"  - {_when(item.published)} {item.feed_name}: {item.title}\n"
                   f"      {reason}")


def _when(published: datetime | None) -> str:
    return f"{published:%Y-%m-%d %H:%M}" if published is not None else "(undated)       "


# --------------------------------------------------------------------------- full text


@main.command()
@click.argument("source")
@click.option("--url", "base_url", help="The page's URL (for relative links), when SOURCE is "
                                         "a file or -.")
@click.option("--feed", "feed_name", help="Apply this feed's site rule from feeds.yaml.")
@click.option("--format", "fmt", type=click.Choice(["text", "html", "json"]), default="text",
              show_default=True)
@click.pass_obj
def extract(obj: Ctx, source: str, base_url: str | None, feed_name: str | None,
            fmt: str) -> None:
    """Print the cleaned article of SOURCE (a URL, a file, or - for standard input)."""
    from . import clean
    from . import extract as extract_mod
    from .fetch import Fetcher
    from .models import FetchRequest

    config = obj.load()
    rule = None
    if feed_name:
        feed = next((f for f in config.feeds if f.name == feed_name), None)
        if feed is None:
            raise click.UsageError(f"unknown feed {feed_name!r}")
        rule = feed.rule
    charset = None
    try:
        if source == "-":
            body = sys.stdin.buffer.read()
            url = base_url or "about:blank"
        elif source.startswith(("http://", "https://")):
            fetcher = Fetcher(config.settings)
            try:
                res = fetcher.fetch(FetchRequest(url=source, kind="page",
                                                 max_bytes=config.settings.page_max_bytes))
            finally:
                fetcher.close()
            body, url, charset = res.body, res.final_url, res.charset
        else:
            body = Path(source).read_bytes()
            url = base_url or Path(source).resolve().as_uri()
        article = extract_mod.extract_article(body, url, charset=charset, rule=rule)
    except (AggregatorError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    # The cleaning the pipeline stores, so that what this prints is what readers get.
    cleaned = clean.clean_article(article, url)
    if fmt == "html":
        click.echo(cleaned.html)
    elif fmt == "json":
        data = asdict(article)
        data.update(html=cleaned.html, text=cleaned.text, word_count=cleaned.word_count)
        click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))
    else:
        if article.title:
            click.echo(article.title)
            click.echo()
        click.echo(cleaned.text)


@main.command()
@click.option("--feed", "feed_name", help="Only this feed's entries.")
@click.option("--since", type=click.DateTime(), help="Only entries published since DATE.")
@click.pass_obj
def reprocess(obj: Ctx, feed_name: str | None, since: datetime | None) -> None:
    """Re-apply extraction and cleaning to stored pages (after a site rule changes)."""
    from .pipeline import Pipeline

    config = obj.load()
    pipeline = Pipeline(config)
    try:
        done, failed = pipeline.reprocess(
            feed=feed_name, since=since.replace(tzinfo=UTC) if since else None
        )
        pipeline.publish()
    finally:
        pipeline.close()
    click.echo(f"{done} entries reprocessed, {failed} failed")


@main.command()
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; change nothing.")
@click.option("--vacuum", is_flag=True,
              help="Afterwards rewrite the database (VACUUM): all free space is returned and "
                   "an older database is switched to incremental vacuum. Needs free disk space "
                   "for a copy of the database, and holds other writers meanwhile.")
@click.pass_obj
def prune(obj: Ctx, dry_run: bool, vacuum: bool) -> None:
    """Delete entries past entry_retention or their feed's max_entries (what the current
    published documents show stays), with their search rows, pages and story membership."""
    from .pipeline import Pipeline
    from .store import is_postgres_url

    config = obj.load()
    if not is_postgres_url(config.settings.database) and not Path(
            config.settings.database).exists():
        raise click.ClickException(
            f"no database at {config.settings.database}: run `aggregator update` first")
    pipeline = Pipeline(config)
    try:
        if not pipeline.retention_configured():
            click.echo("no retention configured (entry_retention, max_entries): "
                       "no entry is due")
        report = pipeline.prune(dry_run=dry_run, vacuum=vacuum and not dry_run)
        mode = pipeline.writer.call(lambda st: st.auto_vacuum())
    except AggregatorError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        pipeline.close()
    verb = "would delete" if dry_run else "deleted"
    feeds = ", ".join(f"{name} {n}" for name, n in report.by_feed[:10])
    if len(report.by_feed) > 10:
        feeds += f", {len(report.by_feed) - 10} more feeds"
    click.echo(f"{verb} {report.entries} entries" + (f" ({feeds})" if feeds else "")
               + f", {report.pages} article pages, {report.band_rows} band rows")
    click.echo(f"stories: {report.stories_touched} kept with fewer members,"
               f" {report.stories_deleted} deleted with their last member;"
               f" {report.protected} due entries kept: a published document shows them")
    freed = f"{_mb(report.freed)} of database pages freed"
    if dry_run:
        click.echo(f"space: at least {_mb(report.freed)} of database pages would be freed (the"
                   " search index gives back more once merged); database"
                   f" {_mb(report.size_before)}"
                   + ("; --vacuum is ignored with --dry-run" if vacuum else ""))
        return
    line = f"space: {freed}; database {_mb(report.size_before)} -> {_mb(report.size_after)}"
    if report.vacuumed:
        line += f" ({report.vacuumed} vacuum)"
    elif mode != "incremental":
        line += ("; this database predates incremental vacuum: `aggregator prune --vacuum`"
                 " returns the free space to the file system")
    click.echo(line)


# --------------------------------------------------------------------------- feed list


@main.command("import-opml")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.pass_obj
def import_opml(obj: Ctx, file: str) -> None:
    """Add the OPML file's feeds to feeds.yaml (comments and order kept)."""
    data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    try:
        feeds = read_opml(data)
        added = add_feeds(obj.feeds_path or DEFAULT_FEEDS, feeds)
    except AggregatorError as exc:
        raise click.ClickException(str(exc)) from exc
    for name in added:
        click.echo(f"added {name}")
    click.echo(f"{len(added)} feeds added, {len(feeds) - len(added)} already present")


@main.command("export-opml")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="File (default stdout).")
@click.pass_obj
def export_opml_cmd(obj: Ctx, output: str | None) -> None:
    """Write the configured feeds as OPML."""
    config = obj.load()
    data = export_opml(config)
    if output:
        Path(output).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)


@main.command()
@click.argument("url")
@click.option("--name", help="Feed name (default: derived from the host).")
@click.option("--language", help="Language code, e.g. en, ru, hy, az, ka.")
@click.option("--tag", "tags", multiple=True, help="Tag (repeatable).")
@click.pass_obj
def add(obj: Ctx, url: str, name: str | None, language: str | None,
        tags: tuple[str, ...]) -> None:
    """Find the feed of a page (or take a feed URL) and add it to feeds.yaml."""
    from .pipeline import discover_feed

    config = obj.load()
    try:
        feed_url, title = discover_feed(config, url)
    except AggregatorError as exc:
        raise click.ClickException(str(exc)) from exc
    entry: dict[str, Any] = {"url": feed_url}
    if name:
        entry["name"] = name
    if title:
        entry["title"] = title
    if language:
        entry["language"] = language
    if tags:
        entry["tags"] = list(tags)
    try:
        added = add_feeds(obj.feeds_path or DEFAULT_FEEDS, [entry])
    except AggregatorError as exc:
        raise click.ClickException(str(exc)) from exc
    if added:
        click.echo(f"added {added[0]}: {feed_url}")
    else:
        click.echo(f"already present: {feed_url}")


if __name__ == "__main__":  # pragma: no cover
    main()
