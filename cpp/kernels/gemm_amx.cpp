// Pre-packed bf16 GEMM on AMX tiles (Intel Sapphire Rapids and later): prompt pre-fill
// with bf16 weights. Compiled once with AVX-512 + AMX flags (CMakeLists.txt: only where
// the compiler has them, on Linux); only gemm.cpp's AVX-512 variant calls it, after usable().
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
#endif

namespace tx {
namespace amx {

static bool g_allowed = true;
void set_allowed(bool allowed) { g_allowed = allowed; }

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

// n (0..32) values of a row → 32 bf16 hi and lo terms (zeros past n).
inline void split_chunk(const float* a, int64_t n, uint16_t* hi, uint16_t* lo) {
  const __mmask16 m0 = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
  const __mmask16 m1 = n >= 32 ? (__mmask16)0xFFFF : n > 16 ? (__mmask16)((1u << (n - 16)) - 1) : 0;
  const __m512 x0 = _mm512_maskz_loadu_ps(m0, a), x1 = _mm512_maskz_loadu_ps(m1, a + 16);
  const __m512i h = (__m512i)_mm512_cvtne2ps_pbh(x1, x0);  // x0 in the low half
  const __m512 h0 = widen_bf16(_mm512_castsi512_si256(h)), h1 = widen_bf16(_mm512_extracti64x4_epi64(h, 1));
  const __m512 inf = _mm512_set1_ps(__builtin_inff());
  const __mmask16 f0 = _mm512_cmp_ps_mask(_mm512_abs_ps(h0), inf, _CMP_LT_OQ);
  const __mmask16 f1 = _mm512_cmp_ps_mask(_mm512_abs_ps(h1), inf, _CMP_LT_OQ);
  const __m512 l0 = _mm512_maskz_sub_ps(f0, x0, h0), l1 = _mm512_maskz_sub_ps(f1, x1, h1);
  _mm512_store_si512(hi, h);
  _mm512_store_si512(lo, (__m512i)_mm512_cvtne2ps_pbh(l1, l0));
}

// Rows [16·rb, 16·rb + 16) of A → the hi / lo tiles of row block rb: tile (rb, kb) at
// (rb·KB + kb)·TILE, row i of it the 32 values k = 32kb .. 32kb + 31. Rows past M are zero.
void pack_row_block(const float* A, int64_t lda, int64_t M, int64_t K, int64_t KB, int64_t rb, uint16_t* Ah,
                    uint16_t* Al) {
  for (int64_t kb = 0; kb < KB; ++kb) {
    uint16_t *th = Ah + (rb * KB + kb) * TILE, *tl = Al + (rb * KB + kb) * TILE;
    for (int64_t i = 0; i < 16; ++i) {
      const int64_t row = rb * 16 + i, k0 = kb * 32;
      const int64_t n = row < M ? (K - k0 < 32 ? K - k0 : 32) : 0;
      split_chunk(A + (row < M ? row : 0) * lda + k0, n, th + i * 32, tl + i * 32);
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

// The 32 x 32 block of C for row blocks (rb, rb + 1) and one panel, K chunks [kb0, kb1),
// added to acc (32 x 32 floats; load = false: starting from 0). B chunk kb is pair rows
// [16kb, 16kb + 16) of the panel, read in place; the last, partial chunk comes from
// `tail` (zero-padded: rows past the panel's end may be the next panel's weights, and
// 0·inf would be NaN).
void block_32x32(const uint16_t* Ah, const uint16_t* Al, int64_t rb, int64_t KB, int64_t kb0, int64_t kb1,
                 const uint16_t* panel, int64_t full, const uint16_t* tail, float* acc, bool load) {
  if (load) {
    _tile_loadd(0, acc, 128);
    _tile_loadd(1, acc + 16, 128);
    _tile_loadd(2, acc + 16 * 32, 128);
    _tile_loadd(3, acc + 16 * 32 + 16, 128);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  const uint16_t *h = Ah + rb * KB * TILE, *l = Al + rb * KB * TILE;
  const int64_t next = KB * TILE;  // row block rb + 1
  for (int64_t kb = kb0; kb < kb1; ++kb) {
    const uint16_t* b = kb < full ? panel + kb * 16 * 2 * PW : tail;
    _tile_loadd(6, b, 4 * PW);       // columns 0-15 of the panel
    _tile_loadd(7, b + PW, 4 * PW);  // columns 16-31
    _tile_loadd(4, h + kb * TILE, 64);
    _tile_loadd(5, h + next + kb * TILE, 64);
    dot_2x2();
    _tile_loadd(4, l + kb * TILE, 64);
    _tile_loadd(5, l + next + kb * TILE, 64);
    dot_2x2();
  }
  _tile_stored(0, acc, 128);
  _tile_stored(1, acc + 16, 128);
  _tile_stored(2, acc + 16 * 32, 128);
  _tile_stored(3, acc + 16 * 32 + 16, 128);
}

// C[i][j] = ((accumulate ? C[i][j] : 0) + bias[j]) + acc[i][j] for the block's valid
// rows and columns (the same init as gemm.cpp's tiles).
void store_block(const float* acc, float* C, int64_t ldc, int64_t rows, int64_t cols, const float* bias,
                 bool accumulate) {
  for (int half = 0; half < 2; ++half) {
    const int64_t c0 = 16 * half, n = cols - c0;
    if (n <= 0) break;
    const __mmask16 m = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
    const __m512 b = bias ? _mm512_maskz_loadu_ps(m, bias + c0) : _mm512_setzero_ps();
    for (int64_t i = 0; i < rows; ++i) {
      float* c = C + i * ldc + c0;
      const __m512 init = accumulate ? _mm512_add_ps(_mm512_maskz_loadu_ps(m, c), b) : b;
      _mm512_mask_storeu_ps(c, m, _mm512_add_ps(init, _mm512_loadu_ps(acc + i * 32 + c0)));
    }
  }
}

}  // namespace

bool usable() {
  static const bool ok = capable();
  return ok && g_allowed;
}

void bf16_gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const uint16_t* Wp,
               const float* bias, float* C, int64_t ldc, bool accumulate) {
  const int64_t KB = (K + 31) / 32, K2 = (K + 1) / 2, full = K2 / 16;
  const int64_t panels = (N + PW - 1) / PW, panel_elems = K2 * 2 * PW;
  const int64_t RB = (M + 31) / 32 * 2;  // 16-row blocks, an even count (C blocks of 32 rows)
  const size_t a_elems = (size_t)(RB * KB * TILE);
  uint16_t* Ah = static_cast<uint16_t*>(aligned_alloc(64, 2 * a_elems * sizeof(uint16_t)));
  if (!Ah) throw std::bad_alloc();
  uint16_t* Al = Ah + a_elems;
  // Cache roles (L2 = 2 MiB on Sapphire Rapids), BLIS-like: K in blocks of <= 768; per K
  // block a chunk of A rows (hi + lo, <= 768 KiB) stays in L2 while the thread's panels
  // stream past it in groups whose B (<= 512 KiB) is reused by every 32-row block of the
  // chunk; the chunk x group partial sums (<= 512 KiB, `cbuf`) are reloaded into the tiles
  // per K block. Measured here, 1 thread, 512x768x2304: 195 GFLOP/s with all of A (1.5 MiB)
  // swept per panel group, 250-420 with 1 MiB chunks; at K = 3072 the K blocks keep the
  // chunk at 256 rows instead of 64, so B streams from L3 4x less often (512x3072x768,
  // cold weights: median 244 -> 344 GFLOP/s over three interleaved runs).
  const int64_t nkb = (KB + KB_MAX - 1) / KB_MAX, kbs = (KB + nkb - 1) / nkb;  // balanced K blocks
  const int64_t group = imin64(GROUP_MAX, imax64(1, (int64_t)(TX_AMX_B_KB << 10) / (kbs * 16 * 4 * PW)));
  const int64_t chunk = imin64(imax64(1, (int64_t)(TX_AMX_A_KB << 10) / (32 * 4 * kbs * 32)),
                               imax64(1, (int64_t)(TX_AMX_C_KB << 10) / (group * 4096)));
  const int nt = threads_for(M * N * K / 8);
  const int64_t cbuf_floats = chunk * group * 1024;
  float* cbuf_all = static_cast<float*>(aligned_alloc(64, (size_t)(nt * cbuf_floats) * sizeof(float)));
  if (!cbuf_all) {
    free(Ah);
    throw std::bad_alloc();
  }
#if defined(_OPENMP)
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
  {
    int64_t r0, r1;
    team_share(RB, r0, r1);
    for (int64_t rb = r0; rb < r1; ++rb) pack_row_block(A, lda, M, K, KB, rb, Ah, Al);
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
        if (full * 16 < K2) {  // each panel's partial last chunk, zero-padded
          for (int64_t p = g; p < g1; ++p) {
            memset(tail[p - g], 0, sizeof tail[0]);
            memcpy(tail[p - g], Wp + p * panel_elems + full * 16 * 2 * PW,
                   (size_t)(K2 - full * 16) * 2 * PW * sizeof(uint16_t));
          }
        }
        for (int64_t kb0 = 0; kb0 < KB; kb0 += kbs) {
          for (int64_t q = c0; q < c1; ++q) {
            for (int64_t p = g; p < g1; ++p) {
              block_32x32(Ah, Al, 2 * q, KB, kb0, imin64(kb0 + kbs, KB), Wp + p * panel_elems, full, tail[p - g],
                          cbuf + ((q - c0) * group + (p - g)) * 1024, kb0 > 0);
            }
          }
        }
        for (int64_t q = c0; q < c1; ++q) {
          const int64_t i0 = 32 * q, rows = imin64(M - i0, 32);
          for (int64_t p = g; p < g1; ++p) {
            const int64_t j0 = p * PW;
            store_block(cbuf + ((q - c0) * group + (p - g)) * 1024, C + i0 * ldc + j0, ldc, rows,
                        imin64(N - j0, PW), bias ? bias + j0 : nullptr, accumulate);
          }
        }
      }
    }
    _tile_release();
  }
  free(cbuf_all);
  free(Ah);
}

#else  // no AMX in this build: the AVX-512 variant keeps its own bf16 path

bool usable() { return false; }

void bf16_gemm(int64_t, int64_t, int64_t, const float*, int64_t, const uint16_t*, const float*, float*, int64_t,
               bool) {}

#endif

}  // namespace amx
}  // namespace tx
