// Vectorisable float math for kernel files: tx_exp, tx_tanh, tx_erf, tx_erfc (plus the
// helpers tx_select / tx_abs and streaming stores for large outputs).
//
// Why not expf/tanhf/erff: libm calls do not vectorise inside `#pragma omp simd` loops
// (no vector libm is linked), and they cost 10-20 ns each. These are branch-free
// (range reduction + polynomial, bit tricks through memcpy, selects instead of ifs), so
// GCC turns a loop over them into AVX-512 / AVX2 / SSE2 code under each variant's flags.
// In such loops write selects as tx_select(c, a, b), not `c ? a : b` on floats: GCC 12
// does not if-convert the latter for SSE2/AVX2 (-ftrapping-math) and leaves the loop scalar.
// All helpers are `static inline` = internal linkage: each ISA variant keeps its own copy
// (see tx/dispatch.h).
//
// Special values (IEEE): tx_exp(-inf) = 0, tx_exp(+inf) = +inf, NaN -> NaN, results below
// half the smallest subnormal round to 0, above FLT_MAX to +inf, subnormal results are
// correctly scaled (one rounding). tx_tanh(±inf) = ±1, tx_erf(±inf) = ±1, tx_erfc(+inf) = 0,
// tx_erfc(-inf) = 2, NaN -> NaN; tanh and erf are exactly odd (sign of ±0 kept).
//
// Accuracy, MEASURED over every float32 input (all 2^32 bit patterns; scalar and AVX-512
// variants exhaustively, AVX2 on every 7th pattern), error = |f(x) − ref| / ulp(ref) with
// ref = the float64 libm value and ulp the spacing of float32 at ref:
//   tx_exp : max 1.01 ulp  (scalar 0.99, AVX-512 1.01)
//   tx_tanh: max 1.33 ulp
//   tx_erf : max 1.56 ulp  (scalar 1.56, AVX-512 1.39; worst just above |x| = 1)
//   tx_erfc: max 5.3 ulp for x < 1 (1 − erf cancels as x -> 1); for x >= 1 the relative
//            error is <= (3 + 1.2·x²)·2^-23 (max ratio 0.97 to this bound; ~4e-7 at x = 1,
//            ~1.5e-5 at x = 10 where erfc ~ 2e-45 underflows anyway)
// tests/test_vmath.py holds these bounds under every ISA on a dense sweep + edge values
// (np.exp / np.tanh / math.erf / math.erfc in float64). The variants differ only in FMA
// contraction (AVX2/AVX-512 fuse a*b+c), hence the slightly different maxima.
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
static inline float tx_abs(float x) { return tx_bits_to_float(tx_float_to_bits(x) & 0x7fffffffu); }
// c ? a : b as bit operations. A plain `?:` between floats is not if-converted by GCC 12
// for SSE2/AVX2 under the default -ftrapping-math, which would leave the loop scalar.
static inline float tx_select(bool c, float a, float b) {
  uint32_t m = 0u - (uint32_t)c;
  return tx_bits_to_float((tx_float_to_bits(a) & m) | (tx_float_to_bits(b) & ~m));
}
// |mag| with the sign of s (mag must be non-negative).
static inline float tx_with_sign(float mag, float s) {
  return tx_bits_to_float(tx_float_to_bits(mag) | (tx_float_to_bits(s) & 0x80000000u));
}

// exp(x) = 2^n · exp(r), n = round(x/ln2), r = x − n·ln2 (Cody–Waite: ln2 split in a
// 9-bit-exact high part and a low part, so n·ln2_hi is exact), exp(r) on |r| <= ln2/2 by
// the Cephes expf polynomial 1 + r + r²·P(r). 2^n is applied as two exact power-of-two
// factors 2^(n/2)·2^(n−n/2) so that subnormal and overflowing results get one correct
// rounding and ±inf fall out without a branch.
static inline float tx_exp(float x) {
  // Clamp (NaN compares false and passes through): below -104 the result is < 2^-150 -> 0,
  // above 89 it is > 2^128 -> inf; the clamp keeps n within [-150, 129].
  x = tx_select(x < -104.0f, -104.0f, x);
  x = tx_select(x > 89.0f, 89.0f, x);
  // n = round-to-nearest(x·log2 e) with the 1.5·2^23 shifter: its low mantissa bits hold n.
  const float shifter = 12582912.0f;
  float t = x * 1.44269504088896341f + shifter;
  float n = t - shifter;
  float r = x - n * 0.693359375f;  // ln2_hi, exact product
  r = r - n * -2.12194440e-4f;     // ln2_lo
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  int32_t ni = (int32_t)(tx_float_to_bits(t) - tx_float_to_bits(shifter));  // n, exact
  int32_t n1 = ni >> 1;                                                       // floor(n/2)
  int32_t n2 = ni - n1;
  // 2^k as a float: biased exponent k+127 in bits 23..30 (k in [-75, 65] is normal).
  float s1 = tx_bits_to_float((uint32_t)(n1 + 127) << 23);
  float s2 = tx_bits_to_float((uint32_t)(n2 + 127) << 23);
  return (p * s1) * s2;  // p·s1 is exact (normal), the second product rounds once
}

// tanh(x): |x| < 0.625 by the Cephes tanhf odd polynomial x + x³·P(x²) (no cancellation
// near 0); otherwise tanh|x| = 1 − 2/(exp(2|x|) + 1), which has lost < 1 bit there and
// saturates to 1 when exp overflows (|x| >= 44.4). Both are computed and selected.
static inline float tx_tanh(float x) {
  float a = tx_abs(x);
  float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  float small = (p * z) * a + a;
  float e = tx_exp(2.0f * a);
  float big = 1.0f - 2.0f / (e + 1.0f);
  float m = tx_select(a < 0.625f, small, big);  // NaN: a < 0.625 is false, big is NaN
  return tx_with_sign(m, x);
}

// erf(x): for |x| < 1, erf(x) = x + x·P(x²) with P a degree-6 least-squares (Chebyshev-node)
// fit of erf(√u)/√u − 1 on u in [0, 1] (relative error 1.2e-9); for |x| >= 1,
// erf|x| = 1 − erfc|x| with erfc(z) = t·exp(−z² − 1.26551223 + t·Q(t)), t = 1/(1 + z/2)
// (Numerical Recipes' Chebyshev fit: relative error 1.2e-7 in exact arithmetic, ~4e-7
// evaluated in float32; erfc <= 0.16 there, so erf = 1 − erfc loses < 1 ulp to it). Saturates to exactly ±1 for large |x| (exp underflows to 0).
static inline float tx_erf_small_(float a, float u) {  // erf(a) for |a| < 1, u = a²
  float p = 7.84725926e-5f;
  p = p * u - 8.00818903e-4f;
  p = p * u + 5.18809911e-3f;
  p = p * u - 0.0268536918f;
  p = p * u + 0.112835824f;
  p = p * u - 0.376126260f;
  p = p * u + 0.128379166f;  // 2/√π − 1: the leading term a·1 is exact, so the
  return a + a * p;          // polynomial's rounding shrinks 8× relative to the result
}
static inline float tx_erfc_big_(float a, float u) {  // erfc(a) for a >= 1 (any a >= 0 ok), u = a²
  float t = 1.0f / (1.0f + 0.5f * a);
  float q = 0.17087277f;
  q = q * t - 0.82215223f;
  q = q * t + 1.48851587f;
  q = q * t - 1.13520398f;
  q = q * t + 0.27886807f;
  q = q * t - 0.18628806f;
  q = q * t + 0.09678418f;
  q = q * t + 0.37409196f;
  q = q * t + 1.00002368f;
  q = q * t - 1.26551223f;
  return t * tx_exp(q - u);  // a = inf: t = 0, exp(-inf) = 0 -> 0
}
static inline float tx_erf(float x) {
  float a = tx_abs(x);
  float u = x * x;
  float m = tx_select(a < 1.0f, tx_erf_small_(a, u), 1.0f - tx_erfc_big_(a, u));
  return tx_with_sign(m, x);  // NaN: a < 1 is false and the erfc branch is NaN
}

// erfc(x) = 1 − erf(x) without cancellation in the right tail: x >= 1 uses the erfc fit
// directly (relative error <= (3 + 1.2·x²)·2^-23: the float32 Horner sum and the rounding
// of x² inside exp), −1 < x < 1 is 1 − erf(x), x <= −1 is 2 − erfc|x|. Used for the exact
// GELU's Φ(x) = erfc(−x/√2)/2, which so keeps relative accuracy for x << 0.
static inline float tx_erfc(float x) {
  float a = tx_abs(x);
  float u = x * x;
  float big = tx_erfc_big_(a, u);
  float tail = tx_select(x < 0.0f, 2.0f - big, big);
  return tx_select(a < 1.0f, 1.0f - tx_erf_small_(x, u), tail);
}

// ---- streaming (non-temporal) stores for large outputs ----
// A plain store to memory that is not cached first reads the line (read-for-ownership),
// so a streaming kernel moves 3 bytes per output byte instead of 2. Kernels whose output
// is too big to stay in cache compute a short piece into an L1 scratch buffer and copy it
// out with tx_stream_store (non-temporal where dst is vector-aligned); tx_stream_fence()
// must run once after a thread's last stream store (before the data is read elsewhere).
// The scalar variant never streams (portable code, no intrinsics: staging would only add
// a copy). Measured through the Python API (fresh output pages), 2026-11-22: layer norm
// is 5-20% faster with streaming stores, GELU and softmax 1.1-1.7x slower, so only layer
// norm uses them.
#if defined(__AVX2__) || defined(__AVX512F__)
static const int64_t kTxStreamBytes = (int64_t)8 << 20;  // outputs above this bypass the cache
#else
static const int64_t kTxStreamBytes = INT64_MAX;
#endif

static inline void tx_stream_store(float* dst, const float* src, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i < n && ((uintptr_t)(dst + i) & 63) != 0; ++i) dst[i] = src[i];
  for (; i + 16 <= n; i += 16) _mm512_stream_ps(dst + i, _mm512_loadu_ps(src + i));
#elif defined(__AVX2__)
  for (; i < n && ((uintptr_t)(dst + i) & 31) != 0; ++i) dst[i] = src[i];
  for (; i + 8 <= n; i += 8) _mm256_stream_ps(dst + i, _mm256_loadu_ps(src + i));
#endif
  for (; i < n; ++i) dst[i] = src[i];
}

static inline void tx_stream_fence() {
#if defined(__AVX2__) || defined(__AVX512F__)
  _mm_sfence();
#endif
}

}  // namespace
