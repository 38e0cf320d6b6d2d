"""Pipelines and model folders: round trips, determinism, bad input, and nothing ever unpickled."""
import dataclasses
import json
import math
import os
import time
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from riid import RIAE, Pipeline, load_model, load_pipeline, save_model
from riid.checkpoint import atomic_write
from riid.pipeline import LATENT_SHORT_SIDE, default_latent_size, guidance_start
from riid.schedule import log_snr, sampling_alpha_bars
from riid.validate import LIMITS

from conftest import tiny_models

SMALL = dict(height=12, width=20, steps=3)


# ---- pipeline behaviour -------------------------------------------------------------------

def test_generate_shape_and_range(tiny_pipeline):
    images = tiny_pipeline.generate([3, 1, 4], **SMALL)
    assert images.shape == (3, 1, 12, 20)
    assert torch.isfinite(images).all() and images.min() >= -1 and images.max() <= 1


def test_save_load_round_trip_is_bit_identical(tmp_path):
    original = Pipeline(*tiny_models(seed=5))
    original.save(tmp_path / "p")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["autoencoder", "conditioner", "diffuser"]
    for sub in ("autoencoder", "diffuser", "conditioner"):
        assert sorted(p.name for p in (tmp_path / "p" / sub).iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_pipeline(tmp_path / "p")
    for name in ("autoencoder", "diffuser", "conditioner"):
        a, b = getattr(original, name).state_dict(), getattr(loaded, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert getattr(original, name).config == getattr(loaded, name).config
    for sampler, eta in (("dpmpp", 0.0), ("ddim", 0.7)):
        kw = dict(SMALL, sampler=sampler, eta=eta, seed=11)
        assert torch.equal(original.generate([0, 7], **kw), loaded.generate([0, 7], **kw))


@pytest.mark.parametrize("sampler,eta", [("dpmpp", 0.0), ("ddim", 0.0), ("ddim", 0.5),
                                         ("ddim", 2.0)])
def test_same_seed_same_samples_different_seed_different(tiny_pipeline, sampler, eta):
    run = lambda seed: tiny_pipeline.generate([2, 5], sampler=sampler, eta=eta, seed=seed, **SMALL)  # noqa: E731
    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


def test_same_seed_same_png_bytes(tiny_pipeline, tmp_path):
    from riid.images import save_png, to_uint8

    for i in range(2):
        save_png(to_uint8(tiny_pipeline.generate([8], seed=3, **SMALL))[0], tmp_path / f"{i}.png")
    assert (tmp_path / "0.png").read_bytes() == (tmp_path / "1.png").read_bytes()


def test_latent_size_and_callback(tiny_pipeline):
    calls = []
    s = tiny_pipeline.settings(30, 10, latent_size=(2, 9), steps=4)
    assert (s.latent_height, s.latent_width) == (2, 9)
    latents = tiny_pipeline.sample_latents([1], s, callback=lambda i, x, x0: calls.append((i, x.shape, x0.shape)))
    assert latents.shape == (1, tiny_pipeline.diffuser.config.latent_channels, 2, 9)
    assert [c[0] for c in calls] == [0, 1, 2, 3] and all(c[1] == c[2] == latents.shape for c in calls)
    default = tiny_pipeline.settings(30, 10)
    assert (default.latent_height, default.latent_width) == default_latent_size(30, 10)


@pytest.mark.parametrize("size, expected", [
    ((16, 16), (12, 12)),     # 12 tokens across the shorter side at every resolution
    ((32, 32), (12, 12)),
    ((4096, 4096), (12, 12)),
    ((24, 40), (12, 20)),     # the output's aspect kept
    ((30, 10), (20, 12)),     # the latent's aspect stops at 5:3, what the diffuser trained on
    ((8, 512), (12, 20)),
])
def test_default_latent_size_has_12_tokens_across_the_shorter_side(size, expected):
    assert LATENT_SHORT_SIDE == 12
    assert default_latent_size(*size) == expected
    with pytest.raises(ValueError, match="output size"):
        default_latent_size(0, 16)


def test_guidance_and_digit_change_the_output(tiny_pipeline):
    every_step = dict(SMALL, cfg_from=-LIMITS.cfg_from)
    base = tiny_pipeline.generate([3], seed=0, cfg=3.0, **every_step)
    assert (base - tiny_pipeline.generate([3], seed=0, cfg=0.0, **every_step)).abs().max() > 1e-4
    assert (base - tiny_pipeline.generate([6], seed=0, cfg=3.0, **every_step)).abs().max() > 1e-4


def test_guidance_applies_only_from_its_log_snr(tiny_pipeline):
    """cfg_from above every step's log-SNR leaves the label alone (as CFG 1); below every step, all are guided."""
    unguided = tiny_pipeline.generate([3], seed=0, cfg=3.0, cfg_from=LIMITS.cfg_from, **SMALL)
    cfg_one = tiny_pipeline.generate([3], seed=0, cfg=1.0, cfg_from=-LIMITS.cfg_from, **SMALL)
    assert torch.allclose(unguided, cfg_one, atol=1e-5)
    guided = tiny_pipeline.generate([3], seed=0, cfg=3.0, cfg_from=-LIMITS.cfg_from, **SMALL)
    assert (guided - unguided).abs().max() > 1e-3
    partly = tiny_pipeline.generate([3], seed=0, cfg=3.0, cfg_from=-3.0, **SMALL)  # guides the last two of 3 steps
    assert (partly - guided).abs().max() > 1e-4 and (partly - unguided).abs().max() > 1e-5


def test_unguided_steps_run_the_diffuser_on_one_condition(tiny_pipeline, monkeypatch):
    seen = []
    forward = tiny_pipeline.diffuser.forward
    monkeypatch.setattr(tiny_pipeline.diffuser, "forward",
                        lambda x, alpha_bar, conds, *a, **kw: seen.append(len(conds)) or forward(x, alpha_bar, conds,
                                                                                                  *a, **kw))
    tiny_pipeline.generate([3], seed=0, steps=20, spacing="logsnr", cfg_from=0.0, height=8, width=8)
    below = int((log_snr(sampling_alpha_bars(20, "logsnr")[:-1]) < 0).sum())
    assert 5 < below < 15 and seen == [1] * below + [2] * (20 - below)
    # a 240-token latent is guided from log(240/144) later: cfg_from -0.51 starts it at log-SNR 0
    seen.clear()
    tiny_pipeline.generate([3], seed=0, steps=20, spacing="logsnr", cfg_from=-math.log(240 / 144),
                           height=8, width=8, latent_size=(12, 20))
    assert seen == [1] * below + [2] * (20 - below)


def test_guidance_start_moves_with_the_latent_token_count():
    assert guidance_start(-2.3, (LATENT_SHORT_SIDE, LATENT_SHORT_SIDE)) == -2.3
    assert guidance_start(-2.3, (12, 20)) == pytest.approx(-1.789, abs=1e-3)
    assert guidance_start(-2.3, (20, 12)) == guidance_start(-2.3, (12, 20))
    assert guidance_start(-2.3, (6, 6)) < -2.3


BAD_SETTINGS = [
    dict(height=0), dict(height=-5), dict(height=4097), dict(height=1.5), dict(height="abc"), dict(height=None),
    dict(width=0), dict(width=float("nan")), dict(width=True), dict(latent_size=(0, 3)), dict(latent_size=(129, 1)),
    dict(latent_size=(2.5, 2)), dict(latent_size=(2, 2, 2)), dict(steps=0), dict(steps=-1), dict(steps=1001),
    dict(steps=2.5), dict(cfg=float("nan")), dict(cfg=float("inf")), dict(cfg=-1.0), dict(cfg=51.0), dict(cfg="3"),
    dict(eta=-0.1), dict(eta=float("inf")), dict(eta=6.0), dict(sampler="euler"), dict(seed=-1), dict(seed=2**64),
    dict(seed=0.5), dict(cfg_from=float("nan")), dict(cfg_from=-10.5), dict(cfg_from=11.0),
]


@pytest.mark.parametrize("bad", BAD_SETTINGS, ids=lambda d: "-".join(f"{k}={v!r}" for k, v in d.items()))
def test_bad_settings_raise_value_error_naming_the_range(tiny_pipeline, bad):
    kw = dict(height=16, width=16, steps=2)
    kw.update(bad)
    with pytest.raises(ValueError) as info:
        tiny_pipeline.generate([1], **kw)
    message = str(info.value)
    assert "\n" not in message
    name = next(iter(bad)).replace("_", " ")
    assert name.split()[0] in message
    if bad.get("sampler") is None:
        assert "[" in message and "]" in message  # the allowed range


@pytest.mark.parametrize("digits", [[10], [-1], [3, 12], [], list(range(10)) * 26, ["a"], [1.5]])
def test_bad_digits_raise_value_error(tiny_pipeline, digits):
    with pytest.raises(ValueError):
        tiny_pipeline.generate(digits, **SMALL)


def test_max_batch_is_accepted(tiny_pipeline):
    assert len(tiny_pipeline.generate([0] * LIMITS.images, height=2, width=2, steps=1)) == LIMITS.images


@pytest.mark.parametrize("call, needle", [
    (lambda p: p.generate(None, **SMALL), "digits"),
    (lambda p: p.generate("3", **SMALL), "digits"),
    (lambda p: p.generate([1], height=None, width=8), "output size"),
    (lambda p: p.generate([1], p.settings(8, 8), steps=3), "not both"),
    (lambda p: p.generate([1], unknown=3), "unknown"),
    (lambda p: p.decode(torch.zeros(1, 4, 2, 2, dtype=torch.int32), 8, 8), "torch.int32"),
    (lambda p: p.decode(torch.full((1, 4, 2, 2), float("inf")), 8, 8), "NaN or infinite"),
])
def test_api_misuse_is_a_one_line_value_error(tiny_pipeline, call, needle):
    with pytest.raises(ValueError, match=needle) as info:
        call(tiny_pipeline)
    assert "\n" not in str(info.value)


def test_decode_converts_a_float64_latent(tiny_pipeline):
    latent = torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(tiny_pipeline.decode(latent.double(), 6, 6), tiny_pipeline.decode(latent, 6, 6))


@pytest.mark.parametrize("folder", [123, 1.5, b"bytes", ["a"], object()])
def test_load_pipeline_refuses_what_is_not_a_path(folder):
    with pytest.raises(ValueError, match="must be a path"):
        load_pipeline(folder)
    with pytest.raises(ValueError, match="must be a path"):
        load_model(folder)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_host_is_said_so_not_called_corrupted(tiny_pipeline_dir):
    with pytest.raises(ValueError, match="not available on this machine") as info:
        load_pipeline(tiny_pipeline_dir, device="cuda")
    assert "corrupted" not in str(info.value)


@pytest.mark.parametrize("device", ["gpu", "", 7.5, "cuda:99" if torch.cuda.is_available() else "xpu"])
def test_unknown_devices_are_refused(tiny_pipeline_dir, device):
    with pytest.raises(ValueError, match="device"):
        load_pipeline(tiny_pipeline_dir, device=device)


def test_autoencoder_and_diffuser_that_do_not_match_are_refused_at_load(pipe_copy):
    autoencoder, _, _ = tiny_models()
    wider = RIAE(dataclasses.replace(autoencoder.config, latent_channels=autoencoder.config.latent_channels + 2))
    save_model(wider, pipe_copy / "autoencoder")
    with pytest.raises(ValueError, match="latent channels"):
        load_pipeline(pipe_copy)


# ---- model folders ------------------------------------------------------------------------

@pytest.fixture
def pipe_copy(tiny_pipeline_dir, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_pipeline_dir, tmp_path / "copy"))


def expect_error_naming(folder, path, match=None):
    with pytest.raises(ValueError) as info:
        load_pipeline(folder)
    message = str(info.value)
    assert str(path) in message, message
    assert "\n" not in message.strip()
    if match:
        assert match in message
    return message


def test_missing_folder(tmp_path):
    expect_error_naming(tmp_path / "nowhere", tmp_path / "nowhere", "not found")


def test_folder_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    expect_error_naming(tmp_path / "f", tmp_path / "f")


@pytest.mark.parametrize("sub", ["autoencoder", "diffuser", "conditioner"])
@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_missing_file(pipe_copy, sub, name):
    (pipe_copy / sub / name).unlink()
    expect_error_naming(pipe_copy, pipe_copy / sub / name, "missing")


def test_missing_model_folder(pipe_copy):
    shutil.rmtree(pipe_copy / "diffuser")
    expect_error_naming(pipe_copy, pipe_copy / "diffuser")


@pytest.mark.parametrize("keep", [0, 7, 8, 50, 0.5, -1])
def test_truncated_safetensors(pipe_copy, keep):
    path = pipe_copy / "diffuser" / "model.safetensors"
    data = path.read_bytes()
    n = keep if isinstance(keep, int) and keep >= 0 else (len(data) // 2 if keep == 0.5 else len(data) - 1)
    path.write_bytes(data[:n])
    expect_error_naming(pipe_copy, path)


def test_corrupted_safetensors_header(pipe_copy):
    path = pipe_copy / "autoencoder" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:40] = b"\xff" * 32
    path.write_bytes(bytes(data))
    expect_error_naming(pipe_copy, path)


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2]", '"riae"', "null", '{"dim": 16}', '{"model_type": "gan"}'])
def test_corrupt_config_json(pipe_copy, text):
    path = pipe_copy / "autoencoder" / "config.json"
    path.write_text(text)
    expect_error_naming(pipe_copy, path)


def edit_config(path: Path, **changes):
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("sub,changes", [
    ("autoencoder", dict(dim=32)), ("autoencoder", dict(latent_channels=8)), ("autoencoder", dict(pixel_layers=2)),
    ("diffuser", dict(encoder_blocks=2)), ("diffuser", dict(mlp_ratio=3)), ("conditioner", dict(tokens=5)),
    ("autoencoder", dict(unknown_field=1)),
])
def test_config_not_matching_weights(pipe_copy, sub, changes):
    edit_config(pipe_copy / sub / "config.json", **changes)
    message = expect_error_naming(pipe_copy, pipe_copy / sub)
    assert "config.json" in message


def test_swapped_model_folders(pipe_copy):
    os.rename(pipe_copy / "diffuser", pipe_copy / "tmp")
    os.rename(pipe_copy / "conditioner", pipe_copy / "diffuser")
    os.rename(pipe_copy / "tmp", pipe_copy / "conditioner")
    expect_error_naming(pipe_copy, pipe_copy / "diffuser" / "config.json")


@pytest.mark.parametrize("changes", [
    dict(dim=-16),
    dict(heads=0),
    dict(reduction=0),
])
def test_invalid_config_values_are_a_clear_error(pipe_copy, changes):
    """A stranger's checkpoint with nonsense sizes must be refused at load time, naming the file."""
    edit_config(pipe_copy / "autoencoder" / "config.json", **changes)
    try:
        pipe = load_pipeline(pipe_copy)
    except ValueError as err:
        assert "config.json" in str(err)
        return
    pipe.generate([1], **SMALL)  # if it loads, it must still work
    pytest.fail("invalid config was accepted")


def test_huge_config_is_refused_without_allocating_it(pipe_copy):
    """A config whose model would need terabytes is checked against the weights before any memory is spent."""
    edit_config(pipe_copy / "diffuser" / "config.json", dim=2**20, cond_dim=2**20)
    message = expect_error_naming(pipe_copy, pipe_copy / "diffuser")
    assert "config.json" in message


@pytest.mark.parametrize("sub, changes, needle", [
    ("diffuser", dict(encoder_blocks=10**6), "encoder_blocks"),  # used to hang for minutes building the model
    ("autoencoder", dict(pixel_layers=10**6), "pixel_layers"),
    ("diffuser", dict(dim=10**6), "dim"),
    ("diffuser", dict(heads=10**5), "heads"),
    ("autoencoder", dict(latent_channels=10**7), "latent_channels"),
    ("conditioner", dict(tokens=10**6), "tokens"),
    ("diffuser", dict(mlp_ratio=10**4), "mlp_ratio"),
    ("diffuser", dict(dim=4096, encoder_blocks=4, decoder_blocks=4, mlp_ratio=16), "parameters"),
    ("autoencoder", dict(dim="128"), "dim"),
    ("autoencoder", dict(dim=True), "dim"),
    ("autoencoder", dict(dim=16.5), "dim"),
    ("autoencoder", dict(heads=-2), "heads"),
    ("autoencoder", dict(encode_fraction=None), "encode_fraction"),
    ("autoencoder", dict(latent_noise=-1.0), "latent_noise"),
    ("autoencoder", dict(latent_noise=1e400), "latent_noise"),  # json writes Infinity
    ("autoencoder", dict(decode_fraction=float("nan")), "decode_fraction"),
])
def test_absurd_config_values_are_refused_before_building(pipe_copy, sub, changes, needle):
    edit_config(pipe_copy / sub / "config.json", **changes)
    start = time.perf_counter()
    message = expect_error_naming(pipe_copy, pipe_copy / sub / "config.json", needle)
    assert time.perf_counter() - start < 5


def rewrite_weights(path: Path, change):
    from safetensors.torch import load_file, save_file

    save_file({k: change(k, v) for k, v in load_file(str(path)).items()}, str(path))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_widths_are_converted_to_float32(pipe_copy, tiny_pipeline, dtype):
    for sub in ("autoencoder", "diffuser", "conditioner"):
        rewrite_weights(pipe_copy / sub / "model.safetensors", lambda k, v: v.to(dtype))
    pipe = load_pipeline(pipe_copy)
    for sub in ("autoencoder", "diffuser", "conditioner"):
        for k, v in getattr(pipe, sub).state_dict().items():
            assert v.dtype == torch.float32
            torch.testing.assert_close(v, getattr(tiny_pipeline, sub).state_dict()[k].to(dtype).float())
    images = pipe.generate([1], **SMALL)
    assert images.dtype == torch.float32 and torch.isfinite(images).all()


@pytest.mark.parametrize("change, needle", [
    (lambda v: v.to(torch.int32), "torch.int32"),
    (lambda v: v.to(torch.bool), "torch.bool"),
    (lambda v: torch.full_like(v, float("nan")), "NaN or infinite"),
    (lambda v: torch.where(torch.rand(v.shape) < 0.5, v, torch.tensor(float("inf"))), "NaN or infinite"),
    (lambda v: torch.full_like(v, 1e300, dtype=torch.float64), "NaN or infinite"),  # overflows float32
])
def test_weights_of_another_type_or_not_finite_are_refused_by_name(pipe_copy, change, needle):
    path = pipe_copy / "diffuser" / "model.safetensors"
    rewrite_weights(path, lambda k, v: change(v) if k == "head.weight" else v)
    message = expect_error_naming(pipe_copy, path, needle)
    assert "head.weight" in message


class Trap:
    """Unpickling this creates a marker file: proof that something was unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (Path(self.marker),)


def test_pickle_in_place_of_safetensors_is_refused_not_run(pipe_copy, tmp_path):
    marker = tmp_path / "unpickled"
    path = pipe_copy / "diffuser" / "model.safetensors"
    path.write_bytes(pickle.dumps({"w": Trap(marker)}))
    expect_error_naming(pipe_copy, path)
    torch.save({"w": Trap(marker)}, path)  # a torch zip-pickle too
    expect_error_naming(pipe_copy, path)
    assert not marker.exists()


def test_loading_never_unpickles(tiny_pipeline_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("unpickling was attempted")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    pipe = load_pipeline(tiny_pipeline_dir)
    assert pipe.generate([0], **SMALL).shape == (1, 1, 12, 20)


def test_save_model_writes_config_and_safetensors_only(tmp_path):
    autoencoder, diffuser, conditioner = tiny_models()
    folder = save_model(diffuser, tmp_path / "d")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "r2id" and config["latent_channels"] == diffuser.config.latent_channels
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    reloaded = load_model(folder, "r2id")
    assert type(reloaded) is type(diffuser) and not reloaded.training
    with pytest.raises(ValueError, match="expected a riae"):
        load_model(folder, "riae")
    with pytest.raises(ValueError, match="cannot save"):
        save_model(torch.nn.Linear(2, 2), tmp_path / "x")


def test_atomic_write_leaves_old_file_when_the_write_fails(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def broken(p):
        Path(p).write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, broken)
    assert path.read_bytes() == b"old" and not list(tmp_path.glob("*.tmp"))  # the half-written copy is gone
    atomic_write(path, lambda p: Path(p).write_bytes(b"new"))
    assert path.read_bytes() == b"new" and not list(tmp_path.glob("*.tmp"))


def test_generate_accepts_numpy_and_integral_floats(tiny_pipeline):
    out = tiny_pipeline.generate([np.int64(1), np.uint8(2)], height=np.int64(12), width=20.0, steps=np.int32(2))
    assert out.shape == (2, 1, 12, 20)
