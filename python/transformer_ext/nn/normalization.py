"""LayerNorm over the last axis (Ba et al. 2016):

    y = x̂ ⊙ γ + β,   x̂ = (x − μ) · rstd,   rstd = 1/√(σ² + ε)   (biased σ²)
    dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂)),  g = dy ⊙ γ;   dγ = Σ dy ⊙ x̂;   dβ = Σ dy
(the kernels in `ops.layer_norm*`; this layer keeps x and (μ, rstd) between the two).
"""
from __future__ import annotations

from .. import ops
from .module import Module, Param


class LayerNorm(Module):
    def __init__(self, weight: Param, bias: Param, eps: float = 1e-5):
        self.weight = weight  # γ
        self.bias = bias      # β
        self.eps = float(eps)
        self._saved = None

    @classmethod
    def create(cls, store, prefix: str, d: int, eps: float = 1e-5) -> "LayerNorm":
        """Declare `prefix.weight` (ones) and `prefix.bias` (zeros) in `store`."""
        return cls(store.declare(f"{prefix}.weight", (d,), init="ones"),
                   store.declare(f"{prefix}.bias", (d,), init="zeros"), eps)

    def forward(self, x):
        if not self.training:
            return ops.layer_norm(x, self.weight.value, self.bias.value, self.eps)
        y, stats = ops.layer_norm(x, self.weight.value, self.bias.value, self.eps, return_saved=True)
        self._saved = (x, stats)  # stats = (μ, rstd)
        return y

    def backward(self, dy):
        x, stats = self._need(self._saved)
        self._saved = None
        dx, dgamma, dbeta = ops.layer_norm_backward(dy, x, self.weight.value, self.bias.value, stats, eps=self.eps)
        self.weight.accumulate(dgamma)
        self.bias.accumulate(dbeta)
        return dx
