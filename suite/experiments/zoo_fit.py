"""Zoo fit (PAPER.md, experiment 1): neural and expert gates fit to every gate of a channel zoo.

A job is one model kind on one shard of gates (times seeds), trained in one batched loop. It
carries its gates' target curves, so it runs anywhere without the catalogue. For an ICG zoo, an
extra model ``icg_omni`` evaluates ICG's own published supermodel fits (best per gate), the
paper's "omni" baseline, without training.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from channelzoo.catalogue import Zoo
from channelzoo.gates import Gate, InfTau, Rate, evaluate_gates
from channelzoo.grid import ICG_GRID_MV
from suite.config import ConfigError, require, require_choice
from suite.experiments.base import Job, JobResult
from suite.gates import MODELS, make_model
from suite.gates.neural import ACTIVATIONS
from suite.models.files import SavedModel, model_artifacts
from suite.models.neural_gate import INPUT_NORMALISATION
from suite.train.curve_fit import LOSSES, CurveFitConfig, curve_metrics, fit_curves, repeat_for_seeds

ICG_OMNI = "icg_omni"
MAX_WEIGHTS_BYTES = 8 * 2**20  # a job's trained ensemble is saved as a model file up to this size
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class ZooFitConfig:
    zoo: str = "generated"  # generated | icg | path to a catalogue .parquet
    zoo_path: str = ""  # for zoo=icg: a clone of the ICG channel repositories
    zoo_n: int = 2400  # for zoo=generated
    zoo_seed: int = 0
    classes: tuple[str, ...] = ()  # empty: every class
    max_gates: int = 0  # 0: every gate; else this many, spread evenly over the zoo
    models: tuple[str, ...] = ("node", "sm1", "sm2", "sm3", "sm4", "sm5", "boltzmann_bell")
    width: int = 32
    depth: int = 2
    activation: str = "tanh"
    steps_per_stage: int = 10_000
    stages: int = 2
    lr: float = 1e-3
    loss: str = "paper"
    seeds: int = 1  # restarts per gate, trained in the same batch
    expert_init_noise: float = 0.05  # with seeds > 1: noise on the experts' data-driven start, so restarts differ
    gates_per_job: int = 1024
    dtype: str = "float32"
    compile: bool = False  # torch.compile the torch path's loss step
    kernel: bool | None = None  # the fused C kernel for neural gates: None where it can run, False: torch
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODELS and m != ICG_OMNI]
        if unknown:
            raise ConfigError(f"unknown model {unknown[0]!r}; known: {', '.join([*MODELS, ICG_OMNI])}",
                              field="models")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {list(DTYPES)}", field="dtype")
        require(self, "at least 1", "seeds", "gates_per_job", "steps_per_stage", "stages", "zoo_n", "width", "depth")
        require(self, "positive", "lr")
        require(self, "non-negative", "max_gates", "expert_init_noise")
        require_choice(self, "activation", ACTIVATIONS)
        require_choice(self, "loss", LOSSES)
        if self.zoo == "icg" and not self.zoo_path:
            raise ConfigError("zoo=icg needs zoo_path, a clone of the ICG channel repositories", field="zoo_path")


def load_gate_rows(config: ZooFitConfig) -> pd.DataFrame:
    """The catalogue rows the sweep fits: the chosen zoo, classes and subset, in catalogue order.

    An ICG zoo says on stderr how many channels it imported and which folders it left out, and why.
    """
    if config.zoo == "generated":
        from channelzoo.generated import generate

        zoo = Zoo.from_channels(generate(config.zoo_n, config.zoo_seed))
    elif config.zoo == "icg":
        from channelzoo.icg import import_icg

        imported = import_icg(config.zoo_path)
        left_out = imported.report()
        if not imported.channels:
            raise ConfigError(f"no usable ICG channel in {config.zoo_path}\n{left_out}", field="zoo_path")
        # Said as `zoo build` says it: the folders the import left out would otherwise vanish silently.
        print(f"[zoo-fit] ICG {config.zoo_path}: {len(imported.channels)} channels" + (f"; left out:\n{left_out}"
              if left_out else ""), file=sys.stderr, flush=True)
        zoo = Zoo.from_channels(imported.channels)
    elif config.zoo.endswith(".parquet"):
        zoo = Zoo.load(config.zoo)
    else:
        raise ConfigError(f"expected generated, icg or a catalogue .parquet, got {config.zoo!r}", field="zoo")
    if config.classes:
        zoo = zoo.filter(ion_class=list(config.classes))
    rows = zoo.rows
    if config.max_gates and config.max_gates < len(rows):
        rows = rows.iloc[np.unique(np.linspace(0, len(rows) - 1, config.max_gates).round().astype(int))]
    if rows.empty:
        raise ConfigError("no gates left to fit", field="classes")
    return rows.reset_index(drop=True)


def _saved_ensemble(config: ZooFitConfig, kind: str, arch: dict[str, Any], model: torch.nn.Module,
                    rows: pd.DataFrame) -> SavedModel | None:
    """The trained ensemble as a model file (member r of every tensor is row r of the job's rows), if small."""
    state = {k: t.detach().cpu() for k, t in model.state_dict().items()}
    if sum(t.numel() * t.element_size() for t in state.values()) > MAX_WEIGHTS_BYTES:
        return None
    ok = rows["status"] == "ok"
    spec = {
        "kind": "gate_ensemble",
        "architecture": {"type": kind, **arch, "size": len(rows),
                         "outputs": {"x_inf": "per gate, on V (mV)", "tau_ms": "per gate, on V (mV)"}},
        "input_normalisation": INPUT_NORMALISATION if kind == "node" else {"v": "mV, unscaled"},
        "units": {"v": "mV", "tau": "ms"},
        "plugs_into": {"zoo": config.zoo, "grid_mv": list(ICG_GRID_MV)},
        "members": {"channel_id": rows["channel_id"].tolist(), "gate": rows["gate"].tolist(),
                    "seed": [int(x) for x in rows["seed"]], "status": rows["status"].tolist()},
        "training": {"steps_per_stage": config.steps_per_stage, "stages": config.stages, "lr": config.lr,
                     "loss": config.loss, "seeds": config.seeds, "dtype": config.dtype},
        "metrics": {"gates": len(rows), "frac_ok": float(ok.mean()),
                    **{f"median_{k}": float(rows[k].median()) for k in ("nmse_inf", "nmse_tau") if k in rows}},
    }
    return SavedModel(spec, state)


def _icg_best(definition: str) -> dict[str, Any] | None:
    """ICG's published best supermodel of a gate (lowest err1 x_inf + err1 tau), or None."""
    omni = json.loads(definition).get("metadata", {}).get("omni", {})
    scored = [(v["err1_ss"] + v["err1_tau"], k, v) for k, v in omni.items()
              if v.get("err1_ss") is not None and v.get("err1_tau") is not None]
    if not scored:
        return None
    _, name, best = min(scored, key=lambda s: (s[0], s[1]))
    return {"sm": name, "inf_form": best["inf_form"], "tau_form": best["tau_form"],
            "params_inf": best["params_inf"], "params_tau": best["params_tau"],
            "err1_inf": best["err1_ss"], "err1_tau": best["err1_tau"]}


class ZooFit:
    name = "zoo-fit"
    code_version = "1"
    config_type = ZooFitConfig

    def presets(self) -> dict[str, dict[str, Any]]:
        icg = Path(__file__).resolve().parents[3] / "shared" / "data" / "icg"
        return {
            "quick": {"zoo": "generated", "max_gates": 128, "steps_per_stage": 1000, "stages": 2, "seeds": 2,
                      "gates_per_job": 128},
            # compile: the expert fits run 2.6x faster through torch.compile (NODE takes the gate kernel on a CPU)
            "paper": {"zoo": "icg", "zoo_path": str(icg), "seeds": 5, "gates_per_job": 4096, "compile": True},
        }

    def plan(self, config: ZooFitConfig) -> list[Job]:
        rows = load_gate_rows(config)
        icg = rows["source"].eq("icg").any()
        models = [m for m in config.models if m != ICG_OMNI] + ([ICG_OMNI] if icg or ICG_OMNI in config.models
                                                                 else [])
        shards = [rows.iloc[i:i + config.gates_per_job] for i in range(0, len(rows), config.gates_per_job)]
        jobs = []
        for m, model in enumerate(models):
            for s, shard in enumerate(shards):
                payload = {
                    "model": model,
                    "channel_id": shard["channel_id"].tolist(), "gate": shard["gate"].tolist(),
                    "class": shard["class"].tolist(), "source": shard["source"].tolist(),
                    "power": shard["power"].astype(int).tolist(),
                    "x_inf": [list(x) for x in shard["x_inf"]], "tau": [list(t) for t in shard["tau"]],
                    "icg_best": [_icg_best(d) for d in shard["definition"]] if icg else [None] * len(shard),
                }
                jobs.append(Job.make(self.name, config, m * len(shards) + s, config.seed, payload))
        return jobs

    def run(self, job: Job, device: str) -> JobResult:
        config: ZooFitConfig = job.config
        p = job.payload
        if p["model"] == ICG_OMNI:
            return self._icg_omni(job)
        dtype = DTYPES[config.dtype]
        v = torch.tensor(ICG_GRID_MV, dtype=dtype, device=device)
        inf, tau, gate_index, seed_index = repeat_for_seeds(
            torch.tensor(p["x_inf"], dtype=dtype, device=device), torch.tensor(p["tau"], dtype=dtype, device=device),
            config.seeds)
        if p["model"] == "node":
            arch = {"width": config.width, "depth": config.depth, "activation": config.activation}
        else:
            arch = {"init_noise": config.expert_init_noise if config.seeds > 1 else 0.0}
        model = make_model(p["model"], inf.shape[0], inf, tau, v, device=device, dtype=dtype,
                           seed=job.seed * 1_000_003 + job.shard, **arch)
        fit = fit_curves(model, v, inf, tau, CurveFitConfig(
            steps_per_stage=config.steps_per_stage, stages=config.stages, lr=config.lr, loss=config.loss,
            compile=config.compile, kernel=config.kernel))
        rows = self._rows(p, gate_index.cpu().numpy(), seed_index.cpu().numpy(), fit.inf_fit, fit.tau_fit,
                          torch.tensor(p["x_inf"], dtype=torch.float64)[gate_index.cpu()],
                          torch.tensor(p["tau"], dtype=torch.float64)[gate_index.cpu()])
        rows["status"] = fit.status
        rows["final_loss"] = fit.loss.numpy()
        rows["steps_to_fit"] = fit.steps_to_err1.numpy()
        rows["fit_wall_time_s"] = fit.wall_s
        rows["compiled"] = fit.compiled
        rows["backend"] = fit.backend
        for key in ("width", "depth", "activation", "steps_per_stage", "stages", "lr", "loss", "dtype", "zoo"):
            rows[key] = getattr(config, key)
        gate_steps = inf.shape[0] * fit.steps
        saved = _saved_ensemble(config, p["model"], arch, model, rows)
        artifacts: dict[str, bytes] = {}
        if saved is not None:
            artifacts, files = model_artifacts(self.name, job.key, {f"ensemble-{p['model']}": saved},
                                               getattr(self, "code_version", None))
            rows["model_file"], rows["model_member"] = files[0], np.arange(len(rows))
        return JobResult(rows, metrics={"gates": float(inf.shape[0]), "gate_steps_per_s": gate_steps / fit.wall_s,
                                        "frac_ok": float((rows["status"] == "ok").mean())},
                         artifacts=artifacts)

    def _icg_omni(self, job: Job) -> JobResult:
        """ICG's own best supermodel per gate, evaluated on the grid in float64 (no training)."""
        start = time.perf_counter()
        p = job.payload
        have = [i for i, b in enumerate(p["icg_best"]) if b is not None]
        gates = [Gate("x", 1, InfTau(Rate.of(b["inf_form"], b["params_inf"]), Rate.of(b["tau_form"], b["params_tau"])))
                 for b in (p["icg_best"][i] for i in have)]
        v = torch.tensor(ICG_GRID_MV, dtype=torch.float64)
        idx = np.asarray(have, dtype=int)
        inf, tau = evaluate_gates(gates, v) if gates else (torch.empty(0, len(v)), torch.empty(0, len(v)))
        rows = self._rows(p, idx, np.zeros_like(idx), inf, tau, torch.tensor(p["x_inf"], dtype=torch.float64)[idx],
                          torch.tensor(p["tau"], dtype=torch.float64)[idx])
        rows["status"] = "ok"
        rows["omni_of"] = [p["icg_best"][i]["sm"].lower() for i in have]
        rows["fit_wall_time_s"] = time.perf_counter() - start
        return JobResult(rows, metrics={"gates": float(len(have))})

    @staticmethod
    def _rows(p: dict[str, Any], gate_index: np.ndarray, seed_index: np.ndarray, inf: torch.Tensor,
              tau: torch.Tensor, inf_target: torch.Tensor, tau_target: torch.Tensor) -> pd.DataFrame:
        """One row per (gate, seed): identifiers, metrics against the target, curves on the grid."""
        inf64, tau64 = inf.detach().double().cpu(), tau.detach().double().cpu()
        metrics = {k: v.numpy() for k, v in curve_metrics(inf64, tau64, inf_target, tau_target).items()}
        scale_inf = np.maximum(inf_target.std(-1, correction=0).numpy(), 1.0) ** 2
        scale_tau = np.maximum(tau_target.std(-1, correction=0).numpy(), 1.0) ** 2
        g = gate_index
        icg = [p["icg_best"][i] for i in g]
        return pd.DataFrame({
            "channel_id": np.asarray(p["channel_id"], dtype=object)[g], "gate": np.asarray(p["gate"], dtype=object)[g],
            "class": np.asarray(p["class"], dtype=object)[g], "source": np.asarray(p["source"], dtype=object)[g],
            "power": np.asarray(p["power"])[g], "model": p["model"], "seed": seed_index,
            **metrics,
            "nmse_inf": metrics["mse_inf"] / scale_inf, "nmse_tau": metrics["mse_tau"] / scale_tau,
            "icg_omni_sm": [b["sm"] if b else None for b in icg],
            "icg_omni_err1_inf": [b["err1_inf"] if b else np.nan for b in icg],
            "icg_omni_err1_tau": [b["err1_tau"] if b else np.nan for b in icg],
            "fit_inf": list(inf64.numpy()), "fit_tau": list(tau64.numpy()),
            "target_inf": list(inf_target.numpy()), "target_tau": list(tau_target.numpy()),
        })
