"""Benchmark of the clean stage's core: out-of-fold probabilities + cleanlab find_label_issues.

50,000 synthetic examples x 784 features (sklearn make_classification, 10 classes) with 10% of the
labels flipped to another class, run with the clean settings of params.yaml and 2 processes.
Targets (issue 2): <= 180 s and <= 4 GiB peak memory (this process plus its workers) on 2 cores.
Also prints precision/recall/F1 of the flagged issues against the flipped labels.

Run: `python -m benchmarks.bench_clean [--n 50000]` (or `make bench`).
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time

import numpy as np
import psutil
from sklearn.datasets import make_classification

from edge_pipeline.config import load_section
from edge_pipeline.quality.clean_outputs import score_issues
from edge_pipeline.quality.cleaning import find_issues, out_of_fold_probs

TARGET_S = 180.0
TARGET_GIB = 4.0
N_JOBS = 2


class PeakRss:
    """Samples the summed RSS of this process and its children (joblib workers) every 50 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.05):
            total = me.memory_info().rss
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):  # a worker that just exited
                    total += child.memory_info().rss
            self.peak = max(self.peak, total)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def make_data(n: int, *, noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, ...]:
    """float32 (n, 784) features, true and noisy int (n,) labels (10 classes)."""
    x, y = make_classification(
        n_samples=n, n_features=784, n_informative=40, n_redundant=20, n_classes=10,
        n_clusters_per_class=1, class_sep=1.5, random_state=seed,
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    noisy = y.copy()
    flip = rng.random(n) < noise
    noisy[flip] = (y[flip] + rng.integers(1, 10, flip.sum())) % 10
    return x.astype(np.float32), y, noisy


def run(n: int = 50_000) -> dict:
    p = load_section("clean").model_copy(update={"n_jobs": N_JOBS})
    x, y_true, y_noisy = make_data(n)
    with PeakRss() as mem:
        start = time.perf_counter()
        probs, folds, _ = out_of_fold_probs(x, y_noisy, p=p)
        oof_s = time.perf_counter() - start
        is_issue, _ = find_issues(y_noisy, probs, p=p)
        seconds = time.perf_counter() - start
    score = score_issues(is_issue, y_noisy, y_true, probs.argmax(axis=1))
    peak_gib = mem.peak / 2**30
    result = {
        "n": n,
        "features": x.shape[1],
        "model": p.model,
        "pca_components": p.pca_components,
        "folds": folds,
        "n_jobs": N_JOBS,
        "oof_s": round(oof_s, 1),
        "seconds": round(seconds, 1),
        "target_s": TARGET_S,
        "time_ratio_to_target": round(seconds / TARGET_S, 3),
        "peak_rss_gib": round(peak_gib, 2),
        "mem_ratio_to_target": round(peak_gib / TARGET_GIB, 3),
        "precision": score["precision"],
        "recall": score["recall"],
        "f1": score["f1"],
    }
    print(
        f"clean on {n} x {x.shape[1]} ({result['model']}, PCA {result['pca_components']}, "
        f"{folds} folds, n_jobs={N_JOBS}): {seconds:.1f} s (OOF {oof_s:.1f} s), "
        f"{seconds / TARGET_S:.2f}x the {TARGET_S:.0f} s target; peak {peak_gib:.2f} GiB "
        f"({peak_gib / TARGET_GIB:.2f}x the {TARGET_GIB:.0f} GiB target); "
        f"issues P/R/F1 {score['precision']:.3f}/{score['recall']:.3f}/{score['f1']:.3f}"
    )
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="number of examples")
    run(parser.parse_args().n)
