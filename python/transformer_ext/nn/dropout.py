"""Inverted dropout (Srivastava et al. 2014), as torch.nn.Dropout:

    train:  y = x ⊙ m / (1 − p),  m_i ~ Bernoulli(1 − p);   dx = dy ⊙ m / (1 − p)
    eval:   y = x (no copy),                                  dx = dy

The mask is drawn from a `DropoutRNG` the layers of one model share, so one reseed
(`rng.seed(s)`) makes every mask of the next forward reproducible — gradient checks
reseed before each forward to hold the masks fixed. (Attention dropout draws one 64-bit
seed per forward from the same generator, `draw_seed`, and hashes its mask from it inside
the fused attention kernel; see nn/attention.py.) Uniforms are always drawn in float32,
so a float32 and a float64 model draw the same masks from the same seed.
"""
from __future__ import annotations

import numpy as np

from .module import Module


class DropoutRNG:
    """A reseedable random generator shared by the dropout layers of a model."""

    def __init__(self, seed=None):
        self.seed(seed)

    def seed(self, seed=None) -> None:
        self.generator = np.random.default_rng(seed)

    def keep_mask(self, shape, p: float) -> np.ndarray:
        """Bool mask, True with probability 1 − p."""
        return self.generator.random(shape, dtype=np.float32) >= np.float32(p)

    def draw_seed(self) -> int:
        """A fresh 64-bit seed for a counter-based mask (ops.attention's dropout), drawn
        from this generator: reseeding makes it, and so the mask, reproducible."""
        return int(self.generator.integers(0, 1 << 64, dtype=np.uint64))


class Dropout(Module):
    def __init__(self, p: float = 0.1, rng: DropoutRNG | None = None):
        p = float(p)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p
        self.rng = rng if rng is not None else DropoutRNG()
        self._mask = None

    @property
    def active(self) -> bool:
        return self.training and self.p > 0.0

    def forward(self, x):
        if not self.active:
            self._mask = None
            return x
        self._mask = self.rng.keep_mask(x.shape, self.p)
        scale = x.dtype.type(1.0 / (1.0 - self.p))
        y = np.multiply(x, self._mask)
        y *= scale
        return y

    def backward(self, dy):
        if self._mask is None:  # identity (p == 0): nothing was dropped
            return dy
        mask, self._mask = self._mask, None
        dx = np.multiply(dy, mask)
        dx *= dy.dtype.type(1.0 / (1.0 - self.p))
        return dx
