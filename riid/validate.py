"""Argument checks shared by every public entry point: one-line ValueErrors naming the allowed range."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Limits:
    """The largest request the library accepts; the app passes a tighter copy (dataclasses.replace)."""
    side: int = 4096  # image pixels per side, in or out
    latent_side: int = 128  # latent tokens per side
    images: int = 256  # images per request
    steps: int = 1000
    cfg: float = 50.0
    eta: float = 5.0
    cfg_from: float = 10.0  # |log-SNR| bound of the guidance start; the schedule spans about ±4.6
    seed: int = 2**63 - 1


LIMITS = Limits()


def check_int(name: str, value, low: int, high: int) -> int:
    """An integer in [low, high]; bools, floats with a fraction and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    value = int(value)
    if not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value}")
    return value


def check_float(name: str, value, low: float, high: float) -> float:
    """A finite real number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name} must be a finite number in [{low}, {high}], got {value}")
    return value


def check_size(name: str, size, high: int) -> tuple[int, int]:
    """A (height, width) pair of integers in [1, high]."""
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size, size)
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f"{name} must be a (height, width) pair of integers in [1, {high}], got {size!r}")
    return check_int(f"{name} height", size[0], 1, high), check_int(f"{name} width", size[1], 1, high)


def check_fraction(name: str, value) -> float:
    """A fraction of keys in (0, 1]."""
    value = check_float(name, value, 0.0, 1.0)
    if value == 0:
        raise ValueError(f"{name} must be in (0, 1], got 0")
    return value


def check_tensor(name: str, x, dtype: torch.dtype) -> torch.Tensor:
    """A finite floating-point tensor, converted to ``dtype``; integer, bool and complex tensors are refused."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor (images in [-1, 1]), got {x.dtype}")
    x = x.to(dtype)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return x
