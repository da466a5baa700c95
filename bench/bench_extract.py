"""Extraction quality and speed on the shared corpus (``make bench-extract``).

Scores, for our pipeline (extract_article -> sanitize_html -> html_to_text) and for plain
``trafilatura.extract(html)`` measured in the same run:

- trafilatura cases: share of ``with`` snippets present, share of ``without`` snippets absent;
- newspaper4k and newspaper4k-fulltext cases: mean token-level F1 against expected.txt;
- goose3 content cases: share whose expected cleaned_text (a prefix) is found in the text.

Speed: pages per second of CPU time (one process, one core) for extract + clean over every
corpus article page, and the slowest page.

Our pipeline runs with the extraction accelerator installed, as in an extraction worker
(extract.install_accelerator); it is taken out again for plain trafilatura, which would
otherwise run on the same swapped globals.

Options: ``--variants`` also scores our pipeline with trafilatura's fallback extractors
never run (``fast=True``), our pipeline without the accelerator (trafilatura's and jusText's
own code, as with ``extract_accelerator: false``) and plain trafilatura in fast mode; ``--limit N`` keeps the first
N cases of each set (quick runs); ``--authors`` compares Article.author with trafilatura's
metadata author on every page (how many found, agreement, token F1 against the corpus's
reference authors) and times our byline search in the page body.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CORPUS = ROOT.parent / "shared" / "corpus"

import trafilatura  # noqa: E402

from aggregator import extract as extract_mod  # noqa: E402
from aggregator.clean import html_to_text, sanitize_html  # noqa: E402
from aggregator.errors import ExtractError  # noqa: E402
from aggregator.extract import accelerator, decode, metadata  # noqa: E402

logging.disable(logging.CRITICAL)
warnings.filterwarnings("ignore")  # dateutil's unknown-timezone notes from htmldate, etc.

SETS = ("trafilatura", "newspaper4k", "newspaper4k-fulltext", "goose3")


@dataclass
class Case:
    set: str
    name: str
    path: Path
    url: str
    expected: object


@dataclass
class Result:
    scores: dict[str, list[float]] = field(default_factory=dict)
    cpu: float = 0.0
    pages: int = 0
    slowest: tuple[float, str] = (0.0, "")
    errors: Counter[str] = field(default_factory=Counter)


def load_cases(limit: int | None) -> list[Case]:
    urls = {}
    for record in json.loads((CORPUS / "manifest.json").read_text()):
        if record["kind"] == "article":
            urls[record["path"].rstrip("/")] = record.get("url") or ""
    cases: list[Case] = []
    per_set: Counter[str] = Counter()
    for source in sorted((CORPUS / "articles").glob("**/source.html")):
        folder = source.parent
        rel = str(folder.relative_to(CORPUS))
        top = rel.split("/")[1]
        expected: object = None
        set_name = top
        if top == "trafilatura":
            expected = json.loads((folder / "expected.json").read_text())
        elif top in ("newspaper4k", "newspaper4k-fulltext"):
            expected = (folder / "expected.txt").read_text(encoding="utf-8", errors="replace")
        elif top == "goose3" and "/content/" in rel:
            expected = json.loads((folder / "expected.json").read_text())["expected"][
                "cleaned_text"
            ]
        else:
            set_name = "other"  # speed only
        if limit is not None and per_set[set_name] >= limit:
            continue
        per_set[set_name] += 1
        url = urls.get(rel, "")
        if not url and isinstance(expected, dict):
            url = str(expected.get("url") or "")
        cases.append(
            Case(set_name, folder.name, source, url or "https://example.invalid/", expected)
        )
    return cases


# --------------------------------------------------------------------------- scoring


def _ws(text: str) -> str:
    return " ".join(text.split())


def _tokens(text: str) -> Counter[str]:
    return Counter(re.findall(r"\w+", text.casefold()))


def token_f1(got: str, expected: str) -> float:
    g, e = _tokens(got), _tokens(expected)
    if not g and not e:
        return 1.0
    common = sum((g & e).values())
    if not common:
        return 0.0
    precision, recall = common / sum(g.values()), common / sum(e.values())
    return 2 * precision * recall / (precision + recall)


def score(case: Case, text: str, title: str, result: Result) -> None:
    """Score one page. ``title`` counts only for ``with`` snippets: we move the title from the
    body to Article.title, plain trafilatura leaves it in the text, and some ``with`` snippets
    are the title. Every other measure looks at the body text alone."""
    flat = _ws(text)
    if case.set == "trafilatura":
        exp = case.expected
        assert isinstance(exp, dict)
        shown = f"{_ws(title)} {flat}"
        result.scores.setdefault("with", []).extend(
            float(_ws(s) in shown) for s in exp.get("with", [])
        )
        result.scores.setdefault("without", []).extend(
            float(_ws(s) not in flat) for s in exp.get("without", [])
        )
    elif case.set in ("newspaper4k", "newspaper4k-fulltext"):
        result.scores.setdefault(case.set, []).append(token_f1(text, str(case.expected)))
    elif case.set == "goose3":
        result.scores.setdefault("goose3", []).append(float(_ws(str(case.expected)) in flat))


# --------------------------------------------------------------------------- extractors


def ours(body: bytes, url: str) -> tuple[str, str]:
    article = extract_mod.extract_article(body, url)
    return html_to_text(sanitize_html(article.html, url)), article.title or ""


def plain(body: bytes, url: str) -> tuple[str, str]:
    return trafilatura.extract(body) or "", ""


def ours_fast(body: bytes, url: str) -> tuple[str, str]:
    article = extract_mod.extract_article(body, url, fast=True)
    return html_to_text(sanitize_html(article.html, url)), article.title or ""


def plain_fast(body: bytes, url: str) -> tuple[str, str]:
    return trafilatura.extract(body, fast=True) or "", ""


def run(
    name: str,
    fn: Callable[[bytes, str], tuple[str, str]],
    cases: list[Case],
    accelerated: bool = False,
) -> Result:
    if accelerated and not extract_mod.install_accelerator():
        print("  the accelerator's guard does not match: not installed", file=sys.stderr)
    try:
        return _run(name, fn, cases)
    finally:
        accelerator.uninstall()


def _run(name: str, fn: Callable[[bytes, str], tuple[str, str]], cases: list[Case]) -> Result:
    result = Result()
    for case in cases:
        body = case.path.read_bytes()
        start = time.process_time()
        try:
            text, title = fn(body, case.url)
        except ExtractError as exc:
            text, title = "", ""
            result.errors[exc.kind] += 1
        elapsed = time.process_time() - start
        result.cpu += elapsed
        result.pages += 1
        if elapsed > result.slowest[0]:
            result.slowest = (elapsed, str(case.path.parent.relative_to(CORPUS)))
        score(case, text, title, result)
    print(f"  ran {name}: {result.pages} pages", file=sys.stderr)
    return result


def _pct(values: list[float]) -> str:
    return f"{100 * sum(values) / len(values):6.1f}" if values else "   n/a"


def table(results: dict[str, Result]) -> str:
    metrics = [
        ("trafilatura: with present %", "with"),
        ("trafilatura: without absent %", "without"),
        ("newspaper4k: token F1 %", "newspaper4k"),
        ("newspaper4k-fulltext: token F1 %", "newspaper4k-fulltext"),
        ("goose3 content: prefix found %", "goose3"),
    ]
    names = list(results)
    width = max(12, *(len(n) for n in names))
    lines = [f"{'metric':42}" + "".join(f"{n:>{width + 2}}" for n in names)]
    for label, key in metrics:
        counts = len(next(iter(results.values())).scores.get(key, []))
        row = f"{label + f' (n={counts})':42}"
        row += "".join(f"{_pct(results[n].scores.get(key, [])):>{width + 2}}" for n in names)
        lines.append(row)
    lines.append(
        f"{'pages/s (CPU, one core)':42}"
        + "".join(f"{results[n].pages / results[n].cpu:>{width + 2}.1f}" for n in names)
    )
    lines.append(
        f"{'slowest page (s CPU)':42}"
        + "".join(f"{results[n].slowest[0]:>{width + 2}.3f}" for n in names)
    )
    lines.append(
        f"{'ExtractError count':42}"
        + "".join(f"{sum(results[n].errors.values()):>{width + 2}}" for n in names)
    )
    for n in names:
        lines.append(
            f"  slowest for {n}: {results[n].slowest[1]}; errors {dict(results[n].errors)}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- authors


def _reference_author(case: Case) -> str | None:
    """The corpus's expected author (trafilatura set's expected.json), when it names one."""
    if case.set != "trafilatura" or not isinstance(case.expected, dict):
        return None
    value = case.expected.get("author")
    if isinstance(value, list):
        value = "; ".join(str(v) for v in value)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _same_author(a: str, b: str) -> bool:
    return set(_tokens(a)) == set(_tokens(b))


def authors(cases: list[Case]) -> str:
    """Article.author against trafilatura.extract_metadata(...).author, page by page."""
    ours_n = theirs_n = both = agree = 0
    ref_n, ref_ours, ref_theirs = 0, [], []
    search_cpu, searched = 0.0, 0
    for case in cases:
        body = case.path.read_bytes()
        try:
            ours_author = extract_mod.extract_article(body, case.url).author
        except ExtractError:
            ours_author = None
        html = extract_mod.decode_html(body)
        theirs = trafilatura.extract_metadata(html, default_url=case.url, extensive=False).author
        ours_n += bool(ours_author)
        theirs_n += bool(theirs)
        if ours_author and theirs:
            both += 1
            agree += _same_author(ours_author, theirs)
        reference = _reference_author(case)
        if reference:
            ref_n += 1
            ref_ours.append(token_f1(ours_author or "", reference))
            ref_theirs.append(token_f1(theirs or "", reference))
        # cost of the author choice (JSON-LD, meta tags, body byline search when they name
        # nobody) on the parsed page, as extract_article runs it
        root = decode._parse(html)
        if root is not None:
            page = metadata._scan(root)
            searched += metadata._declared_author(page)[0] is None
            start = time.process_time()
            metadata._author(page, root)
            search_cpu += time.process_time() - start
    pages = len(cases)
    return "\n".join(
        [
            f"authors on {pages} pages:",
            f"  found by ours {ours_n}, by trafilatura metadata {theirs_n}; by both {both}, "
            f"same names on {agree} of those",
            f"  reference authors (trafilatura set, n={ref_n}): token F1 % ours "
            f"{_pct(ref_ours).strip()}, trafilatura {_pct(ref_theirs).strip()}",
            f"  cost: {1000 * search_cpu / max(pages, 1):.2f} ms CPU per page (JSON-LD, meta, and"
            f" the body byline search, which ran on {searched} pages)",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", action="store_true", help="also score pipeline variants")
    parser.add_argument("--limit", type=int, default=None, help="cases per set (quick run)")
    parser.add_argument("--authors", action="store_true", help="only compare authors")
    args = parser.parse_args()
    if not CORPUS.is_dir():
        print(f"corpus not found at {CORPUS}", file=sys.stderr)
        return 2
    cases = load_cases(args.limit)
    if args.authors:
        print(authors(cases))
        return 0
    results = {
        "ours": run("ours", ours, cases, accelerated=True),
        "plain": run("plain trafilatura", plain, cases),
    }
    if args.variants:
        results["ours fast"] = run("ours, trafilatura fast", ours_fast, cases, accelerated=True)
        results["ours unaccel"] = run("ours, no accelerator", ours, cases)
        results["plain fast"] = run("plain trafilatura fast", plain_fast, cases)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
