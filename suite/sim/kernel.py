"""A compiled rollout kernel for tabulated membranes: the whole time loop in C, forward and adjoint.

Python overhead per time step, not arithmetic, limits a single compartment on a CPU; this kernel
runs every step of every cell in C (``suite/native/membrane.c``, OpenMP over cells), with gates
tabulated on a uniform voltage grid (as NEURON's TABLE does; linear interpolation). Any gate can be
tabulated: mechanistic ones from their rate forms, neural ones from their MLP on the grid, so one pass
of the network per training step replaces one per time step. ``rollout`` is differentiable (a hand-written discrete
adjoint) with respect to the tables, gbar, E_rev, capacitance, the injected current and the
initial gates.

The scheme is ``suite.sim.single``'s: V takes a theta step (theta 0: backward Euler, NEURON's
default; 0.5: Crank-Nicolson) with the conductances of the gates, which are staggered half a step
and then take an exponential-Euler step at the new voltage. The source is compiled once per
machine (``suite.native``); without a C compiler (or with
``$HYBRIDBENCH_NO_NATIVE`` set), and off the CPU, ``rollout`` and ``simulate`` run
``rollout_torch``, the same step in plain torch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from suite.native import MembraneArgs, MembraneDims, args, library

UA_PER_MA = 1e3


def available() -> bool:
    return library() is not None


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
          record_every: int = 1) -> MembraneDims:
    C, W = layout.index.shape  # noqa: N806
    return MembraneDims(B, T, layout.n_gates, C, W, M, record_every, vmin, dv, dt, theta, UA_PER_MA)


class _Rollout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v0, x0, iext, cap, gbar, erev, tinf, tdec, layout, vmin, dv, dt, theta,  # noqa: ANN001
                vforce=None, gforce=None):
        B, T = iext.shape  # noqa: N806
        G, M = tinf.shape[-2:]  # noqa: N806
        shared = tinf.shape[0] == 1 and B > 1
        V = torch.empty(B, T + 1, dtype=torch.float64)  # noqa: N806
        need_x = any(ctx.needs_input_grad)
        X = torch.empty(B, T + 1, G, dtype=torch.float64) if need_x else None  # noqa: N806
        library().hb_membrane_forward(args(
            MembraneArgs, d=_dims(B, T, layout, M, vmin, dv, dt, theta), istride=T, tstride=0 if shared else G * M,
            v0=v0, x0=x0, iext=iext, cap=cap, gbar=gbar, erev=erev, tinf=tinf, tdec=tdec, gidx=layout.index,
            gpow=layout.power, vforce=vforce, gforce=gforce, V=V, X=X))
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
        z = {"dtype": torch.float64}
        ginf, gdec = torch.zeros(B, G, M, **z), torch.zeros(B, G, M, **z)
        ggbar, gerev = torch.zeros_like(gbar), torch.zeros_like(erev)
        gcap, giext, gx0 = torch.zeros(B, **z), torch.zeros(B, T, **z), torch.zeros(B, G, **z)
        library().hb_membrane_backward(args(
            MembraneArgs, d=_dims(B, T, layout, M, vmin, dv, dt, theta), tstride=0 if shared else G * M, iext=iext,
            cap=cap, gbar=gbar, erev=erev, tinf=tinf, tdec=tdec, gidx=layout.index, gpow=layout.power,
            gforce=ctx.gforce, V=V, X=X, gV=gV.contiguous(), ginf=ginf, gdec=gdec, ggbar=ggbar, gerev=gerev,
            gcap=gcap, giext=giext, gx0=gx0))
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
    lib = library()
    if lib is None or v0.device.type != "cpu":
        return rollout_torch(v0, x0, iext, capacitance, gbar, e_rev, inf_table, dec_table, layout, vmin, dv, dt,
                             theta, record_every=record_every, current_scale=current_scale, keep_gates=keep_gates)
    f64 = {"dtype": torch.float64, "device": "cpu"}
    v0, x0, iext, cap, gbar, e_rev, tinf, tdec = (t.to(**f64).contiguous() for t in (
        v0, x0, iext, capacitance, gbar, e_rev, inf_table, dec_table))
    B, T = v0.shape[0], iext.shape[1]  # noqa: N806
    G, M = tinf.shape[-2:]  # noqa: N806
    scale = current_scale.to(**f64).contiguous() if current_scale is not None else None
    V = torch.empty(B, T // record_every + 1, **f64)  # noqa: N806
    X = torch.empty(B, T + 1, G, **f64) if keep_gates else None  # noqa: N806
    shared = tinf.shape[0] == 1
    lib.hb_membrane_forward(args(
        MembraneArgs, d=_dims(B, T, layout, M, vmin, dv, dt, theta, record_every),
        istride=0 if iext.shape[0] == 1 else T, tstride=0 if shared else G * M, v0=v0, x0=x0, iext=iext,
        iscale=scale, cap=cap, gbar=gbar, erev=e_rev, tinf=tinf, tdec=tdec, gidx=layout.index, gpow=layout.power,
        V=V, X=X))
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
    if library() is None or v0.device.type != "cpu":
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
