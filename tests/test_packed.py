"""Pre-packed weights (ops.pack_weight / PackedWeight) in matmul and feed_forward, fp32
and bf16, under every ISA variant.

Exactness claims, and why they hold:
- fp32 packed == unpacked matmul of the same (K, N) weight, BIT FOR BIT, for every M:
  both compute each C element as the one sequential float32 FMA chain over k starting
  from bias (gemm.cpp, "Numerics"); packing changes where W is read from, not the
  order. With transpose_w the unpacked skinny path (M <= 64) sums dot products in SIMD
  lanes instead, so there we compare against matmul(x, ascontiguousarray(w.T)) bit for
  bit and against matmul(x, w, transpose_w=True) within the float32 GEMM bound.
- bf16 packed == matmul(x, bf16_round(w)) bit for bit (weights are widened exactly, the
  FMA chain is the same). Against a float64 reference computed with the bf16-rounded
  weights the usual float32 bound applies (u·(4√K+4)·Σ|x||w|). Against the ORIGINAL fp32
  weights each weight carries a relative error <= 2^-8 (round to nearest to 8
  significant bits), so |y_bf16 - y| <= 2^-8·Σ_k |x_k||w_kj| + the float32 bound.
"""
import copy
import pickle

import numpy as np
import pytest

import transformer_ext as tx
from transformer_ext import ops

from conftest import needs_core

U = 2.0**-24
MS = [1, 2, 3, 4, 5, 6, 7, 16, 17, 64, 200]
KN = [(1, 1), (3, 17), (17, 63), (63, 65), (65, 129), (129, 3), (768, 63), (17, 768)]


def bound(x, w, K):
    """float32 GEMM bound (see test_linear.py): u·(4√K+4)·|x|·|w| + bias ulps."""
    return U * (4.0 * np.sqrt(max(K, 1)) + 4.0) * (np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    out = {}
    for K, N in KN:
        out[K, N] = (
            rng.standard_normal((max(MS), K), dtype=np.float32),
            rng.standard_normal((K, N), dtype=np.float32),
            rng.standard_normal(N, dtype=np.float32),
        )
    return out


@needs_core
@pytest.mark.parametrize("K,N", KN)
def test_fp32_packed_bit_identical(isa, data, K, N):
    X, w, b = data[K, N]
    pw = ops.pack_weight(w)
    assert pw.shape == (K, N) and pw.dtype == "fp32"
    np.testing.assert_array_equal(pw.unpack(), w)
    for M in MS:
        x = X[:M]
        np.testing.assert_array_equal(ops.matmul(x, pw, b), ops.matmul(x, w, b), err_msg=f"M={M}")
    np.testing.assert_array_equal(ops.matmul(X[:3], pw), ops.matmul(X[:3], w))  # no bias


@needs_core
@pytest.mark.parametrize("K,N", [(17, 63), (65, 129), (768, 63)])
def test_fp32_transpose_w(isa, data, K, N):
    X, w, b = data[K, N]
    wt = np.ascontiguousarray(w.T)  # stored (N, K)
    pw = ops.pack_weight(wt, transpose_w=True)
    assert pw.shape == (K, N)
    np.testing.assert_array_equal(pw.data, ops.pack_weight(w).data)
    for M in MS:
        x = X[:M]
        y = ops.matmul(x, pw, b)
        np.testing.assert_array_equal(y, ops.matmul(x, w, b))
        ref = x.astype(np.float64) @ w.astype(np.float64) + b
        assert np.all(np.abs(ops.matmul(x, wt, b, transpose_w=True) - ref) <= bound(x, w, K) + 4 * U * np.abs(b))


@needs_core
@pytest.mark.parametrize("K,N", KN)
def test_bf16_packed(isa, data, K, N):
    X, w, b = data[K, N]
    pw = ops.pack_weight(w, dtype="bf16")
    wr = ops.bf16_round(w)
    np.testing.assert_array_equal(pw.unpack(), wr)
    assert np.all(np.abs(wr - w) <= 2.0**-8 * np.abs(w))  # RNE to 8 significant bits
    for M in MS:
        x = X[:M]
        y = ops.matmul(x, pw, b)
        np.testing.assert_array_equal(y, ops.matmul(x, wr, b), err_msg=f"M={M}")
        ref_r = x.astype(np.float64) @ wr.astype(np.float64) + b
        tol = bound(x, wr, K) + 4 * U * np.abs(b)
        assert np.all(np.abs(y - ref_r) <= tol)
        ref = x.astype(np.float64) @ w.astype(np.float64) + b
        absprod = np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64)
        assert np.all(np.abs(y - ref) <= 2.0**-8 * absprod + 2 * tol)


def test_bf16_rounding_rule():
    """Round to nearest, ties to even, on the 16 dropped bits; inf/nan preserved."""
    bits = np.array([0x3F800000, 0x3F808000, 0x3F818000, 0x3F808001, 0x3F807FFF, 0x7F800000, 0xFF800000, 0x7FC00001],
                    np.uint32)
    r = ops.bf16_round(bits.view(np.float32)).view(np.uint32) >> 16
    assert list(r[:7]) == [0x3F80, 0x3F80, 0x3F82, 0x3F81, 0x3F80, 0x7F80, 0xFF80]
    assert np.isnan(ops.bf16_round(bits.view(np.float32))[7])


@needs_core
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_cpp_packer_matches_numpy_layout(dtype):
    from transformer_ext.ops.linear import _pack_numpy
    rng = np.random.default_rng(3)
    for K, N in [(1, 1), (3, 33), (65, 129)]:
        w = rng.standard_normal((K, N), dtype=np.float32)
        with tx.use_backend("cpp"):
            a = ops.pack_weight(w, dtype=dtype).data
        np.testing.assert_array_equal(a, _pack_numpy(w, 0 if dtype == "fp32" else 1))


@needs_core
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_threads_bit_identical(isa, threads, dtype):
    rng = np.random.default_rng(5)
    w = rng.standard_normal((384, 1000), dtype=np.float32)
    pw = ops.pack_weight(w, dtype=dtype)
    for M in (1, 5, 16, 100):
        x = rng.standard_normal((M, 384), dtype=np.float32)
        threads(1)
        y1 = ops.matmul(x, pw)
        threads(2)
        np.testing.assert_array_equal(ops.matmul(x, pw), y1)


# GEMV path (M = 1..6): a thread walks groups of NP panels at once (NP = 12/6/4/3/2/2 for
# M = 1..6 on AVX-512, 4/2/1... on AVX2/portable), the rest in halving groups; M = 7, 8
# take the one-panel skinny path. N values
# hit whole groups, every remainder size, a partial last panel and N < 32; K values the
# odd bf16 tail row.
GEMV_N = [1, 31, 32 * 12, 32 * 23 + 5, 32 * 22 + 17]
GEMV_K = [1, 2, 3, 64, 129]


@needs_core
@pytest.mark.parametrize("K", GEMV_K)
def test_gemv_path(isa, threads, K):
    rng = np.random.default_rng(K)
    core = tx._backend.core
    for N in GEMV_N:
        w = rng.standard_normal((K, N), dtype=np.float32)
        b = rng.standard_normal(N, dtype=np.float32)
        big = rng.standard_normal((8, K + 9), dtype=np.float32)
        pw, pb, wr = ops.pack_weight(w), ops.pack_weight(w, dtype="bf16"), ops.bf16_round(w)
        for M in (1, 2, 3, 4, 5, 6, 8):
            x = big[:M, 3:3 + K]  # rows of a wider buffer (row stride != K)
            xc = np.ascontiguousarray(x)
            for bias in (b, None):
                threads(1)
                y32, y16 = ops.matmul(x, pw, bias), ops.matmul(x, pb, bias)
                np.testing.assert_array_equal(y32, ops.matmul(xc, w, bias), err_msg=f"fp32 M={M} N={N}")
                np.testing.assert_array_equal(y16, ops.matmul(xc, wr, bias), err_msg=f"bf16 M={M} N={N}")
                threads(2)
                np.testing.assert_array_equal(ops.matmul(x, pw, bias), y32)
                np.testing.assert_array_equal(ops.matmul(x, pb, bias), y16)
            # accumulate: c = x·W + b + c, the chain starting from (c + b)
            c0 = rng.standard_normal((M, N), dtype=np.float32)
            c = c0.copy()
            core.gemm_packed(xc, pw.data, K, N, 0, b, c, True)
            np.testing.assert_array_equal(c, ops.matmul(xc, w, (c0 + b)[0]) if M == 1 else c)
            ref = xc.astype(np.float64) @ w + b + c0
            assert np.all(np.abs(c - ref) <= bound(xc, w, K) + 8 * U * (np.abs(b) + np.abs(c0)))


@needs_core
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_packed_gemm_across_blocks(isa, threads, dtype):
    """M > 16 (the GEMM loop over packed panels): N across the NC block (384 columns on
    AVX-512, 128 elsewhere; balanced), M across MC = 2100, K across KC = 512 (256 on AVX2 /
    portable), odd K, every edge-tile height; bit-identical to the unpacked product and across
    thread counts."""
    rng = np.random.default_rng(23)
    # M = 70..83: every row count of the bottom edge tile (fewer than MR rows run a smaller kernel)
    for M, K, N in [(40, 300, 1100), (33, 257, 1025), (17, 5, 2049), (20, 1030, 70), (29, 9, 385),
                    (2101, 7, 40)] + [(m, 21, 70) for m in range(70, 84)]:
        w = rng.standard_normal((K, N), dtype=np.float32)
        x = rng.standard_normal((M, K), dtype=np.float32)
        b = rng.standard_normal(N, dtype=np.float32)
        pw = ops.pack_weight(w, dtype=dtype)
        wref = w if dtype == "fp32" else ops.bf16_round(w)
        threads(1)
        y = ops.matmul(x, pw, b)
        np.testing.assert_array_equal(y, ops.matmul(x, wref, b))
        threads(2)
        np.testing.assert_array_equal(ops.matmul(x, pw, b), y)


@needs_core
def test_gemv_nonfinite(isa):
    """inf/nan in x or W propagate exactly as in the unpacked product (same FMA chains)."""
    rng = np.random.default_rng(21)
    w = rng.standard_normal((40, 100), dtype=np.float32)
    w[3, 7] = np.inf
    w[5, 50] = np.nan
    x = rng.standard_normal((3, 40), dtype=np.float32)
    x[1, 9] = -np.inf
    for dtype, wref in (("fp32", w), ("bf16", ops.bf16_round(w))):
        y = ops.matmul(x, ops.pack_weight(w, dtype=dtype))
        np.testing.assert_array_equal(y, ops.matmul(x, wref))
        assert np.isnan(y[:, 50]).all() and np.isnan(y[1]).any()


@needs_core
def test_feed_forward_packed(isa):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 9, 24), dtype=np.float32)
    w1 = rng.standard_normal((24, 80), dtype=np.float32) * 0.2
    w2 = rng.standard_normal((80, 24), dtype=np.float32) * 0.2
    b1 = rng.standard_normal(80, dtype=np.float32)
    b2 = rng.standard_normal(24, dtype=np.float32)
    y = ops.feed_forward(x, w1, b1, w2, b2)
    np.testing.assert_array_equal(ops.feed_forward(x, ops.pack_weight(w1), b1, ops.pack_weight(w2), b2), y)
    yb = ops.feed_forward(x, ops.pack_weight(w1, dtype="bf16"), b1, ops.pack_weight(w2, dtype="bf16"), b2)
    np.testing.assert_array_equal(yb, ops.feed_forward(x, ops.bf16_round(w1), b1, ops.bf16_round(w2), b2))
    # the backward takes packed weights too (gradients w.r.t. the weights they hold)
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    g = ops.feed_forward_backward(dy, x, ops.pack_weight(w1), b1, w2, b2)
    for a, e in zip(g, ops.feed_forward_backward(dy, x, w1, b1, w2, b2)):
        np.testing.assert_array_equal(a, e)


def test_numpy_backend_packed():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((5, 40))
    w = rng.standard_normal((40, 70)).astype(np.float32)
    with tx.use_backend("numpy"):
        pw = ops.pack_weight(w, dtype="bf16")
        y = ops.matmul(x, pw)  # float64 x: the reference on the rounded weights
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, x @ ops.bf16_round(w).astype(np.float64), rtol=1e-12, atol=1e-12)


@needs_core
def test_strided_x_and_empty(isa):
    rng = np.random.default_rng(13)
    w = rng.standard_normal((33, 40), dtype=np.float32)
    pw = ops.pack_weight(w)
    big = rng.standard_normal((6, 50), dtype=np.float32)
    x = big[:, 5:38]  # rows of a wider buffer
    np.testing.assert_array_equal(ops.matmul(x, pw), ops.matmul(np.ascontiguousarray(x), w))
    assert ops.matmul(np.zeros((0, 33), np.float32), pw).shape == (0, 40)
    p0 = ops.pack_weight(np.zeros((0, 4), np.float32))
    b = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(ops.matmul(np.zeros((3, 0), np.float32), p0, b), np.tile(b, (3, 1)))


@needs_core
def test_bad_input(isa):
    w = np.ones((8, 5), np.float32)
    pw = ops.pack_weight(w)
    with pytest.raises(ValueError, match=r"ops.matmul: x has shape \(3, 7\) \(K=7\).*PackedWeight\(K=8, N=5"):
        ops.matmul(np.ones((3, 7), np.float32), pw)
    with pytest.raises(ValueError, match=r"ops.matmul: b must have shape \(5,\)"):
        ops.matmul(np.ones((3, 8), np.float32), pw, np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"transpose_w"):
        ops.matmul(np.ones((3, 8), np.float32), pw, transpose_w=True)
    with pytest.raises(ValueError, match=r"ops.pack_weight: dtype must be one of \('fp32', 'bf16'\), got 'fp16'"):
        ops.pack_weight(w, dtype="fp16")
    with pytest.raises(ValueError, match=r"ops.pack_weight: argument 'w' must be 2-D"):
        ops.pack_weight(np.ones(8, np.float32))
    with pytest.raises(TypeError, match=r"ops.matmul: argument 'x'.*float64|float32"):
        ops.matmul(np.ones((3, 8)), pw)
    with pytest.raises(TypeError, match=r"ops.pack_weight: argument 'w'.*float64|float32"):
        ops.pack_weight(np.ones((8, 5)))
    with pytest.raises(ValueError, match=r"PackedWeight: data must be a \(256,\) float32 buffer"):
        ops.PackedWeight(np.zeros(10, np.float32), 8, 5, "fp32")
    with pytest.raises(ValueError, match=r"w2 has PackedWeight\(K=8"):
        ops.feed_forward(np.ones((2, 4), np.float32), np.ones((4, 6), np.float32), None, pw, None)
    core = tx._backend.core
    c = np.empty((3, 5), np.float32)
    with pytest.raises(ValueError, match=r"_core.gemm_packed: 'packed' has 256 elements, not a packed \(9, 5\)"):
        core.gemm_packed(np.ones((3, 9), np.float32), pw.data, 9, 5, 0, None, c)
    with pytest.raises(TypeError, match=r"_core.gemm_packed: 'packed' must be a uint16 buffer"):
        core.gemm_packed(np.ones((3, 8), np.float32), pw.data, 8, 5, 1, None, c)


@needs_core
def test_pickle_and_copy(isa):
    rng = np.random.default_rng(17)
    w = rng.standard_normal((20, 45), dtype=np.float32)
    x = rng.standard_normal((4, 20), dtype=np.float32)
    for dtype in ("fp32", "bf16"):
        pw = ops.pack_weight(w, dtype=dtype)
        assert not pw.data.flags.writeable
        for q in (pickle.loads(pickle.dumps(pw)), copy.deepcopy(pw)):
            assert (q.K, q.N, q.dtype, q.layout) == (20, 45, dtype, "panel32")
            np.testing.assert_array_equal(ops.matmul(x, q), ops.matmul(x, pw))
        assert copy.copy(pw).data is pw.data  # shallow copies share the read-only buffer


# ---- the AMX path of bf16 pre-packed GEMMs (M > 16 on CPUs with AMX-BF16) ----
# gemm_amx.cpp splits each activation a = hi + lo into two bf16 terms (|a − hi − lo| <=
# 2^-16·|a|: two roundings to 8 significant bits), multiplies both by the bf16 weights on
# the tiles (bf16 products are exact in fp32) and sums in fp32 in the tile unit's order.
# So against the float64 product with the bf16-rounded weights:
#   |y − ref| <= 2^-16·Σ|x||w| + the float32 summation bound + ulps of the bias / C.
AMX_SHAPES = [(17, 1, 1), (31, 2, 31), (32, 31, 32), (33, 32, 33), (64, 33, 65), (65, 63, 100),
              (100, 64, 17), (47, 65, 200), (129, 768, 63), (40, 3072, 40), (20, 1000, 600)]


def amx_bound(x, wr, K, extra):
    absprod = np.abs(x).astype(np.float64) @ np.abs(wr).astype(np.float64)
    return 2.0**-16 * absprod + bound(x, wr, K) + 4 * U * extra


@needs_core
def test_amx_bf16_gemm(amx, threads):
    rng = np.random.default_rng(31)
    core = tx._backend.core
    for M, K, N in AMX_SHAPES:
        w = rng.standard_normal((K, N), dtype=np.float32)
        big = rng.standard_normal((M, K + 5), dtype=np.float32)
        x = big[:, 2:2 + K]  # rows of a wider buffer: A's row stride != K
        b = rng.standard_normal(N, dtype=np.float32)
        pb, wr = ops.pack_weight(w, dtype="bf16"), ops.bf16_round(w)
        ref = x.astype(np.float64) @ wr.astype(np.float64)
        threads(1)
        y = ops.matmul(x, pb, b)
        err = np.abs(y - (ref + b))
        assert np.all(err <= amx_bound(x, wr, K, np.abs(b))), f"M={M} K={K} N={N}: {err.max()}"
        # really the tile path: its error differs from the FMA path's somewhere (K > 1)
        core.set_amx(False)
        y_fma = ops.matmul(x, pb, b)
        core.set_amx(True)
        if K > 2:
            assert not np.array_equal(y, y_fma), f"M={M} K={K} N={N}"
        threads(2)
        np.testing.assert_array_equal(ops.matmul(x, pb, b), y)  # thread count changes nothing
        # accumulate into C (c = c0 + b + x·W) and no bias
        c0 = rng.standard_normal((M, N), dtype=np.float32)
        c = c0.copy()
        core.gemm_packed(np.ascontiguousarray(x), pb.data, K, N, 1, b, c, True)
        assert np.all(np.abs(c - (ref + b + c0)) <= amx_bound(x, wr, K, np.abs(b) + 2 * np.abs(c0)))
        y0 = ops.matmul(x, pb)
        assert np.all(np.abs(y0 - ref) <= amx_bound(x, wr, K, 0))


@needs_core
def test_amx_bf16_split_keeps_activation_precision(amx):
    """Activations with more than 8 significant bits: rounding them to bf16 (one term)
    would be off by up to 2^-9 relative; the hi + lo split keeps 2^-16."""
    K, N, M = 64, 32, 32
    x = np.full((M, K), 1.0 + 2.0**-12, np.float32)  # not a bf16 value: hi = 1, lo = 2^-12
    w = np.ones((K, N), np.float32)
    y = ops.matmul(x, ops.pack_weight(w, dtype="bf16"))
    np.testing.assert_array_equal(y, np.float32(K * (1.0 + 2.0**-12)))


@needs_core
def test_amx_bf16_nonfinite(amx):
    """NaN in x or W gives NaN where it is used; ±inf in x gives ±inf as in fp32 (its lo
    term is 0). (inf in W gives NaN on this path: 0·inf from a zero lo term.)"""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((40, 100), dtype=np.float32)
    w[5, 50] = np.nan
    x = rng.standard_normal((20, 40), dtype=np.float32)
    x[1, 9] = -np.inf
    x[2, 3] = np.nan
    y = ops.matmul(x, ops.pack_weight(w, dtype="bf16"))
    ref = x.astype(np.float64) @ ops.bf16_round(w).astype(np.float64)
    assert np.isnan(y[:, 50]).all() and np.isnan(y[2]).all()
    np.testing.assert_array_equal(np.isinf(y), np.isinf(ref))
    np.testing.assert_array_equal(np.sign(y[1][np.isinf(ref[1])]), np.sign(ref[1][np.isinf(ref[1])]))


def test_packed_weight_leaves_the_callers_array_writable():
    pw = ops.pack_weight(np.ones((8, 5), np.float32))
    data = np.array(pw.data)  # a writable copy of the packed buffer
    pw2 = ops.PackedWeight(data, 8, 5, "fp32")
    assert data.flags.writeable and not pw2.data.flags.writeable and np.shares_memory(pw2.data, data)
