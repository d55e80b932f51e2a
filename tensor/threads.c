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

/* Every thread when the work is worth a region and none is open already, else 1. */
static int threads_if(bool worth_a_region)
{
#ifdef _OPENMP
    if (!worth_a_region || omp_in_parallel()) return 1;
    return bilo_get_num_threads();
#else
    (void)worth_a_region;
    return 1;
#endif
}

int bilo__threads_for(int64_t work) { return threads_if(work >= BILO_PAR_MIN_WORK); }

int bilo__threads_for_elems(int64_t n, int cost)
{
    return threads_if(n >= BILO_PAR_MIN_ELEM_WORK / cost);
}
