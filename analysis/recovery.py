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
from suite.experiments.recovery import PAPER_TABLE  # noqa: E402

ROW = ["target", "method", "sigma_v", "sigma_theta"]
COLORS = {"init": "0.7", "true": "k", "learned": "crimson"}


def noise_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per target, method and (sigma_V, sigma_theta): the paper's columns, ours, and theirs beside them."""
    rows = rows[rows["status"] != "failed"]
    out = (rows.groupby(ROW)
           .agg(runs=("rmse", "size"), rmse_mean=("rmse", "mean"), rmse_sd=("rmse", "std"), best=("rmse", "min"),
                frac_converged=("converged", "mean"), diverged=("status", lambda s: int((s == "diverged").sum())),
                inf_rmse_median=("inf_rmse", "median"), tau_rel_err_median=("tau_rel_err", "median"),
                train_time_s=("train_time_s", "median"), batch_train_time_s=("batch_train_time_s", "max"))
           .reset_index())
    out = out.merge(PAPER_TABLE, on=["sigma_v", "sigma_theta"], how="left")
    paper_target = out["target"] == "hh_paper/hh_k/n"
    for col in ("paper_rmse_mean", "paper_rmse_sd", "paper_best", "paper_frac_converged"):
        out.loc[~paper_target, col] = np.nan
    return out


def paper_format(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's table layout: RMSE as mean +- sd, best, fraction converged; theirs beside ours."""
    def pm(m: float, s: float) -> str:
        return f"{m:.2f} +- {s:.2f}" if np.isfinite(m) else ""

    return pd.DataFrame({
        "target": table["target"], "method": table["method"],
        "sigma_V": table["sigma_v"], "sigma_theta": table["sigma_theta"], "runs": table["runs"],
        "RMSE mV (mean +- sd)": [pm(m, s) for m, s in zip(table["rmse_mean"], table["rmse_sd"].fillna(0), strict=True)],
        "best": table["best"].round(2), "frac converged": table["frac_converged"].round(2),
        "paper RMSE": [pm(m, s) for m, s in zip(table["paper_rmse_mean"], table["paper_rmse_sd"], strict=True)],
        "paper best": table["paper_best"], "paper frac": table["paper_frac_converged"],
    })


def ood_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Out of distribution, per row: RMSE (median) and coincidence factor (mean) for each protocol."""
    rows = rows[rows["status"] == "ok"]
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
    ok = rows[(rows["status"] == "ok") & (rows["sigma_v"] == 0) & (rows["sigma_theta"] == 0)]
    records = []
    for _, r in ok.iterrows():
        for a, e, c in zip(r["amp_values"], r["amp_rmse"], r["amp_coinc"], strict=True):
            records.append({"target": r["target"], "method": r["method"], "amplitude": a, "rmse": e, "coinc": c})
    if not records:
        return pd.DataFrame()
    return (pd.DataFrame(records).groupby(["target", "method", "amplitude"])
            .agg(rmse_median=("rmse", "median"), coinc_mean=("coinc", "mean")).reset_index())


def _example(rows: pd.DataFrame, target: str) -> pd.Series | None:
    sel = rows[(rows["target"] == target) & (rows["sigma_v"] == 0) & (rows["sigma_theta"] == 0)
               & rows["t"].map(len).gt(0)]
    if sel.empty:
        return None
    ours = sel[sel["method"] == "ours"]
    return (ours if len(ours) else sel).sort_values("seed").iloc[0]


def figure(rows: pd.DataFrame, target: str, out: str | Path) -> Path | None:
    """Fig. 3 for one target: traces, phase plane, learned vs true curves, extrapolation, amplitude sweep."""
    ex = _example(rows, target)
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
    ax.set_title(f"{target} (seed {ex['seed']}, RMSE {ex['rmse']:.2f} mV)", fontsize=8)
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
            a.set_title(f"{amp:g} uA/cm2", fontsize=6, pad=1)
            a.axis("off")
    sns.despine(fig)
    return save_figure(fig, out)


def render(rows: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Fig. 3 per target and the noise / misspecification, out-of-distribution and timing tables."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for target in sorted(rows["target"].dropna().unique()):
        slug = target.replace("/", "_")
        path = figure(rows, target, out_dir / f"fig3_recovery_{slug}.png")
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
