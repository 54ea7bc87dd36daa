"""Named rate forms: batched torch functions of voltage, chosen by name from a registry.

Every form takes ``v`` (mV, any shape) and ``p`` (parameters, shape ``[*v.shape[:1], P]``
broadcastable to ``v`` once unsqueezed) and returns a tensor shaped like ``v``. Names follow
NeuroML (HHExpRate, ...) where a NeuroML name exists; the ICG supermodel pieces are
``ICGSigmoid``, ``ICGModifiedSigmoid`` and ``ICGTau1``..``ICGTau4``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from channelzoo.errors import ZooError

# Below this |x| the exp-linear form uses its Taylor series: x / (1 - e^-x) = 1 + x/2 + x^2/12.
_EXPLINEAR_TAYLOR_BELOW = 1e-4


@dataclass(frozen=True)
class Form:
    """A named function of voltage with named parameters (units in the docstring of each)."""

    name: str
    params: tuple[str, ...]
    fn: Callable[[Tensor, list[Tensor]], Tensor]


def _exp_linear(x: Tensor) -> Tensor:
    """x / (1 - exp(-x)), exact at x = 0 (value 1) with finite gradients everywhere."""
    small = x.abs() < _EXPLINEAR_TAYLOR_BELOW
    safe_x = torch.where(small, torch.ones_like(x), x)  # keeps the unused branch free of 0/0
    far = safe_x / (-torch.expm1(-safe_x))
    near = 1.0 + x / 2.0 + x * x / 12.0
    return torch.where(small, near, far)


def _hh_exp(v: Tensor, p: list[Tensor]) -> Tensor:
    rate, midpoint, scale = p
    return rate * torch.exp((v - midpoint) / scale)


def _hh_sigmoid(v: Tensor, p: list[Tensor]) -> Tensor:
    rate, midpoint, scale = p
    return rate * torch.sigmoid((v - midpoint) / scale)


def _hh_exp_linear(v: Tensor, p: list[Tensor]) -> Tensor:
    rate, midpoint, scale = p
    return rate * _exp_linear((v - midpoint) / scale)


def _bell_tau(v: Tensor, p: list[Tensor]) -> Tensor:
    tau_min, amplitude, v1, k1, v2, k2 = p
    return tau_min + amplitude / (torch.exp((v - v1) / k1) + torch.exp(-(v - v2) / k2))


def _gaussian_tau(v: Tensor, p: list[Tensor]) -> Tensor:
    tau_min, amplitude, midpoint, width = p
    return tau_min + amplitude * torch.exp(-(((v - midpoint) / width) ** 2))


def _constant(v: Tensor, p: list[Tensor]) -> Tensor:
    (value,) = p
    return value + torch.zeros_like(v)


def _icg_sigmoid(v: Tensor, p: list[Tensor]) -> Tensor:
    a, b = p
    return torch.sigmoid(a * v - b)  # 1 / (1 + exp(-a v + b))


def _icg_modified_sigmoid(v: Tensor, p: list[Tensor]) -> Tensor:
    a, b, c, d = p
    return c * torch.sigmoid(a * v - b) + d


def _icg_tau(order: int) -> Callable[[Tensor, list[Tensor]], Tensor]:
    """ICG's tau_k(V) = b / (exp(-P(y)) + exp(Q(y))), y = V - a, P and Q of order k, no constant."""

    def fn(v: Tensor, p: list[Tensor]) -> Tensor:
        a, b, coeffs = p[0], p[1], p[2:]
        y = v - a
        pp = torch.zeros_like(y)
        qq = torch.zeros_like(y)
        power = torch.ones_like(y)
        for k in range(order):
            power = power * y
            pp = pp + coeffs[k] * power
            qq = qq + coeffs[order + k] * power
        return b / (torch.exp(-pp) + torch.exp(qq))

    return fn


def _icg_tau_params(order: int) -> tuple[str, ...]:
    return ("a", "b", *(f"p{k + 1}" for k in range(order)), *(f"q{k + 1}" for k in range(order)))


_RATE = ("rate", "midpoint", "scale")

FORMS: dict[str, Form] = {
    f.name: f
    for f in (
        # NeuroML rates (1/ms): alpha/beta gates.
        Form("HHExpRate", _RATE, _hh_exp),
        Form("HHSigmoidRate", _RATE, _hh_sigmoid),
        Form("HHExpLinearRate", _RATE, _hh_exp_linear),
        # NeuroML steady-state counterparts (dimensionless): inf/tau gates.
        Form("HHExpVariable", _RATE, _hh_exp),
        Form("HHSigmoidVariable", _RATE, _hh_sigmoid),
        Form("HHExpLinearVariable", _RATE, _hh_exp_linear),
        # Time constants (ms).
        Form("BellTau", ("tau_min", "amplitude", "v1", "k1", "v2", "k2"), _bell_tau),
        Form("GaussianTau", ("tau_min", "amplitude", "midpoint", "width"), _gaussian_tau),
        Form("ConstantTau", ("tau",), _constant),
        # ICG supermodel pieces (PAPER.md, experiment 1).
        Form("ICGSigmoid", ("a", "b"), _icg_sigmoid),
        Form("ICGModifiedSigmoid", ("a", "b", "c", "d"), _icg_modified_sigmoid),
        *(Form(f"ICGTau{k}", _icg_tau_params(k), _icg_tau(k)) for k in range(1, 5)),
    )
}

# ICG's five supermodels: (steady-state form, tau form).
SUPERMODELS: dict[str, tuple[str, str]] = {
    "SM1": ("ICGSigmoid", "ICGTau3"),
    "SM2": ("ICGModifiedSigmoid", "ICGTau3"),
    "SM3": ("ICGSigmoid", "ICGTau2"),
    "SM4": ("ICGSigmoid", "ICGTau1"),
    "SM5": ("ICGSigmoid", "ICGTau4"),
}


def get_form(name: str) -> Form:
    """The registered form called ``name``; a ZooError lists the known ones otherwise."""
    try:
        return FORMS[name]
    except KeyError:
        raise ZooError(f"unknown rate form {name!r}; known: {', '.join(sorted(FORMS))}", field="form") from None


def apply_form(name: str, v: Tensor, params: Tensor) -> Tensor:
    """Evaluate form ``name`` for a batch: ``params`` is ``[G, P]``, ``v`` is ``[G, ...]``."""
    form = get_form(name)
    if params.shape[-1] != len(form.params):
        raise ZooError(f"form {name} takes {len(form.params)} parameters, got {params.shape[-1]}", field="params")
    view = (params.shape[0],) + (1,) * (v.dim() - 1)
    return form.fn(v, [params[:, i].reshape(view) for i in range(params.shape[-1])])
