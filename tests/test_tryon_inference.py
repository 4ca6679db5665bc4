"""Try-on / design inputs and inference (models/tryon.py), and the dataset's agnostic image reaching the UNet."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures_vitonhd import AGNOSTIC_MASK_BOX, write_vitonhd
from tiny import tiny_encoder_config

from unifashion.data.batch import TRYON
from unifashion.data.vitonhd import VitonHDDataModule
from unifashion.models.encoder import MultimodalEncoder
from unifashion.models.generator import Generator, GeneratorConfig
from unifashion.models.tokenizers import train_wordpiece_tokenizer
from unifashion.models.tryon import TryOnInputs, generate_tryon, prepare_tryon_inputs, tryon
from unifashion.module import UniFashionModule

H, W = 16, 12
GEN = dict(pixel_space=True, num_queries=4, height=H, width=W, sample_size=16, block_out_channels=(16, 32, 32),
           attention_from_block=1, cross_attention_dim=16, attention_head_dim=8, norm_num_groups=8,
           num_train_timesteps=100, guidance_scale=2.0)
WORDS = "red short-sleeve t-shirt cotton top crew neck blue striped shirt black white".split()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("tryon")
    root = write_vitonhd(d / "viton")
    tok = d / "tok"
    train_wordpiece_tokenizer([" ".join(WORDS)] * 5 + WORDS, tok, vocab_size=200)
    torch.manual_seed(0)
    encoder = MultimodalEncoder(tiny_encoder_config(tok)).eval()
    return root, tok, encoder


def _dm(root, **kw):
    return VitonHDDataModule(str(root), height=H, width=W, encoder_image_size=16, **kw)


def test_inputs_from_files_match_the_data_loader(env):
    root, _, encoder = env
    gen = Generator(GeneratorConfig(**GEN, variant="tryon"), query_dim=32)
    item = _dm(root).dataset("test", "paired")[0]  # 00003_00, its own cloth
    d = root / "test"
    inputs = prepare_tryon_inputs(gen, 16, agnostic=d / "agnostic-v3.2" / "00003_00.jpg",
                                  mask=d / "agnostic-mask" / "00003_00_mask.png", garment=d / "cloth" / "00003_00.jpg",
                                  text=item["text"])
    assert torch.equal(inputs.agnostic[0], item["agnostic"])
    assert torch.equal(inputs.inpaint_mask[0], item["inpaint_mask"])
    assert torch.equal(inputs.cloth[0], item["cloth"])
    # the encoder view goes through the same target-pad + CLIP transform (up to the uint8 round trip of a resize)
    assert inputs.image_clip.shape == (1, 3, 16, 16)
    assert inputs.text == [item["text"]]


def test_full_person_is_masked_grey_and_sketch_file_follows_mgd(env):
    root, _, _ = env
    gen = Generator(GeneratorConfig(**GEN, variant="design"), query_dim=32)
    d = root / "test"
    inputs = prepare_tryon_inputs(gen, 16, person=d / "image" / "00003_00.jpg", mask=d / "agnostic-mask" / "00003_00_mask.png",
                                  sketch=d / "im_sketch" / "00003_00.png", text="black top")
    mask = inputs.inpaint_mask[0, 0].bool()
    assert mask.any() and (inputs.agnostic[0][:, mask] == 0).all()  # the region is mid grey (0 in [-1, 1])
    # mask box of the 64 x 48 fixture scaled to 16 x 12 (rows 12..40 -> 3..10, cols 6..41 -> 1.5..10.25)
    r0, r1, c0, c1 = AGNOSTIC_MASK_BOX
    assert mask[(r0 + r1) // 8, (c0 + c1) // 8] and not mask[0, 0]
    item = _dm(root, encoder_input="sketch").dataset("test", "paired")[0]
    assert torch.equal(inputs.sketch[0], item["sketch"])  # same MGD threshold rule and test threshold
    with pytest.raises(ValueError, match="exactly one"):
        prepare_tryon_inputs(gen, 16, mask=d / "agnostic-mask" / "00003_00_mask.png", sketch=inputs.sketch[0])
    with pytest.raises(ValueError, match="sketch"):
        prepare_tryon_inputs(gen, 16, agnostic=inputs.agnostic, mask=inputs.inpaint_mask)


@pytest.mark.parametrize("variant,copy", [("tryon", False), ("tryon", True), ("design", True)])
def test_tryon_call_is_seeded_and_uses_the_text(env, variant, copy):
    root, _, encoder = env
    torch.manual_seed(0)
    gen = Generator(GeneratorConfig(**GEN, variant=variant, controlnet_copy=copy), query_dim=32).eval()
    with torch.no_grad():
        gen.image_adapter.weight.mul_(20)  # make the condition matter in an untrained model
    d = root / "test"
    kw = dict(agnostic=[d / "agnostic-v3.2" / "00003_00.jpg"] * 2, mask=[d / "agnostic-mask" / "00003_00_mask.png"] * 2,
              garment=[d / "cloth" / "00004_00.jpg"] * 2, sketch=[d / "im_sketch" / "00003_00.png"] * 2, steps=3)
    a = tryon(encoder, gen, text=["red top", "blue shirt"], seed=1, **kw)
    b = tryon(encoder, gen, text=["red top", "blue shirt"], seed=1, **kw)
    assert a.shape == (2, 3, H, W) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    # same noise (seed), same images: the two items differ only by their texts
    same_text = tryon(encoder, gen, text=["red top", "red top"], seed=1, **kw)
    assert not torch.equal(a[1], same_text[1]) and torch.equal(a[0], same_text[0])


def test_training_feeds_the_dataset_agnostic_image_not_the_remasked_target(env, monkeypatch):
    root, tok, _ = env
    model = UniFashionModule(tiny_encoder_config(tok), generator={**GEN, "variant": "tryon"}, phase="finetune_tryon")
    dm = _dm(root, mask_source="file", agnostic_source="file", max_val_items=None)
    dm.set_tokenizer(model.encoder.tokenizer, 16)
    batch = next(iter(torch.utils.data.DataLoader(dm.dataset("test", "paired"), batch_size=2,
                                                  collate_fn=dm.collate(TRYON))))
    seen = {}
    original = model.generator.spatial_conditions

    def spy(conditions, latent_hw, default_person=None):
        out = original(conditions, latent_hw, default_person)
        seen["extra"] = out
        return out

    monkeypatch.setattr(model.generator, "spatial_conditions", spy)
    model.compute_losses(batch)
    masked = seen["extra"][:, 1:4]  # pixel space: [mask (1), masked person (3)]
    assert torch.equal(masked, batch["agnostic"])  # the agnostic-v3.2 file as it is
    remasked = batch["image"] * (batch["inpaint_mask"] < 0.5)
    assert not torch.equal(masked, remasked)  # (the fixture's agnostic differs from the re-masked person)
    assert torch.equal(seen["extra"][:, :1], batch["inpaint_mask"])  # the agnostic-mask file


def test_generate_tryon_from_a_loader_batch(env):
    root, tok, encoder = env
    gen = Generator(GeneratorConfig(**GEN, variant="design", controlnet_copy=True), query_dim=32).eval()
    ds = _dm(root, encoder_input="sketch").dataset("test", "unpaired")
    items = [ds[0], ds[1]]
    batch = {k: torch.stack([it[k] for it in items]) if isinstance(items[0][k], torch.Tensor) else
             [it[k] for it in items] for k in items[0]}
    out = generate_tryon(encoder, gen, TryOnInputs.from_batch(batch), steps=2)
    assert out.shape == (2, 3, H, W)
    assert np.isfinite(out.numpy()).all()
