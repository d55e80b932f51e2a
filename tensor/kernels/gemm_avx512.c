/* AVX-512 GEMM: the body of gemm_body.h on 512-bit vectors (6×32 f32 and 6×16 f64 tiles).
   Only the GEMM has an AVX-512 version; the avx512 kernel table takes every other kernel
   from the AVX2 set. */
#include "simd_avx512.h"

#include "gemm_body.h"

void bilo__fill_gemm_avx512(bilo_kernels *k)
{
    k->gemm_f32 = gemm_f32;
    k->gemm_f64 = gemm_f64;
}
