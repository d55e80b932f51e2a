/* Private: the one parallel loop of the tensor ops. */
#ifndef BILO_PARALLEL_H
#define BILO_PARALLEL_H

#include <stdint.h>

/* for (int64_t VAR = 0; VAR < N; VAR++) { BODY }, split over NT threads with a static
   schedule when NT > 1 and run as a plain loop otherwise. The plain loop matters: an OpenMP
   region with a false if() clause still enters libgomp (a team allocation and futex calls
   per region), which costs more than a small op itself. */
#define BILO__PARALLEL_FOR(nt, var, n, ...)                                       \
    do {                                                                          \
        const int bilo__nt_ = (nt);                                               \
        const int64_t bilo__n_ = (n);                                             \
        if (bilo__nt_ > 1) {                                                      \
            _Pragma("omp parallel for num_threads(bilo__nt_) schedule(static)")   \
            for (int64_t var = 0; var < bilo__n_; var++) { __VA_ARGS__ }          \
        } else {                                                                  \
            for (int64_t var = 0; var < bilo__n_; var++) { __VA_ARGS__ }          \
        }                                                                         \
    } while (0)

#endif
