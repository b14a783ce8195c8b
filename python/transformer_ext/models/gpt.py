"""GPT: the GPT-2 architecture (Radford et al. 2019), decoder-only, with hand-written backward.

    h_0 = Dropout(E[ids] + P[0:T])                                       (token + learned positions)
    h_l = h_{l-1} + Dropout(Attn(LN_1(h_{l-1})));  h_l += Dropout(MLP(LN_2(h_l)))   (pre-LN blocks)
    logits = LN_f(h_L) Eᵀ                                                 (LM head tied to E)

Parameter names and layouts are those of Hugging Face's GPT2LMHeadModel state dict (Conv1D
weights are (in, out)); the tied `lm_head.weight` is not a separate parameter — the head reads
`transformer.wte.weight` as Wᵀ (no copy) and its gradient adds into wte's.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .. import nn
from ..nn.activations import from_hf
from .params import Model


@dataclass
class GPTConfig:
    """Hugging Face GPT2Config's names and defaults (GPT-2 small)."""

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None           # feed-forward width; None → 4·n_embd
    activation_function: str = "gelu_new"  # "gelu_new"/"gelu_pytorch_tanh": tanh form; "gelu": erf; "relu"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True
    seed: int = 0

    def __post_init__(self):
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"GPTConfig: {name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.n_inner is not None and (not isinstance(self.n_inner, (int, np.integer)) or self.n_inner < 1):
            raise ValueError(f"GPTConfig: n_inner must be a positive int or None, got {self.n_inner!r}")
        from_hf(self.activation_function, "GPTConfig.activation_function")
        for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise ValueError(f"GPTConfig: {name} must be in [0, 1), got {p!r}")
        if not self.layer_norm_epsilon > 0:
            raise ValueError(f"GPTConfig: layer_norm_epsilon must be > 0, got {self.layer_norm_epsilon!r}")

    @property
    def d_ff(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        """From a dict such as a Hugging Face config.json; keys this class does not know are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class GPT(Model):
    """`GPT(config, dtype=np.float32)`; float64 runs on the NumPy backend only (gradient checks)."""

    def __init__(self, config: GPTConfig, dtype=np.float32):
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT: config must be a GPTConfig, got {type(config).__name__}")
        self.config = c = config
        store = self._init_store(dtype, c.seed)
        d, std = c.n_embd, c.initializer_range
        # GPT-2: residual projections scaled by 1/√(2·n_layer) (two per block add into the stream)
        std_proj = std / math.sqrt(2 * c.n_layer)
        act = from_hf(c.activation_function, "GPTConfig.activation_function")

        self.wte = nn.Embedding.create(store, "transformer.wte.weight", c.vocab_size, d, std)
        self.wpe = nn.LearnedPositions.create(store, "transformer.wpe.weight", c.n_positions, d, std)
        self.drop = nn.Dropout(c.embd_pdrop, self.rng)
        self.h = []
        for i in range(c.n_layer):
            p = f"transformer.h.{i}"
            ln_1 = nn.LayerNorm.create(store, f"{p}.ln_1", d, c.layer_norm_epsilon)
            attn = nn.MultiHeadAttention(
                c.n_head,
                qkv=nn.Linear.create(store, f"{p}.attn.c_attn", d, 3 * d, std=std),
                out=nn.Linear.create(store, f"{p}.attn.c_proj", d, d, std=std_proj),
                causal=True, attn_dropout=nn.Dropout(c.attn_pdrop, self.rng))
            ln_2 = nn.LayerNorm.create(store, f"{p}.ln_2", d, c.layer_norm_epsilon)
            mlp = nn.FeedForward(nn.Linear.create(store, f"{p}.mlp.c_fc", d, c.d_ff, std=std),
                                 nn.Linear.create(store, f"{p}.mlp.c_proj", c.d_ff, d, std=std_proj), act)
            self.h.append(nn.TransformerBlock(attn, mlp, ln_1, ln_2, nn.Dropout(c.resid_pdrop, self.rng),
                                              nn.Dropout(c.resid_pdrop, self.rng), pre_ln=True))
        self.ln_f = nn.LayerNorm.create(store, "transformer.ln_f", d, c.layer_norm_epsilon)
        if c.tie_word_embeddings:  # logits = h Eᵀ: the head reads wte (V, d) as Wᵀ, no copy
            self.lm_head = nn.Linear(self.wte.weight, None, layout="out_in")
        else:
            self.lm_head = nn.Linear.create(store, "lm_head", d, c.vocab_size, bias=False, layout="out_in", std=std)
        store.allocate()
        self._pending = None  # (ids shape, squeezed) of the forward awaiting backward

    # ------------------------------------------------------------------ input checks
    def _check_ids(self, ids) -> np.ndarray:
        c = self.config
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"GPT: ids must be an integer array, got dtype {ids.dtype}")
        if ids.ndim not in (1, 2):
            raise ValueError(f"GPT: ids must have shape (B, T) or (T,), got {ids.shape}")
        if ids.size == 0:
            raise ValueError(f"GPT: empty batch: ids has shape {ids.shape}")
        T = ids.shape[-1]
        if T > c.n_positions:
            raise ValueError(f"GPT: sequence length {T} exceeds the context length n_positions={c.n_positions}")
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= c.vocab_size:
            raise ValueError(f"GPT: token id {lo if lo < 0 else hi} out of range [0, vocab_size={c.vocab_size})")
        return ids

    # ------------------------------------------------------------------ forward / backward
    def forward(self, ids, return_attention: bool = False):
        """ids (B, T) or (T,) ints → logits (B, T, V) (or (T, V)); with return_attention,
        (logits, [P_l (B, H, T, T) for each layer]) (probabilities before attention dropout)."""
        ids = self._check_ids(ids)
        squeeze = ids.ndim == 1
        if squeeze:
            ids = ids[None]
        x = self.drop(self.wpe(self.wte(ids)))
        attentions = []
        for block in self.h:
            if return_attention:
                x, probs = block(x, return_attention=True)
                attentions.append(probs)
            else:
                x = block(x)
        logits = self.lm_head(self.ln_f(x))
        self._pending = (logits.shape, squeeze) if self.training else None
        if squeeze:
            logits = logits[0]
            attentions = [a[0] for a in attentions]
        return (logits, attentions) if return_attention else logits

    def backward(self, dlogits) -> None:
        """Accumulate every parameter's gradient for the last forward, given dL/dlogits."""
        shape, squeeze = self._pending_record()
        dlogits = self._check_grad("dlogits", dlogits, shape, squeeze)
        self._pending = None
        dx = self.ln_f.backward(self.lm_head.backward(dlogits))
        for block in reversed(self.h):
            dx = block.backward(dx)
        self.wte.backward(self.wpe.backward(self.drop.backward(dx)))

    # ------------------------------------------------------------------ inference (generation/, io/hf.py)
    def generate(self, ids, max_new_tokens, **kwargs):
        """Hugging Face-style generation with a KV cache (see transformer_ext.generation.decoding):
        attention_mask, do_sample, temperature, top_k, top_p, repetition_penalty, num_beams,
        length_penalty, early_stopping, eos_token_id, pad_token_id, stop_strings, tokenizer, seed.
        Returns int64 prompt + new tokens. On the cpp backend a float32 model's weights are packed
        (fp32) at the first call unless `pack_weights` was called (see generation/fused.py)."""
        from ..generation.decoding import generate
        for k, v in getattr(self, "generation_defaults", {}).items():  # from_pretrained: HF's defaults
            kwargs.setdefault(k, v)
        return generate(self, ids, max_new_tokens, **kwargs)

    def generate_stream(self, ids, max_new_tokens, **kwargs):
        """Iterator of new token ids (batch 1; greedy or sampling)."""
        from ..generation.decoding import generate_stream
        if "eos_token_id" in getattr(self, "generation_defaults", {}):
            kwargs.setdefault("eos_token_id", self.generation_defaults["eos_token_id"])
        return generate_stream(self, ids, max_new_tokens, **kwargs)

    @classmethod
    def from_pretrained(cls, local_dir, dtype=np.float32) -> "GPT":
        """Load a Hugging Face GPT-2 folder (config.json + model.safetensors / pytorch_model.bin), in eval
        mode. dtype: np.float32 / "fp32" (default), np.float64 (NumPy backend), or "bf16": float32
        parameters with the Linear weights packed in bfloat16 for inference (Model.pack_weights)."""
        from ..io.hf import load_gpt
        return load_gpt(local_dir, dtype=dtype)
