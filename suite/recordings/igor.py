"""Igor binary waves (``.ibw``, read with ``igor2``): one wave per channel and sweep.

Files are paired by name, ``<cell>_<channel>_<protocol>_<sweep>.ibw`` (BluePyEfe's layout, e.g.
``B6_Ch0_IDRest_181.ibw``): of the two channels of a sweep, the one whose wave carries a current
unit (A, pA, ...) is the current and the one with a voltage unit the voltage. Units come from the
wave header, else from ``Units``; the sampling step from the wave's x scaling (seconds), else
``Units.dt_ms``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from channelzoo.errors import InputError
from suite.recordings.sweep import CURRENT_UNITS, TIME_UNITS, VOLTAGE_UNITS, Sweep, Units, factor, make_sweep

NAME = re.compile(r"^(?P<cell>.+?)_(?P<channel>[^_]+)_(?P<protocol>.+)_(?P<sweep>\d+)$")


def _load(path: Path) -> tuple[np.ndarray, str, float | None]:
    """Data, data unit and x step (in the wave's x unit, taken as s) of one wave."""
    from igor2 import binarywave

    try:
        wave = binarywave.load(str(path))["wave"]
    except Exception as e:  # noqa: BLE001 - igor2 raises many kinds for a broken file
        raise InputError(f"not a readable Igor binary wave ({type(e).__name__}: {e})", file=str(path)) from None
    header = wave["wave_header"]
    data = np.asarray(wave["wData"], dtype=np.float64)
    if data.ndim != 1:
        raise InputError(f"expected a 1-D wave, got shape {data.shape}", file=str(path))
    unit = b"".join(np.atleast_1d(header.get("dataUnits", b""))).decode("latin-1").strip("\x00 ")
    sfa = header.get("sfA")
    step = float(np.atleast_1d(sfa)[0]) if sfa is not None else None
    return data, unit, step


def read_igor(files: list[Path], units: Units) -> list[Sweep]:
    groups: dict[tuple[str, str, int], list[Path]] = {}
    for f in files:
        m = NAME.match(f.stem)
        if m is None:
            raise InputError("Igor wave names must read <cell>_<channel>_<protocol>_<sweep>.ibw", file=str(f))
        groups.setdefault((m["cell"], m["protocol"], int(m["sweep"])), []).append(f)
    sweeps = []
    for (cell, _protocol, number), paths in sorted(groups.items()):
        current = voltage = None
        for p in paths:
            data, unit, step = _load(p)
            unit = unit or None
            kind = ("current" if unit in CURRENT_UNITS else "voltage" if unit in VOLTAGE_UNITS else None)
            if kind is None:  # the header is silent: the caller's units, current channel named first
                kind = "current" if current is None and units.current else "voltage"
                unit = units.current if kind == "current" else units.voltage
            scale = factor(unit, CURRENT_UNITS if kind == "current" else VOLTAGE_UNITS, kind, str(p))
            entry = (data * scale, step, p)
            if kind == "current":
                if current is not None:
                    raise InputError(f"two current waves for sweep {number} (also {current[2].name})", file=str(p))
                current = entry
            else:
                if voltage is not None:
                    raise InputError(f"two voltage waves for sweep {number} (also {voltage[2].name})", file=str(p))
                voltage = entry
        first = str(paths[0])
        if current is None or voltage is None:
            missing = "current" if current is None else "voltage"
            raise InputError(f"sweep {number} of cell {cell!r} has no {missing} wave", file=first, field=missing)
        dt = units.dt_ms
        if dt is None:
            step = voltage[1]
            dt = step * factor(units.time or "s", TIME_UNITS, "time", first) if step else None
        if dt is None:
            raise InputError("no sampling step in the wave; give dt_ms", file=first, field="dt_ms")
        if len(current[0]) != len(voltage[0]):
            raise InputError(f"current ({len(current[0])}) and voltage ({len(voltage[0])}) waves differ in length",
                             file=str(voltage[2]))
        sweeps.append(make_sweep(cell, number, current[0], voltage[0], dt, units.junction_mv or 0.0,
                                 str(voltage[2])))
    return sweeps
