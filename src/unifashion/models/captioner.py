"""Caption branch: text task-specific adapter (TSA) + causal LLM (+ LoRA), paper eqs. 6 and 11.

The Q-Former query outputs Z (B, Q, H_q) of the frozen multimodal encoder go through the text
TSA (a linear map into the LLM's embedding space) and are spliced into the prompt

    USER: <Img><queries></Img> {instruction} Assistant: {answer}</s>

as input embeddings between the ``<Img>`` and ``</Img>`` token embeddings. Tokenisation happens
in `Captioner.prepare` (never in ``forward``): it returns `CaptionInputs` with the token ids, the
attention mask, the labels (answer tokens only) and where each row's query slot starts.

Padding: training batches are right-padded, generation batches left-padded (so that every row's
prompt ends at the last position); position ids are always derived from the attention mask, so a
row's positions do not depend on the padding side.

Saving (`Captioner.save_pretrained`) writes, next to each other and never inside one another:

    captioner_config.json          CaptionerConfig + query_dim + num_queries
    text_adapter.safetensors       TSA weights
    lora/adapter_config.json       LoRA adapters in peft's own format (when use_lora)
    lora/adapter_model.safetensors
    tokenizer/                     the tokenizer (AutoTokenizer format)
    base_llm/                      the base LM itself, only when it was built from a tiny config
                                   (config.llm is None); a real LLM is reloaded from config.llm
"""

from __future__ import annotations

import json
import os
import random
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from unifashion.losses.generation import IGNORE_INDEX, itg_loss
from unifashion.models.instructions import PROMPT_PREFIX, prompt_after_queries

CONFIG_FILE = "captioner_config.json"
ADAPTER_FILE = "text_adapter.safetensors"
LORA_DIR = "lora"
TOKENIZER_DIR = "tokenizer"
BASE_LLM_DIR = "base_llm"

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class CaptionerConfig:
    """Configuration of the caption branch (text TSA + LLM + LoRA)."""

    llm: str | None = None
    """Local directory or hub id of the causal LM (`AutoModelForCausalLM.from_pretrained`); paper:
    Vicuna-1.5-7B / the LLaVA-1.5 LM. None builds a tiny random Llama from the fields below."""

    tokenizer: str | None = None
    """Local directory or hub id of the tokenizer (`AutoTokenizer.from_pretrained`); None uses
    ``llm``'s. Required when ``llm`` is None (e.g. a `train_bpe_tokenizer` output directory)."""

    hidden_size: int = 64
    """Tiny Llama only: hidden (= token embedding) size."""

    num_layers: int = 2
    """Tiny Llama only: number of decoder layers."""

    num_heads: int = 4
    """Tiny Llama only: attention heads (also key/value heads)."""

    intermediate_size: int = 128
    """Tiny Llama only: MLP inner size."""

    max_position_embeddings: int = 512
    """Tiny Llama only: longest sequence (prompt + queries + caption)."""

    initializer_range: float | None = None
    """Tiny Llama only: std of the random weights; None = 1/sqrt(hidden_size). (HF's default 0.02
    leaves a frozen random LM head unable to produce logits beyond about 0.02 * hidden_size, so
    TSA + LoRA could hardly fit any caption.)"""

    use_lora: bool = True
    """Wrap the LM with peft LoRA adapters; the base LM weights stay frozen either way."""

    lora_rank: int = 128
    """LoRA rank r (paper: 128)."""

    lora_alpha: int = 256
    """LoRA scaling alpha (paper: 256)."""

    lora_dropout: float = 0.05
    """Dropout on the LoRA input (paper's released code: 0.05)."""

    lora_target_modules: str | tuple[str, ...] = "all-linear"
    """Modules that get adapters; "all-linear" = every linear layer except the output head
    (``lm_head``), as the paper's released code does."""

    gradient_checkpointing: bool = False
    """Recompute the LM's activations in the backward pass (non-reentrant) to save memory."""

    torch_dtype: str = "float32"
    """Dtype of the LM weights: "float32", "bfloat16" or "float16". The TSA stays float32."""

    max_caption_tokens: int = 64
    """Longest training answer in tokens, end-of-sequence token included; longer answers are cut
    (and then end without ``</s>``, as LAVIS truncates)."""

    instruction_seed: int = 0
    """Seed of the generator that draws instruction paraphrases when `prepare` gets no ``rng``."""

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position_embeddings",
                     "lora_rank", "lora_alpha", "max_caption_tokens"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"CaptionerConfig.{name} must be positive, got {getattr(self, name)!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"CaptionerConfig.hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.initializer_range is not None and self.initializer_range <= 0:
            raise ValueError(f"CaptionerConfig.initializer_range must be positive, got {self.initializer_range!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"CaptionerConfig.lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if self.torch_dtype not in _DTYPES:
            raise ValueError(f"CaptionerConfig.torch_dtype must be one of {sorted(_DTYPES)}, got {self.torch_dtype!r}")
        if isinstance(self.lora_target_modules, list):
            self.lora_target_modules = tuple(self.lora_target_modules)


@dataclass
class CaptionInputs:
    """A tokenised caption batch (output of `Captioner.prepare`).

    Attributes:
        input_ids: long (B, L); the Q query-slot positions hold the pad id (their embeddings are
            replaced by the adapted queries), padding holds the pad id.
        attention_mask: long (B, L); 1 on real tokens and query slots, 0 on padding.
        labels: long (B, L) or None; the token id on answer tokens (and the closing ``</s>``),
            ``IGNORE_INDEX`` everywhere else. None when no captions were given.
        query_start: long (B,), position of each row's first query slot.
        num_queries: Q, the length of the query slot.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None
    query_start: torch.Tensor
    num_queries: int

    def to(self, device: torch.device | str) -> CaptionInputs:
        """Returns a copy with every tensor on ``device``."""
        return CaptionInputs(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            labels=None if self.labels is None else self.labels.to(device),
            query_start=self.query_start.to(device),
            num_queries=self.num_queries,
        )

    def position_ids(self) -> torch.Tensor:
        """Long (B, L) positions counted over real tokens only (padding gets 0)."""
        return (self.attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerBase:
    """Loads a tokenizer with `AutoTokenizer` and makes sure it has eos and pad tokens.

    A tokenizer without a pad token (Llama, Vicuna) pads with its eos token; padding never
    carries a label or attention, so the choice does not affect training.

    Raises:
        FileNotFoundError: ``path`` cannot be loaded (names the path and what was expected).
        ValueError: the tokenizer has no eos token.
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as err:
        raise FileNotFoundError(
            f"could not load the caption tokenizer from {str(path)!r}: expected a local directory written by "
            f"`tokenizer.save_pretrained` (tokenizer.json / tokenizer_config.json) or a cached hub id ({err})"
        ) from err
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the caption tokenizer at {str(path)!r} has no eos token; captions must end with one")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_language_model(path: str | os.PathLike, torch_dtype: str = "float32") -> PreTrainedModel:
    """Loads a causal LM with `AutoModelForCausalLM.from_pretrained` (a local directory or hub id).

    Raises:
        FileNotFoundError: ``path`` cannot be loaded (names the path and what was expected).
    """
    try:
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=_DTYPES[torch_dtype])
    except OSError as err:
        raise FileNotFoundError(
            f"could not load the caption LLM from {str(path)!r}: expected a local directory written by "
            f"`save_pretrained` (config.json + model weights) or a cached hub id ({err})"
        ) from err


def build_tiny_language_model(config: CaptionerConfig, tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """Builds a randomly initialised Llama from the tiny fields of ``config`` (vocab from the tokenizer)."""
    llama_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=False,
        initializer_range=(
            config.initializer_range if config.initializer_range is not None else config.hidden_size**-0.5
        ),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(llama_config).to(_DTYPES[config.torch_dtype])


def _base_state_dict(model: PeftModel) -> dict[str, torch.Tensor]:
    """The base LM's own weights inside a peft-wrapped model, under the base model's key names."""
    state = {}
    for key, value in model.get_base_model().state_dict().items():
        if "lora_" in key:
            continue
        state[key.replace(".base_layer.", ".")] = value
    return state


class Captioner(nn.Module):
    """Text TSA + causal LLM (+ LoRA) producing captions from Q-Former query outputs.

    Args:
        config: the branch configuration.
        query_dim: H_q, the size of the Q-Former query outputs (paper: 768).
        num_queries: Q, the number of query outputs spliced into the prompt (paper: 32).
        language_model: an already built LM (plain or `PeftModel`); None builds it from ``config``
            (tiny Llama when ``config.llm`` is None, else `load_language_model(config.llm)`).
        tokenizer: an already loaded tokenizer; None loads ``config.tokenizer`` (or ``config.llm``).

    The base LM's weights are frozen; the trainable parameters are the TSA and the LoRA
    adapters (see `trainable_parameter_groups`).
    """

    def __init__(
        self,
        config: CaptionerConfig,
        query_dim: int,
        num_queries: int = 32,
        language_model: PreTrainedModel | PeftModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        super().__init__()
        if query_dim <= 0 or num_queries <= 0:
            raise ValueError(f"query_dim and num_queries must be positive, got {query_dim} and {num_queries}")
        self.config = config
        self.query_dim = query_dim
        self.num_queries = num_queries
        if tokenizer is None:
            source = config.tokenizer or config.llm
            if source is None:
                raise ValueError(
                    "CaptionerConfig.tokenizer is required when llm is None (a tokenizer directory, e.g. the "
                    "output of unifashion.models.tokenizers.train_bpe_tokenizer)"
                )
            tokenizer = load_tokenizer(source)
        elif tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        if language_model is None:
            if config.llm is None:
                language_model = build_tiny_language_model(config, tokenizer)
            else:
                language_model = load_language_model(config.llm, config.torch_dtype)
        embedding_rows = language_model.get_input_embeddings().num_embeddings
        if len(tokenizer) > embedding_rows:
            raise ValueError(
                f"the caption tokenizer has {len(tokenizer)} tokens but the LLM embeds only {embedding_rows}"
            )
        if config.gradient_checkpointing:
            if hasattr(language_model, "activation_checkpointing_enable"):  # transformers >= 5.2x name
                language_model.activation_checkpointing_enable({"use_reentrant": False})
            else:
                language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if not isinstance(language_model, PeftModel):
            if config.use_lora:
                lora = LoraConfig(
                    r=config.lora_rank,
                    lora_alpha=config.lora_alpha,
                    lora_dropout=config.lora_dropout,
                    target_modules=(
                        config.lora_target_modules
                        if isinstance(config.lora_target_modules, str)
                        else list(config.lora_target_modules)
                    ),
                    task_type="CAUSAL_LM",
                )
                language_model = get_peft_model(language_model, lora)
        self.language_model = language_model
        embed_dim = language_model.get_input_embeddings().embedding_dim
        self.text_adapter = nn.Linear(query_dim, embed_dim)  # text TSA: H_q -> LLM embedding size
        self._rng = random.Random(config.instruction_seed)

    # ------------------------------------------------------------------ tokenisation
    def _encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def _answer_ids(self, prompt_text: str, prompt_ids: list[int], caption: str) -> list[int]:
        """Answer token ids, tokenised in context after the prompt (as the LM will generate them)."""
        caption = caption.strip()
        if not caption:
            return []
        joint = self._encode([f"{prompt_text} {caption}"])[0]
        if joint[: len(prompt_ids)] == prompt_ids:
            return joint[len(prompt_ids):]
        return self._encode([f" {caption}"])[0]  # tokenizer merged across the boundary: tokenise alone

    def prepare(
        self,
        captions: list[str] | None,
        datasets: list[str],
        train: bool,
        rng: random.Random | None = None,
    ) -> CaptionInputs:
        """Tokenises a batch into `CaptionInputs` (prompt, query slot, answer, padding, labels).

        Args:
            captions: the answers (B strings), or None for generation.
            datasets: the dataset name of each sample (B strings), picks the instruction.
            train: True: right padding and a paraphrased instruction drawn from ``rng``;
                False: left padding (generation) and the paper's Table 7 instruction.
            rng: paraphrase generator for ``train``; None uses the captioner's own seeded one.

        Returns:
            The batch; ``labels`` is set whenever ``captions`` is.

        Raises:
            ValueError: lengths disagree or ``train`` without captions.
            KeyError: a dataset without a caption style.
        """
        if captions is not None and len(captions) != len(datasets):
            raise ValueError(f"prepare got {len(captions)} captions for {len(datasets)} dataset names")
        if train and captions is None:
            raise ValueError("prepare(train=True) needs captions (the answers to learn)")
        if not datasets:
            raise ValueError("prepare got an empty batch")
        paraphrase_rng = (rng or self._rng) if train else None
        bos = [] if self.tokenizer.bos_token_id is None else [self.tokenizer.bos_token_id]
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id
        prefix = bos + self._encode([PROMPT_PREFIX])[0]
        after_texts = [prompt_after_queries(name, paraphrase_rng) for name in datasets]
        after_ids = self._encode(after_texts)
        q = self.num_queries
        rows: list[tuple[list[int], list[int]]] = []  # (prompt ids with query slot, answer ids)
        for i, (text, ids) in enumerate(zip(after_texts, after_ids)):
            prompt = prefix + [pad] * q + ids
            answer: list[int] = []
            if captions is not None:
                answer = (self._answer_ids(text, ids, captions[i]) + [eos])[: self.config.max_caption_tokens]
            rows.append((prompt, answer))
        length = max(len(p) + len(a) for p, a in rows)
        batch = len(rows)
        input_ids = torch.full((batch, length), pad, dtype=torch.long)  # (B, L)
        attention_mask = torch.zeros((batch, length), dtype=torch.long)  # (B, L)
        labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)  # (B, L)
        query_start = torch.empty(batch, dtype=torch.long)  # (B,)
        for i, (prompt, answer) in enumerate(rows):
            n = len(prompt) + len(answer)
            start = 0 if train else length - n  # right padding for training, left for generation
            input_ids[i, start : start + n] = torch.tensor(prompt + answer, dtype=torch.long)
            attention_mask[i, start : start + n] = 1
            labels[i, start + len(prompt) : start + n] = torch.tensor(answer, dtype=torch.long)
            query_start[i] = start + len(prefix)
        return CaptionInputs(
            input_ids=input_ids,
            attention_mask=attention_mask,
            labels=labels if captions is not None else None,
            query_start=query_start,
            num_queries=q,
        )

    # ------------------------------------------------------------------ model
    def embed(self, query_output: torch.Tensor, inputs: CaptionInputs) -> torch.Tensor:
        """Token embeddings of ``inputs`` with the adapted queries spliced into the query slot.

        Args:
            query_output: float (B, Q, H_q), Q-Former query outputs.
            inputs: the tokenised batch.

        Returns:
            float (B, L, D) input embeddings for the LM.
        """
        b, q, h = query_output.shape
        if (b, q, h) != (inputs.input_ids.shape[0], inputs.num_queries, self.query_dim):
            raise ValueError(
                f"query_output has shape {(b, q, h)}, expected (B={inputs.input_ids.shape[0]}, "
                f"Q={inputs.num_queries}, H_q={self.query_dim})"
            )
        embeds = self.language_model.get_input_embeddings()(inputs.input_ids)  # (B, L, D)
        adapter_dtype = self.text_adapter.weight.dtype
        queries = self.text_adapter(query_output.to(adapter_dtype)).to(embeds.dtype)  # (B, Q, D)
        slot = inputs.query_start[:, None] + torch.arange(q, device=embeds.device)  # (B, Q)
        index = slot[..., None].expand(-1, -1, embeds.shape[-1])  # (B, Q, D)
        return embeds.scatter(1, index, queries)  # (B, L, D)

    def forward(self, query_output: torch.Tensor, inputs: CaptionInputs) -> dict[str, torch.Tensor]:
        """ITG loss (eqs. 6 / 11) of a tokenised batch.

        Args:
            query_output: float (B, Q, H_q), Q-Former query outputs (frozen encoder).
            inputs: `prepare(captions, datasets, train=True)`; must carry labels.

        Returns:
            ``{"itg": loss}``.
        """
        if inputs.labels is None:
            raise ValueError("Captioner.forward needs CaptionInputs with labels (prepare with captions)")
        inputs = inputs.to(query_output.device)
        embeds = self.embed(query_output, inputs)  # (B, L, D)
        out = self.language_model(
            inputs_embeds=embeds,
            attention_mask=inputs.attention_mask,
            position_ids=inputs.position_ids(),
            use_cache=False,
        )
        return itg_loss(out.logits, inputs.labels)

    @torch.no_grad()
    def generate_ids(
        self,
        query_output: torch.Tensor,
        datasets: list[str],
        num_beams: int = 1,
        max_new_tokens: int = 40,
        repetition_penalty: float = 1.0,
        length_penalty: float = 1.0,
    ) -> torch.Tensor:
        """Generated token ids (greedy when ``num_beams`` is 1, else beam search) via HF ``generate``.

        Runs in eval mode (LoRA dropout off) and restores the previous mode. The prompt is passed
        as ``inputs_embeds`` only, so the output holds the new tokens only and the repetition
        penalty applies to generated tokens only (the prompt has no token ids), as in LAVIS/LLaVA.
        Rows that finish early are padded with the pad id after their ``</s>``.

        Args:
            query_output: float (B, Q, H_q).
            datasets: dataset name per sample (picks the paper's instruction).
            num_beams: beam width (paper's released code: 5).
            max_new_tokens: longest caption in tokens.
            repetition_penalty: HF repetition penalty (paper's released code: 1.5).
            length_penalty: beam-search length penalty exponent.

        Returns:
            long (B, T), T <= max_new_tokens.
        """
        if num_beams < 1 or max_new_tokens < 1:
            raise ValueError(f"num_beams and max_new_tokens must be >= 1, got {num_beams} and {max_new_tokens}")
        inputs = self.prepare(None, datasets, train=False).to(query_output.device)
        was_training = self.training
        self.eval()
        try:
            embeds = self.embed(query_output, inputs)  # (B, L, D)
            generation_config = GenerationConfig(
                do_sample=False,
                num_beams=num_beams,
                max_new_tokens=max_new_tokens,
                repetition_penalty=repetition_penalty,
                length_penalty=length_penalty,
                bos_token_id=self.tokenizer.bos_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                pad_token_id=self.tokenizer.pad_token_id,
            )
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*repetition_penalty.*inputs_embeds.*")
                return self.language_model.generate(
                    inputs_embeds=embeds,
                    attention_mask=inputs.attention_mask,
                    generation_config=generation_config,
                )  # (B, T): new tokens only (no input_ids were given)
        finally:
            self.train(was_training)

    def generate(
        self,
        query_output: torch.Tensor,
        datasets: list[str],
        num_beams: int = 1,
        max_new_tokens: int = 40,
        repetition_penalty: float = 1.0,
        length_penalty: float = 1.0,
    ) -> list[str]:
        """Captions for a batch of query outputs (see `generate_ids` for the arguments).

        Returns:
            B decoded captions, prompt excluded, special tokens removed, whitespace stripped.
        """
        tokens = self.generate_ids(
            query_output,
            datasets,
            num_beams=num_beams,
            max_new_tokens=max_new_tokens,
            repetition_penalty=repetition_penalty,
            length_penalty=length_penalty,
        )
        texts = self.tokenizer.batch_decode(tokens, skip_special_tokens=True)
        return [text.strip() for text in texts]

    def trainable_parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named parameter groups for the freeze policy: ``text_adapter`` (TSA) and ``lora``.

        ``lora`` is empty when ``use_lora`` is False. The base LM is in no group (always frozen).
        """
        lora = [p for name, p in self.language_model.named_parameters() if "lora_" in name]
        return {"text_adapter": list(self.text_adapter.parameters()), "lora": lora}

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Writes the TSA, the LoRA adapters (peft format) and the tokenizer, plus the base LM when tiny.

        A base LM loaded from ``config.llm`` is not copied: `from_pretrained` reloads it from there.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"config": asdict(self.config), "query_dim": self.query_dim, "num_queries": self.num_queries}
        (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        adapter_state = {k: v.detach().contiguous() for k, v in self.text_adapter.state_dict().items()}
        save_file(adapter_state, str(out / ADAPTER_FILE))
        self.tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
        if isinstance(self.language_model, PeftModel):
            self.language_model.save_pretrained(str(out / LORA_DIR))
        if self.config.llm is None:
            if isinstance(self.language_model, PeftModel):
                base = self.language_model.get_base_model()
                clean = type(base)(base.config).to(base.dtype)
                clean.load_state_dict(_base_state_dict(self.language_model), strict=True)
            else:
                clean = self.language_model
            clean.save_pretrained(str(out / BASE_LLM_DIR))

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, llm: str | None = None, is_trainable: bool = False
    ) -> Captioner:
        """Reloads a `save_pretrained` directory through the same loading code as a fresh build.

        Args:
            directory: the saved directory.
            llm: overrides the saved ``config.llm`` (the base LM moved); None keeps it.
            is_trainable: load the LoRA adapters trainable (to resume training) instead of frozen.

        Raises:
            FileNotFoundError: a file the directory must hold is missing (named in the message).
        """
        root = Path(directory)
        config_path = root / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"{config_path} not found: expected a Captioner.save_pretrained directory")
        meta = json.loads(config_path.read_text())
        known = {f.name for f in fields(CaptionerConfig)}
        config = CaptionerConfig(**{k: v for k, v in meta["config"].items() if k in known})
        if llm is not None:
            config = replace(config, llm=llm)
        tokenizer = load_tokenizer(root / TOKENIZER_DIR)
        if config.llm is None:
            base_dir = root / BASE_LLM_DIR
            if not base_dir.is_dir():
                raise FileNotFoundError(
                    f"{base_dir} not found: a captioner built from a tiny config saves its base LM there"
                )
            language_model = load_language_model(base_dir, config.torch_dtype)
        else:
            language_model = load_language_model(config.llm, config.torch_dtype)
        if config.use_lora:
            lora_dir = root / LORA_DIR
            if not (lora_dir / "adapter_config.json").is_file():
                raise FileNotFoundError(f"{lora_dir}/adapter_config.json not found: expected peft LoRA adapters")
            language_model = PeftModel.from_pretrained(language_model, str(lora_dir), is_trainable=is_trainable)
        model = cls(config, meta["query_dim"], meta["num_queries"], language_model=language_model, tokenizer=tokenizer)
        adapter_path = root / ADAPTER_FILE
        if not adapter_path.is_file():
            raise FileNotFoundError(f"{adapter_path} not found: expected the text TSA weights")
        model.text_adapter.load_state_dict(load_file(str(adapter_path)), strict=True)
        return model
