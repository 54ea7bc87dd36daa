"""Where jobs run: in this process (the default) or on a Ray cluster. Both yield outcomes as they finish."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from runners.outcome import Outcome, run_job
from suite.experiments.base import Experiment, Job


@dataclass
class InProcess:
    """One job after another in the driver process."""

    device: str = "cpu"

    def describe(self) -> str:
        return f"in-process ({self.device})"

    def running(self) -> int:
        return 1

    def map(self, experiment: Experiment, jobs: Sequence[Job]) -> Iterator[Outcome]:
        for job in jobs:
            yield run_job(experiment, job, self.device)


@dataclass
class Ray:
    """Jobs as Ray tasks: a local cluster (address None) or an existing one ("HOST:PORT" or "auto").

    Each task asks for ``cpus_per_job`` CPUs and ``gpus_per_job`` GPUs (a fraction lets several jobs
    share a GPU); a task whose worker or node died is retried ``max_retries`` times. Results come back
    to the driver, which alone writes the store and the tracker, so workers need no shared disk.
    A job runs on CUDA only where Ray gave it GPUs and the worker has CUDA; its rows keep the ids
    (``gpu_ids``) and the device it really ran on.
    """

    address: str | None = None
    cpus_per_job: float = 1.0
    gpus_per_job: float = 0.0
    max_retries: int = 3
    _in_flight: int = 0

    def describe(self) -> str:
        where = self.address or "local cluster"
        return f"ray ({where}; {self.cpus_per_job:g} CPU, {self.gpus_per_job:g} GPU per job)"

    def running(self) -> int:
        return self._in_flight

    def map(self, experiment: Experiment, jobs: Sequence[Job]) -> Iterator[Outcome]:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False, runtime_env=None)
        task = ray.remote(_on_worker).options(num_cpus=self.cpus_per_job, num_gpus=self.gpus_per_job,
                                              max_retries=self.max_retries, retry_exceptions=False)
        shared = ray.put(experiment)
        pending = {task.remote(shared, job): job for job in jobs}
        self._in_flight = len(pending)
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    job = pending.pop(ref)
                    self._in_flight = len(pending)
                    try:
                        yield ray.get(ref)
                    except ray.exceptions.RayError as e:  # the worker died past its retries
                        yield _lost(job, e)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)


def job_device(gpu_ids: Sequence[str], cuda: bool) -> str:
    """CUDA where the scheduler gave GPUs and this machine has CUDA, else the CPU (declared GPUs need not exist)."""
    return "cuda" if gpu_ids and cuda else "cpu"


def _on_worker(experiment: Experiment, job: Job) -> Outcome:
    """A Ray task: run the job on the device its GPU grant and the worker allow; Ray sets CUDA_VISIBLE_DEVICES."""
    import ray
    import torch

    gpu_ids = [str(i) for i in ray.get_gpu_ids()]
    return run_job(experiment, job, job_device(gpu_ids, torch.cuda.is_available()), ",".join(gpu_ids))


def _lost(job: Job, error: BaseException) -> Outcome:
    from suite.experiments.base import failed_rows, stamp_rows

    rows = stamp_rows(failed_rows(job, error), job, "cpu", 0.0)
    rows["gpu_ids"] = ""
    return Outcome(job, rows, ok=False)
