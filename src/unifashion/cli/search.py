"""`unifashion search`: query a gallery index by text, by image, or by image + modifying text."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    s = sub.add_parser(name, help="search a gallery index (unifashion index build)")
    s.add_argument("--index", required=True)
    s.add_argument("--ckpt", default=None, help="default: the checkpoint the index was built with")
    s.add_argument("--text", default=None)
    s.add_argument("--image", default=None)
    s.add_argument("--modifier", default=None, help="with --image: composed retrieval")
    s.add_argument("-k", type=int, default=10)


def run(args) -> int:
    from unifashion.api import GalleryIndex, UniFashion

    ckpt = args.ckpt
    if ckpt is None:
        meta = Path(args.index) / "checkpoint.json"
        if not meta.is_file():
            raise SystemExit(f"{meta} not found: pass --ckpt")
        ckpt = json.loads(meta.read_text())["ckpt"]
    model = UniFashion.from_checkpoint(ckpt)
    gallery = GalleryIndex.load(args.index, model)
    hits = gallery.search(text=args.text, image=args.image, modifier=args.modifier, k=args.k)
    for rank, (i, s) in enumerate(hits, 1):
        print(f"{rank:2d}. {i}  {s:.4f}")
    return 0
