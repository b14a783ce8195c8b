"""Linear layers: matmul (y = x·w + b) and the position-wise feed-forward block
(y = act(x·w1 + b1)·w2 + b2), each with its backward.

On the cpp backend every product is one call of the packed GEMM (`_core.gemm`), which
reads transposed operands in place: x·wᵀ for a tied (N, K) table, dy·wᵀ and xᵀ·dy in the
backward are trans_b / trans_a flags, never a transposed copy. x (..., K) is viewed as
(rows, K) without copying whenever its leading axes collapse (a slice of a wider buffer
is fine); w is used in place when its last axis is unit-stride.

Pre-packed weights: `pack_weight(w, transpose_w, dtype="fp32"|"bf16")` returns a
`PackedWeight` (pack once at model load); `matmul` and `feed_forward` (w1/w2) accept it
and call `_core.gemm_packed`, which skips B packing (GEMM) or streams each 32-column
panel once (M <= 16: GEMV/decoding). The backward ops accept it too (they unpack).
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


def _operand(a: np.ndarray, trans: bool):
    """(array, trans) for the GEMM binding: a transposed view (unit stride along its first
    axis, e.g. w.T of a C-contiguous w) is passed as its base with the flag flipped, so the
    kernel reads it in place instead of through a transposing copy (~1 ms per MiB)."""
    if (
        a.ndim == 2
        and a.flags.aligned
        and a.shape[-1] > 1
        and a.strides[-1] != a.itemsize
        and (a.shape[0] <= 1 or a.strides[0] == a.itemsize)
    ):
        return a.T, not trans
    return _unit_last(a), trans


def _rows(a: np.ndarray) -> np.ndarray:
    """(..., n) -> (rows, n): a view when possible (see _checks.rows_view)."""
    return _unit_last(_checks.rows_view(a))


def _check_linear(op, x, w, b, transpose_w, xname="x", wname="w", bname="b"):
    """Validate x (..., K), w (K, N) [or (N, K) with transpose_w] or a PackedWeight of
    (K, N), b (N,) or None. Returns (x, w, b, N) as arrays (w stays a PackedWeight)."""
    x = _checks.as_float(op, xname, x, min_ndim=1)
    K = x.shape[-1]
    if isinstance(w, PackedWeight):
        if transpose_w:
            raise ValueError(
                f"{op}: {wname} is a PackedWeight (K={w.K}, N={w.N}): its orientation was fixed by "
                f"pack_weight(..., transpose_w=...); call with transpose_w=False"
            )
        Kw, N = w.K, w.N
        wshape = f"PackedWeight(K={w.K}, N={w.N}, dtype={w.dtype!r})"
    else:
        w = _checks.as_float(op, wname, w, ndim=2, dtype=x.dtype)
        Kw, N = (w.shape[1], w.shape[0]) if transpose_w else w.shape
        wshape = f"shape {shape_str(w.shape)}"
    if Kw != K:
        want = f"(N, {K}) with transpose_w=True" if transpose_w else f"({K}, N)"
        raise ValueError(
            f"{op}: {xname} has shape {shape_str(x.shape)} (K={K}) but {wname} has {wshape}; "
            f"expected {wname} of shape {want}"
        )
    if b is not None:
        b = _checks.as_float(op, bname, b, dtype=x.dtype)
        if b.shape != (N,):
            raise ValueError(
                f"{op}: {bname} must have shape ({N},) to match {wname} of {wshape}, "
                f"got {shape_str(b.shape)}"
            )
    return x, w, b, N


def _dense(w, dtype):
    """A weight as a dense (K, N) array for the NumPy reference / the backward passes:
    a PackedWeight is unpacked (bf16: its rounded values, exactly)."""
    return w.unpack().astype(dtype, copy=False) if isinstance(w, PackedWeight) else w


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
    (a, trans_a), (b, trans_b) = _operand(a, trans_a), _operand(b, trans_b)
    _checks.core().gemm(a, b, bias, c, trans_a, trans_b, False)
    return c


def _gemm_into(out, a, b, m, n, trans_a=False, trans_b=False):
    """out += op(a)·op(b) in place when the kernel can write out (out None: a new array)."""
    if out is None or not _checks.can_add_into(out, (m, n)):
        c = _gemm(a, b, None, m, n, trans_a, trans_b)
        if out is None:
            return c
        out += c
        return out
    if out.size and a.size:
        (a, trans_a), (b, trans_b) = _operand(a, trans_a), _operand(b, trans_b)
        _checks.core().gemm(a, b, None, out, trans_a, trans_b, True)
    return out


def _sum_rows(x2, out=None):
    """Σ_rows x2, or out += Σ_rows x2 in place."""
    if out is not None and not _checks.can_add_into(out, (x2.shape[1],)):
        out += _sum_rows(x2)
        return out
    accumulate = out is not None
    if out is None:
        out = np.zeros(x2.shape[1], np.float32)
    if x2.size:
        _checks.core().sum_rows(x2, out, accumulate)
    return out


def _linear_backward_2d(dy2, x2, w, with_bias, transpose_w, dw_into=None, db_into=None):
    """The three products of a linear layer's backward on 2-D rows (cpp backend):
    dx = dy·wᵀ (w (K, N): trans_b) or dy·w (w (N, K)); dw = xᵀ·dy (trans_a), or dyᵀ·x
    (trans_a) directly in w's (N, K) layout; db = Σ_rows dy. dw / db are added into
    dw_into / db_into when given (the GEMM accumulates in place: no temporary, no extra pass)."""
    M, K = x2.shape
    N = dy2.shape[1]
    dx2 = _gemm(dy2, w, None, M, K, trans_b=not transpose_w)
    if transpose_w:
        dw = _gemm_into(dw_into, dy2, x2, N, K, trans_a=True)
    else:
        dw = _gemm_into(dw_into, x2, dy2, K, N, trans_a=True)
    db = _sum_rows(dy2, db_into) if with_bias else None
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


# --------------------------------------------------------------------------- packed weights
_PACK_DTYPES = {"fp32": 0, "bf16": 1}
_PW = 32  # panel width (columns); the same for every ISA variant


def _bf16_round_bits(w32: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns (uint16), round to nearest, ties to even; NaN stays a
    quiet NaN. The same rule as the C++ packer (f32_to_bf16 in gemm.cpp)."""
    u = np.ascontiguousarray(w32, np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    r[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return r


def bf16_round(w) -> np.ndarray:
    """The float32 values a bf16 PackedWeight holds for w: round to nearest even to 8
    significant bits (relative error <= 2^-8 = the bf16 unit roundoff for normal values)."""
    bits = _bf16_round_bits(np.asarray(w, np.float32))
    return (bits.astype(np.uint32) << 16).view(np.float32).reshape(np.shape(w))


def _pack_numpy(wk: np.ndarray, code: int) -> np.ndarray:
    """The packed layout in NumPy (the numpy backend and the test oracle); wk is (K, N)."""
    K, N = wk.shape
    P = -(-N // _PW)
    if code == 0:
        pad = np.zeros((K, P * _PW), np.float32)
        pad[:, :N] = wk
        return np.ascontiguousarray(pad.reshape(K, P, _PW).transpose(1, 0, 2)).reshape(-1)
    K2 = -(-K // 2)
    pad = np.zeros((2 * K2, P * _PW), np.uint16)
    pad[:K, :N] = _bf16_round_bits(wk)
    # [p][r][j][h] = bits[2r + h, 32p + j]
    return np.ascontiguousarray(pad.reshape(K2, 2, P, _PW).transpose(2, 0, 3, 1)).reshape(-1)


class PackedWeight:
    """A weight (K, N) packed once (at model load) for `matmul` / `feed_forward`.

    Layout ("panel32", identical for every ISA variant): 32-column panels, each stored
    k-major — fp32: panel p holds w[k, 32p:32p+32] for k = 0..K-1; bf16: panel p holds,
    for each pair of rows r, the uint16 pairs (w[2r, j], w[2r+1, j]) for its 32 columns.
    Zero padding past N (and past K for odd K in bf16). The same buffer feeds the GEMM
    micro-kernel (no B packing per call) and the skinny/GEMV path (each panel streamed
    once, contiguously).

    bf16: weights rounded to nearest even (8 significant bits, relative error <= 2^-8 = the bf16 unit roundoff);
    activations stay float32 and products accumulate in float32, so the result equals
    matmul(x, bf16_round(w)) exactly on the cpp backend.

    Attributes: data (a read-only view of the 1-D float32 or uint16 buffer; the array
    passed in stays as it was), K, N, dtype ("fp32" / "bf16"), layout. Picklable; copies
    share the buffer.
    """

    __slots__ = ("data", "K", "N", "dtype", "layout")
    LAYOUT = "panel32"

    def __init__(self, data, K, N, dtype, layout=LAYOUT):
        if dtype not in _PACK_DTYPES:
            raise ValueError(f"PackedWeight: dtype must be one of {tuple(_PACK_DTYPES)}, got {dtype!r}")
        if layout != self.LAYOUT:
            raise ValueError(f"PackedWeight: unknown layout {layout!r} (this version reads {self.LAYOUT!r})")
        K, N = int(K), int(N)
        want_dtype = np.float32 if dtype == "fp32" else np.uint16
        data = np.ascontiguousarray(data)
        P = -(-N // _PW)
        n = P * K * _PW if dtype == "fp32" else P * (-(-K // 2)) * 2 * _PW
        if K < 0 or N < 0 or data.dtype != want_dtype or data.shape != (n,):
            raise ValueError(
                f"PackedWeight: data must be a ({n},) {np.dtype(want_dtype).name} buffer for K={K}, N={N}, "
                f"dtype={dtype!r}; got {data.dtype} with shape {shape_str(data.shape)}"
            )
        if data.flags.writeable:  # read-only through this object, without changing the caller's array
            data = data.view()
            data.setflags(write=False)
        self.data, self.K, self.N, self.dtype, self.layout = data, K, N, dtype, layout

    def __getstate__(self):
        return (self.data, self.K, self.N, self.dtype, self.layout)

    def __setstate__(self, state):
        data, K, N, dtype, layout = state
        PackedWeight.__init__(self, data, K, N, dtype, layout)

    @property
    def shape(self):
        return (self.K, self.N)

    @property
    def nbytes(self):
        return self.data.nbytes

    def unpack(self) -> np.ndarray:
        """The (K, N) float32 weight this buffer represents (bf16: the rounded values)."""
        K, N, P = self.K, self.N, -(-self.N // _PW)
        if self.dtype == "fp32":
            return np.ascontiguousarray(self.data.reshape(P, K, _PW).transpose(1, 0, 2).reshape(K, P * _PW)[:, :N])
        K2 = -(-K // 2)
        u = self.data.reshape(P, K2, _PW, 2).transpose(1, 3, 0, 2).reshape(2 * K2, P * _PW)[:K, :N]
        return (u.astype(np.uint32) << 16).view(np.float32)

    def __repr__(self):
        return f"PackedWeight(K={self.K}, N={self.N}, dtype={self.dtype!r}, layout={self.layout!r}, nbytes={self.nbytes})"


def pack_weight(w, transpose_w=False, dtype="fp32"):
    """Pack a weight once for repeated `matmul(x, packed)`: w (K, N), or (N, K) used as
    wᵀ when transpose_w. dtype "fp32" (bit-identical results to the unpacked matmul of
    the same (K, N) weight) or "bf16" (weights rounded to nearest even; see PackedWeight)."""
    op = "ops.pack_weight"
    if dtype not in _PACK_DTYPES:
        raise ValueError(f"{op}: dtype must be one of {tuple(_PACK_DTYPES)}, got {dtype!r}")
    w = _checks.as_float(op, "w", w, ndim=2)
    K, N = (w.shape[1], w.shape[0]) if transpose_w else w.shape
    code = _PACK_DTYPES[dtype]
    if _checks.backend() == "cpp" and w.size:
        data = _checks.core().pack_weight(_unit_last(w), bool(transpose_w), code)
    else:
        wk = (w.T if transpose_w else w).astype(np.float32)
        data = _pack_numpy(wk, code)
    return PackedWeight(data, K, N, dtype)


def _gemm_w(a, w, bias, m, n):
    """a·w [+ bias] for a dense (K, N) w or a PackedWeight (cpp backend)."""
    if not isinstance(w, PackedWeight):
        return _gemm(a, w, bias, m, n)
    c = np.empty((m, n), np.float32)
    if c.size == 0:
        return c
    if w.K == 0:
        c[...] = 0.0 if bias is None else bias
        return c
    _checks.core().gemm_packed(_unit_last(a), w.data, w.K, w.N, _PACK_DTYPES[w.dtype], bias, c, False)
    return c


# --------------------------------------------------------------------------- matmul
def matmul(x, w, b=None, transpose_w=False, return_saved=False):
    """y = x·w + b for x (..., K), w (K, N) — or w (N, K) used as wᵀ when transpose_w
    (read in place, never copied) — and b (N,) or None. Returns y (..., N);
    with return_saved, (y, None)."""
    op = "ops.matmul"
    x, w, b, N = _check_linear(op, x, w, b, transpose_w)
    if _checks.backend() == "numpy":
        return reference.matmul(x, _dense(w, x.dtype), b, transpose_w=transpose_w, return_saved=return_saved)
    x2 = _rows(x)
    bias = None if b is None else np.ascontiguousarray(b)
    if isinstance(w, PackedWeight):
        y = _gemm_w(x2, w, bias, x2.shape[0], N).reshape(x.shape[:-1] + (N,))
    else:
        y = _gemm(x2, w, bias, x2.shape[0], N, trans_b=transpose_w).reshape(x.shape[:-1] + (N,))
    return (y, None) if return_saved else y


def matmul_backward(dy, x, w, b=None, saved=None, transpose_w=False, grads_into=None):
    """Gradients of y = x·w + b: returns (dx, dw, db) with dx = dy·wᵀ (x's shape),
    dw = xᵀ·dy in w's layout ((N, K) when transpose_w: dyᵀ·x), db = Σ_rows dy (None
    when b is None). grads_into=(gw, gb) (either may be None): dw / db are ADDED into these
    arrays in place and returned as them — a layer's gradient accumulation without a
    temporary (on the cpp backend the GEMM accumulates directly into a C-contiguous float32 gw)."""
    op = "ops.matmul_backward"
    x, w, b, N = _check_linear(op, x, w, b, transpose_w)
    w = _dense(w, x.dtype)  # a PackedWeight: gradients w.r.t. the (K, N) weight it holds
    dy = _check_grad(op, "dy", dy, x.shape[:-1] + (N,), x.dtype, "matmul(x, w)")
    gw, gb = _checks.grads_into(op, grads_into, (w.shape, None if b is None else b.shape),
                                {"dy": dy, "x": x, "w": w, "b": b})
    if _checks.backend() == "numpy":
        dx, dw, db = reference.matmul_backward(dy, x, w, b, saved, transpose_w=transpose_w)
        dw, db = _checks.add_into((gw, gb), (dw, db))
        return dx, dw, db
    dx2, dw, db = _linear_backward_2d(_rows(dy), _rows(x), w, b is not None, transpose_w, gw, gb)
    return dx2.reshape(x.shape), dw, db


# --------------------------------------------------------------------------- feed-forward
def _check_ffn(op, x, w1, b1, w2, b2, activation):
    code = _activation_code(op, activation)
    x, w1, b1, d_ff = _check_linear(op, x, w1, b1, False, wname="w1", bname="b1")
    if isinstance(w2, PackedWeight):
        w2_shape, w2_desc = w2.shape, f"PackedWeight(K={w2.K}, N={w2.N}, dtype={w2.dtype!r})"
    else:
        w2 = _checks.as_float(op, "w2", w2, ndim=2, dtype=x.dtype)
        w2_shape, w2_desc = w2.shape, f"shape {shape_str(w2.shape)}"
    if w2_shape[0] != d_ff:
        raise ValueError(
            f"{op}: w1 has shape {shape_str(tuple(w1.shape))} (d_ff={d_ff}) but w2 has {w2_desc}; "
            f"expected w2 of shape ({d_ff}, d_out)"
        )
    d_out = w2_shape[1]
    if b2 is not None:
        b2 = _checks.as_float(op, "b2", b2, dtype=x.dtype)
        if b2.shape != (d_out,):
            raise ValueError(
                f"{op}: b2 must have shape ({d_out},) to match w2 of {w2_desc}, "
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
        return reference.feed_forward(
            x, _dense(w1, x.dtype), b1, _dense(w2, x.dtype), b2, activation=activation, return_saved=return_saved
        )
    x2 = _rows(x)
    M = x2.shape[0]
    h2 = _gemm_w(x2, w1, _bias(b1), M, d_ff)
    y = _gemm_w(_act_forward(code, h2), w2, _bias(b2), M, d_out).reshape(x.shape[:-1] + (d_out,))
    if return_saved:
        return y, h2.reshape(x.shape[:-1] + (d_ff,))
    return y


def feed_forward_backward(dy, x, w1, b1, w2, b2, saved=None, activation="gelu", grads_into=None):
    """Gradients of feed_forward: returns (dx, dw1, db1, dw2, db2) (db* None when the
    bias is None). saved = h from the forward (None: recomputed). grads_into=(gw1, gb1, gw2,
    gb2) (entries may be None): the parameter gradients are ADDED into these arrays in place
    and returned as them (see matmul_backward)."""
    op = "ops.feed_forward_backward"
    code, x, w1, b1, w2, b2, d_ff, d_out = _check_ffn(op, x, w1, b1, w2, b2, activation)
    w1, w2 = _dense(w1, x.dtype), _dense(w2, x.dtype)  # PackedWeight: gradients w.r.t. the weights it holds
    dy = _check_grad(op, "dy", dy, x.shape[:-1] + (d_out,), x.dtype, "feed_forward(x, ...)")
    if saved is not None:
        saved = _check_grad(op, "saved", saved, x.shape[:-1] + (d_ff,), x.dtype, "h = x·w1 + b1")
    into = _checks.grads_into(op, grads_into, (w1.shape, None if b1 is None else b1.shape,
                                              w2.shape, None if b2 is None else b2.shape),
                              {"dy": dy, "x": x, "w1": w1, "b1": b1, "w2": w2, "b2": b2, "saved": saved})
    if _checks.backend() == "numpy":
        dx, *grads = reference.feed_forward_backward(dy, x, w1, b1, w2, b2, saved, activation=activation)
        return (dx, *_checks.add_into(into, grads))
    x2 = _rows(x)
    dy2 = _rows(dy)
    M = x2.shape[0]
    h2 = _gemm(x2, w1, _bias(b1), M, d_ff) if saved is None else np.ascontiguousarray(saved).reshape(M, d_ff)
    a2 = _act_forward(code, h2)
    da2, dw2, db2 = _linear_backward_2d(dy2, a2, w2, b2 is not None, False, into[2], into[3])
    dh2 = _act_backward(code, da2, h2)
    dx2, dw1, db1 = _linear_backward_2d(dh2, x2, w1, b1 is not None, False, into[0], into[1])
    return dx2.reshape(x.shape), dw1, db1, dw2, db2
