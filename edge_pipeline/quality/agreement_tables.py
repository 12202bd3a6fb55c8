"""The agreement stage's tables and metrics, with names instead of the core's integer codes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from edge_pipeline.config.quality import Agreement
from edge_pipeline.core.errors import InputError
from edge_pipeline.quality import agreement_stats as st

PAIR_COLUMNS = [
    "annotator_a",
    "annotator_b",
    "n_shared",
    "observed_agreement",
    "kappa",
    "undefined_reason",
]
ANNOTATOR_COLUMNS = [
    "annotator",
    "n_ratings",
    "n_multi_rated",
    "peer_agreement",
    "mean_pairwise_kappa",
    "kappa_vs_consensus",
    "kappa_vs_consensus_reason",
    "accuracy_vs_consensus",
    "n_true_known",
    "true_accuracy",
]
QUEUE_COLUMNS = ["id", "path", "consensus", "support", "n_ratings", "reason", "votes"]
# Figures a skipped run cannot have (None) and counts that are then 0: same keys either way.
FIGURES = "fleiss_kappa mean_pairwise_kappa min_pairwise_kappa mean_support consensus_true_accuracy"
COUNTS = (
    "n_pairs_defined n_pairs_undefined n_items_multi_rated n_ratings n_duplicate_ratings "
    "n_annotators n_ties n_relabel n_true_known"
)


@dataclass(frozen=True)
class Tables:
    """What the stage writes: labels (one row per labelled image), pairwise (A(A-1)/2 rows),
    per_class (K rows), annotators (A rows), queue (relabel queue, lowest support first)."""

    labels: pd.DataFrame
    pairwise: pd.DataFrame
    per_class: pd.DataFrame
    annotators: pd.DataFrame
    queue: pd.DataFrame


def codes_of(values: pd.Series, categories: list[str], *, what: str, where: str) -> np.ndarray:
    """Integer codes of `values` in `categories`; an unknown value is an error naming its line
    (`values` keeps read_csv's row index, so line = index + 2)."""
    codes = pd.Categorical(values, categories=categories).codes.astype(np.int64)
    bad = np.flatnonzero(codes < 0)
    if len(bad):
        raise InputError(
            f"{where}:{values.index[bad[0]] + 2}: {what} {values.iloc[bad[0]]!r} is unknown "
            f"({len(bad)} such rows); agreement reads the ingest stage's outputs as they are: "
            "re-run `dvc repro ingest`"
        )
    return codes


def measured_tables(
    manifest: pd.DataFrame,
    r: st.Ratings,
    res: st.Agreement,
    *,
    names: list[str],
    classes: list[str],
) -> Tables:
    """Tables of a measured run; `names` (A,) annotators, `classes` (K,)."""
    c, rated = res.consensus, res.consensus.label >= 0
    cls, who = np.asarray(classes, dtype=object), np.asarray(names, dtype=object)
    labels = pd.DataFrame(
        {
            "id": manifest["id"].to_numpy()[rated],
            "label": cls[c.label[rated]],
            "n_ratings": c.n_ratings[rated],
            "support": c.support[rated].round(4),
        }
    )
    pw = res.pairwise.assign(annotator_a=who[res.pairwise["a"]], annotator_b=who[res.pairwise["b"]])
    either = pd.concat([pw[["a", "kappa"]], pw[["b", "kappa"]].rename(columns={"b": "a"})])
    mean_kappa = either.groupby("a")["kappa"].mean().reindex(res.annotators["a"]).to_numpy()
    ann = res.annotators.assign(annotator=who[res.annotators["a"]], mean_pairwise_kappa=mean_kappa)
    return Tables(
        labels=labels,
        pairwise=pw[PAIR_COLUMNS],
        per_class=res.per_class,
        annotators=ann[ANNOTATOR_COLUMNS],
        queue=relabel_queue(manifest, r, res, names=names, classes=classes),
    )


def relabel_queue(
    manifest: pd.DataFrame,
    r: st.Ratings,
    res: st.Agreement,
    *,
    names: list[str],
    classes: list[str],
) -> pd.DataFrame:
    """Queued images, lowest support first (unrated ones at the top): QUEUE_COLUMNS, with votes
    as 'annotator=label; ...'. `path` is the manifest's path column (the id when it has none)."""
    c, idx = res.consensus, np.flatnonzero(res.relabel)
    cls, who = np.asarray(classes, dtype=object), np.asarray(names, dtype=object)
    votes = _votes(r, res.relabel[r.item], who=who, cls=cls).reindex(idx).fillna("")
    n, tied = c.n_ratings[idx], c.tied[idx]
    queue = pd.DataFrame(
        {
            "id": manifest["id"].to_numpy()[idx],
            "path": manifest.get("path", manifest["id"]).to_numpy()[idx],
            "consensus": np.where(n > 0, cls[np.maximum(c.label[idx], 0)], ""),
            "support": c.support[idx].round(4),
            "n_ratings": n,
            "reason": np.where(n == 0, "no rating", np.where(tied, "tie", "low support")),
            "votes": votes.to_numpy(),
        }
    )
    queue = queue.sort_values(["support", "id"], na_position="first", kind="stable")
    return queue.reset_index(drop=True)


def _votes(r: st.Ratings, rows: np.ndarray, *, who: np.ndarray, cls: np.ndarray) -> pd.Series:
    """'annotator=label; ...' per item of the selected rating `rows` (R,) bool, indexed by item.

    One column per rating position within an item, joined with str.cat: no per-item Python call.
    """
    rows = np.flatnonzero(rows)
    rows = rows[np.lexsort((r.annotator[rows], r.item[rows]))]
    item = r.item[rows]
    first = np.r_[True, item[1:] != item[:-1]] if len(rows) else np.zeros(0, bool)
    pos = np.arange(len(rows)) - np.flatnonzero(first)[np.cumsum(first) - 1]
    text = who[r.annotator[rows]] + "=" + cls[r.label[rows]]
    frame = pd.DataFrame({"item": item, "pos": pos, "text": text})
    wide = frame.pivot(index="item", columns="pos", values="text").fillna("")
    if wide.shape[1] == 0:
        return pd.Series(dtype=object)
    joined = wide.iloc[:, 0].str.cat([wide[c] for c in wide.columns[1:]], sep="; ")
    return joined.str.replace(r"(; )+$", "", regex=True)


def skipped_tables(manifest: pd.DataFrame, *, classes: list[str], where: str) -> Tables:
    """The ImageFolder labels passed through (n_ratings 1, support 1) and empty report tables."""
    has = manifest["label"] != ""
    if not has.any():
        raise InputError(
            f"{where}: annotations.csv has no rows and manifest.csv no labels, so no image has a "
            "label; check params.yaml ingest.annotations and the source's class folders"
        )
    codes_of(manifest["label"][has], classes, what="label", where=f"{where}/manifest.csv")
    labels = manifest.loc[has, ["id", "label"]].assign(n_ratings=1, support=1.0)
    return Tables(
        labels=labels.reset_index(drop=True),
        pairwise=pd.DataFrame(columns=PAIR_COLUMNS),
        per_class=st.per_class_agreement(np.zeros((0, len(classes))), classes=classes),
        annotators=pd.DataFrame(columns=ANNOTATOR_COLUMNS),
        queue=pd.DataFrame(columns=QUEUE_COLUMNS),
    )


def _num(v: float | None) -> float | None:
    """JSON-safe figure: None instead of NaN, rounded for reading."""
    return None if v is None or not np.isfinite(v) else round(float(v), 4)


def measured_metrics(
    r: st.Ratings, res: st.Agreement, p: Agreement, *, n_duplicates: int
) -> dict[str, Any]:
    """metrics/agreement.json of a run with ratings (undefined figures are None, never NaN).

    status is "skipped" when Fleiss' kappa is undefined (e.g. no image has 2 ratings)."""
    status, reason = st.gate(res.fleiss, min_kappa=p.min_kappa, policy=p.policy)
    kappas = res.pairwise["kappa"].dropna()
    c, truth = res.consensus, r.true_label
    multi = c.n_ratings >= 2
    known = (truth >= 0) & (c.label >= 0) if truth is not None else np.zeros(r.n_items, bool)
    return {
        "status": "measured" if res.fleiss.value is not None else "skipped",
        "skip_reason": res.fleiss.reason,
        "gate": status,
        "gate_reason": reason,
        "gate_kappa": "fleiss_kappa",
        "policy": p.policy,
        "min_kappa": p.min_kappa,
        "fleiss_kappa": _num(res.fleiss.value),
        "fleiss_kappa_reason": res.fleiss.reason,
        "mean_pairwise_kappa": _num(kappas.mean()) if len(kappas) else None,
        "min_pairwise_kappa": _num(kappas.min()) if len(kappas) else None,
        "n_pairs_defined": len(kappas),
        "n_pairs_undefined": len(res.pairwise) - len(kappas),
        "n_items": r.n_items,
        "n_items_multi_rated": int(multi.sum()),
        "n_items_unrated": int((c.n_ratings == 0).sum()),
        "n_labelled": int((c.label >= 0).sum()),
        "n_ratings": len(r.item),
        "n_duplicate_ratings": n_duplicates,
        "n_annotators": r.n_annotators,
        "n_classes": r.n_classes,
        "n_ties": int(c.tied.sum()),
        "mean_support": _num(c.support[multi].mean()) if multi.any() else None,
        "n_relabel": int(res.relabel.sum()),
        "n_true_known": int(known.sum()),
        "consensus_true_accuracy": (
            _num(np.mean(c.label[known] == truth[known])) if known.any() else None
        ),
    }


def skipped_metrics(
    reason: str, p: Agreement, *, n_items: int, n_labelled: int, n_classes: int
) -> dict[str, Any]:
    """metrics/agreement.json when agreement cannot be measured: same keys, nothing to gate on."""
    return {
        "status": "skipped",
        "skip_reason": reason,
        "gate": "skipped",
        "gate_reason": f"agreement not measured: {reason}",
        "gate_kappa": "fleiss_kappa",
        "policy": p.policy,
        "min_kappa": p.min_kappa,
        "fleiss_kappa_reason": reason,
        **dict.fromkeys(FIGURES.split()),
        **dict.fromkeys(COUNTS.split(), 0),
        "n_items": n_items,
        "n_items_unrated": n_items - n_labelled,
        "n_labelled": n_labelled,
        "n_classes": n_classes,
    }
