"""The generated zoo: deterministic, valid everywhere on [-100, 100] mV, in ICG's proportions."""

import re
from collections import Counter

import pytest
import torch

from channelzoo.channel import Channel
from channelzoo.errors import ZooError
from channelzoo.forms import SUPERMODELS
from channelzoo.gates import AlphaBeta, GateBank, InfTau, Tabulated
from channelzoo.generated import generate

V = torch.linspace(-100.0, 100.0, 401, dtype=torch.float64)
RISING = {"m", "n", "c"}  # activation gates; h, s, l inactivate and IH's q opens on hyperpolarisation


@pytest.fixture(scope="module")
def zoo() -> list[Channel]:
    return generate()


@pytest.fixture(scope="module")
def curves(zoo: list[Channel]) -> tuple[torch.Tensor, torch.Tensor]:
    """x_inf and tau of every gate, in zoo order, at each gate's t_ref."""
    return GateBank([g for c in zoo for g in c.gates], dtype=torch.float64).on_grid(V)


def shares(items: list[str]) -> dict[str, float]:
    return {k: n / len(items) for k, n in Counter(items).items()}


def test_same_seed_gives_identical_channels_and_parameters() -> None:
    a, b = generate(300, seed=0), generate(300, seed=0)
    assert a == b
    assert [g.to_dict() for c in a for g in c.gates] == [g.to_dict() for c in b for g in c.gates]
    assert [c.metadata for c in a] == [c.metadata for c in b]


def test_another_seed_gives_other_channels() -> None:
    a, b = generate(50, seed=0), generate(50, seed=1)
    assert all(x.gates != y.gates for x, y in zip(a, b, strict=True))


def test_channel_i_does_not_depend_on_n(zoo: list[Channel]) -> None:
    assert generate(120) == zoo[:120]


def test_ids_are_unique_stable_and_name_the_class(zoo: list[Channel]) -> None:
    assert len({c.id for c in zoo}) == len(zoo) == 2400
    for i, c in enumerate(zoo):
        assert c.id == f"gen-{c.ion_class}-{i:04d}"
        assert c.source == "generated"
    assert re.fullmatch(r"gen-(K|Na|Ca|KCa|IH)-\d{4}", zoo[-1].id)


def test_every_gate_is_valid_on_a_fine_grid(curves: tuple[torch.Tensor, torch.Tensor]) -> None:
    inf, tau = curves
    assert torch.isfinite(inf).all() and torch.isfinite(tau).all()
    assert inf.min() >= 0.0 and inf.max() <= 1.0
    assert tau.min() >= 0.01 and tau.max() <= 10_000.0


def test_class_proportions_follow_icg(zoo: list[Channel]) -> None:
    got = shares([c.ion_class for c in zoo])
    for cls, target in {"K": 0.45, "Na": 0.28, "Ca": 0.19, "KCa": 0.04, "IH": 0.04}.items():
        assert got[cls] == pytest.approx(target, abs=0.02), cls


def test_structures_per_class(zoo: list[Channel]) -> None:
    allowed = {"K": {"n", "nl", "n4"}, "Na": {"m3h", "m3hs"}, "Ca": {"m2h"}, "IH": {"q"}, "KCa": {"c"}}
    seen = Counter((c.ion_class, c.structure) for c in zoo)
    assert {s for (_, s) in seen} == set().union(*allowed.values())
    for (cls, structure), _ in seen.items():
        assert structure in allowed[cls], (cls, structure)


def test_activation_rises_and_inactivation_falls(zoo: list[Channel], curves: tuple[torch.Tensor, torch.Tensor]) -> None:
    inf, _ = curves
    sign = torch.tensor([1.0 if g.name in RISING else -1.0 for c in zoo for g in c.gates], dtype=torch.float64)
    assert (sign[:, None] * inf.diff(dim=1) >= -1e-12).all()
    assert (sign * (inf[:, -1] - inf[:, 0]) >= 0.5).all()


def test_half_activation_is_physiological(zoo: list[Channel], curves: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Where x_inf crosses 0.5, within 8 mV of the target range (floors and tables shift it a little)."""
    ranges = {("Na", "m"): (-40, -20), ("Na", "h"): (-70, -50), ("Na", "s"): (-75, -45), ("Ca", "m"): (-45, -5),
              ("Ca", "h"): (-85, -45), ("K", "n"): (-55, -10), ("K", "l"): (-80, -40), ("IH", "q"): (-90, -70),
              ("KCa", "c"): (-30, 30)}
    inf, _ = curves
    crossing = V[(inf - 0.5).abs().argmin(dim=1)]
    keys = [(c.ion_class, g.name) for c in zoo for g in c.gates]
    for key, v_half in zip(keys, crossing.tolist(), strict=True):
        lo, hi = ranges[key]
        assert lo - 8 <= v_half <= hi + 8, (key, v_half)


def test_reversal_potentials_conductances_and_temperatures(zoo: list[Channel]) -> None:
    e_rev = {"K": (-90, -75), "KCa": (-90, -75), "Na": (45, 60), "Ca": (100, 140), "IH": (-45, -20)}
    for c in zoo:
        lo, hi = e_rev[c.ion_class]
        assert lo <= c.e_rev <= hi
        assert 1e-6 <= c.gbar <= 1.0
        assert len({(g.q10, g.t_ref) for g in c.gates}) == 1
        assert 2.0 <= c.gates[0].q10 <= 3.0
        assert c.gates[0].t_ref in {6.3, 22.0, 23.0, 24.0, 34.0, 35.0, 36.0, 37.0}
    assert len({c.gates[0].t_ref for c in zoo}) == 8


def test_kca_records_its_fixed_internal_calcium(zoo: list[Channel]) -> None:
    kca = [c for c in zoo if c.ion_class == "KCa"]
    assert kca and all(c.metadata["cai_mM"] == 5e-3 for c in kca)


def test_rate_forms_are_mixed_like_icg(zoo: list[Channel]) -> None:
    gates = [g for c in zoo for g in c.gates]
    icg = {form for pair in SUPERMODELS.values() for form in pair}

    def family(k: object) -> str:
        if isinstance(k, AlphaBeta):
            return "alpha_beta"
        if isinstance(k, InfTau):
            return "icg" if k.inf.form in icg else "inf_tau"
        assert isinstance(k, Tabulated)
        return "tabulated"

    got = shares([family(g.kinetics) for g in gates])
    assert got["alpha_beta"] == pytest.approx(0.40, abs=0.04)
    assert got["inf_tau"] == pytest.approx(0.50, abs=0.04)
    assert 0.04 <= got["icg"] <= 0.12 and 0.01 <= got["tabulated"] <= 0.06
    pairs = [g.kinetics for g in gates if isinstance(g.kinetics, AlphaBeta)]
    rates = Counter(r.form for k in pairs for r in (k.alpha, k.beta))
    assert set(rates) == {"HHExpRate", "HHSigmoidRate", "HHExpLinearRate"} and min(rates.values()) > 0.2 * rates.total()
    taus = Counter(g.kinetics.tau.form for g in gates if family(g.kinetics) == "inf_tau")
    assert set(taus) == {"BellTau", "GaussianTau", "ConstantTau"}
    models = Counter(g.metadata["supermodel"] for g in gates if family(g.kinetics) == "icg")
    assert set(models) == set(SUPERMODELS)


def test_empty_and_negative_sizes() -> None:
    assert generate(0) == []
    with pytest.raises(ZooError, match="n must be non-negative"):
        generate(-1)
