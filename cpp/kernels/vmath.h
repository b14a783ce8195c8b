// Vectorisable float math for kernel files. Scalar forms: tx_exp (for `omp simd` loops,
// e.g. cross entropy) and the helper tx_select; vector forms on vec.h's V, what the
// element-wise kernels call: vexp (vexp_le0 for arguments known to be <= 0), vtanh,
// verf, verfc, vrecip, vnormal_cdf_left (the exact GELU's Φ for |x| <= 9.5); plus
// streaming stores for large outputs.
//
// Why not expf/tanhf/erff: libm calls do not vectorise (no vector libm is linked), and
// they cost 10-20 ns each. These are branch-free: range reduction + polynomial, selects
// instead of ifs. The scalar form uses bit tricks through memcpy so that GCC turns a loop
// over it into AVX-512 / AVX2 / SSE2 code under each variant's flags; in such loops write
// selects as tx_select(c, a, b), not `c ? a : b` on floats: GCC 12 does not if-convert the
// latter for SSE2/AVX2 (-ftrapping-math) and leaves the loop scalar. The vector forms are
// written on V so that each ISA can use its own instructions where GCC would not:
// AVX-512 applies exp's 2^n with one scalef and replaces divisions by rcp14 + one Newton
// step (a vdivps zmm issues only every ~10-16 cycles on recent Intel cores: about what
// the whole rest of a GELU vector costs). GELU / softmax measured 1.3-1.6x faster
// (AVX-512, 1 thread, data in L2, 2026-11-22) than as `omp simd` loops over scalar forms
// with a true division. The portable V evaluates exp per lane with tx_exp only under
// compilers without GCC vector extensions.
// All helpers are `static inline` = internal linkage: each ISA variant keeps its own copy
// (see tx/dispatch.h).
//
// Special values (IEEE): exp(-inf) = 0, exp(+inf) = +inf, NaN -> NaN, results below half
// the smallest subnormal round to 0, above FLT_MAX to +inf, subnormal results are
// correctly scaled (one rounding). tanh(±inf) = ±1, erf(±inf) = ±1, erfc(+inf) = 0,
// erfc(-inf) = 2, NaN -> NaN; tanh and erf are exactly odd (sign of ±0 kept).
//
// Accuracy, MEASURED over float32 inputs (AVX-512 on all 2^32 bit patterns, the scalar
// variant on every 2nd, AVX2 on every 7th), error = |f(x) − ref| / ulp(ref) with ref =
// the float64 libm value and ulp the spacing of float32 at ref:
//   exp : max 0.99 ulp  (AVX-512 = AVX2 0.90, bit-identical; scalar (no FMA) 0.98)
//   tanh: max 1.22 ulp  (AVX-512 1.13, AVX2 1.13, scalar 1.22)
//   erf : max 1.43 ulp  (AVX-512 1.39, AVX2 1.36, scalar 1.42; worst just above |x| = 1)
//   erfc: max 5.2 ulp for x < 1 (1 − erf cancels as x -> 1; AVX-512 4.0, scalar 5.13); for
//         x >= 1 the relative error is <= (3 + 1.2·x²)·2^-23 (max ratio 0.86 to this
//         bound; ~4e-7 at x = 1, ~1.5e-5 at x = 10 where erfc ~ 2e-45 underflows anyway)
// tests/test_vmath.py holds these bounds under every ISA on a dense sweep + edge values
// (np.exp / np.tanh / math.erf / math.erfc in float64). The variants differ in FMA
// contraction (AVX2/AVX-512 fuse a*b+c) and in vrecip (a true division except on
// AVX-512), hence the slightly different maxima.
#pragma once
#include <cstdint>
#include <cstring>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

static inline float tx_bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
static inline uint32_t tx_float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
// c ? a : b as bit operations. A plain `?:` between floats is not if-converted by GCC 12
// for SSE2/AVX2 under the default -ftrapping-math, which would leave the loop scalar.
static inline float tx_select(bool c, float a, float b) {
  uint32_t m = 0u - (uint32_t)c;
  return tx_bits_to_float((tx_float_to_bits(a) & m) | (tx_float_to_bits(b) & ~m));
}
// exp(x) = 2^n · exp(r), n = round(x/ln2), r = x − n·ln2 (Cody–Waite: ln2 split in a
// 9-bit-exact high part and a low part, so n·ln2_hi is exact), exp(r) on |r| <= ln2/2 by
// a degree-6 polynomial 1 + r + c2·r² + ... + c6·r⁶ in Horner form (6 multiply-adds):
// a relative-error minimax fit with c0 = c1 = 1 exact and each c_k rounded to float32
// before refitting the higher ones, max relative error 3.1e-9 = 0.05·2^-24 in exact
// arithmetic on |r| <= 0.3467. 2^n is applied as two exact power-of-two
// factors 2^(n/2)·2^(n−n/2) so that subnormal and overflowing results get one correct
// rounding and ±inf fall out without a branch.
static const int kExpPolyLen = 7;
static const float kExpPoly[kExpPolyLen] = {1.3820744e-3f, 8.368676e-3f, 4.1668266e-2f, 0.16666521f,
                                            0.49999994f, 1.0f, 1.0f};  // c6 .. c0
const float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f, kLog2e = 1.44269504088896341f;
const float kLn2 = 0.693147182f;  // ln 2 rounded to float32 (one-step reductions of small n)
const float kExpShifter = 12582912.0f;  // 1.5·2^23: x + it rounds x to an integer in its low bits
static inline float tx_exp(float x) {
  // Clamp (NaN compares false and passes through): below -104 the result is < 2^-150 -> 0,
  // above 89 it is > 2^128 -> inf; the clamp keeps n within [-150, 129].
  x = tx_select(x < -104.0f, -104.0f, x);
  x = tx_select(x > 89.0f, 89.0f, x);
  // n = round-to-nearest(x·log2 e) with the 1.5·2^23 shifter: its low mantissa bits hold n.
  const float shifter = kExpShifter;
  float t = x * kLog2e + shifter;
  float n = t - shifter;
  float r = x - n * kLn2Hi;  // exact product
  r = r - n * kLn2Lo;
#if defined(__FP_FAST_FMAF)  // Horner to the end, every step one fused multiply-add
  float p = kExpPoly[0];
  for (int k = 1; k < kExpPolyLen; ++k) p = p * r + kExpPoly[k];
#else  // separate roundings: (r + r²·Q(r)) + 1 keeps them off the leading terms (0.98 vs 1.15 ulp)
  float q = kExpPoly[0];
  for (int k = 1; k < kExpPolyLen - 2; ++k) q = q * r + kExpPoly[k];
  float p = (q * (r * r) + r) + 1.0f;
#endif
  int32_t ni = (int32_t)(tx_float_to_bits(t) - tx_float_to_bits(shifter));  // n, exact
  int32_t n1 = ni >> 1;                                                       // floor(n/2)
  int32_t n2 = ni - n1;
  // 2^k as a float: biased exponent k+127 in bits 23..30 (k in [-75, 65] is normal).
  float s1 = tx_bits_to_float((uint32_t)(n1 + 127) << 23);
  float s2 = tx_bits_to_float((uint32_t)(n2 + 127) << 23);
  return (p * s1) * s2;  // p·s1 is exact (normal), the second product rounds once
}

// tanh(x): |x| < 0.8 by an odd polynomial x + x³·P(x²), P of degree 5 in x² (a relative-
// error minimax fit on [0, 0.8], coefficients rounded to float32 one at a time: 3.8e-9 =
// 0.06·2^-24 in exact arithmetic; no cancellation near 0); otherwise tanh|x| =
// 1 − 2e/(1 + e), e = exp(−2|x|) in (0, 0.21] (1 + e never overflows; saturates to 1 as
// e underflows). The threshold is 0.8, not Cephes' 0.625, because the second form
// amplifies exp's error by 2e/((1 + e)²·tanh): 0.62 at 0.625 (1.36 ulp overall) but 0.42
// at 0.8. Both are computed and selected: vtanh below.
static const int kTanhLen = 6;
static const float kTanh[kTanhLen] = {0.0015870444f, -0.0074141766f, 0.021306528f,
                                      -0.053853597f, 0.13332242f, -0.333333f};  // P, highest first

// erf(x): for |x| < 1, erf(x) = x + x·P(x²) with P a degree-6 least-squares (Chebyshev-node)
// fit of erf(√u)/√u − 1 on u in [0, 1] (relative error 1.2e-9); for |x| >= 1,
// erf|x| = 1 − erfc|x| with erfc(z) = t·exp(−z² − 1.26551223 + t·Q(t)), t = 1/(1 + z/2)
// (Numerical Recipes' Chebyshev fit: relative error 1.2e-7 in exact arithmetic, ~4e-7
// evaluated in float32; erfc <= 0.16 there, so erf = 1 − erfc loses < 1 ulp to it).
// Saturates to exactly ±1 for large |x| (exp underflows to 0). The code is verf / verfc
// below (vector forms only: the kernels call them on vec.h's V).
static const int kErfSmallLen = 7;
static const float kErfSmall[kErfSmallLen] = {  // P(u), highest power first
    7.84725926e-5f, -8.00818903e-4f, 5.18809911e-3f, -0.0268536918f, 0.112835824f, -0.376126260f,
    0.128379166f};  // the last is 2/√π − 1: the leading term x·1 is exact, so the
                    // polynomial's rounding shrinks 8× relative to the result
static const int kErfcBigLen = 10;
static const float kErfcBig[kErfcBigLen] = {  // −1.26551223 + t·Q(t), highest power first
    0.17087277f, -0.82215223f, 1.48851587f, -1.13520398f, 0.27886807f, -0.18628806f,
    0.09678418f, 0.37409196f, 1.00002368f, -1.26551223f};

// Φ(−|x|) = 0.5·erfc(|x|/√2), the standard normal CDF's left tail, for |x| <= 9.5 (the
// exact GELU's Φ; see vnormal_cdf_left): ln Φ(−|x|) is smooth, so it is cut into 8
// intervals of |x| by j = round(|x|·kPhiScale) (width 1.28) and fitted on each by a
// degree-5 polynomial P_j(r) in r = |x|·kPhiScale − j, offset by N_j·ln 2 (N_j an
// integer) so that |P_j| stays small: Φ(−|x|) = exp(P_j(r))·2^N_j. One exp and no
// division, where erfc's tail fit (kErfcBig) needs a division, a degree-9 polynomial
// and the exp. GELU's derivative also needs φ(x) = exp(−x²/2)/√(2π): kMillsPoly fits
// R(|x|) = φ(x)/Φ(−|x|) (the inverse Mills ratio, 0.80 at 0 and ~|x| beyond) the same
// way, so φ costs a polynomial instead of a second exp. Weighted least squares at
// Chebyshev nodes against mpmath, each coefficient rounded to float32 before refitting the
// higher ones; tools/fit_normal_cdf.py prints these tables. Max error of the float32
// polynomials in exact arithmetic: P 5.9e-8 (absolute in ln units: relative in Φ),
// R 7.1e-8 relative.
static const float kPhiScale = 0.78125f;
static const int kPhiLen = 6;
alignas(32) static const float kPhiPoly[kPhiLen][8] = {  // c5 .. c0; column j = interval
    {-0.0008833177f, -0.0012648957f, -0.00055291055f, -0.00019816509f, -7.604353e-05f, -2.3941504e-05f, -1.1799991e-05f, 1.3387136e-05f},
    {0.0133364005f, 0.007426528f, 0.0029492101f, 0.0011947321f, 0.00053485384f, 0.0002640324f, 0.00014310403f, 8.647284e-05f},
    {-0.076322325f, -0.033777468f, -0.0144278705f, -0.0068039345f, -0.003579223f, -0.002068627f, -0.0012849917f, -0.00085227395f},
    {-0.5215053f, -0.68052566f, -0.7483838f, -0.778523f, -0.7934505f, -0.80165046f, -0.80655354f, -0.80968887f},
    {-1.0212928f, -2.2447286f, -3.6831777f, -5.2138367f, -6.7874007f, -8.38325f, -9.991842f, -11.608301f},
    {3.814226e-09f, -0.22042152f, 0.29252315f, 0.007866068f, 0.24803863f, 0.28868994f, 0.11287003f, -0.28947374f},
};
alignas(32) static const float kMillsPoly[kPhiLen][8] = {  // c5 .. c0; column j = interval
    {0.0021879366f, -0.000493349f, -0.000425198f, -0.0001604843f, -5.2486932e-05f, -1.6678254e-05f, -3.803279e-06f, 3.957348e-05f},
    {0.00069561775f, 0.004941492f, 0.0021677704f, 0.00079290976f, 0.0003252223f, 0.00014379824f, 7.463529e-05f, 6.231373e-05f},
    {-0.040426005f, -0.023084277f, -0.009110219f, -0.0036931178f, -0.0016577751f, -0.0008238608f, -0.00044684738f, -0.00026781665f},
    {0.17863491f, 0.07916585f, 0.03381352f, 0.015943538f, 0.008381735f, 0.004836968f, 0.0030046715f, 0.0019757624f},
    {0.81487143f, 1.0633155f, 1.1693448f, 1.2164403f, 1.2397656f, 1.2525791f, 1.26024f, 1.2651383f},
    {0.7978846f, 1.7536942f, 2.8774827f, 4.07331f, 5.302657f, 6.5494146f, 7.806127f, 9.068986f},
};
alignas(32) static const float kPhiN[8] = {-1, -3, -8, -14, -23, -34, -47, -62};  // N_j

// ---- streaming (non-temporal) stores for large outputs ----
// A plain store to memory that is not cached first reads the line (read-for-ownership),
// so a streaming kernel moves 3 bytes per output byte instead of 2. Kernels whose output
// is too big to stay in cache write it with tx_stream_store / tx_stream_zero, or with
// TxStream (below, after vec.h) vector by vector from registers;
// tx_stream_fence() must run once after a thread's last stream store (before the data is
// read elsewhere).
// The scalar variant never streams (portable code, no intrinsics).
// Measured through the Python API (fresh output pages), 2026-11-22: layer norm
// is 5-20% faster with streaming stores, GELU and softmax 1.1-1.7x slower, so only layer
// norm uses them. (Zen 3, session 15: softmax streamed from an L1 row buffer, 0.79-1.01x
// even into preallocated outputs; docs/design.md.)
#if defined(__AVX2__) || defined(__AVX512F__)
static const int64_t kTxStreamBytes = (int64_t)8 << 20;  // outputs above this bypass the cache
#else
static const int64_t kTxStreamBytes = INT64_MAX;
#endif
// An output 1..127 bytes past an input modulo 4 KiB defeats streaming stores: the loads of
// the next vectors match a pending streaming store in their low 12 address bits ("4K
// aliasing") and wait for it. Measured on Zen 3 (layer norm 8192×768 with out=, 1 thread):
// 1.5-2x slower at 16-64 bytes, not at 0 (NumPy's large arrays all start 16 bytes past a
// page) nor at 128 and beyond; plain stores show no such dependence. So a kernel streams
// only when no input sits in that window below its output.
// (tx_past_mod_4k: out sits 1..window−1 bytes past in modulo 4 KiB; rows.h uses it too.)
static inline bool tx_past_mod_4k(const float* out, const float* in, uintptr_t window) {
  const uintptr_t d = ((uintptr_t)out - (uintptr_t)in) & 4095;
  return d != 0 && d < window;
}
static inline bool tx_stream_aliases(const float* out, const float* in) { return tx_past_mod_4k(out, in, 128); }

// dst[0:n] = src[0:n] (src nullptr: zeros) with non-temporal stores where dst is
// vector-aligned, plain stores at the two ends. (A copy shifts its loads, not its
// stores; see TxStream for outputs computed in registers.) The caller fences.
static inline void tx_stream_store(float* dst, const float* src, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i < n && ((uintptr_t)(dst + i) & 63) != 0; ++i) dst[i] = src ? src[i] : 0.0f;
  for (; i + 16 <= n; i += 16) _mm512_stream_ps(dst + i, src ? _mm512_loadu_ps(src + i) : _mm512_setzero_ps());
#elif defined(__AVX2__)
  for (; i < n && ((uintptr_t)(dst + i) & 31) != 0; ++i) dst[i] = src ? src[i] : 0.0f;
  for (; i + 8 <= n; i += 8) _mm256_stream_ps(dst + i, src ? _mm256_loadu_ps(src + i) : _mm256_setzero_ps());
#endif
  for (; i < n; ++i) dst[i] = src ? src[i] : 0.0f;
}
static inline void tx_stream_zero(float* dst, int64_t n) { tx_stream_store(dst, nullptr, n); }

static inline void tx_stream_fence() {
#if defined(__AVX2__) || defined(__AVX512F__)
  _mm_sfence();
#endif
}

}  // namespace

// ---- vector forms on vec.h's V: what the kernels' element-wise loops call ----
// (Why on V rather than `omp simd` over scalar forms: see the top of this file.)
#include "vec.h"

namespace tx {
namespace TX_ISA_NS {

// One thread's streaming writer, fed vector by vector from registers: put(p, v) writes
// v to p[0 .. VL). Puts that continue where the last one ended form a run (layer norm:
// a thread's rows, back to back), whose aligned whole vectors go out with non-temporal
// stores and only its two ends with plain (masked) ones. A run starting o floats past a
// vector boundary (NumPy's arrays start 16 bytes past a cache line) streams, at each
// boundary, the last o floats of the previous vector and the first VL − o of this one
// (AVX-512: one two-source permute; AVX2: one 128-bit lane move for o = 4, NumPy's case,
// two permutes and a blend for other offsets). put_n(p, v, k) writes v's first
// k lanes with plain stores and ends the run (a row's tail); finish() writes the last o
// floats of a run. Through an L1 buffer instead (an extra store and load per vector, and
// a burst of streaming stores at the end of each row, which held the fill buffers the
// next row's prefetches needed), layer norm forward 8192×768 ran 5-10% slower (1 thread,
// AVX2 and AVX-512). The per-vector path is kept short: how many loads a streaming loop
// keeps in flight depends on its length, and a first version with three branches per
// vector, used as a copy, ran 15-25% slower than a plain streaming copy loop.
#if defined(__AVX2__) || defined(__AVX512F__)
struct TxStream {
  float* end = nullptr;  // where the run's next vector goes (nullptr: no run)
  int64_t o = 0;         // the run's offset past a vector boundary, in floats
  V prev = vzero();      // the last vector put: its last o floats are not yet written
#if defined(__AVX512F__)
  __m512i rot = _mm512_setzero_si512();  // lane indices i + 16 − o: (i − o) mod VL in the low 4 bits
#else
  __m256i rot = _mm256_setzero_si256();
  VMask low = vlt(vzero(), vzero());  // lanes i < o
#endif

  void put(float* p, V v) {
    if (__builtin_expect(p != end, 0)) return begin(p, v);
    stream_shifted(p - o, v);
    prev = v;
    end = p + VL;
  }
  void put_n(float* p, V v, int k) {
    finish();
    vstore_n(p, v, k);
  }
  void finish() {
    if (end) vstore_n(end - o, rotate(prev), (int)o);
    end = nullptr;
  }

 private:
  void begin(float* p, V v) {  // a new run: v's floats up to the first boundary, plainly
    finish();
    o = (int64_t)(((uintptr_t)p / sizeof(float)) % VL);
#if defined(__AVX512F__)
    const __m512i i = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    rot = _mm512_add_epi32(i, _mm512_set1_epi32(16 - (int)o));
#else
    const __m256i i = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    rot = _mm256_and_si256(_mm256_sub_epi32(i, _mm256_set1_epi32((int)o)), _mm256_set1_epi32(VL - 1));
    low = _mm256_castsi256_ps(lane_mask((int)o));
#endif
    vstore_n(p, v, VL - (int)o);
    prev = v;
    end = p + VL;
  }
#if defined(__AVX512F__)
  V rotate(V v) const { return _mm512_permutexvar_ps(rot, v); }  // lane i = v[(i − o) mod VL]
  // The aligned vector at a: prev's last o floats, then v's first VL − o (one two-source
  // permute: index k < 16 is prev[k], 16 + k is v[k]).
  void stream_shifted(float* a, V v) const { _mm512_stream_ps(a, _mm512_permutex2var_ps(prev, rot, v)); }
#else
  V rotate(V v) const { return _mm256_permutevar8x32_ps(v, rot); }
  void stream_shifted(float* a, V v) const {
    if (o == 4) {  // NumPy's arrays (16 bytes past a line): one 128-bit lane move
      _mm256_stream_ps(a, _mm256_permute2f128_ps(prev, v, 0x21));
    } else if (o == 0) {
      _mm256_stream_ps(a, v);
    } else {
      _mm256_stream_ps(a, vselect(low, rotate(prev), rotate(v)));
    }
  }
#endif
};
#else  // the portable variant never streams (kTxStreamBytes): plain stores
struct TxStream {
  void put(float* p, V v) { vstore(p, v); }
  void put_n(float* p, V v, int k) { vstore_n(p, v, k); }
  void finish() {}
};
#endif

// c[0]·x^(len−1) + ... + c[len−1] (Horner, one multiply-add per coefficient).
TX_INLINE V vpoly(V x, const float* c, int len) {
  V p = vset1(c[0]);
  for (int k = 1; k < len; ++k) p = vfma(p, x, vset1(c[k]));
  return p;
}

// exp(x) for x <= 89 or NaN. kRange is what the caller knows of x: only that (vexp),
// x <= 0 or NaN (vexp_le0: every kernel's argument; no upper clamp, half the AVX2 range
// test), or −86.5 <= x <= 88 in every lane, so that the result is a normal float
// (vexp_normal: AVX2 skips its range test).
// tx_exp's algorithm and operation order, so every variant's vexp gives the same bits as
// its tx_exp, and AVX2 the same as AVX-512.
enum ExpRange { kExpUpTo89, kExpLe0, kExpNormal };
#if defined(__AVX512F__) || defined(__GNUC__)
// exp's reduction and polynomial: x = n·ln2 + r, returns p = exp(r) and t, the shifter
// sum whose low mantissa bits hold n.
TX_INLINE V vexp_reduced(V x, V& t) {
  const V shifter = vset1(kExpShifter);
  t = vfma(x, vset1(kLog2e), shifter);
  const V n = vsub(t, shifter);
  V r = vfnma(n, vset1(kLn2Hi), x);
  r = vfnma(n, vset1(kLn2Lo), r);
#if defined(__FP_FAST_FMAF)  // as tx_exp
  return vpoly(r, kExpPoly, kExpPolyLen);
#else
  return vadd(vfma(vpoly(r, kExpPoly, kExpPolyLen - 2), vmul(r, r), r), vset1(1.0f));
#endif
}

template <ExpRange kRange>
TX_INLINE V vexp_range(V x) {
  V t;
#if defined(__AVX2__) && !defined(__AVX512F__)
  // Where every lane's result is a normal float (−86.5 <= x <= 88: −125 <= n <= 127,
  // p in [0.70, 1.42]), p·2^n is exact and is p with n added to its exponent field:
  // t's low bits hold n (the 1.5·2^23 shifter), so t << 23 is n << 23 (the shifter's
  // bits shift out). 2 integer ops instead of the clamp and 9 below: AVX2 has no scalef,
  // and these share the FMA ports. Same bits as the general path, which NaN, −inf,
  // subnormal and overflowing results take (the comparisons are unordered). The test and
  // its branch cost ~3 instructions and split the code, which keeps GCC from
  // interleaving neighbouring vectors' chains: the GELU kernels test once per group of
  // vectors instead and call vexp_normal. Interleaved A/B with AVX2 (1 and 2
  // threads): softmax 8192×768 +12-28%, GELU tanh forward +5-10% and backward +6-17%
  // (GELU is bound by its chains' latency more than by instruction count; a test per
  // vector measured −3% to 0%).
  typedef int32_t VI __attribute__((vector_size(sizeof(V))));
  __m256 slow = _mm256_setzero_ps();
  if (kRange != kExpNormal) slow = _mm256_cmp_ps(x, vset1(-86.5f), _CMP_NGE_UQ);
  if (kRange == kExpUpTo89) slow = _mm256_or_ps(slow, _mm256_cmp_ps(x, vset1(88.0f), _CMP_NLE_UQ));
  if (kRange == kExpNormal || __builtin_expect(_mm256_movemask_ps(slow) == 0, 1)) {
    const V p = vexp_reduced(x, t);
    return (V)((VI)p + ((VI)t << 23));
  }
#endif
  x = vmax(vset1(-104.0f), x);  // as tx_exp; NaN passes (vmax returns x)
  const V p = vexp_reduced(x, t);
#if defined(__AVX512F__)
  return _mm512_scalef_ps(p, vsub(t, vset1(kExpShifter)));  // p·2^n rounded once: subnormals, 0 and inf included
#else
  // 2^n as two exact power-of-two factors, as tx_exp (GCC/Clang vector extensions on
  // __m256 or the portable V: integer lanes by bit casts).
  typedef int32_t VI __attribute__((vector_size(sizeof(V))));
  const VI ni = (VI)t - (VI)vset1(kExpShifter);
  const VI n1 = ni >> 1, n2 = ni - n1;
  return vmul(vmul(p, (V)((n1 + 127) << 23)), (V)((n2 + 127) << 23));
#endif
}
#else
template <ExpRange kRange>
TX_INLINE V vexp_range(V x) {  // other compilers: tx_exp per lane
  float b[VL];
  vstore(b, x);
  for (int l = 0; l < VL; ++l) b[l] = tx_exp(b[l]);
  return vload(b);
}
#endif
TX_INLINE V vexp(V x) { return vexp_range<kExpUpTo89>(vmin(vset1(89.0f), x)); }  // NaN passes
TX_INLINE V vexp_le0(V x) { return vexp_range<kExpLe0>(x); }                       // x <= 0 or NaN
TX_INLINE V vexp_normal(V x) { return vexp_range<kExpNormal>(x); }                 // −86.5 <= x <= 88

// Φ(−|x|) = 0.5·erfc(|x|/√2) for |x| <= 9.5 (the tables above): j and r from one
// shifter sum (its low mantissa bits hold j; vlookup8 picks column j of each table),
// then exp(P_j(r)) = 2^n·exp(ρ), n = round(P_j·log2 e), ρ = P_j − n·ln 2, with N_j added
// to n in the exponent field (the result, >= Φ(−9.5) ~ 2^-70, is normal: exact). ρ in
// one step with ln 2 rounded to float32: |n| <= 9 here, so n·(ln 2 − float(ln 2)) < 2e-8
// (vexp's two-step reduction serves |n| up to 150). Both polynomials by Horner: Estrin's
// form (a shorter chain, more live registers) measured −10% with AVX2 and ±3% with AVX-512.
// Relative error: the fit's 5.9e-8, plus P's float32 roundings (|P| < 7: a few 1e-7 in
// the far intervals), plus exp's ~1 ulp; and r's rounding (3e-8) times P's slope (<= 12):
// it grows with |x|, as the condition number x² of Φ(−|x|) itself. Without FMA hardware
// (the portable build), r is |x|·kPhiScale rounded, minus j.
#if defined(__AVX512F__) || defined(__GNUC__)
struct PhiInterval {  // j and r of |x| <= 9.5 (kPhiPoly)
  V tj, r;            // tj's low mantissa bits hold j
  explicit PhiInterval(V ax) {
    const V shifter = vset1(kExpShifter), scale = vset1(kPhiScale);
    tj = vfma(ax, scale, shifter);           // j = round(|x|·kPhiScale) in 0..7
    r = vfma(ax, scale, vsub(shifter, tj));  // |x|·kPhiScale − j (shifter − tj = −j exactly)
  }
  V poly(const float (&table)[kPhiLen][8]) const {  // interval j's polynomial at r
    V p = vlookup8(table[0], tj);
    for (int k = 1; k < kPhiLen; ++k) p = vfma(p, r, vlookup8(table[k], tj));
    return p;
  }
};
TX_INLINE V vnormal_cdf_left(const PhiInterval& iv) {
  typedef int32_t VI __attribute__((vector_size(sizeof(V))));
  const V p = iv.poly(kPhiPoly), shifter = vset1(kExpShifter);
  const V t = vfma(p, vset1(kLog2e), shifter);  // low bits: n
  const V rho = vfnma(vsub(t, shifter), vset1(kLn2), p);
  const V er = vpoly(rho, kExpPoly, kExpPolyLen);  // exp(ρ) in [0.70, 1.42]
  const V tn = vadd(t, vlookup8(kPhiN, iv.tj));    // low bits n + N_j (exact: integers near 1.5·2^23)
  return (V)((VI)er + ((VI)tn << 23));
}
#else  // other compilers: never called (activation.cpp's group_normal is false there)
struct PhiInterval {
  V ax;
  explicit PhiInterval(V a) : ax(a) {}
  V poly(const float (&)[kPhiLen][8]) const { return ax; }
};
TX_INLINE V vnormal_cdf_left(const PhiInterval& iv) { return iv.ax; }
#endif

// 1/d for 1 <= d <= 9 (the callers' range; any finite d with a normal reciprocal works).
// AVX-512: rcp14 (relative error < 2^-14) and one Newton step r + r·(1 − d·r) (error
// squared, ~2^-28, then one rounding: max 0.53 ulp over every float d in [1, 10));
// elsewhere a true division (AVX2's vdivps ymm is cheap enough, its rcpps too coarse).
TX_INLINE V vrecip(V d) {
#if defined(__AVX512F__)
  const V r = _mm512_rcp14_ps(d);
  return vfma(r, vfnma(d, r, vset1(1.0f)), r);
#else
  return vdiv(vset1(1.0f), d);
#endif
}

// erf(a) for |a| < 1 (odd in a), u = a².
TX_INLINE V verf_small(V a, V u) { return vfma(a, vpoly(u, kErfSmall, kErfSmallLen), a); }

// erfc(a) for a >= 0, u = a² (relative error: see verfc for a >= 1; < 4·2^-23 measured
// for every float a < 1, where verfc prefers 1 − erf for ulps). a is clamped to 16 for
// t = 1/(1 + a/2) (keeps vrecip in range; erfc(16) ~ 1e-113 underflows to 0 anyway
// through exp(−u)); a = inf: exp(−inf) = 0 -> 0; NaN passes the clamp.
TX_INLINE V verfc_big(V a, V u) {
  const V t = vrecip(vfma(vmin(vset1(16.0f), a), vset1(0.5f), vset1(1.0f)));
  const V arg = vsub(vpoly(t, kErfcBig, kErfcBigLen), u);  // < 0
  return vmul(t, vexp_le0(arg));
}

TX_INLINE V vtanh(V x) {
  const V a = vabs(x), z = vmul(x, x), one = vset1(1.0f);
  const V small = vfma(vmul(vpoly(z, kTanh, kTanhLen), z), a, a);
  const V e = vexp_le0(vmul(vset1(-2.0f), a));
  const V big = vfnma(vadd(e, e), vrecip(vadd(one, e)), one);
  const V m = vselect(vlt(a, vset1(0.8f)), small, big);  // NaN: big is NaN
  return vxor(m, vxor(x, a));                              // sign of x (see verf)
}

TX_INLINE V verf(V x) {
  const V a = vabs(x), u = vmul(x, x), one = vset1(1.0f);
  const V m = vselect(vlt(a, one), verf_small(a, u), vsub(one, verfc_big(a, u)));
  return vxor(m, vxor(x, a));  // sign of x (x ^ |x| is its sign bit): odd, ±0 kept;
}                              // NaN: a < 1 is false and the erfc branch is NaN

// erfc(x) = 1 − erf(x) without cancellation in the right tail: x >= 1 uses the erfc fit
// directly (relative error <= (3 + 1.2·x²)·2^-23: the float32 Horner sum and the rounding
// of x² inside exp), −1 < x < 1 is 1 − erf(x), x <= −1 is 2 − erfc|x|. (The exact GELU
// calls verfc_big directly, see activation.cpp.)
TX_INLINE V verfc(V x) {
  const V a = vabs(x), u = vmul(x, x), one = vset1(1.0f);
  const V big = verfc_big(a, u);
  const V tail = vselect(vlt(x, vzero()), vsub(vset1(2.0f), big), big);
  return vselect(vlt(a, one), vsub(one, verf_small(x, u)), tail);
}

}  // namespace TX_ISA_NS
}  // namespace tx
