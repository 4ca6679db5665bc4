"""UniFashionModule: phase table, freeze policy, a short fit, trainable-only checkpoints, CMR eval."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from fixtures_data import write_fashiongen
from tiny import tiny_encoder_config

from unifashion.api import UniFashion
from unifashion.data.fashiongen import FashionGenDataModule
from unifashion.models.tokenizers import train_wordpiece_tokenizer
from unifashion.module import UniFashionModule
from unifashion.optim import OptimizerConfig
from unifashion.phases import PHASES, apply_freeze_policy, get_phase, resolve_loss_weights
from unifashion.tasks.cmr.evaluate import run_cmr

WORDS = "caf cotton shirt striped blue jeans red dress black white wool coat".split()


@pytest.fixture(scope="module")
def setup_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mod")
    write_fashiongen(root / "fashiongen", size=16)
    tok = root / "tok"
    train_wordpiece_tokenizer([" ".join(WORDS)] * 5 + WORDS, tok, vocab_size=200)
    return root, tok


def test_phase_table_and_weights():
    p = get_phase("phase1_retrieval")
    assert resolve_loss_weights(p, {"itm": 0}) == {"itc": 1.0, "itm": 0.0}
    with pytest.raises(ValueError, match="itg"):
        resolve_loss_weights(p, {"itg": 1.0})
    with pytest.raises(ValueError, match="known phases"):
        get_phase("phase3")
    for phase in PHASES.values():  # every term names the batch kind it consumes
        assert set(phase.batch_kinds) == set(phase.loss_weights)


def test_freeze_policy_counts():
    a, b = torch.nn.Linear(2, 3), torch.nn.Linear(3, 1)
    counts = apply_freeze_policy({"x": list(a.parameters()), "y": list(b.parameters())}, trains=("x", "y"),
                                 exclude=("y",))
    assert counts == {"x": 9, "y": 0}
    assert all(p.requires_grad for p in a.parameters()) and not any(p.requires_grad for p in b.parameters())
    with pytest.raises(ValueError, match="another group"):
        apply_freeze_policy({"x": list(a.parameters()), "y": list(a.parameters())}, trains=("x",))


def test_freeze_vision_follows_config(setup_dirs):
    _, tok = setup_dirs
    frozen = UniFashionModule(tiny_encoder_config(tok, freeze_vision=True))
    vision = frozen.encoder.model.vision_model.parameters()
    assert not any(p.requires_grad for p in vision)
    assert all(p.requires_grad for p in frozen.encoder.model.qformer.parameters())
    trained = UniFashionModule(tiny_encoder_config(tok, freeze_vision=False))
    assert all(p.requires_grad for p in trained.encoder.model.vision_model.parameters())


def test_phase2_without_its_submodules_is_a_clear_error(setup_dirs):
    _, tok = setup_dirs
    with pytest.raises(ValueError, match="captioner"):  # phase 2 needs the captioner and the generator
        UniFashionModule(tiny_encoder_config(tok), phase="phase2_composed")


def test_phase_needs_its_submodules(setup_dirs):
    _, tok = setup_dirs
    with pytest.raises(ValueError, match="captioner"):
        UniFashionModule(tiny_encoder_config(tok), phase="phase1_captioning")


def test_fit_checkpoint_reload_and_eval(setup_dirs, tmp_path):
    root, tok = setup_dirs
    L.seed_everything(0)
    model = UniFashionModule(tiny_encoder_config(tok), optimizer=OptimizerConfig(lr=1e-3, warmup_steps=2))
    dm = FashionGenDataModule(root=str(root / "fashiongen"), batch_size=4, image_size=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, limit_val_batches=0, enable_model_summary=False)
    trainer.fit(model, dm)
    # the injected tokenizer reached the batches and every trained group moved
    moved = [k for k, v in model.state_dict().items() if not torch.equal(before[k], v)]
    assert any(k.startswith("encoder.model.qformer") for k in moved)
    assert "encoder.temp" in moved
    assert torch.isfinite(trainer.logged_metrics["train/loss_itc_step"])
    assert "train/loss_itm_step" in trainer.logged_metrics

    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    reloaded = UniFashion.from_checkpoint(ckpt, device="cpu").module
    for k, v in model.state_dict().items():
        assert torch.equal(v, reloaded.state_dict()[k]), k

    metrics = run_cmr(UniFashion(reloaded), root, protocols=("full",))
    assert set(metrics) >= {"cmr/fashiongen/full/i2t/R@1", "cmr/fashiongen/full/t2i/R@10"}
    assert all(0 <= v <= 100 for v in metrics.values())


def test_wholly_frozen_parts_stay_in_eval_mode(setup_dirs):
    _, tok = setup_dirs
    model = UniFashionModule(tiny_encoder_config(tok))
    model.train()
    assert model.encoder.training  # phase1_retrieval trains the encoder
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    model.train()
    assert model.training and not model.encoder.training and not any(m.training for m in model.encoder.modules())


@pytest.mark.parametrize("trains_vision", [True, False])
def test_itm_reaches_the_vision_encoder_only_when_asked(setup_dirs, trains_vision):
    """`itm_trains_vision=False`: the ITM loss leaves the vision encoder's gradients untouched (BLIP-2's
    frozen-ViT setting), while ITC still trains it; the Q-Former gets ITM gradients either way."""
    _, tok = setup_dirs
    torch.manual_seed(0)
    model = UniFashionModule(tiny_encoder_config(tok, freeze_vision=False), itm_trains_vision=trains_vision)
    s = model.encoder.config.image_size
    texts = ["red shirt", "blue dress", "green coat", "black skirt"]
    batch = {"image": torch.randn(4, 3, s, s), **model.encoder.tokenize(texts), "product_id": torch.arange(4),
             "text": texts}
    losses = model.compute_losses(batch)

    def moved(params) -> bool:
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)

    vision = model.encoder.vision_parameters()
    cross = [p for n, p in model.encoder.model.qformer.named_parameters() if "crossattention" in n]
    losses["itm"].backward(retain_graph=True)
    assert moved(cross)
    assert moved(vision) == trains_vision
    losses["itc"].backward()  # ITC shapes the vision encoder either way
    assert moved(vision)
