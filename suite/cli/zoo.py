"""`hybridbench zoo build|list|show|plot`: the catalogue of channel models."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from channelzoo.catalogue import Zoo, write_catalogue
from channelzoo.errors import ZooError
from channelzoo.generated import generate
from channelzoo.icg import import_icg

SOURCES = ("generated", "icg")


def catalogue_path(results: str | Path, source: str) -> Path:
    """Where `zoo build` writes the catalogue of ``source``."""
    return Path(results) / "zoo" / f"{source}.parquet"


def load_zoo(results: str | Path, source: str | None = None) -> Zoo:
    """The built catalogues under ``results`` (one source, or all there are)."""
    paths = [catalogue_path(results, source)] if source else sorted((Path(results) / "zoo").glob("*.parquet"))
    if not paths:
        raise ZooError("no catalogue built yet; run `hybridbench zoo build`", file=str(Path(results) / "zoo"))
    return Zoo.load(paths)


def register(commands: argparse._SubParsersAction) -> None:
    zoo = commands.add_parser("zoo", help="build, list, show and plot the channel catalogue")
    sub = zoo.add_subparsers(dest="zoo_command", required=True)

    build = sub.add_parser("build", help="build a catalogue from a source")
    build.add_argument("--source", choices=SOURCES, default="generated")
    build.add_argument("path", nargs="?", help="for --source icg: a clone of the ICG channel repositories")
    build.add_argument("--n", type=int, default=2400, help="generated: number of channels")
    build.add_argument("--seed", type=int, default=0, help="generated: seed")
    build.add_argument("--out", help="catalogue file (default: RESULTS/zoo/SOURCE.parquet)")
    build.set_defaults(handler=_build)

    ls = sub.add_parser("list", help="list channels")
    ls.add_argument("--class", dest="ion_class", help="only this class (K, Na, Ca, KCa, IH)")
    ls.add_argument("--source", choices=SOURCES)
    ls.add_argument("--limit", type=int, default=50, help="rows to print (0: all)")
    ls.set_defaults(handler=_list)

    show = sub.add_parser("show", help="one channel's definition")
    show.add_argument("id")
    show.set_defaults(handler=_show)

    plot = sub.add_parser("plot", help="x_inf and tau against V, each gate")
    plot.add_argument("id")
    plot.add_argument("--out", required=True, help="PNG file to write")
    plot.set_defaults(handler=_plot)


def _build(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if args.source == "generated":
        if args.n < 1:
            raise ZooError(f"--n must be positive, got {args.n}", field="--n")
        channels = generate(n=args.n, seed=args.seed)
        report = ""
    else:
        if not args.path:
            raise ZooError("--source icg needs the PATH of an ICG clone", field="path")
        result = import_icg(args.path)
        channels = result.channels
        report = f"\n{left_out}" if (left_out := result.report()) else ""
    if not channels:
        raise ZooError("the source gave no usable channel", file=args.path, field="channels")
    out = write_catalogue(channels, args.out or catalogue_path(args.results, args.source))
    zoo = Zoo.load(out)
    print(zoo.summary().to_string(index=False))
    print(f"{len(zoo)} channels, {len(zoo.rows)} gates -> {out} ({time.perf_counter() - start:.1f} s){report}")
    return 0


def _list(args: argparse.Namespace) -> int:
    zoo = load_zoo(args.results, args.source)
    if args.ion_class:
        zoo = zoo.filter(ion_class=args.ion_class)
    table = (zoo.rows.groupby("channel_id", sort=False)
             .agg(**{"class": ("class", "first"), "source": ("source", "first"), "structure": ("structure", "first"),
                     "kinetics": ("kinetics", lambda k: ",".join(sorted(set(k)))), "gbar": ("gbar", "first"),
                     "e_rev": ("e_rev", "first")})
             .reset_index())
    shown = table if args.limit == 0 else table.head(args.limit)
    print(shown.to_string(index=False))
    if len(shown) < len(table):
        print(f"... {len(table) - len(shown)} more (--limit 0 lists all)")
    return 0


def _show(args: argparse.Namespace) -> int:
    channel = load_zoo(args.results).channel(args.id)
    print(f"{channel.id}: class {channel.ion_class}, source {channel.source}, structure {channel.structure}")
    print(f"  gbar {channel.gbar:g} S/cm2, E_rev {channel.e_rev:g} mV")
    if channel.metadata:
        print(f"  metadata {json.dumps(channel.metadata, sort_keys=True)}")
    for gate in channel.gates:
        d = gate.to_dict()
        d.pop("metadata")
        print(f"  gate {json.dumps(d, sort_keys=True)}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from channelzoo.plot import plot_channel  # matplotlib only when plotting

    out = plot_channel(load_zoo(args.results).channel(args.id), args.out)
    print(f"wrote {out}")
    return 0
