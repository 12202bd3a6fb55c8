"""The data-quality sections of params.yaml: demo, ingest, agreement, clean, split, resample.

Each class is one section (stage = section = `tasks/<stage>.py`); its defaults are the values
params.yaml states (tests/config/test_schema.py checks they agree key for key).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_serializer, model_validator

from edge_pipeline.config.base import Section

N_DIGITS = 10  # the demo's classes: digits 0..9
PngMode = Literal["L", "RGB", "RGBA", "P", "I;16"]
Resampling = Literal["nearest", "box", "bilinear", "hamming", "bicubic", "lanczos"]
Fraction = Annotated[float, Field(gt=0, le=1)]
Digit = Annotated[int, Field(ge=0, lt=N_DIGITS)]


class Annotator(Section):
    """A SIMULATED annotator: P(right label); else uniform wrong, unless a confusion habit applies.

    With probability `confusion_rate` an image whose true digit is a key of `confusions` gets the
    mapped digit (a habit such as 3 -> 8).
    """

    accuracy: float = Field(ge=0, le=1)  # P(right label)
    confusion_rate: float = Field(0.0, ge=0, le=1)  # P(habit) on the digits of `confusions`
    confusions: dict[Digit, Digit] = {}  # true digit -> the digit this annotator says instead

    @model_serializer(mode="wrap")
    def _as_written(self, handler: Any) -> dict[str, Any]:
        """Only the keys given (as params.yaml writes an annotator: `{accuracy: 0.9}`)."""
        return {k: v for k, v in handler(self).items() if k in self.model_fields_set}


class Corrupt(Section):
    """Broken files the demo writes for ingest to quarantine (truth.csv `flaw` column)."""

    zero_byte: int = Field(2, ge=0)
    truncated: int = Field(2, ge=0)  # a valid PNG cut in half
    not_image: int = Field(2, ge=0)  # an HTML error page saved as .png
    bomb: int = Field(1, ge=0)  # a ~50 KB PNG of bomb_side^2 pixels (decompression bomb)
    duplicate_conflict: int = Field(2, ge=0)  # byte copy of a kept image filed as another class


class BadRows(Section):
    """Annotation rows ingest must reject."""

    missing_file: int = Field(1, ge=0)
    escapes_root: int = Field(1, ge=0)
    absolute_path: int = Field(1, ge=0)


class Reviewer(Section):
    """The SIMULATED expert of the demo's relabel round trip (a Label Studio export per night)."""

    name: str = Field("reviewer@example.com", min_length=1)  # completed_by email in the export
    accuracy: float = Field(0.98, ge=0, le=1)  # P(right label); else uniform wrong
    # share of the previous nights' no-majority images reviewed
    share: float = Field(0.5, ge=0, le=1)


class Demo(Section):
    """The embedded demo data set, made from scikit-learn's digits (tasks/demo.py)."""

    seed: int = Field(7, ge=0)
    night: int = Field(1, ge=1)  # 1 = the first data set; N adds N - 1 nightly batches (make night)
    night_fraction: float = Field(0.1, gt=0, le=1)  # new images per night, share of night 1's
    reviewer: Reviewer = Reviewer()
    image_size: int = Field(32, ge=1)  # side of the stored PNGs; the 8x8 digits are upscaled
    max_per_class: int | None = Field(None, ge=1)  # cap per class before the long tail; null = none
    min_per_class: int = Field(3, ge=0)  # floor per class after the long tail
    # kept share of digit 0..9
    class_fractions: list[Fraction] = Field(
        [1.0, 0.9, 0.8, 0.75, 0.7, 0.05, 0.6, 0.55, 0.5, 0.05],
        min_length=N_DIGITS,
        max_length=N_DIGITS,
    )
    # PNG modes written (relative weights), same gray values
    modes: dict[PngMode, Annotated[float, Field(ge=0)]] = {
        "L": 0.88, "RGB": 0.04, "RGBA": 0.03, "P": 0.03, "I;16": 0.02,
    }  # fmt: skip
    # each file gets min..max annotators (3: a majority exists on most images)
    ratings_per_image: tuple[int, int] = (3, 3)
    annotators: dict[str, Annotator] = {
        "careful": {"accuracy": 0.97},
        "noisy": {"accuracy": 0.75},
        "confuser": {
            "accuracy": 0.97, "confusion_rate": 0.6, "confusions": {3: 8, 8: 3, 1: 7, 7: 1},
        },
        "steady": {"accuracy": 0.9},
    }  # fmt: skip
    corrupt: Corrupt = Corrupt()
    bomb_side: int = Field(20000, ge=1)  # side of the decompression bomb, pixels
    bad_rows: BadRows = BadRows()

    @field_validator("modes")
    @classmethod
    def _some_mode(cls, modes: dict[str, float]) -> dict[str, float]:
        if sum(modes.values()) <= 0:
            raise ValueError("give at least one mode a positive weight")
        return modes

    @model_validator(mode="after")
    def _ratings_fit_the_annotators(self) -> Demo:
        lo, hi = self.ratings_per_image
        if not 1 <= lo <= hi <= len(self.annotators):
            raise ValueError(
                f"demo.ratings_per_image={[lo, hi]}: need [min, max] with "
                f"1 <= min <= max <= {len(self.annotators)} (the number of annotators)"
            )
        return self


class Ingest(Section):
    """Decoding the images of `source` safely, quarantining bad files (tasks/ingest.py)."""

    source: str = Field("data/demo", min_length=1)  # directory of images (data/demo: the demo)
    # CSV (image,annotator,label) relative to source; null = ImageFolder labels
    annotations: str | None = "annotations.csv"
    truth: str | None = "truth.csv"  # optional CSV (image,label) of true labels, evaluation only
    image_size: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]] = (16, 16)  # H, W
    channels: Literal[1, 3] = 1  # 1 (grayscale) or 3 (RGB)
    formats: list[str] = ["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP"]  # Pillow decoders allowed
    max_pixels: int = Field(50_000_000, gt=0)  # decompression-bomb guard: larger -> oversize
    max_file_mb: float = Field(50, gt=0)  # larger files are quarantined (oversize) unread
    # decoded bytes of one image (W x H x 1, 2 or 4) allowed in memory; larger -> oversize
    max_decode_mb: float = Field(256, gt=0)
    resample: Resampling = "bilinear"  # resize filter
    # allow-list of class names; null = every label (or folder) of >= min_class_images images
    classes: list[Annotated[str, Field(min_length=1)]] | None = None
    # a label or folder naming fewer labelled images is no class: rows/files reported, not kept
    min_class_images: int = Field(3, ge=1)
    # fail when more than this share of annotation rows is rejected (counts are in the report)
    max_dropped_rows_fraction: float = Field(0.05, ge=0, le=1)
    # fail when more than this share of image files is not kept (quarantined or unlabelled)
    max_quarantined_fraction: float = Field(0.1, ge=0, le=1)
    # dHash Hamming distance (of 64 bits) up to which images may be near-duplicates; null = off
    near_duplicate_bits: int | None = Field(6, ge=0, le=63)
    # ... and the most their stored pixels may differ on average (grey levels 0..255)
    near_duplicate_mad: float = Field(2.0, ge=0, le=255)
    # take decode results of unchanged bytes from data/ingest_cache (false: decode every file)
    reuse_decoded: bool = True
    # a file whose size, mtime, ctime and inode are unchanged is not read again (its sha256 kept)
    trust_file_stat: bool = True

    @field_validator("formats", mode="before")
    @classmethod
    def _upper_case(cls, formats: Any) -> Any:
        return [str(f).upper() for f in formats] if isinstance(formats, list) else formats

    @field_validator("formats")
    @classmethod
    def _known_to_pillow(cls, formats: list[str]) -> list[str]:
        from PIL import Image

        known = set(Image.registered_extensions().values())
        unknown = sorted(set(formats) - known)
        if not formats or unknown:
            raise ValueError(f"unknown to Pillow: {unknown}; known: {sorted(known)}")
        return formats

    @property
    def max_bytes(self) -> int:
        return int(self.max_file_mb * 2**20)

    @property
    def max_decode_bytes(self) -> int:
        return int(self.max_decode_mb * 2**20)


class LabelStudio(Section):
    """relabel_queue.json import (how to load it: edge_pipeline/quality/agreement_outputs.py)."""

    # task image URL = prefix + manifest path (Label Studio local files)
    url_prefix: str = "/data/local-files/?d="
    prefill: bool = True  # attach the consensus as a pre-annotation scored by its support


class Agreement(Section):
    """Inter-annotator agreement, consensus labels, relabel queue (tasks/agreement.py)."""

    min_kappa: float = Field(0.6, ge=-1, le=1)  # gate on Fleiss' kappa (items with >= 2 ratings)
    # fail (exit non-zero after the reports) | warn | approval (record gate: needs_approval)
    policy: Literal["fail", "warn", "approval"] = "warn"
    # queue images whose consensus support is below this (ties, unrated always)
    relabel_below: float = Field(0.6, ge=0, le=1)
    label_studio: LabelStudio = LabelStudio()
    # Label Studio JSON export of the relabel queue's project, relative to ingest.source; a
    # reviewed label settles its image (null or a missing file: no reviews)
    reviews: str | None = "reviews.json"


class LogisticRegressionOptions(Section):
    """sklearn LogisticRegression on unscaled pixels (scaling overfits: F1 0.60-0.77 vs 0.90)."""

    C: float = Field(1.0, gt=0)  # inverse regularisation strength
    max_iter: int = Field(500, ge=1)


class RandomForestOptions(Section):
    n_estimators: int = Field(200, ge=1)


class HistGradientBoostingOptions(Section):
    max_iter: int = Field(100, ge=1)  # boosting iterations


class KnnOptions(Section):
    n_neighbors: int = Field(10, ge=1)  # lowered to the training fold size when it is smaller
    weights: Literal["uniform", "distance"] = "distance"


class ConvKmeansOptions(Section):
    """Label-free conv features (k-means filters on whitened patches) + logistic regression."""

    filters: int = Field(128, ge=2)  # k-means filters of the one conv layer
    patch: int = Field(5, ge=2)  # filter side, pixels (lowered to the image side)
    pool: int = Field(3, ge=1)  # pool x pool grid of summed activations: filters * pool^2 features
    max_side: int = Field(32, ge=8)  # larger images are shrunk (box filter) to this side first
    sample_patches: int = Field(40000, ge=100)  # random patches the filters are learnt from
    kmeans_iters: int = Field(10, ge=1)  # spherical k-means iterations
    whiten_eps: float = Field(0.1, gt=0)  # ZCA whitening regulariser
    C: float = Field(0.01, gt=0)  # inverse regularisation of the logistic regression on top
    max_iter: int = Field(1000, ge=1)  # of that logistic regression


class CleanModels(Section):
    """Settings of each `clean.model` (only the chosen one's are used)."""

    conv_kmeans: ConvKmeansOptions = ConvKmeansOptions()
    logistic_regression: LogisticRegressionOptions = LogisticRegressionOptions()
    random_forest: RandomForestOptions = RandomForestOptions()
    hist_gradient_boosting: HistGradientBoostingOptions = HistGradientBoostingOptions()
    knn: KnnOptions = KnnOptions()


class AnnotatorModel(Section):
    """Dawid-Skene model of the annotators that confirms label errors (annotator_evidence.py)."""

    iterations: int = Field(50, ge=1)  # EM iterations at most
    tol: float = Field(1e-4, gt=0)  # EM stops when no posterior probability moves more than this
    # Dirichlet pseudo-ratings per confusion-matrix row (half on the diagonal): rare classes stay
    # "mostly right"
    pseudo_count: float = Field(2.0, gt=0)
    # confirm only a label whose posterior is at least this (0.5: more likely than all others)
    min_posterior: float = Field(0.5, gt=0, le=1)


class Clean(Section):
    """Confident learning on out-of-fold probabilities (tasks/clean.py, docs/clean.md)."""

    # applied to CONFIRMED issues only (others are flagged for review): drop | relabel (to the
    # annotators' posterior label) | flag (keep, report only)
    policy: Literal["drop", "relabel", "flag"] = "drop"
    # annotators_and_model: confirmed = the Dawid-Skene posterior (annotators' confusions x model)
    # prefers another annotator's label AND the out-of-fold model prefers it (no annotators:
    # nothing is confirmed) | model: every issue
    confirm: Literal["annotators_and_model", "model"] = "annotators_and_model"
    annotators: AnnotatorModel = AnnotatorModel()
    # conv_kmeans (label-free conv features + logistic regression) | the pixel models
    model: Literal[
        "conv_kmeans", "logistic_regression", "random_forest", "hist_gradient_boosting", "knn"
    ] = "conv_kmeans"
    models: CleanModels = CleanModels()
    # PCA before a pixel model when images have more pixels; null = none
    pca_components: int | None = Field(64, ge=1)
    folds: int = Field(5, ge=2)  # stratified K-fold; lowered (with a warning) to the smallest class
    # cleanlab find_label_issues filter_by
    filter_by: Literal[
        "prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
        "predicted_neq_given", "low_normalized_margin", "low_self_confidence",
    ] = "prune_by_noise_rate"  # fmt: skip
    frac_noise: Fraction = 1.0  # cleanlab: fraction of the estimated noise to flag (1.0 = all)
    # cleanlab label-quality score used to rank issues
    rank_by: Literal["self_confidence", "normalized_margin", "confidence_weighted_entropy"] = (
        "self_confidence"
    )
    max_fraction: float = Field(0.2, ge=0, le=1)  # guard: drop/relabel at most this share a class
    min_per_class: int = Field(5, ge=0)  # guard: never take a class below this many examples
    n_jobs: int | None = Field(2, ge=-1)  # processes for cross_val_predict and cleanlab
    seed: int = Field(0, ge=0)


class Split(Section):
    """Train/val/test by hash buckets of each image's content, before clean (tasks/split.py)."""

    seed: int = Field(42, ge=0)
    val_fraction: float = Field(0.15, gt=0, lt=1)  # expected share of the images
    # test depends only on this, the seed and each image's content: frozen, night after night
    test_fraction: float = Field(0.2, gt=0, lt=1)
    # warn when a class's share of a split is further than this many binomial standard errors
    tolerance_sigmas: float = Field(3.0, gt=0)

    @model_validator(mode="after")
    def _room_for_train(self) -> Split:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"split.val_fraction={self.val_fraction} + split.test_fraction="
                f"{self.test_fraction} must be < 1 (train takes the rest)"
            )
        return self


ImblearnStrategy = Literal["auto", "minority", "not majority", "not minority", "all"]


class Resample(Section):
    """Rebalancing the train split only (tasks/resample.py); see docs/resample.md."""

    # none: the training stages balance by sampling; see docs/resample.md for the others' price
    method: Literal["none", "class_weight", "random_over", "smote", "smoteenn", "adasyn"] = "none"
    # imblearn: auto | minority | not majority | not minority | all | a float (two classes) |
    # {class name: target count}
    sampling_strategy: ImblearnStrategy | Fraction | dict[str, Annotated[int, Field(ge=0)]] = "auto"
    k_neighbors: int = Field(5, ge=1)  # SMOTE/ADASYN neighbours; lowered for classes of <= k
    seed: int = Field(0, ge=0)

    @field_validator("sampling_strategy", mode="before")
    @classmethod
    def _class_names_are_strings(cls, value: Any) -> Any:
        """YAML reads a class named 3 as an int; class names are strings."""
        return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value
