"""The failed jobs of an experiment as a table of their own: a failure is data, and the report shows it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.output import write_tables

COLUMNS = ["key", "shard", "error", "device", "code_version", "job_wall_time_s"]


def failed_rows(rows: pd.DataFrame) -> pd.Series:
    """Which rows are failed jobs' rows (status ``failed``)."""
    if "status" not in rows:
        return pd.Series(False, index=rows.index)
    return rows["status"].eq("failed")


def failed_jobs(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per failed job and error, with where and how long it ran."""
    failed = rows[failed_rows(rows)]
    columns = [c for c in COLUMNS if c in failed]
    return failed[columns].drop_duplicates(subset=[c for c in ("key", "error") if c in columns]).reset_index(drop=True)


def render(experiment: str, rows: pd.DataFrame, out_dir: Path) -> list[Path]:
    """``SLUG_failed_jobs.csv`` and ``.md`` under ``out_dir``, or nothing when no job failed."""
    table = failed_jobs(rows)
    if table.empty:
        return []
    name = f"{experiment.replace('-', '_')}_failed_jobs"
    return write_tables({name: table}, Path(out_dir), f"{name}.md")
