"""The recovery experiment end to end on a tiny config: plan, train, score, Parquet, Fig. 3 and the table."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis import render
from runners.outcome import run_job
from runners.store import ResultStore
from runners.sweep import run_sweep
from suite.config import ConfigError, load_config
from suite.experiments import get_experiment
from suite.experiments.recovery import Recovery, RecoveryConfig, run_target, training_trace
from suite.sim.spikes import spike_times
from suite.sim.stimulus import current_density, cylinder_area_cm2
from suite.train.trajectory import scan_gates, smooth_trace

TINY = ["seeds=2", "restarts=1", "sigma_v=[0.0, 0.05]", "sigma_theta=[0.02]", "tf_steps=20",
        "stage_steps=[5, 5, 10]", "ood_amplitudes=[9.0, 15.0]", "t_stop=20.0", "t_off=18.0"]


def test_tiny_sweep_runs_through_the_runner_into_parquet_and_figures(tmp_path: Path) -> None:
    exp = get_experiment("recovery")
    config = load_config(exp.config_type, None, TINY)
    store = ResultStore(tmp_path)
    summary = run_sweep(exp, config, store, stream=io.StringIO())
    assert (summary.planned, summary.failed) == (1, 0)
    rows = store.read("recovery")
    assert len(rows) == 3 * 2  # 3 table rows x 2 seeds
    assert set(rows["status"]) <= {"ok", "diverged"}
    for col in ("rmse", "converged", "inf_rmse", "tau_rmse_ms", "train_time_s", "rmse_extrap", "coinc_ou",
                "coinc_amp_mean"):
        assert col in rows
    assert np.isfinite(rows["rmse"]).all()
    again = run_sweep(exp, config, store, stream=io.StringIO())
    assert again.skipped == 1
    written = render("recovery", rows, tmp_path / "figures")
    names = {p.name for p in written}
    assert "fig3_recovery_hh_paper_hh_k_n.png" in names and "recovery_tables.md" in names
    assert "paper frac" in (tmp_path / "figures" / "recovery_tables.md").read_text()


def test_plan_is_deterministic_and_one_job_per_target_and_method() -> None:
    exp = get_experiment("recovery")
    config = load_config(RecoveryConfig, None, ["targets=[hh_paper/hh_k/n, hh_paper/hh_na/m]",
                                                "methods=[ours, paper]"])
    a, b = exp.plan(config), exp.plan(config)
    assert [j.key for j in a] == [j.key for j in b] and len(a) == 4


def test_a_bad_target_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="target"):
        load_config(RecoveryConfig, None, ["targets=[hh_paper/hh_k/q]"])


def test_scan_matches_the_recurrence() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 50, generator=g, dtype=torch.float64) * 0.999 + 1e-6
    u = torch.rand(3, 50, generator=g, dtype=torch.float64)
    x0 = torch.rand(3, generator=g, dtype=torch.float64)
    x = [x0]
    for k in range(50):
        x.append(a[:, k] * x[-1] + (1 - a[:, k]) * u[:, k])
    torch.testing.assert_close(scan_gates(a, u, x0), torch.stack(x, -1))


def test_smoothing_leaves_a_clean_trace_alone_and_reduces_noise() -> None:
    t = torch.arange(0, 50, 0.1, dtype=torch.float64)
    clean = (-65 + 10 * torch.sin(t / 3)).unsqueeze(0)
    assert torch.equal(smooth_trace(clean, 0.1), clean)
    noisy = clean + 3.0 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert (smooth_trace(noisy, 0.1) - clean).square().mean() < 0.3 * (noisy - clean).square().mean()


def test_pa_into_the_papers_cylinder_is_23_87_ua_per_cm2() -> None:
    area = cylinder_area_cm2(1.0, 10.0)
    assert area == pytest.approx(62.832e-8, rel=1e-4)  # 2 pi 1 um 10 um = 62.83 um2
    assert current_density(15.0, "pA", area) == pytest.approx(23.873, abs=1e-3)
    assert current_density(0.015, "nA", area) == pytest.approx(23.873, abs=1e-3)
    assert current_density(15.0, "uA/cm2", area) == 15.0
    with pytest.raises(ValueError, match="unknown current unit"):
        current_density(15.0, "mA", area)
    assert RecoveryConfig().density(15.0) == pytest.approx(23.873, abs=1e-3)
    assert RecoveryConfig(current_unit="uA/cm2").density(15.0) == 15.0


@pytest.mark.parametrize("bad", ["current_unit=mA", "radius_um=0", "length_um=-1", "amplitude=0", "radius_um=nan"])
def test_a_bad_stimulus_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(RecoveryConfig, None, [bad])
    assert err.value.field == bad.split("=")[0]


def test_the_default_trace_is_the_papers_four_spikes() -> None:
    """15 pA into the 1 um x 10 um cylinder: four spikes near 6.3, 18.7, 30.3 and 41.8 ms (the paper's Fig. 3a)."""
    t, v = training_trace(RecoveryConfig(), "hh_paper/hh_k/n")
    assert spike_times(t, v) == pytest.approx([6.3, 18.7, 30.3, 41.8], abs=1.0)
    t, v = training_trace(RecoveryConfig(current_unit="uA/cm2"), "hh_paper/hh_k/n")
    assert len(spike_times(t, v)) == 3  # 15 uA/cm2, the condition we used to train on


def test_rows_say_where_the_job_really_ran() -> None:
    """Recovery runs on the CPU (the C kernel, or its torch stand-in): a job given cuda must say so."""
    exp = get_experiment("recovery")
    job = exp.plan(load_config(exp.config_type, None, [*TINY, "ood=false", "seeds=1"]))[0]
    outcome = run_job(exp, job, "cuda")
    assert outcome.ok and outcome.rows["device"].str.startswith("cpu:").all()


def test_recovery_learns_the_k_gate_from_the_trace() -> None:
    """Quick schedule, noise-free: the learned model fits the trace and its gate is close to HH's n.

    Measured (one seed, two restarts): RMSE 1.4 mV from 27.8 mV before training; x_inf 0.036 RMSE,
    tau 0.54 ms RMSE on the visited voltages (-75 to 45 mV).
    """
    preset = {**Recovery.presets()["quick"], "sigma_v": [0.0], "sigma_theta": [], "seeds": 1, "ood": False}
    row = run_target(load_config(RecoveryConfig, None, [], preset=preset), "hh_paper/hh_k/n", "ours").iloc[0]
    before = np.sqrt(np.mean((row["v_init"] - row["v_true"]) ** 2))
    assert before > 10.0
    assert row["rmse"] < 2.0 and row["rmse"] < 0.15 * before
    assert row["inf_rmse"] < 0.06
    assert row["tau_rmse_ms"] < 1.0
