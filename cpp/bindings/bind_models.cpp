// _core.GPTDecoder: the fused decoding step of tx/decoder.h behind a small object that
// holds (references to) the model's arrays. Built by transformer_ext.generation.fused from
// a GPT whose Linear weights are pre-packed; every size is derived from the arrays and
// checked here, so a wrong call raises instead of reading out of bounds.
#include <memory>
#include <vector>

#include "common.h"
#include "tx/decoder.h"
#include "tx/kernels.h"

namespace {

const char* const OP = "GPTDecoder";

const float* f32(const py::array& a, const char* name, int64_t n) {
  txb::check_f32(a, OP, name, a.ndim());
  if (!(a.flags() & py::array::c_style) || a.size() != n) {
    throw py::value_error(std::string(OP) + ": '" + name + "' must be a C-contiguous float32 array of " +
                          std::to_string(n) + " elements, got shape " + txb::shape_str(a));
  }
  return txb::cptr(a);
}

// A packed weight: (data, K, N, dtype code, bias or None), data sized for (K, N) exactly.
tx::PackedLinear packed(const py::tuple& t, const char* name, int64_t K, int64_t N) {
  if (t.size() != 5) throw py::value_error(std::string(OP) + ": '" + name + "' must be (data, K, N, dtype, bias)");
  const int64_t k = t[1].cast<int64_t>(), n = t[2].cast<int64_t>();
  const int dtype = t[3].cast<int>();
  if (k != K || n != N || (dtype != 0 && dtype != 1)) {
    throw py::value_error(std::string(OP) + ": '" + name + "' must be a (" + std::to_string(K) + ", " +
                          std::to_string(N) + ") packed weight, got (" + std::to_string(k) + ", " +
                          std::to_string(n) + ") dtype code " + std::to_string(dtype));
  }
  py::array data = t[0].cast<py::array>();
  const int64_t elems = TX_DISPATCH(packed_weight_elems)(K, N, dtype);
  const py::ssize_t itemsize = dtype == 0 ? 4 : 2;
  if (data.itemsize() != itemsize || data.size() != elems || !(data.flags() & py::array::c_style)) {
    throw py::value_error(std::string(OP) + ": packed '" + name + "' has the wrong buffer size or type");
  }
  const float* bias = nullptr;
  if (!t[4].is_none()) bias = f32(t[4].cast<py::array>(), name, N);
  return tx::PackedLinear{data.data(), dtype, K, N, bias};
}

class GPTDecoder {
 public:
  // layers: list of (ln_1_g, ln_1_b, c_attn, c_proj, ln_2_g, ln_2_b, c_fc, mlp_proj) with the
  // linears as `packed` tuples; act: tx::Activation code.
  GPTDecoder(int64_t n_head, float eps, int act, py::array wte, py::array wpe, py::list layers,
             py::array ln_f_g, py::array ln_f_b, py::tuple lm_head)
      : keep_(py::make_tuple(wte, wpe, layers, ln_f_g, ln_f_b, lm_head)) {
    txb::check_f32(wte, OP, "wte", 2);
    txb::check_f32(wpe, OP, "wpe", 2);
    auto& w = w_;
    w.vocab = wte.shape(0), w.d = wte.shape(1), w.n_positions = wpe.shape(0);
    w.n_head = n_head, w.eps = eps, w.act = act;
    w.n_layer = (int64_t)layers.size();
    if (n_head < 1 || w.d % n_head || wpe.shape(1) != w.d || w.n_layer < 1 || act < 0 || act > 3) {
      throw py::value_error(std::string(OP) + ": inconsistent configuration");
    }
    w.wte = f32(wte, "wte", w.vocab * w.d);
    w.wpe = f32(wpe, "wpe", w.n_positions * w.d);
    const int64_t d = w.d;
    for (py::handle item : layers) {
      py::tuple t = item.cast<py::tuple>();
      if (t.size() != 8) throw py::value_error(std::string(OP) + ": a layer must have 8 entries");
      tx::GPTLayer L;
      L.ln_1_g = f32(t[0].cast<py::array>(), "ln_1.weight", d);
      L.ln_1_b = f32(t[1].cast<py::array>(), "ln_1.bias", d);
      L.c_attn = packed(t[2].cast<py::tuple>(), "attn.c_attn", d, 3 * d);
      L.c_proj = packed(t[3].cast<py::tuple>(), "attn.c_proj", d, d);
      L.ln_2_g = f32(t[4].cast<py::array>(), "ln_2.weight", d);
      L.ln_2_b = f32(t[5].cast<py::array>(), "ln_2.bias", d);
      py::tuple fc = t[6].cast<py::tuple>();
      const int64_t d_ff = fc[2].cast<int64_t>();
      if (layers_.empty()) w.d_ff = d_ff;
      L.c_fc = packed(fc, "mlp.c_fc", d, w.d_ff);
      L.mlp_proj = packed(t[7].cast<py::tuple>(), "mlp.c_proj", w.d_ff, d);
      layers_.push_back(L);
    }
    w.layers = layers_.data();
    w.ln_f_g = f32(ln_f_g, "ln_f.weight", d);
    w.ln_f_b = f32(ln_f_b, "ln_f.bias", d);
    w.lm_head = packed(lm_head, "lm_head", d, w.vocab);
  }

  // ids, pos: (B,) int64; t: the cache column of the new token; k_cache / v_cache: one
  // (B, n_head, T_max, d_k) float32 array per layer; key_mask (B, T_max) bool. → logits (B, V).
  py::array_t<float> step(py::array_t<int64_t, py::array::c_style | py::array::forcecast> ids,
                          py::array_t<int64_t, py::array::c_style | py::array::forcecast> pos, int64_t t,
                          py::list k_cache, py::list v_cache, py::array key_mask) {
    const auto& w = w_;
    const int64_t B = ids.size();
    if (ids.ndim() != 1 || pos.ndim() != 1 || pos.size() != B || B < 1) {
      throw py::value_error(std::string(OP) + ".step: ids and pos must be non-empty 1-D arrays of one length");
    }
    if ((int64_t)k_cache.size() != w.n_layer || (int64_t)v_cache.size() != w.n_layer) {
      throw py::value_error(std::string(OP) + ".step: one k and one v cache per layer expected");
    }
    if (key_mask.ndim() != 2 || key_mask.dtype().kind() != 'b' || key_mask.shape(0) != B ||
        !(key_mask.flags() & py::array::c_style)) {
      throw py::value_error(std::string(OP) + ".step: key_mask must be a C-contiguous (B, T_max) bool array");
    }
    const int64_t T_max = key_mask.shape(1), dk = w.d / w.n_head;
    if (t < 0 || t >= T_max) throw py::value_error(std::string(OP) + ".step: cache column out of range");
    const int64_t* pid = ids.data();
    const int64_t* ppos = pos.data();
    for (int64_t b = 0; b < B; ++b) {
      if (pid[b] < 0 || pid[b] >= w.vocab) throw py::value_error(std::string(OP) + ".step: token id out of range");
      if (ppos[b] < 0 || ppos[b] >= w.n_positions) {
        throw py::value_error(std::string(OP) + ".step: position out of range");
      }
    }
    std::vector<float*> kc(w.n_layer), vc(w.n_layer);
    for (int64_t l = 0; l < w.n_layer; ++l) {
      for (int side = 0; side < 2; ++side) {
        py::array a = (side ? v_cache : k_cache)[l].cast<py::array>();
        txb::check_out(a, OP, side ? "v_cache" : "k_cache", 4);
        if (a.shape(0) != B || a.shape(1) != w.n_head || a.shape(2) != T_max || a.shape(3) != dk) {
          throw py::value_error(std::string(OP) + ".step: a cache has shape " + txb::shape_str(a) +
                                ", expected (B, n_head, T_max, d_k)");
        }
        (side ? vc : kc)[l] = txb::mptr(a);
      }
    }
    py::array_t<float> logits({B, w.vocab});
    float* out = logits.mutable_data();
    const uint8_t* km = static_cast<const uint8_t*>(key_mask.data());
    {
      py::gil_scoped_release release;
      tx::gpt_decode_step(w, B, pid, ppos, t, T_max, kc.data(), vc.data(), km, out);
    }
    return logits;
  }

 private:
  py::tuple keep_;  // the arrays the raw pointers below point into
  tx::GPTDecoderWeights w_{};
  std::vector<tx::GPTLayer> layers_;
};

}  // namespace

void bind_models(py::module_& m) {
  py::class_<GPTDecoder>(m, "GPTDecoder", "Fused GPT-2 decoding step over pre-packed weights (tx/decoder.h).")
      .def(py::init<int64_t, float, int, py::array, py::array, py::list, py::array, py::array, py::tuple>(),
           py::arg("n_head"), py::arg("eps"), py::arg("act"), py::arg("wte"), py::arg("wpe"), py::arg("layers"),
           py::arg("ln_f_g"), py::arg("ln_f_b"), py::arg("lm_head"))
      .def("step", &GPTDecoder::step, py::arg("ids"), py::arg("pos"), py::arg("t"), py::arg("k_cache"),
           py::arg("v_cache"), py::arg("key_mask"));
}
