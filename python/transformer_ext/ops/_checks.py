"""Input validation shared by every op: clear exceptions naming the op, the argument
and the shapes — never a crash, never silent garbage.

Rules (the same for every op, documented in docs/api.md):
- Float inputs: the "numpy" backend accepts float32 and float64 (all float arguments of
  one call must agree); the "cpp" backend computes in float32 and *refuses* anything
  else with a TypeError that says how to convert. Integer/bool/object arrays are refused.
- Layout: an array whose last axis is unit-stride is used in place where the kernel
  supports strides (matmul's x, attention's q/k/v: slices of a KV cache are not copied);
  any other layout is copied to C order before the kernel runs.
- Zero-length dimensions give empty results; NaN/inf propagate as IEEE arithmetic says.
"""
from __future__ import annotations

import numpy as np

from .. import _backend

_FLOATS_NUMPY = (np.dtype(np.float32), np.dtype(np.float64))


def shape_str(shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def backend() -> str:
    return _backend.get_backend()


def core():
    return _backend.core


def as_float(op: str, name: str, a, *, ndim=None, min_ndim=None, dtype=None, backend_name=None) -> np.ndarray:
    """Validate a float array argument; returns it as an ndarray (never copies data).

    `dtype`: if given, the array must have exactly this dtype (used to make every float
    argument of one call agree with the first).
    """
    given = type(a)
    if isinstance(a, np.ma.MaskedArray):  # the kernels would read the masked-out values too
        raise TypeError(f"{op}: argument '{name}' is a masked array; pass {name}.filled(value) or the data")
    if type(a) is not np.ndarray:  # lists, scalars; ndarray subclasses (np.matrix) as plain arrays
        if a is None:
            raise TypeError(f"{op}: argument '{name}' is None; expected a float array")
        a = np.asarray(a)
    be = backend_name or backend()
    if a.dtype.kind != "f":
        raise TypeError(f"{op}: argument '{name}' must be a float array, got dtype {a.dtype} with shape {shape_str(a.shape)}")
    if be == "cpp" and a.dtype != np.float32:
        convert = f"{name}.astype(np.float32)" if issubclass(given, np.ndarray) else f"np.asarray({name}, np.float32)"
        raise TypeError(
            f"{op}: argument '{name}' has dtype {a.dtype}; the cpp backend computes in float32 "
            f"(convert with {convert}, or run on the numpy backend: "
            f"tx.use_backend('numpy'), which also accepts float64)"
        )
    if be == "numpy" and a.dtype not in _FLOATS_NUMPY:
        raise TypeError(f"{op}: argument '{name}' has dtype {a.dtype}; expected float32 or float64")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{op}: argument '{name}' has dtype {a.dtype} but the other inputs are {dtype}; pass one float dtype")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{op}: argument '{name}' must be {ndim}-D, got shape {shape_str(a.shape)}")
    if min_ndim is not None and a.ndim < min_ndim:
        raise ValueError(f"{op}: argument '{name}' must have at least {min_ndim} dims, got shape {shape_str(a.shape)}")
    return unit_axis_strides(a)


def unit_axis_strides(a: np.ndarray) -> np.ndarray:
    """`a`, with a whole-element stride on every length-1 axis (a view; `a` itself when
    they already are). NumPy ignores those strides (such an array is C-contiguous and
    "aligned" with a stride of 3 bytes there, e.g. a field of a packed record array), while
    the C++ bindings check every stride."""
    if not any(n == 1 and s % a.itemsize for n, s in zip(a.shape, a.strides)):
        return a
    strides = tuple(a.itemsize * int(np.prod(a.shape[i + 1:])) if n == 1 else s
                    for i, (n, s) in enumerate(zip(a.shape, a.strides)))
    return np.lib.stride_tricks.as_strided(a, strides=strides)


def as_ids(op: str, name: str, a, upper: int) -> np.ndarray:
    """Integer ids in [0, upper); returned as C-contiguous int64."""
    if not isinstance(a, np.ndarray):
        a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{op}: argument '{name}' must be an integer array, got dtype {a.dtype}")
    if a.dtype.kind == "u" and a.size and int(a.max()) >= upper:  # before int64 wraps it
        raise ValueError(f"{op}: argument '{name}' has id {int(a.max())} out of range [0, {upper}) "
                         f"(shape {shape_str(a.shape)})")
    a = np.require(a, dtype=np.int64, requirements='C')  # keeps 0-d arrays 0-d
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= upper:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{op}: argument '{name}' has id {bad} out of range [0, {upper}) (shape {shape_str(a.shape)})")
    return a


def rows_view(a: np.ndarray) -> np.ndarray:
    """`a` as 2-D (rows, last) with a unit-stride last axis: a view when the leading
    axes collapse to one stride (a slice of a larger buffer is fine), else a C copy."""
    n = a.shape[-1] if a.ndim else 1
    r = a.reshape(-1, n) if a.size else np.zeros((int(np.prod(a.shape[:-1], dtype=np.int64)), n), a.dtype)
    if n > 1 and r.strides[1] != r.itemsize:
        r = np.ascontiguousarray(r)
    return r


def contiguous(a: np.ndarray) -> np.ndarray:
    """C-contiguous (copies only when needed); a 0-D array stays 0-D (np.ascontiguousarray
    alone returns it as 1-D)."""
    return np.ascontiguousarray(a).reshape(a.shape)


def check(cond: bool, op: str, msg: str, exc=ValueError) -> None:
    if not cond:
        raise exc(f"{op}: {msg}")


# --------------------------------------------------------------------------- grads_into
def can_add_into(out, shape) -> bool:
    """`out` can receive a kernel's accumulate-in-place (C += ...): float32, C-contiguous, writable."""
    return (isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == tuple(shape)
            and out.flags.c_contiguous and out.flags.writeable)


def grads_into(op, targets, shapes, inputs):
    """A backward's `grads_into` argument: None, or a tuple with one entry per parameter gradient
    the op returns (`shapes`; None for an absent bias) — None or an array of that gradient's shape
    to add it into in place. Returns one entry per shape. `inputs` maps the backward's input
    names to their arrays (None: absent): a target may overlap none of them, nor another
    target — the kernels add into a target while they still read the inputs."""
    if targets is None:
        return (None,) * len(shapes)
    if not isinstance(targets, (tuple, list)) or len(targets) != len(shapes):
        raise TypeError(f"{op}: grads_into must be a tuple of {len(shapes)} arrays or None")
    for i, (g, shape) in enumerate(zip(targets, shapes)):
        if g is None:
            continue
        if shape is None:
            raise ValueError(f"{op}: grads_into has an array for a bias that is None")
        if not isinstance(g, np.ndarray) or g.shape != tuple(shape) or g.dtype.kind != "f":
            raise ValueError(f"{op}: grads_into arrays must be float arrays of shapes "
                             f"{[None if s is None else shape_str(s) for s in shapes]}, got "
                             f"{shape_str(g.shape) if isinstance(g, np.ndarray) else type(g).__name__}")
        for name, a in inputs.items():
            if _overlap(g, a):
                raise ValueError(f"{op}: grads_into[{i}] overlaps the memory of '{name}'; the gradient is "
                                 f"added into it while '{name}' is still being read (pass a separate array)")
        for j in range(i + 1, len(targets)):
            if _overlap(g, targets[j]):
                raise ValueError(f"{op}: grads_into[{i}] and grads_into[{j}] overlap in memory")
    return tuple(targets)


def _overlap(a, b) -> bool:
    # may_share_memory: a cheap bounds test first
    return isinstance(b, np.ndarray) and np.may_share_memory(a, b) and np.shares_memory(a, b)


def add_into(targets, grads):
    """grads_into on the NumPy path: target += g for each given target, returned in g's place."""
    out = []
    for into, g in zip(targets, grads):
        if into is not None and g is not None:
            into += g
            g = into
        out.append(g)
    return out
