"""`hybridbench status` and `hybridbench query "SQL"`: what the result store holds."""

from __future__ import annotations

import argparse
from pathlib import Path

import duckdb
import pandas as pd

from runners.store import ResultStore
from suite.config import ConfigError


def register(commands: argparse._SubParsersAction) -> None:
    status = commands.add_parser("status", help="jobs done, failed and pending per experiment")
    status.set_defaults(handler=_status)
    query = commands.add_parser("query", help="DuckDB SQL over the result tables (one view per experiment)")
    query.add_argument("sql", help='e.g. "SELECT model, avg(err1_tau) FROM zoo_fit GROUP BY model"')
    query.add_argument("--out", help="write the result to FILE.csv or FILE.parquet instead of printing it")
    query.set_defaults(handler=_query)


def _status(args: argparse.Namespace) -> int:
    rows = ResultStore(args.results).status()
    if not rows:
        print(f"no sweeps under {args.results}")
        return 0
    for r in rows:
        print(f"{r['experiment']}: {r['done']} jobs done ({r['failed_jobs']} failed), {r['pending']} pending, "
              f"{r['rows']} rows")
        for message in r["failures"]:
            print(f"  failure: {message}")
    return 0


def _query(args: argparse.Namespace) -> int:
    store = ResultStore(args.results)
    if not store.experiments():
        raise ConfigError("no result tables yet; run an experiment first", file=str(store.tables))
    con = store.connect()
    try:
        frame = con.execute(args.sql).df()
    except duckdb.Error as e:
        raise ConfigError(f"{e}; tables: {', '.join(n.replace('-', '_') for n in store.experiments())}",
                          field="sql") from None
    finally:
        con.close()
    if args.out:
        out = Path(args.out)
        if out.suffix == ".csv":
            frame.to_csv(out, index=False)
        elif out.suffix == ".parquet":
            frame.to_parquet(out, index=False)
        else:
            raise ConfigError("expected a .csv or .parquet file", field="--out")
        print(f"wrote {len(frame)} rows to {out}")
    else:
        with pd.option_context("display.max_rows", 200, "display.width", 200, "display.max_columns", 30):
            print(frame.to_string(index=False))
    return 0
