"""Scaled dot-product attention: out = softmax(q kᵀ/√d_k + mask) v, and its backward.

On the cpp backend this is one flash-style kernel call (FlashAttention-2 tiling and
online softmax): the (Tq, Tk) score matrix is never materialised, memory is
O(B·H·T·D). q, k and v are read in place through their strides when their last axis
is unit-stride, so k/v may be slices of a preallocated KV cache, e.g.
``cache_k[:, :, :t]`` — no copy. Masks are normalised to an additive float32 array
(0 / -inf for boolean masks) and broadcast to (B, H, Tq, Tk) with zero strides, so a
(B, Tk) key-padding mask costs B·Tk floats, not B·H·Tq·Tk.

Shapes: q (B, H, Tq, D); k, v (B, H, Tk, D); Tq may differ from Tk (decoding: Tq = 1
against the cache). causal: query i sees key j iff j <= i + (Tk - Tq); it combines
with the mask by AND. mask:
  - bool/int (B, Tk): key padding, True/nonzero = attend;
  - bool/int of another ndim (<= 4): broadcastable to (B, H, Tq, Tk), True = attend;
  - float (any float dtype, <= 4-D): additive, broadcastable to (B, H, Tq, Tk); cast to
    the compute dtype (the mask is not differentiated, so float64 masks are accepted
    on the cpp backend too).
A query row with no key to attend gives output 0, lse -inf and zero gradients.

Attention dropout (training): dropout_p = p > 0 with an integer ``seed`` in [0, 2**64)
gives out = (P ⊙ M/(1−p)) v, P = softmax(q kᵀ/√d_k + mask), with the keep mask
M[b,h,i,j] a counter-based hash of (seed, b, h, i, j) (reference.attention_dropout_mask;
P(keep) = 1 − p). The kernel recomputes M per tile, so dropout costs no O(Tq·Tk) memory;
attention_backward with the same (dropout_p, seed) sees the same mask, and both backends
draw identical masks. lse stays the log-sum-exp of the undropped scores.
"""
from __future__ import annotations

import numpy as np

from . import _checks, reference
from ._checks import shape_str

_OP = "ops.attention"
_OP_BWD = "ops.attention_backward"


# --------------------------------------------------------------------------- validation
def _check_qkv(op, q, k, v):
    """q (B,H,Tq,D), k and v (B,H,Tk,D), one float dtype. Returns the arrays."""
    q = _checks.as_float(op, "q", q, ndim=4)
    k = _checks.as_float(op, "k", k, ndim=4, dtype=q.dtype)
    v = _checks.as_float(op, "v", v, ndim=4, dtype=q.dtype)
    B, H, _, D = q.shape
    if k.shape[0] != B or k.shape[1] != H or k.shape[3] != D:
        raise ValueError(
            f"{op}: q has shape {shape_str(q.shape)} (B, H, Tq, D) but k has shape {shape_str(k.shape)}; "
            f"expected k of shape ({B}, {H}, Tk, {D})"
        )
    if v.shape != k.shape:
        raise ValueError(
            f"{op}: v must have the shape of k, got k {shape_str(k.shape)} and v {shape_str(v.shape)}"
        )
    return q, k, v


def _check_mask(op, mask, B, H, Tq, Tk):
    """Validate `mask` (see the module docstring); returns it as an ndarray or None."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    kind = mask.dtype.kind
    if kind not in "biuf":
        raise TypeError(
            f"{op}: argument 'mask' must be a bool, integer or float array, got dtype {mask.dtype} "
            f"with shape {shape_str(mask.shape)}"
        )
    target = (B, H, Tq, Tk)
    if kind in "biu" and mask.ndim == 2:
        if mask.shape != (B, Tk):
            raise ValueError(
                f"{op}: a 2-D boolean/integer mask is a key-padding mask of shape (B, Tk) = "
                f"{shape_str((B, Tk))}, got shape {shape_str(mask.shape)}"
            )
        return mask
    ok = mask.ndim <= 4 and all(m in (1, t) for m, t in zip(mask.shape[::-1], target[::-1]))
    if not ok:
        raise ValueError(
            f"{op}: argument 'mask' of shape {shape_str(mask.shape)} is not broadcastable to "
            f"(B, H, Tq, Tk) = {shape_str(target)}"
        )
    return mask


def _check_saved(op, saved, q):
    if not (isinstance(saved, (tuple, list)) and len(saved) == 2):
        raise TypeError(f"{op}: 'saved' must be the (out, lse) pair returned by attention(..., return_saved=True) or None")
    out = _checks.as_float(op, "saved[0] (out)", saved[0], ndim=4, dtype=q.dtype)
    lse = _checks.as_float(op, "saved[1] (lse)", saved[1], ndim=3, dtype=q.dtype)
    if out.shape != q.shape:
        raise ValueError(f"{op}: saved out has shape {shape_str(out.shape)} but q has shape {shape_str(q.shape)}")
    if lse.shape != q.shape[:3]:
        raise ValueError(
            f"{op}: saved lse has shape {shape_str(lse.shape)}; expected (B, H, Tq) = {shape_str(q.shape[:3])}"
        )
    return out, lse


def _check_dropout(op, dropout_p, seed):
    """dropout_p in [0, 1) as a float; seed an int in [0, 2**64) (required when p > 0,
    ignored when p == 0). Returns (p, seed) with seed None when p == 0."""
    if isinstance(dropout_p, (bool, np.bool_)) or not isinstance(dropout_p, (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: argument 'dropout_p' must be a number in [0, 1), got {type(dropout_p).__name__}")
    p = float(dropout_p)
    if not 0.0 <= p < 1.0 or float(np.float32(p)) >= 1.0:
        raise ValueError(f"{op}: argument 'dropout_p' must be in [0, 1), got {p}")
    if p == 0.0:
        return 0.0, None
    if seed is None:
        raise ValueError(
            f"{op}: dropout_p={p} needs a seed (an int in [0, 2**64)); "
            "pass the same seed to ops.attention and ops.attention_backward"
        )
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{op}: argument 'seed' must be an int in [0, 2**64), got {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed < 1 << 64:
        raise ValueError(f"{op}: argument 'seed' must be in [0, 2**64), got {seed}")
    return p, seed


# --------------------------------------------------------------------------- cpp helpers
def _in_place(a: np.ndarray) -> np.ndarray:
    """`a` itself when the kernel can read it through its strides (aligned, element
    strides, unit-stride last axis), else a C-contiguous copy."""
    if (
        a.flags.aligned
        and all(s % a.itemsize == 0 for s in a.strides)
        and (a.shape[-1] <= 1 or a.strides[-1] == a.itemsize)
    ):
        return a
    return np.ascontiguousarray(a)


def _cpp_mask(mask, B, H, Tq, Tk):
    """The float32 additive mask broadcast (zero-copy) to (B, H, Tq, Tk), or None."""
    if mask is None:
        return None
    add = reference.attention_mask_to_additive(mask, B, H, Tq, Tk, np.float32)
    if not add.flags.aligned or any(s % 4 for s in add.strides):
        add = np.ascontiguousarray(add)
    return np.broadcast_to(add, (B, H, Tq, Tk))


def _cpp_forward(q, k, v, causal, mask, p=0.0, seed=None):
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    out = np.empty((B, H, Tq, D), np.float32)
    lse = np.empty((B, H, Tq), np.float32)
    if B * H * Tq == 0:
        return out, lse
    if D == 0:  # empty head dim: only lse is non-empty (scores are all 0); reference semantics
        return reference.attention(q, k, v, causal=causal, mask=mask, return_saved=True, dropout_p=p, seed=seed)[1]
    if Tk == 0:  # no key at all: every row gets 0 and lse -inf
        out.fill(0.0)
        lse.fill(-np.inf)
        return out, lse
    m = _cpp_mask(mask, B, H, Tq, Tk)
    _checks.core().attention_forward(_in_place(q), _in_place(k), _in_place(v), m, causal, out, lse, p, seed or 0)
    return out, lse


# --------------------------------------------------------------------------- public API
def _check_causal(op, causal) -> bool:
    # bool(), not truthiness: causal="no" or an array is a mistake, not a mode
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"{op}: argument 'causal' must be a bool, got {type(causal).__name__}")
    return bool(causal)


def attention(q, k, v, causal=False, mask=None, return_saved=False, dropout_p=0.0, seed=None):
    """out = softmax(q kᵀ/√d_k + mask) v.  q (B,H,Tq,D); k, v (B,H,Tk,D).

    dropout_p > 0 (with an int seed): attention dropout inside the kernel (see the module
    docstring). Returns out (B,H,Tq,D), or (out, saved) with saved = (out, lse) when
    return_saved; lse (B,H,Tq) is the log-sum-exp of the scaled, masked (undropped)
    scores per row (-inf when the row has no key to attend)."""
    q, k, v = _check_qkv(_OP, q, k, v)
    B, H, Tq, _ = q.shape
    Tk = k.shape[2]
    mask = _check_mask(_OP, mask, B, H, Tq, Tk)
    p, seed = _check_dropout(_OP, dropout_p, seed)
    causal = _check_causal(_OP, causal)
    if _checks.backend() == "numpy":
        return reference.attention(q, k, v, causal=causal, mask=mask, return_saved=return_saved,
                                   dropout_p=p, seed=seed)
    out, lse = _cpp_forward(q, k, v, causal, mask, p, seed)
    return (out, (out, lse)) if return_saved else out


def attention_backward(dout, q, k, v, saved=None, causal=False, mask=None, dropout_p=0.0, seed=None):
    """Gradients (dq, dk, dv) of attention(q, k, v, causal, mask, dropout_p=dropout_p,
    seed=seed) given dout = ∂L/∂out (the same dropout_p and seed as the forward: the
    mask is recomputed from them).

    saved = (out, lse) from attention(..., return_saved=True); None recomputes them."""
    q, k, v = _check_qkv(_OP_BWD, q, k, v)
    dout = _checks.as_float(_OP_BWD, "dout", dout, ndim=4, dtype=q.dtype)
    if dout.shape != q.shape:
        raise ValueError(
            f"{_OP_BWD}: dout has shape {shape_str(dout.shape)} but the output (shape of q) is {shape_str(q.shape)}"
        )
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    mask = _check_mask(_OP_BWD, mask, B, H, Tq, Tk)
    p, seed = _check_dropout(_OP_BWD, dropout_p, seed)
    causal = _check_causal(_OP_BWD, causal)
    if saved is not None:
        saved = _check_saved(_OP_BWD, saved, q)
    if _checks.backend() == "numpy":
        return reference.attention_backward(dout, q, k, v, saved, causal=causal, mask=mask, dropout_p=p, seed=seed)
    dq = np.zeros((B, H, Tq, D), np.float32)
    dk = np.zeros((B, H, Tk, D), np.float32)
    dv = np.zeros((B, H, Tk, D), np.float32)
    if B * H * Tq * Tk * D == 0:  # empty, or no (query, key) pair: gradients are zero
        return dq, dk, dv
    out, lse = saved if saved is not None else _cpp_forward(q, k, v, causal, mask, p, seed)
    m = _cpp_mask(mask, B, H, Tq, Tk)
    _checks.core().attention_backward(
        _in_place(q), _in_place(k), _in_place(v), m, causal,
        np.ascontiguousarray(out), np.ascontiguousarray(dout), np.ascontiguousarray(lse), dq, dk, dv, p, seed or 0,
    )
    return dq, dk, dv
