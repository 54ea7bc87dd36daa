"""Zoo-fit tables and Fig. 2, from the stored result rows alone."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis.output import save_figure, write_tables  # noqa: E402
from channelzoo.grid import ICG_GRID_MV  # noqa: E402

FIT_THRESHOLD = 0.05  # ICG's err1 (RMSE / std) below which a curve counts as fitted
GATE = ["channel_id", "gate", "seed"]
COLORS = {"node": "tab:green", "omni": "#a23bb5"}


def with_omni(rows: pd.DataFrame) -> pd.DataFrame:
    """Add ``omni`` rows: per gate and seed, the best ICG supermodel by err1_inf + err1_tau (ICG's choice)."""
    sm = rows[rows["model"].str.fullmatch(r"sm\d") & (rows["status"] == "ok")].copy()
    if sm.empty:
        return rows
    sm["_rel"] = sm["err1_inf"] + sm["err1_tau"]
    best = sm.loc[sm.groupby(GATE)["_rel"].idxmin()].drop(columns="_rel")
    best = best.assign(omni_of=best["model"], model="omni")
    return pd.concat([rows, best], ignore_index=True)


def fitted(rows: pd.DataFrame, threshold: float = FIT_THRESHOLD) -> pd.Series:
    return (rows["status"] == "ok") & (rows["err1_inf"] < threshold) & (rows["err1_tau"] < threshold)


def fit_table(rows: pd.DataFrame, threshold: float = FIT_THRESHOLD) -> pd.DataFrame:
    """Per class and model: gates, fraction fitted (x_inf, tau, both), median err1; over all seeds."""
    rows = with_omni(rows[rows["status"] != "failed"]).assign(
        fit_inf=lambda r: r["err1_inf"] < threshold, fit_tau=lambda r: r["err1_tau"] < threshold)
    rows["fit_both"] = fitted(rows, threshold)
    rows = pd.concat([rows, rows.assign(**{"class": "all"})], ignore_index=True)
    return (rows.groupby(["class", "model"])
            .agg(gates=("gate", "size"), frac_fit_inf=("fit_inf", "mean"), frac_fit_tau=("fit_tau", "mean"),
                 frac_fit=("fit_both", "mean"), diverged=("status", lambda s: int((s == "diverged").sum())),
                 median_err1_inf=("err1_inf", "median"), median_err1_tau=("err1_tau", "median"))
            .reset_index())


def head_to_head(rows: pd.DataFrame, a: str = "node", b: str = "omni", threshold: float = FIT_THRESHOLD
                 ) -> pd.DataFrame:
    """Per class: gates fitted by a but not b, by b but not a, and a's net gain (the paper's '183 more')."""
    rows = with_omni(rows)
    wide = rows.assign(ok=fitted(rows, threshold)).pivot_table(index=[*GATE, "class"], columns="model",
                                                               values="ok", aggfunc="first")
    if a not in wide or b not in wide:
        return pd.DataFrame()
    wide = wide[[a, b]].dropna().astype(bool).reset_index()
    wide = pd.concat([wide, wide.assign(**{"class": "all"})], ignore_index=True)
    out = wide.groupby("class").apply(lambda g: pd.Series({
        "gates": len(g), f"{a}_fits": int(g[a].sum()), f"{b}_fits": int(g[b].sum()),
        f"only_{a}": int((g[a] & ~g[b]).sum()), f"only_{b}": int((g[b] & ~g[a]).sum())}), include_groups=False)
    out[f"{a}_minus_{b}"] = out[f"{a}_fits"] - out[f"{b}_fits"]
    return out.reset_index()


def restarts_table(rows: pd.DataFrame, threshold: float = FIT_THRESHOLD) -> pd.DataFrame:
    """'Easier to train', measured: per class and model, the fraction of seeds (restarts) that fit,
    and the median steps they needed."""
    rows = rows[rows["status"] != "failed"].assign(ok=lambda r: fitted(r, threshold))
    return (rows.groupby(["class", "model"])
            .agg(runs=("ok", "size"), frac_restarts_fit=("ok", "mean"),
                 median_steps_to_fit=("steps_to_fit", lambda s: float(np.median(s[s >= 0])) if (s >= 0).any()
                                      else float("nan")))
            .reset_index())


def _examples(rows: pd.DataFrame) -> list[pd.Series]:
    """Two gates to show: where NODE gains most over omni, and a typical one (median NODE error)."""
    wide = rows[rows["model"].isin(["node", "omni"]) & (rows["seed"] == rows["seed"].min())]
    node = wide[wide["model"] == "node"].set_index(["channel_id", "gate"])
    omni = wide[wide["model"] == "omni"].set_index(["channel_id", "gate"])
    both = node.index.intersection(omni.index)
    if len(both) == 0:
        return [node.iloc[0].rename(node.index[0])] if len(node) else []  # named (channel, gate) like the rest
    gain = (omni.loc[both, "err1_inf"] + omni.loc[both, "err1_tau"]) - (node.loc[both, "err1_inf"]
                                                                         + node.loc[both, "err1_tau"])
    typical = (node.loc[both, "err1_inf"] + node.loc[both, "err1_tau"]).sort_values()
    picks = [typical.index[len(typical) // 2], gain.idxmax()]
    return [pd.concat([node.loc[i], omni.loc[i].add_prefix("omni_")]).rename(i) for i in picks]


def figure(rows: pd.DataFrame, out: str | Path) -> Path:
    """Fig. 2: per-gate MSE histograms (node vs omni, log inset) and two example channels."""
    rows = with_omni(rows[rows["status"] == "ok"])
    sns.set_theme(style="ticks", context="paper")
    fig = plt.figure(figsize=(8.5, 8.0))
    grid = fig.add_gridspec(3, 2, height_ratios=[1.0, 0.8, 0.8], hspace=0.5, wspace=0.3)
    for col, (metric, title) in enumerate((("nmse_tau", r"$\tau$"), ("nmse_inf", r"$x_\infty$"))):
        ax = fig.add_subplot(grid[0, col])
        data = rows[rows["model"].isin(["node", "omni"])]
        upper = float(np.nanquantile(data[metric], 0.95)) if len(data) else 1.0
        bins = np.linspace(0.0, upper, 25)
        logs = []
        for model in ("omni", "node"):
            values = data.loc[data["model"] == model, metric].to_numpy()
            ax.hist(np.clip(values, 0, upper), bins=bins, alpha=0.5, color=COLORS[model], label=model)
            logs.append((model, np.log10(np.maximum(values, 1e-16))))
        ax.set(title=title, xlabel="MSE (normalised)", ylabel="Frequency" if col == 0 else None)
        inset = ax.inset_axes([0.58, 0.4, 0.4, 0.45])
        for model, values in logs:
            inset.hist(values, bins=30, alpha=0.5, color=COLORS[model])
        inset.set_title("log10", fontsize=7)
        inset.tick_params(labelsize=6)
        if col == 0:
            ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(0.15, 1.0))
        sns.despine(ax=ax)
    grid_v = np.asarray(ICG_GRID_MV)
    for col, ex in enumerate(_examples(rows)):
        for row, (target, fit, label) in enumerate((("target_tau", "fit_tau", r"$\tau$ (ms)"),
                                                     ("target_inf", "fit_inf", r"$x_\infty$"))):
            ax = fig.add_subplot(grid[1 + row, col])
            ax.plot(grid_v, ex[target], "o", color="k", ms=3, label="data")
            ax.plot(grid_v, ex[fit], color=COLORS["node"], label="node")
            if "omni_fit_inf" in ex:
                ax.plot(grid_v, ex[f"omni_{fit}"], color=COLORS["omni"], label=f"omni ({ex['omni_omni_of']})")
            ax.set_ylabel(label)
            if row == 0:
                ax.set_title(f"{ex.name[0]} gate {ex.name[1]}", fontsize=8)
                if col == 1:
                    ax.legend(frameon=False, fontsize=7)
            else:
                ax.set_xlabel("Voltage (mV)")
            sns.despine(ax=ax)
    return save_figure(fig, out)


def render(rows: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Fig. 2 and the fit tables (Markdown and CSV)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [figure(rows, out_dir / "fig2_zoo_fit.png")]
    tables = {"zoo_fit_by_class": fit_table(rows), "zoo_fit_node_vs_omni": head_to_head(rows),
              "zoo_fit_restarts": restarts_table(rows)}
    if (rows["model"] == "icg_omni").any():  # ICG's own published fits: the paper's "183 more fits than omni"
        tables["zoo_fit_node_vs_icg_omni"] = head_to_head(rows, b="icg_omni")
    return [*written, *write_tables(tables, out_dir, "zoo_fit_tables.md")]
