"""The reduction experiment end to end (tiny), and the compiled hybrid against its torch definition."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from channelzoo.models import pospischil_jaxley
from runners.store import ResultStore
from suite.cli import main
from suite.config import ConfigError, load_config
from suite.experiments import get_experiment
from suite.experiments.reduction import (
    ReductionConfig,
    heldout_names,
    heldout_summary,
    morphology_text,
    protocols,
    run_baselines,
    run_hybrids,
    setup,
    training_names,
)
from suite.sim import native
from suite.sim.reduced import AxialODE, ReducedSoma, run_fused, run_torch
from suite.train.reduction_fit import ReductionFitConfig, fit_reduced

NATIVE = native.load() is not None
needs_native = pytest.mark.skipif(not NATIVE, reason="no C compiler for the compiled kernels")


pytestmark = pytest.mark.usefixtures("one_thread")

TINY = """n_latents: [1, 2]
widths: [8]
seeds: [0]
teacher_steps: 6
closed_steps: [2, 2]
curriculum: [0.5, 1.0]
cost_ms: 20.0
cost_repeats: 1
cost_batch: 4
baseline_grid: 5
ood_amplitudes: [0.8]
"""


def hybrid(nz: list[int], width: int = 16) -> ReducedSoma:
    axial = AxialODE(nz, width=width, seeds=list(range(len(nz))), dtype=torch.float64)
    with torch.no_grad():  # move off the near-zero initial output so every path is exercised
        for p in axial.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=p.dtype))
    return ReducedSoma(pospischil_jaxley().channels, 1340.0, axial, 0.3, temperature=36.0)


def stimulus(steps: int = 320) -> torch.Tensor:
    mid = (torch.arange(steps, dtype=torch.float64) + 0.5) * 0.025
    return 0.65 * ((mid >= 1.0) & (mid < 6.0)).double()


@needs_native
def test_compiled_hybrid_runs_the_torch_model() -> None:
    model, stim = hybrid([1, 3], width=8), stimulus()
    with torch.no_grad():
        ref = model.simulate(stim, 0.025)
    out = run_fused(model, stim, 0.025)
    np.testing.assert_allclose(out.v[:, 0], ref.v[:, 0].numpy(), atol=5e-3)  # tabulated vs exact gate rates
    np.testing.assert_allclose(out.i_axial[:, 0], ref.i_axial[:, 0].numpy(), atol=1e-4)


@needs_native
def test_traces_in_simd_lanes_equal_one_by_one() -> None:
    """Several traces without a gradient run four to a vector; each must be what it is alone (5: a padded group)."""
    model = hybrid([2, 3], width=20)  # width 20: the 8-wide blocks and a remainder
    stim = torch.stack([stimulus() * a for a in (0.5, 0.8, 1.0, 1.2, 1.5)])
    target = -65.0 + torch.sin(torch.arange(stim.shape[1] + 1, dtype=torch.float64))
    lanes = run_fused(model, stim, 0.025, target)
    for i in range(stim.shape[0]):
        alone = run_fused(model, stim[i], 0.025, target)
        np.testing.assert_allclose(lanes.v[:, i], alone.v[:, 0], rtol=0, atol=1e-9)
        np.testing.assert_allclose(lanes.z[:, i], alone.z[:, 0], rtol=0, atol=1e-9)
        np.testing.assert_allclose(lanes.i_axial[:, i], alone.i_axial[:, 0], rtol=0, atol=1e-9)
        np.testing.assert_allclose(lanes.loss[:, i], alone.loss[:, 0], rtol=1e-12)


@needs_native
@pytest.mark.parametrize("teacher", [False, True])
def test_compiled_gradients_equal_autograd(teacher: bool) -> None:
    model, stim = hybrid([2, 1], width=8), stimulus()
    with torch.no_grad():
        target = model.simulate(stim, 0.025).v[0, 0] + 3.0 * torch.sin(torch.arange(stim.shape[0] + 1) * 0.02)
    scale = 5.0 if teacher else 0.1
    compiled_run = run_fused(model, stim, 0.025, target, teacher=teacher, scale=scale, want_grad=True)
    compiled = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    reference = run_torch(model, stim, 0.025, target, teacher=teacher, scale=scale, want_grad=True)
    np.testing.assert_allclose(compiled_run.loss, reference.loss, rtol=1e-2)
    for p, g in zip(model.parameters(), compiled, strict=True):  # tabulated vs exact gate rates: not bitwise
        assert float((g - p.grad).norm() / p.grad.norm()) < 1e-2


@pytest.mark.parametrize("teacher", [False, True])
def test_the_torch_reference_loss_is_the_stated_one(teacher: bool) -> None:
    """Free run: every 4th step's squared error; teacher forcing: each one-step prediction's."""
    model, stim = hybrid([2, 1], width=8), stimulus()
    target = -65.0 + 3.0 * torch.sin(torch.arange(stim.shape[0] + 1, dtype=torch.float64) * 0.02)
    scale = 5.0 if teacher else 0.1
    run = run_torch(model, stim, 0.025, target, teacher=teacher, scale=scale)
    with torch.no_grad():
        if teacher:
            v = model.simulate(stim, 0.025, v_clamp=target.reshape(1, -1)).v[:, 0]
            want = ((v[:, 1:] - target[1:]) * scale).pow(2).mean(-1)
        else:
            v = model.simulate(stim, 0.025).v[:, 0]
            want = ((v[:, 4::4] - target[4::4]) * scale).pow(2).mean(-1)
    np.testing.assert_allclose(run.loss[:, 0], want.numpy(), rtol=1e-12)


def test_the_torch_path_trains_on_several_traces_with_a_model_built_for_one() -> None:
    """No compiler needed: fit_reduced on the torch backend, three traces, a batch-1 model."""
    model = hybrid([1, 2], width=8)
    stim = torch.stack([stimulus(160) * a for a in (0.5, 1.0, 1.5)])
    with torch.no_grad():
        target = torch.stack([model.simulate(s, 0.025).v[0, 0] for s in stim]) + 2.0
    cfg = ReductionFitConfig(teacher_steps=5, closed_steps=(3,), curriculum=(1.0,))
    result = fit_reduced(model, stim, target, 0.025, cfg, backend="torch")
    assert len(result.history) == 8 and all(np.isfinite(h).all() for h in result.history)
    assert (result.closed_loss <= torch.tensor(result.history[5])).all()


def test_plan_is_pure_and_keys_are_stable() -> None:
    exp = get_experiment("reduction")
    config = ReductionConfig(widths=(8, 16))
    a, b = exp.plan(config), exp.plan(config)
    assert [j.key for j in a] == [j.key for j in b]
    assert [j.payload["kind"] for j in a] == ["reference", "baselines", "hybrid", "hybrid", "cost"]
    assert set(exp.presets()) == {"quick", "paper", "heldout"}


def test_held_out_stimuli_are_never_trained_on() -> None:
    with pytest.raises(ConfigError, match="held out"):
        ReductionConfig(train_amplitudes=(0.45, 0.8), ood_amplitudes=(0.5, 0.8))
    with pytest.raises(ConfigError, match="noise seed"):
        ReductionConfig(noise_seed=3, train_noise_seeds=(1, 3))
    config = ReductionConfig(train_amplitudes=(0.45,), train_noise_seeds=(1, 2), ood_amplitudes=(0.5,))
    names = training_names(config)
    assert names == ["train", "train_0.45", "train_noise_1", "train_noise_2"]
    stimuli = protocols(config)
    assert not set(names) & set(heldout_names(config)) and set(names) <= set(stimuli)
    noisy = [stimuli[n][0] for n in ("noise", "train_noise_1", "train_noise_2")]
    assert not torch.equal(noisy[0], noisy[1]) and not torch.equal(noisy[1], noisy[2])


def test_each_kind_of_held_out_test_weighs_the_same() -> None:
    config = ReductionConfig(ood_amplitudes=(0.5, 0.6, 0.8))
    row = {"rmse_long": 3.0, "rmse_noise": 6.0, "rmse_amp_0.5": 1.0, "rmse_amp_0.6": 2.0, "rmse_amp_0.8": 6.0}
    assert heldout_summary(row, config) == {"rmse_amplitudes": 3.0, "rmse_amplitudes_max": 6.0, "rmse_heldout": 4.0}


def test_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--results", str(tmp_path), "run", "reduction", "--tracking-uri", "none", "--set", "widths=[]"]) == 2
    assert main(["--results", str(tmp_path), "run", "reduction", "--tracking-uri", "none", "--set",
                 "morphology=/no/such.swc"]) == 2
    assert "no/such.swc" in capsys.readouterr().err


@needs_native
def test_tiny_sweep_writes_parquet_and_fig4(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    results = str(tmp_path / "results")
    common = ["--results", results]
    assert main([*common, "run", "reduction", "--config", str(config), "--tracking-uri", "none"]) == 0
    rows = ResultStore(results).read("reduction")
    assert set(rows["kind"]) == {"multicompartment", "soma", "soma_area", "soma_area_c", "hybrid", "cost"}
    h = rows[rows["kind"] == "hybrid"]
    assert len(h) == 2 and set(h["status"]) <= {"ok", "diverged"}
    for col in ("rmse_train", "rmse_long", "rmse_amp_0.8", "rmse_amplitudes", "rmse_noise", "rmse_heldout",
                "train_time_s", "converged"):
        assert col in h and h[col].notna().all()
    multi = rows[rows["kind"] == "multicompartment"].set_index("simulator")
    if pd.notna(multi.loc["neuron"].get("neuron_mean_abs_diff_mv")):
        assert multi.loc["neuron", "neuron_mean_abs_diff_mv"] < 0.5
    cost = rows[rows["kind"] == "cost"]
    assert set(cost["model"]) >= {"multicompartment", "soma", "hybrid"} and (cost["cost_1s_s"] > 0).all()
    assert len(cost[cost["model"] == "hybrid"]) == 2  # one per architecture (N_z 1 and 2, width 8)
    assert main([*common, "figures", "reduction"]) == 0
    fig = Path(results) / "figures" / "fig4_reduction.png"
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "hybrid" in (Path(results) / "figures" / "reduction_tables.md").read_text()
    # Resumable: a second run finds every job done.
    assert main([*common, "run", "reduction", "--config", str(config), "--tracking-uri", "none"]) == 0
    assert len(ResultStore(results).read("reduction")) == len(rows)


def test_amplitude_errors_split_trained_and_held_out_steps() -> None:
    from analysis.reduction import amplitude_errors

    row = pd.Series({"rmse_train": 1.5, "rmse_train_0.45": 0.9, "rmse_train_noise_1": 2.0, "rmse_amp_0.5": 3.0,
                     "rmse_amp_0.425": 1.0, "rmse_amplitudes": 2.0, "rmse_long": 2.2, "v_train": [1.0, 2.0]})
    trained, held = amplitude_errors(row, 0.65)
    assert trained == ([0.45, 0.65], [0.9, 1.5])
    assert held == ([0.425, 0.5], [1.0, 3.0])


@needs_native
def test_the_hybrid_learns_what_the_soma_alone_cannot() -> None:
    """Quick schedule on the generated cell: the hybrid's training RMSE is below the fitted-area soma's.

    Measured: hybrid (N_z 4, width 32, one seed) 6.2 mV, soma with fitted area 21.0 mV.
    """
    config = load_config(ReductionConfig, None, ["n_latents=[4]", "seeds=[0]", "neuron=false"],
                         preset=get_experiment("reduction").presets()["quick"])
    setting = setup(config, morphology_text(config))
    soma = run_baselines(setting, config).set_index("kind").loc["soma_area", "rmse_train"]
    learned = run_hybrids(setting, config, 32)
    assert (learned["status"] == "ok").all()
    assert learned["rmse_train"].max() < 0.5 * soma
