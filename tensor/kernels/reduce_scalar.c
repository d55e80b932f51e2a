/* Scalar reference for the block reductions, f32 and f64 from one body each. Sums and dot
   products accumulate in double over four interleaved partial sums (independent chains the
   compiler can keep in flight); max and min return the first NaN they meet. */
#include "kernels.h"

#define BILO_EXTREME_(name, T, S, better)      \
    static T name##_##S(const T *x, int64_t n) \
    {                                          \
        T best = x[0];                         \
        for (int64_t i = 0; i < n; i++) {      \
            if (x[i] != x[i]) return x[i];     \
            if (x[i] better best) best = x[i]; \
        }                                      \
        return best;                           \
    }

#define BILO_REDUCE_SCALAR_(T, S)                                              \
    static double sum_##S(const T *x, int64_t n)                               \
    {                                                                          \
        double acc[4] = {0, 0, 0, 0};                                          \
        int64_t i = 0;                                                         \
        for (; i + 4 <= n; i += 4)                                             \
            for (int j = 0; j < 4; j++) acc[j] += (double)x[i + j];            \
        for (; i < n; i++) acc[0] += (double)x[i];                             \
        return (acc[0] + acc[1]) + (acc[2] + acc[3]);                          \
    }                                                                          \
    static double dot_##S(const T *a, const T *b, int64_t n)                   \
    {                                                                          \
        double acc[4] = {0, 0, 0, 0};                                          \
        int64_t i = 0;                                                         \
        for (; i + 4 <= n; i += 4)                                             \
            for (int j = 0; j < 4; j++) acc[j] += (double)a[i + j] * b[i + j]; \
        for (; i < n; i++) acc[0] += (double)a[i] * b[i];                      \
        return (acc[0] + acc[1]) + (acc[2] + acc[3]);                          \
    }                                                                          \
    BILO_EXTREME_(max, T, S, >)                                                \
    BILO_EXTREME_(min, T, S, <)
BILO_REDUCE_SCALAR_(float, f32)
BILO_REDUCE_SCALAR_(double, f64)

void bilo__fill_reduce_scalar(bilo_kernels *k)
{
    k->sum_f32 = sum_f32;
    k->sum_f64 = sum_f64;
    k->dot_f32 = dot_f32;
    k->dot_f64 = dot_f64;
    k->max_f32 = max_f32;
    k->max_f64 = max_f64;
    k->min_f32 = min_f32;
    k->min_f64 = min_f64;
}
