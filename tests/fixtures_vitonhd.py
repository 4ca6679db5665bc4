"""A tiny VITON-HD + MGD fixture in the official layout (DATASETS.md 4.1, 4.5, 5.1, 5.4), independent of
the loader. Images are 64 x 48 (H x W, 4:3) except one 1024 x 768 person whose OpenPose keypoints are
in 1024 x 768 pixels (to test the keypoint scaling).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

H, W = 64, 48
BIG_H, BIG_W = 1024, 768

TRAIN_PAIRS = [("00001_00.jpg", "00002_00.jpg"), ("00002_00.jpg", "00001_00.jpg")]  # column 2 unused at train
TEST_PAIRS = [  # unpaired; 00006's captions are filtered out (only 2); 00005 is the 1024 x 768 person
    ("00003_00.jpg", "00004_00.jpg"),
    ("00004_00.jpg", "00006_00.jpg"),
    ("00005_00.jpg", "00003_00.jpg"),
]
BIG_PERSON = "00005_00"

CAPTIONS = {
    "00001": ["red short-sleeve t-shirt", "cotton top", "crew neck"],
    "00002": ["blue striped shirt", "long sleeves", "button-down collar"],
    "00003": ["black long-sleeve v-neck top", "fitted top", "ribbed knit"],
    "00004": ["white tank top", "sleeveless top", "scoop neck"],
    "00005": ["green hoodie", "oversized sweatshirt", "kangaroo pocket"],
    "00006": ["yellow blouse", "puff sleeves"],  # fewer than 3: dropped by the MGD filter
}

# parse map (64 x 48) rectangles: label -> (row0, row1, col0, col1) inclusive
PARSE_BOXES = [
    (13, (0, 9, 16, 31)),  # face
    (5, (12, 35, 10, 37)),  # upper clothes
    (14, (14, 30, 4, 9)),  # left arm
    (15, (14, 30, 38, 43)),  # right arm
    (9, (36, 60, 12, 35)),  # pants
]
AGNOSTIC_MASK_BOX = (12, 40, 6, 41)  # white region of agnostic-mask/<p>_mask.png
CLOTH_MASK_BOX = (8, 55, 6, 41)
MISSING_BODY25 = 13  # BODY_25 joint written as (0, 0) ("not found")
STROKE_COLS = (5, 40)  # stroke columns of every sketch (inclusive)
FAINT_PIXELS = {(5, 5): 200, (6, 6): 240}  # (row, col) -> value in every sketch


def body25_xy(j: int) -> tuple[int, int]:
    """(x, y) of BODY_25 joint j in 64 x 48 pixels (distinct per joint)."""
    return 4 + j, 2 + 2 * j


def sketch_row(person_stem: str, cloth_stem: str | None) -> int:
    """The stroke row of a sketch: paired 10 + n, unpaired 40 + n (n = person number)."""
    n = int(person_stem[:5])
    return 10 + n if cloth_stem is None else 40 + n


def _rgb(seed: int, h: int = H, w: int = W) -> Image.Image:
    if h == H:
        return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    y, x = np.mgrid[:h, :w]
    arr = np.stack([(x * 255 // w), (y * 255 // h), np.full_like(x, 40 * seed % 256)], -1).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def _box(box: tuple[int, int, int, int], value: int = 255) -> np.ndarray:
    arr = np.zeros((H, W), dtype=np.uint8)
    r0, r1, c0, c1 = box
    arr[r0 : r1 + 1, c0 : c1 + 1] = value
    return arr


def parse_array() -> np.ndarray:
    """The label map written for every person (64 x 48)."""
    arr = np.zeros((H, W), dtype=np.uint8)
    for label, (r0, r1, c0, c1) in PARSE_BOXES:
        arr[r0 : r1 + 1, c0 : c1 + 1] = label
    return arr


def _sketch(path: Path, row: int) -> None:
    arr = np.zeros((H, W), dtype=np.uint8)  # black background
    arr[row, STROKE_COLS[0] : STROKE_COLS[1] + 1] = 255  # bright stroke
    for (r, c), v in FAINT_PIXELS.items():
        arr[r, c] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "L").save(path)


def _openpose(path: Path, scale: int) -> None:
    kp: list[float] = []
    for j in range(25):
        x, y = body25_xy(j)
        if j == MISSING_BODY25:
            kp += [0.0, 0.0, 0.0]
        else:
            kp += [float(x * scale), float(y * scale), 0.9]
    person = {
        "person_id": [-1],
        "pose_keypoints_2d": kp,
        "face_keypoints_2d": [0.0] * 210,
        "hand_left_keypoints_2d": [0.0] * 63,
        "hand_right_keypoints_2d": [0.0] * 63,
        "pose_keypoints_3d": [],
        "face_keypoints_3d": [],
        "hand_left_keypoints_3d": [],
        "hand_right_keypoints_3d": [],
    }
    data = {"version": 1.3, "people": [person]}
    path.write_text(json.dumps(data))


def write_vitonhd(root: Path) -> Path:
    """Write the fixture under `root` and return `root`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "train_pairs.txt").write_text("".join(f"{p} {c}\n" for p, c in TRAIN_PAIRS))
    (root / "test_pairs.txt").write_text("".join(f"{p} {c}\n" for p, c in TEST_PAIRS))
    (root / "captions.json").write_text(json.dumps(CAPTIONS))
    folders = ("image", "cloth", "cloth-mask", "image-parse-v3", "image-parse-agnostic-v3.2", "agnostic-v3.2",
               "agnostic-mask", "openpose_img", "openpose_json", "image-densepose", "im_sketch",
               "im_sketch_unpaired")
    for split, pairs in (("train", TRAIN_PAIRS), ("test", TEST_PAIRS)):
        d = root / split
        for f in folders:
            (d / f).mkdir(parents=True, exist_ok=True)
        persons = [Path(p).stem for p, _ in pairs]
        clothes = {Path(p).stem for p, _ in pairs}
        if split == "test":  # unpaired clothes of column 2 (train is paired only)
            clothes |= {Path(c).stem for _, c in pairs}
        for stem in persons:
            n = int(stem[:5])
            big = stem == BIG_PERSON
            _rgb(n, *(BIG_H, BIG_W) if big else (H, W)).save(d / "image" / f"{stem}.jpg", quality=95)
            parse = Image.fromarray(parse_array(), "P")
            parse.putpalette([v for i in range(256) for v in (i * 13 % 256, i * 29 % 256, i * 53 % 256)])
            parse.save(d / "image-parse-v3" / f"{stem}.png")
            agn = np.asarray(_rgb(n)).copy()
            agn[_box(AGNOSTIC_MASK_BOX) > 0] = 128
            Image.fromarray(agn, "RGB").save(d / "agnostic-v3.2" / f"{stem}.jpg", quality=95)
            Image.fromarray(_box(AGNOSTIC_MASK_BOX), "L").save(d / "agnostic-mask" / f"{stem}_mask.png")
            _openpose(d / "openpose_json" / f"{stem}_keypoints.json", scale=16 if big else 1)
            _sketch(d / "im_sketch" / f"{stem}.png", sketch_row(stem, None))
        if split == "test":
            for p, c in pairs:
                ps, cs = Path(p).stem, Path(c).stem
                _sketch(d / "im_sketch_unpaired" / f"{ps}_{cs}.png", sketch_row(ps, cs))
        for stem in sorted(clothes):
            _rgb(100 + int(stem[:5])).save(d / "cloth" / f"{stem}.jpg", quality=95)
            Image.fromarray(_box(CLOTH_MASK_BOX), "L").save(d / "cloth-mask" / f"{stem}.jpg", quality=90)
    return root
