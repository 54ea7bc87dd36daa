"""The expert kind recovers known parameters from a synthetic recording (our simulator plus noise)."""

from __future__ import annotations

import numpy as np
import pytest

from suite.recordings.cell import RecordingCell
from suite.recordings.fit import FitSettings, fit_cell, predict
from suite.recordings.sweep import make_sweep

pytestmark = pytest.mark.usefixtures("one_thread")


TRUTH = {"g_leak": 1.3e-4, "e_leak": -75.0, "vt": -53.0}
DT = 0.25  # ms: data and model step alike (the fit's own discretisation; keeps the test fast)


def cell_truth() -> dict[str, float]:
    return RecordingCell("expert", initial=TRUTH).physical()


def synthetic_sweeps(noise_mv: float = 0.3) -> list:
    """Two sweeps of the expert cell with known parameters, sampled at 0.25 ms, with noise."""
    cell = RecordingCell("expert", initial=TRUTH)
    t = np.arange(0, 200, DT)
    sweeps = []
    gen = np.random.default_rng(0)
    for n, amp in enumerate((0.0, 0.7)):
        i = np.where((t >= 40) & (t < 190), amp, -0.05)
        s = make_sweep("synthetic", n, i, np.full_like(t, -75.0), DT, 0.0, "synthetic")
        v = predict(cell, [s], DT)[0]
        sweeps.append(make_sweep("synthetic", n, i, v + noise_mv * gen.standard_normal(len(v)), DT, 0.0,
                                 "synthetic"))
    return sweeps


def test_expert_recovers_known_parameters_from_a_synthetic_recording(one_thread: None) -> None:
    sweeps = synthetic_sweeps()
    assert sum(np.sum((s.v[1:] > -20) & (s.v[:-1] <= -20)) for s in sweeps) >= 3  # it spikes
    cell = RecordingCell("expert")  # starts at INITIAL: g_leak 1e-4, e_leak -80, vt -56
    start = cell.physical()
    fit_cell(cell, sweeps, FitSettings(iterations=100, windows=64, window_ms=2.0, dt=DT), seed=0)
    end = cell.physical()
    # V_T and the leak's reversal at least halfway from the start to the truth; the leak as the cell
    # sees it, g_leak x area (nS; g_leak and area alone trade against each other), closer than it was.
    def observed(p: dict[str, float]) -> dict[str, float]:
        return {"leak_nS": p["g_leak"] * p["area_cm2"] * 1e9, "e_leak": p["e_leak"], "vt": p["vt"]}

    truth = observed({**cell_truth(), **TRUTH})
    for name, true in truth.items():
        before, after = abs(observed(start)[name] - true), abs(observed(end)[name] - true)
        assert after < (1.0 if name == "leak_nS" else 0.5) * before, (name, observed(start)[name],
                                                                      observed(end)[name], true, end)
    v = predict(cell, sweeps, DT)
    rmse = float(np.sqrt(np.mean((v - np.stack([s.v for s in sweeps])) ** 2)))
    assert np.isfinite(rmse)


