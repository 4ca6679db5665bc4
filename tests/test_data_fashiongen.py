"""FashionGen HDF5 loader on a tiny official-layout fixture."""

import pickle

import numpy as np
import pytest
import torch
from fixtures_data import FG_TRAIN, FG_VAL, tiny_tokenizer, write_fashiongen

from unifashion.data.errors import BadSampleError
from unifashion.data.fashiongen import FashionGenDataModule, contiguous_groups, decode_latin1
from unifashion.data.transforms import denormalize


def make(root, **kw):
    kw.setdefault("image_size", 8)
    kw.setdefault("batch_size", 2)
    return FashionGenDataModule(str(root), **kw)


def test_latin1_text_and_contiguous_products(tmp_path):
    write_fashiongen(tmp_path)
    dm = make(tmp_path)
    dm.setup("fit")
    t = dm.table("train")
    assert t.descriptions[0] == "Café cotton shirt."  # 0xE9 decoded as latin-1
    assert t.descriptions == [r[2].decode("latin-1") for r in FG_TRAIN]
    assert t.groups == [(101, 0, 3), (102, 3, 5), (103, 5, 7)]
    assert dm.table("validation").descriptions[4] == "Leather belt élégant"


def test_contiguous_groups_matches_naive_runs():
    ids = [5, 5, 7, 5, 5, 5, 9]
    assert contiguous_groups(ids) == [(5, 0, 2), (7, 2, 3), (5, 3, 6), (9, 6, 7)]
    assert contiguous_groups([]) == []
    assert decode_latin1(np.array([b"\xe9t\xe9"], dtype="S4")) == "été"


def test_retrieval_split_one_text_per_product_and_singleton_subcategory(tmp_path):
    write_fashiongen(tmp_path)
    split = make(tmp_path).retrieval_split("validation")
    assert split.texts == ["Linen shirt naïve", "Poplin shirt", "Leather belt élégant"]
    assert split.text_product_ids.tolist() == [201, 202, 203]
    assert split.text_subcategories == ["SHIRTS", "SHIRTS", "BELTS"]
    assert split.image_product_ids.tolist() == [r[0] for r in FG_VAL]
    assert split.image_subcategories == [r[1].decode() for r in FG_VAL]
    assert len(split.images) == 5
    item = split.images[4]
    assert item["product_id"] == 203 and item["subcategory"] == "BELTS" and item["image"].shape == (3, 8, 8)
    # the fixture's row 4 is a constant 40-valued image
    torch.testing.assert_close(denormalize(item["image"]), torch.full((3, 8, 8), 40 / 255), atol=1e-5, rtol=0)


def test_pair_batches_follow_the_contract(tmp_path):
    write_fashiongen(tmp_path)
    dm = make(tmp_path)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["kind"] == "pairs" and batch["dataset"] == "fashiongen"
    assert batch["image"].shape == (2, 3, 8, 8) and batch["image"].dtype == torch.float32
    assert batch["text"] == ["Linen shirt naïve"] * 2
    assert batch["product_id"].dtype == torch.long and batch["product_id"].tolist() == [201, 201]
    assert "input_ids" not in batch
    train = list(dm.train_dataloader())
    assert len(train) == 3  # 7 rows, batch 2, drop_last
    seen = [p for b in train for p in b["product_id"].tolist()]
    assert len(seen) == 6 and set(seen) <= {101, 102, 103}


def test_tokenizer_injection_adds_ids(tmp_path):
    write_fashiongen(tmp_path)
    dm = make(tmp_path)
    dm.set_tokenizer(tiny_tokenizer(["Linen", "shirt", "Poplin"]), max_length=2)
    batch = next(iter(dm.val_dataloader()))
    # "Linen shirt naïve" -> [2, 3, UNK] truncated to 2
    assert batch["input_ids"].tolist() == [[2, 3], [2, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1], [1, 1]]


def test_h5_opened_lazily_and_not_pickled(tmp_path):
    write_fashiongen(tmp_path)
    ds = make(tmp_path).pairs_dataset("train")
    assert ds._file is None  # not opened by construction
    ds[0]
    assert ds._file is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._file is None
    torch.testing.assert_close(clone[1]["image"], ds[1]["image"])


def test_max_train_items_is_a_seeded_subset(tmp_path):
    write_fashiongen(tmp_path)
    a = make(tmp_path, max_train_items=3, seed=1).train_rows()
    assert a == make(tmp_path, max_train_items=3, seed=1).train_rows()
    assert len(a) == 3 and a == sorted(a) and set(a) <= set(range(7))


def test_missing_required_key_names_file_and_key(tmp_path):
    write_fashiongen(tmp_path, drop_key="input_description")
    for policy in ("raise", "skip"):
        with pytest.raises(BadSampleError, match=r"fashiongen_256_256_train\.h5.*input_description"):
            make(tmp_path, on_bad_sample=policy).setup("fit")


def test_missing_optional_key_raise_or_counted_skip(tmp_path):
    write_fashiongen(tmp_path, drop_key="input_subcategory")
    with pytest.raises(BadSampleError, match=r"fashiongen_256_256_train\.h5.*input_subcategory"):
        make(tmp_path).setup("fit")
    dm = make(tmp_path, on_bad_sample="skip")
    dm.setup("fit")
    assert dm.skip_counts["missing_key"] == 2  # once per file
    assert dm.retrieval_split().text_subcategories == ["", "", ""]


def test_missing_root_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        make(tmp_path / "nowhere").setup("fit")
    write_fashiongen(tmp_path)
    (tmp_path / "fashiongen_256_256_validation.h5").unlink()
    with pytest.raises(FileNotFoundError, match="fashiongen_256_256_validation.h5"):
        make(tmp_path, on_bad_sample="skip").setup("validate")
