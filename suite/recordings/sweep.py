"""One current-clamp sweep in the suite's units (ms, nA, mV), and unit conversions for the readers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from channelzoo.errors import InputError

# Factors to the suite's units: time in ms, current in nA, voltage in mV.
TIME_UNITS = {"s": 1e3, "ms": 1.0, "us": 1e-3}
CURRENT_UNITS = {"A": 1e9, "mA": 1e6, "uA": 1e3, "nA": 1.0, "pA": 1e-3}
VOLTAGE_UNITS = {"V": 1e3, "mV": 1.0, "uV": 1e-3}


@dataclass(frozen=True)
class Units:
    """What a caller says about files that do not carry it: units, sampling step, junction potential.

    ``None`` means "take it from the file" (a file that carries none is then an error).
    ``junction_mv`` is the liquid junction potential subtracted from the recorded voltage.
    """

    current: str | None = None
    voltage: str | None = None
    time: str | None = None
    dt_ms: float | None = None
    junction_mv: float | None = None


@dataclass(frozen=True)
class Sweep:
    """Times ``t`` (ms, from 0), injected current ``i`` (nA) and recorded voltage ``v`` (mV, as recorded).

    ``v_corrected`` is ``v - junction_mv``, the membrane potential a model should reproduce.
    """

    cell: str
    sweep: int
    t: np.ndarray
    i: np.ndarray
    v: np.ndarray
    dt: float  # ms
    junction_mv: float = 0.0
    source: str = ""

    @property
    def v_corrected(self) -> np.ndarray:
        return self.v - self.junction_mv

    @property
    def duration(self) -> float:
        return float(self.t[-1] - self.t[0]) if len(self.t) else 0.0


def factor(unit: str | None, table: dict[str, float], what: str, file: str) -> float:
    """The factor that takes ``unit`` to the suite's unit, or an InputError naming the file."""
    if unit is None or unit == "":
        raise InputError(f"the file gives no {what} unit; say it in the recording config "
                         f"({', '.join(table)})", file=file, field=f"{what}_unit")
    if unit not in table:
        raise InputError(f"unknown {what} unit {unit!r}; known: {', '.join(table)}", file=file, field=f"{what}_unit")
    return table[unit]


def check_sweep(s: Sweep) -> None:
    """Equal lengths, at least two samples, finite values and a positive step, else an InputError naming the file."""
    n = len(s.t)
    if len(s.i) != n or len(s.v) != n:
        raise InputError(f"sweep {s.sweep}: time, current and voltage differ in length ({n}, {len(s.i)}, "
                         f"{len(s.v)})", file=s.source)
    if n < 2:
        raise InputError(f"sweep {s.sweep}: fewer than two samples", file=s.source)
    if not (np.isfinite(s.dt) and s.dt > 0):
        raise InputError(f"sweep {s.sweep}: sampling step must be > 0 ms, got {s.dt}", file=s.source, field="dt")
    for name, x in (("current", s.i), ("voltage", s.v)):
        if not np.all(np.isfinite(x)):
            raise InputError(f"sweep {s.sweep}: non-finite {name} samples", file=s.source, field=name)


def make_sweep(cell: str, sweep: int, i: np.ndarray, v: np.ndarray, dt_ms: float, junction_mv: float,
               source: str) -> Sweep:
    """A sweep with times ``k dt`` (lengths checked by ``check_sweep``)."""
    i = np.asarray(i, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    t = np.arange(max(len(i), len(v))) * float(dt_ms)
    s = Sweep(cell, int(sweep), t, i, v, float(dt_ms), float(junction_mv), source)
    check_sweep(s)
    return s
