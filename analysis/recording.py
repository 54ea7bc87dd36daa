"""Recording figures and tables (issue 15), from the stored result rows alone.

- ``recording_traces.png``: recorded and model voltages on each held-out sweep (the best seed of
  each kind by its mean held-out Gamma), with the f-I curve (spike count against step amplitude,
  recorded and every kind) beside them;
- ``recording_gate.png``: the hybrid gate's learned n (x_inf, tau) beside the expert's curves;
- ``recording_scores.csv`` / ``recording_features.csv`` and ``recording_tables.md``: Gamma, spike
  counts and subthreshold RMSE per kind on held-out sweeps (mean and sd over seeds), and the eFEL
  features of each kind beside the recording's.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.output import save_figure, write_tables  # noqa: E402

COLORS = {"expert": "tab:blue", "hybrid_gate": "tab:orange", "hybrid_current": "tab:green"}
FEATURES = ["spike_count", "mean_frequency_hz", "time_to_first_spike_ms", "ap_amplitude_mv", "ap_width_ms",
            "ahp_depth_mv", "isi_cv", "adaptation_index"]


def score_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per kind and role: Gamma, spike-count error and subthreshold RMSE over (seed, sweep), and fit cost."""
    ok = rows[rows["status"] == "ok"]
    per_seed = ok.groupby(["kind", "role", "seed"]).agg(
        gamma=("gamma", "mean"), count_err=("spike_count_rel_err", lambda s: float(np.mean(np.abs(s)))),
        rmse=("rmse_subthreshold_mv", "mean"), fit_time_s=("fit_time_s", "first")).reset_index()
    out = per_seed.groupby(["kind", "role"]).agg(
        seeds=("seed", "size"), gamma_mean=("gamma", "mean"), gamma_sd=("gamma", "std"),
        gamma_best=("gamma", "max"), abs_count_err_mean=("count_err", "mean"), rmse_sub_mv=("rmse", "mean"),
        fit_time_s=("fit_time_s", "mean")).reset_index()
    diverged = rows[rows["status"] != "ok"].groupby(["kind", "role"]).size().rename("diverged_rows")
    return out.merge(diverged, on=["kind", "role"], how="left").fillna({"diverged_rows": 0})


def count_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Spike counts per sweep: the recording's and each kind's (mean over seeds)."""
    ok = rows[rows["status"] == "ok"]
    out = ok.pivot_table(index=["sweep", "role", "n_spikes_recorded"], columns="kind", values="n_spikes",
                         aggfunc="mean").reset_index()
    out.columns.name = None
    return out


def feature_table(rows: pd.DataFrame) -> pd.DataFrame:
    """eFEL features on held-out sweeps: the recording, then each kind (mean over seeds and sweeps)."""
    test = rows[(rows["role"] == "test") & (rows["status"] == "ok")]
    present = [f for f in FEATURES if f in test and f"{f}_recorded" in test]
    if test.empty or not present:
        return pd.DataFrame()
    recorded = test.drop_duplicates("sweep")[[f"{f}_recorded" for f in present]].mean()
    table = {"recorded": [float(recorded[f"{f}_recorded"]) for f in present]}
    for kind, group in test.groupby("kind"):
        table[kind] = [float(group[f].mean()) for f in present]
    return pd.DataFrame({"feature": present, **table})


def best_seeds(rows: pd.DataFrame) -> dict[str, int]:
    test = rows[(rows["role"] == "test") & (rows["status"] == "ok")]
    means = test.groupby(["kind", "seed"])["gamma"].mean().reset_index()
    return {k: int(g.sort_values("gamma").iloc[-1]["seed"]) for k, g in means.groupby("kind")}


def traces_figure(rows: pd.DataFrame, out: Path) -> Path | None:
    best = best_seeds(rows)
    test = rows[rows["role"] == "test"]
    sweeps = sorted(test["sweep"].unique())
    if not sweeps or not best:
        return None
    kinds = [k for k in COLORS if k in best]
    fig, axes = plt.subplots(len(sweeps) * len(kinds) + 1, 1, figsize=(11, 1.8 * (len(sweeps) * len(kinds) + 2)),
                             squeeze=False)
    ax_i = 0
    for sweep in sweeps:
        for kind in kinds:
            ax = axes[ax_i, 0]
            ax_i += 1
            r = test[(test["sweep"] == sweep) & (test["kind"] == kind) & (test["seed"] == best[kind])]
            if r.empty:
                continue
            r = r.iloc[0]
            ax.plot(r["t"], r["v_recorded"], color="k", lw=0.5, label="recorded")
            ax.plot(r["t"], r["v_model"], color=COLORS[kind], lw=0.5, label=kind)
            ax.set_ylabel("mV")
            ax.set_title(f"sweep {sweep}, {kind} (seed {best[kind]}): Gamma {r['gamma']:.2f}, "
                         f"{int(r['n_spikes'])} spikes vs {int(r['n_spikes_recorded'])}", fontsize=8)
            ax.legend(fontsize=6, loc="upper right")
    ax = axes[-1, 0]
    ok = rows[rows["status"] == "ok"]
    rec = ok.drop_duplicates("sweep").sort_values("step_amplitude_nA")
    ax.plot(rec["step_amplitude_nA"], rec["n_spikes_recorded"], "ko-", label="recorded")
    for kind in kinds:
        g = ok[ok["kind"] == kind].groupby("step_amplitude_nA")["n_spikes"].agg(["mean", "std"]).reset_index()
        ax.errorbar(g["step_amplitude_nA"], g["mean"], yerr=g["std"].fillna(0), color=COLORS[kind], marker="s",
                    label=kind, capsize=2)
    ax.set_xlabel("step amplitude (nA)")
    ax.set_ylabel("spikes in the sweep")
    ax.set_title("f-I curve (train and held-out sweeps)", fontsize=8)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, out)


def gate_figure(rows: pd.DataFrame, out: Path) -> Path | None:
    """The hybrid gate's learned n beside the expert kind's fitted n (as in Fig. 3)."""
    best = best_seeds(rows)
    if "hybrid_gate" not in best:
        return None
    pick = rows[(rows["kind"] == "hybrid_gate") & (rows["seed"] == best["hybrid_gate"])].iloc[0]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    v = np.asarray(pick["curve_v"])
    a.plot(v, pick["gate_inf"], color=COLORS["hybrid_gate"], label="hybrid gate: learned n")
    b.semilogy(v, pick["gate_tau"], color=COLORS["hybrid_gate"], label="learned")
    a.plot(v, pick["expert_inf"], color="0.6", ls="--", label="its expert n (same V_T)")
    b.semilogy(v, pick["expert_tau"], color="0.6", ls="--", label="its expert n")
    if "expert" in best:
        e = rows[(rows["kind"] == "expert") & (rows["seed"] == best["expert"])].iloc[0]
        a.plot(v, e["gate_inf"], color=COLORS["expert"], label="expert kind's fitted n")
        b.semilogy(v, e["gate_tau"], color=COLORS["expert"], label="expert kind")
    a.set_xlabel("V (mV)")
    a.set_ylabel("n_inf")
    b.set_xlabel("V (mV)")
    b.set_ylabel("tau_n (ms)")
    a.legend(fontsize=6)
    b.legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, out)


def render(rows: pd.DataFrame, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [p for p in (traces_figure(rows, out_dir / "recording_traces.png"),
                           gate_figure(rows, out_dir / "recording_gate.png")) if p is not None]
    tables = {"recording_scores": score_table(rows), "recording_counts": count_table(rows),
              "recording_features": feature_table(rows)}
    return written + write_tables(tables, out_dir, "recording_tables.md")
