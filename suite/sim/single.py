"""A conductance-based single compartment, batched over cells: ``C dV/dt = I_ext - sum_k I_k``.

Fixed step, NEURON's scheme: the voltage takes a linearly implicit step with the conductances of
the current gate states, then the gates take an exponential-Euler step at the new voltage (so they
sit half a step ahead of V). ``theta`` picks the voltage step: 0 is backward Euler (NEURON's
default, first order; at 0.025 ms it tracks NEURON's ``hh`` soma to 1e-13 mV), 0.5 is
Crank-Nicolson (second order with the staggered gates: about 0.3 mV RMSE at 0.05 ms on the paper's
HH trace, where backward Euler is off by 6 mV). Both are stable at any dt. ``I_ext`` is a density in uA/cm2 and membrane
currents are in mA/cm2, hence the factor 1e3 (uF/cm2 * mV/ms = uA/cm2).

Python overhead per step is what limits small batches on a CPU, so ``simulate`` runs chunks of
``unroll`` steps through one ``torch.compile``d function when asked (``compile=True``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from suite.sim.membrane import Membrane

UA_PER_MA = 1e3


@dataclass
class Trace:
    """A simulation: times ``[T]`` ms, voltages ``[T, N]`` mV and (if kept) gate states ``[T, G, N]``."""

    t: Tensor
    v: Tensor
    x: Tensor | None = None


class SingleCompartment(nn.Module):
    """One isopotential compartment per cell: a ``Membrane`` of N sites and a capacitance (uF/cm2, scalar or [N])."""

    def __init__(self, membrane: Membrane, capacitance: float | Tensor = 1.0, theta: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= theta <= 1.0:
            raise ValueError(f"theta must be in [0, 1] (0 backward Euler, 0.5 Crank-Nicolson), got {theta}")
        self.membrane = membrane
        self.theta = float(theta)
        c = torch.as_tensor(capacitance, dtype=membrane.gbar.dtype, device=membrane.gbar.device)
        if isinstance(capacitance, nn.Parameter):
            self.capacitance = capacitance
        else:
            self.register_buffer("capacitance", c.clone())
        self._compiled: dict[tuple, Callable] = {}

    @property
    def n_cells(self) -> int:
        return self.membrane.n_sites

    def init_state(self, v0: float | Tensor) -> tuple[Tensor, Tensor]:
        """Voltage ``[N]`` and gates at steady state ``[G, N]``."""
        ref = self.membrane.gbar
        v = torch.as_tensor(v0, dtype=ref.dtype, device=ref.device).expand(self.n_cells).clone()
        return v, self.membrane.init_state(v)

    def step(self, v: Tensor, x: Tensor, i_ext: Tensor, dt: float) -> tuple[Tensor, Tensor]:
        """One step of ``dt`` ms: V by a theta step with the conductances of ``x``, then x by exponential Euler."""
        g_total, g_e = self.membrane.conductance_terms(x)
        c_dt = self.capacitance / dt
        g = UA_PER_MA * g_total
        v_new = ((c_dt - self.theta * g) * v + i_ext + UA_PER_MA * g_e) / (c_dt + (1.0 - self.theta) * g)
        return v_new, self.membrane.step_gates(x, v_new, dt)

    def steps(self, v: Tensor, x: Tensor, i_ext: Tensor, dt: float) -> tuple[Tensor, Tensor, Tensor]:
        """``len(i_ext)`` steps (``i_ext`` ``[K, N]``); returns the voltages after each ``[K, N]`` and the end state."""
        vs = []
        for k in range(i_ext.shape[0]):
            v, x = self.step(v, x, i_ext[k], dt)
            vs.append(v)
        return torch.stack(vs), v, x

    def _chunk_fn(self, unroll: int, dt: float, compile_it: bool) -> Callable:
        key = (unroll, dt, compile_it)
        if key not in self._compiled:
            fn = self.steps
            if compile_it:
                fn = torch.compile(self.steps, dynamic=False, fullgraph=False)
            self._compiled[key] = fn
        return self._compiled[key]

    def simulate(self, i_ext: Tensor, dt: float = 0.025, v0: float | Tensor = -65.0, x0: Tensor | None = None,
                 record_every: int = 1, keep_gates: bool = False, compile: bool = False,
                 unroll: int = 50) -> Trace:
        """Run ``len(i_ext)`` steps of ``dt`` ms from ``v0`` (gates at steady state unless ``x0``).

        ``i_ext`` is ``[T, N]`` uA/cm2 at each step's midpoint (see ``stimulus.*.sample``). Records
        every ``record_every`` steps, t = 0 included. Differentiable unless ``compile`` fails over
        to eager (it then warns once).
        """
        v, x = self.init_state(v0)
        if x0 is not None:
            x = x0
        n_steps = i_ext.shape[0]
        if record_every < 1 or unroll < 1:
            raise ValueError("record_every and unroll must be positive")
        chunk = self._chunk_fn(unroll, dt, compile) if compile else self.steps
        vs, xs = [v], [x] if keep_gates else None
        k = 0
        while k < n_steps:
            n = min(unroll, n_steps - k)
            if keep_gates:
                for j in range(n):
                    v, x = self.step(v, x, i_ext[k + j], dt)
                    vs.append(v)
                    xs.append(x)
            else:
                fn = chunk if n == unroll else self.steps
                try:
                    block, v, x = fn(v, x, i_ext[k:k + n], dt)
                except Exception as e:  # noqa: BLE001 - a backend that cannot compile must not stop a run
                    if fn is self.steps:
                        raise
                    warnings.warn(f"torch.compile failed, simulating eagerly: {type(e).__name__}: {e}", stacklevel=2)
                    chunk = self.steps
                    block, v, x = self.steps(v, x, i_ext[k:k + n], dt)
                vs.extend(block.unbind(0))
            k += n
        v_all = torch.stack(vs)
        t = torch.arange(n_steps + 1, dtype=torch.float64) * dt
        sel = slice(None, None, record_every)
        return Trace(t[sel], v_all[sel], torch.stack(xs)[sel] if keep_gates else None)
