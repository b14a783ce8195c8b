"""Token embeddings and positional encodings.

    Embedding:            y[b, t] = E[ids[b, t]];          dE[v] += Σ_{(b,t): ids = v} dy[b, t]
    LearnedPositions:     y = x + P[offset : offset+T];    dP[offset : offset+T] += Σ_b dy[b];  dx = dy
    SinusoidalPositions:  y = x + PE[offset : offset+T]    (Vaswani et al. 2017, §3.5: PE[pos, 2i] =
                          sin(pos/10000^(2i/d)), PE[pos, 2i+1] = cos(·));  no parameters;  dx = dy
"""
from __future__ import annotations

import numpy as np

from .. import ops
from .module import Module, Param


class Embedding(Module):
    """Lookup table E (V, d). `backward` returns None (ids have no gradient)."""

    def __init__(self, weight: Param):
        if len(weight.shape) != 2:
            raise ValueError(f"Embedding: weight {weight.name!r} must be 2-D (V, d), got shape {weight.shape}")
        self.weight = weight
        self.num_embeddings, self.embedding_dim = weight.shape
        self._ids = None

    @classmethod
    def create(cls, store, name: str, num_embeddings: int, dim: int, std: float = 0.02) -> "Embedding":
        """Declare the table `name` (normal(0, std))."""
        return cls(store.declare(name, (num_embeddings, dim), init="normal", std=std))

    def forward(self, ids):
        y = ops.embedding(ids, self.weight.value)
        self._ids = ids if self.training else None
        return y

    def backward(self, dy):
        ids = self._need(self._ids)
        self._ids = None
        # scatter-add straight into the gradient buffer: repeated ids (and a tied head) accumulate
        ops.embedding_backward(dy, ids, self.weight.value, grads_into=(self.weight.grad,))
        return None


def _check_positions(layer: str, T: int, offset: int, limit: int | None) -> None:
    if offset < 0:
        raise ValueError(f"{layer}: offset must be >= 0, got {offset}")
    if limit is not None and offset + T > limit:
        raise ValueError(
            f"{layer}: positions {offset}..{offset + T - 1} exceed the table's {limit} positions "
            f"(sequence length {T}, offset {offset})"
        )


class LearnedPositions(Module):
    """Learned absolute positions P (n_positions, d), added to x (..., T, d)."""

    def __init__(self, weight: Param):
        if len(weight.shape) != 2:
            raise ValueError(f"LearnedPositions: weight {weight.name!r} must be 2-D, got shape {weight.shape}")
        self.weight = weight
        self.n_positions, self.dim = weight.shape
        self._span = None

    @classmethod
    def create(cls, store, name: str, n_positions: int, dim: int, std: float = 0.02) -> "LearnedPositions":
        return cls(store.declare(name, (n_positions, dim), init="normal", std=std))

    def forward(self, x, offset: int = 0):
        T = x.shape[-2]
        _check_positions("LearnedPositions", T, offset, self.n_positions)
        self._span = (offset, T) if self.training else None
        return x + self.weight.value[offset:offset + T]

    def backward(self, dy):
        offset, T = self._need(self._span)
        self._span = None
        d = dy.shape[-1]
        # dP[offset+t] = Σ over every leading (batch) index of dy[..., t, :]
        self.weight.grad[offset:offset + T] += dy.reshape(-1, T, d).sum(axis=0)
        return dy


class SinusoidalPositions(Module):
    """Fixed sinusoidal positions, added to x (..., T, d). The table is computed once per
    (length, dtype) and extended on demand; `max_len` (optional) bounds the positions."""

    def __init__(self, dim: int, max_len: int | None = None):
        self.dim = int(dim)
        self.max_len = max_len
        self._table = None

    def table(self, n: int, dtype) -> np.ndarray:
        """PE[:n] in `dtype` (cached)."""
        if self._table is None or self._table.shape[0] < n or self._table.dtype != np.dtype(dtype):
            self._table = ops.sinusoidal_positions(max(n, 0 if self._table is None else self._table.shape[0]),
                                                   self.dim, dtype=dtype)
        return self._table[:n]

    def forward(self, x, offset: int = 0):
        T = x.shape[-2]
        _check_positions("SinusoidalPositions", T, offset, self.max_len)
        return x + self.table(offset + T, x.dtype)[offset:]

    def backward(self, dy):
        return dy  # no parameters; the addition passes the gradient through
