"""Seq2Seq: the original encoder–decoder transformer (Vaswani et al. 2017) in torch.nn.Transformer's
layout, with a hand-written backward.

    x = Dropout(√d · E_src[src] + PE)                       (sinusoidal positions, §3.4–3.5)
    encoder layer (post-LN):  x = LN_1(x + Dropout(SelfAttn(x, key padding: src ≠ pad)))
                              x = LN_2(x + Dropout(FFN(x)))          FFN = W_2 Dropout(act(W_1 x))
    memory = LN_enc(x)
    y = Dropout(√d · E_tgt[tgt] + PE)
    decoder layer (post-LN):  y = LN_1(y + Dropout(CausalSelfAttn(y, key padding: tgt ≠ pad)))
                              y = LN_2(y + Dropout(CrossAttn(y, memory, key padding: src ≠ pad)))
                              y = LN_3(y + Dropout(FFN(y)))
    logits = LN_dec(y) W_genᵀ + b_gen

Parameter names: torch.nn.Transformer's state dict for the encoder/decoder stacks
(`encoder.layers.{i}.self_attn.in_proj_weight`, `.in_proj_bias`, `.out_proj.weight/bias`,
`linear1`, `linear2`, `norm1`, `norm2`, `encoder.norm`; `decoder.layers.{i}.self_attn.*`,
`multihead_attn.*`, `linear1`, `linear2`, `norm1..3`, `decoder.norm`), plus
`src_embed.weight` (src_vocab, d) and `tgt_embed.weight` (tgt_vocab, d) — or one
`shared.weight` with share_embeddings — and `generator.weight` (tgt_vocab, d) /
`generator.bias` for the output projection. Parameter order: embeddings, encoder, decoder,
generator. The packed in_proj (3d, d) is used without copies: self-attention reads it as one
fused Q|K|V projection, cross-attention as Q = rows [0, d) on the decoder stream and
K|V = rows [d, 3d) on the memory.

Initialisation as torch.nn.Transformer's `_reset_parameters`: Xavier-uniform for every matrix,
zero biases, LayerNorm (1, 0); embeddings normal(0, d^-1/2) (so √d·E has unit scale).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .. import nn
from ..nn.activations import from_hf
from .params import Model

_ACTIVATIONS = ("relu", "gelu")  # torch.nn.Transformer's names; "gelu" is the erf form


@dataclass
class Seq2SeqConfig:
    src_vocab_size: int = 1000
    tgt_vocab_size: int = 1000
    d_model: int = 512
    n_head: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    d_ff: int = 2048
    max_len: int = 512
    dropout: float = 0.1
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    share_embeddings: bool = False
    activation: str = "relu"
    layer_norm_eps: float = 1e-5
    seed: int = 0

    def __post_init__(self):
        for name in ("src_vocab_size", "tgt_vocab_size", "d_model", "n_head", "num_encoder_layers",
                     "num_decoder_layers", "d_ff", "max_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Seq2SeqConfig: {name} must be a positive int, got {value!r}")
        if self.d_model % self.n_head:
            raise ValueError(f"Seq2SeqConfig: d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Seq2SeqConfig: dropout must be in [0, 1), got {self.dropout!r}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"Seq2SeqConfig: unsupported activation {self.activation!r}; expected one of {_ACTIVATIONS}")
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            if not 0 <= value < self.tgt_vocab_size:
                raise ValueError(f"Seq2SeqConfig: {name}={value} out of range [0, tgt_vocab_size={self.tgt_vocab_size})")
        if not 0 <= self.pad_id < self.src_vocab_size:
            raise ValueError(f"Seq2SeqConfig: pad_id={self.pad_id} out of range [0, src_vocab_size={self.src_vocab_size})")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ValueError(f"Seq2SeqConfig: share_embeddings needs src_vocab_size == tgt_vocab_size, "
                             f"got {self.src_vocab_size} and {self.tgt_vocab_size}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"Seq2SeqConfig: layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Seq2SeqConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _xavier(rng, shape):
    """torch.nn.init.xavier_uniform_ for a (fan_out, fan_in) matrix: U(±√(6/(fan_in + fan_out)))."""
    a = math.sqrt(6.0 / (shape[0] + shape[1]))
    return rng.uniform(-a, a, shape)


class Seq2Seq(Model):
    """`Seq2Seq(config, dtype=np.float32)`; float64 runs on the NumPy backend only (gradient checks)."""

    def __init__(self, config: Seq2SeqConfig, dtype=np.float32):
        if not isinstance(config, Seq2SeqConfig):
            raise TypeError(f"Seq2Seq: config must be a Seq2SeqConfig, got {type(config).__name__}")
        self.config = c = config
        store = self._init_store(dtype, c.seed)
        d, eps, p_drop = c.d_model, c.layer_norm_eps, c.dropout
        act = from_hf(c.activation, "Seq2SeqConfig.activation")
        emb_std = d ** -0.5

        if c.share_embeddings:
            # one table, two lookups (each Embedding keeps its own ids for backward)
            shared = store.declare("shared.weight", (c.src_vocab_size, d), init="normal", std=emb_std)
            self.src_embed, self.tgt_embed = nn.Embedding(shared), nn.Embedding(shared)
        else:
            self.src_embed = nn.Embedding.create(store, "src_embed.weight", c.src_vocab_size, d, emb_std)
            self.tgt_embed = nn.Embedding.create(store, "tgt_embed.weight", c.tgt_vocab_size, d, emb_std)
        self.positions = nn.SinusoidalPositions(d, c.max_len)
        self.src_drop = nn.Dropout(p_drop, self.rng)
        self.tgt_drop = nn.Dropout(p_drop, self.rng)

        def lin(prefix, n_in, n_out):
            return nn.Linear(store.declare(f"{prefix}.weight", (n_out, n_in), init=_xavier),
                             store.declare(f"{prefix}.bias", (n_out,), init="zeros"), "out_in")

        def in_proj(prefix):
            return (store.declare(f"{prefix}.in_proj_weight", (3 * d, d), init=_xavier),
                    store.declare(f"{prefix}.in_proj_bias", (3 * d,), init="zeros"))

        def self_attn(prefix, causal):
            w, b = in_proj(prefix)
            return nn.MultiHeadAttention(c.n_head, qkv=nn.Linear(w, b, "out_in"), out=lin(f"{prefix}.out_proj", d, d),
                                         causal=causal, attn_dropout=nn.Dropout(p_drop, self.rng))

        def cross_attn(prefix):
            w, b = in_proj(prefix)
            return nn.MultiHeadAttention(c.n_head, q=nn.Linear(w.rows(0, d), b.rows(0, d), "out_in"),
                                         kv=nn.Linear(w.rows(d, 3 * d), b.rows(d, 3 * d), "out_in"),
                                         out=lin(f"{prefix}.out_proj", d, d), attn_dropout=nn.Dropout(p_drop, self.rng))

        def ffn(prefix):
            return nn.FeedForward(lin(f"{prefix}.linear1", d, c.d_ff), lin(f"{prefix}.linear2", c.d_ff, d), act,
                                  dropout=nn.Dropout(p_drop, self.rng))

        def drop():
            return nn.Dropout(p_drop, self.rng)

        self.encoder_layers = []
        for i in range(c.num_encoder_layers):
            p = f"encoder.layers.{i}"
            attn = self_attn(f"{p}.self_attn", causal=False)
            ff = ffn(p)
            n1, n2 = (nn.LayerNorm.create(store, f"{p}.norm{j}", d, eps) for j in (1, 2))
            self.encoder_layers.append(nn.TransformerBlock(attn, ff, n1, n2, drop(), drop(), pre_ln=False))
        self.encoder_norm = nn.LayerNorm.create(store, "encoder.norm", d, eps)
        self.decoder_layers = []
        for i in range(c.num_decoder_layers):
            p = f"decoder.layers.{i}"
            sa = self_attn(f"{p}.self_attn", causal=True)
            ca = cross_attn(f"{p}.multihead_attn")
            ff = ffn(p)
            n1, n2, n3 = (nn.LayerNorm.create(store, f"{p}.norm{j}", d, eps) for j in (1, 2, 3))
            self.decoder_layers.append(nn.DecoderBlock(sa, ca, ff, n1, n2, n3, drop(), drop(), drop(), pre_ln=False))
        self.decoder_norm = nn.LayerNorm.create(store, "decoder.norm", d, eps)
        self.generator = lin("generator", d, c.tgt_vocab_size)
        store.allocate()
        self._scale = math.sqrt(d)
        self._pending = None  # (logits shape, squeezed, src padding mask, tgt padding mask)

    # ------------------------------------------------------------------ input checks
    def _check_ids(self, ids, what: str, vocab: int) -> np.ndarray:
        c = self.config
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"Seq2Seq: {what} must be an integer array, got dtype {ids.dtype}")
        if ids.ndim not in (1, 2):
            raise ValueError(f"Seq2Seq: {what} must have shape (B, T) or (T,), got {ids.shape}")
        if ids.size == 0:
            raise ValueError(f"Seq2Seq: empty batch: {what} has shape {ids.shape}")
        T = ids.shape[-1]
        if T > c.max_len:
            raise ValueError(f"Seq2Seq: {what} length {T} exceeds max_len={c.max_len}")
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab:
            name = "src_vocab_size" if what == "src_ids" else "tgt_vocab_size"
            raise ValueError(f"Seq2Seq: {what}: token id {lo if lo < 0 else hi} out of range [0, {name}={vocab})")
        return ids

    def padding_mask(self, ids) -> np.ndarray:
        """Key-padding mask (B, T): True where ids != pad_id (True = attend)."""
        return np.asarray(ids) != self.config.pad_id

    def _embed(self, embed, drop, ids):
        x = embed(ids)
        x *= x.dtype.type(self._scale)  # √d · E[ids]
        return drop(self.positions(x))

    def _embed_backward(self, embed, drop, dx):
        dx = self.positions.backward(drop.backward(dx))
        embed.backward(dx * dx.dtype.type(self._scale))

    # ------------------------------------------------------------------ encoder / decoder
    def encode(self, src_ids, return_attention: bool = False):
        """src_ids (B, Ts) → memory (B, Ts, d) (the encoder output after encoder.norm); with
        return_attention, (memory, [P (B, H, Ts, Ts) per layer])."""
        src = self._check_ids(src_ids, "src_ids", self.config.src_vocab_size)
        if src.ndim == 1:
            src = src[None]
        mask = self.padding_mask(src)
        x = self._embed(self.src_embed, self.src_drop, src)
        attentions = []
        for block in self.encoder_layers:
            if return_attention:
                x, probs = block(x, mask=mask, return_attention=True)
                attentions.append(probs)
            else:
                x = block(x, mask=mask)
        memory = self.encoder_norm(x)
        return (memory, attentions) if return_attention else memory

    def decode(self, memory, src_mask, tgt_ids, return_attention: bool = False):
        """memory (B, Ts, d) from `encode`, src_mask (B, Ts) (True = real token, e.g.
        `padding_mask(src_ids)`), tgt_ids (B, Tt) → logits (B, Tt, tgt_vocab); with
        return_attention, (logits, [(P_self (B, H, Tt, Tt), P_cross (B, H, Tt, Ts)) per layer])."""
        tgt = self._check_ids(tgt_ids, "tgt_ids", self.config.tgt_vocab_size)
        if tgt.ndim == 1:
            tgt = tgt[None]
        memory = np.asarray(memory)
        if memory.ndim != 3 or memory.shape[0] != tgt.shape[0] or memory.shape[2] != self.config.d_model:
            raise ValueError(f"Seq2Seq.decode: memory must have shape ({tgt.shape[0]}, T_src, {self.config.d_model}), "
                             f"got {memory.shape}")
        if src_mask is not None:
            src_mask = np.asarray(src_mask)
            if src_mask.shape != memory.shape[:2]:
                raise ValueError(f"Seq2Seq.decode: src_mask has shape {src_mask.shape}, memory has {memory.shape[:2]} "
                                 "(batch, source length)")
        y = self._embed(self.tgt_embed, self.tgt_drop, tgt)
        tgt_mask = self.padding_mask(tgt)
        attentions = []
        for block in self.decoder_layers:
            if return_attention:
                y, probs = block(y, memory, self_mask=tgt_mask, memory_mask=src_mask, return_attention=True)
                attentions.append(probs)
            else:
                y = block(y, memory, self_mask=tgt_mask, memory_mask=src_mask)
        logits = self.generator(self.decoder_norm(y))
        return (logits, attentions) if return_attention else logits

    # ------------------------------------------------------------------ forward / backward
    def forward(self, src_ids, tgt_ids, return_attention: bool = False):
        """src_ids (B, Ts), tgt_ids (B, Tt) (or both 1-D) → logits (B, Tt, tgt_vocab) (teacher
        forcing: tgt_ids is the decoder input, BOS first). With return_attention, (logits,
        {"encoder": [P per layer], "decoder_self": [...], "cross": [...]})."""
        src = self._check_ids(src_ids, "src_ids", self.config.src_vocab_size)
        tgt = self._check_ids(tgt_ids, "tgt_ids", self.config.tgt_vocab_size)
        if src.ndim != tgt.ndim or (src.ndim == 2 and src.shape[0] != tgt.shape[0]):
            raise ValueError(f"Seq2Seq: src_ids {src.shape} and tgt_ids {tgt.shape} must have the same batch size")
        squeeze = src.ndim == 1
        if squeeze:
            src, tgt = src[None], tgt[None]
        src_mask = self.padding_mask(src)
        if return_attention:
            memory, enc_att = self.encode(src, return_attention=True)
            logits, dec_att = self.decode(memory, src_mask, tgt, return_attention=True)
            att = {"encoder": enc_att, "decoder_self": [a for a, _ in dec_att], "cross": [b for _, b in dec_att]}
        else:
            logits = self.decode(memory=self.encode(src), src_mask=src_mask, tgt_ids=tgt)
        self._pending = (logits.shape, squeeze) if self.training else None
        if squeeze:
            logits = logits[0]
            if return_attention:
                att = {k: [a[0] for a in v] for k, v in att.items()}
        return (logits, att) if return_attention else logits

    def backward(self, dlogits) -> None:
        """Accumulate every parameter's gradient for the last forward, given dL/dlogits."""
        shape, squeeze = self._pending_record()
        dlogits = self._check_grad("dlogits", dlogits, shape, squeeze)
        self._pending = None
        dy = self.decoder_norm.backward(self.generator.backward(dlogits))
        dmemory = None
        for block in reversed(self.decoder_layers):
            dy, dm = block.backward(dy)
            dmemory = dm if dmemory is None else dmemory + dm  # memory feeds every decoder layer
        self._embed_backward(self.tgt_embed, self.tgt_drop, dy)
        dx = self.encoder_norm.backward(dmemory)
        for block in reversed(self.encoder_layers):
            dx = block.backward(dx)
        self._embed_backward(self.src_embed, self.src_drop, dx)

    # ------------------------------------------------------------------ generation
    def generate(self, src_ids, max_new_tokens: int | None = None, max_len: int | None = None, **kwargs):
        """Hugging Face-style generation with a KV cache (see transformer_ext.generation.decoding),
        returning the decoder ids from BOS. EOS / pad default to the config's eos_id / pad_id;
        max_new_tokens defaults to max_len - 1 (`max_len` is accepted as its older name)."""
        from ..generation.decoding import generate
        if max_new_tokens is None:
            max_new_tokens = max_len if max_len is not None else self.config.max_len - 1
        kwargs.setdefault("eos_token_id", self.config.eos_id)
        kwargs.setdefault("pad_token_id", self.config.pad_id)
        return generate(self, src_ids, max_new_tokens, **kwargs)

    def generate_stream(self, src_ids, max_new_tokens: int | None = None, **kwargs):
        """Iterator of new decoder token ids (batch 1)."""
        from ..generation.decoding import generate_stream
        if max_new_tokens is None:
            max_new_tokens = self.config.max_len - 1
        kwargs.setdefault("eos_token_id", self.config.eos_id)
        return generate_stream(self, src_ids, max_new_tokens, **kwargs)
