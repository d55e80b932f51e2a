/* The element loops of the in-place optimizer step (bilo_optim_step), one per rule and dtype,
   over a contiguous range. They live in optim_kernels.c, compiled with -fno-math-errno so that
   sqrt vectorizes; f32 parameters are updated in f32 arithmetic, as PyTorch does. */
#ifndef BILO_OPTIM_KERNELS_H
#define BILO_OPTIM_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

/* Loop-invariant scalars of one step; inv_bc1/inv_bc2 are 1/(1 − β^t) (Adam's bias
   corrections), adamw_keep is AdamW's decoupled shrink factor 1 − lr·weight_decay. */
typedef struct {
    double lr, weight_decay, momentum, beta1, beta2, eps, inv_bc1, inv_bc2, adamw_keep;
    bool nesterov, adamw;
} bilo__optim_consts;

/* s0/s1: the state buffers (momentum; Adam's m and v), NULL where the rule has none. */
void bilo__optim_update_f32(const bilo__optim_consts *k, bool adam, int64_t n, float *p,
                            const float *g, float *s0, float *s1);
void bilo__optim_update_f64(const bilo__optim_consts *k, bool adam, int64_t n, double *p,
                            const double *g, double *s0, double *s1);

#endif
