"""Autoencoder + diffuser + conditioner: digits in, images out, at any size."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import cost
from .autoencoder import RIAE, fitted_size, read_size
from .checkpoint import first_line, load_model, save_model, write_json
from .diffuser import R2ID, LabelConditioner
from .images import resize
from .samplers import SAMPLERS
from .schedule import check_spacing, log_snr, sampling_alpha_bars
from .validate import (LIMITS, Limits, check_callback, check_float, check_int, check_size,
                       check_tensor)

CHECKPOINT_ENV = "RIID_CHECKPOINTS"
# a pipeline folder's own sampling defaults (JSON, any SAMPLING fields): what its weights were tuned at
SAMPLING_FILE = "sampling.json"
# latent tokens across a digit's shorter side, whatever the output resolution (README)
LATENT_SHORT_SIDE = 12
# the longer latent side ÷ the shorter: the shipped diffuser trained on canvases from 3:5 to 5:3
MAX_LATENT_ASPECT = 5 / 3


def default_checkpoint() -> Path:
    """$RIID_CHECKPOINTS, else the package's installed weights, else the repo's checkpoints/."""
    if os.environ.get(CHECKPOINT_ENV):
        return Path(os.environ[CHECKPOINT_ENV])
    installed = Path(__file__).resolve().parent / "checkpoints"
    return installed if installed.is_dir() else installed.parent.parent / "checkpoints"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """One request, checked by :meth:`Pipeline.settings`; change it with ``dataclasses.replace``."""
    height: int = 32
    width: int = 32
    latent_height: int = LATENT_SHORT_SIDE
    latent_width: int = LATENT_SHORT_SIDE
    steps: int = 20
    cfg: float = 2.25  # 3 gives surer but less varied digits
    # guide only steps at log-SNR >= this (on the square latent of LATENT_SHORT_SIDE² tokens;
    # guidance_start moves it for others); the noisiest use the label alone (more varied)
    cfg_from: float = -2.3
    sampler: str = "dpmpp"
    spacing: str = "logsnr"  # steps even in log-SNR: a sharper last step than even time steps
    eta: float = 0.0  # DDIM only: 0 deterministic, 1 DDPM-like
    clouds: int = 1  # random token groups in the diffuser's self-attention (1 = full attention)
    seed: int = 0


DEFAULTS = Settings()
# the fields that say how to sample, not what size
SAMPLING = tuple(f.name for f in dataclasses.fields(Settings)
                 if f.name not in ("height", "width", "latent_height", "latent_width"))


def image_seed(seed: int, index: int) -> int:
    """The seed of a request's index-th image: images do not depend on how a request is batched."""
    return (seed * 1_000_003 + index) % 2**63


def default_latent_size(height: int, width: int, limits: Limits = LIMITS) -> tuple[int, int]:
    """The latent a height×width output is diffused on: LATENT_SHORT_SIDE tokens across the shorter
    side at the output's aspect ratio, at every resolution (the decoder reads it out at any size).
    The aspect stops at MAX_LATENT_ASPECT, the widest the diffuser trained on: a wider output gets
    the digit on that latent, unstretched, on a background canvas (Pipeline.decode), as a real digit
    on that canvas looks. Shrunk with its aspect kept where a side would pass limits.latent_side."""
    height, width = check_size("output size", (height, width), limits.side)
    aspect = min(max(height / width, 1 / MAX_LATENT_ASPECT), MAX_LATENT_ASPECT)
    h, w = LATENT_SHORT_SIDE * max(aspect, 1), LATENT_SHORT_SIDE * max(1 / aspect, 1)
    scale = min(1.0, limits.latent_side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def guidance_start(cfg_from: float, latent_size: tuple[int, int]) -> float:
    """The log-SNR from which a latent is guided: ``cfg_from`` holds for the square latent of
    LATENT_SHORT_SIDE² tokens, and a latent of n tokens starts later by log(n / LATENT_SHORT_SIDE²).
    Measured, not derived: from the same log-SNR, the 5:3 latents' digits are less varied than the
    square's (0.85–0.88× real against 0.90–0.95×); from −2.3 + log(240/144) = −1.8 they reach
    0.91–0.95× at 97.3–97.5 % class accuracy (README)."""
    return cfg_from + math.log(latent_size[0] * latent_size[1] / LATENT_SHORT_SIDE ** 2)


class Pipeline:
    def __init__(self, autoencoder: RIAE, diffuser: R2ID, conditioner: LabelConditioner):
        if diffuser.config.latent_channels != autoencoder.config.latent_channels:
            raise ValueError(f"the diffuser makes {diffuser.config.latent_channels} latent "
                             f"channels, the autoencoder reads "
                             f"{autoencoder.config.latent_channels}")
        if diffuser.config.cond_dim != conditioner.config.dim:
            raise ValueError(f"the diffuser reads conditions of width {diffuser.config.cond_dim}, "
                             f"the conditioner makes {conditioner.config.dim}")
        self.autoencoder, self.diffuser = autoencoder.eval(), diffuser.eval()
        self.conditioner = conditioner.eval()
        # what a request leaves out: DEFAULTS, or a checkpoint's own (SAMPLING_FILE)
        self.defaults = DEFAULTS

    def settings(self, height=DEFAULTS.height, width=DEFAULTS.width, *, latent_size=None,
                 limits: Limits = LIMITS, **changes) -> Settings:
        """A checked request: any Settings field by keyword, the rest from :attr:`defaults`; a bad
        value raises ValueError naming its range."""
        unknown = set(changes) - set(SAMPLING)
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        s = dataclasses.replace(self.defaults, **changes)
        height, width = check_size("output size", (height, width), limits.side)
        if latent_size is None or (isinstance(latent_size, (tuple, list))
                                   and tuple(latent_size) == (None, None)):
            latent_size = default_latent_size(height, width, limits)
        lh, lw = check_size("latent size", latent_size, limits.latent_side)
        if not isinstance(s.sampler, str) or s.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {s.sampler!r}")
        return Settings(
            height=height, width=width, latent_height=lh, latent_width=lw, sampler=s.sampler,
            steps=check_int("steps", s.steps, 1, limits.steps),
            cfg=check_float("cfg", s.cfg, 0.0, limits.cfg),
            cfg_from=check_float("cfg_from", s.cfg_from, -limits.cfg_from, limits.cfg_from),
            spacing=check_spacing(s.spacing), eta=check_float("eta", s.eta, 0.0, limits.eta),
            clouds=check_int("clouds", s.clouds, 1, lh * lw),
            seed=check_int("seed", s.seed, 0, limits.seed))

    def batch_sizes(self, n: int, s: Settings, budget_gb: float | None = None) -> list[int]:
        """Split n images into batches whose estimated peak memory fits the budget (riid.cost)."""
        per_batch = cost.images_per_batch(self, s, budget_gb)
        return [min(per_batch, n - start) for start in range(0, n, per_batch)]

    @torch.no_grad()
    def sample_latents(self, digits, s: Settings, callback=None,
                       first_index: int = 0) -> torch.Tensor:
        """Diffuse latents [N, Cl, h, w] for a list of digits (0–9), in one batch; image i's noise
        comes from its own seed (:func:`image_seed` of s.seed and first_index + i)."""
        check_callback("callback", callback, 3)
        digits = torch.tensor([check_int("digit", d, 0, 9) for d in digits], dtype=torch.long)
        cond = self.conditioner(self.conditioner.one_hot(digits))
        null = self.conditioner(self.conditioner.one_hot(torch.full_like(digits, -1)))
        generators = [torch.Generator().manual_seed(image_seed(s.seed, first_index + i))
                      for i in range(len(digits))]
        shape = (self.diffuser.config.latent_channels, s.latent_height, s.latent_width)

        def noise():
            return torch.stack([torch.randn(shape, generator=g) for g in generators])

        start = guidance_start(s.cfg_from, (s.latent_height, s.latent_width))

        def denoiser(x, alpha_bar):
            # a noisy step: the label alone, no guidance
            if float(log_snr(alpha_bar[0].double())) < start:
                return self.diffuser.noise(x, alpha_bar, [cond], num_clouds=s.clouds,
                                           generator=generators[0])[0]
            eps_cond, eps_null = self.diffuser.noise(x, alpha_bar, [cond, null],
                                                     num_clouds=s.clouds, generator=generators[0])
            return eps_null + s.cfg * (eps_cond - eps_null)

        return SAMPLERS[s.sampler](denoiser, noise(), sampling_alpha_bars(s.steps, s.spacing),
                                   eta=s.eta, noise=noise, callback=callback)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Latents → images [N, 1, H, W] in [-1, 1], read on :func:`read_size`'s grid, resized."""
        height, width = check_size("output size", (height, width), LIMITS.side)
        latents = check_tensor("latents", latents, self.autoencoder.to_latent.weight.dtype)
        if latents.ndim != 4:
            raise ValueError(f"latents must be [batch, channels, height, width], "
                             f"got {tuple(latents.shape)}")
        # the unstretched digit; the rest is background
        inner = fitted_size(latents.shape[-2:], (height, width))
        images = resize(self.autoencoder.decode(latents, read_size(*inner)).clamp(-1, 1), *inner)
        top, left = (height - inner[0]) // 2, (width - inner[1]) // 2
        return F.pad(images, (left, width - inner[1] - left, top, height - inner[0] - top),
                     value=-1.0)

    @torch.no_grad()
    def generate(self, digits, settings: Settings | None = None, callback=None,
                 budget_gb: float | None = None, first_index: int = 0,
                 **request) -> torch.Tensor:
        """Images [N, 1, height, width] in [-1, 1], one per digit; a checked ``settings`` or, by
        keyword, what :meth:`settings` takes (height, width, latent_size, steps, cfg, ...).
        Image i is the (first_index + i)-th of its seed (:func:`image_seed`): a long run split into
        requests gives the images one request would.

        Large requests run in batches that fit the memory budget; ``callback(i, x, x0)`` counts
        sampler steps across all batches (len(batch_sizes) × steps in all)."""
        if hasattr(digits, "tolist"):  # a tensor or NumPy array of digits
            digits = digits.tolist()
        digits = [digits] if isinstance(digits, int) and not isinstance(digits, bool) else digits
        if not isinstance(digits, (list, tuple)):
            raise ValueError(f"digits must be a digit 0-9 or a list of them, "
                             f"got {type(digits).__name__}")
        check_int("number of digits", len(digits), 1, LIMITS.images)
        check_callback("callback", callback, 3)
        first_index = check_int("first_index", first_index, 0, 2**62)
        if settings is not None and request:
            raise ValueError("give a Settings or keyword settings, not both")
        s = settings if settings is not None else self.settings(**request)
        images, start = [], 0
        for i, size in enumerate(self.batch_sizes(len(digits), s, budget_gb)):
            step = (lambda j, x, x0, k=i: callback(k * s.steps + j, x, x0)) if callback else None
            latents = self.sample_latents(digits[start:start + size], s, step,
                                          first_index=first_index + start)
            images.append(self.decode(latents, s.height, s.width))
            start += size
        return torch.cat(images)

    def save(self, folder) -> None:
        folder = Path(folder)
        save_model(self.autoencoder, folder / "autoencoder")
        save_model(self.diffuser, folder / "diffuser")
        save_model(self.conditioner, folder / "conditioner")
        own = {k: getattr(self.defaults, k) for k in SAMPLING
               if getattr(self.defaults, k) != getattr(DEFAULTS, k)}
        if own:
            write_json(folder / SAMPLING_FILE, own)
        else:
            (folder / SAMPLING_FILE).unlink(missing_ok=True)


def load_pipeline(folder=None, device="cpu") -> Pipeline:
    """Autoencoder, diffuser and conditioner from a checkpoint folder (default_checkpoint()), with
    the folder's own sampling defaults where it has a SAMPLING_FILE (e.g. {"cfg": 3.0})."""
    if folder is not None and not isinstance(folder, (str, os.PathLike)):
        raise ValueError(f"checkpoint folder must be a path, got {type(folder).__name__}")
    folder = Path(folder) if folder is not None else default_checkpoint()
    if not folder.is_dir():
        raise ValueError(f"checkpoint folder not found: {folder}")
    pipe = Pipeline(load_model(folder / "autoencoder", "riae", device),
                    load_model(folder / "diffuser", "r2id", device),
                    load_model(folder / "conditioner", "label_conditioner", device))
    path = folder / SAMPLING_FILE
    if path.exists():
        try:
            sampling = json.loads(path.read_text())
            if not isinstance(sampling, dict) or not set(sampling) <= set(SAMPLING):
                raise ValueError(f"expected a JSON object of sampling settings "
                                 f"({', '.join(SAMPLING)})")
            pipe.defaults = pipe.settings(**sampling)
        except ValueError as err:  # json.JSONDecodeError included
            raise ValueError(f"{path}: {first_line(err)}") from None
    return pipe
