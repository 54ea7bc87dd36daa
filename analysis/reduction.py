"""Reduction tables and Fig. 4, from the stored result rows alone."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis.output import save_figure, write_tables  # noqa: E402

RECORD_EVERY = 4  # the experiment stores traces every 4th step
COLORS = {"true": "black", "init": "grey", "hybrid": "crimson", "soma_area": "navy", "soma_area_c": "darkgreen",
          "soma": "grey", "multi": "steelblue", "neuron": "lightsteelblue"}
LABELS = {"soma": "soma", "soma_area": "soma (area)", "soma_area_c": "soma (area + c)"}
HELDOUT = ("rmse_long", "rmse_amplitudes", "rmse_amplitudes_max", "rmse_noise")  # per amplitude: in the Parquet


def _ok(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["status"] != "failed"] if "status" in rows else rows


def _t(trace: np.ndarray, dt: float) -> np.ndarray:
    return np.arange(len(trace)) * dt * RECORD_EVERY


def _costs(rows: pd.DataFrame) -> pd.DataFrame:
    """The cost job's rows (every model timed side by side in one process)."""
    return rows[rows["kind"] == "cost"] if "kind" in rows else rows.iloc[:0]


def cost_of(rows: pd.DataFrame, model: str, simulator: str = "ours", n_latents: int | None = None,
            width: int | None = None, column: str = "cost_1s_s") -> float:
    c = _costs(rows)
    if c.empty:
        return float("nan")
    c = c[(c["model"] == model) & (c["simulator"] == simulator)]
    if n_latents is not None:
        c = c[(c["n_latents"] == n_latents) & (c["width"] == width)]
    return float(c[column].iloc[0]) if not c.empty else float("nan")


def hybrid_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (N_z, width): runs, fraction converged, RMSE on the training trace and held out (mean, sd, best)."""
    h = _ok(rows)
    h = h[h["kind"] == "hybrid"]
    if h.empty:
        return pd.DataFrame()
    rmse_cols = [c for c in HELDOUT if c in h]
    agg = {"runs": ("seed", "size"), "frac_converged": ("converged", "mean"),
           "rmse_train_mean": ("rmse_train", "mean"), "rmse_train_sd": ("rmse_train", "std"),
           "rmse_train_best": ("rmse_train", "min"), "rmse_heldout_mean": ("rmse_heldout", "mean"),
           "rmse_heldout_best": ("rmse_heldout", "min"), "train_time_s": ("train_time_s", "mean")}
    agg.update({f"{c}_median": (c, "median") for c in rmse_cols})
    agg.update({f"{c}_best": (c, "min") for c in rmse_cols})
    table = h.groupby(["n_latents", "width"]).agg(**agg).reset_index()
    table["cost_1s_s"] = [cost_of(rows, "hybrid", "ours", n, w) for n, w in zip(table["n_latents"], table["width"],
                                                                               strict=True)]
    return table


def model_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per model kind: the best hybrid (by held-out RMSE among converged runs) next to the baselines."""
    rows = _ok(rows)
    out = []
    best = _best_hybrid(rows)
    if best is not None:
        out.append(best.to_dict() | {"model": "hybrid (best)", "cost_1s_s": cost_of(
            rows, "hybrid", "ours", int(best["n_latents"]), int(best["width"]))})
    for kind in ("soma", "soma_area", "soma_area_c"):
        b = rows[rows["kind"] == kind]
        if not b.empty:
            out.append(b.iloc[0].to_dict() | {"model": LABELS[kind], "cost_1s_s": cost_of(rows, "soma")})
    if not out:
        return pd.DataFrame()
    cols = ["model", "n_latents", "width", "seed", "rmse_train",
            *HELDOUT, "rmse_heldout", "train_time_s",
            "cost_1s_s"]
    table = pd.DataFrame(out)
    return table[[c for c in cols if c in table]]


def cost_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Seconds of compute per simulated second, one trace and per trace in a batch, and ratios to the full cell."""
    c = _costs(_ok(rows))
    if c.empty:
        return pd.DataFrame()
    names = []
    for _, r in c.iterrows():
        if r["model"] == "hybrid":
            names.append(f"hybrid N_z={int(r['n_latents'])} width={int(r['width'])}")
        else:
            names.append(f"{r['model']} ({r['simulator']})")
    table = pd.DataFrame({"model": names, "cost_1s_s": c["cost_1s_s"].to_numpy(),
                          "batch_per_trace_s": c["cost_1s_batch_per_trace_s"].to_numpy(),
                          "batch": c["cost_batch"].to_numpy()})
    if "backend" in c:  # our compiled kernels, or the torch path where there are none
        table["backend"] = c["backend"].fillna("").to_numpy()
    for sim in ("ours", "neuron"):
        one = cost_of(rows, "multicompartment", sim)
        many = cost_of(rows, "multicompartment", sim, column="cost_1s_batch_per_trace_s")
        if np.isfinite(one):
            table[f"x_cheaper_than_multi_{sim}"] = one / table["cost_1s_s"]
            table[f"x_cheaper_batched_than_multi_{sim}"] = many / table["batch_per_trace_s"]
    return table


def _best_hybrid(rows: pd.DataFrame, min_latents: int = 1) -> pd.Series | None:
    h = _ok(rows)
    h = h[(h["kind"] == "hybrid") & (h["n_latents"] >= min_latents) & h["rmse_train"].notna()]
    if h.empty:
        return None
    pool = h[h["converged"]] if h["converged"].any() else h
    return pool.loc[pool["rmse_heldout"].idxmin()]


def amplitude_errors(row: pd.Series, amplitude: float) -> list[tuple[list[float], list[float]]]:
    """One model's (amplitudes, RMSE) on its trained steps, then on its held-out ones, sorted by amplitude.

    ``amplitude`` is the paper's step (its RMSE is ``rmse_train``); the others are ``rmse_train_<nA>``
    and ``rmse_amp_<nA>`` columns.
    """
    found: list[dict[float, float]] = [{amplitude: float(row["rmse_train"])}, {}]
    for into, prefix in zip(found, ("rmse_train_", "rmse_amp_"), strict=True):
        for col in row.index:
            suffix = str(col)[len(prefix):]
            if str(col).startswith(prefix) and not suffix.startswith("noise") and pd.notna(row[col]):
                into[float(suffix)] = float(row[col])  # (rmse_train_noise_<seed>: not a step)
    return [(sorted(d), [d[a] for a in sorted(d)]) for d in found]


def figure(rows: pd.DataFrame, out: str | Path) -> Path:
    """Fig. 4: morphology, V / axial current / latents, latent phase plane, baselines, runtime, extrapolation."""
    rows = _ok(rows)
    sns.set_theme(style="ticks", context="paper")
    fig = plt.figure(figsize=(10, 8))
    grid = fig.add_gridspec(5, 4, height_ratios=[1, 0.7, 0.7, 1.1, 0.9], hspace=0.6, wspace=0.45)
    multi = rows[(rows["kind"] == "multicompartment") & (rows["simulator"] == "ours")]
    ref = multi.iloc[0] if not multi.empty else None
    best = _best_hybrid(rows)
    dt = float(rows["dt"].dropna().iloc[0]) if "dt" in rows else 0.025

    ax = fig.add_subplot(grid[0:3, 0])  # a: morphology
    if ref is not None:
        xyz = np.asarray(ref["node_xyz"]).reshape(-1, 3)
        parent = np.asarray(ref["node_parent"])
        for i, p in enumerate(parent):
            if p >= 0:
                ax.plot(xyz[[p, i], 0], xyz[[p, i], 1], color="black", lw=0.8)
        soma = [i for i, r in enumerate(ref["node_region"]) if r == "soma"]
        ax.scatter(xyz[soma, 0], xyz[soma, 1], s=25, color=COLORS["hybrid"], zorder=3)
        ax.set_title(f"{int(ref['n_compartments'])} compartments", fontsize=8, y=-0.05)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.text(-0.1, 1.02, "a", transform=ax.transAxes, fontweight="bold")

    axes_b = [fig.add_subplot(grid[r, 1:]) for r in range(3)]
    if ref is not None:
        v_true = np.asarray(ref["v_train"])
        t = _t(v_true, dt)
        axes_b[0].plot(t, v_true, color=COLORS["true"], label="true")
        axes_b[1].plot(t[: len(ref["i_axial"])], ref["i_axial"], color=COLORS["true"])
    if best is not None:
        axes_b[0].plot(_t(best["v_init_train"], dt), best["v_init_train"], color=COLORS["init"], label="init")
        axes_b[0].plot(_t(best["v_train"], dt), best["v_train"], "--", color=COLORS["hybrid"],
                       label=f"hybrid (N_z={int(best['n_latents'])})")
        axes_b[1].plot(_t(best["i_axial"], dt), best["i_axial"], "--", color=COLORS["hybrid"])
        z = np.asarray(best["z_train"]).reshape(int(best["n_latents"]), -1)
        for k, zk in enumerate(z):
            axes_b[2].plot(_t(zk, dt), zk, color=plt.cm.Reds(0.4 + 0.6 * k / max(1, len(z) - 1)))
    axes_b[0].set_ylabel("V (mV)")
    axes_b[0].legend(frameon=False, fontsize=7, ncol=3, loc="upper right")
    axes_b[1].set_ylabel("I_axial (nA)")
    axes_b[2].set_ylabel("latents")
    axes_b[2].set_xlabel("time (ms)")
    axes_b[0].text(-0.08, 1.02, "b", transform=axes_b[0].transAxes, fontweight="bold")
    for a in axes_b:
        sns.despine(ax=a)

    ax = fig.add_subplot(grid[3, 0])  # c: latent phase plane
    two = _best_hybrid(rows, min_latents=2)
    if two is not None:
        z = np.asarray(two["z_train"]).reshape(int(two["n_latents"]), -1)
        ax.plot(z[0], z[1], color=COLORS["hybrid"], lw=0.8)
        ax.set_title(f"N_z={int(two['n_latents'])}", fontsize=8)
    ax.set(xlabel="z0", ylabel="z1", xticks=[], yticks=[])
    ax.text(-0.2, 1.02, "c", transform=ax.transAxes, fontweight="bold")
    sns.despine(ax=ax)

    ax = fig.add_subplot(grid[3, 1:])  # d: baselines
    inset = ax.inset_axes([0.03, 0.5, 0.28, 0.45])
    curves = []
    if ref is not None:
        curves.append(("true", np.asarray(ref["v_train"]), "-"))
    if best is not None:
        curves.append(("hybrid", np.asarray(best["v_train"]), "--"))
    for kind in ("soma_area", "soma_area_c"):
        b = rows[rows["kind"] == kind]
        if not b.empty:
            curves.append((kind, np.asarray(b.iloc[0]["v_train"]), "--"))
    for name, v, style in curves:
        label = LABELS.get(name, name)
        if name in ("soma_area", "soma_area_c"):
            rm = float(rows[rows["kind"] == name]["rmse_train"].iloc[0])
            label += f" ({rm:.1f} mV)"
        elif name == "hybrid" and best is not None:
            label += f" ({best['rmse_train']:.1f} mV)"
        ax.plot(_t(v, dt), v, style, color=COLORS[name], label=label, lw=1)
        inset.plot(_t(v, dt), v, style, color=COLORS[name], lw=1)
    if ref is not None:
        v_true = np.asarray(ref["v_train"])
        first = int(np.argmax(v_true > 0)) if (v_true > 0).any() else len(v_true) // 2
        t0 = first * dt * RECORD_EVERY
        inset.set_xlim(t0 - 1, t0 + 6)
        inset.set_ylim(-80, -30)
    inset.set_xticks([])
    inset.set_yticks([])
    ax.set(ylabel="V (mV)", xlabel="time (ms)")
    ax.legend(frameon=False, fontsize=7, loc="upper right")
    ax.text(-0.08, 1.02, "d", transform=ax.transAxes, fontweight="bold")
    sns.despine(ax=ax)

    ax = fig.add_subplot(grid[4, 0])  # e: runtime per simulated second, from the side-by-side cost job
    bars = [("soma", cost_of(rows, "soma"), COLORS["soma"])]
    if best is not None:
        bars.append(("hybrid", cost_of(rows, "hybrid", "ours", int(best["n_latents"]), int(best["width"])),
                     COLORS["hybrid"]))
    bars += [("multi", cost_of(rows, "multicompartment", "ours"), COLORS["multi"]),
             ("NEURON", cost_of(rows, "multicompartment", "neuron"), COLORS["neuron"])]
    bars = [b for b in bars if np.isfinite(b[1])]
    if bars:
        ax.bar([b[0] for b in bars], [b[1] for b in bars], color=[b[2] for b in bars])
        ax.set_yscale("log")
    ax.set_ylabel("s per s simulated")
    ax.tick_params(axis="x", labelsize=7, rotation=30)
    ax.text(-0.2, 1.02, "e", transform=ax.transAxes, fontweight="bold")
    sns.despine(ax=ax)

    ax = fig.add_subplot(grid[4, 3])  # g: RMSE against the step's amplitude, trained and held out
    if best is not None:
        amplitude = float(rows["amplitude"].dropna().iloc[0]) if "amplitude" in rows else 0.65
        for (amps, errs), style, label in zip(amplitude_errors(best, amplitude), ("o", "s"), ("trained", "held out"),
                                              strict=True):
            if amps:
                ax.plot(amps, errs, style, ms=3, mfc="none" if label == "held out" else COLORS["hybrid"],
                        color=COLORS["hybrid"], label=label)
        ax.legend(frameon=False, fontsize=6)
    ax.set(xlabel="step (nA)", ylabel="RMSE (mV)")
    ax.text(-0.3, 1.02, "g", transform=ax.transAxes, fontweight="bold")
    sns.despine(ax=ax)

    ax = fig.add_subplot(grid[4, 1:3])  # f: extrapolation
    if ref is not None:
        ax.plot(_t(ref["v_long"], dt), ref["v_long"], color=COLORS["true"], label="true")
    if best is not None:
        ax.plot(_t(best["v_long"], dt), best["v_long"], "--", color=COLORS["hybrid"],
                label=f"hybrid ({best['rmse_long']:.1f} mV)")
    if "t_stop" in rows and rows["t_stop"].notna().any():
        stop = 50.0 if "stim_stop" not in rows else float(rows["stim_stop"].dropna().iloc[0])
        ax.axvline(stop, color="black", ls=":", label="training cutoff")
    ax.set(xlabel="time (ms)", ylabel="V (mV)")
    ax.legend(frameon=False, fontsize=7, loc="upper right")
    ax.text(-0.08, 1.02, "f", transform=ax.transAxes, fontweight="bold")
    sns.despine(ax=ax)

    return save_figure(fig, out)


def render(rows: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Fig. 4 and the reduction tables (Markdown and CSV)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [figure(rows, out_dir / "fig4_reduction.png")]
    tables = {"reduction_hybrids": hybrid_table(rows), "reduction_models": model_table(rows),
              "reduction_cost": cost_table(rows)}
    return [*written, *write_tables(tables, out_dir, "reduction_tables.md")]
