"""One page a person reads in 30 seconds: tonight's run, from the files the stages left.

`build(root)` reads metrics/<stage>.json of every stage that ran and data/benchmark/chosen.json of
the workspace `root` (missing ones are skipped: a run that stopped early still gets its page, which
says where it stopped) and `markdown(summary)` renders ONE page: tonight's data (images, new,
quarantined, kappa, label issues), each model's accuracy / macro-F1 / size / p95 latency, the
chosen model, the promotion decision with its reason, the alerts and links to the stage reports.
Numbers are rounded (percent to 0.1, latency and size to 3 significant digits).

CLI (`make demo` runs it after the flow):
    python -m flows.summary [--root DIR] [--no-history]
writes reports/summary.md, appends tonight's row to the nightly history
(flows/history.py) and prints the page.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edge_pipeline.artifacts.catalog import CHOSEN, SUMMARY, stage_paths
from edge_pipeline.core.errors import InputError
from edge_pipeline.core.io import atomic_path

SPLITS = ("train", "val", "test")
# every stage of dvc.yaml, in pipeline order (the last one with metrics is where a run stopped)
STAGES = (
    "demo", "ingest", "agreement", "split", "clean", "resample", "train", "distill", "prune",
    "qat", "export", "benchmark", "register",
)  # fmt: skip


def _read(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, None when the file does not exist (InputError when invalid)."""
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise InputError(
            f"{path} line {e.lineno}: invalid JSON ({e.msg}); re-run the stage that writes it "
            "(`dvc repro <stage>`) or delete the file"
        ) from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a JSON object; re-run the stage that writes it")
    return obj


def _at(root: Path, path: Path) -> Path:
    return path if path.is_absolute() else root / path


def build(root: Path = Path(".")) -> dict[str, Any]:
    """Tonight's figures of the workspace `root` (params.yaml `paths` give the folders).

    Returns {"metrics": {stage: metrics or absent}, "chosen": chosen.json or None,
    "ran": stages with metrics, "stopped_after": last stage with metrics or None,
    "reports": {stage: [report files relative to the reports root]}, "reports_root": Path}.
    """
    params = root / "params.yaml"
    paths = {s: stage_paths(s, params if params.exists() else None) for s in STAGES}
    metrics = {s: m for s in STAGES if (m := _read(_at(root, paths[s].metrics))) is not None}
    chosen = _read(_at(root, paths["benchmark"].data / CHOSEN))
    reports_root = _at(root, paths["benchmark"].reports.parent)
    reports = {
        s: sorted(
            str(f.relative_to(reports_root))
            for f in _at(root, paths[s].reports).glob("*")
            if f.suffix in (".md", ".html", ".csv")
        )
        for s in STAGES
    }
    ran = [s for s in STAGES if s in metrics]
    return {
        "metrics": metrics,
        "chosen": chosen,
        "ran": ran,
        "stopped_after": ran[-1] if ran else None,
        "reports": {s: r for s, r in reports.items() if r},
        "reports_root": reports_root,
    }


def sig(x: float | None, digits: int = 3) -> str:
    """`x` to `digits` significant digits ('-' for None)."""
    return "-" if x is None else f"{x:.{digits}g}"


def pct(x: float | None) -> str:
    """A fraction as a percentage to 0.1 ('-' for None)."""
    return "-" if x is None else f"{100 * x:.1f}%"


def drift_line(register: dict[str, Any]) -> str | None:
    """'91.0% of 89 (93.1% at promotion (v1))', plus 'ALERT' on drift; None without figures."""
    d = register.get("new_images") or {}
    if d.get("accuracy") is None:
        return None
    line = f"{pct(d['accuracy'])} of {d['n']} ({pct(d['reference'])} {d['reference_kind']})"
    return line + (" ALERT: drift" if d.get("alert") else "")


def data_lines(m: dict[str, dict[str, Any]]) -> list[str]:
    """Tonight's data: images kept, new since the last run, quarantined, kappa, label issues,
    the champion's accuracy on the new images (metrics/register.json `new_images`, if any)."""
    ingest, split = m.get("ingest", {}), m.get("split", {})
    agreement, clean = m.get("agreement", {}), m.get("clean", {})
    new = (split.get("against_previous") or {}).get("n_new")
    kappa = agreement.get("fleiss_kappa")
    rows = [
        ("images kept", ingest.get("kept")),
        ("new tonight", new if (split.get("against_previous") or {}).get("previous") else None),
        ("quarantined files", ingest.get("quarantined")),
        ("annotator kappa (Fleiss)", None if kappa is None else f"{kappa:.2f}"),
        ("label issues (cleanlab)", clean.get("n_issues")),
        ("champion accuracy on tonight's new images", drift_line(m.get("register", {}))),
        ("train / val / test", " / ".join(str(split.get(f"n_{k}", "-")) for k in SPLITS)
         if split else None),
    ]  # fmt: skip
    return [f"- {name}: {'-' if v is None else v}" for name, v in rows]


WARM_STAGES = {"train": "teacher", "distill": "student", "prune": "pruned model"}


def start_line(m: dict[str, dict[str, Any]]) -> str | None:
    """Where tonight's weights started (metrics `init_from`, and `scratch_why` for a scratch start):
    'champion v1 (teacher, student, pruned model)', 'scratch (refresh due: warm.refresh_every=7)
    (teacher, ...)', or each model's own source when they differ; None when no model trained."""
    froms = {name: m[st]["init_from"] + (f" ({m[st]['scratch_why']})" if m[st].get("scratch_why")
                                         else "")
             for st, name in WARM_STAGES.items() if m.get(st, {}).get("init_from")}  # fmt: skip
    if not froms:
        return None
    if len(set(froms.values())) == 1:
        return f"{next(iter(froms.values()))} ({', '.join(froms)})"
    return ", ".join(f"{name}: {how}" for name, how in froms.items())


def model_rows(m: dict[str, dict[str, Any]], chosen: str | None) -> list[dict[str, Any]]:
    """One row per model: benchmark figures when the benchmark ran, else the test figures of
    train / distill (size and latency unknown then)."""
    bench = m.get("benchmark", {}).get("models")
    if bench:
        return [
            {
                "model": k, "accuracy": v.get("accuracy"), "macro_f1": v.get("macro_f1"),
                "size_mb": v.get("size_mb"), "p95_ms": v.get("p95_ms_1t"),
                "passed": v.get("passed"), "chosen": k == chosen,
            }
            for k, v in bench.items()
        ]  # fmt: skip
    return [
        {"model": name, "accuracy": m[s].get("test_accuracy"),
         "macro_f1": m[s].get("test_macro_f1"), "size_mb": None, "p95_ms": None, "passed": None,
         "chosen": False}
        for s, name in (("train", "teacher"), ("distill", "student"))
        if s in m
    ]  # fmt: skip


def alerts(s: dict[str, Any]) -> list[str]:
    """What a person must look at: failed gates, the registry alert, split warnings, no model."""
    m = s["metrics"]
    out = []
    agreement = m.get("agreement", {})
    if agreement.get("gate") not in (None, "pass"):
        out.append(f"agreement gate {agreement['gate']}: {agreement.get('gate_reason', '')}")
    out += [f"split: {w}" for w in m.get("split", {}).get("warnings", [])]
    if "benchmark" in m and m["benchmark"].get("n_passed") == 0:
        out.append("benchmark: no model passes the deployment gates")
    reg = m.get("register", {})
    if reg.get("alert"):
        out.append(f"register: {reg.get('alert_reason') or 'alert raised'}")
    if s["stopped_after"] not in (None, STAGES[-1]):
        out.append(f"the run stopped after `{s['stopped_after']}`: later stages have no figures")
    return out


def chosen_id(s: dict[str, Any]) -> str | None:
    """The benchmark's chosen model id (chosen.json, else metrics/benchmark.json), or None."""
    chosen = (s["chosen"] or {}).get("chosen") or s["metrics"].get("benchmark", {}).get("chosen")
    return None if chosen in (None, "none") else chosen


def decision_lines(s: dict[str, Any]) -> list[str]:
    """The chosen model, why, and the promotion decision with its reason."""
    reg = s["metrics"].get("register")
    chosen = chosen_id(s)
    lines = [f"- chosen edge model: `{chosen}`" if chosen else "- chosen edge model: none"]
    if chosen and s["chosen"] and s["chosen"].get("rule"):
        lines.append(f"  - why: {s['chosen']['rule']}")
    elif not chosen and s["chosen"]:  # the rule names what a winner would be: no winner, no rule
        lines.append("  - why: no candidate passes every gate (failures: benchmark report)")
    if reg is None:
        return [*lines, "- promotion: not decided (register did not run)"]
    outcome = str(reg.get("outcome") or ("promote" if reg.get("promoted") else "keep"))
    lines.append(
        f"- promotion: **{outcome.replace('_', ' ')}** (version {reg.get('version') or '-'}, "
        f"champion now v{reg.get('champion_version') or '-'})"
    )
    lines.append(f"  - reason: {reg.get('reason', '-')}")
    return lines


def markdown(s: dict[str, Any]) -> str:
    """The page (GitHub markdown) of `build`'s summary."""
    m = s["metrics"]
    chosen = chosen_id(s)
    night = m.get("demo", {}).get("night")
    title = "# Tonight's run" + (f" (demo night {night})" if night else "")
    lines = [title, "", f"Stages with results: {len(s['ran'])} of {len(STAGES)}.", ""]
    lines += ["## Data", "", *data_lines(m), ""]
    rows = model_rows(m, chosen)
    lines += ["## Models (test split)", ""]
    if start := start_line(m):
        lines += [f"Weights started from: {start}.", ""]
    if rows:
        lines += [
            "| model | accuracy | macro-F1 | size MB | p95 ms (1 thread) | gates |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for r in rows:
            gates = {True: "pass", False: "fail", None: "-"}[r["passed"]]
            name = f"**{r['model']}** (chosen)" if r["chosen"] else r["model"]
            lines.append(
                f"| {name} | {pct(r['accuracy'])} | {pct(r['macro_f1'])} | {sig(r['size_mb'])} "
                f"| {sig(r['p95_ms'])} | {gates} |"
            )
    else:
        lines.append("No model trained in this run.")
    lines += ["", "## Decision", "", *decision_lines(s), "", "## Alerts", ""]
    lines += [f"- {a}" for a in alerts(s)] or ["- none"]
    lines += ["", "## Reports", ""]
    lines += [
        f"- {stage}: " + ", ".join(f"[{Path(f).name}]({f})" for f in files)
        for stage, files in s["reports"].items()
    ] or ["- none written"]
    return "\n".join(lines) + "\n"


def write_summary(root: Path = Path(".")) -> tuple[Path, str]:
    """Build the page of `root`, write it to <reports root>/summary.md; returns (path, text)."""
    s = build(root)
    text = markdown(s)
    path = s["reports_root"] / SUMMARY
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path, text


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("."), help="workspace (default: here)")
    ap.add_argument("--no-history", action="store_true", help="do not append to the history")
    args = ap.parse_args(argv)
    path, text = write_summary(args.root)
    print(text)
    print(f"(written to {path})")
    if not args.no_history:
        from flows.history import append_tonight

        csv, png = append_tonight(args.root, build(args.root))
        print(f"(nightly history: {csv}, {png})")


if __name__ == "__main__":
    from edge_pipeline.core.entry import run_stage

    run_stage(main)
