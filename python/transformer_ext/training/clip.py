"""Global-norm gradient clipping over the flat gradient buffer (one norm for the whole model,
as torch.nn.utils.clip_grad_norm_):

    n = ‖g‖₂;  if n > max_norm:  g ← g · max_norm / (n + 1e-6)

Each square is formed in the buffer's dtype and summed in float64 (NumPy's pairwise sum, no
BLAS) over fixed 1M-element chunks in order: deterministic whatever the thread count, and no
float64 copy of the whole buffer."""
from __future__ import annotations

import math

import numpy as np

_CHUNK = 1 << 20


def grad_norm(flat_grad: np.ndarray) -> float:
    total = 0.0
    for i in range(0, flat_grad.size, _CHUNK):
        total += float(np.sum(np.square(flat_grad[i:i + _CHUNK]), dtype=np.float64))
    return math.sqrt(total)


def clip_grad_norm(flat_grad: np.ndarray, max_norm: float) -> float:
    """Scale `flat_grad` in place so its norm is at most max_norm; returns the norm BEFORE
    clipping (inf/nan norms are returned and leave the gradient unchanged)."""
    norm = grad_norm(flat_grad)
    if max_norm is not None and max_norm > 0 and math.isfinite(norm) and norm > max_norm:
        flat_grad *= flat_grad.dtype.type(max_norm / (norm + 1e-6))
    return norm
