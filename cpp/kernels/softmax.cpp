// Row softmax over contiguous rows of length n, forward and backward.
//
// y_j = exp(x_j − m) / Σ_k exp(x_k − m), m = max_k x_k (the shift keeps exp in range).
// Per row: pass 1 finds m; pass 2 writes e_j = exp(x_j − m) into y and sums it; pass 3
// scales y by 1/Σ. The row is read from memory once (passes 2-3 hit L1/L2), exp is
// evaluated once per element, and the next row is prefetched meanwhile. For outputs of
// >= 8 MiB, passes 2-3 work in an L1 buffer and y is written once with streaming stores.
// Rows are independent and spread over threads; each row's reductions run on one
// thread, so results do not depend on the thread count.
// A row of all −inf (fully masked) gives zeros; NaN or +inf in a row make it NaN (IEEE).
#include "tx/kernels.h"
#include "vmath.h"

namespace tx {
namespace TX_ISA_NS {

namespace {

const int64_t kStreamRow = 4096;  // rows up to this length stage through L1 when streaming

// Ask for the next row while this one is computed (exp-heavy passes leave the memory
// bus idle; the hardware prefetcher alone does not run far enough ahead). Rows up to
// 16 KiB; longer rows are streamed well by the hardware prefetcher.
static inline void prefetch_row(const float* x, int64_t n) {
  if (n > 4096) return;
  for (int64_t j = 0; j < n; j += 16) __builtin_prefetch(x + j, 0, 3);
}

// Row reductions run as 4 interleaved streams (quarters of the row), each a SIMD
// accumulator: 4 independent add/max chains instead of one hide the FP latency. The
// order of summation is fixed by n alone.
static inline float row_max(const float* x, int64_t n) {
  const int64_t q = n / 4;
  float m0 = -__builtin_inff(), m1 = m0, m2 = m0, m3 = m0;
#pragma omp simd reduction(max : m0, m1, m2, m3)
  for (int64_t i = 0; i < q; ++i) {
    m0 = m0 > x[i] ? m0 : x[i];
    m1 = m1 > x[i + q] ? m1 : x[i + q];
    m2 = m2 > x[i + 2 * q] ? m2 : x[i + 2 * q];
    m3 = m3 > x[i + 3 * q] ? m3 : x[i + 3 * q];
  }
  float m = (m0 > m1 ? m0 : m1) > (m2 > m3 ? m2 : m3) ? (m0 > m1 ? m0 : m1) : (m2 > m3 ? m2 : m3);
  for (int64_t j = 4 * q; j < n; ++j) m = m > x[j] ? m : x[j];
  return m;
}

// y_j = exp(x_j − m); returns Σ_j y_j.
static inline float exp_shifted_sum(const float* x, float m, float* y, int64_t n) {
  const int64_t q = n / 4;
  float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t i = 0; i < q; ++i) {
    const float e0 = tx_exp(x[i] - m), e1 = tx_exp(x[i + q] - m);
    const float e2 = tx_exp(x[i + 2 * q] - m), e3 = tx_exp(x[i + 3 * q] - m);
    y[i] = e0;
    y[i + q] = e1;
    y[i + 2 * q] = e2;
    y[i + 3 * q] = e3;
    s0 += e0;
    s1 += e1;
    s2 += e2;
    s3 += e3;
  }
  float s = (s0 + s1) + (s2 + s3);
  for (int64_t j = 4 * q; j < n; ++j) {
    y[j] = tx_exp(x[j] - m);
    s += y[j];
  }
  return s;
}

static inline float row_dot(const float* a, const float* b, int64_t n) {
  const int64_t q = n / 4;
  float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t i = 0; i < q; ++i) {
    s0 += a[i] * b[i];
    s1 += a[i + q] * b[i + q];
    s2 += a[i + 2 * q] * b[i + 2 * q];
    s3 += a[i + 3 * q] * b[i + 3 * q];
  }
  float s = (s0 + s1) + (s2 + s3);
  for (int64_t j = 4 * q; j < n; ++j) s += a[j] * b[j];
  return s;
}

// buf: nullptr, or kStreamRow floats of L1 scratch: then the exps go there and y is
// written once, with streaming stores (large outputs; see vmath.h).
static inline void softmax_row(const float* x, float* y, int64_t n, float* buf) {
  const float m = row_max(x, n);
  if (m == -__builtin_inff()) {  // every entry −inf: no probability mass anywhere
    for (int64_t j = 0; j < n; ++j) y[j] = 0.0f;
    return;
  }
  float* e = buf ? buf : y;
  const float inv = 1.0f / exp_shifted_sum(x, m, e, n);  // Σ >= 1 (exp(0) at the max), or NaN
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) e[j] *= inv;
  if (buf) tx_stream_store(y, buf, n);
}

// dx_j = y_j·(dy_j − Σ_k dy_k·y_k)   (Jacobian of softmax applied to dy).
static inline void softmax_backward_row(const float* dy, const float* y, float* dx, int64_t n) {
  const float dot = row_dot(dy, y, n);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) dx[j] = y[j] * (dy[j] - dot);
}

}  // namespace

void softmax_forward(const float* x, float* y, int64_t rows, int64_t n) {
  const bool stream = rows * n * (int64_t)sizeof(float) >= kTxStreamBytes && n <= kStreamRow && x != y;
#pragma omp parallel num_threads(::tx::threads_for(rows * n * 8))
  {
    alignas(64) float buf[kStreamRow];
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      if (r + 1 < rows) prefetch_row(x + (r + 1) * n, n);
      softmax_row(x + r * n, y + r * n, n, stream ? buf : nullptr);
    }
    if (stream) tx_stream_fence();  // each thread orders its own streaming stores
  }
}

void softmax_backward(const float* dy, const float* y, float* dx, int64_t rows, int64_t n) {
  const int64_t work = rows * n * 3;
  (void)work;  // (unused in a build without OpenMP)
  TX_OMP_FOR(work)
  for (int64_t r = 0; r < rows; ++r) {
    if (r + 1 < rows) {
      prefetch_row(dy + (r + 1) * n, n);
      prefetch_row(y + (r + 1) * n, n);
    }
    softmax_backward_row(dy + r * n, y + r * n, dx + r * n, n);
  }
}

}  // namespace TX_ISA_NS
}  // namespace tx
