"""Run the benchmark scripts: `python -m benchmarks [name ...]` (all of them by default).

Each `benchmarks/bench_<name>.py` exposes `run() -> dict`; the figures are printed as they come and
collected into benchmarks/results.json. Each script runs in its own process, so torch and TensorFlow
never share one and peak-memory figures stay per benchmark.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
# The whole pipeline on a real-size case and two demo nights are long: they run only when named
# (`benchmarks flow`, `benchmarks nights`).
OPT_IN = {"flow", "nights"}


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def run_one(name: str) -> dict:
    code = (
        f"import json, sys; from benchmarks import bench_{name} as b; r = b.run(); "
        "sys.stdout.write('\\n@@RESULT@@' + json.dumps(r, default=str) + '\\n')"
    )
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=HERE.parent, text=True, stdout=subprocess.PIPE
    )
    out = proc.stdout
    printed, _, result = out.partition("\n@@RESULT@@")
    print(printed.rstrip())
    if proc.returncode != 0 or not result:
        return {"error": f"exit code {proc.returncode}"}
    figures = json.loads(result)
    figures["wall_s"] = round(time.perf_counter() - start, 1)
    return figures


def main(argv: list[str]) -> int:
    names = argv or [n for n in available() if n not in OPT_IN]
    unknown = sorted(set(names) - set(available()))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {available()}", file=sys.stderr)
        return 2
    results = {}
    for name in names:
        print(f"\n=== bench_{name} ===", flush=True)
        results[name] = run_one(name)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    RESULTS.write_text(json.dumps({**previous, **results}, indent=2) + "\n")
    failed = [n for n, r in results.items() if "error" in r]
    print(f"\nwrote {RESULTS.relative_to(HERE.parent)}; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
