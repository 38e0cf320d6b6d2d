"""Argument checks shared by every public entry point: one-line ValueErrors naming the range."""
from __future__ import annotations

import inspect
import math
import numbers
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Limits:
    """The largest request the library accepts; the app uses a tighter one (dataclasses.replace)."""
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
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not integral and not (isinstance(value, float) and value.is_integer()):
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
        raise ValueError(f"{name} must be a (height, width) pair of integers in [1, {high}], "
                         f"got {size!r}")
    h, w = size
    return check_int(f"{name} height", h, 1, high), check_int(f"{name} width", w, 1, high)


def check_fraction(name: str, value) -> float:
    """A fraction of keys in (0, 1]."""
    value = check_float(name, value, 0.0, 1.0)
    if value == 0:
        raise ValueError(f"{name} must be in (0, 1], got 0")
    return value


def check_tensor(name: str, x, dtype: torch.dtype) -> torch.Tensor:
    """A finite floating-point tensor, converted to ``dtype`` (integer, bool, complex: refused)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor (images in [-1, 1]), "
                         f"got {x.dtype}")
    x = x.to(dtype)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return x


def check_callback(name: str, callback, nargs: int):
    """None, or a callable that accepts ``nargs`` positional arguments; a wrong one is refused."""
    if callback is None:
        return None
    if not callable(callback):
        raise ValueError(f"{name} must be callable or None, got {type(callback).__name__}")
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return callback
    try:
        signature.bind(*range(nargs))
    except TypeError:
        raise ValueError(f"{name} must accept {nargs} positional arguments, got a callable with "
                         f"signature {signature}") from None
    return callback


def _path(name: str, path) -> Path:
    if not isinstance(path, (str, os.PathLike)) or isinstance(path, bytes):
        raise ValueError(f"{name} must be a path, got {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip() or "\0" in text:
        raise ValueError(f"{name} must be a non-empty path, got {text!r}")
    return Path(text)


def check_output_dir(name: str, path, need_bytes: int = 0) -> Path:
    """A folder that is, or can be created, writable: not a file, not under a file, with
    ``need_bytes`` free. Checks only, creates nothing (the probe file is anonymous where the OS
    allows, and always removed), so a refused request leaves nothing behind."""
    path = _path(name, path)
    try:
        if path.exists() and not path.is_dir():
            raise ValueError(f"{name} {path} is a file, not a folder")
        existing = path
        while not existing.exists():  # the deepest part of the path that is already there
            existing = existing.parent
        if not existing.is_dir():
            raise ValueError(f"{name} {path} lies under {existing}, which is a file")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ValueError(f"{name} {path} is not writable: {err.strerror or err}") from None
    if need_bytes > 0:  # room for the writes (a guide only)
        try:
            free = shutil.disk_usage(existing).free
        except OSError:  # a file system that cannot say: the writes themselves will tell
            return path
        if free < need_bytes:
            raise ValueError(f"{name} {path}: about {need_bytes / 2**20:.1f} MiB needed, "
                             f"only {free / 2**20:.1f} MiB free on its file system")
    return path


def check_output_file(name: str, path, suffixes: tuple[str, ...], need_bytes: int = 0) -> Path:
    """A path ending in one of ``suffixes``, not a folder, whose folder passes check_output_dir."""
    path = _path(name, path)
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{name} must end in {' or '.join(suffixes)}, got {str(path)!r}")
    if path.is_dir():
        raise ValueError(f"{name} {path} is a folder, not a file")
    check_output_dir(name, path.parent, need_bytes)
    return path
