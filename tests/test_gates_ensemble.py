"""Gate ensembles: gate i of a batch computes what gate i alone computes; experts export their curves."""

from __future__ import annotations

import pytest
import torch

from channelzoo.forms import apply_form
from channelzoo.gates import Gate, evaluate_gates
from channelzoo.grid import ICG_GRID_MV
from suite.gates import EXPERT_KINDS, MODELS, NeuralGateEnsemble, make_model, select_gates

V = torch.tensor(ICG_GRID_MV, dtype=torch.float64)


def boltzmann_bell_targets(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Three gates: activation, inactivation and a slow one, with bell-shaped time constants."""
    p_inf = torch.tensor([[1.0, -30.0, 8.0], [1.0, -60.0, -6.0], [1.0, -10.0, 15.0]], dtype=torch.float64)
    p_tau = torch.tensor([[0.5, 5.0, -30.0, 10.0, -30.0, 20.0], [1.0, 20.0, -60.0, 15.0, -50.0, 15.0],
                          [0.1, 40.0, 0.0, 30.0, 0.0, 30.0]], dtype=torch.float64)
    v = V.expand(3, -1)
    return apply_form("HHSigmoidVariable", v, p_inf).to(dtype), apply_form("BellTau", v, p_tau).to(dtype)


def _alone(model: NeuralGateEnsemble, i: int) -> NeuralGateEnsemble:
    single = NeuralGateEnsemble(1, width=model.width, depth=model.depth, activation=model.activation, seed=123,
                                dtype=next(model.parameters()).dtype)
    single.load_state_dict({k: t[i:i + 1] for k, t in model.state_dict().items()})
    return single


@pytest.mark.parametrize(("width", "depth", "activation"), [(32, 2, "tanh"), (16, 3, "silu")])
def test_batched_neural_gates_equal_each_gate_alone(width: int, depth: int, activation: str) -> None:
    model = NeuralGateEnsemble(5, width=width, depth=depth, activation=activation, seed=0)
    v = torch.linspace(-100, 100, 40).expand(5, -1) + 3.0 * torch.arange(5.0)[:, None]  # each gate its own V
    inf, tau = model(v)
    for i in range(5):
        inf_i, tau_i = _alone(model, i)(v[i:i + 1])
        torch.testing.assert_close(inf_i, inf[i:i + 1], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(tau_i, tau[i:i + 1], atol=1e-6, rtol=1e-6)


def test_neural_gate_starts_near_half_open_and_one_ms() -> None:
    inf, tau = NeuralGateEnsemble(64, seed=1)(V.float().expand(64, -1))
    assert (inf - 0.5).abs().max() < 0.35
    assert tau.log().abs().max() < 1.5


def test_seed_fixes_initial_weights() -> None:
    a, b, c = (NeuralGateEnsemble(4, seed=s).out_weight for s in (7, 7, 8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_float64_on_request() -> None:
    model = make_model("node", 3, dtype=torch.float64)
    inf, tau = model(V.expand(3, -1))
    assert inf.dtype == tau.dtype == torch.float64


def test_select_gates_keeps_their_weights() -> None:
    model = make_model("node", 6, seed=3)
    sub = select_gates(model, [4, 1])
    assert sub.size == 2
    v = V.float().expand(2, -1)
    torch.testing.assert_close(sub(v)[1], model(V.float().expand(6, -1))[1][[4, 1]])


@pytest.mark.parametrize("kind", list(EXPERT_KINDS))
def test_expert_export_reproduces_its_curves(kind: str) -> None:
    inf_t, tau_t = boltzmann_bell_targets()
    model = make_model(kind, 3, inf_t, tau_t, V, dtype=torch.float64, seed=0, init_noise=0.05)
    inf, tau = model(V.expand(3, -1))
    gates = [Gate(f"g{i}", 1, kinetics) for i, kinetics in enumerate(model.export())]
    inf_z, tau_z = evaluate_gates(gates, V)
    torch.testing.assert_close(inf_z, inf.detach(), atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(tau_z, tau.detach(), atol=1e-12, rtol=1e-10)


def test_expert_start_is_read_off_the_data() -> None:
    inf_t, tau_t = boltzmann_bell_targets()
    model = make_model("boltzmann_bell", 3, inf_t, tau_t, V, dtype=torch.float64)
    inf, tau = model(V.expand(3, -1))
    # A Boltzmann target is recovered exactly by the logit fit; the bell only roughly.
    torch.testing.assert_close(inf.detach(), inf_t, atol=1e-6, rtol=0)
    assert ((tau - tau_t).square().mean(-1).sqrt() / tau_t.std(-1)).max() < 0.5


def test_unknown_kind_and_missing_targets_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown model kind 'sm9'"):
        make_model("sm9", 2)
    with pytest.raises(ValueError, match="starts from the data"):
        make_model("sm1", 2)
    assert set(MODELS) == {"node", "sm1", "sm2", "sm3", "sm4", "sm5", "boltzmann_bell"}
