"""A tiny experiment for cluster tests: seeded, cheap jobs that say where they ran and can be slowed down.

It honours the experiment contract (a config, ``plan``, ``run``) so sweeps treat it as any other. What
only a test needs (a sleep, a folder of start markers, a barrier) lives on the experiment object, not in
the config: it changes neither the job keys nor the rows' values, so a slowed run on a cluster and a
plain run in process give the same table.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from suite.experiments.base import Job, JobResult

# Columns that say where and when a job ran: excluded when a cluster's table is compared with another run's.
WHERE = ["pid", "node", "peers", "job_wall_time_s"]


@dataclass(frozen=True)
class TinyConfig:
    jobs: int = 12
    draws: int = 16


@dataclass
class Tiny:
    """``sleep_s`` per job; ``trace``: a folder where each start leaves ``start-KEY-PID``; ``barrier``: wait
    (up to ``barrier_timeout_s``) until that many jobs run at once, and record how many were seen."""

    sleep_s: float = 0.0
    trace: str | None = None
    barrier: int = 0
    barrier_timeout_s: float = 30.0
    name = "tiny"
    config_type = TinyConfig

    def plan(self, config: TinyConfig) -> list[Job]:
        return [Job.make(self.name, config, shard=i, seed=i, payload={}) for i in range(config.jobs)]

    def run(self, job: Job, device: str) -> JobResult:
        pid, peers = os.getpid(), 0
        if self.trace:
            (Path(self.trace) / f"start-{job.key}-{pid}").touch()
        if self.barrier:
            running = Path(self.trace) / f"running-{job.key}-{pid}"
            running.touch()
            deadline = time.monotonic() + self.barrier_timeout_s
            while (peers := len(list(Path(self.trace).glob("running-*")))) < self.barrier:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        time.sleep(self.sleep_s)
        g = torch.Generator().manual_seed(job.seed)
        value = torch.randn(job.config.draws, generator=g, dtype=torch.float64).to(device).sum().item()
        row = {"seed": job.seed, "value": value, "pid": pid, "node": _node(), "peers": peers}
        return JobResult(pd.DataFrame([row]), metrics={"value": value})


def _node() -> str:
    """The Ray node this process belongs to ("" outside Ray)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def frame(rows: pd.DataFrame, drop: list[str] | None = None) -> pd.DataFrame:
    """Rows in a stable order, without the columns that say where and when (``WHERE``, plus ``drop``)."""
    rows = rows.drop(columns=[*WHERE, *(drop or [])], errors="ignore")
    return rows.sort_values("key").reset_index(drop=True)
