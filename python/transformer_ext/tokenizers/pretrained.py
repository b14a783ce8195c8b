"""``from_pretrained(dir)``: pick the tokenizer class from the files present."""
from __future__ import annotations

import json
import os


def from_pretrained(directory: str, **kwargs):
    """Load a tokenizer from ``directory``. Looks, in order, for the project's own metadata file,
    a Hugging Face ``tokenizer.json`` (BPE, WordPiece or Unigram models), ``vocab.json`` + ``merges.txt``
    (GPT-2 byte-level BPE), ``vocab.txt`` (BERT WordPiece)."""
    from .bpe import META_FILE, ByteLevelBPETokenizer

    if not os.path.isdir(directory):
        raise FileNotFoundError(f"from_pretrained: {directory!r} is not a directory")
    p = lambda f: os.path.join(directory, f)  # noqa: E731
    if os.path.exists(p(META_FILE)):
        with open(p(META_FILE), encoding="utf-8") as f:
            kind = json.load(f).get("type")
        classes = _classes()
        if kind not in classes:
            raise ValueError(f"{p(META_FILE)}: unknown tokenizer type {kind!r}")
        return classes[kind].load(directory)
    if os.path.exists(p("tokenizer.json")):
        from .hf_json import load_tokenizer_json
        return load_tokenizer_json(p("tokenizer.json"), **kwargs)
    if os.path.exists(p("vocab.json")) and os.path.exists(p("merges.txt")):
        return ByteLevelBPETokenizer.from_files(p("vocab.json"), p("merges.txt"), **kwargs)
    if os.path.exists(p("vocab.txt")):
        from .wordpiece import WordPieceTokenizer
        return WordPieceTokenizer.from_file(p("vocab.txt"), **kwargs)
    raise FileNotFoundError(f"from_pretrained: no tokenizer files in {directory!r} (expected tokenizer.json, "
                            f"vocab.json + merges.txt, vocab.txt or {META_FILE})")


def _classes():
    from .bpe import ByteLevelBPETokenizer
    out = {"ByteLevelBPETokenizer": ByteLevelBPETokenizer}
    try:
        from .wordpiece import WordPieceTokenizer
        out["WordPieceTokenizer"] = WordPieceTokenizer
    except ImportError:
        pass
    try:
        from .unigram import UnigramTokenizer
        out["UnigramTokenizer"] = UnigramTokenizer
    except ImportError:
        pass
    return out
