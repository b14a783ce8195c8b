"""Training ops: token embedding (+ backward), sinusoidal positions, cross-entropy with
its gradient, and the AdamW update.

On the "cpp" backend the kernels run in C++ (float32); on "numpy" they are the
reference implementations in ``reference.py``. Arguments are validated here first,
with messages naming the op, the argument and the shapes.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from . import _checks, reference
from .elementwise import _check_out, _into  # out= as the element-wise ops take it

__all__ = ["embedding", "embedding_backward", "sinusoidal_positions", "cross_entropy", "adamw_step"]

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def _shape(a) -> str:
    return _checks.shape_str(a.shape)


def _ret(y, saved, return_saved):
    return (y, saved) if return_saved else y


def _int_arg(op: str, name: str, value, *, lo=None) -> int:
    """A Python/NumPy integer (not bool, not float) >= lo."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{op}: argument '{name}' must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if lo is not None and value < lo:
        raise ValueError(f"{op}: argument '{name}' must be >= {lo}, got {value}")
    return value


def _real_arg(op: str, name: str, value, *, lo=None, hi=None, hi_open=False) -> float:
    """A finite real number in [lo, hi] (or [lo, hi) when hi_open)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: argument '{name}' must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{op}: argument '{name}' must be finite, got {value}")
    if (lo is not None and value < lo) or (hi is not None and (value >= hi if hi_open else value > hi)):
        rng = f"[{lo}, {hi})" if hi_open else f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{op}: argument '{name}' must be in {rng}, got {value}")
    return value


# --------------------------------------------------------------------------- embedding
def _ids(op: str, ids, V: int) -> np.ndarray:
    """ids as C-contiguous int64 in [0, V), keeping their shape (also 0-d)."""
    shape = np.shape(ids)
    return _checks.as_ids(op, "ids", ids, V).reshape(shape)


def embedding(ids, table, return_saved=False):
    """out[..., :] = table[ids[...], :] for int ids of any shape and a (V, d) table.

    Ids outside [0, V) raise ValueError. saved = None."""
    op = "ops.embedding"
    table = _checks.as_float(op, "table", table, ndim=2)
    V, d = table.shape
    ids = _ids(op, ids, V)
    if _checks.backend() == "numpy":
        return reference.embedding(ids, table, return_saved=return_saved)
    n = ids.size
    out = np.empty(ids.shape + (d,), dtype=np.float32)
    if n and d:
        _checks.core().embedding_forward(ids.reshape(n), _checks.contiguous(table), out.reshape(n, d))
    return _ret(out, None, return_saved)


def embedding_backward(dy, ids, table, saved=None, grads_into=None):
    """dtable (V, d): dtable[v] = Σ_{positions p with ids[p] == v} dy[p] (repeated ids accumulate).

    dy has shape ids.shape + (d,); table supplies (V, d) and the dtype. grads_into=(g,): the
    scatter adds into g in place (no (V, d) temporary) and g is returned."""
    op = "ops.embedding_backward"
    table = _checks.as_float(op, "table", table, ndim=2)
    dy = _checks.as_float(op, "dy", dy, dtype=table.dtype)
    V, d = table.shape
    ids = _ids(op, ids, V)
    if dy.shape != ids.shape + (d,):
        raise ValueError(
            f"{op}: argument 'dy' has shape {_shape(dy)} but 'ids' has shape {_shape(ids)} and 'table' "
            f"has shape {_shape(table)} (expected dy of shape {_checks.shape_str(ids.shape + (d,))})"
        )
    (into,) = _checks.grads_into(op, grads_into, ((V, d),), {"dy": dy, "ids": ids})
    if _checks.backend() == "numpy":
        return _checks.add_into((into,), (reference.embedding_backward(dy, ids, table, saved),))[0]
    if into is not None and not _checks.can_add_into(into, (V, d)):  # the kernel can't write it: a temporary
        return _checks.add_into((into,), (embedding_backward(dy, ids, table),))[0]
    n = ids.size
    dtable = np.zeros((V, d), dtype=np.float32) if into is None else into
    if n and d:
        _checks.core().embedding_backward(_checks.contiguous(dy).reshape(n, d), ids.reshape(n), dtable)
    return dtable


def sinusoidal_positions(T, d, dtype=np.float32):
    """(T, d) sinusoidal position encodings: PE[pos, 2i] = sin(pos / 10000^(2i/d)),
    PE[pos, 2i+1] = cos(pos / 10000^(2i/d)) (odd d: the last column is the sin of the next pair).

    Computed with NumPy in float64 on both backends (not a hot kernel), cast to dtype."""
    op = "ops.sinusoidal_positions"
    T = _int_arg(op, "T", T, lo=0)
    d = _int_arg(op, "d", d, lo=0)
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{op}: argument 'dtype' is not a NumPy dtype: {dtype!r}") from exc
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"{op}: argument 'dtype' must be float32 or float64, got {dt}")
    return reference.sinusoidal_positions(T, d, dtype=dt)


# --------------------------------------------------------------------------- loss
def cross_entropy(logits, targets, ignore_index=-100, label_smoothing=0.0, reduction="mean", *, out=None):
    """PyTorch's F.cross_entropy over logits (..., V) and integer targets (...).

    Returns (loss, dlogits): loss a Python float ("mean" over non-ignored targets, or
    "sum"), dlogits the gradient of loss w.r.t. logits (same shape). With label smoothing
    ε the target distribution is (1-ε)·onehot(t) + ε/V. Targets equal to ignore_index
    contribute nothing; if every target is ignored, loss is 0.0 and dlogits zeros.
    out: write dlogits there (as ops.softmax's out=); out=logits overwrites the logits in
    place — a training step's logits (GPT-2: 100 MB at B·T = 512) are not needed after it."""
    op = "ops.cross_entropy"
    logits = _checks.as_float(op, "logits", logits, min_ndim=1)
    _check_out(op, out, logits, {"logits": logits}, in_place="logits")
    if not isinstance(targets, np.ndarray):
        targets = np.asarray(targets)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"{op}: argument 'targets' must be an integer array, got dtype {targets.dtype}")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(
            f"{op}: argument 'targets' has shape {_shape(targets)} but 'logits' has shape {_shape(logits)} "
            f"(expected targets of shape logits.shape[:-1] = {_checks.shape_str(logits.shape[:-1])})"
        )
    ignore_index = _int_arg(op, "ignore_index", ignore_index)
    if not _I64_MIN <= ignore_index <= _I64_MAX:
        raise ValueError(f"{op}: argument 'ignore_index' must fit in int64, got {ignore_index}")
    label_smoothing = _real_arg(op, "label_smoothing", label_smoothing, lo=0.0, hi=1.0)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"{op}: argument 'reduction' must be 'mean' or 'sum', got {reduction!r}")
    V = logits.shape[-1]
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= V))
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{op}: argument 'targets' has value {int(targets[where])} at index {where}, out of range "
            f"[0, {V}) and not ignore_index={ignore_index} (targets shape {_shape(targets)})"
        )
    if _checks.backend() == "numpy":
        loss, d = reference.cross_entropy(logits, targets, ignore_index, label_smoothing, reduction)
        return loss, _into(out, d)

    N = targets.size
    t = np.ascontiguousarray(targets, dtype=np.int64).reshape(N)
    count = int(np.count_nonzero(t != ignore_index))
    if count == 0:  # includes N == 0
        if out is None:
            return 0.0, np.zeros(logits.shape, dtype=np.float32)
        out.fill(0)
        return 0.0, out
    grad_scale = 1.0 / count if reduction == "mean" else 1.0
    row_loss = np.empty(N, dtype=np.float32)
    dlogits = np.empty((N, V), dtype=np.float32) if out is None else out.reshape(N, V)
    x = _checks.contiguous(logits).reshape(N, V)
    _checks.core().cross_entropy(x, t, ignore_index, label_smoothing, grad_scale, row_loss, dlogits)
    # Σ of per-row losses in float64, NumPy's fixed pairwise order (independent of threads).
    total = float(np.sum(row_loss, dtype=np.float64))
    loss = total / count if reduction == "mean" else total
    return loss, (dlogits.reshape(logits.shape) if out is None else out)


# --------------------------------------------------------------------------- optimiser
def adamw_step(params, grads, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
    """One torch.optim.AdamW step t (1-based), in place on params, m and v:
    p *= 1 - lr·wd;  m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²;
    p -= (lr / (1-β1^t)) · m / (√v / √(1-β2^t) + eps).

    params, grads, m, v: float arrays of one shape and dtype; params, m and v must be
    C-contiguous, writable and non-overlapping (an update of a copy would be lost).
    Returns None."""
    op = "ops.adamw_step"
    for name, a in (("params", params), ("m", m), ("v", v)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{op}: argument '{name}' must be a NumPy array (updated in place), got {type(a).__name__}")
    params = _checks.as_float(op, "params", params)
    grads = _checks.as_float(op, "grads", grads, dtype=params.dtype)
    m = _checks.as_float(op, "m", m, dtype=params.dtype)
    v = _checks.as_float(op, "v", v, dtype=params.dtype)
    for name, a in (("grads", grads), ("m", m), ("v", v)):
        if a.shape != params.shape:
            raise ValueError(f"{op}: argument '{name}' has shape {_shape(a)} but 'params' has shape {_shape(params)}")
    for name, a in (("params", params), ("m", m), ("v", v)):
        if not a.flags.c_contiguous:
            raise ValueError(
                f"{op}: argument '{name}' (shape {_shape(a)}, strides {a.strides}) must be C-contiguous: "
                "it is updated in place, and an update of a copy would be lost"
            )
        if not a.flags.writeable:
            raise ValueError(f"{op}: argument '{name}' is read-only; it is updated in place")
    bufs = (("params", params), ("m", m), ("v", v), ("grads", grads))
    for i in range(3):
        for j in range(i + 1, 4):
            if bufs[i][1].size and np.may_share_memory(bufs[i][1], bufs[j][1]):
                raise ValueError(f"{op}: arguments '{bufs[i][0]}' and '{bufs[j][0]}' overlap in memory")
    step = _int_arg(op, "step", step, lo=1)
    if step > _I64_MAX:
        raise ValueError(f"{op}: argument 'step' must fit in int64, got {step}")
    lr = _real_arg(op, "lr", lr, lo=0.0)
    beta1 = _real_arg(op, "beta1", beta1, lo=0.0, hi=1.0, hi_open=True)
    beta2 = _real_arg(op, "beta2", beta2, lo=0.0, hi=1.0, hi_open=True)
    eps = _real_arg(op, "eps", eps, lo=0.0)
    weight_decay = _real_arg(op, "weight_decay", weight_decay, lo=0.0)
    if params.size == 0:
        return None
    if _checks.backend() == "numpy":
        return reference.adamw_step(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay)
    _checks.core().adamw_step(params, _checks.contiguous(grads), m, v, step, lr, beta1, beta2, eps, weight_decay)
    return None
