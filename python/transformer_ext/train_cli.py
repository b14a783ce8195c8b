"""`transformer-ext train`: train a GPT on text files with the byte-level vocabulary, over
`transformer_ext.training.Trainer` (the demo uses the same code).

    transformer-ext train --data a.txt b.txt --out runs/x --minutes 10
    transformer-ext train --data a.txt --out runs/x --resume --steps 2000   # continue exactly
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def arg_number(convert, ok, what):
    """An argparse type: `convert(text)` that must satisfy `ok`, else "expected <what>"."""
    def parse(text):
        try:
            v = convert(text)
        except ValueError:
            v = None
        if v is None or not ok(v):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v
    return parse


_positive_int = arg_number(int, lambda v: v >= 1, "a positive integer")
_nonneg_int = arg_number(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = arg_number(float, lambda v: v > 0, "a positive number")


def read_corpus(paths, lowercase: bool = False) -> np.ndarray:
    """Token ids of text files (prepared: NFC, whitespace clean-up) or of .npy token arrays."""
    from .training import ByteTokenizer, prepare_text
    tok, parts = ByteTokenizer(), []
    for p in paths:
        if not os.path.isfile(p):
            raise FileNotFoundError(f"train: no such data file: {p}")
        if p.endswith(".npy"):
            parts.append(np.asarray(np.load(p, mmap_mode="r"), dtype=np.int64))
        else:
            with open(p, encoding="utf-8", errors="replace") as f:
                parts.append(tok.encode(prepare_text(f.read(), lowercase=lowercase) + "\n\n"))
    ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    if ids.size and (ids.min() < 0 or ids.max() > 255):
        raise ValueError("train: token ids in .npy files must be bytes (0..255) for the byte-level vocabulary")
    return ids


def model_args(p: argparse.ArgumentParser, d: dict) -> None:
    g = p.add_argument_group("model (a new run; --resume takes the checkpoint's)")
    g.add_argument("--n-layer", type=_positive_int, default=d["n_layer"], help=f"blocks (default {d['n_layer']})")
    g.add_argument("--n-embd", type=_positive_int, default=d["n_embd"], help=f"width (default {d['n_embd']})")
    g.add_argument("--n-head", type=_positive_int, default=d["n_head"], help=f"heads (default {d['n_head']})")
    g.add_argument("--dropout", type=float, default=d["dropout"],
                   help=f"residual and embedding dropout (default {d['dropout']}); attention dropout stays 0")


def loop_args(p: argparse.ArgumentParser, d: dict) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--block-size", type=_positive_int, default=d["block_size"],
                   help=f"context length T (default {d['block_size']})")
    g.add_argument("--batch-size", type=_positive_int, default=d["batch_size"], help=f"B (default {d['batch_size']})")
    g.add_argument("--lr", type=_positive_float, default=d["lr"], help=f"peak learning rate (default {d['lr']})")
    g.add_argument("--warmup", type=_nonneg_int, default=d["warmup"], help=f"warm-up steps (default {d['warmup']})")
    g.add_argument("--eval-interval", type=_nonneg_int, default=d["eval_interval"],
                   help=f"steps between validation evaluations (default {d['eval_interval']})")
    g.add_argument("--checkpoint-interval", type=_nonneg_int, default=d["checkpoint_interval"],
                   help=f"steps between checkpoints (default {d['checkpoint_interval']}; one is always written at the end)")
    g.add_argument("--seed", type=int, default=0, help="seed of the initialisation, dropout and batches (default 0)")
    g.add_argument("--threads", type=_positive_int, help="kernel threads (default: tx.get_num_threads())")
    g.add_argument("--matmul-precision", choices=("highest", "high"), default=None,
                   help='fp32 GEMMs: "highest" (IEEE fp32, the default) or "high" (bf16x3 on AMX tiles where '
                        "the CPU has them: ~16 significant bits per operand, faster; see tx.set_matmul_precision)")
    g.add_argument("--progress", choices=("auto", "tqdm", "plain", "none"), default="auto",
                   help="progress display: tqdm when installed (auto), one line per interval (plain), none")


def run_training(ids, out, *, resume: bool, model_cfg: dict, train_cfg: dict, val_fraction: float = 0.1, log=print,
                 resume_overrides: dict | None = None):
    """Split ids, build (or resume) model + Trainer, fit. Returns the Trainer. A resumed run
    keeps the checkpoint's model and training settings, except `resume_overrides` (e.g. a new
    max_steps / max_minutes) and the progress display."""
    from .io.checkpoint import latest_checkpoint
    from .models import GPT, GPTConfig
    from .training import Trainer, TrainConfig, train_val_split

    train_ids, val_ids = train_val_split(ids, val_fraction)
    newest = latest_checkpoint(out) if resume else None
    if resume and newest is None:
        log(f"--resume: no checkpoint in {out}; starting a new run")
    if newest is not None:
        model = GPT.load(newest)
        with open(os.path.join(newest, "trainer_state.json"), encoding="utf-8") as f:
            saved = json.load(f)["train_config"]
        saved.update(resume_overrides if resume_overrides is not None else
                     {k: v for k, v in train_cfg.items() if k in ("max_steps", "max_minutes")})
        saved["progress"] = train_cfg.get("progress", saved["progress"])
        config = TrainConfig(**saved)
    else:
        model = GPT(GPTConfig(**model_cfg))
        config = TrainConfig(**train_cfg)
    if len(train_ids) < config.block_size + 1:
        raise ValueError(f"train: {len(train_ids)} training tokens, fewer than block_size + 1 = {config.block_size + 1}")
    trainer = Trainer(model, train_ids, val_ids if len(val_ids) > config.block_size else None, config, out)
    if newest is not None:
        trainer.resume(newest)
        log(f"resumed from {newest} at step {trainer.step}")
    log(f"model: GPT {model.config.n_layer} layers, n_embd {model.config.n_embd}, {model.config.n_head} heads, "
        f"{model.num_parameters():,} parameters; {len(train_ids):,} training / {len(val_ids):,} validation tokens")
    trainer.fit()
    return trainer


_TRAIN_DEFAULTS = dict(n_layer=4, n_embd=128, n_head=4, dropout=0.0, block_size=128, batch_size=16, lr=2e-3,
                       warmup=50, eval_interval=100, checkpoint_interval=500)


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", required=True, metavar="FILE",
                   help="UTF-8 text files (concatenated; NFC, whitespace clean-up) or .npy byte-token arrays")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (checkpoints, history.json, loss.png)")
    p.add_argument("--resume", action="store_true",
                   help="continue the newest checkpoint in --out exactly (its model and training settings; "
                        "--steps / --minutes may extend it)")
    p.add_argument("--steps", type=_positive_int, help="total optimiser steps (default 1000 unless --minutes)")
    p.add_argument("--minutes", type=_positive_float, help="wall-clock budget in minutes (fractions allowed)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="tail of the data held out (default 0.1)")
    p.add_argument("--lowercase", action="store_true", help="lower-case the text")
    model_args(p, _TRAIN_DEFAULTS)
    loop_args(p, _TRAIN_DEFAULTS)


def _run_train(args) -> int:
    import transformer_ext as tx
    if args.threads:
        tx.set_num_threads(args.threads)
    if args.matmul_precision:
        tx.set_matmul_precision(args.matmul_precision)
    try:
        ids = read_corpus(args.data, args.lowercase)
        steps = args.steps if args.steps or args.minutes else 1000
        overrides = {}  # --resume: only what this command line states
        if args.steps or args.minutes:
            overrides = {"max_steps": args.steps, "max_minutes": args.minutes}
        run_training(ids, args.out, resume=args.resume, val_fraction=args.val_fraction, resume_overrides=overrides,
                     model_cfg=dict(vocab_size=256, n_positions=args.block_size, n_embd=args.n_embd,
                                    n_layer=args.n_layer, n_head=args.n_head, attn_pdrop=0.0,
                                    resid_pdrop=args.dropout, embd_pdrop=args.dropout, seed=args.seed),
                     train_cfg=dict(batch_size=args.batch_size, block_size=args.block_size, max_steps=steps,
                                    max_minutes=args.minutes, lr=args.lr, warmup_steps=args.warmup,
                                    eval_interval=args.eval_interval, checkpoint_interval=args.checkpoint_interval,
                                    seed=args.seed, progress=args.progress))
    except (FileNotFoundError, ValueError) as exc:
        print(f"transformer-ext train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    print(f"checkpoint, history.json{' and loss.png' if _has_matplotlib() else ''} in {args.out}")
    return 0


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


_TRAIN_DESCRIPTION = """\
Train a GPT (byte-level vocabulary, 256 tokens) on text files with AdamW, warm-up + cosine
learning rate, global-norm clipping; evaluate on the held-out tail of the data every
--eval-interval steps; checkpoint every --checkpoint-interval steps and at the end (or on
Ctrl-C) into DIR/checkpoints/step-N; --resume continues exactly where the newest one stopped.
Load the result with transformer_ext.models.GPT.load(DIR).
"""

TRAIN_COMMAND = ("train a GPT on text files (checkpoints, exact resume)", _TRAIN_DESCRIPTION, _add_train_args, _run_train)
