"""Matmul precision "high" (tx.set_matmul_precision): fp32 GEMMs as bf16x3 on AMX tiles.

cpp/kernels/gemm_amx.cpp splits each operand into two bf16 terms, a = a_hi + a_lo + e_a
with |e_a| <= 2^-9·|a − a_hi| <= 2^-18·|a| (each term rounds to 8 significant bits), and
sums a_lo·b_hi + a_hi·b_hi + a_hi·b_lo in fp32 on the tiles (products of two bf16 are exact
in fp32). The terms it leaves out, a_lo·b_lo, e_a·b and a·e_b, are each <= 2^-18·|a||b|, so
against the float64 product:
    |c − ref| <= 2^-16·Σ_k |a_ik||b_kj| + the float32 summation bound + ulps of bias / C.
"""
import os

import numpy as np
import pytest

import transformer_ext as tx
from transformer_ext import ops
from transformer_ext.models import GPT, GPTConfig
from transformer_ext.training import AdamW

from conftest import needs_core

U = 2.0**-24
# M > 64 so that every transpose combination takes the tile path (M >= 48 and past the
# skinny paths: M > 32, or 64 with a transposed B); K and N
# around the tiles' 32-k chunks and 32-column panels, M around their 32-row blocks.
SHAPES = [(65, 1, 1), (65, 31, 17), (96, 32, 32), (97, 33, 33), (100, 64, 100), (129, 65, 31),
          (70, 768, 50), (200, 100, 300)]


def bound(a, b, K, extra):
    absprod = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    return (2.0**-16 + U * (4.0 * np.sqrt(max(K, 1)) + 4.0)) * absprod + 4 * U * extra


@pytest.fixture
def high(amx):
    """Precision "high" on the AVX-512 variant with AMX (skips without AMX); restored after."""
    before = tx.get_matmul_precision()
    tx.set_matmul_precision("high")
    try:
        yield
    finally:
        tx.set_matmul_precision(before)


def _operands(rng, M, K, N, ta, tb):
    # a wider buffer: the stored operand's row stride is not its width
    a = rng.standard_normal((K, M + 3) if ta else (M, K + 3), dtype=np.float32)[:, 1:-2]
    b = rng.standard_normal((N, K + 2) if tb else (K, N + 2), dtype=np.float32)[:, :-2]
    return a, b, (a.T if ta else a), (b.T if tb else b)


def test_precision_api():
    if not os.environ.get("TX_MATMUL_PRECISION"):
        assert tx.get_matmul_precision() == "highest"  # the default: IEEE float32
    with pytest.raises(ValueError, match="precision must be one of"):
        tx.set_matmul_precision("medium")
    before = tx.get_matmul_precision()
    try:
        tx.set_matmul_precision("high")
        assert tx.get_matmul_precision() == "high" and tx.cpu_info()["matmul_precision"] == "high"
    finally:
        tx.set_matmul_precision(before)


@needs_core
@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
def test_high_gemm_within_bound(high, threads, ta, tb):
    rng = np.random.default_rng(7)
    core = tx._backend.core
    for M, K, N in SHAPES:
        a, b, opa, opb = _operands(rng, M, K, N, ta, tb)
        bias = rng.standard_normal(N, dtype=np.float32)
        c0 = rng.standard_normal((M, N), dtype=np.float32)
        ref = opa.astype(np.float64) @ opb.astype(np.float64)
        threads(1)
        c = np.empty((M, N), np.float32)
        core.gemm(a, b, bias, c, ta, tb, False)
        err = np.abs(c - (ref + bias))
        assert np.all(err <= bound(opa, opb, K, np.abs(bias))), f"{M}x{K}x{N}: {err.max()}"
        # really the tile path: its rounding differs from the FMA path's somewhere
        tx.set_matmul_precision("highest")
        c_fma = np.empty((M, N), np.float32)
        core.gemm(a, b, bias, c_fma, ta, tb, False)
        tx.set_matmul_precision("high")
        if K > 2:
            assert not np.array_equal(c, c_fma), f"{M}x{K}x{N}"
        threads(2)  # the thread count changes no bit
        c2 = np.empty((M, N), np.float32)
        core.gemm(a, b, bias, c2, ta, tb, False)
        np.testing.assert_array_equal(c2, c)
        # accumulate into C without bias
        c = c0.copy()
        core.gemm(a, b, None, c, ta, tb, True)
        assert np.all(np.abs(c - (ref + c0)) <= bound(opa, opb, K, 2 * np.abs(c0)))


@needs_core
@pytest.mark.parametrize("transpose_w", [False, True])
def test_high_prepacked_within_bound(high, threads, transpose_w):
    """fp32 weights pre-packed by pack_weight (eval forwards): M >= 48 goes to the tiles."""
    rng = np.random.default_rng(11)
    for M, K, N in [(48, 1, 1), (49, 31, 33), (64, 65, 100), (100, 768, 70)]:
        w = rng.standard_normal((N, K) if transpose_w else (K, N), dtype=np.float32)
        x = rng.standard_normal((M, K + 3), dtype=np.float32)[:, 1:-2]
        b = rng.standard_normal(N, dtype=np.float32)
        opw = w.T if transpose_w else w
        pw = ops.pack_weight(w, transpose_w=transpose_w)
        ref = x.astype(np.float64) @ opw.astype(np.float64) + b
        threads(1)
        y = ops.matmul(x, pw, b)
        assert np.all(np.abs(y - ref) <= bound(x, opw, K, np.abs(b))), f"{M}x{K}x{N}"
        tx.set_matmul_precision("highest")
        y_fma = ops.matmul(x, pw, b)
        tx.set_matmul_precision("high")
        if K > 2:
            assert not np.array_equal(y, y_fma), f"{M}x{K}x{N}"
        threads(2)
        np.testing.assert_array_equal(ops.matmul(x, pw, b), y)


@needs_core
def test_high_keeps_16_bits(high):
    """Operands with more than 8 significant bits: one bf16 term each would be off by up to
    2^-9 relative; the split keeps the product to ~2^-16."""
    M, K, N = 96, 64, 32
    a = np.full((M, K), 1.0 + 2.0**-12, np.float32)  # hi = 1, lo = 2^-12
    b = np.full((K, N), 1.0 - 2.0**-13, np.float32)  # hi = 1, lo = -2^-13
    y = ops.matmul(a, b)
    exact = K * (1.0 + 2.0**-12) * (1.0 - 2.0**-13)
    assert np.all(np.abs(y - exact) <= 2.0**-16 * K + 4 * U * exact)
    assert np.all(np.abs(y - K) > 2.0**-14 * K)  # bf16-only operands would give K exactly


@needs_core
def test_high_nonfinite(high):
    """NaN in an operand gives NaN in its row / column of C; ±inf in A gives ±inf (or NaN
    where it meets a zero lo term of B: inputs with inf are outside this mode's contract)."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((70, 40), dtype=np.float32)
    b = rng.standard_normal((40, 100), dtype=np.float32)
    a[3, 7] = np.nan
    b[5, 50] = np.nan
    y = ops.matmul(a, b)
    assert np.isnan(y[3]).all() and np.isnan(y[:, 50]).all()
    mask = np.ones_like(y, bool)
    mask[3] = False
    mask[:, 50] = False
    assert np.isfinite(y[mask]).all()


@needs_core
def test_high_without_amx_is_highest(high):
    """Where the tiles are unavailable "high" computes as "highest", bit for bit."""
    rng = np.random.default_rng(3)
    a, b, _, _ = _operands(rng, 100, 70, 90, False, True)
    core = tx._backend.core
    core.set_amx(False)
    try:
        y_high = ops.matmul(a, b, transpose_w=True)
        tx.set_matmul_precision("highest")
        np.testing.assert_array_equal(y_high, ops.matmul(a, b, transpose_w=True))
    finally:
        core.set_amx(True)


@needs_core
def test_high_training_follows_highest(high):
    """A few AdamW steps of a small GPT (M = B·T = 128 rows: every GEMM on the tiles) give
    the same losses as in float32 to ~1e-4 relative: the bf16x3 products perturb the
    gradients far less than one step changes them."""
    cfg = dict(vocab_size=97, n_positions=32, n_embd=64, n_layer=2, n_head=4, seed=0)
    ids = np.random.default_rng(0).integers(0, 97, (8, 17))

    def losses(precision):
        tx.set_matmul_precision(precision)
        model = GPT(GPTConfig(**cfg))
        model.train()
        opt = AdamW(model, lr=1e-3)
        out = []
        for _ in range(4):
            model.zero_grad()
            logits = model(ids[:, :-1])
            loss, dlogits = ops.cross_entropy(logits, ids[:, 1:])
            model.backward(dlogits)
            opt.step()
            out.append(float(loss))
        return np.array(out)

    high, highest = losses("high"), losses("highest")
    assert not np.array_equal(high, highest)  # the tile path ran
    np.testing.assert_allclose(high, highest, rtol=1e-4)
    assert highest[-1] < highest[0]  # and the steps did change the model
