"""The batched single compartment: batching, schemes, torchdiffeq, the compiled kernel, stimuli."""

import numpy as np
import pytest
import torch

from channelzoo.models import hh_paper
from suite.sim import Membrane, SingleCompartment, StepCurrent, kernel, ou_current
from suite.sim.ode import integrate
from suite.sim.spikes import coincidence_factor, spike_times

F64 = torch.float64


def paper_cell(n: int, theta: float = 0.0) -> SingleCompartment:
    model = hh_paper()
    return SingleCompartment(Membrane(model.channels, n_sites=n, dtype=F64, temperature=model.temperature),
                             theta=theta)


def test_cells_of_a_batch_are_independent() -> None:
    amps = torch.tensor([5.0, 15.0, 25.0], dtype=F64)
    stim = StepCurrent(amps, 5.0, 45.0)
    together = paper_cell(3).simulate(stim.sample(0.05, 600), 0.05, v0=-70.0).v
    for i in range(3):
        alone = paper_cell(1).simulate(StepCurrent(amps[i:i + 1], 5.0, 45.0).sample(0.05, 600), 0.05, v0=-70.0).v
        torch.testing.assert_close(together[:, i], alone[:, 0])


def test_crank_nicolson_converges_to_the_adaptive_solution() -> None:
    stim = StepCurrent(torch.tensor([15.0], dtype=F64), 5.0, 45.0)
    t = torch.arange(0.0, 30.01, 0.1, dtype=F64)
    ref = integrate(paper_cell(1).membrane, stim, t, -70.0, method="dopri5", rtol=1e-7, atol=1e-7).v[:, 0]
    errors = {}
    for theta in (0.0, 0.5):
        v = paper_cell(1, theta).simulate(stim.sample(0.01, 3000), 0.01, v0=-70.0, record_every=10).v[:, 0]
        errors[theta] = (v - ref).square().mean().sqrt().item()
    assert errors[0.5] < 0.3 < errors[0.0]


def test_record_every_and_keep_gates() -> None:
    stim = StepCurrent(torch.tensor([10.0, 0.0], dtype=F64), 1.0, 5.0)
    tr = paper_cell(2).simulate(stim.sample(0.025, 400), 0.025, v0=-70.0, record_every=4, keep_gates=True)
    assert tr.v.shape == (101, 2) and tr.x.shape == (101, 3, 2) and tr.t[1].item() == pytest.approx(0.1)


@pytest.mark.skipif(not kernel.available(), reason="no C compiler")
def test_kernel_matches_the_torch_simulator_and_its_adjoint_matches_autograd() -> None:
    cell = paper_cell(2, theta=0.5)
    mem = cell.membrane
    layout = kernel.GateLayout.of(mem)
    vgrid = -100.0 + 0.01 * torch.arange(16001, dtype=F64)
    inf, tau = mem.gate_rates(vgrid)
    dt, steps = 0.025, 800
    stim = StepCurrent(torch.tensor([10.0, 15.0], dtype=F64), 2.0, 18.0).sample(dt, steps)
    ref = cell.simulate(stim, dt, v0=-70.0).v.T
    v0 = torch.full((2,), -70.0, dtype=F64)
    x0 = mem.init_state(v0).T
    args = (v0, x0, stim.T.contiguous(), torch.ones(2, dtype=F64), mem.gbar.T, mem.e_rev.T, inf[None],
            torch.exp(-dt / tau)[None], layout, -100.0, 0.01, dt, 0.5)
    v = kernel.simulate(*args)
    assert (v - ref).abs().max() < 1e-3  # table interpolation at 0.01 mV only

    # The adjoint, on coarse per-cell tables, against autograd through the torch reference.
    coarse = -100.0 + 1.0 * torch.arange(161, dtype=F64)
    ci, ct = mem.gate_rates(coarse)
    tinf = ci[None].expand(2, -1, -1).clone().requires_grad_()
    tdec = torch.exp(-dt / ct)[None].expand(2, -1, -1).clone().requires_grad_()
    gbar = mem.gbar.T.clone().requires_grad_()
    short = (v0, x0, stim[:200].T.contiguous(), torch.ones(2, dtype=F64), gbar, mem.e_rev.T, tinf, tdec, layout,
             -100.0, 1.0, dt, 0.5)
    w = torch.randn(2, 201, dtype=F64, generator=torch.Generator().manual_seed(0))
    force = (torch.full((2, 200), -60.0, dtype=F64), torch.tensor([0.0, 5e-4], dtype=F64))
    for extra in ((), force):  # free, and forced towards a voltage (teacher forcing)
        g_kernel = torch.autograd.grad((kernel.rollout(*short, *extra) * w).sum(), (tinf, tdec, gbar))
        g_torch = torch.autograd.grad((kernel.rollout_torch(*short, *extra) * w).sum(), (tinf, tdec, gbar))
        for a, b in zip(g_kernel, g_torch, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


def test_adjoint_solver_gives_the_same_gradient_over_a_short_span() -> None:
    """torchdiffeq's continuous adjoint re-integrates the state backwards in time, which grows like
    e^(t / tau_m) for a conductance model: fine over a millisecond, NaN over a few (hence the kernel's
    discrete adjoint for training)."""
    gbar = torch.nn.Parameter(torch.tensor([0.12, 0.036, 0.0003], dtype=F64))
    model = hh_paper()
    stim = StepCurrent(torch.tensor([15.0], dtype=F64), 0.2, 5.0)
    t = torch.linspace(0, 1, 5, dtype=F64)
    grads = []
    for adjoint in (False, True):
        mem = Membrane(model.channels, gbar=gbar, dtype=F64, temperature=6.3)
        v = integrate(mem, stim, t, -70.0, method="rk4", adjoint=adjoint, options={"step_size": 0.01}).v
        (g,) = torch.autograd.grad(v.sum(), gbar)
        grads.append(g)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_step_current_is_sampled_at_step_midpoints() -> None:
    s = StepCurrent(torch.tensor([2.0]), 1.0, 2.0).sample(0.5, 6)[:, 0]
    assert s.tolist() == [0.0, 0.0, 2.0, 2.0, 0.0, 0.0]


def test_ou_current_has_its_mean_and_sd_and_is_seeded() -> None:
    a = ou_current(200, 200.0, 5.0, 2.0, tau=2.0, grid_dt=0.1, seed=3, dtype=F64)
    b = ou_current(200, 200.0, 5.0, 2.0, tau=2.0, grid_dt=0.1, seed=3, dtype=F64)
    assert torch.equal(a.values, b.values)
    assert a.values.mean().item() == pytest.approx(5.0, abs=0.1)
    assert a.values.std().item() == pytest.approx(2.0, abs=0.1)


def test_coincidence_factor() -> None:
    ref = np.array([10.0, 30.0, 50.0])
    assert coincidence_factor(ref, ref + 0.5, 100.0) == pytest.approx(1.0)
    assert coincidence_factor(ref, np.array([20.0, 40.0]), 100.0) < 0.1
    t = np.arange(0, 10, 0.1)
    v = np.where((t > 2) & (t < 3), 20.0, -60.0)
    assert spike_times(t, v) == pytest.approx([2.1 - 0.1 * 20 / 80], abs=1e-9)
