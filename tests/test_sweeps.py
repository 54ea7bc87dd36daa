"""Sweeps as users run them: killed and resumed, on a real Ray head, tracked by a real MLflow server."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from raycluster import Cluster, free_port, node_env, ray_cli

from runners.store import ResultStore

SWEEP = ["run", "zoo-fit", "--set", "zoo_n=40", "--set", "max_gates=16", "--set", "gates_per_job=2",
         "--set", "steps_per_stage=150", "--set", "stages=1", "--set", "models=[node]", "--set", "seeds=1"]
TIMING = ["job_wall_time_s", "fit_wall_time_s"]


def hybridbench(results: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**(env or os.environ), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "suite.cli", "--results", str(results), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finished(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def table(results: Path) -> pd.DataFrame:
    rows = ResultStore(results).read("zoo-fit").drop(columns=TIMING)
    return rows.sort_values(["key", "channel_id", "gate", "seed"]).reset_index(drop=True)


def test_killed_sweep_resumes_with_nothing_lost_or_run_twice(tmp_path: Path) -> None:
    full, killed = tmp_path / "full", tmp_path / "killed"
    finished(hybridbench(full, *SWEEP, "--tracking-uri", "none"))
    parts = killed / "tables" / "experiment=zoo-fit"
    proc = hybridbench(killed, *SWEEP, "--tracking-uri", "none")
    deadline = time.monotonic() + 240
    while len(list(parts.glob("part-*.parquet"))) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "sweep ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p.name: p.stat().st_mtime_ns for p in parts.glob("part-*.parquet")}
    assert 2 <= len(before) < 8
    out = finished(hybridbench(killed, *SWEEP, "--tracking-uri", "none"))
    assert f"{len(before)} already done, {8 - len(before)} ran" in out
    after = {p.name: p.stat().st_mtime_ns for p in parts.glob("part-*.parquet")}
    assert len(after) == 8 and all(after[name] == mtime for name, mtime in before.items())
    assert not list(parts.glob(".*"))  # no temporary left behind by the kill counts as a result
    pd.testing.assert_frame_equal(table(killed), table(full))


@pytest.mark.skipif(ray_cli() is None, reason="ray CLI not installed")
def test_sweep_on_a_real_ray_head(tmp_path: Path) -> None:
    cluster = Cluster()  # its own ports and temp dir; stopped by its own processes, never a global `ray stop`
    try:
        cluster.start_head(num_cpus=2)
        env = node_env()  # the driver, like the nodes, imports this checkout
        out = finished(hybridbench(tmp_path / "ray-results", *SWEEP, "--tracking-uri", "none",
                                   "--ray", cluster.address, "--cpus-per-job", "1", env=env))
        assert "ray (127.0.0.1:" in out and "8 ran (0 failed)" in out
        finished(hybridbench(tmp_path / "local-results", *SWEEP, "--tracking-uri", "none"))
        ray_rows, local_rows = table(tmp_path / "ray-results"), table(tmp_path / "local-results")
        assert (ray_rows["status"] == "ok").all()
        pd.testing.assert_frame_equal(ray_rows.drop(columns=["device"]), local_rows.drop(columns=["device"]))
    finally:
        cluster.stop()


@pytest.mark.skipif(shutil.which("mlflow") is None, reason="mlflow CLI not installed")
def test_sweep_logged_to_a_real_mlflow_server(tmp_path: Path) -> None:
    import mlflow

    port = free_port()
    server = subprocess.Popen(["mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                               "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                               "--artifacts-destination", str(tmp_path / "artifacts")],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        sweep = [*SWEEP, "--set", "max_gates=4"]
        finished(hybridbench(tmp_path / "results", *sweep, "--tracking-uri", uri))
        client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name("hybridbench/zoo-fit")
        runs = client.search_runs([experiment.experiment_id])
        parents = [r for r in runs if r.data.tags.get("kind") == "sweep"]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
        assert len(parents) == 1 and len(children) == 2
        assert all("gate_steps_per_s" in r.data.metrics and r.info.status == "FINISHED" for r in children)
        assert parents[0].data.params["models"] == '["node"]'
    finally:
        server.terminate()
        server.wait(timeout=30)
