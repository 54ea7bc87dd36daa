"""Spike times and the coincidence factor (Kistler et al. 1997), for comparing spike trains of two traces."""

from __future__ import annotations

import numpy as np


def spike_times(t: np.ndarray, v: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Upward crossings of ``threshold`` (mV), linearly interpolated between samples (ms)."""
    v = np.asarray(v, dtype=float)
    t = np.asarray(t, dtype=float)
    up = np.flatnonzero((v[:-1] < threshold) & (v[1:] >= threshold))
    frac = (threshold - v[up]) / (v[up + 1] - v[up])
    return t[up] + frac * (t[up + 1] - t[up])


def coincidence_factor(reference: np.ndarray, model: np.ndarray, duration: float, window: float = 2.0) -> float:
    """Gamma = (N_coinc - <N_coinc>) / (N_ref + N_model) * 2 / (1 - 2 nu window): 1 for identical trains,
    about 0 for chance. A model spike coincides with a reference spike within +-``window`` ms, each
    reference spike counted once. Both trains empty: 1; one empty: 0."""
    reference, model = np.sort(np.asarray(reference)), np.sort(np.asarray(model))
    n_ref, n_mod = len(reference), len(model)
    if n_ref == 0 and n_mod == 0:
        return 1.0
    if n_ref == 0 or n_mod == 0:
        return 0.0
    used = np.zeros(n_ref, dtype=bool)
    coinc = 0
    for s in model:
        close = np.flatnonzero(~used & (np.abs(reference - s) <= window))
        if close.size:
            used[close[np.argmin(np.abs(reference[close] - s))]] = True
            coinc += 1
    rate = n_mod / duration
    expected = 2.0 * rate * window * n_ref
    norm = 1.0 - 2.0 * rate * window
    if norm <= 0:
        return float("nan")
    return float((coinc - expected) / (0.5 * (n_ref + n_mod)) / norm)
