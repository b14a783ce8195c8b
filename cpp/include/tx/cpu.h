// CPU feature detection (cpuid + xgetbv on x86; nothing elsewhere).
#pragma once
#include <string>
#include <vector>

namespace tx {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false;
  bool avx512_bf16 = false, avx512_vnni = false, avx_vnni = false, amx_bf16 = false;
  std::vector<std::string> names() const;  // the ones present, e.g. {"avx2", "fma", ...}
};

const CpuFeatures& cpu_features();
// Bytes of L2 cache per core as the OS reports it (0: unknown). Env TX_L2_BYTES, read once,
// overrides it (to see the blocking another CPU would get). Sizes the GEMM's B block.
long l2_cache_bytes();
// Sets the variant; throws std::invalid_argument if unknown or unsupported here.
void set_isa(const std::string& name);

}  // namespace tx
