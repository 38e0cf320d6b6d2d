"""R2ID: a diffusion transformer over RIAE latents, one token per latent pixel at dual coordinates.

The encoder (cloud self-attention + FFN, AdaLN-modulated by time) runs once per step; the decoder
(the same plus cross-attention to condition tokens) runs once per condition, so classifier-free
guidance shares the encoder work."""
from dataclasses import dataclass
from functools import partial

import torch
from einops import rearrange
from torch import nn

from .attention import Attention, FeedForward, TokenEmbedding
from .coords import COORD_CHANNELS, dual_coords, fourier_features
from .schedule import PREDICTIONS, noise_from
from .validate import LIMITS, check_int, check_size, check_tensor


@dataclass
class R2IDConfig:
    latent_channels: int = 16
    dim: int = 128
    heads: int = 4
    encoder_blocks: int = 3
    decoder_blocks: int = 3
    mlp_ratio: int = 4
    num_clouds: int = 1  # random token groups for self-attention; 1 = full attention
    cond_dim: int = 128
    # what the head answers (riid.schedule.PREDICTIONS); files without the field predate v
    prediction: str = "eps"


@dataclass
class ConditionerConfig:
    num_classes: int = 10
    tokens: int = 4
    dim: int = 128


class LabelConditioner(nn.Module):
    """A label one-hot [B, classes] → condition tokens [B, T, D]; all zeros is the null condition.
    The original's stand-in for a text encoder."""

    def __init__(self, config: ConditionerConfig):
        super().__init__()
        self.config = config
        self.proj = nn.Linear(config.num_classes, config.tokens * config.dim)

    def one_hot(self, digits: torch.Tensor) -> torch.Tensor:
        """Digit labels [B] (−1 for the null condition) → one-hot [B, classes]."""
        classes = self.config.num_classes
        if digits.numel() and (digits.min() < -1 or digits.max() >= classes):
            raise ValueError(f"digits must be in [0, {classes - 1}] (or -1 for none)")
        hot = torch.zeros(len(digits), classes, device=self.proj.weight.device)
        keep = digits >= 0
        hot[keep, digits[keep]] = 1.0
        return hot

    def forward(self, one_hot: torch.Tensor) -> torch.Tensor:
        return rearrange(self.proj(one_hot), "b (t d) -> b t d", t=self.config.tokens)


# Initial widths (relative image units) of the self-attention heads' locality bias: from a
# neighbourhood to effectively global, so composition and detail each have heads.
SELF_SIGMAS = (0.08, 1.5)


def cloud_attention(attn: Attention, x: torch.Tensor, xy: torch.Tensor, num_clouds: int,
                    chunk: int | None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Self-attention in ``num_clouds`` random token groups (1 = full attention), xy [B, N, 2]; the
    groups come from ``generator`` (on the CPU) if given, so seeded sampling repeats."""
    n = x.shape[1]
    if num_clouds <= 1 or n <= num_clouds:
        return attn(x, chunk=chunk, positions=(xy, xy))
    order = torch.randperm(n, generator=generator).to(x.device)
    out = torch.empty_like(x)
    for group in order.tensor_split(num_clouds):
        out[:, group] = attn(x[:, group], chunk=chunk, positions=(xy[:, group], xy[:, group]))
    return out


class ModulatedBlock(nn.Module):
    """AdaLN block: cloud self-attention, optional cross-attention to condition tokens, FFN."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, cond_dim: int | None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = Attention(dim, heads, sigmas=SELF_SIGMAS)
        self.cross = None if cond_dim is None else Attention(dim, heads, context_dim=cond_dim)
        self.norm_cross = None if cond_dim is None else nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.ff = FeedForward(dim, mlp_ratio)
        self.modulation = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x, xy, t, num_clouds=1, cond=None, chunk=None, generator=None):
        # x [B, N, D], xy [B, N, 2], t [B, D], cond [B, T, Dc]
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(t)[:, None].chunk(6, dim=-1)
        h = self.norm1(x) * (1 + scale1) + shift1
        x = x + gate1 * cloud_attention(self.attn, h, xy, num_clouds, chunk, generator)
        if self.cross is not None:
            x = x + self.cross(self.norm_cross(x), context=cond, chunk=chunk)
        return x + gate2 * self.ff(self.norm2(x) * (1 + scale2) + shift2)


class R2ID(nn.Module):
    def __init__(self, config: R2IDConfig):
        super().__init__()
        self.config = c = config
        block = partial(ModulatedBlock, c.dim, c.heads, c.mlp_ratio)
        self.tokens_in = TokenEmbedding(c.latent_channels, COORD_CHANNELS, c.dim)
        self.time_mlp = nn.Sequential(nn.Linear(2 * 11, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
        # the condition also modulates the decoder (AdaLN), through the mean of its tokens
        self.cond_mlp = nn.Sequential(nn.Linear(c.cond_dim, c.dim), nn.SiLU(),
                                      nn.Linear(c.dim, c.dim))
        self.encoder = nn.ModuleList(block(None) for _ in range(c.encoder_blocks))
        self.decoder = nn.ModuleList(block(c.cond_dim) for _ in range(c.decoder_blocks))
        self.norm_out = nn.LayerNorm(c.dim, elementwise_affine=False)
        self.out_modulation = nn.Linear(c.dim, 2 * c.dim)
        self.head = nn.Linear(c.dim, c.latent_channels)
        if c.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}, "
                             f"got {c.prediction!r}")
        for layer in (self.out_modulation, self.head):  # a fresh model answers zero
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, alpha_bar: torch.Tensor, conds: list[torch.Tensor],
                num_clouds: int | None = None, chunk: int | None = None,
                generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """The head's answer (config.prediction: the noise or v) for x [B, Cl, h, w] at alpha_bar
        [B] under each condition in ``conds``, one [B, Cl, h, w] per condition (:meth:`noise`
        gives the noise whatever the head answers). The encoder runs once for all of them, the
        decoder once on the conditions stacked along the batch. Each condition [B, T, cond_dim]
        reaches the decoder twice: by cross-attention to its tokens and, through their mean, in the
        blocks' adaptive layer norm alongside the time."""
        c = self.config
        x = check_tensor("x", x, self.head.weight.dtype)
        if x.ndim != 4 or x.shape[1] != c.latent_channels:
            raise ValueError(f"x must be [batch, {c.latent_channels}, h, w], got {tuple(x.shape)}")
        b, _, h, w = x.shape
        alpha_bar = check_tensor("alpha_bar", alpha_bar, x.dtype)
        if alpha_bar.shape != (b,):
            raise ValueError(f"alpha_bar must be [{b}], got {tuple(alpha_bar.shape)}")
        check_size("latent size", (h, w), LIMITS.latent_side)
        if not conds:
            raise ValueError("conds must hold at least one condition")
        for cond in conds:
            if cond.ndim != 3 or cond.shape[0] != b or cond.shape[2] != c.cond_dim:
                raise ValueError(f"each condition must be [{b}, tokens, {c.cond_dim}], "
                                 f"got {tuple(cond.shape)}")
        # the config's clouds are capped at the tokens: a model trained with clouds samples 1×1 too
        clouds = (check_int("num_clouds", num_clouds, 1, h * w) if num_clouds
                  else min(c.num_clouds, h * w))
        pos = dual_coords(h, w, b, self.training, device=x.device, dtype=x.dtype)
        xy = pos[..., :2]
        tokens = self.tokens_in(rearrange(x, "b c h w -> b (h w) c"), fourier_features(pos))
        # time as a coordinate: alpha_bar in [0, 1] → [-0.5, 0.5] → Fourier features [B, 22]
        t = self.time_mlp(fourier_features((alpha_bar.to(x.dtype) - 0.5)[:, None]))  # [B, D]
        for block in self.encoder:
            tokens = block(tokens, xy, t, clouds, chunk=chunk, generator=generator)  # [B, N, D]

        k = len(conds)
        tokens, xy, t = tokens.repeat(k, 1, 1), xy.repeat(k, 1, 1), t.repeat(k, 1)  # [kB, ...]
        cond = torch.cat(conds, dim=0)
        t = t + self.cond_mlp(cond.mean(dim=1))
        for block in self.decoder:
            tokens = block(tokens, xy, t, clouds, cond, chunk=chunk, generator=generator)
        shift, scale = self.out_modulation(t)[:, None].chunk(2, dim=-1)
        out = self.head(self.norm_out(tokens) * (1 + scale) + shift)  # [kB, N, Cl]
        return list(rearrange(out, "(k b) (h w) c -> k b c h w", k=k, h=h, w=w))

    def noise(self, x: torch.Tensor, alpha_bar: torch.Tensor, conds: list[torch.Tensor],
              **kwargs) -> list[torch.Tensor]:
        """The predicted noise of x under each condition (what the samplers step with)."""
        return [noise_from(self.config.prediction, out, x, alpha_bar)
                for out in self(x, alpha_bar, conds, **kwargs)]
