"""Recovery tables and Fig. 3, from the stored result rows alone."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis.markdown import markdown_table  # noqa: E402
from analysis.output import save_figure  # noqa: E402

ROW = ["target", "stimulus", "method", "sigma_v", "sigma_theta"]
PAPER_DENSITY = 15e-6 / (2 * np.pi * 1e-4 * 10e-4)  # uA/cm2: the paper's 15 pA into its 1 um x 10 um cylinder
# The paper's table (K gate n, 20 seeds a row; PAPER.md, experiment 2), set beside ours.
PAPER_TABLE = pd.DataFrame({
    "sigma_v": [0, 0.01, 0.05, 0.10, 0, 0, 0],
    "sigma_theta": [0, 0, 0, 0, 0.01, 0.02, 0.05],
    "paper_rmse_mean": [7.93, 12.00, 8.46, 17.74, 15.29, 14.74, 13.24],
    "paper_rmse_sd": [17.05, 19.81, 16.39, 19.77, 22.62, 21.45, 17.33],
    "paper_best": [0.63, 0.51, 0.38, 0.65, 0.57, 0.46, 1.03],
    "paper_frac_converged": [0.85, 0.75, 0.80, 0.40, 0.70, 0.70, 0.50],
})
COLORS = {"init": "0.7", "true": "k", "learned": "crimson"}


def with_stimulus(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows with a ``stimulus`` label (the training step as stated and as a density), so conditions never mix."""
    rows = rows.copy()
    if "amplitude_density" in rows:
        rows["stimulus"] = [f"{a:g} {u} ({d:.2f} uA/cm2)" for a, u, d in
                            zip(rows["amplitude"], rows["current_unit"], rows["amplitude_density"], strict=True)]
    else:
        rows["stimulus"] = "unrecorded (rows older than current_unit)"
    return rows


def on_paper_trace(table: pd.DataFrame) -> pd.Series:
    """Which rows are the paper's condition: its K gate under its 15 pA step (23.87 uA/cm2)."""
    density = table["stimulus"].str.extract(r"\(([-0-9.e]+) uA/cm2\)")[0].astype(float)
    return (table["target"] == "hh_paper/hh_k/n") & ((density - PAPER_DENSITY).abs() < 0.01)


def noise_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per target, stimulus, method and (sigma_V, sigma_theta): ours, and the paper's beside its own condition."""
    rows = with_stimulus(rows[rows["status"] != "failed"])
    out = (rows.groupby(ROW)
           .agg(runs=("rmse", "size"), rmse_mean=("rmse", "mean"), rmse_sd=("rmse", "std"), best=("rmse", "min"),
                frac_converged=("converged", "mean"), diverged=("status", lambda s: int((s == "diverged").sum())),
                inf_rmse_median=("inf_rmse", "median"), tau_rel_err_median=("tau_rel_err", "median"),
                train_time_s=("train_time_s", "median"), batch_train_time_s=("batch_train_time_s", "max"))
           .reset_index())
    out = out.merge(PAPER_TABLE, on=["sigma_v", "sigma_theta"], how="left")
    paper_condition = on_paper_trace(out)
    for col in ("paper_rmse_mean", "paper_rmse_sd", "paper_best", "paper_frac_converged"):
        out.loc[~paper_condition, col] = np.nan
    return out


def paper_format(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's table layout: RMSE as mean +- sd, best, fraction converged; theirs beside ours."""
    def pm(m: float, s: float) -> str:
        return f"{m:.2f} +- {s:.2f}" if np.isfinite(m) else ""

    return pd.DataFrame({
        "target": table["target"], "stimulus": table["stimulus"], "method": table["method"],
        "sigma_V": table["sigma_v"], "sigma_theta": table["sigma_theta"], "runs": table["runs"],
        "RMSE mV (mean +- sd)": [pm(m, s) for m, s in zip(table["rmse_mean"], table["rmse_sd"].fillna(0), strict=True)],
        "best": table["best"].round(2), "frac converged": table["frac_converged"].round(2),
        "paper RMSE": [pm(m, s) for m, s in zip(table["paper_rmse_mean"], table["paper_rmse_sd"], strict=True)],
        "paper best": table["paper_best"], "paper frac": table["paper_frac_converged"],
    })


def ood_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Out of distribution, per row: RMSE (median) and coincidence factor (mean) for each protocol."""
    rows = with_stimulus(rows[rows["status"] == "ok"])
    cols = {c: c for c in ("rmse_extrap", "coinc_extrap", "rmse_amp_mean", "coinc_amp_mean", "rmse_ou", "coinc_ou")
            if c in rows}
    if not cols:
        return pd.DataFrame()
    agg = {f"{c}_{'median' if c.startswith('rmse') else 'mean'}": (c, "median" if c.startswith("rmse") else "mean")
           for c in cols}
    return rows.groupby(ROW).agg(**agg).reset_index()


def amplitude_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Coincidence factor and RMSE per step amplitude (converged runs of the noise-free row)."""
    if "amp_values" not in rows:
        return pd.DataFrame()
    ok = with_stimulus(rows[(rows["status"] == "ok") & (rows["sigma_v"] == 0) & (rows["sigma_theta"] == 0)])
    records = []
    for _, r in ok.iterrows():
        for a, e, c in zip(r["amp_values"], r["amp_rmse"], r["amp_coinc"], strict=True):
            records.append({"target": r["target"], "stimulus": r["stimulus"], "method": r["method"], "amplitude": a,
                            "rmse": e, "coinc": c})
    if not records:
        return pd.DataFrame()
    return (pd.DataFrame(records).groupby(["target", "stimulus", "method", "amplitude"])
            .agg(rmse_median=("rmse", "median"), coinc_mean=("coinc", "mean")).reset_index())


def _example(rows: pd.DataFrame, target: str, stimulus: str) -> pd.Series | None:
    sel = rows[(rows["target"] == target) & (rows["stimulus"] == stimulus) & (rows["sigma_v"] == 0)
               & (rows["sigma_theta"] == 0) & rows["t"].map(len).gt(0)]
    if sel.empty:
        return None
    ours = sel[sel["method"] == "ours"]
    return (ours if len(ours) else sel).sort_values("seed").iloc[0]


def figure(rows: pd.DataFrame, target: str, stimulus: str, out: str | Path) -> Path | None:
    """Fig. 3 for one target and stimulus: traces, phase plane, learned vs true curves, extrapolation, amplitudes."""
    ex = _example(rows, target, stimulus)
    if ex is None:
        return None
    sns.set_theme(style="ticks", context="paper")
    fig = plt.figure(figsize=(11, 6))
    outer = fig.add_gridspec(2, 3, width_ratios=[1.3, 1.0, 0.55], height_ratios=[1.2, 0.8], hspace=0.4, wspace=0.35)
    t = np.asarray(ex["t"])
    names = list(ex["gate_names"])
    g_true = np.asarray(ex["gates_true"]).reshape(len(names), -1)
    g_learned = np.asarray(ex["gates_learned"]).reshape(len(names), -1)
    learned_row = len(names) - 1  # the neural gate is last in the state
    # a: V and every gate.
    panel = outer[0, 0].subgridspec(1 + len(names), 1, hspace=0.15)
    ax = fig.add_subplot(panel[0])
    ax.plot(t, ex["v_init"], color=COLORS["init"], label="init")
    ax.plot(t, ex["v_true"], color=COLORS["true"], label="true")
    ax.plot(t, ex["v_learned"], "--", color=COLORS["learned"], label="learned")
    ax.set_ylabel("V (mV)")
    ax.legend(frameon=False, ncol=3, fontsize=7, loc="upper right")
    ax.set_title(f"{target}, step {stimulus} (seed {ex['seed']}, RMSE {ex['rmse']:.2f} mV)", fontsize=8)
    ax.tick_params(labelbottom=False)
    for i, name in enumerate(names):
        a = fig.add_subplot(panel[1 + i], sharex=ax)
        a.plot(t, g_true[i], color=COLORS["true"])
        a.plot(t, g_learned[i], "--", color=COLORS["learned"])
        a.set_ylabel(name.split(".")[-1] + ("*" if i == learned_row else ""), fontsize=7)
        a.set_ylim(-0.05, 1.05)
        if i < len(names) - 1:
            a.tick_params(labelbottom=False)
    a.set_xlabel("Time (ms)")
    # b: phase plane of V and the learned gate.
    ax = fig.add_subplot(outer[0, 1])
    ax.plot(ex["v_true"], g_true[learned_row], color=COLORS["true"])
    ax.plot(ex["v_learned"], g_learned[learned_row], "--", color=COLORS["learned"])
    ax.set(xlabel="Voltage (mV)", ylabel=f"{names[learned_row].split('.')[-1]} gate")
    # c: learned vs true x_inf and tau.
    c = outer[1, 0].subgridspec(1, 2, wspace=0.45)
    for j, (key, label) in enumerate((("inf", "Steady state"), ("tau", "Time constant (ms)"))):
        a = fig.add_subplot(c[j])
        a.plot(ex["curve_v"], ex[f"true_{key}"], color=COLORS["true"])
        a.plot(ex["curve_v"], ex[f"learned_{key}"], "--", color=COLORS["learned"])
        a.axvspan(ex["v_visited_lo"], ex["v_visited_hi"], color="0.92", zorder=0)
        a.set(xlabel="Voltage (mV)", ylabel=label)
    # d: extrapolation past the training cutoff.
    if "v_extrap_true" in ex and len(ex["v_extrap_true"]):
        a = fig.add_subplot(outer[1, 1])
        te = np.arange(len(ex["v_extrap_true"])) * (t[1] - t[0])
        a.plot(te, ex["v_extrap_true"], color=COLORS["true"])
        a.plot(te, ex["v_extrap_learned"], "--", color=COLORS["learned"])
        a.axvline(t[-1], color="k", ls=":", label="training cutoff")
        a.legend(frameon=False, fontsize=7)
        a.set(xlabel="Time (ms)", ylabel="V (mV)")
    # e: amplitude sweep.
    if "v_amp_true" in ex and len(ex["v_amp_true"]):
        amps = np.asarray(ex["amp_values"])
        vt = np.asarray(ex["v_amp_true"]).reshape(len(amps), -1)
        vl = np.asarray(ex["v_amp_learned"]).reshape(len(amps), -1)
        e = outer[:, 2].subgridspec(len(amps), 1, hspace=0.3)
        for j, amp in enumerate(amps):
            a = fig.add_subplot(e[j])
            a.plot(t, vt[j], color=COLORS["true"], lw=0.8)
            a.plot(t, vl[j], "--", color=COLORS["learned"], lw=0.8)
            a.set_title(f"{amp:g} {ex.get('current_unit', 'uA/cm2')}", fontsize=6, pad=1)
            a.axis("off")
    sns.despine(fig)
    return save_figure(fig, out)


def render(rows: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Fig. 3 per target and the noise / misspecification, out-of-distribution and timing tables."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    rows = with_stimulus(rows)
    for target in sorted(rows["target"].dropna().unique()):
        stimuli = sorted(rows.loc[rows["target"] == target, "stimulus"].unique())
        for stimulus in stimuli:
            slug = target.replace("/", "_")
            if len(stimuli) > 1:  # several conditions of one target: one figure each, named by its density
                slug += "_" + stimulus.split("(")[-1].split()[0] + "uAcm2"
            path = figure(rows, target, stimulus, out_dir / f"fig3_recovery_{slug}.png")
            if path is not None:
                written.append(path)
    table = noise_table(rows)
    tables = {"recovery_noise": table, "recovery_ood": ood_table(rows), "recovery_amplitudes": amplitude_table(rows)}
    md = ["## recovery_noise (the paper's table; ours beside theirs)\n", markdown_table(paper_format(table)), ""]
    for name, frame in tables.items():
        path = out_dir / f"{name}.csv"
        frame.to_csv(path, index=False)
        written.append(path)
        if name != "recovery_noise" and not frame.empty:
            md += [f"## {name}\n", markdown_table(frame), ""]
    summary = out_dir / "recovery_tables.md"
    summary.write_text("\n".join(md))
    return [*written, summary]
