"""A plain CSV layout: one file per sweep, columns ``t``, ``I`` and ``V``, each unit in brackets.

    t [ms],I [pA],V [mV]
    0.0,-20.1,-70.2

A header without a bracketed unit takes it from ``Units``. The sweep number is the last number in
the file name (``cell3_sweep12.csv`` -> 12) and the cell the name before it, else the file's stem.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from channelzoo.errors import InputError
from suite.recordings.sweep import CURRENT_UNITS, TIME_UNITS, VOLTAGE_UNITS, Sweep, Units, factor, make_sweep

HEADER = re.compile(r"^\s*(?P<name>[A-Za-z]+)\s*(?:\[(?P<unit>[^\]]*)\])?\s*$")
STEM = re.compile(r"^(?P<cell>.*?)[_\- ]*(?:sweep)?[_\- ]*(?P<sweep>\d+)$", re.IGNORECASE)


def _columns(path: Path) -> tuple[dict[str, tuple[int, str | None]], np.ndarray]:
    try:
        with path.open() as fh:
            header = fh.readline()
        data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise InputError(f"not a readable CSV of numbers ({e})", file=str(path)) from None
    cols: dict[str, tuple[int, str | None]] = {}
    for k, raw in enumerate(header.strip().split(",")):
        m = HEADER.match(raw)
        if m is None:
            raise InputError(f"column header {raw!r} is not NAME or NAME [unit]", file=str(path), field=raw)
        cols[m["name"].lower()] = (k, m["unit"])
    if data.shape[1] != len(cols):
        raise InputError(f"{len(cols)} column names but {data.shape[1]} values a row", file=str(path))
    return cols, data


def read_csv(files: list[Path], units: Units) -> list[Sweep]:
    sweeps = []
    for index, path in enumerate(files):
        cols, data = _columns(path)
        missing = [c for c in ("t", "i", "v") if c not in cols]
        if missing:
            raise InputError(f"missing column(s) {', '.join(missing)} (need t, I, V)", file=str(path),
                             field=missing[0])
        f = str(path)
        (kt, ut), (ki, ui), (kv, uv) = cols["t"], cols["i"], cols["v"]
        t = data[:, kt] * factor(ut or units.time, TIME_UNITS, "time", f)
        i = data[:, ki] * factor(ui or units.current, CURRENT_UNITS, "current", f)
        v = data[:, kv] * factor(uv or units.voltage, VOLTAGE_UNITS, "voltage", f)
        steps = np.diff(t)
        if len(steps) == 0 or not np.all(steps > 0) or np.ptp(steps) > 1e-6 * max(1.0, abs(steps.mean())) + 1e-9:
            raise InputError("times must rise in equal steps", file=f, field="t")
        m = STEM.match(path.stem)
        cell, number = (m["cell"] or path.stem, int(m["sweep"])) if m else (path.stem, index)
        sweeps.append(make_sweep(cell, number, i, v, float(steps.mean()), units.junction_mv or 0.0, f))
    return sweeps
