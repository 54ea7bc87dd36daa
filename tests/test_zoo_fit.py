"""Zoo fit end to end: plan, batched fits into Parquet, figures from the table alone."""

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ICG_FIXTURE

from runners.store import ResultStore
from runners.sweep import run_sweep
from suite.cli import main
from suite.config import ConfigError, load_config
from suite.experiments.zoo_fit import ZooFit, ZooFitConfig
from suite.models.files import load_model

TINY = ZooFitConfig(zoo_n=30, max_gates=12, models=("node", "sm1", "boltzmann_bell"), steps_per_stage=60, stages=2,
                    seeds=2, gates_per_job=6)


def test_plan_is_deterministic_and_shards_by_model(tmp_path: Path) -> None:
    a, b = ZooFit().plan(TINY), ZooFit().plan(TINY)
    assert [j.key for j in a] == [j.key for j in b]
    assert len(a) == 3 * 2 and len({j.key for j in a}) == 6
    assert sorted({j.payload["model"] for j in a}) == ["boltzmann_bell", "node", "sm1"]
    assert ZooFit().plan(replace(TINY, lr=2e-3))[0].key != a[0].key


def test_sweep_rows_round_trip_through_parquet(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    summary = run_sweep(ZooFit(), TINY, store, stream=io.StringIO())
    assert (summary.ran, summary.failed) == (6, 0)
    rows = store.read("zoo-fit")
    assert len(rows) == 12 * 2 * 3  # gates x seeds x models
    assert set(rows["status"]) <= {"ok", "diverged"}
    assert rows.groupby(["channel_id", "gate", "model"]).size().eq(2).all()
    assert np.isfinite(rows["err1_inf"]).all() and len(rows["fit_tau"].iloc[0]) == 56
    again = store.read("zoo-fit")
    pd.testing.assert_frame_equal(rows, again)
    assert run_sweep(ZooFit(), TINY, store, stream=io.StringIO()).ran == 0
    saved = load_model(tmp_path / rows["model_file"].iloc[0])  # safetensors + spec, no pickle
    assert all(t.shape[0] == 12 for t in saved.tensors.values())  # one member per (gate, seed) of the job
    job_rows = rows[rows["model_file"] == rows["model_file"].iloc[0]]
    assert saved.spec["members"]["channel_id"] == job_rows.sort_values("model_member")["channel_id"].tolist()
    con = store.connect()
    assert con.execute("SELECT count(*) FROM zoo_fit WHERE model = 'node'").fetchone()[0] == 24


def test_icg_zoo_adds_icg_omni_baseline(tmp_path: Path) -> None:
    config = replace(TINY, zoo="icg", zoo_path=str(ICG_FIXTURE / "icg-channels-K"), models=("node",), max_gates=8,
                     gates_per_job=8, steps_per_stage=20, stages=1, seeds=1)
    jobs = ZooFit().plan(config)
    assert [j.payload["model"] for j in jobs] == ["node", "icg_omni"]
    result = ZooFit().run(jobs[1], "cpu")
    # ICG's published err1 comes back from its published parameters (the importer's formulas are right).
    both = result.rows.dropna(subset=["icg_omni_err1_tau"])
    assert len(both) > 0
    assert np.allclose(both["err1_inf"], both["icg_omni_err1_inf"], rtol=1e-4, atol=1e-9)


def test_cli_run_and_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = str(tmp_path)
    args = ["--results", results, "run", "zoo-fit", "--tracking-uri", "none", "--set", "zoo_n=20",
            "--set", "max_gates=6", "--set", "gates_per_job=6", "--set", "steps_per_stage=20", "--set", "stages=1",
            "--set", "models=[node, sm1, sm2]"]
    assert main(args) == 0
    assert main(["--results", results, "figures", "zoo-fit"]) == 0
    out = capsys.readouterr().out
    assert "fig2_zoo_fit.png" in out
    table = (tmp_path / "figures" / "zoo_fit_by_class.csv").read_text()
    assert "node" in table and "omni" in table


def test_unknown_model_and_key_are_config_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="unknown model"):
        load_config(ZooFitConfig, None, ["models=[node, nope]"])
    assert main(["run", "zoo-fit", "--set", "nope=1", "--tracking-uri", "none"]) == 2
    assert "nope" in capsys.readouterr().err


def test_head_to_head_against_icg_published_fits() -> None:
    from analysis.zoo_fit import head_to_head

    def rows(model: str, errs: list[float]) -> pd.DataFrame:
        return pd.DataFrame({"channel_id": ["a", "b", "c"], "gate": "m", "seed": 0, "class": ["K", "K", "Na"],
                             "model": model, "status": "ok", "err1_inf": errs, "err1_tau": 0.01})

    table = head_to_head(pd.concat([rows("node", [0.01, 0.01, 0.2]), rows("icg_omni", [0.2, 0.01, 0.01])]),
                         b="icg_omni").set_index("class")
    assert table.loc["K", "only_node"] == 1 and table.loc["Na", "only_icg_omni"] == 1
    assert table.loc["all", "node_minus_icg_omni"] == 0


def test_default_tracking_keeps_runs_and_artifacts_under_results(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    results, elsewhere = tmp_path / "results", tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = ["--results", str(results), "run", "zoo-fit", "--set", "zoo_n=10", "--set", "max_gates=4",
            "--set", "gates_per_job=4", "--set", "steps_per_stage=5", "--set", "stages=1", "--set", "models=[node]"]
    assert main(args) == 0
    assert not any(elsewhere.iterdir())  # MLflow's default ./mlruns would land here
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("hybridbench/zoo-fit").experiment_id])
    job = next(r for r in runs if r.data.tags.get("mlflow.parentRunId"))
    assert [a.path for a in client.list_artifacts(job.info.run_id, "models")] == ["models/ensemble-node.json",
                                                                                "models/ensemble-node.safetensors"]
    assert job.info.artifact_uri.startswith((results / "mlartifacts").as_uri())
