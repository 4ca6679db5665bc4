"""`unifashion caption`: captions of an image folder, of FashionGen validation, or of a Fashion-IQ split
(written as the Fashion-IQ-cap file `next_llava.{split}.{cat}.caption.json` that phase 2 reads)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    cap = sub.add_parser(name, help="caption an image folder or a dataset split")
    cap.add_argument("--ckpt", required=True)
    src = cap.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="a folder of images")
    src.add_argument("--data", help="a data root: FashionGen validation (styles fashiongen/fashion200k) or, "
                                    "with --style fashioniq, the Fashion-IQ images of --split")
    cap.add_argument("--style", choices=("fashiongen", "fashion200k", "fashioniq"), default="fashiongen")
    cap.add_argument("--split", nargs="+", default=["val"],
                     help="fashioniq: the split(s) whose images are captioned (train: the triplets' targets)")
    cap.add_argument("--categories", nargs="+", default=["dress", "shirt", "toptee"], help="fashioniq categories")
    cap.add_argument("--out", required=True, help="captions.json (fashioniq --data: the folder of the "
                                                  "next_llava.{split}.{cat}.caption.json files)")
    cap.add_argument("--num-beams", type=int, default=1)
    cap.add_argument("--max-new-tokens", type=int, default=40)
    cap.add_argument("--batch-size", type=int, default=32)


def run(args) -> int:
    from unifashion.api import UniFashion

    model = UniFashion.from_checkpoint(args.ckpt)
    gen = {"num_beams": args.num_beams, "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size}
    if args.data is not None and args.style == "fashioniq":
        from unifashion.data.roots import dataset_root
        from unifashion.tasks.cir.captions import write_fashioniq_captions

        files = write_fashioniq_captions(model, dataset_root(args.data, "fashioniq"), args.out,
                                         splits=tuple(args.split), categories=args.categories, **gen)
        for f in files.values():
            print(f"captions written to {f}")
        return 0
    if args.data is not None:
        from unifashion.tasks.fic.evaluate import caption_fashiongen

        captions = caption_fashiongen(model, args.data, style=args.style, **gen)
    else:
        from unifashion.tasks.fic.evaluate import caption_folder

        captions = caption_folder(model, args.images, style=args.style, **gen)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(captions, indent=1, ensure_ascii=False))
    print(f"{len(captions)} captions written to {out}")
    return 0
