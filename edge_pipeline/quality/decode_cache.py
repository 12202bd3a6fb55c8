"""The decode cache of ingest: what the last run learnt about each file, so a night decodes only
the files that are new or changed (DVC out `data/ingest_cache/`, `persist: true`, not cached).

Three tables, all column arrays (a night handles them with a few numpy operations, not one Python
step per unchanged file), keyed so that a hit can only give what a full decode would give:
- the file index `files.npz` (`FileIndex`: path, size, mtime_ns, ctime_ns, inode, sha256) of the
  last run: a regular file whose lstat still shows the same size, mtime, ctime and inode is taken
  to hold the same bytes, so it is not read again (`ingest.trust_file_stat`). This trusts the
  kernel to update ctime on every write (user space cannot set ctime back; `touch -r`, `cp -p`,
  editors and `git checkout` all change it), and it distrusts entries whose mtime or ctime is
  within `RACY_NS` of the moment the index was taken (a write in the same timestamp tick, as git's
  "racy" index entries): those files are read and hashed again.
- the decode results `entries.npz` + `pixels.npy` (`Entries`): by sha256 of the file's bytes, the
  decoded pixels (uint8 (R, H, W, C)), source width, height and mode, the dHash of the pixels and
  the sha1 of the pixels (`picture`: the key of pixel-identical images), or the quarantine reason
  a decode gave. They are valid only under the same `decode_key`: a hash of the decode options,
  Pillow's version and the source of the decoding code (images.py and duplicates.py), so new
  options or new decoding code decode everything again.
- the near-duplicate memo `near.npz` (`duplicates.NearMemo`): the distinct pictures compared and
  their near pairs, valid under the same decode key and near_duplicate_bits / _mad, so a night
  compares only its new pictures with the others.
Checks that depend on the path rather than the bytes (links, special files, zero-byte and
oversize files, unreadable files) are never cached: they run on every file every night.
Each run rewrites the cache whole (only this run's files and results: removed files leave it);
its size is about that of data/ingest/images.npy.
"""

from __future__ import annotations

import hashlib
import json
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

FORMAT = 2  # layout of the cache directory; another value is ignored (decoded again)
RACY_NS = 2_000_000_000  # 2 s: FAT's mtime tick, the coarsest of the common file systems
FILE_COLUMNS = ["path", "size", "mtime_ns", "ctime_ns", "inode", "sha256"]
CHANGE_COLUMNS = ["path", "change", "sha256_before", "sha256_now"]
ENTRY_COLUMNS = ["sha256", "row", "width", "height", "mode", "dhash", "picture", "reason", "detail"]
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
    reason: str = ""
    detail: str = ""


@dataclass
class FileIndex:
    """M regular files of one run (read, or trusted by their stat), sorted by path."""

    paths: np.ndarray  # str (M,), posix paths relative to the source
    stats: np.ndarray  # int64 (M, 4): size, mtime_ns, ctime_ns, inode
    sha256: np.ndarray  # S64 (M,): hex digest of the bytes

    @classmethod
    def empty(cls) -> FileIndex:
        return cls(np.zeros(0, str), np.zeros((0, 4), np.int64), np.zeros(0, "S64"))

    def find(self, paths: np.ndarray) -> np.ndarray:
        """int64 (P,): the row of each of `paths` (str (P,)) in the index, -1 where absent."""
        return duplicates.positions(self.paths, paths)


@dataclass
class Entries:
    """E decode results, sorted by the sha256 of the bytes; R of them have pixels."""

    sha256: np.ndarray  # S64 (E,), sorted
    row: np.ndarray  # int64 (E,): row in `pixels`, -1 for a quarantine reason
    width: np.ndarray  # int64 (E,) source width (0 without pixels), as `height`
    height: np.ndarray
    mode: np.ndarray  # str (E,) source mode
    dhash: np.ndarray  # uint64 (E,): duplicates.dhash of the pixels (0 without)
    picture: np.ndarray  # S40 (E,): sha1 of the pixels (b'' without)
    reason: np.ndarray  # str (E,): quarantine reason ('' with pixels), as `detail`
    detail: np.ndarray
    pixels: np.ndarray  # uint8 (R, H, W, C)

    def find(self, digests: np.ndarray) -> np.ndarray:
        """int64 (U,): the row of each of `digests` (S64 (U,)), -1 where absent."""
        return duplicates.positions(self.sha256, digests)


def assemble(
    digests: np.ndarray,
    old: Entries | None,
    at: np.ndarray,
    fresh: list[Decoded],
    *,
    image_shape: tuple[int, int, int],
) -> Entries:
    """This run's Entries for the U sorted `digests` (S64 (U,)): row u from `old` row `at[u]`
    (a hit), else the next of the `fresh` decode results (their dHash and picture key computed
    here, in one batch). Pixel rows follow the digests' order, so the table does not depend on
    which results were reused."""
    n, hit = len(digests), at >= 0
    miss = np.flatnonzero(~hit)
    row = np.full(n, -1, np.int64)
    width, height, dh = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.uint64)
    mode, reason, detail = (np.full(n, "", object) for _ in range(3))
    picture = np.zeros(n, "S40")
    has = np.zeros(n, bool)
    if old is not None and hit.any():
        k = at[hit]
        has[hit] = old.row[k] >= 0
        for mine, theirs in ((width, old.width), (height, old.height), (dh, old.dhash),
                             (mode, old.mode), (reason, old.reason), (detail, old.detail),
                             (picture, old.picture)):  # fmt: skip
            mine[hit] = theirs[k]
    has[miss] = [d.pixels is not None for d in fresh]
    width[miss] = [d.width for d in fresh]
    height[miss] = [d.height for d in fresh]
    mode[miss] = [d.mode for d in fresh]
    reason[miss] = [d.reason for d in fresh]
    detail[miss] = [d.detail for d in fresh]
    row[has] = np.arange(int(has.sum()))
    pixels = np.zeros((int(has.sum()), *image_shape), np.uint8)
    if old is not None and hit.any():
        take = hit & has
        pixels[row[take]] = old.pixels[old.row[at[take]]]
    new = miss[has[miss]]
    if len(new):
        pixels[row[new]] = np.stack([d.pixels for d in fresh if d.pixels is not None])
        dh[new] = duplicates.dhash(pixels[row[new]])
        picture[new] = duplicates.picture_keys(pixels[row[new]])
    return Entries(digests, row, width, height, mode.astype(str), dh, picture,
                   reason.astype(str), detail.astype(str), pixels)  # fmt: skip


@dataclass
class DecodeCache:
    """The last run's tables and this run's (see the module docstring)."""

    key: str  # decode_key of this run's options
    trust_stat: bool  # ingest.trust_file_stat
    near_settings: list = field(default_factory=list)  # [near_duplicate_bits, _mad]
    old_files: FileIndex = field(default_factory=FileIndex.empty)
    old_scan_ns: int = 0  # when the old file index was taken
    old_entries: Entries | None = None  # None: none, or made under another decode_key
    old_near: NearMemo | None = None  # the last run's near pairs under the same settings
    files: FileIndex = field(default_factory=FileIndex.empty)  # this run's
    entries: Entries | None = None  # this run's (decoding.decode_all)
    near: NearMemo = field(default_factory=NearMemo)  # this run's
    scan_ns: int = field(default_factory=time.time_ns)
    stat_trusted: int = 0  # files not read again
    reused: int = 0  # decode results taken from the last run
    decoded: int = 0  # decode results made this run

    def unchanged(
        self, paths: np.ndarray, stats: np.ndarray, regular: np.ndarray, *, max_bytes: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(bool (M,) files not to read again, S64 (M,) their sha256 from the index, b'' for
        the others) for M files `paths` (str (M,)) with lstat `stats` (int64 (M, 4) as the
        index) and `regular` (bool (M,)): regular files that `images.read_checked` would read,
        whose stat is the index's, not racy, and whose bytes have a decode result."""
        digests = np.zeros(len(paths), "S64")
        old = self.old_files
        if not self.trust_stat or self.old_entries is None or not len(old.paths):
            return np.zeros(len(paths), bool), digests
        k = self.old_files.find(paths)
        known = k >= 0
        same = known & (old.stats[k] == stats).all(axis=1)
        same &= regular & (stats[:, 0] > 0) & (stats[:, 0] <= max_bytes)
        same &= stats[:, 1:3].max(axis=1) + RACY_NS <= self.old_scan_ns
        same[same] = self.old_entries.find(old.sha256[k[same]]) >= 0
        digests[same] = old.sha256[k[same]]
        self.stat_trusted = int(same.sum())
        return same, digests

    def changes(self) -> pd.DataFrame:
        """path, change (new | changed | removed), sha256_before, sha256_now: files of the last
        run's index against this run's (both: the labelled image files that were read)."""
        old, now = self.old_files, self.files
        k = old.find(now.paths)
        before = old.sha256[np.maximum(k, 0)] if len(old.paths) else now.sha256
        before = np.where(k >= 0, before, b"")
        moved = before != now.sha256  # new files too: b'' before
        gone = now.find(old.paths) < 0
        paths = np.concatenate([now.paths[moved], old.paths[gone]])
        order = np.argsort(paths, kind="stable")
        removed = int(gone.sum())
        columns = {
            "path": paths.tolist(),
            "change": ["new" if x < 0 else "changed" for x in k[moved]] + ["removed"] * removed,
            "sha256_before": _text(np.concatenate([before[moved], old.sha256[gone]])),
            "sha256_now": _text(now.sha256[moved]) + [""] * removed,
        }
        return pd.DataFrame({c: [v[i] for i in order.tolist()] for c, v in columns.items()},
                            columns=CHANGE_COLUMNS)  # fmt: skip

    def counts(self, changes: pd.DataFrame) -> dict[str, int]:
        """Figures for metrics/ingest.json `incremental`, from this run's `changes()`."""
        kinds = changes["change"].value_counts()
        return {
            "new": int(kinds.get("new", 0)),
            "changed": int(kinds.get("changed", 0)),
            "removed": int(kinds.get("removed", 0)),
            "unchanged": len(self.files.paths) - int(kinds.get("new", 0) + kinds.get("changed", 0)),
            "not_read_again": self.stat_trusted,
            "decoded": self.decoded,
            "reused": self.reused,
        }


def _text(digests: np.ndarray) -> list[str]:
    return [d.decode() for d in digests.tolist()]


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
        stats = np.stack([index[c] for c in FILE_COLUMNS[1:5]], axis=1).reshape(-1, 4)
        cache.old_files = FileIndex(index["path"], stats, index["sha256"])
    cache.old_scan_ns = int(meta["scan_ns"])
    if meta.get("key") == cache.key:
        with np.load(directory / files.CACHE_ENTRIES) as table:
            columns = {c: table[c] for c in ENTRY_COLUMNS}
        cache.old_entries = Entries(**columns, pixels=np.load(directory / files.CACHE_PIXELS))
        if meta.get("near") == cache.near_settings:
            with np.load(directory / files.CACHE_NEAR) as near:
                cache.old_near = NearMemo(near["pictures"], near["a"], near["b"], near["distance"])
    return cache


def save(cache: DecodeCache, directory: Path, *, image_shape: tuple[int, int, int]) -> None:
    """Write this run's file index, decode results and near memo to `directory`, atomically;
    `image_shape` (H, W, C) shapes an empty pixel table."""
    entries = cache.entries or assemble(
        np.zeros(0, "S64"), None, np.zeros(0, np.int64), [], image_shape=image_shape
    )
    f, near = cache.files, cache.near
    with atomic_path(directory) as out:
        out.mkdir()
        sizes = {c: f.stats[:, k] for k, c in enumerate(FILE_COLUMNS[1:5])}
        np.savez(out / files.CACHE_FILES, path=f.paths, **sizes, sha256=f.sha256)
        np.savez(out / files.CACHE_ENTRIES, **{c: getattr(entries, c) for c in ENTRY_COLUMNS})
        np.save(out / files.CACHE_PIXELS, entries.pixels)
        np.savez(out / files.CACHE_NEAR, pictures=near.pictures, a=near.a, b=near.b,
                 distance=near.distance)  # fmt: skip
        meta = {"format": FORMAT, "key": cache.key, "scan_ns": cache.scan_ns,
                "near": cache.near_settings}  # fmt: skip
        write_json(out / files.CACHE_META, meta)
