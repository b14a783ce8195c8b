"""Linear layer, in both weight layouts found in checkpoints, without copies:

- layout "in_out": W (d_in, d_out), y = x W + b — Hugging Face GPT-2's Conv1D;
- layout "out_in": W (d_out, d_in), y = x Wᵀ + b — torch.nn.Linear (BERT, nn.Transformer),
  and a tied LM head reading the embedding table (V, d) as Wᵀ.

Backward (x flattened to rows):  dx = dy Wᵀ,  dW = xᵀ dy  (("out_in": dyᵀ x),  db = Σ_rows dy.

For inference a Linear may hold a pre-packed copy of W (`pack`, fp32 or bf16 — see
ops.PackedWeight): eval-mode forwards then multiply by it; training never does (it would
go stale as W changes), and Model.train() drops it.
"""
from __future__ import annotations

from .. import ops
from .module import Module, Param

LAYOUTS = ("in_out", "out_in")


class Linear(Module):
    def __init__(self, weight: Param, bias: Param | None = None, layout: str = "in_out"):
        if layout not in LAYOUTS:
            raise ValueError(f"Linear: layout must be one of {LAYOUTS}, got {layout!r}")
        if len(weight.shape) != 2:
            raise ValueError(f"Linear: weight {weight.name!r} must be 2-D, got shape {weight.shape}")
        self.weight = weight
        self.bias = bias
        self.layout = layout
        self.transpose_w = layout == "out_in"
        self.d_in, self.d_out = weight.shape[::-1] if self.transpose_w else weight.shape
        if bias is not None and bias.shape != (self.d_out,):
            raise ValueError(f"Linear: bias {bias.name!r} must have shape ({self.d_out},), got {bias.shape}")
        self._x = None
        self.packed = None  # an ops.PackedWeight of W for eval forwards, or None

    @classmethod
    def create(cls, store, prefix: str, d_in: int, d_out: int, bias: bool = True,
               layout: str = "in_out", std: float = 0.02) -> "Linear":
        """Declare `prefix.weight` (normal(0, std)) and `prefix.bias` (zeros) in `store`."""
        shape = (d_out, d_in) if layout == "out_in" else (d_in, d_out)
        w = store.declare(f"{prefix}.weight", shape, init="normal", std=std)
        b = store.declare(f"{prefix}.bias", (d_out,), init="zeros") if bias else None
        return cls(w, b, layout)

    def pack(self, dtype: str = "fp32") -> None:
        """Keep a packed copy of W (a snapshot: pack again after changing W) for eval forwards."""
        self.packed = ops.pack_weight(self.weight.value, transpose_w=self.transpose_w, dtype=dtype)

    def forward_weight(self):
        """(w, transpose_w) this forward multiplies by: the packed copy in eval mode when there is one."""
        if self.packed is not None and not self.training:
            return self.packed, False
        return self.weight.value, self.transpose_w

    def forward(self, x):
        # y = x W + b   (or x Wᵀ + b)
        b = None if self.bias is None else self.bias.value
        w, transpose_w = self.forward_weight()
        y = ops.matmul(x, w, b, transpose_w=transpose_w)
        self._x = x if self.training else None
        return y

    def backward(self, dy):
        x = self._need(self._x)
        self._x = None
        b = None if self.bias is None else self.bias.value
        # dW and db are added straight into the gradient buffer (tied uses add up there)
        dx, _, _ = ops.matmul_backward(dy, x, self.weight.value, b, transpose_w=self.transpose_w,
                                       grads_into=(self.weight.grad, None if b is None else self.bias.grad))
        return dx
