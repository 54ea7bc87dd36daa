"""What one job returns to the driver: stamped rows, artifacts, metrics. Runs where the job runs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pandas as pd

from suite.experiments.base import Experiment, Job, failed_rows, stamp_rows


@dataclass
class Outcome:
    job: Job
    rows: pd.DataFrame
    artifacts: dict[str, bytes] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    ok: bool = True


def run_job(experiment: Experiment, job: Job, device: str, gpu_ids: str = "") -> Outcome:
    """Run one job; a job that raises becomes a failed row (a failure is data, the sweep goes on).

    ``gpu_ids``: the GPUs a scheduler gave the job (Ray's ids, comma-separated; "" when none), kept in
    its rows beside ``device``, which says where the job really ran.
    """
    start = time.perf_counter()
    ran_on = device
    try:
        result = experiment.run(job, device)
        rows, artifacts, metrics, ok = result.rows, result.artifacts, result.metrics, True
        ran_on = result.device or device
    except Exception as e:
        rows, artifacts, metrics, ok = failed_rows(job, e), {}, {}, False
    wall = time.perf_counter() - start
    rows = stamp_rows(rows, job, ran_on, wall)
    rows["gpu_ids"] = gpu_ids
    return Outcome(job, rows, artifacts, {**metrics, "job_wall_time_s": wall}, ok)
