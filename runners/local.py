"""The in-process runner: plan, skip what the store holds, run the rest one by one."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

from runners.store import ResultStore
from suite.experiments.base import Experiment, Job, failed_rows, stamp_rows


@dataclass
class SweepSummary:
    planned: int
    skipped: int
    ran: int = 0
    failed: int = 0
    wall_time_s: float = 0.0
    keys: list[str] = field(default_factory=list)


def execute(experiment: Experiment, job: Job, device: str, store: ResultStore) -> bool:
    """Run one job and store its rows; a raising job is stored as a failed row. True if it ran ok."""
    start = time.perf_counter()
    try:
        result = experiment.run(job, device)
        rows, artifacts, ok = result.rows, result.artifacts, True
    except Exception as e:  # a failure is data: the sweep goes on
        rows, artifacts, ok = failed_rows(job, e), {}, False
    store.write(job.experiment, job.key, stamp_rows(rows, job, device, time.perf_counter() - start), artifacts)
    return ok


def run_local(experiment: Experiment, config: Any, store: ResultStore, device: str = "cpu",
              log: Any = sys.stderr) -> SweepSummary:
    jobs = experiment.plan(config)
    done = store.done_keys(experiment.name)
    todo = [j for j in jobs if j.key not in done]
    summary = SweepSummary(planned=len(jobs), skipped=len(jobs) - len(todo), keys=[j.key for j in jobs])
    start = time.perf_counter()
    for i, job in enumerate(todo, 1):
        ok = execute(experiment, job, device, store)
        summary.ran += 1
        summary.failed += not ok
        elapsed = time.perf_counter() - start
        eta = elapsed / i * (len(todo) - i)
        print(f"[{experiment.name}] job {i}/{len(todo)} {'ok' if ok else 'FAILED'} "
              f"({summary.skipped} already done) elapsed {elapsed:.0f} s, eta {eta:.0f} s", file=log, flush=True)
    summary.wall_time_s = time.perf_counter() - start
    return summary
