/* cable.c: the cable's hot loops (suite/sim/cable.py, suite/sim/hines.py): a batched tree solve and the
   whole simulation of a batch of cells in one call. */
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "hybridbench.h"

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

/* A x = rhs for B trees with one sparsity: A_ii = d[b,i], A_{i,p(i)} = A_{p(i),i} = -g[b,i] (g shared
   when g_stride == 0). Hines order: parent[i] < i. d is overwritten, x is written to rhs. */
void hb_tree_solve(const hb_tree_args *a) {
    const int B = a->B, N = a->N, n_threads = a->n_threads;
    const long *parent = a->parent, g_stride = a->g_stride;
    const double *g = a->g;
    double *d = a->d, *rhs = a->rhs;
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
static inline __attribute__((always_inline)) int cable_group(const int LN, int b0, int nb, const hb_cable_args *a) {
        const int N = a->N, T = a->T, G = a->G, C = a->C, M = a->M, K = a->K, S = a->S, R = a->R;
        const int theta = a->theta;
        const long *parent = a->parent, gbar_stride = a->gbar_stride, *stim_node = a->stim_node;
        const long *rec_node = a->rec_node;
        const double *g_ax = a->g_ax, *gsum = a->gsum, *cap = a->cap, *area_f = a->area_f, *gbar = a->gbar;
        const double *erev = a->erev, *tab = a->tab, *stim = a->stim, *v0 = a->v0, *x0 = a->x0;
        const double v_lo = a->v_lo, inv_h = a->inv_h;
        const int *gate_index = a->gate_index, *gate_power = a->gate_power;
        const unsigned char *has_membrane = a->has_membrane;
        double *out = a->out;
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
                            HB_MUL_POW(o, xg, LN, gate_power[c * M + m])
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
                    int64_t j;
                    hb_locate(V[i * LN + w], v_lo, inv_h, K, &j, &fr[w]);
                    row[w] = (long)j * G * 2;
                }
                for (int g = 0; g < G; ++g) {  /* lanes innermost: a gather per lane, SIMD arithmetic */
                    double *xg = X + ((size_t)g * N + i) * LN;
                    for (int w = 0; w < LN; ++w) {
                        const double *lo = tab + row[w] + 2 * g, *hi = lo + 2 * G;
                        xg[w] = hb_gate_step(xg[w], hb_lerp(lo[0], hi[0], fr[w]), hb_lerp(lo[1], hi[1], fr[w]));
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


static int cable_group4(int b0, int nb, const hb_cable_args *a) { return cable_group(4, b0, nb, a); }

static int cable_group1(int b0, int nb, const hb_cable_args *a) { return cable_group(1, b0, nb, a); }

int hb_cable_run(const hb_cable_args *a) {
    const int B = a->B, n_threads = a->n_threads;
    /* a few cells run one lane each (no idle lanes); a batch runs 4 lanes per group */
    int lanes = B >= MAX_LANES ? MAX_LANES : 1;
    int n_groups = (B + lanes - 1) / lanes, bad = 0;
#pragma omp parallel for num_threads(n_threads) if (n_groups > 1 && n_threads > 1) schedule(dynamic, 1) \
    reduction(+:bad)
    for (int grp = 0; grp < n_groups; ++grp) {
        int b0 = grp * lanes, nb = B - b0 < lanes ? B - b0 : lanes;
        if (lanes == MAX_LANES)
            bad += cable_group4(b0, nb, a);
        else
            bad += cable_group1(b0, nb, a);
    }
    return bad;
}

/* the loader checks its structs against these */
size_t hb_tree_args_size(void) { return sizeof(hb_tree_args); }
size_t hb_cable_args_size(void) { return sizeof(hb_cable_args); }
