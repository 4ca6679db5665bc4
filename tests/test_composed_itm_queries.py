"""The composed ITM with the composed query (``queries="composed"``): Z_R in place of the learnable queries.

`MultimodalEncoder.itm_logits(..., query_embeds=)`, the loss against a hand-built batch of triples, and
the module's `cir_itm_queries` in a phase-2 training step.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from fixtures_data import write_fashioniq
from test_generation_pipeline import GEN
from tiny import tiny_encoder_config

from unifashion.losses.composed_contrastive import ComposedItcLoss
from unifashion.losses.composed_matching import ComposedItmLoss
from unifashion.models.encoder import MultimodalEncoder
from unifashion.models.tokenizers import train_bpe_tokenizer, train_wordpiece_tokenizer

TEXTS = ["is longer", "has shorter sleeves", "is darker and red", "is blue with flowers", "is plain no logo"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("qtok")
    train_wordpiece_tokenizer(TEXTS * 3, out, vocab_size=200)
    return out


@pytest.fixture(scope="module")
def encoder(tok):
    torch.manual_seed(0)
    return MultimodalEncoder(tiny_encoder_config(tok, qformer_dropout=0.0))


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))  # (n, 3, S, S)


def _composed_batch(encoder: MultimodalEncoder, n: int, target_ids: torch.Tensor):
    """Reference / target vision outputs, tokens, Z_R (with grad) and the ITC(e_cls, Z_T) result."""
    reference = encoder.encode_vision(_images(n, seed=1))  # (n, P, Hv)
    target = encoder.encode_image(_images(n, seed=2))
    tokens = encoder.tokenize(TEXTS[:n])
    z_r, e_cls = encoder.fuse(reference, tokens["input_ids"], tokens["attention_mask"])  # (n, Q, H), (n, E)
    itc = ComposedItcLoss().compute(e_cls, target.image_feats, 0.07, target_ids)
    return reference, target.vision_embeds, tokens, z_r, itc


def _naive(encoder, vision, vision_neg, z_r, ids, mask, neg_query) -> torch.Tensor:
    """Eq. 4 on the 3n triples written out one by one, labels [1, 0, 0]."""
    logits, labels = [], []
    for i in range(vision.shape[0]):
        j = int(neg_query[i])
        for v, q, t, m, label in ((vision[i], z_r[i], ids[i], mask[i], 1),
                                  (vision_neg[i], z_r[i], ids[i], mask[i], 0),
                                  (vision[i], z_r[j], ids[j], mask[j], 0)):
            logits.append(encoder.itm_logits(v[None], t[None], m[None], query_embeds=q[None]))  # (1, 2)
            labels.append(label)
    return F.cross_entropy(torch.cat(logits), torch.tensor(labels))


# ---------------------------------------------------------------- encoder


def test_itm_logits_with_the_learnable_queries_is_the_default(encoder):
    vision = encoder.encode_vision(_images(3, seed=0))  # (3, P, Hv)
    tokens = encoder.tokenize(TEXTS[:3])
    queries = encoder.model.query_tokens.expand(3, -1, -1)  # (3, Q, H)
    with torch.no_grad():
        default = encoder.itm_logits(vision, **tokens)
        given = encoder.itm_logits(vision, **tokens, query_embeds=queries)
    assert torch.equal(default, given)


def test_itm_logits_depend_on_the_given_queries(encoder):
    vision = encoder.encode_vision(_images(3, seed=0))
    tokens = encoder.tokenize(TEXTS[:3])
    shape = (3, *encoder.model.query_tokens.shape[1:])  # (3, Q, H)
    queries = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    other = queries.clone()
    other[:, 0] = torch.randn(shape[2], generator=torch.Generator().manual_seed(4))  # one query changed
    with torch.no_grad():
        a = encoder.itm_logits(vision, **tokens, query_embeds=queries)
        b = encoder.itm_logits(vision, **tokens, query_embeds=other)  # (a constant shift would not do:
        # the Q-Former layer-normalises its input embeddings)
        default = encoder.itm_logits(vision, **tokens)
    assert a.shape == (3, 2)
    assert not torch.allclose(a, b) and not torch.allclose(a, default)
    with pytest.raises(ValueError, match="query_embeds must be"):
        encoder.itm_logits(vision, **tokens, query_embeds=queries[:, :2])  # Q = 2, not 4
    with pytest.raises(ValueError, match="query_embeds must be"):
        encoder.itm_logits(vision, **tokens, query_embeds=queries[:2])  # batch 2, not 3


# ---------------------------------------------------------------- loss


def test_composed_queries_with_reference_negatives_against_a_hand_computation(encoder):
    """B=2 with two targets: each query's negative query is necessarily the other one, its negative
    image its own reference."""
    ids = torch.tensor([5, 6])
    reference, target, tokens, z_r, itc = _composed_batch(encoder, 2, ids)
    loss = ComposedItmLoss().composed(
        encoder, target, tokens["input_ids"], tokens["attention_mask"], itc, ids, negatives="reference",
        reference_vision_embeds=reference, queries="composed", composed_queries=z_r,
    )["cir_itm"]
    expected = _naive(encoder, target, reference, z_r, tokens["input_ids"], tokens["attention_mask"],
                      torch.tensor([1, 0]))
    torch.testing.assert_close(loss, expected)
    (grad,) = torch.autograd.grad(loss, z_r)
    assert grad.abs().sum() > 0  # the loss reaches Z_R (and through it the fusion)


@pytest.mark.parametrize("max_pairs", [None, 2])
def test_composed_queries_with_hard_negatives_against_a_hand_computation(encoder, max_pairs):
    ids = torch.tensor([1, 2, 1, 3])  # queries 0 and 2 share a target: never negatives of each other
    _, target, tokens, z_r, itc = _composed_batch(encoder, 4, ids)
    loss = ComposedItmLoss(max_pairs).composed(
        encoder, target, tokens["input_ids"], tokens["attention_mask"], itc, ids,
        generator=torch.Generator().manual_seed(7), queries="composed", composed_queries=z_r,
    )["cir_itm"]
    # the draws, reproduced: softmax of the similarities over the other targets, target draw first
    g = torch.Generator().manual_seed(7)
    same = ids[:, None] == ids[None, :]  # (4, 4)
    weights_q2g = F.softmax(itc.sim_q2g.detach().masked_fill(same, float("-inf")), dim=1)
    weights_g2q = F.softmax(itc.sim_g2q.detach().masked_fill(same, float("-inf")), dim=1)
    neg_target = torch.multinomial(weights_q2g, 1, generator=g)[:, 0]  # (4,)
    neg_query = torch.multinomial(weights_g2q, 1, generator=g)[:, 0]  # (4,)
    assert not same[torch.arange(4), neg_target].any() and not same[torch.arange(4), neg_query].any()
    n = max_pairs or 4
    expected = _naive(encoder, target[:n], target[neg_target][:n], z_r, tokens["input_ids"],
                      tokens["attention_mask"], neg_query[:n])
    torch.testing.assert_close(loss, expected)


def test_composed_queries_bad_arguments_are_clear_errors(encoder):
    ids = torch.tensor([5, 6])
    _, target, tokens, z_r, itc = _composed_batch(encoder, 2, ids)
    args = (encoder, target, tokens["input_ids"], tokens["attention_mask"], itc, ids)
    with pytest.raises(ValueError, match="'text' or 'composed', got 'both'"):
        ComposedItmLoss().composed(*args, queries="both", composed_queries=z_r)
    with pytest.raises(ValueError, match="composed_queries"):
        ComposedItmLoss().composed(*args, queries="composed")
    with pytest.raises(ValueError, match="composed_queries"):
        ComposedItmLoss().composed(*args, queries="composed", composed_queries=z_r[:1])


# ---------------------------------------------------------------- module


def test_module_rejects_an_unknown_cir_itm_queries(tok):
    from unifashion.module import UniFashionModule

    with pytest.raises(ValueError, match="cir_itm_queries must be 'text' or 'composed', got 'reference'"):
        UniFashionModule(tiny_encoder_config(tok), cir_itm_queries="reference")


class _FusionGrad(L.Callback):
    """The query tokens' gradient before the optimizer step. With only ``cir_itm`` weighted and
    ``cir_itm_queries="composed"``, the tokens reach the loss only through Z_R (`fuse`): the ITM pass
    uses Z_R in their place, and the target's Z_T picks the negatives without gradient."""

    def __init__(self) -> None:
        self.grads: list[torch.Tensor | None] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grad = pl_module.encoder.model.query_tokens.grad
        self.grads.append(None if grad is None else grad.clone())


def test_phase2_step_with_composed_queries_trains_the_fusion(tmp_path, tok):
    from unifashion.data.fashioniq import FashionIQDataModule
    from unifashion.models.captioner import CaptionerConfig
    from unifashion.module import UniFashionModule
    from unifashion.optim import OptimizerConfig

    write_fashioniq(tmp_path)
    train_bpe_tokenizer(TEXTS * 3, tmp_path / "ltok", vocab_size=300)
    cap = CaptionerConfig(tokenizer=str(tmp_path / "ltok"), hidden_size=32, num_layers=1, num_heads=2,
                          intermediate_size=64, max_position_embeddings=128, lora_rank=4, lora_alpha=8)
    L.seed_everything(0)
    model = UniFashionModule(
        tiny_encoder_config(tok, qformer_dropout=0.0), captioner=cap, generator=GEN, phase="phase2_composed",
        loss_weights={"cir_itc_img": 0.0, "cir_itc_cap": 0.0, "cir_itm": 1.0, "itg": 0.0, "denoise": 0.0},
        optimizer=OptimizerConfig(lr=1e-3, warmup_steps=0), cir_itm_queries="composed", cir_itm_negatives="random",
    )
    assert model.cir_itm_queries == "composed"
    dm = FashionIQDataModule(str(tmp_path), batch_size=4, image_size=16)
    fused: list[torch.Tensor] = []
    fuse = model.encoder.fuse

    def fuse_keeping_z_r(*args, **kwargs):
        z_r, e_cls = fuse(*args, **kwargs)  # (B, Q, H), (B, E)
        z_r.retain_grad()
        fused.append(z_r)
        return z_r, e_cls

    model.encoder.fuse = fuse_keeping_z_r
    grads = _FusionGrad()
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, limit_val_batches=0, enable_model_summary=False,
                        default_root_dir=tmp_path, callbacks=[grads])
    trainer.fit(model, dm)
    loss = trainer.logged_metrics["train/loss_cir_itm_step"]
    assert torch.isfinite(loss) and loss > 0
    assert len(fused) == 1 and fused[0].grad is not None and fused[0].grad.abs().sum() > 0  # dL/dZ_R
    assert len(grads.grads) == 1 and grads.grads[0] is not None
    assert grads.grads[0].abs().sum() > 0
