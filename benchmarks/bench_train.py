"""Teacher training throughput and peak memory on CPU, extrapolated to the demo data.

Trains the default teacher of params.yaml (`train` section: arch, batch size, augmentation) with
`edge_pipeline.teacher.fit.fit` on synthetic 16x16x1 images, 2 epochs with 2 torch threads (the
project's CPU budget; the second epoch is the steady state), then 1 epoch with 1 thread. Figures:
- train_images_per_s: wall-clock training images/s with 2 threads (forward, backward, update,
  augmentation, the small validation pass);
- train_images_per_cpu_s_1thread: images per CPU-second of the 1-thread run, which other
  processes on shared cores hardly change (2 threads spin-wait and lose much more);
- eval_images_per_s: inference images/s with 2 threads (the stage's logits pass);
- peak_rss_mib: the process's peak resident memory (resource.getrusage), and the part of it
  already reached after `import torch`;
- demo_train_s_wall: epochs x demo images / train_images_per_s (+ validation), the stage's
  training time on the demo data at the current load if no epoch stops early;
- demo_train_s_idle_2core: the same from the 1-thread CPU rate scaled by 2 threads (perfect
  scaling: a lower bound for two idle cores);
- both as ratios to the 3-minute target. The load average is printed with them.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import numpy as np

from edge_pipeline.artifacts.catalog import TRAIN_SET
from edge_pipeline.config import load_section
from edge_pipeline.config.teacher import Train

TARGET_S = 180.0
DEMO_TRAIN, DEMO_VAL = 1150, 159  # demo data after SMOTE (689 real train rows), its val split
N_TRAIN, N_VAL, K = 256, 64, 10


def _fit(p: Train, x: np.ndarray, y: np.ndarray, *, epochs: int, n: int) -> tuple[float, float]:
    """Train a fresh default teacher; returns (last epoch's wall images/s, images per CPU-s)."""
    import torch

    from edge_pipeline.teacher.fit import deterministic, fit
    from edge_pipeline.teacher.models import build_teacher

    with deterministic(0):
        model = build_teacher(p.arch, num_classes=K, in_channels=1, image_size=(16, 16))
        cpu0 = time.process_time()
        result = fit(
            model, x[:n], y[:n], x[-N_VAL:], y[-N_VAL:],
            epochs=epochs, batch_size=p.batch_size, lr=p.lr,
            weight_decay=p.weight_decay, patience=epochs, class_weights=None,
            augment=p.augment, seed=0, device=torch.device("cpu"),
        )  # fmt: skip
        cpu_s = time.process_time() - cpu0
    return n / result.history[-1]["seconds"], result.images_seen / cpu_s


def _peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run() -> dict:
    import torch

    import_rss = _peak_rss_mib()  # torch's CUDA build alone is most of the footprint
    from edge_pipeline.teacher.fit import predict_logits
    from edge_pipeline.teacher.models import build_teacher

    repo = Path(__file__).resolve().parent.parent
    p: Train = load_section("train", repo / "params.yaml")
    demo_train, demo_val = DEMO_TRAIN, DEMO_VAL
    npz = repo / "data" / "resample" / TRAIN_SET
    if npz.exists():  # the real demo size when the pipeline has run
        with np.load(npz) as z:
            demo_train = len(z["y"])

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (N_TRAIN + N_VAL, 16, 16, 1), dtype=np.uint8)
    y = rng.integers(0, K, N_TRAIN + N_VAL)
    torch.set_num_threads(2)
    wall_rate, _ = _fit(p, x, y, epochs=2, n=N_TRAIN)
    model = build_teacher(p.arch, num_classes=K, in_channels=1, image_size=(16, 16))
    start = time.perf_counter()
    predict_logits(model, x, device=torch.device("cpu"))
    eval_rate = len(x) / (time.perf_counter() - start)
    torch.set_num_threads(1)
    _, cpu_rate = _fit(p, x, y, epochs=1, n=N_TRAIN // 2)

    val_s = demo_val / eval_rate
    wall_est = p.epochs * (demo_train / wall_rate + val_s)
    idle_est = p.epochs * (demo_train / (2 * cpu_rate) + val_s)
    figures = {
        "arch": p.arch,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "train_images_per_s": round(wall_rate, 1),
        "train_images_per_cpu_s_1thread": round(cpu_rate, 1),
        "eval_images_per_s": round(eval_rate, 1),
        "peak_rss_mib": _peak_rss_mib(),
        "rss_after_torch_import_mib": import_rss,
        "demo_train_images": demo_train,
        "epochs": p.epochs,
        "demo_train_s_wall": round(wall_est, 1),
        "demo_train_s_idle_2core": round(idle_est, 1),
        "ratio_wall_to_3min": round(wall_est / TARGET_S, 2),
        "ratio_idle_2core_to_3min": round(idle_est / TARGET_S, 2),
    }
    for key, value in figures.items():
        print(f"{key:>32}: {value}")
    print(
        f"demo training ({p.epochs} epochs x {demo_train} images): {wall_est:.0f} s at load "
        f"average {figures['load_avg_1m']} on {figures['cpu_count']} cores "
        f"({wall_est / TARGET_S:.2f} x the 3-minute target); {idle_est:.0f} s on 2 idle cores "
        f"from the 1-thread CPU rate ({idle_est / TARGET_S:.2f} x)"
    )
    return figures


if __name__ == "__main__":
    run()
