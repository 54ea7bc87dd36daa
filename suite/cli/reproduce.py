"""`hybridbench reproduce --preset quick|paper`: the paper's experiments, then every figure and the report."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from analysis import render
from analysis.report import write_report
from runners.store import ResultStore
from suite.cli.run import add_backend_arguments, run_one
from suite.experiments.base import package_version

PAPER_EXPERIMENTS = ("zoo-fit", "reduction", "recovery")  # the paper's figures; `recording` needs recordings: --only


def register(commands: argparse._SubParsersAction) -> None:
    reproduce = commands.add_parser("reproduce", help="the paper's experiments at a preset, then figures and report")
    reproduce.add_argument("--preset", choices=("quick", "paper"), default="quick",
                           help="quick: small, CPU, minutes; paper: the paper's full scale, for a GPU cluster")
    reproduce.add_argument("--only", action="append", help="just these experiments (repeatable)")
    add_backend_arguments(reproduce)
    reproduce.set_defaults(handler=_reproduce)


def _reproduce(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    names = args.only or list(PAPER_EXPERIMENTS)
    for name in names:
        run_one(args, name, args.preset)
    store = ResultStore(args.results)
    figures_dir = Path(args.results) / "figures"
    written = {name: render(name, store.read(name), figures_dir) for name in names}
    report = write_report(Path(args.results) / "report.md", written, store.status(), args.preset,
                          time.perf_counter() - start, package_version())
    print(f"wrote {report} ({time.perf_counter() - start:.0f} s in all)")
    return 0
