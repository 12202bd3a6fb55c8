"""params.yaml `prune`, `qat` and `export`: compression of the distilled student.

tasks/prune.py, tasks/qat.py, tasks/export.py read them; prune and qat fine-tune with the
distillation loss of `distill`, configured by the shared `FineTune` fields.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt

from edge_pipeline.config.base import Augment, Section
from edge_pipeline.config.student import Sampler
from edge_pipeline.config.teacher import Init, Warm


class FineTune(Section):
    """Distillation fine-tuning (`edge_pipeline.student.kd_training.fit_distilled`) options."""

    epochs: int = Field(ge=0)  # set by each stage
    lr: float = Field(gt=0, le=1)  # Adam, cosine-decayed
    patience: int = Field(ge=1)  # epochs without a better val macro-F1 before stopping
    batch_size: int = Field(64, ge=1, le=4096)
    alpha: float = Field(0.3, ge=0, le=1)  # distillation loss, as distill.alpha / temperature
    temperature: float = Field(4.0, gt=0)
    # null or train.augment's schema; fine-tuning without it overfits
    augment: Augment | None = Augment()
    # shuffle | balanced (as distill.sampler); shuffle: balanced draws cost the pruned student
    # 5 accuracy points on gray28 (docs/benchmarks.md)
    sampler: Sampler = "shuffle"
    seed: int = Field(0, ge=0, le=2**31 - 1)

    def fit_options(self) -> dict[str, Any]:
        """The keywords of `fit_distilled` (epochs included), augment as a plain mapping."""
        keys = ("epochs", "lr", "patience", "batch_size", "alpha", "temperature", "sampler", "seed")
        fit: dict[str, Any] = {k: getattr(self, k) for k in keys}
        fit["augment"] = self.augment.to_dict() if self.augment is not None else None
        return fit


class WarmPrune(Warm):
    """The fine-tuning budget of a pruned model warm-started from the champion's (or last run's);
    when to refresh from scratch (`refresh_every`, the teacher's `Warm`)."""

    # recovery epochs, masks held at the target, no ramp (upper bound; `patience` applies)
    epochs: int = Field(5, ge=0, le=1000)
    lr: float = Field(0.0005, gt=0, le=1)  # Adam, cosine-decayed


class Prune(FineTune):
    """Channel pruning, then TF-MOT sparsity with distillation fine-tuning."""

    # share of filters removed per prunable conv (rebuilt thinner model)
    channel_fraction: float = Field(0.5, ge=0, le=0.95)
    # hidden (inverted-residual expand channels) | all (also e.g. the head conv)
    channel_scope: Literal["hidden", "all"] = "hidden"
    # train images for the least-squares refit of the layers after removed channels
    calib_samples: int = Field(256, ge=1)
    # below this share of test images on which the channel-pruned model (before fine-tuning) agrees
    # with the student, halve channel_fraction (down to 0.1; then fail)
    min_agreement: float = Field(0.5, ge=0, le=1)
    # fraction of zero weights per Conv2D/Dense kernel (TF-MOT PolynomialDecay)
    target_sparsity: float = Field(0.5, ge=0, le=0.99)
    # fail if a layer's sparsity ends more than this below its target (0.02 = 2 points)
    sparsity_tolerance: float = Field(0.02, ge=0, le=1)
    # block sparsity [rows, cols]; TF-MOT applies it to Dense kernels only
    block_size: tuple[PositiveInt, PositiveInt] = (1, 1)
    # e.g. [2, 4]: m zeros in every n input channels; overrides the target there
    sparsity_m_by_n: tuple[PositiveInt, PositiveInt] | None = None
    # steps between mask updates; null = about 10 updates over the ramp
    frequency: int | None = Field(None, ge=1)
    # passes over the train set while sparsity rises from 0 to the target
    ramp_epochs: int = Field(3, ge=1)
    # recovery epochs at constant sparsity (early stopping on val macro-F1)
    epochs: int = Field(30, ge=0)
    lr: float = Field(0.001, gt=0, le=1)
    patience: int = Field(10, ge=1)
    exclude: list[str] = []  # layer names left whole (no channel removal, no sparsity)
    # champion (fine-tune the pruned model the registry's champion came from: its channels and
    # zeros; first night: scratch) | previous (the last prune run's) | scratch (prune tonight's
    # student)
    init: Init = "champion"
    warm: WarmPrune = WarmPrune()  # epochs and lr of a warm-started pruned model

    def recipe(self) -> dict[str, Any]:
        """The options that shape the pruned model: a warm start needs the same ones."""
        keys = ("channel_fraction", "channel_scope", "exclude", "target_sparsity", "block_size",
                "sparsity_m_by_n")  # fmt: skip
        return {k: getattr(self, k) for k in keys}


class Qat(FineTune):
    """Prune-preserving quantization-aware training to a full-integer INT8 TFLite model."""

    # qat (quantization-aware fine-tuning) | ptq (convert without QAT)
    method: Literal["qat", "ptq"] = "qat"
    io_dtype: Literal["int8", "uint8"] = "int8"  # input/output of the full-integer model
    # train images calibrating the converter (also used by the PTQ baseline)
    representative_samples: int = Field(200, ge=1)
    # fail if the INT8 filters have this much less sparsity than the keras model (0.02 = 2 pts)
    sparsity_tolerance: float = Field(0.02, ge=0, le=1)
    epochs: int = Field(10, ge=0)
    lr: float = Field(0.0005, gt=0, le=1)
    patience: int = Field(5, ge=1)


class Export(Section):
    """ONNX exports of the student: FP32 (tf2onnx) and ONNX Runtime static INT8."""

    opset: int = Field(17, ge=13, le=18)  # ONNX opset for tf2onnx
    # train images calibrating ONNX Runtime static INT8 (QDQ, per-channel)
    calib_samples: int = Field(200, ge=1)
    # fail if ONNX FP32 top-1 agreement with the keras student is lower
    min_fp32_agreement: float = Field(0.99, ge=0, le=1)
    seed: int = Field(0, ge=0, le=2**31 - 1)
