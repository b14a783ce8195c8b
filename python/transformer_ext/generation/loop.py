"""The no-cache decoding loops (the readable reference): each step asks a *step function* for
the next-token logits of every row by re-running the model on the whole (windowed) prefix.
`GPT.generate` / `Seq2Seq.generate` use the KV-cache path instead (kv_cache.py, decoding.py);
tests/test_generate.py checks both give the same tokens. Unlike the cached path, `generate`
here slides a window once the sequence outgrows the context.
"""
from __future__ import annotations

import numpy as np

from .sampling import check_sampling_args, greedy_next, sample_next


def _check_count(n, name: str, where: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{where}: {name} must be an int, got {n!r}")
    if n <= 0:
        raise ValueError(f"{where}: {name} must be > 0, got {n}")
    return int(n)


class _EvalMode:
    """Runs the block in eval mode (no dropout, no activations kept), then restores the mode."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)


def _gpt_step(model, ids, state):
    """Next-token logits (B, V) for the prefix ids (B, T): the model sees the last n_positions
    tokens (a sliding window once the sequence outgrows the context)."""
    n = model.config.n_positions
    logits = model(ids[:, -n:])
    return logits[:, -1, :], state


def _choose(logits, do_sample, rng, temperature, top_k, top_p):
    if do_sample:
        return sample_next(logits, rng, temperature, top_k, top_p)
    return greedy_next(logits)


def generate(model, ids, max_new_tokens: int, do_sample: bool = False, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, eos_token_id: int | None = None,
             seed=None) -> np.ndarray:
    """Continue the prompt `ids` ((T,) or (B, T) ints) of a decoder-only model (GPT) by up to
    `max_new_tokens` tokens: greedy (argmax) by default, or sampled from softmax(logits /
    temperature) restricted by top_k / top_p when do_sample. Returns int64 prompt + new tokens
    with the input's rank. With eos_token_id, a row that has produced it is finished: its later
    positions are filled with eos_token_id, and the loop stops when every row is finished (so the
    result may be shorter than T + max_new_tokens). The prompt must fit the context
    (T <= n_positions); the generated continuation may run past it — the model then sees the
    last n_positions tokens. `seed`: an int or np.random.Generator for sampling."""
    where = "generate"
    max_new_tokens = _check_count(max_new_tokens, "max_new_tokens", where)
    if do_sample:
        check_sampling_args(temperature, top_k, top_p, where)
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{where}: ids must be an integer array, got dtype {ids.dtype}")
    if ids.ndim not in (1, 2):
        raise ValueError(f"{where}: ids must have shape (T,) or (B, T), got {ids.shape}")
    if ids.size == 0:
        raise ValueError(f"{where}: empty prompt: ids has shape {ids.shape} (give at least one token)")
    cfg = model.config
    if ids.shape[-1] > cfg.n_positions:
        raise ValueError(f"{where}: prompt length {ids.shape[-1]} exceeds the context length n_positions={cfg.n_positions}")
    if eos_token_id is not None and not 0 <= eos_token_id < cfg.vocab_size:
        raise ValueError(f"{where}: eos_token_id={eos_token_id} out of range [0, vocab_size={cfg.vocab_size})")
    squeeze = ids.ndim == 1
    out = ids[None].astype(np.int64) if squeeze else ids.astype(np.int64)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    finished = np.zeros(out.shape[0], bool)
    state = None
    with _EvalMode(model):
        for _ in range(max_new_tokens):
            logits, state = _gpt_step(model, out, state)
            nxt = _choose(logits, do_sample, rng, temperature, top_k, top_p)
            if eos_token_id is not None:
                nxt[finished] = eos_token_id
                finished |= nxt == eos_token_id
            out = np.concatenate([out, nxt[:, None]], axis=1)
            if eos_token_id is not None and finished.all():
                break
    return out[0] if squeeze else out


def _decoder_step(model, memory, src_mask, tgt, state):
    """Next-token logits (B, V) of the Seq2Seq decoder for the prefix tgt (B, t)."""
    return model.decode(memory, src_mask, tgt)[:, -1, :], state


def translate(model, src_ids, max_len: int | None = None, do_sample: bool = False, temperature: float = 1.0,
              top_k: int | None = None, top_p: float | None = None, seed=None) -> np.ndarray:
    """Decode a Seq2Seq model from BOS: returns int64 decoder ids (B, ≤ 1 + max_len) (or 1-D for 1-D
    src_ids) starting with bos_id; a row stops at eos_id (kept) and is padded with pad_id after it;
    the loop ends when every row has produced EOS or after max_len new tokens (default: max_len of
    the config minus 1, the longest decoder input the positions allow)."""
    where = "translate"
    cfg = model.config
    if max_len is None:
        max_len = cfg.max_len - 1
    max_len = _check_count(max_len, "max_len", where)
    if max_len + 1 > cfg.max_len:
        raise ValueError(f"{where}: max_len={max_len} new tokens after BOS exceed the model's max_len={cfg.max_len}")
    if do_sample:
        check_sampling_args(temperature, top_k, top_p, where)
    src = np.asarray(src_ids)
    squeeze = src.ndim == 1
    if squeeze:
        src = src[None]
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    with _EvalMode(model):
        memory = model.encode(src)  # validates src_ids
        src_mask = model.padding_mask(src)
        B = src.shape[0]
        out = np.full((B, 1), cfg.bos_id, np.int64)
        finished = np.zeros(B, bool)
        state = None
        for _ in range(max_len):
            logits, state = _decoder_step(model, memory, src_mask, out, state)
            nxt = _choose(logits, do_sample, rng, temperature, top_k, top_p)
            nxt[finished] = cfg.pad_id
            finished |= nxt == cfg.eos_id
            out = np.concatenate([out, nxt[:, None]], axis=1)
            if finished.all():
                break
    return out[0] if squeeze else out


def greedy_translate(model, src_ids, max_len: int | None = None) -> np.ndarray:
    """Greedy decoding of a Seq2Seq model from BOS (see `translate`)."""
    return translate(model, src_ids, max_len=max_len)
