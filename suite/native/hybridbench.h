/* hybridbench.h: what every kernel shares, written once.

   Integer powers of a gate, the linear lookup on a uniform voltage grid, the exponential-Euler gate step,
   the fast tanh and the MLP's parameter layout. Every function is static inline: each kernel file includes
   this header and the compiler specialises the helpers where they are used (lanes of cells, of traces). */
#ifndef HYBRIDBENCH_H
#define HYBRIDBENCH_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* ---- integer powers (gates raised to their exponent, m^3 h) ---- */

static inline double hb_ipow(double x, int p) {
    switch (p) {
        case 0: return 1.0;
        case 1: return x;
        case 2: return x * x;
        case 3: return x * x * x;
        case 4: { double y = x * x; return y * y; }
        default: return pow(x, (double)p);
    }
}

/* d x^p / dx */
static inline double hb_dipow(double x, int p) {
    switch (p) {
        case 1: return 1.0;
        case 2: return 2.0 * x;
        case 3: return 3.0 * x * x;
        case 4: return 4.0 * x * x * x;
        default: return (double)p * pow(x, (double)(p - 1));
    }
}

/* acc[j] *= x[j]^p for j < n, with the power's switch outside the loop so that each case vectorises */
#define HB_MUL_POW(acc, x, n, p)                                                                   \
    switch (p) {                                                                                   \
        case 1: for (int64_t j_ = 0; j_ < (n); j_++) (acc)[j_] *= (x)[j_]; break;                   \
        case 2: for (int64_t j_ = 0; j_ < (n); j_++) (acc)[j_] *= (x)[j_] * (x)[j_]; break;         \
        case 3: for (int64_t j_ = 0; j_ < (n); j_++) (acc)[j_] *= (x)[j_] * (x)[j_] * (x)[j_]; break; \
        case 4:                                                                                    \
            for (int64_t j_ = 0; j_ < (n); j_++) { double y_ = (x)[j_] * (x)[j_]; (acc)[j_] *= y_ * y_; } \
            break;                                                                                 \
        default: for (int64_t j_ = 0; j_ < (n); j_++) (acc)[j_] *= hb_ipow((x)[j_], (p));           \
    }

/* ---- tables on a uniform voltage grid (NEURON's TABLE): linear inside, flat outside ---- */

/* Where v falls on the grid of K points v_lo + k / inv_h: interval j in [0, K-2] and fraction fr in it,
   clamped to the ends (a NaN goes to the first point: the cell is lost already, the index stays in range).
   Returns whether v lies strictly inside the grid, where the table's slope is the derivative. */
static inline int hb_locate(double v, double v_lo, double inv_h, int64_t K, int64_t *j, double *fr) {
    double u = (v - v_lo) * inv_h;
    int inside = u > 0.0 && u < (double)(K - 1);
    if (!(u > 0.0)) u = 0.0;  /* also catches NaN */
    if (u > (double)(K - 1)) u = (double)(K - 1);
    int64_t k = (int64_t)u;
    if (k > K - 2) k = K - 2;
    *j = k;
    *fr = u - (double)k;
    return inside;
}

static inline double hb_lerp(double lo, double hi, double fr) { return lo + fr * (hi - lo); }

/* ---- the exponential-Euler gate step: x(t + dt) = x_inf + (x - x_inf) exp(-dt / tau) ---- */

static inline double hb_gate_step(double x, double x_inf, double decay) { return x_inf + (x - x_inf) * decay; }

/* ---- fast tanh ---- */

/* Eigen's rational tanh: tanh(x) ~ x p(z) / q(z), z = x^2, on |x| < 9; T the element type (double or float,
   whose constants are these rounded once). */
#define HB_TANH_PQ(T, z, p, q)                                      \
    p = (z) * (T)-2.76076847742355e-16 + (T)2.00018790482477e-13;   \
    p = p * (z) - (T)8.60467152213735e-11;                          \
    p = p * (z) + (T)5.12229709037114e-08;                          \
    p = p * (z) + (T)1.48572235717979e-05;                          \
    p = p * (z) + (T)6.37261928875436e-04;                          \
    p = p * (z) + (T)4.89352455891786e-03;                          \
    q = (z) * (T)1.19825839466702e-06 + (T)1.18534705686654e-04;    \
    q = q * (z) + (T)2.26843463243900e-03;                          \
    q = q * (z) + (T)4.89352518554385e-03;

/* Four doubles as one vector (GCC/Clang vector extensions): AVX where the CPU has it, pairs of SSE or NEON
   registers elsewhere. Plain C loops were compiled to scalar code, which made the MLP the whole step. */
typedef double v4 __attribute__((vector_size(32)));
typedef double v4u __attribute__((vector_size(32), aligned(8)));  /* unaligned loads and stores */
typedef long long v4l __attribute__((vector_size(32)));

/* tanh of four doubles, |error| ~1e-7 relative: libm's tanh dominated the hybrid's step */
static inline v4 hb_tanh4(v4 x) {
    v4 lim = {9.0, 9.0, 9.0, 9.0};
    v4l hi = x > lim, lo = x < -lim;
    x = (v4)(((v4l)lim & hi) | ((v4l)-lim & lo) | ((v4l)x & ~(hi | lo)));
    v4 x2 = x * x, p, q;
    HB_TANH_PQ(double, x2, p, q)
    return x * p / q;
}

static inline double hb_tanh(double x) {
    v4 r = hb_tanh4((v4){x, 0.0, 0.0, 0.0});
    return r[0];
}

/* ---- the MLP (Linear -> LayerNorm -> activation per hidden layer, then Linear) ---- */

#define HB_LN_EPS 1e-5
#define HB_MAX_DEPTH 16

/* Offsets of one model's parameters in its flat vector: W_0 [I, H], b_0 [H], ..., W_{D-1} [H, H], b_{D-1},
   W_out [H, O], b_out [O], then (gamma_l [H], beta_l [H]) per hidden layer, then one trailing scalar. */
typedef struct { int I, H, O, D, act; long oW[HB_MAX_DEPTH + 1], ob[HB_MAX_DEPTH + 1], og[HB_MAX_DEPTH],
                 obeta[HB_MAX_DEPTH], os, P; } hb_mlp_layout;

static inline void hb_mlp_layout_make(hb_mlp_layout *L, int I, int H, int O, int D, int act) {
    long off = 0;
    int fan_in = I;
    L->I = I; L->H = H; L->O = O; L->D = D; L->act = act;
    for (int l = 0; l < D; ++l) { L->oW[l] = off; off += (long)fan_in * H; L->ob[l] = off; off += H; fan_in = H; }
    L->oW[D] = off; off += (long)H * O; L->ob[D] = off; off += O;
    for (int l = 0; l < D; ++l) { L->og[l] = off; off += H; L->obeta[l] = off; off += H; }
    L->os = off; L->P = off + 1;
}

/* activation 0: tanh, 1: silu; its derivative from the input n and the output h */
static inline double hb_act(double n, int act) {
    if (act == 0) return hb_tanh(n);
    return n / (1.0 + exp(-n));
}

static inline double hb_act_d(double n, double h, int act) {
    if (act == 0) return 1.0 - h * h;
    double sg = 1.0 / (1.0 + exp(-n));
    return sg * (1.0 + n * (1.0 - sg));
}

/* ---- the arguments of each exported kernel: one struct per call, mirrored by suite/native/abi.py ---- */

typedef struct {
    int64_t B, T, G, C, W, M, R;  /* cells, steps, gates, channels, gates per channel, grid points; R: record V
                                     every R steps (forward only) */
    double vmin, dv, dt, theta, K;
} hb_membrane_dims;

typedef struct {
    hb_membrane_dims d;
    int64_t istride, tstride;  /* iext row stride (0: one row for all cells); table stride (0: shared) */
    const double *v0, *x0, *iext, *iscale, *cap, *gbar, *erev, *tinf, *tdec;
    const int64_t *gidx;
    const int *gpow;
    const double *vforce, *gforce;
    double *V, *X;
    const double *gV;  /* backward: dL/dV, and the gradients it accumulates */
    double *ginf, *gdec, *ggbar, *gerev, *gcap, *giext, *gx0;
} hb_membrane_args;

typedef struct {
    int B, N, n_threads;
    long g_stride;
    const long *parent;
    const double *g;
    double *d, *rhs;
} hb_tree_args;

typedef struct {
    int B, N, T, G, C, M, K, S, R, theta, n_threads;
    long gbar_stride;
    double v_lo, inv_h;
    const long *parent;
    const double *g_ax, *gsum, *cap, *area_f, *gbar, *erev;
    const int *gate_index, *gate_power;
    const unsigned char *has_membrane;
    const double *tab;
    const long *stim_node;
    const double *stim;
    const long *rec_node;
    double *out;
    const double *v0, *x0;
} hb_cable_args;

typedef struct {
    int n_models, P, Zmax, H, D, act, G, C, M, K, T, R, mode, every, want_grad, n_threads;
    long stim_stride, target_stride;
    double Af, cap, v_lo, inv_h, v0, scale, dt, v_center, v_half, axial_scale, latent_rate;
    const double *params;
    double *grads, *losses;
    const int *nz, *gate_index, *gate_power;
    const double *gbar, *erev, *tab, *stim, *v_target;
    double *v_out, *iax_out, *z_out;
} hb_hybrid_args;

#endif
