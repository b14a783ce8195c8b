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

A Hugging Face ``tokenizer.json`` with a Unigram model (``from_pretrained``) keeps its own ids and
its Metaspace pre-tokeniser (``pretokenizer={"type": "metaspace", ...}``): only ' ' becomes ``▁``
and starts a new word; tabs and newlines stay inside words, as in Hugging Face.
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


def _check_pretokenizer(pt):
    pt = dict(pt or {"type": "whitespace"})
    if pt.get("type") not in ("whitespace", "metaspace"):
        raise ValueError(f"pretokenizer type must be 'whitespace' or 'metaspace', got {pt.get('type')!r}")
    if pt.get("prepend_scheme", "always") not in ("always", "never", "first"):
        raise ValueError(f"pretokenizer prepend_scheme must be always / never / first, got {pt['prepend_scheme']!r}")
    return pt


def _pretokenize(seg: str, pt: dict, at_start: bool) -> list[str]:
    """Words of one text segment (between special tokens). "whitespace": str.split() with ``▁``
    prefixes; "metaspace": Hugging Face's Metaspace (' ' -> ``▁``, ``▁`` prepended per
    prepend_scheme unless already there, a new word at every ``▁``)."""
    if pt["type"] == "whitespace":
        return _words(seg)
    if not seg:
        return []
    t = seg.replace(" ", SPACE)
    scheme = pt.get("prepend_scheme", "always")
    if (scheme == "always" or (scheme == "first" and at_start)) and not t.startswith(SPACE):
        t = SPACE + t
    if not pt.get("split", True):
        return [t]
    out, start = [], 0
    for k in range(1, len(t)):
        if t[k] == SPACE:
            out.append(t[start:k]); start = k
    out.append(t[start:])
    return out


class UnigramTokenizer:
    kind = "unigram"

    def __init__(self, pieces: Sequence[tuple[str, float]] | None = None, special_tokens: Sequence[str] = (),
                 unk_token: str = "<unk>", normalization=None, pretokenizer: dict | None = None):
        self.normalization = _base.check_normalization(normalization)
        self.unk_token = unk_token
        self.pretokenizer = _check_pretokenizer(pretokenizer)
        self._set(list(pieces or []), list(special_tokens))

    def _set(self, pieces, special_tokens):
        """Ids: <unk> 0, the special tokens, then the pieces in order."""
        specials = [s for s in dict.fromkeys(special_tokens) if s != self.unk_token]
        toks = [self.unk_token] + specials
        pieces = [(p, float(s)) for p, s in pieces if p not in toks]
        vocab = {t: i for i, t in enumerate(toks)}
        for p, _ in pieces:
            vocab.setdefault(p, len(vocab))
        self._install(vocab, pieces, specials)

    def _install(self, vocab, pieces, specials):
        self.special_tokens_list = list(specials)
        self.pieces = pieces
        self.vocab = vocab
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        self.special_tokens = {s: self.vocab[s] for s in self.special_tokens_list}
        self._logp = {p: s for p, s in self.pieces}
        self._max_len = max((len(p) for p, _ in self.pieces), default=1)
        self._cache = {}
        core = _base.core()
        self._core = None
        if core is not None and hasattr(core, "Unigram"):
            enc = lambda t: t.encode("utf-8", "surrogatepass")  # noqa: E731
            pt = self.pretokenizer
            try:
                self._core = core.Unigram([(enc(p), sc, self.vocab[p]) for p, sc in self.pieces],
                                          self.vocab[self.unk_token],
                                          [(enc(t), i) for t, i in self.special_tokens.items()],
                                          0 if pt["type"] == "whitespace" else 1, bool(pt.get("split", True)),
                                          {"never": 0, "always": 1, "first": 2}[pt.get("prepend_scheme", "always")])
            except TypeError:  # a core built before specials / pre-tokeniser options
                self._core = None

    @classmethod
    def from_vocab_list(cls, vocab: Sequence[tuple[str, float]], unk_id: int, special_tokens: Sequence[str] = (),
                        normalization=None, pretokenizer: dict | None = None, source: str = "vocab"):
        """Ids as given: token i is ``vocab[i]`` = (piece, log-probability) — Hugging Face's and
        SentencePiece's layout. ``special_tokens`` are matched whole first; neither they nor the
        unknown token take part in Viterbi (an unknown character still becomes the unknown id)."""
        tok = cls.__new__(cls)
        tok.normalization = _base.check_normalization(normalization)
        tok.pretokenizer = _check_pretokenizer(pretokenizer)
        if not (isinstance(unk_id, int) and 0 <= unk_id < len(vocab)):
            raise ValueError(f"{source}: unk_id {unk_id!r} is not an id of the {len(vocab)}-piece vocabulary")
        ids = {}
        for i, item in enumerate(vocab):
            if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)
                    and isinstance(item[1], (int, float)) and not isinstance(item[1], bool)):
                raise ValueError(f"{source}: vocab[{i}] must be [piece, score], got {item!r}")
            ids.setdefault(item[0], i)
        tok.unk_token = vocab[unk_id][0]
        specials = [s for s in dict.fromkeys(special_tokens) if s != tok.unk_token]
        for s in specials:
            if s not in ids:
                raise ValueError(f"{source}: unknown special token {s!r}: not in the vocabulary")
        fixed = set(specials) | {tok.unk_token}
        pieces = [(p, float(sc)) for i, (p, sc) in enumerate(vocab) if p not in fixed and ids[p] == i]
        tok._install(ids, pieces, specials)
        return tok

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
        first = {s[0] for s in order}
        out, i, start = [], 0, 0
        while i < len(text):
            hit = next((s for s in order if text.startswith(s, i)), None) if text[i] in first else None
            if hit is None:
                i += 1
                continue
            out.append(text[start:i]); out.append((hit,))
            i += len(hit); start = i
        out.append(text[start:])
        return out

    def encode(self, text: str, use_core: bool = True) -> list[int]:
        text = _base.normalize(check_text(text, "UnigramTokenizer.encode"), self.normalization)
        if self._core is not None and use_core:  # specials, word split and Viterbi all in C++
            return self._core.encode(text.encode("utf-8", "surrogatepass")).tolist()
        ids = []
        for k, seg in enumerate(self._split_specials(text)):
            if isinstance(seg, tuple):
                ids.append(self.special_tokens[seg[0]]); continue
            for w in _pretokenize(seg, self.pretokenizer, at_start=k == 0):
                ids.extend(self._viterbi(w))
        return ids

    def encode_reference(self, text: str) -> list[int]:
        """The pure-Python Viterbi (test oracle)."""
        return self.encode(text, use_core=False)

    def encode_flat(self, texts: Sequence[str], n_threads: int | None = None):
        """All texts -> (ids, offsets (n + 1,)); C++ on threads (default ``tx.get_num_threads()``),
        GIL released, same result for any thread count."""
        where = "UnigramTokenizer.encode_batch"
        texts = _base.batch_texts(texts, where, self.normalization)
        if self._core is not None:
            return self._core.encode_batch(texts, int(n_threads or 0), where)
        _base.check_batch_types(texts, where)
        return _base.flatten([self.encode(t) for t in texts])

    def tokenize(self, text: str) -> list[str]:
        return [self.id_to_token[i] for i in self.encode(text)]

    def decode(self, ids) -> str:
        arr = _base.check_ids(ids)
        out = []
        for i in arr.tolist():
            t = self.id_to_token.get(i)
            if t is None:
                raise ValueError(f"token id {i} is out of range")
            out.append(t)
        text = "".join(out).replace(SPACE, " ")
        if self.pretokenizer["type"] == "metaspace":  # Hugging Face's Metaspace decoder: drop the one prepended space
            scheme = self.pretokenizer.get("prepend_scheme", "always")
            return text[1:] if scheme != "never" and text.startswith(" ") else text
        return text.lstrip(" ")

    def encode_batch(self, texts, padding=False, max_length=None, truncation=False, padding_side="right"):
        """Pads with id 0 (``<unk>`` here; masked out by ``attention_mask``)."""
        _base.check_padding(padding, max_length, truncation, padding_side)
        flat, offsets = self.encode_flat(texts)
        return _base.batch_from_flat(flat, offsets, 0, padding, max_length, truncation, padding_side)

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
        core = None if use_reference else _base.core()
        if core is not None and not hasattr(core, "unigram_substrings"):
            core = None
        # Seed: frequent substrings (counted once per word occurrence position, weighted).
        if core is not None:
            subs, sub_f = core.unigram_substrings([w for w, _ in words], [c for _, c in words], max_piece_length, 2)
            sub = dict(zip(subs, sub_f.tolist()))
        else:
            sub = Counter()
            for w, c in words:
                n = len(w)
                for s in range(n):
                    for e in range(s + 2, min(n, s + max_piece_length) + 1):
                        sub[w[s:e]] += c
        seed_size = seed_size or max(10 * target, 2000)
        cands = [(p, f * len(p)) for p, f in sub.items() if f >= 2]
        cands.sort(key=lambda x: (-x[1], x[0]))
        seeds = []
        for p, sc in cands:  # validity checked lazily, best first: same as filtering all
            if _valid_piece(p):
                seeds.append((p, sc))
                if len(seeds) == seed_size:
                    break
        freq = dict(chars)
        freq.update({p: sub[p] for p, _ in seeds})
        total = sum(freq.values())
        logp = {p: math.log(f / total) for p, f in freq.items()}
        required = set(chars)

        if core is not None:
            word_bytes = [w.encode("utf-8", "surrogatepass") for w, _ in words]
            word_counts = [c for _, c in words]

        def em(logp):
            if core is not None:
                items = list(logp.items())
                exp, loglik = core.unigram_estep([(p.encode("utf-8", "surrogatepass"), v) for p, v in items],
                                                 word_bytes, word_counts, 0)  # 0: tx.get_num_threads()
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
            scored = []
            freqs = expected
            if core is not None and hasattr(core, "unigram_alt_scores"):
                items = list(logp.items())
                alts = core.unigram_alt_scores([(p.encode("utf-8", "surrogatepass"), v) for p, v in items]).tolist()
                for (p, lp), alt in zip(items, alts):
                    if p not in required:
                        scored.append((freqs.get(p, 0.0) * (lp - alt), p))
            else:
                for p, lp in logp.items():
                    if p in required:
                        continue
                    alt = _best_score(p, {k: logp[k] for k in _alt_candidates(p, logp) if k != p})
                    scored.append((freqs.get(p, 0.0) * (lp - alt), p))
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
        by_id = sorted(self.vocab.items(), key=lambda kv: kv[1])
        spec = {"unk_token": self.unk_token, "special_tokens": self.special_tokens_list, "pieces": self.pieces,
                "pretokenizer": self.pretokenizer}
        if [i for _, i in by_id] == list(range(len(by_id))):
            # the exact id layout (token i = vocab[i]; specials score 0), e.g. from a tokenizer.json
            spec["vocab"] = [[t, self._logp.get(t, 0.0)] for t, _ in by_id]
            spec["unk_id"] = self.vocab[self.unk_token]
        with open(path, "w", encoding="utf-8") as f:
            json.dump(spec, f, ensure_ascii=False)
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
        if "vocab" in spec:
            return cls.from_vocab_list([tuple(v) if isinstance(v, list) else v for v in spec["vocab"]],
                                       spec.get("unk_id", 0), spec.get("special_tokens", []),
                                       normalization=meta.get("normalization"),
                                       pretokenizer=spec.get("pretokenizer"), source=path)
        for n, pc in enumerate(spec.get("pieces", [])):
            if not (isinstance(pc, list) and len(pc) == 2 and isinstance(pc[0], str) and isinstance(pc[1], (int, float))):
                raise ValueError(f"{path}: pieces[{n}] must be [piece, score], got {pc!r}")
        return cls([tuple(p) for p in spec["pieces"]], spec.get("special_tokens", []), spec.get("unk_token", "<unk>"),
                   normalization=meta.get("normalization"), pretokenizer=spec.get("pretokenizer"))


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
