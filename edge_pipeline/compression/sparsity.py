"""Magnitude pruning with TF-MOT (`prune_low_magnitude`), fine-tuned with the distillation loss.

Which kernels TF-MOT can sparsify (checked against tensorflow-model-optimization 0.8.1):
- Conv2D and Dense kernels. DepthwiseConv2D has no prunable weight in TF-MOT's registry (it is
  wrapped, and left dense), which is also why depthwise channels are removed by channel pruning.
- `block_size` (e.g. [1, 4]) needs rank-2 weights, so it applies to Dense kernels only; Conv2D
  kernels stay element-wise.
- `sparsity_m_by_n` (e.g. [2, 4]) groups n consecutive input channels of each filter; it applies
  to Conv2D / Dense layers whose input channels are a multiple of n (others stay element-wise).
  Its sparsity is m/n, set once at step 1, whatever `target_sparsity` says.

The schedule: `PolynomialDecay` from 0 to the target over the ramp, its begin/end/frequency computed
from the real number of steps so the last mask update lands on the last ramp step (TF-MOT's default
frequency=100 silently ends at 0% on a short run). The ramp runs as ONE `fit_distilled` epoch of
`ramp_epochs` passes over the train rows (row indices drawn per pass, no copies of the pixels),
because `fit_distilled` restores the best epoch's weights (pruning masks included) at the end: with
one epoch that is the fully sparse one. Recovery epochs then run at constant sparsity, so any epoch
it restores is at the target.

A model that already has its zeros (a warm start) needs no ramp (`ramp_epochs=0`): `HOLD` sets the
masks once, at the target, on the first step (`ConstantSparsity`), and the recovery epochs are the
only fit: one tf.function trace instead of two.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


class SparsityShortfall(ValueError):
    """The pruned model is less sparse than asked; the message names the layers and the fix."""


@dataclass(frozen=True)
class PruningPlan:
    """A PolynomialDecay schedule in training steps (TF-MOT's pruning_step counts 0..steps-1)."""

    begin_step: int
    end_step: int
    frequency: int


# masks set once, on the first training step (the wrapper counts steps from 1 in tfmot 0.8.1)
HOLD = PruningPlan(begin_step=1, end_step=1, frequency=1)


def plan_schedule(steps: int, *, frequency: int | None = None, n_updates: int = 10) -> PruningPlan:
    """The schedule that reaches the target at the last of `steps` training steps.

    Args:
        steps: training steps of the ramp (>= 2).
        frequency: steps between mask updates; default about `n_updates` updates over the ramp.
    """
    if steps < 2:
        raise ValueError(f"the pruning ramp has {steps} training step(s); it needs at least 2")
    last = steps - 1
    freq = int(frequency) if frequency else max(1, last // n_updates)
    return PruningPlan(begin_step=0, end_step=max(1, last // freq * freq), frequency=freq)


def prunable_layers(model: Any, *, exclude: Collection[str] = ()) -> list[Any]:
    """Conv2D (not depthwise) and Dense layers of `model` whose kernels TF-MOT sparsifies."""
    return [
        layer
        for layer in model.layers
        if type(layer).__name__ in ("Conv2D", "Dense") and layer.name not in exclude
    ]


def wrap_for_pruning(
    model: Any,
    *,
    plan: PruningPlan,
    target: float,
    block_size: Sequence[int] = (1, 1),
    m_by_n: Sequence[int] | None = None,
    exclude: Collection[str] = (),
) -> tuple[Any, dict[str, float]]:
    """Wrap every prunable layer of `model` in `prune_low_magnitude` (see the module docstring).

    Returns:
        (wrapped model sharing the layers, hence the weights, of `model`;
         {layer name: sparsity it must reach}).
    """
    import tensorflow_model_optimization as tfmot
    import tf_keras

    sk = tfmot.sparsity.keras
    if plan.end_step == plan.begin_step:  # HOLD: PolynomialDecay would divide by zero
        schedule = sk.ConstantSparsity(float(target), plan.begin_step, plan.end_step, frequency=1)
    else:
        schedule = sk.PolynomialDecay(
            initial_sparsity=0.0, final_sparsity=float(target), begin_step=plan.begin_step,
            end_step=plan.end_step, frequency=plan.frequency,
        )  # fmt: skip
    chosen = {layer.name for layer in prunable_layers(model, exclude=exclude)}
    expected: dict[str, float] = {}

    def wrap(layer: Any) -> Any:  # like TF-MOT's own wrapper: layers are shared, not copied
        if layer.name not in chosen:
            return layer
        kwargs: dict[str, Any] = {}
        c_in = int(layer.kernel.shape[-2])  # Conv2D (kh, kw, C_in, C_out), Dense (C_in, units)
        if m_by_n and c_in % int(m_by_n[1]) == 0:
            kwargs["sparsity_m_by_n"] = tuple(int(v) for v in m_by_n)
            expected[layer.name] = int(m_by_n[0]) / int(m_by_n[1])
        else:
            if tuple(block_size) != (1, 1) and type(layer).__name__ == "Dense":
                kwargs["block_size"] = tuple(int(v) for v in block_size)
            expected[layer.name] = float(target)
        return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule, **kwargs)

    return tf_keras.models.clone_model(model, clone_function=wrap), expected


def kernel_sparsity(model: Any, names: Collection[str]) -> dict[str, dict[str, float]]:
    """{layer: {"weights", "zeros", "sparsity"}} of the kernels of the named (stripped) layers."""
    out = {}
    for name in names:
        kernel = model.get_layer(name).get_weights()[0]
        zeros = int(np.count_nonzero(kernel == 0))
        out[name] = {"weights": int(kernel.size), "zeros": zeros, "sparsity": zeros / kernel.size}
    return out


def overall_sparsity(table: Mapping[str, Mapping[str, float]]) -> float:
    """Zeros over weights across all layers of a `kernel_sparsity` table."""
    weights = sum(row["weights"] for row in table.values())
    return sum(row["zeros"] for row in table.values()) / weights if weights else 0.0


def check_sparsity(
    table: Mapping[str, Mapping[str, float]],
    expected: Mapping[str, float],
    *,
    tolerance: float,
) -> None:
    """Raise SparsityShortfall if any layer is more than `tolerance` below its expected sparsity."""
    short = {
        name: (table[name]["sparsity"], want)
        for name, want in expected.items()
        if table[name]["sparsity"] < want - tolerance
    }
    if short:
        detail = ", ".join(f"{n} {got:.1%} < {want:.1%}" for n, (got, want) in short.items())
        raise SparsityShortfall(
            f"pruning fell short of its target by more than {tolerance:.0%} in {len(short)} "
            f"layer(s): {detail}. The schedule's last mask update did not happen: raise "
            "prune.ramp_epochs, or lower prune.frequency (null = automatic) in params.yaml"
        )


def prune_and_finetune(
    model: Any,
    x_train: np.ndarray,
    y_train: np.ndarray,
    teacher_logits: np.ndarray,
    *,
    target: float,
    ramp_epochs: int,
    recovery_epochs: int,
    batch_size: int,
    sampler: str = "shuffle",
    num_samples: int | None = None,
    frequency: int | None = None,
    plan: PruningPlan | None = None,
    block_size: Sequence[int] = (1, 1),
    m_by_n: Sequence[int] | None = None,
    exclude: Collection[str] = (),
    tolerance: float,
    **fit_kwargs: Any,
) -> tuple[Any, dict[str, Any]]:
    """Sparsify `model` to `target` with distillation fine-tuning, strip the wrappers, check it.

    Args:
        model: tf_keras model (float32 (N, H, W, C) in [0, 1] -> (N, K) logits).
        x_train: uint8 (N, H, W, C); y_train: int (N,); teacher_logits: float (N, K).
        ramp_epochs: passes over the train set while sparsity rises (run as one epoch); 0 = the
            model already has its zeros: the masks are held at the target from the first step.
        recovery_epochs: epochs at constant sparsity afterwards (0 = none).
        sampler, num_samples: the rows of a pass (`student.kd_data.draw_rows`).
        tolerance: how far (a fraction, 0.02 = 2 points) a layer may end below its target.
        plan: explicit schedule (default `plan_schedule` over the ramp's real step count).
        fit_kwargs: the other keywords of `student.kd_training.fit_distilled` (x_val, y_val,
            n_classes, alpha, temperature, lr, patience, seed, ...).

    Returns:
        (stripped sparse model, {"plan", "expected", "layers" (kernel_sparsity),
         "overall_sparsity", "rows_per_pass" (train rows of one pass), "ramp", "recovery"
         (fit_distilled results; None when not run)}).

    Raises:
        SparsityShortfall: a layer ended more than `tolerance` below its target.
    """
    import tensorflow_model_optimization as tfmot

    from edge_pipeline.student.kd_data import rows_per_pass
    from edge_pipeline.student.kd_training import fit_distilled

    reps = int(ramp_epochs)
    per_pass = rows_per_pass(len(x_train), sampler=sampler, num_samples=num_samples)
    plan = plan or (
        plan_schedule(math.ceil(reps * per_pass / batch_size), frequency=frequency)
        if reps
        else HOLD
    )
    wrapped, expected = wrap_for_pruning(
        model, plan=plan, target=target, block_size=block_size, m_by_n=m_by_n, exclude=exclude
    )
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]
    common = {
        "batch_size": batch_size, "sampler": sampler, "num_samples": num_samples,
        "callbacks": callbacks, **fit_kwargs,
    }  # fmt: skip
    ramp = recovery = None
    if reps:
        ramp = fit_distilled(
            wrapped, x_train, y_train, teacher_logits, epochs=1, passes=reps, log_prefix="ramp ",
            **common,
        )  # fmt: skip
    if recovery_epochs > 0:
        recovery = fit_distilled(
            wrapped, x_train, y_train, teacher_logits, epochs=recovery_epochs,
            log_prefix="recovery ", **common,
        )  # fmt: skip
    stripped = tfmot.sparsity.keras.strip_pruning(wrapped)
    table = kernel_sparsity(stripped, expected)
    check_sparsity(table, expected, tolerance=tolerance)
    return stripped, {
        "plan": plan.__dict__,
        "expected": expected,
        "layers": table,
        "overall_sparsity": overall_sparsity(table),
        "rows_per_pass": per_pass,
        "ramp": ramp,
        "recovery": recovery,
    }
