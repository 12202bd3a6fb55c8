"""The decode loop of ingest: every labelled file read safely and decoded once per distinct content,
or its result taken from the decode cache (`decode_cache`) when the same bytes were decoded under
the same options last night. Shapes: M files, (H, W, C) = ingest.image_size x channels.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edge_pipeline.config.quality import Ingest
from edge_pipeline.core.logs import progress
from edge_pipeline.quality.decode_cache import DecodeCache, Decoded
from edge_pipeline.quality.duplicates import dhash
from edge_pipeline.quality.images import Quarantined, decode, read_checked, sha256


@dataclass
class DecodeRun:
    """What the loop found for M files `ids` (index i = ids[i])."""

    pixels: np.ndarray  # uint8 (M, H, W, C); rows of files not decoded stay 0
    hashes: np.ndarray  # uint64 (M,) dHash of the pixels (0 where not decoded)
    info: dict[int, tuple[str, int, int, int, str]]  # i -> sha256, bytes, width, height, mode
    bad: dict[int, tuple[str, str]]  # i -> quarantine reason, detail
    copies: dict[int, int]  # i -> j: ids[i] has the bytes of the earlier ids[j]
    decoded: int  # files decoded this run (the rest came from the cache or are copies)


def decode_all(root: Path, ids: list[str], opts: Ingest, cache: DecodeCache) -> DecodeRun:
    """Read, check and decode the M files `root/ids[i]` (see the module docstring); the cache
    records this run's files and results for the next run."""
    h, w = opts.image_size
    run = DecodeRun(
        pixels=np.zeros((len(ids), h, w, opts.channels), dtype=np.uint8),
        hashes=np.zeros(len(ids), dtype=np.uint64),
        info={},
        bad={},
        copies={},
        decoded=0,
    )
    first: dict[str, int] = {}
    fresh: list[tuple[int, str, Decoded]] = []  # decoded now: dHash computed in one batch
    with warnings.catch_warnings():  # max_pixels is checked per file; Pillow's warning is noise
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for i, rel in enumerate(progress(ids, total=len(ids), desc="ingest: decode")):
            try:
                data = None
                digest = cache.known_digest(root, rel, max_bytes=opts.max_bytes)
                if digest is None:
                    data = read_checked(root, rel, max_bytes=opts.max_bytes)
                    digest = sha256(data)
                    cache.note_file(root, rel, digest)
                if digest in first:  # the same bytes decode the same: resolved after the loop
                    run.copies[i] = first[digest]
                    continue
                first[digest] = i
                result = cache.lookup(digest)  # always a hit when the file was not read
                if result is None:
                    result = _decode(data, opts)
                    run.decoded += 1
                    fresh.append((i, digest, result))
                if result.pixels is None:
                    raise Quarantined(result.reason, result.detail)
                run.pixels[i] = result.pixels
                run.hashes[i] = result.dhash
                size = len(data) if data is not None else cache.files[rel][0]
                run.info[i] = (digest, size, result.width, result.height, result.mode)
            except Quarantined as q:
                run.bad[i] = (q.reason, q.detail)
            except OSError as e:  # unreadable (permissions, I/O): the file's problem, not the run's
                run.bad[i] = ("undecodable", f"cannot read: {e}")
    done = [i for i, _, r in fresh if r.pixels is not None]
    run.hashes[done] = dhash(run.pixels[done])
    for i, digest, r in fresh:
        dh = int(run.hashes[i]) if r.pixels is not None else 0
        cache.entries[digest] = Decoded(r.pixels, r.width, r.height, r.mode, dh, r.reason, r.detail)
    return run


def _decode(data: bytes, opts: Ingest) -> Decoded:
    """`images.decode` as a Decoded (pixels, or the quarantine reason: both are cached)."""
    try:
        pixels, width, height, mode = decode(data, opts)
    except Quarantined as q:
        return Decoded(None, reason=q.reason, detail=q.detail)
    return Decoded(pixels, width, height, mode)
