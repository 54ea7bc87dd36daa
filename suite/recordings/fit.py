"""Gradient fits of a ``RecordingCell`` to recorded sweeps: multiple shooting on short windows.

A free run over a 2 s sweep is 10^4 steps of a spiking model: its gradient explodes with every
spike that moves, and MSE over windows of 15-40 ms still rewards flattening a misplaced spike (on a
synthetic recording such fits drove V_T and g_Na away from the truth). So each iteration draws
``windows`` random windows of ``window_ms`` from the training sweeps and runs the model free from
the recorded voltage at the window's start, its gates at the state the recorded voltage drives them
to (teacher forcing of the gates, recomputed without gradient every ``refresh`` iterations; the M
gate's slow state and so adaptation carry over this way), latents of a learned current at zero. The
loss is the MSE against the recorded voltage at its samples. Short shots (3 ms default, 2 ms in the
synthetic test) are close to teacher forcing: they recover known parameters
(tests/test_recording_synthetic.py) but do not train the free run over a whole sweep, which is what
the scores measure. Every kind gets the same windows, iterations and step: the same budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from suite.recordings.cell import F64, RecordingCell
from suite.recordings.sweep import Sweep


@dataclass(frozen=True)
class FitSettings:
    iterations: int = 300
    windows: int = 64
    window_ms: float = 3.0
    dt: float = 0.125  # ms, the model's step (the recording's step divided by a whole number)
    lr_log: float = 0.02  # Adam on log conductances, log area, log tau scale
    lr_mv: float = 0.5  # Adam on reversal potentials and V_T (mV)
    lr_net: float = 1e-3  # Adam on the networks
    refresh: int = 25  # iterations between recomputing the teacher-forced gate states


@dataclass
class FitResult:
    losses: list[float]
    wall_s: float


def substeps(data_dt: float, dt: float) -> int:
    k = round(data_dt / dt)
    if k < 1 or abs(k * dt - data_dt) > 1e-9 * max(1.0, data_dt):
        raise ValueError(f"the model step {dt} ms must divide the recording's step {data_dt} ms")
    return k


def stack(sweeps: list[Sweep]) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Corrected voltages and currents ``[S, K]`` of sweeps with one step and length (cropped to the shortest)."""
    dts = {round(s.dt, 9) for s in sweeps}
    if len(dts) != 1:
        raise ValueError(f"sweeps of one fit need one sampling step, got {sorted(dts)}")
    k = min(len(s.t) for s in sweeps)
    v = torch.tensor(np.stack([s.v_corrected[:k] for s in sweeps]), dtype=F64)
    i = torch.tensor(np.stack([s.i[:k] for s in sweeps]), dtype=F64)
    return v, i, sweeps[0].dt


def fit_cell(cell: RecordingCell, sweeps: list[Sweep], settings: FitSettings, seed: int) -> FitResult:
    """Train ``cell`` on ``sweeps`` in place; the losses per iteration and the wall time."""
    v_data, i_data, data_dt = stack(sweeps)
    sub = substeps(data_dt, settings.dt)
    n_sweeps, n_samples = v_data.shape
    length = max(1, round(settings.window_ms / data_dt))
    if length >= n_samples:
        raise ValueError(f"window of {settings.window_ms} ms is longer than the sweeps")
    groups = [{"params": [cell.log_g, cell.log_area, cell.log_tau_m], "lr": settings.lr_log},
              {"params": [cell.e_na, cell.e_k, cell.e_leak, cell.vt], "lr": settings.lr_mv}]
    nets = cell.network_parameters()
    if nets:
        groups.append({"params": nets, "lr": settings.lr_net})
    opt = torch.optim.Adam(groups)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    start = time.perf_counter()
    x_forced = None
    for it in range(settings.iterations):
        if x_forced is None or it % settings.refresh == 0:
            with torch.no_grad():
                x_forced = cell.gates_along(v_data.T.contiguous(), data_dt)  # [K, G, S]
        s = torch.randint(0, n_sweeps, (settings.windows,), generator=gen)
        k0 = torch.randint(0, n_samples - length, (settings.windows,), generator=gen)
        idx = k0.unsqueeze(1) + torch.arange(length + 1)
        v_obs = v_data[s.unsqueeze(1), idx]  # [N, L+1]
        current = i_data[s.unsqueeze(1), idx[:, :-1]].T.repeat_interleave(sub, 0)  # [L sub, N]
        x0 = x_forced[k0, :, s].T  # [G, N]
        _, z0 = cell.init_state(v_obs[:, 0])
        opt.zero_grad()
        v_mod = cell.simulate(v_obs[:, 0], x0, z0, current, settings.dt, sub)
        loss = (v_mod - v_obs).square().mean()
        if not torch.isfinite(loss):
            losses.append(float("nan"))
            continue
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 10.0)
        opt.step()
        losses.append(float(loss.detach()))
    return FitResult(losses, time.perf_counter() - start)


@torch.no_grad()
def predict(cell: RecordingCell, sweeps: list[Sweep], dt: float) -> np.ndarray:
    """Free runs of ``cell`` over whole sweeps from their first recorded voltage (gates at rest): ``[S, K]`` mV."""
    v_data, i_data, data_dt = stack(sweeps)
    sub = substeps(data_dt, dt)
    v0 = v_data[:, 0]
    x0, z0 = cell.init_state(v0)
    current = i_data[:, :-1].T.repeat_interleave(sub, 0)
    return cell.simulate(v0, x0, z0, current, dt, sub).numpy()
