"""`transformer-ext generate`: load a model folder, stream a continuation of a prompt to the
terminal, and end with a line of prompt (pre-fill) and decode tokens per second.

A folder is either this project's checkpoint (config.json with "architecture", or a
training run's output directory) or a Hugging Face GPT-2 folder (config.json +
model.safetensors / pytorch_model.bin). The tokenizer comes from the same folder
(tokenizer.json, vocab.json + merges.txt, ...); a 256-token model without tokenizer files
uses raw UTF-8 bytes, as `transformer-ext train` and `demo` do.
"""
from __future__ import annotations

import argparse
import codecs
import json
import os
import sys
import time

from .train_cli import _positive_int, arg_number


def load_model_and_tokenizer(path: str, dtype: str = "fp32"):
    from .models import GPT, Model
    from .tokenizers import from_pretrained

    if not os.path.isdir(path):
        raise FileNotFoundError(f"generate: --model {path!r} is not a directory")
    cfg = os.path.join(path, "config.json")
    ours = not os.path.exists(cfg) or "architecture" in json.load(open(cfg, encoding="utf-8"))
    model = Model.load(path) if ours else GPT.from_pretrained(path)
    if not isinstance(model, GPT):
        raise ValueError(f"generate: {path!r} holds a {type(model).__name__}; generate needs a GPT")
    model.pack_weights(dtype)  # pack once: every token reuses them (bf16: half the bytes per token)
    try:
        tok = from_pretrained(path)
    except FileNotFoundError:
        if model.config.vocab_size != 256:
            raise FileNotFoundError(f"generate: no tokenizer files in {path!r} and the model's vocabulary "
                                    f"({model.config.vocab_size}) is not raw bytes") from None
        from .training import ByteTokenizer
        tok = ByteTokenizer()
    return model, tok


def _token_bytes(tok, token_id: int) -> bytes:
    """The bytes one token contributes (byte-level tokenizers), for UTF-8-safe streaming."""
    if hasattr(tok, "decode_bytes"):
        return tok.decode_bytes([token_id])
    if type(tok).__name__ == "ByteTokenizer":
        return bytes([token_id])
    return None


def run_generate(args, out=None) -> int:
    import numpy as np

    out = out or sys.stdout

    model, tok = load_model_and_tokenizer(args.model, args.dtype)
    prompt_ids = np.asarray(tok.encode(args.prompt), dtype=np.int64)
    if prompt_ids.size == 0:
        print("generate: the prompt encodes to no tokens", file=sys.stderr)
        return 2
    sampling = dict(do_sample=args.temperature > 0, temperature=max(args.temperature, 1e-6),
                    top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    out.write(args.prompt)
    out.flush()
    t0 = time.perf_counter()
    if args.beams > 1:  # beam search finishes before it knows its best sequence: no streaming
        ids = model.generate(prompt_ids, args.max_new_tokens, num_beams=args.beams)
        new = [int(t) for t in ids[prompt_ids.size:]]
        t_first = t_end = time.perf_counter()
        out.write(tok.decode(new))
    else:
        new, t_first = [], None
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")  # never splits a character
        text_so_far = ""
        for token in model.generate_stream(prompt_ids, args.max_new_tokens, **sampling):
            if t_first is None:
                t_first = time.perf_counter()
            new.append(token)
            piece = _token_bytes(tok, token)
            if piece is not None:
                out.write(utf8.decode(piece))
            else:  # e.g. WordPiece: decode the whole continuation, print what is new
                text = tok.decode(new)
                out.write(text[len(text_so_far):])
                text_so_far = text
            out.flush()
        if _token_bytes(tok, 0) is not None:
            out.write(utf8.decode(b"", final=True))
        t_end = time.perf_counter()
    out.write("\n")
    if args.beams > 1:
        print(f"[beam search ({args.beams} beams): {len(new)} new tokens in {t_end - t0:.2f} s]", file=out)
        return 0
    prefill_s = (t_first or t_end) - t0
    decode_n = max(len(new) - 1, 0)
    decode_rate = decode_n / (t_end - t_first) if decode_n and t_end > t_first else float("nan")
    print(f"[prompt {prompt_ids.size} tokens at {prompt_ids.size / prefill_s:.1f} tok/s (incl. the first new "
          f"token); decode {decode_n} tokens at {decode_rate:.1f} tok/s]", file=out)
    return 0


_nonneg_float = arg_number(float, lambda v: v >= 0, "a number >= 0")
_top_p = arg_number(float, lambda v: 0 < v <= 1, "0 < top-p <= 1")


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="DIR", help="model folder (ours or a Hugging Face GPT-2 one)")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=_positive_int, default=100, metavar="N")
    p.add_argument("--temperature", type=_nonneg_float, default=0.8, metavar="T",
                   help="sampling temperature; 0 means greedy (default 0.8)")
    p.add_argument("--top-k", type=_positive_int, default=None, metavar="K")
    p.add_argument("--top-p", type=_top_p, default=None, metavar="P")
    p.add_argument("--beams", type=_positive_int, default=1, metavar="B", help="beam search with B beams (no streaming)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="weight precision (default fp32)")
    p.add_argument("--matmul-precision", choices=("highest", "high"), default=None,
                   help='fp32 prompt pre-fill GEMMs: "highest" (IEEE fp32, the default) or "high" (bf16x3 on AMX '
                        "tiles where present; see tx.set_matmul_precision)")
    p.add_argument("--seed", type=int, default=None)


def _run(args) -> int:
    if args.matmul_precision:
        import transformer_ext as tx
        tx.set_matmul_precision(args.matmul_precision)
    try:
        return run_generate(args)
    except (FileNotFoundError, ValueError, NotImplementedError) as exc:
        print(f"generate: {exc}", file=sys.stderr)
        return 2


GENERATE_COMMAND = ("stream a continuation of a prompt from a model folder", __doc__, _args, _run)
