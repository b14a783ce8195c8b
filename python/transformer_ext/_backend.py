"""Which implementation runs the kernels: the compiled C++ core ("cpp") or NumPy.

The choice is process-wide (`set_backend`, env `TX_BACKEND`) and can be overridden per
thread/task with the `use_backend(...)` context manager (a contextvar). If the compiled
module cannot be imported, everything runs on NumPy and one warning says why.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import warnings

_BACKENDS = ("cpp", "numpy")

try:  # the compiled core; absent in a source tree that was never built
    from . import _core as core  # type: ignore[attr-defined]

    _core_error = None
except Exception as exc:  # pragma: no cover - exercised by test_fallback in a subprocess
    core = None
    _core_error = exc
    warnings.warn(
        f"transformer_ext: the compiled C++ core could not be loaded ({type(exc).__name__}: {exc}); "
        "running every kernel on the NumPy backend",
        RuntimeWarning,
        stacklevel=2,
    )


def _check_name(name: str) -> str:
    if name not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r}: expected one of {_BACKENDS}")
    if name == "cpp" and core is None:
        raise RuntimeError(f"the 'cpp' backend is unavailable: the compiled core failed to load ({_core_error})")
    return name


def _initial_backend() -> str:
    env = os.environ.get("TX_BACKEND", "").strip().lower()
    if env:
        if env not in _BACKENDS:
            raise ValueError(f"TX_BACKEND={env!r}: expected one of {_BACKENDS}")
        if env == "cpp" and core is None:
            warnings.warn("TX_BACKEND=cpp but the compiled core is unavailable; using numpy", RuntimeWarning)
            return "numpy"
        return env
    return "cpp" if core is not None else "numpy"


_global_backend = _initial_backend()
_local_backend: contextvars.ContextVar[str | None] = contextvars.ContextVar("tx_backend", default=None)


def get_backend() -> str:
    """The backend kernels run on in this thread/task: "cpp" or "numpy"."""
    local = _local_backend.get()
    return local if local is not None else _global_backend


def set_backend(name: str) -> None:
    """Set the process-wide backend ("cpp" or "numpy")."""
    global _global_backend
    _global_backend = _check_name(name)


@contextlib.contextmanager
def use_backend(name: str):
    """Run the enclosed block on `name` in this thread/task only."""
    token = _local_backend.set(_check_name(name))
    try:
        yield
    finally:
        _local_backend.reset(token)


def physical_cores() -> int:
    """Physical cores available to this process (hyper-threads share FMA units)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for cpu in cpus:
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology"
        try:
            with open(f"{base}/physical_package_id") as f:
                pkg = f.read().strip()
            with open(f"{base}/core_id") as f:
                core_id = f.read().strip()
            cores.add((pkg, core_id))
        except OSError:
            cores.add(("cpu", cpu))
    return max(1, len(cores))


def set_num_threads(n: int) -> None:
    """Threads every C++ parallel region uses (process-wide)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    if core is not None:
        core.set_num_threads(n)
    global _threads
    _threads = n


def get_num_threads() -> int:
    return core.get_num_threads() if core is not None else _threads


def set_isa(name: str) -> None:
    """Pick the kernel variant: "scalar", "avx2" or "avx512" (must be supported here)."""
    if core is None:
        raise RuntimeError(f"set_isa: the compiled core is unavailable ({_core_error})")
    try:
        core.set_isa(name)
    except Exception as exc:
        raise ValueError(str(exc)) from None


def get_isa() -> str:
    return core.get_isa() if core is not None else "none"


_PRECISIONS = ("highest", "high")


def set_matmul_precision(precision: str) -> None:
    """Internal precision of float32 matrix products, as torch.set_float32_matmul_precision.

    "highest" (default): IEEE float32 FMAs. "high": on a CPU with AMX tiles (Intel Sapphire
    Rapids and later), float32 GEMMs of 48 rows or more (more than 64 with a transposed B;
    smaller ones stay on the FMA paths) split each operand into two bfloat16 terms,
    a = a_hi + a_lo, and sum a_lo·b_hi + a_hi·b_hi +
    a_hi·b_lo in float32 on the tiles ("bf16x3": about 16 significant bits per operand; the
    error is <= 2^-16·Σ|a||b| plus float32's summation error) — up to about twice as fast on
    training- and pre-fill-sized products. Elsewhere "high" computes as "highest". Inputs and
    outputs stay float32; an inf input may give NaN where float32 gives ±inf. Attention's
    products are not affected. Process-wide; env TX_MATMUL_PRECISION sets it at import.
    """
    if precision not in _PRECISIONS:
        raise ValueError(f"set_matmul_precision: precision must be one of {_PRECISIONS}, got {precision!r}")
    global _precision
    _precision = precision
    if core is not None:
        core.set_fast_f32(precision == "high")


def get_matmul_precision() -> str:
    return _precision


def supported_isas() -> list[str]:
    """Variants this CPU and build can run, lowest first."""
    if core is None:
        return []
    order = ["scalar", "avx2", "avx512"]
    return order[: order.index(core.best_isa()) + 1]


def cpu_info() -> dict:
    """What runs the kernels here: ISA variant, CPU features, threads, backend."""
    return {
        "isa": get_isa(),
        "best_isa": core.best_isa() if core is not None else "none",
        "features": list(core.cpu_features()) if core is not None else [],
        "num_threads": get_num_threads(),
        "backend": get_backend(),
        "openmp": bool(core.has_openmp()) if core is not None else False,
        # per-core L2 as the OS reports it (0: unknown): sizes the GEMM's B block
        "l2_bytes": int(core.l2_cache_bytes()) if core is not None else 0,
        # bf16 pre-packed GEMMs with more than 16 rows (prompt pre-fill) on AMX tiles
        "amx": bool(core.amx_active()) if core is not None else False,
        # "high": fp32 GEMMs as bf16x3 on AMX tiles where amx is True (set_matmul_precision)
        "matmul_precision": get_matmul_precision(),
        "core_error": None if _core_error is None else str(_core_error),
    }


_threads = int(os.environ.get("TX_NUM_THREADS", "0") or 0) or physical_cores()
if core is not None:
    core.set_num_threads(_threads)
    _isa_env = os.environ.get("TX_ISA", "").strip().lower()
    if _isa_env:
        set_isa(_isa_env)
    # TX_AMX=0: bf16 pre-packed GEMMs stay on the AVX-512 FMA path even where AMX tiles exist
    # (results then equal the fp32 computation on bf16-rounded weights bit for bit).
    if os.environ.get("TX_AMX", "").strip() == "0":
        core.set_amx(False)
_precision = "highest"
if os.environ.get("TX_MATMUL_PRECISION", "").strip():
    set_matmul_precision(os.environ["TX_MATMUL_PRECISION"].strip().lower())
