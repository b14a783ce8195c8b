// Row softmax over contiguous rows of length n, forward and backward.
//
// y_j = exp(x_j − m) / Σ_k exp(x_k − m), m = max_k x_k (the shift keeps exp in range).
// Per row: pass 1 finds m; pass 2 writes e_j = exp(x_j − m) into y and sums it (vec.h's
// reductions, vmath.h's vector exp), pass 3 scales y by 1/Σ. The row is read from memory
// once (the later passes hit L1/L2), exp is evaluated once per element, and the next row
// is prefetched meanwhile. y is written with plain stores: streaming stores measured
// 1.1-1.3x slower for large outputs in the Python API, whose outputs are fresh pages.
// Rows are independent and spread over threads; each row's reductions run on one
// thread, so results do not depend on the thread count.
// A row of all −inf (fully masked) gives zeros; NaN or +inf in a row make it NaN (IEEE).
#include "tx/kernels.h"
#include "vec.h"
#include "vmath.h"
#include "rows.h"  // max_of_row, exp_shifted_sum, next_row, prefetch_half

namespace tx {
namespace TX_ISA_NS {

namespace {

static inline void softmax_row(const float* x, float* y, int64_t n, int64_t ahead) {
  const float m = max_of_row(x, n);
  if (m == -__builtin_inff()) {  // every entry −inf: no probability mass anywhere
    for (int64_t j = 0; j < n; ++j) y[j] = 0.0f;
    return;
  }
  // Σ >= 1 (exp(0) at the max), or NaN
  const float inv = 1.0f / exp_shifted_sum(x, m, y, n, ahead);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) y[j] *= inv;
}

// dx_j = y_j·(dy_j − Σ_k dy_k·y_k)   (Jacobian of softmax applied to dy). Both passes
// prefetch half of the next rows dy_next, y_next (nullptr: none).
static inline void softmax_backward_row(const float* dy, const float* y, float* dx, int64_t n,
                                        const float* dy_next, const float* y_next) {
  const int64_t nv = n - n % VL;
  float dot = row_sum(nv, [&](int64_t j) {
    prefetch_half(dy_next, y_next, j);
    return vmul(vload(dy + j), vload(y + j));
  });
  for (int64_t j = nv; j < n; ++j) dot += dy[j] * y[j];
  const V vd = vset1(dot);
  for (int64_t j = 0; j < nv; j += VL) {
    prefetch_half(dy_next, y_next, n + j);
    vstore(dx + j, vmul(vload(y + j), vsub(vload(dy + j), vd)));
  }
  for (int64_t j = nv; j < n; ++j) dx[j] = y[j] * (dy[j] - dot);
}

}  // namespace

void softmax_forward(const float* x, float* y, int64_t rows, int64_t n) {
  const int64_t work = rows * n * 8;
  (void)work;  // (unused in a build without OpenMP)
  TX_OMP_FOR(work)
  for (int64_t r = 0; r < rows; ++r) {
    softmax_row(x + r * n, y + r * n, n, next_row(x, r, rows, n) ? n : 0);
  }
}

void softmax_backward(const float* dy, const float* y, float* dx, int64_t rows, int64_t n) {
  const int64_t work = rows * n * 3;
  (void)work;  // (unused in a build without OpenMP)
  TX_OMP_FOR(work)
  for (int64_t r = 0; r < rows; ++r) {
    softmax_backward_row(dy + r * n, y + r * n, dx + r * n, n, next_row(dy, r, rows, n),
                         next_row(y, r, rows, n));
  }
}

}  // namespace TX_ISA_NS
}  // namespace tx
