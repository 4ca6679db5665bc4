"""`unifashion generate`: images from a dataset's conditions, from an image, a text, or both."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    gen = sub.add_parser(name, help="generate images (from FashionGen validation queries, an image, a text)")
    gen.add_argument("--ckpt", required=True)
    gen.add_argument("--data", default=None, help="a data root: generate from its FashionGen validation products")
    gen.add_argument("--image", nargs="+", default=None, help="condition image(s) (q2I), or reference(s) with --text")
    gen.add_argument("--text", nargs="+", default=None, help="text(s): alone, or modifying texts with --image")
    gen.add_argument("--sampler", choices=("pndm", "dpmsolver++", "ddim"), default="dpmsolver++")
    gen.add_argument("--steps", type=int, default=20)
    gen.add_argument("--guidance-scale", type=float, default=None)
    gen.add_argument("--seed", type=int, default=1234)
    gen.add_argument("--limit", type=int, default=None, help="--data: at most this many products")
    gen.add_argument("--out", required=True)


def run(args) -> int:
    from unifashion.api import UniFashion

    model = UniFashion.from_checkpoint(args.ckpt)
    out = Path(args.out)
    kwargs = {"sampler": args.sampler, "steps": args.steps, "guidance_scale": args.guidance_scale, "seed": args.seed}
    if args.data is not None:
        from unifashion.tasks.fig.evaluate import generate_fashiongen

        metrics = generate_fashiongen(model, args.data, out, limit=args.limit, **kwargs)
        print(json.dumps(metrics, indent=1))
        print(f"{len(list((out / 'unpaired').glob('*.jpg')))} images written under {out}")
        return 0
    if args.image is None and args.text is None:
        raise SystemExit("generate needs --data, --image, --text, or --image with --text")
    if args.image is not None and args.text is not None and len(args.image) != len(args.text):
        raise SystemExit(f"--image and --text need as many entries: {len(args.image)} vs {len(args.text)}")
    images = model.generate(args.image, args.text, **kwargs)
    out.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        image.save(out / f"generated_{i:03d}.png")
    print(f"{len(images)} images written to {out}")
    return 0
