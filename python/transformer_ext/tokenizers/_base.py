"""Shared tokenizer machinery: input checks, normalisation, batch padding/truncation."""
from __future__ import annotations

import os
import unicodedata
from typing import Iterable, Sequence

import numpy as np


def core():
    """The compiled core, or None (then the pure-Python reference paths are used)."""
    from .. import _backend

    core = getattr(_backend, "core", None)
    # a core built before the tokenizers were added lacks them: fall back rather than fail
    return core if core is not None and hasattr(core, "ByteLevelBPE") and hasattr(core, "WordPiece") else None


def check_text(text, where: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{where}: text must be str, got {type(text).__name__}")
    return text


NORMALIZATIONS = (None, "NFC", "NFKC", "NFD", "NFKD")


def check_normalization(normalization):
    if normalization is not None:
        normalization = str(normalization).upper()
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of None, 'NFC', 'NFKC', 'NFD', 'NFKD', got {normalization!r}")
    return normalization


def normalize(text: str, normalization) -> str:
    return unicodedata.normalize(normalization, text) if normalization else text


class BatchEncoding(dict):
    """``ids``, ``attention_mask`` (and ``token_type_ids`` for WordPiece): int64 arrays of shape
    (batch, length) when padded, else lists of 1-D arrays. Attribute access works too."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, padding=False, max_length=None,
              truncation=False, padding_side="right", extra: dict | None = None,
              extra_pad: dict | None = None) -> BatchEncoding:
    """Truncate / pad id sequences (and parallel sequences in ``extra``) into a BatchEncoding."""
    if padding not in (False, True, "longest", "max_length", "do_not_pad"):
        raise ValueError(f"padding must be False, 'longest' or 'max_length', got {padding!r}")
    if padding is True:
        padding = "longest"
    if padding == "do_not_pad":
        padding = False
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    if max_length is not None and (not isinstance(max_length, (int, np.integer)) or max_length < 0):
        raise ValueError(f"max_length must be a non-negative int, got {max_length!r}")
    if padding == "max_length" and max_length is None:
        raise ValueError("padding='max_length' needs max_length")
    if truncation and max_length is None:
        raise ValueError("truncation=True needs max_length")
    extra = extra or {}
    as_arr = lambda x: np.asarray(x, dtype=np.int64).reshape(-1)  # noqa: E731
    seqs = [as_arr(s) for s in seqs]
    extra = {k: [as_arr(x) for x in v] for k, v in extra.items()}
    if truncation:
        seqs = [s[:max_length] for s in seqs]
        extra = {k: [x[:max_length] for x in v] for k, v in extra.items()}
    if not padding:
        # one buffer of ones, split into per-row views: far cheaper than an np.ones per row
        ends = np.cumsum([len(s) for s in seqs], dtype=np.int64)
        ones = np.ones(int(ends[-1]) if len(ends) else 0, dtype=np.int64)
        out = BatchEncoding(ids=seqs, attention_mask=np.split(ones, ends[:-1]) if len(seqs) else [])
        out.update(extra)
        return out
    longest = max((len(s) for s in seqs), default=0)
    width = max(longest, max_length) if padding == "max_length" else longest
    n = len(seqs)
    lens = np.array([len(s) for s in seqs], dtype=np.int64)
    cols = np.arange(width)
    valid = cols[None, :] < lens[:, None] if padding_side == "right" else cols[None, :] >= (width - lens)[:, None]

    def fill(rows, value):
        a = np.full((n, width), value, dtype=np.int64)
        if n and width:
            a[valid] = np.concatenate(rows) if rows else []
        return a

    out = BatchEncoding(ids=fill(seqs, pad_id), attention_mask=valid.astype(np.int64))
    for k, v in extra.items():
        out[k] = fill(v, (extra_pad or {}).get(k, 0))
    return out


def iter_documents(files_or_iterator, where: str) -> Iterable[str]:
    """A path or list of paths -> the files' lines; any other iterable -> its documents."""
    if isinstance(files_or_iterator, (str, bytes)):
        raise TypeError(f"{where}: a bare str is ambiguous: pass a list of paths, a pathlib.Path, "
                        f"or an iterable of documents (got {files_or_iterator[:40]!r})")
    if isinstance(files_or_iterator, os.PathLike):
        files_or_iterator = [files_or_iterator]
    if isinstance(files_or_iterator, (list, tuple)) and files_or_iterator and all(
            isinstance(p, (str, os.PathLike)) and os.path.isfile(p) for p in files_or_iterator):
        def gen():
            for p in files_or_iterator:
                with open(p, encoding="utf-8") as f:
                    yield from f
        return gen()
    try:
        it = iter(files_or_iterator)
    except TypeError:
        raise TypeError(f"{where}: expected a path, a list of paths or an iterable of str, "
                        f"got {type(files_or_iterator).__name__}") from None

    def checked():
        for doc in it:
            if not isinstance(doc, str):
                raise TypeError(f"{where}: documents must be str, got {type(doc).__name__}")
            yield doc
    return checked()
