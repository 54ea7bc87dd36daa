"""The single compartments fitted to recordings: an expert Pospischil cell, and its two hybrids.

    C dV/dt = I_inj / A - sum_k g_k prod_j x_j^p_j (V - E_k) + I_learned / A

Channels are Pospischil et al. (2008)'s (``channelzoo.models``): Na (m3h), delayed-rectifier K
(n4), slow M-type K (p) and leak, at 36 C. Trained in log space: conductances (S/cm2) and the
membrane area A (cm2; C is 1 uF/cm2, so A carries the capacitance); trained directly: E_Na, E_K
(shared by Kd and M), E_leak, the spike-threshold shift V_T (Na and Kd rates evaluated at
V - (V_T + 60)) and log of the M current's tau scale (tau_max / 1000 ms). The kinds:

- ``expert``: the above;
- ``hybrid_gate``: Kd's n is a neural gate (``NeuralGateEnsemble``), first regressed onto the
  expert's n (x_inf and tau at the initial V_T), then trained with the rest;
- ``hybrid_current``: the expert plus a learned current with latent states (``AxialODE``, the
  reduction's neural current), starting near zero.

The step is ``SingleCompartment.step``'s (V linearly implicit in the channel conductances, backward
Euler; gates exponential Euler at the new V), with the learned current explicit as in
``ReducedSoma``. Gate rates come from one ``GateBank`` of the channels' own definitions, tabulated
at 0.05 mV and looked up at V - shift so that V_T reaches them (``Membrane`` takes gbar as given, not in log space, and
evaluates a replaced gate per module, 4x slower here).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from channelzoo.gates import GateBank
from channelzoo.models import POSPISCHIL_TEMPERATURE_C, leak, pospischil_kd, pospischil_m, pospischil_na
from suite.gates.neural import NeuralGateEnsemble
from suite.sim.reduced import AxialODE

F64 = torch.float64
KINDS = ("expert", "hybrid_gate", "hybrid_current")
VT_REF = -60.0  # mV: the channel definitions' V_T; the cell's V_T is VT_REF + shift
TAU_M_REF = 1000.0  # ms: the M gate's tau_max at log scale 0
UA_PER_MA = 1e3
NA_TO_UA = 1e-3

# Start: Pospischil's RS cell, rescaled to a 1e-4 cm2 membrane (100 MOhm at rest).
INITIAL = {"g_na": 0.05, "g_kd": 0.005, "g_m": 1e-4, "g_leak": 1e-4, "e_na": 50.0, "e_k": -90.0,
           "e_leak": -80.0, "area_cm2": 1e-4, "vt": -56.0, "tau_m": 600.0}
CHANNELS = ("na", "kd", "m", "leak")
GATES = ("na.m", "na.h", "kd.n", "m.p")  # the state's rows
TABLE_VMIN, TABLE_DV, TABLE_SIZE = -200.0, 0.05, 6001  # mV: the gate table's nodes, -200 to +100 mV


class RecordingCell(nn.Module):
    """One fittable single compartment of a given kind, simulated on a batch of N windows at once."""

    def __init__(self, kind: str, seed: int = 0, width: int = 32, latents: int = 2,
                 initial: dict[str, float] | None = None) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
        p = {**INITIAL, **(initial or {})}
        self.kind = kind
        t = lambda x: nn.Parameter(torch.tensor(float(x), dtype=F64))  # noqa: E731
        self.log_g = nn.Parameter(torch.tensor([math.log(p[f"g_{c}"]) for c in CHANNELS], dtype=F64))
        self.e_na, self.e_k, self.e_leak = t(p["e_na"]), t(p["e_k"]), t(p["e_leak"])
        self.log_area = t(math.log(p["area_cm2"]))
        self.vt = t(p["vt"])
        self.log_tau_m = t(math.log(p["tau_m"] / TAU_M_REF))
        na, kd, km = pospischil_na(1.0, 0.0, VT_REF), pospischil_kd(1.0, 0.0, VT_REF), pospischil_m(1.0, 0.0, TAU_M_REF)
        self.channels = (na, kd, km, leak(1.0, 0.0))
        self.gate_names = GATES
        # One bank for every mechanistic gate (m, h, n, p): rows 0-2 shifted by V_T, row 3 (p) scaled in tau.
        bank = GateBank([*na.gates, *kd.gates, *km.gates], dtype=F64)
        grid = TABLE_VMIN + TABLE_DV * torch.arange(TABLE_SIZE, dtype=F64)
        inf, tau = bank(grid.expand(4, -1), POSPISCHIL_TEMPERATURE_C)
        # Tabulated once at V_T = -60 mV and tau_max = 1000 ms, [4, M, 2] (x_inf, tau): the cell's V_T
        # shifts the lookup voltage, its tau scale multiplies p's tau (0.05 mV nodes, linear between).
        self.register_buffer("table", torch.stack([inf, tau], -1))
        self.register_buffer("shifted", torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=F64).unsqueeze(1))
        self.neural: NeuralGateEnsemble | None = None
        if kind == "hybrid_gate":
            self.neural = NeuralGateEnsemble(1, width, 2, "tanh", dtype=F64, seed=seed)
            self._fit_gate()
        self.learned: AxialODE | None = None
        if kind == "hybrid_current":
            self.learned = AxialODE([latents], width=width, depth=2, seeds=[seed], dtype=F64)

    # -- parameters in physical units ------------------------------------------------------------
    @property
    def gbar(self) -> Tensor:
        return self.log_g.exp()

    @property
    def area(self) -> Tensor:
        return self.log_area.exp()

    @property
    def e_rev(self) -> Tensor:
        return torch.stack([self.e_na, self.e_k, self.e_k, self.e_leak])

    def physical(self) -> dict[str, float]:
        """The fitted values by name (S/cm2, mV, cm2, ms)."""
        g = self.gbar.detach()
        out = {f"g_{c}": float(g[k]) for k, c in enumerate(CHANNELS)}
        out |= {"e_na": float(self.e_na.detach()), "e_k": float(self.e_k.detach()),
                "e_leak": float(self.e_leak.detach()),
                "area_cm2": float(self.area.detach()), "vt": float(self.vt.detach()),
                "tau_m": float(TAU_M_REF * self.log_tau_m.detach().exp())}
        return out

    def mechanistic_parameters(self) -> list[nn.Parameter]:
        return [self.log_g, self.e_na, self.e_k, self.e_leak, self.log_area, self.vt, self.log_tau_m]

    def network_parameters(self) -> list[nn.Parameter]:
        nets = [m for m in (self.neural, self.learned) if m is not None]
        return [p for m in nets for p in m.parameters()]

    def expert_rates(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """x_inf and tau (ms) of the four mechanistic gates at ``v`` ``[N]``: ``[4, N]`` each."""
        shift = (self.vt - VT_REF) * self.shifted  # [4, 1]
        pos = ((v.unsqueeze(0) - shift - TABLE_VMIN) / TABLE_DV).clamp(0.0, TABLE_SIZE - 1.0)  # [4, N]
        i = pos.detach().floor().clamp(max=TABLE_SIZE - 2).long()
        w = (pos - i).unsqueeze(-1)
        idx = i.unsqueeze(-1).expand(-1, -1, 2)
        lo = self.table.gather(1, idx)
        val = lo + w * (self.table.gather(1, idx + 1) - lo)  # [4, N, 2]
        scale = torch.where(self.shifted > 0, torch.ones_like(shift), self.log_tau_m.exp())
        return val[..., 0], val[..., 1] * scale

    def _fit_gate(self, steps: int = 300) -> None:
        """Regress the neural gate onto the expert's n (x_inf and log tau) over -100..40 mV."""
        v = torch.linspace(-100.0, 40.0, 281, dtype=F64)
        with torch.no_grad():
            inf_e, tau_e = self.expert_rates(v)
        inf_t, tau_t = inf_e[2:3], tau_e[2:3]
        v = v.unsqueeze(0)
        opt = torch.optim.Adam(self.neural.parameters(), lr=1e-2)
        for _ in range(steps):
            opt.zero_grad()
            inf, tau = self.neural(v)
            loss = (inf - inf_t).square().mean() + 0.1 * (tau.log() - tau_t.log()).square().mean()
            loss.backward()
            opt.step()

    # -- simulation ------------------------------------------------------------------------------
    def gate_rates(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """x_inf and tau of the model's gates ``[4, N]`` (``GATES`` order; n the neural one in a hybrid gate)."""
        inf, tau = self.expert_rates(v)
        if self.neural is not None:
            inf_n, tau_n = self.neural(v.unsqueeze(0))
            inf = torch.cat([inf[:2], inf_n, inf[3:]])
            tau = torch.cat([tau[:2], tau_n, tau[3:]])
        return inf, tau

    def step_gates(self, x: Tensor, v: Tensor, dt: float) -> Tensor:
        inf, tau = self.gate_rates(v)
        return inf + (x - inf) * torch.exp(-dt / tau)

    def conductances(self, x: Tensor) -> Tensor:
        """g of Na (m3h), Kd (n4), M (p) and leak, ``[4, N]`` S/cm2."""
        m, h, n, p = x
        n2 = n * n
        return self.gbar.unsqueeze(1) * torch.stack([m * m * m * h, n2 * n2, p, torch.ones_like(p)])

    def init_state(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """Gates at steady state ``[4, N]`` and latents at zero ``[1, N, Z]``."""
        z = torch.zeros(1, v.shape[0], self.learned.z_max if self.learned else 1, dtype=F64)
        return self.gate_rates(v)[0], z

    def step(self, v: Tensor, x: Tensor, z: Tensor, i_nA: Tensor, dt: float) -> tuple[Tensor, Tensor, Tensor]:
        """One step of ``dt`` ms for N cells: ``i_nA`` ``[N]`` injected at the step's midpoint."""
        area = self.area
        g = self.conductances(x)  # [C, N] S/cm2
        g_total, g_e = g.sum(0), (g * self.e_rev.unsqueeze(1)).sum(0)
        i_ext = i_nA * NA_TO_UA / area  # uA/cm2
        if self.learned is not None:
            i_ax, dz = self.learned(v.unsqueeze(0), z)
            i_ext = i_ext + i_ax[0] * NA_TO_UA / area
            z = z + dt * dz
        c_dt = 1.0 / dt  # uF/cm2 / ms
        gu = UA_PER_MA * g_total
        v_new = (c_dt * v + i_ext + UA_PER_MA * g_e) / (c_dt + gu)
        return v_new, self.step_gates(x, v_new, dt), z

    def simulate(self, v0: Tensor, x0: Tensor, z0: Tensor, i_nA: Tensor, dt: float, record_every: int,
                 v_bounds: tuple[float, float] = (-150.0, 100.0)) -> Tensor:
        """Run ``i_nA`` ``[T, N]`` from the given state; voltages every ``record_every`` steps, t = 0 included:
        ``[N, T / record_every + 1]``. The voltage is clamped to ``v_bounds`` so a bad fit stays finite."""
        v, x, z = v0, x0, z0
        out = [v]
        for k in range(i_nA.shape[0]):
            v, x, z = self.step(v, x, z, i_nA[k], dt)
            v = v.clamp(*v_bounds)
            if (k + 1) % record_every == 0:
                out.append(v)
        return torch.stack(out, 1)

    def gates_along(self, v: Tensor, dt: float) -> Tensor:
        """Gate states ``[T, G, N]`` driven by a given voltage ``v`` ``[T, N]`` (teacher forcing), from steady state."""
        x = self.gate_rates(v[0])[0]
        xs = [x]
        for k in range(1, v.shape[0]):
            x = self.step_gates(x, v[k], dt)
            xs.append(x)
        return torch.stack(xs)
