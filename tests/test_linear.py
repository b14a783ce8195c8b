"""GEMM kernel (_core.gemm / _core.sum_rows) and the linear ops (matmul, feed_forward and
their backwards): C++ against a float64 NumPy reference under every ISA variant.

Tolerance. Every float32 result here is a sum of K products. With unit roundoff
u = 2⁻²⁴, the rounding error of a length-K float32 dot product is bounded in the worst
case by ~K·u·Σ|a_k b_k| and, with high probability, by λ·√K·u·Σ|a_k b_k| for a small
constant λ (Higham & Mary, "A new approach to probabilistic rounding error analysis",
SISC 2019) — the errors of the K roundings have random signs and add like a random
walk. `gemm_bound` uses exactly that element-wise: u·(4√K + 4)·(|op(A)|·|op(B)|) plus
a few ulps of the initial value (C and/or bias). It holds for every code path (packed
micro-kernel, skinny streaming, SIMD dot products, the portable variant without FMA).
Chained ops (feed-forward, backward) compare with rtol = atol/max|ref| ≈ 2e-6·√K,
the same √K·u scaling with room for two or three chained products.
"""
import itertools

import numpy as np
import pytest

import transformer_ext as tx
from transformer_ext import ops
from transformer_ext.ops import _checks
from transformer_ext.ops import reference as R

from conftest import ISAS, needs_core

pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

U = 2.0**-24  # float32 unit roundoff
core = tx._backend.core

TRANS = list(itertools.product([False, True], [False, True]))


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """The float64 references are small matmuls: one BLAS thread (a BLAS thread pool on
    a busy 2-core machine costs milliseconds per call)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


def gemm_bound(absprod, K, init_abs=0.0):
    """Element-wise bound on |float32 GEMM - exact| (see the module docstring)."""
    return U * ((4.0 * np.sqrt(max(K, 1)) + 4.0) * absprod + 4.0 * init_abs) + 1e-35


def operands(rng, M, N, K, ta, tb, pad=0):
    """A and B stored as the kernel reads them (A is K×M when ta, B is N×K when tb);
    pad > 0 makes them slices of wider buffers (row stride > row length)."""
    sa = (K, M) if ta else (M, K)
    sb = (N, K) if tb else (K, N)
    a = rng.standard_normal((sa[0], sa[1] + pad), dtype=np.float32)[:, pad // 2 : pad // 2 + sa[1]]
    b = rng.standard_normal((sb[0], sb[1] + pad), dtype=np.float32)[:, pad // 2 : pad // 2 + sb[1]]
    return a, b


def run_gemm(a, b, bias, c0, ta, tb, acc):
    c = c0.copy()
    core.gemm(a, b, bias, c, ta, tb, acc)
    return c


def check_gemm(c, a, b, bias, c0, ta, tb, acc):
    A = (a.T if ta else a).astype(np.float64)
    B = (b.T if tb else b).astype(np.float64)
    ref = A @ B
    init = np.zeros_like(ref)
    if acc:
        init += c0
    if bias is not None:
        init += bias
    ref += init
    bound = gemm_bound(np.abs(A) @ np.abs(B), A.shape[1], np.abs(init))
    err = np.abs(c.astype(np.float64) - ref)
    assert np.all(err <= bound), (
        f"max err {err.max():.3g} (bound there {bound.flat[err.argmax()]:.3g}) "
        f"M,N,K={ref.shape + (A.shape[1],)} ta={ta} tb={tb} bias={bias is not None} acc={acc}"
    )


# Sizes around every variant's blocking: MR = 14 / 6 / 6, NR = 32 / 16 / 8 (avx512 /
# avx2 / portable), KC = 512 / 256 / 256, MC = 2100 (all three), NC = 384 / 128 / 128 (blocks
# balanced: N = 385 is two blocks of 224 + 161 on avx512; B packed in row-wise groups of
# 8 slivers: 256 / 128 / 64 columns); the skinny
# paths take M <= 32 (streaming, not trans_b: column chunks of up to 1024, 8 rows of B
# per pass) and M <= 64 (dot products, trans_b: 16 / 8 / 4-lane steps, 4 rows of B at
# a time); plus the usual odd sizes.
GEMM_SHAPES = [
    (1, 1, 1), (1, 3, 7), (3, 7, 17), (7, 17, 3), (17, 63, 65), (63, 65, 127), (65, 127, 129),
    (127, 129, 63), (129, 17, 65),
    (13, 31, 255), (14, 32, 256), (15, 33, 257), (16, 64, 300), (17, 48, 9), (5, 6, 8), (6, 16, 1),
    (12, 15, 513), (28, 64, 7), (20, 33, 1030), (169, 40, 30), (167, 9, 17),
    (335, 20, 10), (337, 33, 20), (239, 17, 9), (241, 9, 17), (119, 40, 12), (121, 7, 30),
    (18, 4097, 3), (3, 2049, 5), (2, 1100, 9), (9, 300, 17), (4, 9, 15), (8, 5, 33),
    (32, 1030, 20), (33, 40, 19), (64, 7, 40), (65, 9, 31),
    (40, 1023, 20), (34, 1025, 9), (70, 1057, 33), (34, 257, 260), (35, 255, 9), (66, 129, 7),
    (40, 383, 9), (47, 385, 513), (33, 769, 5), (2099, 20, 9), (2101, 33, 7), (4201, 9, 3),

    # every row count of the bottom edge tile (M mod MR = 0..13; tiles of fewer rows run a
    # smaller kernel), above both skinny paths
    *[(m, 37, 21) for m in range(70, 84)],
]


@needs_core
@pytest.mark.parametrize("M,N,K", GEMM_SHAPES, ids=lambda v: str(v))
def test_gemm_shapes(isa, rng, M, N, K):
    """All four trans combinations × bias/no bias × accumulate/overwrite."""
    for (ta, tb), (has_bias, acc) in itertools.product(TRANS, TRANS):
        a, b = operands(rng, M, N, K, ta, tb)
        bias = rng.standard_normal(N, dtype=np.float32) if has_bias else None
        c0 = rng.standard_normal((M, N), dtype=np.float32)
        check_gemm(run_gemm(a, b, bias, c0, ta, tb, acc), a, b, bias, c0, ta, tb, acc)


@needs_core
@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("M,N,K", [(5, 40, 33), (70, 50, 300)])
def test_gemm_strided_operands(isa, rng, ta, tb, M, N, K):
    """a, b are slices of wider buffers (read in place through lda/ldb), and reversed
    views (negative row stride)."""
    a, b = operands(rng, M, N, K, ta, tb, pad=9)
    assert a.strides[0] != a.shape[1] * 4 and b.strides[0] != b.shape[1] * 4
    bias = rng.standard_normal(N, dtype=np.float32)
    c0 = np.zeros((M, N), np.float32)
    check_gemm(run_gemm(a, b, bias, c0, ta, tb, False), a, b, bias, c0, ta, tb, False)
    ar, br = a[::-1], b[::-1]
    check_gemm(run_gemm(ar, br, None, c0, ta, tb, False), ar, br, None, c0, ta, tb, False)


@needs_core
@pytest.mark.parametrize("N,K", [(100, 37), (1024, 20), (3072, 9), (77, 300)])
def test_gemm_one_row_matches_its_row_in_a_taller_product(isa, rng, N, K):
    """M = 1 (decoding) takes its own loop in the skinny streaming path (broadcasts hoisted,
    columns in groups of vectors; N = 1024, 3072: row strides of whole 4 KiB pages, no
    prefetch): every element is the same FMA chain as in a taller skinny product, so the
    bits equal that product's row; bias, accumulate and trans_a too."""
    for ta, acc in ((False, False), (True, True)):
        a, b = operands(rng, 3, N, K, ta, False)
        bias = rng.standard_normal(N, dtype=np.float32)
        c0 = rng.standard_normal((3, N), dtype=np.float32)
        tall = run_gemm(a, b, bias, c0, ta, False, acc)
        one = run_gemm(a[:, :1] if ta else a[:1], b, bias, c0[:1], ta, False, acc)
        check_gemm(one, a[:, :1] if ta else a[:1], b, bias, c0[:1], ta, False, acc)
        assert one.tobytes() == tall[:1].tobytes()


@needs_core
def test_gemm_k_zero(isa):
    """K = 0 (an empty sum): C = bias, plus C's old value when accumulating."""
    bias = np.arange(3, dtype=np.float32)
    a, b = np.zeros((2, 0), np.float32), np.zeros((3, 0), np.float32)  # op(b) = bᵀ is 0×3
    for acc, bb in itertools.product([False, True], [None, bias]):
        c = np.full((2, 3), 7.0, np.float32)
        core.gemm(a, b, bb, c, False, True, acc)
        np.testing.assert_array_equal(c, np.broadcast_to((7.0 if acc else 0.0) + (0.0 if bb is None else bias), (2, 3)))


@needs_core
def test_gemm_nan_inf_propagate(isa, rng):
    for M in (3, 40):  # skinny and packed paths
        for tb in (False, True):
            a, b = operands(rng, M, 37, 50, False, tb)
            a[1, 7] = np.nan
            a[2, 3] = np.inf
            c = np.empty((M, 37), np.float32)
            core.gemm(a, b, None, c, False, tb, False)
            assert np.isnan(c[1]).all()
            assert not np.isfinite(c[2]).any()
            assert np.isfinite(np.delete(c, [1, 2], axis=0)).all()


@needs_core
def test_gemm_binding_rejects_bad_arguments():
    f = np.zeros
    a, b, c = f((4, 5), np.float32), f((5, 3), np.float32), f((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"_core.gemm: op\(a\) is \(4, 5\).*op\(b\) is \(3, 3\)"):
        core.gemm(a, f((3, 3), np.float32), None, c, False, False, False)
    with pytest.raises(ValueError, match=r"'c' must have shape \(4, 3\), got \(3, 4\)"):
        core.gemm(a, b, None, f((3, 4), np.float32), False, False, False)
    with pytest.raises(ValueError, match="'bias' must have shape"):
        core.gemm(a, b, f(4, np.float32), c, False, False, False)
    with pytest.raises(TypeError, match="'bias' must be"):
        core.gemm(a, b, [1.0, 2.0, 3.0], c, False, False, False)
    with pytest.raises(TypeError, match="'a' must be float32"):
        core.gemm(a.astype(np.float64), b, None, c, False, False, False)
    with pytest.raises(ValueError, match="'c' must be C-contiguous"):
        core.gemm(a, b, None, f((4, 6), np.float32)[:, :3], False, False, False)
    ro = f((4, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        core.gemm(a, b, None, ro, False, False, False)
    with pytest.raises(ValueError, match="unit-stride"):
        core.gemm(f((4, 10), np.float32)[:, ::2], b, None, c, False, False, False)
    with pytest.raises(ValueError, match="must have 2 dims"):
        core.gemm(f(5, np.float32), b, None, c, False, False, False)
    with pytest.raises(ValueError, match=r"'out' must have shape \(3,\)"):
        core.sum_rows(b, f(4, np.float32), False)


# --------------------------------------------------------------------------- sum_rows
@needs_core
@pytest.mark.parametrize("M,N", [(1, 1), (3, 7), (17, 255), (129, 257), (1000, 65)])
def test_sum_rows(isa, rng, M, N):
    big = rng.standard_normal((M, N + 6), dtype=np.float32)
    x = big[:, 3 : 3 + N]  # strided rows, read in place
    for acc in (False, True):
        out0 = rng.standard_normal(N, dtype=np.float32)
        out = out0.copy()
        core.sum_rows(x, out, acc)
        ref = x.astype(np.float64).sum(axis=0) + (out0 if acc else 0.0)
        bound = gemm_bound(np.abs(x.astype(np.float64)).sum(axis=0), M, np.abs(out0) if acc else 0.0)
        assert np.all(np.abs(out - ref) <= bound)


# --------------------------------------------------------------------------- determinism
@needs_core
def test_gemm_bit_identical_across_thread_counts(isa, threads, rng):
    """Threads split M or N, never K: 1 and 2 threads give the same bits (packed path
    split both ways, skinny streaming and skinny dot paths, sum_rows)."""
    cases = [(300, 500, 700), (700, 300, 500), (8, 3000, 700)]
    results = {}
    for nt in (1, 2):
        threads(nt)
        rng_nt = np.random.default_rng(7)
        out = []
        for (M, N, K), (ta, tb) in itertools.product(cases, TRANS):
            a, b = operands(rng_nt, M, N, K, ta, tb)
            bias = rng_nt.standard_normal(N, dtype=np.float32)
            c = rng_nt.standard_normal((M, N), dtype=np.float32)
            core.gemm(a, b, bias, c, ta, tb, True)
            out.append(c)
        x = rng_nt.standard_normal((3000, 700), dtype=np.float32)
        s = np.empty(700, np.float32)
        core.sum_rows(x, s, False)
        out.append(s)
        results[nt] = out
    for r1, r2 in zip(results[1], results[2]):
        assert r1.tobytes() == r2.tobytes()


_L2_SCRIPT = """
import sys, numpy as np, transformer_ext as tx
from transformer_ext import ops
from transformer_ext.ops import _checks
core = _checks.core()
tx.set_isa(sys.argv[1])
tx._backend.core.set_amx(False)
rng = np.random.default_rng(11)
out = {}
for i, (M, N, K) in enumerate([(70, 1100, 300), (100, 777, 1030), (17, 2049, 5)]):
    for ta in (False, True):
        for tb in (False, True):
            a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
            b = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
            c = np.empty((M, N), np.float32)
            core.gemm(a, b, None, c, ta, tb, False)
            out[f"g{i}{int(ta)}{int(tb)}"] = c
    x = rng.standard_normal((M, K), dtype=np.float32)
    w = rng.standard_normal((K, N), dtype=np.float32)
    for dt in ("fp32", "bf16"):
        out[f"p{i}{dt}"] = ops.matmul(x, ops.pack_weight(w, dtype=dt))
out["l2"] = np.array(tx.cpu_info()["l2_bytes"])
np.savez(sys.argv[2], **out)
"""


@needs_core
def test_gemm_blocking_from_l2_changes_no_bits(tmp_path):
    """The B block's width comes from the L2 size the OS reports (TX_L2_BYTES overrides it):
    tiny L2s (NC = 32, 96 columns) give the same bits as this machine's blocking, plain
    (all transposes) and pre-packed fp32/bf16, for every ISA variant."""
    import os
    import subprocess
    import sys
    for isa in ISAS:
        runs = {}
        for l2 in (None, "65536", "300000"):
            env = {k: v for k, v in os.environ.items() if k != "TX_L2_BYTES"}
            if l2:
                env["TX_L2_BYTES"] = l2
            f = tmp_path / f"{isa}_{l2}.npz"
            r = subprocess.run([sys.executable, "-c", _L2_SCRIPT, isa, str(f)], env=env, capture_output=True,
                               text=True, timeout=300)
            assert r.returncode == 0, r.stderr
            runs[l2] = dict(np.load(f))
        for l2 in ("65536", "300000"):
            assert int(runs[l2].pop("l2")) == int(l2)
        runs[None].pop("l2")
        for l2 in ("65536", "300000"):
            for k, v in runs[None].items():
                assert v.tobytes() == runs[l2][k].tobytes(), f"{isa} L2={l2} {k}"


# --------------------------------------------------------------------------- fuzz
@needs_core
@given(
    M=st.one_of(st.integers(1, 20), st.integers(1, 200)),
    N=st.integers(1, 90),
    K=st.one_of(st.integers(1, 40), st.integers(1, 600)),
    ta=st.booleans(),
    tb=st.booleans(),
    has_bias=st.booleans(),
    acc=st.booleans(),
    pad=st.sampled_from([0, 3]),
    seed=st.integers(0, 2**31 - 1),
)
def test_gemm_fuzz(M, N, K, ta, tb, has_bias, acc, pad, seed):
    """Random shapes through every path (skinny stream / skinny dot / packed) and ISA."""
    rng = np.random.default_rng(seed)
    a, b = operands(rng, M, N, K, ta, tb, pad=pad)
    bias = rng.standard_normal(N, dtype=np.float32) if has_bias else None
    c0 = rng.standard_normal((M, N), dtype=np.float32)
    before = tx.get_isa()
    try:
        for isa in ISAS:
            tx.set_isa(isa)
            check_gemm(run_gemm(a, b, bias, c0, ta, tb, acc), a, b, bias, c0, ta, tb, acc)
    finally:
        tx.set_isa(before)


# --------------------------------------------------------------------------- ops.matmul
def f64(*arrays):
    return [None if a is None else np.asarray(a, np.float64) for a in arrays]


def check_matmul(y, x, w, b, transpose_w):
    x64, w64, b64 = f64(x, w, b)
    W = w64.T if transpose_w else w64
    ref = x64 @ W + (0.0 if b is None else b64)
    bound = gemm_bound(np.abs(x64) @ np.abs(W), x.shape[-1], 0.0 if b is None else np.abs(b64))
    assert y.dtype == np.float32 and y.shape == ref.shape
    assert np.all(np.abs(y - ref) <= bound)


def ref_matmul_backward(dy, x, w, b, transpose_w):
    """float64 oracle for matmul_backward (explicit row counts: also right for K or N = 0)."""
    dy, x, w, b = f64(dy, x, w, b)
    K, N = x.shape[-1], dy.shape[-1]
    M = int(np.prod(x.shape[:-1], dtype=np.int64))
    x2, dy2 = x.reshape(M, K), dy.reshape(M, N)
    dx = (dy2 @ (w if transpose_w else w.T)).reshape(x.shape)
    dw = dy2.T @ x2 if transpose_w else x2.T @ dy2
    return dx, dw, None if b is None else dy2.sum(axis=0)


def assert_close_k(got, ref, K):
    """Chained float32 products: |err| <= 2e-6·√K·max|ref| (≈ 30·u·√K; see the docstring)."""
    if ref is None:
        assert got is None
        return
    assert got.shape == ref.shape and got.dtype == np.float32
    scale = max(float(np.abs(ref).max(initial=0.0)), 1e-30)
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6 * np.sqrt(max(K, 1)) * scale)


LEAD_SHAPES = [(), (1,), (7,), (3, 5), (2, 3, 17)]


@needs_core
@pytest.mark.parametrize("lead", LEAD_SHAPES, ids=str)
@pytest.mark.parametrize("K,N", [(1, 1), (3, 7), (63, 65), (129, 127), (17, 300)])
@pytest.mark.parametrize("transpose_w", [False, True])
def test_matmul_and_backward(isa, rng, lead, K, N, transpose_w):
    x = rng.standard_normal(lead + (K,), dtype=np.float32)
    w = rng.standard_normal((N, K) if transpose_w else (K, N), dtype=np.float32)
    b = rng.standard_normal(N, dtype=np.float32)
    for bias in (None, b):
        y, saved = ops.matmul(x, w, bias, transpose_w=transpose_w, return_saved=True)
        assert saved is None
        check_matmul(y, x, w, bias, transpose_w)
        dy = rng.standard_normal(y.shape, dtype=np.float32)
        dx, dw, db = ops.matmul_backward(dy, x, w, bias, saved, transpose_w=transpose_w)
        rdx, rdw, rdb = ref_matmul_backward(dy, x, w, bias, transpose_w)
        assert dx.shape == x.shape and dw.shape == w.shape
        M = int(np.prod(lead, dtype=np.int64))
        assert_close_k(dx, rdx, N)
        assert_close_k(dw, rdw, M)
        assert_close_k(db, rdb, M)


@needs_core
def test_matmul_strided_x_is_used_in_place(isa, rng, monkeypatch):
    """x = big[..., :K] (a slice of a wider buffer, e.g. a KV cache) and w (or the tied
    (N, K) table with transpose_w) reach the kernel without a copy."""
    K, N = 48, 40
    big = rng.standard_normal((4, 6, K + 16), dtype=np.float32)
    x = big[:, :, 8 : 8 + K]
    table = rng.standard_normal((N, K), dtype=np.float32)
    assert np.shares_memory(_checks.rows_view(x), big)

    real, seen = core, []

    class Spy:
        def __getattr__(self, name):
            return getattr(real, name)

        def gemm(self, a, b, *rest):
            seen.append((a, b))
            return real.gemm(a, b, *rest)

    monkeypatch.setattr(_checks, "core", lambda: Spy())
    y = ops.matmul(x, table, transpose_w=True)
    check_matmul(y, x, table, None, True)
    (a, b), = seen
    assert np.shares_memory(a, big) and np.shares_memory(b, table)

    seen.clear()
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    dx, dw, db = ops.matmul_backward(dy, x, table, transpose_w=True)
    assert all(np.shares_memory(b_, table) or np.shares_memory(b_, big) for _, b_ in seen)
    assert dw.shape == table.shape and db is None


@needs_core
@pytest.mark.parametrize("M", [1, 7])
def test_matmul_transposed_view_is_read_in_place(isa, rng, monkeypatch, M):
    """w = table.T (a transposed view: unit stride along its first axis), of a whole table
    or of a column slice of a wider one, reaches the kernel as the table with the
    transpose flag flipped, not through a transposing copy; forward and backward."""
    K, N = 48, 40
    wide = rng.standard_normal((N, K + 16), dtype=np.float32)
    real, seen = core, []

    class Spy:
        def __getattr__(self, name):
            return getattr(real, name)

        def gemm(self, a, b, c, *rest):
            seen.append((a, b, rest[-3:-1]))  # (trans_a, trans_b)
            return real.gemm(a, b, c, *rest)

    monkeypatch.setattr(_checks, "core", lambda: Spy())
    for table in (np.ascontiguousarray(wide[:, :K]), wide[:, 8 : 8 + K]):
        w = table.T  # (K, N), strides (4, row stride of table)
        x = rng.standard_normal((M, K), dtype=np.float32)
        seen.clear()
        y = ops.matmul(x, w)
        check_matmul(y, x, w, None, False)
        (a, b, (ta, tb)), = seen
        assert np.shares_memory(b, table) and b.strides[-1] == 4 and tb
        seen.clear()
        dy = rng.standard_normal(y.shape, dtype=np.float32)
        dx, dw, _ = ops.matmul_backward(dy, x, w)
        np.testing.assert_allclose(dx, dy.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(dw, x.T.astype(np.float64) @ dy, rtol=1e-4, atol=1e-4)
        assert any(np.shares_memory(b_, table) for _, b_, _ in seen)


@needs_core
def test_matmul_non_unit_stride_is_copied(isa, rng):
    x = rng.standard_normal((5, 30), dtype=np.float32)[:, ::2]  # last-axis stride 2
    w = rng.standard_normal((15, 60), dtype=np.float32)[:, ::3]
    b = rng.standard_normal(40, dtype=np.float32)[::2]
    check_matmul(ops.matmul(x, w, b), x, w, b, False)
    wt = np.asfortranarray(rng.standard_normal((20, 15), dtype=np.float32))  # (N, K), F order
    check_matmul(ops.matmul(x, wt, transpose_w=True), x, wt, None, True)


@needs_core
def test_matmul_empty_dims(isa, rng):
    b = rng.standard_normal(4, dtype=np.float32)
    for x_shape, w_shape, tw in [((0, 3), (3, 4), False), ((2, 0, 3), (4, 3), True), ((2, 0), (0, 4), False),
                                 ((5, 3), (3, 0), False), ((3,), (0, 3), True)]:
        x = rng.standard_normal(x_shape, dtype=np.float32)
        w = rng.standard_normal(w_shape, dtype=np.float32)
        N = w_shape[0] if tw else w_shape[1]
        bias = b[:N] if N else np.zeros(0, np.float32)
        for bb in (None, bias):
            y = ops.matmul(x, w, bb, transpose_w=tw)
            ref = R.matmul(x, w, bb, transpose_w=tw)
            assert y.shape == ref.shape and y.dtype == np.float32
            np.testing.assert_allclose(y, ref, atol=1e-6)
            dy = rng.standard_normal(y.shape, dtype=np.float32)
            got = ops.matmul_backward(dy, x, w, bb, transpose_w=tw)
            want = ref_matmul_backward(dy, x, w, bb, tw)
            for g, r in zip(got, want):
                if r is None:
                    assert g is None
                else:
                    assert g.shape == r.shape
                    np.testing.assert_allclose(g, r, atol=1e-5)


@needs_core
def test_matmul_nan_propagates(isa, rng):
    x = rng.standard_normal((20, 9), dtype=np.float32)
    x[3, 4] = np.nan
    y = ops.matmul(x, rng.standard_normal((9, 5), dtype=np.float32))
    assert np.isnan(y[3]).all() and np.isfinite(np.delete(y, 3, axis=0)).all()


@needs_core
@given(
    lead=st.lists(st.integers(0, 6), min_size=0, max_size=3).map(tuple),
    K=st.integers(0, 70),
    N=st.integers(0, 70),
    transpose_w=st.booleans(),
    has_bias=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_matmul_fuzz(lead, K, N, transpose_w, has_bias, seed):
    """cpp vs the numpy backend in float64 (forward) and the float64 oracle (backward),
    empty dimensions included."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(lead + (K,), dtype=np.float32)
    w = rng.standard_normal((N, K) if transpose_w else (K, N), dtype=np.float32)
    b = rng.standard_normal(N, dtype=np.float32) if has_bias else None
    with tx.use_backend("numpy"):
        ref = ops.matmul(*f64(x, w, b), transpose_w=transpose_w)
    dy = rng.standard_normal(ref.shape)
    rgrads = ref_matmul_backward(dy, x, w, b, transpose_w)
    with tx.use_backend("cpp"):
        y = ops.matmul(x, w, b, transpose_w=transpose_w)
        grads = ops.matmul_backward(dy.astype(np.float32), x, w, b, transpose_w=transpose_w)
    assert_close_k(y, ref, K)
    M = int(np.prod(lead, dtype=np.int64))
    for g, r, k in zip(grads, rgrads, (N, M, M)):
        assert_close_k(g, r, k)


# --------------------------------------------------------------------------- feed_forward
@needs_core
@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "gelu_erf", "relu"])
@pytest.mark.parametrize("lead,d_model,d_ff,d_out", [((3,), 1, 1, 1), ((2, 7), 17, 65, 17), ((2, 2, 5), 63, 129, 31),
                                                    ((40,), 64, 256, 64)])
def test_feed_forward_and_backward(isa, rng, activation, lead, d_model, d_ff, d_out):
    x = rng.standard_normal(lead + (d_model,), dtype=np.float32)
    w1 = (rng.standard_normal((d_model, d_ff)) / np.sqrt(d_model)).astype(np.float32)
    w2 = (rng.standard_normal((d_ff, d_out)) / np.sqrt(d_ff)).astype(np.float32)
    b1 = rng.standard_normal(d_ff, dtype=np.float32)
    b2 = rng.standard_normal(d_out, dtype=np.float32)
    M = int(np.prod(lead))
    for biases in ((b1, b2), (None, None), (b1, None)):
        y, h = ops.feed_forward(x, w1, biases[0], w2, biases[1], activation=activation, return_saved=True)
        ry, rh = R.feed_forward(*f64(x, w1, biases[0], w2, biases[1]), activation=activation, return_saved=True)
        assert h.shape == lead + (d_ff,)
        assert_close_k(h, rh, d_model)
        assert_close_k(y, ry, d_ff)
        assert_close_k(ops.feed_forward(x, w1, biases[0], w2, biases[1], activation), ry, d_ff)
        dy = rng.standard_normal(y.shape, dtype=np.float32)
        want = R.feed_forward_backward(*f64(dy, x, w1, biases[0], w2, biases[1], rh), activation=activation)
        for saved in (h, None):
            got = ops.feed_forward_backward(dy, x, w1, biases[0], w2, biases[1], saved, activation=activation)
            for g, r, k in zip(got, want, (d_ff, M, M, M, M)):
                assert_close_k(g, r, max(k, d_ff, d_out))


# --------------------------------------------------------------------------- validation
@needs_core
def test_matmul_bad_inputs(isa):
    f32 = np.zeros
    x, w = f32((2, 5), np.float32), f32((5, 3), np.float32)
    with pytest.raises(ValueError, match=r"ops.matmul: x has shape \(2, 5\) \(K=5\) but w has shape \(4, 3\)"):
        ops.matmul(x, f32((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"w has shape \(3, 4\); expected w of shape \(N, 5\) with transpose_w"):
        ops.matmul(x, f32((3, 4), np.float32), transpose_w=True)
    with pytest.raises(ValueError, match=r"ops.matmul: argument 'w' must be 2-D, got shape \(5,\)"):
        ops.matmul(x, f32(5, np.float32))
    with pytest.raises(ValueError, match=r"argument 'x' must have at least 1 dims"):
        ops.matmul(np.float32(1.0), w)
    with pytest.raises(ValueError, match=r"ops.matmul: b must have shape \(3,\) .* got \(4,\)"):
        ops.matmul(x, w, f32(4, np.float32))
    with pytest.raises(ValueError, match=r"b must have shape \(3,\) .* got \(1, 3\)"):
        ops.matmul(x, w, f32((1, 3), np.float32))
    with pytest.raises(TypeError, match=r"ops.matmul: argument 'x' has dtype float64; the cpp backend .* float32"):
        ops.matmul(x.astype(np.float64), w)
    with pytest.raises(TypeError, match=r"argument 'w' has dtype float64"):
        ops.matmul(x, w.astype(np.float64))
    with pytest.raises(TypeError, match=r"argument 'x' must be a float array, got dtype int64"):
        ops.matmul(np.zeros((2, 5), np.int64), w)
    with pytest.raises(TypeError, match=r"argument 'w' must be a float array"):
        ops.matmul(x, np.zeros((5, 3), np.int32))
    with pytest.raises(TypeError, match="argument 'x' is None"):
        ops.matmul(None, w)
    with pytest.raises(ValueError, match=r"ops.matmul_backward: dy has shape \(2, 4\) but matmul\(x, w\) .* \(2, 3\)"):
        ops.matmul_backward(f32((2, 4), np.float32), x, w)
    with pytest.raises(TypeError, match=r"ops.matmul_backward: argument 'dy' has dtype float64"):
        ops.matmul_backward(f32((2, 3)), x, w)


def test_matmul_numpy_backend_accepts_float64_and_validates(rng):
    x = rng.standard_normal((4, 6))
    w = rng.standard_normal((6, 3))
    with tx.use_backend("numpy"):
        np.testing.assert_array_equal(ops.matmul(x, w), R.matmul(x, w))
        assert ops.matmul(x.astype(np.float32), w.astype(np.float32)).dtype == np.float32
        with pytest.raises(TypeError, match=r"argument 'w' has dtype float32 but the other inputs are float64"):
            ops.matmul(x, w.astype(np.float32))
        with pytest.raises(ValueError, match=r"ops.matmul: x has shape \(4, 6\)"):
            ops.matmul(x, w.T)
        y, h = ops.feed_forward(x, w, None, w.T, None, activation="relu", return_saved=True)
        np.testing.assert_array_equal(y, R.feed_forward(x, w, None, w.T, None, activation="relu"))


@needs_core
def test_feed_forward_bad_inputs(isa):
    x = np.zeros((2, 4), np.float32)
    w1, b1 = np.zeros((4, 8), np.float32), np.zeros(8, np.float32)
    w2, b2 = np.zeros((8, 4), np.float32), np.zeros(4, np.float32)
    with pytest.raises(ValueError, match=r"ops.feed_forward: activation must be one of .*got 'tanh'"):
        ops.feed_forward(x, w1, b1, w2, b2, activation="tanh")
    with pytest.raises(ValueError, match=r"ops.feed_forward: w1 has shape \(4, 8\) \(d_ff=8\) but w2 .* \(7, 4\)"):
        ops.feed_forward(x, w1, b1, np.zeros((7, 4), np.float32), b2)
    with pytest.raises(ValueError, match=r"ops.feed_forward: x has shape \(2, 4\) \(K=4\) but w1 has shape \(5, 8\)"):
        ops.feed_forward(x, np.zeros((5, 8), np.float32), b1, w2, b2)
    with pytest.raises(ValueError, match=r"b1 must have shape \(8,\)"):
        ops.feed_forward(x, w1, b2, w2, b2)
    with pytest.raises(ValueError, match=r"b2 must have shape \(4,\)"):
        ops.feed_forward(x, w1, b1, w2, b1)
    with pytest.raises(TypeError, match=r"argument 'w2' has dtype float64"):
        ops.feed_forward(x, w1, b1, w2.astype(np.float64), b2)
    with pytest.raises(ValueError, match=r"ops.feed_forward_backward: saved has shape \(2, 7\)"):
        ops.feed_forward_backward(np.zeros((2, 4), np.float32), x, w1, b1, w2, b2, np.zeros((2, 7), np.float32))
    with pytest.raises(ValueError, match=r"ops.feed_forward_backward: dy has shape \(2, 5\)"):
        ops.feed_forward_backward(np.zeros((2, 5), np.float32), x, w1, b1, w2, b2)


@needs_core
def test_odd_strides_on_length_one_axes(isa, rng):
    """NumPy ignores the stride of a length-1 axis (the array is C-contiguous and "aligned"
    with a stride of 3 bytes there); the ops pass such arrays on with a whole-float stride."""
    buf = rng.standard_normal(64, dtype=np.float32)
    w = np.lib.stride_tricks.as_strided(buf, (8, 1), (4, 3))  # (K, N = 1), column stride 3 bytes
    x = rng.standard_normal((3, 8), dtype=np.float32)
    b = np.lib.stride_tricks.as_strided(buf[10:], (1,), (3,))
    check_matmul(ops.matmul(x, w, b), x, w, b, False)
    check_matmul(ops.matmul(x, ops.pack_weight(w)), x, w, None, False)
    x1 = np.lib.stride_tricks.as_strided(buf[20:], (1, 8), (7, 4))  # M = 1, row stride 7 bytes
    check_matmul(ops.matmul(x1, w), x1, w, None, False)
    g = np.lib.stride_tricks.as_strided(buf[30:], (1, 8), (5, 4))
    y = ops.layer_norm(x1, np.ones(8, np.float32), np.zeros(8, np.float32))
    np.testing.assert_array_equal(y, ops.layer_norm(np.ascontiguousarray(x1), np.ones(8, np.float32),
                                                     np.zeros(8, np.float32)))
    np.testing.assert_array_equal(ops.softmax(g), ops.softmax(np.ascontiguousarray(g)))
