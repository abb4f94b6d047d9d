/* Decode-step projections on the CPU: y[r, n] = sum_k W[n, k] * x[r, k] for a few rows.
 *
 * Why this exists: a decode step multiplies each weight matrix by one activation row
 * (or a few, in a batch). That is bound by how fast the weights stream from memory, and
 * torch's fp32 path and its packed int8/int4 kernels reach well under the memory
 * bandwidth llama.cpp reaches on the same CPU (bench/vs_llamacpp.py). Each kernel here
 * reads every weight once per call, keeps the activations (a few KiB) in L1, and splits
 * the output rows among OpenMP threads (the same libgomp torch loaded, so torch's
 * per-thread count applies). fp32 and bf16 keep the activations fp32; int8 multiplies them
 * as int16 (one scale per row), int4 as int8 in blocks of 32 columns (one scale per
 * block). Every activation row is quantized and computed on its own, so a batch gives
 * each row exactly what it gives that row alone.
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

/* int4 (and the blocks of int8 activations it multiplies): each activation row is
 * quantized on its own in blocks of 32 columns (one int4 group), xq = round(x * 127 /
 * max|x| of the block), one fp32 scale d per block, like llama.cpp's Q8_0 activations. A
 * group's product is then an exact integer, sum_i q_i * xq_i, and the row's result
 *   y = sum_g [ (dot_g * d_g) * s_g + (z_g - 8 s_g) * m_g ],  m_g = d_g * sum_i xq_i,
 * is W against the dequantized row, d_g * xq_i, up to float rounding. The groups'
 * terms are summed in sixteen lanes (lane l takes groups l, l + 16, ...) and the lanes
 * added in a fixed tree, in this order in the portable body and the AVX-512 one alike,
 * so both give the same bits; a row's result does not depend on its batch mates.
 *
 * A row's quantized values are stored in the order the AVX-512 body reads them: per
 * chunk of four groups (128 columns), the first halves (columns 0-15) of the four
 * groups, then their second halves, matching the low and the high nibbles of the
 * chunk's 64 packed bytes. Rows are padded with zeros to whole superblocks of sixteen
 * groups (KP4 columns, GP4 scales), so every load stays inside the row. */
#define SUPER 16
static inline int gp4(int K) { return (K / 32 + SUPER - 1) / SUPER * SUPER; }
static inline int kp4(int K) { return gp4(K) * 32; }

/* Where column i (0..31) of group g goes in a quantized row. */
static inline int pos4(int g, int i) { return (g >> 2) * 128 + (i >> 4) * 64 + (g & 3) * 16 + (i & 15); }

static void quantize_blocks(const float *x, int8_t *xq, float *d, float *m, int R, int K) {
    int G = K / 32, GP = gp4(K), KP = kp4(K);
    for (int r = 0; r < R; r++) {
        int8_t *qr = xq + (int64_t)r * KP;
        float *dr = d + (int64_t)r * GP, *mr = m + (int64_t)r * GP;
        for (int i = 0; i < KP; i++) qr[i] = 0;
        for (int g = 0; g < GP; g++) dr[g] = mr[g] = 0.f;
        for (int g = 0; g < G; g++) {
            const float *xg = x + (int64_t)r * K + g * 32;
            float top = 0.f;
            for (int i = 0; i < 32; i++) top = fabsf(xg[i]) > top ? fabsf(xg[i]) : top;
            float inv = top > 0.f ? 127.f / top : 0.f;
            int sum = 0;
            for (int i = 0; i < 32; i++) {
                long v = lrintf(xg[i] * inv);
                v = v > 127 ? 127 : (v < -127 ? -127 : v);
                qr[pos4(g, i)] = (int8_t)v;
                sum += (int)v;
            }
            dr[g] = top / 127.f;
            mr[g] = dr[g] * (float)sum;
        }
    }
}

/* The sum of sixteen lanes in the order of GCC's _mm512_reduce_add_ps. */
static inline float lanes_sum(const float *a) {
    float t[8], u[4];
    for (int i = 0; i < 8; i++) t[i] = a[i + 8] + a[i];
    for (int i = 0; i < 4; i++) u[i] = t[i + 4] + t[i];
    return (u[0] + u[2]) + (u[1] + u[3]);
}

static void int4_rows_ref(const int8_t *xq, const float *d, const float *m, const uint8_t *p, const bf16 *s,
                          const bf16 *z, float *y, int R, int K, int N, int n0, int n1) {
    int G = K / 32, GP = gp4(K), KP = kp4(K);
    for (int n = n0; n < n1; n++)
        for (int r = 0; r < R; r++) {
            const int8_t *xr = xq + (int64_t)r * KP;
            const float *dr = d + (int64_t)r * GP, *mr = m + (int64_t)r * GP;
            float acc[SUPER] = {0.f};
            for (int g = 0; g < GP; g++) {
                int dot = 0;
                float scale = 0.f, zero = 0.f;
                if (g < G) {
                    const uint8_t *b = p + (int64_t)n * (K / 2) + g * 16;
                    for (int i = 0; i < 16; i++)
                        dot += (b[i] & 15) * xr[pos4(g, i)] + (b[i] >> 4) * xr[pos4(g, i + 16)];
                    scale = widen(s[(int64_t)n * G + g]);
                    zero = widen(z[(int64_t)n * G + g]);
                }
                float t = (float)dot * dr[g];
                acc[g % SUPER] = fmaf(t, scale, acc[g % SUPER]);
                acc[g % SUPER] = fmaf(fmaf(-8.f, scale, zero), mr[g], acc[g % SUPER]);
            }
            y[(int64_t)r * N + n] = lanes_sum(acc);
        }
}

/* ---------------------------------------------------------------- AVX-512 bodies */

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,fma")))

/* Software prefetch AHEAD bytes down each weight stream (hint T2: into the outer caches,
 * holding no L1 fill buffer). Why: from DRAM, or from an L3 that other processes emptied
 * between a worker's steps (every hop of a split), the hardware prefetcher alone kept the
 * bf16 and quantized bodies at 16-19 GB/s on the 2-core Xeon VM of 2026-12-05, where fp32,
 * which does less work per byte, streamed 28-30; with it, bf16 28, int8 25-27, int4 23
 * (bench/gemv.py, docs/BENCHMARKS.md "gemv"). Cache-resident weights lose nothing
 * measurable. -DAHEAD=0 compiles the prefetches out. A prefetch past a matrix's end is
 * harmless: prefetches never fault. */
#ifndef AHEAD
#define AHEAD 8192
#endif
#if AHEAD
#define PREFETCH(p) _mm_prefetch((const char *)(p) + AHEAD, _MM_HINT_T2)
#else
#define PREFETCH(p) ((void)0)
#endif

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
        for (int j = 0; j < 4; j++) {
            int64_t at = (int64_t)(n + j) * K + k;
            if (wide) { if (!(k & 31)) PREFETCH((const bf16 *)w + at); }
            else PREFETCH((const float *)w + at);
            wv[j] = dense_load(w, at, wide);
        }
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
            if (wide) PREFETCH((const bf16 *)w + base + k), PREFETCH((const bf16 *)w + base + k + 32);
            else for (int l = 0; l < 64; l += 16) PREFETCH((const float *)w + base + k + l);
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

/* int8 multiplies int16 activations (each row scaled to +-32767 on its own) with
 * the weights widened to int16, two products summed per int32 lane by one VNNI
 * instruction (vpdpwssd): per 32 weights one widening load and one multiply-add, where
 * converting each weight to fp32 took four. The activation's rounding (1/65534 of the
 * row's largest value) is far below what 8- or 4-bit weights already cost. int32 sums
 * are moved to fp32 every FLUSH vectors, before 127 * 32767 * 2 * FLUSH could overflow. */
#define FLUSH 256
#define TVNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")))

/* lanes_sum's order: GCC's _mm512_reduce_add_ps, written out so it cannot change. */
TVNNI static inline float lanes_sum_512(__m512 a) {
    __m256 t = _mm256_add_ps(_mm512_extractf32x8_ps(a, 1), _mm512_castps512_ps256(a));
    __m128 u = _mm_add_ps(_mm256_extractf128_ps(t, 1), _mm256_castps256_ps128(t));
    __m128 v = _mm_add_ps(u, _mm_movehl_ps(u, u));
    return _mm_cvtss_f32(v) + _mm_cvtss_f32(_mm_shuffle_ps(v, v, 1));
}

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
                    PREFETCH(qn + k);
                    PREFETCH(qn + k + 64);
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
                if (!(k & 63)) PREFETCH(qn + k);
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

/* Sixteen bf16 values as fp32; the first `count` only, zeros after (a row's last groups). */
TVNNI static inline __m512 widen16(const bf16 *p, int count) {
    __m256i h = count >= 16 ? _mm256_loadu_si256((const __m256i *)p)
                            : _mm256_maskz_loadu_epi16((__mmask16)((1u << count) - 1), p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* One chunk (four groups) against one row: dword lane 4j + t sums eight products of group j. */
TVNNI static inline __attribute__((always_inline)) __m512i chunk_dot(__m512i lo, __m512i hi, const int8_t *x) {
    __m512i a = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(x));
    return _mm512_dpbusd_epi32(a, hi, _mm512_loadu_si512(x + 64));
}

/* Four chunks' dword lanes summed per group: lane g holds group g of the superblock. */
TVNNI static inline __attribute__((always_inline)) __m512i groups_of(__m512i a, __m512i b, __m512i c, __m512i d,
                                                                     __m512i order) {
    __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
    /* 128-bit lane k now holds group k of a, b, c, d: put group 4t + k in lane 4t + k */
    __m512i mixed = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
    return _mm512_permutexvar_epi32(order, mixed);
}

/* Unsigned nibbles times signed int8 activations (vpdpbusd, four products per dword lane):
 * per 64 packed bytes one load, three logic operations and two multiply-adds, where
 * int16 activations took a widening load and twice the multiply-adds; the group scales
 * are applied sixteen groups at a time. The weights are read once for all R rows. */
TVNNI static inline __attribute__((always_inline)) void int4_rows_512_body(const int8_t *xq, const float *d, const float *m,
                                                                           const uint8_t *p, const bf16 *s,
                                                                           const bf16 *z, float *y, int R, int K,
                                                                           int N, int n0, int n1) {
    const int G = K / 32, GP = gp4(K), KP = kp4(K);
    const __m512i low = _mm512_set1_epi8(15);
    const __m512i order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    const __m512 minus8 = _mm512_set1_ps(-8.f);
    for (int n = n0; n < n1; n++) {
        const uint8_t *pn = p + (int64_t)n * (K / 2);
        const bf16 *sn = s + (int64_t)n * G, *zn = z + (int64_t)n * G;
        __m512 acc[MAX_ROWS];
        for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
        for (int g0 = 0; g0 < G; g0 += SUPER) {
            int left = G - g0;
            __m512i lo[4], hi[4];
            for (int j = 0; j < 4; j++) {
                const uint8_t *b = pn + (int64_t)(g0 + 4 * j) * 16;
                PREFETCH(b);
                __m512i w;
                if (left >= SUPER) w = _mm512_loadu_si512(b);
                else {
                    int bytes = (left - 4 * j) * 16;
                    bytes = bytes < 0 ? 0 : (bytes > 64 ? 64 : bytes);
                    w = _mm512_maskz_loadu_epi8(bytes == 64 ? ~0ULL : ((1ULL << bytes) - 1), b);
                }
                lo[j] = _mm512_and_si512(w, low);
                hi[j] = _mm512_and_si512(_mm512_srli_epi16(w, 4), low);
            }
            __m512 sv = widen16(sn + g0, left), zv = widen16(zn + g0, left);
            __m512 offset = _mm512_fmadd_ps(minus8, sv, zv);
            for (int r = 0; r < R; r++) {
                const int8_t *xr = xq + (int64_t)r * KP + g0 * 32;
                __m512i dots = groups_of(chunk_dot(lo[0], hi[0], xr), chunk_dot(lo[1], hi[1], xr + 128),
                                         chunk_dot(lo[2], hi[2], xr + 256), chunk_dot(lo[3], hi[3], xr + 384), order);
                __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(dots), _mm512_loadu_ps(d + (int64_t)r * GP + g0));
                acc[r] = _mm512_fmadd_ps(t, sv, acc[r]);
                acc[r] = _mm512_fmadd_ps(offset, _mm512_loadu_ps(m + (int64_t)r * GP + g0), acc[r]);
            }
        }
        for (int r = 0; r < R; r++) y[(int64_t)r * N + n] = lanes_sum_512(acc[r]);
    }
}

/* One copy of the body per row count, so its per-row accumulators live in registers. */
TVNNI static void int4_rows_512(const int8_t *xq, const float *d, const float *m, const uint8_t *p, const bf16 *s,
                                const bf16 *z, float *y, int R, int K, int N, int n0, int n1) {
    switch (R) {
    case 1: int4_rows_512_body(xq, d, m, p, s, z, y, 1, K, N, n0, n1); break;
    case 2: int4_rows_512_body(xq, d, m, p, s, z, y, 2, K, N, n0, n1); break;
    case 3: int4_rows_512_body(xq, d, m, p, s, z, y, 3, K, N, n0, n1); break;
    case 4: int4_rows_512_body(xq, d, m, p, s, z, y, 4, K, N, n0, n1); break;
    case 5: int4_rows_512_body(xq, d, m, p, s, z, y, 5, K, N, n0, n1); break;
    case 6: int4_rows_512_body(xq, d, m, p, s, z, y, 6, K, N, n0, n1); break;
    case 7: int4_rows_512_body(xq, d, m, p, s, z, y, 7, K, N, n0, n1); break;
    case 8: int4_rows_512_body(xq, d, m, p, s, z, y, 8, K, N, n0, n1); break;
    }
}

/* Each row of x as int16 scaled to +-32767, its scale in sx (int8 weights). */
static void quantize_rows(const float *x, int16_t *xq, float *sx, int R, int K) {
    for (int r = 0; r < R; r++) {
        const float *xr = x + (int64_t)r * K;
        float top = 0.f;
        for (int k = 0; k < K; k++) top = fabsf(xr[k]) > top ? fabsf(xr[k]) : top;
        float scale = top > 0.f ? top / 32767.f : 1.f, inv = 1.f / scale;
        sx[r] = scale;
        int16_t *out = xq + (int64_t)r * K;
        for (int k = 0; k < K; k++) out[k] = (int16_t)lrintf(xr[k] * inv);
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
    quantize_rows(x, xq, sx, R, K);
    SPLIT(int8_rows_512(xq, sx, q, s, y, R, K, N, n0, n1))
    free(xq);
    return 0;
}

/* R activation rows quantized for int4 weights (quantize_blocks), in one allocation. */
typedef struct {
    int8_t *xq;
    float *d, *m;
} blocks_t;

static int blocks_of(blocks_t *b, const float *x, int R, int K) {
    size_t q = (size_t)R * kp4(K), f = (size_t)R * gp4(K);
    b->xq = malloc(q + 2 * sizeof(float) * f);
    if (!b->xq) return -2;
    b->d = (float *)(b->xq + q); /* q is a multiple of 512: aligned for floats */
    b->m = b->d + f;
    quantize_blocks(x, b->xq, b->d, b->m, R, K);
    return 0;
}

static void int4_rows(const blocks_t *b, const uint8_t *p, const bf16 *s, const bf16 *z, float *y, int R, int K,
                      int N, int n0, int n1) {
    if (use_512()) int4_rows_512(b->xq, b->d, b->m, p, s, z, y, R, K, N, n0, n1);
    else int4_rows_ref(b->xq, b->d, b->m, p, s, z, y, R, K, N, n0, n1);
}

int resplit_gemv_int4(const float *x, const uint8_t *p, const bf16 *s, const bf16 *z, float *y, int R, int K, int N,
                      int threads) {
    if (R < 1 || R > MAX_ROWS || K % 64) return -1;
    blocks_t b;
    if (blocks_of(&b, x, R, K)) return -2;
    SPLIT(int4_rows(&b, p, s, z, y, R, K, N, n0, n1))
    free(b.xq);
    return 0;
}
