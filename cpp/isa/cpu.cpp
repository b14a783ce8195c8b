// Runtime CPU-feature detection and variant selection.
#include <atomic>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>

#include "tx/cpu.h"
#include "tx/dispatch.h"

#if TX_X86
#include <cpuid.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace tx {

namespace {

CpuFeatures detect() {
  CpuFeatures f;
#if TX_X86
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27);
  f.fma = c & (1u << 12);
  f.f16c = c & (1u << 29);
  const bool avx = c & (1u << 28);
  // The OS must save the wide registers on context switch (XCR0), or using them is
  // unsafe even when cpuid lists the instructions.
  unsigned long long xcr0 = 0;
  if (osxsave) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    xcr0 = (static_cast<unsigned long long>(hi) << 32) | lo;
  }
  const bool os_ymm = (xcr0 & 0x6) == 0x6;
  const bool os_zmm = os_ymm && (xcr0 & 0xe0) == 0xe0;
  if (!avx || !os_ymm) {
    f.fma = f.f16c = false;
    return f;
  }
  unsigned max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    f.avx2 = b & (1u << 5);
    if (os_zmm) {
      f.avx512f = b & (1u << 16);
      f.avx512dq = b & (1u << 17);
      f.avx512bw = b & (1u << 30);
      f.avx512vl = b & (1u << 31);
      f.avx512_vnni = c & (1u << 11);
    }
    f.amx_bf16 = d & (1u << 22);
    __cpuid_count(7, 1, a, b, c, d);
    f.avx_vnni = a & (1u << 4);
    if (os_zmm) f.avx512_bf16 = a & (1u << 5);
  }
#endif
  return f;
}

Isa best_isa_for(const CpuFeatures& f) {
#if TX_X86
  if (f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl && f.avx2 && f.fma) return Isa::avx512;
  if (f.avx2 && f.fma) return Isa::avx2;
#else
  (void)f;
#endif
  return Isa::scalar;
}

std::atomic<int> g_isa{-1};
std::atomic<int> g_threads{0};

}  // namespace

std::vector<std::string> CpuFeatures::names() const {
  std::vector<std::string> out;
  auto add = [&](bool on, const char* n) { if (on) out.emplace_back(n); };
  add(avx2, "avx2"); add(fma, "fma"); add(f16c, "f16c");
  add(avx512f, "avx512f"); add(avx512bw, "avx512bw"); add(avx512dq, "avx512dq");
  add(avx512vl, "avx512vl"); add(avx512_bf16, "avx512_bf16"); add(avx512_vnni, "avx512_vnni");
  add(avx_vnni, "avx_vnni"); add(amx_bf16, "amx_bf16");
  return out;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

Isa best_supported_isa() { return best_isa_for(cpu_features()); }

Isa current_isa() {
  int v = g_isa.load(std::memory_order_relaxed);
  if (v < 0) {
    v = static_cast<int>(best_supported_isa());
    g_isa.store(v, std::memory_order_relaxed);
  }
  return static_cast<Isa>(v);
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "scalar";
  }
}

void set_isa(const std::string& name) {
  Isa want;
  if (name == "scalar") want = Isa::scalar;
  else if (name == "avx2") want = Isa::avx2;
  else if (name == "avx512") want = Isa::avx512;
  else throw std::invalid_argument("set_isa: unknown ISA '" + name + "' (expected 'scalar', 'avx2' or 'avx512')");
  const Isa best = best_supported_isa();
  if (static_cast<int>(want) > static_cast<int>(best)) {
    throw std::invalid_argument("set_isa: '" + name + "' is not supported by this CPU or build (best available: '" +
                                isa_name(best) + "')");
  }
  g_isa.store(static_cast<int>(want), std::memory_order_relaxed);
}

int num_threads() {
  int n = g_threads.load(std::memory_order_relaxed);
  if (n <= 0) {
#ifdef _OPENMP
    n = omp_get_max_threads();
#else
    n = 1;
#endif
    g_threads.store(n, std::memory_order_relaxed);
  }
  return n;
}

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("set_num_threads: n must be >= 1, got " + std::to_string(n));
  g_threads.store(n, std::memory_order_relaxed);
}

void* thread_scratch(int slot, size_t bytes) {
  struct Buffers {
    void* p[SCRATCH_SLOTS] = {};
    size_t bytes[SCRATCH_SLOTS] = {};
    ~Buffers() {
      for (void* q : p) std::free(q);
    }
  };
  thread_local Buffers buf;
  bytes = ((bytes > 0 ? bytes : 1) + 63) & ~(size_t)63;
  if (bytes > buf.bytes[slot]) {
    std::free(buf.p[slot]);
    buf.p[slot] = nullptr, buf.bytes[slot] = 0;
    buf.p[slot] = std::aligned_alloc(64, bytes);
    if (!buf.p[slot]) throw std::bad_alloc();
    buf.bytes[slot] = bytes;
  }
  return buf.p[slot];
}

long l2_cache_bytes() {
  static const long bytes = [] {
    if (const char* e = std::getenv("TX_L2_BYTES")) {
      const long v = std::atol(e);
      if (v > 0) return v;
    }
#if defined(_SC_LEVEL2_CACHE_SIZE)  // glibc: from cpuid's cache descriptors
    const long v = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (v > 0) return v;
#endif
    return 0L;
  }();
  return bytes;
}

}  // namespace tx
