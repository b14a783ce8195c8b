"""Position-wise feed-forward network (Vaswani et al. 2017, eq. 2):

    h = x W1 + b1;   a = act(h);   [a = Dropout(a)];   y = a W2 + b2
    backward:  da = dy W2ᵀ, dW2 = aᵀ dy;   dh = da ⊙ act'(h);   dx = dh W1ᵀ, dW1 = xᵀ dh

Two paths with the same math:
- fused `ops.feed_forward` when both weights are "in_out" (GPT-2's Conv1D layout) or, in eval
  mode, both are pre-packed, and no inner dropout is active: keeps only x and h (a is recomputed
  in backward);
- Linear → activation → [dropout] → Linear otherwise ("out_in" weights of BERT / nn.Transformer,
  or torch.nn.TransformerEncoderLayer's dropout between the two linears).
"""
from __future__ import annotations

from .. import ops
from .activations import act_backward, act_forward, check
from .dropout import Dropout
from .linear import Linear
from .module import Module


class FeedForward(Module):
    def __init__(self, fc1: Linear, fc2: Linear, activation: str = "gelu_tanh", dropout: Dropout | None = None):
        if fc1.d_out != fc2.d_in:
            raise ValueError(f"FeedForward: fc1 gives {fc1.d_out} features but fc2 takes {fc2.d_in}")
        self.fc1 = fc1
        self.fc2 = fc2
        self.activation = check(activation)
        self.dropout = dropout
        self._saved = None

    def _fused(self) -> bool:
        (_, t1), (_, t2) = self.fc1.forward_weight(), self.fc2.forward_weight()
        return not t1 and not t2 and not (self.dropout is not None and self.dropout.active)

    def forward(self, x):
        if self._fused():
            f1, f2 = self.fc1, self.fc2
            args = (x, f1.forward_weight()[0], None if f1.bias is None else f1.bias.value,
                    f2.forward_weight()[0], None if f2.bias is None else f2.bias.value)
            if not self.training:
                return ops.feed_forward(*args, activation=self.activation)
            y, h = ops.feed_forward(*args, activation=self.activation, return_saved=True)
            self._saved = ("fused", x, h)
            return y
        h = self.fc1(x)
        a = act_forward(h, self.activation)
        if self.dropout is not None:
            a = self.dropout(a)
        y = self.fc2(a)
        self._saved = ("layers", h) if self.training else None
        return y

    def backward(self, dy):
        saved = self._need(self._saved)
        self._saved = None
        if saved[0] == "fused":
            _, x, h = saved
            f1, f2 = self.fc1, self.fc2
            b1 = None if f1.bias is None else f1.bias.value
            b2 = None if f2.bias is None else f2.bias.value
            into = (f1.weight.grad, None if b1 is None else f1.bias.grad,
                    f2.weight.grad, None if b2 is None else f2.bias.grad)  # accumulated in place
            dx, *_ = ops.feed_forward_backward(dy, x, f1.weight.value, b1, f2.weight.value, b2, h,
                                               activation=self.activation, grads_into=into)
            return dx
        _, h = saved
        da = self.fc2.backward(dy)
        if self.dropout is not None:
            da = self.dropout.backward(da)
        dh = act_backward(da, h, self.activation)
        return self.fc1.backward(dh)
