/* Private to gemm_avx2.c and gemm_avx512.c: the GEMM body, C = op(A)·op(B) (+ C when
   accumulating), written once for f32 and f64 and for both instruction sets against a SIMD
   vocabulary the including file defines first, with a dtype suffix S (f32, f64):
     VEC_S, LANES_S             the vector type and its lane count
     ZERO_S, LOADU_S(p), STOREU_S(p, v), ADD_S(a, b), FMADD_S(a, b, c) (a·b + c)
     BROADCAST_S(p)             *p in every lane
     MASK_S, tail_mask_S(r)     a lane mask with the lanes below r on (r may be <= 0 or
                                >= LANES_S), MASKLOAD_S(p, mask) (lanes off read as 0, their
                                memory untouched), MASKSTORE_S(p, mask, v) (only the lanes on)
     hsum_S(v)                  the sum of v's lanes
     axpy_S(n, alpha, x, y)     y[0..n) += alpha·x[0..n)
   It defines static gemm_f32 and gemm_f64 with the signature of bilo_kernels' entries.
   Register tiles are MR rows by NR = 2 vectors.

   The loop nest is GotoBLAS/BLIS's (research/engine.md §5): for each NC-wide column block of
   C and each KC-deep slice of k, an MR×NR register-blocked micro-kernel (AVX2: 6×16 for f32,
   6×8 for f64, whose 12 accumulators, 2 B vectors and one A broadcast fill 15 of the 16 ymm
   registers; AVX-512: 6×32 and 6×16 in zmm registers) sums the slice's products for one tile
   of C in registers and then adds them to C (or overwrites C on the first slice). Large products pack op(B) into NR-wide row panels and
   MC×KC blocks of op(A) into MR-tall column panels first, so the kernel streams contiguous,
   zero-padded memory; transposition is absorbed by the packing. Small and skinny products
   (few tiles to amortize packing over) run the same kernel directly on A and B through
   strides, with clamped rows and masked columns at the edges ("sup" kernels in BLIS); edge
   tiles of 1-4 rows or up to one vector of columns run shorter kernel variants.
   Thin products (C narrower than THIN_N, e.g. the 10 classes of a linear model) would leave
   lanes idle: with A transposed they run as Cᵀ = op(B)ᵀ·A, whose rows are A's, and otherwise
   as 2×5 tiles of dot products along k, in k slices that keep op(B) in L1 while A streams
   past once. Both read A from memory in patterns the hardware prefetchers miss (one short
   span per row), so they prefetch it in software. Matrix-vector shapes have their own loops:
   a row of C is a sum of scaled rows of B, a column of C with A transposed is a sum of
   scaled rows of A accumulated while A streams past in memory order, and C = A·b is dot
   products.

   Threads split C into disjoint blocks of whole tiles (columns when C is wide, rows when it
   is tall), handed out dynamically, and each block runs the serial loop nest with its
   thread's own packing buffers: there is no barrier inside a product, which matters on a
   shared 2-core machine where a descheduled thread stalls every barrier for a time slice.
   Unpacked products cut C into more blocks than threads, so that a preempted thread does not
   hold the others back; packed ones into one block per thread, since every block packs all
   of op(A). Every element of C accumulates the same KC slices in the same order whoever
   computes it and the path is chosen from the whole product's shape, so the result does not
   depend on the thread count; Aᵀb, the one product split along k, sums fixed halves of k in
   a fixed order for the same reason. */
#ifndef BILO_GEMM_BODY_H
#define BILO_GEMM_BODY_H

#include "kernels.h"
#include "tensor_impl.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Rows of a register tile (an including file may set its own; 6 fills AVX2's 16 registers),
   and of the two shorter kernels that run the bottom edge tiles. */
#ifndef MR
#define MR 6
#endif
#define MR_MID (2 * MR / 3)
#define MR_LOW (MR / 3)
#define KC 256
/* 1 where the including file's GEMM takes only the products of the tile path and hands the
   thin and vector shapes to another GEMM: then every product runs as tiles (correct for any
   shape) and the other paths' code is left out. */
#ifndef BILO_GEMM_ONLY_TILES
#define BILO_GEMM_ONLY_TILES 0
#endif
#define NR_f32 (2 * LANES_f32)
#define NR_f64 (2 * LANES_f64)
/* Rows per packed A block, columns per packed B block (whole MR and NR panels). On AVX-512,
   KC = 128 ran 6-18% slower from 512 cubed up and MC_f64 = 144 no faster. */
#define MC_f32 168
#define MC_f64 72
_Static_assert(MC_f32 % MR == 0 && MC_f64 % MR == 0, "packed A blocks hold whole panels");
#define NC_f32 (4080 / NR_f32 * NR_f32)
#define NC_f64 (4080 / NR_f64 * NR_f64)
/* Up to this many multiply-adds (about 160^3) the products run unpacked: packing would cost
   more than the contiguous loads save (measured on Zen 4: unpacked wins at 100-200 cubed,
   packed at 256 cubed, most of all with A transposed). */
#define DIRECT_WORK (1 << 22)
/* Below this many multiply-adds (about 100^3) one thread does the whole product: forking
   costs more than the second core brings. */
#define PARALLEL_WORK (1 << 20)
/* Dot-product tiles of a thin C: 2 rows of A against up to 5 columns of op(B) (10
   accumulators, 7 loads per 10 FMAs, 13 registers). */
#define DOT_ROWS 2
#define DOT_COLS 5
/* Bytes of op(B)ᵀ one k slice of the dot products keeps in L1 (half of Zen 4's 32 KiB L1d). */
#define DOT_SLICE_BYTES (16 << 10)
/* Thin products: C narrower than this (in f64 too, where 6×8 tiles would leave 6 of 16 lanes
   idle at n = 10: the thin paths ran the logistic-regression products 1.3-1.8x faster). */
#define THIN_N 16
/* Lane counts the path choice assumes (thin paths need m and k of two vectors or more): the
   vocabulary's own unless the including file names others. */
#ifndef PATH_LANES_f32
#define PATH_LANES_f32 LANES_f32
#define PATH_LANES_f64 LANES_f64
#endif
/* Transposed thin products (Cᵀ = op(B)ᵀ·A): rows of A per k slice, and how many rows ahead
   the first tile of a span prefetches (64 of the 784-float rows of the logistic-regression
   product: 64 steps of 12 FMAs, about 0.1 µs ahead, one memory latency; 32 and 128 were no
   faster, none at half speed). */
#define THIN_KC 512
#define THIN_PREFETCH 64
/* Fixed ranges of k of the transposed matrix-vector loop (the threads' share of it). */
#define GEMV_PARTS 2
/* Blocks of C per thread in a parallel product (fewer when C has fewer tiles). Products
   that pack A take one block per thread: each block packs all of op(A) again (6 blocks cost
   17% more instructions than one at 256^3). */
#define CHUNKS_PER_THREAD 3

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

/* Rows of the next register tile of a block with `rest` rows left: MR, except where that
   would leave an edge of at most MR_LOW rows, whose short kernel has too few accumulators
   to cover the FMA latency: unpacked products split such a rest into two tiles of the
   middle kernel (32 rows run as 6,6,6,6,4,4, not 6,6,6,6,6,2). Packed A comes in MR-row
   panels. */
static inline int64_t tile_rows(int64_t rest, bool packed_a)
{
    if (!packed_a && rest > MR && rest <= MR + MR_LOW) return rest - rest / 2;
    return min64(MR, rest);
}

static inline int thread_index(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* How a product is computed: tiles (packed or direct); for thin C (fewer than NR columns)
   transposed tiles (A transposed) or dot products (A not); the transposed matrix-vector
   loop; or row loops (row vectors, A·b, k = 0). */
typedef enum { PATH_TILES, PATH_THIN_T, PATH_DOTS, PATH_GEMV_T, PATH_ROWS } gemm_path;

/* op(A)[i][p] */
#define OPA(i, p) (trans_a ? A[(p) * lda + (i)] : A[(i) * lda + (p)])

/* The kc steps of the kernel, B rows loaded with LOAD0/LOAD1: acc[r][v] += a_r[p] * b_v for
   the first `rows` rows and `cols` vectors (constants where the kernel is inlined, so the
   loops unroll and acc lives in registers). */
#define KERNEL_LOOP_(S, LOAD0, LOAD1)                                                         \
    for (int64_t p = 0; p < kc; p++, b += ldb) {                                              \
        if (prefetch_rows) {                                                                  \
            _mm_prefetch((const char *)(b + prefetch_rows * ldb), _MM_HINT_T0);               \
            _mm_prefetch((const char *)(b + prefetch_rows * ldb + NR_##S - 1), _MM_HINT_T0);  \
        }                                                                                     \
        const VEC_##S b0 = LOAD0, b1 = cols > 1 ? LOAD1 : b0;                                 \
        for (int r = 0; r < rows; r++) {                                                      \
            const VEC_##S ar = BROADCAST_##S(a_row[r] + p * csa);                             \
            acc[r][0] = FMADD_##S(ar, b0, acc[r][0]);                                         \
            if (cols > 1) acc[r][1] = FMADD_##S(ar, b1, acc[r][1]);                           \
        }                                                                                     \
    }

/* The kernel on tile (ir, jr) of gemm_row_block, A packed or read in place. */
#define TILE_(S, ROWS)                                                                        \
    if (nr <= LANES_##S) {                                                                    \
        TILE_COLS_(S, ROWS, 1)                                                                \
    } else {                                                                                  \
        TILE_COLS_(S, ROWS, 2)                                                                \
    }
#define TILE_COLS_(S, ROWS, COLS)                                                             \
    if (g->pack_a)                                                                            \
        kernel_##S(ROWS, COLS, kc, packed_a + ir * kc, 1, MR, ROWS, b, NR_##S,                \
                   c_col + ir * ldc, ldc, mr, nr, false, overwrite, false, 0, true);          \
    else if (trans_a)                                                                         \
        kernel_##S(ROWS, COLS, kc, g->A + pc * lda + ic + ir, 1, lda, mr, b, ldb,             \
                   c_col + ir * ldc, ldc, mr, nr, masked, overwrite, false, 0, false);        \
    else                                                                                      \
        kernel_##S(ROWS, COLS, kc, g->A + (ic + ir) * lda + pc, lda, 1, mr, b, ldb,           \
                   c_col + ir * ldc, ldc, mr, nr, masked, overwrite, false, 0, false);


/* One lane-vector step of dot_tile: the DOT_ROWS rows of A in registers, each column of
   op(B)ᵀ loaded once into a register (the empty asm keeps the compiler from folding the load
   into every FMA, which costs a load per FMA) and multiplied into every row's sum. */
#define DOT_STEP_(S, LOAD_A, LOAD_B)                                                          \
    {                                                                                         \
        VEC_##S av[DOT_ROWS];                                                                 \
        for (int r = 0; r < DOT_ROWS; r++) av[r] = LOAD_A;                                    \
        for (int j = 0; j < COLS; j++) {                                                      \
            VEC_##S bv = LOAD_B;                                                              \
            __asm__("" : "+v"(bv));                                                           \
            for (int r = 0; r < DOT_ROWS; r++) acc[r][j] = FMADD_##S(av[r], bv, acc[r][j]);   \
        }                                                                                     \
    }
#define DOT_TILE_(S, COLS) \
    dot_tile_##S(COLS, kc, a, lda, rows, bt, ldbt, cols, c, ldc, overwrite, prefetch);

#define BILO_GEMM_BODY_(T, S)                                                                 \
    /* C[0..mr)[0..nr) (+)= sum over p < kc of op(A) rows times op(B) rows, where row r of    \
       op(A) has its p-th entry at a[r*rsa + p*csa] and row p of op(B) starts at b + p*ldb.   \
       Only the first `rows` (MR, MR_MID or MR_LOW, >= mr) rows and `cols` (2, or 1 when      \
       nr <= LANES) vectors of columns are computed; rows past a_rows (mr, or `rows` where A  \
       is packed with zero rows at the edge) repeat row a_rows-1 and columns past nr are      \
       zero (computed, never stored). masked_b: B rows hold only nr valid entries (unpacked   \
       edge), so the loads are masked. prefetch_rows: prefetch B that many rows ahead.        \
       prefetch_c: request the tile's rows of C before the k loop (in the large, packed       \
       products, whose rows of C lie far apart, where the hardware prefetchers miss them).    \
       Always inlined so that each call site gets its constant row count and strides folded   \
       in. */                                                                                 \
    static inline __attribute__((always_inline)) void kernel_##S(                             \
        int rows, int cols, int64_t kc, const T *a, int64_t rsa, int64_t csa, int64_t a_rows, \
        const T *b, int64_t ldb, T *c, int64_t ldc, int64_t mr, int64_t nr, bool masked_b,    \
        bool overwrite, bool c_transposed, int64_t prefetch_rows, bool prefetch_c)            \
    {                                                                                         \
        const T *a_row[MR];                                                                   \
        VEC_##S acc[MR][2];                                                                   \
        for (int r = 0; r < rows; r++) {                                                      \
            a_row[r] = a + min64(r, a_rows - 1) * rsa;                                        \
            acc[r][0] = acc[r][1] = ZERO_##S();                                               \
        }                                                                                     \
        if (prefetch_c)                                                                       \
            for (int r = 0; r < rows && r < mr; r++) {                                        \
                _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);                       \
                _mm_prefetch((const char *)(c + r * ldc + nr - 1), _MM_HINT_T0);              \
            }                                                                                 \
        if (masked_b) {                                                                       \
            const MASK_##S m0 = tail_mask_##S(nr), m1 = tail_mask_##S(nr - LANES_##S);        \
            KERNEL_LOOP_(S, MASKLOAD_##S(b, m0), MASKLOAD_##S(b + LANES_##S, m1))             \
        } else {                                                                              \
            KERNEL_LOOP_(S, LOADU_##S(b), LOADU_##S(b + LANES_##S))                           \
        }                                                                                     \
        if (!c_transposed && cols == 2 && nr == NR_##S) { /* whole vectors: plain stores */   \
            for (int r = 0; r < rows && r < mr; r++) {                                        \
                T *row = c + r * ldc;                                                         \
                if (overwrite) {                                                              \
                    STOREU_##S(row, acc[r][0]);                                               \
                    STOREU_##S(row + LANES_##S, acc[r][1]);                                   \
                } else {                                                                      \
                    STOREU_##S(row, ADD_##S(LOADU_##S(row), acc[r][0]));                      \
                    STOREU_##S(row + LANES_##S, ADD_##S(LOADU_##S(row + LANES_##S), acc[r][1])); \
                }                                                                             \
            }                                                                                 \
            return;                                                                           \
        }                                                                                     \
        if (!c_transposed) { /* a column edge: the valid part through lane masks */           \
            const MASK_##S m0 = tail_mask_##S(nr), m1 = tail_mask_##S(nr - LANES_##S);        \
            for (int r = 0; r < rows && r < mr; r++) {                                        \
                T *row = c + r * ldc;                                                         \
                VEC_##S v0 = acc[r][0], v1 = acc[r][1];                                       \
                if (!overwrite) {                                                             \
                    v0 = ADD_##S(MASKLOAD_##S(row, m0), v0);                                  \
                    if (cols > 1) v1 = ADD_##S(MASKLOAD_##S(row + LANES_##S, m1), v1);        \
                }                                                                             \
                MASKSTORE_##S(row, m0, v0);                                                   \
                if (cols > 1) MASKSTORE_##S(row + LANES_##S, m1, v1);                         \
            }                                                                                 \
            return;                                                                           \
        }                                                                                     \
        /* C transposed: spill to a buffer, copy the valid part. */                           \
        T tile[MR * NR_##S];                                                                  \
        for (int r = 0; r < rows; r++) {                                                      \
            STOREU_##S(tile + r * NR_##S, acc[r][0]);                                         \
            STOREU_##S(tile + r * NR_##S + LANES_##S, acc[r][1]);                             \
        }                                                                                     \
        for (int64_t r = 0; r < mr; r++)                                                      \
            for (int64_t j = 0; j < nr; j++) {                                                \
                T *dst = c + j * ldc + r;                                                     \
                *dst = overwrite ? tile[r * NR_##S + j] : *dst + tile[r * NR_##S + j];        \
            }                                                                                 \
    }                                                                                         \
    /* Rows i0..i0+mc, columns p0..p0+kc of op(A) as MR-row panels: panel q holds             \
       op(A)[i0 + q*MR + r][p0 + p] at dst[q*MR*kc + p*MR + r], rows past mc zero. */         \
    static void pack_a_##S(bool trans_a, const T *A, int64_t lda, int64_t i0, int64_t mc,     \
                           int64_t p0, int64_t kc, T *restrict dst)                           \
    {                                                                                         \
        for (int64_t ir = 0; ir < mc; ir += MR) {                                             \
            const int64_t mr = min64(MR, mc - ir);                                            \
            T *panel = dst + ir * kc;                                                         \
            if (mr == MR && trans_a) { /* rows of A hold MR consecutive entries */            \
                const T *src = A + p0 * lda + i0 + ir;                                        \
                for (int64_t p = 0; p < kc; p++, src += lda)                                  \
                    for (int64_t r = 0; r < MR; r++) panel[p * MR + r] = src[r];              \
            } else if (mr == MR) {                                                            \
                const T *src = A + (i0 + ir) * lda + p0;                                      \
                for (int64_t p = 0; p < kc; p++)                                              \
                    for (int64_t r = 0; r < MR; r++) panel[p * MR + r] = src[r * lda + p];    \
            } else {                                                                          \
                for (int64_t p = 0; p < kc; p++)                                              \
                    for (int64_t r = 0; r < MR; r++)                                          \
                        panel[p * MR + r] = r < mr ? OPA(i0 + ir + r, p0 + p) : 0;            \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    /* Columns j0..j0+nc, rows p0..p0+kc of op(B) as NR-wide panels: panel q holds            \
       op(B)[p0 + p][j0 + q*NR + j] at dst[q*NR*kc + p*NR + j], columns past nc zero. */      \
    static void pack_b_##S(bool trans_b, const T *B, int64_t ldb, int64_t p0, int64_t kc,     \
                           int64_t j0, int64_t nc, T *restrict dst)                           \
    {                                                                                         \
        for (int64_t jr = 0; jr < nc; jr += NR_##S) {                                         \
            const int64_t nr = min64(NR_##S, nc - jr);                                        \
            T *panel = dst + jr * kc;                                                         \
            if (trans_b) {                                                                    \
                for (int64_t j = 0; j < NR_##S; j++) {                                        \
                    const T *src = B + (j0 + jr + min64(j, nr - 1)) * ldb + p0;               \
                    for (int64_t p = 0; p < kc; p++) panel[p * NR_##S + j] = j < nr ? src[p] : 0; \
                }                                                                             \
            } else if (nr == NR_##S) {                                                        \
                const T *src = B + p0 * ldb + j0 + jr;                                        \
                for (int64_t p = 0; p < kc; p++, src += ldb) {                                \
                    STOREU_##S(panel + p * NR_##S, LOADU_##S(src));                           \
                    STOREU_##S(panel + p * NR_##S + LANES_##S, LOADU_##S(src + LANES_##S));   \
                }                                                                             \
            } else {                                                                          \
                const T *src = B + p0 * ldb + j0 + jr;                                        \
                for (int64_t p = 0; p < kc; p++, src += ldb)                                  \
                    for (int64_t j = 0; j < NR_##S; j++)                                      \
                        panel[p * NR_##S + j] = j < nr ? src[j] : 0;                          \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    /* One product (or a block of one: the pointers and sizes below may describe a part of    \
       C and the matching rows of op(A) / columns of op(B)) and how it is computed. */        \
    typedef struct {                                                                          \
        bool trans_a, trans_b, accumulate;                                                    \
        gemm_path path;      /* chosen from the whole product's shape, */                     \
        bool pack_a, pack_b; /* never from a part's */                                        \
        int64_t m, n, k, lda, ldb, ldc;                                                       \
        const T *A, *B;                                                                       \
        T *C;                                                                                 \
    } gemm_job_##S;                                                                           \
    /* Rows ic..ic+mc of one KC slice against columns jc..jc+nc of op(B), whose slice is      \
       either packed (packed_b) or read in place. */                                          \
    static void gemm_row_block_##S(const gemm_job_##S *g, int64_t ic, int64_t mc, int64_t pc, \
                                   int64_t kc, int64_t jc, int64_t nc, const T *packed_b,     \
                                   T *packed_a, bool overwrite)                               \
    {                                                                                         \
        const bool trans_a = g->trans_a;                                                      \
        const int64_t lda = g->lda, ldc = g->ldc;                                             \
        if (g->pack_a) pack_a_##S(trans_a, g->A, lda, ic, mc, pc, kc, packed_a);              \
        for (int64_t jr = 0; jr < nc; jr += NR_##S) {                                         \
            const int64_t nr = min64(NR_##S, nc - jr);                                        \
            T *c_col = g->C + ic * ldc + jc + jr;                                             \
            const T *b = g->pack_b ? packed_b + jr * kc : g->B + pc * g->ldb + jc + jr;       \
            const int64_t ldb = g->pack_b ? NR_##S : g->ldb;                                  \
            const bool masked = !g->pack_b && nr < NR_##S;                                    \
            for (int64_t ir = 0, mr; ir < mc; ir += mr) {                                     \
                mr = tile_rows(mc - ir, g->pack_a);                                           \
                /* an edge tile runs a shorter kernel instead of padding to MR rows */        \
                if (mr > MR_MID) {                                                            \
                    TILE_(S, MR)                                                              \
                } else if (mr > MR_LOW) {                                                     \
                    TILE_(S, MR_MID)                                                          \
                } else {                                                                      \
                    TILE_(S, MR_LOW)                                                          \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    /* The serial loop nest over the whole job; packed_a holds MC×KC, packed_b KC×NC. */      \
    static void gemm_tiles_##S(const gemm_job_##S *g, T *packed_a, T *packed_b)               \
    {                                                                                         \
        for (int64_t jc = 0; jc < g->n; jc += NC_##S) {                                       \
            const int64_t nc = min64(NC_##S, g->n - jc);                                      \
            for (int64_t pc = 0; pc < g->k; pc += KC) {                                       \
                const int64_t kc = min64(KC, g->k - pc);                                      \
                if (g->pack_b) pack_b_##S(g->trans_b, g->B, g->ldb, pc, kc, jc, nc, packed_b); \
                for (int64_t ic = 0; ic < g->m; ic += MC_##S)                                 \
                    gemm_row_block_##S(g, ic, min64(MC_##S, g->m - ic), pc, kc, jc, nc,       \
                                       packed_b, packed_a, pc == 0 && !g->accumulate);        \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    /* C (m×n, n < THIN_N, A transposed) as Cᵀ = op(B)ᵀ·A: the rows of A (stored k×m) fill    \
       vector lanes, op(B)'s entries are broadcast and each tile is stored transposed. A      \
       tile reads one short span of each of kc rows of A; the first tile of a span requests   \
       the rows THIN_PREFETCH ahead, which the hardware prefetchers do not anticipate. */     \
    static void gemm_thin_t_##S(const gemm_job_##S *g)                                        \
    {                                                                                         \
        const int64_t rsb = g->trans_b ? g->ldb : 1, csb = g->trans_b ? 1 : g->ldb;           \
        const int64_t lda = g->lda, ldc = g->ldc;                                             \
        for (int64_t pc = 0; pc < g->k; pc += THIN_KC) {                                      \
            const int64_t kc = min64(THIN_KC, g->k - pc);                                     \
            const bool overwrite = pc == 0 && !g->accumulate;                                 \
            for (int64_t j0 = 0; j0 < g->m; j0 += NR_##S) {                                   \
                const int64_t nr = min64(NR_##S, g->m - j0);                                  \
                const T *b = g->A + pc * lda + j0;                                            \
                for (int64_t r0 = 0; r0 < g->n; r0 += MR) {                                   \
                    const int64_t mr = min64(MR, g->n - r0);                                  \
                    const T *a = g->B + r0 * rsb + pc * csb;                                  \
                    T *c = g->C + j0 * ldc + r0;                                              \
                    const int64_t ahead = r0 == 0 ? THIN_PREFETCH : 0;                        \
                    if (mr > MR_MID)                                                          \
                        kernel_##S(MR, 2, kc, a, rsb, csb, mr, b, lda, c, ldc, mr, nr,        \
                                   nr < NR_##S, overwrite, true, ahead, false);               \
                    else if (mr > MR_LOW)                                                     \
                        kernel_##S(MR_MID, 2, kc, a, rsb, csb, mr, b, lda, c, ldc, mr, nr,    \
                                   nr < NR_##S, overwrite, true, ahead, false);               \
                    else                                                                      \
                        kernel_##S(MR_LOW, 2, kc, a, rsb, csb, mr, b, lda, c, ldc, mr, nr,    \
                                   nr < NR_##S, overwrite, true, ahead, false);               \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    /* rows (<= DOT_ROWS) rows of C against cols (<= COLS) columns of op(B) as dot products   \
       over one k slice of kc: A's rows and the rows of op(B)ᵀ (bt, stride ldbt) both stream  \
       along the lanes, each sum is reduced across lanes at the end and stored or added to C. \
       prefetch: request the next row pair of A (which streams from memory) on the way.       \
       Always inlined so that COLS is a constant. */                                          \
    static inline __attribute__((always_inline)) void dot_tile_##S(                           \
        int COLS, int64_t kc, const T *a, int64_t lda, int64_t rows, const T *bt,             \
        int64_t ldbt, int64_t cols, T *c, int64_t ldc, bool overwrite, bool prefetch)         \
    {                                                                                         \
        const T *ar[DOT_ROWS], *br[DOT_COLS];                                                 \
        for (int r = 0; r < DOT_ROWS; r++) ar[r] = a + min64(r, rows - 1) * lda;              \
        for (int j = 0; j < COLS; j++) br[j] = bt + min64(j, cols - 1) * ldbt;                \
        VEC_##S acc[DOT_ROWS][DOT_COLS];                                                      \
        for (int r = 0; r < DOT_ROWS; r++)                                                    \
            for (int j = 0; j < COLS; j++) acc[r][j] = ZERO_##S();                            \
        int64_t p = 0;                                                                        \
        for (; p + LANES_##S <= kc; p += LANES_##S) {                                         \
            if (prefetch)                                                                     \
                for (int r = 0; r < DOT_ROWS; r++)                                            \
                    _mm_prefetch((const char *)(ar[r] + DOT_ROWS * lda + p), _MM_HINT_T0);    \
            DOT_STEP_(S, LOADU_##S(ar[r] + p), LOADU_##S(br[j] + p))                          \
        }                                                                                     \
        if (p < kc) {                                                                         \
            const MASK_##S tail = tail_mask_##S(kc - p);                                      \
            DOT_STEP_(S, MASKLOAD_##S(ar[r] + p, tail), MASKLOAD_##S(br[j] + p, tail))        \
        }                                                                                     \
        for (int r = 0; r < rows; r++)                                                        \
            for (int j = 0; j < cols; j++) {                                                  \
                const T s = hsum_##S(acc[r][j]);                                              \
                c[r * ldc + j] = overwrite ? s : c[r * ldc + j] + s;                          \
            }                                                                                 \
    }                                                                                         \
    /* dot_tile with its column count (2..DOT_COLS: the tiles of n >= 2 columns) constant. */ \
    static void dot_tile_cols_##S(int64_t kc, const T *a, int64_t lda, int64_t rows,          \
                                  const T *bt, int64_t ldbt, int64_t cols, T *c, int64_t ldc, \
                                  bool overwrite, bool prefetch)                              \
    {                                                                                         \
        switch (cols) {                                                                       \
        case 2: DOT_TILE_(S, 2) break;                                                        \
        case 3: DOT_TILE_(S, 3) break;                                                        \
        case 4: DOT_TILE_(S, 4) break;                                                        \
        default: DOT_TILE_(S, 5) break;                                                       \
        }                                                                                     \
    }                                                                                         \
    /* C (m×n, n < THIN_N, A not transposed) as m·n dot products of length k, which fill the  \
       lanes whatever n is. op(B)'s columns are copied into rows first unless B is stored     \
       transposed (then they already are rows); bt_buf holds n×k. k is cut into equal slices  \
       (multiples of the lane count) small enough for one slice of all n rows of op(B)ᵀ to    \
       stay in L1 while the rows of A stream past once; n is cut into near-equal tiles of at  \
       most DOT_COLS columns (10 = 5 + 5). */                                                 \
    static void gemm_dots_##S(const gemm_job_##S *g, T *bt_buf)                               \
    {                                                                                         \
        const T *bt = g->B;                                                                   \
        int64_t ldbt = g->ldb;                                                                \
        const int64_t m = g->m, n = g->n, k = g->k;                                           \
        if (!g->trans_b) {                                                                    \
            for (int64_t p = 0; p < k; p++)                                                   \
                for (int64_t j = 0; j < n; j++) bt_buf[j * k + p] = g->B[p * g->ldb + j];     \
            bt = bt_buf;                                                                      \
            ldbt = k;                                                                         \
        }                                                                                     \
        const int64_t row_bytes = n * (int64_t)sizeof(T);                                     \
        const int64_t slice_max = max64(LANES_##S, DOT_SLICE_BYTES / row_bytes);              \
        const int64_t slices = (k + slice_max - 1) / slice_max;                               \
        const int64_t slice = round_up((k + slices - 1) / slices, LANES_##S);                 \
        const int64_t col_tiles = (n + DOT_COLS - 1) / DOT_COLS;                              \
        for (int64_t p0 = 0; p0 < k; p0 += slice) {                                           \
            const int64_t kc = min64(slice, k - p0);                                          \
            const bool overwrite = p0 == 0 && !g->accumulate;                                 \
            for (int64_t i0 = 0; i0 < m; i0 += DOT_ROWS)                                      \
                for (int64_t t = 0; t < col_tiles; t++) {                                     \
                    const int64_t j0 = t * n / col_tiles, j1 = (t + 1) * n / col_tiles;       \
                    dot_tile_cols_##S(kc, g->A + i0 * g->lda + p0, g->lda,                    \
                                      min64(DOT_ROWS, m - i0), bt + j0 * ldbt + p0, ldbt,     \
                                      j1 - j0, g->C + i0 * g->ldc + j0, g->ldc, overwrite,    \
                                      t == 0 && i0 + 2 * DOT_ROWS <= m);                      \
                }                                                                             \
        }                                                                                     \
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
    /* Vector shapes, one row of C at a time: a sum of k scaled rows of B when B is not       \
       transposed and a row holds at least a vector, else n dot products over p. */           \
    static void gemm_rows_##S(const gemm_job_##S *g)                                          \
    {                                                                                         \
        const bool trans_a = g->trans_a, trans_b = g->trans_b;                                \
        const int64_t lda = g->lda, ldb = g->ldb, n = g->n, k = g->k;                         \
        const T *A = g->A, *B = g->B;                                                         \
        const bool rows_of_b = !trans_b && n >= LANES_##S;                                    \
        for (int64_t i = 0; i < g->m; i++) {                                                  \
            T *c = g->C + i * g->ldc;                                                         \
            if (rows_of_b) {                                                                  \
                if (!g->accumulate)                                                           \
                    for (int64_t j = 0; j < n; j++) c[j] = 0;                                 \
                for (int64_t p = 0; p < k; p++) axpy_##S(n, OPA(i, p), B + p * ldb, c);       \
                continue;                                                                     \
            }                                                                                 \
            const T *a_row = trans_a ? A + i : A + i * lda;                                   \
            for (int64_t j = 0; j < n; j++) {                                                 \
                const T s = dot_##S(a_row, trans_a ? lda : 1, trans_b ? B + j * ldb : B + j,  \
                                    trans_b ? 1 : ldb, k);                                    \
                c[j] = g->accumulate ? c[j] + s : s;                                          \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    /* C (m×1) = Aᵀ·b with A stored k×m: sums of the rows of A scaled by the entries of b,    \
       accumulated in acc (m entries, in L1) while A streams past row after row in the order  \
       in which it lies in memory (one row per pass: faster than 2 or 4 at m = 784). k is cut \
       into GEMV_PARTS fixed ranges summed into their own accumulators (acc holds             \
       GEMV_PARTS·m), which threads take in parallel and then add in order: splitting C       \
       instead would cut A's rows into short spans the hardware prefetchers do not follow. */ \
    static void gemv_t_##S(const gemm_job_##S *g, T *acc, int threads)                        \
    {                                                                                         \
        const int64_t m = g->m, sb = g->trans_b ? 1 : g->ldb; /* stride of op(B)'s column */  \
        _Pragma("omp parallel for num_threads(threads) if (threads > 1) schedule(static, 1)") \
        for (int h = 0; h < GEMV_PARTS; h++) {                                                \
            T *part = acc + h * m;                                                            \
            for (int64_t i = 0; i < m; i++) part[i] = 0;                                      \
            for (int64_t p = h * g->k / GEMV_PARTS; p < (h + 1) * g->k / GEMV_PARTS; p++)     \
                axpy_##S(m, g->B[p * sb], g->A + p * g->lda, part);                           \
        }                                                                                     \
        for (int64_t i = 0; i < m; i++) {                                                     \
            T s = acc[i], *c = g->C + i * g->ldc;                                             \
            for (int h = 1; h < GEMV_PARTS; h++) s += acc[h * m + i];                         \
            *c = g->accumulate ? *c + s : s;                                                  \
        }                                                                                     \
    }                                                                                         \
    static void gemm_serial_##S(const gemm_job_##S *g, T *packed_a, T *packed_b)              \
    {                                                                                         \
        if (g->m <= 0 || g->n <= 0) return;                                                   \
        switch (BILO_GEMM_ONLY_TILES ? PATH_TILES : g->path) {                                \
        case PATH_TILES: gemm_tiles_##S(g, packed_a, packed_b); break;                        \
        case PATH_THIN_T: gemm_thin_t_##S(g); break;                                          \
        case PATH_DOTS: gemm_dots_##S(g, packed_b); break;                                    \
        case PATH_GEMV_T: gemv_t_##S(g, packed_b, 1); break;                                  \
        case PATH_ROWS: gemm_rows_##S(g); break;                                              \
        }                                                                                     \
    }                                                                                         \
    /* Rows of C per tile: a vector pair's lanes where C's rows run along the lanes. */       \
    static int64_t row_unit_##S(gemm_path path) { return path == PATH_THIN_T ? NR_##S : MR; } \
    /* Block t of `parts` of the job: whole tiles of C, by columns when C is wide and by rows \
       when it is tall, the tiles shared out evenly (blocks differ by at most one tile). */   \
    static gemm_job_##S gemm_part_##S(const gemm_job_##S *g, int t, int parts)                \
    {                                                                                         \
        gemm_job_##S p = *g;                                                                  \
        const bool by_columns = g->n >= g->m;                                                 \
        const int64_t extent = by_columns ? g->n : g->m;                                      \
        const int64_t unit = by_columns ? NR_##S : row_unit_##S(g->path);                     \
        const int64_t tiles = (extent + unit - 1) / unit;                                     \
        const int64_t lo = min64(extent, t * tiles / parts * unit);                           \
        const int64_t hi = min64(extent, (t + 1) * tiles / parts * unit);                     \
        if (by_columns) {                                                                     \
            p.n = hi - lo;                                                                    \
            p.B = g->trans_b ? g->B + lo * g->ldb : g->B + lo;                                \
            p.C = g->C + lo;                                                                  \
        } else {                                                                              \
            p.m = hi - lo;                                                                    \
            p.A = g->trans_a ? g->A + lo : g->A + lo * g->lda;                                \
            p.C = g->C + lo * g->ldc;                                                         \
        }                                                                                     \
        return p;                                                                             \
    }                                                                                         \
    /* How a product of this shape is computed. */                                            \
    static inline gemm_path gemm_path_##S(bool trans_a, int64_t m, int64_t n, int64_t k)      \
    {                                                                                         \
        const bool thin = n < THIN_N && m >= 2 * PATH_LANES_##S && k >= 2 * PATH_LANES_##S;   \
        return k == 0 || m == 1 || (n == 1 && !trans_a) ? PATH_ROWS                           \
               : n == 1                                 ? PATH_GEMV_T                         \
               : thin && trans_a                        ? PATH_THIN_T                         \
               : thin                                   ? PATH_DOTS                           \
                                                        : PATH_TILES;                         \
    }                                                                                         \
    static void gemm_##S(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,         \
                         const T *A, int64_t lda, const T *B, int64_t ldb, T *C,              \
                         int64_t ldc, bool accumulate, int threads)                           \
    {                                                                                         \
        if (m <= 0 || n <= 0) return;                                                         \
        const int64_t work = m * n * k;                                                       \
        const gemm_path path = BILO_GEMM_ONLY_TILES ? PATH_TILES                              \
                                                    : gemm_path_##S(trans_a, m, n, k);        \
        const bool direct = work <= DIRECT_WORK || n <= NR_##S || m <= MR;                    \
        const bool tiles = path == PATH_TILES;                                                \
        gemm_job_##S g = {.trans_a = trans_a, .trans_b = trans_b, .accumulate = accumulate,   \
                          .path = path, .pack_a = tiles && !direct,                           \
                          .pack_b = tiles && (!direct || trans_b),                            \
                          .m = m, .n = n, .k = k, .lda = lda, .ldb = ldb, .ldc = ldc,         \
                          .A = A, .B = B, .C = C};                                            \
        const int64_t unit = row_unit_##S(path);                                              \
        const int64_t split = path == PATH_GEMV_T ? GEMV_PARTS                                \
                              : n >= m            ? (n + NR_##S - 1) / NR_##S                 \
                                                  : (m + unit - 1) / unit;                    \
        const int threads_used =                                                              \
            work < PARALLEL_WORK ? 1 : (int)min64(max64(threads, 1), split);                  \
        const int64_t kc = min64(KC, max64(k, 1));                                            \
        const size_t a_elems = g.pack_a ? (size_t)(MC_##S * kc) : 0;                          \
        const size_t b_elems = g.pack_b ? (size_t)(kc * round_up(min64(NC_##S, n), NR_##S))   \
                               : path == PATH_DOTS && !trans_b ? (size_t)(n * k)              \
                               : path == PATH_GEMV_T           ? (size_t)(GEMV_PARTS * m)     \
                                                               : 0;                           \
        const int buffer_sets = path == PATH_GEMV_T ? 1 : threads_used; /* one per thread */  \
        const size_t bytes = (size_t)buffer_sets * (a_elems + b_elems) * sizeof(T);           \
        T *buffers = bytes ? bilo__alloc(bytes) : NULL;                                       \
        if (bytes && !buffers) { /* out of memory: the row loops need no buffers */           \
            g.pack_a = g.pack_b = false;                                                      \
            g.path = PATH_ROWS;                                                               \
            gemm_rows_##S(&g);                                                                \
            return;                                                                           \
        }                                                                                     \
        if (threads_used == 1) {                                                              \
            gemm_serial_##S(&g, buffers, buffers + a_elems);                                  \
        } else if (path == PATH_GEMV_T) {                                                     \
            gemv_t_##S(&g, buffers, threads_used);                                            \
        } else {                                                                              \
            /* Blocks handed out dynamically; where there are more blocks than threads, a     \
               thread the OS preempts does not hold the others back. */                       \
            const int per_thread = g.pack_a ? 1 : CHUNKS_PER_THREAD;                          \
            const int blocks = (int)min64(split, per_thread * threads_used);                  \
            _Pragma("omp parallel num_threads(threads_used)")                                 \
            {                                                                                 \
                T *mine = buffers ? buffers + (size_t)thread_index() * (a_elems + b_elems) : NULL; \
                _Pragma("omp for schedule(dynamic, 1)")                                       \
                for (int t = 0; t < blocks; t++) {                                            \
                    const gemm_job_##S part = gemm_part_##S(&g, t, blocks);                   \
                    gemm_serial_##S(&part, mine, mine ? mine + a_elems : NULL);               \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
        if (buffers) bilo__free(buffers, bytes);                                              \
    }
BILO_GEMM_BODY_(float, f32)
BILO_GEMM_BODY_(double, f64)
#undef BILO_GEMM_BODY_

#endif
