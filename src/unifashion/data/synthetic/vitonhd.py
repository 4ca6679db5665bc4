"""Writer of synthetic VITON-HD (+ MGD multimodal annotations) in the official layout.

DATASETS.md 4.1-4.3 and 5.1. Under ``<root>/``:

- ``train_pairs.txt`` (paired: ``<id>_00.jpg <id>_00.jpg``), ``test_pairs.txt`` (unpaired: every
  test person with another test person's cloth);
- ``{train,test}/``: ``image/<id>_00.jpg`` (person, RGB, 4:3 height:width, default 256x192),
  ``cloth/<id>_00.jpg`` (in-shop garment on white), ``cloth-mask/<id>_00.jpg`` (grey JPEG, 255 on
  the garment), ``image-parse-v3/<id>_00.png`` (mode P, CIHP labels, see person.py),
  ``image-parse-agnostic-v3.2/<id>_00.png`` (mode P, labels 5/10/14/15 set to 0),
  ``agnostic-v3.2/<id>_00.jpg`` (person with the try-on region filled grey 128),
  ``agnostic-mask/<id>_00_mask.png`` (mode L, 255 on the try-on region),
  ``openpose_json/<id>_00_keypoints.json`` (BODY_25, 75 floats in the written image's pixel
  coordinates: a loader scaling by W/768, H/1024 must use the actual image size instead),
  ``openpose_img/<id>_00_rendered.png``, ``image-densepose/<id>_00.jpg`` (body-part colours),
  ``im_sketch/<id>_00.png`` (mode L, black background, bright garment outline and seams);
  ``test/im_sketch_unpaired/<person stem>_<cloth stem>.png`` (the cloth's outline in the person's
  pose) for every test pair;
- ``captions.json``: ``{"<5-digit id>": [3 lower-case noun chunks]}``; exactly one train id has
  only 2 chunks (exercises the loaders' ">= 3 captions" filter);
- ``attributes.jsonl``: the sidecar, one line per person id (``image`` = person image, ``cloth``
  = its own cloth image).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from unifashion.data.synthetic.attributes import SUBCATEGORIES, Garment, sample_garment
from unifashion.data.synthetic.captions import noun_chunks
from unifashion.data.synthetic.common import (
    SIDECAR,
    Progress,
    record,
    rng_for,
    save_jpeg,
    save_png,
    write_jsonl,
)
from unifashion.data.synthetic.person import (
    UPPER_LABELS,
    Person,
    garment_on_person,
    render_person,
    render_skeleton,
    sample_person,
)
from unifashion.data.synthetic.render import Frame, Pose, garment_index, garment_palette

SPLITS = ("train", "test")
FOLDERS = ("image", "cloth", "cloth-mask", "image-parse-v3", "image-parse-agnostic-v3.2", "agnostic-v3.2",
           "agnostic-mask", "openpose_json", "openpose_img", "image-densepose", "im_sketch")


@dataclass(frozen=True)
class VitonHDSpec:
    """What to write.

    Attributes:
        train: number of train persons.
        test: number of test persons (>= 2 for the unpaired test pairs).
        size: (height, width) of every image (4:3; the official release is 1024x768).
    """

    train: int
    test: int
    size: tuple[int, int] = (256, 192)


def cihp_palette() -> list[int]:
    """A display palette for the 20 CIHP labels (the label is the pixel value)."""
    pal = [0, 0, 0]
    for i in range(1, 256):
        pal += [(i * 67) % 256, (i * 131 + 60) % 256, (i * 199 + 120) % 256]
    return pal


def _p_image(labels: np.ndarray) -> Image.Image:
    img = Image.fromarray(labels.astype(np.uint8), mode="L").convert("P")
    img.putpalette(cihp_palette())
    return img


def _openpose(kp: np.ndarray) -> dict:
    return {"version": 1.3, "people": [{
        "person_id": [-1],
        "pose_keypoints_2d": [float(x) for x in kp.reshape(-1)],
        "face_keypoints_2d": [0.0] * 210,
        "hand_left_keypoints_2d": [0.0] * 63,
        "hand_right_keypoints_2d": [0.0] * 63,
        "pose_keypoints_3d": [], "face_keypoints_3d": [], "hand_left_keypoints_3d": [],
        "hand_right_keypoints_3d": [],
    }]}


def _cloth(g: Garment, height: int, width: int) -> tuple[Image.Image, np.ndarray]:
    frame = Frame.product("top", height, width)
    idx = garment_index(g, frame, height, width, Pose(sleeve_angle=24.0))
    rgb = garment_palette(g, (255, 255, 255))[idx]  # (H, W, 3)
    return Image.fromarray(rgb), idx > 0


def _sketch(detail: np.ndarray) -> Image.Image:
    strokes = Image.fromarray(detail.astype(np.uint8) * 255, mode="L")
    return strokes.filter(ImageFilter.MaxFilter(3)) if detail.shape[0] >= 128 else strokes


def plan(spec: VitonHDSpec, seed: int) -> dict[str, list[tuple[str, Garment, Person]]]:
    """Persons of every split: (5-digit id, garment, person), ids unique and sorted per split."""
    rng = rng_for(seed, "vitonhd", "plan")
    n = spec.train + spec.test
    ids = sorted(int(i) for i in rng.choice(min(99_999, max(20 * n, 15_000)), size=n, replace=False))
    order = rng.permutation(n)
    split_ids = {"train": sorted(ids[int(i)] for i in order[:spec.train]),
                 "test": sorted(ids[int(i)] for i in order[spec.train:])}
    tops = [s for s in SUBCATEGORIES if s.kind == "top"]
    out: dict[str, list[tuple[str, Garment, Person]]] = {}
    for split in SPLITS:
        out[split] = []
        for i in split_ids[split]:
            g = sample_garment(rng, 300_000 + i, tops[int(rng.integers(len(tops)))])
            out[split].append((f"{i:05d}", g, sample_person(rng)))
    return out


def write_vitonhd(root: Path, spec: VitonHDSpec, seed: int = 0, progress: Progress | None = None) -> dict:
    """Write every VITON-HD folder, the pair files, captions.json and the sidecar under `root`.

    Args:
        root: the VITON-HD dataset root (created).
        spec: sizes.
        seed: generation seed.
        progress: called with 1 after each person.

    Returns:
        Counts: {"<split>/persons", "test/unpaired_pairs", "captions", "captions_short"}.
    """
    if spec.test < 2:
        raise ValueError(f"VitonHDSpec.test must be >= 2 for unpaired test pairs, got {spec.test}")
    h, w = spec.size
    root = Path(root)
    persons = plan(spec, seed)
    captions: dict[str, list[str]] = {}
    records = []
    test_ids = [pid for pid, _, _ in persons["test"]]
    shift = 1 + int(rng_for(seed, "vitonhd", "pairs").integers(len(test_ids) - 1))
    unpaired = {test_ids[i]: test_ids[(i + shift) % len(test_ids)] for i in range(len(test_ids))}
    garments = {pid: g for split in SPLITS for pid, g, _ in persons[split]}
    for split in SPLITS:
        base = root / split
        for folder in FOLDERS:
            (base / folder).mkdir(parents=True, exist_ok=True)
        for pid, g, person in persons[split]:
            stem = f"{pid}_00"
            conf = rng_for(seed, "vitonhd", "conf", pid).uniform(0.7, 0.97, size=25)
            r = render_person(g, person, h, w, conf)
            save_jpeg(r.image, base / "image" / f"{stem}.jpg")
            cloth, cmask = _cloth(g, h, w)
            save_jpeg(cloth, base / "cloth" / f"{stem}.jpg")
            save_jpeg(Image.fromarray(cmask.astype(np.uint8) * 255, mode="L"), base / "cloth-mask" / f"{stem}.jpg")
            save_png(_p_image(r.parse), base / "image-parse-v3" / f"{stem}.png")
            upper = np.isin(r.parse, UPPER_LABELS)  # (H, W)
            agn_parse = np.where(upper, 0, r.parse)
            save_png(_p_image(agn_parse), base / "image-parse-agnostic-v3.2" / f"{stem}.png")
            region = np.asarray(Image.fromarray(upper.astype(np.uint8) * 255, mode="L").filter(ImageFilter.MaxFilter(5)))
            agn = np.asarray(r.image).copy()
            agn[region > 127] = 128
            save_jpeg(Image.fromarray(agn), base / "agnostic-v3.2" / f"{stem}.jpg")
            save_png(Image.fromarray(region, mode="L"), base / "agnostic-mask" / f"{stem}_mask.png")
            (base / "openpose_json" / f"{stem}_keypoints.json").write_text(json.dumps(_openpose(r.keypoints)))
            save_png(render_skeleton(r.keypoints, h, w), base / "openpose_img" / f"{stem}_rendered.png")
            dense = np.zeros((h, w, 3), dtype=np.uint8)
            for label in (int(v) for v in np.unique(r.parse)):
                if label:
                    dense[r.parse == label] = ((label * 37) % 256, (label * 89 + 40) % 256, (label * 53 + 90) % 256)
            save_jpeg(Image.fromarray(dense), base / "image-densepose" / f"{stem}.jpg")
            save_png(_sketch(r.garment_detail), base / "im_sketch" / f"{stem}.png")
            if split == "test":
                cid = unpaired[pid]
                cidx = garment_on_person(garments[cid], person, h, w)
                detail = (cidx == 3) & ~np.isin(r.parse, (2, 13))  # the head stays in front
                save_png(_sketch(detail), base / "im_sketch_unpaired" / f"{stem}_{cid}_00.png")
            captions[pid] = noun_chunks(g)
            records.append(record("vitonhd", split, f"{split}/image/{stem}.jpg", g, 0,
                                  cloth=f"{split}/cloth/{stem}.jpg", noun_chunks=noun_chunks(g),
                                  person={"skin": list(person.skin), "hair": list(person.hair),
                                          "pants": person.pants, "shorts": person.shorts,
                                          "arm_angle": round(person.arm_angle, 3)}))
            if progress:
                progress(1)
    first_train = persons["train"][0][0] if persons["train"] else None
    if first_train is not None:
        captions[first_train] = captions[first_train][:2]
    (root / "train_pairs.txt").write_text("".join(f"{p}_00.jpg {p}_00.jpg\n" for p, _, _ in persons["train"]))
    (root / "test_pairs.txt").write_text("".join(f"{p}_00.jpg {unpaired[p]}_00.jpg\n" for p in test_ids))
    (root / "captions.json").write_text(json.dumps(dict(sorted(captions.items()))), encoding="utf-8")
    write_jsonl(root / SIDECAR, records)
    return {"train/persons": len(persons["train"]), "test/persons": len(persons["test"]),
            "test/unpaired_pairs": len(unpaired), "captions": len(captions),
            "captions_short": int(first_train is not None)}
