"""`hybridbench model list|show|simulate|export`: trained models as files, reused and taken to NEURON."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from channelzoo.errors import InputError
from suite.models.catalog import load_checked, model_table, resolve
from suite.models.files import load_model

# What `model list` prints without --wide: identity, the run's settings and its headline metric.
BRIEF_COLUMNS = ("model", "kind", "plugs_into", "method", "sigma_v", "sigma_theta", "seed", "n_latents", "width",
                 "status", "metric_rmse", "metric_rmse_train", "metric_rmse_heldout", "metric_frac_ok",
                 "metric_gates", "size_bytes")


def register(commands: argparse._SubParsersAction) -> None:
    model = commands.add_parser("model", help="list, show, simulate and export trained models")
    sub = model.add_subparsers(dest="model_command", required=True)

    ls = sub.add_parser("list", help="stored models with their metrics and provenance")
    ls.add_argument("--experiment", help="only this experiment's models")
    ls.add_argument("--limit", type=int, default=50, help="rows to print (0: all)")
    ls.add_argument("--wide", action="store_true", help="every column (provenance, training settings, metrics)")
    ls.set_defaults(handler=_list)

    show = sub.add_parser("show", help="one model's spec (checked against its weights)")
    show.add_argument("model", help="a model file (as `model list` shows it, or any path)")
    show.set_defaults(handler=_show)

    sim = sub.add_parser("simulate", help="a saved model and its reference model under a new stimulus")
    sim.add_argument("model")
    sim.add_argument("--stimulus", required=True,
                     help="step:AMP,START,STOP | ou:MEAN,SIGMA,TAU,SEED[,START] | FILE.csv (columns t, i); "
                          "currents in the unit the model was trained in")
    sim.add_argument("--t-stop", type=float, required=True, help="ms")
    sim.add_argument("--out", required=True, help="Parquet file: t, i_stim (uA/cm2), v_model, v_reference (mV)")
    sim.add_argument("--plot", help="PNG of both traces")
    sim.set_defaults(handler=_simulate)

    export = sub.add_parser("export", help="a model as a NEURON mechanism (.mod)")
    export.add_argument("model")
    export.add_argument("--to", choices=("nmodl",), default="nmodl")
    export.add_argument("--out", required=True, help="folder for the .mod file(s)")
    export.set_defaults(handler=_export)


def _list(args: argparse.Namespace) -> int:
    table = model_table(args.results)
    if args.experiment:
        table = table[table["experiment"] == args.experiment]
    if not args.wide:
        table = table[[c for c in BRIEF_COLUMNS if c in table]]
    shown = table if args.limit == 0 else table.head(args.limit)
    print(shown.to_string(index=False) if len(shown) else "no models stored")
    if len(shown) < len(table):
        print(f"... {len(table) - len(shown)} more (--limit 0 lists all)")
    return 0


def _show(args: argparse.Namespace) -> int:
    saved = load_checked(resolve(args.model, args.results))
    print(f"{saved.path}: {saved.kind}, {sum(t.numel() for t in saved.tensors.values())} weights")
    print(json.dumps(saved.spec, indent=1, sort_keys=True))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from suite.models.simulate import simulator  # torch and the simulators only when simulating
    from suite.models.stimulus import parse_stimulus

    if not np.isfinite(args.t_stop) or args.t_stop <= 0:
        raise InputError(f"must be a positive number of ms, got {args.t_stop}", field="--t-stop")
    model = simulator(load_model(resolve(args.model, args.results)))
    stimulus = parse_stimulus(args.stimulus, model.density)
    v_model = model.simulate(stimulus, args.t_stop).numpy()
    v_ref = model.reference(stimulus, args.t_stop).numpy()
    record_dt = float(model.record_dt)
    t = np.arange(len(v_model)) * record_dt
    i_stim = stimulus.profile(record_dt, args.t_stop)[0].numpy()
    trace = pd.DataFrame({"t": t, "i_stim": np.append(i_stim, i_stim[-1:])[:len(t)], "v_model": v_model,
                          "v_reference": v_ref})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    trace.to_parquet(out, index=False)
    rmse = float(np.sqrt(np.mean((v_model - v_ref) ** 2)))
    print(f"wrote {out} ({len(t)} samples, {args.t_stop:g} ms); RMSE against the reference {rmse:.3f} mV")
    if args.plot:
        _plot(trace, args.plot, f"{Path(str(model.saved.path)).stem}: {stimulus.text}")
        print(f"wrote {args.plot}")
    return 0


def _plot(trace: pd.DataFrame, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(trace["t"], trace["v_reference"], label="reference", color="0.3")
    ax.plot(trace["t"], trace["v_model"], label="learned", color="C3", ls="--")
    ax.set(xlabel="t (ms)", ylabel="V (mV)", title=title)
    ax.legend(frameon=False)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _export(args: argparse.Namespace) -> int:
    from suite.models.nmodl import export_nmodl

    start = time.perf_counter()
    saved = load_model(resolve(args.model, args.results))
    for path in export_nmodl(saved, args.out):
        print(f"wrote {path}")
    print(f"exported in {time.perf_counter() - start:.2f} s")
    return 0
