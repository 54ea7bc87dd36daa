"""The job contract every experiment honours: a config, ``plan`` and ``run``.

``plan(config)`` is pure and deterministic; each ``Job`` carries everything it needs (its
share of the data included), so it runs the same in process, on a Ray worker or on a
cluster node without a shared disk. Its key hashes all of that: same key, same result.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd
import torch

from suite.config import to_dict

STATUSES = ("ok", "diverged", "failed")


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hybridbench")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True)
class Job:
    """One unit of scheduling: an experiment's config, a shard of its work and a seed."""

    experiment: str
    config: Any
    shard: int
    seed: int
    payload: dict[str, Any] = field(default_factory=dict, compare=False)
    key: str = ""
    resources: dict[str, float] = field(default_factory=dict, compare=False)

    @classmethod
    def make(cls, experiment: str, config: Any, shard: int, seed: int, payload: dict[str, Any],
             resources: dict[str, float] | None = None) -> Job:
        blob = json.dumps({"experiment": experiment, "config": to_dict(config), "shard": shard, "seed": seed,
                           "payload": payload}, sort_keys=True, default=str)
        key = hashlib.sha256(blob.encode()).hexdigest()[:16]
        return cls(experiment, config, shard, seed, payload, key, dict(resources or {}))


@dataclass
class JobResult:
    """Tidy rows (one per unit of work), summary metrics, and small artifacts by file name."""

    rows: pd.DataFrame
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, bytes] = field(default_factory=dict)
    device: str | None = None  # where the job really ran, when not on the device it was given


class Experiment(Protocol):
    name: str
    config_type: type
    code_version: str  # bump when a change alters the rows: stored rows of another version are stale

    def plan(self, config: Any) -> list[Job]: ...

    def run(self, job: Job, device: str) -> JobResult: ...


def stamp_rows(rows: pd.DataFrame, job: Job, device: str, wall_time_s: float) -> pd.DataFrame:
    """Add the columns every result row carries (DESIGN.md, Contracts)."""
    rows = rows.copy()
    rows.insert(0, "key", job.key)
    rows.insert(1, "experiment", job.experiment)
    rows.insert(2, "shard", job.shard)
    if "status" not in rows:
        rows["status"] = "ok"
    if "error" not in rows:
        rows["error"] = ""
    rows["job_wall_time_s"] = wall_time_s
    rows["device"] = device_name(device)
    rows["version"] = package_version()
    return rows


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device}:{torch.cuda.get_device_name(torch.device(device))}"
    return f"{device}:{platform.processor() or platform.machine()}"


def failed_rows(job: Job, error: BaseException) -> pd.DataFrame:
    """A job that raised is a row too: status failed, with its message."""
    return pd.DataFrame([{"status": "failed", "error": f"{type(error).__name__}: {error}"}])


ExperimentFactory = Callable[[], Experiment]
