// Every kernel the C++ core offers, declared once for each ISA variant.
//
// Conventions: float32, row-major; `ld*` are row strides in elements (the last axis is
// always unit-stride); sizes are int64_t; callers (the bindings) have validated shapes.
// Results never depend on the thread count: work is split over output elements and
// no single reduction is shared between threads.
#pragma once
#include <cstdint>

#include "tx/dispatch.h"

namespace tx {

// Activation codes shared by activation_* and the feed-forward path.
enum Activation : int { ACT_IDENTITY = 0, ACT_RELU = 1, ACT_GELU_TANH = 2, ACT_GELU_ERF = 3 };

// A 4-D strided float view (strides in elements; any stride may be 0 = broadcast).
struct View4 {
  const float* data;
  int64_t s0, s1, s2, s3;
};

// Shape of one attention call: q (B, H, Tq, D), k and v (B, H, Tk, D).
// Attention dropout (training): O = (P ⊙ M / (1 − p)) V with M[b,h,i,j] a counter-based
// hash of (seed, b, h, i, j) recomputed on the fly (never stored; the backward with the
// same seed sees the same mask). Defaults = no dropout. Hash: see attention.cpp.
struct AttnShape {
  int64_t B, H, Tq, Tk, D;
  float scale;  // 1/sqrt(D)
  bool causal;  // query i sees key j iff j <= i + (Tk - Tq)
  float dropout_p = 0.0f;     // in [0, 1); 0 = no dropout
  uint64_t dropout_seed = 0;  // the mask's seed (same in forward and backward)
};

#define TX_KERNELS_API                                                                        \
  /* ---- gemm.cpp: C = op(A)·op(B) [+ bias] [+ C if accumulate] ----                      \
     op(A) is M×K (A stored K×M when trans_a), op(B) is K×N (B stored N×K when trans_b).  \
     bias: N floats or nullptr. */                                                         \
  void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,   \
            int64_t lda, const float* B, int64_t ldb, const float* bias, float* C,         \
            int64_t ldc, bool accumulate);                                                 \
  /* ---- gemm.cpp, pre-packed weights: op(B) (K×N; B stored N×K when trans_b) in       \
     panels of 32 columns, zero-padded. dtype 0 = fp32: panel p is K rows × 32 floats;      \
     dtype 1 = bf16 (fp32 rounded to nearest even): panel p is ceil(K/2) rows × 32 pairs    \
     (op(B)[2r, j], op(B)[2r+1, j]) of uint16. One layout for GEMM and GEMV. */             \
  int64_t packed_weight_elems(int64_t K, int64_t N, int dtype);                             \
  void pack_weight(const float* B, int64_t ldb, bool trans_b, int64_t K, int64_t N,         \
                   int dtype, void* out);                                                   \
  /* C = A·W [+ bias] [+ C if accumulate]; A M×K (row stride lda), W packed as above. */    \
  void gemm_prepacked(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,         \
                      const void* Wp, int dtype, const float* bias, float* C, int64_t ldc,  \
                      bool accumulate);                                                     \
  /* out[j] (+)= sum_i X[i*ldx + j]: the bias gradient. */                                 \
  void sum_rows(const float* X, int64_t M, int64_t N, int64_t ldx, float* out,             \
                bool accumulate);                                                          \
                                                                                           \
  /* ---- attention.cpp: flash-style, never the Tq×Tk matrix ----                          \
     mask: additive float mask (data == nullptr for none), broadcast by strides.           \
     out (B,H,Tq,D) and lse (B,H,Tq) contiguous; a row with no key to attend gets          \
     out = 0 and lse = -inf. With s.dropout_p > 0, out uses the dropped probabilities;     \
     lse stays the undropped log-sum-exp. */                                               \
  void attention_forward(const AttnShape& s, View4 q, View4 k, View4 v, View4 mask,        \
                         float* out, float* lse);                                          \
  /* dout, out contiguous (B,H,Tq,D); dq (B,H,Tq,D), dk, dv (B,H,Tk,D) contiguous,         \
     overwritten. */                                                                       \
  void attention_backward(const AttnShape& s, View4 q, View4 k, View4 v, View4 mask,       \
                          const float* out, const float* dout, const float* lse,           \
                          float* dq, float* dk, float* dv);                                \
                                                                                           \
  /* ---- softmax.cpp: over rows of length n, contiguous; a row of all -inf -> 0 ---- */   \
  void softmax_forward(const float* x, float* y, int64_t rows, int64_t n);                 \
  void softmax_backward(const float* dy, const float* y, float* dx, int64_t rows,          \
                        int64_t n);                                                        \
                                                                                           \
  /* ---- layer_norm.cpp: rows of length n, contiguous ---- */                             \
  void layer_norm_forward(const float* x, const float* gamma, const float* beta,           \
                          float eps, int64_t rows, int64_t n, float* y, float* mean,       \
                          float* rstd);                                                    \
  /* dgamma, dbeta overwritten. */                                                         \
  void layer_norm_backward(const float* dy, const float* x, const float* gamma,            \
                           const float* mean, const float* rstd, int64_t rows, int64_t n,  \
                           float* dx, float* dgamma, float* dbeta);                        \
                                                                                           \
  /* ---- activation.cpp: element-wise, contiguous, y may alias x ---- */                  \
  void activation_forward(int act, const float* x, float* y, int64_t n);                   \
  void activation_backward(int act, const float* dy, const float* x, float* dx,            \
                           int64_t n);                                                     \
                                                                                           \
  /* ---- embedding.cpp: ids already range-checked ---- */                                 \
  void embedding_forward(const int64_t* ids, int64_t n, const float* table, int64_t d,     \
                         float* out);                                                      \
  /* dtable (V×d) += scatter of dy rows; repeated ids accumulate. */                       \
  void embedding_backward(const float* dy, const int64_t* ids, int64_t n, int64_t d,       \
                          float* dtable);                                                  \
                                                                                           \
  /* ---- cross_entropy.cpp: logits (N, V) contiguous; targets range-checked ----          \
     row_loss[i] = -(1-eps)·log p[t] - eps/V·Σ_j log p[j]  (0 if ignored);                  \
     dlogits[i] = grad_scale·(p - ((1-eps)·onehot(t) + eps/V))  (0 if ignored). */         \
  void cross_entropy(const float* logits, int64_t N, int64_t V, const int64_t* targets,    \
                     int64_t ignore_index, float label_smoothing, float grad_scale,        \
                     float* row_loss, float* dlogits);                                     \
                                                                                           \
  /* ---- adamw.cpp: in place, PyTorch's AdamW update (decoupled weight decay) ---- */     \
  void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, int64_t step,   \
                  double lr, double beta1, double beta2, double eps,                    \
                  double weight_decay); /* double: 1-0.999 is inexact in float */         \
  void fill_zero(float* x, int64_t n); /* x[0:n] = 0 (zero_grad of a flat buffer) */      \
                                                                                           \
  /* ---- probes (bench only): sustained FMA rate, read and copy bandwidth ---- */         \
  double probe_fma(int64_t iters); /* returns flops performed, all threads */              \
  double probe_read(const float* x, int64_t n, int reps); /* returns a checksum */          \
  void probe_copy(const float* x, float* y, int64_t n, int reps); /* y = x, reps times */

TX_DECLARE_FOR_EACH_ISA(TX_KERNELS_API)

}  // namespace tx
