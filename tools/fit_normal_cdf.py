"""Print the tables of cpp/kernels/vmath.h's vnormal_cdf_left (the exact GELU's Φ).

    python tools/fit_normal_cdf.py      # needs mpmath (a development tool, not a dependency)

For |x| <= 9.5, cut into 8 intervals by j = round(|x|·C), C = 0.78125, r = |x|·C − j:
- kPhiPoly: ln Φ(−|x|) − N_j·ln 2 as a degree-5 polynomial in r per interval (N_j the
  integer nearest log2 Φ(−j/C)), so Φ(−|x|) = exp(P_j(r))·2^N_j. The error of P_j is
  absolute in ln units, i.e. relative in Φ.
- kMillsPoly: R(|x|) = φ(x)/Φ(−|x|) (the inverse Mills ratio: smooth, 0.80 at 0, ~|x| for
  large |x|), for GELU's derivative Φ(x) + x·φ(x) without a second exp. Relative error.
Each is a weighted least-squares fit at Chebyshev nodes against mpmath (40 digits); the
coefficients are rounded to float32 one at a time, lowest power first, refitting the
higher ones each time. The maximum error of the float32 polynomials in exact arithmetic
is printed for each interval.
"""
import mpmath as mp
import numpy as np

mp.mp.dps = 40
C = 0.78125
XMAX = 9.5
DEGREE = 5


def phi_left(xabs):  # Φ(−|x|) = 0.5·erfc(|x|/√2)
    return mp.erfc(mp.mpf(xabs) / mp.sqrt(2)) / 2


def mills(xabs):  # φ(x)/Φ(−|x|)
    xabs = mp.mpf(xabs)
    return mp.exp(-xabs * xabs / 2) / mp.sqrt(2 * mp.pi) / phi_left(xabs)


def fit(f, lo, hi, relative):
    m = 8 * DEGREE + 16
    k = np.arange(m)
    nodes = 0.5 * (lo + hi) + 0.5 * (hi - lo) * np.cos(np.pi * (k + 0.5) / m)
    vals = np.array([f(r) for r in nodes])
    w = 1.0 / np.abs(vals) if relative else np.ones_like(vals)
    coef, resid = [], vals.copy()
    for i in range(DEGREE + 1):
        basis = np.stack([nodes**p for p in range(i, DEGREE + 1)], axis=1)
        c = np.linalg.lstsq(basis * w[:, None], resid * w, rcond=None)[0]
        coef.append(float(np.float32(c[0])))
        resid = resid - coef[-1] * nodes**i
    rr = np.linspace(lo, hi, 2001)
    exact = np.array([f(r) for r in rr])
    err = np.abs(np.polynomial.polynomial.polyval(rr, coef) - exact)
    return coef, float((err / np.abs(exact) if relative else err).max())


def table(name, rows, comment):
    print(f"alignas(32) static const float {name}[kPhiLen][8] = {{  // {comment}")
    for p in range(DEGREE, -1, -1):
        print("    {" + ", ".join(f"{np.float32(c[p])!r}f".replace("np.float32(", "").replace(")", "") for c in rows) + "},")
    print("};")


def main():
    phi_rows, mills_rows, n, e_phi, e_mills = [], [], [], [], []
    for j in range(8):
        lo, hi = (0.0 if j == 0 else -0.5), min(0.5, XMAX * C - j)
        n_j = int(mp.nint(mp.log(phi_left(j / C), 2)))
        c, e = fit(lambda r: float(mp.log(phi_left((j + mp.mpf(r)) / C)) - n_j * mp.log(2)), lo, hi, False)
        phi_rows.append(c), e_phi.append(e), n.append(n_j)
        c, e = fit(lambda r: float(mills((j + mp.mpf(r)) / C)), lo, hi, True)
        mills_rows.append(c), e_mills.append(e)
    print("// ln Φ(−|x|) − N_j·ln 2, max abs error per interval: " + " ".join(f"{e:.1e}" for e in e_phi))
    print("// φ(x)/Φ(−|x|), max rel error per interval: " + " ".join(f"{e:.1e}" for e in e_mills))
    table("kPhiPoly", phi_rows, "c5 .. c0; column j = interval")
    table("kMillsPoly", mills_rows, "c5 .. c0; column j = interval")
    print("alignas(32) static const float kPhiN[8] = {" + ", ".join(str(v) for v in n) + "};  // N_j")


if __name__ == "__main__":
    main()
