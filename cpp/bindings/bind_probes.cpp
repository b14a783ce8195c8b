// Bench-only probes: the machine's sustained FMA rate and read bandwidth, measured by
// the same ISA variant and thread count the kernels use (transformer_ext/bench.py).
#include "common.h"
#include "tx/kernels.h"

void bind_probes(py::module_& m) {
  m.def(
      "probe_fma",
      [](int64_t iters) {
        if (iters < 0) throw py::value_error("probe_fma: iters must be >= 0");
        py::gil_scoped_release release;
        return TX_DISPATCH(probe_fma)(iters);
      },
      py::arg("iters"),
      "Run `iters` rounds of independent FMA chains on every thread; returns the flops "
      "performed (2 per lane per FMA, all threads). Divide by the wall time for GFLOP/s.");
  m.def(
      "probe_read",
      [](const py::array& x, int reps) {
        txb::check_f32(x, "probe_read", "x", 1);
        if (reps < 1) throw py::value_error("probe_read: reps must be >= 1");
        const float* p = txb::cptr(x);
        const int64_t n = x.shape(0);
        py::gil_scoped_release release;
        return TX_DISPATCH(probe_read)(p, n, reps);
      },
      py::arg("x"), py::arg("reps"),
      "Sum the float32 vector `x` `reps` times, threads reading disjoint chunks; returns "
      "a checksum. Bytes read = 4 * x.size * reps.");
  m.def(
      "probe_copy",
      [](const py::array& x, py::array& y, int reps) {
        txb::check_f32(x, "probe_copy", "x", 1);
        txb::check_out(y, "probe_copy", "y", 1);
        if (y.shape(0) != x.shape(0)) throw py::value_error("probe_copy: x and y must have the same size");
        if (reps < 1) throw py::value_error("probe_copy: reps must be >= 1");
        const float* p = txb::cptr(x);
        float* q = txb::mptr(y);
        const int64_t n = x.shape(0);
        if (n > 0 && p < q + n && q < p + n) throw py::value_error("probe_copy: x and y must not overlap");
        py::gil_scoped_release release;
        TX_DISPATCH(probe_copy)(p, q, n, reps);
      },
      py::arg("x"), py::arg("y"), py::arg("reps"),
      "y[:] = x, `reps` times, threads copying disjoint chunks with streaming stores. Bytes "
      "moved = 8 * x.size * reps (read + write).");
}
