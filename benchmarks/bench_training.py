"""Training-step throughput: a GPT-2-small-shaped model (12 layers, d=768, 12 heads,
vocab 50257) at B=4, T=128, fp32 — forward, cross-entropy, backward, AdamW — for this
project's C++ backend, its NumPy backend and PyTorch autograd (if installed), each in its
own process (so two OpenMP runtimes never share the cores, and peak memory is per phase).

    python benchmarks/bench_training.py [--threads 1,2] [--dropout 0,0.1] [--steps 5] [--rounds 1 | --interleave]
                                        [--no-numpy] [--no-torch] [--explicit] [--high] [--torch-bf16]

Each configuration runs once without dropout and once with GPT-2's default dropout
(resid_pdrop = embd_pdrop = attn_pdrop = 0.1; `--dropout` picks the values). Attention
dropout runs inside the fused attention kernel (a counter-based mask, never stored);
`--explicit` adds a "cpp-explicit" phase with attention dropout on the explicit path
(S = QKᵀ/√d_k, softmax, NumPy mask: O(T²) memory) for comparison.
Prints tokens/s (median step after one warm-up step), peak RSS, and ratios against
PyTorch with the same dropout in the same run. Phases run one after another, so on a
shared machine a ratio mixes two moments: `--rounds R` runs every phase R times,
alternating which goes first, and reports medians over the rounds plus each round's
ratio. `--interleave` instead keeps the cpp and torch processes alive side by side and
lets them take turns step by step (the idle one blocked on a pipe, 0.2 s pause between
steps so its OpenMP workers stop spinning): both see the same minutes of this drifting VM,
and the ratio is the median of the per-step-pair ratios (peak RSS is still per process).
`--high` adds a "cpp-high" phase: ours at matmul precision "high" (fp32 GEMMs as bf16x3 on
AMX tiles where the CPU has them; tx.set_matmul_precision). `--torch-bf16` adds a
"torch-bf16" phase: PyTorch with torch.backends.mkldnn.matmul.fp32_precision = "bf16"
(oneDNN rounds fp32 operands to one bf16 term each: a lower precision than bf16x3). The
"vs torch" column always compares with the default, IEEE-fp32 "torch" phase.
A benchmark, not a test.
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


def _setup_tx(backend: str, threads: int, B: int, T: int, pdrop: float):
    """(step, info): step() runs one timed training step and returns (seconds, loss)."""
    import numpy as np

    import transformer_ext as tx
    from transformer_ext.models import GPT, GPTConfig
    from transformer_ext.training import AdamW

    precision = "highest"
    if backend == "cpp-high":  # fp32 GEMMs as bf16x3 on AMX tiles (where present)
        precision, backend = "high", "cpp"
    if backend == "cpp-explicit":  # attention dropout on the explicit (T, T) path, as before the fused kernel had it
        from transformer_ext.nn.attention import MultiHeadAttention
        MultiHeadAttention.fused_dropout = False
        backend = "cpp"
    tx.set_num_threads(threads)
    tx.set_backend(backend)
    tx.set_matmul_precision(precision)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)  # NumPy's BLAS, for the numpy backend
    except ImportError:
        pass
    model = GPT(GPTConfig(**SHAPE, resid_pdrop=pdrop, embd_pdrop=pdrop, attn_pdrop=pdrop, seed=0))
    model.train()
    opt = AdamW(model, lr=1e-4)
    rng = np.random.default_rng(0)

    def step():
        ids = rng.integers(0, SHAPE["vocab_size"], (B, T + 1))
        t0 = time.perf_counter()
        model.zero_grad()
        logits = model(ids[:, :-1])
        loss, dlogits = tx.ops.cross_entropy(logits, ids[:, 1:], out=logits)  # in place, as the Trainer does
        model.backward(dlogits)
        opt.step()
        return time.perf_counter() - t0, float(loss)
    return step, {"isa": tx.get_isa(), "amx": precision == "high" and tx.cpu_info()["amx"]}  # GEMMs on tiles


def _setup_torch(threads: int, B: int, T: int, pdrop: float, fp32_precision: str = "ieee"):
    import torch

    torch.set_num_threads(threads)
    if fp32_precision != "ieee":
        torch.backends.mkldnn.matmul.fp32_precision = fp32_precision
    torch.manual_seed(0)
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
        cfg = GPT2Config(**SHAPE, resid_pdrop=pdrop, embd_pdrop=pdrop, attn_pdrop=pdrop)
        model = GPT2LMHeadModel(cfg)
        forward = lambda x: model(x).logits  # noqa: E731
        impl = "transformers GPT2LMHeadModel (eager)"
    except ImportError:
        raise RuntimeError("transformers not installed") from None
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step():
        ids = torch.randint(0, SHAPE["vocab_size"], (B, T + 1))
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = forward(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        return time.perf_counter() - t0, float(loss)
    return step, {"impl": impl, "torch": torch.__version__}


def _child(args) -> None:
    """One phase in this process: `steps` timed steps after a warm-up (the first step warms
    up allocations and caches), or with --serve one step per line read from stdin."""
    try:
        if args.phase in ("torch", "torch-bf16"):
            step, info = _setup_torch(args.one_thread_count, args.batch, args.seq, args.pdrop,
                                      "bf16" if args.phase == "torch-bf16" else "ieee")
        else:
            step, info = _setup_tx(args.phase, args.one_thread_count, args.batch, args.seq, args.pdrop)
    except RuntimeError as e:
        print(json.dumps({"error": str(e)}))
        return
    step()
    if args.serve:
        print("ready", flush=True)
        for _ in sys.stdin:
            print(json.dumps(step()), flush=True)
        times = None
    else:
        times = [step() for _ in range(args.steps)]
    out = dict(info, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if times:
        out.update(step_s=statistics.median(t for t, _ in times), loss=times[-1][1])
    print(json.dumps(out))


def _interleaved(cmds: list, names: list, steps: int) -> dict:
    """Runs the phases as live --serve processes taking turns, one step each, alternating
    who goes first; returns {name: result} like a phase's, plus "pair_ratios" (torch's step
    time / this phase's, per turn) when "torch" is among them."""
    import tempfile

    procs, results = {}, {}
    try:
        for name, cmd in zip(names, cmds):  # started one at a time: set-up and warm-up never overlap
            err = tempfile.TemporaryFile(mode="w+")
            p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
            first = p.stdout.readline().strip()
            if first != "ready":
                p.wait()
                err.seek(0)
                msg = json.loads(first).get("error") if first.startswith("{") else None
                results[name] = {"error": msg or (err.read().strip().splitlines() or ["failed"])[-1]}
                continue
            procs[name] = p
        times = {n: [] for n in procs}
        for i in range(steps):
            for name in (list(procs) if i % 2 == 0 else list(procs)[::-1]):
                time.sleep(0.2)  # let the other runtime's OpenMP workers stop spinning
                procs[name].stdin.write("\n")
                procs[name].stdin.flush()
                times[name].append(json.loads(procs[name].stdout.readline())[0])
        for name, p in procs.items():
            p.stdin.close()
            res = json.loads(p.stdout.read().strip().splitlines()[-1])
            p.wait()
            res["step_s"] = statistics.median(times[name])
            if "torch" in times and name != "torch":
                res["pair_ratios"] = [t / o for t, o in zip(times["torch"], times[name])]
            results[name] = res
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--dropout", default="0,0.1",
                    help="comma-separated dropout probabilities (resid = embd = attn pdrop; default 0,0.1)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per phase (median reported)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every phase this many times, alternating which runs first; report the median "
                         "over rounds and each round's ratio (this VM drifts between phases)")
    ap.add_argument("--interleave", action="store_true",
                    help="cpp and torch as two live processes taking turns step by step (NumPy still runs "
                         "on its own); ratio = median of the per-step-pair ratios")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--no-numpy", action="store_true", help="skip the (slow) NumPy backend")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--explicit", action="store_true",
                    help="with dropout > 0 also time attention dropout on the explicit (T, T) path "
                         "(S, softmax, NumPy mask) instead of the fused kernel")
    ap.add_argument("--high", action="store_true",
                    help='also time ours at matmul precision "high" (bf16x3 on AMX tiles where present)')
    ap.add_argument("--torch-bf16", action="store_true",
                    help='also time PyTorch with torch.backends.mkldnn.matmul.fp32_precision = "bf16"')
    ap.add_argument("--avx2", action="store_true",
                    help="every library capped at AVX2 + FMA, as on a CPU without AVX-512 (re-runs the command "
                         "with transformer_ext.bench.AVX2_CAP_ENV set)")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--one-thread-count", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--pdrop", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        return _child(args)
    from transformer_ext import bench
    if args.avx2:
        bench.reexec_with_avx2_cap()  # the children inherit the environment

    phases = (["cpp"] + (["cpp-high"] if args.high else []) + ([] if args.no_numpy else ["numpy"])
              + ([] if args.no_torch else ["torch"]) + (["torch-bf16"] if args.torch_bf16 and not args.no_torch else []))
    print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"model: GPT-2 small shape {SHAPE}, B={args.batch}, T={args.seq}, fp32, median of {args.steps} steps, "
          + (f"steps interleaved with torch's" if args.interleave else f"median over {args.rounds} round(s)"))
    if bench.isa_cap_line():
        print(bench.isa_cap_line())
    configs = [(int(t), float(p)) for t in args.threads.split(",") for p in args.dropout.split(",")]
    runs = {}  # (threads, pdrop, phase) -> one result per round

    def child_cmd(phase, threads, pdrop, serve=False):
        return [sys.executable, __file__, "--phase", phase, "--one-thread-count", str(threads),
                "--steps", str(args.steps), "--batch", str(args.batch), "--seq", str(args.seq),
                "--pdrop", repr(pdrop)] + (["--serve"] if serve else [])

    for rnd in range(1 if args.interleave else args.rounds):
        for threads, pdrop in configs:
            order = phases + (["cpp-explicit"] if args.explicit and pdrop > 0 else [])
            if args.interleave:
                live = [p for p in order if p != "numpy"]
                for phase, res in _interleaved([child_cmd(p, threads, pdrop, serve=True) for p in live],
                                               live, args.steps).items():
                    runs.setdefault((threads, pdrop, phase), []).append(res)
                order = [p for p in order if p == "numpy"]
            for phase in (order if rnd % 2 == 0 else order[::-1]):  # alternate who runs first
                r = subprocess.run(child_cmd(phase, threads, pdrop), capture_output=True, text=True)
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
        if torch_runs and "pair_ratios" in ok[0]:  # --interleave
            q = statistics.quantiles(ok[0]["pair_ratios"], n=4) if len(ok[0]["pair_ratios"]) > 1 else [0, 0, 0]
            ratio = f"{statistics.median(ok[0]['pair_ratios']):.2f}x"
            per_round = f"pairs: {q[0]:.2f}-{q[2]:.2f} (quartiles of {len(ok[0]['pair_ratios'])})"
        elif torch_runs:
            ratio = f"{statistics.median(r['step_s'] for r in torch_runs) / step_s:.2f}x"
            per_round = " ".join(f"{t['step_s'] / o['step_s']:.2f}" for t, o in zip(torch_runs, ok))
        rows.append((threads, pdrop, phase + (f" ({ok[0]['isa']}{', amx' if ok[0].get('amx') else ''})"
                                              if "isa" in ok[0] else ""),
                     f"{step_s * 1e3:.0f}", f"{args.batch * args.seq / step_s:.1f}", ratio, per_round,
                     f"{max(r['peak_rss_mb'] for r in ok):.0f}"))
    header = ("threads", "dropout", "implementation", "ms/step", "tokens/s", "vs torch",
              "per step pair" if args.interleave else "per round", "peak RSS MB")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
