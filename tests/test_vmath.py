"""Accuracy of the kernels' vectorised float math (cpp/kernels/vmath.h), under every ISA.

`_core.vmath(name, x)` runs vexp / vtanh / verf / verfc element-wise through the current
ISA variant's vector loop (the same functions the softmax / GELU kernels inline).
Each is compared with the float64 function (np.exp, np.tanh, math.erf) on a dense sweep:
every k-th float32 bit pattern over the whole range (both signs), random points in the
interesting interval, and edge values (±0, ±inf, NaN, subnormals, the overflow and
underflow thresholds and their float neighbours). The error is measured in ulps of the
float32 nearest the true value; the bounds asserted are the maxima documented in vmath.h,
which were measured over all float32 inputs (AVX-512; every 2nd / 7th for the scalar /
AVX2 variants).
"""
import math

import numpy as np
import pytest

import transformer_ext as tx

# Documented in cpp/kernels/vmath.h (exhaustive measurement over every float32).
MAX_ULP = {"exp": 0.99, "tanh": 1.22, "erf": 1.43, "erfc": 5.2}  # erfc: for x < 1
# erfc for x >= 1 (normal results): relative error <= ERFC_REL(x) = (3 + 1.2·x²)·2^-23.


def ERFC_REL(x):
    return (3 + 1.2 * x.astype(np.float64) ** 2) * 2.0**-23

F32_MAX = np.finfo(np.float32).max
F32_TINY = np.finfo(np.float32).tiny  # smallest normal
F32_SUB = np.float32(2.0**-149)  # smallest subnormal

_math_erf = np.frompyfunc(math.erf, 1, 1)
_math_erfc = np.frompyfunc(math.erfc, 1, 1)

REF = {
    "exp": np.exp,
    "tanh": np.tanh,
    "erf": lambda x: np.asarray(_math_erf(x), dtype=np.float64),
    "erfc": lambda x: np.asarray(_math_erfc(x), dtype=np.float64),
}

# Where each function is not trivially constant in float32 (for the random points).
RANGE = {"exp": (-104.0, 89.0), "tanh": (-9.5, 9.5), "erf": (-4.5, 4.5), "erfc": (-4.5, 10.1)}


def core():
    return tx._backend.core


def bit_sweep(step: int) -> np.ndarray:
    """Every `step`-th float32 bit pattern in [0, +inf], and the negatives."""
    bits = np.arange(0, 0x7F800001, step, dtype=np.uint32)
    pos = bits.view(np.float32)
    return np.concatenate([pos, -pos])


def edges(name: str) -> np.ndarray:
    f32 = np.float32
    v = [0.0, -0.0, np.inf, -np.inf, F32_MAX, -F32_MAX, F32_TINY, -F32_TINY, F32_SUB, -F32_SUB,
         1.0, -1.0, 0.5, 0.625, 1e-20, -1e-20, 20.0, -20.0, 1e30, -1e30]
    if name == "exp":  # overflow (88.7228) / subnormal (-87.3365) / zero (-103.9721) thresholds
        v += [88.72283, 88.7228, 89.0, -87.33654, -87.3365, -103.9721, -103.97208, -104.0, -150.0, 0.34657359, -0.34657359,
              88.0, -86.5]  # the last two: AVX2's cheaper 2^n range (vmath.h vexp_upto89)
    if name in ("erf", "erfc"):
        v += [0.9999999, 1.0000001, 3.9, 3.92, 4.0, 10.0, 10.05, 10.06]
    x = np.array(v, np.float32)
    # and each value's float32 neighbours
    with np.errstate(over="ignore"):
        return np.concatenate([x, np.nextafter(x, f32(np.inf)), np.nextafter(x, f32(-np.inf))])


def ulp_error(y: np.ndarray, x: np.ndarray, name: str):
    """(max ulp error where the true value is a finite float32, mask of wrong special
    values: a true value beyond FLT_MAX must give ±inf, NaN must give NaN)."""
    with np.errstate(over="ignore"):
        ref = REF[name](x.astype(np.float64))
        r32 = ref.astype(np.float32)
    finite = np.isfinite(r32)
    ulp = np.spacing(np.abs(r32[finite])).astype(np.float64)
    err = np.abs(y[finite].astype(np.float64) - ref[finite]) / ulp
    bad = np.isnan(ref) != np.isnan(y)
    overflow = ~finite & ~np.isnan(ref)
    bad[overflow] |= y[overflow] != r32[overflow]
    return (float(err.max()) if err.size else 0.0), bad


def sweep(name: str, rng) -> np.ndarray:
    lo, hi = RANGE[name]
    cheap = name in ("exp", "tanh")  # math.erf per element is slow: fewer points
    return np.concatenate([
        bit_sweep(4099 if cheap else 16411),  # ~2.1M / ~0.5M bit patterns
        rng.uniform(lo, hi, 200_000 if cheap else 50_000).astype(np.float32),
        edges(name),
        np.array([np.nan, -np.nan], np.float32),
    ])


@pytest.mark.parametrize("name", ["exp", "tanh", "erf", "erfc"])
def test_vmath_accuracy(isa, name, rng):
    x = sweep(name, rng)
    y = core().vmath(name, x)
    assert y.dtype == np.float32 and y.shape == x.shape
    if name == "erfc":  # the right tail has its own (relative) bound: test_vmath_erfc_tail
        keep = ~(x >= 1)
        x, y = x[keep], y[keep]
    worst, bad = ulp_error(y, x, name)
    assert not bad.any(), f"{name}: wrong special values at x={x[bad][:8]} -> {y[bad][:8]}"
    assert worst <= MAX_ULP[name], f"{name} on {isa}: max error {worst:.3f} ulp > documented {MAX_ULP[name]}"


def test_vmath_erfc_tail(isa, rng):
    x = sweep("erfc", rng)
    x = x[x >= 1]
    y = core().vmath("erfc", x).astype(np.float64)
    ref = REF["erfc"](x.astype(np.float64))
    normal = ref >= F32_TINY
    ratio = np.abs(y[normal] - ref[normal]) / ref[normal] / ERFC_REL(x[normal])
    assert ratio.max() <= 1, f"erfc tail: relative error {ratio.max():.2f}x the bound at x={x[normal][np.argmax(ratio)]}"
    # true value below FLT_MIN: within one smallest-normal of it (and 0 once it underflows)
    assert (np.abs(y[~normal] - ref[~normal]) <= F32_TINY).all()


def test_vmath_special_values(isa):
    inf, nan = np.inf, np.nan
    x = np.array([-inf, inf, nan, 0.0, -0.0, -104.0, -200.0, 89.0, 100.0], np.float32)
    e = core().vmath("exp", x)
    np.testing.assert_array_equal(e[:2], [0.0, inf])
    assert np.isnan(e[2])
    np.testing.assert_array_equal(e[3:], [1.0, 1.0, 0.0, 0.0, inf, inf])
    # subnormal results are produced (one rounding), not flushed to zero
    sub = core().vmath("exp", np.array([-100.0, -90.0], np.float32))
    np.testing.assert_array_equal(sub, np.exp(np.array([-100.0, -90.0])).astype(np.float32))
    for name, at_inf in (("tanh", 1.0), ("erf", 1.0)):
        y = core().vmath(name, np.array([inf, -inf, nan, 0.0, -0.0, 50.0, -50.0], np.float32))
        np.testing.assert_array_equal(y[[0, 1, 5, 6]], [at_inf, -at_inf, at_inf, -at_inf])
        assert np.isnan(y[2])
        assert y[3] == 0 and not np.signbit(y[3]) and y[4] == 0 and np.signbit(y[4])  # odd: sign of zero kept
    c = core().vmath("erfc", np.array([inf, -inf, nan, 0.0, 11.0], np.float32))
    np.testing.assert_array_equal(c[[0, 1, 3, 4]], [0.0, 2.0, 1.0, 0.0])
    assert np.isnan(c[2])


@pytest.mark.parametrize("name", ["tanh", "erf"])
def test_vmath_odd_symmetry_exact(isa, name, rng):
    x = rng.standard_normal(10_000).astype(np.float32) * 3
    np.testing.assert_array_equal(core().vmath(name, -x), -core().vmath(name, x))


def test_vmath_is_elementwise_whatever_the_blocking(isa, threads, rng):
    # a length that is not a multiple of any block or vector width, 1 vs 2 threads
    x = (rng.standard_normal(300_001) * 10).astype(np.float32)
    threads(1)
    one = core().vmath("exp", x)
    threads(2)
    two = core().vmath("exp", x)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(core().vmath("exp", x[:37]), one[:37])  # tail-only path


def test_vmath_exp_same_bits_on_avx2_and_avx512(rng):
    # vmath.h: both take n from the same shifter, the same polynomial, and round p·2^n once
    # (AVX-512 scalef, AVX2 an exponent add or two exact power-of-two factors), so they
    # agree bit for bit, subnormal results included; vexp_le0 (exp_le0) likewise.
    if not {"avx2", "avx512"} <= set(tx.supported_isas()):
        pytest.skip("needs the AVX2 and AVX-512 variants")
    x = np.concatenate([bit_sweep(65537), edges("exp"),
                        rng.uniform(-104, 89, 100_000).astype(np.float32)])
    before = tx.get_isa()
    try:
        with tx.use_backend("cpp"):
            tx.set_isa("avx2")
            y2 = [core().vmath(f, x) for f in ("exp", "exp_le0")]
            tx.set_isa("avx512")
            y512 = [core().vmath(f, x) for f in ("exp", "exp_le0")]
    finally:
        tx.set_isa(before)
    np.testing.assert_array_equal(y2[0], y512[0])
    np.testing.assert_array_equal(y2[1], y512[1])


def test_vmath_exp_le0_gives_exp_bits_for_nonpositive_arguments(isa, rng):
    # vexp_le0, the kernels' exp (arguments <= 0), skips vexp's upper clamp and on AVX2
    # applies 2^n by an exponent add where every lane of a vector gives a normal result
    # (x >= -86.5). It must give vexp's bits whichever lanes leave that range: shuffled,
    # so fast and slow lanes share vectors, plus long runs of all-fast vectors.
    sweep_neg = -np.abs(np.concatenate([bit_sweep(4099), edges("exp")]))
    x = np.concatenate([sweep_neg, rng.uniform(-110, 0, 100_000).astype(np.float32),
                        np.array([np.nan, -np.inf, -0.0, 0.0], np.float32)])
    x = np.concatenate([rng.permutation(x), rng.uniform(-86.5, 0, 10_000).astype(np.float32)])
    np.testing.assert_array_equal(core().vmath("exp_le0", x), core().vmath("exp", x))
    assert core().vmath("exp_le0", np.array([3.0], np.float32))[0] == 1.0  # the hook clamps x at 0


def test_vmath_bad_input(isa):
    with pytest.raises(ValueError, match="unknown function 'sin'"):
        core().vmath("sin", np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="'x' must be float32"):
        core().vmath("exp", np.zeros(3))
    with pytest.raises(ValueError, match="C-contiguous"):
        core().vmath("exp", np.zeros((4, 4), np.float32)[:, :2])
    assert core().vmath("exp", np.zeros((0, 3), np.float32)).shape == (0, 3)
    assert core().vmath("exp", np.zeros((2, 3), np.float32)).shape == (2, 3)
