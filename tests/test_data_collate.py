"""Collate and skip-policy units."""

import pytest
import torch
from fixtures_data import tiny_tokenizer

from unifashion.data.collate import Collate
from unifashion.data.errors import BadSampleError, SkipCounter


def item(text, pid):
    return {"image": torch.full((3, 2, 2), float(pid)), "text": text, "product_id": pid}


def test_collate_stacks_drops_none_and_tokenizes():
    tok = tiny_tokenizer(["red", "dress", "blue"])
    col = Collate("pairs", "fashion200k", tokenizer=tok, max_length=3)
    b = col([item("red dress", 4), None, item("blue long dress", 9)])
    assert b["kind"] == "pairs" and b["dataset"] == "fashion200k"
    assert b["image"].shape == (2, 3, 2, 2) and b["image"][1, 0, 0, 0] == 9.0
    assert b["product_id"].tolist() == [4, 9] and b["product_id"].dtype == torch.long
    # vocab: [PAD]=0 [UNK]=1 red=2 dress=3 blue=4; padded to longest, truncated to 3
    assert b["input_ids"].tolist() == [[2, 3, 0], [4, 1, 3]]
    assert b["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert col([None, None]) is None
    assert "input_ids" not in Collate("pairs", "fashiongen")([item("red", 1)])


def test_collate_rejects_unknown_kind_or_dataset():
    with pytest.raises(ValueError, match="kind"):
        Collate("quads", "fashiongen")
    with pytest.raises(ValueError, match="dataset"):
        Collate("pairs", "coco")


def test_skip_counter_policies():
    err = BadSampleError("/x/a.png", "corrupt_image", "cannot decode")
    assert "/x/a.png" in str(err)
    with pytest.raises(BadSampleError):
        SkipCounter("raise").handle(err)
    c = SkipCounter("skip")
    c.handle(err)
    c.handle(err)
    assert c.counts["corrupt_image"] == 2 and c.total == 2
    with pytest.raises(ValueError, match="on_bad_sample"):
        SkipCounter("ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reason"):
        BadSampleError("/x", "oops", "?")


def test_skip_counter_pickles_outside_worker_start():
    import pickle

    c = SkipCounter("skip")
    c.handle(BadSampleError("/x", "missing_file", "gone"))
    clone = pickle.loads(pickle.dumps(c))
    assert clone.counts["missing_file"] == 1 and clone.policy == "skip"
    clone.handle(BadSampleError("/y", "missing_file", "gone"))
    assert clone.total == 2
