"""Tests of the generation metrics against naive references (no download, tiny CLIP)."""

from __future__ import annotations

import importlib.util
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from unifashion.tasks.fig.protocol import (
    FidKid,
    ProxyImageFeatures,
    build_feature_extractor,
    clip_score_metric,
    colour_accuracy,
    dominant_colour,
    evaluate_folder,
    load_local_clip,
    to_uint8,
    write_generated,
)

PALETTE = {"red": (220, 30, 30), "blue": (30, 60, 200), "green": (40, 160, 60), "black": (15, 15, 15),
           "white": (250, 250, 250)}



def _naive_fid(f1: np.ndarray, f2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), via symmetric eigendecompositions."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


def _naive_kid(f1: np.ndarray, f2: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3."""
    d = f1.shape[1]

    def k(a, b):
        return (a @ b.T / d + 1) ** 3

    m = len(f1)
    kxx, kyy, kxy = k(f1, f1), k(f2, f2), k(f1, f2)
    off = lambda a: (a.sum() - np.trace(a)) / (m * (m - 1))  # noqa: E731
    return float(off(kxx) + off(kyy) - 2 * kxy.mean())


def _images(n: int, seed: int, shift: float = 0.0, size: tuple[int, int] = (24, 20)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, *size, generator=g) * 0.7 + shift).clamp(0, 1)


def test_proxy_features_deterministic_and_dtype_agnostic():
    net_a, net_b = ProxyImageFeatures(seed=3), ProxyImageFeatures(seed=3)
    x = _images(3, 0)
    fa = net_a(x)
    assert fa.shape == (3, net_a.num_features)
    assert torch.equal(fa, net_b(x))
    torch.testing.assert_close(net_a(to_uint8(x)), net_a(to_uint8(x).float() / 255))
    assert not torch.equal(ProxyImageFeatures(seed=4)(x), fa)  # the seed matters
    hist = fa[:, : 3 * 8].view(3, 3, 8)
    torch.testing.assert_close(hist.sum(-1), torch.ones(3, 3))  # per-channel histograms sum to 1


def test_auto_features_fall_back_to_labelled_proxy_without_torch_fidelity():
    if importlib.util.find_spec("torch_fidelity") is not None:
        pytest.skip("torch-fidelity installed: the Inception path is taken")
    feat, is_proxy = build_feature_extractor("auto")
    assert is_proxy and isinstance(feat, ProxyImageFeatures)
    with pytest.raises(RuntimeError, match="torch-fidelity"):
        build_feature_extractor("inception")
    assert FidKid("vitonhd", "unpaired").is_proxy


def test_fid_kid_proxy_against_naive_reference():
    real, fake = _images(12, 1), _images(10, 2, shift=0.2)
    m = FidKid("synthetic", "unpaired", feature="proxy", kid_subsets=1, kid_subset_size=50)
    m.update(real[:7], real=True)
    m.update(real[7:], real=True)
    m.update(fake, real=False)
    out = m.compute()
    assert set(out) == {"fig/synthetic/unpaired/FID-proxy", "fig/synthetic/unpaired/KID-proxy"}
    net = ProxyImageFeatures()
    f_real, f_fake = net(real).double().numpy(), net(fake).double().numpy()
    assert out["fig/synthetic/unpaired/FID-proxy"] == pytest.approx(_naive_fid(f_real, f_fake), rel=1e-3, abs=1e-4)
    # KID with one subset holding every sample (subset size capped at 10): independent of the permutation
    m10 = _naive_kid(f_real[:10], f_fake)  # real subset: 10 of 12 -> compare with a 10-real metric
    m2 = FidKid("synthetic", "unpaired", feature="proxy", kid_subsets=1, kid_subset_size=50)
    m2.update(real[:10], real=True)
    m2.update(fake, real=False)
    assert m2.compute()["fig/synthetic/unpaired/KID-proxy"] == pytest.approx(m10, rel=1e-4, abs=1e-6)
    same = FidKid("synthetic", "unpaired", feature="proxy", kid_subsets=1)
    same.update(real, real=True)
    same.update(real, real=False)
    assert abs(same.compute()["fig/synthetic/unpaired/FID-proxy"]) < 1e-3
    with pytest.raises(ValueError, match="float"):
        same.update(to_uint8(real), real=True)


# ---------------------------------------------------------------------------------------------- CLIP-S
@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    d = tmp_path_factory.mktemp("clip")
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in letters:
        vocab[c] = len(vocab)
    for c in letters:
        vocab[c + "</w>"] = len(vocab)
    merges = [("r", "e"), ("re", "d</w>")]
    vocab["re"], vocab["red</w>"] = len(vocab), len(vocab) + 1
    tok = CLIPTokenizer(vocab=vocab, merges=merges)
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=8,
    )
    CLIPModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(d)
    return d


def _hand_clip_cos(d, images_u8: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """cos(image, text) from the tiny model's towers, with CLIP normalisation written out by hand."""
    from transformers import CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(d).eval()
    tok = CLIPTokenizer.from_pretrained(d)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    pixels = (images_u8.float() / 255 - mean) / std
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        img = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        txt = model.text_projection(model.text_model(input_ids=enc["input_ids"],
                                                     attention_mask=enc["attention_mask"]).pooler_output)
    return torch.nn.functional.cosine_similarity(img, txt, dim=-1)


def test_clip_score_matches_hand_computed_cosine(tiny_clip_dir):
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(4, 3, 32, 32, generator=g) * 255).round().to(torch.uint8)
    texts = ["a red dress", "blue shirt", "green coat with red buttons", "black skirt"]
    cos = _hand_clip_cos(tiny_clip_dir, images, texts)
    assert (cos > 0).any()  # at least one pair where max(., 0) does not clip
    adapter, processor = load_local_clip(tiny_clip_dir)
    assert processor.tokenizer("red").input_ids != processor.tokenizer("ab").input_ids  # vocab was loaded
    for i in range(4):  # one pair: 100 * max(cos, 0)
        metric = clip_score_metric(tiny_clip_dir)
        metric.update(list(images[i: i + 1]), texts[i: i + 1])
        assert float(metric.compute()) == pytest.approx(100 * max(float(cos[i]), 0.0), abs=1e-3)
    metric = clip_score_metric(tiny_clip_dir)  # a batch: max(100 * mean cos, 0), torchmetrics' definition
    metric.update(list(images[:2]), texts[:2])
    metric.update(list(images[2:]), texts[2:])
    assert float(metric.compute()) == pytest.approx(max(100 * float(cos.mean()), 0.0), abs=1e-3)


def test_clip_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_local_clip(tmp_path / "no_clip")


# ---------------------------------------------------------------------------------------------- colour
def _garment(colour, size=(40, 48), background=(255, 255, 255), outline=(10, 10, 10), patch=None) -> Image.Image:
    im = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(im)
    draw.rectangle([8, 6, 31, 41], fill=colour, outline=outline, width=1)  # body
    draw.polygon([(8, 6), (2, 20), (8, 20)], fill=colour)  # a sleeve
    if patch is not None:
        draw.rectangle([14, 14, 19, 19], fill=patch)  # a small print
    return im


def test_dominant_colour_on_drawn_garments():
    red = _garment((200, 40, 35), patch=(30, 60, 200))
    assert dominant_colour(red, PALETTE) == "red"
    assert dominant_colour(torch.from_numpy(np.array(red)).permute(2, 0, 1).float() / 255, PALETTE) == "red"
    # a white garment on a dark background: background is estimated from the border, not assumed white
    assert dominant_colour(_garment((245, 245, 240), background=(20, 20, 20), outline=(245, 245, 240)),
                           PALETTE) == "white"
    # an explicit mask selects the print only
    mask = np.zeros((48, 40), dtype=bool)
    mask[14:20, 14:20] = True
    assert dominant_colour(red, PALETTE, mask=mask) == "blue"
    with pytest.raises(ValueError, match="foreground"):
        dominant_colour(Image.new("RGB", (8, 8), (255, 255, 255)), PALETTE)


def test_colour_accuracy_percent():
    imgs = [_garment((200, 40, 35)), _garment((35, 150, 70)), _garment((40, 70, 190))]
    assert colour_accuracy(imgs, ["red", "green", "red"], PALETTE) == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="purple"):
        colour_accuracy(imgs, ["red", "green", "purple"], PALETTE)


# ---------------------------------------------------------------------------------------------- folders
def test_write_generated_and_evaluate_folder(tmp_path, tiny_clip_dir, caplog):
    gen = _images(4, 5, size=(32, 32))  # the tiny CLIP's input size: no resize before CLIP
    names = ["00001_00.jpg", "00002_00", "00003_00_00349_00", "00004_00"]
    paths = write_generated(gen, names, tmp_path / "out", "unpaired")
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "out/unpaired/00001_00.jpg", "out/unpaired/00002_00.jpg", "out/unpaired/00003_00_00349_00.jpg",
        "out/unpaired/00004_00.jpg"]
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    for i, im in enumerate(to_uint8(_images(5, 6, shift=0.2, size=(40, 36)))):
        Image.fromarray(im.permute(1, 2, 0).numpy()).save(real_dir / f"{i:05d}_00.png")
    with caplog.at_level(logging.INFO, logger="unifashion.tasks.fig.protocol"):
        out = evaluate_folder(tmp_path / "out", real_dir, "vitonhd", "unpaired", feature="proxy",
                              metrics_file=tmp_path / "metrics.json")
    assert "CLIP-S skipped" in caplog.text
    assert set(out) == {"fig/vitonhd/unpaired/FID-proxy", "fig/vitonhd/unpaired/KID-proxy"}
    # reference: the written JPEGs and the PNGs read back by hand, scored with the naive FID
    net = ProxyImageFeatures()
    def load(files, size=(32, 32)):  # real images are resized (bicubic) to the generated size
        ims = [Image.open(f).convert("RGB").resize(size, Image.BICUBIC) for f in sorted(files)]
        return torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in ims]).float() / 255

    f_gen = net(load(paths)).double().numpy()
    f_real = net(load(real_dir.iterdir())).double().numpy()
    assert out["fig/vitonhd/unpaired/FID-proxy"] == pytest.approx(_naive_fid(f_real, f_gen), rel=1e-3)
    assert json.loads((tmp_path / "metrics.json").read_text()) == pytest.approx(out)
    # CLIP-S through the folder path, one caption per generated stem
    caps = {p.stem: "a red dress" for p in paths}
    out2 = evaluate_folder(tmp_path / "out", real_dir, "mgd", "unpaired", feature="proxy",
                           clip_path=tiny_clip_dir, captions=caps)
    cos = _hand_clip_cos(tiny_clip_dir, (load(paths) * 255).round().to(torch.uint8), ["a red dress"] * 4)
    assert out2["fig/mgd/unpaired/CLIP-S"] == pytest.approx(max(100 * float(cos.mean()), 0.0), abs=1e-3)
    with pytest.raises(KeyError, match="no caption"):
        evaluate_folder(tmp_path / "out", real_dir, "mgd", "unpaired", feature="proxy",
                        clip_path=tiny_clip_dir, captions={})
    with pytest.raises(FileNotFoundError, match="paired"):
        evaluate_folder(tmp_path / "out", real_dir, "mgd", "paired", feature="proxy")
