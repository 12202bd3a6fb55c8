"""params.yaml `distill`: the tf_keras student distilled from the teacher (tasks/distill.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, StrictBool, model_validator

from edge_pipeline.config.base import Augment, Section
from edge_pipeline.config.teacher import Init, Warm

# [expansion, channels, repeats, stride] of one MobileNetV2 inverted-residual stage
Block = tuple[PositiveInt, PositiveInt, PositiveInt, Literal[1, 2]]
DEFAULT_BLOCKS: list[Block] = [(1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2)]
# shuffle (each train row once an epoch) | balanced (class-balanced draws, seeded, as many an
# epoch as there are real train rows): `edge_pipeline.student.kd_training.draw_rows`
Sampler = Literal["shuffle", "balanced"]
# how much the stem shrinks the image before the first block: x1 | x1/2 | x1/4 (a stride-2 conv,
# then a stride-2 3x3 max-pool, as ResNet's ImageNet stem); `auto` resolves per image size
# (edge_pipeline.student.model.resolve_stem)
Stem = Literal["auto", "full", "stride2", "stride4"]
# when the alpha = 1 baseline (report only: what distillation gains) is trained
Baseline = Literal["always", "scratch", "never"]


class WarmStudent(Warm):
    """The fine-tuning budget of a warm-started student (instead of `epochs` and `lr`); when to
    refresh from scratch (`refresh_every`, the teacher's `Warm`)."""

    epochs: int = Field(20, ge=1, le=1000)  # upper bound; early stopping (`patience`) still applies
    lr: float = Field(0.001, gt=0, le=1)  # Adam, cosine-decayed to 0


class Distill(Section):
    """The student's architecture, its distillation loss and its training (Adam, cosine lr)."""

    # weight of the hard-label CE in [0, 1]; 1 - alpha goes to the teacher's soft targets
    alpha: float = Field(0.1, ge=0, le=1)
    # T > 0 softening teacher and student distributions (loss scaled by T^2)
    temperature: float = Field(4.0, gt=0)
    # width multiplier on stem and block channels (rounded to multiples of 8)
    width: float = Field(1.0, gt=0, le=4)
    # MobileNetV2 inverted-residual stages: [expansion, channels, repeats, stride 1 or 2]
    blocks: list[Block] = Field(default_factory=lambda: list(DEFAULT_BLOCKS), min_length=1)
    # auto: the smallest shrink that leaves the first block at most 32 px on a side (16 and 28 px
    # -> full, 48-64 -> stride2, 96+ -> stride4): MACs grow with the area the blocks see
    stem: Stem = "auto"
    stem_channels: int = Field(16, ge=1, le=1024)  # filters of the 3x3 stem conv
    head_channels: int = Field(128, ge=1, le=4096)  # 1x1 conv before global pooling
    dropout: float = Field(0.1, ge=0, le=0.95)  # before the logits layer
    epochs: int = Field(40, ge=1, le=1000)
    batch_size: int = Field(64, ge=2, le=4096)
    lr: float = Field(0.005, gt=0, le=1)  # Adam, cosine-decayed to 0 over all epochs
    # stop after this many epochs without a better val macro-F1 (best weights kept)
    patience: int = Field(12, ge=1)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    # per-example CE/KD weights from data/resample/class_weights.json
    use_class_weights: StrictBool = False
    # shuffle (each train row once an epoch) | balanced (class-balanced draws, seeded, as many an
    # epoch as there are real train rows)
    sampler: Sampler = "balanced"
    # the teacher's policy (train.augment), applied in the tf.data pipeline
    augment: Augment = Augment()
    # TensorFlow CPU threads; null = TensorFlow's default (all cores)
    threads: int | None = Field(None, ge=1, le=256)
    # champion (the student the registry's champion came from; first night: scratch) | previous
    # (last run) | scratch
    init: Init = "champion"
    warm: WarmStudent = WarmStudent()  # epochs and lr of a warm-started student (and baseline)
    # always | scratch (scratch nights only: on a warm night it would double the student's
    # fitting to re-measure KD's gain on a fine-tune) | never
    baseline: Baseline = "scratch"

    def trains_baseline(self, *, warm: bool) -> bool:
        """Whether tonight's distill trains the alpha = 1 baseline next to the student."""
        return self.baseline == "always" or (self.baseline == "scratch" and not warm)

    @model_validator(mode="after")
    def _one_balancing(self) -> Distill:
        if self.sampler == "balanced" and self.use_class_weights:
            raise ValueError(
                "distill.sampler: balanced already balances the classes; set "
                "distill.use_class_weights: false, or distill.sampler: shuffle to weight the loss"
            )
        return self
