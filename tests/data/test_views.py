import torch

from pipeline.data.views import gaussian_blur, make_views, random_resized_crop, solarize
from pipeline.params import ViewsConfig


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
