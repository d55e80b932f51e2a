/* Counter-based random numbers: Philox4x32-10 (Salmon, Moraes, Dror and Shaw, "Parallel random
   numbers: as easy as 1, 2, 3", SC'11) and the tensor fills built on it.

   A generator is (seed, stream, counter). Block b of a draw encrypts the 128-bit counter
   (low, high of the 64-bit block number counter + b, low, high of stream) under the key
   (low, high of seed). Each block yields two 64-bit words, i.e. two values; element i of a
   fill takes lane i % 2 of block i / 2, so any thread split produces the same numbers, and
   the counter then advances by the number of blocks used. */
#include "parallel.h"
#include "tensor_impl.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u /* round multipliers */
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u /* Weyl key increments: golden ratio and sqrt(3) - 1 */
#define PHILOX_W1 0xBB67AE85u
#define PHILOX_ROUNDS 10

#define FILL_BLOCKS 2048 /* Philox blocks per parallel work item */

/* One round: two 32x32 -> 64-bit products; their high halves are mixed with the other two
   words and the round key, and the words are permuted. */
static void philox_round(uint32_t x[4], const uint32_t k[2])
{
    uint64_t p0 = (uint64_t)PHILOX_M0 * x[0];
    uint64_t p1 = (uint64_t)PHILOX_M1 * x[2];
    uint32_t y0 = (uint32_t)(p1 >> 32) ^ x[1] ^ k[0];
    uint32_t y2 = (uint32_t)(p0 >> 32) ^ x[3] ^ k[1];
    x[0] = y0;
    x[1] = (uint32_t)p1;
    x[2] = y2;
    x[3] = (uint32_t)p0;
}

static void philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t x[4] = {counter[0], counter[1], counter[2], counter[3]};
    uint32_t k[2] = {key[0], key[1]};
    for (int r = 0; r < PHILOX_ROUNDS; r++) {
        if (r > 0) {
            k[0] += PHILOX_W0;
            k[1] += PHILOX_W1;
        }
        philox_round(x, k);
    }
    for (int i = 0; i < 4; i++) out[i] = x[i];
}

BILO_API void bilo_philox4x32(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4])
{
    if (!counter || !key || !out) {
        bilo__fail(BILO_ENULL, "bilo_philox4x32: NULL argument");
        return;
    }
    philox4x32_10(counter, key, out);
}

BILO_API bilo_rng bilo_rng_make(uint64_t seed, uint64_t stream)
{
    return (bilo_rng){.seed = seed, .stream = stream, .counter = 0};
}

typedef enum { DRAW_UNIFORM, DRAW_NORMAL, DRAW_BERNOULLI } draw_kind;

/* The top 53 bits of a 64-bit word as a double in [0, 1). */
static double unit_interval(uint32_t lo, uint32_t hi)
{
    uint64_t w = (uint64_t)lo | (uint64_t)hi << 32;
    return (double)(w >> 11) * 0x1p-53;
}

/* The two values of Philox block `block` under rng's seed and stream. */
static void draw_block(const bilo_rng *rng, uint64_t block, draw_kind kind, double p,
                       double v[2])
{
    const uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)rng->stream,
                             (uint32_t)(rng->stream >> 32)};
    const uint32_t key[2] = {(uint32_t)rng->seed, (uint32_t)(rng->seed >> 32)};
    uint32_t r[4];
    philox4x32_10(ctr, key, r);
    double u0 = unit_interval(r[0], r[1]), u1 = unit_interval(r[2], r[3]);
    if (kind == DRAW_NORMAL) {
        /* Box-Muller; 1 - u0 lies in (0, 1], so the log is finite */
        double radius = sqrt(-2.0 * log(1.0 - u0)), angle = 2.0 * M_PI * u1;
        v[0] = radius * cos(angle);
        v[1] = radius * sin(angle);
    } else if (kind == DRAW_BERNOULLI) {
        v[0] = u0 < p;
        v[1] = u1 < p;
    } else {
        v[0] = u0;
        v[1] = u1;
    }
}

/* f32 values are the f64 ones rounded, except that a uniform that rounds up to 1 is kept
   just below it. */
static void store(bilo_tensor *out, int64_t i, double v, draw_kind kind)
{
    if (out->dtype == BILO_F64) {
        ((double *)bilo__ptr(out))[i] = v;
        return;
    }
    float f = (float)v;
    if (kind == DRAW_UNIFORM && f >= 1.0f) f = 0x1.fffffep-1f;
    ((float *)bilo__ptr(out))[i] = f;
}

static bilo_tensor *random_tensor(const char *op, bilo_dtype dtype, int ndim,
                                  const int64_t *shape, draw_kind kind, double p, bilo_rng *rng)
{
    if (!rng) return bilo__fail(BILO_ENULL, "%s: rng is NULL", op);
    if (dtype != BILO_F32 && dtype != BILO_F64)
        return bilo__fail(BILO_EDTYPE, "%s: dtype must be f32 or f64, got %d", op, (int)dtype);
    bilo_tensor *out = bilo__new(op, dtype, ndim, shape);
    if (!out) return NULL;
    int64_t n = out->numel, blocks = (n + 1) / 2;
    int64_t items = (blocks + FILL_BLOCKS - 1) / FILL_BLOCKS;
    int nt = bilo__threads_for_elems(n, BILO_COST_TRANSCENDENTAL); /* Philox, log, sincos */
    BILO__PARALLEL_FOR(nt, it, items, {
        int64_t end = (it + 1) * FILL_BLOCKS < blocks ? (it + 1) * FILL_BLOCKS : blocks;
        for (int64_t b = it * FILL_BLOCKS; b < end; b++) {
            double v[2];
            draw_block(rng, rng->counter + (uint64_t)b, kind, p, v);
            store(out, 2 * b, v[0], kind);
            if (2 * b + 1 < n) store(out, 2 * b + 1, v[1], kind);
        }
    });
    rng->counter += (uint64_t)blocks;
    return out;
}

/* One block per scalar draw, lane 0. */
static double draw_one(const char *op, bilo_rng *rng, draw_kind kind)
{
    if (!rng) {
        bilo__fail(BILO_ENULL, "%s: rng is NULL", op);
        return NAN;
    }
    double v[2];
    draw_block(rng, rng->counter++, kind, 0.0, v);
    return v[0];
}

BILO_API double bilo_rng_uniform(bilo_rng *rng)
{
    return draw_one("bilo_rng_uniform", rng, DRAW_UNIFORM);
}

BILO_API double bilo_rng_normal(bilo_rng *rng)
{
    return draw_one("bilo_rng_normal", rng, DRAW_NORMAL);
}

BILO_API bilo_tensor *bilo_rand(bilo_dtype dtype, int ndim, const int64_t *shape, bilo_rng *rng)
{
    return random_tensor("bilo_rand", dtype, ndim, shape, DRAW_UNIFORM, 0.0, rng);
}

BILO_API bilo_tensor *bilo_randn(bilo_dtype dtype, int ndim, const int64_t *shape, bilo_rng *rng)
{
    return random_tensor("bilo_randn", dtype, ndim, shape, DRAW_NORMAL, 0.0, rng);
}

BILO_API bilo_tensor *bilo_bernoulli(bilo_dtype dtype, int ndim, const int64_t *shape, double p,
                                     bilo_rng *rng)
{
    if (!(p >= 0.0 && p <= 1.0))
        return bilo__fail(BILO_EINVAL, "bilo_bernoulli: p = %g is outside [0, 1]", p);
    return random_tensor("bilo_bernoulli", dtype, ndim, shape, DRAW_BERNOULLI, p, rng);
}
