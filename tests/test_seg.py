"""Smoothed Energy Guidance's kernel: the query blur over a layer's token grid (any aspect ratio, odd
sizes), its two ends (sigma 0: unchanged; infinite: the mean query), and the blurred attention."""
import math

import pytest
import torch
from hypothesis import given, settings as hsettings, strategies as st

from lib_sloth.fields import SettingsError
from lib_sloth.seg import SIGMA_INF, SegSettings, blur_queries, kernel_taps, smoothed_attention
from noise import assert_near_truth, float64_copy


def reflect_matrix(n: int, taps: torch.Tensor) -> torch.Tensor:
    """[n, n] float64: row i = the kernel centred on i, reflected at both borders (no edge repeat)."""
    r = taps.numel() // 2
    m = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for t, weight in enumerate(taps.double()):
            j = i + t - r
            j = -j if j < 0 else (2 * (n - 1) - j if j > n - 1 else j)
            m[i, j] += weight
    return m


def blur_by_matrices(q: torch.Tensor, h: int, w: int, sigma: float) -> torch.Tensor:
    """The blur as B_h @ X @ B_w^T per channel, in float64: an independent statement of the same math."""
    kh, kw = kernel_taps(sigma, h), kernel_taps(sigma, w)
    bh = reflect_matrix(h, kh) if kh is not None else torch.eye(h, dtype=torch.float64)
    bw = reflect_matrix(w, kw) if kw is not None else torch.eye(w, dtype=torch.float64)
    img = q.double().reshape(q.shape[0], h, w, q.shape[2]).permute(0, 3, 1, 2)  # b c h w
    out = bh @ img @ bw.T
    return out.permute(0, 2, 3, 1).reshape(q.shape)


@pytest.mark.parametrize("sigma, side", [(0.5, 9), (1.0, 16), (1.0, 5), (2.0, 64), (3.3, 8), (10.0, 7),
                                         (10.0, 32), (0.1, 4)])
def test_kernel_size_follows_the_reference_rule(sigma, side):
    span = math.ceil(6 * sigma)
    want = min(span + 1 - span % 2, side - (side % 2 - 1))
    taps = kernel_taps(sigma, side)
    assert (1 if taps is None else taps.numel()) == want
    if taps is not None:
        r = want // 2
        offsets = torch.arange(-r, r + 1, dtype=torch.float64)
        ref = torch.exp(-0.5 * (offsets / sigma) ** 2)
        assert torch.allclose(taps.double(), ref / ref.sum(), atol=1e-7)
        assert r < side  # the reflect padding stays inside the grid


def test_sigma_zero_returns_the_queries_themselves():
    q = torch.randn(2, 12, 8)
    assert blur_queries(q, (3, 4), 0.0) is q
    assert not SegSettings(enabled=True, blur_sigma=0.0).active  # no extra pass at all


@pytest.mark.parametrize("h, w", [(4, 4), (3, 5), (5, 3), (7, 9), (1, 6), (2, 2), (6, 1)])
@pytest.mark.parametrize("sigma", [0.7, 1.5, 4.0, 40.0])
def test_blur_is_the_reflected_gaussian_on_any_grid(h, w, sigma):
    torch.manual_seed(h * 31 + w)
    q = torch.randn(2, h * w, 6)
    got = blur_queries(q, (h, w), sigma)
    truth = blur_by_matrices(q, h, w, sigma)
    # fp32 sums of at most a few dozen taps against the float64 truth: within a few ulps of the inputs
    assert float((got.double() - truth).abs().max()) <= 16 * torch.finfo(torch.float32).eps * float(q.abs().max())
    assert got.shape == q.shape and got.dtype == q.dtype


@given(h=st.integers(1, 12), w=st.integers(1, 12), sigma=st.floats(0.05, 99.0))
@hsettings(max_examples=60, deadline=None)
def test_blur_is_finite_and_keeps_a_flat_field_flat(h, w, sigma):
    q = torch.full((1, h * w, 3), 2.5)
    out = blur_queries(q, (h, w), sigma)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, q, atol=1e-5)  # normalised taps, reflect padding: a constant stays constant


def test_infinite_sigma_replaces_every_query_by_the_mean():
    q = torch.randn(2, 15, 4)
    out = blur_queries(q, (3, 5), SIGMA_INF)
    assert torch.equal(out, q.mean(dim=1, keepdim=True).expand_as(q))


def test_blur_refuses_a_grid_that_does_not_hold_the_tokens():
    with pytest.raises(ValueError, match="grid 3x3 does not hold the layer's 12 tokens"):
        blur_queries(torch.randn(1, 12, 4), (3, 3), 1.0)


def test_blur_keeps_fp16():
    q = torch.randn(1, 12, 4).half()
    assert blur_queries(q, (3, 4), 1.0).dtype == torch.float16


def uniform_reference(layer, x: torch.Tensor) -> torch.Tensor:
    """Attention in which every query is the mean query: one softmax row per head, the same for every
    token (what the authors call uniform queries). Plain matmuls, in x's dtype."""
    heads = layer.heads
    q, k, v = layer.to_q(x), layer.to_k(x), layer.to_v(x)
    b, n, inner = q.shape
    d = inner // heads
    qm = q.mean(dim=1, keepdim=True).reshape(b, 1, heads, d).transpose(1, 2)  # b h 1 d
    k, v = (t.reshape(b, n, heads, d).transpose(1, 2) for t in (k, v))
    p = torch.softmax(qm @ k.transpose(-1, -2) * d ** -0.5, dim=-1)  # b h 1 n
    row = (p @ v).transpose(1, 2).reshape(b, 1, inner)
    return row.expand(b, n, inner)


def test_infinite_sigma_is_uniform_attention_against_a_float64_reference(sd15):
    layer = sd15.middle_block[1].transformer_blocks[0].attn1
    torch.manual_seed(0)
    x = torch.randn(2, 12, layer.to_q.in_features)
    with torch.no_grad():
        got = smoothed_attention(layer, x, x, x, (3, 4), SIGMA_INF)
        truth = uniform_reference(float64_copy(layer), x.double())
        peer = uniform_reference(layer, x)
    assert_near_truth(got, truth, peer, 2.0, "SEG at infinite sigma")  # SDPA vs plain matmuls: same rounding
    assert torch.allclose(got, got[:, :1].expand_as(got))  # every token holds the same output


def test_blurred_attention_uses_the_kv_source_for_keys_and_values(sd15):
    layer = sd15.middle_block[1].transformer_blocks[0].attn1
    torch.manual_seed(1)
    x = torch.randn(1, 12, layer.to_q.in_features)
    k_in, v_in = x * 0.5, x.flip(1)
    def reference(layer, x, k_in, v_in):  # blurred queries, keys from k_in, values from v_in, by hand
        q = blur_queries(layer.to_q(x), (3, 4), 1.0)
        heads, d = layer.heads, q.shape[-1] // layer.heads
        split = [t.reshape(1, 12, heads, d).transpose(1, 2) for t in (q, layer.to_k(k_in), layer.to_v(v_in))]
        ref = torch.softmax(split[0] @ split[1].transpose(-1, -2) * d ** -0.5, -1) @ split[2]
        return ref.transpose(1, 2).reshape(1, 12, heads * d)

    with torch.no_grad():
        got = smoothed_attention(layer, x, k_in, v_in, (3, 4), 1.0)
        truth = reference(float64_copy(layer), x.double(), k_in.double(), v_in.double())
        peer = reference(layer, x, k_in, v_in)
    # SDPA against the explicit softmax, both fp32: as close to the float64 truth as the explicit one (factor 2)
    assert_near_truth(got, truth, peer, 2.0, "smoothed attention")


def test_sigma_out_of_range_is_refused_naming_the_field():
    with pytest.raises(SettingsError, match="blur_sigma=101"):
        SegSettings(enabled=True, blur_sigma=101.0)
    assert SegSettings().blur_sigma == SIGMA_INF and SegSettings().scale == 3.0 and SegSettings().middle
