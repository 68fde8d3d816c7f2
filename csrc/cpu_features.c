#include "cpu_features.h"

static int g_limit = -1;

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
static int detect(void) {
    int f = 0;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) f |= MNNLITE_CPU_AVX2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        f |= MNNLITE_CPU_AVX512;
    if ((f & MNNLITE_CPU_AVX512) && __builtin_cpu_supports("avx512vnni")) f |= MNNLITE_CPU_VNNI;
    if ((f & MNNLITE_CPU_AVX512) && __builtin_cpu_supports("avx512vbmi")) f |= MNNLITE_CPU_VBMI;
    return f;
}
#else
static int detect(void) { return 0; }  /* ARM and others: scalar C (auto-vectorised by the compiler) */
#endif

int mnnlite_cpu_features(void) {
    static int cached = -1;
    if (cached < 0) cached = detect();
    return cached & g_limit;
}

void mnnlite_cpu_set_limit(int mask) { g_limit = mask; }
