"""The LSH band index: band keys kept on each entry (entries.bands), indexed in
entry_bands, and the write-behind buffer that batches the index writes.

Written per entry, an entry's random band keys each dirty a random B-tree page of
entry_bands, and every feed's commit rewrites them all. So a writer keeps the keys of the
entries it inserted in memory (a BandBuffer, seen by candidate lookups alongside
entry_bands) and writes them in one sorted batch (flush_bands: each page touched once)."""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterator, Sequence

# Entries whose band keys wait in memory before they are written to entry_bands in one
# batch. Counted in entries, not keys: a sorted batch touches leaf pages all over the index,
# so each flush costs about the index's size; counted in keys, the containment family's
# extra keys per article would also have multiplied the number of flushes.
BAND_FLUSH_ENTRIES = 1_250


def pack_bands(keys: Sequence[int]) -> bytes | None:
    """Band keys as stored in entries.bands: signed 64-bit little-endian integers."""
    return struct.pack(f"<{len(keys)}q", *keys) if keys else None


def unpack_bands(blob: bytes | None) -> list[int]:
    if not blob:
        return []
    return [k for (k,) in struct.iter_unpack("<q", blob)]


class BandBuffer:
    """Band keys of entries inserted since the last flush (key -> entry ids).

    One id per key in ``_first``; the rare further ids of a shared key (most likely a
    near-duplicate of a pending entry) in ``_more``. ``_staged``: the ids staged by the open
    transaction, unstaged again if it rolls back (their rows are gone: so are their keys)."""

    def __init__(self) -> None:
        self._first: dict[int, int] = {}
        self._more: dict[int, list[int]] = {}
        self._of: dict[int, tuple[int, ...]] = {}
        self._staged: list[int] = []

    def __len__(self) -> int:
        """Entries whose keys wait in memory (what BAND_FLUSH_ENTRIES bounds)."""
        return len(self._of)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._of

    @property
    def rows(self) -> int:
        """Distinct band keys waiting."""
        return len(self._first)

    def keys_of(self, entry_id: int) -> tuple[int, ...]:
        return self._of.get(entry_id, ())

    def stage(self, entry_id: int, keys: Sequence[int]) -> None:
        keys = tuple(keys)
        self._of[entry_id] = keys
        first = self._first
        if first.keys().isdisjoint(keys):  # the usual case, at C speed
            first.update(dict.fromkeys(keys, entry_id))
        else:
            for k in keys:
                if k in first:
                    self._more.setdefault(k, []).append(entry_id)
                else:
                    first[k] = entry_id
        self._staged.append(entry_id)

    def unstage(self, entry_id: int) -> None:
        """Rare (a rollback, new keys for a pending entry): the slow path is fine."""
        for k in self._of.pop(entry_id, ()):
            more = self._more.get(k)
            if self._first.get(k) == entry_id:
                if more:
                    self._first[k] = more.pop(0)
                else:
                    del self._first[k]
            elif more and entry_id in more:
                more.remove(entry_id)
            if more is not None and not more:
                del self._more[k]

    def ids_for(self, keys: Sequence[int]) -> set[int]:
        """The waiting entries sharing any of ``keys``."""
        ids: set[int] = set()
        for k in self._first.keys() & set(keys):
            ids.add(self._first[k])
            ids.update(self._more.get(k, ()))
        return ids

    def shared_counts(self, keys: Sequence[int]) -> dict[int, int]:
        """For each waiting entry sharing any of ``keys``: how many of them it shares."""
        counts: dict[int, int] = {}
        for k in self._first.keys() & set(keys):
            for entry_id in (self._first[k], *self._more.get(k, ())):
                counts[entry_id] = counts.get(entry_id, 0) + 1
        return counts

    def pairs(self) -> Iterator[tuple[int, int]]:
        """Every waiting (band key, entry id)."""
        yield from self._first.items()
        for k, more in self._more.items():
            for entry_id in more:
                yield k, entry_id

    def commit(self) -> None:
        """The open transaction committed: its entries stay staged."""
        self._staged.clear()

    def rollback(self) -> None:
        """The open transaction rolled back: its entries' keys go with their rows."""
        for entry_id in self._staged:
            self.unstage(entry_id)
        self._staged.clear()

    def clear(self) -> None:
        """Everything is on disk now."""
        self._first.clear()
        self._more.clear()
        self._of.clear()
        self._staged.clear()


def set_bands(c: sqlite3.Connection, buffer: BandBuffer, entry_id: int,
              keys: Sequence[int], contain: Sequence[int] = ()) -> None:
    """Replace an entry's band keys (both families: ``contain`` are its containment keys).
    Rare (an edit, an article replacing a teaser), so written through to entry_bands at
    once, unless the entry is still waiting in memory."""
    c.execute("UPDATE entries SET bands = ?, contain_bands = ? WHERE id = ?",
              (pack_bands(keys), pack_bands(contain), entry_id))
    c.execute("DELETE FROM entry_bands WHERE entry_id = ?", (entry_id,))
    keys = (*keys, *contain)
    if entry_id in buffer:
        buffer.unstage(entry_id)
        if keys:
            buffer.stage(entry_id, keys)
    elif keys:
        c.executemany(
            "INSERT OR IGNORE INTO entry_bands(band_key, entry_id) VALUES (?, ?)",
            [(k, entry_id) for k in keys],
        )


def write_bands(c: sqlite3.Connection, buffer: BandBuffer) -> int:
    """Write the band keys of entries not yet in entry_bands, in key order, in the caller's
    transaction; returns the rows written. This writer's entries come from ``buffer``;
    others' (another process, or a crash before the last flush) from entries.bands."""
    row = c.execute(
        "SELECT value FROM store_state WHERE name = 'bands_indexed_upto'").fetchone()
    upto = int(row[0]) if row else 0
    top = int(c.execute("SELECT COALESCE(MAX(id), 0) FROM entries").fetchone()[0])
    pairs = list(buffer.pairs())
    missing = [
        i for (i,) in c.execute(
            "SELECT id FROM entries WHERE id > ?"
            " AND (bands IS NOT NULL OR contain_bands IS NOT NULL)", (upto,))
        if i not in buffer
    ]
    for lo in range(0, len(missing), 500):
        chunk = missing[lo : lo + 500]
        marks = ",".join("?" * len(chunk))
        for entry_id, blob, contain in c.execute(
                f"SELECT id, bands, contain_bands FROM entries WHERE id IN ({marks})",
                chunk):
            pairs += [(k, entry_id) for k in (*unpack_bands(blob), *unpack_bands(contain))]
    pairs.sort()
    c.executemany("INSERT OR IGNORE INTO entry_bands(band_key, entry_id) VALUES (?, ?)",
                  pairs)
    c.execute("INSERT OR REPLACE INTO store_state(name, value)"
              " VALUES ('bands_indexed_upto', ?)", (max(upto, top),))
    return len(pairs)
