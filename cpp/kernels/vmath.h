// Vectorisable math for kernel files (exp, tanh, erf): static inline = internal
// linkage, so each ISA variant gets its own copy (see tx/dispatch.h).
// (stub: being written)
#pragma once
#include <cmath>
