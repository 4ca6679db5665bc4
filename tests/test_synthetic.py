"""Synthetic benchmark: official layouts, determinism, attribute ground truth, quirks."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from unifashion.data.synthetic import fashiongen
from unifashion.data.synthetic.attributes import (
    COLOURS,
    FITS,
    PATTERNS,
    SUBCATEGORY_BY_NAME,
    n_combinations,
    sample_garment,
    secondary_options,
)
from unifashion.data.synthetic.benchmark import SCALES, write_benchmark
from unifashion.data.synthetic.render import Frame, Pose, draw_garment, render_garment

SEED = 3


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "a"
    summary = write_benchmark(out, seed=SEED, scale="tiny", progress=False)
    assert "fashiongen" in str(summary) and summary.bytes["fashiongen"] > 0
    return out


# ---- determinism ------------------------------------------------------------------------------------

def test_same_seed_gives_identical_bytes(bench, tmp_path):
    again = tmp_path / "b"
    write_benchmark(again, seed=SEED, scale="tiny", progress=False, workers=1)  # bytes independent of workers
    a, b = _hashes(bench), _hashes(again)
    assert len(a) > 100 and a == b


def test_other_seed_differs(bench, tmp_path):
    other = tmp_path / "c"
    write_benchmark(other, seed=SEED + 1, scale="tiny", datasets=("fashiongen",), progress=False)
    a, c = _hashes(bench / "fashiongen"), _hashes(other / "fashiongen")
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)


# ---- FashionGen -------------------------------------------------------------------------------------

TEXT_KEYS = {"input_description", "input_concat_description", "input_name", "input_category", "input_subcategory",
             "input_pose", "input_brand", "input_composition", "input_department", "input_gender", "input_season"}


@pytest.mark.parametrize("split", ["train", "validation"])
def test_fashiongen_keys_dtypes_shapes(bench, split):
    with h5py.File(bench / "fashiongen" / f"fashiongen_256_256_{split}.h5", "r") as f:
        assert set(f.keys()) == TEXT_KEYS | {"input_image", "input_productID", "input_msrpUSD", "index", "index_2"}
        n = f["input_image"].shape[0]
        assert n > 0 and f["input_image"].shape == (n, 256, 256, 3) and f["input_image"].dtype == np.uint8
        for key in TEXT_KEYS:
            assert f[key].shape == (n, 1) and f[key].dtype.kind == "S", key
            assert isinstance(f[key][0][0], np.bytes_)
        assert f["input_productID"].shape == (n, 1) and f["input_productID"].dtype.kind == "i"
        assert f["index"].shape == (n, 1) and f["index"][:, 0].tolist() == list(range(n))
        assert f["index_2"].shape == (n,) and f["index_2"].dtype.kind == "i"
        assert f["input_msrpUSD"].shape == (n, 1) and f["input_msrpUSD"].dtype == np.float32
        cats = {v[0].decode("latin-1") for v in f["input_category"][:]}
        subs = {v[0].decode("latin-1") for v in f["input_subcategory"][:]}
        assert all(c == c.upper() for c in cats | subs)


def test_fashiongen_latin1_bytes(bench):
    with h5py.File(bench / "fashiongen" / "fashiongen_256_256_train.h5", "r") as f:
        values = [v[0] for key in ("input_brand", "input_name") for v in f[key][:]]
    non_ascii = [v for v in values if any(b >= 0x80 for b in v)]
    assert non_ascii, "expected some non-ASCII latin-1 bytes"
    decoded = [v.decode("latin-1") for v in non_ascii]
    assert any(ch in "".join(decoded) for ch in "éèçêëñåüö")
    with pytest.raises(UnicodeDecodeError):
        for v in non_ascii:
            v.decode("utf-8")  # latin-1, not UTF-8


def test_fashiongen_contiguous_products_and_views(bench):
    for split in ("train", "validation"):
        with h5py.File(bench / "fashiongen" / f"fashiongen_256_256_{split}.h5", "r") as f:
            pids = f["input_productID"][:, 0].tolist()
            images = f["input_image"][:]
            subs = [v[0] for v in f["input_subcategory"][:]]
        runs = [(k, len(list(g))) for k, g in itertools.groupby(pids)]
        assert len({k for k, _ in runs}) == len(runs), "a product's rows must be contiguous"
        assert all(2 <= n <= 4 for _, n in runs)
        start = 0
        for _, n in runs:
            block = images[start:start + n].astype(np.int16)
            assert len({subs[i] for i in range(start, start + n)}) == 1
            for i, j in itertools.combinations(range(n), 2):
                assert np.abs(block[i] - block[j]).mean() > 2.0, "views of one product must differ"
            start += n


def test_fashiongen_sidecar_matches_rows(bench):
    recs = _jsonl(bench / "fashiongen" / "attributes.jsonl")
    for split in ("train", "validation"):
        name = f"fashiongen_256_256_{split}.h5"
        mine = [r for r in recs if r["split"] == split]
        with h5py.File(bench / "fashiongen" / name, "r") as f:
            n = f["input_image"].shape[0]
            assert [r["row"] for r in mine] == list(range(n))
            assert [r["image"] for r in mine] == [f"{name}#{i}" for i in range(n)]
            for r, desc, sub, pid in zip(mine, f["input_description"][:, 0], f["input_subcategory"][:, 0],
                                         f["input_productID"][:, 0]):
                assert r["captions"]["professional"] == desc.decode("latin-1")
                assert r["garment"]["subcategory"] == sub.decode("latin-1") and r["product_id"] == int(pid)
                assert r["garment"]["primary_colour"] in desc.decode("latin-1")


def test_small_scale_validation_subcategories_exceed_100():
    spec = SCALES["small"].fashiongen
    products = fashiongen.plan(spec, 0, "validation")
    counts = Counter(p.garment.subcategory for p in products)
    assert 5 <= len(counts) <= 6 and min(counts.values()) > 100
    assert 2000 <= len(products) + len(fashiongen.plan(spec, 0, "train")) <= 4000  # a few thousand products
    # the products of one sub-category are (almost) all different attribute combinations
    for sub in counts:
        combos = [p.garment.combination() for p in products if p.garment.subcategory == sub]
        assert len(set(combos)) >= 0.95 * len(combos)


# ---- attributes and rendering ----------------------------------------------------------------------

def test_combination_count_matches_enumeration():
    sub = SUBCATEGORY_BY_NAME["T-SHIRTS"]
    naive = 0
    for primary, pattern in itertools.product(COLOURS, PATTERNS):
        n_sec = 1 if pattern == "solid" else sum(
            1 for c in COLOURS if c != primary and np.linalg.norm(np.subtract(COLOURS[c], COLOURS[primary])) >= 90)
        naive += n_sec * len(sub.sleeves) * len(sub.lengths) * len(sub.necklines) * len(FITS)
    assert n_combinations(sub) == naive > 10_000
    rng = np.random.default_rng(0)
    for i in range(200):
        g = sample_garment(rng, i, sub)
        assert (g.secondary_colour is None) == (g.pattern == "solid")
        assert g.pattern == "solid" or g.secondary_colour in secondary_options(g.primary_colour)
        assert g.sleeve_length in sub.sleeves and g.length in sub.lengths and g.neckline in sub.necklines


def _variant(**changes):
    base = sample_garment(np.random.default_rng(1), 7, "A-LINE DRESSES")
    fields = {**base.attributes(), "product_id": 7, **changes}
    return type(base)(**fields)


def test_render_shows_attributes():
    frame = Frame.product("dress", 128, 128)

    def area(g):
        return draw_garment(g, frame, 128, 128, Pose())[1].sum()

    def lowest_row(g):
        return np.flatnonzero(draw_garment(g, frame, 128, 128, Pose())[1].any(axis=1)).max()

    plain = _variant(pattern="solid", secondary_colour=None, primary_colour="red", sleeve_length="sleeveless",
                     length="mini", fit="regular")
    rgb, mask = draw_garment(plain, frame, 128, 128)
    inside = rgb[mask]
    assert (np.abs(inside.astype(int) - COLOURS["red"]).sum(axis=1) == 0).mean() > 0.8
    striped = _variant(pattern="vertical stripes", secondary_colour="white", primary_colour="red",
                       sleeve_length="sleeveless", length="mini", fit="regular")
    rgb, mask = draw_garment(striped, frame, 128, 128)
    white = (np.abs(rgb[mask].astype(int) - COLOURS["white"]).sum(axis=1) == 0).mean()
    assert 0.2 < white < 0.6
    assert area(_variant(**{**plain.attributes(), "sleeve_length": "long"})) > area(plain) * 1.1
    assert lowest_row(_variant(**{**plain.attributes(), "length": "maxi"})) > lowest_row(plain) + 20
    assert area(_variant(**{**plain.attributes(), "fit": "loose"})) > area(_variant(**{**plain.attributes(),
                                                                                       "fit": "slim"}))
    crew, vneck = (_variant(**{**plain.attributes(), "neckline": n}) for n in ("crew neck", "v-neck"))
    assert area(vneck) < area(crew)
    img = render_garment(plain, (256, 256))
    assert img.size == (256, 256) and img.mode == "RGB"


# ---- Fashion200K -----------------------------------------------------------------------------------

def test_fashion200k_layout_and_queries(bench):
    root = bench / "fashion200k"
    stems = ("dress", "jacket", "pants", "skirt", "top")
    captions: dict[str, dict[str, str]] = {"train": {}, "test": {}}
    for stem, split in itertools.product(stems, ("train", "test")):
        for line in (root / "labels" / f"{stem}_{split}_detect_all.txt").read_text().splitlines():
            path, score, desc = line.split("\t")
            assert re.fullmatch(r"-?\d+\.\d{6}", score)
            assert re.fullmatch(r"women/(dresses|jackets|pants|skirts|tops)/[a-z_-]+/(\d+)/\2_\d+\.jpeg", path), path
            assert (root / path).is_file() and desc == desc.lower()
            captions[split][path] = desc
    assert not set(captions["train"]) & set(captions["test"])
    queries = [q.split() for q in (root / "test_queries.txt").read_text().splitlines()]
    assert queries
    side = {r["image"]: r for r in _jsonl(root / "attributes.jsonl")}
    assert set(side) == set(captions["train"]) | set(captions["test"])
    for src, tgt in queries:
        a, b = captions["test"][src].split(), captions["test"][tgt].split()
        diff = [(x, y) for x, y in zip(a, b) if x != y]
        assert len(a) == len(b) and len(diff) == 1
        ga, gb = side[src]["garment"], side[tgt]["garment"]
        if ga["primary_colour"] != gb["primary_colour"]:
            assert diff[0] == (ga["primary_colour"], gb["primary_colour"])
    with Image.open(root / queries[0][0]) as im:
        assert im.format == "JPEG" and im.mode == "RGB"


# ---- Fashion-IQ ------------------------------------------------------------------------------------

def test_fashioniq_layout_and_quirks(bench):
    root = bench / "fashioniq" / "fashionIQ_dataset"
    all_caps = []
    splits = {}
    for cat, split in itertools.product(("dress", "shirt", "toptee"), ("train", "val", "test")):
        items = json.loads((root / "captions" / f"cap.{cat}.{split}.json").read_text())
        names = json.loads((root / "image_splits" / f"split.{cat}.{split}.json").read_text())
        splits[(cat, split)] = set(names)
        assert items and len(names) == len(set(names))
        for it in items:
            assert set(it) == ({"candidate", "captions"} if split == "test" else {"candidate", "target", "captions"})
            assert len(it["captions"]) == 2 and it["candidate"] in names
            if split != "test":
                assert it["target"] in names and it["target"] != it["candidate"]
            all_caps += [(split, c) for c in it["captions"]]
        for n in names:
            assert re.fullmatch(r"B00[0-9A-Z]{7}", n) and (root / "images" / f"{n}.png").is_file()
    texts = [c for _, c in all_caps]
    assert any(not c.strip() for s, c in all_caps if s in ("train", "val"))
    assert any(c.startswith(" ") and c.strip() for c in texts)
    assert any(c.strip() and c.rstrip()[-1] in ".!," for c in texts)
    assert any(c.strip() and c.strip()[0].isupper() for c in texts)
    assert splits[("shirt", "val")] & splits[("toptee", "val")]
    assert not splits[("dress", "val")] & splits[("shirt", "val")]
    side = _jsonl(root / "attributes.jsonl")
    assert len(side) == len({r["asin"] for r in side}) == len(list((root / "images").glob("*.png")))
    shared = [r for r in side if len(r["categories"]) > 1]
    assert shared and all(set(r["categories"]) == {"shirt", "toptee"} and r["split"] == "val" for r in shared)


def test_fashioniq_modifying_texts_match_attributes(bench):
    root = bench / "fashioniq" / "fashionIQ_dataset"
    garments = {r["asin"]: r["garment"] for r in _jsonl(root / "attributes.jsonl")}
    checked = 0
    for cat, split in itertools.product(("dress", "shirt", "toptee"), ("train", "val")):
        for it in json.loads((root / "captions" / f"cap.{cat}.{split}.json").read_text()):
            ref, tgt = garments[it["candidate"]], garments[it["target"]]
            diff = [k for k in ref if ref[k] != tgt[k]]
            assert diff, "target must differ from reference"
            for j, cap in enumerate(it["captions"]):
                words = set(re.findall(r"[a-z]+", cap.lower()))
                if not words:
                    continue
                named = words & set(COLOURS)
                assert named <= {tgt["primary_colour"], tgt["secondary_colour"]}, (cap, tgt)
                if "primary_colour" in diff:
                    assert tgt["primary_colour"] in words, (cap, ref, tgt)
                if j == 0 and "sleeve_length" in diff:
                    assert words & {"sleeves", "sleeveless"}
                if j == 0 and "fit" in diff:
                    assert words & {"looser", "tighter"}
                checked += 1
    assert checked > 10


def test_fashioniq_cap_files_are_read_by_the_loader(bench):
    from unifashion.data.fashioniq import FashionIQDataModule

    root = bench / "fashioniq" / "fashionIQ_dataset"
    side = {r["asin"]: r for r in _jsonl(root / "attributes.jsonl")}
    for cat, split in itertools.product(("dress", "shirt", "toptee"), ("train", "val")):
        entries = json.loads((root / f"next_llava.{split}.{cat}.caption.json").read_text())
        listed = json.loads((root / "image_splits" / f"split.{cat}.{split}.json").read_text())
        assert [e["image"] for e in entries] == listed  # every image of the split, once, in order
        for e in entries:
            assert e["caption"] == side[e["image"]]["captions"]["detailed"] and e["text_guidance"] == ""
    assert not list(root.glob("next_llava.test.*"))
    dm = FashionIQDataModule(root=str(bench / "fashioniq"), image_size=16,
                             captions_file="next_llava.train.dress.caption.json")
    pairs = dm.caption_pairs()
    entries = json.loads((root / "next_llava.train.dress.caption.json").read_text())
    assert len(pairs) == len(entries)
    assert pairs[0]["text"] == entries[0]["caption"]


# ---- VITON-HD -------------------------------------------------------------------------------------

def test_vitonhd_layout(bench):
    root = bench / "vitonhd"
    train = [line.split() for line in (root / "train_pairs.txt").read_text().splitlines()]
    test = [line.split() for line in (root / "test_pairs.txt").read_text().splitlines()]
    assert all(a == b for a, b in train) and all(a != b for a, b in test)
    assert {b for _, b in test} == {a for a, _ in test}
    caps = json.loads((root / "captions.json").read_text())
    assert sorted(Counter(len(v) for v in caps.values()).items())[0] == (2, 1)
    assert all(re.fullmatch(r"\d{5}", k) and all(c == c.lower() for c in v) for k, v in caps.items())
    side = {r["image"]: r for r in _jsonl(root / "attributes.jsonl")}
    assert len(side) == len(train) + len(test)
    for split, pairs in (("train", train), ("test", test)):
        for person, cloth in pairs:
            stem = person[:-4]
            assert stem[:5] in caps
            base = root / split
            for rel in (f"image/{person}", f"cloth/{person}", f"cloth-mask/{person}", f"agnostic-v3.2/{person}",
                        f"image-densepose/{person}", f"openpose_img/{stem}_rendered.png"):
                assert (base / rel).is_file(), rel
            img = np.asarray(Image.open(base / "image" / person).convert("RGB")).astype(int)
            h, w = img.shape[:2]
            assert h * 3 == w * 4
            parse = Image.open(base / "image-parse-v3" / f"{stem}.png")
            assert parse.mode == "P" and parse.size == (w, h)
            labels = np.asarray(parse)
            assert labels.max() <= 19 and {2, 5, 13} <= set(np.unique(labels).tolist())
            agn = np.asarray(Image.open(base / "image-parse-agnostic-v3.2" / f"{stem}.png"))
            assert Image.open(base / "image-parse-agnostic-v3.2" / f"{stem}.png").mode == "P"
            assert not np.isin(agn, (5, 14, 15)).any() and (agn[labels == 13] == 13).all()
            mask = np.asarray(Image.open(base / "agnostic-mask" / f"{stem}_mask.png"))
            assert mask[labels == 5].min() == 255 and mask[labels == 13].mean() < 128
            # the garment colours are where the parse says upper-clothes
            g = side[f"{split}/image/{person}"]["garment"]
            cols = np.array([COLOURS[c] for c in (g["primary_colour"], g["secondary_colour"]) if c])
            dist = np.abs(img[labels == 5][:, None, :] - cols[None]).sum(-1).min(1)
            assert np.median(dist) < 40
            kp = json.loads((base / "openpose_json" / f"{stem}_keypoints.json").read_text())
            pts = np.array(kp["people"][0]["pose_keypoints_2d"]).reshape(25, 3)
            assert len(kp["people"][0]["pose_keypoints_2d"]) == 75
            seen = pts[pts[:, 2] > 0]
            assert len(seen) >= 15 and (seen[:, 0] < w).all() and (seen[:, 1] < h).all()
            assert (pts[11] == 0).all() and labels[int(pts[0, 1]), int(pts[0, 0])] == 13  # ankle off-image; nose on face
            sketch = Image.open(base / "im_sketch" / f"{stem}.png")
            s = np.asarray(sketch)
            assert sketch.mode == "L" and (s < 50).mean() > 0.85 and (s > 200).sum() > 50
            if split == "test":
                un = Image.open(base / "im_sketch_unpaired" / f"{stem}_{cloth[:-4]}.png")
                assert un.mode == "L" and (np.asarray(un) > 200).sum() > 50


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="scale"):
        write_benchmark(tmp_path, scale="huge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown datasets"):
        write_benchmark(tmp_path, scale="tiny", datasets=("mnist",))
