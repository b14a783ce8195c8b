"""`grads_into` of matmul_backward / feed_forward_backward / embedding_backward: the parameter
gradients are ADDED into the given arrays in place (the layers pass their gradient views, so
no temporary and no extra pass) — equal to `target + gradient`, on both backends, whatever the
target's layout; bad targets raise."""
import numpy as np
import pytest

import transformer_ext as tx
from transformer_ext import ops


def _f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _check(got, start, grad, target):
    assert got is target  # the target itself comes back
    # one extra rounding: the kernel's chain starts at the target (a float32 ulp of |start| + |grad|)
    np.testing.assert_allclose(got, start + grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("transpose_w", [False, True])
@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_matmul_backward_adds_into(backend, transpose_w, rng):
    x, dy = _f32(rng, 2, 9, 17), _f32(rng, 2, 9, 33)
    w = _f32(rng, 33, 17) if transpose_w else _f32(rng, 17, 33)
    b = _f32(rng, 33)
    with tx.use_backend(backend):
        dx, dw, db = ops.matmul_backward(dy, x, w, b, transpose_w=transpose_w)
        gw0, gb0 = _f32(rng, *w.shape), _f32(rng, 33)
        gw, gb = gw0.copy(), gb0.copy()
        dx2, dw2, db2 = ops.matmul_backward(dy, x, w, b, transpose_w=transpose_w, grads_into=(gw, gb))
        np.testing.assert_array_equal(dx2, dx)
        _check(dw2, gw0, dw, gw)
        _check(db2, gb0, db, gb)
        # a strided target (not C-contiguous) takes the temporary path with the same result
        big = np.zeros((w.shape[0], 2 * w.shape[1]), np.float32)
        view = big[:, ::2]
        view[...] = gw0
        _check(ops.matmul_backward(dy, x, w, b, transpose_w=transpose_w, grads_into=(view, None))[1], gw0, dw, view)
        # only the bias
        gb = gb0.copy()
        _, dw3, db3 = ops.matmul_backward(dy, x, w, b, transpose_w=transpose_w, grads_into=(None, gb))
        np.testing.assert_array_equal(dw3, dw)
        _check(db3, gb0, db, gb)


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_feed_forward_backward_adds_into(backend, rng):
    x, dy = _f32(rng, 7, 16), _f32(rng, 7, 16)
    w1, b1, w2, b2 = _f32(rng, 16, 40), _f32(rng, 40), _f32(rng, 40, 16), _f32(rng, 16)
    with tx.use_backend(backend):
        ref = ops.feed_forward_backward(dy, x, w1, b1, w2, b2)
        starts = [_f32(rng, *a.shape) for a in (w1, b1, w2, b2)]
        targets = [s.copy() for s in starts]
        got = ops.feed_forward_backward(dy, x, w1, b1, w2, b2, grads_into=tuple(targets))
        np.testing.assert_array_equal(got[0], ref[0])
        for g, s, r, t in zip(got[1:], starts, ref[1:], targets):
            _check(g, s, r, t)


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_embedding_backward_adds_into(backend, rng):
    ids = np.array([[1, 4, 1], [0, 4, 4]])
    table, dy = _f32(rng, 6, 8), _f32(rng, 2, 3, 8)
    with tx.use_backend(backend):
        ref = ops.embedding_backward(dy, ids, table)
        g0 = _f32(rng, 6, 8)
        g = g0.copy()
        _check(ops.embedding_backward(dy, ids, table, grads_into=(g,)), g0, ref, g)


def test_bad_grads_into(rng):
    x, dy, w = _f32(rng, 3, 4), _f32(rng, 3, 5), _f32(rng, 4, 5)
    with pytest.raises(TypeError, match="ops.matmul_backward: grads_into must be a tuple of 2"):
        ops.matmul_backward(dy, x, w, grads_into=np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match="grads_into has an array for a bias that is None"):
        ops.matmul_backward(dy, x, w, grads_into=(None, np.zeros(5, np.float32)))
    with pytest.raises(ValueError, match=r"shapes \['\(4, 5\)', None\], got \(5, 4\)"):
        ops.matmul_backward(dy, x, w, grads_into=(np.zeros((5, 4), np.float32), None))
    with pytest.raises(TypeError, match="ops.embedding_backward: grads_into must be a tuple of 1"):
        ops.embedding_backward(_f32(rng, 2, 5), np.array([0, 1]), w, grads_into=[])


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_grads_into_overlapping_an_input_is_refused(backend, rng):
    """The kernels add into a target while they still read the inputs: a target sharing
    memory with one (or with another target) would give wrong gradients silently."""
    n = 8
    x, w, w2, dy = _f32(rng, n, n), _f32(rng, n, n), _f32(rng, n, n), _f32(rng, n, n)
    b, g = _f32(rng, n), np.zeros((n, n), np.float32)
    with tx.use_backend(backend):
        with pytest.raises(ValueError, match=r"grads_into\[0\] overlaps the memory of 'x'"):
            ops.matmul_backward(dy, x, w, grads_into=(x, None))
        with pytest.raises(ValueError, match=r"grads_into\[1\] overlaps the memory of 'dy'"):
            ops.matmul_backward(dy, x, w, b, grads_into=(None, dy[0]))
        with pytest.raises(ValueError, match=r"grads_into\[0\] and grads_into\[1\] overlap"):
            ops.matmul_backward(dy, x, w, b, grads_into=(g, g[2]))
        with pytest.raises(ValueError, match=r"grads_into\[2\] overlaps the memory of 'w1'"):
            ops.feed_forward_backward(dy, x, w, None, w2, None, grads_into=(None, None, w, None))
        with pytest.raises(ValueError, match=r"grads_into\[0\] overlaps the memory of 'dy'"):
            ops.embedding_backward(dy, np.arange(n), x, grads_into=(dy,))
        # disjoint views of one buffer are fine
        buf = np.zeros((2, n, n), np.float32)
        buf[0] = x
        ref = ops.matmul_backward(dy, x, w)[1]
        np.testing.assert_allclose(ops.matmul_backward(dy, buf[0], w, grads_into=(buf[1], None))[1], ref,
                                   rtol=1e-6, atol=1e-6)
