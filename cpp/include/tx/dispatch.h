// Runtime ISA dispatch and the process-wide thread count.
//
// Every kernel file in cpp/kernels/ is compiled once per ISA variant with different
// compiler flags and -DTX_ISA_NS=<variant>, so its functions land in
// tx::scalar, tx::avx2 or tx::avx512. A family header declares its kernels for every
// variant with TX_DECLARE_FOR_EACH_ISA, and callers go through TX_DISPATCH(fn), which
// picks the variant selected at import (or by tx.set_isa) — like ggml's CPU backend
// variants, but inside one shared object.
//
// Rule for kernel files (keeps the variants apart): no std:: templates or other inline
// functions with external linkage inside kernel code (std::min, std::vector, ...).
// The linker merges identical inline instantiations across the three builds and
// could keep the AVX-512 one for the scalar path. Use helpers with internal linkage
// (static or an anonymous namespace) and C functions (expf, sqrtf, ...).
#pragma once
#include <cstddef>
#include <cstdint>
#if defined(_OPENMP)
#include <omp.h>
#endif

#ifndef TX_X86
#define TX_X86 0
#endif

namespace tx {

enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2 };

Isa current_isa();            // the variant in use
Isa best_supported_isa();     // the best variant this CPU (and build) can run
const char* isa_name(Isa isa);

// Process-wide thread count for every parallel region (OpenMP num_threads clause).
int num_threads();
void set_num_threads(int n);

// Scratch for packed GEMM operands: `bytes` (64-byte aligned) of the calling thread's
// grow-only buffer number `slot`, kept until the thread ends and reused by its next call
// with that slot (the caller must not hold two uses of one slot at once). Why: buffers of
// megabytes allocated per call come back as fresh pages that fault on first touch — for
// the fp32 GEMM 130-260 faults a call at 512-1024 rows, ~15% of the AMX product at the LM
// head's 150 MiB. Throws std::bad_alloc (outside parallel regions only).
enum ScratchSlot : int { SCRATCH_GEMM = 0, SCRATCH_GEMM_TILES = 1, SCRATCH_TILE_SUMS = 2, SCRATCH_SLOTS = 3 };
void* thread_scratch(int slot, size_t bytes);

template <class F>
inline F pick_variant(F scalar_fn, F avx2_fn, F avx512_fn) {
  switch (current_isa()) {
    case Isa::avx512: return avx512_fn;
    case Isa::avx2: return avx2_fn;
    default: return scalar_fn;
  }
}

}  // namespace tx

#if TX_X86
#define TX_DECLARE_FOR_EACH_ISA(decls) \
  namespace scalar { decls }           \
  namespace avx2 { decls }             \
  namespace avx512 { decls }
#define TX_DISPATCH(fn) ::tx::pick_variant(&::tx::scalar::fn, &::tx::avx2::fn, &::tx::avx512::fn)
#else
#define TX_DECLARE_FOR_EACH_ISA(decls) \
  namespace scalar { decls }
#define TX_DISPATCH(fn) (&::tx::scalar::fn)
#endif

// Inside kernel files: `namespace tx { namespace TX_ISA_NS { ... } }`.
// OpenMP helper: a parallel-for over [0, n) with the process-wide thread count, only
// forking when there is enough work (fork/join costs microseconds).
#if defined(_OPENMP)
#define TX_PRAGMA(x) _Pragma(#x)
#define TX_OMP_FOR(work) TX_PRAGMA(omp parallel for schedule(static) num_threads(::tx::threads_for(work)))
#else
#define TX_OMP_FOR(work)
#endif

namespace tx {
// Threads to use for a loop doing `work` scalar operations: 1 below ~32k (a fork/join
// costs more than the work), else the process-wide count. Deterministic results never
// depend on this: loops split output elements, never one reduction.
static inline int threads_for(int64_t work) { return work < (1 << 15) ? 1 : num_threads(); }

// Inside a parallel region: this thread's contiguous, balanced share [lo, hi) of n items
// (all of them outside a region or without OpenMP).
static inline void team_share(int64_t n, int64_t& lo, int64_t& hi) {
  int64_t t = 0, T = 1;
#if defined(_OPENMP)
  t = omp_get_thread_num();
  T = omp_get_num_threads();
#endif
  lo = n * t / T;
  hi = n * (t + 1) / T;
}
}  // namespace tx
