"""Declarative gate definitions and their batched evaluation.

A gate is data: a name, a power, kinetics (alpha/beta rates, steady state and time constant,
or tables) and a Q10. ``GateBank`` turns many such definitions into stacked tensors once, so
that x_inf(V) and tau(V) of thousands of gates cost one call per kind of definition.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from channelzoo.errors import ZooError
from channelzoo.forms import apply_form, get_form
from channelzoo.grid import ICG_TEMPERATURE_C


@dataclass(frozen=True)
class Rate:
    """A named form with its parameters, e.g. ``Rate("HHExpRate", {"rate": 4, ...})``."""

    form: str
    params: Mapping[str, float]

    def __post_init__(self) -> None:
        expected = get_form(self.form).params
        if set(self.params) != set(expected):
            raise ZooError(f"form {self.form} takes parameters {list(expected)}, got {list(self.params)}",
                           field="params")
        object.__setattr__(self, "params", {k: float(self.params[k]) for k in expected})  # canonical order

    def vector(self) -> list[float]:
        return [float(self.params[k]) for k in get_form(self.form).params]

    @classmethod
    def of(cls, form: str, values: Sequence[float]) -> Rate:
        """Build from parameter values in the form's own order."""
        names = get_form(form).params
        if len(values) != len(names):
            raise ZooError(f"form {form} takes {len(names)} parameters, got {len(values)}", field="params")
        return cls(form, dict(zip(names, (float(x) for x in values), strict=True)))


@dataclass(frozen=True)
class AlphaBeta:
    """Opening and closing rates (1/ms): x_inf = a / (a + b), tau = 1 / (a + b)."""

    alpha: Rate
    beta: Rate
    kind: str = field(default="alpha_beta", init=False)


@dataclass(frozen=True)
class InfTau:
    """Steady state (dimensionless) and time constant (ms) given directly."""

    inf: Rate
    tau: Rate
    kind: str = field(default="inf_tau", init=False)


@dataclass(frozen=True)
class Tabulated:
    """x_inf and tau (ms) on a voltage grid (mV); linear between points, tau in log space."""

    v: tuple[float, ...]
    inf: tuple[float, ...]
    tau: tuple[float, ...]
    kind: str = field(default="tabulated", init=False)

    def __post_init__(self) -> None:
        if not (len(self.v) == len(self.inf) == len(self.tau)) or len(self.v) < 2:
            raise ZooError("tables v, inf and tau need the same length, at least 2", field="tables")
        if any(b <= a for a, b in zip(self.v, self.v[1:], strict=False)):
            raise ZooError("voltage grid must increase strictly", field="v")
        if not all(math.isfinite(x) for x in (*self.inf, *self.tau)):
            raise ZooError("tables hold a non-finite value", field="tables")
        if min(self.tau) <= 0:
            raise ZooError("tau must be positive everywhere", field="tau")


Kinetics = AlphaBeta | InfTau | Tabulated


@dataclass(frozen=True)
class Gate:
    """One gating variable: x^power enters the conductance; Q10 scales rates from ``t_ref`` (C)."""

    name: str
    power: int
    kinetics: Kinetics
    q10: float = 1.0
    t_ref: float = ICG_TEMPERATURE_C
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "power": self.power, "q10": self.q10, "t_ref": self.t_ref,
                "kinetics": kinetics_to_dict(self.kinetics), "metadata": self.metadata}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Gate:
        try:
            return cls(str(d["name"]), int(d["power"]), kinetics_from_dict(d["kinetics"]),
                       float(d.get("q10", 1.0)), float(d.get("t_ref", ICG_TEMPERATURE_C)),
                       dict(d.get("metadata", {})))
        except KeyError as e:
            raise ZooError(f"gate definition lacks {e.args[0]!r}", field=str(e.args[0])) from None


def kinetics_to_dict(k: Kinetics) -> dict[str, Any]:
    if isinstance(k, AlphaBeta):
        return {"kind": k.kind, "alpha": _rate_dict(k.alpha), "beta": _rate_dict(k.beta)}
    if isinstance(k, InfTau):
        return {"kind": k.kind, "inf": _rate_dict(k.inf), "tau": _rate_dict(k.tau)}
    return {"kind": k.kind, "v": list(k.v), "inf": list(k.inf), "tau": list(k.tau)}


def kinetics_from_dict(d: Mapping[str, Any]) -> Kinetics:
    kind = d.get("kind")
    try:
        if kind == "alpha_beta":
            return AlphaBeta(_rate_from(d["alpha"]), _rate_from(d["beta"]))
        if kind == "inf_tau":
            return InfTau(_rate_from(d["inf"]), _rate_from(d["tau"]))
        if kind == "tabulated":
            return Tabulated(*(tuple(float(x) for x in d[k]) for k in ("v", "inf", "tau")))
    except KeyError as e:
        raise ZooError(f"{kind} kinetics lack {e.args[0]!r}", field=str(e.args[0])) from None
    raise ZooError(f"unknown kinetics kind {kind!r}; known: alpha_beta, inf_tau, tabulated", field="kind")


def _rate_dict(r: Rate) -> dict[str, Any]:
    return {"form": r.form, "params": dict(r.params)}


def _rate_from(d: Mapping[str, Any]) -> Rate:
    return Rate(str(d["form"]), {str(k): float(v) for k, v in d["params"].items()})


def _group_key(k: Kinetics) -> tuple:
    if isinstance(k, AlphaBeta):
        return (k.kind, k.alpha.form, k.beta.form)
    if isinstance(k, InfTau):
        return (k.kind, k.inf.form, k.tau.form)
    return (k.kind, len(k.v))


class GateBank:
    """G gate definitions as stacked tensors: ``bank(v)`` gives x_inf and tau, each ``[G, ...]``.

    Gates with the same kind of definition (same forms, or same table length) form a group
    that is evaluated in one call; results are put back in the original order.
    """

    def __init__(self, gates: Sequence[Gate], device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        if not gates:
            raise ZooError("a GateBank needs at least one gate", field="gates")
        self.size = len(gates)
        self.device = torch.device(device)
        self.dtype = dtype
        groups: dict[tuple, list[int]] = {}
        for i, g in enumerate(gates):
            groups.setdefault(_group_key(g.kinetics), []).append(i)
        as_t = {"device": self.device, "dtype": dtype}
        self._groups: list[tuple[tuple, Tensor, list[Tensor]]] = []
        for key, idx in groups.items():
            ks = [gates[i].kinetics for i in idx]
            if key[0] == "alpha_beta":
                tensors = [torch.tensor([k.alpha.vector() for k in ks], **as_t),
                           torch.tensor([k.beta.vector() for k in ks], **as_t)]
            elif key[0] == "inf_tau":
                tensors = [torch.tensor([k.inf.vector() for k in ks], **as_t),
                           torch.tensor([k.tau.vector() for k in ks], **as_t)]
            else:
                tensors = [torch.tensor([k.v for k in ks], **as_t), torch.tensor([k.inf for k in ks], **as_t),
                           torch.tensor([k.tau for k in ks], **as_t).log()]
            self._groups.append((key, torch.tensor(idx, device=self.device), tensors))
        order = torch.cat([idx for _, idx, _ in self._groups])
        self._identity = bool(torch.equal(order, torch.arange(self.size, device=self.device)))
        self._inverse = torch.argsort(order)
        self._q10 = torch.tensor([g.q10 for g in gates], **as_t)
        self._t_ref = torch.tensor([g.t_ref for g in gates], **as_t)

    def __call__(self, v: Tensor, temperature: float | None = None) -> tuple[Tensor, Tensor]:
        """x_inf and tau (ms) for ``v`` of shape ``[G, ...]`` (mV); at each gate's t_ref if None."""
        if v.shape[0] != self.size:
            raise ValueError(f"v has leading size {v.shape[0]}, bank holds {self.size} gates")
        infs, taus = [], []
        for key, idx, tensors in self._groups:
            vg = v if len(self._groups) == 1 else v.index_select(0, idx)
            inf, tau = _evaluate_group(key, vg, tensors)
            infs.append(inf)
            taus.append(tau)
        inf, tau = (infs[0], taus[0]) if len(infs) == 1 else (torch.cat(infs), torch.cat(taus))
        if not self._identity:
            inf, tau = inf.index_select(0, self._inverse), tau.index_select(0, self._inverse)
        if temperature is not None:
            phi = self._q10 ** ((temperature - self._t_ref) / 10.0)
            tau = tau / phi.reshape((-1,) + (1,) * (v.dim() - 1))
        return inf, tau

    def on_grid(self, v: Tensor, temperature: float | None = None) -> tuple[Tensor, Tensor]:
        """Every gate on the same voltages ``v`` (``[N]``): results ``[G, N]``."""
        return self(v.to(self.device, self.dtype).expand(self.size, -1), temperature)


def _evaluate_group(key: tuple, v: Tensor, tensors: list[Tensor]) -> tuple[Tensor, Tensor]:
    kind = key[0]
    if kind == "alpha_beta":
        a = apply_form(key[1], v, tensors[0])
        b = apply_form(key[2], v, tensors[1])
        s = a + b
        return a / s, 1.0 / s
    if kind == "inf_tau":
        return apply_form(key[1], v, tensors[0]), apply_form(key[2], v, tensors[1])
    grid, inf, log_tau = tensors
    return _interp(grid, inf, v), torch.exp(_interp(grid, log_tau, v))


def _interp(grid: Tensor, values: Tensor, v: Tensor) -> Tensor:
    """Row-wise linear interpolation of ``values`` on ``grid`` (both ``[g, K]``), flat outside."""
    flat = v.reshape(v.shape[0], -1).contiguous()
    hi = torch.searchsorted(grid, flat).clamp(1, grid.shape[1] - 1)
    lo = hi - 1
    x0, x1 = grid.gather(1, lo), grid.gather(1, hi)
    y0, y1 = values.gather(1, lo), values.gather(1, hi)
    w = ((flat - x0) / (x1 - x0)).clamp(0.0, 1.0)
    return (y0 + w * (y1 - y0)).reshape(v.shape)


def evaluate_gates(gates: Sequence[Gate], v: Tensor, temperature: float | None = None) -> tuple[Tensor, Tensor]:
    """Convenience: x_inf and tau of ``gates`` on the shared voltages ``v`` (``[N]``)."""
    return GateBank(gates, v.device, v.dtype).on_grid(v, temperature)
