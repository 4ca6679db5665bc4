"""ITC over 2 CPU processes (gloo) equals ITC on the concatenated batch: loss and gradients."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from unifashion.losses import distributed
from unifashion.losses.contrastive import ItcLoss

WORLD = 2
LOCAL_BATCH = 3


def _data():
    gen = torch.Generator().manual_seed(0)
    image_feats = torch.nn.functional.normalize(torch.randn(WORLD * LOCAL_BATCH, 4, 8, generator=gen), dim=-1)
    text_feat = torch.nn.functional.normalize(torch.randn(WORLD * LOCAL_BATCH, 8, generator=gen), dim=-1)
    product_ids = torch.tensor([5, 1, 5, 2, 1, 7])  # positives across the two processes
    return image_feats, text_feat, product_ids


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        image_feats, text_feat, product_ids = _data()
        rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        img = image_feats[rows].clone().requires_grad_()
        txt = text_feat[rows].clone().requires_grad_()
        temp = torch.tensor(0.07, requires_grad=True)
        result = ItcLoss(label_smoothing=0.1).compute(img, txt, temp, product_ids[rows])
        result.losses["itc"].backward()
        # token ids of different lengths are right-padded to the longest before gathering
        ids = torch.full((LOCAL_BATCH, 2 + rank), rank + 1)
        torch.save(
            {
                "loss": result.losses["itc"].detach(),
                "img_grad": img.grad,
                "txt_grad": txt.grad,
                "temp_grad": temp.grad,
                "sim_i2t": result.sim_i2t.detach(),
                "world": distributed.world_size(),
                "rank": distributed.rank(),
                "ids": distributed.gather_ids(ids, pad_value=-1),
            },
            f"{out_dir}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"
)
def test_itc_ddp_equals_single_process(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    image_feats, text_feat, product_ids = _data()
    img = image_feats.clone().requires_grad_()
    txt = text_feat.clone().requires_grad_()
    temp = torch.tensor(0.07, requires_grad=True)
    full = ItcLoss(label_smoothing=0.1).compute(img, txt, temp, product_ids)
    full.losses["itc"].backward()

    assert [p["world"] for p in parts] == [WORLD, WORLD] and [p["rank"] for p in parts] == [0, 1]
    # the mean of the per-process losses (what DDP optimises) is the loss of the whole batch
    mean_loss = torch.stack([p["loss"] for p in parts]).mean()
    assert torch.allclose(mean_loss, full.losses["itc"], atol=1e-6)
    # local rows against all gathered columns
    for r, p in enumerate(parts):
        assert torch.allclose(p["sim_i2t"], full.sim_i2t[r * LOCAL_BATCH : (r + 1) * LOCAL_BATCH], atol=1e-6)
    # the gather's backward sums over processes: local grad = WORLD x grad of the mean loss,
    # so DDP's averaging (divide by WORLD) gives exactly the single-process gradient
    img_grad = torch.cat([p["img_grad"] for p in parts]) / WORLD
    txt_grad = torch.cat([p["txt_grad"] for p in parts]) / WORLD
    assert torch.allclose(img_grad, img.grad, atol=1e-6)
    assert torch.allclose(txt_grad, txt.grad, atol=1e-6)
    temp_grad = torch.stack([p["temp_grad"] for p in parts]).mean()  # replicated parameter: DDP mean
    assert torch.allclose(temp_grad, temp.grad, atol=1e-5)
    expected_ids = torch.tensor([[1, 1, -1]] * LOCAL_BATCH + [[2, 2, 2]] * LOCAL_BATCH)
    assert torch.equal(parts[0]["ids"], expected_ids) and torch.equal(parts[1]["ids"], expected_ids)
