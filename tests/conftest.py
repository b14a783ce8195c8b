"""Shared fixtures: run a test under every ISA variant this machine supports, with
both backends, and restore global state afterwards."""
import numpy as np
import pytest

import transformer_ext as tx

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
    """Runs the test once per supported ISA variant, on the cpp backend."""
    if request.param == "none":
        pytest.skip("compiled core not available")
    before = tx.get_isa()
    tx.set_isa(request.param)
    try:
        with tx.use_backend("cpp"):
            yield request.param
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
