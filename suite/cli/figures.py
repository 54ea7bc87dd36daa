"""`hybridbench figures [EXPERIMENT]`: the paper's figures and tables from stored results only."""

from __future__ import annotations

import argparse
from pathlib import Path

from analysis import render
from runners.store import ResultStore
from suite.config import ConfigError


def register(commands: argparse._SubParsersAction) -> None:
    figures = commands.add_parser("figures", help="regenerate figures and tables from results/")
    figures.add_argument("experiment", nargs="?", help="one experiment (default: every one with results)")
    figures.set_defaults(handler=_figures)


def _figures(args: argparse.Namespace) -> int:
    store = ResultStore(args.results)
    names = [args.experiment] if args.experiment else store.experiments()
    if not names:
        raise ConfigError("no results yet; run an experiment first (hybridbench run ...)", file=str(store.tables))
    for name in names:
        rows = store.read(name)
        if rows.empty:
            raise ConfigError(f"no results for {name!r}; run `hybridbench run {name}` first",
                              file=str(store.tables), field="experiment")
        for path in render(name, rows, Path(args.results) / "figures"):
            print(f"wrote {path}")
    return 0
