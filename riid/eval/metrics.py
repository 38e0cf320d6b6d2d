"""What the report measures on a set of images, and the real digits it measures them against.

Each metric is compared with real test digits at the same size (``real_at``), never read alone:
the Fréchet distance beside the real-versus-real floor, variety and sharpness as ratios to real.
tests/test_metrics.py shows that each moves on the defect it is meant to catch."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..images import resize

WHITE = 0.9  # near-white, on a [0, 1] scale


def real_at(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """32 px digits [N, 1, 32, 32] as they look at height×width: resized, unstretched, to fill the
    shorter side, centred on a background (−1) canvas."""
    side = min(height, width)
    x = resize(images, side, side)
    top, left = (height - side) // 2, (width - side) // 2
    return F.pad(x, (left, width - side - left, top, height - side - top), value=-1.0)


def balanced_split(labels: torch.Tensor, per_class: int,
                   seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint index sets with ``per_class`` digits of each class, sorted by class."""
    generator = torch.Generator().manual_seed(seed)
    first, second = [], []
    for d in range(10):
        idx = torch.nonzero(labels == d).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        first.append(idx[:per_class])
        second.append(idx[per_class:2 * per_class])
    return torch.cat(first), torch.cat(second)


def frechet_distance(x, y, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, D] (at least 2 rows each).

    tr √(Σx Σy) is the sum of the square roots of the eigenvalues of Σx Σy, which are real and
    non-negative for two covariance matrices (``eps`` keeps them positive definite when N < D)."""
    x, y = (np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64)
            for v in (x, y))
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
        raise ValueError(f"frechet_distance needs two [N >= 2, D] feature sets, got {x.shape} and "
                         f"{y.shape}")
    eye = eps * np.eye(x.shape[1])
    cov_x, cov_y = np.cov(x, rowvar=False) + eye, np.cov(y, rowvar=False) + eye
    root = np.sqrt(np.linalg.eigvals(cov_x @ cov_y).real.clip(min=0)).sum()
    fd = ((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(cov_x) + np.trace(cov_y) - 2 * root
    return float(max(fd, 0.0))


def variety(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean pairwise feature distance between digits of one class, averaged over the classes."""
    spreads = [torch.pdist(features[labels == d].double()).mean()
               for d in labels.unique().tolist() if int((labels == d).sum()) > 1]
    if not spreads:
        raise ValueError("variety needs at least two images of one class")
    return float(torch.stack(spreads).mean())


def sharpness(images: torch.Tensor) -> dict:
    """Share of near-white pixels, and mean gradient magnitude (per pixel, [0, 1] scale)."""
    x = (images.float() + 1) / 2  # [N, 1, H, W] in [0, 1]
    dy, dx = x.diff(dim=-2)[..., :, :-1], x.diff(dim=-1)[..., :-1, :]
    return {"white": float((x > WHITE).float().mean()),
            "gradient": float((dy ** 2 + dx ** 2).sqrt().mean()) if min(x.shape[-2:]) > 1 else 0.0}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR in dB of [N, C, H, W] images in [-1, 1] (range 2), each capped at 100 dB."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1)
    return float((10 * torch.log10(4 / mse.clamp(min=1e-30))).clamp(max=100).mean())
