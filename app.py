"""riid in the browser: generate digits at any size and aspect ratio, and resample drawn or uploaded digits.

Run ``python app.py`` (also the Hugging Face Spaces entry point). Settings, all optional:

- $RIID_CHECKPOINTS: the pipeline folder (default: the shipped weights, see riid.pipeline.default_checkpoint);
- $RIID_APP_TIME_LIMIT_S: the most seconds one request may take (default 60): longer ones are refused
  before they start (riid.cost estimates them) and stopped if they run past it anyway;
- $RIID_MEMORY_BUDGET_GB: the memory one request may use (riid.cost, default 4); larger requests run in batches;
- $GRADIO_SERVER_NAME and $GRADIO_SERVER_PORT: the address (Gradio reads them).

Every rule (defaults, limits, the latent size of an output, costs) comes from the library; the app only passes
its tighter ``APP_LIMITS``. Every value is checked on the server, since the HTTP API can be called without the
page: the model events take their inputs raw (``preprocess=False``), so that a bad value of any type reaches
:mod:`riid.validate` and comes back as one line naming the allowed range.

One CPU serves every visitor, so requests run in two lanes of one request each: quick ones (estimated under
``QUICK_S``) never wait behind a long one, and the Stop button ends a running request at its next step.
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import io
import json
import math
import os
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from gradio.components.image_editor import EditorData
from gradio.processing_utils import save_bytes_to_cache
from gradio.utils import get_upload_folder
from PIL import Image, ImageOps

from riid import cost
from riid.autoencoder import fitted_size
from riid.coords import dual_coords
from riid.data import canvas
from riid.images import grid, resize, to_uint8
from riid.pipeline import DEFAULTS as LIBRARY_DEFAULTS
from riid.pipeline import (LATENT_SHORT_SIDE, Pipeline, Settings, default_checkpoint, default_latent_size,
                           load_pipeline)
from riid.samplers import SAMPLERS
from riid.schedule import SPACINGS
from riid.validate import LIMITS, check_int

# The app's limits: one shared CPU serves every visitor.
APP_LIMITS = dataclasses.replace(LIMITS, side=1024, latent_side=64, images=16, steps=100, cfg=10.0, eta=3.0,
                                 cfg_from=5.0)
TIME_LIMIT_ENV = "RIID_APP_TIME_LIMIT_S"
DEFAULT_TIME_LIMIT_S = 60.0
QUICK_S = 10.0  # estimated seconds up to which a request takes the quick lane (all ten digits at 32 px do)
UPLOAD_SIZE_LIMIT = "20mb"  # Gradio refuses larger files before they reach the app
ENCODE_SIDE = 128  # uploads are reduced to at most this per side before encoding: digits hold no finer detail
PREVIEW_SIDE = 96  # trajectory frames are decoded at this longer side
ALL_DIGITS = "all ten"
DIGIT_CHOICES = [str(d) for d in range(10)] + [ALL_DIGITS]
ASPECTS = ["1:1", "3:4", "4:3", "3:5", "5:3", "9:16", "16:9", "1:3", "3:1", "free"]  # height:width, as the README

# The examples, shown on the page and computed once at start (the first is what a visitor sees first):
# digit, height, width, images, seed; the rest of a request is the library's defaults.
EXAMPLES = [("3", 32, 32, 4, 0), (ALL_DIGITS, 32, 32, 1, 1), ("7", 32, 96, 1, 2), ("2", 96, 32, 1, 3),
            ("5", 48, 80, 1, 4), ("8", 128, 128, 1, 5)]
FIRST = EXAMPLES[0]

_pipeline: Pipeline | None = None
_pipeline_lock = threading.Lock()


def get_pipeline() -> Pipeline:
    """The pipeline, loaded once per process (never per request)."""
    global _pipeline
    with _pipeline_lock:
        if _pipeline is None:
            _pipeline = load_pipeline()
        return _pipeline


def time_limit_s() -> float:
    """$RIID_APP_TIME_LIMIT_S, else 60 s (checked at start, so a visitor never meets a bad value)."""
    raw = os.environ.get(TIME_LIMIT_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_TIME_LIMIT_S
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"${TIME_LIMIT_ENV} must be a positive number of seconds, got {raw!r}")
    return value


class Stopped(Exception):
    """A request ended by the Stop button."""


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def friendly_errors(fn):
    """Every failure becomes one line in the page or the API reply, never a traceback or ``{"error": null}``."""
    @functools.wraps(fn)  # keeps the signature: Gradio finds the gr.Request and gr.Progress parameters through it
    def wrapper(*args, **kwargs):
        try:
            with torch.inference_mode():
                return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Stopped:
            raise gr.Error("stopped", print_exception=False) from None
        except ValueError as err:
            raise gr.Error(one_line(err), print_exception=False) from None
        except (MemoryError, RuntimeError) as err:
            raise gr.Error(f"the request could not be completed ({type(err).__name__}: {one_line(err, 160)}); "
                           "try a smaller size or fewer images", print_exception=False) from None
        except Exception as err:  # a value of a type the checks did not foresee (API callers send anything)
            print(f"app.py: {fn.__name__} failed: {type(err).__name__}: {one_line(err, 160)}", flush=True)
            raise gr.Error(f"the request could not be read ({type(err).__name__}: {one_line(err, 160)})",
                           print_exception=False) from None
    return wrapper


# --- scheduling: two lanes, and the Stop button ------------------------------------------------------------

class Lane:
    """One request at a time, first come first served; a request that is stopped while waiting leaves the line."""

    def __init__(self, name: str, capacity: int):
        self.name, self.capacity = name, capacity
        self._line: list[threading.Event] = []  # each request's stop event, in order of arrival
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def turn(self, stop: threading.Event, waiting=lambda ahead: None):
        with self._changed:
            if len(self._line) >= self.capacity:
                raise ValueError(f"the app is busy with {len(self._line)} {self.name} requests; "
                                 "try again in a minute" + (" or ask for less" if self.name == "long" else ""))
            self._line.append(stop)
            try:
                while self._line[0] is not stop:
                    if stop.is_set():
                        raise Stopped
                    waiting(self._line.index(stop))
                    self._changed.wait(0.25)
            except BaseException:
                self._line.remove(stop)
                self._changed.notify_all()
                raise
        try:
            yield
        finally:
            with self._changed:
                self._line.remove(stop)
                self._changed.notify_all()


QUICK_LANE, LONG_LANE = Lane("quick", 32), Lane("long", 4)


class StopButtons:
    """The stop events of each browser session's running requests: the Stop button sets them."""

    def __init__(self):
        self._lock = threading.Lock()
        self._running: dict[str, set[threading.Event]] = {}

    @contextlib.contextmanager
    def watch(self, request: gr.Request | None):
        session, stop = getattr(request, "session_hash", None) or "", threading.Event()
        with self._lock:
            self._running.setdefault(session, set()).add(stop)
        try:
            yield stop
        finally:
            with self._lock:
                self._running[session].discard(stop)
                if not self._running[session]:
                    del self._running[session]

    def stop(self, request: gr.Request | None) -> int:
        with self._lock:
            events = self._running.get(getattr(request, "session_hash", None) or "", set())
            for event in events:
                event.set()
            return len(events)


STOPS = StopButtons()


def stop_requests(request: gr.Request = None) -> str:
    """The Stop button (and the ``/stop`` API endpoint): end this session's requests at their next step."""
    return "Stopped." if STOPS.stop(request) else "Nothing was running."


@contextlib.contextmanager
def scheduled(estimate: float, request: gr.Request | None, progress):
    """Wait for the request's lane, then run it; yields its stop event."""
    lane = QUICK_LANE if estimate <= QUICK_S else LONG_LANE
    with STOPS.watch(request) as stop:
        with lane.turn(stop, lambda ahead: progress(0, desc=f"waiting: {ahead} {lane.name} request(s) ahead")):
            yield stop


def check_cost(pipe: Pipeline, s, n: int, per_digit: int = 1, input_size=None) -> float:
    """Estimated seconds of n images with settings s; refuses what does not fit in memory or in the time limit,
    naming the nearest settings that do."""
    cost.images_per_batch(pipe, s, input_size=input_size)  # refuses if not even one image fits the budget
    limit = time_limit_s()
    try:
        return cost.check_time(pipe, n, s, limit, input_size)
    except ValueError as err:
        if input_size is not None:
            raise
        digits = n // per_digit
        fit_n = max((k for k in range(1, per_digit) if cost.seconds(pipe, k * digits, s) <= limit), default=0)
        fit_steps = max((k for k in range(1, s.steps)
                         if cost.seconds(pipe, n, dataclasses.replace(s, steps=k)) <= limit), default=0)
        fits = [f"{fit_n} image(s)" if fit_n else "", f"{fit_steps} steps" if fit_steps else ""]
        fits = " or ".join(filter(None, fits))
        raise ValueError(f"{err}{f' (at most {fits} fit these settings)' if fits else ''}") from None


# --- parsing raw API values ----------------------------------------------------------------------------------

def parse_digits(digit, n: int) -> list[int]:
    if isinstance(digit, str) and digit.strip().lower() in (ALL_DIGITS, "all"):
        digits = [d for d in range(10) for _ in range(n)]
        check_int(f"{ALL_DIGITS} × number of images", len(digits), 1, APP_LIMITS.images)
        return digits
    if isinstance(digit, str) and digit.strip().isdigit():
        digit = int(digit.strip())
    return [check_int("digit", digit, 0, 9)] * n


def parse_bool(name: str, value) -> bool:
    if isinstance(value, bool) or value is None:
        return bool(value)
    raise ValueError(f"{name} must be true or false, got {value!r}")


def parse_side(name: str, value) -> int:
    """A side as typed: an emptied box is an error, never a silent 1."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{name} is empty: enter a whole number from 1 to {APP_LIMITS.side}")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    return check_int(name, value, 1, APP_LIMITS.side)


def parse_latent(auto, latent_h, latent_w):
    """None for the automatic latent (the pipeline's rule), else the (height, width) given."""
    return None if parse_bool("automatic latent size", auto) else (latent_h, latent_w)


def parse_seed(seed) -> int:
    if isinstance(seed, str) and seed.strip().isdigit():
        seed = int(seed.strip())
    return check_int("seed", seed, 0, APP_LIMITS.seed)


# --- pictures ----------------------------------------------------------------------------------------------

def to_pil(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels, mode="L")


def latent_view(latent: torch.Tensor) -> Image.Image:
    """The channels of one latent [C, h, w], each normalised to its own range, tiled and enlarged (nearest)."""
    c, h, w = latent.shape
    lo = latent.amin(dim=(1, 2), keepdim=True)
    hi = latent.amax(dim=(1, 2), keepdim=True)
    norm = (latent - lo) / (hi - lo).clamp_min(1e-8) * 2 - 1  # [C, h, w] in [-1, 1]
    scale = max(1, 48 // max(h, w))
    big = norm.repeat_interleave(scale, 1).repeat_interleave(scale, 2)[:, None]  # [C, 1, h·s, w·s]
    return to_pil(grid(big, nrow=math.ceil(math.sqrt(c))))


def animation(frames: torch.Tensor) -> str:
    """Frames [F, 1, h, w] in [-1, 1] as a looping GIF in Gradio's cache (removed with it); returns its path."""
    pictures = [to_pil(p) for p in to_uint8(frames)]
    buffer = io.BytesIO()
    pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:], loop=0,
                     duration=[250] * (len(pictures) - 1) + [1500])
    return save_bytes_to_cache(buffer.getvalue(), "trajectory.gif", get_upload_folder())


def preview_size(height: int, width: int) -> tuple[int, int]:
    s = PREVIEW_SIDE / max(height, width)
    return max(1, round(height * s)), max(1, round(width * s))


def coordinate_figure() -> str:
    """An SVG of the coordinate idea, drawn with riid.coords: an 8×8 pixel grid and a 3×3 latent grid place their
    samples at the cell centres of one square, and a 3:5 image keeps the frame of its longer side."""
    def dots(height, width, radius, style, left):
        relative = dual_coords(height, width)[0, :, :2].tolist()  # (y, x) of every cell centre, longer side in ±½
        return "".join(f'<circle cx="{left + 90 + 160 * x:.1f}" cy="{90 + 160 * y:.1f}" r="{radius}" {style}/>'
                       for y, x in relative)

    def square(left):
        return (f'<rect x="{left + 10}" y="10" width="160" height="160" fill="none" stroke="#888" '
                'stroke-dasharray="4 3"/>')

    return ('<svg viewBox="0 0 380 200" width="380" xmlns="http://www.w3.org/2000/svg" font-size="11" '
            'font-family="sans-serif">'
            + square(0) + dots(8, 8, 2.5, 'fill="#999"', 0)
            + dots(3, 3, 7, 'fill="none" stroke="#d33" stroke-width="2"', 0)
            + square(200) + '<rect x="210" y="42" width="160" height="96" fill="#eef"/>'  # 3:5 spans ±0.3 across
            + dots(6, 10, 2.5, 'fill="#35a"', 200)
            + '<text x="10" y="190">8×8 pixels and a 3×3 latent, one square</text>'
            + '<text x="215" y="190">a 3:5 image, nothing stretched</text></svg>')


# --- uploads -------------------------------------------------------------------------------------------------

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
    too_large = f"the upload is too large: images up to {LIMITS.side}×{LIMITS.side} pixels can be resampled"
    try:
        image = Image.open(payload)
        width, height = image.size
    except Image.DecompressionBombError:
        raise ValueError(too_large) from None
    except (OSError, SyntaxError, ValueError):
        raise ValueError("the upload is not an image this app can read (PNG, JPEG, WebP, GIF, BMP, TIFF ...)") \
            from None
    if max(width, height) > LIMITS.side:
        raise ValueError(f"{too_large}, got {width}×{height}")
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"the upload is a damaged image ({one_line(err, 100)})") from None
    return ImageOps.exif_transpose(image)


def grayscale(image: Image.Image) -> np.ndarray:
    """Any PIL mode → float grayscale [H, W] in [0, 1]; transparency is laid on the colour that contrasts with the
    ink."""
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
            framed = np.zeros((side, side))
            y, x = (side - ch) // 2, (side - cw) // 2
            framed[y:y + ch, x:x + cw] = crop
            gray = framed
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
        raise ValueError(f"the drawing could not be read ({one_line(err, 100)})") from None
    composite = value.get("composite") if value else None
    if composite is None:
        return None
    lo, hi = composite.convert("L").getextrema()
    return None if hi - lo < 8 else composite


# --- the model events ----------------------------------------------------------------------------------------

def parse_request(pipe: Pipeline, digit, height, width, guidance, steps, seed, n_images, auto_latent, latent_h,
                  latent_w, guidance_from, sampler, spacing, eta, show_trajectory, show_latents):
    """The raw inputs of ``generate`` checked: (digits, Settings, show trajectory, show latents)."""
    digits = parse_digits(digit, check_int("number of images", n_images, 1, APP_LIMITS.images))
    s = pipe.settings(parse_side("output height", height), parse_side("output width", width),
                      latent_size=parse_latent(auto_latent, latent_h, latent_w), limits=APP_LIMITS, steps=steps,
                      cfg=guidance, cfg_from=guidance_from, sampler=sampler, spacing=spacing, eta=eta,
                      seed=parse_seed(seed))
    return tuple(digits), s, parse_bool("show trajectory", show_trajectory), parse_bool("show latents", show_latents)


EXAMPLE_RESULTS: dict = {}  # parse_request(example) → outputs, filled at start by cache_examples


@friendly_errors
def generate(digit, height, width, guidance, steps, seed, n_images, auto_latent, latent_h, latent_w, guidance_from,
             sampler, spacing, eta, show_trajectory, show_latents, request: gr.Request = None,
             progress=gr.Progress()):
    """Digits at any size: a gallery of every image (each exactly height×width), the optional animation of the
    first image's clean-image estimate while it is denoised, the optional channels of its latent, and a summary."""
    started = time.perf_counter()
    pipe = get_pipeline()
    key = parse_request(pipe, digit, height, width, guidance, steps, seed, n_images, auto_latent, latent_h, latent_w,
                        guidance_from, sampler, spacing, eta, show_trajectory, show_latents)
    if key in EXAMPLE_RESULTS:
        return EXAMPLE_RESULTS[key]
    digits, s, trajectory, latents_wanted = key
    estimate = check_cost(pipe, s, len(digits), len(digits) // len(set(digits)))

    total = len(pipe.batch_sizes(len(digits), s)) * s.steps
    every = max(1, math.ceil(s.steps / 12))
    frames, first = [], {}
    with scheduled(estimate, request, progress) as stop:
        limit, began = time_limit_s(), time.monotonic()

        def callback(i, x, x0):
            if stop.is_set():
                raise Stopped
            if time.monotonic() - began > limit:
                raise ValueError(f"stopped at the time limit of {limit:g} s: ask for fewer images, fewer steps "
                                 "or a smaller output")
            progress((i + 1) / total, desc=f"sampling step {i + 1}/{total}")
            if i < s.steps:  # the first batch holds the first image
                if trajectory and (i % every == 0 or i == s.steps - 1):
                    frames.append(x0[:1].clone())
                first["latent"] = x[:1]

        progress(0, desc="sampling")
        images = pipe.generate(digits, s, callback=callback)
        progress(1, desc="decoding")
        animated = animation(pipe.decode(torch.cat(frames), *preview_size(s.height, s.width))) if frames else None

    gallery = [(to_pil(p), f"{d} · #{i + 1}") for i, (d, p) in enumerate(zip(digits, to_uint8(images)))]
    summary = (f"{len(digits)} image(s) of {s.height}×{s.width} px (height×width) from "
               f"{s.latent_height}×{s.latent_width} latents, {s.steps} {s.sampler} steps, guidance {s.cfg:g} "
               f"from log-SNR {s.cfg_from:g}, seed {s.seed}: {time.perf_counter() - started:.2f} s "
               f"(estimated {estimate:.1f} s)")
    return gallery, animated, latent_view(first["latent"][0]) if latents_wanted else None, summary


def reveal(gallery, trajectory, latents):
    """After a generation: as many gallery columns as images (up to 5), and the animation and the latent channels
    shown only when there are some, so that nothing empty takes room."""
    return (gr.update(columns=max(1, min(len(gallery or []), 5))), gr.update(visible=trajectory is not None),
            gr.update(visible=latents is not None))


def example_shown(chosen):
    """An example's aspect choice and layout, set when it is clicked (its results come from the cache)."""
    digit, height, width, n, _ = EXAMPLES[chosen[0]]
    return (aspect_name(height, width), *reveal([None] * len(parse_digits(digit, n)), None, None))


def cache_examples() -> None:
    """Compute the examples once (the first is the page a visitor lands on); also loads and warms the pipeline."""
    for row in EXAMPLES:
        inputs = example_inputs(*row)
        outputs = generate(*inputs)
        EXAMPLE_RESULTS[parse_request(get_pipeline(), *inputs)] = outputs


def example_inputs(digit, height, width, n, seed) -> list:
    """The values of every input of ``generate`` for an example: the library's defaults for the rest."""
    return [digit, height, width, DEFAULTS.cfg, DEFAULTS.steps, seed, n, True,
            *default_latent_size(height, width, APP_LIMITS), DEFAULTS.cfg_from, DEFAULTS.sampler, DEFAULTS.spacing,
            DEFAULTS.eta, False, False]


@friendly_errors
def resample(upload, sketch, frame, auto_latent, latent_h, latent_w, height, width, request: gr.Request = None,
             progress=gr.Progress()):
    """Encode an uploaded or drawn digit and decode it at height×width, beside bicubic resizing of the same input
    (both unstretched, centred on a background canvas when the aspect ratio differs); returns (model input,
    RIAE decode, bicubic, summary, latent height, latent width)."""
    pipe = get_pipeline()
    height, width = parse_side("output height", height), parse_side("output width", width)
    latent = parse_latent(auto_latent, latent_h, latent_w)
    frame = parse_bool("frame like MNIST", frame)
    if upload:
        image = open_upload(upload)
    else:
        image = sketch_image(sketch)
        if image is None:
            raise ValueError("upload an image or draw a digit first")
    source = to_digit(grayscale(image), frame)  # [h, w] in [0, 1]
    in_h, in_w = source.shape
    s = pipe.settings(height, width, latent_size=latent or default_latent_size(in_h, in_w, APP_LIMITS),
                      limits=APP_LIMITS)
    estimate = check_cost(pipe, s, 1, input_size=(in_h, in_w))

    x = torch.from_numpy(source).float()[None, None] * 2 - 1  # [1, 1, h, w] in [-1, 1]
    with scheduled(estimate, request, progress) as stop:
        progress(0.1, desc="encoding")
        z = pipe.autoencoder.encode(x, (s.latent_height, s.latent_width))
        if stop.is_set():
            raise Stopped
        progress(0.5, desc="decoding")
        decoded = pipe.decode(z, height, width)
    bicubic = canvas(resize(x, *fitted_size((in_h, in_w), (height, width))), height, width)
    summary = f"{in_h}×{in_w} input → {s.latent_height}×{s.latent_width} latent → {height}×{width} output"
    return (to_pil(to_uint8(x)[0]), to_pil(to_uint8(decoded)[0]), to_pil(to_uint8(bicubic)[0]), summary,
            s.latent_height, s.latent_width)


# --- page helpers (not part of the API) ------------------------------------------------------------------------

def whole_side(value):
    """A typed side as a whole number in [1, side limit]; an emptied box stays empty (generate then says so)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return gr.update()
    return min(APP_LIMITS.side, max(1, round(value)))


def locked_size(edited: str, height, width, aspect):
    """Height and width after the user edits one of them or the aspect: whole numbers in [1, side limit], the other
    side following the aspect (height:width); where it would pass the limit, both shrink with the aspect kept."""
    cap = APP_LIMITS.side
    value = whole_side(height if edited == "height" else width)
    if not isinstance(value, int):
        return gr.update(), gr.update()
    if aspect not in ASPECTS or aspect == "free":
        return (value, gr.update()) if edited == "height" else (gr.update(), value)
    a, b = (int(v) for v in aspect.split(":"))
    h, w = (value, value * b / a) if edited == "height" else (value * a / b, value)
    scale = min(1.0, cap / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def aspect_name(height: int, width: int) -> str:
    """The aspect choice (height:width) of an exact size, else "free"."""
    for name in ASPECTS[:-1]:
        a, b = (int(v) for v in name.split(":"))
        if height * b == width * a:
            return name
    return "free"


def latent_sliders(auto, height, width):
    """With the automatic latent the sliders are read-only and show the pipeline's latent for the output size."""
    if not auto:
        return gr.update(interactive=True), gr.update(interactive=True)
    try:
        lh, lw = default_latent_size(height, width, APP_LIMITS)
    except (ValueError, TypeError):
        return gr.update(interactive=False), gr.update(interactive=False)
    return gr.update(value=lh, interactive=False), gr.update(value=lw, interactive=False)


# Small digits are shown enlarged with hard pixel edges: the browser scales the display, never the PNG.
CSS = """
#gallery img, .pixelated img { image-rendering: pixelated; }
.pixelated img { width: 100%; height: 100%; object-fit: contain; }
"""
# Clicks the sketchpad's brush once the tab has rendered it (retrying for up to two seconds).
SELECT_BRUSH = """() => { let tries = 0; const pick = () => {
    const brush = document.querySelector('#sketch button[aria-label="Brush"]');
    if (brush) brush.click(); else if (tries++ < 40) setTimeout(pick, 50); }; pick(); }"""
HOW_IT_WORKS = """
**How it works.** An image is treated as samples of a continuous function, and every pixel as a token: its value
plus *where* it sits, at the centre of its cell. Two frames are used side by side: *relative* (the longer side spans
[−½, ½], so nothing stretches with the aspect ratio) and *absolute* (both sides span [−½, ½], so the borders are
known). Grids of any size then cover the same square and interleave.

- **RIAE**, the autoencoder: latent queries read the image's pixels; pixel queries read the latent. The latent and
  the output can have any size.
- **R2ID**, the diffuser: a transformer that denoises a latent of any size, guided by the digit's label.
- A request diffuses a latent with 12 tokens across the output's shorter side, at the output's aspect ratio up to
  5:3 (a wider output gets the digit unstretched on a wider canvas), and the autoencoder reads it out at exactly the
  size asked for, 1 to 1024 pixels per side.

Both models were trained only on 32×32 MNIST digits, on a CPU. The source, the tests and the measured figures are in
the repository's README.
"""
REPORT = Path(__file__).resolve().parent / "results" / "eval" / "report.json"  # `riid eval` of the shipped weights


def evaluation_summary(path: Path = REPORT) -> str:
    """The shipped weights' `riid eval` figures at 32×32 px, for the How it works tab ('' without a report)."""
    try:
        report = json.loads(path.read_text())
        r = next(r for r in report["sizes"] if (r["height"], r["width"]) == (32, 32))
        recon = report["autoencoder"]["reconstruction"]["32"]
        n = report["settings"]["n_per_class"]
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return ""
    return (f"**Measured** on the shipped weights (`riid eval`, {n} samples per digit at 32×32 px): "
            f"{r['accuracy']:.0%} are read as the digit asked for; realism, the Fréchet distance of a network "
            f"trained on clean digits, is {r['fd_ratio']:.1f}× the real-versus-real floor (a 1 px blur of real "
            f"digits scores over 20×); variety is {r['variety_ratio']:.2f}× that of real digits. The autoencoder's "
            f"reconstructions score {recon['fd_ratio']:.1f}×.")


def shown_defaults() -> Settings:
    """The sampling settings the page shows: the checkpoint's own, else (a folder that does not load, which main()
    then refuses in one line) the library's."""
    try:
        return get_pipeline().defaults
    except ValueError:
        return LIBRARY_DEFAULTS


DEFAULTS = shown_defaults()

with gr.Blocks(title="riid: resolution-invariant digits", delete_cache=(600, 3600)) as demo:
    gr.Markdown("## riid: handwritten digits at any size and aspect ratio, from one model trained on 32×32 MNIST")
    with gr.Tab("Generate"):
        with gr.Row():
            with gr.Column(scale=2, min_width=360):
                digit = gr.Dropdown(DIGIT_CHOICES, value=FIRST[0], label="digit")
                aspect = gr.Radio(ASPECTS, value="1:1", label="aspect ratio (height:width)", elem_id="aspect")
                with gr.Row():
                    height = gr.Number(FIRST[1], precision=0, elem_id="height",
                                       label=f"height (px, up to {APP_LIMITS.side})")
                    width = gr.Number(FIRST[2], precision=0, elem_id="width",
                                      label=f"width (px, up to {APP_LIMITS.side})")
                with gr.Row():
                    guidance = gr.Slider(0, APP_LIMITS.cfg, value=DEFAULTS.cfg, step=0.05, label="guidance (cfg)",
                                         elem_id="guidance")
                    steps = gr.Slider(1, APP_LIMITS.steps, value=DEFAULTS.steps, step=1, label="steps",
                                      elem_id="steps")
                with gr.Row(equal_height=True):
                    seed = gr.Number(FIRST[4], precision=0, label="seed", elem_id="seed", scale=2, min_width=90)
                    dice = gr.Button("new seed", elem_id="new-seed", scale=1, min_width=80)
                    n_images = gr.Slider(1, APP_LIMITS.images, value=FIRST[3], step=1, label="images",
                                         elem_id="n-images", scale=4, min_width=160)
                with gr.Row():
                    run = gr.Button("Generate", variant="primary", elem_id="generate", scale=3)
                    stop = gr.Button("Stop", variant="stop", elem_id="stop", scale=1)
                with gr.Accordion("Advanced", open=False):
                    auto_latent = gr.Checkbox(value=True, label="automatic latent size (12 across the shorter side, "
                                                                "the output's aspect ratio)")
                    with gr.Row():
                        latent_h = gr.Slider(1, APP_LIMITS.latent_side, value=DEFAULTS.latent_height, step=1,
                                             label="latent height", interactive=False, elem_id="latent-h")
                        latent_w = gr.Slider(1, APP_LIMITS.latent_side, value=DEFAULTS.latent_width, step=1,
                                             label="latent width", interactive=False, elem_id="latent-w")
                    guidance_from = gr.Slider(-APP_LIMITS.cfg_from, APP_LIMITS.cfg_from, value=DEFAULTS.cfg_from,
                                              step=0.1, label="guidance from log-SNR (cfg_from)",
                                              info="noisier steps use the label alone: more varied digits; "
                                                   f"stated for a {LATENT_SHORT_SIDE}×{LATENT_SHORT_SIDE} latent, "
                                                   "larger ones start later; "
                                                   f"-{APP_LIMITS.cfg_from:g} guides every step")
                    with gr.Row():
                        sampler = gr.Radio(list(SAMPLERS), value=DEFAULTS.sampler, label="sampler")
                        spacing = gr.Radio(list(SPACINGS), value=DEFAULTS.spacing, label="step spacing",
                                           info="time: even in t; logsnr: even in log-SNR")
                        eta = gr.Slider(0, APP_LIMITS.eta, value=DEFAULTS.eta, step=0.1, label="eta (ddim only)")
                    with gr.Row():
                        show_trajectory = gr.Checkbox(value=False, label="animate the denoising",
                                                      elem_id="show-trajectory")
                        show_latents = gr.Checkbox(value=False, label="show the latent channels",
                                                   elem_id="show-latents")
            with gr.Column(scale=3):
                gallery = gr.Gallery(label="images (click one to zoom; download from the preview)", format="png",
                                     columns=4, height=440, object_fit="contain", elem_id="gallery",
                                     buttons=["download", "fullscreen"], interactive=False)
                summary = gr.Markdown(elem_id="summary")
                with gr.Row():
                    trajectory_out = gr.Image(label="the first image's clean-image estimate while it is denoised",
                                              type="filepath", visible=False, height=240, elem_id="trajectory",
                                              elem_classes="pixelated", interactive=False)
                    latents_out = gr.Image(label="the first image's latent channels (each normalised)", type="pil",
                                           format="png", visible=False, height=240, elem_id="latents",
                                           elem_classes="pixelated", interactive=False)
        generate_inputs = [digit, height, width, guidance, steps, seed, n_images, auto_latent, latent_h, latent_w,
                           guidance_from, sampler, spacing, eta, show_trajectory, show_latents]
        generate_outputs = [gallery, trajectory_out, latents_out, summary]
        generating = run.click(generate, generate_inputs, generate_outputs, api_name="generate", preprocess=False,
                               concurrency_limit=None)
        generating.success(reveal, [gallery, trajectory_out, latents_out], [gallery, trajectory_out, latents_out],
                           preprocess=False, api_visibility="private", queue=False)
        # after the events above, which own the API names
        examples = gr.Examples([example_inputs(*row) for row in EXAMPLES], generate_inputs, generate_outputs,
                               fn=generate, cache_examples=False, run_on_click=True, elem_id="examples",
                               example_labels=[f"{d if d == ALL_DIGITS else 'digit ' + d} · {h}×{w} · {n} image(s)"
                                               for d, h, w, n, _ in EXAMPLES])
        examples.dataset.click(example_shown, examples.dataset, [aspect, gallery, trajectory_out, latents_out],
                               api_visibility="private", queue=False)
        dice.click(None, None, seed, js="() => Math.floor(Math.random() * 1e9)", queue=False)
        for box, edited in ((height, "height"), (width, "width"), (aspect, "height")):
            box.input(  # the user's edits only: the sizes this writes back do not trigger it again
                functools.partial(locked_size, edited), [height, width, aspect], [height, width],
                api_visibility="private", queue=False).then(
                latent_sliders, [auto_latent, height, width], [latent_h, latent_w], api_visibility="private",
                queue=False)
        auto_latent.change(latent_sliders, [auto_latent, height, width], [latent_h, latent_w],
                           api_visibility="private", queue=False)
        demo.load(generate, generate_inputs, generate_outputs, preprocess=False, api_visibility="private",
                  concurrency_limit=None).success(  # the first example: cached, so the page opens with results
            reveal, [gallery, trajectory_out, latents_out], [gallery, trajectory_out, latents_out], preprocess=False,
            api_visibility="private", queue=False)

    with gr.Tab("Resample") as resample_tab:
        gr.Markdown("Upload or draw a digit. The autoencoder encodes it to a latent and decodes it at any output "
                    "size; bicubic resizing of the same input is shown beside it. Neither is stretched: another "
                    "aspect ratio puts the digit, as large as fits, on a wider or taller canvas.")
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                upload = gr.Image(type="filepath", image_mode=None, label="upload a digit",
                                  sources=["upload", "clipboard"], height=200, elem_id="upload")
                sketchpad = gr.Sketchpad(type="pil", image_mode="L", canvas_size=(224, 224), label="or draw one",
                                         brush=gr.Brush(default_size=14, colors=["#000000"], color_mode="fixed"),
                                         transforms=(), layers=False, elem_id="sketch")
                frame = gr.Checkbox(value=True, label="frame like MNIST (crop, centre, 4/28 margin)")
                r_auto = gr.Checkbox(value=True, label="automatic latent size (12 across the input's shorter side)")
                with gr.Row():
                    r_latent_h = gr.Slider(1, APP_LIMITS.latent_side, value=DEFAULTS.latent_height, step=1,
                                           label="latent height", interactive=False, elem_id="r-latent-h")
                    r_latent_w = gr.Slider(1, APP_LIMITS.latent_side, value=DEFAULTS.latent_width, step=1,
                                           label="latent width", interactive=False, elem_id="r-latent-w")
                with gr.Row():
                    r_height = gr.Number(128, precision=0, elem_id="r-height", label="output height (px)")
                    r_width = gr.Number(128, precision=0, elem_id="r-width", label="output width (px)")
                with gr.Row():
                    r_run = gr.Button("Resample", variant="primary", elem_id="resample", scale=3)
                    r_stop = gr.Button("Stop", variant="stop", scale=1)
            with gr.Column(scale=3):
                with gr.Row():
                    r_source = gr.Image(label="model input", type="pil", format="png", height=300,
                                        elem_classes="pixelated", elem_id="r-source")
                    r_riae = gr.Image(label="RIAE decode", type="pil", format="png", height=300,
                                      elem_classes="pixelated", elem_id="r-riae")
                    r_bicubic = gr.Image(label="bicubic", type="pil", format="png", height=300,
                                         elem_classes="pixelated", elem_id="r-bicubic")
                r_summary = gr.Markdown(elem_id="r-summary")
        resampling = r_run.click(resample, [upload, sketchpad, frame, r_auto, r_latent_h, r_latent_w, r_height,
                                            r_width],
                                 [r_source, r_riae, r_bicubic, r_summary, r_latent_h, r_latent_w],
                                 api_name="resample", preprocess=False, concurrency_limit=None)
        r_auto.change(lambda auto: (gr.update(interactive=not auto),) * 2, r_auto, [r_latent_h, r_latent_w],
                      api_visibility="private", queue=False)
        for box in (r_height, r_width):
            box.input(whole_side, box, box, api_visibility="private", queue=False)
        resample_tab.select(None, js=SELECT_BRUSH)  # Gradio's sketchpad starts with no tool: draw at once

    with gr.Tab("How it works"):
        with gr.Row():
            gr.Markdown(HOW_IT_WORKS + "\n" + evaluation_summary())
            gr.HTML(coordinate_figure())

    stop.click(stop_requests, None, summary, cancels=[generating], api_name="stop", queue=False)
    r_stop.click(stop_requests, None, r_summary, cancels=[resampling], api_visibility="private", queue=False)

# No Gradio-level limit: the two lanes above decide what runs (an event waiting in a lane shows its place in line).
demo.queue(default_concurrency_limit=None, max_size=64)


def main() -> None:
    """Check the settings and compute the examples (loading the pipeline) before serving: a bad setting or folder
    fails now, with one line, not per visitor."""
    try:
        time_limit_s()
        cost.memory_budget_bytes()
        cache_examples()
    except (ValueError, gr.Error) as err:
        raise SystemExit(f"app.py: cannot start with the pipeline in {default_checkpoint()}: {err}\n"
                         "set RIID_CHECKPOINTS to a pipeline folder (autoencoder/, diffuser/, conditioner/)") from None
    demo.launch(css=CSS, max_file_size=UPLOAD_SIZE_LIMIT)


if __name__ == "__main__":
    main()
