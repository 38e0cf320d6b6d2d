"""Property-based checks of the public API and of ``riid sample``: every call either succeeds with output of
the requested shape (finite, float32) or raises ValueError with a one-line message, whatever sizes, dtypes
and parameters it is given; the CLI exits 0 with the right files or 2 with one line and nothing written.
None reaches a torch internal error."""
import contextlib
import io
import math
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from riid import RIAE, cli
from riid.pipeline import Settings
from riid.presets import AUTOENCODER_PRESETS
from riid.samplers import SAMPLERS
from riid.schedule import SPACINGS
from riid.validate import LIMITS, check_callback

FAST = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# values that are never a valid size, count or number
JUNK = st.one_of(st.none(), st.booleans(), st.text(max_size=3), st.just(float("nan")), st.just(float("inf")),
                 st.just(-float("inf")), st.sampled_from([0.5, 1.5, -2.25, 1e-300, 3.7, 1e300]),
                 st.lists(st.integers(), max_size=3), st.just(b"8"))
ANY_INT = st.integers(min_value=-(2**70), max_value=2**70)
DTYPES = st.sampled_from([torch.float32, torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.uint8,
                          torch.int64, torch.bool])


def sides(valid_max, high):
    """A side length: a valid one up to ``valid_max`` (kept small where the call is run), integral floats,
    edges and integers beyond the allowed [1, high], and junk."""
    return st.one_of(st.integers(1, valid_max), st.integers(1, valid_max).map(float),
                     st.sampled_from([0, -1, -5, high + 1, 10**9]), st.integers(max_value=0),
                     st.integers(min_value=high + 1), JUNK)


def numbers(low, high):
    return st.one_of(st.floats(low, high), st.integers(int(math.ceil(low)), int(high)),
                     st.floats(allow_nan=True, allow_infinity=True), ANY_INT, JUNK)


def assert_valid_settings(s: Settings):
    assert all(isinstance(v, int) and not isinstance(v, bool) for v in (s.height, s.width, s.latent_height,
                                                                         s.latent_width, s.steps, s.seed, s.clouds))
    assert 1 <= s.height <= LIMITS.side and 1 <= s.width <= LIMITS.side
    assert 1 <= s.latent_height <= LIMITS.latent_side and 1 <= s.latent_width <= LIMITS.latent_side
    assert 1 <= s.steps <= LIMITS.steps and 0 <= s.seed <= LIMITS.seed and s.sampler in SAMPLERS
    assert s.spacing in SPACINGS and 1 <= s.clouds <= s.latent_height * s.latent_width
    for value, high in ((s.cfg, LIMITS.cfg), (s.eta, LIMITS.eta)):
        assert math.isfinite(value) and 0 <= value <= high
    assert math.isfinite(s.cfg_from) and abs(s.cfg_from) <= LIMITS.cfg_from


@st.composite
def requests(draw, max_side, max_latent, max_steps):
    """Keyword arguments of Pipeline.settings/generate: valid values, with up to two of them spoiled."""
    kw = dict(height=draw(st.integers(1, max_side)), width=draw(st.integers(1, max_side)),
              latent_size=draw(st.one_of(st.none(), st.tuples(st.integers(1, max_latent),
                                                              st.integers(1, max_latent)))),
              steps=draw(st.integers(1, max_steps)), cfg=draw(st.floats(0, LIMITS.cfg)),
              cfg_from=draw(st.floats(-LIMITS.cfg_from, LIMITS.cfg_from)), eta=draw(st.floats(0, LIMITS.eta)),
              sampler=draw(st.sampled_from(sorted(SAMPLERS))), spacing=draw(st.sampled_from(SPACINGS)),
              clouds=draw(st.integers(1, 3)), seed=draw(st.integers(0, LIMITS.seed)))
    image_side, latent_side = sides(max_side, LIMITS.side), sides(max_latent, LIMITS.latent_side)
    bad = {"height": image_side, "width": image_side,
           "latent_size": st.one_of(st.tuples(latent_side, latent_side), st.lists(latent_side, max_size=3),
                                    st.text(max_size=3), st.just(b"8"), st.floats(), st.booleans(), JUNK),
           "steps": st.one_of(st.integers(max_value=0), st.integers(min_value=LIMITS.steps + 1),
                              st.integers(1, max_steps).map(float), JUNK),
           "cfg": numbers(0, LIMITS.cfg), "cfg_from": numbers(-LIMITS.cfg_from, LIMITS.cfg_from),
           "eta": st.one_of(st.floats(max_value=-1e-9), st.floats(LIMITS.eta + 1e-6), st.just(float("nan")), JUNK),
           "sampler": st.one_of(st.text(max_size=5), st.none()), "spacing": st.one_of(st.text(max_size=6), JUNK),
           "clouds": st.one_of(st.integers(max_value=0), st.integers(min_value=10**6), JUNK),
           "seed": st.one_of(ANY_INT, JUNK)}
    for key in draw(st.lists(st.sampled_from(sorted(bad)), max_size=2, unique=True)):
        kw[key] = draw(bad[key])
    return kw


def mostly(valid, bad, odds=4):
    """``valid`` odds−1 times in ``odds``, else ``bad`` (one_of would weigh each junk branch equally); the
    draw hypothesis favours (the smallest) is valid."""
    return st.integers(1, odds).flatmap(lambda i: bad if i == odds else valid)


def small_or_bad(valid_max):
    """Mostly a valid small side, else an out-of-range integer or junk."""
    return mostly(st.integers(1, valid_max), st.one_of(st.sampled_from([0, -3, 4097]), JUNK), odds=6)


def refused(err: ValueError) -> None:
    message = str(err)
    assert message and "\n" not in message, message
    event("refused")


@FAST
@given(kw=requests(LIMITS.side, LIMITS.latent_side, LIMITS.steps))
def test_settings_validate_or_raise_value_error(tiny_pipeline, kw):
    try:
        s = tiny_pipeline.settings(**kw)
    except ValueError as err:
        return refused(err)
    event("accepted")
    assert_valid_settings(s)
    assert (s.height, s.width) == (int(kw["height"]), int(kw["width"]))
    assert s.steps == int(kw["steps"]) and s.sampler == kw["sampler"] and s.spacing == kw["spacing"]


DIGITS = mostly(st.one_of(st.lists(st.integers(0, 9), min_size=1, max_size=3), st.integers(0, 9)),
                st.one_of(st.lists(st.integers(-3, 12), max_size=3), JUNK), odds=6)


@FAST
@given(digits=DIGITS, kw=requests(24, 6, 3), counted=st.booleans())
def test_generate_returns_finite_images_or_raises_value_error(tiny_pipeline, digits, kw, counted):
    calls = []
    try:
        images = tiny_pipeline.generate(digits, callback=(lambda i, x, x0: calls.append(i)) if counted else None, **kw)
    except ValueError as err:
        return refused(err)
    event("accepted")
    n = 1 if isinstance(digits, int) else len(digits)
    assert images.shape == (n, 1, int(kw["height"]), int(kw["width"]))
    assert images.dtype == torch.float32
    assert torch.isfinite(images).all() and images.abs().max() <= 1
    assert not counted or calls == list(range(len(calls))) and len(calls) % int(kw["steps"]) == 0


@pytest.mark.parametrize("latent_size", [2.5, True, float("nan"), object()])
def test_latent_size_that_is_not_a_pair_is_a_value_error(tiny_pipeline, latent_size):
    with pytest.raises(ValueError, match="latent size"):
        tiny_pipeline.settings(8, 8, latent_size=latent_size)


@pytest.mark.parametrize("eta", [1.01, 2.0, LIMITS.eta])
def test_generate_with_large_ddim_eta(tiny_pipeline, eta):
    images = tiny_pipeline.generate([1], height=8, width=8, steps=2, eta=eta, sampler="ddim", seed=0)
    assert images.shape == (1, 1, 8, 8) and images.dtype == torch.float32
    assert torch.isfinite(images).all()


@pytest.mark.parametrize("callback", [lambda: None, lambda i: None, lambda i, x: None, lambda i, x, x0, extra: None,
                                      "not callable", 3])
def test_callback_checker_refuses_the_wrong_arity(callback):
    with pytest.raises(ValueError, match="callback") as info:
        check_callback("callback", callback, 3)
    assert "\n" not in str(info.value)
    for fine in (None, lambda i, x, x0: None, lambda *args: None, lambda i, x, x0, extra=1: None, print):
        assert check_callback("callback", fine, 3) is fine


@pytest.mark.parametrize("callback", [lambda i: None, lambda i, x, x0, extra: None, 3])
def test_generate_refuses_a_callback_of_the_wrong_arity_before_sampling(tiny_pipeline, monkeypatch, callback):
    monkeypatch.setattr(type(tiny_pipeline), "sample_latents", lambda *a, **k: pytest.fail("sampled"))
    with pytest.raises(ValueError, match="callback"):
        tiny_pipeline.generate([1], height=8, width=8, steps=2, callback=callback)


@pytest.fixture(scope="module")
def riae():
    torch.manual_seed(0)
    return RIAE(AUTOENCODER_PRESETS["tiny"]).eval()


def tensor(shape, dtype, seed, poison):
    """Values in [-1, 1] as ``dtype`` (integers 0/1, as an image might come), with NaN or inf where asked."""
    x = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    if poison and x.numel():
        x.view(-1)[seed % x.numel()] = poison
    return x.to(dtype) if dtype.is_floating_point else (x > 0).to(dtype)


POISON = mostly(st.just(0.0), st.sampled_from([float("nan"), float("inf"), -float("inf")]), odds=5)


def accepts(dtype, poison) -> bool:
    return dtype.is_floating_point and not poison


@FAST
@given(h=small_or_bad(40), w=small_or_bad(40),
       latent=mostly(st.tuples(small_or_bad(12), small_or_bad(12)), st.none(), 8),
       fraction=mostly(st.floats(0.01, 1), st.one_of(st.sampled_from([0.0, -0.5, 1.5, float("nan")]), JUNK)),
       batch=st.integers(1, 3), seed=st.integers(0, 1000), dtype=DTYPES, poison=POISON)
def test_encode_returns_finite_latents_or_raises_value_error(riae, h, w, latent, fraction, batch, seed, dtype, poison):
    shape_ok = all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 40 for v in (h, w))
    image = tensor((batch, 1, h if shape_ok else 4, w if shape_ok else 4), dtype, seed, poison)
    try:
        with torch.no_grad():
            z = riae.encode(image, latent, fraction)
    except ValueError as err:
        return refused(err)
    event("accepted")
    assert accepts(dtype, poison) and latent is not None
    assert z.shape == (batch, riae.config.latent_channels, *(int(v) for v in latent))
    assert z.dtype == torch.float32 and torch.isfinite(z).all()


@FAST
@given(lh=st.integers(1, 8), lw=st.integers(1, 8), out=st.tuples(small_or_bad(64), small_or_bad(64)),
       chunk=mostly(st.integers(1, 5000), st.one_of(st.sampled_from([0, -1]), JUNK)),
       scale=st.sampled_from([0.0, 1.0, 10.0, 1e4]), seed=st.integers(0, 1000), dtype=DTYPES, poison=POISON)
def test_decode_returns_finite_images_or_raises_value_error(riae, lh, lw, out, chunk, scale, seed, dtype, poison):
    latent = tensor((2, riae.config.latent_channels, lh, lw), torch.float32, seed, poison) * scale
    latent = latent.to(dtype) if dtype.is_floating_point else (latent > 0).to(dtype)
    try:
        with torch.no_grad():
            image = riae.decode(latent, out, chunk=chunk)
    except ValueError as err:
        return refused(err)
    event("accepted")
    assert accepts(dtype, poison)
    assert image.shape == (2, 1, int(out[0]), int(out[1]))
    assert image.dtype == torch.float32 and torch.isfinite(image).all()


# ---- riid sample over its argument space --------------------------------------------------

JUNK_TEXT = st.sampled_from(["", " ", "abc", "nan", "inf", "-inf", "1.5", "-1", "0", "1e9", "4097", "0x10",
                             "99999999999999999999", "--"])


def arg(valid):
    """A valid value (as text) nine times in ten, else junk: about a third of the requests are all valid."""
    return mostly(valid.map(str), JUNK_TEXT, odds=10)


@st.composite
def sample_args(draw):
    """argv of ``riid sample`` (output paths as placeholders): valid small requests, junk and bad paths."""
    args = ["--digit", draw(arg(st.integers(0, 9))), "--n", draw(arg(st.integers(1, 3))),
            "--height", draw(arg(st.integers(1, 24))), "--width", draw(arg(st.integers(1, 24)))]
    latent = draw(st.sampled_from(["none", "both", "both", "one"]))
    if latent != "none":
        args += ["--latent-height", draw(arg(st.integers(1, 6)))]
    if latent == "both":
        args += ["--latent-width", draw(arg(st.integers(1, 6)))]
    optional = {"--steps": arg(st.integers(1, 3)), "--cfg": arg(st.floats(0, LIMITS.cfg)),
                "--cfg-from": arg(st.floats(-LIMITS.cfg_from, LIMITS.cfg_from)), "--eta": arg(st.floats(0, LIMITS.eta)),
                "--sampler": arg(st.sampled_from(sorted(SAMPLERS))), "--spacing": arg(st.sampled_from(SPACINGS)),
                "--seed": arg(st.integers(0, LIMITS.seed)), "--clouds": arg(st.integers(1, 4)),
                "--time-limit": arg(st.floats(1, 1e6))}
    for flag in draw(st.lists(st.sampled_from(sorted(optional)), max_size=5, unique=True)):
        args += [flag, draw(optional[flag])]
    args += ["--out", draw(st.sampled_from(["{out}"] * 12 + ["{file}", "{file}/sub", ""]))]
    grid = draw(st.sampled_from(["none"] * 6 + ["{tmp}/grid.png"] * 3 + ["{tmp}/grid.jpg", "{tmp}/folder.png",
                                                                        "{file}/grid.png"]))
    return args + ([] if grid == "none" else ["--grid", grid])


def snapshot(folder: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}


@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(args=sample_args())
def test_sample_cli_exits_0_with_the_files_or_2_in_one_line(tiny_pipeline_dir, args):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "file").write_text("keep")
        (tmp / "folder.png").mkdir()
        paths = dict(tmp=tmp, out=tmp / "out", file=tmp / "file")
        argv = ["sample", "--checkpoint", str(tiny_pipeline_dir), *[a.format(**paths) for a in args]]
        before = snapshot(tmp)
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = cli.main(argv)
            except SystemExit as exit_:  # argparse's own errors
                code = exit_.code
        err = err.getvalue()
        assert "Traceback" not in err and code in (0, 2), err
        if code == 2:
            event(f"refused: {err.split('error: ', 1)[-1][:25]}")
            assert err.startswith(("riid sample: error: ", "riid: error: ")) and err.count("\n") == 1, err
            assert snapshot(tmp) == before  # nothing written
            return
        event("accepted")
        n, height, width = (int(argv[argv.index(flag) + 1]) for flag in ("--n", "--height", "--width"))
        pngs = sorted((tmp / "out").iterdir())
        assert len(pngs) == n
        for png in pngs:
            with Image.open(png) as im:
                assert im.size == (width, height) and im.mode == "L"
        if "--grid" in argv:
            assert Path(argv[argv.index("--grid") + 1]).is_file()
