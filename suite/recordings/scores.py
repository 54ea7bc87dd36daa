"""Scores of a model trace against a recorded sweep: spike-time coincidence, eFEL features, subthreshold RMSE.

- Gamma: Kistler et al. (1997)'s coincidence factor (``suite.sim.spikes``), spikes within
  +-``window`` ms (4 ms, as in the quantitative single-neuron modelling competitions) coincide.
- Features: eFEL's, computed on both traces over the stimulus window with the same spike threshold.
- Subthreshold RMSE: mV over the samples farther than ``mask_before``/``mask_after`` ms from any
  spike of either trace.
"""

from __future__ import annotations

import math

import numpy as np

from suite.sim.spikes import coincidence_factor, spike_times

# eFEL name -> column name
FEATURES = {
    "Spikecount": "spike_count",
    "mean_frequency": "mean_frequency_hz",
    "time_to_first_spike": "time_to_first_spike_ms",
    "AP_amplitude": "ap_amplitude_mv",
    "AP_width": "ap_width_ms",
    "AHP_depth": "ahp_depth_mv",
    "ISI_CV": "isi_cv",
    "adaptation_index": "adaptation_index",
}


def stimulus_window(t: np.ndarray, i: np.ndarray) -> tuple[float, float]:
    """Start and end (ms) of the step: the longest run of samples whose current is off its
    baseline (the first tenth's median) by more than half the largest such deviation."""
    base = np.median(i[: max(1, len(i) // 10)])
    dev = np.abs(i - base)
    if dev.max() <= 0:
        return float(t[0]), float(t[-1])
    on = dev > 0.5 * dev.max()
    # The longest run of True.
    edges = np.flatnonzero(np.diff(np.concatenate([[0], on.astype(int), [0]])))
    starts, ends = edges[::2], edges[1::2]
    k = int(np.argmax(ends - starts))
    return float(t[starts[k]]), float(t[min(ends[k], len(t) - 1)])


def efel_features(t: np.ndarray, v: np.ndarray, start: float, end: float, threshold: float) -> dict[str, float]:
    """The ``FEATURES`` of one trace (NaN where eFEL finds none: no spikes, too few ISIs)."""
    import efel

    efel.set_setting("Threshold", float(threshold))
    trace = {"T": np.asarray(t, dtype=float), "V": np.asarray(v, dtype=float), "stim_start": [start],
             "stim_end": [end]}
    (values,) = efel.get_feature_values([trace], list(FEATURES), raise_warnings=False)
    out = {}
    for name, column in FEATURES.items():
        x = values.get(name)
        out[column] = float(np.mean(x)) if x is not None and len(x) else (0.0 if name == "Spikecount" else math.nan)
    return out


def subthreshold_rmse(t: np.ndarray, v_ref: np.ndarray, v: np.ndarray, spikes: list[np.ndarray],
                      mask_before: float = 2.0, mask_after: float = 10.0) -> float:
    """RMSE (mV) over the samples outside [s - mask_before, s + mask_after] of every spike s given."""
    keep = np.ones(len(t), dtype=bool)
    for s in np.concatenate([np.asarray(x, dtype=float) for x in spikes]) if spikes else []:
        keep &= ~((t >= s - mask_before) & (t <= s + mask_after))
    if not keep.any():
        return math.nan
    return float(np.sqrt(np.mean((v[keep] - v_ref[keep]) ** 2)))


def score_sweep(t: np.ndarray, i: np.ndarray, v_rec: np.ndarray, v_mod: np.ndarray, threshold: float = -20.0,
                window: float = 4.0) -> dict[str, float]:
    """Every score of one model trace against its recording: Gamma, spike counts, RMSE, features (both)."""
    s_rec, s_mod = spike_times(t, v_rec, threshold), spike_times(t, v_mod, threshold)
    start, end = stimulus_window(t, i)
    out = {"gamma": coincidence_factor(s_rec, s_mod, float(t[-1] - t[0]), window),
           "n_spikes": len(s_mod), "n_spikes_recorded": len(s_rec),
           "spike_count_rel_err": (len(s_mod) - len(s_rec)) / max(1, len(s_rec)),
           "rmse_subthreshold_mv": subthreshold_rmse(t, v_rec, v_mod, [s_rec, s_mod]),
           "stim_start_ms": start, "stim_end_ms": end}
    if np.all(np.isfinite(v_mod)):
        for k, x in efel_features(t, v_mod, start, end, threshold).items():
            out[k] = x
    for k, x in efel_features(t, v_rec, start, end, threshold).items():
        out[f"{k}_recorded"] = x
    return out
