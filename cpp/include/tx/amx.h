// The AMX path of the pre-packed bf16 GEMM (cpp/kernels/gemm_amx.cpp): Intel's tile
// unit (Sapphire Rapids and later) multiplies bf16 tiles at ~3x the AVX-512 FP32 FMA rate
// measured here, so prompt pre-fill with bf16 weights runs on it when the CPU and the OS
// allow it. Compiled once (not per ISA variant) with AMX flags; only the AVX-512 variant
// of gemm_prepacked calls it, after usable() said yes.
#pragma once
#include <cstdint>

namespace tx {
namespace amx {

// The CPU has AMX-BF16 (and AVX512-BF16), the kernel granted this process the tile state
// (Linux arch_prctl ARCH_REQ_XCOMP_PERM, asked once), the build has the AMX code, and
// set_allowed(false) was not called.
bool usable();
void set_allowed(bool allowed);  // tests compare the AMX and the AVX-512 paths with it

// Matmul precision "high" (off by default): fp32 GEMMs of >= 48 rows, more than the skinny
// paths take, plain or with pre-packed weights, run on the tiles as three bf16 products
// per term (f32_gemm, f32_gemm_prepacked).
void set_fast_f32(bool on);
bool fast_f32();

// C = (accumulate ? C : 0) + bias + op(A)·W for W pre-packed bf16 (pack_weight's layout,
// dtype 1). A is split into two bf16 terms a = hi + lo (+ an error <= 2^-16·|a|), both
// multiplied by W on the tiles with fp32 accumulation; see gemm_amx.cpp for the numerics.
void bf16_gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const uint16_t* Wp,
               const float* bias, float* C, int64_t ldc, bool accumulate);

// C = (accumulate ? C : 0) + bias + op(A)·op(B), all fp32, as gemm() (tx/kernels.h) but with
// each operand split into bf16 hi + lo terms and the products a_hi·b_hi + a_lo·b_hi +
// a_hi·b_lo summed in fp32 on the tiles ("bf16x3", ~16 significant bits per operand).
void f32_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
              const float* B, int64_t ldb, const float* bias, float* C, int64_t ldc, bool accumulate);
// The same for fp32 weights pre-packed by pack_weight (dtype 0: K×32 fp32 panels).
void f32_gemm_prepacked(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* Wp,
                        const float* bias, float* C, int64_t ldc, bool accumulate);

}  // namespace amx
}  // namespace tx
