"""Axon Binary Format (``.abf``, read with ``pyabf``): every sweep of a current-clamp file.

The voltage is the first ADC channel with a voltage unit. The current is the first ADC channel
with a current unit, else the protocol's command waveform (``sweepC``) if it has a current unit;
a file with neither is an error (it holds no stimulus to fit against).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from channelzoo.errors import InputError
from suite.recordings.sweep import CURRENT_UNITS, VOLTAGE_UNITS, Sweep, Units, factor, make_sweep


def _unit(u: str) -> str:
    return u.replace("\x00", "").strip()


def read_abf(files: list[Path], units: Units) -> list[Sweep]:
    import pyabf

    sweeps = []
    for path in files:
        f = str(path)
        try:
            abf = pyabf.ABF(f)
        except Exception as e:  # noqa: BLE001 - pyabf raises many kinds for a broken file
            raise InputError(f"not a readable ABF file ({type(e).__name__}: {e})", file=f) from None
        adc = [_unit(u) for u in abf.adcUnits]
        v_ch = next((k for k, u in enumerate(adc) if u in VOLTAGE_UNITS), None)
        i_ch = next((k for k, u in enumerate(adc) if u in CURRENT_UNITS), None)
        if v_ch is None:
            raise InputError(f"no voltage channel (ADC units {adc})", file=f, field="voltage")
        dt = 1e3 / abf.sampleRate if units.dt_ms is None else units.dt_ms
        for n in range(abf.sweepCount):
            abf.setSweep(n, channel=v_ch)
            v = np.array(abf.sweepY, dtype=np.float64) * factor(adc[v_ch], VOLTAGE_UNITS, "voltage", f)
            if i_ch is not None:
                abf.setSweep(n, channel=i_ch)
                i = np.array(abf.sweepY, dtype=np.float64) * factor(adc[i_ch], CURRENT_UNITS, "current", f)
            else:
                command = np.array(abf.sweepC, dtype=np.float64)
                unit = _unit(abf.sweepUnitsC) or units.current
                if not np.all(np.isfinite(command)) or unit not in CURRENT_UNITS:
                    raise InputError(f"no current channel and no current command (ADC units {adc})", file=f,
                                     field="current")
                i = command * CURRENT_UNITS[unit]
            sweeps.append(make_sweep(path.stem, n, i, v, dt, units.junction_mv or 0.0, f))
    return sweeps
