// Bindings for the training kernels: embedding, cross-entropy, AdamW.
//
// Outputs are allocated by the Python layer (ops/training.py) and passed in. Every
// size comes from the arrays; ids and targets are range-checked here, before the GIL
// is released, because an out-of-range id would read (or write) outside the table.
#include <cmath>
#include <string>

#include "common.h"
#include "tx/kernels.h"

namespace {

// A C-contiguous int64 array with `ndim` dims.
void check_i64(const py::array& a, const char* op, const char* name, py::ssize_t ndim) {
  if (a.dtype().kind() != 'i' || a.itemsize() != 8) {
    throw py::type_error(std::string(op) + ": '" + name + "' must be int64, got " +
                         std::string(py::str(a.dtype())));
  }
  if (a.ndim() != ndim) {
    throw py::value_error(std::string(op) + ": '" + name + "' must have " + std::to_string(ndim) +
                          " dims, got shape " + txb::shape_str(a));
  }
  if (!(a.flags() & py::array::c_style)) {
    throw py::value_error(std::string(op) + ": '" + name + "' must be C-contiguous");
  }
}

// Float32, C-contiguous (the kernels take dense rows).
void check_dense(const py::array& a, const char* op, const char* name, py::ssize_t ndim) {
  txb::check_f32(a, op, name, ndim);
  if (!(a.flags() & py::array::c_style)) {
    throw py::value_error(std::string(op) + ": '" + name + "' must be C-contiguous");
  }
}

// Every id in [0, upper) (or equal to `skip` when allow_skip).
void check_range(const int64_t* ids, int64_t n, int64_t upper, const char* op, const char* name,
                 bool allow_skip = false, int64_t skip = 0) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = ids[i];
    if ((id < 0 || id >= upper) && !(allow_skip && id == skip)) {
      throw py::value_error(std::string(op) + ": '" + name + "' has id " + std::to_string(id) +
                            " at position " + std::to_string(i) + ", out of range [0, " +
                            std::to_string(upper) + ")");
    }
  }
}

// A flat float32 buffer for adamw: any ndim, C-contiguous, `n` elements.
void check_flat(const py::array& a, const char* name, bool writable, py::ssize_t n,
                const py::array& ref, const char* op = "adamw_step") {
  if (a.dtype().kind() != 'f' || a.itemsize() != 4) {
    throw py::type_error(std::string(op) + ": '" + name + "' must be float32, got " +
                         std::string(py::str(a.dtype())));
  }
  if (!(a.flags() & py::array::c_style)) {
    throw py::value_error(std::string(op) + ": '" + name + "' must be C-contiguous");
  }
  if (writable && !a.writeable()) {
    throw py::value_error(std::string(op) + ": '" + name + "' is read-only");
  }
  bool same = a.ndim() == ref.ndim() && a.size() == n;
  for (py::ssize_t i = 0; same && i < a.ndim(); ++i) same = a.shape(i) == ref.shape(i);
  if (!same) {
    throw py::value_error(std::string(op) + ": '" + name + "' has shape " + txb::shape_str(a) +
                          " but 'params' has shape " + txb::shape_str(ref));
  }
}

}  // namespace

void bind_training(py::module_& m) {
  m.def(
      "embedding_forward",
      [](py::array ids, py::array table, py::array out) {
        const char* op = "embedding_forward";
        check_i64(ids, op, "ids", 1);
        check_dense(table, op, "table", 2);
        txb::check_out(out, op, "out", 2);
        const int64_t n = ids.shape(0), V = table.shape(0), d = table.shape(1);
        txb::check_shape(out.shape(0) == n && out.shape(1) == d, op,
                         "'out' has shape " + txb::shape_str(out) + ", expected (" +
                             std::to_string(n) + ", " + std::to_string(d) + ")");
        const int64_t* pids = static_cast<const int64_t*>(ids.data());
        check_range(pids, n, V, op, "ids");
        const float* ptab = txb::cptr(table);
        float* pout = txb::mptr(out);
        py::gil_scoped_release release;
        TX_DISPATCH(embedding_forward)(pids, n, ptab, d, pout);
      },
      py::arg("ids"), py::arg("table"), py::arg("out"),
      "out[i] = table[ids[i]]; ids int64 (n,), table float32 (V, d), out (n, d).");

  m.def(
      "embedding_backward",
      [](py::array dy, py::array ids, py::array dtable) {
        const char* op = "embedding_backward";
        check_dense(dy, op, "dy", 2);
        check_i64(ids, op, "ids", 1);
        txb::check_out(dtable, op, "dtable", 2);
        const int64_t n = ids.shape(0), V = dtable.shape(0), d = dtable.shape(1);
        txb::check_shape(dy.shape(0) == n && dy.shape(1) == d, op,
                         "'dy' has shape " + txb::shape_str(dy) + ", expected (" +
                             std::to_string(n) + ", " + std::to_string(d) + ")");
        const int64_t* pids = static_cast<const int64_t*>(ids.data());
        check_range(pids, n, V, op, "ids");
        const float* pdy = txb::cptr(dy);
        float* pdt = txb::mptr(dtable);
        py::gil_scoped_release release;
        TX_DISPATCH(embedding_backward)(pdy, pids, n, d, pdt);
      },
      py::arg("dy"), py::arg("ids"), py::arg("dtable"),
      "dtable (V, d) += scatter-add of dy (n, d) rows at ids (n,); repeated ids accumulate.");

  m.def(
      "cross_entropy",
      [](py::array logits, py::array targets, int64_t ignore_index, double label_smoothing,
         double grad_scale, py::array row_loss, py::array dlogits) {
        const char* op = "cross_entropy";
        check_dense(logits, op, "logits", 2);
        check_i64(targets, op, "targets", 1);
        txb::check_out(row_loss, op, "row_loss", 1);
        txb::check_out(dlogits, op, "dlogits", 2);
        const int64_t N = logits.shape(0), V = logits.shape(1);
        txb::check_shape(targets.shape(0) == N, op,
                         "'targets' has shape " + txb::shape_str(targets) +
                             " but 'logits' has shape " + txb::shape_str(logits));
        txb::check_shape(row_loss.shape(0) == N, op,
                         "'row_loss' has shape " + txb::shape_str(row_loss) + ", expected (" +
                             std::to_string(N) + ",)");
        txb::check_shape(dlogits.shape(0) == N && dlogits.shape(1) == V, op,
                         "'dlogits' has shape " + txb::shape_str(dlogits) +
                             " but 'logits' has shape " + txb::shape_str(logits));
        txb::check_shape(label_smoothing >= 0.0 && label_smoothing <= 1.0, op,
                         "label_smoothing must be in [0, 1], got " + std::to_string(label_smoothing));
        txb::check_shape(std::isfinite(grad_scale), op, "grad_scale must be finite");
        const int64_t* pt = static_cast<const int64_t*>(targets.data());
        check_range(pt, N, V, op, "targets", true, ignore_index);
        const float* px = txb::cptr(logits);
        float* pl = txb::mptr(row_loss);
        float* pd = txb::mptr(dlogits);
        py::gil_scoped_release release;
        TX_DISPATCH(cross_entropy)(px, N, V, pt, ignore_index, (float)label_smoothing,
                                   (float)grad_scale, pl, pd);
      },
      py::arg("logits"), py::arg("targets"), py::arg("ignore_index"), py::arg("label_smoothing"),
      py::arg("grad_scale"), py::arg("row_loss"), py::arg("dlogits"),
      "Per-row loss (N,) and grad_scale-scaled dlogits (N, V) of softmax cross-entropy.");

  m.def(
      "adamw_step",
      [](py::array p, py::array g, py::array mom, py::array var, int64_t step, double lr,
         double beta1, double beta2, double eps, double weight_decay) {
        const char* op = "adamw_step";
        const py::ssize_t n = p.size();
        check_flat(p, "params", true, n, p);
        check_flat(g, "grads", false, n, p);
        check_flat(mom, "m", true, n, p);
        check_flat(var, "v", true, n, p);
        txb::check_shape(step >= 1, op, "step must be >= 1, got " + std::to_string(step));
        const bool finite = std::isfinite(lr) && std::isfinite(beta1) && std::isfinite(beta2) &&
                            std::isfinite(eps) && std::isfinite(weight_decay);
        txb::check_shape(finite, op, "hyperparameters must be finite");
        float* pp = txb::mptr(p);
        const float* pg = txb::cptr(g);
        float* pm = txb::mptr(mom);
        float* pv = txb::mptr(var);
        py::gil_scoped_release release;
        TX_DISPATCH(adamw_step)(pp, pg, pm, pv, (int64_t)n, step, lr, beta1, beta2, eps,
                                weight_decay);
      },
      py::arg("p"), py::arg("g"), py::arg("m"), py::arg("v"), py::arg("step"), py::arg("lr"),
      py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"),
      "One AdamW step in place on float32 buffers of equal shape (PyTorch's arithmetic).");

  m.def(
      "fill_zero",
      [](py::array x) {
        check_flat(x, "x", true, x.size(), x, "fill_zero");
        float* px = txb::mptr(x);
        const int64_t n = (int64_t)x.size();
        py::gil_scoped_release release;
        TX_DISPATCH(fill_zero)(px, n);
      },
      py::arg("x"),
      "x[...] = 0 for a C-contiguous float32 array, on all threads, with non-temporal stores for\n"
      "large buffers (zero_grad of a model's flat gradient buffer).");
}
