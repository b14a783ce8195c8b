"""KV cache: incremental decoding for GPT and the Seq2Seq decoder (eval mode only, no backward).

Each self-attention layer keeps preallocated K and V arrays of shape (B, H, T_max, d_k). A step
feeds only the n new tokens: their K/V are written at [t, t+n) and ops.attention runs the n new
queries against the zero-copy slices cache[:, :, :t+n] with causal=True (the kernel aligns the
last query with the last key: query i sees key j iff j <= i + (Tk - Tq)), AND a key-padding
mask (B, t+n) (left padding, or Seq2Seq's pad tokens). Positions are given per row, so
left-padded rows each advance their own position. The Seq2Seq cross-attention K/V of the
encoder output are computed once, at `start`.

The layers are the model's own (Linear, LayerNorm, FeedForward called in eval mode); this
module only re-wires the attention so the readable forward in nn/ and models/ stays the
reference — tests/test_kv_cache.py checks both give the same logits. A GPT whose weights are
pre-packed (Model.pack_weights) takes single-token steps through the fused C++ step of
generation/fused.py instead, which gives the same logits bit for bit (tests/test_decoder.py).
"""
from __future__ import annotations

import numpy as np

from .. import ops
from ..nn.attention import merge_heads, split_heads
from .fused import gpt_decoder, pack_for_decoding


class _LayerCache:
    __slots__ = ("k", "v")

    def __init__(self, B, H, T_max, d_k, dtype):
        self.k = np.zeros((B, H, T_max, d_k), dtype)
        self.v = np.zeros((B, H, T_max, d_k), dtype)

    def reorder(self, idx):
        self.k = self.k[idx]
        self.v = self.v[idx]


def _cached_self_attention(attn, x, cache: _LayerCache, t0: int, key_mask):
    """attn: nn.MultiHeadAttention (fused qkv or q/k/v); x (B, n, d) new positions [t0, t0+n)."""
    d = attn.d_model
    if attn.qkv is not None:
        y = attn.qkv(x)
        q, k, v = y[..., :d], y[..., d:2 * d], y[..., 2 * d:]
    else:
        q, k, v = attn.q(x), attn.k(x), attn.v(x)
    n = x.shape[1]
    t1 = t0 + n
    cache.k[:, :, t0:t1] = split_heads(k, attn.n_head)
    cache.v[:, :, t0:t1] = split_heads(v, attn.n_head)
    o = ops.attention(split_heads(q, attn.n_head), cache.k[:, :, :t1], cache.v[:, :, :t1],
                      causal=True, mask=key_mask[:, :t1])
    return attn.out(merge_heads(o))


class GPTCache:
    """Incremental decoding state of a GPT model: `prefill(ids, attention_mask)` then
    `step(next_ids)`; each returns the logits (B, V) of the last position of every row."""

    def __init__(self, model, batch: int, max_len: int, fused: bool = True):
        c = model.config
        if max_len > c.n_positions:
            raise ValueError(f"GPTCache: {max_len} positions exceed the context length n_positions={c.n_positions}")
        self.model = model
        self.fused = fused  # False: always the Python layers (the reference the fused step is tested against)
        self.B, self.T_max = batch, max_len
        H = c.n_head
        self.layers = [_LayerCache(batch, H, max_len, c.n_embd // H, model.dtype) for _ in model.h]
        self.key_mask = np.zeros((batch, max_len), bool)
        self.t = 0
        self.pos = np.zeros(batch, np.int64)  # next position of each row

    def _run(self, ids, positions):
        m = self.model
        n = ids.shape[1]
        if self.t + n > self.T_max:
            raise ValueError(f"GPTCache: {self.t + n} tokens exceed the cache length {self.T_max}")
        decoder = gpt_decoder(m) if n == 1 and self.fused else None
        if decoder is not None:
            logits = decoder.step(ids[:, 0], positions[:, 0], self.t, [c.k for c in self.layers],
                                  [c.v for c in self.layers], self.key_mask)
            self.t += 1
            return logits
        x = m.wte(ids) + m.wpe.weight.value[positions]  # E[ids] + P[pos] (per-row positions)
        for block, cache in zip(m.h, self.layers):
            x = x + _cached_self_attention(block.attn, block.sa.norm(x), cache, self.t, self.key_mask)
            x = x + block.ffn(block.ff.norm(x))
        self.t += n
        return m.lm_head(m.ln_f(x[:, -1:]))[:, 0]

    def prefill(self, ids, attention_mask=None):
        """ids (B, T); attention_mask (B, T) 1 = token, 0 = (left) padding."""
        ids = np.asarray(ids)
        B, T = ids.shape
        if self.fused:
            pack_for_decoding(self.model)
        am = np.ones((B, T), bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
        positions = np.maximum(np.cumsum(am, axis=1) - 1, 0)  # HF: cumsum(mask) − 1 (pads: any valid pos)
        self.key_mask[:, self.t:self.t + T] = am
        self.pos = positions[:, -1] + 1
        return self._run(ids, positions)

    def step(self, next_ids):
        """next_ids (B,) → logits (B, V) for the next position of every row."""
        next_ids = np.asarray(next_ids, np.int64).reshape(-1, 1)
        if self.t >= self.T_max:
            raise ValueError(f"GPTCache: the cache of {self.T_max} positions is full")
        if int(self.pos.max()) >= self.model.config.n_positions:
            raise ValueError(f"GPTCache: position {int(self.pos.max())} exceeds n_positions={self.model.config.n_positions}")
        self.key_mask[:, self.t] = True
        positions = self.pos[:, None].copy()
        self.pos = self.pos + 1
        return self._run(next_ids, positions)

    def reorder(self, idx):
        """Keep rows idx (beam search): every per-row array follows its beam."""
        for c in self.layers:
            c.reorder(idx)
        self.key_mask = self.key_mask[idx]
        self.pos = self.pos[idx]


class Seq2SeqCache:
    """Incremental decoding of the Seq2Seq decoder: `start(src_ids)` encodes once and computes
    every layer's cross-attention K/V; `step(tgt_ids (B,))` feeds one decoder token."""

    def __init__(self, model, max_len: int):
        if max_len > model.config.max_len:
            raise ValueError(f"Seq2SeqCache: {max_len} positions exceed max_len={model.config.max_len}")
        self.model = model
        self.T_max = max_len

    def start(self, src_ids):
        m, c = self.model, self.model.config
        src = np.asarray(src_ids)
        memory = m.encode(src)
        self.src_mask = m.padding_mask(src)
        self.B = B = src.shape[0]
        H, d = c.n_head, c.d_model
        self.layers = [_LayerCache(B, H, self.T_max, d // H, m.dtype) for _ in m.decoder_layers]
        self.cross = []
        for block in m.decoder_layers:  # K|V of the memory, once (cross-attention)
            kv = block.cross_attn.kv(memory)
            self.cross.append((split_heads(kv[..., :d], H), split_heads(kv[..., d:], H)))
        self.key_mask = np.zeros((B, self.T_max), bool)
        self.t = 0

    def step(self, tgt_ids):
        m, c = self.model, self.model.config
        if self.t >= self.T_max:
            raise ValueError(f"Seq2SeqCache: the cache of {self.T_max} positions is full")
        tgt = np.asarray(tgt_ids, np.int64).reshape(-1, 1)
        self.key_mask[:, self.t] = tgt[:, 0] != c.pad_id  # as Seq2Seq.decode's key padding
        y = m.tgt_embed(tgt)
        y *= y.dtype.type(m._scale)  # √d · E[ids] + PE[t]
        y = y + m.positions.table(self.t + 1, y.dtype)[self.t]
        for block, cache, (k, v) in zip(m.decoder_layers, self.layers, self.cross):
            y = block.sa.norm(y + _cached_self_attention(block.self_attn, y, cache, self.t, self.key_mask))
            ca = block.cross_attn
            q = split_heads(ca.q(y), ca.n_head)
            o = ops.attention(q, k, v, mask=self.src_mask)
            y = block.ca.norm(y + ca.out(merge_heads(o)))
            y = block.ff.norm(y + block.ffn(y))
        self.t += 1
        return m.generator(m.decoder_norm(y))[:, 0]

    def reorder(self, idx):
        for c in self.layers:
            c.reorder(idx)
        self.cross = [(k[idx], v[idx]) for k, v in self.cross]
        self.src_mask = self.src_mask[idx]
        self.key_mask = self.key_mask[idx]
