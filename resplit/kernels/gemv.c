/* Decode-step projections on the CPU: y[r, n] = sum_k W[n, k] * x[r, k] for a few rows.
 *
 * Why this exists: a decode step multiplies each weight matrix by one activation row
 * (or a few, in a batch). That is bound by how fast the weights stream from memory, and
 * torch's fp32 path and its packed int8/int4 kernels reach well under the memory
 * bandwidth llama.cpp reaches on the same CPU (bench/vs_llamacpp.py). Each kernel here
 * reads every weight once per call, keeps the activations (a few KiB) in L1, and splits
 * the output rows among OpenMP threads (the same libgomp torch loaded, so torch's
 * per-thread count applies). Weight-only quantization: activations, scales and sums stay
 * fp32, and every activation row is computed on its own, so a batch gives each row
 * exactly what it gives that row alone.
 *
 * Formats (resplit/kernels/native.py packs them):
 *   fp32: W [N, K] float.
 *   bf16: W [N, K] bfloat16, widened to fp32 (exactly) as it is read.
 *   int8: Q [N, K] int8, scale [N] bfloat16: W = Q * scale.
 *   int4: P [N, K/2] uint8, in groups of 32 columns: byte i of a group holds column i in
 *         its low nibble and column i + 16 in its high one; scale, zero [N, K/32]
 *         bfloat16: W = (q - 8) * scale + zero, q in 0..15.
 * Scales stay bfloat16 as stored (resplit/core/weights.py sizes them so) and are widened
 * to fp32, exactly, where they are used.
 * Each entry point has an AVX-512 body, chosen at run time, and a portable one.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define MAX_ROWS 8
/* fp32 takes more rows at once: its tiles keep the weights in L1 for every row. */
#define MAX_FP32_ROWS 16

typedef uint16_t bf16;

static inline float widen(bf16 v) {
    union { uint32_t u; float f; } c = {.u = (uint32_t)v << 16};
    return c.f;
}

/* ---------------------------------------------------------------- portable bodies */

/* Dense weights: fp32, or bf16 (wide = 1) widened to fp32 exactly as they are read. */
static inline float dense_at(const void *w, int64_t i, int wide) {
    return wide ? widen(((const bf16 *)w)[i]) : ((const float *)w)[i];
}

static void dense_rows_ref(const float *x, const void *w, float *y, int R, int K, int N, int n0, int n1, int wide) {
    for (int n = n0; n < n1; n++)
        for (int r = 0; r < R; r++) {
            float acc = 0.f;
            for (int k = 0; k < K; k++) acc += dense_at(w, (int64_t)n * K + k, wide) * x[(int64_t)r * K + k];
            y[(int64_t)r * N + n] = acc;
        }
}

static void int8_rows_ref(const float *x, const int8_t *q, const bf16 *s, float *y, int R, int K, int N, int n0, int n1) {
    for (int n = n0; n < n1; n++)
        for (int r = 0; r < R; r++) {
            float acc = 0.f;
            for (int k = 0; k < K; k++) acc += (float)q[(int64_t)n * K + k] * x[(int64_t)r * K + k];
            y[(int64_t)r * N + n] = acc * widen(s[n]);
        }
}

static void int4_rows_ref(const float *x, const float *xsum, const uint8_t *p, const bf16 *s, const bf16 *z, float *y,
                          int R, int K, int N, int n0, int n1) {
    int G = K / 32;
    for (int n = n0; n < n1; n++)
        for (int r = 0; r < R; r++) {
            float total = 0.f;
            for (int g = 0; g < G; g++) {
                const uint8_t *b = p + (int64_t)n * (K / 2) + g * 16;
                const float *xg = x + (int64_t)r * K + g * 32;
                float acc = 0.f;
                for (int i = 0; i < 16; i++) acc += (float)(b[i] & 15) * xg[i] + (float)(b[i] >> 4) * xg[i + 16];
                float scale = widen(s[(int64_t)n * G + g]), offset = widen(z[(int64_t)n * G + g]) - 8.f * scale;
                total += acc * scale + offset * xsum[(int64_t)r * G + g];
            }
            y[(int64_t)r * N + n] = total;
        }
}

/* ---------------------------------------------------------------- AVX-512 bodies */

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,fma")))

/* Sixteen weights from element i on: fp32 as stored, or bf16 (wide) widened exactly. The
 * callers pass wide as a constant, so each body is compiled once per format. */
T512 static inline __attribute__((always_inline)) __m512 dense_load(const void *w, int64_t i, int wide) {
    if (!wide) return _mm512_loadu_ps((const float *)w + i);
    __m256i half = _mm256_loadu_si256((const __m256i *)((const bf16 *)w + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16));
}

/* Several activation rows (a batched decode step): tiles of four weight rows by up to four
 * activation rows, sixteen accumulators, so each loaded vector feeds four FMAs (the one
 * row at a time loop below loads a weight vector and every activation row for each FMA).
 * The four weight rows stay in L1 while every group of activation rows passes over them,
 * so the matrix still streams from memory once. */
T512 static inline __attribute__((always_inline)) void dense_tile(const float *x, const void *w, float *y, int RR,
                                                                  int K, int N, int n, int wide) {
    __m512 acc[4][4];
    for (int r = 0; r < RR; r++)
        for (int j = 0; j < 4; j++) acc[r][j] = _mm512_setzero_ps();
    for (int k = 0; k < K; k += 16) {
        __m512 wv[4];
        for (int j = 0; j < 4; j++) wv[j] = dense_load(w, (int64_t)(n + j) * K + k, wide);
        for (int r = 0; r < RR; r++) {
            __m512 xv = _mm512_loadu_ps(x + (int64_t)r * K + k);
            for (int j = 0; j < 4; j++) acc[r][j] = _mm512_fmadd_ps(wv[j], xv, acc[r][j]);
        }
    }
    for (int r = 0; r < RR; r++)
        for (int j = 0; j < 4; j++) y[(int64_t)r * N + n + j] = _mm512_reduce_add_ps(acc[r][j]);
}

T512 static inline __attribute__((always_inline)) void dense_multi_512(const float *x, const void *w, float *y,
                                                                       int R, int K, int N, int n0, int n1,
                                                                       int wide) {
    int n = n0;
    for (; n + 4 <= n1; n += 4)
        for (int r0 = 0; r0 < R; r0 += 4) {
            const float *xr = x + (int64_t)r0 * K;
            float *yr = y + (int64_t)r0 * N;
            switch (R - r0 < 4 ? R - r0 : 4) {
            case 1: dense_tile(xr, w, yr, 1, K, N, n, wide); break;
            case 2: dense_tile(xr, w, yr, 2, K, N, n, wide); break;
            case 3: dense_tile(xr, w, yr, 3, K, N, n, wide); break;
            default: dense_tile(xr, w, yr, 4, K, N, n, wide); break;
            }
        }
    dense_rows_ref(x, w, y, R, K, N, n, n1, wide);
}

/* One row: read start to end with four chains along it, so the weights stream in order. */
T512 static inline __attribute__((always_inline)) void dense_row_512(const float *x, const void *w, float *y, int K,
                                                                     int n0, int n1, int wide) {
    for (int n = n0; n < n1; n++) {
        int64_t base = (int64_t)n * K;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int k = 0;
        for (; k + 64 <= K; k += 64) {
            a0 = _mm512_fmadd_ps(dense_load(w, base + k, wide), _mm512_loadu_ps(x + k), a0);
            a1 = _mm512_fmadd_ps(dense_load(w, base + k + 16, wide), _mm512_loadu_ps(x + k + 16), a1);
            a2 = _mm512_fmadd_ps(dense_load(w, base + k + 32, wide), _mm512_loadu_ps(x + k + 32), a2);
            a3 = _mm512_fmadd_ps(dense_load(w, base + k + 48, wide), _mm512_loadu_ps(x + k + 48), a3);
        }
        for (; k < K; k += 16) a0 = _mm512_fmadd_ps(dense_load(w, base + k, wide), _mm512_loadu_ps(x + k), a0);
        y[n] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    }
}

T512 static void fp32_multi_512(const float *x, const float *w, float *y, int R, int K, int N, int n0, int n1) {
    dense_multi_512(x, w, y, R, K, N, n0, n1, 0);
}

T512 static void bf16_multi_512(const float *x, const bf16 *w, float *y, int R, int K, int N, int n0, int n1) {
    dense_multi_512(x, w, y, R, K, N, n0, n1, 1);
}

T512 static void fp32_row_512(const float *x, const float *w, float *y, int K, int n0, int n1) {
    dense_row_512(x, w, y, K, n0, n1, 0);
}

T512 static void bf16_row_512(const float *x, const bf16 *w, float *y, int K, int n0, int n1) {
    dense_row_512(x, w, y, K, n0, n1, 1);
}

/* int8 and int4 multiply int16 activations (each row scaled to +-32767 on its own) with
 * the weights widened to int16, two products summed per int32 lane by one VNNI
 * instruction (vpdpwssd): per 32 weights one widening load and one multiply-add, where
 * converting each weight to fp32 took four. The activation's rounding (1/65534 of the
 * row's largest value) is far below what 8- or 4-bit weights already cost. int32 sums
 * are moved to fp32 every FLUSH vectors, before 127 * 32767 * 2 * FLUSH could overflow. */
#define FLUSH 256
#define TVNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")))

TVNNI static inline __m512i w8(const int8_t *p) {
    return _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)p));
}

TVNNI static inline __attribute__((always_inline)) void int8_rows_512_body(const int16_t *x, const float *sx, const int8_t *q, const bf16 *s, float *y, int R,
                                int K, int N, int n0, int n1) {
    int n = n0;
    if (R == 1) /* one row at a time, four chains along it: the weights stream in order */
        for (; n < n1; n++) {
            const int8_t *qn = q + (int64_t)n * K;
            __m512 f = _mm512_setzero_ps();
            for (int k0 = 0; k0 < K; k0 += 128 * FLUSH) {
                int k1 = k0 + 128 * FLUSH < K ? k0 + 128 * FLUSH : K, k = k0;
                __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
                for (; k + 128 <= k1; k += 128) {
                    a0 = _mm512_dpwssd_epi32(a0, w8(qn + k), _mm512_loadu_si512(x + k));
                    a1 = _mm512_dpwssd_epi32(a1, w8(qn + k + 32), _mm512_loadu_si512(x + k + 32));
                    a2 = _mm512_dpwssd_epi32(a2, w8(qn + k + 64), _mm512_loadu_si512(x + k + 64));
                    a3 = _mm512_dpwssd_epi32(a3, w8(qn + k + 96), _mm512_loadu_si512(x + k + 96));
                }
                for (; k < k1; k += 32) a0 = _mm512_dpwssd_epi32(a0, w8(qn + k), _mm512_loadu_si512(x + k));
                __m512i sum = _mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3));
                f = _mm512_add_ps(f, _mm512_cvtepi32_ps(sum));
            }
            y[n] = _mm512_reduce_add_ps(f) * sx[0] * widen(s[n]);
        }
    for (; n < n1; n++) {
        __m512 f[MAX_ROWS];
        for (int r = 0; r < R; r++) f[r] = _mm512_setzero_ps();
        const int8_t *qn = q + (int64_t)n * K;
        for (int k0 = 0; k0 < K; k0 += 32 * FLUSH) {
            int k1 = k0 + 32 * FLUSH < K ? k0 + 32 * FLUSH : K;
            __m512i a[MAX_ROWS];
            for (int r = 0; r < R; r++) a[r] = _mm512_setzero_si512();
            for (int k = k0; k < k1; k += 32) {
                __m512i wv = w8(qn + k);
                for (int r = 0; r < R; r++)
                    a[r] = _mm512_dpwssd_epi32(a[r], wv, _mm512_loadu_si512(x + (int64_t)r * K + k));
            }
            for (int r = 0; r < R; r++) f[r] = _mm512_add_ps(f[r], _mm512_cvtepi32_ps(a[r]));
        }
        for (int r = 0; r < R; r++) y[(int64_t)r * N + n] = _mm512_reduce_add_ps(f[r]) * sx[r] * widen(s[n]);
    }
}

/* One copy of the body per row count, so its per-row accumulators live in registers. */
TVNNI static void int8_rows_512(const int16_t *x, const float *sx, const int8_t *q, const bf16 *s, float *y, int R, int K, int N, int n0, int n1) {
    switch (R) {
    case 1: int8_rows_512_body(x, sx, q, s, y, 1, K, N, n0, n1); break;
    case 2: int8_rows_512_body(x, sx, q, s, y, 2, K, N, n0, n1); break;
    case 3: int8_rows_512_body(x, sx, q, s, y, 3, K, N, n0, n1); break;
    case 4: int8_rows_512_body(x, sx, q, s, y, 4, K, N, n0, n1); break;
    case 5: int8_rows_512_body(x, sx, q, s, y, 5, K, N, n0, n1); break;
    case 6: int8_rows_512_body(x, sx, q, s, y, 6, K, N, n0, n1); break;
    case 7: int8_rows_512_body(x, sx, q, s, y, 7, K, N, n0, n1); break;
    case 8: int8_rows_512_body(x, sx, q, s, y, 8, K, N, n0, n1); break;
    }
}

/* Two groups' bf16 scales as fp32: lanes 0-7 the first, lanes 8-15 the second. */
TVNNI static inline __m512 pair_scales(const bf16 *two, __m512i top) {
    uint32_t bits;
    __builtin_memcpy(&bits, two, 4);
    __m512i both = _mm512_set1_epi32((int)bits);
    return _mm512_castsi512_ps(_mm512_mask_blend_epi32(0xFF00, _mm512_slli_epi32(both, 16), _mm512_and_si512(both, top)));
}

/* sum over groups of (zero - 8 * scale) * (sum of the group's activations): the part of
 * a row's product that W's offsets contribute, sixteen groups at a time. */
TVNNI static inline __m512 widen16(const bf16 *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

TVNNI static inline float offsets_dot(const bf16 *s, const bf16 *z, const float *xsum, int G) {
    __m512 acc = _mm512_setzero_ps(), eight = _mm512_set1_ps(8.f);
    int g = 0;
    for (; g + 16 <= G; g += 16)
        acc = _mm512_fmadd_ps(_mm512_fnmadd_ps(eight, widen16(s + g), widen16(z + g)), _mm512_loadu_ps(xsum + g), acc);
    float rest = 0.f;
    for (; g < G; g++) rest += (widen(z[g]) - 8.f * widen(s[g])) * xsum[g];
    return _mm512_reduce_add_ps(acc) + rest;
}

/* x here is the int16 row in pair-of-groups order (see quantize_rows): for groups g, g+1,
 * the 32 values matching the low nibbles of their 32 bytes, then the 32 matching the
 * high ones. One 32-byte load widened to 32 words covers two groups; dword lanes 0-7 of
 * the products belong to group g and 8-15 to group g + 1, scaled per group in fp32. */
TVNNI static inline __attribute__((always_inline)) void int4_rows_512_body(const int16_t *x, const float *sx, const float *xsum, const uint8_t *p, const bf16 *s,
                                const bf16 *z, float *y, int R, int K, int N, int n0, int n1) {
    const int G = K / 32;
    const __m512i low = _mm512_set1_epi16(15);
    const __m512i top = _mm512_set1_epi32((int)0xFFFF0000u);
    const __m512i first_pair = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i second_pair = _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2);
    for (int n = n0; n < n1; n++) {
        const uint8_t *pn = p + (int64_t)n * (K / 2);
        const bf16 *sn = s + (int64_t)n * G, *zn = z + (int64_t)n * G;
        if (R == 1) {
            __m512 f0 = _mm512_setzero_ps(), f1 = f0;
            int g = 0;
            for (; g + 4 <= G; g += 4) {
                __m512i b0 = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(pn + g * 16)));
                __m512i b1 = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(pn + g * 16 + 32)));
                __m512i a0 = _mm512_dpwssd_epi32(_mm512_setzero_si512(), _mm512_and_si512(b0, low),
                                                 _mm512_loadu_si512(x + g * 32));
                __m512i a1 = _mm512_dpwssd_epi32(_mm512_setzero_si512(), _mm512_and_si512(b1, low),
                                                 _mm512_loadu_si512(x + g * 32 + 64));
                a0 = _mm512_dpwssd_epi32(a0, _mm512_srli_epi16(b0, 4), _mm512_loadu_si512(x + g * 32 + 32));
                a1 = _mm512_dpwssd_epi32(a1, _mm512_srli_epi16(b1, 4), _mm512_loadu_si512(x + g * 32 + 96));
                /* four groups' scales widened at once, then spread: lanes 0-7 one group, 8-15 the next */
                __m512 four = _mm512_castps128_ps512(_mm_castsi128_ps(
                    _mm_slli_epi32(_mm_cvtepu16_epi32(_mm_loadl_epi64((const __m128i *)(sn + g))), 16)));
                f0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a0), _mm512_permutexvar_ps(first_pair, four), f0);
                f1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a1), _mm512_permutexvar_ps(second_pair, four), f1);
            }
            for (; g < G; g += 2) {
                __m512i b0 = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(pn + g * 16)));
                __m512i a0 = _mm512_dpwssd_epi32(_mm512_setzero_si512(), _mm512_and_si512(b0, low),
                                                 _mm512_loadu_si512(x + g * 32));
                a0 = _mm512_dpwssd_epi32(a0, _mm512_srli_epi16(b0, 4), _mm512_loadu_si512(x + g * 32 + 32));
                f0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a0), pair_scales(sn + g, top), f0);
            }
            y[n] = _mm512_reduce_add_ps(_mm512_add_ps(f0, f1)) * sx[0] + offsets_dot(sn, zn, xsum, G);
            continue;
        }
        __m512 f[MAX_ROWS];
        for (int r = 0; r < R; r++) f[r] = _mm512_setzero_ps();
        for (int g = 0; g < G; g += 2) {
            __m512i b = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(pn + g * 16)));
            __m512i lo = _mm512_and_si512(b, low), hi = _mm512_srli_epi16(b, 4);
            __m512 sv = pair_scales(sn + g, top);
            for (int r = 0; r < R; r++) {
                const int16_t *xg = x + (int64_t)r * K + g * 32;
                __m512i a = _mm512_dpwssd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(xg));
                a = _mm512_dpwssd_epi32(a, hi, _mm512_loadu_si512(xg + 32));
                f[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), sv, f[r]);
            }
        }
        for (int r = 0; r < R; r++) {
            y[(int64_t)r * N + n] = _mm512_reduce_add_ps(f[r]) * sx[r] + offsets_dot(sn, zn, xsum + (int64_t)r * G, G);
        }
    }
}

/* One copy of the body per row count, so its per-row accumulators live in registers. */
TVNNI static void int4_rows_512(const int16_t *x, const float *sx, const float *xsum, const uint8_t *p, const bf16 *s, const bf16 *z, float *y, int R, int K, int N, int n0, int n1) {
    switch (R) {
    case 1: int4_rows_512_body(x, sx, xsum, p, s, z, y, 1, K, N, n0, n1); break;
    case 2: int4_rows_512_body(x, sx, xsum, p, s, z, y, 2, K, N, n0, n1); break;
    case 3: int4_rows_512_body(x, sx, xsum, p, s, z, y, 3, K, N, n0, n1); break;
    case 4: int4_rows_512_body(x, sx, xsum, p, s, z, y, 4, K, N, n0, n1); break;
    case 5: int4_rows_512_body(x, sx, xsum, p, s, z, y, 5, K, N, n0, n1); break;
    case 6: int4_rows_512_body(x, sx, xsum, p, s, z, y, 6, K, N, n0, n1); break;
    case 7: int4_rows_512_body(x, sx, xsum, p, s, z, y, 7, K, N, n0, n1); break;
    case 8: int4_rows_512_body(x, sx, xsum, p, s, z, y, 8, K, N, n0, n1); break;
    }
}

/* Each row of x as int16 scaled to +-32767 (its scale in sx); for int4 (pairs != 0) in
 * pair-of-groups order. */
static void quantize_rows(const float *x, int16_t *xq, float *sx, int R, int K, int pairs) {
    for (int r = 0; r < R; r++) {
        const float *xr = x + (int64_t)r * K;
        float top = 0.f;
        for (int k = 0; k < K; k++) top = fabsf(xr[k]) > top ? fabsf(xr[k]) : top;
        float scale = top > 0.f ? top / 32767.f : 1.f, inv = 1.f / scale;
        sx[r] = scale;
        int16_t *out = xq + (int64_t)r * K;
        for (int k = 0; k < K; k++) {
            int dest = k;
            if (pairs) { /* k = 64 * pair + 32 * (group in pair) + 16 * high + i */
                int base = k & ~63, within = k & 63, group = within >> 5, high = (within >> 4) & 1, i = within & 15;
                dest = base + 32 * high + 16 * group + i;
            }
            out[dest] = (int16_t)lrintf(xr[k] * inv);
        }
    }
}

/* ---------------------------------------------------------------- entry points */

static int forced_portable = 0;

static int use_512(void) {
    static int cached = -1;
    if (forced_portable) return 0;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                 __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("fma");
    }
    return cached;
}

/* Output rows are handed out in chunks of 16 so no two threads write one cache line. */
#define CHUNK 16
#define SPLIT(BODY)                                                                          \
    int chunks = (N + CHUNK - 1) / CHUNK;                                                    \
    _Pragma("omp parallel for schedule(static) num_threads(threads) if(threads > 1)")      \
    for (int c = 0; c < chunks; c++) {                                                       \
        int n0 = c * CHUNK, n1 = n0 + CHUNK < N ? n0 + CHUNK : N;                             \
        BODY;                                                                                \
    }

int resplit_simd(void) { return use_512() ? 512 : 0; }

/* Tests run the portable bodies on a machine that has AVX-512 too. */
void resplit_force_portable(int portable) { (void)use_512(); forced_portable = portable; }

/* Output columns [n0, n1) of R rows against dense weights, fp32 or bf16 (wide): one row
 * streams the weights in order, several go in tiles. */
static void dense_rows(const float *x, const void *w, float *y, int R, int K, int N, int n0, int n1, int wide) {
    if (!use_512()) dense_rows_ref(x, w, y, R, K, N, n0, n1, wide);
    else if (R == 1 && wide) bf16_row_512(x, w, y, K, n0, n1);
    else if (R == 1) fp32_row_512(x, w, y, K, n0, n1);
    else if (wide) bf16_multi_512(x, w, y, R, K, N, n0, n1);
    else fp32_multi_512(x, w, y, R, K, N, n0, n1);
}

static int gemv_dense(const float *x, const void *w, float *y, int R, int K, int N, int threads, int wide) {
    if (R < 1 || R > MAX_FP32_ROWS || K % 32) return -1;
    SPLIT(dense_rows(x, w, y, R, K, N, n0, n1, wide))
    return 0;
}

int resplit_gemv_fp32(const float *x, const float *w, float *y, int R, int K, int N, int threads) {
    return gemv_dense(x, w, y, R, K, N, threads, 0);
}

/* bf16 weights (W [N, K] bfloat16), fp32 activations and sums: half the bytes of fp32. */
int resplit_gemv_bf16(const float *x, const bf16 *w, float *y, int R, int K, int N, int threads) {
    return gemv_dense(x, w, y, R, K, N, threads, 1);
}

int resplit_gemv_int8(const float *x, const int8_t *q, const bf16 *s, float *y, int R, int K, int N, int threads) {
    if (R < 1 || R > MAX_ROWS || K % 32) return -1;
    if (!use_512()) {
        SPLIT(int8_rows_ref(x, q, s, y, R, K, N, n0, n1))
        return 0;
    }
    int16_t *xq = malloc(sizeof(int16_t) * R * K);
    float sx[MAX_ROWS];
    if (!xq) return -2;
    quantize_rows(x, xq, sx, R, K, 0);
    SPLIT(int8_rows_512(xq, sx, q, s, y, R, K, N, n0, n1))
    free(xq);
    return 0;
}

int resplit_gemv_int4(const float *x, const uint8_t *p, const bf16 *s, const bf16 *z, float *y, int R, int K, int N,
                      int threads) {
    if (R < 1 || R > MAX_ROWS || K % 64) return -1;
    int G = K / 32;
    float *xsum = malloc(sizeof(float) * R * G);
    if (!xsum) return -2;
    for (int r = 0; r < R; r++)
        for (int g = 0; g < G; g++) {
            float t = 0.f;
            for (int i = 0; i < 32; i++) t += x[(int64_t)r * K + g * 32 + i];
            xsum[r * G + g] = t;
        }
    if (!use_512()) {
        SPLIT(int4_rows_ref(x, xsum, p, s, z, y, R, K, N, n0, n1))
        free(xsum);
        return 0;
    }
    int16_t *xq = malloc(sizeof(int16_t) * R * K);
    float sx[MAX_ROWS];
    if (!xq) {
        free(xsum);
        return -2;
    }
    quantize_rows(x, xq, sx, R, K, 1);
    SPLIT(int4_rows_512(xq, sx, xsum, p, s, z, y, R, K, N, n0, n1))
    free(xq);
    free(xsum);
    return 0;
}
