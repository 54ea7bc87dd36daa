"""Trained models as files: saved by the runs that train them, reloaded to simulate, refused when damaged."""

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from runners.store import ResultStore
from runners.sweep import run_sweep
from suite.cli import main
from suite.config import load_config
from suite.experiments import get_experiment
from suite.gates import NeuralGateEnsemble
from suite.models.catalog import model_table
from suite.models.files import ModelFileError, SavedModel, load_model, save_model
from suite.models.neural_gate import architecture, gate_from_model, member_tensors

TINY = ["seeds=2", "restarts=1", "sigma_v=[0.0, 0.05]", "sigma_theta=[0.02]", "tf_steps=20",
        "stage_steps=[5, 5, 10]", "ood_amplitudes=[9.0, 15.0]", "t_stop=20.0", "t_off=18.0"]


def _gate_file(folder: Path) -> Path:
    ens = NeuralGateEnsemble(3, width=8, depth=2, seed=4)
    return save_model(SavedModel({"kind": "recovered_gate", "architecture": architecture(ens)},
                                 member_tensors(ens, 1)), folder, "gate")


def test_a_saved_gate_reloads_to_the_same_function(tmp_path: Path) -> None:
    ens = NeuralGateEnsemble(3, width=8, depth=2, seed=4)
    gate = gate_from_model(load_model(_gate_file(tmp_path)))
    v = torch.linspace(-100, 60, 33).unsqueeze(0)
    for a, b in zip(gate(v), ens(v.expand(3, -1)), strict=True):
        assert torch.equal(a[0], b[1])


def _damage(path: Path, how: str) -> None:
    weights = path.with_suffix(".safetensors")
    spec = json.loads(path.read_text())
    if how == "json":
        path.write_text(path.read_text()[:-40])
    elif how == "spec_version":
        spec["spec_version"] = 99
    elif how == "weights.sha256":
        blob = bytearray(weights.read_bytes())
        blob[-3] ^= 0xFF
        weights.write_bytes(bytes(blob))
    elif how == "architecture.width":
        spec["architecture"]["width"] = 16
    elif how == "weights.tensors":
        spec["weights"]["tensors"].pop("gate.out_bias")
    if how != "json":
        path.write_text(json.dumps(spec))


@pytest.mark.parametrize("how", ["json", "spec_version", "weights.sha256", "architecture.width", "weights.tensors"])
def test_a_damaged_model_file_is_refused_naming_file_and_field(tmp_path: Path, how: str,
                                                              capsys: pytest.CaptureFixture) -> None:
    path = _gate_file(tmp_path)
    _damage(path, how)
    with pytest.raises(ModelFileError) as err:
        gate_from_model(load_model(path))
    assert err.value.field == how
    assert err.value.file.endswith(".json") or err.value.file.endswith(".safetensors")
    assert main(["--results", str(tmp_path), "model", "show", str(path)]) == 2
    assert how in capsys.readouterr().err


@pytest.fixture(scope="module")
def recovery_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    exp = get_experiment("recovery")
    run_sweep(exp, load_config(exp.config_type, None, TINY), ResultStore(root), stream=io.StringIO())
    return root


def test_recovery_saves_each_runs_gate_and_its_row_references_it(recovery_results: Path) -> None:
    rows = ResultStore(recovery_results).read("recovery")
    assert rows["model_file"].nunique() == len(rows) == 6
    for _, row in rows.iterrows():
        saved = load_model(recovery_results / row["model_file"])
        assert saved.spec["job_key"] == row["key"]
        assert saved.spec["plugs_into"]["target"] == "hh_paper/hh_k/n"
        assert saved.spec["training"]["seed"] == row["seed"]
        assert saved.spec["metrics"]["rmse"] == pytest.approx(row["rmse"])
        assert saved.path.stat().st_size + saved.path.with_suffix(".safetensors").stat().st_size < 1_000_000


def test_model_list_is_a_table_of_what_is_stored(recovery_results: Path, capsys: pytest.CaptureFixture) -> None:
    table = model_table(recovery_results)
    assert len(table) == 6 and set(table["kind"]) == {"recovered_gate"}
    assert {"metric_rmse", "job_key", "sigma_v", "seed", "size_bytes"} <= set(table.columns)
    assert main(["--results", str(recovery_results), "model", "list"]) == 0
    assert "recovered_gate" in capsys.readouterr().out
    sql = "SELECT count(*) AS n FROM models m JOIN recovery r ON m.model = r.model_file WHERE m.kind = 'recovered_gate'"
    assert main(["--results", str(recovery_results), "query", sql]) == 0
    assert " 6" in capsys.readouterr().out.splitlines()[-1]


def test_simulate_gives_the_trace_of_the_run_that_trained_it_bit_for_bit(recovery_results: Path,
                                                                        tmp_path: Path) -> None:
    rows = ResultStore(recovery_results).read("recovery")
    examples = rows[rows["v_learned"].map(len) > 0]
    assert len(examples) == 3  # one per table row, the misspecified one included
    for _, row in examples.iterrows():
        out = tmp_path / "trace.parquet"
        code = main(["--results", str(recovery_results), "model", "simulate", row["model_file"],
                     "--stimulus", "step:15,5,18", "--t-stop", "20", "--out", str(out), "--plot",
                     str(tmp_path / "trace.png")])
        assert code == 0
        trace = pd.read_parquet(out)
        assert np.array_equal(trace["v_model"].to_numpy(), row["v_learned"])
        assert np.array_equal(trace["v_reference"].to_numpy(), row["v_true"])
    assert (tmp_path / "trace.png").stat().st_size > 0


@pytest.mark.parametrize("stimulus", ["step:15,18,5", "ou:1,2", "pulse:1,2,3", "missing.csv"])
def test_a_bad_stimulus_exits_2(recovery_results: Path, tmp_path: Path, stimulus: str) -> None:
    model = ResultStore(recovery_results).read("recovery")["model_file"].iloc[0]
    out = tmp_path / "t.parquet"
    assert main(["--results", str(recovery_results), "model", "simulate", model, "--stimulus", stimulus,
                 "--t-stop", "10", "--out", str(out)]) == 2
    assert not out.exists()


def test_a_csv_stimulus_drives_the_model(recovery_results: Path, tmp_path: Path) -> None:
    model = ResultStore(recovery_results).read("recovery")["model_file"].iloc[0]
    csv = tmp_path / "i.csv"
    pd.DataFrame({"t": [0.0, 5.0, 5.0001, 30.0], "i": [0.0, 0.0, 15.0, 15.0]}).to_csv(csv, index=False)
    out = tmp_path / "t.parquet"
    assert main(["--results", str(recovery_results), "model", "simulate", model, "--stimulus", str(csv),
                 "--t-stop", "30", "--out", str(out)]) == 0
    trace = pd.read_parquet(out)
    assert len(trace) == 301 and trace["v_reference"].max() > 0  # the reference spikes under 15 pA


REDUCED_CHEAP = ["morphology=", "n_latents=[1, 2]", "widths=[8]", "seeds=[0]", "teacher_steps=20",
                 "closed_steps=[5, 5, 5]", "neuron=false"]


@pytest.fixture(scope="module")
def reduction_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hybrid job of a tiny reduction config (generated cell), stored as a sweep stores it."""
    from runners.outcome import run_job

    root = tmp_path_factory.mktemp("results")
    exp = get_experiment("reduction")
    job = next(j for j in exp.plan(load_config(exp.config_type, None, REDUCED_CHEAP)) if j.payload["kind"] == "hybrid")
    outcome = run_job(exp, job, "cpu")
    assert outcome.ok
    ResultStore(root).write("reduction", job.key, outcome.rows, outcome.artifacts)
    return root


def test_reduction_saves_each_hybrid_and_simulate_replays_its_training_trace(reduction_results: Path,
                                                                             tmp_path: Path) -> None:
    rows = ResultStore(reduction_results).read("reduction")
    assert len(rows) == 2 and rows["model_file"].nunique() == 2
    for _, row in rows.iterrows():
        saved = load_model(reduction_results / row["model_file"])
        assert saved.kind == "reduced_hybrid" and saved.spec["architecture"]["n_latents"] == row["n_latents"]
        assert saved.spec["metrics"]["rmse_train"] == pytest.approx(row["rmse_train"])
        out = tmp_path / "trace.parquet"
        assert main(["--results", str(reduction_results), "model", "simulate", row["model_file"], "--stimulus",
                     "step:0.65,10,50", "--t-stop", "70", "--out", str(out)]) == 0
        trace = pd.read_parquet(out)
        assert np.array_equal(trace["v_model"].to_numpy(), np.asarray(row["v_train"]))
        assert np.isfinite(trace["v_reference"]).all() and len(trace) == 701
    table = model_table(reduction_results)
    assert set(table["kind"]) == {"reduced_hybrid"} and "metric_rmse_train" in table


def test_a_hybrid_whose_weights_do_not_fit_its_architecture_is_refused(reduction_results: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    path = reduction_results / ResultStore(reduction_results).read("reduction")["model_file"].iloc[0]
    spec = json.loads(path.read_text())
    spec["architecture"]["width"] = 16
    bad = path.with_name("bad.json")
    bad.write_text(json.dumps(spec))
    assert main(["--results", str(reduction_results), "model", "show", str(bad)]) == 2
    assert "architecture.width" in capsys.readouterr().err


def test_zoo_fit_saves_its_ensembles_listed_shown_and_reloaded(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from channelzoo.grid import ICG_GRID_MV
    from suite.experiments.zoo_fit import ZooFit, ZooFitConfig
    from suite.models.catalog import ensemble_from_model

    config = ZooFitConfig(zoo_n=20, max_gates=6, gates_per_job=6, steps_per_stage=5, stages=1,
                          models=("node", "sm1"), seeds=2)
    store = ResultStore(tmp_path)
    run_sweep(ZooFit(), config, store, stream=io.StringIO())
    table = model_table(tmp_path)
    assert sorted(table["model"].str.rsplit("/", n=1).str[-1]) == ["ensemble-node.json", "ensemble-sm1.json"]
    assert (table["metric_gates"] == 12).all()
    rows = store.read("zoo-fit")
    for model_file, job_rows in rows.groupby("model_file"):
        assert main(["--results", str(tmp_path), "model", "show", model_file]) == 0
        saved = load_model(tmp_path / model_file)
        ensemble = ensemble_from_model(saved)
        v = torch.tensor(ICG_GRID_MV, dtype=torch.float32).expand(12, -1)
        with torch.no_grad():
            inf, _ = ensemble(v)
        expected = np.stack(job_rows.sort_values("model_member")["fit_inf"].to_numpy())
        np.testing.assert_allclose(inf.double().numpy(), expected, atol=1e-5)
    assert "gate_ensemble" in capsys.readouterr().out


def test_export_writes_one_mechanism_with_the_network_written_out(recovery_results: Path, tmp_path: Path) -> None:
    model = ResultStore(recovery_results).read("recovery")["model_file"].iloc[0]
    assert main(["--results", str(recovery_results), "model", "export", model, "--to", "nmodl", "--out",
                 str(tmp_path / "mod")]) == 0
    (mod,) = (tmp_path / "mod").glob("*.mod")
    text = mod.read_text()
    assert mod.stem.startswith("hb_hh_k_n_") and f"SUFFIX {mod.stem}" in text
    assert "USEION k READ ek WRITE ik" in text and "g = gbar*n*n*n*n" in text
    assert "TABLE ninf, ntau FROM -100.0 TO 60.0 WITH 160" in text
    assert text.count("tanh(") == 2 * 32  # every hidden unit of both layers


def test_a_gate_ensemble_is_not_exported_but_refused_with_exit_2(tmp_path: Path) -> None:
    ens = NeuralGateEnsemble(2, width=4, depth=1)
    path = save_model(SavedModel({"kind": "gate_ensemble", "architecture": {"type": "node"}}, ens.state_dict()),
                      tmp_path, "ensemble")
    assert main(["model", "export", str(path), "--out", str(tmp_path / "mod")]) == 2
    assert not (tmp_path / "mod").exists()
