"""The decode cache of ingest: what the last run learnt about each file, so a night decodes only
the files that are new or changed (DVC out `data/ingest_cache/`, `persist: true`, not cached).

Two tables, both keyed so that a hit can only give what a full decode would give:
- the file index `files.npz` (path, size, mtime_ns, ctime_ns, inode, sha256) of the last run: a
  regular file whose lstat still shows the same size, mtime, ctime and inode is taken to hold the
  same bytes, so it is not read again (`ingest.trust_file_stat`). This trusts the kernel to update
  ctime on every write (user space cannot set ctime back; `touch -r`, `cp -p`, editors and
  `git checkout` all change it), and it distrusts entries whose mtime or ctime is within
  `RACY_NS` of the moment the index was taken (a write in the same timestamp tick, as git's
  "racy" index entries): those files are read and hashed again.
- the decode results `entries.npz` + `pixels.npy`: by sha256 of the file's bytes, the decoded
  pixels (uint8 (M, H, W, C)), source width, height and mode and the dHash of the pixels, or the
  quarantine reason a decode gave. They are valid only under the same `decode_key`: a hash of the
  decode options, Pillow's version and the source of the decoding code (images.py and
  duplicates.py), so new options or new decoding code decode everything again.
- the near-duplicate memo `near.npz` (`duplicates.NearMemo`): the distinct pictures compared and
  their near pairs, valid under the same decode key and near_duplicate_bits / _mad, so a night
  compares only its new pictures with the others.
Checks that depend on the path rather than the bytes (links, special files, zero-byte and
oversize files, unreadable files) are never cached: they run on every file every night.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import PIL

from edge_pipeline.artifacts import catalog as files
from edge_pipeline.config.quality import Ingest
from edge_pipeline.core.io import atomic_path, write_json
from edge_pipeline.quality import duplicates, images
from edge_pipeline.quality.duplicates import NearMemo

FORMAT = 1  # layout of the cache directory; another value is ignored (decoded again)
RACY_NS = 2_000_000_000  # 2 s: FAT's mtime tick, the coarsest of the common file systems
FILE_COLUMNS = ["path", "size", "mtime_ns", "ctime_ns", "inode", "sha256"]
ENTRY_COLUMNS = ["sha256", "row", "width", "height", "mode", "dhash", "reason", "detail"]
DECODE_OPTIONS = (
    "image_size",
    "channels",
    "formats",
    "max_pixels",
    "max_decode_mb",
    "resample",
)


def decode_key(opts: Ingest) -> str:
    """sha256 of everything a decode result depends on besides the file's bytes."""
    h = hashlib.sha256()
    chosen = {k: getattr(opts, k) for k in DECODE_OPTIONS}
    h.update(json.dumps([FORMAT, PIL.__version__, chosen], default=list).encode())
    for module in (images, duplicates):
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Decoded:
    """One decode result: `pixels` uint8 (H, W, C) or None with the quarantine reason."""

    pixels: np.ndarray | None
    width: int = 0
    height: int = 0
    mode: str = ""
    dhash: int = 0
    reason: str = ""
    detail: str = ""


@dataclass
class DecodeCache:
    """The last run's file index and decode results, and what this run adds (see the module)."""

    key: str  # decode_key of this run's options
    trust_stat: bool  # ingest.trust_file_stat
    old_files: dict[str, tuple[int, int, int, int, str]] = field(default_factory=dict)
    old_scan_ns: int = 0  # when the old file index was taken
    old_entries: dict[str, int] = field(default_factory=dict)  # sha256 -> index in old_table
    old_table: dict[str, np.ndarray] = field(default_factory=dict)  # ENTRY_COLUMNS + pixels
    files: dict[str, tuple[int, int, int, int, str]] = field(default_factory=dict)
    entries: dict[str, Decoded] = field(default_factory=dict)
    scan_ns: int = field(default_factory=time.time_ns)
    near_settings: list = field(default_factory=list)  # [near_duplicate_bits, _mad]
    old_near: NearMemo | None = None  # the last run's near pairs under the same settings
    near: NearMemo = field(default_factory=NearMemo)  # this run's
    stat_trusted: int = 0  # files not read again
    reused: int = 0  # decode results taken from the last run

    def known_digest(self, root: Path, rel: str, *, max_bytes: int) -> str | None:
        """The sha256 of `root/rel` from the index when its stat is unchanged (and not racy)
        and it is a regular file that `images.read_checked` would read; None otherwise."""
        try:
            st = os.lstat(os.path.join(root, rel))
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode) or not 0 < st.st_size <= max_bytes:
            return None
        now = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        old = self.old_files.get(rel)
        if old is not None and old[4] in self.old_entries:
            racy = max(st.st_mtime_ns, st.st_ctime_ns) + RACY_NS > self.old_scan_ns
            if self.trust_stat and old[:4] == now and not racy:
                self.files[rel] = old
                self.stat_trusted += 1
                return old[4]
        return None

    def note_file(self, root: Path, rel: str, digest: str) -> None:
        """Record the stat and sha256 of a regular file read this run."""
        st = os.lstat(os.path.join(root, rel))
        if stat.S_ISREG(st.st_mode):
            self.files[rel] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, digest)

    def lookup(self, digest: str) -> Decoded | None:
        """The last run's decode result of these bytes (kept for the next run), or None."""
        k = self.old_entries.get(digest)
        if k is None:
            return None
        t = self.old_table
        row = int(t["row"][k])
        hit = Decoded(
            None if row < 0 else t["pixels"][row],
            int(t["width"][k]),
            int(t["height"][k]),
            str(t["mode"][k]),
            int(t["dhash"][k]),
            str(t["reason"][k]),
            str(t["detail"][k]),
        )
        self.entries[digest] = hit
        self.reused += 1
        return hit

    def changes(self) -> pd.DataFrame:
        """path, change (new | changed | removed), sha256_before, sha256_now: files of the last
        run's index against this run's (both: the labelled image files that were read)."""
        rows = [
            (
                p,
                "new" if p not in self.old_files else "changed",
                self.old_files.get(p, [""] * 5)[4],
                f[4],
            )
            for p, f in self.files.items()
            if p not in self.old_files or self.old_files[p][4] != f[4]
        ] + [(p, "removed", f[4], "") for p, f in self.old_files.items() if p not in self.files]
        return pd.DataFrame(sorted(rows), columns=["path", "change", "sha256_before", "sha256_now"])

    def counts(self, decoded: int) -> dict[str, int]:
        """Figures for metrics/ingest.json `incremental`."""
        kinds = self.changes()["change"].value_counts()
        same = sum(1 for p, f in self.files.items() if self.old_files.get(p, [""] * 5)[4] == f[4])
        return {
            "new": int(kinds.get("new", 0)),
            "changed": int(kinds.get("changed", 0)),
            "removed": int(kinds.get("removed", 0)),
            "unchanged": same,
            "not_read_again": self.stat_trusted,
            "decoded": decoded,
            "reused": self.reused,
        }


def load(directory: Path, opts: Ingest, *, reuse: bool = True) -> DecodeCache:
    """The cache in `directory` (empty when missing, of another FORMAT, or `reuse` is False);
    decode results only when they were made under this run's `decode_key`."""
    cache = DecodeCache(key=decode_key(opts), trust_stat=opts.trust_file_stat)
    cache.near_settings = [opts.near_duplicate_bits, opts.near_duplicate_mad]
    meta_path = directory / files.CACHE_META
    if not reuse or not meta_path.is_file():
        return cache
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        return cache
    with np.load(directory / files.CACHE_FILES) as index:
        stats = zip(*(index[c].tolist() for c in FILE_COLUMNS[1:5]), strict=True)
        shas = [s.decode() for s in index["sha256"].tolist()]
        cache.old_files = {p: (*st, h) for p, st, h in zip(index["path"].tolist(), stats, shas,
                                                             strict=True)}  # fmt: skip
    cache.old_scan_ns = int(meta["scan_ns"])
    if meta.get("key") == cache.key:
        with np.load(directory / files.CACHE_ENTRIES) as table:
            cache.old_table = {c: table[c] for c in ENTRY_COLUMNS}
        cache.old_table["pixels"] = np.load(directory / files.CACHE_PIXELS)
        shas = [s.decode() for s in cache.old_table["sha256"].tolist()]
        cache.old_entries = dict(zip(shas, range(len(shas)), strict=True))
        if meta.get("near") == cache.near_settings:
            with np.load(directory / files.CACHE_NEAR) as near:
                pairs = zip(near["a"].tolist(), near["b"].tolist(), near["distance"].tolist(),
                            strict=True)  # fmt: skip
                cache.old_near = NearMemo(
                    {k.decode() for k in near["pictures"].tolist()},
                    {(a.decode(), b.decode()): d for a, b, d in pairs},
                )
    return cache


def save(cache: DecodeCache, directory: Path, *, image_shape: tuple[int, int, int]) -> None:
    """Write this run's file index and decode results (only those of this run's files) to
    `directory`, atomically; `image_shape` (H, W, C) shapes an empty pixel table."""
    entries = sorted(cache.entries.items())
    decoded = [d.pixels for _, d in entries if d.pixels is not None]
    rows = np.cumsum([d.pixels is not None for _, d in entries], dtype=np.int64) - 1
    paths = sorted(cache.files)
    with atomic_path(directory) as out:
        out.mkdir()
        stats = np.array([cache.files[p][:4] for p in paths], np.int64).reshape(-1, 4)
        np.savez(
            out / files.CACHE_FILES,
            path=np.array(paths, dtype=str),
            **{c: stats[:, k] for k, c in enumerate(FILE_COLUMNS[1:5])},
            sha256=np.array([cache.files[p][4] for p in paths], dtype="S64"),
        )
        np.savez(
            out / files.CACHE_ENTRIES,
            sha256=np.array([sha for sha, _ in entries], dtype="S64"),
            row=np.where([d.pixels is not None for _, d in entries], rows, -1).astype(np.int64),
            width=np.array([d.width for _, d in entries], np.int64),
            height=np.array([d.height for _, d in entries], np.int64),
            mode=np.array([d.mode for _, d in entries], dtype=str),
            dhash=np.array([d.dhash for _, d in entries], np.uint64),
            reason=np.array([d.reason for _, d in entries], dtype=str),
            detail=np.array([d.detail for _, d in entries], dtype=str),
        )
        stacked = np.stack(decoded) if decoded else np.zeros((0, *image_shape), np.uint8)
        np.save(out / files.CACHE_PIXELS, stacked)
        near = sorted(cache.near.pairs.items())
        np.savez(
            out / files.CACHE_NEAR,
            pictures=np.array(sorted(cache.near.pictures), dtype="S40"),
            a=np.array([a for (a, _), _ in near], dtype="S40"),
            b=np.array([b for (_, b), _ in near], dtype="S40"),
            distance=np.array([d for _, d in near], np.float64),
        )
        meta = {"format": FORMAT, "key": cache.key, "scan_ns": cache.scan_ns,
                "near": cache.near_settings}  # fmt: skip
        write_json(out / files.CACHE_META, meta)
