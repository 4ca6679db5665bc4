"""Try-on metrics: FID/KID with a local FID-Inception weights file (tasks/fig/inception.py) and paired SSIM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unifashion.tasks.fig import inception
from unifashion.tasks.fig.inception import FidInceptionV3, _avg_no_pad, load_fid_inception
from unifashion.tasks.fig.protocol import INCEPTION_WEIGHTS_ENV, FidKid, PairedSsim, build_feature_extractor


def _naive_fid(f1: np.ndarray, f2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1^1/2 S2 S1^1/2)^1/2), symmetric eigendecompositions."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


@pytest.fixture(scope="module")
def stand_in_weights(tmp_path_factory):
    """A stand-in for pt_inception-2015-12-05-6726825d.pth: the same network and keys, seeded random weights
    (BatchNorm statistics included), saved like the converted TF file (no num_batches_tracked)."""
    torch.manual_seed(0)
    net = FidInceptionV3()
    state = {}
    for k, v in net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        if k.endswith("running_var"):
            v = torch.rand_like(v) + 0.5
        elif k.endswith("running_mean"):
            v = torch.randn_like(v) * 0.1
        state[k] = v.clone()
    path = tmp_path_factory.mktemp("inception") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    return path, state


def test_stand_in_has_the_fid_inception_interface(stand_in_weights):
    _, state = stand_in_weights
    # the key names and shapes of the published FID Inception weights
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["Mixed_7c.branch3x3dbl_3b.bn.running_var"].shape == (384,)
    assert state["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)
    assert state["fc.weight"].shape == (1008, 2048)
    assert "AuxLogits.fc.weight" not in state


def _images():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(6, 3, 48, 36, generator=g)
    return real, (torch.rand(6, 3, 48, 36, generator=g) * 0.5).clamp(0, 1)


def test_loaded_weights_feed_fid_and_kid(stand_in_weights, monkeypatch):
    path, state = stand_in_weights
    monkeypatch.setattr(inception, "INCEPTION_SIZE", 75)  # the smallest Inception-v3 input: a CPU-cheap test
    net = load_fid_inception(path)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    real, _ = _images()
    with torch.no_grad():
        f_real = net(real).double()
        assert torch.equal(net(real[:2]), net((real[:2] * 255).byte()))  # float input = the uint8 cast
    assert f_real.shape == (6, 2048)
    m = FidKid("vitonhd", "unpaired", inception_weights=path, kid_subsets=2, kid_subset_size=6)
    assert not m.is_proxy
    m.update(real, real=True)
    # both metrics accumulate the loaded network's features (the FID sums, the KID feature list)
    torch.testing.assert_close(m.fid.real_features_sum, f_real.sum(0))
    torch.testing.assert_close(torch.cat(m.kid.real_features).double(), f_real)
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(path))  # the environment variable: the same path
    feat, is_proxy = build_feature_extractor("auto")
    assert isinstance(feat, FidInceptionV3) and not is_proxy


@pytest.mark.slow
def test_loaded_weights_give_real_fid_keys_and_value(stand_in_weights, monkeypatch):
    path, _ = stand_in_weights
    monkeypatch.setattr(inception, "INCEPTION_SIZE", 75)
    net = load_fid_inception(path)
    real, fake = _images()
    with torch.no_grad():
        f_real, f_fake = net(real).double().numpy(), net(fake).double().numpy()
    m = FidKid("vitonhd", "unpaired", inception_weights=path, kid_subsets=2, kid_subset_size=6)
    m.update(real, real=True)
    m.update(fake, real=False)
    out = m.compute()
    assert set(out) == {"fig/vitonhd/unpaired/FID", "fig/vitonhd/unpaired/KID"}  # no "-proxy"
    assert out["fig/vitonhd/unpaired/FID"] == pytest.approx(_naive_fid(f_real, f_fake), rel=2e-3)


def test_without_weights_the_proxy_stays_labelled(monkeypatch):
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    m = FidKid("vitonhd", "unpaired", feature="auto")  # torch-fidelity is not installed here
    assert m.is_proxy
    m.update(torch.rand(3, 3, 16, 12), real=True)
    m.update(torch.rand(3, 3, 16, 12), real=False)
    assert set(m.compute()) == {"fig/vitonhd/unpaired/FID-proxy", "fig/vitonhd/unpaired/KID-proxy"}


def test_bad_weight_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        build_feature_extractor("auto", tmp_path / "nowhere.pth")  # a given path is never silently a proxy
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not an FID Inception"):
        load_fid_inception(tmp_path / "other.pth")
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    scripted.save(str(tmp_path / "inception-2015-12-05.pt"))
    with pytest.raises(ValueError, match="TorchScript"):
        load_fid_inception(tmp_path / "inception-2015-12-05.pt")


def test_fid_graph_average_pool_ignores_padding():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    corner = (0 + 1 + 4 + 5) / 4  # 4 real pixels around the corner, not 9 (TF's count_include_pad=False)
    assert _avg_no_pad(x)[0, 0, 0, 0].item() == pytest.approx(corner)
    assert F.avg_pool2d(x, 3, 1, 1)[0, 0, 0, 0].item() == pytest.approx(10 / 9)  # torchvision's default differs


def test_paired_ssim_against_hand_values():
    m = PairedSsim("vitonhd")
    a = torch.rand(2, 3, 32, 24, generator=torch.Generator().manual_seed(0))
    m.update(a, a)
    assert m.compute()["fig/vitonhd/paired/SSIM"] == pytest.approx(1.0, abs=1e-5)
    # constant images: SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 * 1)^2 (no variance, no covariance)
    x, y = 0.3, 0.7
    m2 = PairedSsim("vitonhd")
    m2.update(torch.full((1, 3, 32, 24), x), torch.full((1, 3, 32, 24), y))
    c1 = 0.01**2
    assert m2.compute()["fig/vitonhd/paired/SSIM"] == pytest.approx((2 * x * y + c1) / (x * x + y * y + c1), rel=1e-3)
    with pytest.raises(ValueError, match="same"):
        m2.update(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 6))


@pytest.mark.slow
def test_full_size_forward_gives_2048_features(stand_in_weights):
    net = load_fid_inception(stand_in_weights[0])
    with torch.no_grad():
        assert net(torch.rand(1, 3, 512, 384)).shape == (1, 2048)
