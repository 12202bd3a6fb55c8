"""The CPU line that tags every stage run: parsed from /proc/cpuinfo, x86 and Arm."""

from __future__ import annotations

import os
from pathlib import Path

from edge_pipeline.core.machine import cpu_description, cpu_fields

X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx fma avx2 sha_ni
processor\t: 1
model name\t: another name the first processor's wins over
"""
ARM = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes crc32 asimddp sve i8mm bf16
CPU implementer\t: 0x41
"""


def test_x86_names_model_family_cores_and_vector_extensions(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(X86)
    cores = len(os.sched_getaffinity(0))
    assert cpu_fields(X86)["model name"] == "AMD EPYC 7B13"
    assert cpu_description(info) == f"AMD EPYC 7B13 (family 25, model 1), {cores} cores, avx2 fma"


def test_arm_lists_its_features_and_a_missing_file_falls_back_to_platform(
    tmp_path: Path,
) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(ARM)
    assert cpu_description(info).endswith("cores, asimd asimddp sve i8mm bf16")
    missing = cpu_description(tmp_path / "absent")
    assert " cores" in missing and "avx" not in missing and "(family" not in missing
