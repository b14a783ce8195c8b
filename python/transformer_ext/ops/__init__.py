"""Functional kernels on NumPy arrays, each with its backward.

Every op runs on the active backend (`tx.get_backend()`): the C++ core ("cpp",
float32) or the NumPy reference ("numpy", float32 or float64; see `reference.py`).

Backward convention, for every op `X`:
    y = X(inputs...)                      # forward
    y, saved = X(inputs..., return_saved=True)
    grads = X_backward(dy, inputs..., saved)   # gradients of the differentiable inputs,
                                               # in argument order (one array if only one)
`cross_entropy` returns (loss, dlogits) directly; `adamw_step` updates in place.
"""
from . import reference  # noqa: F401
from .attention import attention, attention_backward
from .elementwise import gelu, gelu_backward, layer_norm, layer_norm_backward, relu, relu_backward, softmax, softmax_backward
from .linear import PackedWeight, bf16_round, feed_forward, feed_forward_backward, matmul, matmul_backward, pack_weight
from .training import adamw_step, cross_entropy, embedding, embedding_backward, sinusoidal_positions

__all__ = [
    "matmul", "matmul_backward", "feed_forward", "feed_forward_backward",
    "pack_weight", "PackedWeight", "bf16_round",
    "softmax", "softmax_backward", "layer_norm", "layer_norm_backward",
    "gelu", "gelu_backward", "relu", "relu_backward",
    "attention", "attention_backward",
    "embedding", "embedding_backward", "sinusoidal_positions",
    "cross_entropy", "adamw_step",
]
