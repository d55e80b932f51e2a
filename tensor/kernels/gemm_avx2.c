/* AVX2+FMA GEMM, f32 and f64 from one body: C = op(A)·op(B) (+ C when accumulating).

   Large products follow the GotoBLAS/BLIS loop nest: for each NC-wide column block of C and
   each KC-deep slice of k, op(B) is packed into NR-wide row panels (shared by all threads),
   then every thread takes a block of rows of C, packs its MC×KC block of op(A) into MR-tall
   column panels and runs the MR×NR register-blocked micro-kernel over it (6×16 for f32,
   6×8 for f64: 12 accumulators, 2 B vectors and one A broadcast fill 15 of the 16 ymm
   registers). Transposition is absorbed by the packing routines; edges are zero-padded in
   the packed panels, so the micro-kernel always runs full-size and only its store is
   clipped. Each element of C accumulates its k terms in the same order whichever thread or
   row block computes it, so the result does not depend on the thread count.
   Tiny products and matrix-vector shapes skip the packing: each row of C is built directly
   from op(A) and op(B). */
#include "kernels.h"
#include "simd_avx2.h"
#include "tensor_impl.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define MR 6
#define KC 256
/* Rows per packed A block, columns per packed B block (multiples of MR and NR). */
#define MC_f32 168
#define MC_f64 72
#define NC_f32 4080
#define NC_f64 4080
#define NR_f32 16
#define NR_f64 8
/* Below this many multiply-adds (about 20^3) packing costs more than it saves. Vector
   shapes (m = 1, or n = 1 with rows of op(A) contiguous) also skip it: a 6×16 tile would be
   mostly padding, while the unpacked path streams the matrix once. */
#define SMALL_WORK 8192

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

static inline int thread_index(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* op(A)[i][p] */
#define OPA(i, p) (trans_a ? A[(p) * lda + (i)] : A[(i) * lda + (p)])

/* One step of the micro-kernel for row r: c_r0..c_r1 += a[r] * (b0, b1). */
#define MICRO_ROW_(S, r)                           \
    {                                              \
        const VEC_##S ar = BROADCAST_##S(a + (r)); \
        c##r##0 = FMADD_##S(ar, b0, c##r##0);      \
        c##r##1 = FMADD_##S(ar, b1, c##r##1);      \
    }
/* Row r of the finished tile into C, added to what is there unless overwrite. */
#define MICRO_STORE_(T, S, r)                                                          \
    {                                                                                  \
        T *row = c + (r) * ldc;                                                        \
        if (overwrite) {                                                               \
            STOREU_##S(row, c##r##0);                                                  \
            STOREU_##S(row + LANES_##S, c##r##1);                                      \
        } else {                                                                       \
            STOREU_##S(row, ADD_##S(LOADU_##S(row), c##r##0));                         \
            STOREU_##S(row + LANES_##S, ADD_##S(LOADU_##S(row + LANES_##S), c##r##1)); \
        }                                                                              \
    }
/* Row r of the finished tile into the MR×NR buffer `tile`. */
#define MICRO_SPILL_(S, r)                                    \
    {                                                         \
        STOREU_##S(tile + (r) * NR_##S, c##r##0);             \
        STOREU_##S(tile + (r) * NR_##S + LANES_##S, c##r##1); \
    }

#define BILO_GEMM_AVX2_(T, S)                                                                 \
    /* Rows i0..i0+mc, columns p0..p0+kc of op(A) as MR-row panels: panel q holds             \
       op(A)[i0 + q*MR + r][p0 + p] at dst[q*MR*kc + p*MR + r], rows past mc zero. */         \
    static void pack_a_##S(bool trans_a, const T *A, int64_t lda, int64_t i0, int64_t mc,     \
                           int64_t p0, int64_t kc, T *restrict dst)                           \
    {                                                                                         \
        for (int64_t ir = 0; ir < mc; ir += MR) {                                             \
            const int64_t mr = min64(MR, mc - ir);                                            \
            T *panel = dst + ir * kc;                                                         \
            for (int64_t p = 0; p < kc; p++)                                                  \
                for (int64_t r = 0; r < MR; r++)                                              \
                    panel[p * MR + r] = r < mr ? OPA(i0 + ir + r, p0 + p) : 0;                \
        }                                                                                     \
    }                                                                                         \
    /* Panel starting at column j0 of op(B), rows p0..p0+kc: op(B)[p0 + p][j0 + j] at         \
       dst[p*NR + j], columns past nr zero. */                                                \
    static void pack_b_panel_##S(bool trans_b, const T *B, int64_t ldb, int64_t p0,           \
                                 int64_t kc, int64_t j0, int64_t nr, T *restrict dst)         \
    {                                                                                         \
        if (trans_b) {                                                                        \
            for (int64_t j = 0; j < NR_##S; j++)                                              \
                for (int64_t p = 0; p < kc; p++)                                              \
                    dst[p * NR_##S + j] = j < nr ? B[(j0 + j) * ldb + p0 + p] : 0;            \
            return;                                                                           \
        }                                                                                     \
        for (int64_t p = 0; p < kc; p++)                                                      \
            for (int64_t j = 0; j < NR_##S; j++)                                              \
                dst[p * NR_##S + j] = j < nr ? B[(p0 + p) * ldb + j0 + j] : 0;                \
    }                                                                                         \
    /* C[0..mr)[0..nr) (+)= packed A panel · packed B panel over kc. */                       \
    static void micro_kernel_##S(int64_t kc, const T *restrict a, const T *restrict b,        \
                                 T *c, int64_t ldc, int64_t mr, int64_t nr, bool overwrite)   \
    {                                                                                         \
        VEC_##S c00 = ZERO_##S(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;      \
        VEC_##S c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;             \
        for (int64_t p = 0; p < kc; p++, a += MR, b += NR_##S) {                              \
            const VEC_##S b0 = LOAD_##S(b), b1 = LOAD_##S(b + LANES_##S);                     \
            MICRO_ROW_(S, 0) MICRO_ROW_(S, 1) MICRO_ROW_(S, 2)                                \
            MICRO_ROW_(S, 3) MICRO_ROW_(S, 4) MICRO_ROW_(S, 5)                                \
        }                                                                                     \
        if (mr == MR && nr == NR_##S) {                                                       \
            MICRO_STORE_(T, S, 0) MICRO_STORE_(T, S, 1) MICRO_STORE_(T, S, 2)                 \
            MICRO_STORE_(T, S, 3) MICRO_STORE_(T, S, 4) MICRO_STORE_(T, S, 5)                 \
            return;                                                                           \
        }                                                                                     \
        /* Edge tile: spill to a buffer, copy the valid part. */                              \
        T tile[MR * NR_##S];                                                                  \
        MICRO_SPILL_(S, 0) MICRO_SPILL_(S, 1) MICRO_SPILL_(S, 2)                              \
        MICRO_SPILL_(S, 3) MICRO_SPILL_(S, 4) MICRO_SPILL_(S, 5)                              \
        for (int64_t r = 0; r < mr; r++)                                                      \
            for (int64_t j = 0; j < nr; j++)                                                  \
                c[r * ldc + j] = overwrite ? tile[r * NR_##S + j]                             \
                                           : c[r * ldc + j] + tile[r * NR_##S + j];           \
    }                                                                                         \
    /* sum_p x[p*sx] * y[p*sy]: vectorized when both are contiguous. */                       \
    static T dot_##S(const T *x, int64_t sx, const T *y, int64_t sy, int64_t k)               \
    {                                                                                         \
        T s = 0;                                                                              \
        int64_t p = 0;                                                                        \
        if (sx == 1 && sy == 1) {                                                             \
            VEC_##S s0 = ZERO_##S(), s1 = s0;                                                 \
            for (; p + 2 * LANES_##S <= k; p += 2 * LANES_##S) {                              \
                s0 = FMADD_##S(LOADU_##S(x + p), LOADU_##S(y + p), s0);                       \
                s1 = FMADD_##S(LOADU_##S(x + p + LANES_##S), LOADU_##S(y + p + LANES_##S),    \
                               s1);                                                           \
            }                                                                                 \
            T lane[LANES_##S];                                                                \
            STOREU_##S(lane, ADD_##S(s0, s1));                                                \
            for (int l = 0; l < LANES_##S; l++) s += lane[l];                                 \
        }                                                                                     \
        for (; p < k; p++) s += x[p * sx] * y[p * sy];                                        \
        return s;                                                                             \
    }                                                                                         \
    /* Unpacked path, one row of C at a time: a sum of k scaled rows of B when B is not       \
       transposed and a row holds at least a vector, else n dot products over p. */           \
    static void gemm_unpacked_##S(bool trans_a, bool trans_b, int64_t m, int64_t n,           \
                                  int64_t k, const T *A, int64_t lda, const T *B,             \
                                  int64_t ldb, T *C, int64_t ldc, bool accumulate)            \
    {                                                                                         \
        const bool rows_of_b = !trans_b && n >= LANES_##S;                                    \
        for (int64_t i = 0; i < m; i++) {                                                     \
            T *c = C + i * ldc;                                                               \
            if (rows_of_b) {                                                                  \
                if (!accumulate)                                                              \
                    for (int64_t j = 0; j < n; j++) c[j] = 0;                                 \
                for (int64_t p = 0; p < k; p++) axpy_##S(n, OPA(i, p), B + p * ldb, c);       \
                continue;                                                                     \
            }                                                                                 \
            const T *a_row = trans_a ? A + i : A + i * lda;                                   \
            for (int64_t j = 0; j < n; j++) {                                                 \
                const T s = dot_##S(a_row, trans_a ? lda : 1, trans_b ? B + j * ldb : B + j,  \
                                    trans_b ? 1 : ldb, k);                                    \
                c[j] = accumulate ? c[j] + s : s;                                             \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    /* Rows ic..ic+mc of C, columns jc..jc+nc, one KC slice: pack op(A), sweep the tiles. */  \
    static void gemm_row_block_##S(bool trans_a, const T *A, int64_t lda, int64_t ic,         \
                                   int64_t mc, int64_t pc, int64_t kc, const T *packed_b,     \
                                   int64_t jc, int64_t nc, T *packed_a, T *C, int64_t ldc,    \
                                   bool overwrite)                                            \
    {                                                                                         \
        pack_a_##S(trans_a, A, lda, ic, mc, pc, kc, packed_a);                                \
        for (int64_t jr = 0; jr < nc; jr += NR_##S)                                           \
            for (int64_t ir = 0; ir < mc; ir += MR)                                           \
                micro_kernel_##S(kc, packed_a + ir * kc, packed_b + jr * kc,                  \
                                 C + (ic + ir) * ldc + jc + jr, ldc, min64(MR, mc - ir),      \
                                 min64(NR_##S, nc - jr), overwrite);                          \
    }                                                                                         \
    static void gemm_packed_##S(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,  \
                                const T *A, int64_t lda, const T *B, int64_t ldb, T *C,       \
                                int64_t ldc, bool accumulate, int threads, int64_t mc,        \
                                T *packed_a, T *packed_b)                                     \
    {                                                                                         \
        const int64_t a_stride = mc * min64(KC, k);                                           \
        _Pragma("omp parallel num_threads(threads) if (threads > 1)")                         \
        {                                                                                     \
            T *my_a = packed_a + thread_index() * a_stride;                                   \
            for (int64_t jc = 0; jc < n; jc += NC_##S) {                                      \
                const int64_t nc = min64(NC_##S, n - jc);                                     \
                for (int64_t pc = 0; pc < k; pc += KC) {                                      \
                    const int64_t kc = min64(KC, k - pc);                                     \
                    _Pragma("omp for schedule(static)")                                       \
                    for (int64_t jr = 0; jr < nc; jr += NR_##S)                               \
                        pack_b_panel_##S(trans_b, B, ldb, pc, kc, jc + jr,                    \
                                         min64(NR_##S, nc - jr), packed_b + jr * kc);         \
                    _Pragma("omp for schedule(static)")                                       \
                    for (int64_t ic = 0; ic < m; ic += mc)                                    \
                        gemm_row_block_##S(trans_a, A, lda, ic, min64(mc, m - ic), pc, kc,    \
                                           packed_b, jc, nc, my_a, C, ldc,                    \
                                           pc == 0 && !accumulate);                           \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    static void gemm_##S(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,         \
                         const T *A, int64_t lda, const T *B, int64_t ldb, T *C,              \
                         int64_t ldc, bool accumulate, int threads)                           \
    {                                                                                         \
        if (m <= 0 || n <= 0) return;                                                         \
        if (threads < 1) threads = 1;                                                         \
        if (m * n * k <= SMALL_WORK || m == 1 || (n == 1 && !trans_a)) {                      \
            gemm_unpacked_##S(trans_a, trans_b, m, n, k, A, lda, B, ldb, C, ldc, accumulate); \
            return;                                                                           \
        }                                                                                     \
        /* Row blocks of at most MC rows, their count a multiple of the thread count so the   \
           static schedule gives every thread the same share. */                              \
        const int64_t blocks = round_up((m + MC_##S - 1) / MC_##S, threads);                  \
        const int64_t mc = round_up((m + blocks - 1) / blocks, MR);                           \
        if (threads > (m + mc - 1) / mc) threads = (int)((m + mc - 1) / mc);                  \
        const int64_t kc = min64(KC, k);                                                      \
        const size_t a_bytes = (size_t)(threads * mc * kc) * sizeof(T);                       \
        const size_t b_bytes = (size_t)(kc * round_up(min64(NC_##S, n), NR_##S)) * sizeof(T); \
        T *packed_a = bilo__alloc(a_bytes), *packed_b = bilo__alloc(b_bytes);                 \
        if (packed_a && packed_b)                                                             \
            gemm_packed_##S(trans_a, trans_b, m, n, k, A, lda, B, ldb, C, ldc, accumulate,    \
                            threads, mc, packed_a, packed_b);                                 \
        else /* out of memory: the unpacked path needs no buffers */                          \
            gemm_unpacked_##S(trans_a, trans_b, m, n, k, A, lda, B, ldb, C, ldc, accumulate); \
        if (packed_a) bilo__free(packed_a, a_bytes);                                          \
        if (packed_b) bilo__free(packed_b, b_bytes);                                          \
    }
BILO_GEMM_AVX2_(float, f32)
BILO_GEMM_AVX2_(double, f64)

void bilo__fill_gemm_avx2(bilo_kernels *k)
{
    k->gemm_f32 = gemm_f32;
    k->gemm_f64 = gemm_f64;
}
