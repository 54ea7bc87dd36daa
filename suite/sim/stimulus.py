"""Injected currents, batched over cells: step currents and Ornstein-Uhlenbeck noise.

A stimulus is a current density in uA/cm2 for each of N cells (a protocol stated in pA or nA into a
compartment of known area converts through ``current_density``). Fixed-step
simulators ask for ``sample(dt, steps)`` ``[T, N]``, the value at each step's midpoint t_n + dt/2 (as
NEURON evaluates an IClamp); adaptive solvers ask for ``at(t)`` ``[N]``. ``breakpoints`` lists the
times where the current jumps, so an adaptive solver can stop there instead of stepping over them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

CURRENT_UNITS = ("uA/cm2", "pA", "nA")  # a density, or a current into a compartment of known area
_UA_PER_UNIT = {"pA": 1e-6, "nA": 1e-3}


def nA_to_density(current_nA: float | Tensor, area_cm2: float) -> float | Tensor:  # noqa: N802 - unit name
    """nA over a membrane of ``area_cm2`` as uA/cm2: 1 nA = 1e-3 uA."""
    return current_nA * 1e-3 / area_cm2


def cylinder_area_cm2(radius_um: float, length_um: float) -> float:
    """The lateral membrane of a cylinder (no end caps, as NEURON and Jaxley count it): 2 pi r L, um2 -> cm2."""
    return 2.0 * math.pi * radius_um * length_um * 1e-8


def current_density(value: float | Tensor, unit: str, area_cm2: float) -> float | Tensor:
    """A current stated in ``unit`` (see ``CURRENT_UNITS``) as a density in uA/cm2 over ``area_cm2``.

    The one place where a protocol's "15 pA" meets the simulators' uA/cm2: 15 pA into the paper's
    1 um x 10 um cylinder (62.83 um2) is 23.87 uA/cm2, not 15.
    """
    if unit == "uA/cm2":
        return value
    if unit not in _UA_PER_UNIT:
        raise ValueError(f"unknown current unit {unit!r}; known: {', '.join(CURRENT_UNITS)}")
    if not area_cm2 > 0:
        raise ValueError(f"a current in {unit} needs a positive membrane area, got {area_cm2} cm2")
    return value * _UA_PER_UNIT[unit] / area_cm2


def density_to_nA(density: float | Tensor, area_cm2: float) -> float | Tensor:  # noqa: N802 - unit name
    """uA/cm2 over ``area_cm2`` as nA (NEURON's IClamp unit)."""
    return density * area_cm2 * 1e3


@dataclass(frozen=True)
class StepCurrent:
    """``amplitude`` ``[N]`` uA/cm2 from ``start`` to ``stop`` ms, zero elsewhere (NEURON's IClamp)."""

    amplitude: Tensor
    start: float
    stop: float

    @property
    def n_cells(self) -> int:
        return self.amplitude.numel()

    @property
    def breakpoints(self) -> tuple[float, ...]:
        return (self.start, self.stop)

    def at(self, t: Tensor | float) -> Tensor:
        on = (t >= self.start) & (t < self.stop) if isinstance(t, Tensor) else self.start <= t < self.stop
        return self.amplitude * on

    def sample(self, dt: float, steps: int, t0: float = 0.0) -> Tensor:
        amp = self.amplitude
        mid = t0 + (torch.arange(steps, device=amp.device, dtype=torch.float64) + 0.5) * dt
        on = ((mid >= self.start) & (mid < self.stop)).to(amp.dtype)
        return on.unsqueeze(1) * amp.unsqueeze(0)


@dataclass(frozen=True)
class SampledCurrent:
    """Any current given on a regular grid (``values`` ``[K, N]`` uA/cm2, held for ``grid_dt`` ms each)."""

    values: Tensor
    grid_dt: float
    t0: float = 0.0

    @property
    def n_cells(self) -> int:
        return self.values.shape[1]

    @property
    def breakpoints(self) -> tuple[float, ...]:
        return ()  # changes every grid point: an adaptive solver should cap its step at grid_dt instead

    def at(self, t: Tensor | float) -> Tensor:
        k = int(math.floor((float(t) - self.t0) / self.grid_dt))
        return self.values[min(max(k, 0), self.values.shape[0] - 1)]

    def sample(self, dt: float, steps: int, t0: float = 0.0) -> Tensor:
        mid = t0 + (torch.arange(steps, dtype=torch.float64) + 0.5) * dt
        k = ((mid - self.t0) / self.grid_dt).floor().long().clamp(0, self.values.shape[0] - 1)
        return self.values[k.to(self.values.device)]


def ou_current(n_cells: int, duration: float, mean: float | Tensor, sigma: float | Tensor, tau: float = 5.0,
               grid_dt: float = 0.025, seed: int = 0, start: float = 0.0, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> SampledCurrent:
    """An Ornstein-Uhlenbeck current (mean, stationary sd ``sigma`` uA/cm2, correlation time ``tau`` ms),
    exact discretisation on a ``grid_dt`` grid, zero before ``start``; one independent path per cell, seeded."""
    steps = int(math.ceil(duration / grid_dt))
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(steps, n_cells, generator=gen, dtype=torch.float64)
    a = math.exp(-grid_dt / tau)
    b = math.sqrt(1.0 - a * a)
    x = torch.empty(steps, n_cells, dtype=torch.float64)
    x[0] = noise[0]  # start in the stationary distribution
    for k in range(1, steps):
        x[k] = a * x[k - 1] + b * noise[k]
    mean_t = torch.as_tensor(mean, dtype=torch.float64)
    sigma_t = torch.as_tensor(sigma, dtype=torch.float64)
    values = mean_t + sigma_t * x
    t = (torch.arange(steps, dtype=torch.float64) + 0.5) * grid_dt
    values = values * (t >= start).to(values.dtype).unsqueeze(1)
    return SampledCurrent(values.to(device, dtype), grid_dt)
