"""`unifashion index build`: index a gallery folder with a checkpoint (faiss; `unifashion.index`)."""

from __future__ import annotations

import argparse
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def gallery_files(folder: str | Path) -> list[Path]:
    """The image files of a folder (recursively), sorted; a clear error when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"gallery folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return files


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    idx = sub.add_parser(name, help="gallery index: build")
    isub = idx.add_subparsers(dest="index_cmd", required=True)
    build = isub.add_parser("build", help="embed a folder of images and write a gallery index")
    build.add_argument("--ckpt", required=True)
    build.add_argument("--images", required=True, help="a folder of gallery images (ids = paths relative to it)")
    build.add_argument("--out", required=True, help="the index folder")
    build.add_argument("--kind", default="flat", help="index kind (see unifashion.index.IndexSettings)")
    build.add_argument("--captions", action="store_true",
                       help="also caption every image (fashioniq style) for the composed score's caption term")
    build.add_argument("--batch-size", type=int, default=64)


def run(args) -> int:
    import json

    from unifashion.api import UniFashion
    from unifashion.index import IndexSettings

    model = UniFashion.from_checkpoint(args.ckpt)
    files = gallery_files(args.images)
    ids = [str(f.relative_to(args.images)) for f in files]
    captions = model.caption(files, style="fashioniq") if args.captions else None
    gallery = model.index(files, ids=ids, captions=captions, settings=IndexSettings(kind=args.kind),
                          batch_size=args.batch_size)
    out = gallery.save(args.out)
    (out / "checkpoint.json").write_text(json.dumps({"ckpt": str(Path(args.ckpt).resolve())}))
    print(f"indexed {len(gallery)} images into {out}")
    return 0
