"""BERT's WordPiece tokenizer: basic tokeniser + greedy longest-match-first with ``##``."""
from __future__ import annotations

import json
import os
import unicodedata
from functools import lru_cache
from typing import Sequence

import numpy as np

from . import _base
from ._base import BatchEncoding, check_text

META_FILE = "transformer_ext_tokenizer.json"


@lru_cache(maxsize=65536)
def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


@lru_cache(maxsize=65536)
def _is_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch).startswith("C")


@lru_cache(maxsize=65536)
def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True  # ASCII non-alphanumerics count as punctuation (e.g. ^ $ `), as in BERT
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def basic_tokenize(text: str, lowercase: bool = True, strip_accents: bool | None = None,
                   tokenize_chinese_chars: bool = True) -> list[str]:
    """BERT's BasicTokenizer: drop NUL / U+FFFD / control characters, whitespace -> space,
    spaces around CJK ideographs, whitespace split, lower-case + accent strip (NFD, drop Mn),
    split off every punctuation character."""
    if strip_accents is None:
        strip_accents = lowercase
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        if _is_whitespace(ch):
            out.append(" ")
        elif tokenize_chinese_chars and _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    tokens = []
    for word in "".join(out).split():
        if lowercase:
            word = word.lower()
        if strip_accents:
            word = "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")
        cur = []
        for ch in word:
            if _is_punctuation(ch):
                if cur:
                    tokens.append("".join(cur)); cur = []
                tokens.append(ch)
            else:
                cur.append(ch)
        if cur:
            tokens.append("".join(cur))
    return tokens


def _longest_first(la, lb, budget):
    """Lengths after 'longest_first' truncation of pairs to ``budget`` tokens, vectorised: the
    longer segment loses tokens until both are equal, then they alternate, the first segment
    first (the closed form of _finish's loop)."""
    over = la + lb > budget
    small = np.minimum(la, lb)
    only_long = budget >= 2 * small  # the shorter one is untouched
    fa = np.where(only_long, np.where(la >= lb, budget - lb, la), budget // 2)
    fb = np.where(only_long, np.where(la >= lb, lb, budget - la), budget - budget // 2)
    return np.where(over, fa, la), np.where(over, fb, lb)


class WordPieceTokenizer:
    """BERT's WordPiece.

    ``encode(text, pair=None, add_special_tokens=True)`` -> ids (``[CLS] a [SEP] (b [SEP])``),
    ``encode_with_types`` also returns token type ids (0 for the first segment incl. [CLS] and
    its [SEP], 1 for the second). Words longer than ``max_input_chars_per_word`` characters, or
    with no valid split, become ``[UNK]``.

    Decoding is lossy, by design of the scheme: case and accents are lost when ``lowercase``
    (resp. ``strip_accents``), control characters are dropped, any whitespace run becomes one
    space, punctuation and CJK characters come back as separate words (with
    ``clean_up_tokenization_spaces``, " ." " ," " ?" " !" " 's" " n't" ... are re-attached as
    Hugging Face does), special tokens — [UNK] included, so unknown words vanish — are skipped
    unless ``skip_special_tokens=False``; "##" continuation pieces are glued to the previous piece.
    """

    kind = "wordpiece"

    def __init__(self, vocab: dict[str, int] | Sequence[str], lowercase: bool = True, strip_accents=None,
                 tokenize_chinese_chars: bool = True, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                 pad_token="[PAD]", mask_token="[MASK]", max_input_chars_per_word: int = 100,
                 continuing_prefix: str = "##", normalization=None, source: str = "vocab"):
        if not isinstance(vocab, dict):
            vocab = {t: i for i, t in enumerate(vocab)}
        self.vocab = dict(vocab)
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        self.lowercase = bool(lowercase)
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.unk_token, self.cls_token, self.sep_token = unk_token, cls_token, sep_token
        self.pad_token, self.mask_token = pad_token, mask_token
        self.max_input_chars_per_word = int(max_input_chars_per_word)
        self.prefix = continuing_prefix
        self.normalization = _base.check_normalization(normalization)
        if unk_token not in self.vocab:
            raise ValueError(f"unknown special token {unk_token!r}: not in the vocabulary ({source})")
        self.special_tokens = {t: self.vocab[t] for t in (unk_token, cls_token, sep_token, pad_token, mask_token)
                               if t is not None and t in self.vocab}
        self._special_order = sorted(self.special_tokens, key=len, reverse=True)
        self._special_first = {t[0] for t in self._special_order}
        self._cache: dict[str, list[int]] = {}
        core = _base.core()
        self._core = None
        if core is not None:
            enc = lambda t: t.encode("utf-8", "surrogatepass")  # noqa: E731
            strip = self.lowercase if strip_accents is None else bool(strip_accents)
            self._core = core.WordPiece([(enc(t), i) for t, i in self.vocab.items()], self.vocab[unk_token],
                                        self.lowercase, strip, bool(tokenize_chinese_chars),
                                        self.max_input_chars_per_word, enc(continuing_prefix),
                                        [(enc(t), i) for t, i in self.special_tokens.items()])

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _special_id(self, tok):
        if tok is None or tok not in self.vocab:
            raise ValueError(f"unknown special token {tok!r}: not in the vocabulary (needed for add_special_tokens)")
        return self.vocab[tok]

    # ------------------------------------------------------------------ tokenisation
    def wordpiece(self, word: str) -> list[int]:
        """Greedy longest-match-first split of one word into ids."""
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        unk = [self.vocab[self.unk_token]]
        if len(word) > self.max_input_chars_per_word:
            return unk
        ids, start, n = [], 0, len(word)
        while start < n:
            end = n
            cur = None
            while start < end:
                sub = word[start:end]
                if start > 0:
                    sub = self.prefix + sub
                cur = self.vocab.get(sub)
                if cur is not None:
                    break
                end -= 1
            if cur is None:
                ids = unk
                break
            ids.append(cur)
            start = end
        if len(self._cache) < (1 << 18):
            self._cache[word] = ids
        return ids

    def _split_specials(self, text):
        """Split out special tokens present in the text (kept whole, as HF's added tokens)."""
        out, i, start, n = [], 0, 0, len(text)
        while i < n:
            hit = None
            if text[i] in self._special_first:
                hit = next((s for s in self._special_order if text.startswith(s, i)), None)
            if hit is None:
                i += 1
                continue
            out.append(text[start:i]); out.append((hit,))
            i += len(hit); start = i
        out.append(text[start:])
        return out

    def tokenize_ids(self, text: str) -> list[int]:
        """Ids of the text's word pieces, without [CLS]/[SEP] (C++ when available)."""
        if self._core is not None:
            text = _base.normalize(check_text(text, "WordPieceTokenizer.encode"), self.normalization)
            return self._core.encode(text.encode("utf-8", "surrogatepass")).tolist()
        return self.tokenize_ids_reference(text)

    def tokenize_ids_reference(self, text: str) -> list[int]:
        """The pure-Python path (test oracle)."""
        text = _base.normalize(check_text(text, "WordPieceTokenizer.encode"), self.normalization)
        ids = []
        for seg in self._split_specials(text):
            if isinstance(seg, tuple):
                ids.append(self.vocab[seg[0]]); continue
            for word in basic_tokenize(seg, self.lowercase, self.strip_accents, self.tokenize_chinese_chars):
                ids.extend(self.wordpiece(word))
        return ids

    def tokenize(self, text: str) -> list[str]:
        return [self.id_to_token[i] for i in self.tokenize_ids(text)]

    def _assemble(self, a, b, add_special_tokens):
        if not add_special_tokens:
            ids = a + (b or [])
            return ids, [0] * len(a) + [1] * len(b or [])
        cls, sep = self._special_id(self.cls_token), self._special_id(self.sep_token)
        ids = [cls] + a + [sep]
        types = [0] * len(ids)
        if b is not None:
            ids += b + [sep]
            types += [1] * (len(b) + 1)
        return ids, types

    def encode_with_types(self, text: str, pair: str | None = None, add_special_tokens: bool = True,
                          max_length: int | None = None, truncation: bool = False):
        a = self.tokenize_ids(text)
        b = self.tokenize_ids(pair) if pair is not None else None
        return self._finish(a, b, add_special_tokens, max_length, truncation)

    def _finish(self, a, b, add_special_tokens, max_length, truncation):
        if truncation:
            if max_length is None:
                raise ValueError("truncation=True needs max_length")
            budget = max_length - ((3 if b is not None else 2) if add_special_tokens else 0)
            if budget < 0:
                raise ValueError(f"max_length={max_length} leaves no room for the special tokens")
            # 'longest_first': drop from the end of the longer segment until it fits.
            while len(a) + len(b or []) > budget:
                if b is not None and len(b) > len(a):
                    b.pop()
                else:
                    a.pop()
        return self._assemble(a, b, add_special_tokens)

    def encode(self, text: str, pair: str | None = None, add_special_tokens: bool = True) -> list[int]:
        return self.encode_with_types(text, pair, add_special_tokens)[0]

    def encode_flat(self, texts: Sequence[str], n_threads: int | None = None):
        """Word-piece ids of all texts (no [CLS]/[SEP]) -> (ids, offsets (n + 1,)); C++ on
        threads (default ``tx.get_num_threads()``), GIL released, same result for any count."""
        where = "WordPieceTokenizer.encode_batch"
        texts = _base.batch_texts(texts, where, self.normalization)
        if self._core is not None:
            return self._core.encode_batch(texts, int(n_threads or 0), where)
        _base.check_batch_types(texts, where)
        return _base.flatten([self.tokenize_ids_reference(t) for t in texts])

    def encode_batch(self, texts: Sequence[str], pairs: Sequence[str] | None = None, padding=False,
                     max_length=None, truncation=False, padding_side="right",
                     add_special_tokens: bool = True) -> BatchEncoding:
        """``ids``, ``attention_mask``, ``token_type_ids`` for ``[CLS] a [SEP] (b [SEP])`` per row;
        truncation is 'longest_first' (as Hugging Face): tokens are dropped from the end of the
        longer segment, the first one on ties; the special tokens are kept."""
        padding = _base.check_padding(padding, max_length, truncation, padding_side)
        if isinstance(texts, (str, bytes)) or not isinstance(texts, (list, tuple)):
            raise TypeError(f"encode_batch: texts must be a list of str, got {type(texts).__name__}")
        n = len(texts)
        if pairs is not None:
            if isinstance(pairs, (str, bytes)) or not isinstance(pairs, (list, tuple)):
                raise TypeError(f"encode_batch: pairs must be a list of str, got {type(pairs).__name__}")
            if len(pairs) != n:
                raise ValueError(f"encode_batch: {n} texts but {len(pairs)} pairs")
            try:
                flat, offsets = self.encode_flat(list(texts) + list(pairs))
            except TypeError as e:  # name the pair's own index
                import re
                m = re.search(r"texts\[(\d+)\]", str(e))
                if m and int(m.group(1)) >= n:
                    raise TypeError(str(e).replace(m.group(0), f"pairs[{int(m.group(1)) - n}]")) from None
                raise
        else:
            flat, offsets = self.encode_flat(texts)
        starts = offsets[:-1]
        lens = np.diff(offsets)
        la, sa = lens[:n], starts[:n]
        lb, sb = (lens[n:], starts[n:]) if pairs is not None else (None, None)
        if truncation:
            budget = max_length - ((3 if pairs is not None else 2) if add_special_tokens else 0)
            if budget < 0:
                raise ValueError(f"max_length={max_length} leaves no room for the special tokens")
            if lb is None:
                la = np.minimum(la, budget)
            else:
                la, lb = _longest_first(la, lb, budget)
        if add_special_tokens:
            cls, sep = self._special_id(self.cls_token), self._special_id(self.sep_token)
            parts = [("tok", cls, None, 0), ("ids", flat, sa, la, 0), ("tok", sep, None, 0)]
            if lb is not None:
                parts += [("ids", flat, sb, lb, 1), ("tok", sep, None, 1)]
        else:
            parts = [("ids", flat, sa, la, 0)] + ([("ids", flat, sb, lb, 1)] if lb is not None else [])
        pad_id = self.vocab.get(self.pad_token, 0) if self.pad_token else 0
        return _base.build_rows(parts, n, pad_id, padding, max_length, padding_side, with_types=True)

    def decode(self, ids, skip_special_tokens: bool = True, clean_up_tokenization_spaces: bool = True) -> str:
        arr = _base.check_ids(ids)
        toks = []
        for i in arr.tolist():
            t = self.id_to_token.get(i)
            if t is None:
                raise ValueError(f"token id {i} is out of range")
            if skip_special_tokens and t in self.special_tokens:  # [UNK] too, as Hugging Face
                continue
            toks.append(t)
        text = " ".join(toks).replace(" " + self.prefix, "").strip()
        if clean_up_tokenization_spaces:
            for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                         (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
                text = text.replace(a, b)
        return text

    # ------------------------------------------------------------------ files
    def save(self, directory: str) -> list[str]:
        os.makedirs(directory, exist_ok=True)
        vp, mp = os.path.join(directory, "vocab.txt"), os.path.join(directory, META_FILE)
        by_id = sorted(self.vocab.items(), key=lambda kv: kv[1])
        if [i for _, i in by_id] != list(range(len(by_id))):
            raise ValueError("save: vocabulary ids must be 0..n-1 to be written as vocab.txt")
        with open(vp, "w", encoding="utf-8") as f:
            for t, _ in by_id:
                f.write(t + "\n")
        with open(mp, "w", encoding="utf-8") as f:
            json.dump({"type": "WordPieceTokenizer", "lowercase": self.lowercase, "strip_accents": self.strip_accents,
                       "tokenize_chinese_chars": self.tokenize_chinese_chars, "unk_token": self.unk_token,
                       "cls_token": self.cls_token, "sep_token": self.sep_token, "pad_token": self.pad_token,
                       "mask_token": self.mask_token, "max_input_chars_per_word": self.max_input_chars_per_word,
                       "continuing_prefix": self.prefix, "normalization": self.normalization}, f)
        return [vp, mp]

    @classmethod
    def load(cls, directory: str) -> "WordPieceTokenizer":
        meta = {}
        mp = os.path.join(directory, META_FILE)
        if os.path.exists(mp):
            with open(mp, encoding="utf-8") as f:
                meta = json.load(f)
            meta.pop("type", None)
        return cls.from_file(os.path.join(directory, "vocab.txt"), **meta)

    @classmethod
    def from_file(cls, vocab_txt: str, lowercase: bool = True, **kwargs) -> "WordPieceTokenizer":
        """Load BERT's vocab.txt (one token per line, id = line number - 1)."""
        vocab = {}
        with open(vocab_txt, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                tok = line.rstrip("\r\n")
                if not tok.strip():
                    raise ValueError(f"{vocab_txt}:{n}: empty token in vocab.txt")
                if tok in vocab:
                    raise ValueError(f"{vocab_txt}:{n}: duplicate token {tok!r} (first on line {vocab[tok] + 1})")
                vocab[tok] = n - 1
        if not vocab:
            raise ValueError(f"{vocab_txt}:1: empty vocabulary")
        return cls(vocab, lowercase=lowercase, source=str(vocab_txt), **kwargs)
