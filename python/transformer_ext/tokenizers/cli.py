"""``transformer-ext tokenize``: train a tokenizer on files, encode / decode stdin.

Exported as TOKENIZE_COMMAND = (help, description, add_arguments, run) for transformer_ext.cli.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

HELP = "train a tokenizer on files, or encode/decode stdin with one"
DESCRIPTION = """Tokenizers: byte-level BPE (GPT-2), WordPiece (BERT), unigram.

  transformer-ext tokenize train --type bpe --vocab-size 8000 --out DIR FILE...
  transformer-ext tokenize encode DIR < text.txt        (ids, space-separated, one line per input line)
  transformer-ext tokenize decode DIR < ids.txt         (one line of ids per output line)
DIR may hold the project's files, a Hugging Face tokenizer.json, vocab.json+merges.txt or vocab.txt."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="tok_cmd", required=True)
    t = sub.add_parser("train", help="train a tokenizer on text files")
    t.add_argument("files", nargs="+", help="UTF-8 text files")
    t.add_argument("--type", choices=["bpe", "unigram"], default="bpe")
    t.add_argument("--vocab-size", type=int, required=True)
    t.add_argument("--min-frequency", type=int, default=2)
    t.add_argument("--special-tokens", default="<|endoftext|>", help="comma-separated (default: <|endoftext|>)")
    t.add_argument("--out", required=True, help="output directory")
    for name, h in (("encode", "encode stdin lines to ids"), ("decode", "decode lines of ids from stdin")):
        e = sub.add_parser(name, help=h)
        e.add_argument("tokenizer", help="tokenizer directory")
        if name == "encode":
            e.add_argument("--json", action="store_true", help="one JSON list per line")
            e.add_argument("--no-special-tokens", action="store_true", help="WordPiece: no [CLS]/[SEP]")


def run(args: argparse.Namespace) -> int:
    from . import ByteLevelBPETokenizer, WordPieceTokenizer, from_pretrained

    try:
        if args.tok_cmd == "train":
            specials = [s for s in args.special_tokens.split(",") if s]
            if args.type == "bpe":
                tok = ByteLevelBPETokenizer().train([pathlib.Path(f) for f in args.files], args.vocab_size,
                                                    args.min_frequency, specials)
            else:
                from .unigram import UnigramTokenizer
                tok = UnigramTokenizer().train([pathlib.Path(f) for f in args.files], args.vocab_size,
                                               special_tokens=specials)
            files = tok.save(args.out)
            print(f"trained {type(tok).__name__} with {tok.vocab_size} tokens: " + ", ".join(files), file=sys.stderr)
            return 0
        tok = from_pretrained(args.tokenizer)
        if args.tok_cmd == "encode":
            for line in sys.stdin:
                line = line.rstrip("\n")
                if isinstance(tok, WordPieceTokenizer):
                    ids = tok.encode(line, add_special_tokens=not args.no_special_tokens)
                else:
                    ids = tok.encode(line)
                print(json.dumps(ids) if args.json else " ".join(map(str, ids)))
            return 0
        for line in sys.stdin:
            line = line.strip().strip("[]").replace(",", " ")
            print(tok.decode([int(x) for x in line.split()]))
        return 0
    except (OSError, ValueError, TypeError) as exc:
        print(f"transformer-ext tokenize: error: {exc}", file=sys.stderr)
        return 2


TOKENIZE_COMMAND = (HELP, DESCRIPTION, add_arguments, run)
