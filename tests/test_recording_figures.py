"""Recording figures and tables come from stored rows alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis import render


def fake_rows() -> pd.DataFrame:
    t = np.arange(0, 100, 0.25)
    v = np.full_like(t, -80.0)
    rows = []
    for kind in ("expert", "hybrid_gate"):
        for seed in (0, 1):
            for sweep, role, amp in ((1, "train", 0.1), (2, "test", 0.2)):
                rows.append({
                    "kind": kind, "seed": seed, "sweep": sweep, "role": role, "step_amplitude_nA": amp,
                    "gamma": 0.5 + 0.1 * seed, "n_spikes": 10 + seed, "n_spikes_recorded": 10,
                    "spike_count_rel_err": seed / 10, "rmse_subthreshold_mv": 2.0, "fit_time_s": 5.0,
                    "spike_count": 10.0 + seed, "spike_count_recorded": 10.0, "isi_cv": 0.1, "isi_cv_recorded": 0.2,
                    "t": t, "v_recorded": v, "v_model": v + 1, "curve_v": np.arange(-100.0, 40.01, 2.0),
                    "gate_inf": np.linspace(0, 1, 71), "gate_tau": np.full(71, 2.0),
                    "expert_inf": np.linspace(0, 1, 71), "expert_tau": np.full(71, 3.0), "status": "ok"})
    return pd.DataFrame(rows)


def test_render_writes_figures_and_tables(tmp_path: Path) -> None:
    written = render("recording", fake_rows(), tmp_path)
    names = {p.name for p in written}
    assert {"recording_traces.png", "recording_gate.png", "recording_scores.csv", "recording_features.csv",
            "recording_tables.md"} <= names
    scores = pd.read_csv(tmp_path / "recording_scores.csv")
    test = scores[(scores["kind"] == "expert") & (scores["role"] == "test")].iloc[0]
    assert test["seeds"] == 2 and abs(test["gamma_mean"] - 0.55) < 1e-9 and abs(test["gamma_best"] - 0.6) < 1e-9
    features = pd.read_csv(tmp_path / "recording_features.csv").set_index("feature")
    assert features.loc["spike_count", "recorded"] == 10.0 and features.loc["spike_count", "expert"] == 10.5
