// Scaled dot-product attention, forward and backward, FlashAttention-2 style
// (Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work
// Partitioning", 2023): the Tq×Tk score matrix is never materialised.
//
// Forward, for one (b, h) and a tile of BQ query rows:
//   m = -inf, l = 0, acc = 0
//   for each tile of BK keys (stopping at the causal diagonal):
//     S   = q kᵀ · scale + mask            (BK × BQ, stored key-major: St[c][r])
//     m'  = max(m, rowmax S);  α = exp(m − m');  P = exp(S − m')
//     l   = α·l + rowsum P;    acc = α·acc + P v;   m = m'
//   out = acc / l,  lse = m + log l         (l == 0: no visible key -> out 0, lse -inf)
//
// Backward (same paper, Alg. 2), with Dᵢ = rowsum(dOᵢ ∘ Oᵢ) and P = exp(S − lse)
// recomputed per tile from the saved lse:
//   dV = Pᵀ dO;   dP = dO Vᵀ;   dS = P ∘ (dP − D);   dQ = dS K·scale;   dK = dSᵀ Q·scale
// Determinism: every output row is owned by one work item that sums in a fixed order.
// With enough (b, h) pairs for the threads, one item per (b, h) runs FlashAttention-2's
// loop (key tiles outer, query tiles inner) and accumulates dQ in a private buffer.
// Otherwise two passes: (b, h, key tile) items own dK/dV rows, looping over all query
// tiles; then (b, h, query tile) items own dQ rows, looping over key tiles (S and dP
// are recomputed). S, P and dS come from the very same code in every case and each
// row receives the same contributions in the same tile order, so both schemes (and any
// thread count) give the same bits.
//
// Layout trick: scores are computed transposed, St[c][r] (key c, query r), so that
// the query axis is the vector axis. Then S = K·Qᵗ is a broadcast-FMA micro-kernel over
// a pre-transposed Q tile (Qt[d][r], built once per query tile, no per-key-tile
// transposes), and the online-softmax statistics (max, exp, sums) are element-wise
// vector ops across query lanes. Tiles with only a few query rows (decoding, Tq == 1)
// use plain dot products instead, which do not waste vector lanes.
//
// Attention dropout (s.dropout_p = p > 0): O = (P ⊙ M/(1−p)) V with the keep mask
// M[b,h,i,j] recomputed from a counter-based hash wherever a tile needs it (never stored):
//   z   = mix64(mix64(mix64(mix64(seed + G) + (b+1)G) + (h+1)G) + (i+1)G)   (per row)
//   x   = fmix32(fmix32(hi32(z) + j) ^ lo32(z))                            (per element)
//   keep iff x >= ceil(p·2^32)
// (mix64: SplitMix64's finaliser, G = 0x9E3779B97F4A7C15; fmix32: MurmurHash3's), so
// P(keep) = 1 − p up to 2^-32, and ops/reference.py reproduces it bit for bit in NumPy.
// Forward: l sums the undropped P (softmax normaliser), acc the dropped P̃ = P ⊙ M/(1−p);
// lse stays the undropped log-sum-exp. Backward: dV = P̃ᵀ dO, dP = (dO Vᵀ) ⊙ M/(1−p),
// dS = P ∘ (dP − D) with D = rowsum(dO ∘ O) still = rowsum(dP ∘ P) as O = P̃ V.
//
// Numerics: every element of S (and dP) is one sequential FMA chain over d, or (row
// path) one SIMD dot product with a fixed lane-combining order; every accumulator row
// (acc, dK, dV, dQ) is one sequential chain over keys/queries in tile order. Nothing
// depends on the thread count or on which thread runs a tile.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <new>
#include <utility>

#include "tx/kernels.h"
#include "vmath.h"  // tx_select, kExpShifter

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__GNUC__)
#define TXA_INLINE static inline __attribute__((always_inline))
#else
#define TXA_INLINE static inline
#endif

namespace tx {
namespace TX_ISA_NS {

namespace {

// ---------------------------------------------------------------------------------
// Vector layer: GCC/Clang vector extensions (`s * v` broadcasts the scalar), W lanes.
// Loads/stores are unaligned (memcpy); FMAs are explicit intrinsics on AVX2/AVX-512.
// ---------------------------------------------------------------------------------
#if defined(__AVX512F__)
constexpr int W = 16;
#elif defined(__AVX2__)
constexpr int W = 8;
#elif defined(__GNUC__)
constexpr int W = 4;
#else
constexpr int W = 1;
#endif

#if defined(__GNUC__)
typedef float vf __attribute__((vector_size(W * 4)));
#else
typedef float vf;
#endif

TXA_INLINE vf vzero() {
  vf z;
  memset(&z, 0, sizeof z);
  return z;
}
TXA_INLINE vf vld(const float* p) {
  vf v;
  memcpy(&v, p, sizeof v);
  return v;
}
TXA_INLINE void vst(float* p, vf v) { memcpy(p, &v, sizeof v); }
// The first n (1 <= n < W) lanes of p, the rest zero; never touches p[n..W).
TXA_INLINE vf vld_part(const float* p, int n) {
#if defined(__AVX512F__)
  return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p);
#elif defined(__AVX2__)
  static const int32_t lanes[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_maskload_ps(p, _mm256_loadu_si256((const __m256i*)(lanes + 8 - n)));
#else
  vf v = vzero();
  memcpy(&v, p, (size_t)n * sizeof(float));
  return v;
#endif
}
// acc + a·y as one fused multiply-add where the ISA has it (explicit, so the rounding
// never depends on the compiler's contraction choices).
TXA_INLINE vf vfmas(float a, vf y, vf acc) {
#if defined(__AVX512F__)
  return _mm512_fmadd_ps(_mm512_set1_ps(a), y, acc);
#elif defined(__AVX2__)
  return _mm256_fmadd_ps(_mm256_set1_ps(a), y, acc);
#else
  return acc + a * y;
#endif
}
TXA_INLINE vf vfmav(vf a, vf y, vf acc) {
#if defined(__AVX512F__)
  return _mm512_fmadd_ps(a, y, acc);
#elif defined(__AVX2__)
  return _mm256_fmadd_ps(a, y, acc);
#else
  return acc + a * y;
#endif
}
TXA_INLINE float vhsum(vf v) {  // fixed pairwise order
#if defined(__AVX512F__)
  // (not _mm512_reduce_add_ps: GCC 12 warns inside it)
  const __m256 h8 = _mm256_add_ps(_mm512_extractf32x8_ps(v, 0), _mm512_extractf32x8_ps(v, 1));
  const __m128 h4 = _mm_add_ps(_mm256_castps256_ps128(h8), _mm256_extractf128_ps(h8, 1));
  const __m128 h2 = _mm_add_ps(h4, _mm_movehl_ps(h4, h4));
  return _mm_cvtss_f32(_mm_add_ss(h2, _mm_movehdup_ps(h2)));
#else
  float t[W];
  memcpy(t, &v, sizeof v);
  for (int w = W / 2; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) t[i] += t[i + w];
  return t[0];
#endif
}

// Tile sizes. BQ query rows × BK keys per tile (both multiples of W).
constexpr int64_t BQ = 64;
constexpr int64_t BK = 64;
// Tiles with at most ROW_PATH_MAX query rows compute scores by dot products.
constexpr int64_t ROW_PATH_MAX = 3;

// Register blocking. KA: S-type micro-kernel, KA_KB keys × KA_RC vectors of queries.
// KB: accumulate micro-kernel, KB_IB output rows × KB_DV vectors of d.
#if defined(__AVX512F__)
constexpr int KA_KB = 4, KA_RC = 4, KB_IB = 4, KB_DV = 4;  // 16 zmm accumulators
#elif defined(__AVX2__)
constexpr int KA_KB = 4, KA_RC = 3, KB_IB = 4, KB_DV = 3;  // 12 ymm accumulators
#else
constexpr int KA_KB = 4, KA_RC = 2, KB_IB = 4, KB_DV = 2;
#endif

static inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t round_up(int64_t a, int64_t m) { return (a + m - 1) / m * m; }

// Lane primitives for the exp below and the online softmax: max/min with x86's NaN rule
// (either operand NaN -> the second one), 2^n from the shifter's bits, selects as bit
// masks. On AVX2 a vblendvps is 2-3 uops on the three vector ports that also run the
// polynomial, a vmaxps or vandnps one: ~1/6 of the forward's time is this exp there.
#if defined(__GNUC__)
typedef int32_t vi __attribute__((vector_size(W * 4)));
TXA_INLINE vf vsplat(float a) { return vzero() + a; }
TXA_INLINE vf vmax2(vf a, vf b) {  // a > b ? a : b
#if defined(__AVX512F__)
  return _mm512_max_ps(a, b);
#elif defined(__AVX2__)
  return _mm256_max_ps(a, b);
#else
  return (vf)(((vi)a & (a > b)) | ((vi)b & ~(a > b)));
#endif
}
TXA_INLINE vf vmin2(vf a, vf b) {  // a < b ? a : b
#if defined(__AVX512F__)
  return _mm512_min_ps(a, b);
#elif defined(__AVX2__)
  return _mm256_min_ps(a, b);
#else
  return (vf)(((vi)a & (a < b)) | ((vi)b & ~(a < b)));
#endif
}
// t = n + 1.5·2^23 (n in [-126, 127] in its low mantissa bits) -> 2^n
TXA_INLINE vf vpow2_shifted(vf t) { return (vf)(((vi)t - (int32_t)(0x4B400000u - 127u)) << 23); }
TXA_INLINE vf vzero_where_lt(vf x, vf lo, vf y) { return (vf)((vi)y & ~(x < lo)); }  // x < lo ? 0 : y
TXA_INLINE vf vninf_to_0(vf x) { return (vf)((vi)x & ~(x == -INFINITY)); }          // −inf -> 0
// x, rounded on its own: the empty asm keeps GCC from contracting the product that
// made x into a later add (as adamw.cpp's vkeep).
TXA_INLINE vf vkeep(vf x) {
#if defined(__AVX512F__)
  __asm__("" : "+v"(x));
#elif defined(__x86_64__) || defined(__i386__)
  __asm__("" : "+x"(x));
#elif defined(__aarch64__)
  __asm__("" : "+w"(x));
#endif
  return x;
}
#else  // W = 1: vf is float
TXA_INLINE vf vsplat(float a) { return a; }
TXA_INLINE vf vmax2(vf a, vf b) { return tx_select(a > b, a, b); }
TXA_INLINE vf vmin2(vf a, vf b) { return tx_select(a < b, a, b); }
TXA_INLINE vf vpow2_shifted(vf t) {
  uint32_t u;
  memcpy(&u, &t, sizeof u);
  u = (u - 0x4B400000u + 127u) << 23;
  memcpy(&t, &u, sizeof t);
  return t;
}
TXA_INLINE vf vzero_where_lt(vf x, vf lo, vf y) { return tx_select(x < lo, 0.0f, y); }
TXA_INLINE vf vninf_to_0(vf x) { return tx_select(x == -INFINITY, 0.0f, x); }
TXA_INLINE vf vkeep(vf x) { return x; }
#endif

// exp for softmax weights: arguments are <= ~0 (s − max, s − lse) or −inf or NaN.
// Same scheme as vmath.h's tx_exp (n = round(x·log2 e) from the 1.5·2^23 shifter's low
// bits, Cody–Waite r = x − n·ln2, Cephes polynomial, <= 1.5 ulp) but with one 2^n
// factor: results below 2^-126 (x < −87.34, incl. −inf) are exactly 0 instead of
// subnormal — they are dropped next to the row's max term, whose weight is 1. That saves
// ~6 vector ops per 16 scores in the hottest non-FMA loop. exp(0) = 1 exactly, NaN ->
// NaN; x > 88.37 is clamped (returns ~2.7e38; never happens for these arguments).
TXA_INLINE vf vexp_sm(vf x) {
  const vf lo = vsplat(-87.33654f);
  const vf xc = vmin2(vsplat(88.37626f), vmax2(lo, x));  // NaN passes
  const vf shifter = vsplat(kExpShifter);
  const vf t = vfmav(xc, vsplat(1.44269504088896341f), shifter);
  const vf n = t - shifter;
  vf r = vfmav(n, vsplat(-0.693359375f), xc);  // ln 2 = 0.693359375 − 2.12194440e-4 (Cody–Waite)
  r = vfmav(n, vsplat(2.12194440e-4f), r);
  vf p = vsplat(1.9875691500e-4f);
  p = vfmav(p, r, vsplat(1.3981999507e-3f));
  p = vfmav(p, r, vsplat(8.3334519073e-3f));
  p = vfmav(p, r, vsplat(4.1665795894e-2f));
  p = vfmav(p, r, vsplat(1.6666665459e-1f));
  p = vfmav(p, r, vsplat(5.0000001201e-1f));
  p = vfmav(p, r * r, r) + 1.0f;
  return vzero_where_lt(x, lo, p * vpow2_shifted(t));
}

// ---------------------------------------------------------------------------------
// Dropout hash (see the header comment). Row keys are computed once per query row;
// the per-element part is 32-bit integer math that vectorises across query lanes.
// ---------------------------------------------------------------------------------
static inline uint64_t mix64(uint64_t z) {  // SplitMix64 finaliser (Steele et al. 2014)
  z ^= z >> 30;
  z *= 0xBF58476D1CE4E5B9ull;
  z ^= z >> 27;
  z *= 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static inline uint32_t fmix32(uint32_t h) {  // MurmurHash3 finaliser
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  return h ^ (h >> 16);
}
static inline uint64_t drop_row_key(uint64_t seed, int64_t b, int64_t h, int64_t i) {
  const uint64_t G = 0x9E3779B97F4A7C15ull;
  uint64_t z = mix64(seed + G);
  z = mix64(z + ((uint64_t)b + 1) * G);
  z = mix64(z + ((uint64_t)h + 1) * G);
  return mix64(z + ((uint64_t)i + 1) * G);
}

// What a tile needs to apply the mask: the keep threshold, 1/(1−p), and per query
// lane r the row key halves (lanes past nq: 0, their P is 0 anyway).
struct DropRows {
  uint32_t thr;
  float ks;
  const uint32_t* lo;
  const uint32_t* hi;
};

static inline uint32_t drop_threshold(float p) {  // ceil(p·2^32), p in (0, 1)
  const double t = ceil((double)p * 4294967296.0);
  return t >= 4294967295.0 ? 0xFFFFFFFFu : (uint32_t)t;
}

// Row keys for query rows [i0, i0+nq) of (b, h), lanes [nq, rw) zero.
static void drop_row_keys(const AttnShape& s, int64_t b, int64_t h, int64_t i0, int64_t nq, int64_t rw,
                          uint32_t* lo, uint32_t* hi) {
  for (int64_t r = 0; r < rw; ++r) {
    const uint64_t z = r < nq ? drop_row_key(s.dropout_seed, b, h, i0 + r) : 0;
    lo[r] = (uint32_t)z;
    hi[r] = (uint32_t)(z >> 32);
  }
}

// m[r] = M[i0+r, j]/(1−p): ks where the pair (row, key j) is kept, else 0.
static inline void drop_factors(const DropRows& dr, int64_t j, int64_t rw, float* m) {
  const uint32_t jj = (uint32_t)j;
  const uint32_t thr = dr.thr;
  const float ks = dr.ks;
#pragma omp simd
  for (int64_t r = 0; r < rw; ++r) {
    const uint32_t x = fmix32(fmix32(dr.hi[r] + jj) ^ dr.lo[r]);
    m[r] = x >= thr ? ks : 0.0f;
  }
}

// ---------------------------------------------------------------------------------
// Micro-kernel A: Out[c*BQ + r] = scale · Σ_{d<D} X[c*xs + d] · Yt[d*BQ + r]
// for c < nk, r < rw (rw a multiple of W). X: key-side rows (K or V, strided view),
// Yt: a transposed query-side tile (Q or dO). Each element: one FMA chain over d.
// ---------------------------------------------------------------------------------
template <int KB, int NV>
TXA_INLINE void ka_block(float* out, const float* X, int64_t xs, const float* Yt, int64_t D, float scale) {
  vf acc[KB][NV];
  for (int i = 0; i < KB; ++i)
    for (int j = 0; j < NV; ++j) acc[i][j] = vzero();
  for (int64_t d = 0; d < D; ++d) {
    vf y[NV];
    for (int j = 0; j < NV; ++j) y[j] = vld(Yt + d * BQ + j * W);
    for (int i = 0; i < KB; ++i) {
      const float x = X[i * xs + d];
      for (int j = 0; j < NV; ++j) acc[i][j] = vfmas(x, y[j], acc[i][j]);
    }
  }
  for (int i = 0; i < KB; ++i)
    for (int j = 0; j < NV; ++j) vst(out + i * BQ + j * W, acc[i][j] * scale);
}

template <int KB>
static void ka_rows(int nv, float* out, const float* X, int64_t xs, const float* Yt, int64_t D, float scale) {
  switch (nv) {
    case 1: ka_block<KB, 1>(out, X, xs, Yt, D, scale); break;
    case 2: ka_block<KB, 2>(out, X, xs, Yt, D, scale); break;
    case 3: ka_block<KB, 3>(out, X, xs, Yt, D, scale); break;
    default: ka_block<KB, 4>(out, X, xs, Yt, D, scale); break;
  }
}

// Causal band (cv, see causal_cv): entries with c > r + cv are hidden; in the tile on the
// diagonal each block of rows stops at its last visible key (rounded up to KA_KB keys)
// and the hidden rest is set to 0 — score_tile overwrites it with −inf, and in dP it
// meets P = 0.
static void kernel_a(float* out, const float* X, int64_t xs, int64_t nk, const float* Yt,
                     int64_t rw, int64_t D, float scale, int64_t cv) {
  for (int64_t r0 = 0; r0 < rw; r0 += KA_RC * W) {
    const int nv = (int)imin(KA_RC, (rw - r0) / W);
    const int64_t nkv = imin(nk, round_up(imax(0, r0 + nv * W + cv), KA_KB));
    int64_t c = 0;
    for (; c + KA_KB <= nkv; c += KA_KB) ka_rows<KA_KB>(nv, out + c * BQ + r0, X + c * xs, xs, Yt + r0, D, scale);
    for (; c < nkv; ++c) ka_rows<1>(nv, out + c * BQ + r0, X + c * xs, xs, Yt + r0, D, scale);
    for (; c < nk; ++c) memset(out + c * BQ + r0, 0, sizeof(float) * (size_t)(nv * W));
  }
}

// SIMD dot product with a fixed combining order (row path): dot_lanes' lanes, summed by
// vhsum's pairwise tree.
TXA_INLINE vf dot_lanes(const float* a, const float* b, int64_t D) {
  vf s0 = vzero(), s1 = vzero();
  int64_t d = 0;
  for (; d + 2 * W <= D; d += 2 * W) {
    s0 = vfmav(vld(a + d), vld(b + d), s0);
    s1 = vfmav(vld(a + d + W), vld(b + d + W), s1);
  }
  if (d + W <= D) {
    s0 = vfmav(vld(a + d), vld(b + d), s0);
    d += W;
  }
  if (d < D) s1 = vfmav(vld_part(a + d, (int)(D - d)), vld_part(b + d, (int)(D - d)), s1);
  return s0 + s1;
}
static inline float dot(const float* a, const float* b, int64_t D) { return vhsum(dot_lanes(a, b, D)); }

// Out[c*BQ + r] = scale · X_c · Y_r for r < nq (row path), lanes [nq, rw) = 0.
static void rows_a(float* out, const float* X, int64_t xs, int64_t nk, const float* Y, int64_t ys,
                   int64_t nq, int64_t rw, int64_t D, float scale) {
  for (int64_t c = 0; c < nk; ++c) {
    float* o = out + c * BQ;
    for (int64_t r = 0; r < nq; ++r) o[r] = dot(X + c * xs, Y + r * ys, D) * scale;
    for (int64_t r = nq; r < rw; ++r) o[r] = 0.0f;
  }
}

// ---------------------------------------------------------------------------------
// Micro-kernel B: Acc[i*lda + d] += Σ_{k<nk} A[i*ai + k*ak] · Y[k*ys + d]
// for i < ni, d < D (Acc rows padded to a multiple of W; padded lanes stay 0).
// Used for acc += P·V, dQ += dS·K (A = St read transposed: ai = 1, ak = BQ) and
// dV += Pᵀ·dO, dK += dSᵀ·Q (ai = BQ, ak = 1). Each element: one FMA chain over k.
// ---------------------------------------------------------------------------------
template <int IB, int NV, bool PART>
TXA_INLINE void kb_block(float* Acc, int64_t lda, const float* A, int64_t ai, int64_t ak,
                         int64_t nk, const float* Y, int64_t ys, int tail) {
  vf acc[IB][NV];
  for (int i = 0; i < IB; ++i)
    for (int j = 0; j < NV; ++j) acc[i][j] = vld(Acc + i * lda + j * W);
  for (int64_t k = 0; k < nk; ++k) {
    const float* yk = Y + k * ys;
    vf y[NV];
    for (int j = 0; j < NV; ++j) y[j] = (PART && j == NV - 1) ? vld_part(yk + j * W, tail) : vld(yk + j * W);
    for (int i = 0; i < IB; ++i) {
      const float a = A[i * ai + k * ak];
      for (int j = 0; j < NV; ++j) acc[i][j] = vfmas(a, y[j], acc[i][j]);
    }
  }
  for (int i = 0; i < IB; ++i)
    for (int j = 0; j < NV; ++j) vst(Acc + i * lda + j * W, acc[i][j]);
}

template <int IB, bool PART>
static void kb_nv(int nv, float* Acc, int64_t lda, const float* A, int64_t ai, int64_t ak, int64_t nk,
                  const float* Y, int64_t ys, int tail) {
  switch (nv) {
    case 1: kb_block<IB, 1, PART>(Acc, lda, A, ai, ak, nk, Y, ys, tail); break;
    case 2: kb_block<IB, 2, PART>(Acc, lda, A, ai, ak, nk, Y, ys, tail); break;
    case 3: kb_block<IB, 3, PART>(Acc, lda, A, ai, ak, nk, Y, ys, tail); break;
    default: kb_block<IB, 4, PART>(Acc, lda, A, ai, ak, nk, Y, ys, tail); break;
  }
}

template <int IB>
static void kb_rows(float* Acc, int64_t lda, const float* A, int64_t ai, int64_t ak, int64_t nk,
                    const float* Y, int64_t ys, int64_t D) {
  const int tail = (int)(D % W);
  const int64_t nvec = (D + W - 1) / W;
  for (int64_t v0 = 0; v0 < nvec; v0 += KB_DV) {
    const int nv = (int)imin(KB_DV, nvec - v0);
    const bool part = tail != 0 && v0 + nv == nvec;
    if (part)
      kb_nv<IB, true>(nv, Acc + v0 * W, lda, A, ai, ak, nk, Y + v0 * W, ys, tail);
    else
      kb_nv<IB, false>(nv, Acc + v0 * W, lda, A, ai, ak, nk, Y + v0 * W, ys, tail);
  }
}

// A is zero outside the band i − lo <= k <= i + hi (causal: see causal_cv), and each
// block of rows sums only the k in its band: the terms left out are exact zeros, so the
// sums keep their bits.
template <int IB>
TXA_INLINE void kb_band(float* Acc, int64_t lda, const float* A, int64_t ai, int64_t ak, int64_t i, int64_t nk,
                        const float* Y, int64_t ys, int64_t D, int64_t lo, int64_t hi) {
  const int64_t k0 = imax(0, i - lo), k1 = imin(nk, i + IB + hi);
  if (k1 > k0) kb_rows<IB>(Acc + i * lda, lda, A + i * ai + k0 * ak, ai, ak, k1 - k0, Y + k0 * ys, ys, D);
}

static void kernel_b(float* Acc, int64_t lda, const float* A, int64_t ai, int64_t ak, int64_t ni,
                     int64_t nk, const float* Y, int64_t ys, int64_t D, int64_t lo, int64_t hi) {
  if (nk <= 0) return;
  int64_t i = 0;
  for (; i + KB_IB <= ni; i += KB_IB) kb_band<KB_IB>(Acc, lda, A, ai, ak, i, nk, Y, ys, D, lo, hi);
  for (; i < ni; ++i) kb_band<1>(Acc, lda, A, ai, ak, i, nk, Y, ys, D, lo, hi);
}

// The n rows of a tile that kernel_b will read as Y (rows `stride` floats apart): in place,
// or copied to buf (rows D floats apart) when `copy`, and stride updated. kernel_b reads Y
// once per KB_IB output rows; Y rows further apart than D — views into a fused QKV
// projection, 3·H·D floats, or heads split from a (B, T, H·D) tensor — fall into a
// quarter of L1's sets and evict each other (measured on QKV views, causal, H = 12, D = 64,
// 1 thread, interleaved A/B: forward +12% / +8% / −4% at T = 128 / 512 / 1024, backward
// +4% / +14% / +5%). Values and order are unchanged.
TXA_INLINE const float* tile_rows(const float* y, int64_t& stride, int64_t n, int64_t D, bool copy, float* buf) {
  if (!copy) return y;
  for (int64_t c = 0; c < n; ++c) memcpy(buf + c * D, y + c * stride, sizeof(float) * (size_t)D);
  stride = D;
  return buf;
}

// ---------------------------------------------------------------------------------
// One (query tile, key tile) pair: the geometry and the score tile.
// ---------------------------------------------------------------------------------
struct Tile {
  int64_t b, h;
  int64_t i0, nq, rw;  // query rows [i0, i0+nq), vector width rw = round_up(nq, W)
  bool row_path;
};

static inline Tile make_tile(const AttnShape& s, int64_t bh, int64_t qt) {
  Tile t;
  t.b = bh / s.H;
  t.h = bh % s.H;
  t.i0 = qt * BQ;
  t.nq = imin(BQ, s.Tq - t.i0);
  t.rw = round_up(t.nq, W);
  t.row_path = t.nq <= ROW_PATH_MAX;
  return t;
}

// Keys [0, key_end) can be visible to some row of the tile (causal: j <= i + Tk − Tq).
static inline int64_t key_end(const AttnShape& s, const Tile& t) {
  if (!s.causal) return s.Tk;
  return imax(0, imin(s.Tk, t.i0 + t.nq + (s.Tk - s.Tq)));
}

// Causal band of the (tile t, keys from j0) pair: key j0 + c is visible to query
// i0 + r iff c <= r + cv; NO_BAND when nothing is hidden by position.
constexpr int64_t NO_BAND = (int64_t)1 << 40;
static inline int64_t causal_cv(const AttnShape& s, const Tile& t, int64_t j0) {
  return s.causal ? t.i0 + (s.Tk - s.Tq) - j0 : NO_BAND;
}

static inline const float* head0(const View4& x, int64_t b, int64_t h) { return x.data + b * x.s0 + h * x.s1; }
static inline const float* row0(const View4& x, const Tile& t) { return head0(x, t.b, t.h); }

// Qt[d*BQ + r] = q[i0 + r][d] for r < nq, 0 for r in [nq, rw).
static void transpose_tile(float* Yt, const float* Y, int64_t ys, const Tile& t, int64_t D) {
  int64_t r0 = 0;
#if defined(__AVX512F__)
  if (ys > 0 && ys < (int64_t)1 << 26) {  // gather 16 rows at once (int32 offsets)
    const __m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                           _mm512_set1_epi32((int)ys));
    for (; r0 + 16 <= t.nq; r0 += 16) {
      const float* y = Y + r0 * ys;
      for (int64_t d = 0; d < D; ++d) _mm512_storeu_ps(Yt + d * BQ + r0, _mm512_i32gather_ps(idx, y + d, 4));
    }
  }
#endif
  for (int64_t d = 0; d < D; ++d) {
    float* o = Yt + d * BQ;
    for (int64_t r = r0; r < t.nq; ++r) o[r] = Y[r * ys + d];
    for (int64_t r = t.nq; r < t.rw; ++r) o[r] = 0.0f;
  }
}

// St[c][r] = (q_{i0+r} · k_{j0+c})·scale + mask, −inf where causally hidden and in the
// padding lanes r >= nq. Identical code (hence bits) in the forward and both backward
// passes. q_rows/qs: the tile's query rows (row path); Qt: its transposed copy; kr/ks:
// key j0's row and the key row stride (of k itself or of a contiguous copy of the tile).
static void score_tile(const AttnShape& s, const Tile& t, int64_t j0, int64_t nk, const float* q_rows,
                       int64_t qs, const float* Qt, const float* kr, int64_t ks, const View4& mask, float* St) {
  if (t.row_path)
    rows_a(St, kr, ks, nk, q_rows, qs, t.nq, t.rw, s.D, s.scale);
  else
    kernel_a(St, kr, ks, nk, Qt, t.rw, s.D, s.scale, causal_cv(s, t, j0));
  const int64_t nq = t.nq, rw = t.rw;
  if (mask.data) {
    const float* mb = row0(mask, t) + t.i0 * mask.s2 + j0 * mask.s3;
    if (mask.s2 == 0) {  // same value down a key's column (e.g. key padding)
      for (int64_t c = 0; c < nk; ++c) {
        const float mv = mb[c * mask.s3];
        float* o = St + c * BQ;
#pragma omp simd
        for (int64_t r = 0; r < nq; ++r) o[r] += mv;
      }
    } else {  // dense: mask rows run along keys, St along queries -> gather 16 rows
      int64_t r0 = 0;
#if defined(__AVX512F__)
      const int64_t s2 = mask.s2;
      if (s2 > -((int64_t)1 << 26) && s2 < ((int64_t)1 << 26)) {  // int32 offsets
        const __m512i idx = _mm512_mullo_epi32(
            _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32((int)s2));
        for (; r0 + 16 <= nq; r0 += 16) {
          for (int64_t c = 0; c < nk; ++c) {
            float* o = St + c * BQ + r0;
            const __m512 mv = _mm512_i32gather_ps(idx, mb + r0 * s2 + c * mask.s3, 4);
            _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), mv));
          }
        }
      }
#endif
      for (int64_t r = r0; r < nq; ++r) {
        const float* mr = mb + r * mask.s2;
        for (int64_t c = 0; c < nk; ++c) St[c * BQ + r] += mr[c * mask.s3];
      }
    }
  }
  const int64_t off = s.Tk - s.Tq;
  for (int64_t c = 0; c < nk; ++c) {
    float* o = St + c * BQ;
    // rows r < rmin cannot see key j0 + c (needs i0 + r + off >= j0 + c)
    const int64_t rmin = s.causal ? imin(nq, imax(0, j0 + c - off - t.i0)) : 0;
    for (int64_t r = 0; r < rmin; ++r) o[r] = -INFINITY;
    for (int64_t r = nq; r < rw; ++r) o[r] = -INFINITY;
  }
}

// ---------------------------------------------------------------------------------
// Scratch: per-thread buffers carved from one allocation made before the parallel
// region (an allocation failure throws std::bad_alloc, never inside OpenMP).
// ---------------------------------------------------------------------------------
struct Scratch {
  float* base = nullptr;
  int64_t per_thread = 0;  // floats, multiple of 16 (64-byte aligned slices)
  Scratch(int nthreads, int64_t floats) {
    per_thread = round_up(floats, 16);
    const size_t bytes = (size_t)round_up(per_thread * nthreads * (int64_t)sizeof(float), 64);
    base = (float*)aligned_alloc(64, bytes);
    if (!base) throw std::bad_alloc();
  }
  ~Scratch() { free(base); }
  float* get(int tid) { return base + (int64_t)tid * per_thread; }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

static inline int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// Threads for a call doing `flops` FMAs in `items` independent work items.
static inline int attn_threads(int64_t flops, int64_t items) {
  const int64_t n = ::tx::threads_for(flops);
  return (int)imax(1, imin(n, items));
}

// What both backward passes share: inputs plus the pass-0 per-tile data.
struct BwdCtx {
  const AttnShape* s;
  View4 q, k, v, mask;
  const float* dout;
  const float *QtAll, *dOtAll, *Luse, *Dsum;
  const float* Qc;  // q rows copied contiguous (rows D apart: see tile_rows), or nullptr: q itself
  int64_t tile_t;
  // dropout (thr/ks as in DropRows; RkLo/RkHi: row keys per tile, BQ lanes each), or
  // RkLo == nullptr for none
  uint32_t thr;
  float ks;
  const uint32_t *RkLo, *RkHi;
};

// For query tile t (index w among all tiles) and keys [j0, j0+nk): Pt = P = exp(S − lse)
// and St = dS = P ∘ (dP − D) with dP = dO·Vᵀ. With dropout: Pt = P̃ = P ∘ M/(1−p) (for
// dV) and dP = (dO·Vᵀ) ∘ M/(1−p).
static void p_ds(const BwdCtx& cx, const Tile& t, int64_t w, int64_t j0, int64_t nk, float* St, float* Pt) {
  const AttnShape& s = *cx.s;
  const int64_t D = s.D;
  const float* qr = row0(cx.q, t) + t.i0 * cx.q.s2;
  const int64_t row = (t.b * s.H + t.h) * s.Tq + t.i0;
  score_tile(s, t, j0, nk, qr, cx.q.s2, cx.QtAll + w * cx.tile_t, row0(cx.k, t) + j0 * cx.k.s2, cx.k.s2, cx.mask,
             St);
  const float* Lt = cx.Luse + w * BQ;
  const float* Dt = cx.Dsum + w * BQ;
  const int64_t rw = t.rw;
  for (int64_t c = 0; c < nk; ++c)
    for (int64_t r = 0; r < rw; r += W) vst(Pt + c * BQ + r, vexp_sm(vld(St + c * BQ + r) - vld(Lt + r)));
  const float* vr = row0(cx.v, t) + j0 * cx.v.s2;
  if (t.row_path)
    rows_a(St, vr, cx.v.s2, nk, cx.dout + row * D, D, t.nq, rw, D, 1.0f);
  else
    kernel_a(St, vr, cx.v.s2, nk, cx.dOtAll + w * cx.tile_t, rw, D, 1.0f, causal_cv(s, t, j0));
  if (!cx.RkLo) {
    for (int64_t c = 0; c < nk; ++c) {
      float* o = St + c * BQ;
      const float* p = Pt + c * BQ;
#pragma omp simd
      for (int64_t r = 0; r < rw; ++r) o[r] = p[r] * (o[r] - Dt[r]);
    }
    return;
  }
  const DropRows dr{cx.thr, cx.ks, cx.RkLo + w * BQ, cx.RkHi + w * BQ};
  float mf[BQ];
  for (int64_t c = 0; c < nk; ++c) {
    float* o = St + c * BQ;
    float* p = Pt + c * BQ;
    drop_factors(dr, j0 + c, rw, mf);
#pragma omp simd
    for (int64_t r = 0; r < rw; ++r) {
      o[r] = p[r] * (o[r] * mf[r] - Dt[r]);
      p[r] *= mf[r];
    }
  }
}

// dK, dV for key tile kt of (b, h) = bh, looping over the query tiles that can see it
// (in increasing order); with dQ != nullptr (fused scheme, dQ = this (b, h)'s Tq×Dp
// accumulator) also dQ += dS·K for each tile pair.
static void key_tile_grads(const BwdCtx& cx, int64_t bh, int64_t kt, float* St, float* Pt, float* dK, float* dV,
                           float* dQ, float* Kc, float* dk, float* dv) {
  const AttnShape& s = *cx.s;
  const int64_t Tq = s.Tq, Tk = s.Tk, D = s.D, Dp = round_up(D, W);
  const int64_t nqt = (Tq + BQ - 1) / BQ;
  const int64_t j0 = kt * BK, nk = imin(BK, Tk - j0);
  memset(dK, 0, sizeof(float) * (size_t)(nk * Dp));
  memset(dV, 0, sizeof(float) * (size_t)(nk * Dp));
  // causal: the first query that sees key j0 is i = j0 − (Tk − Tq)
  const int64_t qt0 = s.causal ? imax(0, j0 - (Tk - Tq)) / BQ : 0;
  // dQ += dS·K reads this key tile once per query tile: one copy serves them all
  int64_t ks = cx.k.s2;
  const float* kt_rows = dQ ? tile_rows(head0(cx.k, bh / s.H, bh % s.H) + j0 * ks, ks, nk, D, ks != D, Kc) : nullptr;
  for (int64_t qt = qt0; qt < nqt; ++qt) {
    const Tile t = make_tile(s, bh, qt);
    if (key_end(s, t) <= j0) continue;
    const int64_t wq = bh * nqt + qt;
    p_ds(cx, t, wq, j0, nk, St, Pt);
    const int64_t row = bh * Tq + t.i0;
    const float* qr = cx.Qc ? cx.Qc + row * D : row0(cx.q, t) + t.i0 * cx.q.s2;
    const int64_t cv = causal_cv(s, t, j0);  // rows: keys (band r >= c − cv) for dV, dK; queries for dQ
    kernel_b(dV, Dp, Pt, BQ, 1, nk, t.nq, cx.dout + row * D, D, D, cv, NO_BAND);
    kernel_b(dK, Dp, St, BQ, 1, nk, t.nq, qr, cx.Qc ? D : cx.q.s2, D, cv, NO_BAND);
    if (dQ) kernel_b(dQ + t.i0 * Dp, Dp, St, 1, BQ, t.nq, nk, kt_rows, ks, D, NO_BAND, cv);
  }
  float* dkb = dk + (bh * Tk + j0) * D;
  float* dvb = dv + (bh * Tk + j0) * D;
  const float scale = s.scale;
  for (int64_t c = 0; c < nk; ++c) {
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) {
      dkb[c * D + d] = dK[c * Dp + d] * scale;
      dvb[c * D + d] = dV[c * Dp + d];
    }
  }
}

// dq rows = dQ accumulator rows · scale.
static void store_dq(const AttnShape& s, const float* dQ, int64_t rows, float* dq) {
  const int64_t D = s.D, Dp = round_up(D, W);
  const float scale = s.scale;
  for (int64_t r = 0; r < rows; ++r) {
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) dq[r * D + d] = dQ[r * Dp + d] * scale;
  }
}

}  // namespace

// =================================================================================
// Forward
// =================================================================================
// ---------------------------------------------------------------------------------
// Forward of a one-query tile without dropout (decoding: Tq = 1 against the KV cache).
// The row path's arithmetic, element by element, so the same bits (the backward
// recomputes P with the row path); only the work across keys is vectorised: W keys' dot
// products at once (their lanes folded by vhsum's pairwise tree, several keys per
// shuffle), their exps as one vector, and the P·V row with up to 8 accumulators. The
// row path did one key at a time, with a vector of padding lanes per key, and 3 (AVX2)
// accumulators per pass. Zen 3, 1 thread, H = 12, D = 64: 1.4-1.6x with K/V in L3,
// 1.3-1.36x from DRAM at Tk = 512-1000 (2 threads 1.44-1.51x); decoding GPT-2 small
// 1.03-1.08x at 500-1000 new tokens.
// ---------------------------------------------------------------------------------
#if defined(__GNUC__) && (defined(__clang__) || __GNUC__ >= 12)  // W >= 4 (GCC vector extensions)
#define TXA_ROW1 1
// Shuffle indices of one fold step: keys hold 2b partial sums in groups of 2b lanes (x's
// keys, then y's); lane i of the result gets the first (lo) or second (hi) half of its group.
constexpr int fold_lo(int i, int b) {
  const int G = W / (2 * b), g = i / b;
  return (g < G ? 0 : W) + (g % G) * 2 * b + i % b;
}
template <int B, int... Is>
TXA_INLINE vf fold(vf x, vf y, std::integer_sequence<int, Is...>) {
  return __builtin_shufflevector(x, y, fold_lo(Is, B)...) + __builtin_shufflevector(x, y, (fold_lo(Is, B) + B)...);
}
// u[0..W) -> lane c = vhsum(u[c]): the tree pairs lanes W/2 apart, then W/4, ... as vhsum does.
template <int B = W / 2>
TXA_INLINE vf fold_keys(vf* u, int n = W) {
  for (int c = 0; c < n / 2; ++c) u[c] = fold<B>(u[2 * c], u[2 * c + 1], std::make_integer_sequence<int, W>());
  if constexpr (B > 1) return fold_keys<B / 2>(u, n / 2);
  return u[0];
}
constexpr int ROW1_DV = 8;  // accumulator vectors of the P·V row per pass over a tile's keys
template <int NV = ROW1_DV>
TXA_INLINE void row1_pv(int nv, bool part, float* acc, const float* P, int64_t nk, const float* V, int64_t vs,
                        int tail) {
  if (nv == NV) {
    if (part)
      kb_block<1, NV, true>(acc, 0, P, 0, 1, nk, V, vs, tail);
    else
      kb_block<1, NV, false>(acc, 0, P, 0, 1, nk, V, vs, tail);
  } else if constexpr (NV > 1) {
    row1_pv<NV - 1>(nv, part, acc, P, nk, V, vs, tail);
  }
}

static void forward_row1(const AttnShape& s, const Tile& t, const View4& q, const View4& k, const View4& v,
                         const View4& mask, float* S, float* acc, float* out, float* lse) {
  const int64_t D = s.D, Dp = round_up(D, W), kend = key_end(s, t), ks = k.s2, vs = v.s2;
  const float* qr = row0(q, t) + t.i0 * q.s2;
  const vf scale = vsplat(s.scale);
  float m = -INFINITY, l = 0.0f;
  memset(acc, 0, sizeof(float) * (size_t)Dp);
  for (int64_t j0 = 0; j0 < kend; j0 += BK) {
    const int64_t nk = imin(BK, kend - j0);
    const float* kr = row0(k, t) + j0 * ks;
    int64_t c = 0;
    for (; c + W <= nk; c += W) {  // S = (q·k)·scale, W keys at a time
      vf u[W];
      for (int e = 0; e < W; ++e) u[e] = dot_lanes(kr + (c + e) * ks, qr, D);
      vst(S + c, fold_keys(u) * scale);
    }
    for (; c < nk; ++c) S[c] = dot(kr + c * ks, qr, D) * s.scale;
    for (; c < round_up(nk, W); ++c) S[c] = -INFINITY;  // padding lanes of the exp below
    if (mask.data) {
      const float* mb = row0(mask, t) + t.i0 * mask.s2 + j0 * mask.s3;
      for (c = 0; c < nk; ++c) S[c] += mb[c * mask.s3];
    }
    const int64_t off = s.Tk - s.Tq;
    for (c = 0; c < nk; ++c) {
      if (s.causal && j0 + c - off - t.i0 > 0) S[c] = -INFINITY;  // the row path's rmin = 1
    }
    // online softmax, as the row path's lane 0: m' = max(m, max S) (a NaN never wins),
    // α = exp(m − m'), P = exp(S − m'), l = α·l + Σ P in key order
    float mx = m;
    for (c = 0; c < nk; ++c) mx = S[c] > mx ? S[c] : mx;
    const float mu = mx == -INFINITY ? 0.0f : mx;
    const float al = vexp_sm(vsplat(m - mu))[0];
    m = mx;
    for (c = 0; c < nk; c += W) vst(S + c, vexp_sm(vld(S + c) - vsplat(mu)));
    float lr = vkeep(vsplat(l) * vsplat(al))[0];  // rounded alone: never fused into the adds
    for (c = 0; c < nk; ++c) lr += S[c];
    l = lr;
    if (j0 > 0) {
      for (int64_t d = 0; d < Dp; d += W) vst(acc + d, vld(acc + d) * vsplat(al));
    }
    // acc += Σ_c P[c]·v_c over the keys the causal band leaves (kb_band<1>'s), by the
    // same micro-kernel with up to ROW1_DV accumulators (independent FMA chains) per pass
    const int64_t k1 = imin(nk, 1 + causal_cv(s, t, j0));
    const float* vr = row0(v, t) + j0 * vs;
    const int tail = (int)(D % W);
    for (int64_t v0 = 0; v0 < Dp / W; v0 += ROW1_DV) {
      const int nv = (int)imin(ROW1_DV, Dp / W - v0);
      row1_pv(nv, tail != 0 && v0 + nv == Dp / W, acc + v0 * W, S, k1, vr + v0 * W, vs, tail);
    }
  }
  float* o = out + ((t.b * s.H + t.h) * s.Tq + t.i0) * D;
  float* lb = lse + (t.b * s.H + t.h) * s.Tq + t.i0;
  if (l == 0.0f) {  // no visible key
    for (int64_t d = 0; d < D; ++d) o[d] = 0.0f;
    *lb = -INFINITY;
  } else {
    const float inv = 1.0f / l;
    for (int64_t d = 0; d < D; ++d) o[d] = acc[d] * inv;
    *lb = m + logf(l);
  }
}
#endif

void attention_forward(const AttnShape& s, View4 q, View4 k, View4 v, View4 mask, float* out,
                       float* lse) {
  const int64_t B = s.B, H = s.H, Tq = s.Tq, D = s.D;
  if (B <= 0 || H <= 0 || Tq <= 0 || D <= 0) return;
  const int64_t Dp = round_up(D, W);
  const int64_t nqt = (Tq + BQ - 1) / BQ;
  const int64_t items = B * H * nqt;
  const int nt = attn_threads(B * H * Tq * (s.Tk > 0 ? s.Tk : 1) * D, items);
  // Qt (D×BQ), St (BK×BQ), acc (BQ×Dp), m, l, alpha (BQ each), Vc (BK×Dp)
  const int64_t o_qt = 0, o_st = o_qt + round_up(D * BQ, 16), o_acc = o_st + BK * BQ,
                o_m = o_acc + BQ * Dp, o_l = o_m + BQ, o_al = o_l + BQ, o_vc = round_up(o_al + BQ, 16),
                total = o_vc + BK * Dp;
  // V rows further apart than D are copied per key tile (tile_rows).
  const bool copy_v = v.s2 != D;
  Scratch scratch(nt, total);
  const bool drop = s.dropout_p > 0.0f;
  const uint32_t thr = drop ? drop_threshold(s.dropout_p) : 0;
  const float ks = drop ? (float)(1.0 / (1.0 - (double)s.dropout_p)) : 1.0f;

#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (int64_t w = 0; w < items; ++w) {
    float* sc = scratch.get(thread_id());
    float *Qt = sc + o_qt, *St = sc + o_st, *acc = sc + o_acc, *m = sc + o_m, *l = sc + o_l,
          *alpha = sc + o_al, *Vc = sc + o_vc;
    const Tile t = make_tile(s, w / nqt, w % nqt);
#if defined(TXA_ROW1)
    if (t.nq == 1 && !drop) {
      forward_row1(s, t, q, k, v, mask, St, acc, out, lse);
      continue;
    }
#endif
    const int64_t nq = t.nq, rw = t.rw;
    const float* qr = row0(q, t) + t.i0 * q.s2;
    if (!t.row_path) transpose_tile(Qt, qr, q.s2, t, D);
    for (int64_t r = 0; r < rw; ++r) {
      m[r] = -INFINITY;
      l[r] = 0.0f;
    }
    memset(acc, 0, sizeof(float) * (size_t)(nq * Dp));
    uint32_t rk_lo[BQ], rk_hi[BQ];
    float mf[BQ];
    if (drop) drop_row_keys(s, t.b, t.h, t.i0, nq, rw, rk_lo, rk_hi);
    const DropRows dr{thr, ks, rk_lo, rk_hi};
    const int64_t kend = key_end(s, t);
    const float* vb = row0(v, t);
    for (int64_t j0 = 0; j0 < kend; j0 += BK) {
      const int64_t nk = imin(BK, kend - j0);
      score_tile(s, t, j0, nk, qr, q.s2, Qt, row0(k, t) + j0 * k.s2, k.s2, mask, St);
      // online softmax: m' = max(m, rowmax S); α = exp(m − m'); P = exp(S − m')
      // (m' = −inf: nothing visible yet; subtract 0 so exp(−inf) = 0, not NaN)
      // (vector by vector of query lanes; a NaN score never becomes the max)
      for (int64_t r = 0; r < rw; r += W) {
        vf mx = vld(m + r);
        for (int64_t c = 0; c < nk; ++c) mx = vmax2(vld(St + c * BQ + r), mx);
        const vf mu = vninf_to_0(mx);
        const vf al = vexp_sm(vld(m + r) - mu);
        vst(alpha + r, al);
        vst(m + r, mx);
        vf lr = vkeep(vld(l + r) * al);  // l = α·l, then + Σ P in key order
        for (int64_t c = 0; c < nk; ++c) {
          const vf p = vexp_sm(vld(St + c * BQ + r) - mu);
          vst(St + c * BQ + r, p);
          lr += p;
        }
        vst(l + r, lr);
      }
      if (drop) {  // l sums the undropped P; acc gets P̃ = P ∘ M/(1−p)
        for (int64_t c = 0; c < nk; ++c) {
          float* o = St + c * BQ;
          drop_factors(dr, j0 + c, rw, mf);
#pragma omp simd
          for (int64_t r = 0; r < rw; ++r) o[r] *= mf[r];
        }
      }
      if (j0 > 0) {
        for (int64_t r = 0; r < nq; ++r) {
          float* a = acc + r * Dp;
          const float al = alpha[r];
#pragma omp simd
          for (int64_t d = 0; d < Dp; ++d) a[d] *= al;
        }
      }
      // acc[r] += Σ_c P[r][c] v[c]
      int64_t vs = v.s2;
      const float* vt = tile_rows(vb + j0 * v.s2, vs, nk, D, copy_v && !t.row_path, Vc);
      kernel_b(acc, Dp, St, 1, BQ, nq, nk, vt, vs, D, NO_BAND, causal_cv(s, t, j0));
    }
    float* ob = out + ((t.b * H + t.h) * Tq + t.i0) * D;
    float* lb = lse + (t.b * H + t.h) * Tq + t.i0;
    for (int64_t r = 0; r < nq; ++r) {
      const float lr = l[r];
      float* o = ob + r * D;
      const float* a = acc + r * Dp;
      if (lr == 0.0f) {  // no visible key
        for (int64_t d = 0; d < D; ++d) o[d] = 0.0f;
        lb[r] = -INFINITY;
      } else {
        const float inv = 1.0f / lr;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) o[d] = a[d] * inv;
        lb[r] = m[r] + logf(lr);
      }
    }
  }
}

// =================================================================================
// Backward
// =================================================================================
void attention_backward(const AttnShape& s, View4 q, View4 k, View4 v, View4 mask, const float* out,
                        const float* dout, const float* lse, float* dq, float* dk, float* dv) {
  const int64_t B = s.B, H = s.H, Tq = s.Tq, Tk = s.Tk, D = s.D;
  if (B <= 0 || H <= 0 || D <= 0) return;
  const int64_t BH = B * H;
  if (Tq <= 0 || Tk <= 0) {  // no pair contributes: gradients are zero
    if (Tq > 0) memset(dq, 0, sizeof(float) * (size_t)(BH * Tq * D));
    if (Tk > 0) {
      memset(dk, 0, sizeof(float) * (size_t)(BH * Tk * D));
      memset(dv, 0, sizeof(float) * (size_t)(BH * Tk * D));
    }
    return;
  }
  const int64_t Dp = round_up(D, W);
  const int64_t nqt = (Tq + BQ - 1) / BQ, nkt = (Tk + BK - 1) / BK;
  const int64_t flops = BH * Tq * Tk * D;

  // Pass 0, per (b, h, query tile): Dᵢ = dOᵢ · Oᵢ, lse_use (lse = −inf -> +inf so that
  // P = exp(S − lse_use) = 0 on rows with no visible key), and transposed Qt, dOt tiles
  // (D×BQ each) shared by both passes. Scratch O(B·H·Tq·D), never Tq×Tk.
  const int64_t tile_t = D * BQ;  // floats per transposed tile
  const int64_t n_rows = BH * nqt * BQ;
  // q rows further apart than D (views into a fused QKV projection) are also copied
  // contiguous, once: dK += dSᵀ·Q reads each Q tile once per 4 keys (see tile_rows).
  const bool copy_q = q.s2 != D;
  Scratch gbuf(1, 2 * n_rows + 2 * BH * nqt * tile_t + (copy_q ? BH * Tq * D : 0));
  float* Dsum = gbuf.get(0);              // BH·nqt·BQ (padded lanes 0)
  float* Luse = Dsum + n_rows;     // BH·nqt·BQ (padded lanes +inf)
  float* QtAll = Luse + n_rows;    // BH·nqt tiles
  float* dOtAll = QtAll + BH * nqt * tile_t;
  float* Qc = copy_q ? dOtAll + BH * nqt * tile_t : nullptr;  // BH·Tq rows of D
  const bool drop = s.dropout_p > 0.0f;
  Scratch rkbuf(1, drop ? 2 * n_rows : 16);  // dropout row keys (uint32) per tile lane
  uint32_t* RkLo = drop ? (uint32_t*)rkbuf.get(0) : nullptr;
  uint32_t* RkHi = drop ? RkLo + n_rows : nullptr;

  {
    const int nt = attn_threads(BH * Tq * D * 4, BH * nqt);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t w = 0; w < BH * nqt; ++w) {
      const Tile t = make_tile(s, w / nqt, w % nqt);
      const int64_t row = (t.b * H + t.h) * Tq + t.i0;
      float* Dt = Dsum + w * BQ;
      float* Lt = Luse + w * BQ;
      for (int64_t r = 0; r < BQ; ++r) {
        if (r < t.nq) {
          Dt[r] = dot(dout + (row + r) * D, out + (row + r) * D, D);
          const float lr = lse[row + r];
          Lt[r] = lr == -INFINITY ? INFINITY : lr;
        } else {
          Dt[r] = 0.0f;
          Lt[r] = INFINITY;
        }
      }
      if (drop) drop_row_keys(s, t.b, t.h, t.i0, t.nq, BQ, RkLo + w * BQ, RkHi + w * BQ);
      if (copy_q) {
        int64_t qs = q.s2;
        tile_rows(row0(q, t) + t.i0 * qs, qs, t.nq, D, true, Qc + row * D);
      }
      if (!t.row_path) {
        transpose_tile(QtAll + w * tile_t, row0(q, t) + t.i0 * q.s2, q.s2, t, D);
        transpose_tile(dOtAll + w * tile_t, dout + row * D, D, t, D);
      }
    }
  }

  const BwdCtx cx{&s, q, k, v, mask, dout, QtAll, dOtAll, Luse, Dsum, Qc, tile_t,
                  drop ? drop_threshold(s.dropout_p) : 0u,
                  drop ? (float)(1.0 / (1.0 - (double)s.dropout_p)) : 1.0f, RkLo, RkHi};

  // Scheme. Fused (one work item per (b, h), FlashAttention-2's loop order: key tiles
  // outer, query tiles inner, dQ accumulated in a per-thread Tq×D buffer) computes each
  // S/dP tile once; it needs B·H to keep every thread busy. Otherwise two passes:
  // (b, h, key tile) items for dK/dV, then (b, h, query tile) items for dQ, which
  // recompute S and dP. Both run the same p_ds/kernel_b calls on every dQ/dK/dV row
  // in the same (tile) order, so they give the same bits: the choice, like the thread
  // count, never changes the result.
  const int nt_all = attn_threads(flops, BH * nkt);
  const bool fused = nt_all == 1 || BH >= 4 * nt_all || (BH >= nt_all && BH % nt_all == 0);
  // per thread: St, Pt (BK×BQ), dK, dV, Kc (BK×Dp), dQ (fused: Tq×Dp; pass 2: BQ×Dp)
  const int64_t o_st = 0, o_pt = BK * BQ, o_dk = 2 * BK * BQ, o_dv = o_dk + BK * Dp, o_kc = o_dv + BK * Dp,
                o_dq = o_kc + BK * Dp;
  if (fused) {
    const int nt = (int)imin(nt_all, BH);
    Scratch scratch(nt, o_dq + nqt * BQ * Dp);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int64_t bh = 0; bh < BH; ++bh) {
      float* sc = scratch.get(thread_id());
      float* dQ = sc + o_dq;
      memset(dQ, 0, sizeof(float) * (size_t)(Tq * Dp));
      for (int64_t kt = 0; kt < nkt; ++kt) {
        key_tile_grads(cx, bh, kt, sc + o_st, sc + o_pt, sc + o_dk, sc + o_dv, dQ, sc + o_kc, dk, dv);
      }
      store_dq(s, dQ, Tq, dq + bh * Tq * D);
    }
    return;
  }
  // Pass 1, per (b, h, key tile): dV = Σ_tiles Pᵀ dO, dK = Σ_tiles dSᵀ Q · scale.
  {
    Scratch scratch(nt_all, o_dq);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt_all)
    for (int64_t w = 0; w < BH * nkt; ++w) {
      float* sc = scratch.get(thread_id());
      key_tile_grads(cx, w / nkt, w % nkt, sc + o_st, sc + o_pt, sc + o_dk, sc + o_dv, nullptr, nullptr, dk, dv);
    }
  }
  // Pass 2, per (b, h, query tile): dQ = Σ_key tiles dS K · scale.
  {
    const int nt = attn_threads(flops, BH * nqt);
    Scratch scratch(nt, o_dq + BQ * Dp);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int64_t w = 0; w < BH * nqt; ++w) {
      float* sc = scratch.get(thread_id());
      float *St = sc + o_st, *Pt = sc + o_pt, *Kc = sc + o_kc, *dQ = sc + o_dq;
      const Tile t = make_tile(s, w / nqt, w % nqt);
      memset(dQ, 0, sizeof(float) * (size_t)(t.nq * Dp));
      const int64_t kend = key_end(s, t);
      for (int64_t j0 = 0; j0 < kend; j0 += BK) {
        const int64_t nk = imin(BK, Tk - j0);
        p_ds(cx, t, w, j0, nk, St, Pt);
        int64_t ks = k.s2;
        const float* kr = tile_rows(row0(k, t) + j0 * ks, ks, nk, D, ks != D && !t.row_path, Kc);
        kernel_b(dQ, Dp, St, 1, BQ, t.nq, nk, kr, ks, D, NO_BAND, causal_cv(s, t, j0));  // = key_tile_grads' dQ call
      }
      store_dq(s, dQ, t.nq, dq + ((t.b * H + t.h) * Tq + t.i0) * D);
    }
  }
}

}  // namespace TX_ISA_NS
}  // namespace tx
