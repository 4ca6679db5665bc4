"""How much of each garment attribute can be read from a frozen encoder's query outputs?

Trains small classifiers (linear and a one-hidden-layer MLP) on the Q-Former query outputs Z
(flattened, standardised) of the synthetic FashionGen training images, predicting each attribute
of the sidecar (primary colour, pattern, sleeve length, sub-category), and reports validation
accuracy next to the same MLP on 16x16 average-pooled pixels. It bounds what the captioner (which
reads the same frozen Z) can name, and tells an encoder limit from a captioner limit.

    python bench/probe_queries.py --ckpt runs/demo/retrieval.ckpt --data data/synthetic
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from unifashion.api import UniFashion
from unifashion.data.fashiongen import FashionGenDataModule

ATTRIBUTES = ("primary_colour", "pattern", "sleeve_length", "subcategory")


def sidecar_attributes(root: Path) -> dict[tuple[str, int], dict]:
    """(split, HDF5 row) -> the garment record of the sidecar."""
    out = {}
    with open(root / "attributes.jsonl", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            out[(rec["split"], int(rec["image"].split("#")[1]))] = rec["garment"]
    return out


@torch.no_grad()
def features(loader, encode, limit: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(query features (N, Q*H), pooled pixels (N, 3*16*16), HDF5 rows) of up to `limit` images."""
    zs, px, rows = [], [], []
    for batch in loader:
        zs.append(encode(batch["image"]).flatten(1))  # (B, Q*H)
        px.append(F.adaptive_avg_pool2d(batch["image"], 16).flatten(1))  # (B, 768)
        rows += [int(r) for r in batch["row"]]
        if len(rows) >= limit:
            break
    return torch.cat(zs), torch.cat(px), rows


def probe(x_train, y_train, x_val, y_val, n_classes: int, mlp: bool, steps: int = 400, seed: int = 0) -> float:
    """Validation accuracy (%) of a full-batch AdamW classifier on standardised features."""
    torch.manual_seed(seed)
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_val = (x_train - mu) / sd, (x_val - mu) / sd
    d = x_train.shape[1]
    net = (torch.nn.Sequential(torch.nn.Linear(d, 512), torch.nn.GELU(), torch.nn.Dropout(0.3), torch.nn.Linear(512, n_classes))
           if mlp else torch.nn.Linear(d, n_classes))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
    for _ in range(steps):
        net.train()
        loss = F.cross_entropy(net(x_train), y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        return 100.0 * (net(x_val).argmax(1) == y_val).float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default="runs/demo/retrieval.ckpt")
    ap.add_argument("--data", default="data/synthetic", help="synthetic root (with fashiongen/)")
    ap.add_argument("--train-images", type=int, default=6000)
    ap.add_argument("--val-images", type=int, default=1200)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    root = Path(args.data) / "fashiongen"
    model = UniFashion.from_checkpoint(args.ckpt, "cpu").module
    dm = FashionGenDataModule(root=str(root), batch_size=128, image_size=model.encoder.config.image_size)
    dm.setup("fit")
    val = dm.val_dataloader()
    val = val[0] if isinstance(val, (list, tuple)) else val

    def encode(images):
        return model.encoder.encode_image(images).query_output  # (B, Q, H)

    z_tr, p_tr, rows_tr = features(dm.train_dataloader(), encode, args.train_images)
    z_va, p_va, rows_va = features(val, encode, args.val_images)
    truth = sidecar_attributes(root)
    print(f"{'attribute':16s} {'classes':>7s} {'majority':>8s} {'Z linear':>8s} {'Z MLP':>6s} {'pixel MLP':>9s}")
    for name in ATTRIBUTES:
        a_tr = [str(truth[("train", r)][name]) for r in rows_tr]
        a_va = [str(truth[("validation", r)][name]) for r in rows_va]
        labels = sorted(set(a_tr) | set(a_va))
        y_tr = torch.tensor([labels.index(a) for a in a_tr])
        y_va = torch.tensor([labels.index(a) for a in a_va])
        majority = 100.0 * max(a_va.count(v) for v in labels) / len(a_va)
        lin = probe(z_tr, y_tr, z_va, y_va, len(labels), mlp=False)
        mlp = probe(z_tr, y_tr, z_va, y_va, len(labels), mlp=True)
        pix = probe(p_tr, y_tr, p_va, y_va, len(labels), mlp=True)
        print(f"{name:16s} {len(labels):7d} {majority:8.1f} {lin:8.1f} {mlp:6.1f} {pix:9.1f}")


if __name__ == "__main__":
    main()
