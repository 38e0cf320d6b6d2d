"""The one attention used by every attention layer of both models."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
              key_mask: torch.Tensor | None = None, chunk: int | None = None) -> torch.Tensor:
    """Multi-head scaled dot-product attention over token sequences.

    q: [B, Nq, D]; k, v: [B, Nk, D]; key_mask: optional bool [B, Nq, Nk], True where
    a query may see a key (each query must see at least one). ``chunk`` splits the
    queries so that memory stays bounded for very long query sequences.
    Returns [B, Nq, D].
    """
    k, v = (rearrange(t, "b n (h d) -> b h n d", h=heads) for t in (k, v))
    outputs = []
    step = chunk or q.shape[1]
    for start in range(0, q.shape[1], step):
        q_part = rearrange(q[:, start:start + step], "b n (h d) -> b h n d", h=heads)
        mask = None if key_mask is None else key_mask[:, None, start:start + step]
        out = F.scaled_dot_product_attention(q_part, k, v, attn_mask=mask)
        outputs.append(rearrange(out, "b h n d -> b n (h d)"))
    return torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]


def random_key_mask(batch: int, queries: int, keys: int, fraction: float,
                    generator: torch.Generator | None = None, device=None) -> torch.Tensor | None:
    """A per-query random subset of about ``fraction`` of the keys, as a bool mask [B, Nq, Nk].

    Returns None for fraction ≥ 1 (every key visible). Each query keeps at least one key.
    """
    if fraction >= 1:
        return None
    scores = torch.rand(batch, queries, keys, generator=generator, device=device)
    mask = scores < fraction
    mask.scatter_(-1, scores.argmin(dim=-1, keepdim=True), True)
    return mask


class Attention(nn.Module):
    """Projections around :func:`attention`; self-attention when ``context`` is None.

    Keys and values are projected once per token (never per query–token pair), so the
    cost and memory of a layer stay linear in the number of queries.
    """

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim or dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def project_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of a context, reusable across query chunks: 2 × [B, Nk, D]."""
        return self.to_kv(context).chunk(2, dim=-1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None, chunk: int | None = None,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        k, v = kv if kv is not None else self.project_context(x if context is None else context)
        out = attention(self.to_q(x), k, v, self.heads, key_mask, chunk)
        return self.to_out(out)


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, ratio: int = 4):
        super().__init__(nn.Linear(dim, dim * ratio), nn.GELU(), nn.Linear(dim * ratio, dim))
