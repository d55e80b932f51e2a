/* Kernel tables: the scalar reference against long-double libm formulas written here, and
   the AVX2 table (when this CPU has it and BILO_DISABLE does not hide it) against the scalar
   reference, over sizes 0, 1, 7, 8, 9, 31, 1000, 4097 and unaligned starts, f32 and f64.
   Every table's GEMM (scalar, avx2, avx512: the avx2 table with an AVX-512 GEMM) runs the
   shape list below against a long-double triple loop; the avx512 GEMM must write the same
   bits as the avx2 one (same paths, same per-element order).

   Tolerances, in units in the last place of the dtype at the expected value:
   - scalar vs long double: 1 ulp for f32 (one rounding of a double result), for f64 1 ulp
     for libm's elementary functions and rsqrt (2 for glibc's tanh), 3 for the compositions
     sigmoid and softplus; 0.5 for correctly rounded IEEE operations.
   - AVX2 vs scalar: 0 (bit-identical) for IEEE operations (neg, abs, sqrt, square,
     reciprocal, relu, sign, scalar + * -, binary + - * / max min and comparisons, f64
     rsqrt); 1 for f32 rsqrt (rounded twice in float, once from double by the scalar); 2 for
     SLEEF u10 functions (1 ulp each side); 4 for f32 tanh (SLEEF u35, 3.5 ulp) and for the
     compositions sigmoid and softplus.
   - sums and dot products: |error| <= n·eps64·sum|terms| (recursive summation bound), both
     dtypes accumulate in double; axpy: 2·eps·(|y| + |alpha·x|).
   - gemm: |error| <= (k + 2)·eps·sum_p |a_ip·b_pj| (+|C| when accumulating), against a
     naive long-double triple loop. */
#include "kernels.h"
#include "tap.h"

#include <float.h>
#include <stdint.h>
#include <string.h>

static const int64_t sizes[] = {0, 1, 7, 8, 9, 31, 1000, 4097};
#define N_SIZES ((int)(sizeof sizes / sizeof sizes[0]))
#define MAX_N 4097
#define GUARD 8              /* elements after the output checked to be untouched */
#define SENTINEL 12345.0

/* ---- small helpers ------------------------------------------------------------------ */

static uint64_t rng_state = 0x9E3779B97F4A7C15u;
static double uniform(double lo, double hi)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return lo + (hi - lo) * (double)(rng_state >> 11) * 0x1p-53;
}

/* Spacing of the dtype's numbers at |w| (denormal spacing below the normal range). */
static long double ulp_at(long double w, bool f32)
{
    w = fabsl(w);
    if (f32) return w < FLT_MIN ? 0x1p-149L : ldexpl(1, ilogbl(w) - 23);
    return w < DBL_MIN ? 0x1p-1074L : ldexpl(1, ilogbl(w) - 52);
}

/* Error of got in ulps of want; NaN and infinities must match exactly. */
static double ulp_error(double got, long double want, bool f32)
{
    if (isnan(got) || isnan(want)) return isnan(got) && isnan(want) ? 0 : INFINITY;
    /* Overflow: the dtype's nearest value to a huge finite truth is infinite. */
    const long double rounded = f32 ? (long double)(float)want : (long double)(double)want;
    if ((long double)got == want || (isinf(got) && got == rounded)) return 0;
    if (isinf(got) || isinf(want)) return INFINITY;
    return (double)(fabsl((long double)got - want) / ulp_at(want, f32));
}

/* Buffers of doubles or floats addressed as one type by the dtype flag. */
typedef struct {
    bool f32;
    void *data;
} buf;

static buf buf_new(bool f32, int64_t n)
{
    buf b = {f32, malloc((size_t)n * (f32 ? sizeof(float) : sizeof(double)))};
    return b;
}
static double get(buf b, int64_t i) { return b.f32 ? ((float *)b.data)[i] : ((double *)b.data)[i]; }
static void set(buf b, int64_t i, double v)
{
    if (b.f32) ((float *)b.data)[i] = (float)v;
    else ((double *)b.data)[i] = v;
}
static void *at(buf b, int64_t i)
{
    return (char *)b.data + i * (b.f32 ? sizeof(float) : sizeof(double));
}
static void fill(buf b, int64_t n, double v)
{
    for (int64_t i = 0; i < n; i++) set(b, i, v);
}
static const char *dtype_name(bool f32) { return f32 ? "f32" : "f64"; }

/* Output slots [0, off) and [off+n, off+n+GUARD) must still hold the sentinel. */
static bool guards_intact(buf y, int64_t off, int64_t n)
{
    for (int64_t i = 0; i < off; i++)
        if (get(y, i) != SENTINEL) return false;
    for (int64_t i = off + n; i < off + n + GUARD; i++)
        if (get(y, i) != SENTINEL) return false;
    return true;
}

/* ---- scalar reference against hand-picked values ------------------------------------ */

static double unary1(const bilo_kernels *k, bilo_unary_kernel op, double x, double p)
{
    double y;
    k->unary_f64[op](&x, &y, 1, p);
    return y;
}

static void test_reference_values(const bilo_kernels *s)
{
    tap_close(unary1(s, BILO_KU_SIGMOID, 0, 0), 0.5, 0, 0, "scalar sigmoid(0) = 1/2");
    tap_close(unary1(s, BILO_KU_SIGMOID, -800, 0), exp(-800.0), 0, 1e-15,
              "scalar sigmoid(-800) = e^-800 (no overflow)");
    tap_close(unary1(s, BILO_KU_SIGMOID, 800, 0), 1, 0, 0, "scalar sigmoid(800) = 1");
    tap_close(unary1(s, BILO_KU_SOFTPLUS, 0, 0), log(2.0), 0, 1e-16, "scalar softplus(0) = log 2");
    const double sp = unary1(s, BILO_KU_SOFTPLUS, -100, 0);
    tap_ok(sp > 0 && fabs(sp - exp(-100.0)) <= 1e-15 * exp(-100.0),
           "scalar softplus(-100) = e^-100 (tiny, not 0): %g", sp);
    tap_close(unary1(s, BILO_KU_SOFTPLUS, 800, 0), 800, 0, 0, "scalar softplus(800) = 800");
    tap_ok(unary1(s, BILO_KU_SIGN, -3, 0) == -1 && unary1(s, BILO_KU_SIGN, 0, 0) == 0 &&
               unary1(s, BILO_KU_SIGN, 2, 0) == 1,
           "scalar sign(-3, 0, 2) = (-1, 0, 1)");
    tap_ok(unary1(s, BILO_KU_RELU, -2, 0) == 0 && unary1(s, BILO_KU_RELU, 2.5, 0) == 2.5,
           "scalar relu(-2, 2.5) = (0, 2.5)");
    tap_close(unary1(s, BILO_KU_RSQRT, 4, 0), 0.5, 0, 0, "scalar rsqrt(4) = 1/2");
    tap_close(unary1(s, BILO_KU_POW_SCALAR, -2, 3), -8, 0, 0, "scalar pow(-2, 3) = -8");
    tap_close(unary1(s, BILO_KU_RSUB_SCALAR, 2, 5), 3, 0, 0, "scalar rsub(2; 5) = 3");
    float xf = 1, yf;
    s->unary_f32[BILO_KU_ADD_SCALAR](&xf, &yf, 1, 0.1);
    tap_ok(yf == 1.0f + 0.1f, "scalar f32 add_scalar rounds p to float first: 1 + 0.1f");
}

/* ---- unary kernels ------------------------------------------------------------------ */

typedef struct {
    double lo32, hi32, lo64, hi64; /* input range; log-uniform when lo > 0 */
    double ref32, ref64;           /* scalar vs long double, ulps */
    double vec32, vec64;           /* avx2 vs scalar, ulps */
} unary_spec;

static const unary_spec unary_specs[BILO_KU_COUNT] = {
    [BILO_KU_NEG] = {-10, 10, -10, 10, 0, 0, 0, 0},
    [BILO_KU_ABS] = {-10, 10, -10, 10, 0, 0, 0, 0},
    [BILO_KU_EXP] = {-100, 100, -800, 800, 1, 1, 2, 2},
    [BILO_KU_LOG] = {1e-30, 1e30, 1e-300, 1e300, 1, 1, 2, 2},
    [BILO_KU_LOG1P] = {-0.999, 1e6, -0.999, 1e6, 1, 1, 2, 2},
    [BILO_KU_EXPM1] = {-50, 80, -50, 700, 1, 1, 2, 2},
    [BILO_KU_SQRT] = {1e-30, 1e30, 1e-300, 1e300, 0.5, 0.5, 0, 0},
    [BILO_KU_RSQRT] = {1e-30, 1e30, 1e-300, 1e300, 1, 1, 1, 0},
    [BILO_KU_SQUARE] = {-1e10, 1e10, -1e100, 1e100, 0.5, 0.5, 0, 0},
    [BILO_KU_RECIPROCAL] = {-1e10, 1e10, -1e100, 1e100, 0.5, 0.5, 0, 0},
    [BILO_KU_SIN] = {-1000, 1000, -1000, 1000, 1, 1, 2, 2},
    [BILO_KU_COS] = {-1000, 1000, -1000, 1000, 1, 1, 2, 2},
    [BILO_KU_TANH] = {-20, 20, -40, 40, 1, 2, 4, 2},
    [BILO_KU_SIGMOID] = {-100, 100, -800, 800, 1, 3, 4, 4},
    [BILO_KU_RELU] = {-10, 10, -10, 10, 0, 0, 0, 0},
    [BILO_KU_SOFTPLUS] = {-100, 100, -800, 800, 1, 3, 4, 4},
    [BILO_KU_ERF] = {-6, 6, -8, 8, 1, 1, 2, 2},
    [BILO_KU_SIGN] = {-10, 10, -10, 10, 0, 0, 0, 0},
    [BILO_KU_POW_SCALAR] = {1e-3, 1e3, 1e-3, 1e3, 1, 1, 2, 2},
    [BILO_KU_ADD_SCALAR] = {-10, 10, -10, 10, 0.5, 0.5, 0, 0},
    [BILO_KU_MUL_SCALAR] = {-10, 10, -10, 10, 0.5, 0.5, 0, 0},
    [BILO_KU_RSUB_SCALAR] = {-10, 10, -10, 10, 0.5, 0.5, 0, 0},
};

static const char *const unary_names[BILO_KU_COUNT] = {
#define NAME_(name) [BILO_KU_##name] = #name,
    BILO_UNARY_KERNELS(NAME_)
#undef NAME_
};

/* Independent long-double formulas; p already rounded to the kernel's dtype. */
static long double unary_truth(bilo_unary_kernel op, long double x, long double p)
{
    switch (op) {
    case BILO_KU_NEG: return -x;
    case BILO_KU_ABS: return fabsl(x);
    case BILO_KU_EXP: return expl(x);
    case BILO_KU_LOG: return logl(x);
    case BILO_KU_LOG1P: return log1pl(x);
    case BILO_KU_EXPM1: return expm1l(x);
    case BILO_KU_SQRT: return sqrtl(x);
    case BILO_KU_RSQRT: return 1 / sqrtl(x);
    case BILO_KU_SQUARE: return x * x;
    case BILO_KU_RECIPROCAL: return 1 / x;
    case BILO_KU_SIN: return sinl(x);
    case BILO_KU_COS: return cosl(x);
    case BILO_KU_TANH: return tanhl(x);
    case BILO_KU_SIGMOID: return 1 / (1 + expl(-x));
    case BILO_KU_RELU: return x > 0 ? x : 0;
    case BILO_KU_SOFTPLUS: return log1pl(expl(x));
    case BILO_KU_ERF: return erfl(x);
    case BILO_KU_SIGN: return x > 0 ? 1 : x < 0 ? -1 : 0;
    case BILO_KU_POW_SCALAR: return powl(x, p);
    case BILO_KU_ADD_SCALAR: return x + p;
    case BILO_KU_MUL_SCALAR: return x * p;
    case BILO_KU_RSUB_SCALAR: return p - x;
    case BILO_KU_COUNT: break;
    }
    return NAN;
}

/* Inputs: special values first, then random ones in the kernel's range. */
static void unary_inputs(buf x, int64_t n, const unary_spec *sp)
{
    const double lo = x.f32 ? sp->lo32 : sp->lo64, hi = x.f32 ? sp->hi32 : sp->hi64;
    const double specials[] = {0, -0.0, 1, -1, 0.5, 1e-10, -3e-8, lo, hi, 2, -2,
                               INFINITY, -INFINITY, NAN};
    const int n_specials = (int)(sizeof specials / sizeof specials[0]);
    for (int64_t i = 0; i < n; i++) {
        double v = lo > 0 ? lo * pow(hi / lo, uniform(0, 1)) : uniform(lo, hi);
        set(x, i, i < n_specials && n > 1 ? specials[i] : v);
    }
}

static double scalar_params(bilo_unary_kernel op, int i)
{
    static const double pow_params[] = {2, 0.5, -1.5, 3, 1.0 / 3};
    if (op == BILO_KU_POW_SCALAR) return pow_params[i];
    return op == BILO_KU_ADD_SCALAR || op == BILO_KU_MUL_SCALAR || op == BILO_KU_RSUB_SCALAR
               ? 0.3 : 0;
}

static void run_unary(const bilo_kernels *k, bilo_unary_kernel op, buf x, buf y, int64_t n,
                      double p)
{
    if (x.f32) k->unary_f32[op](x.data, y.data, n, p);
    else k->unary_f64[op](x.data, y.data, n, p);
}

/* Worst error over every size, offset and parameter: `test` against long-double truth, or
   against `ref` when given. Returns INFINITY if a guard element was overwritten. */
static double unary_worst(const bilo_kernels *test, const bilo_kernels *ref,
                          bilo_unary_kernel op, bool f32)
{
    const int n_params = op == BILO_KU_POW_SCALAR ? 5 : 1;
    buf x = buf_new(f32, MAX_N + 1), y = buf_new(f32, MAX_N + 1 + GUARD),
        r = buf_new(f32, MAX_N + 1);
    double worst = 0;
    for (int pi = 0; pi < n_params; pi++) {
        const double p = scalar_params(op, pi);
        const double pt = f32 ? (float)p : p;
        for (int si = 0; si < N_SIZES; si++)
            for (int64_t off = 0; off <= 1; off++) {
                const int64_t n = sizes[si];
                unary_inputs(x, MAX_N + 1, &unary_specs[op]);
                fill(y, MAX_N + 1 + GUARD, SENTINEL);
                run_unary(test, op, (buf){f32, at(x, off)}, (buf){f32, at(y, off)}, n, p);
                if (ref) run_unary(ref, op, (buf){f32, at(x, off)}, r, n, p);
                if (!guards_intact(y, off, n)) worst = INFINITY;
                for (int64_t i = 0; i < n; i++) {
                    const long double want =
                        ref ? get(r, i) : unary_truth(op, get(x, off + i), pt);
                    const double e = ulp_error(get(y, off + i), want, f32);
                    if (e > worst) worst = e;
                }
            }
    }
    free(x.data);
    free(y.data);
    free(r.data);
    return worst;
}

static void test_unary(const bilo_kernels *scalar, const bilo_kernels *avx2)
{
    for (int op = 0; op < BILO_KU_COUNT; op++)
        for (int f = 0; f < 2; f++) {
            const bool f32 = f == 0;
            const unary_spec *sp = &unary_specs[op];
            const double tol_ref = f32 ? sp->ref32 : sp->ref64;
            const double e = unary_worst(scalar, NULL, op, f32);
            tap_ok(e <= tol_ref, "scalar %s %s vs long double: %.3g ulp (tol %g)",
                   unary_names[op], dtype_name(f32), e, tol_ref);
            if (!avx2) continue;
            const double tol_vec = f32 ? sp->vec32 : sp->vec64;
            const double ev = unary_worst(avx2, scalar, op, f32);
            tap_ok(ev <= tol_vec, "avx2 %s %s vs scalar: %.3g ulp (tol %g)", unary_names[op],
                   dtype_name(f32), ev, tol_vec);
        }
}

/* ---- binary kernels, where, axpy ----------------------------------------------------- */

static const char *const binary_names[BILO_KB_COUNT] = {
#define NAME_(name) [BILO_KB_##name] = #name,
    BILO_BINARY_KERNELS(NAME_)
#undef NAME_
};

static long double binary_truth(bilo_binary_kernel op, long double a, long double b)
{
    switch (op) {
    case BILO_KB_ADD: return a + b;
    case BILO_KB_SUB: return a - b;
    case BILO_KB_MUL: return a * b;
    case BILO_KB_DIV: return a / b;
    case BILO_KB_POW: return powl(a, b);
    case BILO_KB_MAXIMUM: return isnan(a) || isnan(b) ? NAN : a > b ? a : b;
    case BILO_KB_MINIMUM: return isnan(a) || isnan(b) ? NAN : a < b ? a : b;
    case BILO_KB_GT: return a > b;
    case BILO_KB_GE: return a >= b;
    case BILO_KB_LT: return a < b;
    case BILO_KB_LE: return a <= b;
    case BILO_KB_EQ: return a == b;
    /* fused, so that the truth keeps its digits where 1 - a² or a - a² cancels */
    case BILO_KB_TANH_GRAD: return b * fmal(-a, a, 1);
    case BILO_KB_SIGMOID_GRAD: return b * fmal(-a, a, a);
    case BILO_KB_COUNT: break;
    }
    return NAN;
}

/* a and b in [-10, 10] with ties every fifth element and a NaN in each; pow gets a > 0,
   plus negative bases with integer exponents. */
static void binary_inputs(buf a, buf b, int64_t n, bool is_pow)
{
    for (int64_t i = 0; i < n; i++) {
        double va = uniform(-10, 10), vb = uniform(-10, 10);
        if (is_pow) {
            va = i % 7 == 3 ? -uniform(0.1, 3) : uniform(0.01, 10);
            vb = i % 7 == 3 ? floor(uniform(-4, 4)) : uniform(-3, 3);
        } else if (i % 5 == 0) {
            vb = va;
        }
        set(a, i, va);
        set(b, i, vb);
    }
    if (n > 40) {
        set(a, 17, NAN);
        set(b, 33, NAN);
    }
}

static void run_binary(const bilo_kernels *k, bilo_binary_kernel op, buf a, int64_t sa, buf b,
                       int64_t sb, buf y, int64_t n)
{
    if (a.f32) k->binary_f32[op](a.data, sa, b.data, sb, y.data, n);
    else k->binary_f64[op](a.data, sa, b.data, sb, y.data, n);
}

static double binary_worst(const bilo_kernels *test, const bilo_kernels *ref,
                           bilo_binary_kernel op, bool f32)
{
    buf a = buf_new(f32, MAX_N + 1), b = buf_new(f32, MAX_N + 1),
        y = buf_new(f32, MAX_N + 1 + GUARD), r = buf_new(f32, MAX_N + 1);
    double worst = 0;
    for (int strides = 0; strides < 4; strides++) {
        const int64_t sa = strides & 1, sb = strides >> 1;
        for (int si = 0; si < N_SIZES; si++)
            for (int64_t off = 0; off <= 1; off++) {
                const int64_t n = sizes[si];
                binary_inputs(a, b, MAX_N + 1, op == BILO_KB_POW);
                fill(y, MAX_N + 1 + GUARD, SENTINEL);
                const buf ao = {f32, at(a, off)}, bo = {f32, at(b, off)};
                run_binary(test, op, ao, sa, bo, sb, (buf){f32, at(y, off)}, n);
                if (ref) run_binary(ref, op, ao, sa, bo, sb, r, n);
                if (!guards_intact(y, off, n)) worst = INFINITY;
                for (int64_t i = 0; i < n; i++) {
                    const long double want =
                        ref ? get(r, i)
                            : binary_truth(op, get(a, off + i * sa), get(b, off + i * sb));
                    const double e = ulp_error(get(y, off + i), want, f32);
                    if (e > worst) worst = e;
                }
            }
    }
    free(a.data);
    free(b.data);
    free(y.data);
    free(r.data);
    return worst;
}

static void test_binary(const bilo_kernels *scalar, const bilo_kernels *avx2)
{
    for (int op = 0; op < BILO_KB_COUNT; op++)
        for (int f = 0; f < 2; f++) {
            const bool f32 = f == 0;
            /* the activation gradients round twice in double (a fused multiply-add, then the
               product by g): up to 1.5 ulp in f64, a double rounded to f32 in f32 */
            const bool act_grad = op == BILO_KB_TANH_GRAD || op == BILO_KB_SIGMOID_GRAD;
            const double tol_ref = op == BILO_KB_POW ? 1 : act_grad ? (f32 ? 0.5 : 1.5) : 0.5;
            const double e = binary_worst(scalar, NULL, op, f32);
            tap_ok(e <= tol_ref, "scalar %s %s vs long double, strides (1|0, 1|0): %.3g ulp",
                   binary_names[op], dtype_name(f32), e);
            if (!avx2) continue;
            const double tol_vec = op == BILO_KB_POW ? 2 : 0;
            const double ev = binary_worst(avx2, scalar, op, f32);
            tap_ok(ev <= tol_vec, "avx2 %s %s vs scalar, strides (1|0, 1|0): %.3g ulp",
                   binary_names[op], dtype_name(f32), ev);
        }
}

/* where over all 8 stride combinations, against m != 0 ? a : b computed here. */
static bool where_ok(const bilo_kernels *k, bool f32)
{
    buf m = buf_new(f32, MAX_N + 1), a = buf_new(f32, MAX_N + 1), b = buf_new(f32, MAX_N + 1),
        y = buf_new(f32, MAX_N + 1 + GUARD);
    const double masks[] = {0, -0.0, 1, -2, NAN};
    for (int64_t i = 0; i < MAX_N + 1; i++) {
        set(m, i, masks[i % 5]);
        set(a, i, uniform(-1, 1));
        set(b, i, uniform(-1, 1));
    }
    bool ok = true;
    for (int strides = 0; strides < 8; strides++)
        for (int si = 0; si < N_SIZES; si++)
            for (int64_t off = 0; off <= 1; off++) {
                const int64_t sm = strides & 1, sa = (strides >> 1) & 1, sb = strides >> 2,
                              n = sizes[si];
                fill(y, MAX_N + 1 + GUARD, SENTINEL);
                if (f32)
                    k->where_f32(at(m, off), sm, at(a, off), sa, at(b, off), sb, at(y, off), n);
                else
                    k->where_f64(at(m, off), sm, at(a, off), sa, at(b, off), sb, at(y, off), n);
                ok = ok && guards_intact(y, off, n);
                for (int64_t i = 0; i < n; i++) {
                    const double mv = get(m, off + i * sm);
                    const double want = mv != 0 ? get(a, off + i * sa) : get(b, off + i * sb);
                    ok = ok && get(y, off + i) == want;
                }
            }
    free(m.data);
    free(a.data);
    free(b.data);
    free(y.data);
    return ok;
}

static bool axpy_ok(const bilo_kernels *k, bool f32)
{
    buf x = buf_new(f32, MAX_N + 1), y = buf_new(f32, MAX_N + 1 + GUARD),
        y0 = buf_new(f32, MAX_N + 1);
    const double alpha = -0.7, eps = f32 ? FLT_EPSILON : DBL_EPSILON;
    bool ok = true;
    for (int si = 0; si < N_SIZES; si++)
        for (int64_t off = 0; off <= 1; off++) {
            const int64_t n = sizes[si];
            fill(y, MAX_N + 1 + GUARD, SENTINEL);
            for (int64_t i = 0; i < n; i++) {
                set(x, off + i, uniform(-10, 10));
                set(y, off + i, uniform(-10, 10));
                set(y0, i, get(y, off + i));
            }
            if (f32) k->axpy_f32(n, (float)alpha, at(x, off), at(y, off));
            else k->axpy_f64(n, alpha, at(x, off), at(y, off));
            ok = ok && guards_intact(y, off, n);
            const double a = f32 ? (float)alpha : alpha;
            for (int64_t i = 0; i < n; i++) {
                const long double ax = (long double)a * get(x, off + i);
                const long double want = get(y0, i) + ax;
                const long double tol = 2 * eps * (fabsl(get(y0, i)) + fabsl(ax));
                ok = ok && fabsl(get(y, off + i) - want) <= tol;
            }
        }
    free(x.data);
    free(y.data);
    free(y0.data);
    return ok;
}

/* ---- reductions ---------------------------------------------------------------------- */

static bool sum_dot_ok(const bilo_kernels *k, bool f32)
{
    buf a = buf_new(f32, MAX_N + 1), b = buf_new(f32, MAX_N + 1);
    for (int64_t i = 0; i < MAX_N + 1; i++) {
        set(a, i, uniform(-100, 100));
        set(b, i, uniform(-1, 1));
    }
    bool ok = true;
    for (int si = 0; si < N_SIZES; si++)
        for (int64_t off = 0; off <= 1; off++) {
            const int64_t n = sizes[si];
            long double sum = 0, dot = 0, abs_sum = 0, abs_dot = 0;
            for (int64_t i = 0; i < n; i++) {
                const long double av = get(a, off + i), bv = get(b, off + i);
                sum += av;
                dot += av * bv;
                abs_sum += fabsl(av);
                abs_dot += fabsl(av * bv);
            }
            const double got_sum = f32 ? k->sum_f32(at(a, off), n) : k->sum_f64(at(a, off), n);
            const double got_dot = f32 ? k->dot_f32(at(a, off), at(b, off), n)
                                       : k->dot_f64(at(a, off), at(b, off), n);
            ok = ok && fabsl(got_sum - sum) <= (long double)n * DBL_EPSILON * abs_sum;
            ok = ok && fabsl(got_dot - dot) <= (long double)n * DBL_EPSILON * abs_dot;
        }
    free(a.data);
    free(b.data);
    return ok;
}

/* 1e8 + 1 - 1e8 is 0 in float arithmetic but 1 when accumulated in double. */
static bool sum_accumulates_in_double(const bilo_kernels *k)
{
    float x[19] = {1e8f, 1, -1e8f};
    float y[19] = {1, 1, 1};
    return k->sum_f32(x, 19) == 1 && k->dot_f32(x, y, 19) == 1;
}

static bool max_min_ok(const bilo_kernels *k, bool f32)
{
    buf x = buf_new(f32, MAX_N + 1);
    bool ok = true;
    for (int si = 0; si < N_SIZES; si++)
        for (int64_t off = 0; off <= 1; off++) {
            const int64_t n = sizes[si];
            if (n == 0) continue;
            for (int64_t i = 0; i < MAX_N + 1; i++) set(x, i, uniform(-1e3, 1e3));
            double hi = -INFINITY, lo = INFINITY;
            for (int64_t i = 0; i < n; i++) {
                hi = fmax(hi, get(x, off + i));
                lo = fmin(lo, get(x, off + i));
            }
            const double got_hi = f32 ? k->max_f32(at(x, off), n) : k->max_f64(at(x, off), n);
            const double got_lo = f32 ? k->min_f32(at(x, off), n) : k->min_f64(at(x, off), n);
            ok = ok && got_hi == hi && got_lo == lo;
            /* A NaN anywhere (first, middle, last element) makes both NaN. */
            const int64_t nan_at[] = {0, n / 2, n - 1};
            for (int j = 0; j < 3; j++) {
                const double saved = get(x, off + nan_at[j]);
                set(x, off + nan_at[j], NAN);
                ok = ok && isnan(f32 ? k->max_f32(at(x, off), n) : k->max_f64(at(x, off), n));
                ok = ok && isnan(f32 ? k->min_f32(at(x, off), n) : k->min_f64(at(x, off), n));
                set(x, off + nan_at[j], saved);
            }
        }
    free(x.data);
    return ok;
}

static void test_blas1_and_reductions(const bilo_kernels *k)
{
    for (int f = 0; f < 2; f++) {
        const bool f32 = f == 0;
        const char *isa = k->isa, *dt = dtype_name(f32);
        tap_ok(where_ok(k, f32), "%s where %s: 8 stride combinations, NaN mask selects a", isa, dt);
        tap_ok(axpy_ok(k, f32), "%s axpy %s within 2 eps (|y| + |alpha x|)", isa, dt);
        tap_ok(sum_dot_ok(k, f32), "%s sum and dot %s vs long double", isa, dt);
        tap_ok(max_min_ok(k, f32), "%s max and min %s, NaN first/middle/last propagates", isa,
               dt);
    }
    tap_ok(sum_accumulates_in_double(k), "%s sum/dot f32 accumulate in double", k->isa);
}

/* ---- gemm ---------------------------------------------------------------------------- */

typedef struct {
    int64_t m, n, k;
} gemm_shape;

static const gemm_shape gemm_shapes[] = {
    {1, 1, 1},      {7, 5, 3},    {17, 33, 9},  {64, 64, 64}, {100, 37, 129},
    {70, 50, 300} /* two KC slices */, {7, 4100, 20} /* two NC blocks */,
    {1, 300, 200} /* a row vector */, {300, 1, 200} /* a column vector */,
    {170, 90, 300} /* packed: two MC blocks, two KC slices, rows split over threads */,
    {90, 170, 300} /* packed, columns split over threads */, {2000, 1, 600} /* split Aᵀb */,
    {3000, 10, 40} /* thin, split over threads */,
    {500, 7, 301} /* thin: a k tail, two KC slices, split over threads */,
    {97, 12, 700} /* thin: three dot slices (f32) with a k tail, column tiles of 4, two
                     transposed slices, an odd row */,
    {57, 11, 601} /* thin: slices either way with k tails, column tiles of 3-4, Cᵀ rows 6+5 */,
    {41, 2, 19} /* thin, two columns: one dot tile of 2, a transposed k tail */,
    /* Column edges around one and two vectors of 8, 16 (and 4, 8) lanes, row edges of every
       tile height, k = 1 and a short odd k: */
    {32, 31, 17}, {31, 33, 1}, {13, 47, 17}, {38, 65, 5}, {7, 16, 33}, {20, 64, 1},
    {8, 48, 23},
    /* thin for 8 f32 / 4 f64 lanes, not for 16 / 8: */ {20, 10, 40}, {12, 9, 30},
};

typedef struct {
    bool f32, trans_a, trans_b, accumulate;
    int64_t m, n, k, lda, ldb, ldc;
    buf A, B, C;
} gemm_case;

/* Operands with non-tight leading dimensions; C's padding holds the sentinel. */
static gemm_case gemm_case_new(bool f32, gemm_shape s, bool ta, bool tb, bool acc)
{
    gemm_case g = {f32, ta, tb, acc, s.m, s.n, s.k, 0, 0, 0, {0}, {0}, {0}};
    const int64_t a_rows = ta ? s.k : s.m, b_rows = tb ? s.n : s.k;
    g.lda = (ta ? s.m : s.k) + 3;
    g.ldb = (tb ? s.k : s.n) + 1;
    g.ldc = s.n + 5;
    g.A = buf_new(f32, a_rows * g.lda);
    g.B = buf_new(f32, b_rows * g.ldb);
    g.C = buf_new(f32, s.m * g.ldc);
    for (int64_t i = 0; i < a_rows * g.lda; i++) set(g.A, i, uniform(-1, 1));
    for (int64_t i = 0; i < b_rows * g.ldb; i++) set(g.B, i, uniform(-1, 1));
    return g;
}

static void gemm_case_free(gemm_case *g)
{
    free(g->A.data);
    free(g->B.data);
    free(g->C.data);
}

/* C starts as random values when accumulating, as NaN otherwise (must never be read). */
static void gemm_reset_c(gemm_case *g, uint64_t seed)
{
    const uint64_t saved = rng_state;
    rng_state = seed;
    for (int64_t i = 0; i < g->m; i++)
        for (int64_t j = 0; j < g->ldc; j++)
            set(g->C, i * g->ldc + j, j >= g->n ? SENTINEL : g->accumulate ? uniform(-1, 1) : NAN);
    rng_state = saved;
}

static void gemm_run(const bilo_kernels *k, gemm_case *g, int threads)
{
    if (g->f32)
        k->gemm_f32(g->trans_a, g->trans_b, g->m, g->n, g->k, g->A.data, g->lda, g->B.data,
                    g->ldb, g->C.data, g->ldc, g->accumulate, threads);
    else
        k->gemm_f64(g->trans_a, g->trans_b, g->m, g->n, g->k, g->A.data, g->lda, g->B.data,
                    g->ldb, g->C.data, g->ldc, g->accumulate, threads);
}

/* Compare C against a naive long-double triple loop (c0 = C before the call). */
static bool gemm_matches(const gemm_case *g, buf c0)
{
    const long double eps = g->f32 ? FLT_EPSILON : DBL_EPSILON;
    for (int64_t i = 0; i < g->m; i++)
        for (int64_t j = 0; j < g->ldc; j++) {
            const double got = get(g->C, i * g->ldc + j);
            if (j >= g->n) {
                if (got != SENTINEL) return false;
                continue;
            }
            long double want = 0, bound = 0;
            for (int64_t p = 0; p < g->k; p++) {
                const long double a =
                    get(g->A, g->trans_a ? p * g->lda + i : i * g->lda + p);
                const long double b =
                    get(g->B, g->trans_b ? j * g->ldb + p : p * g->ldb + j);
                want += a * b;
                bound += fabsl(a * b);
            }
            if (g->accumulate) {
                want += get(c0, i * g->ldc + j);
                bound += fabsl(get(c0, i * g->ldc + j));
            }
            if (!(fabsl(got - want) <= (g->k + 2) * eps * bound)) return false;
        }
    return true;
}

/* All transpose and accumulate combinations of one shape; also threads 1 vs 2 identical. */
static void test_gemm_shape(const bilo_kernels *k, bool f32, gemm_shape s)
{
    bool ok = true, same = true;
    for (int variant = 0; variant < 8; variant++) {
        gemm_case g = gemm_case_new(f32, s, variant & 1, (variant >> 1) & 1, variant >> 2);
        buf c0 = buf_new(f32, s.m * g.ldc);
        gemm_reset_c(&g, 42 + variant);
        memcpy(c0.data, g.C.data, (size_t)(s.m * g.ldc) * (f32 ? sizeof(float) : sizeof(double)));
        gemm_run(k, &g, 1);
        ok = ok && gemm_matches(&g, c0);
        buf one_thread = buf_new(f32, s.m * g.ldc);
        const size_t bytes = (size_t)(s.m * g.ldc) * (f32 ? sizeof(float) : sizeof(double));
        memcpy(one_thread.data, g.C.data, bytes);
        gemm_reset_c(&g, 42 + variant);
        gemm_run(k, &g, 2);
        same = same && memcmp(one_thread.data, g.C.data, bytes) == 0;
        free(one_thread.data);
        free(c0.data);
        gemm_case_free(&g);
    }
    tap_ok(ok, "%s gemm %s %lldx%lldx%lld: 4 transposes x accumulate, padded ld", k->isa,
           dtype_name(f32), (long long)s.m, (long long)s.n, (long long)s.k);
    tap_ok(same, "%s gemm %s %lldx%lldx%lld: threads 1 and 2 bit-identical", k->isa,
           dtype_name(f32), (long long)s.m, (long long)s.n, (long long)s.k);
}

/* k = 0: C = 0 without reading C, or C unchanged when accumulating. */
static bool gemm_empty_k_ok(const bilo_kernels *k)
{
    double c[6] = {NAN, NAN, NAN, NAN, NAN, NAN}, d[6] = {1, 2, 3, 4, 5, 6};
    const double a = 0, b = 0;
    k->gemm_f64(false, false, 2, 3, 0, &a, 1, &b, 3, c, 3, false, 1);
    k->gemm_f64(false, true, 2, 3, 0, &a, 1, &b, 1, d, 3, true, 1);
    for (int i = 0; i < 6; i++)
        if (c[i] != 0 || d[i] != i + 1) return false;
    return true;
}

static void test_gemm(const bilo_kernels *k)
{
    const int n_shapes = (int)(sizeof gemm_shapes / sizeof gemm_shapes[0]);
    for (int f = 0; f < 2; f++)
        for (int s = 0; s < n_shapes; s++) test_gemm_shape(k, f == 0, gemm_shapes[s]);
    tap_ok(gemm_empty_k_ok(k), "%s gemm with k = 0 writes zeros / leaves C", k->isa);
}

/* Every shape of the list, all transposes, with and without accumulation: `k` (on 2 threads)
   writes the same bits into C as `ref` (on 1). */
static bool gemm_bit_identical(const bilo_kernels *k, const bilo_kernels *ref, bool f32)
{
    bool same = true;
    const int n_shapes = (int)(sizeof gemm_shapes / sizeof gemm_shapes[0]);
    for (int s = 0; s < n_shapes; s++)
        for (int variant = 0; variant < 8; variant++) {
            gemm_case g = gemm_case_new(f32, gemm_shapes[s], variant & 1, (variant >> 1) & 1,
                                        variant >> 2);
            const size_t bytes = (size_t)(g.m * g.ldc) * (f32 ? sizeof(float) : sizeof(double));
            buf want = buf_new(f32, g.m * g.ldc);
            gemm_reset_c(&g, 7 + variant);
            gemm_run(ref, &g, 1);
            memcpy(want.data, g.C.data, bytes);
            gemm_reset_c(&g, 7 + variant);
            gemm_run(k, &g, 2);
            same = same && memcmp(want.data, g.C.data, bytes) == 0;
            free(want.data);
            gemm_case_free(&g);
        }
    return same;
}

/* The avx512 table is the avx2 one with its own GEMM. */
static bool only_gemm_differs(const bilo_kernels *avx512, const bilo_kernels *avx2)
{
    bilo_kernels k = *avx512;
    k.isa = avx2->isa;
    k.gemm_f32 = avx2->gemm_f32;
    k.gemm_f64 = avx2->gemm_f64;
    return memcmp(&k, avx2, sizeof k) == 0 && avx512->gemm_f32 != avx2->gemm_f32 &&
           avx512->gemm_f64 != avx2->gemm_f64;
}

int main(void)
{
    const bilo_kernels *scalar = bilo__kernels_for("scalar");
    const bilo_kernels *avx2 = bilo__kernels_for("avx2");
    const bilo_kernels *avx512 = bilo__kernels_for("avx512");
    tap_ok(scalar != NULL && strcmp(scalar->isa, "scalar") == 0, "scalar table exists");
    tap_ok(bilo__kernels() == (avx512 ? avx512 : avx2 ? avx2 : scalar),
           "start-up table is the best available: %s", bilo__kernels()->isa);
    tap_ok(!avx512 || avx2, "an avx512 table implies an avx2 table");
    if (!avx2) tap_diag("no avx2 table (CPU lacks AVX2/FMA or BILO_DISABLE): scalar only");
    if (!avx512) tap_diag("no avx512 table (CPU lacks AVX-512F or BILO_DISABLE)");

    test_reference_values(scalar);
    test_unary(scalar, avx2);
    test_binary(scalar, avx2);
    test_blas1_and_reductions(scalar);
    test_gemm(scalar);
    if (avx2) {
        test_blas1_and_reductions(avx2);
        test_gemm(avx2);
    }
    if (avx512) {
        tap_ok(only_gemm_differs(avx512, avx2), "avx512 table = avx2 table but for the GEMM");
        test_gemm(avx512);
        for (int f = 0; f < 2; f++)
            tap_ok(gemm_bit_identical(avx512, avx2, f == 0),
                   "avx512 gemm %s bit-identical to avx2 over the shape list", dtype_name(f == 0));
    }
    return tap_done();
}
