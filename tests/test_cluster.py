"""Sweeps on a real multi-node Ray cluster on this machine: a lost worker node, GPU fractions, a soak.

Each node is its own `ray start` (raylet, object store, workers) with its own ports and temp dir; a lost
node is played by SIGKILL of all its processes at once. The table must come out as if nothing happened:
every job exactly once, the same values as an uninterrupted run in process.
"""

import io
import os
import random
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from ray_jobs import Tiny, TinyConfig, frame
from raycluster import Cluster, Node, ray_cli

from runners.backends import InProcess, Ray, job_device
from runners.store import ResultStore
from runners.sweep import run_sweep

pytestmark = pytest.mark.skipif(ray_cli() is None, reason="ray CLI not installed")

DRIVER_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def connected(cluster: Cluster, nodes: int) -> None:
    """This process joins ``cluster`` as its driver, once ``nodes`` nodes are up."""
    import ray

    cluster.nodes[0].wait_started()
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    cluster.wait_for(nodes)


@pytest.fixture(scope="module")
def cluster():
    """A head with 2 CPUs and 2 declared GPUs, two worker nodes with 1 CPU each, all started at once."""
    import ray

    with pytest.MonkeyPatch.context() as mp:
        for name, value in DRIVER_ENV.items():
            mp.setenv(name, value)
        c = Cluster()
        try:
            c.start_head(num_cpus=2, num_gpus=2, wait=False)  # 2 CPUs: Ray starts 2 workers at a time there
            c.add_worker(num_cpus=1)
            c.add_worker(num_cpus=1)
            connected(c, 3)
            yield c
        finally:
            ray.shutdown()
            c.stop()


def started(trace: Path) -> list[tuple[str, int, float]]:
    """(key, pid, when) of every job start the jobs marked in ``trace``."""
    out = []
    for marker in trace.glob("start-*"):
        _, key, pid = marker.name.split("-")
        try:
            out.append((key, int(pid), marker.stat().st_mtime))
        except FileNotFoundError:
            continue
    return out


def reference(tmp_path: Path, config: TinyConfig) -> pd.DataFrame:
    store = ResultStore(tmp_path / "in-process")
    run_sweep(Tiny(), config, store, InProcess(), stream=io.StringIO())
    return store.read("tiny")


def test_job_runs_on_cuda_only_where_gpus_were_given_and_cuda_exists() -> None:
    assert job_device(["0"], cuda=True) == "cuda"
    assert job_device(["0"], cuda=False) == "cpu"  # declared GPUs on a machine without CUDA
    assert job_device([], cuda=True) == "cpu"


def test_sweep_over_three_nodes_survives_a_killed_worker_node(cluster: Cluster, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    trace.mkdir()
    config = TinyConfig(jobs=12)
    store = ResultStore(tmp_path / "cluster")
    victim = cluster.nodes[2]
    in_flight: set[str] = set()

    def kill_while_it_runs_a_job() -> None:
        """SIGKILL the node once two parts are stored and it has just started a job (which must then rerun)."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = store.done_keys("tiny")
            mine = victim.pids()
            fresh = {k for k, pid, when in started(trace) if pid in mine and k not in done and time.time() - when < 0.5}
            if len(done) >= 2 and fresh:
                in_flight.update(fresh)
                victim.kill()
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_while_it_runs_a_job)
    killer.start()
    summary = run_sweep(Tiny(sleep_s=1.0, trace=str(trace)), config, store, Ray(cluster.address),
                        stream=io.StringIO())
    killer.join()

    assert in_flight, "the worker node ran no job that could be killed"
    assert victim.proc.poll() is not None and not victim.pids()
    assert (summary.ran, summary.failed) == (12, 0)
    rows = store.read("tiny")
    assert sorted(rows["key"]) == sorted(j.key for j in Tiny().plan(config)) and rows["key"].is_unique
    assert (rows["status"] == "ok").all()
    starts = started(trace)
    for key in in_flight:  # started on the lost node, run again elsewhere, stored once
        assert sum(k == key for k, _, _ in starts) >= 2
    assert rows["node"].nunique() >= 2 and len({pid for _, pid, _ in starts}) >= 3
    pd.testing.assert_frame_equal(frame(rows), frame(reference(tmp_path, config)))


def test_half_a_gpu_per_job_runs_four_jobs_at_once_on_two_gpus(cluster: Cluster, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    trace.mkdir()
    store = ResultStore(tmp_path / "cluster")
    summary = run_sweep(Tiny(trace=str(trace), barrier=4), TinyConfig(jobs=4), store,
                        Ray(cluster.address, cpus_per_job=0.25, gpus_per_job=0.5), stream=io.StringIO())
    assert (summary.ran, summary.failed) == (4, 0)
    rows = store.read("tiny")
    assert list(rows["peers"]) == [4, 4, 4, 4]  # each job saw all four running together
    assert sorted(rows["gpu_ids"]) == ["0", "0", "1", "1"]  # Ray's ids, two jobs on each declared GPU
    # Declared GPUs without CUDA: the jobs ran on the CPU, and their rows say so.
    expected = "cuda" if torch.cuda.is_available() else "cpu:"
    assert rows["device"].str.startswith(expected).all(), rows["device"]


@pytest.mark.slow
def test_soak_two_thousand_jobs_through_repeated_worker_losses(tmp_path: Path) -> None:
    """Worker nodes SIGKILLed at random times and replaced; prints throughput and the overhead per job."""
    import ray

    n_jobs, slots = 2000, 3
    config = TinyConfig(jobs=n_jobs)
    store = ResultStore(tmp_path / "cluster")
    kills: list[float] = []
    finished = threading.Event()
    rng = random.Random(12)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in DRIVER_ENV.items():
            mp.setenv(name, value)
        cluster = Cluster()
        try:
            cluster.start_head(num_cpus=1, wait=False)
            cluster.add_worker(num_cpus=1)
            cluster.add_worker(num_cpus=1)
            connected(cluster, 3)

            def kill_at_random_times() -> None:
                start = time.monotonic()
                while not finished.wait(rng.uniform(3.0, 8.0)):
                    alive: list[Node] = [n for n in cluster.nodes if n.name != "head" and not n.killed]
                    rng.choice(alive).kill()
                    kills.append(time.monotonic() - start)
                    cluster.add_worker(num_cpus=1)  # the replacement machine

            killer = threading.Thread(target=kill_at_random_times)
            killer.start()
            try:
                summary = run_sweep(Tiny(), config, store, Ray(cluster.address), stream=io.StringIO())
            finally:
                finished.set()
                killer.join()
        finally:
            ray.shutdown()
            cluster.stop()

    rows = store.read("tiny")
    assert len(kills) >= 3, f"only {len(kills)} kills: the sweep ended too soon"
    assert (summary.ran, summary.failed) == (n_jobs, 0)
    assert len(rows) == n_jobs and rows["key"].is_unique and (rows["status"] == "ok").all()
    start = time.perf_counter()
    local = reference(tmp_path, config)
    local_s = time.perf_counter() - start
    pd.testing.assert_frame_equal(frame(rows), frame(local))
    wall = summary.wall_time_s
    busy = rows["job_wall_time_s"].sum()
    print(f"\nsoak: {n_jobs} jobs on {slots} worker slots, {len(kills)} worker nodes killed at "
          f"{', '.join(f'{t:.0f}' for t in kills)} s: {wall:.1f} s, {n_jobs / wall:.1f} jobs/s; "
          f"overhead {(wall * slots - busy) / n_jobs * 1e3:.1f} ms of slot time per job "
          f"(jobs ran {busy / n_jobs * 1e3:.2f} ms each); in process: {n_jobs / local_s:.1f} jobs/s "
          f"(cpus: {os.cpu_count()})")
