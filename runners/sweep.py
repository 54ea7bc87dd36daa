"""A sweep: plan, record the plan, skip what the store holds, run the rest on a backend.

The driver alone writes the store and the tracker, as outcomes arrive. A part file is written
atomically once its job is done, so a sweep killed at any moment and run again loses nothing
and runs nothing twice. A sweep holds its lock while it runs: the same sweep started again
elsewhere stops with the name of the process that runs it (runners/lock.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, TextIO

import pandas as pd

from runners.backends import InProcess, Ray
from runners.lock import sweep_lock
from runners.progress import Progress
from runners.store import ResultStore
from runners.tracking import Guarded, MlflowTracker, NoTracker
from suite.config import to_dict
from suite.experiments.base import Experiment


@dataclass
class SweepSummary:
    sweep_key: str
    planned: int
    skipped: int
    ran: int = 0
    failed: int = 0
    wall_time_s: float = 0.0
    rerun: int = 0  # stored jobs run again (--rerun)
    failed_kept: int = 0  # stored failed jobs skipped: done, but worth --rerun failed


RERUN = ("failed", "stale")


def sweep_key(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]


def code_version(experiment: Experiment) -> str:
    """The version of the code that computes the experiment's rows, as the experiment declares it."""
    return str(getattr(experiment, "code_version", "0"))


def select(stored: pd.DataFrame, rerun: Collection[str], version: str) -> set[str]:
    """Keys of stored jobs (``ResultStore.jobs``) to run again: with a failed row ("failed"), computed by
    another code version than ``version`` ("stale")."""
    keep = stored["failed"].astype(bool) & ("failed" in rerun)
    keep |= (stored["code_version"] != version) & ("stale" in rerun)
    return set(stored.loc[keep, "key"])


def run_sweep(experiment: Experiment, config: Any, store: ResultStore, backend: InProcess | Ray | None = None,
              tracker: MlflowTracker | NoTracker | None = None, stream: TextIO | None = None,
              rerun: Collection[str] = ()) -> SweepSummary:
    """``rerun``: also run stored jobs that "failed" or are "stale"; their new parts replace the old."""
    backend = backend or InProcess()
    tracker = Guarded(tracker or NoTracker(), stream)  # a tracking failure never stops the sweep
    version = code_version(experiment)
    jobs = experiment.plan(config)
    keys = [j.key for j in jobs]
    key = sweep_key(keys)
    with sweep_lock(store.root, experiment.name, key):
        store.write_manifest(experiment.name, key, to_dict(config), keys)
        scan = store.repair(experiment.name)  # bad parts aside, so their jobs run again
        stored = store.jobs(experiment.name, scan)
        stored = stored[stored["key"].isin(keys)]
        again = select(stored, rerun, version)
        todo = [j for j in jobs if j.key not in scan.parts or j.key in again]
        summary = SweepSummary(key, planned=len(jobs), skipped=len(jobs) - len(todo), rerun=len(again),
                               failed_kept=len(select(stored, ["failed"], version) - again))
        tracker.start(experiment.name, key, to_dict(config), len(jobs))
        running = {j.key for j in todo}
        tracker.catch_up(experiment.name, [j for j in jobs if j.key in scan.parts and j.key not in running], store)
        progress = Progress(experiment.name, len(todo), summary.skipped, stream)
        status = "FAILED"
        try:
            for outcome in backend.map(experiment, todo):
                store.write(experiment.name, outcome.job.key, outcome.rows.assign(code_version=version),
                            outcome.artifacts)
                tracker.log(outcome)
                summary.ran += 1
                summary.failed += not outcome.ok
                progress.update(outcome.ok, backend.running())
            status = "FINISHED"
        finally:
            tracker.finish(status)
        summary.wall_time_s = progress.elapsed()
    return summary
