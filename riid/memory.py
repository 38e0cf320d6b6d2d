"""A request's peak memory, estimated before it runs, and a guard that refuses what would not fit.

The estimate adds up the float32 tensors alive at the worst moment of each stage (diffusion,
the latent blocks of decoding, one decoding chunk, encoding), in units of one token's model
width, plus what every output pixel costs, and takes the largest stage:

- activations: ~20 tensors of [2n, hw, D] in an R2ID block (CFG doubles the batch), ~12 of
  [n, chunk, D] in an RIAE pixel layer, ~5 of [n, HW, D] for the pixel tokens RIAE.encode reads;
- attention: at inference no attention has dropout or a key mask, so
  ``scaled_dot_product_attention`` runs its flash kernel and never holds a score matrix; an
  attention with a locality bias (``Attention.log_sigma``) does hold [queries, keys] matrices:
  distances (cdist and its square), a negated copy and one bias per head: (4 + heads) of them,
  for at most ``riid.attention.query_chunk`` queries at a time;
- outputs: coordinates, decoded pieces and their concatenation, clamping, uint8 conversion,
  the grid: ~64 bytes per output pixel.

Calibrated against ``ru_maxrss`` on the CPU (torch 2.x, float32, 1 thread); the estimate errs
high, since it exists so the operating system never kills the process mid-request.
"""
from __future__ import annotations

import math
import os

from .attention import query_chunk
from .validate import check_float, check_int

GIB = 2**30
DEFAULT_BUDGET_GB = 4.0
BUDGET_ENV = "RIID_MEMORY_BUDGET_GB"
FLOAT = 4  # bytes per float32

DIFFUSER_TENSORS = 20  # [2n, hw, D] tensors alive in one R2ID block (attention, FFN hidden, residuals)
DECODER_TENSORS = 12  # [n, chunk, D] tensors alive in one RIAE pixel layer
ENCODER_TENSORS = 5  # [n, HW, D] tensors of the pixel tokens RIAE.encode reads (tokens, norm, keys, values)
LATENT_TENSORS = 12  # [n, hw, D] tensors in RIAE's latent blocks
BYTES_PER_OUTPUT_PIXEL = 64
DECODE_CHUNK = 16384  # RIAE.decode's default query chunk


def _biased(module) -> bool:
    """Whether any attention in ``module`` adds a dense locality bias."""
    return any(getattr(m, "log_sigma", None) is not None for m in module.modules())


def _scores(batch: int, heads: int, queries: int, keys: int, biased: bool, flash: bool) -> int:
    if biased:  # riid.attention splits the queries of a biased attention to stay under its SCORE_BUDGET
        queries = min(queries, query_chunk(batch, heads, keys))
    units = (4 + heads if biased else 0) + (0 if flash else 2 * heads)  # bias matrices; scores and softmax
    return units * batch * queries * keys * FLOAT


def estimate_peak_bytes(pipeline, n: int, height: int, width: int, latent_h: int, latent_w: int,
                        input_size: tuple[int, int] | None = None, chunk: int = DECODE_CHUNK,
                        flash: bool = True) -> int:
    """Rough but honest peak of one request above the loaded models, in bytes.

    ``n`` images of ``height``×``width`` from latents of ``latent_h``×``latent_w``, diffused with
    classifier-free guidance (2n rows in the decoder blocks) and decoded ``chunk`` queries per image
    at a time. With ``input_size`` (H, W) the latents come from encoding n images of that size
    instead (the resampling path). ``flash=False`` models an attention that builds score matrices.
    """
    ae, diff = pipeline.autoencoder.config, pipeline.diffuser.config
    ae_bias, diff_bias = _biased(pipeline.autoencoder), _biased(pipeline.diffuser)
    tokens, pixels = latent_h * latent_w, height * width

    if input_size is None:
        group = math.ceil(tokens / max(1, min(diff.num_clouds, tokens)))  # cloud attention: one group at a time
        make_latents = (DIFFUSER_TENSORS * 2 * n * tokens * diff.dim * FLOAT
                        + _scores(2 * n, diff.heads, group, group, diff_bias, flash))
    else:
        in_pixels = input_size[0] * input_size[1]
        make_latents = ((ENCODER_TENSORS * ae.dim + 96) * n * in_pixels * FLOAT
                        + _scores(n, ae.heads, tokens, in_pixels, ae_bias, flash))
    latent_blocks = (LATENT_TENSORS * n * tokens * ae.dim * FLOAT
                     + _scores(n, ae.heads, tokens, tokens, ae_bias, flash))
    queries = min(chunk, pixels)
    decode_chunk = (DECODER_TENSORS * n * queries * ae.dim * FLOAT
                    + 2 * ae.pixel_layers * n * tokens * ae.dim * FLOAT  # keys and values kept for every chunk
                    + _scores(n, ae.heads, queries, tokens, ae_bias, flash))
    return int(max(make_latents, latent_blocks, decode_chunk) + BYTES_PER_OUTPUT_PIXEL * n * pixels)


def memory_budget_bytes(budget_gb: float | None = None) -> int:
    """The budget in bytes: ``budget_gb``, else $RIID_MEMORY_BUDGET_GB, else 4 GiB."""
    if budget_gb is None:
        raw = os.environ.get(BUDGET_ENV, "").strip()
        if not raw:
            budget_gb = DEFAULT_BUDGET_GB
        else:
            try:
                budget_gb = float(raw)
            except ValueError:
                raise ValueError(f"{BUDGET_ENV} must be a number of GiB, got {raw!r}") from None
    budget_gb = check_float("memory budget (GiB)", budget_gb, 0.0, 1e6)
    return int(budget_gb * GIB)


def check_memory(pipeline, n: int, height: int, width: int, latent_h: int, latent_w: int,
                 input_size: tuple[int, int] | None = None, budget_gb: float | None = None) -> int:
    """Estimated peak bytes of the request; ValueError if it is above the budget."""
    n = check_int("number of images", n, 1, 1 << 20)
    need = estimate_peak_bytes(pipeline, n, height, width, latent_h, latent_w, input_size)
    budget = memory_budget_bytes(budget_gb)
    if need > budget:
        raise ValueError(f"request needs ~{_gib(need)} GiB, above the budget of {_gib(budget)} GiB; lower the "
                         f"number of images, the output size or the latent size (the budget is ${BUDGET_ENV})")
    return need


def _gib(nbytes: int) -> str:
    value = nbytes / GIB
    return f"{value:.2f}" if value < 10 else f"{math.ceil(value)}"
