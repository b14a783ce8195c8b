// GEMMs on AMX tiles (Intel Sapphire Rapids and later): prompt pre-fill with bf16 weights
// (bf16_gemm), and fp32 GEMMs at matmul precision "high" (f32_gemm, opt-in). Compiled once
// with AVX-512 + AMX flags (CMakeLists.txt: only where the compiler has them, on Linux);
// only gemm.cpp's AVX-512 variant calls it, after usable().
//
// Tiles: eight registers of 16 rows x 64 bytes. TDPBF16PS(C, A, B) adds to each fp32 C[m][n]
// the dot products of bf16 pairs: Σ_j A[m][2j]·B[2j][n] + A[m][2j+1]·B[2j+1][n] over 16 j,
// so one instruction is 16·16·32 multiply-adds (measured here from L1: 420 GFLOP/s on one
// core, ~3x the AVX-512 FP32 FMA peak). The B operand wants k-pairs interleaved per column
// — exactly pack_weight's bf16 layout (gemm.cpp: panel row r = 32 columns of pairs
// (W[2r][j], W[2r+1][j]), 128 bytes): a B tile is 16 pair rows x 16 columns read in place
// with a 128-byte stride, so the weights are never repacked.
//
// Numerics. Our bf16 contract is "bf16 weights, fp32 activations": the GEMV (decoding) and
// AVX2 paths widen each weight exactly and run fp32 FMAs. Rounding the activations to bf16
// as well would add a relative error of 2^-9 per product; instead each a is split in two
// bf16 terms, hi = bf16(a) (round to nearest even) and lo = bf16(a − hi) (a − hi is exact in
// fp32), so |a − hi − lo| <= 2^-8·|a − hi| <= 2^-16·|a| (bf16 keeps 8 significant bits),
// and both terms go through the tiles (twice the tile work, still 3-4x the FP32 path at
// transformer shapes). Products of two bf16 are exact
// in fp32; the tile unit sums them in fp32 in its own order, and flushes subnormal inputs
// and results to zero (irrelevant at activation/weight scales). So the result differs from
// the FP32-FMA paths by summation order and the 2^-16 split error: tests hold it to
// Σ_k |a_k·w_k| · (2^-16 + float32 summation bound) (tests/test_packed.py), far below the
// 2^-8 of the bf16 weights themselves.
// Non-finite a: hi carries it and lo is 0, so inf·w and NaN propagate as in fp32. An inf
// weight meets a zero lo term somewhere: 0·inf = NaN (the FMA paths give ±inf there).
//
// f32_gemm ("bf16x3", as torch's "high" float32 matmul precision describes it): both
// operands fp32, both split, and per K chunk the tiles sum a_lo·b_hi + a_hi·b_hi +
// a_hi·b_lo. Left out: a_lo·b_lo and the two split errors, each <= 2^-18·|a||b|, so the
// result is within 2^-16·Σ|a||b| + the fp32 summation bound of the exact product
// (tests/test_matmul_precision.py) — ~16 significant bits per operand instead of 24, for
// 1.2-2.5x the FP32 FMA path's rate at transformer shapes here (benchmarks/bench_ops.py
// --gemm --high; it swings with the VM's state). 1.5x the tile work of bf16_gemm, plus
// packing op(A) and op(B) per call: both are packed whole by the team before the tiles run,
// into a per-thread workspace; transposed operands go through 16×16 register transposes.
// Each C element is summed by one thread in a fixed order: results do not depend on the
// thread count.
#include "tx/amx.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "tx/cpu.h"
#include "tx/dispatch.h"

#if TX_AMX
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define TX_ISA_NS amx_vec  // vec.h (its 16×16 register transpose) in this file's own namespace
#include "vec.h"
#endif

namespace tx {
namespace amx {

static bool g_allowed = true;
void set_allowed(bool allowed) { g_allowed = allowed; }
static bool g_fast_f32 = false;
void set_fast_f32(bool on) { g_fast_f32 = on; }
bool fast_f32() { return g_fast_f32; }

#if TX_AMX

namespace {

constexpr int64_t PW = 32;    // columns per packed panel (pack_weight's layout)
constexpr int64_t TILE = 512; // bf16 elements of an A tile: 16 rows x 32 k
// L2 budgets (KiB) of the A chunk (hi + lo), the B panel group and the partial sums, and
// the K block size in 32-k chunks (24: K <= 768). Overridable at build time for tuning.
#ifndef TX_AMX_A_KB
#define TX_AMX_A_KB 768
#endif
#ifndef TX_AMX_B_KB
#define TX_AMX_B_KB 512
#endif
#ifndef TX_AMX_C_KB
#define TX_AMX_C_KB 512
#endif
#ifndef TX_AMX_KB_MAX
#define TX_AMX_KB_MAX 24
#endif
constexpr int64_t KB_MAX = TX_AMX_KB_MAX;
constexpr int64_t GROUP_MAX = 16;  // panels per group (B bytes reused from L2)

inline int64_t imin64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax64(int64_t a, int64_t b) { return a > b ? a : b; }

// Linux keeps the tile state off until a process asks (arch_prctl ARCH_REQ_XCOMP_PERM =
// 0x1023 for XFEATURE_XTILEDATA = 18; kernel >= 5.16); a refusal means no AMX here.
bool os_grants_tiles() { return syscall(SYS_arch_prctl, 0x1023, 18) == 0; }

bool capable() {
  const CpuFeatures& f = cpu_features();
  return f.amx_bf16 && f.avx512_bf16 && f.avx512f && f.avx512bw && f.avx512vl && os_grants_tiles();
}

// Palette 1, every tile 16 rows x 64 bytes: 0-3 C (16 x 16 fp32), 4-5 A (16 x 32 bf16),
// 6-7 B (16 pair rows x 16 columns).
void configure_tiles() {
  struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
  } cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.palette = 1;
  for (int t = 0; t < 8; ++t) cfg.rows[t] = 16, cfg.colsb[t] = 64;
  _tile_loadconfig(&cfg);
}

inline __m512 widen_bf16(__m256i h) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// 32 floats (x0: 0-15, x1: 16-31) → their bf16 hi terms and lo terms, each as 32 bf16 in
// order (16 32-bit words, word w = values 2w and 2w + 1: a k pair when x runs along k).
inline void split32(__m512 x0, __m512 x1, __m512i& hi, __m512i& lo) {
  hi = (__m512i)_mm512_cvtne2ps_pbh(x1, x0);  // x0 in the low half
  const __m512 h0 = widen_bf16(_mm512_castsi512_si256(hi)), h1 = widen_bf16(_mm512_extracti64x4_epi64(hi, 1));
  const __m512 inf = _mm512_set1_ps(__builtin_inff());
  const __mmask16 f0 = _mm512_cmp_ps_mask(_mm512_abs_ps(h0), inf, _CMP_LT_OQ);
  const __mmask16 f1 = _mm512_cmp_ps_mask(_mm512_abs_ps(h1), inf, _CMP_LT_OQ);
  lo = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_sub_ps(f1, x1, h1), _mm512_maskz_sub_ps(f0, x0, h0));
}

inline __mmask16 mask16(int64_t n) {
  return n <= 0 ? (__mmask16)0 : n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
}

// n (0..32) values of a row → 32 bf16 hi and lo terms (zeros past n).
inline void split_chunk(const float* a, int64_t n, uint16_t* hi, uint16_t* lo) {
  __m512i h, l;
  split32(_mm512_maskz_loadu_ps(mask16(n), a), _mm512_maskz_loadu_ps(mask16(n - 16), a + 16), h, l);
  _mm512_store_si512(hi, h);
  _mm512_store_si512(lo, l);
}

// Row blocks [rb0, rb1) of op(A), 16 rows each → their hi / lo tiles: tile (rb, kb) at
// (rb·KB + kb)·TILE, row i of it the 32 values k = 32kb .. 32kb + 31. Rows past M are zero.
// trans_a (A stored K×M, op(A)[i, k] = A[k·lda + i]): 16×16 register transposes, K chunk
// by K chunk across all the row blocks, so each row of A is read in one sweep (walking
// down a 64-byte strip instead touches a new page per row).
void pack_rows(bool trans_a, const float* A, int64_t lda, int64_t M, int64_t K, int64_t KB, int64_t rb0,
               int64_t rb1, uint16_t* Ah, uint16_t* Al) {
  if (!trans_a) {
    for (int64_t rb = rb0; rb < rb1; ++rb) {
      for (int64_t kb = 0; kb < KB; ++kb) {
        uint16_t *th = Ah + (rb * KB + kb) * TILE, *tl = Al + (rb * KB + kb) * TILE;
        for (int64_t i = 0; i < 16; ++i) {
          const int64_t row = rb * 16 + i, k0 = kb * 32;
          const int64_t n = row < M ? (K - k0 < 32 ? K - k0 : 32) : 0;
          split_chunk(A + (row < M ? row : 0) * lda + k0, n, th + i * 32, tl + i * 32);
        }
      }
    }
    return;
  }
  for (int64_t kb = 0; kb < KB; ++kb) {
    for (int64_t rb = rb0; rb < rb1; ++rb) {
      uint16_t *th = Ah + (rb * KB + kb) * TILE, *tl = Al + (rb * KB + kb) * TILE;
      const int64_t i0 = rb * 16, k0 = kb * 32;
      const __mmask16 mi = mask16(M - i0);
      __m512 r[2][16];  // r[h][t] = A[k0 + 16h + t, i0 .. i0 + 15]; transposed: op(A) rows
      for (int h = 0; h < 2; ++h) {
        for (int t = 0; t < 16; ++t) {
          const int64_t k = k0 + 16 * h + t;
          r[h][t] = k < K ? _mm512_maskz_loadu_ps(mi, A + k * lda + (mi ? i0 : 0)) : _mm512_setzero_ps();
        }
        amx_vec::transpose_vl(r[h]);
      }
      for (int i = 0; i < 16; ++i) {
        __m512i hw, lw;
        split32(r[0][i], r[1][i], hw, lw);
        _mm512_store_si512(th + i * 32, hw);
        _mm512_store_si512(tl + i * 32, lw);
      }
    }
  }
}

// Panels [p0, p1) of op(B) (panel p: columns 32p .. 32p + 31) → hi and lo panels in
// pack_weight's bf16 layout: pair row r holds (op(B)[2r][j], op(B)[2r + 1][j]) for the 32
// columns j, 128 bytes; KB·16 pair rows (K zero-padded to whole 32-k chunks: no tail).
// Without trans_b, panel p's rows are read from B + p·pstride, ldb apart: pstride = 32 for
// a K×N matrix, K·32 for fp32 weights pre-packed by pack_weight (K×32 panels).
void pack_panels(bool trans_b, const float* B, int64_t ldb, int64_t pstride, int64_t K, int64_t N, int64_t KB,
                 int64_t p0, int64_t p1, uint16_t* Bh, uint16_t* Bl) {
  const int64_t panel = KB * 16 * 2 * PW;
  if (!trans_b) {
    // Rows 2r and 2r + 1 give a pair row; word w of it = (x0[w], x1[w]), i.e. 16-bit
    // element 2w from element w of the split, 2w + 1 from 16 + w. Groups of 8 panels row by
    // row: a K×N B is read in 1 KiB runs, not down a 128-byte strip (a new page per row).
    alignas(64) static const uint16_t pairs[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                                   8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512i idx = _mm512_load_si512(pairs);
    for (int64_t g0 = p0; g0 < p1; g0 += 8) {
      const int64_t g1 = imin64(g0 + 8, p1);
      for (int64_t r = 0; r < KB * 16; ++r) {
        const int64_t k = 2 * r;
        for (int64_t p = g0; p < g1; ++p) {
          for (int c = 0; c < 2; ++c) {
            const __mmask16 mj = mask16(N - p * PW - 16 * c);
            const float* b = B + (mj ? p * pstride + 16 * c : 0);
            if (k + 17 < K) {  // 8 pair rows ahead: the prefetchers start late on each new page
              _mm_prefetch((const char*)(b + (k + 16) * ldb), _MM_HINT_T0);
              _mm_prefetch((const char*)(b + (k + 17) * ldb), _MM_HINT_T0);
            }
            const __m512 x0 = k < K ? _mm512_maskz_loadu_ps(mj, b + k * ldb) : _mm512_setzero_ps();
            const __m512 x1 = k + 1 < K ? _mm512_maskz_loadu_ps(mj, b + (k + 1) * ldb) : _mm512_setzero_ps();
            __m512i hw, lw;
            split32(x0, x1, hw, lw);
            const int64_t at = p * panel + r * 2 * PW + 32 * c;
            _mm512_store_si512(Bh + at, _mm512_permutexvar_epi16(idx, hw));
            _mm512_store_si512(Bl + at, _mm512_permutexvar_epi16(idx, lw));
          }
        }
      }
    }
    return;
  }
  // B stored N×K: row j holds op(B)'s column j with its k pairs adjacent; split 16 rows
  // (one word per pair) and transpose them into 16 pair rows.
  for (int64_t j0 = p0 * PW; j0 < p1 * PW; j0 += 16) {
    const int64_t at = (j0 / PW) * panel + j0 % PW * 2;
    for (int64_t q = 0; q < KB; ++q) {
      const int64_t k0 = 32 * q;
      __m512 hw[16], lw[16];
      for (int t = 0; t < 16; ++t) {
        const int64_t j = j0 + t;
        __m512 x0 = _mm512_setzero_ps(), x1 = x0;
        if (j < N) {
          x0 = _mm512_maskz_loadu_ps(mask16(K - k0), B + j * ldb + k0);
          x1 = _mm512_maskz_loadu_ps(mask16(K - k0 - 16), B + j * ldb + k0 + 16);
        }
        __m512i h, l;
        split32(x0, x1, h, l);
        hw[t] = _mm512_castsi512_ps(h), lw[t] = _mm512_castsi512_ps(l);
      }
      amx_vec::transpose_vl(hw);
      amx_vec::transpose_vl(lw);
      for (int w = 0; w < 16; ++w) {
        _mm512_store_ps(Bh + at + (16 * q + w) * 2 * PW, hw[w]);
        _mm512_store_ps(Bl + at + (16 * q + w) * 2 * PW, lw[w]);
      }
    }
  }
}

// C tiles (0 1 / 2 3) += A tiles (4 / 5) x B tiles (6 7).
inline void dot_2x2() {
  _tile_dpbf16ps(0, 4, 6);
  _tile_dpbf16ps(1, 4, 7);
  _tile_dpbf16ps(2, 5, 6);
  _tile_dpbf16ps(3, 5, 7);
}

// B's panels for the tile loop: hi (and, for fp32 B, lo) terms, panel_elems bf16 apart;
// K2 pair rows, the first `full` 16-row chunks read in place, the rest from a zero-padded
// copy (pre-packed weights end at K2 rows).
struct Panels {
  const uint16_t *hi, *lo;
  int64_t panel_elems, K2, full;
};

// The 32 x 32 block of C for row blocks (rb, rb + 1) and one panel, K chunks [kb0, kb1),
// accumulated in acc (32 x 32 floats, rows ld floats apart). load: start from acc's
// contents; else from `init` (32 floats, every row: the bias) or from 0. B chunk kb is pair
// rows [16kb, 16kb + 16) of the panel, read in place; the last, partial chunk comes from
// `tail` (zero-padded: rows past the panel's end may be the next panel's weights, and
// 0·inf would be NaN). Products per chunk: a_hi·b and a_lo·b, and with lo panels (fp32 B)
// a_lo·b_hi, a_hi·b_hi and a_hi·b_lo.
void block_32x32(const uint16_t* Ah, const uint16_t* Al, int64_t rb, int64_t KB, int64_t kb0, int64_t kb1,
                 const uint16_t* panel, const uint16_t* panel_lo, int64_t full, const uint16_t* tail, float* acc,
                 int64_t ld, const float* init, bool load) {
  if (load) {
    _tile_loadd(0, acc, 4 * ld);
    _tile_loadd(1, acc + 16, 4 * ld);
    _tile_loadd(2, acc + 16 * ld, 4 * ld);
    _tile_loadd(3, acc + 16 * ld + 16, 4 * ld);
  } else if (init) {  // stride 0: every row of the tile reads the same 16 floats
    _tile_loadd(0, init, 0);
    _tile_loadd(1, init + 16, 0);
    _tile_loadd(2, init, 0);
    _tile_loadd(3, init + 16, 0);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  const uint16_t *h = Ah + rb * KB * TILE, *l = Al + rb * KB * TILE;
  const int64_t next = KB * TILE;  // row block rb + 1
  // A tiles 4 / 5 = chunk kb of row blocks rb / rb + 1; B tiles 6 / 7 = a panel chunk's
  // columns 0-15 / 16-31.
  auto load_a = [&](const uint16_t* t, int64_t kb) {
    _tile_loadd(4, t + kb * TILE, 64);
    _tile_loadd(5, t + next + kb * TILE, 64);
  };
  auto load_b = [](const uint16_t* b) {
    _tile_loadd(6, b, 4 * PW);
    _tile_loadd(7, b + PW, 4 * PW);
  };
  for (int64_t kb = kb0; kb < kb1; ++kb) {
    if (kb + 1 < kb1) {
      // The next chunk's B panel rows (2 KiB contiguous per term) into L1 while this chunk's
      // products run: interleaved A/B, 1 thread, +1-10% at 128-512 rows (bf16 and bf16x3);
      // prefetching A's next tiles as well measured no better. (A is reused across the
      // panel group from L2.)
      const int64_t n = kb + 1;
      for (int64_t o = 0; o < 2 * 16 * 2 * PW; o += 64) {
        if (n < full) _mm_prefetch((const char*)(panel + n * 16 * 2 * PW) + o, _MM_HINT_T0);
        if (panel_lo) _mm_prefetch((const char*)(panel_lo + n * 16 * 2 * PW) + o, _MM_HINT_T0);
      }
    }
    load_b(kb < full ? panel + kb * 16 * 2 * PW : tail);
    if (!panel_lo) {  // bf16 weights: a_hi·b, a_lo·b
      load_a(h, kb);
      dot_2x2();
      load_a(l, kb);
      dot_2x2();
      continue;
    }
    // fp32 B (no tail: its panels are padded to whole chunks): a_lo·b_hi, a_hi·b_hi,
    // a_hi·b_lo in this order, so a_hi stays in its tiles for the last two (8 tile loads
    // per 12 products rather than 10).
    load_a(l, kb);
    dot_2x2();
    load_a(h, kb);
    dot_2x2();
    load_b(panel_lo + kb * 16 * 2 * PW);
    dot_2x2();
  }
  _tile_stored(0, acc, 4 * ld);
  _tile_stored(1, acc + 16, 4 * ld);
  _tile_stored(2, acc + 16 * ld, 4 * ld);
  _tile_stored(3, acc + 16 * ld + 16, 4 * ld);
}

// C[i][j] = ((accumulate ? C[i][j] : 0) + bias[j]) + acc[i][j] for the block's valid
// rows and columns (the same init as gemm.cpp's tiles).
void store_block(const float* acc, float* C, int64_t ldc, int64_t rows, int64_t cols, const float* bias,
                 bool accumulate) {
  for (int half = 0; half < 2; ++half) {
    const int64_t c0 = 16 * half, n = cols - c0;
    if (n <= 0) break;
    const __mmask16 m = mask16(n);
    const __m512 b = bias ? _mm512_maskz_loadu_ps(m, bias + c0) : _mm512_setzero_ps();
    for (int64_t i = 0; i < rows; ++i) {
      float* c = C + i * ldc + c0;
      if (i + 4 < rows) _mm_prefetch((const char*)(c + 4 * ldc), _MM_HINT_T0);  // C is usually cold
      const __m512 init = accumulate ? _mm512_add_ps(_mm512_maskz_loadu_ps(m, c), b) : b;
      _mm512_mask_storeu_ps(c, m, _mm512_add_ps(init, _mm512_loadu_ps(acc + i * 32 + c0)));
    }
  }
}

// Both entry points: C = (accumulate ? C : 0) + bias + op(A)·B on the tiles. Each thread
// of the team first packs its share of A's row blocks (pack_a(rb0, rb1)) and of B's panels
// (pack_b(p0, p1): nothing for pre-packed weights); then, after a barrier, the products.
template <class PackA, class PackB>
void tile_gemm(int64_t M, int64_t N, int64_t K, const Panels& B, PackA pack_a, PackB pack_b, uint16_t* Ah,
               uint16_t* Al, const float* bias, float* C, int64_t ldc, bool accumulate) {
  const int64_t KB = (K + 31) / 32, panels = (N + PW - 1) / PW;
  const int64_t RB = (M + 31) / 32 * 2;  // 16-row blocks, an even count (C blocks of 32 rows)
  // Cache roles (L2 = 2 MiB on Sapphire Rapids), BLIS-like: K in blocks of <= 768; per K
  // block a chunk of A rows (hi + lo, <= 768 KiB) stays in L2 while the thread's panels
  // stream past it in groups whose B (<= 512 KiB) is reused by every 32-row block of the
  // chunk; the chunk x group partial sums (<= 512 KiB, `cbuf`) are reloaded into the tiles
  // per K block. Measured here, 1 thread, 512x768x2304: 195 GFLOP/s with all of A (1.5 MiB)
  // swept per panel group, 250-420 with 1 MiB chunks; at K = 3072 the K blocks keep the
  // chunk at 256 rows instead of 64, so B streams from L3 4x less often (512x3072x768,
  // cold weights: median 244 -> 344 GFLOP/s over three interleaved runs).
  const int64_t nkb = (KB + KB_MAX - 1) / KB_MAX, kbs = (KB + nkb - 1) / nkb;  // balanced K blocks
  const int64_t b_terms = B.lo ? 2 : 1;  // fp32 B: hi and lo panels share the B budget
  const int64_t group =
      imin64(GROUP_MAX, imax64(1, (int64_t)(TX_AMX_B_KB << 10) / (b_terms * kbs * 16 * 4 * PW)));
  const int64_t chunk = imin64(imax64(1, (int64_t)(TX_AMX_A_KB << 10) / (32 * 4 * kbs * 32)),
                               imax64(1, (int64_t)(TX_AMX_C_KB << 10) / (group * 4096)));
  const int nt = threads_for(M * N * K / 8);
  const int64_t cbuf_floats = chunk * group * 1024;
  float* cbuf_all = static_cast<float*>(thread_scratch(SCRATCH_TILE_SUMS, (size_t)(nt * cbuf_floats) * sizeof(float)));
#if defined(_OPENMP)
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
  {
    int64_t r0, r1;
    team_share(RB, r0, r1);
    pack_a(r0, r1);
    team_share(panels, r0, r1);
    pack_b(r0, r1);
#if defined(_OPENMP)
#pragma omp barrier
    float* cbuf = cbuf_all + omp_get_thread_num() * cbuf_floats;
#else
    float* cbuf = cbuf_all;
#endif
    // Threads take contiguous panel ranges (each panel's B is read by one thread), or,
    // with fewer panels than threads, ranges of 32-row blocks.
    const int64_t pairs = RB / 2;
    int64_t p0 = 0, p1 = panels, q0 = 0, q1 = pairs;
    if (panels >= nt) team_share(panels, p0, p1);
    else team_share(pairs, q0, q1);
    configure_tiles();
    alignas(64) uint16_t tail[GROUP_MAX][16 * 2 * PW];
    for (int64_t c0 = q0; c0 < q1; c0 += chunk) {
      const int64_t c1 = imin64(c0 + chunk, q1);
      for (int64_t g = p0; g < p1; g += group) {
        const int64_t g1 = imin64(g + group, p1);
        if (B.full * 16 < B.K2) {  // each panel's partial last chunk, zero-padded
          for (int64_t p = g; p < g1; ++p) {
            memset(tail[p - g], 0, sizeof tail[0]);
            memcpy(tail[p - g], B.hi + p * B.panel_elems + B.full * 16 * 2 * PW,
                   (size_t)(B.K2 - B.full * 16) * 2 * PW * sizeof(uint16_t));
          }
        }
        // With one K block, a whole 32 x 32 block inside C is summed in C itself, from C
        // (accumulate) or from the bias, instead of in `cbuf` and then copied: +3-7% at
        // 512x768x3072. (Several K blocks would reload partial sums from C, colder than cbuf:
        // -9% at K = 3072.) Blocks at C's edges, and C += bias + A·B, go through cbuf.
        auto in_place = [&](int64_t q, int64_t p) {
          return KB <= kbs && 32 * q + 32 <= M && p * PW + PW <= N && !(accumulate && bias);
        };
        for (int64_t kb0 = 0; kb0 < KB; kb0 += kbs) {
          for (int64_t q = c0; q < c1; ++q) {
            for (int64_t p = g; p < g1; ++p) {
              const bool direct = in_place(q, p);
              float* acc = direct ? C + 32 * q * ldc + p * PW : cbuf + ((q - c0) * group + (p - g)) * 1024;
              block_32x32(Ah, Al, 2 * q, KB, kb0, imin64(kb0 + kbs, KB), B.hi + p * B.panel_elems,
                          B.lo ? B.lo + p * B.panel_elems : nullptr, B.full, tail[p - g], acc, direct ? ldc : 32,
                          direct && bias ? bias + p * PW : nullptr, kb0 > 0 || (direct && accumulate));
            }
          }
        }
        for (int64_t q = c0; q < c1; ++q) {
          const int64_t i0 = 32 * q, rows = imin64(M - i0, 32);
          for (int64_t p = g; p < g1; ++p) {
            if (in_place(q, p)) continue;
            const int64_t j0 = p * PW;
            store_block(cbuf + ((q - c0) * group + (p - g)) * 1024, C + i0 * ldc + j0, ldc, rows,
                        imin64(N - j0, PW), bias ? bias + j0 : nullptr, accumulate);
          }
        }
      }
    }
    _tile_release();
  }
}

// The packed operands (bf16 hi and lo terms of A and of B), n elements: the calling
// thread's grow-only scratch (dispatch.h). Allocated per call, a training step's large
// operands (the LM head's 50257×768 weight: 150 MiB packed) were fresh mmaps every time,
// and their page faults cost ~15% of the product on 2 threads.
uint16_t* workspace(size_t n) {
  return static_cast<uint16_t*>(thread_scratch(SCRATCH_GEMM_TILES, n * sizeof(uint16_t)));
}

}  // namespace

bool usable() {
  static const bool ok = capable();
  return ok && g_allowed;
}

void bf16_gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const uint16_t* Wp,
               const float* bias, float* C, int64_t ldc, bool accumulate) {
  const int64_t KB = (K + 31) / 32, K2 = (K + 1) / 2, RB = (M + 31) / 32 * 2;
  const size_t a_elems = (size_t)(RB * KB * TILE);
  uint16_t* Ah = workspace(2 * a_elems);
  uint16_t* Al = Ah + a_elems;
  const Panels B{Wp, nullptr, K2 * 2 * PW, K2, K2 / 16};
  tile_gemm(M, N, K, B, [&](int64_t r0, int64_t r1) { pack_rows(false, A, lda, M, K, KB, r0, r1, Ah, Al); },
            [](int64_t, int64_t) {}, Ah, Al, bias, C, ldc, accumulate);
}

// f32_gemm and f32_gemm_prepacked: op(B) from B (ldb, trans_b) or, with pstride = K·32,
// from pack_weight's fp32 panels.
static void f32_tiles(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                      const float* B, int64_t ldb, int64_t pstride, const float* bias, float* C, int64_t ldc,
                      bool accumulate) {
  const int64_t KB = (K + 31) / 32, RB = (M + 31) / 32 * 2, panels = (N + PW - 1) / PW;
  const size_t a_elems = (size_t)(RB * KB * TILE), panel = (size_t)(KB * 16 * 2 * PW);
  uint16_t* Ah = workspace(2 * a_elems + 2 * panels * panel);
  uint16_t *Al = Ah + a_elems, *Bh = Al + a_elems, *Bl = Bh + panels * panel;
  const Panels P{Bh, Bl, (int64_t)panel, KB * 16, KB};
  tile_gemm(M, N, K, P, [&](int64_t r0, int64_t r1) { pack_rows(trans_a, A, lda, M, K, KB, r0, r1, Ah, Al); },
            [&](int64_t p0, int64_t p1) { pack_panels(trans_b, B, ldb, pstride, K, N, KB, p0, p1, Bh, Bl); },
            Ah, Al, bias, C, ldc, accumulate);
}

void f32_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
              const float* B, int64_t ldb, const float* bias, float* C, int64_t ldc, bool accumulate) {
  f32_tiles(trans_a, trans_b, M, N, K, A, lda, B, ldb, PW, bias, C, ldc, accumulate);
}

void f32_gemm_prepacked(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* Wp,
                        const float* bias, float* C, int64_t ldc, bool accumulate) {
  f32_tiles(false, false, M, N, K, A, lda, Wp, PW, K * PW, bias, C, ldc, accumulate);
}

#else  // no AMX in this build: the AVX-512 variant keeps its own bf16 path

bool usable() { return false; }

void bf16_gemm(int64_t, int64_t, int64_t, const float*, int64_t, const uint16_t*, const float*, float*, int64_t,
               bool) {}
void f32_gemm(bool, bool, int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t, const float*,
              float*, int64_t, bool) {}
void f32_gemm_prepacked(int64_t, int64_t, int64_t, const float*, int64_t, const float*, const float*, float*,
                        int64_t, bool) {}

#endif

}  // namespace amx
}  // namespace tx
