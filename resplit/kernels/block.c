/* One decode step of one session, or of several (a batch), through a Llama-style block,
 * in two calls.
 *
 * Why: with the projections on the native kernels (gemv.c), what was left of a decode
 * step on the CPU was torch's per-operation cost: some thirty small operations per block
 * (norms, rotary, attention, residuals, the activation), each a dispatch of microseconds
 * and often an OpenMP region, about as long in all as streaming the weights of a small
 * model. Here the block is plain loops over a few thousand floats: the first call
 * normalizes, projects q, k and v (sharing one quantized copy of the input for quantized
 * weights), normalizes heads (Qwen3) and rotates; the caller appends k and v to the
 * session's cache (transformers' DynamicCache, so migration and every other path see
 * the cache they always saw); the second call attends over the cache, projects, adds the
 * residual, normalizes, runs the MLP and adds again. The same arithmetic as
 * resplit/models/lean.py's ``_block_rows`` for one token, summed in another order.
 * A batch runs every projection once for all its rows (each row still computed on its
 * own, as gemv.c does) and attention per row over that row's own session's cache.
 */
#include "gemv.c"

typedef struct {
    int format; /* 0 fp32, 1 int8, 2 int4, 3 bf16 (gemv.c's layouts) */
    int n, k;
    const void *w;
    const bf16 *scale;
    const bf16 *zero;
    const float *bias; /* NULL: none */
} proj_t;

typedef struct {
    int hidden, heads, kv_heads, head_dim;
    float eps, qk_eps, scaling;
    const float *attn_norm, *mlp_norm;
    const float *q_norm, *k_norm; /* NULL but for Qwen3 */
    proj_t q, k, v, o, gate, up, down;
} block_t;

/* Most rows (sessions) one block call takes: a batched decode step at the gather's size. */
#define MAX_BLOCK_ROWS 64

/* R rows of x prepared once for every projection that reads them. */
typedef struct {
    const float *x;
    int rows;
    int16_t *x8;
    float s8[MAX_BLOCK_ROWS];
    blocks_t x4; /* int8 blocks for int4 weights (gemv.c's quantize_blocks) */
} input_t;

static int prepare(input_t *in, const float *x, int R, int k, int need8, int need4) {
    in->x = x;
    in->rows = R;
    in->x8 = NULL;
    in->x4.xq = NULL;
    if (need8 && use_512()) { /* the portable int8 body reads fp32 */
        if (!(in->x8 = malloc(sizeof(int16_t) * R * k))) return -2;
        quantize_rows(x, in->x8, in->s8, R, k);
    }
    if (need4 && blocks_of(&in->x4, x, R, k)) return -2;
    return 0;
}

static void release(input_t *in) {
    free(in->x8);
    free(in->x4.xq);
}

/* Output columns [n0, n1) of every row: one row streams the weights in order, several
 * go in tiles (fp32, bf16) or in calls of MAX_ROWS rows (int8, int4). */
static void rows_of(const proj_t *p, const input_t *in, float *y, int n0, int n1) {
    int fast = use_512(), R = in->rows, K = p->k, N = p->n;
    if (p->format == 0 || p->format == 3) {
        dense_rows(in->x, p->w, y, R, K, N, n0, n1, p->format == 3);
        return;
    }
    for (int r0 = 0; r0 < R; r0 += MAX_ROWS) {
        int rr = R - r0 < MAX_ROWS ? R - r0 : MAX_ROWS;
        float *yr = y + (int64_t)r0 * N;
        const float *xr = in->x + (int64_t)r0 * K;
        if (p->format == 1) {
            if (fast) int8_rows_512(in->x8 + (int64_t)r0 * K, in->s8 + r0, p->w, p->scale, yr, rr, K, N, n0, n1);
            else int8_rows_ref(xr, p->w, p->scale, yr, rr, K, N, n0, n1);
        } else {
            blocks_t b = {in->x4.xq + (int64_t)r0 * kp4(K), in->x4.d + (int64_t)r0 * gp4(K),
                          in->x4.m + (int64_t)r0 * gp4(K)};
            int4_rows(&b, p->w, p->scale, p->zero, yr, rr, K, N, n0, n1);
        }
    }
}

/* Projections of one input (q, k and v; gate and up) in one parallel region: their
 * output rows in chunks of CHUNK, numbered one projection after another and split
 * statically, so each thread streams a contiguous run of rows and the threads meet
 * once, not once per projection (a fork and a join cost microseconds, a 1024 x 1024
 * int4 projection about twenty). */
static void project_all(const proj_t *const *ps, float *const *ys, int count, const input_t *in, int threads) {
    int starts[4], total = 0;
    for (int i = 0; i < count; i++) {
        starts[i] = total;
        total += (ps[i]->n + CHUNK - 1) / CHUNK;
    }
    _Pragma("omp parallel for schedule(static) num_threads(threads) if(threads > 1)")
    for (int c = 0; c < total; c++) {
        int i = count - 1;
        while (c < starts[i]) i--;
        int n0 = (c - starts[i]) * CHUNK, n1 = n0 + CHUNK < ps[i]->n ? n0 + CHUNK : ps[i]->n;
        rows_of(ps[i], in, ys[i], n0, n1);
    }
    for (int i = 0; i < count; i++) {
        const proj_t *p = ps[i];
        if (p->bias)
            for (int r = 0; r < in->rows; r++)
                for (int n = 0; n < p->n; n++) ys[i][(int64_t)r * p->n + n] += p->bias[n];
    }
}

static void project(const proj_t *p, const input_t *in, float *y, int threads) {
    project_all(&p, &y, 1, in, threads);
}

/* transformers' RMSNorm: x * rsqrt(mean(x^2) + eps), times the weight. */
static void rms(const float *x, const float *weight, float eps, float *out, int n) {
    float sum = 0.f;
    for (int i = 0; i < n; i++) sum += x[i] * x[i];
    float inv = 1.f / sqrtf(sum / n + eps);
    for (int i = 0; i < n; i++) out[i] = weight[i] * (x[i] * inv);
}

/* x * cos + rotate_half(x) * sin, rotate_half(x) = (-x2, x1), for each head in place. */
static void rotate(float *x, int heads, int d, const float *cos, const float *sin) {
    int half = d / 2;
    for (int h = 0; h < heads; h++) {
        float *v = x + h * d;
        for (int i = 0; i < half; i++) {
            float a = v[i], b = v[i + half];
            v[i] = a * cos[i] - b * sin[i];
            v[i + half] = b * cos[i + half] + a * sin[i + half];
        }
    }
}

static int needs(const proj_t *const *ps, int count, int format) {
    for (int i = 0; i < count; i++)
        if (ps[i]->format == format) return 1;
    return 0;
}

/* R sessions' new tokens h [R, hidden], each at its own position (cos, sin [R, head_dim]):
 * q [R, heads * head_dim], k and v [R, kv_heads * head_dim]. */
int resplit_block_qkv(const block_t *b, int R, const float *h, const float *cos, const float *sin, float *q,
                      float *k, float *v, int threads) {
    if (R < 1 || R > MAX_BLOCK_ROWS) return -1;
    int H = b->hidden, d = b->head_dim, QW = b->heads * d, KW = b->kv_heads * d;
    float *x = malloc(sizeof(float) * R * H);
    if (!x) return -2;
    for (int r = 0; r < R; r++) rms(h + (int64_t)r * H, b->attn_norm, b->eps, x + (int64_t)r * H, H);
    const proj_t *ps[3] = {&b->q, &b->k, &b->v};
    input_t in;
    int code = prepare(&in, x, R, H, needs(ps, 3, 1), needs(ps, 3, 2));
    if (code == 0) {
        float *ys[3] = {q, k, v};
        project_all(ps, ys, 3, &in, threads);
        for (int r = 0; r < R; r++) {
            float *qr = q + (int64_t)r * QW, *kr = k + (int64_t)r * KW;
            if (b->q_norm)
                for (int i = 0; i < b->heads; i++) rms(qr + i * d, b->q_norm, b->qk_eps, qr + i * d, d);
            if (b->k_norm)
                for (int i = 0; i < b->kv_heads; i++) rms(kr + i * d, b->k_norm, b->qk_eps, kr + i * d, d);
            rotate(qr, b->heads, d, cos + (int64_t)r * d, sin + (int64_t)r * d);
            rotate(kr, b->kv_heads, d, cos + (int64_t)r * d, sin + (int64_t)r * d);
        }
    }
    release(&in);
    free(x);
    return code;
}

/* Row r attends over its own session's cache of this block after the append: kc[r], vc[r]
 * [kv_heads, T[r], head_dim]; then the output projection, the MLP and both residuals. */
/* q . k over d: sixteen partial sums (lane l takes j = l, l + 16, ...) added up in a fixed
 * tree, so the compiler vectorizes it and every build, vector or not, gives the same bits.
 * One running sum, which it may not reorder, kept attention a scalar chain: the 15-block
 * benchmark Llama (int4, 2 threads, 2-core Xeon) decoded at 8.4 ms a token over 512
 * cached positions and 15.7 over 2,000 against 3.8 over 12; now 6.4 and 11.4. */
static inline __attribute__((always_inline)) float dot16(const float *a, const float *b, int d) {
    float part[16] = {0.f};
    int j = 0;
    for (; j + 16 <= d; j += 16)
        for (int l = 0; l < 16; l++) part[l] += a[j + l] * b[j + l];
    for (int l = 0; j + l < d; l++) part[l] += a[j + l] * b[j + l];
    for (int width = 8; width; width >>= 1)
        for (int l = 0; l < width; l++) part[l] += part[l + width];
    return part[0];
}

/* One head of one row: softmax(q k^T * scaling) v over the row's T cached positions. */
static inline __attribute__((always_inline)) void attend(const float *qi, const float *ki, const float *vi,
                                                          float *s, float *ai, int T, int d, float scaling) {
    float top = -INFINITY, total = 0.f;
    for (int t = 0; t < T; t++) {
        s[t] = dot16(qi, ki + (int64_t)t * d, d) * scaling;
        top = s[t] > top ? s[t] : top;
    }
    for (int t = 0; t < T; t++) total += (s[t] = expf(s[t] - top));
    for (int j = 0; j < d; j++) ai[j] = 0.f;
    for (int t = 0; t < T; t++) {
        float p = s[t] / total;
        const float *vt = vi + (int64_t)t * d;
        for (int j = 0; j < d; j++) ai[j] += p * vt[j];
    }
}

/* The same loops compiled twice: for the machine's baseline and with AVX-512 (16 lanes). */
static void attend_ref(const float *qi, const float *ki, const float *vi, float *s, float *ai, int T, int d,
                       float scaling) {
    attend(qi, ki, vi, s, ai, T, d, scaling);
}

T512 static void attend_512(const float *qi, const float *ki, const float *vi, float *s, float *ai, int T, int d,
                            float scaling) {
    attend(qi, ki, vi, s, ai, T, d, scaling);
}

/* Present since the cache's heads may lie apart (resplit/models/lean_cache.py): callers of an
 * older library (bench/gemv.py times one) pass no strides and contiguous caches. */
int resplit_kv_strides(void) { return 1; }

/* kc[r], vc[r]: row r's cached keys and values, kv head g's T[r] positions (head_dim floats
 * each, one after another) starting at kc[r] + g * S[r]. */
int resplit_block_out(const block_t *b, int R, const float *h, const float *q, const float *const *kc,
                      const float *const *vc, const int *T, const int64_t *S, float *out, int threads) {
    if (R < 1 || R > MAX_BLOCK_ROWS) return -1;
    int d = b->head_dim, H = b->hidden, heads = b->heads, group = b->heads / b->kv_heads, QW = heads * d;
    int longest = 1;
    for (int r = 0; r < R; r++) longest = T[r] > longest ? T[r] : longest;
    int inner = b->gate.n;
    float *attn = malloc(sizeof(float) * R * QW);
    float *scores = malloc(sizeof(float) * (size_t)R * heads * longest);
    float *x = malloc(sizeof(float) * R * H);
    float *gate = malloc(sizeof(float) * R * inner), *up = malloc(sizeof(float) * R * inner);
    int code = (attn && scores && x && gate && up) ? 0 : -2;
    if (code == 0) {
        int pairs = R * heads;
        int simd = use_512();
        _Pragma("omp parallel for schedule(static) num_threads(threads) if(threads > 1)")
        for (int pair = 0; pair < pairs; pair++) {
            int r = pair / heads, i = pair % heads, Tr = T[r];
            const float *qi = q + (int64_t)r * QW + i * d;
            const float *ki = kc[r] + (i / group) * S[r], *vi = vc[r] + (i / group) * S[r];
            float *s = scores + (int64_t)pair * longest, *ai = attn + (int64_t)r * QW + i * d;
            if (simd) attend_512(qi, ki, vi, s, ai, Tr, d, b->scaling);
            else attend_ref(qi, ki, vi, s, ai, Tr, d, b->scaling);
        }
        input_t in;
        const proj_t *po[1] = {&b->o};
        code = prepare(&in, attn, R, QW, needs(po, 1, 1), needs(po, 1, 2));
        if (code == 0) {
            project(&b->o, &in, out, threads);
            for (int64_t i = 0; i < (int64_t)R * H; i++) out[i] += h[i];
        }
        release(&in);
    }
    if (code == 0) {
        for (int r = 0; r < R; r++) rms(out + (int64_t)r * H, b->mlp_norm, b->eps, x + (int64_t)r * H, H);
        const proj_t *pm[2] = {&b->gate, &b->up};
        input_t in;
        code = prepare(&in, x, R, H, needs(pm, 2, 1), needs(pm, 2, 2));
        if (code == 0) {
            float *ys[2] = {gate, up};
            project_all(pm, ys, 2, &in, threads);
            for (int64_t i = 0; i < (int64_t)R * inner; i++) gate[i] = gate[i] / (1.f + expf(-gate[i])) * up[i];
        }
        release(&in);
    }
    if (code == 0) {
        const proj_t *pd[1] = {&b->down};
        input_t in;
        code = prepare(&in, gate, R, inner, needs(pd, 1, 1), needs(pd, 1, 2));
        if (code == 0) {
            project(&b->down, &in, x, threads);
            for (int64_t i = 0; i < (int64_t)R * H; i++) out[i] += x[i];
        }
        release(&in);
    }
    free(attn);
    free(scores);
    free(x);
    free(gate);
    free(up);
    return code;
}
