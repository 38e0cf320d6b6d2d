"""Tensors in [-1, 1]: resizing, and to and from 8-bit grayscale PNGs and grids."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic with antialiasing, clamped to [-1, 1]: how training and evaluation change a size."""
    if images.shape[-2:] == (height, width):
        return images
    return F.interpolate(images, size=(height, width), mode="bicubic", antialias=True,
                         align_corners=False).clamp(-1, 1)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, 1, H, W] or [H, W] in [-1, 1] → uint8 array of the same layout without the channel."""
    x = images.detach().float().cpu()
    if x.ndim == 4:
        x = x[:, 0]
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def grid(images: torch.Tensor, nrow: int, pad: int = 2) -> np.ndarray:
    """Tile [N, 1, H, W] into one uint8 image, ``nrow`` images per row, with black ``pad``-pixel
    margins; a single image comes back as it is (torchvision's make_grid)."""
    from torchvision.utils import make_grid  # here: importing torchvision costs seconds at start-up

    tiles = torch.from_numpy(to_uint8(images))[:, None]  # [N, 1, H, W] uint8: make_grid keeps it
    return make_grid(tiles, nrow=nrow, padding=pad, pad_value=0)[0].numpy()


def save_png(array: np.ndarray, path) -> Path:
    """A uint8 [H, W] array as an 8-bit grayscale PNG (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(path)
    return path


def save_grid(images: torch.Tensor, path, nrow: int = 10) -> Path:
    """[N, 1, H, W] in [-1, 1] as one grayscale grid PNG (see :func:`grid`)."""
    return save_png(grid(images, nrow), path)
