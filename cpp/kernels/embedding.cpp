// Token embedding: forward gathers rows of the table, backward scatter-adds dy rows
// into dtable. Ids are range-checked by the caller (the binding).
#include <string.h>

#include "tx/kernels.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace tx {
namespace TX_ISA_NS {

// out[i, :] = table[ids[i], :]. Parallel over ids: every output row is written once.
void embedding_forward(const int64_t* ids, int64_t n, const float* table, int64_t d,
                       float* out) {
#pragma omp parallel for schedule(static) num_threads(::tx::threads_for(n * d))
  for (int64_t i = 0; i < n; ++i) {
    memcpy(out + i * d, table + ids[i] * d, (size_t)d * sizeof(float));
  }
}

namespace {
// dtable[ids[i], c0:c1] += dy[i, c0:c1] for every i in index order, but only for the ids
// this thread owns (id % owners == owner; owners == 1: all of them).
static inline void scatter_cols(const float* dy, const int64_t* ids, int64_t n, int64_t d,
                                float* dtable, int64_t c0, int64_t c1, int64_t owner,
                                int64_t owners) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = ids[i];
    if (owners > 1 && id % owners != owner) continue;
    float* __restrict row = dtable + id * d;
    const float* __restrict src = dy + i * d;
#pragma omp simd
    for (int64_t c = c0; c < c1; ++c) row[c] += src[c];
  }
}
}  // namespace

// dtable[v, c] += Σ_{i: ids[i] == v} dy[i, c], the sum taken in increasing i.
// Determinism: each dtable element is owned by exactly one thread, which adds its dy
// terms in index order — the same float operations in the same order as one thread, so
// the result is bit-identical for any thread count. Ownership is by 16-column blocks
// when d is wide enough to give every thread one; otherwise by id (id mod threads).
void embedding_backward(const float* dy, const int64_t* ids, int64_t n, int64_t d,
                        float* dtable) {
  if (n <= 0 || d <= 0) return;
  const int64_t nblk = (d + 15) / 16;
  const int want = threads_for(n * d);
  if (want <= 1) {
    scatter_cols(dy, ids, n, d, dtable, 0, d, 0, 1);
    return;
  }
  const bool by_cols = nblk >= want;
#if defined(_OPENMP)
#pragma omp parallel num_threads(want)
  {
    const int64_t t = omp_get_thread_num(), T = omp_get_num_threads();
#else
  {
    const int64_t t = 0, T = 1;
#endif
    if (by_cols) {
      const int64_t c0 = (nblk * t / T) * 16;
      int64_t c1 = (nblk * (t + 1) / T) * 16;
      if (c1 > d) c1 = d;
      scatter_cols(dy, ids, n, d, dtable, c0, c1, 0, 1);
    } else {
      scatter_cols(dy, ids, n, d, dtable, 0, d, t, T);
    }
  }
}

}  // namespace TX_ISA_NS
}  // namespace tx
