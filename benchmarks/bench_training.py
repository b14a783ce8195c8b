"""Training-step throughput: a GPT-2-small-shaped model (12 layers, d=768, 12 heads,
vocab 50257) at B=4, T=128, fp32 — forward, cross-entropy, backward, AdamW — for this
project's C++ backend, its NumPy backend and PyTorch autograd (if installed), each in its
own process (so two OpenMP runtimes never share the cores, and peak memory is per phase).

    python benchmarks/bench_training.py [--threads 1,2] [--dropout 0,0.1] [--steps 5] [--rounds 1] [--no-numpy] [--no-torch] [--explicit]

Each configuration runs once without dropout and once with GPT-2's default dropout
(resid_pdrop = embd_pdrop = attn_pdrop = 0.1; `--dropout` picks the values). Attention
dropout runs inside the fused attention kernel (a counter-based mask, never stored);
`--explicit` adds a "cpp-explicit" phase with attention dropout on the explicit path
(S = QKᵀ/√d_k, softmax, NumPy mask: O(T²) memory) for comparison.
Prints tokens/s (median step after one warm-up step), peak RSS, and ratios against
PyTorch with the same dropout in the same run. Phases run one after another, so on a
shared machine a ratio mixes two moments: `--rounds R` runs every phase R times,
alternating which goes first, and reports medians over the rounds plus each round's
ratio. A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

SHAPE = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)


def _phase_tx(backend: str, threads: int, steps: int, B: int, T: int, pdrop: float) -> dict:
    import numpy as np

    import transformer_ext as tx
    from transformer_ext.models import GPT, GPTConfig
    from transformer_ext.training import AdamW

    if backend == "cpp-explicit":  # attention dropout on the explicit (T, T) path, as before the fused kernel had it
        from transformer_ext.nn.attention import MultiHeadAttention
        MultiHeadAttention.fused_dropout = False
        backend = "cpp"
    tx.set_num_threads(threads)
    tx.set_backend(backend)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)  # NumPy's BLAS, for the numpy backend
    except ImportError:
        pass
    model = GPT(GPTConfig(**SHAPE, resid_pdrop=pdrop, embd_pdrop=pdrop, attn_pdrop=pdrop, seed=0))
    model.train()
    opt = AdamW(model, lr=1e-4)
    rng = np.random.default_rng(0)
    times = []
    for i in range(steps + 1):
        ids = rng.integers(0, SHAPE["vocab_size"], (B, T + 1))
        t0 = time.perf_counter()
        model.zero_grad()
        logits = model(ids[:, :-1])
        loss, dlogits = tx.ops.cross_entropy(logits, ids[:, 1:], out=logits)  # in place, as the Trainer does
        model.backward(dlogits)
        opt.step()
        if i:  # the first step warms up allocations and caches
            times.append(time.perf_counter() - t0)
    return {"step_s": statistics.median(times), "isa": tx.get_isa(), "loss": float(loss)}


def _phase_torch(threads: int, steps: int, B: int, T: int, pdrop: float) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
        cfg = GPT2Config(**SHAPE, resid_pdrop=pdrop, embd_pdrop=pdrop, attn_pdrop=pdrop)
        model = GPT2LMHeadModel(cfg)
        forward = lambda x: model(x).logits  # noqa: E731
        impl = "transformers GPT2LMHeadModel (eager)"
    except ImportError:
        return {"error": "transformers not installed"}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    times = []
    for i in range(steps + 1):
        ids = torch.randint(0, SHAPE["vocab_size"], (B, T + 1))
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = forward(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return {"step_s": statistics.median(times), "impl": impl, "torch": torch.__version__, "loss": float(loss)}


def _child(args) -> None:
    if args.phase == "torch":
        out = _phase_torch(args.one_thread_count, args.steps, args.batch, args.seq, args.pdrop)
    else:
        out = _phase_tx(args.phase, args.one_thread_count, args.steps, args.batch, args.seq, args.pdrop)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--dropout", default="0,0.1",
                    help="comma-separated dropout probabilities (resid = embd = attn pdrop; default 0,0.1)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per phase (median reported)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every phase this many times, alternating which runs first; report the median "
                         "over rounds and each round's ratio (this VM drifts between phases)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--no-numpy", action="store_true", help="skip the (slow) NumPy backend")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--explicit", action="store_true",
                    help="with dropout > 0 also time attention dropout on the explicit (T, T) path "
                         "(S, softmax, NumPy mask) instead of the fused kernel")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--one-thread-count", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--pdrop", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        return _child(args)

    phases = ["cpp"] + ([] if args.no_numpy else ["numpy"]) + ([] if args.no_torch else ["torch"])
    print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"model: GPT-2 small shape {SHAPE}, B={args.batch}, T={args.seq}, fp32, median of {args.steps} steps, "
          f"median over {args.rounds} round(s)")
    configs = [(int(t), float(p)) for t in args.threads.split(",") for p in args.dropout.split(",")]
    runs = {}  # (threads, pdrop, phase) -> one result per round
    for rnd in range(args.rounds):
        for threads, pdrop in configs:
            order = phases + (["cpp-explicit"] if args.explicit and pdrop > 0 else [])
            for phase in (order if rnd % 2 == 0 else order[::-1]):  # alternate who runs first
                cmd = [sys.executable, __file__, "--phase", phase, "--one-thread-count", str(threads),
                       "--steps", str(args.steps), "--batch", str(args.batch), "--seq", str(args.seq),
                       "--pdrop", repr(pdrop)]
                r = subprocess.run(cmd, capture_output=True, text=True)
                try:
                    res = json.loads(r.stdout.strip().splitlines()[-1])
                except (IndexError, json.JSONDecodeError):
                    res = {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
                runs.setdefault((threads, pdrop, phase), []).append(res)
    rows = []
    for (threads, pdrop, phase), res_list in runs.items():
        ok = [r for r in res_list if "error" not in r]
        if not ok:
            rows.append((threads, pdrop, phase, "error: " + res_list[0]["error"], "", "", "", ""))
            continue
        step_s = statistics.median(r["step_s"] for r in ok)
        torch_runs = [r for r in runs.get((threads, pdrop, "torch"), []) if "error" not in r]
        ratio, per_round = "-", "-"
        if torch_runs:
            ratio = f"{statistics.median(r['step_s'] for r in torch_runs) / step_s:.2f}x"
            per_round = " ".join(f"{t['step_s'] / o['step_s']:.2f}" for t, o in zip(torch_runs, ok))
        rows.append((threads, pdrop, phase + (f" ({ok[0]['isa']})" if "isa" in ok[0] else ""),
                     f"{step_s * 1e3:.0f}", f"{args.batch * args.seq / step_s:.1f}", ratio, per_round,
                     f"{max(r['peak_rss_mb'] for r in ok):.0f}"))
    header = ("threads", "dropout", "implementation", "ms/step", "tokens/s", "vs torch", "per round", "peak RSS MB")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
