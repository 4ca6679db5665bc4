"""`unifashion compose`: reference image + modifying text -> the top-k gallery images, the caption of
the imagined target (from Z_R, eq. 11) and an image of it (from Z_R, eq. 12)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    com = sub.add_parser(name, help="composed retrieval, caption and image of reference image + modifying text")
    com.add_argument("--ckpt", required=True, help="a phase2_composed checkpoint")
    com.add_argument("--image", required=True, help="the reference image")
    com.add_argument("--text", required=True, help='the modifying text, e.g. "is red with long sleeves"')
    gal = com.add_mutually_exclusive_group()
    gal.add_argument("--index", default=None, help="a gallery index (unifashion index build)")
    gal.add_argument("--gallery", default=None, help="a folder of gallery images (indexed on the fly)")
    com.add_argument("-k", type=int, default=10)
    com.add_argument("--caption-weight", type=float, default=1.0)
    com.add_argument("--caption", action="store_true", help="caption the imagined target")
    com.add_argument("--style", default="fashioniq", choices=("fashiongen", "fashion200k", "fashioniq"))
    com.add_argument("--generate", action="store_true", help="generate an image of the imagined target")
    com.add_argument("--sampler", choices=("pndm", "dpmsolver++", "ddim"), default="dpmsolver++")
    com.add_argument("--steps", type=int, default=20)
    com.add_argument("--seed", type=int, default=1234)
    com.add_argument("--out", default=None, help="folder for the generated image and result.json")


def run(args) -> int:
    from unifashion.api import GalleryIndex, UniFashion
    from unifashion.cli.index import gallery_files

    model = UniFashion.from_checkpoint(args.ckpt)
    result: dict = {"reference": args.image, "modifier": args.text}
    if args.index or args.gallery:
        if args.index:
            gallery = GalleryIndex.load(args.index, model)
        else:
            files = gallery_files(args.gallery)
            gallery = model.index(files, ids=[f.name for f in files])
        hits = gallery.search(image=args.image, modifier=args.text, k=args.k, caption_weight=args.caption_weight)
        result["top_k"] = [{"id": i, "score": s} for i, s in hits]
        print(f"top {len(hits)}:")
        for rank, (i, s) in enumerate(hits, 1):
            print(f"  {rank:2d}. {i}  {s:.4f}")
    if args.caption or args.generate:
        z = model.composed_queries([args.image], [args.text])  # (1, Q, H) = Z_R
        if args.caption:
            result["caption"] = model.caption(queries=z, style=args.style)[0]
            print(f"caption of the target: {result['caption']}")
        if args.generate:
            if args.out is None:
                raise SystemExit("--generate needs --out")
            image = model.generate(queries=z, sampler=args.sampler, steps=args.steps, seed=args.seed)[0]
            Path(args.out).mkdir(parents=True, exist_ok=True)
            path = Path(args.out) / "composed.png"
            image.save(path)
            result["image"] = str(path)
            print(f"image of the target: {path}")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "result.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    return 0
