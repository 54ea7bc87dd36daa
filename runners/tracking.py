"""MLflow tracking from the driver: a parent run per sweep, a child run per job.

Only the driver logs, so parallel workers never write the same SQLite file. A resumed sweep finds its parent
run again by the sweep's key and adds the jobs it runs now as further children.

The table is the truth; tracking follows it. ``make_tracker`` checks the tracker before a sweep plans or writes
anything, so a bad URI or a dead server is one message naming ``--tracking-uri`` within seconds (exit 2), not
MLflow's four minutes of retries. During a sweep, ``Guarded`` turns the first tracking failure into one
message and no tracking for the rest of the sweep (every row is already stored by then), and ``catch_up``
logs, when the sweep runs again, the stored jobs that have no run yet. Sweeps in other processes may share a
SQLite file: each call holds a file lock beside it, so MLflow creates the database once and writers take turns.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, TextIO

import pyarrow.parquet as pq

from runners.lock import file_lock
from runners.outcome import Outcome
from runners.store import ResultStore
from suite.config import ConfigError
from suite.experiments.base import Job

DEFAULT_URI_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"  # beside a SQLite store: MLflow's own default is ./mlruns in whatever folder we run from
URI_ENV = "MLFLOW_TRACKING_URI"
# MLflow's HTTP client reads these at every request; its defaults (7 retries, 2 s backoff doubling, 120 s
# timeout) keep a sweep waiting about four minutes on a server that is gone.
CHECK_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
SWEEP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
ADVICE = ("Give a tracking URI that works (a running server's http://HOST:PORT, sqlite:///FILE), "
          "or --tracking-uri none to run without tracking")


class TrackingError(ConfigError):
    """A tracking URI that cannot be used: unknown scheme, unreachable server, unwritable SQLite file."""


def default_tracking_uri(results: str | Path) -> str:
    """MLFLOW_TRACKING_URI if set, else a SQLite file under the results folder (no server needed)."""
    return os.environ.get(URI_ENV) or f"sqlite:///{Path(results).resolve() / DEFAULT_URI_FILE}"


def _flat_params(config: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v) if isinstance(v, list | dict) else str(v) for k, v in config.items()}


@contextmanager
def _http_limits(limits: dict[str, str], override: bool) -> Iterator[None]:
    """MLflow's HTTP retry settings for this block only; the environment is as it was afterwards.

    A user's own setting wins unless ``override`` (the up-front check must answer within seconds).
    """
    saved = {name: os.environ.get(name) for name in limits}
    for name, value in limits.items():
        if override or saved[name] is None:
            os.environ[name] = value
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _reason(error: BaseException) -> str:
    """The useful part of an MLflow or OS error: the errno text where there is one, else its first line."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error)
    errno = re.search(r"\[Errno -?\d+\] ([^'\"():\]]+)", text)
    if errno:
        return errno.group(1).strip()
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(error).__name__}: {first[:300]}" if first else type(error).__name__


class NoTracker:
    """Tracking switched off (``--tracking-uri none``)."""

    def check(self) -> None: ...

    def start(self, experiment: str, sweep_key: str, config: dict[str, Any], planned: int) -> None: ...

    def catch_up(self, experiment: str, stored: list[Job], store: ResultStore) -> int:
        return 0

    def log(self, outcome: Outcome) -> None: ...

    def finish(self, status: str) -> None: ...


class MlflowTracker:
    def __init__(self, uri: str, artifact_root: Path | None = None, lock: Path | None = None,
                 field: str = "--tracking-uri") -> None:
        self.uri = uri
        self.artifact_root = artifact_root  # None: the tracking server's choice
        self.lock = lock  # for a SQLite file: held around every call
        self.field = field  # where the URI came from, for error messages
        self.client: Any = None
        self.parent_id: str | None = None
        self.experiment_id: str | None = None

    @contextmanager
    def _call(self, limits: dict[str, str] = SWEEP_LIMITS, override: bool = False) -> Iterator[Any]:
        """One exchange with the tracker: the SQLite lock held, MLflow's HTTP retries bounded."""
        with file_lock(self.lock) if self.lock else nullcontext(), _http_limits(limits, override):
            if self.client is None:
                import mlflow

                self.client = mlflow.MlflowClient(tracking_uri=self.uri)
            yield self.client

    def check(self) -> None:
        """One request to the tracker (for SQLite, creating the database): TrackingError if it fails."""
        try:
            with self._call(CHECK_LIMITS, override=True) as client:
                client.search_experiments(max_results=1)
        except Exception as e:
            raise TrackingError(f"cannot track to {self.uri}: {_reason(e)}. {ADVICE}", field=self.field) from None

    def start(self, experiment: str, sweep_key: str, config: dict[str, Any], planned: int) -> None:
        name = f"hybridbench/{experiment}"
        with self._call() as client:
            self.experiment_id = self._experiment_id(client, name)
            runs = client.search_runs([self.experiment_id], f"tags.sweep_key = '{sweep_key}'", max_results=1)
            if runs:
                self.parent_id = runs[0].info.run_id
                client.update_run(self.parent_id, status="RUNNING")
                return
            run = client.create_run(self.experiment_id, run_name=f"{experiment}-{sweep_key}",
                                    tags={"sweep_key": sweep_key, "kind": "sweep"})
            self.parent_id = run.info.run_id
            for key, value in _flat_params(config).items():
                client.log_param(self.parent_id, key, value[:6000])
            client.log_metric(self.parent_id, "jobs_planned", planned)

    def _experiment_id(self, client: Any, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = client.get_experiment_by_name(name)
        if found:
            return found.experiment_id
        location = (self.artifact_root / name.replace("/", "-")).as_uri() if self.artifact_root else None
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:  # another driver created it since we looked (a shared server)
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def catch_up(self, experiment: str, stored: list[Job], store: ResultStore) -> int:
        """Log a child run for each stored job that has no run yet; return how many were logged.

        Such jobs are those of a sweep whose tracking failed, or that was killed between its table and its
        tracker. Their runs come from the table (rows, wall time, artifacts) and are tagged ``logged_from``.
        A job's run still RUNNING was cut off mid-way (only a sweep holding this job's lock could be logging
        it, and that is us): it is replaced, so each job keeps one run.
        """
        if not stored:
            return 0
        logged: set[str] = set()
        cut_off: dict[str, list[str]] = {}
        token = None
        with self._call() as client:
            while True:
                page = client.search_runs([self.experiment_id], "", max_results=1000, page_token=token)
                for run in page:
                    key = run.data.tags.get("job_key")
                    if key and run.info.status in ("FINISHED", "FAILED"):
                        logged.add(key)
                    elif key:
                        cut_off.setdefault(key, []).append(run.info.run_id)
                token = page.token
                if not token:
                    break
        missing = [job for job in stored if job.key not in logged]
        for job in missing:
            self.log(stored_outcome(store, experiment, job), late=True)
            with self._call() as client:
                for run_id in cut_off.get(job.key, []):
                    client.delete_run(run_id)
        return len(missing)

    def log(self, outcome: Outcome, late: bool = False) -> None:
        job = outcome.job
        tags = {"mlflow.parentRunId": self.parent_id, "job_key": job.key, "status": "ok" if outcome.ok else "failed"}
        if late:
            tags["logged_from"] = "table"
        with self._call() as client:
            run_id = client.create_run(self.experiment_id, run_name=f"shard-{job.shard}-{job.key}",
                                       tags=tags).info.run_id
            client.log_param(run_id, "shard", job.shard)
            client.log_param(run_id, "seed", job.seed)
            for key, value in outcome.metrics.items():
                client.log_metric(run_id, key, float(value))
            if outcome.artifacts:
                with tempfile.TemporaryDirectory() as tmp:
                    for name, blob in outcome.artifacts.items():
                        (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)  # models/NAME.json and the like
                        (Path(tmp) / name).write_bytes(blob)
                    client.log_artifacts(run_id, tmp)
            client.set_terminated(run_id, "FINISHED" if outcome.ok else "FAILED")

    def finish(self, status: str) -> None:
        if self.parent_id:
            with self._call() as client:
                client.set_terminated(self.parent_id, status)


def stored_outcome(store: ResultStore, experiment: str, job: Job) -> Outcome:
    """A stored job as an Outcome: its rows and artifacts from the store; metrics the rows hold."""
    rows = pq.read_table(store.part_path(experiment, job.key)).to_pandas()
    artifacts = {}
    for prefix, folder in (("", store.artifact_dir(experiment, job.key)),
                           ("models/", store.model_dir(experiment, job.key))):
        artifacts |= {prefix + p.name: p.read_bytes() for p in sorted(folder.glob("*"))
                      if p.is_file() and not p.name.startswith(".")}
    ok = not (rows["status"] == "failed").all() if "status" in rows and len(rows) else True
    metrics = {"rows": float(len(rows))}
    if "job_wall_time_s" in rows and len(rows):
        metrics["job_wall_time_s"] = float(rows["job_wall_time_s"].iloc[0])
    return Outcome(job, rows, artifacts, metrics, ok)


class Guarded:
    """A tracker that never stops a sweep: its first failure is reported once and turns tracking off.

    The sweep writes each job's part before logging it, so nothing of the table is lost; running the sweep
    again logs the jobs tracking missed (``catch_up``).
    """

    def __init__(self, tracker: NoTracker | MlflowTracker, stream: TextIO | None = None) -> None:
        self.tracker = tracker
        self.stream = stream
        self.failed: str | None = None

    def _try(self, what: str, call: Any, *args: Any) -> Any:
        if self.failed:
            return None
        try:
            return call(*args)
        except Exception as e:
            self.failed = f"{what}: {_reason(e)}"
            print(f"[tracking] {what} failed ({_reason(e)}); tracking is off for the rest of this sweep. The table "
                  "is complete: run the sweep again to log the missing jobs.", file=self.stream or sys.stderr,
                  flush=True)
            return None

    def start(self, experiment: str, sweep_key: str, config: dict[str, Any], planned: int) -> None:
        self._try("starting the sweep's run", self.tracker.start, experiment, sweep_key, config, planned)

    def catch_up(self, experiment: str, stored: list[Job], store: ResultStore) -> int:
        return self._try("logging stored jobs", self.tracker.catch_up, experiment, stored, store) or 0

    def log(self, outcome: Outcome) -> None:
        self._try(f"logging job {outcome.job.key}", self.tracker.log, outcome)

    def finish(self, status: str) -> None:
        self._try("closing the sweep's run", self.tracker.finish, status)


def make_tracker(uri: str | None, results: str | Path) -> NoTracker | MlflowTracker:
    """The tracker a sweep logs to, checked before anything runs: TrackingError (exit 2) if it cannot be used."""
    field = URI_ENV if not uri and os.environ.get(URI_ENV) else "--tracking-uri"
    uri = uri or default_tracking_uri(results)
    if uri.lower() == "none":
        return NoTracker()
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrackingError(f"cannot track to {uri}: cannot create the folder {db.parent} ({_reason(e)}). "
                                f"{ADVICE}", field=field) from None
        tracker = MlflowTracker(uri, db.parent.resolve() / ARTIFACTS_DIR, lock=db.with_name(db.name + ".lock"),
                                field=field)
    else:
        tracker = MlflowTracker(uri, field=field)
    tracker.check()
    return tracker
