"""Property-based checks of the public API: every call returns finite output of the requested shape,
or raises ValueError, whatever sizes and parameters it is given."""
import math

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from riid import RIAE
from riid.pipeline import SamplingSettings
from riid.presets import AUTOENCODER_PRESETS
from riid.samplers import SAMPLERS
from riid.validate import MAX_CFG, MAX_ETA, MAX_IMAGE_SIDE, MAX_LATENT_SIDE, MAX_STEPS

FAST = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# values that are never a valid size, count or number
JUNK = st.one_of(st.none(), st.booleans(), st.text(max_size=3), st.just(float("nan")), st.just(float("inf")),
                 st.just(-float("inf")), st.sampled_from([0.5, 1.5, -2.25, 1e-300, 3.7, 1e300]),
                 st.lists(st.integers(), max_size=3), st.just(b"8"))
ANY_INT = st.integers(min_value=-(2**70), max_value=2**70)


def sides(valid_max, high):
    """A side length: a valid one up to ``valid_max`` (kept small where the call is run), integral floats,
    edges and integers beyond the allowed [1, high], and junk."""
    return st.one_of(st.integers(1, valid_max), st.integers(1, valid_max).map(float),
                     st.sampled_from([0, -1, -5, high + 1, 10**9]), st.integers(max_value=0),
                     st.integers(min_value=high + 1), JUNK)


def numbers(low, high):
    return st.one_of(st.floats(low, high), st.integers(int(math.ceil(low)), int(high)),
                     st.floats(allow_nan=True, allow_infinity=True), ANY_INT, JUNK)


def assert_valid_settings(s: SamplingSettings):
    assert all(isinstance(v, int) and not isinstance(v, bool) for v in (s.height, s.width, s.latent_height,
                                                                         s.latent_width, s.steps, s.seed))
    assert 1 <= s.height <= MAX_IMAGE_SIDE and 1 <= s.width <= MAX_IMAGE_SIDE
    assert 1 <= s.latent_height <= MAX_LATENT_SIDE and 1 <= s.latent_width <= MAX_LATENT_SIDE
    assert 1 <= s.steps <= MAX_STEPS and s.seed >= 0 and s.sampler in SAMPLERS
    assert math.isfinite(s.cfg) and 0 <= s.cfg <= MAX_CFG and math.isfinite(s.eta) and 0 <= s.eta <= MAX_ETA


@st.composite
def requests(draw, max_side, max_latent, max_steps):
    """Keyword arguments of Pipeline.settings/generate: valid values, with up to two of them spoiled."""
    kw = dict(height=draw(st.integers(1, max_side)), width=draw(st.integers(1, max_side)),
              latent_size=draw(st.one_of(st.none(), st.tuples(st.integers(1, max_latent),
                                                              st.integers(1, max_latent)))),
              steps=draw(st.integers(1, max_steps)), cfg=draw(st.floats(0, MAX_CFG)),
              eta=draw(st.floats(0, 1)),  # eta > 1 with DDIM: see test_generate_with_large_ddim_eta
              sampler=draw(st.sampled_from(SAMPLERS)), seed=draw(st.integers(0, 2**63 - 1)))
    image_side, latent_side = sides(max_side, MAX_IMAGE_SIDE), sides(max_latent, MAX_LATENT_SIDE)
    bad = {"height": image_side, "width": image_side,
           "latent_size": st.one_of(st.tuples(latent_side, latent_side), latent_side, JUNK),
           "steps": st.one_of(st.integers(max_value=0), st.integers(min_value=MAX_STEPS + 1),
                              st.integers(1, max_steps).map(float), JUNK),
           "cfg": numbers(0, MAX_CFG), "eta": st.one_of(st.floats(max_value=-1e-9), st.floats(MAX_ETA + 1e-6),
                                                        st.just(float("nan")), JUNK),
           "sampler": st.one_of(st.text(max_size=5), st.none()), "seed": st.one_of(ANY_INT, JUNK)}
    for key in draw(st.lists(st.sampled_from(sorted(bad)), max_size=2, unique=True)):
        kw[key] = draw(bad[key])
    return kw


def mostly(valid, bad, odds=4):
    """``valid`` odds−1 times in ``odds``, else ``bad`` (one_of would weigh each junk branch equally)."""
    return st.integers(1, odds).flatmap(lambda i: bad if i == 1 else valid)


def small_or_bad(valid_max):
    """Mostly a valid small side, else an out-of-range integer or junk."""
    return mostly(st.integers(1, valid_max), st.one_of(st.sampled_from([0, -3, 4097]), JUNK), odds=6)


@FAST
@given(kw=requests(MAX_IMAGE_SIDE, MAX_LATENT_SIDE, MAX_STEPS))
def test_settings_validate_or_raise_value_error(tiny_pipeline, kw):
    try:
        s = tiny_pipeline.settings(**kw)
    except ValueError as err:
        assert "\n" not in str(err) and str(err)
        event("refused")
        return
    event("accepted")
    assert_valid_settings(s)
    assert (s.height, s.width) == (int(kw["height"]), int(kw["width"]))
    assert s.steps == int(kw["steps"]) and s.sampler == kw["sampler"]


def check_generate(pipe, digits, **kw):
    try:
        images = pipe.generate(digits, **kw)
    except ValueError as err:
        assert "\n" not in str(err) and str(err)
        event("refused")
        return False
    event("accepted")
    assert images.shape == (len(digits), 1, int(kw["height"]), int(kw["width"]))
    assert images.dtype == torch.float32
    assert torch.isfinite(images).all() and images.abs().max() <= 1
    return True


DIGITS = st.one_of(st.lists(st.integers(0, 9), min_size=1, max_size=3), st.lists(st.integers(0, 9), min_size=1,
                                                                                  max_size=3),
                   st.lists(st.integers(-3, 12), max_size=3))


@FAST
@given(digits=DIGITS, kw=requests(24, 6, 3))
def test_generate_returns_finite_images_or_raises_value_error(tiny_pipeline, digits, kw):
    check_generate(tiny_pipeline, digits, **kw)


@pytest.mark.parametrize("eta", [1.01, 2.0, MAX_ETA])
def test_generate_with_large_ddim_eta(tiny_pipeline, eta):
    images = tiny_pipeline.generate([1], height=8, width=8, steps=2, eta=eta, sampler="ddim", seed=0)
    assert images.shape == (1, 1, 8, 8) and images.dtype == torch.float32
    assert torch.isfinite(images).all()


@pytest.fixture(scope="module")
def riae():
    torch.manual_seed(0)
    return RIAE(AUTOENCODER_PRESETS["tiny"]).eval()


@FAST
@given(h=small_or_bad(40), w=small_or_bad(40), latent=st.one_of(st.none(), st.tuples(small_or_bad(12), small_or_bad(12))),
       fraction=mostly(st.floats(0.01, 1), st.one_of(st.sampled_from([0.0, -0.5, 1.5, float("nan")]), JUNK)),
       batch=st.integers(1, 3), seed=st.integers(0, 1000))
def test_encode_returns_finite_latents_or_raises_value_error(riae, h, w, latent, fraction, batch, seed):
    g = torch.Generator().manual_seed(seed)
    shape_ok = all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 40 for v in (h, w))
    image = torch.rand(batch, 1, h if shape_ok else 4, w if shape_ok else 4, generator=g) * 2 - 1
    try:
        with torch.no_grad():
            z = riae.encode(image, latent, fraction)
    except ValueError as err:
        assert "\n" not in str(err)
        event("refused")
        return
    event("accepted")
    expected = riae.default_latent_size(*image.shape[-2:]) if latent is None else tuple(int(v) for v in latent)
    assert z.shape == (batch, riae.config.latent_channels, *expected)
    assert torch.isfinite(z).all()


@FAST
@given(lh=st.integers(1, 8), lw=st.integers(1, 8), out=st.tuples(small_or_bad(64), small_or_bad(64)),
       chunk=mostly(st.integers(1, 5000), st.one_of(st.sampled_from([0, -1]), JUNK)),
       scale=st.sampled_from([0.0, 1.0, 10.0, 1e4]), seed=st.integers(0, 1000))
def test_decode_returns_finite_images_or_raises_value_error(riae, lh, lw, out, chunk, scale, seed):
    latent = torch.randn(2, riae.config.latent_channels, lh, lw, generator=torch.Generator().manual_seed(seed)) * scale
    try:
        with torch.no_grad():
            image = riae.decode(latent, out, chunk=chunk)
    except ValueError as err:
        assert "\n" not in str(err)
        event("refused")
        return
    event("accepted")
    assert image.shape == (2, 1, int(out[0]), int(out[1]))
    assert torch.isfinite(image).all()
