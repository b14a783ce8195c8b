"""Data for language-model training: text clean-up, a byte-level tokenizer (until the
tokenizer package provides BPE), token streams as (memory-mapped) integer arrays, a
train/validation split, and random (B, T+1) windows drawn deterministically under a seed.

    text = prepare_text(raw)                           # NFC, whitespace clean-up, ...
    ids = ByteTokenizer().encode(text)                 # uint8 → int64 array, vocab 256
    train, val = train_val_split(ids, 0.1)
    sampler = WindowSampler(train, batch_size=16, block_size=128, seed=0)
    x, y = sampler.next()                              # (16, 128) inputs, next-token targets
"""
from __future__ import annotations

import os
import re
import unicodedata

import numpy as np

BUNDLED_CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "shakespeare.txt")


def bundled_corpus() -> str:
    """The text shipped with the package (see transformer_ext/data/README.md)."""
    with open(BUNDLED_CORPUS, encoding="utf-8") as f:
        return f.read()


def prepare_text(text: str, nfc: bool = True, lowercase: bool = False, strip_accents: bool = False,
                 clean_whitespace: bool = True, dedup_lines: bool = False) -> str:
    """Unicode NFC normalisation; optional lower-casing and accent stripping (NFD, drop
    combining marks); whitespace clean-up (CRLF → LF, tabs/odd spaces → space, trailing spaces
    removed, runs of 3+ blank lines → 2); optional removal of repeated non-empty lines."""
    if strip_accents:
        text = "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))
    if nfc:
        text = unicodedata.normalize("NFC", text)
    if lowercase:
        text = text.lower()
    if clean_whitespace:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        text = re.sub(r"[^\S\n]+", " ", text)
        text = "\n".join(line.rstrip() for line in text.split("\n"))
        text = re.sub(r"\n{4,}", "\n\n\n", text)
    if dedup_lines:
        seen, out = set(), []
        for line in text.split("\n"):
            if line.strip():
                if line in seen:
                    continue
                seen.add(line)
            out.append(line)
        text = "\n".join(out)
    return text


class ByteTokenizer:
    """UTF-8 bytes as tokens: vocab_size 256, lossless for any text."""

    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids) -> str:
        ids = np.asarray(ids).ravel()
        if ids.size and (ids.min() < 0 or ids.max() > 255):
            raise ValueError(f"ByteTokenizer.decode: ids must be in [0, 256), got range [{ids.min()}, {ids.max()}]")
        return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")


def save_tokens(path, ids) -> None:
    """Store a token stream as .npy (the narrowest unsigned dtype that fits), atomically."""
    from ..io.atomic import atomic_write
    ids = np.asarray(ids)
    top = int(ids.max()) if ids.size else 0
    dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32
    with atomic_write(path) as f:
        np.save(f, ids.astype(dtype))


def load_tokens(path) -> np.ndarray:
    """A token stream saved by save_tokens, memory-mapped (read-only, not loaded into RAM)."""
    return np.load(path, mmap_mode="r")


def train_val_split(ids, val_fraction: float = 0.1):
    """(train, val): the first (1 − val_fraction) of the stream and the rest (contiguous, so no
    window straddles the two)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"train_val_split: val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(len(ids) * val_fraction)
    return ids[:len(ids) - n_val], ids[len(ids) - n_val:]


class WindowSampler:
    """Random windows of block_size + 1 tokens: x = w[:-1], y = w[1:]. Starts come from a
    PCG64 generator whose state (`state()` / `set_state()`) is part of a checkpoint, so a
    resumed run draws the same batches as an uninterrupted one."""

    def __init__(self, ids, batch_size: int, block_size: int, seed: int = 0):
        if len(ids) < block_size + 1:
            raise ValueError(f"WindowSampler: the token stream has {len(ids)} tokens, fewer than "
                             f"block_size + 1 = {block_size + 1}")
        self.ids, self.batch_size, self.block_size = ids, int(batch_size), int(block_size)
        self.rng = np.random.default_rng(seed)

    def next(self):
        T = self.block_size
        starts = self.rng.integers(0, len(self.ids) - T, self.batch_size)
        w = np.stack([np.asarray(self.ids[s:s + T + 1], dtype=np.int64) for s in starts])
        return w[:, :-1], w[:, 1:]

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def eval_windows(ids, batch_size: int, block_size: int, n_batches: int, seed: int = 1234):
    """A fixed list of (x, y) batches for validation (the same every evaluation)."""
    if len(ids) < block_size + 1:
        return []
    s = WindowSampler(ids, batch_size, block_size, seed)
    return [s.next() for _ in range(n_batches)]
