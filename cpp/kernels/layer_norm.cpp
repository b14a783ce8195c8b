// Layer normalisation over contiguous rows of length n, forward and backward.
//
// Forward: μ = mean(x), σ² = mean((x − μ)²) (biased; from the deviations from a shift
// close to μ in one pass, or two passes where the shift is too far: see layer_norm_row),
// rstd = 1/√(σ² + eps),
// y = (x − μ)·rstd·γ + β. Rows are spread over threads; the next row is prefetched while
// one is computed, line by line as the row loops run; outputs (y, dx) of >= 8 MiB are
// written with streaming stores straight from registers (vmath.h's TxStream).
// The row loops use the vector layer (vec.h): GCC's code for `omp simd` reductions kept
// the lanes in memory and ran the forward at 40% of the bandwidth bound.
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
#include "rows.h"  // next_row, prefetch_line, prefetch_half
#include "vec.h"
#include "vmath.h"

namespace tx {
namespace TX_ISA_NS {

namespace {

const int64_t kChunk = 64;  // rows per partial sum: independent of the thread count
// Where a row kernel's output vectors go when the output fits in cache: plain stores.
// (TxStream, vmath.h, is the same interface with streaming stores.)
struct CachedOut {
  void put(float* p, V v) { vstore(p, v); }
  void put_n(float* p, V v, int k) { vstore_n(p, v, k); }
  void finish() {}
};

// One row: statistics, then y = (x − μ)·rstd·γ + β written through out (CachedOut, or
// the thread's TxStream for a large output). The first and last passes each prefetch half
// of the next row (next; nullptr: none): spread over the row's time instead of all of it
// during the first pass (+6-18% at 8192×768, 1 thread, AVX2 and AVX-512, rows from L3).
template <class Out>
static inline void layer_norm_row(const float* x, const float* gamma, const float* beta,
                                  float eps, int64_t n, float* y, float* mean, float* rstd,
                                  Out& out, const float* next) {
  const int64_t nv = n - n % VL;  // full vectors; the rest in scalar code
  // One pass for both statistics, on d = x − c with c the mean of the first vector (x[0]
  // for a row shorter than one): μ = c + mean(d) and σ² = mean(d²) − mean(d)², summed
  // in float (the shifted-data algorithm). With δ = μ − c, mean(d²) = σ² + δ², so the
  // subtraction loses at most a factor (σ² + 2δ²)/σ² of the sums' relative accuracy:
  // at most 3 where δ² <= σ², the test below. A c farther from μ than σ (a first vector
  // of outliers: about 1 row in 200 for Gaussian rows with AVX2, fewer with AVX-512)
  // takes a second pass, Σ((x − μ_hi) − μ_lo)², as every row did before; so does a row
  // whose Σd² overflowed (n·(σ² + δ²) > FLT_MAX) or is NaN. (One pass and
  // the two multiply-adds below: forward +2-15% at 8192×768 and +6-14% at 128×768,
  // interleaved A/B, AVX2 and AVX-512, 1 and 2 threads.)
  // μ is carried as μ_hi + μ_lo: x − μ_hi is exact for x near μ (Sterbenz), so x − μ
  // keeps full precision for un-normalised inputs (|μ| >> σ).
  const float c = nv > 0 ? vsum(vload(x)) / (float)VL : n > 0 ? x[0] : 0.0f;
  const V vc = vset1(c);
  float sd, sq;
  row_sum_sq(nv, [&](int64_t j) {
    prefetch_half(next, nullptr, j);
    return vsub(vload(x + j), vc);
  }, sd, sq);
  for (int64_t j = nv; j < n; ++j) {
    const float d = x[j] - c;
    sd += d;
    sq += d * d;
  }
  const double md = (double)sd / (double)n, mdd = (double)sq / (double)n;  // mean(d), mean(d²)
  const double mu_d = (double)c + md;
  const float mu_hi = (float)mu_d;
  const float mu_lo = (float)(mu_d - (double)mu_hi);
  const V mh = vset1(mu_hi), ml = vset1(mu_lo);
  float var;
  if (2.0 * md * md <= mdd && isfinite(sq)) {  // δ² <= σ², and Σd² neither NaN nor overflowed
    var = (float)(mdd - md * md);
  } else {
    float v = row_sum(nv, [&](int64_t j) {
      const V d = vsub(vsub(vload(x + j), mh), ml);
      return vmul(d, d);
    });
    for (int64_t j = nv; j < n; ++j) {
      const float d = (x[j] - mu_hi) - mu_lo;
      v += d * d;
    }
    var = v / (float)n;
  }
  const float rs = 1.0f / sqrtf(var + eps);
  // y = (x − μ_hi)·rs − μ_lo·rs, then ·γ + β: two multiply-adds
  const V r = vset1(rs), neg_lo_r = vset1(-mu_lo * rs);
  const auto y_at = [&](int64_t j, auto lanes) {  // y[j ..] for whole vectors and the tail
    const V xh = vfma(vsub(vload_k(x + j, lanes), mh), r, neg_lo_r);
    return vfma(xh, vload_k(gamma + j, lanes), vload_k(beta + j, lanes));
  };
  for (int64_t j = 0; j < nv; j += VL) {
    prefetch_half(next, nullptr, n + j);
    out.put(y + j, y_at(j, Whole{}));
  }
  if (nv < n) out.put_n(y + nv, y_at(nv, (int)(n - nv)), (int)(n - nv));
  *mean = mu_hi;
  *rstd = rs;
}

// dx for one row (through out, as layer_norm_row), and dγ/dβ partials += this row's dy∘x̂
// and dy. Both passes prefetch half of the next row's dy and x (dy_next, x_next; nullptr
// for the last row).
template <class Out>
static inline void layer_norm_backward_row(const float* dy, const float* x, const float* gamma,
                                           float mu, float rs, int64_t n, float* dx, float* pg,
                                           float* pb, Out& out, const float* dy_next,
                                           const float* x_next) {
  const int64_t nv = n - n % VL;
  const V vmu = vset1(mu), vrs = vset1(rs);
  // Σ g and Σ g∘x̂ (g = γ∘dy), two chains each.
  V a0 = vzero(), a1 = vzero(), b0 = vzero(), b1 = vzero();
  int64_t j = 0;
  for (; j + 2 * VL <= nv; j += 2 * VL) {
    prefetch_half(dy_next, x_next, j);
    const V g0 = vmul(vload(gamma + j), vload(dy + j)), g1 = vmul(vload(gamma + j + VL), vload(dy + j + VL));
    a0 = vadd(a0, g0);
    a1 = vadd(a1, g1);
    b0 = vfma(g0, vmul(vsub(vload(x + j), vmu), vrs), b0);
    b1 = vfma(g1, vmul(vsub(vload(x + j + VL), vmu), vrs), b1);
  }
  for (; j < nv; j += VL) {
    const V g0 = vmul(vload(gamma + j), vload(dy + j));
    a0 = vadd(a0, g0);
    b0 = vfma(g0, vmul(vsub(vload(x + j), vmu), vrs), b0);
  }
  float sg = vsum(vadd(a0, a1)), sgx = vsum(vadd(b0, b1));
  for (; j < n; ++j) {
    const float g = gamma[j] * dy[j];
    sg += g;
    sgx += g * ((x[j] - mu) * rs);
  }
  const float a = sg / (float)n, b = sgx / (float)n;  // mean(g), mean(g∘x̂)
  const V neg_a = vset1(-a), vb = vset1(b);
  // dx[k ..] and the partials, for whole vectors and the tail. The multiply-adds are
  // explicit: left to the compiler, their contraction differed between the two Out
  // instantiations, and a streamed row must equal the same row computed in cache.
  const auto dx_at = [&](int64_t k, auto lanes) {
    const V d = vload_k(dy + k, lanes), xh = vmul(vsub(vload_k(x + k, lanes), vmu), vrs);
    vstore_k(pg + k, vfma(d, xh, vload_k(pg + k, lanes)), lanes);
    vstore_k(pb + k, vadd(vload_k(pb + k, lanes), d), lanes);
    return vmul(vrs, vfnma(xh, vb, vfma(vload_k(gamma + k, lanes), d, neg_a)));  // rs·(g − a − x̂·b)
  };
  for (int64_t k = 0; k < nv; k += VL) {
    prefetch_half(dy_next, x_next, n + k);
    out.put(dx + k, dx_at(k, Whole{}));
  }
  if (nv < n) out.put_n(dx + nv, dx_at(nv, (int)(n - nv)), (int)(n - nv));
}

// dx for the rows of chunks [c0, c1); chunk c (rows [c·kChunk, (c+1)·kChunk)) accumulates
// its rows, in order, into its own partials.
template <class Out>
static void backward_chunk(const float* dy, const float* x, const float* gamma, const float* mean,
                           const float* rstd, int64_t rows, int64_t n, float* dx, float* part,
                           int64_t c) {
  float* pg = part + 2 * c * n;
  float* pb = pg + n;
  const int64_t r1 = (c + 1) * kChunk < rows ? (c + 1) * kChunk : rows;
  Out out;
  for (int64_t r = c * kChunk; r < r1; ++r) {
    layer_norm_backward_row(dy + r * n, x + r * n, gamma, mean[r], rstd[r], n, dx + r * n, pg, pb, out,
                            next_row(dy, r, rows, n), next_row(x, r, rows, n));
  }
  out.finish();
}

// dx for every row, chunk by chunk over threads.
static void backward_chunks(const float* dy, const float* x, const float* gamma, const float* mean,
                            const float* rstd, int64_t rows, int64_t n, float* dx, float* part,
                            int64_t nchunks) {
  const bool stream = rows * n * (int64_t)sizeof(float) >= kTxStreamBytes && !tx_stream_aliases(dx, dy) &&
                      !tx_stream_aliases(dx, x);
  const int64_t work = rows * n * 10;
  (void)work;  // (unused in a build without OpenMP)
  TX_OMP_FOR(work)
  for (int64_t c = 0; c < nchunks; ++c) {
    if (stream) {
      backward_chunk<TxStream>(dy, x, gamma, mean, rstd, rows, n, dx, part, c);
      tx_stream_fence();  // this chunk's streaming stores, before anyone reads dx
    } else {
      backward_chunk<CachedOut>(dy, x, gamma, mean, rstd, rows, n, dx, part, c);
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

// This thread's rows of the forward (inside a parallel region; static schedule: its rows
// are contiguous, one run for a TxStream).
template <class Out>
static void forward_rows(const float* x, const float* gamma, const float* beta, float eps,
                         int64_t rows, int64_t n, float* y, float* mean, float* rstd) {
  Out out;
#pragma omp for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    layer_norm_row(x + r * n, gamma, beta, eps, n, y + r * n, mean + r, rstd + r, out,
                   next_row(x, r, rows, n));
  }
  out.finish();
}

}  // namespace

void layer_norm_forward(const float* x, const float* gamma, const float* beta, float eps,
                        int64_t rows, int64_t n, float* y, float* mean, float* rstd) {
  const bool stream = rows * n * (int64_t)sizeof(float) >= kTxStreamBytes && !tx_stream_aliases(y, x);
#pragma omp parallel num_threads(::tx::threads_for(rows * n * 6))
  {
    if (stream) {
      forward_rows<TxStream>(x, gamma, beta, eps, rows, n, y, mean, rstd);
      tx_stream_fence();  // each thread orders its own streaming stores
    } else {
      forward_rows<CachedOut>(x, gamma, beta, eps, rows, n, y, mean, rstd);
    }
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
