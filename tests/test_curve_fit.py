"""Batched curve fitting: each gate trains as it would alone, a diverging gate stops alone, fits converge."""

from __future__ import annotations

import math

import pytest
import torch
from test_gates_ensemble import V, boltzmann_bell_targets

from suite.gates import make_model, select_gates
from suite.train.curve_fit import (
    CurveFitConfig,
    best_per_group,
    curve_metrics,
    fit_curves,
    repeat_for_seeds,
)
from suite.train.schedule import warmup_cosine

FEW_STEPS = CurveFitConfig(steps_per_stage=4, stages=2, lr=1e-2, warmup_fraction=0.25, check_every=2)


@pytest.mark.parametrize(("kind", "kernel"), [("node", False), ("node", None), ("sm1", None)])
def test_batched_steps_equal_the_same_steps_alone(kind: str, kernel: bool | None) -> None:
    inf_t, tau_t = boltzmann_bell_targets()
    batched = make_model(kind, 3, inf_t, tau_t, V, dtype=torch.float64, seed=0)
    singles = [select_gates(batched, [i]) for i in range(3)]
    config = CurveFitConfig(**{**FEW_STEPS.__dict__, "kernel": kernel})
    fit_curves(batched, V, inf_t, tau_t, config)
    for i, single in enumerate(singles):
        fit_curves(single, V, inf_t[i:i + 1], tau_t[i:i + 1], config)
        for p_alone, p_batched in zip(single.parameters(), batched.parameters(), strict=True):
            torch.testing.assert_close(p_alone, p_batched[i:i + 1], atol=1e-12, rtol=1e-10)


def test_chunks_of_gates_change_nothing() -> None:
    inf_t, tau_t = boltzmann_bell_targets()
    whole, chunked = (make_model("node", 3, dtype=torch.float64, seed=0) for _ in range(2))
    torch_path = {**FEW_STEPS.__dict__, "kernel": False}  # chunks shape the torch path only
    a = fit_curves(whole, V, inf_t, tau_t, CurveFitConfig(**{**torch_path, "gate_chunk": 3}))
    b = fit_curves(chunked, V, inf_t, tau_t, CurveFitConfig(**{**torch_path, "gate_chunk": 2}))
    torch.testing.assert_close(a.tau_fit, b.tau_fit, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(a.loss_history, b.loss_history, atol=1e-12, rtol=1e-10)


def test_a_poisoned_gate_diverges_alone() -> None:
    inf_t, tau_t = boltzmann_bell_targets()
    tau_t[1, 10] = math.inf
    model = make_model("node", 3, dtype=torch.float64, seed=0)
    healthy = select_gates(model, [0, 2])
    result = fit_curves(model, V, inf_t, tau_t, CurveFitConfig(**{**FEW_STEPS.__dict__, "gate_chunk": 2}))
    assert result.status == ["ok", "diverged", "ok"]
    assert result.diverged_step.tolist() == [-1, 0, -1]
    assert list(result.columns()["status"]) == ["ok", "diverged", "ok"]
    assert torch.isfinite(result.loss[[0, 2]]).all() and torch.isfinite(result.inf_fit).all()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # The healthy gates end exactly where they end without the poisoned one.
    alone = fit_curves(healthy, V, inf_t[[0, 2]], tau_t[[0, 2]], FEW_STEPS)
    torch.testing.assert_close(alone.tau_fit, result.tau_fit[[0, 2]], atol=1e-12, rtol=1e-10)


def test_a_gate_that_blows_up_midway_is_rolled_back_to_finite_parameters() -> None:
    inf_t, tau_t = boltzmann_bell_targets()
    model = make_model("node", 3, dtype=torch.float64, seed=0)
    with torch.no_grad():
        model.out_bias[2, 0, 1] = 1e4  # tau = exp(1e4) = inf on every point of gate 2
    result = fit_curves(model, V, inf_t, tau_t, FEW_STEPS)
    assert result.status == ["ok", "ok", "diverged"]
    assert torch.isfinite(result.loss[:2]).all()


@pytest.mark.parametrize(("kind", "config"), [
    ("node", CurveFitConfig(steps_per_stage=300, stages=2, lr=1e-2, check_every=10)),
    ("boltzmann_bell", CurveFitConfig(steps_per_stage=300, stages=1, lr=1e-2, check_every=10)),
])
def test_a_short_fit_of_known_curves_reaches_err1_below_five_percent(kind: str, config: CurveFitConfig) -> None:
    inf_t, tau_t = boltzmann_bell_targets(torch.float32)
    result = fit_curves(make_model(kind, 3, inf_t, tau_t, V, seed=0), V, inf_t, tau_t, config)
    assert result.status == ["ok"] * 3
    assert (result.metrics["err1_inf"] < 0.05).all() and (result.metrics["err1_tau"] < 0.05).all()
    reached = result.steps_to_err1
    assert ((reached >= 0) & (reached % config.check_every == 0)).all()
    assert result.loss_history.shape == (len(result.check_steps), 3)


def test_log_tau_loss_fits_in_float64() -> None:
    inf_t, tau_t = boltzmann_bell_targets()
    config = CurveFitConfig(steps_per_stage=300, stages=1, lr=1e-2, loss="log_tau")
    result = fit_curves(make_model("boltzmann_bell", 3, inf_t, tau_t, V, dtype=torch.float64), V, inf_t, tau_t,
                        config)
    assert result.inf_fit.dtype == torch.float64
    assert (result.metrics["err1_tau"] < 0.05).all()


def test_metrics_follow_icg_definitions() -> None:
    target = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    fit = target + torch.tensor([[0.1, -0.1, 0.1, -0.1]])
    m = curve_metrics(fit, fit, target, target)
    torch.testing.assert_close(m["mse_inf"], torch.tensor([0.01]))
    torch.testing.assert_close(m["err1_tau"], torch.tensor([0.1 / math.sqrt(1.25)]))  # RMSE / population std
    torch.testing.assert_close(m["err3_inf"], torch.tensor([0.2 / math.sqrt(30.0)]))


def test_repeated_seeds_and_best_of_each_group() -> None:
    inf_t, tau_t = boltzmann_bell_targets()
    inf_r, tau_r, gate, seed = repeat_for_seeds(inf_t, tau_t, 2)
    assert gate.tolist() == [0, 0, 1, 1, 2, 2] and seed.tolist() == [0, 1, 0, 1, 0, 1]
    torch.testing.assert_close(inf_r[3], inf_t[1])
    score = torch.tensor([0.5, 0.2, math.nan, 0.1, math.inf, math.nan])
    assert best_per_group(score, gate, 3).tolist() == [1, 3, 4]


def test_schedule_warms_up_then_decays() -> None:
    lrs = warmup_cosine(100, 1e-3, 10, final=1e-5)
    assert len(lrs) == 100 and lrs[0] < lrs[9] < lrs[10] == pytest.approx(1e-3)
    assert max(lrs) == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-5)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_unknown_loss_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown loss 'l1'"):
        CurveFitConfig(loss="l1")


def test_a_failing_compiler_falls_back_to_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        def fail(*a: object, **k: object) -> None:
            raise RuntimeError("no C++ compiler")
        return fail

    monkeypatch.setattr(torch, "compile", broken)
    inf_t, tau_t = boltzmann_bell_targets()
    config = CurveFitConfig(**{**FEW_STEPS.__dict__, "compile": True, "kernel": False})
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler"):
        result = fit_curves(make_model("node", 3, dtype=torch.float64), V, inf_t, tau_t, config)
    assert not result.compiled and result.status == ["ok"] * 3


@pytest.mark.slow
def test_compiled_step_matches_eager() -> None:
    inf_t, tau_t = boltzmann_bell_targets()
    eager, compiled = (make_model("node", 3, dtype=torch.float64, seed=0) for _ in range(2))
    fit_curves(eager, V, inf_t, tau_t, CurveFitConfig(**{**FEW_STEPS.__dict__, "kernel": False}))
    config = CurveFitConfig(**{**FEW_STEPS.__dict__, "compile": True, "gate_chunk": 2, "kernel": False})
    result = fit_curves(compiled, V, inf_t, tau_t, config)
    assert result.compiled
    for a, b in zip(eager.parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)
