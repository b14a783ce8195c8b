"""`transformer-ext demo`: train a small GPT on the bundled Shakespeare (transformer_ext/data)
within a wall-clock budget, then print the validation-loss curve and a few samples.

Model: 4 layers, n_embd 128, 4 heads, context 128, byte-level vocabulary (256), no dropout
(0.8 M parameters; three minutes is far too short to overfit a 1 MB corpus). Batches of 16
windows; AdamW lr 3e-3 (β2 0.99) with 30 warm-up steps and a cosine decay to 3e-4 sized to the
budget from the measured speed.
Output (default ./demo_out): checkpoints/, history.json, loss.png (with matplotlib).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from .train_cli import _positive_float, _positive_int, run_training

DEMO_MODEL = dict(vocab_size=256, n_positions=128, n_embd=128, n_layer=4, n_head=4,
                  attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
DEMO_TRAIN = dict(batch_size=16, block_size=128, lr=3e-3, min_lr=3e-4, warmup_steps=30, beta2=0.99, eval_interval=50,
                  eval_batches=4, checkpoint_interval=250, log_interval=10)
PROMPTS = ("\n\nHam.\n", "\n\nKing.\n", "\n\nFirst Witch.\n")


def curve_summary(history: dict) -> str:
    """The validation losses as a small table with a bar per evaluation."""
    val = history.get("val", [])
    if not val:
        return "no validation evaluations"
    lo, hi = min(e["loss"] for e in val), max(e["loss"] for e in val)
    lines = ["validation loss (nats per byte) by step:"]
    pick = val if len(val) <= 12 else [val[round(i * (len(val) - 1) / 11)] for i in range(12)]
    for e in pick:
        bar = "#" * (1 + int(30 * (e["loss"] - lo) / (hi - lo))) if hi > lo else "#"
        lines.append(f"  step {e['step']:>6}  {e['loss']:.4f}  ppl {e['ppl']:7.2f}  {bar}")
    first, last = val[0], val[-1]
    lines.append(f"from {first['loss']:.3f} (step {first['step']}) to {last['loss']:.3f} (step {last['step']}); "
                 f"uniform over 256 bytes would be {np.log(256):.3f}")
    return "\n".join(lines)


def samples(model, n: int, length: int, temperature: float, seed: int) -> list:
    from .generation import generate
    from .training import ByteTokenizer
    tok = ByteTokenizer()
    out = []
    for i in range(n):
        prompt = PROMPTS[i % len(PROMPTS)]
        ids = generate(model, tok.encode(prompt), length, do_sample=True, temperature=temperature, top_k=40,
                       seed=seed + i)
        out.append(tok.decode(ids).strip("\n"))
    return out


def run(minutes: float = 3.0, out: str = "demo_out", seed: int = 0, n_samples: int = 3, sample_tokens: int = 300,
        temperature: float = 0.8, resume: bool = False, progress: str = "auto", log=print) -> dict:
    from .training import ByteTokenizer, bundled_corpus
    t0 = time.perf_counter()
    ids = ByteTokenizer().encode(bundled_corpus())
    log(f"transformer-ext demo: training a small GPT on {len(ids):,} bytes of Shakespeare for {minutes:g} min "
        f"(output in {out}; Ctrl-C stops early with a checkpoint)")
    trainer = run_training(ids, out, resume=resume, val_fraction=0.1, log=log,
                           model_cfg=dict(DEMO_MODEL, seed=seed),
                           train_cfg=dict(DEMO_TRAIN, max_steps=None, max_minutes=minutes, seed=seed, progress=progress))
    log("")
    log(curve_summary(trainer.history))
    log(f"stopped after {trainer.step} steps ({trainer.stop_reason}); checkpoint: {trainer.checkpoint_dir}")
    texts = samples(trainer.model, n_samples, sample_tokens, temperature, seed) if n_samples else []
    for i, text in enumerate(texts, 1):
        log(f"\n--- sample {i} (temperature {temperature}, top-k 40) ---\n{text}")
    log(f"\ndone in {time.perf_counter() - t0:.0f} s. Load the model with: "
        f"transformer_ext.models.GPT.load({out!r})")
    return {"trainer": trainer, "samples": texts, "history": trainer.history}


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=_positive_float, default=3.0,
                   help="training budget in minutes, fractions allowed (default 3)")
    p.add_argument("--out", default="demo_out", metavar="DIR",
                   help="output directory: checkpoints/, history.json, loss.png (default ./demo_out)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--samples", type=int, default=3, metavar="N", help="samples to print (default 3)")
    p.add_argument("--sample-tokens", type=_positive_int, default=300, metavar="N", help="bytes per sample (default 300)")
    p.add_argument("--temperature", type=_positive_float, default=0.8, help="sampling temperature (default 0.8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation, batches and samples (default 0)")
    p.add_argument("--threads", type=_positive_int, help="kernel threads (default: tx.get_num_threads())")
    p.add_argument("--progress", choices=("auto", "tqdm", "plain", "none"), default="auto",
                   help="progress display (default: tqdm when installed, else a line per 10 steps)")


def _run(args) -> int:
    import transformer_ext as tx
    if args.threads:
        tx.set_num_threads(args.threads)
    try:
        run(minutes=args.minutes, out=args.out, seed=args.seed, n_samples=max(0, args.samples),
            sample_tokens=args.sample_tokens, temperature=args.temperature, resume=args.resume, progress=args.progress)
    except KeyboardInterrupt:  # a Ctrl-C outside training (e.g. while sampling): the checkpoint is written
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0


_DESCRIPTION = """\
Train a small GPT (4 layers, n_embd 128, byte-level vocabulary) on the bundled Shakespeare
(about 1 MB; see transformer_ext/data/README.md) for --minutes of wall-clock time, then
print the validation-loss curve and a few sampled continuations. Ctrl-C stops early: the
current step finishes, a checkpoint is written, and the summary and samples still print.
"""

DEMO_COMMAND = ("train a small GPT on bundled Shakespeare for a few minutes and print samples", _DESCRIPTION,
                _add_args, _run)
