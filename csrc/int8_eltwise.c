/* Int8 element-wise kernels.
 * - 256-entry lookups, y[i] = table[q[i] + 128]: MNN's int8 UnaryOp tables and mnnlite's code tables of
 *   int8 BinaryOps with one scalar operand (mnnlite/int8/fastq.py).  The numpy definition is a gather
 *   ``table[q + 128]``; every path gives its bytes.
 * - CPUBinaryInt8's arithmetic for ADD/SUB/MUL on equal shapes, in float32 as the reference
 *   (mnnlite/int8/ops.py _binary_codes) computes it; fastq.BinaryTable uses it for a node only after it
 *   gave the node's whole 256 x 256 table of the reference, so the two are equal on every input. */
#include <string.h>

#include "int8_eltwise.h"

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

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* The same float32 operations on 16 lanes; roundf as trunc(t) + (|t - trunc(t)| >= 0.5 ? sign(t) : 0),
 * which is exact (t - trunc(t) is), inf stays inf. */
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
static void binary_avx512(int op, const int8_t *a, const int8_t *b, int8_t *y, size_t n, float sa, float za,
                          float sb, float zb, float inv, float z_out, float lo, float hi) {
    const __m512 vsa = _mm512_set1_ps(sa), vza = _mm512_set1_ps(za), vsb = _mm512_set1_ps(sb);
    const __m512 vzb = _mm512_set1_ps(zb), vinv = _mm512_set1_ps(inv), vz = _mm512_set1_ps(z_out);
    const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi), half = _mm512_set1_ps(0.5f);
    const __m512 one = _mm512_set1_ps(1.0f), sign = _mm512_set1_ps(-0.0f);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        __m512 fa = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, a + i)));
        __m512 fb = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, b + i)));
        fa = _mm512_mul_ps(_mm512_sub_ps(fa, vza), vsa);
        fb = _mm512_mul_ps(_mm512_sub_ps(fb, vzb), vsb);
        __m512 t = op == 0 ? _mm512_add_ps(fa, fb) : op == 1 ? _mm512_sub_ps(fa, fb) : _mm512_mul_ps(fa, fb);
        t = _mm512_mul_ps(t, vinv);
        __m512 tr = _mm512_roundscale_ps(t, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        __mmask16 up = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(t, tr)), half, _CMP_GE_OQ);
        __m512 r = _mm512_mask_add_ps(tr, up, tr, _mm512_or_ps(one, _mm512_and_ps(t, sign)));
        __m512 v = _mm512_add_ps(r, vz);
        __mmask16 above = _mm512_cmp_ps_mask(v, vhi, _CMP_GE_OQ), inside = _mm512_cmp_ps_mask(v, vlo, _CMP_GT_OQ);
        v = _mm512_mask_blend_ps(inside, vlo, v);
        v = _mm512_mask_blend_ps(above, v, vhi);
        _mm_mask_storeu_epi8(y + i, m, _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(v)));
    }
}

/* The same on 8 lanes; a last block of fewer than 8 codes goes through zero-filled copies. */
__attribute__((target("avx2,fma")))
static void binary_avx2(int op, const int8_t *a, const int8_t *b, int8_t *y, size_t n, float sa, float za,
                        float sb, float zb, float inv, float z_out, float lo, float hi) {
    const __m256 vsa = _mm256_set1_ps(sa), vza = _mm256_set1_ps(za), vsb = _mm256_set1_ps(sb);
    const __m256 vzb = _mm256_set1_ps(zb), vinv = _mm256_set1_ps(inv), vz = _mm256_set1_ps(z_out);
    const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi), half = _mm256_set1_ps(0.5f);
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    int8_t ta[8] = {0}, tb[8] = {0}, ty[8];
    for (size_t i = 0; i < n; i += 8) {
        const size_t k = n - i < 8 ? n - i : 8;
        const int8_t *pa = a + i, *pb = b + i;
        if (k < 8) {
            memcpy(ta, pa, k);
            memcpy(tb, pb, k);
            pa = ta;
            pb = tb;
        }
        __m256 fa = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)pa)));
        __m256 fb = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)pb)));
        fa = _mm256_mul_ps(_mm256_sub_ps(fa, vza), vsa);
        fb = _mm256_mul_ps(_mm256_sub_ps(fb, vzb), vsb);
        __m256 t = op == 0 ? _mm256_add_ps(fa, fb) : op == 1 ? _mm256_sub_ps(fa, fb) : _mm256_mul_ps(fa, fb);
        t = _mm256_mul_ps(t, vinv);
        __m256 tr = _mm256_round_ps(t, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        __m256 up = _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_sub_ps(t, tr)), half, _CMP_GE_OQ);
        __m256 r = _mm256_add_ps(tr, _mm256_and_ps(up, _mm256_or_ps(one, _mm256_and_ps(t, sign))));
        __m256 v = _mm256_add_ps(r, vz);
        v = _mm256_blendv_ps(vlo, v, _mm256_cmp_ps(v, vlo, _CMP_GT_OQ));
        v = _mm256_blendv_ps(v, vhi, _mm256_cmp_ps(v, vhi, _CMP_GE_OQ));
        __m256i q = _mm256_cvttps_epi32(v);
        __m128i q16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
        if (k == 8) {
            _mm_storel_epi64((__m128i *)(y + i), _mm_packs_epi16(q16, q16));
        } else {
            _mm_storel_epi64((__m128i *)ty, _mm_packs_epi16(q16, q16));
            memcpy(y + i, ty, k);
        }
    }
}
#endif

int mnnlite_binary_int8(int op, const int8_t *a, const int8_t *b, int8_t *y, size_t n, float sa, float za,
                        float sb, float zb, float inv, float z_out, float lo, float hi, int isa) {
    if (op < 0 || op > 2) return -1;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    int have = mnnlite_cpu_features();
    if ((isa & MNNLITE_CPU_AVX512) && (have & MNNLITE_CPU_AVX512)) {
        binary_avx512(op, a, b, y, n, sa, za, sb, zb, inv, z_out, lo, hi);
        return 0;
    }
    if ((isa & MNNLITE_CPU_AVX2) && (have & MNNLITE_CPU_AVX2)) {
        binary_avx2(op, a, b, y, n, sa, za, sb, zb, inv, z_out, lo, hi);
        return 0;
    }
#else
    (void)isa;
#endif
    return -2;     /* no vector path: a scalar roundf per code is slower than the table's gather */
}

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
