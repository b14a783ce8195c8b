// A fused decoding step for the GPT-2 architecture: one C++ call per generated token.
//
// At batch 1 a token costs ~15 ms of weight streaming, and the Python definition of the
// model (models/gpt.py through generation/kv_cache.py) adds ~60 µs of interpreter work
// per kernel call, ~150 calls per token. This step runs the same kernels, in the same
// order, on the same pre-packed weights, so its logits equal the Python path's bit for
// bit (tests/test_decoder.py); the Python definition stays the reference.
#pragma once
#include <cstdint>

namespace tx {

// A weight pre-packed by pack_weight (kernels.h): op(W) is K×N; dtype 0 fp32, 1 bf16.
struct PackedLinear {
  const void* w;
  int dtype;
  int64_t K, N;
  const float* bias;  // N floats or nullptr
};

struct GPTLayer {
  const float *ln_1_g, *ln_1_b;
  PackedLinear c_attn;   // d → 3d: [q | k | v]
  PackedLinear c_proj;   // d → d (W_O)
  const float *ln_2_g, *ln_2_b;
  PackedLinear c_fc;     // d → d_ff
  PackedLinear mlp_proj; // d_ff → d
};

struct GPTDecoderWeights {
  int64_t n_layer, n_head, d, d_ff, vocab, n_positions;
  int act;    // tx::Activation code of the MLP
  float eps;  // layer norm ε
  const float* wte;  // (vocab, d)
  const float* wpe;  // (n_positions, d)
  const GPTLayer* layers;
  const float *ln_f_g, *ln_f_b;
  PackedLinear lm_head;  // d → vocab
};

// One new token for each of B rows at cache column t (keys [0, t] are attended, as the
// key mask allows). ids, pos: B each (validated by the caller). k_cache[l], v_cache[l]:
// (B, n_head, T_max, d_k) contiguous; column t is overwritten. key_mask: (B, T_max),
// nonzero = attend. logits: (B, vocab), overwritten.
void gpt_decode_step(const GPTDecoderWeights& w, int64_t B, const int64_t* ids, const int64_t* pos,
                     int64_t t, int64_t T_max, float* const* k_cache, float* const* v_cache,
                     const uint8_t* key_mask, float* logits);

}  // namespace tx
