"""The Gradio app through its HTTP API (gradio_client), on a tiny untrained pipeline; and the memory guard."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from app_server import REPO, shared_app
from riid.memory import check_memory, estimate_peak_bytes, memory_budget_bytes
from riid.pipeline import DEFAULT_CFG, DEFAULT_CFG_FROM, DEFAULT_SPACING, MIN_LATENT_SIDE

# the CLI's defaults, for the CLI comparison
DEFAULTS = dict(digit="3", height=32, width=32, auto_latent=True, latent_h=MIN_LATENT_SIDE, latent_w=MIN_LATENT_SIDE,
                guidance=DEFAULT_CFG, guidance_from=DEFAULT_CFG_FROM, steps=8, sampler="dpmpp", spacing=DEFAULT_SPACING,
                eta=0.0, seed=0, n_images=1, show_trajectory=False, show_latents=False)
RESAMPLE = dict(upload=None, sketch=None, frame=True, auto_latent=True, latent_h=8, latent_w=8, height=40, width=24)


@pytest.fixture(scope="module")
def server(tiny_pipeline_dir, tmp_path_factory):
    return shared_app(tiny_pipeline_dir, tmp_path_factory.mktemp("app"))[0]


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False)


def generate(client, **changes):
    return client.predict(*dict(DEFAULTS, **changes).values(), api_name="/generate")


def resample(client, **changes):
    return client.predict(*dict(RESAMPLE, **changes).values(), api_name="/resample")


def size_of(path) -> tuple[int, int]:
    """(height, width) of a returned PNG."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.height, image.width


@pytest.mark.parametrize("height, width", [(32, 48), (1, 1), (7, 130)])
def test_generation_returns_exactly_the_requested_size(client, height, width):
    image, trajectory, latents, summary = generate(client, height=height, width=width)
    assert size_of(image) == (height, width)
    assert trajectory is None and latents is None
    assert f"{height}×{width}" in summary


def test_grids_trajectory_and_latent_view(client):
    image, trajectory, latents, _ = generate(client, n_images=3, height=20, width=12, show_trajectory=True,
                                             show_latents=True, auto_latent=False, latent_h=5, latent_w=3)
    assert size_of(image) == (2 + 22, 2 + 3 * 14)  # one row of three, 2 px gutters
    frames = np.asarray(Image.open(trajectory))
    assert frames.shape[0] == 96 + 4 and frames.std() > 0  # x0 previews, decoded at 96 px on the long side
    assert min(size_of(latents)) > 5
    image, *_ = generate(client, digit="all ten", n_images=2, height=10, width=10)
    assert size_of(image) == (2 + 10 * 12, 2 + 2 * 12)  # one row per digit


def test_step_spacing_reaches_the_sampler(client):
    images = {}
    for spacing in ("time", "logsnr", "blend"):
        image, *_, summary = generate(client, spacing=spacing, steps=4)
        assert f"spaced in {spacing}" in summary
        images[spacing] = np.asarray(Image.open(image))
    assert not np.array_equal(images["time"], images["logsnr"])
    assert not np.array_equal(images["blend"], images["logsnr"])


def test_guidance_from_reaches_the_sampler(client):
    images = {}
    for start in (-5.0, 0.0):
        image, *_, summary = generate(client, guidance_from=start, steps=6)
        assert f"guidance {DEFAULT_CFG:g} from log-SNR {start:g}" in summary
        images[start] = np.asarray(Image.open(image))
    assert not np.array_equal(images[-5.0], images[0.0])


@pytest.mark.parametrize("change, words", [
    (dict(height=0), "output height must be an integer in [1, 1024]"),
    (dict(width=5000), "output width must be an integer in [1, 1024]"),
    (dict(steps="abc"), "steps must be an integer in [1, 100]"),
    (dict(steps=2.5), "steps must be an integer"),
    (dict(guidance="nan"), "guidance must be a number in [0.0, 10.0]"),
    (dict(guidance=-1), "guidance must be a finite number in [0.0, 10.0]"),
    (dict(guidance_from=6), "guidance from log-SNR must be a finite number in [-5.0, 5.0]"),
    (dict(eta=4), "eta must be a finite number in [0.0, 3.0]"),
    (dict(seed=-1), "seed must be an integer"),
    (dict(n_images=0), "number of images must be an integer in [1, 16]"),
    (dict(digit="12"), "digit must be an integer in [0, 9]"),
    (dict(sampler="euler"), "sampler must be one of ddim, dpmpp"),
    (dict(spacing="karras"), "spacing must be one of time, logsnr, blend"),
    (dict(auto_latent=False, latent_h=0), "latent height must be an integer in [1, 64]"),
    (dict(auto_latent="yes"), "auto latent size must be true or false"),
])
def test_bad_values_are_refused_clearly_and_the_app_keeps_serving(client, change, words):
    with pytest.raises(Exception, match=r"must") as caught:
        generate(client, **change)
    assert words in str(caught.value)
    image, *_ = generate(client, height=9, width=11)
    assert size_of(image) == (9, 11)


def test_app_refuses_to_start_without_a_pipeline(tmp_path, subprocess_env):
    env = dict(subprocess_env, RIID_CHECKPOINT=str(tmp_path / "missing"), GRADIO_ANALYTICS_ENABLED="False")
    run = subprocess.run([sys.executable, str(REPO / "app.py")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode != 0
    assert "cannot load the pipeline" in run.stderr and "RIID_CHECKPOINT" in run.stderr


def test_nan_through_raw_http_is_refused(server, client):
    """JSON clients may send NaN literals, which gradio_client refuses to encode."""
    data = list(dict(DEFAULTS, guidance=float("nan")).values())
    request = urllib.request.Request(server + "gradio_api/call/generate", data=json.dumps({"data": data}).encode(),
                                     headers={"Content-Type": "application/json"})
    event = json.load(urllib.request.urlopen(request, timeout=30))["event_id"]
    stream = urllib.request.urlopen(f"{server}gradio_api/call/generate/{event}", timeout=60).read().decode()
    assert "event: error" in stream and "guidance must be a finite number" in stream
    assert size_of(generate(client)[0]) == (32, 32)


def test_memory_guard_refuses_through_the_api(client):
    # 160 images of 1024×1024 need far more than the default 4 GiB budget
    with pytest.raises(Exception, match=r"request needs ~\d+ GiB, above the budget of 4\.00 GiB"):
        generate(client, digit="all ten", n_images=16, height=1024, width=1024)
    assert size_of(generate(client)[0]) == (32, 32)


# --- uploads --------------------------------------------------------------------------------------------

def write_digit(path: Path, mode: str, size=(40, 30)) -> Path:
    """A bar 'digit': black on white for RGB/L/P/16-bit, black strokes on transparency for RGBA."""
    h, w = size
    ink = np.zeros((h, w), bool)
    ink[h // 4: 3 * h // 4, w // 2 - 2: w // 2 + 2] = True
    if mode == "RGBA":
        rgba = np.zeros((h, w, 4), np.uint8)
        rgba[ink] = (0, 0, 0, 255)
        image = Image.fromarray(rgba, "RGBA")
    elif mode == "I;16":
        image = Image.fromarray(np.where(ink, 0, 65535).astype(np.uint16))
    else:
        image = Image.fromarray(np.where(ink, 0, 255).astype(np.uint8), "L").convert(mode)
    image.save(path)
    return path


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "I;16"])
def test_resample_accepts_any_image_mode(client, tmp_path, mode):
    path = write_digit(tmp_path / f"digit_{mode.replace(';', '')}.png", mode)
    source, decoded, bicubic, summary = resample(client, upload=handle_file(str(path)))
    assert size_of(decoded) == (40, 24) and size_of(bicubic) == (40, 24)
    pixels = np.asarray(Image.open(source))
    assert pixels[0].max() == 0 and pixels.max() == 255, "white digit on black, like MNIST"
    assert "latent" in summary


def test_resample_reference_is_independent_of_the_mode(client, tmp_path):
    sources = [np.asarray(Image.open(resample(client, upload=handle_file(str(write_digit(
        tmp_path / f"{m.replace(';', '')}.png", m))))[0])) for m in ("RGB", "RGBA", "I;16")]
    for other in sources[1:]:
        assert np.abs(other.astype(int) - sources[0]).max() <= 1


def test_resample_reads_a_drawing(client, tmp_path):
    path = write_digit(tmp_path / "drawn.png", "RGB", (64, 64))
    drawing = {"background": None, "layers": [], "composite": handle_file(str(path)), "id": None}
    source, decoded, _, _ = resample(client, sketch=drawing)
    assert size_of(decoded) == (40, 24) and np.asarray(Image.open(source)).max() == 255


def test_resample_edge_sizes(client, tmp_path):
    one = tmp_path / "one.png"
    Image.new("L", (1, 1), 200).save(one)
    _, decoded, _, _ = resample(client, upload=handle_file(str(one)), height=5, width=3)
    assert size_of(decoded) == (5, 3)
    wide = tmp_path / "wide.png"
    Image.new("L", (4097, 1), 0).save(wide)
    with pytest.raises(Exception, match=r"1 to 4096 pixels per side, got 4097×1"):
        resample(client, upload=handle_file(str(wide)))


def test_resample_rejects_non_images_and_empty_requests(client, tmp_path):
    fake = tmp_path / "digit.png"
    fake.write_text("this is not an image")
    with pytest.raises(Exception, match="not an image"):
        resample(client, upload=handle_file(str(fake)))
    with pytest.raises(Exception, match="upload an image or draw a digit first"):
        resample(client)
    transparent = tmp_path / "clear.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(transparent)
    with pytest.raises(Exception, match="fully transparent"):
        resample(client, upload=handle_file(str(transparent)))
    assert size_of(generate(client)[0]) == (32, 32)


# --- determinism ----------------------------------------------------------------------------------------

def test_same_seed_gives_byte_identical_pngs_from_api_and_cli(client, tiny_pipeline_dir, tmp_path, subprocess_env):
    settings = dict(digit="7", height=24, width=40, steps=6, guidance=2.5, sampler="ddim", eta=1.0, seed=1234)
    one = Path(generate(client, **settings)[0]).read_bytes()
    again = Path(generate(client, **settings)[0]).read_bytes()
    other_seed = Path(generate(client, **dict(settings, seed=1235))[0]).read_bytes()
    three = Path(generate(client, n_images=3, **settings)[0]).read_bytes()
    assert one == again and one != other_seed

    def cli(n, out):
        subprocess.run([sys.executable, "-m", "riid.cli", "sample", "--checkpoint", str(tiny_pipeline_dir),
                        "--digit", "7", "--n", str(n), "--height", "24", "--width", "40", "--steps", "6",
                        "--cfg", "2.5", "--sampler", "ddim", "--eta", "1.0", "--seed", "1234", "--out", str(out),
                        "--grid", str(out / "grid.png")], check=True, env=subprocess_env, capture_output=True,
                       timeout=600)
        return out

    assert (cli(1, tmp_path / "one") / "7_0000.png").read_bytes() == one
    assert (cli(3, tmp_path / "three") / "grid.png").read_bytes() == three


# --- the memory model and guard (riid.memory) ------------------------------------------------------------

def test_memory_estimate_grows_with_every_size(tiny_pipeline):
    base = estimate_peak_bytes(tiny_pipeline, 1, 64, 64, 16, 16)
    assert base > 0
    for bigger in [(2, 64, 64, 16, 16), (1, 256, 64, 16, 16), (1, 64, 64, 32, 16)]:
        assert estimate_peak_bytes(tiny_pipeline, *bigger) > base
    assert estimate_peak_bytes(tiny_pipeline, 1, 64, 64, 16, 16, flash=False) > base
    assert estimate_peak_bytes(tiny_pipeline, 1, 64, 64, 16, 16, input_size=(512, 512)) > base


def test_large_latents_fit_the_default_budget(tiny_pipeline):
    # biased attention is split into query chunks, so a 64×64 latent no longer needs its
    # [4096, 4096] score matrices (~1 GiB for two CFG rows and 2 heads) in one piece
    assert estimate_peak_bytes(tiny_pipeline, 1, 256, 256, 64, 64) < 2**30
    assert estimate_peak_bytes(tiny_pipeline, 1, 512, 512, 128, 128) < 2 * 2**30


def test_memory_guard_uses_the_budget(tiny_pipeline, monkeypatch):
    monkeypatch.setenv("RIID_MEMORY_BUDGET_GB", "0.001")
    with pytest.raises(ValueError, match=r"request needs ~[\d.]+ GiB, above the budget of 0\.00 GiB; lower"):
        check_memory(tiny_pipeline, 1, 256, 256, 64, 64)
    assert check_memory(tiny_pipeline, 1, 8, 8, 2, 2) > 0  # a small request fits even 1 MiB
    monkeypatch.setenv("RIID_MEMORY_BUDGET_GB", "lots")
    with pytest.raises(ValueError, match="RIID_MEMORY_BUDGET_GB must be a number"):
        memory_budget_bytes()
    monkeypatch.delenv("RIID_MEMORY_BUDGET_GB")
    assert memory_budget_bytes() == 4 * 2**30


def test_app_handler_refuses_above_a_small_budget(tiny_pipeline_dir, monkeypatch):
    """The guard inside the app's handler, with the budget taken from the environment at request time."""
    import gradio as gr

    monkeypatch.setenv("RIID_CHECKPOINT", str(tiny_pipeline_dir))
    monkeypatch.syspath_prepend(str(REPO))
    import app

    monkeypatch.setenv("RIID_MEMORY_BUDGET_GB", "0.01")
    with pytest.raises(gr.Error, match=r"request needs ~[\d.]+ GiB, above the budget of 0\.01 GiB"):
        app.generate(**dict(DEFAULTS, height=512, width=512))
    image, *_ = app.generate(**dict(DEFAULTS, height=16, width=16, steps=2))
    assert image.size == (16, 16)


# The peak is this process's own (VmHWM via riid.bench.memory_mib): ru_maxrss of a child starts from the
# parent's resident set at the fork, so it grew with whatever tests had run before in the same pytest process.
MEASURE = """
import sys, torch
from riid import load_pipeline
from riid.bench import memory_mib, reset_peak
from riid.memory import estimate_peak_bytes
pipe = load_pipeline(sys.argv[1])
with torch.inference_mode():
    pipe.generate([1], 8, 8, steps=2)
    reset_peak()
    base, _ = memory_mib()
    pipe.generate([1, 2], 384, 384, latent_size=(16, 16), steps=2)
_, peak = memory_mib()
print(int((peak - base) * 2**20), estimate_peak_bytes(pipe, 2, 384, 384, 16, 16))
"""


def test_memory_estimate_is_not_below_the_measured_peak(tiny_pipeline_dir, subprocess_env):
    out = subprocess.run([sys.executable, "-c", MEASURE, str(tiny_pipeline_dir)], env=subprocess_env, check=True,
                         capture_output=True, text=True, timeout=600).stdout
    measured, estimate = map(int, out.split())
    assert 0.9 * measured <= estimate <= 4 * measured + 64 * 2**20, (measured, estimate)
