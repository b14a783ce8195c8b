"""SentencePiece-style unigram language-model tokenizer (pure Python/NumPy).

Training (Kudo 2018): seed vocabulary = all single characters + the most frequent substrings
(up to ``max_piece_length``) of the ``▁``-prefixed words, scored by frequency x length; then
rounds of EM (forward-backward over each distinct word's segmentation lattice, weighted by the
word's count) followed by pruning: each piece's loss is the drop in corpus log-likelihood when it
is replaced by its best segmentation into the other pieces, and the ``shrinking_factor`` best
fraction is kept until ``vocab_size`` is reached. Characters are never pruned.

Pieces follow SentencePiece's default validity rule: ``▁`` only at the start, and no piece mixes
letters, digits and other symbols.

Encoding: text split on whitespace, each word prefixed with ``▁`` (U+2581), Viterbi best
segmentation; a character not in the vocabulary becomes ``<unk>``. Decoding joins pieces and
turns ``▁`` back into spaces: lossy only in that whitespace runs (tabs, newlines) become single
spaces and leading/trailing whitespace is dropped, as SentencePiece's default normaliser does.
"""
from __future__ import annotations

import json
import math
import os
import unicodedata
from collections import Counter
from functools import lru_cache
from typing import Sequence

import numpy as np

from . import _base
from ._base import BatchEncoding, check_text

SPACE = "\u2581"
META_FILE = "transformer_ext_tokenizer.json"


def _logsumexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


@lru_cache(maxsize=65536)
def _char_kind(ch: str) -> str:
    cat = unicodedata.category(ch)
    return "L" if cat[0] == "L" else "N" if cat[0] == "N" else "M" if cat[0] == "M" else "P"


def _valid_piece(p: str) -> bool:
    """SentencePiece's rule (split_by_whitespace / unicode_script / number, approximated by
    character class): ``▁`` only first; then letters, numbers and other symbols never mix in one
    piece (a combining mark takes the class of the character before it)."""
    prev = None
    for k, ch in enumerate(p):
        if ch == SPACE:
            if k:
                return False
            continue
        kind = _char_kind(ch)
        if kind == "M":
            kind = prev or "L"
        if prev is not None and kind != prev:
            return False
        prev = kind
    return True


def _words(text: str) -> list[str]:
    return [SPACE + w for w in text.split()]


class UnigramTokenizer:
    kind = "unigram"

    def __init__(self, pieces: Sequence[tuple[str, float]] | None = None, special_tokens: Sequence[str] = (),
                 unk_token: str = "<unk>", normalization=None):
        self.normalization = _base.check_normalization(normalization)
        self.unk_token = unk_token
        self._set(list(pieces or []), list(special_tokens))

    def _set(self, pieces, special_tokens):
        self.special_tokens_list = [s for s in dict.fromkeys(special_tokens) if s != self.unk_token]
        toks = [self.unk_token] + self.special_tokens_list
        self.pieces = [(p, float(s)) for p, s in pieces if p not in toks]
        self.vocab = {t: i for i, t in enumerate(toks)}
        for p, _ in self.pieces:
            self.vocab[p] = len(self.vocab)
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        self.special_tokens = {s: self.vocab[s] for s in self.special_tokens_list}
        self._logp = {p: s for p, s in self.pieces}
        self._max_len = max((len(p) for p, _ in self.pieces), default=1)
        self._cache = {}
        core = _base.core()
        self._core = None
        if core is not None and hasattr(core, "Unigram"):
            self._core = core.Unigram([(p.encode("utf-8", "surrogatepass"), sc, self.vocab[p]) for p, sc in self.pieces],
                                      self.vocab[self.unk_token])

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    # ------------------------------------------------------------------ encode / decode
    def _viterbi(self, word: str) -> list[int]:
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        n, lp, M = len(word), self._logp, self._max_len
        best = [-math.inf] * (n + 1)
        back = [0] * (n + 1)
        best[0] = 0.0
        unk_score = min(lp.values(), default=0.0) - 10.0  # unknown character: one <unk> piece
        for e in range(1, n + 1):
            for s in range(max(0, e - M), e):
                if best[s] == -math.inf:
                    continue
                sc = lp.get(word[s:e])
                if sc is None:
                    if e - s != 1:
                        continue
                    sc = unk_score
                v = best[s] + sc
                if v > best[e]:
                    best[e], back[e] = v, s
        ids, e = [], n
        while e > 0:
            s = back[e]
            ids.append(self.vocab.get(word[s:e], self.vocab[self.unk_token]))
            e = s
        ids.reverse()
        # consecutive <unk>s merge into one, as SentencePiece does
        unk = self.vocab[self.unk_token]
        ids = [t for k, t in enumerate(ids) if not (t == unk and k > 0 and ids[k - 1] == unk)]
        if len(self._cache) < (1 << 18):
            self._cache[word] = ids
        return ids

    def _split_specials(self, text):
        if not self.special_tokens:
            return [text]
        order = sorted(self.special_tokens, key=len, reverse=True)
        out, i, start = [], 0, 0
        while i < len(text):
            hit = next((s for s in order if text.startswith(s, i)), None)
            if hit is None:
                i += 1
                continue
            out.append(text[start:i]); out.append((hit,))
            i += len(hit); start = i
        out.append(text[start:])
        return out

    def encode(self, text: str, use_core: bool = True) -> list[int]:
        text = _base.normalize(check_text(text, "UnigramTokenizer.encode"), self.normalization)
        ids = []
        for seg in self._split_specials(text):
            if isinstance(seg, tuple):
                ids.append(self.special_tokens[seg[0]]); continue
            if self._core is not None and use_core:
                ids.extend(self._core.encode(seg.encode("utf-8", "surrogatepass")).tolist())
                continue
            for w in _words(seg):
                ids.extend(self._viterbi(w))
        return ids

    def encode_reference(self, text: str) -> list[int]:
        """The pure-Python Viterbi (test oracle)."""
        return self.encode(text, use_core=False)

    def tokenize(self, text: str) -> list[str]:
        return [self.id_to_token[i] for i in self.encode(text)]

    def decode(self, ids) -> str:
        arr = np.asarray(ids)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise TypeError(f"decode: ids must be a 1-D sequence of ints, got {arr.dtype} shape {arr.shape}")
        out = []
        for i in arr.tolist():
            t = self.id_to_token.get(i)
            if t is None:
                raise ValueError(f"token id {i} is out of range")
            out.append(t)
        return "".join(out).replace(SPACE, " ").lstrip(" ")

    def encode_batch(self, texts, padding=False, max_length=None, truncation=False, padding_side="right"):
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise TypeError(f"encode_batch: texts must be a list of str, got {type(texts).__name__}")
        return _base.pad_batch([self.encode(t) for t in texts], 0,
                               padding, max_length, truncation, padding_side)

    # ------------------------------------------------------------------ training
    def train(self, files_or_iterator, vocab_size: int, special_tokens: Sequence[str] = (),
              max_piece_length: int = 16, shrinking_factor: float = 0.75, em_iterations: int = 2,
              seed_size: int | None = None, use_reference: bool = False) -> "UnigramTokenizer":
        """Learn pieces and scores; ``vocab_size`` counts ``<unk>`` and the special tokens. The
        E-step runs in C++ when available (``use_reference=True``: the Python one; same result)."""
        if isinstance(special_tokens, str):
            raise TypeError("train: special_tokens must be a list of str")
        n_fixed = 1 + len([s for s in dict.fromkeys(special_tokens) if s != self.unk_token])
        docs = _base.iter_documents(files_or_iterator, "UnigramTokenizer.train")
        counts = Counter()
        for d in docs:
            counts.update(_words(_base.normalize(d, self.normalization)))
        if not counts:
            raise ValueError("train: no text")
        words = list(counts.items())
        chars = Counter()
        for w, c in words:
            for ch in w:
                chars[ch] += c
        target = vocab_size - n_fixed
        if target < len(chars):
            raise ValueError(f"train: vocab_size={vocab_size} is below the {len(chars)} distinct characters "
                             f"+ {n_fixed} special tokens")
        # Seed: frequent substrings (counted once per word occurrence position, weighted).
        sub = Counter()
        for w, c in words:
            n = len(w)
            for s in range(n):
                for e in range(s + 2, min(n, s + max_piece_length) + 1):
                    sub[w[s:e]] += c
        seed_size = seed_size or max(10 * target, 2000)
        seeds = [(p, f * len(p)) for p, f in sub.items() if f >= 2 and _valid_piece(p)]
        seeds.sort(key=lambda x: (-x[1], x[0]))
        seeds = seeds[:seed_size]
        freq = dict(chars)
        freq.update({p: sub[p] for p, _ in seeds})
        total = sum(freq.values())
        logp = {p: math.log(f / total) for p, f in freq.items()}
        required = set(chars)

        core = None if use_reference else _base.core()
        if core is not None and not hasattr(core, "unigram_estep"):
            core = None
        if core is not None:
            word_bytes = [w.encode("utf-8", "surrogatepass") for w, _ in words]
            word_counts = [c for _, c in words]

        def em(logp):
            if core is not None:
                items = list(logp.items())
                exp, loglik = core.unigram_estep([(p.encode("utf-8", "surrogatepass"), v) for p, v in items],
                                                 word_bytes, word_counts)
                return dict(zip((p for p, _ in items), exp.tolist())), loglik
            M = max(len(p) for p in logp)
            expected = Counter()
            loglik = 0.0
            for w, c in words:
                n = len(w)
                alpha = [-math.inf] * (n + 1)
                alpha[0] = 0.0
                for e in range(1, n + 1):
                    a = -math.inf
                    for s in range(max(0, e - M), e):
                        lp = logp.get(w[s:e])
                        if lp is not None and alpha[s] != -math.inf:
                            a = _logsumexp(a, alpha[s] + lp)
                    alpha[e] = a
                beta = [-math.inf] * (n + 1)
                beta[n] = 0.0
                for s in range(n - 1, -1, -1):
                    b = -math.inf
                    for e in range(s + 1, min(n, s + M) + 1):
                        lp = logp.get(w[s:e])
                        if lp is not None and beta[e] != -math.inf:
                            b = _logsumexp(b, lp + beta[e])
                    beta[s] = b
                Z = alpha[n]
                loglik += c * Z
                for s in range(n):
                    if alpha[s] == -math.inf:
                        continue
                    for e in range(s + 1, min(n, s + M) + 1):
                        p = w[s:e]
                        lp = logp.get(p)
                        if lp is not None:
                            expected[p] += c * math.exp(alpha[s] + lp + beta[e] - Z)
            return expected, loglik

        def mstep(expected):
            # SentencePiece's Bayesian M-step: log p = digamma(count) - digamma(total), which
            # sparsifies rare pieces (fsum: order-independent, so C++ and Python E-steps agree).
            tot = math.fsum(expected.values())
            out = {}
            for p in logp:
                f = expected.get(p, 0.0)
                if f > 0.5 or p in required:
                    out[p] = _digamma(max(f, 1e-3)) - _digamma(tot)
            return out

        while True:
            for _ in range(em_iterations):
                expected, _ = em(logp)
                logp = mstep(expected)
            if len(logp) <= target:
                break
            # Prune: loss of removing p = expected(p) * (logp(p) - best alternative segmentation).
            tmp = UnigramTokenizer()
            scored = []
            freqs = expected
            for p, lp in logp.items():
                if p in required:
                    continue
                tmp._logp = {k: v for k, v in ((p2, logp[p2]) for p2 in _alt_candidates(p, logp)) if k != p}
                tmp._max_len = len(p)
                alt = _best_score(p, tmp._logp)
                loss = freqs.get(p, 0.0) * (lp - alt)
                scored.append((loss, p))
            scored.sort(key=lambda x: (-x[0], x[1]))
            keep = max(target - len(required), int((len(logp)) * shrinking_factor) - len(required))
            keep = max(keep, target - len(required))
            kept = {p for _, p in scored[:keep]}
            logp = {p: v for p, v in logp.items() if p in kept or p in required}
        pieces = sorted(logp.items(), key=lambda x: (-x[1], x[0]))
        self._set(pieces, list(special_tokens))
        return self

    # ------------------------------------------------------------------ files
    def save(self, directory: str) -> list[str]:
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "unigram.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"unk_token": self.unk_token, "special_tokens": self.special_tokens_list,
                       "pieces": self.pieces}, f, ensure_ascii=False)
        mp = os.path.join(directory, META_FILE)
        with open(mp, "w", encoding="utf-8") as f:
            json.dump({"type": "UnigramTokenizer", "normalization": self.normalization}, f)
        return [path, mp]

    @classmethod
    def load(cls, directory: str) -> "UnigramTokenizer":
        path = os.path.join(directory, "unigram.json")
        try:
            with open(path, encoding="utf-8") as f:
                spec = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: malformed unigram.json: {e.msg}") from None
        meta = {}
        mp = os.path.join(directory, META_FILE)
        if os.path.exists(mp):
            with open(mp, encoding="utf-8") as f:
                meta = json.load(f)
        for n, pc in enumerate(spec.get("pieces", [])):
            if not (isinstance(pc, list) and len(pc) == 2 and isinstance(pc[0], str) and isinstance(pc[1], (int, float))):
                raise ValueError(f"{path}: pieces[{n}] must be [piece, score], got {pc!r}")
        return cls([tuple(p) for p in spec["pieces"]], spec.get("special_tokens", []), spec.get("unk_token", "<unk>"),
                   normalization=meta.get("normalization"))


def _digamma(x: float) -> float:
    """psi(x) for x > 0: recurrence up to x >= 7, then the asymptotic series."""
    r = 0.0
    while x < 7.0:
        r -= 1.0 / x
        x += 1.0
    f = 1.0 / (x * x)
    return r + math.log(x) - 0.5 / x - f * (1.0 / 12 - f * (1.0 / 120 - f * (1.0 / 252 - f * (1.0 / 240 - f / 132))))


def _alt_candidates(p, logp):
    n = len(p)
    return [p[s:e] for s in range(n) for e in range(s + 1, n + 1) if p[s:e] in logp]


def _best_score(word, lp):
    n = len(word)
    best = [-math.inf] * (n + 1)
    best[0] = 0.0
    for e in range(1, n + 1):
        for s in range(e):
            v = lp.get(word[s:e])
            if v is not None and best[s] != -math.inf and best[s] + v > best[e]:
                best[e] = best[s] + v
    return best[n]
