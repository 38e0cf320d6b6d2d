"""The Gradio app through its HTTP API (gradio_client) on a tiny untrained pipeline, its handlers in process,
and what a Hugging Face Space needs (.gitattributes, requirements.txt)."""
from __future__ import annotations

import ast
import json
import math
import re
import subprocess
import sys
import threading
import time
import urllib.request
from importlib import metadata
from pathlib import Path

import numpy as np
import psutil
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from app_server import REPO, shared_app
from riid.pipeline import CHECKPOINT_ENV, DEFAULTS as D, default_checkpoint

# every input of the /generate endpoint, in order (8 steps keep the tiny model quick)
GENERATE = dict(digit="3", height=32, width=32, guidance=D.cfg, steps=8, seed=0, n_images=1, auto_latent=True,
                latent_h=D.latent_height, latent_w=D.latent_width, guidance_from=D.cfg_from, sampler=D.sampler,
                spacing=D.spacing, eta=0.0, show_trajectory=False, show_latents=False)
RESAMPLE = dict(upload=None, sketch=None, frame=True, auto_latent=True, latent_h=8, latent_w=8, height=40, width=24)
# accepted (estimated above the quick lane's 10 s, below the 60 s limit), yet minutes long on the tiny model
LONG = dict(n_images=16, height=512, width=512, auto_latent=False, latent_h=32, latent_w=32, steps=100)


@pytest.fixture(scope="module")
def server(tiny_pipeline_dir, tmp_path_factory):
    return shared_app(tiny_pipeline_dir, tmp_path_factory.mktemp("app"))


@pytest.fixture(scope="module")
def url(server):
    return server[0]


@pytest.fixture(scope="module")
def client(url):
    return Client(url, verbose=False)


@pytest.fixture
def app(tiny_pipeline_dir, monkeypatch):
    """The app module in this process, on the tiny pipeline (its handlers called directly)."""
    monkeypatch.setenv(CHECKPOINT_ENV, str(tiny_pipeline_dir))
    monkeypatch.syspath_prepend(str(REPO))
    import app
    monkeypatch.setattr(app, "_pipeline", None)
    return app


def generate(client, **changes):
    return client.predict(*dict(GENERATE, **changes).values(), api_name="/generate")


def resample(client, **changes):
    return client.predict(*dict(RESAMPLE, **changes).values(), api_name="/resample")


def png(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image)


def pictures(gallery) -> list[np.ndarray]:
    return [png(item["image"]) for item in gallery]


def one_line_error(caught) -> str:
    message = str(caught.value)
    assert message and message != "None" and "\n" not in message and "Traceback" not in message, message
    return message


# --- generation -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("height, width", [(32, 48), (1, 1), (7, 130), (96, 32)])
def test_every_image_has_exactly_the_requested_size(client, height, width):
    gallery, trajectory, latents, summary = generate(client, height=height, width=width, n_images=2)
    assert [p.shape for p in pictures(gallery)] == [(height, width)] * 2
    assert trajectory is None and latents is None
    assert f"{height}×{width} px" in summary


def test_latent_follows_the_pipelines_rule(client):
    """12 latent tokens across the shorter side at the output's aspect up to 5:3: 1:3 gets 20×12, as in the CLI."""
    for (height, width), latent in {(96, 32): "20×12", (32, 96): "12×20", (1024, 1024): "12×12"}.items():
        *_, summary = generate(client, height=height, width=width, steps=1)
        assert f"from {latent} latents" in summary


def test_gallery_animation_and_latent_channels_only_when_asked(client):
    gallery, trajectory, latents, _ = generate(client, n_images=3, height=20, width=12, show_trajectory=True,
                                               show_latents=True, auto_latent=False, latent_h=5, latent_w=3)
    assert [p.shape for p in pictures(gallery)] == [(20, 12)] * 3
    assert [item["caption"] for item in gallery] == ["3 · #1", "3 · #2", "3 · #3"]
    with Image.open(trajectory) as gif:
        assert gif.format == "GIF" and gif.n_frames == 8 and gif.size == (58, 96)  # every step of 8, at 96 px
    assert min(png(latents).shape) > 5
    gallery, *_ = generate(client, digit="all ten", n_images=1, height=10, width=10)
    assert [item["caption"].split()[0] for item in gallery] == [str(d) for d in range(10)]


def test_seeds_give_other_images_and_batches_do_not_matter(client):
    one, *_ = generate(client, seed=5, n_images=1)
    three, *_ = generate(client, seed=5, n_images=3)
    other, *_ = generate(client, seed=6, n_images=1)
    assert np.array_equal(pictures(one)[0], pictures(three)[0])  # image i has its own seed
    assert not np.array_equal(pictures(one)[0], pictures(other)[0])


@pytest.mark.parametrize("name, values", [("spacing", ("time", "logsnr")), ("guidance_from", (-5.0, 0.0))])
def test_advanced_settings_reach_the_sampler(client, name, values):
    first, second = (pictures(generate(client, **{name: v, "steps": 6})[0])[0] for v in values)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("change, words", [
    (dict(height=0), "output height must be an integer in [1, 1024]"),
    (dict(height=33.7), "output height must be an integer in [1, 1024], got 33.7"),
    (dict(height=None), "output height is empty: enter a whole number from 1 to 1024"),
    (dict(width=""), "output width is empty"),
    (dict(width=5000), "output width must be an integer in [1, 1024]"),
    (dict(steps="abc"), "steps must be an integer in [1, 100]"),
    (dict(steps=2.5), "steps must be an integer"),
    (dict(guidance="nan"), "cfg must be a number in [0.0, 10.0]"),
    (dict(guidance=-1), "cfg must be a finite number in [0.0, 10.0]"),
    (dict(guidance_from=6), "cfg_from must be a finite number in [-5.0, 5.0]"),
    (dict(eta=4), "eta must be a finite number in [0.0, 3.0]"),
    (dict(seed=-1), "seed must be an integer"),
    (dict(n_images=0), "number of images must be an integer in [1, 16]"),
    (dict(digit="all ten", n_images=2), "all ten × number of images must be an integer in [1, 16], got 20"),
    (dict(digit="12"), "digit must be an integer in [0, 9]"),
    (dict(sampler="euler"), "sampler must be one of ddim, dpmpp"),
    (dict(spacing="karras"), "spacing must be one of time, logsnr"),
    (dict(auto_latent=False, latent_h=0), "latent size height must be an integer in [1, 64]"),
    (dict(auto_latent="yes"), "automatic latent size must be true or false"),
])
def test_bad_values_are_refused_in_one_line_and_the_app_keeps_serving(client, change, words):
    with pytest.raises(Exception) as caught:
        generate(client, **change)
    assert words in one_line_error(caught)
    gallery, *_ = generate(client, height=9, width=11)
    assert pictures(gallery)[0].shape == (9, 11)


@pytest.mark.parametrize("change", [dict(digit=[3]), dict(height={"h": 1}), dict(sampler=["ddim"]),
                                    dict(spacing=3), dict(seed=[]), dict(show_latents="x"), dict(eta=[0.5])])
def test_wrong_types_through_the_api_get_a_message(client, change):
    """Not ``{"error": null}`` and a traceback in the log, but one line naming the problem."""
    with pytest.raises(Exception) as caught:
        generate(client, **change)
    assert len(one_line_error(caught)) > 10


def test_nan_through_raw_http_is_refused(url, client):
    """JSON clients may send NaN literals, which gradio_client refuses to encode."""
    data = list(dict(GENERATE, guidance=float("nan")).values())
    request = urllib.request.Request(url + "gradio_api/call/generate", data=json.dumps({"data": data}).encode(),
                                     headers={"Content-Type": "application/json"})
    event = json.load(urllib.request.urlopen(request, timeout=30))["event_id"]
    stream = urllib.request.urlopen(f"{url}gradio_api/call/generate/{event}", timeout=60).read().decode()
    assert "event: error" in stream and "cfg must be a finite number" in stream


# --- cost: the time limit, the memory budget, the lanes and the Stop button -------------------------------

def test_the_long_request_is_long_but_allowed(app, tiny_pipeline):
    """What the tests below assume of riid.cost's estimates on the tiny model (a recalibration may move them)."""
    from riid.cost import seconds
    s = tiny_pipeline.settings(LONG["height"], LONG["width"], latent_size=(LONG["latent_h"], LONG["latent_w"]),
                               steps=LONG["steps"])
    assert app.QUICK_S < seconds(tiny_pipeline, LONG["n_images"], s) <= app.DEFAULT_TIME_LIMIT_S  # the long lane


def test_a_long_request_is_refused_naming_the_limit_and_what_fits(client):
    with pytest.raises(Exception) as caught:
        generate(client, **dict(LONG, height=1024, width=1024, latent_h=64, latent_w=64))
    message = one_line_error(caught)
    assert "above the limit of 60 s" in message and "fewer images, fewer steps or a smaller output" in message
    assert "image(s) or" in message and "steps fit these settings" in message


def test_stop_ends_a_running_request_and_a_quick_one_does_not_wait_behind_a_long_one(url, server):
    """The concurrency test: a 32 px request while a minutes-long one runs; then Stop frees the CPU."""
    long_client, quick_client = Client(url, verbose=False), Client(url, verbose=False)
    job = long_client.submit(*dict(GENERATE, **LONG).values(), api_name="/generate")
    deadline = time.monotonic() + 60
    while not any(u.desc and u.desc.startswith("sampling step") for u in (job.status().progress_data or [])):
        assert time.monotonic() < deadline and not job.done(), "the long request never started"
        time.sleep(0.2)
    started = time.monotonic()
    gallery, *_ = generate(quick_client)
    quick_s = time.monotonic() - started
    assert pictures(gallery)[0].shape == (32, 32) and not job.done()
    assert quick_s < 20, quick_s  # ~1 s when idle; it does not wait for the long request's minutes

    assert long_client.predict(api_name="/stop") == "Stopped."
    with pytest.raises(Exception, match="stopped"):
        job.result(timeout=30)
    assert quick_client.predict(api_name="/stop") == "Nothing was running."  # Stop is per session
    psutil.Process(server[1].pid).cpu_percent()
    time.sleep(2)
    assert psutil.Process(server[1].pid).cpu_percent() < 40, "the stopped request is still computing"


def test_simultaneous_quick_requests_all_succeed(url):
    results, clients = [], [Client(url, verbose=False) for _ in range(6)]

    def one(i, c):
        results.append(pictures(generate(c, seed=i, height=16, width=16, steps=4)[0])[0].shape)

    threads = [threading.Thread(target=one, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == [(16, 16)] * 6


def test_handler_stops_at_the_time_limit_and_names_no_setting_to_a_visitor(app, monkeypatch):
    import gradio as gr

    from riid.cost import seconds
    inputs = dict(GENERATE, n_images=4, height=64, width=64, steps=100)
    pipe = app.get_pipeline()
    limit = round(1.5 * seconds(pipe, 4, pipe.settings(64, 64, steps=100)), 3)  # seconds of real work: stopped
    monkeypatch.setenv(app.TIME_LIMIT_ENV, str(limit))
    with pytest.raises(gr.Error, match=rf"stopped at the time limit of {limit:g} s"):
        app.generate(*inputs.values())
    monkeypatch.setenv("RIID_MEMORY_BUDGET_GB", "0.001")
    monkeypatch.delenv(app.TIME_LIMIT_ENV)
    with pytest.raises(gr.Error) as caught:
        app.generate(*dict(inputs, height=512, width=512).values())
    assert "above the memory budget of 0.00 GiB" in str(caught.value)
    assert "RIID_MEMORY_BUDGET_GB" not in str(caught.value) and "$" not in str(caught.value)
    monkeypatch.setenv(app.TIME_LIMIT_ENV, "soon")
    with pytest.raises(ValueError, match=r"\$RIID_APP_TIME_LIMIT_S must be a positive number"):
        app.time_limit_s()  # checked when the app starts, so a visitor never sees it


def test_examples_are_cached_and_open_the_page(app):
    app.cache_examples()
    assert len(app.EXAMPLE_RESULTS) == len(app.EXAMPLES)
    shapes = {(h, w) for _, h, w, _, _ in app.EXAMPLES}
    assert {(32, 96), (96, 32)} <= shapes and len(shapes) >= 4  # a wide, a tall and several sizes
    started = time.perf_counter()
    gallery, trajectory, latents, summary = app.generate(*app.example_inputs(*app.FIRST))
    assert time.perf_counter() - started < 0.5 and len(gallery) == app.FIRST[3]
    assert gallery[0][0].size == (app.FIRST[2], app.FIRST[1]) and trajectory is None and latents is None


def test_aspect_lock_keeps_the_ratio_at_the_size_cap(app):
    lock = app.locked_size
    assert lock("height", 1024, 32, "9:16") == (576, 1024)  # a wide 9:16 (height:width) cannot be 1024 tall
    assert lock("height", 1024, 32, "16:9") == (1024, 576)
    assert lock("width", 32, 1024, "1:3") == (341, 1024)
    assert lock("height", 33.7, 32, "1:1") == (34, 34)  # a decimal is rounded, not refused later
    assert lock("height", 32, 96, "1:3") == (32, 96) and lock("height", 96, 32, "3:1") == (96, 32)
    assert lock("height", 5000, 40, "free") == (1024, app.gr.update())
    assert lock("height", None, 40, "1:1") == (app.gr.update(), app.gr.update())  # emptied: generate says so
    assert app.whole_side(12.5) == 12 and app.whole_side(0) == 1 and app.whole_side(None) == app.gr.update()
    assert app.aspect_name(48, 80) == "3:5" and app.aspect_name(32, 96) == "1:3" and app.aspect_name(5, 7) == "free"
    assert app.ASPECTS == [a for a in app.ASPECTS if a == "free" or a.count(":") == 1]


def test_how_it_works_draws_the_coordinates_of_the_library(app):
    svg = app.coordinate_figure()
    assert svg.startswith("<svg") and svg.count("<circle") == 8 * 8 + 3 * 3 + 6 * 10
    assert 'cx="36.7" cy="36.7" r="7"' in svg  # the 3×3 latent's first cell centre, at (-1/3, -1/3)


def test_latent_sliders_show_the_automatic_latent(app):
    (lh, lw) = app.latent_sliders(True, 96, 32)
    assert (lh["value"], lw["value"], lh["interactive"]) == (20, 12, False)
    assert app.latent_sliders(False, 96, 32)[0]["interactive"] is True


# --- resampling and uploads -------------------------------------------------------------------------------

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
    source, decoded, bicubic, summary, lh, lw = resample(client, upload=handle_file(str(path)))
    assert png(decoded).shape == (40, 24) and png(bicubic).shape == (40, 24)
    pixels = png(source)
    assert pixels[0].max() == 0 and pixels.max() == 255, "white digit on black, like MNIST"
    assert f"→ {lh}×{lw} latent" in summary and min(lh, lw) == 12  # the pipeline's rule, shown on the sliders


def test_resample_compares_riae_and_bicubic_unstretched(client, tmp_path):
    """A square digit at 40×24 (height×width): both are the 24×24 digit with 8 background rows above and below."""
    path = write_digit(tmp_path / "square.png", "L", (64, 64))
    source, decoded, bicubic, *_ = resample(client, upload=handle_file(str(path)), frame=False)
    for image in (png(decoded), png(bicubic)):
        assert image.shape == (40, 24) and image[:8].max() == 0 and image[-8:].max() == 0
    inner = np.asarray(Image.fromarray(png(source)).resize((24, 24), Image.Resampling.BICUBIC), dtype=int)
    assert np.abs(png(bicubic)[8:32].astype(int) - inner).mean() < 8  # the digit itself, not stretched


def test_resample_uses_the_latent_given(client, tmp_path):
    path = write_digit(tmp_path / "digit.png", "L")
    *_, summary, lh, lw = resample(client, upload=handle_file(str(path)), auto_latent=False, latent_h=8, latent_w=6)
    assert (lh, lw) == (8, 6) and "→ 8×6 latent" in summary


def test_resample_reference_is_independent_of_the_mode(client, tmp_path):
    sources = [png(resample(client, upload=handle_file(str(write_digit(
        tmp_path / f"{m.replace(';', '')}.png", m))))[0]) for m in ("RGB", "RGBA", "I;16")]
    for other in sources[1:]:
        assert np.abs(other.astype(int) - sources[0]).max() <= 1


def test_resample_reads_a_drawing(client, tmp_path):
    path = write_digit(tmp_path / "drawn.png", "RGB", (64, 64))
    drawing = {"background": None, "layers": [], "composite": handle_file(str(path)), "id": None}
    source, decoded, *_ = resample(client, sketch=drawing)
    assert png(decoded).shape == (40, 24) and png(source).max() == 255


def huge_png(path: Path, side: int) -> Path:
    """A valid PNG header claiming side×side pixels: PIL reads the size without decoding anything."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        import zlib
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def test_too_large_uploads_are_called_too_large(client, tmp_path):
    for side in (20000, 4097):
        with pytest.raises(Exception) as caught:
            resample(client, upload=handle_file(str(huge_png(tmp_path / f"huge{side}.png", side))))
        assert "too large: images up to 4096×4096 pixels" in one_line_error(caught)
    wide = tmp_path / "wide.png"
    Image.new("L", (4097, 1), 0).save(wide)
    with pytest.raises(Exception, match=r"too large.*got 4097×1"):
        resample(client, upload=handle_file(str(wide)))
    one = tmp_path / "one.png"
    Image.new("L", (1, 1), 200).save(one)
    assert png(resample(client, upload=handle_file(str(one)), height=5, width=3)[1]).shape == (5, 3)


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
    with pytest.raises(Exception) as caught:
        resample(client, upload=123)
    one_line_error(caught)


# --- the app process, and the API against the CLI ---------------------------------------------------------

def test_app_refuses_to_start_with_a_bad_folder_or_setting(app, tmp_path, monkeypatch):
    monkeypatch.setenv(CHECKPOINT_ENV, str(tmp_path / "missing"))
    with pytest.raises(SystemExit, match=rf"cannot start with the pipeline .*missing.*\n.*set {CHECKPOINT_ENV}"):
        app.main()
    monkeypatch.setenv(app.TIME_LIMIT_ENV, "-1")
    with pytest.raises(SystemExit, match=r"RIID_APP_TIME_LIMIT_S must be a positive number"):
        app.main()


def test_app_py_refuses_a_bad_folder_in_one_line(tmp_path, subprocess_env, python):
    """The page is built at import, from the checkpoint's sampling defaults: a folder that does not load still
    reaches main()'s one-line refusal, not a traceback."""
    env = dict(subprocess_env, **{CHECKPOINT_ENV: str(tmp_path / "missing")})
    run = subprocess.run([python, str(REPO / "app.py")], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert "cannot start with the pipeline" in run.stderr and "missing" in run.stderr


def test_api_and_cli_give_the_same_pixels(client, tiny_pipeline_dir, tmp_path):
    from riid.cli import main as cli
    settings = dict(digit="7", height=24, width=40, steps=6, guidance=2.5, sampler="ddim", eta=1.0, seed=1234)
    api = pictures(generate(client, n_images=3, **settings)[0])
    cli(["sample", "--checkpoint", str(tiny_pipeline_dir), "--digit", "7", "--n", "3", "--height", "24", "--width",
         "40", "--steps", "6", "--cfg", "2.5", "--sampler", "ddim", "--eta", "1.0", "--seed", "1234", "--out",
         str(tmp_path)])
    for i, pixels in enumerate(api):
        assert np.array_equal(png(tmp_path / f"7_{i:04d}.png"), pixels)


# --- what a Hugging Face Space needs ----------------------------------------------------------------------

def lfs_covered(paths: list[str]) -> dict[str, bool]:
    out = subprocess.run(["git", "check-attr", "filter", "--", *paths], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    return {line.rsplit(": filter: ", 1)[0]: line.endswith(": lfs") for line in out.splitlines()}


def test_large_and_binary_files_are_stored_with_lfs():
    """The Hub refuses a push with binaries outside LFS/Xet: every file over 1 MB the app needs, and every binary
    file in the repository, must match a pattern of .gitattributes."""
    if subprocess.run(["git", "rev-parse"], cwd=REPO, capture_output=True).returncode:
        pytest.skip("not a git checkout")
    needed = [REPO / "app.py", REPO / "requirements.txt"]
    needed += [p for model in ("autoencoder", "diffuser", "conditioner")
               for p in (default_checkpoint() / model).iterdir()]  # the weights the app loads
    needed += list((REPO / "riid").rglob("*.*"))
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    files = {p.resolve() for p in needed} | {REPO / f for f in tracked.decode().split("\0") if f}
    files = {f for f in files if f.is_file() and "__pycache__" not in f.parts}

    def binary(f: Path) -> bool:
        return b"\0" in f.read_bytes()[:8192]

    must = sorted(str(f.relative_to(REPO)) for f in files if f.stat().st_size > 2**20 or binary(f))
    assert any(m.endswith("model.safetensors") for m in must)
    uncovered = [f for f, lfs in lfs_covered(must).items() if not lfs]
    assert not uncovered, f"add these to .gitattributes (filter=lfs): {uncovered}"


def module_file(name: str) -> Path:
    path = REPO / name.replace(".", "/")
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imports_of(name: str) -> tuple[set[str], set[str]]:
    """(riid modules, other top-level modules) that module ``name`` imports, read from its source."""
    package = name if module_file(name).name == "__init__.py" else name.rpartition(".")[0]
    ours, others = set(), set()
    for node in ast.walk(ast.parse(module_file(name).read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base]).strip(".")
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            top = target.split(".")[0]
            if top != "riid":
                others.add(top)
            elif module_file(target).exists():
                parts = target.split(".")
                ours |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}  # packages run their __init__
    return ours, others - {"__future__"}


DISTRIBUTIONS = {"PIL": "pillow"}  # modules whose distribution has another name


def test_requirements_are_what_the_app_imports():
    """requirements.txt lists the distributions that app.py and the riid modules it loads import, nothing else."""
    todo, seen, third_party = ["app"], set(), set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            ours, others = imports_of(name)
            todo += sorted(ours - seen)
            third_party |= others - set(sys.stdlib_module_names)
    assert "riid.pipeline" in seen and "riid.eval.classifier" not in seen  # the app loads no evaluation code
    distributions = {metadata.distribution(DISTRIBUTIONS.get(m, m)).name.lower() for m in third_party}
    lines = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    required = {re.split(r"[<>=!~ ]", line)[0].lower() for line in lines if line and not line.startswith("-")}
    assert required == distributions, (required, distributions)


# --- the cost model the app relies on (riid.cost) ---------------------------------------------------------

def test_memory_estimate_grows_with_every_size(tiny_pipeline):
    from riid.cost import peak_bytes
    base = peak_bytes(tiny_pipeline, 1, 64, 64, 16, 16)
    assert base > 0
    for bigger in [(2, 64, 64, 16, 16), (1, 256, 64, 16, 16), (1, 256, 256, 16, 16)]:
        assert peak_bytes(tiny_pipeline, *bigger) > base
    assert peak_bytes(tiny_pipeline, 1, 64, 64, 16, 16, input_size=(512, 512)) > base
    # biased attention is split into query chunks: a 64×64 latent does not hold [4096, 4096] scores in one piece
    assert peak_bytes(tiny_pipeline, 1, 256, 256, 64, 64) < 2**30


def test_time_estimate_grows_with_the_work(tiny_pipeline):
    from riid.cost import seconds
    s = tiny_pipeline.settings(64, 64)
    base = seconds(tiny_pipeline, 1, s)
    assert 0 < base < seconds(tiny_pipeline, 2, s) and base < seconds(tiny_pipeline, 1, tiny_pipeline.settings(
        64, 64, steps=2 * s.steps)) and base < seconds(tiny_pipeline, 1, tiny_pipeline.settings(256, 256))
    assert math.isclose(seconds(tiny_pipeline, 4, s), 4 * base)


# The peak is this process's own (VmHWM from /proc/self/status, restarted by writing 5 to clear_refs): ru_maxrss
# of a child starts from the parent's resident set at the fork, so it grew with whatever tests had run before.
MEASURE = """
import sys, torch
torch.set_num_threads(1)
from riid import load_pipeline
from riid.cost import peak_bytes
sys.path.insert(0, sys.argv[2])
from bench import memory_mib, reset_peak  # benchmarks/bench.py, which measures the same way

pipe = load_pipeline(sys.argv[1])
with torch.inference_mode():
    pipe.generate([1], height=8, width=8, steps=2)
    reset_peak()
    base, _ = memory_mib()
    pipe.generate([1, 2], height=384, width=384, latent_size=(16, 16), steps=2, budget_gb=64)
_, peak = memory_mib()
print(int((peak - base) * 2**20), peak_bytes(pipe, 2, 384, 384, 16, 16))
"""


def test_memory_estimate_is_not_below_the_measured_peak(tiny_pipeline_dir, subprocess_env):
    out = subprocess.run([sys.executable, "-c", MEASURE, str(tiny_pipeline_dir), str(REPO / "benchmarks")],
                         env=subprocess_env, check=True,
                         capture_output=True, text=True, timeout=600).stdout
    measured, estimate = map(int, out.split())
    assert 0.9 * measured <= estimate <= 4 * measured + 64 * 2**20, (measured, estimate)


def test_how_it_works_reports_the_shipped_evaluation(app, tmp_path):
    report = json.loads(app.REPORT.read_text())
    row = next(r for r in report["sizes"] if (r["height"], r["width"]) == (32, 32))
    text = app.evaluation_summary()
    assert f"{row['accuracy']:.0%} are read" in text and f"{row['fd_ratio']:.1f}× the real" in text
    (tmp_path / "bad.json").write_text("{}")
    assert app.evaluation_summary(tmp_path / "missing.json") == app.evaluation_summary(tmp_path / "bad.json") == ""
