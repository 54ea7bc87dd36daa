"""Stimuli for a saved model, from the command line: ``step:AMP,START,STOP``, ``ou:MEAN,SIGMA,TAU,SEED[,START]``
or a CSV file of ``t`` (ms) and ``i`` (the model's current unit), each sampled at a simulator's step midpoints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from channelzoo.errors import InputError
from suite.sim.stimulus import StepCurrent, ou_current

F64 = torch.float64
OU_GRID_DT = 0.0025  # ms: the OU path's own grid (recovery's ground-truth step), whatever step samples it


@dataclass(frozen=True)
class Stimulus:
    """A current as ``profile(dt, t_stop) -> [1, T]`` uA/cm2 at step midpoints, and how it was asked for."""

    text: str
    profile: Callable[[float, float], torch.Tensor]


def parse_stimulus(text: str, density: Callable[[float], float]) -> Stimulus:
    """``density`` converts a current of the model's unit to uA/cm2."""
    kind, _, rest = text.partition(":")
    if kind in ("step", "ou"):
        try:
            values = [float(x) for x in rest.split(",")]
        except ValueError:
            raise InputError(f"{text!r}: numbers expected after '{kind}:'", field="--stimulus") from None
        if kind == "step":
            if len(values) != 3 or not values[1] < values[2]:
                raise InputError(f"{text!r}: expected step:AMP,START,STOP with START < STOP", field="--stimulus")
            amp, start, stop = values
            step = StepCurrent(torch.tensor([density(amp)], dtype=F64), start, stop)
            return Stimulus(text, lambda dt, t_stop: step.sample(dt, round(t_stop / dt)).T.contiguous())
        if len(values) not in (4, 5) or values[1] < 0 or values[2] <= 0 or values[3] != int(values[3]):
            raise InputError(f"{text!r}: expected ou:MEAN,SIGMA,TAU,SEED[,START] (SIGMA >= 0, TAU > 0, SEED an "
                             "integer)", field="--stimulus")
        mean, sigma, tau, seed = values[:4]
        start = values[4] if len(values) == 5 else 0.0

        def ou(dt: float, t_stop: float) -> torch.Tensor:
            path = ou_current(1, t_stop, density(mean), density(sigma), tau, OU_GRID_DT, seed=int(seed), start=start,
                              dtype=F64)
            return path.sample(dt, round(t_stop / dt)).T.contiguous()

        return Stimulus(text, ou)
    return _csv_stimulus(Path(text), density)


def _csv_stimulus(path: Path, density: Callable[[float], float]) -> Stimulus:
    if path.suffix.lower() != ".csv":
        raise InputError(f"{str(path)!r} is neither step:..., ou:... nor a .csv file", field="--stimulus")
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise InputError(f"cannot read the stimulus ({e})", file=str(path)) from None
    for column in ("t", "i"):
        if column not in table:
            raise InputError(f"needs columns t (ms) and i (the model's current unit); has {list(table.columns)}",
                             file=str(path), field=column)
    t = pd.to_numeric(table["t"], errors="coerce").to_numpy(float)
    i = pd.to_numeric(table["i"], errors="coerce").to_numpy(float)
    if len(t) < 2 or not np.isfinite(t).all() or not (np.diff(t) > 0).all():
        raise InputError("t must hold at least two finite, increasing times", file=str(path), field="t")
    if not np.isfinite(i).all():
        raise InputError("i must hold finite numbers", file=str(path), field="i")
    scale = density(1.0)

    def sampled(dt: float, t_stop: float) -> torch.Tensor:
        mid = (np.arange(round(t_stop / dt)) + 0.5) * dt
        return torch.from_numpy(np.interp(mid, t, i) * scale).unsqueeze(0)

    return Stimulus(str(path), sampled)
