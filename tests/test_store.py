"""The result store and the in-process runner: atomic parts, resume without duplicates, failures as rows."""

import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from runners.store import ResultStore, StoreError
from runners.sweep import run_sweep
from suite.experiments.base import Job, JobResult


@dataclass(frozen=True)
class SquaresConfig:
    n: int = 4
    fail_at: int = -1


class Squares:
    """A tiny experiment: job i squares i; one job can be told to raise."""

    name = "squares"
    config_type = SquaresConfig

    def __init__(self) -> None:
        self.calls: list[int] = []

    def plan(self, config: SquaresConfig) -> list[Job]:
        return [Job.make(self.name, config, i, 0, {"x": i}) for i in range(config.n)]

    def run(self, job: Job, device: str) -> JobResult:
        self.calls.append(job.shard)
        if job.shard == job.config.fail_at:
            raise RuntimeError("boom")
        x = job.payload["x"]
        return JobResult(pd.DataFrame({"x": [x], "square": [x * x]}), artifacts={"note.txt": b"hi"})


def test_rerun_skips_done_jobs_and_keeps_one_row_each(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    exp = Squares()
    first = run_sweep(exp, SquaresConfig(), store, stream=io.StringIO())
    again = run_sweep(exp, SquaresConfig(), store, stream=io.StringIO())
    assert (first.ran, again.ran, again.skipped) == (4, 0, 4)
    assert exp.calls == [0, 1, 2, 3]
    rows = store.read("squares")
    assert sorted(rows["square"]) == [0, 1, 4, 9]
    assert set(rows["experiment"]) == {"squares"} and rows["key"].is_unique
    assert (store.artifact_dir("squares", rows["key"][0]) / "note.txt").read_bytes() == b"hi"


def test_a_raising_job_is_a_failed_row_and_the_sweep_goes_on(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    summary = run_sweep(Squares(), SquaresConfig(fail_at=1), store, stream=io.StringIO())
    assert (summary.ran, summary.failed) == (4, 1)
    rows = store.read("squares")
    failed = rows[rows["status"] == "failed"]
    assert len(failed) == 1 and "RuntimeError: boom" in failed["error"].iloc[0]
    assert (rows["status"] == "ok").sum() == 3


def test_keys_follow_config_and_payload() -> None:
    a = Squares().plan(SquaresConfig(n=2))
    b = Squares().plan(SquaresConfig(n=2))
    c = Squares().plan(SquaresConfig(n=3))
    assert [j.key for j in a] == [j.key for j in b]
    assert a[0].key != c[0].key


def test_temporary_files_are_never_read_and_sql_sees_all_parts(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    run_sweep(Squares(), SquaresConfig(), store, stream=io.StringIO())
    folder = store.tables / "experiment=squares"
    (folder / ".part-x.parquet.123.tmp").write_bytes(b"half a file")
    assert len(store.read("squares")) == 4
    con = store.connect()
    assert con.execute("SELECT sum(square) FROM squares").fetchone()[0] == 14
    assert con.execute("SELECT DISTINCT experiment FROM squares").fetchone()[0] == "squares"


def test_a_newer_schema_is_refused_with_the_file_named(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    run_sweep(Squares(), SquaresConfig(n=1), store, stream=io.StringIO())
    part = next((store.tables / "experiment=squares").glob("part-*.parquet"))
    table = pq.read_table(part)
    pq.write_table(table.replace_schema_metadata({b"hybridbench.results.schema": b"99"}), part)
    with pytest.raises(StoreError, match=part.name):
        store.read("squares")
