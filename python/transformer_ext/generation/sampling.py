"""Choosing the next token from a row of logits: greedy (argmax), or sampling from
softmax(logits / temperature) restricted by top-k and/or nucleus (top-p) filtering
(Holtzman et al. 2020), with Hugging Face's semantics:

- top_k: keep the k highest logits (ties with the k-th are kept);
- top_p: keep the smallest set of most probable tokens whose probability mass reaches top_p
  (a token is kept when the mass strictly before it, in descending order, is < top_p; the most
  probable token is always kept);
- both: top-k first, then top-p on what is left.
"""
from __future__ import annotations

import numpy as np


def check_sampling_args(temperature, top_k, top_p, where: str = "generate") -> None:
    if not (isinstance(temperature, (int, float, np.floating)) and temperature > 0 and np.isfinite(temperature)):
        raise ValueError(f"{where}: temperature must be a finite number > 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"{where}: top_k must be a positive int or None, got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float, np.floating)) and 0.0 < top_p <= 1.0):
        raise ValueError(f"{where}: top_p must be in (0, 1] or None, got {top_p!r}")


def filter_logits(logits, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> np.ndarray:
    """logits (B, V) → float64 logits / temperature with the filtered-out tokens set to -inf."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    V = z.shape[-1]
    if top_k is not None and top_k < V:
        kth = np.partition(z, V - top_k, axis=-1)[:, V - top_k][:, None]  # the k-th largest per row
        z[z < kth] = -np.inf
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-z, axis=-1, kind="stable")
        zs = np.take_along_axis(z, order, axis=-1)
        p = np.exp(zs - zs[:, :1])
        p /= p.sum(axis=-1, keepdims=True)
        before = np.cumsum(p, axis=-1) - p  # probability mass strictly before each sorted token
        drop_sorted = before >= top_p
        drop_sorted[:, 0] = False
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        z[drop] = -np.inf
    return z


def sample_next(logits, rng: np.random.Generator, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None) -> np.ndarray:
    """One token per row of logits (B, V), sampled from the filtered softmax (inverse CDF with
    one uniform per row, so the draw is reproducible under a seeded generator)."""
    z = filter_logits(logits, temperature, top_k, top_p)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    cdf = np.cumsum(p, axis=-1)
    u = rng.random((z.shape[0], 1)) * cdf[:, -1:]
    tok = (cdf <= u).sum(axis=-1)  # first index with cdf > u; zero-probability tokens never win
    return np.minimum(tok, z.shape[-1] - 1).astype(np.int64)


def greedy_next(logits) -> np.ndarray:
    """argmax per row (the first index on ties)."""
    return np.argmax(np.asarray(logits), axis=-1).astype(np.int64)
