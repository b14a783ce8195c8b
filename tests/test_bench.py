"""The benchmark harness runs and its probes compute what they claim (no timings asserted)."""
import importlib.util
import json
import os
import pathlib

import numpy as np
import pytest

import transformer_ext as tx
from transformer_ext import bench, cli
from conftest import HAS_CORE, needs_core


@needs_core
@pytest.mark.parametrize("n", [1, 5, 63, 64, 65, 255, 256, 257, 1000, 12345, 2 * 131072 + 12345])
def test_probe_read_sums_every_element(isa, threads, n):
    x = (np.arange(n) % 7).astype(np.float32)
    for t in (1, 2):
        threads(t)
        assert tx._backend.core.probe_read(x, 3) == pytest.approx(3 * float(x.sum()), rel=1e-6)


@needs_core
@pytest.mark.parametrize("n", [0, 1, 15, 17, 1000, 2 * 131072 + 12345])
@pytest.mark.parametrize("offset", [0, 1, 3])  # streaming stores need aligned dst: the edges are plain
def test_probe_copy_copies_every_element(isa, threads, n, offset):
    core = tx._backend.core
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    for t in (1, 2):
        threads(t)
        y = np.full(n + offset + 1, -1.0, np.float32)
        core.probe_copy(x, y[offset:offset + n], 2)
        np.testing.assert_array_equal(y[offset:offset + n], x)
        assert (y[:offset] == -1).all() and y[-1] == -1  # nothing written outside


@needs_core
def test_probe_copy_rejects_bad_buffers():
    core, z = tx._backend.core, np.zeros(20, np.float32)
    with pytest.raises(ValueError, match="overlap"):
        core.probe_copy(z[:10], z[5:15], 1)
    with pytest.raises(ValueError, match="same size"):
        core.probe_copy(z[:10], z[10:19], 1)
    with pytest.raises(ValueError, match="read-only"):
        ro = np.zeros(10, np.float32)
        ro.flags.writeable = False
        core.probe_copy(z[:10], ro, 1)
    with pytest.raises(TypeError):
        core.probe_copy(z[:10], np.zeros(10), 1)


@needs_core
def test_probe_fma_counts_flops(isa):
    assert tx._backend.core.probe_fma(100) > 0


def test_bench_quick_smoke(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert cli.main(["bench", "--quick", "--ops", "softmax", "--threads", "1", "--repeats", "1",
                     "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "softmax [new]" in text and "softmax [out=]" in text and "peaks" in text
    data = json.loads(out.read_text())
    assert [r["name"] for r in data["results"]] == ["softmax [new]", "softmax [out=]"]
    assert all(r["cpp"]["status"] == "ok" for r in data["results"])


OUT_OPS = ("softmax", "layer_norm", "gelu")


def out_pairs(quick=True):
    """(new-output case, out= case) pairs of the benchmark table, in order."""
    cases = [c for c in bench.build_cases(quick) if c.op in OUT_OPS]
    pairs = list(zip(cases[::2], cases[1::2]))
    assert pairs and all(a.name.endswith("[new]") and b.name == a.name[:-5] + "[out=]" and a.args[:-1] == b.args[:-1]
                         for a, b in pairs)
    return pairs


def first(r):
    return r[0] if isinstance(r, tuple) else r


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_bench_out_rows_compute_what_new_rows_do(backend):
    if backend == "cpp" and not HAS_CORE:
        pytest.skip("compiled core not available")
    with tx.use_backend(backend):
        for new, out in out_pairs():
            a = first(new.setup(np.random.default_rng(0), *new.args)())
            f = out.setup(np.random.default_rng(0), *out.args)
            b = first(f())
            np.testing.assert_array_equal(a, b, err_msg=out.name)
            assert first(f()) is b, out.name  # the same preallocated output on every call


def load_bench_ops():
    path = pathlib.Path(__file__).parents[1] / "benchmarks" / "bench_ops.py"
    spec = importlib.util.spec_from_file_location("bench_ops", path)
    bench_ops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_ops)
    return bench_ops


def test_gemm_ratios_pair_samples_of_the_same_round():
    paired_ratio = load_bench_ops().paired_ratio
    # the machine slows down round by round; torch is 2x slower than ours in every round
    secs = {"ours": [1.0, 2.0, 4.0, 8.0, 16.0], "torch": [2.0, 4.0, 8.0, 16.0, 32.0]}
    assert paired_ratio(secs, "torch") == (2.0, 2.0, 2.0)
    # a 10x slowdown starts inside round 3, after ours' sample: a ratio of medians says 0.2
    secs = {"ours": [1.0, 1.0, 10.0, 10.0, 10.0], "torch": [2.0, 2.0, 2.0, 20.0, 20.0]}
    assert paired_ratio(secs, "torch") == (2.0, 2.0, 2.0)
    secs = {"ours": [1.0, 2.0, 4.0, 8.0, 16.0], "torch": [8.0, 8.0, 8.0, 8.0, 8.0]}  # 8, 4, 2, 1, 0.5
    assert paired_ratio(secs, "torch") == (2.0, 1.0, 4.0)
    assert paired_ratio(secs, "numpy") is None


@needs_core
def test_gemm_table_runs_the_fma_probe_in_its_rounds(capsys):
    bench_ops = load_bench_ops()
    rows = bench_ops.run_gemm([1], 3, 0.0, {1: {"fma_gflops": None}}, shapes=[(64, 96, 80, False, True)],
                              use_torch=False)
    (r,) = rows
    secs = r["samples_s"]
    assert len(secs["fma"]) == len(secs["ours"]) == 3 and r["fma_probe_flops"] > 0
    q = np.array(secs["fma"]) / np.array(secs["ours"]) * r["flops"] / r["fma_probe_flops"]
    assert r["pct_fma_paired"][0] == pytest.approx(100 * float(np.median(q)))
    assert set(r["gflops"]) == {"ours", "numpy"}  # the probe is not a GEMM variant
    assert r["max_abs_diff_vs_numpy"] < 1e-4
    assert "ours %FMA" in capsys.readouterr().out


@needs_core
def test_bench_ops_paired_alternates_ours_and_torch(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "p.json"
    rc = load_bench_ops().main(["--paired", "--ops", "attention", "--quick", "--threads", "1", "--repeats", "2",
                                "--json", str(out)])
    assert rc == 0
    rows = json.loads(out.read_text())["paired"]
    assert {r["name"] for r in rows} == {"attention fwd", "attention fwd+bwd"}
    for r in rows:
        ours, torch_s = r["samples_s"]["ours"], r["samples_s"]["torch"]
        assert len(ours) == len(torch_s) == 2 and min(ours + torch_s) > 0
        assert r["ours_over_torch"][0] == pytest.approx(float(np.median(np.array(torch_s) / np.array(ours))))
    assert "ours/torch" in capsys.readouterr().out


def test_bench_ops_paired_measures_memory_bound_ops_against_the_copy_probe_each_round(tmp_path):
    pytest.importorskip("torch")
    bench_ops = load_bench_ops()
    out = tmp_path / "p.json"
    rc = bench_ops.main(["--paired", "--ops", "layer_norm", "--quick", "--threads", "1", "--repeats", "3",
                         "--json", str(out)])
    assert rc == 0
    rows = json.loads(out.read_text())["paired"]
    assert rows
    for r in rows:
        secs = r["samples_s"]
        assert len(secs["copy"]) == len(secs["ours"]) == 3
        case = next(c for c in bench.build_cases(True) if c.name == r["name"] and c.shape == r["shape"])
        q = np.array(secs["copy"]) / np.array(secs["ours"]) * case.bytes / (8.0 * bench_ops.COPY_PROBE_FLOATS)
        assert r["pct_copy_paired"][0] == pytest.approx(100 * float(np.median(q)))
    # compute-bound cases run no probe
    assert bench_ops.paired_pct({"ours": [1.0]}, "copy", 1.0, 1.0) is None


def test_bench_ops_torch_out_rows_compute_what_new_rows_do():
    torch = pytest.importorskip("torch")
    bench_ops = load_bench_ops()
    setups = bench_ops.torch_setups(torch)
    for new, out in out_pairs():
        a = first(setups[new.setup](np.random.default_rng(0), *new.args)())
        f = setups[out.setup](np.random.default_rng(0), *out.args)
        b = first(f())
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=out.name)  # the same torch kernel either way
        assert first(f()).data_ptr() == b.data_ptr(), out.name


@needs_core
def test_avx2_cap_reexecs_with_every_library_capped():
    if "avx2" not in tx.cpu_info()["features"]:
        pytest.skip("this CPU has no AVX2")
    import subprocess
    import sys
    code = ("import sys; from transformer_ext import bench; bench.reexec_with_avx2_cap(); "
            "import transformer_ext as tx; print(tx.get_isa(), bench.isa_cap_line() is not None, "
            "bench.blas_env_warning() is None, len(sys.argv))")
    env = {k: v for k, v in os.environ.items() if k not in bench.AVX2_CAP_ENV}
    r = subprocess.run([sys.executable, "-c", code, "x"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["avx2", "True", "True", "2"]  # re-run once, with its arguments
