"""Distillation loss, the rows an epoch draws, the shared fit loop (plain and TF-MOT wrapped
models) and evaluation."""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy.special import softmax
from scipy.stats import entropy

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

from edge_pipeline.student import kd_training as kd  # noqa: E402
from edge_pipeline.student.kd_data import draw_rows  # noqa: E402
from edge_pipeline.student.kd_input import make_augment, train_dataset  # noqa: E402
from edge_pipeline.student.model import build_student  # noqa: E402


def _batch(n=6, k=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    return np.eye(k, dtype=np.float32)[y], rng.normal(size=(n, k)), rng.normal(size=(n, k))


def test_alpha_one_is_categorical_cross_entropy_whatever_the_teacher():
    labels, teacher, student = _batch()
    ce = tf_keras.losses.CategoricalCrossentropy(from_logits=True)(labels, student).numpy()
    for t in (teacher, 10 * teacher):
        loss = kd.kd_loss(labels, t, student, alpha=1.0, temperature=4.0).numpy()
        assert loss == pytest.approx(ce, abs=1e-6)


def test_soft_term_is_t_squared_kl_checked_by_hand():
    labels = np.array([[1.0, 0.0, 0.0]], dtype=np.float32)
    teacher, student = np.array([[2.0, 1.0, 0.0]]), np.array([[0.0, 1.0, 2.0]])
    # T = 2: p = softmax([1, .5, 0]), q = softmax([0, .5, 1]) is p reversed, so
    # KL(p || q) = p0 * (1 - 0) + p2 * (0 - 1) = (e - 1) / (e + e^0.5 + 1) = 0.320157
    soft = kd.kd_loss(labels, teacher, student, alpha=0.0, temperature=2.0).numpy()
    assert soft == pytest.approx(4 * 0.320157, abs=1e-5)
    p, q = softmax(teacher[0] / 2), softmax(student[0] / 2)
    assert soft == pytest.approx(4 * entropy(p, q), rel=1e-5)  # scipy's KL
    ce = -np.log(softmax(student[0])[0])  # 2.4076
    mixed = kd.kd_loss(labels, teacher, student, alpha=0.25, temperature=2.0).numpy()
    assert mixed == pytest.approx(0.25 * ce + 0.75 * soft, rel=1e-5)


def test_sample_weights_weight_each_example_then_average():
    labels, teacher, student = _batch(n=2)
    per_example = [
        kd.kd_loss(labels[i : i + 1], teacher[i : i + 1], student[i : i + 1], alpha=0.5,
                   temperature=3.0).numpy()
        for i in range(2)
    ]  # fmt: skip
    weighted = kd.kd_loss(
        labels, teacher, student, alpha=0.5, temperature=3.0, sample_weight=np.array([0.0, 3.0])
    ).numpy()
    assert weighted == pytest.approx(3.0 * per_example[1] / 2, rel=1e-6)


def test_keras_loss_unpacks_labels_and_teacher_logits():
    labels, teacher, student = _batch()
    packed = np.concatenate([labels, teacher], axis=1).astype(np.float32)
    keras_loss = kd.DistillationLoss(4, alpha=0.3, temperature=4.0)(packed, student).numpy()
    direct = kd.kd_loss(labels, teacher, student, alpha=0.3, temperature=4.0).numpy()
    assert keras_loss == pytest.approx(direct, rel=1e-6)
    assert (
        kd.DistillationLoss.from_config(kd.DistillationLoss(4, 0.3, 4.0).get_config()).alpha == 0.3
    )


def test_metrics_from_predictions_by_hand():
    m = kd.metrics_from_predictions(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), n_classes=3)
    assert m["accuracy"] == 0.75
    assert m["precision"] == pytest.approx([1.0, 2 / 3, 0.0])
    assert m["recall"] == pytest.approx([0.5, 1.0, 0.0])
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0.0) / 3)  # absent class 2 counts as 0
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]


def test_augment_policy():
    assert make_augment({"hflip": False, "rotation_deg": 0}, image_size=(8, 8), seed=0) is None
    with pytest.raises(ValueError, match="rotation.*allowed: hflip, rotation_deg"):
        make_augment({"rotation": 10}, image_size=(8, 8), seed=0)
    aug = make_augment({"rotation_deg": 30, "crop_padding": 2}, image_size=(8, 8), seed=0)
    x = tf.random.stateless_uniform((4, 8, 8, 1), seed=(1, 2))
    out = aug(x, training=True).numpy()
    assert out.shape == (4, 8, 8, 1) and not np.allclose(out, x.numpy())
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_balanced_rows_draw_each_class_about_equally_and_n_real_rows_per_epoch():
    # resample added 600 synthetic rows of the two small classes to 850 real ones
    y = np.repeat([0, 1, 2, 1, 2], [600, 200, 50, 200, 400])
    n_real = 850
    rows = draw_rows(y, sampler="balanced", epochs=4, seed=0, num_samples=n_real)
    assert rows.shape == (4, n_real) and rows.dtype == np.int64  # an epoch costs the real rows
    share = np.bincount(y[rows.ravel()], minlength=3) / rows.size
    np.testing.assert_allclose(share, [1 / 3] * 3, atol=0.03)  # each class about equally
    assert not np.array_equal(rows[0], rows[1])  # a new draw every epoch
    np.testing.assert_array_equal(rows, draw_rows(y, sampler="balanced", epochs=4, seed=0,
                                                  num_samples=n_real))  # fmt: skip
    assert not np.array_equal(rows, draw_rows(y, sampler="balanced", epochs=4, seed=1,
                                              num_samples=n_real))  # fmt: skip
    ramp = draw_rows(y, sampler="balanced", epochs=1, seed=0, num_samples=n_real, passes=3)
    assert ramp.shape == (1, 3 * n_real)
    order = draw_rows(y, sampler="shuffle", epochs=2, seed=0, passes=2)
    assert order.shape == (2, 2 * len(y))  # shuffle: every row once per pass, synthetic included
    for epoch in order:
        assert sorted(epoch[: len(y)]) == sorted(epoch[len(y) :]) == list(range(len(y)))
    with pytest.raises(ValueError, match="sampler 'weighted'"):
        draw_rows(y, sampler="weighted", epochs=1, seed=0)


def test_batches_keep_pixels_targets_and_weights_of_the_drawn_rows_together():
    n, k = 50, 3
    x = np.repeat(np.arange(n, dtype=np.uint8), 4).reshape(n, 2, 2, 1)  # pixel value = row
    targets = np.stack([np.arange(n)] * (2 * k), axis=1).astype(np.float32)  # = row as well
    weights = np.arange(n, dtype=np.float32) * 10
    rows = draw_rows(np.arange(n) % k, sampler="balanced", epochs=2, seed=0, num_samples=30)
    ds = train_dataset(x, targets, weights, rows, batch_size=8, augment=None)
    seen = []
    for xb, tb, wb in ds.take(2 * 4):  # 2 epochs of ceil(30 / 8) = 4 batches, the last of 6
        drawn = np.rint(xb.numpy()[:, 0, 0, 0] * 255).astype(int)
        np.testing.assert_array_equal(tb.numpy()[:, -1], drawn)  # teacher logits aligned
        np.testing.assert_array_equal(wb.numpy(), drawn * 10)
        seen.extend(drawn)
    np.testing.assert_array_equal(seen, rows.ravel())


def test_fit_reports_the_rows_each_epoch_drew():
    x, y, teacher = _digits(per_class=8)
    model = build_student((16, 16, 1), 3, **TINY)
    fit = FIT | {"epochs": 1, "patience": 1, "augment": None}
    result = kd.fit_distilled(
        model, x, y, teacher, x_val=x, y_val=y, sampler="balanced", num_samples=10, **fit
    )
    assert result["rows_per_epoch"] == 10 and result["epochs_run"] == 1


def _digits(k=3, per_class=40):
    """sklearn digits upscaled to uint8 (N, 16, 16, 1), teacher logits = one-hot * 5 + noise."""
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = np.concatenate([np.flatnonzero(d.target == c)[:per_class] for c in range(k)])
    x = np.kron(d.images[idx], np.ones((2, 2))) * (255 / 16)
    y = d.target[idx].astype(np.int64)
    teacher = np.eye(k)[y] * 5 + np.random.default_rng(0).normal(size=(len(y), k))
    return x.round().astype(np.uint8)[..., None], y, teacher.astype(np.float32)


TINY = {"blocks": [[1, 8, 1, 1], [2, 16, 1, 2]], "stem_channels": 8, "head_channels": 16}
FIT = {
    "n_classes": 3, "alpha": 0.5, "temperature": 4.0, "epochs": 3, "batch_size": 32,
    "lr": 0.01, "patience": 3, "seed": 0, "augment": {"rotation_deg": 10, "crop_padding": 1},
}  # fmt: skip


@pytest.mark.slow
def test_fit_is_deterministic_learns_and_restores_the_best_epoch():
    x, y, teacher = _digits()
    runs = []
    for _ in range(2):
        model = build_student((16, 16, 1), 3, seed=0, **TINY)
        result = kd.fit_distilled(
            model, x, y, teacher, x_val=x[::4], y_val=y[::4], class_weights=[1.0, 2.0, 1.0], **FIT
        )
        runs.append((result, model.get_weights(), kd.evaluate(model, x[::4], y[::4])))
    (r1, w1, e1), (r2, w2, e2) = runs
    assert r1["history"]["loss"] == r2["history"]["loss"]
    assert r1["history"]["val_macro_f1"] == r2["history"]["val_macro_f1"]
    for a, b in zip(w1, w2, strict=True):
        np.testing.assert_array_equal(a, b)
    assert r1["epochs_run"] == 3 and len(r1["history"]["val_macro_f1"]) == 3
    best = int(np.argmax(r1["history"]["val_macro_f1"]))  # first best epoch, as EarlyStopping keeps
    assert r1["best_epoch"] == best + 1
    assert e1["macro_f1"] == pytest.approx(r1["best_val_macro_f1"])  # best weights restored
    assert r1["history"]["loss"][-1] < r1["history"]["loss"][0]
    assert e1["macro_f1"] == e2["macro_f1"] and np.array_equal(e1["pred"], e2["pred"])


@pytest.mark.slow
def test_fit_trains_a_pruning_wrapped_model_with_its_keras_callback():
    import tensorflow_model_optimization as tfmot

    x, y, teacher = _digits(per_class=20)
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=1)
    wrapped = tfmot.sparsity.keras.prune_low_magnitude(
        build_student((16, 16, 1), 3, **TINY), pruning_schedule=schedule
    )
    result = kd.fit_distilled(
        wrapped, x, y, teacher, x_val=x[::3], y_val=y[::3],
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()], **(FIT | {"epochs": 1}),
    )  # fmt: skip
    assert result["epochs_run"] == 1
    kernel = tfmot.sparsity.keras.strip_pruning(wrapped).get_layer("b1_expand").kernel.numpy()
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.02)


def test_fit_rejects_misaligned_teacher_logits():
    x, y, teacher = _digits(per_class=5)
    with pytest.raises(ValueError, match=r"teacher_logits has shape \(14, 3\).*\(15, 3\)"):
        kd.fit_distilled(
            build_student((16, 16, 1), 3, **TINY), x, y, teacher[:-1], x_val=x, y_val=y, **FIT
        )


def test_early_stopping_breaks_macro_f1_ties_by_the_lower_val_loss():
    """A warm start reaches the best macro-F1 in epoch 1; a later epoch with the same macro-F1 and
    a lower val_loss is kept instead, and a worse macro-F1 never wins on loss."""
    model = tf_keras.Sequential([tf_keras.Input((2,)), tf_keras.layers.Dense(1)])
    stopper = kd.BestOnValidation(patience=2)
    stopper.set_model(model)
    stopper.on_train_begin()
    epochs = [(0.8, 0.02), (0.8, 0.03), (0.8, 0.01), (0.7, 0.001), (0.8, 0.01), (0.8, 0.02)]
    for epoch, (f1, loss) in enumerate(epochs):
        model.layers[0].set_weights([np.full((2, 1), epoch, np.float32), np.zeros(1, np.float32)])
        stopper.on_epoch_end(epoch, {"val_macro_f1": f1, "val_loss": loss})
        if model.stop_training:
            break
    assert stopper.best_epoch == 2 and stopper.best == (0.8, -0.01)
    assert epoch == 4  # two epochs without a better (macro-F1, -loss) after epoch 3 (0-based 2)
    stopper.on_train_end()
    assert model.layers[0].get_weights()[0][0, 0] == 2  # the best epoch's weights are restored
