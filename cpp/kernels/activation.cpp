// Element-wise activations (forward and backward) and the vmath test hook.
//
// Every op is one streaming pass: the array is cut into fixed blocks, blocks are spread
// over threads (omp for, static), and each block is one `#pragma omp simd` loop over the
// branch-free vmath functions, writing with plain stores. (Non-temporal stores through an
// L1 buffer, meant to save the read-for-ownership of large outputs, measured 1.3-1.7x
// slower for GELU through the Python API, whose outputs are fresh, kernel-zeroed pages.)
// Element-wise results do not depend on the blocking or the thread count.
//
// GELU, tanh form: gelu(x) = 0.5·x·(1 + tanh(z)), z = √(2/π)·(x + 0.044715·x³).
//   Computed as x·s with s = 0.5·(1 + tanh z) = 1/(1 + e), e = exp(−2z) (the logistic of
//   2z): one exp and one division, and no cancellation in 1 + tanh z for x << 0.
//   d/dx = 0.5(1 + t) + 0.5·x·(1 − t²)·√(2/π)·(1 + 3·0.044715·x²)
//        = s + 2·x·s(1 − s)·√(2/π)·(1 + 3·0.044715·x²),   s(1 − s) = (e·s)·s.
// GELU, erf form: gelu(x) = x·Φ(x), Φ(x) = 0.5·(1 + erf(x/√2)) = 0.5·erfc(−x/√2);
//   d/dx = Φ(x) + x·φ(x), φ(x) = exp(−x²/2)/√(2π).
// At ±inf, x·(0 derivative term) is taken as 0 (as the NumPy reference does), so
// gelu'(+inf) = 1, gelu'(−inf) = 0; gelu(−inf) = −inf·0 = NaN, like the formula.
#include <string.h>

#include "tx/kernels.h"
#include "vmath.h"

namespace tx {
namespace TX_ISA_NS {

namespace {

const float kSqrt2OverPi = 0.797884560802865355f;  // √(2/π)
const float kGeluA = 0.044715f;
const float kInvSqrt2 = 0.707106781186547524f;
const float kInvSqrt2Pi = 0.398942280401432678f;  // 1/√(2π)
const float kFltMax = 3.40282347e+38f;

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

// s = 1/(1 + exp(−2z)) with −2z = x·(−2√(2/π) − 2√(2/π)·0.044715·x²). Overflow of x² for
// |x| > 1.8e19 gives ∓inf and s = 0 or 1, the right limits.
static inline float gelu_tanh_e(float x) {
  const float k1 = -2.0f * kSqrt2OverPi, k3 = -2.0f * kSqrt2OverPi * kGeluA;
  return tx_exp(x * (k1 + k3 * (x * x)));
}

static void gelu_tanh_fwd(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float xi = x[i];
    y[i] = xi / (1.0f + gelu_tanh_e(xi));
  }
}

// Φ(x) = 0.5·erfc(−x/√2): relative accuracy kept in the left tail.
static inline float std_normal_cdf(float x) { return 0.5f * tx_erfc(-x * kInvSqrt2); }

static void gelu_erf_fwd(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * std_normal_cdf(x[i]);
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
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float xi = x[i];
    const float e = gelu_tanh_e(xi);
    const float s = 1.0f / (1.0f + e);
    const float x2 = xi * xi;
    float inner = (2.0f * kSqrt2OverPi * xi) * ((e * s) * s) * (1.0f + 3.0f * kGeluA * x2);
    // e = 0 (x >~ 9) or inf (x <~ −9): s(1−s) has underflowed; the true term is < 1e-30,
    // and computing it would give 0·inf = NaN at x = ±inf.
    inner = tx_select((e == 0.0f) | (e > kFltMax), 0.0f, inner);
    dx[i] = dy[i] * (s + inner);
  }
}

static void gelu_erf_bwd(const float* dy, const float* x, float* dx, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float xi = x[i];
    const float phi = tx_exp(-0.5f * (xi * xi)) * kInvSqrt2Pi;
    const float xphi = tx_select(phi == 0.0f, 0.0f, xi * phi);  // x = ±inf: 0, not inf·0
    dx[i] = dy[i] * (std_normal_cdf(xi) + xphi);
  }
}

// ---- vmath test hook ----
static void v_exp(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = tx_exp(x[i]);
}
static void v_tanh(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = tx_tanh(x[i]);
}
static void v_erf(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = tx_erf(x[i]);
}
static void v_erfc(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = tx_erfc(x[i]);
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
// which = 0 exp, 1 tanh, 2 erf, 3 erfc; y = f(x) element-wise.
void vmath_apply(int which, const float* x, float* y, int64_t n) {
  switch (which) {
    case 0: run_unary(v_exp, x, y, n, 8); break;
    case 1: run_unary(v_tanh, x, y, n, 8); break;
    case 2: run_unary(v_erf, x, y, n, 12); break;
    default: run_unary(v_erfc, x, y, n, 12); break;
  }
}

}  // namespace TX_ISA_NS
}  // namespace tx
