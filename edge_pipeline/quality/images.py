"""Safe image decoding for ingest: size guards, allow-listed formats, full decode, mode conversion.

Every failure becomes a `Quarantined(reason, detail)` with one of REASONS, never a crash:
zero_byte, oversize (file bytes or decoded pixels: the decompression-bomb guard), truncated,
undecodable (not an image, or not one of the allowed formats). `duplicate` is decided by ingest.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    from edge_pipeline.config.quality import Ingest

REASONS = ("zero_byte", "truncated", "undecodable", "oversize", "duplicate")
RESAMPLING = {m.name.lower(): m for m in Image.Resampling}  # nearest, box, bilinear, ...
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_PNG_END = b"IEND\xaeB`\x82"


class Quarantined(Exception):
    """A file ingest cannot use: `reason` is one of REASONS, `detail` says what was found."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def extensions(formats: list[str]) -> frozenset[str]:
    """File extensions (lower case, with the dot) of the Pillow `formats` (e.g. PNG -> .png)."""
    return frozenset(e for e, f in Image.registered_extensions().items() if f in formats)


def read_checked(path: str | Path, *, max_bytes: int) -> bytes:
    """The file's bytes; Quarantined zero_byte / oversize before reading anything large."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise Quarantined("zero_byte", "empty file")
        if size > max_bytes:
            raise Quarantined("oversize", f"{size} bytes > max_file_mb ({max_bytes} bytes)")
        return f.read()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode(data: bytes, opts: Ingest) -> tuple[np.ndarray, int, int, str]:
    """Decode one encoded image fully and convert it.

    Args:
        data: the file's bytes; opts: `params.yaml[ingest]` (formats, guards, size, channels).

    Returns:
        (pixels uint8 (H, W, C) with (H, W) = opts.image_size and C = opts.channels, source width,
        source height, source mode). Raises Quarantined on any failure.
    """
    try:
        with Image.open(io.BytesIO(data), formats=opts.formats) as im:
            w, h = im.size
            if w * h > opts.max_pixels:  # checked from the header, before decompressing anything
                raise Quarantined("oversize", f"{w}x{h} = {w * h} pixels > max_pixels")
            im.load()
            mode = im.mode
            if im.format in ("JPEG", "TIFF", "WEBP"):  # camera formats: honour EXIF orientation
                im = ImageOps.exif_transpose(im)
            out = to_channels(im, opts.channels)
    except Quarantined:
        raise
    except Image.DecompressionBombError as e:
        raise Quarantined("oversize", str(e)) from None
    except UnidentifiedImageError:
        if _lacks_end(data):
            raise Quarantined("truncated", "image header cut short") from None
        raise Quarantined("undecodable", f"not an image in {'/'.join(opts.formats)}") from None
    except Exception as e:  # any decoder failure is the file's fault, never the stage's
        detail = f"{type(e).__name__}: {e}"
        reason = "truncated" if "truncated" in str(e).lower() or _lacks_end(data) else "undecodable"
        raise Quarantined(reason, detail) from None
    target = (opts.image_size[1], opts.image_size[0])  # Pillow sizes are (W, H)
    if out.size != target:
        out = out.resize(target, RESAMPLING[opts.resample])
    pixels = np.asarray(out, dtype=np.uint8)
    return (pixels[..., None] if pixels.ndim == 2 else pixels), w, h, mode


def to_channels(im: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode to L (channels=1) or RGB (channels=3).

    16-bit and 32-bit integer images (I;16*, I) are scaled to 8 bits (v >> 8, values taken as
    0..65535), float images (F) are clipped to 0..255, and anything with transparency (RGBA, LA, PA,
    P or L with a transparent colour) is composited on white.
    """
    if im.mode in _SIXTEEN_BIT:
        im = Image.fromarray((np.clip(np.asarray(im), 0, 65535) >> 8).astype(np.uint8))
    elif im.mode == "F":
        im = Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8))
    if "transparency" in im.info or im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), rgba)
    if im.mode not in ("1", "L", "P", "RGB"):  # CMYK, YCbCr, LAB, HSV: via RGB, which all reach
        im = im.convert("RGB")
    target = "L" if channels == 1 else "RGB"
    return im if im.mode == target else im.convert(target)


def _lacks_end(data: bytes) -> bool:
    """True for a PNG without its IEND trailer or a JPEG without its EOI marker: cut short."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return not data.rstrip(b"\x00").endswith(_PNG_END)
    if data.startswith(b"\xff\xd8"):
        return data.rfind(b"\xff\xd9") == -1
    return False
