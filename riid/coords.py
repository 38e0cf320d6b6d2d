"""Dual coordinates of a pixel grid and their Fourier features.

A pixel samples a continuous function on a square domain at the centre of its cell, so grids of
any size cover the same domain and interleave exactly. Two systems are used side by side:

- relative: the longer side spans [-0.5, 0.5], the shorter ±0.5·short/long (an inscribed-square
  frame, so composition never stretches with aspect);
- absolute: both sides span [-0.5, 0.5] (the model knows where the borders are)."""
import math

import torch
import torch.nn.functional as F

FREQ_EXPONENTS = tuple(range(-3, 8))  # π·2^k for k = -3 … 7, up to 128π
COORD_CHANNELS = 4 * 2 * len(FREQ_EXPONENTS)  # (rel y, rel x, abs y, abs x) × (sin, cos) × 11 = 88


def cell_centres(n: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Centres of n equal cells tiling [-0.5, 0.5]: shape [n]."""
    return (torch.arange(n, device=device, dtype=dtype) + 0.5) / n - 0.5


def dual_coords(height: int, width: int, batch: int = 1, jitter: bool = False,
                generator: torch.Generator | None = None, device=None,
                dtype=torch.float32) -> torch.Tensor:
    """Coordinates of every pixel of a height×width grid, row-major: [batch, height*width, 4] as
    (relative y, relative x, absolute y, absolute x). ``jitter`` (training only) moves each pixel by
    a Gaussian of std half a pixel pitch, the same in both systems so that they stay consistent."""
    ys, xs = cell_centres(height, device, dtype), cell_centres(width, device, dtype)
    ay, ax = torch.meshgrid(ys, xs, indexing="ij")
    n = height * width
    absolute = torch.stack([ay, ax], dim=-1).reshape(1, n, 2).expand(batch, -1, -1)
    if jitter:
        pitch = torch.tensor([1.0 / height, 1.0 / width], device=device, dtype=dtype)
        noise = torch.randn(batch, n, 2, generator=generator, device=device, dtype=dtype)
        absolute = absolute + noise * pitch / 2
    longest = max(height, width)
    to_relative = torch.tensor([height / longest, width / longest], device=device, dtype=dtype)
    return torch.cat([absolute * to_relative, absolute], dim=-1)


def fourier_features(coords: torch.Tensor) -> torch.Tensor:
    """sin/cos of each coordinate at π·2^k, normalised over channels: [..., C] → [..., C·2·11]."""
    freqs = math.pi * 2.0 ** torch.tensor(FREQ_EXPONENTS, device=coords.device, dtype=coords.dtype)
    angles = (coords.unsqueeze(-1) * freqs).flatten(-2)  # [..., C*11]
    features = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return F.layer_norm(features, features.shape[-1:])


def grid_features(height: int, width: int, batch: int = 1, jitter: bool = False,
                  generator: torch.Generator | None = None, device=None,
                  dtype=torch.float32) -> torch.Tensor:
    """Fourier features of a grid's dual coordinates: [batch, height*width, 88]."""
    return fourier_features(dual_coords(height, width, batch, jitter, generator, device, dtype))
