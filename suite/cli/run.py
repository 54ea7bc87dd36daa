"""`hybridbench run EXPERIMENT`: plan a sweep and run the jobs the store lacks."""

from __future__ import annotations

import argparse

from runners.local import run_local
from runners.store import ResultStore
from suite.config import ConfigError, load_config, to_dict
from suite.experiments import get_experiment


def register(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="run an experiment's sweep (resumes: done jobs are skipped)")
    run.add_argument("experiment", help="zoo-fit")
    run.add_argument("--config", help="YAML file of config keys")
    run.add_argument("--preset", help="a named starting config of the experiment (e.g. quick, paper)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override one config key (repeatable)")
    run.add_argument("--device", default="cpu", help="torch device for the jobs: cpu, cuda, cuda:1, ...")
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    experiment = get_experiment(args.experiment)
    presets = experiment.presets()
    if args.preset is not None and args.preset not in presets:
        raise ConfigError(f"unknown preset {args.preset!r}; known: {', '.join(sorted(presets))}", field="--preset")
    base = presets.get(args.preset, {}) if args.preset else {}
    config = load_config(experiment.config_type, args.config,
                         [f"{k}={v}" for k, v in base.items()] + list(args.overrides))
    print(f"[{experiment.name}] config: {to_dict(config)}")
    summary = run_local(experiment, config, ResultStore(args.results), device=args.device)
    print(f"[{experiment.name}] {summary.planned} jobs: {summary.skipped} already done, {summary.ran} ran "
          f"({summary.failed} failed) in {summary.wall_time_s:.1f} s -> {args.results}/tables")
    return 0
