"""The `unifashion` command end to end on the tiny synthetic benchmark: data synth -> fit (shipped
tiny config, through LightningCLI) -> eval, plus the `lightning` alias."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from unifashion.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    assert main(["data", "synth", "--out", str(out), "--scale", "tiny", "--datasets", "fashiongen",
                 "--lm-steps", "5", "--vae-steps", "3"]) == 0
    return out


def test_synth_writes_official_layout_and_tokenizers(synth):
    assert (synth / "fashiongen" / "fashiongen_256_256_train.h5").is_file()
    assert (synth / "fashiongen" / "fashiongen_256_256_validation.h5").is_file()
    for name in ("qformer", "llm"):
        assert (synth / "tokenizers" / name / "tokenizer.json").is_file()
    # the LLM tokenizer learned the prompt texts: whole words, not byte pieces
    from transformers import AutoTokenizer

    from unifashion.models.tiny_assets import prompt_texts

    tok = AutoTokenizer.from_pretrained(synth / "tokenizers" / "llm")
    for prompt in prompt_texts():
        assert len(tok(prompt, add_special_tokens=False).input_ids) <= len(prompt) / 3, prompt  # bytes: len(prompt)
    # and the tiny caption LLM was pretrained and saved like a real one
    llm = synth / "pretrained" / "llm"
    assert (llm / "config.json").is_file() and (llm / "tokenizer.json").is_file()
    assert json.loads((llm / "pretraining.json").read_text())["steps"] == 5
    # and the tiny VAE, loadable the way the generator loads SD's VAE
    from diffusers import AutoencoderKL

    vae = synth / "pretrained" / "vae"
    assert json.loads((vae / "pretraining.json").read_text())["steps"] == 3
    assert AutoencoderKL.from_pretrained(vae).config.scaling_factor > 0


def test_fit_with_the_tiny_config_then_eval(synth, tmp_path, capsys):
    run = tmp_path / "run"
    main([
        "fit", "--config", str(ROOT / "lightning_configs" / "tiny" / "phase1_retrieval.yaml"),
        "--trainer.max_steps", "2", "--trainer.default_root_dir", str(run),
        "--trainer.logger.init_args.save_dir", str(run), "--trainer.enable_progress_bar", "false",
        "--data.init_args.root", str(synth / "fashiongen"), "--data.init_args.batch_size", "8",
        "--data.init_args.num_workers", "0",
        "--model.encoder.tokenizer", str(synth / "tokenizers" / "qformer"),
    ])
    ckpts = list(run.rglob("last.ckpt"))
    assert len(ckpts) == 1
    assert (run / "logs" / "version_0" / "config.yaml").is_file()  # LightningCLI saved the config
    ckpt = tmp_path / "model.ckpt"
    shutil.copyfile(ckpts[0], ckpt)
    assert main(["eval", "cmr", "--ckpt", str(ckpt), "--data", str(synth), "--num-negatives", "10",
                 "--rerank-k", "3"]) == 0
    # beside the checkpoint, in its own folder: a run directory's metrics.json is never overwritten
    assert not (tmp_path / "metrics.json").exists()
    metrics = json.loads((tmp_path / "eval_model" / "metrics.json").read_text())
    assert 0 <= metrics["cmr/fashiongen/sample100/mean/R"] <= 100
    assert "cmr/fashiongen/full/i2t/R@1" in metrics and "time/eval_cmr_s" in metrics
    # re-ranking only re-sorts each query's top 3: R@5 and R@10 cannot move, under either rule
    for rule in ("full_itm", "full_itm_lavis"):
        for d in ("i2t", "t2i"):
            for k in (5, 10):
                assert metrics[f"cmr/fashiongen/{rule}/{d}/R@{k}"] == metrics[f"cmr/fashiongen/full/{d}/R@{k}"]
    assert "R@1" in capsys.readouterr().out


def test_lightning_alias_is_installed():
    import importlib.metadata as md

    scripts = {ep.name: ep.value for ep in md.entry_points(group="console_scripts")}
    assert scripts.get("unifashion") == scripts.get("lightning") == "unifashion.cli:main"


def test_help_lists_subcommands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in ("data", "eval", "caption", "generate", "demo", "fit"):
        assert word in out
