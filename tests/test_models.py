"""RIAE and R2ID on tiny configs: shapes at any size, chunking, shared encoder, zero-initialised head."""
import dataclasses

import numpy as np
import pytest
import torch

from riid import R2ID, RIAE, ConditionerConfig, LabelConditioner
from riid.coords import dual_coords
from riid.presets import AUTOENCODER_PRESETS, DIFFUSER_PRESETS

TINY_AE = AUTOENCODER_PRESETS["tiny"]
CL = TINY_AE.latent_channels


@pytest.fixture(scope="module")
def riae():
    torch.manual_seed(0)
    return RIAE(TINY_AE).eval()


def tiny_r2id(**changes) -> R2ID:
    config, cond = DIFFUSER_PRESETS["tiny"]
    return R2ID(dataclasses.replace(config, latent_channels=CL, cond_dim=cond.dim, **changes))


def randomise(model: torch.nn.Module, std=0.05) -> torch.nn.Module:
    """Give the zero-initialised layers small weights, as training does."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "modulation" in name or name.startswith("head"):
                p.normal_(0, std)
    return model


# ---- RIAE ---------------------------------------------------------------------------------

@pytest.mark.parametrize("image_size,latent_size", [
    ((1, 1), (1, 1)), ((32, 32), (8, 8)), ((33, 17), (5, 3)), ((3, 97), (1, 24)), ((32, 32), (1, 1)),
    ((8, 8), (16, 16)), ((1, 64), (2, 7)), ((17, 1), (3, 1)),
])
def test_riae_encode_decode_shapes(riae, image_size, latent_size):
    image = torch.rand(2, 1, *image_size) * 2 - 1
    with torch.no_grad():
        latent = riae.encode(image, latent_size)
        assert latent.shape == (2, CL, *latent_size)
        for out in [image_size, (1, 1), (3, 97), (31, 5)]:
            decoded = riae.decode(latent, out)
            assert decoded.shape == (2, 1, *out)
            assert torch.isfinite(decoded).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_riae_converts_other_float_widths(riae, dtype):
    image = torch.rand(2, 1, 12, 16) * 2 - 1
    with torch.no_grad():
        reference = riae.encode(image, (3, 4))
        latent = riae.encode(image.to(dtype), (3, 4))
        assert latent.dtype == torch.float32
        torch.testing.assert_close(latent, riae.encode(image.to(dtype).float(), (3, 4)))
        assert (latent - reference).abs().max() < 0.1  # only the input's rounding differs
        decoded = riae.decode(reference.to(dtype), (6, 8))
        assert decoded.dtype == torch.float32
        torch.testing.assert_close(decoded, riae.decode(reference.to(dtype).float(), (6, 8)))


@pytest.mark.parametrize("bad, needle", [
    (torch.zeros(1, 1, 8, 8, dtype=torch.uint8), "torch.uint8"),
    (torch.zeros(1, 1, 8, 8, dtype=torch.int64), "torch.int64"),
    (torch.zeros(1, 1, 8, 8, dtype=torch.bool), "torch.bool"),
    (torch.zeros(1, 1, 8, 8, dtype=torch.complex64), "torch.complex64"),
    (torch.full((1, 1, 8, 8), float("nan")), "NaN"),
    (torch.full((1, 1, 8, 8), float("-inf")), "NaN or infinite"),
    (torch.full((1, 1, 8, 8), 1e300, dtype=torch.float64), "NaN or infinite"),  # inf once converted
    (np.zeros((1, 1, 8, 8), dtype=np.float32), "torch.Tensor"),
])
def test_riae_refuses_other_dtypes_and_non_finite_values_by_name(riae, bad, needle):
    with pytest.raises(ValueError, match=needle) as info:
        riae.encode(bad, (2, 2))
    assert "\n" not in str(info.value) and "image" in str(info.value)
    latent = bad[:, :1].expand(1, CL, 8, 8) if isinstance(bad, torch.Tensor) else bad
    with pytest.raises(ValueError, match=needle):
        riae.decode(latent, (4, 4))


def test_riae_large_output_chunked_equals_one_chunk(riae):
    latent = torch.randn(1, CL, 6, 5)
    with torch.no_grad():
        small_chunks = riae.decode(latent, (300, 200), chunk=997)
        one_chunk = riae.decode(latent, (300, 200), chunk=300 * 200)
    assert small_chunks.shape == (1, 1, 300, 200)
    torch.testing.assert_close(small_chunks, one_chunk, rtol=0, atol=1e-5)


def test_riae_decodes_1024x1024(riae):
    with torch.no_grad():
        out = riae.decode(torch.randn(1, CL, 8, 8), (1024, 1024))  # default chunk: 16,384 queries at a time
    assert out.shape == (1, 1, 1024, 1024) and torch.isfinite(out).all()


def test_riae_decode_at_grid_coords_equals_decode(riae):
    latent = torch.randn(2, CL, 4, 3)
    with torch.no_grad():
        image = riae.decode(latent, (12, 9))  # the latent's own aspect: read out whole
        values = riae.decode_at(latent, dual_coords(12, 9, batch=2), chunk=10)
    torch.testing.assert_close(values.reshape(2, 12, 9), image[:, 0], rtol=0, atol=1e-5)


def test_riae_eval_is_deterministic_and_training_is_random(riae):
    image = torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(riae.encode(image, (4, 4)), riae.encode(image, (4, 4)))
        # fraction < 1 draws a random pixel subset per latent query
        assert not torch.allclose(riae.encode(image, (4, 4), fraction=0.25), riae.encode(image, (4, 4)))
    model = RIAE(TINY_AE).train()
    with torch.no_grad():
        assert not torch.allclose(model.encode(image, (4, 4)), model.encode(image, (4, 4)))  # jitter


def test_riae_batch_items_are_independent(riae):
    images = torch.rand(3, 1, 12, 20) * 2 - 1
    with torch.no_grad():
        together = riae.decode(riae.encode(images, (3, 5)), (7, 11))
        alone = riae.decode(riae.encode(images[1:2], (3, 5)), (7, 11))
    torch.testing.assert_close(together[1:2], alone, rtol=0, atol=1e-5)


def test_riae_training_forward_and_backward():
    model = RIAE(TINY_AE).train()
    image = torch.rand(2, 1, 12, 16) * 2 - 1
    coords = dual_coords(12, 16, batch=2)[:, :50]
    out = model(image, (3, 4), coords)
    assert out.shape == (2, 50, 1)
    out.pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("call", [
    lambda m: m.encode(torch.zeros(1, 3, 8, 8), (2, 2)),  # wrong channels
    lambda m: m.encode(torch.zeros(8, 8), (2, 2)),  # not [B, C, H, W]
    lambda m: m.encode(torch.zeros(1, 1, 8, 8), (0, 2)),
    lambda m: m.encode(torch.zeros(1, 1, 8, 8), (2, 129)),
    lambda m: m.encode(torch.zeros(1, 1, 8, 8), (2.5, 2)),
    lambda m: m.encode(torch.zeros(1, 1, 8, 8), None),
    lambda m: m.encode(torch.zeros(1, 1, 8, 8), (2, 2), fraction=0),
    lambda m: m.encode(torch.zeros(1, 1, 8, 8), (2, 2), fraction=1.5),
    lambda m: m.encode(torch.zeros(1, 1, 8, 8), (2, 2), fraction=float("nan")),
    lambda m: m.encode(torch.zeros(0, 1, 8, 8), (2, 2)),
    lambda m: m.decode(torch.zeros(1, CL, 2, 2), (0, 5)),
    lambda m: m.decode(torch.zeros(1, CL, 2, 2), (4097, 5)),
    lambda m: m.decode(torch.zeros(1, CL, 2, 2), (-3, 5)),
    lambda m: m.decode(torch.zeros(1, CL, 2, 2), "big"),
    lambda m: m.decode(torch.zeros(1, CL + 1, 2, 2), (4, 4)),
    lambda m: m.decode(torch.zeros(1, CL, 2, 2), (4, 4), chunk=0),
    lambda m: m.decode_at(torch.zeros(1, CL, 2, 2), torch.zeros(1, 5, 2)),
])
def test_riae_bad_inputs_raise_value_error(riae, call):
    with pytest.raises(ValueError):
        call(riae)


# ---- R2ID ---------------------------------------------------------------------------------

@pytest.mark.parametrize("latent_size,num_clouds", [
    ((1, 1), 1), ((2, 3), 1), ((8, 8), 1), ((5, 13), 1), ((16, 4), 1),
    ((2, 3), 3), ((8, 8), 3), ((5, 13), 4), ((2, 2), 4),
])
def test_r2id_output_shapes(latent_size, num_clouds):
    model = randomise(tiny_r2id(num_clouds=num_clouds)).eval()
    x = torch.randn(2, CL, *latent_size)
    conds = [torch.randn(2, 2, 16), torch.randn(2, 2, 16), torch.zeros(2, 2, 16)]
    with torch.no_grad():
        eps = model(x, torch.tensor([0.3, 0.9]), conds)
    assert len(eps) == 3
    for e in eps:
        assert e.shape == x.shape and torch.isfinite(e).all()


def test_r2id_clouds_follow_the_generator():
    model = randomise(tiny_r2id(num_clouds=3)).eval()
    x, ab, cond = torch.randn(1, CL, 6, 6), torch.tensor([0.5]), [torch.randn(1, 2, 16)]
    run = lambda seed: model(x, ab, cond, generator=torch.Generator().manual_seed(seed))[0]  # noqa: E731
    with torch.no_grad():
        assert torch.equal(run(1), run(1))  # same seed, same clouds
        assert not torch.allclose(run(1), run(2))  # other clouds, another prediction


def test_r2id_chunked_attention_equals_whole():
    model = randomise(tiny_r2id()).eval()
    x, ab, cond = torch.randn(2, CL, 9, 7), torch.tensor([0.3, 0.8]), [torch.randn(2, 2, 16)]
    with torch.no_grad():
        whole, = model(x, ab, cond)
        chunked, = model(x, ab, cond, chunk=10)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)


def test_r2id_more_clouds_than_tokens():
    # a diffuser trained with several clouds must still sample a 1×1 latent (outputs of a few pixels)
    model = tiny_r2id(num_clouds=4).eval()
    with torch.no_grad():
        eps = model(torch.randn(1, CL, 1, 1), torch.tensor([0.5]), [torch.randn(1, 2, 16)])
    assert eps[0].shape == (1, CL, 1, 1)


def test_r2id_shares_the_encoder_between_conditions():
    model = randomise(tiny_r2id()).eval()
    x, ab = torch.randn(3, CL, 5, 7), torch.tensor([0.1, 0.5, 0.95])
    cond, null = torch.randn(3, 2, 16), torch.zeros(3, 2, 16)
    calls = []
    hooks = [block.register_forward_hook(lambda *_: calls.append(1)) for block in model.encoder]
    with torch.no_grad():
        eps_cond, eps_null = model(x, ab, [cond, null])
    assert len(calls) == len(model.encoder)  # one encoder pass serves both conditions
    for h in hooks:
        h.remove()
    with torch.no_grad():
        alone_cond, = model(x, ab, [cond])
        alone_null, = model(x, ab, [null])
    torch.testing.assert_close(eps_cond, alone_cond, rtol=0, atol=1e-5)
    torch.testing.assert_close(eps_null, alone_null, rtol=0, atol=1e-5)
    assert not torch.allclose(eps_cond, eps_null)  # the condition matters


def test_untrained_r2id_predicts_zero_noise():
    model = tiny_r2id()
    x = torch.randn(2, CL, 4, 6)
    eps, = model(x, torch.tensor([0.2, 0.7]), [torch.randn(2, 2, 16)])
    assert torch.equal(eps, torch.zeros_like(x))
    assert torch.equal(model.head.weight, torch.zeros_like(model.head.weight))


def test_r2id_depends_on_time():
    model = randomise(tiny_r2id()).eval()
    x, cond = torch.randn(1, CL, 4, 4), torch.randn(1, 2, 16)
    with torch.no_grad():
        a, = model(x, torch.tensor([0.1]), [cond])
        b, = model(x, torch.tensor([0.9]), [cond])
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("call", [
    lambda m: m(torch.randn(1, CL + 1, 4, 4), torch.ones(1), [torch.zeros(1, 2, 16)]),
    lambda m: m(torch.randn(CL, 4, 4), torch.ones(1), [torch.zeros(1, 2, 16)]),
    lambda m: m(torch.randn(1, CL, 4, 4), torch.ones(1), []),
    lambda m: m(torch.randn(1, CL, 129, 4), torch.ones(1), [torch.zeros(1, 2, 16)]),
    lambda m: m(torch.randn(1, CL, 4, 4), torch.ones(1), [torch.zeros(1, 2, 15)]),  # wrong condition width
    lambda m: m(torch.randn(1, CL, 4, 4), torch.ones(1), [torch.zeros(2, 2, 16)]),  # wrong condition batch
    lambda m: m(torch.randn(1, CL, 4, 4), torch.ones(1), [torch.zeros(1, 16)]),  # condition without tokens
])
def test_r2id_bad_inputs_raise_value_error(call):
    with pytest.raises(ValueError):
        call(tiny_r2id())


def test_r2id_converts_float_widths_and_refuses_the_rest():
    model = randomise(tiny_r2id()).eval()
    x, ab, cond = torch.randn(2, CL, 3, 4), torch.tensor([0.3, 0.7]), [torch.randn(2, 2, 16)]
    with torch.no_grad():
        eps, = model(x, ab, cond)
        eps64, = model(x.double(), ab.double(), cond)
    assert eps64.dtype == torch.float32
    torch.testing.assert_close(eps64, eps)
    for bad_x, bad_ab, needle in [(x.long(), ab, "x must be a floating-point"), (x, ab.long(), "alpha_bar"),
                                  (x * float("nan"), ab, "x holds NaN"), (x, ab[:1], r"alpha_bar must be \[2\]")]:
        with pytest.raises(ValueError, match=needle):
            model(bad_x, bad_ab, cond)


def test_label_conditioner_null_and_range():
    cond = LabelConditioner(ConditionerConfig(tokens=3, dim=8))
    hot = cond.one_hot(torch.tensor([0, 9, -1]))
    assert torch.equal(hot[0], torch.eye(10)[0]) and torch.equal(hot[1], torch.eye(10)[9])
    assert torch.equal(hot[2], torch.zeros(10))  # the null condition is the all-zeros label
    assert cond(hot).shape == (3, 3, 8)
    for bad in ([10], [-2], [3, 11]):
        with pytest.raises(ValueError, match="0, 9"):
            cond.one_hot(torch.tensor(bad))

