"""`hybridbench run EXPERIMENT`: plan a sweep and run the jobs the store lacks, here or on Ray."""

from __future__ import annotations

import argparse
from typing import Any

from runners.backends import InProcess, Ray
from runners.store import ResultStore
from runners.sweep import RERUN, SweepSummary, run_sweep
from runners.tracking import make_tracker
from suite.config import ConfigError, load_config, to_dict
from suite.experiments import get_experiment


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every sweep-running command shares (run, reproduce)."""
    parser.add_argument("--device", default="cpu", help="torch device for in-process jobs: cpu, cuda, cuda:1")
    parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                        help="run jobs on Ray: a local cluster, or ADDRESS (HOST:PORT, auto) of a running one")
    parser.add_argument("--cpus-per-job", type=float, default=1.0, help="Ray: CPUs each job asks for")
    parser.add_argument("--gpus-per-job", type=float, default=0.0, help="Ray: GPUs each job asks for (0.25: 4 a GPU)")
    parser.add_argument("--max-retries", type=int, default=3, help="Ray: retries of a job whose worker died")
    parser.add_argument("--tracking-uri", help="MLflow URI (default MLFLOW_TRACKING_URI, else sqlite under "
                                               "RESULTS; 'none' turns tracking off); checked before any job runs")


def register(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="run an experiment's sweep (resumes: done jobs are skipped)")
    run.add_argument("experiment", help="zoo-fit, recovery, reduction")
    run.add_argument("--config", help="YAML file of config keys")
    run.add_argument("--preset", help="a named starting config of the experiment (quick, paper; reduction: heldout)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override one config key (repeatable)")
    run.add_argument("--rerun", action="append", choices=RERUN, default=[],
                     help="also run the stored jobs that failed, or whose code version is not the current one")
    add_backend_arguments(run)
    run.set_defaults(handler=_run)


def make_backend(args: argparse.Namespace) -> InProcess | Ray:
    if args.ray is None:
        if args.gpus_per_job:
            raise ConfigError("--gpus-per-job needs --ray; in process use --device cuda", field="--gpus-per-job")
        return InProcess(args.device)
    return Ray(None if args.ray == "local" else args.ray, args.cpus_per_job, args.gpus_per_job, args.max_retries)


def experiment_config(name: str, preset: str | None, path: str | None, overrides: list[str]) -> tuple[Any, Any]:
    """The experiment and its config: defaults, then the preset, then the file, then --set."""
    experiment = get_experiment(name)
    presets = experiment.presets()
    if preset is not None and preset not in presets:
        raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(sorted(presets))}", field="--preset")
    return experiment, load_config(experiment.config_type, path, overrides, presets.get(preset) if preset else None)


def run_one(args: argparse.Namespace, name: str, preset: str | None, path: str | None = None,
            overrides: list[str] | None = None) -> SweepSummary:
    experiment, config = experiment_config(name, preset, path, overrides or [])
    backend = make_backend(args)
    tracker = make_tracker(args.tracking_uri, args.results)  # checked before any job runs or file is written
    print(f"[{name}] {backend.describe()}; config: {to_dict(config)}", flush=True)
    summary = run_sweep(experiment, config, ResultStore(args.results), backend, tracker,
                        rerun=getattr(args, "rerun", ()))
    rerun = f" ({summary.rerun} of them again)" if summary.rerun else ""
    print(f"[{name}] {summary.planned} jobs: {summary.skipped} already done, {summary.ran} ran{rerun} "
          f"({summary.failed} failed) in {summary.wall_time_s:.1f} s -> {args.results}/tables", flush=True)
    if summary.failed_kept:
        print(f"[{name}] {summary.failed_kept} stored failed job(s) count as done; --rerun failed runs them again",
              flush=True)
    return summary


def _run(args: argparse.Namespace) -> int:
    run_one(args, args.experiment, args.preset, args.config, args.overrides)
    return 0
