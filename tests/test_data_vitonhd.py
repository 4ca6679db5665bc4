"""VITON-HD / MGD loader: pairs, caption lookup and filter, pose heatmaps, sketches, masks, bad samples."""

import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_data import tiny_tokenizer, truncated_png
from fixtures_vitonhd import (
    CAPTIONS,
    FAINT_PIXELS,
    STROKE_COLS,
    TEST_PAIRS,
    body25_xy,
    sketch_row,
    write_vitonhd,
)
from PIL import Image

from unifashion.data.errors import BadSampleError
from unifashion.data.transforms import ImageTransform
from unifashion.data.vitonhd import (
    VitonHDDataModule,
    coco18_from_body25,
    filter_captions,
    pose_heatmaps,
    sketch_strokes,
)

SIGMA = 2.0


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_vitonhd(tmp_path_factory.mktemp("vitonhd"))


@pytest.fixture
def fresh(tmp_path):
    """A private copy to damage."""
    return write_vitonhd(tmp_path / "vitonhd")


def make(root, **kw):
    kw.setdefault("height", 64)
    kw.setdefault("width", 48)
    kw.setdefault("batch_size", 2)
    kw.setdefault("encoder_image_size", 16)
    kw.setdefault("pose_sigma", SIGMA)
    kw.setdefault("mask_dilation", 2)
    return VitonHDDataModule(str(root), **kw)


def item_of(ds, person_stem):
    [i] = [k for k, p in enumerate(ds.pairs) if p.person_stem == person_stem]
    return ds[i]


def decoded(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


# ---------------------------------------------------------------- pairs and captions

def test_pairs_paired_and_unpaired_and_caption_filter(root, caplog):
    dm = make(root)
    with caplog.at_level(logging.WARNING):
        train = dm.pairs("train", "unpaired")  # training is paired whatever the mode
        paired = dm.pairs("test", "paired")
        unpaired = dm.pairs("test", "unpaired")
    assert [(p.person, p.cloth) for p in train] == [
        ("00001_00.jpg", "00001_00.jpg"),
        ("00002_00.jpg", "00002_00.jpg"),
    ]
    assert [(p.person, p.cloth, p.caption_key) for p in paired] == [
        ("00003_00.jpg", "00003_00.jpg", "00003"),
        ("00004_00.jpg", "00004_00.jpg", "00004"),
        ("00005_00.jpg", "00005_00.jpg", "00005"),
    ]
    # unpaired: cloth and caption id from column 2; 00006 has 2 captions -> its pair is left out
    assert [(p.person, p.cloth, p.caption_key) for p in unpaired] == [
        ("00003_00.jpg", "00004_00.jpg", "00004"),
        ("00005_00.jpg", "00003_00.jpg", "00003"),
    ]
    assert dm.dropped_caption_ids == ["00006"]
    assert dm.caption_filter_counts == {"ids_dropped": 1, "pairs_dropped": 1}
    assert "00006" in caplog.text and "fewer than 3" in caplog.text
    assert sum(dm.skip_counts.values()) == 0


def test_filter_captions_helper():
    data = {"a": ["1", "2", "3"], "b": ["1", "2"], "c": [], "d": ["1", "2", "3", "4"]}
    kept, dropped = filter_captions(data)
    assert kept == {"a": ["1", "2", "3"], "d": ["1", "2", "3", "4"]}
    assert dropped == ["b", "c"]


def test_caption_and_cloth_lookup_paired_vs_unpaired(root):
    paired = make(root, mode="paired").dataset("test")
    unpaired = make(root, mode="unpaired").dataset("test")
    a, b = item_of(paired, "00003_00"), item_of(unpaired, "00003_00")
    assert a["text"] == "black long-sleeve v-neck top, fitted top, ribbed knit"  # person's own id, file order
    assert b["text"] == "white tank top, sleeveless top, scoop neck"  # the cloth's id (00004)
    assert (a["person_id"], a["cloth_id"]) == ("00003_00", "00003_00")
    assert (b["person_id"], b["cloth_id"]) == ("00003_00", "00004_00")
    for item, cloth in ((a, "00003_00"), (b, "00004_00")):
        ref = decoded(root / "test" / "cloth" / f"{cloth}.jpg") / 127.5 - 1  # (H, W, 3)
        assert torch.allclose(item["cloth"], torch.from_numpy(ref).permute(2, 0, 1), atol=1e-6)
    # the person image is the same in both modes, in [-1, 1]
    person = torch.from_numpy(decoded(root / "test" / "image" / "00003_00.jpg") / 127.5 - 1).permute(2, 0, 1)
    assert torch.allclose(a["image"], person, atol=1e-6) and torch.equal(a["image"], b["image"])
    assert a["image"].min() >= -1 and a["image"].max() <= 1


def test_training_captions_are_shuffled_with_seed(root):
    def texts(seed):
        ds = make(root, seed=seed).dataset("train")
        return [ds[0]["text"] for _ in range(12)]

    first = texts(3)
    assert first == texts(3)  # reproducible
    # each text is a permutation of the captions, ", "-joined
    assert all(sorted(t.split(", ")) == sorted(CAPTIONS["00001"]) for t in first)
    assert len(set(first)) > 1  # the order changes between draws


# ---------------------------------------------------------------- pose

def test_pose_heatmaps_against_naive_formula():
    # (x, y); joint 1 missing; joint 2 at y = 0 is present
    pts = torch.tensor([[2.0, 3.0], [0.0, 0.0], [1.5, 0.0]])
    maps = pose_heatmaps(pts, height=5, width=4, sigma=1.5)
    assert maps.shape == (3, 5, 4)
    for j, (x, y) in enumerate(pts.tolist()):
        ref = torch.tensor(
            [[math.exp(-((u - x) ** 2 + (v - y) ** 2) / 1.5**2) for u in range(4)] for v in range(5)]
        )
        if j == 1:
            ref = torch.zeros(5, 4)
        else:
            ref = ref / ref.max()
        assert torch.allclose(maps[j], ref, atol=1e-6), j


def test_body25_to_coco18_index_mapping():
    body = torch.arange(25, dtype=torch.float32)[:, None]  # (25, 1): value = BODY_25 index
    # MGD posemap: COCO i <- BODY_25 i for i <= 7, then 8 -> 9, ..., 17 -> 18 (MidHip 8 unused)
    expected = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]
    assert coco18_from_body25(body).flatten().tolist() == expected


@pytest.mark.parametrize("height,width,factor", [(64, 48, 1), (128, 96, 2)])
def test_pose_map_peaks_at_scaled_keypoints(root, height, width, factor):
    ds = make(root, mode="paired", height=height, width=width).dataset("test")
    big = item_of(ds, "00005_00")["pose_map"]  # keypoints written in 1024 x 768 pixels (x16 of body25_xy)
    small = item_of(ds, "00003_00")["pose_map"]  # keypoints written in 64 x 48 pixels (its own image size)
    assert big.shape == (18, height, width)
    coco_to_body = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]
    for i, j in enumerate(coco_to_body):
        if j == 13:  # written as (0, 0): all-zero map
            assert big[i].abs().max() == 0 and small[i].abs().max() == 0
            continue
        x, y = body25_xy(j)
        # 1024 x 768 -> H x W: x * W / 768, y * H / 1024 (= x16 / 16 * factor)
        px, py = x * factor, y * factor
        flat = int(big[i].argmax())
        assert (flat // width, flat % width) == (py, px), i
        assert big[i, py, px] == pytest.approx(1.0, abs=1e-6)
        assert big[i, py, px + 1] == pytest.approx(math.exp(-1 / SIGMA**2), abs=1e-6)
        assert big[i, py + 2, px + 1] == pytest.approx(math.exp(-5 / SIGMA**2), abs=1e-6)
    torch.testing.assert_close(big, small)


def test_keypoint_source_size_overrides_image_size(root):
    # the small person's keypoints read as if in 128 x 96 pixels: every coordinate is halved at 64 x 48
    ds = make(root, mode="paired", keypoint_source_size=(128, 96)).dataset("test")
    pose = item_of(ds, "00003_00")["pose_map"]
    x, y = body25_xy(4)  # COCO 4 <- BODY_25 4
    flat = int(pose[4].argmax())
    assert (flat // 48, flat % 48) == (y // 2, x // 2)


# ---------------------------------------------------------------- sketches

def test_sketch_rule_by_hand():
    img = Image.fromarray(np.array([[0, 100, 127, 128, 200, 234, 235, 255]], dtype=np.uint8), "L")
    # stroke (1) iff value >= 255 - t
    assert sketch_strokes(img, 20).flatten().tolist() == [0, 0, 0, 0, 0, 0, 1, 1]
    assert sketch_strokes(img, 127).flatten().tolist() == [0, 0, 0, 1, 1, 1, 1, 1]


@pytest.mark.parametrize("mode", ["paired", "unpaired"])
@pytest.mark.parametrize("threshold", [20, 100])
def test_sketch_inversion_strokes_to_one(root, mode, threshold):
    ds = make(root, mode=mode, sketch_threshold_test=threshold).dataset("test")
    sk = item_of(ds, "00003_00")["sketch"]
    expected = torch.zeros(1, 64, 48)
    row = sketch_row("00003_00", None if mode == "paired" else "00004_00")
    expected[0, row, STROKE_COLS[0] : STROKE_COLS[1] + 1] = 1
    for (r, c), v in FAINT_PIXELS.items():
        expected[0, r, c] = float(v >= 255 - threshold)  # 240 always; 200 only when t >= 55
    assert torch.equal(sk, expected)


def test_training_sketch_threshold_is_random_in_range(root):
    ds = make(root, sketch_threshold_train=(20, 127)).dataset("train")
    faint = {int(ds[0]["sketch"][0, 5, 5]) for _ in range(30)}  # value 200: stroke iff t >= 55
    assert faint == {0, 1}
    fixed = make(root, sketch_threshold_train=(20, 20)).dataset("train")
    assert {int(fixed[0]["sketch"][0, 5, 5]) for _ in range(5)} == {0}


# ---------------------------------------------------------------- masks, agnostic, encoder input

def test_masks_from_files(root):
    item = item_of(make(root, mode="paired").dataset("test"), "00004_00")
    box = torch.zeros(1, 64, 48)
    box[0, 12:41, 6:42] = 1  # AGNOSTIC_MASK_BOX, inclusive
    assert torch.equal(item["inpaint_mask"], box)
    cm = np.asarray(Image.open(root / "test" / "cloth-mask" / "00004_00.jpg").convert("L")) >= 128
    assert torch.equal(item["cloth_mask"], torch.from_numpy(cm).float()[None])
    agn = decoded(root / "test" / "agnostic-v3.2" / "00004_00.jpg") / 127.5 - 1
    agn = torch.from_numpy(agn).permute(2, 0, 1)
    assert torch.allclose(item["agnostic"], agn, atol=1e-6)


def test_mask_derived_from_parse_when_no_agnostic_folders(fresh):
    shutil.rmtree(fresh / "test" / "agnostic-mask")
    shutil.rmtree(fresh / "test" / "agnostic-v3.2")
    item = item_of(make(fresh, mode="paired", mask_dilation=2).dataset("test"), "00003_00")
    # garment + arms span rows 12..35, cols 4..43; grown by 2 -> rows 10..37, cols 2..45;
    # pants (fixed, rows 36.., cols 12..35) removed
    expected = torch.zeros(1, 64, 48)
    expected[0, 10:38, 2:46] = 1
    expected[0, 36:38, 12:36] = 0
    assert torch.equal(item["inpaint_mask"], expected)
    assert torch.equal(item["agnostic"], item["image"] * (1 - expected))
    with pytest.raises(FileNotFoundError, match="agnostic-mask"):
        make(fresh, mask_source="file").dataset("test")


def test_image_clip_cloth_or_sketch(root):
    enc = ImageTransform(16, 1.25)
    cloth_item = item_of(make(root, mode="paired").dataset("test"), "00003_00")
    ref = enc(Image.open(root / "test" / "cloth" / "00003_00.jpg").convert("RGB"))
    assert torch.allclose(cloth_item["image_clip"], ref)
    sk_item = item_of(make(root, mode="paired", encoder_input="sketch").dataset("test"), "00003_00")
    drawing = np.full((64, 48), 255, dtype=np.uint8)
    drawing[sketch_row("00003_00", None), STROKE_COLS[0] : STROKE_COLS[1] + 1] = 0  # black strokes on white
    drawing[6, 6] = 0  # the 240 pixel is a stroke at t = 20
    assert torch.allclose(sk_item["image_clip"], enc(Image.fromarray(drawing, "L").convert("RGB")))
    with pytest.raises(ValueError, match="with_sketches"):
        make(root, encoder_input="sketch", with_sketches=False)


# ---------------------------------------------------------------- bad samples

def test_missing_file_raises_naming_it_or_is_skipped_and_counted(fresh):
    missing = fresh / "test" / "openpose_json" / "00003_00_keypoints.json"
    missing.unlink()
    with pytest.raises(BadSampleError, match="00003_00_keypoints.json") as e:
        make(fresh).setup("test")
    assert e.value.path == str(missing) and e.value.reason == "missing_file"
    dm = make(fresh, on_bad_sample="skip")
    dm.setup("test")
    assert [p.person_stem for p in dm.pairs("test", "unpaired")] == ["00005_00"]
    assert dm.skip_counts["missing_file"] == 1


def test_missing_unpaired_sketch_named(fresh):
    (fresh / "test" / "im_sketch_unpaired" / "00005_00_00003_00.png").unlink()
    make(fresh, mode="paired").setup("test")  # paired mode does not need it
    with pytest.raises(BadSampleError, match="00005_00_00003_00.png"):
        make(fresh, mode="unpaired").setup("test")


def test_corrupt_image_dropped_from_batch_and_counted(fresh):
    truncated_png(fresh / "test" / "image" / "00003_00.jpg")
    dm = make(fresh, mode="paired", on_bad_sample="skip", batch_size=3)
    dm.setup("test")
    [batch] = list(dm.test_dataloader())
    assert batch["person_id"] == ["00004_00", "00005_00"]
    assert dm.skip_counts["corrupt_image"] == 1
    with pytest.raises(BadSampleError, match="00003_00.jpg"):
        make(fresh, mode="paired").dataset("test")[0]


def test_malformed_pair_line_and_missing_caption_key(fresh):
    with open(fresh / "test_pairs.txt", "a") as f:
        f.write("\n00004_00.jpg 00003_00.jpg extra\n")
    with pytest.raises(BadSampleError, match=r"test_pairs.txt:5"):
        make(fresh).pairs("test", "unpaired")
    dm = make(fresh, on_bad_sample="skip")
    assert len(dm.pairs("test", "unpaired")) == 2
    assert dm.skip_counts["malformed_line"] == 1

    (fresh / "test_pairs.txt").write_text("".join(f"{p} {c}\n" for p, c in TEST_PAIRS))
    caps = dict(CAPTIONS)
    del caps["00004"]
    (fresh / "captions.json").write_text(json.dumps(caps))
    with pytest.raises(BadSampleError, match="captions.json.*'00004'"):
        make(fresh).pairs("test", "unpaired")
    (fresh / "captions.json").unlink()
    with pytest.raises(BadSampleError, match="captions.json"):
        make(fresh).pairs("test", "paired")


# ---------------------------------------------------------------- loaders

def test_loaders_batch_contract_and_tokenizer(root):
    dm = make(root, mode="unpaired", max_train_items=1, batch_size=1)
    dm.setup("fit")
    dm.set_tokenizer(tiny_tokenizer(["red", "cotton", "top", "crew", "neck", "blue"]), max_length=8)
    train = list(dm.train_dataloader())
    assert len(train) == 1  # seeded subset of 1
    b = train[0]
    assert (b["kind"], b["dataset"]) == ("tryon", "vitonhd")
    shapes = {k: tuple(v.shape) for k, v in b.items() if isinstance(v, torch.Tensor)}
    assert shapes["image"] == shapes["cloth"] == shapes["agnostic"] == (1, 3, 64, 48)
    assert shapes["cloth_mask"] == shapes["inpaint_mask"] == shapes["sketch"] == (1, 1, 64, 48)
    assert shapes["pose_map"] == (1, 18, 64, 48) and shapes["image_clip"] == (1, 3, 16, 16)
    assert shapes["input_ids"][0] == 1 and b["input_ids"].shape == b["attention_mask"].shape
    assert b["person_id"] == b["cloth_id"]  # training is paired
    test = [x for batch in make(root, mode="unpaired").test_dataloader() for x in batch["cloth_id"]]
    assert test == ["00004_00", "00003_00"]
    val = make(root, max_val_items=2)
    assert len(val.val_dataloader().dataset) == 2


def test_without_captions_and_sketches(fresh):
    (fresh / "captions.json").unlink()
    shutil.rmtree(fresh / "test" / "im_sketch")
    shutil.rmtree(fresh / "test" / "im_sketch_unpaired")
    dm = make(fresh, mode="unpaired", with_captions=False, with_sketches=False)
    ds = dm.dataset("test")
    assert len(ds) == 3  # no caption filter without captions
    item = ds[0]
    assert item["text"] == "" and torch.equal(item["sketch"], torch.zeros(1, 64, 48))


def test_invalid_settings():
    bad = ({"mode": "both"}, {"sketch_threshold_train": (130, 20)}, {"mask_source": "x"}, {"pose_sigma": 0})
    for kw in bad:
        with pytest.raises(ValueError):
            make("/nonexistent", **kw)
    with pytest.raises(FileNotFoundError, match="nonexistent"):
        make("/nonexistent").pairs("test", "paired")


def test_fixture_big_sample_is_full_size(root):
    assert Image.open(Path(root) / "test" / "image" / "00005_00.jpg").size == (768, 1024)
