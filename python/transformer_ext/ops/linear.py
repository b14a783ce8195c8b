"""Linear layers: matmul (y = x·w + b) and the position-wise feed-forward block
(y = act(x·w1 + b1)·w2 + b2), each with its backward.

On the cpp backend every product is one call of the packed GEMM (`_core.gemm`), which
reads transposed operands in place: x·wᵀ for a tied (N, K) table, dy·wᵀ and xᵀ·dy in the
backward are trans_b / trans_a flags, never a transposed copy. x (..., K) is viewed as
(rows, K) without copying whenever its leading axes collapse (a slice of a wider buffer
is fine); w is used in place when its last axis is unit-stride.
"""
from __future__ import annotations

import numpy as np

from . import _checks, reference
from ._checks import shape_str

# activation name -> (kernel code from tx/kernels.h, reference implementation)
_ACT_RELU, _ACT_GELU_TANH, _ACT_GELU_ERF = 1, 2, 3
_ACTIVATIONS = {
    "gelu": _ACT_GELU_TANH,
    "gelu_tanh": _ACT_GELU_TANH,
    "gelu_erf": _ACT_GELU_ERF,
    "relu": _ACT_RELU,
}


# --------------------------------------------------------------------------- helpers
def _unit_last(a: np.ndarray) -> np.ndarray:
    """`a` itself when the kernel can read it in place (aligned, unit-stride last axis),
    else a C-contiguous copy."""
    if a.flags.aligned and (a.shape[-1] <= 1 or a.strides[-1] == a.itemsize):
        return a
    return np.ascontiguousarray(a)


def _rows(a: np.ndarray) -> np.ndarray:
    """(..., n) -> (rows, n): a view when possible (see _checks.rows_view)."""
    return _unit_last(_checks.rows_view(a))


def _check_linear(op, x, w, b, transpose_w, xname="x", wname="w", bname="b"):
    """Validate x (..., K), w (K, N) [or (N, K) with transpose_w], b (N,) or None.
    Returns (x, w, b, N) as arrays."""
    x = _checks.as_float(op, xname, x, min_ndim=1)
    w = _checks.as_float(op, wname, w, ndim=2, dtype=x.dtype)
    K = x.shape[-1]
    Kw, N = (w.shape[1], w.shape[0]) if transpose_w else w.shape
    if Kw != K:
        want = f"(N, {K}) with transpose_w=True" if transpose_w else f"({K}, N)"
        raise ValueError(
            f"{op}: {xname} has shape {shape_str(x.shape)} (K={K}) but {wname} has shape "
            f"{shape_str(w.shape)}; expected {wname} of shape {want}"
        )
    if b is not None:
        b = _checks.as_float(op, bname, b, dtype=x.dtype)
        if b.shape != (N,):
            raise ValueError(
                f"{op}: {bname} must have shape ({N},) to match {wname} of shape {shape_str(w.shape)}, "
                f"got {shape_str(b.shape)}"
            )
    return x, w, b, N


def _check_grad(op, name, g, expected, dtype, what):
    g = _checks.as_float(op, name, g, dtype=dtype)
    if g.shape != tuple(expected):
        raise ValueError(f"{op}: {name} has shape {shape_str(g.shape)} but {what} has shape {shape_str(expected)}")
    return g


def _activation_code(op, activation):
    if activation not in _ACTIVATIONS:
        raise ValueError(f"{op}: activation must be one of {tuple(_ACTIVATIONS)}, got {activation!r}")
    return _ACTIVATIONS[activation]


def _gemm(a, b, bias, m, n, trans_a=False, trans_b=False):
    """op(a)·op(b) [+ bias] as a new (m, n) float32 array. Empty operands are handled
    here (NumPy gives zero-size arrays zero strides, which the binding refuses):
    K = 0 gives bias or zeros."""
    c = np.empty((m, n), np.float32)
    if c.size == 0:
        return c
    if a.size == 0:  # K = 0: an empty sum
        c[...] = 0.0 if bias is None else bias
        return c
    _checks.core().gemm(_unit_last(a), _unit_last(b), bias, c, trans_a, trans_b, False)
    return c


def _sum_rows(x2):
    out = np.zeros(x2.shape[1], np.float32)
    if x2.size:
        _checks.core().sum_rows(x2, out, False)
    return out


def _linear_backward_2d(dy2, x2, w, with_bias, transpose_w):
    """The three products of a linear layer's backward on 2-D rows (cpp backend):
    dx = dy·wᵀ (w (K, N): trans_b) or dy·w (w (N, K)); dw = xᵀ·dy (trans_a), or dyᵀ·x
    (trans_a) directly in w's (N, K) layout; db = Σ_rows dy."""
    M, K = x2.shape
    N = dy2.shape[1]
    dx2 = _gemm(dy2, w, None, M, K, trans_b=not transpose_w)
    if transpose_w:
        dw = _gemm(dy2, x2, None, N, K, trans_a=True)
    else:
        dw = _gemm(x2, dy2, None, K, N, trans_a=True)
    db = _sum_rows(dy2) if with_bias else None
    return dx2, dw, db


def _act_forward(code, h2):
    core = _checks.core()
    if hasattr(core, "activation_forward"):
        a2 = np.empty_like(h2)
        core.activation_forward(code, h2, a2)
        return a2
    if code == _ACT_RELU:  # fallback while the C++ activation kernels are absent
        return reference.relu(h2)
    return reference.gelu(h2, approximate="tanh" if code == _ACT_GELU_TANH else "none")


def _act_backward(code, da2, h2):
    core = _checks.core()
    if hasattr(core, "activation_backward"):
        dh2 = np.empty_like(h2)
        core.activation_backward(code, da2, h2, dh2)
        return dh2
    if code == _ACT_RELU:
        return reference.relu_backward(da2, h2)
    return reference.gelu_backward(da2, h2, approximate="tanh" if code == _ACT_GELU_TANH else "none")


# --------------------------------------------------------------------------- matmul
def matmul(x, w, b=None, transpose_w=False, return_saved=False):
    """y = x·w + b for x (..., K), w (K, N) — or w (N, K) used as wᵀ when transpose_w
    (read in place, never copied) — and b (N,) or None. Returns y (..., N);
    with return_saved, (y, None)."""
    op = "ops.matmul"
    x, w, b, N = _check_linear(op, x, w, b, transpose_w)
    if _checks.backend() == "numpy":
        return reference.matmul(x, w, b, transpose_w=transpose_w, return_saved=return_saved)
    x2 = _rows(x)
    bias = None if b is None else np.ascontiguousarray(b)
    y = _gemm(x2, w, bias, x2.shape[0], N, trans_b=transpose_w).reshape(x.shape[:-1] + (N,))
    return (y, None) if return_saved else y


def matmul_backward(dy, x, w, b=None, saved=None, transpose_w=False):
    """Gradients of y = x·w + b: returns (dx, dw, db) with dx = dy·wᵀ (x's shape),
    dw = xᵀ·dy in w's layout ((N, K) when transpose_w: dyᵀ·x), db = Σ_rows dy (None
    when b is None)."""
    op = "ops.matmul_backward"
    x, w, b, N = _check_linear(op, x, w, b, transpose_w)
    dy = _check_grad(op, "dy", dy, x.shape[:-1] + (N,), x.dtype, "matmul(x, w)")
    if _checks.backend() == "numpy":
        return reference.matmul_backward(dy, x, w, b, saved, transpose_w=transpose_w)
    dx2, dw, db = _linear_backward_2d(_rows(dy), _rows(x), w, b is not None, transpose_w)
    return dx2.reshape(x.shape), dw, db


# --------------------------------------------------------------------------- feed-forward
def _check_ffn(op, x, w1, b1, w2, b2, activation):
    code = _activation_code(op, activation)
    x, w1, b1, d_ff = _check_linear(op, x, w1, b1, False, wname="w1", bname="b1")
    w2 = _checks.as_float(op, "w2", w2, ndim=2, dtype=x.dtype)
    if w2.shape[0] != d_ff:
        raise ValueError(
            f"{op}: w1 has shape {shape_str(w1.shape)} (d_ff={d_ff}) but w2 has shape {shape_str(w2.shape)}; "
            f"expected w2 of shape ({d_ff}, d_out)"
        )
    d_out = w2.shape[1]
    if b2 is not None:
        b2 = _checks.as_float(op, "b2", b2, dtype=x.dtype)
        if b2.shape != (d_out,):
            raise ValueError(
                f"{op}: b2 must have shape ({d_out},) to match w2 of shape {shape_str(w2.shape)}, "
                f"got {shape_str(b2.shape)}"
            )
    return code, x, w1, b1, w2, b2, d_ff, d_out


def _bias(b):
    return None if b is None else np.ascontiguousarray(b)


def feed_forward(x, w1, b1, w2, b2, activation="gelu", return_saved=False):
    """y = act(x·w1 + b1)·w2 + b2 for x (..., d_model), w1 (d_model, d_ff), w2 (d_ff, d_out);
    activation "gelu" (= "gelu_tanh"), "gelu_erf" or "relu"; b1, b2 may be None.
    saved = h = x·w1 + b1 (pre-activation, shape (..., d_ff))."""
    op = "ops.feed_forward"
    code, x, w1, b1, w2, b2, d_ff, d_out = _check_ffn(op, x, w1, b1, w2, b2, activation)
    if _checks.backend() == "numpy":
        return reference.feed_forward(x, w1, b1, w2, b2, activation=activation, return_saved=return_saved)
    x2 = _rows(x)
    M = x2.shape[0]
    h2 = _gemm(x2, w1, _bias(b1), M, d_ff)
    y = _gemm(_act_forward(code, h2), w2, _bias(b2), M, d_out).reshape(x.shape[:-1] + (d_out,))
    if return_saved:
        return y, h2.reshape(x.shape[:-1] + (d_ff,))
    return y


def feed_forward_backward(dy, x, w1, b1, w2, b2, saved=None, activation="gelu"):
    """Gradients of feed_forward: returns (dx, dw1, db1, dw2, db2) (db* None when the
    bias is None). saved = h from the forward (None: recomputed)."""
    op = "ops.feed_forward_backward"
    code, x, w1, b1, w2, b2, d_ff, d_out = _check_ffn(op, x, w1, b1, w2, b2, activation)
    dy = _check_grad(op, "dy", dy, x.shape[:-1] + (d_out,), x.dtype, "feed_forward(x, ...)")
    if saved is not None:
        saved = _check_grad(op, "saved", saved, x.shape[:-1] + (d_ff,), x.dtype, "h = x·w1 + b1")
    if _checks.backend() == "numpy":
        return reference.feed_forward_backward(dy, x, w1, b1, w2, b2, saved, activation=activation)
    x2 = _rows(x)
    dy2 = _rows(dy)
    M = x2.shape[0]
    h2 = _gemm(x2, w1, _bias(b1), M, d_ff) if saved is None else np.ascontiguousarray(saved).reshape(M, d_ff)
    a2 = _act_forward(code, h2)
    da2, dw2, db2 = _linear_backward_2d(dy2, a2, w2, b2 is not None, False)
    dh2 = _act_backward(code, da2, h2)
    dx2, dw1, db1 = _linear_backward_2d(dh2, x2, w1, b1 is not None, False)
    return dx2.reshape(x.shape), dw1, db1, dw2, db2
