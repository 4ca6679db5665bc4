"""How well a phase-2 checkpoint's composed ITM (eq. 10, third term) separates its pairs.

On the first batches of the Fashion-IQ *training* triplets (a check of what the head learned to fit,
so no validation data is read), the match probability of (modifying text, target image), of (text,
its reference image) and of (another triplet's text, target image), and how often the first is the
highest of each pair. A head at its prior gives 1/3 to every pair and ranks at chance. The pass is the
checkpoint's own (`model.cir_itm_queries`): the text alone ("text"), or Z_R of the triplet's reference
and text with the text ("composed"; the other triplet's pair then brings its own Z_R).

    python bench/bench_composed_itm.py runs/demo/composed.ckpt
    python bench/bench_composed_itm.py CKPT --root data/synthetic/fashioniq --batches 6 \
        --captions 'runs/demo/composed/captions/next_llava.{split}.{cat}.caption.json'
"""

from __future__ import annotations

import argparse

import torch

from unifashion.data.fashioniq import FashionIQDataModule
from unifashion.module import UniFashionModule


def p_match(enc, vision: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, z_r: torch.Tensor | None,
            rows: torch.Tensor) -> torch.Tensor:
    """(B,) match probability of the queries `rows` (their text, and their Z_R when given) with `vision` (B, P, Hv)."""
    queries = None if z_r is None else z_r[rows]  # (B, Q, H)
    return enc.itm_logits(vision, ids[rows], mask[rows], query_embeds=queries).softmax(-1)[:, 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt")
    parser.add_argument("--root", default="data/synthetic/fashioniq")
    parser.add_argument(
        "--captions", default="runs/demo/composed/captions/next_llava.{split}.{cat}.caption.json"
    )
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()

    module = UniFashionModule.load_from_checkpoint(args.ckpt, map_location="cpu").eval()
    enc = module.encoder
    composed = getattr(module, "cir_itm_queries", "text") == "composed"
    dm = FashionIQDataModule(
        root=args.root,
        batch_size=args.batch_size,
        num_workers=0,
        image_size=args.image_size,
        target_captions=args.captions,
    )
    dm.set_tokenizer(enc.tokenizer, enc.config.max_text_length)  # as the module does in training
    dm.setup("fit")
    torch.manual_seed(0)
    pos, ref, other = [], [], []
    with torch.no_grad():
        for i, batch in enumerate(dm.train_dataloader()):
            if i == args.batches:
                break
            reference = enc.encode_vision(batch["reference"])  # (B, P, Hv)
            target = enc.encode_vision(batch["target"])  # (B, P, Hv)
            ids, mask = batch["input_ids"], batch["attention_mask"]  # (B, L)
            shifted = torch.roll(torch.arange(ids.shape[0]), 1)  # another triplet's text for each target

            z_r = enc.fuse(reference, ids, mask)[0] if composed else None  # (B, Q, H) or None

            same = torch.arange(ids.shape[0])
            pos.append(p_match(enc, target, ids, mask, z_r, same))
            ref.append(p_match(enc, reference, ids, mask, z_r, same))
            other.append(p_match(enc, target, ids, mask, z_r, shifted))
    p, r, o = (torch.cat(x) for x in (pos, ref, other))  # (N,)
    print(f"{p.numel()} training triplets of {args.ckpt} (composed ITM queries: {'Z_R' if composed else 'text'})")
    print(
        f"mean p(match): (text, target) {p.mean():.3f}  (text, reference) {r.mean():.3f}  "
        f"(other text, target) {o.mean():.3f}  [prior 1/3]"
    )
    print(
        f"pos > ref {100 * (p > r).float().mean():.1f} %   pos > other text {100 * (p > o).float().mean():.1f} %"
    )


if __name__ == "__main__":
    main()
