"""Time one phase1_retrieval training step (ITC + ITM, forward + backward + AdamW) of the tiny and a
mid-size encoder, on random images and texts. CPU by default; `--device cuda` on a lent GPU.

    python bench/bench_encoder_step.py [--device cpu] [--steps 5] [--sizes tiny mid] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from unifashion.models.encoder import EncoderConfig  # noqa: E402
from unifashion.models.tokenizers import train_wordpiece_tokenizer  # noqa: E402
from unifashion.module import UniFashionModule  # noqa: E402

WORDS = ("red blue green black white striped dotted checked dress shirt coat skirt long short sleeve "
         "slim loose crew neck v-neck knee-length maxi mini cotton wool").split()

SIZES = {
    # the demo's tiny encoder (lightning_configs/tiny/phase1_retrieval.yaml), 64 px images
    "tiny": dict(image_size=64, patch_size=8, vision_hidden_size=128, vision_layers=2, vision_heads=4,
                 vision_intermediate_size=512, qformer_hidden_size=128, qformer_layers=2, qformer_heads=4,
                 qformer_intermediate_size=512, num_query_tokens=8, cross_attention_frequency=1, embed_dim=64,
                 batch=64),
    # a mid-size encoder: ViT-S/16-like at 224 px, 6-layer Q-Former of width 384, 16 queries
    "mid": dict(image_size=224, patch_size=16, vision_hidden_size=384, vision_layers=6, vision_heads=6,
                vision_intermediate_size=1536, qformer_hidden_size=384, qformer_layers=6, qformer_heads=6,
                qformer_intermediate_size=1536, num_query_tokens=16, cross_attention_frequency=2, embed_dim=128,
                batch=32),
}


def bench(size: str, tokenizer_dir: str, device: str, steps: int, precision: str) -> dict:
    spec = dict(SIZES[size])
    batch = spec.pop("batch")
    cfg = EncoderConfig(tokenizer=tokenizer_dir, max_text_length=32, freeze_vision=False, init_std=0.1,
                        qformer_dropout=0.0, **spec)
    model = UniFashionModule(cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, cfg.image_size, cfg.image_size, generator=g).to(device)
    texts = [" ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (12,), generator=g)) for _ in range(batch)]
    tok = model.encoder.tokenize(texts)
    b = {"kind": "pairs", "dataset": "fashiongen", "image": images, "text": texts,
         "product_id": torch.arange(batch, device=device), **tok}
    dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]

    def step():
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            loss = sum(model.compute_losses(b).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = (time.perf_counter() - start) / steps
    n_params = sum(p.numel() for p in params)
    return {"size": size, "device": device, "precision": precision, "batch": batch,
            "trainable_params": n_params, "step_s": round(dt, 4), "images_per_s": round(batch / dt, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "mid"], choices=sorted(SIZES))
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        train_wordpiece_tokenizer([" ".join(WORDS)] * 3 + WORDS, tmp, vocab_size=200)
        rows = [bench(s, tmp, args.device, args.steps, args.precision) for s in args.sizes]
    print(f"{'size':6} {'device':8} {'prec':5} {'batch':>5} {'params':>11} {'step s':>8} {'img/s':>8}")
    for r in rows:
        print(f"{r['size']:6} {r['device']:8} {r['precision']:5} {r['batch']:>5} {r['trainable_params']:>11,} "
              f"{r['step_s']:>8.3f} {r['images_per_s']:>8.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
