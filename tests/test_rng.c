/* Philox4x32-10 against Random123's known-answer vectors; the documented mapping from
   (seed, stream, counter) to tensor elements, recomputed here from raw Philox blocks;
   reproducibility across thread counts and split fills; moment checks; error paths. */
#include "bilo.h"
#include "tap.h"

#include <string.h>

#define N_BIG 1000000

/* ---- known-answer vectors (Random123 kat_vectors, philox4x32 10 rounds) ------------------ */

static void test_kat(void)
{
    static const struct {
        uint32_t ctr[4], key[2], out[4];
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
         {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
         {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        bilo_philox4x32(kat[i].ctr, kat[i].key, out);
        tap_ok(memcmp(out, kat[i].out, sizeof out) == 0, "Philox4x32-10 known answer %d", i);
        if (memcmp(out, kat[i].out, sizeof out) != 0)
            tap_diag("got %08x %08x %08x %08x", out[0], out[1], out[2], out[3]);
    }
}

/* ---- the mapping, recomputed from raw blocks ------------------------------------------------ */

/* The two 53-bit uniforms of block `block` under (seed, stream), as the header documents. */
static void ref_uniforms(uint64_t seed, uint64_t stream, uint64_t block, double u[2])
{
    const uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream,
                             (uint32_t)(stream >> 32)};
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t r[4];
    bilo_philox4x32(ctr, key, r);
    for (int lane = 0; lane < 2; lane++) {
        uint64_t w = (uint64_t)r[2 * lane] | (uint64_t)r[2 * lane + 1] << 32;
        u[lane] = (double)(w >> 11) / 9007199254740992.0; /* 2^53 */
    }
}

static void ref_normals(uint64_t seed, uint64_t stream, uint64_t block, double z[2])
{
    double u[2];
    ref_uniforms(seed, stream, block, u);
    double radius = sqrt(-2.0 * log(1.0 - u[0]));
    z[0] = radius * cos(2.0 * M_PI * u[1]);
    z[1] = radius * sin(2.0 * M_PI * u[1]);
}

static void test_mapping(void)
{
    const uint64_t seed = 0x0123456789abcdefULL, stream = 0xfedcba9876543210ULL;
    bilo_rng rng = bilo_rng_make(seed, stream);
    tap_ok(rng.seed == seed && rng.stream == stream && rng.counter == 0,
           "bilo_rng_make sets seed and stream, counter 0");
    rng.counter = 5;
    bilo_tensor *u = bilo_rand(BILO_F64, BILO_SHAPE(7), &rng);
    bool ok = u != NULL;
    for (int i = 0; ok && i < 7; i++) {
        double want[2];
        ref_uniforms(seed, stream, 5 + (uint64_t)i / 2, want);
        ok = bilo_get_flat(u, i) == want[i % 2];
    }
    tap_ok(ok, "rand f64: element i is lane i%%2 of block counter + i/2");
    tap_ok(rng.counter == 9, "7 elements advance the counter by 4 blocks (got %llu)",
           (unsigned long long)(rng.counter - 5));

    bilo_tensor *z = bilo_randn(BILO_F64, BILO_SHAPE(2, 3), &rng);
    ok = z != NULL;
    for (int i = 0; ok && i < 6; i++) {
        double want[2];
        ref_normals(seed, stream, 9 + (uint64_t)i / 2, want);
        ok = fabs(bilo_get_flat(z, i) - want[i % 2]) <= 1e-12 * (1 + fabs(want[i % 2]));
    }
    tap_ok(ok, "randn f64: Box-Muller of block counter + i/2 (cos lane 0, sin lane 1)");

    rng = bilo_rng_make(seed, stream);
    bilo_rng again = rng;
    bilo_tensor *u64 = bilo_rand(BILO_F64, BILO_SHAPE(1001), &rng);
    bilo_tensor *u32 = bilo_rand(BILO_F32, BILO_SHAPE(1001), &again);
    ok = u64 && u32;
    for (int i = 0; ok && i < 1001; i++)
        ok = ((float *)bilo_data(u32))[i] == (float)((double *)bilo_data(u64))[i];
    tap_ok(ok, "rand f32 is the f64 draw rounded");

    double want[2], zwant[2];
    rng = bilo_rng_make(seed, stream);
    rng.counter = 40;
    ref_uniforms(seed, stream, 40, want);
    double got = bilo_rng_uniform(&rng);
    tap_ok(got == want[0] && rng.counter == 41, "bilo_rng_uniform: lane 0 of one block");
    ref_normals(seed, stream, 41, zwant);
    got = bilo_rng_normal(&rng);
    tap_ok(fabs(got - zwant[0]) <= 1e-12 * (1 + fabs(zwant[0])) && rng.counter == 42,
           "bilo_rng_normal: lane 0 of one block");

    /* seed 1, stream 0, block 19351156 has lane 0 u = 0x1.ffffffdd97954p-1 (found by a
       search over blocks): closer to 1 than to the largest float below 1, so (float)u is 1 */
    rng = bilo_rng_make(1, 0);
    rng.counter = 19351156;
    ref_uniforms(1, 0, rng.counter, want);
    bilo_tensor *edge = bilo_rand(BILO_F32, BILO_SHAPE(1), &rng);
    float e = edge ? ((float *)bilo_data(edge))[0] : 1.0f;
    tap_ok((float)want[0] == 1.0f && e < 1.0f && e == 0x1.fffffep-1f,
           "rand f32 keeps a uniform that rounds to 1 just below 1 (u = %.17g)", want[0]);
}

/* ---- reproducibility -------------------------------------------------------------------- */

static bool same_data(bilo_tensor *a, bilo_tensor *b)
{
    if (!a || !b || bilo_numel(a) != bilo_numel(b) || bilo_dtype_of(a) != bilo_dtype_of(b))
        return false;
    size_t nbytes = (size_t)bilo_numel(a) * bilo_dtype_size(bilo_dtype_of(a));
    return memcmp(bilo_data(a), bilo_data(b), nbytes) == 0;
}

typedef bilo_tensor *(*fill_fn)(bilo_dtype dt, int64_t n, bilo_rng *rng);
static bilo_tensor *fill_rand(bilo_dtype dt, int64_t n, bilo_rng *rng)
{
    return bilo_rand(dt, 1, &n, rng);
}
static bilo_tensor *fill_randn(bilo_dtype dt, int64_t n, bilo_rng *rng)
{
    return bilo_randn(dt, 1, &n, rng);
}
static bilo_tensor *fill_bern(bilo_dtype dt, int64_t n, bilo_rng *rng)
{
    return bilo_bernoulli(dt, 1, &n, 0.3, rng);
}

static void test_reproducibility(void)
{
    static const struct {
        const char *name;
        fill_fn fill;
    } fills[] = {{"rand", fill_rand}, {"randn", fill_randn}, {"bernoulli", fill_bern}};
    static const bilo_dtype dts[] = {BILO_F32, BILO_F64};
    for (int f = 0; f < 3; f++)
        for (int d = 0; d < 2; d++) {
            const char *dn = bilo_dtype_name(dts[d]);
            bilo_rng a = bilo_rng_make(42, 7), b = bilo_rng_make(42, 7);
            bilo_rng c = bilo_rng_make(42, 8), s = bilo_rng_make(43, 7);
            bilo_tensor *ta = fills[f].fill(dts[d], 1000, &a);
            tap_ok(same_data(ta, fills[f].fill(dts[d], 1000, &b)), "%s %s: same seed, same data",
                   fills[f].name, dn);
            tap_ok(!same_data(ta, fills[f].fill(dts[d], 1000, &c)),
                   "%s %s: another stream differs", fills[f].name, dn);
            tap_ok(!same_data(ta, fills[f].fill(dts[d], 1000, &s)), "%s %s: another seed differs",
                   fills[f].name, dn);

            /* n (even) then m elements equal one fill of n + m */
            bilo_rng whole = bilo_rng_make(5, 1), parts = whole;
            bilo_tensor *all = fills[f].fill(dts[d], 11, &whole);
            bilo_tensor *p1 = fills[f].fill(dts[d], 6, &parts);
            bilo_tensor *p2 = fills[f].fill(dts[d], 5, &parts);
            size_t es = bilo_dtype_size(dts[d]);
            tap_ok(all && p1 && p2 && memcmp(bilo_data(all), bilo_data(p1), 6 * es) == 0 &&
                       memcmp((char *)bilo_data(all) + 6 * es, bilo_data(p2), 5 * es) == 0 &&
                       whole.counter == parts.counter,
                   "%s %s: fills of 6 then 5 equal one fill of 11", fills[f].name, dn);

            bilo_tensor *by_threads[2];
            for (int nt = 1; nt <= 2; nt++) {
                bilo_set_num_threads(nt);
                bilo_rng r = bilo_rng_make(2024, 3);
                by_threads[nt - 1] = fills[f].fill(dts[d], N_BIG, &r);
            }
            bilo_set_num_threads(0);
            tap_ok(same_data(by_threads[0], by_threads[1]),
                   "%s %s: 1e6 elements bit-identical at 1 and 2 threads", fills[f].name, dn);
        }
}

/* ---- moments ------------------------------------------------------------------------------ */

static void moments(bilo_tensor *t, double *mean, double *var, double *lo, double *hi)
{
    int64_t n = bilo_numel(t);
    double s = 0, s2 = 0;
    *lo = INFINITY;
    *hi = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        double v = bilo_get_flat(t, i);
        s += v;
        *lo = v < *lo ? v : *lo;
        *hi = v > *hi ? v : *hi;
    }
    *mean = s / (double)n;
    for (int64_t i = 0; i < n; i++) {
        double dv = bilo_get_flat(t, i) - *mean;
        s2 += dv * dv;
    }
    *var = s2 / (double)(n - 1);
}

static void test_moments(void)
{
    const double n = N_BIG;
    /* 5 standard errors: mean of N(0,1): 1/sqrt(n); sample variance: sqrt(2/n); mean of
       U[0,1): sqrt(1/12/n); Bernoulli(0.3) frequency: sqrt(0.21/n). */
    const double b_mean = 5 / sqrt(n), b_var = 5 * sqrt(2 / n);
    const double b_unif = 5 * sqrt(1.0 / 12 / n), b_bern = 5 * sqrt(0.3 * 0.7 / n);
    static const bilo_dtype dts[] = {BILO_F32, BILO_F64};
    for (int d = 0; d < 2; d++) {
        const char *dn = bilo_dtype_name(dts[d]);
        double mean, var, lo, hi;
        bilo_rng rng = bilo_rng_make(12345 + (uint64_t)d, 0);

        moments(bilo_randn(dts[d], BILO_SHAPE(N_BIG), &rng), &mean, &var, &lo, &hi);
        tap_ok(fabs(mean) < b_mean, "randn %s: |mean| %.2e < %.2e (5 s.e.)", dn, fabs(mean),
               b_mean);
        tap_ok(fabs(var - 1) < b_var, "randn %s: |var - 1| %.2e < %.2e (5 s.e.)", dn,
               fabs(var - 1), b_var);

        moments(bilo_rand(dts[d], BILO_SHAPE(N_BIG), &rng), &mean, &var, &lo, &hi);
        tap_ok(fabs(mean - 0.5) < b_unif, "rand %s: |mean - 0.5| %.2e < %.2e (5 s.e.)", dn,
               fabs(mean - 0.5), b_unif);
        tap_ok(lo >= 0 && hi < 1, "rand %s: min %.3g >= 0, max 1 - %.3g < 1", dn, lo, 1 - hi);

        bilo_tensor *bern = bilo_bernoulli(dts[d], BILO_SHAPE(N_BIG), 0.3, &rng);
        moments(bern, &mean, &var, &lo, &hi);
        bool binary = bern != NULL;
        for (int64_t i = 0; binary && i < N_BIG; i++) {
            double v = bilo_get_flat(bern, i);
            binary = v == 0 || v == 1;
        }
        tap_ok(binary, "bernoulli %s: values are 0 or 1", dn);
        tap_ok(fabs(mean - 0.3) < b_bern, "bernoulli(0.3) %s: |freq - 0.3| %.2e < %.2e (5 s.e.)",
               dn, fabs(mean - 0.3), b_bern);
        moments(bilo_bernoulli(dts[d], BILO_SHAPE(1000), 0.0, &rng), &mean, &var, &lo, &hi);
        tap_ok(hi == 0, "bernoulli(0) %s: all zeros", dn);
        moments(bilo_bernoulli(dts[d], BILO_SHAPE(1000), 1.0, &rng), &mean, &var, &lo, &hi);
        tap_ok(lo == 1, "bernoulli(1) %s: all ones", dn);
    }
}

/* ---- errors ------------------------------------------------------------------------------- */

static void expect_error(const bilo_tensor *t, int code, const char *op, const char *name)
{
    const char *msg = bilo_last_error();
    bool ok = !t && bilo_errcode() == code && strstr(msg, op);
    tap_ok(ok, "error: %s", name);
    if (!ok)
        tap_diag("got %s, code %d, message \"%s\"", t ? "a tensor" : "NULL", bilo_errcode(), msg);
    bilo_clear_error();
}

static void test_errors(void)
{
    bilo_rng rng = bilo_rng_make(1, 2);
    expect_error(bilo_rand(BILO_F32, BILO_SHAPE(3), NULL), BILO_ENULL, "bilo_rand",
                 "rand NULL rng");
    expect_error(bilo_randn(BILO_F64, BILO_SHAPE(3), NULL), BILO_ENULL, "bilo_randn",
                 "randn NULL rng");
    expect_error(bilo_bernoulli(BILO_F64, BILO_SHAPE(3), 0.5, NULL), BILO_ENULL,
                 "bilo_bernoulli", "bernoulli NULL rng");
    expect_error(bilo_bernoulli(BILO_F64, BILO_SHAPE(3), 1.5, &rng), BILO_EINVAL,
                 "bilo_bernoulli", "bernoulli p = 1.5");
    expect_error(bilo_bernoulli(BILO_F64, BILO_SHAPE(3), -0.1, &rng), BILO_EINVAL,
                 "bilo_bernoulli", "bernoulli p = -0.1");
    expect_error(bilo_bernoulli(BILO_F64, BILO_SHAPE(3), NAN, &rng), BILO_EINVAL,
                 "bilo_bernoulli", "bernoulli p = NaN");
    expect_error(bilo_rand(BILO_I64, BILO_SHAPE(3), &rng), BILO_EDTYPE, "bilo_rand",
                 "rand i64 dtype");
    expect_error(bilo_randn(BILO_F32, BILO_SHAPE(2, -1), &rng), BILO_EINVAL, "bilo_randn",
                 "randn negative size");
    tap_ok(rng.counter == 0, "failed draws leave the counter alone");

    static const struct {
        const char *op;
        double (*draw)(bilo_rng *);
    } scalar_draws[] = {{"bilo_rng_uniform", bilo_rng_uniform},
                        {"bilo_rng_normal", bilo_rng_normal}};
    for (int i = 0; i < 2; i++) {
        double v = scalar_draws[i].draw(NULL);
        tap_ok(isnan(v) && bilo_errcode() == BILO_ENULL &&
                   strstr(bilo_last_error(), scalar_draws[i].op),
               "error: %s(NULL) is NaN", scalar_draws[i].op);
        bilo_clear_error();
    }
}

int main(void)
{
    bilo_scope_begin();
    test_kat();
    test_mapping();
    test_reproducibility();
    test_moments();
    test_errors();
    bilo_scope_end();
    return tap_done();
}
