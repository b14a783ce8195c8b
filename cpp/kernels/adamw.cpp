// AdamW, in place, with torch.optim.AdamW's arithmetic (its single-tensor CPU path, the
// default for CPU tensors), operation by operation:
//   p ← p·(1 − lr·λ)                         param.mul_(1 - lr*wd)     (skipped if λ = 0)
//   m ← m + (1 − β1)·(g − m)                 exp_avg.lerp_(g, 1 - β1)  (= β1·m + (1 − β1)·g)
//   v ← v·β2 + (1 − β2)·g·g                  exp_avg_sq.mul_(β2).addcmul_(g, g, 1 - β2)
//   p ← p + (−lr/(1 − β1^t))·m / (sqrt(v)/sqrt(1 − β2^t) + eps)    param.addcdiv_(m, denom, -step_size)
// Scalar coefficients are computed in double (PyTorch does that math in Python) and
// rounded to float once, as its CPU kernels do with Python scalars. On the AVX2/AVX-512
// variants the roundings also follow PyTorch's vectorised kernels (which those CPUs run):
// lerp and addcmul are fused multiply-adds, the weight-decay product is rounded on its
// own; the scalar variant rounds every operation.
#include <math.h>
#include <string.h>

#if defined(__AVX2__) || defined(__AVX512F__) || defined(__SSE2__)
#include <immintrin.h>
#define TX_ADAM_SIMD 1
#else
#define TX_ADAM_SIMD 0
#endif

#include "tx/kernels.h"
#include "vmath.h"  // tx_stream_zero

namespace tx {
namespace TX_ISA_NS {

namespace {
constexpr int64_t kChunk = 8192;  // elements per parallel work item (no reductions anywhere)

struct AdamCoef {
  float decay, w1, one_minus_w1, beta2, c2, neg_step_size, bc2_sqrt, eps;
  bool small_w1;  // torch's lerp: self + w·(end − self) if |w| < 0.5, else end − (end − self)·(1 − w)
};

// a·b + c with a single rounding where the ISA has FMA (as PyTorch's vectorised kernels
// do), else two roundings.
static inline float fma1(float a, float b, float c) {
#if defined(__FMA__)
  return fmaf(a, b, c);  // one instruction under -mfma
#else
  return a * b + c;
#endif
}
// x, rounded on its own: an empty asm makes the value opaque so the compiler cannot
// contract the product that produced it into a later add (torch's mul_ is a separate pass).
static inline float keep(float x) {
#if defined(__FMA__) && (defined(__x86_64__) || defined(__i386__))
  __asm__("" : "+x"(x));
#endif
  return x;
}

// One SIMD vector of floats for this ISA variant. Explicit intrinsics because the
// sqrtf in the update does not auto-vectorise (without -fno-math-errno GCC keeps a
// scalar libm call for the errno path), and to control every rounding.
#if defined(__AVX512F__)
typedef __m512 vf;
constexpr int64_t kW = 16;
static inline vf vset(float a) { return _mm512_set1_ps(a); }
static inline vf vld(const float* p) { return _mm512_loadu_ps(p); }
static inline void vst(float* p, vf a) { _mm512_storeu_ps(p, a); }
static inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf vsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf vdiv(vf a, vf b) { return _mm512_div_ps(a, b); }
static inline vf vsqrt(vf a) { return _mm512_sqrt_ps(a); }
static inline vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
static inline vf vfnma(vf a, vf b, vf c) { return _mm512_fnmadd_ps(a, b, c); }
static inline vf vkeep(vf a) { __asm__("" : "+v"(a)); return a; }
#elif defined(__AVX2__)
typedef __m256 vf;
constexpr int64_t kW = 8;
static inline vf vset(float a) { return _mm256_set1_ps(a); }
static inline vf vld(const float* p) { return _mm256_loadu_ps(p); }
static inline void vst(float* p, vf a) { _mm256_storeu_ps(p, a); }
static inline vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf vsub(vf a, vf b) { return _mm256_sub_ps(a, b); }
static inline vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline vf vdiv(vf a, vf b) { return _mm256_div_ps(a, b); }
static inline vf vsqrt(vf a) { return _mm256_sqrt_ps(a); }
static inline vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline vf vfnma(vf a, vf b, vf c) { return _mm256_fnmadd_ps(a, b, c); }
static inline vf vkeep(vf a) { __asm__("" : "+x"(a)); return a; }
#elif defined(__SSE2__)
typedef __m128 vf;
constexpr int64_t kW = 4;
static inline vf vset(float a) { return _mm_set1_ps(a); }
static inline vf vld(const float* p) { return _mm_loadu_ps(p); }
static inline void vst(float* p, vf a) { _mm_storeu_ps(p, a); }
static inline vf vadd(vf a, vf b) { return _mm_add_ps(a, b); }
static inline vf vsub(vf a, vf b) { return _mm_sub_ps(a, b); }
static inline vf vmul(vf a, vf b) { return _mm_mul_ps(a, b); }
static inline vf vdiv(vf a, vf b) { return _mm_div_ps(a, b); }
static inline vf vsqrt(vf a) { return _mm_sqrt_ps(a); }
static inline vf vfma(vf a, vf b, vf c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }   // no FMA:
static inline vf vfnma(vf a, vf b, vf c) { return _mm_sub_ps(c, _mm_mul_ps(a, b)); }  // two roundings
static inline vf vkeep(vf a) { return a; }
#endif

// Elements [lo, hi). The vector body and the scalar tail round identically, so a result
// never depends on where a chunk boundary or the tail falls.
static inline void adamw_range(float* __restrict p, const float* __restrict g,
                               float* __restrict m, float* __restrict v, int64_t lo,
                               int64_t hi, const AdamCoef& c) {
  int64_t i = lo;
#if TX_ADAM_SIMD
  const vf decay = vset(c.decay), w = vset(c.small_w1 ? c.w1 : c.one_minus_w1);
  const vf b2 = vset(c.beta2), c2 = vset(c.c2), nss = vset(c.neg_step_size);
  const vf bc2s = vset(c.bc2_sqrt), eps = vset(c.eps);
  for (; i + kW <= hi; i += kW) {
    const vf gi = vld(g + i), m0 = vld(m + i);
    const vf d = vsub(gi, m0);
    const vf mi = c.small_w1 ? vfma(w, d, m0) : vfnma(d, w, gi);
    const vf vi = vfma(vmul(c2, gi), gi, vkeep(vmul(vld(v + i), b2)));
    const vf denom = vadd(vdiv(vsqrt(vi), bc2s), eps);
    vst(p + i, vadd(vkeep(vmul(vld(p + i), decay)), vdiv(vmul(nss, mi), denom)));
    vst(m + i, mi);
    vst(v + i, vi);
  }
#endif
  for (; i < hi; ++i) {
    const float gi = g[i], m0 = m[i], d = gi - m0;
    const float mi = c.small_w1 ? fma1(c.w1, d, m0) : fma1(-d, c.one_minus_w1, gi);
    const float vi = fma1(c.c2 * gi, gi, keep(v[i] * c.beta2));
    const float denom = sqrtf(vi) / c.bc2_sqrt + c.eps;
    p[i] = keep(p[i] * c.decay) + (c.neg_step_size * mi) / denom;
    m[i] = mi;
    v[i] = vi;
  }
}
}  // namespace

void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, int64_t step,
                double lr, double beta1, double beta2, double eps, double weight_decay) {
  AdamCoef c;
  const double lr_d = lr, b1 = beta1, b2 = beta2, wd = weight_decay;
  // λ == 0: torch skips the multiply; ·1.0f is exact, so the same result.
  c.decay = wd != 0.0 ? (float)(1.0 - lr_d * wd) : 1.0f;
  c.w1 = (float)(1.0 - b1);
  c.one_minus_w1 = 1.0f - c.w1;
  c.small_w1 = fabsf(c.w1) < 0.5f;
  c.beta2 = (float)b2;
  c.c2 = (float)(1.0 - b2);
  const double bc1 = 1.0 - pow(b1, (double)step);  // bias corrections, t is 1-based
  const double bc2 = 1.0 - pow(b2, (double)step);
  c.neg_step_size = (float)(-(lr_d / bc1));
  c.bc2_sqrt = (float)pow(bc2, 0.5);  // Python's bias_correction2 ** 0.5
  c.eps = (float)eps;
  const int64_t nchunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) num_threads(::tx::threads_for(n))
  for (int64_t k = 0; k < nchunks; ++k) {
    const int64_t lo = k * kChunk;
    const int64_t hi = lo + kChunk < n ? lo + kChunk : n;
    adamw_range(p, g, m, v, lo, hi, c);
  }
}

// x[0:n] = 0 (model.zero_grad: 0.5 GB for GPT-2 small). Chunks over threads; a buffer of
// kTxStreamBytes or more is written with non-temporal stores, which skip the
// read-for-ownership a plain store pays per line (a plain fill moves twice the bytes).
// Measured, 124M floats: NumPy's fill(0) (one thread) 73 ms, this 37 ms / 18 ms (1 / 2 threads).
void fill_zero(float* x, int64_t n) {
  const bool stream = n * (int64_t)sizeof(float) >= kTxStreamBytes;
  const int64_t nchunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) num_threads(::tx::threads_for(n))
  for (int64_t k = 0; k < nchunks; ++k) {
    const int64_t lo = k * kChunk, len = lo + kChunk < n ? kChunk : n - lo;
    if (stream) {
      tx_stream_zero(x + lo, len);
      tx_stream_fence();  // this thread's stores complete before the buffer is read
    } else {
      memset(x + lo, 0, (size_t)len * sizeof(float));
    }
  }
}

}  // namespace TX_ISA_NS
}  // namespace tx
