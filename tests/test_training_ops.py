"""Training ops: embedding (+ backward), sinusoidal positions, cross-entropy, AdamW.

C++ (every ISA variant, via the `isa` fixture) against the NumPy reference computed in
float64, PyTorch parity where torch is importable, bit-identical results for 1 vs 2
threads, and bad input (exception type and message)."""
import numpy as np
import pytest

import transformer_ext as tx
from transformer_ext import ops
from transformer_ext.ops import reference

from conftest import needs_core

F32_EPS = float(np.finfo(np.float32).eps)  # 2^-23; one rounding is <= F32_EPS/2 relative

NS = [1, 3, 17, 129, 1000]
VS = [1, 2, 7, 65, 1000]
DS = [1, 3, 17, 64, 65, 768]


def f64(a):
    return np.asarray(a, dtype=np.float64)


# =========================================================================== embedding
@pytest.mark.parametrize("d", DS)
def test_embedding_forward_matches_reference(isa, rng, d):
    V = 50
    table = rng.standard_normal((V, d), dtype=np.float32)
    for n in NS:
        ids = rng.integers(0, V, n)
        out = ops.embedding(ids, table)
        assert out.dtype == np.float32 and out.shape == (n, d)
        # A gather copies bits: exact.
        np.testing.assert_array_equal(out, reference.embedding(ids, table))


def test_embedding_forward_any_ids_shape_and_layouts(isa, rng):
    big = rng.standard_normal((40, 2 * 33), dtype=np.float32)
    table = big[:, ::2]  # non-unit last-axis stride: copied
    ids = rng.integers(0, 40, (6, 10))[:, ::2]  # non-contiguous ids, shape (6, 5)
    out, saved = ops.embedding(ids, table, return_saved=True)
    assert saved is None and out.shape == (6, 5, 33)
    np.testing.assert_array_equal(out, np.asarray(table)[ids])
    # int32 / uint8 ids and a 0-d id
    np.testing.assert_array_equal(ops.embedding(ids.astype(np.int32), table), out)
    np.testing.assert_array_equal(ops.embedding(np.uint8(7), table), np.asarray(table)[7])


@pytest.mark.parametrize("d", DS)
def test_embedding_backward_matches_reference(isa, rng, d):
    V = 37
    table = np.zeros((V, d), np.float32)
    for n in NS:
        ids = rng.integers(0, V, n)  # n >= 129: many repeated ids
        dy = rng.standard_normal((n, d), dtype=np.float32)
        dt = ops.embedding_backward(dy, ids, table)
        assert dt.dtype == np.float32 and dt.shape == (V, d)
        # The kernel adds each id's dy rows in index order from 0, exactly what
        # np.add.at does in float32: bit-identical.
        np.testing.assert_array_equal(dt, reference.embedding_backward(dy, ids, table))
        # And close to the float64 sum: k terms summed in float32 err <= k·eps/2·Σ|dy|.
        ref = reference.embedding_backward(f64(dy), ids, f64(table))
        k = max(1, np.bincount(ids, minlength=V).max())
        bound = k * F32_EPS * reference.embedding_backward(np.abs(f64(dy)), ids, f64(table))
        assert np.all(np.abs(dt - ref) <= bound + 1e-30)


def test_embedding_backward_repeated_ids_accumulate(isa):
    table = np.zeros((5, 4), np.float32)
    ids = np.array([[3, 1, 3], [3, 0, 1]])
    dy = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    dt = ops.embedding_backward(dy, ids, table)
    expect = np.zeros((5, 4), np.float32)
    expect[3] = dy[0, 0] + dy[0, 2] + dy[1, 0]
    expect[1] = dy[0, 1] + dy[1, 2]
    expect[0] = dy[1, 1]
    np.testing.assert_array_equal(dt, expect)


@pytest.mark.parametrize("V,d,n", [(7, 768, 4096), (11, 3, 40000), (50257, 64, 2048)])
def test_embedding_backward_thread_determinism(isa, rng, threads, V, d, n):
    # Few distinct ids (heavy accumulation); wide d (threads own columns) and narrow d
    # (threads own ids). n·d >= 2^15, so the parallel path really runs.
    ids = rng.integers(0, V, n)
    dy = rng.standard_normal((n, d), dtype=np.float32)
    table = np.zeros((V, d), np.float32)
    threads(1)
    one = ops.embedding_backward(dy, ids, table)
    threads(2)
    two = ops.embedding_backward(dy, ids, table)
    assert one.tobytes() == two.tobytes()
    np.testing.assert_array_equal(one, reference.embedding_backward(dy, ids, table))


def test_embedding_zero_size(isa):
    table = np.ones((4, 3), np.float32)
    assert ops.embedding(np.zeros((2, 0), np.int64), table).shape == (2, 0, 3)
    assert ops.embedding(np.array([1, 2]), np.ones((4, 0), np.float32)).shape == (2, 0)
    dt = ops.embedding_backward(np.zeros((0, 3), np.float32), np.zeros(0, np.int64), table)
    np.testing.assert_array_equal(dt, np.zeros((4, 3), np.float32))
    # V == 0: no valid id, but no id is fine
    assert ops.embedding(np.zeros(0, np.int64), np.ones((0, 3), np.float32)).shape == (0, 3)


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_embedding_bad_input(backend, rng):
    if backend == "cpp" and not tx.supported_isas():
        pytest.skip("compiled core not available")
    table = rng.standard_normal((10, 4), dtype=np.float32)
    with tx.use_backend(backend):
        for bad in (-1, 10, 12345):
            ids = np.array([[0, 1], [bad, 2]])
            with pytest.raises(ValueError, match=rf"ops\.embedding: argument 'ids' has id {bad} out of range \[0, 10\)"):
                ops.embedding(ids, table)
            with pytest.raises(ValueError, match=rf"ops\.embedding_backward: argument 'ids' has id {bad} out of range"):
                ops.embedding_backward(np.zeros((2, 2, 4), np.float32), ids, table)
        with pytest.raises(TypeError, match=r"ops\.embedding: argument 'ids' must be an integer array, got dtype float"):
            ops.embedding(np.array([0.0, 1.0]), table)
        with pytest.raises(TypeError, match=r"argument 'ids' must be an integer array, got dtype bool"):
            ops.embedding(np.array([True]), table)
        with pytest.raises(ValueError, match=r"ops\.embedding: argument 'table' must be 2-D, got shape \(10,\)"):
            ops.embedding(np.array([0]), table[:, 0])
        with pytest.raises(TypeError, match=r"argument 'table' must be a float array"):
            ops.embedding(np.array([0]), np.ones((3, 2), np.int32))
        with pytest.raises(ValueError, match=r"argument 'dy' has shape \(3, 4\) but 'ids' has shape \(2,\).*expected dy of shape \(2, 4\)"):
            ops.embedding_backward(np.zeros((3, 4), np.float32), np.array([0, 1]), table)
    if backend == "cpp":
        with tx.use_backend("cpp"):
            with pytest.raises(TypeError, match=r"ops\.embedding: argument 'table' has dtype float64; the cpp backend computes in float32"):
                ops.embedding(np.array([0]), table.astype(np.float64))
            with pytest.raises(TypeError, match=r"ops\.embedding_backward: argument 'dy' has dtype float64"):
                ops.embedding_backward(np.zeros((1, 4)), np.array([0]), table)


@needs_core
def test_embedding_core_checks_ids_itself():
    # The binding range-checks too (an out-of-range id would read outside the table).
    core = tx._backend.core
    table = np.ones((10, 4), np.float32)
    out = np.empty((2, 4), np.float32)
    for bad in (-1, 10):
        with pytest.raises(ValueError, match=rf"embedding_forward: 'ids' has id {bad} at position 1, out of range \[0, 10\)"):
            core.embedding_forward(np.array([0, bad], np.int64), table, out)
        with pytest.raises(ValueError, match=rf"embedding_backward: 'ids' has id {bad}"):
            core.embedding_backward(out, np.array([0, bad], np.int64), np.zeros((10, 4), np.float32))
    with pytest.raises(TypeError, match="'ids' must be int64"):
        core.embedding_forward(np.array([0, 1], np.int32), table, out)
    with pytest.raises(ValueError, match=r"'out' has shape \(3, 4\), expected \(2, 4\)"):
        core.embedding_forward(np.array([0, 1], np.int64), table, np.empty((3, 4), np.float32))


def test_embedding_numpy_backend_float64(rng):
    table = rng.standard_normal((9, 5))
    ids = rng.integers(0, 9, (3, 4))
    with tx.use_backend("numpy"):
        out = ops.embedding(ids, table)
        assert out.dtype == np.float64
        np.testing.assert_array_equal(out, table[ids])
        dt = ops.embedding_backward(np.ones((3, 4, 5)), ids, table)
        np.testing.assert_array_equal(dt[:, 0], np.bincount(ids.ravel(), minlength=9))
        with pytest.raises(TypeError, match="other inputs are float64"):
            ops.embedding_backward(np.ones((3, 4, 5), np.float32), ids, table)


# =========================================================================== positions
@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_sinusoidal_positions(backend):
    if backend == "cpp" and not tx.supported_isas():
        pytest.skip("compiled core not available")
    with tx.use_backend(backend):
        for T, d in [(1, 1), (5, 4), (7, 7), (129, 768), (0, 8), (3, 0)]:
            pe = ops.sinusoidal_positions(T, d)
            assert pe.shape == (T, d) and pe.dtype == np.float32
            np.testing.assert_array_equal(pe, reference.sinusoidal_positions(T, d))
        pe = ops.sinusoidal_positions(6, 5, dtype=np.float64)
        pos = np.arange(6)[:, None]
        np.testing.assert_allclose(pe[:, 0::2], np.sin(pos / 10000.0 ** (np.arange(0, 5, 2) / 5)), rtol=1e-12)
        np.testing.assert_allclose(pe[:, 1::2], np.cos(pos / 10000.0 ** (np.arange(0, 4, 2) / 5)), rtol=1e-12)
        with pytest.raises(ValueError, match=r"ops\.sinusoidal_positions: argument 'T' must be >= 0, got -1"):
            ops.sinusoidal_positions(-1, 4)
        with pytest.raises(TypeError, match=r"argument 'd' must be an int, got float"):
            ops.sinusoidal_positions(3, 4.0)
        with pytest.raises(TypeError, match=r"argument 'dtype' must be float32 or float64"):
            ops.sinusoidal_positions(3, 4, dtype=np.int32)


# =========================================================================== cross-entropy
def _ce_check(x, t, ls, reduction, ignore_index=-100):
    """C++ loss and gradient vs the float64 reference."""
    loss, g = ops.cross_entropy(x, t, ignore_index=ignore_index, label_smoothing=ls, reduction=reduction)
    rloss, rg = reference.cross_entropy(f64(x), t, ignore_index=ignore_index, label_smoothing=ls, reduction=reduction)
    assert isinstance(loss, float)
    assert g.dtype == np.float32 and g.shape == x.shape
    n_keep = max(1, int(np.count_nonzero(t != ignore_index)))
    scale = 1.0 / n_keep if reduction == "mean" else 1.0
    # Per row, log p = x − max − log Σ exp: float32 rounding of x − max (|x| ≤ xmax) and
    # of exp (tx_exp ≤ 1.5 ulp), Σ exp in blocks of 1024 (≤ ~1024·eps/2 relative, in
    # practice far less), log in double: |Δ row loss| ≲ 8·eps·(1 + xmax).
    xmax = float(np.max(np.abs(x))) if x.size else 0.0
    rows = n_keep if reduction == "sum" else 1
    assert abs(loss - rloss) <= 8 * F32_EPS * (1 + xmax) * rows + 1e-6 * abs(rloss), (loss, rloss)
    # p_j to a few ulps (exp + one scale multiply), then − const: absolute error
    # ≲ 4·eps·scale (p ≤ 1) plus the e/s relative error on p.
    np.testing.assert_allclose(g, rg, rtol=1e-5, atol=4 * F32_EPS * scale * (1 + xmax))


@pytest.mark.parametrize("V", VS)
@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_cross_entropy_matches_reference(isa, rng, V, ls):
    for N in NS:
        x = (rng.standard_normal((N, V)) * 3).astype(np.float32)
        t = rng.integers(0, V, N)
        if N > 2:
            t[1] = -100  # one ignored row
        for reduction in ("mean", "sum"):
            _ce_check(x, t, ls, reduction)


@pytest.mark.parametrize("ls", [0.0, 0.1, 1.0])
def test_cross_entropy_gpt2_vocab(isa, rng, ls):
    N, V = 3, 50257
    x = (rng.standard_normal((N, V)) * 4).astype(np.float32)
    t = np.array([0, V - 1, 12345])
    for reduction in ("mean", "sum"):
        _ce_check(x, t, ls, reduction)


def test_cross_entropy_ignore_index(isa, rng):
    x = rng.standard_normal((2, 5, 7), dtype=np.float32)
    t = rng.integers(0, 7, (2, 5))
    t[0, 1] = t[1, 4] = -1
    loss, g = ops.cross_entropy(x, t, ignore_index=-1)
    assert np.all(g[0, 1] == 0) and np.all(g[1, 4] == 0)
    keep = t != -1
    l2, g2 = ops.cross_entropy(x[keep], t[keep])  # same loss on the kept rows only
    assert abs(loss - l2) <= 1e-6 * abs(l2)
    np.testing.assert_allclose(g[keep], g2, rtol=1e-6, atol=1e-9)
    _ce_check(x, t, 0.2, "mean", ignore_index=-1)
    # ignore_index inside [0, V) ignores that class's targets (PyTorch semantics)
    t3 = np.array([3, 1, 3])
    x3 = x[0, :3]
    loss3, g3 = ops.cross_entropy(x3, t3, ignore_index=3)
    assert np.all(g3[[0, 2]] == 0)
    l1, _ = ops.cross_entropy(x3[1:2], t3[1:2])
    assert abs(loss3 - l1) <= 1e-6 * abs(l1)
    # every target ignored -> (0.0, zeros), for both reductions
    for reduction in ("mean", "sum"):
        loss, g = ops.cross_entropy(x, np.full((2, 5), -100), reduction=reduction)
        assert loss == 0.0 and g.shape == x.shape and g.dtype == np.float32 and not g.any()


def test_cross_entropy_layouts_and_zero_size(isa, rng):
    big = rng.standard_normal((4, 6, 2 * 11), dtype=np.float32)
    x = big[:, ::2, ::2]  # strided both ways: copied
    t = rng.integers(0, 11, (4, 3))
    loss, g = ops.cross_entropy(x, t)
    l2, g2 = ops.cross_entropy(np.ascontiguousarray(x), t)
    assert loss == l2 and np.array_equal(g, g2)
    # zero-size: no rows -> 0.0 and an empty gradient
    loss, g = ops.cross_entropy(np.zeros((0, 5), np.float32), np.zeros(0, np.int64))
    assert loss == 0.0 and g.shape == (0, 5)
    # 1-D logits = one row, 0-d target
    loss, g = ops.cross_entropy(x[0, 0], np.int64(3))
    l3, g3 = ops.cross_entropy(x[0, :1], np.array([3]))
    assert loss == l3 and np.array_equal(g, g3[0])


def test_cross_entropy_stability_and_nan(isa):
    # Huge logits: the max subtraction keeps exp finite.
    x = np.array([[1e4, 1e4 - 1.0, -1e4], [-1e30, 0.0, 3.0]], np.float32)
    loss, g = ops.cross_entropy(x, np.array([1, 0]), reduction="sum")
    rloss, rg = reference.cross_entropy(f64(x), np.array([1, 0]), reduction="sum")
    assert np.isfinite(loss) and abs(loss - rloss) <= 1e-5 * rloss
    np.testing.assert_allclose(g, rg, atol=1e-6)
    # NaN in one row: that row's loss and gradient are NaN, the other row's are not.
    x = np.array([[0.0, np.nan, 1.0], [0.0, 1.0, 2.0]], np.float32)
    loss, g = ops.cross_entropy(x, np.array([0, 2]))
    assert np.isnan(loss) and np.all(np.isnan(g[0])) and np.all(np.isfinite(g[1]))


def test_cross_entropy_thread_determinism(isa, rng, threads):
    x = (rng.standard_normal((64, 4099)) * 5).astype(np.float32)
    t = rng.integers(0, 4099, 64)
    t[::7] = -100
    res = []
    for n in (1, 2):
        threads(n)
        res.append(ops.cross_entropy(x, t, label_smoothing=0.1))
    assert res[0][0] == res[1][0]
    assert res[0][1].tobytes() == res[1][1].tobytes()


def test_cross_entropy_vs_torch(isa, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for (N, V) in [(17, 65), (129, 1000), (4, 50257)]:
        x = (rng.standard_normal((N, V)) * 3).astype(np.float32)
        t = rng.integers(0, V, N)
        t[0] = -100
        for ls in (0.0, 0.1):
            for reduction in ("mean", "sum"):
                loss, g = ops.cross_entropy(x, t, label_smoothing=ls, reduction=reduction)
                xt = torch.from_numpy(f64(x)).requires_grad_(True)
                lt = F.cross_entropy(xt, torch.from_numpy(t), ignore_index=-100, label_smoothing=ls, reduction=reduction)
                lt.backward()
                # vs torch in float64: the float32 error bound of _ce_check
                assert abs(loss - lt.item()) <= 8 * F32_EPS * (1 + np.abs(x).max()) * (N if reduction == "sum" else 1)
                scale = 1.0 / (N - 1) if reduction == "mean" else 1.0
                np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-5, atol=4 * F32_EPS * scale * (1 + np.abs(x).max()))


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_cross_entropy_bad_input(backend, rng):
    if backend == "cpp" and not tx.supported_isas():
        pytest.skip("compiled core not available")
    x = rng.standard_normal((2, 3, 5), dtype=np.float32)
    t = np.zeros((2, 3), np.int64)
    with tx.use_backend(backend):
        for bad in (-1, 5, 99):
            tb = t.copy()
            tb[1, 2] = bad
            with pytest.raises(ValueError, match=rf"ops\.cross_entropy: argument 'targets' has value {bad} at index \(1, 2\), out of range \[0, 5\) and not ignore_index=-100"):
                ops.cross_entropy(x, tb)
        with pytest.raises(TypeError, match=r"ops\.cross_entropy: argument 'targets' must be an integer array, got dtype float64"):
            ops.cross_entropy(x, t.astype(np.float64))
        with pytest.raises(ValueError, match=r"argument 'targets' has shape \(3, 2\) but 'logits' has shape \(2, 3, 5\).*\(2, 3\)"):
            ops.cross_entropy(x, t.T)
        with pytest.raises(ValueError, match=r"argument 'targets' has shape \(2, 3, 5\) but 'logits' has shape \(2, 3, 5\)"):
            ops.cross_entropy(x, np.zeros((2, 3, 5), np.int64))
        with pytest.raises(ValueError, match=r"argument 'reduction' must be 'mean' or 'sum', got 'none'"):
            ops.cross_entropy(x, t, reduction="none")
        for ls in (-0.1, 1.5, float("nan")):
            with pytest.raises(ValueError, match=r"ops\.cross_entropy: argument 'label_smoothing' must be"):
                ops.cross_entropy(x, t, label_smoothing=ls)
        with pytest.raises(TypeError, match=r"argument 'ignore_index' must be an int"):
            ops.cross_entropy(x, t, ignore_index=1.5)
        with pytest.raises(ValueError, match=r"argument 'logits' must have at least 1 dims"):
            ops.cross_entropy(np.float32(1.0), t)
        with pytest.raises(TypeError, match=r"argument 'logits' must be a float array"):
            ops.cross_entropy(np.zeros((2, 5), np.int32), np.zeros(2, np.int64))
    if backend == "cpp":
        with tx.use_backend("cpp"):
            with pytest.raises(TypeError, match=r"ops\.cross_entropy: argument 'logits' has dtype float64; the cpp backend computes in float32"):
                ops.cross_entropy(x.astype(np.float64), t)


@needs_core
def test_cross_entropy_core_checks_targets_itself():
    core = tx._backend.core
    x = np.zeros((2, 5), np.float32)
    args = (np.empty(2, np.float32), np.empty((2, 5), np.float32))
    for bad in (-1, 5):
        with pytest.raises(ValueError, match=rf"cross_entropy: 'targets' has id {bad} at position 1, out of range \[0, 5\)"):
            core.cross_entropy(x, np.array([0, bad], np.int64), -100, 0.0, 1.0, *args)
    core.cross_entropy(x, np.array([0, -7], np.int64), -7, 0.0, 1.0, *args)  # ignored: fine
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\]"):
        core.cross_entropy(x, np.array([0, 1], np.int64), -100, 2.0, 1.0, *args)
    with pytest.raises(ValueError, match=r"'dlogits' has shape \(2, 4\) but 'logits' has shape \(2, 5\)"):
        core.cross_entropy(x, np.array([0, 1], np.int64), -100, 0.0, 1.0, args[0], np.empty((2, 4), np.float32))


def test_cross_entropy_numpy_backend_float64(rng):
    x = rng.standard_normal((6, 9))
    t = rng.integers(0, 9, 6)
    with tx.use_backend("numpy"):
        loss, g = ops.cross_entropy(x, t, label_smoothing=0.05)
    assert g.dtype == np.float64
    rloss, rg = reference.cross_entropy(x, t, label_smoothing=0.05)
    assert loss == rloss and np.array_equal(g, rg)


# =========================================================================== AdamW
# Hyperparameters exactly representable in float32 (the kernel takes them as float):
# with these, the C++ result differs from float64 math only by float32 roundings.
EXACT_HP = dict(lr=2.0**-10, beta1=0.875, beta2=1 - 2.0**-10, eps=2.0**-27)
DEFAULT_HP = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)


def _adam_inputs(rng, shape, steps):
    p = rng.standard_normal(shape, dtype=np.float32)
    # gradients over 7 decades, some exactly 0 (eps dominates there)
    gs = [(rng.standard_normal(shape) * 10.0 ** rng.uniform(-6, 1, shape)).astype(np.float32) for _ in range(steps)]
    gs[0].flat[:: 11] = 0.0
    return p, gs


def _adam_run(p0, gs, hp, wd, dtype=np.float32, start=1):
    p = p0.astype(dtype)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    fn = reference.adamw_step if dtype == np.float64 else ops.adamw_step
    for s, g in enumerate(gs, start):
        assert fn(p, g.astype(dtype), m, v, s, weight_decay=wd, **hp) is None
    return p, m, v


def _adam_close(got, ref, gs, hp, steps, hp_err):
    """got (float32 run) vs ref (float64 run), with float32-justified tolerances.

    hp_err: relative error of the hyperparameters once rounded to float32 (0 for
    EXACT_HP; for β2 = 0.999, float32(β2) shifts 1−β2 by 1.3e-5 relative)."""
    p, m, v = got
    P, M, Vr = ref
    gmax = np.max(np.abs(np.stack(gs)), axis=0)
    # m is a weighted sum of ≤ steps gradients, each step ~2 roundings: |Δm| ≤ 4·steps·eps·max|g|.
    assert np.all(np.abs(m - M) <= (4 * steps * F32_EPS + hp_err) * gmax), "m"
    # v: same, but all terms are ≥ 0, so relative.
    assert np.all(np.abs(v - Vr) <= (4 * steps * F32_EPS + hp_err) * Vr + 1e-38), "v"
    # p: each step rounds p (~1 ulp) and adds lr·m̂/(√v̂+eps), whose relative error is a few
    # eps (plus hp_err) — but m̂ can cancel, so bound it by lr·(rel err)·(max|g|/ (√v̂+eps)) ≤ lr·rel·c.
    tol = 2 * steps * F32_EPS * np.abs(P) + steps * hp["lr"] * (64 * F32_EPS + 4 * hp_err)
    assert np.all(np.abs(p - P) <= tol), ("p", np.max(np.abs(p - P) / tol))


@pytest.mark.parametrize("n", [1, 3, 17, 129, 1000, 8192 * 3 + 5])
@pytest.mark.parametrize("wd", [0.0, 2.0**-7])
def test_adamw_matches_reference(isa, rng, n, wd):
    steps = 4
    p0, gs = _adam_inputs(rng, (n,), steps)
    got = _adam_run(p0, gs, EXACT_HP, wd)
    ref = _adam_run(p0, gs, EXACT_HP, wd, dtype=np.float64)
    _adam_close(got, ref, gs, EXACT_HP, steps, 0.0)


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_adamw_default_hyperparameters(isa, rng, wd):
    steps = 5
    p0, gs = _adam_inputs(rng, (4, 129), steps)  # any shape: the buffers are flat
    got = _adam_run(p0, gs, DEFAULT_HP, wd)
    ref = _adam_run(p0, gs, DEFAULT_HP, wd, dtype=np.float64)
    _adam_close(got, ref, gs, DEFAULT_HP, steps, 2e-5)
    # late steps (bias corrections near 1) too
    got = _adam_run(p0, gs, DEFAULT_HP, wd, start=1000)
    ref = _adam_run(p0, gs, DEFAULT_HP, wd, dtype=np.float64, start=1000)
    _adam_close(got, ref, gs, DEFAULT_HP, steps, 2e-5)


@pytest.mark.parametrize("wd", [0.0, 0.01])
@pytest.mark.parametrize("hp", [EXACT_HP, DEFAULT_HP], ids=["exact_hp", "default_hp"])
def test_adamw_vs_torch(isa, rng, wd, hp):
    torch = pytest.importorskip("torch")
    steps = 4
    p0, gs = _adam_inputs(rng, (1000,), steps)
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = torch.optim.AdamW([tp], lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"], weight_decay=wd)
    for g in gs:
        tp.grad = torch.from_numpy(g.copy())
        opt.step()
    st = opt.state[tp]
    ref = (tp.detach().numpy().astype(np.float64), f64(st["exp_avg"].numpy()), f64(st["exp_avg_sq"].numpy()))
    got = _adam_run(p0, gs, hp, wd)
    # torch runs the same float32 arithmetic (its sqrt may differ from the correctly
    # rounded one by an ulp); the bounds of the float64 comparison cover both.
    _adam_close(got, ref, gs, hp, steps, 0.0 if hp is EXACT_HP else 2e-5)
    if hp is EXACT_HP and isa != "scalar":
        # Same roundings as torch's vectorised kernels (fused lerp and addcmul): m, v exact.
        np.testing.assert_array_equal(got[1], st["exp_avg"].numpy())
        np.testing.assert_array_equal(got[2], st["exp_avg_sq"].numpy())


def test_adamw_thread_determinism(isa, rng, threads):
    n = 300_001
    p0, gs = _adam_inputs(rng, (n,), 2)
    res = []
    for nt in (1, 2):
        threads(nt)
        res.append(_adam_run(p0, gs, DEFAULT_HP, 0.01))
    for a, b in zip(*res):
        assert a.tobytes() == b.tobytes()


def test_adamw_special_values(isa):
    p = np.array([1.0, 2.0, -3.0, 0.0], np.float32)
    g = np.array([np.nan, np.inf, 0.0, 0.0], np.float32)
    m = np.zeros(4, np.float32)
    v = np.zeros(4, np.float32)
    ops.adamw_step(p, g, m, v, 1, 1e-3)
    assert np.isnan(p[0]) and np.isnan(m[0])  # NaN gradient propagates
    assert np.isnan(p[1])  # inf/inf
    assert p[2] == np.float32(-3.0) * np.float32(1 - 1e-3 * 0.01) and p[3] == 0.0  # g = 0: decay only
    ops.adamw_step(np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32), 1, 1e-3)


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_adamw_bad_input(backend):
    if backend == "cpp" and not tx.supported_isas():
        pytest.skip("compiled core not available")

    def bufs(n=8, dtype=np.float32):
        return [np.zeros(n, dtype) for _ in range(4)]

    with tx.use_backend(backend):
        p, g, m, v = bufs()
        for bad in (0, -3):
            with pytest.raises(ValueError, match=rf"ops\.adamw_step: argument 'step' must be >= 1, got {bad}"):
                ops.adamw_step(p, g, m, v, bad, 1e-3)
        for bad in (1.0, True, "1"):
            with pytest.raises(TypeError, match=r"argument 'step' must be an int"):
                ops.adamw_step(p, g, m, v, bad, 1e-3)
        with pytest.raises(ValueError, match=r"argument 'lr' must be finite, got nan"):
            ops.adamw_step(p, g, m, v, 1, float("nan"))
        with pytest.raises(ValueError, match=r"argument 'eps' must be finite, got inf"):
            ops.adamw_step(p, g, m, v, 1, 1e-3, eps=float("inf"))
        with pytest.raises(ValueError, match=r"argument 'beta2' must be in \[0.0, 1.0\), got 1.0"):
            ops.adamw_step(p, g, m, v, 1, 1e-3, beta2=1.0)
        with pytest.raises(ValueError, match=r"argument 'weight_decay' must be in >= 0.0"):
            ops.adamw_step(p, g, m, v, 1, 1e-3, weight_decay=-1.0)
        # In place: a non-contiguous buffer would be updated through a copy and lost.
        big = np.zeros(16, np.float32)
        for i, name in enumerate(["params", "m", "v"]):
            args = bufs()
            args[[0, 2, 3][i]] = big[::2]
            with pytest.raises(ValueError, match=rf"ops\.adamw_step: argument '{name}' \(shape \(8,\), strides \(8,\)\) must be C-contiguous"):
                ops.adamw_step(*args, 1, 1e-3)
        # non-contiguous grads are only read: fine, same result as a contiguous copy
        p1, g1, m1, v1 = bufs()
        p2, _, m2, v2 = bufs()
        gs = np.arange(16, dtype=np.float32)[::2]
        ops.adamw_step(p1, gs, m1, v1, 1, 1e-3)
        ops.adamw_step(p2, gs.copy(), m2, v2, 1, 1e-3)
        assert np.array_equal(p1, p2) and np.array_equal(v1, v2)
        ro = np.zeros(8, np.float32)
        ro.flags.writeable = False
        with pytest.raises(ValueError, match=r"argument 'm' is read-only"):
            ops.adamw_step(p, g, ro, v, 1, 1e-3)
        with pytest.raises(ValueError, match=r"argument 'v' has shape \(4, 2\) but 'params' has shape \(8,\)"):
            ops.adamw_step(p, g, m, v.reshape(4, 2), 1, 1e-3)
        with pytest.raises(ValueError, match=r"arguments 'params' and 'm' overlap in memory"):
            ops.adamw_step(p, g, p, v, 1, 1e-3)
        with pytest.raises(TypeError, match=r"argument 'params' must be a NumPy array"):
            ops.adamw_step([0.0] * 8, g, m, v, 1, 1e-3)
        with pytest.raises(TypeError, match=r"argument 'grads' must be a float array"):
            ops.adamw_step(p, np.zeros(8, np.int32), m, v, 1, 1e-3)
        with pytest.raises(TypeError, match=r"argument 'v' has dtype float16"):
            ops.adamw_step(p, g, m, np.zeros(8, np.float16), 1, 1e-3)
    if backend == "cpp":
        with tx.use_backend("cpp"):
            with pytest.raises(TypeError, match=r"ops\.adamw_step: argument 'params' has dtype float64; the cpp backend computes in float32"):
                ops.adamw_step(*bufs(dtype=np.float64), 1, 1e-3)
    else:
        with tx.use_backend("numpy"):
            ops.adamw_step(*bufs(dtype=np.float64), 1, 1e-3)  # float64 fine on numpy
            with pytest.raises(TypeError, match=r"argument 'grads' has dtype float32 but the other inputs are float64"):
                ops.adamw_step(np.zeros(8), np.zeros(8, np.float32), np.zeros(8), np.zeros(8), 1, 1e-3)


@needs_core
def test_adamw_core_checks_itself():
    core = tx._backend.core
    z = [np.zeros(8, np.float32) for _ in range(4)]
    with pytest.raises(ValueError, match=r"adamw_step: step must be >= 1, got 0"):
        core.adamw_step(*z, 0, 1e-3, 0.9, 0.999, 1e-8, 0.0)
    with pytest.raises(ValueError, match=r"adamw_step: 'm' must be C-contiguous"):
        core.adamw_step(z[0], z[1], np.zeros(16, np.float32)[::2], z[3], 1, 1e-3, 0.9, 0.999, 1e-8, 0.0)
    with pytest.raises(ValueError, match=r"adamw_step: 'v' has shape \(7,\) but 'params' has shape \(8,\)"):
        core.adamw_step(z[0], z[1], z[2], np.zeros(7, np.float32), 1, 1e-3, 0.9, 0.999, 1e-8, 0.0)
    with pytest.raises(TypeError, match=r"adamw_step: 'g' must be float32|adamw_step: 'grads' must be float32"):
        core.adamw_step(z[0], np.zeros(8), z[2], z[3], 1, 1e-3, 0.9, 0.999, 1e-8, 0.0)
    with pytest.raises(ValueError, match=r"hyperparameters must be finite"):
        core.adamw_step(*z, 1, float("inf"), 0.9, 0.999, 1e-8, 0.0)


# ---- fill_zero (model.zero_grad on the cpp backend) ----
@needs_core
@pytest.mark.parametrize("n", [0, 1, 15, 17, 8192 * 3 + 5, (9 << 20) // 4 + 3])  # last: > 8 MiB, streamed
def test_fill_zero(isa, threads, n):
    core = tx._backend.core
    for t in (1, 2):
        threads(t)
        buf = np.full(n + 3, 7.0, np.float32)
        x = buf[1:1 + n]  # unaligned start inside a bigger buffer
        core.fill_zero(x)
        assert not x.any()
        assert buf[0] == 7.0 and (buf[1 + n:] == 7.0).all()  # nothing outside x is touched


@needs_core
def test_fill_zero_bad_input():
    core = tx._backend.core
    with pytest.raises(TypeError, match="fill_zero: 'x' must be float32"):
        core.fill_zero(np.ones(4))
    with pytest.raises(ValueError, match="fill_zero: 'x' must be C-contiguous"):
        core.fill_zero(np.ones(8, np.float32)[::2])
    ro = np.ones(4, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="fill_zero: 'x' is read-only"):
        core.fill_zero(ro)


@pytest.mark.parametrize("backend_name", ["cpp", "numpy"])
def test_zero_grad_clears_every_gradient(backend_name):
    if backend_name == "cpp" and not tx._backend.core:
        pytest.skip("compiled core not available")
    from transformer_ext.models import GPT, GPTConfig
    m = GPT(GPTConfig(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2, seed=0))
    with tx.use_backend(backend_name):
        for g in m.gradients().values():
            g[...] = 3.0
        m.zero_grad()
        assert all(not g.any() for g in m.gradients().values())


# ---- cross_entropy(out=): dlogits into a given array, or in place over the logits ----
@pytest.mark.parametrize("backend", ["cpp", "numpy"])
@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_cross_entropy_out_and_in_place(backend, rng, ls):
    if backend == "cpp" and not tx.supported_isas():
        pytest.skip("compiled core not available")
    with tx.use_backend(backend):
        _check_cross_entropy_out(rng, ls)


def _check_cross_entropy_out(rng, ls):
    logits = rng.standard_normal((3, 5, 37)).astype(np.float32) * 4
    targets = rng.integers(0, 37, (3, 5))
    targets[1, 2] = -100  # an ignored row
    loss, d = ops.cross_entropy(logits, targets, label_smoothing=ls)
    out = np.full_like(logits, np.nan)
    loss2, d2 = ops.cross_entropy(logits, targets, label_smoothing=ls, out=out)
    assert d2 is out and loss2 == loss
    np.testing.assert_array_equal(out, d)
    x = logits.copy()
    loss3, d3 = ops.cross_entropy(x, targets, label_smoothing=ls, out=x)  # in place
    assert d3 is x and loss3 == loss
    np.testing.assert_array_equal(x, d)
    # every target ignored: zeros written into out
    out = np.full_like(logits, 5.0)
    assert ops.cross_entropy(logits, np.full((3, 5), -100), out=out) == (0.0, out)
    assert not out.any()


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_cross_entropy_out_bad(backend, rng):
    if backend == "cpp" and not tx.supported_isas():
        pytest.skip("compiled core not available")
    with tx.use_backend(backend):
        _check_cross_entropy_out_bad(rng)


def _check_cross_entropy_out_bad(rng):
    logits = rng.standard_normal((4, 9)).astype(np.float32)
    targets = rng.integers(0, 9, 4)
    with pytest.raises(ValueError, match=r"ops.cross_entropy: argument 'out' must have the result's shape \(4, 9\)"):
        ops.cross_entropy(logits, targets, out=np.empty((4, 8), np.float32))
    with pytest.raises(TypeError, match="ops.cross_entropy: argument 'out' has dtype float64"):
        ops.cross_entropy(logits, targets, out=np.empty((4, 9)))
    big = np.concatenate([logits.ravel(), np.zeros(9, np.float32)])
    with pytest.raises(ValueError, match="ops.cross_entropy: argument 'out' overlaps the memory of 'logits'"):
        ops.cross_entropy(big[:36].reshape(4, 9), targets, out=big[9:].reshape(4, 9))


@needs_core
def test_cross_entropy_in_place_every_isa(isa, rng):
    """The kernel reads each logit before writing its gradient and keeps x_t first, so in
    place equals out of place bit for bit (GPT-2-sized rows, several threads' worth)."""
    logits = rng.standard_normal((6, 50257)).astype(np.float32) * 3
    targets = rng.integers(0, 50257, 6)
    loss, d = ops.cross_entropy(logits, targets, label_smoothing=0.1)
    x = logits.copy()
    loss2, d2 = ops.cross_entropy(x, targets, label_smoothing=0.1, out=x)
    assert loss2 == loss
    np.testing.assert_array_equal(d2, d)


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_zero_width_on_both_backends(backend):
    """d = 0 embeddings and V = 0 logits (every target ignored) give empty results on both
    backends (the NumPy reference used to fail reshaping them)."""
    if backend == "cpp" and not tx.supported_isas():
        pytest.skip("compiled core not available")
    with tx.use_backend(backend):
        dt = ops.embedding_backward(np.zeros((3, 0), np.float32), np.array([1, 2, 3]), np.zeros((10, 0), np.float32))
        assert dt.shape == (10, 0)
        loss, g = ops.cross_entropy(np.zeros((3, 0), np.float32), np.full(3, -100))
        assert loss == 0.0 and g.shape == (3, 0)


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_adamw_zero_dim(backend):
    """0-d arrays (one scalar parameter) update like 1-element ones."""
    if backend == "cpp" and not tx.supported_isas():
        pytest.skip("compiled core not available")
    with tx.use_backend(backend):
        p, m, v = np.array(1.0, np.float32), np.zeros((), np.float32), np.zeros((), np.float32)
        p1, m1, v1 = np.ones(1, np.float32), np.zeros(1, np.float32), np.zeros(1, np.float32)
        ops.adamw_step(p, np.array(0.5, np.float32), m, v, 1, 1e-3)
        ops.adamw_step(p1, np.full(1, 0.5, np.float32), m1, v1, 1, 1e-3)
        assert p.shape == () and p == p1[0] and m == m1[0] and v == v1[0]


def test_huge_unsigned_ids_are_reported_as_they_are(isa):
    with pytest.raises(ValueError, match=r"has id 9223372036854775813 out of range \[0, 4\)"):
        ops.embedding(np.array([2**63 + 5], np.uint64), np.ones((4, 3), np.float32))


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_adamw_huge_gradient(backend):
    """g = 1e20: g² overflows float32, (1-β2)·g·g does not; the step is lr·sign(g) as for any g >> eps."""
    if backend == "cpp" and not tx.supported_isas():
        pytest.skip("compiled core not available")
    with tx.use_backend(backend):
        p = np.ones(1, np.float32)
        ops.adamw_step(p, np.full(1, 1e20, np.float32), np.zeros(1, np.float32), np.zeros(1, np.float32), 1, 1e-3,
                       weight_decay=0.0)
    np.testing.assert_allclose(p, 0.999, rtol=1e-6)
