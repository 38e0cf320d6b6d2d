"""The one attention: a naive per-query reference (with and without the locality bias, over random key
subsets), chunking, and the shared random key subsets used in training."""
import math

import pytest
import torch

from riid.attention import Attention, TokenEmbedding, attention, random_subset


def naive_attention(q, k, v, heads, positions=None, log_sigma=None):
    """Per item, query and head: score every key, softmax, average the values. No batching tricks."""
    b, nq, d = q.shape
    hd = d // heads
    out = torch.zeros_like(q)
    for bi in range(b):
        for i in range(nq):
            for h in range(heads):
                sl = slice(h * hd, (h + 1) * hd)
                scores = k[bi, :, sl] @ q[bi, i, sl] / math.sqrt(hd)  # [Nk]
                if positions is not None:
                    dist2 = ((positions[1][bi] - positions[0][bi, i]) ** 2).sum(-1)
                    scores = scores - dist2 / (2 * torch.exp(log_sigma[h]) ** 2)
                out[bi, i, sl] = torch.softmax(scores, dim=0) @ v[bi, :, sl]
    return out


def tensors(b=2, nq=7, nk=11, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    randn = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return randn(b, nq, d), randn(b, nk, d), randn(b, nk, d), (randn(b, nq, 2) * 0.3, randn(b, nk, 2) * 0.3)


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_attention_equals_naive(heads):
    q, k, v, _ = tensors()
    torch.testing.assert_close(attention(q, k, v, heads), naive_attention(q, k, v, heads))


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_locality_bias_equals_naive(heads):
    q, k, v, pos = tensors()
    log_sigma = torch.linspace(math.log(0.05), math.log(0.8), heads, dtype=torch.float64)
    expected = naive_attention(q, k, v, heads, pos, log_sigma)
    torch.testing.assert_close(attention(q, k, v, heads, positions=pos, log_sigma=log_sigma), expected)
    assert not torch.allclose(expected, naive_attention(q, k, v, heads))  # the bias really changes the result


def test_narrow_locality_bias_reads_the_nearest_key():
    q, k, v, (qp, kp) = tensors(b=1, nq=5, nk=9, d=4)
    out = attention(q * 0, k, v, 1, positions=(qp, kp), log_sigma=torch.tensor([math.log(1e-3)], dtype=q.dtype))
    nearest = torch.cdist(qp, kp).argmin(dim=-1)[0]  # [Nq]
    torch.testing.assert_close(out[0], v[0, nearest])


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.8])
@pytest.mark.parametrize("heads", [1, 2])
def test_attention_over_a_random_subset_equals_naive_gather(fraction, heads):
    q, k, v, (qp, kp) = tensors(nk=40)
    ids = torch.arange(40).expand(2, 40)
    ks, vs, kps, chosen = random_subset(fraction, k, v, kp, ids, generator=torch.Generator().manual_seed(3))
    log_sigma = torch.full((heads,), math.log(0.3), dtype=q.dtype)
    out = attention(q, ks, vs, heads, positions=(qp, kps), log_sigma=log_sigma)
    # reference: gather the chosen keys of each item by index, then attend naively
    for b in range(2):
        idx = chosen[b]
        expected = naive_attention(q[b:b + 1], k[b:b + 1, idx], v[b:b + 1, idx], heads,
                                   (qp[b:b + 1], kp[b:b + 1, idx]), log_sigma)
        torch.testing.assert_close(out[b:b + 1], expected)


@pytest.mark.parametrize("fraction,n,keep", [(0.5, 10, 5), (0.25, 7, 2), (1e-6, 50, 1), (0.999, 9, 9),
                                             (0.01, 1, 1), (0.3, 1000, 300)])
def test_random_subset_keeps_about_fraction_and_at_least_one(fraction, n, keep):
    tokens = torch.randn(3, n, 5)
    ids = torch.arange(n).expand(3, n)
    sub, chosen = random_subset(fraction, tokens, ids, generator=torch.Generator().manual_seed(0))
    assert sub.shape == (3, keep, 5) and chosen.shape == (3, keep)
    for b in range(3):
        assert len(set(chosen[b].tolist())) == keep  # no token twice
        torch.testing.assert_close(sub[b], tokens[b, chosen[b]], rtol=0, atol=0)  # rows stay aligned
    if 1 < keep < n:
        assert not torch.equal(chosen[0].sort().values, chosen[1].sort().values)  # each item draws its own


def test_random_subset_is_seeded_and_identity_for_all_tokens():
    tokens = torch.randn(2, 30, 4)
    a = random_subset(0.3, tokens, generator=torch.Generator().manual_seed(5))[0]
    b = random_subset(0.3, tokens, generator=torch.Generator().manual_seed(5))[0]
    c = random_subset(0.3, tokens, generator=torch.Generator().manual_seed(6))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    for fraction in (1, 1.0, 2.0):
        out = random_subset(fraction, tokens, tokens[..., 0])
        assert out[0] is tokens and torch.equal(out[1], tokens[..., 0])


@pytest.mark.parametrize("chunk", [1, 3, 7, 100])
@pytest.mark.parametrize("biased", [False, True])
def test_chunked_equals_unchunked(chunk, biased):
    q, k, v, pos = tensors(nq=7, nk=13)
    kw = dict(positions=pos, log_sigma=torch.tensor([-2.0, 0.0], dtype=q.dtype)) if biased else {}
    torch.testing.assert_close(attention(q, k, v, 2, chunk=chunk, **kw), attention(q, k, v, 2, **kw))


def test_attention_module():
    torch.manual_seed(0)
    layer = Attention(16, 4, context_dim=8)
    x, context = torch.randn(2, 50, 16), torch.randn(2, 9, 8)
    torch.testing.assert_close(layer(x, context, chunk=7), layer(x, context), rtol=1e-5, atol=1e-6)
    # keys and values projected once can be reused across query chunks
    kv = layer.project_context(context)
    torch.testing.assert_close(layer(x, kv=kv), layer(x, context), rtol=0, atol=0)
    # without sigmas the module has no locality bias and ignores positions
    pos = (torch.rand(2, 50, 2), torch.rand(2, 9, 2))
    assert layer.log_sigma is None
    torch.testing.assert_close(layer(x, context, positions=pos), layer(x, context), rtol=0, atol=0)
    local = Attention(16, 4, sigmas=(0.05, 0.5))
    assert local.log_sigma.shape == (4,) and local.log_sigma.requires_grad
    torch.testing.assert_close(local.log_sigma.exp()[[0, -1]], torch.tensor([0.05, 0.5]))
    y = torch.randn(2, 50, 16)
    pos = (pos[0], pos[0])
    assert not torch.allclose(local(y, positions=pos), local(y))
    with pytest.raises(ValueError, match="divisible"):
        Attention(10, 4)


def test_token_embedding_gives_values_and_positions_their_own_projection():
    torch.manual_seed(0)
    embed = TokenEmbedding(1, 88, 16)
    values, positions = torch.randn(2, 5, 1), torch.randn(2, 5, 88)
    torch.testing.assert_close(embed(values, positions), embed.values(values) + embed.position(positions))


def test_biased_attention_splits_its_queries_under_the_score_budget(monkeypatch):
    import riid.attention as A

    torch.manual_seed(0)
    q, k, v = torch.randn(2, 300, 8), torch.randn(2, 200, 8), torch.randn(2, 200, 8)
    pos = (torch.rand(2, 300, 2), torch.rand(2, 200, 2))
    log_sigma = torch.log(torch.tensor([0.1, 0.5]))
    whole = A.attention(q, k, v, 2, positions=pos, log_sigma=log_sigma)
    widths = []
    sdpa = A.F.scaled_dot_product_attention
    monkeypatch.setattr(A.F, "scaled_dot_product_attention",
                        lambda q_, *a, **kw: widths.append(q_.shape[2]) or sdpa(q_, *a, **kw))
    monkeypatch.setattr(A, "SCORE_BUDGET", 2 * 200 * A.score_matrices(2) * 4 * 40)  # room for 40 queries
    split = A.attention(q, k, v, 2, positions=pos, log_sigma=log_sigma)
    assert A.query_chunk(2, 2, 200) == 40 and max(widths) == 40 and sum(widths) == 300
    torch.testing.assert_close(split, whole, rtol=0, atol=1e-5)  # exact: chunking costs no quality
