/* hybrid.c: the reduced cell (suite/sim/reduced.py), a soma with tabulated gates plus an MLP axial current.

   hb_hybrid_run runs one trace per instance, forward and back-propagation through time; hb_hybrid_lanes runs
   four traces of one model in the lanes of a v4, forward only. Their MLPs differ in shape on purpose (one
   input row against four): each keeps its own order of summation. */
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "hybridbench.h"

/* ---- The reduced cell: a soma with tabulated gates plus an MLP axial current (suite/sim/reduced.py) ----
   Per model: params laid out as W_0 [I, H], b_0 [H], ..., W_{D-1} [H, H], b_{D-1}, W_out [H, O], b_out [O],
   then (gamma_l [H], beta_l [H]) per hidden layer, then the stimulus scale s. I = O = 1 + Zmax; latents
   beyond the model's nz are held at zero. One call runs every model over its trace (mode 1: free run,
   loss on every `every`-th voltage; mode 0: teacher forcing, V clamped to the target, loss on each one-step
   prediction), returns the losses and, if asked, their gradients by back-propagation through time. */

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
static void mlp_fwd(const double *p, const hb_mlp_layout *L, const double *x, double *buf, double *rstd, double *out) {
    int H = L->H;
    const double *hin = x;
    int fan_in = L->I;
    for (int l = 0; l < L->D; ++l) {
        double *nh = buf + (size_t)l * 3 * H, *pre = nh + H, *h = pre + H;
        const double *g = p + L->og[l], *be = p + L->obeta[l];
        dense(p + L->oW[l], p + L->ob[l], hin, fan_in, H, nh);
        double mean = vsum(nh, H, 0.0, 0) / H, var = vsum(nh, H, mean, 1) / H;
        double r = 1.0 / sqrt(var + HB_LN_EPS);
        rstd[l] = r;
        for (int j = 0; j < H; ++j) {
            nh[j] = (nh[j] - mean) * r;
            pre[j] = nh[j] * g[j] + be[j];
        }
        int j = 0;
        if (L->act == 0)
            for (; j + 4 <= H; j += 4) *(v4u *)(h + j) = hb_tanh4(*(const v4u *)(pre + j));
        for (; j < H; ++j) h[j] = hb_act(pre[j], L->act);
        hin = h;
        fan_in = H;
    }
    dense(p + L->oW[L->D], p + L->ob[L->D], hin, fan_in, L->O, out);
}

static void mlp_bwd(const double *p, double *gp, const hb_mlp_layout *L, const double *x, const double *buf,
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
            double ln = lh[j] * hb_act_d(pre[j], h[j], L->act);
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
    int64_t j;
    double fr;
    int inside = hb_locate(v, v_lo, inv_h, K, &j, &fr);
    const double *lo = tab + (size_t)j * G * 2, *hi = lo + G * 2;
    for (int g = 0; g < G; ++g) {
        inf[g] = hb_lerp(lo[2 * g], hi[2 * g], fr);
        a[g] = hb_lerp(lo[2 * g + 1], hi[2 * g + 1], fr);
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

int hb_hybrid_run(const hb_hybrid_args *args) {
    const int n_models = args->n_models, P = args->P, Zmax = args->Zmax, H = args->H, D = args->D;
    const int act = args->act, G = args->G, C = args->C, M = args->M, K = args->K, T = args->T;
    const int mode = args->mode, every = args->every, want_grad = args->want_grad, n_threads = args->n_threads;
    const long stim_stride = args->stim_stride, target_stride = args->target_stride;
    const double Af = args->Af, cap = args->cap, v_lo = args->v_lo, inv_h = args->inv_h, v0 = args->v0;
    const double scale = args->scale, dt = args->dt, v_center = args->v_center, v_half = args->v_half;
    const double axial_scale = args->axial_scale, latent_rate = args->latent_rate;
    const double *params = args->params, *gbar = args->gbar, *erev = args->erev, *tab = args->tab;
    const double *stim = args->stim, *v_target = args->v_target;
    double *grads = args->grads, *losses = args->losses, *v_out = args->v_out, *iax_out = args->iax_out;
    double *z_out = args->z_out;
    const int *nz = args->nz, *gate_index = args->gate_index, *gate_power = args->gate_power;
    hb_mlp_layout L;
    hb_mlp_layout_make(&L, 1 + Zmax, H, 1 + Zmax, D, act);
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
            for (int g = 0; g < G; ++g) xn[g] = hb_gate_step(x[g], inf[g], a[g]);
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
   fewer than four traces repeats its last one and drops the copies. Same step and loss as hb_hybrid_run. */
#define NL 4
int hb_hybrid_lanes(const hb_hybrid_args *args) {
    const int n_models = args->n_models, P = args->P, Zmax = args->Zmax, H = args->H, D = args->D;
    const int act = args->act, G = args->G, C = args->C, M = args->M, K = args->K, T = args->T, R = args->R;
    const int every = args->every, n_threads = args->n_threads;
    const double Af = args->Af, cap = args->cap, v_lo = args->v_lo, inv_h = args->inv_h, v0 = args->v0;
    const double scale = args->scale, dt = args->dt, v_center = args->v_center, v_half = args->v_half;
    const double axial_scale = args->axial_scale, latent_rate = args->latent_rate;
    const double *params = args->params, *gbar = args->gbar, *erev = args->erev, *tab = args->tab;
    const double *stim = args->stim, *v_target = args->v_target;
    double *losses = args->losses, *v_out = args->v_out, *iax_out = args->iax_out, *z_out = args->z_out;
    const int *nz = args->nz, *gate_index = args->gate_index, *gate_power = args->gate_power;
    hb_mlp_layout L;
    hb_mlp_layout_make(&L, 1 + Zmax, H, 1 + Zmax, D, act);
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
                for (int l = 0; l < NL; ++l) rs[l] = 1.0 / sqrt(var[l] + HB_LN_EPS);
                for (int j = 0; j < H; ++j) pre[j] = hb_tanh4((nh[j] - mean) * rs * g[j] + be[j]);
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
                for (int q = 0; q < G; ++q) x[l][q] = hb_gate_step(x[l][q], inf[q], a[q]);
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

/* the loader checks its struct against this */
size_t hb_hybrid_args_size(void) { return sizeof(hb_hybrid_args); }
