"""UniFashionModule: the submodules, the phase table, optimisation and logging.

Only this file knows Lightning. The submodules (encoder, captioner, generator) are plain
`nn.Module`s built from typed configs; the phase row (phases.py) says which loss terms are computed
and which parameter groups train.
"""

from __future__ import annotations

import dataclasses
import inspect
import pickle
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from unifashion.callbacks import LoaderStateCallback, NonFiniteGuard, OnNonFinite, RngStateCallback
from unifashion.data.batch import PAIRS, TRIPLETS, TRYON
from unifashion.data.transforms import denormalize
from unifashion.losses import distributed
from unifashion.losses.composed_contrastive import ComposedItcLoss, ids_from_strings
from unifashion.losses.composed_matching import ComposedItmLoss, ComposedNegatives, ComposedQueries
from unifashion.losses.contrastive import ItcLoss
from unifashion.losses.matching import ItmLoss
from unifashion.models.captioner import Captioner, CaptionerConfig
from unifashion.models.encoder import EncoderConfig, MultimodalEncoder
from unifashion.models.frozen_cache import FrozenOutputCache
from unifashion.models.generator import Generator, GeneratorConfig
from unifashion.optim import OptimizerConfig, build_optimizer
from unifashion.phases import PhaseName, apply_freeze_policy, get_phase, resolve_loss_weights

IMPLEMENTED_TERMS = frozenset({"itc", "itm", "itg", "denoise", "cir_itc_img", "cir_itc_cap", "cir_itm"})
"""Loss terms `compute_losses` computes (phase 1 pairs, phase 2 triplets, try-on)."""


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
        itm_trains_vision: the ITM loss (eq. 4) back-propagates into the vision encoder. BLIP-2 never
            does (its ViT is frozen: only the Q-Former learns ITM); set False when the vision encoder is
            trained from scratch (tiny configs) so that only ITC shapes it. Measured on the tiny
            retrieval config with ITM weight 10: True lowers ITC full-protocol R@1 from 46.0 / 52.4 to
            39.4 / 43.3, False keeps 44.0 / 48.1 (bench/RESULTS.md).
        cir_itm_negatives: the negatives of the composed ITM (eq. 10, third term): "hard" (drawn from
            the composed ITC similarities, as phase 1's ITM and LAVIS), "random" (uniform over the
            batch's other targets and texts) or "reference" (the text's own reference image, which does
            not show what the text asks for, and a uniform other text): losses/composed_matching.py.
        cir_itm_queries: what the composed ITM matches against the target: "text" (the modifying text
            alone with the learnable queries, eq. 10 literally; ill-posed for relative texts such as "is
            longer", which need the reference image) or "composed" (the composed query: Z_R of `fuse`
            in place of the learnable queries, with the text; the loss then trains the fusion through
            Z_R; under DDP its negative queries come from the local batch): losses/composed_matching.py.
        init_from: a checkpoint of an earlier phase whose weights are loaded before training
            (e.g. the phase1_retrieval checkpoint for phase1_generative).
        save_trainable_only: checkpoints keep only trained parameters and the parameters of
            submodules built from a config (frozen pretrained weights are reloaded from their
            pretrained paths, so a checkpoint never copies a 7B LLM).
        query_cache_size: in phases that keep the encoder frozen, compute the query outputs of at
            most this many distinct training images once and read them back afterwards
            (`models.frozen_cache`; exact, keyed by image content; host memory
            ``size * Q * H_q * 4`` bytes). 0 switches it off.
        on_nonfinite: a NaN/inf loss term or gradient "raise"s `callbacks.NonFiniteError` (naming the
            step and the term) or "skip"s the update (counted, logged as ``train/nonfinite_skips``).
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
        itm_trains_vision: bool = True,
        cir_itm_negatives: ComposedNegatives = "hard",
        cir_itm_queries: ComposedQueries = "text",
        init_from: str | None = None,
        save_trainable_only: bool = True,
        query_cache_size: int = 0,
        on_nonfinite: OnNonFinite = "raise",
    ) -> None:
        super().__init__()
        # checkpoints store plain data (dicts of the config fields), never pickled config objects;
        # `load_from_checkpoint` passes those dicts back here
        encoder = _as_config(EncoderConfig, encoder, "encoder")
        captioner = _as_config(CaptionerConfig, captioner, "captioner")
        generator = _as_config(GeneratorConfig, generator, "generator")
        optimizer = _as_config(OptimizerConfig, optimizer, "optimizer")
        self.save_hyperparameters(_plain_hparams(UniFashionModule.__init__, locals()))
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
        self.itm_trains_vision = itm_trains_vision
        if cir_itm_negatives not in ("hard", "random", "reference"):
            raise ValueError(f"cir_itm_negatives must be 'hard', 'random' or 'reference', got {cir_itm_negatives!r}")
        self.cir_itm_negatives = cir_itm_negatives
        if cir_itm_queries not in ("text", "composed"):
            raise ValueError(f"cir_itm_queries must be 'text' or 'composed', got {cir_itm_queries!r}")
        self.cir_itm_queries = cir_itm_queries
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
        self.query_cache = FrozenOutputCache(query_cache_size)
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
        """Loads the weights of an earlier phase's checkpoint (`init_from`), refusing lost trained weights.

        Every key of the checkpoint must fit this model, except the keys of a part this phase does not
        build (e.g. a phase-2 checkpoint's captioner for try-on), which are skipped. A UNet ``conv_in``
        with fewer input channels than this model's widened one is zero-padded (as `widen_conv_in`).
        A key this model has and the checkpoint lacks is accepted only when it is a frozen pretrained
        weight never trained in the checkpoint's chain (it was just reloaded from its pretrained path)
        or belongs to a part the checkpoint does not have (built fresh); anything else (e.g. a trained
        Q-Former that an older save dropped) is an error naming the keys.
        """
        path = Path(path)
        if path.is_dir():
            raise ValueError(
                f"init_from {path} is a directory (a sharded DeepSpeed checkpoint?); convert it first: "
                "unifashion.strategies.convert_deepspeed_checkpoint(dir, file), then set init_from to the file"
            )
        if not path.is_file():
            raise FileNotFoundError(f"init_from checkpoint not found: {path}")
        ckpt = _load_checkpoint_file(path)
        if "state_dict" not in ckpt:
            raise ValueError(f"init_from {path} is not a Lightning checkpoint (no 'state_dict' key)")
        own = self.state_dict()
        state, skipped = {}, []
        for key, value in ckpt["state_dict"].items():
            part = key.split(".", 1)[0]
            if part in ("captioner", "generator") and getattr(self, part) is None:
                skipped.append(key)
                continue
            if key.endswith("unet.conv_in.weight") and key in own and value.shape != own[key].shape:
                value = _pad_input_channels(value, own[key].shape, path, key)
            state[key] = value
        trained_before = self._chain_record(ckpt)["trained"]
        missing, unexpected = self.load_state_dict(state, strict=False)
        if unexpected:
            raise ValueError(f"{path}: unexpected keys for this model: {unexpected[:10]}")
        parts_in_ckpt = {k.split(".", 1)[0] for k in state}
        lost = [k for k in missing if k in trained_before
                or (k.split(".", 1)[0] in parts_in_ckpt and not self._from_pretrained(k))]
        if lost:
            raise ValueError(
                f"init_from {path} lacks {len(lost)} weights this model cannot rebuild (trained in an earlier "
                f"phase, or not reloadable from a pretrained path): {lost[:10]}{' ...' if len(lost) > 10 else ''}. "
                "The checkpoint was saved without them (an older trainable-only save?); rebuild it with "
                "the current code"
            )
        self._init_missing = missing
        self._init_loaded = frozenset(state)
        self._chain_trained = frozenset(trained_before)
        self._chain_phases = tuple(self._chain_record(ckpt)["phases"])
        self._init_skipped = skipped

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
                        image.vision_embeds if self.itm_trains_vision else image.vision_embeds.detach(),
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
                terms.update(self.generator.denoise_loss(queries, self.generation_targets(batch)))
        if kind == TRYON and w.get("denoise", 0) > 0:
            # try-on / design (Figure 3): the encoder reads the garment (or sketch) with the text,
            # bi-directionally; the UNet also sees the masked person, mask, pose and sketch.
            vision = self.encoder.encode_vision(batch["image_clip"])  # (B, P, Hv)
            queries, _ = self.encoder.fuse(vision, batch["input_ids"], batch["attention_mask"])  # (B, Q, H)
            # the dataset's agnostic person and mask (VITON-HD agnostic-v3.2 / agnostic-mask), not the
            # target re-masked; "cloth" feeds the encoder copy of Figure 3 (controlnet_copy)
            conditions = {k: batch[k] for k in ("agnostic", "inpaint_mask", "pose_map", "sketch", "cloth")
                          if k in batch}
            terms.update(self.generator.denoise_loss(queries, batch["image"], conditions))  # eq. 12
        if kind == TRIPLETS:
            terms.update(self.composed_terms(batch))
        return terms

    def composed_terms(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Phase 2 on a triplet batch (eqs. 9-12); a term of weight 0 is not computed.

        Reference image + modifying text -> Z_R (B, Q, H) and e_cls (B, E) (`MultimodalEncoder.fuse`,
        bi-directional mask, eq. 9); target image -> Z_T (queries only); target caption -> Z_C (text
        only, [CLS]). ``cir_itc_img`` = ITC(e_cls, Z_T), ``cir_itc_cap`` = ITC(e_cls, Z_C), ``cir_itm`` =
        ITM(t, Z_T) (eq. 10; with ``cir_itm_queries="composed"`` the ITM pass's queries are Z_R, beside t);
        ``itg``: the target's caption from Z_R through the frozen LLM (eq. 11); ``denoise``: the target
        image from Z_R through the frozen UNet (eq. 12).
        """
        w = self.loss_weights
        need = {k for k in ("cir_itc_img", "cir_itc_cap", "cir_itm", "itg", "denoise") if w.get(k, 0) > 0}
        if not need:
            return {}
        enc = self.encoder
        if need & {"cir_itc_cap", "itg"} and "target_caption" not in batch:
            raise ValueError(
                "phase-2 terms cir_itc_cap / itg need the target captions: set data.target_captions "
                "(e.g. next_llava.{split}.{cat}.caption.json, written by `unifashion caption --style fashioniq`)"
            )
        tau = enc.temperature  # read once per step (the property clamps in place)
        reference = enc.encode_vision(batch["reference"])  # (B, P, Hv)
        z_r, e_cls = enc.fuse(reference, batch["input_ids"], batch["attention_mask"])  # (B, Q, H), (B, E)
        target_ids = ids_from_strings(batch["target_id"]).to(e_cls.device)  # (B,)
        itc = ComposedItcLoss()
        terms: dict[str, torch.Tensor] = {}
        if need & {"cir_itc_img", "cir_itm"}:
            target = enc.encode_image(batch["target"])  # Z_T: (B, Q, E) features
            itc_img = itc.compute(e_cls, target.image_feats, tau, target_ids)  # eq. 10, first term
            if "cir_itc_img" in need:
                terms["cir_itc_img"] = itc_img.loss
            if "cir_itm" in need:  # eq. 10, third term
                terms.update(ComposedItmLoss(self.itm_loss.max_pairs).composed(
                    enc, target.vision_embeds, batch["input_ids"], batch["attention_mask"], itc_img, target_ids,
                    pad_token_id=enc.tokenizer.pad_token_id or 0, negatives=self.cir_itm_negatives,
                    reference_vision_embeds=reference, queries=self.cir_itm_queries,
                    composed_queries=z_r if self.cir_itm_queries == "composed" else None,  # (B, Q, H), with grad
                ))
        if "cir_itc_cap" in need:  # eq. 10, second term
            caption = enc.tokenize(list(batch["target_caption"]))
            z_c = enc.encode_text(caption["input_ids"], caption["attention_mask"]).text_feat  # (B, E)
            terms["cir_itc_cap"] = itc.compute(e_cls, z_c, tau, target_ids).loss
        if "itg" in need:  # eq. 11
            captions = list(batch["target_caption"])
            inputs = self.captioner.prepare(captions, ["fashioniq"] * len(captions), train=True)
            terms.update(self.captioner(z_r, inputs.to(self.device)))
        if "denoise" in need:  # eq. 12
            target_image = {"image": batch["target"]}  # the encoder view of the target, denormalised
            terms.update(self.generator.denoise_loss(z_r, self.generation_targets(target_image)))
        return terms

    def generation_targets(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Diffusion targets (B, 3, H, W) in [-1, 1] of a pairs batch, at the generator's height x width.

        The target is the dataset's own image at the generator's resolution, `batch["generation_image"]`
        (FashionGen: the 256-px original resized with its aspect ratio kept, `FashionGenDataModule(
        generation_size=...)`), never the encoder's 224/64-px view upsampled. A data module that does
        not provide it (Fashion200K, Fashion-IQ-cap) falls back to the encoder view, denormalised and
        resized: lower resolution and, for a non-square generator, stretched.

        Raises:
            ValueError: `generation_image` has another size than the generator's (fix the data
                module's `generation_size`).
        """
        cfg = self.generator.config
        target = batch.get("generation_image")
        if target is not None:
            if tuple(target.shape[-2:]) != (cfg.height, cfg.width):
                raise ValueError(f"batch['generation_image'] is {tuple(target.shape[-2:])} but the generator makes "
                                 f"{cfg.height}x{cfg.width}: set data.init_args.generation_size to "
                                 f"[{cfg.height}, {cfg.width}]")
            return target.to(self.device)  # (B, 3, H, W)
        x = denormalize(batch["image"]) * 2 - 1  # (B, 3, S, S) in [-1, 1]
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
        self.last_loss_terms = logged  # read by callbacks.NonFiniteGuard before the optimizer step
        return total

    def configure_callbacks(self) -> list[L.Callback]:
        """The non-finite guard (`on_nonfinite`) and RNG states in checkpoints (exact resume)."""
        return [NonFiniteGuard(self.hparams.get("on_nonfinite", "raise")), RngStateCallback(), LoaderStateCallback()]

    def on_fit_start(self) -> None:
        self.query_cache.clear()  # the encoder's weights may have changed since the last fit
        if self.generator is not None:
            self.generator.posterior_cache.clear()  # so may the VAE's (a checkpoint loaded in between)

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
        if self.generator is not None and self.generator.posterior_cache.max_items:
            self.log("train/posterior_cache_hits", float(self.generator.posterior_cache.hits), on_step=True)

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        # Exact on any number of processes: each process gets whole single-process batches
        # (data.sampling.BatchRoundRobinSampler), computes their losses without collectives, and
        # draws its random numbers (ITM negatives, diffusion noise) from a generator seeded by the
        # batch's index in the single-process order; the training RNG stream is left untouched.
        # `dataloader_idx`: a data module with several sequential validation loaders (CombinedDataModule
        # gives one combined loader of {dataset: batch}).
        world, rank = self.trainer.world_size, self.trainer.global_rank
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        per_dataset = (isinstance(batch, Mapping) and "kind" not in batch) or len(self.trainer.num_val_batches) > 1
        with distributed.local_only(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(1_000_003 + 7_919 * dataloader_idx + batch_idx * world + rank)
            self._validation_losses(batch, per_dataset)

    def _validation_losses(self, batch: Any, per_dataset: bool = False) -> None:
        """Logs ``val/loss`` (weighted sum of the terms) and ``val/loss_<term>``, item-weighted means over
        every validation item; with several datasets also ``val/<dataset>/loss[_<term>]`` per dataset."""
        for name, b in self._named_batches(batch).items():
            terms = self.compute_losses(b)
            if not terms:
                continue
            # float: Lightning's sync of an integer item count divides it by the world size in integer
            # arithmetic ((3 + 2) / 2 -> 2), skewing the epoch mean when processes hold different
            # numbers of items (lightning 2.6, fabric/utilities/distributed.py `_sync_ddp`)
            n = float(len(b["text"]))
            keys = [("val/", {})] + ([(f"val/{name}/", {"add_dataloader_idx": False})] if per_dataset else [])
            for prefix, kw in keys:
                for k, v in terms.items():
                    self.log(f"{prefix}loss_{k}", v, batch_size=n, sync_dist=True, **kw)
                self.log(f"{prefix}loss", self._weighted_sum(terms), prog_bar=prefix == "val/", batch_size=n,
                         sync_dist=True, **kw)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        total = max(1, int(self.trainer.estimated_stepping_batches))
        opt, sched = build_optimizer(self.named_parameters(), self.optimizer_config, total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ test / predict
    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """`unifashion test`: the phase's loss terms on the test loader, logged as `test/loss_<term>`
        (Lightning appends `/dataloader_idx_<i>` when there are several sequential test loaders)."""
        named = self._named_batches(batch)
        summed: dict[str, torch.Tensor] = {}
        total_n = 0.0
        for name, b in named.items():
            terms = self.compute_losses(b)
            n = float(len(b["text"]))
            total_n += n
            for k, v in terms.items():
                summed[k] = summed.get(k, 0.0) + v * n
                if len(named) > 1:  # a CombinedLoader: per-dataset keys beside the totals
                    self.log(f"test/{name}/loss_{k}", v, batch_size=n, sync_dist=True)
        for k, v in summed.items():
            self.log(f"test/loss_{k}", v / total_n, batch_size=total_n, sync_dist=True)
        if summed:
            self.log("test/loss", self._weighted_sum({k: v / total_n for k, v in summed.items()}),
                     batch_size=total_n, sync_dist=True)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """`unifashion predict`: what the inference API returns for a batch of image-text pairs:
        ITC features of the images (B, Q, E) and texts (B, E), and captions when the model has a
        captioner; with the batch's product ids and dataset names."""
        out: list[dict[str, Any]] = []
        for b in self._named_batches(batch).values():
            image = self.encoder.encode_image(b["image"])
            text = self.encoder.encode_text(b["input_ids"], b["attention_mask"])
            pred: dict[str, Any] = {"image_feats": image.image_feats, "text_feats": text.text_feat,
                                    "product_id": b.get("product_id"), "dataset": b.get("dataset")}
            if self.captioner is not None:
                pred["captions"] = self.captioner.generate(image.query_output, [b.get("dataset", "fashiongen")]
                                                           * image.query_output.shape[0])
            out.append(pred)
        return out[0] if len(out) == 1 else {"batches": out}

    # ------------------------------------------------------------------ data hooks
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "set_tokenizer"):
            dm.set_tokenizer(self.encoder.tokenizer, self.encoder.config.max_text_length)

    # ------------------------------------------------------------------ checkpoints
    def droppable_frozen_keys(self) -> list[str]:
        """Frozen parameters a trainable-only checkpoint may leave out: those that rebuilding the module
        from its config reloads with the same value, i.e. weights loaded from a pretrained path that were
        neither overwritten by `init_from` nor trained in any phase of the checkpoint chain."""
        if not self.save_trainable_only:
            return []
        loaded = getattr(self, "_init_loaded", frozenset())
        trained = getattr(self, "_chain_trained", frozenset())
        return [
            name for name, p in self.named_parameters()
            if not p.requires_grad and self._from_pretrained(name) and name not in loaded and name not in trained
        ]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Records the chain (`CHAIN_KEY`: parameters trained in any phase so far, the phases) and drops
        the frozen parameters that reload unchanged from a pretrained path (`droppable_frozen_keys`).

        Under DeepSpeed the strategy writes the shards and the checkpoint has no ``state_dict`` here
        (`unifashion.strategies` keeps the same contract)."""
        trained = set(getattr(self, "_chain_trained", ())) | {n for n, p in self.named_parameters() if p.requires_grad}
        phases = [*getattr(self, "_chain_phases", ()), self.phase.name]
        checkpoint[CHAIN_KEY] = {"trained": sorted(trained), "phases": phases}
        state = checkpoint.get("state_dict")
        if state is None:
            return
        for name in self.droppable_frozen_keys():
            state.pop(name, None)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refills the frozen pretrained weights `on_save_checkpoint` left out with the values this
        module was just built with (from their pretrained paths, and `init_from`), so that loading
        stays strict: any other missing key is an error naming it (a trained weight is never replaced
        by a pretrained one)."""
        record = self._chain_record(checkpoint)
        state = checkpoint.get("state_dict")
        if state is None:  # a DeepSpeed checkpoint directory: the strategy loads the shards
            return
        trained = set(record["trained"])
        refill = set(self.droppable_frozen_keys()) - trained
        params = {n for n, _ in self.named_parameters()}
        lost = []
        for name, value in self.state_dict().items():
            if name in state:
                continue
            if name in refill:
                state[name] = value
            elif name in params:
                lost.append(name)
        if lost:
            raise ValueError(
                f"checkpoint lacks {len(lost)} weights this model cannot rebuild from its pretrained paths: "
                f"{lost[:10]}{' ...' if len(lost) > 10 else ''} (trained in an earlier phase and dropped by an "
                "older trainable-only save? rebuild the checkpoint)"
            )
        # the resumed or reloaded module carries the chain on
        self._chain_trained = frozenset(set(getattr(self, "_chain_trained", ())) | trained)
        phases = list(record["phases"])
        if phases and phases[-1] == self.phase.name:
            phases = phases[:-1]
        self._chain_phases = tuple(phases)

    def _chain_record(self, checkpoint: Mapping[str, Any]) -> dict[str, Any]:
        """The checkpoint's chain record: {"trained": parameter names trained in any phase so far,
        "phases": the phases, "recorded": False when derived}. A checkpoint written before the record
        existed gets one derived from its phase's trainable groups (its earlier phases are unknown)."""
        record = checkpoint.get(CHAIN_KEY)
        if record is not None:
            return {"trained": set(record["trained"]), "phases": list(record["phases"]), "recorded": True}
        hparams = checkpoint.get("hyper_parameters") or {}
        phase = hparams.get("phase")
        if phase is None:
            return {"trained": set(), "phases": [], "recorded": False}
        enc = hparams.get("encoder")
        freeze_vision = enc.get("freeze_vision", True) if isinstance(enc, Mapping) else getattr(enc, "freeze_vision", True)
        trains = set(get_phase(phase).trains) - ({"vision"} if freeze_vision else set())
        names = {id(p): n for n, p in self.named_parameters()}
        trained = {names[id(p)] for g, ps in self.parameter_groups().items() if g in trains for p in ps}
        return {"trained": trained, "phases": [phase], "recorded": False}

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


# ---------------------------------------------------------------------- checkpoint helpers
CHAIN_KEY = "unifashion_chain"
"""Checkpoint key of the chain record: {"trained": names of the parameters trained in any phase of the
chain so far, "phases": the phases, oldest first}. `init_from` carries it forward, so a weight trained
in phase 1 and frozen afterwards is never mistaken for a droppable pretrained weight."""


def _as_config(cls: type, value: Any, name: str) -> Any:
    """`value` as a `cls` dataclass: a dict of its fields (what a checkpoint stores) is converted."""
    if value is None or isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"model.{name}: unknown {cls.__name__} fields {unknown} (known: {sorted(known)})")
        return cls(**value)
    raise TypeError(f"model.{name} must be a {cls.__name__} or a dict of its fields, got {type(value).__name__}")


def _plain(value: Any) -> Any:
    """Dataclasses -> dicts, recursively (tuples, lists, dicts, str, numbers, bools and None stay)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    return value


def _plain_hparams(init: Any, frame_locals: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments (every parameter of `init` but self) as plain data."""
    names = [n for n in inspect.signature(init).parameters if n != "self"]
    return {n: _plain(frame_locals[n]) for n in names}


def _load_checkpoint_file(path: Path) -> dict[str, Any]:
    """A checkpoint file with only plain data unpickled; checkpoints written before hyper-parameters
    were stored as plain data (they pickled the config dataclasses) load with full unpickling."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            return torch.load(path, map_location="cpu", weights_only=False)  # older format, a local file
    except (RuntimeError, EOFError, OSError) as e:  # truncated / not a torch file (zip reader errors)
        raise ValueError(f"{path}: cannot read the checkpoint ({e}); truncated or not a torch checkpoint?") from e


def _pad_input_channels(weight: torch.Tensor, shape: torch.Size, path: Path, key: str) -> torch.Tensor:
    """A conv weight (O, C, k, k) zero-padded to (O, C', k, k), C' >= C (the `widen_conv_in` rule)."""
    if weight.dim() != 4 or weight.shape[0] != shape[0] or weight.shape[2:] != shape[2:] or weight.shape[1] > shape[1]:
        raise ValueError(f"{path}: {key} has shape {tuple(weight.shape)}, this model needs {tuple(shape)}")
    padded = weight.new_zeros(shape)
    padded[:, : weight.shape[1]] = weight
    return padded
