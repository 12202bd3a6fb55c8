"""The decode loop of ingest: every labelled file read safely and decoded once per distinct content,
or its result taken from the decode cache (`decode_cache`) when the same bytes were decoded under
the same options last night. Shapes: M files, U distinct contents, (H, W, C) = ingest.image_size
x channels.

Steps: one lstat per file (the only per-file work for a file the cache already knows, besides its
path's share of the listing); the files the cache cannot vouch for are read and hashed; the
distinct digests are looked up in the cache at once (numpy), and only the misses are decoded.
"""

from __future__ import annotations

import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edge_pipeline.config.quality import Ingest
from edge_pipeline.core.logs import progress
from edge_pipeline.quality.decode_cache import DecodeCache, Decoded, Entries, FileIndex, assemble
from edge_pipeline.quality.images import Quarantined, decode, read_checked, sha256

_FILE_TYPE = 0o170000  # the file-type bits of st_mode (S_IFMT)


@dataclass
class DecodeRun:
    """What the loop found for M files `ids` (index i = ids[i])."""

    entries: Entries  # the U decode results of this run's distinct contents (cache.entries)
    entry: np.ndarray  # int64 (M,): row of each file's bytes in `entries`, -1 if never hashed
    size: np.ndarray  # int64 (M,): bytes of each file
    bad: dict[int, tuple[str, str]]  # i -> quarantine reason, detail
    copies: dict[int, int]  # i -> j: ids[i] has the bytes of the earlier ids[j]

    def usable(self) -> np.ndarray:
        """bool (M,): the files that are first with their bytes, decoded, and not in `bad`."""
        ok = self.entry >= 0
        ok[ok] = self.entries.row[self.entry[ok]] >= 0
        ok[list(self.copies)] = False
        ok[list(self.bad)] = False
        return ok


def lstat_all(root: Path, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(int64 (M, 4) size, mtime_ns, ctime_ns, inode; bool (M,) regular file) from one lstat of
    each file `root/ids[i]` (zeros and False where it fails)."""
    base, rows, modes = os.path.join(root, ""), [], []
    for rel in ids:
        try:
            st = os.lstat(base + rel)
        except OSError:
            rows.append((0, 0, 0, 0))
            modes.append(0)
            continue
        rows.append((st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
        modes.append(st.st_mode)
    stats = np.array(rows, np.int64).reshape(-1, 4)
    return stats, (np.array(modes, np.int64) & _FILE_TYPE) == stat.S_IFREG


def decode_all(root: Path, ids: list[str], opts: Ingest, cache: DecodeCache) -> DecodeRun:
    """Read, check and decode the M files `root/ids[i]` (see the module docstring); the cache
    records this run's files and results for the next run."""
    paths = np.array(ids, dtype=str)
    stats, regular = lstat_all(root, ids)
    trusted, digests = cache.unchanged(paths, stats, regular, max_bytes=opts.max_bytes)
    size, bad, data_of = stats[:, 0].copy(), {}, {}
    unread = np.flatnonzero(~trusted).tolist()
    for i in progress(unread, total=len(unread), desc="ingest: read"):
        try:
            data = read_checked(root, ids[i], max_bytes=opts.max_bytes)
        except Quarantined as q:
            bad[i] = (q.reason, q.detail)
            continue
        except OSError as e:  # unreadable (permissions, I/O): the file's problem, not the run's
            bad[i] = ("undecodable", f"cannot read: {e}")
            continue
        digests[i], size[i], data_of[i] = sha256(data), len(data), data
    hashed = np.flatnonzero(digests != b"")
    recorded = hashed[regular[hashed]]
    cache.files = FileIndex(paths[recorded], stats[recorded], digests[recorded])

    distinct, first, inverse = np.unique(digests[hashed], return_index=True, return_inverse=True)
    first = hashed[first]  # the first file with each distinct content
    is_copy = hashed != first[inverse]
    copies = dict(zip(hashed[is_copy].tolist(), first[inverse][is_copy].tolist(), strict=True))
    old = cache.old_entries
    at = old.find(distinct) if old is not None else np.full(len(distinct), -1, np.int64)
    misses = first[at < 0].tolist()  # never trusted by stat, so read above
    fresh = []
    with warnings.catch_warnings():  # max_pixels is checked per file; Pillow's warning is noise
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for i in progress(misses, total=len(misses), desc="ingest: decode"):
            fresh.append(_decode(data_of[i], opts))
    shape = (*opts.image_size, opts.channels)
    cache.entries = assemble(distinct, old, at, fresh, image_shape=shape)
    cache.reused, cache.decoded = int((at >= 0).sum()), len(fresh)
    entry = np.full(len(ids), -1, np.int64)
    entry[hashed] = inverse
    e = cache.entries
    for i in first[e.row < 0].tolist():  # bytes that decode to a quarantine reason
        k = entry[i]
        bad[i] = (str(e.reason[k]), str(e.detail[k]))
    return DecodeRun(e, entry, size, bad, copies)


def _decode(data: bytes, opts: Ingest) -> Decoded:
    """`images.decode` as a Decoded (pixels, or the quarantine reason: both are cached)."""
    try:
        pixels, width, height, mode = decode(data, opts)
    except Quarantined as q:
        return Decoded(None, reason=q.reason, detail=q.detail)
    return Decoded(pixels, width, height, mode)
