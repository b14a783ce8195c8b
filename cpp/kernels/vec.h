// SIMD vector layer shared by the kernels of one ISA variant: V, VL lanes, and the
// handful of operations the kernels use. V is __m512 (AVX-512), __m256 (AVX2+FMA) or a
// portable 4-float vector (GCC/Clang generic vectors, lowered to SSE2, NEON, ... or
// scalar code; a struct with plain loops for other compilers). Each kernel source is
// compiled once per variant with TX_ISA_NS set, so every definition here lives in that
// variant's namespace. vload_n/vstore_n touch only the first n lanes (n may be <= 0 or
// >= VL); masked AVX/AVX-512 loads never fault on the masked-off lanes.
// vmax(a, b) / vmin(a, b) return b when either is NaN (as x86 maxps/minps): clamp as
// vmax(vset1(lo), x) to let a NaN x through. VMask is a lane mask from a comparison
// (vlt, veq: false where NaN), vselect(m, a, b) = m ? a : b per lane.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#if defined(__GNUC__)
#define TX_INLINE static inline __attribute__((always_inline))
#define TX_UNROLL _Pragma("GCC unroll 16")
#else
#define TX_INLINE static inline
#define TX_UNROLL
#endif

namespace tx {
namespace TX_ISA_NS {

#if defined(__AVX512F__)
typedef __m512 V;
constexpr int VL = 16;
TX_INLINE __mmask16 lane_mask(int n) {
  return n <= 0 ? (__mmask16)0 : n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u);
}
TX_INLINE V vzero() { return _mm512_setzero_ps(); }
TX_INLINE V vset1(float x) { return _mm512_set1_ps(x); }
TX_INLINE V vload(const float* p) { return _mm512_loadu_ps(p); }
TX_INLINE V vload_n(const float* p, int n) { return _mm512_maskz_loadu_ps(lane_mask(n), p); }
TX_INLINE void vstore(float* p, V v) { _mm512_storeu_ps(p, v); }
TX_INLINE void vstore_n(float* p, V v, int n) { _mm512_mask_storeu_ps(p, lane_mask(n), v); }
TX_INLINE V vadd(V a, V b) { return _mm512_add_ps(a, b); }
TX_INLINE V vfma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
TX_INLINE V vfnma(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); }  // c − a·b
TX_INLINE float vsum(V v) { return _mm512_reduce_add_ps(v); }  // a fixed shuffle tree
TX_INLINE V vsub(V a, V b) { return _mm512_sub_ps(a, b); }
TX_INLINE V vmul(V a, V b) { return _mm512_mul_ps(a, b); }
TX_INLINE V vmax(V a, V b) { return _mm512_max_ps(a, b); }
TX_INLINE float vhmax(V v) { return _mm512_reduce_max_ps(v); }
TX_INLINE V vmin(V a, V b) { return _mm512_min_ps(a, b); }
TX_INLINE V vdiv(V a, V b) { return _mm512_div_ps(a, b); }
TX_INLINE V vabs(V a) { return _mm512_abs_ps(a); }
TX_INLINE V vxor(V a, V b) { return _mm512_xor_ps(a, b); }
typedef __mmask16 VMask;  // lane mask of a comparison (ordered: false for NaN lanes)
TX_INLINE VMask vlt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
TX_INLINE VMask veq(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
TX_INLINE V vselect(VMask m, V a, V b) { return _mm512_mask_blend_ps(m, b, a); }  // m ? a : b
// Per lane, t8[i & 7] where i is the lane's bits as an integer: a table lookup by permute
// (the caller keeps i & 15 below 8 with AVX-512; the table's upper half is undefined).
TX_INLINE V vlookup8(const float* t8, V idx) {
  return _mm512_permutexvar_ps(_mm512_castps_si512(idx), _mm512_castps256_ps512(_mm256_load_ps(t8)));
}

#elif defined(__AVX2__)
typedef __m256 V;
constexpr int VL = 8;
TX_INLINE __m256i lane_mask(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
TX_INLINE V vzero() { return _mm256_setzero_ps(); }
TX_INLINE V vset1(float x) { return _mm256_set1_ps(x); }
TX_INLINE V vload(const float* p) { return _mm256_loadu_ps(p); }
TX_INLINE V vload_n(const float* p, int n) { return _mm256_maskload_ps(p, lane_mask(n)); }
TX_INLINE void vstore(float* p, V v) { _mm256_storeu_ps(p, v); }
TX_INLINE void vstore_n(float* p, V v, int n) { _mm256_maskstore_ps(p, lane_mask(n), v); }
TX_INLINE V vadd(V a, V b) { return _mm256_add_ps(a, b); }
TX_INLINE V vfma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
TX_INLINE V vfnma(V a, V b, V c) { return _mm256_fnmadd_ps(a, b, c); }  // c − a·b
TX_INLINE float vsum(V v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
TX_INLINE V vsub(V a, V b) { return _mm256_sub_ps(a, b); }
TX_INLINE V vmul(V a, V b) { return _mm256_mul_ps(a, b); }
TX_INLINE V vmax(V a, V b) { return _mm256_max_ps(a, b); }
TX_INLINE float vhmax(V v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}
TX_INLINE V vmin(V a, V b) { return _mm256_min_ps(a, b); }
TX_INLINE V vdiv(V a, V b) { return _mm256_div_ps(a, b); }
TX_INLINE V vabs(V a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
TX_INLINE V vxor(V a, V b) { return _mm256_xor_ps(a, b); }
typedef __m256 VMask;  // lane mask of a comparison: all-ones / zero lanes (false for NaN)
TX_INLINE VMask vlt(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
TX_INLINE VMask veq(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
TX_INLINE V vselect(VMask m, V a, V b) { return _mm256_blendv_ps(b, a, m); }  // m ? a : b
TX_INLINE V vlookup8(const float* t8, V idx) {  // t8[i & 7] per lane (t8 32-byte aligned)
  return _mm256_permutevar8x32_ps(_mm256_load_ps(t8), _mm256_castps_si256(idx));
}

#elif defined(__GNUC__)
// Portable (GCC/Clang): generic 4-float vectors, lowered to SSE2, NEON, ... or scalar
// code. (The struct below is the same thing for other compilers; GCC does not keep
// arrays of such structs in registers, which costs 3x in the skinny paths.)
typedef float V __attribute__((vector_size(16)));
constexpr int VL = 4;
TX_INLINE V vzero() { return V{0.0f, 0.0f, 0.0f, 0.0f}; }
TX_INLINE V vset1(float x) { return V{x, x, x, x}; }
TX_INLINE V vload(const float* p) {
  V r;
  memcpy(&r, p, sizeof r);
  return r;
}
TX_INLINE V vload_n(const float* p, int n) {
  V r = vzero();
  for (int l = 0; l < VL && l < n; ++l) r[l] = p[l];
  return r;
}
TX_INLINE void vstore(float* p, V v) { memcpy(p, &v, sizeof v); }
TX_INLINE void vstore_n(float* p, V v, int n) {
  for (int l = 0; l < VL && l < n; ++l) p[l] = v[l];
}
TX_INLINE V vadd(V a, V b) { return a + b; }
TX_INLINE V vfma(V a, V b, V c) { return a * b + c; }  // separate mul+add without FMA hardware
TX_INLINE V vfnma(V a, V b, V c) { return c - a * b; }
TX_INLINE float vsum(V v) { return (v[0] + v[1]) + (v[2] + v[3]); }
TX_INLINE V vsub(V a, V b) { return a - b; }
TX_INLINE V vmul(V a, V b) { return a * b; }
TX_INLINE V vmax(V a, V b) {
  V r;
  for (int l = 0; l < VL; ++l) r[l] = a[l] > b[l] ? a[l] : b[l];
  return r;
}
TX_INLINE float vhmax(V v) {
  const float a = v[0] > v[1] ? v[0] : v[1], b = v[2] > v[3] ? v[2] : v[3];
  return a > b ? a : b;
}
TX_INLINE V vmin(V a, V b) {
  V r;
  for (int l = 0; l < VL; ++l) r[l] = a[l] < b[l] ? a[l] : b[l];
  return r;
}
TX_INLINE V vdiv(V a, V b) { return a / b; }
typedef int32_t VMask __attribute__((vector_size(16)));  // lane mask -1 / 0; also lane bits
TX_INLINE V vabs(V a) { return (V)((VMask)a & 0x7fffffff); }
TX_INLINE V vxor(V a, V b) { return (V)((VMask)a ^ (VMask)b); }
TX_INLINE VMask vlt(V a, V b) { return a < b; }
TX_INLINE VMask veq(V a, V b) { return a == b; }
TX_INLINE V vlookup8(const float* t8, V idx) {  // t8[i & 7] per lane
  V r;
  for (int l = 0; l < VL; ++l) r[l] = t8[((VMask)idx)[l] & 7];
  return r;
}
TX_INLINE V vselect(VMask m, V a, V b) {  // m ? a : b
  return (V)((m & (VMask)a) | (~m & (VMask)b));
}

#else
// Portable, any compiler: plain fixed-length loops the compiler may vectorise.
struct V {
  float f[4];
};
constexpr int VL = 4;
TX_INLINE V vzero() {
  V r;
  for (int l = 0; l < VL; ++l) r.f[l] = 0.0f;
  return r;
}
TX_INLINE V vset1(float x) {
  V r;
  for (int l = 0; l < VL; ++l) r.f[l] = x;
  return r;
}
TX_INLINE V vload(const float* p) {
  V r;
  for (int l = 0; l < VL; ++l) r.f[l] = p[l];
  return r;
}
TX_INLINE V vload_n(const float* p, int n) {
  V r;
  for (int l = 0; l < VL; ++l) r.f[l] = l < n ? p[l] : 0.0f;
  return r;
}
TX_INLINE void vstore(float* p, V v) {
  for (int l = 0; l < VL; ++l) p[l] = v.f[l];
}
TX_INLINE void vstore_n(float* p, V v, int n) {
  for (int l = 0; l < VL && l < n; ++l) p[l] = v.f[l];
}
TX_INLINE V vadd(V a, V b) {
  V r;
  for (int l = 0; l < VL; ++l) r.f[l] = a.f[l] + b.f[l];
  return r;
}
TX_INLINE V vfma(V a, V b, V c) {
  V r;
  for (int l = 0; l < VL; ++l) r.f[l] = a.f[l] * b.f[l] + c.f[l];
  return r;
}
TX_INLINE V vfnma(V a, V b, V c) {
  V r;
  for (int l = 0; l < VL; ++l) r.f[l] = c.f[l] - a.f[l] * b.f[l];
  return r;
}
TX_INLINE float vsum(V v) { return (v.f[0] + v.f[1]) + (v.f[2] + v.f[3]); }
TX_INLINE V vsub(V a, V b) {
  V r;
  for (int l = 0; l < VL; ++l) r.f[l] = a.f[l] - b.f[l];
  return r;
}
TX_INLINE V vmul(V a, V b) {
  V r;
  for (int l = 0; l < VL; ++l) r.f[l] = a.f[l] * b.f[l];
  return r;
}
TX_INLINE V vmax(V a, V b) {
  V r;
  for (int l = 0; l < VL; ++l) r.f[l] = a.f[l] > b.f[l] ? a.f[l] : b.f[l];
  return r;
}
TX_INLINE float vhmax(V v) {
  const float a = v.f[0] > v.f[1] ? v.f[0] : v.f[1], b = v.f[2] > v.f[3] ? v.f[2] : v.f[3];
  return a > b ? a : b;
}
TX_INLINE V vmin(V a, V b) {
  V r;
  for (int l = 0; l < VL; ++l) r.f[l] = a.f[l] < b.f[l] ? a.f[l] : b.f[l];
  return r;
}
TX_INLINE V vdiv(V a, V b) {
  V r;
  for (int l = 0; l < VL; ++l) r.f[l] = a.f[l] / b.f[l];
  return r;
}
TX_INLINE V vabs(V a) {
  V r;
  for (int l = 0; l < VL; ++l) r.f[l] = fabsf(a.f[l]);
  return r;
}
TX_INLINE V vxor(V a, V b) {
  V r;
  for (int l = 0; l < VL; ++l) {
    uint32_t u, w;
    memcpy(&u, &a.f[l], 4);
    memcpy(&w, &b.f[l], 4);
    u ^= w;
    memcpy(&r.f[l], &u, 4);
  }
  return r;
}
struct VMask {
  bool b[4];
};
TX_INLINE VMask vlt(V a, V b) {
  VMask m;
  for (int l = 0; l < VL; ++l) m.b[l] = a.f[l] < b.f[l];
  return m;
}
TX_INLINE VMask veq(V a, V b) {
  VMask m;
  for (int l = 0; l < VL; ++l) m.b[l] = a.f[l] == b.f[l];
  return m;
}
TX_INLINE V vselect(VMask m, V a, V b) {
  V r;
  for (int l = 0; l < VL; ++l) r.f[l] = m.b[l] ? a.f[l] : b.f[l];
  return r;
}
TX_INLINE V vlookup8(const float* t8, V idx) {  // t8[i & 7] per lane
  V r;
  for (int l = 0; l < VL; ++l) {
    uint32_t i;
    memcpy(&i, &idx.f[l], 4);
    r.f[l] = t8[i & 7];
  }
  return r;
}

#endif

// One formula for a row's whole vectors and its tail: vload_k / vstore_k with lanes =
// Whole{} are vload / vstore, with an int n they are vload_n / vstore_n.
struct Whole {};
TX_INLINE V vload_k(const float* p, Whole) { return vload(p); }
TX_INLINE V vload_k(const float* p, int n) { return vload_n(p, n); }
TX_INLINE void vstore_k(float* p, V v, Whole) { vstore(p, v); }
TX_INLINE void vstore_k(float* p, V v, int n) { vstore_n(p, v, n); }

// Row reductions over the full vectors j = 0, VL, 2·VL, ... < nv (nv a multiple of VL;
// the caller handles the tail): Σ_j f(j) for a V-valued f of the offset, and the max of
// x[0 .. nv), in 4 interleaved vector accumulators (independent chains hide the FP
// latency), combined in a fixed order that depends on nv only. (GCC's code for
// `omp simd` reductions kept the lanes in memory: several times slower.)
template <class F>
TX_INLINE float row_sum(int64_t nv, F f) {
  V a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
  int64_t j = 0;
  for (; j + 4 * VL <= nv; j += 4 * VL) {
    a0 = vadd(a0, f(j));
    a1 = vadd(a1, f(j + VL));
    a2 = vadd(a2, f(j + 2 * VL));
    a3 = vadd(a3, f(j + 3 * VL));
  }
  for (; j < nv; j += VL) a0 = vadd(a0, f(j));
  return vsum(vadd(vadd(a0, a1), vadd(a2, a3)));
}

// Σ_j f(j) and Σ_j f(j)² in one pass, each in row_sum's order (layer norm's statistics).
template <class F>
TX_INLINE void row_sum_sq(int64_t nv, F f, float& sum, float& sum_sq) {
  V a[4] = {vzero(), vzero(), vzero(), vzero()}, q[4] = {vzero(), vzero(), vzero(), vzero()};
  int64_t j = 0;
  for (; j + 4 * VL <= nv; j += 4 * VL) {
    for (int g = 0; g < 4; ++g) {
      const V d = f(j + g * VL);
      a[g] = vadd(a[g], d);
      q[g] = vfma(d, d, q[g]);
    }
  }
  for (; j < nv; j += VL) {
    const V d = f(j);
    a[0] = vadd(a[0], d);
    q[0] = vfma(d, d, q[0]);
  }
  sum = vsum(vadd(vadd(a[0], a[1]), vadd(a[2], a[3])));
  sum_sq = vsum(vadd(vadd(q[0], q[1]), vadd(q[2], q[3])));
}

TX_INLINE float row_max(const float* x, int64_t nv, float init) {
  V m0 = vset1(init), m1 = m0, m2 = m0, m3 = m0;
  int64_t j = 0;
  for (; j + 4 * VL <= nv; j += 4 * VL) {
    m0 = vmax(m0, vload(x + j));
    m1 = vmax(m1, vload(x + j + VL));
    m2 = vmax(m2, vload(x + j + 2 * VL));
    m3 = vmax(m3, vload(x + j + 3 * VL));
  }
  for (; j < nv; j += VL) m0 = vmax(m0, vload(x + j));
  return vhmax(vmax(vmax(m0, m1), vmax(m2, m3)));
}

// In-register transpose of a VL×VL block (r[i] = row i in, column i out): the packing
// routines use it to gather rows into k-major slivers without strided scalar stores.
#if defined(__AVX512F__)
TX_INLINE void transpose_vl(V (&r)[VL]) {  // 16×16: unpack, 4×4 shuffles, 128-bit lane moves
  V t[16];
  TX_UNROLL for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  TX_UNROLL for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  TX_UNROLL for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[4 + i], 0x88);
    t[4 + i] = _mm512_shuffle_f32x4(r[i], r[4 + i], 0xDD);
    t[8 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], 0x88);
    t[12 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], 0xDD);
  }
  TX_UNROLL for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0x88);
    r[8 + i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0xDD);
  }
}
#define TX_HAVE_TRANSPOSE 1
#elif defined(__AVX2__)
TX_INLINE void transpose_vl(V (&r)[VL]) {  // 8×8: unpack, 4×4 shuffles, 128-bit halves
  V t[8], s[8];
  TX_UNROLL for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  TX_UNROLL for (int i = 0; i < 8; i += 4) {
    s[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    s[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    s[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    s[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  TX_UNROLL for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(s[i], s[4 + i], 0x20);
    r[4 + i] = _mm256_permute2f128_ps(s[i], s[4 + i], 0x31);
  }
}
#define TX_HAVE_TRANSPOSE 1
#endif

}  // namespace TX_ISA_NS
}  // namespace tx
