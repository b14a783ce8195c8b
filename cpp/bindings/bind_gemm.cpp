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

}  // namespace

void bind_gemm(py::module_& m) {
  m.def("gemm", &gemm_py, py::arg("a"), py::arg("b"), py::arg("bias"), py::arg("c"),
        py::arg("trans_a") = false, py::arg("trans_b") = false, py::arg("accumulate") = false,
        "c = op(a) @ op(b) [+ bias] [+ c if accumulate], written into c in place.\n"
        "op(a) = a.T if trans_a else a (M×K); op(b) = b.T if trans_b else b (K×N); the\n"
        "transposes are read in place. a, b: 2-D float32 with a unit-stride last axis (any\n"
        "row stride); c: C-contiguous writable float32 (M, N); bias: (N,) float32 or None.");
  m.def("sum_rows", &sum_rows_py, py::arg("x"), py::arg("out"), py::arg("accumulate") = false,
        "out (+)= x.sum(axis=0) for 2-D float32 x (unit-stride last axis); out: (N,) "
        "C-contiguous float32, written in place.");
}
