"""Tracking follows the table: a bad tracker stops the command before anything runs (exit 2, within seconds);
a tracker that fails during a sweep costs no row, and the next run of the sweep logs what it missed."""

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from runners.store import ResultStore
from runners.sweep import run_sweep
from runners.tracking import CHECK_LIMITS, MlflowTracker, TrackingError, make_tracker
from suite.cli import main
from suite.experiments.base import Job, JobResult


@dataclass(frozen=True)
class CubesConfig:
    n: int = 5


class Cubes:
    """A tiny experiment: job i cubes i, and leaves an artifact."""

    name = "cubes"
    config_type = CubesConfig

    def plan(self, config: CubesConfig) -> list[Job]:
        return [Job.make(self.name, config, i, 0, {"x": i}) for i in range(config.n)]

    def run(self, job: Job, device: str) -> JobResult:
        x = job.payload["x"]
        return JobResult(pd.DataFrame({"x": [x], "cube": [x**3]}), metrics={"cube": float(x**3)},
                         artifacts={"note.txt": f"job {x}".encode()})


class DiesAfter(MlflowTracker):
    """A real SQLite tracker whose server 'goes away' after ``good`` jobs, in the middle of logging the next."""

    def __init__(self, uri: str, good: int, artifacts: Path) -> None:
        super().__init__(uri, artifacts)
        self.good = good
        self.calls = 0

    def log(self, outcome, late: bool = False) -> None:
        self.calls += 1
        if self.calls > self.good:  # the job's run is created, then the next request fails
            self.client.log_param = self.gone
        super().log(outcome, late)

    @staticmethod
    def gone(*args) -> None:
        raise mlflow.exceptions.MlflowException("API request to http://tracker/ failed: Connection refused")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def children(uri: str, experiment: str) -> list:
    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(f"hybridbench/{experiment}")
    return [r for r in client.search_runs([found.experiment_id], max_results=1000) if "job_key" in r.data.tags]


@pytest.mark.parametrize("uri", [f"http://127.0.0.1:{closed_port()}", "foo://bar", "sqlite:////proc/nope/x.db"],
                         ids=["unreachable-server", "unknown-scheme", "unwritable-sqlite"])
def test_unusable_tracking_uri_is_exit_2_before_anything_is_written(
        tmp_path: Path, uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    start = time.perf_counter()
    assert main(["--results", str(results), "run", "zoo-fit", "--preset", "quick", "--tracking-uri", uri]) == 2
    assert time.perf_counter() - start < 15
    err = capsys.readouterr().err
    assert "field '--tracking-uri'" in err and uri in err and "Traceback" not in err
    assert not results.exists()  # no manifest, no table, no database


def test_unreachable_server_is_one_message_in_seconds_from_the_command(tmp_path: Path) -> None:
    """The issue's reproduction: MLflow's own retries took 254 s, then a traceback and a manifest.

    The command takes 5 s on an idle machine, mostly imports; the bound leaves room for a loaded one.
    """
    uri = f"http://127.0.0.1:{closed_port()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "suite.cli", "--results", str(tmp_path / "r"), "run", "zoo-fit",
                           "--preset", "quick", "--tracking-uri", uri], capture_output=True, text=True, env=env,
                          timeout=120)
    wall = time.perf_counter() - start
    assert proc.returncode == 2, proc.stderr
    assert wall < 60, f"{wall:.1f} s"
    assert proc.stderr.count("\n") == 1 and "Connection refused" in proc.stderr and "--tracking-uri" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_the_check_bounds_mlflow_retries_only_while_it_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "77")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    with pytest.raises(TrackingError):
        make_tracker(f"http://127.0.0.1:{closed_port()}", tmp_path)
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "77"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    assert set(CHECK_LIMITS) == {"MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"}


def test_tracker_failure_mid_sweep_costs_no_row_and_the_rerun_logs_what_it_missed(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = io.StringIO()
    dying = DiesAfter(uri, good=2, artifacts=tmp_path / "mlartifacts")
    first = run_sweep(Cubes(), CubesConfig(), store, tracker=dying, stream=out)
    assert (first.ran, first.failed) == (5, 0)
    assert sorted(store.read("cubes")["cube"]) == [0, 1, 8, 27, 64]
    assert out.getvalue().count("[tracking]") == 1 and "Connection refused" in out.getvalue()
    assert sorted(r.info.status for r in children(uri, "cubes")) == ["FINISHED", "FINISHED", "RUNNING"]

    again = run_sweep(Cubes(), CubesConfig(), store, tracker=make_tracker(uri, tmp_path), stream=io.StringIO())
    assert (again.ran, again.skipped) == (0, 5)
    runs = children(uri, "cubes")
    assert sorted(r.data.tags["job_key"] for r in runs) == sorted(store.read("cubes")["key"])  # each job once
    assert {r.info.status for r in runs} == {"FINISHED"}  # the run cut off mid-way was replaced
    late = [r for r in runs if r.data.tags.get("logged_from") == "table"]
    assert len(late) == 3 and all(r.info.status == "FINISHED" and r.data.metrics["rows"] == 1 for r in late)
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert len(parents) == 1  # the resumed sweep's parent run, found again by its key
    artifact = mlflow.MlflowClient(tracking_uri=uri).download_artifacts(late[0].info.run_id, "note.txt", str(tmp_path))
    assert Path(artifact).read_text().startswith("job ")

    third = run_sweep(Cubes(), CubesConfig(), store, tracker=make_tracker(uri, tmp_path), stream=io.StringIO())
    assert third.ran == 0 and len(children(uri, "cubes")) == 5  # nothing logged twice


def test_tracker_that_fails_to_start_costs_no_row(tmp_path: Path) -> None:
    class NoStart(MlflowTracker):
        def start(self, *args) -> None:
            raise mlflow.exceptions.MlflowException("the server went away")

    store = ResultStore(tmp_path)
    out = io.StringIO()
    tracker = NoStart(f"sqlite:///{tmp_path / 'm.db'}", tmp_path)
    summary = run_sweep(Cubes(), CubesConfig(), store, tracker=tracker, stream=out)
    assert summary.ran == 5 and len(store.read("cubes")) == 5
    assert out.getvalue().count("[tracking]") == 1 and "the server went away" in out.getvalue()


def mlflow_server(tmp_path: Path, port: int) -> subprocess.Popen:
    """A real tracking server on ``port`` over ``tmp_path/server.db``, once it accepts connections.

    It runs in a process group of its own, which ``kill_group`` ends whole."""
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                               "--artifacts-destination", str(tmp_path / "artifacts")],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                              start_new_session=True)  # its own group: the server is several processes
    deadline = time.monotonic() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                kill_group(server)
                pytest.fail("mlflow server did not start")
            time.sleep(0.5)


@pytest.mark.slow
def test_server_killed_mid_sweep_costs_no_row_and_the_rerun_logs_every_job_once(tmp_path: Path) -> None:
    port = closed_port()
    uri = f"http://127.0.0.1:{port}"
    results = tmp_path / "results"
    sweep = [sys.executable, "-m", "suite.cli", "--results", str(results), "run", "zoo-fit", "--set", "zoo_n=20",
             "--set", "max_gates=6", "--set", "gates_per_job=1", "--set", "steps_per_stage=400", "--set", "stages=1",
             "--set", "models=[node]", "--set", "seeds=1", "--tracking-uri", uri]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    server = mlflow_server(tmp_path, port)
    try:
        proc = subprocess.Popen(sweep, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        parts = results / "tables" / "experiment=zoo-fit"
        deadline = time.monotonic() + 240
        while len(list(parts.glob("part-*.parquet"))) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "sweep ended before the server could die"
            time.sleep(0.05)
        kill_group(server)
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, out
        assert "6 ran (0 failed)" in out and out.count("[tracking]") == 1 and "Traceback" not in out
        assert len(ResultStore(results).done_keys("zoo-fit")) == 6

        server = mlflow_server(tmp_path, port)
        again = subprocess.run(sweep, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0 and "6 already done, 0 ran" in again.stdout, again.stdout + again.stderr
        runs = children(uri, "zoo-fit")
        assert sorted(r.data.tags["job_key"] for r in runs) == sorted(ResultStore(results).done_keys("zoo-fit"))
        assert any(r.data.tags.get("logged_from") == "table" for r in runs)
    finally:
        kill_group(server)


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
