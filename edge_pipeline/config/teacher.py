"""The `train` section of params.yaml: the PyTorch teacher (tasks/train.py).

No torch here: `Arch` spells out the torchvision names edge_pipeline/teacher/models.py adapts
(tests/teacher/test_teacher.py checks the two lists agree); whether `weights` names weights of
`arch` that are in the local torch hub cache is checked by `teacher.models.resolve_weights` at the
start of the stage, before any data is read.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    PositiveInt,
    StrictBool,
    WithJsonSchema,
    model_validator,
)

from edge_pipeline.config.base import Augment, Section
from edge_pipeline.core.lineage import FLOATING, RUN_PIN, SCRATCH

# where a run's weights start: scratch | champion (the registry's `champion`, through the lineage
# tags of edge_pipeline/core/lineage.py) | previous (the last finished run of the stage) |
# runs:/<run id> (that run of the stage: pins a recorded night's start, `make pin-starts`)
INITS = (SCRATCH, *FLOATING)


def _check_init(value: str) -> str:
    if value in INITS or re.fullmatch(RUN_PIN, value):
        return value
    close = difflib.get_close_matches(value, INITS, n=1)
    hint = f"; did you mean {close[0]}" if close else ""
    raise ValueError(f"not one of {', '.join(INITS)} or runs:/<32-hex MLflow run id>{hint}")


# one message for a wrong value; the Run form still offers the three words (or a pin)
Init = Annotated[
    str,
    AfterValidator(_check_init),
    WithJsonSchema({"anyOf": [{"enum": list(INITS)}, {"type": "string", "pattern": RUN_PIN}]}),
]


class Warm(Section):
    """The fine-tuning budget of a warm-started run (instead of `epochs` and `lr`)."""

    epochs: int = Field(3, ge=1, le=1000)  # upper bound; early stopping (`patience`) still applies
    lr: float = Field(0.0005, gt=0, le=1)  # peak learning rate, cosine-annealed to 0
    # `init: champion | previous` trains from scratch instead when the stage's last N - 1 finished
    # runs all fine-tuned another run: fine-tunes do not pile up without end (weekly on a nightly
    # schedule); null = never. A pinned start is never refreshed (edge_pipeline/core/lineage.py)
    refresh_every: int | None = Field(7, ge=2, le=1000)


class Ewc(Section):
    """Elastic weight consolidation (Kirkpatrick et al. 2017), edge_pipeline/teacher/ewc.py."""

    # penalty strength/2 * sum F_i (w_i - w*_i)^2 towards the start model; 0 = off
    strength: float = Field(0.0, ge=0)
    # train images (stratified) the diagonal Fisher is computed on at the end of a run
    samples: int = Field(1024, ge=1)


class Replay(Section):
    """Rehearsal: a stratified buffer of images from outside `data_window` (teacher/replay.py)."""

    size: int = Field(0, ge=0)  # images replayed per run (equal share per class); 0 = off
    seed: int = Field(0, ge=0, le=2**32 - 1)


Arch = Literal[
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
]


class Train(Section):
    """The teacher's architecture, optimiser, early stopping, augmentation and ONNX export."""

    # resnet18 | resnet34 | resnet50 | mobilenet_v2 | mobilenet_v3_small | mobilenet_v3_large |
    # efficientnet_b0
    arch: Arch = "resnet18"
    # null = from scratch, or a torchvision name (e.g. ResNet18_Weights.IMAGENET1K_V1) already in
    # the torch hub cache
    weights: str | None = None
    # how much the stem shrinks the image: auto | full (x1) | stride2 (x1/2) | imagenet (x1/4);
    # auto leaves the first block >= 14 px on a side (16 px -> full, 28 -> stride2, 96 -> imagenet)
    stem: Literal["auto", "full", "stride2", "imagenet"] = "auto"
    # channel multiplier of every layer (ResNets, MobileNets); 1.0 = torchvision's network
    width: float = Field(1.0, ge=0.125, le=4)
    # upper bound; early stopping may end sooner (time: benchmarks/bench_train.py)
    epochs: int = Field(8, ge=1, le=1000)
    batch_size: int = Field(64, ge=2, le=4096)  # 2+: BatchNorm cannot train on a batch of one
    lr: float = Field(0.002, gt=0, le=1)  # AdamW, cosine-annealed to 0 over all epochs
    weight_decay: float = Field(0.05, ge=0, le=1)
    # stop after this many epochs without a better val macro-F1 (best weights kept)
    patience: int = Field(3, ge=1)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    # cpu | cuda | auto (a GPU when torch sees one); determinism is checked on CPU
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    # CE weighted by data/resample/class_weights.json; with sampler: shuffle and resample.method
    # none | class_weight (SMOTE already balances)
    use_class_weights: StrictBool = False
    # shuffle (each train row once an epoch) | balanced (class-balanced draws, seeded, as many an
    # epoch as there are real train rows)
    sampler: Literal["shuffle", "balanced"] = "balanced"
    augment: Augment = Augment()  # torchvision transforms.v2, per training image
    # torch CPU threads; null = the cores this process may run on (os.sched_getaffinity)
    threads: int | None = Field(None, ge=1, le=256)
    # DataLoader worker processes (augmentation beside the compute); 0 = in-process
    workers: int = Field(0, ge=0, le=64)
    onnx_opset: int = Field(18, ge=18, le=23)  # teacher.onnx (torch.export-based exporter, 18+)
    # fail the stage unless teacher.onnx picks torch's class on at least this share of test images
    onnx_min_top1_agreement: float = Field(1.0, ge=0, le=1)
    # champion (fine-tune the registry champion's teacher; first night: scratch, with a warning) |
    # previous (the last run's) | scratch (a pure function of the data and params)
    init: Init = "champion"
    warm: Warm = Warm()  # epochs and lr of a warm-started run
    # all | N: train on the images first seen in the last N nights (of the start model's lineage)
    data_window: Literal["all"] | PositiveInt = "all"
    ewc: Ewc = Ewc()  # elastic weight consolidation towards the start model
    replay: Replay = Replay()  # rehearsal of images outside the data window

    @model_validator(mode="after")
    def _consistent(self) -> Train:
        if self.weights is not None and self.width != 1.0:
            raise ValueError("train.weights (pretrained) needs train.width: 1.0")
        if self.sampler == "balanced" and self.use_class_weights:
            raise ValueError(
                "train.sampler: balanced already balances the classes; set "
                "train.use_class_weights: false, or train.sampler: shuffle to weight the loss"
            )
        if self.init == SCRATCH and (self.ewc.strength > 0 or self.data_window != "all"):
            raise ValueError(
                "train.ewc.strength > 0 and train.data_window need a start model (its weights, "
                "Fisher and image nights): set train.init to champion or previous"
            )
        if self.replay.size and self.data_window == "all":
            raise ValueError(
                "train.replay.size replays images outside train.data_window: "
                "set data_window to a number of nights, or replay.size to 0"
            )
        return self
