"""The multicompartment simulator: the cable equation on a compartment tree, batched over stimuli and cells.

Per step (NEURON's fixed-step scheme): the membrane conductances of the present gate states, one
implicit voltage solve on the tree (backward Euler, or NEURON's Crank-Nicolson: solve to t + dt/2 and
extrapolate), then every gate by exponential Euler at the new voltage. In absolute units per node,

    C_i dV_i/dt = -g_i(x) (V_i - E) + I_stim,i + sum_j g_ij (V_j - V_i)

with C_i = cm A_i (nA ms/mV), membrane conductances in uS and currents in nA, so zero-area junction
nodes need no special case. Two backends, the same step: "torch" (differentiable, any device; the
tree solve is one autograd call) and "fused" (the whole run in one compiled call, gates from tables
of x_inf and exp(-dt/tau) sampled through the same Membrane; forward only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from channelzoo.channel import Channel
from suite.sim import native
from suite.sim.compartments import Compartments
from suite.sim.hines import HinesTree, tree_solve
from suite.sim.membrane import Membrane
from suite.sim.tables import channel_layout, gate_table

METHODS = {"backward_euler": 1, "crank_nicolson": 2}
BACKENDS = ("auto", "torch", "fused")
UM2_TO_CM2 = 1e-8
MEMBRANE_TO_NA = 1e-2  # (S/cm2 or mA/cm2) * um2 -> uS or nA
CAP_TO_NA = 1e-5  # uF/cm2 * um2 * mV/ms -> nA


@dataclass
class CableTrace:
    """Times ``[T]`` ms, voltages ``[B, T, R]`` mV at the recorded ``nodes``; ``ok[b]`` False if cell b blew up."""

    t: Tensor
    v: Tensor
    nodes: tuple[int, ...]
    ok: Tensor


def channels_by_region(channels: Sequence[Channel] | Mapping[str, Sequence[Channel]]) -> dict[str, list[Channel]]:
    """A mapping region -> channels; a plain list means the same channels everywhere ("all")."""
    if isinstance(channels, Mapping):
        return {str(k): list(v) for k, v in channels.items()}
    return {"all": list(channels)}


class Cable(nn.Module):
    """A cell's compartments with channels per region (soma, axon, basal, apical; "all" as the default).

    A channel's gbar is its own density wherever its region lists it and 0 elsewhere. ``capacitance``
    is uF/cm2, one value or per region. Channels are told apart by id: the same id in two regions
    must be the same channel up to gbar (which may differ per region).
    """

    def __init__(self, compartments: Compartments, channels: Sequence[Channel] | Mapping[str, Sequence[Channel]],
                 capacitance: float | Mapping[str, float] = 1.0, temperature: float | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.compartments = compartments
        self.tree = HinesTree.from_parents(compartments.parent)
        self.temperature = temperature
        self.device, self.dtype = torch.device(device), dtype
        by_region = channels_by_region(channels)
        unknown = set(by_region) - {"all", "soma", "axon", "basal", "apical"}
        if unknown:
            raise ValueError(f"unknown regions {sorted(unknown)}; known: all, soma, axon, basal, apical")
        union: dict[str, Channel] = {}
        for chans in by_region.values():
            for c in chans:
                union.setdefault(c.id, c)
        self.channels = tuple(union.values())
        n = compartments.n_nodes
        gbar = np.zeros((len(self.channels), n))
        e_rev = np.array([[c.e_rev] * n for c in self.channels]).reshape(len(self.channels), n)
        for i, region in enumerate(compartments.region):
            if region == "junction":
                continue
            for c in by_region.get(region, by_region.get("all", [])):
                k = list(union).index(c.id)
                gbar[k, i] = c.gbar
                e_rev[k, i] = c.e_rev
        cm = capacitance if isinstance(capacitance, Mapping) else {}
        cm_default = float(capacitance) if not isinstance(capacitance, Mapping) else float(cm.get("all", 1.0))
        cm_node = np.array([float(cm.get(r, cm_default)) for r in compartments.region])
        as_t = {"device": self.device, "dtype": dtype}
        self.register_buffer("gbar", torch.tensor(gbar, **as_t))
        self.register_buffer("e_rev", torch.tensor(e_rev, **as_t))
        self.register_buffer("area", torch.tensor(compartments.area, **as_t))
        self.register_buffer("g_axial", torch.tensor(compartments.g_axial, **as_t))
        self.register_buffer("capacity", torch.tensor(cm_node * compartments.area * CAP_TO_NA, **as_t))  # nA ms/mV
        self.register_buffer("g_sum", self.tree.neighbour_sum(self.g_axial))

    @property
    def n_nodes(self) -> int:
        return self.compartments.n_nodes

    @property
    def soma(self) -> int:
        return self.compartments.soma

    def membrane(self, batch: int, gbar: Tensor | None = None) -> Membrane:
        """The channels at ``batch`` x N sites (cell b's node i is site b N + i); ``gbar`` ``[B, C, N]`` per cell."""
        c, n = len(self.channels), self.n_nodes
        g = self.gbar.expand(batch, c, n) if gbar is None else gbar.expand(batch, c, n)
        return Membrane(self.channels, g.permute(1, 0, 2).reshape(c, batch * n), batch * n, self.device, self.dtype,
                        self.temperature, e_rev=self.e_rev.expand(batch, c, n).permute(1, 0, 2).reshape(c, batch * n))

    def step(self, membrane: Membrane, v: Tensor, x: Tensor, i_node: Tensor, dt: float,
             method: str = "backward_euler", backend: str = "auto") -> tuple[Tensor, Tensor]:
        """One step of ``dt`` ms: ``v`` ``[B, N]`` mV, gates ``x`` ``[G, B N]``, injected ``i_node`` ``[B, N]`` nA."""
        theta = METHODS[method]
        b, n = v.shape
        g_total, g_e = membrane.conductance_terms(x)
        g_m = g_total.reshape(b, n) * (self.area * MEMBRANE_TO_NA)
        cap = theta * self.capacity / dt
        d = cap + g_m + self.g_sum
        rhs = cap * v + g_e.reshape(b, n) * (self.area * MEMBRANE_TO_NA) + i_node
        solved = tree_solve(self.tree, d, self.g_axial, rhs, "native" if backend == "native" else "auto")
        v_new = solved if theta == 1 else 2.0 * solved - v
        return v_new, _step_gates(membrane, x, v_new.reshape(-1), dt)

    def simulate(self, stimulus: Tensor, dt: float = 0.025, v0: float | Tensor = -70.0,
                 stim_nodes: Sequence[int] | None = None, record: Sequence[int] | None = None,
                 method: str = "backward_euler", backend: str = "auto", gbar: Tensor | None = None,
                 n_threads: int | None = None) -> CableTrace:
        """Run ``T`` steps: ``stimulus`` ``[B, T]`` (one node) or ``[B, T, S]`` nA at each step's midpoint.

        ``stim_nodes`` default the soma; ``record`` the nodes to keep (default the soma); ``v0`` mV,
        one value or ``[B]``, gates start at steady state. ``backend`` "fused" needs the compiled
        kernels and no gradient; "auto" takes it when it can.
        """
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
        stim = stimulus if stimulus.dim() == 3 else stimulus.unsqueeze(-1)
        stim = stim.to(self.device, self.dtype)
        b, steps, s = stim.shape
        stim_nodes = tuple(stim_nodes if stim_nodes is not None else (self.soma,))
        record = tuple(record if record is not None else (self.soma,))
        if len(stim_nodes) != s:
            raise ValueError(f"stimulus has {s} channels but {len(stim_nodes)} stim_nodes")
        wants_grad = torch.is_grad_enabled() and (stim.requires_grad or (gbar is not None and gbar.requires_grad)
                                                  or any(p.requires_grad for p in self.parameters()))
        fused_ok = self.device.type == "cpu" and native.load() is not None and not wants_grad
        if backend == "fused" and not fused_ok:
            raise RuntimeError("the fused backend needs the compiled kernels, a CPU and no gradient")
        if backend == "fused" or (backend == "auto" and fused_ok):
            return self._simulate_fused(stim, dt, v0, stim_nodes, record, method, gbar, n_threads)
        return self._simulate_torch(stim, dt, v0, stim_nodes, record, method, gbar)

    def _initial(self, batch: int, v0: float | Tensor, membrane: Membrane) -> tuple[Tensor, Tensor]:
        v = torch.as_tensor(v0, device=self.device, dtype=self.dtype)
        v = (v.reshape(-1, 1) if v.dim() else v).expand(batch, self.n_nodes).clone()
        if membrane.n_gates == 0:  # passive membrane: no state
            return v, v.new_zeros(0, batch * self.n_nodes)
        return v, membrane.init_state(v.reshape(-1))

    def _simulate_torch(self, stim: Tensor, dt: float, v0: float | Tensor, stim_nodes: tuple[int, ...],
                        record: tuple[int, ...], method: str, gbar: Tensor | None) -> CableTrace:
        b, steps, _ = stim.shape
        membrane = self.membrane(b, gbar)
        v, x = self._initial(b, v0, membrane)
        rec = torch.as_tensor(record, device=self.device)
        where = torch.as_tensor(stim_nodes, device=self.device)
        zeros = torch.zeros(b, self.n_nodes, device=self.device, dtype=self.dtype)
        out = [v.index_select(1, rec)]
        for k in range(steps):
            i_node = zeros.index_add(1, where, stim[:, k])
            v, x = self.step(membrane, v, x, i_node, dt, method)
            out.append(v.index_select(1, rec))
        trace = torch.stack(out, dim=1)
        ok = torch.isfinite(trace).all(dim=(1, 2))
        return CableTrace(torch.arange(steps + 1, dtype=torch.float64) * dt, trace, record, ok)

    def _fused_tables(self, dt: float) -> tuple[float, float, np.ndarray]:
        """The kernel's interleaved table ``[K, G, 2]`` for ``dt``, built once per dt."""
        cache = self.__dict__.setdefault("_table_cache", {})
        if dt not in cache:
            cache[dt] = gate_table(self.channels, dt, self.temperature)
        return cache[dt]

    def _fused_static(self, dt: float, theta: int) -> dict[str, object]:
        """Everything the kernel reads that only changes with the cell, dt and the method: built once."""
        cache = self.__dict__.setdefault("_static_cache", {})
        key = (dt, theta)
        if key not in cache:
            v_lo, inv_h, table = self._fused_tables(dt)
            index, power = channel_layout(self.membrane(1))
            cache[key] = {"g_axial": _np(self.g_axial), "g_sum": _np(self.g_sum),
                          "cap": _np(theta * self.capacity / dt), "area_f": _np(self.area * MEMBRANE_TO_NA),
                          "gbar": _np(self.gbar), "e_rev": _np(self.e_rev), "index": index, "power": power,
                          "has_membrane": np.ascontiguousarray(self.compartments.area > 0, dtype=np.uint8),
                          "v_lo": v_lo, "inv_h": inv_h, "table": table}
        return cache[key]

    def _simulate_fused(self, stim: Tensor, dt: float, v0: float | Tensor, stim_nodes: tuple[int, ...],
                        record: tuple[int, ...], method: str, gbar: Tensor | None,
                        n_threads: int | None) -> CableTrace:
        """The compiled run. Python work per call is kept small: at one cell it is most of a short run's cost."""
        b, steps, s = stim.shape
        n, c = self.n_nodes, len(self.channels)
        theta = METHODS[method]
        st = self._fused_static(dt, theta)
        table, v_lo, inv_h = st["table"], st["v_lo"], st["inv_h"]
        v = np.broadcast_to(np.asarray(torch.as_tensor(v0, dtype=torch.float64).reshape(-1, 1)), (b, n))
        v = np.ascontiguousarray(v)
        x = _lookup(table, v_lo, inv_h, v)  # steady states from the same tables the run uses, [B, G, N]
        if gbar is None:
            gb, stride = st["gbar"], 0
        else:
            g = gbar.detach().to("cpu", torch.float64)
            if g.dim() == 3 and g.shape[0] not in (1, b):
                raise ValueError(f"gbar must be [C, N] or [B={b}, C, N], got {tuple(g.shape)}")
            gb, stride = _np(g), (c * n if g.dim() == 3 and g.shape[0] == b > 1 else 0)
        index, power = st["index"], st["power"]
        out = np.empty((b, steps + 1, len(record)), dtype=np.float64)
        bad = native.cable_run(
            B=b, N=n, T=steps, G=table.shape[1], C=c, M=index.shape[1], K=table.shape[0], S=s, R=len(record),
            theta=theta, n_threads=max(1, int(n_threads or torch.get_num_threads())), gbar_stride=stride,
            v_lo=v_lo, inv_h=inv_h, parent=self.tree.parent, g_ax=st["g_axial"], gsum=st["g_sum"], cap=st["cap"],
            area_f=st["area_f"], gbar=gb, erev=st["e_rev"], gate_index=index, gate_power=power,
            has_membrane=st["has_membrane"], tab=table, stim_node=np.asarray(stim_nodes, dtype=np.int64),
            stim=_np(stim), rec_node=np.asarray(record, dtype=np.int64), out=out, v0=v, x0=x)
        ok = np.isfinite(out).all(axis=(1, 2)) if bad else np.ones(b, dtype=bool)
        t = torch.from_numpy(np.arange(steps + 1, dtype=np.float64) * dt)
        return CableTrace(t, torch.from_numpy(out).to(self.dtype), record, torch.from_numpy(ok))


def _lookup(table: np.ndarray, v_lo: float, inv_h: float, v: np.ndarray) -> np.ndarray:
    """x_inf from the interleaved table ``[K, G, 2]`` at voltages ``v`` ``[B, N]``: ``[B, G, N]``."""
    inf = table[..., 0]
    u = np.clip((v - v_lo) * inv_h, 0, inf.shape[0] - 1)
    j = np.minimum(np.floor(u).astype(np.int64), inf.shape[0] - 2)
    fr = (u - j)[..., None]
    return np.ascontiguousarray(np.moveaxis(inf[j] * (1 - fr) + inf[j + 1] * fr, -1, 1))


def _step_gates(membrane: Membrane, x: Tensor, v: Tensor, dt: float) -> Tensor:
    return membrane.step_gates(x, v, dt) if membrane.n_gates else x


def _np(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to("cpu", torch.float64).numpy().reshape(-1))


def axial_current(compartments: Compartments, v: Tensor, node: int | None = None) -> Tensor:
    """Net axial current (nA) flowing into ``node`` (default the soma) from its neighbours, ``v`` ``[..., N]``."""
    node = compartments.soma if node is None else node
    nbrs = [j for j in range(compartments.n_nodes) if compartments.parent[j] == node]
    g = [compartments.g_axial[j] for j in nbrs]
    if compartments.parent[node] >= 0:
        nbrs.append(int(compartments.parent[node]))
        g.append(compartments.g_axial[node])
    gt = torch.as_tensor(g, dtype=v.dtype, device=v.device)
    return ((v[..., nbrs] - v[..., node : node + 1]) * gt).sum(-1)
