"""Reduction (PAPER.md, experiment 3): a multicompartment neuron as one compartment with a learned axial current.

Ground truth is our cable simulator (NEURON as a cross-check) on a morphology with Pospischil Na,
Kd, M and leak everywhere, driven by a soma step. Three kinds of job, each self-contained (the SWC
text travels in the payload):

- ``reference``: the full cell, its soma trace and axial current, and NEURON's difference from it;
- ``baselines``: the soma alone (stimulus scaled by A_soma / A_total), with fitted area, and with
  fitted area and capacitance;
- ``hybrid`` (one per width): every (N_z, seed) hybrid of that width trained as one ensemble;
- ``cost``: the cost of simulating ``cost_ms`` with every model, side by side in one process (the full
  cell in ours and in NEURON, each hybrid architecture, the plain soma), one trace and batched. A
  model's cost depends on its architecture, not its weights, so untrained ones stand in.

The hybrids train on the paper's one step, or also on more steps (``train_amplitudes``) and noisy
steps (``train_noise_seeds``). Every model is scored on its training traces and on held-out ones,
which the config keeps disjoint from them: the step held to ``ood_stop`` over ``ood_t_stop`` ms,
other amplitudes, and the step plus Ornstein-Uhlenbeck noise of another seed.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from channelzoo.models import pospischil_jaxley
from suite.config import ConfigError, require, to_dict
from suite.experiments.base import Job, JobResult
from suite.gates.neural import LAYER_NORM_EPS
from suite.models.files import SavedModel, model_artifacts
from suite.models.neural_gate import INPUT_NORMALISATION
from suite.sim import native
from suite.sim.cable import Cable, axial_current
from suite.sim.compartments import Compartments, compartmentalise
from suite.sim.generated_morphology import pyramidal
from suite.sim.morphology import MorphologyError, parse_swc, read_swc_text
from suite.sim.reduced import AXIAL_SCALE_NA, LATENT_RATE_PER_MS, AxialODE, ReducedSoma, run_fused
from suite.train.reduction_fit import ReductionFitConfig, fit_reduced

CA1 = "ca1"  # shortcut for the paper's CA1 morphology in the shared data
CA1_FILE = "data/morphologies/ca1_n120_single_point_soma.swc"
RECORD_EVERY = 4  # stored traces every 4th step (0.1 ms at dt 0.025)
NOISE_TAU_MS = 2.0
GRID_NA = [round(0.4 + 0.05 * k, 3) for k in range(14)]  # the heldout preset's training steps, 0.4 to 1.05 nA


def shared_root() -> Path:
    """The read-only shared folder: $HYBRIDBENCH_SHARED, else ../shared beside the repository."""
    return Path(os.environ.get("HYBRIDBENCH_SHARED", Path(__file__).resolve().parents[3] / "shared"))


@dataclass(frozen=True)
class ReductionConfig:
    morphology: str = ""  # an SWC file, "ca1" (the paper's cell in the shared data) or "" (generated pyramidal)
    nseg: int = 1  # compartments per section (0: the d_lambda rule)
    ra: float = 100.0  # Ohm cm
    cm: float = 1.0  # uF/cm2
    temperature: float = 36.0  # C
    amplitude: float = 0.65  # nA, soma step
    stim_start: float = 10.0
    stim_stop: float = 50.0
    t_stop: float = 70.0
    dt: float = 0.025
    v_init: float = -70.0
    train_amplitudes: tuple[float, ...] = ()  # more training steps beside ``amplitude`` (paper: none)
    train_noise_seeds: tuple[int, ...] = ()  # more training traces: ``amplitude`` plus OU noise of these seeds
    n_latents: tuple[int, ...] = (1, 2, 4, 8)
    widths: tuple[int, ...] = (32, 64)
    depth: int = 2
    activation: str = "tanh"
    seeds: tuple[int, ...] = (0, 1, 2)
    teacher_steps: int = 800
    teacher_lr: float = 1e-2
    closed_steps: tuple[int, ...] = (200, 200, 600)
    curriculum: tuple[float, ...] = (0.3, 0.6, 1.0)
    closed_lr: float = 3e-4
    grad_clip: float = 1.0
    loss_every: int = 4
    ood_stop: float = 90.0
    ood_t_stop: float = 110.0
    ood_amplitudes: tuple[float, ...] = (0.5, 0.8)
    noise_sigma: float = 0.1  # nA, OU noise on the step
    noise_seed: int = 0
    converged_mv: float = 5.0
    cost_ms: float = 1000.0  # simulated time of the cost measurements
    cost_repeats: int = 3
    cost_batch: int = 64  # traces in the batched cost measurements
    baseline_grid: int = 41
    neuron: bool = True  # NEURON cross-check and timing (skipped with a note where NEURON is missing)
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.n_latents or min(self.n_latents) < 1:
            raise ConfigError("n_latents must list positive integers", field="n_latents")
        if not self.widths or min(self.widths) < 1:
            raise ConfigError("widths must list positive integers", field="widths")
        if not self.seeds:
            raise ConfigError("at least one seed", field="seeds")
        require(self, "positive", "ra", "cm", "dt", "amplitude", "t_stop", "teacher_lr", "closed_lr", "grad_clip",
                "converged_mv", "cost_ms", "curriculum")
        require(self, "at least 1", "depth", "loss_every", "cost_repeats", "cost_batch")
        require(self, "non-negative", "teacher_steps", "closed_steps", "noise_sigma", "train_amplitudes",
                "ood_amplitudes")
        require(self, "finite", "temperature", "v_init")
        if self.baseline_grid < 2:
            raise ConfigError(f"must be at least 2, got {self.baseline_grid}", field="baseline_grid")
        if max(self.curriculum, default=1.0) > 1.0:
            raise ConfigError("curriculum fractions are of the trace: at most 1", field="curriculum")
        if self.activation not in ("tanh", "silu"):
            raise ConfigError("activation must be tanh or silu (the compiled kernel's)", field="activation")
        if len(self.closed_steps) != len(self.curriculum):
            raise ConfigError("closed_steps and curriculum need the same length", field="curriculum")
        if not 0 <= self.stim_start < self.stim_stop <= self.ood_stop <= self.ood_t_stop:
            raise ConfigError("need 0 <= stim_start < stim_stop <= ood_stop <= ood_t_stop", field="stim_stop")
        if self.nseg < 0:
            raise ConfigError("nseg must be >= 0 (0: d_lambda)", field="nseg")
        trained = {round(a, 9) for a in (self.amplitude, *self.train_amplitudes)}
        if any(round(a, 9) in trained for a in self.ood_amplitudes):
            raise ConfigError("an amplitude is both trained on and held out", field="ood_amplitudes")
        if self.noise_seed in self.train_noise_seeds:
            raise ConfigError("the held-out noise seed is also a training seed", field="train_noise_seeds")

    def fit_config(self) -> ReductionFitConfig:
        return ReductionFitConfig(teacher_steps=self.teacher_steps, closed_steps=self.closed_steps,
                                  curriculum=self.curriculum, lr=self.teacher_lr, closed_lr=self.closed_lr,
                                  grad_clip=self.grad_clip, loss_every=self.loss_every)


def morphology_text(config: ReductionConfig) -> str:
    """The SWC text the jobs carry ("" for the generated morphology)."""
    if not config.morphology:
        return ""
    path = shared_root() / CA1_FILE if config.morphology == CA1 else Path(config.morphology)
    text = read_swc_text(path)
    parse_swc(text, str(path))  # a bad file stops the command here (exit 2), not every job
    return text


@dataclass
class Setup:
    """What every job builds first: the cell, its cable, the channels and the stimulus protocols."""

    compartments: Compartments
    cable: Cable
    channels: tuple
    protocols: dict[str, tuple[torch.Tensor, float]]  # name -> (stimulus [T] nA at step midpoints, t_stop)
    swc: str

    @property
    def area_soma(self) -> float:
        return float(self.compartments.area[self.compartments.soma])

    @property
    def area_total(self) -> float:
        return self.compartments.total_area


def step(amplitude: float, start: float, stop: float, t_stop: float, dt: float) -> torch.Tensor:
    """A step current (nA) sampled at step midpoints, as NEURON's IClamp sees it."""
    mid = (torch.arange(int(round(t_stop / dt)), dtype=torch.float64) + 0.5) * dt
    return amplitude * ((mid >= start) & (mid < stop)).double()


def noisy_step(config: ReductionConfig, seed: int) -> torch.Tensor:
    """The training step plus Ornstein-Uhlenbeck noise (sd ``noise_sigma`` nA, tau 2 ms) while it is on."""
    base = step(config.amplitude, config.stim_start, config.stim_stop, config.t_stop, config.dt)
    gen = torch.Generator().manual_seed(seed)
    a = math.exp(-config.dt / NOISE_TAU_MS)
    xi = torch.randn(base.shape[0], generator=gen, dtype=torch.float64)
    ou = torch.empty_like(xi)
    ou[0] = xi[0]
    for k in range(1, len(xi)):
        ou[k] = a * ou[k - 1] + math.sqrt(1 - a * a) * xi[k]
    return base + config.noise_sigma * ou * (base != 0)


def protocols(config: ReductionConfig) -> dict[str, tuple[torch.Tensor, float]]:
    c = config
    out = {"train": (step(c.amplitude, c.stim_start, c.stim_stop, c.t_stop, c.dt), c.t_stop),
           "long": (step(c.amplitude, c.stim_start, c.ood_stop, c.ood_t_stop, c.dt), c.ood_t_stop)}
    for a in c.ood_amplitudes:
        out[f"amp_{a:g}"] = (step(a, c.stim_start, c.stim_stop, c.t_stop, c.dt), c.t_stop)
    out["noise"] = (noisy_step(c, c.noise_seed), c.t_stop)
    for a in c.train_amplitudes:
        out[f"train_{a:g}"] = (step(a, c.stim_start, c.stim_stop, c.t_stop, c.dt), c.t_stop)
    for seed in c.train_noise_seeds:
        out[f"train_noise_{seed}"] = (noisy_step(c, seed), c.t_stop)
    return out


def training_names(config: ReductionConfig) -> list[str]:
    """The protocols the hybrids train on: the paper's step, then any extra steps and noisy steps."""
    return ["train", *(f"train_{a:g}" for a in config.train_amplitudes),
            *(f"train_noise_{seed}" for seed in config.train_noise_seeds)]


def heldout_names(config: ReductionConfig) -> list[str]:
    return ["long", *(f"amp_{a:g}" for a in config.ood_amplitudes), "noise"]


def heldout_summary(row: dict[str, Any], config: ReductionConfig) -> dict[str, float]:
    """The held-out amplitudes' mean and worst RMSE, and ``rmse_heldout``: the mean of the three kinds of
    held-out test (the step held longer, the other amplitudes, the noisy input), each weighing the same."""
    amps = [row[f"rmse_amp_{a:g}"] for a in config.ood_amplitudes]
    out = {"rmse_amplitudes": float(np.mean(amps)) if amps else float("nan"),
           "rmse_amplitudes_max": float(np.max(amps)) if amps else float("nan")}
    kinds = [row["rmse_long"], row["rmse_noise"], *([out["rmse_amplitudes"]] if amps else [])]
    out["rmse_heldout"] = float(np.mean(kinds))
    return out


def setup(config: ReductionConfig, swc: str) -> Setup:
    try:
        morph = parse_swc(swc, config.morphology or "swc") if swc else pyramidal()
    except MorphologyError as e:
        raise ConfigError(str(e), field="morphology") from None
    comp = compartmentalise(morph, "d_lambda" if config.nseg == 0 else config.nseg, ra=config.ra, cm=config.cm)
    channels = pospischil_jaxley().channels
    cable = Cable(comp, channels, config.cm, temperature=config.temperature)
    return Setup(comp, cable, channels, protocols(config), swc)


def ground_truth(s: Setup, config: ReductionConfig, names: list[str]) -> dict[str, np.ndarray]:
    """The full cell's soma voltage for each protocol ``[T+1]``."""
    out = {}
    for name in names:
        stim, _ = s.protocols[name]
        out[name] = s.cable.simulate(stim.unsqueeze(0), config.dt, config.v_init).v[0, :, 0].numpy()
    return out


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    value = float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))
    return value if math.isfinite(value) else float("nan")


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Best wall time of ``repeats`` calls (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _thin(x: np.ndarray) -> list[float]:
    return np.asarray(x, dtype=np.float64)[..., ::RECORD_EVERY].reshape(-1).tolist()


class Reduction:
    name = "reduction"
    code_version = "1"
    config_type = ReductionConfig

    def presets(self) -> dict[str, dict[str, Any]]:
        return {
            "quick": {"morphology": "", "n_latents": [1, 4], "widths": [32], "seeds": [0, 1], "teacher_steps": 150,
                      "closed_steps": [30, 30, 60], "cost_ms": 200.0, "cost_repeats": 2, "cost_batch": 16,
                      "baseline_grid": 21},
            "paper": {"morphology": CA1, "n_latents": [1, 2, 4, 8], "widths": [32, 64], "seeds": [0, 1, 2, 3, 4]},
            # Generalisation: train on steps every 0.05 nA from 0.4 to 1.05 and four noisy steps; hold out
            # every midpoint of that grid, the step held to 90 ms and unseen noise.
            "heldout": {"morphology": CA1, "train_amplitudes": [a for a in GRID_NA if a != 0.65],
                        "ood_amplitudes": [round(a + 0.025, 3) for a in GRID_NA[:-1]],
                        "train_noise_seeds": [1, 2, 5, 6], "n_latents": [8], "widths": [32], "seeds": [0, 1, 2],
                        "teacher_steps": 3000, "closed_steps": [1000, 1000, 4000]},
        }

    def plan(self, config: ReductionConfig) -> list[Job]:
        swc = morphology_text(config)
        jobs = [Job.make(self.name, config, 0, config.seed, {"kind": "reference", "swc": swc}),
                Job.make(self.name, config, 1, config.seed, {"kind": "baselines", "swc": swc})]
        for k, width in enumerate(config.widths):
            jobs.append(Job.make(self.name, config, 2 + k, config.seed,
                                 {"kind": "hybrid", "width": int(width), "swc": swc}))
        jobs.append(Job.make(self.name, config, 2 + len(config.widths), config.seed, {"kind": "cost", "swc": swc}))
        return jobs

    def run(self, job: Job, device: str) -> JobResult:
        config: ReductionConfig = job.config
        s = setup(config, job.payload["swc"])
        kind = job.payload["kind"]
        models: dict[str, SavedModel] = {}
        if kind == "reference":
            rows = run_reference(s, config)
        elif kind == "baselines":
            rows = run_baselines(s, config)
        elif kind == "hybrid":
            rows = run_hybrids(s, config, int(job.payload["width"]), models)
        elif kind == "cost":
            rows = run_costs(s, config)
        else:
            raise ValueError(f"unknown job kind {kind!r}")
        rows.insert(0, "kind", rows.pop("kind"))
        for key in ("morphology", "nseg", "amplitude", "stim_stop", "t_stop", "dt"):
            rows[key] = getattr(config, key) if key != "morphology" else (config.morphology or "generated")
        rows["train_amplitudes"] = ",".join(f"{a:g}" for a in (config.amplitude, *config.train_amplitudes))
        rows["train_noise_traces"] = len(config.train_noise_seeds)
        artifacts: dict[str, bytes] = {}
        if models:
            artifacts, rows["model_file"] = model_artifacts(self.name, job.key, models,
                                                            getattr(self, "code_version", None))
        # The cable and hybrid kernels are C: the job runs on the CPU whatever device it was given.
        return JobResult(rows, metrics=_metrics(rows), artifacts=artifacts, device="cpu")


def _metrics(rows: pd.DataFrame) -> dict[str, float]:
    out: dict[str, float] = {}
    if "rmse_train" in rows and rows["rmse_train"].notna().any():
        out["best_rmse_train"] = float(rows["rmse_train"].min())
    if "rmse_heldout" in rows and rows["rmse_heldout"].notna().any():
        out["best_rmse_heldout"] = float(rows["rmse_heldout"].min())
    return out


# -- reference: the full cell --------------------------------------------------------------------------------------
def run_reference(s: Setup, config: ReductionConfig) -> pd.DataFrame:
    comp = s.compartments
    names = ["train", "long"]
    truth = ground_truth(s, config, names)
    nbrs = [comp.soma] + [j for j in range(comp.n_nodes) if comp.parent[j] == comp.soma]
    if comp.parent[comp.soma] >= 0:
        nbrs.append(int(comp.parent[comp.soma]))
    stim_train = s.protocols["train"][0]
    rec = s.cable.simulate(stim_train.unsqueeze(0), config.dt, config.v_init, record=nbrs).v[0]
    full = torch.zeros(rec.shape[0], comp.n_nodes, dtype=torch.float64)
    full[:, nbrs] = rec
    i_ax = axial_current(comp, full).numpy()
    base = {"kind": "multicompartment", "n_compartments": int((comp.area > 0).sum()), "n_nodes": comp.n_nodes,
            "area_soma_um2": s.area_soma, "area_total_um2": s.area_total, "rmse_train": 0.0,
            "v_train": _thin(truth["train"]), "v_long": _thin(truth["long"]), "i_axial": _thin(i_ax[:-1]),
            "node_xyz": comp.xyz.reshape(-1).tolist(), "node_parent": comp.parent.tolist(),
            "node_region": list(comp.region)}
    rows = [{**base, "simulator": "ours"}]
    rows.append({**_neuron_row(s, config, truth["train"]), "kind": "multicompartment", "simulator": "neuron",
                 "n_compartments": base["n_compartments"]})
    return pd.DataFrame(rows)


def _neuron_row(s: Setup, config: ReductionConfig, ours: np.ndarray) -> dict[str, Any]:
    """NEURON on the same SWC: mean |V_neuron - V_ours| on the training protocol."""
    from suite.sim.neuron_cable import build_cell, neuron_available

    if not config.neuron:
        return {"status": "ok", "error": "skipped (neuron=false)"}
    if not neuron_available():
        return {"status": "ok", "error": "skipped: NEURON or nrnivmodl not installed"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cell.swc"
        path.write_text(s.swc or pyramidal().to_swc())
        cell = build_cell(path, s.channels, ra=config.ra, cm=config.cm,
                          nseg="d_lambda" if config.nseg == 0 else config.nseg)
        dur = config.stim_stop - config.stim_start
        v, _ = cell.run(config.amplitude, config.stim_start, dur, config.t_stop, config.dt, config.v_init,
                        config.temperature)
        diff = np.abs(v[: len(ours)] - ours)
        cell.close()
    return {"neuron_mean_abs_diff_mv": float(diff.mean()), "neuron_max_abs_diff_mv": float(diff.max()),
            "v_neuron_train": _thin(v[: len(ours)])}


# -- baselines: the soma alone -------------------------------------------------------------------------------------
def soma_cable(s: Setup, config: ReductionConfig, cm_factor: float = 1.0) -> Cable:
    """The soma section alone, with its channels, as a one-compartment cable (the compiled kernel runs it)."""
    comp = compartmentalise(s.compartments.sections[:1], 1, ra=config.ra)
    return Cable(comp, s.channels, cm_factor * config.cm, temperature=config.temperature)


def _soma_sims(s: Setup, config: ReductionConfig, stim: torch.Tensor, area_um2: torch.Tensor,
               cm_factor: float) -> np.ndarray:
    """The soma alone as if its area were ``area_um2`` ``[N]`` (stimulus density I / A): ``[N, T+1]`` mV."""
    cells = stim.unsqueeze(0) * (s.area_soma / area_um2).unsqueeze(1)
    return soma_cable(s, config, cm_factor).simulate(cells, config.dt, config.v_init).v[:, :, 0].numpy()


def _grid_fit(s: Setup, config: ReductionConfig, truth: np.ndarray, fit_c: bool) -> tuple[float, float]:
    """Area (and capacitance) minimising the training RMSE: a log grid, then a finer one around the best."""
    stim = s.protocols["train"][0]
    lo, hi = math.log(s.area_soma * 0.5), math.log(s.area_total * 1.5)
    c_lo, c_hi = math.log(0.3), math.log(5.0)
    n = config.baseline_grid
    best, best_err = (math.exp(lo), 1.0), float("inf")
    for _ in range(2):
        areas = torch.linspace(lo, hi, n, dtype=torch.float64).exp()
        cms = torch.linspace(c_lo, c_hi, n, dtype=torch.float64).exp().tolist() if fit_c else [1.0]
        for c in cms:
            v = _soma_sims(s, config, stim, areas, c)
            err = np.sqrt(np.nanmean((v - truth) ** 2, axis=1))
            err = np.where(np.isfinite(err), err, np.inf)
            k = int(np.argmin(err))
            if err[k] < best_err:
                best, best_err = (float(areas[k]), float(c)), float(err[k])
        da, dc = (hi - lo) / (n - 1), (c_hi - c_lo) / (n - 1)
        lo, hi = math.log(best[0]) - 2 * da, math.log(best[0]) + 2 * da
        if fit_c:
            c_lo, c_hi = math.log(best[1]) - 2 * dc, math.log(best[1]) + 2 * dc
    return best


def run_baselines(s: Setup, config: ReductionConfig) -> pd.DataFrame:
    names = ["train", *heldout_names(config)]
    truth = ground_truth(s, config, names)
    start = time.perf_counter()
    fits = {"soma": (s.area_total, 1.0),  # the soma with the stimulus scaled by A_soma / A_total
            "soma_area": _grid_fit(s, config, truth["train"], fit_c=False)}
    t_area = time.perf_counter() - start
    fits["soma_area_c"] = _grid_fit(s, config, truth["train"], fit_c=True)
    t_both = time.perf_counter() - start - t_area
    rows = []
    for kind, (area, c) in fits.items():
        row: dict[str, Any] = {"kind": kind, "area_um2": area, "cm_factor": c,
                               "train_time_s": {"soma": 0.0, "soma_area": t_area, "soma_area_c": t_both}[kind]}
        # The soma has its own area: a fitted area A means the stimulus density of I / A on it.
        for name in names:
            stim = s.protocols[name][0]
            v = _soma_sims(s, config, stim, torch.tensor([area], dtype=torch.float64), c)[0]
            row[f"rmse_{name}"] = rmse(v, truth[name])
            if name in ("train", "long"):
                row[f"v_{name}"] = _thin(v)
        row.update(heldout_summary(row, config))
        row["converged"] = bool(row["rmse_train"] < config.converged_mv)
        row["status"] = "ok" if math.isfinite(row["rmse_train"]) else "diverged"
        rows.append(row)
    return pd.DataFrame(rows)


# -- hybrids ------------------------------------------------------------------------------------------------------
def run_hybrids(s: Setup, config: ReductionConfig, width: int,
                saved: dict[str, SavedModel] | None = None) -> pd.DataFrame:
    """Train every (N_z, seed) hybrid of ``width`` as one ensemble; one row each (and each one's saved
    model into ``saved``, by file name, when given)."""
    train_names = training_names(config)
    names = [*train_names, *heldout_names(config)]
    truth = ground_truth(s, config, names)
    models = [(nz, seed) for nz in config.n_latents for seed in config.seeds]
    axial = AxialODE([nz for nz, _ in models], width=width, depth=config.depth, activation=config.activation,
                     seeds=[config.seed * 1_000_003 + seed * 1009 + nz * 31 + width for nz, seed in models],
                     dtype=torch.float64)
    hybrid = ReducedSoma(s.channels, s.area_soma, axial, s.area_soma / s.area_total, config.cm, config.temperature)
    init = run_fused(hybrid, s.protocols["train"][0], config.dt, v0=config.v_init).v[:, 0]
    stim = torch.stack([s.protocols[n][0] for n in train_names])
    target = torch.stack([torch.from_numpy(truth[n]) for n in train_names])
    result = fit_reduced(hybrid, stim, target, config.dt, config.fit_config())
    wall = result.teacher_time_s + result.closed_time_s
    runs = {n: run_fused(hybrid, s.protocols[n][0], config.dt, v0=config.v_init) for n in names}
    rows = []
    for i, (nz, seed) in enumerate(models):
        row: dict[str, Any] = {"kind": "hybrid", "n_latents": nz, "width": width, "depth": config.depth,
                               "activation": config.activation, "seed": seed,
                               "stim_scale": float(hybrid.stim_scale[i].detach()),
                               "teacher_loss": float(result.teacher_loss[i]),
                               "closed_loss": float(result.closed_loss[i]),
                               "diverged_at": int(result.diverged_at[i]),
                               "train_time_s": wall / len(models), "ensemble_train_time_s": wall,
                               "ensemble_size": len(models)}
        for n in names:
            row[f"rmse_{n}"] = rmse(runs[n].v[i, 0], truth[n])
        row.update(heldout_summary(row, config))
        row["converged"] = bool(row["rmse_train"] < config.converged_mv)
        row["status"] = "ok" if math.isfinite(row["rmse_train"]) else "diverged"
        row["error"] = "" if row["status"] == "ok" else "non-finite voltage on the training trace"
        row["v_init_train"] = _thin(init[i])
        row["v_train"] = _thin(runs["train"].v[i, 0])
        row["i_axial"] = _thin(runs["train"].i_axial[i, 0])
        row["z_train"] = _thin(runs["train"].z[i, 0, :, :nz].T)  # latent-major: [nz, T/4]
        row["v_long"] = _thin(runs["long"].v[i, 0])
        rows.append(row)
        if saved is not None:
            saved[f"hybrid-w{width}-nz{nz}-seed{seed}"] = _saved_hybrid(s, config, hybrid, i, row)
    return pd.DataFrame(rows)


_HYBRID_METRICS = ("rmse_train", "rmse_long", "rmse_noise", "rmse_amplitudes", "rmse_heldout", "teacher_loss",
                   "closed_loss")


def _saved_hybrid(s: Setup, config: ReductionConfig, hybrid: ReducedSoma, i: int, row: dict[str, Any]) -> SavedModel:
    """Hybrid ``i`` of the ensemble: its axial network (at the ensemble's latent slots), stimulus scale and soma."""
    ax = hybrid.axial
    tensors = {f"axial.{k}": v[i:i + 1].detach().clone().contiguous() for k, v in ax.state_dict().items()}
    tensors["stim_scale"] = hybrid.stim_scale[i:i + 1].detach().clone()
    spec = {
        "kind": "reduced_hybrid",
        "architecture": {"type": "axial_ode", "width": ax.width, "depth": ax.depth, "activation": ax.activation,
                         "n_latents": ax.n_latents[i], "z_max": ax.z_max, "layer_norm_eps": LAYER_NORM_EPS,
                         "inputs": "[u(V), z * latent_mask]",
                         "outputs": {"i_axial_nA": f"{AXIAL_SCALE_NA} * o[0]",
                                     "dz_dt_per_ms": f"{LATENT_RATE_PER_MS} * o[1:] * latent_mask"},
                         "step": "V linearly implicit in the soma's ionic conductance, I_ax explicit; gates "
                                 "exponential Euler at the new V; z explicit Euler"},
        "input_normalisation": INPUT_NORMALISATION,
        "units": {"v": "mV", "t": "ms", "i_axial": "nA", "stimulus": "nA (the full cell's)", "area": "um2",
                  "capacitance": "uF/cm2", "temperature": "C"},
        "plugs_into": {"cell": f"soma of {config.morphology or 'generated'}", "channels": "pospischil_jaxley",
                       "area_um2": s.area_soma, "capacitance": config.cm, "temperature": config.temperature,
                       "v_init": config.v_init},
        "fixed_parameters": {"gbar": {c.id: c.gbar for c in s.channels}, "e_rev": {c.id: c.e_rev for c in s.channels},
                             "area_um2": s.area_soma, "capacitance": config.cm},
        "simulation": {"dt": config.dt, "record_every": RECORD_EVERY},
        "training": {"n_latents": int(row["n_latents"]), "width": int(row["width"]), "seed": int(row["seed"]),
                     "stimulus": {"kind": "step", "amplitude": config.amplitude, "t_on": config.stim_start,
                                  "t_off": config.stim_stop, "t_stop": config.t_stop},
                     "current": {"unit": "nA"}},
        "reference": {"config": to_dict(config), "swc": s.swc},
        "status": row["status"],
        "metrics": {k: float(row[k]) for k in _HYBRID_METRICS if k in row},
    }
    return SavedModel(spec, tensors)


# -- cost: every model side by side ------------------------------------------------------------------------------
def run_costs(s: Setup, config: ReductionConfig) -> pd.DataFrame:
    """Seconds of compute per simulated second: one trace (one thread) and per trace of a batch (all threads)."""
    cost_stim = step(config.amplitude, config.stim_start, config.cost_ms, config.cost_ms, config.dt)
    batch = cost_stim.unsqueeze(0).expand(config.cost_batch, -1).contiguous()
    per_s = 1000.0 / config.cost_ms
    reps = config.cost_repeats
    rows: list[dict[str, Any]] = []
    backend = "fused" if native.load() is not None else "torch"  # our simulators' "auto": what ran, in the rows

    def add(model: str, one: float, many: float, **extra: Any) -> None:
        rows.append({"kind": "cost", "model": model, "cost_1s_s": one * per_s,
                     "cost_1s_batch_per_trace_s": many / config.cost_batch * per_s, "cost_batch": config.cost_batch,
                     "threads": torch.get_num_threads(),
                     "backend": backend if extra["simulator"] == "ours" else extra["simulator"], **extra})

    cable = s.cable
    add("multicompartment", timed(lambda: cable.simulate(cost_stim.unsqueeze(0), config.dt, config.v_init,
                                                         backend="auto", n_threads=1), reps),
        timed(lambda: cable.simulate(batch, config.dt, config.v_init, backend="auto"), 1), simulator="ours")
    neuron = _neuron_cost(s, config)
    if neuron is not None:  # NEURON runs traces one after another: the per-trace cost is the single-trace one
        add("multicompartment", neuron, neuron * config.cost_batch, simulator="neuron")
    soma = soma_cable(s, config)
    scale = s.area_soma / s.area_total
    add("soma", timed(lambda: soma.simulate(cost_stim.unsqueeze(0) * scale, config.dt, config.v_init,
                                            backend="auto", n_threads=1), reps),
        timed(lambda: soma.simulate(batch * scale, config.dt, config.v_init, backend="auto"), 1), simulator="ours")
    for width in config.widths:
        for nz in sorted(set(config.n_latents)):
            probe = ReducedSoma(s.channels, s.area_soma, AxialODE([nz], width, config.depth, config.activation,
                                                                  dtype=torch.float64), scale, config.cm,
                                config.temperature)
            add("hybrid", timed(lambda p=probe: run_fused(p, cost_stim, config.dt, n_threads=1), reps),
                timed(lambda p=probe: run_fused(p, batch, config.dt), 1), simulator="ours", n_latents=nz,
                width=width)
    return pd.DataFrame(rows)


def _neuron_cost(s: Setup, config: ReductionConfig) -> float | None:
    """NEURON's best wall time for ``cost_ms`` of the full cell (fixed step, h.continuerun), or None without it."""
    from suite.sim.neuron_cable import build_cell, neuron_available

    if not (config.neuron and neuron_available()):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cell.swc"
        path.write_text(s.swc or pyramidal().to_swc())
        cell = build_cell(path, s.channels, ra=config.ra, cm=config.cm,
                          nseg="d_lambda" if config.nseg == 0 else config.nseg)
        walls = [cell.run(config.amplitude, config.stim_start, config.cost_ms, config.cost_ms, config.dt,
                          config.v_init, config.temperature, record=False)[1]
                 for _ in range(max(1, config.cost_repeats) + 1)]
        cell.close()
    return min(walls[1:])
