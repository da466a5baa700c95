"""The /status page: the daemon's status document rendered as HTML for a person.

Rendered per request by the server from the same document as /status.json (see
``Daemon.status``), so it lives here rather than in ``publish``, which writes output files
for the pipeline. Standard library only; no script at all (the server forbids scripts with
its Content-Security-Policy): the chart is inline SVG drawn here, the table is plain HTML.

Feed titles, names, URLs and error messages come from the network or from hostile feeds:
every string is escaped, control characters are shown as ``\\xNN`` (they would otherwise be
invisible or invalid in HTML), and only http(s) URLs become links.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

# C0/C1 controls except tab and newline, lone surrogates, non-characters; bidi overrides
# and isolates (they can reorder the text around them).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff\u202a-\u202e\u2066-\u2069]")
# Worst first: the order of the table, failing feeds at the top.
_STATE_ORDER = {"failing": 0, "disabled": 1, "degraded": 2, "ok": 3, "removed": 4}
_STATE_LABELS = {
    "ok": "ok",
    "degraded": "degraded",
    "failing": "failing",
    "disabled": "disabled",
    "removed": "removed",
}
_DASH = "\u2014"  # an empty cell
_ERROR_SHOWN = 240  # characters of an error message in its cell; the rest in its tooltip
_ERROR_TOOLTIP = 2000

# td.err wraps with overflow-wrap:anywhere, not break-word: only `anywhere` lowers a cell's
# min-content width, so an error quoting a long URL wraps instead of widening the table and
# pushing the last columns out of view.
_STYLE = """
:root{color-scheme:light dark;--fg:#1f2328;--muted:#59636e;--bg:#fff;--card:#f6f8fa;
--line:#d1d9e0;--bar:#2f6fdb;--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--off:#6e7781}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#9198a1;--bg:#0d1117;
--card:#161b22;--line:#30363d;--bar:#4c8df6;--ok:#3fb950;--warn:#d29922;--bad:#f85149;
--off:#8b949e}}
*{box-sizing:border-box}
body{margin:0 auto;padding:1.2rem;max-width:78rem;font:15px/1.45 system-ui,-apple-system,
"Segoe UI",Roboto,"Noto Sans",sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:.4rem 1.2rem;margin-bottom:1rem}
h1{font-size:1.5rem;margin:0}h2{font-size:1.1rem;margin:1.6rem 0 .6rem}
a{color:var(--bar)}.muted,small{color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(10.5rem,1fr));gap:.6rem;
margin:0;padding:0}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.6rem .8rem}
.card dt{font-size:.8rem;color:var(--muted);text-transform:uppercase;letter-spacing:.03em}
.card dd{margin:.15rem 0 0;font-size:1.45rem;font-weight:600;font-variant-numeric:tabular-nums}
.card dd small{display:block;font-size:.8rem;font-weight:400}
.card dd .states{display:flex;flex-wrap:wrap;gap:0 .7rem;font-size:.85rem;font-weight:500}
.n-ok{color:var(--ok)}.n-degraded{color:var(--warn)}.n-failing{color:var(--bad)}
.n-disabled,.n-removed{color:var(--off)}
.chart{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.5rem;
overflow-x:auto}
.chart svg{display:block;width:100%;min-width:36rem;height:auto}
.chart .bar{fill:var(--bar)}.chart .grid{stroke:var(--line);stroke-width:1}
.chart text{fill:var(--muted);font-size:11px;font-family:inherit}
.chart .axis{stroke:var(--muted);stroke-width:1}
.scroll{overflow-x:auto;border:1px solid var(--line);border-radius:8px}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{padding:.45rem .6rem;text-align:left;vertical-align:top;border-bottom:1px solid var(--line)}
th{background:var(--card);font-weight:600;white-space:nowrap;position:sticky;top:0}
tbody tr:last-child td{border-bottom:0}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.when{white-space:nowrap}td.when small,td.num small{display:block}
td.err{min-width:13rem;max-width:30rem;overflow-wrap:anywhere}.error{color:var(--bad)}
.kind{font-family:ui-monospace,monospace;font-size:.8rem}
.pill{display:inline-block;padding:.05rem .5rem;border-radius:1rem;font-size:.8rem;
font-weight:600;color:#fff;white-space:nowrap}
.s-ok{background:var(--ok)}.s-degraded{background:var(--warn)}.s-failing{background:var(--bad)}
.s-disabled,.s-removed{background:var(--off)}
tr.removed td{opacity:.65}
caption{text-align:left;padding:.4rem .6rem;color:var(--muted);font-size:.85rem}
footer{margin-top:1.5rem;font-size:.85rem;color:var(--muted)}
@media (max-width:40rem){body{padding:.7rem}th,td{padding:.35rem .4rem}}
"""


# --------------------------------------------------------------------------- text helpers


def _show(text: object) -> str:
    """Escaped HTML text or attribute value; unsafe characters shown as ``\\xNN``."""
    value = "" if text is None else str(text)
    value = _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                        else f"\\u{ord(m.group()):04x}", value)
    return html.escape(value, quote=True)


def _http(url: object) -> str | None:
    """``url`` when it is an absolute http(s) URL without unsafe characters, else None."""
    if not isinstance(url, str) or _UNSAFE.search(url) or any(c.isspace() for c in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme.lower() in ("http", "https") and parts.netloc else None


def _when(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def relative(when: datetime, now: datetime) -> str:
    """``3 min ago``, ``in 2 h``, ``just now``: how far ``when`` is from ``now``."""
    seconds = (when - now).total_seconds()
    span = abs(seconds)
    if span < 45:
        return "just now" if seconds <= 0 else "in a moment"
    if span < 90 * 60:
        amount = f"{round(span / 60)} min"
    elif span < 36 * 3600:
        amount = f"{round(span / 3600)} h"
    else:
        days = round(span / 86400)
        amount = f"{days} day" + ("s" if days != 1 else "")
    return f"in {amount}" if seconds > 0 else f"{amount} ago"


def _utc(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _time(value: object, now: datetime, *, missing: str = "never") -> str:
    """A relative time with the UTC time beneath it, as a <time> element."""
    when = _when(value)
    if when is None:
        return f'<span class="muted">{_show(missing)}</span>'
    iso = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (f'<time datetime="{iso}">{_show(relative(when, now))}'
            f"<small>{_utc(when)}</small></time>")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes} min {int(seconds % 60)} s"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} h {minutes % 60} min"
    return f"{hours // 24} days {hours % 24} h"


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError):
        return 0


def _num(value: int) -> str:
    return f"{value:,}".replace(",", "\u202f")  # narrow no-break space between thousands


def _count(value: int, noun: str) -> str:
    return f"{_num(value)} {noun}{'' if value == 1 else 's'}"


# --------------------------------------------------------------------------- sections


def _summary(doc: Mapping[str, Any], feeds: Sequence[Mapping[str, Any]], now: datetime) -> str:
    states = doc.get("states")
    if not isinstance(states, Mapping):
        states = {}
        for feed in feeds:
            states[feed.get("state")] = states.get(feed.get("state"), 0) + 1
    counts = "".join(
        f'<span class="n-{key}">{_num(_int(states.get(key)))} {label}</span>'
        for key, label in _STATE_LABELS.items()
    )
    cards = [
        ("Feeds", f'{_num(len(feeds))}<small class="states">{counts}</small>'),
        ("Entries, last 24 h", _num(_int(doc.get("entries_24h")))),
        ("Stories, last 24 h", _num(_int(doc.get("stories_24h")))),
        ("Extraction backlog", f"{_num(_int(doc.get('backlog')))}<small>articles waiting</small>"),
    ]
    cycle = doc.get("last_cycle")
    if isinstance(cycle, Mapping) and _when(cycle.get("started")) is not None:
        started = _when(cycle.get("started"))
        assert started is not None
        seconds = float(cycle.get("seconds") or 0.0)
        errors = _int(cycle.get("errors"))
        detail = _count(_int(cycle.get("feeds")), "feed") + " polled"
        if errors:
            detail += f", {_num(errors)} failed"
        cards.append((
            "Last cycle",
            f'<time datetime="{started.strftime("%Y-%m-%dT%H:%M:%SZ")}">'
            f"{_show(relative(started, now))}</time>"
            f"<small>{_utc(started)}, took {_show(_duration(seconds))}; {detail}</small>",
        ))
    elif (polled := _when(doc.get("last_poll"))) is not None:
        # No cycle of this process yet: the store says when a feed was last polled (by an
        # earlier run, or by `aggregator update`).
        cards.append((
            "Last poll",
            f'<time datetime="{polled.strftime("%Y-%m-%dT%H:%M:%SZ")}">'
            f"{_show(relative(polled, now))}</time>"
            f"<small>{_utc(polled)}, before this process's first cycle</small>",
        ))
    else:
        cards.append(("Last cycle", '<span class="muted">none yet</span>'))
    if doc.get("uptime") is not None:
        cards.append(("Uptime", _show(_duration(float(doc["uptime"])))
                      + f"<small>{_count(_int(doc.get('cycles')), 'scheduler tick')}</small>"))
    items = "".join(f'<div class="card"><dt>{name}</dt><dd>{value}</dd></div>'
                    for name, value in cards)
    return f'<section aria-labelledby="summary"><h2 id="summary">Summary</h2>' \
           f'<dl class="cards">{items}</dl></section>'


def _scale(peak: int) -> tuple[int, int]:
    """(top, step) of the y axis: the step 1, 2 or 5 × 10^k giving at most five gridline
    intervals, the top the first step at or above ``peak`` (at least one step)."""
    step = 1
    while step * 5 < peak:
        for factor in (2, 5 / 2, 2):  # 1 → 2 → 5 → 10 → 20 → 50 ...
            step = int(step * factor)
            if step * 5 >= peak:
                break
    return max(step, -(-peak // step) * step), step


def chart(days: Sequence[Mapping[str, Any]]) -> str:
    """Entries per day as an inline SVG bar chart with axes, labels, <title> and <desc>."""
    points = [(str(d.get("day", "")), _int(d.get("entries"))) for d in days]
    if not points:
        return '<p class="muted">No entries yet.</p>'
    width, height = 960, 250
    left, right, top, bottom = 46, 12, 26, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(n for _, n in points)
    ymax, ystep = _scale(peak)
    slot = plot_w / len(points)
    bar_w = max(slot * 0.72, 1.0)
    total = sum(n for _, n in points)
    busiest = max(points, key=lambda p: p[1])
    desc = (
        f"Bar chart of entries per day (UTC, by publication date) from {points[0][0]} to "
        f"{points[-1][0]}: {total} entries in all"
        + (f", the busiest day {busiest[0]} with {busiest[1]}" if peak else "")
        + f", {points[-1][1]} on the last day."
    )
    out = [
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-labelledby="chart-title '
        f'chart-desc" xmlns="http://www.w3.org/2000/svg">',
        '<title id="chart-title">Entries per day, last 30 days</title>',
        f'<desc id="chart-desc">{_show(desc)}</desc>',
    ]
    for value in range(0, ymax + 1, ystep):  # gridlines and y labels
        y = top + plot_h - plot_h * value / ymax
        out.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" '
                   f'y2="{y:.1f}"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_num(value)}</text>')
    for i, (day, count) in enumerate(points):
        h = plot_h * count / ymax
        x = left + slot * i + (slot - bar_w) / 2
        y = top + plot_h - h
        label = f"{day}: {count} entr{'y' if count == 1 else 'ies'}"
        out.append(f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                   f'height="{h:.1f}"><title>{_show(label)}</title></rect>')
        if i % 5 == 4 or i == 0 or i == len(points) - 1:
            if i == len(points) - 2:
                continue
            try:
                parsed = datetime.strptime(day, "%Y-%m-%d")
                text = f"{parsed:%b} {parsed.day}"
            except ValueError:
                text = day
            out.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - bottom + 16}" '
                       f'text-anchor="middle">{_show(text)}</text>')
    out.append(f'<line class="axis" x1="{left}" x2="{width - right}" y1="{top + plot_h}" '
               f'y2="{top + plot_h}"/>')
    out.append(f'<text x="{left - 40}" y="{top - 12}" text-anchor="start">entries</text>')
    out.append("</svg>")
    return "".join(out)


def _sorted_feeds(feeds: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Failing feeds first (most consecutive errors first), then disabled, degraded, ok and
    removed ones; by name within a state."""
    return sorted(feeds, key=lambda f: (
        _STATE_ORDER.get(str(f.get("state")), 5),
        -_int(f.get("consecutive_errors")),
        str(f.get("name", "")).casefold(),
    ))


def _feed_row(feed: Mapping[str, Any], now: datetime) -> str:
    state = str(feed.get("state") or "ok")
    state_class = state if state in _STATE_ORDER else "removed"
    name = _show(feed.get("name"))
    url = _http(feed.get("effective_url")) or _http(feed.get("url"))
    name_html = f'<a href="{_show(url)}" rel="noreferrer nofollow">{name}</a>' if url else name
    title = feed.get("title")
    if title and title != feed.get("name"):
        name_html += f"<br/><small><bdi>{_show(title)}</bdi></small>"
    status = feed.get("last_status")
    errors = _int(feed.get("consecutive_errors"))
    error = str(feed.get("last_error") or feed.get("disabled_reason") or "")
    error_html = ""
    if error:
        shown = error if len(error) <= _ERROR_SHOWN else error[:_ERROR_SHOWN] + "\u2026"
        kind = feed.get("last_error_kind")
        kind_html = f'<span class="kind">{_show(kind)}</span> ' if kind else ""
        error_html = (f'{kind_html}<span class="error" title="{_show(error[:_ERROR_TOOLTIP])}">'
                      f"<bdi>{_show(shown)}</bdi></span>")
    article_errors = _int(feed.get("article_errors"))
    if article_errors and feed.get("last_article_error"):
        # A degraded feed polls fine: the reason is its article pages' last failure.
        reason = str(feed["last_article_error"])
        shown = reason if len(reason) <= _ERROR_SHOWN else reason[:_ERROR_SHOWN] + "\u2026"
        error_html += ("<br/>" if error_html else "") + (
            f"<small>Article pages: {_num(article_errors)} failed in a row: "
            f'<span class="error" title="{_show(reason[:_ERROR_TOOLTIP])}">'
            f"<bdi>{_show(shown)}</bdi></span></small>")
    if feed.get("extraction_drop"):
        error_html += ("<br/>" if error_html else "") + ('<small>Article extraction dropped sharply: the site may have '
                       "been redesigned.</small>")
    share = feed.get("extracted_share")
    share_html = f"{float(share):.0%}" if isinstance(share, int | float) else _DASH
    if feed.get("median_words"):
        share_html += f"<small>median {_num(_int(feed.get('median_words')))} words</small>"
    next_poll = _when(feed.get("next_poll"))
    if state in ("disabled", "removed"):
        next_html = f'<span class="muted">{_DASH}</span>'
    elif next_poll is None or next_poll <= now:
        next_html = "due now"
    else:
        next_html = _time(next_poll, now)
    no_error = f'<span class="muted">{_DASH}</span>'
    cells = [
        f'<td><span class="pill s-{state_class}">{_show(_STATE_LABELS.get(state, state))}</span></td>',
        f"<td>{name_html}</td>",
        f"<td>{_show(feed.get('language') or _DASH)}</td>",
        f'<td class="when">{_time(feed.get("last_success"), now)}</td>',
        f'<td class="num">{_show(status) if status is not None else _DASH}</td>',
        f'<td class="num">{_num(errors)}</td>',
        f'<td class="err">{error_html or no_error}</td>',
        f'<td class="num">{_num(_int(feed.get("entries")))}</td>',
        f'<td class="num">{share_html}</td>',
        f'<td class="when">{next_html}</td>',
    ]
    return f'<tr class="{state_class}">' + "".join(cells) + "</tr>"


def _feeds_table(feeds: Sequence[Mapping[str, Any]], now: datetime) -> str:
    if not feeds:
        return '<p class="muted">No feeds are configured.</p>'
    head = "".join(f'<th scope="col">{h}</th>' for h in (
        "State", "Feed", "Language", "Last success", "HTTP", "Errors", "Last error",
        "Entries", "Extracted", "Next poll"))
    rows = "\n".join(_feed_row(f, now) for f in _sorted_feeds(feeds))
    return (f'<div class="scroll"><table><caption>Failing feeds first. Errors: consecutive failed polls. '
            f"Extracted: share of the last 50 articles whose full text was extracted."
            f"</caption><thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody></table></div>")


# --------------------------------------------------------------------------- page


def render_status(doc: Mapping[str, Any], *, now: datetime | None = None,
                  title: str = "aggregator status") -> str:
    """The whole page for the status document ``doc`` (see ``Daemon.status``)."""
    now = now or _when(doc.get("generated")) or datetime.now(UTC)
    raw_feeds = doc.get("feeds")
    feeds = [f for f in raw_feeds if isinstance(f, Mapping)] if isinstance(raw_feeds, list) \
        else []
    days = doc.get("entries_per_day")
    day_rows = [d for d in days if isinstance(d, Mapping)] if isinstance(days, list) else []
    failing = sum(1 for f in feeds if f.get("state") == "failing")
    headline = (f'<span class="n-failing">{failing} failing</span>' if failing
                else '<span class="n-ok">all polls working</span>')
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8"/>',
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>',
        f"<title>{_show(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        f'<header><h1>{_show(title)}</h1><span>{headline}</span>'
        f'<span class="muted">as of {_utc(now)}</span>'
        '<a href="./">Feeds</a><a href="status.json" type="application/json">JSON</a></header>',
        "<main>",
        _summary(doc, feeds, now),
        '<section aria-labelledby="activity"><h2 id="activity">Entries per day</h2>'
        f'<div class="chart">{chart(day_rows)}</div></section>',
        f'<section aria-labelledby="feeds"><h2 id="feeds">Feeds</h2>{_feeds_table(feeds, now)}'
        "</section>",
        "</main>",
        f"<footer>Times in UTC. Generated {_utc(now)}; reload for fresh numbers.</footer>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"
