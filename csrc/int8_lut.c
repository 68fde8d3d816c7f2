/* 256-entry int8 lookups, y[i] = table[q[i] + 128]: MNN's int8 UnaryOp tables and mnnlite's code tables
 * of int8 BinaryOps with one scalar operand (mnnlite/int8/fastq.py).  The numpy definition is a gather
 * ``table[q + 128]``; every path gives its bytes. */
#include "int8_lut.h"

static void lut_scalar(const int8_t *table, const int8_t *q, int8_t *y, size_t n) {
    const uint8_t *u = (const uint8_t *)q;
    for (size_t i = 0; i < n; i++) y[i] = table[u[i] ^ 0x80];
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

/* AVX-512 VBMI: vpermi2b looks up 128 entries by the low 7 bits of each byte, two of them cover the
 * table, the top bit of the index picks one: 64 lookups in a handful of instructions (the scalar loop
 * does one per load). */
__attribute__((target("avx512f,avx512bw,avx512vbmi")))
static void lut_vbmi(const int8_t *table, const int8_t *q, int8_t *y, size_t n) {
    const __m512i t0 = _mm512_loadu_si512((const void *)table), t1 = _mm512_loadu_si512((const void *)(table + 64));
    const __m512i t2 = _mm512_loadu_si512((const void *)(table + 128));
    const __m512i t3 = _mm512_loadu_si512((const void *)(table + 192));
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    size_t i = 0;
    for (; i < n; i += 64) {
        __mmask64 m = n - i >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (n - i)) - 1);
        __m512i idx = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, q + i), flip);   /* q + 128 */
        __m512i low = _mm512_permutex2var_epi8(t0, idx, t1);                      /* entries 0..127 */
        __m512i high = _mm512_permutex2var_epi8(t2, idx, t3);                     /* entries 128..255 */
        _mm512_mask_storeu_epi8(y + i, m, _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), low, high));
    }
}
#endif

void mnnlite_lut256(const int8_t *table, const int8_t *q, int8_t *y, size_t n, int isa) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if ((isa & MNNLITE_CPU_VBMI) && (isa & MNNLITE_CPU_AVX512) && (mnnlite_cpu_features() & MNNLITE_CPU_VBMI)) {
        lut_vbmi(table, q, y, n);
        return;
    }
#else
    (void)isa;
#endif
    lut_scalar(table, q, y, n);
}
