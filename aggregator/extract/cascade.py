"""trafilatura's extraction cascade, run on our tree with its fallback extractors only where
its own extraction found little text."""

from __future__ import annotations

import re
from copy import copy
from typing import Any

from lxml import etree
from trafilatura.baseline import baseline, html2txt
from trafilatura.core import (
    ESCALATION_ACCEPT_RATIO,
    ESCALATION_JUSTEXT_RATIO,
    ESCALATION_MAX_LENGTH,
    ESCALATION_PAGE_SHARE,
)
from trafilatura.external import compare_extraction, justext_rescue
from trafilatura.htmlprocessing import convert_tags, prune_unwanted_nodes, tree_cleaning
from trafilatura.main_extractor import extract_content
from trafilatura.settings import Extractor
from trafilatura.xml import delete_element
from trafilatura.xpaths import (
    RAW_TREE_PRUNE_XPATH,
    REMOVE_COMMENTS_AND_LISTS_XPATH,
)

# --------------------------------------------------------------------------- trafilatura


def _options(fast: bool, recall: bool = False) -> Extractor:
    return Extractor(
        fast=fast,
        recall=recall,
        links=True,
        images=False,  # placed back by _place_images
        formatting=False,  # on, trafilatura loses body text on some pages
        tables=True,
        comments=False,
    )


# Built once: an Extractor reads trafilatura's config file settings when constructed.
_FAST, _FULL = _options(fast=True), _options(fast=False)
_RECALL_FAST, _RECALL_FULL = _options(fast=True, recall=True), _options(fast=False, recall=True)
# trafilatura's own extraction finding less text than this triggers its fallback extractors
# (readability, jusText). Above it they rarely change the text, for the worse on the corpus
# sets taken together, at a large share of the extraction cost (bench_extract.py --variants).
_FALLBACK_BELOW = 1000
_FORUM_POSTING = re.compile(
    r'"@type"\s*:\s*"DiscussionForumPosting"|"@type"\s*:\s*\[[^\]]*"DiscussionForumPosting"'
)


# An upper bound of html2txt's length, computed mostly by libxml2: the body's text with
# whitespace collapsed (XPath collapses less than str.split), less the collapsed text of
# elements html2txt drops (removing a run of text shortens the collapsed whole by at least
# the run's own collapsed length), plus the two spaces html2txt may add per block element.
_NORMALIZED_LENGTH = etree.XPath("string-length(normalize-space(.))")
_DROPPED_TAGS = ("script", "style", "template", "svg", "aside", "footer")
_BLOCK_TAGS = (
    "address article aside blockquote br dd div dl dt figcaption figure footer form h1 h2 h3 "
    "h4 h5 h6 header hr li main nav ol p pre section summary table td th tr ul"
).split()  # trafilatura.baseline's block elements


def _page_text_bound(body: Any) -> float:
    dropped = 0.0
    for element in body.iter(_DROPPED_TAGS):
        if next(element.iterancestors(_DROPPED_TAGS), None) is None:  # outermost only
            dropped += _NORMALIZED_LENGTH(element)
    blocks = sum(1 for _ in body.iter(_BLOCK_TAGS))
    return float(_NORMALIZED_LENGTH(body)) - dropped + 2 * blocks


def _covers_little(length: int, tree: Any) -> bool:
    """trafilatura's test for an extraction covering too little of the page's text.

    Its measure (html2txt: a cleaned copy of the page as text, costly) is only taken when a
    cheap upper bound of it, computed by libxml2, does not already settle the question.
    """
    body = tree.find(".//body")
    if body is None:
        body = tree
    if length >= ESCALATION_PAGE_SHARE * _page_text_bound(body):
        return False
    return length < ESCALATION_PAGE_SHARE * len(html2txt(tree))


# Words that the id or class of every element these XPaths remove contains: on a page whose
# markup has none of them the XPaths (regular expressions called from libxml2 on the whole
# page) cannot match.
_INFINITE_WORDS = ("mvp-post-add-", "infinite")  # RAW_TREE_PRUNE_XPATH[0]
_ELEMENTOR_WORD = "elementor-share-buttons"  # RAW_TREE_PRUNE_XPATH[1]
_COMMENTS_WORDS = ("omment", "comol", "disqus_thread")

# trafilatura's RAW_TREE_PRUNE_XPATH[0] (infinite-scroll containers) without its regular
# expressions called from libxml2 on every div, section and aside (on the pages whose
# markup holds "infinite", often in CSS): libxml2 picks those whose id or class holds
# "mvp-post-add-" or "infinite" (every match does), and its predicates, verbatim below, are
# tested on those. Same elements, same order (tests).
_INFINITE_CANDIDATES = (
    "(.//div | .//section | .//aside)[@id[contains(., 'mvp-post-add-') or contains(., 'infinite')]"
    " or @class[contains(., 'mvp-post-add-') or contains(., 'infinite')]]"
)
_INFINITE = re.compile("mvp-post-add-(?:box|wrap)|infinite-?scroll")
_MVP_POST_ADD = re.compile("mvp-post-add-(?:box|wrap)")


def _is_infinite_scroll(el: Any) -> bool:
    ident, cls = el.get("id") or "", el.get("class") or ""
    if not (_INFINITE.search(ident) or _INFINITE.search(cls)):
        return False
    return (
        next(el.iterdescendants("h1"), None) is None
        or bool(_MVP_POST_ADD.search(ident))
        or bool(_MVP_POST_ADD.search(cls))
    )


def _prune_raw(tree: Any, markup: str) -> Any:
    """prune_unwanted_nodes(tree, RAW_TREE_PRUNE_XPATH), same result; each XPath only on
    pages whose markup holds its words."""
    if any(w in markup for w in _INFINITE_WORDS):
        for element in _INFINITE_SCROLL(tree):
            delete_element(element)  # the tail text is kept, as trafilatura does
    if _ELEMENTOR_WORD in markup:
        prune_unwanted_nodes(tree, RAW_TREE_PRUNE_XPATH[1:])
    return tree


# trafilatura's REMOVE_COMMENTS_AND_LISTS_XPATH (comment sections and comment lists) without
# its regular expressions called from libxml2 on every element: libxml2
# picks the elements whose id or class holds "omment" or "comol" (every match does), and its
# predicates, verbatim below, are tested on those. Same elements, same order (tests).
_COMMENT_CANDIDATES = (
    "(//*/@id[contains(., 'omment') or contains(., 'comol') or contains(., 'disqus_thread')]"
    " | //*/@class[contains(., 'omment')])/.."
)
_COMMENT_TAGS = frozenset(("div", "list", "section", "details", "ol", "ul"))
_COMMENTS_ID = re.compile(r"^(?:[Cc]omment(?!ary)|comol)")
_COMMENTS_ID_OR_THREAD = re.compile(r"^(?:[Cc]omment(?!ary)|comol|disqus_thread|dsq-comments)")
_COMMENTS_CLASS = re.compile(r"^[Cc]omment(?!ary)|(?:article|post)-comments")


def _is_comment_section(el: Any) -> bool:
    tag = el.tag
    if tag not in _COMMENT_TAGS:
        return False
    ident, cls = el.get("id") or "", el.get("class") or ""
    if _COMMENTS_CLASS.search(cls):
        return True
    if tag in ("ol", "ul"):  # a list counts only by a comment id, not by a disqus one
        return bool(_COMMENTS_ID.search(ident))
    return bool(_COMMENTS_ID_OR_THREAD.search(ident))


def _prune_comments(tree: Any, markup: str) -> Any:
    """prune_unwanted_nodes(tree, REMOVE_COMMENTS_AND_LISTS_XPATH), same result."""
    if not any(w in markup for w in _COMMENTS_WORDS):
        return tree
    for element in _COMMENT_SECTIONS(tree):
        delete_element(element)  # the tail text is kept, as trafilatura does
    return tree



def _first_of(el: Any, a: str, b: str) -> str | None:
    """string(@a|@b) in XPath: the value of whichever attribute comes first in the tag."""
    va, vb = el.get(a), el.get(b)
    if va is None or vb is None:
        return vb if va is None else va
    for key in el.keys():
        if key == a:
            return va
        if key == b:
            break
    return vb


class _EmulatedXPath:
    """A trafilatura XPath as a libxml2 prefilter plus its predicate in Python.

    ``first``: only the first match in document order is returned; for BODY_XPATH, whose
    caller takes the first element of the result and nothing else.
    """

    def __init__(
        self, original: Any, candidates: str, test: Any, first: bool = False
    ) -> None:
        self.path: str = original.path
        self._candidates = etree.XPath(candidates)
        self._test = test
        self._first = first

    def __call__(self, tree: Any) -> list[Any]:
        if self._first:
            return next(([el] for el in self._candidates(tree) if self._test(el)), [])
        return [el for el in self._candidates(tree) if self._test(el)]

    def __str__(self) -> str:  # trafilatura logs the expression that found the body
        return self.path


# Written the same way last, for _prune_raw and _prune_comments (run on pages whose markup
# holds their words; their candidates picked by words every match holds).
_INFINITE_SCROLL = _EmulatedXPath(RAW_TREE_PRUNE_XPATH[0], _INFINITE_CANDIDATES, _is_infinite_scroll)
_COMMENT_SECTIONS = _EmulatedXPath(
    REMOVE_COMMENTS_AND_LISTS_XPATH[0], _COMMENT_CANDIDATES, _is_comment_section
)


def _trafilatura(tree: Any, markup: str, forum: bool, fast: bool) -> Any | None:
    """trafilatura's extraction cascade (trafilatura.core.trafilatura_sequence with comments
    off), with the fallback extractors only where its own extraction found little text.

    ``markup`` is the HTML the tree was parsed from. Returns trafilatura's output tree
    (<body> of <p>, <head>, <list>...) or None. The tree is pruned in place. Links are left
    relative: sanitize_html makes the kept ones absolute (trafilatura would resolve every
    link of the page, most of them navigation).

    Which XPaths and paragraph maker trafilatura uses is up to trafilatura's globals: its
    own, or, in an extraction worker, the accelerator's equivalents (same results).
    """
    tree = _prune_raw(tree, markup)
    if not forum:  # on forums, comment-like containers hold the posts
        tree = _prune_comments(tree, markup)
    options = _FAST
    body, text = extract_content(convert_tags(tree_cleaning(copy(tree), options), options), options)
    full = not fast and len(text) < _FALLBACK_BELOW
    if full:
        options = _FULL
        cleaned = tree_cleaning(copy(tree), options)
        body, text = compare_extraction(cleaned, copy(tree), body, text, options)
    # rescue: baseline on the whole page, kept only if it finds more text
    if len(text) < options.min_extracted_size:
        b_body, b_text, b_len = baseline(tree)
        if b_len > len(text):
            body, text = b_body, b_text
    # escalation: a short extraction covering little of the page is retried in recall mode
    if 0 < len(text) < ESCALATION_MAX_LENGTH and _covers_little(len(text), tree):
        r_options = _RECALL_FULL if full else _RECALL_FAST
        cleaned = tree_cleaning(copy(tree), r_options)
        backup = copy(cleaned) if full else None
        r_body, r_text = extract_content(convert_tags(cleaned, r_options), r_options)
        if backup is not None:
            r_body, r_text = compare_extraction(backup, copy(tree), r_body, r_text, r_options)
        r_long = len(r_text) >= options.min_extracted_size
        j_body, j_text = justext_rescue(copy(tree), options) if full else (None, "")
        if len(j_text) > len(r_text) and len(j_text) > ESCALATION_JUSTEXT_RATIO * len(text):
            body, text = j_body, j_text
        elif r_long and len(r_text) > ESCALATION_ACCEPT_RATIO * len(text):
            body, text = r_body, r_text
    return body if len(text) >= options.min_output_size else None


