"""Residual sub-layers and the transformer blocks built from them.

    pre-LN  (GPT-2, Radford et al. 2019):           y = x + Dropout(f(LN(x)))
            backward:  dx = dy + LN'(f'(Dropout'(dy)))
    post-LN (Vaswani et al. 2017; BERT):             y = LN(x + Dropout(f(x)))
            backward:  dz = LN'(dy);  dx = dz + f'(Dropout'(dz))

`f` is any layer with forward/backward (MultiHeadAttention, FeedForward). When f is a
cross-attention its backward returns (dx, dmemory); the residual passes dmemory through.

Blocks (each takes ready-made sub-layers, so every model names its parameters its own way):
- TransformerBlock: self-attention + feed-forward. GPT-2's block (pre-LN, causal attention),
  BERT's layer and the Seq2Seq encoder layer (post-LN, padding mask).
- DecoderBlock: masked self-attention + cross-attention to the encoder output + feed-forward
  (the Seq2Seq decoder layer).
"""
from __future__ import annotations

from .dropout import Dropout
from .module import Module
from .normalization import LayerNorm


class Residual(Module):
    def __init__(self, sublayer: Module, norm: LayerNorm, dropout: Dropout | None = None, pre_ln: bool = True):
        self.sublayer = sublayer
        self.norm = norm
        self.dropout = dropout
        self.pre_ln = bool(pre_ln)

    def forward(self, x, *args, **kwargs):
        """y (and the sub-layer's extra outputs, e.g. attention weights, as a tuple (y, extra))."""
        h = self.norm(x) if self.pre_ln else x
        r = self.sublayer(h, *args, **kwargs)
        extra = None
        if isinstance(r, tuple):
            r, extra = r
        if self.dropout is not None:
            r = self.dropout(r)
        y = x + r
        if not self.pre_ln:
            y = self.norm(y)
        return y if extra is None else (y, extra)

    def backward(self, dy):
        """dx, or (dx, dmemory) for a cross-attention sub-layer."""
        dz = dy if self.pre_ln else self.norm.backward(dy)
        dr = dz if self.dropout is None else self.dropout.backward(dz)
        dh = self.sublayer.backward(dr)
        dmem = None
        if isinstance(dh, tuple):
            dh, dmem = dh
        if self.pre_ln:
            dh = self.norm.backward(dh)
        dx = dz + dh  # the skip connection carries dz straight through
        return dx if dmem is None else (dx, dmem)


class TransformerBlock(Module):
    """x → Residual(self-attention) → Residual(feed-forward)."""

    def __init__(self, attn: Module, ffn: Module, norm1: LayerNorm, norm2: LayerNorm,
                 dropout1: Dropout | None = None, dropout2: Dropout | None = None, pre_ln: bool = True):
        self.attn = attn
        self.ffn = ffn
        self.sa = Residual(attn, norm1, dropout1, pre_ln)
        self.ff = Residual(ffn, norm2, dropout2, pre_ln)

    def forward(self, x, mask=None, return_attention: bool = False):
        """Returns y, or (y, P) with P (B, H, T, T) the self-attention probabilities."""
        if return_attention:
            x, probs = self.sa(x, mask=mask, return_attention=True)
            return self.ff(x), probs
        return self.ff(self.sa(x, mask=mask))

    def backward(self, dy):
        return self.sa.backward(self.ff.backward(dy))


class DecoderBlock(Module):
    """x → Residual(masked self-attention) → Residual(cross-attention to memory) → Residual(feed-forward)."""

    def __init__(self, self_attn: Module, cross_attn: Module, ffn: Module,
                 norm1: LayerNorm, norm2: LayerNorm, norm3: LayerNorm,
                 dropout1: Dropout | None = None, dropout2: Dropout | None = None, dropout3: Dropout | None = None,
                 pre_ln: bool = False):
        self.self_attn = self_attn
        self.cross_attn = cross_attn
        self.ffn = ffn
        self.sa = Residual(self_attn, norm1, dropout1, pre_ln)
        self.ca = Residual(cross_attn, norm2, dropout2, pre_ln)
        self.ff = Residual(ffn, norm3, dropout3, pre_ln)

    def forward(self, x, memory, self_mask=None, memory_mask=None, return_attention: bool = False):
        """Returns y, or (y, (P_self, P_cross)) when return_attention."""
        if return_attention:
            x, p_self = self.sa(x, mask=self_mask, return_attention=True)
            x, p_cross = self.ca(x, memory, mask=memory_mask, return_attention=True)
            return self.ff(x), (p_self, p_cross)
        x = self.sa(x, mask=self_mask)
        x = self.ca(x, memory, mask=memory_mask)
        return self.ff(x)

    def backward(self, dy):
        """Returns (dx, dmemory)."""
        dx, dmem = self.ca.backward(self.ff.backward(dy))
        return self.sa.backward(dx), dmem
