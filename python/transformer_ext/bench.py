"""Benchmark harness: every op on both backends at GPT-2-small shapes, against a roofline.

    python -m transformer_ext bench [--quick] [--ops matmul,attention] [--threads 1,2] [--json FILE]

For each case the same callable is timed under ``tx.use_backend("cpp")`` and
``tx.use_backend("numpy")`` (ops read the backend at call time). Timing: one warm-up call,
then ``repeats`` samples of ``inner`` calls each (``inner`` chosen so a sample lasts at
least ``min_time``), reporting the median per-call time — robust to the odd slow
sample on a shared machine.

Roofline: compute-bound cases (matmul, attention, feed-forward) are compared with the
FMA peak measured by ``_core.probe_fma`` at the same thread count and ISA; memory-bound
ones with the read bandwidth measured by ``_core.probe_read`` over a 256 MiB buffer
(past the last-level cache). The byte counts are the minimum traffic (each input read
once, each output written once), so "% peak" is an upper bound on efficiency and can
exceed 100% when the working set fits in cache. Memory-bound rows also get "%copy": the
same rate against ``_core.probe_copy`` (128 MiB copied with streaming stores, read +
write bytes): what a kernel that reads one stream and writes another can reach, which
is below what reading alone reaches (on the 2-vCPU VM this was written on: 91-95%).

A case whose op is not available on a backend (NotImplementedError, or a missing
``_core`` attribute) is reported as "n/a"; any other exception as "error" (the message
is printed under the table and kept in the JSON).
"""
from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

from . import _backend
from . import ops as tx_ops

BACKENDS = ("cpp", "numpy")
GPT2_PARAMS = 124_439_808  # GPT-2 small (124M), the AdamW case


# --------------------------------------------------------------------------- cases

@dataclasses.dataclass
class Case:
    op: str  # filter key for --ops (the public op's name)
    name: str  # row label
    shape: str
    flops: float  # useful flops per call (0: not compute-bound)
    bytes: float  # minimum bytes moved per call (0: not memory-bound)
    # setup(rng, *args) builds the inputs once and returns a zero-argument callable running
    # the op; it runs on whichever backend is active when it is called. `args` are the
    # sizes, so other harnesses (benchmarks/bench_ops.py: torch) can build the same case.
    setup: Callable[..., Callable[[], Any]]
    args: tuple = ()

    @property
    def bound(self) -> str:
        return "compute" if self.flops else "memory"


def _f32(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(scale))


def setup_matmul(rng, M, K, N):
    x, w, b = _f32(rng, M, K), _f32(rng, K, N, scale=K ** -0.5), _f32(rng, N)
    return lambda: tx_ops.matmul(x, w, b)


def setup_matmul_backward(rng, M, K, N):
    dy, x, w, b = _f32(rng, M, N), _f32(rng, M, K), _f32(rng, K, N, scale=K ** -0.5), _f32(rng, N)
    return lambda: tx_ops.matmul_backward(dy, x, w, b)


def setup_attention(rng, T, H, D, backward):
    q, k, v, dout = (_f32(rng, 1, H, T, D) for _ in range(4))
    if not backward:
        return lambda: tx_ops.attention(q, k, v, causal=True)

    def fwd_bwd():
        _, saved = tx_ops.attention(q, k, v, causal=True, return_saved=True)
        return tx_ops.attention_backward(dout, q, k, v, saved, causal=True)
    return fwd_bwd


# The row-wise / element-wise cases run two ways (`out`): each call returning a new array,
# as a plain call does — a fresh output of > 32 MiB is a new mmap whose pages the OS
# zero-fills on first touch, about as long as the kernel itself — or writing into one
# preallocated output (out=), the kernel alone, as in a training loop reusing its buffers.
def setup_softmax(rng, shape, out=False):
    x = _f32(rng, *shape)
    y = np.empty_like(x) if out else None
    return lambda: tx_ops.softmax(x, out=y)


def setup_layer_norm(rng, rows, d, backward, out=False):
    x, gamma, beta, dy = _f32(rng, rows, d), _f32(rng, d), _f32(rng, d), _f32(rng, rows, d)
    y = np.empty_like(x) if out else None  # y, or dx for the backward
    if not backward:
        return lambda: tx_ops.layer_norm(x, gamma, beta, out=y)
    # saved = (mean, rstd) computed here, so the backward case does not depend on either
    # backend's forward.
    mean = x.mean(-1)
    rstd = (1.0 / np.sqrt(x.var(-1) + 1e-5)).astype(np.float32)
    return lambda: tx_ops.layer_norm_backward(dy, x, gamma, beta, (mean, rstd), out=y)


def setup_gelu(rng, rows, d, approximate, out=False):
    x = _f32(rng, rows, d)
    y = np.empty_like(x) if out else None
    return lambda: tx_ops.gelu(x, approximate=approximate, out=y)


def out_label(name: str, out: bool) -> str:
    """Row label of a case measured with a new output per call or into out=."""
    return f"{name} [{'out=' if out else 'new'}]"


def setup_feed_forward(rng, T, d, d_ff):
    x = _f32(rng, T, d)
    w1, b1 = _f32(rng, d, d_ff, scale=d ** -0.5), _f32(rng, d_ff)
    w2, b2 = _f32(rng, d_ff, d, scale=d_ff ** -0.5), _f32(rng, d)
    return lambda: tx_ops.feed_forward(x, w1, b1, w2, b2)


def setup_embedding(rng, n, V, d):
    ids, table = rng.integers(0, V, size=n), _f32(rng, V, d)
    return lambda: tx_ops.embedding(ids, table)


def setup_cross_entropy(rng, N, V):
    logits, targets = _f32(rng, N, V), rng.integers(0, V, size=N)
    return lambda: tx_ops.cross_entropy(logits, targets)


def setup_adamw(rng, n):
    p, g = _f32(rng, n), _f32(rng, n)
    m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
    return lambda: tx_ops.adamw_step(p, g, m, v, step=1, lr=1e-4)


def build_cases(quick: bool = False) -> list[Case]:
    """The benchmark table: GPT-2 small (d=768, 12 heads, d_ff=3072, V=50257), or
    smaller shapes with `quick` (a CI smoke run)."""
    d, H, D, d_ff, V = 768, 12, 64, 3072, 50257
    if quick:
        M, Ts, sm_T, ln_rows, gelu_rows, emb_n, ce_N, adam_n = 128, (128,), 128, 1024, 512, 1024, 64, 1 << 20
    else:
        M, Ts, sm_T, ln_rows, gelu_rows, emb_n, ce_N, adam_n = 512, (128, 512, 1024, 2048), 512, 8192, 4096, 8192, 512, GPT2_PARAMS
    f = 4  # bytes per float32
    cases = [
        Case("matmul", "matmul", f"({M},{d})x({d},{d_ff})", 2.0 * M * d * d_ff, 0, setup_matmul, (M, d, d_ff)),
        # GEMV (one token at generation time): streams the weights, memory-bound.
        Case("matmul", "matmul gemv", f"(1,{d})x({d},{d_ff})", 0, f * (d * d_ff + d + 2 * d_ff), setup_matmul, (1, d, d_ff)),
        Case("matmul_backward", "matmul_backward", f"({M},{d})x({d},{d_ff})", 4.0 * M * d * d_ff, 0,
             setup_matmul_backward, (M, d, d_ff)),
    ]
    for T in Ts:
        # Causal: only the j <= i half of QKᵀ and PV is useful work (2 matmuls x 2·T²·D / 2).
        fwd = 2.0 * H * T * T * D
        shape = f"B=1 H={H} T={T} D={D} causal"
        cases.append(Case("attention", "attention fwd", shape, fwd, 0, setup_attention, (T, H, D, False)))
        # Backward = 5 matmuls vs 2 forward (FlashAttention's 2.5x convention).
        cases.append(Case("attention", "attention fwd+bwd", shape, 3.5 * fwd, 0, setup_attention, (T, H, D, True)))
    # Element-wise ops at sizes past the L3 of most CPUs (the memory is the roof), and, in the
    # full table, at one 128-token sequence's sizes, which stay in cache (L2 or L3: their
    # "% of copy" can pass 100%).
    for sm_t, ln_r, gelu_r in [(sm_T, ln_rows, gelu_rows)] + ([] if quick else [(128, 128, 128)]):
        sm = (H, sm_t, sm_t)
        for op, name, shape, nbytes, setup, args in [
            ("softmax", "softmax", "x".join(map(str, sm)), 2 * f * math.prod(sm), setup_softmax, (sm,)),
            ("layer_norm", "layer_norm fwd", f"{ln_r}x{d}", 2 * f * ln_r * d, setup_layer_norm, (ln_r, d, False)),
            ("layer_norm", "layer_norm bwd", f"{ln_r}x{d}", 3 * f * ln_r * d, setup_layer_norm, (ln_r, d, True)),
            ("gelu", "gelu tanh", f"{gelu_r}x{d_ff}", 2 * f * gelu_r * d_ff, setup_gelu, (gelu_r, d_ff, "tanh")),
            # The erf form (BERT's, torch's default F.gelu).
            ("gelu", "gelu erf", f"{gelu_r}x{d_ff}", 2 * f * gelu_r * d_ff, setup_gelu, (gelu_r, d_ff, "none")),
        ]:
            cases += [Case(op, out_label(name, out), shape, 0, nbytes, setup, args + (out,)) for out in (False, True)]
    cases += [
        Case("feed_forward", "feed_forward", f"T={M} d={d} d_ff={d_ff}", 4.0 * M * d * d_ff, 0,
             setup_feed_forward, (M, d, d_ff)),
        Case("embedding", "embedding", f"{emb_n} ids, {V}x{d}", 0, 2 * f * emb_n * d + 8 * emb_n,
             setup_embedding, (emb_n, V, d)),
        # Reads logits, writes dlogits (a two-pass kernel reads the logits twice).
        Case("cross_entropy", "cross_entropy", f"N={ce_N} V={V}", 0, 2 * f * ce_N * V, setup_cross_entropy, (ce_N, V)),
        # Reads p, g, m, v; writes p, m, v.
        Case("adamw_step", "adamw_step", f"{adam_n / 1e6:.1f}M params", 0, 7 * f * adam_n, setup_adamw, (adam_n,)),
    ]
    return cases


# --------------------------------------------------------------------------- timing

def time_callable(fn: Callable[[], Any], repeats: int, min_time: float) -> dict:
    """Median seconds per call of `fn` (after one warm-up call) over `repeats` samples."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    inner = max(1, min(1000, math.ceil(min_time / max(first, 1e-9))))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return {"median_s": statistics.median(samples), "min_s": min(samples), "inner": inner, "samples_s": samples}


def _unavailable(exc: BaseException) -> bool:
    """NotImplementedError or a missing _core attribute: the op is not there yet."""
    return isinstance(exc, (NotImplementedError, AttributeError))


def time_guarded(fn, repeats: int, min_time: float) -> dict:
    """time_callable that never raises: {"status": "ok"|"n/a"|"error", ...}."""
    try:
        return {"status": "ok", **time_callable(fn, repeats, min_time)}
    except Exception as exc:  # a broken op must not stop the whole benchmark
        return {"status": "n/a" if _unavailable(exc) else "error", "error": f"{type(exc).__name__}: {exc}"}


def time_backend(fn, backend: str, repeats: int, min_time: float) -> dict:
    """Time `fn` on `backend` ("cpp" or "numpy"); "n/a" if that backend is unavailable."""
    try:
        with _backend.use_backend(backend):
            return time_guarded(fn, repeats, min_time)  # never raises
    except RuntimeError as exc:  # entering failed: no compiled core
        return {"status": "n/a", "error": str(exc)}


class _BlasThreads:
    """Sets NumPy's BLAS thread count (threadpoolctl) so both backends use n threads."""

    def __init__(self):
        try:
            from threadpoolctl import ThreadpoolController

            self._ctl = ThreadpoolController()
        except Exception:
            self._ctl = None

    def limit(self, n: int):
        if self._ctl is None:
            import contextlib

            return contextlib.nullcontext()
        return self._ctl.limit(limits=n, user_api="blas")


# --------------------------------------------------------------------------- machine

# Every library in a benchmark capped at AVX2 + FMA, as on a CPU without AVX-512 (most
# laptops): ours (TX_ISA), NumPy's OpenBLAS (its Haswell kernels), PyTorch's MKL, oneDNN and
# ATen kernels. Each is read when its library loads, hence `reexec_with_avx2_cap`.
AVX2_CAP_ENV = {"TX_ISA": "avx2", "OPENBLAS_CORETYPE": "Haswell", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
_AVX2_CAP_VARS = " ".join(f"{k}={v}" for k, v in AVX2_CAP_ENV.items())
AVX2_CAP_HELP = ("run every library capped at AVX2 + FMA, as on a CPU without AVX-512 (re-runs the command "
                 f"with {_AVX2_CAP_VARS})")


def avx2_capped() -> bool:
    return all(os.environ.get(k) == v for k, v in AVX2_CAP_ENV.items())


def reexec_with_avx2_cap() -> None:
    """Re-run this process's command with AVX2_CAP_ENV set (returns if it already is)."""
    if not avx2_capped():
        sys.stdout.flush()
        # orig_argv (3.10+): the interpreter's own command line (python [-m mod | -c code | script] args)
        argv = sys.orig_argv[1:] if hasattr(sys, "orig_argv") else sys.argv
        os.execve(sys.executable, [sys.executable] + argv, {**os.environ, **AVX2_CAP_ENV})


def isa_cap_line() -> str | None:
    """One line for a benchmark's header when the libraries are capped at AVX2."""
    if not avx2_capped():
        return None
    return f"isa cap: AVX2 + FMA for every library (--avx2: {_AVX2_CAP_VARS})"


def machine_info() -> dict:
    """CPU model, cores, the C++ core's view (tx.cpu_info()), NumPy and its BLAS."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as fh:
            fields = dict(line.split(":", 1) for line in fh.read().split("\n\n")[0].splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        info["cpu_model"] = fields.get("model name", platform.processor())
        info["cpu_family_model"] = f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"
    except OSError:
        info["cpu_model"] = platform.processor() or platform.machine()
    info["logical_cpus"] = os.cpu_count()
    info["physical_cores"] = _backend.physical_cores()
    info["tx"] = _backend.cpu_info()
    info["numpy"] = np.__version__
    info["blas"] = blas_info()
    info["env"] = {k: os.environ[k] for k in sorted(os.environ)
                   if k.startswith(("OMP_", "GOMP_", "OPENBLAS_", "MKL_", "TX_", "KMP_", "ONEDNN_", "ATEN_"))}
    return info


def blas_info() -> list[dict] | str:
    """NumPy's BLAS as threadpoolctl sees it (which kernel/architecture it runs)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed (pip install threadpoolctl to see NumPy's BLAS)"
    keys = ("internal_api", "version", "threading_layer", "num_threads", "architecture", "filepath")
    return [{k: d.get(k) for k in keys} for d in threadpool_info() if d.get("user_api") == "blas"]


def blas_env_warning() -> str | None:
    bad = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ]
    if avx2_capped() and "OPENBLAS_L2_SIZE" not in os.environ:
        return None  # the Haswell kernel is the point of --avx2
    if not bad:
        return None
    return (f"note: {', '.join(f'{k}={os.environ[k]}' for k in bad)} is set; it can force a slower OpenBLAS "
            f"kernel for NumPy. For a fair baseline run with: env {' '.join('-u ' + k for k in bad)} ...")


def measure_peaks(threads: list[int], quick: bool = False) -> dict:
    """{n: {"fma_gflops": ..., "read_gbs": ..., "copy_gbs": ...}} for each thread count
    (None if no core)."""
    core = _backend.core
    peaks: dict[int, dict] = {}
    if core is None or not hasattr(core, "probe_fma"):
        return {n: {"fma_gflops": None, "read_gbs": None, "copy_gbs": None} for n in threads}
    target = 0.05 if quick else 0.2  # seconds per probe run
    buf = np.ones(256 << 18, np.float32)  # 256 MiB: well past any L3
    saved = _backend.get_num_threads()
    try:
        for n in threads:
            _backend.set_num_threads(n)
            iters = 100_000
            while True:  # calibrate so one run lasts ~target seconds
                t0 = time.perf_counter()
                core.probe_fma(iters)
                dt = time.perf_counter() - t0
                if dt > target / 4:
                    break
                iters *= 4
            iters = max(1, int(iters * target / dt))
            fma = []
            for _ in range(3):  # best of 3: the peak the machine can sustain
                t0 = time.perf_counter()
                flops = core.probe_fma(iters)
                fma.append(flops / (time.perf_counter() - t0))
            core.probe_read(buf, 1)  # warm-up (TLB, frequency)
            reps = 1 if quick else 3
            bw = []
            for _ in range(2 if quick else 3):
                t0 = time.perf_counter()
                core.probe_read(buf, reps)
                bw.append(buf.nbytes * reps / (time.perf_counter() - t0))
            half = buf.size // 2  # copy the first 128 MiB onto the second
            core.probe_copy(buf[:half], buf[half:], 1)
            cp = []
            for _ in range(2 if quick else 3):
                t0 = time.perf_counter()
                core.probe_copy(buf[:half], buf[half:], reps)
                cp.append(8 * half * reps / (time.perf_counter() - t0))
            peaks[n] = {"fma_gflops": max(fma) / 1e9, "read_gbs": max(bw) / 1e9, "copy_gbs": max(cp) / 1e9}
    finally:
        _backend.set_num_threads(saved)
    return peaks


# --------------------------------------------------------------------------- table

def add_rates(r: dict, case: Case, peak: dict) -> dict:
    """Adds "rate" (GFLOP/s or GB/s) and "pct_peak" to a timing result that ran."""
    if r["status"] == "ok":
        r["rate"] = rate(case, r["median_s"])
        p = peak.get("fma_gflops" if case.bound == "compute" else "read_gbs")
        r["pct_peak"] = 100.0 * r["rate"] / p if p else None
        cp = peak.get("copy_gbs") if case.bound != "compute" else None
        r["pct_copy"] = 100.0 * r["rate"] / cp if cp else None
    return r


def _ms(r: dict) -> str:
    return f"{r['median_s'] * 1e3:.3f}" if r["status"] == "ok" else r["status"]


def rate(case: Case, seconds: float) -> float:
    """GFLOP/s (compute-bound) or GB/s (memory-bound)."""
    return (case.flops or case.bytes) / seconds / 1e9


def _rate(res: dict, backend: str) -> str:
    r = res[backend]
    return f"{r['rate']:.1f}" if r["status"] == "ok" else "-"


def _pct(res: dict, backend: str, key: str = "pct_peak") -> str:
    r = res[backend]
    return f"{r[key]:.0f}%" if r["status"] == "ok" and r.get(key) is not None else "-"


def _speedup(res: dict) -> str:
    c, n = res["cpp"], res["numpy"]
    return f"{n['median_s'] / c['median_s']:.2f}x" if c["status"] == n["status"] == "ok" else "-"


# (title, width, cell) — extend this list to add columns (benchmarks/bench_ops.py adds torch).
COLUMNS: list[tuple[str, int, Callable[[dict], str]]] = [
    ("op", 21, lambda r: r["name"]),
    ("shape", 26, lambda r: r["shape"]),
    ("isa", 6, lambda r: r["isa"]),
    ("thr", 3, lambda r: str(r["threads"])),
    ("cpp ms", 9, lambda r: _ms(r["cpp"])),
    ("numpy ms", 9, lambda r: _ms(r["numpy"])),
    ("speedup", 7, _speedup),
    ("unit", 6, lambda r: "GF/s" if r["bound"] == "compute" else "GB/s"),
    ("cpp", 7, lambda r: _rate(r, "cpp")),
    ("%peak", 5, lambda r: _pct(r, "cpp")),
    ("%copy", 5, lambda r: _pct(r, "cpp", "pct_copy")),
    ("numpy", 7, lambda r: _rate(r, "numpy")),
    ("%peak", 5, lambda r: _pct(r, "numpy")),
]


def format_header(columns=COLUMNS) -> str:
    head = "  ".join(t.rjust(w) if i > 1 else t.ljust(w) for i, (t, w, _) in enumerate(columns))
    return head + "\n" + "-" * len(head)


def format_row(res: dict, columns=COLUMNS) -> str:
    return "  ".join(f(res).rjust(w) if i > 1 else f(res).ljust(w) for i, (_, w, f) in enumerate(columns))


def format_machine(info: dict, peaks: dict) -> str:
    tx = info["tx"]
    lines = [
        f"command : {info.get('command', '')}",
        f"machine : {info['cpu_model']} ({info.get('cpu_family_model', '')}), {info['physical_cores']} physical "
        f"cores, {info['logical_cpus']} logical CPUs; {info['platform']}",
        f"tx      : isa={tx['isa']} (best {tx['best_isa']}), threads={tx['num_threads']}, openmp={tx['openmp']}, "
        f"l2={tx.get('l2_bytes', 0) >> 10} KiB (GEMM blocking), "
        f"amx={tx.get('amx', False)} (bf16 GEMMs > 16 rows on AMX tiles), "
        f"matmul_precision={tx.get('matmul_precision', 'highest')} (\"high\": fp32 GEMMs as bf16x3 on AMX), "
        f"features={','.join(tx['features']) or '-'}",
        f"numpy   : {info['numpy']}",
    ]
    blas = info["blas"]
    if isinstance(blas, str):
        lines.append(f"blas    : {blas}")
    else:
        for b in blas or [{"internal_api": "none found"}]:
            lines.append(f"blas    : {b.get('internal_api')} {b.get('version') or ''}, threading={b.get('threading_layer')}, "
                         f"num_threads={b.get('num_threads')}, kernel={b.get('architecture')}")
    if info.get("env"):
        lines.append("env     : " + " ".join(f"{k}={v}" for k, v in info["env"].items()))
    warn = blas_env_warning()
    if warn:
        lines.append(warn)
    best = 0.0
    for n, p in sorted(peaks.items()):
        if p["fma_gflops"] is None:
            lines.append(f"peaks   : {n} thread(s): n/a (no compiled core / probes)")
            continue
        lines.append(f"peaks   : {n} thread(s): FMA {p['fma_gflops']:.1f} GFLOP/s ({tx['isa']}), "
                     f"read bandwidth {p['read_gbs']:.1f} GB/s (256 MiB), copy {p['copy_gbs']:.1f} GB/s "
                     "(read + write, 128 MiB, streaming stores)")
        if p["fma_gflops"] < best:
            lines.append(f"warning : the FMA peak drops at {n} threads: other processes are probably using the "
                         "cores, so timings at that count are unreliable")
        best = max(best, p["fma_gflops"])
    return "\n".join(lines)


def format_errors(results: list[dict], backends=BACKENDS) -> str:
    """Cases that did not run: one summary line for "n/a", each "error" in full."""
    na, lines = {}, []
    for r in results:
        for b in backends:
            e = r.get(b, {})
            if e.get("status") == "n/a":
                na.setdefault(r["name"], []).append(b)
            elif e.get("status") == "error" and f"{r['name']} [{b}]" not in "".join(lines):
                lines.append(f"error: {r['name']} [{b}]: {e['error']}")
    if na:
        cases = ", ".join(f"{name} [{'/'.join(dict.fromkeys(bs))}]" for name, bs in na.items())
        lines.insert(0, f"n/a (not available on that backend; the messages are in the JSON): {cases}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- run

def parse_threads(spec) -> list[int]:
    if spec is None:
        return [_backend.get_num_threads()]
    text = spec
    if isinstance(spec, int):
        spec = [spec]
    if isinstance(spec, str):
        spec = [s for s in spec.split(",") if s.strip()]
    try:
        out = [int(s) for s in spec]
    except (TypeError, ValueError):
        out = []
    if not out or min(out) < 1:
        raise ValueError(f"thread counts must be positive integers like 1,2; got {text!r}")
    return out


def select_cases(cases: list[Case], ops_filter) -> list[Case]:
    if not ops_filter:
        return cases
    if isinstance(ops_filter, str):
        ops_filter = [s.strip() for s in ops_filter.split(",") if s.strip()]
    known = {c.op for c in cases}
    unknown = [o for o in ops_filter if o not in known]
    if unknown:
        raise ValueError(f"unknown op(s) {unknown}; choose from {sorted(known)}")
    return [c for c in cases if c.op in ops_filter]


def timing_defaults(quick: bool, repeats=None) -> tuple[int, float]:
    """(samples per case, minimum seconds per sample)."""
    return repeats or (3 if quick else 7), (0.005 if quick else 0.05)


OUT_NOTE = ("rows    : [new] = each call returns a new output array (a fresh array > 32 MiB is new pages, which the OS\n"
            "          zero-fills on first touch, inside the timing); [out=] = each call writes one preallocated output,\n"
            "          ops.X(..., out=y) (numpy: computed, then copied into y)")


def run(ops=None, threads=None, repeats=None, quick=False, json_path=None, out="stdout",
        command=None) -> dict:
    """Benchmark `ops` (names or a comma list; None = all) at each thread count, print the
    table to `out` (a file; "stdout": sys.stdout at call time; None: silent) and return
    everything (also written to `json_path`).
    """
    if isinstance(out, str) and out == "stdout":
        out = sys.stdout
    cases = select_cases(build_cases(quick), ops)
    threads = parse_threads(threads)
    repeats, min_time = timing_defaults(quick, repeats)
    emit = (lambda s: print(s, file=out, flush=True)) if out is not None else (lambda s: None)

    info = machine_info()
    info["command"] = command or " ".join([os.path.basename(sys.executable)] + sys.argv)
    peaks = measure_peaks(threads, quick)
    emit(format_machine(info, peaks))
    emit(f"timing  : median of {repeats} samples after a warm-up; threads {threads} (NumPy's BLAS limited to the same)")
    if any(c.name.endswith("[out=]") for c in cases):
        emit(OUT_NOTE)
    emit("")
    emit(format_header())

    blas = _BlasThreads()
    results = []
    saved_threads = _backend.get_num_threads()
    try:
        for case in cases:
            try:
                fn = case.setup(np.random.default_rng(0), *case.args)
            except Exception as exc:
                fn, setup_error = None, f"{type(exc).__name__}: {exc}"
            for n in threads:
                _backend.set_num_threads(n)
                row = {"op": case.op, "name": case.name, "shape": case.shape, "bound": case.bound,
                       "flops": case.flops, "bytes": case.bytes, "threads": n, "isa": _backend.get_isa()}
                with blas.limit(n):
                    for b in BACKENDS:
                        r = (time_backend(fn, b, repeats, min_time) if fn is not None
                             else {"status": "error", "error": "setup: " + setup_error})
                        row[b] = add_rates(r, case, peaks[n])
                results.append(row)
                emit(format_row(row))
            del fn
            gc.collect()
    finally:
        _backend.set_num_threads(saved_threads)
    errs = format_errors(results)
    if errs:
        emit("\n" + errs)
    report = {"machine": info, "peaks": {str(k): v for k, v in peaks.items()}, "repeats": repeats,
              "quick": quick, "threads": threads, "results": results}
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(report, fh, indent=1)
        emit(f"\nwrote {json_path}")
    return report
