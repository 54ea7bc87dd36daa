"""The single compartment as an ODE for torchdiffeq: adaptive solvers and the adjoint, chosen by name.

The right-hand side is the same model as ``suite.sim.single`` (same ``Membrane``), without its time
discretisation: ``dV/dt = (I_ext - 1e3 I_ion) / C`` and ``dx/dt = (x_inf(V) - x) / tau(V)``. A step
current is discontinuous, so the integration restarts at each of the stimulus' breakpoints rather
than asking an adaptive solver to find them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from suite.sim.membrane import Membrane
from suite.sim.single import UA_PER_MA, Trace

SOLVERS: tuple[str, ...] = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun", "euler", "midpoint", "rk4",
                            "explicit_adams", "implicit_adams")


class MembraneODE(nn.Module):
    """f(t, y) for y = [V; x] stacked as ``[1 + G, N]``."""

    def __init__(self, membrane: Membrane, capacitance: float | Tensor, stimulus: object) -> None:
        super().__init__()
        self.membrane = membrane
        self.capacitance = capacitance
        self.stimulus = stimulus

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        v, x = y[0], y[1:]
        inf, tau = self.membrane.gate_rates(v)
        i_ext = self.stimulus.at(t).to(v.dtype)
        dv = (i_ext - UA_PER_MA * self.membrane.current(x, v)) / self.capacitance
        return torch.cat([dv.unsqueeze(0), (inf - x) / tau])


def integrate(membrane: Membrane, stimulus: object, t_eval: Tensor, v0: float | Tensor = -65.0,
              capacitance: float | Tensor = 1.0, method: str = "dopri5", rtol: float = 1e-6, atol: float = 1e-8,
              adjoint: bool = False, options: dict | None = None) -> Trace:
    """V (and gates) at ``t_eval`` (ms, increasing, from the initial time) by torchdiffeq's ``method``.

    ``adjoint=True`` uses ``odeint_adjoint`` (memory independent of the number of steps).
    """
    if method not in SOLVERS:
        raise ValueError(f"unknown solver {method!r}; known: {', '.join(SOLVERS)}")
    ref = membrane.gbar
    v = torch.as_tensor(v0, dtype=ref.dtype, device=ref.device).expand(membrane.n_sites).clone()
    y = torch.cat([v.unsqueeze(0), membrane.init_state(v)])
    func = MembraneODE(membrane, capacitance, stimulus)
    solve = odeint_adjoint if adjoint else odeint
    extra = {"adjoint_params": tuple(func.parameters())} if adjoint else {}
    t_eval = t_eval.to(ref.device, ref.dtype)
    cuts = [float(b) for b in getattr(stimulus, "breakpoints", ()) if t_eval[0] < b < t_eval[-1]]
    edges = [float(t_eval[0]), *sorted(cuts), float(t_eval[-1])]
    pieces = []
    for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        inside = t_eval[(t_eval > lo) & (t_eval <= hi)] if k else t_eval[(t_eval >= lo) & (t_eval <= hi)]
        grid = torch.cat([t_eval.new_tensor([lo]), inside[inside > lo], t_eval.new_tensor([hi])]).unique()
        out = solve(func, y, grid, method=method, rtol=rtol, atol=atol, options=options, **extra)
        y = out[-1]
        keep = torch.isin(grid, inside)
        pieces.append(out[keep])
    states = torch.cat(pieces)
    return Trace(t_eval.to(torch.float64), states[:, 0], states[:, 1:])
