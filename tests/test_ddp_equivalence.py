"""A whole training step through Lightning's DDP on 2 CPU processes (gloo) equals one process on the
concatenated batch, for every phase; validation losses are the same on 1 and 2 processes.

What is compared, and why it can be equal:

- Both runs start from the same weights (same seed) and see the same samples: the reference's step s
  is the concatenation [rank 0's batch s, rank 1's batch s] that Lightning's DDP fed the processes
  (recorded), so gathered columns have the same order as the reference's.
- Randomness is made a function of the sample, not of the process's RNG stream: ITM negatives are
  the arg-max of the sampling distribution (and the distributions themselves are compared: each
  process's rows of softmax weights over the gathered batch must equal the reference's rows);
  diffusion noise, timesteps and condition dropout are drawn from a generator seeded by the image's
  content; the captioner uses the paper's instruction (no paraphrase draw); dropout is 0.
- Compared: the gradients DDP averaged before the optimizer step, at every step, and the trainable
  weights after the last step (AdamW with eps=1, so updates are proportional to gradients and a sign
  flip of a ~0 gradient cannot hide or fake a difference). The query cache is on in the frozen-
  encoder phases, and the third step revisits images of the first epoch (cache hits on both sides).
- Validation: `trainer.validate` on 2 processes against 1 process, same per-process batch size,
  with the real (seeded) multinomial ITM draws: the batches are dealt out whole
  (`BatchRoundRobinSampler`) and every batch's random numbers are seeded by its single-process index.

All phases run in one pair of processes (one start-up), so the whole file is one slow spawn
(~1-2 min on the 2-core CPU); the per-phase tests read its results.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from fixtures_data import FIQ_SPLITS, write_fashiongen, write_fashioniq
from fixtures_vitonhd import write_vitonhd
from tiny import tiny_encoder_config
from torch.utils.data import DataLoader

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo"),
]

WORLD = 2
LOCAL_BATCH = {"phase1_retrieval": 3, "phase1_captioning": 2, "phase1_image_generation": 2, "finetune_tryon": 1,
               "phase2_composed": 2}
STEPS = {"phase1_retrieval": 3, "phase1_captioning": 3, "phase1_image_generation": 3, "finetune_tryon": 2,
         "phase2_composed": 2}
CAPTION_PATTERN = "next_llava.{split}.{cat}.caption.json"
PHASES = ["phase1_retrieval", "phase1_captioning", "phase1_image_generation", "finetune_tryon", "phase2_composed"]
CORPUS = ["Café cotton shirt.", "Striped shirt", "Blue jeans", "Linen shirt naïve", "Poplin shirt",
          "Leather belt élégant", "red short-sleeve t-shirt cotton top crew neck blue striped shirt long sleeves",
          "black long-sleeve v-neck top fitted ribbed knit white tank sleeveless scoop green hoodie"]
GEN = dict(pixel_space=True, num_queries=4, height=8, width=8, sample_size=8, block_out_channels=(16, 32),
           attention_from_block=0, cross_attention_dim=16, attention_head_dim=8, norm_num_groups=8,
           num_train_timesteps=100, guidance_scale=2.0, cond_dropout=0.3)


# ---------------------------------------------------------------------------------------- set-up


def _assets(root: Path) -> dict[str, str]:
    from unifashion.models.instructions import INSTRUCTIONS
    from unifashion.models.tokenizers import train_bpe_tokenizer, train_wordpiece_tokenizer

    write_fashiongen(root / "fashiongen", size=16)
    write_vitonhd(root / "vitonhd")
    fiq = write_fashioniq(root / "fashioniq")
    for cat, splits in FIQ_SPLITS.items():  # Fashion-IQ-cap target captions (phase 2's cir_itc_cap / itg)
        for split, asins in splits.items():
            caps = [{"image": a, "caption": f"{CORPUS[i % len(CORPUS)]}"} for i, a in enumerate(asins)]
            (fiq / CAPTION_PATTERN.format(split=split, cat=cat)).write_text(json.dumps(caps))
    corpus = CORPUS + ["USER: <Img> </Img> Assistant:"] + [s for v in INSTRUCTIONS.values() for s in v]
    train_wordpiece_tokenizer(corpus * 3, root / "qtok", vocab_size=200)
    train_bpe_tokenizer(corpus * 3, root / "ltok", vocab_size=300)
    return {k: str(root / k) for k in ("fashiongen", "vitonhd", "fashioniq", "qtok", "ltok")}


def _module(phase: str, a: dict[str, str]):
    from unifashion.models.captioner import CaptionerConfig
    from unifashion.module import UniFashionModule
    from unifashion.optim import OptimizerConfig

    enc = tiny_encoder_config(Path(a["qtok"]), qformer_dropout=0.0)
    cap = CaptionerConfig(tokenizer=a["ltok"], hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                          max_position_embeddings=128, lora_rank=4, lora_alpha=8, lora_dropout=0.0,
                          max_caption_tokens=16)
    opt = OptimizerConfig(lr=1e-2, eps=1.0, weight_decay=0.01, schedule="constant")
    kwargs: dict = dict(phase=phase, optimizer=opt)
    if phase == "phase1_captioning":
        kwargs |= dict(captioner=cap, query_cache_size=64)
    elif phase == "phase1_image_generation":
        kwargs |= dict(generator=GEN, query_cache_size=64)
    elif phase == "finetune_tryon":
        kwargs |= dict(generator={**GEN, "variant": "tryon", "height": 16, "width": 12, "attention_from_block": 1})
    elif phase == "phase2_composed":
        kwargs |= dict(captioner=cap, generator=GEN)
    L.seed_everything(0)
    return UniFashionModule(enc, **kwargs)


def _datamodule(phase: str, a: dict[str, str], batch_size: int):
    from unifashion.data.fashiongen import FashionGenDataModule
    from unifashion.data.fashioniq import FashionIQDataModule
    from unifashion.data.vitonhd import VitonHDDataModule

    if phase == "phase2_composed":
        return FashionIQDataModule(a["fashioniq"], batch_size=batch_size, image_size=16,
                                   target_captions=CAPTION_PATTERN)

    if phase == "finetune_tryon":
        return VitonHDDataModule(a["vitonhd"], batch_size=batch_size, height=16, width=12, encoder_image_size=16,
                                 max_val_items=None)
    return FashionGenDataModule(a["fashiongen"], batch_size=batch_size, image_size=16)


def _batch_ids(batch) -> list:
    if "row" in batch:
        return list(batch["row"])
    if "person_id" in batch:
        return list(batch["person_id"])
    return [f"{c}/{r}/{t}" for c, r, t in zip(batch["category"], batch["reference_id"], batch["target_id"])]


class _Recorder(L.Callback):
    """Per step: the batch's sample ids and the (DDP-averaged) gradients; at the end, the weights."""

    def __init__(self) -> None:
        self.ids: list[list] = []
        self.grads: list[dict[str, torch.Tensor]] = []
        self.weights: dict[str, torch.Tensor] = {}
        self.cache_hits = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.ids.append(_batch_ids(batch))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads.append({n: p.grad.detach().clone() for n, p in pl_module.named_parameters()
                           if p.requires_grad and p.grad is not None})

    def on_train_end(self, trainer, pl_module):
        self.weights = {n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad}
        self.cache_hits = pl_module.query_cache.hits


def _item_seed(x: torch.Tensor) -> int:
    from unifashion.models.frozen_cache import image_key

    return int.from_bytes(image_key(x)[:7], "little")


@contextlib.contextmanager
def _per_sample_randomness(itm_weights: list):
    """Make every random draw of a training step a function of the sample (module docstring)."""
    from unifashion.data import fashioniq
    from unifashion.losses import matching
    from unifashion.models import captioner as captioner_mod
    from unifashion.models.generator import Generator

    orig_sample, orig_denoise = matching.sample_hard_negatives, Generator.denoise_loss
    orig_prompt, orig_dropout = captioner_mod.prompt_after_queries, Generator.apply_condition_dropout
    orig_text = fashioniq.random_text

    def sample(sim, positives, generator=None):
        logits = sim.detach().float().masked_fill(positives, float("-inf"))
        weights = torch.softmax(logits, dim=1)  # (B, N): the distribution LAVIS draws from
        itm_weights.append(weights.clone())
        return weights.argmax(dim=1)

    def denoise(self, query_output, images, conditions=None, noise=None, timesteps=None):
        seeds = [_item_seed(img) for img in images]
        self._sample_seeds = seeds
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        latents_shape = images.shape[1:]  # pixel space: latents have the image's shape
        noise = torch.stack([torch.randn(latents_shape, generator=g) for g in gens])
        steps = self.scheduler.config.num_train_timesteps
        timesteps = torch.stack([torch.randint(0, steps, (), generator=g) for g in gens])
        return orig_denoise(self, query_output, images, conditions, noise=noise, timesteps=timesteps)

    def dropout(self, cond, generator=None):
        u = torch.tensor([torch.rand((), generator=torch.Generator().manual_seed(s + 1)).item()
                          for s in self._sample_seeds])
        dropped = u < self.config.cond_dropout
        b = cond.shape[0]
        return torch.where(dropped[:, None, None], self.null_condition_batch(b).to(cond.dtype), cond), dropped

    matching.sample_hard_negatives = sample
    Generator.denoise_loss = denoise
    Generator.apply_condition_dropout = dropout
    captioner_mod.prompt_after_queries = lambda name, rng=None: orig_prompt(name, None)
    fashioniq.random_text = lambda captions, u: fashioniq.eval_text(captions)  # no per-process text draw
    try:
        yield
    finally:
        matching.sample_hard_negatives = orig_sample
        Generator.denoise_loss = orig_denoise
        Generator.apply_condition_dropout = orig_dropout
        captioner_mod.prompt_after_queries = orig_prompt
        fashioniq.random_text = orig_text


def _trainer(devices: int, steps: int, root: str, callbacks=()) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                     max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
                     callbacks=list(callbacks), num_sanity_val_steps=0)


class _FixedBatches(L.LightningDataModule):
    """The wrapped module's training data, served as the given batches of sample ids, in order."""

    def __init__(self, dm, batches: list[list]) -> None:
        super().__init__()
        self.dm, self.batches = dm, batches

    def set_tokenizer(self, tokenizer, max_length):
        self.dm.set_tokenizer(tokenizer, max_length)

    def setup(self, stage):
        self.dm.trainer = self.trainer
        self.dm.setup(stage)

    def train_dataloader(self):
        base = self.dm.train_dataloader()
        ds = base.dataset
        if hasattr(ds, "rows"):
            index = {row: i for i, row in enumerate(ds.rows)}
        elif hasattr(ds, "pairs"):
            index = {p.person_stem: i for i, p in enumerate(ds.pairs)}
        else:
            index = {f"{t.category}/{t.candidate}/{t.target}": i for i, t in enumerate(ds.triplets)}
        return DataLoader(ds, batch_sampler=[[index[x] for x in b] for b in self.batches], collate_fn=base.collate_fn)


def _validation(phase: str, a: dict[str, str], devices: int, root: str) -> dict[str, float]:
    model = _module(phase, a)
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                        logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=root)
    out = trainer.validate(model, _datamodule(phase, a, LOCAL_BATCH[phase]), verbose=False)[0]
    return {k: float(v) for k, v in out.items()}


# ---------------------------------------------------------------------------------------- the 2 processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str, a: dict[str, str], phases: list[str]) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    results = {}
    for phase in phases:
        rec, itm = _Recorder(), []
        with _per_sample_randomness(itm):
            trainer = _trainer(WORLD, STEPS[phase], out, [rec])
            trainer.fit(_module(phase, a), _datamodule(phase, a, LOCAL_BATCH[phase]))
        results[phase] = {"ids": rec.ids, "grads": rec.grads, "weights": rec.weights, "itm": itm,
                          "cache_hits": rec.cache_hits,
                          "world": trainer.world_size, "strategy": type(trainer.strategy).__name__}
        if phase in ("phase1_retrieval", "finetune_tryon"):
            results[phase]["val"] = _validation(phase, a, WORLD, out)
    torch.save(results, f"{out}/rank{rank}.pt")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return _assets(tmp_path_factory.mktemp("ddp_assets"))


def _phase2_available(a) -> str | None:
    try:
        _module("phase2_composed", a)
    except (NotImplementedError, ValueError, TypeError) as e:
        return f"phase2_composed does not construct yet: {e}"
    return None


@pytest.fixture(scope="module")
def ddp_runs(assets, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_out")
    phases = [p for p in PHASES if p != "phase2_composed" or _phase2_available(assets) is None]
    mp.spawn(_worker, args=(_free_port(), str(out), assets, phases), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _reference(phase: str, a: dict[str, str], ids: list[list], root: str):
    rec, itm = _Recorder(), []
    with _per_sample_randomness(itm):
        dm = _FixedBatches(_datamodule(phase, a, WORLD * LOCAL_BATCH[phase]), ids)
        _trainer(1, len(ids), root, [rec]).fit(_module(phase, a), dm)
    return rec, itm


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b), sorted(set(a) ^ set(b))
    return max((a[k] - b[k]).abs().max().item() for k in a)


FIGURES: dict[str, dict[str, float]] = {}


@pytest.mark.parametrize("phase", PHASES)
def test_ddp_step_equals_concatenated_batch(phase, ddp_runs, assets, tmp_path):
    if phase == "phase2_composed" and (reason := _phase2_available(assets)):
        pytest.skip(reason)
    r0, r1 = ddp_runs[0][phase], ddp_runs[1][phase]
    assert r0["world"] == WORLD and r0["strategy"] == "DDPStrategy"
    steps = STEPS[phase]
    assert len(r0["ids"]) == len(r1["ids"]) == steps
    concat = [b0 + b1 for b0, b1 in zip(r0["ids"], r1["ids"])]
    assert len(set(concat[0])) == len(concat[0]), concat[0]  # the DDP sampler gave disjoint shards
    rec, itm = _reference(phase, assets, concat, str(tmp_path))
    assert rec.ids == concat

    # the processes agree with each other (DDP broadcast + averaged gradients) ...
    for s in range(steps):
        assert _max_diff(r0["grads"][s], r1["grads"][s]) == 0.0
    assert _max_diff(r0["weights"], r1["weights"]) == 0.0
    # ... and with one process on the concatenated batch
    grad_diff = max(_max_diff(r0["grads"][s], rec.grads[s]) for s in range(steps))
    grad_scale = max(v.abs().max().item() for g in rec.grads for v in g.values())
    weight_diff = _max_diff(r0["weights"], rec.weights)
    figures = {"grad_max_abs_diff_step0": _max_diff(r0["grads"][0], rec.grads[0]), "grad_max_abs_diff": grad_diff,
               "grad_max_abs": grad_scale, "weight_max_abs_diff": weight_diff}
    if phase == "phase1_retrieval":  # ITM: every process's sampling distributions = the reference's rows
        n = len(itm)
        assert n == 2 * steps and len(r0["itm"]) == len(r1["itm"]) == n
        b = LOCAL_BATCH[phase]
        figures["itm_weights_max_abs_diff"] = max(
            (torch.cat([r0["itm"][i], r1["itm"][i]]) - itm[i]).abs().max().item() for i in range(n))
        assert all(itm[i].shape == (WORLD * b, WORLD * b) for i in range(n))
        assert figures["itm_weights_max_abs_diff"] < 1e-6
    if phase in ("phase1_captioning", "phase1_image_generation"):
        figures["cache_hits_rank0_rank1_reference"] = (r0["cache_hits"], r1["cache_hits"], rec.cache_hits)
        assert rec.cache_hits > 0 and r0["cache_hits"] + r1["cache_hits"] > 0
    FIGURES[phase] = figures
    print(f"\n{phase}: {json.dumps(figures)}")
    # fp32: summation orders differ (all-reduce, gathers, batch reductions); a wrong scale or a lost
    # cross-process term would differ by a sizeable fraction of the gradients themselves
    # (later steps also carry the ~1e-7 weight differences of the earlier updates)
    assert figures["grad_max_abs_diff_step0"] <= 1e-4 * grad_scale, figures
    assert grad_diff <= 1e-3 * grad_scale, figures
    assert weight_diff <= 1e-6, figures


@pytest.mark.parametrize("phase", ["phase1_retrieval", "finetune_tryon"])
def test_validation_same_on_one_and_two_processes(phase, ddp_runs, assets, tmp_path):
    two = ddp_runs[0][phase]["val"]
    assert two == ddp_runs[1][phase]["val"]
    one = _validation(phase, assets, 1, str(tmp_path))
    assert set(one) == set(two) and "val/loss" in one
    diffs = {k: abs(one[k] - two[k]) for k in one}
    print(f"\n{phase} validation 1 vs 2 processes: {one} | max diff {max(diffs.values()):.2e}")
    assert max(diffs.values()) < 1e-5, diffs
