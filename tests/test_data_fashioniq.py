"""Fashion-IQ loader: caption joins, galleries, queries, extensions, bad-sample policy."""

import json
import random

import pytest
from fixtures_data import FIQ_SPLITS, tiny_tokenizer, truncated_png, write_fashioniq

from unifashion.data.errors import BadSampleError
from unifashion.data.fashioniq import FashionIQDataModule, eval_text, random_text


def make(root, **kw):
    kw.setdefault("image_size", 8)
    kw.setdefault("batch_size", 2)
    return FashionIQDataModule(str(root), **kw)


CAPS = ["Is Longer.", " has red FLOWERS ?"]


def test_random_join_four_way_rule_by_hand():
    # hand-written C4C results: strip ".?, ", capitalize() the leading caption (rest lower-cased)
    assert random_text(CAPS, 0.10) == "Is longer and has red FLOWERS"
    assert random_text(CAPS, 0.30) == "Has red flowers and Is Longer"
    assert random_text(CAPS, 0.60) == "Is longer"
    assert random_text(CAPS, 0.90) == "Has red flowers"
    # edges: u == 0.25 and u == 0.5 fall into the last branch
    assert random_text(CAPS, 0.25) == "Has red flowers"
    assert random_text(CAPS, 0.5) == "Has red flowers"


def test_random_join_with_fixed_rng():
    rng = random.Random(0)  # draws 0.8444, 0.7580, 0.4206, 0.2589, 0.5112
    got = [random_text(CAPS, rng.random()) for _ in range(5)]
    assert got == [
        "Has red flowers",
        "Has red flowers",
        "Has red flowers and Is Longer",
        "Has red flowers and Is Longer",
        "Is longer",
    ]


def test_eval_text_and_empty_captions():
    assert eval_text(CAPS) == "Is longer and has red FLOWERS"
    assert eval_text(["", "is blue."]) == " and is blue"
    assert eval_text(["is shorter", "  "]) == "Is shorter and "


@pytest.mark.parametrize("use_parent", [True, False])
def test_root_or_parent_and_png_jpg_probing(tmp_path, use_parent):
    ds_dir = write_fashioniq(tmp_path)
    dm = make(tmp_path if use_parent else ds_dir)
    assert dm.dataset_dir == ds_dir
    assert dm.images.path("D1").name == "D1.png"
    assert dm.images.path("D2").name == "D2.jpg"
    (ds_dir / "images" / "D2.png").write_bytes((ds_dir / "images" / "D2.jpg").read_bytes())
    assert make(ds_dir).images.path("D2").name == "D2.png"  # .png probed first


def test_galleries_per_category_share_images(tmp_path):
    write_fashioniq(tmp_path)
    dm = make(tmp_path)
    shirt, toptee = dm.gallery("shirt", "val"), dm.gallery("toptee", "val")
    assert shirt.asins == FIQ_SPLITS["shirt"]["val"] and toptee.asins == FIQ_SPLITS["toptee"]["val"]
    a, b = shirt[1], toptee[1]
    assert a["image_id"] == b["image_id"] == "X1" and a["category"] == "shirt" and b["category"] == "toptee"
    assert (a["image"] == b["image"]).all()
    batch = next(iter(dm.gallery_dataloader("dress")))
    assert batch["image"].shape == (2, 3, 8, 8) and batch["image_id"] == ["D4", "D5"]


def test_val_queries_and_test_queries_without_target(tmp_path):
    write_fashioniq(tmp_path)
    dm = make(tmp_path)
    q = dm.queries("dress", "val")
    assert len(q) == 2
    assert q[0]["text"] == "Yello and more flowing and is darker"
    assert (q[0]["reference_id"], q[0]["target_id"]) == ("D4", "D5")
    assert q[1]["text"] == " and is blue"
    t = dm.queries("shirt", "test")
    assert t[0]["target_id"] is None and t[0]["reference"].shape == (3, 8, 8)
    batch = next(iter(dm.queries_dataloader("toptee", "test")))
    assert batch["target_id"] == [None] and batch["text"] == ["Is black and has text"]
    with pytest.raises(ValueError, match="no targets"):
        dm.triplet_dataset("test")


def test_train_triplets_and_tokenizer(tmp_path):
    write_fashioniq(tmp_path)
    dm = make(tmp_path, batch_size=4, seed=3)
    dm.setup("fit")
    dm.set_tokenizer(tiny_tokenizer(["Is", "is", "and", "plain", "pink"]), max_length=8)
    batches = list(dm.train_dataloader())
    assert len(batches) == 1  # 4 train triplets, drop_last
    b = batches[0]
    assert b["kind"] == "triplets" and b["dataset"] == "fashioniq"
    assert b["reference"].shape == b["target"].shape == (4, 3, 8, 8)
    assert sorted(b["category"]) == ["dress", "dress", "shirt", "toptee"]
    by_ref = dict(zip(b["reference_id"], b["text"]))
    options = {random_text(["is plain", "no logo"], u) for u in (0.1, 0.3, 0.6, 0.9)}
    assert by_ref["S1"] in options
    assert b["input_ids"].shape[0] == 4 and b["attention_mask"].shape == b["input_ids"].shape
    # padding to the longest text: each row's mask counts its own words
    for text, mask in zip(b["text"], b["attention_mask"].tolist()):
        assert sum(mask) == min(len(text.split()), 8)
    # reproducible for a fixed seed
    again = make(tmp_path, batch_size=4, seed=3)
    assert next(iter(again.train_dataloader()))["text"] == b["text"]


def test_malformed_json_raise_or_skip(tmp_path):
    root = write_fashioniq(tmp_path)
    (root / "captions" / "cap.dress.val.json").write_text('[{"candidate": "D4", ')
    with pytest.raises(BadSampleError, match=r"cap\.dress\.val\.json.*invalid JSON"):
        make(tmp_path).queries("dress", "val")
    dm = make(tmp_path, on_bad_sample="skip")
    assert len(dm.queries("dress", "val")) == 0 and dm.skip_counts["malformed_json"] == 1
    (root / "captions" / "cap.shirt.val.json").write_text(json.dumps([{"candidate": "S3", "captions": ["a"]}]))
    with pytest.raises(BadSampleError, match=r"cap\.shirt\.val\.json.*target"):
        make(tmp_path).queries("shirt", "val")


def test_missing_split_file(tmp_path):
    root = write_fashioniq(tmp_path)
    (root / "image_splits" / "split.toptee.val.json").unlink()
    with pytest.raises(BadSampleError, match=r"split\.toptee\.val\.json.*not found"):
        make(tmp_path).gallery("toptee", "val")
    dm = make(tmp_path, on_bad_sample="skip")
    assert len(dm.gallery("toptee", "val")) == 0 and dm.skip_counts["missing_file"] == 1
    with pytest.raises(FileNotFoundError, match="captions/ and image_splits/"):
        make(tmp_path / "elsewhere").gallery("dress", "val")


def test_missing_image_raise_or_skip(tmp_path):
    root = write_fashioniq(tmp_path)
    (root / "images" / "D5.jpg").unlink()
    with pytest.raises(BadSampleError, match=r"D5\.png or D5\.jpg.*cap\.dress\.val\.json"):
        make(tmp_path).queries("dress", "val")
    dm = make(tmp_path, on_bad_sample="skip")
    assert [t.candidate for t in dm.triplets("dress", "val")] == ["D6"]
    assert dm.gallery("dress", "val").asins == ["D4", "D6"]
    assert dm.skip_counts["missing_file"] == 2  # the triplet and the gallery entry


def test_corrupt_image_skip_counted_across_workers(tmp_path):
    root = write_fashioniq(tmp_path)
    truncated_png(root / "images" / "D4.png")
    with pytest.raises(BadSampleError, match=r"D4\.png"):
        make(tmp_path).gallery("dress", "val")[0]
    dm = make(tmp_path, on_bad_sample="skip", num_workers=1)
    ids = [i for b in dm.gallery_dataloader("dress") for i in b["image_id"]]
    assert ids == ["D5", "D6"]
    assert dm.skip_counts["corrupt_image"] == 1  # counted inside the worker, read here


def test_caption_pairs(tmp_path):
    root = write_fashioniq(tmp_path)
    caps = [{"image": "D4", "caption": "a red dress"}, {"image": "D5", "caption": ""}, {"image": "D6"}]
    (root / "caps.json").write_text(json.dumps(caps))
    with pytest.raises(BadSampleError, match=r"caps\.json: entry 1 \(D5\): empty caption"):
        make(tmp_path, captions_file="caps.json").caption_pairs()
    caps.append({"image": "D1", "caption": "a blue dress"})
    (root / "caps.json").write_text(json.dumps(caps))
    dm = make(tmp_path, captions_file="caps.json", on_bad_sample="skip")
    b = next(iter(dm.caption_pairs_dataloader()))
    # the empty caption (entry 1) and the entry without one (entry 2) are counted skips
    assert dm.skip_counts["empty_text"] == 1 and dm.skip_counts["malformed_json"] == 1
    assert b["kind"] == "pairs" and sorted(b["text"]) == ["a blue dress", "a red dress"]
    assert sorted(b["product_id"].tolist()) == [0, 1]
    with pytest.raises(ValueError, match="captions_file"):
        make(tmp_path).caption_pairs()
