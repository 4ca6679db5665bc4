"""Fashion200K label-file loader, TIRG queries and bad-sample policy."""

import pytest
from fixtures_data import F200_TEST, F200_TRAIN, truncated_png, write_fashion200k

from unifashion.data.errors import BadSampleError
from unifashion.data.fashion200k import Fashion200KDataModule, replace_text, tirg_postprocess


def make(root, **kw):
    kw.setdefault("image_size", 8)
    kw.setdefault("batch_size", 2)
    return Fashion200KDataModule(str(root), **kw)


def test_replace_text_follows_tirg_rule():
    assert replace_text("blue lace dress", "green lace dress") == ("blue", "green", "replace blue with green")
    # first differing word on each side, independently
    assert replace_text("green lace dress", "blue silk dress")[2] == "replace green with blue"
    # TIRG quirk: no differing word -> the last word
    assert replace_text("red dress", "red dress")[2] == "replace dress with dress"


def test_tirg_postprocess():
    assert tirg_postprocess(" black & white dress. ") == "black andmark white dressdotmark"
    assert tirg_postprocess("a*b?") == "astarmarkbquestionmark"


def test_pairs_products_and_retrieval_split(tmp_path):
    write_fashion200k(tmp_path)
    dm = make(tmp_path)
    dm.setup("fit")
    entries = dm.entries("train")
    assert [e.path for e in entries] == [p for p, _ in F200_TRAIN]
    assert entries[0].caption == "black & white dress." and entries[0].product == "51727804"
    assert entries[0].category == "dress"
    batch = next(iter(dm.val_dataloader()))
    assert batch["kind"] == "pairs" and batch["dataset"] == "fashion200k"
    assert batch["image"].shape == (2, 3, 8, 8)
    assert batch["product_id"].tolist() == [60000001, 60000001]
    assert batch["text"] == ["blue lace dress", "blue lace dress"]
    split = dm.retrieval_split("test")
    assert split.texts == ["blue lace dress", "green lace dress", "blue silk dress"]
    assert split.text_product_ids.tolist() == [60000001, 60000002, 60000003]
    assert split.image_product_ids.tolist() == [60000001, 60000001, 60000002, 60000003]
    assert len(split.images) == len(F200_TEST)


def test_test_queries_derive_text_from_captions(tmp_path):
    write_fashion200k(tmp_path)
    q = make(tmp_path).test_queries()
    assert [x.text for x in q.queries] == ["replace blue with green", "replace green with blue"]
    item = q[1]
    assert item["reference"].shape == (3, 8, 8)
    assert item["reference_id"] == F200_TEST[2][0] and item["target_caption"] == "blue silk dress"
    tirg = make(tmp_path, tirg_captions=True)
    assert tirg.entries("train")[0].caption == "black andmark white dressdotmark"


def test_missing_image_raise_or_skip(tmp_path):
    write_fashion200k(tmp_path)
    missing = tmp_path / F200_TRAIN[1][0]
    missing.unlink()
    with pytest.raises(BadSampleError, match="51727804_1.jpeg"):
        make(tmp_path).setup("fit")
    dm = make(tmp_path, on_bad_sample="skip")
    dm.setup("fit")
    assert dm.skip_counts["missing_file"] == 1
    assert len(dm.entries("train")) == 3


def test_corrupt_image_raise_or_counted_skip(tmp_path):
    write_fashion200k(tmp_path)
    truncated_png(tmp_path / F200_TEST[0][0])
    with pytest.raises(BadSampleError, match="60000001_0.jpeg.*decode"):
        make(tmp_path).pairs_dataset("test")[0]
    dm = make(tmp_path, on_bad_sample="skip")
    batches = list(dm.val_dataloader())
    assert sum(len(b["text"]) for b in batches) == 3  # the corrupt item is dropped from its batch
    assert dm.skip_counts["corrupt_image"] == 1


def test_malformed_label_line_and_missing_label_file(tmp_path):
    write_fashion200k(tmp_path)
    label = tmp_path / "labels" / "dress_train_detect_all.txt"
    label.write_text(label.read_text() + "no tabs in this line\n")
    with pytest.raises(BadSampleError, match=r"dress_train_detect_all\.txt:5.*3 tab-separated"):
        make(tmp_path).entries("train")
    dm = make(tmp_path, on_bad_sample="skip")
    assert len(dm.entries("train")) == 4 and dm.skip_counts["malformed_line"] == 1
    for f in (tmp_path / "labels").glob("*_test_*"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match=r"_test_detect_all\.txt"):
        make(tmp_path, on_bad_sample="skip").entries("test")


def test_query_with_unknown_image(tmp_path):
    write_fashion200k(tmp_path)
    (tmp_path / "test_queries.txt").write_text(f"{F200_TEST[0][0]} women/none.jpeg\n")
    with pytest.raises(BadSampleError, match=r"test_queries\.txt:1.*women/none\.jpeg"):
        make(tmp_path).test_queries()
    dm = make(tmp_path, on_bad_sample="skip")
    assert len(dm.test_queries()) == 0 and dm.skip_counts["missing_key"] == 1
