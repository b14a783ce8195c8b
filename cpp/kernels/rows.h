// Row passes shared by softmax and cross-entropy (both: m = max_j x_j, then
// e_j = exp(x_j − m) and Σ_j e_j in one pass), and the next-row prefetch of the row
// kernels (softmax, layer norm), on vec.h's vectors. Each ISA variant's translation unit
// includes it; it opens the variant's namespace itself.
#pragma once

#include "vec.h"
#include "vmath.h"

namespace tx {
namespace TX_ISA_NS {
namespace {

// Row r + 1 of a (rows, n) array at a, to prefetch while row r is computed; nullptr after
// the last row and for rows over 16 KiB (a line asked for a whole row ahead would leave
// L1 before it is read; within a long row the hardware prefetcher keeps up).
TX_INLINE const float* next_row(const float* a, int64_t r, int64_t rows, int64_t n) {
  return r + 1 < rows && n <= 4096 ? a + (r + 1) * n : nullptr;
}

// Asks for the cache line at p (nullptr: nothing). Row loops call it on the next row at
// the pace they read this one. One core keeps only ~16 L1 misses in flight: a burst of a
// whole row's prefetches at the start of a row stalls there on full fill buffers and
// leaves the memory idle during the row's later passes.
TX_INLINE void prefetch_line(const float* p) {
  if (p) __builtin_prefetch(p, 0, 3);
}

// For a kernel making two passes over rows of a and b (length n): prefetches element j / 2
// of the next rows a_next and b_next (nullptr: none); the first pass calls it with its j,
// the second with n + j, so each pass asks for half of the next rows. (Layer norm
// backward: +22% over the whole next row at the start of the row, 8192×768; its forward
// makes three passes and prefetches in the first and the last.)
TX_INLINE void prefetch_half(const float* a_next, const float* b_next, int64_t j) {
  const uint64_t h = (uint64_t)j >> 1;  // j >= 0: a shift (j / 2 on a signed j costs 3 instructions)
  prefetch_line(a_next ? a_next + h : nullptr);
  prefetch_line(b_next ? b_next + h : nullptr);
}

static inline float max_of_row(const float* x, int64_t n) {
  const int64_t nv = n - n % VL;
  float m = row_max(x, nv, -__builtin_inff());  // vec.h
  for (int64_t j = nv; j < n; ++j) m = m > x[j] ? m : x[j];
  return m;
}

// Where y sits 1..1023 bytes past x modulo 4 KiB, a load of x that follows the stores of
// y closely can match one of them in its low 12 address bits and wait for it ("4K
// aliasing": 3x slower, measured on Sapphire Rapids when y − x ≡ 16..255 bytes, e.g. y =
// np.empty_like(x) allocated right after x). The window is wider than one group of stores
// because stores stay pending for a few groups.
TX_INLINE bool loads_must_lead(const float* x, const float* y) { return tx_past_mod_4k(y, x, 1024); }

// y_j = exp(x_j − m); returns Σ_j y_j, summed as the exps are computed (one pass; the
// masked tail vector is stored first and its lanes added after the full vectors).
// Meanwhile it asks for the next row, `ahead` floats on (0: none), of x and of y (for
// writing: its read-for-ownership), one cache line each per vector of exps: spread over
// the pass, as prefetch_line says (a burst at the row start measured 1.2-1.3x slower for
// cold rows of 512-3072 floats, 1 thread).
static inline float exp_shifted_sum(const float* x, float m, float* y, int64_t n, int64_t ahead) {
  const V mv = vset1(m);
  const int64_t nv = n - n % VL;
  // Four accumulators over groups of four vectors, the rest into the first: row_sum's
  // order (vec.h).
  V acc[4] = {vzero(), vzero(), vzero(), vzero()};
  const auto group = [&](int64_t j, const V (&a)[4]) {  // exps of x[j : j + 4·VL] from a
    V e[4];
    for (int g = 0; g < 4; ++g) {
      __builtin_prefetch(x + ahead + j + g * VL, 0, 3);
      __builtin_prefetch(y + ahead + j + g * VL, 1, 3);
      e[g] = vexp_le0(vsub(a[g], mv));  // x − m <= 0
    }
    for (int g = 0; g < 4; ++g) vstore(y + j + g * VL, e[g]), acc[g] = vadd(acc[g], e[g]);
  };
  int64_t j = 0;
  if (nv >= 4 * VL && loads_must_lead(x, y)) {
    // The loads run one group ahead of the stores, older than any store they could match.
    // (Elsewhere this costs: 4 more live vectors, which AVX2's 16 registers spill. Zen 3,
    // 1 thread, rows in L1: the pass took ~10-12 cycles per vector this way, 7-8 without.)
    V a[4];
    for (int g = 0; g < 4; ++g) a[g] = vload(x + g * VL);
    for (;; j += 4 * VL) {
      const bool more = j + 8 * VL <= nv;
      V cur[4] = {a[0], a[1], a[2], a[3]};
      if (more) {
        for (int g = 0; g < 4; ++g) a[g] = vload(x + j + (4 + g) * VL);
      }
      group(j, cur);
      if (!more) break;
    }
    j += 4 * VL;
  }
  for (; j + 4 * VL <= nv; j += 4 * VL) {
    V a[4];
    for (int g = 0; g < 4; ++g) a[g] = vload(x + j + g * VL);
    group(j, a);
  }
  for (; j < nv; j += VL) {
    __builtin_prefetch(x + ahead + j, 0, 3);
    __builtin_prefetch(y + ahead + j, 1, 3);
    const V e = vexp_le0(vsub(vload(x + j), mv));
    vstore(y + j, e);
    acc[0] = vadd(acc[0], e);
  }
  float s = vsum(vadd(vadd(acc[0], acc[1]), vadd(acc[2], acc[3])));
  if (nv < n) {
    const int k = (int)(n - nv);
    vstore_n(y + nv, vexp_le0(vsub(vload_n(x + nv, k), mv)), k);
    for (int64_t jt = nv; jt < n; ++jt) s += y[jt];
  }
  return s;
}

}  // namespace
}  // namespace TX_ISA_NS
}  // namespace tx
