"""`status`, `query`, `figures` and `run` at the store's edges: what a user (or a kill) leaves there."""

import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import render
from analysis.report import write_report
from channelzoo.catalogue import Zoo, write_catalogue
from channelzoo.errors import ZooError
from channelzoo.generated import generate
from runners.store import ResultStore
from suite.cli import main
from suite.sim.morphology import MorphologyError, parse_swc, read_swc

NOT_UTF8 = b"models: [node]\nnote: caf\xe9 \xff\xfe\n"
TINY_FIT = ["--set", "zoo_n=20", "--set", "max_gates=4", "--set", "gates_per_job=4", "--set", "steps_per_stage=20",
            "--set", "stages=1", "--set", "models=[node]", "--tracking-uri", "none"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Results of a real (tiny) zoo-fit sweep: a job per model; copy before changing them."""
    results = tmp_path_factory.mktemp("fitted")
    assert cli(results, "run", "zoo-fit", *TINY_FIT, "--set", "max_gates=8", "--set", "models=[node, sm1]") == 0
    return results


def copy_of(results: Path, to: Path) -> Path:
    shutil.copytree(results, to)
    return to


def cli(results: Path, *args: str) -> int:
    return main(["--results", str(results), *args])


def fake_rows(key: str, status: str = "ok", code_version: str = "1", **extra) -> pd.DataFrame:
    return pd.DataFrame({"key": [key], "shard": [0], "status": [status],
                         "error": ["RuntimeError: boom" if status == "failed" else ""],
                         "code_version": [code_version], **{k: [v] for k, v in extra.items()}})


def test_status_while_the_first_job_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ResultStore(tmp_path).write_manifest("zoo-fit", "abc", {}, ["k1", "k2", "k3"])
    assert cli(tmp_path, "status") == 0
    assert "zoo-fit: 0 jobs done (0 failed, 0 stale), 3 pending, 0 rows" in capsys.readouterr().out


def test_an_empty_experiment_folder_leaves_every_other_table_queryable(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    store = ResultStore(tmp_path)
    store.write("zoo-fit", "k1", fake_rows("k1"))
    (store.tables / "experiment=recovery").mkdir()
    assert cli(tmp_path, "query", "SELECT count(*) AS n FROM zoo_fit") == 0
    assert cli(tmp_path, "query", "SELECT count(*) AS m FROM recovery") == 0
    assert cli(tmp_path, "status") == 0
    out = capsys.readouterr().out
    assert " n\n 1" in out and " m\n 0" in out and "recovery: 0 jobs done" in out


def test_a_corrupt_part_is_reported_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ResultStore(tmp_path)
    for key in ("k1", "k2"):
        store.write("zoo-fit", key, fake_rows(key))
    part = store.part_path("zoo-fit", "k2")
    part.write_bytes(part.read_bytes()[:100])
    assert cli(tmp_path, "status") == 0
    assert cli(tmp_path, "query", "SELECT count(*) AS n FROM zoo_fit") == 0
    captured = capsys.readouterr()
    assert "zoo-fit: 1 jobs done" in captured.out and f"skipped: file {part}" in captured.out
    assert " n\n 1" in captured.out and "skipped a bad part" in captured.err


def test_figures_skip_a_corrupt_part_and_run_repairs_it(tmp_path: Path, fitted: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    store = ResultStore(copy_of(fitted, tmp_path / "r"))
    part = sorted((store.tables / "experiment=zoo-fit").glob("part-*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:1000])
    assert cli(store.root, "figures") == 0
    assert f"skipped a bad part: file {part}" in capsys.readouterr().err
    assert cli(store.root, "run", "zoo-fit", *TINY_FIT, "--set", "max_gates=8", "--set", "models=[node, sm1]") == 0
    assert "3 already done, 1 ran" in capsys.readouterr().out
    assert (store.quarantine / "experiment=zoo-fit" / part.name).is_file() and len(store.done_keys("zoo-fit")) == 4


def test_stale_and_failed_jobs_are_counted_with_the_remedy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ResultStore(tmp_path)
    store.write("zoo-fit", "k1", fake_rows("k1", code_version="0"))
    store.write("zoo-fit", "k2", fake_rows("k2", status="failed"))
    assert cli(tmp_path, "status") == 0
    out = capsys.readouterr().out
    assert "zoo-fit: 2 jobs done (1 failed, 1 stale)" in out and "failure: RuntimeError: boom" in out
    assert "failed and stale jobs count as done: add `--rerun failed`" in out


BAD_QUERIES = {"empty": ["query", ""], "blank": ["query", "  "],
               "no-dir": ["query", "SELECT 1", "--out", "/nonexistent/d/x.csv"],
               "suffix": ["query", "SELECT 1", "--out", "x.txt"]}


@pytest.mark.parametrize("args", BAD_QUERIES.values(), ids=BAD_QUERIES.keys())
def test_bad_query_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    store = ResultStore(tmp_path)
    store.write("zoo-fit", "k1", fake_rows("k1"))
    assert cli(tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert "hybridbench: error:" in err and ("'sql'" in err or "'--out'" in err)


def test_query_out_writes_the_file(tmp_path: Path) -> None:
    ResultStore(tmp_path).write("zoo-fit", "k1", fake_rows("k1"))
    assert cli(tmp_path, "query", "SELECT key FROM zoo_fit", "--out", str(tmp_path / "x.csv")) == 0
    assert (tmp_path / "x.csv").read_text() == "key\nk1\n"


@pytest.mark.parametrize("command", [["status"], ["query", "SELECT 1"], ["figures"], ["run", "zoo-fit", *TINY_FIT]])
def test_results_pointing_at_a_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            command: list[str]) -> None:
    afile = tmp_path / "results.txt"
    afile.write_text("not a folder")
    assert cli(afile, *command) == 2
    assert cli(afile / "sub", *command) == 2
    assert "field '--results'" in capsys.readouterr().err
    assert afile.read_text() == "not a folder"


def test_a_part_with_a_column_of_another_type_stops_figures(tmp_path: Path, fitted: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    store = ResultStore(copy_of(fitted, tmp_path / "r"))
    odd = sorted((store.tables / "experiment=zoo-fit").glob("part-*.parquet"))[1]
    rows = pq.read_table(odd).to_pandas()
    store.write("zoo-fit", rows["key"][0], rows.assign(err1_tau=rows["err1_tau"].map(str)))
    assert cli(store.root, "figures") == 2
    err = capsys.readouterr().err
    assert odd.name in err and "field 'err1_tau'" in err


def test_all_failed_experiment_gets_a_table_and_the_others_their_figures(tmp_path: Path, fitted: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    store = ResultStore(copy_of(fitted, tmp_path / "r"))
    for key in ("k1", "k2"):
        store.write("recovery", key, fake_rows(key, status="failed"))
    assert cli(store.root, "figures") == 0
    out = capsys.readouterr().out
    figures = store.root / "figures"
    assert (figures / "fig2_zoo_fit.png").is_file()
    assert "[recovery] every job failed" in out
    table = (figures / "recovery_failed_jobs.md").read_text()
    assert table.count("RuntimeError: boom") == 2
    written = {name: render(name, store.read(name), figures) for name in ("recovery", "zoo-fit")}
    report = write_report(store.root / "report.md", written, store.status(), "quick", 1.0, "0+test").read_text()
    assert "### recovery_failed_jobs" in report and "fig2_zoo_fit" in report


def test_a_config_file_that_is_not_utf8_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bin.yaml"
    config.write_bytes(NOT_UTF8)
    assert cli(tmp_path / "r", "run", "zoo-fit", "--config", str(config), *TINY_FIT) == 2
    assert "bin.yaml" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


BAD_SWC = {
    "not-utf8": b"1 1 0 0 0 10 -1\n2 3 0 \xff 0 1 1\n",
    "huge": b"1 1 0 0 0 10 -1\n2 3 1e300 0 0 1 1\n3 3 -1e300 0 0 1 2\n",
    "tiny-radius": b"1 1 0 0 0 10 -1\n2 3 0 20 0 1e-300 1\n",
}


@pytest.mark.parametrize("name", BAD_SWC)
def test_a_bad_swc_is_the_morphology_error_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       name: str) -> None:
    swc = tmp_path / f"{name}.swc"
    swc.write_bytes(BAD_SWC[name])
    with pytest.raises(MorphologyError, match=r"line 2"):
        read_swc(swc)
    assert cli(tmp_path / "r", "run", "reduction", "--preset", "quick", "--set", f"morphology={swc}",
               "--tracking-uri", "none") == 2
    assert f"{name}.swc" in capsys.readouterr().err
    assert not (tmp_path / "r" / "tables").exists()


def test_a_reasonable_swc_still_parses() -> None:
    m = parse_swc("1 1 0 0 0 10 -1\n2 3 0 -5000 0 0.05 1\n")
    assert m.n_points == 2


def zero_tau_catalogue(path: Path, value: float) -> Path:
    write_catalogue(generate(3, 0), path)
    table = pq.read_table(path)
    tau = table.column("tau").to_pylist()
    tau[1] = [value] * len(tau[1])
    table = table.set_column(table.schema.get_field_index("tau"), "tau", pa.array(tau, table.schema.field("tau").type))
    pq.write_table(table, path)
    return path


@pytest.mark.parametrize("value", [0.0, float("nan"), float("inf"), -1.0])
def test_a_catalogue_with_unusable_tau_is_refused_when_loaded(tmp_path: Path, value: float) -> None:
    path = zero_tau_catalogue(tmp_path / "cat.parquet", value)
    with pytest.raises(ZooError, match=r"cat\.parquet.*field 'tau'.*gate"):
        Zoo.load(path)


def test_run_on_a_zero_tau_catalogue_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = zero_tau_catalogue(tmp_path / "cat.parquet", 0.0)
    assert cli(tmp_path / "r", "run", "zoo-fit", *TINY_FIT, "--set", f"zoo={path}") == 2
    assert "all zero" in capsys.readouterr().err
    assert not (tmp_path / "r" / "tables").exists()


def test_figures_of_a_node_only_sweep(tmp_path: Path, fitted: Path) -> None:
    rows = ResultStore(fitted).read("zoo-fit")
    written = render("zoo-fit", rows[rows["model"] == "node"], tmp_path)
    assert tmp_path / "fig2_zoo_fit.png" in written


HOSTILE_SQL = {
    "read-elsewhere": "SELECT * FROM read_csv_auto('/etc/passwd')",
    "copy-out": "COPY (SELECT 1) TO '{tmp}/leak.csv'",
    "copy-over-a-part": "COPY (SELECT 1 AS key) TO '{part}'",
    "attach": "ATTACH '{tmp}/other.db'",
    "lift-the-limit": "SET enable_external_access = true",
    "create": "CREATE TABLE t AS SELECT 1",
    "install": "INSTALL httpfs",
}


@pytest.mark.parametrize("sql", HOSTILE_SQL.values(), ids=HOSTILE_SQL.keys())
def test_query_reads_the_results_and_nothing_else(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 sql: str) -> None:
    """Results are shared on clusters: query reads them, writes nothing, reads no file outside them."""
    results = tmp_path / "results"
    store = ResultStore(results)
    part = store.write("zoo-fit", "k1", fake_rows("k1"))
    before = part.read_bytes()
    assert cli(results, "query", sql.format(tmp=tmp_path, part=part)) == 2
    assert "hybridbench: error:" in capsys.readouterr().err
    assert part.read_bytes() == before and not (tmp_path / "leak.csv").exists()
    assert not (tmp_path / "other.db").exists()
    assert cli(results, "query", "WITH k AS (SELECT key FROM zoo_fit) SELECT count(*) AS n FROM k") == 0
