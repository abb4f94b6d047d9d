/* One decode step of one session through a Llama-style block, in two calls.
 *
 * Why: with the projections on the native kernels (gemv.c), what was left of a decode
 * step on the CPU was torch's per-operation cost: some thirty small operations per block
 * (norms, rotary, attention, residuals, the activation), each a dispatch of microseconds
 * and often an OpenMP region, about as long in all as streaming the weights of a small
 * model. Here the block is plain loops over a few thousand floats: the first call
 * normalizes, projects q, k and v (sharing one int16 copy of the input for quantized
 * weights), normalizes heads (Qwen3) and rotates; the caller appends k and v to the
 * session's cache (transformers' DynamicCache, so migration and every other path see
 * the cache they always saw); the second call attends over the cache, projects, adds the
 * residual, normalizes, runs the MLP and adds again. The same arithmetic as
 * resplit/models/lean.py's ``_block_rows`` for one token, summed in another order.
 */
#include "gemv.c"

typedef struct {
    int format; /* 0 fp32, 1 int8, 2 int4 (gemv.c's layouts) */
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

/* x prepared once for every projection that reads it. */
typedef struct {
    const float *x;
    int16_t *x8, *x4;
    float s8, s4;
    float *xsum;
} input_t;

static int prepare(input_t *in, const float *x, int k, int need8, int need4) {
    in->x = x;
    in->x8 = in->x4 = NULL;
    in->xsum = NULL;
    if (!use_512()) need8 = need4 = 0; /* the portable bodies read fp32 */
    if (need8) {
        if (!(in->x8 = malloc(sizeof(int16_t) * k))) return -2;
        quantize_rows(x, in->x8, &in->s8, 1, k, 0);
    }
    if (need4 || !use_512()) {
        if (!(in->xsum = malloc(sizeof(float) * (k / 32)))) return -2;
        for (int g = 0; g < k / 32; g++) {
            float t = 0.f;
            for (int i = 0; i < 32; i++) t += x[g * 32 + i];
            in->xsum[g] = t;
        }
    }
    if (need4) {
        if (!(in->x4 = malloc(sizeof(int16_t) * k))) return -2;
        quantize_rows(x, in->x4, &in->s4, 1, k, 1);
    }
    return 0;
}

static void release(input_t *in) {
    free(in->x8);
    free(in->x4);
    free(in->xsum);
}

static void rows_of(const proj_t *p, const input_t *in, float *y, int n0, int n1) {
    int fast = use_512();
    if (p->format == 0) {
        if (fast) fp32_row_512(in->x, p->w, y, p->k, n0, n1);
        else fp32_rows_ref(in->x, p->w, y, 1, p->k, p->n, n0, n1);
    } else if (p->format == 1) {
        if (fast) int8_rows_512(in->x8, &in->s8, p->w, p->scale, y, 1, p->k, p->n, n0, n1);
        else int8_rows_ref(in->x, p->w, p->scale, y, 1, p->k, p->n, n0, n1);
    } else {
        if (fast) int4_rows_512(in->x4, &in->s4, in->xsum, p->w, p->scale, p->zero, y, 1, p->k, p->n, n0, n1);
        else int4_rows_ref(in->x, in->xsum, p->w, p->scale, p->zero, y, 1, p->k, p->n, n0, n1);
    }
}

static void project(const proj_t *p, const input_t *in, float *y, int threads) {
    int N = p->n;
    SPLIT(rows_of(p, in, y, n0, n1))
    if (p->bias)
        for (int n = 0; n < N; n++) y[n] += p->bias[n];
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

int resplit_block_qkv(const block_t *b, const float *h, const float *cos, const float *sin, float *q, float *k,
                      float *v, int threads) {
    float *x = malloc(sizeof(float) * b->hidden);
    if (!x) return -2;
    rms(h, b->attn_norm, b->eps, x, b->hidden);
    const proj_t *ps[3] = {&b->q, &b->k, &b->v};
    input_t in;
    int code = prepare(&in, x, b->hidden, needs(ps, 3, 1), needs(ps, 3, 2));
    if (code == 0) {
        project(&b->q, &in, q, threads);
        project(&b->k, &in, k, threads);
        project(&b->v, &in, v, threads);
        int d = b->head_dim;
        if (b->q_norm)
            for (int i = 0; i < b->heads; i++) rms(q + i * d, b->q_norm, b->qk_eps, q + i * d, d);
        if (b->k_norm)
            for (int i = 0; i < b->kv_heads; i++) rms(k + i * d, b->k_norm, b->qk_eps, k + i * d, d);
        rotate(q, b->heads, d, cos, sin);
        rotate(k, b->kv_heads, d, cos, sin);
    }
    release(&in);
    free(x);
    return code;
}

/* kc, vc: the session's cache of this block after the append, [kv_heads, T, head_dim]. */
int resplit_block_out(const block_t *b, const float *h, const float *q, const float *kc, const float *vc, int T,
                      float *out, int threads) {
    int d = b->head_dim, H = b->hidden, group = b->heads / b->kv_heads;
    float *attn = malloc(sizeof(float) * b->heads * d);
    float *scores = malloc(sizeof(float) * (size_t)b->heads * T);
    float *x = malloc(sizeof(float) * H);
    int inner = b->gate.n;
    float *gate = malloc(sizeof(float) * inner), *up = malloc(sizeof(float) * inner);
    int code = (attn && scores && x && gate && up) ? 0 : -2;
    if (code == 0) {
        int heads = b->heads;
        _Pragma("omp parallel for schedule(static) num_threads(threads) if(threads > 1)")
        for (int i = 0; i < heads; i++) {
            const float *qi = q + i * d;
            const float *ki = kc + (int64_t)(i / group) * T * d, *vi = vc + (int64_t)(i / group) * T * d;
            float *s = scores + (int64_t)i * T, top = -INFINITY, total = 0.f;
            for (int t = 0; t < T; t++) {
                float dot = 0.f;
                for (int j = 0; j < d; j++) dot += qi[j] * ki[(int64_t)t * d + j];
                s[t] = dot * b->scaling;
                top = s[t] > top ? s[t] : top;
            }
            for (int t = 0; t < T; t++) total += (s[t] = expf(s[t] - top));
            float *ai = attn + i * d;
            for (int j = 0; j < d; j++) ai[j] = 0.f;
            for (int t = 0; t < T; t++) {
                float p = s[t] / total;
                for (int j = 0; j < d; j++) ai[j] += p * vi[(int64_t)t * d + j];
            }
        }
        input_t in;
        const proj_t *po[1] = {&b->o};
        code = prepare(&in, attn, heads * d, needs(po, 1, 1), needs(po, 1, 2));
        if (code == 0) {
            project(&b->o, &in, out, threads);
            for (int i = 0; i < H; i++) out[i] += h[i];
        }
        release(&in);
    }
    if (code == 0) {
        rms(out, b->mlp_norm, b->eps, x, H);
        const proj_t *pm[2] = {&b->gate, &b->up};
        input_t in;
        code = prepare(&in, x, H, needs(pm, 2, 1), needs(pm, 2, 2));
        if (code == 0) {
            project(&b->gate, &in, gate, threads);
            project(&b->up, &in, up, threads);
            for (int i = 0; i < inner; i++) gate[i] = gate[i] / (1.f + expf(-gate[i])) * up[i];
        }
        release(&in);
    }
    if (code == 0) {
        const proj_t *pd[1] = {&b->down};
        input_t in;
        code = prepare(&in, gate, inner, needs(pd, 1, 1), needs(pd, 1, 2));
        if (code == 0) {
            project(&b->down, &in, x, threads);
            for (int i = 0; i < H; i++) out[i] += x[i];
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
