"""Sampler maths against denoisers whose answer is known: an oracle that knows x0, and Gaussian data."""
import math

import pytest
import torch

from riid.samplers import SAMPLERS, sample_ddim, sample_dpmpp_2m
from riid.schedule import (MIN_ALPHA_BAR, PREDICTIONS, SPACINGS, add_noise, cosine_alpha_bar, cosine_time, log_snr,
                           noise_from, prediction_target, sampling_alpha_bars)


def oracle_for(x0: torch.Tensor):
    """The exact denoiser when the data is the single point x0: eps = (x − √ab·x0) / √(1 − ab)."""
    def denoiser(x, alpha_bar):
        assert alpha_bar.shape == (x.shape[0],) and alpha_bar.dtype == x.dtype
        a = alpha_bar.view(-1, *[1] * (x.ndim - 1))
        return (x - a.sqrt() * x0) / (1 - a).sqrt()
    return denoiser


def gaussian_denoiser(std: float):
    """The exact denoiser for data ~ N(0, std²): E[eps | x] = √(1 − ab)·x / (ab·std² + 1 − ab)."""
    def denoiser(x, alpha_bar):
        a = alpha_bar.view(-1, *[1] * (x.ndim - 1))
        return (1 - a).sqrt() * x / (a * std ** 2 + 1 - a)
    return denoiser


def problem(seed=0, shape=(2, 3, 4, 5)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


def run(sampler, denoiser, x, steps, eta=0.0, seed=0, callback=None):
    """One sampler through the registry's one signature; fresh noise from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    noise = lambda: torch.randn(x.shape, generator=g, dtype=x.dtype)  # noqa: E731
    return SAMPLERS[sampler](denoiser, x, sampling_alpha_bars(steps), eta=eta, noise=noise, callback=callback)


def test_schedule_runs_from_noise_to_clean():
    ab = sampling_alpha_bars(30)
    assert ab.shape == (31,) and ab.dtype == torch.float64
    assert torch.all(ab[1:] > ab[:-1])  # strictly less noise every step
    assert ab[0] == pytest.approx(MIN_ALPHA_BAR, abs=1e-6)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    expected = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    torch.testing.assert_close(cosine_alpha_bar(t)[:-1], expected[:-1])
    torch.testing.assert_close(cosine_time(cosine_alpha_bar(t))[:-1], t[:-1])  # its inverse, short of the clamp


def test_logsnr_spacing_is_even_in_log_snr_between_the_same_ends():
    time, even = sampling_alpha_bars(20), sampling_alpha_bars(20, "logsnr")
    assert even[0] == pytest.approx(float(time[0])) and even[-1] == 1.0
    steps = torch.diff(log_snr(even[:-1]))
    assert torch.all(steps > 0)
    torch.testing.assert_close(steps, torch.full_like(steps, float(steps[0])))
    assert even[5] < time[5]  # more of the steps at high noise than with even time
    with pytest.raises(ValueError, match="spacing must be one of time, logsnr"):
        sampling_alpha_bars(20, "karras")


def test_dpmpp_survives_repeated_alpha_bars():
    """Many even time steps clamp the first alpha_bars to the same minimum (h = 0): no division by zero."""
    ab = sampling_alpha_bars(300)
    assert ab[0] == ab[1]
    x, _ = problem()
    out = sample_dpmpp_2m(lambda x, a: 0.1 * x, x, ab)
    assert torch.isfinite(out).all()


def test_add_noise():
    x0, noise = problem()
    ab = torch.tensor([0.25, 0.64], dtype=torch.float64)
    out = add_noise(x0, ab, noise)
    torch.testing.assert_close(out[1], 0.8 * x0[1] + 0.6 * noise[1])
    torch.testing.assert_close(out[0], 0.5 * x0[0] + math.sqrt(0.75) * noise[0])


@pytest.mark.parametrize("sampler,eta", [("ddim", 0.0), ("ddim", 1.0), ("dpmpp", 0.0)])
def test_oracle_x0_estimates_are_exact_at_every_step(sampler, eta):
    x0, x = problem()
    seen = []
    out = run(sampler, oracle_for(x0), x, steps=12, eta=eta,
              callback=lambda i, xi, x0i: seen.append((i, xi.clone(), x0i.clone())))
    assert [s[0] for s in seen] == list(range(12))
    for _, xi, x0i in seen:
        assert xi.shape == x.shape
        torch.testing.assert_close(x0i, x0, rtol=0, atol=1e-9)
    torch.testing.assert_close(seen[-1][1], out, rtol=0, atol=0)  # the callback sees the final sample


@pytest.mark.parametrize("sampler,eta", [("ddim", 0.0), ("ddim", 1.0), ("dpmpp", 0.0)])
@pytest.mark.parametrize("steps", [1, 5, 50])
def test_exact_denoiser_recovers_x0(sampler, eta, steps):
    x0, x = problem()
    torch.testing.assert_close(run(sampler, oracle_for(x0), x, steps, eta), x0, rtol=0, atol=1e-6)


@pytest.mark.parametrize("steps", [1, 2, 7, 40])
def test_dpmpp_matches_ddim_on_the_oracle(steps):
    x0, x = problem(seed=steps)
    ddim = run("ddim", oracle_for(x0), x, steps)
    dpmpp = run("dpmpp", oracle_for(x0), x, steps)
    torch.testing.assert_close(dpmpp, ddim, rtol=0, atol=1e-6)


@pytest.mark.parametrize("sampler,steps,eta,tolerance", [
    ("ddim", 100, 0.0, 0.03), ("ddim", 100, 1.0, 0.05), ("dpmpp", 20, 0.0, 0.03),
])
def test_samplers_reproduce_the_spread_of_gaussian_data(sampler, steps, eta, tolerance):
    # for data ~ N(0, 0.5²) the exact denoiser is known; a correct sampler maps N(0, 1) noise to std 0.5
    z = torch.randn(20000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = run(sampler, gaussian_denoiser(0.5), z, steps, eta)
    assert out.std().item() == pytest.approx(0.5, rel=tolerance)
    assert out.mean().abs().item() < 0.02


def test_dpmpp_is_more_accurate_than_ddim_with_few_steps():
    z = torch.randn(20000, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ddim = run("ddim", gaussian_denoiser(0.5), z, 8).std().item()
    dpmpp = run("dpmpp", gaussian_denoiser(0.5), z, 8).std().item()
    assert abs(dpmpp - 0.5) < abs(ddim - 0.5)


def test_ddim_with_eta_is_seeded():
    _, x = problem()
    denoiser = gaussian_denoiser(0.5)  # a denoiser whose answer keeps depending on the fresh noise
    a, b, c = (run("ddim", denoiser, x, 10, eta=1.0, seed=s) for s in (3, 3, 4))
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3
    # eta = 0 ignores the generator entirely
    assert torch.equal(run("ddim", denoiser, x, 10, 0.0, seed=3), run("ddim", denoiser, x, 10, 0.0, seed=4))


@pytest.mark.parametrize("eta", [0.5, 1.0, 1.5, 2.0, 5.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ddim_large_eta_stays_real_and_finite(eta, dtype):
    z = torch.randn(500, 1, generator=torch.Generator().manual_seed(0), dtype=dtype)
    out = run("ddim", gaussian_denoiser(0.5), z, 25, eta)
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    assert 0.2 < out.std().item() < 0.8


def test_sampler_registry_shares_one_signature():
    assert SAMPLERS == {"ddim": sample_ddim, "dpmpp": sample_dpmpp_2m}
    assert SPACINGS == ("time", "logsnr")
    x0, x = problem()
    for sampler in SAMPLERS.values():  # keyword-only options: a positional eta is a mistake, refused
        with pytest.raises(TypeError):
            sampler(oracle_for(x0), x, sampling_alpha_bars(2), 0.5)


def test_samplers_follow_input_dtype():
    x0, x = problem()
    for sampler in SAMPLERS:
        assert run(sampler, oracle_for(x0.float()), x.float(), 4).dtype == torch.float32


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_a_perfect_answer_of_either_kind_gives_back_the_noise(prediction):
    x0, eps = torch.randn(4, 3, 5, 6), torch.randn(4, 3, 5, 6)
    alpha_bar = torch.tensor([MIN_ALPHA_BAR, 0.3, 0.7, 0.999])
    x_t = add_noise(x0, alpha_bar, eps)
    answer = prediction_target(prediction, x0, alpha_bar, eps)
    assert torch.allclose(noise_from(prediction, answer, x_t, alpha_bar), eps, atol=1e-5)
    if prediction == "v":  # v is neither the noise nor the image: at high noise it is -x0
        assert torch.allclose(answer[0], -x0[0], atol=0.05)
