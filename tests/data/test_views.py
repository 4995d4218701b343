"""Batched views: seeded, scaled to the image size, BYOL's hue, triplet's multi-resolution."""

from __future__ import annotations

import torch

from pipeline.data.views import (
    color_jitter,
    gaussian_blur,
    make_views,
    random_resized_crop,
    solarize,
)
from pipeline.params.methods import ViewsConfig


def images(n=16, channels=3, size=16):
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(0))


def test_views_keep_shape_range_and_differ():
    x = images()
    cfg = ViewsConfig(blur=(1.0, 0.1), solarize=(0.0, 0.2))
    v1, v2 = make_views(x, cfg, torch.Generator().manual_seed(0))
    assert v1.shape == v2.shape == x.shape
    assert v1.min() >= 0 and v1.max() <= 1
    assert not torch.allclose(v1, v2)


def test_same_seed_same_views():
    x = (images() * 255).byte()
    a = make_views(x, ViewsConfig(), torch.Generator().manual_seed(3))
    b = make_views(x, ViewsConfig(), torch.Generator().manual_seed(3))
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_full_crop_without_rotation_is_identity():
    x = images()
    out = random_resized_crop(x, (1.0, 1.0), (1.0, 1.0), 0.0, 0.0, torch.Generator())
    assert torch.allclose(out, x, atol=1e-5)


def test_flip_mirrors_horizontally():
    x = images()
    out = random_resized_crop(x, (1.0, 1.0), (1.0, 1.0), 0.0, 1.0, torch.Generator())
    assert torch.allclose(out, x.flip(-1), atol=1e-5)


def test_blur_preserves_constant_images_and_smooths_noise():
    constant = torch.full((4, 1, 32, 32), 0.3)
    assert torch.allclose(gaussian_blur(constant, 1.0, torch.Generator()), constant, atol=1e-6)
    noise = images(4, 1, 32)
    assert gaussian_blur(noise, 1.0, torch.Generator()).std() < noise.std()


def test_solarize_inverts_bright_pixels():
    x = torch.tensor([0.2, 0.7]).view(1, 1, 1, 2)
    expected = torch.tensor([0.2, 0.3]).view(1, 1, 1, 2)
    assert torch.allclose(solarize(x, 1.0, torch.Generator()), expected)

def _images(n: int = 16, side: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=generator)


def test_same_seed_same_views_in_unit_range():
    cfg = ViewsConfig(flip=0.5, hue=0.1, blur=(1.0, 0.1), solarize=(0.0, 0.2))
    first = make_views(_images(), cfg, torch.Generator().manual_seed(3))
    again = make_views(_images(), cfg, torch.Generator().manual_seed(3))
    other = make_views(_images(), cfg, torch.Generator().manual_seed(4))
    assert all(a.equal(b) for a, b in zip(first, again, strict=True))
    assert not first[0].equal(other[0])
    assert all(v.min() >= 0 and v.max() <= 1 for v in first)


def test_multi_resolution_resizes_each_view_within_its_range():
    cfg = ViewsConfig(multi_resolution=((0.5, 0.5), (0.75, 1.0)))
    generator = torch.Generator().manual_seed(0)
    sides = set()
    for _ in range(20):
        view1, view2 = make_views(_images(4), cfg, generator)
        assert view1.shape == (4, 3, 16, 16)
        assert 24 <= view2.shape[-1] == view2.shape[-2] <= 32
        sides.add(view2.shape[-1])
    assert len(sides) > 1  # a new size per batch


def test_hue_rotation_keeps_grays_and_luma():
    generator = torch.Generator().manual_seed(0)
    gray = torch.rand(8, 1, 16, 16, generator=generator).expand(-1, 3, -1, -1) * 0.5 + 0.25
    shifted = color_jitter(gray, 1.0, 0.0, 0.0, 0.0, generator, hue=0.5)
    torch.testing.assert_close(shifted, gray, atol=1e-5, rtol=0)
    colour = torch.rand(8, 3, 16, 16, generator=generator) * 0.2 + 0.4
    shifted = color_jitter(colour, 1.0, 0.0, 0.0, 0.0, generator, hue=0.5)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    torch.testing.assert_close((shifted * luma).sum(1), (colour * luma).sum(1), atol=1e-5,
                               rtol=0)
    assert (shifted - colour).abs().max() > 0.01


def test_blur_strength_scales_with_image_size():
    """sigma in [0.1, 2] is defined for 224 px; a 32 px image gets 1/7 of it."""
    def centre_after_blur(side: int) -> torch.Tensor:
        impulse = torch.zeros(64, 1, side, side)
        impulse[:, :, side // 2, side // 2] = 1
        blurred = gaussian_blur(impulse, 1.0, torch.Generator().manual_seed(0))
        return blurred[:, 0, side // 2, side // 2]

    assert centre_after_blur(32).min() > 0.9
    assert centre_after_blur(224).mean() < 0.6
