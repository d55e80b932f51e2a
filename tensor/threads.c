/* Kernel thread count. bilo never calls omp_set_num_threads: the host program's OpenMP
   setting stays its own, bilo passes num_threads() to its own regions instead. */
#include "tensor_impl.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static atomic_int configured_threads; /* 0 = OpenMP's default */

BILO_API void bilo_set_num_threads(int n) { atomic_store(&configured_threads, n > 0 ? n : 0); }

BILO_API int bilo_get_num_threads(void)
{
    int n = atomic_load(&configured_threads);
#ifdef _OPENMP
    return n ? n : omp_get_max_threads();
#else
    (void)n;
    return 1;
#endif
}

int bilo__threads_for(int64_t work)
{
#ifdef _OPENMP
    if (work < BILO_PAR_MIN_WORK || omp_in_parallel()) return 1;
    return bilo_get_num_threads();
#else
    (void)work;
    return 1;
#endif
}
