"""RIAE: a resolution-invariant autoencoder that resamples between any two grids.

encode: latent-grid coordinates ask (cross-attention) the image's pixel tokens what is there.
decode: output-pixel coordinates ask the latent tokens what is there.
Neither side ever assumes a grid size, so both work at any size and aspect ratio."""
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .attention import Attention, FeedForward, TokenEmbedding, random_subset
from .coords import COORD_CHANNELS, dual_coords, fourier_features
from .validate import LIMITS, check_fraction, check_int, check_size, check_tensor


@dataclass
class RIAEConfig:
    channels: int = 1  # image colour channels
    latent_channels: int = 16
    dim: int = 128
    heads: int = 4
    encoder_blocks: int = 2  # self-attention blocks over latent tokens after the cross-attention
    decoder_blocks: int = 2  # self-attention blocks over latent tokens before pixels read them
    pixel_layers: int = 3  # rounds of (pixel → latent cross-attention, per-pixel MLP)
    mlp_ratio: int = 2
    reduction: int = 4  # the latent side in training is about image side / reduction (riid.tasks)
    encode_fraction: float = 0.5  # share of an image's pixels its latent queries see in training
    decode_fraction: float = 0.75  # share of a latent's tokens its pixel queries see in training
    latent_noise: float = 0.05  # Gaussian, on training latents: a decoder robust to diffusion error


# The grid the decoder reads the image function on (README, "How it works"): shorter side at least
# the 32 px the digits were learnt at (smaller outputs are area-averaged from it, like real digits),
# longer side at most 256 px (larger ones are resized bicubically: it holds no finer detail).
READ_SIDES = (32, 256)

# Initial widths (relative image units; the long side is 1) of the heads' locality bias.
CROSS_SIGMAS = (0.03, 0.25)  # pixel ↔ latent reads: from about one pixel to a quarter of the image
SELF_SIGMAS = (0.06, 0.6)  # latent ↔ latent mixing: from neighbours to the whole image


class Block(nn.Module):
    """Pre-norm attention (self, or cross to a context) + feed-forward."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, sigmas: tuple[float, float]):
        super().__init__()
        self.norm_x = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, sigmas=sigmas)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, mlp_ratio)

    def context_kv(self, context: torch.Tensor):
        return self.attn.project_context(self.norm_context(context))

    def forward(self, x, positions, kv=None):
        # x [B, N, D]; positions (query [B, N, 2], key [B, Nk, 2]) in relative coordinates
        kv = self.context_kv(x) if kv is None else kv
        x = x + self.attn(self.norm_x(x), kv=kv, positions=positions)
        return x + self.ff(self.norm_ff(x))


def fitted_size(latent_size, output_size) -> tuple[int, int]:
    """The part of an output a latent fills unstretched: the whole output where their aspect ratios
    agree to within one latent cell (a rounded latent), else the largest box of its aspect in it."""
    (lh, lw), (height, width) = latent_size, output_size
    scale = min(height / lh, width / lw)
    inner_h, inner_w = max(1, round(lh * scale)), max(1, round(lw * scale))
    if height - inner_h <= height / lh and width - inner_w <= width / lw:
        return height, width
    return inner_h, inner_w


def read_size(height: int, width: int) -> tuple[int, int]:
    """The grid riid.pipeline reads an output of height×width from the decoder on (READ_SIDES)."""
    scale = max(1.0, READ_SIDES[0] / min(height, width))
    if max(height, width) * scale > READ_SIDES[1]:
        scale = READ_SIDES[1] / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


class RIAE(nn.Module):
    def __init__(self, config: RIAEConfig):
        super().__init__()
        self.config = c = config
        if c.reduction < 1 or c.channels < 1 or c.latent_channels < 1:
            raise ValueError(f"reduction, channels and latent_channels must be at least 1, got {c}")
        block = partial(Block, c.dim, c.heads, c.mlp_ratio)
        self.pixel_in = TokenEmbedding(c.channels, COORD_CHANNELS, c.dim)
        self.latent_query = nn.Linear(COORD_CHANNELS, c.dim)
        self.encode_cross = block(CROSS_SIGMAS)
        self.encode_blocks = nn.ModuleList(block(SELF_SIGMAS) for _ in range(c.encoder_blocks))
        self.to_latent = nn.Linear(c.dim, c.latent_channels)

        self.latent_in = TokenEmbedding(c.latent_channels, COORD_CHANNELS, c.dim)
        self.decode_blocks = nn.ModuleList(block(SELF_SIGMAS) for _ in range(c.decoder_blocks))
        self.pixel_query = nn.Linear(COORD_CHANNELS, c.dim)
        self.pixel_layers = nn.ModuleList(block(CROSS_SIGMAS) for _ in range(c.pixel_layers))
        self.to_pixels = nn.Sequential(nn.LayerNorm(c.dim), nn.Linear(c.dim, c.channels))

    def _check_grid(self, name: str, x: torch.Tensor, channels: int, high: int) -> torch.Tensor:
        x = check_tensor(name, x, self.to_latent.weight.dtype)
        if x.ndim != 4 or x.shape[1] != channels:
            raise ValueError(f"{name} must be a tensor [batch, {channels}, height, width], "
                             f"got {tuple(x.shape)}")
        check_size(f"{name} size", tuple(x.shape[-2:]), high)
        if x.shape[0] < 1:
            raise ValueError(f"{name} batch must hold at least one item")
        return x

    def encoder_modules(self) -> list[nn.Module]:
        """The modules that make the latent (frozen, a trained diffuser's latents stay valid)."""
        return [self.pixel_in, self.latent_query, self.encode_cross, self.encode_blocks,
                self.to_latent]

    def encode(self, image: torch.Tensor, latent_size, fraction: float = 1.0,
               jitter: bool | None = None) -> torch.Tensor:
        """image [B, C, H, W] in [-1, 1] → latent [B, Cl, h, w], for any (h, w) (a digit's:
        riid.pipeline.default_latent_size). ``fraction`` < 1 lets each latent query see a random
        share of the pixels (training); ``jitter`` (default: in training) perturbs coordinates."""
        image = self._check_grid("image", image, self.config.channels, LIMITS.side)
        b, _, height, width = image.shape
        h, w = check_size("latent_size", latent_size, LIMITS.latent_side)
        fraction = check_fraction("fraction", fraction)
        jitter = self.training if jitter is None else jitter
        colours = rearrange(image, "b c h w -> b (h w) c")
        pixel_pos = dual_coords(height, width, b, jitter, device=image.device, dtype=image.dtype)
        latent_pos = dual_coords(h, w, b, jitter, device=image.device, dtype=image.dtype)
        pixels = self.pixel_in(colours, fourier_features(pixel_pos))  # [B, HW, D]
        queries = self.latent_query(fourier_features(latent_pos))  # [B, hw, D]
        pixels, pixel_xy = random_subset(fraction, pixels, pixel_pos[..., :2])
        latent_xy = latent_pos[..., :2]
        kv = self.encode_cross.context_kv(pixels)
        x = self.encode_cross(queries, (latent_xy, pixel_xy), kv=kv)  # [B, hw, D]
        for block in self.encode_blocks:
            x = block(x, (latent_xy, latent_xy))
        latent = F.layer_norm(self.to_latent(x), (self.config.latent_channels,))
        return rearrange(latent, "b (h w) c -> b c h w", h=h, w=w)

    def _latent_context(self, latent: torch.Tensor, fraction: float) -> tuple[list, torch.Tensor]:
        """Keys and values of (a random ``fraction`` of) the latent tokens for each pixel layer,
        computed once per latent, and those tokens' relative positions [B, n, 2]."""
        b, _, h, w = latent.shape
        if self.training and self.config.latent_noise:
            latent = latent + self.config.latent_noise * torch.randn_like(latent)
        tokens = rearrange(latent, "b c h w -> b (h w) c")
        pos = dual_coords(h, w, b, self.training, device=latent.device, dtype=latent.dtype)
        x = self.latent_in(tokens, fourier_features(pos))  # [B, hw, D]
        for block in self.decode_blocks:
            x = block(x, (pos[..., :2], pos[..., :2]))
        x, xy = random_subset(fraction, x, pos[..., :2])
        return [layer.context_kv(x) for layer in self.pixel_layers], xy

    def decode_at(self, latent: torch.Tensor, coords: torch.Tensor, fraction: float = 1.0,
                  chunk: int = 16384) -> torch.Tensor:
        """Values [B, N, C] of the image function at any dual coordinates [B, N, 4]."""
        latent = self._check_grid("latent", latent, self.config.latent_channels, LIMITS.latent_side)
        coords = check_tensor("coords", coords, latent.dtype)
        if coords.ndim != 3 or coords.shape[-1] != 4 or coords.shape[0] != latent.shape[0]:
            raise ValueError(f"coords must be [{latent.shape[0]}, points, 4], "
                             f"got {tuple(coords.shape)}")
        fraction = check_fraction("fraction", fraction)
        chunk = check_int("chunk", chunk, 1, 1 << 24)
        kvs, latent_xy = self._latent_context(latent, fraction)
        pieces = []
        for start in range(0, coords.shape[1], chunk):
            part = coords[:, start:start + chunk]
            q = self.pixel_query(fourier_features(part))  # [B, n, D]
            for layer, kv in zip(self.pixel_layers, kvs):
                q = layer(q, (part[..., :2], latent_xy), kv=kv)
            pieces.append(self.to_pixels(q))  # [B, n, C]
        return torch.cat(pieces, dim=1)

    def decode(self, latent: torch.Tensor, output_size, fraction: float = 1.0,
               chunk: int = 16384) -> torch.Tensor:
        """latent [B, Cl, h, w] → image [B, C, H, W] at any (H, W), never stretched: another aspect
        ratio than the latent's gets the latent's content at its own aspect, as large as fits,
        centred on a background canvas (a square digit at 24×40 is the 24×24 digit with 8
        background columns each side). Pixels are decoded ``chunk`` at a time: bounded memory."""
        latent = self._check_grid("latent", latent, self.config.latent_channels, LIMITS.latent_side)
        height, width = check_size("output_size", output_size, LIMITS.side)
        inner_h, inner_w = fitted_size(latent.shape[-2:], (height, width))
        coords = dual_coords(inner_h, inner_w, latent.shape[0], self.training, device=latent.device,
                             dtype=latent.dtype)
        pixels = self.decode_at(latent, coords, fraction, chunk)  # [B, inner_h·inner_w, C]
        pixels = rearrange(pixels, "b (h w) c -> b c h w", h=inner_h)
        dh, dw = height - inner_h, width - inner_w  # centred on a background of -1
        return F.pad(pixels, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), value=-1.0)

    def forward(self, image: torch.Tensor, latent_size, coords: torch.Tensor,
                train_encoder: bool = True) -> torch.Tensor:
        """Training round trip: encode, then read the image function back at ``coords`` [B, N, 4].
        ``train_encoder=False`` encodes without gradients exactly as inference does (every pixel,
        no jitter), so a decoder tuned this way learns the very latents a diffuser generates."""
        if train_encoder:
            fraction = self.config.encode_fraction if self.training else 1.0
            latent = self.encode(image, latent_size, fraction)
        else:
            with torch.no_grad():
                latent = self.encode(image, latent_size, jitter=False)
        return self.decode_at(latent, coords, self.config.decode_fraction if self.training else 1.0)
