"""Inference throughput for a GPT-2-small-shaped model (12 layers, d=768, 12 heads, vocab 50257,
random weights): pre-fill tokens/s for 128- and 512-token prompts, and decode tokens/s (batch 1,
KV cache, 128 new tokens after a 16-token prompt), for this project (C++ backend with weights
pre-packed in fp32 and in bf16 — decoding through the fused C++ step —, and its NumPy backend)
and PyTorch eager (`torch.inference_mode`, transformers' GPT2LMHeadModel) where installed — each
in its own process, with 1 and 2 threads — and, per row, the memory-bandwidth bound for decoding:
weight bytes that row reads per token / read bandwidth (transformer_ext.bench's probe).

    python benchmarks/bench_inference.py [--threads 1,2] [--new 128] [--rounds R] [--no-numpy] [--no-torch]
                                         [--high] [--torch-bf16]

`--high` adds "cpp-fp32-hi": fp32 weights at matmul precision "high" (pre-fill GEMMs as bf16x3
on AMX tiles where present; decoding's GEMVs are unchanged). `--torch-bf16` adds "torch-bf16":
PyTorch with torch.backends.mkldnn.matmul.fp32_precision = "bf16" (one bf16 term per operand).
Ratios are always against the default, IEEE-fp32 "torch" row.

This VM's speed drifts between phases (up to 2x over minutes): `--rounds R` runs every phase R
times, reversing the order of the phases every other round, and reports per row the median
over rounds (the bandwidth probe too) and, against torch, each round's ratios.

A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import time

SHAPE = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
PROMPTS = (128, 512)
DECODE_PROMPT = 16


def _phase_tx(backend: str, threads: int, new: int, pack: str | None = None, precision: str = "highest") -> dict:
    import numpy as np

    import transformer_ext as tx
    from transformer_ext.generation.kv_cache import GPTCache
    from transformer_ext.models import GPT, GPTConfig
    tx.set_num_threads(threads)
    tx.set_matmul_precision(precision)
    m = GPT(GPTConfig(**SHAPE, seed=0))
    m.eval()
    rng = np.random.default_rng(0)
    with tx.use_backend(backend):
        if pack:
            m.pack_weights(pack)
            # per token: every packed Linear weight once, plus one row of wte and wpe
            out = {"weight_bytes": int(sum(lin.packed.nbytes for lin in m._linears()))}
        else:
            out = {"weight_bytes": int(sum(v.nbytes for v in m.parameters().values()))}
        for T in PROMPTS:
            ids = rng.integers(0, SHAPE["vocab_size"], (1, T))
            GPTCache(m, 1, T).prefill(ids)  # warm-up
            best = float("inf")
            for _ in range(2):
                c = GPTCache(m, 1, T)
                t0 = time.perf_counter()
                c.prefill(ids)
                best = min(best, time.perf_counter() - t0)
            out[f"prefill_{T}"] = T / best
        ids = rng.integers(0, SHAPE["vocab_size"], (1, DECODE_PROMPT))
        c = GPTCache(m, 1, DECODE_PROMPT + new)
        logits = c.prefill(ids)
        tok = np.argmax(logits, -1)
        c2 = GPTCache(m, 1, DECODE_PROMPT + 2)  # warm-up step
        c2.prefill(ids)
        c2.step(tok)
        t0 = time.perf_counter()
        for _ in range(new):
            tok = np.argmax(c.step(tok), -1)
        out["decode"] = new / (time.perf_counter() - t0)
    return out


def _phase_torch(threads: int, new: int, fp32_precision: str = "ieee") -> dict:
    import torch
    import transformers as tr
    torch.set_num_threads(threads)
    if fp32_precision != "ieee":
        torch.backends.mkldnn.matmul.fp32_precision = fp32_precision
    torch.manual_seed(0)
    cfg = tr.GPT2Config(**SHAPE)
    m = tr.GPT2LMHeadModel(cfg).eval()
    # The LM head on the last position only, as transformers' generate does at prefill (and
    # as our GPTCache.prefill does): full-prompt logits would add 2·T·d·V flops to torch's side.
    keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(m.forward).parameters else {}
    out = {}
    with torch.inference_mode():
        for T in PROMPTS:
            ids = torch.randint(0, SHAPE["vocab_size"], (1, T))
            m(ids, **keep)
            best = float("inf")
            for _ in range(2):
                t0 = time.perf_counter()
                m(ids, use_cache=True, **keep)
                best = min(best, time.perf_counter() - t0)
            out[f"prefill_{T}"] = T / best
        ids = torch.randint(0, SHAPE["vocab_size"], (1, DECODE_PROMPT))
        r = m(ids, use_cache=True, **keep)
        past, tok = r.past_key_values, r.logits[:, -1:].argmax(-1)
        r = m(tok, past_key_values=past, use_cache=True)  # warm-up step
        past, tok = r.past_key_values, r.logits[:, -1:].argmax(-1)
        t0 = time.perf_counter()
        for _ in range(new):
            r = m(tok, past_key_values=past, use_cache=True)
            past, tok = r.past_key_values, r.logits[:, -1:].argmax(-1)
        out["decode"] = new / (time.perf_counter() - t0)
    return out


def _phase_peak(threads: int) -> dict:
    from transformer_ext.bench import measure_peaks
    return measure_peaks([threads], quick=True)[threads]


def _run(kind: str, threads: int, new: int) -> dict | None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    code = f"import json, sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); " \
           f"import bench_inference as b; print(json.dumps(b._dispatch({kind!r}, {threads}, {new})))"
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        print(f"  [{kind}, {threads} thread(s)] failed: {p.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def _dispatch(kind: str, threads: int, new: int) -> dict:
    if kind == "cpp-fp32-hi":
        return _phase_tx("cpp", threads, new, pack="fp32", precision="high")
    if kind.startswith("cpp-"):
        return _phase_tx("cpp", threads, new, pack=kind[4:])
    if kind == "numpy":
        return _phase_tx("numpy", threads, new)
    if kind in ("torch", "torch-bf16"):
        return _phase_torch(threads, new, "bf16" if kind == "torch-bf16" else "ieee")
    return _phase_peak(threads)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every phase this many times, alternating the order; report medians over rounds "
                         "and each round's ratio against torch")
    ap.add_argument("--no-numpy", action="store_true")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--high", action="store_true",
                    help='also run fp32 weights at matmul precision "high" (bf16x3 on AMX tiles where present)')
    ap.add_argument("--torch-bf16", action="store_true",
                    help='also run PyTorch with torch.backends.mkldnn.matmul.fp32_precision = "bf16"')
    ap.add_argument("--avx2", action="store_true",
                    help="every library capped at AVX2 + FMA, as on a CPU without AVX-512 (re-runs the command "
                         "with transformer_ext.bench.AVX2_CAP_ENV set)")
    a = ap.parse_args(argv)
    from transformer_ext import bench
    if a.avx2:
        bench.reexec_with_avx2_cap()
    kinds = ["cpp-fp32"] + (["cpp-fp32-hi"] if a.high else []) + ["cpp-bf16"] + ([] if a.no_numpy else ["numpy"])
    if not a.no_torch:
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
            kinds += ["torch"] + (["torch-bf16"] if a.torch_bf16 else [])
        except ImportError:
            print("(PyTorch eager skipped: torch + transformers not installed)")
    import platform
    import statistics

    import transformer_ext as tx
    info = tx.cpu_info()
    print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"GPT-2-small shape {SHAPE}, batch 1; decode: {a.new} new tokens after {DECODE_PROMPT}; "
          "bound = weight bytes read per token / measured read bandwidth; "
          f"median over {a.rounds} round(s)")
    print(f"machine: {platform.machine()}, {os.cpu_count()} logical CPUs; isa={info['isa']}; "
          f"amx={info['amx']} (True: cpp-bf16 and cpp-fp32-hi pre-fill run their GEMMs on AMX tiles)")
    if bench.isa_cap_line():
        print(bench.isa_cap_line())
    print(f"{'backend':<11} {'thr':>3} {'prefill128 tok/s':>17} {'prefill512 tok/s':>17} {'decode tok/s':>13} "
          f"{'bound tok/s':>12} {'% of bound':>10} {'vs torch: p128 / p512 / decode':>31}")
    metrics = ("prefill_128", "prefill_512", "decode")
    for n in [int(t) for t in a.threads.split(",")]:
        runs = {k: [] for k in kinds}  # kind -> one result per round (None: failed)
        probes = []
        for rnd in range(a.rounds):
            peak = _run("peak", n, a.new)
            if peak and peak.get("read_gbs"):
                probes.append(peak["read_gbs"])
            for k in (kinds if rnd % 2 == 0 else kinds[::-1]):
                runs[k].append(_run(k, n, a.new))
        gbs = statistics.median(probes) if probes else None
        ok = {k: [r for r in rs if r] for k, rs in runs.items()}
        med = {k: {c: statistics.median(r[c] for r in rs) for c in metrics} | {"weight_bytes": rs[0].get("weight_bytes")}
               for k, rs in ok.items() if rs}
        ref = med.get("torch")
        for k, r in med.items():
            bound = gbs * 1e9 / r["weight_bytes"] if gbs and r.get("weight_bytes") else None
            b, pct = (f"{bound:.1f}", f"{100 * r['decode'] / bound:.0f}%") if bound else ("-", "-")
            vs = " / ".join(f"{r[c] / ref[c]:.2f}x" for c in metrics) if ref and k != "torch" else "-"
            print(f"{k:<11} {n:>3} {r['prefill_128']:>17.1f} {r['prefill_512']:>17.1f} {r['decode']:>13.1f} "
                  f"{b:>12} {pct:>10} {vs:>31}")
            if a.rounds > 1 and ref and k != "torch":
                per = [" / ".join(f"{o[c] / t[c]:.2f}" for c in metrics)
                       for o, t in zip(runs[k], runs["torch"]) if o and t]
                print(f"{'':<10} {'':>3}   vs torch per round (p128 / p512 / decode): {', '.join(per)}")
        if gbs:
            each = f" (each round: {', '.join(f'{g:.1f}' for g in probes)})" if len(probes) > 1 else ""
            print(f"{'(read bandwidth':<10} {n:>3} thread(s): {gbs:.1f} GB/s{each})")

if __name__ == "__main__":
    main()
