"""Gate rates tabulated on a uniform voltage grid, for the compiled kernels.

The kernels look up x_inf(V) and a(V) = exp(-dt/tau(V)) by linear interpolation (flat outside the
grid), as NEURON's TABLE does; the tables come from the Membrane itself, so mechanistic and neural
gates alike are tabulated with exactly the rates the torch path uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from channelzoo.channel import Channel
from suite.sim.membrane import GateKey, Membrane

TABLE_RANGE_MV = (-200.0, 200.0)
TABLE_STEP_MV = 0.05  # interpolation error ~ step^2 / 8 |f''|: ~1e-5 for HH-like gates; 0.5 MB stays in cache


def gate_table(channels: Sequence[Channel], dt: float, temperature: float | None = None,
               replace: Mapping[GateKey, nn.Module] | None = None) -> tuple[float, float, np.ndarray]:
    """(v_lo mV, 1/step 1/mV, table ``[K, G, 2]`` of (x_inf, exp(-dt/tau))), gates in Membrane order."""
    lo, hi = TABLE_RANGE_MV
    k = int(round((hi - lo) / TABLE_STEP_MV)) + 1
    grid = torch.linspace(lo, hi, k, dtype=torch.float64)
    probe = Membrane(channels, n_sites=k, dtype=torch.float64, temperature=temperature, replace=replace)
    if probe.n_gates == 0:  # a passive membrane
        return lo, 1.0 / ((hi - lo) / (k - 1)), np.zeros((k, 0, 2))
    with torch.no_grad():
        inf, tau = probe.gate_rates(grid)
    table = torch.stack([inf.T, torch.exp(-dt / tau).T], dim=-1)
    return lo, 1.0 / ((hi - lo) / (k - 1)), np.ascontiguousarray(table.numpy())


def channel_layout(membrane: Membrane) -> tuple[np.ndarray, np.ndarray]:
    """The Membrane's gate index ``[C, M]`` (G = no gate) and integer powers, as int32 for the kernels."""
    index = np.ascontiguousarray(membrane.gate_index.cpu().numpy(), dtype=np.int32)
    power = np.ascontiguousarray(membrane.gate_power.squeeze(-1).round().cpu().numpy(), dtype=np.int32)
    return index, power
