"""Neurodata Without Borders (``.nwb``, read with ``pynwb``): current-clamp series and their stimuli.

Every ``CurrentClampSeries`` under acquisition is a sweep; its stimulus is the
``CurrentClampStimulusSeries`` under stimulus with the same ``sweep_number`` (else the same name
with "Stimulus"/"stim" in place of the response's). NWB stores SI units with a ``conversion``
factor, so units come from the file; the cell is the file's ``identifier``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from channelzoo.errors import InputError
from suite.recordings.sweep import CURRENT_UNITS, VOLTAGE_UNITS, Sweep, Units, make_sweep

SI = {"volts": "V", "volt": "V", "V": "V", "amperes": "A", "ampere": "A", "A": "A"}


def _values(series, table: dict[str, float], what: str, f: str) -> np.ndarray:  # noqa: ANN001 - a pynwb series
    unit = SI.get(series.unit, series.unit)
    if unit not in table:
        raise InputError(f"{series.name}: {what} unit {series.unit!r} is not one of {', '.join(table)}", file=f,
                         field=f"{what}_unit")
    data = np.asarray(series.data[:], dtype=np.float64) * float(series.conversion) + float(series.offset or 0.0)
    return data * table[unit]


def read_nwb(files: list[Path], units: Units) -> list[Sweep]:
    from pynwb import NWBHDF5IO
    from pynwb.icephys import CurrentClampSeries, CurrentClampStimulusSeries

    sweeps = []
    for path in files:
        f = str(path)
        try:
            io = NWBHDF5IO(f, "r")
            nwb = io.read()
        except Exception as e:  # noqa: BLE001 - h5py and hdmf raise many kinds for a broken file
            raise InputError(f"not a readable NWB file ({type(e).__name__}: {e})", file=f) from None
        try:
            responses = [s for s in nwb.acquisition.values() if isinstance(s, CurrentClampSeries)]
            stimuli = [s for s in nwb.stimulus.values() if isinstance(s, CurrentClampStimulusSeries)]
            if not responses:
                raise InputError("no CurrentClampSeries under acquisition", file=f, field="acquisition")
            for k, resp in enumerate(responses):
                number = resp.sweep_number if resp.sweep_number is not None else k
                stim = next((s for s in stimuli if s.sweep_number is not None and s.sweep_number == number), None)
                if stim is None:
                    raise InputError(f"{resp.name}: no CurrentClampStimulusSeries with sweep_number {number}",
                                     file=f, field="stimulus")
                if resp.rate is None:
                    raise InputError(f"{resp.name}: timestamps without a rate are not supported", file=f,
                                     field="rate")
                v = _values(resp, VOLTAGE_UNITS | {"V": 1e3}, "voltage", f)
                i = _values(stim, CURRENT_UNITS, "current", f)
                if len(v) != len(i):
                    raise InputError(f"{resp.name}: voltage ({len(v)}) and stimulus ({len(i)}) differ in length",
                                     file=f)
                junction = units.junction_mv if units.junction_mv is not None else 0.0
                sweeps.append(make_sweep(str(nwb.identifier), int(number), i, v, 1e3 / float(resp.rate), junction,
                                         f))
        finally:
            io.close()
    return sweeps
