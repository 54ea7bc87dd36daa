/* gates.c: a forward + backward for tanh neural gate ensembles (suite/train/fused_gates.py): per-gate loss and
   every parameter's gradient, one gate at a time in cache. Built twice: float32 (hb_gates_f32) and float64
   (-DGATES_DOUBLE: hb_gates_f64). */
#ifdef GATES_DOUBLE
#define GATES_ENTRY hb_gates_f64
#define GATES_ARGS_SIZE hb_gates_f64_args_size
#else
#define GATES_ENTRY hb_gates_f32
#define GATES_ARGS_SIZE hb_gates_f32_args_size
#endif
#include <stdlib.h>
#include <string.h>

#include "hybridbench.h"

#ifdef GATES_DOUBLE
typedef double real;
typedef long long ireal;
#else
typedef float real;
typedef int ireal;
#endif
/* Vectors of the CPU's width (32 bytes with AVX, else 16: SSE2, NEON): plain C loops here were compiled to
   scalar code. Every buffer row is padded to whole vectors and 64-byte aligned. */
#if defined(__AVX__)
#define VB 32
#else
#define VB 16
#endif
#define VL ((int)(VB / sizeof(real)))
typedef real vec __attribute__((vector_size(VB)));
typedef ireal veci __attribute__((vector_size(VB)));
typedef real vecu __attribute__((vector_size(VB), aligned(sizeof(real))));  /* unaligned loads and stores */
typedef real hvec __attribute__((vector_size(VB / 2)));
#define LN_EPS ((real)HB_LN_EPS)

static inline vec splat(real x) { return x - (vec){0}; }  /* not 0 + x: that turns -0 into +0 */
#if defined(__AVX__)
#include <immintrin.h>
#ifdef GATES_DOUBLE
typedef __m256d mreg;
#define VMIN _mm256_min_pd
#define VMAX _mm256_max_pd
#define VBLEND _mm256_blendv_pd
#else
typedef __m256 mreg;
#define VMIN _mm256_min_ps
#define VMAX _mm256_max_ps
#define VBLEND _mm256_blendv_ps
#endif
/* m ? a : b, lane by lane (m from a comparison: all ones or zeros) */
static inline vec vsel(veci m, vec a, vec b) { return (vec)VBLEND((mreg)b, (mreg)a, (mreg)m); }
/* min/max return their second operand when either is NaN: x goes second, so a NaN stays NaN (diverging gates
   must stay visible) */
static inline vec vclamp(vec x, real lo, real hi) {
    return (vec)VMAX((mreg)splat(lo), VMIN((mreg)splat(hi), (mreg)x));
}
#else
static inline vec vsel(veci m, vec a, vec b) { return (vec)((m & (veci)a) | (~m & (veci)b)); }
/* a comparison with NaN is false, so a NaN stays NaN (diverging gates must stay visible) */
static inline vec vclamp(vec x, real lo, real hi) {
    x = vsel(x > splat(hi), splat(hi), x);
    return vsel(x < splat(lo), splat(lo), x);
}
#endif

static inline real hsum(vec x) {
#if defined(__AVX__) && defined(GATES_DOUBLE)
    __m128d y = _mm_add_pd(_mm256_castpd256_pd128((mreg)x), _mm256_extractf128_pd((mreg)x, 1));
    return _mm_cvtsd_f64(_mm_add_sd(y, _mm_unpackhi_pd(y, y)));
#elif defined(__AVX__)
    __m128 y = _mm_add_ps(_mm256_castps256_ps128((mreg)x), _mm256_extractf128_ps((mreg)x, 1));
    y = _mm_add_ps(y, _mm_movehl_ps(y, y));
    return _mm_cvtss_f32(_mm_add_ss(y, _mm_movehdup_ps(y)));
#else
    union { vec v; hvec h[2]; } a = {x};
    hvec y = a.h[0] + a.h[1];
    real s = 0;
    for (int i = 0; i < VL / 2; i++) s += y[i];
    return s;
#endif
}

/* a / b; for float with AVX a reciprocal estimate and one Newton step (~1 ulp): the division's throughput
   bounded tanh */
static inline vec vdiv(vec a, vec b) {
#if defined(__AVX__) && !defined(GATES_DOUBLE)
    vec r = (vec)_mm256_rcp_ps((mreg)b);
    r = r * (2.0f - b * r);
    return a * r;
#else
    return a / b;
#endif
}

static inline vec vsqrt(vec x) {
#if defined(__AVX__) && defined(GATES_DOUBLE)
    return (vec)_mm256_sqrt_pd((mreg)x);
#elif defined(__AVX__)
    return (vec)_mm256_sqrt_ps((mreg)x);
#else
    for (int i = 0; i < VL; i++) x[i] = sqrt(x[i]);
    return x;
#endif
}

/* exp to ~1 ulp over the whole range (Cephes): overflow gives inf, underflow 0 or a subnormal, NaN stays NaN.
   n = round(x / ln 2) by the add-a-magic-number trick, 2^n applied in two halves so subnormals come out right. */
static inline vec vexp(vec x) {
#ifdef GATES_DOUBLE
    const real lim = 760.0, magic = 6755399441055744.0;  /* 1.5 * 2^52 */
    const real c1 = 6.93145751953125E-1, c2 = 1.42860682030941723212E-6;
    const int mant = 52; const ireal bias = 1023;
#else
    const real lim = 120.0f, magic = 12582912.0f;  /* 1.5 * 2^23 */
    const real c1 = 0.693359375f, c2 = -2.12194440e-4f;
    const int mant = 23; const ireal bias = 127;
#endif
    x = vclamp(x, -lim, lim);
    vec t = x * (real)1.44269504088896340736 + magic;
    veci n = (veci)t - (veci)splat(magic);
    vec fn = t - magic;
    vec r = x - fn * c1 - fn * c2;
#ifdef GATES_DOUBLE
    vec rr = r * r;
    vec px = r * ((rr * 1.26177193074810590878E-4 + 3.02994407707441961300E-2) * rr + 9.99999999999999999910E-1);
    vec qx = ((rr * 3.00198505138664455042E-6 + 2.52448340349684104192E-3) * rr + 2.27265548208155028766E-1) * rr
             + 2.00000000000000000009E0;
    vec e = 1.0 + 2.0 * px / (qx - px);
#else
    vec e = ((((((vec){0} + 1.9875691500E-4f) * r + 1.3981999507E-3f) * r + 8.3334519073E-3f) * r
              + 4.1665795894E-2f) * r + 1.6666665459E-1f) * r + 5.0000001201E-1f;
    e = e * (r * r) + r + 1.0f;
#endif
    veci n1 = n >> 1, n2 = n - n1;
    vec s1 = (vec)((n1 + bias) << mant), s2 = (vec)((n2 + bias) << mant);
    return e * s1 * s2;
}

#ifdef GATES_DOUBLE
/* tanh to ~1 ulp (the gradient check against torch needs float64 accuracy): Cephes' rational below 0.625,
   1 - 2 / (exp(2|x|) + 1) above, with the sign put back. */
static inline vec vtanh(vec x) {
    veci sign = (veci)splat(-0.0);
    vec a = (vec)((veci)x & ~sign);
    vec z = x * x;
    vec p = (z * -9.64399179425052238628E-1 - 9.92877231001918586564E1) * z - 1.61468768441708447952E3;
    vec q = ((z + 1.12811678491632931402E2) * z + 2.23548839060100448583E3) * z + 4.84406305325125486048E3;
    vec small = x + x * z * p / q;
    vec big = 1.0 - 2.0 / (vexp(2.0 * vclamp(a, 0.0, 22.0)) + 1.0);
    big = (vec)(((veci)big & ~sign) | ((veci)x & sign));
    return vsel(a < splat(0.625), small, big);
}
#else
/* tanh as a rational function (Eigen's float coefficients), |error| a few ulp; x itself where tiny. */
static inline vec vtanh(vec x) {
    vec c = vclamp(x, -7.90531110763549805f, 7.90531110763549805f);
    vec z = c * c, p, q;
    HB_TANH_PQ(float, z, p, q)
    vec a = (vec)((veci)x & ~(veci)splat(-0.0f));
    return vsel(a < splat(0.0004f), x, vdiv(c * p, q));
}
#endif

/* dst[j ldd + i] = src[i lds + j] for i < rows, j < cols: W^T for the backward, in 8 x 8 (4 x 4) register
   blocks where AVX is there (element by element, the transpose cost as much as a LayerNorm pass). */
static void transpose(real *dst, long ldd, const real *src, long lds, int rows, int cols) {
    int i0 = 0;
#if defined(__AVX__) && !defined(GATES_DOUBLE)
    for (; i0 + 8 <= rows; i0 += 8) {
        int j0 = 0;
        for (; j0 + 8 <= cols; j0 += 8) {
            const real *p = src + i0 * lds + j0;
            __m256 r0 = _mm256_loadu_ps(p), r1 = _mm256_loadu_ps(p + lds), r2 = _mm256_loadu_ps(p + 2 * lds),
                   r3 = _mm256_loadu_ps(p + 3 * lds), r4 = _mm256_loadu_ps(p + 4 * lds),
                   r5 = _mm256_loadu_ps(p + 5 * lds), r6 = _mm256_loadu_ps(p + 6 * lds),
                   r7 = _mm256_loadu_ps(p + 7 * lds);
            __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
            __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
            __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
            __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
            __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
            __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
            __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
            __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
            real *q = dst + j0 * ldd + i0;
            _mm256_storeu_ps(q, _mm256_permute2f128_ps(s0, s4, 0x20));
            _mm256_storeu_ps(q + ldd, _mm256_permute2f128_ps(s1, s5, 0x20));
            _mm256_storeu_ps(q + 2 * ldd, _mm256_permute2f128_ps(s2, s6, 0x20));
            _mm256_storeu_ps(q + 3 * ldd, _mm256_permute2f128_ps(s3, s7, 0x20));
            _mm256_storeu_ps(q + 4 * ldd, _mm256_permute2f128_ps(s0, s4, 0x31));
            _mm256_storeu_ps(q + 5 * ldd, _mm256_permute2f128_ps(s1, s5, 0x31));
            _mm256_storeu_ps(q + 6 * ldd, _mm256_permute2f128_ps(s2, s6, 0x31));
            _mm256_storeu_ps(q + 7 * ldd, _mm256_permute2f128_ps(s3, s7, 0x31));
        }
        for (; j0 < cols; j0++)
            for (int i = i0; i < i0 + 8; i++) dst[j0 * ldd + i] = src[i * lds + j0];
    }
#elif defined(__AVX__)
    for (; i0 + 4 <= rows; i0 += 4) {
        int j0 = 0;
        for (; j0 + 4 <= cols; j0 += 4) {
            const real *p = src + i0 * lds + j0;
            __m256d r0 = _mm256_loadu_pd(p), r1 = _mm256_loadu_pd(p + lds), r2 = _mm256_loadu_pd(p + 2 * lds),
                    r3 = _mm256_loadu_pd(p + 3 * lds);
            __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
            __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
            real *q = dst + j0 * ldd + i0;
            _mm256_storeu_pd(q, _mm256_permute2f128_pd(t0, t2, 0x20));
            _mm256_storeu_pd(q + ldd, _mm256_permute2f128_pd(t1, t3, 0x20));
            _mm256_storeu_pd(q + 2 * ldd, _mm256_permute2f128_pd(t0, t2, 0x31));
            _mm256_storeu_pd(q + 3 * ldd, _mm256_permute2f128_pd(t1, t3, 0x31));
        }
        for (; j0 < cols; j0++)
            for (int i = i0; i < i0 + 4; i++) dst[j0 * ldd + i] = src[i * lds + j0];
    }
#endif
    for (; i0 < rows; i0++)
        for (int j = 0; j < cols; j++) dst[j * ldd + i0] = src[i0 * lds + j];
}

/* One register tile of C = init + A B: MR rows x NR vectors of columns, accumulated over k in registers.
   A(m, k) = a[m sam + k sak] is a broadcast scalar (so A may be read transposed), B and C row-major. */
#define TILE(MR, NR)                                                                                       \
    static inline __attribute__((always_inline)) void tile_##MR##_##NR(                                    \
        int K, const real *a, long sam, long sak, const real *b, long ldb, real *c, long ldc, const vec *init) { \
        vec acc[MR][NR];                                                                                   \
        for (int r = 0; r < MR; r++)                                                                       \
            for (int q = 0; q < NR; q++) acc[r][q] = init ? init[q] : (vec){0};                            \
        for (int k = 0; k < K; k++, a += sak, b += ldb)                                                    \
            for (int q = 0; q < NR; q++) {                                                                 \
                vec bq = ((const vecu *)b)[q];                                                             \
                for (int r = 0; r < MR; r++) acc[r][q] += a[r * sam] * bq;                                 \
            }                                                                                              \
        for (int r = 0; r < MR; r++)                                                                       \
            for (int q = 0; q < NR; q++) ((vecu *)(c + r * ldc))[q] = acc[r][q];                           \
    }
TILE(5, 2)
TILE(5, 1)
TILE(1, 2)
TILE(1, 1)

/* C[m, :] = init + sum_k A(m, k) B[k, :] over nv vectors of columns (B and C may be the caller's unaligned
   rows when W fills whole vectors): the [56, W] x [W, W] products of one gate. 5 x 2 tiles keep 10
   accumulators in flight, enough to hide the FMA latency (measured: 25% faster than 4 x 2 on Zen 3). */
static void mm(int M, int K, int nv, const real *A, long sam, long sak, const real *B, long ldb, real *C,
               long ldc, const real *init) {
    const vec *iv = (const vec *)init;
    int m = 0;
    for (; m + 5 <= M; m += 5) {
        int v = 0;
        for (; v + 2 <= nv; v += 2)
            tile_5_2(K, A + m * sam, sam, sak, B + v * VL, ldb, C + m * ldc + v * VL, ldc, iv ? iv + v : NULL);
        if (v < nv) tile_5_1(K, A + m * sam, sam, sak, B + v * VL, ldb, C + m * ldc + v * VL, ldc, iv ? iv + v : NULL);
    }
    for (; m < M; m++) {
        int v = 0;
        for (; v + 2 <= nv; v += 2)
            tile_1_2(K, A + m * sam, sam, sak, B + v * VL, ldb, C + m * ldc + v * VL, ldc, iv ? iv + v : NULL);
        if (v < nv) tile_1_1(K, A + m * sam, sam, sak, B + v * VL, ldb, C + m * ldc + v * VL, ldc, iv ? iv + v : NULL);
    }
}

typedef struct {
    int G, N, W, D, loss_kind, threads;
    const real *u; long u_stride;  /* scaled voltage, [G, N] or one row for all (stride 0) */
    const real *t_inf, *t_tau, *t_logtau, *s_inf, *s_tau;  /* targets [G, N], scales [G] */
    const unsigned char *active;
    const real *const *w, *const *b, *const *lg, *const *lb;  /* per layer: [G, fan_in, W], [G, W] x 3 */
    const real *wo, *bo;  /* [G, W, 2], [G, 2] */
    real *const *gw, *const *gb, *const *glg, *const *glb;
    real *gwo, *gbo;
    real *loss, *inf, *tau;  /* [G], [G, N], [G, N] */
} Args;

/* One thread's scratch: padded copies of a gate's parameters, its activations and gradient accumulators. */
typedef struct {
    int Wp, Np;
    real *block;
    real **w, **wt, **b, **lg, **lb, **z, **h, **rs, **gw, **gb, **glg, **glb;
    real *mask, *wo1, *wo2, *gwo1, *gwo2, *da, *db, *u, *o1, *o2, *d1, *d2;
} Work;

/* Lays the scratch out from p (or, with p NULL, only counts it): returns its size in reals. */
static size_t carve(Work *s, real *p, int N, int W, int D) {
    const long Wp = s->Wp, Np = s->Np;
    size_t off = 0;
#define TAKE(dst, n) do { if (p) (dst) = p + off; off += (size_t)(n); } while (0)
    for (int l = 0; l < D; l++) {
        long fan = l ? W : 1;
        TAKE(s->w[l], fan * Wp); TAKE(s->wt[l], l ? W * Wp : 0); TAKE(s->gw[l], fan * Wp);
        TAKE(s->b[l], Wp); TAKE(s->lg[l], Wp); TAKE(s->lb[l], Wp);
        TAKE(s->gb[l], Wp); TAKE(s->glg[l], Wp); TAKE(s->glb[l], Wp);
        TAKE(s->z[l], N * Wp); TAKE(s->h[l], N * Wp); TAKE(s->rs[l], Np);
    }
    TAKE(s->mask, Wp); TAKE(s->wo1, Wp); TAKE(s->wo2, Wp); TAKE(s->gwo1, Wp); TAKE(s->gwo2, Wp);
    TAKE(s->da, N * Wp); TAKE(s->db, N * Wp);
    TAKE(s->u, Np); TAKE(s->o1, Np); TAKE(s->o2, Np); TAKE(s->d1, Np); TAKE(s->d2, Np);
#undef TAKE
    return off;
}

static int work_alloc(Work *s, int N, int W, int D) {
    s->Wp = (W + VL - 1) / VL * VL;
    s->Np = (N + VL - 1) / VL * VL;
    s->block = NULL;
    real ***lists[] = {&s->w, &s->wt, &s->b, &s->lg, &s->lb, &s->z, &s->h, &s->rs, &s->gw, &s->gb, &s->glg,
                       &s->glb};
    int nl = (int)(sizeof lists / sizeof lists[0]);
    real **ptrs = malloc(sizeof(real *) * (size_t)nl * (size_t)D);
    if (!ptrs) return 1;
    for (int i = 0; i < nl; i++) *lists[i] = ptrs + (long)i * D;
    size_t total = carve(s, NULL, N, W, D);
    void *mem = NULL;
    if (posix_memalign(&mem, 64, total * sizeof(real))) { free(ptrs); return 1; }
    memset(mem, 0, total * sizeof(real));  /* padding stays zero for good: only real entries are ever written */
    s->block = mem;
    carve(s, mem, N, W, D);
    for (int j = 0; j < W; j++) s->mask[j] = 1;
    return 0;
}

static void work_free(Work *s) {
    free(s->block);
    free(s->w);
}

/* a short row copy, inline: memcpy calls cost as much as the copying here */
static inline void copy(real *restrict dst, const real *restrict src, int n) {
    int i = 0;
    for (; i + VL <= n; i += VL) *(vecu *)(dst + i) = *(const vecu *)(src + i);
    for (; i < n; i++) dst[i] = src[i];
}

static void zero_grads(const Args *a, long g) {
    long W = a->W;
    for (int l = 0; l < a->D; l++) {
        long fan = l ? W : 1;
        memset(a->gw[l] + g * fan * W, 0, sizeof(real) * fan * W);
        memset(a->gb[l] + g * W, 0, sizeof(real) * W);
        memset(a->glg[l] + g * W, 0, sizeof(real) * W);
        memset(a->glb[l] + g * W, 0, sizeof(real) * W);
    }
    memset(a->gwo + g * W * 2, 0, sizeof(real) * W * 2);
    memset(a->gbo + g * 2, 0, sizeof(real) * 2);
}

/* always_inline: a function holding only prefetches counts as pure for GCC, and its calls get removed */
static inline __attribute__((always_inline)) void prefetch(const real *p, long n, int write) {
    for (long i = 0; i < n; i += 64 / (long)sizeof(real)) {
        if (write) __builtin_prefetch(p + i, 1);
        else __builtin_prefetch(p + i, 0);
    }
}

/* Asks for gate g's parameters, targets and gradient rows ahead of use: they come from memory (all gates'
   parameters outgrow the caches), one gate computes long enough to hide the wait. */
static inline __attribute__((always_inline)) void prefetch_gate(const Args *a, long g) {
    long W = a->W, N = a->N;
    for (int l = 0; l < a->D; l++) {
        long fan = l ? W : 1;
        prefetch(a->w[l] + g * fan * W, fan * W, 0); prefetch(a->gw[l] + g * fan * W, fan * W, 1);
        prefetch(a->b[l] + g * W, W, 0); prefetch(a->lg[l] + g * W, W, 0); prefetch(a->lb[l] + g * W, W, 0);
        prefetch(a->gb[l] + g * W, W, 1); prefetch(a->glg[l] + g * W, W, 1); prefetch(a->glb[l] + g * W, W, 1);
    }
    prefetch(a->wo + g * W * 2, W * 2, 0); prefetch(a->gwo + g * W * 2, W * 2, 1);
    prefetch(a->t_inf + g * N, N, 0); prefetch(a->t_tau + g * N, N, 0); prefetch(a->t_logtau + g * N, N, 0);
    prefetch(a->inf + g * N, N, 1); prefetch(a->tau + g * N, N, 1);
}

static void run_gate(Work *s, const Args *a, long g) {
    const int N = a->N, W = a->W, D = a->D, Wp = s->Wp, Np = s->Np, nv = Wp / VL;
    const real inv_w = (real)1 / W;
    const vec *mask = (const vec *)s->mask;
    const int direct = W == Wp;  /* rows fill whole vectors: read weights, write their gradients in place */

    /* forward: Linear -> LayerNorm -> tanh per layer, on padded copies of the parameters (or in place) */
    const real *ug = a->u + g * a->u_stride;
    for (int n = 0; n < N; n++) s->u[n] = ug[n];
    for (int l = 0; l < D; l++) {
        int fan = l ? W : 1;
        const real *src = a->w[l] + g * fan * W;
        if (!l || !direct)
            for (int i = 0; i < fan; i++) copy(s->w[l] + i * Wp, src + i * W, W);
        if (l) transpose(s->wt[l], Wp, src, W, W, W);  /* W^T for the backward's dZ W^T */
        copy(s->b[l], a->b[l] + g * W, W);
        copy(s->lg[l], a->lg[l] + g * W, W);
        copy(s->lb[l], a->lb[l] + g * W, W);
        real *Z = s->z[l];
        if (l == 0) {
            const vec *w0 = (const vec *)s->w[0], *b0 = (const vec *)s->b[0];
            for (int n = 0; n < N; n++)
                for (int v = 0; v < nv; v++) ((vec *)(Z + n * Wp))[v] = s->u[n] * w0[v] + b0[v];
        } else {
            mm(N, W, nv, s->h[l - 1], Wp, 1, direct ? src : s->w[l], direct ? W : Wp, Z, Wp, s->b[l]);
        }
        /* LayerNorm statistics of every point first, then one vectorised 1/sqrt: no sqrt latency per row */
        real *mu = s->o1, *rs = s->rs[l];
        for (int n = 0; n < N; n++) {
            const vec *z = (const vec *)(Z + n * Wp);
            vec acc = (vec){0};
            for (int v = 0; v < nv; v++) acc += z[v];
            real m = hsum(acc) * inv_w;
            acc = (vec){0};
            for (int v = 0; v < nv; v++) {
                vec d = (z[v] - m) * mask[v];
                acc += d * d;
            }
            mu[n] = m;
            rs[n] = hsum(acc) * inv_w + LN_EPS;
        }
        for (int v = 0; v < Np / VL; v++) ((vec *)rs)[v] = (real)1 / vsqrt(((vec *)rs)[v]);
        const vec *lg = (const vec *)s->lg[l], *lb = (const vec *)s->lb[l];
        for (int n = 0; n < N; n++) {
            vec *z = (vec *)(Z + n * Wp), *h = (vec *)(s->h[l] + n * Wp);
            const real m = mu[n], r = rs[n];
            for (int v = 0; v < nv; v++) {
                vec zh = (z[v] - m) * r;
                z[v] = zh;  /* the normalised value is all the backward needs */
                h[v] = vtanh(zh * lg[v] + lb[v]);
            }
        }
    }

    /* output layer, x_inf = sigmoid(o1), tau = exp(o2) */
    const real *wo = a->wo + g * W * 2;
    for (int j = 0; j < W; j++) { s->wo1[j] = wo[2 * j]; s->wo2[j] = wo[2 * j + 1]; }
    const real bo1 = a->bo[g * 2], bo2 = a->bo[g * 2 + 1];
    const vec *wo1 = (const vec *)s->wo1, *wo2 = (const vec *)s->wo2;
    const real *H = s->h[D - 1];
    for (int n = 0; n < N; n++) {
        const vec *h = (const vec *)(H + n * Wp);
        vec a1 = (vec){0}, a2 = (vec){0};
        for (int v = 0; v < nv; v++) { a1 += h[v] * wo1[v]; a2 += h[v] * wo2[v]; }
        s->o1[n] = hsum(a1) + bo1;
        s->o2[n] = hsum(a2) + bo2;
    }
    for (int v = 0; v < Np / VL; v++) {
        vec *o1 = (vec *)s->o1 + v, *o2 = (vec *)s->o2 + v;
        vec e2 = vexp(*o2);
        ((vec *)s->d1)[v] = (real)1 / ((real)1 + vexp(-*o1));
        ((vec *)s->d2)[v] = e2;
    }

    /* loss and its gradient with respect to (o1, o2), in torch's order of operations */
    const real *ti = a->t_inf + g * N, *tt = a->t_tau + g * N, *tl = a->t_logtau + g * N;
    const real si = a->s_inf[g], st = a->s_tau[g], inv_n = (real)1 / N;
    real *inf = a->inf + g * N, *tau = a->tau + g * N;
    real l1 = 0, l2 = 0;
    for (int n = 0; n < N; n++) {
        real x = s->d1[n], t = s->d2[n];
        inf[n] = x; tau[n] = t;
        real r1 = (x - ti[n]) * si;
        l1 += r1 * r1;
        s->d1[n] = 2 * r1 * inv_n * si * (x * (1 - x));
        if (a->loss_kind == 0) {
            real r2 = (t - tt[n]) * st;
            l2 += r2 * r2;
            s->d2[n] = 2 * r2 * inv_n * st * t;
        } else {
            /* log(exp(o2)) is o2 where tau is a normal number; where tau over- or underflowed, log(tau) = +-inf
               makes the loss non-finite, as in torch */
            real lt = (t == 0 || isinf(t)) ? log(t) : s->o2[n];
            real r2 = lt - tl[n];
            l2 += r2 * r2;
            s->d2[n] = 2 * r2 * inv_n;
        }
    }
    a->loss[g] = l1 * inv_n + l2 * inv_n;
    if (!a->active[g]) { zero_grads(a, g); return; }

    /* backward: output layer */
    real gbo1 = 0, gbo2 = 0;
    vec *gwo1 = (vec *)s->gwo1, *gwo2 = (vec *)s->gwo2;
    for (int v = 0; v < nv; v++) gwo1[v] = gwo2[v] = (vec){0};
    for (int n = 0; n < N; n++) {
        real d1 = s->d1[n], d2 = s->d2[n];
        gbo1 += d1; gbo2 += d2;
        const vec *h = (const vec *)(H + n * Wp);
        vec *dh = (vec *)(s->da + n * Wp);
        for (int v = 0; v < nv; v++) {
            dh[v] = d1 * wo1[v] + d2 * wo2[v];
            gwo1[v] += h[v] * d1;
            gwo2[v] += h[v] * d2;
        }
    }
    real *gwo = a->gwo + g * W * 2;
    for (int j = 0; j < W; j++) { gwo[2 * j] = s->gwo1[j]; gwo[2 * j + 1] = s->gwo2[j]; }
    a->gbo[g * 2] = gbo1; a->gbo[g * 2 + 1] = gbo2;

    /* backward: tanh, LayerNorm, Linear, layer by layer */
    for (int l = D - 1; l >= 0; l--) {
        const real *Z = s->z[l], *Hl = s->h[l];
        const vec *lg = (const vec *)s->lg[l];
        vec *gb = (vec *)s->gb[l], *glg = (vec *)s->glg[l], *glb = (vec *)s->glb[l], *gw0 = (vec *)s->gw[0];
        for (int v = 0; v < nv; v++) {
            gb[v] = glg[v] = glb[v] = (vec){0};
            if (l == 0) gw0[v] = (vec){0};
        }
        for (int n = 0; n < N; n++) {
            const vec *zh = (const vec *)(Z + n * Wp), *h = (const vec *)(Hl + n * Wp);
            vec *dh = (vec *)(s->da + n * Wp);
            vec s1 = (vec){0}, s2 = (vec){0};
            for (int v = 0; v < nv; v++) {
                vec dy = dh[v] * (1 - h[v] * h[v]);
                glb[v] += dy;
                glg[v] += dy * zh[v];
                vec dzh = dy * lg[v];
                dh[v] = dzh;
                s1 += dzh;
                s2 += dzh * zh[v];
            }
            real m1 = hsum(s1) * inv_w, m2 = hsum(s2) * inv_w, r = s->rs[l][n];
            for (int v = 0; v < nv; v++) {
                vec dz = r * (dh[v] - m1 - zh[v] * m2);
                dh[v] = dz;
                gb[v] += dz;
                if (l == 0) gw0[v] += s->u[n] * dz;
            }
        }
        if (l > 0) {
            real *gw = a->gw[l] + g * W * W;
            mm(W, N, nv, s->h[l - 1], 1, Wp, s->da, Wp, direct ? gw : s->gw[l], direct ? W : Wp, NULL);  /* H^T dZ */
            mm(N, W, nv, s->da, Wp, 1, s->wt[l], Wp, s->db, Wp, NULL);                                  /* dZ W^T */
            real *t = s->da; s->da = s->db; s->db = t;
            if (!direct)
                for (int i = 0; i < W; i++) copy(gw + i * W, s->gw[l] + i * Wp, W);
        } else {
            copy(a->gw[0] + g * W, s->gw[0], W);
        }
        copy(a->gb[l] + g * W, s->gb[l], W);
        copy(a->glg[l] + g * W, s->glg[l], W);
        copy(a->glb[l] + g * W, s->glb[l], W);
    }
}

/* Per-gate loss, x_inf and tau of G gates, and the gradient of the summed loss of the active ones (zero for
   the others). Returns 0, or 1 when scratch memory could not be had. */
int GATES_ENTRY(const Args *a) {
    const int G = a->G, N = a->N, W = a->W, D = a->D, threads = a->threads;
    int failed = 0;
    /* chunks of up to 16 gates, handed out as threads come free: a thread the OS delays (the CPU may be shared)
       holds up only its own chunk; prefetching the next gate is right within a chunk */
    int chunk = G / (8 * (threads > 0 ? threads : 1));
    chunk = chunk < 1 ? 1 : (chunk > 16 ? 16 : chunk);
#pragma omp parallel num_threads(threads) if (threads > 1 && G > 1) reduction(| : failed)
    {
        Work s;
        int bad = work_alloc(&s, N, W, D);
        failed |= bad;
#pragma omp for schedule(dynamic, chunk)
        for (long g = 0; g < G; g++)
            if (!bad) {
                if (g + 1 < G) prefetch_gate(a, g + 1);  /* usually this thread's next gate */
                run_gate(&s, a, g);
            }
        if (!bad) work_free(&s);
    }
    return failed;
}

/* the loader checks its struct against this */
size_t GATES_ARGS_SIZE(void) { return sizeof(Args); }
