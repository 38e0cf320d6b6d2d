"""riid in the browser: generate digits at any size and aspect ratio, and resample drawn or uploaded digits.

Run ``python app.py`` (also the Hugging Face Spaces entry point). The weights come from
$RIID_CHECKPOINT, else the shipped ``checkpoints/`` folder; $GRADIO_SERVER_NAME and
$GRADIO_SERVER_PORT choose the address (Gradio reads them), $RIID_MEMORY_BUDGET_GB the memory guard.

Every value is checked here on the server, since the HTTP API can be called without the page's
sliders: both model events take their inputs raw (``preprocess=False``) so that a bad value, of
whatever type, reaches :mod:`riid.validate` and comes back as a message naming the allowed range.
"""
from __future__ import annotations

import base64
import functools
import io
import json
import math
import os
import threading
import time
import urllib.request
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from gradio.components.image_editor import EditorData
from PIL import Image, ImageOps

from riid import memory
from riid.images import grid, to_uint8
from riid.pipeline import (DEFAULT_CFG, DEFAULT_CFG_FROM, DEFAULT_CHECKPOINT, DEFAULT_SPACING, DEFAULT_STEPS, MAX_SEED,
                           MIN_LATENT_SIDE, Pipeline, load_pipeline)
from riid.samplers import SAMPLERS
from riid.schedule import SPACINGS
from riid.validate import MAX_IMAGE_SIDE, check_float, check_int

# The app's own limits, tighter than the library's: one shared CPU serves every visitor.
MAX_SIDE = 1024
MAX_LATENT = 64
MAX_IMAGES = 16
MAX_STEPS = 100
MAX_GUIDANCE = 10.0
MAX_ETA = 3.0
MAX_GUIDANCE_FROM = 5.0  # log-SNR; the sampling schedule spans about ±4.6
MAX_INPUT_SIDE = MAX_IMAGE_SIDE  # uploads larger than this per side are refused
ENCODE_SIDE = 128  # uploads are reduced to at most this per side before encoding: digits hold no finer detail
AUTO_LATENT_SIDE = 20  # automatic latent size: the pipeline's default, scaled down to at most this per side
# (20 keeps the CLI's latents for 3:5 and 5:3 digits up to 48×80, e.g. 12×20 at 24×40)
PREVIEW_SIDE = 96  # trajectory frames are decoded at this longer side
ALL_DIGITS = "all ten"
DIGIT_CHOICES = [ALL_DIGITS] + [str(d) for d in range(10)]
ASPECTS = ["free", "1:1", "3:4", "4:3", "3:5", "5:3", "9:16", "16:9"]  # width:height

_pipeline: Pipeline | None = None
_pipeline_lock = threading.Lock()


def checkpoint_folder() -> Path:
    return Path(os.environ.get("RIID_CHECKPOINT") or DEFAULT_CHECKPOINT)


def get_pipeline() -> Pipeline:
    """The pipeline, loaded once per process (never per request)."""
    global _pipeline
    with _pipeline_lock:
        if _pipeline is None:
            _pipeline = load_pipeline(checkpoint_folder())
        return _pipeline


def friendly_errors(fn):
    """Turn the library's ValueErrors (and resource failures) into messages shown in the page or API reply."""
    @functools.wraps(fn)  # keeps the signature: Gradio finds the gr.Progress parameter through it
    def wrapper(*args, **kwargs):
        try:
            with torch.inference_mode():
                return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ValueError as err:
            raise gr.Error(str(err), print_exception=False) from None
        except (MemoryError, RuntimeError) as err:
            raise gr.Error(f"the request could not be completed ({type(err).__name__}: {err}); "
                           "try a smaller size or fewer images") from None
    return wrapper


# --- parsing raw API values ---------------------------------------------------------------------------

def parse_digits(digit, n: int) -> list[int]:
    if isinstance(digit, str) and digit.strip().lower() in (ALL_DIGITS, "all"):
        return [d for d in range(10) for _ in range(n)]
    if isinstance(digit, str) and digit.strip().isdigit():
        digit = int(digit.strip())
    return [check_int("digit", digit, 0, 9)] * n


def parse_bool(name: str, value) -> bool:
    if isinstance(value, bool) or value is None:
        return bool(value)
    raise ValueError(f"{name} must be true or false, got {value!r}")


def auto_latent_size(pipe: Pipeline, height: int, width: int) -> tuple[int, int]:
    """The pipeline's default latent size (output / reduction, at least MIN_LATENT_SIDE on the shorter side), shrunk to
    AUTO_LATENT_SIDE on the longer side.

    Diffusion cost grows with the square of the latent tokens while the output size is free, so a large
    image is drawn on a small latent and read out at full size by the autoencoder.
    """
    lh, lw = pipe.default_latent_size(height, width)
    s = min(1.0, AUTO_LATENT_SIDE / max(lh, lw))
    return max(1, round(lh * s)), max(1, round(lw * s))


def parse_latent(auto, latent_h, latent_w):
    """None for automatic, else the checked (height, width)."""
    if parse_bool("auto latent size", auto):
        return None
    return (check_int("latent height", latent_h, 1, MAX_LATENT), check_int("latent width", latent_w, 1, MAX_LATENT))


def parse_seed(seed) -> int:
    if isinstance(seed, str) and seed.strip().isdigit():
        seed = int(seed.strip())
    return check_int("seed", seed, 0, MAX_SEED)


# --- pictures -----------------------------------------------------------------------------------------

def to_pil(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels, mode="L")


def image_grid(images: torch.Tensor, nrow: int) -> Image.Image:
    """One image is returned as it is (exactly H×W); several are tiled as the CLI's --grid tiles them."""
    if images.shape[0] == 1:
        return to_pil(to_uint8(images)[0])
    return to_pil(grid(images, nrow))


def latent_view(latent: torch.Tensor) -> Image.Image:
    """The channels of one latent [C, h, w], each normalised to its own range, tiled and enlarged (nearest)."""
    c, h, w = latent.shape
    lo = latent.amin(dim=(1, 2), keepdim=True)
    hi = latent.amax(dim=(1, 2), keepdim=True)
    norm = (latent - lo) / (hi - lo).clamp_min(1e-8) * 2 - 1  # [C, h, w] in [-1, 1]
    scale = max(1, 48 // max(h, w))
    big = norm.repeat_interleave(scale, 1).repeat_interleave(scale, 2)[:, None]  # [C, 1, h·s, w·s]
    return to_pil(grid(big, nrow=math.ceil(math.sqrt(c))))


def preview_size(height: int, width: int) -> tuple[int, int]:
    s = PREVIEW_SIDE / max(height, width)
    return max(1, round(height * s)), max(1, round(width * s))


# --- uploads ------------------------------------------------------------------------------------------

def open_upload(payload) -> Image.Image:
    """A PIL image from an uploaded file payload (a path, a FileData dict, or a data: URL)."""
    if isinstance(payload, dict):
        path, url = payload.get("path"), payload.get("url")
        if not path and isinstance(url, str) and url.startswith("data:"):
            payload = io.BytesIO(base64.b64decode(url.split(",", 1)[-1]))
        else:
            payload = path
    if not isinstance(payload, (str, Path, io.BytesIO)):
        raise ValueError("the upload must be an image file")
    try:
        image = Image.open(payload)
        width, height = image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise ValueError("the upload is not an image this app can read (PNG, JPEG, WebP, GIF, BMP, TIFF ...)") \
            from None
    if not (1 <= height <= MAX_INPUT_SIDE and 1 <= width <= MAX_INPUT_SIDE):
        raise ValueError(f"uploaded images must be 1 to {MAX_INPUT_SIDE} pixels per side, got {width}×{height}")
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"the upload is a damaged image ({err})") from None
    return ImageOps.exif_transpose(image)


def grayscale(image: Image.Image) -> np.ndarray:
    """Any PIL mode → float grayscale [H, W] in [0, 1]; transparency is laid on the colour that contrasts with the ink."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        x = np.asarray(image, dtype=np.float64)
        top = x.max() if x.size else 0.0
        return np.clip(x / (65535.0 if top > 255 else 255.0 if top > 1 else 1.0), 0.0, 1.0)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255.0  # [H, W, 4]
    gray = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])  # ITU-R 601 luma, as PIL's "L"
    alpha = rgba[..., 3]
    if not has_alpha or alpha.min() >= 1.0:
        return gray
    ink = alpha > 0.5
    if not ink.any():
        raise ValueError("the image is fully transparent: there is no digit to read")
    backdrop = 1.0 if gray[ink].mean() < 0.5 else 0.0  # dark strokes on white, light strokes on black
    return gray * alpha + backdrop * (1 - alpha)


def to_digit(gray: np.ndarray, frame: bool) -> np.ndarray:
    """Grayscale [H, W] in [0, 1] → MNIST polarity (white digit on black), optionally framed like MNIST.

    The background is the median of the border; if it is bright the image is inverted. Framing crops
    to the digit, pads it to a square and leaves a margin of 4/28 on every side, as MNIST does.
    """
    h, w = gray.shape
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 0.5:
        gray = 1.0 - gray
    background = float(np.median(np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])))
    top = float(gray.max())
    if top - background > 1e-3:
        gray = np.clip((gray - background) / (top - background), 0.0, 1.0)
    if frame and min(h, w) > 1:
        rows, cols = np.nonzero(gray > 0.1)
        if rows.size:
            crop = gray[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            ch, cw = crop.shape
            side = round(max(ch, cw) * 28 / 20)
            canvas = np.zeros((side, side))
            y, x = (side - ch) // 2, (side - cw) // 2
            canvas[y:y + ch, x:x + cw] = crop
            gray = canvas
    if max(gray.shape) > ENCODE_SIDE:
        s = ENCODE_SIDE / max(gray.shape)
        size = (max(1, round(gray.shape[1] * s)), max(1, round(gray.shape[0] * s)))
        gray = np.asarray(Image.fromarray(gray.astype(np.float32), mode="F").resize(size, Image.Resampling.BOX))
    return np.clip(gray, 0.0, 1.0)


def sketch_image(payload) -> Image.Image | None:
    """The composite of a raw Sketchpad payload, or None when nothing was drawn.

    The page uploads drawings as blobs held by the component, so the component's own preprocessing
    (otherwise skipped, see the module docstring) reads them.
    """
    if not payload:
        return None
    try:
        value = sketchpad.preprocess(EditorData.model_validate(payload))
    except (ValueError, TypeError, OSError) as err:
        raise ValueError(f"the drawing could not be read ({err})") from None
    composite = value.get("composite") if value else None
    if composite is None:
        return None
    lo, hi = composite.convert("L").getextrema()
    return None if hi - lo < 8 else composite


# --- the two model events ------------------------------------------------------------------------------

@friendly_errors
def generate(digit, height, width, auto_latent, latent_h, latent_w, guidance, guidance_from, steps, sampler, spacing,
             eta, seed, n_images, show_trajectory, show_latents, progress=gr.Progress()):
    """Digits at any size: a grid of every image (one image is returned exactly height×width),
    the optional x0 trajectory of the first image, the optional channels of its latent, and a summary."""
    started = time.perf_counter()
    height = check_int("output height", height, 1, MAX_SIDE)
    width = check_int("output width", width, 1, MAX_SIDE)
    latent = parse_latent(auto_latent, latent_h, latent_w)
    cfg = check_float("guidance", guidance, 0.0, MAX_GUIDANCE)
    cfg_from = check_float("guidance from log-SNR", guidance_from, -MAX_GUIDANCE_FROM, MAX_GUIDANCE_FROM)
    steps = check_int("steps", steps, 1, MAX_STEPS)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    eta = check_float("eta", eta, 0.0, MAX_ETA)
    n = check_int("number of images", n_images, 1, MAX_IMAGES)
    digits = parse_digits(digit, n)
    trajectory, latents_wanted = parse_bool("show trajectory", show_trajectory), parse_bool("show latents", show_latents)

    pipe = get_pipeline()
    latent = latent or auto_latent_size(pipe, height, width)
    s = pipe.settings(height, width, latent, steps, cfg, eta, sampler, parse_seed(seed), spacing, cfg_from)
    need = memory.check_memory(pipe, len(digits), s.height, s.width, s.latent_height, s.latent_width)

    every = max(1, math.ceil(s.steps / 8))
    frames = []

    def callback(i, x, x0):
        progress((i + 1) / s.steps, desc=f"sampling step {i + 1}/{s.steps}")
        if trajectory and (i % every == 0 or i == s.steps - 1):
            frames.append(x0[:1].clone())

    progress(0, desc="sampling")
    latents = pipe.sample_latents(digits, s, callback=callback)
    progress(1, desc="decoding")
    images = pipe.decode(latents, s.height, s.width)
    nrow = n if len(digits) > n else min(n, 10)  # all ten: one row per digit; else as `riid sample --grid`
    out = image_grid(images, nrow)

    trajectory_image = None
    if frames:
        frames_images = pipe.decode(torch.cat(frames), *preview_size(s.height, s.width))
        trajectory_image = to_pil(grid(frames_images, nrow=len(frames)))
    latent_image = latent_view(latents[0]) if latents_wanted else None
    summary = (f"{len(digits)} image(s) of {s.height}×{s.width} px from {s.latent_height}×{s.latent_width} latents, "
               f"{s.steps} {s.sampler} steps spaced in {s.spacing}, guidance {s.cfg:g} from log-SNR {s.cfg_from:g}, "
               f"seed {s.seed}: "
               f"{time.perf_counter() - started:.2f} s (memory estimate {need / 2**20:.0f} MiB)")
    return out, trajectory_image, latent_image, summary


@friendly_errors
def resample(upload, sketch, frame, auto_latent, latent_h, latent_w, height, width, progress=gr.Progress()):
    """Encode an uploaded or drawn digit and decode it at height×width; returns (model input, RIAE, bicubic, summary)."""
    height = check_int("output height", height, 1, MAX_SIDE)
    width = check_int("output width", width, 1, MAX_SIDE)
    latent = parse_latent(auto_latent, latent_h, latent_w)
    frame = parse_bool("frame like MNIST", frame)
    if upload:
        image = open_upload(upload)
    else:
        image = sketch_image(sketch)
        if image is None:
            raise ValueError("upload an image or draw a digit first")
    source = to_digit(grayscale(image), frame)  # [h, w] in [0, 1]
    pipe = get_pipeline()
    in_h, in_w = source.shape
    lh, lw = latent or pipe.autoencoder.default_latent_size(in_h, in_w)
    memory.check_memory(pipe, 1, height, width, lh, lw, input_size=(in_h, in_w))

    progress(0.1, desc="encoding")
    x = torch.from_numpy(source).float()[None, None] * 2 - 1  # [1, 1, h, w] in [-1, 1]
    z = pipe.autoencoder.encode(x, (lh, lw))
    progress(0.5, desc="decoding")
    decoded = pipe.decode(z, height, width)
    source_pil = to_pil(to_uint8(x)[0])
    bicubic = source_pil.resize((width, height), Image.Resampling.BICUBIC)
    summary = f"{in_h}×{in_w} input → {lh}×{lw} latent → {height}×{width} output"
    return source_pil, to_pil(to_uint8(decoded)[0]), bicubic, summary


# --- page helpers (not part of the API) ----------------------------------------------------------------

def width_for_aspect(height, aspect, width):
    if aspect == "free":
        return gr.update()
    a, b = (int(v) for v in aspect.split(":"))
    return min(MAX_SIDE, max(1, round(height * a / b)))


def latent_sliders(auto, height, width):
    if not auto:
        return gr.update(interactive=True), gr.update(interactive=True)
    try:
        lh, lw = auto_latent_size(get_pipeline(), int(height), int(width))
    except (ValueError, TypeError):
        return gr.update(interactive=False), gr.update(interactive=False)
    return gr.update(value=lh, interactive=False), gr.update(value=lw, interactive=False)


def warm_up(url: str) -> None:
    """One generation through the running server, so that no visitor pays Gradio's first-request set-up."""
    body = json.dumps({"data": ["0", 32, 32, True, 8, 8, DEFAULT_CFG, DEFAULT_CFG_FROM, 2, "dpmpp", DEFAULT_SPACING,
                                0.0, 0, 1, False, False]})
    request = urllib.request.Request(url + "gradio_api/call/generate", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            event = json.load(reply)["event_id"]
        with urllib.request.urlopen(f"{url}gradio_api/call/generate/{event}", timeout=300) as reply:
            reply.read()
    except OSError as err:  # serving matters more than warming up
        print(f"app.py: warm-up request failed ({err}); serving anyway")


# Small digits are shown enlarged with hard pixel edges: the browser scales the display, never the PNG.
CSS = ".pixelated img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }"

with gr.Blocks(title="riid: resolution-invariant digits", delete_cache=(600, 3600)) as demo:
    gr.Markdown("# riid: resolution-invariant image diffusion on MNIST\n"
                "One autoencoder and one diffuser, trained on 32×32 digits, generate at any size and aspect "
                "ratio. The latent size (where diffusion happens) and the output size (where the autoencoder "
                "reads the result) are independent.")
    with gr.Tab("Generate"):
        with gr.Row():
            with gr.Column(scale=1):
                digit = gr.Dropdown(DIGIT_CHOICES, value="3", label="digit")
                aspect = gr.Radio(ASPECTS, value="1:1", label="aspect ratio (width:height)")
                height = gr.Slider(1, MAX_SIDE, value=64, step=1, label="output height (px)", elem_id="height")
                width = gr.Slider(1, MAX_SIDE, value=64, step=1, label="output width (px)", elem_id="width")
                auto_latent = gr.Checkbox(value=True, label=f"automatic latent size (output / 4; shorter side at least "
                                                            f"{MIN_LATENT_SIDE}, longer at most {AUTO_LATENT_SIDE})")
                with gr.Row():
                    latent_h = gr.Slider(1, MAX_LATENT, value=16, step=1, label="latent height", interactive=False)
                    latent_w = gr.Slider(1, MAX_LATENT, value=16, step=1, label="latent width", interactive=False)
                guidance = gr.Slider(0, MAX_GUIDANCE, value=DEFAULT_CFG, step=0.05, label="guidance scale")
                guidance_from = gr.Slider(-MAX_GUIDANCE_FROM, MAX_GUIDANCE_FROM, value=DEFAULT_CFG_FROM, step=0.1,
                                          label="guidance from log-SNR",
                                          info="the noisier steps before it use the label alone: more varied, "
                                               "more realistic digits; -5 guides every step")
                steps = gr.Slider(1, MAX_STEPS, value=DEFAULT_STEPS, step=1, label="steps")
                with gr.Row():
                    sampler = gr.Radio(list(SAMPLERS), value="dpmpp", label="sampler")
                    spacing = gr.Radio(list(SPACINGS), value=DEFAULT_SPACING, label="step spacing",
                                       info="time: even in t; logsnr: even in log-SNR; blend: between the two")
                    eta = gr.Slider(0, MAX_ETA, value=0.0, step=0.1, label="eta (ddim only)")
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, minimum=0, label="seed")
                    n_images = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="number of images (per digit)",
                                         elem_id="n-images")
                with gr.Row():
                    show_trajectory = gr.Checkbox(value=False, label="show denoising trajectory")
                    show_latents = gr.Checkbox(value=False, label="show latent channels")
                run = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=2):
                result = gr.Image(label="images", type="pil", format="png", elem_id="result", height=420,
                                  elem_classes="pixelated")
                summary = gr.Markdown(elem_id="summary")
                trajectory_out = gr.Image(label="x0 estimate of the first image, every few steps", type="pil",
                                          format="png", elem_classes="pixelated")
                latents_out = gr.Image(label="latent channels of the first image (each normalised)", type="pil",
                                       format="png", elem_classes="pixelated")
        run.click(generate, [digit, height, width, auto_latent, latent_h, latent_w, guidance, guidance_from, steps,
                             sampler, spacing, eta, seed, n_images, show_trajectory, show_latents],
                  [result, trajectory_out, latents_out, summary], api_name="generate", preprocess=False,
                  concurrency_id="model")
        for trigger in (height.change, aspect.change):
            trigger(width_for_aspect, [height, aspect, width], width, api_visibility="private", queue=False)
        width.release(lambda: "free", None, aspect, api_visibility="private", queue=False)  # a hand-set width
        for trigger in (auto_latent.change, height.change, width.change):
            trigger(latent_sliders, [auto_latent, height, width], [latent_h, latent_w],
                    api_visibility="private", queue=False)

    with gr.Tab("Resample"):
        gr.Markdown("Upload or draw a digit. The autoencoder encodes it to a latent of the chosen size and "
                    "decodes it at any output size: compare with bicubic resizing of the same input.")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.Image(type="filepath", image_mode=None, label="upload a digit",
                                  sources=["upload", "clipboard"])
                sketchpad = gr.Sketchpad(type="pil", image_mode="L", canvas_size=(224, 224), label="or draw one",
                                      brush=gr.Brush(default_size=10, colors=["#000000"], color_mode="fixed"))
                frame = gr.Checkbox(value=True, label="frame like MNIST (crop, centre, 4/28 margin)")
                r_auto = gr.Checkbox(value=True, label="automatic latent size (input / 4)")
                with gr.Row():
                    r_latent_h = gr.Slider(1, MAX_LATENT, value=8, step=1, label="latent height")
                    r_latent_w = gr.Slider(1, MAX_LATENT, value=8, step=1, label="latent width")
                r_height = gr.Slider(1, MAX_SIDE, value=128, step=1, label="output height (px)")
                r_width = gr.Slider(1, MAX_SIDE, value=128, step=1, label="output width (px)")
                r_run = gr.Button("Resample", variant="primary", elem_id="resample")
            with gr.Column(scale=2):
                with gr.Row():
                    r_source = gr.Image(label="model input", type="pil", format="png", elem_classes="pixelated")
                    r_riae = gr.Image(label="RIAE decode", type="pil", format="png", elem_classes="pixelated")
                    r_bicubic = gr.Image(label="bicubic", type="pil", format="png", elem_classes="pixelated")
                r_summary = gr.Markdown()
        r_run.click(resample, [upload, sketchpad, frame, r_auto, r_latent_h, r_latent_w, r_height, r_width],
                    [r_source, r_riae, r_bicubic, r_summary], api_name="resample", preprocess=False,
                    concurrency_id="model")

# One model request at a time (both tabs share the "model" slot): memory stays bounded, others wait in line.
demo.queue(default_concurrency_limit=1, max_size=64)


if __name__ == "__main__":
    try:
        with torch.inference_mode():  # load and warm up before serving: a bad folder fails now, not per visitor
            get_pipeline().generate([0], 8, 8, steps=2)
    except ValueError as err:
        raise SystemExit(f"app.py: cannot load the pipeline from {checkpoint_folder()}: {err}\n"
                         "set RIID_CHECKPOINT to a pipeline folder (autoencoder/, diffuser/, conditioner/)")
    demo.launch(css=CSS, prevent_thread_lock=True)
    warm_up(demo.local_url)
    demo.block_thread()
