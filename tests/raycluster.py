"""A real Ray cluster on this machine for tests: a head and worker nodes, each its own `ray start --block`.

Every node gets its own ports and temp dir, so clusters of other users on the machine are never touched:
a node is stopped (or killed, to play a lost machine) through the process tree this module started,
never with a global `ray stop`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# GCS declares a silent node dead after about 5 s instead of tens of seconds, so a lost node's tasks are
# retried soon (not sooner: a busy machine must not get a live node declared dead).
FAST_FAILURE_DETECTION = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000",
                          "RAY_health_check_timeout_ms": "2000", "RAY_health_check_failure_threshold": "5"}


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies, so no node outlives a crashed test
    (`ray start --block` spawns a reaper that ends the node's other processes when it dies)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def ray_cli() -> str | None:
    """The `ray` command beside this interpreter (a venv need not be on PATH), else the one on PATH."""
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.exists() else shutil.which("ray")


def process_tree(root: int) -> set[int]:
    """``root`` and all its descendants, from /proc (Linux), or an empty set when ``root`` is gone."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        children.setdefault(ppid, []).append(int(stat.parent.name))
    if not Path(f"/proc/{root}").exists():
        return set()
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo.extend(children.get(pid, []))
    return tree


def client_port() -> list[str]:
    """A port of its own for the Ray Client server, which only runs (on 10001) with ray[client] installed."""
    from ray._private.utils import get_ray_client_dependency_error

    return [] if get_ray_client_dependency_error() else [f"--ray-client-server-port={free_port()}"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_env() -> dict[str, str]:
    """Workers import this checkout's packages and the tests' own modules (ray_jobs) by name."""
    path = os.pathsep.join([str(REPO), str(REPO / "tests"), *filter(None, [os.environ.get("PYTHONPATH")])])
    # A token left in ~/.ray by an earlier ray.init must not switch these nodes to token auth.
    return {**os.environ, **FAST_FAILURE_DETECTION, "PYTHONPATH": path, "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@dataclass
class Node:
    name: str
    proc: subprocess.Popen
    log: Path
    killed: bool = False

    def wait_started(self, timeout: float = 120) -> None:
        """Until `ray start` says the node runs (what it prints before it blocks)."""
        deadline = time.monotonic() + timeout
        while "Ray runtime started" not in self.log.read_text():
            assert self.proc.poll() is None, f"ray start ({self.name}) exited:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"ray start ({self.name}) not up:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.1)

    def pids(self) -> set[int]:
        """This node's processes: `ray start --block` and all it started (raylet, agents, workers)."""
        return process_tree(self.proc.pid) if self.proc.poll() is None else set()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Every process of the node at once, as when its machine is lost (SIGKILL) or shut down."""
        self.killed = True
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)


@dataclass
class Cluster:
    """Head and workers started by this object; ``stop()`` ends exactly those processes."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ray-cluster-", dir="/tmp")))
    nodes: list[Node] = field(default_factory=list)
    address: str = ""

    def _start(self, name: str, *args: str) -> Node:
        temp = self.root / name  # short: Ray's socket paths must stay under 108 bytes
        ports = [f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
                 f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                 f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]
        log = self.root / f"{name}.log"
        with log.open("w") as out:
            proc = subprocess.Popen([ray_cli(), "start", "--block", f"--temp-dir={temp}", *ports, *args],
                                    env=node_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=_die_with_parent)
        node = Node(name, proc, log)
        self.nodes.append(node)
        return node

    def start_head(self, num_cpus: int, num_gpus: int = 0, wait: bool = True) -> Node:
        """The head (GCS and a raylet), returned once it runs (``wait``) or as soon as it starts."""
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        # The dashboard's process runs even with --include-dashboard=false, on 8265 without retries unless
        # told: two heads on one machine must not both ask for it.
        head = self._start("head", "--head", f"--port={port}", *client_port(), "--include-dashboard=false",
                           f"--dashboard-port={free_port()}",
                           f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}")
        if wait:
            head.wait_started()
        return head

    def add_worker(self, num_cpus: int = 1, num_gpus: int = 0) -> Node:
        """A worker node joining the head (which may still be starting: it waits for the head's GCS);
        not waited for: `wait_for` counts the nodes up."""
        name = f"w{sum(n.name.startswith('w') for n in self.nodes) + 1}"
        return self._start(name, f"--address={self.address}",
                           f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}")

    def wait_for(self, alive: int, timeout: float = 120) -> None:
        """Until ``alive`` nodes are registered with the head (as this process's Ray client sees them)."""
        import ray

        deadline = time.monotonic() + timeout
        while sum(n["Alive"] for n in ray.nodes()) != alive:
            dead = [n.name for n in self.nodes if n.proc.poll() is not None and not n.killed]
            assert time.monotonic() < deadline, f"{alive} nodes not up: {self.logs()}"
            assert not dead, f"nodes {dead} exited: {self.logs()}"
            time.sleep(0.2)

    def logs(self) -> str:
        """What each node's `ray start` printed and the end of its raylet's log, for a failure message."""
        out = []
        for n in self.nodes:
            raylet = sorted((self.root / n.name).glob("session_*/logs/raylet.out"))
            tail = raylet[-1].read_text(errors="replace")[-1500:] if raylet else "(no raylet log)"
            out.append(f"--- {n.name}\n{n.log.read_text()[-1500:]}\n--- {n.name} raylet.out\n{tail}")
        return "\n".join(out)

    def stop(self) -> None:
        """Workers first, then the head; SIGKILL: nothing here needs a graceful end, and it cannot hang."""
        for node in reversed(self.nodes):
            node.kill()
        for _ in range(10):  # a killed node's reaper may still write a log file into it
            shutil.rmtree(self.root, ignore_errors=True)
            if not self.root.exists():
                break
            time.sleep(0.5)
