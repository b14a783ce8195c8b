"""Load a Hugging Face ``tokenizer.json`` (BPE with byte-level pre-tokeniser, or WordPiece)."""
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
    raise ValueError(f"{path}: unsupported tokenizer.json model type {kind!r} (supported: BPE, WordPiece)")
