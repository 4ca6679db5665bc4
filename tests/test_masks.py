"""Which positions see which in the Q-Former's three modes, on a tiny model (autograd, not by reading code).

- unimodal (ITC, eq. 3): image queries and text run in separate passes, so they cannot see each other;
- bi-directional (ITM eq. 4, composed fusion eq. 9, `MultimodalEncoder._joint`): every query and
  text token sees every query and every non-padding token; padding is seen by nobody; only the
  queries cross-attend the image (the text sees the image through the queries, one layer later).
"""

from __future__ import annotations

import pytest
import torch

from unifashion.models.encoder import EncoderConfig, MultimodalEncoder
from unifashion.models.tokenizers import train_wordpiece_tokenizer

WORDS = ["red cotton shirt with long sleeves", "blue denim jeans", "black leather jacket with a zip"]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("wp")
    train_wordpiece_tokenizer(WORDS * 3, out, vocab_size=200)
    return str(out)


_PROBE = torch.randn(4096, generator=torch.Generator().manual_seed(1))
"""A fixed random direction: the outputs end in a LayerNorm, whose plain sum is a constant."""


def _probe(x):
    return (x * _PROBE[: x.shape[-1]]).sum()


def _encoder(tok_dir, layers):
    torch.manual_seed(0)
    return MultimodalEncoder(EncoderConfig.tiny(tok_dir, qformer_layers=layers, cross_attention_frequency=1)).eval()


def _sees(enc, vision, ids, mask):
    """bool (Q+L, Q+L): out[i] depends on input embedding j, for the joint pass of one example."""
    store = {}

    def hook(module, args, out):
        out.retain_grad()
        store["embeds"] = out

    handle = enc.model.embeddings.register_forward_hook(hook)
    try:
        out = enc._joint(vision, ids, mask)[0]  # (Q+L, H)
    finally:
        handle.remove()
    n = out.shape[0]
    sees = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        enc.zero_grad()
        if store["embeds"].grad is not None:
            store["embeds"].grad = None
        (out[i] * _PROBE[: out.shape[1]]).sum().backward(retain_graph=True)
        sees[i] = store["embeds"].grad[0].abs().sum(-1) > 0
    return sees


def test_bidirectional_mask_everyone_sees_every_real_token(tok_dir):
    enc = _encoder(tok_dir, layers=2)
    q = enc.num_query_tokens
    tok = enc.tokenize(["red shirt", "blue denim jeans with a zip"])  # the first is padded
    vision = enc.encode_vision(torch.randn(2, 3, 32, 32))
    ids, mask = tok["input_ids"][:1], tok["attention_mask"][:1]
    real = q + int(mask.sum())
    sees = _sees(enc, vision[:1], ids, mask)
    assert sees[:real, :real].all()  # queries <-> text, both ways, and text <-> text (not causal)
    assert not sees[:real, real:].any()  # no real position sees a padding token


def test_only_queries_cross_attend_the_image(tok_dir):
    enc = _encoder(tok_dir, layers=1)  # one layer: text can only see the image through queries of a later layer
    q = enc.num_query_tokens
    tok = enc.tokenize(["red shirt"])
    vision = enc.encode_vision(torch.randn(1, 3, 32, 32)).requires_grad_(True)
    out = enc._joint(vision, tok["input_ids"], tok["attention_mask"])[0]
    g_query = torch.autograd.grad(_probe(out[:q]), vision, retain_graph=True)[0]
    g_text = torch.autograd.grad(_probe(out[q:]), vision, allow_unused=True)[0]
    assert g_query.abs().sum() > 0
    assert g_text is None or g_text.abs().sum() == 0
    enc2 = _encoder(tok_dir, layers=2)  # with a second layer the text sees the image-informed queries
    vision2 = enc2.encode_vision(torch.randn(1, 3, 32, 32)).requires_grad_(True)
    out2 = enc2._joint(vision2, tok["input_ids"], tok["attention_mask"])[0]
    assert torch.autograd.grad(_probe(out2[q:]), vision2)[0].abs().sum() > 0


def test_unimodal_paths_cannot_see_each_other(tok_dir):
    enc = _encoder(tok_dir, layers=2)
    tok = enc.tokenize(["red shirt", "blue denim jeans with a zip"])
    text = enc.encode_text(tok["input_ids"], tok["attention_mask"])
    g = torch.autograd.grad(text.text_feat.sum(), enc.model.query_tokens, allow_unused=True)[0]
    assert g is None or g.abs().sum() == 0  # the text [CLS] never sees a query
    image = enc.encode_image(torch.randn(2, 3, 32, 32))
    g = torch.autograd.grad(image.image_feats.sum(), enc.model.embeddings.word_embeddings.weight, allow_unused=True)[0]
    assert g is None or g.abs().sum() == 0  # the queries never see a text token
    # and the joint pass does: its queries depend on the words
    joint = enc._joint(image.vision_embeds.detach(), tok["input_ids"], tok["attention_mask"])
    g = torch.autograd.grad(_probe(joint[:, : enc.num_query_tokens]), enc.model.embeddings.word_embeddings.weight)[0]
    assert g.abs().sum() > 0


def test_text_only_mask_is_bidirectional_and_ignores_padding(tok_dir):
    enc = _encoder(tok_dir, layers=2)
    a = enc.tokenize(["red shirt"])
    b = enc.tokenize(["red shirt", "blue denim jeans with a zip"])  # "red shirt" padded
    one = enc.encode_text(a["input_ids"], a["attention_mask"]).text_cls
    padded = enc.encode_text(b["input_ids"], b["attention_mask"]).text_cls[:1]
    assert torch.allclose(one, padded, atol=1e-5)
    # the [CLS] sees the LAST word (no causal mask): changing it changes the [CLS] output
    c = enc.tokenize(["red jeans"])
    assert not torch.allclose(enc.encode_text(c["input_ids"], c["attention_mask"]).text_cls, one, atol=1e-4)
