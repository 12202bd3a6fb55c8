"""Ingest: quarantine reasons, mode conversion, rejected CSV rows, duplicates, the outputs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from edge_pipeline.config import load_section
from edge_pipeline.config.quality import Demo, Ingest
from edge_pipeline.core.errors import ConfigError, InputError
from edge_pipeline.quality import duplicates, ingest_outputs
from edge_pipeline.quality.demo_data import make_demo
from edge_pipeline.quality.demo_flaws import bomb_png, corrupt_bytes, png_bytes
from edge_pipeline.quality.images import Quarantined, decode
from edge_pipeline.quality.ingestion import MANIFEST_COLUMNS, ingest
from tasks import ingest as stage

REPO = Path(__file__).resolve().parents[2]
OPTS = Ingest(image_size=(8, 8), min_class_images=1)


def digit(seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


def write(root: Path, rel: str, data: bytes) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(data)


def encode(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def reason_of(data: bytes, opts: Ingest = OPTS) -> str:
    with pytest.raises(Quarantined) as err:
        decode(data, opts)
    return err.value.reason


# ---- quarantine reasons -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (corrupt_bytes("truncated", image=png_bytes(digit(0, 32))), "truncated"),
        (png_bytes(digit(0, 32))[:40], "truncated"),  # cut inside the header chunks
        (corrupt_bytes("not_image"), "undecodable"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 200 + b"IEND\xaeB`\x82", "undecodable"),  # garbage body
        (bomb_png(3000), "oversize"),  # 9 M pixels > max_pixels below, from a tiny file
        (encode(Image.fromarray(digit(1)), "BMP"), "undecodable"),  # a real BMP, not allowed
    ],
    ids=["truncated", "truncated_header", "not_image", "garbage", "bomb", "format_not_allowed"],
)
def test_decode_quarantine_reason(data: bytes, reason: str) -> None:
    opts = Ingest(image_size=(8, 8), formats=["PNG"], max_pixels=1_000_000)
    assert reason_of(data, opts) == reason


def test_file_level_reasons_in_a_run(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src, "a/ok.png", png_bytes(digit(1)))
    write(src, "a/empty.png", corrupt_bytes("zero_byte"))
    write(src, "a/big.png", png_bytes(digit(2, 64)))  # > max_file_mb
    write(src, "b/cut.png", corrupt_bytes("truncated", image=png_bytes(digit(3, 32))))
    write(src, "b/page.png", corrupt_bytes("not_image"))
    write(src, "b/bomb.png", bomb_png(20000))  # beyond Pillow's own hard limit too
    opts = Ingest(image_size=(8, 8), max_file_mb=2000 / 2**20)
    result = ingest(src, options=opts)
    reasons = dict(zip(result.quarantine["path"], result.quarantine["reason"], strict=True))
    assert reasons == {
        "a/empty.png": "zero_byte",
        "a/big.png": "oversize",
        "b/cut.png": "truncated",
        "b/page.png": "undecodable",
        "b/bomb.png": "oversize",
    }
    assert result.manifest["id"].tolist() == ["a/ok.png"]
    assert result.metrics["quarantined_by_reason"] == {
        "zero_byte": 1, "truncated": 1, "undecodable": 1, "oversize": 2, "duplicate": 0,
        "special_file": 0, "dangling_link": 0, "outside_link": 0, "stray_folder": 0,
    }  # fmt: skip
    assert result.metrics["lost_images"] == 5 and result.metrics["lost_images_fraction"] == 0.8333


# ---- mode conversion ----------------------------------------------------------------------------


def luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, the documented L conversion."""
    return rgb @ np.array([0.299, 0.587, 0.114])


RGB = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 200, 90]]], dtype=np.uint8)
ALPHA = np.array([[255, 0], [128, 64]], dtype=np.uint8)


def over_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """float (H, W, C) of `colour` composited on white with uint8 (H, W) `alpha`."""
    a = alpha[..., None] / 255
    return colour * a + 255 * (1 - a)


OVER_WHITE = over_white(RGB, ALPHA)


def p_image() -> Image.Image:
    im = Image.frombytes("P", (2, 2), bytes([0, 1, 2, 3]))
    im.putpalette(RGB.reshape(-1).tobytes())
    return im


def p_transparent() -> Image.Image:
    im = p_image()
    im.info["transparency"] = 1  # palette index 1 (green, top right) is see-through
    return im


CASES = {  # mode: (image, expected RGB float (2, 2, 3) in the source's colours)
    "L": (
        Image.fromarray(luma(RGB).round().astype(np.uint8)),
        np.repeat(luma(RGB)[..., None], 3, 2),
    ),
    "RGB": (Image.fromarray(RGB), RGB.astype(float)),
    "RGBA": (Image.fromarray(np.dstack([RGB, ALPHA])), OVER_WHITE),
    "LA": (
        Image.fromarray(np.dstack([RGB[..., 0], ALPHA])).convert("LA"),
        np.repeat(over_white(RGB[..., :1], ALPHA), 3, 2),
    ),
    "P": (p_image(), RGB.astype(float)),
    "P_transparency": (p_transparent(), np.where([[[0], [1]], [[0], [0]]], 255.0, RGB)),
    "CMYK": (
        Image.fromarray(
            np.array([[[0, 0, 0, 0], [0, 0, 0, 255]], [[255, 0, 0, 0], [0, 255, 255, 0]]], "u1"),
            "CMYK",
        ),
        np.array([[[255, 255, 255], [0, 0, 0]], [[0, 255, 255], [255, 0, 0]]], dtype=float),
    ),
    "I;16": (
        Image.fromarray(np.array([[0, 65535], [32768, 257 * 77]], dtype=np.uint16)),
        np.repeat(np.array([[0, 255], [128, 77]], dtype=float)[..., None], 3, 2),
    ),
    "1": (
        Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)).convert("1"),
        np.repeat(np.array([[0, 255], [255, 0]], dtype=float)[..., None], 3, 2),
    ),
}  # fmt: skip


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("case", list(CASES))
def test_every_mode_converts(case: str, channels: int) -> None:
    im, expected_rgb = CASES[case]
    fmt = "TIFF" if im.mode == "CMYK" else "PNG"  # PNG has no CMYK
    data = encode(im, fmt)
    pixels, w, h, mode = decode(data, Ingest(image_size=(2, 2), channels=channels))
    assert (w, h) == (2, 2) and pixels.dtype == np.uint8 and pixels.shape == (2, 2, channels)
    expected = luma(expected_rgb)[..., None] if channels == 1 else expected_rgb
    np.testing.assert_allclose(pixels, expected, atol=1.01)
    assert mode == Image.open(io.BytesIO(data)).mode


def test_resize_is_height_by_width() -> None:
    pixels, w, h, _ = decode(png_bytes(digit(0, 30)), Ingest(image_size=(12, 20), channels=3))
    assert pixels.shape == (12, 20, 3) and (w, h) == (30, 30)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"channels": 2}, r"ingest\.channels=2: Input should be 1 or 3"),
        ({"formats": ["PNG", "NOPE"]}, r"ingest\.formats=\['PNG', 'NOPE'\]: .*unknown to Pillow"),
        ({"resample": "magic"}, r"ingest\.resample='magic': Input should be 'nearest'"),
        ({"image_size": [8, 0]}, r"ingest\.image_size\.1=0: Input should be greater than 0"),
        ({"max_pixel": 10}, r"ingest\.max_pixel: not an option; did you mean max_pixels\?"),
    ],
)
def test_bad_params_name_the_key(tmp_path: Path, options: dict, match: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"ingest": options}))
    with pytest.raises(ConfigError, match=match):
        load_section("ingest", path)


# ---- annotation rows ----------------------------------------------------------------------------


def test_rows_rejected_with_their_csv_line(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src, "imgs/a.png", png_bytes(digit(1)))
    write(src, "imgs/b.png", png_bytes(digit(2)))
    write(tmp_path / "outside", "secret.png", png_bytes(digit(3)))
    (src / "imgs/link.png").symlink_to(tmp_path / "outside/secret.png")
    csv = (
        "image,annotator,label\n"  # line 1
        "imgs/a.png,ann1,cat\n"  # 2 ok
        "../outside/secret.png,ann1,cat\n"  # 3
        f"{tmp_path / 'outside/secret.png'},ann1,dog\n"  # 4
        "imgs/../../outside/secret.png,ann2,dog\n"  # 5
        '"imgs/b.png",ann1,"dog\n"\n'  # 6-7: a quoted label spanning two lines (kept)
        "imgs/missing.png,ann2,cat\n"  # 8
        "C:\\data\\a.png,ann2,cat\n"  # 9
        "imgs/link.png,ann2,cat\n"  # 10: a symlink out of the root
        "imgs/a.png,,cat\n"  # 11
        "./imgs/a.png,ann1,dog\n"  # 12: same image and annotator as line 2
        "imgs/a.png,ann2,cat\n"  # 13 ok
    )
    (src / "labels.csv").write_text(csv)
    result = ingest(src, options=OPTS, annotations=src / "labels.csv")
    rejected = result.rejected.set_index("line")["reason"].to_dict()
    assert rejected == {
        3: "escapes_root",
        4: "absolute_path",
        5: "escapes_root",
        8: "missing_file",
        9: "absolute_path",
        10: "escapes_root",
        11: "empty_field",
        12: "repeat_rating",
    }
    assert result.annotations.values.tolist() == [
        ["imgs/a.png", "ann1", "cat"],
        ["imgs/b.png", "ann1", "dog"],
        ["imgs/a.png", "ann2", "cat"],
    ]
    assert result.metrics["unlabeled_files"] == 1  # the symlink file is never read
    assert result.manifest["label"].tolist() == ["", ""]  # labels live in annotations.csv


@pytest.mark.parametrize("header", ["image,label\n", "path,annotator,label\n", ""])
def test_malformed_csv_names_file_and_header(tmp_path: Path, header: str) -> None:
    write(tmp_path, "x/a.png", png_bytes(digit(1)))
    (tmp_path / "labels.csv").write_text(header + "x/a.png,cat\n" * bool(header))
    with pytest.raises(InputError, match=r"labels\.csv.*image,annotator,label"):
        ingest(tmp_path, options=OPTS, annotations=tmp_path / "labels.csv")


# ---- duplicates ---------------------------------------------------------------------------------


def test_identical_duplicates_kept_once_conflicts_quarantined(tmp_path: Path) -> None:
    same, clash = png_bytes(digit(1)), png_bytes(digit(2))
    write(tmp_path, "cat/1.png", same)
    write(tmp_path, "cat/1_copy.png", same)  # same label: kept once
    write(tmp_path, "cat/2.png", clash)
    write(tmp_path, "dog/2.png", clash)  # conflicting label: both out
    write(tmp_path, "dog/3.png", png_bytes(digit(3)))
    result = ingest(tmp_path, options=OPTS)
    assert result.manifest["id"].tolist() == ["cat/1.png", "dog/3.png"]
    q = result.quarantine.set_index("path")
    assert q["reason"].to_dict() == {
        "cat/1_copy.png": "duplicate",
        "cat/2.png": "duplicate",
        "dog/2.png": "duplicate",
    }
    assert "cat/2.png=cat" in q.loc["dog/2.png", "detail"]
    assert "dog/2.png=dog" in q.loc["dog/2.png", "detail"]
    assert result.metrics["duplicates_kept_once"] == 1
    np.testing.assert_array_equal(result.images[0, ..., 0], digit(1))


def test_duplicates_by_majority_label_with_annotations(tmp_path: Path) -> None:
    img = png_bytes(digit(4))
    write(tmp_path, "i/a.png", img)
    write(tmp_path, "i/b.png", img)
    write(tmp_path, "i/c.png", png_bytes(digit(5)))
    rows = ["a.png,x,cat", "a.png,y,cat", "a.png,z,dog", "b.png,x,dog", "c.png,x,cat"]
    (tmp_path / "l.csv").write_text("image,annotator,label\n" + "".join(f"i/{r}\n" for r in rows))
    result = ingest(tmp_path, options=OPTS, annotations=tmp_path / "l.csv")
    assert result.manifest["id"].tolist() == ["i/c.png"]
    assert set(result.quarantine["reason"]) == {"duplicate"}
    assert result.annotations["id"].tolist() == ["i/c.png"]


def test_near_pairs_equal_a_brute_force_search() -> None:
    rng = np.random.default_rng(0)
    n = 400  # clustered hashes: some band buckets are big (broadcast), most small (all at once)
    centres = rng.integers(0, 2**63, 3, dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, (n, 3)).astype(np.uint64)
    hashes = centres[rng.integers(0, 3, n)] ^ flips[:, 0] ^ flips[:, 1] ^ flips[:, 2]
    hashes[::5] = rng.integers(0, 2**63, len(hashes[::5]), dtype=np.uint64)
    images = (rng.integers(0, 2, (n, 4, 4, 1)) * 3).astype(np.uint8)  # mad 0..3
    fresh = rng.random(n) < 0.3
    dist = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    mad = np.abs(images.reshape(n, 1, -1).astype(int) - images.reshape(1, n, -1)).mean(2)
    i, j = np.nonzero(np.triu((dist <= 6) & (mad <= 1.5), k=1))
    for only in (None, fresh):
        pairs, d = duplicates.near_pairs(images, hashes, max_bits=6, max_mad=1.5, fresh=only)
        want = (i, j) if only is None else (i[only[i] | only[j]], j[only[i] | only[j]])
        assert pairs.tolist() == np.stack(want, 1).tolist() and len(pairs) > 50
        np.testing.assert_allclose(d, mad[pairs[:, 0], pairs[:, 1]], atol=5e-4)


def test_groups_are_the_smallest_member_of_each_component() -> None:
    a, b = np.array([5, 1, 7, 3, 8]), np.array([3, 5, 9, 1, 7])  # {1, 3, 5}, {7, 8, 9}
    assert duplicates.smallest_member(10, a, b).tolist() == [0, 1, 2, 1, 4, 1, 6, 7, 7, 7]


# ---- labels from folders, evaluation truth, empty input -----------------------------------------


def test_imagefolder_labels_and_truth(tmp_path: Path) -> None:
    write(tmp_path, "zebra/1.png", png_bytes(digit(1)))
    write(tmp_path, "ant/2.png", png_bytes(digit(2)))
    write(tmp_path, "ant/sub/3.png", png_bytes(digit(3)))  # a stray sub-folder: no class
    write(tmp_path, "train/bee/6.png", png_bytes(digit(6)))  # innermost folder names the class
    write(tmp_path, "loose.png", png_bytes(digit(4)))  # in no class folder
    write(tmp_path, "ant/notes.txt", b"hello")
    write(tmp_path, ".cache/5.png", png_bytes(digit(5)))  # hidden: skipped
    (tmp_path / "truth.csv").write_text("image,label\nant/2.png,ant\nzebra/1.png,horse\n")
    result = ingest(tmp_path, options=OPTS, truth=tmp_path / "truth.csv")
    m = result.manifest.set_index("id")
    assert m["label"].to_dict() == {
        "ant/2.png": "ant",
        "train/bee/6.png": "bee",
        "zebra/1.png": "zebra",
    }
    assert m["true_label"].to_dict() == {
        "ant/2.png": "ant",
        "train/bee/6.png": "",
        "zebra/1.png": "horse",
    }
    assert result.classes == ["ant", "bee", "horse", "zebra"]
    q = result.quarantine.set_index("path")
    assert q.loc["ant/sub/3.png", "reason"] == "stray_folder"
    assert "ant/sub/ is no class: sub-folder of ant/" in q.loc["ant/sub/3.png", "detail"]
    assert result.annotations.empty and result.metrics["labels"] == "imagefolder"
    assert result.metrics["unlabeled_files"] == 1
    assert result.metrics["other_files"] == 2  # notes.txt and truth.csv
    assert result.images.shape == (3, 8, 8, 1)
    np.testing.assert_array_equal(result.images[0, ..., 0], digit(2))
    assert m["sha256"].str.len().eq(64).all() and (m["width"] == 8).all()
    assert (m["group"] == m.index).all()  # no duplicates: each image is its own group


def test_nothing_usable_is_a_clear_error(tmp_path: Path) -> None:
    write(tmp_path, "a/1.png", b"")
    write(tmp_path, "a/2.png", corrupt_bytes("not_image"))
    with pytest.raises(InputError, match=r"nothing usable.*'zero_byte': 1.*'undecodable': 1"):
        ingest(tmp_path, options=OPTS)
    with pytest.raises(ConfigError, match="ingest.source=.*not a directory"):
        ingest(tmp_path / "nope", options=OPTS)


# ---- the stage ----------------------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace with a tiny demo in data/demo and the repo's params.yaml."""
    make_demo(tmp_path / "data/demo", Demo(max_per_class=10))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"]["max_quarantined_fraction"] = 0.2  # 11 flawed files of 74 in this tiny demo
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_main_on_the_demo(workspace: Path) -> None:
    stage.main()
    data = workspace / "data/ingest"
    manifest = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    assert manifest.columns.tolist() == MANIFEST_COLUMNS
    images = np.load(data / "images.npy")
    assert images.dtype == np.uint8 and images.shape == (len(manifest), 16, 16, 1)
    classes = json.loads((data / "classes.json").read_text())
    assert classes == [str(k) for k in range(10)]
    ann = pd.read_csv(data / "annotations.csv", dtype=str)
    assert set(ann["id"]) == set(manifest["id"])

    # Every injected broken file is quarantined for the matching reason; nothing else is.
    truth = pd.read_csv(workspace / "data/demo/truth.csv", dtype=str, keep_default_na=False)
    expect = {"zero_byte": "zero_byte", "truncated": "truncated", "not_image": "undecodable",
              "bomb": "oversize", "duplicate_conflict": "duplicate"}  # fmt: skip
    broken = truth[truth["flaw"].isin(list(expect))]
    q = pd.read_csv(workspace / "reports/ingest/quarantine.csv").set_index("path")["reason"]
    assert all(q[img] == expect[flaw] for img, flaw in broken[["image", "flaw"]].values)
    assert len(q) == len(broken) + 2  # + the originals of the 2 misfiled duplicates
    good = truth[~truth["image"].isin(q.index)]
    assert sorted(manifest["id"]) == sorted(good["image"])
    true = good.set_index("image")["label"]
    assert (manifest.set_index("id")["true_label"] == true[manifest["id"]].to_numpy()).all()

    # Rejected rows carry the line where the CSV really has them.
    rejected = pd.read_csv(workspace / "reports/ingest/rejected_rows.csv")
    lines = (workspace / "data/demo/annotations.csv").read_text().splitlines()
    assert sorted(rejected["reason"]) == ["absolute_path", "escapes_root", "missing_file"]
    assert all(lines[n - 1].startswith(img + ",") for n, img in rejected[["line", "image"]].values)

    metrics = json.loads((workspace / "metrics/ingest.json").read_text())
    assert metrics["kept"] == len(manifest) and metrics["rejected_rows"] == 3
    assert metrics["images_per_s"] > 0
    dist = pd.read_csv(workspace / "plots/ingest/class_distribution.csv", dtype={"class": str})
    assert dist["true"].sum() == len(manifest) and dist["given"].sum() == len(manifest)
    assert (workspace / "plots/ingest/class_distribution.png").stat().st_size > 1000


def test_main_imagefolder_mode_rgb(workspace: Path) -> None:
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["ingest"].update({"annotations": None, "channels": 3, "image_size": [8, 12]})
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    stage.main()
    manifest = pd.read_csv(workspace / "data/ingest/manifest.csv", dtype=str)
    assert (manifest["label"] == manifest["id"].str.split("/").str[1]).all()
    assert np.load(workspace / "data/ingest/images.npy").shape == (len(manifest), 8, 12, 3)


def test_missing_annotations_file_is_a_config_error(workspace: Path) -> None:
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["ingest"]["annotations"] = "labels.csv"
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="ingest.annotations.*null"):
        stage.main()


def test_failed_write_leaves_no_partial_output(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_save(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ingest_outputs.np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        stage.main()
    assert sorted(p.name for p in (workspace / "data").iterdir()) == ["demo"]
    assert not (workspace / "metrics").exists()
