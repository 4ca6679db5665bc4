"""ImageTransform against hand-computed target-pad / crop results."""

import numpy as np
import pytest
import torch
from PIL import Image

from unifashion.data.transforms import CLIP_MEAN, CLIP_STD, ImageTransform, denormalize, target_pad

MEAN = torch.tensor(CLIP_MEAN).view(3, 1, 1)
STD = torch.tensor(CLIP_STD).view(3, 1, 1)


def test_wide_image_is_padded_to_target_ratio_then_center_cropped():
    # 10x4 white image, ratio 2.5 >= 1.25: scaled_max_wh = 10 / 1.25 = 8, vp = int((8 - 4) / 2) = 2
    # -> 10x8 with 2 black rows above and below; short side already 8 (no resize); crop 8x8 from
    # left = round((10 - 8) / 2) = 1.
    img = Image.new("RGB", (10, 4), (255, 255, 255))
    padded = target_pad(img, 1.25)
    assert padded.size == (10, 8)
    x = ImageTransform(size=8, target_pad_ratio=1.25)(img)
    assert x.shape == (3, 8, 8)
    expected = torch.zeros(3, 8, 8)
    expected[:, 2:6, :] = 1.0
    expected = (expected - MEAN) / STD
    torch.testing.assert_close(x, expected)


def test_crop_offset_uses_the_columns_from_left_one():
    # A 10x4 image whose columns are 0, 25, ..., 225: after pad (no resize) the crop keeps columns 1..8.
    cols = np.arange(10, dtype=np.uint8) * 25
    arr = np.repeat(np.repeat(cols[None, :, None], 4, axis=0), 3, axis=2)  # (4, 10, 3)
    x = ImageTransform(size=8)(Image.fromarray(arr, "RGB"))
    row = denormalize(x)[0, 4]  # an unpadded row
    torch.testing.assert_close(row, torch.tensor(cols[1:9], dtype=torch.float32) / 255, atol=1e-5, rtol=0)


def test_near_square_image_is_not_padded_and_resized_bicubic():
    # ratio 9/8 < 1.25: no pad; short side 8 -> 4, long side int(4 * 9 / 8) = 4.
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 9, 3), dtype=np.uint8), "RGB")
    assert target_pad(img, 1.25) is img
    ref = np.asarray(img.resize((4, 4), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    ref = (torch.from_numpy(ref).permute(2, 0, 1) - MEAN) / STD
    torch.testing.assert_close(ImageTransform(size=4)(img), ref)


def test_tall_image_resize_truncates_long_side_like_torchvision():
    # 8x20 (w x h): ratio 2.5 -> scaled 16, hp = int((16 - 8) / 2) = 4 -> 16x20; short 16 -> 8,
    # long int(8 * 20 / 16) = 10 -> 8x10; crop top = round((10 - 8) / 2) = 1.
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (20, 8, 3), dtype=np.uint8), "RGB")
    padded = Image.new("RGB", (16, 20))
    padded.paste(img, (4, 0))
    ref = padded.resize((8, 10), Image.Resampling.BICUBIC).crop((0, 1, 8, 9))
    ref_t = (torch.from_numpy(np.asarray(ref, dtype=np.float32) / 255).permute(2, 0, 1) - MEAN) / STD
    torch.testing.assert_close(ImageTransform(size=8)(img), ref_t)


def test_denormalize_inverts_and_clamps():
    x = torch.rand(2, 3, 5, 5)
    torch.testing.assert_close(denormalize((x - MEAN) / STD), x, atol=1e-6, rtol=0)
    assert denormalize(torch.full((3, 2, 2), 100.0)).max() == 1.0


def test_augment_flips_only_horizontally():
    img = Image.fromarray(np.random.default_rng(2).integers(0, 256, (6, 6, 3), dtype=np.uint8), "RGB")
    plain = ImageTransform(size=6)(img)
    torch.manual_seed(0)
    outs = [ImageTransform(size=6, augment=True)(img) for _ in range(16)]
    flipped = [o for o in outs if not torch.equal(o, plain)]
    assert 0 < len(flipped) < 16
    for o in flipped:
        torch.testing.assert_close(o, plain.flip(-1))


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="target_pad_ratio"):
        ImageTransform(target_pad_ratio=0.5)
    with pytest.raises(ValueError, match="size"):
        ImageTransform(size=0)
