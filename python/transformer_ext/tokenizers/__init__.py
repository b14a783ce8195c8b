"""Tokenizers: byte-level BPE (GPT-2), WordPiece (BERT) and unigram (SentencePiece-style).

- ``ByteLevelBPETokenizer``: train / encode / decode / save (vocab.json + merges.txt) /
  ``from_files``; pre-tokeniser, merge loop and trainer in C++.
- ``WordPieceTokenizer``: BERT's basic tokeniser + greedy longest-match (C++), ``from_file``.
- ``UnigramTokenizer``: SentencePiece-style unigram LM (EM + pruning, Viterbi; E-step, seed
  counting, pruning scores and Viterbi in C++); loads Hugging Face Unigram ``tokenizer.json``.
- ``from_pretrained(dir)``: picks the class from the files present.

All share ``encode``, ``decode``, ``save``, ``load`` and ``encode_batch(texts, padding=...,
max_length=..., truncation=..., padding_side=...)``: the C++ encoder returns one flat id buffer
+ offsets for the whole batch (``encode_flat``), encoded on ``tx.get_num_threads()`` threads with
the GIL released (same ids for any thread count), and the padded arrays are built with
vectorised NumPy. C++ paths run when the compiled core is available; the pure-Python reference
implementations are kept as test oracles and fallback.
"""
from ._base import BatchEncoding
from .bpe import ByteLevelBPETokenizer
from .pretrained import from_pretrained
from .unigram import UnigramTokenizer
from .wordpiece import WordPieceTokenizer, basic_tokenize

__all__ = ["BatchEncoding", "ByteLevelBPETokenizer", "UnigramTokenizer", "WordPieceTokenizer", "basic_tokenize",
           "from_pretrained"]
