"""Big folders: `dvc status` and a no-op `dvc repro` on a 100,000-file source (issue 11 item 5).

Target: the no-op run under 30 s. A throw-away git + DVC repo holds a 100,000-file source of
small PNGs (8x8, distinct) and one stage depending on it (a file count: the measurement is
DVC's cost of checking the dependency, not ingest's). Measured: the first `dvc repro` (every file
hashed), `dvc status` and the no-op `dvc repro` with DVC's state db warm (entries keyed by inode,
mtime and size: no file is read again), and `dvc status` cold (state db removed: every file read
and hashed again). Each command is bounded by a timeout.
Run: `python -m benchmarks big_folder` or `python benchmarks/bench_big_folder.py [N]`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_NOOP_S = 30.0
DVC = str(Path(sys.executable).with_name("dvc"))


def timed(cmd: list[str], cwd: Path, timeout: float = 600) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, timeout=timeout, capture_output=True)
    return round(time.perf_counter() - start, 2)


def run(n: int = 100_000) -> dict:
    from edge_pipeline.quality.demo_flaws import png_bytes

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        src = repo / "source"
        start = time.perf_counter()
        rng = np.random.default_rng(0)
        for k in range(n):
            folder = src / f"{k % 10}"
            if k < 10:
                folder.mkdir(parents=True)
            px = rng.integers(0, 256, (8, 8), dtype=np.uint8)
            (folder / f"{k:06d}.png").write_bytes(png_bytes(px))
        write_s = round(time.perf_counter() - start, 1)
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
        subprocess.run([DVC, "init", "-q"], cwd=repo, check=True)
        site = Path(tmp) / "site"
        subprocess.run([DVC, "config", "core.site_cache_dir", str(site)], cwd=repo, check=True)
        (repo / "dvc.yaml").write_text(
            "stages:\n  count:\n    cmd: find source -type f | wc -l > count.txt\n"
            "    deps: [source]\n    outs: [count.txt]\n"
        )
        env_load = os.getloadavg()[0]
        first = timed([DVC, "repro", "-q"], repo)
        status_warm = timed([DVC, "status", "-q"], repo)
        noop_warm = timed([DVC, "repro", "-q"], repo)
        shutil.rmtree(site, ignore_errors=True)
        status_cold = timed([DVC, "status", "-q"], repo)
        status_rewarm = timed([DVC, "status", "-q"], repo)
    figures = {
        "files": n,
        "write_s": write_s,
        "first_repro_s": first,
        "status_warm_s": status_warm,
        "noop_repro_warm_s": noop_warm,
        "status_cold_s": status_cold,
        "status_after_cold_s": status_rewarm,
        "load_1min": round(env_load, 2),
        "ratio_to_target": round(noop_warm / TARGET_NOOP_S, 3),
    }
    print(
        f"big folder: {n} files (written in {write_s} s): first dvc repro {first} s; warm state "
        f"db: dvc status {status_warm} s, no-op dvc repro {noop_warm} s "
        f"({figures['ratio_to_target']:.2f}x the {TARGET_NOOP_S:.0f} s limit); cold state db: "
        f"dvc status {status_cold} s, then {status_rewarm} s; load {env_load:.1f}"
    )
    return figures


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
