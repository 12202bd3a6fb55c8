"""Knowledge distillation for tf_keras students: the loss, the fit loop and evaluation.

Shared by the distill, prune and qat stages. The loop is plain `model.fit` on a tf.data pipeline
whose targets pack one-hot labels and teacher logits side by side (N, 2K); `DistillationLoss`
unpacks them.
So it trains plain models and TF-MOT wrapped ones (`prune_low_magnitude`, `quantize_apply`) alike,
and any Keras callback passed in (e.g. `tfmot.sparsity.keras.UpdatePruningStep`) runs as usual.

Inputs are uint8 images (N, H, W, C), scaled to float32 x / 255 here; augmentation runs in the
tf.data pipeline, never inside the model, so exported models carry none of it.

Which rows an epoch sees: `kd_data.draw_rows` (`shuffle` or class-`balanced`, seeded); the
tf.data pipeline that gathers them: `kd_input.train_dataset`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from edge_pipeline.student.kd_data import draw_rows  # noqa: E402
from edge_pipeline.student.kd_input import make_augment, train_dataset  # noqa: E402

log = logging.getLogger("edge_pipeline.student.kd_training")


def _per_example_kd(labels, teacher, student, alpha: float, temperature: float) -> tf.Tensor:
    """(N,) distillation loss per example (see `kd_loss`)."""
    student = tf.cast(student, tf.float32)
    loss = alpha * tf_keras.losses.categorical_crossentropy(labels, student, from_logits=True)
    if alpha < 1.0:
        t = float(temperature)
        log_p_teacher = tf.nn.log_softmax(tf.cast(teacher, tf.float32) / t)
        # KL from log-softmaxes rather than clipped probabilities: exact for tiny probabilities.
        kl = tf.reduce_sum(
            tf.exp(log_p_teacher) * (log_p_teacher - tf.nn.log_softmax(student / t)), axis=-1
        )
        loss += (1.0 - alpha) * t * t * kl
    return loss


def kd_loss(
    labels_onehot: tf.Tensor,
    teacher_logits: tf.Tensor,
    student_logits: tf.Tensor,
    *,
    alpha: float,
    temperature: float,
    sample_weight: tf.Tensor | None = None,
) -> tf.Tensor:
    """Hinton et al. (2015) distillation loss, averaged over the batch.

    `alpha * CE(labels, student)
     + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))`;
    the T^2 factor keeps the soft-target gradients on the scale of the hard-label ones.

    Args:
        labels_onehot: (N, K) one-hot (or soft) labels.
        teacher_logits, student_logits: (N, K) logits.
        alpha: weight of the hard-label cross-entropy in [0, 1]; 1 = plain CE, no distillation.
        temperature: T > 0 softening both distributions.
        sample_weight: optional (N,) per-example weights (e.g. class weights); the result is
            mean(weight * loss), Keras' SUM_OVER_BATCH_SIZE convention.

    Returns:
        Scalar float32 tensor.
    """
    loss = _per_example_kd(labels_onehot, teacher_logits, student_logits, alpha, temperature)
    if sample_weight is not None:
        loss *= tf.cast(sample_weight, tf.float32)
    return tf.reduce_mean(loss)


@tf_keras.utils.register_keras_serializable(package="edge_pipeline")
class DistillationLoss(tf_keras.losses.Loss):
    """`kd_loss` as a Keras loss; y_true is (N, 2K) = [one-hot labels | teacher logits]."""

    def __init__(self, n_classes: int, alpha: float, temperature: float, name: str = "kd_loss"):
        super().__init__(name=name)
        self.n_classes, self.alpha, self.temperature = int(n_classes), alpha, temperature

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        k = self.n_classes  # Keras applies sample weights and the batch mean to this (N,) vector
        return _per_example_kd(y_true[:, :k], y_true[:, k:], y_pred, self.alpha, self.temperature)

    def get_config(self) -> dict[str, Any]:
        return {"n_classes": self.n_classes, "alpha": self.alpha, "temperature": self.temperature}


def set_determinism(seed: int) -> None:
    """Seed Python, NumPy and TF and make TF ops deterministic (same seed -> same weights)."""
    tf_keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def to_inputs(x: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 x / 255, the input every student takes; float input passes."""
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


class ValidationMetrics(tf_keras.callbacks.Callback):
    """Adds val_macro_f1, val_accuracy and val_loss (plain CE) to the epoch logs."""

    def __init__(self, x_val: np.ndarray, y_val: np.ndarray, n_classes: int, log_prefix: str = ""):
        super().__init__()
        self.x_val, self.y_val, self.n_classes = to_inputs(x_val), y_val, n_classes
        self.prefix, self.t0 = log_prefix, time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logits = self.model.predict(self.x_val, batch_size=1024, verbose=0)
        pred = logits.argmax(axis=1)
        onehot = tf.one_hot(self.y_val, self.n_classes)
        ce = tf_keras.losses.categorical_crossentropy(onehot, logits, from_logits=True)
        logs = logs if logs is not None else {}
        logs["val_loss"] = float(tf.reduce_mean(ce))
        logs["val_accuracy"] = accuracy_score(self.y_val, pred)
        logs["val_macro_f1"] = f1_score(
            self.y_val, pred, average="macro", labels=range(self.n_classes), zero_division=0
        )
        logs["epoch_seconds"] = time.perf_counter() - self.t0
        log.info(
            "%sepoch %d: loss %.4f val_loss %.4f val_acc %.4f val_macro_f1 %.4f (%.1fs)",
            self.prefix, epoch + 1, logs.get("loss", float("nan")), logs["val_loss"],
            logs["val_accuracy"], logs["val_macro_f1"], logs["epoch_seconds"],
        )  # fmt: skip


class BestOnValidation(tf_keras.callbacks.EarlyStopping):
    """Early stopping on val_macro_f1, ties broken by the lower val_loss; keeps the best weights.

    On a small validation set the macro-F1 saturates: a warm-started student reached its maximum in
    epoch 1, and a strict `>` kept those weights through 12 more epochs of fine-tuning on tonight's
    data (demo night 2: test accuracy 95.7% on average over three seeds, 96.4% with the tie-break;
    docs/nightly.md). An epoch that ties the best macro-F1 with a lower val_loss counts as better
    and restarts the patience count.
    """

    def __init__(self, patience: int):
        super().__init__(monitor="val_macro_f1", mode="max", patience=patience,
                         restore_best_weights=True)  # fmt: skip

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        self.best: tuple[float, float] = (-np.inf, -np.inf)

    def get_monitor_value(self, logs: dict | None) -> tuple[float, float]:
        logs = logs or {}
        return (logs["val_macro_f1"], -logs["val_loss"])  # ValidationMetrics adds both

    def _is_improvement(self, monitor_value: tuple, reference_value: tuple) -> bool:
        return monitor_value > reference_value  # lexicographic: macro-F1 first, then -val_loss


def fit_distilled(
    model: Any,
    x_train: np.ndarray,
    y_train: np.ndarray,
    teacher_logits: np.ndarray,
    *,
    x_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    alpha: float,
    temperature: float,
    epochs: int,
    batch_size: int,
    lr: float,
    patience: int,
    seed: int,
    class_weights: Sequence[float] | Mapping[int, float] | None = None,
    augment: Mapping[str, Any] | None = None,
    sampler: str = "shuffle",
    num_samples: int | None = None,
    passes: int = 1,
    callbacks: Sequence[Any] = (),
    log_prefix: str = "",
) -> dict[str, Any]:
    """Compile and train `model` with `kd_loss`, early-stopping on validation macro-F1 (ties: the
    lower validation loss; `BestOnValidation`).

    Adam (tf_keras' fused legacy implementation) with a cosine-decayed learning rate; at the end
    the weights of the best epoch are restored.

    Args:
        model: tf_keras model (plain or TF-MOT wrapped), float32 (N, H, W, C) -> (N, K) logits.
        x_train: uint8 (N, H, W, C); y_train: int (N,) in 0..K-1.
        teacher_logits: float (N, K), row-aligned with x_train (ignored in effect when alpha == 1).
        x_val, y_val: uint8 (M, H, W, C) and int (M,) for early stopping.
        n_classes: K.
        alpha, temperature: see `kd_loss`.
        class_weights: optional weight per class (length K, or {class index: weight}).
        augment: augmentation policy for `kd_input.make_augment`, or None.
        sampler, num_samples, passes: the rows of each epoch (`kd_data.draw_rows`): `balanced` with
            num_samples = the real train rows makes an epoch cost what the real data costs.
        callbacks: extra Keras callbacks; they see val_macro_f1 in the epoch logs.
        log_prefix: prepended to the per-epoch log lines (e.g. "baseline ").

    Returns:
        {"history": {metric: per-epoch list}, "best_epoch" (1-based), "best_val_macro_f1",
         "epochs_run", "rows_per_epoch", "train_seconds", "images_per_s"}.
    """
    if teacher_logits.shape != (len(x_train), n_classes):
        raise ValueError(
            f"teacher_logits has shape {teacher_logits.shape}, expected "
            f"{(len(x_train), n_classes)} (row-aligned with the train images); re-run train"
        )
    set_determinism(seed)
    targets = np.concatenate(
        [np.eye(n_classes, dtype=np.float32)[y_train], teacher_logits.astype(np.float32)], axis=1
    )
    weights = None
    if class_weights is not None:
        if isinstance(class_weights, Mapping):
            class_weights = [class_weights[k] for k in range(n_classes)]
        weights = np.asarray(class_weights, dtype=np.float32)[y_train]
    rows = draw_rows(
        y_train, sampler=sampler, epochs=epochs, seed=seed, num_samples=num_samples, passes=passes
    )
    ds = train_dataset(
        x_train, targets, weights, rows, batch_size=batch_size,
        augment=make_augment(augment, image_size=x_train.shape[1:3], seed=seed),
    )  # fmt: skip
    steps_per_epoch = int(np.ceil(rows.shape[1] / batch_size))
    schedule = tf_keras.optimizers.schedules.CosineDecay(lr, epochs * steps_per_epoch)
    model.compile(
        # The legacy Adam applies each variable's update as one fused op (ResourceApplyAdam), the
        # same update rule as tf_keras.optimizers.Adam's dozen Python-built ops per variable: the
        # train step traces in about half the time (the first epoch of a fit: distill 7.7 -> 4.3 s,
        # prune 13 -> 10 s, qat 12 -> 8 s on the demo).
        optimizer=tf_keras.optimizers.legacy.Adam(schedule),
        loss=DistillationLoss(n_classes, alpha, temperature),
    )
    stopper = BestOnValidation(patience)
    val = ValidationMetrics(x_val, y_val, n_classes, log_prefix)
    start = time.perf_counter()
    hist = model.fit(
        ds, epochs=epochs, steps_per_epoch=steps_per_epoch,
        callbacks=[val, *callbacks, stopper], verbose=0,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
    return {
        "history": history,
        "best_epoch": int(stopper.best_epoch) + 1,
        "best_val_macro_f1": float(stopper.best[0]),
        "epochs_run": len(history["loss"]),
        "rows_per_epoch": int(rows.shape[1]),
        "train_seconds": seconds,
        "images_per_s": rows.shape[1] * len(history["loss"]) / seconds,
    }


def predict_logits(model: Any, x: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
    """(N, K) float32 logits for uint8 (or already scaled float) images (N, H, W, C)."""
    return np.asarray(model.predict(to_inputs(x), batch_size=batch_size, verbose=0))


def evaluate(model: Any, x: np.ndarray, y: np.ndarray, *, n_classes: int | None = None) -> dict:
    """Test metrics of `model` on uint8 images x (N, H, W, C) with labels y (N,).

    Returns {"accuracy", "macro_f1", "precision" (K,), "recall" (K,), "confusion" (K, K) lists,
    "n", "pred" (int64 (N,) predicted classes)}; per-class lists are indexed by class, confusion
    rows are true classes.
    """
    pred = predict_logits(model, x).argmax(axis=1)
    k = n_classes or int(model.output_shape[-1])
    return metrics_from_predictions(y, pred, n_classes=k) | {"pred": pred}


def metrics_from_predictions(y: np.ndarray, pred: np.ndarray, *, n_classes: int) -> dict:
    """The metrics of `evaluate` from true labels y (N,) and predicted labels pred (N,)."""
    labels = list(range(n_classes))
    precision, recall, _, _ = precision_recall_fscore_support(
        y, pred, labels=labels, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "precision": [float(v) for v in precision],
        "recall": [float(v) for v in recall],
        "confusion": confusion_matrix(y, pred, labels=labels).tolist(),
        "n": len(y),
    }
