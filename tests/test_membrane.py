"""The shared membrane layer: steady states, conductances, replaced gates, per-site parameters, gradients."""

import math

import pytest
import torch
from torch import nn

from channelzoo.models import hh, pospischil_rs
from suite.sim import Membrane

F64 = torch.float64


def hh_rates(v: float) -> dict[str, tuple[float, float]]:
    """NEURON hh.mod's alpha and beta at 6.3 C, written out by hand."""
    def vtrap(x: float, y: float) -> float:
        return y * (1 - x / y / 2) if abs(x / y) < 1e-6 else x / (math.exp(x / y) - 1)

    return {"m": (0.1 * vtrap(-(v + 40), 10), 4 * math.exp(-(v + 65) / 18)),
            "h": (0.07 * math.exp(-(v + 65) / 20), 1 / (math.exp(-(v + 35) / 10) + 1)),
            "n": (0.01 * vtrap(-(v + 55), 10), 0.125 * math.exp(-(v + 65) / 80))}


class TrueN(nn.Module):
    """A stand-in for a neural gate: computes HH's n exactly, v [1, N] -> (x_inf, tau)."""

    def forward(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = 0.1 * ((v + 55) / 10) / (-torch.expm1(-(v + 55) / 10))
        b = 0.125 * torch.exp(-(v + 65) / 80)
        return a / (a + b), 1 / (a + b)


@pytest.mark.parametrize("v", [-80.0, -65.0, -40.0, 0.0, 30.0])
def test_steady_state_and_tau_are_neurons_hh(v: float) -> None:
    mem = Membrane(hh().channels, n_sites=1, dtype=F64, temperature=6.3)
    inf, tau = mem.gate_rates(torch.tensor([v], dtype=F64))
    for name, (a, b) in hh_rates(v).items():
        row = mem.gate_row("hh_na" if name in "mh" else "hh_k", name)
        assert inf[row, 0].item() == pytest.approx(a / (a + b), rel=1e-10)
        assert tau[row, 0].item() == pytest.approx(1 / (a + b), rel=1e-10)


def test_temperature_scales_tau_by_q10() -> None:
    v = torch.tensor([-50.0], dtype=F64)
    cold = Membrane(hh().channels, dtype=F64, temperature=6.3).gate_rates(v)[1]
    warm = Membrane(hh().channels, dtype=F64, temperature=16.3).gate_rates(v)[1]
    torch.testing.assert_close(cold / warm, torch.full_like(cold, 3.0))


def test_current_is_the_sum_of_channel_currents_and_linear_in_v() -> None:
    mem = Membrane(pospischil_rs().channels, n_sites=4, dtype=F64, temperature=36.0)
    v = torch.tensor([-70.0, -50.0, 0.0, 20.0], dtype=F64)
    x = mem.init_state(v.flip(0))  # any gate values
    g_total, g_e = mem.conductance_terms(x)
    torch.testing.assert_close(mem.current(x, v), mem.channel_currents(x, v).sum(0))
    torch.testing.assert_close(mem.current(x, v), g_total * v - g_e)


def test_open_fraction_is_the_product_of_gate_powers() -> None:
    mem = Membrane(hh().channels, n_sites=2, dtype=F64)
    x = torch.tensor([[0.3, 0.9], [0.6, 0.2], [0.5, 0.7]], dtype=F64)  # rows: m, h, n
    frac = mem.open_fraction(x)
    torch.testing.assert_close(frac[0], x[0] ** 3 * x[1])
    torch.testing.assert_close(frac[1], x[2] ** 4)
    torch.testing.assert_close(frac[2], torch.ones(2, dtype=F64))  # the leak has no gates


def test_step_gates_is_exponential_euler() -> None:
    mem = Membrane(hh().channels, n_sites=3, dtype=F64, temperature=6.3)
    v = torch.tensor([-65.0, -20.0, 10.0], dtype=F64)
    x = torch.full((3, 3), 0.4, dtype=F64)
    inf, tau = mem.gate_rates(v)
    torch.testing.assert_close(mem.step_gates(x, v, 0.1), inf + (x - inf) * torch.exp(-0.1 / tau))


def test_a_replaced_gate_computing_the_true_rates_changes_nothing() -> None:
    v = torch.linspace(-90, 40, 7, dtype=F64)
    plain = Membrane(hh().channels, n_sites=7, dtype=F64, temperature=6.3)
    hybrid = Membrane(hh().channels, n_sites=7, dtype=F64, temperature=6.3, replace={("hh_k", "n"): TrueN()})
    assert hybrid.gate_keys[-1] == ("hh_k", "n")
    order = [plain.gate_row(*k) for k in hybrid.gate_keys]
    x_plain, x_hybrid = plain.init_state(v), hybrid.init_state(v)
    torch.testing.assert_close(x_hybrid, x_plain[order])
    torch.testing.assert_close(hybrid.current(x_hybrid, v), plain.current(x_plain, v))


def test_per_site_gbar_and_e_rev() -> None:
    channels = hh().channels
    gbar = torch.tensor([[0.12, 0.0], [0.036, 0.036], [0.0003, 0.0003]], dtype=F64)
    mem = Membrane(channels, gbar=gbar, n_sites=2, dtype=F64, e_rev=torch.tensor([50.0, -77.0, -54.3], dtype=F64))
    v = torch.tensor([-20.0, -20.0], dtype=F64)
    cur = mem.channel_currents(mem.init_state(v), v)
    assert cur[0, 0] != 0 and cur[0, 1] == 0  # no Na at site 1
    assert mem.e_rev.shape == (3, 2)


def test_gradients_reach_a_replaced_gate_and_a_trainable_gbar() -> None:
    net = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 2)).double()

    class Gate(nn.Module):
        def forward(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            o = net(v.unsqueeze(-1) / 50)
            return torch.sigmoid(o[..., 0]), torch.exp(o[..., 1])

    gbar = nn.Parameter(torch.tensor([0.12, 0.036, 0.0003], dtype=F64))
    mem = Membrane(hh().channels, gbar=gbar, n_sites=2, dtype=F64, replace={("hh_k", "n"): Gate()})
    v = torch.tensor([-60.0, 0.0], dtype=F64)
    x = mem.step_gates(mem.init_state(v), v + 10, 0.1)
    mem.current(x, v).sum().backward()
    assert gbar.grad is not None and torch.isfinite(gbar.grad).all()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert any(p is gbar for p in mem.parameters())


def test_float32_and_moving_the_module() -> None:
    mem = Membrane(hh().channels, n_sites=2, dtype=torch.float32)
    v = torch.tensor([-65.0, -30.0])
    assert mem.init_state(v).dtype == torch.float32
    mem64 = mem.to(F64)
    x = mem64.init_state(v.double())  # the gate bank follows the voltages' dtype
    assert x.dtype == F64 and mem64.current(x, v.double()).dtype == F64


def test_unknown_replacement_is_an_error_naming_the_gates() -> None:
    with pytest.raises(ValueError, match="hh_k"):
        Membrane(hh().channels, replace={("hh_k", "q"): TrueN()})
