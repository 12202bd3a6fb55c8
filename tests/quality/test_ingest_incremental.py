"""Incremental ingest: a night decodes only new or changed bytes, and its outputs are
byte-identical to a full ingest of the same final folder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from edge_pipeline.config.quality import Demo
from edge_pipeline.quality import decode_cache, decoding
from edge_pipeline.quality.demo_data import make_demo
from edge_pipeline.quality.demo_flaws import png_bytes
from tasks import ingest as stage

REPO = Path(__file__).resolve().parents[2]
OUTPUTS = ("data/ingest", "reports/ingest", "plots/ingest")
# metrics that may differ between a full and an incremental run of the same files
RUN_ONLY = {"incremental", "decode_s", "images_per_s", "images_per_cpu_s"}


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny demo (with its broken files and duplicates) as an ImageFolder tree."""
    make_demo(tmp_path / "data/demo", Demo(max_per_class=10))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"].update({"annotations": None, "max_quarantined_fraction": 0.3})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def set_param(workspace: Path, **values: object) -> None:
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["ingest"].update(values)
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))


def digests(workspace: Path) -> dict[str, str]:
    """md5 of every output file but the change report (which says how the run got there)."""
    return {
        p.relative_to(workspace).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for root in OUTPUTS
        for p in sorted((workspace / root).rglob("*"))
        if p.is_file() and p.name != "changes.csv"
    }


def metrics(workspace: Path) -> dict:
    return json.loads((workspace / "metrics/ingest.json").read_text())


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = decoding.decode

    def counted(data: bytes, opts: object) -> object:
        calls.append(1)
        return real(data, opts)

    monkeypatch.setattr(decoding, "decode", counted)
    return calls


def test_night_is_byte_identical_to_a_full_ingest(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo = workspace / "data/demo"
    pngs = sorted(demo.rglob("*.png"))
    held = workspace / "held"
    held.mkdir()
    for p in pngs[::7]:  # night 2's new images
        shutil.move(p, held / p.relative_to(demo).as_posix().replace("/", "__"))
    stage.main()  # night 1
    first = metrics(workspace)["incremental"]
    assert first["new"] > 0 and first["removed"] == first["reused"] == 0

    for p in held.iterdir():
        shutil.move(p, demo / p.name.replace("__", "/"))
    removed, changed = pngs[1], pngs[2]
    removed.unlink()
    changed.write_bytes(png_bytes(np.full((28, 28), 77, np.uint8)))
    calls = count_decodes(monkeypatch)
    stage.main()  # night 2
    night = metrics(workspace)["incremental"]
    assert night["new"] == len(pngs[::7]) and night["changed"] == 1 and night["removed"] == 1
    assert night["decoded"] == len(calls) <= night["new"] + night["changed"]
    assert night["reused"] > 0 and night["reused"] + night["decoded"] >= night["unchanged"]
    changes = (workspace / "reports/ingest/changes.csv").read_text().splitlines()
    assert len(changes) == 1 + night["new"] + night["changed"] + night["removed"]
    incremental, m_incr = digests(workspace), metrics(workspace)
    manifest = (workspace / "data/ingest/manifest.csv").read_text()
    assert removed.relative_to(demo).as_posix() not in manifest

    set_param(workspace, reuse_decoded=False)  # full ingest of the same final folder
    calls.clear()
    stage.main()
    full = metrics(workspace)
    assert full["incremental"]["reused"] == 0 and len(calls) == full["incremental"]["decoded"]
    assert digests(workspace) == incremental
    assert {k: v for k, v in full.items() if k not in RUN_ONLY} == {
        k: v for k, v in m_incr.items() if k not in RUN_ONLY
    }


def test_unchanged_stat_is_not_read_again(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode_cache, "RACY_NS", 0)  # files written just now count as settled
    stage.main()
    reads: list[str] = []
    real = decoding.read_checked

    def counted(root: Path, rel: str, *, max_bytes: int) -> bytes:
        reads.append(rel)
        return real(root, rel, max_bytes=max_bytes)

    monkeypatch.setattr(decoding, "read_checked", counted)
    before = digests(workspace)
    stage.main()
    m = metrics(workspace)["incremental"]
    assert m["not_read_again"] == m["unchanged"] > 0 and m["decoded"] == 0
    # only files quarantined before hashing (zero bytes, links, ...) are read again
    assert len(reads) == metrics(workspace)["seen"] - m["unchanged"]
    assert digests(workspace) == before

    # new bytes under the old size and mtime: ctime moves, so the file is read and decoded
    target = sorted((workspace / "data/demo").rglob("*.png"))[0]
    st = target.stat()
    data = bytearray(target.read_bytes())
    other = png_bytes(np.full((28, 28), 5, np.uint8))
    target.write_bytes(bytes(other[: len(data)]).ljust(len(data), b"\0"))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    reads.clear()
    stage.main()
    assert target.relative_to(workspace / "data/demo").as_posix() in reads
    assert metrics(workspace)["incremental"]["changed"] == 1


def test_racy_files_are_read_again(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stage.main()  # the demo was written a moment ago: within RACY_NS of the scan
    stage.main()
    m = metrics(workspace)["incremental"]
    assert m["not_read_again"] == 0 and m["decoded"] == 0 and m["reused"] > 0


def test_new_decode_options_decode_everything(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage.main()
    set_param(workspace, image_size=[8, 8])
    calls = count_decodes(monkeypatch)
    stage.main()
    m = metrics(workspace)["incremental"]
    assert m["reused"] == 0 and m["decoded"] == len(calls) > 0 and m["new"] == 0
    assert np.load(workspace / "data/ingest/images.npy").shape[1:] == (8, 8, 1)
    cached = np.load(workspace / "data/ingest_cache/pixels.npy")
    assert cached.shape[1:] == (8, 8, 1)


def test_a_broken_cache_file_never_changes_the_outputs(workspace: Path) -> None:
    stage.main()
    before = digests(workspace)
    meta = workspace / "data/ingest_cache/meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "format": -1}))
    stage.main()
    assert metrics(workspace)["incremental"]["reused"] == 0
    assert digests(workspace) == before
