/* membrane.c: the single-compartment rollout (suite/sim/kernel.py), forward and its discrete adjoint.

   Gates are tabulated on a uniform voltage grid: inf and dec = exp(-dt/tau), each [B or 1][G][M]
   (tstride = G*M, or 0 when shared by all cells). V takes a theta step with the conductances of the gates,
   which are staggered half a step and then take an exponential-Euler step at the new voltage. */
#include <string.h>

#include "hybridbench.h"

/* Cells go in blocks of BLK: their time loops are independent, so interleaving them hides the latency of each
   step's dependency chain (V -> table -> gates -> V) and lets the compiler vectorise. */
#define BLK 16

void hb_membrane_forward(const hb_membrane_args *args) {
    const hb_membrane_dims *d = &args->d;
    const double *v0 = args->v0, *x0 = args->x0, *iext = args->iext, *iscale = args->iscale, *cap = args->cap;
    const double *gbar = args->gbar, *erev = args->erev, *tinf = args->tinf, *tdec = args->tdec;
    const double *vforce = args->vforce, *gforce = args->gforce;
    const int64_t istride = args->istride, tstride = args->tstride, *gidx = args->gidx;
    const int *gpow = args->gpow;
    double *V = args->V, *X = args->X;
    const int64_t B = d->B, T = d->T, G = d->G, C = d->C, W = d->W, M = d->M, R = d->R;
    const int64_t nblk = (B + BLK - 1) / BLK;
    const double K = d->K, th = d->theta, vmin = d->vmin, inv_dv = 1.0 / d->dv;
    #pragma omp parallel for schedule(static) if (nblk > 1)
    for (int64_t blk = 0; blk < nblk; blk++) {
        const int64_t b0 = blk * BLK, nb = (B - b0 < BLK) ? B - b0 : BLK;
        double v[BLK], a[BLK], s[BLK], gt[BLK], ge[BLK], P[BLK], w[BLK];
        int64_t ii[BLK];
        double x[64][BLK];
        for (int64_t j = 0; j < nb; j++) {
            int64_t b = b0 + j;
            v[j] = v0[b];
            a[j] = cap[b] / d->dt;
            s[j] = iscale ? iscale[b] : 1.0;
            for (int64_t g = 0; g < G; g++) x[g][j] = x0[b * G + g];
            V[b * (T / R + 1)] = v[j];
            if (X) for (int64_t g = 0; g < G; g++) X[b * (T + 1) * G + g] = x[g][j];
        }
        for (int64_t n = 0; n < T; n++) {
            for (int64_t j = 0; j < nb; j++) {  /* optional forcing towards vforce: a conductance gforce */
                gt[j] = gforce ? gforce[b0 + j] : 0.0;
                ge[j] = gforce ? gforce[b0 + j] * vforce[(b0 + j) * T + n] : 0.0;
            }
            for (int64_t c = 0; c < C; c++) {
                for (int64_t j = 0; j < nb; j++) P[j] = gbar[(b0 + j) * C + c];
                for (int64_t q = 0; q < W; q++) {
                    int64_t k = gidx[c * W + q];
                    if (k < 0) break;
                    HB_MUL_POW(P, x[k], nb, gpow[c * W + q])
                }
                for (int64_t j = 0; j < nb; j++) { gt[j] += P[j]; ge[j] += P[j] * erev[(b0 + j) * C + c]; }
            }
            for (int64_t j = 0; j < nb; j++) {
                const double I = s[j] * iext[(b0 + j) * istride + n];
                v[j] = ((a[j] - th * K * gt[j]) * v[j] + I + K * ge[j]) / (a[j] + (1.0 - th) * K * gt[j]);
                hb_locate(v[j], vmin, inv_dv, M, &ii[j], &w[j]);
            }
            for (int64_t g = 0; g < G; g++) {
                for (int64_t j = 0; j < nb; j++) {
                    const double *pi = tinf + (b0 + j) * tstride + g * M + ii[j];
                    const double *pd = tdec + (b0 + j) * tstride + g * M + ii[j];
                    x[g][j] = hb_gate_step(x[g][j], hb_lerp(pi[0], pi[1], w[j]), hb_lerp(pd[0], pd[1], w[j]));
                }
            }
            if ((n + 1) % R == 0) for (int64_t j = 0; j < nb; j++) V[(b0 + j) * (T / R + 1) + (n + 1) / R] = v[j];
            if (X) for (int64_t j = 0; j < nb; j++) for (int64_t g = 0; g < G; g++)
                X[((b0 + j) * (T + 1) + n + 1) * G + g] = x[g][j];
        }
    }
}

/* Discrete adjoint of the forward. gV: dL/dV [B][T+1]. Outputs (accumulated, zeroed by the caller):
   ginf, gdec [B][G][M] (always per cell), ggbar, gerev [B][C], gcap [B], giext [B][T], gx0 [B][G]. */
void hb_membrane_backward(const hb_membrane_args *args) {
    const hb_membrane_dims *d = &args->d;
    const double *cap = args->cap, *gbar = args->gbar, *erev = args->erev;
    const double *tinf = args->tinf, *tdec = args->tdec, *gforce = args->gforce;
    const double *V = args->V, *X = args->X, *gV = args->gV;
    const int64_t tstride = args->tstride, *gidx = args->gidx;
    const int *gpow = args->gpow;
    double *ginf = args->ginf, *gdec = args->gdec, *ggbar = args->ggbar, *gerev = args->gerev;
    double *gcap = args->gcap, *giext = args->giext, *gx0 = args->gx0;
    const int64_t B = d->B, T = d->T, G = d->G, C = d->C, W = d->W, M = d->M;
    const double th = d->theta, K = d->K, inv_dv = 1.0 / d->dv;
    #pragma omp parallel for schedule(static) if (B > 1)
    for (int64_t b = 0; b < B; b++) {
        double lx[64], lxp[64], gcv[64], P[64];
        const double a = cap[b] / d->dt;
        const double *ti = tinf + b * tstride, *td = tdec + b * tstride;
        double *gi = ginf + b * G * M, *gd = gdec + b * G * M;
        const double *gb = gbar + b * C, *er = erev + b * C;
        const double *Vb = V + b * (T + 1), *Xb = X + b * (T + 1) * G, *gVb = gV + b * (T + 1);
        double lv = gVb[T];
        for (int64_t g = 0; g < G; g++) lx[g] = 0.0;
        for (int64_t n = T - 1; n >= 0; n--) {
            const double vn = Vb[n], vp = Vb[n + 1];
            const double *xn = Xb + n * G;
            /* gate update X[n+1] = u + (X[n] - u) e at V[n+1] */
            int64_t i; double w;
            int inside = hb_locate(vp, d->vmin, inv_dv, M, &i, &w);
            for (int64_t g = 0; g < G; g++) {
                const double *pi = ti + g * M + i, *pd = td + g * M + i;
                double u = hb_lerp(pi[0], pi[1], w);
                double e = hb_lerp(pd[0], pd[1], w);
                double gu = lx[g] * (1.0 - e), ge_ = lx[g] * (xn[g] - u);
                gi[g * M + i] += gu * (1.0 - w); gi[g * M + i + 1] += gu * w;
                gd[g * M + i] += ge_ * (1.0 - w); gd[g * M + i + 1] += ge_ * w;
                if (inside) lv += (gu * (pi[1] - pi[0]) + ge_ * (pd[1] - pd[0])) / d->dv;
                lxp[g] = lx[g] * e;
            }
            /* voltage update V[n+1] = num / den with the conductances of X[n] */
            double gt = gforce ? gforce[b] : 0.0;
            for (int64_t c = 0; c < C; c++) {
                double p = 1.0;
                for (int64_t ww = 0; ww < W; ww++) {
                    int64_t k = gidx[c * W + ww];
                    if (k < 0) break;
                    p *= hb_ipow(xn[k], gpow[c * W + ww]);
                }
                P[c] = p;
                gcv[c] = gb[c] * p;
                gt += gcv[c];
            }
            const double den = a + (1.0 - th) * K * gt;
            const double dgt = (-th * K * vn - (1.0 - th) * K * vp) / den;
            const double dge = K / den;
            for (int64_t c = 0; c < C; c++) {
                double lg = lv * (dgt + dge * er[c]);
                ggbar[b * C + c] += lg * P[c];
                gerev[b * C + c] += lv * dge * gcv[c];
                double lp = lg * gb[c];
                for (int64_t ww = 0; ww < W; ww++) {
                    int64_t k = gidx[c * W + ww];
                    if (k < 0) break;
                    /* d prod / d x_k = p x_k^(p-1) * product of the others */
                    double others = 1.0;
                    for (int64_t w2 = 0; w2 < W; w2++) {
                        int64_t k2 = gidx[c * W + w2];
                        if (k2 < 0) break;
                        if (w2 != ww) others *= hb_ipow(xn[k2], gpow[c * W + w2]);
                    }
                    lxp[k] += lp * others * hb_dipow(xn[k], gpow[c * W + ww]);
                }
            }
            giext[b * T + n] += lv / den;
            gcap[b] += lv * (vn - vp) / (den * d->dt);
            lv = lv * (a - th * K * gt) / den + gVb[n];
            for (int64_t g = 0; g < G; g++) lx[g] = lxp[g];
        }
        for (int64_t g = 0; g < G; g++) gx0[b * G + g] += lx[g];
    }
}

/* the loader checks its struct against this */
size_t hb_membrane_args_size(void) { return sizeof(hb_membrane_args); }
