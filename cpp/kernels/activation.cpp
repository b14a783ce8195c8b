// Element-wise activations (forward and backward) and the vmath test hook.
//
// Every op is one streaming pass: the array is cut into fixed blocks, blocks are spread
// over threads (omp for, static), and each block is one loop over vec.h vectors (the
// tail: one masked vector) calling vmath.h's vector functions, writing with plain
// stores. (Non-temporal stores through an L1 buffer, meant to save the read-for-ownership
// of large outputs, measured 1.3-1.7x slower for GELU through the Python API, whose
// outputs are fresh, kernel-zeroed pages.) Element-wise results do not depend on the
// blocking or the thread count. ReLU stays an `omp simd` loop (nothing to gain).
//
// GELU, tanh form: gelu(x) = 0.5·x·(1 + tanh(z)), z = √(2/π)·(x + 0.044715·x³).
//   Computed as x·s with s = 0.5·(1 + tanh z) = 1/(1 + exp(−2z)) (the logistic of 2z; no
//   cancellation in 1 + tanh z for x << 0), from e = exp(−|2z|) in [0, 1] and
//   r = 1/(1 + e): s = r (x >= 0) or e·r (x < 0). 1 + e stays in [1, 2], so vrecip
//   (AVX-512: rcp14 + one Newton step instead of a division) never sees inf. With AVX2,
//   groups of vectors with |x| <= 9.5 take s = 1/(1 + E), E = exp(−2z), directly (see
//   GeluTanh).
//   d/dx = 0.5(1 + t) + 0.5·x·(1 − t²)·√(2/π)·(1 + 3·0.044715·x²)
//        = s + 2·x·s(1 − s)·√(2/π)·(1 + 3·0.044715·x²),   s(1 − s) = e·r² = E·s².
// GELU, erf form: gelu(x) = x·Φ(x), Φ(x) = 0.5·(1 + erf(x/√2)) = 0.5·erfc(−x/√2);
//   d/dx = Φ(x) + x·φ(x), φ(x) = exp(−x²/2)/√(2π).
// At ±inf, x·(0 derivative term) is taken as 0 (as the NumPy reference does), so
// gelu'(+inf) = 1, gelu'(−inf) = 0; gelu(−inf) = −inf·0 = NaN, like the formula.
#include <string.h>

#include <type_traits>

#include "tx/kernels.h"
#include "vmath.h"

namespace tx {
namespace TX_ISA_NS {

namespace {

const float kSqrt2OverPi = 0.797884560802865355f;  // √(2/π)
const float kGeluA = 0.044715f;
const float kInvSqrt2 = 0.707106781186547524f;
const float kInvSqrt2Pi = 0.398942280401432678f;  // 1/√(2π)

// Elements per block: 32 KiB of floats, big enough to amortise the loop set-up, small
// enough to balance two threads on small tensors.
const int64_t kBlock = 8192;

typedef void (*UnaryBlock)(const float* x, float* y, int64_t n);
typedef void (*BinaryBlock)(const float* dy, const float* x, float* dx, int64_t n);

// `cost`: rough scalar operations per element, for the fork/no-fork decision.

static void run_unary(UnaryBlock fn, const float* x, float* y, int64_t n, int64_t cost) {
  (void)cost;  // (unused in a build without OpenMP)
  const int64_t nb = (n + kBlock - 1) / kBlock;
  TX_OMP_FOR(n * cost)
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t i0 = b * kBlock;
    fn(x + i0, y + i0, n - i0 < kBlock ? n - i0 : kBlock);
  }
}

static void run_binary(BinaryBlock fn, const float* dy, const float* x, float* dx, int64_t n,
                       int64_t cost) {
  (void)cost;
  const int64_t nb = (n + kBlock - 1) / kBlock;
  TX_OMP_FOR(n * cost)
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t i0 = b * kBlock;
    fn(dy + i0, x + i0, dx + i0, n - i0 < kBlock ? n - i0 : kBlock);
  }
}

static void identity_fwd(const float* x, float* y, int64_t n) {
  if (x != y) memmove(y, x, (size_t)n * sizeof(float));
}

static void relu_fwd(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = tx_select(x[i] < 0.0f, 0.0f, x[i]);  // NaN stays NaN
}

// y[i] = f(x[i]) over V lanes; the tail is one masked vector (same code, same bits).
// Each vector asks for the line kAhead floats on of every input (and of the output, for
// writing: its read-for-ownership): cold GELU forward / backward measured 1.15-1.3x
// faster on 1 thread than with the hardware prefetcher alone (compute and memory did not
// overlap). Prefetches past the end of the arrays are harmless (they never fault).
// Loads run one group of kGroup vectors ahead of the stores: a load that closely follows
// a store whose address matches it in the low 12 bits waits for that store to complete
// ("4K aliasing"), which is what happens when y − x ≡ 16..255 bytes mod 4 KiB — e.g. y =
// np.empty_like(x) allocated right after x, sizes a multiple of 4 KiB: 3-4x slower, measured.
// Loaded a group earlier, every load is older than the stores it could match.
// f is called as f(x, normal) (f(dy, x, normal) for map_binary): normal is
// std::true_type where every lane of the group has |x| <= kNormalAbsX, std::false_type
// elsewhere (and for the tail). There the tanh form's exp argument is in [−77, 77]: the
// result is normal, and vexp_normal skips AVX2's per-vector range test (vmath.h), which
// would split the code between vectors and keep GCC from interleaving their chains; and
// the exact GELU's Φ takes vmath.h's interval tables (vnormal_cdf_left), which cover
// |x| <= 9.5.
const int64_t kAhead = 512;  // 2 KiB: 32 lines in flight per stream
const int kGroup = 4;
const float kNormalAbsX = 9.5f;  // tanh form: |x|·(1.60 + 0.0714·x²) <= 77; erf: Φ's tables
static inline bool group_normal(const V (&x)[kGroup]) {
#if defined(__AVX512F__)
  __mmask16 out = _mm512_cmp_ps_mask(vabs(x[0]), vset1(kNormalAbsX), _CMP_NLE_UQ);  // NaN: true
  for (int g = 1; g < kGroup; ++g) out |= _mm512_cmp_ps_mask(vabs(x[g]), vset1(kNormalAbsX), _CMP_NLE_UQ);
  return out == 0;
#elif defined(__AVX2__)
  __m256 out = _mm256_cmp_ps(vabs(x[0]), vset1(kNormalAbsX), _CMP_NLE_UQ);  // NaN: true
  for (int g = 1; g < kGroup; ++g) out = _mm256_or_ps(out, _mm256_cmp_ps(vabs(x[g]), vset1(kNormalAbsX), _CMP_NLE_UQ));
  return _mm256_movemask_ps(out) == 0;
#elif defined(__GNUC__)
  VMask in = vabs(x[0]) <= vset1(kNormalAbsX);  // NaN: false
  for (int g = 1; g < kGroup; ++g) in &= vabs(x[g]) <= vset1(kNormalAbsX);
  return (in[0] & in[1] & in[2] & in[3]) != 0;
#else
  (void)x;  // vnormal_cdf_left needs vector bit casts (vmath.h)
  return false;
#endif
}
template <class F>
static inline void map_unary(const float* x, float* y, int64_t n, F f) {
  int64_t i = 0;
  if (n >= kGroup * VL) {
    V a[kGroup];
    for (int g = 0; g < kGroup; ++g) a[g] = vload(x + g * VL);
    for (;; i += kGroup * VL) {
      const bool more = i + 2 * kGroup * VL <= n;
      V r[kGroup];
      for (int g = 0; g < kGroup; ++g) {
        __builtin_prefetch(x + i + g * VL + kAhead, 0, 3);
        __builtin_prefetch(y + i + g * VL + kAhead, 1, 3);
      }
      if (group_normal(a)) {
        for (int g = 0; g < kGroup; ++g) r[g] = f(a[g], std::true_type());
      } else {
        for (int g = 0; g < kGroup; ++g) r[g] = f(a[g], std::false_type());
      }
      if (more) {
        for (int g = 0; g < kGroup; ++g) a[g] = vload(x + i + (kGroup + g) * VL);
      }
      for (int g = 0; g < kGroup; ++g) vstore(y + i + g * VL, r[g]);
      if (!more) break;
    }
    i += kGroup * VL;
  }
  for (; i + VL <= n; i += VL) vstore(y + i, f(vload(x + i), std::false_type()));
  if (i < n) vstore_n(y + i, f(vload_n(x + i, (int)(n - i)), std::false_type()), (int)(n - i));
}
template <class F>
static inline void map_binary(const float* dy, const float* x, float* dx, int64_t n, F f) {
  int64_t i = 0;
  if (n >= kGroup * VL) {
    V a[kGroup], b[kGroup];
    for (int g = 0; g < kGroup; ++g) a[g] = vload(dy + g * VL), b[g] = vload(x + g * VL);
    for (;; i += kGroup * VL) {
      const bool more = i + 2 * kGroup * VL <= n;
      V r[kGroup];
      for (int g = 0; g < kGroup; ++g) {
        __builtin_prefetch(dy + i + g * VL + kAhead, 0, 3);
        __builtin_prefetch(x + i + g * VL + kAhead, 0, 3);
        __builtin_prefetch(dx + i + g * VL + kAhead, 1, 3);
      }
      if (group_normal(b)) {
        for (int g = 0; g < kGroup; ++g) r[g] = f(a[g], b[g], std::true_type());
      } else {
        for (int g = 0; g < kGroup; ++g) r[g] = f(a[g], b[g], std::false_type());
      }
      if (more) {
        for (int g = 0; g < kGroup; ++g) {
          a[g] = vload(dy + i + (kGroup + g) * VL), b[g] = vload(x + i + (kGroup + g) * VL);
        }
      }
      for (int g = 0; g < kGroup; ++g) vstore(dx + i + g * VL, r[g]);
      if (!more) break;
    }
    i += kGroup * VL;
  }
  for (; i + VL <= n; i += VL) vstore(dx + i, f(vload(dy + i), vload(x + i), std::false_type()));
  if (i < n) {
    const int k = (int)(n - i);
    vstore_n(dx + i, f(vload_n(dy + i, k), vload_n(x + i, k), std::false_type()), k);
  }
}

// GELU tanh = x·s with the logistic s = σ(2z) = 1/(1 + exp(u)) of u = −2z =
// x·(k1 + k3·x²) (k1, k3 < 0, so u has the sign of −x). Two ways, both without cancellation:
// - Direct (kTanhDirect: AVX2 only, in a Normal group: |x| <= kNormalAbsX in every lane,
//   see map_unary): u is in [−77, 77], so E = exp(u) is a normal float (vexp_normal: no range test), and
//   s = 1/(1 + E), s(1 − s) = E·s·s directly; the forward divides x by 1 + E. 17
//   instructions per forward vector instead of 25, with a shorter dependency chain: AVX2
//   GELU forward +12-22% and backward +8-24% at 4096×3072, forward +28% from L2
//   (interleaved A/B), and 1.74 ulp at most where the other form has 2.36 (x > 0; both
//   ~160 ulp near x = −9.5, where exp amplifies u's float32 rounding; the backward's error
//   is unchanged). With AVX-512 (rcp14 for the division, scalef for 2^n) it measured
//   −4% to +2.5%, so AVX-512 (and the portable build) use the other form everywhere.
// - otherwise, e = exp(−|u|) in [0, 1] and r = 1/(1 + e) (1 <= 1 + e <= 2: vrecip's
//   range, never inf), s = r for x >= 0 and s = e·r for x < 0, s(1 − s) = e·r·r.
//   −|u| = |x|·(k1 + k3·x²); x² overflowing for |x| > 1.8e19 gives −inf, e = 0 and s = 0
//   or 1, the right limits.
TX_INLINE V gelu_k(V x) {  // k1 + k3·x²: u = x·k, −|u| = |x|·k
  const float k1 = -2.0f * kSqrt2OverPi, k3 = -2.0f * kSqrt2OverPi * kGeluA;
  return vfma(vset1(k3), vmul(x, x), vset1(k1));
}
struct GeluTanh {
  V e, r;
  explicit GeluTanh(V x) : e(vexp_le0(vmul(vabs(x), gelu_k(x)))), r(vrecip(vadd(vset1(1.0f), e))) {}
};
#if defined(__AVX2__) && !defined(__AVX512F__)
const bool kTanhDirect = true;
#else
const bool kTanhDirect = false;
#endif
TX_INLINE V gelu_exp_u(V x) { return vexp_normal(vmul(x, gelu_k(x))); }  // E = exp(u), a Normal group

static void gelu_tanh_fwd(const float* x, float* y, int64_t n) {
  map_unary(x, y, n, [](V xv, auto normal) {
    if constexpr (decltype(normal)::value && kTanhDirect) {
      return vdiv(xv, vadd(vset1(1.0f), gelu_exp_u(xv)));  // x·s
    } else {
      const GeluTanh g(xv);
      return vmul(vselect(vlt(xv, vzero()), vmul(xv, g.e), xv), g.r);  // x·s
    }
  });
}

// Φ(x) = Φ(−|x|) (x < 0) or 1 − Φ(−|x|) (x >= 0): Φ(−|x|) <= 0.5 keeps relative accuracy
// in the left tail, and 1 − Φ(−|x|) >= 0.5 does not cancel. Two ways to Φ(−|x|):
// - Normal groups (|x| <= kNormalAbsX in every lane, see map_unary): vmath.h's
//   vnormal_cdf_left, piecewise fits of ln Φ, one exp and no division. Relative error
//   <= 16·2^-24 with FMA (measured 10.1; test_elementwise.py), the backward likewise
//   (measured 11.0, relative to Φ + |x|·φ). Interleaved A/B against the form below,
//   4096×3072, 1 / 2 threads: forward +49% / +50% (AVX2) and +24% / +14% (AVX-512),
//   backward +36% / +40% and +21% / +21%.
// - elsewhere (std_normal_cdf): 0.5·E, E = erfc(a), a = |x|/√2,
// by vmath.h's tail fit alone: relative error <= (3 + 1.2·a²)·2^-23 for a >= 1 and
// < 4·2^-23 = 4.8e-7 for a < 1 (measured over every float32 a). verfc's |x| < 1 branch
// (1 − erf: 9 more instructions, for erfc's own ulp bound) would buy Φ only those
// 5e-7, far inside the GELU's float32 error (GELU erf measured 1.5x faster without it).
static inline V std_normal_cdf(V x) {
  const V a = vmul(vabs(x), vset1(kInvSqrt2)), u = vmul(vset1(0.5f), vmul(x, x));  // u = a²
  const V half_e = vmul(vset1(0.5f), verfc_big(a, u));
  return vselect(vlt(x, vzero()), half_e, vsub(vset1(1.0f), half_e));  // NaN: 1 − NaN
}

static void gelu_erf_fwd(const float* x, float* y, int64_t n) {
  map_unary(x, y, n, [](V xv, auto normal) {
    if constexpr (decltype(normal)::value) {
      const V ax = vabs(xv);
      return vfnma(ax, vnormal_cdf_left(PhiInterval(ax)), vmax(vzero(), xv));
    } else {
      return vmul(xv, std_normal_cdf(xv));
    }
  });
}

// ---- backward blocks: dx = dy · act'(x) ----

static void identity_bwd(const float* dy, const float* x, float* dx, int64_t n) {
  (void)x;
  if (dy != dx) memmove(dx, dy, (size_t)n * sizeof(float));
}

// Gradient 0 at x == 0 (and for NaN x, like the reference's where(x > 0, dy, 0)).
static void relu_bwd(const float* dy, const float* x, float* dx, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dx[i] = tx_select(x[i] > 0.0f, dy[i], 0.0f);
}

static void gelu_tanh_bwd(const float* dy, const float* x, float* dx, int64_t n) {
  map_binary(dy, x, dx, n, [](V dyv, V xv, auto normal) {
    const V zero = vzero();
    V s, s1ms;  // s and s(1 − s) (see GeluTanh)
    if constexpr (decltype(normal)::value && kTanhDirect) {
      const V E = gelu_exp_u(xv);
      s = vrecip(vadd(vset1(1.0f), E));
      s1ms = vmul(vmul(E, s), s);
    } else {
      const GeluTanh g(xv);
      s = vselect(vlt(xv, zero), vmul(g.e, g.r), g.r);
      s1ms = vmul(vmul(g.e, g.r), g.r);
    }
    const V x2 = vmul(xv, xv);
    V inner = vmul(vmul(vmul(vset1(2.0f * kSqrt2OverPi), xv), s1ms),
                   vfma(vset1(3.0f * kGeluA), x2, vset1(1.0f)));
    // s(1−s) = 0 (|x| >~ 10.7: it has underflowed; the true term is < 1e-40): computing it
    // would give inf·0 = NaN at x = ±inf. (Never in a Normal group.)
    if constexpr (!decltype(normal)::value || !kTanhDirect) inner = vselect(veq(s1ms, zero), zero, inner);
    return vmul(dyv, vadd(s, inner));
  });
}

// In a Normal group, with R(|x|) = φ(x)/Φ(−|x|) (vmath.h's kMillsPoly, no second exp):
// Φ(x) + x·φ(x) = m (x < 0) or 1 − m (x >= 0), m = Φ(−|x|)·(1 − |x|·R(|x|)).
static void gelu_erf_bwd(const float* dy, const float* x, float* dx, int64_t n) {
  map_binary(dy, x, dx, n, [](V dyv, V xv, auto normal) {
    const V zero = vzero();
    if constexpr (decltype(normal)::value) {
      const V ax = vabs(xv);
      const PhiInterval iv(ax);
      const V m = vmul(vnormal_cdf_left(iv), vfnma(ax, iv.poly(kMillsPoly), vset1(1.0f)));
      return vmul(dyv, vselect(vlt(xv, zero), m, vsub(vset1(1.0f), m)));
    } else {
      const V phi = vmul(vexp_le0(vmul(vset1(-0.5f), vmul(xv, xv))), vset1(kInvSqrt2Pi));
      const V xphi = vselect(veq(phi, zero), zero, vmul(xv, phi));  // x = ±inf: 0, not inf·0
      return vmul(dyv, vadd(std_normal_cdf(xv), xphi));
    }
  });
}

// ---- vmath test hook ----
static void v_exp(const float* x, float* y, int64_t n) {
  map_unary(x, y, n, [](V v, auto) { return vexp(v); });
}
// exp(min(x, 0)) as the kernels compute it: vexp_le0, or vexp_normal in the groups
// where map_unary finds |x| <= kNormalAbsX.
static void v_exp_le0(const float* x, float* y, int64_t n) {
  map_unary(x, y, n, [](V v, auto normal) {
    const V arg = vmin(vzero(), v);
    return decltype(normal)::value ? vexp_normal(arg) : vexp_le0(arg);
  });
}
static void v_tanh(const float* x, float* y, int64_t n) {
  map_unary(x, y, n, [](V v, auto) { return vtanh(v); });
}
static void v_erf(const float* x, float* y, int64_t n) {
  map_unary(x, y, n, [](V v, auto) { return verf(v); });
}
static void v_erfc(const float* x, float* y, int64_t n) {
  map_unary(x, y, n, [](V v, auto) { return verfc(v); });
}

}  // namespace

void activation_forward(int act, const float* x, float* y, int64_t n) {
  switch (act) {
    case ACT_RELU: run_unary(relu_fwd, x, y, n, 1); break;
    case ACT_GELU_TANH: run_unary(gelu_tanh_fwd, x, y, n, 8); break;
    case ACT_GELU_ERF: run_unary(gelu_erf_fwd, x, y, n, 12); break;
    default: run_unary(identity_fwd, x, y, n, 1); break;
  }
}

void activation_backward(int act, const float* dy, const float* x, float* dx, int64_t n) {
  switch (act) {
    case ACT_RELU: run_binary(relu_bwd, dy, x, dx, n, 1); break;
    case ACT_GELU_TANH: run_binary(gelu_tanh_bwd, dy, x, dx, n, 10); break;
    case ACT_GELU_ERF: run_binary(gelu_erf_bwd, dy, x, dx, n, 16); break;
    default: run_binary(identity_bwd, dy, x, dx, n, 1); break;
  }
}

// Not in kernels.h (a test hook, declared by bind_elementwise.cpp):
// which = 0 exp, 1 tanh, 2 erf, 3 erfc, 4 exp(min(x, 0)) by vexp_le0; y = f(x) element-wise.
void vmath_apply(int which, const float* x, float* y, int64_t n) {
  switch (which) {
    case 0: run_unary(v_exp, x, y, n, 8); break;
    case 1: run_unary(v_tanh, x, y, n, 8); break;
    case 2: run_unary(v_erf, x, y, n, 12); break;
    case 4: run_unary(v_exp_le0, x, y, n, 8); break;
    default: run_unary(v_erfc, x, y, n, 12); break;
  }
}

}  // namespace TX_ISA_NS
}  // namespace tx
