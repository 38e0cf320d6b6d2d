"""The one attention used by every attention layer of both models.

Tokens with positions may add a Gaussian locality bias −|p_q − p_k|² / (2σ_h²), one learnable
width σ_h per head, in the continuous (relative) coordinate frame. As the width is in image units,
not grid units, a head attends to the same region of the image at any grid density (the softmax
makes it a kernel-weighted average over however many tokens fall inside), and a fresh model reads
"what is near me" from the first step, where learning locality through Fourier features stalls."""
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

SCORE_BUDGET = 256 * 2**20  # bytes of [queries, keys] matrices a biased attention may hold at once


def score_matrices(heads: int) -> int:
    """[B, n, Nk]-sized float matrices alive in a biased attention (riid.cost counts with it): the
    distances (cdist, its square), and per head the bias and the maths path's scores and softmax."""
    return 4 + 3 * heads


def query_chunk(batch: int, heads: int, keys: int, element_size: int = 4) -> int:
    """Most queries a biased attention takes at once so its matrices stay under ``SCORE_BUDGET``."""
    return max(1, SCORE_BUDGET // (score_matrices(heads) * batch * max(1, keys) * element_size))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
              chunk: int | None = None, positions: tuple[torch.Tensor, torch.Tensor] | None = None,
              log_sigma: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head scaled dot-product attention: q [B, Nq, D], k and v [B, Nk, D] → [B, Nq, D].
    positions (q_pos [B, Nq, P], k_pos [B, Nk, P]) with log_sigma [heads] add the locality bias.
    ``chunk`` splits the queries to bound memory; with a bias :func:`query_chunk` also caps it
    (exact: it costs no quality)."""
    q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=heads) for t in (q, k, v))
    step = chunk or q.shape[2]
    if positions is not None:
        step = min(step, query_chunk(q.shape[0], heads, k.shape[2], q.element_size()))
    outputs = []
    for start in range(0, q.shape[2], step):
        part = slice(start, start + step)
        bias = None
        if positions is not None:
            d2 = torch.cdist(positions[0][:, part], positions[1]).pow(2)[:, None]  # [B, 1, n, Nk]
            bias = -d2 * (0.5 * torch.exp(-2 * log_sigma))[:, None, None]  # [B, H, n, Nk]
        out = F.scaled_dot_product_attention(q[:, :, part], k, v, attn_mask=bias)
        outputs.append(rearrange(out, "b h n d -> b n (h d)"))
    return torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]


def random_subset(fraction: float, tokens: torch.Tensor, *others: torch.Tensor,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
    """The same random share of the tokens for every query of an item (training's key dropout):
    max(1, round(fraction·N)) of tokens and others [B, N, ...] aligned along N, all if fraction ≥ 1.
    Gathering keys once per item is far cheaper than a per-query mask, which forces the attention's
    slow path and a [B, H, Nq, Nk] fill."""
    if fraction >= 1:
        return (tokens, *others)
    b, n = tokens.shape[:2]
    keep = max(1, round(fraction * n))
    idx = torch.rand(b, n, generator=generator, device=tokens.device).argsort(dim=1)[:, :keep]
    return tuple(t.gather(1, idx.view(b, keep, *[1] * (t.ndim - 2)).expand(b, keep, *t.shape[2:]))
                 for t in (tokens, *others))  # each [B, keep, ...]


class Attention(nn.Module):
    """Projections around :func:`attention`; self-attention when ``context`` is None. Keys and
    values are projected once per token (never per query–token pair), so a layer's cost and memory
    stay linear in the queries. With ``sigmas`` (initial widths of the heads' locality bias, in
    relative image units) callers pass ``positions``."""

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
            self.log_sigma = nn.Parameter(torch.linspace(*map(math.log, sigmas), heads))

    def project_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of a context, reusable across query chunks: 2 × [B, Nk, D]."""
        return self.to_kv(context).chunk(2, dim=-1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                chunk: int | None = None, kv: tuple[torch.Tensor, torch.Tensor] | None = None,
                positions: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        k, v = kv if kv is not None else self.project_context(x if context is None else context)
        positions = positions if self.log_sigma is not None else None
        out = attention(self.to_q(x), k, v, self.heads, chunk, positions, self.log_sigma)
        return self.to_out(out)


class TokenEmbedding(nn.Module):
    """A token from its values and its position features, each projected on its own and summed:
    one projection of a few value channels concatenated to the 88 position channels drowns the
    values (a fresh model's tokens then barely depend on the image)."""

    def __init__(self, channels: int, position_channels: int, dim: int):
        super().__init__()
        self.values = nn.Linear(channels, dim)
        self.position = nn.Linear(position_channels, dim)

    def forward(self, values: torch.Tensor, position_features: torch.Tensor) -> torch.Tensor:
        return self.values(values) + self.position(position_features)


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, ratio: int = 4):
        super().__init__(nn.Linear(dim, dim * ratio), nn.GELU(), nn.Linear(dim * ratio, dim))
