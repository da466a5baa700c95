"""Story dedup: recognise the same story across outlets and re-posts.

Precision first: a wrong merge hides news, a missed merge only shows a story twice. Every
rule below errs on the side of *not* merging.

Signals, strongest first (:func:`decide`)
  1. ``url``       same normalised URL (:func:`normalize_url`) as a stored entry.
  2. ``canonical`` one side's canonical URL (from its article page, normalised) equals the
                   other side's URL or canonical URL.
  3. ``text``      same :func:`text_hash`: the identical body re-posted (any headline).
  4. ``near``      MinHash estimated Jaccard similarity >= threshold, with guards.
  5. ``containment`` most of the shorter article, in one long run, appears in the other
                   (wire copy under another outlet's headline, lede and closing lines).
A URL that names no page (a bare host: some feeds link every item to the home page, some
sites point every canonical there) never matches.

Tokenisation (:func:`tokens`)
  NFKC; soft hyphens and zero-width characters removed; apostrophes inside words removed
  (Ukrainian ``з'явиться``/``з’явиться``/``зʼявиться`` are one token); Turkic ``İ``/``ı``
  folded to ``i`` before case folding (Azerbaijani/Turkish spellings meet English ones);
  Russian ``ё`` folded to ``е``. A token is a run of Unicode letters, digits and combining
  marks (so Latin, Cyrillic, Armenian, Georgian, Indic scripts work); each Han/Kana
  character is its own token because those scripts do not separate words with spaces.

Shingles and permutations (:func:`signature`)
  The token stream of the title followed by the text is cut into overlapping 4-word
  shingles (4 is long enough that two different stories rarely share one, short enough
  that an edit destroys only 4 shingles). Each shingle is hashed to 32 bits with BLAKE2b;
  128 hash functions h_i(x) = ((a_i*x + b_i) mod 2**64) >> 32 (Dietzfelbinger's
  multiply-add-shift, strongly universal for 32-bit keys) with a_i, b_i derived from
  BLAKE2b of a fixed label, so signatures are identical in every process, platform and
  numpy version. The signature is the 128 minima as little-endian uint32: 512 bytes.
  Texts under 20 tokens get no signature (and no text hash): they mean too little.

Bands (:func:`band_keys`)
  32 bands of 4 rows; each band's 4 minima and its index are hashed (BLAKE2b) to a signed
  64-bit int for an SQLite INTEGER column. Two texts with Jaccard s share at least one key
  with probability 1-(1-s**4)**32: 0.9998 at s=0.7, 0.988 at 0.6, 0.87 at 0.5, 0.23 at 0.3,
  ~0 for unrelated texts; so the candidate lookup finds nearly every pair above any
  threshold an operator would set (>= 0.6), and :func:`decide` sorts out the rest.

Containment bands (:func:`containment_keys`)
  Jaccard is measured over the union of both texts: an agency text carried whole inside an
  article three times its length has Jaccard 1/3, which the 32x4 bands find with
  probability 1-(1-(1/3)**4)**32 = 0.33. A second family of CONTAIN_BANDS=64 bands of
  CONTAIN_ROWS=2 rows over the same signature (its own seeds: keys never equal a 32x4 key)
  is kept for texts of SHORT_TEXT words or more (articles, not feed summaries), in the same
  band index. A stored entry is a containment candidate when it shares at least
  CONTAIN_MIN_SHARED=2 of these keys: with per-band probability p = s**2, that happens with
  probability 1-(1-p)**64-64p(1-p)**63: ~1 at s=0.5, 0.995 at 1/3 (a text whole inside
  one three times its length), 0.98 at 0.3, 0.92 at 0.25, 0.73 at 0.2. Requiring two keys
  rather than one keeps unrelated texts out even in a large store: two texts of one language sharing a
  few common phrases (s ~ 0.002) meet on two keys with probability ~C(64,2)*s**4 ~ 3e-8 (on
  one key: 64*s**2 ~ 3e-4, which at a million stored entries would be hundreds of false
  candidates per lookup); a key's posting list holds ~N*s**2 unrelated entries, so a lookup
  reads 64 short lists whatever the store's size.

One index family per text (:func:`lookup_keys`)
  With containment on, an article (SHORT_TEXT words or more) is indexed under its
  containment keys only: they find its near-duplicates too, and better than the 32x4
  family (a pair with Jaccard s >= 0.5 shares two of the 64 keys with probability ~1, at
  0.3 still 0.98), so a second family of 32 rows per article would buy nothing. A summary
  (under SHORT_TEXT words) is indexed under its 32x4 keys only (it is never a containment
  candidate). Where the two meet, each side also looks up, without storing, the keys of
  the other's family: an article its 32x4 keys (a summary within the length guard of
  ``near``, or an entry stored while containment was off), a summary its containment keys
  when it is long enough (SHORT_TEXT * LENGTH_SLACK * threshold words) for ``near`` to
  accept an article. A lookup is a few index probes; every stored key costs a B-tree
  insert in each of entry_bands' two indexes.

Containment decision
  For a containment candidate, the two texts' bodies (titles left out: each outlet writes
  its own) are compared exactly, as 4-word shingles: ``share`` is the fraction of the
  shorter body's shingles found in the longer body, ``run`` the longest stretch of
  consecutive shorter-body shingles all found there, over the shorter's shingle count.
  They join when share >= CONTAIN_SHARE (0.6) and run >= CONTAIN_RUN (0.4), the shorter
  body has SHORT_TEXT words or more and at least CONTAIN_RATIO (0.25) of the longer's
  words. Why each:
  * share 0.6: a copy with its own lede and closing keeps most of the agency text; a
    follow-up reusing an earlier story as background reuses at most about half of it.
  * run 0.4: the body, not sentences: a live blog or an analysis quoting an agency shares
    a sentence or a paragraph here and there, and templated daily items (the same report
    with new figures) share the words between the figures, never two fifths of the text in
    one piece, while a copy (even one with a paragraph dropped or inserted) keeps long
    stretches.
  * ratio 0.25: a digest or live blog more than four times the length of an item it quotes
    whole is not that item's story; copies run from 1:1 to 1:3 (a short agency text inside
    a long feature).
  A MinHash estimate of the share (from the estimated Jaccard and the two word counts:
  share = J(1+n_long/n_short)/(1+J)) skips the exact comparison when it is under
  CONTAIN_GATE (0.3, some three standard errors under the bar), so a chance candidate costs
  one signature comparison, not a tokenisation.
  The score is the share. Like every rule here it runs only after the stronger ones fail.

Threshold
  ``threshold`` is the estimated Jaccard similarity of the two shingle sets (share of
  4-word sequences in common). 0.7 (the default ``dedup_threshold``) keeps a copy whose
  lead was trimmed, headline rewritten, byline/boilerplate swapped or a paragraph added or
  dropped, and rejects different stories on one topic (which share well under 0.3). The
  estimate's standard error is sqrt(s(1-s)/128), about 0.04 at 0.7. On the evaluation set
  in tests/test_dedup.py precision is 1.0 from 0.6 up; below, templated daily items (the
  same exchange-rate report with new figures) and follow-ups reusing half of an earlier
  story start to merge. Independent rewrites of one event by two outlets share almost no
  4-word sequences: they are not merged at any sane threshold (that needs another signal).

Guards on ``near`` (why)
  * Length: the shorter text must have at least ``0.75 * threshold`` of the longer one's
    words. Sets with Jaccard s have a size ratio >= s, so a pair failing this cannot truly
    be that similar: it only passed through MinHash noise (or one text contains the other
    as a small part, e.g. a digest quoting a brief: not the same story).
  * Short texts (under 50 words, i.e. feed summaries rather than articles): a shared
    standfirst or boilerplate sentence dominates them, so the titles must also share a
    content word (4+ letters or a number) or the similarity must be >= 0.9.
  The same title guard applies to a ``text`` match of a short text: some feeds repeat one
  tagline as every item's description, which must not merge their items. 50 identical
  words or more are a copy whatever the headline.

Tie-break
  Stronger signal first, then higher score, then the earliest published candidate, then
  the lowest entry id: deterministic whatever order the store returns candidates in.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlsplit

if TYPE_CHECKING:
    import numpy as np

from aggregator.errors import DedupError
from aggregator.models import BandKeys, Candidate, StoryMatch

__all__ = [
    "BANDS",
    "MIN_TOKENS",
    "NUM_PERM",
    "ROWS",
    "SHINGLE",
    "band_keys",
    "containment_keys",
    "decide",
    "lookup_keys",
    "normalize_url",
    "signature",
    "similarity",
    "text_hash",
    "tokens",
]

SHINGLE = 4  # words per shingle
NUM_PERM = 128  # MinHash permutations (uint32 each)
BANDS = 32
ROWS = 4  # BANDS * ROWS == NUM_PERM
MIN_TOKENS = 20  # below this a text gets no hash nor signature
SHORT_TEXT = 50  # under this many words a text is a summary: titles must agree too
SHORT_TEXT_SURE = 0.9  # ... unless the short texts are this similar
LENGTH_SLACK = 0.75  # min/max word count must be >= LENGTH_SLACK * threshold
SIGNATURE_BYTES = NUM_PERM * 4
CONTAIN_BANDS = 64  # the containment band family: more bands of fewer rows
CONTAIN_ROWS = 2  # CONTAIN_BANDS * CONTAIN_ROWS == NUM_PERM
CONTAIN_MIN_SHARED = 2  # containment keys a stored entry must share to be a candidate
CONTAIN_SHARE = 0.6  # of the shorter body's shingles found in the longer body
CONTAIN_RUN = 0.4  # longest run of consecutive shared shingles, of the shorter's shingles
CONTAIN_RATIO = 0.25  # shorter/longer word count: at least this
CONTAIN_GATE = 0.3  # MinHash share estimate under this: not compared exactly

_REASON_RANK = {"url": 0, "canonical": 1, "text": 2, "near": 3, "containment": 4}

# --------------------------------------------------------------------------- tokens


def _mark_class() -> str:
    """Character class of the combining marks (\\w misses them; Thai, Indic, Arabic need them)."""
    ranges: list[tuple[int, int]] = []
    for cp in [*range(0x0300, 0x2000), *range(0x20D0, 0x2100), *range(0xFE20, 0xFE30)]:
        if unicodedata.category(chr(cp)).startswith("M"):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    return "".join(f"{chr(a)}-{chr(b)}" if a != b else chr(a) for a, b in ranges)


# Han ideographs, kana and their iteration marks: one token per character.
_IDEO = "\u3005\u3007\u3021-\u3029\u3038-\u303b\u3041-\u3096\u309d-\u309f\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_IDEO_RE = re.compile(f"[{_IDEO}]")
_MARKS = _mark_class()
_WORD_RE = re.compile(f"(?:[^\\W_]|[{_MARKS}])+")
_MARK_RE = re.compile(f"[{_MARKS}]")
_SIMPLE_WORD_RE = re.compile(r"[^\W_]+")  # same result when the text has no combining mark
_APOSTROPHES = ("'", "\u2019", "\u02bc", "\u02bb")
_INVISIBLE_RE = re.compile("[\u00ad\u200b-\u200d\u2060\ufeff]")
_APOSTROPHE_RE = re.compile("(?<=\\w)['\u2019\u02bc\u02bb](?=\\w)")


def tokens(text: str) -> list[str]:
    """Normalised words of ``text`` (see the module docstring); [] for empty text."""
    if not text:
        return []
    text = unicodedata.normalize("NFKC", text)
    text = _INVISIBLE_RE.sub("", text)
    if any(a in text for a in _APOSTROPHES):
        text = _APOSTROPHE_RE.sub("", text)
    text = text.replace("İ", "i").replace("ı", "i").casefold()
    text = text.replace("i\u0307", "i").replace("ё", "е")
    if _IDEO_RE.search(text):
        text = _IDEO_RE.sub(r" \g<0> ", text)
    word_re = _WORD_RE if _MARK_RE.search(text) else _SIMPLE_WORD_RE
    return word_re.findall(text)


def text_hash(title: str, text: str) -> str | None:
    """Hash of the normalised tokens of ``text`` (the title is left out so that the same
    body under a rewritten headline still matches); None under MIN_TOKENS tokens."""
    return _text_hash_of(tokens(text))


# --------------------------------------------------------------------------- MinHash


_CHUNK = 8192  # shingles hashed at once (8 MB of uint64 temporaries)


@dataclass(frozen=True)
class _Kernel:
    """numpy and the fixed hash parameters. Built on first use: numpy is a tenth of the
    start-up of a command that never hashes a text (a poll where every feed answers 304)."""

    np: Any
    a: np.ndarray  # the (a, b) of every hash function, from BLAKE2b: stable everywhere
    b: np.ndarray
    fnv: np.uint64
    low32: np.uint64
    shift: np.uint64
    band_seed: np.ndarray
    contain_seed: np.ndarray


@cache
def _kernel() -> _Kernel:
    import numpy

    a = numpy.empty(NUM_PERM, dtype=numpy.uint64)
    b = numpy.empty(NUM_PERM, dtype=numpy.uint64)
    for i in range(NUM_PERM):
        d = hashlib.blake2b(f"aggregator-minhash-v1/{i}".encode(), digest_size=16).digest()
        a[i] = int.from_bytes(d[:8], "little")
        b[i] = int.from_bytes(d[8:], "little")
    return _Kernel(
        np=numpy,
        a=a.reshape(-1, 1),
        b=b.reshape(-1, 1),
        fnv=numpy.uint64(0x100000001B3),
        low32=numpy.uint64(0xFFFFFFFF),
        shift=numpy.uint64(32),
        band_seed=numpy.arange(1, BANDS + 1, dtype=numpy.uint64)
        * numpy.uint64(0x9E3779B97F4A7C15),
        # Seeds of their own (offset past the 32x4 family's): the two families' keys differ.
        contain_seed=numpy.arange(1001, 1001 + CONTAIN_BANDS, dtype=numpy.uint64)
        * numpy.uint64(0x9E3779B97F4A7C15),
    )


def _shingle_hashes(stream: list[str]) -> np.ndarray:
    """32-bit hashes of every SHINGLE-word window: each token is hashed once (CRC-32, stable
    across processes), then windows are combined with vectorised multiply-xor arithmetic
    (uint64, wrapping), so the cost is one C call per token rather than per shingle."""
    k = _kernel()
    np = k.np
    n = len(stream) - SHINGLE + 1
    if n <= 0:
        return np.empty(0, dtype=np.uint64)  # type: ignore[no-any-return]
    # One encode for the whole stream (tokens never contain \x1f), then crc32 per token.
    words = "\x1f".join(stream).encode("utf-8").split(b"\x1f")
    th = np.fromiter(map(zlib.crc32, words), dtype=np.uint64, count=len(stream))
    h = th[:n].copy()
    for i in range(1, SHINGLE):
        h = (h * k.fnv) ^ th[i : i + n]
    h ^= h >> k.shift
    return h & k.low32  # type: ignore[no-any-return]


def _signature_of(body: list[str], title_tokens: list[str]) -> bytes | None:
    if len(body) < MIN_TOKENS:
        return None
    k = _kernel()
    np = k.np
    x = _shingle_hashes(title_tokens + body)
    mins = np.full(NUM_PERM, 2**32 - 1, dtype=np.uint64)
    # In chunks: a 100k-word page would otherwise need a 100 MB temporary array.
    for lo in range(0, len(x), _CHUNK):
        # uint64 arithmetic wraps modulo 2**64, which is exactly what multiply-add-shift needs.
        hashed = (k.a * x[lo : lo + _CHUNK] + k.b) >> k.shift
        np.minimum(mins, hashed.min(axis=1), out=mins)
    return mins.astype("<u4").tobytes()


def _text_hash_of(body: list[str]) -> str | None:
    if len(body) < MIN_TOKENS:
        return None
    return hashlib.blake2b("\x1f".join(body).encode("utf-8"), digest_size=16).hexdigest()


def signature(title: str, text: str) -> bytes | None:
    """MinHash signature (NUM_PERM little-endian uint32) of the 4-word shingles of title and
    text; None when the text has fewer than MIN_TOKENS tokens."""
    return _signature_of(tokens(text), tokens(title))


def features(title: str, text: str) -> tuple[str | None, bytes | None, list[int]]:
    """(text_hash, signature, band_keys) from one tokenisation: what the pipeline stores."""
    body = tokens(text)
    sig = _signature_of(body, tokens(title))
    return _text_hash_of(body), sig, band_keys(sig) if sig is not None else []


def _as_array(sig: bytes) -> np.ndarray:
    if not isinstance(sig, bytes | bytearray | memoryview) or len(sig) != SIGNATURE_BYTES:
        size = len(sig) if isinstance(sig, bytes | bytearray | memoryview) else type(sig).__name__
        raise DedupError(f"invalid signature: expected {SIGNATURE_BYTES} bytes, got {size}")
    return _kernel().np.frombuffer(sig, dtype="<u4")  # type: ignore[no-any-return]


def band_keys(sig: bytes) -> list[int]:
    """One signed 64-bit key per LSH band (BANDS bands of ROWS minima, band index mixed in),
    computed for all bands at once."""
    return _keys(sig, BANDS, ROWS, _kernel().band_seed)


def containment_keys(sig: bytes | None, word_count: int) -> list[int]:
    """The containment band keys (CONTAIN_BANDS bands of CONTAIN_ROWS minima, see the module
    docstring) of an article's signature; [] for a text under SHORT_TEXT words or without
    a signature: summaries are never looked up by containment."""
    if sig is None or word_count < SHORT_TEXT:
        return []
    return _keys(sig, CONTAIN_BANDS, CONTAIN_ROWS, _kernel().contain_seed)


def lookup_keys(sig: bytes | None, word_count: int, threshold: float,
                containment: bool, near_keys: Sequence[int] | None = None) -> BandKeys:
    """Which band keys an entry is indexed under and looks up (module docstring, "One
    index family per text"). Without ``containment`` (the setting dedup_containment off):
    the 32x4 family only, as before the containment family existed. ``near_keys``: the
    signature's band_keys when the caller has them already (features)."""
    if sig is None:
        return BandKeys()
    near = tuple(band_keys(sig) if near_keys is None else near_keys)
    if not containment:
        return BandKeys(near=near)
    if word_count >= SHORT_TEXT:
        return BandKeys(contain=tuple(containment_keys(sig, word_count)), probe_near=near)
    if word_count >= SHORT_TEXT * LENGTH_SLACK * threshold:
        # A near-duplicate of an article (which only the containment family indexes).
        return BandKeys(near=near, probe_contain=tuple(
            _keys(sig, CONTAIN_BANDS, CONTAIN_ROWS, _kernel().contain_seed)))
    return BandKeys(near=near)


def _keys(sig: bytes, bands: int, rows: int, seed: np.ndarray) -> list[int]:
    k = _kernel()
    np = k.np
    minima = _as_array(sig).astype(np.uint64).reshape(bands, rows)
    h = seed.copy()
    for r in range(rows):
        h = (h ^ minima[:, r]) * k.fnv
    h ^= h >> np.uint64(29)
    return h.view(np.int64).tolist()  # type: ignore[no-any-return]


def similarity(a: bytes, b: bytes) -> float:
    """Estimated Jaccard similarity of the shingle sets behind two signatures (0..1)."""
    return float(_kernel().np.count_nonzero(_as_array(a) == _as_array(b))) / NUM_PERM


# --------------------------------------------------------------------------- URLs

_TRACKING_PARAMS = frozenset(
    {
        "fbclid", "gclid", "gclsrc", "dclid", "gbraid", "wbraid", "yclid", "msclkid",
        "twclid", "ttclid", "igshid", "li_fat_id", "mc_cid", "mc_eid", "_ga", "_gl",
        "_openstat", "mkt_tok", "ncid", "ocid", "cmpid", "cmp", "icid", "s_cid", "sr_share",
        "ref", "ref_src", "ref_url", "xtor", "wt.mc_id", "wt.zmc", "spm", "rss", "amp",
        "jsessionid", "phpsessid",
    }
)  # fmt: skip
_TRACKING_PREFIXES = ("utm_", "mtm_", "pk_", "hmb_", "_hs", "vero_", "oly_", "at_")
_HOST_PREFIXES = ("www.", "m.", "amp.")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = "-._~!$'()*,;:@/?"
_PCT_RE = re.compile("%([0-9A-Fa-f]{2})")
_STRAY_PCT_RE = re.compile("%(?![0-9A-Fa-f]{2})")
_AMP_EXT_RE = re.compile(r"\.amp(\.[A-Za-z0-9]+)$")
_SESSION_RE = re.compile(r";jsessionid=[^/?#]*", re.IGNORECASE)  # Java servlet sessions


def _norm_pct(s: str) -> str:
    """Decode escaped unreserved characters, upper-case other escapes, escape the rest
    (non-ASCII as UTF-8): raw and percent-encoded Cyrillic paths compare equal."""

    def fix(m: re.Match[str]) -> str:
        c = chr(int(m.group(1), 16))
        return c if c in _UNRESERVED else "%" + m.group(1).upper()

    s = _STRAY_PCT_RE.sub("%25", _PCT_RE.sub(fix, s))
    return quote(s, safe=_PATH_SAFE, errors="surrogateescape")


def _norm_host(host: str) -> str:
    """Lower case; IDN labels always as punycode (``пример.рф`` == ``xn--e1afmkfd.xn--p1ai``)."""
    labels = []
    for label in host.rstrip(".").split("."):
        if label.lower().startswith("xn--"):
            try:
                label = label[4:].encode("ascii").decode("punycode")
            except (UnicodeError, ValueError):
                pass  # not valid punycode: keep it as written
        label = unicodedata.normalize("NFKC", label).lower()
        if not label.isascii():
            label = "xn--" + label.encode("punycode").decode("ascii")
        labels.append(label)
    host = ".".join(labels)
    stripped = True
    while stripped:
        stripped = False
        for prefix in _HOST_PREFIXES:
            if host.startswith(prefix) and "." in host[len(prefix) :]:
                host, stripped = host[len(prefix) :], True
    return host


def _norm_path(path: str) -> str:
    path = _norm_pct(_SESSION_RE.sub("", path))
    segments: list[str] = []
    for seg in path.split("/"):
        if seg in ("", "."):
            continue  # empty segments: doubled and trailing slashes
        if seg == "..":
            if segments:
                segments.pop()
            continue
        segments.append(seg)
    # AMP variants: /amp/<path>, <path>/amp, <name>.amp.<ext>
    if len(segments) > 1 and segments[0].lower() == "amp":
        segments.pop(0)
    if len(segments) > 1 and segments[-1].lower() == "amp":
        segments.pop()
    if segments:
        segments[-1] = _AMP_EXT_RE.sub(r"\1", segments[-1])
    return "/" + "/".join(segments) if segments else ""


def _is_tracking(key: str) -> bool:
    k = key.lower()
    return k in _TRACKING_PARAMS or k.startswith(_TRACKING_PREFIXES)


def _norm_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True, errors="surrogateescape")
    kept = sorted(
        (k, v)
        for k, v in pairs
        if not _is_tracking(k)
        and not (k.lower() in ("outputtype", "output") and v.lower() == "amp")
    )
    return "&".join(
        quote(k, safe=_QUERY_SAFE, errors="surrogateescape")
        + ("=" + quote(v, safe=_QUERY_SAFE, errors="surrogateescape") if v else "")
        for k, v in kept
    )


def normalize_url(url: str) -> str:
    """The form of ``url`` under which copies of one page compare equal (for matching only,
    not for display): http and https alike, host lower case without www./m./amp. and
    default port, IDN as punycode, path with normalised escapes and no dot segments,
    doubled or trailing slashes, AMP variants collapsed, tracking parameters removed and the
    rest sorted, fragment dropped (except ``#!`` routes). Non-web strings come back stripped."""
    raw = url.strip()
    if raw.startswith("//"):
        raw = "https:" + raw
    try:
        parts = urlsplit(raw)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return raw
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host:
        return raw
    host = _norm_host(host)
    # Google's AMP cache: https://<x>.cdn.ampproject.org/c/s/<host>/<path>
    if host.endswith(".cdn.ampproject.org"):
        m = re.match(r"/[civ]/(s/)?(.+)", parts.path)
        if m:
            rest = m.group(2) + ("?" + parts.query if parts.query else "")
            return normalize_url(("https://" if m.group(1) else "http://") + rest)
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    netloc = host if port in (None, 80, 443) else f"{host}:{port}"
    out = "https://" + netloc + _norm_path(parts.path)
    query = _norm_query(parts.query)
    if query:
        out += "?" + query
    if parts.fragment.startswith("!"):
        out += "#" + _norm_pct(parts.fragment)  # hash-bang route: the fragment is the page
    return out


def _names_a_page(url_norm: str) -> bool:
    """False for a bare host, which some feeds give as every item's link."""
    rest = url_norm.split("://", 1)[-1]
    return "/" in rest or "?" in rest or "#" in rest


_LANG_SEGMENT = re.compile(r"[a-z]{2,3}(?:[-_][a-z0-9]{2,4})?", re.IGNORECASE)
_SLUG_WORDS = re.compile(r"[-_.+]")


def names_an_article(url_norm: str) -> bool:
    """Whether a normalised URL may name one article rather than a home page or a section
    (what a language switcher often links to: ``/ru/``, ``/hy/news/``, ``/?lang=ru``).
    Language-code segments are not counted; an article then has two path segments or more,
    or one with a digit or a slug of three words or more, or a query value with a digit
    (``?p=123``)."""
    if not _names_a_page(url_norm):
        return False
    rest = url_norm.split("://", 1)[-1]
    path, _, query = rest.partition("?")
    segments = [x for x in path.split("/")[1:] if x and not _LANG_SEGMENT.fullmatch(x)]
    if len(segments) >= 2:
        return True
    if segments and (any(ch.isdigit() for ch in segments[0])
                     or len(_SLUG_WORDS.split(segments[0])) >= 3):
        return True
    return any(ch.isdigit() for part in query.split("&") for ch in part.partition("=")[2])


# --------------------------------------------------------------------------- decide


def _title_words(title: str) -> set[str]:
    """Content words of a title: 4+ characters, a number, or an ideograph."""
    return {
        t for t in tokens(title) if len(t) >= 4 or any(c.isdigit() for c in t) or _IDEO_RE.match(t)
    }


def _same_canonical(url_norm: str | None, canonical_norm: str | None, c: Candidate) -> bool:
    """One side's canonical URL is the other's URL or canonical URL (a page naming a page)."""
    pairs = (
        (canonical_norm, c.url_norm),
        (canonical_norm, c.canonical_norm),
        (url_norm, c.canonical_norm),
    )
    return any(a and a == b and _names_a_page(a) for a, b in pairs)


def decide(
    *,
    url_norm: str | None,
    canonical_norm: str | None,
    text_hash: str | None,
    signature: bytes | None,
    title: str,
    word_count: int,
    candidates: Sequence[Candidate],
    threshold: float,
    text: str | None = None,
) -> StoryMatch | None:
    """The stored entry this new entry is a copy of, or None (see the module docstring).

    ``word_count`` is the new entry's number of words (``len(tokens(text))``; any count
    works if candidates' ``word_count`` is the same measure). ``threshold`` is the minimum
    estimated Jaccard similarity for a ``near`` match. ``text`` is the new entry's body:
    with it, candidates that carry their text are judged for ``containment`` too.
    """
    if not 0.0 < threshold <= 1.0:
        raise DedupError(f"dedup threshold must be in (0, 1], got {threshold!r}")
    if signature is not None:
        _as_array(signature)
    new = _New(url_norm, canonical_norm, text_hash, signature, title, word_count, threshold,
               text)
    best: tuple[tuple[int, float, float, int], StoryMatch] | None = None
    for c in candidates:
        found = new.judge(c)
        if found is None:
            continue
        reason, score = found
        key = (_REASON_RANK[reason], -score, c.published.timestamp(), c.entry_id)
        if best is None or key < best[0]:
            match = StoryMatch(story_id=c.story_id, entry_id=c.entry_id, reason=reason, score=score)
            best = (key, match)
    return best[1] if best else None


class _New:
    """The new entry being matched; judges one candidate at a time."""

    def __init__(
        self,
        url_norm: str | None,
        canonical_norm: str | None,
        text_hash: str | None,
        signature: bytes | None,
        title: str,
        word_count: int,
        threshold: float,
        text: str | None = None,
    ) -> None:
        self.url_norm = url_norm
        self.canonical_norm = canonical_norm
        self.text_hash = text_hash
        self.signature = signature
        self.title = title
        self.word_count = word_count
        self.threshold = threshold
        self.text = text
        self._title_words: set[str] | None = None  # computed on first need
        self._shingles: np.ndarray | None = None  # of the body, computed on first need

    def titles_agree(self, other: str) -> bool:
        if self._title_words is None:
            self._title_words = _title_words(self.title)
        return bool(self._title_words & _title_words(other))

    def judge(self, c: Candidate) -> tuple[str, float] | None:
        """(reason, score) when ``c`` is the same story, else None."""
        if self.url_norm and c.url_norm == self.url_norm and _names_a_page(self.url_norm):
            return "url", 1.0
        if _same_canonical(self.url_norm, self.canonical_norm, c):
            return "canonical", 1.0
        short = min(self.word_count, c.word_count) < SHORT_TEXT
        if self.text_hash and c.text_hash == self.text_hash:
            if not short or self.titles_agree(c.title):
                return "text", 1.0
        # A damaged stored signature (wrong size) is skipped, not fatal to the ingest.
        if self.signature is None or c.signature is None or len(c.signature) != SIGNATURE_BYTES:
            return None
        score = similarity(self.signature, c.signature)
        if self.near(c, score, short):
            return "near", score
        share = self.contained(c, score)
        return ("containment", share) if share is not None else None

    def near(self, c: Candidate, score: float, short: bool) -> bool:
        if score < self.threshold:
            return False
        ratio = min(self.word_count, c.word_count) / max(self.word_count, c.word_count, 1)
        if ratio < LENGTH_SLACK * self.threshold:
            return False
        return not (short and score < SHORT_TEXT_SURE and not self.titles_agree(c.title))

    def contained(self, c: Candidate, score: float) -> float | None:
        """The share of the shorter body found in the other when that makes them one story
        (module docstring, "Containment decision"), else None."""
        if not self.text or (c.text is None and c.load_text is None):
            return None
        lo, hi = sorted((self.word_count, c.word_count))
        if lo < SHORT_TEXT or lo < CONTAIN_RATIO * hi:
            return None
        if score * (1 + hi / lo) / (1 + score) < CONTAIN_GATE:
            return None  # the MinHash estimate says clearly not: spare the exact comparison
        other = c.text if c.text is not None else c.load_text() if c.load_text else None
        if not other:
            return None
        if self._shingles is None:
            self._shingles = _shingle_hashes(tokens(self.text))
        share, run = containment(self._shingles, _shingle_hashes(tokens(other)))
        if share >= CONTAIN_SHARE and run >= CONTAIN_RUN:
            return round(share, 4)
        return None


def containment(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(share, run) of the shorter of two shingle-hash sequences in the other: the fraction
    of its shingles found in the other, and its longest stretch of consecutive shingles all
    found there, as a fraction of its shingle count. (0, 0) when either is empty."""
    np = _kernel().np
    if len(a) > len(b):
        a, b = b, a
    if len(a) == 0:
        return 0.0, 0.0
    found = np.isin(a, b)
    # Longest run of True: distances between the False positions (with sentinels at both ends).
    gaps = np.flatnonzero(~np.concatenate(([False], found, [False])))
    run = int(np.diff(gaps).max()) - 1
    return float(found.mean()), run / len(a)
