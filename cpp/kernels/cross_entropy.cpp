// Cross-entropy over logits (N, V) with optional label smoothing, fused with its
// gradient: one row is read twice (max, then exp) and dlogits written once.
#include <math.h>
#include <string.h>

#include "tx/kernels.h"
#include "vmath.h"

namespace tx {
namespace TX_ISA_NS {

namespace {
// Long rows (V = 50257) are summed in blocks: a SIMD float sum inside each block, the
// block sums added in double. Keeps the rounding error of Σ exp at ~block-size·ε instead
// of V·ε, in a fixed order (determinism does not depend on it: one row = one thread).
constexpr int64_t kBlock = 1024;
}  // namespace

// Per row i with target t (log p_j = x_j − m − log Σ_k exp(x_k − m), m = max_k x_k):
//   row_loss[i] = −(1−ε)·log p_t − ε/V·Σ_j log p_j
//   dlogits[i, j] = grad_scale·(p_j − (1−ε)·[j == t] − ε/V)
// Ignored rows (t == ignore_index) get loss 0 and gradient 0. NaN in a row propagates
// to its loss and gradient (exp(NaN − m) = NaN enters the sum).
void cross_entropy(const float* logits, int64_t N, int64_t V, const int64_t* targets,
                   int64_t ignore_index, float label_smoothing, float grad_scale,
                   float* row_loss, float* dlogits) {
  const float eps = label_smoothing;
#pragma omp parallel for schedule(static) num_threads(::tx::threads_for(N * V))
  for (int64_t i = 0; i < N; ++i) {
    // dlogits may be logits itself (in place: every pass reads x_j before writing
    // dx_j at the same j, and x_t is kept before the first write), so no __restrict.
    const float* x = logits + i * V;
    float* dx = dlogits + i * V;
    const int64_t t = targets[i];
    if (t == ignore_index) {
      row_loss[i] = 0.0f;
      memset(dx, 0, (size_t)V * sizeof(float));
      continue;
    }
    // m = max_j x_j (stable softmax). The compare skips NaN here; NaN still reaches
    // the sum below.
    const float xt = x[t];
    float m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < V; ++j) m = x[j] > m ? x[j] : m;

    // e_j = exp(x_j − m) kept in dx; s = Σ e_j; sx = Σ (x_j − m) (for the ε term).
    double s = 0.0, sx = 0.0;
    for (int64_t j0 = 0; j0 < V; j0 += kBlock) {
      const int64_t j1 = j0 + kBlock < V ? j0 + kBlock : V;
      float bs = 0.0f, bx = 0.0f;
#pragma omp simd reduction(+ : bs, bx)
      for (int64_t j = j0; j < j1; ++j) {
        const float z = x[j] - m;
        const float e = tx_exp(z);
        dx[j] = e;
        bs += e;
        bx += z;
      }
      s += bs;
      sx += bx;
    }
    const double log_s = log(s);  // log Σ exp(x_j − m); one per row
    // −log p_t = log_s − (x_t − m);  −ε/V·Σ_j log p_j = ε·(log_s − sx/V)
    const double nll = log_s - ((double)xt - (double)m);
    double loss = (1.0 - (double)eps) * nll;
    if (eps != 0.0f) loss += (double)eps * (log_s - sx / (double)V);
    row_loss[i] = (float)loss;

    // dlogits = grad_scale·p_j − grad_scale·ε/V, then − grad_scale·(1−ε) at t.
    const float scale = (float)((double)grad_scale / s);
    const float off = (float)((double)grad_scale * (double)eps / (double)V);
#pragma omp simd
    for (int64_t j = 0; j < V; ++j) dx[j] = dx[j] * scale - off;
    dx[t] -= (float)((double)grad_scale * (1.0 - (double)eps));
  }
}

}  // namespace TX_ISA_NS
}  // namespace tx
