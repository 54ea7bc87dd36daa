"""`hybridbench status` and `hybridbench query "SQL"`: what the result store holds."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import duckdb
import pandas as pd

from runners.store import ResultStore, view_name
from suite.config import ConfigError
from suite.experiments import EXPERIMENTS, get_experiment
from suite.models.catalog import model_table

OUT_FORMATS = (".csv", ".parquet")


def register(commands: argparse._SubParsersAction) -> None:
    status = commands.add_parser("status", help="jobs done, failed, stale and pending per experiment")
    status.set_defaults(handler=_status)
    query = commands.add_parser("query", help="DuckDB SQL over the result tables (one view per experiment)")
    query.add_argument("sql", help='e.g. "SELECT model, avg(err1_tau) FROM zoo_fit GROUP BY model"')
    query.add_argument("--out", help="write the result to FILE.csv or FILE.parquet instead of printing it")
    query.set_defaults(handler=_query)


def code_versions(names: list[str]) -> dict[str, str]:
    """The code version each known experiment declares now (rows of another version are stale)."""
    from runners.sweep import code_version

    return {name: code_version(get_experiment(name)) for name in names if name in EXPERIMENTS}


def _status(args: argparse.Namespace) -> int:
    said: list[str] = []  # bad parts are listed below, under their experiment
    store = ResultStore(args.results, warn=said.append)
    rows = store.status(code_versions(list(EXPERIMENTS)))
    for message in said:
        if not message.startswith("skipped a bad part"):
            print(f"hybridbench: warning: {message}", file=sys.stderr)
    if not rows:
        print(f"no sweeps under {args.results}")
        return 0
    for r in rows:
        stale = "" if r["stale_jobs"] is None else f", {r['stale_jobs']} stale"
        print(f"{r['experiment']}: {r['done']} jobs done ({r['failed_jobs']} failed{stale}), {r['pending']} pending, "
              f"{r['rows']} rows")
        for message in r["failures"]:
            print(f"  failure: {message}")
        rerun = [what for what, n in (("failed", r["failed_jobs"]), ("stale", r["stale_jobs"] or 0)) if n]
        if rerun:
            print(f"  {' and '.join(rerun)} jobs count as done: add `--rerun {rerun[0]}` to the sweep's "
                  f"`hybridbench run {r['experiment']} ...` command to run them again")
        for message in r["problems"]:
            print(f"  skipped: {message}")
    return 0


def _check_out(out: Path) -> None:
    if out.suffix not in OUT_FORMATS:
        raise ConfigError(f"expected a {' or '.join(OUT_FORMATS)} file", file=str(out), field="--out")
    if not out.parent.is_dir():
        raise ConfigError("no such folder to write into", file=str(out), field="--out")


READ_ONLY_STATEMENTS = ("SELECT", "EXPLAIN")  # SELECT covers WITH, DESCRIBE, SHOW, SUMMARIZE; exports: --out


def _check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Results are shared: ``query`` reads them and writes nothing (no COPY, CREATE, ATTACH, SET, INSTALL)."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise ConfigError(str(e), field="sql") from None
    for statement in statements:
        kind = statement.type.name
        if kind not in READ_ONLY_STATEMENTS:
            raise ConfigError(f"query only reads ({kind} is not allowed); to export a result, add --out FILE.csv "
                              "or FILE.parquet", field="sql")


def _query(args: argparse.Namespace) -> int:
    if not args.sql.strip():
        raise ConfigError("empty SQL; e.g. \"SELECT count(*) FROM zoo_fit\"", field="sql")
    out = Path(args.out) if args.out else None
    if out is not None:
        _check_out(out)
    store = ResultStore(args.results)
    names = store.experiments()
    if not names:
        raise ConfigError("no result tables yet; run an experiment first", file=str(store.tables))
    models = model_table(args.results)
    tables = ", ".join([*(view_name(n) for n in names), *(["models"] if len(models) else [])])
    con = store.connect()
    _check_read_only(con, args.sql)
    if len(models):  # the saved models (hybridbench model list) as one more table
        con.register("models", models)
    try:
        result = con.execute(args.sql)
        frame = result.df() if result is not None else None
    except duckdb.Error as e:
        raise ConfigError(f"{e}; tables: {tables}", field="sql") from None
    finally:
        con.close()
    if frame is None:
        raise ConfigError(f"the SQL returns no rows to show; tables: {tables}", field="sql")
    if out is not None:
        try:
            frame.to_csv(out, index=False) if out.suffix == ".csv" else frame.to_parquet(out, index=False)
        except OSError as e:
            raise ConfigError(f"cannot write ({e.strerror or e})", file=str(out), field="--out") from None
        print(f"wrote {len(frame)} rows to {out}")
    else:
        with pd.option_context("display.max_rows", 200, "display.width", 200, "display.max_columns", 30):
            print(frame.to_string(index=False))
    return 0
