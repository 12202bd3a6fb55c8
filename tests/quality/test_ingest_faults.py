"""Ingest under injected faults (issue 15 items 4, 5, 7; issue 16 item 5): bad annotation CSVs,
labels and folders that are no class, special files and links, EXIF orientation and decode memory,
content duplicates. Each test injects one fault and asserts the outcome; none can hang (a FIFO
read would block: every test here runs under a SIGALRM guard)."""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from edge_pipeline.artifacts.datasets import load_manifest
from edge_pipeline.config.quality import Demo, Ingest
from edge_pipeline.core.errors import InputError
from edge_pipeline.quality.demo_data import make_demo
from edge_pipeline.quality.demo_flaws import png_bytes
from edge_pipeline.quality.images import Quarantined, decode
from edge_pipeline.quality.ingestion import check_losses, ingest
from edge_pipeline.quality.sources import special_entries
from tasks import ingest as stage

REPO = Path(__file__).resolve().parents[2]
OPTS = Ingest(image_size=(8, 8), min_class_images=1)


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """Fail (rather than hang the suite) when a test blocks for 20 s, e.g. opening a FIFO."""

    def fail(*_: object) -> None:
        raise TimeoutError("ingest blocked for 20 s")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def digit(seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


def write(root: Path, rel: str, data: bytes) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(data)


def labelled_tree(root: Path, n: int = 40) -> list[str]:
    """n distinct PNGs root/i/<k>.png and CSV rows `i/<k>.png,a<r>,<cat|dog>` (3 ratings each)."""
    rows = []
    for k in range(n):
        write(root, f"i/{k:03d}.png", png_bytes(digit(k)))
        rows += [f"i/{k:03d}.png,a{r},{'cat' if k % 2 else 'dog'}" for r in range(3)]
    return rows


def write_csv(root: Path, rows: list[str], name: str = "l.csv") -> Path:
    (root / name).write_text("image,annotator,label\n" + "".join(r + "\n" for r in rows))
    return root / name


# ---- 15.4: bad annotation CSVs ------------------------------------------------------------------


def test_unclosed_quote_fails_naming_its_line(tmp_path: Path) -> None:
    rows = labelled_tree(tmp_path)
    rows[30] = rows[30].replace(",dog", ',"dog').replace(",cat", ',"cat')  # CSV line 32
    with pytest.raises(InputError, match=r"l\.csv line 32: .*unexpected end of data"):
        ingest(tmp_path, options=OPTS, annotations=write_csv(tmp_path, rows))
    rows.append('i/000.png,a9,"dog"x')  # a later quote closes it: still line 32, not a silent loss
    with pytest.raises(InputError, match=r"l\.csv line 32: "):
        ingest(tmp_path, options=OPTS, annotations=write_csv(tmp_path, rows))


def test_quoted_value_over_two_lines_fails(tmp_path: Path) -> None:
    rows = labelled_tree(tmp_path)
    rows[4] = 'i/004.png,a0,"dog\ncat"'  # lines 6-7
    with pytest.raises(InputError, match=r"line 6: a quoted value runs on to line 7"):
        ingest(tmp_path, options=OPTS, annotations=write_csv(tmp_path, rows))


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("i/000.png,a0,caf\xe9".encode("latin-1"), r"line 5: byte 0xE9 is not UTF-8 \(Latin-1"),
        (b"i/000.png,a0,d\x00g", r"line 5: a NUL byte"),
        (b"i/000.png,a0," + b"x" * 200_000, r"line 5: field larger than field limit \(131072\)"),
    ],
    ids=["latin1", "nul", "huge_field"],
)
def test_unreadable_bytes_fail_naming_file_and_line(tmp_path: Path, raw: bytes, match: str) -> None:
    rows = labelled_tree(tmp_path, 4)[:3]
    path = write_csv(tmp_path, rows)
    path.write_bytes(path.read_bytes() + raw + b"\n" + rows[0].encode() + b"\n")
    with pytest.raises(InputError, match=rf"l\.csv {match}"):
        ingest(tmp_path, options=OPTS, annotations=path)


def test_utf16_with_bom_is_read(tmp_path: Path) -> None:
    rows = labelled_tree(tmp_path, 4)
    path = tmp_path / "l.csv"
    path.write_text("image,annotator,label\n" + "".join(r + "\n" for r in rows), encoding="utf-16")
    assert len(ingest(tmp_path, options=OPTS, annotations=path).annotations) == 12


def test_label_of_no_class_is_rejected_not_an_empty_class(tmp_path: Path) -> None:
    rows = labelled_tree(tmp_path, 12)
    rows[0] = rows[0].replace(",dog", ",dgo")  # one misspelt rating among three: line 2
    rows[3] = rows[3].replace(",cat", ",bird")  # the majority label of no image: line 5
    result = ingest(
        tmp_path, options=Ingest(image_size=(8, 8)), annotations=write_csv(tmp_path, rows)
    )
    assert result.classes == ["cat", "dog"]
    rejected = result.rejected.set_index("line")["reason"].to_dict()
    assert rejected == {2: "unknown_label", 5: "unknown_label"}
    assert result.metrics["rejected_by_reason"]["unknown_label"] == 2
    assert result.metrics["kept"] == 12  # every image keeps its other ratings

    only = Ingest(image_size=(8, 8), classes=["cat"])  # an allow-list
    result = ingest(tmp_path, options=only, annotations=write_csv(tmp_path, rows))
    assert result.classes == ["cat"] and result.metrics["unlabeled_files"] == 6


def test_stray_and_small_folders_are_reported_not_classes(tmp_path: Path) -> None:
    for k in range(6):
        write(tmp_path, f"cat/{k}.png", png_bytes(digit(k)))
        write(tmp_path, f"dog/{k}.png", png_bytes(digit(10 + k)))
    write(tmp_path, "cat/thumbs/a.png", png_bytes(digit(30)))  # inside a class folder
    write(tmp_path, "misc/b.png", png_bytes(digit(31)))  # 1 image < min_class_images=3
    result = ingest(tmp_path, options=Ingest(image_size=(8, 8)))
    assert result.classes == ["cat", "dog"]
    q = result.quarantine.set_index("path")
    assert q["reason"].to_dict() == {
        "cat/thumbs/a.png": "stray_folder",
        "misc/b.png": "stray_folder",
    }
    assert "min_class_images=3" in q.loc["misc/b.png", "detail"]
    only = Ingest(image_size=(8, 8), classes=["dog"])
    result = ingest(tmp_path, options=only)
    assert (
        result.classes == ["dog"] and result.metrics["quarantined_by_reason"]["stray_folder"] == 8
    )


def test_losses_over_the_limit_fail_with_the_count(tmp_path: Path) -> None:
    rows = labelled_tree(tmp_path, 20)
    result = ingest(tmp_path, options=OPTS, annotations=write_csv(tmp_path, rows[:30]))
    assert result.metrics["unlabeled_files"] == 10 and result.metrics["lost_images"] == 10
    with pytest.raises(InputError, match=r"10 of 20 image files \(50\.0% > .*fraction=0\.1\)"):
        check_losses(result.metrics, OPTS)
    check_losses(result.metrics, OPTS.model_copy(update={"max_quarantined_fraction": 0.5}))
    bad = rows + [f"missing{k}.png,a0,cat" for k in range(4)]  # 4 of 64 rows: 6.2% > 5%
    result = ingest(tmp_path, options=OPTS, annotations=write_csv(tmp_path, bad))
    with pytest.raises(InputError, match=r"rejected 4 of 64 annotation rows \(6\.2% > "):
        check_losses(result.metrics, OPTS)


# ---- 15.5: special files ------------------------------------------------------------------------


def test_fifo_and_links_are_quarantined_never_opened(tmp_path: Path) -> None:
    src, outside = tmp_path / "src", tmp_path / "outside"
    for k in range(3):
        write(src, f"cat/{k}.png", png_bytes(digit(k)))
    write(outside, "secret.png", png_bytes(digit(9)))
    os.mkfifo(src / "cat/pipe.png")  # opening it for reading would block forever
    (src / "cat/gone.png").symlink_to(src / "cat/nothing.png")
    (src / "cat/out.png").symlink_to(outside / "secret.png")
    write(src, ".store/real.png", png_bytes(digit(5)))  # hidden: read only through the link
    (src / "cat/in.png").symlink_to(src / ".store/real.png")  # inside the root: followed
    result = ingest(src, options=OPTS)
    reasons = result.quarantine.set_index("path")["reason"].to_dict()
    assert reasons == {
        "cat/gone.png": "dangling_link",
        "cat/out.png": "outside_link",
        "cat/pipe.png": "special_file",
    }
    assert sorted(result.manifest["id"]) == ["cat/0.png", "cat/1.png", "cat/2.png", "cat/in.png"]
    # with annotations the FIFO row is rejected unread, and nothing blocks either
    rows = ["cat/pipe.png,a0,cat", "cat/0.png,a0,cat", "cat/out.png,a0,cat"]
    result = ingest(src, options=OPTS, annotations=write_csv(tmp_path, rows))
    assert result.rejected["reason"].tolist() == ["missing_file", "escapes_root"]
    # the pre-flight check for callers of DVC (which blocks hashing a FIFO): lstat only
    (src / "sub").symlink_to(outside, target_is_directory=True)
    assert special_entries(src) == [
        ("cat/gone.png", "dangling_link"),
        ("cat/out.png", "outside_link"),
        ("cat/pipe.png", "special_file"),
        ("sub", "outside_link"),
    ]


# ---- 15.7: EXIF orientation, decode memory ------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF"])
def test_exif_orientation_in_every_format(fmt: str) -> None:
    pixels = np.zeros((4, 8), dtype=np.uint8)
    pixels[:, :4] = 255  # left half white: stored 8 wide, 4 high
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: rotate 90 degrees clockwise to view
    buf = io.BytesIO()
    lossy = {"quality": 100} if fmt in ("JPEG", "WEBP") else {}
    Image.fromarray(pixels).save(buf, format=fmt, exif=exif, **lossy)
    got, w, h, _ = decode(buf.getvalue(), Ingest(image_size=(8, 4), resample="nearest"))
    assert got.shape == (8, 4, 1) and w * h == 32  # upright: 4 wide, 8 high (TIFF's header: too)
    np.testing.assert_allclose(got[..., 0], np.rot90(pixels, -1), atol=40)


def test_decoded_bytes_over_max_decode_mb_are_oversize() -> None:
    data = png_bytes(np.zeros((1024, 1024), dtype=np.uint8))  # 1 MiB decoded (mode L)
    with pytest.raises(Quarantined, match="decodes to 1048576 bytes > max_decode_mb"):
        decode(data, Ingest(image_size=(8, 8), max_decode_mb=0.5))
    decode(data, Ingest(image_size=(8, 8), max_decode_mb=1))


@pytest.mark.parametrize("mode", ["I;16", "RGBA", "P"])
def test_large_images_are_reduced_before_conversion_to_the_same_picture(mode: str) -> None:
    """A 400 x 400 image (25x the 16 x 16 output) decodes through Image.reduce; the picture is the
    one a direct resize gives, within a grey level or two."""
    base = np.kron(digit(5, 8), np.ones((50, 50), dtype=np.uint8))  # 400 x 400 blocks
    im = {
        "I;16": lambda: Image.fromarray(base.astype(np.uint16) * 257),
        "RGBA": lambda: Image.fromarray(np.dstack([base, base, base, np.full_like(base, 255)])),
        "P": lambda: Image.fromarray(base).convert("P"),
    }[mode]()
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    got = decode(buf.getvalue(), Ingest(image_size=(16, 16)))[0][..., 0]
    direct = np.asarray(Image.fromarray(base).resize((16, 16), Image.Resampling.BILINEAR))
    assert np.abs(got.astype(int) - direct).mean() < 2.0


# ---- 16.5: content duplicates -------------------------------------------------------------------


def test_pixel_identical_and_near_duplicates_share_a_group(tmp_path: Path) -> None:
    picture = digit(1, 16)
    im16 = Image.fromarray(picture.astype(np.uint16) * 257)  # 16-bit grey
    rgba = Image.fromarray(np.dstack([picture] * 3 + [np.full_like(picture, 255)]))  # RGBA
    for name, im in [("cat/a16.png", im16), ("cat/b_rgba.png", rgba)]:
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        write(tmp_path, name, buf.getvalue())
    noisy = np.clip(
        picture.astype(int) + np.random.default_rng(0).integers(-2, 3, (16, 16)), 0, 255
    )
    write(tmp_path, "dog/c_near.png", png_bytes(noisy.astype(np.uint8)))
    for k in range(3):
        write(tmp_path, f"dog/other{k}.png", png_bytes(digit(50 + k, 16)))
    opts = Ingest(image_size=(16, 16), min_class_images=1)
    result = ingest(tmp_path, options=opts)
    groups = result.manifest.set_index("id")["group"].to_dict()
    assert groups == {
        "cat/a16.png": "cat/a16.png",
        "cat/b_rgba.png": "cat/a16.png",
        "dog/c_near.png": "cat/a16.png",
        "dog/other0.png": "dog/other0.png",
        "dog/other1.png": "dog/other1.png",
        "dog/other2.png": "dog/other2.png",
    }
    pairs = result.duplicate_pairs
    assert pairs[["a", "b", "kind"]].values.tolist() == [
        ["cat/a16.png", "cat/b_rgba.png", "pixels"],
        ["cat/a16.png", "dog/c_near.png", "near"],
    ]
    assert pairs["label_b"].tolist() == ["cat", "dog"] and 0 < pairs["distance"][1] <= 2
    m = result.metrics
    assert (m["duplicate_groups"], m["images_in_duplicate_groups"], m["label_conflict_pairs"]) == (
        1, 3, 1
    )  # fmt: skip
    off = opts.model_copy(update={"near_duplicate_bits": None})
    assert ingest(tmp_path, options=off).metrics["near_duplicate_pairs"] == 0


# ---- the stage ----------------------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    make_demo(tmp_path / "data/demo", Demo(max_per_class=24))
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_stage_keeps_id_na_and_writes_pairs(workspace: Path) -> None:
    demo = workspace / "data/demo"
    (demo / "NA").write_bytes(png_bytes(digit(77, 32)))  # an image whose id is `NA`
    with open(demo / "annotations.csv", "a") as f:
        f.write("".join(f"NA,extra{r},3\n" for r in range(3)))
    stage.main()
    manifest = load_manifest(params_path=workspace / "params.yaml")
    assert "NA" in manifest["id"].tolist()
    pairs = pd.read_csv(workspace / "reports/ingest/duplicate_pairs.csv")
    assert pairs.columns.tolist() == ["a", "b", "kind", "distance", "label_a", "label_b"]


def test_stage_fails_after_writing_the_reports_when_too_much_is_lost(workspace: Path) -> None:
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["ingest"]["max_quarantined_fraction"] = 0.01  # the demo's flawed files are ~7%
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(InputError, match=r"kept no content of 11 of \d+ image files"):
        stage.main()
    assert len(pd.read_csv(workspace / "reports/ingest/quarantine.csv")) == 11
