"""What is stored under ``RESULTS/models/``: one row per model file, its provenance and metrics (a DataFrame, so
it can be printed, filtered or registered as a DuckDB view like the result tables)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from suite.models.files import (
    MODELS_ARTIFACT,
    SPEC_SUFFIX,
    ModelFileError,
    SavedModel,
    load_model,
    read_spec,
    require_field,
)
from suite.models.neural_gate import gate_from_model

COLUMNS = ("model", "kind", "experiment", "job_key", "plugs_into", "code_version", "package_version", "size_bytes")


def resolve(model: str | Path, results: str | Path) -> Path:
    """A model named by path (the spec, the weights or the name without suffix), or relative to ``results``."""
    p = Path(model)
    for candidate in (p, Path(results) / p):
        for f in (candidate, candidate.with_name(candidate.name + SPEC_SUFFIX)):
            if f.is_file():
                return f
    raise ModelFileError("no such model (a path, or one relative to the results folder as `model list` shows it)",
                         file=str(model))


def load_checked(path: str | Path) -> SavedModel:
    """A model file loaded and its weights checked against the architecture its spec declares."""
    saved = load_model(path)
    if saved.kind == "recovered_gate":
        gate_from_model(saved)
    elif saved.kind == "reduced_hybrid":
        from suite.models.reduced import axial_from_model

        axial_from_model(saved)
    elif saved.kind == "gate_ensemble":
        ensemble_from_model(saved)
    return saved


def ensemble_from_model(saved: SavedModel) -> torch.nn.Module:
    """A zoo-fit ensemble (neural or expert gates, one member per row of its job) with the file's weights."""
    from suite.gates import make_model

    arch = dict(require_field(saved, "architecture"))
    kind, size = arch.pop("type", None), arch.pop("size", None)
    arch.pop("outputs", None)
    dtype = next(iter(saved.tensors.values())).dtype
    if kind != "node":  # expert forms start from data: any smooth curve will do, the weights replace the start
        v = torch.tensor(require_field(saved, "plugs_into.grid_mv"), dtype=dtype)
        arch.update(v_grid=v, inf_target=(0.5 + 0.4 * torch.tanh(v / 20)).expand(int(size or 1), -1),
                    tau_target=(2.0 + torch.tanh(v / 30)).expand(int(size or 1), -1))
    try:
        model = make_model(str(kind), int(size), dtype=dtype, **arch)
        model.load_state_dict(saved.tensors)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"the weights do not fit the architecture: {str(e).splitlines()[-1].strip()}",
                             file=str(saved.path), field="architecture") from None
    return model


def model_table(results: str | Path) -> pd.DataFrame:
    """Every model spec under ``results/models``: identity, provenance, training settings and ``metric_*``."""
    root = Path(results)
    rows = []
    for spec_file in sorted((root / MODELS_ARTIFACT).glob(f"*/*/*{SPEC_SUFFIX}")):
        spec = read_spec(spec_file)
        where = spec.get("plugs_into", {})
        size = sum(f.stat().st_size for f in (spec_file, spec_file.with_name(spec["weights"].get("file", "")))
                   if f.is_file())
        row = {"model": spec_file.relative_to(root).as_posix(), "kind": spec["kind"],
               "experiment": spec.get("experiment"), "job_key": spec.get("job_key"),
               "plugs_into": where.get("target") or where.get("cell") or where.get("model"),
               "code_version": spec.get("code_version"), "package_version": spec.get("package_version"),
               "size_bytes": size, "status": spec.get("status")}
        training = spec.get("training", {})
        row.update({k: v for k, v in training.items() if isinstance(v, str | int | float | bool)})
        row.update({f"metric_{k}": v for k, v in spec.get("metrics", {}).items()})
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else list(COLUMNS))
