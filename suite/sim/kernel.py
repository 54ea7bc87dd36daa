"""A compiled rollout kernel for tabulated membranes: the whole time loop in C, forward and adjoint.

Python overhead per time step, not arithmetic, limits a single compartment on a CPU; this kernel
runs every step of every cell in C (OpenMP over cells), with gates tabulated on a uniform voltage
grid (as NEURON's TABLE does; linear interpolation). Any gate can be tabulated: mechanistic ones
from their rate forms, neural ones from their MLP on the grid, so one pass of the network per
training step replaces one per time step. ``rollout`` is differentiable (a hand-written discrete
adjoint) with respect to the tables, gbar, E_rev, capacitance, the injected current and the
initial gates.

The scheme is ``suite.sim.single``'s: V takes a theta step (theta 0: backward Euler, NEURON's
default; 0.5: Crank-Nicolson) with the conductances of the gates, which are staggered half a step
and then take an exponential-Euler step at the new voltage. The source is compiled once per
machine with the system C compiler into a cache folder; without one (or with
``$HYBRIDBENCH_NO_NATIVE`` set), and off the CPU, ``rollout`` and ``simulate`` run
``rollout_torch``, the same step in plain torch.
"""

from __future__ import annotations

import ctypes
from functools import cache

import torch
from torch import Tensor

from suite.cbuild import compiled_library

UA_PER_MA = 1e3

_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    int64_t B, T, G, C, W, M, R;  /* R: record V every R steps (forward only) */
    double vmin, dv, dt, theta, K;
} dims_t;

static inline void locate(double v, double vmin, double dv, int64_t M, int64_t *i, double *w, int *inside) {
    double pos = (v - vmin) * (1.0 / dv);
    *inside = 1;
    if (!(pos > 0.0)) { pos = 0.0; *inside = 0; }      /* also catches NaN */
    if (pos > (double)(M - 1)) { pos = (double)(M - 1); *inside = 0; }
    int64_t k = (int64_t)pos;
    if (k > M - 2) k = M - 2;
    *i = k;
    *w = pos - (double)k;
}

static inline double ipow(double x, int p) {
    switch (p) { case 1: return x; case 2: return x * x; case 3: return x * x * x;
                 case 4: { double y = x * x; return y * y; }
                 default: return pow(x, (double)p); }
}

static inline double dipow(double x, int p) {  /* d x^p / dx */
    switch (p) { case 1: return 1.0; case 2: return 2.0 * x; case 3: return 3.0 * x * x; case 4: return 4.0 * x * x * x;
                 default: return (double)p * pow(x, (double)(p - 1)); }
}

/* tables: inf, dec = exp(-dt/tau), each [B or 1][G][M] (tstride = G*M, or 0 when shared by all cells).
   Cells go in blocks of BLK: their time loops are independent, so interleaving them hides the latency
   of each step's dependency chain (V -> table -> gates -> V) and lets the compiler vectorise. */
#define BLK 16
void forward(const dims_t *d, const double *v0, const double *x0, const double *iext, int64_t istride,
             const double *iscale, const double *cap, const double *gbar, const double *erev,
             const double *tinf, const double *tdec, int64_t tstride,
             const int64_t *gidx, const int *gpow, const double *vforce, const double *gforce, double *V, double *X) {
    const int64_t B = d->B, T = d->T, G = d->G, C = d->C, W = d->W, M = d->M, R = d->R;
    const int64_t nblk = (B + BLK - 1) / BLK;
    const double K = d->K, th = d->theta, vmin = d->vmin, dv = d->dv;
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
                    switch (gpow[c * W + q]) {  /* hoisted out of the cell loop so that it vectorises */
                        case 1: for (int64_t j = 0; j < nb; j++) P[j] *= x[k][j]; break;
                        case 2: for (int64_t j = 0; j < nb; j++) P[j] *= x[k][j] * x[k][j]; break;
                        case 3: for (int64_t j = 0; j < nb; j++) P[j] *= x[k][j] * x[k][j] * x[k][j]; break;
                        case 4: for (int64_t j = 0; j < nb; j++) { double y = x[k][j] * x[k][j]; P[j] *= y * y; } break;
                        default: for (int64_t j = 0; j < nb; j++) P[j] *= ipow(x[k][j], gpow[c * W + q]);
                    }
                }
                for (int64_t j = 0; j < nb; j++) { gt[j] += P[j]; ge[j] += P[j] * erev[(b0 + j) * C + c]; }
            }
            for (int64_t j = 0; j < nb; j++) {
                const double I = s[j] * iext[(b0 + j) * istride + n];
                v[j] = ((a[j] - th * K * gt[j]) * v[j] + I + K * ge[j]) / (a[j] + (1.0 - th) * K * gt[j]);
                int inside;
                locate(v[j], vmin, dv, M, &ii[j], &w[j], &inside);
            }
            for (int64_t g = 0; g < G; g++) {
                for (int64_t j = 0; j < nb; j++) {
                    const double *pi = tinf + (b0 + j) * tstride + g * M + ii[j];
                    const double *pd = tdec + (b0 + j) * tstride + g * M + ii[j];
                    double u = pi[0] + w[j] * (pi[1] - pi[0]);
                    double e = pd[0] + w[j] * (pd[1] - pd[0]);
                    x[g][j] = u + (x[g][j] - u) * e;
                }
            }
            if ((n + 1) % R == 0) for (int64_t j = 0; j < nb; j++) V[(b0 + j) * (T / R + 1) + (n + 1) / R] = v[j];
            if (X) for (int64_t j = 0; j < nb; j++) for (int64_t g = 0; g < G; g++)
                X[((b0 + j) * (T + 1) + n + 1) * G + g] = x[g][j];
        }
    }
}

/* Discrete adjoint of forward(). gV: dL/dV [B][T+1]. Outputs (accumulated, zeroed by the caller):
   ginf, gdec [B][G][M] (always per cell), ggbar, gerev [B][C], gcap [B], giext [B][T], gx0 [B][G]. */
void backward(const dims_t *d, const double *iext, const double *cap, const double *gbar, const double *erev,
              const double *tinf, const double *tdec, int64_t tstride, const int64_t *gidx, const int *gpow,
              const double *gforce, const double *V, const double *X, const double *gV,
              double *ginf, double *gdec, double *ggbar, double *gerev, double *gcap, double *giext, double *gx0) {
    const int64_t B = d->B, T = d->T, G = d->G, C = d->C, W = d->W, M = d->M;
    const double th = d->theta, K = d->K;
    #pragma omp parallel for schedule(static) if (B > 1)
    for (int64_t b = 0; b < B; b++) {
        double lx[64], lxp[64], gcv[64], P[64];
        const double a = cap[b] / d->dt;
        const double *ti = tinf + b * tstride, *td = tdec + b * tstride;
        double *gi = ginf + b * G * M, *gd = gdec + b * G * M;
        const double *gb = gbar + b * C, *er = erev + b * C;
        const double *I = iext + b * T;
        const double *Vb = V + b * (T + 1), *Xb = X + b * (T + 1) * G, *gVb = gV + b * (T + 1);
        double lv = gVb[T];
        for (int64_t g = 0; g < G; g++) lx[g] = 0.0;
        for (int64_t n = T - 1; n >= 0; n--) {
            const double vn = Vb[n], vp = Vb[n + 1];
            const double *xn = Xb + n * G;
            /* gate update X[n+1] = u + (X[n] - u) e at V[n+1] */
            int64_t i; double w; int inside;
            locate(vp, d->vmin, d->dv, M, &i, &w, &inside);
            for (int64_t g = 0; g < G; g++) {
                const double *pi = ti + g * M + i, *pd = td + g * M + i;
                double u = pi[0] + w * (pi[1] - pi[0]);
                double e = pd[0] + w * (pd[1] - pd[0]);
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
                    p *= ipow(xn[k], gpow[c * W + ww]);
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
                        if (w2 != ww) others *= ipow(xn[k2], gpow[c * W + w2]);
                    }
                    lxp[k] += lp * others * dipow(xn[k], gpow[c * W + ww]);
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
"""


class _Dims(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int64) for n in ("B", "T", "G", "C", "W", "M", "R")] + \
               [(n, ctypes.c_double) for n in ("vmin", "dv", "dt", "theta", "K")]


@cache
def _library() -> ctypes.CDLL | None:
    """The kernel (built once per machine and source, see ``suite.cbuild``); None without a C compiler."""
    lib = compiled_library("membrane", _SOURCE, ("-fno-math-errno",))
    if lib is not None:
        for fn in (lib.forward, lib.backward):
            fn.restype = None
    return lib


def available() -> bool:
    return _library() is not None


def _ptr(t: Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr() if t is not None else 0)


class GateLayout:
    """Which gates (rows of x) each channel multiplies, with powers: a padded [C, W] index, -1 for padding."""

    def __init__(self, index: Tensor, power: Tensor, n_gates: int) -> None:
        self.index = index.to(torch.int64).contiguous()
        self.power = power.to(torch.int32).contiguous()
        self.n_gates = n_gates
        if n_gates > 64:
            raise ValueError("the kernel holds at most 64 gates per cell")

    @classmethod
    def of(cls, membrane) -> GateLayout:  # noqa: ANN001 - a suite.sim.membrane.Membrane
        idx = membrane.gate_index.cpu().clone()
        idx[idx == membrane.n_gates] = -1
        return cls(idx, membrane.gate_power[..., 0].cpu().round(), membrane.n_gates)


def _dims(B: int, T: int, layout: GateLayout, M: int, vmin: float, dv: float, dt: float, theta: float,  # noqa: N803
          record_every: int = 1) -> _Dims:
    C, W = layout.index.shape  # noqa: N806
    return _Dims(B, T, layout.n_gates, C, W, M, record_every, vmin, dv, dt, theta, UA_PER_MA)


class _Rollout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v0, x0, iext, cap, gbar, erev, tinf, tdec, layout, vmin, dv, dt, theta,  # noqa: ANN001
                vforce=None, gforce=None):
        lib = _library()
        B, T = iext.shape  # noqa: N806
        G, M = tinf.shape[-2:]  # noqa: N806
        shared = tinf.shape[0] == 1 and B > 1
        d = _dims(B, T, layout, M, vmin, dv, dt, theta)
        V = torch.empty(B, T + 1, dtype=torch.float64)  # noqa: N806
        need_x = any(ctx.needs_input_grad)
        X = torch.empty(B, T + 1, G, dtype=torch.float64) if need_x else None  # noqa: N806
        lib.forward(ctypes.byref(d), _ptr(v0), _ptr(x0), _ptr(iext), ctypes.c_int64(T), _ptr(None), _ptr(cap),
                    _ptr(gbar), _ptr(erev), _ptr(tinf),
                    _ptr(tdec), ctypes.c_int64(0 if shared else G * M), _ptr(layout.index), _ptr(layout.power),
                    _ptr(vforce), _ptr(gforce), _ptr(V), _ptr(X))
        ctx.save_for_backward(iext, cap, gbar, erev, tinf, tdec, V, X)
        ctx.gforce = gforce
        ctx.meta = (layout, vmin, dv, dt, theta, shared)
        return V

    @staticmethod
    def backward(ctx, gV):  # noqa: ANN001, N803
        iext, cap, gbar, erev, tinf, tdec, V, X = ctx.saved_tensors  # noqa: N806
        layout, vmin, dv, dt, theta, shared = ctx.meta
        B, T = iext.shape  # noqa: N806
        G, M = tinf.shape[-2:]  # noqa: N806
        d = _dims(B, T, layout, M, vmin, dv, dt, theta)
        z = {"dtype": torch.float64}
        ginf, gdec = torch.zeros(B, G, M, **z), torch.zeros(B, G, M, **z)
        ggbar, gerev = torch.zeros_like(gbar), torch.zeros_like(erev)
        gcap, giext, gx0 = torch.zeros(B, **z), torch.zeros(B, T, **z), torch.zeros(B, G, **z)
        lib = _library()
        lib.backward(ctypes.byref(d), _ptr(iext), _ptr(cap), _ptr(gbar), _ptr(erev), _ptr(tinf), _ptr(tdec),
                     ctypes.c_int64(0 if shared else G * M), _ptr(layout.index), _ptr(layout.power),
                     _ptr(ctx.gforce), _ptr(V), _ptr(X),
                     _ptr(gV.contiguous()), _ptr(ginf), _ptr(gdec), _ptr(ggbar), _ptr(gerev), _ptr(gcap), _ptr(giext),
                     _ptr(gx0))
        if shared:
            ginf, gdec = ginf.sum(0, keepdim=True), gdec.sum(0, keepdim=True)
        return None, gx0, giext, gcap, ggbar, gerev, ginf, gdec, None, None, None, None, None, None, None


@torch.no_grad()
def simulate(v0: Tensor, x0: Tensor, iext: Tensor, capacitance: Tensor, gbar: Tensor, e_rev: Tensor,
             inf_table: Tensor, dec_table: Tensor, layout: GateLayout, vmin: float, dv: float, dt: float,
             theta: float = 0.0, record_every: int = 1, current_scale: Tensor | None = None,
             keep_gates: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Forward only, recording V every ``record_every`` steps: ``[B, T // record_every + 1]``.

    ``keep_gates`` also returns the gates at every step, ``[B, T + 1, G]`` (staggered half a step).

    ``iext`` may be ``[1, T]``, shared by all cells and scaled per cell by ``current_scale`` [B]
    (a step current for 16,384 cells need not be 16,384 rows).
    """
    lib = _library()
    if lib is None or v0.device.type != "cpu":
        return rollout_torch(v0, x0, iext, capacitance, gbar, e_rev, inf_table, dec_table, layout, vmin, dv, dt,
                             theta, record_every=record_every, current_scale=current_scale, keep_gates=keep_gates)
    f64 = {"dtype": torch.float64, "device": "cpu"}
    v0, x0, iext, cap, gbar, e_rev, tinf, tdec = (t.to(**f64).contiguous() for t in (
        v0, x0, iext, capacitance, gbar, e_rev, inf_table, dec_table))
    B, T = v0.shape[0], iext.shape[1]  # noqa: N806
    G, M = tinf.shape[-2:]  # noqa: N806
    scale = current_scale.to(**f64).contiguous() if current_scale is not None else None
    d = _dims(B, T, layout, M, vmin, dv, dt, theta, record_every)
    V = torch.empty(B, T // record_every + 1, **f64)  # noqa: N806
    X = torch.empty(B, T + 1, G, **f64) if keep_gates else None  # noqa: N806
    shared = tinf.shape[0] == 1
    lib.forward(ctypes.byref(d), _ptr(v0), _ptr(x0), _ptr(iext), ctypes.c_int64(0 if iext.shape[0] == 1 else T),
                _ptr(scale), _ptr(cap), _ptr(gbar), _ptr(e_rev), _ptr(tinf), _ptr(tdec),
                ctypes.c_int64(0 if shared else G * M), _ptr(layout.index), _ptr(layout.power), _ptr(None),
                _ptr(None), _ptr(V), _ptr(X))
    return (V, X) if keep_gates else V


def rollout(v0: Tensor, x0: Tensor, iext: Tensor, capacitance: Tensor, gbar: Tensor, e_rev: Tensor,
            inf_table: Tensor, dec_table: Tensor, layout: GateLayout, vmin: float, dv: float, dt: float,
            theta: float = 0.0, force_v: Tensor | None = None, force_g: Tensor | None = None) -> Tensor:
    """Voltages ``[B, T+1]`` of B cells over ``T`` steps of ``dt`` ms (float64, CPU).

    ``v0`` [B] mV, ``x0`` [B, G] (gates half a step ahead, e.g. steady state), ``iext`` [B, T] uA/cm2
    at step midpoints, ``capacitance`` [B] uF/cm2, ``gbar``/``e_rev`` [B, C]; ``inf_table`` and
    ``dec_table`` (= exp(-dt/tau)) are [B or 1, G, M] on the grid vmin + k dv (flat outside).
    ``force_v`` [B, T] and ``force_g`` [B] (S/cm2) add a forcing current g (force_v - V): teacher
    forcing towards an observed voltage, as strong as wished (not differentiated). Without the
    compiled kernel, or off the CPU, this is ``rollout_torch``.
    """
    if _library() is None or v0.device.type != "cpu":
        return rollout_torch(v0, x0, iext, capacitance, gbar, e_rev, inf_table, dec_table, layout, vmin, dv, dt,
                             theta, force_v, force_g)
    f64 = {"dtype": torch.float64, "device": "cpu"}
    args = [t.to(**f64).contiguous() for t in (v0, x0, iext, capacitance, gbar, e_rev, inf_table, dec_table)]
    force = (None, None)
    if force_v is not None and force_g is not None:
        force = (force_v.to(**f64).contiguous(), force_g.to(**f64).contiguous())
    return _Rollout.apply(*args, layout, float(vmin), float(dv), float(dt), float(theta), *force)


def interp_table(table: Tensor, v: Tensor, vmin: float, dv: float) -> Tensor:
    """Rows of ``table`` [B or 1, G, M] at ``v`` [B]: [B, G], linear, flat outside (as the kernel)."""
    m = table.shape[-1]
    pos = ((v - vmin) / dv).clamp(0.0, m - 1.0)
    pos = torch.where(torch.isnan(pos), torch.zeros_like(pos), pos)
    i = pos.detach().floor().clamp(max=m - 2).long()
    w = (pos - i).unsqueeze(1)
    tab = table.expand(v.shape[0], -1, -1)
    idx = i.view(-1, 1, 1).expand(-1, tab.shape[1], 1)
    lo = tab.gather(2, idx)[..., 0]
    hi = tab.gather(2, idx + 1)[..., 0]
    return lo + w * (hi - lo)


def rollout_torch(v0: Tensor, x0: Tensor, iext: Tensor, capacitance: Tensor, gbar: Tensor, e_rev: Tensor,
                  inf_table: Tensor, dec_table: Tensor, layout: GateLayout, vmin: float, dv: float, dt: float,
                  theta: float = 0.0, force_v: Tensor | None = None, force_g: Tensor | None = None,
                  record_every: int = 1, current_scale: Tensor | None = None,
                  keep_gates: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """``rollout`` and ``simulate`` in plain torch (autograd, any device): the kernel's reference.

    ``iext`` may be ``[1, T]`` scaled per cell by ``current_scale`` [B]; voltages are kept every
    ``record_every`` steps, and ``keep_gates`` also returns the gates ``[B, T + 1, G]``.
    """
    idx = layout.index.to(v0.device)
    pad = idx < 0
    idx = torch.where(pad, torch.full_like(idx, layout.n_gates), idx)
    power = layout.power.to(v0.device, v0.dtype)
    v, x = v0, x0
    a = capacitance / dt
    vs, xs = [v], [x]
    for n in range(iext.shape[1]):
        padded = torch.cat([x, x.new_ones(x.shape[0], 1)], 1)[:, idx]  # [B, C, W]
        p = torch.where(pad, torch.ones_like(padded), padded.pow(power)).prod(-1)
        g = gbar * p
        gt, ge = g.sum(1), (g * e_rev).sum(1)
        if force_v is not None and force_g is not None:
            gt, ge = gt + force_g, ge + force_g * force_v[:, n]
        i_n = iext[:, n] if current_scale is None else iext[:, n] * current_scale
        v = ((a - theta * UA_PER_MA * gt) * v + i_n + UA_PER_MA * ge) / (a + (1 - theta) * UA_PER_MA * gt)
        u = interp_table(inf_table, v, vmin, dv)
        e = interp_table(dec_table, v, vmin, dv)
        x = u + (x - u) * e
        vs.append(v)
        if keep_gates:
            xs.append(x)
    voltages = torch.stack(vs, 1)[:, ::record_every]
    return (voltages, torch.stack(xs, 1)) if keep_gates else voltages
