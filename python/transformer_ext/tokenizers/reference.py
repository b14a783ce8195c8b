"""Pure-Python reference implementations (test oracle, and the fallback when the compiled
core is unavailable): GPT-2 pre-tokeniser, byte-level BPE merge loop, BPE trainer."""
from __future__ import annotations

import unicodedata
from collections import Counter
from functools import lru_cache

# Unicode White_Space property (PropList.txt): what \s means in GPT-2's pattern.
WHITE_SPACE = frozenset([*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
                         0x2028, 0x2029, 0x202F, 0x205F, 0x3000])
OTHER, LETTER, NUMBER, SPACE = 0, 1, 2, 3


@lru_cache(maxsize=65536)
def char_class(ch: str) -> int:
    cp = ord(ch)
    if cp in WHITE_SPACE:
        return SPACE
    cat = unicodedata.category(ch)
    if cat[0] == "L":
        return LETTER
    if cat[0] == "N":
        return NUMBER
    return OTHER


def gpt2_pretokenize(text: str) -> list[str]:
    """GPT-2's pattern 's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+
    as an explicit scanner over code points."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == "'" and i + 1 < n:
            if text[i + 1] in "stmd":
                out.append(text[i:i + 2]); i += 2; continue
            if text[i + 1:i + 3] in ("re", "ve", "ll"):
                out.append(text[i:i + 3]); i += 3; continue
        cls = char_class(c)
        start = i
        if c == " " and i + 1 < n and char_class(text[i + 1]) != SPACE:
            cls = char_class(text[i + 1])
            i += 1
        if cls != SPACE:
            i += 1
            while i < n and char_class(text[i]) == cls:
                i += 1
            out.append(text[start:i]); continue
        j = i + 1
        while j < n and char_class(text[j]) == SPACE:
            j += 1
        if j < n and j - i > 1:
            j -= 1
        out.append(text[i:j]); i = j
    return out


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_ENCODER = bytes_to_unicode()
BYTE_DECODER = {v: k for k, v in BYTE_ENCODER.items()}


def bpe_word(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """GPT-2's bpe(): merge the lowest-ranked adjacent pair (all its occurrences, left to right)."""
    word = list(symbols)
    while len(word) > 1:
        pairs = [(ranks.get((a, b), None), (a, b)) for a, b in zip(word, word[1:])]
        cands = [p for p in pairs if p[0] is not None]
        if not cands:
            break
        _, (a, b) = min(cands)
        new, i = [], 0
        while i < len(word):
            if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                new.append(a + b); i += 2
            else:
                new.append(word[i]); i += 1
        word = new
    return word


def bpe_encode(text: str, vocab: dict[str, int], ranks: dict[tuple[str, str], int],
               special_tokens: dict[str, int] | None = None) -> list[int]:
    """Reference byte-level BPE encode (specials split first, longest match at a position)."""
    ids: list[int] = []
    special_tokens = special_tokens or {}
    segments = [text]
    if special_tokens:
        segments, i, n = [], 0, len(text)
        start = 0
        order = sorted(special_tokens, key=len, reverse=True)
        while i < n:
            hit = next((s for s in order if s and text.startswith(s, i)), None)
            if hit is None:
                i += 1
                continue
            segments.append(text[start:i]); segments.append((hit,))
            i += len(hit); start = i
        segments.append(text[start:])
    for seg in segments:
        if isinstance(seg, tuple):
            ids.append(special_tokens[seg[0]]); continue
        for piece in gpt2_pretokenize(seg):
            syms = [BYTE_ENCODER[b] for b in piece.encode("utf-8", "surrogatepass")]
            ids.extend(vocab[t] for t in bpe_word(syms, ranks))
    return ids


def train_bpe(docs, vocab_size: int, min_frequency: int = 2, special_tokens=()):
    """Slow reference trainer (recounts every pair each step): returns (vocab, merges) with the
    documented tie-break: highest count, then the smallest (left id, right id)."""
    specials = list(dict.fromkeys(special_tokens))
    vocab = {s: i for i, s in enumerate(specials)}
    for ch in sorted(BYTE_ENCODER.values()):
        vocab.setdefault(ch, len(vocab))
    import re
    split = re.compile("|".join(map(re.escape, sorted(specials, key=len, reverse=True)))) if specials else None
    counts = Counter()
    for d in docs:
        for part in (split.split(d) if split is not None else (d,)):
            counts.update(gpt2_pretokenize(part))
    words = [([vocab[BYTE_ENCODER[b]] for b in w.encode("utf-8", "surrogatepass")], c) for w, c in counts.items()]
    id_to_tok = {i: t for t, i in vocab.items()}
    merges = []
    while len(vocab) < vocab_size:
        pc = Counter()
        for w, c in words:
            for a, b in zip(w, w[1:]):
                pc[(a, b)] += c
        if not pc:
            break
        (a, b), c = min(pc.items(), key=lambda kv: (-kv[1], kv[0]))
        if c < max(1, min_frequency):
            break
        tok = id_to_tok[a] + id_to_tok[b]
        if tok not in vocab:
            vocab[tok] = len(vocab); id_to_tok[vocab[tok]] = tok
        new = vocab[tok]
        merges.append((id_to_tok[a], id_to_tok[b]))
        nw = []
        for w, c in words:
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(new); i += 2
                else:
                    out.append(w[i]); i += 1
            nw.append((out, c))
        words = nw
    return vocab, merges
