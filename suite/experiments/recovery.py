"""Recovery (PAPER.md, experiment 2): learn an unknown gate from one current-clamp trace.

A gate of a ground-truth model (HH's K gate n by default; Na m and h, and a Pospischil gate as
well) is replaced by a neural gate and trained on the voltage trace alone, under observation noise
(sigma_V) and misspecified fixed parameters (sigma_theta). One job per (target, method) trains all
its rows x seeds x restarts in one batch (``suite.train.trajectory``), then scores every run on the
clean trace, on the learned x_inf(V) and tau(V), and out of distribution (a longer step, other
amplitudes, an Ornstein-Uhlenbeck current). One row per run.

Ground truth is simulated with Crank-Nicolson at 0.0025 ms on rate tables at 0.01 mV (0.01 mV RMSE
from torchdiffeq's dopri5 at rtol 1e-8 on the training trace). A learned gate is its network
tabulated at 1-mV nodes and interpolated linearly (``dv_net``; NEURON's hh TABLE is 1 mV), the same
function in training and scoring; learned models are scored at 0.025 ms.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch

from channelzoo.models import CellModel, get_model
from suite.config import ConfigError, require, require_choice
from suite.experiments.base import Job, JobResult
from suite.gates import NeuralGateEnsemble
from suite.gates.neural import ACTIVATIONS
from suite.models.files import SavedModel, model_artifacts
from suite.models.neural_gate import INPUT_NORMALISATION, architecture, member_tensors
from suite.sim import kernel
from suite.sim.kernel import GateLayout
from suite.sim.membrane import Membrane
from suite.sim.spikes import coincidence_factor, spike_times
from suite.sim.stimulus import CURRENT_UNITS, StepCurrent, current_density, cylinder_area_cm2, ou_current
from suite.train.trajectory import Problem, TrajectoryFitConfig, fit_trajectories, grid, tabulated_network

F64 = torch.float64
CONVERGED_MV = 2.0  # the paper's threshold on RMSE against the clean trace
# Models stimulated at their own density (uA/cm2) rather than the config's amplitude (the paper has no
# protocol for them): every current of the run (training step, out-of-distribution steps, OU) scales by
# this density over the config amplitude's.
PROTOCOL_DENSITY = {"pospischil_rs": 5.0, "pospischil_fs": 5.0}
# Training step (ms) per model where 0.05 is too coarse: Pospischil's spikes at 36 C are fast
# (Crank-Nicolson at 0.05 ms is 4.4 mV RMSE from the converged trace; at 0.025, 1.0 mV).
TRAINING_DT = {"pospischil_rs": 0.025, "pospischil_fs": 0.025}

Method = Literal["ours", "paper"]


@dataclass(frozen=True)
class RecoveryConfig:
    """Defaults: the paper's protocol and sweep (7 rows x 20 seeds), trained our way."""

    targets: tuple[str, ...] = ("hh_paper/hh_k/n",)  # model/channel/gate
    methods: tuple[str, ...] = ("ours",)  # "ours" and/or "paper" (the paper's loss and curriculum alone)
    sigma_v: tuple[float, ...] = (0.0, 0.01, 0.05, 0.1)
    sigma_theta: tuple[float, ...] = (0.01, 0.02, 0.05)
    seeds: int = 20
    restarts: int = 4
    width: int = 32
    depth: int = 2
    activation: str = "tanh"
    tf_steps: int = 300
    stage_steps: tuple[int, ...] = (100, 100, 1000, 1000)  # on 10 %, 30 %, 100 %, 100 % of the trace (each further
    # number: another stage on all of it, a warm restart with fresh Adam moments and learning rate)
    lr: float = 5e-4
    tf_lr: float = 1e-2
    clip: float = 0.1
    dt: float | None = None  # ms, training rollouts (Crank-Nicolson); None: 0.05, or the model's TRAINING_DT
    dv: float = 0.2  # mV, table spacing of the training simulations (scoring uses 0.05 mV)
    dv_net: float = 1.0  # mV, the learned gate's table nodes (trained and scored alike; NEURON's hh TABLE: 1 mV)
    smooth: bool = True  # smooth a noisy trace for teacher forcing (rollouts always see the raw trace)
    deriv_weight: float = 0.01  # the paper's weight of MSE(dV/dt) in the rollout loss
    forced_steps: int = 0  # a stage of rollouts forced towards the observed voltage, the forcing fading out
    force_kappa: float = 1.0  # 1/ms, the forcing's initial strength
    float32: bool = True  # the networks in float32 (tables and simulation stay float64)
    t_on: float = 5.0
    t_off: float = 45.0
    t_stop: float = 50.0
    sample_dt: float = 0.1
    # Currents (amplitude, ood_amplitudes, ou_mean, ou_sigma) are in current_unit: the paper injects pA
    # into a cylinder of radius_um x length_um (its `HH` compartment), so 15 pA is 23.87 uA/cm2.
    current_unit: str = "pA"  # pA | nA (into the cylinder below) | uA/cm2 (a density; geometry unused)
    radius_um: float = 1.0
    length_um: float = 10.0
    amplitude: float = 15.0
    ood: bool = True
    ood_amplitudes: tuple[float, ...] = (9.0, 11.0, 13.0, 15.0, 17.0, 19.0, 21.0)
    ou_mean: float = 8.0
    ou_sigma: float = 4.0
    ou_tau: float = 5.0
    threads: int = 1  # torch intra-op threads while training (small ops: one thread is fastest)

    def __post_init__(self) -> None:
        for t in self.targets:
            parse_target(t)
        require(self, "at least 1", "seeds", "restarts", "width", "depth", "threads")
        require(self, "non-negative", "tf_steps", "stage_steps", "forced_steps", "deriv_weight", "force_kappa",
                "sigma_v", "sigma_theta", "ou_sigma", "ood_amplitudes")
        require(self, "positive", "lr", "tf_lr", "clip", "dt", "dv", "dv_net", "sample_dt", "t_stop", "ou_tau",
                "radius_um", "length_um", "amplitude")
        require(self, "finite", "ou_mean")
        require_choice(self, "activation", ACTIVATIONS)
        require_choice(self, "methods", ("ours", "paper"))
        require_choice(self, "current_unit", CURRENT_UNITS)
        if not 0 <= self.t_on < self.t_off <= self.t_stop:
            raise ConfigError(f"need 0 <= t_on < t_off <= t_stop, got {self.t_on}, {self.t_off}, {self.t_stop}",
                              field="t_off")
        if self.sample_dt > self.t_stop:
            raise ConfigError("the trace needs at least two samples", field="sample_dt")
        if len(self.stage_steps) < 3:
            raise ConfigError("stage_steps takes at least three numbers (10 %, 30 %, 100 % of the trace, ...)",
                              field="stage_steps")

    def density(self, current: float) -> float:
        """A current of this config (``current_unit``) as uA/cm2 on its compartment."""
        return current_density(current, self.current_unit, cylinder_area_cm2(self.radius_um, self.length_um))

    def rows(self) -> list[tuple[float, float]]:
        """The paper's table rows: every sigma_v with exact parameters, every sigma_theta without noise."""
        return [(sv, 0.0) for sv in self.sigma_v] + [(0.0, st) for st in self.sigma_theta]


def parse_target(target: str) -> tuple[str, str, str]:
    parts = target.split("/")
    if len(parts) != 3:
        raise ConfigError(f"target {target!r} is not model/channel/gate (e.g. hh_paper/hh_k/n)", field="targets")
    model = get_model(parts[0])
    channel = model.channel(parts[1])
    if parts[2] not in {g.name for g in channel.gates}:
        raise ConfigError(f"channel {parts[1]} has no gate {parts[2]!r}", field="targets")
    return parts[0], parts[1], parts[2]


def method_settings(config: RecoveryConfig, method: str, model: str = "hh_paper") -> tuple[TrajectoryFitConfig, int]:
    """The training config and restarts of a method: ``paper`` is their loss and curriculum, nothing else."""
    dt = config.dt if config.dt is not None else TRAINING_DT.get(model, 0.05)
    if method == "paper":
        return TrajectoryFitConfig(tf_steps=0, stages=((0.1, 500), (0.3, 500), (1.0, 1000)), lr=1e-3,
                                   schedule="constant", clip=config.clip, dt=dt, dv=config.dv,
                                   dv_net=config.dv_net), 1
    fractions = (0.1, 0.3) + (1.0,) * (len(config.stage_steps) - 2)
    stages = tuple(zip(fractions, config.stage_steps, strict=True))
    return TrajectoryFitConfig(tf_steps=config.tf_steps, tf_lr=config.tf_lr, stages=stages, lr=config.lr,
                               clip=config.clip, dt=dt, dv=config.dv, dv_net=config.dv_net,
                               smooth=config.smooth, forced_steps=config.forced_steps,
                               force_kappa=config.force_kappa,
                               deriv_weight=config.deriv_weight), config.restarts


def _seed(*parts: object) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16)


class RecoveryCell:
    """A model with one gate tabulated from outside (the neural one, last in the state)."""

    def __init__(self, model: CellModel, channel: str, gate: str) -> None:
        self.model = model
        self.key = (channel, gate)
        self.membrane = Membrane(model.channels, n_sites=1, dtype=F64, temperature=model.temperature,
                                 replace={self.key: torch.nn.Identity()})
        self.full = Membrane(model.channels, n_sites=1, dtype=F64, temperature=model.temperature)
        self.order = [self.full.gate_row(*k) for k in self.membrane.gate_keys]
        self.layout = GateLayout.of(self.membrane)

    def true_rates(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_inf, tau of every gate in this cell's state order, the true target gate last: ``[G, M]``."""
        inf, tau = self.full.gate_rates(v)
        return inf[self.order], tau[self.order]

    def theta(self) -> torch.Tensor:
        """The fixed parameters: gbar and E of every channel, then C: ``[2 C + 1]``."""
        return torch.cat([self.membrane.gbar[:, 0], self.membrane.e_rev[:, 0],
                          torch.tensor([self.model.capacitance], dtype=F64)])

    def split(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = len(self.model.channels)
        return theta[:, :c], theta[:, c:2 * c], theta[:, 2 * c]


def protocol_density(config: RecoveryConfig, model_name: str) -> tuple[float, float]:
    """The training step of ``model_name`` in uA/cm2, and the factor that every other current of its runs takes."""
    stated = config.density(config.amplitude)
    density = PROTOCOL_DENSITY.get(model_name, stated)
    return density, density / stated


TRUTH_DV, TRUTH_DT = 0.01, 0.0025  # mV table spacing and ms step of the ground truth


def ground_truth(cell: RecoveryCell, record_dt: float):  # noqa: ANN201 - a closure
    """The ground-truth simulator of ``cell``: ``(profile [B or 1, T] at TRUTH_DT, keep_gates) -> V [B, K]``."""
    v_fine = grid(TrajectoryFitConfig(dv=TRUTH_DV))
    inf_true, tau_true = (t.unsqueeze(0) for t in cell.true_rates(v_fine))
    theta_true = cell.theta().unsqueeze(0)

    def truth(profile: torch.Tensor, keep_gates: bool = False):  # noqa: ANN202
        return simulate_tables(cell, inf_true, tau_true, TRUTH_DV, profile, TRUTH_DT, theta_true, record_dt,
                               keep_gates)

    return truth


def training_trace(config: RecoveryConfig, target: str) -> tuple[np.ndarray, np.ndarray]:
    """The clean trace a target's gate is learned from: times and voltages every ``sample_dt`` ms."""
    model_name, channel, gate = parse_target(target)
    density, _ = protocol_density(config, model_name)
    truth = ground_truth(RecoveryCell(get_model(model_name), channel, gate), config.sample_dt)
    v = truth(step_profile(torch.tensor([density], dtype=F64), config.t_on, config.t_off, config.t_stop, TRUTH_DT))
    return np.arange(v.shape[1]) * config.sample_dt, v[0].numpy()


def simulate_tables(cell: RecoveryCell, inf: torch.Tensor, tau: torch.Tensor, dv: float, profile: torch.Tensor,
                    dt: float, theta: torch.Tensor, record_dt: float, keep_gates: bool = False):
    """Run B cells (tables ``[B or 1, G, M]`` on -100 + k dv) under ``profile`` ``[B or 1, T]`` (uA/cm2)."""
    b = max(theta.shape[0], profile.shape[0])
    gbar, e_rev, cap = (t.expand(b, *t.shape[1:]) for t in cell.split(theta))
    v0 = torch.full((b,), cell.model.v_init, dtype=F64)
    x0 = kernel.interp_table(inf, v0, -100.0, dv)
    dec = torch.exp(-dt / tau)
    return kernel.simulate(v0, x0, profile, cap, gbar, e_rev, inf, dec, cell.layout, -100.0, dv, dt, 0.5,
                           round(record_dt / dt), keep_gates=keep_gates)


def step_profile(amplitude: torch.Tensor, t_on: float, t_off: float, t_stop: float, dt: float) -> torch.Tensor:
    """Step currents ``[B, T]`` at the step midpoints."""
    return StepCurrent(amplitude.to(F64), t_on, t_off).sample(dt, round(t_stop / dt)).T.contiguous()


class Recovery:
    """The recovery experiment: plan one job per (target, method); run trains and scores all its runs."""

    name = "recovery"
    code_version = "1"
    config_type = RecoveryConfig

    @staticmethod
    def presets() -> dict[str, dict[str, object]]:
        return {
            "quick": {"seeds": 3, "restarts": 2, "sigma_v": [0.0, 0.05], "sigma_theta": [0.02],
                      "tf_steps": 150, "stage_steps": [50, 50, 250], "ood_amplitudes": [9.0, 15.0, 21.0]},
            "paper": {"targets": ["hh_paper/hh_k/n", "hh_paper/hh_na/m", "hh_paper/hh_na/h",
                                  "pospischil_rs/pospischil_kd/n"], "methods": ["ours", "paper"]},
        }

    def plan(self, config: RecoveryConfig) -> list[Job]:
        jobs = []
        for i, (target, method) in enumerate((t, m) for t in config.targets for m in config.methods):
            jobs.append(Job.make(self.name, config, i, 0, {"target": target, "method": method}))
        return jobs

    def run(self, job: Job, device: str) -> JobResult:
        config: RecoveryConfig = job.config
        threads = torch.get_num_threads()
        torch.set_num_threads(config.threads)
        try:
            # The rollout and its adjoint are the C kernel's: the job runs on the CPU whatever it was given.
            rows, models = train_target(config, job.payload["target"], job.payload["method"])
        finally:
            torch.set_num_threads(threads)
        artifacts, rows["model_file"] = model_artifacts(self.name, job.key, models, getattr(self, "code_version", None))
        return JobResult(rows, artifacts=artifacts, device="cpu")


def _ensemble(config: RecoveryConfig, seeds: list[int]) -> NeuralGateEnsemble:
    """One member per (run, restart), each drawn from its own seed (the same seed, the same network)."""
    dtype = torch.float32 if config.float32 else F64
    ens = NeuralGateEnsemble(len(seeds), config.width, config.depth, config.activation, dtype=dtype, seed=0)
    with torch.no_grad():
        for i, s in enumerate(seeds):
            one = NeuralGateEnsemble(1, config.width, config.depth, config.activation, dtype=dtype, seed=s)
            for p, q in zip(ens.parameters(), one.parameters(), strict=True):
                p[i].copy_(q[0])
    return ens


def run_target(config: RecoveryConfig, target: str, method: str) -> pd.DataFrame:
    """Train and score every run of (target, method): one row per run."""
    return train_target(config, target, method)[0]


def train_target(config: RecoveryConfig, target: str, method: str) -> tuple[pd.DataFrame, dict[str, SavedModel]]:
    """The rows of ``run_target`` and each run's learned model (its best restart), by file name."""
    model_name, channel, gate = parse_target(target)
    model = get_model(model_name)
    cell = RecoveryCell(model, channel, gate)
    fit_cfg, restarts = method_settings(config, method, model_name)
    amplitude, current_scale = protocol_density(config, model_name)
    dt_true = TRUTH_DT
    truth = ground_truth(cell, config.sample_dt)
    theta_true = cell.theta().unsqueeze(0)

    amp1 = torch.tensor([amplitude], dtype=F64)
    v_clean, x_clean = truth(step_profile(amp1, config.t_on, config.t_off, config.t_stop, dt_true), True)
    v_clean = v_clean[0]
    k = v_clean.numel() - 1

    # Runs: rows x seeds, each with restarts members.
    rows = config.rows()
    runs = [(sv, st, s) for sv, st in rows for s in range(config.seeds)]
    n_runs = len(runs)
    observed, thetas = [], []
    scale = v_clean.abs().max()
    for sv, st, s in runs:
        gen = torch.Generator().manual_seed(_seed("data", target, sv, st, s))
        noise = torch.randn(k + 1, generator=gen, dtype=F64)
        observed.append(v_clean + sv * scale * noise)
        eps = torch.randn(theta_true.shape[1], generator=gen, dtype=F64)
        thetas.append(theta_true[0] + st * theta_true[0].abs() * eps)
    observed_t = torch.stack(observed)
    theta = torch.stack(thetas)
    member_run = torch.arange(n_runs).repeat_interleave(restarts)
    member_seeds = [1000 * r + s for _, _, s in runs for r in range(restarts)]
    ens = _ensemble(config, member_seeds)
    b = len(member_seeds)

    v_train = grid(fit_cfg)
    mech_inf, mech_tau = cell.true_rates(v_train)
    gbar, e_rev, cap = cell.split(theta[member_run])
    iext = step_profile(torch.full((b,), amplitude, dtype=F64), config.t_on, config.t_off, config.t_stop, fit_cfg.dt)
    problem = Problem(cell.layout, mech_inf[:-1], mech_tau[:-1], gbar.contiguous(), e_rev.contiguous(),
                      cap.contiguous(), torch.full((b,), model.v_init, dtype=F64), iext,
                      observed_t[member_run].contiguous(), config.sample_dt)

    # Scoring helpers: the learned gate tabulated finely, mechanistic rows true.
    dv_eval, dt_eval = 0.05, min(0.025, fit_cfg.dt)
    v_eval = grid(TrajectoryFitConfig(dv=dv_eval))
    mech_eval_inf, mech_eval_tau = cell.true_rates(v_eval)

    def learned_tables(members: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            inf_n, tau_n = tabulated_network(ens, fit_cfg, b, v_eval)
        m = len(members)
        inf = torch.cat([mech_eval_inf[:-1].expand(m, -1, -1), inf_n[members].unsqueeze(1)], 1)
        tau = torch.cat([mech_eval_tau[:-1].expand(m, -1, -1), tau_n[members].unsqueeze(1)], 1)
        return inf, tau

    def run_learned(members: torch.Tensor, profile: torch.Tensor, th: torch.Tensor, keep_gates: bool = False):
        inf, tau = learned_tables(members)
        return simulate_tables(cell, inf, tau, dv_eval, profile, dt_eval, th, config.sample_dt, keep_gates)

    train_profile = step_profile(amp1, config.t_on, config.t_off, config.t_stop, dt_eval)
    every = torch.arange(b)
    v_init = run_learned(every, train_profile, theta[member_run])  # before training, for the figure

    start = time.perf_counter()
    result = fit_trajectories(ens, problem, fit_cfg)
    train_wall = time.perf_counter() - start

    # Best restart per run by its final loss on the observed (noisy) trace.
    loss = torch.where(torch.isfinite(result.loss), result.loss, torch.full_like(result.loss, float("inf")))
    per_run = loss.view(n_runs, restarts)
    best = per_run.argmin(1) + torch.arange(n_runs) * restarts
    v_best, x_best = run_learned(best, train_profile, theta, keep_gates=True)
    rmse = (v_best - v_clean).square().mean(1).sqrt()

    # Learned vs true curves over the visited range.
    lo, hi = float(v_clean.min()), float(v_clean.max())
    visited = (v_eval >= lo) & (v_eval <= hi)
    with torch.no_grad():
        inf_n, tau_n = tabulated_network(ens, fit_cfg, b, v_eval)
    inf_err = (inf_n[best][:, visited] - mech_eval_inf[-1, visited]).square().mean(1).sqrt()
    tau_err = (tau_n[best][:, visited] - mech_eval_tau[-1, visited]).square().mean(1).sqrt()
    tau_rel = ((tau_n[best][:, visited] - mech_eval_tau[-1, visited]).abs() / mech_eval_tau[-1, visited]).mean(1)

    out = pd.DataFrame({
        "target": target, "model": model_name, "channel": channel, "gate": gate, "method": method,
        "amplitude": config.amplitude * current_scale, "current_unit": config.current_unit,
        "amplitude_density": amplitude,
        "sigma_v": [r[0] for r in runs], "sigma_theta": [r[1] for r in runs], "seed": [r[2] for r in runs],
        "restarts": restarts, "restart_chosen": (best % restarts).numpy(), "train_loss": per_run.min(1).values.numpy(),
        "rmse": rmse.numpy(), "converged": (rmse < CONVERGED_MV).numpy(),
        "inf_rmse": inf_err.numpy(), "tau_rmse_ms": tau_err.numpy(), "tau_rel_err": tau_rel.numpy(),
        "v_visited_lo": lo, "v_visited_hi": hi,
        "train_time_s": train_wall / n_runs, "batch_train_time_s": train_wall, "batch_runs": n_runs,
        "batch_members": b, "tf_time_s": result.tf_wall_s,
    })
    finite = torch.isfinite(rmse)
    out["status"] = np.where(finite.numpy(), "ok", "diverged")
    out["error"] = np.where(finite.numpy(), "", "non-finite voltage in the learned model's simulation")

    # Curves for every run (x_inf, tau on a coarse grid); traces for the first seed of each row.
    v_curve = torch.arange(-100.0, 100.01, 2.0, dtype=F64)
    ci = (v_curve.clamp(-100, 60) - (-100.0)) / dv_eval
    idx = ci.round().long()
    out["curve_v"] = [v_curve.numpy()] * n_runs
    out["learned_inf"] = list(inf_n[best][:, idx].numpy())
    out["learned_tau"] = list(tau_n[best][:, idx].numpy())
    true_full = cell.true_rates(v_curve)
    out["true_inf"] = [true_full[0][-1].numpy()] * n_runs
    out["true_tau"] = [true_full[1][-1].numpy()] * n_runs
    example = np.array([s == 0 for _, _, s in runs])
    gate_names = [f"{c}.{g}" for c, g in cell.membrane.gate_keys]
    t_axis = np.arange(k + 1) * config.sample_dt
    sub = round(config.sample_dt / dt_eval)
    sub_true = round(config.sample_dt / dt_true)
    out["gate_names"] = [gate_names] * n_runs
    out["t"] = [t_axis if e else np.array([]) for e in example]
    out["v_true"] = [v_clean.numpy() if e else np.array([]) for e in example]
    out["v_learned"] = [v_best[i].numpy() if e else np.array([]) for i, e in enumerate(example)]
    out["v_init"] = [v_init[int(best[i])].numpy() if e else np.array([]) for i, e in enumerate(example)]
    out["gates_true"] = [x_clean[0, ::sub_true].T.numpy().ravel() if e else np.array([]) for e in example]
    out["gates_learned"] = [x_best[i, ::sub].T.numpy().ravel() if e else np.array([])
                            for i, e in enumerate(example)]

    if config.ood:
        out = _out_of_distribution(config, out, truth, run_learned, best, theta, amplitude, current_scale, example,
                                   dt_eval)
    sim = {"v_min": fit_cfg.v_min, "v_max": fit_cfg.v_max, "dv_net": fit_cfg.dv_net, "dv": dv_eval, "dt": dt_eval,
           "theta": 0.5, "record_dt": config.sample_dt,
           "scheme": "network at dv_net nodes, linear onto a dv grid; theta-method V, exponential-Euler gates"}
    current = {"unit": config.current_unit, "area_cm2": cylinder_area_cm2(config.radius_um, config.length_um),
               "scale": current_scale}
    models = {f"{method}-{target.replace('/', '-')}-run{i:03d}": _saved_gate(
        config, cell, ens, int(best[i]), theta[i], out.iloc[i], sim, current) for i in range(n_runs)}
    return out, models


_METRICS = ("train_loss", "rmse", "converged", "inf_rmse", "tau_rmse_ms", "tau_rel_err", "rmse_extrap",
            "coinc_extrap", "rmse_ou", "coinc_ou", "rmse_amp_mean", "coinc_amp_mean")


def _saved_gate(config: RecoveryConfig, cell: RecoveryCell, ens: NeuralGateEnsemble, member: int, theta: torch.Tensor,
                row: pd.Series, simulation: dict, current: dict) -> SavedModel:
    """One run's learned gate, the cell it plugs into and the fixed parameters it was trained with."""
    model = cell.model
    channel, gate = cell.key
    gbar, e_rev, cap = cell.split(theta.unsqueeze(0))
    ids = [c.id for c in model.channels]
    power = next(g.power for g in model.channel(channel).gates if g.name == gate)
    spec = {
        "kind": "recovered_gate", "architecture": architecture(ens), "input_normalisation": INPUT_NORMALISATION,
        "units": {"v": "mV", "t": "ms", "tau": "ms", "gbar": "S/cm2", "e_rev": "mV", "capacitance": "uF/cm2",
                  "current": "uA/cm2", "temperature": "C"},
        "plugs_into": {"target": str(row["target"]), "model": model.name, "channel": channel, "gate": gate,
                       "gate_power": power, "ion_class": model.channel(channel).ion_class,
                       "temperature": model.temperature, "v_init": model.v_init,
                       "other_gates": "mechanistic, as in the model"},
        "fixed_parameters": {"gbar": dict(zip(ids, gbar[0].tolist(), strict=True)),
                             "e_rev": dict(zip(ids, e_rev[0].tolist(), strict=True)), "capacitance": float(cap[0])},
        "simulation": simulation,
        "training": {"method": str(row["method"]), "sigma_v": float(row["sigma_v"]),
                     "sigma_theta": float(row["sigma_theta"]), "seed": int(row["seed"]),
                     "restart_chosen": int(row["restart_chosen"]), "width": config.width, "depth": config.depth,
                     "stimulus": {"kind": "step", "amplitude": float(row["amplitude"]), "t_on": config.t_on,
                                  "t_off": config.t_off, "t_stop": config.t_stop,
                                  "density": float(row["amplitude_density"])},
                     "ou": {"mean": config.ou_mean, "sigma": config.ou_sigma, "tau": config.ou_tau},
                     "current": current},
        "status": str(row["status"]),
        "metrics": {k: (bool(row[k]) if k == "converged" else float(row[k])) for k in _METRICS if k in row},
    }
    return SavedModel(spec, member_tensors(ens, member))


def _score(t: np.ndarray, v_ref: np.ndarray, v: np.ndarray, duration: float) -> tuple[float, float]:
    rmse = float(np.sqrt(np.mean((v - v_ref) ** 2)))
    return rmse, coincidence_factor(spike_times(t, v_ref), spike_times(t, v), duration)


def _out_of_distribution(config: RecoveryConfig, out: pd.DataFrame, truth, run_learned,  # noqa: ANN001
                         best: torch.Tensor, theta: torch.Tensor, amplitude: float, scale: float,
                         example: np.ndarray, dt_eval: float) -> pd.DataFrame:
    """Extrapolation in time (step to 95 ms over 100 ms), amplitudes, and an OU current: RMSE and coincidence.

    ``amplitude`` is the training step in uA/cm2; every other current is the config's (in its
    ``current_unit``) times ``scale`` (see ``protocol_density``), converted to uA/cm2.
    """
    n = len(best)
    amp1 = torch.tensor([amplitude], dtype=F64)
    t_long = 100.0
    t_axis = np.arange(round(t_long / config.sample_dt) + 1) * config.sample_dt
    cases = {"extrap": (step_profile(amp1, config.t_on, 95.0, t_long, TRUTH_DT),
                        step_profile(amp1, config.t_on, 95.0, t_long, dt_eval)),
             "ou": tuple(ou_current(1, t_long, config.density(config.ou_mean) * scale,
                                    config.density(config.ou_sigma) * scale, config.ou_tau,
                                    TRUTH_DT, seed=0, start=config.t_on, dtype=F64).sample(dt, round(t_long / dt)
                                                                                          ).T.contiguous()
                         for dt in (TRUTH_DT, dt_eval))}
    for name, (p_true, p_model) in cases.items():
        v_ref = truth(p_true)[0].numpy()
        v_mod = run_learned(best, p_model, theta).numpy()
        scores = [_score(t_axis, v_ref, v_mod[i], t_long) for i in range(n)]
        out[f"rmse_{name}"] = [s[0] for s in scores]
        out[f"coinc_{name}"] = [s[1] for s in scores]
        out[f"v_{name}_true"] = [v_ref if e else np.array([]) for e in example]
        out[f"v_{name}_learned"] = [v_mod[i] if e else np.array([]) for i, e in enumerate(example)]
    amps_stated = np.asarray(config.ood_amplitudes, dtype=float) * scale  # in config.current_unit
    amps = torch.tensor([config.density(a) for a in amps_stated], dtype=F64)
    t_short = np.arange(round(config.t_stop / config.sample_dt) + 1) * config.sample_dt
    ref = truth(step_profile(amps, config.t_on, config.t_off, config.t_stop, TRUTH_DT)
                ) if len(amps) else torch.empty(0)
    # Every (run, amplitude) pair in one batch of the kernel.
    members = best.repeat_interleave(len(amps))
    th = theta.repeat_interleave(len(amps), 0)
    prof = step_profile(amps.repeat(n), config.t_on, config.t_off, config.t_stop, dt_eval)
    v_mod = run_learned(members, prof, th).view(n, len(amps), -1).numpy()
    ref_np = ref.numpy() if len(amps) else np.zeros((0, len(t_short)))
    rm = np.array([[_score(t_short, ref_np[j], v_mod[i, j], config.t_stop) for j in range(len(amps))]
                   for i in range(n)]).reshape(n, len(amps), 2)
    out["amp_values"] = [amps_stated] * n
    out["amp_densities"] = [amps.numpy()] * n
    out["amp_rmse"] = list(rm[:, :, 0])
    out["amp_coinc"] = list(rm[:, :, 1])
    out["rmse_amp_mean"] = rm[:, :, 0].mean(1)
    out["coinc_amp_mean"] = np.nanmean(rm[:, :, 1], 1)
    out["v_amp_true"] = [ref_np.ravel() if e else np.array([]) for e in example]
    out["v_amp_learned"] = [v_mod[i].ravel() if e else np.array([]) for i, e in enumerate(example)]
    return out

