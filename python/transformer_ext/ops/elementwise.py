"""Row-wise and element-wise ops: softmax, layer norm, GELU and ReLU, each with its backward.

On the "cpp" backend the kernels run in C++ (float32, SIMD + OpenMP; see
cpp/kernels/softmax.cpp, layer_norm.cpp, activation.cpp); on "numpy" they are the
reference implementations in ``reference.py``. Arguments are validated here first, with
messages naming the op, the argument and the shapes. The C++ kernels take C-contiguous
buffers: any other layout (a transposed or strided view) is copied first. Outputs are
new arrays, or, with ``out=``, written into a caller's preallocated array and returned
(as NumPy's ufuncs do; a training loop reuses its buffers, and a > 32 MiB fresh array
costs as much in first-touch page faults as the kernel itself). ``out`` must be
C-contiguous, writable, of exactly the result's shape and dtype (float32; float64 too on
the numpy backend, matching the inputs), and must not overlap an input — except that the
forward softmax, GELU and ReLU may write over x (``out=x``; their kernels read each
element before writing it). Zero-size inputs give empty outputs without calling a kernel.

Accuracy of the C++ kernels (float32): exp/tanh/erf come from cpp/kernels/vmath.h
(<= 2.5 ulp each, measured); GELU's tanh form is evaluated as x·σ(2z) (no cancellation in
1 + tanh z for x << 0) and the erf form as x·erfc(−x/√2)/2, so both keep relative
accuracy in the left tail.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from . import _checks, reference
from ._checks import shape_str

__all__ = [
    "softmax", "softmax_backward", "layer_norm", "layer_norm_backward",
    "gelu", "gelu_backward", "relu", "relu_backward",
]

# Activation codes of tx::Activation (cpp/include/tx/kernels.h; also _core.ACT_*).
_ACT_RELU, _ACT_GELU_TANH, _ACT_GELU_ERF = 1, 2, 3
_GELU_CODES = {"tanh": _ACT_GELU_TANH, "none": _ACT_GELU_ERF}


# --------------------------------------------------------------------------- helpers
def _ret(y, saved, return_saved):
    return (y, saved) if return_saved else y


def _c(a: np.ndarray) -> np.ndarray:
    """C-contiguous and aligned (copies only when needed); keeps 0-D arrays 0-D."""
    if a.flags.c_contiguous and a.flags.aligned:
        return a
    out = np.ascontiguousarray(a)
    if not out.flags.aligned:  # pragma: no cover - only for hand-made misaligned buffers
        out = out.copy()
    return out.reshape(a.shape)


def _check_out(op: str, out, like: np.ndarray, inputs: dict, in_place: str | None = None) -> None:
    """`out` (None: nothing to check) can receive a result of `like`'s shape and dtype, as
    the module docstring says. `inputs` maps argument names to the arrays (None: absent)
    out must not overlap; out may be exactly inputs[in_place] (same buffer, shape, strides)."""
    if out is None:
        return
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{op}: argument 'out' must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != like.dtype:
        raise TypeError(f"{op}: argument 'out' has dtype {out.dtype}; the result is {like.dtype} "
                        f"with shape {shape_str(like.shape)}")
    if out.shape != like.shape:
        raise ValueError(f"{op}: argument 'out' must have the result's shape {shape_str(like.shape)}, "
                         f"got {shape_str(out.shape)}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{op}: argument 'out' must be C-contiguous (the kernels take no strides), got strides "
                         f"{out.strides} for shape {shape_str(out.shape)}")
    if not out.flags.aligned:
        raise ValueError(f"{op}: argument 'out' must be aligned to its 4-byte floats, got a buffer at "
                         f"address {out.ctypes.data:#x}")
    if not out.flags.writeable:
        raise ValueError(f"{op}: argument 'out' is read-only")
    for name, a in inputs.items():
        if a is None or not np.may_share_memory(out, a):  # may_: a cheap bounds test first
            continue
        if name == in_place and _same_view(out, a):
            continue
        if np.shares_memory(out, a):
            allowed = f" (only out={in_place} itself is allowed)" if in_place else ""
            raise ValueError(f"{op}: argument 'out' overlaps the memory of '{name}'{allowed}; the kernel "
                             "would read values it has already overwritten")


def _or_new(out, shape) -> np.ndarray:
    """The cpp backend's output array: out, or a new float32 one."""
    return np.empty(shape, np.float32) if out is None else out


def _same_view(a: np.ndarray, b: np.ndarray) -> bool:
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.shape == b.shape and a.strides == b.strides)


def _into(out, y: np.ndarray) -> np.ndarray:
    """The numpy backend's result y, copied into out when one was given."""
    if out is None:
        return y
    np.copyto(out, y)
    return out


def _rows(a: np.ndarray) -> np.ndarray:
    """(..., n) C-contiguous, viewed as (rows, n)."""
    n = a.shape[-1]
    return _c(a).reshape(-1, n) if n else np.empty((int(np.prod(a.shape[:-1], dtype=np.int64)), 0), a.dtype)


def _same_shape(op: str, an: str, a: np.ndarray, bn: str, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{op}: argument '{bn}' must have the shape of '{an}' {shape_str(a.shape)}, got {shape_str(b.shape)}")


def _vector(op: str, name: str, a, n: int, xname: str, x: np.ndarray) -> np.ndarray:
    """A (n,) float vector matching x's last axis."""
    a = _checks.as_float(op, name, a, dtype=x.dtype)
    if a.shape != (n,):
        raise ValueError(
            f"{op}: argument '{name}' must have shape ({n},) to match the last axis of '{xname}' "
            f"{shape_str(x.shape)}, got {shape_str(a.shape)}"
        )
    return a


def _eps(op: str, eps) -> float:
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, numbers.Real):
        raise TypeError(f"{op}: argument 'eps' must be a real number, got {type(eps).__name__} {eps!r}")
    eps = float(eps)
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"{op}: argument 'eps' must be finite and >= 0, got {eps}")
    return eps


def _approximate(op: str, approximate) -> int:
    if not isinstance(approximate, str) or approximate not in _GELU_CODES:
        raise ValueError(f"{op}: approximate must be 'tanh' or 'none', got {approximate!r}")
    return _GELU_CODES[approximate]


def _act_forward(act: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if x.size:
        _checks.core().activation_forward(act, _c(x).reshape(-1), y.reshape(-1))
    return y


def _act_backward(act: int, dy: np.ndarray, x: np.ndarray, dx: np.ndarray) -> np.ndarray:
    if x.size:
        _checks.core().activation_backward(act, _c(dy).reshape(-1), _c(x).reshape(-1), dx.reshape(-1))
    return dx


# --------------------------------------------------------------------------- softmax
def softmax(x, return_saved=False, *, out=None):
    """y = softmax(x) over the last axis: exp(x - max x) / Σ exp(x - max x).

    A row of all -inf gives zeros; NaN (or +inf) in a row makes that row NaN. saved = y.
    out: write y there (may be x itself) and return it."""
    op = "ops.softmax"
    x = _checks.as_float(op, "x", x, min_ndim=1)
    _check_out(op, out, x, {"x": x}, in_place="x")
    if _checks.backend() == "numpy":
        y = _into(out, reference.softmax(x))
        return _ret(y, y, return_saved)
    y = _or_new(out, x.shape)
    if x.size:
        _checks.core().softmax_forward(_rows(x), y.reshape(-1, x.shape[-1]))
    return _ret(y, y, return_saved)


def softmax_backward(dy, x, saved=None, *, out=None):
    """dx = y ⊙ (dy - Σ_j dy_j y_j) over the last axis, y = softmax(x) (= saved when given;
    x may then be None). out: write dx there (no overlap with the inputs) and return it."""
    op = "ops.softmax_backward"
    dy = _checks.as_float(op, "dy", dy, min_ndim=1)
    if saved is None or x is not None:
        x = _checks.as_float(op, "x", x, dtype=dy.dtype)
        _same_shape(op, "dy", dy, "x", x)
    if saved is not None:
        saved = _checks.as_float(op, "saved", saved, dtype=dy.dtype)
        _same_shape(op, "dy", dy, "saved", saved)
    _check_out(op, out, dy, {"dy": dy, "x": x, "saved": saved})
    if _checks.backend() == "numpy":
        return _into(out, reference.softmax_backward(dy, x, saved))
    y = saved if saved is not None else softmax(x)
    dx = _or_new(out, dy.shape)
    if dy.size:
        n = dy.shape[-1]
        _checks.core().softmax_backward(_rows(dy), _rows(y), dx.reshape(-1, n))
    return dx


# --------------------------------------------------------------------------- layer norm
def layer_norm(x, gamma, beta, eps=1e-5, return_saved=False, *, out=None):
    """y = (x - μ)·rstd·γ + β over the last axis; μ = mean, rstd = 1/√(σ² + eps) with the
    biased variance σ². saved = (μ, rstd), each of shape x.shape[:-1]. out: write y there
    (no overlap with the inputs) and return it; μ and rstd are always new arrays."""
    op = "ops.layer_norm"
    x = _checks.as_float(op, "x", x, min_ndim=1)
    n = x.shape[-1]
    gamma = _vector(op, "gamma", gamma, n, "x", x)
    beta = _vector(op, "beta", beta, n, "x", x)
    eps = _eps(op, eps)
    _check_out(op, out, x, {"x": x, "gamma": gamma, "beta": beta})
    if _checks.backend() == "numpy":
        y, saved = reference.layer_norm(x, gamma, beta, eps, return_saved=True)
        return _ret(_into(out, y), saved, return_saved)
    lead = x.shape[:-1]
    y = _or_new(out, x.shape)
    mean = np.empty(lead, np.float32)
    rstd = np.empty(lead, np.float32)
    if n == 0:  # the mean of an empty row is undefined (NumPy: NaN)
        mean.fill(np.nan)
        rstd.fill(np.nan)
    elif x.size:
        _checks.core().layer_norm_forward(
            _rows(x), _c(gamma), _c(beta), eps, y.reshape(-1, n), mean.reshape(-1), rstd.reshape(-1)
        )
    return _ret(y, (mean, rstd), return_saved)


def layer_norm_backward(dy, x, gamma, beta, saved=None, eps=1e-5, *, out=None):
    """(dx, dgamma, dbeta) with x̂ = (x - μ)·rstd, g = dy ⊙ γ:
    dx = rstd·(g - mean(g) - x̂·mean(g ⊙ x̂)), dγ = Σ_rows dy ⊙ x̂, dβ = Σ_rows dy.

    saved = (μ, rstd) from the forward; None recomputes them (beta is only used then).
    dγ, dβ are bit-identical whatever the thread count. out: write dx there (no overlap
    with the inputs) and return it as the first of the three; dγ, dβ are new arrays."""
    op = "ops.layer_norm_backward"
    dy = _checks.as_float(op, "dy", dy, min_ndim=1)
    x = _checks.as_float(op, "x", x, dtype=dy.dtype)
    _same_shape(op, "dy", dy, "x", x)
    n = x.shape[-1]
    gamma = _vector(op, "gamma", gamma, n, "x", x)
    if beta is not None:
        beta = _vector(op, "beta", beta, n, "x", x)
    eps = _eps(op, eps)
    lead = x.shape[:-1]
    if saved is None:
        if beta is None:
            beta = np.zeros(n, x.dtype)
        _, saved = layer_norm(x, gamma, beta, eps, return_saved=True)
    else:
        if not isinstance(saved, (tuple, list)) or len(saved) != 2:
            raise TypeError(f"{op}: argument 'saved' must be the (mean, rstd) pair returned by ops.layer_norm, got {type(saved).__name__}")
        mean, rstd = (_checks.as_float(op, name, a, dtype=x.dtype) for name, a in zip(("saved[0] (mean)", "saved[1] (rstd)"), saved))
        for name, a in (("saved[0] (mean)", mean), ("saved[1] (rstd)", rstd)):
            if a.shape != lead:
                raise ValueError(
                    f"{op}: argument '{name}' must have shape {shape_str(lead)} (x's leading axes, x has shape "
                    f"{shape_str(x.shape)}), got {shape_str(a.shape)}"
                )
        saved = (mean, rstd)
    _check_out(op, out, x, {"dy": dy, "x": x, "gamma": gamma, "beta": beta,
                            "saved[0] (mean)": saved[0], "saved[1] (rstd)": saved[1]})
    if _checks.backend() == "numpy":
        dx, dgamma, dbeta = reference.layer_norm_backward(dy, x, gamma, beta, saved, eps)
        return _into(out, dx), dgamma, dbeta
    mean, rstd = saved
    dx = _or_new(out, x.shape)
    dgamma = np.zeros(n, np.float32)
    dbeta = np.zeros(n, np.float32)
    if x.size:
        _checks.core().layer_norm_backward(
            _rows(dy), _rows(x), _c(gamma), _c(mean).reshape(-1), _c(rstd).reshape(-1),
            dx.reshape(-1, n), dgamma, dbeta,
        )
    return dx, dgamma, dbeta


# --------------------------------------------------------------------------- GELU / ReLU
def gelu(x, approximate="tanh", return_saved=False, *, out=None):
    """"tanh": y = 0.5x(1 + tanh(√(2/π)(x + 0.044715x³)));  "none": y = 0.5x(1 + erf(x/√2)).
    Element-wise, any shape. saved = None. out: write y there (may be x itself) and return it."""
    op = "ops.gelu"
    act = _approximate(op, approximate)
    x = _checks.as_float(op, "x", x)
    _check_out(op, out, x, {"x": x}, in_place="x")
    if _checks.backend() == "numpy":
        return _ret(_into(out, reference.gelu(x, approximate=approximate)), None, return_saved)
    return _ret(_act_forward(act, x, _or_new(out, x.shape)), None, return_saved)


def gelu_backward(dy, x, saved=None, approximate="tanh", *, out=None):
    """dx = dy · gelu'(x): "tanh": 0.5(1+t) + 0.5x(1-t²)√(2/π)(1 + 3·0.044715x²);
    "none": Φ(x) + x·φ(x). out: write dx there (no overlap with dy or x) and return it."""
    op = "ops.gelu_backward"
    act = _approximate(op, approximate)
    dy = _checks.as_float(op, "dy", dy)
    x = _checks.as_float(op, "x", x, dtype=dy.dtype)
    _same_shape(op, "dy", dy, "x", x)
    _check_out(op, out, dy, {"dy": dy, "x": x})
    if _checks.backend() == "numpy":
        return _into(out, reference.gelu_backward(dy, x, saved, approximate=approximate))
    return _act_backward(act, dy, x, _or_new(out, x.shape))


def relu(x, return_saved=False, *, out=None):
    """y = max(x, 0) element-wise (NaN propagates). saved = None. out: write y there (may
    be x itself) and return it."""
    op = "ops.relu"
    x = _checks.as_float(op, "x", x)
    _check_out(op, out, x, {"x": x}, in_place="x")
    if _checks.backend() == "numpy":
        return _ret(_into(out, reference.relu(x)), None, return_saved)
    return _ret(_act_forward(_ACT_RELU, x, _or_new(out, x.shape)), None, return_saved)


def relu_backward(dy, x, saved=None, *, out=None):
    """dx = dy where x > 0, else 0 (0 at x == 0). out: write dx there (no overlap with dy
    or x) and return it."""
    op = "ops.relu_backward"
    dy = _checks.as_float(op, "dy", dy)
    x = _checks.as_float(op, "x", x, dtype=dy.dtype)
    _same_shape(op, "dy", dy, "x", x)
    _check_out(op, out, dy, {"dy": dy, "x": x})
    if _checks.backend() == "numpy":
        return _into(out, reference.relu_backward(dy, x, saved))
    return _act_backward(_ACT_RELU, dy, x, _or_new(out, x.shape))
