"""The tiny caption LLM pretrained on synthetic captions: texts, learning, save/load as a real LLM."""

from __future__ import annotations

import pytest
import torch
from test_captioning_pipeline import CORPUS
from transformers import AutoModelForCausalLM

from unifashion.models.captioner import Captioner, CaptionerConfig
from unifashion.models.instructions import INSTRUCTIONS
from unifashion.models.tiny_language_model import (
    TinyLanguageModelConfig,
    pretrain_tiny_language_model,
    pretraining_texts,
)
from unifashion.models.tokenizers import train_bpe_tokenizer

CAPTIONS = [("professional", "Long sleeve jacket in navy. Solid colour throughout."),
            ("short", "navy plain long-sleeve jacket"),
            ("detailed", "A navy jacket with long sleeves. It is plain.")] * 8
SMALL = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=96,
             batch_size=8, warmup_steps=2)


def test_pretraining_texts_use_each_styles_instruction():
    texts = pretraining_texts(CAPTIONS[:3], seed=1)
    for (_style, caption), text, dataset in zip(CAPTIONS, texts, ("fashiongen", "fashion200k", "fashioniq")):
        assert text.startswith("USER: <Img> </Img> ") and text.endswith(f" Assistant: {caption}")
        assert any(f" {ins} Assistant:" in text for ins in INSTRUCTIONS[dataset])
    assert pretraining_texts(CAPTIONS, seed=1) == pretraining_texts(CAPTIONS, seed=1)
    with pytest.raises(KeyError, match="caption style"):
        pretraining_texts([("poem", "x")])


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tinylm")
    texts = pretraining_texts(CAPTIONS)
    train_bpe_tokenizer(texts + CORPUS, root / "tok", vocab_size=300)
    return root / "tok"


def test_pretraining_learns_and_saves_a_loadable_deterministic_llm(tokenizer_dir, tmp_path):
    texts = pretraining_texts(CAPTIONS)
    cfg = TinyLanguageModelConfig(steps=80, lr=1e-2, **SMALL)
    report = pretrain_tiny_language_model(texts, tokenizer_dir, tmp_path / "a", cfg)
    assert report["last_loss"] < 0.3 * report["first_loss"], report
    again = pretrain_tiny_language_model(texts, tokenizer_dir, tmp_path / "b", cfg)
    assert again["last_loss"] == report["last_loss"]
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "b")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    # the captioner loads it like a real LLM (its own tokenizer from the same directory)
    captioner = Captioner(CaptionerConfig(llm=str(tmp_path / "a"), lora_rank=4, lora_alpha=8), query_dim=16,
                          num_queries=2)
    assert captioner.tokenizer.eos_token == "</s>"
    base = captioner.language_model.get_base_model()
    torch.testing.assert_close(base.lm_head.weight, a.lm_head.weight)
    # with LoRA at its zero start the LM continues a prompt as it learned to
    prompt = captioner.tokenizer("USER: <Img> </Img> Short description. Assistant:", return_tensors="pt")
    with torch.no_grad():
        out = a.generate(**prompt, max_new_tokens=6, do_sample=False)
    continuation = captioner.tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert continuation.strip().startswith("navy"), continuation


def test_checkpoint_leaves_out_the_pretrained_llm_and_reloads_strictly(tokenizer_dir, tmp_path):
    import lightning as L
    from fixtures_data import write_fashiongen
    from test_captioning_pipeline import encoder_config

    from unifashion.api import UniFashion
    from unifashion.data.fashiongen import FashionGenDataModule
    from unifashion.models.tokenizers import train_wordpiece_tokenizer
    from unifashion.module import UniFashionModule

    pretrain_tiny_language_model(pretraining_texts(CAPTIONS), tokenizer_dir, tmp_path / "llm",
                                 TinyLanguageModelConfig(steps=2, **SMALL))
    write_fashiongen(tmp_path / "fashiongen", size=16)
    train_wordpiece_tokenizer(CORPUS * 3, tmp_path / "qtok", vocab_size=200)
    L.seed_everything(0)
    model = UniFashionModule(encoder_config(tmp_path / "qtok"), phase="phase1_captioning",
                             captioner=CaptionerConfig(llm=str(tmp_path / "llm"), lora_rank=4, lora_alpha=8,
                                                       max_caption_tokens=16))
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, limit_val_batches=0, enable_checkpointing=False)
    trainer.fit(model, FashionGenDataModule(root=str(tmp_path / "fashiongen"), batch_size=4, image_size=16))
    trainer.save_checkpoint(tmp_path / "cap.ckpt")
    saved = torch.load(tmp_path / "cap.ckpt", weights_only=False)["state_dict"]
    base = [k for k in model.state_dict() if k.startswith("captioner.language_model.") and "lora_" not in k]
    assert base and not any(k in saved for k in base)  # the frozen base LLM reloads from its directory
    assert any("lora_" in k for k in saved) and any(k.startswith("encoder.") for k in saved)
    reloaded = UniFashion.from_checkpoint(tmp_path / "cap.ckpt", "cpu").module
    for k, v in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[k], v, msg=lambda m, k=k: f"{k}: {m}")
    # loading stays strict for everything that is not a pretrained weight
    ckpt = torch.load(tmp_path / "cap.ckpt", weights_only=False)
    ckpt["state_dict"].pop(next(k for k in ckpt["state_dict"] if "lora_" in k))
    torch.save(ckpt, tmp_path / "broken.ckpt")
    with pytest.raises(ValueError, match="lora_A"):
        UniFashion.from_checkpoint(tmp_path / "broken.ckpt", "cpu")
