"""What a request costs before it runs (peak memory, seconds), and the guards that refuse too much.

Memory adds up the float32 tensors alive at the worst moment of each stage (diffusion, the latent
blocks of decoding, one decoding chunk, encoding) in units of one token's model width, plus the
score matrices each attention holds (counted by riid.attention itself), plus ~64 bytes per output
pixel (coordinates, decoded pieces, clamping, uint8, the grid). It errs high: it exists so that the
operating system never kills a process mid-request. Time counts the multiply-adds of the same
stages and divides by a float32 rate measured on a 2-core CPU (``FLOP_RATE``); it is a guide, not a
promise, and a faster machine finishes early."""
from __future__ import annotations

import math
import os

from .attention import query_chunk, score_matrices
from .autoencoder import fitted_size, read_size

GIB = 2**30
DEFAULT_BUDGET_GB = 4.0
MEMORY_ENV = "RIID_MEMORY_BUDGET_GB"
DEFAULT_TIME_LIMIT_S = 600.0
TIME_ENV = "RIID_TIME_LIMIT_S"
# float32 FLOP/s a request reached on the 2-core reference CPU (50 digits at 128 px: 112 CPU s)
FLOP_RATE = 18e9
FLOAT = 4  # bytes per float32

DIFFUSER_TENSORS = 20  # [2n, hw, D] tensors alive in one R2ID block (attention, FFN, residuals)
DECODER_TENSORS = 12  # [n, chunk, D] tensors alive in one RIAE pixel layer
ENCODER_TENSORS = 5  # [n, HW, D] tensors of the pixels RIAE.encode reads (tokens, norm, k, v)
LATENT_TENSORS = 12  # [n, hw, D] tensors in RIAE's latent blocks
BYTES_PER_OUTPUT_PIXEL = 64
DECODE_CHUNK = 16384  # RIAE.decode's default query chunk


def _read_pixels(height: int, width: int, latent_h: int, latent_w: int) -> int:
    """Output pixels the decoder actually queries (see RIAE.decode)."""
    h, w = read_size(*fitted_size((latent_h, latent_w), (height, width)))
    return h * w


def _scores(batch: int, heads: int, queries: int, keys: int) -> int:
    """Bytes of one biased attention's [queries, keys] matrices, chunked as riid.attention does."""
    queries = min(queries, query_chunk(batch, heads, keys))
    return score_matrices(heads) * batch * queries * keys * FLOAT


def peak_bytes(pipeline, n: int, height: int, width: int, latent_h: int, latent_w: int,
               input_size: tuple[int, int] | None = None, clouds: int = 1) -> int:
    """Estimated peak bytes, above the models, of ``n`` images of height×width from latents of
    latent_h×latent_w: from diffusion with guidance (2n rows in the decoder blocks), or, with
    ``input_size`` (H, W), from encoding n images of that size (resampling)."""
    ae, diff = pipeline.autoencoder.config, pipeline.diffuser.config
    tokens, pixels = latent_h * latent_w, height * width
    read = _read_pixels(height, width, latent_h, latent_w)
    if input_size is None:
        group = math.ceil(tokens / max(1, min(clouds, tokens)))  # cloud attention: group by group
        make_latents = (DIFFUSER_TENSORS * 2 * n * tokens * diff.dim * FLOAT
                        + _scores(2 * n, diff.heads, group, group))
    else:
        in_pixels = input_size[0] * input_size[1]
        make_latents = ((ENCODER_TENSORS * ae.dim + 96) * n * in_pixels * FLOAT
                        + _scores(n, ae.heads, tokens, in_pixels))
    latent_blocks = (LATENT_TENSORS * n * tokens * ae.dim * FLOAT
                     + _scores(n, ae.heads, tokens, tokens))
    queries = min(DECODE_CHUNK, read)
    decode_chunk = (DECODER_TENSORS * n * queries * ae.dim * FLOAT
                    # keys and values kept for every chunk
                    + 2 * ae.pixel_layers * n * tokens * ae.dim * FLOAT
                    + _scores(n, ae.heads, queries, tokens))
    return int(max(make_latents, latent_blocks, decode_chunk) + BYTES_PER_OUTPUT_PIXEL * n * pixels)


def flops(pipeline, n: int, height: int, width: int, latent_h: int, latent_w: int, steps: int,
          input_size: tuple[int, int] | None = None) -> float:
    """Multiply-adds ×2 of a request: diffusion (or encoding), then decoding every output pixel."""
    ae, diff = pipeline.autoencoder.config, pipeline.diffuser.config
    tokens, pixels = latent_h * latent_w, _read_pixels(height, width, latent_h, latent_w)

    def layer(queries, keys, dim, mlp):  # projections, attention over ``keys`` tokens, feed-forward
        return 2 * queries * (4 * dim * dim + 2 * keys * dim + 2 * mlp * dim * dim)

    if input_size is None:  # the encoder blocks once, the decoder blocks for the label and the null
        block = layer(tokens, tokens, diff.dim, diff.mlp_ratio)
        make = steps * n * (diff.encoder_blocks + 2 * diff.decoder_blocks) * block
    else:
        in_pixels = input_size[0] * input_size[1]
        make = n * (layer(tokens, in_pixels, ae.dim, ae.mlp_ratio) + 2 * in_pixels * 88 * ae.dim)
    decode = n * (ae.pixel_layers * layer(pixels, tokens, ae.dim, ae.mlp_ratio)
                  + 2 * pixels * 88 * ae.dim)
    return float(make + decode)


def seconds(pipeline, n: int, s, input_size: tuple[int, int] | None = None) -> float:
    """Estimated seconds of ``n`` images with riid.pipeline.Settings ``s`` on the reference CPU."""
    sizes = (s.height, s.width, s.latent_height, s.latent_width)
    return flops(pipeline, n, *sizes, s.steps, input_size) / FLOP_RATE


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"${name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"${name} must be a positive number, got {raw!r}")
    return value


def memory_budget_bytes(budget_gb: float | None = None) -> int:
    """``budget_gb``, else $RIID_MEMORY_BUDGET_GB, else 4 GiB, in bytes."""
    gb = budget_gb if budget_gb is not None else _env_number(MEMORY_ENV, DEFAULT_BUDGET_GB)
    return int(gb * GIB)


def time_limit_s(limit_s: float | None = None) -> float:
    """``limit_s``, else $RIID_TIME_LIMIT_S, else 600 s."""
    return limit_s if limit_s is not None else _env_number(TIME_ENV, DEFAULT_TIME_LIMIT_S)


def images_per_batch(pipeline, s, budget_gb: float | None = None, input_size=None) -> int:
    """How many images of one request fit the memory budget at once; ValueError if not even one."""
    budget = memory_budget_bytes(budget_gb)
    def peak(n: int) -> int:
        return peak_bytes(pipeline, n, s.height, s.width, s.latent_height, s.latent_width,
                          input_size, s.clouds)
    one = peak(1)
    if one > budget:
        raise ValueError(
            f"one {s.height}x{s.width} image from a {s.latent_height}x{s.latent_width} latent "
            f"needs ~{one / GIB:.2f} GiB, above the memory budget of {budget / GIB:.2f} GiB; "
            "choose a smaller output or latent")
    n = 1
    while n < 4096 and peak(2 * n) <= budget:
        n *= 2
    return n


def check_time(pipeline, n: int, s, limit_s: float | None = None, input_size=None) -> float:
    """Estimated seconds of the request; ValueError naming the limit if it is above it."""
    need, limit = seconds(pipeline, n, s, input_size), time_limit_s(limit_s)
    if need > limit:
        raise ValueError(f"this request would take about {need:.0f} s, above the limit of "
                         f"{limit:.0f} s; ask for fewer images, fewer steps or a smaller output")
    return need
