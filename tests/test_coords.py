"""Dual coordinates at cell centres: grids of any size tile the same continuous domain."""
import pytest
import torch

from riid.coords import COORD_CHANNELS, cell_centres, dual_coords, fourier_features, grid_features

SIZES = [(1, 1), (1, 7), (3, 97), (5, 5), (8, 8), (7, 12), (32, 24), (33, 17)]


def grid(h, w, **kw):
    """dual_coords as [h, w, 4]."""
    return dual_coords(h, w, **kw)[0].reshape(h, w, 4)


@pytest.mark.parametrize("n", [1, 2, 3, 8, 13])
def test_finer_grid_centres_interleave_coarser(n):
    coarse, fine = cell_centres(n), cell_centres(2 * n)
    # every coarse cell splits into two fine cells, one on each side of its centre
    assert torch.all(fine[0::2] < coarse) and torch.all(coarse < fine[1::2])
    torch.testing.assert_close((fine[0::2] + fine[1::2]) / 2, coarse, rtol=0, atol=1e-7)


@pytest.mark.parametrize("h,w", SIZES)
def test_2x_finer_grid_averages_to_coarse_grid_in_both_systems(h, w):
    coarse, fine = grid(h, w), grid(2 * h, 2 * w)
    blocks = fine.reshape(h, 2, w, 2, 4).mean(dim=(1, 3))
    torch.testing.assert_close(blocks, coarse, rtol=0, atol=1e-6)


def extent(values: torch.Tensor, pitch: float) -> tuple[float, float]:
    """The span of the cells whose centres are ``values``."""
    return values.min().item() - pitch / 2, values.max().item() + pitch / 2


@pytest.mark.parametrize("h,w", SIZES)
def test_relative_coords_of_hxw_and_2hx2w_span_the_same_extent(h, w):
    for factor in (1, 2, 3):
        c = grid(factor * h, factor * w)
        longest = factor * max(h, w)
        ext_y, ext_x = extent(c[..., 0], 1 / longest), extent(c[..., 1], 1 / longest)
        # relative: the longer side spans [-0.5, 0.5], the shorter ±0.5·short/long
        assert ext_y == pytest.approx((-0.5 * h / max(h, w), 0.5 * h / max(h, w)), abs=1e-6)
        assert ext_x == pytest.approx((-0.5 * w / max(h, w), 0.5 * w / max(h, w)), abs=1e-6)


@pytest.mark.parametrize("h,w", SIZES + [(1, 4000), (4000, 1)])
def test_absolute_coords_span_the_full_square(h, w):
    c = grid(h, w)
    ay, ax = c[..., 2], c[..., 3]
    for values, n in ((ay, h), (ax, w)):
        assert values.min() > -0.5 and values.max() < 0.5
        assert extent(values, 1 / n) == pytest.approx((-0.5, 0.5), abs=1e-6)
        ordered = values.flatten().unique().sort().values
        torch.testing.assert_close(ordered, -ordered.flip(0), rtol=0, atol=1e-6)  # symmetric about 0
    # row-major: y varies along rows, x along columns
    assert torch.all(ay[:, :1] == ay) and torch.all(ax[:1, :] == ax)


@pytest.mark.parametrize("h,w", [(4, 12), (12, 4), (7, 7), (1, 10)])
def test_relative_short_side_is_half_short_over_long(h, w):
    c = grid(h, w)
    longest = max(h, w)
    for channel, n in ((0, h), (1, w)):
        lo, hi = extent(c[..., channel], 1 / longest)
        assert hi == pytest.approx(0.5 * n / longest, abs=1e-6) and lo == pytest.approx(-hi, abs=1e-6)
    torch.testing.assert_close(c[..., :2], c[..., 2:] * torch.tensor([h / longest, w / longest]))


def test_no_jitter_unless_asked():
    a, b = dual_coords(6, 10, batch=3), dual_coords(6, 10, batch=3)
    assert torch.equal(a, b)
    assert torch.equal(a[0], a[2])  # every batch item sits on the same grid
    jittered = dual_coords(6, 10, batch=3, jitter=True, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(jittered, a)


def test_jitter_is_seeded_and_differs_per_batch_item():
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    a = dual_coords(5, 9, batch=2, jitter=True, generator=g())
    b = dual_coords(5, 9, batch=2, jitter=True, generator=g())
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], a[1])


@pytest.mark.parametrize("h,w", [(8, 16), (16, 8), (12, 12)])
def test_jitter_std_is_half_a_pitch_and_shared_by_both_systems(h, w):
    batch = 64
    clean = dual_coords(h, w, batch=batch)
    jittered = dual_coords(h, w, batch=batch, jitter=True, generator=torch.Generator().manual_seed(1))
    delta = jittered - clean
    longest = max(h, w)
    # absolute pitch is 1/n per axis; relative pitch is 1/longest on both axes
    expected = torch.tensor([0.5 / longest, 0.5 / longest, 0.5 / h, 0.5 / w])
    std = delta.reshape(-1, 4).std(dim=0)
    torch.testing.assert_close(std, expected, rtol=0.05, atol=0)
    assert delta.reshape(-1, 4).mean(dim=0).abs().max() < 0.05 * expected.min()
    # one draw per pixel, mapped into both systems: relative = absolute · side / long
    torch.testing.assert_close(jittered[..., :2], jittered[..., 2:] * torch.tensor([h / longest, w / longest]))


@pytest.mark.parametrize("h,w", [(1, 1), (3, 97), (32, 32)])
def test_fourier_features_have_88_finite_channels(h, w):
    assert COORD_CHANNELS == 88
    f = grid_features(h, w, batch=2)
    assert f.shape == (2, h * w, 88)
    assert torch.isfinite(f).all()
    # normalised over channels
    torch.testing.assert_close(f.mean(-1), torch.zeros(2, h * w), rtol=0, atol=1e-5)
    torch.testing.assert_close(f.var(-1, unbiased=False), torch.ones(2, h * w), rtol=0, atol=1e-3)


def test_fourier_features_separate_neighbouring_pixels_of_a_large_grid():
    # the highest frequency (128π) must still tell apart adjacent pixels of a 256-px grid
    f = grid_features(1, 256)[0]
    gaps = (f[1:] - f[:-1]).norm(dim=-1)
    assert gaps.min() > 1e-2
    assert torch.isfinite(fourier_features(torch.tensor([[1e3, -1e3, 0.0, 0.5]]))).all()
