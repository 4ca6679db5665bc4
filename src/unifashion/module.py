"""UniFashionModule: the submodules, the phase table, optimisation and logging.

Only this file knows Lightning. The submodules (encoder, captioner, generator) are plain
`nn.Module`s built from typed configs; the phase row (phases.py) says which loss terms are computed
and which parameter groups train.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from unifashion.data.batch import PAIRS, TRYON
from unifashion.data.transforms import denormalize
from unifashion.losses.contrastive import ItcLoss
from unifashion.losses.matching import ItmLoss
from unifashion.models.captioner import Captioner, CaptionerConfig
from unifashion.models.encoder import EncoderConfig, MultimodalEncoder
from unifashion.models.generator import Generator, GeneratorConfig
from unifashion.models.query_cache import FrozenQueryCache
from unifashion.optim import OptimizerConfig, build_optimizer
from unifashion.phases import PhaseName, apply_freeze_policy, get_phase, resolve_loss_weights

IMPLEMENTED_TERMS = frozenset({"itc", "itm", "itg", "denoise"})
"""Loss terms `compute_losses` computes; the composed-retrieval terms of phase 2 are not written yet."""


class UniFashionModule(L.LightningModule):
    """One model for every UniFashion task.

    Args:
        encoder: the multimodal encoder (vision encoder + Q-Former) settings.
        captioner: the caption generator (text adapter + LLM + LoRA) settings, or None.
        generator: the image generator (image adapter + UNet + VAE) settings, or None.
        phase: the row of the phase table to train (phases.py).
        loss_weights: overrides of the phase's default loss weights (0 switches a term off).
        optimizer: AdamW and learning-rate schedule settings.
        label_smoothing: ITC label smoothing (LAVIS: 0.1).
        itm_max_pairs: ITM scores only this many pairs of each batch (None: all, as LAVIS); hard
            negatives are still mined from the whole batch. A cost knob for CPU runs.
        init_from: a checkpoint of an earlier phase whose weights are loaded before training
            (e.g. the phase1_retrieval checkpoint for phase1_generative).
        save_trainable_only: checkpoints keep only trained parameters and the parameters of
            submodules built from a config (frozen pretrained weights are reloaded from their
            pretrained paths, so a checkpoint never copies a 7B LLM).
        query_cache_size: in phases that keep the encoder frozen, compute the query outputs of at
            most this many distinct training images once and read them back afterwards
            (`models.query_cache`; exact, keyed by image content; host memory
            ``size * Q * H_q * 4`` bytes). 0 switches it off.
    """

    def __init__(
        self,
        encoder: EncoderConfig,
        captioner: CaptionerConfig | None = None,
        generator: GeneratorConfig | None = None,
        phase: PhaseName = "phase1_retrieval",
        loss_weights: dict[str, float] | None = None,
        optimizer: OptimizerConfig | None = None,
        label_smoothing: float = 0.1,
        itm_max_pairs: int | None = None,
        init_from: str | None = None,
        save_trainable_only: bool = True,
        query_cache_size: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.phase = get_phase(phase)
        self.loss_weights = resolve_loss_weights(self.phase, loss_weights)
        missing = sorted(k for k, v in self.loss_weights.items() if v > 0 and k not in IMPLEMENTED_TERMS)
        if missing:
            raise NotImplementedError(
                f"phase {phase!r} needs loss terms {missing}, which are not implemented yet "
                f"(implemented: {sorted(IMPLEMENTED_TERMS)})"
            )
        self.optimizer_config = optimizer or OptimizerConfig()
        self.save_trainable_only = save_trainable_only
        self.strict_loading = True  # on_load_checkpoint refills what on_save_checkpoint left out

        self.encoder = MultimodalEncoder(encoder)
        self.captioner = None
        self.generator = None
        qdim = self.encoder.model.config.qformer_config.hidden_size  # H_q
        if captioner is not None:
            self.captioner = Captioner(captioner, query_dim=qdim, num_queries=self.encoder.num_query_tokens)
        if generator is not None:
            self.generator = Generator(generator, query_dim=qdim)
        for need in self.phase.needs:
            if getattr(self, need) is None:
                raise ValueError(f"phase {self.phase.name!r} needs a {need} configuration (model.{need})")

        self.itc_loss = ItcLoss(label_smoothing=label_smoothing)
        self.itm_loss = ItmLoss(max_pairs=itm_max_pairs)
        if init_from:
            self.load_weights(init_from)
        self.trainable_counts = apply_freeze_policy(
            self.parameter_groups(),
            self.phase.trains,
            exclude=("vision",) if self.encoder.config.freeze_vision else (),
        )
        if query_cache_size and any(p.requires_grad for p in self.encoder.parameters()):
            raise ValueError(
                f"query_cache_size={query_cache_size} needs a frozen encoder, but phase {phase!r} trains it "
                "(cached query outputs would go stale); set model.query_cache_size: 0"
            )
        self.query_cache = FrozenQueryCache(query_cache_size)
        self._step_start: float | None = None
        self.train(self.training)  # frozen parts to eval now: Lightning captures these modes at fit start

    # ------------------------------------------------------------------ parts
    def train(self, mode: bool = True) -> UniFashionModule:
        """Train mode, except submodules the phase keeps wholly frozen, which stay in eval mode (no
        dropout on a frozen Q-Former feeding the captioner or the UNet; LAVIS's `disabled_train`)."""
        super().train(mode)
        if mode:
            for part in (self.encoder, self.captioner, self.generator):
                if part is not None and not any(p.requires_grad for p in part.parameters()):
                    part.eval()
        return self

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """Every parameter of every submodule, by named group (phases.py)."""
        groups: dict[str, list[torch.nn.Parameter]] = {}
        for part_name in ("encoder", "captioner", "generator"):
            part = getattr(self, part_name)
            if part is None:
                continue
            grouped = (
                part.parameter_groups() if hasattr(part, "parameter_groups") else part.trainable_parameter_groups()
            )
            seen = set()
            for name, params in grouped.items():
                groups.setdefault(name, []).extend(params)
                seen.update(id(p) for p in params)
            # what a part does not group (a frozen LLM base, the VAE) is never trained
            rest = [p for p in part.parameters() if id(p) not in seen]
            if rest:
                groups[f"{part_name}_frozen"] = rest
        return groups

    def load_weights(self, path: str | Path) -> None:
        """Loads the weights of an earlier checkpoint (missing/unexpected keys are reported)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"init_from checkpoint not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
        missing, unexpected = self.load_state_dict(state, strict=False)
        if unexpected:
            raise ValueError(f"{path}: unexpected keys for this model: {unexpected[:10]}")
        self._init_missing = missing

    # ------------------------------------------------------------------ losses
    def compute_losses(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Named loss terms of the current phase for one batch (weight-0 terms are skipped)."""
        w = self.loss_weights
        kind = batch.get("kind", PAIRS)
        terms: dict[str, torch.Tensor] = {}
        if kind == PAIRS and (w.get("itc", 0) > 0 or w.get("itm", 0) > 0):
            image = self.encoder.encode_image(batch["image"])
            text = self.encoder.encode_text(batch["input_ids"], batch["attention_mask"])
            itc = self.itc_loss.compute(
                image.image_feats, text.text_feat, self.encoder.temperature, batch["product_id"]
            )  # eq. 3
            if w.get("itc", 0) > 0:
                terms.update(itc.losses)
            if w.get("itm", 0) > 0:
                terms.update(
                    self.itm_loss(
                        self.encoder,
                        image.vision_embeds,
                        batch["input_ids"],
                        batch["attention_mask"],
                        itc.sim_i2t.detach(),
                        itc.sim_t2i.detach(),
                        batch["product_id"],
                        pad_token_id=self.encoder.tokenizer.pad_token_id or 0,
                    )  # eq. 4
                )
        if kind == PAIRS and (w.get("itg", 0) > 0 or w.get("denoise", 0) > 0):
            with torch.no_grad():  # the Q-Former is frozen in the generative phases
                queries = self.query_cache(
                    lambda images: self.encoder.encode_image(images).query_output, batch["image"]
                )  # (B, Q, H)
            if w.get("itg", 0) > 0:  # eq. 6
                inputs = self.captioner.prepare(batch["text"], [batch["dataset"]] * len(batch["text"]), train=True)
                terms.update(self.captioner(queries, inputs.to(self.device)))
            if w.get("denoise", 0) > 0:  # eq. 7
                terms.update(self.generator.denoise_loss(queries, self.generation_targets(batch["image"])))
        if kind == TRYON and w.get("denoise", 0) > 0:
            # try-on / design (Figure 3): the encoder reads the garment (or sketch) with the text,
            # bi-directionally; the UNet also sees the masked person, mask, pose and sketch.
            vision = self.encoder.encode_vision(batch["image_clip"])  # (B, P, Hv)
            queries, _ = self.encoder.fuse(vision, batch["input_ids"], batch["attention_mask"])  # (B, Q, H)
            conditions = {k: batch[k] for k in ("inpaint_mask", "pose_map", "sketch") if k in batch}
            terms.update(self.generator.denoise_loss(queries, batch["image"], conditions))  # eq. 12
        return terms

    def generation_targets(self, image: torch.Tensor) -> torch.Tensor:
        """Encoder images (B, 3, S, S), CLIP-normalised -> diffusion targets (B, 3, H, W) in [-1, 1]."""
        cfg = self.generator.config
        x = denormalize(image) * 2 - 1  # (B, 3, S, S) in [-1, 1]
        if tuple(x.shape[-2:]) != (cfg.height, cfg.width):
            x = F.interpolate(x, size=(cfg.height, cfg.width), mode="bilinear", antialias=True, align_corners=False)
        return x

    def _weighted_sum(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.loss_weights[k] * v for k, v in terms.items())

    @staticmethod
    def _named_batches(batch: Any) -> dict[str, Mapping[str, Any]]:
        """A CombinedLoader yields {loader name: batch}; a single loader yields a batch."""
        if isinstance(batch, Mapping) and "kind" not in batch:
            return {k: v for k, v in batch.items() if v is not None}
        return {batch.get("dataset", "data"): batch}

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        total = 0.0
        logged: dict[str, torch.Tensor] = {}
        n_items = 0
        for b in self._named_batches(batch).values():
            terms = self.compute_losses(b)
            total = total + self._weighted_sum(terms)
            for k, v in terms.items():
                logged[f"train/loss_{k}"] = logged.get(f"train/loss_{k}", 0.0) + v.detach()
            n_items += len(b["text"])
        if not logged:
            raise RuntimeError(f"phase {self.phase.name!r} computed no loss term for this batch")
        self.log_dict(logged, prog_bar=False, on_step=True, on_epoch=True, batch_size=n_items)
        self.log("train/loss", total, prog_bar=True, on_step=True, on_epoch=True, batch_size=n_items)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, batch_size=n_items)
        self._n_items = n_items
        return total

    def on_fit_start(self) -> None:
        self.query_cache.clear()  # the encoder's weights may have changed since the last fit

    def on_train_epoch_start(self) -> None:
        # Lightning restores the per-module modes it captured at fit start (not `self.train()`), so a
        # module that was put in train mode by hand before `fit` would keep its dropout on.
        self.train()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._step_start is not None:
            dt = time.perf_counter() - self._step_start
            self.log("train/items_per_s", getattr(self, "_n_items", 0) / max(dt, 1e-9), on_step=True)
        if self.query_cache.max_items:
            self.log("train/query_cache_hits", float(self.query_cache.hits), on_step=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        total = 0.0
        n_items = 0
        for b in self._named_batches(batch).values():
            terms = self.compute_losses(b)
            total = total + self._weighted_sum(terms)
            n_items += len(b["text"])
            for k, v in terms.items():
                self.log(f"val/loss_{k}", v, batch_size=len(b["text"]), sync_dist=True)
        self.log("val/loss", total, prog_bar=True, batch_size=n_items, sync_dist=True)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        total = max(1, int(self.trainer.estimated_stepping_batches))
        opt, sched = build_optimizer(self.named_parameters(), self.optimizer_config, total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ data hooks
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "set_tokenizer"):
            dm.set_tokenizer(self.encoder.tokenizer, self.encoder.config.max_text_length)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Drops frozen parameters whose weights reload from a pretrained path (see __init__)."""
        if not self.save_trainable_only:
            return
        state = checkpoint["state_dict"]
        for name, p in self.named_parameters():
            if not p.requires_grad and self._from_pretrained(name):
                state.pop(name, None)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refills the frozen pretrained weights `on_save_checkpoint` left out with the values this
        module was just built with (from their pretrained paths, and `init_from`), so that loading
        stays strict: any other missing or unexpected key is an error."""
        state = checkpoint["state_dict"]
        for name, value in self.state_dict().items():
            if name not in state and self._from_pretrained(name):
                state[name] = value

    def _from_pretrained(self, name: str) -> bool:
        """Whether parameter `name` is a weight that rebuilding the module reloads from a pretrained path."""
        enc, cap, gen = self.encoder.config, getattr(self.captioner, "config", None), getattr(self.generator, "config", None)
        if name.startswith("encoder.model."):
            return enc.pretrained is not None
        if name.startswith("captioner.language_model.") and cap is not None:
            return cap.llm is not None and "lora_" not in name
        if gen is not None and name.startswith(("generator.unet.", "generator.vae.")):
            part = name.split(".")[1]
            widened_input = name.startswith("generator.unet.conv_in.")
            return (getattr(gen, part, None) or gen.pretrained) is not None and not widened_input
        return False
