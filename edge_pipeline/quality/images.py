"""Safe image reading and decoding for ingest: file checks, size guards, allow-listed formats,
bounded decode, EXIF orientation, mode conversion.

Every failure becomes a `Quarantined(reason, detail)` with one of REASONS, never a crash or a hang:
special_file (a FIFO, socket or device: never opened for reading), dangling_link, outside_link (a
symlink leaving the source root: never followed), zero_byte, oversize (file bytes, pixels in the
header - the decompression-bomb guard - or the decoded bytes over `max_decode_mb`), truncated,
undecodable (not an image, or not one of the allowed formats). `duplicate` and `stray_folder` are
decided by ingest.

Memory: an image is decoded at most once at full size, and only when its decoded size (width x
height x Pillow's bytes per pixel: 1 for 1/L/P, 2 for 16-bit, 4 for every other mode, RGB
included) is within `max_decode_mb`; JPEGs decode at a reduced DCT scale (`Image.draft`) and other
images are box-filtered down to >= 2x the output size before any mode conversion, so
the peak is about the decoded size plus a small copy; RGBA and LA images need one full-size copy
more (Pillow premultiplies alpha before filtering), as do big-endian 16-bit and palette images
(expanded first). Measured on 7000 x 7000 PNGs: 16-bit grey +94 MB over the process (was +280),
RGBA +374 MB, 2x its 187 MiB decoded size (was +748 MB).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

if TYPE_CHECKING:
    from edge_pipeline.config.quality import Ingest

REASONS = (
    "zero_byte",
    "truncated",
    "undecodable",
    "oversize",
    "duplicate",
    "special_file",
    "dangling_link",
    "outside_link",
    "stray_folder",
)
RESAMPLING = {m.name.lower(): m for m in Image.Resampling}  # nearest, box, bilinear, ...
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_PNG_END = b"IEND\xaeB`\x82"
_REDUCIBLE = {
    "I;16",
    "L",
    "LA",
    "RGB",
    "RGBA",
    "CMYK",
    "YCbCr",
    "I",
    "F",
    "LAB",
    "HSV",
    "RGBa",
    "La",
}
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1} | dict.fromkeys(_SIXTEEN_BIT - {"I"}, 2)  # else 4
# EXIF orientation tag value -> the transpose that shows the picture upright (EXIF 2.3, 4.6.4)
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class Quarantined(Exception):
    """A file ingest cannot use: `reason` is one of REASONS, `detail` says what was found."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def extensions(formats: list[str]) -> frozenset[str]:
    """File extensions (lower case, with the dot) of the Pillow `formats` (e.g. PNG -> .png)."""
    return frozenset(e for e, f in Image.registered_extensions().items() if f in formats)


def read_checked(root: Path, rel: str, *, max_bytes: int) -> bytes:
    """The bytes of the regular file `root/rel`, checked before anything is read.

    The path is lstat-ed first: a symlink must resolve to an existing file inside `root`
    (else Quarantined dangling_link / outside_link, never followed); the file is opened
    non-blocking and must be a regular file (a FIFO, socket or device -> special_file, no hang);
    then zero_byte / oversize before reading anything large.
    """
    path = os.path.join(root, rel)
    if stat.S_ISLNK(os.lstat(path).st_mode):
        real = Path(os.path.realpath(path))
        if not real.exists():
            raise Quarantined("dangling_link", f"symlink to {os.readlink(path)}, which is missing")
        if not real.is_relative_to(Path(root).resolve()):
            raise Quarantined("outside_link", "symlink leaving the source root: not followed")
        path = str(real)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            kind = stat.filemode(st.st_mode)
            raise Quarantined("special_file", f"not a regular file ({kind}): never read")
        if st.st_size == 0:
            raise Quarantined("zero_byte", "empty file")
        if st.st_size > max_bytes:
            raise Quarantined("oversize", f"{st.st_size} bytes > max_file_mb ({max_bytes} bytes)")
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
            mode, side = im.mode, 2 * max(opts.image_size)  # >= 2x the output, either orientation
            im.draft(None, (side, side))  # JPEG: decode at 1/2..1/8 scale when that is enough
            decoded = im.size[0] * im.size[1] * _BYTES_PER_PIXEL.get(im.mode, 4)
            if decoded > opts.max_decode_bytes:
                raise Quarantined(
                    "oversize", f"{w}x{h} {mode} decodes to {decoded} bytes > max_decode_mb"
                )
            im.load()
            upright = _UPRIGHT.get(im.getexif().get(ExifTags.Base.Orientation))
            out = to_channels(im, opts.channels, min_side=side)
            if upright is not None:  # EXIF orientation, in every format (PNG eXIf too)
                out = out.transpose(upright)
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


def to_channels(im: Image.Image, channels: int, *, min_side: int = 0) -> Image.Image:
    """Convert any Pillow mode to L (channels=1) or RGB (channels=3).

    16-bit and 32-bit integer images (I;16*, I) are scaled to 8 bits (v >> 8, values taken as
    0..65535), float images (F) are clipped to 0..255, and anything with transparency (RGBA, LA, PA,
    P or L with a transparent colour) is composited on white. An image whose shorter side is at
    least 2 x `min_side` is first box-filtered (`shrink`) to a shorter side >= `min_side`, so the
    copies made here are small.
    """
    im = shrink(im, min_side) if im.mode in _REDUCIBLE else im
    if im.mode in _SIXTEEN_BIT:
        pixels = np.array(im)  # shifted in place
        if pixels.dtype != np.uint16:  # I (int32) or big-endian: clip to 0..65535 in place
            np.clip(pixels, 0, 65535, out=pixels)
        np.right_shift(pixels, 8, out=pixels)
        im = Image.fromarray(pixels.astype(np.uint8))
        del pixels
    elif im.mode == "F":
        im = Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8))
    im = shrink(im, min_side)  # 1, P, PA and I;16B/N, once they are 8-bit
    if "transparency" in im.info or im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), rgba)
    if im.mode not in ("1", "L", "P", "RGB"):  # CMYK, YCbCr, LAB, HSV: via RGB, which all reach
        im = im.convert("RGB")
    target = "L" if channels == 1 else "RGB"
    return im if im.mode == target else im.convert(target)


def shrink(im: Image.Image, min_side: int) -> Image.Image:
    """`im` box-filtered by the integer factor min(W, H) // min_side when that is >= 2 (the
    output keeps the picture's geometry exactly); palette and 1-bit images are expanded first."""
    factor = min(im.size) // min_side if min_side else 1
    if factor < 2:
        return im
    if im.mode not in _REDUCIBLE:  # 1, P, PA: expand to what their pixels mean first
        rgba = "transparency" in im.info or im.mode == "PA"
        im = im.convert("RGBA" if rgba else "L" if im.mode == "1" else "RGB")
    return im.resize((im.size[0] // factor, im.size[1] // factor), Image.Resampling.BOX)


def _lacks_end(data: bytes) -> bool:
    """True for a PNG without its IEND trailer or a JPEG without its EOI marker: cut short."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return not data.rstrip(b"\x00").endswith(_PNG_END)
    if data.startswith(b"\xff\xd8"):
        return data.rfind(b"\xff\xd9") == -1
    return False
