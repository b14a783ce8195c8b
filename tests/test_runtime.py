"""Runtime control: backend choice, ISA dispatch, threads, fallback, concurrency."""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import transformer_ext as tx
from conftest import ISAS, needs_core


def run_py(code: str, **env) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, timeout=120)


def test_version_and_cpu_info():
    assert isinstance(tx.__version__, str) and tx.__version__
    info = tx.cpu_info()
    for key in ("isa", "features", "num_threads", "backend"):
        assert key in info
    assert info["backend"] in ("cpp", "numpy")
    assert info["num_threads"] >= 1
    if info["backend"] == "cpp":
        assert info["isa"] in ("scalar", "avx2", "avx512")
        assert info["isa"] in ISAS


@needs_core
def test_avx512_feature_means_f_bw_dq_vl():
    feats = set(tx.cpu_info()["features"])
    if "avx512" in ISAS:
        assert {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= feats
    else:
        assert not {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= feats or "avx2" not in feats


@needs_core
def test_set_isa_roundtrip_and_errors():
    before = tx.get_isa()
    try:
        for isa in ISAS:
            tx.set_isa(isa)
            assert tx.get_isa() == isa
            assert tx.cpu_info()["isa"] == isa
        with pytest.raises(ValueError, match="unknown ISA 'sse9'"):
            tx.set_isa("sse9")
        unsupported = [i for i in ("scalar", "avx2", "avx512") if i not in ISAS]
        for isa in unsupported:
            with pytest.raises(ValueError, match="not supported"):
                tx.set_isa(isa)
    finally:
        tx.set_isa(before)


@needs_core
def test_tx_isa_env_picks_variant_at_import():
    r = run_py("import transformer_ext as tx; print(tx.get_isa())", TX_ISA="scalar")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "scalar"
    r = run_py("import transformer_ext", TX_ISA="bogus")
    assert r.returncode != 0 and "unknown ISA 'bogus'" in r.stderr


@needs_core
def test_amx_flag_follows_isa_and_env():
    """AMX (bf16 pre-fill on tiles) is only ever reported on the AVX-512 variant, needs the
    amx_bf16 CPU feature, and TX_AMX=0 turns it off at import."""
    before = tx.get_isa()
    try:
        for isa in ISAS:
            tx.set_isa(isa)
            amx = tx.cpu_info()["amx"]
            assert isinstance(amx, bool)
            assert not amx or (isa == "avx512" and "amx_bf16" in tx.cpu_info()["features"])
    finally:
        tx.set_isa(before)
    code = "import transformer_ext as tx; tx.set_isa('avx512') if 'avx512' in tx.supported_isas() else None; " \
           "print(tx.cpu_info()['amx'])"
    r = run_py(code, TX_AMX="0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_tx_backend_env_forces_numpy():
    r = run_py("import transformer_ext as tx; print(tx.get_backend())", TX_BACKEND="numpy")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "numpy"


def test_fallback_when_core_cannot_load():
    # A missing/broken extension must leave a working package on NumPy, with one warning.
    code = """
    import sys, warnings
    sys.modules['transformer_ext._core'] = None   # makes `from . import _core` fail
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        import transformer_ext as tx
    msgs = [str(x.message) for x in w if 'compiled C++ core' in str(x.message)]
    print(len(msgs), tx.get_backend(), tx.cpu_info()['backend'])
    import numpy as np
    y = tx.ops.matmul(np.ones((2, 3), np.float32), np.ones((3, 4), np.float32))
    print(float(y.sum()))
    """
    r = run_py(code)
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.split("\n")[:2]
    assert first == "1 numpy numpy"
    assert float(second) == 24.0


def test_backend_selection():
    before = tx.get_backend()
    try:
        tx.set_backend("numpy")
        assert tx.get_backend() == "numpy"
        with pytest.raises(ValueError, match="unknown backend"):
            tx.set_backend("cuda")
        with pytest.raises(ValueError, match="unknown backend"):
            with tx.use_backend("gpu"):
                pass
    finally:
        tx.set_backend(before)


@needs_core
def test_use_backend_is_per_thread():
    seen = {}
    inside = threading.Event()
    release = threading.Event()

    def other():
        inside.wait(10)
        seen["other"] = tx.get_backend()
        release.set()

    t = threading.Thread(target=other)
    t.start()
    with tx.use_backend("numpy"):
        seen["main"] = tx.get_backend()
        inside.set()
        release.wait(10)
    t.join()
    assert seen["main"] == "numpy"
    assert seen["other"] == tx.get_backend() == "cpp"


def test_threads(threads):
    threads(1)
    assert tx.get_num_threads() == 1
    threads(2)
    assert tx.get_num_threads() == 2
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="positive int"):
            tx.set_num_threads(bad)


def test_default_threads_is_physical_cores():
    r = run_py("import transformer_ext as tx; from transformer_ext import _backend as b; "
               "print(tx.get_num_threads(), b.physical_cores())", TX_NUM_THREADS="")
    assert r.returncode == 0, r.stderr
    n, cores = map(int, r.stdout.split())
    assert n == cores >= 1


@needs_core
def test_concurrent_calls_from_python_threads(rng):
    # The bindings release the GIL: several Python threads calling kernels at once must
    # each get their own correct result.
    xs = [rng.standard_normal((64, 96)).astype(np.float32) for _ in range(4)]
    w = rng.standard_normal((96, 80)).astype(np.float32)
    want = [x.astype(np.float64) @ w for x in xs]
    errors = []

    def work(i):
        with tx.use_backend("cpp"):
            for _ in range(25):
                y = tx.ops.matmul(xs[i], w)
                if not np.allclose(y, want[i], rtol=1e-4, atol=1e-4):
                    errors.append(i)
                p = tx.ops.softmax(xs[i])
                if not np.allclose(p.sum(-1), 1.0, atol=1e-5):
                    errors.append(i)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []
