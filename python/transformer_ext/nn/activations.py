"""Activation functions by name, and the mapping from Hugging Face config names.

`ops` names: "gelu_tanh" (GPT-2: 0.5x(1 + tanh(√(2/π)(x + 0.044715x³)))), "gelu_erf"
(0.5x(1 + erf(x/√2))), "relu". Hugging Face configs (and torch.nn.Transformer) say "gelu" for
the erf form and "gelu_new" / "gelu_pytorch_tanh" / "gelu_fast" for the tanh form.
"""
from __future__ import annotations

from .. import ops
from .module import Module

OPS_ACTIVATIONS = ("gelu_tanh", "gelu_erf", "relu")

HF_ACTIVATIONS = {
    "gelu": "gelu_erf",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "relu": "relu",
}


def from_hf(name: str, where: str = "activation") -> str:
    """The ops activation name for a Hugging Face / torch activation name."""
    try:
        return HF_ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"{where}: unsupported activation {name!r}; expected one of {tuple(HF_ACTIVATIONS)}") from None


def check(name: str) -> str:
    if name not in OPS_ACTIVATIONS:
        raise ValueError(f"activation must be one of {OPS_ACTIVATIONS}, got {name!r}")
    return name


def act_forward(h, name: str):
    """a = act(h)"""
    if name == "relu":
        return ops.relu(h)
    return ops.gelu(h, approximate="tanh" if name == "gelu_tanh" else "none")


def act_backward(da, h, name: str):
    """dh = da ⊙ act'(h)"""
    if name == "relu":
        return ops.relu_backward(da, h)
    return ops.gelu_backward(da, h, approximate="tanh" if name == "gelu_tanh" else "none")


class Activation(Module):
    """An element-wise activation as a layer (keeps its input for backward)."""

    def __init__(self, name: str):
        self.name = check(name)
        self._h = None

    def forward(self, h):
        self._h = h if self.training else None
        return act_forward(h, self.name)

    def backward(self, da):
        h = self._need(self._h)
        self._h = None
        return act_backward(da, h, self.name)
