"""Autoencoder + diffuser + conditioner: digits in, images out, at any size."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .autoencoder import RIAE
from .checkpoint import load_model, save_model
from .diffuser import R2ID, LabelConditioner
from .samplers import SAMPLERS, sample_ddim, sample_dpmpp_2m
from .schedule import check_spacing, log_snr, sampling_alpha_bars
from .validate import (MAX_BATCH, MAX_CFG, MAX_CFG_FROM, MAX_ETA, MAX_IMAGE_SIDE, MAX_LATENT_SIDE, MAX_STEPS,
                       check_float, check_int, check_size)

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints"
DEFAULT_SAMPLER = "dpmpp"
DEFAULT_STEPS = 20
DEFAULT_CFG = 2.25  # with the 12×12 latent of a 32 px digit; 3 gives surer but less varied digits (README)
DEFAULT_ETA = 0.0
DEFAULT_SPACING = "logsnr"  # sharper than DDIM at 100 steps (README); even time steps leave a blurrier last jump
SPACING_HELP = "sampler steps even in time, even in log-SNR (logsnr), or halfway between the two in log-SNR (blend)"
DEFAULT_CFG_FROM = -2.3  # no guidance on the noisiest steps (6 of 20): more varied, realistic digits (README)
CFG_FROM_HELP = ("guide only the steps at log-SNR >= this; the noisier ones use the label alone "
                 "(-5 or less: guide every step)")
MAX_SEED = 2**63 - 1
MIN_LATENT_SIDE = 12  # a 32 px digit is diffused at 1.5× the autoencoder's density: sharper, surer digits (README)


@dataclass
class SamplingSettings:
    """Validated settings of one generation request."""
    height: int
    width: int
    latent_height: int
    latent_width: int
    steps: int = DEFAULT_STEPS
    cfg: float = DEFAULT_CFG
    eta: float = DEFAULT_ETA
    sampler: str = DEFAULT_SAMPLER
    seed: int = 0
    spacing: str = DEFAULT_SPACING
    cfg_from: float = DEFAULT_CFG_FROM


class Pipeline:
    def __init__(self, autoencoder: RIAE, diffuser: R2ID, conditioner: LabelConditioner):
        self.autoencoder = autoencoder.eval()
        self.diffuser = diffuser.eval()
        self.conditioner = conditioner.eval()

    def use_clouds(self, num_clouds: int) -> None:
        """Split the diffuser's self-attention into ``num_clouds`` random token groups (1 = full attention).

        Faster on large latents; the shipped diffuser was trained with full attention, so it costs
        quality (figures in the README).
        """
        self.diffuser.config.num_clouds = check_int("num_clouds", num_clouds, 1, MAX_LATENT_SIDE ** 2)

    def default_latent_size(self, height: int, width: int) -> tuple[int, int]:
        """The latent to diffuse for an output: the autoencoder's (output / reduction), scaled up with its
        aspect kept until the shorter side is MIN_LATENT_SIDE (if the longer one stays within MAX_LATENT_SIDE).

        The decoder reads any latent out at any size, so a 16 px digit is diffused on the same 12×12 grid as a
        32 px one; on its own 4×4 latent it holds too little of the digit (figures in the README).
        """
        lh, lw = self.autoencoder.default_latent_size(*check_size("output size", (height, width), MAX_IMAGE_SIDE))
        scale = max(1.0, min(MIN_LATENT_SIDE / min(lh, lw), MAX_LATENT_SIDE / max(lh, lw)))
        return round(lh * scale), round(lw * scale)

    def settings(self, height, width, latent_size=None, steps=DEFAULT_STEPS, cfg=DEFAULT_CFG, eta=DEFAULT_ETA,
                 sampler=DEFAULT_SAMPLER, seed=0, spacing=DEFAULT_SPACING,
                 cfg_from=DEFAULT_CFG_FROM) -> SamplingSettings:
        """Check every argument of a request; a bad one raises ValueError naming its allowed range."""
        height, width = check_size("output size", (height, width), MAX_IMAGE_SIDE)
        if latent_size is None or latent_size == (None, None):
            latent_size = self.default_latent_size(height, width)
        lh, lw = check_size("latent size", latent_size, MAX_LATENT_SIDE)
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        return SamplingSettings(height, width, lh, lw, check_int("steps", steps, 1, MAX_STEPS),
                                check_float("cfg", cfg, 0.0, MAX_CFG), check_float("eta", eta, 0.0, MAX_ETA),
                                sampler, check_int("seed", seed, 0, MAX_SEED), check_spacing(spacing),
                                check_float("cfg_from", cfg_from, -MAX_CFG_FROM, MAX_CFG_FROM))

    @torch.no_grad()
    def sample_latents(self, digits, s: SamplingSettings, callback=None) -> torch.Tensor:
        """Diffuse latents [N, Cl, h, w] for a list of digits (0–9)."""
        if isinstance(digits, torch.Tensor):
            digits = digits.flatten().tolist()
        digits = [digits] if isinstance(digits, int) else list(digits)
        check_int("number of digits", len(digits), 1, MAX_BATCH)
        digits = torch.tensor([check_int("digit", d, 0, 9) for d in digits], dtype=torch.long)
        cond = self.conditioner(self.conditioner.one_hot(digits))
        null = self.conditioner(self.conditioner.one_hot(torch.full_like(digits, -1)))
        generator = torch.Generator().manual_seed(s.seed)  # noise, DDIM's eta noise and any attention clouds

        def denoiser(x, alpha_bar):
            if float(log_snr(alpha_bar[0].double())) < s.cfg_from:  # a noisy step: the label alone, no guidance
                return self.diffuser(x, alpha_bar, [cond], generator=generator)[0]
            eps_cond, eps_null = self.diffuser(x, alpha_bar, [cond, null], generator=generator)
            return eps_null + s.cfg * (eps_cond - eps_null)

        shape = (len(digits), self.diffuser.config.latent_channels, s.latent_height, s.latent_width)
        x = torch.randn(shape, generator=generator)
        alpha_bars = sampling_alpha_bars(s.steps, s.spacing)
        if s.sampler == "ddim":
            return sample_ddim(denoiser, x, alpha_bars, s.eta, generator, callback)
        return sample_dpmpp_2m(denoiser, x, alpha_bars, callback)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.autoencoder.decode(latents, (height, width)).clamp(-1, 1)

    @torch.no_grad()
    def generate(self, digits, height: int = 32, width: int = 32, latent_size=None, steps=DEFAULT_STEPS,
                 cfg=DEFAULT_CFG, eta=DEFAULT_ETA, sampler=DEFAULT_SAMPLER, seed=0, callback=None,
                 spacing=DEFAULT_SPACING, cfg_from=DEFAULT_CFG_FROM) -> torch.Tensor:
        """Images [N, 1, height, width] in [-1, 1], one per digit in ``digits``."""
        s = self.settings(height, width, latent_size, steps, cfg, eta, sampler, seed, spacing, cfg_from)
        return self.decode(self.sample_latents(digits, s, callback), s.height, s.width)

    def save(self, folder) -> None:
        folder = Path(folder)
        save_model(self.autoencoder, folder / "autoencoder")
        save_model(self.diffuser, folder / "diffuser")
        save_model(self.conditioner, folder / "conditioner")


def load_pipeline(folder=DEFAULT_CHECKPOINT, device="cpu") -> Pipeline:
    """Rebuild autoencoder, diffuser and conditioner from a checkpoint folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"checkpoint folder not found: {folder}")
    return Pipeline(load_model(folder / "autoencoder", "riae", device),
                    load_model(folder / "diffuser", "r2id", device),
                    load_model(folder / "conditioner", "label_conditioner", device))
