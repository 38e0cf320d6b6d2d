"""The pipeline's rules: one latent for any output, unstretched decoding, batches that do not change images."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from riid import cost
from riid.autoencoder import READ_SIDES, fitted_size, read_size
from riid.images import resize
from riid.pipeline import (DEFAULTS, LATENT_SHORT_SIDE, SAMPLING_FILE, Settings, default_latent_size,
                           load_pipeline)
from riid.validate import LIMITS


@pytest.mark.parametrize("size, expected", [
    ((16, 16), (12, 12)), ((32, 32), (12, 12)), ((1024, 1024), (12, 12)),  # one digit density at any resolution
    ((24, 40), (12, 20)), ((43, 32), (16, 12)), ((32, 48), (12, 18)),  # the output's aspect
    ((96, 32), (20, 12)), ((32, 96), (12, 20)), ((32, 57), (12, 20)),  # up to 5:3, trained
])
def test_latent_keeps_the_short_side_and_the_aspect(size, expected):
    assert default_latent_size(*size) == expected


def test_latent_aspect_stops_at_5_to_3_and_the_cap_keeps_it():
    assert default_latent_size(8, 4096) == (12, 20)  # the latent's aspect stops at 5:3
    tight = dataclasses.replace(LIMITS, latent_side=10)
    assert default_latent_size(32, 96, tight) == (6, 10)  # 12×20 would pass the cap: shrink both


def test_bad_output_size_is_refused_by_name():
    with pytest.raises(ValueError, match="output size height"):
        default_latent_size(0, 32)
    with pytest.raises(ValueError, match=r"\[1, 4096\]"):
        default_latent_size(32, 5000)


def test_settings_are_checked_and_frozen(tiny_pipeline):
    s = tiny_pipeline.settings(96, 32, steps=3, seed=7)
    assert (s.latent_height, s.latent_width, s.steps, s.cfg) == (20, 12, 3, DEFAULTS.cfg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.steps = 4
    with pytest.raises(ValueError, match="unknown setting"):
        tiny_pipeline.settings(32, 32, stpes=3)
    with pytest.raises(ValueError, match="steps must be an integer in \\[1, 100\\]"):
        tiny_pipeline.settings(32, 32, steps=200, limits=dataclasses.replace(LIMITS, steps=100))
    with pytest.raises(ValueError, match="sampler"):
        tiny_pipeline.settings(32, 32, sampler="euler")
    assert isinstance(DEFAULTS, Settings) and DEFAULTS.latent_height == LATENT_SHORT_SIDE


def test_a_checkpoint_carries_its_own_sampling_defaults(tiny_pipeline, tmp_path):
    tiny_pipeline.defaults = tiny_pipeline.settings(cfg=3.0, cfg_from=-1.5)
    tiny_pipeline.save(tmp_path / "own")
    assert json.loads((tmp_path / "own" / SAMPLING_FILE).read_text()) == {"cfg": 3.0, "cfg_from": -1.5}
    pipe = load_pipeline(tmp_path / "own")
    assert (pipe.defaults.cfg, pipe.defaults.cfg_from, pipe.defaults.steps) == (3.0, -1.5, DEFAULTS.steps)
    s = pipe.settings(16, 16, steps=2)
    assert (s.cfg, s.cfg_from, s.steps) == (3.0, -1.5, 2)  # what a request leaves out
    assert pipe.settings(16, 16, cfg=1.0).cfg == 1.0  # what it names wins
    assert torch.equal(pipe.generate([4], s), pipe.generate([4], height=16, width=16, steps=2))
    pipe.defaults = DEFAULTS
    pipe.save(tmp_path / "own")  # back to the library's defaults: no stale file left behind
    assert not (tmp_path / "own" / SAMPLING_FILE).exists()


@pytest.mark.parametrize("text, message", [
    ('{"cfg": 99}', r"sampling.json: cfg must be a finite number in \[0"),
    ('{"height": 64}', "JSON object of sampling settings"), ("[2.0]", "JSON object"),
    ("{cfg: 2", "sampling.json: Expecting")])
def test_a_bad_sampling_file_is_refused_by_name(tiny_pipeline_dir, tmp_path, text, message):
    folder = shutil.copytree(tiny_pipeline_dir, tmp_path / "bad")
    (folder / SAMPLING_FILE).write_text(text)
    with pytest.raises(ValueError, match=message):
        load_pipeline(folder)


def test_generate_takes_settings_or_keywords_not_both(tiny_pipeline):
    s = tiny_pipeline.settings(16, 16, steps=2)
    assert torch.equal(tiny_pipeline.generate([1, 2], s), tiny_pipeline.generate([1, 2], height=16, width=16, steps=2))
    with pytest.raises(ValueError, match="not both"):
        tiny_pipeline.generate([1], s, steps=3)


def test_images_do_not_depend_on_batching(tiny_pipeline):
    s = tiny_pipeline.settings(24, 24, steps=3, seed=11, sampler="ddim", eta=1.0)  # fresh noise every step
    whole = tiny_pipeline.generate(list(range(6)), s)
    one_per_batch = cost.peak_bytes(tiny_pipeline, 1, 24, 24, s.latent_height, s.latent_width) / cost.GIB
    assert tiny_pipeline.batch_sizes(6, s, budget_gb=one_per_batch * 1.01) == [1] * 6
    steps = []
    split = tiny_pipeline.generate(list(range(6)), s, budget_gb=one_per_batch * 1.01,
                                   callback=lambda i, x, x0: steps.append(i))
    assert torch.allclose(whole, split, atol=1e-5)
    assert steps == list(range(6 * 3))  # the callback counts across batches
    assert not torch.allclose(whole[0], whole[1])  # and the images differ from one another
    # a run split into requests by first_index gives the images of one request
    parts = [tiny_pipeline.generate(list(range(k, min(k + 4, 6))), s, first_index=k) for k in (0, 4)]
    assert torch.allclose(whole, torch.cat(parts), atol=1e-5)
    with pytest.raises(ValueError, match="first_index"):
        tiny_pipeline.generate([0], s, first_index=-1)


def test_a_request_that_cannot_fit_one_image_is_refused(tiny_pipeline):
    s = tiny_pipeline.settings(512, 512, steps=1)
    with pytest.raises(ValueError, match="memory budget"):
        tiny_pipeline.batch_sizes(1, s, budget_gb=1e-4)


def test_time_estimate_grows_with_the_request_and_is_refused_past_the_limit(tiny_pipeline):
    small, large = tiny_pipeline.settings(32, 32, steps=10), tiny_pipeline.settings(32, 32, steps=100)
    assert cost.seconds(tiny_pipeline, 4, large) > cost.seconds(tiny_pipeline, 4, small) > 0
    assert cost.seconds(tiny_pipeline, 8, small) > cost.seconds(tiny_pipeline, 1, small)
    with pytest.raises(ValueError, match="limit of 1 s"):
        cost.check_time(tiny_pipeline, 10_000, large, limit_s=1.0)


@pytest.mark.parametrize("latent, output, expected", [
    ((12, 12), (32, 32), (32, 32)),
    ((12, 12), (24, 40), (24, 24)),  # a square latent on a wide canvas: a square digit
    ((12, 12), (40, 24), (24, 24)),
    ((12, 21), (32, 57), (32, 57)),  # a rounded latent (21.4 tokens) fills its output
    ((36, 12), (32, 32), (32, 11)),
])
def test_fitted_size(latent, output, expected):
    assert fitted_size(latent, output) == expected


def test_cross_aspect_decoding_pads_instead_of_stretching(tiny_pipeline):
    ae = tiny_pipeline.autoencoder
    latent = torch.randn(2, ae.config.latent_channels, 12, 12)
    square = ae.decode(latent, (24, 24))
    wide, tall = ae.decode(latent, (24, 40)), ae.decode(latent, (40, 24))
    assert torch.allclose(wide, F.pad(square, (8, 8, 0, 0), value=-1.0), atol=1e-5)
    assert torch.allclose(tall, F.pad(square, (0, 0, 8, 8), value=-1.0), atol=1e-5)


@pytest.mark.parametrize("size, expected", [
    ((16, 16), (32, 32)), ((24, 40), (32, 53)),  # small outputs are area-averaged from the learnt resolution
    ((32, 96), (32, 96)), ((200, 100), (200, 100)),  # read as they are
    ((1024, 512), (256, 128)), ((16, 200), (20, 256)),  # never more than 256 px on the longer side
])
def test_read_size(size, expected):
    assert read_size(*size) == expected


def test_pipeline_decode_reads_a_bounded_grid_and_resizes(tiny_pipeline):
    latent = torch.randn(1, tiny_pipeline.autoencoder.config.latent_channels, 12, 12)
    side = 2 * READ_SIDES[1]
    big = tiny_pipeline.decode(latent, side, side)
    exact = tiny_pipeline.autoencoder.decode(latent, (side, side)).clamp(-1, 1)
    assert big.shape == exact.shape == (1, 1, side, side)
    assert (big - exact).abs().mean() < 0.02  # the same smooth function, read on a coarser grid
    small = tiny_pipeline.decode(latent, 16, 16)
    native = tiny_pipeline.autoencoder.decode(latent, (32, 32)).clamp(-1, 1)
    assert torch.allclose(small, resize(native, 16, 16), atol=1e-6)  # area-averaged like a real digit
    with pytest.raises(ValueError, match="latents"):
        tiny_pipeline.decode(torch.zeros(12, 12), 32, 32)
