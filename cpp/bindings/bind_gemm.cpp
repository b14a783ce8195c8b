#include "common.h"
#include "tx/kernels.h"

void bind_gemm(py::module_& m) { (void)m; }
