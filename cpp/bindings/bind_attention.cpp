// _core.attention_forward / _core.attention_backward: flash-style attention on 4-D
// float32 arrays. q, k, v are read in place through their strides (last axis
// unit-stride), so k/v may be slices of a preallocated KV cache; the mask is an
// additive float32 array already broadcast to (B, H, Tq, Tk) (strides may be 0).
// Every size and stride is taken from the arrays; outputs are allocated by the caller
// (the Python layer) and must be C-contiguous. dropout_p in [0, 1) and seed (uint64)
// select the attention-dropout mask (see kernels.h); the backward needs the same pair.
#include <cmath>

#include "common.h"
#include "tx/kernels.h"

namespace {

const char* const FWD = "attention_forward";
const char* const BWD = "attention_backward";

std::string dims(int64_t a, int64_t b, int64_t c, int64_t d = -1) {
  std::string s = "(" + std::to_string(a) + ", " + std::to_string(b) + ", " + std::to_string(c);
  if (d >= 0) s += ", " + std::to_string(d);
  return s + ")";
}

bool has_shape(const py::array& a, int64_t s0, int64_t s1, int64_t s2, int64_t s3 = -1) {
  if (a.shape(0) != s0 || a.shape(1) != s1 || a.shape(2) != s2) return false;
  return s3 < 0 || a.shape(3) == s3;
}

tx::View4 view(const py::array& a) {
  return tx::View4{txb::cptr(a), txb::stride(a, 0), txb::stride(a, 1), txb::stride(a, 2),
                   txb::stride(a, 3)};
}

// Checks q, k, v and the mask; fills the shape.
tx::AttnShape check_qkv(const char* op, const py::array& q, const py::array& k, const py::array& v,
                        const py::object& mask, bool causal, tx::View4& mv) {
  txb::check_f32(q, op, "q", 4);
  txb::check_f32(k, op, "k", 4);
  txb::check_f32(v, op, "v", 4);
  tx::AttnShape s;
  s.B = q.shape(0);
  s.H = q.shape(1);
  s.Tq = q.shape(2);
  s.D = q.shape(3);
  s.Tk = k.shape(2);
  s.causal = causal;
  s.scale = s.D > 0 ? 1.0f / std::sqrt((float)s.D) : 1.0f;
  txb::check_shape(has_shape(k, s.B, s.H, s.Tk, s.D), op,
                   "'k' must have shape (B, H, Tk, D) = " + dims(s.B, s.H, s.Tk, s.D) + " to match q " +
                       txb::shape_str(q) + ", got " + txb::shape_str(k));
  txb::check_shape(has_shape(v, s.B, s.H, s.Tk, s.D), op,
                   "'v' must have the shape of k " + txb::shape_str(k) + ", got " + txb::shape_str(v));
  mv = tx::View4{nullptr, 0, 0, 0, 0};
  if (!mask.is_none()) {
    if (!py::isinstance<py::array>(mask)) throw py::type_error(std::string(op) + ": 'mask' must be a float32 array or None");
    py::array m = py::reinterpret_borrow<py::array>(mask);
    if (!py::isinstance<py::array_t<float>>(m) || m.dtype().kind() != 'f' || m.itemsize() != 4) {
      throw py::type_error(std::string(op) + ": 'mask' must be float32, got " + std::string(py::str(m.dtype())));
    }
    txb::check_shape(m.ndim() == 4 && has_shape(m, s.B, s.H, s.Tq, s.Tk), op,
                     "'mask' must be broadcast to (B, H, Tq, Tk) = " + dims(s.B, s.H, s.Tq, s.Tk) + ", got " +
                         txb::shape_str(m));
    for (int i = 0; i < 4; ++i) {
      if (m.strides(i) % 4 != 0) throw py::value_error(std::string(op) + ": 'mask' is misaligned");
    }
    mv = view(m);
  }
  return s;
}

void set_dropout(const char* op, tx::AttnShape& s, double dropout_p, uint64_t seed) {
  if (!(dropout_p >= 0.0 && dropout_p < 1.0))  // also rejects NaN
    throw py::value_error(std::string(op) + ": 'dropout_p' must be in [0, 1), got " + std::to_string(dropout_p));
  s.dropout_p = (float)dropout_p;
  if (s.dropout_p >= 1.0f) throw py::value_error(std::string(op) + ": 'dropout_p' rounds to 1 in float32");
  s.dropout_seed = seed;
}

void attention_forward(const py::array& q, const py::array& k, const py::array& v, const py::object& mask,
                       bool causal, py::array out, py::array lse, double dropout_p, uint64_t seed) {
  tx::View4 mv;
  tx::AttnShape s = check_qkv(FWD, q, k, v, mask, causal, mv);
  set_dropout(FWD, s, dropout_p, seed);
  txb::check_out(out, FWD, "out", 4);
  txb::check_out(lse, FWD, "lse", 3);
  txb::check_shape(has_shape(out, s.B, s.H, s.Tq, s.D), FWD,
                   "'out' must have shape " + dims(s.B, s.H, s.Tq, s.D) + ", got " + txb::shape_str(out));
  txb::check_shape(has_shape(lse, s.B, s.H, s.Tq), FWD,
                   "'lse' must have shape " + dims(s.B, s.H, s.Tq) + ", got " + txb::shape_str(lse));
  const tx::View4 qv = view(q), kv = view(k), vv = view(v);
  float* o = txb::mptr(out);
  float* l = txb::mptr(lse);
  py::gil_scoped_release release;
  TX_DISPATCH(attention_forward)(s, qv, kv, vv, mv, o, l);
}

void attention_backward(const py::array& q, const py::array& k, const py::array& v, const py::object& mask,
                        bool causal, const py::array& out, const py::array& dout, const py::array& lse,
                        py::array dq, py::array dk, py::array dv, double dropout_p, uint64_t seed) {
  tx::View4 mv;
  tx::AttnShape s = check_qkv(BWD, q, k, v, mask, causal, mv);
  set_dropout(BWD, s, dropout_p, seed);
  const auto contiguous_in = [](const py::array& a, const char* name, py::ssize_t nd) {
    txb::check_f32(a, BWD, name, nd);
    if (!(a.flags() & py::array::c_style))
      throw py::value_error(std::string(BWD) + ": '" + name + "' must be C-contiguous");
  };
  contiguous_in(out, "out", 4);
  contiguous_in(dout, "dout", 4);
  contiguous_in(lse, "lse", 3);
  txb::check_out(dq, BWD, "dq", 4);
  txb::check_out(dk, BWD, "dk", 4);
  txb::check_out(dv, BWD, "dv", 4);
  const std::string qshape = dims(s.B, s.H, s.Tq, s.D), kshape = dims(s.B, s.H, s.Tk, s.D);
  txb::check_shape(has_shape(out, s.B, s.H, s.Tq, s.D), BWD, "'out' must have shape " + qshape + ", got " + txb::shape_str(out));
  txb::check_shape(has_shape(dout, s.B, s.H, s.Tq, s.D), BWD, "'dout' must have shape " + qshape + ", got " + txb::shape_str(dout));
  txb::check_shape(has_shape(lse, s.B, s.H, s.Tq), BWD,
                   "'lse' must have shape " + dims(s.B, s.H, s.Tq) + ", got " + txb::shape_str(lse));
  txb::check_shape(has_shape(dq, s.B, s.H, s.Tq, s.D), BWD, "'dq' must have shape " + qshape + ", got " + txb::shape_str(dq));
  txb::check_shape(has_shape(dk, s.B, s.H, s.Tk, s.D), BWD, "'dk' must have shape " + kshape + ", got " + txb::shape_str(dk));
  txb::check_shape(has_shape(dv, s.B, s.H, s.Tk, s.D), BWD, "'dv' must have shape " + kshape + ", got " + txb::shape_str(dv));
  const tx::View4 qv = view(q), kv = view(k), vv = view(v);
  const float *o = txb::cptr(out), *dO = txb::cptr(dout), *l = txb::cptr(lse);
  float *gq = txb::mptr(dq), *gk = txb::mptr(dk), *gv = txb::mptr(dv);
  py::gil_scoped_release release;
  TX_DISPATCH(attention_backward)(s, qv, kv, vv, mv, o, dO, l, gq, gk, gv);
}

}  // namespace

void bind_attention(py::module_& m) {
  m.def("attention_forward", &attention_forward, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask"),
        py::arg("causal"), py::arg("out"), py::arg("lse"), py::arg("dropout_p") = 0.0, py::arg("seed") = 0,
        "Flash-style attention forward: out = dropout(softmax(q kᵀ/√D + mask)) v, lse per row "
        "(of the undropped scores); dropout_p in [0, 1) with a uint64 seed (mask hashed from it). "
        "q (B,H,Tq,D), k/v (B,H,Tk,D) float32 with a unit-stride last axis (other strides free); "
        "mask None or float32 broadcast to (B,H,Tq,Tk); out (B,H,Tq,D), lse (B,H,Tq) C-contiguous, overwritten.");
  m.def("attention_backward", &attention_backward, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask"),
        py::arg("causal"), py::arg("out"), py::arg("dout"), py::arg("lse"), py::arg("dq"), py::arg("dk"),
        py::arg("dv"), py::arg("dropout_p") = 0.0, py::arg("seed") = 0,
        "Flash-style attention backward from the saved out and lse (and the forward's dropout_p, seed); "
        "dq (B,H,Tq,D), dk/dv (B,H,Tk,D) C-contiguous, overwritten.");
}
