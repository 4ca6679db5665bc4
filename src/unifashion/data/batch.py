"""The batch contract shared by every data module, model part and loss.

Batches are plain dicts. Keys (shapes for a batch of B items, images S x S):

Pair batches (kind "pairs": FashionGen, Fashion200K, Fashion-IQ-cap image-caption pairs)
    kind          "pairs"
    dataset       str, one of DATASETS (picks the caption style)
    image         float (B, 3, S, S), CLIP-normalised (see data/transforms.py)
    text          list[str], the caption
    product_id    long (B,), product ids (views of one product share it: ITC positives)
    input_ids     long (B, L)  } only when a tokenizer was injected into the data module
    attention_mask long (B, L) }   (DataModule.set_tokenizer)

Triplet batches (kind "triplets": Fashion-IQ composed retrieval)
    kind, dataset ("fashioniq"), category list[str], reference float (B,3,S,S),
    target float (B,3,S,S), text list[str] (the modifying text), reference_id list[str],
    target_id list[str], input_ids / attention_mask as above.

Try-on batches (kind "tryon": VITON-HD / MGD, data/vitonhd.py)
    kind, dataset ("vitonhd"), image (person, float (B,3,H,W) in [-1,1]), cloth, agnostic (same),
    cloth_mask, inpaint_mask, sketch float (B,1,H,W) in {0,1}, pose_map float (B,18,H,W),
    image_clip float (B,3,S,S) CLIP-normalised (the garment or sketch for the encoder), text
    list[str], person_id / cloth_id list[str], input_ids / attention_mask as above.

Retrieval evaluation splits are described by RetrievalSplit below.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

PAIRS = "pairs"
TRIPLETS = "triplets"
TRYON = "tryon"
DATASETS = ("fashiongen", "fashion200k", "fashioniq", "vitonhd")


@dataclass
class RetrievalSplit:
    """A product-level evaluation split for cross-modal retrieval (DATASETS.md 6.1).

    images: a Dataset whose items are dicts with "image" (3, S, S), "product_id" (int) and
        "subcategory" (str); every image of the split, in file order.
    texts: one text per product (the product's description).
    text_product_ids: long (M,), the product of each text.
    text_subcategories: list of M sub-category names.
    image_product_ids: long (N,), the product of each image (same order as `images`).
    image_subcategories: list of N sub-category names.
    """

    images: Dataset
    texts: list[str]
    text_product_ids: torch.Tensor
    text_subcategories: list[str]
    image_product_ids: torch.Tensor
    image_subcategories: list[str]
