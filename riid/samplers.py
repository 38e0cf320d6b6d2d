"""Samplers: pure functions of a denoiser ``denoiser(x, alpha_bar) -> epsilon``, one signature:

    sampler(denoiser, x, alpha_bars, *, eta=0.0, noise=None, callback=None) -> x

x is the starting noise, alpha_bars the values to visit from noisy to clean (see
:func:`riid.schedule.sampling_alpha_bars`), ``noise()`` draws fresh noise shaped like x (stochastic
samplers only; default torch.randn_like), and ``callback(step, x, x0)`` runs after every step with
the current sample and its clean-image estimate. ``SAMPLERS`` maps names to them."""
import math
from typing import Callable

import torch
from torch import Tensor

from .schedule import log_snr

Denoiser = Callable[[Tensor, Tensor], Tensor]
Noise = Callable[[], Tensor] | None
Callback = Callable[[int, Tensor, Tensor], None] | None


def _predict_x0(denoiser: Denoiser, x: Tensor, alpha_bar: float) -> tuple[Tensor, Tensor]:
    eps = denoiser(x, torch.full((x.shape[0],), alpha_bar, device=x.device, dtype=x.dtype))
    return (x - (1 - alpha_bar) ** 0.5 * eps) / alpha_bar ** 0.5, eps


@torch.no_grad()
def sample_ddim(denoiser: Denoiser, x: Tensor, alpha_bars: Tensor, *,
                eta: float = 0.0, noise: Noise = None, callback: Callback = None) -> Tensor:
    """DDIM: eta = 0 is deterministic, 1 matches DDPM's variance, larger adds more fresh noise."""
    ab = alpha_bars.tolist()
    for i, (a, a_next) in enumerate(zip(ab, ab[1:])):
        x0, eps = _predict_x0(denoiser, x, a)
        sigma = eta * ((1 - a_next) / (1 - a) * (1 - a / a_next)) ** 0.5
        sigma = min(sigma, (1 - a_next) ** 0.5)  # eta > 1 takes no more noise than the step holds
        x = a_next ** 0.5 * x0 + max(0.0, 1 - a_next - sigma ** 2) ** 0.5 * eps
        if sigma > 0:
            x = x + sigma * (noise() if noise is not None else torch.randn_like(x))
        if callback is not None:
            callback(i, x, x0)
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoiser: Denoiser, x: Tensor, alpha_bars: Tensor, *,
                    eta: float = 0.0, noise: Noise = None, callback: Callback = None) -> Tensor:
    """DPM-Solver++(2M): a second-order multistep solver of the probability-flow ODE in x0 space,
    deterministic (no ``eta``, ``noise``); its last step is first order, steadier with few steps."""
    ab = alpha_bars.tolist()
    lam = log_snr(alpha_bars.double()).tolist()  # +inf at the clean end (alpha_bar = 1)
    x0_prev, h_prev = None, None
    for i, (a, a_next) in enumerate(zip(ab, ab[1:])):
        x0, _ = _predict_x0(denoiser, x, a)
        h = lam[i + 1] - lam[i]
        # h = 0: two equal (clamped) alpha_bars
        if x0_prev is None or i == len(ab) - 2 or h == 0 or h_prev == 0:
            d = x0
        else:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        # x_next = (σ_next/σ)·x − α_next·(e^{−h} − 1)·D
        x = ((1 - a_next) / (1 - a)) ** 0.5 * x - a_next ** 0.5 * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
        if callback is not None:
            callback(i, x, x0)
    return x


SAMPLERS = {"ddim": sample_ddim, "dpmpp": sample_dpmpp_2m}
