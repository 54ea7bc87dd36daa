"""The cable simulator: geometry as NEURON computes it, the O(N) tree solve, and the cable equation itself."""

import math

import numpy as np
import pytest
import torch

from channelzoo.models import leak, pospischil_jaxley
from suite.sim import native
from suite.sim.cable import Cable, axial_current
from suite.sim.compartments import compartmentalise, nseg_d_lambda
from suite.sim.generated_morphology import pyramidal
from suite.sim.hines import HinesTree, tree_solve
from suite.sim.morphology import parse_swc, sections

NATIVE = native.load() is not None
BACKENDS = ["torch", *(["native"] if NATIVE else [])]


pytestmark = pytest.mark.usefixtures("one_thread")


def cylinder(length: float = 1000.0, diam: float = 2.0, n_points: int = 11) -> str:
    """A soma-less straight cable along x."""
    lines = [f"1 3 0 0 0 {diam / 2} -1"]
    for i in range(1, n_points):
        lines.append(f"{i + 1} 3 {length * i / (n_points - 1)} 0 0 {diam / 2} {i}")
    return "\n".join(lines) + "\n"


def test_a_cylinder_has_the_area_and_resistance_of_a_cylinder() -> None:
    comp = compartmentalise(parse_swc(cylinder()), nseg=10, ra=100.0)
    assert comp.n_nodes == 10
    np.testing.assert_allclose(comp.area, math.pi * 2.0 * 100.0)
    # Between neighbouring centres: 100 um of 2 um cable at 100 Ohm cm = 4 Ra L / (pi d^2), in MOhm.
    r = 4 * 100.0 * 100e-4 / (math.pi * (2e-4) ** 2) / 1e6
    np.testing.assert_allclose(1.0 / comp.g_axial[1:], r, rtol=1e-9)


def test_d_lambda_gives_odd_counts_that_grow_with_length() -> None:
    short, long = (sections(parse_swc(cylinder(length)))[0] for length in (20.0, 2000.0))
    counts = [nseg_d_lambda(s, 100.0, 1.0) for s in (short, long)]
    assert all(c % 2 == 1 for c in counts) and counts[0] == 1 and counts[1] > 5


def tree_matrix(tree: HinesTree, d: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    a = torch.diag_embed(d)
    for i in range(1, tree.n_nodes):
        a[:, i, tree.parent[i]] = a[:, tree.parent[i], i] = -g[i]
    return a


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_tree_solve_equals_a_dense_solve_and_differentiates(backend: str) -> None:
    comp = compartmentalise(pyramidal())
    tree = HinesTree.from_parents(comp.parent)
    gen = torch.Generator().manual_seed(0)
    g = torch.tensor(comp.g_axial)
    d = (tree.neighbour_sum(g) + torch.rand(3, comp.n_nodes, generator=gen, dtype=torch.float64)).requires_grad_()
    rhs = torch.randn(3, comp.n_nodes, generator=gen, dtype=torch.float64).requires_grad_()
    x = tree_solve(tree, d, g, rhs, backend)
    dense = torch.linalg.solve(tree_matrix(tree, d, g), rhs)
    torch.testing.assert_close(x, dense)
    w = torch.randn_like(x)
    ours = torch.autograd.grad((x * w).sum(), [d, rhs])
    ref = torch.autograd.grad((dense * w).sum(), [d, rhs])
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b)


def test_hines_order_is_required() -> None:
    with pytest.raises(ValueError, match="Hines order"):
        HinesTree.from_parents(np.array([-1, 2, 0]))


def passive_cable(length: float = 1000.0) -> Cable:
    comp = compartmentalise(parse_swc(cylinder(length)), nseg=50, ra=100.0)
    return Cable(comp, [leak(1e-4, -70.0)], capacitance=1.0)


def test_steady_state_input_resistance_matches_cable_theory() -> None:
    """A sealed-end passive cable injected at one end: V(x) = I r_a lambda cosh((L - x) / lambda) / sinh(L / lambda),
    read at the first node (the middle of the first segment)."""
    cable = passive_cable()
    amp, steps = 0.01, 16000  # 400 ms at dt 0.025: far past the 10 ms membrane time constant
    trace = cable.simulate(torch.full((1, steps), amp, dtype=torch.float64), 0.025, -70.0, stim_nodes=[0],
                           record=[0], backend="torch" if not NATIVE else "auto")
    d_cm, rm, ra, length_cm = 2e-4, 1.0 / 1e-4, 100.0, 1000e-4
    lam = math.sqrt(rm * d_cm / (4 * ra))
    x = cable.compartments.x[0] * length_cm
    r = 4 * ra / (math.pi * d_cm**2) * lam * math.cosh((length_cm - x) / lam) / math.sinh(length_cm / lam)  # Ohm
    dv = float(trace.v[0, -1, 0]) + 70.0
    assert dv == pytest.approx(amp * 1e-9 * r * 1e3, rel=2e-3)


def ca1_like() -> Cable:
    return Cable(compartmentalise(pyramidal()), pospischil_jaxley().channels, 1.0, temperature=36.0)


def soma_step(steps: int, amp: float = 0.65) -> torch.Tensor:
    mid = (torch.arange(steps, dtype=torch.float64) + 0.5) * 0.025
    return amp * ((mid >= 2.0) & (mid < 20.0)).double()


@pytest.mark.skipif(not NATIVE, reason="no C compiler for the fused kernel")
@pytest.mark.parametrize("method", ["backward_euler", "crank_nicolson"])
def test_fused_and_torch_backends_agree(method: str) -> None:
    cable = ca1_like()
    stim = soma_step(800).unsqueeze(0)
    fused = cable.simulate(stim, 0.025, -70.0, method=method, backend="fused").v
    eager = cable.simulate(stim, 0.025, -70.0, method=method, backend="torch").v
    assert (fused > 0).any(), "the step should make the cell spike"
    assert (fused - eager).abs().max() < 0.05  # tabulated vs exact rates


def test_a_batch_is_its_cells_run_one_by_one() -> None:
    cable = ca1_like()
    stim = torch.stack([soma_step(400, 0.3), soma_step(400, 0.9)])
    both = cable.simulate(stim, 0.025, -70.0).v
    for i in range(2):
        one = cable.simulate(stim[i:i + 1], 0.025, -70.0).v
        torch.testing.assert_close(both[i], one[0])


def test_per_cell_conductances_change_only_their_cell() -> None:
    cable = ca1_like()
    stim = soma_step(400).expand(2, -1)
    gbar = torch.stack([cable.gbar, cable.gbar * 0.5])
    v = cable.simulate(stim, 0.025, -70.0, gbar=gbar).v
    torch.testing.assert_close(v[0], cable.simulate(stim[:1], 0.025, -70.0).v[0])
    assert (v[1] - v[0]).abs().max() > 1.0


def test_crank_nicolson_is_second_order() -> None:
    """Halving dt shrinks Crank-Nicolson's error about 4x on a passive cable (backward Euler: 2x)."""
    cable = passive_cable(300.0)
    ref = cable.simulate(torch.full((1, 3200), 0.05, dtype=torch.float64), 0.003125, -70.0,
                         method="crank_nicolson").v[0, -1, 0]
    errs = []
    for dt in (0.1, 0.05):
        n = int(round(10.0 / dt))
        v = cable.simulate(torch.full((1, n), 0.05, dtype=torch.float64), dt, -70.0, method="crank_nicolson").v
        errs.append(abs(float(v[0, -1, 0] - ref)))
    assert errs[0] / errs[1] > 3.0


def test_gradients_flow_through_the_torch_path() -> None:
    comp = compartmentalise(parse_swc(cylinder(200.0, n_points=3)), nseg=3)
    cable = Cable(comp, pospischil_jaxley().channels, 1.0, temperature=36.0)
    gbar = cable.gbar.clone().unsqueeze(0).requires_grad_()
    v = cable.simulate(soma_step(200, 0.2).unsqueeze(0), 0.025, -70.0, stim_nodes=[0], gbar=gbar).v
    (grad,) = torch.autograd.grad(v.sum(), gbar)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_a_blown_up_cell_is_flagged_not_raised() -> None:
    cable = ca1_like()
    stim = torch.stack([soma_step(200), torch.full((200,), float("nan"), dtype=torch.float64)])
    trace = cable.simulate(stim, 0.025, -70.0)
    assert trace.ok.tolist() == [True, False]


def test_axial_current_balances_the_soma() -> None:
    """At rest every node sits at the same voltage: no axial current."""
    comp = compartmentalise(pyramidal())
    v = torch.full((5, comp.n_nodes), -70.0, dtype=torch.float64)
    assert axial_current(comp, v).abs().max() < 1e-12
