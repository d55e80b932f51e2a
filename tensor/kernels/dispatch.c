/* Kernel tables: the scalar reference; on CPUs with AVX2 and FMA, the AVX2 set layered on top
   of it; on CPUs that also have AVX-512F, the avx512 table: the AVX2 set with the AVX-512
   GEMM. All are filled once (call_once); BILO_DISABLE (a comma-separated list) hides a set:
   "avx512" the AVX-512 GEMM, "avx2" every vector kernel (the avx512 table builds on the
   AVX2 one), so one machine can exercise every path. */
#include "kernels.h"
#include "tensor_impl.h"

#include <stdlib.h>
#include <string.h>
#include <threads.h>

static bilo_kernels scalar_table;
static bilo_kernels avx2_table;
static bilo_kernels avx512_table;
static bool avx2_usable, avx512_usable;
static once_flag tables_once = ONCE_FLAG_INIT;

/* True when the comma-separated list `list` contains `name` (blanks around items ignored). */
static bool list_names(const char *list, const char *name)
{
    const size_t len = strlen(name);
    for (const char *item = list; *item;) {
        item += strspn(item, " \t");
        size_t item_len = strcspn(item, ",");
        while (item_len > 0 && (item[item_len - 1] == ' ' || item[item_len - 1] == '\t'))
            item_len--;
        if (item_len == len && strncmp(item, name, len) == 0) return true;
        item += strcspn(item, ",");
        if (*item == ',') item++;
    }
    return false;
}

static bool isa_disabled(const char *isa)
{
    const char *list = getenv("BILO_DISABLE");
    return list && list_names(list, isa);
}

static void fill_tables(void)
{
    scalar_table.isa = "scalar";
    bilo__fill_unary_scalar(&scalar_table);
    bilo__fill_binary_scalar(&scalar_table);
    bilo__fill_reduce_scalar(&scalar_table);
    bilo__fill_gemm_scalar(&scalar_table);

    __builtin_cpu_init();
    avx2_usable = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                  !isa_disabled("avx2");
    if (!avx2_usable) return;
    avx2_table = scalar_table;
    avx2_table.isa = "avx2";
    bilo__fill_unary_avx2(&avx2_table);
    bilo__fill_binary_avx2(&avx2_table);
    bilo__fill_reduce_avx2(&avx2_table);
    bilo__fill_gemm_avx2(&avx2_table);

    avx512_usable = __builtin_cpu_supports("avx512f") && !isa_disabled("avx512");
    if (!avx512_usable) return;
    avx512_table = avx2_table;
    avx512_table.isa = "avx512";
    bilo__fill_gemm_avx512(&avx512_table);
}

const bilo_kernels *bilo__kernels(void)
{
    call_once(&tables_once, fill_tables);
    return avx512_usable ? &avx512_table : avx2_usable ? &avx2_table : &scalar_table;
}

/* A table disabled through BILO_DISABLE counts as absent, as on a CPU without it. */
const bilo_kernels *bilo__kernels_for(const char *isa)
{
    call_once(&tables_once, fill_tables);
    if (strcmp(isa, "scalar") == 0) return &scalar_table;
    if (strcmp(isa, "avx2") == 0) return avx2_usable ? &avx2_table : NULL;
    if (strcmp(isa, "avx512") == 0) return avx512_usable ? &avx512_table : NULL;
    return NULL;
}

BILO_API const char *bilo_kernel_isa(void) { return bilo__kernels()->isa; }
