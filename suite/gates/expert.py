"""Expert-parameterised gates (ICG supermodels SM1..SM5 and a Boltzmann/bell pair) as ensembles.

The curves come from ``channelzoo.forms`` so each formula lives in one place; this module only
chooses better-conditioned coordinates to learn in and a starting point read off the data.

Why reparameterise: in the forms' own units the problem is badly scaled (a ~ 0.1/mV next to
b ~ 4, midpoint = b / a couples both, tau polynomial coefficients ~ 1e-6), and Adam moves
every coordinate by about the learning rate per step. So each piece learns O(1) internal
coordinates: a sigmoid learns slope (in 1/(10 mV)) and midpoint (in 10 mV); a tau learns its
centre (10 mV), log height and polynomial coefficients in y / 50 mV. ``form_params`` maps them
back to the forms' parameters exactly.

Why a data-driven start (what a careful expert does before calling an optimiser): the sigmoid's
slope and midpoint come from a weighted linear fit of logit(x_inf) against V; a tau's centre is
where the target peaks, its height the peak, and its left/right steepness is read from how fast
the target falls off on each side (tau_max / tau = cosh(k y) for a symmetric bell).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from channelzoo.forms import apply_form, get_form
from channelzoo.gates import InfTau, Rate
from suite.gates.neural import make_generator

VOLT_UNIT_MV = 10.0  # internal unit of midpoints and centres; slopes are in 1 / VOLT_UNIT_MV
POLY_UNIT_MV = 50.0  # tau polynomials are learned in y / POLY_UNIT_MV
DEFAULT_SLOPE_PER_MV = 0.05  # fallback steepness (a 20 mV e-fold) when the data cannot tell
_LOGIT_CLIP = 1e-3  # points closer than this to 0 or 1 carry no slope information
_MIN_SLOPE_PER_MV, _MAX_SLOPE_PER_MV = 0.01, 1.0
_MIN_TAU_MS = 1e-4
_BELL_RATIO_MIN, _BELL_RATIO_MAX = 1.05, 20.0  # fall-off ratios that measure a bell's steepness
_BELL_FLOOR_FRACTION = 0.9  # BellTau's tau_min starts at this fraction of the smallest target tau


class Piece:
    """One half of a gate (x_inf or tau): a channelzoo form, its internal coordinates and their init."""

    form: str
    n_internal: int

    def init(self, v: Tensor, target: Tensor) -> Tensor:
        """Internal coordinates ``[G, n_internal]`` read off the target curves ``[G, N]`` on ``v`` ``[N]``."""
        raise NotImplementedError

    def form_params(self, theta: Tensor) -> Tensor:
        """The form's own parameters ``[G, P]`` (differentiable in ``theta``)."""
        raise NotImplementedError


@dataclass(frozen=True)
class SigmoidPiece(Piece):
    """A 0..1 sigmoid: ICG's 1/(1+exp(-aV+b)) or NeuroML's HHSigmoidVariable with rate 1 (Boltzmann)."""

    form: str = "ICGSigmoid"
    n_internal: int = 2  # slope s = a * 10 mV, midpoint m = V_half / 10 mV

    def init(self, v: Tensor, target: Tensor) -> Tensor:
        a, v_half = _logit_fit(v, target)
        return torch.stack([a * VOLT_UNIT_MV, v_half / VOLT_UNIT_MV], dim=-1)

    def form_params(self, theta: Tensor) -> Tensor:
        a, v_half = theta[:, 0] / VOLT_UNIT_MV, theta[:, 1] * VOLT_UNIT_MV
        if self.form == "ICGSigmoid":
            return torch.stack([a, a * v_half], dim=-1)
        # Note for Boltzmann form: scale = 1/a, so a slope through zero means a flat curve at 0.5.
        return torch.stack([torch.ones_like(a), v_half, 1.0 / a], dim=-1)


@dataclass(frozen=True)
class ModifiedSigmoidPiece(Piece):
    """ICG's c / (1 + exp(-aV + b)) + d: a sigmoid between d and c + d."""

    form: str = "ICGModifiedSigmoid"
    n_internal: int = 4  # s, m as SigmoidPiece; c, d as they are (dimensionless)

    def init(self, v: Tensor, target: Tensor) -> Tensor:
        low = target.amin(dim=-1, keepdim=True)
        span = (target.amax(dim=-1, keepdim=True) - low).clamp_min(1e-3)
        a, v_half = _logit_fit(v, (target - low) / span)
        return torch.stack([a * VOLT_UNIT_MV, v_half / VOLT_UNIT_MV, span[:, 0], low[:, 0]], dim=-1)

    def form_params(self, theta: Tensor) -> Tensor:
        a, v_half = theta[:, 0] / VOLT_UNIT_MV, theta[:, 1] * VOLT_UNIT_MV
        return torch.stack([a, a * v_half, theta[:, 2], theta[:, 3]], dim=-1)


@dataclass(frozen=True)
class IcgTauPiece(Piece):
    """ICG's tau_k = b / (exp(-P(y)) + exp(Q(y))), y = V - a, P and Q of order k without constant."""

    order: int = 3

    @property
    def form(self) -> str:  # type: ignore[override]
        return f"ICGTau{self.order}"

    @property
    def n_internal(self) -> int:  # type: ignore[override]
        return 2 + 2 * self.order  # centre (10 mV), log b, then P and Q coefficients in y / 50 mV

    def init(self, v: Tensor, target: Tensor) -> Tensor:
        centre, peak, k_left, k_right = _bell_fit(v, target, floor=torch.zeros_like(target[:, :1]))
        theta = torch.zeros(target.shape[0], self.n_internal, dtype=target.dtype, device=target.device)
        theta[:, 0] = centre / VOLT_UNIT_MV
        theta[:, 1] = torch.log(2.0 * peak)  # tau(y = 0) = b / 2
        theta[:, 2] = k_left * POLY_UNIT_MV  # exp(-p1 y) dominates left of the centre
        theta[:, 2 + self.order] = k_right * POLY_UNIT_MV
        return theta

    def form_params(self, theta: Tensor) -> Tensor:
        powers = POLY_UNIT_MV ** torch.arange(1, self.order + 1, dtype=theta.dtype, device=theta.device)
        p = theta[:, 2:2 + self.order] / powers
        q = theta[:, 2 + self.order:] / powers
        return torch.cat([(theta[:, 0] * VOLT_UNIT_MV).unsqueeze(-1), theta[:, 1:2].exp(), p, q], dim=-1)


@dataclass(frozen=True)
class BellTauPiece(Piece):
    """BellTau: tau_min + amplitude / (exp((V - v1)/k1) + exp(-(V - v2)/k2)), kept positive via logs."""

    form: str = "BellTau"
    n_internal: int = 6  # log tau_min, log amplitude, v1 (10 mV), log k1, v2 (10 mV), log k2

    def init(self, v: Tensor, target: Tensor) -> Tensor:
        floor = _BELL_FLOOR_FRACTION * target.amin(dim=-1, keepdim=True).clamp_min(2 * _MIN_TAU_MS)
        centre, peak, k_left, k_right = _bell_fit(v, target, floor)
        tau_min = floor[:, 0]
        amplitude = 2.0 * (peak - tau_min).clamp_min(_MIN_TAU_MS)
        return torch.stack([tau_min.log(), amplitude.log(), centre / VOLT_UNIT_MV, -k_right.log(),
                            centre / VOLT_UNIT_MV, -k_left.log()], dim=-1)

    def form_params(self, theta: Tensor) -> Tensor:
        exp, unit = theta.exp(), theta * VOLT_UNIT_MV
        return torch.stack([exp[:, 0], exp[:, 1], unit[:, 2], exp[:, 3], unit[:, 4], exp[:, 5]], dim=-1)


# kind -> (x_inf piece, tau piece); SMk as channelzoo.forms.SUPERMODELS.
EXPERT_KINDS: dict[str, tuple[Piece, Piece]] = {
    "sm1": (SigmoidPiece(), IcgTauPiece(3)),
    "sm2": (ModifiedSigmoidPiece(), IcgTauPiece(3)),
    "sm3": (SigmoidPiece(), IcgTauPiece(2)),
    "sm4": (SigmoidPiece(), IcgTauPiece(1)),
    "sm5": (SigmoidPiece(), IcgTauPiece(4)),
    "boltzmann_bell": (SigmoidPiece("HHSigmoidVariable"), BellTauPiece()),
}


class ExpertGateEnsemble(nn.Module):
    """G gates of one expert kind, initialised from their targets: ``forward(v [G, N]) -> (x_inf, tau)``.

    ``init_noise`` adds N(0, init_noise^2) to the internal coordinates (seeded), so repeated copies
    of a gate (several seeds) start apart; 0 gives the plain data-driven start.
    """

    def __init__(self, kind: str, inf_target: Tensor, tau_target: Tensor, v_grid: Tensor,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 seed: int | torch.Generator | None = 0, init_noise: float = 0.0) -> None:
        super().__init__()
        if kind not in EXPERT_KINDS:
            raise ValueError(f"unknown expert kind {kind!r}; known: {', '.join(EXPERT_KINDS)}")
        if inf_target.shape != tau_target.shape or inf_target.dim() != 2 or inf_target.shape[1] != v_grid.numel():
            raise ValueError(f"targets must both be [G, N] with N = {v_grid.numel()} grid points, "
                             f"got {tuple(inf_target.shape)} and {tuple(tau_target.shape)}")
        self.kind = kind
        self.size = inf_target.shape[0]
        self.inf_piece, self.tau_piece = EXPERT_KINDS[kind]
        # Initial coordinates are computed in float64 on CPU: the same start on every device and dtype.
        as64 = {"dtype": torch.float64, "device": "cpu"}
        v64 = v_grid.detach().to(**as64)
        theta_inf = self.inf_piece.init(v64, inf_target.detach().to(**as64))
        theta_tau = self.tau_piece.init(v64, tau_target.detach().to(**as64))
        if init_noise > 0:
            gen = make_generator(seed)
            theta_inf = theta_inf + init_noise * torch.randn(theta_inf.shape, generator=gen, dtype=torch.float64)
            theta_tau = theta_tau + init_noise * torch.randn(theta_tau.shape, generator=gen, dtype=torch.float64)
        self.theta_inf = nn.Parameter(theta_inf.to(device=device, dtype=dtype))
        self.theta_tau = nn.Parameter(theta_tau.to(device=device, dtype=dtype))

    @property
    def forms(self) -> tuple[str, str]:
        """The channelzoo form names of x_inf and tau."""
        return self.inf_piece.form, self.tau_piece.form

    def form_params(self) -> tuple[Tensor, Tensor]:
        """Parameters in the forms' own order and units: ``[G, P_inf]``, ``[G, P_tau]``."""
        return self.inf_piece.form_params(self.theta_inf), self.tau_piece.form_params(self.theta_tau)

    def forward(self, v: Tensor) -> tuple[Tensor, Tensor]:
        p_inf, p_tau = self.form_params()
        return apply_form(self.inf_piece.form, v, p_inf), apply_form(self.tau_piece.form, v, p_tau)

    def export(self) -> list[InfTau]:
        """One declarative channelzoo ``InfTau`` per gate (float64 values), e.g. for the catalogue."""
        inf_form, tau_form = self.forms
        return [InfTau(Rate.of(inf_form, a), Rate.of(tau_form, b)) for a, b in zip(*self._exported(), strict=True)]

    def export_dicts(self) -> list[dict[str, Any]]:
        """``{"inf_form": name, "inf": {param: value}, "tau_form": name, "tau": {...}}`` per gate."""
        names = get_form(self.forms[0]).params, get_form(self.forms[1]).params
        return [{"inf_form": self.forms[0], "inf": dict(zip(names[0], a, strict=True)),
                 "tau_form": self.forms[1], "tau": dict(zip(names[1], b, strict=True))}
                for a, b in zip(*self._exported(), strict=True)]

    def _exported(self) -> tuple[list[list[float]], list[list[float]]]:
        # Mapped in float64 from the learned coordinates, so no rounding is added on top of the model's own.
        with torch.no_grad():
            p_inf = self.inf_piece.form_params(self.theta_inf.detach().to("cpu", torch.float64))
            p_tau = self.tau_piece.form_params(self.theta_tau.detach().to("cpu", torch.float64))
        return p_inf.tolist(), p_tau.tolist()

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, size={self.size}, forms={self.forms}"


def _logit_fit(v: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Slope a (1/mV) and midpoint (mV) of sigmoid(a (V - V_half)) from a weighted fit of logit(y) on V.

    Weights y (1 - y) favour the transition, where the logit carries information; points within
    1e-3 of 0 or 1 get none. With fewer than two informative points (a step-like curve, or a flat
    one), the midpoint is where y crosses 0.5 and the slope a steep default with the data's sign.
    """
    vv = v.expand_as(y)
    informative = (y > _LOGIT_CLIP) & (y < 1 - _LOGIT_CLIP)
    yc = y.clamp(_LOGIT_CLIP, 1 - _LOGIT_CLIP)
    w = torch.where(informative, yc * (1 - yc), torch.zeros_like(yc))
    w_sum = w.sum(-1, keepdim=True).clamp_min(1e-12)
    logit = torch.log(yc / (1 - yc))
    v_mean = (w * vv).sum(-1, keepdim=True) / w_sum
    l_mean = (w * logit).sum(-1, keepdim=True) / w_sum
    cov = (w * (vv - v_mean) * (logit - l_mean)).sum(-1)
    var = (w * (vv - v_mean) ** 2).sum(-1)
    slope = cov / var.clamp_min(1e-12)
    fitted = (informative.sum(-1) >= 2) & (slope.abs() > 0)

    rising = y[:, -1] >= y[:, 0]
    sign = torch.where(fitted, torch.sign(slope), torch.where(rising, 1.0, -1.0).to(y.dtype))
    magnitude = torch.where(fitted, slope.abs(), torch.full_like(slope, 0.2)).clamp(_MIN_SLOPE_PER_MV,
                                                                                    _MAX_SLOPE_PER_MV)
    v_half_fit = v_mean[:, 0] - l_mean[:, 0] / slope.where(fitted, torch.ones_like(slope))
    v_half = torch.where(fitted, v_half_fit, _crossing(v, y, 0.5)).clamp(-150.0, 150.0)
    return sign * magnitude, v_half


def _crossing(v: Tensor, y: Tensor, level: float) -> Tensor:
    """First voltage where y crosses ``level`` (linear between grid points); nearest point if it never does."""
    d = y - level
    cross = (d[:, :-1] * d[:, 1:] <= 0) & (d[:, :-1] != d[:, 1:])
    any_cross = cross.any(-1)
    i = cross.to(y.dtype).argmax(-1)
    d0, d1 = d.gather(1, i[:, None])[:, 0], d.gather(1, (i + 1)[:, None])[:, 0]
    v0, v1 = v[i], v[i + 1]
    at = v0 + (v1 - v0) * d0 / (d0 - d1).where(any_cross, torch.ones_like(d0))
    return torch.where(any_cross, at, v[d.abs().argmin(-1)])


def _bell_fit(v: Tensor, tau: Tensor, floor: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Centre (mV), peak (ms) and left/right steepness (1/mV) of a bell-shaped tau above ``floor`` [G, 1].

    For a symmetric bell, (peak - floor) / (tau - floor) = cosh(k y), so each point that has clearly
    but not wholly fallen off (ratio 1.05..20; further out the floor dominates) gives
    k = acosh(ratio) / |y|, and each side averages its points. A side that only falls off beyond
    that takes its steepest point's bound, a side that never falls off is flat (smallest slope), and
    a side without points (peak at the grid's edge) takes the other side's value.
    """
    tau = tau.clamp_min(_MIN_TAU_MS)
    i_peak = tau.argmax(-1)
    centre = v[i_peak]
    peak = tau.gather(1, i_peak[:, None])
    y = v.expand_as(tau) - centre[:, None]
    ratio = ((peak - floor) / (tau - floor).clamp_min(_MIN_TAU_MS)).clamp(1.0, _BELL_RATIO_MAX)
    k = torch.acosh(ratio) / y.abs().clamp_min(1e-6)
    usable = (ratio > _BELL_RATIO_MIN) & (ratio < _BELL_RATIO_MAX)
    flat = torch.full_like(centre, _MIN_SLOPE_PER_MV)

    def side(on_side: Tensor) -> tuple[Tensor, Tensor]:
        m = (usable & on_side).to(tau.dtype)
        n = m.sum(-1)
        mean_k = (k * m).sum(-1) / n.clamp_min(1.0)
        steep = (on_side & (ratio >= _BELL_RATIO_MAX)).any(-1)
        steepest = torch.where(on_side, k, torch.zeros_like(k)).amax(-1)
        return torch.where(n > 0, mean_k, torch.where(steep, steepest, flat)), on_side.any(-1)

    k_left, has_left = side(y < 0)
    k_right, has_right = side(y > 0)
    default = torch.full_like(k_left, DEFAULT_SLOPE_PER_MV)
    k_left_f = torch.where(has_left, k_left, torch.where(has_right, k_right, default))
    k_right_f = torch.where(has_right, k_right, torch.where(has_left, k_left, default))
    clamp = (_MIN_SLOPE_PER_MV, _MAX_SLOPE_PER_MV)
    return centre, peak[:, 0], k_left_f.clamp(*clamp), k_right_f.clamp(*clamp)
