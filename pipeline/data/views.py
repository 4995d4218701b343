"""Batched view augmentations with per-sample random parameters, on the training device.

All operations work on float images in [0, 1] shaped [B, C, H, W] and draw their random
numbers from an explicit `torch.Generator`, so a seeded run makes the same views.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from pipeline.params.methods import ViewsConfig


def _uniform(n: int, low: float, high: float, generator: torch.Generator,
             device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


def _chance(n: int, p: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) < p


def _per_sample(mask: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, 1, 1, 1)


def random_resized_crop(images: torch.Tensor, scale: tuple[float, float],
                        ratio: tuple[float, float], rotation_degrees: float, flip: float,
                        generator: torch.Generator) -> torch.Tensor:
    """Crop a random area/aspect box (optionally rotated, flipped) and resize it back.

    One affine grid per sample and a single `grid_sample` for the batch.
    """
    n, device = images.shape[0], images.device
    area = _uniform(n, scale[0], scale[1], generator, device)
    log_ratio = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), generator, device)
    aspect = torch.exp(log_ratio)
    width = torch.sqrt(area * aspect).clamp(max=1.0)
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    center_x = (torch.rand(n, generator=generator, device=device) * 2 - 1) * (1 - width)
    center_y = (torch.rand(n, generator=generator, device=device) * 2 - 1) * (1 - height)
    angle = _uniform(n, -rotation_degrees, rotation_degrees, generator, device) * math.pi / 180
    mirror = torch.where(_chance(n, flip, generator, device), -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([
        torch.stack([width * cos * mirror, -height * sin, center_x], dim=1),
        torch.stack([width * sin * mirror, height * cos, center_y], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    if images.shape[1] == 1:
        return images
    # Python-scalar weights: a weight tensor would be a host-to-device copy every call
    red, green, blue = images.split(1, dim=1)
    return 0.299 * red + 0.587 * green + 0.114 * blue


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322],
                            [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


@functools.lru_cache(maxsize=8)
def _yiq_bases(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """YIQ -> RGB and RGB -> YIQ on the device, copied there once (not every batch)."""
    return _YIQ_TO_RGB.to(device, dtype), _RGB_TO_YIQ.to(device, dtype)


def _rotate_hue(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate the chroma plane of YIQ by `turns` (per sample): a hue shift that keeps luma.

    The whole change of basis is one 3x3 matrix per sample, applied in a single pass.
    """
    angle = turns * 2 * math.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(len(turns), 3, 3, device=images.device, dtype=images.dtype)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2] = cos, -sin
    rotation[:, 2, 1], rotation[:, 2, 2] = sin, cos
    to_rgb, to_yiq = _yiq_bases(images.device, images.dtype)
    matrix = to_rgb @ rotation @ to_yiq
    n, c, h, w = images.shape
    return torch.bmm(matrix, images.reshape(n, c, h * w)).view(n, c, h, w).clamp(0, 1)


def color_jitter(images: torch.Tensor, p: float, brightness: float, contrast: float,
                 saturation: float, generator: torch.Generator, hue: float = 0.0
                 ) -> torch.Tensor:
    """Brightness, contrast, saturation (and hue) by per-sample factors, with probability p."""
    n, device = images.shape[0], images.device
    apply = _per_sample(_chance(n, p, generator, device))
    out = images
    factor = _per_sample(_uniform(n, 1 - brightness, 1 + brightness, generator, device))
    out = (out * factor).clamp(0, 1)
    factor = _per_sample(_uniform(n, 1 - contrast, 1 + contrast, generator, device))
    mean = _grayscale(out).mean(dim=(1, 2, 3), keepdim=True)
    out = ((out - mean) * factor + mean).clamp(0, 1)
    if images.shape[1] == 3:
        factor = _per_sample(_uniform(n, 1 - saturation, 1 + saturation, generator, device))
        gray = _grayscale(out)
        out = ((out - gray) * factor + gray).clamp(0, 1)
        if hue > 0:
            out = _rotate_hue(out, _uniform(n, -hue, hue, generator, device))
    return torch.where(apply, out, images)


def random_grayscale(images: torch.Tensor, p: float, generator: torch.Generator
                     ) -> torch.Tensor:
    if images.shape[1] == 1 or p == 0:
        return images
    apply = _per_sample(_chance(images.shape[0], p, generator, images.device))
    return torch.where(apply, _grayscale(images).expand_as(images), images)


def gaussian_blur(images: torch.Tensor, p: float, generator: torch.Generator,
                  sigma: tuple[float, float] = (0.1, 2.0)) -> torch.Tensor:
    """Per-sample Gaussian blur; kernel about 10% of the image side, sigma scaled to it."""
    if p == 0:
        return images
    n, channels, height, width = images.shape
    device = images.device
    size = max(3, int(0.1 * min(height, width)) // 2 * 2 + 1)
    scale = min(height, width) / 224.0  # the sigma range is defined for 224px images
    sigmas = _uniform(n, sigma[0], sigma[1], generator, device) * scale
    offsets = torch.arange(size, device=device, dtype=images.dtype) - size // 2
    kernels = torch.exp(-(offsets[None] ** 2) / (2 * sigmas[:, None] ** 2))
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)
    flat = images.reshape(1, n * channels, height, width)
    pad = size // 2
    flat = F.conv2d(F.pad(flat, (pad, pad, 0, 0), mode="reflect" if width > pad else "replicate"),
                    kernels.view(-1, 1, 1, size), groups=n * channels)
    flat = F.conv2d(F.pad(flat, (0, 0, pad, pad), mode="reflect" if height > pad else "replicate"),
                    kernels.view(-1, 1, size, 1), groups=n * channels)
    apply = _per_sample(_chance(n, p, generator, device))
    blurred = flat.view_as(images).clamp(0, 1)  # float rounding may overshoot 1 by 1e-7
    return torch.where(apply, blurred, images)


def solarize(images: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    if p == 0:
        return images
    apply = _per_sample(_chance(images.shape[0], p, generator, images.device))
    return torch.where(apply & (images >= 0.5), 1 - images, images)


def random_resolution(images: torch.Tensor, scale: tuple[float, float],
                      generator: torch.Generator) -> torch.Tensor:
    """Resize the whole batch to one random side in `scale` x its side (multi-resolution).

    One size per batch keeps the batch a single tensor; the network's global pooling makes
    the features size-independent.
    """
    side = min(images.shape[-2:])
    low, high = max(1, round(scale[0] * side)), max(1, round(scale[1] * side))
    size = int(torch.randint(low, high + 1, (1,), generator=generator,
                             device=generator.device).item())
    if size == side:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < side).clamp(0, 1)


def make_view(images: torch.Tensor, cfg: ViewsConfig, view: int, generator: torch.Generator
              ) -> torch.Tensor:
    """One augmented view (index 0 or 1, for the asymmetric blur/solarize probabilities)."""
    out = random_resized_crop(images, cfg.crop_scale, cfg.crop_ratio, cfg.rotation_degrees,
                              cfg.flip, generator)
    out = color_jitter(out, cfg.color_jitter, cfg.brightness, cfg.contrast, cfg.saturation,
                       generator, cfg.hue)
    out = random_grayscale(out, cfg.grayscale, generator)
    out = gaussian_blur(out, cfg.blur[view], generator)
    out = solarize(out, cfg.solarize[view], generator)
    if cfg.multi_resolution is not None:
        out = random_resolution(out, cfg.multi_resolution[view], generator)
    return out


def make_views(images: torch.Tensor, cfg: ViewsConfig, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views of a uint8 or [0, 1] float batch."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255)
    return make_view(images, cfg, 0, generator), make_view(images, cfg, 1, generator)
