#!/usr/bin/env python
"""transformer_ext (C++), NumPy and PyTorch on the same op shapes, in one run.

    python benchmarks/bench_ops.py [--quick] [--ops matmul,attention] [--threads 1,2] [--json FILE]
    python benchmarks/bench_ops.py --gemv [--threads 1,2] [--repeats N]   # decode GEMV, cold weights
    python benchmarks/bench_ops.py --gemm [--threads 1,2] [--repeats N] [--quick]

Reuses transformer_ext.bench (cases, timing, roofline) and adds a torch column when
torch is importable (torch.set_num_threads matches each thread count).

Phases: our cpp + numpy backends first (the same table as `transformer-ext bench`),
then torch, then the combined table. Torch is timed separately because it brings its
own OpenMP runtime: on a 2-core machine the idle, spinning workers of one runtime steal
the cores the other needs. If numbers still look distorted, run with
OMP_WAIT_POLICY=passive (idle OpenMP workers sleep instead of spinning; it also makes
every fork/join a little slower, for both).

--gemv: the decoding GEMV (x (M, K) @ W, M = 1 and 4, GPT-2 small shapes) with the
weights read from DRAM, not cache: each case cycles through copies of W totalling ≥ 300 MB
(the L3 here is 105 MB), round-robin over the variants (dense W, W pre-packed fp32 and
bf16, NumPy, torch) so drifts on a shared machine hit them alike; each sample is >= 20 ms of
calls after a 0.15 s sleep (see --gemm). Reported as GB/s of
weight bytes actually read (bf16 reads half), median of the samples (default 9), and as % of the
read bandwidth `_core.probe_read` measures in the same process (best of 5 over 256 MiB).
NumPy (threadpoolctl) and torch get the same thread count as transformer_ext.

--gemm: C = op(A)·op(B) at transformer shapes (M, K, N) = (512, 768, 768), (512, 768, 3072),
(512, 3072, 768), (128, 768, 2304), (1024, 1024, 1024), (2048, 2048, 2048; dropped by --quick),
plus the two backward products of a (512, 768) x (768, 3072) layer: dX = dY·Wᵀ (512x3072x768,
W stored (768, 3072): B transposed) and dW = Xᵀ·dY (768x512x3072, X stored (512, 768): A
transposed). Ours is `_core.gemm` (transposes read in place), NumPy `np.matmul(a.T, b, out=c)`,
torch `torch.matmul(..., out=c)` on the same buffers, all writing a preallocated C. The variants
run round-robin (ours, numpy, torch, ours, ...), each sample lasting >= 50 ms (5 ms with
--quick); reported: GFLOP/s of the median sample (and of the best), ours/numpy and ours/torch
(their median time / ours: > 1 means ours is faster), and ours as % of the FMA peak measured at
the same thread count. Default 9 samples (--repeats N). All three run in one phase, with a
0.15 s sleep before each sample: the previous library's idle workers (OpenBLAS spins ~0.1 s
after a call) would otherwise hold a core the next one's threads need.

NumPy's BLAS: the header prints which OpenBLAS kernel NumPy runs (threadpoolctl).
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE in the environment can force a slower one; for a
fair baseline run with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python ...`.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import itertools
import json
import math
import os
import sys
import time

import numpy as np

import transformer_ext  # noqa: F401  (loads the core; sets the process-wide thread count)
from transformer_ext import bench


# ------------------------------------------------------------------ torch versions of the cases
# Keyed by the bench.py setup function, called with the same args: (torch, rng, *args).

def torch_setups(torch):
    F = torch.nn.functional

    def t(rng, *shape, scale=1.0, grad=False):
        return torch.from_numpy(bench._f32(rng, *shape, scale=scale)).requires_grad_(grad)

    def matmul(rng, M, K, N):
        x, w, b = t(rng, M, K), t(rng, K, N, scale=K ** -0.5), t(rng, N)
        return lambda: torch.addmm(b, x, w)

    def matmul_backward(rng, M, K, N):
        # The three products autograd would run for y = x @ w + b.
        dy, x, w = t(rng, M, N), t(rng, M, K), t(rng, K, N, scale=K ** -0.5)
        return lambda: (dy @ w.T, x.T @ dy, dy.sum(0))

    def attention(rng, T, H, D, backward):
        q, k, v = (t(rng, 1, H, T, D, grad=backward) for _ in range(3))
        dout = t(rng, 1, H, T, D)
        if not backward:
            return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)

        def fwd_bwd():
            q.grad = k.grad = v.grad = None
            F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(dout)
        return fwd_bwd

    def softmax(rng, *shape):
        x = t(rng, *shape)
        return lambda: torch.softmax(x, -1)

    def layer_norm(rng, rows, d, backward):
        x, gamma, beta, dy = t(rng, rows, d), t(rng, d), t(rng, d), t(rng, rows, d)
        if not backward:
            return lambda: F.layer_norm(x, (d,), gamma, beta)
        _, mean, rstd = torch.ops.aten.native_layer_norm(x, [d], gamma, beta, 1e-5)
        return lambda: torch.ops.aten.native_layer_norm_backward(dy, x, [d], mean, rstd, gamma, beta,
                                                                 [True, True, True])

    def gelu(rng, rows, d):
        x = t(rng, rows, d)
        return lambda: F.gelu(x, approximate="tanh")

    def feed_forward(rng, T, d, d_ff):
        x = t(rng, T, d)
        w1, b1 = t(rng, d, d_ff, scale=d ** -0.5), t(rng, d_ff)
        w2, b2 = t(rng, d_ff, d, scale=d_ff ** -0.5), t(rng, d)
        return lambda: torch.addmm(b2, F.gelu(torch.addmm(b1, x, w1), approximate="tanh"), w2)

    def embedding(rng, n, V, d):
        ids, table = torch.from_numpy(rng.integers(0, V, size=n)), t(rng, V, d)
        return lambda: F.embedding(ids, table)

    def cross_entropy(rng, N, V):
        # Ours returns (loss, dlogits): time torch's forward + backward likewise.
        logits, targets = t(rng, N, V, grad=True), torch.from_numpy(rng.integers(0, V, size=N))

        def fwd_bwd():
            logits.grad = None
            F.cross_entropy(logits, targets).backward()
        return fwd_bwd

    def adamw(rng, n):
        p = torch.nn.Parameter(t(rng, n))
        p.grad = t(rng, n)
        try:  # the fused CPU kernel (torch >= 2.4) is torch's fastest
            opt = torch.optim.AdamW([p], lr=1e-4, fused=True)
            opt.step()
        except (RuntimeError, TypeError, ValueError):
            opt = torch.optim.AdamW([p], lr=1e-4)
        return opt.step

    return {
        bench.setup_matmul: matmul, bench.setup_matmul_backward: matmul_backward,
        bench.setup_attention: attention, bench.setup_softmax: softmax,
        bench.setup_layer_norm: layer_norm, bench.setup_gelu: gelu,
        bench.setup_feed_forward: feed_forward, bench.setup_embedding: embedding,
        bench.setup_cross_entropy: cross_entropy, bench.setup_adamw: adamw,
    }


def _vs_torch(r: dict) -> str:
    c, t = r["cpp"], r.get("torch", {"status": "-"})
    return f"{t['median_s'] / c['median_s']:.2f}x" if c["status"] == t["status"] == "ok" else "-"


COLUMNS = bench.COLUMNS + [
    ("torch ms", 9, lambda r: bench._ms(r["torch"]) if "torch" in r else "-"),
    ("vs torch", 8, _vs_torch),
    ("torch", 7, lambda r: bench._rate(r, "torch") if "torch" in r else "-"),
    ("%peak", 5, lambda r: bench._pct(r, "torch") if "torch" in r else "-"),
]


def run_torch(cases, results, threads, peaks, repeats, min_time):
    """Phase 2: time torch on every case; adds row["torch"] to the phase-1 rows."""
    import torch

    print(f"\nphase 2: torch {torch.__version__} (intra-op threads via torch.set_num_threads)", flush=True)
    setups = torch_setups(torch)
    rows = {(r["name"], r["shape"], r["threads"]): r for r in results}  # one row per case and thread count
    saved = torch.get_num_threads()
    try:
        for case in cases:
            try:
                fn = setups[case.setup](np.random.default_rng(0), *case.args)
            except Exception as exc:
                fn, err = None, f"setup: {type(exc).__name__}: {exc}"
            for n in threads:
                torch.set_num_threads(n)
                # Forward-only inputs do not require grad, so torch builds no autograd graph.
                r = bench.time_guarded(fn, repeats, min_time) if fn else {"status": "error", "error": err}
                row = rows[(case.name, case.shape, n)]
                row["torch"] = bench.add_rates(r, case, peaks[str(n)])
                print(f"  {case.name:18s} thr={n}: {bench._ms(r)} ms", flush=True)
            del fn
            gc.collect()
    finally:
        torch.set_num_threads(saved)
    return torch.__version__


# ------------------------------------------------------------------ round-robin timing (--gemv, --gemm)

def round_robin(fns: dict, repeats: int, min_time: float = 0.0, settle: float = 0.0) -> dict[str, list[float]]:
    """Seconds per call of each zero-argument callable in `fns`, sampled in turn
    (a, b, c, a, b, c, ...) so that drifts on a shared machine hit them alike. After a
    warm-up call, each sample runs enough calls to last >= min_time (one call if 0).
    `settle` seconds of sleep before each sample let the previous library's idle worker
    threads stop spinning (OpenBLAS spins ~0.1 s after a call, libgomp a few ms): a
    spinning worker holds one of the two cores the next library's threads need."""
    inner = {}
    for k, f in fns.items():
        f()  # warm-up
        if min_time:  # calibrate on a second, warm call
            t0 = time.perf_counter()
            f()
            inner[k] = max(1, min(1000, math.ceil(min_time / max(time.perf_counter() - t0, 1e-9))))
    secs = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            n = inner.get(k, 1)
            if settle:
                time.sleep(settle)
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            secs[k].append((time.perf_counter() - t0) / n)
    return secs


# ------------------------------------------------------------------ decode GEMV, cold weights

SETTLE_S = 0.15  # seconds of sleep before each --gemv / --gemm sample (see round_robin)
GEMV_SAMPLE_S = 0.02  # each --gemv sample: calls (cycling the weight copies) for >= 20 ms

GEMV_SHAPES = [(768, 2304, False), (768, 3072, False), (3072, 768, False), (768, 50257, True)]


def _probe_read_gbs(core, reps=5) -> float:
    buf = np.ones(64 << 20, np.float32)  # 256 MiB
    core.probe_read(buf, 1)
    best = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        core.probe_read(buf, 1)
        best = max(best, buf.nbytes / (time.perf_counter() - t0))
    return best / 1e9


def run_gemv(threads, repeats, Ms=(1, 4), total_bytes=300e6) -> list[dict]:
    """Cold-weight GEMV table; returns one dict per (threads, M, shape)."""
    from transformer_ext import _backend, ops
    core = _backend.core
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    torch = None
    if importlib.util.find_spec("torch") is not None:
        import torch
    rng = np.random.default_rng(0)
    rows = []
    hdr = (f"{'thr':>3} {'M':>2} {'K':>5} {'N':>6} {'wT':>2} | {'dense':>5} {'fp32':>5} {'bf16':>5} "
           f"{'numpy':>5} {'torch':>5} GB/s | {'fp32':>4} {'bf16':>4} %read | fp32/np bf16/np fp32/torch")
    print(hdr)
    saved = _backend.get_num_threads()
    try:
        for n in threads:
            _backend.set_num_threads(n)
            limit = threadpool_limits(n, user_api="blas") if threadpool_limits else None
            if torch is not None:
                torch.set_num_threads(n)
            peak = _probe_read_gbs(core)
            print(f"threads={n}: probe_read {peak:.1f} GB/s", flush=True)
            for M in Ms:
                for K, N, tr in GEMV_SHAPES:
                    nbytes = K * N * 4
                    copies = max(2, int(total_bytes // nbytes))
                    ws = [rng.standard_normal((N, K) if tr else (K, N), dtype=np.float32) for _ in range(copies)]
                    x = rng.standard_normal((M, K), dtype=np.float32)
                    variants = {
                        "dense": (lambda w: ops.matmul(x, w, transpose_w=tr), ws, nbytes),
                        "fp32": (lambda w: ops.matmul(x, w), [ops.pack_weight(w, transpose_w=tr) for w in ws], nbytes),
                        "bf16": (lambda w: ops.matmul(x, w),
                                 [ops.pack_weight(w, transpose_w=tr, dtype="bf16") for w in ws], nbytes / 2),
                        "numpy": ((lambda w: x @ w.T) if tr else (lambda w: x @ w), ws, nbytes),
                    }
                    if torch is not None:
                        tws = [torch.from_numpy(w) for w in ws]
                        tx_ = torch.from_numpy(x)
                        variants["torch"] = ((lambda w: torch.nn.functional.linear(tx_, w)) if tr
                                             else (lambda w: tx_ @ w), tws, nbytes)
                    # One counter for all variants: consecutive calls read different copies.
                    calls = itertools.count()
                    cycle = lambda f, arr: lambda: f(arr[next(calls) % copies])
                    secs = round_robin({k: cycle(f, arr) for k, (f, arr, _) in variants.items()}, repeats,
                                       GEMV_SAMPLE_S, settle=SETTLE_S)
                    med = {k: float(np.median(variants[k][2] / np.array(v))) / 1e9 for k, v in secs.items()}
                    row = {"threads": n, "M": M, "K": K, "N": N, "transpose_w": tr, "read_gbs": peak,
                           "gbs": med}
                    rows.append(row)
                    g = lambda k: f"{med[k]:5.1f}" if k in med else "    -"
                    ratio = lambda a, b: f"{med[a] / med[b]:5.2f}x" if b in med else "     -"
                    print(f"{n:>3} {M:>2} {K:>5} {N:>6} {'T' if tr else 'N':>2} | {g('dense')} {g('fp32')} "
                          f"{g('bf16')} {g('numpy')} {g('torch')}      | {100 * med['fp32'] / peak:4.0f} "
                          f"{100 * med['bf16'] / peak:4.0f}       | {ratio('fp32', 'numpy')}  "
                          f"{ratio('bf16', 'numpy')}  {ratio('fp32', 'torch')}", flush=True)
                    del ws, variants
                    gc.collect()
            if limit is not None:
                limit.restore_original_limits()
    finally:
        _backend.set_num_threads(saved)
    print("bf16 GB/s counts the bytes read (half of fp32): equal GB/s = twice as fast.")
    return rows


# ------------------------------------------------------------------ GEMM, round-robin with NumPy and torch

# (M, K, N, trans_a, trans_b): C (M, N) = op(A) op(B). The last two are the backward products of
# a GPT-2 c_fc layer (x (512, 768) @ W (768, 3072)): dX = dY·Wᵀ and dW = Xᵀ·dY.
GEMM_SHAPES = [(512, 768, 768, False, False), (512, 768, 3072, False, False), (512, 3072, 768, False, False),
               (128, 768, 2304, False, False), (1024, 1024, 1024, False, False), (2048, 2048, 2048, False, False),
               (512, 3072, 768, False, True), (768, 512, 3072, True, False)]
GEMM_VARIANTS = ("ours", "numpy", "torch")


def _gemm_ratio(r, other):  # other's median time / ours: > 1 means ours is faster
    return f"{r['median_s'][other] / r['median_s']['ours']:.2f}x" if other in r["median_s"] else "-"


def _gemm_gf(r, k, key="gflops"):
    return f"{r[key][k]:.1f}" if k in r[key] else "-"


def _transposed(r):
    if r["trans_a"]:
        return f"A: X ({r['K']},{r['M']})"
    return f"B: W ({r['N']},{r['K']})" if r["trans_b"] else "-"


GEMM_COLUMNS = [
    ("shape MxKxN", 14, lambda r: f"{r['M']}x{r['K']}x{r['N']}"),
    ("transposed", 15, _transposed),
    ("thr", 3, lambda r: str(r["threads"])),
    *[(f"{k} GF/s", len(k) + 5, lambda r, k=k: _gemm_gf(r, k)) for k in GEMM_VARIANTS],
    ("ours/numpy", 10, lambda r: _gemm_ratio(r, "numpy")),
    ("ours/torch", 10, lambda r: _gemm_ratio(r, "torch")),
    ("ours %FMA", 9, lambda r: f"{100 * r['gflops']['ours'] / r['fma_gflops']:.0f}%" if r["fma_gflops"] else "-"),
    ("best GF/s: ours/numpy/torch", 27, lambda r: " / ".join(_gemm_gf(r, k, "best_gflops") for k in GEMM_VARIANTS)),
]


def run_gemm(threads, repeats, min_time, peaks, shapes=GEMM_SHAPES, use_torch=True) -> list[dict]:
    """Round-robin GEMM table (ours via _core.gemm, np.matmul, torch.matmul, all with a
    preallocated output); returns one dict per (shape, threads)."""
    from transformer_ext import _backend
    core = _backend.core
    torch = None
    if use_torch and importlib.util.find_spec("torch") is not None:
        import torch
    blas = bench._BlasThreads()
    rng = np.random.default_rng(0)
    rows = []
    print(bench.format_header(GEMM_COLUMNS), flush=True)
    saved = _backend.get_num_threads(), torch.get_num_threads() if torch else None
    try:
        for M, K, N, ta, tb in shapes:
            a = bench._f32(rng, *((K, M) if ta else (M, K)))
            b = bench._f32(rng, *((N, K) if tb else (K, N)), scale=K ** -0.5)
            c = {k: np.empty((M, N), np.float32) for k in GEMM_VARIANTS}
            op = lambda x, t: x.T if t else x  # what a NumPy / torch user writes
            fns = {"ours": lambda: core.gemm(a, b, None, c["ours"], ta, tb, False),
                   "numpy": lambda: np.matmul(op(a, ta), op(b, tb), out=c["numpy"])}
            if torch is not None:
                t_a, t_b, t_c = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c["torch"])
                fns["torch"] = lambda: torch.matmul(op(t_a, ta), op(t_b, tb), out=t_c)
            for n in threads:
                _backend.set_num_threads(n)
                if torch is not None:
                    torch.set_num_threads(n)
                with blas.limit(n):
                    secs = round_robin(fns, repeats, min_time, settle=SETTLE_S)
                flops = 2.0 * M * K * N
                row = {"M": M, "K": K, "N": N, "trans_a": ta, "trans_b": tb, "threads": n, "flops": flops,
                       "fma_gflops": peaks[n]["fma_gflops"],
                       "median_s": {k: float(np.median(v)) for k, v in secs.items()},
                       "min_s": {k: min(v) for k, v in secs.items()}, "samples_s": secs}
                row["gflops"] = {k: flops / v / 1e9 for k, v in row["median_s"].items()}
                row["best_gflops"] = {k: flops / v / 1e9 for k, v in row["min_s"].items()}
                # A benchmark of a wrong result is worthless: compare with NumPy's (float32, K-term sums).
                err = float(np.max(np.abs(c["ours"] - c["numpy"])))
                row["max_abs_diff_vs_numpy"] = err
                rows.append(row)
                print(bench.format_row(row, GEMM_COLUMNS), flush=True)
                if not err <= 1e-4 * math.sqrt(K):
                    print(f"warning: ours differs from NumPy by up to {err:.3g}", flush=True)
            del a, b, c, fns
            gc.collect()
    finally:
        _backend.set_num_threads(saved[0])
        if torch is not None:
            torch.set_num_threads(saved[1])
    return rows


def _blas_note(blas) -> str:
    kernels = ", ".join(f"{b.get('internal_api')} {b.get('version')} kernel={b.get('architecture')}"
                        for b in blas) if isinstance(blas, list) else blas
    return (f"note: NumPy's BLAS: {kernels or 'none found'}. OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE in the environment "
            "can select a slower kernel; compare with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ...`.")


def main_gemm(args, threads) -> int:
    from transformer_ext import _backend
    if _backend.core is None:
        print("--gemm needs the compiled core (transformer_ext._core)", file=sys.stderr)
        return 1
    repeats = args.repeats or (3 if args.quick else 9)
    min_time = bench.timing_defaults(args.quick)[1]
    info = bench.machine_info()
    info["command"] = " ".join([sys.executable] + sys.argv)
    peaks = bench.measure_peaks(threads, args.quick)
    print(bench.format_machine(info, peaks))
    print(_blas_note(info["blas"]))
    print(f"note: --gemm sleeps {SETTLE_S} s before each sample so the previous library's idle, spinning "
          "workers release the cores (OpenBLAS spins ~0.1 s after a call); "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}.")
    print(f"timing  : round-robin ours, numpy, torch; median (and best) of {repeats} samples of >= "
          f"{min_time * 1e3:.0f} ms each; threads {threads} (NumPy's BLAS and torch limited to the same)")
    print("columns : GF/s = 2·M·K·N / median time; ours/x = x's median time / ours (> 1: ours faster)\n", flush=True)
    shapes = [s for s in GEMM_SHAPES if not (args.quick and s[0] >= 2048)]
    rows = run_gemm(threads, repeats, min_time, peaks, shapes, use_torch=not args.no_torch)
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump({"machine": info, "peaks": {str(k): v for k, v in peaks.items()}, "repeats": repeats,
                       "threads": threads, "gemm": rows}, fh, indent=1)
        print(f"wrote {args.json_path}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", metavar="LIST", help="comma-separated ops (default: all), e.g. matmul,attention")
    ap.add_argument("--threads", metavar="LIST", help="comma-separated thread counts, e.g. 1,2 (default: process-wide)")
    ap.add_argument("--repeats", type=int, metavar="N", help="timed samples per case (median reported)")
    ap.add_argument("--quick", action="store_true", help="smaller shapes, fewer repeats")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch phase")
    ap.add_argument("--json", metavar="FILE", dest="json_path", help="write everything to FILE as JSON")
    ap.add_argument("--gemv", action="store_true",
                    help="only the decode GEMV table with weights from DRAM (see the module docstring)")
    ap.add_argument("--gemm", action="store_true",
                    help="only the GEMM table, round-robin vs NumPy and torch (see the module docstring)")
    args = ap.parse_args(argv)

    try:
        cases = bench.select_cases(bench.build_cases(args.quick), args.ops)
        threads = bench.parse_threads(args.threads)
    except ValueError as exc:
        ap.error(str(exc))
    if args.repeats is not None and args.repeats < 1:
        ap.error("--repeats must be >= 1")
    repeats, min_time = bench.timing_defaults(args.quick, args.repeats)
    have_torch = not args.no_torch and importlib.util.find_spec("torch") is not None
    if args.gemm:
        return main_gemm(args, threads)
    if args.gemv:
        rows = run_gemv(threads, args.repeats or (5 if args.quick else 9))
        if args.json_path:
            with open(args.json_path, "w") as fh:
                json.dump({"gemv": rows}, fh, indent=1)
            print(f"wrote {args.json_path}")
        return 0

    print("phase 1: transformer_ext cpp and numpy backends", flush=True)
    report = bench.run(ops=args.ops, threads=threads, repeats=args.repeats, quick=args.quick,
                       command=" ".join([sys.executable] + sys.argv))
    notes = [
        _blas_note(report["machine"]["blas"]),
        "note: torch and transformer_ext each use their own OpenMP runtime, so they run in separate phases; "
        "set OMP_WAIT_POLICY=passive if the numbers still look distorted.",
    ]

    if have_torch:
        time.sleep(0.5)  # let our OpenMP workers stop spinning before torch starts
        report["torch"] = run_torch(cases, report["results"], threads, report["peaks"], repeats, min_time)
    else:
        notes.append("note: torch not " + ("requested" if args.no_torch else "importable") + "; no torch column.")

    print("\ncombined (speedup = numpy/cpp time, vs torch = torch/cpp time; >1 means ours is faster)")
    print(bench.format_header(COLUMNS))
    for row in report["results"]:
        print(bench.format_row(row, COLUMNS))
    errs = bench.format_errors(report["results"], bench.BACKENDS + (("torch",) if have_torch else ()))
    if errs:
        print("\n" + errs)
    print("\n" + "\n".join(notes))
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump(report, fh, indent=1)
        print(f"wrote {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
