"""MLflow tracking from the driver: a parent run per sweep, a child run per job.

Only the driver logs, so parallel workers never write the same SQLite file. A resumed sweep finds
its parent run again by the sweep's key and adds the jobs it runs now as further children.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from runners.outcome import Outcome

DEFAULT_URI_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"  # beside a SQLite store: MLflow's own default is ./mlruns in whatever folder we run from


def default_tracking_uri(results: str | Path) -> str:
    """MLFLOW_TRACKING_URI if set, else a SQLite file under the results folder (no server needed)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(results).resolve() / DEFAULT_URI_FILE}"


def _flat_params(config: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v) if isinstance(v, list | dict) else str(v) for k, v in config.items()}


class NoTracker:
    """Tracking switched off (``--tracking-uri none``)."""

    def start(self, experiment: str, sweep_key: str, config: dict[str, Any], planned: int) -> None: ...

    def log(self, outcome: Outcome) -> None: ...

    def finish(self, status: str) -> None: ...


class MlflowTracker:
    def __init__(self, uri: str, artifact_root: Path | None = None) -> None:
        import mlflow

        self.uri = uri
        self.artifact_root = artifact_root  # None: the tracking server's choice
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        self.parent_id: str | None = None
        self.experiment_id: str | None = None

    def start(self, experiment: str, sweep_key: str, config: dict[str, Any], planned: int) -> None:
        name = f"hybridbench/{experiment}"
        found = self.client.get_experiment_by_name(name)
        location = (self.artifact_root / name.replace("/", "-")).as_uri() if self.artifact_root else None
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(
            name, artifact_location=location)
        runs = self.client.search_runs([self.experiment_id], f"tags.sweep_key = '{sweep_key}'", max_results=1)
        if runs:
            self.parent_id = runs[0].info.run_id
            self.client.update_run(self.parent_id, status="RUNNING")
            return
        run = self.client.create_run(self.experiment_id, run_name=f"{experiment}-{sweep_key}",
                                     tags={"sweep_key": sweep_key, "kind": "sweep"})
        self.parent_id = run.info.run_id
        for key, value in _flat_params(config).items():
            self.client.log_param(self.parent_id, key, value[:6000])
        self.client.log_metric(self.parent_id, "jobs_planned", planned)

    def log(self, outcome: Outcome) -> None:
        job = outcome.job
        run = self.client.create_run(self.experiment_id, run_name=f"shard-{job.shard}-{job.key}",
                                     tags={"mlflow.parentRunId": self.parent_id, "job_key": job.key,
                                           "status": "ok" if outcome.ok else "failed"})
        run_id = run.info.run_id
        self.client.log_param(run_id, "shard", job.shard)
        self.client.log_param(run_id, "seed", job.seed)
        for key, value in outcome.metrics.items():
            self.client.log_metric(run_id, key, float(value))
        if outcome.artifacts:
            with tempfile.TemporaryDirectory() as tmp:
                for name, blob in outcome.artifacts.items():
                    (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)  # models/NAME.json and the like
                    (Path(tmp) / name).write_bytes(blob)
                self.client.log_artifacts(run_id, tmp)
        self.client.set_terminated(run_id, "FINISHED" if outcome.ok else "FAILED")

    def finish(self, status: str) -> None:
        if self.parent_id:
            self.client.set_terminated(self.parent_id, status)


def make_tracker(uri: str | None, results: str | Path) -> NoTracker | MlflowTracker:
    uri = uri or default_tracking_uri(results)
    if uri.lower() == "none":
        return NoTracker()
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        db.parent.mkdir(parents=True, exist_ok=True)
        return MlflowTracker(uri, db.parent.resolve() / ARTIFACTS_DIR)
    return MlflowTracker(uri)
