"""ops.attention / ops.attention_backward: the C++ flash-style kernel against the NumPy
reference (evaluated in float64 as the oracle), under every ISA variant.

Tolerances. Inputs are O(1) (standard normal). Each score is a D-term float32 dot
product (D <= 65 here; relative error ~ D·2^-24 worst case, ~√D·2^-24 typical) times
1/√D, so |ΔS| ~ 1e-6; softmax weights then carry ~|ΔS| + exp's 2e-7 relative error,
and out = Σ_j p_j v_j, a convex combination of O(1) values, inherits ~1e-6 absolute
error (measured: <= 1.5e-6 for D up to 256). Hence atol 2e-5, rtol 1e-4 (>10× margin).
Gradients are O(1..10) sums over Tk (or Tq) terms of P·(dP − D)·k with dP a D-term dot
product: measured relative error ~1e-6 of max|grad|, so atol 1e-4, rtol 1e-4.
"""
import importlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import transformer_ext as tx
from transformer_ext.ops import reference as ref

from conftest import HAS_CORE, needs_core

attn_mod = importlib.import_module("transformer_ext.ops.attention")  # (ops.attention is the function)

FWD_TOL = dict(rtol=1e-4, atol=2e-5)
BWD_TOL = dict(rtol=1e-4, atol=1e-4)

TS = [1, 3, 17, 63, 64, 65, 129]
DS = [1, 3, 16, 64, 65]
BHS = [(1, 1), (2, 3), (1, 3), (2, 1)]


def _shapes():
    """Every (Tq, Tk) pair with Tq <= Tk (training and decoding), a few Tq > Tk (causal
    then hides every key from the first rows), cycling D and (B, H) across them."""
    pairs = [(tq, tk) for tq in TS for tk in TS if tq <= tk] + [(17, 3), (65, 17), (129, 64), (3, 1)]
    return [(*BHS[i % len(BHS)], tq, tk, DS[i % len(DS)]) for i, (tq, tk) in enumerate(pairs)]


def _randn(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float32)


def _qkv(rng, B, H, Tq, Tk, D):
    return _randn(rng, B, H, Tq, D), _randn(rng, B, H, Tk, D), _randn(rng, B, H, Tk, D)


def _ref(q, k, v, dout, causal=False, mask=None):
    """Reference forward + backward in float64."""
    q64, k64, v64 = (a.astype(np.float64) for a in (q, k, v))
    out, (_, lse) = ref.attention(q64, k64, v64, causal=causal, mask=mask, return_saved=True)
    grads = ref.attention_backward(dout.astype(np.float64), q64, k64, v64, (out, lse), causal=causal, mask=mask)
    return out, lse, grads


def _cpp(q, k, v, dout, causal=False, mask=None):
    out, (_, lse) = tx.ops.attention(q, k, v, causal=causal, mask=mask, return_saved=True)
    grads = tx.ops.attention_backward(dout, q, k, v, (out, lse), causal=causal, mask=mask)
    return out, lse, grads


def _assert_close(got, want, causal=None, mask=None):
    out, lse, grads = got
    rout, rlse, rgrads = want
    for a in (out, lse, *grads):
        assert a.dtype == np.float32
        assert not np.isnan(a).any()
    np.testing.assert_allclose(out, rout, **FWD_TOL)
    # lse: -inf exactly where the reference has it (rows with no visible key)
    np.testing.assert_array_equal(np.isneginf(lse), np.isneginf(rlse))
    fin = np.isfinite(rlse)
    np.testing.assert_allclose(lse[fin], rlse[fin], **FWD_TOL)
    for name, g, r in zip(("dq", "dk", "dv"), grads, rgrads):
        np.testing.assert_allclose(g, r, err_msg=name, **BWD_TOL)


# --------------------------------------------------------------------------- vs reference
@pytest.mark.parametrize("B,H,Tq,Tk,D", _shapes())
def test_matches_reference(isa, B, H, Tq, Tk, D):
    rng = np.random.default_rng(B * 1000 + Tq * 37 + Tk * 7 + D)
    q, k, v = _qkv(rng, B, H, Tq, Tk, D)
    dout = _randn(rng, B, H, Tq, D)
    for causal in (False, True):
        want = _ref(q, k, v, dout, causal=causal)
        got = _cpp(q, k, v, dout, causal=causal)
        _assert_close(got, want)
        if causal and Tq > Tk:  # rows i < Tq - Tk see no key: exactly 0, lse -inf
            hidden = Tq - Tk
            assert np.all(got[0][:, :, :hidden] == 0) and np.all(np.isneginf(got[1][:, :, :hidden]))
            assert np.all(got[2][0][:, :, :hidden] == 0)


def test_larger_head_dims(isa):
    """D beyond one register block (128, 200) and a tile that is not a vector multiple."""
    rng = np.random.default_rng(5)
    for D in (128, 200):
        q, k, v = _qkv(rng, 1, 2, 70, 90, D)
        dout = _randn(rng, 1, 2, 70, D)
        _assert_close(_cpp(q, k, v, dout, causal=True), _ref(q, k, v, dout, causal=True))


def test_saved_none_recomputes(isa):
    rng = np.random.default_rng(6)
    q, k, v = _qkv(rng, 2, 2, 33, 40, 16)
    dout = _randn(rng, 2, 2, 33, 16)
    g_saved = tx.ops.attention_backward(dout, q, k, v, tx.ops.attention(q, k, v, causal=True, return_saved=True)[1], causal=True)
    g_none = tx.ops.attention_backward(dout, q, k, v, None, causal=True)
    for a, b in zip(g_saved, g_none):
        np.testing.assert_array_equal(a, b)


def test_return_saved_layout(isa):
    rng = np.random.default_rng(7)
    q, k, v = _qkv(rng, 2, 3, 5, 6, 8)
    out, saved = tx.ops.attention(q, k, v, return_saved=True)
    assert saved[0] is out and saved[1].shape == (2, 3, 5) and out.shape == (2, 3, 5, 8)
    np.testing.assert_array_equal(tx.ops.attention(q, k, v), out)


try:
    from hypothesis import given, strategies as st
except ImportError:  # pragma: no cover
    given = None

if given is not None:

    @needs_core
    @given(
        B=st.integers(1, 2), H=st.integers(1, 3), Tq=st.integers(1, 80), Tk=st.integers(1, 80),
        D=st.integers(1, 70), causal=st.booleans(), mask_kind=st.sampled_from(["none", "keypad", "additive"]),
        seed=st.integers(0, 2**31 - 1),
    )
    def test_property_matches_reference(B, H, Tq, Tk, D, causal, mask_kind, seed):
        rng = np.random.default_rng(seed)
        q, k, v = _qkv(rng, B, H, Tq, Tk, D)
        dout = _randn(rng, B, H, Tq, D)
        mask = None
        if mask_kind == "keypad":
            mask = rng.random((B, Tk)) < 0.8
        elif mask_kind == "additive":
            mask = rng.standard_normal((1, H, Tq, Tk)).astype(np.float32)
        with tx.use_backend("cpp"):
            got = _cpp(q, k, v, dout, causal, mask)
        _assert_close(got, _ref(q, k, v, dout, causal, mask))


# --------------------------------------------------------------------------- masks
def _left_padding(B, Tk, pads):
    """(B, Tk) key-padding mask, True = attend, with pads[b] masked keys on the left."""
    return np.arange(Tk)[None, :] >= np.asarray(pads)[:, None]


@pytest.mark.parametrize("kind", ["bool", "int"])
def test_key_padding_left_pad_causal(isa, kind):
    """Left padding + causal (Tq == Tk): query rows i < pad see no key -> out 0, lse
    -inf, gradients exactly 0, no NaN anywhere; the other rows match the reference."""
    rng = np.random.default_rng(11)
    B, H, T, D = 2, 3, 70, 17
    pads = [5, 66]
    mask = _left_padding(B, T, pads)
    if kind == "int":
        mask = mask.astype(np.int64)
    q, k, v = _qkv(rng, B, H, T, T, D)
    dout = _randn(rng, B, H, T, D)
    got = _cpp(q, k, v, dout, causal=True, mask=mask)
    _assert_close(got, _ref(q, k, v, dout, causal=True, mask=mask))
    out, lse, (dq, dk, dv) = got
    for b, p in enumerate(pads):
        assert np.all(out[b, :, :p] == 0) and np.all(np.isneginf(lse[b, :, :p]))
        assert np.all(dq[b, :, :p] == 0)
        # padded keys receive no gradient either
        assert np.all(dk[b, :, :p] == 0) and np.all(dv[b, :, :p] == 0)


def test_key_padding_decoding(isa):
    """Tq < Tk with a key-padding mask (batched decoding with left-padded prompts)."""
    rng = np.random.default_rng(12)
    B, H, Tq, Tk, D = 2, 2, 3, 129, 64
    mask = _left_padding(B, Tk, [0, 40])
    q, k, v = _qkv(rng, B, H, Tq, Tk, D)
    dout = _randn(rng, B, H, Tq, D)
    for causal in (False, True):
        _assert_close(_cpp(q, k, v, dout, causal, mask), _ref(q, k, v, dout, causal, mask))


@pytest.mark.parametrize(
    "mshape",
    [(1, 1, "Tq", "Tk"), ("B", 1, 1, "Tk"), ("B", "H", "Tq", "Tk"), ("Tq", "Tk"), ("B", "H", "Tq", 1), ("Tk",)],
)
def test_additive_float_mask_broadcast(isa, mshape):
    rng = np.random.default_rng(13)
    B, H, Tq, Tk, D = 2, 3, 65, 66, 16
    dims = {"B": B, "H": H, "Tq": Tq, "Tk": Tk}
    shape = tuple(dims.get(s, s) for s in mshape)
    mask = rng.standard_normal(shape).astype(np.float32)  # additive biases (ALiBi-like)
    mask[rng.random(shape) < 0.2] = -np.inf
    q, k, v = _qkv(rng, B, H, Tq, Tk, D)
    dout = _randn(rng, B, H, Tq, D)
    for causal in (False, True):
        _assert_close(_cpp(q, k, v, dout, causal, mask), _ref(q, k, v, dout, causal, mask))


def test_bool_4d_mask_with_fully_masked_rows(isa):
    rng = np.random.default_rng(14)
    B, H, Tq, Tk, D = 2, 2, 40, 33, 8
    mask = rng.random((B, 1, Tq, Tk)) < 0.7
    mask[0, 0, 3] = False  # rows with no key at all
    mask[1, 0, 39] = False
    q, k, v = _qkv(rng, B, H, Tq, Tk, D)
    dout = _randn(rng, B, H, Tq, D)
    got = _cpp(q, k, v, dout, False, mask)
    _assert_close(got, _ref(q, k, v, dout, False, mask))
    assert np.all(got[0][0, :, 3] == 0) and np.all(got[2][0][1, :, 39] == 0)


def test_float64_mask_accepted_on_cpp(isa):
    """The mask is not differentiated: a float64 additive mask (np.where(..., 0, -inf)
    builds one) is cast, not refused."""
    rng = np.random.default_rng(15)
    q, k, v = _qkv(rng, 1, 2, 9, 9, 4)
    m64 = np.where(rng.random((1, 1, 9, 9)) < 0.8, 0.0, -np.inf)
    np.testing.assert_allclose(
        tx.ops.attention(q, k, v, mask=m64), tx.ops.attention(q, k, v, mask=m64.astype(np.float32)), rtol=0, atol=0
    )


def test_mask_broadcast_is_zero_copy(isa, monkeypatch):
    """The additive mask reaches the kernel broadcast with zero strides, not expanded."""
    seen = {}
    core = tx._backend.core
    real = core.attention_forward

    class Spy:
        def __getattr__(self, name):
            return getattr(core, name)

        def attention_forward(self, q, k, v, mask, causal, out, lse, *dropout):
            seen["strides"] = mask.strides
            return real(q, k, v, mask, causal, out, lse, *dropout)

    monkeypatch.setattr(attn_mod._checks, "core", lambda: Spy())
    rng = np.random.default_rng(16)
    q, k, v = _qkv(rng, 2, 4, 8, 8, 4)
    tx.ops.attention(q, k, v, mask=np.ones((2, 8), bool))
    assert seen["strides"][1] == 0 and seen["strides"][2] == 0


# --------------------------------------------------------------------------- layouts
def test_kv_cache_slices_zero_copy(isa):
    """k/v as prefixes of a preallocated (B, H, Tmax, D) cache and q as a transposed view
    of a (B, T, H, D) projection: used in place, bit-identical to contiguous copies."""
    rng = np.random.default_rng(21)
    B, H, Tmax, Tk, Tq, D = 2, 3, 200, 77, 5, 64
    cache_k = _randn(rng, B, H, Tmax, D)
    cache_v = _randn(rng, B, H, Tmax, D)
    k, v = cache_k[:, :, :Tk], cache_v[:, :, :Tk]
    q = _randn(rng, B, Tq, H, D).transpose(0, 2, 1, 3)
    for a in (q, k, v):
        assert not a.flags.c_contiguous
        assert attn_mod._in_place(a) is a  # no copy on the way to the kernel
    dout = _randn(rng, B, H, Tq, D)
    mask = _left_padding(B, Tk, [0, 9])
    for causal in (False, True):
        got = _cpp(q, k, v, dout, causal, mask)
        cont = _cpp(*(np.ascontiguousarray(a) for a in (q, k, v)), dout, causal, mask)
        np.testing.assert_array_equal(got[0], cont[0])
        np.testing.assert_array_equal(got[1], cont[1])
        for a, b in zip(got[2], cont[2]):
            np.testing.assert_array_equal(a, b)
        _assert_close(got, _ref(q, k, v, dout, causal, mask))


def test_negative_strides_in_place(isa):
    """Reversed views (negative strides on the leading axes) are read in place too, for
    q/k/v and for the additive mask."""
    rng = np.random.default_rng(25)
    B, H, Tq, Tk, D = 2, 2, 70, 66, 16
    q = _randn(rng, B, H, Tq, D)[:, ::-1, ::-1]
    k = _randn(rng, B, H, Tk, D)[::-1]
    v = _randn(rng, B, H, Tk, D)[:, :, ::-1]
    mask = rng.standard_normal((1, 1, Tk, Tq)).astype(np.float32).transpose(0, 1, 3, 2)[..., ::-1]
    assert all(attn_mod._in_place(a) is a for a in (q, k, v))
    dout = _randn(rng, B, H, Tq, D)
    got = _cpp(q, k, v, dout, True, mask)
    _assert_close(got, _ref(q, k, v, dout, True, mask))
    cont = _cpp(*(np.ascontiguousarray(a) for a in (q, k, v)), dout, True, np.ascontiguousarray(mask))
    for a, b in zip((got[0], got[1], *got[2]), (cont[0], cont[1], *cont[2])):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("B,H,T,D", [(1, 3, 150, 40), (2, 2, 70, 64)])
def test_fused_qkv_views(isa, threads, B, H, T, D):
    """q, k, v as views into one (B, T, 3·H·D) projection (rows 3·H·D floats apart, as the
    models pass them; the kernels copy such tiles contiguous): the same bits as contiguous
    inputs, forward and backward, on 1 and 2 threads (B·H = 3: both backward schemes)."""
    rng = np.random.default_rng(26)
    qkv = _randn(rng, B, T, 3, H, D)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    assert q.strides[2] == 3 * H * D * 4
    dout = _randn(rng, B, H, T, D)
    cont = [np.ascontiguousarray(a) for a in (q, k, v)]
    for n in (1, 2):
        threads(n)
        for causal in (False, True):
            got = _cpp(q, k, v, dout, causal)
            want = _cpp(*cont, dout, causal)
            for a, b in zip((got[0], got[1], *got[2]), (want[0], want[1], *want[2])):
                np.testing.assert_array_equal(a, b)
    _assert_close(got, _ref(q, k, v, dout, True))


def test_non_unit_last_stride_is_copied(isa):
    rng = np.random.default_rng(22)
    big = _randn(rng, 1, 2, 9, 16)
    q = big[..., ::2]  # last-axis stride 2 elements
    k = _randn(rng, 1, 2, 9, 8)
    v = _randn(rng, 1, 2, 9, 8)
    assert attn_mod._in_place(q) is not q
    dout = _randn(rng, 1, 2, 9, 8)
    _assert_close(_cpp(q, k, v, dout, True), _ref(q, k, v, dout, True))


def test_incremental_decoding_matches_full_causal(isa):
    """Decoding token by token (Tq = 1 against the growing cache) reproduces the rows of
    full causal attention."""
    rng = np.random.default_rng(23)
    B, H, T, D = 1, 2, 40, 16
    q, k, v = _qkv(rng, B, H, T, T, D)
    full = tx.ops.attention(q, k, v, causal=True)
    for t in range(0, T, 7):
        step = tx.ops.attention(q[:, :, t : t + 1], k[:, :, : t + 1], v[:, :, : t + 1], causal=True)
        np.testing.assert_allclose(step[:, :, 0], full[:, :, t], **FWD_TOL)


def test_nan_propagates_to_its_row_only(isa):
    rng = np.random.default_rng(24)
    q, k, v = _qkv(rng, 1, 1, 70, 70, 8)
    q[0, 0, 5, 2] = np.nan
    out = tx.ops.attention(q, k, v)
    assert np.isnan(out[0, 0, 5]).all()
    assert not np.isnan(np.delete(out[0, 0], 5, axis=0)).any()


# --------------------------------------------------------------------------- zero-size
@pytest.mark.parametrize("B,H,Tq,Tk,D", [(0, 2, 3, 4, 5), (2, 0, 3, 4, 5), (2, 2, 0, 4, 5), (2, 2, 3, 0, 5), (2, 2, 3, 4, 0)])
def test_zero_size(isa, B, H, Tq, Tk, D):
    rng = np.random.default_rng(31)
    q, k, v = _qkv(rng, B, H, Tq, Tk, D)
    dout = _randn(rng, B, H, Tq, D)
    out, (_, lse) = tx.ops.attention(q, k, v, causal=True, return_saved=True)
    assert out.shape == (B, H, Tq, D) and lse.shape == (B, H, Tq) and out.dtype == np.float32
    rout, (_, rlse) = ref.attention(q, k, v, causal=True, return_saved=True)
    np.testing.assert_array_equal(out, rout)
    np.testing.assert_allclose(lse, rlse, rtol=1e-6)  # Tk = 0: -inf; D = 0: log(#visible)
    dq, dk, dv = tx.ops.attention_backward(dout, q, k, v, (out, lse), causal=True)
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape
    assert not (dq.any() or dk.any() or dv.any())


# --------------------------------------------------------------------------- threads
@needs_core
@pytest.mark.parametrize(
    "B,H,Tq,Tk,D,with_mask",
    [
        (1, 4, 256, 256, 64, False),
        (1, 4, 256, 256, 64, True),
        # B·H = 3: one thread runs the fused backward (one item per (b, h)), two threads the
        # two-pass scheme (key tiles, then query tiles): same bits either way. Tq = 193
        # ends in a 1-row tile (dot-product path).
        (1, 3, 193, 200, 40, True),
    ],
)
def test_bit_identical_across_thread_counts(isa, threads, B, H, Tq, Tk, D, with_mask):
    rng = np.random.default_rng(41)
    q, k, v = _qkv(rng, B, H, Tq, Tk, D)
    dout = _randn(rng, B, H, Tq, D)
    mask = _left_padding(B, Tk, [13]) if with_mask else None
    results = []
    with tx.use_backend("cpp"):
        for n in (1, 2):
            threads(n)
            results.append(_cpp(q, k, v, dout, causal=True, mask=mask))
    (o1, l1, g1), (o2, l2, g2) = results
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(l1, l2)
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(a, b)


@needs_core
def test_decoding_bit_identical_across_thread_counts(isa, threads):
    rng = np.random.default_rng(42)
    q, k, v = _qkv(rng, 2, 4, 1, 1000, 64)
    outs = []
    with tx.use_backend("cpp"):
        for n in (1, 2):
            threads(n)
            outs.append(tx.ops.attention(q, k, v, causal=True))
    np.testing.assert_array_equal(outs[0], outs[1])


# --------------------------------------------------------------------------- memory
@needs_core
def test_forward_never_allocates_tq_by_tk():
    """T = 4096: a score matrix would be 4096² · 4 B = 64 MB. Peak RSS growth of a fresh
    process across the call must stay far below that (inputs are allocated before)."""
    code = textwrap.dedent(
        """
        import resource, numpy as np, transformer_ext as tx
        T, D = 4096, 64
        rng = np.random.default_rng(0)
        q, k, v = (rng.standard_normal((1, 1, T, D), dtype=np.float32) for _ in range(3))
        with tx.use_backend("cpp"):
            tx.ops.attention(q[:, :, :64], k[:, :, :64], v[:, :, :64])  # warm up (thread pool, lazy init)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            out = tx.ops.attention(q, k, v, causal=True)
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert np.isfinite(out).all()
        print((after - before) * 1024)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    growth = int(res.stdout.strip().splitlines()[-1])
    assert growth < 8 * 2**20, f"peak RSS grew by {growth / 2**20:.1f} MB (a T×T score matrix is 64 MB)"


# --------------------------------------------------------------------------- numpy backend
def test_numpy_backend_is_reference():
    rng = np.random.default_rng(51)
    q, k, v = (a.astype(np.float64) for a in _qkv(rng, 1, 2, 6, 7, 4))
    mask = _left_padding(1, 7, [2])
    with tx.use_backend("numpy"):
        out, saved = tx.ops.attention(q, k, v, causal=True, mask=mask, return_saved=True)
        grads = tx.ops.attention_backward(q, q, k, v, saved, causal=True, mask=mask)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, ref.attention(q, k, v, causal=True, mask=mask))
    for a, b in zip(grads, ref.attention_backward(q, q, k, v, saved, causal=True, mask=mask)):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- bad input
def _arrs(B=1, H=2, Tq=3, Tk=4, D=5, dtype=np.float32):
    rng = np.random.default_rng(0)
    return tuple(a.astype(dtype) for a in _qkv(rng, B, H, Tq, Tk, D))


def test_bad_ndim(isa):
    q, k, v = _arrs()
    with pytest.raises(ValueError, match=r"ops\.attention: argument 'q' must be 4-D, got shape \(2, 3, 5\)"):
        tx.ops.attention(q[0], k, v)
    with pytest.raises(ValueError, match=r"argument 'k' must be 4-D"):
        tx.ops.attention(q, k[None], v)


@pytest.mark.parametrize(
    "kshape,vshape,what",
    [
        ((2, 2, 4, 5), (2, 2, 4, 5), "k"),  # B
        ((1, 3, 4, 5), (1, 3, 4, 5), "k"),  # H
        ((1, 2, 4, 6), (1, 2, 4, 6), "k"),  # D
        ((1, 2, 4, 5), (1, 2, 5, 5), "v"),  # Tk of v
        ((1, 2, 4, 5), (1, 2, 4, 6), "v"),  # D of v
    ],
)
def test_mismatched_shapes(isa, kshape, vshape, what):
    q, _, _ = _arrs()
    k = np.zeros(kshape, np.float32)
    v = np.zeros(vshape, np.float32)
    with pytest.raises(ValueError, match=r"ops\.attention: .*" + what) as e:
        tx.ops.attention(q, k, v)
    assert "(1, 2, 3, 5)" in str(e.value) or "(1, 2, 4, 5)" in str(e.value)


def test_float64_refused_on_cpp(isa):
    q, k, v = _arrs(dtype=np.float64)
    with pytest.raises(TypeError, match=r"ops\.attention: argument 'q' has dtype float64; the cpp backend computes in float32"):
        tx.ops.attention(q, k, v)
    q32 = q.astype(np.float32)
    with pytest.raises(TypeError, match=r"argument 'k' has dtype float64"):
        tx.ops.attention(q32, k, v.astype(np.float32))
    with pytest.raises(TypeError, match=r"ops\.attention_backward: argument 'dout' has dtype float64"):
        tx.ops.attention_backward(q, q32, k.astype(np.float32), v.astype(np.float32))


def test_int_arrays_refused(isa):
    q, k, v = _arrs()
    with pytest.raises(TypeError, match=r"argument 'v' must be a float array, got dtype int64"):
        tx.ops.attention(q, k, v.astype(np.int64))


def test_bad_masks(isa):
    q, k, v = _arrs()  # B=1, H=2, Tq=3, Tk=4
    with pytest.raises(ValueError, match=r"key-padding mask of shape \(B, Tk\) = \(1, 4\), got shape \(1, 3\)"):
        tx.ops.attention(q, k, v, mask=np.ones((1, 3), bool))
    with pytest.raises(ValueError, match=r"'mask' of shape \(1, 2, 3, 5\) is not broadcastable to \(B, H, Tq, Tk\) = \(1, 2, 3, 4\)"):
        tx.ops.attention(q, k, v, mask=np.zeros((1, 2, 3, 5), np.float32))
    with pytest.raises(ValueError, match=r"not broadcastable"):
        tx.ops.attention(q, k, v, mask=np.zeros((1, 1, 1, 2, 4), np.float32))
    with pytest.raises(TypeError, match=r"'mask' must be a bool, integer or float array"):
        tx.ops.attention(q, k, v, mask=np.array([["a"] * 4]))
    with pytest.raises(ValueError, match=r"ops\.attention_backward: .*'mask'"):
        tx.ops.attention_backward(q, q, k, v, None, mask=np.zeros((2, 4), np.float32))


def test_bad_backward_args(isa):
    q, k, v = _arrs()
    with pytest.raises(ValueError, match=r"ops\.attention_backward: dout has shape \(1, 2, 3, 4\)"):
        tx.ops.attention_backward(np.zeros((1, 2, 3, 4), np.float32), q, k, v)
    out, saved = tx.ops.attention(q, k, v, return_saved=True)
    with pytest.raises(ValueError, match=r"saved lse has shape \(1, 2, 2\); expected \(B, H, Tq\) = \(1, 2, 3\)"):
        tx.ops.attention_backward(out, q, k, v, (out, saved[1][..., :2]))
    with pytest.raises(ValueError, match=r"argument 'saved\[1\] \(lse\)' must be 3-D, got shape \(1, 2\)"):
        tx.ops.attention_backward(out, q, k, v, (out, saved[1][..., 0]))
    with pytest.raises(TypeError, match=r"'saved' must be the \(out, lse\) pair"):
        tx.ops.attention_backward(out, q, k, v, out)


def test_binding_validates_itself(isa):
    """The C++ binding re-checks every shape (never reads out of bounds)."""
    core = tx._backend.core
    q, k, v = _arrs()
    out = np.empty((1, 2, 3, 5), np.float32)
    lse = np.empty((1, 2, 3), np.float32)
    with pytest.raises(ValueError, match=r"attention_forward: 'v' must have the shape of k"):
        core.attention_forward(q, k, v[:, :, :3], None, False, out, lse)
    with pytest.raises(ValueError, match=r"'mask' must be broadcast to \(B, H, Tq, Tk\) = \(1, 2, 3, 4\)"):
        core.attention_forward(q, k, v, np.zeros((1, 1, 3, 4), np.float32), False, out, lse)
    with pytest.raises(ValueError, match=r"'lse' must have shape \(1, 2, 3\)"):
        core.attention_forward(q, k, v, None, False, out, np.empty((1, 2, 4), np.float32))
    with pytest.raises(TypeError, match=r"'mask' must be float32"):
        core.attention_forward(q, k, v, np.zeros((1, 2, 3, 4)), False, out, lse)
    with pytest.raises(TypeError, match=r"'q' must be float32"):
        core.attention_forward(q.astype(np.float64), k, v, None, False, out, lse)
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    with pytest.raises(ValueError, match=r"attention_backward: 'dk' must have shape \(1, 2, 4, 5\)"):
        core.attention_backward(q, k, v, None, False, out, out, lse, dq, dq, dv)
    with pytest.raises(ValueError, match=r"'dout' must be C-contiguous"):
        core.attention_backward(q, k, v, None, False, out, np.empty((1, 2, 6, 5), np.float32)[:, :, ::2], lse, dq, dk, dv)


# --------------------------------------------------------------------------- attention dropout
# O = (P ⊙ M/(1−p)) V with M a counter-based hash of (seed, b, h, i, j) computed inside the
# kernel. The mask is integer arithmetic, identical in C++ and NumPy, so the float
# tolerances above apply unchanged: the dropped entries are exactly the same ones, and the
# kept ones are scaled by the same float 1/(1−p) (one extra rounding, ~6e-8 relative).
P_DROP = 0.3
SEED = 0xDEADBEEF12345


def _ref_drop(q, k, v, dout, causal=False, mask=None, p=P_DROP, seed=SEED):
    q64, k64, v64 = (a.astype(np.float64) for a in (q, k, v))
    out, (_, lse) = ref.attention(q64, k64, v64, causal=causal, mask=mask, return_saved=True, dropout_p=p, seed=seed)
    grads = ref.attention_backward(dout.astype(np.float64), q64, k64, v64, (out, lse), causal=causal, mask=mask,
                                   dropout_p=p, seed=seed)
    return out, lse, grads


def _cpp_drop(q, k, v, dout, causal=False, mask=None, p=P_DROP, seed=SEED):
    out, (_, lse) = tx.ops.attention(q, k, v, causal=causal, mask=mask, return_saved=True, dropout_p=p, seed=seed)
    grads = tx.ops.attention_backward(dout, q, k, v, (out, lse), causal=causal, mask=mask, dropout_p=p, seed=seed)
    return out, lse, grads


# row path (Tq <= 3), vector tiles, partial tiles, Tq > Tk, D not a vector multiple
DROP_SHAPES = [(1, 1, 1, 5, 3), (2, 3, 3, 129, 64), (2, 1, 17, 17, 16), (1, 3, 63, 65, 65), (2, 2, 129, 127, 17),
               (1, 2, 65, 17, 7)]


@pytest.mark.parametrize("B,H,Tq,Tk,D", DROP_SHAPES)
def test_dropout_matches_reference(isa, B, H, Tq, Tk, D):
    rng = np.random.default_rng(B * 1000 + Tq * 37 + Tk * 7 + D + 99)
    q, k, v = _qkv(rng, B, H, Tq, Tk, D)
    dout = _randn(rng, B, H, Tq, D)
    mask = _left_padding(B, Tk, [0] + [Tk // 3] * (B - 1))
    for causal in (False, True):
        for m in (None, mask):
            got = _cpp_drop(q, k, v, dout, causal, m)
            want = _ref_drop(q, k, v, dout, causal, m)
            _assert_close(got, want)
            # lse stays the undropped log-sum-exp
            np.testing.assert_array_equal(got[1], tx.ops.attention(q, k, v, causal, m, return_saved=True)[1][1])


def _cpp_keep_mask(B, H, Tq, Tk, p, seed):
    """The C++ kernel's keep mask, read back through the op: q = k = 0 makes P uniform
    (1/Tk) and v = I (D = Tk) makes out[b,h,i,j] = M[b,h,i,j] / (Tk(1−p))."""
    q = np.zeros((B, H, Tq, Tk), np.float32)
    k = np.zeros((B, H, Tk, Tk), np.float32)
    v = np.broadcast_to(np.eye(Tk, dtype=np.float32), (B, H, Tk, Tk))
    out = tx.ops.attention(q, k, v, dropout_p=p, seed=seed)
    assert np.all((out == 0) | (out > 0.5 / (Tk * (1 - p))))
    return out > 0


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_mask_bit_identical_to_reference(isa, p):
    for B, H, Tq, Tk, seed in [(2, 3, 70, 129, 7), (1, 2, 2, 17, 2**64 - 1), (1, 1, 130, 64, 0)]:
        want = ref.attention_dropout_mask(seed, B, H, Tq, Tk, p)
        np.testing.assert_array_equal(_cpp_keep_mask(B, H, Tq, Tk, p, seed), want)


def test_dropout_mask_statistics():
    """Fraction dropped ≈ p (binomial: 5σ bounds), and no structure: neighbouring rows,
    columns and heads agree only as often as independent draws would."""
    B, H, T = 4, 12, 128
    n = B * H * T * T
    for p in (0.1, 0.5, 0.9):
        m = ref.attention_dropout_mask(3, B, H, T, T, p)
        sigma = np.sqrt(p * (1 - p) / n)
        assert abs((1 - m.mean()) - p) < 5 * sigma
        agree = p * p + (1 - p) * (1 - p)  # P(two independent draws agree)
        for a, b in ((m[:, :, 1:], m[:, :, :-1]), (m[..., 1:], m[..., :-1]), (m[:, 1:], m[:, :-1]), (m[1:], m[:-1])):
            frac = np.mean(a == b)
            assert abs(frac - agree) < 5 * np.sqrt(agree * (1 - agree) / a.size), frac
    m1 = ref.attention_dropout_mask(1, 1, 2, 64, 64, 0.5)
    m2 = ref.attention_dropout_mask(2, 1, 2, 64, 64, 0.5)
    assert 0.4 < np.mean(m1 == m2) < 0.6  # another seed, another mask


def test_dropout_reproducible_and_seed_dependent(isa):
    rng = np.random.default_rng(61)
    q, k, v = _qkv(rng, 1, 2, 40, 40, 16)
    a = tx.ops.attention(q, k, v, causal=True, dropout_p=0.2, seed=5)
    np.testing.assert_array_equal(a, tx.ops.attention(q, k, v, causal=True, dropout_p=0.2, seed=5))
    assert not np.array_equal(a, tx.ops.attention(q, k, v, causal=True, dropout_p=0.2, seed=6))
    # p = 0: the seed is ignored, bits identical to no dropout
    np.testing.assert_array_equal(tx.ops.attention(q, k, v, dropout_p=0.0, seed=5), tx.ops.attention(q, k, v))


def test_dropout_saved_none_recomputes(isa):
    rng = np.random.default_rng(62)
    q, k, v = _qkv(rng, 2, 2, 33, 40, 16)
    dout = _randn(rng, 2, 2, 33, 16)
    kw = dict(causal=True, dropout_p=0.25, seed=77)
    _, saved = tx.ops.attention(q, k, v, return_saved=True, **kw)
    for a, b in zip(tx.ops.attention_backward(dout, q, k, v, saved, **kw), tx.ops.attention_backward(dout, q, k, v, None, **kw)):
        np.testing.assert_array_equal(a, b)


def test_dropout_reference_gradient_finite_differences():
    """The reference backward is the exact gradient of the dropped-out function (float64
    central differences, mask held fixed by the seed); with saved=None too (D from dP ⊙ P)."""
    rng = np.random.default_rng(63)
    B, H, Tq, Tk, D = 1, 2, 5, 6, 3
    q, k, v = (rng.standard_normal(s) for s in ((B, H, Tq, D), (B, H, Tk, D), (B, H, Tk, D)))
    w = rng.standard_normal((B, H, Tq, D))
    mask = _left_padding(B, Tk, [1])
    kw = dict(causal=True, mask=mask, dropout_p=0.4, seed=11)
    loss = lambda q, k, v: float(np.sum(ref.attention(q, k, v, **kw) * w))  # noqa: E731
    _, saved = ref.attention(q, k, v, return_saved=True, **kw)
    for sv in (saved, None):
        grads = ref.attention_backward(w, q, k, v, sv, **kw)
        for idx, (x, g) in enumerate(zip((q, k, v), grads)):
            num = np.zeros_like(x)
            for i in np.ndindex(x.shape):
                xp, xm = x.copy(), x.copy()
                xp[i] += 1e-6
                xm[i] -= 1e-6
                args_p = [q, k, v]
                args_m = [q, k, v]
                args_p[idx], args_m[idx] = xp, xm
                num[i] = (loss(*args_p) - loss(*args_m)) / 2e-6
            np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)


@needs_core
@pytest.mark.parametrize(
    "B,H,Tq,Tk,D",
    [(1, 4, 256, 256, 64), (1, 3, 193, 200, 40)],  # fused backward scheme; 2 threads: two-pass scheme
)
def test_dropout_bit_identical_across_thread_counts(isa, threads, B, H, Tq, Tk, D):
    rng = np.random.default_rng(64)
    q, k, v = _qkv(rng, B, H, Tq, Tk, D)
    dout = _randn(rng, B, H, Tq, D)
    mask = _left_padding(B, Tk, [13])
    results = []
    for n in (1, 2):
        threads(n)
        results.append(_cpp_drop(q, k, v, dout, True, mask, p=0.1, seed=2**63 + 5))
    (o1, l1, g1), (o2, l2, g2) = results
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(l1, l2)
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_bad_dropout_args(backend):
    if backend == "cpp" and not HAS_CORE:
        pytest.skip("compiled core not available")
    q, k, v = _qkv(np.random.default_rng(65), 1, 2, 3, 4, 5)
    with tx.use_backend(backend):
        for op, call in (("ops.attention", lambda **kw: tx.ops.attention(q, k, v, **kw)),
                         ("ops.attention_backward", lambda **kw: tx.ops.attention_backward(q, q, k, v, None, **kw))):
            o = op.replace(".", r"\.")
            for bad in (1.0, -0.1, float("nan"), 1.5):
                with pytest.raises(ValueError, match=rf"{o}: argument 'dropout_p' must be in \[0, 1\), got"):
                    call(dropout_p=bad, seed=1)
            with pytest.raises(TypeError, match=rf"{o}: argument 'dropout_p' must be a number in \[0, 1\), got str"):
                call(dropout_p="0.1", seed=1)
            with pytest.raises(ValueError, match=rf"{o}: dropout_p=0.1 needs a seed"):
                call(dropout_p=0.1)
            for bad in (-1, 2**64):
                with pytest.raises(ValueError, match=rf"{o}: argument 'seed' must be in \[0, 2\*\*64\), got {bad}"):
                    call(dropout_p=0.1, seed=bad)
            with pytest.raises(TypeError, match=rf"{o}: argument 'seed' must be an int in \[0, 2\*\*64\), got float"):
                call(dropout_p=0.1, seed=1.5)
            call(dropout_p=0.1, seed=np.uint64(2**64 - 1))  # numpy ints are fine


def test_binding_checks_dropout(isa):
    core = tx._backend.core
    q, k, v = _qkv(np.random.default_rng(66), 1, 2, 3, 4, 5)
    out, lse = np.empty((1, 2, 3, 5), np.float32), np.empty((1, 2, 3), np.float32)
    with pytest.raises(ValueError, match=r"attention_forward: 'dropout_p' must be in \[0, 1\)"):
        core.attention_forward(q, k, v, None, False, out, lse, 1.0, 3)
    with pytest.raises(ValueError, match=r"'dropout_p' rounds to 1 in float32"):
        core.attention_forward(q, k, v, None, False, out, lse, 1 - 1e-10, 3)
    with pytest.raises(TypeError):
        core.attention_forward(q, k, v, None, False, out, lse, 0.1, -1)


# --------------------------------------------------------------------------- nn layer
def _mha(p, dtype=np.float32):
    from transformer_ext import nn
    from transformer_ext.models.params import ParamStore

    store = ParamStore(dtype, 0)
    drng = nn.DropoutRNG(0)
    layer = nn.MultiHeadAttention(2, nn.Linear.create(store, "c_proj", 16, 16, std=0.3),
                                  qkv=nn.Linear.create(store, "c_attn", 16, 48, std=0.3), causal=True,
                                  attn_dropout=nn.Dropout(p, drng))
    store.allocate()
    return store, layer, drng


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_mha_training_dropout_runs_fused(backend, monkeypatch):
    """In training, attention dropout runs inside ops.attention with a seed drawn from the
    layer's DropoutRNG per forward (no softmax over a (T, T) matrix); reseeding the RNG
    reproduces a forward exactly, and the backward gets the same (p, seed)."""
    if backend == "cpp" and not HAS_CORE:
        pytest.skip("compiled core not available")
    from transformer_ext import nn
    from transformer_ext.nn.attention import split_heads

    with tx.use_backend(backend):
        store, layer, drng = _mha(0.25)
        x = np.random.default_rng(67).standard_normal((2, 9, 16)).astype(np.float32)
        calls = []
        real_attention, real_backward = tx.ops.attention, tx.ops.attention_backward
        monkeypatch.setattr(tx.ops, "softmax", lambda *a, **k: pytest.fail("explicit path taken"))
        monkeypatch.setattr(tx.ops, "attention", lambda *a, **k: calls.append(("f", k)) or real_attention(*a, **k))
        monkeypatch.setattr(tx.ops, "attention_backward",
                            lambda *a, **k: calls.append(("b", k)) or real_backward(*a, **k))
        drng.seed(3)
        y = layer(x)
        layer.backward(np.ones_like(y))
        (f, fk), (b, bk) = calls
        assert fk["dropout_p"] == bk["dropout_p"] == 0.25 and fk["seed"] == bk["seed"] == nn.DropoutRNG(3).draw_seed()
        drng.seed(3)
        np.testing.assert_array_equal(layer(x), y)  # reseed: same mask, same bits
        assert not np.array_equal(layer(x), y)     # next forward: a fresh mask
        # the same function as ops.attention with that seed
        qkv = x @ layer.qkv.weight.value + layer.qkv.bias.value
        q, k, v = (split_heads(t, 2) for t in np.split(qkv, 3, axis=-1))
        o = real_attention(q, k, v, causal=True, dropout_p=0.25, seed=nn.DropoutRNG(3).draw_seed())
        want = o.transpose(0, 2, 1, 3).reshape(2, 9, 16) @ layer.out.weight.value + layer.out.bias.value
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_mha_fused_dropout_switch_and_return_attention():
    """fused_dropout = False (benchmarks) and return_attention=True take the explicit (T, T)
    path with the same hashed mask: the same function and gradients as the fused kernel
    (float64 rounding only); eval mode never drops."""
    from transformer_ext.nn.attention import MultiHeadAttention

    with tx.use_backend("numpy"):
        store, layer, drng = _mha(0.25, np.float64)
        x = np.random.default_rng(68).standard_normal((2, 9, 16))
        dy = np.random.default_rng(69).standard_normal((2, 9, 16))

        def run(**kw):
            store.zero_grad()
            drng.seed(1)
            y = layer(x, **kw)
            y = y[0] if isinstance(y, tuple) else y
            layer.backward(dy)
            return y, store.flat_grad.copy()

        y_fused, g_fused = run()
        MultiHeadAttention.fused_dropout = False
        try:
            y_explicit, g_explicit = run()
        finally:
            MultiHeadAttention.fused_dropout = True
        y_att, g_att = run(return_attention=True)
        for y, g in ((y_explicit, g_explicit), (y_att, g_att)):
            np.testing.assert_allclose(y, y_fused, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(g, g_fused, rtol=1e-9, atol=1e-12)
        drng.seed(1)
        _, probs = layer(x, return_attention=True)
        np.testing.assert_allclose(probs.sum(-1), 1.0)  # undropped probabilities
        layer.eval()
        y_eval = layer(x)
        drng.seed(2)
        np.testing.assert_array_equal(layer(x), y_eval)
        assert not np.allclose(y_eval, y_fused)


def test_causal_must_be_a_bool(isa):
    """causal="no" is truthy: taken as a bool it would silently run the causal kernel."""
    q, k, v = _arrs()
    for bad in ("no", 1, np.ones(2, bool), None):
        with pytest.raises(TypeError, match=r"ops\.attention: argument 'causal' must be a bool"):
            tx.ops.attention(q, k, v, causal=bad)
        with pytest.raises(TypeError, match=r"ops\.attention_backward: argument 'causal' must be a bool"):
            tx.ops.attention_backward(q, q, k, v, causal=bad)
    np.testing.assert_array_equal(tx.ops.attention(q, k, v, causal=np.bool_(True)),
                                  tx.ops.attention(q, k, v, causal=True))


def test_odd_strides_on_length_one_axes(isa):
    """B = H = 1 axes with strides that are no multiple of 4 bytes (NumPy ignores them)."""
    q, k, v = _arrs(B=1, H=1, Tq=5, Tk=6, D=8)
    buf = np.zeros(400, np.float32)
    buf[:40] = q.ravel()
    q_odd = np.lib.stride_tricks.as_strided(buf, (1, 1, 5, 8), (3, 7, 32, 4))
    np.testing.assert_array_equal(tx.ops.attention(q_odd, k, v, causal=True), tx.ops.attention(q, k, v, causal=True))


@pytest.mark.parametrize("D", [1, 7, 64, 100])
@pytest.mark.parametrize("Tk", [1, 9, 64, 131])
def test_one_query_tile_same_bits_as_the_row_path(isa, D, Tk):
    """A one-query tile (decoding) has its own vectorised forward; it must give the bits
    of the same query inside a 2- or 3-row tile (the row path, whose per-row arithmetic
    the backward also uses), with and without causal masking and a key-padding mask."""
    rng = np.random.default_rng(Tk * 1000 + D)
    B, H = 2, 3
    q = (rng.standard_normal((B, H, 3, D)) * 2).astype(np.float32)
    k = rng.standard_normal((B, H, Tk, D)).astype(np.float32)
    v = rng.standard_normal((B, H, Tk, D)).astype(np.float32)
    pad = rng.random((B, Tk)) > 0.25
    pad[1] = False  # a batch row with no visible key: output 0, lse -inf
    for causal in (False, True):
        for mask in (None, pad):
            o1, (_, l1) = tx.ops.attention(q[:, :, 2:], k, v, causal=causal, mask=mask, return_saved=True)
            for rows in (2, 3):
                o, (_, l) = tx.ops.attention(q[:, :, 3 - rows:], k, v, causal=causal, mask=mask, return_saved=True)
                np.testing.assert_array_equal(o1, o[:, :, -1:])
                np.testing.assert_array_equal(l1, l[:, :, -1:])
            if mask is not None:
                assert np.all(o1[1] == 0) and np.all(l1[1] == -np.inf)
    qn = q[:, :, 2:].copy()
    qn[0, 0, 0, 0] = np.nan  # NaN scores: that head's output is NaN, the others are untouched
    o1 = tx.ops.attention(qn, k, v)
    assert np.isnan(o1[0, 0]).all() and not np.isnan(o1[0, 1:]).any()
