"""softmax, layer_norm, gelu, relu (forward and backward): the C++ kernels against the
NumPy reference, under every ISA variant.

The oracle is the reference evaluated in float64 on the same float32 inputs, so the
tolerances below bound the C++ kernels' own float32 error (u = 2^-24 ≈ 6e-8):
- softmax: exp is within 1.01 ulp (cpp/kernels/vmath.h); x − max is rounded once, which
  perturbs exp by a relative |x − max|·u (<= 88·u ≈ 5e-6 for any non-underflowing entry);
  the row sum and 1/sum add a few u. rtol 1e-5. Subnormal outputs carry an absolute error
  of ~2^-149, hence a tiny atol.
- softmax backward: dx = y·(dy − Σ dy·y) cancels when dy ≈ Σ dy·y; the dot product of n
  terms has error ~ √n·u·Σ|dy·y|, so the bound is relative to y·(|dy| + Σ|dy·y|).
- layer norm: the mean and variance are sums of n terms (error ~ √n·u relative, with 16
  SIMD partial sums), then a few roundings per element: rtol 1e-5 on y, mean, rstd, with
  an absolute floor relative to the row's scale for entries near 0. The backward's dx
  cancels (g − mean(g) − x̂·mean(g∘x̂)), bounded relative to rstd·max|g|; dγ and dβ sum
  `rows` terms per column (error ~ rows·u·Σ|terms| worst case).
- GELU: tanh/erf/exp within ~1-5 ulp, z = √(2/π)(x + 0.044715x³) rounded (relative error
  of exp(−2z) ~ |2z|·u, <= 88·u for a non-underflowing result): rtol 1e-5. The float64
  reference itself loses 1 + tanh(z) below ~1e-16 in the far left tail, hence atol 1e-12.
  The derivative s + inner cancels near x ≈ −0.75 (the GELU minimum): atol 1e-6·|dy|.
- ReLU is exact.
"""
import math
import warnings

import numpy as np
import pytest

import transformer_ext as tx
from transformer_ext import ops
from transformer_ext.ops import reference

NS = [1, 3, 7, 16, 17, 63, 65, 127, 129, 768, 3072]
TINY = 1e-37  # absolute floor for subnormal outputs (~2^-149 error each)


def core():
    return tx._backend.core


def f64(*arrays):
    return [None if a is None else np.asarray(a, np.float64) for a in arrays]


def randn(rng, *shape, scale=1.0, loc=0.0):
    return (loc + scale * rng.standard_normal(shape)).astype(np.float32)


def assert_close(actual, desired, tol, what=""):
    """|actual − desired| <= tol elementwise (tol broadcast), NaN where desired is NaN."""
    actual = np.asarray(actual, np.float64)
    desired = np.asarray(desired, np.float64)
    assert actual.shape == desired.shape, (actual.shape, desired.shape)
    nan = np.isnan(desired)
    np.testing.assert_array_equal(np.isnan(actual), nan, err_msg=f"{what}: NaN pattern differs")
    inf = np.isinf(desired)
    np.testing.assert_array_equal(actual[inf], desired[inf], err_msg=f"{what}: infinities differ")
    ok = ~nan & ~inf
    with np.errstate(invalid="ignore"):  # inf − inf where actual is inf (checked above)
        err = np.abs(actual - desired)
    tol = np.broadcast_to(np.asarray(tol, np.float64), desired.shape)
    bad = ok & ~(err <= tol)
    if bad.any():
        i = np.argmax(np.where(bad, err / np.maximum(tol, 1e-300), 0))
        raise AssertionError(
            f"{what}: {bad.sum()} of {bad.size} elements off; worst at flat index {i}: "
            f"got {actual.flat[i]!r}, want {desired.flat[i]!r}, tol {tol.flat[i]:.3g}"
        )


# ============================================================================ softmax
def softmax_tol(ref):
    return 1e-5 * np.abs(ref) + TINY


def softmax_bwd_tol(y, dy, n):
    y, dy = f64(y, dy)
    dot_abs = np.sum(np.abs(dy * y), axis=-1, keepdims=True)
    return (2e-6 + 1e-6 * np.sqrt(n)) * np.abs(y) * (np.abs(dy) + dot_abs) + TINY


@pytest.mark.parametrize("n", NS)
def test_softmax_matches_reference(isa, n, rng):
    x = randn(rng, 3, 5, n, scale=4.0)
    y, saved = ops.softmax(x, return_saved=True)
    assert y.dtype == np.float32 and y.shape == x.shape and saved is y
    ref = reference.softmax(*f64(x))
    assert_close(y, ref, softmax_tol(ref), "softmax")
    dy = randn(rng, 3, 5, n)
    dx = ops.softmax_backward(dy, x, saved)
    assert_close(dx, reference.softmax_backward(*f64(dy, x, ref)), softmax_bwd_tol(ref, dy, n), "softmax_backward")
    np.testing.assert_array_equal(ops.softmax_backward(dy, x), dx)  # saved=None recomputes y


def test_softmax_masked_and_extreme_rows(isa, rng):
    n = 129
    x = rng.uniform(-80, 80, (8, n)).astype(np.float32)  # large magnitudes: most exp underflow
    x[1, rng.random(n) < 0.5] = -np.inf                  # masked entries
    x[2] = -np.inf                                       # fully masked row
    x[3] = -np.inf
    x[3, 77] = 5.0                                       # one survivor: exactly 1
    x[4] = 80.0                                          # all equal: exactly 1/n... up to rounding
    x[5] = -80.0
    y = ops.softmax(x)
    ref = reference.softmax(*f64(x))
    assert_close(y, ref, softmax_tol(ref), "softmax")
    np.testing.assert_array_equal(y[2], 0.0)
    assert y[3, 77] == 1.0 and np.count_nonzero(y[3]) == 1
    assert not np.isnan(y).any()
    dy = randn(rng, 8, n)
    dx = ops.softmax_backward(dy, x, y)
    np.testing.assert_array_equal(dx[2], 0.0)  # no probability mass: no gradient
    assert_close(dx, reference.softmax_backward(*f64(dy, x, ref)), softmax_bwd_tol(ref, dy, n), "softmax_backward")


def test_softmax_nan_stays_in_its_row(isa, rng):
    x = randn(rng, 6, 65)
    clean = ops.softmax(x)
    x[2, 10] = np.nan
    x[4, 0] = np.inf  # +inf: inf − inf = NaN, as IEEE (and the reference) say
    y = ops.softmax(x)
    assert np.isnan(y[2]).all() and np.isnan(y[4]).all()
    rows = [0, 1, 3, 5]
    np.testing.assert_array_equal(y[rows], clean[rows])
    dy = randn(rng, 6, 65)
    dy[1, 3] = np.nan
    dx = ops.softmax_backward(dy, None, clean)
    assert np.isnan(dx[1]).all()
    assert not np.isnan(dx[[0, 2, 3, 4, 5]]).any()


# ============================================================================ layer norm
def ln_ref(x, gamma, beta, dy, saved, eps=1e-5):
    """The float64 reference forward, and backward from the kernel's own float32 saved
    (mean, rstd): the backward is judged on the statistics it is given (a float32 mean of
    un-normalised inputs, |μ| >> σ, is itself only good to ulp(μ)/σ)."""
    x, gamma, beta, dy = f64(x, gamma, beta, dy)
    y, (mean, rstd) = reference.layer_norm(x, gamma, beta, eps, return_saved=True)
    grads = reference.layer_norm_backward(dy, x, gamma, beta, tuple(f64(*saved)), eps)
    return y, mean, rstd, grads


def check_layer_norm(x, gamma, beta, dy, eps=1e-5):
    n = x.shape[-1]
    y, (mean, rstd) = ops.layer_norm(x, gamma, beta, eps, return_saved=True)
    assert y.dtype == mean.dtype == rstd.dtype == np.float32
    assert mean.shape == rstd.shape == x.shape[:-1]
    ry, rmean, rrstd, (rdx, rdg, rdb) = ln_ref(x, gamma, beta, dy, (mean, rstd), eps)
    xhat = (x - rmean[..., None]) * rrstd[..., None]
    scale = np.abs(xhat * gamma) + np.abs(beta)  # size of each term of y
    k = 2e-7 * (4 + np.sqrt(n))                  # ~3u·(4 + √n): sums of n terms, 16 SIMD lanes
    assert_close(y, ry, k * (scale + np.abs(xhat * gamma).max(axis=-1, keepdims=True)), "layer_norm y")
    assert_close(mean, rmean, k * np.abs(x).max(axis=-1) + TINY, "layer_norm mean")
    assert_close(rstd, rrstd, k * rrstd, "layer_norm rstd")
    dx, dgamma, dbeta = ops.layer_norm_backward(dy, x, gamma, beta, (mean, rstd), eps)
    g = np.abs(dy * gamma)
    assert_close(dx, rdx, k * rrstd[..., None] * (g + g.max(axis=-1, keepdims=True)), "layer_norm dx")
    rows = x.size // max(n, 1)
    kr = 2e-7 * (4 + rows)  # per column: a sum of `rows` terms (in chunks, then chunk partials): ~3u·rows worst case
    terms = np.abs(dy * xhat).reshape(-1, n)
    assert_close(dgamma, rdg, kr * (terms.sum(axis=0) + k), "layer_norm dgamma")
    assert_close(dbeta, rdb, kr * np.abs(dy).reshape(-1, n).sum(axis=0), "layer_norm dbeta")
    return y, dx, dgamma, dbeta


@pytest.mark.parametrize("n", NS)
def test_layer_norm_matches_reference(isa, n, rng):
    x = randn(rng, 3, 5, n, scale=2.0, loc=3.0)  # an offset mean: the two-pass variance stays exact
    gamma = randn(rng, n, loc=1.0, scale=0.5)
    beta = randn(rng, n, scale=0.5)
    dy = randn(rng, 3, 5, n)
    check_layer_norm(x, gamma, beta, dy)


def test_layer_norm_many_rows_and_large_offset(isa, rng):
    n = 96
    x = randn(rng, 200, n, scale=1e-2, loc=1e3)  # E[x²] − μ² would lose every digit here
    gamma, beta, dy = randn(rng, n), randn(rng, n), randn(rng, 200, n)
    check_layer_norm(x, gamma, beta, dy, eps=1e-6)
    check_layer_norm(randn(rng, 131, 33), gamma[:33], beta[:33], randn(rng, 131, 33))  # 3 chunks, ragged


@pytest.mark.parametrize("n", [96, 4096])
def test_layer_norm_outliers_in_the_first_vector(isa, rng, n):
    # The statistics take one pass, shifted by c = the mean of a row's first vector
    # (layer_norm.cpp): a c far from the row's mean (the first 16 columns large, as
    # "massive activation" channels are) must take the second pass, not lose digits in
    # mean(d²) − mean(d)². Here δ²/σ² reaches ~n/16 (AVX-512) or ~n/8 (AVX2).
    x = randn(rng, 40, n)
    x[:20, :16] += 300.0                     # the whole first vector (any ISA) far off
    x[20:, :16] += np.linspace(0.0, 3.0, 20)[:, None]  # around δ = σ, either side of the test
    gamma, beta, dy = randn(rng, n, loc=1.0), randn(rng, n), randn(rng, 40, n)
    check_layer_norm(x, gamma, beta, dy)
    # σ ~ 5.5e17: n·σ² fits in float32, but the shifted sum n·(σ² + δ²) overflows (δ close
    # to σ): that row too must take the second pass, not come out as rstd = 0.
    x = randn(rng, 4, 768, scale=5.5e17)
    x[:, :16] = 5e17
    check_layer_norm(x, randn(rng, 768, loc=1.0), randn(rng, 768), randn(rng, 4, 768))


def test_layer_norm_recomputes_saved(isa, rng):
    x, dy = randn(rng, 4, 33), randn(rng, 4, 33)
    gamma, beta = randn(rng, 33), randn(rng, 33)
    _, saved = ops.layer_norm(x, gamma, beta, return_saved=True)
    with_saved = ops.layer_norm_backward(dy, x, gamma, beta, saved)
    for a, b in zip(ops.layer_norm_backward(dy, x, gamma, beta), with_saved):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(ops.layer_norm_backward(dy, x, gamma, None, list(saved)), with_saved):
        np.testing.assert_array_equal(a, b)


def test_layer_norm_nan_stays_in_its_row(isa, rng):
    n = 40
    x, dy = randn(rng, 5, n), randn(rng, 5, n)
    gamma, beta = randn(rng, n), randn(rng, n)
    clean_y, clean_saved = ops.layer_norm(x, gamma, beta, return_saved=True)
    clean = ops.layer_norm_backward(dy, x, gamma, beta, clean_saved)
    xn = x.copy()
    xn[3, 7] = np.nan
    y, (mean, rstd) = ops.layer_norm(xn, gamma, beta, return_saved=True)
    assert np.isnan(y[3]).all() and np.isnan(mean[3]) and np.isnan(rstd[3])
    keep = [0, 1, 2, 4]
    np.testing.assert_array_equal(y[keep], clean_y[keep])
    # NaN in dy[1, 9]: row 1 of dx is NaN (its means), and column 9 of dγ, dβ; nothing else
    dyn = dy.copy()
    dyn[1, 9] = np.nan
    dx, dgamma, dbeta = ops.layer_norm_backward(dyn, x, gamma, beta, clean_saved)
    assert np.isnan(dx[1]).all()
    np.testing.assert_array_equal(dx[[0, 2, 3, 4]], clean[0][[0, 2, 3, 4]])
    cols = np.arange(n) != 9
    assert np.isnan(dgamma[9]) and np.isnan(dbeta[9])
    np.testing.assert_array_equal(dgamma[cols], clean[1][cols])
    np.testing.assert_array_equal(dbeta[cols], clean[2][cols])


# ============================================================================ GELU / ReLU
GELU_EDGES = np.array([0.0, -0.0, 1e-30, -1e-30, 0.75, -0.75, -0.7517916, 3.0, -3.0, 5.0, -5.0, 9.0, -9.0,
                       10.5, -10.5, 20.0, -20.0, 1e10, -1e10, 3e19, -3e19, 3e38, -3e38, np.inf], np.float32)


def act_inputs(rng, n):
    x = randn(rng, 2, 3, n, scale=3.0)
    flat = x.reshape(-1)
    k = min(flat.size, GELU_EDGES.size)
    flat[:k] = GELU_EDGES[:k]
    return x


@pytest.mark.parametrize("approximate", ["tanh", "none"])
@pytest.mark.parametrize("n", NS)
def test_gelu_matches_reference(isa, n, approximate, rng):
    x = act_inputs(rng, n)
    y = ops.gelu(x, approximate=approximate)
    assert y.dtype == np.float32 and y.shape == x.shape
    with np.errstate(over="ignore", invalid="ignore"):
        ref = reference.gelu(*f64(x), approximate=approximate)
    assert_close(y, ref, 1e-5 * np.abs(ref) + 1e-12, f"gelu {approximate}")
    dy = randn(rng, *x.shape)
    dx = ops.gelu_backward(dy, x, approximate=approximate)
    with np.errstate(over="ignore", invalid="ignore"):
        rdx = reference.gelu_backward(*f64(dy, x), approximate=approximate)
    assert_close(dx, rdx, 1e-5 * np.abs(rdx) + 1e-6 * np.abs(dy), f"gelu_backward {approximate}")


def test_gelu_limits(isa):
    x = np.array([np.inf, -np.inf, 1e30, -1e30, 0.0], np.float32)
    for appr in ("tanh", "none"):
        y = ops.gelu(x, approximate=appr)
        assert y[0] == np.inf and np.isnan(y[1])  # −inf·0, as the formula (and the reference) give
        assert y[2] == np.float32(1e30) and y[3] == 0 and y[4] == 0
        d = ops.gelu_backward(np.ones_like(x), x, approximate=appr)
        np.testing.assert_array_equal(d, [1.0, 0.0, 1.0, 0.0, 0.5])


def test_gelu_tanh_result_does_not_depend_on_neighbours_beyond_rounding(isa, rng):
    # With AVX2, a group of vectors whose every |x| <= 9.5 computes σ(2z) = 1/(1 + exp(−2z))
    # directly, other groups from e = exp(−|2z|) (activation.cpp, GeluTanh). The same x
    # must give the same value to within both forms' rounding (each ~1-2 ulp; measured at
    # most 3 ulp forward, 3.9 ulp of the larger of s and the x·s(1−s) term backward, whose
    # sum cancels near x = −0.75): 4 and 8 ulp. Other ISAs use one form: equal bits.
    x = rng.uniform(-9.4, 9.4, 1 << 16).astype(np.float32)
    mixed = x.copy()
    mixed[::32] = 100.0  # one |x| > 9.5 in every 32 floats: no group takes the direct form
    keep = np.ones(x.size, bool)
    keep[::32] = False
    y, y_mixed = ops.gelu(x), ops.gelu(mixed)
    dy = np.ones_like(x)
    dx, dx_mixed = ops.gelu_backward(dy, x), ops.gelu_backward(dy, mixed)
    xd = x[keep].astype(np.float64)
    c = np.sqrt(2 / np.pi)
    s = 1 / (1 + np.exp(-2 * c * (xd + 0.044715 * xd**3)))
    term = np.abs(2 * xd * s * (1 - s) * c * (1 + 3 * 0.044715 * xd**2))
    np.testing.assert_allclose(y_mixed[keep], y[keep], rtol=4 * 2.0**-23, atol=0)
    assert np.all(np.abs(dx_mixed[keep].astype(np.float64) - dx[keep]) <= 8 * 2.0**-23 * (s + term))


def test_gelu_erf_relative_error_in_both_forms(isa, rng):
    # Exact GELU: groups of vectors whose every |x| <= 9.5 take Φ(−|x|) from vmath.h's
    # interval tables (vnormal_cdf_left), other groups from erfc's tail fit. Relative error
    # bounds in u = 2^-24 (backward: relative to Φ + |x|·φ, the terms whose sum cancels near
    # x = −0.75). Tables, with FMA: 16 u (measured 10.1 forward, 11.0 backward over 1.3M
    # x). Either form on any ISA: 12·(1 + x²/2) u, which grows with the condition number
    # of Φ(−|x|) (measured up to 8.2·(1 + x²/2): erfc's fit rounds x²/2 inside its exp;
    # without FMA the tables round |x|·kPhiScale before subtracting j).
    mag = np.concatenate([rng.uniform(0, 9.5, 1 << 17), np.exp(rng.uniform(np.log(1e-30), np.log(9.5), 1 << 15))])
    x = (mag * rng.choice([-1.0, 1.0], mag.size)).astype(np.float32)
    x[:64:2] = -0.0
    mixed = x.copy()
    mixed[1::32] = 100.0  # one |x| > 9.5 in every 32 floats: every group takes erfc's fit
    keep = np.ones(x.size, bool)
    keep[1::32] = False
    xd = x.astype(np.float64)
    Phi = 0.5 * np.array([math.erfc(-v / math.sqrt(2)) for v in xd])
    phi = np.exp(-xd * xd / 2) / math.sqrt(2 * math.pi)
    ref, ref_d, scale_d = xd * Phi, Phi + xd * phi, Phi + np.abs(xd) * phi
    general = 12 * (1 + xd * xd / 2) * 2.0**-24
    for arr, k, tables in ((x, slice(None), True), (mixed, keep, False)):
        y = ops.gelu(arr, approximate="none")[k].astype(np.float64)
        d = ops.gelu_backward(np.ones_like(arr), arr, approximate="none")[k].astype(np.float64)
        bound = general[k]
        if tables and isa != "scalar":  # (the scalar variant is built without FMA)
            bound = np.minimum(bound, 16 * 2.0**-24)
        assert np.all(np.abs(y - ref[k]) <= bound * np.abs(ref[k])), "forward"
        assert np.all(np.abs(d - ref_d[k]) <= bound * scale_d[k]), "backward"
    assert np.all(np.signbit(ops.gelu(x, approximate="none")[:64:2]))  # gelu(−0) = −0·Φ(0)


@pytest.mark.parametrize("n", NS)
def test_relu_matches_reference_exactly(isa, n, rng):
    x = act_inputs(rng, n)
    x.reshape(-1)[-1] = 0.0
    np.testing.assert_array_equal(ops.relu(x), reference.relu(x))
    dy = randn(rng, *x.shape)
    dx = ops.relu_backward(dy, x)
    np.testing.assert_array_equal(dx, reference.relu_backward(dy, x))
    assert dx.reshape(-1)[-1] == 0.0  # gradient 0 at x == 0


def test_activation_nan_is_elementwise(isa, rng):
    x = randn(rng, 1000)
    x[[5, 500]] = np.nan
    dy = randn(rng, 1000)
    dy[7] = np.nan
    x[7] = 1.0
    others = np.ones(1000, bool)
    others[[5, 7, 500]] = False
    for appr in ("tanh", "none"):
        y = ops.gelu(x, approximate=appr)
        assert np.isnan(y[[5, 500]]).all() and not np.isnan(y[others]).any()
        dx = ops.gelu_backward(dy, x, approximate=appr)
        assert np.isnan(dx[[5, 7, 500]]).all() and not np.isnan(dx[others]).any()
    y = ops.relu(x)
    assert np.isnan(y[[5, 500]]).all() and not np.isnan(y[others]).any()
    dx = ops.relu_backward(dy, x)
    assert np.isnan(dx[7]) and dx[5] == 0 and not np.isnan(dx[others]).any()  # NaN x: [x > 0] is 0


def test_zero_dim_activation_and_layouts(isa, rng):
    assert ops.gelu(np.float32(1.0)).shape == ()
    assert ops.relu(np.array(-2.0, np.float32)) == 0
    big = randn(rng, 40, 64)
    for view in (big[::2], big.T, big[:, 1:33], big[:, ::2]):  # strided / transposed: copied
        np.testing.assert_array_equal(ops.gelu(view), ops.gelu(view.copy()))
        np.testing.assert_array_equal(ops.softmax(view), ops.softmax(view.copy()))
        g, b = randn(rng, view.shape[-1]), randn(rng, view.shape[-1])
        np.testing.assert_array_equal(ops.layer_norm(view, g, b), ops.layer_norm(view.copy(), g, b))
        dy = randn(rng, *view.shape)
        for a, c in zip(ops.layer_norm_backward(dy.T.copy().T, view, g, b),
                        ops.layer_norm_backward(dy, view.copy(), g, b)):
            np.testing.assert_array_equal(a, c)


# ============================================================================ determinism
def run_both(threads, fn):
    threads(1)
    one = fn()
    threads(2)
    two = fn()
    return one, two


def test_thread_count_does_not_change_results(isa, threads, rng):
    x = randn(rng, 512, 512, scale=4.0)
    a, b = run_both(threads, lambda: ops.softmax(x))
    np.testing.assert_array_equal(a, b)
    dy = randn(rng, 512, 512)
    a, b = run_both(threads, lambda: ops.softmax_backward(dy, x, a))
    np.testing.assert_array_equal(a, b)
    h = randn(rng, 1 << 20, scale=3.0)
    dh = randn(rng, 1 << 20)
    for appr in ("tanh", "none"):
        a, b = run_both(threads, lambda: (ops.gelu(h, approximate=appr), ops.gelu_backward(dh, h, approximate=appr)))
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_layer_norm_thread_count_does_not_change_results(isa, threads, rng):
    rows, n = 4096, 768
    x = randn(rng, rows, n)
    dy = randn(rng, rows, n)
    gamma, beta = randn(rng, n), randn(rng, n)
    fwd1, fwd2 = run_both(threads, lambda: ops.layer_norm(x, gamma, beta, return_saved=True))
    np.testing.assert_array_equal(fwd1[0], fwd2[0])
    np.testing.assert_array_equal(fwd1[1][1], fwd2[1][1])
    saved = fwd1[1]
    g1, g2 = run_both(threads, lambda: ops.layer_norm_backward(dy, x, gamma, beta, saved))
    for a, b in zip(g1, g2):  # dx, dgamma (a 4096-row reduction), dbeta
        np.testing.assert_array_equal(a, b)


def test_large_outputs_match_small_calls(isa, rng):
    # Layer norm's outputs of >= 8 MiB take the streaming-store path (cpp/kernels/vmath.h);
    # rows and elements are computed the same way either way, so the results are
    # bit-identical to calls on slices that stay below the threshold (the other ops, whose
    # stores are plain at any size, are held to the same).
    rows, n = 2900, 768  # 8.5 MiB
    x, dy = randn(rng, rows, n, scale=3.0), randn(rng, rows, n)
    g, b = randn(rng, n), randn(rng, n)
    cut = [0, 1000, 2000, rows]

    def pieces(fn, *arrays):
        return np.concatenate([fn(*(a[i:j] for a in arrays)) for i, j in zip(cut, cut[1:])])

    np.testing.assert_array_equal(ops.layer_norm(x, g, b), pieces(lambda a: ops.layer_norm(a, g, b), x))
    np.testing.assert_array_equal(ops.layer_norm_backward(dy, x, g, b)[0],  # dx (dγ, dβ: sums over the rows)
                                  pieces(lambda d, a: ops.layer_norm_backward(d, a, g, b)[0], dy, x))
    np.testing.assert_array_equal(ops.softmax(x), pieces(ops.softmax, x))
    for appr in ("tanh", "none"):
        np.testing.assert_array_equal(ops.gelu(x, approximate=appr), pieces(lambda a: ops.gelu(a, approximate=appr), x))
        np.testing.assert_array_equal(ops.gelu_backward(dy, x, approximate=appr),
                                      pieces(lambda d, a: ops.gelu_backward(d, a, approximate=appr), dy, x))
    np.testing.assert_array_equal(ops.relu(x), pieces(ops.relu, x))
    np.testing.assert_array_equal(ops.relu_backward(dy, x), pieces(ops.relu_backward, dy, x))


# ============================================================================ bad input
def test_bad_inputs(isa):
    x = np.zeros((4, 768), np.float32)
    g, b = np.ones(768, np.float32), np.zeros(768, np.float32)
    with pytest.raises(ValueError, match=r"ops\.layer_norm: argument 'gamma' must have shape \(768,\) to match the last axis of 'x' \(4, 768\), got \(767,\)"):
        ops.layer_norm(x, g[:-1], b)
    with pytest.raises(ValueError, match=r"ops\.layer_norm: argument 'beta' must have shape \(768,\).*got \(1, 768\)"):
        ops.layer_norm(x, g, b[None])
    with pytest.raises(ValueError, match=r"ops\.layer_norm_backward: argument 'gamma' must have shape \(768,\)"):
        ops.layer_norm_backward(x, x, g[:5], b)
    with pytest.raises(TypeError, match=r"ops\.softmax: argument 'x' has dtype float64; the cpp backend computes in float32"):
        ops.softmax(x.astype(np.float64))
    with pytest.raises(TypeError, match=r"ops\.layer_norm: argument 'gamma' has dtype float64"):
        ops.layer_norm(x, g.astype(np.float64), b)
    with pytest.raises(TypeError, match=r"ops\.gelu: argument 'x' must be a float array, got dtype int64"):
        ops.gelu(np.arange(4))
    with pytest.raises(ValueError, match=r"ops\.softmax: argument 'x' must have at least 1 dims, got shape \(\)"):
        ops.softmax(np.float32(1.0))
    with pytest.raises(ValueError, match=r"ops\.layer_norm: argument 'x' must have at least 1 dims, got shape \(\)"):
        ops.layer_norm(np.float32(1.0), g[:1], b[:1])
    with pytest.raises(ValueError, match=r"ops\.gelu: approximate must be 'tanh' or 'none', got 'exact'"):
        ops.gelu(x, approximate="exact")
    with pytest.raises(ValueError, match=r"ops\.gelu_backward: approximate must be 'tanh' or 'none', got None"):
        ops.gelu_backward(x, x, approximate=None)
    with pytest.raises(ValueError, match=r"ops\.softmax_backward: argument 'x' must have the shape of 'dy' \(4, 768\), got \(4, 767\)"):
        ops.softmax_backward(x, x[:, 1:])
    with pytest.raises(ValueError, match=r"ops\.relu_backward: argument 'x' must have the shape of 'dy' \(4, 768\), got \(768,\)"):
        ops.relu_backward(x, g)
    with pytest.raises(ValueError, match=r"ops\.layer_norm_backward: argument 'saved\[1\] \(rstd\)' must have shape \(4,\)"):
        ops.layer_norm_backward(x, x, g, b, (np.zeros(4, np.float32), np.zeros(3, np.float32)))
    with pytest.raises(TypeError, match=r"ops\.layer_norm_backward: argument 'saved' must be the \(mean, rstd\) pair"):
        ops.layer_norm_backward(x, x, g, b, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"ops\.layer_norm: argument 'eps' must be finite and >= 0, got -1.0"):
        ops.layer_norm(x, g, b, eps=-1)
    with pytest.raises(TypeError, match=r"ops\.layer_norm: argument 'eps' must be a real number"):
        ops.layer_norm(x, g, b, eps="1e-5")
    with pytest.raises(TypeError, match=r"ops\.softmax_backward: argument 'x' is None"):
        ops.softmax_backward(x, None, None)


def test_core_bindings_check_everything(isa):
    c = core()
    assert (c.ACT_IDENTITY, c.ACT_RELU, c.ACT_GELU_TANH, c.ACT_GELU_ERF) == (0, 1, 2, 3)
    x = np.zeros((3, 8), np.float32)
    with pytest.raises(ValueError, match=r"_core\.softmax_forward: 'x' has shape \(3, 8\) but 'y' has shape \(3, 7\)"):
        c.softmax_forward(x, np.zeros((3, 7), np.float32))
    with pytest.raises(ValueError, match=r"_core\.softmax_forward: 'x' must be C-contiguous"):
        c.softmax_forward(np.zeros((3, 16), np.float32)[:, :8], x)  # row stride 16: kernels take none
    with pytest.raises(ValueError, match=r"_core\.softmax_forward: 'x' must be unit-stride on its last axis"):
        c.softmax_forward(np.zeros((8, 3), np.float32).T, x)
    with pytest.raises(TypeError, match=r"_core\.layer_norm_forward: 'gamma' must be float32"):
        c.layer_norm_forward(x, np.ones(8), np.zeros(8, np.float32), 1e-5, x.copy(), np.zeros(3, np.float32), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"_core\.layer_norm_forward: 'mean' must have shape \(3,\)"):
        c.layer_norm_forward(x, np.ones(8, np.float32), np.zeros(8, np.float32), 1e-5, x.copy(), np.zeros(2, np.float32), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"_core\.layer_norm_backward: 'dgamma' must have shape \(8,\)"):
        c.layer_norm_backward(x, x, np.ones(8, np.float32), np.zeros(3, np.float32), np.ones(3, np.float32),
                              x.copy(), np.zeros(9, np.float32), np.zeros(8, np.float32))
    with pytest.raises(ValueError, match=r"_core\.activation_forward: unknown activation code 7"):
        c.activation_forward(7, x, x.copy())
    with pytest.raises(ValueError, match=r"_core\.activation_backward: 'dx' has shape \(3, 7\) but 'x' has shape \(3, 8\)"):
        c.activation_backward(1, x, x, np.zeros((3, 7), np.float32))
    with pytest.raises(ValueError, match=r"_core\.activation_forward: 'y' is read-only"):
        ro = x.copy()
        ro.flags.writeable = False
        c.activation_forward(1, x, ro)
    # the feed-forward path's call: contiguous arrays of one shape, any ndim, in place allowed
    h = np.linspace(-3, 3, 24, dtype=np.float32).reshape(2, 3, 4)
    y = np.empty_like(h)
    c.activation_forward(c.ACT_GELU_TANH, h, y)
    np.testing.assert_array_equal(y, ops.gelu(h))
    c.activation_forward(c.ACT_RELU, h, h)
    np.testing.assert_array_equal(h, np.maximum(np.linspace(-3, 3, 24, dtype=np.float32), 0).reshape(2, 3, 4))


def test_zero_size(isa):
    e = np.zeros((0, 5), np.float32)
    assert ops.softmax(e).shape == (0, 5)
    assert ops.softmax(np.zeros((4, 0), np.float32)).shape == (4, 0)
    assert ops.softmax_backward(e, e).shape == (0, 5)
    y, (m, r) = ops.layer_norm(e, np.ones(5, np.float32), np.zeros(5, np.float32), return_saved=True)
    assert y.shape == (0, 5) and m.shape == r.shape == (0,)
    dx, dg, db = ops.layer_norm_backward(e, e, np.ones(5, np.float32), np.zeros(5, np.float32), (m, r))
    assert dx.shape == (0, 5)
    np.testing.assert_array_equal(dg, np.zeros(5))
    np.testing.assert_array_equal(db, np.zeros(5))
    y, (m, r) = ops.layer_norm(np.zeros((3, 0), np.float32), np.ones(0, np.float32), np.ones(0, np.float32), return_saved=True)
    assert y.shape == (3, 0) and np.isnan(m).all() and np.isnan(r).all()
    for f in (ops.gelu, ops.relu):
        assert f(np.zeros((2, 0, 3), np.float32)).shape == (2, 0, 3)
    assert ops.gelu_backward(e, e, approximate="none").shape == (0, 5)
    assert ops.relu_backward(e, e).shape == (0, 5)


def test_numpy_backend_float64(rng):
    x = rng.standard_normal((3, 9))
    g, b = rng.standard_normal(9), rng.standard_normal(9)
    with tx.use_backend("numpy"):
        assert ops.softmax(x).dtype == np.float64
        assert ops.layer_norm(x, g, b).dtype == np.float64
        assert ops.gelu(x, approximate="none").dtype == np.float64
        assert ops.relu_backward(x, x).dtype == np.float64
        with pytest.raises(TypeError, match=r"ops\.layer_norm: argument 'gamma' has dtype float32 but the other inputs are float64"):
            ops.layer_norm(x, g.astype(np.float32), b)
        with pytest.raises(ValueError, match=r"ops\.gelu: approximate must be 'tanh' or 'none'"):
            ops.gelu(x, approximate="erf")


def test_torch_parity(isa, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = randn(rng, 4, 257, scale=3.0)
    t = torch.from_numpy(x)
    np.testing.assert_allclose(ops.gelu(x), F.gelu(t, approximate="tanh").numpy(), rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(ops.gelu(x, approximate="none"), F.gelu(t).numpy(), rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(ops.softmax(x), torch.softmax(t, -1).numpy(), rtol=1e-5, atol=1e-7)
    g, b = randn(rng, 257), randn(rng, 257)
    np.testing.assert_allclose(ops.layer_norm(x, g, b),
                               F.layer_norm(t, (257,), torch.from_numpy(g), torch.from_numpy(b)).numpy(),
                               rtol=1e-5, atol=1e-5)


# ============================================================================ out=
def out_cases(rng, rows=6, n=129):
    """(name, call(out) -> result, the output's shape): every op taking out=, on one set of
    inputs. The result is dx / y, or a tuple whose first entry is (layer norm)."""
    x, dy = randn(rng, rows, n, scale=3.0), randn(rng, rows, n)
    g, b = randn(rng, n), randn(rng, n)
    y = ops.softmax(x)
    _, stats = ops.layer_norm(x, g, b, return_saved=True)
    return [
        ("softmax", lambda out: ops.softmax(x, out=out)),
        ("softmax_backward", lambda out: ops.softmax_backward(dy, x, y, out=out)),
        ("softmax_backward(saved=None)", lambda out: ops.softmax_backward(dy, x, out=out)),
        ("layer_norm", lambda out: ops.layer_norm(x, g, b, return_saved=True, out=out)),
        ("layer_norm_backward", lambda out: ops.layer_norm_backward(dy, x, g, b, stats, out=out)),
        ("layer_norm_backward(saved=None)", lambda out: ops.layer_norm_backward(dy, x, g, b, out=out)),
        ("gelu tanh", lambda out: ops.gelu(x, out=out)),
        ("gelu none", lambda out: ops.gelu(x, approximate="none", out=out)),
        ("gelu_backward tanh", lambda out: ops.gelu_backward(dy, x, out=out)),
        ("gelu_backward none", lambda out: ops.gelu_backward(dy, x, approximate="none", out=out)),
        ("relu", lambda out: ops.relu(x, out=out)),
        ("relu_backward", lambda out: ops.relu_backward(dy, x, out=out)),
    ], x.shape


def check_out_equals_new(cases, shape, dtype=np.float32):
    for name, call in cases:
        new = call(None)
        out = np.full(shape, np.nan, dtype)  # every element must be overwritten
        got = call(out)
        if isinstance(new, tuple):  # layer norm: (y, (mean, rstd)) or (dx, dgamma, dbeta)
            assert got[0] is out, name
            for a, c in zip(new[1:], got[1:]):
                np.testing.assert_array_equal(a, c, err_msg=name)
            new = new[0]
        else:
            assert got is out, name
        np.testing.assert_array_equal(out, new, err_msg=name)


@pytest.mark.parametrize("rows, n", [(6, 129), (2900, 768)])  # 2900x768: layer norm's streaming stores
def test_out_matches_new_output_bit_for_bit(isa, rng, rows, n):
    cases, shape = out_cases(rng, rows, n)
    check_out_equals_new(cases, shape)
    x = randn(rng, 2, 3, 17)
    y, saved = ops.softmax(x, return_saved=True, out=np.empty_like(x))
    assert saved is y  # the backward reads the probabilities from out
    assert ops.gelu(np.float32(0.5), out=np.empty((), np.float32)).shape == ()
    e = np.zeros((0, 5), np.float32)
    assert ops.softmax(e, out=np.empty_like(e)).shape == (0, 5)


def _at_address_of(a, ref, minus=0):
    """A copy of a starting `minus` bytes below ref's address modulo 4 KiB."""
    buf = np.empty(a.size + 1024, np.float32)
    s = (ref.ctypes.data - minus - buf.ctypes.data) % 4096 // 4
    v = buf[s:s + a.size].reshape(a.shape)
    v[...] = a
    return v


def test_softmax_same_bits_wherever_out_sits(isa, rng):
    # rows.h: the exp pass loads a group of vectors ahead of its stores where out sits
    # 1..1023 bytes past x modulo 4 KiB (4K aliasing), and not elsewhere; both loops sum in
    # the same order. 515 floats per row: whole groups, single vectors and a masked tail.
    x = randn(rng, 37, 515, scale=4.0)
    ref = reference.softmax(*f64(x))
    got = {}
    for below in (0, 64, 1000, 2048):
        out = np.empty_like(x)
        got[below] = ops.softmax(_at_address_of(x, out, below), out=out)
        assert_close(got[below], ref, softmax_tol(ref), f"softmax, x {below} bytes below out")
    for below in (64, 1000, 2048):
        np.testing.assert_array_equal(got[below], got[0])


@pytest.mark.parametrize("offset", [0, 1, 4, 5, 13])  # floats past a 64-byte line
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [771, 784])
@pytest.mark.parametrize("inputs_below_out", [0, 64])  # bytes, modulo 4 KiB
def test_layer_norm_streamed_output_at_any_alignment(isa, rng, offset, threads, n, inputs_below_out):
    # An output of >= 8 MiB is streamed (vmath.h's TxStream) into an out array starting
    # `offset` floats past a line. Rows of 771 floats end in a partial vector (each row
    # is a run of its own, and runs meet mid-line); rows of 784 (whole vectors on every
    # ISA) continue one run per thread, each vector shifted by the offset. Rows are
    # independent, so each block must equal the same rows computed alone (small: not
    # streamed), and nothing outside out may be written. With the inputs at out's address
    # modulo 4 KiB the output is streamed; 64 bytes below it, it is not (vmath.h's
    # tx_stream_aliases): both ways must agree.
    rows = 2900
    x, dy = randn(rng, rows, n, scale=2.0, loc=0.5), randn(rng, rows, n)
    g, b = randn(rng, n), randn(rng, n)
    buf = np.full(rows * n + 64, np.nan, np.float32)
    start = (-buf.ctypes.data % 64) // 4 + offset
    out = buf[start:start + rows * n].reshape(rows, n)
    x, dy = _at_address_of(x, out, inputs_below_out), _at_address_of(dy, out, inputs_below_out)
    before = tx.get_num_threads()
    tx.set_num_threads(threads)
    try:
        y, saved = ops.layer_norm(x, g, b, return_saved=True, out=out)
        y = y.copy()
        dx = ops.layer_norm_backward(dy, x, g, b, saved=saved, out=out)[0]
    finally:
        tx.set_num_threads(before)
    assert np.isnan(buf[:start]).all() and np.isnan(buf[start + rows * n:]).all()
    for r0 in range(0, rows, 700):  # 700 rows: 2.2 MB, below the streaming threshold
        blk = slice(r0, r0 + 700)
        y_blk, saved_blk = ops.layer_norm(x[blk], g, b, return_saved=True)
        np.testing.assert_array_equal(y[blk], y_blk)
        dx_blk = ops.layer_norm_backward(dy[blk], x[blk], g, b, saved=saved_blk)[0]
        np.testing.assert_array_equal(dx[blk], dx_blk)


def test_out_in_place(isa, rng):
    for name, f in [("softmax", ops.softmax), ("gelu tanh", ops.gelu),
                    ("gelu none", lambda x, out=None: ops.gelu(x, approximate="none", out=out)),
                    ("relu", ops.relu)]:
        x = randn(rng, 5, 300, scale=3.0)
        want = f(x)
        got = f(x, out=x)
        assert got is x, name
        np.testing.assert_array_equal(x, want, err_msg=name)
        # the same memory seen through another view object is in place too
        buf = randn(rng, 5, 300, scale=3.0)
        want = f(buf[1:4])
        view = buf[1:4]
        assert f(view, out=buf[1:4]).base is buf
        np.testing.assert_array_equal(view, want, err_msg=name)


def test_out_bad(isa):
    x = np.ones((4, 8), np.float32)
    g, b = np.ones(8, np.float32), np.zeros(8, np.float32)
    calls = {
        "softmax": lambda out: ops.softmax(x, out=out),
        "softmax_backward": lambda out: ops.softmax_backward(x, x, out=out),
        "layer_norm": lambda out: ops.layer_norm(x, g, b, out=out),
        "layer_norm_backward": lambda out: ops.layer_norm_backward(x, x, g, b, out=out),
        "gelu": lambda out: ops.gelu(x, out=out),
        "gelu_backward": lambda out: ops.gelu_backward(x, x, out=out),
        "relu": lambda out: ops.relu(x, out=out),
        "relu_backward": lambda out: ops.relu_backward(x, x, out=out),
    }
    for name, call in calls.items():
        op = rf"ops\.{name}: argument 'out'"
        with pytest.raises(ValueError, match=op + r" must have the result's shape \(4, 8\), got \(4, 7\)"):
            call(np.empty((4, 7), np.float32))
        with pytest.raises(ValueError, match=op + r" must have the result's shape \(4, 8\), got \(32,\)"):
            call(np.empty(32, np.float32))
        with pytest.raises(TypeError, match=op + r" has dtype float64; the result is float32 with shape \(4, 8\)"):
            call(np.empty((4, 8)))
        with pytest.raises(TypeError, match=op + r" must be a numpy.ndarray, got list"):
            call([[0.0] * 8] * 4)
        with pytest.raises(ValueError, match=op + r" must be C-contiguous .* got strides \(64, 8\)"):
            call(np.empty((4, 16), np.float32)[:, ::2])
        with pytest.raises(ValueError, match=op + r" must be C-contiguous .* got strides \(4, 16\)"):
            call(np.empty((8, 4), np.float32).T)
        ro = np.empty((4, 8), np.float32)
        ro.flags.writeable = False
        with pytest.raises(ValueError, match=op + " is read-only"):
            call(ro)
    # Overlap with an input, other than forward softmax / GELU / ReLU writing exactly over x.
    buf = np.arange(48, dtype=np.float32) / 48
    xs, shifted = buf[:32].reshape(4, 8), buf[8:40].reshape(4, 8)  # rows 1..3 of xs are rows 0..2 of shifted
    before = buf.copy()
    for name, call, msg in [
        ("softmax", lambda: ops.softmax(xs, out=shifted), r"overlaps the memory of 'x' \(only out=x itself is allowed\)"),
        ("gelu", lambda: ops.gelu(xs, out=shifted), r"overlaps the memory of 'x' \(only out=x itself is allowed\)"),
        ("relu", lambda: ops.relu(shifted, out=xs), "overlaps the memory of 'x'"),
        ("layer_norm", lambda: ops.layer_norm(xs, g, b, out=xs), "overlaps the memory of 'x'; the kernel"),
        ("layer_norm", lambda: ops.layer_norm(xs, buf[40:48], b, out=shifted), "overlaps the memory of 'x'"),
        ("layer_norm", lambda: ops.layer_norm(x, buf[32:40], b, out=shifted), "overlaps the memory of 'gamma'"),
        ("softmax_backward", lambda: ops.softmax_backward(xs, x, out=xs), "overlaps the memory of 'dy'"),
        ("softmax_backward", lambda: ops.softmax_backward(x, x, xs, out=shifted), "overlaps the memory of 'saved'"),
        ("layer_norm_backward", lambda: ops.layer_norm_backward(x, xs, g, b, out=shifted), "overlaps the memory of 'x'"),
        ("layer_norm_backward", lambda: ops.layer_norm_backward(
            x, x, g, b, (buf[:4], buf[4:8]), out=buf[:32].reshape(4, 8)), r"overlaps the memory of 'saved\[0\] \(mean\)'"),
        ("gelu_backward", lambda: ops.gelu_backward(x, xs, out=xs), "overlaps the memory of 'x'"),
        ("relu_backward", lambda: ops.relu_backward(shifted, x, out=xs), "overlaps the memory of 'dy'"),
    ]:
        with pytest.raises(ValueError, match=rf"ops\.{name}: argument 'out' {msg}"):
            call()
    np.testing.assert_array_equal(buf, before)  # nothing was written
    # Disjoint halves of one buffer are fine.
    np.testing.assert_array_equal(ops.gelu(buf[:24].reshape(3, 8), out=buf[24:].reshape(3, 8)), ops.gelu(before[:24].reshape(3, 8)))


def test_out_numpy_backend(rng):
    with tx.use_backend("numpy"):
        cases, shape = out_cases(rng, 3, 33)  # float32 in, float32 out
        check_out_equals_new(cases, shape)
        x, dy = rng.standard_normal((3, 9)), rng.standard_normal((3, 9))  # float64 in and out
        g, b = rng.standard_normal(9), rng.standard_normal(9)
        check_out_equals_new([
            ("softmax", lambda out: ops.softmax(x, out=out)),
            ("layer_norm_backward", lambda out: ops.layer_norm_backward(dy, x, g, b, out=out)),
            ("gelu none", lambda out: ops.gelu(x, approximate="none", out=out)),
            ("relu_backward", lambda out: ops.relu_backward(dy, x, out=out)),
        ], x.shape, np.float64)
        with pytest.raises(TypeError, match=r"ops\.gelu: argument 'out' has dtype float32; the result is float64"):
            ops.gelu(x, out=np.empty(x.shape, np.float32))
        want = ops.softmax(x)
        assert ops.softmax(x, out=x) is x
        np.testing.assert_array_equal(x, want)
        with pytest.raises(ValueError, match=r"ops\.gelu_backward: argument 'out' overlaps the memory of 'dy'"):
            ops.gelu_backward(dy, x, out=dy)
        with pytest.raises(ValueError, match=r"ops\.layer_norm: argument 'out' overlaps the memory of 'x'"):
            ops.layer_norm(x, g, b, out=x)


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_zero_width_rows_on_both_backends(backend):
    """Rows of length 0 (n = 0, rows > 0): empty dx, empty dγ/dβ, as the C++ backend gives."""
    if backend == "cpp" and not tx.supported_isas():
        pytest.skip("compiled core not available")
    e = np.zeros((3, 0), np.float32)
    with tx.use_backend(backend), np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's mean of an empty row
        dx, dg, db = ops.layer_norm_backward(e, e, np.ones(0, np.float32), np.zeros(0, np.float32))
    assert dx.shape == (3, 0) and dg.shape == db.shape == (0,)


def test_out_messages(isa):
    x = np.ones((2, 8), np.float32)
    with pytest.raises(ValueError, match="must be C-contiguous"):
        ops.softmax(x, out=np.empty((8, 2), np.float32).T)
    raw = np.empty(2 * 8 * 4 + 1, np.uint8)[1:]  # contiguous, but 1 byte past a float boundary
    misaligned = raw.view(np.float32).reshape(2, 8)
    with pytest.raises(ValueError, match="must be aligned to its 4-byte floats"):
        ops.softmax(x, out=misaligned)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_lists_subclasses_and_masked_arrays(isa):
    if tx.get_backend() == "cpp":
        with pytest.raises(TypeError, match=r"convert with np\.asarray\(x, np\.float32\)"):
            ops.softmax([[1.0, 2.0]])  # a list has no .astype
    m = np.matrix([[1.0, -2.0]], dtype=np.float32)  # an ndarray subclass: computed as a plain array
    y = ops.gelu(m)
    assert type(y) is np.ndarray
    np.testing.assert_array_equal(y, ops.gelu(np.asarray(m)))
    with pytest.raises(TypeError, match=r"ops\.gelu: argument 'x' is a masked array"):
        ops.gelu(np.ma.masked_array(np.ones(3, np.float32), mask=[0, 1, 0]))
