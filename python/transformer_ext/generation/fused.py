"""The fused decoding step: one C++ call per generated token for a GPT (cpp/models/gpt_decode.cpp).

At batch 1 a GPT-2-small token streams ~250-500 MB of weights in ~10-20 ms, while the
readable path (models/gpt.py's layers re-wired by kv_cache.GPTCache) pays Python work on each
of its ~150 kernel calls. `_core.GPTDecoder` makes the same kernel calls in the same order
on the same pre-packed weights (Model.pack_weights), so its logits equal the Python path's
bit for bit — tests/test_decoder.py holds it to that; the Python definition stays the reference.

GPTCache uses it for single-token steps whenever it is available: the cpp backend, a float32
GPT-2-architecture model whose Linear weights are packed, in eval mode. GPTCache packs them
(fp32) at its first prefill when nobody has (`pack_for_decoding`): that keeps a second, packed
copy of the Linear weights on the model (+1x their bytes) until `model.unpack_weights()` or
`model.train()`; `model.pack_weights("bf16")` beforehand halves both that copy and the bytes
each token reads.
"""
from __future__ import annotations

import numpy as np

from ..ops import _checks
from ..ops.linear import _PACK_DTYPES, _activation_code


def _packed(linear):
    p = linear.packed
    b = None if linear.bias is None else linear.bias.value
    return (p.data, p.K, p.N, _PACK_DTYPES[p.dtype], b)


def _build(model):
    core = _checks.core()
    layers = []
    for block in model.h:
        attn, ffn = block.attn, block.ffn
        if attn.qkv is None or ffn.dropout is not None and ffn.dropout.active:
            return None
        ln_1, ln_2 = block.sa.norm, block.ff.norm
        layers.append((ln_1.weight.value, ln_1.bias.value, _packed(attn.qkv), _packed(attn.out),
                       ln_2.weight.value, ln_2.bias.value, _packed(ffn.fc1), _packed(ffn.fc2)))
    eps = {blk.sa.norm.eps for blk in model.h} | {blk.ff.norm.eps for blk in model.h} | {model.ln_f.eps}
    if len(eps) != 1:
        return None
    return core.GPTDecoder(model.config.n_head, eps.pop(), _activation_code("GPTDecoder", model.h[0].ffn.activation),
                           model.wte.weight.value, model.wpe.weight.value, layers,
                           model.ln_f.weight.value, model.ln_f.bias.value, _packed(model.lm_head))


def pack_for_decoding(model) -> None:
    """Pack a float32 model's weights (fp32) for decoding on the cpp backend, unless packed already."""
    if (_checks.backend() == "cpp" and not model.training and model.packed_dtype is None
            and model.dtype == np.float32):
        model.pack_weights("fp32")


def gpt_decoder(model):
    """The fused decoder of `model` (built once, kept on the model until its weights are
    re-packed), or None when the fused step does not apply."""
    if (_checks.backend() != "cpp" or model.training or model.packed_dtype is None
            or not hasattr(_checks.core(), "GPTDecoder")):
        return None
    dec = getattr(model, "_decoder", None)
    if dec is None:  # False: built before and not applicable
        dec = model._decoder = _build(model) or False
    return dec or None
