"""Fashion200K composed retrieval of a model (TIRG protocol) on a tiny model and the official layout:
every query counted, the fused score against a naive loop, and gallery captions from the images alone."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from tiny import tiny_captioning_model

from unifashion.data.fashion200k import Fashion200KDataModule
from unifashion.data.fashioniq import read_caption_file
from unifashion.data.files import load_image
from unifashion.data.synthetic.fashion200k import Fashion200KSpec, write_fashion200k
from unifashion.models.tokenizers import train_bpe_tokenizer, train_wordpiece_tokenizer
from unifashion.tasks.cir.captions import write_fashion200k_captions
from unifashion.tasks.cir.evaluate import run_cir_fashion200k


@pytest.fixture(scope="module")
def f200k(tmp_path_factory):
    root = tmp_path_factory.mktemp("f200k")
    write_fashion200k(root, Fashion200KSpec({"train": 1, "test": 1}, members=3, images_per_product=(1, 2),
                                            height=(64, 72)), seed=0)
    texts = [line.split("\t")[2] for f in (root / "labels").glob("*.txt") for line in f.read_text().splitlines()]
    texts += ["replace red with blue"] * 3
    train_wordpiece_tokenizer(texts, root / "tok_q", vocab_size=300)
    train_bpe_tokenizer(texts, root / "tok_llm", vocab_size=300)
    return root


@pytest.fixture(scope="module")
def model(f200k):
    return tiny_captioning_model(f200k / "tok_q", f200k / "tok_llm")


def test_fashion200k_cir_against_a_naive_loop(model, f200k, tmp_path, monkeypatch):
    dm = Fashion200KDataModule(root=str(f200k), image_size=model.encoder.config.image_size)
    entries, queries = dm.entries("test"), dm.test_queries().queries
    n_lines = len((f200k / "test_queries.txt").read_text().split())
    assert len(queries) == n_lines // 2 > 0  # "source target" pairs: every one is a query

    # the gallery captions come from each gallery image alone: no text reaches the Q-Former
    real_tokenize = model.encoder.tokenize

    def refuse(*args, **kwargs):
        raise AssertionError("a text reached the encoder while captioning gallery images")

    monkeypatch.setattr(model.encoder, "tokenize", refuse)
    file = write_fashion200k_captions(model, f200k, tmp_path, max_new_tokens=5)
    monkeypatch.setattr(model.encoder, "tokenize", real_tokenize)
    captions = read_caption_file(file)
    assert list(captions) == list(dict.fromkeys(e.path for e in entries))

    out = run_cir_fashion200k(model, f200k, tmp_path, caption_weight=0.5, batch_size=5)
    # naive: one query at a time, the model's own API, loops over the gallery
    pix = lambda p: dm.eval_transform(load_image(dm.root_dir / p))  # noqa: E731
    z_t = model.embed_images(torch.stack([pix(e.path) for e in entries]))  # (N, Q, E)
    z_c = model.embed_texts([captions[e.path] for e in entries])  # (N, E)
    for row, (w_img, w_cap) in {"cir": (1.0, 0.5), "cir_nocap": (1.0, 0.0), "cir_noimg": (0.0, 1.0)}.items():
        hits = {1: 0, 10: 0, 50: 0}
        for q in queries:
            e_cls = F.normalize(model.compose(pix(q.source)[None], [q.text])[0], dim=-1)
            scored = []
            for j, e in enumerate(entries):
                if e.path == q.source:
                    continue  # the query image itself is excluded
                s = w_img * float((z_t[j] @ e_cls).max()) + w_cap * float(z_c[j] @ e_cls)
                scored.append((-s, e.caption == q.target_caption))  # ties: non-hits first
            scored.sort()
            for k in hits:
                hits[k] += any(hit for _, hit in scored[:k])
        for k, h in hits.items():
            assert out[f"{row}/fashion200k/R@{k}"] == pytest.approx(100.0 * h / len(queries), abs=1e-4), (row, k)
        assert out[f"{row}/fashion200k/num_queries"] == len(queries)


def test_fashion200k_cir_names_missing_captions(model, f200k, tmp_path):
    bad = tmp_path / "caps.json"
    bad.write_text(json.dumps([{"image": "women/none.jpg", "caption": "x", "text_guidance": ""}]))
    with pytest.raises(ValueError, match="no generated caption"):
        run_cir_fashion200k(model, f200k, bad)
