// The pybind11 module `transformer_ext._core`: runtime control (ISA, threads) here,
// each op family's bindings in its own bind_*.cpp.
#include <stdexcept>

#include "common.h"
#include "tx/cpu.h"
#include "tx/amx.h"
#include "tx/dispatch.h"

void bind_gemm(py::module_& m);
void bind_attention(py::module_& m);
void bind_elementwise(py::module_& m);
void bind_training(py::module_& m);
void bind_probes(py::module_& m);
void bind_tokenizers(py::module_& m);
void bind_models(py::module_& m);

PYBIND11_MODULE(_core, m) {
  m.doc() = "transformer_ext C++ kernels (SIMD + OpenMP, runtime ISA dispatch)";
  m.def("cpu_features", [] { return tx::cpu_features().names(); },
        "CPU features detected with cpuid (and enabled by the OS).");
  m.def("best_isa", [] { return std::string(tx::isa_name(tx::best_supported_isa())); });
  m.def("get_isa", [] { return std::string(tx::isa_name(tx::current_isa())); });
  m.def("set_isa", [](const std::string& name) {
    try {
      tx::set_isa(name);
    } catch (const std::invalid_argument& e) {
      throw py::value_error(e.what());
    }
  });
  m.def("l2_cache_bytes", &tx::l2_cache_bytes,
        "L2 cache bytes per core as the OS reports it (0: unknown; env TX_L2_BYTES overrides).");
  m.def("get_num_threads", &tx::num_threads);
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("set_num_threads: n must be >= 1");
    tx::set_num_threads(n);
  });
  m.def("has_openmp", [] {
#ifdef TX_HAVE_OPENMP
    return true;
#else
    return false;
#endif
  });
  // The AMX path of bf16 pre-packed GEMMs (tx/amx.h): only the AVX-512
  // variant uses it, so the check never runs AMX-compiled code on another variant.
  m.def("amx_active", [] { return tx::current_isa() == tx::Isa::avx512 && tx::amx::usable(); },
        "True when bf16 pre-packed GEMMs (M > 16) run on AMX tiles (CPU, OS and build allow it,\n"
        "the avx512 variant is in use, and set_amx(False) was not called).");
  m.def("set_amx", &tx::amx::set_allowed, py::arg("allowed"),
        "Allow (default) or forbid the AMX path; tests compare it with the AVX-512 path.");
  m.def("set_fast_f32", &tx::amx::set_fast_f32, py::arg("on"),
        "Matmul precision 'high' (on) or 'highest' (off, default): whether fp32 gemm() calls past\n"
        "the skinny paths (M >= 48, and > 64 with trans_b) run on AMX tiles as three bf16 products\n"
        "(tx/amx.h). No effect without AMX.");
  m.def("fast_f32", &tx::amx::fast_f32);
  bind_gemm(m);
  bind_attention(m);
  bind_elementwise(m);
  bind_training(m);
  bind_probes(m);
  bind_tokenizers(m);
  bind_models(m);
}
