"""The NumPy reference (ops/reference.py) on its own: float64 finite-difference gradient
checks of every backward, forward sanity checks, and parity with PyTorch where installed.

Runs without the C++ core. Tolerances: central differences with h = 1e-6 in float64 have
truncation error O(h²·f''') ≈ 1e-12 and rounding error O(ε·|f|/h) ≈ 1e-10, so rtol 1e-6
(relative to the largest gradient entry) leaves a wide margin while catching any real bug.
PyTorch parity is in float64 too: both sides differ only by rounding order, so ~1e-12.
"""
import math
import warnings

import numpy as np
import pytest

from transformer_ext.gradcheck import central_difference
from transformer_ext.ops import reference as R

H_FD = 1e-6
RTOL = 1e-6


# ----------------------------------------------------------------------------- helpers
def numeric_grad(f, x, h=H_FD):
    """Central finite-difference gradient of the scalar f() w.r.t. every entry of x (perturbed in place)."""
    g = np.zeros_like(x)
    flat = x.reshape(-1)  # x is C-contiguous in these tests: a view
    assert np.shares_memory(flat, x)
    gf = g.reshape(-1)
    for i in range(flat.size):
        gf[i] = central_difference(f, flat, i, h)
    return g


def assert_grad(f, x, analytic, name="", rtol=RTOL):
    num = numeric_grad(f, x)
    assert analytic.shape == x.shape, (name, analytic.shape, x.shape)
    assert analytic.dtype == np.float64, (name, analytic.dtype)
    scale = max(np.max(np.abs(num)), 1e-3)
    err = np.max(np.abs(num - analytic)) if num.size else 0.0
    assert err <= rtol * scale, f"{name}: max |num - analytic| = {err:.3g} (scale {scale:.3g})"


def proj(y, r):
    """Scalar objective Σ y ⊙ r: its gradient w.r.t. y is r (used as dy)."""
    return float(np.sum(y * r))


@pytest.fixture
def rng():
    return np.random.default_rng(20240607)


# ----------------------------------------------------------------------------- matmul
@pytest.mark.parametrize("transpose_w", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("xshape", [(5, 4), (2, 3, 4)])
def test_matmul_grad(rng, transpose_w, bias, xshape):
    K, N = 4, 3
    x = rng.standard_normal(xshape)
    w = rng.standard_normal((N, K) if transpose_w else (K, N))
    b = rng.standard_normal(N) if bias else None
    y = R.matmul(x, w, b, transpose_w=transpose_w)
    assert y.shape == xshape[:-1] + (N,)
    ref = x @ (w.T if transpose_w else w) + (b if bias else 0)
    np.testing.assert_allclose(y, ref, rtol=1e-14, atol=1e-14)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = R.matmul_backward(dy, x, w, b, None, transpose_w=transpose_w)

    def f():
        return proj(R.matmul(x, w, b, transpose_w=transpose_w), dy)

    assert_grad(f, x, dx, "dx")
    assert_grad(f, w, dw, "dw")
    if bias:
        assert_grad(f, b, db, "db")
    else:
        assert db is None


# ----------------------------------------------------------------------------- softmax
@pytest.mark.parametrize("use_saved", [False, True])
def test_softmax_grad(rng, use_saved):
    x = rng.standard_normal((2, 3, 5)) * 2
    y, saved = R.softmax(x, return_saved=True)
    dy = rng.standard_normal(y.shape)
    dx = R.softmax_backward(dy, x, saved if use_saved else None)
    assert_grad(lambda: proj(R.softmax(x), dy), x, dx, "dx")


def test_softmax_forward(rng):
    x = rng.standard_normal((4, 9)) * 10
    y = R.softmax(x)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-14)
    assert np.all(y >= 0)
    # shift invariance, huge values do not overflow
    np.testing.assert_allclose(R.softmax(x + 1000.0), y, rtol=1e-12, atol=1e-15)
    x32 = x.astype(np.float32)
    assert R.softmax(x32).dtype == np.float32
    np.testing.assert_allclose(R.softmax(x32), y, rtol=1e-5, atol=1e-7)


def test_softmax_neg_inf_rows_no_warning():
    x = np.array([[-np.inf, -np.inf, -np.inf], [0.0, -np.inf, 0.0], [1.0, 2.0, 3.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            y = R.softmax(x)
            dx = R.softmax_backward(np.ones_like(x), x, None)
    np.testing.assert_array_equal(y[0], 0.0)
    np.testing.assert_allclose(y[1], [0.5, 0.0, 0.5])
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    np.testing.assert_array_equal(dx[0], 0.0)


# ----------------------------------------------------------------------------- layer norm
@pytest.mark.parametrize("use_saved", [False, True])
def test_layer_norm_grad(rng, use_saved):
    x = rng.standard_normal((2, 3, 6)) * 3 + 1
    g = rng.standard_normal(6)
    b = rng.standard_normal(6)
    y, saved = R.layer_norm(x, g, b, eps=1e-5, return_saved=True)
    assert saved[0].shape == (2, 3) and saved[1].shape == (2, 3)
    dy = rng.standard_normal(y.shape)
    dx, dg, db = R.layer_norm_backward(dy, x, g, b, saved if use_saved else None, eps=1e-5)

    def f():
        return proj(R.layer_norm(x, g, b, eps=1e-5), dy)

    assert_grad(f, x, dx, "dx")
    assert_grad(f, g, dg, "dgamma")
    assert_grad(f, b, db, "dbeta")


def test_layer_norm_forward(rng):
    x = rng.standard_normal((5, 64)) * 4 + 3
    y, (mean, rstd) = R.layer_norm(x, np.ones(64), np.zeros(64), eps=0.0, return_saved=True)
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-13)
    np.testing.assert_allclose(y.var(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(mean, x.mean(-1), rtol=1e-13)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(x.var(-1)), rtol=1e-13)
    y32 = R.layer_norm(x.astype(np.float32), np.ones(64, np.float32), np.zeros(64, np.float32))
    assert y32.dtype == np.float32


# ----------------------------------------------------------------------------- activations
@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_gelu_grad(rng, approximate):
    x = rng.standard_normal((3, 7)) * 2
    dy = rng.standard_normal(x.shape)
    dx = R.gelu_backward(dy, x, None, approximate=approximate)
    assert_grad(lambda: proj(R.gelu(x, approximate=approximate), dy), x, dx, "dx")


def test_gelu_forward_values():
    x = np.array([-3.0, -1.0, 0.0, 0.5, 2.0])
    exact = np.array([0.5 * t * (1 + math.erf(t / math.sqrt(2))) for t in x])
    np.testing.assert_allclose(R.gelu(x, approximate="none"), exact, rtol=1e-15, atol=1e-16)
    c = math.sqrt(2 / math.pi)
    tanh = np.array([0.5 * t * (1 + math.tanh(c * (t + 0.044715 * t**3))) for t in x])
    np.testing.assert_allclose(R.gelu(x), tanh, rtol=1e-15, atol=1e-16)
    for appr in ("tanh", "none"):
        y = R.gelu(x.astype(np.float32), approximate=appr)
        assert y.dtype == np.float32
    # huge inputs: no NaN, no warnings
    big = np.array([-1e30, -50.0, 50.0, 1e30], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for appr in ("tanh", "none"):
            y = R.gelu(big, approximate=appr)
            d = R.gelu_backward(np.ones_like(big), big, None, approximate=appr)
            np.testing.assert_allclose(y, [0, 0, 50, 1e30], rtol=1e-6)
            np.testing.assert_allclose(d, [0, 0, 1, 1], atol=1e-6)
    with pytest.raises(ValueError, match="approximate"):
        R.gelu(x, approximate="erf")


def test_relu_grad(rng):
    x = rng.standard_normal((4, 6))
    x[np.abs(x) < 0.05] = 0.5  # stay away from the kink
    dy = rng.standard_normal(x.shape)
    dx = R.relu_backward(dy, x, None)
    assert_grad(lambda: proj(R.relu(x), dy), x, dx, "dx")
    z = np.array([0.0, -0.0, 1.0, -1.0])
    np.testing.assert_array_equal(R.relu_backward(np.ones(4), z), [0, 0, 1, 0])
    assert np.isnan(R.relu(np.array([np.nan]))[0])


# ----------------------------------------------------------------------------- feed-forward
@pytest.mark.parametrize("activation", ["gelu", "gelu_erf", "relu"])
def test_feed_forward_grad(rng, activation):
    d, dff = 4, 6
    x = rng.standard_normal((2, 3, d))
    w1 = rng.standard_normal((d, dff))
    b1 = rng.standard_normal(dff)
    w2 = rng.standard_normal((dff, d))
    b2 = rng.standard_normal(d)
    y, h = R.feed_forward(x, w1, b1, w2, b2, activation=activation, return_saved=True)
    assert h.shape == (2, 3, dff)
    if activation == "relu":  # keep finite differences away from the kink
        assert np.min(np.abs(h)) > 1e-4
    dy = rng.standard_normal(y.shape)
    grads = R.feed_forward_backward(dy, x, w1, b1, w2, b2, h, activation=activation)
    grads2 = R.feed_forward_backward(dy, x, w1, b1, w2, b2, None, activation=activation)
    for a, b in zip(grads, grads2):
        np.testing.assert_array_equal(a, b)

    def f():
        return proj(R.feed_forward(x, w1, b1, w2, b2, activation=activation), dy)

    for arr, g, name in zip((x, w1, b1, w2, b2), grads, ("dx", "dw1", "db1", "dw2", "db2")):
        assert_grad(f, arr, g, name)


def test_feed_forward_matches_composition(rng):
    x = rng.standard_normal((5, 4))
    w1, b1 = rng.standard_normal((4, 8)), rng.standard_normal(8)
    w2, b2 = rng.standard_normal((8, 4)), rng.standard_normal(4)
    np.testing.assert_array_equal(R.feed_forward(x, w1, b1, w2, b2, "gelu"),
                                  R.feed_forward(x, w1, b1, w2, b2, "gelu_tanh"))
    ref = R.gelu(x @ w1 + b1, approximate="none") @ w2 + b2
    np.testing.assert_allclose(R.feed_forward(x, w1, b1, w2, b2, "gelu_erf"), ref, rtol=1e-14)
    with pytest.raises(ValueError, match="activation"):
        R.feed_forward(x, w1, b1, w2, b2, "swish")


# ----------------------------------------------------------------------------- attention
def naive_attention(q, k, v, causal=False, keep=None, add=None):
    """Per-row loop: the definition, for a tiny case. keep: bool (B,H,Tq,Tk); add: float same."""
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    out = np.zeros_like(q)
    lse = np.full((B, H, Tq), -np.inf)
    for b in range(B):
        for h in range(H):
            for i in range(Tq):
                s = []
                idx = []
                for j in range(Tk):
                    if causal and j > i + (Tk - Tq):
                        continue
                    if keep is not None and not keep[b, h, i, j]:
                        continue
                    val = float(q[b, h, i] @ k[b, h, j]) / math.sqrt(D)
                    if add is not None:
                        val += add[b, h, i, j]
                    s.append(val)
                    idx.append(j)
                if not idx:
                    continue
                m = max(s)
                w = [math.exp(t - m) for t in s]
                tot = sum(w)
                lse[b, h, i] = m + math.log(tot)
                for wj, j in zip(w, idx):
                    out[b, h, i] += wj / tot * v[b, h, j]
    return out, lse


def _qkv(rng, B=2, H=2, Tq=3, Tk=5, D=4, dtype=np.float64):
    q = rng.standard_normal((B, H, Tq, D)).astype(dtype)
    k = rng.standard_normal((B, H, Tk, D)).astype(dtype)
    v = rng.standard_normal((B, H, Tk, D)).astype(dtype)
    return q, k, v


def _check_attention_grads(rng, q, k, v, causal, mask):
    out, saved = R.attention(q, k, v, causal=causal, mask=mask, return_saved=True)
    dout = rng.standard_normal(out.shape)
    grads = R.attention_backward(dout, q, k, v, saved, causal=causal, mask=mask)
    grads_nosaved = R.attention_backward(dout, q, k, v, None, causal=causal, mask=mask)
    for a, b in zip(grads, grads_nosaved):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)

    def f():
        return proj(R.attention(q, k, v, causal=causal, mask=mask), dout)

    for arr, g, name in zip((q, k, v), grads, ("dq", "dk", "dv")):
        assert_grad(f, arr, g, name)
    return out, saved, grads


@pytest.mark.parametrize("Tq,Tk", [(4, 4), (3, 5)])
def test_attention_grad_noncausal(rng, Tq, Tk):
    q, k, v = _qkv(rng, Tq=Tq, Tk=Tk)
    out, (o2, lse), _ = _check_attention_grads(rng, q, k, v, False, None)
    ref, ref_lse = naive_attention(q, k, v)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(lse, ref_lse, rtol=1e-12)
    assert o2 is out or np.array_equal(o2, out)


@pytest.mark.parametrize("Tq,Tk", [(4, 4), (3, 5)])
def test_attention_grad_causal(rng, Tq, Tk):
    q, k, v = _qkv(rng, Tq=Tq, Tk=Tk)
    out, (_, lse), _ = _check_attention_grads(rng, q, k, v, True, None)
    ref, ref_lse = naive_attention(q, k, v, causal=True)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(lse, ref_lse, rtol=1e-12)


def test_attention_causal_tq_gt_tk_fully_masked_rows(rng):
    # Tq > Tk: query i sees j <= i - 2, so queries 0 and 1 see nothing -> output 0, lse -inf, grads 0
    q, k, v = _qkv(rng, Tq=5, Tk=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, (_, lse), (dq, dk, dv) = _check_attention_grads(rng, q, k, v, True, None)
    np.testing.assert_array_equal(out[:, :, :2], 0.0)
    assert np.all(np.isneginf(lse[:, :, :2])) and np.all(np.isfinite(lse[:, :, 2:]))
    np.testing.assert_array_equal(dq[:, :, :2], 0.0)
    ref, _ = naive_attention(q, k, v, causal=True)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mask_dtype", [bool, np.int32])
def test_attention_key_padding_left_pad_causal(rng, mask_dtype):
    # left padding of batch 1 + causal: query 0 of batch 1 only sees key 0, which is padding
    B, H, T, D = 2, 2, 4, 3
    q, k, v = _qkv(rng, B, H, T, T, D)
    mask = np.ones((B, T), dtype=mask_dtype)
    mask[1, :2] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, (_, lse), (dq, dk, dv) = _check_attention_grads(rng, q, k, v, True, mask)
    np.testing.assert_array_equal(out[1, :, 0], 0.0)
    np.testing.assert_array_equal(out[1, :, 1], 0.0)  # query 1 sees keys 0, 1: both padding
    assert np.all(np.isneginf(lse[1, :, :2]))
    np.testing.assert_array_equal(dq[1, :, :2], 0.0)
    np.testing.assert_array_equal(dk[1, :, :2], 0.0)  # padding keys get no gradient
    np.testing.assert_array_equal(dv[1, :, :2], 0.0)
    keep = np.broadcast_to(mask.astype(bool)[:, None, None, :], (B, H, T, T))
    ref, ref_lse = naive_attention(q, k, v, causal=True, keep=keep)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(lse, ref_lse, rtol=1e-12)


def test_attention_bool_4d_mask(rng):
    B, H, Tq, Tk = 2, 2, 3, 5
    q, k, v = _qkv(rng, B, H, Tq, Tk)
    keep = rng.random((B, 1, Tq, Tk)) < 0.6  # broadcast over heads
    keep[0, 0, 1] = False  # one fully masked row
    out, _, (dq, _, _) = _check_attention_grads(rng, q, k, v, False, keep)
    ref, _ = naive_attention(q, k, v, keep=np.broadcast_to(keep, (B, H, Tq, Tk)))
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(dq[0, :, 1], 0.0)


def test_attention_additive_mask(rng):
    B, H, Tq, Tk = 2, 2, 3, 4
    q, k, v = _qkv(rng, B, H, Tq, Tk)
    add = rng.standard_normal((1, H, Tq, Tk))
    add[0, 1, 2, 3] = -np.inf
    _check_attention_grads(rng, q, k, v, False, add)
    out, (_, lse) = R.attention(q, k, v, causal=True, mask=add, return_saved=True)
    ref, ref_lse = naive_attention(q, k, v, causal=True, add=np.broadcast_to(add, (B, H, Tq, Tk)))
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(lse, ref_lse, rtol=1e-12)


def test_attention_mask_to_additive():
    B, H, Tq, Tk = 2, 3, 2, 4
    kp = np.array([[1, 1, 0, 1], [0, 1, 1, 1]], dtype=np.int64)
    a = R.attention_mask_to_additive(kp, B, H, Tq, Tk, np.float32)
    assert a.shape == (B, 1, 1, Tk) and a.dtype == np.float32
    np.testing.assert_array_equal(a[:, 0, 0], np.where(kp == 1, 0.0, -np.inf))
    assert R.attention_mask_to_additive(None, B, H, Tq, Tk, np.float64) is None
    c = R.attention_mask_to_additive(None, B, H, Tq, Tk, np.float64, causal=True)
    np.testing.assert_array_equal(np.isfinite(c[0, 0]), [[1, 1, 1, 0], [1, 1, 1, 1]])
    f = R.attention_mask_to_additive(np.full((Tq, Tk), 0.5), B, H, Tq, Tk, np.float64)
    assert f.shape == (1, 1, Tq, Tk)
    b4 = R.attention_mask_to_additive(np.ones((B, H, Tq, Tk), bool), B, H, Tq, Tk, np.float64)
    assert b4.shape == (B, H, Tq, Tk) and not b4.any()


def test_attention_float32(rng):
    q, k, v = _qkv(rng, dtype=np.float32)
    out, (o, lse) = R.attention(q, k, v, causal=True, return_saved=True)
    assert out.dtype == np.float32 and lse.dtype == np.float32
    g = R.attention_backward(np.ones_like(out), q, k, v, (o, lse), causal=True)
    assert all(x.dtype == np.float32 for x in g)
    ref = R.attention(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64), causal=True)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- embeddings
def test_embedding_grad(rng):
    table = rng.standard_normal((6, 3))
    ids = np.array([[0, 2, 2], [5, 2, 0]])
    y = R.embedding(ids, table)
    np.testing.assert_array_equal(y, table[ids])
    dy = rng.standard_normal(y.shape)
    dt = R.embedding_backward(dy, ids, table, None)
    np.testing.assert_allclose(dt[2], dy[0, 1] + dy[0, 2] + dy[1, 1], rtol=1e-15)
    np.testing.assert_array_equal(dt[[1, 3, 4]], 0.0)
    assert_grad(lambda: proj(R.embedding(ids, table), dy), table, dt, "dtable")


def test_sinusoidal_positions():
    pe = R.sinusoidal_positions(5, 6)
    assert pe.shape == (5, 6) and pe.dtype == np.float32
    np.testing.assert_array_equal(pe[0], [0, 1, 0, 1, 0, 1])
    np.testing.assert_allclose(pe[1, :2], [math.sin(1), math.cos(1)], rtol=1e-7)
    np.testing.assert_allclose(pe[3, 2:4], [math.sin(3 / 10000 ** (2 / 6)), math.cos(3 / 10000 ** (2 / 6))], rtol=1e-6)
    np.testing.assert_allclose(pe[4, 4:6], [math.sin(4 / 10000 ** (4 / 6)), math.cos(4 / 10000 ** (4 / 6))], rtol=1e-6)
    odd = R.sinusoidal_positions(4, 5, dtype=np.float64)
    assert odd.dtype == np.float64
    np.testing.assert_allclose(odd[3, 4], math.sin(3 / 10000 ** (4 / 5)), rtol=1e-14)
    np.testing.assert_allclose(odd[:, :4], R.sinusoidal_positions(4, 5, np.float64)[:, :4])


# ----------------------------------------------------------------------------- cross-entropy
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_grad(rng, reduction, label_smoothing):
    logits = rng.standard_normal((2, 3, 5)) * 2
    targets = rng.integers(0, 5, (2, 3))
    targets[0, 1] = -100
    targets[1, 2] = -100
    loss, d = R.cross_entropy(logits, targets, label_smoothing=label_smoothing, reduction=reduction)
    assert isinstance(loss, float) and d.shape == logits.shape and d.dtype == logits.dtype
    np.testing.assert_array_equal(d[0, 1], 0.0)
    assert_grad(lambda: R.cross_entropy(logits, targets, label_smoothing=label_smoothing, reduction=reduction)[0],
                logits, d, "dlogits")
    # explicit formula
    x = logits.reshape(-1, 5)
    t = targets.reshape(-1)
    keep = t != -100
    logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    per = -(1 - label_smoothing) * logp[np.arange(6), np.where(keep, t, 0)] - label_smoothing * logp.mean(-1)
    ref = per[keep].sum() / (keep.sum() if reduction == "mean" else 1)
    assert loss == pytest.approx(ref, rel=1e-13)


def test_cross_entropy_custom_ignore_and_all_ignored(rng):
    logits = rng.standard_normal((4, 3)).astype(np.float32)
    loss, d = R.cross_entropy(logits, np.array([1, 7, 7, 0]), ignore_index=7)
    assert d.dtype == np.float32
    np.testing.assert_array_equal(d[1:3], 0.0)
    loss0, d0 = R.cross_entropy(logits, np.full(4, -100))
    assert loss0 == 0.0 and isinstance(loss0, float)
    np.testing.assert_array_equal(d0, 0.0)
    assert d0.dtype == np.float32


# ----------------------------------------------------------------------------- AdamW
def test_adamw_formula(rng):
    p = rng.standard_normal(7)
    p0 = p.copy()
    g = rng.standard_normal(7)
    m = np.zeros(7)
    v = np.zeros(7)
    assert R.adamw_step(p, g, m, v, 1, 1e-2, weight_decay=0.1) is None
    np.testing.assert_allclose(m, 0.1 * g, rtol=1e-14)
    np.testing.assert_allclose(v, 0.001 * g * g, rtol=1e-14)
    # step 1: bias-corrected m̂/√v̂ = sign(g) (up to eps)
    exp = p0 * (1 - 1e-3) - 1e-2 * g / (np.abs(g) + 1e-8)
    np.testing.assert_allclose(p, exp, rtol=1e-12)
    p32 = p0.astype(np.float32)
    R.adamw_step(p32, g.astype(np.float32), np.zeros(7, np.float32), np.zeros(7, np.float32), 1, 1e-2)
    assert p32.dtype == np.float32


# ----------------------------------------------------------------------------- PyTorch parity
def _t(a, grad=True):
    torch = pytest.importorskip("torch")
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def _close(a, b, rtol=1e-11, atol=1e-12):
    b = b.detach().numpy() if hasattr(b, "detach") else b
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("transpose_w", [False, True])
def test_torch_matmul(rng, transpose_w):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 5, 8))
    w = rng.standard_normal((6, 8) if transpose_w else (8, 6))
    b = rng.standard_normal(6)
    tx_, tw, tb = _t(x), _t(w), _t(b)
    ty = torch.nn.functional.linear(tx_, tw if transpose_w else tw.T, tb)
    y = R.matmul(x, w, b, transpose_w=transpose_w)
    _close(y, ty)
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(dy))
    for a, t in zip(R.matmul_backward(dy, x, w, b, None, transpose_w), (tx_, tw, tb)):
        _close(a, t.grad)


def test_torch_softmax_layernorm_activations(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal((3, 4, 10)) * 2
    dy = rng.standard_normal(x.shape)
    # softmax
    tx_ = _t(x)
    ty = torch.softmax(tx_, -1)
    ty.backward(torch.tensor(dy))
    y, s = R.softmax(x, return_saved=True)
    _close(y, ty)
    _close(R.softmax_backward(dy, x, s), tx_.grad)
    # layer_norm
    g, b = rng.standard_normal(10), rng.standard_normal(10)
    tx_, tg, tb = _t(x), _t(g), _t(b)
    ty = F.layer_norm(tx_, (10,), tg, tb, eps=1e-5)
    ty.backward(torch.tensor(dy))
    y, s = R.layer_norm(x, g, b, 1e-5, return_saved=True)
    _close(y, ty)
    for a, t in zip(R.layer_norm_backward(dy, x, g, b, s, 1e-5), (tx_, tg, tb)):
        _close(a, t.grad)
    # gelu / relu
    for appr in ("tanh", "none"):
        tx_ = _t(x)
        ty = F.gelu(tx_, approximate=appr)
        ty.backward(torch.tensor(dy))
        # atol 1e-14: the derivative crosses 0 near x ≈ -0.75 (cancellation of O(1) terms)
        _close(R.gelu(x, approximate=appr), ty, rtol=1e-13, atol=1e-14)
        _close(R.gelu_backward(dy, x, None, approximate=appr), tx_.grad, rtol=1e-13, atol=1e-14)
    tx_ = _t(x)
    ty = torch.relu(tx_)
    ty.backward(torch.tensor(dy))
    _close(R.relu(x), ty, rtol=0, atol=0)
    _close(R.relu_backward(dy, x), tx_.grad, rtol=0, atol=0)


@pytest.mark.parametrize("case", ["plain", "causal", "causal_tq_ne_tk", "padding"])
def test_torch_attention(rng, case):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    B, H, D = 2, 3, 8
    Tq, Tk = (3, 7) if case == "causal_tq_ne_tk" else (6, 6)
    q, k, v = _qkv(rng, B, H, Tq, Tk, D)
    tq, tk, tv = _t(q), _t(k), _t(v)
    causal, mask, tmask = False, None, None
    if case == "causal":
        causal = True
        to = F.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
    elif case == "causal_tq_ne_tk":
        causal = True
        tmask = torch.ones(Tq, Tk, dtype=torch.bool).tril(Tk - Tq)  # bottom-right aligned
        to = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=tmask)
    elif case == "padding":  # right padding: no fully masked row (torch's result there varies)
        mask = np.ones((B, Tk), dtype=bool)
        mask[1, -2:] = False
        tmask = torch.tensor(mask)[:, None, None, :]
        to = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=tmask)
    else:
        to = F.scaled_dot_product_attention(tq, tk, tv)
    out, saved = R.attention(q, k, v, causal=causal, mask=mask, return_saved=True)
    _close(out, to)
    dout = rng.standard_normal(out.shape)
    to.backward(torch.tensor(dout))
    for a, t in zip(R.attention_backward(dout, q, k, v, saved, causal=causal, mask=mask), (tq, tk, tv)):
        _close(a, t.grad)


def test_torch_embedding(rng):
    torch = pytest.importorskip("torch")
    table = rng.standard_normal((9, 4))
    ids = rng.integers(0, 9, (3, 5))
    tt = _t(table)
    ty = torch.nn.functional.embedding(torch.tensor(ids), tt)
    _close(R.embedding(ids, table), ty, rtol=0, atol=0)
    dy = rng.standard_normal(ty.shape)
    ty.backward(torch.tensor(dy))
    _close(R.embedding_backward(dy, ids, table), tt.grad)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_torch_cross_entropy(rng, reduction, label_smoothing):
    torch = pytest.importorskip("torch")
    V = 11
    logits = rng.standard_normal((2, 4, V)) * 3
    targets = rng.integers(0, V, (2, 4))
    targets[1, 1] = -100
    targets[0, 3] = -100
    tl = _t(logits)
    tloss = torch.nn.functional.cross_entropy(tl.reshape(-1, V), torch.tensor(targets).reshape(-1),
                                              ignore_index=-100, label_smoothing=label_smoothing,
                                              reduction=reduction)
    tloss.backward()
    loss, d = R.cross_entropy(logits, targets, label_smoothing=label_smoothing, reduction=reduction)
    assert loss == pytest.approx(tloss.item(), rel=1e-13)
    _close(d, tl.grad)


def test_torch_adamw(rng):
    torch = pytest.importorskip("torch")
    n = 50
    p = rng.standard_normal(n)
    tp = torch.tensor(p.copy(), requires_grad=True)
    opt = torch.optim.AdamW([tp], lr=3e-2, betas=(0.85, 0.99), eps=1e-7, weight_decay=0.05)
    m, v = np.zeros(n), np.zeros(n)
    for step in range(1, 4):
        g = rng.standard_normal(n)
        tp.grad = torch.tensor(g)
        opt.step()
        R.adamw_step(p, g, m, v, step, 3e-2, 0.85, 0.99, 1e-7, 0.05)
        st = opt.state[tp]
        _close(m, st["exp_avg"], rtol=1e-13, atol=1e-15)
        _close(v, st["exp_avg_sq"], rtol=1e-13, atol=1e-15)
        _close(p, tp, rtol=1e-13, atol=1e-15)
