"""Safe image decoding for ingest: size guards, allow-listed formats, full decode, mode conversion.

Every failure becomes a `Quarantined(reason, detail)` with one of REASONS, never a crash:
zero_byte, oversize (file bytes or decoded pixels: the decompression-bomb guard), truncated,
undecodable (not an image, or not one of the allowed formats). `duplicate` is decided by ingest.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edge_pipeline.core.errors import ConfigError

REASONS = ("zero_byte", "truncated", "undecodable", "oversize", "duplicate")
DEFAULT_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
RESAMPLING = {m.name.lower(): m for m in Image.Resampling}  # nearest, box, bilinear, ...
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_PNG_END = b"IEND\xaeB`\x82"


class Quarantined(Exception):
    """A file ingest cannot use: `reason` is one of REASONS, `detail` says what was found."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class DecodeOptions:
    """How ingest decodes: output (H, W) and C channels, allowed formats, guards, resize filter."""

    size: tuple[int, int]  # (H, W)
    channels: int = 1  # 1 (L) or 3 (RGB)
    formats: tuple[str, ...] = DEFAULT_FORMATS
    max_pixels: int = 50_000_000  # above ~179 M, Pillow's own bomb error fires first (oversize)
    max_bytes: int = 50 * 2**20
    resample: str = "bilinear"

    def __post_init__(self) -> None:
        h, w = self.size
        if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
            raise ConfigError(f"params.yaml ingest.image_size={list(self.size)}: need [H, W] > 0")
        if self.channels not in (1, 3):
            raise ConfigError(f"params.yaml ingest.channels={self.channels!r}: use 1 or 3")
        known = set(Image.registered_extensions().values())
        if not self.formats or set(self.formats) - known:
            raise ConfigError(
                f"params.yaml ingest.formats={list(self.formats)}: unknown to Pillow: "
                f"{sorted(set(self.formats) - known)}; known: {sorted(known)}"
            )
        if self.resample not in RESAMPLING:
            raise ConfigError(
                f"params.yaml ingest.resample={self.resample!r}: use one of {sorted(RESAMPLING)}"
            )

    @classmethod
    def from_params(cls, cfg: dict[str, Any]) -> DecodeOptions:
        """From `params.yaml[ingest]` (image_size, channels, formats, max_pixels, max_file_mb,
        resample); a ConfigError names the bad key."""
        try:
            return cls(
                size=tuple(int(v) for v in cfg["image_size"]),
                channels=cfg.get("channels", 1),
                formats=tuple(str(f).upper() for f in cfg.get("formats") or DEFAULT_FORMATS),
                max_pixels=int(cfg.get("max_pixels", 50_000_000)),
                max_bytes=int(float(cfg.get("max_file_mb", 50)) * 2**20),
                resample=str(cfg.get("resample", "bilinear")),
            )
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"params.yaml ingest: bad or missing value ({e!r})") from e

    @property
    def extensions(self) -> frozenset[str]:
        """File extensions (lower case, with the dot) of the allowed formats."""
        exts = Image.registered_extensions()
        return frozenset(e for e, f in exts.items() if f in self.formats)


@dataclass(frozen=True)
class ImageInfo:
    """What the file held before conversion."""

    sha256: str
    bytes: int
    width: int
    height: int
    mode: str


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


def decode(data: bytes, opts: DecodeOptions) -> tuple[np.ndarray, int, int, str]:
    """Decode one encoded image fully and convert it.

    Returns:
        (pixels uint8 (H, W, C) with (H, W) = opts.size and C = opts.channels, source width,
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
    target = (opts.size[1], opts.size[0])  # Pillow sizes are (W, H)
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
