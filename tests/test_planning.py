"""The memory planner (`unifashion.planning`): parameter counts and DeepSpeed's estimators.

References: a tiny Llama counted by hand; the tiny encoder and generator counted on the instantiated
UniFashionModule; the paper-size models against their published parameter counts (LLaMA/Vicuna-7B
6,738,415,616; SD-1.4 UNet 859,520,964 and VAE 83,653,863); the memory rows against DeepSpeed's
estimator functions called directly and the DDP rule by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tiny import tiny_encoder_config

from unifashion.planning import count_captioner, estimate, format_plan, plan, strategy_stage

CONFIGS = Path(__file__).resolve().parents[1] / "lightning_configs"
WORDS = "blue jeans red dress wool coat white shirt".split()
GEN = dict(pixel_space=True, num_queries=4, height=8, width=8, sample_size=8, block_out_channels=(16, 32),
           attention_from_block=0, cross_attention_dim=16, attention_head_dim=8, norm_num_groups=8,
           num_train_timesteps=100)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from unifashion.models.tokenizers import train_bpe_tokenizer, train_wordpiece_tokenizer

    root = tmp_path_factory.mktemp("plan")
    train_wordpiece_tokenizer([" ".join(WORDS)] * 5 + WORDS, root / "qtok", vocab_size=200)
    train_bpe_tokenizer([" ".join(WORDS)] * 5 + WORDS + ["USER: <Img> </Img> Assistant:"], root / "ltok",
                        vocab_size=120)
    return root


def test_tiny_llama_and_lora_counted_by_hand(tok):
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(tok / "ltok"))
    part = count_captioner(dict(tokenizer=str(tok / "ltok"), hidden_size=8, num_layers=1, num_heads=2,
                                intermediate_size=16, lora_rank=2, lora_alpha=4), query_dim=4)
    h, f = 8, 16
    llama = vocab * h + (4 * h * h + 3 * h * f + 2 * h) + h + vocab * h  # embed, layer (attn, mlp, 2 norms), norm, head
    lora = 2 * (4 * (h + h) + 2 * (h + f) + (f + h))  # r (in + out) on q k v o, gate up, down
    assert part.groups == {"text_adapter": 4 * h + h, "lora": lora, "captioner_frozen": llama}


def test_tiny_module_counts_match_the_instantiated_module(tok, tmp_path):
    from unifashion.models.captioner import CaptionerConfig
    from unifashion.module import UniFashionModule

    enc = tiny_encoder_config(tok / "qtok", freeze_vision=True)
    cap = CaptionerConfig(tokenizer=str(tok / "ltok"), hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                          lora_rank=2, lora_alpha=4)
    module = UniFashionModule(enc, captioner=cap, generator=dict(GEN, variant="tryon"), phase="phase1_generative")
    config = {"model": {"phase": "phase1_generative", "encoder": vars(enc), "captioner": vars(cap),
                        "generator": dict(GEN, variant="tryon")}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(_yaml_safe(config)))
    result = plan([path], gpus=2)
    expected = {g: sum(p.numel() for p in ps) for g, ps in module.parameter_groups().items()}
    got = {g: n for part in result.parts for g, n in part.groups.items()}
    assert got == expected
    assert result.trainable == sum(p.numel() for p in module.parameters() if p.requires_grad)
    assert result.total == sum(p.numel() for p in module.parameters())
    assert "config fields" in result.parts[0].source


def test_estimates_are_deepspeeds_and_the_ddp_rule(tok, tmp_path):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    from unifashion.planning import PartCount

    parts = [PartCount("encoder", "x", {"qformer": 1000, "vision": 5000}, largest_layer=300),
             PartCount("captioner", "y", {"lora": 200, "captioner_frozen": 10_000}, {"captioner_frozen": 2},
                       largest_layer=700)]
    est = estimate(parts, ("qformer", "lora"), gpus=4)
    trainable, frozen = 1200, 15_000
    assert est["ddp"]["gpu"] == 16 * trainable + 4 * 5000 + 2 * 10_000
    cpu, gpu = estimate_zero2_model_states_mem_needs(trainable, 4, 1, cpu_offload=False)
    assert est["zero2"] == {"gpu": gpu + 2 * frozen, "cpu": cpu}
    cpu, gpu, _ = estimate_zero3_model_states_mem_needs(trainable, 700, 4, 1, cpu_offload=False, cpu_offload_params=False)
    assert est["zero3"] == {"gpu": gpu + 2 * frozen // 4, "cpu": cpu}
    cpu, gpu, _ = estimate_zero3_model_states_mem_needs(trainable, 700, 4, 1, cpu_offload=True, cpu_offload_params=True)
    assert est["zero3_offload_all"]["gpu"] == gpu


@pytest.mark.parametrize(("overlay", "stage"), [(None, "ddp"), ("zero2.yaml", "zero2"), ("zero3.yaml", "zero3"),
                                                ("zero3_offload.yaml", "zero3_offload_all")])
def test_strategy_config_names_its_stage(overlay, stage):
    from unifashion.planning import merge_configs

    paths = [CONFIGS / "phase1_retrieval.yaml"] + ([CONFIGS / "deepspeed" / overlay] if overlay else [])
    merged = merge_configs(paths)
    assert strategy_stage(merged["trainer"]) == stage
    assert merged["model"]["phase"] == "phase1_retrieval"  # the overlay keeps the phase's model section


def test_paper_size_generative_phase_without_weights():
    """The paper configs point at absent directories: the known configs are used and said so."""
    result = plan([CONFIGS / "phase1_generative.yaml", CONFIGS / "deepspeed" / "zero3.yaml"], gpus=8)
    enc, cap, gen = result.parts
    assert "known config" in enc.source and "known config" in cap.source and "known config" in gen.source
    assert cap.groups["captioner_frozen"] == 6_738_415_616
    assert cap.groups["lora"] == 128 * 32 * (4 * (4096 + 4096) + 2 * (4096 + 11008) + (11008 + 4096))
    assert gen.groups["unet"] + (320 * 4 * 9 + 320) == 859_520_964
    assert gen.groups["generator_frozen"] == 83_653_863
    assert result.strategy == "zero3"
    assert result.estimates["zero3"]["gpu"] < result.estimates["zero2"]["gpu"] < result.estimates["ddp"]["gpu"]
    text = format_plan(result)
    assert "<- strategy config" in text and "not found" in text


def test_missing_part_and_config_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": {"phase": "phase1_captioning", "encoder": {"pretrained": "x"}}}))
    with pytest.raises(ValueError, match="model.captioner"):
        plan([bad], gpus=1)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        plan([tmp_path / "nope.yaml"], gpus=1)


def _yaml_safe(value):
    if isinstance(value, dict):
        return {k: _yaml_safe(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_yaml_safe(v) for v in value]
    return value
