// gpt_decode_step: GPT-2's forward for one new token per row against the KV cache,
// written as the kernel calls that models/gpt.py + generation/kv_cache.py make:
//
//   x = E[id] + P[pos]
//   per block:  h = LN_1(x);  [q|k|v] = h W_attn + b;  K[:, :, t] = k;  V[:, :, t] = v
//               x += softmax(q Kᵀ/√d_k + mask) V · W_O + b_O
//               x += act(LN_2(x) W_fc + b_fc) W_proj + b_proj
//   logits = LN_f(x) W_head
//
// Not an ISA-specific file: every kernel goes through TX_DISPATCH, so each call runs the
// variant in use (and its own OpenMP region), exactly as from Python.
#include <cmath>
#include <cstring>
#include <vector>

#include "tx/decoder.h"
#include "tx/kernels.h"

namespace tx {

static void linear(const PackedLinear& L, int64_t M, const float* x, float* y) {
  TX_DISPATCH(gemm_prepacked)(M, L.N, L.K, x, L.K, L.w, L.dtype, L.bias, y, L.N, false);
}

static void add_into(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] + y[i];
}

void gpt_decode_step(const GPTDecoderWeights& w, int64_t B, const int64_t* ids, const int64_t* pos,
                     int64_t t, int64_t T_max, float* const* k_cache, float* const* v_cache,
                     const uint8_t* key_mask, float* logits) {
  const int64_t d = w.d, H = w.n_head, dk = d / H, Tk = t + 1;
  std::vector<float> x(B * d), h(B * d), qkv(B * 3 * d), att(B * d), ff(B * w.d_ff), mean(B), rstd(B),
      mask(B * Tk), lse(B * H);

  TX_DISPATCH(embedding_forward)(ids, B, w.wte, d, x.data());
  for (int64_t b = 0; b < B; ++b) add_into(&x[b * d], w.wpe + pos[b] * d, d);
  // The key-padding mask as an additive one (0 = attend, -inf = masked), as ops.attention makes it.
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t j = 0; j < Tk; ++j) mask[b * Tk + j] = key_mask[b * T_max + j] ? 0.0f : -INFINITY;
  }
  AttnShape s;
  s.B = B, s.H = H, s.Tq = 1, s.Tk = Tk, s.D = dk;
  s.scale = 1.0f / std::sqrt((float)dk);
  s.causal = true;  // one query, the last position: sees every key up to t
  const View4 q{qkv.data(), 3 * d, dk, 3 * d, 1};
  const View4 m{mask.data(), Tk, 0, 0, 1};

  for (int64_t l = 0; l < w.n_layer; ++l) {
    const GPTLayer& L = w.layers[l];
    TX_DISPATCH(layer_norm_forward)(x.data(), L.ln_1_g, L.ln_1_b, w.eps, B, d, h.data(), mean.data(), rstd.data());
    linear(L.c_attn, B, h.data(), qkv.data());
    float *kc = k_cache[l], *vc = v_cache[l];
    for (int64_t b = 0; b < B; ++b) {  // the new token's k, v (heads split) into column t
      for (int64_t hh = 0; hh < H; ++hh) {
        const int64_t at = ((b * H + hh) * T_max + t) * dk;
        std::memcpy(kc + at, &qkv[b * 3 * d + d + hh * dk], dk * sizeof(float));
        std::memcpy(vc + at, &qkv[b * 3 * d + 2 * d + hh * dk], dk * sizeof(float));
      }
    }
    const View4 k{kc, H * T_max * dk, T_max * dk, dk, 1}, v{vc, H * T_max * dk, T_max * dk, dk, 1};
    // out (B, H, 1, d_k) contiguous is already the heads concatenated: (B, d)
    TX_DISPATCH(attention_forward)(s, q, k, v, m, att.data(), lse.data());
    linear(L.c_proj, B, att.data(), h.data());
    add_into(x.data(), h.data(), B * d);
    TX_DISPATCH(layer_norm_forward)(x.data(), L.ln_2_g, L.ln_2_b, w.eps, B, d, h.data(), mean.data(), rstd.data());
    linear(L.c_fc, B, h.data(), ff.data());
    TX_DISPATCH(activation_forward)(w.act, ff.data(), ff.data(), B * w.d_ff);
    linear(L.mlp_proj, B, ff.data(), h.data());
    add_into(x.data(), h.data(), B * d);
  }
  TX_DISPATCH(layer_norm_forward)(x.data(), w.ln_f_g, w.ln_f_b, w.eps, B, d, h.data(), mean.data(), rstd.data());
  linear(w.lm_head, B, h.data(), logits);
}

}  // namespace tx
