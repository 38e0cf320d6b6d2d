"""The cosine noise schedule: alpha_bar(t) = cos²(((t + s) / (1 + s))·π/2), t in [0, 1]."""
import math

import torch

S = 0.008
MIN_ALPHA_BAR = 1e-4  # alpha_bar(1) is 0; keep a trace of signal so log-SNR stays finite
SPACINGS = ("time", "logsnr")
# what a diffuser's head answers: the noise ε, v = √ᾱ·ε − √(1−ᾱ)·x₀ (learns several times faster
# from scratch: benchmarks/learning_speed.py), or the rectified-flow velocity ε − x₀
PREDICTIONS = ("eps", "v", "flow")


def cosine_alpha_bar(t: torch.Tensor) -> torch.Tensor:
    return (torch.cos((t + S) / (1 + S) * math.pi / 2) ** 2).clamp(MIN_ALPHA_BAR, 1.0)


def cosine_time(alpha_bar: torch.Tensor) -> torch.Tensor:
    """The t at which cosine_alpha_bar(t) is alpha_bar (its inverse), clamped to [0, 1]."""
    return (torch.arccos(alpha_bar.sqrt()) * 2 * (1 + S) / math.pi - S).clamp(0.0, 1.0)


def log_snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    """λ = ½·log(alpha_bar / (1 − alpha_bar)), the half log signal-to-noise ratio."""
    return 0.5 * torch.log(alpha_bar / (1 - alpha_bar))


def check_spacing(spacing: str) -> str:
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {', '.join(SPACINGS)}, got {spacing!r}")
    return spacing


def sampling_alpha_bars(steps: int, spacing: str = "time", device=None) -> torch.Tensor:
    """alpha_bar at steps + 1 points from pure noise (t = 1) to clean (t = 0), the last exactly 1
    (cosine_alpha_bar(0) is 0.99984) so that the final step returns the clean estimate, noise-free.
    ``time``: evenly spaced in t, crowding the steps into the middle (|λ| < 2) and ending with a
    long jump from λ ≈ 2.4 to clean. ``logsnr``: evenly spaced in λ between the same ends, moving
    steps to both ends: sharper digits, but fewer steps where their shape is settled."""
    check_spacing(spacing)
    t = torch.linspace(1.0, 0.0, steps + 1, device=device, dtype=torch.float64)
    alpha_bars = cosine_alpha_bar(t)
    if spacing != "time":
        ends = log_snr(alpha_bars[[0, -1]]).tolist()
        lam = torch.linspace(*ends, steps + 1, device=device, dtype=torch.float64)
        alpha_bars = torch.sigmoid(2 * lam)
    alpha_bars[-1] = 1.0
    return alpha_bars


def _per_item(alpha_bar: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return alpha_bar.view(-1, *([1] * (like.ndim - 1)))


def add_noise(x0: torch.Tensor, alpha_bar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(alpha_bar)·x0 + sqrt(1 − alpha_bar)·noise, alpha_bar [B]."""
    a = _per_item(alpha_bar, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def prediction_target(prediction: str, x0: torch.Tensor, alpha_bar: torch.Tensor,
                      noise: torch.Tensor) -> torch.Tensor:
    """What a diffuser whose head answers ``prediction`` (PREDICTIONS) is trained to answer for
    add_noise(x0, alpha_bar, noise)."""
    if prediction == "eps":
        return noise
    if prediction == "flow":
        return noise - x0
    a = _per_item(alpha_bar, x0)
    return a.sqrt() * noise - (1 - a).sqrt() * x0


def noise_from(prediction: str, answer: torch.Tensor, x_t: torch.Tensor,
               alpha_bar: torch.Tensor) -> torch.Tensor:
    """The noise of x_t implied by a head's answer: ε = √ᾱ·v + √(1−ᾱ)·x_t for v, and
    ε = (x_t + √ᾱ·u) / (√ᾱ + √(1−ᾱ)) for the flow velocity u = ε − x₀."""
    if prediction == "eps":
        return answer
    a = _per_item(alpha_bar, x_t)
    if prediction == "flow":
        return (x_t + a.sqrt() * answer) / (a.sqrt() + (1 - a).sqrt())
    return a.sqrt() * answer + (1 - a).sqrt() * x_t
