"""`model.generate` / `model.generate_stream` with Hugging Face's argument names and meanings,
on the KV cache (kv_cache.py). Pipeline per step: logits → processors (repetition penalty;
sampling warpers temperature/top-k/top-p) → selection (argmax, sampling, or the beam step).

A *decoder* hides the model: `begin()` → logits (B, V) of the next token after the prompt,
`step(tokens (B,))` → logits after appending them, `reorder(idx)` (beam search). GPT's decoder
pre-fills the (left-padded) prompt; Seq2Seq's encodes the source once and starts from BOS.

Returned ids (int64): GPT — prompt followed by the new tokens (B, T + n); Seq2Seq — decoder ids
from BOS (B, 1 + n). Rows finished early (EOS or a stop string) are padded with pad_token_id
(default: the first EOS id, as HF); the loop ends when every row is finished or after
max_new_tokens. 1-D input → 1-D output.
"""
from __future__ import annotations

import numpy as np

from . import processors as P
from .kv_cache import GPTCache, Seq2SeqCache
from .loop import _EvalMode, _check_count
from .sampling import check_sampling_args, greedy_next, sample_next

_EARLY = (True, False, "never")


# ---------------------------------------------------------------------------------- decoders
class _GPTDecoder:
    def __init__(self, model, ids, attention_mask, max_new_tokens):
        self.model, self.ids, self.mask = model, ids, attention_mask
        self.cache = GPTCache(model, ids.shape[0], ids.shape[1] + max_new_tokens - 1 or 1)

    def begin(self):
        return self.cache.prefill(self.ids, self.mask)

    def step(self, tokens):
        return self.cache.step(tokens)

    def reorder(self, idx):
        self.cache.reorder(idx)


class _Seq2SeqDecoder:
    def __init__(self, model, src, max_new_tokens):
        self.cache = Seq2SeqCache(model, max_new_tokens)
        self.src, self.bos = src, model.config.bos_id

    def begin(self):
        self.cache.start(self.src)
        return self.cache.step(np.full(self.src.shape[0], self.bos, np.int64))

    def step(self, tokens):
        return self.cache.step(tokens)

    def reorder(self, idx):
        self.cache.reorder(idx)


def _prepare(model, ids, max_new_tokens, attention_mask, where):
    """Validate; returns (decoder, start ids (B, T0) int64, squeeze, vocab size)."""
    from ..models.gpt import GPT
    from ..models.seq2seq import Seq2Seq
    max_new_tokens = _check_count(max_new_tokens, "max_new_tokens", where)
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{where}: ids must be an integer array, got dtype {ids.dtype}")
    if ids.ndim not in (1, 2):
        raise ValueError(f"{where}: ids must have shape (T,) or (B, T), got {ids.shape}")
    if ids.size == 0:
        raise ValueError(f"{where}: empty prompt: ids has shape {ids.shape} (give at least one token)")
    squeeze = ids.ndim == 1
    ids = ids[None] if squeeze else ids
    ids = ids.astype(np.int64)
    if attention_mask is not None:
        am = np.asarray(attention_mask)
        am = am[None] if am.ndim == 1 else am
        if am.shape != ids.shape:
            raise ValueError(f"{where}: attention_mask has shape {am.shape}, ids has {ids.shape}")
        if not am.astype(bool).any(axis=1).all():
            raise ValueError(f"{where}: a row of attention_mask has no token")
        attention_mask = am
    if isinstance(model, GPT):
        c = model.config
        model._check_ids(ids)  # range and context checks
        if ids.shape[1] + max_new_tokens > c.n_positions:
            raise ValueError(f"{where}: prompt length {ids.shape[1]} + max_new_tokens {max_new_tokens} exceeds "
                             f"the context length n_positions={c.n_positions}")
        return _GPTDecoder(model, ids, attention_mask, max_new_tokens), ids, squeeze, c.vocab_size
    if isinstance(model, Seq2Seq):
        c = model.config
        model._check_ids(ids, "src_ids", c.src_vocab_size)
        if max_new_tokens + 1 > c.max_len:
            raise ValueError(f"{where}: max_new_tokens={max_new_tokens} new tokens after BOS exceed the model's "
                             f"max_len={c.max_len}")
        start = np.full((ids.shape[0], 1), c.bos_id, np.int64)
        return _Seq2SeqDecoder(model, ids, max_new_tokens), start, squeeze, c.tgt_vocab_size
    raise TypeError(f"{where}: unsupported model {type(model).__name__} (GPT or Seq2Seq)")


def _eos_pad(eos_token_id, pad_token_id, vocab, where):
    eos = [] if eos_token_id is None else ([eos_token_id] if np.isscalar(eos_token_id) else list(eos_token_id))
    for e in eos + ([] if pad_token_id is None else [pad_token_id]):
        if not 0 <= int(e) < vocab:
            raise ValueError(f"{where}: token id {e} (eos_token_id / pad_token_id) out of range [0, vocab_size={vocab})")
    if pad_token_id is None and eos:
        pad_token_id = eos[0]  # HF: pad with the EOS id when no pad id is set
    return np.array(eos, np.int64), pad_token_id


def _stop_checker(stop_strings, tokenizer, where):
    if stop_strings is None:
        return None
    stops = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings)
    if not stops or not all(isinstance(s, str) and s for s in stops):
        raise ValueError(f"{where}: stop_strings must be a non-empty string or a list of them")
    if tokenizer is None or not hasattr(tokenizer, "decode"):
        raise ValueError(f"{where}: stop_strings needs a tokenizer with decode(ids) (pass tokenizer=...)")

    def hit(new_tokens) -> bool:  # the generated text contains a stop string
        text = tokenizer.decode([int(t) for t in new_tokens])
        return any(s in text for s in stops)
    return hit


def _check_args(do_sample, temperature, top_k, top_p, repetition_penalty, num_beams, length_penalty,
                early_stopping, where):
    if do_sample:
        check_sampling_args(temperature, top_k, top_p, where)
    if not (isinstance(repetition_penalty, (int, float)) and repetition_penalty > 0):
        raise ValueError(f"{where}: repetition_penalty must be a number > 0, got {repetition_penalty!r}")
    if isinstance(num_beams, bool) or not isinstance(num_beams, (int, np.integer)) or num_beams < 1:
        raise ValueError(f"{where}: num_beams must be a positive int, got {num_beams!r}")
    if num_beams > 1 and do_sample:
        raise ValueError(f"{where}: beam sampling (num_beams > 1 with do_sample=True) is not supported")
    if early_stopping not in _EARLY or not isinstance(early_stopping, (bool, str)):
        raise ValueError(f"{where}: early_stopping must be True, False or 'never', got {early_stopping!r}")
    if not isinstance(length_penalty, (int, float)):
        raise ValueError(f"{where}: length_penalty must be a number, got {length_penalty!r}")


# ---------------------------------------------------------------------------------- entry points
def generate(model, ids, max_new_tokens, attention_mask=None, do_sample=False, temperature=1.0, top_k=None,
             top_p=None, repetition_penalty=1.0, num_beams=1, length_penalty=1.0, early_stopping=False,
             eos_token_id=None, pad_token_id=None, stop_strings=None, tokenizer=None, seed=None) -> np.ndarray:
    """See the module docstring; arguments as Hugging Face's `generate`."""
    where = f"{type(model).__name__}.generate"
    _check_args(do_sample, temperature, top_k, top_p, repetition_penalty, num_beams, length_penalty,
                early_stopping, where)
    dec, start, squeeze, vocab = _prepare(model, ids, max_new_tokens, attention_mask, where)
    eos, pad = _eos_pad(eos_token_id, pad_token_id, vocab, where)
    stop = _stop_checker(stop_strings, tokenizer, where)
    if stop is not None and pad is None and start.shape[0] > 1 and num_beams == 1:
        raise ValueError(f"{where}: batched stop_strings need pad_token_id (or eos_token_id) to pad finished rows")
    with _EvalMode(model):
        if num_beams > 1:
            out = _beam_search(dec, start, int(max_new_tokens), num_beams, float(repetition_penalty),
                               float(length_penalty), early_stopping, eos, pad, stop)
        else:
            rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
            seqs = start
            for tok in _sample_steps(dec, start, int(max_new_tokens), do_sample, temperature, top_k, top_p,
                                     float(repetition_penalty), eos, pad, stop, rng):
                seqs = np.concatenate([seqs, tok[:, None]], axis=1)
            out = seqs
    return out[0] if squeeze else out


def generate_stream(model, ids, max_new_tokens, do_sample=False, temperature=1.0, top_k=None, top_p=None,
                    repetition_penalty=1.0, eos_token_id=None, stop_strings=None, tokenizer=None, seed=None):
    """Yield the new token ids (ints) one at a time (batch 1; greedy or sampling). Stops after
    EOS (yielded), a stop string, or max_new_tokens."""
    where = f"{type(model).__name__}.generate_stream"
    _check_args(do_sample, temperature, top_k, top_p, repetition_penalty, 1, 1.0, False, where)
    ids = np.asarray(ids)
    if ids.ndim == 2 and ids.shape[0] != 1:
        raise ValueError(f"{where}: streams one sequence; ids has batch {ids.shape[0]}")
    dec, start, _, vocab = _prepare(model, ids, max_new_tokens, None, where)
    eos, pad = _eos_pad(eos_token_id, None, vocab, where)
    stop = _stop_checker(stop_strings, tokenizer, where)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    with _EvalMode(model):
        for tok in _sample_steps(dec, start, int(max_new_tokens), do_sample, temperature, top_k, top_p,
                                 float(repetition_penalty), eos, pad, stop, rng):
            yield int(tok[0])


# ---------------------------------------------------------------------------------- strategies
def _sample_steps(dec, seqs, max_new, do_sample, temperature, top_k, top_p, rep, eos, pad, stop, rng):
    """Greedy / sampling: yields the (B,) tokens of each step; finished rows get `pad`."""
    B, T0 = seqs.shape
    unfinished = np.ones(B, bool)
    logits = dec.begin()
    for step in range(max_new):
        z = P.repetition_penalty(logits, seqs, rep)
        if do_sample:
            tok = sample_next(z, rng, temperature, top_k, top_p)
        else:
            tok = greedy_next(z)
        if pad is not None:
            tok = np.where(unfinished, tok, pad)
        seqs = np.concatenate([seqs, tok[:, None]], axis=1)
        yield tok
        if len(eos):
            unfinished &= ~np.isin(tok, eos)
        if stop is not None:
            for b in np.flatnonzero(unfinished):
                if stop(seqs[b, T0:]):
                    unfinished[b] = False
        if not unfinished.any() or step == max_new - 1:
            return
        logits = dec.step(tok)


class _BeamHypotheses:
    """HF's BeamHypotheses: the n best finished hypotheses, score = Σ log p / len**length_penalty."""

    def __init__(self, num_beams, length_penalty, early_stopping, max_length):
        self.n, self.lp, self.early, self.max_length = num_beams, length_penalty, early_stopping, max_length
        self.beams = []
        self.worst = 1e9

    def add(self, hyp, sum_logprobs, generated_len):
        score = sum_logprobs / (generated_len ** self.lp)
        if len(self.beams) < self.n or score > self.worst:
            self.beams.append((score, hyp))
            if len(self.beams) > self.n:
                order = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[order[0][1]]
                self.worst = order[1][0]
            else:
                self.worst = min(score, self.worst)

    def is_done(self, best_sum_logprobs, cur_len, prompt_len):
        if len(self.beams) < self.n:
            return False
        if self.early is True:
            return True
        if self.early is False or self.lp <= 0:
            best = best_sum_logprobs / (cur_len - prompt_len) ** self.lp
        else:  # "never" with a positive length penalty: the best score reachable at max_length
            best = best_sum_logprobs / (self.max_length - prompt_len) ** self.lp
        return self.worst >= best


def _beam_search(dec, start, max_new, nb, rep, lp, early, eos, pad, stop):
    """Beam search with Hugging Face's semantics (BeamSearchScorer; transformers 5's vectorised
    form behaves the same): per step, the max(2, 1 + n_eos)·nb best (beam, token) continuations by
    running Σ log p; a candidate that ends its sequence (EOS, a stop string, or reaching the
    maximum length) among the first nb ranks becomes a finished hypothesis scored
    Σ log p / generated_len**length_penalty (generated_len counts the EOS); the others continue.
    A batch entry is done when its nb hypotheses can no longer be beaten (early_stopping:
    True — as soon as nb are finished; False — the best running beam at the current length;
    "never" — at max_length when length_penalty > 0). Returns the best hypothesis per entry,
    padded with pad_token_id."""
    B, T0 = start.shape
    max_length = T0 + max_new
    hyps = [_BeamHypotheses(nb, lp, early, max_length) for _ in range(B)]
    done = np.zeros(B, bool)
    expand = np.repeat(np.arange(B), nb)
    logits = dec.begin()
    dec.reorder(expand)
    logits = logits[expand]
    seqs = start[expand]
    beam_scores = np.zeros((B, nb))
    beam_scores[:, 1:] = -1e9  # only the first copy of each prompt starts a beam
    beam_scores = beam_scores.reshape(-1)
    n_cand = max(2, 1 + len(eos)) * nb
    while True:
        cur_len = seqs.shape[1] + 1  # the length the new scores are computed on
        last = cur_len >= max_length
        scores = P.repetition_penalty(P.log_softmax(logits), seqs, rep) + beam_scores[:, None]
        V = scores.shape[1]
        flat = scores.reshape(B, nb * V)
        top = np.argsort(-flat, axis=1, kind="stable")[:, :n_cand]
        top_scores = np.take_along_axis(flat, top, axis=1)
        next_scores = np.full((B, nb), -1e9)
        next_tokens = np.full((B, nb), 0 if pad is None else pad, np.int64)
        next_src = np.repeat(np.arange(B)[:, None] * nb, nb, axis=1)
        for b in range(B):
            j = 0
            for rank in range(n_cand):
                tok, src = int(top[b, rank] % V), b * nb + int(top[b, rank] // V)
                s = float(top_scores[b, rank])
                is_stop = last or (len(eos) and tok in eos) or (
                    stop is not None and stop(np.append(seqs[src, T0:], tok)))
                if is_stop:
                    if rank < nb and not done[b]:
                        hyps[b].add(np.append(seqs[src], tok), s, cur_len - T0)
                elif j < nb:
                    next_scores[b, j], next_tokens[b, j], next_src[b, j] = s, tok, src
                    j += 1
            done[b] = done[b] or hyps[b].is_done(float(next_scores[b, 0]), cur_len, T0)
        if last or done.all():
            break
        beam_scores = next_scores.reshape(-1)
        src = next_src.reshape(-1)
        tok = next_tokens.reshape(-1)
        seqs = np.concatenate([seqs[src], tok[:, None]], axis=1)
        dec.reorder(src)
        logits = dec.step(tok)
    best = [max(h.beams, key=lambda sh: sh[0])[1] for h in hyps]
    out = np.full((B, max(len(h) for h in best)), 0 if pad is None else pad, np.int64)
    for b, h in enumerate(best):
        out[b, :len(h)] = h
    return out
