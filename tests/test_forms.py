"""Rate forms and gate kinetics against values computed by hand."""

import math

import pytest
import torch

from channelzoo.errors import ZooError
from channelzoo.forms import apply_form
from channelzoo.gates import AlphaBeta, Gate, GateBank, InfTau, Rate, Tabulated, evaluate_gates


def one(form: str, params: list[float], v: float) -> float:
    f64 = torch.float64
    return apply_form(form, torch.tensor([[v]], dtype=f64), torch.tensor([params], dtype=f64)).item()


@pytest.mark.parametrize(("form", "params", "v", "expected"), [
    ("HHExpRate", [4.0, -65.0, -18.0], -47.0, 4.0 * math.exp(-1.0)),
    ("HHSigmoidRate", [1.0, -35.0, 10.0], -35.0, 0.5),
    ("HHSigmoidRate", [2.0, -35.0, 10.0], -25.0, 2.0 / (1.0 + math.exp(-1.0))),
    ("HHExpLinearRate", [1.0, -40.0, 10.0], -30.0, 1.0 / (1.0 - math.exp(-1.0))),
    ("HHSigmoidVariable", [1.0, -40.0, -6.0], -46.0, 1.0 / (1.0 + math.exp(-1.0))),
    ("BellTau", [0.5, 10.0, -40.0, 20.0, -40.0, 20.0], -40.0, 0.5 + 10.0 / 2.0),
    ("GaussianTau", [1.0, 4.0, -30.0, 10.0], -20.0, 1.0 + 4.0 * math.exp(-1.0)),
    ("ConstantTau", [3.5], 17.0, 3.5),
    ("ICGSigmoid", [0.1, -4.0], -40.0, 0.5),
    ("ICGModifiedSigmoid", [0.1, -4.0, 0.8, 0.1], -40.0, 0.5),
    ("ICGTau1", [-30.0, 50.0, 0.1, 0.05], -30.0, 25.0),
    ("ICGTau2", [-30.0, 50.0, 0.1, 0.0, 0.05, 0.0], -20.0, 50.0 / (math.exp(-1.0) + math.exp(0.5))),
])
def test_form_values(form: str, params: list[float], v: float, expected: float) -> None:
    assert one(form, params, v) == pytest.approx(expected, rel=1e-12)


def test_exp_linear_limit_is_exact_and_smooth() -> None:
    """At V = midpoint x / (1 - e^-x) is 0/0: the form gives its limit, 1, and a finite gradient 1/2."""
    v = torch.tensor([[-40.0], [-40.0 + 1e-7], [-40.0 + 1e-3]], dtype=torch.float64, requires_grad=True)
    p = torch.tensor([[1.0, -40.0, 10.0]] * 3, dtype=torch.float64)
    out = apply_form("HHExpLinearRate", v, p)
    out.sum().backward()
    assert out[0].item() == 1.0
    assert out[1].item() == pytest.approx(1.0 + 1e-8 / 2.0, rel=1e-14)
    assert torch.isfinite(v.grad).all()
    assert v.grad[0].item() == pytest.approx(0.05)  # d/dV = (1/scale) * 1/2
    x = 1e-4
    assert out[2].item() == pytest.approx(x / (1.0 - math.exp(-x)), rel=1e-12)


def test_alpha_beta_gives_inf_and_tau() -> None:
    gate = Gate("n", 4, AlphaBeta(Rate.of("ConstantTau", [0.3]), Rate.of("ConstantTau", [0.1])))
    inf, tau = evaluate_gates([gate], torch.tensor([0.0], dtype=torch.float64))
    assert inf.item() == pytest.approx(0.75)
    assert tau.item() == pytest.approx(2.5)


def test_q10_scales_tau() -> None:
    gate = Gate("m", 1, InfTau(Rate.of("HHSigmoidVariable", [1.0, -40.0, 5.0]), Rate.of("ConstantTau", [6.0])),
                q10=3.0, t_ref=6.3)
    bank = GateBank([gate], dtype=torch.float64)
    v = torch.tensor([[-40.0]], dtype=torch.float64)
    assert bank(v)[1].item() == pytest.approx(6.0)
    assert bank(v, temperature=26.3)[1].item() == pytest.approx(6.0 / 9.0)
    assert bank(v, temperature=26.3)[0].item() == pytest.approx(0.5)


def test_tabulated_interpolates_tau_in_log_space() -> None:
    gate = Gate("h", 1, Tabulated((-100.0, 0.0, 100.0), (1.0, 0.5, 0.0), (1.0, 100.0, 1.0)))
    inf, tau = evaluate_gates([gate], torch.tensor([-150.0, -50.0, 0.0, 50.0, 150.0], dtype=torch.float64))
    assert inf[0].tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    assert tau[0].tolist() == pytest.approx([1.0, 10.0, 100.0, 10.0, 1.0])


def test_bank_keeps_gate_order_across_groups() -> None:
    a = Gate("a", 1, InfTau(Rate.of("HHSigmoidVariable", [1.0, -40.0, 5.0]), Rate.of("ConstantTau", [1.0])))
    b = Gate("b", 1, InfTau(Rate.of("HHSigmoidVariable", [1.0, -40.0, 5.0]), Rate.of("ConstantTau", [2.0])))
    c = Gate("c", 1, Tabulated((-100.0, 100.0), (0.0, 1.0), (3.0, 3.0)))
    v = torch.linspace(-100, 100, 7, dtype=torch.float64)
    _, tau = evaluate_gates([a, c, b, c], v)
    assert tau[:, 0].tolist() == pytest.approx([1.0, 3.0, 2.0, 3.0])


def test_bank_accepts_per_gate_voltages_of_any_shape() -> None:
    gate = Gate("m", 1, InfTau(Rate.of("HHSigmoidVariable", [1.0, 0.0, 1.0]), Rate.of("ConstantTau", [1.0])))
    bank = GateBank([gate, gate], dtype=torch.float64)
    inf, _ = bank(torch.zeros(2, 3, 4, dtype=torch.float64))
    assert inf.shape == (2, 3, 4)
    assert torch.all(inf == 0.5)


def test_definitions_round_trip_and_reject_bad_input() -> None:
    gate = Gate("m", 3, AlphaBeta(Rate.of("HHExpLinearRate", [1.0, -40.0, 10.0]), Rate.of("HHExpRate", [4, -65, -18])),
                q10=3.0, t_ref=6.3)
    assert Gate.from_dict(gate.to_dict()) == gate
    with pytest.raises(ZooError, match="unknown rate form"):
        Rate.of("NoSuchRate", [1.0])
    with pytest.raises(ZooError, match="takes 3 parameters"):
        Rate.of("HHExpRate", [1.0])
    with pytest.raises(ZooError, match="tau must be positive"):
        Tabulated((0.0, 1.0), (0.0, 1.0), (0.0, 1.0))
    with pytest.raises(ZooError, match="unknown kinetics kind"):
        Gate.from_dict({"name": "m", "power": 1, "kinetics": {"kind": "magic"}})
