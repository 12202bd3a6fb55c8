"""Which CPU a run used: results of the same inputs depend on it.

Training on the CPU is bit-for-bit repeatable on one CPU model, not across models: oneDNN and the
BLAS pick kernels by vector extension and cache size, so another CPU sums in another order, and
the weights (and a point of test accuracy on the demo) differ; speed differs far more. Every
stage's MLflow run is tagged with `cpu_description()` and the benchmark report names it, so two
nights' numbers can be told apart by machine (docs/benchmarks.md, "What is and is not
deterministic").
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# Extensions that change which kernels run (x86: /proc/cpuinfo "flags"; Arm: "Features").
VECTOR_FLAGS = (
    "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "avx2", "fma",
    "asimd", "asimddp", "sve", "sve2", "i8mm", "bf16",
)  # fmt: skip


def cpu_fields(text: str) -> dict[str, str]:
    """The first value of each `key : value` line of /proc/cpuinfo's `text` (first processor)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def read_cpuinfo(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """`cpu_fields` of the file, empty where it cannot be read (not Linux)."""
    try:
        return cpu_fields(cpuinfo.read_text())
    except OSError:
        return {}


def vector_extensions(fields: dict[str, str]) -> list[str]:
    """The VECTOR_FLAGS that `read_cpuinfo`'s fields list, in VECTOR_FLAGS order."""
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return [f for f in VECTOR_FLAGS if f in flags]


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """One line naming the CPU, e.g. 'AMD EPYC (family 23, model 1), 2 cores, avx2 fma'.

    Cores are those this process may run on. Where /proc/cpuinfo is missing (not Linux), the
    name comes from `platform` and the extensions are left out.
    """
    fields = read_cpuinfo(cpuinfo)
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown"
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    vector = " ".join(vector_extensions(fields))
    return ", ".join(part for part in (name, f"{cores} cores", vector) if part)
