"""The result store and the in-process runner: atomic parts, resume without duplicates, failures as rows."""

import io
import os
import stat
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


class Flaky(Squares):
    """Squares whose jobs in ``broken`` raise: the same keys, so a fixed cause can be rerun."""

    code_version = "1"

    def __init__(self, broken: set[int] = frozenset()) -> None:
        super().__init__()
        self.broken = set(broken)

    def run(self, job: Job, device: str) -> JobResult:
        if job.shard in self.broken:
            self.calls.append(job.shard)
            raise RuntimeError("worker ran out of memory")
        return super().run(job, device)


def squares_parts(store: ResultStore) -> list[Path]:
    return sorted((store.tables / "experiment=squares").glob("part-*.parquet"))


def test_status_of_a_sweep_planned_but_without_parts_counts_its_jobs_pending(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.write_manifest("squares", "abc", {"n": 3}, ["k1", "k2", "k3"])
    (store.tables / "experiment=squares").mkdir(parents=True)  # a kill during the first write leaves this
    [row] = store.status()
    assert (row["done"], row["pending"], row["failed_jobs"], row["rows"]) == (0, 3, 0, 0)


CORRUPTIONS = {
    "truncated": lambda blob: blob[: len(blob) // 2],
    "random bytes": lambda blob: bytes(range(256)) * 4,
    "empty": lambda blob: b"",
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_a_corrupt_part_is_skipped_moved_aside_and_its_job_rerun(tmp_path: Path, corrupt,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    store = ResultStore(tmp_path)
    run_sweep(Squares(), SquaresConfig(), store, stream=io.StringIO())
    before = store.read("squares")
    victim = squares_parts(store)[1]
    shard = pq.read_table(victim)["shard"][0].as_py()
    victim.write_bytes(corrupt(victim.read_bytes()))
    [row] = store.status()
    assert (row["done"], row["rows"]) == (3, 3) and victim.name in row["problems"][0]
    assert len(store.read("squares")) == 3
    assert store.connect().execute("SELECT count(*) FROM squares").fetchone()[0] == 3
    again = Squares()
    summary = run_sweep(again, SquaresConfig(), store, stream=io.StringIO())
    assert (summary.skipped, summary.ran) == (3, 1) and again.calls == [shard]
    assert (store.quarantine / "experiment=squares" / victim.name).exists()
    assert f"moved a bad part to {store.quarantine / 'experiment=squares' / victim.name}" in capsys.readouterr().err
    after = store.read("squares")
    pd.testing.assert_frame_equal(after.drop(columns=["job_wall_time_s", "code_version"]),
                                  before.drop(columns=["job_wall_time_s", "code_version"]))


def test_a_part_without_schema_tag_says_so(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    run_sweep(Squares(), SquaresConfig(n=1), store, stream=io.StringIO())
    [part] = squares_parts(store)
    pq.write_table(pq.read_table(part).replace_schema_metadata({}), part)
    [row] = store.status()
    assert "has no schema tag (not written by hybridbench?)" in row["problems"][0]
    assert "newer" not in row["problems"][0]


def test_a_newer_schema_stops_and_is_never_moved_aside(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    run_sweep(Squares(), SquaresConfig(n=1), store, stream=io.StringIO())
    [part] = squares_parts(store)
    pq.write_table(pq.read_table(part).replace_schema_metadata({b"hybridbench.results.schema": b"99"}), part)
    with pytest.raises(StoreError, match="upgrade hybridbench"):
        run_sweep(Squares(), SquaresConfig(n=1), store, stream=io.StringIO())
    assert part.exists()


def test_query_reads_only_the_parts_status_accepts(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    run_sweep(Squares(), SquaresConfig(), store, stream=io.StringIO())
    first, *_ = squares_parts(store)
    copy = first.with_name("part-0123456789abcdef.parquet")  # a copied file: its rows carry another key
    copy.write_bytes(first.read_bytes())
    [row] = store.status()
    assert row["done"] == 4 and "not the '0123456789abcdef' its name says" in row["problems"][0]
    assert store.connect().execute("SELECT count(*), count(DISTINCT key) FROM squares").fetchone() == (4, 4)


def test_an_experiment_folder_without_parts_is_an_empty_view(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    run_sweep(Squares(), SquaresConfig(), store, stream=io.StringIO())
    (store.tables / "experiment=recovery").mkdir()
    con = store.connect()
    assert con.execute("SELECT count(*) FROM squares").fetchone()[0] == 4
    assert con.execute("SELECT count(*) FROM recovery").fetchone()[0] == 0
    assert [r["experiment"] for r in store.status()] == ["recovery", "squares"]


def test_a_column_of_another_type_in_one_part_names_the_part_and_column(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    run_sweep(Squares(), SquaresConfig(), store, stream=io.StringIO())
    odd = squares_parts(store)[2]
    rows = pq.read_table(odd).to_pandas()
    store.write("squares", rows["key"][0], rows.assign(square=rows["square"].astype(str)))
    with pytest.raises(StoreError, match=rf"{odd.name}.*field 'square'.*holds string here but number"):
        store.read("squares")
    [row] = store.status()
    assert row["done"] == 4 and "'square'" in row["problems"][0]


def test_temporaries_of_killed_writes_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from runners.parts import tmp_prefix

    said: list[str] = []
    store = ResultStore(tmp_path, warn=said.append)
    folder = store.tables / "experiment=squares"
    folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live = folder / f"{tmp_prefix(folder / 'part-a.parquet')}x1.tmp"  # this process: a write in progress
    killed = folder / live.name.replace(f"-{os.getpid()}~", f"-{int(dead.stdout)}~")
    old = folder / ".part-b.parquet.k2j3.tmp"  # written before temporaries named their writer, two days ago
    for path in (live, killed, old):
        path.write_bytes(b"half a part")
    os.utime(old, (os.path.getmtime(old) - 2 * 86400,) * 2)
    run_sweep(Squares(), SquaresConfig(n=1), store, stream=io.StringIO())
    assert live.exists() and not killed.exists() and not old.exists()
    assert sum("left by a write that was killed" in m for m in said) == 2


def test_rows_carry_the_code_version_and_rerun_stale_replaces_just_those(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    run_sweep(Flaky(), SquaresConfig(), store, stream=io.StringIO())
    assert set(store.read("squares")["code_version"]) == {"1"}
    newer = Flaky()
    newer.code_version = "2"
    assert store.status({"squares": "2"})[0]["stale_jobs"] == 4
    skipped = run_sweep(newer, SquaresConfig(), store, stream=io.StringIO())
    assert skipped.ran == 0  # stale rows stay until asked for
    summary = run_sweep(newer, SquaresConfig(), store, stream=io.StringIO(), rerun=["stale"])
    assert (summary.ran, summary.rerun) == (4, 4)
    rows = store.read("squares")
    assert len(rows) == 4 and rows["key"].is_unique and set(rows["code_version"]) == {"2"}
    assert len(squares_parts(store)) == 4
    assert store.status({"squares": "2"})[0]["stale_jobs"] == 0


def test_rerun_failed_runs_only_the_failed_jobs_again(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    first = run_sweep(Flaky(broken={1, 3}), SquaresConfig(), store, stream=io.StringIO())
    assert first.failed == 2
    plain = run_sweep(Flaky(), SquaresConfig(), store, stream=io.StringIO())
    assert (plain.ran, plain.failed_kept) == (0, 2)  # a failure is data: kept, and said to be kept
    fixed = Flaky()
    summary = run_sweep(fixed, SquaresConfig(), store, stream=io.StringIO(), rerun=["failed"])
    assert sorted(fixed.calls) == [1, 3] and (summary.ran, summary.failed, summary.failed_kept) == (2, 0, 0)
    rows = store.read("squares")
    assert len(rows) == 4 and (rows["status"] == "ok").all() and sorted(rows["square"]) == [0, 1, 4, 9]
    assert store.status()[0]["failed_jobs"] == 0


def test_an_unreadable_sweep_plan_is_skipped_with_a_message(tmp_path: Path) -> None:
    said: list[str] = []
    store = ResultStore(tmp_path, warn=said.append)
    store.write_manifest("squares", "good", {}, ["k1"])
    (tmp_path / "sweeps" / "squares" / "torn.json").write_text('{"jobs": ["k2"')
    [row] = store.status()
    assert row["pending"] == 1 and "torn.json" in said[0]


class Nothing(Squares):
    """Jobs that find nothing to report: zero rows is a result too."""

    def run(self, job: Job, device: str) -> JobResult:
        self.calls.append(job.shard)
        return JobResult(pd.DataFrame())


def test_a_job_without_rows_counts_as_done(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    run_sweep(Nothing(), SquaresConfig(n=2), store, stream=io.StringIO())
    again = Nothing()
    assert run_sweep(again, SquaresConfig(n=2), store, stream=io.StringIO()).ran == 0 and again.calls == []
    assert store.status()[0]["done"] == 2 and store.read("squares").empty


@pytest.mark.parametrize("umask", [0o022, 0o007])
def test_parts_manifests_artifacts_and_catalogues_follow_the_umask(tmp_path: Path, umask: int) -> None:
    """Not 0600 whatever the umask: group members of a shared cluster folder read what a sweep wrote."""
    from channelzoo.catalogue import write_catalogue
    from channelzoo.models import hh_k

    old = os.umask(umask)
    try:
        store = ResultStore(tmp_path)
        run_sweep(Squares(), SquaresConfig(n=1), store, stream=io.StringIO())
        catalogue = write_catalogue([hh_k()], tmp_path / "zoo" / "hh.parquet")
    finally:
        os.umask(old)
    key = store.read("squares")["key"][0]
    written = [store.part_path("squares", key), store.artifact_dir("squares", key) / "note.txt", catalogue,
               *(tmp_path / "sweeps" / "squares").glob("*.json")]
    assert len(written) == 4
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
