"""Byte-level BPE tokenizer (GPT-2 scheme), C++ encode/train with a Python reference."""
from __future__ import annotations

import json
import os
from typing import Iterable, Sequence

import numpy as np

from . import _base, reference
from ._base import BatchEncoding, check_text

BYTE_ENCODER = reference.BYTE_ENCODER
BYTE_DECODER = reference.BYTE_DECODER
META_FILE = "transformer_ext_tokenizer.json"


def _token_bytes(tok: str) -> bytes:
    """A vocabulary string -> its raw bytes (non byte-level tokens, e.g. specials: UTF-8)."""
    try:
        return bytes(BYTE_DECODER[c] for c in tok)
    except KeyError:
        return tok.encode("utf-8", "surrogatepass")


def _bytes_token(b: bytes) -> str:
    return "".join(BYTE_ENCODER[x] for x in b)


class ByteLevelBPETokenizer:
    """GPT-2's byte-level BPE.

    ``encode(text) -> list[int]``; ``decode(ids) -> str`` (invalid UTF-8 from arbitrary id
    sequences is replaced with U+FFFD; ``decode(encode(s)) == s`` for every str, including lone
    surrogates, which are carried as their surrogatepass UTF-8 bytes). Special tokens are
    matched whole (longest first) before pre-tokenisation. ``normalization`` (None, "NFC",
    "NFKC", ...) is applied before encoding (then the round trip holds up to normalisation).
    """

    kind = "bpe"

    def __init__(self, vocab: dict[str, int] | None = None, merges: Sequence[tuple[str, str]] | None = None,
                 special_tokens: Sequence[str] | None = None, normalization=None, pad_token: str | None = None):
        self.normalization = _base.check_normalization(normalization)
        if vocab is None:
            vocab = {}
            for s in special_tokens or ():
                vocab.setdefault(s, len(vocab))
            for ch in sorted(BYTE_ENCODER.values()):
                vocab.setdefault(ch, len(vocab))
        self._set_model(dict(vocab), list(merges or ()), list(special_tokens or ()), source="vocab")
        self.pad_token = pad_token

    # ------------------------------------------------------------------ model state
    def _set_model(self, vocab, merges, special_tokens, source="vocab", merge_lines=None):
        for s in special_tokens:
            if not isinstance(s, str) or not s:
                raise ValueError(f"special tokens must be non-empty str, got {s!r}")
            if s not in vocab:
                raise ValueError(f"unknown special token {s!r}: not in the vocabulary ({source})")
        missing = [b for b, ch in BYTE_ENCODER.items() if ch not in vocab]
        if missing:
            raise ValueError(f"{source}: the vocabulary lacks byte-level tokens for {len(missing)} bytes "
                             f"(e.g. {BYTE_ENCODER[missing[0]]!r})")
        self.vocab = vocab
        self.merges = merges
        self.special_tokens = {s: vocab[s] for s in special_tokens}
        self.id_to_token = {i: t for t, i in vocab.items()}
        self.ranks = {}
        triples = []
        for r, (a, b) in enumerate(merges):
            where = f"{merge_lines[0]}:{merge_lines[1][r]}" if merge_lines else f"merge #{r}"
            for t in (a, b, a + b):
                if t not in vocab:
                    raise ValueError(f"{where}: merge {a!r} {b!r}: token {t!r} is not in the vocabulary")
            self.ranks.setdefault((a, b), r)
            triples.append((vocab[a], vocab[b], vocab[a + b]))
        core = _base.core()
        self._core = None
        if core is not None:
            size = max(vocab.values()) + 1 if vocab else 0
            toks = [b""] * size
            for t, i in vocab.items():
                toks[i] = _token_bytes(t)
            # Specials are matched by the core's splitter; their ids must not also act as bytes.
            for s, i in self.special_tokens.items():
                toks[i] = s.encode("utf-8", "surrogatepass")
            self._core = core.ByteLevelBPE(toks, triples, [(s.encode("utf-8", "surrogatepass"), i)
                                                           for s, i in self.special_tokens.items()])

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def token_to_id(self, token: str):
        return self.vocab.get(token)

    def id_to_token_str(self, i: int):
        return self.id_to_token.get(i)

    # ------------------------------------------------------------------ encode / decode
    def _prep(self, text, where):
        return _base.normalize(check_text(text, where), self.normalization)

    def encode(self, text: str) -> list[int]:
        text = self._prep(text, "ByteLevelBPETokenizer.encode")
        if self._core is not None:
            return self._core.encode(text.encode("utf-8", "surrogatepass")).tolist()
        return reference.bpe_encode(text, self.vocab, self.ranks, self.special_tokens)

    def encode_reference(self, text: str) -> list[int]:
        """The pure-Python path (test oracle)."""
        return reference.bpe_encode(self._prep(text, "encode"), self.vocab, self.ranks, self.special_tokens)

    def encode_flat(self, texts: Sequence[str], n_threads: int | None = None):
        """All texts at once -> (ids int32/int64 (total,), offsets int64 (n + 1,)): text i's ids are
        ``ids[offsets[i]:offsets[i + 1]]``. C++ on ``n_threads`` threads (default
        ``tx.get_num_threads()``), GIL released; the result does not depend on the thread count."""
        where = "ByteLevelBPETokenizer.encode_batch"
        texts = _base.batch_texts(texts, where, self.normalization)
        if self._core is not None:
            return self._core.encode_batch(texts, int(n_threads or 0), where)
        _base.check_batch_types(texts, where)
        return _base.flatten([self.encode(t) for t in texts])

    def encode_batch(self, texts: Sequence[str], padding=False, max_length=None, truncation=False,
                     padding_side="right") -> BatchEncoding:
        """Encode several texts (on threads, GIL released). Pads with ``pad_token`` if set, else
        id 0 (masked out by ``attention_mask`` either way). ``padding`` False: lists of 1-D
        arrays; "longest" / "max_length": (batch, length) int64 arrays."""
        _base.check_padding(padding, max_length, truncation, padding_side)
        flat, offsets = self.encode_flat(texts)
        pad_id = self.vocab.get(self.pad_token, 0) if self.pad_token else 0
        return _base.batch_from_flat(flat, offsets, pad_id, padding, max_length, truncation, padding_side)

    def decode_bytes(self, ids) -> bytes:
        arr = _base.check_ids(ids)
        if self._core is not None:
            return self._core.decode(arr.astype(np.int64))
        out = []
        for i in arr.tolist():
            t = self.id_to_token.get(i)
            if t is None:
                raise ValueError(f"token id {i} is out of range")
            out.append(t.encode("utf-8") if t in self.special_tokens else _token_bytes(t))
        return b"".join(out)

    def decode(self, ids, errors: str = "replace") -> str:
        b = self.decode_bytes(ids)
        try:
            return b.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return b.decode("utf-8", errors)

    # ------------------------------------------------------------------ training
    def train(self, files_or_iterator, vocab_size: int, min_frequency: int = 2,
              special_tokens: Sequence[str] = (), use_reference: bool = False) -> "ByteLevelBPETokenizer":
        """Learn merges. ``files_or_iterator``: a pathlib.Path or list of paths (files read as
        UTF-8 lines), or any iterable of str documents; a bare str is a TypeError.
        ``vocab_size`` counts the 256 byte tokens and the special tokens. Tie-break between pairs
        of equal count: the smallest (left id, right id), ids being specials first, then the 256
        byte tokens in code-point order of their GPT-2 characters, then merges in order (this is
        Hugging Face's rule)."""
        if isinstance(special_tokens, str):
            raise TypeError("train: special_tokens must be a list of str")
        specials = list(dict.fromkeys(special_tokens))
        if not isinstance(vocab_size, (int, np.integer)) or vocab_size < 256 + len(specials):
            raise ValueError(f"train: vocab_size must be >= 256 + {len(specials)} special tokens, got {vocab_size!r}")
        docs = _base.iter_documents(files_or_iterator, "ByteLevelBPETokenizer.train")
        core = _base.core()
        if core is None or use_reference:
            vocab, merges = reference.train_bpe((self._prep(d, "train") for d in docs), vocab_size,
                                                min_frequency, specials)
            self._set_model(vocab, merges, specials)
            return self
        trainer = core.BPETrainer()
        import re
        split = re.compile("|".join(map(re.escape, sorted(specials, key=len, reverse=True)))) if specials else None
        for d in docs:  # one document at a time: words never span documents
            d = self._prep(d, "train")
            # Special tokens in the text are not learned from (as Hugging Face's trainer).
            for part in (split.split(d) if split is not None else (d,)):
                trainer.feed(part.encode("utf-8", "surrogatepass"))
        vocab = {s: i for i, s in enumerate(specials)}
        for ch in sorted(BYTE_ENCODER.values()):
            vocab.setdefault(ch, len(vocab))
        byte_ids = [vocab[BYTE_ENCODER[b]] for b in range(256)]
        triples, new_tokens = trainer.train(byte_ids, len(vocab), int(vocab_size), int(min_frequency))
        for b in new_tokens:
            vocab[_bytes_token(b)] = len(vocab)
        id_to_tok = {i: t for t, i in vocab.items()}
        merges = [(id_to_tok[a], id_to_tok[b]) for a, b, _ in triples]
        self._set_model(vocab, merges, specials)
        return self

    # ------------------------------------------------------------------ files
    def save(self, directory: str) -> list[str]:
        """Write vocab.json + merges.txt (GPT-2's format) and the project's metadata file."""
        os.makedirs(directory, exist_ok=True)
        vp, mp, meta = (os.path.join(directory, f) for f in ("vocab.json", "merges.txt", META_FILE))
        with open(vp, "w", encoding="utf-8") as f:
            json.dump(self.vocab, f, ensure_ascii=False)
        with open(mp, "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
            for a, b in self.merges:
                f.write(f"{a} {b}\n")
        with open(meta, "w", encoding="utf-8") as f:
            json.dump({"type": "ByteLevelBPETokenizer", "special_tokens": list(self.special_tokens),
                       "normalization": self.normalization, "pad_token": self.pad_token}, f)
        return [vp, mp, meta]

    @classmethod
    def load(cls, directory: str) -> "ByteLevelBPETokenizer":
        meta = {}
        mp = os.path.join(directory, META_FILE)
        if os.path.exists(mp):
            with open(mp, encoding="utf-8") as f:
                meta = json.load(f)
        return cls.from_files(os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt"),
                              special_tokens=meta.get("special_tokens"), normalization=meta.get("normalization"),
                              pad_token=meta.get("pad_token"))

    @classmethod
    def from_files(cls, vocab_json: str, merges_txt: str, special_tokens: Sequence[str] | None = None,
                   normalization=None, pad_token: str | None = None) -> "ByteLevelBPETokenizer":
        """Load GPT-2 format files. Without ``special_tokens``, ``<|endoftext|>`` is special if
        present (as in GPT-2)."""
        vocab = read_vocab_json(vocab_json)
        merges, lines = read_merges_txt(merges_txt)
        if special_tokens is None:
            special_tokens = [t for t in ("<|endoftext|>",) if t in vocab]
        tok = cls.__new__(cls)
        tok.normalization = _base.check_normalization(normalization)
        tok.pad_token = pad_token
        tok._set_model(vocab, merges, list(special_tokens), source=str(vocab_json), merge_lines=(str(merges_txt), lines))
        return tok


def read_vocab_json(path) -> dict[str, int]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 ({e})") from None
    try:
        vocab = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: malformed vocab.json: {e.msg} (column {e.colno})") from None
    if not isinstance(vocab, dict):
        raise ValueError(f"{path}:1: vocab.json must be an object mapping token -> id")
    seen = {}
    for t, i in vocab.items():
        if not isinstance(i, int) or isinstance(i, bool) or i < 0:
            line = text[:text.find(json.dumps(t, ensure_ascii=False))].count("\n") + 1
            raise ValueError(f"{path}:{line}: token {t!r} has id {i!r}, expected a non-negative int")
        if i in seen:
            line = text[:text.find(json.dumps(t, ensure_ascii=False))].count("\n") + 1
            raise ValueError(f"{path}:{line}: id {i} is used by both {seen[i]!r} and {t!r}")
        seen[i] = t
    return vocab


def read_merges_txt(path) -> tuple[list[tuple[str, str]], list[int]]:
    merges, lines = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if n == 1 and line.startswith("#version"):
                continue
            if not line.strip():
                continue
            parts = line.split(" ")
            if len(parts) != 2 or not parts[0] or not parts[1]:
                raise ValueError(f"{path}:{n}: malformed merge line {line!r}: expected two tokens separated by one space")
            merges.append((parts[0], parts[1]))
            lines.append(n)
    return merges, lines
