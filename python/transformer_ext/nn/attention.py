"""Multi-head attention (Vaswani et al. 2017, §3.2):

    Q = x W_Q,  K = m W_K,  V = m W_V        (m = x for self-attention, the encoder output for cross)
    split heads:  (B, T, d) → (B, H, T, d_k),  d_k = d / H
    head_h = softmax(Q_h K_hᵀ / √d_k + mask) V_h
    y = concat(head_1 … head_H) W_O

Projections come in the layouts checkpoints use:
- `qkv`: one fused Linear x → [Q | K | V] (GPT-2's c_attn (d, 3d); nn.MultiheadAttention's in_proj);
- `q`, `k`, `v`: three Linears (BERT's query/key/value; cross-attention);
- `q` + `kv`: a query Linear and a fused key/value Linear m → [K | V] (cross-attention).

The scaled dot-product runs in the fused kernel `ops.attention` (which never materialises the
(T, T) probabilities), attention dropout included: in training the layer draws a fresh seed
from its Dropout's `DropoutRNG` per forward and the kernel applies O = (P ⊙ M/(1−p)) V with
the keep mask M hashed from that seed on the fly (the backward recomputes it from the same
seed). The explicit path — S = QKᵀ/√d_k + mask, P = ops.softmax(S), P̃ = P ⊙ M/(1−p),
O = P̃ V, with the same hashed mask (ops.reference.attention_dropout_factors), so it computes
the same function — is used only when the probabilities themselves are needed
(`return_attention=True`), or when the class attribute `fused_dropout` is set to False
(benchmarks compare the two). Its backward:
    dV = P̃ᵀ dO,  dP̃ = dO Vᵀ,  dP = dP̃ ⊙ M/(1−p),  dS = softmax'(dP),  dQ = dS K/√d_k,  dK = dSᵀ Q/√d_k.
"""
from __future__ import annotations

import math

import numpy as np

from .. import ops
from ..ops import reference
from .dropout import Dropout
from .linear import Linear
from .module import Module


def split_heads(t: np.ndarray, n_head: int) -> np.ndarray:
    """(B, T, d) → (B, H, T, d_k): a view (last axis stays unit-stride, so ops.attention reads
    it in place, even when t is a column slice of a fused projection)."""
    B, T, d = t.shape
    return t.reshape(B, T, n_head, d // n_head).transpose(0, 2, 1, 3)


def merge_heads(t: np.ndarray) -> np.ndarray:
    """(B, H, T, d_k) → (B, T, H·d_k), C-contiguous (concat of the heads)."""
    B, H, T, dk = t.shape
    return np.ascontiguousarray(t.transpose(0, 2, 1, 3)).reshape(B, T, H * dk)


def _merge_heads_into(*ts: np.ndarray) -> np.ndarray:
    """Per-head tensors (B, H, T, d_k), merged and concatenated along the features:
    (B, T, n·H·d_k), the layout of a fused projection's output — one copy per tensor
    instead of a merge then a concatenation."""
    B, H, T, dk = ts[0].shape
    out = np.empty((B, T, len(ts), H, dk), dtype=ts[0].dtype)
    for i, t in enumerate(ts):
        out[:, :, i] = t.transpose(0, 2, 1, 3)
    return out.reshape(B, T, len(ts) * H * dk)


def additive_mask(mask, causal: bool, Tq: int, Tk: int, dtype) -> np.ndarray | None:
    """The attention mask as an additive float array broadcastable to (B, H, Tq, Tk) (0 = attend,
    -inf = masked), with the same meaning as ops.attention's `mask` / `causal` arguments."""
    dtype = np.dtype(dtype)
    zero, ninf = np.zeros((), dtype), np.array(-np.inf, dtype)
    add = None
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype.kind in "biu":
            if mask.ndim == 2:  # key padding (B, Tk), True/1 = attend
                mask = mask.reshape(mask.shape[0], 1, 1, mask.shape[1])
            add = np.where(mask.astype(bool), zero, ninf)
        else:
            add = mask.astype(dtype, copy=False)
        add = add.reshape((1,) * (4 - add.ndim) + add.shape)
    if causal:  # query i sees key j iff j <= i + (Tk - Tq)
        i = np.arange(Tq)[:, None]
        j = np.arange(Tk)[None, :]
        c = np.where(j <= i + (Tk - Tq), zero, ninf)[None, None]
        add = c if add is None else add + c
    return add


class MultiHeadAttention(Module):
    # Attention dropout in training runs inside the fused kernel; False: the explicit path.
    fused_dropout = True

    def __init__(self, n_head: int, out: Linear, *, qkv: Linear | None = None, q: Linear | None = None,
                 k: Linear | None = None, v: Linear | None = None, kv: Linear | None = None,
                 causal: bool = False, attn_dropout: Dropout | None = None):
        if qkv is not None:
            if any(p is not None for p in (q, k, v, kv)):
                raise ValueError("MultiHeadAttention: give either qkv, or q with k and v, or q with kv")
            if qkv.d_out % 3:
                raise ValueError(f"MultiHeadAttention: qkv gives {qkv.d_out} features, not a multiple of 3")
            d = qkv.d_out // 3
        else:
            if q is None or not ((k is not None and v is not None and kv is None) or (kv is not None and k is None and v is None)):
                raise ValueError("MultiHeadAttention: give either qkv, or q with k and v, or q with kv")
            d = q.d_out
        if d % n_head:
            raise ValueError(f"MultiHeadAttention: d_model={d} is not divisible by n_head={n_head}")
        if out.d_in != d:
            raise ValueError(f"MultiHeadAttention: the output projection takes {out.d_in} features, expected {d}")
        self.n_head = int(n_head)
        self.d_model = d
        self.d_k = d // n_head
        self.qkv, self.q, self.k, self.v, self.kv = qkv, q, k, v, kv
        self.out = out
        self.causal = bool(causal)
        self.attn_dropout = attn_dropout
        self._saved = None

    # ------------------------------------------------------------------ projections
    def _project(self, x, memory):
        """Q, K, V as (B, T, d) arrays (views into the projection outputs)."""
        d = self.d_model
        if self.qkv is not None:
            if memory is not None:
                raise ValueError("MultiHeadAttention: a fused qkv projection is for self-attention; "
                                 "cross-attention needs q with kv (or k, v)")
            y = self.qkv(x)
            return y[..., :d], y[..., d:2 * d], y[..., 2 * d:]
        src = x if memory is None else memory
        q = self.q(x)
        if self.kv is not None:
            y = self.kv(src)
            return q, y[..., :d], y[..., d:]
        return q, self.k(src), self.v(src)

    def _project_backward(self, dq, dk, dv, cross: bool):
        """Back through the projections, given dq, dk, dv per head (B, H, T, d_k): dx, and
        dmemory for cross-attention (else None)."""
        if self.qkv is not None:
            return self.qkv.backward(_merge_heads_into(dq, dk, dv)), None
        dx = self.q.backward(merge_heads(dq))
        if self.kv is not None:
            dsrc = self.kv.backward(_merge_heads_into(dk, dv))
        else:
            dsrc = self.k.backward(merge_heads(dk))
            dsrc += self.v.backward(merge_heads(dv))
        if cross:
            return dx, dsrc
        dx += dsrc  # self-attention: x feeds Q, K and V
        return dx, None

    # ------------------------------------------------------------------ forward / backward
    def forward(self, x, memory=None, mask=None, return_attention: bool = False):
        """x (B, Tq, d); memory (B, Tk, d) for cross-attention; mask as ops.attention's
        (key padding (B, Tk) bool/int with True = attend, bool 4-D, or additive float).
        Returns y (B, Tq, d), or (y, P) with P (B, H, Tq, Tk) the attention probabilities
        (before dropout) when return_attention."""
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"MultiHeadAttention: x must be (B, T, {self.d_model}), got shape {x.shape}")
        if memory is not None and (memory.ndim != 3 or memory.shape[-1] != self.d_model or memory.shape[0] != x.shape[0]):
            raise ValueError(f"MultiHeadAttention: memory must be ({x.shape[0]}, T_k, {self.d_model}), got shape {memory.shape}")
        q, k, v = (split_heads(t, self.n_head) for t in self._project(x, memory))
        drop = self.training and self.attn_dropout is not None and self.attn_dropout.active
        explicit = return_attention or (drop and not self.fused_dropout)
        probs = None
        p, seed = (self.attn_dropout.p, self.attn_dropout.rng.draw_seed()) if drop else (0.0, None)
        if not explicit:
            if self.training:
                o, saved = ops.attention(q, k, v, causal=self.causal, mask=mask, return_saved=True,
                                         dropout_p=p, seed=seed)
                self._saved = ("fused", q, k, v, mask, saved, p, seed, memory is not None)
            else:
                o = ops.attention(q, k, v, causal=self.causal, mask=mask)
        else:
            scale = q.dtype.type(1.0 / math.sqrt(self.d_k))
            s = np.matmul(q, k.swapaxes(-1, -2))  # S = Q Kᵀ / √d_k + mask
            s *= scale
            add = additive_mask(mask, self.causal, q.shape[2], k.shape[2], s.dtype)
            if add is not None:
                s += add
            probs = ops.softmax(s)
            B, H, Tq, Tk = s.shape
            f = reference.attention_dropout_factors(seed, B, H, Tq, Tk, p, s.dtype) if drop else None
            p_drop = probs if f is None else probs * f  # P̃ = P ⊙ M/(1−p)
            o = np.matmul(p_drop, v)
            if self.training:
                self._saved = ("explicit", q, k, v, s, probs, p_drop, f, scale, memory is not None)
        if not self.training:
            self._saved = None
        y = self.out(merge_heads(o))
        return (y, probs) if return_attention else y

    def backward(self, dy):
        """Returns dx, or (dx, dmemory) when forward was given a memory (cross-attention)."""
        saved = self._need(self._saved)
        self._saved = None
        do = split_heads(self.out.backward(dy), self.n_head)
        if saved[0] == "fused":
            _, q, k, v, mask, att_saved, p, seed, cross = saved
            dq, dk, dv = ops.attention_backward(do, q, k, v, att_saved, causal=self.causal, mask=mask,
                                                dropout_p=p, seed=seed)
        else:
            _, q, k, v, s, probs, p_drop, f, scale, cross = saved
            dv = np.matmul(p_drop.swapaxes(-1, -2), do)  # dV = P̃ᵀ dO
            dp = np.matmul(do, v.swapaxes(-1, -2))       # dP̃ = dO Vᵀ
            if f is not None:
                dp *= f                                  # dP = dP̃ ⊙ M/(1−p)
            ds = ops.softmax_backward(dp, s, probs)      # dS = P ⊙ (dP − Σ_j dP_j P_j)
            ds *= scale
            dq = np.matmul(ds, k)                        # dQ = dS K / √d_k
            dk = np.matmul(ds.swapaxes(-1, -2), q)       # dK = dSᵀ Q / √d_k
        dx, dmem = self._project_backward(dq, dk, dv, cross)
        return (dx, dmem) if cross else dx
