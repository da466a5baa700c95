"""Site rules (CSS selectors for the body and for what to strip), applied with beautifulsoup4."""

from __future__ import annotations

from typing import Any

from bs4 import (
    BeautifulSoup,
)
from soupsieve import SelectorSyntaxError

from aggregator.errors import ExtractError
from aggregator.extract.decode import _BS4_PARSER
from aggregator.models import SiteRule

# --------------------------------------------------------------------------- site rules


def _apply_rule(soup: BeautifulSoup, rule: SiteRule, url: str) -> list[Any]:
    """Remove rule.strip matches; return the rule.body matches (empty list: no body rule)."""
    try:
        for selector in rule.strip:
            for node in soup.select(selector):
                if not node.decomposed:
                    node.decompose()
        matches = list(soup.select(rule.body)) if rule.body else []
    except (SelectorSyntaxError, ValueError) as exc:
        raise ExtractError("bad_rule", f"{url}: invalid CSS selector in site rule: {exc}") from exc
    # Drop matches nested in other matches: their content is already included once.
    chosen = set(map(id, matches))
    return [m for m in matches if not any(id(p) in chosen for p in m.parents)]


def _rule_sources(html: str, rule: SiteRule, url: str) -> tuple[str, str | None, str | None]:
    """(page, trafilatura's input, the rule's body) after beautifulsoup4 applied the rule.

    The page loses what rule.strip names; with body matches, trafilatura reads only them
    (with the <head>, for the meta tags), else the stripped page.
    """
    soup = BeautifulSoup(html, _BS4_PARSER)
    matches = _apply_rule(soup, rule, url)
    page = str(soup) if rule.strip else html
    if not matches:
        return page, None, None
    rule_html = "".join(str(node) for node in matches if not node.decomposed)
    head = soup.find("head")
    source = f"<html>{head if head is not None else ''}<body><article>{rule_html}</article></body></html>"
    return page, source, rule_html


def validate_rule(rule: SiteRule) -> list[str]:
    """Problems with a site rule's CSS selectors (empty when all parse), for config checks."""
    problems = []
    probe = BeautifulSoup("<p></p>", "html.parser")
    for selector in ((rule.body,) if rule.body else ()) + tuple(rule.strip):
        try:
            probe.select(selector)
        except (SelectorSyntaxError, ValueError) as exc:
            problems.append(f"invalid CSS selector {selector!r}: {exc}")
    return problems


