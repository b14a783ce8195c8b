// Cross-entropy over logits (N, V) with optional label smoothing, fused with its
// gradient: a row is read from memory once (max; the exp and scaling passes find it in
// L2: 196 KiB at V = 50257) and dlogits written once. The passes are softmax's (rows.h).
#include <math.h>
#include <string.h>

#include "rows.h"
#include "tx/kernels.h"

namespace tx {
namespace TX_ISA_NS {

namespace {
// Long rows (V = 50257) are summed in blocks: a SIMD float sum inside each block, the
// block sums added in double. Keeps the rounding error of Σ exp at ~block-size·ε instead
// of V·ε, in a fixed order (determinism does not depend on it: one row = one thread).
// A multiple of every VL, so only the last block has a vector tail.
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
    // m = max_j x_j (stable softmax). A NaN may or may not win the max; it reaches the
    // sum below either way.
    const float xt = x[t];
    const float m = max_of_row(x, V);
    // sx = Σ_j (x_j − m), for the ε term: before the exp pass, which may overwrite x.
    double sx = 0.0;
    if (eps != 0.0f) {
      for (int64_t j0 = 0; j0 < V; j0 += kBlock) {
        const int64_t n = (j0 + kBlock < V ? j0 + kBlock : V) - j0, nv = n - n % VL;
        const auto mv = vset1(m);  // (V here is the vocabulary size)
        float bx = row_sum(nv, [&](int64_t j) { return vsub(vload(x + j0 + j), mv); });
        for (int64_t j = nv; j < n; ++j) bx += x[j0 + j] - m;
        sx += bx;
      }
    }
    // e_j = exp(x_j − m) kept in dx; s = Σ e_j, block by block.
    double s = 0.0;
    for (int64_t j0 = 0; j0 < V; j0 += kBlock) {
      s += exp_shifted_sum(x + j0, m, dx + j0, (j0 + kBlock < V ? j0 + kBlock : V) - j0, 0);
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
