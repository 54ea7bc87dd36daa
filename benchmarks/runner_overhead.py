"""Time the Ray runner adds per job over in-process running, against a typical zoo-fit job.

    python benchmarks/runner_overhead.py [--jobs 1000]

Both backends run the same 1,000 no-op jobs through the same sweep driver (store writes
included); the difference per job is the Ray overhead, printed as a share of one zoo-fit job
of the quick preset, timed here in the same run.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from dataclasses import dataclass

import pandas as pd

from runners.backends import InProcess, Ray
from runners.store import ResultStore
from runners.sweep import run_sweep
from suite.config import load_config
from suite.experiments.base import Job, JobResult
from suite.experiments.zoo_fit import ZooFit


@dataclass(frozen=True)
class NoopConfig:
    jobs: int = 1000


class Noop:
    name = "noop"
    config_type = NoopConfig

    def plan(self, config: NoopConfig) -> list[Job]:
        return [Job.make(self.name, config, i, 0, {"i": i}) for i in range(config.jobs)]

    def run(self, job: Job, device: str) -> JobResult:
        return JobResult(pd.DataFrame({"i": [job.payload["i"]]}))


def sweep_seconds(backend: InProcess | Ray, jobs: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run_sweep(Noop(), NoopConfig(jobs), ResultStore(tmp), backend, stream=io.StringIO())
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    import ray

    ray.init(include_dashboard=False, log_to_driver=False)
    sweep_seconds(Ray(), 20)  # warm the workers up
    ray_s = sweep_seconds(Ray(), args.jobs)
    local_s = sweep_seconds(InProcess(), args.jobs)
    ray.shutdown()
    overhead = (ray_s - local_s) / args.jobs

    experiment = ZooFit()
    config = load_config(experiment.config_type, None, preset=experiment.presets()["quick"])
    job = next(j for j in experiment.plan(config) if j.payload["model"] == "node")
    start = time.perf_counter()
    experiment.run(job, "cpu")
    typical = time.perf_counter() - start

    print(f"{args.jobs} no-op jobs: in-process {local_s:.2f} s ({local_s / args.jobs * 1e3:.2f} ms/job), "
          f"ray {ray_s:.2f} s ({ray_s / args.jobs * 1e3:.2f} ms/job)")
    print(f"ray overhead per job: {overhead * 1e3:.2f} ms")
    print(f"typical zoo-fit job (quick preset, node, {len(job.payload['gate'])} gates x {config.seeds} seeds, "
          f"{config.steps_per_stage * config.stages} steps): {typical:.2f} s")
    print(f"overhead / typical job: {overhead / typical:.2%} (target < 5%)")


if __name__ == "__main__":
    main()
