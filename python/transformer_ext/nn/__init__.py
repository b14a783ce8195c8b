"""Layers with explicit `forward(...)` and `backward(dy)` over `transformer_ext.ops`.

No autograd: each layer's forward keeps what its backward needs (in train mode), and its
backward accumulates (`+=`) parameter gradients into gradient views and returns the input
gradient. Layers do not own arrays: they hold `Param`s (value view, gradient view) declared
in a `transformer_ext.models.params.ParamStore`, which keeps all parameters in one flat
buffer and all gradients in a twin one.

    store = ParamStore(np.float64, seed=0)
    lin = Linear.create(store, "proj", 16, 32)          # declares proj.weight, proj.bias
    store.allocate()                                    # one buffer; views; deterministic init
    y = lin(x); dx = lin.backward(dy)                   # lin.weight.grad += xᵀ dy
"""
from .activations import HF_ACTIVATIONS, Activation, from_hf
from .attention import MultiHeadAttention, additive_mask, merge_heads, split_heads
from .blocks import DecoderBlock, Residual, TransformerBlock
from .dropout import Dropout, DropoutRNG
from .embedding import Embedding, LearnedPositions, SinusoidalPositions
from .feed_forward import FeedForward
from .linear import Linear
from .module import Module, Param
from .normalization import LayerNorm

__all__ = [
    "Module", "Param", "Linear", "LayerNorm", "Embedding", "LearnedPositions", "SinusoidalPositions",
    "Dropout", "DropoutRNG", "Activation", "FeedForward", "MultiHeadAttention", "Residual",
    "TransformerBlock", "DecoderBlock", "split_heads", "merge_heads", "additive_mask",
    "HF_ACTIVATIONS", "from_hf",
]
