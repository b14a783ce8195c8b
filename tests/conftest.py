"""Shared fixtures: run a test under every ISA variant this machine supports, with
both backends, and restore global state afterwards."""
import numpy as np
import pytest

import transformer_ext as tx
from transformer_ext.gradcheck import central_difference

try:  # hypothesis: derandomized, no deadline (the machine is shared and noisy)
    from hypothesis import settings

    settings.register_profile("tx", deadline=None, derandomize=True, max_examples=60)
    settings.load_profile("tx")
except ImportError:  # pragma: no cover
    pass

HAS_CORE = tx.cpu_info()["backend"] == "cpp" or tx._backend.core is not None
ISAS = tx.supported_isas()

needs_core = pytest.mark.skipif(not HAS_CORE, reason="compiled core not available")


@pytest.fixture(params=ISAS or ["none"])
def isa(request):
    """Runs the test once per supported ISA variant, on the cpp backend. The AMX path of
    bf16 GEMMs (a different summation, see cpp/kernels/gemm_amx.cpp) is off here, so
    "avx512" tests the AVX-512 code; the `amx` fixture turns it on."""
    if request.param == "none":
        pytest.skip("compiled core not available")
    before = tx.get_isa()
    tx.set_isa(request.param)
    tx._backend.core.set_amx(False)
    try:
        with tx.use_backend("cpp"):
            yield request.param
    finally:
        tx._backend.core.set_amx(True)
        tx.set_isa(before)


@pytest.fixture
def amx():
    """The AVX-512 variant with its AMX path for bf16 GEMMs on (skips where the CPU, OS or
    build has no AMX)."""
    if not HAS_CORE or "avx512" not in ISAS:
        pytest.skip("no AVX-512 variant here")
    before = tx.get_isa()
    tx.set_isa("avx512")
    tx._backend.core.set_amx(True)
    try:
        if not tx._backend.core.amx_active():
            pytest.skip("no AMX-BF16 on this CPU / OS / build")
        with tx.use_backend("cpp"):
            yield
    finally:
        tx.set_isa(before)


@pytest.fixture
def threads():
    """Lets a test change the thread count; restores it afterwards."""
    before = tx.get_num_threads()
    yield tx.set_num_threads
    tx.set_num_threads(before)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def fd_check_params(model, loss, samples=3, h=1e-6, atol=1e-8, rtol=1e-5):
    """Check the gradients a backward left in model.gradients() against central differences of
    `loss()` (a float64 model; `loss` reseeds dropout itself if needed), for `samples` entries of
    every tensor taken where the analytic gradient is non-zero (a zero gradient everywhere fails)
    plus one entry anywhere. Asserts |backward − numeric| <= atol + rtol·|numeric|: in float64 the
    FD error is ~ ε·|L|/h ~ 1e-9 for L ~ 10, gradients are O(1e-3..1). Returns the worst abs error."""
    grads = {n: g.copy() for n, g in model.gradients().items()}
    rng = np.random.default_rng(0)
    worst = 0.0
    for name, value in model.parameters().items():
        g = grads[name]
        nz = np.flatnonzero(g)
        assert nz.size, f"{name}: zero gradient"
        picks = np.concatenate([rng.choice(nz, size=min(samples, nz.size), replace=False),
                                rng.choice(value.size, size=1)])
        for flat_i in picks:
            idx = np.unravel_index(flat_i, value.shape)
            n, a = central_difference(loss, value, idx, h), g[idx]
            assert abs(a - n) <= atol + rtol * abs(n), f"{name}{idx}: backward {a:.10g} vs numeric {n:.10g}"
            worst = max(worst, abs(a - n))
    return worst
