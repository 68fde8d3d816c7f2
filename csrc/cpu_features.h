/* Run-time CPU feature detection.  Kernels compile their SIMD variants with
 * __attribute__((target(...))) and pick one through these flags, so one portable
 * wheel runs the fastest path the machine has and the scalar path everywhere else. */
#ifndef MNNLITE_CPU_FEATURES_H
#define MNNLITE_CPU_FEATURES_H

enum {
    MNNLITE_CPU_AVX2 = 1 << 0,      /* AVX2 + FMA */
    MNNLITE_CPU_AVX512 = 1 << 1,    /* AVX-512 F/BW/DQ/VL */
    MNNLITE_CPU_VNNI = 1 << 2,      /* AVX-512 VNNI */
    MNNLITE_CPU_VBMI = 1 << 3,      /* AVX-512 VBMI (byte permutes: 256-entry lookups) */
};

/* Bit set of MNNLITE_CPU_* the CPU supports, masked by mnnlite_cpu_set_limit(). */
int mnnlite_cpu_features(void);

/* Restrict the paths kernels may use (tests force the scalar path with limit 0). */
void mnnlite_cpu_set_limit(int mask);

#endif
