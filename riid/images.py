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
    """Tile [N, 1, H, W] into one uint8 image with ``nrow`` images per row."""
    pixels = to_uint8(images)
    n, h, w = pixels.shape
    rows = (n + nrow - 1) // nrow
    out = np.zeros((rows * (h + pad) + pad, nrow * (w + pad) + pad), dtype=np.uint8)
    for i, img in enumerate(pixels):
        r, c = divmod(i, nrow)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img
    return out


def save_png(array: np.ndarray, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode="L").save(path)
    return path


def save_grid(images: torch.Tensor, path, nrow: int = 10) -> Path:
    return save_png(grid(images, nrow), path)
