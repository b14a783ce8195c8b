#include "common.h"

void bind_tokenizers(py::module_& m) { (void)m; }
