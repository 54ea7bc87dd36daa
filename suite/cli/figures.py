"""`hybridbench figures [EXPERIMENT]`: the paper's figures and tables from stored results only."""

from __future__ import annotations

import argparse
from pathlib import Path

from analysis import RENDERERS, render
from analysis.failures import failed_rows
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
    if args.experiment and args.experiment not in RENDERERS:
        raise ConfigError(f"no figures for {args.experiment!r}; known: {', '.join(RENDERERS)}", field="experiment")
    for name in names:
        if name not in RENDERERS:
            print(f"[{name}] no figures for this experiment; skipped")
            continue
        rows = store.read(name)
        if rows.empty:
            if args.experiment:
                raise ConfigError(f"no results for {name!r}; run `hybridbench run {name}` first",
                                  file=str(store.tables), field="experiment")
            print(f"[{name}] no results yet; skipped")
            continue
        for path in render(name, rows, Path(args.results) / "figures"):
            print(f"wrote {path}")
        if failed_rows(rows).all():
            print(f"[{name}] every job failed: no figures, only the table of failed jobs")
    return 0
