"""Ready cell models as channel lists: classic Hodgkin-Huxley and the Pospischil et al. 2008 cortical cells.

Channels are declarative ``Channel`` data in the zoo's NeuroML forms, so a test can compare them
gate by gate with NEURON and an experiment can replace any of their gates by a neural one.
The rate constants below are written in those forms; the published expressions they encode are
in each docstring. Units: S/cm2, mV, ms, uF/cm2, um, C.

Pospischil et al. (2008), Biol Cybern 99:427: rates are given at 36 C (their NEURON code scales
them by 3^((celsius - 36)/10) for Na and Kd, 2.3^(...) for M), so the gates carry those Q10s and
t_ref = 36 C and the cells run at 36 C. HH follows NEURON's ``hh`` mechanism (6.3 C, Q10 3).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from channelzoo.channel import Channel
from channelzoo.errors import ZooError
from channelzoo.gates import AlphaBeta, Gate, InfTau, Rate

HH_TEMPERATURE_C = 6.3
POSPISCHIL_TEMPERATURE_C = 36.0


@dataclass(frozen=True)
class CellModel:
    """A single-compartment cell: channels, capacitance, geometry, initial voltage and temperature."""

    name: str
    channels: tuple[Channel, ...]
    capacitance: float = 1.0  # uF/cm2
    length_um: float = 100.0
    diam_um: float = 100.0 / math.pi  # area 1e-4 cm2 by default: 1 nA = 10 uA/cm2
    v_init: float = -65.0  # mV
    temperature: float = HH_TEMPERATURE_C  # C
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def area_cm2(self) -> float:
        """Lateral area of the cylinder, as NEURON counts a section's membrane (ends excluded)."""
        return math.pi * self.length_um * self.diam_um * 1e-8

    def channel(self, channel_id: str) -> Channel:
        for c in self.channels:
            if c.id == channel_id:
                return c
        raise ZooError(f"model {self.name} has no channel {channel_id!r}; has {[c.id for c in self.channels]}",
                       field="channel")

    def with_channel(self, channel_id: str, **changes: Any) -> CellModel:
        """A copy with one channel's fields changed (e.g. ``gbar=0.04``)."""
        self.channel(channel_id)
        return replace(self, channels=tuple(replace(c, **changes) if c.id == channel_id else c
                                            for c in self.channels))


def _ab(name: str, power: int, alpha: Rate, beta: Rate, q10: float, t_ref: float) -> Gate:
    return Gate(name, power, AlphaBeta(alpha, beta), q10=q10, t_ref=t_ref)


def leak(gbar: float, e_rev: float, channel_id: str = "leak") -> Channel:
    """A passive, gate-less conductance."""
    return Channel(channel_id, "Leak", "models", gbar, e_rev, ())


# -- Hodgkin-Huxley, as NEURON's hh.mod --------------------------------------------------------
def hh_na(gbar: float = 0.12, e_rev: float = 50.0) -> Channel:
    """NEURON hh: m3h. a_m = 0.1 vtrap(-(v+40), 10), b_m = 4 e^(-(v+65)/18);
    a_h = 0.07 e^(-(v+65)/20), b_h = 1 / (e^(-(v+35)/10) + 1)."""
    q, t = 3.0, HH_TEMPERATURE_C
    m = _ab("m", 3, Rate.of("HHExpLinearRate", [1.0, -40.0, 10.0]), Rate.of("HHExpRate", [4.0, -65.0, -18.0]), q, t)
    h = _ab("h", 1, Rate.of("HHExpRate", [0.07, -65.0, -20.0]), Rate.of("HHSigmoidRate", [1.0, -35.0, 10.0]), q, t)
    return Channel("hh_na", "Na", "models", gbar, e_rev, (m, h), {"reference": "NEURON hh.mod"})


def hh_k(gbar: float = 0.036, e_rev: float = -77.0) -> Channel:
    """NEURON hh: n4. a_n = 0.01 vtrap(-(v+55), 10), b_n = 0.125 e^(-(v+65)/80)."""
    q, t = 3.0, HH_TEMPERATURE_C
    n = _ab("n", 4, Rate.of("HHExpLinearRate", [0.1, -55.0, 10.0]), Rate.of("HHExpRate", [0.125, -65.0, -80.0]), q, t)
    return Channel("hh_k", "K", "models", gbar, e_rev, (n,), {"reference": "NEURON hh.mod"})


def hh(gna: float = 0.12, gk: float = 0.036, gl: float = 0.0003, ena: float = 50.0, ek: float = -77.0,
       el: float = -54.3, v_init: float = -65.0, name: str = "hh") -> CellModel:
    """Classic HH with NEURON's defaults (``hh`` mechanism, 6.3 C)."""
    return CellModel(name, (hh_na(gna, ena), hh_k(gk, ek), leak(gl, el)), v_init=v_init,
                     temperature=HH_TEMPERATURE_C)


def hh_paper() -> CellModel:
    """The ground truth of Beck et al. (PAPER.md, experiment 2): E_K -75, E_L -70, start at -70 mV."""
    return hh(ek=-75.0, el=-70.0, v_init=-70.0, name="hh_paper")


# -- Pospischil et al. 2008 ----------------------------------------------------------------------
def pospischil_na(gbar: float = 0.05, e_rev: float = 50.0, vt: float = -60.0) -> Channel:
    """Traub-Miles Na, m3h, shifted by V_T. a_m = -0.32 (V-VT-13) / (e^(-(V-VT-13)/4) - 1),
    b_m = 0.28 (V-VT-40) / (e^((V-VT-40)/5) - 1), a_h = 0.128 e^(-(V-VT-17)/18), b_h = 4 / (1 + e^(-(V-VT-40)/5))."""
    q, t = 3.0, POSPISCHIL_TEMPERATURE_C
    m = _ab("m", 3, Rate.of("HHExpLinearRate", [1.28, vt + 13.0, 4.0]),
            Rate.of("HHExpLinearRate", [1.4, vt + 40.0, -5.0]), q, t)
    h = _ab("h", 1, Rate.of("HHExpRate", [0.128, vt + 17.0, -18.0]), Rate.of("HHSigmoidRate", [4.0, vt + 40.0, 5.0]),
            q, t)
    return Channel("pospischil_na", "Na", "models", gbar, e_rev, (m, h),
                   {"reference": "Pospischil et al. 2008", "vt": vt})


def pospischil_kd(gbar: float = 0.005, e_rev: float = -90.0, vt: float = -60.0) -> Channel:
    """Traub-Miles delayed rectifier, n4.
    a_n = -0.032 (V-VT-15) / (e^(-(V-VT-15)/5) - 1), b_n = 0.5 e^(-(V-VT-10)/40)."""
    q, t = 3.0, POSPISCHIL_TEMPERATURE_C
    n = _ab("n", 4, Rate.of("HHExpLinearRate", [0.16, vt + 15.0, 5.0]), Rate.of("HHExpRate", [0.5, vt + 10.0, -40.0]),
            q, t)
    return Channel("pospischil_kd", "K", "models", gbar, e_rev, (n,), {"reference": "Pospischil et al. 2008", "vt": vt})


def pospischil_m(gbar: float = 4e-6, e_rev: float = -90.0, tau_max: float = 4000.0) -> Channel:
    """Slow non-inactivating K (M current), p. p_inf = 1 / (1 + e^(-(V+35)/10)),
    tau_p = tau_max / (3.3 e^((V+35)/20) + e^(-(V+35)/20))."""
    # 3.3 e^((V+35)/20) = e^((V - v1)/20) with v1 = -35 - 20 ln 3.3.
    tau = Rate.of("BellTau", [0.0, tau_max, -35.0 - 20.0 * math.log(3.3), 20.0, -35.0, 20.0])
    p = Gate("p", 1, InfTau(Rate.of("HHSigmoidVariable", [1.0, -35.0, 10.0]), tau), q10=2.3,
             t_ref=POSPISCHIL_TEMPERATURE_C)
    return Channel("pospischil_m", "K", "models", gbar, e_rev, (p,),
                   {"reference": "Pospischil et al. 2008", "tau_max": tau_max})


def pospischil(name: str, diam_um: float, g_leak: float, e_leak: float, g_na: float, g_kd: float, g_m: float,
               tau_max: float, vt: float, e_na: float = 50.0, e_k: float = -90.0, capacitance: float = 1.0,
               v_init: float | None = None) -> CellModel:
    """A Pospischil cell: a cylinder L = d, Na + Kd (+ M if g_m > 0) + leak."""
    channels = [pospischil_na(g_na, e_na, vt), pospischil_kd(g_kd, e_k, vt)]
    if g_m > 0:
        channels.append(pospischil_m(g_m, e_k, tau_max))
    channels.append(leak(g_leak, e_leak))
    return CellModel(name, tuple(channels), capacitance, diam_um, diam_um, e_leak if v_init is None else v_init,
                     POSPISCHIL_TEMPERATURE_C, {"reference": "Pospischil et al. 2008", "vt": vt, "tau_max": tau_max})


def pospischil_rs() -> CellModel:
    """Regular spiking pyramidal cell (Pospischil et al. 2008, fit to a ferret RS cell): with M (Km) adaptation."""
    return pospischil("pospischil_rs", diam_um=61.4, g_leak=2.05e-5, e_leak=-70.3, g_na=0.056, g_kd=0.006,
                      g_m=7.5e-5, tau_max=608.0, vt=-56.2)


def pospischil_fs() -> CellModel:
    """Fast spiking interneuron (Pospischil et al. 2008, fit to a ferret FS cell): little adaptation."""
    return pospischil("pospischil_fs", diam_um=56.9, g_leak=3.8e-5, e_leak=-70.4, g_na=0.058, g_kd=0.0039,
                      g_m=7.87e-5, tau_max=502.0, vt=-57.9)


def pospischil_fs_generic() -> CellModel:
    """The generic FS cell of Pospischil et al. 2008 (no M current): L = d = 67 um."""
    return pospischil("pospischil_fs_generic", diam_um=67.0, g_leak=1.5e-4, e_leak=-70.0, g_na=0.05, g_kd=0.01,
                      g_m=0.0, tau_max=1.0, vt=-63.0)


def pospischil_jaxley() -> CellModel:
    """Jaxley's Pospischil defaults (Na, K, Km, leak), the channels of the paper's reduction experiment."""
    return pospischil("pospischil_jaxley", diam_um=20.0, g_leak=1e-4, e_leak=-70.0, g_na=0.05, g_kd=0.005,
                      g_m=4e-6, tau_max=4000.0, vt=-60.0)


MODELS: dict[str, Callable[[], CellModel]] = {
    "hh": hh,
    "hh_paper": hh_paper,
    "pospischil_rs": pospischil_rs,
    "pospischil_rs_km": pospischil_rs,  # the RS cell is the one with Km
    "pospischil_fs": pospischil_fs,
    "pospischil_fs_generic": pospischil_fs_generic,
    "pospischil_jaxley": pospischil_jaxley,
}


def get_model(name: str) -> CellModel:
    """The ready model called ``name``; a ZooError lists the known ones otherwise."""
    try:
        return MODELS[name]()
    except KeyError:
        raise ZooError(f"unknown cell model {name!r}; known: {', '.join(sorted(MODELS))}", field="model") from None
