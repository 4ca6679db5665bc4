"""No leakage into composed retrieval: gallery captions come from the gallery image alone, and no
validation image or caption enters phase-2 training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny import tiny_captioning_model

from unifashion.data.fashioniq import FashionIQDataModule, read_caption_file
from unifashion.data.synthetic.fashioniq import FashionIQSpec, write_fashioniq
from unifashion.models.tokenizers import train_bpe_tokenizer, train_wordpiece_tokenizer
from unifashion.tasks.cir.captions import write_fashioniq_captions

CONFIGS = Path(__file__).resolve().parents[1] / "lightning_configs"


@pytest.fixture(scope="module")
def fiq(tmp_path_factory):
    root = tmp_path_factory.mktemp("fiq")
    write_fashioniq(root, FashionIQSpec(triplets={"train": 6, "val": 4, "test": 2}, size=(40, 56)), seed=0)
    base = root / "fashionIQ_dataset"
    texts = [c for f in (base / "captions").glob("*.json") for t in json.loads(f.read_text()) for c in t["captions"]]
    texts += [e["caption"] for f in base.glob("next_llava.*.json") for e in json.loads(f.read_text())]
    train_wordpiece_tokenizer(texts, root / "tok_q", vocab_size=300)
    train_bpe_tokenizer(texts, root / "tok_llm", vocab_size=300)
    return root


def _captioning_model(fiq):
    return tiny_captioning_model(fiq / "tok_q", fiq / "tok_llm")


def test_gallery_captions_never_see_query_text(fiq, tmp_path, monkeypatch):
    model = _captioning_model(fiq)
    first = write_fashioniq_captions(model, fiq, tmp_path / "a", splits=("val",), max_new_tokens=6)
    # 1. rewrite every modifying text of the split: the captions must not change
    for f in (fiq / "fashionIQ_dataset" / "captions").glob("cap.*.val.json"):
        data = json.loads(f.read_text())
        for t in data:
            t["captions"] = ["is bright pink with a floral print", "has long sleeves"]
        f.write_text(json.dumps(data))
    # 2. and no text may go through the Q-Former at all (neither tokenised nor fused)
    def refuse(*args, **kwargs):
        raise AssertionError("a text reached the encoder while captioning gallery images")

    monkeypatch.setattr(model.encoder, "tokenize", refuse)
    monkeypatch.setattr(model.encoder, "fuse", refuse)
    second = write_fashioniq_captions(model, fiq, tmp_path / "b", splits=("val",), max_new_tokens=6)
    for key in first:
        a, b = read_caption_file(first[key]), read_caption_file(second[key])
        cat = key.split("/")[1]
        dm = FashionIQDataModule(root=str(fiq))
        assert list(a) == dm.image_ids(cat, "val")  # the whole gallery, in split-file order
        assert a == b


def test_training_reads_no_validation_image_or_caption(fiq, tmp_path):
    base = fiq / "fashionIQ_dataset"
    caps = tmp_path / "caps"
    caps.mkdir()
    for split in ("train", "val"):
        for cat in ("dress", "shirt", "toptee"):
            ids = json.loads((base / "image_splits" / f"split.{cat}.{split}.json").read_text())
            (caps / f"next_llava.{split}.{cat}.caption.json").write_text(json.dumps(
                [{"image": a, "caption": f"{split.upper()} caption of {a}", "text_guidance": ""} for a in ids]))
    dm = FashionIQDataModule(root=str(fiq), image_size=32, batch_size=4,
                             target_captions=str(caps / "next_llava.{split}.{cat}.caption.json"))
    dm.setup("fit")
    val_images = {a for cat in ("dress", "shirt", "toptee") for a in dm.image_ids(cat, "val")}
    seen_images, seen_captions = set(), []
    for batch in dm.train_dataloader():
        seen_images |= set(batch["reference_id"]) | set(batch["target_id"])
        seen_captions += batch["target_caption"]
    assert seen_images and not seen_images & val_images
    assert seen_captions and all(c.startswith("TRAIN caption of ") for c in seen_captions)
    # a fixed file (which could be a validation file) is refused
    with pytest.raises(ValueError, match="split"):
        FashionIQDataModule(root=str(fiq), target_captions=str(caps / "next_llava.val.dress.caption.json"))


def test_phase2_configs_read_per_split_captions():
    for path in (CONFIGS / "phase2.yaml", CONFIGS / "tiny" / "phase2.yaml"):
        text = path.read_text()
        assert "target_captions: next_llava.{split}.{cat}.caption.json" in text, path
        assert "fashioniq.FashionIQDataModule" in text
