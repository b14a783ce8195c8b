// Layer normalisation over contiguous rows of length n, forward and backward.
//
// Forward: μ = mean(x), σ² = mean((x − μ)²) (biased; two passes over a row that sits in
// L1/L2, numerically sound unlike E[x²] − μ²; μ is summed in double), rstd = 1/√(σ² + eps),
// y = (x − μ)·rstd·γ + β. Rows are spread over threads; the next row is prefetched while
// one is computed; outputs of >= 8 MiB are written with streaming stores (vmath.h).
//
// Backward, with x̂ = (x − μ)·rstd and g = γ∘dy:
//   dx = rstd·(g − mean(g) − x̂·mean(g∘x̂))            (per row)
//   dγ = Σ_rows dy∘x̂,  dβ = Σ_rows dy                  (reductions over rows)
// The row reductions must not depend on the thread count: rows are grouped in FIXED
// chunks of kChunk rows; each chunk (one thread) accumulates its rows in order into its
// own partial dγ/dβ; then the partials are summed in chunk order, in parallel over columns.
#include <math.h>
#include <stdlib.h>
#include <new>

#include "tx/kernels.h"
#include "vmath.h"

namespace tx {
namespace TX_ISA_NS {

namespace {

const int64_t kChunk = 64;  // rows per partial sum: independent of the thread count
const int64_t kPiece = 1024;  // floats per L1 staging buffer for streaming stores

// Ask for the next row while this one is computed (the hardware prefetcher alone does
// not run far enough ahead across rows). Rows up to 16 KiB.
static inline void prefetch_row(const float* x, int64_t n) {
  if (n > 4096) return;
  for (int64_t j = 0; j < n; j += 16) __builtin_prefetch(x + j, 0, 3);
}

// Row reductions run as 4 interleaved streams (quarters of the row), each a SIMD
// accumulator: 4 independent add chains instead of one hide the FP latency. The order
// of summation is fixed by n alone.
static inline void layer_norm_row(const float* x, const float* gamma, const float* beta,
                                  float eps, int64_t n, float* y, float* mean, float* rstd,
                                  bool stream) {
  const int64_t q = n / 4;
  // μ summed in double and carried as μ_hi + μ_lo: x − μ_hi is exact for x near μ
  // (Sterbenz), so x − μ keeps full precision even when |μ| >> σ (un-normalised inputs).
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t i = 0; i < q; ++i) {
    s0 += (double)x[i];
    s1 += (double)x[i + q];
    s2 += (double)x[i + 2 * q];
    s3 += (double)x[i + 3 * q];
  }
  double s = (s0 + s1) + (s2 + s3);
  for (int64_t j = 4 * q; j < n; ++j) s += (double)x[j];
  const double mu_d = s / (double)n;
  const float mu_hi = (float)mu_d;
  const float mu_lo = (float)(mu_d - (double)mu_hi);
  float v0 = 0.0f, v1 = 0.0f, v2 = 0.0f, v3 = 0.0f;
#pragma omp simd reduction(+ : v0, v1, v2, v3)
  for (int64_t i = 0; i < q; ++i) {
    const float d0 = (x[i] - mu_hi) - mu_lo, d1 = (x[i + q] - mu_hi) - mu_lo;
    const float d2 = (x[i + 2 * q] - mu_hi) - mu_lo, d3 = (x[i + 3 * q] - mu_hi) - mu_lo;
    v0 += d0 * d0;
    v1 += d1 * d1;
    v2 += d2 * d2;
    v3 += d3 * d3;
  }
  float v = (v0 + v1) + (v2 + v3);
  for (int64_t j = 4 * q; j < n; ++j) {
    const float d = (x[j] - mu_hi) - mu_lo;
    v += d * d;
  }
  const float rs = 1.0f / sqrtf(v / (float)n + eps);
  if (!stream) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) y[j] = ((x[j] - mu_hi) - mu_lo) * rs * gamma[j] + beta[j];
  } else {  // large output: pieces through an L1 buffer, then non-temporal stores
    alignas(64) float buf[kPiece];
    for (int64_t j0 = 0; j0 < n; j0 += kPiece) {
      const int64_t len = n - j0 < kPiece ? n - j0 : kPiece;
      const float *xp = x + j0, *gp = gamma + j0, *bp = beta + j0;
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) buf[j] = ((xp[j] - mu_hi) - mu_lo) * rs * gp[j] + bp[j];
      tx_stream_store(y + j0, buf, len);
    }
  }
  *mean = mu_hi;
  *rstd = rs;
}

// dx for one row, and dγ/dβ partials += this row's dy∘x̂ and dy.
static inline void layer_norm_backward_row(const float* dy, const float* x, const float* gamma,
                                           float mu, float rs, int64_t n, float* dx, float* pg,
                                           float* pb) {
  const int64_t q = n / 4;
  float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;  // Σ g
  float b0 = 0.0f, b1 = 0.0f, b2 = 0.0f, b3 = 0.0f;  // Σ g∘x̂
#pragma omp simd reduction(+ : a0, a1, a2, a3, b0, b1, b2, b3)
  for (int64_t i = 0; i < q; ++i) {
    const float g0 = gamma[i] * dy[i], g1 = gamma[i + q] * dy[i + q];
    const float g2 = gamma[i + 2 * q] * dy[i + 2 * q], g3 = gamma[i + 3 * q] * dy[i + 3 * q];
    a0 += g0;
    a1 += g1;
    a2 += g2;
    a3 += g3;
    b0 += g0 * ((x[i] - mu) * rs);
    b1 += g1 * ((x[i + q] - mu) * rs);
    b2 += g2 * ((x[i + 2 * q] - mu) * rs);
    b3 += g3 * ((x[i + 3 * q] - mu) * rs);
  }
  float sg = (a0 + a1) + (a2 + a3), sgx = (b0 + b1) + (b2 + b3);
  for (int64_t j = 4 * q; j < n; ++j) {
    const float g = gamma[j] * dy[j];
    sg += g;
    sgx += g * ((x[j] - mu) * rs);
  }
  const float a = sg / (float)n, b = sgx / (float)n;  // mean(g), mean(g∘x̂)
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const float xh = (x[j] - mu) * rs;
    dx[j] = rs * (gamma[j] * dy[j] - a - xh * b);
    pg[j] += dy[j] * xh;
    pb[j] += dy[j];
  }
}

// dx for every row; chunk c (rows [c·kChunk, (c+1)·kChunk)) accumulates its rows, in
// order, into its own partials.
static void backward_chunks(const float* dy, const float* x, const float* gamma, const float* mean,
                            const float* rstd, int64_t rows, int64_t n, float* dx, float* part,
                            int64_t nchunks) {
  const int64_t work = rows * n * 10;
  (void)work;  // (unused in a build without OpenMP)
  TX_OMP_FOR(work)
  for (int64_t c = 0; c < nchunks; ++c) {
    float* pg = part + 2 * c * n;
    float* pb = pg + n;
    const int64_t r1 = (c + 1) * kChunk < rows ? (c + 1) * kChunk : rows;
    for (int64_t r = c * kChunk; r < r1; ++r) {
      if (r + 1 < rows) {
        prefetch_row(dy + (r + 1) * n, n);
        prefetch_row(x + (r + 1) * n, n);
      }
      layer_norm_backward_row(dy + r * n, x + r * n, gamma, mean[r], rstd[r], n, dx + r * n, pg,
                              pb);
    }
  }
}

// dγ = Σ_c pg_c, dβ = Σ_c pb_c in chunk order; threads split the columns (blocks of 256
// keep the inner loop simd and the outputs in L1).
static void sum_partials(const float* part, int64_t nchunks, int64_t n, float* dgamma,
                         float* dbeta) {
  const int64_t kCols = 256;
  const int64_t ncb = (n + kCols - 1) / kCols;
  const int64_t work = nchunks * n * 2;
  (void)work;  // (unused in a build without OpenMP)
  TX_OMP_FOR(work)
  for (int64_t cb = 0; cb < ncb; ++cb) {
    const int64_t j0 = cb * kCols;
    const int64_t j1 = j0 + kCols < n ? j0 + kCols : n;
#pragma omp simd
    for (int64_t j = j0; j < j1; ++j) {
      dgamma[j] = 0.0f;
      dbeta[j] = 0.0f;
    }
    for (int64_t c = 0; c < nchunks; ++c) {
      const float* pg = part + 2 * c * n;
      const float* pb = pg + n;
#pragma omp simd
      for (int64_t j = j0; j < j1; ++j) {
        dgamma[j] += pg[j];
        dbeta[j] += pb[j];
      }
    }
  }
}

}  // namespace

void layer_norm_forward(const float* x, const float* gamma, const float* beta, float eps,
                        int64_t rows, int64_t n, float* y, float* mean, float* rstd) {
  const bool stream = rows * n * (int64_t)sizeof(float) >= kTxStreamBytes;
#pragma omp parallel num_threads(::tx::threads_for(rows * n * 6))
  {
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      if (r + 1 < rows) prefetch_row(x + (r + 1) * n, n);
      layer_norm_row(x + r * n, gamma, beta, eps, n, y + r * n, mean + r, rstd + r, stream);
    }
    if (stream) tx_stream_fence();  // each thread orders its own streaming stores
  }
}

void layer_norm_backward(const float* dy, const float* x, const float* gamma, const float* mean,
                         const float* rstd, int64_t rows, int64_t n, float* dx, float* dgamma,
                         float* dbeta) {
  const int64_t nchunks = (rows + kChunk - 1) / kChunk;
  // partials: chunk c owns pg = part + 2·c·n (dγ) and pb = pg + n (dβ), zero-initialised.
  float* part = nullptr;
  if (nchunks > 0 && n > 0) {
    part = static_cast<float*>(calloc((size_t)(2 * nchunks * n), sizeof(float)));
    if (!part) throw std::bad_alloc();
  }
  backward_chunks(dy, x, gamma, mean, rstd, rows, n, dx, part, nchunks);
  sum_partials(part, nchunks, n, dgamma, dbeta);
  free(part);
}

}  // namespace TX_ISA_NS
}  // namespace tx
