// GEMM: C = op(A)·op(B) [+ bias] [+ C], row-major float32, and sum_rows (the bias
// gradient). The BLIS/GotoBLAS design (Goto & van de Geijn, "Anatomy of high-performance
// matrix multiplication", 2008; Van Zee & van de Geijn, BLIS 2015), with the roles BLIS
// gives A and B on Skylake-X (its 32×6 kernel) because our tile's vector dimension is N:
//
//   for pc in K step KC:
//     for ic in M step MC:          pack op(A)[ic:ic+mc, pc:pc+kc] into MR-tall slivers (L3)
//       for jc in N step NC:        pack op(B)[pc:pc+kc, jc:jc+nc] into NR-wide slivers (L2)
//         for ir in mc step MR:     one A sliver kc×MR, reused across the row (L1)
//           for jr in nc step NR:   micro-kernel: MR×NR tile of C held in registers;
//                                   B slivers stream from L2
//
// Each operand is packed once per thread (B once per MC rows). The micro-kernel
// prefetches the next C tile while it runs (C usually lives in L3).
//
// Packing reads op(A)/op(B) in place whatever trans_a/trans_b are and writes the single
// layout the micro-kernel wants (A: k-major MR-wide slivers, B: k-major NR-wide
// slivers), zero-padded to full MR/NR, so edge tiles run the same inner loop and only
// their load/store of C is masked.
//
// Numerics. Every element of C is ONE sequential FMA chain over k:
//     c = init;  for k in 0..K-1: c = fma(op(A)[i,k], op(B)[k,j], c)
// with init = (accumulate ? C : 0) + bias. KC blocking does not change this chain: the
// tile is stored after one KC block and reloaded (exactly) before the next. The chain
// depends only on (i, j, K), never on the tile an element falls in, the thread that
// computes it or the blocking by threads — so results are bit-identical for any thread
// count (threads split M or N, never K).
//
// Skinny M (decoding, small batches: up to 32 / 64 rows) skips packing, which would cost as much
// as the product: without trans_b, B is streamed once, row by row, updating C in place
// (the same FMA chain per element); with trans_b, each C[i, j] is a dot product of a row
// of op(A) with a row of B, summed in SIMD lanes then by a fixed tree (a different
// but equally thread-independent order). These paths are memory-bound and software-
// prefetch B ahead of the loads (prefetches change no result). Pre-packed weights with
// M <= 6 take the GEMV path (pk_gemv): several panels streamed at once per thread.
//
// Three variants from one source: the vector type V (vec.h) is __m512 (AVX-512: 14×32
// tile), __m256 (AVX2+FMA: 6×16) or a portable 4-float vector (6×8).
#include <stdlib.h>
#include <string.h>

#include <new>
#include <type_traits>

#include "tx/amx.h"
#include "tx/cpu.h"
#include "tx/kernels.h"
#include "vec.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace tx {
namespace TX_ISA_NS {

namespace {

// ---------------------------------------------------------------------------------
// Register tiles per variant (V and its operations: vec.h).
// ---------------------------------------------------------------------------------
#if defined(__AVX512F__)
// 14×32 tile: 28 zmm accumulators + 2 for the B sliver + 1 broadcast (of 32).
constexpr int MR = 14, NV = 2;
// KC×NC = 768 KiB B block (L2: 2 MiB on Sapphire Rapids, 1 MiB on Zen 4); MC = 150 tiles
// (2100 rows, 4 MiB A block in L3; A slivers are read once per row of C tiles, so even
// DRAM would do): B is packed once for M <= 2100 (+4% at 2048² over MC = 1008). KC = 512
// rather than 256 halves the passes over C. The inner loops alone (packed blocks, C in L3,
// 1 thread, medians of 31 interleaved runs): 126 GF/s at KC×NC = 512×384 or 512×512, 115
// at 512×768, 114 at 256×1536; the previous nest (A block in L2, B block 2 MiB: B slivers
// from L3) 97; the micro-kernel alone 125.
constexpr int64_t KC = 512, KC_SMALL_L2 = 512, MC = MR * 150, NC = 384;
// Skinny paths: SK_KB rows of B per pass over C; dot path: SD_R × SD_J dots at a time.
constexpr int SK_KB = 8, SD_R = 4, SD_J = 4;

#elif defined(__AVX2__)
// 6×16 tile: 12 ymm accumulators + 2 B + 1 broadcast (of 16).
constexpr int MR = 6, NV = 2;
// B block 256 KiB, or 128 KiB (KC = 256) where the L2 holds less than 4/3 of that (the
// 256 KiB L2 of older AVX2 cores; kc_for_l2). The same order as AVX-512 measured +15-25%
// over the textbook one (A block in L2) on Sapphire Rapids, 1 thread; NC = 128 and 256
// alike there. KC = 512 over 256 (interleaved A/B, 1 and 2 threads): pre-packed weights
// +0-5%, plain GEMMs within ±1.5%.
constexpr int64_t KC = 512, KC_SMALL_L2 = 256, MC = MR * 350, NC = 128;
constexpr int SK_KB = 8, SD_R = 2, SD_J = 4;

#else
// 6×8 tile: 12 xmm-sized accumulators (16 xmm on baseline x86-64).
constexpr int MR = 6, NV = 2;
constexpr int64_t KC = 256, KC_SMALL_L2 = 256, MC = MR * 350, NC = 128;
constexpr int SK_KB = 8, SD_R = 2, SD_J = 4;

#endif

constexpr int NR = NV * VL;

// Software prefetch of the cache line at p into L1 (a hint: never faults). The skinny
// paths are memory-bound and use it to keep more misses in flight than the hardware
// prefetchers start on their own (see the GEMV path below for measurements).
TX_INLINE void prefetch_line(const void* p) {
#if defined(__AVX2__) || defined(__AVX512F__)
  _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0);
#elif defined(__GNUC__)
  __builtin_prefetch(p, 0, 3);
#else
  (void)p;
#endif
}
// Rows of an operand whose stride is a multiple of 4 KiB put their lines at one column in
// the same L1 set (32 KiB 8-way L1s, Zen 3 and Skylake: 4 KiB per way; 48 KiB 12-way ones
// alike). The skinny paths read 8 such rows at once, which fills a set already; software-
// prefetching 8 more rows (the next pass's) evicts lines before they are used. So those
// paths prefetch only rows that do not alias. Measured on Zen 3 (1 thread, M = 1,
// x·W with W 768×3072, ldb = 12 KiB): 2.2-4x slower with the prefetch (7-8 GB/s against
// 17 from DRAM, 34 from L3), at any distance of 8-32 rows, T0 or T2 hint; with
// W 3072×768 (3 KiB rows) the prefetch is +35% from DRAM.
TX_INLINE bool rows_alias_in_l1(int64_t ld) { return (ld * (int64_t)sizeof(float)) % 4096 == 0; }
// Up to these M the skinny paths beat packing (measured on Sapphire Rapids, AVX-512:
// packing B costs about as much as M·(a few) FMAs per element of B): streaming
// (not trans_b) up to 32 rows, dot products (trans_b) up to 64.
constexpr int64_t SKINNY_M_STREAM = 32, SKINNY_M_DOT = 64;
// Matmul precision "high" takes the AMX tiles from this many rows (they work in blocks of
// 32 rows): 512x768x3072-like products at M = 40 ran 0.89x the FMA path, M = 64 1.12x,
// M = 96 1.3x (1 thread).
constexpr int64_t AMX_F32_MIN_M = 48;

static_assert(MC % MR == 0 && NC % NR == 0 && NC % 32 == 0 && 32 % NR == 0, "blocking must be whole tiles");

TX_INLINE int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
TX_INLINE int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
TX_INLINE int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Threads for a GEMM of M·N·K multiply-adds: one below ~256k (a fork/join costs a few
// µs, more than the work), else the process-wide count.
TX_INLINE int gemm_threads(int64_t M, int64_t N, int64_t K) {
  return ::tx::threads_for((M * N * K) / 8);
}

// 64-byte-aligned scratch (cache-line aligned: panel loads are aligned and slices given
// to different threads never share a line), the calling thread's grow-only buffer
// (dispatch.h: per-call allocations came back as fresh, faulting pages). Throws
// std::bad_alloc outside any parallel region, which pybind11 turns into MemoryError.
static float* scratch_alloc(int64_t floats) {
  return static_cast<float*>(thread_scratch(SCRATCH_GEMM, (size_t)imax(floats, 16) * sizeof(float)));
}

TX_INLINE int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// d[0:total] = s[0:n] followed by zeros (n <= total), in vector steps (the plain loop
// would become a libc memcpy call per sliver row).
template <int TOTAL>
TX_INLINE void copy_pad(float* __restrict d, const float* __restrict s, int n) {
  TX_UNROLL for (int l = 0; l < TOTAL; l += VL) {
    const V x = n - l >= VL ? vload(s + l) : vload_n(s + l, n - l);
    if (TOTAL - l >= VL) {
      vstore(d + l, x);
    } else {
      vstore_n(d + l, x, TOTAL - l);
    }
  }
}

// The transposing pack reads VL floats from each of up to VL rows per step; the hardware
// prefetchers follow that many strided streams poorly: prefetch PACK_PF floats ahead in
// each row (measured on Sapphire Rapids, 1 thread: ~+10% for the pack).
constexpr int64_t PACK_PF = 64;

// Transposing pack: dst[k*LD + i] = src[i*lds + k] for i < rows (zeros for rows <= i < W)
// and k < kc; W <= VL floats are written per k. Used where a sliver gathers rows of
// the stored matrix (A not transposed, B transposed): VL×VL register transposes
// (transpose_vl, vec.h) instead of kc·W strided scalar stores.
template <int W, int LD>
TX_INLINE void pack_transposed(const float* __restrict src, int64_t lds, int rows, int64_t kc,
                               float* __restrict dst) {
#if defined(TX_HAVE_TRANSPOSE)
  static_assert(W <= VL && VL <= 2 * W, "one register transpose per VL×VL block; spills fit one row");
  for (int64_t k0 = 0; k0 < kc; k0 += VL) {
    const int kn = (int)imin(VL, kc - k0);
    if (k0 + PACK_PF < kc) {
      for (int i = 0; i < rows; ++i) prefetch_line(src + i * lds + k0 + PACK_PF);
    }
    V r[VL];
    TX_UNROLL for (int i = 0; i < VL; ++i) {
      const float* s = src + i * lds + k0;
      r[i] = i >= rows ? vzero() : kn == VL ? vload(s) : vload_n(s, kn);
    }
    transpose_vl(r);
    for (int k = 0; k < kn; ++k) {
      // W < VL with rows back to back (LD == W, the A sliver): a full store spills
      // VL − W <= W lanes into row k + 1, which that row's store then overwrites; only the
      // sliver's last row needs the masked store (AVX2's vmaskmovps stores are slow on Zen 3:
      // the A pack from 2048×2048 ran 1.5-1.8x faster without them, 1 thread).
      if (W == VL || (LD == W && k0 + k + 1 < kc)) {
        vstore(dst + (k0 + k) * LD, r[k]);
      } else {
        vstore_n(dst + (k0 + k) * LD, r[k], W);
      }
    }
  }
#else
  for (int i = 0; i < rows; ++i) {
    const float* s = src + i * lds;
    for (int64_t k = 0; k < kc; ++k) dst[k * LD + i] = s[k];
  }
  for (int i = rows; i < W; ++i) {
    for (int64_t k = 0; k < kc; ++k) dst[k * LD + i] = 0.0f;
  }
#endif
}

// ---------------------------------------------------------------------------------
// Register tiles of C: init = (load_c ? C : 0) + bias, then store. `nr` columns and
// `mr` rows are valid; full tiles take the unmasked path.
// ---------------------------------------------------------------------------------
template <int R, int W>
TX_INLINE void tile_init(V (&c)[R][W], const float* C, int64_t ldc, int mr, int nr, bool load_c,
                         const float* bias) {
  TX_UNROLL for (int i = 0; i < R; ++i) {
    TX_UNROLL for (int v = 0; v < W; ++v) c[i][v] = vzero();
  }
  const bool full_w = nr == W * VL;
  if (load_c) {
    TX_UNROLL for (int i = 0; i < R; ++i) {
      if (i < mr) {
        TX_UNROLL for (int v = 0; v < W; ++v) {
          c[i][v] = full_w ? vload(C + i * ldc + v * VL) : vload_n(C + i * ldc + v * VL, nr - v * VL);
        }
      }
    }
  }
  if (bias) {
    V b[W];
    TX_UNROLL for (int v = 0; v < W; ++v) b[v] = full_w ? vload(bias + v * VL) : vload_n(bias + v * VL, nr - v * VL);
    TX_UNROLL for (int i = 0; i < R; ++i) {
      TX_UNROLL for (int v = 0; v < W; ++v) c[i][v] = vadd(c[i][v], b[v]);
    }
  }
}

template <int R, int W>
TX_INLINE void tile_store(V (&c)[R][W], float* C, int64_t ldc, int mr, int nr) {
  if (nr == W * VL) {
    TX_UNROLL for (int i = 0; i < R; ++i) {
      if (i < mr) {
        TX_UNROLL for (int v = 0; v < W; ++v) vstore(C + i * ldc + v * VL, c[i][v]);
      }
    }
  } else {
    TX_UNROLL for (int i = 0; i < R; ++i) {
      if (i < mr) {
        TX_UNROLL for (int v = 0; v < W; ++v) vstore_n(C + i * ldc + v * VL, c[i][v], nr - v * VL);
      }
    }
  }
}

// ---------------------------------------------------------------------------------
// Micro-kernel: C[0:mr, 0:nr] = init + Σ_k Ap[k, 0:MR] ⊗ Bp[k, 0:NR] over kc steps.
// Ap: packed A sliver (Ap[k*MR + i]); Bp: packed B sliver (Bp[k*NR + j]), 64-byte aligned.
// Cn: the C tile the next call works on (nullptr: none); its MR rows are prefetched
// during the first MR steps, so that call's tile_init finds them in L1 (C is usually in
// L3: the loads would otherwise stall each call's start).
// ---------------------------------------------------------------------------------
template <int R>
TX_INLINE void micro_step(V (&c)[R][NV], const float* __restrict a, const float* __restrict b) {
  V bv[NV];
  TX_UNROLL for (int v = 0; v < NV; ++v) bv[v] = vload(b + v * VL);
  TX_UNROLL for (int i = 0; i < R; ++i) {
    const V av = vset1(a[i]);
    TX_UNROLL for (int v = 0; v < NV; ++v) c[i][v] = vfma(av, bv[v], c[i][v]);
  }
}

// R = MR, or fewer rows for a tile at the bottom edge (with_tile_rows); the A sliver is
// MR wide either way.
template <int R>
static void micro_kernel(int64_t kc, const float* __restrict Ap, const float* __restrict Bp,
                         float* __restrict C, int64_t ldc, int mr, int nr, bool load_c,
                         const float* __restrict bias, const float* Cn) {
  V c[R][NV];
  tile_init<R, NV>(c, C, ldc, mr, nr, load_c, bias);
  int64_t k = 0;
  if (Cn) {
    for (; k < imin(kc, MR); ++k) {
      prefetch_line(Cn + k * ldc);  // the row's first and last float: its line(s)
      prefetch_line(Cn + k * ldc + NR - 1);
      micro_step<R>(c, Ap + k * MR, Bp + k * NR);
    }
  }
  for (; k < kc; ++k) micro_step<R>(c, Ap + k * MR, Bp + k * NR);
  tile_store<R, NV>(c, C, ldc, mr, nr);
}

// Calls fn(std::integral_constant<int, R>) with R = MR for a full tile and R = mr rounded
// up to even for a tile of mr < MR rows at the bottom edge of C: the tile's cost is
// proportional to R, so e.g. M = 128 at MR = 14 (9 tiles + 2 rows) runs 9 full tiles and a
// 2-row one instead of 10 full ones. Each C element's FMA chain is the same either way.
template <int R = 2, class Fn>
TX_INLINE void with_tile_rows(int mr, Fn&& fn) {
  if constexpr (R >= MR) {
    fn(std::integral_constant<int, MR>());
  } else {
    if (mr <= R) return fn(std::integral_constant<int, R>());
    with_tile_rows<R + 2>(mr, fn);
  }
}

// ---------------------------------------------------------------------------------
// Packing. op(A)[i, k] = trans_a ? A[k*lda + i] : A[i*lda + k]; op(B) likewise.
// ---------------------------------------------------------------------------------
struct Problem {
  bool trans_a, trans_b;
  int64_t M, N, K;
  const float* A;
  int64_t lda;
  const float* B;
  int64_t ldb;
  const float* bias;
  float* C;
  int64_t ldc;
  bool accumulate;
};

// op(A)[i0:i0+mc, p0:p0+kc] -> ceil(mc/MR) slivers of kc×MR (rows past mc are zero).
static void pack_A(const Problem& P, int64_t i0, int64_t mc, int64_t p0, int64_t kc, float* __restrict Ap) {
  for (int64_t ir = 0; ir < mc; ir += MR) {
    const int mr = (int)imin(MR, mc - ir);
    float* dst = Ap + ir * kc;
    if (P.trans_a) {  // A stored K×M: each k gives mr contiguous floats
      const float* src = P.A + p0 * P.lda + i0 + ir;
      int64_t k = 0;
      // A full sliver with whole vectors readable in every row (MR rounded up to VL, within
      // op(A)'s M columns): whole-vector copies, spilling into row k + 1 as in
      // pack_transposed; the last row and edge slivers take copy_pad's masked stores.
      if (mr == MR && i0 + ir + round_up(MR, VL) <= P.M) {
        for (; k + 1 < kc; ++k) {
          TX_UNROLL for (int l = 0; l < MR; l += VL) vstore(dst + k * MR + l, vload(src + k * P.lda + l));
        }
      }
      for (; k < kc; ++k) copy_pad<MR>(dst + k * MR, src + k * P.lda, mr);
    } else {  // A stored M×K: gather MR rows (transpose of an mr×kc block)
      pack_transposed<MR, MR>(P.A + (i0 + ir) * P.lda + p0, P.lda, mr, kc, dst);
    }
  }
}

// op(B)[p0:p0+kc, j0:j0+nc] -> ceil(nc/NR) slivers of kc×NR (columns past nc are zero),
// kc + 1 rows apart: unpadded, kc·NR floats is a multiple of 4 KiB at the usual kc, so the
// slivers written side by side below all map to the same L1 sets and evict each other
// (measured, 1 thread: the pack from L2 5.1 -> 8.2 GB/s with the padding row).
static void pack_B(const Problem& P, int64_t p0, int64_t kc, int64_t j0, int64_t nc, float* __restrict Bp) {
  if (!P.trans_b) {
    // B stored K×N: each k gives nr contiguous floats per sliver. Groups of PB_G slivers
    // row by row, so B is read in runs of PB_G·NR floats (1 KiB on AVX-512), not down one
    // 128-byte-wide strip (a new page on every row). Measured, 1 thread, AVX-512: +5-25%
    // for the whole GEMM at M = 33..128, same results bit for bit.
    // Rows are prefetched PB_PF ahead: +1-4% for the whole GEMM at M = 128..512 (interleaved
    // A/B, 1 thread; 4 and 16 rows ahead measured less).
    constexpr int64_t PB_G = 8, PB_PF = 8;
    for (int64_t g = 0; g < nc; g += PB_G * NR) {
      const int64_t g1 = imin(nc, g + PB_G * NR);
      const float* src = P.B + p0 * P.ldb + j0;
      for (int64_t k = 0; k < kc; ++k) {
        if (k + PB_PF < kc) {  // each row of the group is a new page: the prefetchers start late
          for (int64_t jr = g; jr < g1; jr += 16) prefetch_line(src + (k + PB_PF) * P.ldb + jr);
        }
        for (int64_t jr = g; jr < g1; jr += NR) {
          copy_pad<NR>(Bp + jr * (kc + 1) + k * NR, src + k * P.ldb + jr, (int)imin(NR, nc - jr));
        }
      }
    }
    return;
  }
  for (int64_t jr = 0; jr < nc; jr += NR) {
    const int nr = (int)imin(NR, nc - jr);
    float* dst = Bp + jr * (kc + 1);
    {  // B stored N×K: row j of B is column j of op(B); VL columns at a time
      const float* src = P.B + (j0 + jr) * P.ldb + p0;
      TX_UNROLL for (int h = 0; h < NR; h += VL) {
        const int rows = (int)imax(0, imin(VL, nr - h));
        pack_transposed<VL, NR>(src + h * P.ldb, P.ldb, rows, kc, dst + h);
      }
    }
  }
}

// NC from the L2 the CPU reports: the B block (KC×NC floats) within 3/4 of it, at most NC
// above, in whole 32-column units (pre-packed panels); NC as is when L2 is unknown. Only
// CPUs with a small L2 for their variant change: 512 KiB with AVX-512 (Ice Lake client)
// gets NC = 192; Sapphire Rapids (2 MiB), Zen 4 (1 MiB) and AVX2 cores with >= 192 KiB keep
// NC. A block size never changes a result (each element's FMA chain over k is the same).
// KC likewise: KC_SMALL_L2 where the KC×NC block would not fit 3/4 of the L2 (AVX2 cores
// with a 256 KiB L2 keep the 128 KiB block). Like NC, it never changes a result.
static int64_t kc_for_l2() {
  static const int64_t kc = [] {
    const int64_t l2 = ::tx::l2_cache_bytes();
    return l2 <= 0 || KC * NC * (int64_t)sizeof(float) <= l2 * 3 / 4 ? KC : KC_SMALL_L2;
  }();
  return kc;
}

static int64_t nc_for_l2() {
  static const int64_t nc = [] {
    const int64_t l2 = ::tx::l2_cache_bytes();
    if (l2 <= 0) return NC;
    return imax(32, imin(NC, (l2 * 3 / 4) / (kc_for_l2() * (int64_t)sizeof(float)) / 32 * 32));
  }();
  return nc;
}

// Block size for n items in blocks of at most max: equal blocks of whole units (so a
// 1024-wide range gets 3 × 352 rather than 2 × 384 + 256).
TX_INLINE int64_t balanced(int64_t n, int64_t max, int64_t unit) {
  return n <= 0 ? unit : round_up(ceil_div(n, ceil_div(n, max)), unit);
}

// The next C tile after (i, j) in the order the loop nest below visits tiles of the
// block C[i0:i0+mc, j0:j0+nc] (row of tiles by row of tiles), or nullptr after the last.
TX_INLINE const float* next_tile(float* C, int64_t ldc, int64_t i, int64_t j, int64_t i0, int64_t mc,
                                 int64_t j0, int64_t nc, int64_t nr_step) {
  if (j + nr_step < j0 + nc) return C + i * ldc + j + nr_step;
  if (i + MR < i0 + mc) return C + (i + MR) * ldc + j0;
  return nullptr;
}

// How threads share a packed GEMM: they split C into a tm×tn grid of blocks of whole
// tiles (never K). Each block packs its own panels: the extra packing is
// O((M/tm + N/tn)·K) per thread against O(M·N·K/t) flops, so the grid with the smallest
// block perimeter wins. (Handing out N blocks dynamically instead, for threads slowed
// by another process, measured no better here: the OS slows both threads alike.)
struct Split {
  int tm = 1, tn = 1;
  int parts() const { return tm * tn; }
  // Part p's block C[m0:m1, n0:n1], in whole MR-row tiles and whole n_unit columns.
  void range(int p, int64_t M, int64_t N, int64_t n_unit, int64_t& m0, int64_t& m1, int64_t& n0,
             int64_t& n1) const {
    const int64_t mtiles = ceil_div(M, MR), nunits = ceil_div(N, n_unit);
    const int pm = p / tn, pn = p % tn;
    m0 = imin(M, mtiles * pm / tm * MR), m1 = imin(M, mtiles * (pm + 1) / tm * MR);
    n0 = imin(N, nunits * pn / tn * n_unit), n1 = imin(N, nunits * (pn + 1) / tn * n_unit);
  }
  // The largest part's block sizes (scratch sizing).
  int64_t max_rows(int64_t M) const { return ceil_div(ceil_div(M, MR), tm) * MR; }
  int64_t max_cols(int64_t N, int64_t n_unit) const { return ceil_div(ceil_div(N, n_unit), tn) * n_unit; }
};

static Split split_threads(int64_t M, int64_t N, int64_t n_unit, int nt) {
  const int64_t mtiles = ceil_div(M, MR), nunits = ceil_div(N, n_unit);
  if ((int64_t)nt > mtiles * nunits) nt = (int)(mtiles * nunits);
  Split s;
  for (; nt > 1; --nt) {  // the largest usable count that factors into a valid grid
    double best = -1.0;
    for (int a = 1; a <= nt; ++a) {
      const int b = nt / a;
      if (nt % a || a > mtiles || b > nunits) continue;
      const double cost = (double)M / a + (double)N / b;
      if (best < 0 || cost < best) best = cost, s.tm = a, s.tn = b;
    }
    if (best >= 0) break;
  }
  return s;
}

// Runs fn(p) for every part p of the split, one per thread.
template <class Fn>
TX_INLINE void run_split(const Split& s, Fn fn) {
  const int parts = s.parts();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(parts) if (parts > 1)
#endif
  for (int p = 0; p < parts; ++p) fn(p);
}

// The outer loops of both packed GEMMs (this one and pk_gemm) for the block
// C[m0:m1, n0:n1] of one thread: K blocks, M blocks (op(A) packed into Ap, MC×KC
// floats), N blocks of whole n_unit columns; block(pc, kc, ic, mc, jc, nc) runs the
// inner loops over one packed A block and one L2 block of B.
template <class Block>
TX_INLINE void outer_loops(const Problem& P, int64_t kc_max, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                           int64_t n_unit, float* Ap, Block block) {
  const int64_t mc_max = balanced(m1 - m0, MC, MR), nc_max = balanced(n1 - n0, nc_for_l2(), n_unit);
  for (int64_t pc = 0; pc < P.K; pc += kc_max) {
    const int64_t kc = imin(kc_max, P.K - pc);
    for (int64_t ic = m0; ic < m1; ic += mc_max) {
      const int64_t mc = imin(mc_max, m1 - ic);
      pack_A(P, ic, mc, pc, kc, Ap);
      for (int64_t jc = n0; jc < n1; jc += nc_max) block(pc, kc, ic, mc, jc, imin(nc_max, n1 - jc));
    }
  }
}

// One thread's block C[m0:m1, n0:n1]. Bp holds (KC+1)×min(NC, n1-n0 rounded to NR) floats.
static void gemm_packed_block(const Problem& P, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                              int64_t kc_max, float* Ap, float* Bp) {
  outer_loops(P, kc_max, m0, m1, n0, n1, NR, Ap,
              [&](int64_t pc, int64_t kc, int64_t ic, int64_t mc, int64_t jc, int64_t nc) {
    // First K block: init from (accumulate ? C : 0) + bias; later blocks continue the
    // chain from the stored C.
    const bool first = pc == 0;
    const bool load_c = !first || P.accumulate;
    pack_B(P, pc, kc, jc, nc, Bp);
    for (int64_t ir = 0; ir < mc; ir += MR) {
      const int mr = (int)imin(MR, mc - ir);
      const float* asl = Ap + ir * kc;
      for (int64_t jr = 0; jr < nc; jr += NR) {
        const int nr = (int)imin(NR, nc - jr);
        float* Ct = P.C + (ic + ir) * P.ldc + jc + jr;
        with_tile_rows(mr, [&](auto r) {
          micro_kernel<decltype(r)::value>(kc, asl, Bp + jr * (kc + 1), Ct, P.ldc, mr, nr, load_c,
                                           first && P.bias ? P.bias + jc + jr : nullptr,
                                           next_tile(P.C, P.ldc, ic + ir, jc + jr, ic, mc, jc, nc, NR));
        });
      }
    }
  });
}

static void gemm_packed(const Problem& P) {
  // K blocks of (almost) equal size <= KC (kc_for_l2): never changes a result (see the top).
  const int64_t kc_max = ceil_div(P.K, ceil_div(P.K, kc_for_l2()));
  const Split split = split_threads(P.M, P.N, NR, gemm_threads(P.M, P.N, P.K));
  const int64_t a_sz = round_up(imin(MC, split.max_rows(P.M)) * kc_max, 16);
  const int64_t b_sz = round_up(imin(nc_for_l2(), round_up(split.max_cols(P.N, NR), NR)) * (kc_max + 1), 16);
  float* scratch = scratch_alloc((a_sz + b_sz) * split.parts());
  run_split(split, [&](int p) {
    int64_t pm0, pm1, pn0, pn1;
    split.range(p, P.M, P.N, NR, pm0, pm1, pn0, pn1);
    float* Ap = scratch + (int64_t)p * (a_sz + b_sz);
    if (pm0 < pm1 && pn0 < pn1) gemm_packed_block(P, pm0, pm1, pn0, pn1, kc_max, Ap, Ap + a_sz);
  });
}

// ---------------------------------------------------------------------------------
// Skinny M, B stored K×N (not trans_b): stream B once, row by row, over a wide column
// chunk, SK_KB rows at a time, updating C's chunk (M rows, cache-resident) in place. Per
// element this is exactly the micro-kernel's chain:
//     c = init;  c = fma(op(A)[i,k], B[k,j], c)  for k = 0..K-1.
// (Walking B down a narrow strip instead touches a new page on every row: TLB-bound.)
// ---------------------------------------------------------------------------------
// Rows of B ahead to prefetch (TX_SK_PF: tuning override). 16 and 32 measured alike,
// +5-15% over none at M = 1 (1 thread, B from DRAM).
#ifndef TX_SK_PF
#define TX_SK_PF 32
#endif
constexpr int64_t SK_PF = TX_SK_PF;

template <int KB, bool FULL>
TX_INLINE void stream_vec(const Problem& P, const float* __restrict Ak, int64_t a_rs, int64_t a_ks,
                          const float* __restrict Bk, const float* Bpf, float* __restrict Cj, int n,
                          bool init, const float* __restrict bias) {
  if (Bpf) {
    TX_UNROLL for (int kk = 0; kk < KB; ++kk) prefetch_line(Bpf + kk * P.ldb);
  }
  V b[KB];
  TX_UNROLL for (int kk = 0; kk < KB; ++kk) b[kk] = FULL ? vload(Bk + kk * P.ldb) : vload_n(Bk + kk * P.ldb, n);
  V bv = vzero();
  if (init && bias) bv = FULL ? vload(bias) : vload_n(bias, n);
  for (int64_t i = 0; i < P.M; ++i) {
    float* c = Cj + i * P.ldc;
    V acc = vzero();
    if (!init || P.accumulate) acc = FULL ? vload(c) : vload_n(c, n);
    if (init && bias) acc = vadd(acc, bv);
    const float* a = Ak + i * a_rs;
    TX_UNROLL for (int kk = 0; kk < KB; ++kk) acc = vfma(vset1(a[kk * a_ks]), b[kk], acc);
    if (FULL) {
      vstore(c, acc);
    } else {
      vstore_n(c, acc, n);
    }
  }
}

// M = 1 (decoding): columns [j, j + G·VL) at a time, the row's KB broadcasts made once per
// pass instead of once per vector (16 loads per 8 FMAs -> 8), and the G vectors' chains
// interleaved step by step (one vector's KB dependent FMAs would leave the core waiting on
// their latency: GCC keeps source order). Zen 3, 1 thread, W 768×3072 from L3: 3x with the
// prefetch rule above. Each C element gets the same chain as in stream_vec.
constexpr int SK_G = 4;
template <int KB>
TX_INLINE void stream_one_row(const Problem& P, const V (&av)[KB], const float* __restrict Bk, const float* Bpf,
                              float* __restrict Cj, bool init, const float* __restrict bias) {
  if (Bpf) {
    TX_UNROLL for (int kk = 0; kk < KB; ++kk) {
      TX_UNROLL for (int l = 0; l < SK_G * VL; l += 16) prefetch_line(Bpf + kk * P.ldb + l);
    }
  }
  V acc[SK_G];
  TX_UNROLL for (int g = 0; g < SK_G; ++g) {
    acc[g] = vzero();
    if (!init || P.accumulate) acc[g] = vload(Cj + g * VL);
    if (init && bias) acc[g] = vadd(acc[g], vload(bias + g * VL));
  }
  TX_UNROLL for (int kk = 0; kk < KB; ++kk) {
    TX_UNROLL for (int g = 0; g < SK_G; ++g) acc[g] = vfma(av[kk], vload(Bk + kk * P.ldb + g * VL), acc[g]);
  }
  TX_UNROLL for (int g = 0; g < SK_G; ++g) vstore(Cj + g * VL, acc[g]);
}

template <int KB>
TX_INLINE void stream_block(const Problem& P, int64_t k, int64_t j0, int64_t j1, bool init) {
  const int64_t a_rs = P.trans_a ? 1 : P.lda, a_ks = P.trans_a ? P.lda : 1;
  const float* Ak = P.A + k * a_ks;
  const float* Bk = P.B + k * P.ldb;
  // The same columns SK_PF rows further down (while those rows exist; see rows_alias_in_l1).
  const float* Bpf = k + SK_PF + KB <= P.K && !rows_alias_in_l1(P.ldb) ? Bk + SK_PF * P.ldb : nullptr;
  int64_t j = j0;
  if (P.M == 1) {
    V av[KB];
    TX_UNROLL for (int kk = 0; kk < KB; ++kk) av[kk] = vset1(Ak[kk * a_ks]);
    for (; j + SK_G * VL <= j1; j += SK_G * VL) {
      stream_one_row<KB>(P, av, Bk + j, Bpf ? Bpf + j : nullptr, P.C + j, init, P.bias ? P.bias + j : nullptr);
    }
  }
  for (; j < j1; j += VL) {  // (M = 1: the last few vectors)
    const float* bias = P.bias ? P.bias + j : nullptr;
    const float* pf = Bpf ? Bpf + j : nullptr;
    if (j1 - j >= VL) {
      stream_vec<KB, true>(P, Ak, a_rs, a_ks, Bk + j, pf, P.C + j, VL, init, bias);
    } else {
      stream_vec<KB, false>(P, Ak, a_rs, a_ks, Bk + j, pf, P.C + j, (int)(j1 - j), init, bias);
    }
  }
}

static void gemm_skinny(const Problem& P) {
  const int nt = gemm_threads(P.M, P.N, P.K);
  // Column chunks of up to 1024 floats: each pass reads SK_KB runs of 4 KiB (a page
  // each: narrower chunks make the walk down B TLB-bound) and updates C's M×cw chunk
  // (L1/L2). At least one chunk per thread. Chunking groups whole columns, so it cannot
  // change any result.
  // (M <= 4: 2048, measured ~5% faster at M = 1 with B from DRAM; the C chunk is tiny.)
  const int64_t cw_max = P.M <= 4 ? 2048 : 1024;
  const int64_t chunks = nt * ceil_div(P.N, nt * cw_max);
  const int64_t cw = round_up(ceil_div(P.N, chunks), VL);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const int64_t j0 = imin(P.N, ch * cw), j1 = imin(P.N, j0 + cw);
    if (j0 >= j1) continue;
    int64_t k = 0;
    for (; k + SK_KB <= P.K; k += SK_KB) stream_block<SK_KB>(P, k, j0, j1, k == 0);
    for (; k < P.K; ++k) stream_block<1>(P, k, j0, j1, k == 0);
  }
}

// ---------------------------------------------------------------------------------
// Skinny M with trans_b (B stored N×K, e.g. x·Wᵀ while decoding): C[i, j] is the dot
// product of row i of op(A) with row j of B, streamed once. Lane l of an accumulator
// sums the k ≡ l (mod VL) terms in order; the lanes are then summed by a fixed tree.
// X: rows of op(A), unit stride over k (row stride ldx).
// ---------------------------------------------------------------------------------
template <int R, int J>
static void dot_tile(int64_t K, const float* __restrict X, int64_t ldx, const float* __restrict B,
                     int64_t ldb, const float* Bpf, float* __restrict C, int64_t ldc, bool load_c,
                     const float* __restrict bias) {
  V acc[R][J];
  TX_UNROLL for (int i = 0; i < R; ++i) {
    TX_UNROLL for (int j = 0; j < J; ++j) acc[i][j] = vzero();
  }
  int64_t k = 0;
  for (; k + VL <= K; k += VL) {
    if (Bpf) {  // the next tile's rows, same columns: in L1 when that tile starts
      TX_UNROLL for (int j = 0; j < J; ++j) prefetch_line(Bpf + j * ldb + k);
    }
    V bv[J];
    TX_UNROLL for (int j = 0; j < J; ++j) bv[j] = vload(B + j * ldb + k);
    TX_UNROLL for (int i = 0; i < R; ++i) {
      const V xv = vload(X + i * ldx + k);
      TX_UNROLL for (int j = 0; j < J; ++j) acc[i][j] = vfma(xv, bv[j], acc[i][j]);
    }
  }
  if (k < K) {  // tail: zero lanes add fma(0, 0, acc) = acc
    const int n = (int)(K - k);
    V bv[J];
    TX_UNROLL for (int j = 0; j < J; ++j) bv[j] = vload_n(B + j * ldb + k, n);
    TX_UNROLL for (int i = 0; i < R; ++i) {
      const V xv = vload_n(X + i * ldx + k, n);
      TX_UNROLL for (int j = 0; j < J; ++j) acc[i][j] = vfma(xv, bv[j], acc[i][j]);
    }
  }
  TX_UNROLL for (int i = 0; i < R; ++i) {
    TX_UNROLL for (int j = 0; j < J; ++j) {
      float init = load_c ? C[i * ldc + j] : 0.0f;
      if (bias) init += bias[j];
      C[i * ldc + j] = init + vsum(acc[i][j]);
    }
  }
}

template <int R>
static void dot_rows(const Problem& P, const float* X, int64_t ldx, int64_t i, int64_t j0, int64_t j1) {
  // One row of op(A) (decoding): 2·SD_J rows of B at once (twice the concurrent streams;
  // the accumulators are there, R = 1 uses few).
  constexpr int J = R == 1 ? 2 * SD_J : SD_J;
  const float* bias = P.bias;
  int64_t j = j0;
  // Prefetch only on the first row group's pass (later groups re-read the block from L2),
  // and only rows that do not alias in L1 (rows_alias_in_l1: J rows + J prefetched).
  const bool pf = i == 0 && !rows_alias_in_l1(P.ldb);
  for (; j + J <= j1; j += J) {
    const float* Bpf = pf && j + 2 * J <= P.N ? P.B + (j + J) * P.ldb : nullptr;
    dot_tile<R, J>(P.K, X + i * ldx, ldx, P.B + j * P.ldb, P.ldb, Bpf, P.C + i * P.ldc + j, P.ldc,
                   P.accumulate, bias ? bias + j : nullptr);
  }
  for (; j < j1; ++j) {
    dot_tile<R, 1>(P.K, X + i * ldx, ldx, P.B + j * P.ldb, P.ldb, nullptr, P.C + i * P.ldc + j, P.ldc,
                   P.accumulate, bias ? bias + j : nullptr);
  }
}

static void gemm_skinny_tb(const Problem& P) {
  // op(A) rows must be unit-stride over k: copy them when trans_a (only M <= 64 rows).
  const float* X = P.A;
  int64_t ldx = P.lda;
  float* xbuf = nullptr;
  if (P.trans_a) {
    xbuf = scratch_alloc(P.M * P.K);
    for (int64_t k = 0; k < P.K; ++k) {
      for (int64_t i = 0; i < P.M; ++i) xbuf[i * P.K + k] = P.A[k * P.lda + i];
    }
    X = xbuf;
    ldx = P.K;
  }
  const int nt = gemm_threads(P.M, P.N, P.K);
  // Blocks of B rows: ~512 KiB each so a block stays in L2 while every row group of X
  // passes over it; at least 4 blocks per thread for balance. The blocking only groups
  // whole dot products, so it cannot change any result.
  int64_t jb = imax(SD_J, (int64_t)(1 << 17) / imax(P.K, 1));
  const int64_t min_blocks = 4 * (int64_t)nt;
  if (ceil_div(P.N, jb) < min_blocks) jb = imax(SD_J, ceil_div(P.N, min_blocks));
  jb = round_up(jb, 2 * SD_J);  // whole tiles of dot_rows (J = SD_J or 2·SD_J rows)
  const int64_t blocks = ceil_div(P.N, jb);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
  for (int64_t bi = 0; bi < blocks; ++bi) {
    const int64_t j0 = bi * jb, j1 = imin(P.N, j0 + jb);
    int64_t i = 0;
    for (; i + SD_R <= P.M; i += SD_R) dot_rows<SD_R>(P, X, ldx, i, j0, j1);
    for (; i < P.M; ++i) dot_rows<1>(P, X, ldx, i, j0, j1);
  }
}

// K = 0: C = (accumulate ? C : 0) + bias.
static void gemm_init_only(const Problem& P) {
  for (int64_t i = 0; i < P.M; ++i) {
    float* c = P.C + i * P.ldc;
    for (int64_t j = 0; j < P.N; ++j) {
      float init = P.accumulate ? c[j] : 0.0f;
      if (P.bias) init += P.bias[j];
      c[j] = init;
    }
  }
}


// ---------------------------------------------------------------------------------
// Pre-packed weights (pack once at model load, reuse every call). ONE layout, the same
// for every ISA variant (a PackedWeight survives tx.set_isa and pickling): op(B) in
// panels of PW = 32 columns, panel p = columns [32p, 32p+32) stored k-major:
//   fp32: Wp[p·K·32 + k·32 + j]                        (= a micro-kernel B sliver)
//   bf16: Wp[p·K2·64 + r·64 + 2j + h] = bf16(op(B)[2r+h, 32p+j]), K2 = ceil(K/2)
// Padding (columns past N, the odd row past K) is zero. The GEMM micro-kernel reads a
// panel directly (no B packing; NR = 16/8 variants read 32/NR sub-slivers of it with
// row stride 32), and the skinny path streams each panel contiguously, so a GEMV reads
// every weight exactly once. bf16 pairs (k even, k odd) in one 32-bit word widen to two
// fp32 vectors with one shift and one AND.
//
// Numerics: every C element is the same sequential FMA chain over k as in gemm()
// (init = (accumulate ? C : 0) + bias, c = fma(A[i,k], W[k,j], c)); with bf16 W is the
// bf16-rounded weight, widened exactly. Threads split panels (or a panel × row-block
// grid), never K, so results do not depend on the thread count; fp32 packed results
// equal gemm(trans_b = false) on the same weights bit for bit.
// ---------------------------------------------------------------------------------
constexpr int PW = 32;
static_assert(PW % NR == 0, "a panel is whole micro-kernel slivers");
constexpr int64_t SKINNY_M_PACKED = 16;
// Software prefetch distance of the skinny packed paths (pk_gemv, pk_tile on the caller's
// rows): bytes ahead of the current panel row, per stream (TX_GEMV_PF: tuning override).
#ifndef TX_GEMV_PF
#define TX_GEMV_PF 1024
#endif
constexpr int64_t GEMV_PF = TX_GEMV_PF;

#if defined(__AVX512F__)
TX_INLINE V vbf_even(const uint32_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_loadu_si512((const void*)p), 16));
}
TX_INLINE V vbf_odd(const uint32_t* p) {
  return _mm512_castsi512_ps(
      _mm512_and_si512(_mm512_loadu_si512((const void*)p), _mm512_set1_epi32((int)0xFFFF0000u)));
}
#elif defined(__AVX2__)
TX_INLINE V vbf_even(const uint32_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_loadu_si256((const __m256i*)p), 16));
}
TX_INLINE V vbf_odd(const uint32_t* p) {
  return _mm256_castsi256_ps(
      _mm256_and_si256(_mm256_loadu_si256((const __m256i*)p), _mm256_set1_epi32((int)0xFFFF0000u)));
}
#else
TX_INLINE V vbf_even(const uint32_t* p) {
  float f[VL];
  for (int l = 0; l < VL; ++l) {
    const uint32_t u = p[l] << 16;
    memcpy(&f[l], &u, 4);
  }
  return vload(f);
}
TX_INLINE V vbf_odd(const uint32_t* p) {
  float f[VL];
  for (int l = 0; l < VL; ++l) {
    const uint32_t u = p[l] & 0xFFFF0000u;
    memcpy(&f[l], &u, 4);
  }
  return vload(f);
}
#endif

// fp32 -> bf16, round to nearest even (ties to even on the 16 dropped bits); NaN stays a
// (quiet) NaN; finite values above the largest bf16 round to ±inf as RNE says.
TX_INLINE uint16_t f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x0040u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

// C[0:mr, 0:nr] (+)= Σ_k A[i, k]·W[k, 0:NR] over kc steps. Row i of A is ar[i][k·AKS]
// (AKS = MR: a packed A sliver; AKS = 1: rows of the caller's A). W: fp32 sliver with
// row stride PW, or bf16 pair rows (uint32) with row stride PW.
// Wnext (GEMM, AKS = MR): the sliver the next call reads from memory, prefetched row by
// row alongside this one (nullptr: none).
template <int R, bool BF, int AKS>
static void pk_tile(int64_t kc, const float* const* ar, const void* W, float* __restrict C, int64_t ldc,
                    int mr, int nr, bool load_c, const float* __restrict bias, const void* Wnext = nullptr,
                    const float* Cn = nullptr) {
  V c[R][NV];
  tile_init<R, NV>(c, C, ldc, mr, nr, load_c, bias);
  if (Cn) {  // the next call's C tile (see micro_kernel): here all at once, kc steps ahead
    TX_UNROLL for (int i = 0; i < R; ++i) {
      prefetch_line(Cn + i * ldc);
      prefetch_line(Cn + i * ldc + NR - 1);
    }
  }
  const float* a[R];
  TX_UNROLL for (int i = 0; i < R; ++i) a[i] = ar[i];
  const float* a0 = ar[0];  // a packed A sliver (AKS = MR): one base pointer, not R (GPR pressure)
  if (!BF) {
    const float* __restrict w = static_cast<const float*>(W);
    for (int64_t k = 0; k < kc; ++k) {
      if (AKS == 1) {  // skinny: the sliver streams from memory (GEMM: it is in L1/L2)
        TX_UNROLL for (int l = 0; l < NR * 4; l += 64) prefetch_line(w + k * PW + (GEMV_PF + l) / 4);
      } else if (Wnext) {
        TX_UNROLL for (int l = 0; l < NR * 4; l += 64) prefetch_line(static_cast<const float*>(Wnext) + k * PW + l / 4);
      }
      V bv[NV];
      TX_UNROLL for (int v = 0; v < NV; ++v) bv[v] = vload(w + k * PW + v * VL);
      TX_UNROLL for (int i = 0; i < R; ++i) {
        const V av = vset1(AKS == 1 ? a[i][k] : a0[k * AKS + i]);
        TX_UNROLL for (int v = 0; v < NV; ++v) c[i][v] = vfma(av, bv[v], c[i][v]);
      }
    }
  } else {
    const uint32_t* __restrict w = static_cast<const uint32_t*>(W);
    const int64_t k2n = kc / 2;
    for (int64_t r = 0; r < k2n; ++r) {
      const uint32_t* wr = w + r * PW;
      const int64_t k = 2 * r;
      if (AKS == 1) {
        TX_UNROLL for (int l = 0; l < NR * 4; l += 64) prefetch_line(wr + (GEMV_PF + l) / 4);
      } else if (Wnext) {
        TX_UNROLL for (int l = 0; l < NR * 4; l += 64) prefetch_line(static_cast<const uint32_t*>(Wnext) + r * PW + l / 4);
      }
      {  // k even: low halves (B reloaded from L1 for the odd half: registers are full)
        V bv[NV];
        TX_UNROLL for (int v = 0; v < NV; ++v) bv[v] = vbf_even(wr + v * VL);
        TX_UNROLL for (int i = 0; i < R; ++i) {
          const V av = vset1(AKS == 1 ? a[i][k] : a0[k * AKS + i]);
          TX_UNROLL for (int v = 0; v < NV; ++v) c[i][v] = vfma(av, bv[v], c[i][v]);
        }
      }
      {  // k odd: high halves
        V bv[NV];
        TX_UNROLL for (int v = 0; v < NV; ++v) bv[v] = vbf_odd(wr + v * VL);
        TX_UNROLL for (int i = 0; i < R; ++i) {
          const V av = vset1(AKS == 1 ? a[i][k + 1] : a0[(k + 1) * AKS + i]);
          TX_UNROLL for (int v = 0; v < NV; ++v) c[i][v] = vfma(av, bv[v], c[i][v]);
        }
      }
    }
    if (kc & 1) {  // odd block length (only the last K block): its even row alone
      const uint32_t* wr = w + k2n * PW;
      const int64_t k = 2 * k2n;
      V bv[NV];
      TX_UNROLL for (int v = 0; v < NV; ++v) bv[v] = vbf_even(wr + v * VL);
      TX_UNROLL for (int i = 0; i < R; ++i) {
        const V av = vset1(AKS == 1 ? a[i][k] : a0[k * AKS + i]);
        TX_UNROLL for (int v = 0; v < NV; ++v) c[i][v] = vfma(av, bv[v], c[i][v]);
      }
    }
  }
  tile_store<R, NV>(c, C, ldc, mr, nr);
}

struct PackedProblem {
  int64_t M, N, K;
  const float* A;
  int64_t lda;
  const void* W;
  bool bf;
  const float* bias;
  float* C;
  int64_t ldc;
  bool accumulate;
  int64_t panel_elems;  // elements (floats or uint16) per panel
};

// Address of sub-sliver (panel p, column offset s·NR) at K row pc (pc even for bf16).
TX_INLINE const void* pk_sliver(const PackedProblem& P, int64_t p, int s, int64_t pc) {
  if (P.bf) {
    return static_cast<const uint16_t*>(P.W) + p * P.panel_elems + (pc / 2) * (2 * PW) + 2 * s * NR;
  }
  return static_cast<const float*>(P.W) + p * P.panel_elems + pc * PW + s * NR;
}

// Rows [i0, i0+rows) (rows <= MR) of the caller's A against one sliver, K rows [pc, pc+kc).
template <bool BF>
static void pk_rows(const PackedProblem& P, int64_t i0, int rows, int64_t pc, int64_t kc, const void* w,
                    int64_t col, int nr, bool load_c, const float* bias) {
  const float* ar[MR];
  for (int i = 0; i < MR; ++i) ar[i] = P.A + (i0 + (i < rows ? i : 0)) * P.lda + pc;  // clamp: never read past A
  float* C = P.C + i0 * P.ldc + col;
  switch (rows) {
#define TX_PK_CASE(n) \
  case n:             \
    if (n <= MR) pk_tile<(n <= MR ? n : 1), BF, 1>(kc, ar, w, C, P.ldc, rows, nr, load_c, bias); \
    break;
    TX_PK_CASE(1) TX_PK_CASE(2) TX_PK_CASE(3) TX_PK_CASE(4) TX_PK_CASE(5) TX_PK_CASE(6) TX_PK_CASE(7)
    TX_PK_CASE(8) TX_PK_CASE(9) TX_PK_CASE(10) TX_PK_CASE(11) TX_PK_CASE(12) TX_PK_CASE(13)
    TX_PK_CASE(14) TX_PK_CASE(15) TX_PK_CASE(16)
#undef TX_PK_CASE
    default: break;
  }
}

// ---------------------------------------------------------------------------------
// GEMV path (M <= GEMV_M rows: decoding). Memory-bound: each weight is used M times, so
// the kernel's job is to keep enough cache misses in flight. One sequential stream per
// core is latency-bound (a few outstanding lines); here a thread walks NP whole panels at
// once (NP independent streams, each a contiguous K·128-byte run) and software-prefetches
// GEMV_PF bytes ahead in each. Threads take balanced contiguous panel ranges. Each C
// element is still the one FMA chain of pk_tile: init, then fma over k = 0..K-1 in order.
// ---------------------------------------------------------------------------------
constexpr int PV = PW / VL;  // vectors per panel row
constexpr int GEMV_M = 6;
// Accumulator budget NP·R·PV (TX_GEMV_ACC: override for tuning runs): NP = 12, 6, 4, 3,
// 2, 2 panels for M = 1..6 on AVX-512. Measured, 1 thread, weights from DRAM: 24 beats
// 16 by 0-40% on AVX-512 (most at M = 3); on AVX2 and SSE2 16 beats 8 by 10-80%.
#if defined(TX_GEMV_ACC)
constexpr int GEMV_ACC = TX_GEMV_ACC;
#elif defined(__AVX512F__)
constexpr int GEMV_ACC = 24;  // of 32 zmm
#else
constexpr int GEMV_ACC = 16;  // of 16 ymm / xmm
#endif
constexpr int gemv_np(int R) { return GEMV_ACC / (R * PV) > 1 ? GEMV_ACC / (R * PV) : 1; }

// Prefetch the 128-byte panel row at p (both lines) into L1. Measured on Sapphire Rapids
// (1 thread, weights from DRAM, with the multi-panel walk): the walk plus prefetch is
// +20-50% over the previous 4-panel kernel without it; two lines beat one by a few %;
// distances 512-2048 B are alike; the T1 hint is alike, NTA slower.
TX_INLINE void prefetch_row(const void* p) {
  prefetch_line(p);
  prefetch_line(static_cast<const char*>(p) + 64);
}

// Panels [p, p+NP) for rows a[0..R) (mr of them real; the others alias row 0 and are
// never stored).
template <int R, bool BF, int NP>
static void pk_gemv_np(const PackedProblem& P, const float* const* ar, int64_t p, int mr) {
#ifndef TX_GEMV_PF_STREAMS
#define TX_GEMV_PF_STREAMS 4
#endif
  // Fewer panels at once than TX_GEMV_PF_STREAMS (several rows: AVX2 from 2, AVX-512 from 4)
  // prefetch proportionally further ahead, keeping about as many lines in flight as 4
  // streams do. Interleaved A/B, weights from DRAM: AVX2 M = 3..6 +12-34% (1 and 2
  // threads), AVX-512 M = 4..6 +0-9%; M = 1 unchanged. 8 streams' worth measured alike.
  constexpr int64_t PF = GEMV_PF * (NP >= TX_GEMV_PF_STREAMS ? 1 : TX_GEMV_PF_STREAMS / NP);
  V c[NP][R][PV];
  TX_UNROLL for (int q = 0; q < NP; ++q) {
    const int64_t col = (p + q) * PW;
    tile_init<R, PV>(c[q], P.C + col, P.ldc, mr, (int)imin(PW, P.N - col), P.accumulate,
                     P.bias ? P.bias + col : nullptr);
  }
  const float* a[R];
  TX_UNROLL for (int i = 0; i < R; ++i) a[i] = ar[i];
  const int64_t K = P.K;
  if (!BF) {
    const int64_t pe = P.panel_elems;
    const float* __restrict w = static_cast<const float*>(P.W) + p * pe;
    for (int64_t k = 0; k < K; ++k) {
      const float* wk = w + k * PW;
      TX_UNROLL for (int q = 0; q < NP; ++q) prefetch_row(wk + q * pe + PF / 4);
      V av[R];
      TX_UNROLL for (int i = 0; i < R; ++i) av[i] = vset1(a[i][k]);
      TX_UNROLL for (int q = 0; q < NP; ++q) {
        TX_UNROLL for (int v = 0; v < PV; ++v) {
          const V b = vload(wk + q * pe + v * VL);
          TX_UNROLL for (int i = 0; i < R; ++i) c[q][i][v] = vfma(av[i], b, c[q][i][v]);
        }
      }
    }
  } else {
    const int64_t pe = P.panel_elems / 2;  // uint32 pairs per panel
    const uint32_t* __restrict w = static_cast<const uint32_t*>(P.W) + p * pe;
    const int64_t K2 = K / 2;
    for (int64_t r = 0; r < K2; ++r) {
      const uint32_t* wr = w + r * PW;
      TX_UNROLL for (int q = 0; q < NP; ++q) prefetch_row(wr + q * pe + PF / 4);
      V a0[R], a1[R];
      TX_UNROLL for (int i = 0; i < R; ++i) a0[i] = vset1(a[i][2 * r]), a1[i] = vset1(a[i][2 * r + 1]);
      TX_UNROLL for (int q = 0; q < NP; ++q) {
        TX_UNROLL for (int v = 0; v < PV; ++v) {
          const V b0 = vbf_even(wr + q * pe + v * VL), b1 = vbf_odd(wr + q * pe + v * VL);
          TX_UNROLL for (int i = 0; i < R; ++i) {
            c[q][i][v] = vfma(a0[i], b0, c[q][i][v]);  // k = 2r, then k = 2r+1: the chain's order
            c[q][i][v] = vfma(a1[i], b1, c[q][i][v]);
          }
        }
      }
    }
    if (K & 1) {  // the last row alone (its odd half is padding: no FMA, as in pk_tile)
      const uint32_t* wr = w + K2 * PW;
      V a0[R];
      TX_UNROLL for (int i = 0; i < R; ++i) a0[i] = vset1(a[i][2 * K2]);
      TX_UNROLL for (int q = 0; q < NP; ++q) {
        TX_UNROLL for (int v = 0; v < PV; ++v) {
          const V b0 = vbf_even(wr + q * pe + v * VL);
          TX_UNROLL for (int i = 0; i < R; ++i) c[q][i][v] = vfma(a0[i], b0, c[q][i][v]);
        }
      }
    }
  }
  TX_UNROLL for (int q = 0; q < NP; ++q) {
    const int64_t col = (p + q) * PW;
    tile_store<R, PV>(c[q], P.C + col, P.ldc, mr, (int)imin(PW, P.N - col));
  }
}

// Panels [p, p1) in groups of NP, the remainder (< NP) in groups of NP/2, NP/4, ..., 1.
template <int R, bool BF, int NP>
static void pk_gemv_range(const PackedProblem& P, const float* const* a, int64_t p, int64_t p1, int mr) {
  for (; p + NP <= p1; p += NP) pk_gemv_np<R, BF, NP>(P, a, p, mr);
  if (NP > 1 && p < p1) pk_gemv_range<R, BF, (NP > 1 ? NP / 2 : 1)>(P, a, p, p1, mr);
}

template <int R, bool BF>
static void pk_gemv(const PackedProblem& P) {
  const int64_t panels = ceil_div(P.N, PW);
  const int nt = (int)imin(gemm_threads(P.M, P.N, P.K), panels);
  const float* a[R];
  for (int i = 0; i < R; ++i) a[i] = P.A + (i < P.M ? i : 0) * P.lda;  // clamp: never read past A
  const int mr = (int)P.M;
  if (nt <= 1) return pk_gemv_range<R, BF, gemv_np(R)>(P, a, 0, panels, mr);
  // Threads take groups of NP panels as they finish the last one: the cores' streams
  // from memory do not keep pace with each other, and equal shares made the first to
  // finish wait (Zen 3, 2 threads, W from DRAM, M = 1: K = 768, N = 768 / 2304 / 3072
  // 1.07x / 1.20x / 1.12x, interleaved A/B; decoding GPT-2 small 1.03-1.04x). A panel's
  // result does not depend on the thread that computes it.
  constexpr int NP = gemv_np(R);
  const int64_t groups = ceil_div(panels, NP);
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
#endif
  for (int64_t g = 0; g < groups; ++g) pk_gemv_range<R, BF, NP>(P, a, g * NP, imin(panels, (g + 1) * NP), mr);
}

// K blocks: equal sizes <= KC (kc_for_l2; even for bf16 so pair rows never straddle
// blocks); a function of K and the L2 size only.
TX_INLINE int64_t pk_kc(const PackedProblem& P) {
  int64_t kc = ceil_div(P.K, ceil_div(P.K, kc_for_l2()));
  if (P.bf) kc = round_up(kc, 2);
  return kc;
}

// GEMV_M < M <= SKINNY_M_PACKED: threads take contiguous ranges of panels; each panel is
// read from memory once per call (per K block, the row groups re-read it from L1), one
// panel at a time with pk_tile's software prefetch.
template <bool BF>
static void pk_skinny(const PackedProblem& P) {
  const int64_t panels = ceil_div(P.N, PW);
  const int64_t groups = ceil_div(P.M, MR), gsz = ceil_div(P.M, groups);
  // One row group: nothing re-reads a K block, so stream the whole panel in one pass.
  const int64_t kc_max = groups == 1 ? P.K : pk_kc(P);
  const int nt = (int)imin(gemm_threads(P.M, P.N, P.K), panels);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
  for (int64_t p = 0; p < panels; ++p) {
    for (int64_t pc = 0; pc < P.K; pc += kc_max) {
      const int64_t kc = imin(kc_max, P.K - pc);
      const bool first = pc == 0;
      const bool load_c = !first || P.accumulate;
      for (int s = 0; s < PW / NR; ++s) {
        const int64_t col = p * PW + s * NR;
        if (col >= P.N) break;
        const int nr = (int)imin(NR, P.N - col);
        const float* bias = first && P.bias ? P.bias + col : nullptr;
        const void* w = pk_sliver(P, p, s, pc);
        for (int64_t i0 = 0; i0 < P.M; i0 += gsz) {
          pk_rows<BF>(P, i0, (int)imin(gsz, P.M - i0), pc, kc, w, col, nr, load_c, bias);
        }
      }
    }
  }
}

// Panels [jc, jc + nc) of bf16 weights, K rows [pc, pc + kc) (pc even), widened exactly
// into fp32 panels of kc rows (row stride PW): the layout pk_tile reads for fp32 weights.
static void widen_block(const PackedProblem& P, int64_t pc, int64_t kc, int64_t jc, int64_t nc, float* Wf) {
  const int64_t k2 = ceil_div(kc, 2);
  for (int64_t p = jc / PW; p < ceil_div(jc + nc, PW); ++p) {
    const uint32_t* w = static_cast<const uint32_t*>(pk_sliver(P, p, 0, pc));
    float* d = Wf + (p - jc / PW) * kc * PW;
    for (int64_t r = 0; r < k2; ++r) {
      TX_UNROLL for (int v = 0; v < PW / VL; ++v) {
        vstore(d + 2 * r * PW + v * VL, vbf_even(w + r * PW + v * VL));
        if (2 * r + 1 < kc) vstore(d + (2 * r + 1) * PW + v * VL, vbf_odd(w + r * PW + v * VL));
      }
    }
  }
}

// M > SKINNY_M_PACKED: the BLIS loop nest of gemm_packed without pack_B. bf16 weights
// are widened per L2 block first (widen_block), so the micro-kernel runs its fp32 loop:
// widening inside it (a shift or an AND per B vector, on the FMA ports) made bf16
// pre-fill ~0.75x the fp32 rate on AVX2. Same FMA chain, same bits.
template <bool BF>
static void pk_gemm(const PackedProblem& P) {
  const int64_t kc_max = pk_kc(P);
  const Split split = split_threads(P.M, P.N, PW, gemm_threads(P.M, P.N, P.K));
  const int64_t a_sz = round_up(imin(MC, split.max_rows(P.M)) * kc_max, 16);
  const int64_t w_sz = BF ? round_up(imin(nc_for_l2(), round_up(split.max_cols(P.N, PW), PW)) * kc_max, 16) : 0;
  float* scratch = scratch_alloc((a_sz + w_sz) * split.parts());
  const Problem PA{false, false, P.M, P.N, P.K, P.A, P.lda, nullptr, 0, nullptr, nullptr, 0, false};
  run_split(split, [&](int part) {
    int64_t m0, m1, n0, n1;
    split.range(part, P.M, P.N, PW, m0, m1, n0, n1);
    float* Ap = scratch + (int64_t)part * (a_sz + w_sz);
    float* Wf = Ap + a_sz;
    outer_loops(PA, kc_max, m0, m1, n0, n1, PW, Ap,
                [&](int64_t pc, int64_t kc, int64_t ic, int64_t mc, int64_t jc, int64_t nc) {
      const bool first = pc == 0;
      const bool load_c = !first || P.accumulate;
      if (BF) widen_block(P, pc, kc, jc, nc, Wf);
      const auto sliver = [&](int64_t col) -> const void* {
        if (BF) return Wf + (col - jc) / PW * kc * PW + col % PW;
        return pk_sliver(P, col / PW, (int)(col % PW / NR), pc);
      };
      for (int64_t ir = 0; ir < mc; ir += MR) {
        const float* ar[MR];
        for (int i = 0; i < MR; ++i) ar[i] = Ap + ir * kc + i;
        for (int64_t col = jc; col < jc + nc; col += NR) {
          // First row of tiles: the slivers come from memory (later rows find them in
          // L2); fetch the next one meanwhile. (Widened bf16: already in L2.)
          const void* wn = !BF && ir == 0 && col + NR < jc + nc ? sliver(col + NR) : nullptr;
          const int mr = (int)imin(MR, mc - ir);
          with_tile_rows(mr, [&](auto r) {
            pk_tile<decltype(r)::value, false, MR>(kc, ar, sliver(col), P.C + (ic + ir) * P.ldc + col, P.ldc, mr,
                                                   (int)imin(NR, jc + nc - col), load_c,
                                                   first && P.bias ? P.bias + col : nullptr, wn,
                                                   next_tile(P.C, P.ldc, ic + ir, col, ic, mc, jc, nc, NR));
          });
        }
      }
    });
  });
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
          const float* B, int64_t ldb, const float* bias, float* C, int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  const Problem P{trans_a, trans_b, M, N, K, A, lda, B, ldb, bias, C, ldc, accumulate};
  if (K <= 0) return gemm_init_only(P);
  if (trans_b && M <= SKINNY_M_DOT) return gemm_skinny_tb(P);
  if (!trans_b && M <= SKINNY_M_STREAM) return gemm_skinny(P);
#if defined(__AVX512F__)
  // Matmul precision "high" (opt-in) on a CPU with AMX tiles: bf16x3 products (gemm_amx.cpp).
  if (M >= AMX_F32_MIN_M && amx::fast_f32() && amx::usable()) {
    return amx::f32_gemm(trans_a, trans_b, M, N, K, A, lda, B, ldb, bias, C, ldc, accumulate);
  }
#endif
  gemm_packed(P);
}

int64_t packed_weight_elems(int64_t K, int64_t N, int dtype) {
  const int64_t panels = ceil_div(imax(N, 0), PW);
  return dtype == 1 ? panels * ceil_div(imax(K, 0), 2) * 2 * PW : panels * imax(K, 0) * PW;
}

void pack_weight(const float* B, int64_t ldb, bool trans_b, int64_t K, int64_t N, int dtype, void* out) {
  if (K <= 0 || N <= 0) return;
  const int64_t panels = ceil_div(N, PW);
  const int64_t work = K * N;
  TX_OMP_FOR(work)
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t j0 = p * PW, nj = imin(PW, N - j0);
    if (dtype == 1) {
      const int64_t K2 = ceil_div(K, 2);
      uint16_t* d = static_cast<uint16_t*>(out) + p * K2 * 2 * PW;
      for (int64_t r = 0; r < K2; ++r) {
        for (int64_t j = 0; j < PW; ++j) {
          for (int h = 0; h < 2; ++h) {
            const int64_t k = 2 * r + h;
            float x = 0.0f;
            if (j < nj && k < K) x = trans_b ? B[(j0 + j) * ldb + k] : B[k * ldb + j0 + j];
            d[r * 2 * PW + 2 * j + h] = f32_to_bf16(x);
          }
        }
      }
    } else {
      float* d = static_cast<float*>(out) + p * K * PW;
      for (int64_t k = 0; k < K; ++k) {
        for (int64_t j = 0; j < PW; ++j) {
          d[k * PW + j] = j < nj ? (trans_b ? B[(j0 + j) * ldb + k] : B[k * ldb + j0 + j]) : 0.0f;
        }
      }
    }
  }
}

void gemm_prepacked(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const void* Wp, int dtype,
                    const float* bias, float* C, int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    const Problem P0{false, false, M, N, K, A, lda, nullptr, 0, bias, C, ldc, accumulate};
    return gemm_init_only(P0);
  }
  const bool bf = dtype == 1;
  const PackedProblem P{M, N, K, A, lda, Wp, bf, bias, C, ldc, accumulate,
                        bf ? ceil_div(K, 2) * 2 * PW : K * PW};
  switch (M) {  // GEMV path: one template per row count
    case 1: return bf ? pk_gemv<1, true>(P) : pk_gemv<1, false>(P);
    case 2: return bf ? pk_gemv<2, true>(P) : pk_gemv<2, false>(P);
    case 3: return bf ? pk_gemv<3, true>(P) : pk_gemv<3, false>(P);
    case 4: return bf ? pk_gemv<4, true>(P) : pk_gemv<4, false>(P);
    case 5: return bf ? pk_gemv<5, true>(P) : pk_gemv<5, false>(P);
    case 6: return bf ? pk_gemv<6, true>(P) : pk_gemv<6, false>(P);
    default: break;  // M = 7, 8 measured no better here than pk_skinny's one prefetched stream
  }
  static_assert(GEMV_M == 6, "one case per GEMV row count");
  if (M <= SKINNY_M_PACKED) {
    if (bf) return pk_skinny<true>(P);
    return pk_skinny<false>(P);
  }
#if defined(__AVX512F__)
  // bf16 weights on a CPU with AMX tiles: ~2x this path (gemm_amx.cpp; its numerics there).
  if (bf && amx::usable()) {
    return amx::bf16_gemm(M, N, K, A, lda, static_cast<const uint16_t*>(Wp), bias, C, ldc, accumulate);
  }
  // fp32 weights at matmul precision "high" (opt-in): bf16x3 on the tiles.
  if (!bf && M >= AMX_F32_MIN_M && amx::fast_f32() && amx::usable()) {
    return amx::f32_gemm_prepacked(M, N, K, A, lda, static_cast<const float*>(Wp), bias, C, ldc, accumulate);
  }
#endif
  if (bf) return pk_gemm<true>(P);
  pk_gemm<false>(P);
}

// out[j] (+)= Σ_i X[i, j], summed over i in order for each column (a fixed chain);
// threads split the columns into blocks.
void sum_rows(const float* X, int64_t M, int64_t N, int64_t ldx, float* out, bool accumulate) {
  if (N <= 0) return;
  constexpr int64_t CB = 256;  // columns per block: the partial sums stay in L1
  const int64_t blocks = ceil_div(N, CB);
  const int64_t work = M * N;
  TX_OMP_FOR(work)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t j0 = b * CB, n = imin(CB, N - j0);
    float acc[CB];
    for (int64_t j = 0; j < n; ++j) acc[j] = accumulate ? out[j0 + j] : 0.0f;
    for (int64_t i = 0; i < M; ++i) {
      const float* x = X + i * ldx + j0;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) acc[j] += x[j];
    }
    for (int64_t j = 0; j < n; ++j) out[j0 + j] = acc[j];
  }
}

}  // namespace TX_ISA_NS
}  // namespace tx
