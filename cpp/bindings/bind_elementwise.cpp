#include "common.h"
#include "tx/kernels.h"

void bind_elementwise(py::module_& m) { (void)m; }
