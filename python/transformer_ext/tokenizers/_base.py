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


def check_ids(ids) -> np.ndarray:
    """decode's argument as a 1-D integer array (a TypeError otherwise)."""
    arr = np.asarray(ids)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise TypeError(f"decode: ids must be a 1-D sequence of ints, got {arr.dtype} shape {arr.shape}")
    return arr


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
    (batch, length) when padded, else lists of 1-D arrays (views of one buffer; the unpadded
    attention-mask rows are read-only). Attribute access works too."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def check_padding(padding, max_length, truncation, padding_side):
    """Validate the batch options; returns padding as False, "longest" or "max_length"."""
    if padding not in (False, True, "longest", "max_length", "do_not_pad"):
        raise ValueError(f"padding must be False, 'longest' or 'max_length', got {padding!r}")
    if padding is True:
        padding = "longest"
    if padding == "do_not_pad":
        padding = False
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer))
                                   or max_length < 0):
        raise ValueError(f"max_length must be a non-negative int, got {max_length!r}")
    if padding == "max_length" and max_length is None:
        raise ValueError("padding='max_length' needs max_length")
    if truncation and max_length is None:
        raise ValueError("truncation=True needs max_length")
    return padding


def flatten(seqs: Sequence[Sequence[int]]):
    """Python id lists -> (flat int64 ids, offsets (n + 1,)), the layout the C++ batch encoders return."""
    lens = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    flat = np.fromiter((i for s in seqs for i in s), dtype=np.int64, count=int(offsets[-1]))
    return flat, offsets


def batch_texts(texts, where: str, normalization=None) -> list:
    """The texts of a batch, normalised; per-element type errors (naming the index) come from
    the C++ encoder, or from check_batch_types on the pure-Python path."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, (list, tuple)):
        raise TypeError(f"{where}: texts must be a list of str, got {type(texts).__name__}")
    if normalization:
        texts = [unicodedata.normalize(normalization, t) if isinstance(t, str) else t for t in texts]
    return texts


def check_batch_types(texts, where: str) -> None:
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{where}: texts[{i}] must be str, got {type(t).__name__}")


def build_rows(parts, n: int, pad_id: int, padding=False, max_length=None, padding_side="right",
               with_types: bool = False) -> BatchEncoding:
    """Assemble a batch from flat pieces with vectorised NumPy (no Python loop over texts).

    ``parts`` is the left-to-right layout of every row, a list of
      ("ids", flat, starts, lens, type_id): row i gets flat[starts[i] : starts[i] + lens[i]];
      ("tok", token_id, present, type_id): row i gets token_id where present[i] (None: every row).
    Padded (``padding`` "longest" / "max_length"): int64 arrays (n, width) for ``ids``,
    ``attention_mask`` (and ``token_type_ids``). Unpadded: lists of 1-D int64 arrays, views of one
    buffer; the attention-mask rows are read-only all-ones views shared between rows of equal length.
    """
    c = core()
    flats = {id(p[1]) for p in parts if p[0] == "ids"}
    if c is not None and hasattr(c, "tok_assemble") and len(flats) <= 1:  # one C++ pass, GIL released
        cparts = [(p[0], p[2], p[3], p[4]) if p[0] == "ids" else p for p in parts]
        flat = next((p[1] for p in parts if p[0] == "ids"), np.zeros(0, np.int32))
        ids, mask, types, offsets, width = c.tok_assemble(flat, cparts, n, int(max_length or 0)
                                                          if padding == "max_length" else 0, bool(padding),
                                                          padding_side == "left", int(pad_id), with_types)
        if padding:
            out = BatchEncoding(ids=ids, attention_mask=mask)
            if with_types:
                out["token_type_ids"] = types
            return out
        return _unpadded(ids, types, offsets.tolist(), with_types)
    return build_rows_numpy(parts, n, pad_id, padding, max_length, padding_side, with_types)


def _unpadded(content, types, bounds_with_0, with_types):
    """Per-row views of one buffer (a view costs far less than building a row); the mask rows are
    read-only all-ones views shared between rows of equal length."""
    starts, bounds = bounds_with_0[:-1], bounds_with_0[1:]
    rows_of = lambda a: [a[i:j] for i, j in zip(starts, bounds)]  # noqa: E731
    lengths = [j - i for i, j in zip(starts, bounds)]
    ones = np.ones(max(lengths, default=0), dtype=np.int64)
    ones.flags.writeable = False
    mask_rows = {L: ones[:L] for L in set(lengths)}
    out = BatchEncoding(ids=rows_of(content), attention_mask=[mask_rows[L] for L in lengths])
    if with_types:
        out["token_type_ids"] = rows_of(types)
    return out


def build_rows_numpy(parts, n: int, pad_id: int, padding=False, max_length=None, padding_side="right",
                     with_types: bool = False) -> BatchEncoding:
    """NumPy version of build_rows (fallback without the compiled core, and test oracle)."""
    lens = []
    total = np.zeros(n, dtype=np.int64)
    for p in parts:
        if p[0] == "ids":
            L = np.asarray(p[3], dtype=np.int64)
        else:
            L = np.ones(n, dtype=np.int64) if p[2] is None else np.asarray(p[2], dtype=np.int64)
        lens.append(L)
        total += L
    ends = np.cumsum(total)
    size = int(ends[-1]) if n else 0
    # 1. the rows' tokens back to back (what an unpadded batch holds)
    types = None
    first = parts[0] if len(parts) == 1 else None
    if first is not None and first[0] == "ids" and n and int(first[2][0]) == 0 \
            and np.array_equal(np.asarray(first[2][1:]), ends[:-1]):
        content = first[1][:size]  # the flat buffer itself (no truncation): nothing to move
        if with_types:
            types = np.full(size, first[4], dtype=np.int64)
    else:
        content = np.empty(size, dtype=np.int64)
        if with_types:
            types = np.zeros(size, dtype=np.int64)
        pos = ends - total
        for p, L in zip(parts, lens):
            if p[0] == "tok":
                dest = pos if p[2] is None else pos[L.astype(bool)]
                content[dest] = p[1]
                if with_types:
                    types[dest] = p[3]
            else:
                m = int(L.sum())
                if m:
                    rows = np.repeat(np.arange(n, dtype=np.int64), L)
                    within = np.arange(m, dtype=np.int64) - np.repeat(np.cumsum(L) - L, L)
                    src = np.asarray(p[2], dtype=np.int64)[rows] + within
                    dest = pos[rows] + within
                    content[dest] = p[1][src]
                    if with_types:
                        types[dest] = p[4]
            pos = pos + L
    if padding:
        # 2. padded: the True cells of the mask, in row-major order, are exactly the content
        longest = int(total.max()) if n else 0
        width = max(longest, max_length) if padding == "max_length" else longest
        cols = np.arange(width, dtype=np.int64)
        mask = (cols[None, :] < total[:, None]) if padding_side == "right" else \
            (cols[None, :] >= (width - total)[:, None])
        ids = np.full((n, width), pad_id, dtype=np.int64)
        ids[mask] = content
        out = BatchEncoding(ids=ids, attention_mask=mask.astype(np.int64))
        if with_types:
            tt = np.zeros((n, width), dtype=np.int64)
            tt[mask] = types
            out["token_type_ids"] = tt
        return out
    content = content.astype(np.int64, copy=False)
    return _unpadded(content, types, [0] + ends.tolist(), with_types)


def batch_from_flat(flat, offsets, pad_id: int, padding=False, max_length=None, truncation=False,
                    padding_side="right") -> BatchEncoding:
    """One id sequence per row (BPE, unigram): truncate / pad the flat C++ output."""
    padding = check_padding(padding, max_length, truncation, padding_side)
    offsets = np.asarray(offsets, dtype=np.int64)
    lens = np.diff(offsets)
    if truncation:
        lens = np.minimum(lens, max_length)
    return build_rows([("ids", flat, offsets[:-1], lens, 0)], len(lens), pad_id, padding, max_length,
                      padding_side)


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, padding=False, max_length=None,
              truncation=False, padding_side="right") -> BatchEncoding:
    """Truncate / pad Python id sequences into a BatchEncoding."""
    check_padding(padding, max_length, truncation, padding_side)
    flat, offsets = flatten(seqs)
    return batch_from_flat(flat, offsets, pad_id, padding, max_length, truncation, padding_side)


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
