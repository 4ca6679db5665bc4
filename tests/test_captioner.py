"""Caption branch: prompt layout and ITG masking (hand-built), generation, saving, overfitting."""

import json
import random

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from unifashion.losses.generation import IGNORE_INDEX, itg_loss
from unifashion.models.captioner import Captioner, CaptionerConfig
from unifashion.models.instructions import INSTRUCTIONS, instruction_for

Q, H_Q = 4, 16
CAPTIONS = ["red silk dress with long sleeves", "black leather jacket with a zip"]
PAPER = {
    "fashiongen": "Write a detail and professional description for the cloth.",
    "fashion200k": "Short description.",
    "fashioniq": "Describe the cloth's style, color, design... and other key points.",
}


def _all_prompt_texts():
    return ["USER: <Img>", "</Img>", "Assistant:"] + [s for options in INSTRUCTIONS.values() for s in options]


def _word_tokenizer(tmp_path):
    """Whitespace word-level tokenizer: every word is one token, so ids can be written by hand."""
    words = sorted({w for text in _all_prompt_texts() + CAPTIONS + ["blue dress"] for w in text.split()})
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3} | {w: i + 4 for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.save_pretrained(tmp_path / "word_tok")
    return str(tmp_path / "word_tok"), vocab


def _bpe_tokenizer(tmp_path):
    """Byte-level BPE with Llama-style <s> / </s> / <pad>, saved as a HF tokenizer directory."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=350,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_all_prompt_texts() + CAPTIONS * 3, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.save_pretrained(tmp_path / "bpe_tok")
    return str(tmp_path / "bpe_tok")


def _config(tokenizer, **kw):
    base = dict(tokenizer=tokenizer, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                lora_rank=4, lora_alpha=8, max_caption_tokens=16)
    return CaptionerConfig(**(base | kw))


def _perturb_lora(model, seed=0):
    """LoRA B starts at zero; give the adapters non-zero weights so they matter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameter_groups()["lora"]:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


@pytest.fixture(scope="module")
def bpe_model(tmp_path_factory):
    torch.manual_seed(0)
    path = _bpe_tokenizer(tmp_path_factory.mktemp("bpe"))
    model = Captioner(_config(path), query_dim=H_Q, num_queries=Q)
    _perturb_lora(model)
    return model.eval()


def test_instructions_are_the_papers_and_paraphrases_seeded():
    for name, text in PAPER.items():
        assert INSTRUCTIONS[name][0] == text
        assert instruction_for(name) == text
        assert len(INSTRUCTIONS[name]) > 1
    draws = [instruction_for("fashiongen", random.Random(5)) for _ in range(3)]
    assert len(set(draws)) == 1  # same seed, same draw
    many = {instruction_for("fashiongen", random.Random(s)) for s in range(40)}
    assert many == set(INSTRUCTIONS["fashiongen"])
    with pytest.raises(KeyError, match="vitonhd"):
        instruction_for("vitonhd")


def test_prepare_layout_and_labels_hand_built(tmp_path):
    path, vocab = _word_tokenizer(tmp_path)
    model = Captioner(_config(path), query_dim=H_Q, num_queries=Q)
    caps, names = ["blue dress", CAPTIONS[0]], ["fashion200k", "fashiongen"]
    inputs = model.prepare(caps, names, train=True, rng=random.Random(3))
    draw = random.Random(3)
    instr = [instruction_for(n, draw) for n in names]  # the same seeded draws, in order

    def ids(text):
        return [vocab[w] for w in text.split()]

    expected_ids, expected_labels = [], []
    for cap, text in zip(caps, instr):
        prompt = [1] + ids("USER: <Img>") + [0] * Q + ids(f"</Img> {text} Assistant:")
        answer = ids(cap) + [2]
        expected_ids.append(prompt + answer)
        expected_labels.append([IGNORE_INDEX] * len(prompt) + answer)
    length = max(map(len, expected_ids))
    for i in range(2):  # right padding for training
        n = len(expected_ids[i])
        assert inputs.input_ids[i].tolist() == expected_ids[i] + [0] * (length - n)
        assert inputs.labels[i].tolist() == expected_labels[i] + [IGNORE_INDEX] * (length - n)
        assert inputs.attention_mask[i].tolist() == [1] * n + [0] * (length - n)
    assert inputs.query_start.tolist() == [3, 3]
    assert inputs.position_ids()[0, :4].tolist() == [0, 1, 2, 3]

    gen = model.prepare(None, names, train=False)  # generation: left padding, paper wording, no labels
    assert gen.labels is None
    rows = [[1] + ids("USER: <Img>") + [0] * Q + ids(f"</Img> {PAPER[n]} Assistant:") for n in names]
    width = max(map(len, rows))
    for i, row in enumerate(rows):
        pad = width - len(row)
        assert gen.input_ids[i].tolist() == [0] * pad + row
        assert gen.attention_mask[i].tolist() == [0] * pad + [1] * len(row)
        assert gen.query_start[i].item() == pad + 3
        assert gen.position_ids()[i, pad:].tolist() == list(range(len(row)))

    with pytest.raises(ValueError, match="needs captions"):
        model.prepare(None, names, train=True)
    with pytest.raises(KeyError, match="vitonhd"):
        model.prepare(["x"], ["vitonhd"], train=True)


def test_itg_loss_equals_manual_answer_ce(tmp_path):
    path, vocab = _word_tokenizer(tmp_path)
    torch.manual_seed(0)
    model = Captioner(_config(path, lora_dropout=0.0), query_dim=H_Q, num_queries=Q)
    _perturb_lora(model)
    caps, names = ["blue dress", CAPTIONS[0]], ["fashion200k", "fashiongen"]
    inputs = model.prepare(caps, names, train=True, rng=random.Random(1))
    z = torch.randn(2, Q, H_Q)
    loss = model(z, inputs)["itg"]

    # Reference: splice the adapted queries in by hand, run the LM, CE over answer tokens + </s>.
    lm = model.language_model
    embeds = lm.get_input_embeddings()(inputs.input_ids).clone()
    for i in range(2):
        embeds[i, 3 : 3 + Q] = model.text_adapter(z[i])
    logits = lm(inputs_embeds=embeds, attention_mask=inputs.attention_mask).logits
    total, count = 0.0, 0
    for i, cap in enumerate(caps):
        targets = [vocab[w] for w in cap.split()] + [2]
        n = int(inputs.attention_mask[i].sum())
        first = n - len(targets)  # answer occupies the last len(targets) real positions
        for j, target in enumerate(targets):
            total = total - F.log_softmax(logits[i, first + j - 1], -1)[target]
            count += 1
    assert loss.item() == pytest.approx((total / count).item(), rel=1e-5)
    loss.backward()
    assert model.text_adapter.weight.grad is not None and model.text_adapter.weight.grad.abs().sum() > 0


def test_itg_loss_function_against_loop():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=gen)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 1, 2, 6, 0]])
    manual, count = 0.0, 0
    for b in range(2):
        for t in range(1, 5):
            if labels[b, t] != -100:
                manual -= torch.log_softmax(logits[b, t - 1], -1)[labels[b, t]].item()
                count += 1
    assert itg_loss(logits, labels)["itg"].item() == pytest.approx(manual / count, rel=1e-6)
    with pytest.raises(ValueError, match="no answer token"):
        itg_loss(logits, torch.full((2, 5), -100))
    with pytest.raises(ValueError, match="expects logits"):
        itg_loss(logits, labels[:, :3])


def test_batched_left_padded_greedy_matches_single(bpe_model):
    z = torch.randn(3, Q, H_Q, generator=torch.Generator().manual_seed(1))
    names = ["fashion200k", "fashiongen", "fashioniq"]  # instructions of different lengths
    batched = bpe_model.generate(z, names, max_new_tokens=8)
    singles = [bpe_model.generate(z[i : i + 1], [names[i]], max_new_tokens=8)[0] for i in range(3)]
    assert batched == singles
    assert all(isinstance(s, str) for s in batched)
    assert not any("Assistant" in s for s in batched)  # the prompt is not part of the output


def test_greedy_is_deterministic_and_mode_restored(bpe_model):
    z = torch.randn(2, Q, H_Q, generator=torch.Generator().manual_seed(2))
    names = ["fashiongen", "fashion200k"]
    bpe_model.train()  # LoRA dropout on: generate must still run in eval mode
    try:
        first = bpe_model.generate(z, names, max_new_tokens=8)
        assert bpe_model.training
    finally:
        bpe_model.eval()
    assert bpe_model.generate(z, names, max_new_tokens=8) == first


def test_beam_search_returns_strings(bpe_model):
    z = torch.randn(2, Q, H_Q, generator=torch.Generator().manual_seed(3))
    out = bpe_model.generate(z, ["fashiongen", "fashioniq"], num_beams=4, max_new_tokens=6,
                             repetition_penalty=1.5, length_penalty=1.0)
    assert len(out) == 2 and all(isinstance(s, str) for s in out)
    assert bpe_model.generate(z, ["fashiongen", "fashioniq"], num_beams=4, max_new_tokens=6,
                              repetition_penalty=1.5) == out


def test_save_and_reload_same_outputs_peft_format(bpe_model, tmp_path):
    with torch.no_grad():
        bpe_model.text_adapter.weight.mul_(3.0)
    z = torch.randn(2, Q, H_Q, generator=torch.Generator().manual_seed(4))
    names = ["fashiongen", "fashion200k"]
    before = bpe_model.generate(z, names, max_new_tokens=8)
    inputs = bpe_model.prepare(CAPTIONS, names, train=False)
    loss_before = bpe_model(z, inputs)["itg"].item()
    bpe_model.save_pretrained(tmp_path / "cap")

    lora_dir = tmp_path / "cap" / "lora"
    config = json.loads((lora_dir / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8
    targets = {name.split(".")[-1] for name in config["target_modules"]}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= targets
    assert "lm_head" not in targets
    with safe_open(str(lora_dir / "adapter_model.safetensors"), "pt") as f:
        adapter_keys = list(f.keys())
    assert adapter_keys and all("lora_" in k for k in adapter_keys)  # no base LM weight in the adapter file
    with safe_open(str(tmp_path / "cap" / "base_llm" / "model.safetensors"), "pt") as f:
        base_keys = list(f.keys())
    assert not any("lora" in k for k in base_keys) and "lm_head.weight" in base_keys
    assert (lora_dir / "adapter_model.safetensors").stat().st_size < (
        tmp_path / "cap" / "base_llm" / "model.safetensors").stat().st_size

    reloaded = Captioner.from_pretrained(tmp_path / "cap").eval()
    assert reloaded.generate(z, names, max_new_tokens=8) == before
    assert reloaded(z, reloaded.prepare(CAPTIONS, names, train=False))["itg"].item() == pytest.approx(loss_before)
    assert all(not p.requires_grad for p in reloaded.trainable_parameter_groups()["lora"])
    trainable = Captioner.from_pretrained(tmp_path / "cap", is_trainable=True)
    assert all(p.requires_grad for p in trainable.trainable_parameter_groups()["lora"])


def test_missing_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="captioner_config.json"):
        Captioner.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no_such_tokenizer"):
        Captioner(_config(str(tmp_path / "no_such_tokenizer")), query_dim=H_Q)
    with pytest.raises(ValueError, match="tokenizer is required"):
        Captioner(CaptionerConfig(), query_dim=H_Q)


def test_trainable_groups_and_frozen_base(bpe_model):
    groups = bpe_model.trainable_parameter_groups()
    assert set(groups) == {"text_adapter", "lora"}
    assert groups["text_adapter"] == list(bpe_model.text_adapter.parameters())
    lora_ids = {id(p) for p in groups["lora"]}
    for name, p in bpe_model.language_model.named_parameters():
        assert (id(p) in lora_ids) == ("lora_" in name)
        assert p.requires_grad == ("lora_" in name), name
    assert not any("lm_head" in n and "lora_" in n for n, _ in bpe_model.language_model.named_parameters())


def test_tiny_overfit_reduces_itg(tmp_path):
    torch.manual_seed(0)
    model = Captioner(_config(_bpe_tokenizer(tmp_path), lora_dropout=0.0), query_dim=H_Q, num_queries=Q)
    z = torch.randn(2, Q, H_Q, generator=torch.Generator().manual_seed(5))
    inputs = model.prepare(CAPTIONS, ["fashiongen", "fashion200k"], train=True, rng=random.Random(0))
    params = [p for group in model.trainable_parameter_groups().values() for p in group]
    optimizer = torch.optim.AdamW(params, lr=3e-2)
    losses = []
    for _ in range(20):
        loss = model(z, inputs)["itg"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.4 * losses[0]  # about 6.2 -> 1.3 in 20 steps


def test_works_with_project_bpe_tokenizer(tmp_path):
    tokenizers = pytest.importorskip("unifashion.models.tokenizers")
    tok = tokenizers.train_bpe_tokenizer(_all_prompt_texts() + CAPTIONS, tmp_path / "tok", vocab_size=320)
    torch.manual_seed(0)
    model = Captioner(_config(str(tmp_path / "tok"), max_caption_tokens=64), query_dim=H_Q, num_queries=Q).eval()
    inputs = model.prepare(CAPTIONS, ["fashiongen", "fashioniq"], train=True)
    bos, eos = tok.bos_token_id, tok.eos_token_id
    assert inputs.input_ids[:, 0].tolist() == [bos, bos] and int((inputs.input_ids == bos).sum()) == 2
    for i, cap in enumerate(CAPTIONS):  # the answer decodes back to the caption, then </s>
        answer = inputs.labels[i][inputs.labels[i] != IGNORE_INDEX].tolist()
        assert answer[-1] == eos and tok.decode(answer[:-1]).strip() == cap
    ids = model.generate_ids(torch.randn(2, Q, H_Q), ["fashiongen", "fashioniq"], max_new_tokens=5)
    assert ids.dtype == torch.long and ids.shape[0] == 2 and ids.shape[1] <= 5


def test_long_answers_are_cut_to_max_caption_tokens(tmp_path):
    path, vocab = _word_tokenizer(tmp_path)
    model = Captioner(_config(path, max_caption_tokens=3), query_dim=H_Q, num_queries=Q)
    inputs = model.prepare([CAPTIONS[0], "blue dress"], ["fashion200k"] * 2, train=True)
    cut = [vocab[w] for w in CAPTIONS[0].split()][:3]  # 3 tokens, no room left for </s>
    assert [t for t in inputs.labels[0].tolist() if t != IGNORE_INDEX] == cut
    assert [t for t in inputs.labels[1].tolist() if t != IGNORE_INDEX] == [vocab["blue"], vocab["dress"], 2]


def test_gradient_checkpointing_same_loss_and_grads(tmp_path):
    path, _ = _word_tokenizer(tmp_path)
    z = torch.randn(2, Q, H_Q, generator=torch.Generator().manual_seed(6))
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = Captioner(_config(path, lora_dropout=0.0, gradient_checkpointing=checkpointing),
                          query_dim=H_Q, num_queries=Q).train()
        _perturb_lora(model)
        inputs = model.prepare(["blue dress", CAPTIONS[1]], ["fashiongen", "fashioniq"], train=True,
                               rng=random.Random(0))
        loss = model(z, inputs)["itg"]
        loss.backward()
        results.append((loss.item(), model.text_adapter.weight.grad.clone()))
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.language_model.modules())
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-5, atol=1e-7)
