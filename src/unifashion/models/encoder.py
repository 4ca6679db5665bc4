"""The multimodal encoder: BLIP-2 vision model + Q-Former with ITC projections and the ITM head.

Wraps `transformers.Blip2ForImageTextRetrieval` (the layout of `Salesforce/blip2-itm-vit-g`) and adds
what it lacks: the learnable ITC temperature, the separate unimodal paths that ITC needs (queries
on the image; text alone), the joint bi-directional path (queries + text attend to each other and
cross-attend the image) used by ITM (eq. 4) and by the composed-retrieval fusion of phase 2, and
named parameter groups for the freeze policy.

One code path builds every encoder: `MultimodalEncoder(EncoderConfig(pretrained=dir_or_hub_id))`
loads an HF checkpoint (a real BLIP-2 or a saved tiny one), `EncoderConfig(pretrained=None,
tokenizer=dir)` builds a tiny model from the size fields with a sane init.
`MultimodalEncoder.from_pretrained(dir)` reads what `save_pretrained(dir)` wrote through the first.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoTokenizer,
    Blip2Config,
    Blip2ForImageTextRetrieval,
    Blip2QFormerConfig,
    Blip2VisionConfig,
    PreTrainedTokenizerBase,
)
from transformers.models.blip_2.modeling_blip_2 import Blip2VisionEmbeddings

EXTRAS_FILE = "unifashion_encoder.json"
"""File written next to the HF weights by `save_pretrained`: our config and the temperature."""

TEMPERATURE_RANGE = (0.001, 0.5)
"""Clamp range of the ITC temperature (LAVIS `temp.clamp_(0.001, 0.5)`)."""


@dataclass
class EncoderConfig:
    """Configuration of the multimodal encoder (vision model + Q-Former + ITC/ITM heads)."""

    pretrained: str | None = None
    """Directory or hub id of a BLIP-2 retrieval checkpoint (layout of `Salesforce/blip2-itm-vit-g`, or a
    directory written by `MultimodalEncoder.save_pretrained`). None: build a fresh model from the size
    fields below."""
    tokenizer: str | None = None
    """Directory or hub id of the Q-Former's (BERT-style) tokenizer. Defaults to `pretrained`; required
    when `pretrained` is None (its vocabulary sizes the text embeddings)."""
    image_size: int = 224
    """Input image side in pixels (fresh model only)."""
    patch_size: int = 14
    """ViT patch side in pixels (fresh model only)."""
    vision_hidden_size: int = 1408
    """ViT width (fresh model only)."""
    vision_layers: int = 39
    """Number of ViT layers (fresh model only)."""
    vision_heads: int = 16
    """Number of ViT attention heads (fresh model only)."""
    vision_intermediate_size: int = 6144
    """ViT MLP width (fresh model only)."""
    qformer_hidden_size: int = 768
    """Q-Former width (fresh model only)."""
    qformer_layers: int = 12
    """Number of Q-Former layers (fresh model only)."""
    qformer_heads: int = 12
    """Number of Q-Former attention heads (fresh model only)."""
    qformer_intermediate_size: int = 3072
    """Q-Former MLP width (fresh model only)."""
    num_query_tokens: int = 32
    """Number of learnable queries Q (fresh model only)."""
    cross_attention_frequency: int = 2
    """A cross-attention to the image every this many Q-Former layers (fresh model only)."""
    embed_dim: int = 256
    """Dimension E of the ITC projections (fresh model only)."""
    max_text_length: int = 32
    """Maximum number of text tokens (`tokenize` truncates to it; also the Q-Former's position
    table size of a fresh model, at least 32)."""
    freeze_vision: bool = True
    """Keep the vision model frozen (BLIP-2 stage 1 and the paper freeze the image encoder)."""
    temperature_init: float = 0.07
    """Initial ITC temperature when the checkpoint does not carry one."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (HF gradient checkpointing) to save memory."""
    qformer_dropout: float = 0.1
    """Dropout of the Q-Former's hidden states and attention probabilities (BLIP-2: 0.1; also applied
    to a pretrained checkpoint, whose config carries 0.1)."""
    init_std: float = 0.02
    """Std of the truncated-normal init of a fresh model's weights and queries (BLIP-2/BERT: 0.02, tuned
    for width 768; at tiny widths 0.02 makes the queries nearly blind to the image, use ~0.1)."""

    @classmethod
    def tiny(cls, tokenizer: str, **overrides: object) -> EncoderConfig:
        """A CPU-sized fresh encoder (32 px images, width 32, 4 queries) that learns in a few dozen steps.

        Args:
            tokenizer: directory of a BERT-style tokenizer (e.g. from `train_wordpiece_tokenizer`).
            **overrides: any other field.
        """
        fields: dict[str, object] = dict(
            image_size=32,
            patch_size=8,
            vision_hidden_size=32,
            vision_layers=2,
            vision_heads=2,
            vision_intermediate_size=64,
            qformer_hidden_size=32,
            qformer_layers=2,
            qformer_heads=2,
            qformer_intermediate_size=64,
            num_query_tokens=4,
            cross_attention_frequency=2,
            embed_dim=16,
            max_text_length=32,
            qformer_dropout=0.0,
            init_std=0.1,
        )
        fields.update(overrides)
        return cls(tokenizer=tokenizer, **fields)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        sizes = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.type == "int"}
        for name, value in sizes.items():
            if value <= 0:
                raise ValueError(f"EncoderConfig.{name} must be positive, got {value}")
        if not TEMPERATURE_RANGE[0] <= self.temperature_init <= TEMPERATURE_RANGE[1]:
            raise ValueError(
                f"EncoderConfig.temperature_init must be in {TEMPERATURE_RANGE}, got {self.temperature_init}"
            )
        if self.vision_hidden_size % self.vision_heads or self.qformer_hidden_size % self.qformer_heads:
            raise ValueError("EncoderConfig: hidden sizes must be divisible by the number of heads")
        if not 0.0 <= self.qformer_dropout < 1.0:
            raise ValueError(f"EncoderConfig.qformer_dropout must be in [0, 1), got {self.qformer_dropout}")
        if self.init_std <= 0:
            raise ValueError(f"EncoderConfig.init_std must be positive, got {self.init_std}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"EncoderConfig.image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )


class ImageEncoding(NamedTuple):
    """Outputs of `MultimodalEncoder.encode_image`."""

    vision_embeds: torch.Tensor
    """(B, P, Hv) vision model outputs (after its post layer norm, LAVIS `ln_vision`)."""
    query_output: torch.Tensor
    """(B, Q, H) Q-Former outputs of the queries (unimodal mode: queries only)."""
    image_feats: torch.Tensor
    """(B, Q, E) L2-normalised projected query outputs."""


class TextEncoding(NamedTuple):
    """Outputs of `MultimodalEncoder.encode_text`."""

    text_cls: torch.Tensor
    """(B, H) Q-Former output of the first ([CLS]) token, text-only mode."""
    text_feat: torch.Tensor
    """(B, E) L2-normalised projected [CLS] output."""


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _looks_like_path(name: str) -> bool:
    """True for names that can only be a local path (hub ids are `name` or `owner/name`)."""
    return not _HUB_ID.match(name) or name.startswith((".", "/", "~")) or os.sep != "/" and os.sep in name


def _load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a directory or hub id, with a clear error when it is not there."""
    if _looks_like_path(name) and not Path(name).expanduser().is_dir():
        raise FileNotFoundError(
            f"tokenizer directory {name!r} does not exist (expected a saved HF tokenizer)"
        )
    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(
            f"could not load a tokenizer from {name!r}: expected a directory with tokenizer.json / "
            f"tokenizer_config.json, or a hub id in the local cache ({err})"
        ) from err


def _sane_init(model: Blip2ForImageTextRetrieval, std: float) -> None:
    """Re-initialise a freshly built model: trunc-normal(std) weights, zero biases, unit norms,
    normal(std) query tokens. (HF's defaults use std 1e-10 for the ViT and zero queries: nothing learns.)"""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear | nn.Conv2d):
                nn.init.trunc_normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.trunc_normal_(module.weight, std=std)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, Blip2VisionEmbeddings):
                nn.init.trunc_normal_(module.class_embedding, std=std)
                nn.init.trunc_normal_(module.position_embedding, std=std)
        nn.init.normal_(model.query_tokens, std=std)


class MultimodalEncoder(nn.Module):
    """BLIP-2 vision model + Q-Former with ITC projections, ITM head and a learnable temperature.

    Args:
        config: the encoder configuration (see `EncoderConfig`).
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        tokenizer_name = config.tokenizer or config.pretrained
        if tokenizer_name is None:
            raise ValueError(
                "EncoderConfig: a fresh encoder (pretrained=None) needs `tokenizer` (a tokenizer dir)"
            )
        self.tokenizer = _load_tokenizer(tokenizer_name)
        temperature = config.temperature_init
        if config.pretrained is not None:
            self.model = self._load_pretrained(config.pretrained, config.qformer_dropout)
            extras = Path(config.pretrained).expanduser() / EXTRAS_FILE
            if extras.is_file():
                temperature = json.loads(extras.read_text())["temperature"]
        else:
            self.model = Blip2ForImageTextRetrieval(self._fresh_hf_config(config, self.tokenizer))
            _sane_init(self.model, config.init_std)
        self._check_vocab()
        self.temp = nn.Parameter(torch.tensor(float(temperature)))
        """Learnable ITC temperature tau (eq. 3); read it through `temperature` (clamped)."""
        if config.gradient_checkpointing:
            self.model.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False}
            )
        self.train()  # HF from_pretrained returns eval mode; a new nn.Module starts in train mode

    # ------------------------------------------------------------------ construction

    @staticmethod
    def _fresh_hf_config(config: EncoderConfig, tokenizer: PreTrainedTokenizerBase) -> Blip2Config:
        """The HF config of a fresh model built from the size fields."""
        vision = Blip2VisionConfig(
            hidden_size=config.vision_hidden_size,
            intermediate_size=config.vision_intermediate_size,
            num_hidden_layers=config.vision_layers,
            num_attention_heads=config.vision_heads,
            image_size=config.image_size,
            patch_size=config.patch_size,
            initializer_range=config.init_std,
        )
        qformer = Blip2QFormerConfig(
            vocab_size=len(tokenizer),
            hidden_size=config.qformer_hidden_size,
            num_hidden_layers=config.qformer_layers,
            num_attention_heads=config.qformer_heads,
            intermediate_size=config.qformer_intermediate_size,
            max_position_embeddings=max(config.max_text_length, 32),
            cross_attention_frequency=config.cross_attention_frequency,
            encoder_hidden_size=config.vision_hidden_size,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
            use_qformer_text_input=True,
            hidden_dropout_prob=config.qformer_dropout,
            attention_probs_dropout_prob=config.qformer_dropout,
            initializer_range=config.init_std,
        )
        return Blip2Config(
            vision_config=vision.to_dict(),
            qformer_config=qformer.to_dict(),
            text_config={
                "model_type": "opt",
                "hidden_size": 8,
                "num_hidden_layers": 1,
                "ffn_dim": 8,
                "num_attention_heads": 1,
                "word_embed_proj_dim": 8,
                "vocab_size": 8,
            },
            num_query_tokens=config.num_query_tokens,
            image_text_hidden_size=config.embed_dim,
            initializer_range=config.init_std,
        )

    @staticmethod
    def _load_pretrained(name: str, dropout: float) -> Blip2ForImageTextRetrieval:
        """Load an HF BLIP-2 retrieval checkpoint with the Q-Former text layers, failing on missing keys."""
        local = Path(name).expanduser()
        if _looks_like_path(name) and not local.is_dir():
            raise FileNotFoundError(
                f"pretrained encoder directory {name!r} does not exist (expected config.json + model.safetensors "
                "of a Blip2ForImageTextRetrieval checkpoint such as Salesforce/blip2-itm-vit-g)"
            )
        if local.is_dir() and not (local / "config.json").is_file():
            raise FileNotFoundError(f"pretrained encoder directory {name!r} has no config.json")
        try:
            hf_config = Blip2Config.from_pretrained(name)
        except (OSError, ValueError) as err:
            raise FileNotFoundError(
                f"could not read a BLIP-2 config from {name!r}: expected a directory with config.json or a hub "
                f"id in the local cache ({err})"
            ) from err
        # the original checkpoint's config uses the old key `qformer_text_input`: force the text layers on
        hf_config.qformer_config.use_qformer_text_input = True
        hf_config.qformer_config.hidden_dropout_prob = dropout
        hf_config.qformer_config.attention_probs_dropout_prob = dropout
        model, info = Blip2ForImageTextRetrieval.from_pretrained(
            name, config=hf_config, output_loading_info=True
        )
        missing = list(info.get("missing_keys", []))
        mismatched = list(info.get("mismatched_keys", []))
        if missing or mismatched:
            raise ValueError(
                f"checkpoint {name!r} does not fit Blip2ForImageTextRetrieval: missing keys {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''}, mismatched keys {mismatched[:10]}"
            )
        return model

    def _check_vocab(self) -> None:
        """The tokenizer must not produce ids beyond the Q-Former's embedding table."""
        table = self.model.embeddings.word_embeddings.num_embeddings
        if len(self.tokenizer) > table:
            raise ValueError(
                f"tokenizer {self.config.tokenizer or self.config.pretrained!r} has {len(self.tokenizer)} tokens but the "
                f"Q-Former embeds only {table}"
            )

    def save_pretrained(self, directory: str | Path) -> None:
        """Write the HF model, the tokenizer and `unifashion_encoder.json` (our config + temperature)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(out))
        self.tokenizer.save_pretrained(str(out))
        fields = dataclasses.asdict(self.config)
        fields.pop("pretrained")
        fields.pop("tokenizer")
        (out / EXTRAS_FILE).write_text(
            json.dumps({"temperature": float(self.temp.item()), "config": fields}, indent=2)
        )

    @classmethod
    def from_pretrained(cls, directory: str | Path, **overrides: object) -> MultimodalEncoder:
        """Load an encoder saved by `save_pretrained` (or any HF BLIP-2 retrieval directory).

        Args:
            directory: the saved directory.
            **overrides: `EncoderConfig` fields to change (e.g. `freeze_vision=False`).
        """
        path = Path(directory).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"encoder directory {str(directory)!r} does not exist")
        fields: dict[str, object] = {}
        if (path / EXTRAS_FILE).is_file():
            fields.update(json.loads((path / EXTRAS_FILE).read_text())["config"])
        fields.update(overrides)
        fields["pretrained"] = str(path)
        fields.setdefault("tokenizer", None)
        return cls(EncoderConfig(**fields))

    # ------------------------------------------------------------------ parameter groups

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named parameter groups for the freeze policy and the optimiser.

        "vision": the ViT; "qformer": query tokens, text embeddings and the Q-Former layers;
        "projections": the ITC projections; "itm_head": the ITM classifier; "temperature": tau.
        """
        m = self.model
        return {
            "vision": list(m.vision_model.parameters()),
            "qformer": [m.query_tokens, *m.embeddings.parameters(), *m.qformer.parameters()],
            "projections": [*m.vision_projection.parameters(), *m.text_projection.parameters()],
            "itm_head": list(m.itm_head.parameters()),
            "temperature": [self.temp],
        }

    def vision_parameters(self) -> list[nn.Parameter]:
        """The parameters of the vision model (the "vision" group)."""
        return self.parameter_groups()["vision"]

    def trainable_groups(self) -> list[str]:
        """Names of the groups whose parameters currently all train."""
        return [name for name, ps in self.parameter_groups().items() if all(p.requires_grad for p in ps)]

    # ------------------------------------------------------------------ forward paths

    @property
    def temperature(self) -> torch.Tensor:
        """The ITC temperature, clamped in place to [0.001, 0.5] as LAVIS does (gradient kept).

        The in-place clamp runs only when the value is out of range (the first read after an optimiser
        step moved it out): an unconditional `clamp_` bumps the parameter's version, which breaks the
        backward pass of a step that reads the temperature twice (one ITC per dataset of a combined batch).
        """
        lo, hi = TEMPERATURE_RANGE
        with torch.no_grad():
            if not lo <= float(self.temp) <= hi:
                self.temp.clamp_(lo, hi)
        return self.temp

    @property
    def num_query_tokens(self) -> int:
        """Number of learnable queries Q."""
        return self.model.query_tokens.shape[1]

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Tokenise texts (padding to the longest, truncation to `max_text_length`), on the model's device."""
        enc = self.tokenizer(
            texts,
            padding="longest",
            truncation=True,
            max_length=self.config.max_text_length,
            return_tensors="pt",
        )
        device = self.temp.device
        return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}

    def encode_vision(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Run the vision model: (B, 3, S, S) -> (B, P, Hv) (autograd builds no graph when the freeze
        policy froze the ViT: no parameter and no input then requires a gradient)."""
        return self.model.vision_model(pixel_values=pixel_values).last_hidden_state  # (B, P, Hv)

    def encode_image(
        self, pixel_values: torch.Tensor | None = None, vision_embeds: torch.Tensor | None = None
    ) -> ImageEncoding:
        """Queries cross-attend the image (unimodal mode, queries only).

        Args:
            pixel_values: (B, 3, S, S) images; or
            vision_embeds: (B, P, Hv) precomputed (e.g. cached frozen) vision model outputs.
        """
        if vision_embeds is None:
            if pixel_values is None:
                raise ValueError("encode_image needs pixel_values or vision_embeds")
            vision_embeds = self.encode_vision(pixel_values)  # (B, P, Hv)
        image_mask = torch.ones(
            vision_embeds.shape[:-1], dtype=torch.long, device=vision_embeds.device
        )  # (B, P)
        queries = self.model.query_tokens.expand(vision_embeds.shape[0], -1, -1)  # (B, Q, H)
        query_output = self.model.qformer(
            query_embeds=queries, encoder_hidden_states=vision_embeds, encoder_attention_mask=image_mask
        ).last_hidden_state  # (B, Q, H)
        image_feats = F.normalize(self.model.vision_projection(query_output), dim=-1)  # (B, Q, E)
        return ImageEncoding(vision_embeds, query_output, image_feats)

    def _check_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        """Clear errors for mis-shaped or over-long token tensors."""
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} must both be (B, L)"
            )
        limit = self.model.embeddings.position_embeddings.num_embeddings
        if input_ids.shape[1] > limit:
            raise ValueError(f"text of {input_ids.shape[1]} tokens exceeds the Q-Former's {limit} positions")

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextEncoding:
        """Text alone through the Q-Former (unimodal mode, no queries): [CLS] output and its projection.

        Args:
            input_ids: (B, L) token ids starting with [CLS].
            attention_mask: (B, L) 1 for tokens, 0 for padding.
        """
        self._check_text(input_ids, attention_mask)
        embeds = self.model.embeddings(input_ids=input_ids)  # (B, L, H)
        hidden = self.model.qformer(
            query_embeds=embeds, query_length=0, attention_mask=attention_mask
        ).last_hidden_state  # (B, L, H)
        text_cls = hidden[:, 0, :]  # (B, H)
        text_feat = F.normalize(self.model.text_projection(text_cls), dim=-1)  # (B, E)
        return TextEncoding(text_cls, text_feat)

    def _check_queries(self, query_embeds: torch.Tensor, batch: int) -> None:
        """Clear error for query embeddings that cannot stand in for the learnable queries."""
        expected = (batch, *self.model.query_tokens.shape[1:])  # (B, Q, H)
        if tuple(query_embeds.shape) != expected:
            raise ValueError(
                f"query_embeds must be (B, Q, H) = {expected} (the learnable queries' shape), "
                f"got {tuple(query_embeds.shape)}"
            )

    def _joint(
        self,
        vision_embeds: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        query_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Bi-directional mode: queries and text attend to each other, queries cross-attend the image.

        Args:
            vision_embeds: (B, P, Hv) vision model outputs.
            input_ids: (B, L) token ids; attention_mask: (B, L).
            query_embeds: (B, Q, H) embeddings that take the place of the learnable queries (e.g. the
                composed query Z_R of `fuse`, for the composed ITM); None: the learnable queries.

        Returns:
            (B, Q + L, H) Q-Former outputs (queries first).
        """
        self._check_text(input_ids, attention_mask)
        if vision_embeds.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"vision_embeds batch {vision_embeds.shape[0]} != text batch {input_ids.shape[0]}"
            )
        batch, num_q = input_ids.shape[0], self.num_query_tokens
        if query_embeds is None:
            queries = self.model.query_tokens.expand(batch, -1, -1)  # (B, Q, H)
        else:
            self._check_queries(query_embeds, batch)
            queries = query_embeds  # (B, Q, H)
        embeds = self.model.embeddings(input_ids=input_ids, query_embeds=queries)  # (B, Q+L, H)
        query_mask = torch.ones(batch, num_q, dtype=attention_mask.dtype, device=attention_mask.device)
        mask = torch.cat([query_mask, attention_mask], dim=1)  # (B, Q+L)
        image_mask = torch.ones(
            vision_embeds.shape[:-1], dtype=torch.long, device=vision_embeds.device
        )  # (B, P)
        return self.model.qformer(
            query_embeds=embeds,
            query_length=num_q,
            attention_mask=mask,
            encoder_hidden_states=vision_embeds,
            encoder_attention_mask=image_mask,
        ).last_hidden_state  # (B, Q+L, H)

    def itm_logits(
        self,
        vision_embeds: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        query_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Image-text matching logits (eq. 4): ITM head averaged over the query positions.

        Args:
            vision_embeds: (B, P, Hv) vision model outputs.
            input_ids: (B, L) token ids; attention_mask: (B, L).
            query_embeds: (B, Q, H) embeddings in place of the learnable queries (the composed ITM
                passes Z_R: "does this image show the composed query?"); None: the learnable queries.

        Returns:
            (B, 2) logits, index 1 = "matches".
        """
        hidden = self._joint(vision_embeds, input_ids, attention_mask, query_embeds)  # (B, Q+L, H)
        return self.model.itm_head(hidden[:, : self.num_query_tokens, :]).mean(dim=1)  # (B, 2)

    def fuse(
        self, vision_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Composed-query fusion of phase 2 (as SPRC): reference image + modifying text.

        Args:
            vision_embeds: (B, P, Hv) vision model outputs of the reference images.
            input_ids: (B, L) modifying-text token ids; attention_mask: (B, L).

        Returns:
            query_output (B, Q, H) = Z_R, and fusion_feat (B, E) = the L2-normalised projection of the
            first text token after the queries (e_cls).
        """
        hidden = self._joint(vision_embeds, input_ids, attention_mask)  # (B, Q+L, H)
        num_q = self.num_query_tokens
        fusion_feat = F.normalize(self.model.text_projection(hidden[:, num_q, :]), dim=-1)  # (B, E)
        return hidden[:, :num_q, :], fusion_feat
