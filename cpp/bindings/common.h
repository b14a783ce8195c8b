// Shared helpers for the pybind11 bindings: argument checks that turn bad input into
// Python exceptions (never a crash) and zero-copy access to NumPy buffers.
//
// Bindings derive every size and stride from the arrays themselves, so a wrong call
// from Python can raise but never read out of bounds. Friendlier messages (argument
// names, expected shapes) come from the Python layer in transformer_ext/ops, which
// validates first; these checks are the last line of defence.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

namespace py = pybind11;

namespace txb {

inline std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    if (i) s += ", ";
    s += std::to_string(a.shape(i));
  }
  if (a.ndim() == 1) s += ",";
  return s + ")";
}

// A float32 array with `ndim` dims whose last axis is unit-stride (other strides free).
inline void check_f32(const py::array& a, const char* op, const char* name, py::ssize_t ndim) {
  if (!py::isinstance<py::array_t<float>>(a) || a.dtype().kind() != 'f' || a.itemsize() != 4) {
    throw py::type_error(std::string(op) + ": '" + name + "' must be float32, got " +
                         std::string(py::str(a.dtype())));
  }
  if (a.ndim() != ndim) {
    throw py::value_error(std::string(op) + ": '" + name + "' must have " + std::to_string(ndim) +
                          " dims, got shape " + shape_str(a));
  }
  if (a.size() == 0) return;  // NumPy 2 gives empty arrays zero strides: nothing to read
  for (py::ssize_t i = 0; i < ndim; ++i) {
    if (a.strides(i) % 4 != 0) throw py::value_error(std::string(op) + ": '" + name + "' is misaligned");
  }
  if (ndim > 0 && a.shape(ndim - 1) > 1 && a.strides(ndim - 1) != 4) {
    throw py::value_error(std::string(op) + ": '" + name + "' must be unit-stride on its last axis");
  }
}

// Same, and writable + C-contiguous (outputs).
inline void check_out(const py::array& a, const char* op, const char* name, py::ssize_t ndim) {
  check_f32(a, op, name, ndim);
  if (!a.writeable()) throw py::value_error(std::string(op) + ": '" + name + "' is read-only");
  if (!(a.flags() & py::array::c_style)) {
    throw py::value_error(std::string(op) + ": '" + name + "' must be C-contiguous");
  }
}

inline const float* cptr(const py::array& a) { return static_cast<const float*>(a.data()); }
inline float* mptr(py::array& a) { return static_cast<float*>(a.mutable_data()); }
// Stride of axis i in elements (4-byte floats).
inline int64_t stride(const py::array& a, py::ssize_t i) { return a.strides(i) / 4; }

inline void check_shape(bool ok, const char* op, const std::string& what) {
  if (!ok) throw py::value_error(std::string(op) + ": " + what);
}

}  // namespace txb
