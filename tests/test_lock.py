"""One process per sweep: the same sweep started twice runs each job once; different sweeps share a folder."""

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from runners.lock import SweepBusy, sweep_lock, sweep_lock_path
from runners.store import ResultStore
from runners.sweep import sweep_key
from suite.cli import main
from suite.cli.run import experiment_config

# zoo-fit's quick preset, shrunk to 4 one-gate jobs that still take a moment each
SWEEP = ["--preset", "quick", "--set", "zoo_n=20", "--set", "max_gates=4", "--set", "gates_per_job=1",
         "--set", "steps_per_stage=300", "--set", "stages=1", "--set", "models=[node]", "--set", "seeds=1"]
JOBS = 4
ROOT = Path(__file__).resolve().parents[1]


def cli(results: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen([sys.executable, "-m", "suite.cli", "--results", str(results), "run", "zoo-fit", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def holder(results: Path, key: str) -> subprocess.Popen:
    """Another process holding the lock of the zoo-fit sweep ``key`` until killed."""
    code = ("import time\nfrom runners.lock import sweep_lock\n"
            f"with sweep_lock({str(results)!r}, 'zoo-fit', {key!r}):\n"
            "    print('held', flush=True)\n    time.sleep(300)")
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def the_sweep_key(*overrides: str) -> str:
    experiment, config = experiment_config("zoo-fit", "quick", None, [*SWEEP[3::2], *overrides])
    return sweep_key([j.key for j in experiment.plan(config)])


def tracked_runs(results: Path) -> tuple[list, list]:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("hybridbench/zoo-fit").experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("kind") == "sweep"], [r for r in runs if "job_key" in r.data.tags]


def ran(output: str) -> int:
    return int(re.search(r"(\d+) ran \(", output).group(1))


def test_same_sweep_while_another_process_runs_it_is_exit_2_naming_that_process(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc = holder(tmp_path, the_sweep_key())
    try:
        assert main(["--results", str(tmp_path), "run", "zoo-fit", *SWEEP, "--tracking-uri", "none"]) == 2
    finally:
        proc.kill()
        proc.wait()
    err = capsys.readouterr().err
    assert f"pid {proc.pid} on {socket.gethostname()}" in err and "already running" in err
    assert not (tmp_path / "sweeps").exists() and not (tmp_path / "tables").exists()  # nothing written
    # the kernel dropped the killed holder's lock: the sweep runs now
    assert main(["--results", str(tmp_path), "run", "zoo-fit", *SWEEP, "--tracking-uri", "none"]) == 0
    assert len(ResultStore(tmp_path).done_keys("zoo-fit")) == JOBS


def test_lock_is_free_again_after_its_holder_is_killed(tmp_path: Path) -> None:
    proc = holder(tmp_path, "k")
    with pytest.raises(SweepBusy, match=f"pid {proc.pid}"), sweep_lock(tmp_path, "zoo-fit", "k"):
        pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sweep_lock(tmp_path, "zoo-fit", "k") as path:
        assert path == sweep_lock_path(tmp_path, "zoo-fit", "k") and str(os.getpid()) in path.read_text()
    assert path.read_text() == ""  # an idle lock names nobody


def test_two_identical_sweeps_and_a_third_at_once_run_each_job_once(tmp_path: Path) -> None:
    """The issue: in a fresh folder the second died (`table jobs already exists`), else both ran every job.

    Two copies of one sweep and a different sweep start together in a fresh folder: one copy runs every job,
    the other is refused naming it (or, started after it ended, finds nothing to do); the other sweep finishes.
    """
    procs = [cli(tmp_path, *SWEEP), cli(tmp_path, *SWEEP), cli(tmp_path, *SWEEP, "--set", "seed=1")]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    codes = [p.returncode for p in procs]
    assert set(codes[:2]) <= {0, 2} and codes[2] == 0, outs
    pair = sorted(ran(out) if code == 0 else -1 for out, code in zip(outs[:2], codes[:2], strict=True))  # -1: refused
    assert pair in ([-1, JOBS], [0, JOBS]) and ran(outs[2]) == JOBS, outs
    for out, code in zip(outs[:2], codes[:2], strict=True):
        if code == 2:  # refused while the first ran: it names that process
            assert "already running: pid" in out and "Traceback" not in out
    rows = ResultStore(tmp_path).read("zoo-fit")
    assert rows["key"].nunique() == 2 * JOBS and len(rows) == 2 * JOBS
    parents, children = tracked_runs(tmp_path)
    assert len(parents) == 2 and len(children) == 2 * JOBS
    assert {p.data.tags["sweep_key"] for p in parents} == {the_sweep_key(), the_sweep_key("seed=1")}


def test_results_that_is_a_file_is_exit_2_naming_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    results.write_text("not a folder")
    assert main(["--results", str(results), "run", "zoo-fit", *SWEEP, "--tracking-uri", "none"]) == 2
    assert "--results" in capsys.readouterr().err
