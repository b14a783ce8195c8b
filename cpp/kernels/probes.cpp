// Machine probes for the benchmark's roofline: the sustained FMA rate and the read and
// copy bandwidth this ISA variant reaches with the process-wide thread count. Not kernels of
// the model; they only give `transformer-ext bench` its "% of peak" denominators.
#include "tx/kernels.h"
#include "vec.h"
#include "vmath.h"  // tx_stream_store

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

// This thread's contiguous chunk [lo, hi) of n elements: disjoint across the team, so
// each thread streams its own part.
inline void thread_chunk(int64_t n, int64_t& lo, int64_t& hi) {
  int64_t nt = 1, tid = 0;
#ifdef _OPENMP
  nt = omp_get_num_threads();
  tid = omp_get_thread_num();
#endif
  lo = n * tid / nt, hi = n * (tid + 1) / nt;
}

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

// Read pattern of the GEMV kernel (gemm.cpp, pk_gemv): each thread walks its contiguous
// chunk in blocks of kStreams runs of kRun floats, the runs read in lockstep (kStreams
// concurrent streams, one 128-byte row of each per step) with a software prefetch of
// both lines of each stream's row 1 KiB ahead. One sequential stream per core is
// latency-bound (≈8 GB/s on Sapphire Rapids); this is the best plain read pattern we
// measured (1 thread: about +10% over four unprefetched streams), so "% of bandwidth"
// in the benchmark is against what a kernel can actually pull, not a pessimistic probe.
constexpr int kStreams = 8;
constexpr int64_t kRun = 16384;       // floats per stream per block (64 KiB)
constexpr int64_t kAhead = 1024 / 4;  // prefetch distance in floats

static inline void prefetch2(const float* p) {
#if defined(__AVX2__) || defined(__AVX512F__)
  _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0);
  _mm_prefetch(reinterpret_cast<const char*>(p) + 64, _MM_HINT_T0);
#elif defined(__GNUC__)
  __builtin_prefetch(p, 0, 3);
  __builtin_prefetch(p + 16, 0, 3);
#else
  (void)p;
#endif
}

double probe_read(const float* x, int64_t n, int reps) {
  double checksum = 0.0;
#pragma omp parallel num_threads(::tx::num_threads()) reduction(+ : checksum)
  {
    int64_t lo, hi;
    thread_chunk(n, lo, hi);
    const int64_t blocks = (hi - lo) / (kStreams * kRun);
    for (int r = 0; r < reps; ++r) {
      float s = 0.0f;
      for (int64_t b = 0; b < blocks; ++b) {
        const float* base = x + lo + b * kStreams * kRun;
        V acc[kStreams];
        for (int q = 0; q < kStreams; ++q) acc[q] = vzero();
        for (int64_t i = 0; i < kRun; i += 32) {
#pragma GCC unroll 8
          for (int q = 0; q < kStreams; ++q) {
            const float* p = base + q * kRun + i;
            prefetch2(p + kAhead);
            V u = vload(p);  // the 128-byte row: 32 floats
            for (int l = VL; l < 32; l += VL) u = vadd(u, vload(p + l));
            acc[q] = vadd(acc[q], u);
          }
        }
        V t = acc[0];
        for (int q = 1; q < kStreams; ++q) t = vadd(t, acc[q]);
        s += vsum(t);
      }
      for (int64_t k = lo + blocks * kStreams * kRun; k < hi; ++k) s += x[k];  // the remainder
      checksum += s;
    }
  }
  g_sink = (float)checksum;
  return checksum;
}

// y = x `reps` times, each thread its contiguous chunk, written with streaming stores
// (tx_stream_store; layer norm streams its outputs of >= 8 MiB too): what one core pulls and
// pushes when a kernel reads one stream and writes another (8 bytes per element). The
// element-wise kernels are such kernels; probe_read alone overstates what they can reach.
void probe_copy(const float* x, float* y, int64_t n, int reps) {
#pragma omp parallel num_threads(::tx::num_threads())
  {
    int64_t lo, hi;
    thread_chunk(n, lo, hi);
    for (int r = 0; r < reps; ++r) tx_stream_store(y + lo, x + lo, hi - lo);
    tx_stream_fence();
  }
}

}  // namespace TX_ISA_NS
}  // namespace tx
