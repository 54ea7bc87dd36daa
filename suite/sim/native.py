"""Compiled kernels for the cable's hot loops: a batched tree solve and a fused whole-simulation loop.

At one cell a time step costs a few microseconds of arithmetic but dozens of tensor calls, so the
per-call overhead of eager PyTorch decides the speed (DESIGN: measure, then fuse). These kernels are
plain C compiled once with the system's C compiler and loaded with ctypes; when no compiler is
there, ``load()`` returns None and the simulator stays on its torch path.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from suite.cbuild import compiled_library

SOURCE = r"""
#include <math.h>
#include <stddef.h>
#if defined(__SSE2__)
#include <xmmintrin.h>
/* Subnormal numbers (a gate relaxing to within 1e-308 of its steady state) cost ~100x an ordinary
   operation on x86; flushing them to zero changes nothing measurable and keeps a step's cost flat. */
#define FLUSH_SUBNORMALS_BEGIN unsigned int csr_saved_ = _mm_getcsr(); _mm_setcsr(csr_saved_ | 0x8040);
#define FLUSH_SUBNORMALS_END _mm_setcsr(csr_saved_);
#else
#define FLUSH_SUBNORMALS_BEGIN
#define FLUSH_SUBNORMALS_END
#endif
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* A x = rhs for B trees with one sparsity: A_ii = d[b,i], A_{i,p(i)} = A_{p(i),i} = -g[b,i] (g shared
   when g_stride == 0). Hines order: parent[i] < i. d is overwritten, x is written to rhs. */
void tree_solve(int B, int N, const long *parent, const double *g, long g_stride, double *d, double *rhs,
                int n_threads) {
#pragma omp parallel for num_threads(n_threads) if (B > 1 && n_threads > 1) schedule(static)
    for (int b = 0; b < B; ++b) {
        double *db = d + (size_t)b * N, *rb = rhs + (size_t)b * N;
        const double *gb = g + (size_t)b * g_stride;
        for (int i = N - 1; i > 0; --i) {
            long p = parent[i];
            double f = gb[i] / db[i];
            db[p] -= f * gb[i];
            rb[p] += f * rb[i];
        }
        rb[0] /= db[0];
        for (int i = 1; i < N; ++i) rb[i] = (rb[i] + gb[i] * rb[parent[i]]) / db[i];
    }
}

static inline double ipow(double x, int p) {
    switch (p) {
        case 0: return 1.0;
        case 1: return x;
        case 2: return x * x;
        case 3: return x * x * x;
        case 4: { double y = x * x; return y * y; }
        default: return pow(x, (double)p);
    }
}

/* The whole simulation of B cells (one tree, one membrane layout) for T steps of dt: per step the
   membrane conductances from the gates, one implicit voltage solve (theta 1: backward Euler; 2: NEURON's
   Crank-Nicolson, V(t+dt) = 2 V(t+dt/2) - V(t)), then every gate by exponential Euler at the new V from
   a table of (x_inf, a = exp(-dt/tau)) per gate on a uniform voltage grid (tab[(j G + g) 2 + {0, 1}],
   linear between points, flat outside). Currents are absolute: uS, nA, cap = theta C/dt in nA/mV.
   Cells run in groups of LANES with the lane innermost, so every per-node loop is a SIMD loop over cells.
   In:  v [B, N], x [B, G, N] (initial state), stim [B, T, S] nA at step midpoints, gbar [B or 1, C, N].
   Out: out [B, T+1, R] voltages at the recorded nodes. Returns the number of cells that went non-finite. */
#define MAX_LANES 4
/* One group of up to LN cells, lane innermost; LN is a constant at each call so the compiler specialises it. */
static inline __attribute__((always_inline)) int cable_group(
        const int LN, int b0, int nb, int N, int T, int G, int C, int M, const long *parent, const double *g_ax,
        const double *gsum, const double *cap, const double *area_f, const double *gbar, long gbar_stride,
        const double *erev, const int *gate_index, const int *gate_power, const unsigned char *has_membrane,
        int K, double v_lo, double inv_h, const double *tab, int S, const long *stim_node, const double *stim,
        int R, const long *rec_node, double *out, const double *v0, const double *x0, int theta) {
        FLUSH_SUBNORMALS_BEGIN
        int finite[MAX_LANES];
        double *V = (double *)malloc((size_t)(3 + G) * N * LN * sizeof(double));
        double *D = V + (size_t)N * LN, *RHS = D + (size_t)N * LN, *X = RHS + (size_t)N * LN;
        for (int w = 0; w < LN; ++w) {
            int b = b0 + (w < nb ? w : 0);  /* idle lanes shadow the group's first cell, unrecorded */
            finite[w] = 1;
            for (int i = 0; i < N; ++i) V[i * LN + w] = v0[(size_t)b * N + i];
            for (int g = 0; g < G; ++g)
                for (int i = 0; i < N; ++i) X[((size_t)g * N + i) * LN + w] = x0[((size_t)b * G + g) * N + i];
        }
        for (int w = 0; w < nb; ++w)
            for (int r = 0; r < R; ++r) out[(size_t)(b0 + w) * (T + 1) * R + r] = V[rec_node[r] * LN + w];
        for (int t = 0; t < T; ++t) {
            for (int i = 0; i < N; ++i) {
                double gt[MAX_LANES] = {0}, ge[MAX_LANES] = {0};
                if (has_membrane[i]) {
                    for (int c = 0; c < C; ++c) {
                        double o[MAX_LANES];
                        for (int w = 0; w < LN; ++w) {
                            int b = b0 + (w < nb ? w : 0);
                            o[w] = gbar[(size_t)b * gbar_stride + (size_t)c * N + i];
                        }
                        for (int m = 0; m < M; ++m) {
                            int gi = gate_index[c * M + m];
                            if (gi >= G) continue;
                            const double *xg = X + ((size_t)gi * N + i) * LN;
                            switch (gate_power[c * M + m]) {
                                case 1: for (int w = 0; w < LN; ++w) o[w] *= xg[w]; break;
                                case 2: for (int w = 0; w < LN; ++w) o[w] *= xg[w] * xg[w]; break;
                                case 3: for (int w = 0; w < LN; ++w) o[w] *= xg[w] * xg[w] * xg[w]; break;
                                case 4:
                                    for (int w = 0; w < LN; ++w) { double q = xg[w] * xg[w]; o[w] *= q * q; }
                                    break;
                                default: for (int w = 0; w < LN; ++w) o[w] *= pow(xg[w], gate_power[c * M + m]);
                            }
                        }
                        double e = erev[(size_t)c * N + i];
                        for (int w = 0; w < LN; ++w) { gt[w] += o[w]; ge[w] += o[w] * e; }
                    }
                }
                double ci = cap[i], ai = area_f[i], si = gsum[i];
                for (int w = 0; w < LN; ++w) {
                    D[i * LN + w] = ci + gt[w] * ai + si;
                    RHS[i * LN + w] = ci * V[i * LN + w] + ge[w] * ai;
                }
            }
            for (int s = 0; s < S; ++s)
                for (int w = 0; w < nb; ++w)
                    RHS[stim_node[s] * LN + w] += stim[((size_t)(b0 + w) * T + t) * S + s];
            for (int i = N - 1; i > 0; --i) {
                long p = parent[i];
                double gi = g_ax[i];
                for (int w = 0; w < LN; ++w) {
                    double inv = 1.0 / D[i * LN + w];
                    D[i * LN + w] = inv;  /* keep 1/d for the way back */
                    double f = gi * inv;
                    D[p * LN + w] -= f * gi;
                    RHS[p * LN + w] += f * RHS[i * LN + w];
                }
            }
            for (int w = 0; w < LN; ++w) RHS[w] /= D[w];
            for (int i = 1; i < N; ++i) {
                long p = parent[i];
                double gi = g_ax[i];
                for (int w = 0; w < LN; ++w)
                    RHS[i * LN + w] = (RHS[i * LN + w] + gi * RHS[p * LN + w]) * D[i * LN + w];
            }
            for (int i = 0; i < N; ++i)
                for (int w = 0; w < LN; ++w) {
                    double vn = theta == 2 ? 2.0 * RHS[i * LN + w] - V[i * LN + w] : RHS[i * LN + w];
                    V[i * LN + w] = vn;
                }
            for (int w = 0; w < nb; ++w) {
                double *ot = out + ((size_t)(b0 + w) * (T + 1) + t + 1) * R;
                for (int r = 0; r < R; ++r) {
                    ot[r] = V[rec_node[r] * LN + w];
                    if (!isfinite(ot[r])) finite[w] = 0;
                }
            }
            for (int i = 0; i < N; ++i) {
                if (!has_membrane[i]) continue;
                long row[MAX_LANES];
                double fr[MAX_LANES];
                for (int w = 0; w < LN; ++w) {
                    double u = (V[i * LN + w] - v_lo) * inv_h;
                    u = u < 0.0 ? 0.0 : (u > K - 1 ? K - 1 : u);
                    if (u != u) u = 0.0;  /* NaN: the cell is lost already; keep the index in range */
                    int j = (int)u;
                    if (j > K - 2) j = K - 2;
                    fr[w] = u - j;
                    row[w] = (long)j * G * 2;
                }
                for (int g = 0; g < G; ++g) {  /* lanes innermost: a gather per lane, SIMD arithmetic */
                    double *xg = X + ((size_t)g * N + i) * LN;
                    for (int w = 0; w < LN; ++w) {
                        const double *lo = tab + row[w] + 2 * g, *hi = lo + 2 * G;
                        double inf = lo[0] + fr[w] * (hi[0] - lo[0]);
                        double a = lo[1] + fr[w] * (hi[1] - lo[1]);
                        xg[w] = inf + (xg[w] - inf) * a;
                    }
                }
            }
        }
        int bad = 0;
        for (int w = 0; w < nb; ++w) bad += !finite[w];
        free(V);
        FLUSH_SUBNORMALS_END
        return bad;
}

static int cable_group4(int b0, int nb, int N, int T, int G, int C, int M, const long *parent, const double *g_ax,
        const double *gsum, const double *cap, const double *area_f, const double *gbar, long gbar_stride,
        const double *erev, const int *gate_index, const int *gate_power, const unsigned char *has_membrane,
        int K, double v_lo, double inv_h, const double *tab, int S, const long *stim_node, const double *stim,
        int R, const long *rec_node, double *out, const double *v0, const double *x0, int theta) {
    return cable_group(4, b0, nb, N, T, G, C, M, parent, g_ax, gsum, cap, area_f, gbar, gbar_stride, erev,
                       gate_index, gate_power, has_membrane, K, v_lo, inv_h, tab, S, stim_node, stim, R, rec_node,
                       out, v0, x0, theta);
}

static int cable_group1(int b0, int nb, int N, int T, int G, int C, int M, const long *parent, const double *g_ax,
        const double *gsum, const double *cap, const double *area_f, const double *gbar, long gbar_stride,
        const double *erev, const int *gate_index, const int *gate_power, const unsigned char *has_membrane,
        int K, double v_lo, double inv_h, const double *tab, int S, const long *stim_node, const double *stim,
        int R, const long *rec_node, double *out, const double *v0, const double *x0, int theta) {
    return cable_group(1, b0, nb, N, T, G, C, M, parent, g_ax, gsum, cap, area_f, gbar, gbar_stride, erev,
                       gate_index, gate_power, has_membrane, K, v_lo, inv_h, tab, S, stim_node, stim, R, rec_node,
                       out, v0, x0, theta);
}

int cable_run(int B, int N, int T, int G, int C, int M,
              const long *parent, const double *g_ax, const double *gsum, const double *cap,
              const double *area_f, const double *gbar, long gbar_stride, const double *erev,
              const int *gate_index, const int *gate_power, const unsigned char *has_membrane,
              int K, double v_lo, double inv_h, const double *tab,
              int S, const long *stim_node, const double *stim, int R, const long *rec_node, double *out,
              const double *v0, const double *x0, int theta, int n_threads) {
    /* a few cells run one lane each (no idle lanes); a batch runs 4 lanes per group */
    int lanes = B >= MAX_LANES ? MAX_LANES : 1;
    int n_groups = (B + lanes - 1) / lanes, bad = 0;
#pragma omp parallel for num_threads(n_threads) if (n_groups > 1 && n_threads > 1) schedule(dynamic, 1) \
    reduction(+:bad)
    for (int grp = 0; grp < n_groups; ++grp) {
        int b0 = grp * lanes, nb = B - b0 < lanes ? B - b0 : lanes;
        if (lanes == MAX_LANES)
            bad += cable_group4(b0, nb, N, T, G, C, M, parent, g_ax, gsum, cap, area_f, gbar, gbar_stride, erev,
                                gate_index, gate_power, has_membrane, K, v_lo, inv_h, tab, S, stim_node, stim, R,
                                rec_node, out, v0, x0, theta);
        else
            bad += cable_group1(b0, nb, N, T, G, C, M, parent, g_ax, gsum, cap, area_f, gbar, gbar_stride, erev,
                                gate_index, gate_power, has_membrane, K, v_lo, inv_h, tab, S, stim_node, stim, R,
                                rec_node, out, v0, x0, theta);
    }
    return bad;
}

/* ---- The reduced cell: a soma with tabulated gates plus an MLP axial current (suite/sim/reduced.py) ----
   Per model: params laid out as W_0 [I, H], b_0 [H], ..., W_{D-1} [H, H], b_{D-1}, W_out [H, O], b_out [O],
   then (gamma_l [H], beta_l [H]) per hidden layer, then the stimulus scale s. I = O = 1 + Zmax; latents
   beyond the model's nz are held at zero. One call runs every model over its trace (mode 1: free run,
   loss on every `every`-th voltage; mode 0: teacher forcing, V clamped to the target, loss on each one-step
   prediction), returns the losses and, if asked, their gradients by back-propagation through time. */
typedef struct { int I, H, O, D, act; long oW[17], ob[17], og[16], obeta[16], os, P; } Layout;

static void make_layout(Layout *L, int I, int H, int O, int D, int act) {
    long off = 0;
    int fan_in = I;
    L->I = I; L->H = H; L->O = O; L->D = D; L->act = act;
    for (int l = 0; l < D; ++l) { L->oW[l] = off; off += (long)fan_in * H; L->ob[l] = off; off += H; fan_in = H; }
    L->oW[D] = off; off += (long)H * O; L->ob[D] = off; off += O;
    for (int l = 0; l < D; ++l) { L->og[l] = off; off += H; L->obeta[l] = off; off += H; }
    L->os = off; L->P = off + 1;
}

/* Four doubles as one vector (GCC/Clang vector extensions): AVX where the CPU has it, pairs of SSE or NEON
   registers elsewhere. Plain C loops here were compiled to scalar code, which made the MLP the whole step. */
typedef double v4 __attribute__((vector_size(32)));
typedef double v4u __attribute__((vector_size(32), aligned(8)));  /* unaligned loads and stores */
typedef long long v4l __attribute__((vector_size(32)));

/* tanh as a rational function (Eigen's coefficients), |error| ~1e-7 relative: libm's tanh dominated the step */
static inline v4 fast_tanh4(v4 x) {
    v4 lim = {9.0, 9.0, 9.0, 9.0};
    v4l hi = x > lim, lo = x < -lim;
    x = (v4)(((v4l)lim & hi) | ((v4l)-lim & lo) | ((v4l)x & ~(hi | lo)));
    v4 x2 = x * x;
    v4 p = x2 * -2.76076847742355e-16 + 2.00018790482477e-13;
    p = p * x2 - 8.60467152213735e-11;
    p = p * x2 + 5.12229709037114e-08;
    p = p * x2 + 1.48572235717979e-05;
    p = p * x2 + 6.37261928875436e-04;
    p = p * x2 + 4.89352455891786e-03;
    v4 q = x2 * 1.19825839466702e-06 + 1.18534705686654e-04;
    q = q * x2 + 2.26843463243900e-03;
    q = q * x2 + 4.89352518554385e-03;
    return x * p / q;
}

static inline double fast_tanh(double x) {
    v4 r = fast_tanh4((v4){x, 0.0, 0.0, 0.0});
    return r[0];
}

static inline double act_f(double n, int act) {
    if (act == 0) return fast_tanh(n);
    return n / (1.0 + exp(-n));  /* silu */
}

static inline double act_d(double n, double h, int act) {
    if (act == 0) return 1.0 - h * h;
    double sg = 1.0 / (1.0 + exp(-n));
    return sg * (1.0 + n * (1.0 - sg));
}

/* out = b + x W for W [n_in, n_out] (row-major): blocks of 32, 16 and 4 outputs held in registers over the
   whole input (independent accumulators hide the add latency; W is only loaded, nothing stored until the
   end); a remainder of < 4 as scalars. */
#define DENSE_BLOCK(NV)                                                                      \
    for (; j0 + 4 * (NV) <= n_out; j0 += 4 * (NV)) {                                         \
        v4 a[NV];                                                                            \
        for (int v = 0; v < (NV); ++v) a[v] = *(const v4u *)(b + j0 + 4 * v);                \
        for (int i = 0; i < n_in; ++i) {                                                     \
            const double *w = W + (size_t)i * n_out + j0;                                    \
            double xi = x[i];                                                                \
            for (int v = 0; v < (NV); ++v) a[v] += xi * *(const v4u *)(w + 4 * v);           \
        }                                                                                    \
        for (int v = 0; v < (NV); ++v) *(v4u *)(out + j0 + 4 * v) = a[v];                    \
    }

static void dense(const double *W, const double *b, const double *x, int n_in, int n_out, double *out) {
    int j0 = 0;
    DENSE_BLOCK(8)
    DENSE_BLOCK(4)
    DENSE_BLOCK(1)
    for (; j0 < n_out; ++j0) {
        double a = b[j0];
        for (int i = 0; i < n_in; ++i) a += x[i] * W[(size_t)i * n_out + j0];
        out[j0] = a;
    }
}

/* the sum of x[0..n) with four vector accumulators (a scalar sum is one long chain of dependent adds) */
static inline double vsum(const double *x, int n, double shift, int squares) {
    v4 a0 = {0.0, 0.0, 0.0, 0.0}, a1 = a0, a2 = a0, a3 = a0;
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        v4 d0 = *(const v4u *)(x + j) - shift, d1 = *(const v4u *)(x + j + 4) - shift;
        v4 d2 = *(const v4u *)(x + j + 8) - shift, d3 = *(const v4u *)(x + j + 12) - shift;
        if (squares) { d0 *= d0; d1 *= d1; d2 *= d2; d3 *= d3; }
        a0 += d0; a1 += d1; a2 += d2; a3 += d3;
    }
    for (; j + 4 <= n; j += 4) {
        v4 d = *(const v4u *)(x + j) - shift;
        a0 += squares ? d * d : d;
    }
    a0 += a1 + a2 + a3;
    double s = a0[0] + a0[1] + a0[2] + a0[3];
    for (; j < n; ++j) s += squares ? (x[j] - shift) * (x[j] - shift) : x[j] - shift;
    return s;
}

/* buf per layer l: nhat [H], pre [H] (after LayerNorm's affine), h [H] (after the activation); rstd [D] */
static void mlp_fwd(const double *p, const Layout *L, const double *x, double *buf, double *rstd, double *out) {
    int H = L->H;
    const double *hin = x;
    int fan_in = L->I;
    for (int l = 0; l < L->D; ++l) {
        double *nh = buf + (size_t)l * 3 * H, *pre = nh + H, *h = pre + H;
        const double *g = p + L->og[l], *be = p + L->obeta[l];
        dense(p + L->oW[l], p + L->ob[l], hin, fan_in, H, nh);
        double mean = vsum(nh, H, 0.0, 0) / H, var = vsum(nh, H, mean, 1) / H;
        double r = 1.0 / sqrt(var + 1e-5);
        rstd[l] = r;
        for (int j = 0; j < H; ++j) {
            nh[j] = (nh[j] - mean) * r;
            pre[j] = nh[j] * g[j] + be[j];
        }
        int j = 0;
        if (L->act == 0)
            for (; j + 4 <= H; j += 4) *(v4u *)(h + j) = fast_tanh4(*(const v4u *)(pre + j));
        for (; j < H; ++j) h[j] = act_f(pre[j], L->act);
        hin = h;
        fan_in = H;
    }
    dense(p + L->oW[L->D], p + L->ob[L->D], hin, fan_in, L->O, out);
}

static void mlp_bwd(const double *p, double *gp, const Layout *L, const double *x, const double *buf,
                    const double *rstd, const double *lam_out, double *lam_in, double *s1, double *s2) {
    int H = L->H, D = L->D, O = L->O;
    const double *hD = buf + (size_t)(D - 1) * 3 * H + 2 * H;
    const double *W = p + L->oW[D];
    double *gW = gp + L->oW[D], *gb = gp + L->ob[D];
    for (int j = 0; j < O; ++j) gb[j] += lam_out[j];
    double *lh = s1;
    for (int i = 0; i < H; ++i) {
        double s = 0.0;
        for (int j = 0; j < O; ++j) {
            gW[(size_t)i * O + j] += hD[i] * lam_out[j];
            s += W[(size_t)i * O + j] * lam_out[j];
        }
        lh[i] = s;
    }
    for (int l = D - 1; l >= 0; --l) {
        const double *nh = buf + (size_t)l * 3 * H, *pre = nh + H, *h = pre + H;
        const double *g = p + L->og[l];
        double *la = s2, *g_g = gp + L->og[l], *g_beta = gp + L->obeta[l];
        v4 m1v = {0.0, 0.0, 0.0, 0.0}, m2v = m1v;
        int j = 0;
        if (L->act == 0)  /* tanh: four units at a time (plain loops with these sums stay scalar) */
            for (; j + 4 <= H; j += 4) {
                v4 hv = *(const v4u *)(h + j), nv = *(const v4u *)(nh + j);
                v4 ln = *(const v4u *)(lh + j) * (1.0 - hv * hv);
                *(v4u *)(g_g + j) += ln * nv;
                *(v4u *)(g_beta + j) += ln;
                v4 lav = ln * *(const v4u *)(g + j);
                *(v4u *)(la + j) = lav;
                m1v += lav;
                m2v += lav * nv;
            }
        double m1 = m1v[0] + m1v[1] + m1v[2] + m1v[3], m2 = m2v[0] + m2v[1] + m2v[2] + m2v[3];
        for (; j < H; ++j) {
            double ln = lh[j] * act_d(pre[j], h[j], L->act);
            g_g[j] += ln * nh[j];
            g_beta[j] += ln;
            la[j] = ln * g[j];
            m1 += la[j];
            m2 += la[j] * nh[j];
        }
        m1 /= H; m2 /= H;
        for (int j = 0; j < H; ++j) la[j] = rstd[l] * (la[j] - m1 - nh[j] * m2);
        const double *hin = l == 0 ? x : buf + (size_t)(l - 1) * 3 * H + 2 * H;
        int fan_in = l == 0 ? L->I : H;
        const double *Wl = p + L->oW[l];
        double *gWl = gp + L->oW[l];
        for (int j = 0; j < H; ++j) gp[L->ob[l] + j] += la[j];
        double *next = l == 0 ? lam_in : s1;
        for (int i = 0; i < fan_in; ++i) {  /* dW += x la^T and the input's adjoint W la, four units at a time */
            double xi = hin[i];
            const double *Wi = Wl + (size_t)i * H;
            double *gWi = gWl + (size_t)i * H;
            v4 sv = {0.0, 0.0, 0.0, 0.0};
            int q = 0;
            for (; q + 4 <= H; q += 4) {
                v4 lav = *(const v4u *)(la + q);
                *(v4u *)(gWi + q) += xi * lav;
                sv += *(const v4u *)(Wi + q) * lav;
            }
            double s = sv[0] + sv[1] + sv[2] + sv[3];
            for (; q < H; ++q) { gWi[q] += xi * la[q]; s += Wi[q] * la[q]; }
            next[i] = s;
        }
        lh = next;
    }
}

static inline void table_at(const double *tab, int K, int G, double v_lo, double inv_h, double v,
                            double *inf, double *a, double *dinf, double *da) {
    double u = (v - v_lo) * inv_h;
    int inside = u > 0.0 && u < K - 1;
    u = u < 0.0 ? 0.0 : (u > K - 1 ? K - 1 : u);
    if (u != u) u = 0.0;
    int j = (int)u;
    if (j > K - 2) j = K - 2;
    double fr = u - j;
    const double *lo = tab + (size_t)j * G * 2, *hi = lo + G * 2;
    for (int g = 0; g < G; ++g) {
        inf[g] = lo[2 * g] + fr * (hi[2 * g] - lo[2 * g]);
        a[g] = lo[2 * g + 1] + fr * (hi[2 * g + 1] - lo[2 * g + 1]);
        if (dinf) {
            dinf[g] = inside ? (hi[2 * g] - lo[2 * g]) * inv_h : 0.0;
            da[g] = inside ? (hi[2 * g + 1] - lo[2 * g + 1]) * inv_h : 0.0;
        }
    }
}

/* open fraction o_c / gbar_c of each channel and the membrane totals (uS, nA) */
static inline void soma_currents(int C, int M, int G, const int *gi, const int *gp, const double *gbar,
                                 const double *erev, double Af, const double *x, double *o, double *Gs, double *Es) {
    double gt = 0.0, ge = 0.0;
    for (int c = 0; c < C; ++c) {
        double v = gbar[c];
        for (int m = 0; m < M; ++m) {
            int g = gi[c * M + m];
            if (g < G) { double xv = x[g]; for (int k = 0; k < gp[c * M + m]; ++k) v *= xv; }
        }
        o[c] = v;
        gt += v; ge += v * erev[c];
    }
    *Gs = gt * Af; *Es = ge * Af;
}

int hybrid_run(int n_models, int P, const double *params, double *grads, double *losses, const int *nz, int Zmax,
               int H, int D, int act, int G, int C, int M, const int *gate_index, const int *gate_power,
               const double *gbar, const double *erev, double Af, double cap, int K, double v_lo, double inv_h,
               const double *tab, int T, const double *stim, long stim_stride, const double *v_target,
               long target_stride, double v0, int mode, int every, double scale, double dt, double v_center,
               double v_half, double axial_scale, double latent_rate, int want_grad, double *v_out,
               double *iax_out, double *z_out, int n_threads) {
    Layout L;
    make_layout(&L, 1 + Zmax, H, 1 + Zmax, D, act);
    if (L.P != P) return -1;
    int n_bad = 0;
#pragma omp parallel for num_threads(n_threads) if (n_models > 1 && n_threads > 1) \
    schedule(dynamic, 1) reduction(+:n_bad)
    for (int md = 0; md < n_models; ++md) {
        const double *p = params + (size_t)md * P;
        double *gpar = grads + (size_t)md * P;
        const double *st = stim + (size_t)md * stim_stride, *vt = v_target + (size_t)md * target_stride;
        int Z = nz[md], I = 1 + Zmax;
        double s_scale = p[L.os];
        size_t n1 = (size_t)T + 1;
        size_t rows = want_grad ? n1 : 2;  /* without a backward pass, only the current and next states */
        double *V = (double *)malloc(sizeof(double) * (2 * n1 + rows * (Zmax + G) + (size_t)D * 3 * H + D + 4 * I
                                                        + 2 * H + 4 * G + C));
        double *Vp = V + n1, *Zs = Vp + n1, *X = Zs + rows * Zmax, *buf = X + rows * G, *rstd = buf + (size_t)D * 3 * H;
        double *zo = z_out ? z_out + (size_t)md * n1 * Zmax : NULL;
        double *in = rstd + D, *out = in + I, *lam_in = out + I, *lam_out = lam_in + I;
        double *s1 = lam_out + I, *s2 = s1 + H, *inf = s2 + H, *a = inf + G, *dinf = a + G, *da = dinf + G;
        double *o = da + G;
        V[0] = mode == 0 ? vt[0] : v0;
        Vp[0] = V[0];
        for (int j = 0; j < Zmax; ++j) Zs[j] = 0.0;
        if (zo) for (int j = 0; j < Zmax; ++j) zo[j] = 0.0;
        table_at(tab, K, G, v_lo, inv_h, V[0], X, a, NULL, NULL);
        double loss = 0.0;
        int n_loss = 0, bad = 0;
        for (int k = 0; k < T; ++k) {
            size_t rk = want_grad ? (size_t)k : (size_t)(k & 1), rn = want_grad ? rk + 1 : 1 - rk;
            const double *x = X + rk * G, *z = Zs + rk * Zmax;
            in[0] = (V[k] - v_center) / v_half;
            for (int j = 0; j < Zmax; ++j) in[1 + j] = j < Z ? z[j] : 0.0;
            mlp_fwd(p, &L, in, buf, rstd, out);
            double iax = out[0] * axial_scale, Gs, Es;
            soma_currents(C, M, G, gate_index, gate_power, gbar, erev, Af, x, o, &Gs, &Es);
            double vn = (cap * V[k] + Es + s_scale * st[k] + iax) / (cap + Gs);
            double *zn = Zs + rn * Zmax;
            for (int j = 0; j < Zmax; ++j) zn[j] = j < Z ? z[j] + dt * out[1 + j] * latent_rate : 0.0;
            if (zo) for (int j = 0; j < Zmax; ++j) zo[(size_t)(k + 1) * Zmax + j] = zn[j];
            Vp[k + 1] = vn;
            V[k + 1] = mode == 0 ? vt[k + 1] : vn;
            if (!isfinite(vn)) bad = 1;
            if (iax_out) iax_out[(size_t)md * T + k] = iax;
            table_at(tab, K, G, v_lo, inv_h, V[k + 1], inf, a, NULL, NULL);
            double *xn = X + rn * G;
            for (int g = 0; g < G; ++g) xn[g] = inf[g] + (x[g] - inf[g]) * a[g];
            if (mode == 0) { double e = (vn - vt[k + 1]) * scale; loss += e * e; ++n_loss; }
            else if ((k + 1) % every == 0) { double e = (vn - vt[k + 1]) * scale; loss += e * e; ++n_loss; }
            if (bad) break;
        }
        if (v_out) for (size_t k = 0; k < n1; ++k) v_out[(size_t)md * n1 + k] = bad ? NAN : Vp[k];
        if (zo && bad) for (size_t k = 0; k < n1 * Zmax; ++k) zo[k] = NAN;
        losses[md] = bad ? NAN : loss / (n_loss > 0 ? n_loss : 1);
        n_bad += bad;
        if (want_grad && !bad) {
            for (long q = 0; q < P; ++q) gpar[q] = 0.0;
            double lamV = 0.0, lam_s = 0.0;
            double *lamz = (double *)calloc((size_t)Zmax + 2 * G, sizeof(double));
            double *lamx = lamz + Zmax, *lamx_new = lamx + G;
            double norm = 2.0 * scale * scale / (n_loss > 0 ? n_loss : 1);
            for (int k = T - 1; k >= 0; --k) {
                const double *x = X + (size_t)k * G, *z = Zs + (size_t)k * Zmax;
                double lam_vn;
                if (mode == 0) {
                    lam_vn = norm * (Vp[k + 1] - vt[k + 1]);
                } else {
                    if ((k + 1) % every == 0) lamV += norm * (Vp[k + 1] - vt[k + 1]);
                    /* x_{k+1} = inf(V) + (x_k - inf(V)) a(V) at V = V_{k+1} */
                    table_at(tab, K, G, v_lo, inv_h, V[k + 1], inf, a, dinf, da);
                    for (int g = 0; g < G; ++g) {
                        lamV += lamx[g] * (dinf[g] * (1.0 - a[g]) + (x[g] - inf[g]) * da[g]);
                        lamx_new[g] = lamx[g] * a[g];
                    }
                    lam_vn = lamV;
                }
                in[0] = (V[k] - v_center) / v_half;
                for (int j = 0; j < Zmax; ++j) in[1 + j] = j < Z ? z[j] : 0.0;
                mlp_fwd(p, &L, in, buf, rstd, out);
                double Gs, Es;
                soma_currents(C, M, G, gate_index, gate_power, gbar, erev, Af, x, o, &Gs, &Es);
                double den = cap + Gs, lam_num = lam_vn / den;
                lam_s += st[k] * lam_num;
                lam_out[0] = axial_scale * lam_num;
                for (int j = 0; j < Zmax; ++j) lam_out[1 + j] = j < Z ? latent_rate * dt * lamz[j] : 0.0;
                mlp_bwd(p, gpar, &L, in, buf, rstd, lam_out, lam_in, s1, s2);
                for (int j = 0; j < Z; ++j) lamz[j] += lam_in[1 + j];
                if (mode != 0) {
                    double lam_G = -lam_vn * Vp[k + 1] / den;
                    for (int c = 0; c < C; ++c) {
                        double lam_o = Af * (lam_G + erev[c] * lam_num);
                        for (int m = 0; m < M; ++m) {
                            int g = gate_index[c * M + m];
                            if (g >= G) continue;
                            /* d o_c / d x_g = gbar_c p x_g^(p-1) prod of the channel's other gates */
                            double d = gbar[c] * gate_power[c * M + m];
                            for (int m2 = 0; m2 < M; ++m2) {
                                int g2 = gate_index[c * M + m2];
                                if (g2 >= G) continue;
                                int pw = gate_power[c * M + m2] - (m2 == m);
                                for (int q = 0; q < pw; ++q) d *= x[g2];
                            }
                            lamx_new[g] += lam_o * d;
                        }
                    }
                    lamV = cap * lam_num + lam_in[0] / v_half;
                    for (int g = 0; g < G; ++g) lamx[g] = lamx_new[g];
                }
            }
            gpar[L.os] = lam_s;
            free(lamz);
        } else if (want_grad) {
            for (long q = 0; q < P; ++q) gpar[q] = NAN;
        }
        free(V);
    }
    return n_bad;
}

/* The hybrid without a backward pass, four traces of one model at a time in the lanes of a v4: the MLP
   becomes a matrix-matrix product (each weight loaded once for four traces) and needs no horizontal sums.
   Instance i = (model i / n_groups, lanes 4 (i % n_groups) .. + 3 of that model's R traces); a group with
   fewer than four traces repeats its last one and drops the copies. Same step and loss as hybrid_run. */
#define NL 4
int hybrid_lanes(int n_models, int P, const double *params, double *losses, const int *nz, int Zmax, int H, int D,
                 int act, int G, int C, int M, const int *gate_index, const int *gate_power, const double *gbar,
                 const double *erev, double Af, double cap, int K, double v_lo, double inv_h, const double *tab,
                 int T, int R, const double *stim, const double *v_target, double v0, int every, double scale,
                 double dt, double v_center, double v_half, double axial_scale, double latent_rate, double *v_out,
                 double *iax_out, double *z_out, int n_threads) {
    Layout L;
    make_layout(&L, 1 + Zmax, H, 1 + Zmax, D, act);
    if (L.P != P || act != 0 || G > 16 || C > 16) return -1;
    int n_groups = (R + NL - 1) / NL, n_bad = 0;
#pragma omp parallel for num_threads(n_threads) if (n_models * n_groups > 1 && n_threads > 1) \
    schedule(dynamic, 1) reduction(+:n_bad)
    for (int task = 0; task < n_models * n_groups; ++task) {
        int md = task / n_groups, r0 = NL * (task % n_groups), lane_trace[NL], owns[NL];
        size_t row[NL];  /* the output row of the lane's trace; only the lane that owns it (not a copy) writes */
        for (int l = 0; l < NL; ++l) {
            owns[l] = r0 + l < R;
            lane_trace[l] = owns[l] ? r0 + l : R - 1;
            row[l] = (size_t)md * R + lane_trace[l];
        }
        const double *p = params + (size_t)md * P;
        int Z = nz[md], I = 1 + Zmax;
        double s_scale = p[L.os];
        v4 lanes[2 * I + 2 * H];  /* on the stack: malloc's 16-byte alignment is too little for a v4 */
        v4 *in = lanes, *out = in + I, *nh = out + I, *pre = nh + H;
        double x[NL][16], inf[16], a[16], o[16], V[NL], loss[NL] = {0.0};
        int bad[NL] = {0}, n_loss = 0;
        for (int l = 0; l < NL; ++l) {
            V[l] = v0;
            table_at(tab, K, G, v_lo, inv_h, v0, x[l], a, NULL, NULL);
            if (owns[l]) {
                size_t t = row[l];
                v_out[t * (T + 1)] = v0;
                if (z_out) for (int j = 0; j < Zmax; ++j) z_out[t * (T + 1) * Zmax + j] = 0.0;
            }
        }
        for (int j = 0; j < I; ++j) in[j] = (v4){0.0, 0.0, 0.0, 0.0};
        for (int k = 0; k < T; ++k) {
            for (int l = 0; l < NL; ++l) in[0][l] = (V[l] - v_center) / v_half;
            /* the MLP, lanes = traces */
            const v4 *hin = in;
            int fan_in = I;
            for (int ly = 0; ly < D; ++ly) {
                const double *W = p + L.oW[ly], *b = p + L.ob[ly], *g = p + L.og[ly], *be = p + L.obeta[ly];
                int j0 = 0;
                for (; j0 + 8 <= H; j0 += 8) {
                    v4 acc[8];
                    for (int j = 0; j < 8; ++j) acc[j] = (v4){0.0, 0.0, 0.0, 0.0} + b[j0 + j];
                    for (int i = 0; i < fan_in; ++i) {
                        const double *w = W + (size_t)i * H + j0;
                        v4 xi = hin[i];
                        for (int j = 0; j < 8; ++j) acc[j] += w[j] * xi;
                    }
                    for (int j = 0; j < 8; ++j) nh[j0 + j] = acc[j];
                }
                for (; j0 < H; ++j0) {
                    v4 acc = (v4){0.0, 0.0, 0.0, 0.0} + b[j0];
                    for (int i = 0; i < fan_in; ++i) acc += W[(size_t)i * H + j0] * hin[i];
                    nh[j0] = acc;
                }
                v4 mean = {0.0, 0.0, 0.0, 0.0}, var = mean, rs;
                for (int j = 0; j < H; ++j) mean += nh[j];
                mean /= (double)H;
                for (int j = 0; j < H; ++j) { v4 d = nh[j] - mean; var += d * d; }
                var /= (double)H;
                for (int l = 0; l < NL; ++l) rs[l] = 1.0 / sqrt(var[l] + 1e-5);
                for (int j = 0; j < H; ++j) pre[j] = fast_tanh4((nh[j] - mean) * rs * g[j] + be[j]);
                hin = pre;
                fan_in = H;
            }
            const double *Wo = p + L.oW[D], *bo = p + L.ob[D];
            for (int j = 0; j < I; ++j) {
                v4 acc = (v4){0.0, 0.0, 0.0, 0.0} + bo[j];
                for (int i = 0; i < H; ++i) acc += Wo[(size_t)i * I + j] * hin[i];
                out[j] = acc;
            }
            /* the soma, lane by lane */
            int any_loss = (k + 1) % every == 0;
            for (int l = 0; l < NL; ++l) {
                if (bad[l]) continue;
                double Gs, Es, iax = out[0][l] * axial_scale;
                soma_currents(C, M, G, gate_index, gate_power, gbar, erev, Af, x[l], o, &Gs, &Es);
                double vn = (cap * V[l] + Es + s_scale * stim[(size_t)lane_trace[l] * T + k] + iax) / (cap + Gs);
                for (int j = 0; j < Zmax; ++j)
                    in[1 + j][l] = j < Z ? in[1 + j][l] + dt * out[1 + j][l] * latent_rate : 0.0;
                if (!isfinite(vn)) { bad[l] = 1; continue; }
                V[l] = vn;
                table_at(tab, K, G, v_lo, inv_h, vn, inf, a, NULL, NULL);
                for (int q = 0; q < G; ++q) x[l][q] = inf[q] + (x[l][q] - inf[q]) * a[q];
                if (any_loss) {
                    double e = (vn - v_target[(size_t)lane_trace[l] * (T + 1) + k + 1]) * scale;
                    loss[l] += e * e;
                }
                if (owns[l]) {
                    size_t t = row[l];
                    v_out[t * (T + 1) + k + 1] = vn;
                    if (iax_out) iax_out[t * T + k] = iax;
                    if (z_out) for (int j = 0; j < Zmax; ++j) z_out[(t * (T + 1) + k + 1) * Zmax + j] = in[1 + j][l];
                }
            }
            n_loss += any_loss;
        }
        for (int l = 0; l < NL; ++l) {
            if (!owns[l]) continue;
            size_t t = row[l];
            losses[t] = bad[l] ? NAN : loss[l] / (n_loss > 0 ? n_loss : 1);
            n_bad += bad[l];
            if (bad[l]) {
                for (int k = 0; k <= T; ++k) v_out[t * (T + 1) + k] = NAN;
                if (z_out) for (size_t q = 0; q < (size_t)(T + 1) * Zmax; ++q) z_out[t * (T + 1) * Zmax + q] = NAN;
            }
        }
    }
    return n_bad;
}
"""

_DOUBLE_P = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")
_LONG_P = np.ctypeslib.ndpointer(np.int64, flags="C_CONTIGUOUS")
_INT_P = np.ctypeslib.ndpointer(np.int32, flags="C_CONTIGUOUS")
_BYTE_P = np.ctypeslib.ndpointer(np.uint8, flags="C_CONTIGUOUS")


class _OptionalDoubles:
    """A float64 C array argument that may be None (NULL)."""

    @classmethod
    def from_param(cls, obj: np.ndarray | None) -> ctypes.c_void_p:
        if obj is None:
            return ctypes.c_void_p(None)
        return _DOUBLE_P.from_param(obj)


_OPT_DOUBLE_P = _OptionalDoubles


# Fused multiply-adds allowed (-ffp-contract=fast): the MLP's products and sums are most of a hybrid step.
FLAGS = ("-std=c99", "-ffp-contract=fast")


@functools.cache
def load() -> ctypes.CDLL | None:
    """The compiled kernels (built on first use, cached on disk), or None without a compiler."""
    lib = compiled_library("cable", SOURCE, FLAGS)
    if lib is None:
        return None
    lib.tree_solve.restype = None
    lib.tree_solve.argtypes = [ctypes.c_int, ctypes.c_int, _LONG_P, _DOUBLE_P, ctypes.c_long, _DOUBLE_P, _DOUBLE_P,
                               ctypes.c_int]
    i, d = ctypes.c_int, ctypes.c_double
    lib.cable_run.restype = ctypes.c_int
    lib.cable_run.argtypes = [i, i, i, i, i, i, _LONG_P, _DOUBLE_P, _DOUBLE_P, _DOUBLE_P, _DOUBLE_P, _DOUBLE_P,
                              ctypes.c_long, _DOUBLE_P, _INT_P, _INT_P, _BYTE_P, i, d, d, _DOUBLE_P, i, _LONG_P,
                              _DOUBLE_P, i, _LONG_P, _DOUBLE_P, _DOUBLE_P, _DOUBLE_P, i, i]
    lib.hybrid_run.restype = ctypes.c_int
    lib.hybrid_run.argtypes = [i, i, _DOUBLE_P, _DOUBLE_P, _DOUBLE_P, _INT_P, i, i, i, i, i, i, i, _INT_P, _INT_P,
                               _DOUBLE_P, _DOUBLE_P, d, d, i, d, d, _DOUBLE_P, i, _DOUBLE_P, ctypes.c_long,
                               _DOUBLE_P, ctypes.c_long, d, i, i, d, d, d, d, d, d, i, _OPT_DOUBLE_P, _OPT_DOUBLE_P,
                               _OPT_DOUBLE_P, i]
    lib.hybrid_lanes.restype = ctypes.c_int
    lib.hybrid_lanes.argtypes = [i, i, _DOUBLE_P, _DOUBLE_P, _INT_P, i, i, i, i, i, i, i, _INT_P, _INT_P, _DOUBLE_P,
                                 _DOUBLE_P, d, d, i, d, d, _DOUBLE_P, i, i, _DOUBLE_P, _DOUBLE_P, d, i, d, d, d, d,
                                 d, d, _DOUBLE_P, _OPT_DOUBLE_P, _OPT_DOUBLE_P, i]
    return lib
