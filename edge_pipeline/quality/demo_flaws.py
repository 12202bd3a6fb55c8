"""Realistic data flaws for the demo set and the ingest tests: simulated annotators, PNGs of every
mode ingest converts, and broken files (zero-byte, truncated, not an image, decompression bomb).
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import TYPE_CHECKING, get_args

import numpy as np
from PIL import Image

from edge_pipeline.config.quality import Corrupt, PngMode

if TYPE_CHECKING:
    from edge_pipeline.config.quality import Annotator, Demo

PNG_MODES: tuple[str, ...] = get_args(PngMode)
CORRUPT_KINDS = tuple(Corrupt.model_fields)  # zero_byte, truncated, not_image, bomb, ...


def simulate_labels(
    true: np.ndarray, annotator: Annotator, rng: np.random.Generator, *, n_classes: int
) -> np.ndarray:
    """Labels `annotator` gives to items of int (M,) true classes in 0..K-1; returns int64 (M,).

    With probability `confusion_rate` an item whose true class is a key of `confusions` gets the
    mapped class (a habit such as 3 -> 8); otherwise the label is right with probability
    `accuracy`, and else uniform over the K - 1 other classes.
    """
    true = np.asarray(true, dtype=np.int64)
    # A uniform wrong class: the truth shifted by 1..K-1 (mod K).
    wrong = (true + rng.integers(1, n_classes, size=true.shape)) % n_classes
    labels = np.where(rng.random(true.shape) < annotator.accuracy, true, wrong)
    habit = np.full(n_classes, -1)
    for src, dst in annotator.confusions.items():
        habit[src] = dst
    confused = (habit[true] >= 0) & (rng.random(true.shape) < annotator.confusion_rate)
    return np.where(confused, habit[true], labels)


def simulate_ratings(
    shown: np.ndarray, cfg: Demo, rng: np.random.Generator, *, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ratings of M files showing int (M,) classes by `cfg.ratings_per_image` random annotators.

    Returns:
        assigned: bool (M, A) which of the A annotators (`cfg.annotators` order) rate which file.
        given: int64 (M, A) the label each annotator would give each file.
    """
    names = list(cfg.annotators)
    lo, hi = cfg.ratings_per_image
    n_ratings = rng.integers(lo, hi + 1, size=len(shown))
    ranks = np.argsort(rng.random((len(shown), len(names))), axis=1).argsort(axis=1)
    assigned = ranks < n_ratings[:, None]
    given = np.stack(
        [simulate_labels(shown, cfg.annotators[n], rng, n_classes=n_classes) for n in names], axis=1
    )
    return assigned, given


def majority_vote(counts: np.ndarray) -> np.ndarray:
    """int (M,) most frequent label per item from int (M, K) vote counts; ties -> smallest class."""
    return np.argmax(counts, axis=1)


def png_bytes(pixels: np.ndarray, mode: str = "L") -> bytes:
    """Encode uint8 (H, W) gray pixels as a PNG of `mode` whose gray values decode back unchanged.

    RGB/RGBA repeat the gray value (alpha 255), P uses a gray palette, I;16 stores 257 * v.
    """
    if mode == "L":
        im = Image.fromarray(pixels)
    elif mode in ("RGB", "RGBA"):
        im = Image.fromarray(np.repeat(pixels[..., None], 3, axis=2)).convert(mode)
    elif mode == "P":
        im = Image.frombytes("P", pixels.shape[::-1], pixels.tobytes())
        im.putpalette(np.repeat(np.arange(256, dtype=np.uint8), 3).tobytes())  # index v = (v, v, v)
    elif mode == "I;16":
        im = Image.fromarray(pixels.astype(np.uint16) * 257)
    else:
        raise ValueError(f"png_bytes: mode {mode!r} is not one of {PNG_MODES}")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(side: int) -> bytes:
    """A valid 1-bit PNG of side x side black pixels: side^2 pixels from ~side^2 / 8000 bytes.

    Written by hand because Pillow would need the whole bitmap in memory (and seconds) to encode it.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def corrupt_bytes(kind: str, *, image: bytes = b"", bomb_side: int = 20000) -> bytes:
    """The content of a broken file of `kind` (a CORRUPT_KINDS entry but duplicate_conflict).

    `image` is a valid encoded image: `truncated` keeps its first half.
    """
    if kind == "zero_byte":
        return b""
    if kind == "truncated":
        if not image:
            raise ValueError("corrupt_bytes('truncated') needs the bytes of a valid image")
        return image[: len(image) // 2]
    if kind == "not_image":
        return b"<html><body>503 Service Unavailable</body></html>\n"  # a failed download
    if kind == "bomb":
        return bomb_png(bomb_side)
    raise ValueError(f"corrupt_bytes: kind {kind!r} is not one of {CORRUPT_KINDS[:-1]}")
