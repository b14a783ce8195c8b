"""Pictures (matplotlib is an optional extra: `pip install matplotlib`).

    logits, att = model(ids, return_attention=True)
    tx.plot.attention(att, [tok.decode([i]) for i in ids], "attention.png")

`attention` draws a grid of heat maps, one row per layer and one column per head, with the
query tokens down the side and the key tokens along the top (cross-attention: pass
tokens=(query_tokens, key_tokens)). `loss_curves` plots a Trainer's history.
"""
from __future__ import annotations

import os
import sys

import numpy as np


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("transformer_ext.plot needs matplotlib, an optional extra: pip install matplotlib") from None
    if "matplotlib.pyplot" not in sys.modules:  # headless: render to files only
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def attention(weights, tokens, path, layers=None, heads=None, batch: int = 0, title: str | None = None,
              cell: float = 0.28) -> str:
    """Save the attention weights as a PNG heat-map grid and return `path`.

    weights: a list (one per layer) of arrays (H, Tq, Tk) or (B, H, Tq, Tk) (batch `batch` is
    drawn), or one such array; tokens: Tq labels (self-attention) or (query labels, key labels).
    layers / heads: indices to draw (default all)."""
    if isinstance(weights, np.ndarray):
        weights = [weights]
    mats = []
    for i, w in enumerate(weights):
        w = np.asarray(w, dtype=np.float64)
        if w.ndim == 4:
            w = w[batch]
        if w.ndim != 3:
            raise ValueError(f"plot.attention: layer {i} weights must be (H, Tq, Tk) or (B, H, Tq, Tk), got {w.shape}")
        mats.append(w)
    if isinstance(tokens, tuple) and len(tokens) == 2 and not isinstance(tokens[0], str):
        q_tok, k_tok = list(tokens[0]), list(tokens[1])
    else:
        q_tok = k_tok = list(tokens)
    layers = list(range(len(mats))) if layers is None else list(layers)
    H = mats[0].shape[0]
    heads = list(range(H)) if heads is None else list(heads)
    Tq, Tk = mats[0].shape[1:]
    if len(q_tok) != Tq or len(k_tok) != Tk:
        raise ValueError(f"plot.attention: {len(q_tok)} query / {len(k_tok)} key tokens for weights of shape "
                         f"(Tq={Tq}, Tk={Tk})")
    plt = _pyplot()
    fig_w = max(3.0, len(heads) * (Tk * cell + 1.0))
    fig_h = max(3.0, len(layers) * (Tq * cell + 1.0))
    fig, axes = plt.subplots(len(layers), len(heads), figsize=(fig_w, fig_h), squeeze=False)
    show = lambda t: repr(t)[1:-1].replace(" ", "\u2423") if isinstance(t, str) else str(t)  # noqa: E731  (visible \n, ␣)
    for r, li in enumerate(layers):
        for c, hi in enumerate(heads):
            ax = axes[r][c]
            ax.imshow(mats[li][hi], cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
            ax.set_xticks(range(Tk))
            ax.set_yticks(range(Tq))
            ax.set_xticklabels([show(t) for t in k_tok], rotation=90, fontsize=7)
            ax.set_yticklabels([show(t) for t in q_tok], fontsize=7)
            ax.set_title(f"layer {li} head {hi}", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def loss_curves(history: dict, path) -> str:
    """Train loss per step and validation loss per evaluation (a Trainer's history) as a PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    tr = history.get("train", [])
    if tr:
        ax.plot([e["step"] for e in tr], [e["loss"] for e in tr], lw=0.8, alpha=0.7, label="train")
    va = history.get("val", [])
    if va:
        ax.plot([e["step"] for e in va], [e["loss"] for e in va], "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
