"""The generated channel zoo: a seeded family of HH channels in ICG's classes, structures and rate forms.

The project's embedded default (DESIGN.md): about 2,400 channels with physiological midpoints,
slopes, time constants, reversal potentials and Q10s, written in the rate forms published models
use. Channel i depends only on (seed, i): its class comes from a fixed quota sequence and its draws
from its own child generator, so a larger zoo extends a smaller one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from channelzoo.channel import Channel
from channelzoo.errors import ZooError
from channelzoo.forms import SUPERMODELS
from channelzoo.gates import AlphaBeta, Gate, GateBank, InfTau, Kinetics, Rate, Tabulated
from channelzoo.grid import ICG_GRID_MV, VALID_RANGE_MV

V_LO, V_HI = VALID_RANGE_MV  # mV: every gate is valid on this whole range
TAU_BOUNDS_MS: tuple[float, float] = (0.01, 10_000.0)
CHECK_POINTS = 401  # fine grid (0.5 mV) for the validity check
MIN_SPAN = 0.5  # x_inf must change by at least this much across the range: a gate, not a constant
KCA_CAI_MM = 5e-3  # internal Ca at which KCa gates are defined, as ICG tabulates them
MAX_ROUNDS = 100  # redraw rounds before giving up (a few suffice)
_MONOTONE_TOL = 1e-12


@dataclass(frozen=True)
class GateSpec:
    """Ranges one gate is drawn from. ``role``: activation (x_inf rises with V), inactivation or
    hyperpolarisation-activated (both fall with V)."""

    name: str
    power: int
    role: str
    v_half: tuple[float, float]  # mV, uniform
    slope: tuple[float, float]  # mV (> 0), uniform
    tau_peak: tuple[float, float]  # ms at t_ref, log-uniform

    @property
    def sign(self) -> float:
        return 1.0 if self.role == "activation" else -1.0


@dataclass(frozen=True)
class ClassSpec:
    """One ion class: its share of the zoo, E_rev and gbar ranges and weighted gate structures."""

    share: float
    e_rev: tuple[float, float]  # mV, uniform
    gbar: tuple[float, float]  # S/cm2, log-uniform
    structures: tuple[tuple[float, tuple[GateSpec, ...]], ...]  # (weight, gates)
    metadata: Mapping[str, Any]


def _act(name: str, power: int, v_half: tuple[float, float], slope: tuple[float, float],
         tau: tuple[float, float]) -> GateSpec:
    return GateSpec(name, power, "activation", v_half, slope, tau)


def _inact(name: str, v_half: tuple[float, float], slope: tuple[float, float], tau: tuple[float, float]) -> GateSpec:
    return GateSpec(name, 1, "inactivation", v_half, slope, tau)


# Shares: ICG's kept channels are K 44.8 %, Na 26.6 %, Ca 18.0 %, IH 6.8 %, KCa 3.8 % (PAPER.md).
CLASSES: dict[str, ClassSpec] = {
    "K": ClassSpec(0.45, (-90.0, -75.0), (1e-4, 5e-2), (
        (0.35, (_act("n", 1, (-40.0, -10.0), (6.0, 16.0), (1.0, 60.0)),)),
        (0.30, (_act("n", 1, (-40.0, -10.0), (6.0, 16.0), (1.0, 60.0)),
                _inact("l", (-80.0, -40.0), (5.0, 12.0), (20.0, 2000.0)))),
        # n^4 half-activates its conductance ~20 mV right of n's midpoint (HH n: about -53 mV).
        (0.35, (_act("n", 4, (-55.0, -25.0), (8.0, 18.0), (1.0, 30.0)),)),
    ), {}),
    "Na": ClassSpec(0.28, (45.0, 60.0), (1e-3, 0.5), (
        (0.80, (_act("m", 3, (-40.0, -20.0), (5.0, 10.0), (0.05, 1.0)),
                _inact("h", (-70.0, -50.0), (4.0, 9.0), (0.5, 20.0)))),
        (0.20, (_act("m", 3, (-40.0, -20.0), (5.0, 10.0), (0.05, 1.0)),
                _inact("h", (-70.0, -50.0), (4.0, 9.0), (0.5, 20.0)),
                _inact("s", (-75.0, -45.0), (5.0, 12.0), (100.0, 3000.0)))),
    ), {}),
    "Ca": ClassSpec(0.19, (100.0, 140.0), (1e-5, 5e-3), (
        (1.0, (_act("m", 2, (-45.0, -5.0), (4.0, 10.0), (0.3, 10.0)),
               _inact("h", (-85.0, -45.0), (4.0, 12.0), (10.0, 800.0)))),
    ), {}),
    "KCa": ClassSpec(0.04, (-90.0, -75.0), (1e-4, 2e-2), (
        (1.0, (_act("c", 1, (-30.0, 30.0), (8.0, 25.0), (1.0, 60.0)),)),
    ), {"cai_mM": KCA_CAI_MM, "note": "voltage dependence at a fixed internal Ca, as ICG tabulates KCa"}),
    "IH": ClassSpec(0.04, (-45.0, -20.0), (1e-5, 2e-3), (
        (1.0, (GateSpec("q", 1, "hyperpolarisation-activated", (-90.0, -70.0), (5.0, 12.0), (30.0, 1500.0)),)),
    ), {}),
}

# Kinetics families, chosen per channel (a model file is written in one style): ICG's mix.
FAMILIES: dict[str, float] = {"alpha_beta": 0.40, "inf_tau": 0.50, "icg": 0.07, "tabulated": 0.03}
RATE_FORMS: dict[str, float] = {"HHExpRate": 0.35, "HHExpLinearRate": 0.35, "HHSigmoidRate": 0.30}
TAU_FORMS: dict[str, float] = {"BellTau": 0.45, "GaussianTau": 0.35, "ConstantTau": 0.20}
# Reference temperatures (C) and how often published models use them; Q10 is drawn in [2, 3].
T_REFS: dict[float, float] = {6.3: 0.15, 22.0: 0.10, 23.0: 0.10, 24.0: 0.05, 34.0: 0.15, 35.0: 0.10, 36.0: 0.10,
                              37.0: 0.25}


@dataclass(frozen=True)
class _Shape:
    """A gate's drawn biophysics, before it is written in some family's forms."""

    sign: float  # +1: x_inf rises with V
    v_half: float  # mV, x_inf = 0.5 (unless a floor shifts it)
    slope: float  # mV
    tau_peak: float  # ms
    tau_min: float  # ms
    v_tau: float  # mV, where tau peaks


@dataclass(frozen=True)
class _Plan:
    """A channel's draws except its gates."""

    ion_class: str
    specs: tuple[GateSpec, ...]
    family: str
    q10: float
    t_ref: float
    gbar: float
    e_rev: float


def generate(n: int = 2400, seed: int = 0) -> list[Channel]:
    """``n`` valid channels, identical for the same ``seed``; channel i does not depend on ``n``."""
    if n < 0:
        raise ZooError(f"n must be non-negative, got {n}", field="n")
    rngs = [np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(i,)))) for i in range(n)]
    plans = [_draw_plan(rng, c) for rng, c in zip(rngs, class_sequence(n), strict=True)]
    gates: list[list[Gate | None]] = [[None] * len(p.specs) for p in plans]
    pending = [(i, j) for i, p in enumerate(plans) for j in range(len(p.specs))]
    for _ in range(MAX_ROUNDS):
        if not pending:
            break
        # Each channel redraws its failed gates in gate order from its own generator: no cross-talk.
        drawn = [_draw_gate(rngs[i], plans[i], plans[i].specs[j]) for i, j in pending]
        ok = _valid(drawn, [plans[i].specs[j].sign for i, j in pending])
        for (i, j), gate, good in zip(pending, drawn, ok, strict=True):
            if good:
                gates[i][j] = gate
        pending = [ij for ij, good in zip(pending, ok, strict=True) if not good]
    if pending:
        raise ZooError(f"{len(pending)} gates still invalid after {MAX_ROUNDS} draws, e.g. channel {pending[0][0]}",
                       field="generated")
    return [Channel(f"gen-{p.ion_class}-{i:04d}", p.ion_class, "generated", p.gbar, p.e_rev,
                    tuple(g for g in gs if g is not None),
                    {**CLASSES[p.ion_class].metadata, "family": p.family, "seed": seed, "index": i})
            for i, (p, gs) in enumerate(zip(plans, gates, strict=True))]


def class_sequence(n: int) -> list[str]:
    """Classes in fixed quota order: each step takes the class furthest below its share, so every
    prefix holds each class within about one channel of its target."""
    names = list(CLASSES)
    shares = np.array([CLASSES[c].share for c in names])
    counts = np.zeros(len(names))
    out = []
    for i in range(n):
        k = int(np.argmax((i + 1) * shares - counts))
        counts[k] += 1
        out.append(names[k])
    return out


def _pick(rng: np.random.Generator, weights: Mapping[Any, float]) -> Any:
    keys = list(weights)
    cum = np.cumsum([weights[k] for k in keys])
    return keys[min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), len(keys) - 1)]


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def _draw_plan(rng: np.random.Generator, ion_class: str) -> _Plan:
    spec = CLASSES[ion_class]
    return _Plan(ion_class, _pick(rng, {gates: w for w, gates in spec.structures}),
                 _pick(rng, FAMILIES), round(float(rng.uniform(2.0, 3.0)), 1), float(_pick(rng, T_REFS)),
                 _log_uniform(rng, *spec.gbar), _uniform(rng, spec.e_rev))


def _draw_gate(rng: np.random.Generator, plan: _Plan, spec: GateSpec) -> Gate:
    v_half, slope = _uniform(rng, spec.v_half), _uniform(rng, spec.slope)
    tau_peak = _log_uniform(rng, *spec.tau_peak)
    tau_min = max(0.02, tau_peak * float(rng.uniform(0.02, 0.3)))
    shape = _Shape(spec.sign, v_half, slope, tau_peak, tau_min, v_half + float(rng.uniform(-15.0, 15.0)))
    kinetics, extra = _REALISE[plan.family](rng, shape)
    meta = {"role": spec.role, "family": plan.family, "v_half": v_half, "slope": slope, "tau_peak": tau_peak, **extra}
    return Gate(spec.name, spec.power, kinetics, plan.q10, plan.t_ref, meta)


# Value of each NeuroML rate form at x = (v - midpoint) / scale, for rate 1.
_UNIT_RATE: dict[str, Callable[[float], float]] = {
    "HHExpRate": math.exp,
    "HHSigmoidRate": lambda x: 1.0 / (1.0 + math.exp(-x)),
    "HHExpLinearRate": lambda x: 1.0 if abs(x) < 1e-12 else x / -math.expm1(-x),
}


def _alpha_beta(rng: np.random.Generator, s: _Shape) -> tuple[Kinetics, dict[str, Any]]:
    """alpha rises in x_inf's direction, beta against it; both equal 1/(2 tau_peak) at v_half, so
    x_inf(v_half) = 0.5 and tau(v_half) = tau_peak; slopes split so x_inf has about the drawn slope."""
    r = 0.5 / s.tau_peak
    split = float(rng.uniform(0.3, 0.7))
    rates = []
    for direction, frac in ((s.sign, split), (-s.sign, 1.0 - split)):
        form = _pick(rng, RATE_FORMS)
        scale = s.slope / frac
        if form == "HHExpRate":
            # An exponential rate grows without bound: keep it below 1/(2 tau_lo) at the far end of the range.
            far = (V_HI - s.v_half) if direction > 0 else (s.v_half - V_LO)
            scale = max(scale, far / math.log(max(0.5 / TAU_BOUNDS_MS[0] / r, 2.0)))
        midpoint = s.v_half + float(rng.uniform(-10.0, 10.0))
        rate = r / _UNIT_RATE[form]((s.v_half - midpoint) / (direction * scale))
        rates.append(Rate.of(form, (rate, midpoint, direction * scale)))
    return AlphaBeta(*rates), {}


def _tau_form(rng: np.random.Generator, s: _Shape) -> Rate:
    form = _pick(rng, TAU_FORMS)
    if form == "BellTau":
        k1, k2 = (float(x) for x in rng.uniform(10.0, 30.0, size=2))
        return Rate.of(form, (s.tau_min, 2.0 * (s.tau_peak - s.tau_min), s.v_tau, k1, s.v_tau, k2))
    if form == "GaussianTau":
        return Rate.of(form, (s.tau_min, s.tau_peak - s.tau_min, s.v_tau, float(rng.uniform(15.0, 40.0))))
    return Rate.of(form, (_log_uniform(rng, s.tau_min, s.tau_peak),))


def _inf_tau(rng: np.random.Generator, s: _Shape) -> tuple[Kinetics, dict[str, Any]]:
    """A sigmoid steady state with a bell, Gaussian or constant tau. (The unbounded NeuroML variables,
    HHExpVariable and HHExpLinearVariable, pass 1 inside [-100, 100] mV for any physiological midpoint.)"""
    return InfTau(Rate.of("HHSigmoidVariable", (1.0, s.v_half, s.sign * s.slope)), _tau_form(rng, s)), {}


def _icg(rng: np.random.Generator, s: _Shape) -> tuple[Kinetics, dict[str, Any]]:
    """One of ICG's supermodels: P and Q are a first-order bell plus small higher-order terms."""
    sm = _pick(rng, {k: 1.0 for k in SUPERMODELS})
    inf_form, tau_form = SUPERMODELS[sm]
    a = s.sign / s.slope
    if inf_form == "ICGModifiedSigmoid":
        floor = float(rng.uniform(0.0, 0.15))  # incomplete (in)activation
        inf = Rate.of(inf_form, (a, a * s.v_half, (1.0 - floor) * float(rng.uniform(0.85, 1.0)), floor))
    else:
        inf = Rate.of(inf_form, (a, a * s.v_half))
    order = int(tau_form[-1])
    b = 2.0 * s.tau_peak  # tau(v_tau) = b / 2
    # tau ~ b exp(-|y| / w) far from v_tau: w wide enough that it stays above 2 tau_lo on the range.
    w_min = max(V_HI - s.v_tau, s.v_tau - V_LO) / math.log(max(b / (2.0 * TAU_BOUNDS_MS[0]), 2.0))
    coeffs = []
    for _ in range(2):  # P, then Q
        w = max(float(rng.uniform(10.0, 40.0)), w_min)
        coeffs += [1.0 / w] + [float(rng.uniform(-0.25, 0.25)) / (w * 150.0 ** k) for k in range(1, order)]
    return InfTau(inf, Rate.of(tau_form, (s.v_tau, b, *coeffs))), {"supermodel": sm}


def _tabulated(rng: np.random.Generator, s: _Shape) -> tuple[Kinetics, dict[str, Any]]:
    """Tables on ICG's grid, like measured data: an asymmetric sigmoid and bell no single form matches,
    tau with 5 % multiplicative scatter."""
    v = np.asarray(ICG_GRID_MV)
    k_lo, k_hi = s.slope * rng.uniform(0.7, 1.3, size=2)
    inf = 1.0 / (1.0 + np.exp(-s.sign * (v - s.v_half) / np.where(v < s.v_half, k_lo, k_hi)))
    k1, k2 = rng.uniform(10.0, 30.0, size=2)
    y = v - s.v_tau
    tau = s.tau_min + 2.0 * (s.tau_peak - s.tau_min) / (np.exp(y / k1) + np.exp(-y / k2))
    tau = tau * np.exp(0.05 * rng.standard_normal(v.size))
    return Tabulated(tuple(float(x) for x in v), tuple(float(x) for x in inf), tuple(float(x) for x in tau)), {}


_REALISE: dict[str, Callable[[np.random.Generator, _Shape], tuple[Kinetics, dict[str, Any]]]] = {
    "alpha_beta": _alpha_beta, "inf_tau": _inf_tau, "icg": _icg, "tabulated": _tabulated,
}


def _valid(gates: Sequence[Gate], signs: Sequence[float]) -> list[bool]:
    """Batched check at each gate's t_ref on a fine grid: x_inf in [0, 1], monotone in its direction
    and spanning at least MIN_SPAN; tau finite within TAU_BOUNDS_MS."""
    v = torch.linspace(V_LO, V_HI, CHECK_POINTS, dtype=torch.float64)
    inf, tau = GateBank(gates, dtype=torch.float64).on_grid(v)
    sign = torch.tensor(signs, dtype=torch.float64)[:, None]
    ok = torch.isfinite(inf).all(1) & torch.isfinite(tau).all(1)
    ok &= ((inf >= 0.0) & (inf <= 1.0)).all(1)
    ok &= ((tau >= TAU_BOUNDS_MS[0]) & (tau <= TAU_BOUNDS_MS[1])).all(1)
    ok &= (sign * inf.diff(dim=1) >= -_MONOTONE_TOL).all(1)
    ok &= (sign[:, 0] * (inf[:, -1] - inf[:, 0])) >= MIN_SPAN
    return ok.tolist()
