"""Bert: the BERT encoder (Devlin et al. 2019), post-LN, with an optional masked-LM head,
and a hand-written backward.

    h_0 = Dropout(LN_emb(E_word[ids] + P[0:T] + E_type[token_type_ids]))
    per layer (post-LN):  h = LN_1(h + Dropout(SelfAttn(h, key padding = attention_mask)))
                          h = LN_2(h + Dropout(W_out act(W_in h)))
    MLM head:  logits = LN_t(act(W_t h)) E_wordᵀ + b          (decoder tied to the word embeddings)

Parameter names and layouts are Hugging Face's BertForMaskedLM state dict (torch.nn.Linear
weights are (out, in)); without the head, the same names minus `cls.*` (BertModel without the
pooler, under the `bert.` prefix). The tied decoder weight / bias (`cls.predictions.decoder.*`)
are not separate parameters: the decoder reads `bert.embeddings.word_embeddings.weight` as Wᵀ
and `cls.predictions.bias` as its bias, and its gradients add into theirs.

Differences from Hugging Face, by design:
- the word-embedding row of `pad_token_id` is initialised to zero (as HF does) but its
  gradient is not masked (torch's `padding_idx` semantics are not reproduced);
- a query row whose keys are all masked yields 0 (HF's finfo.min additive mask gives a
  uniform average); with at least one attended token per sequence the two agree.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .. import nn
from ..nn.activations import from_hf
from .params import Model


@dataclass
class BertConfig:
    """Hugging Face BertConfig's names and defaults (BERT-base), plus `add_mlm_head` and `seed`."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"  # Hugging Face's "gelu" is the erf form; "gelu_new" the tanh form
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    add_mlm_head: bool = True
    seed: int = 0

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"BertConfig: {name} must be a positive int, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"BertConfig: hidden_size={self.hidden_size} is not divisible by "
                             f"num_attention_heads={self.num_attention_heads}")
        from_hf(self.hidden_act, "BertConfig.hidden_act")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise ValueError(f"BertConfig: {name} must be in [0, 1), got {p!r}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"BertConfig: layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"BertConfig: pad_token_id={self.pad_token_id} out of range [0, vocab_size={self.vocab_size})")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BertConfig":
        """From a dict such as a Hugging Face config.json; keys this class does not know are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class BertOutput:
    """What `Bert(...)` returns: `last_hidden_state` (B, T, H); `logits` (B, T, V) with the MLM
    head (else None); `attentions` — one (B, heads, T, T) array per layer — with return_attention."""

    last_hidden_state: np.ndarray
    logits: np.ndarray | None = None
    attentions: list | None = None


class Bert(Model):
    """`Bert(config, dtype=np.float32)`; float64 runs on the NumPy backend only (gradient checks)."""

    def __init__(self, config: BertConfig, dtype=np.float32):
        if not isinstance(config, BertConfig):
            raise TypeError(f"Bert: config must be a BertConfig, got {type(config).__name__}")
        self.config = c = config
        store = self._init_store(dtype, c.seed)
        d, std, eps = c.hidden_size, c.initializer_range, c.layer_norm_eps
        act = from_hf(c.hidden_act, "BertConfig.hidden_act")
        pad = c.pad_token_id

        def word_init(rng, shape):  # normal(0, std) with the padding row zeroed (HF's _init_weights)
            w = rng.standard_normal(shape) * std
            if pad is not None:
                w[pad] = 0.0
            return w

        e = "bert.embeddings"
        self.word_embeddings = nn.Embedding(store.declare(f"{e}.word_embeddings.weight", (c.vocab_size, d), init=word_init))
        self.position_embeddings = nn.LearnedPositions.create(store, f"{e}.position_embeddings.weight",
                                                              c.max_position_embeddings, d, std)
        self.token_type_embeddings = nn.Embedding.create(store, f"{e}.token_type_embeddings.weight", c.type_vocab_size, d, std)
        self.emb_norm = nn.LayerNorm.create(store, f"{e}.LayerNorm", d, eps)
        self.emb_drop = nn.Dropout(c.hidden_dropout_prob, self.rng)

        def lin(prefix, n_in, n_out):
            return nn.Linear.create(store, prefix, n_in, n_out, layout="out_in", std=std)

        self.layer = []
        for i in range(c.num_hidden_layers):
            p = f"bert.encoder.layer.{i}"
            q, k, v = (lin(f"{p}.attention.self.{n}", d, d) for n in ("query", "key", "value"))
            attn = nn.MultiHeadAttention(c.num_attention_heads, out=lin(f"{p}.attention.output.dense", d, d),
                                         q=q, k=k, v=v, attn_dropout=nn.Dropout(c.attention_probs_dropout_prob, self.rng))
            norm1 = nn.LayerNorm.create(store, f"{p}.attention.output.LayerNorm", d, eps)
            ffn = nn.FeedForward(lin(f"{p}.intermediate.dense", d, c.intermediate_size),
                                 lin(f"{p}.output.dense", c.intermediate_size, d), act)
            norm2 = nn.LayerNorm.create(store, f"{p}.output.LayerNorm", d, eps)
            self.layer.append(nn.TransformerBlock(attn, ffn, norm1, norm2, nn.Dropout(c.hidden_dropout_prob, self.rng),
                                                  nn.Dropout(c.hidden_dropout_prob, self.rng), pre_ln=False))
        self.head = None
        if c.add_mlm_head:
            # HF's order: cls.predictions.bias, then the transform (dense, LayerNorm)
            bias = store.declare("cls.predictions.bias", (c.vocab_size,), init="zeros")
            self.head = [lin("cls.predictions.transform.dense", d, d), nn.Activation(act),
                         nn.LayerNorm.create(store, "cls.predictions.transform.LayerNorm", d, eps),
                         nn.Linear(self.word_embeddings.weight, bias, layout="out_in")]  # tied decoder
        store.allocate()
        self._pending = None  # (hidden shape, logits shape or None, squeezed)

    # ------------------------------------------------------------------ input checks
    def _check_ids(self, ids, attention_mask, token_type_ids):
        c = self.config
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"Bert: ids must be an integer array, got dtype {ids.dtype}")
        if ids.ndim not in (1, 2):
            raise ValueError(f"Bert: ids must have shape (B, T) or (T,), got {ids.shape}")
        if ids.size == 0:
            raise ValueError(f"Bert: empty batch: ids has shape {ids.shape}")
        T = ids.shape[-1]
        if T > c.max_position_embeddings:
            raise ValueError(f"Bert: sequence length {T} exceeds max_position_embeddings={c.max_position_embeddings}")
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= c.vocab_size:
            raise ValueError(f"Bert: token id {lo if lo < 0 else hi} out of range [0, vocab_size={c.vocab_size})")
        if attention_mask is not None:
            attention_mask = np.asarray(attention_mask)
            if attention_mask.shape != ids.shape:
                raise ValueError(f"Bert: attention_mask has shape {attention_mask.shape}, ids has shape {ids.shape}")
            if attention_mask.dtype.kind not in "biu":
                raise TypeError(f"Bert: attention_mask must be bool or int (1 = attend, 0 = padding), "
                                f"got dtype {attention_mask.dtype}")
            if attention_mask.dtype.kind != "b" and not np.all((attention_mask == 0) | (attention_mask == 1)):
                raise ValueError("Bert: attention_mask values must be 0 or 1")
            attention_mask = attention_mask.astype(bool)
        if token_type_ids is not None:
            token_type_ids = np.asarray(token_type_ids)
            if token_type_ids.shape != ids.shape:
                raise ValueError(f"Bert: token_type_ids has shape {token_type_ids.shape}, ids has shape {ids.shape}")
            if token_type_ids.dtype.kind not in "iu":
                raise TypeError(f"Bert: token_type_ids must be an integer array, got dtype {token_type_ids.dtype}")
            lo, hi = int(token_type_ids.min()), int(token_type_ids.max())
            if lo < 0 or hi >= c.type_vocab_size:
                raise ValueError(f"Bert: token type id {lo if lo < 0 else hi} out of range "
                                 f"[0, type_vocab_size={c.type_vocab_size})")
        else:
            token_type_ids = np.zeros(ids.shape, np.int64)
        return ids, attention_mask, token_type_ids

    # ------------------------------------------------------------------ forward / backward
    def forward(self, ids, attention_mask=None, token_type_ids=None, return_attention: bool = False):
        """ids (B, T) or (T,) ints; attention_mask same shape (1/True = token, 0/False = padding);
        token_type_ids same shape (default 0). Returns a BertOutput, or (BertOutput, attentions)
        with return_attention (attentions: per layer (B, heads, T, T), before attention dropout)."""
        ids, mask, types = self._check_ids(ids, attention_mask, token_type_ids)
        squeeze = ids.ndim == 1
        if squeeze:
            ids, types = ids[None], types[None]
            mask = None if mask is None else mask[None]
        x = self.word_embeddings(ids)
        x = self.position_embeddings(x)
        x += self.token_type_embeddings(types)
        x = self.emb_drop(self.emb_norm(x))
        attentions = []
        for block in self.layer:
            if return_attention:
                x, probs = block(x, mask=mask, return_attention=True)
                attentions.append(probs)
            else:
                x = block(x, mask=mask)
        logits = None
        if self.head is not None:
            logits = x
            for layer in self.head:
                logits = layer(logits)
        self._pending = (x.shape, None if logits is None else logits.shape, squeeze) if self.training else None
        if squeeze:
            x = x[0]
            logits = None if logits is None else logits[0]
            attentions = [a[0] for a in attentions]
        out = BertOutput(x, logits, attentions if return_attention else None)
        return (out, attentions) if return_attention else out

    def backward(self, dlogits=None, dhidden=None) -> None:
        """Accumulate every parameter's gradient for the last forward, given dL/dlogits (MLM head)
        and/or dL/dlast_hidden_state."""
        hshape, lshape, squeeze = self._pending_record()
        if dlogits is None and dhidden is None:
            raise ValueError("Bert.backward: give dlogits and/or dhidden")
        if dlogits is not None and lshape is None:
            raise ValueError("Bert.backward: dlogits given but the model has no MLM head (add_mlm_head=False)")
        dx = None
        if dlogits is not None:
            dx = self._check_grad("dlogits", dlogits, lshape, squeeze)
            for layer in reversed(self.head):
                dx = layer.backward(dx)
        if dhidden is not None:
            dh = self._check_grad("dhidden", dhidden, hshape, squeeze)
            dx = dh.copy() if dx is None else dx + dh
        self._pending = None
        for block in reversed(self.layer):
            dx = block.backward(dx)
        dx = self.emb_norm.backward(self.emb_drop.backward(dx))
        self.token_type_embeddings.backward(dx)
        self.word_embeddings.backward(self.position_embeddings.backward(dx))

    # ------------------------------------------------------------------ inference (io/hf.py)
    @classmethod
    def from_pretrained(cls, local_dir, dtype=np.float32) -> "Bert":
        """Load a Hugging Face BERT folder (config.json + model.safetensors / pytorch_model.bin):
        BertForMaskedLM (with the MLM head) or BertModel (the pooler is ignored), in eval mode.
        dtype: np.float32 / "fp32" (default), np.float64 (NumPy backend), or "bf16" (float32
        parameters, Linear weights packed in bfloat16: Model.pack_weights)."""
        from ..io.hf import load_bert
        return load_bert(local_dir, dtype=dtype)

    def encode(self, texts, tokenizer, batch_size: int = 32) -> np.ndarray:
        """Mean-pooled (padding excluded), L2-normalised sentence embeddings (N, hidden_size);
        `tokenizer.encode_batch(texts, padding="longest")` gives ids / attention_mask."""
        from ..io.hf import mean_pooled_embeddings
        return mean_pooled_embeddings(self, texts, tokenizer, batch_size)


def mlm_mask_tokens(ids, vocab_size: int, mask_token_id: int, rng=None, mlm_probability: float = 0.15,
                    special_token_ids=(), attention_mask=None, ignore_index: int = -100):
    """BERT's masked-LM corruption (Devlin et al. 2019, §3.1): select each (non-special,
    non-padding) position with probability `mlm_probability`; of the selected, 80% become
    `mask_token_id`, 10% a uniformly random token, 10% stay unchanged. Returns (input_ids,
    labels): labels hold the original id at selected positions and `ignore_index` elsewhere
    (the value `ops.cross_entropy` ignores). `rng`: a np.random.Generator or a seed."""
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"mlm_mask_tokens: ids must be an integer array, got dtype {ids.dtype}")
    if not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"mlm_mask_tokens: mlm_probability must be in (0, 1), got {mlm_probability!r}")
    if not 0 <= mask_token_id < vocab_size:
        raise ValueError(f"mlm_mask_tokens: mask_token_id={mask_token_id} out of range [0, vocab_size={vocab_size})")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    eligible = ~np.isin(ids, np.asarray(list(special_token_ids), dtype=np.int64))
    if attention_mask is not None:
        eligible &= np.asarray(attention_mask).astype(bool)
    selected = (rng.random(ids.shape) < mlm_probability) & eligible
    labels = np.where(selected, ids, ignore_index).astype(np.int64)
    u = rng.random(ids.shape)
    inputs = ids.astype(np.int64, copy=True)
    inputs[selected & (u < 0.8)] = mask_token_id
    random_pos = selected & (u >= 0.8) & (u < 0.9)
    inputs[random_pos] = rng.integers(0, vocab_size, int(random_pos.sum()))
    return inputs, labels
