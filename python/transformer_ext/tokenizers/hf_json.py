"""Load a Hugging Face ``tokenizer.json`` (BPE with byte-level pre-tokeniser, WordPiece, Unigram)."""
from __future__ import annotations

import json
import warnings


def _pretok_has_prefix_space(node) -> bool:
    if isinstance(node, dict):
        if node.get("type") == "ByteLevel" and node.get("add_prefix_space"):
            return True
        return any(_pretok_has_prefix_space(v) for v in node.values())
    if isinstance(node, list):
        return any(_pretok_has_prefix_space(v) for v in node)
    return False


def load_tokenizer_json(path, **kwargs):
    """BPE models need a ByteLevel pre-tokeniser without ``add_prefix_space`` (GPT-2's setting);
    a BPE normaliser or a post-processor other than ByteLevel (e.g. RoBERTa's <s> ... </s>) is
    not reproduced and triggers a warning."""
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: malformed tokenizer.json: {e.msg}") from None
    model = spec.get("model") or {}
    kind = model.get("type")
    specials = [t["content"] for t in spec.get("added_tokens") or () if t.get("special")]
    norm = spec.get("normalizer") or {}
    if kind == "BPE":
        from .bpe import ByteLevelBPETokenizer
        pre = json.dumps(spec.get("pre_tokenizer"))
        if "ByteLevel" not in pre:
            raise ValueError(f"{path}: only byte-level BPE models are supported (pre_tokenizer: {pre[:80]})")
        if _pretok_has_prefix_space(spec.get("pre_tokenizer")):
            raise ValueError(f"{path}: ByteLevel add_prefix_space=true is not supported (GPT-2 uses false)")
        post = (spec.get("post_processor") or {}).get("type")
        if spec.get("normalizer") or post not in (None, "ByteLevel"):
            warnings.warn(f"{path}: normalizer / post_processor {post!r} are ignored", stacklevel=2)
        vocab = dict(model["vocab"])
        merges = []
        for n, m in enumerate(model.get("merges") or ()):
            pair = tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
            if len(pair) != 2:
                raise ValueError(f"{path}: model.merges[{n}] is malformed: {m!r}")
            merges.append(pair)
        for t in spec.get("added_tokens") or ():
            vocab.setdefault(t["content"], t["id"])
        tok = ByteLevelBPETokenizer.__new__(ByteLevelBPETokenizer)
        tok.normalization = kwargs.get("normalization")
        tok.pad_token = kwargs.get("pad_token")
        tok._set_model(vocab, merges, specials, source=str(path))
        return tok
    if kind == "WordPiece":
        from .wordpiece import WordPieceTokenizer
        lowercase = bool(norm.get("lowercase", True)) if norm.get("type") == "BertNormalizer" else False
        strip = norm.get("strip_accents") if norm.get("type") == "BertNormalizer" else False
        chinese = norm.get("handle_chinese_chars", True) if norm.get("type") == "BertNormalizer" else False
        vocab = dict(model["vocab"])
        for t in spec.get("added_tokens") or ():
            vocab.setdefault(t["content"], t["id"])
        return WordPieceTokenizer(vocab, lowercase=lowercase, strip_accents=strip, tokenize_chinese_chars=chinese,
                                  unk_token=model.get("unk_token", "[UNK]"),
                                  max_input_chars_per_word=model.get("max_input_chars_per_word", 100),
                                  continuing_prefix=model.get("continuing_subword_prefix", "##"),
                                  source=str(path), **kwargs)
    if kind == "Unigram":
        return _load_unigram(path, spec, model, specials, kwargs)
    raise ValueError(f"{path}: unsupported tokenizer.json model type {kind!r} (supported: BPE, WordPiece, Unigram)")


def _normalization_of(node):
    """NFC / NFKC / ... (or a Sequence of one of them) -> that form; None -> None; else False."""
    if not node:
        return None
    t = node.get("type")
    if t in ("NFC", "NFKC", "NFD", "NFKD"):
        return t
    if t == "Sequence":
        forms = [_normalization_of(n) for n in node.get("normalizers") or ()]
        forms = [f for f in forms if f is not None]
        if len(forms) == 1 and forms[0]:
            return forms[0]
        return None if not forms else False
    return False


def _load_unigram(path, spec, model, specials, kwargs):
    """Unigram model + Metaspace pre-tokeniser (alone: Hugging Face's split on ' ' only; after
    WhitespaceSplit: every whitespace, this project's default). Ids are kept as in the file."""
    from .unigram import SPACE, UnigramTokenizer
    if model.get("byte_fallback"):
        raise ValueError(f"{path}: Unigram byte_fallback=true is not supported")
    pre = spec.get("pre_tokenizer") or {}
    seq = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
    types = [p.get("type") for p in seq or ()]
    if not types or types[-1] != "Metaspace" or any(t not in ("WhitespaceSplit", "Metaspace") for t in types) \
            or types.count("Metaspace") != 1:
        raise ValueError(f"{path}: Unigram needs a Metaspace pre_tokenizer (optionally after WhitespaceSplit), "
                         f"got {json.dumps(pre)[:120]}")
    ms = seq[-1]
    if ms.get("replacement", SPACE) != SPACE:
        raise ValueError(f"{path}: Metaspace replacement {ms.get('replacement')!r} is not supported (only {SPACE!r})")
    scheme = ms.get("prepend_scheme")
    if scheme is None:  # older files: add_prefix_space
        scheme = "always" if ms.get("add_prefix_space", True) else "never"
    if "WhitespaceSplit" in types:
        if scheme != "always":
            raise ValueError(f"{path}: WhitespaceSplit + Metaspace needs prepend_scheme 'always', got {scheme!r}")
        pt = {"type": "whitespace"}
    else:
        pt = {"type": "metaspace", "split": bool(ms.get("split", True)), "prepend_scheme": scheme}
    normalization = kwargs.get("normalization")
    if normalization is None:
        normalization = _normalization_of(spec.get("normalizer"))
        if normalization is False:
            warnings.warn(f"{path}: normalizer {json.dumps(spec.get('normalizer'))[:80]} is not reproduced "
                          f"(only NFC / NFKC / NFD / NFKD)", stacklevel=3)
            normalization = None
    post = (spec.get("post_processor") or {}).get("type")
    if post is not None:
        warnings.warn(f"{path}: post_processor {post!r} is ignored (no special tokens are added)", stacklevel=3)
    vocab = model.get("vocab")
    if not isinstance(vocab, list):
        raise ValueError(f"{path}: model.vocab must be a list of [piece, score]")
    unk_id = model.get("unk_id")
    if unk_id is None:
        raise ValueError(f"{path}: Unigram model without unk_id is not supported")
    return UnigramTokenizer.from_vocab_list([tuple(v) if isinstance(v, list) else v for v in vocab], unk_id,
                                            specials, normalization=normalization, pretokenizer=pt,
                                            source=str(path))
