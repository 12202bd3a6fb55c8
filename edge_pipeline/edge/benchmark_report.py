"""The benchmark report a person reads first (reports/benchmark/benchmark.md) and the flags the
stage logs: the table, the gate references and floor, the choice and what it passed over, the
chosen model's per-class recall, the machine peak and the serving comparison."""

from __future__ import annotations

from typing import Any


def threads_of(out: dict[str, Any]) -> list[str]:
    return list(out["models"][0]["latency_ms"]) if out["models"] else []


def flags(out: dict[str, Any], *, max_spread_pct: float) -> list[str]:
    """Warnings a person must see: INT8 slower than its FP32 source, and latencies whose p50
    spread across repetitions is above `max_spread_pct` (benchmark.max_p50_spread_pct)."""
    lines = []
    for r in out["models"]:
        if r["vs_fp32"] and r["vs_fp32"]["int8_slower"]:
            lines.append(
                f"INT8 SLOWER: {r['id']} is {1 / r['vs_fp32']['speedup']:.2f}x slower than "
                f"its FP32 source {r['vs_fp32']['fp32']} at 1 thread (expected on CPUs without "
                "int8 dot-product instructions: `python -m benchmarks int8` measures this CPU)"
            )
        for t, lat in r["latency_ms"].items():
            if lat["p50_spread_pct"] > max_spread_pct:
                lines.append(
                    f"NOISY: {r['id']} p50 spread {lat['p50_spread_pct']:.1f}% across "
                    f"repetitions at {t} thread(s) (target < {max_spread_pct:g}%; is the machine "
                    "idle?)"
                )
    return lines


def rule(out: dict[str, Any]) -> str:
    """The choice rule in words, with its figures."""
    return (
        f"passes every gate; best by {out['choose_by']} among the passing candidates within "
        f"{out['choice_tolerance_pts']:g} pts of the best passing one on accuracy and macro-F1; "
        f"p50 latencies within {out['choice_latency_tolerance_pct']:g}% of the fastest of them "
        "count as equal"
    )


def choice_lines(out: dict[str, Any]) -> list[str]:
    """Markdown: the models passed over and why, then the chosen model's per-class recall."""
    lines = ["## Passed over", "", *(f"- `{o['id']}`: {o['reason']}" for o in out["passed_over"])]
    chosen = next((r for r in out["models"] if r["id"] == out["chosen"]), None)
    if chosen:
        teacher = next(r for r in out["models"] if r["id"] == out["baseline"])
        lines += [
            "",
            f"## Per-class recall of `{chosen['id']}` (teacher `{teacher['id']}` alongside)",
            "",
            "| class | chosen | teacher |",
            "|---|---|---|",
            *(
                f"| {c} | {v:.2%} | {teacher['per_class_recall'][c]:.2%} |"
                for c, v in chosen["per_class_recall"].items()
            ),
        ]
    return lines


def markdown(out: dict[str, Any], *, max_spread_pct: float) -> str:
    """The Markdown report: the table, the verdicts, the flags and the serving comparison."""
    threads = threads_of(out)
    refs = out["references"]
    head = [
        "model",
        "runtime/dtype",
        "size MB (zip)",
        "accuracy",
        "balanced acc.",
        "macro-F1",
        *(f"p50/p95/p99 ms @{t}t" for t in threads),
        "speed-up",
        "size ÷",
        "Δacc pts",
        "verdict",
    ]
    lines = [
        "# Edge benchmark",
        "",
        f"Baseline (the teacher) for ratios: `{out['baseline']}` (1 thread, batch 1). Quality "
        "gates against the higher of the teacher and the best FP32 model: accuracy "
        f"{refs['accuracy']['value']:.2%} (`{refs['accuracy']['model']}`), macro-F1 "
        f"{refs['macro_f1']['value']:.4f} (`{refs['macro_f1']['model']}`). Accuracy floor: "
        f"{out['gates']['min_accuracy']:.2%}, and above the majority-class rate "
        f"{out['majority']['rate']:.2%} (`{out['majority']['class']}`). Gates: {out['gates']}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in out["models"]:
        lat = [
            f"{r['latency_ms'][t]['p50']:.3f} / {r['latency_ms'][t]['p95']:.3f} / "
            f"{r['latency_ms'][t]['p99']:.3f}"
            for t in threads
        ]
        v = r["verdict"]
        cells = [
            f"`{r['id']}`" + (" **(chosen)**" if r["id"] == out["chosen"] else ""),
            f"{r['runtime']}/{r['dtype']}",
            f"{r['size_mb']:.3f} ({r['zipped_mb']:.3f})",
            f"{r['accuracy']:.2%}",
            f"{r['balanced_accuracy']:.2%}",
            f"{r['macro_f1']:.4f}",
            *lat,
            f"{r['vs_baseline']['speedup']:.2f}x",
            f"{r['vs_baseline']['size_reduction']:.1f}x",
            f"{r['vs_baseline']['accuracy_change_pts']:+.2f}",
            ("pass" if v["passed"] else "FAIL: " + "; ".join(v["failures"]))
            + ("" if r["id"] in out["candidates"] else " (not a candidate)"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    m = out["machine"]
    lines += [
        "",
        f"Chosen edge model: **{out['chosen'] or 'none: no candidate passes every gate'}** "
        f"({rule(out)}).",
        "",
        *choice_lines(out),
        "",
        f"Machine: {m.get('cpu', 'not recorded')}. Peak, 1 thread: float32 "
        f"{m['float32_gmacs_1t']:.1f} GMAC/s "
        f"({m['float32_source']}),"
        f" int8 {m['int8_gmacs_1t']:.1f} GMAC/s ({m['int8_source']}). Achieved at batch 1:",
    ]
    lines += [
        f"- `{r['id']}`: {r['gmacs_per_s']:.3f} GMAC/s = {r['peak_fraction']:.1%} of peak"
        for r in out["models"]
    ]
    noted = flags(out, max_spread_pct=max_spread_pct) or ["none"]
    lines += ["", "## Flags", "", *(f"- {f}" for f in noted)]
    if out["serving"]:
        s = out["serving"]
        lines += [
            "",
            f"## Serving `{s['model']}`: dynamic batching (max_batch {s['max_batch']}, "
            f"max_wait {s['max_wait_ms']} ms) vs batch 1",
            "",
            "Virtual-time simulation of a Poisson stream over measured batch latencies "
            "(1 thread); latency = arrival to result.",
            "",
            "| rate req/s | policy | offered load | throughput req/s | p50 ms | p95 ms | p99 ms |"
            " mean batch |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {w['rate_rps']:g} | {w['policy']} | {w['offered_load']:.2f} | "
            f"{w['throughput_rps']:.0f} | {w['latency_ms_p50']:.3f} | {w['latency_ms_p95']:.3f} "
            f"| {w['latency_ms_p99']:.3f} | {w['mean_batch']:.1f} |"
            for w in s["rows"]
        ]
    return "\n".join(lines) + "\n"
