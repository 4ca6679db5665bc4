"""FrozenOutputCache: exact query outputs by image content, in isolation and inside a captioning fit (the VAE
posteriors: tests/test_generator.py, tests/test_generation_pipeline.py)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from test_captioning_pipeline import captioner_config, encoder_config, write_caption_fixture

from unifashion.data.fashiongen import FashionGenDataModule
from unifashion.models.encoder import MultimodalEncoder
from unifashion.models.frozen_cache import FrozenOutputCache, image_key
from unifashion.module import UniFashionModule
from unifashion.optim import OptimizerConfig


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return write_caption_fixture(tmp_path_factory.mktemp("qcache"))


class CountingEncode:
    """encode_image(...).query_output that counts the images it is asked to encode."""

    def __init__(self, encoder: MultimodalEncoder):
        self.encoder, self.images = encoder, 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.images += len(images)
        return self.encoder.encode_image(images).query_output


def test_cache_returns_the_encoder_output_and_computes_each_image_once(dirs):
    torch.manual_seed(0)
    encoder = MultimodalEncoder(encoder_config(dirs / "qtok")).eval()
    encode = CountingEncode(encoder)
    cache = FrozenOutputCache(max_items=100)
    a = torch.randn(3, 3, 16, 16)
    b = torch.cat([a[1:], torch.randn(2, 3, 16, 16)])  # two seen images, two new
    with torch.no_grad():
        expected_a = encoder.encode_image(a).query_output  # (3, Q, H)
        expected_b = encoder.encode_image(b).query_output  # (4, Q, H)
    torch.testing.assert_close(cache(encode, a), expected_a)
    torch.testing.assert_close(cache(encode, b), expected_b)
    torch.testing.assert_close(cache(encode, a), expected_a)  # all hits
    assert encode.images == 5 and len(cache) == 5
    assert (cache.hits, cache.misses) == (5, 5)
    flipped = a.flip(-1)  # an augmented view is another image
    torch.testing.assert_close(cache(encode, flipped), encoder.encode_image(flipped).query_output)
    assert encode.images == 8


def test_full_cache_still_returns_exact_outputs(dirs):
    encoder = MultimodalEncoder(encoder_config(dirs / "qtok")).eval()
    encode = CountingEncode(encoder)
    cache = FrozenOutputCache(max_items=2)
    images = torch.randn(4, 3, 16, 16)
    expected = encoder.encode_image(images).query_output.detach()
    for _ in range(2):
        torch.testing.assert_close(cache(encode, images), expected)
    assert len(cache) == 2 and encode.images == 4 + 2  # the two stored ones are not recomputed
    off = FrozenOutputCache(max_items=0)
    torch.testing.assert_close(off(encode, images), expected)
    assert len(off) == 0


def test_image_key_depends_on_content_shape_and_dtype():
    x = torch.zeros(3, 4, 4)
    assert image_key(x) == image_key(x.clone())
    assert image_key(x) != image_key(x.reshape(3, 2, 8))
    assert image_key(x) != image_key(x.double())
    y = x.clone()
    y[0, 0, 0] = 1e-7
    assert image_key(x) != image_key(y)
    with pytest.raises(ValueError, match="max_items"):
        FrozenOutputCache(-1)


def test_cache_needs_a_frozen_encoder(dirs):
    with pytest.raises(ValueError, match="query_cache_size"):
        UniFashionModule(encoder_config(dirs / "qtok"), query_cache_size=10)  # phase1_retrieval trains it


class RecordModes(L.Callback):
    """Records whether any encoder module was in train mode at a training step."""

    def __init__(self):
        self.encoder_training: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.encoder_training.append(any(m.training for m in pl_module.encoder.modules()))


def _fit(dirs, cache_size: int, tmp_path) -> UniFashionModule:
    L.seed_everything(0)
    model = UniFashionModule(
        encoder_config(dirs / "qtok"), captioner=captioner_config(dirs / "ltok"), phase="phase1_captioning",
        optimizer=OptimizerConfig(lr=1e-2, min_lr=1e-3, weight_decay=0.0, warmup_steps=2),
        query_cache_size=cache_size,
    )
    dm = FashionGenDataModule(root=str(dirs / "fashiongen"), batch_size=4, image_size=16)
    modes = RecordModes()
    trainer = L.Trainer(max_steps=12, max_epochs=100, accelerator="cpu", logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, limit_val_batches=0, enable_model_summary=False,
                        enable_checkpointing=False, callbacks=[modes])
    trainer.fit(model, dm)
    # the frozen encoder never runs with dropout (its outputs would otherwise differ per call)
    assert modes.encoder_training and not any(modes.encoder_training)
    return model


def test_captioning_fit_with_cache_equals_fit_without(dirs, tmp_path):
    plain = _fit(dirs, 0, tmp_path / "plain")
    cached = _fit(dirs, 1000, tmp_path / "cached")
    assert cached.query_cache.hits > 0  # 12 steps of 4 cycle the fixture's training rows several times
    trained = {k: v for k, v in plain.state_dict().items() if "lora_" in k or "text_adapter" in k}
    assert trained
    for k, v in trained.items():
        torch.testing.assert_close(cached.state_dict()[k], v, msg=lambda m, k=k: f"{k}: {m}")
