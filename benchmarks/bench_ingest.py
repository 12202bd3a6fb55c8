"""Ingest throughput: images/s decoding N 28x28 grayscale PNGs on one process, and peak memory.

Target on this machine (issue 2): >= 2,000 images/s; peak memory <= 4 GiB. The images are
scikit-learn digits upscaled to 28x28 with a little noise (so every file is distinct), in an
ImageFolder tree; ingest resizes them to 16x16 x 1 (the pipeline's default) and keeps all.
Run: `python -m benchmarks ingest` or `python benchmarks/bench_ingest.py [N]`.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

TARGET_IMAGES_PER_S = 2000.0
TARGET_PEAK_GIB = 4.0


def make_pngs(root: Path, n: int, *, side: int = 28, seed: int = 0) -> None:
    """Write n distinct side x side mode L PNGs as root/<digit>/<i>.png."""
    from sklearn.datasets import load_digits

    from edge_pipeline.quality.demo_flaws import png_bytes

    digits = load_digits()
    rng = np.random.default_rng(seed)
    base = [
        np.asarray(Image.fromarray(np.rint(im * 255 / 16).astype(np.uint8)).resize((side, side)))
        for im in digits.images
    ]
    for k in range(10):
        (root / str(k)).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        j = i % len(base)
        noisy = np.clip(base[j].astype(np.int16) + rng.integers(-8, 9, (side, side)), 0, 255)
        (root / str(digits.target[j]) / f"{i:06d}.png").write_bytes(
            png_bytes(noisy.astype(np.uint8))
        )


def run(n: int = 5000) -> dict:
    from edge_pipeline.config.quality import Ingest
    from edge_pipeline.quality.ingestion import ingest

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        make_pngs(root, n)
        ingest(root, options=Ingest(image_size=(16, 16)))  # warm-up: imports, page cache
        start, cpu_start = time.perf_counter(), time.process_time()
        result = ingest(root, options=Ingest(image_size=(16, 16)))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    assert result.metrics["kept"] == n, result.metrics
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB
    figures = {
        "images": n,
        "images_per_s": round(n / wall, 1),
        "images_per_cpu_s": round(n / cpu, 1),  # what an unloaded core would reach
        "decode_images_per_s": result.metrics["images_per_s"],
        "wall_s": round(wall, 3),
        "peak_rss_gib": round(peak_gib, 3),
        "ratio_to_target": round(n / wall / TARGET_IMAGES_PER_S, 2),
        "peak_ratio_to_target": round(peak_gib / TARGET_PEAK_GIB, 3),
    }
    print(
        f"ingest: {n} 28x28 PNGs in {wall:.2f} s: {figures['images_per_s']:.0f} images/s end to "
        f"end, {figures['ratio_to_target']:.2f}x the {TARGET_IMAGES_PER_S:.0f}/s target "
        f"({figures['images_per_cpu_s']:.0f} per CPU second; decode loop "
        f"{figures['decode_images_per_s']:.0f}/s); peak RSS {peak_gib:.2f} GiB "
        f"(target <= {TARGET_PEAK_GIB:.0f} GiB)"
    )
    return figures


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
