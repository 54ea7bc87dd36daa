"""Fit neural gates to voltage traces: teacher forcing, then rollouts with a curriculum, many runs at once.

A batch holds B independent cells (runs x restarts), each with its own gate network (one member of
a gate ensemble), its own observed trace and its own fixed (possibly misspecified) parameters. The
total loss is the sum of per-cell losses, Adam acts per element and gradients are clipped per
member, so each cell trains exactly as it would alone; a batch of 560 costs little more than one.

Two things make a training step cheap on a CPU: the network is evaluated once per step on a voltage
grid and tabulated (its input is V alone), and the rollout with its adjoint runs in the compiled
kernel (``suite.sim.kernel``). Stages, all using the voltage trace alone:

1. teacher forcing: gates driven by the (smoothed) observed voltage, in closed form by a log-space
   scan of the exponential-Euler recurrence; loss on the one-step voltage prediction. Fast, and no
   spike-timing local minima, which is what traps training from a random gate.
2. rollouts on the first 10 %, 30 %, then all of the trace: the paper's loss MSE(V) + 0.01 MSE(dV/dt);
   for a trace whose estimated noise exceeds 1 mV, MSE(V) alone (the maximum-likelihood fit under
   white noise: differencing noisy samples only adds noise).
3. restarts: several networks per run; the one with the lowest full-trace loss is kept (the caller
   chooses, from ``FitResult.loss``).

Smoothing for teacher forcing is also noise-adaptive: a trace with little noise is used as it is
(smoothing would blunt its spikes and bias the start).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from suite.sim import kernel
from suite.sim.kernel import GateLayout, interp_table
from suite.train.loop import Schedule, Stage, StepInfo, backward_finite, constant, train
from suite.train.schedule import warmup_cosine


@dataclass(frozen=True)
class TrajectoryFitConfig:
    """How to train (defaults: ours). ``stages`` are (fraction of the trace, optimiser steps)."""

    tf_steps: int = 300
    tf_lr: float = 1e-2
    stages: tuple[tuple[float, int], ...] = ((0.1, 100), (0.3, 100), (1.0, 300))
    lr: float = 3e-3
    schedule: str = "cosine"  # or "constant"
    clip: float = 0.1
    deriv_weight: float = 0.01
    dt: float = 0.05  # ms, the rollout step
    theta: float = 0.5  # Crank-Nicolson
    v_min: float = -100.0
    v_max: float = 60.0
    dv: float = 0.2  # mV, the simulation's table spacing (mechanistic gates need it fine: m is steep)
    dv_net: float = 1.0  # mV, the network's table nodes (as NEURON's hh TABLE); linear in between
    smooth: bool = True  # smooth the observed trace for teacher forcing when it looks noisy
    noisy_above_mv: float = 1.0  # estimated noise sd above which a trace counts as noisy
    noisy_deriv_weight: float = 0.0  # for noisy traces: MSE(V) alone is the maximum-likelihood fit
    forced_steps: int = 0  # a stage on the whole trace, forced towards the (smoothed) observed voltage
    force_kappa: float = 1.0  # 1/ms, the forcing's initial strength, decaying linearly to 0 over that stage
    noisy_presmooth: bool = False  # noisy traces: all stages but the last fit the smoothed trace, the last the raw
    noisy_filter_ms: float = 0.0  # for noisy traces: compare model and data both through a Gaussian filter (ms)


@dataclass
class Problem:
    """B cells: fixed parameters, stimulus, observed voltages and the gate layout of their membrane.

    ``mech_inf``/``mech_tau`` are the mechanistic gates on the grid ``[Gm, M]`` (shared by all cells);
    the neural gate is row ``Gm`` of the state. ``observed`` is ``[B, K + 1]`` sampled every
    ``sample_dt`` ms; ``iext`` is ``[B, K * sub]`` at the rollout's step midpoints (sub = sample_dt / dt).
    """

    layout: GateLayout
    mech_inf: Tensor
    mech_tau: Tensor
    gbar: Tensor  # [B, C] S/cm2
    e_rev: Tensor  # [B, C] mV
    capacitance: Tensor  # [B] uF/cm2
    v0: Tensor  # [B] mV
    iext: Tensor  # [B, T] uA/cm2
    observed: Tensor  # [B, K + 1] mV
    sample_dt: float

    @property
    def size(self) -> int:
        return self.observed.shape[0]


@dataclass
class FitResult:
    loss: Tensor  # [B] final full-trace loss
    diverged: Tensor  # [B] bool
    history: list[tuple[str, int, float]] = field(default_factory=list)  # (stage, step, median loss)
    wall_s: float = 0.0
    tf_wall_s: float = 0.0


def grid(config: TrajectoryFitConfig) -> Tensor:
    m = int(round((config.v_max - config.v_min) / config.dv)) + 1
    return config.v_min + config.dv * torch.arange(m, dtype=torch.float64)


def neural_tables(ensemble: nn.Module, v_grid: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """The ensemble's x_inf and tau on the grid, ``[B, M]`` each (member b for cell b)."""
    p = next(ensemble.parameters())
    inf, tau = ensemble(v_grid.to(p.device, p.dtype).expand(size, -1))
    return inf.to(torch.float64), tau.to(torch.float64)


def tabulated_network(ensemble: nn.Module, config: TrajectoryFitConfig, size: int,
                      v: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The learned gate as simulated: the network at nodes ``dv_net`` apart, linear in between.

    This is the gate that trains and is scored (as NEURON's TABLE is the rate it simulates): one
    network pass costs size x M_nodes per step whatever the simulation's grid, and the refinement
    onto ``v`` (default: the simulation's grid, ``dv``) is a fixed linear map.
    """
    nodes = config.v_min + config.dv_net * torch.arange(
        int(round((config.v_max - config.v_min) / config.dv_net)) + 1, dtype=torch.float64)
    inf_c, tau_c = neural_tables(ensemble, nodes, size)
    v = grid(config) if v is None else v.to(torch.float64)
    pos = ((v - config.v_min) / config.dv_net).clamp(0, nodes.numel() - 1)
    i = pos.floor().long().clamp(max=nodes.numel() - 2)
    w = pos - i
    refine = lambda t: t[:, i] * (1 - w) + t[:, i + 1] * w  # noqa: E731
    return refine(inf_c), refine(tau_c)


def training_tables(ensemble: nn.Module, config: TrajectoryFitConfig, size: int) -> tuple[Tensor, Tensor]:
    """The tabulated network on the simulation's grid ``[B, M]``."""
    factor = config.dv_net / config.dv
    if abs(factor - round(factor)) > 1e-9:
        raise ValueError(f"dv_net {config.dv_net} must be a multiple of dv {config.dv}")
    return tabulated_network(ensemble, config, size)


def full_tables(problem: Problem, inf_n: Tensor, tau_n: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """Tables ``[B, G, M]``: the shared mechanistic rows, then the neural row; tau as exp(-dt/tau)."""
    b = inf_n.shape[0]
    mech_inf = problem.mech_inf.unsqueeze(0).expand(b, -1, -1)
    mech_dec = torch.exp(-dt / problem.mech_tau).unsqueeze(0).expand(b, -1, -1)
    inf = torch.cat([mech_inf, inf_n.unsqueeze(1)], 1)
    dec = torch.cat([mech_dec, torch.exp(-dt / tau_n).unsqueeze(1)], 1)
    return inf, dec


def _initial_gates(inf: Tensor, v0: Tensor, config: TrajectoryFitConfig) -> Tensor:
    """Every gate at its steady state at v0 (differentiable in the tables): ``[B, G]``."""
    return interp_table(inf, v0, config.v_min, config.dv)


def rollout_voltage(problem: Problem, inf_n: Tensor, tau_n: Tensor, config: TrajectoryFitConfig, steps: int,
                    force_v: Tensor | None = None, force_g: Tensor | None = None) -> Tensor:
    """Voltages ``[B, steps + 1]`` at the rollout step, by the kernel (the torch path without a compiler)."""
    inf, dec = full_tables(problem, inf_n, tau_n, config.dt)
    x0 = _initial_gates(inf, problem.v0, config)
    args = (problem.v0, x0, problem.iext[:, :steps], problem.capacitance, problem.gbar, problem.e_rev, inf, dec,
            problem.layout, config.v_min, config.dv, config.dt, config.theta, force_v, force_g)
    return kernel.rollout(*args)


def gaussian_filter(v: Tensor, sigma_samples: float) -> Tensor:
    """Each row of ``v`` ``[B, K]`` through a normalised Gaussian (edges replicated); identity for sigma 0."""
    if sigma_samples <= 0:
        return v
    half = max(1, int(3 * sigma_samples))
    k = torch.exp(-0.5 * (torch.arange(-half, half + 1, dtype=v.dtype) / sigma_samples) ** 2)
    k = (k / k.sum()).view(1, 1, -1)
    padded = torch.nn.functional.pad(v.unsqueeze(1), (half, half), mode="replicate")
    return torch.nn.functional.conv1d(padded, k).squeeze(1)


def trace_loss(v_model: Tensor, v_obs: Tensor, dt: float, deriv_weight: float | Tensor,
               filtered: Tensor | None = None, sigma_samples: float = 0.0) -> Tensor:
    """The paper's loss per cell: MSE(V) + w MSE(dV/dt), on the samples.

    Cells in ``filtered`` compare model and data both through the same Gaussian filter: the same
    optimum in expectation, without the rough landscape that noise on spike flanks makes.
    """
    if filtered is not None and bool(filtered.any()) and sigma_samples > 0:
        f = filtered.unsqueeze(1)
        v_model = torch.where(f, gaussian_filter(v_model, sigma_samples), v_model)
        v_obs = torch.where(f, gaussian_filter(v_obs, sigma_samples), v_obs)
    mse = (v_model - v_obs).square().mean(1)
    d_model = (v_model[:, 1:] - v_model[:, :-1]) / dt
    d_obs = (v_obs[:, 1:] - v_obs[:, :-1]) / dt
    return mse + deriv_weight * (d_model - d_obs).square().mean(1)


def noise_level(v: Tensor) -> Tensor:
    """Estimated sd (mV) of white observation noise per trace ``[B]``.

    White noise of sd s adds sd s sqrt(6) to second differences, which the smooth trace barely has
    between spikes; the median absolute second difference estimates s robustly.
    """
    d2 = v[:, 2:] - 2 * v[:, 1:-1] + v[:, :-2]
    return d2.abs().median(1).values / 0.6745 / math.sqrt(6.0)


def smooth_trace(v: Tensor, dt: float, above_mv: float = 1.0) -> Tensor:
    """Gaussian smoothing of the traces whose estimated noise exceeds ``above_mv``, wider for more noise."""
    noise = noise_level(v)
    sigma_ms = torch.where(noise > above_mv, (noise / 4.0).clamp(0.0, 0.6), torch.zeros_like(noise))
    out = v.clone()
    for b in torch.nonzero(sigma_ms > 0.5 * dt).flatten().tolist():
        s = float(sigma_ms[b]) / dt
        half = max(1, int(3 * s))
        k = torch.exp(-0.5 * (torch.arange(-half, half + 1, dtype=v.dtype) / s) ** 2)
        k = (k / k.sum()).view(1, 1, -1)
        padded = torch.nn.functional.pad(v[b].view(1, 1, -1), (half, half), mode="replicate")
        out[b] = torch.nn.functional.conv1d(padded, k).view(-1)
    return out


def scan_gates(a: Tensor, u: Tensor, x0: Tensor) -> Tensor:
    """x_{k+1} = a_k x_k + (1 - a_k) u_k for k < K, all at once: ``[..., K + 1]`` (a in (0, 1], u, x0 >= 0).

    Closed form in log space (cumulative sums and logcumsumexp), stable for any decay.
    """
    log_a = torch.log(a.clamp_min(1e-300))
    big_l = torch.cat([torch.zeros_like(log_a[..., :1]), torch.cumsum(log_a, -1)], -1)  # log prod_{j<k} a_j
    log_b = torch.log((-torch.expm1(log_a)).clamp_min(1e-300)) + torch.log(u.clamp_min(1e-300))
    s = torch.logcumsumexp(log_b - big_l[..., 1:], -1)
    head = torch.exp(big_l) * x0.unsqueeze(-1)
    tail = torch.exp(big_l[..., 1:] + s)
    return head + torch.cat([torch.zeros_like(tail[..., :1]), tail], -1)


class TeacherForcing:
    """Gates driven by the observed voltage; loss on the one-step prediction of the next sample."""

    def __init__(self, problem: Problem, config: TrajectoryFitConfig) -> None:
        self.p = problem
        self.config = config
        v = problem.observed
        self.v = smooth_trace(v, problem.sample_dt, config.noisy_above_mv) if config.smooth else v
        dt = problem.sample_dt
        # Mechanistic gates along the observed voltage: constants of the fit.
        inf_m = problem.mech_inf.unsqueeze(0)
        dec_m = torch.exp(-dt / problem.mech_tau).unsqueeze(0)
        gm = problem.mech_inf.shape[0]
        u = torch.stack([interp_table(inf_m, self.v[:, k], config.v_min, config.dv) for k in range(v.shape[1])], -1)
        a = torch.stack([interp_table(dec_m, self.v[:, k], config.v_min, config.dv) for k in range(v.shape[1])], -1)
        self.mech = scan_gates(a[..., 1:], u[..., 1:], u[..., 0])[:, :gm]  # [B, Gm, K+1]
        sub = round(dt / config.dt)
        self.iext = problem.iext.view(problem.size, -1, sub).mean(-1)  # the sample-grid midpoint current
        idx = problem.layout.index
        self.pad = idx < 0
        self.idx = torch.where(self.pad, torch.full_like(idx, problem.layout.n_gates), idx)
        self.power = problem.layout.power.to(torch.float64)

    def loss(self, inf_n: Tensor, tau_n: Tensor) -> Tensor:
        """Per cell: mean squared one-step error of dV/dt (mV/ms)."""
        cfg, p, v, dt = self.config, self.p, self.v, self.p.sample_dt
        pos = ((v - cfg.v_min) / cfg.dv).clamp(0, inf_n.shape[1] - 1.0)
        i = pos.floor().clamp(max=inf_n.shape[1] - 2).long()
        w = pos - i
        u = inf_n.gather(1, i) * (1 - w) + inf_n.gather(1, i + 1) * w
        dec = torch.exp(-dt / tau_n)
        a = dec.gather(1, i) * (1 - w) + dec.gather(1, i + 1) * w
        x_n = scan_gates(a[:, 1:], u[:, 1:], u[:, 0])  # [B, K+1]
        x = torch.cat([self.mech, x_n.unsqueeze(1), torch.ones_like(x_n).unsqueeze(1)], 1)[:, :, :-1]  # [B, G+1, K]
        padded = x[:, self.idx]  # [B, C, W, K]
        prod = torch.where(self.pad.unsqueeze(-1), torch.ones_like(padded),
                           padded.pow(self.power.unsqueeze(-1))).prod(2)  # [B, C, K]
        g = p.gbar.unsqueeze(-1) * prod
        gt, ge = 1e3 * g.sum(1), 1e3 * (g * p.e_rev.unsqueeze(-1)).sum(1)
        c = (p.capacitance / dt).unsqueeze(-1)
        th = cfg.theta
        v_next = ((c - th * gt) * v[:, :-1] + self.iext + ge) / (c + (1 - th) * gt)
        return ((v_next - v[:, 1:]) / dt).square().mean(1)


def _resample(v: Tensor, t: Tensor, t_new: Tensor) -> Tensor:
    """Rows of ``v`` (on times ``t``) linearly at ``t_new``."""
    pos = ((t_new - t[0]) / (t[1] - t[0])).clamp(0, t.numel() - 1)
    i = pos.floor().long().clamp(max=t.numel() - 2)
    w = pos - i
    return v[:, i] * (1 - w) + v[:, i + 1] * w


def _optimiser(params: list[Tensor], lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, foreach=True)


def _lrs(schedule: str) -> Schedule:
    if schedule == "constant":
        return constant
    return lambda steps, lr: warmup_cosine(steps, lr, max(1, steps // 20), lr * 0.05)


def fit_trajectories(ensemble: nn.Module, problem: Problem, config: TrajectoryFitConfig | None = None,
                     log: object = None) -> FitResult:
    """Train member b of ``ensemble`` on cell b of ``problem``; returns per-cell final losses."""
    config = config or TrajectoryFitConfig()
    sub = round(problem.sample_dt / config.dt)
    if abs(sub * config.dt - problem.sample_dt) > 1e-9:
        raise ValueError(f"sample_dt {problem.sample_dt} must be a multiple of dt {config.dt}")
    params = [p for p in ensemble.parameters() if p.requires_grad]
    b = problem.size
    history: list[tuple[str, int, float]] = []
    start = time.perf_counter()

    k_total = problem.observed.shape[1] - 1
    noisy = noise_level(problem.observed) > config.noisy_above_mv
    deriv_weight = torch.where(noisy, config.noisy_deriv_weight, config.deriv_weight).to(torch.float64)
    sigma_f = config.noisy_filter_ms / problem.sample_dt
    needs_tf = config.tf_steps > 0 or config.noisy_presmooth or config.forced_steps > 0
    tf = TeacherForcing(problem, config) if needs_tf else None
    tf_setup = time.perf_counter() - start
    schedule = _lrs(config.schedule)

    def teacher(_: int, __: Tensor) -> Tensor:
        return backward_finite(tf.loss(*training_tables(ensemble, config, b)))

    # Teacher forcing's gradients are larger and better behaved: a looser clip.
    stages = [Stage("teacher", config.tf_steps, config.tf_lr, teacher, schedule, max(config.clip, 1.0))]

    if config.forced_steps > 0:
        # Generalised teacher forcing: rollouts pulled towards the observed voltage by a conductance
        # C kappa that fades to zero, so the gates learn to make the pull unnecessary.
        target = tf.v if tf is not None else problem.observed
        t_obs = torch.arange(k_total + 1, dtype=torch.float64) * problem.sample_dt
        t_step = (torch.arange(k_total * sub, dtype=torch.float64) + 1) * config.dt
        force_v = _resample(target, t_obs, t_step)

        def forced(step: int, _: Tensor) -> Tensor:
            kappa = config.force_kappa * (1.0 - step / config.forced_steps)
            force_g = problem.capacitance * kappa / 1e3
            inf_n, tau_n = training_tables(ensemble, config, b)
            v = rollout_voltage(problem, inf_n, tau_n, config, k_total * sub, force_v, force_g)[:, ::sub]
            return backward_finite(trace_loss(v, problem.observed, problem.sample_dt, deriv_weight))

        stages.append(Stage("forced", config.forced_steps, config.lr, forced, schedule, config.clip))

    # Noisy traces first fit their smoothed version as if clean, then (last stage) the raw trace.
    smoothed = tf.v if tf is not None and config.noisy_presmooth else problem.observed
    last = max((i for i, (_, n) in enumerate(config.stages) if n > 0), default=-1)
    for stage, (frac, steps) in enumerate(config.stages):
        k = max(2, int(round(frac * k_total)))
        raw = stage == last or not config.noisy_presmooth
        obs = (problem.observed if raw else smoothed)[:, :k + 1]
        weight = deriv_weight if raw else torch.full_like(deriv_weight, config.deriv_weight)

        def rollout(_: int, __: Tensor, k: int = k, obs: Tensor = obs, weight: Tensor = weight,
                    raw: bool = raw) -> Tensor:
            inf_n, tau_n = training_tables(ensemble, config, b)
            v = rollout_voltage(problem, inf_n, tau_n, config, k * sub)[:, ::sub]
            return backward_finite(trace_loss(v, obs, problem.sample_dt, weight, noisy, sigma_f if raw else 0.0))

        # fresh moments per stage, as the paper's curriculum
        stages.append(Stage(f"rollout_{frac:g}", steps, config.lr, rollout, schedule, config.clip))

    def record(info: StepInfo) -> None:
        if info.step % 50 == 0 or info.step == info.stage.steps - 1:
            ok = torch.isfinite(info.losses)
            history.append((info.stage.name, info.step, float(info.losses[ok].median()) if ok.any() else math.nan))
            if log is not None and info.stage.name.startswith("rollout"):
                print(f"  {history[-1]}", file=log, flush=True)

    # A cell whose rollout blows up skips that step and tries again: it is not frozen.
    out = train(params, stages, optimizer=_optimiser, on_nonfinite="skip", hook=record)
    tf_wall = tf_setup + (out.stage_wall_s[0] if config.tf_steps > 0 else 0.0)

    with torch.no_grad():
        inf_n, tau_n = training_tables(ensemble, config, b)
        v = rollout_voltage(problem, inf_n, tau_n, config, k_total * sub)[:, ::sub]
        final = trace_loss(v, problem.observed, problem.sample_dt, deriv_weight, noisy, sigma_f)
    bad = ~torch.isfinite(final)
    return FitResult(final, bad, history, time.perf_counter() - start, tf_wall)
