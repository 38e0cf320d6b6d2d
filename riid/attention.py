"""The one attention used by every attention layer of both models.

Tokens that have positions may add a Gaussian locality bias, −|p_q − p_k|² / (2σ_h²), with one
learnable width σ_h per head, measured in the continuous (relative) coordinate frame. Because
the width lives in image units rather than grid units, a head attends to the same region of the
image whatever the grid's density: the softmax turns it into a kernel-weighted average over
however many tokens fall inside. It also lets a fresh model read "what is near me" from the
first step, where learning locality through random projections of Fourier features stalls.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

SCORE_BUDGET = 256 * 2**20  # bytes of [queries, keys] matrices a biased attention may hold at once


def score_matrices(heads: int) -> int:
    """[B, n, Nk]-sized float matrices alive in a biased attention: the distances (cdist, its
    square), the bias per head, and the maths path's scores and softmax per head (riid.cost counts
    with it)."""
    return 4 + 3 * heads


def query_chunk(batch: int, heads: int, keys: int, element_size: int = 4) -> int:
    """Most queries a biased attention takes at once so its matrices stay under ``SCORE_BUDGET``."""
    return max(1, SCORE_BUDGET // (score_matrices(heads) * batch * max(1, keys) * element_size))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
              chunk: int | None = None, positions: tuple[torch.Tensor, torch.Tensor] | None = None,
              log_sigma: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head scaled dot-product attention over token sequences.

    q: [B, Nq, D]; k, v: [B, Nk, D]; positions: optional (q_pos [B, Nq, P],
    k_pos [B, Nk, P]) with log_sigma [heads] for the locality bias. ``chunk`` splits the
    queries so that memory stays bounded for very long sequences; with a bias the chunk is
    also capped by :func:`query_chunk`, which is exact and costs no quality. Returns [B, Nq, D].
    """
    k, v = (rearrange(t, "b n (h d) -> b h n d", h=heads) for t in (k, v))
    outputs = []
    step = chunk or q.shape[1]
    if positions is not None:
        step = min(step, query_chunk(q.shape[0], heads, k.shape[2], q.element_size()))
    for start in range(0, q.shape[1], step):
        part = slice(start, start + step)
        q_part = rearrange(q[:, part], "b n (h d) -> b h n d", h=heads)
        bias = None
        if positions is not None:
            dist2 = torch.cdist(positions[0][:, part], positions[1]).pow(2)  # [B, n, Nk]
            # [B, H, n, Nk]
            bias = -dist2[:, None] * (0.5 * torch.exp(-2 * log_sigma))[None, :, None, None]
        out = F.scaled_dot_product_attention(q_part, k, v, attn_mask=bias)
        outputs.append(rearrange(out, "b h n d -> b n (h d)"))
    return torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]


def random_subset(fraction: float, tokens: torch.Tensor, *others: torch.Tensor,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
    """The same random share of the tokens for every query of an item (training's key dropout).

    tokens and others: [B, N, ...] aligned along N. Keeps max(1, round(fraction·N)) tokens per
    item; fraction ≥ 1 returns the inputs unchanged. Gathering keys once per item is far cheaper
    than a per-query mask, which forces the attention's slow path and a [B, H, Nq, Nk] fill.
    """
    b, n = tokens.shape[:2]
    if fraction >= 1:
        return (tokens, *others)
    keep = max(1, round(fraction * n))
    # [B, m]
    idx = torch.rand(b, n, generator=generator, device=tokens.device).argsort(dim=1)[:, :keep]
    return tuple(t.gather(1, idx.view(b, keep, *[1] * (t.ndim - 2)).expand(b, keep, *t.shape[2:]))
                 for t in (tokens, *others))


class Attention(nn.Module):
    """Projections around :func:`attention`; self-attention when ``context`` is None.

    Keys and values are projected once per token (never per query–token pair), so the
    cost and memory of a layer stay linear in the number of queries. With ``sigmas`` (initial
    widths of the heads' locality bias, in relative image units) callers pass ``positions``.
    """

    def __init__(self, dim: int, heads: int, context_dim: int | None = None,
                 sigmas: tuple[float, float] | None = None):
        super().__init__()
        if heads < 1 or dim < 1 or dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim or dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.log_sigma = None
        if sigmas is not None:  # widths spaced geometrically from local to broad
            self.log_sigma = nn.Parameter(
                torch.linspace(math.log(sigmas[0]), math.log(sigmas[1]), heads)
            )

    def project_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of a context, reusable across query chunks: 2 × [B, Nk, D]."""
        return self.to_kv(context).chunk(2, dim=-1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                chunk: int | None = None, kv: tuple[torch.Tensor, torch.Tensor] | None = None,
                positions: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        k, v = kv if kv is not None else self.project_context(x if context is None else context)
        if self.log_sigma is None:
            positions = None
        out = attention(self.to_q(x), k, v, self.heads, chunk, positions, self.log_sigma)
        return self.to_out(out)


class TokenEmbedding(nn.Module):
    """A token from its values and its position features, each projected on its own and summed.

    Concatenating a few value channels to the 88 position channels before one projection drowns
    the values (a fresh model's tokens then barely depend on the image); separate projections
    give both the same footing.
    """

    def __init__(self, channels: int, position_channels: int, dim: int):
        super().__init__()
        self.values = nn.Linear(channels, dim)
        self.position = nn.Linear(position_channels, dim)

    def forward(self, values: torch.Tensor, position_features: torch.Tensor) -> torch.Tensor:
        return self.values(values) + self.position(position_features)


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, ratio: int = 4):
        super().__init__(nn.Linear(dim, dim * ratio), nn.GELU(), nn.Linear(dim * ratio, dim))
