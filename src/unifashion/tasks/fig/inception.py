"""The FID Inception-v3 (TF "2015-12-05" graph) as a local, download-free feature extractor.

FID and KID as the field reports them (and the paper's Table 3) use the pool features (2048) of the
Inception-v3 graph released with TensorFlow on 2015-12-05, converted to PyTorch as
``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid, clean-fid's ``legacy_pytorch`` mode) and
``weights-inception-2015-12-05-6726825d.pth`` (torch-fidelity, which torchmetrics wraps). Both are plain
state dicts with the same key names (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_mean``,
..., ``fc.weight`` with 1008 classes). This module builds that network and loads such a file from a local
path, so that `FidKid` computes the real FID/KID without torch-fidelity (which needs torchvision) and
without a download.

The network is Inception-v3 with the FID graph's three differences from torchvision's: average pools that
ignore padding (``count_include_pad=False``) in the A, C and first E blocks, and a max pool instead of
an average pool in the branch pool of the last E block (Mixed_7c); BatchNorm eps 1e-3; no auxiliary head.
Input handling follows torch-fidelity / torchmetrics: float images in [0, 1] become ``(x * 255)`` cast to
uint8 (torchmetrics' ``normalize=True`` cast), are resized to 299 x 299 (bilinear, no antialiasing, as
torch-fidelity's TF1-compatible resize up to interpolation details), and scaled by ``(x - 128) / 128``.
TorchScript files (clean-fid's / StyleGAN's ``inception-2015-12-05.pt``) are a different format and are
refused with a clear error.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INCEPTION_SIZE = 299
FID_FEATURES = 2048
NUM_CLASSES = 1008  # the TF graph's 1001 classes padded to 1008
_IGNORED_KEYS = ("num_batches_tracked",)  # absent from the converted TF weights; unused in eval


class _Conv(nn.Module):
    """Conv (no bias) + BatchNorm (eps 1e-3) + ReLU; keys `conv.*`, `bn.*`."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_no_pad(x: Tensor) -> Tensor:
    """3x3 stride-1 average pool that divides by the number of real (not padded) pixels, as TF."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):  # Mixed_5b/5c/5d: 35 x 35
    def __init__(self, cin: int, pool: int) -> None:
        super().__init__()
        self.branch1x1 = _Conv(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = _Conv(cin, 48, 1), _Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, padding=1)
        self.branch_pool = _Conv(cin, pool, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg_no_pad(x))], 1)


class _BlockB(nn.Module):  # Mixed_6a: 35 -> 17
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = _Conv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class _BlockC(nn.Module):  # Mixed_6b..6e: 17 x 17, factorised 7x7
    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = _Conv(cin, 192, 1)
        self.branch7x7_1 = _Conv(cin, c7, 1)
        self.branch7x7_2 = _Conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _Conv(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _Conv(cin, c7, 1)
        self.branch7x7dbl_2 = _Conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _Conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _Conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _Conv(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_no_pad(x))], 1)


class _BlockD(nn.Module):  # Mixed_7a: 17 -> 8
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = _Conv(cin, 192, 1), _Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _Conv(cin, 192, 1)
        self.branch7x7x3_2 = _Conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _Conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _Conv(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b, F.max_pool2d(x, 3, stride=2)], 1)


class _BlockE(nn.Module):  # Mixed_7b (average branch pool) and Mixed_7c (max branch pool): 8 x 8
    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _Conv(cin, 320, 1)
        self.branch3x3_1 = _Conv(cin, 384, 1)
        self.branch3x3_2a = _Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _Conv(cin, 448, 1)
        self.branch3x3dbl_2 = _Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_no_pad(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                          self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d), self.branch_pool(pooled)], 1)


class FidInceptionV3(nn.Module):
    """The FID Inception-v3 (module docstring): images -> 2048 pool features.

    Input: uint8 (B, 3, H, W) in [0, 255] or float (B, 3, H, W) in [0, 1]. Output: float32 (B, 2048).
    The `num_features` attribute tells torchmetrics the feature width.
    """

    num_features = FID_FEATURES

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = _Conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = _Conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = _Conv(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = _BlockA(192, 32), _BlockA(256, 64), _BlockA(288, 64)
        self.Mixed_6a = _BlockB(288)
        self.Mixed_6b, self.Mixed_6c = _BlockC(768, 128), _BlockC(768, 160)
        self.Mixed_6d, self.Mixed_6e = _BlockC(768, 160), _BlockC(768, 192)
        self.Mixed_7a = _BlockD(768)
        self.Mixed_7b, self.Mixed_7c = _BlockE(1280, max_pool=False), _BlockE(2048, max_pool=True)
        self.fc = nn.Linear(FID_FEATURES, NUM_CLASSES)  # in the weights file; unused for FID
        self.eval()

    def train(self, mode: bool = True) -> FidInceptionV3:
        return super().train(False)  # BatchNorm statistics are the TF graph's: never train mode

    def forward(self, imgs: Tensor) -> Tensor:
        if imgs.dim() != 4 or imgs.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got {tuple(imgs.shape)}")
        if imgs.dtype != torch.uint8:
            imgs = (imgs.float() * 255).byte()  # torchmetrics' normalize=True cast
        x = imgs.float()
        x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        x = (x - 128) / 128  # (B, 3, 299, 299)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)  # (B, 192, 35, 35)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, 2048)


def load_fid_inception(path: str | Path) -> FidInceptionV3:
    """Build `FidInceptionV3` and load a local FID-Inception state dict (module docstring).

    Accepts a plain state dict, or one under "state_dict"; a "module." prefix is stripped. The converted
    TF weights lack BatchNorm's `num_batches_tracked` (ignored).

    Raises:
        FileNotFoundError: if `path` is not a file.
        ValueError: for a TorchScript file, or a state dict whose keys / shapes are not the FID Inception's.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"Inception weights file {p} not found (expected pt_inception-2015-12-05-6726825d.pth "
                                "from pytorch-fid, or torch-fidelity's weights-inception-2015-12-05-6726825d.pth)")
    if zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as z:
            if any(n.endswith("constants.pkl") for n in z.namelist()):
                raise ValueError(f"{p} is a TorchScript file (clean-fid / StyleGAN inception-2015-12-05.pt); "
                                 "give the state-dict file pt_inception-2015-12-05-6726825d.pth instead")
    state = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{p} does not hold a state dict of tensors (expected the FID Inception-v3 weights)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = FidInceptionV3()
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state and not k.endswith(_IGNORED_KEYS))
    unexpected = sorted(k for k in state if k not in own)
    wrong = sorted(k for k in state if k in own and state[k].shape != own[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(f"{p} is not an FID Inception-v3 state dict: missing {missing[:5]} ({len(missing)}), "
                         f"unexpected {unexpected[:5]} ({len(unexpected)}), wrong shapes {wrong[:5]}")
    model.load_state_dict({**own, **state})
    return model.eval()
