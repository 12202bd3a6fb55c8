"""The prune stage's method: channel pruning, then TF-MOT sparsity, fine-tuned by distillation.

1. Channel pruning (channels.py): remove the weakest `channel_fraction` of the hidden filters of
   every inverted-residual block (and of the head with scope "all"), rebuild a thinner model,
   refit the layers after them by least squares, and check the class agreement with the student
   BEFORE any fine-tuning: below `min_agreement` the fraction is halved (down to 10%) and tried
   again, so a student that needs its channels is pruned more gently instead of failing the night.
2. Sparsity (sparsity.py): TF-MOT `prune_low_magnitude` to `target_sparsity` over the ramp,
   fine-tuned with the distillation loss against the teacher logits, wrappers stripped, and the
   sparsity reached asserted per layer (within `sparsity_tolerance`).

A warm start (`start`, compression/warm_prune.py: the champion's pruned model) replaces step 1: it
already has its channels removed and its zeros, so step 2 holds the masks at the target and runs
at most `warm.epochs` of recovery at `warm.lr`, with no ramp. If it agrees with tonight's student
on fewer check images than `min_agreement`, tonight's student is pruned from scratch instead.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edge_pipeline.compression import model_facts as mf
from edge_pipeline.config.compression import Prune

log = logging.getLogger("edge_pipeline.compression.pruning")
MIN_FRACTION = 0.1  # the gentlest channel fraction tried before the stage gives up


def prune_student(
    model: Any,
    x_train: np.ndarray,
    y_train: np.ndarray,
    teacher_logits: np.ndarray,
    *,
    x_val: np.ndarray,
    y_val: np.ndarray,
    x_check: np.ndarray,
    y_check: np.ndarray | None = None,
    options: Prune,
    real_rows: int | None = None,
    start: Any | None = None,
    start_meta: dict[str, Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Channel-prune then sparsify `model` (module docstring), fine-tuning with distillation.

    Args:
        model: the student, float32 (N, H, W, C) in [0, 1] -> (N, K) logits.
        x_train: uint8 (N, H, W, C); y_train: int (N,); teacher_logits: float32 (N, K).
        x_val, y_val: uint8 (M, H, W, C), int (M,) for early stopping.
        x_check: uint8 (L, H, W, C) images for the agreement check before fine-tuning;
            y_check: their int (L,) labels, to report the accuracy there too (optional).
        options: params.yaml `prune` (`epochs` = recovery epochs at constant sparsity).
        real_rows: the non-synthetic train rows: what a pass of `prune.sampler: balanced` draws
            (None = N).
        start, start_meta: a pruned model to fine-tune instead (warm start) and its meta.json.

    Returns:
        (stripped pruned model, report: "warm" (whether `start` was fine-tuned),
         "channel_fraction" (the one used; None when warm), "channels",
         "agreement_before_finetune", "channel_pruned" (facts), "ramp_passes", and
         `prune_and_finetune`'s "plan", "expected", "layers", "overall_sparsity",
         "rows_per_pass", "ramp", "recovery").

    Raises:
        ValueError: agreement below `min_agreement` even at the gentlest fraction;
            SparsityShortfall: target not reached.
    """
    from edge_pipeline.compression.sparsity import prune_and_finetune

    o = options
    x_float = x_check.astype(np.float32) / 255.0
    warm = start is not None and start_meta is not None
    if warm:
        thin, channels = start, start_meta["channels"]
        agreement = mf.prediction_agreement(model, thin, x_float)
        if agreement < o.min_agreement:
            log.warning("the warm start agrees with tonight's student on %.1f%% of %d images "
                        "(prune.min_agreement=%s): pruning tonight's student instead",
                        100 * agreement, len(x_check), o.min_agreement)  # fmt: skip
            warm = False
    if not warm:
        thin, channels, agreement, fraction = _channel_prune(model, x_train, x_float, options=o)
    thin_facts = {**mf.keras_facts(thin), "agreement_before_finetune": round(agreement, 4)}
    if y_check is not None:
        pred = thin.predict(x_float, verbose=0).argmax(axis=1)
        thin_facts["accuracy_before_finetune"] = round(float(np.mean(pred == y_check)), 4)
    log.info("channel pruning %s; before fine-tuning %s", channels, thin_facts)
    fit = o.fit_options()
    recovery_epochs = fit.pop("epochs")
    if warm:  # nothing left to ramp: masks held at the target, a short recovery
        recovery_epochs, fit["lr"] = o.warm.epochs, o.warm.lr
    ramp_passes = 0 if warm else o.ramp_epochs
    pruned, info = prune_and_finetune(
        thin, x_train, y_train, teacher_logits, target=o.target_sparsity,
        ramp_epochs=ramp_passes, recovery_epochs=recovery_epochs, frequency=o.frequency,
        block_size=o.block_size, m_by_n=o.sparsity_m_by_n, exclude=o.exclude,
        tolerance=o.sparsity_tolerance, x_val=x_val, y_val=y_val,
        n_classes=int(teacher_logits.shape[1]), num_samples=real_rows, **fit,
    )  # fmt: skip
    return pruned, {
        "warm": warm,
        "channel_fraction": None if warm else fraction,
        "channels": channels,
        "agreement_before_finetune": agreement,
        "channel_pruned": thin_facts,
        "ramp_passes": ramp_passes,
        **info,
    }


def _channel_prune(
    model: Any, x_train: np.ndarray, x_check: np.ndarray, *, options: Prune
) -> tuple[Any, dict[str, Any], float, float]:
    """(thinner model, channels report, agreement with `model` on float32 x_check, fraction used).

    Removes `channel_fraction` of the channels; when the result agrees with the student on fewer
    check images than `min_agreement`, halves the fraction (down to `MIN_FRACTION`) rather than
    fail the night: a student that needs all its channels (rgb96 from an under-trained teacher:
    45.7% at 0.5) still gets pruned, more gently, and the metrics say by how much.

    Raises:
        ValueError: even the gentlest fraction agrees on fewer than `min_agreement`.
    """
    from edge_pipeline.compression.channels import channel_prune

    o = options
    calib = mf.calibration_sample(x_train, o.calib_samples, seed=o.seed)
    fraction, tried = o.channel_fraction, []
    while True:
        thin, channels = channel_prune(
            model, fraction=fraction, x_calib=calib, exclude=o.exclude, scope=o.channel_scope,
            seed=o.seed,
        )  # fmt: skip
        agreement = mf.prediction_agreement(model, thin, x_check)
        tried.append(f"{fraction:.0%}: {agreement:.1%}")
        if agreement >= o.min_agreement:
            break
        if fraction / 2 < MIN_FRACTION:
            raise ValueError(
                f"after removing channels the model agrees with the student on too few of "
                f"{len(x_check)} images (fraction: agreement {', '.join(tried)}; prune."
                f"min_agreement={o.min_agreement}); lower prune.min_agreement, raise "
                "prune.calib_samples, or set prune.channel_fraction: 0"
            )
        log.warning("removing %.0f%% of the channels leaves %.1f%% agreement with the student "
                    "(< prune.min_agreement %s): trying %.0f%%", 100 * fraction, 100 * agreement,
                    o.min_agreement, 50 * fraction)  # fmt: skip
        fraction /= 2
    return thin, channels, agreement, fraction
