// Machine probes for the benchmark's roofline: the sustained FMA rate and the read
// bandwidth this ISA variant reaches with the process-wide thread count. Not kernels of
// the model; they only give `transformer-ext bench` its "% of peak" denominators.
#include "tx/kernels.h"

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace tx {
namespace TX_ISA_NS {

namespace {

// Results are stored here so the compiler must compute them (and cannot drop the loops).
volatile float g_sink;

// Independent FMA chains per thread. Peak needs (FMA latency x FMAs per cycle) chains in
// flight: 4 cycles x 2 ports = 8 on recent Intel/AMD cores; 12 leaves headroom.
constexpr int kChains = 12;

// acc <- acc*a + c with a slightly below 1 converges to c/(1-a): values stay normal
// (no overflow, no denormal slow path) for any iteration count.
constexpr float kA = 0.99999f, kC = 1e-6f;

}  // namespace

double probe_fma(int64_t iters) {
  double flops = 0.0;
#pragma omp parallel num_threads(::tx::num_threads()) reduction(+ : flops)
  {
#if defined(__AVX512F__)
    const int lanes = 16;
    const __m512 a = _mm512_set1_ps(kA), c = _mm512_set1_ps(kC);
    __m512 acc[kChains];
    for (int j = 0; j < kChains; ++j) acc[j] = _mm512_set1_ps((float)j);
    for (int64_t it = 0; it < iters; ++it) {
      // Fully unrolled by the compiler: kChains independent vfmadd per iteration.
      for (int j = 0; j < kChains; ++j) acc[j] = _mm512_fmadd_ps(acc[j], a, c);
    }
    __m512 s = acc[0];
    for (int j = 1; j < kChains; ++j) s = _mm512_add_ps(s, acc[j]);
    g_sink = _mm512_reduce_add_ps(s);
#elif defined(__AVX2__) && defined(__FMA__)
    const int lanes = 8;
    const __m256 a = _mm256_set1_ps(kA), c = _mm256_set1_ps(kC);
    __m256 acc[kChains];
    for (int j = 0; j < kChains; ++j) acc[j] = _mm256_set1_ps((float)j);
    for (int64_t it = 0; it < iters; ++it) {
      for (int j = 0; j < kChains; ++j) acc[j] = _mm256_fmadd_ps(acc[j], a, c);
    }
    __m256 s = acc[0];
    for (int j = 1; j < kChains; ++j) s = _mm256_add_ps(s, acc[j]);
    float t[8];
    _mm256_storeu_ps(t, s);
    g_sink = t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
#elif defined(__GNUC__)
    // Portable (GCC/Clang vector extensions): kChains chains of 4-lane multiply-add,
    // i.e. SSE2 mulps + addps on baseline x86-64 (no FMA instruction), NEON on aarch64.
    // Named vector registers, fully unrolled, so the compiler cannot interchange the
    // loops into one latency-bound chain (which it does with a plain float array).
    typedef float v4 __attribute__((vector_size(16)));
    const int lanes = 4;
    const v4 a = {kA, kA, kA, kA}, c = {kC, kC, kC, kC};
    v4 acc[kChains];
    for (int j = 0; j < kChains; ++j) acc[j] = (v4){(float)j, (float)j, (float)j, (float)j};
    for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
      for (int j = 0; j < kChains; ++j) acc[j] = acc[j] * a + c;
    }
    v4 s = acc[0];
    for (int j = 1; j < kChains; ++j) s += acc[j];
    g_sink = s[0] + s[1] + s[2] + s[3];
#else
    // Other compilers: plain floats, vectorised by `omp simd` where possible.
    const int lanes = 8;
    float acc[kChains * 8];
    for (int j = 0; j < kChains * 8; ++j) acc[j] = (float)j;
    for (int64_t it = 0; it < iters; ++it) {
#pragma omp simd
      for (int j = 0; j < kChains * 8; ++j) acc[j] = acc[j] * kA + kC;
    }
    float s = 0.0f;
    for (int j = 0; j < kChains * 8; ++j) s += acc[j];
    g_sink = s;
#endif
    // Each FMA lane is 2 flops (multiply + add).
    flops += 2.0 * (double)lanes * kChains * (double)iters;
  }
  return flops;
}

double probe_read(const float* x, int64_t n, int reps) {
  double checksum = 0.0;
#pragma omp parallel num_threads(::tx::num_threads()) reduction(+ : checksum)
  {
    // Disjoint contiguous chunks, one per thread: each thread streams its own part.
    int64_t nt = 1, tid = 0;
#ifdef _OPENMP
    nt = omp_get_num_threads();
    tid = omp_get_thread_num();
#endif
    const int64_t lo = n * tid / nt, hi = n * (tid + 1) / nt;
    // Four concurrent streams per thread (quarters of its chunk): one sequential stream is
    // latency-bound on a core (≈8 GB/s here), several keep enough misses in flight to show
    // the bandwidth that kernels reading several arrays (AdamW, GEMV panels) actually get.
    const int64_t q = (hi - lo) / 4 / 64 * 64;
    const float* p0 = x + lo;
    const float* p1 = p0 + q;
    const float* p2 = p1 + q;
    const float* p3 = p2 + q;
    for (int r = 0; r < reps; ++r) {
      float s = 0.0f;
      int64_t i = 0;
#if defined(__AVX512F__)
      __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
      for (; i < q; i += 32) {
        s0 = _mm512_add_ps(s0, _mm512_add_ps(_mm512_loadu_ps(p0 + i), _mm512_loadu_ps(p0 + i + 16)));
        s1 = _mm512_add_ps(s1, _mm512_add_ps(_mm512_loadu_ps(p1 + i), _mm512_loadu_ps(p1 + i + 16)));
        s2 = _mm512_add_ps(s2, _mm512_add_ps(_mm512_loadu_ps(p2 + i), _mm512_loadu_ps(p2 + i + 16)));
        s3 = _mm512_add_ps(s3, _mm512_add_ps(_mm512_loadu_ps(p3 + i), _mm512_loadu_ps(p3 + i + 16)));
      }
      s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
#elif defined(__AVX2__)
      __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
      for (; i < q; i += 16) {
        s0 = _mm256_add_ps(s0, _mm256_add_ps(_mm256_loadu_ps(p0 + i), _mm256_loadu_ps(p0 + i + 8)));
        s1 = _mm256_add_ps(s1, _mm256_add_ps(_mm256_loadu_ps(p1 + i), _mm256_loadu_ps(p1 + i + 8)));
        s2 = _mm256_add_ps(s2, _mm256_add_ps(_mm256_loadu_ps(p2 + i), _mm256_loadu_ps(p2 + i + 8)));
        s3 = _mm256_add_ps(s3, _mm256_add_ps(_mm256_loadu_ps(p3 + i), _mm256_loadu_ps(p3 + i + 8)));
      }
      float t[8];
      _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
      s = t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
#else
      float acc[16] = {0};
      for (; i < q; i += 4) {
#pragma omp simd
        for (int j = 0; j < 4; ++j) {
          acc[j] += p0[i + j];
          acc[4 + j] += p1[i + j];
          acc[8 + j] += p2[i + j];
          acc[12 + j] += p3[i + j];
        }
      }
      for (int j = 0; j < 16; ++j) s += acc[j];
#endif
      for (int64_t k = lo + 4 * q; k < hi; ++k) s += x[k];  // the remainder after the quarters
      checksum += s;
    }
  }
  g_sink = (float)checksum;
  return checksum;
}

}  // namespace TX_ISA_NS
}  // namespace tx
