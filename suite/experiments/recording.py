"""Recording (issue 15): single compartments fitted to real current-clamp sweeps, scored on held-out ones.

Three kinds (``suite.recordings.cell``): the expert Pospischil cell, the same with a neural Kd gate,
and the expert plus a learned current with latent states; each trained by gradient through the
simulator on ``train_sweeps`` with the same budget (``suite.recordings.fit``), then run free over
every sweep and scored (``suite.recordings.scores``): Gamma (+-4 ms), spike counts, eFEL features
and subthreshold RMSE. One job per (kind, seed); one row per (kind, seed, sweep), ``role`` train or
test. Jobs read the recording files themselves: a job's key hashes the files' bytes, so new data is
a new key (a cluster node needs the files at the same path).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from channelzoo.errors import InputError
from suite.config import ConfigError, require, require_choice
from suite.experiments.base import Job, JobResult
from suite.recordings import READERS, Units, read_recording, recording_files
from suite.recordings.cell import KINDS, RecordingCell
from suite.recordings.fit import FitSettings, fit_cell, predict
from suite.recordings.scores import score_sweep

CURVE_V = np.arange(-100.0, 40.01, 2.0)


@dataclass(frozen=True)
class RecordingConfig:
    """Defaults: the B6 cell of BluePyEfe (units from its waves, 14 mV junction potential)."""

    recording: tuple[str, ...] = ("../shared/data/recordings/bluepyefe_B6",)  # files and/or folders
    cell: str | None = None  # which cell, when the files hold several
    current_unit: str | None = None  # where a format does not carry units (CSV without brackets)
    voltage_unit: str | None = None
    time_unit: str | None = None
    dt_ms: float | None = None  # the sampling step, where a format does not carry it
    junction_mv: float = 14.0  # liquid junction potential, subtracted from the recorded voltage
    train_sweeps: tuple[int, ...] = (181, 183, 185)
    test_sweeps: tuple[int, ...] = (182, 184)  # empty: every sweep not trained on
    kinds: tuple[str, ...] = KINDS
    seeds: int = 3
    iterations: int = 300
    windows: int = 64
    window_ms: float = 3.0  # short shots: longer ones (15-40 ms) let a misplaced spike drive the fit astray
    dt: float = 0.125  # ms, the models' step in training and scoring
    lr_log: float = 0.02
    lr_mv: float = 0.5
    lr_net: float = 1e-3
    refresh: int = 25
    width: int = 32
    latents: int = 2
    spike_threshold_mv: float = -20.0
    coincidence_window_ms: float = 4.0
    threads: int = 1

    def __post_init__(self) -> None:
        require(self, "at least 1", "seeds", "iterations", "windows", "refresh", "width", "latents", "threads")
        require(self, "positive", "window_ms", "dt", "lr_log", "lr_mv", "lr_net", "coincidence_window_ms", "dt_ms")
        require(self, "finite", "junction_mv", "spike_threshold_mv")
        require_choice(self, "kinds", KINDS)
        if not self.recording:
            raise ConfigError("name at least one recording file or folder", field="recording")
        try:  # files that are missing or of no known format stop the command at load, before anything is written
            recording_files(self.recording)
        except InputError as e:
            raise ConfigError(str(e), field="recording") from None
        if not self.train_sweeps:
            raise ConfigError("name at least one sweep to train on", field="train_sweeps")
        both = sorted(set(self.train_sweeps) & set(self.test_sweeps))
        if both:
            raise ConfigError(f"sweeps {both} are both trained and tested on", field="test_sweeps")

    def units(self) -> Units:
        return Units(self.current_unit, self.voltage_unit, self.time_unit, self.dt_ms, self.junction_mv)

    def settings(self) -> FitSettings:
        return FitSettings(self.iterations, self.windows, self.window_ms, self.dt, self.lr_log, self.lr_mv,
                           self.lr_net, self.refresh)


def load_sweeps(config: RecordingConfig) -> tuple[list, list]:
    """The (train, test) sweeps of the config's cell; an InputError (exit 2) names what is missing."""
    sweeps = read_recording(config.recording, config.units())
    cells = sorted({s.cell for s in sweeps})
    cell = config.cell or (cells[0] if len(cells) == 1 else None)
    if cell is None or cell not in cells:
        raise ConfigError(f"{'choose a cell' if cell is None else f'no cell {cell!r}'}; the files hold "
                          f"{', '.join(cells)}", field="cell")
    sweeps = [s for s in sweeps if s.cell == cell]
    numbers = {s.sweep for s in sweeps}
    for name in ("train_sweeps", "test_sweeps"):
        missing = sorted(set(getattr(config, name)) - numbers)
        if missing:
            raise InputError(f"no sweep(s) {missing} of cell {cell!r}; have {sorted(numbers)}",
                             file=", ".join(config.recording), field=name)
    train = [s for s in sweeps if s.sweep in config.train_sweeps]
    test = [s for s in sweeps if (s.sweep in config.test_sweeps if config.test_sweeps else s.sweep not in
                                  config.train_sweeps)]
    return train, test


def step_amplitude(t: np.ndarray, i: np.ndarray, start: float, end: float) -> float:
    """The step's current over its baseline (nA): median during [start, end) minus median before."""
    during = i[(t >= start) & (t < end)]
    before = i[t < start]
    return float(np.median(during) - (np.median(before) if len(before) else 0.0))


def files_digest(paths: tuple[str, ...]) -> str:
    """sha256 of the recording files' names and bytes (folders: their readable files)."""
    h = hashlib.sha256()
    for p in map(Path, paths):
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in READERS) if p.is_dir() else [p]
        for f in files:
            h.update(f.name.encode())
            h.update(f.read_bytes() if f.is_file() else b"")
    return h.hexdigest()[:16]


class Recording:
    """Plan one job per (kind, seed); run fits one model and scores it on every sweep of the cell."""

    name = "recording"
    config_type = RecordingConfig

    @staticmethod
    def presets() -> dict[str, dict[str, object]]:
        return {
            "quick": {"seeds": 1, "iterations": 60, "dt": 0.25},
            "full": {"seeds": 3, "iterations": 300},
        }

    def plan(self, config: RecordingConfig) -> list[Job]:
        load_sweeps(config)  # bad files and missing sweeps stop the command before any job runs
        digest = files_digest(config.recording)
        return [Job.make(self.name, config, k, seed, {"kind": kind, "data": digest})
                for k, (kind, seed) in enumerate((kind, s) for kind in config.kinds for s in range(config.seeds))]

    def run(self, job: Job, device: str) -> JobResult:
        config: RecordingConfig = job.config
        threads = torch.get_num_threads()
        torch.set_num_threads(config.threads)
        try:
            return JobResult(run_one(config, job.payload["kind"], job.seed), device="cpu")
        finally:
            torch.set_num_threads(threads)


def run_one(config: RecordingConfig, kind: str, seed: int) -> pd.DataFrame:
    """Fit one model and score it on every sweep (train and test): one row per sweep."""
    train, test = load_sweeps(config)
    torch.manual_seed(seed)
    start = time.perf_counter()
    cell = RecordingCell(kind, seed=seed, width=config.width, latents=config.latents)
    result = fit_cell(cell, train, config.settings(), seed)
    fit_wall = time.perf_counter() - start
    sweeps = train + test
    t0 = time.perf_counter()
    v_model = predict(cell, sweeps, config.dt)
    predict_wall = time.perf_counter() - t0
    params = cell.physical()
    with torch.no_grad():
        inf, tau = cell.gate_rates(torch.tensor(CURVE_V, dtype=torch.float64))
        inf_e, tau_e = cell.expert_rates(torch.tensor(CURVE_V, dtype=torch.float64))
    rows = []
    for s, v in zip(sweeps, v_model, strict=True):
        k = min(len(s.t), len(v))
        scores = score_sweep(s.t[:k], s.i[:k], s.v_corrected[:k], v[:k], config.spike_threshold_mv,
                             config.coincidence_window_ms)
        finite = bool(np.all(np.isfinite(v)))
        rows.append({
            "kind": kind, "seed": seed, "cell": s.cell, "sweep": s.sweep,
            "role": "train" if s.sweep in config.train_sweeps else "test",
            "step_amplitude_nA": step_amplitude(s.t, s.i, scores["stim_start_ms"], scores["stim_end_ms"]),
            **scores,
            "fit_time_s": fit_wall, "predict_time_s": predict_wall, "iterations": config.iterations,
            "final_loss": float(np.nanmean(result.losses[-10:])) if result.losses else float("nan"),
            "losses": np.asarray(result.losses, dtype=float),
            **{f"param_{name}": value for name, value in params.items()},
            "t": s.t[:k], "v_recorded": s.v_corrected[:k], "v_model": v[:k],
            "curve_v": CURVE_V, "gate_inf": inf[2].numpy(), "gate_tau": tau[2].numpy(),
            "expert_inf": inf_e[2].numpy(), "expert_tau": tau_e[2].numpy(),
            "status": "ok" if finite else "diverged", "error": "" if finite else "non-finite model voltage",
        })
    return pd.DataFrame(rows)
