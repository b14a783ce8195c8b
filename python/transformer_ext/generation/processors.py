"""Logits processors (Hugging Face's meanings), each a small function (B, V) → (B, V) float64:

- repetition_penalty (Keskar et al. 2019, as HF's RepetitionPenaltyLogitsProcessor): for every
  token already present in the row's sequence (prompt included), a positive logit is divided by
  the penalty and a negative one multiplied by it;
- temperature / top-k / top-p (applied after the penalty): `sampling.filter_logits`, inside
  `sampling.sample_next`;
- log_softmax (beam search scores log-probabilities; HF applies its processors after it).
"""
from __future__ import annotations

import numpy as np


def repetition_penalty(logits, seqs, penalty: float) -> np.ndarray:
    z = np.array(logits, dtype=np.float64)
    if penalty == 1.0:
        return z
    seqs = np.asarray(seqs)
    rows = np.repeat(np.arange(z.shape[0]), seqs.shape[1])
    cols = seqs.reshape(-1)
    s = z[rows, cols]
    z[rows, cols] = np.where(s < 0, s * penalty, s / penalty)
    return z


def log_softmax(z) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))
