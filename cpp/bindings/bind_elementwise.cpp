// Element-wise / row-wise family bindings: softmax, layer norm, activations, and the
// vmath test hook. Outputs of the ops are allocated by the caller (ops/elementwise.py)
// and passed in, C-contiguous; inputs must be C-contiguous too (the kernels take no
// strides). Every size comes from the arrays; shapes are checked here as the last line
// of defence behind the Python layer's friendlier messages. The GIL is released while
// a kernel runs.
#include <string>
#include <vector>

#include "common.h"
#include "tx/kernels.h"

namespace tx {
// The vmath test hook lives in activation.cpp, outside the public kernel list.
TX_DECLARE_FOR_EACH_ISA(void vmath_apply(int, const float*, float*, int64_t);)
}  // namespace tx

namespace {

// NumPy 2 gives zero-size arrays zero strides, which txb::check_f32 would reject as
// "not unit-stride": for them only the dtype and ndim matter (no kernel runs).
void check_empty(const py::array& a, const char* op, const char* name, py::ssize_t ndim) {
  txb::check_f32(a.size() == 0 ? py::array(py::dtype(a.dtype()), std::vector<py::ssize_t>(a.ndim(), 0)) : a,
                 op, name, ndim);
}

// A float32 C-contiguous input with `ndim` dims (ndim < 0: any).
void check_in(const py::array& a, const char* op, const char* name, py::ssize_t ndim) {
  if (ndim < 0) ndim = a.ndim();
  if (a.size() == 0) return check_empty(a, op, name, ndim);
  txb::check_f32(a, op, name, ndim);
  if (!(a.flags() & py::array::c_style)) {
    throw py::value_error(std::string(op) + ": '" + name + "' must be C-contiguous");
  }
}

void check_out(py::array& a, const char* op, const char* name, py::ssize_t ndim) {
  if (ndim < 0) ndim = a.ndim();
  if (a.size() == 0) return check_empty(a, op, name, ndim);
  txb::check_out(a, op, name, ndim);
}

// a.shape == b.shape, else "op: 'a' has shape (..) but 'b' has shape (..)".
void same_shape(const py::array& a, const char* an, const py::array& b, const char* bn, const char* op) {
  bool ok = a.ndim() == b.ndim();
  for (py::ssize_t i = 0; ok && i < a.ndim(); ++i) ok = a.shape(i) == b.shape(i);
  txb::check_shape(ok, op, std::string("'") + an + "' has shape " + txb::shape_str(a) + " but '" + bn +
                               "' has shape " + txb::shape_str(b));
}

// A 1-D array of length len.
void check_len(const py::array& a, const char* name, int64_t len, const char* why, const char* op) {
  txb::check_shape(a.shape(0) == len, op,
                   std::string("'") + name + "' must have shape (" + std::to_string(len) + ",) (" + why +
                       "), got " + txb::shape_str(a));
}

void check_act(int act, const char* op) {
  if (act < tx::ACT_IDENTITY || act > tx::ACT_GELU_ERF) {
    throw py::value_error(std::string(op) + ": unknown activation code " + std::to_string(act) +
                          " (expected ACT_IDENTITY=0, ACT_RELU=1, ACT_GELU_TANH=2, ACT_GELU_ERF=3)");
  }
}

void softmax_forward_py(const py::array& x, py::array& y) {
  const char* op = "_core.softmax_forward";
  check_in(x, op, "x", 2);
  check_out(y, op, "y", 2);
  same_shape(x, "x", y, "y", op);
  const int64_t rows = x.shape(0), n = x.shape(1);
  if (rows == 0 || n == 0) return;
  const float* px = txb::cptr(x);
  float* py_ = txb::mptr(y);
  py::gil_scoped_release release;
  TX_DISPATCH(softmax_forward)(px, py_, rows, n);
}

void softmax_backward_py(const py::array& dy, const py::array& y, py::array& dx) {
  const char* op = "_core.softmax_backward";
  check_in(dy, op, "dy", 2);
  check_in(y, op, "y", 2);
  check_out(dx, op, "dx", 2);
  same_shape(dy, "dy", y, "y", op);
  same_shape(dy, "dy", dx, "dx", op);
  const int64_t rows = y.shape(0), n = y.shape(1);
  if (rows == 0 || n == 0) return;
  const float *pdy = txb::cptr(dy), *pyv = txb::cptr(y);
  float* pdx = txb::mptr(dx);
  py::gil_scoped_release release;
  TX_DISPATCH(softmax_backward)(pdy, pyv, pdx, rows, n);
}

void layer_norm_forward_py(const py::array& x, const py::array& gamma, const py::array& beta, float eps,
                           py::array& y, py::array& mean, py::array& rstd) {
  const char* op = "_core.layer_norm_forward";
  check_in(x, op, "x", 2);
  check_in(gamma, op, "gamma", 1);
  check_in(beta, op, "beta", 1);
  check_out(y, op, "y", 2);
  check_out(mean, op, "mean", 1);
  check_out(rstd, op, "rstd", 1);
  const int64_t rows = x.shape(0), n = x.shape(1);
  check_len(gamma, "gamma", n, "x's last axis", op);
  check_len(beta, "beta", n, "x's last axis", op);
  same_shape(x, "x", y, "y", op);
  check_len(mean, "mean", rows, "x's rows", op);
  check_len(rstd, "rstd", rows, "x's rows", op);
  if (rows == 0) return;
  if (n == 0) throw py::value_error(std::string(op) + ": rows of length 0 have no mean");
  const float *px = txb::cptr(x), *pg = txb::cptr(gamma), *pb = txb::cptr(beta);
  float *pyv = txb::mptr(y), *pm = txb::mptr(mean), *pr = txb::mptr(rstd);
  py::gil_scoped_release release;
  TX_DISPATCH(layer_norm_forward)(px, pg, pb, eps, rows, n, pyv, pm, pr);
}

void layer_norm_backward_py(const py::array& dy, const py::array& x, const py::array& gamma,
                            const py::array& mean, const py::array& rstd, py::array& dx, py::array& dgamma,
                            py::array& dbeta) {
  const char* op = "_core.layer_norm_backward";
  check_in(dy, op, "dy", 2);
  check_in(x, op, "x", 2);
  check_in(gamma, op, "gamma", 1);
  check_in(mean, op, "mean", 1);
  check_in(rstd, op, "rstd", 1);
  check_out(dx, op, "dx", 2);
  check_out(dgamma, op, "dgamma", 1);
  check_out(dbeta, op, "dbeta", 1);
  const int64_t rows = x.shape(0), n = x.shape(1);
  same_shape(dy, "dy", x, "x", op);
  same_shape(dx, "dx", x, "x", op);
  check_len(gamma, "gamma", n, "x's last axis", op);
  check_len(mean, "mean", rows, "x's rows", op);
  check_len(rstd, "rstd", rows, "x's rows", op);
  check_len(dgamma, "dgamma", n, "x's last axis", op);
  check_len(dbeta, "dbeta", n, "x's last axis", op);
  if (n == 0) return;
  const float *pdy = txb::cptr(dy), *px = txb::cptr(x), *pg = txb::cptr(gamma), *pm = txb::cptr(mean),
              *pr = txb::cptr(rstd);
  float *pdx = txb::mptr(dx), *pdg = txb::mptr(dgamma), *pdb = txb::mptr(dbeta);
  py::gil_scoped_release release;
  TX_DISPATCH(layer_norm_backward)(pdy, px, pg, pm, pr, rows, n, pdx, pdg, pdb);
}

void activation_forward_py(int act, const py::array& x, py::array& y) {
  const char* op = "_core.activation_forward";
  check_act(act, op);
  check_in(x, op, "x", -1);
  check_out(y, op, "y", -1);
  same_shape(x, "x", y, "y", op);
  const int64_t n = (int64_t)x.size();
  if (n == 0) return;
  const float* px = txb::cptr(x);
  float* pyv = txb::mptr(y);
  py::gil_scoped_release release;
  TX_DISPATCH(activation_forward)(act, px, pyv, n);
}

void activation_backward_py(int act, const py::array& dy, const py::array& x, py::array& dx) {
  const char* op = "_core.activation_backward";
  check_act(act, op);
  check_in(dy, op, "dy", -1);
  check_in(x, op, "x", -1);
  check_out(dx, op, "dx", -1);
  same_shape(dy, "dy", x, "x", op);
  same_shape(dx, "dx", x, "x", op);
  const int64_t n = (int64_t)x.size();
  if (n == 0) return;
  const float *pdy = txb::cptr(dy), *px = txb::cptr(x);
  float* pdx = txb::mptr(dx);
  py::gil_scoped_release release;
  TX_DISPATCH(activation_backward)(act, pdy, px, pdx, n);
}

py::array vmath_py(const std::string& name, const py::array& x) {
  const char* op = "_core.vmath";
  int which;
  if (name == "exp") which = 0;
  else if (name == "tanh") which = 1;
  else if (name == "erf") which = 2;
  else if (name == "erfc") which = 3;
  else if (name == "exp_le0") which = 4;
  else throw py::value_error(std::string(op) + ": unknown function '" + name + "' (expected exp, tanh, erf, erfc, exp_le0)");
  check_in(x, op, "x", -1);
  py::array_t<float> y(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  const int64_t n = (int64_t)x.size();
  if (n == 0) return std::move(y);
  const float* px = txb::cptr(x);
  float* pyv = y.mutable_data();
  {
    py::gil_scoped_release release;
    TX_DISPATCH(vmath_apply)(which, px, pyv, n);
  }
  return std::move(y);
}

}  // namespace

void bind_elementwise(py::module_& m) {
  m.attr("ACT_IDENTITY") = (int)tx::ACT_IDENTITY;
  m.attr("ACT_RELU") = (int)tx::ACT_RELU;
  m.attr("ACT_GELU_TANH") = (int)tx::ACT_GELU_TANH;
  m.attr("ACT_GELU_ERF") = (int)tx::ACT_GELU_ERF;
  m.def("softmax_forward", &softmax_forward_py, py::arg("x"), py::arg("y"),
        "y = softmax(x) over the rows of 2-D C-contiguous float32 x, written into y (same shape;\n"
        "may be x itself). A row of all -inf gives zeros.");
  m.def("softmax_backward", &softmax_backward_py, py::arg("dy"), py::arg("y"), py::arg("dx"),
        "dx = y * (dy - sum(dy * y, axis=1)) for 2-D C-contiguous float32 arrays of one shape.");
  m.def("layer_norm_forward", &layer_norm_forward_py, py::arg("x"), py::arg("gamma"), py::arg("beta"),
        py::arg("eps"), py::arg("y"), py::arg("mean"), py::arg("rstd"),
        "Row layer norm of x (rows, n): writes y (rows, n), mean (rows,), rstd (rows,) = 1/sqrt(var + eps)\n"
        "(biased variance). gamma, beta: (n,). All float32, C-contiguous.");
  m.def("layer_norm_backward", &layer_norm_backward_py, py::arg("dy"), py::arg("x"), py::arg("gamma"),
        py::arg("mean"), py::arg("rstd"), py::arg("dx"), py::arg("dgamma"), py::arg("dbeta"),
        "Writes dx (rows, n), dgamma (n,), dbeta (n,) (overwritten) from dy, x (rows, n), gamma (n,),\n"
        "and the forward's mean, rstd (rows,). Deterministic whatever the thread count.");
  m.def("activation_forward", &activation_forward_py, py::arg("act"), py::arg("x"), py::arg("y"),
        "y = act(x) element-wise (act: ACT_IDENTITY, ACT_RELU, ACT_GELU_TANH, ACT_GELU_ERF); x, y\n"
        "C-contiguous float32 of one shape (any ndim; y may be x).");
  m.def("activation_backward", &activation_backward_py, py::arg("act"), py::arg("dy"), py::arg("x"),
        py::arg("dx"), "dx = dy * act'(x) element-wise; dy, x, dx C-contiguous float32 of one shape.");
  m.def("vmath", &vmath_py, py::arg("name"), py::arg("x"),
        "Test hook: returns f(x) element-wise for f in {exp, tanh, erf, erfc, exp_le0}, evaluated by\n"
        "the kernels' vectorised float32 math (cpp/kernels/vmath.h) under the current ISA variant;\n"
        "exp_le0 is exp(min(x, 0)) by vexp_le0, the form the kernels call.");
}
