#include "tx/kernels.h"

namespace tx {
namespace TX_ISA_NS {}  // namespace TX_ISA_NS
}  // namespace tx
