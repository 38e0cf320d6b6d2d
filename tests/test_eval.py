"""riid eval: report structure, metrics that really look at the images, and the metric functions."""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from riid.autoencoder import RIAE
from riid.checkpoint import load_model, save_model
from riid.classifier import DEFAULT_CLASSIFIER, Classifier, ClassifierConfig, classify, prepare
from riid.cli import main as cli_main
from riid.data import load_mnist
from riid.diffuser import R2ID, LabelConditioner
from riid.evaluate import (PSNR_CAP, evaluate, frechet_distance, parse_sizes, psnr, real_at, reference_canvas,
                           resize, ssim)
from riid.pipeline import Pipeline
from riid.presets import AUTOENCODER_PRESETS, DIFFUSER_PRESETS

FAST = dict(steps=2, cfg=2.0, sampler="ddim", eta=0.0, seed=0)


def tiny_pipeline() -> Pipeline:
    """An untrained tiny pipeline: eval only needs its interface, and it builds in milliseconds."""
    torch.manual_seed(0)
    autoencoder = RIAE(AUTOENCODER_PRESETS["tiny"])
    diffuser_config, cond_config = DIFFUSER_PRESETS["tiny"]
    diffuser_config = dataclasses.replace(diffuser_config, latent_channels=autoencoder.config.latent_channels,
                                          cond_dim=cond_config.dim)
    return Pipeline(autoencoder, R2ID(diffuser_config), LabelConditioner(cond_config))


def tiny_classifier() -> Classifier:
    torch.manual_seed(0)
    return Classifier(ClassifierConfig(channels=(4, 8, 8), feature_dim=16)).eval()


@pytest.fixture(scope="module")
def shipped_classifier():
    if not (DEFAULT_CLASSIFIER / "model.safetensors").is_file():
        pytest.skip("the shipped classifier (checkpoints/classifier) is missing")
    return load_model(DEFAULT_CLASSIFIER, "classifier")


@pytest.fixture(scope="module")
def fixture_digits():
    return load_mnist("test", root="fixture")


class NoisePipeline(Pipeline):
    """Samples as usual but decodes to uniform noise: a model that has learned nothing."""

    generator = torch.Generator().manual_seed(0)

    def decode(self, latents, height, width):
        return torch.rand(len(latents), 1, height, width, generator=self.generator) * 2 - 1


class OraclePipeline(Pipeline):
    """'Generates' real test digits of the requested classes: the scoring path must rate them highly."""

    def __init__(self, base: Pipeline, images, labels):
        super().__init__(base.autoencoder, base.diffuser, base.conditioner)
        self.pool = {d: images[labels == d] for d in range(10)}
        self.used = {d: 0 for d in range(10)}

    def sample_latents(self, digits, s, callback=None):
        self.requested = [int(d) for d in digits]
        return torch.zeros(len(digits), self.autoencoder.config.latent_channels, s.latent_height, s.latent_width)

    def decode(self, latents, height, width):
        picked = []
        for d in self.requested[:len(latents)]:
            picked.append(self.pool[d][self.used[d] % len(self.pool[d])])
            self.used[d] += 1
        self.requested = self.requested[len(latents):]
        return real_at(torch.stack(picked), height, width)


def test_cli_fast_writes_report_and_grids(tmp_path):
    pipe_dir, cls_dir, out = tmp_path / "pipe", tmp_path / "classifier", tmp_path / "eval"
    tiny_pipeline().save(pipe_dir)
    save_model(tiny_classifier(), cls_dir)
    code = cli_main(["eval", "--fast", "--n", "2", "--sizes", "16,24x40", "--steps", "2", "--checkpoint", str(pipe_dir),
                     "--classifier", str(cls_dir), "--data-root", "fixture", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["n_per_class"] == 2
    assert [(r["height"], r["width"]) for r in report["sizes"]] == [(16, 16), (24, 40)]
    for r in report["sizes"]:
        for key in ("accuracy", "real_accuracy", "fd", "fd_floor", "seconds_per_image"):
            assert math.isfinite(r[key]) and r[key] >= 0
        assert 0 <= r["accuracy"] <= 1 and len(r["per_class_accuracy"]) == 10
        with Image.open(out / r["grid"]) as grid:  # 10 rows (digits) of 2 samples, 2 px gaps
            assert grid.size == (2 * (r["width"] + 2) + 2, 10 * (r["height"] + 2) + 2)
    assert r["latent"] == [12, 20]  # 6×10 scaled to 12 on the shorter side
    ae = report["autoencoder"]
    assert set(ae["reconstruction"]) == {"16", "32", "64"}
    for r in ae["reconstruction"].values():
        assert 0 <= r["accuracy"] <= 1 and math.isfinite(r["fd"]) and math.isfinite(r["fd_floor"])
    assert set(ae["resample_16_to_32"]) == {"latent", "autoencoder", "bicubic"}
    assert ae["resample_16_to_32"]["latent"] == [8, 8]
    md = (out / "report.md").read_text()
    assert "| 16×16 | 12×12 |" in md and "| 24×40 | 12×20 |" in md and "| bicubic |" in md
    assert "| FD of reconstructions |" in md
    assert "fixture" in md  # the data source is stated


def test_cli_eval_errors(tmp_path, capsys):
    assert cli_main(["eval", "--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "checkpoint folder not found" in capsys.readouterr().err
    with pytest.raises(ValueError, match="24y40"):
        parse_sizes("16,24y40")
    with pytest.raises(ValueError, match=r"\[1, 4096\]"):
        parse_sizes("0")
    assert parse_sizes("16, 24x40") == [(16, 16), (24, 40)]


def test_noise_scores_chance_and_real_digits_score_high(tmp_path, shipped_classifier, fixture_digits):
    images, labels = fixture_digits
    reference, ref_labels = images[:500], labels[:500]  # the real sets: disjoint from what the oracle shows
    sizes = [(32, 32), (24, 40)]
    base = tiny_pipeline()
    noise = evaluate(NoisePipeline(base.autoencoder, base.diffuser, base.conditioner), shipped_classifier, sizes, 8,
                     out_dir=tmp_path / "noise", real_images=reference, real_labels=ref_labels, progress=False, **FAST)
    oracle = evaluate(OraclePipeline(base, images[500:], labels[500:]), shipped_classifier, sizes, 8,
                      out_dir=tmp_path / "oracle", real_images=reference, real_labels=ref_labels, progress=False,
                      **FAST)
    for bad, good in zip(noise["sizes"], oracle["sizes"]):
        assert bad["accuracy"] <= 0.3, bad
        assert good["accuracy"] >= 0.95 and good["real_accuracy"] >= 0.95, good
        assert bad["fd"] > 5 * bad["fd_floor"] and bad["fd"] > 5 * good["fd"], (bad, good)


def centred(images, height, width):
    """32 px digits centre-cropped/padded to height×width, independently of riid.data.canvas."""
    top, left = (height - 32) // 2, (width - 32) // 2
    out = torch.full((len(images), 1, max(height, 32), max(width, 32)), -1.0)
    out[..., max(top, 0):max(top, 0) + 32, max(left, 0):max(left, 0) + 32] = images
    return out[..., max(-top, 0):max(-top, 0) + height, max(-left, 0):max(-left, 0) + width]


def test_classifier_reads_real_digits_at_every_size(shipped_classifier, fixture_digits):
    images, labels = fixture_digits
    for size in [(16, 16), (32, 32), (128, 128), (24, 40), (40, 24), (32, 48), (48, 32)]:
        x = resize(centred(images, *reference_canvas(*size)), *size)
        pred, feats = classify(shipped_classifier, x)
        assert feats.shape == (len(images), shipped_classifier.config.feature_dim)
        assert (pred == labels).float().mean() >= 0.95, size
    # digits stretched to fill a wide canvas stay stretched through prepare: far from real ones in FD
    feats = [classify(shipped_classifier, x)[1] for x in (real_at(images[:500], 24, 40),
                                                           real_at(images[500:], 24, 40), resize(images[:500], 24, 40))]
    # (3×: a 1.25× horizontal stretch measured 3.8× the real-vs-real distance with centred canvases)
    assert frechet_distance(feats[2], feats[1]) > 3 * frechet_distance(feats[0], feats[1])


def test_reference_digits_sit_in_the_middle(fixture_digits):
    images = fixture_digits[0][:200]
    for size in [(24, 40), (40, 24), (32, 48), (48, 32), (64, 64)]:
        ink = (real_at(images, *size) + 1).mean(0)[0]  # [H, W] mean brightness above the background
        ys, xs = torch.arange(size[0]) + 0.5, torch.arange(size[1]) + 0.5
        cy, cx = (ink.sum(1) * ys).sum() / ink.sum(), (ink.sum(0) * xs).sum() / ink.sum()
        assert abs(cy - size[0] / 2) < 1.5 and abs(cx - size[1] / 2) < 1.5, (size, float(cy), float(cx))


def test_prepare_pads_to_square_never_stretches():
    wide = torch.ones(2, 1, 24, 40)  # a white block: padding keeps it 24/40 of the height
    x = prepare(wide)
    assert x.shape == (2, 1, 32, 32)
    assert torch.allclose(x[:, :, 0], torch.full((2, 1, 32), -1.0))  # the top rows are background
    assert torch.allclose(x[:, :, 16], torch.ones(2, 1, 32))
    rows = (x[0, 0, :, 16] > 0).sum().item()
    assert abs(rows - 32 * 24 / 40) <= 1.5
    assert torch.equal(prepare(torch.zeros(1, 1, 32, 32)), torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="batch, 1, height, width"):
        prepare(torch.zeros(3, 32, 32))


def test_classifier_round_trip(tmp_path):
    model = tiny_classifier()
    save_model(model, tmp_path / "c")
    again = load_model(tmp_path / "c", "classifier")
    x = prepare(torch.rand(3, 1, 20, 28) * 2 - 1)
    assert torch.equal(model(x), again(x))
    assert again.config == model.config
    with pytest.raises(ValueError, match="expected a riae"):
        load_model(tmp_path / "c", "riae")


def test_reference_canvas_follows_training_canvases():
    assert reference_canvas(24, 40) == (24, 40)
    assert reference_canvas(96, 160) == (24, 40)
    assert reference_canvas(64, 64) == (32, 32)
    assert reference_canvas(16, 32) == (23, 45)  # an untrained aspect keeps the area of 32×32
    digits = torch.rand(2, 1, 32, 32) * 2 - 1
    assert real_at(digits, 24, 40).shape == (2, 1, 24, 40)
    assert torch.equal(real_at(digits, 32, 32), digits)


def test_frechet_distance_against_closed_form():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 8, generator=g, dtype=torch.float64)
    assert frechet_distance(x, x) < 1e-6
    shift = torch.arange(8, dtype=torch.float64) / 4
    assert frechet_distance(x, x + shift) == pytest.approx(float((shift ** 2).sum()), rel=1e-6)
    # same mean, covariance scaled by 4: FD = tr(S) + tr(4S) - 2 tr(2S) = tr(S)
    s = np.cov(x.numpy(), rowvar=False)
    assert frechet_distance(x, 2 * (x - x.mean(0)) + x.mean(0)) == pytest.approx(np.trace(s), rel=1e-4)
    few = torch.randn(5, 64, generator=g)  # fewer samples than dimensions: still finite
    assert math.isfinite(frechet_distance(few, few + 1)) and frechet_distance(few, few) < 1e-3
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(x[:1], x)


def test_psnr_and_ssim():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 1, 32, 32, generator=g) * 2 - 1
    assert torch.all(psnr(a, a) == PSNR_CAP)
    assert torch.allclose(ssim(a, a), torch.ones(3), atol=1e-5)
    b = (a + 0.1).clamp(max=10)  # MSE 0.01 on a range of 2: 10·log10(4 / 0.01)
    assert torch.allclose(psnr(a, b), torch.full((3,), 10 * math.log10(400)), atol=1e-3)
    noise = torch.rand(3, 1, 32, 32, generator=g) * 2 - 1
    assert torch.all(ssim(a, noise) < 0.2) and torch.all(ssim(a, noise) > -0.2)
    smooth = torch.nn.functional.avg_pool2d(a, 3, stride=1, padding=1)
    assert torch.all(ssim(a, smooth) > ssim(a, noise)) and torch.all(ssim(a, smooth) < 1)
    assert torch.allclose(ssim(a[..., :6, :6], a[..., :6, :6]), torch.ones(3), atol=1e-5)  # small images
