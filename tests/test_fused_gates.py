"""The fused gate kernel: torch autograd's per-gate losses and gradients, one gate's NaN stays its own, fits agree."""

from __future__ import annotations

import math

import pytest
import torch
from test_gates_ensemble import V, boltzmann_bell_targets

from suite.gates import NeuralGateEnsemble, make_model, select_gates
from suite.train import fused_gates
from suite.train.curve_fit import LOSSES, CurveFitConfig, Targets, fit_curves

pytestmark = pytest.mark.skipif(fused_gates.load(torch.float64) is None, reason="no C compiler for the kernel")

# float64: the kernel's own exp and tanh are accurate to ~1 ulp, so only summation order differs from torch.
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}


def _random_gates(size: int, width: int, depth: int, dtype: torch.dtype, seed: int = 0) -> NeuralGateEnsemble:
    """An ensemble moved off its initial point, so LayerNorm affines and output weights are all non-trivial."""
    model = NeuralGateEnsemble(size, width=width, depth=depth, dtype=dtype, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=dtype))
    return model


def _targets(size: int, dtype: torch.dtype, seed: int = 0) -> Targets:
    gen = torch.Generator().manual_seed(seed)
    inf = torch.rand(size, V.numel(), generator=gen, dtype=dtype)
    tau = 0.1 + 5.0 * torch.rand(size, V.numel(), generator=gen, dtype=dtype)
    return Targets.of(inf, tau)


def _autograd(model: NeuralGateEnsemble, v: torch.Tensor, targets: Targets, loss: str,
              active: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The reference: torch's forward and backward of the summed active losses (as curve_fit's torch path)."""
    model.zero_grad(set_to_none=True)
    inf, tau = model(v)
    per_gate = LOSSES[loss](inf, tau, targets)
    torch.where(active, per_gate, torch.zeros_like(per_gate)).sum().backward()
    return per_gate.detach(), inf.detach(), tau.detach(), *(p.grad.clone() for p in model.parameters())


def _kernel(model: NeuralGateEnsemble, v: torch.Tensor, targets: Targets, loss: str,
            active: torch.Tensor) -> tuple[torch.Tensor, ...]:
    model.zero_grad(set_to_none=True)
    per_gate, inf, tau = fused_gates.gate_loss_and_grad(model, v, targets, loss, active)
    return per_gate, inf, tau, *(p.grad.clone() for p in model.parameters())


def _assert_close(got: tuple[torch.Tensor, ...], want: tuple[torch.Tensor, ...], rel: float) -> None:
    """Each tensor within ``rel`` of the reference, relative to the reference's largest entry."""
    names = ["loss", "inf", "tau"] + [f"grad {i}" for i in range(len(want) - 3)]
    for name, a, b in zip(names, got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=rel, atol=rel * float(b.abs().max()), msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("width", "depth"), [(8, 1), (8, 2), (32, 1), (32, 2), (32, 3), (5, 2)])
@pytest.mark.parametrize("loss", ["paper", "log_tau"])
def test_kernel_matches_autograd(dtype: torch.dtype, width: int, depth: int, loss: str) -> None:
    model = _random_gates(5, width, depth, dtype)
    v, targets = V.to(dtype).expand(5, -1), _targets(5, dtype)
    active = torch.tensor([True, True, False, True, True])  # an inactive gate: zero gradient, as torch.where gives
    _assert_close(_kernel(model, v, targets, loss, active), _autograd(model, v, targets, loss, active),
                  TOLERANCE[dtype])


def test_each_gate_may_have_its_own_voltage_grid() -> None:
    model = _random_gates(3, 16, 2, torch.float64)
    v = V.expand(3, -1) + torch.tensor([[0.0], [7.0], [-20.0]], dtype=torch.float64)
    targets, active = _targets(3, torch.float64), torch.ones(3, dtype=torch.bool)
    _assert_close(_kernel(model, v, targets, "paper", active), _autograd(model, v, targets, "paper", active), 1e-10)


@pytest.mark.parametrize("loss", ["paper", "log_tau"])
def test_a_nan_target_poisons_only_its_own_gate(loss: str) -> None:
    model = _random_gates(4, 32, 2, torch.float64)
    inf_t, tau_t = torch.rand(4, V.numel(), dtype=torch.float64), torch.ones(4, V.numel(), dtype=torch.float64)
    tau_t[2, 5] = math.nan
    v, targets, active = V.expand(4, -1), Targets.of(inf_t, tau_t), torch.ones(4, dtype=torch.bool)
    got, want = _kernel(model, v, targets, loss, active), _autograd(model, v, targets, loss, active)
    assert torch.isfinite(got[0]).tolist() == [True, True, False, True]
    healthy = [0, 1, 3]
    _assert_close(tuple(t[healthy] for t in got), tuple(t[healthy] for t in want), 1e-10)


@pytest.mark.parametrize("loss", ["paper", "log_tau"])
def test_an_overflowing_tau_makes_the_loss_non_finite(loss: str) -> None:
    model = _random_gates(2, 8, 1, torch.float32)
    with torch.no_grad():
        model.out_bias[1, 0, 1] = 200.0  # tau = exp(200) overflows float32 at every point
    targets, active = _targets(2, torch.float32), torch.ones(2, dtype=torch.bool)
    per_gate, _, tau = fused_gates.gate_loss_and_grad(model, V.float(), targets, loss, active)
    assert torch.isfinite(per_gate).tolist() == [True, False]
    assert torch.isinf(tau[1]).all()


def test_threads_change_nothing() -> None:
    model = _random_gates(37, 32, 2, torch.float32)
    v, targets, active = V.float().expand(37, -1), _targets(37, torch.float32), torch.ones(37, dtype=torch.bool)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _kernel(model, v, targets, "paper", active)
        torch.set_num_threads(2)
        two = _kernel(model, v, targets, "paper", active)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)


def test_unsupported_models_are_named() -> None:
    assert fused_gates.unsupported(NeuralGateEnsemble(2, activation="silu"), "paper") is not None
    assert fused_gates.unsupported(NeuralGateEnsemble(2), "l1") is not None
    assert fused_gates.unsupported(NeuralGateEnsemble(2), "paper") is None


FIT = CurveFitConfig(steps_per_stage=30, stages=2, lr=1e-2, warmup_fraction=0.1, check_every=10)


@pytest.mark.parametrize("loss", ["paper", "log_tau"])
def test_a_fit_with_the_kernel_follows_the_torch_fit(loss: str) -> None:
    inf_t, tau_t = boltzmann_bell_targets()
    fused, reference = (make_model("node", 3, dtype=torch.float64, seed=0) for _ in range(2))
    a = fit_curves(fused, V, inf_t, tau_t, CurveFitConfig(**{**FIT.__dict__, "loss": loss, "kernel": True}))
    b = fit_curves(reference, V, inf_t, tau_t, CurveFitConfig(**{**FIT.__dict__, "loss": loss, "kernel": False}))
    assert (a.backend, b.backend) == ("kernel", "torch") and not a.compiled
    torch.testing.assert_close(a.loss_history, b.loss_history, rtol=1e-9, atol=1e-12)
    for p, q in zip(fused.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)


def test_a_poisoned_gate_diverges_alone_with_the_kernel() -> None:
    inf_t, tau_t = boltzmann_bell_targets()
    tau_t[1, 10] = math.inf
    config = CurveFitConfig(**{**FIT.__dict__, "kernel": True})
    model = make_model("node", 3, dtype=torch.float64, seed=0)
    healthy = select_gates(model, [0, 2])
    result = fit_curves(model, V, inf_t, tau_t, config)
    assert result.status == ["ok", "diverged", "ok"] and result.diverged_step.tolist() == [-1, 0, -1]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    alone = fit_curves(healthy, V, inf_t[[0, 2]], tau_t[[0, 2]], config)
    torch.testing.assert_close(alone.tau_fit, result.tau_fit[[0, 2]], rtol=0, atol=0)


def test_a_model_the_kernel_cannot_run_falls_back_to_torch() -> None:
    inf_t, tau_t = boltzmann_bell_targets()
    few = {**FIT.__dict__, "steps_per_stage": 2, "stages": 1}
    silu = make_model("node", 3, dtype=torch.float64, activation="silu")
    assert fit_curves(silu, V, inf_t, tau_t, CurveFitConfig(**few)).backend == "torch"  # automatic: silently
    with pytest.warns(UserWarning, match="activation 'silu'"):
        result = fit_curves(silu, V, inf_t, tau_t, CurveFitConfig(**{**few, "kernel": True}))
    assert result.backend == "torch"


@pytest.mark.parametrize(("points", "width"), [(1, 1), (7, 3), (13, 17)])
def test_any_grid_length_and_width(points: int, width: int) -> None:
    """Rows and grids that fill no whole vector or register tile take the remainder paths."""
    model = _random_gates(3, width, 2, torch.float64)
    v = torch.linspace(-90.0, 50.0, points, dtype=torch.float64).expand(3, -1)
    gen = torch.Generator().manual_seed(3)
    targets = Targets.of(torch.rand(3, points, generator=gen, dtype=torch.float64),
                         1.0 + torch.rand(3, points, generator=gen, dtype=torch.float64))
    active = torch.ones(3, dtype=torch.bool)
    for loss in LOSSES:
        _assert_close(_kernel(model, v, targets, loss, active), _autograd(model, v, targets, loss, active), 1e-10)
