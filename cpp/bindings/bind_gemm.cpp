// GEMM family bindings: _core.gemm (C = op(a)·op(b) [+ bias] [+ c]) and _core.sum_rows.
// The caller allocates the output; every size and stride comes from the arrays.
#include <string>

#include "common.h"
#include "tx/kernels.h"

namespace {

std::string dims(int64_t r, int64_t c) { return "(" + std::to_string(r) + ", " + std::to_string(c) + ")"; }

void gemm_py(const py::array& a, const py::array& b, const py::object& bias_obj, py::array& c,
             bool trans_a, bool trans_b, bool accumulate) {
  const char* op = "_core.gemm";
  txb::check_f32(a, op, "a", 2);
  txb::check_f32(b, op, "b", 2);
  txb::check_out(c, op, "c", 2);
  const int64_t M = trans_a ? a.shape(1) : a.shape(0), K = trans_a ? a.shape(0) : a.shape(1);
  const int64_t Kb = trans_b ? b.shape(1) : b.shape(0), N = trans_b ? b.shape(0) : b.shape(1);
  txb::check_shape(K == Kb, op,
                   "op(a) is " + dims(M, K) + " (a " + txb::shape_str(a) + (trans_a ? ", transposed" : "") +
                       ") but op(b) is " + dims(Kb, N) + " (b " + txb::shape_str(b) +
                       (trans_b ? ", transposed" : "") + "): inner dimensions differ");
  txb::check_shape(c.shape(0) == M && c.shape(1) == N, op,
                   "'c' must have shape " + dims(M, N) + ", got " + txb::shape_str(c));
  const float* bias = nullptr;
  py::array bias_arr;
  if (!bias_obj.is_none()) {
    if (!py::isinstance<py::array>(bias_obj)) throw py::type_error(std::string(op) + ": 'bias' must be a float32 array or None");
    bias_arr = py::reinterpret_borrow<py::array>(bias_obj);
    txb::check_f32(bias_arr, op, "bias", 1);
    txb::check_shape(bias_arr.shape(0) == N, op,
                     "'bias' must have shape (" + std::to_string(N) + ",), got " + txb::shape_str(bias_arr));
    bias = txb::cptr(bias_arr);
  }
  if (M == 0 || N == 0) return;
  const float* pa = txb::cptr(a);
  const float* pb = txb::cptr(b);
  float* pc = txb::mptr(c);
  const int64_t lda = txb::stride(a, 0), ldb = txb::stride(b, 0), ldc = txb::stride(c, 0);
  py::gil_scoped_release release;
  TX_DISPATCH(gemm)(trans_a, trans_b, M, N, K, pa, lda, pb, ldb, bias, pc, ldc, accumulate);
}

void sum_rows_py(const py::array& x, py::array& out, bool accumulate) {
  const char* op = "_core.sum_rows";
  txb::check_f32(x, op, "x", 2);
  txb::check_out(out, op, "out", 1);
  const int64_t M = x.shape(0), N = x.shape(1);
  txb::check_shape(out.shape(0) == N, op,
                   "'out' must have shape (" + std::to_string(N) + ",), got " + txb::shape_str(out));
  if (N == 0) return;
  const float* px = txb::cptr(x);
  float* po = txb::mptr(out);
  const int64_t ldx = txb::stride(x, 0);
  py::gil_scoped_release release;
  TX_DISPATCH(sum_rows)(px, M, N, ldx, po, accumulate);
}

// Packed weights: dtype 0 = fp32 (a float32 buffer), 1 = bf16 (a uint16 buffer); the
// layout is documented in tx/kernels.h. The buffer's size is checked against (K, N).
int packed_dtype(int dtype, const char* op) {
  if (dtype != 0 && dtype != 1) throw py::value_error(std::string(op) + ": dtype must be 0 (fp32) or 1 (bf16)");
  return dtype;
}

py::array pack_weight_py(const py::array& w, bool trans_b, int dtype) {
  const char* op = "_core.pack_weight";
  packed_dtype(dtype, op);
  txb::check_f32(w, op, "w", 2);
  const int64_t K = trans_b ? w.shape(1) : w.shape(0), N = trans_b ? w.shape(0) : w.shape(1);
  const int64_t n = TX_DISPATCH(packed_weight_elems)(K, N, dtype);
  py::array out = dtype == 1 ? py::array(py::array_t<uint16_t>(n)) : py::array(py::array_t<float>(n));
  if (n == 0) return out;
  const float* pw = txb::cptr(w);
  const int64_t ldw = txb::stride(w, 0);
  void* po = out.mutable_data();
  py::gil_scoped_release release;
  TX_DISPATCH(pack_weight)(pw, ldw, trans_b, K, N, dtype, po);
  return out;
}

void gemm_packed_py(const py::array& a, const py::array& packed, int64_t K, int64_t N, int dtype,
                    const py::object& bias_obj, py::array& c, bool accumulate) {
  const char* op = "_core.gemm_packed";
  packed_dtype(dtype, op);
  txb::check_f32(a, op, "a", 2);
  txb::check_out(c, op, "c", 2);
  const bool is_u16 = py::isinstance<py::array_t<uint16_t>>(packed) && packed.dtype().kind() == 'u' && packed.itemsize() == 2;
  const bool is_f32 = py::isinstance<py::array_t<float>>(packed) && packed.dtype().kind() == 'f' && packed.itemsize() == 4;
  if (!(dtype == 1 ? is_u16 : is_f32)) {
    throw py::type_error(std::string(op) + ": 'packed' must be a " + (dtype == 1 ? "uint16" : "float32") +
                         " buffer for dtype " + std::to_string(dtype) + ", got " + std::string(py::str(packed.dtype())));
  }
  if (packed.ndim() != 1 || !(packed.flags() & py::array::c_style)) {
    throw py::value_error(std::string(op) + ": 'packed' must be a 1-D C-contiguous buffer");
  }
  txb::check_shape(K >= 0 && N >= 0 && packed.shape(0) == TX_DISPATCH(packed_weight_elems)(K, N, dtype), op,
                   "'packed' has " + std::to_string(packed.shape(0)) + " elements, not a packed " + dims(K, N) + " weight");
  const int64_t M = a.shape(0);
  txb::check_shape(a.shape(1) == K, op, "'a' has shape " + txb::shape_str(a) + " but the packed weight has K=" + std::to_string(K));
  txb::check_shape(c.shape(0) == M && c.shape(1) == N, op, "'c' must have shape " + dims(M, N) + ", got " + txb::shape_str(c));
  const float* bias = nullptr;
  py::array bias_arr;
  if (!bias_obj.is_none()) {
    if (!py::isinstance<py::array>(bias_obj)) throw py::type_error(std::string(op) + ": 'bias' must be a float32 array or None");
    bias_arr = py::reinterpret_borrow<py::array>(bias_obj);
    txb::check_f32(bias_arr, op, "bias", 1);
    txb::check_shape(bias_arr.shape(0) == N, op, "'bias' must have shape (" + std::to_string(N) + ",), got " + txb::shape_str(bias_arr));
    bias = txb::cptr(bias_arr);
  }
  if (M == 0 || N == 0) return;
  const float* pa = K ? txb::cptr(a) : nullptr;
  const void* pw = packed.data();
  float* pc = txb::mptr(c);
  const int64_t lda = K ? txb::stride(a, 0) : 0, ldc = txb::stride(c, 0);
  py::gil_scoped_release release;
  TX_DISPATCH(gemm_prepacked)(M, N, K, pa, lda, pw, dtype, bias, pc, ldc, accumulate);
}

}  // namespace

void bind_gemm(py::module_& m) {
  m.def("gemm", &gemm_py, py::arg("a"), py::arg("b"), py::arg("bias"), py::arg("c"),
        py::arg("trans_a") = false, py::arg("trans_b") = false, py::arg("accumulate") = false,
        "c = op(a) @ op(b) [+ bias] [+ c if accumulate], written into c in place.\n"
        "op(a) = a.T if trans_a else a (M×K); op(b) = b.T if trans_b else b (K×N); the\n"
        "transposes are read in place. a, b: 2-D float32 with a unit-stride last axis (any\n"
        "row stride); c: C-contiguous writable float32 (M, N); bias: (N,) float32 or None.");
  m.def("pack_weight", &pack_weight_py, py::arg("w"), py::arg("trans_b") = false, py::arg("dtype") = 0,
        "Pack op(w) (K×N; w is (N, K) when trans_b) into 32-column panels: a 1-D float32\n"
        "(dtype 0) or uint16 bf16 (dtype 1, round to nearest even) buffer for gemm_packed.");
  m.def("gemm_packed", &gemm_packed_py, py::arg("a"), py::arg("packed"), py::arg("K"), py::arg("N"),
        py::arg("dtype"), py::arg("bias"), py::arg("c"), py::arg("accumulate") = false,
        "c = a @ W [+ bias] [+ c if accumulate] with W a pack_weight buffer of a (K, N) weight.");
  m.def("sum_rows", &sum_rows_py, py::arg("x"), py::arg("out"), py::arg("accumulate") = false,
        "out (+)= x.sum(axis=0) for 2-D float32 x (unit-stride last axis); out: (N,) "
        "C-contiguous float32, written in place.");
}
