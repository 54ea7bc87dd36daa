"""Cable simulator throughput against NEURON on the same cell, in one run.

    python benchmarks/cable_throughput.py [--swc FILE] [--channels pospischil|hh] [--batch 256] [--t-stop 70]

The paper's CA1 cell (154 compartments; the generated pyramidal cell without the shared data),
Pospischil Na, Kd, M and leak everywhere (NEURON: the .mod fixtures of tests/mod), or ``hh``
everywhere (NEURON's built-in hh with its rate table, as PAPER.md's 27 ms), a soma step (0.65 nA;
0.2 nA for hh), fixed step dt 0.025 ms. Batch 1: our
fused kernel, our differentiable torch path, NEURON (h.continuerun and ParallelContext.psolve).
Batched: ``--batch`` stimuli (amplitudes 0.3..1.0 nA) in one call of ours against NEURON running
them one after another. Best of ``--repeats`` after a warm-up; ratios > 1 mean ours is faster.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from channelzoo.models import hh, pospischil_jaxley
from suite.sim.cable import Cable
from suite.sim.compartments import compartmentalise
from suite.sim.generated_morphology import pyramidal
from suite.sim.morphology import read_swc
from suite.sim.neuron_cable import build_cell, neuron_available

SHARED = Path(os.environ.get("HYBRIDBENCH_SHARED", Path(__file__).resolve().parents[2] / "shared"))
CA1 = SHARED / "data" / "morphologies" / "ca1_n120_single_point_soma.swc"
DT, AMP, DELAY, DUR, V_INIT = 0.025, 0.65, 10.0, 40.0, -70.0


def best_of(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--swc", help="SWC file (default: the paper's CA1 cell, else the generated one)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--t-stop", type=float, default=70.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--nseg", default="1", help="compartments per section, or d_lambda")
    parser.add_argument("--channels", choices=["pospischil", "hh"], default="pospischil")
    args = parser.parse_args()
    swc = Path(args.swc) if args.swc else CA1 if CA1.exists() else None
    if swc is None:
        swc = pyramidal().write_swc(Path(os.environ.get("TMPDIR", "/tmp")) / "hybridbench_pyramidal.swc")
    nseg = args.nseg if args.nseg == "d_lambda" else int(args.nseg)
    model = pospischil_jaxley() if args.channels == "pospischil" else hh()
    channels, celsius = model.channels, model.temperature
    amp = AMP if args.channels == "pospischil" else 0.2
    comp = compartmentalise(read_swc(swc), nseg, ra=100.0)
    cable = Cable(comp, channels, 1.0, temperature=celsius)
    steps = int(round(args.t_stop / DT))
    mid = (torch.arange(steps, dtype=torch.float64) + 0.5) * DT
    shape = ((mid >= DELAY) & (mid < DELAY + DUR)).double()
    one = (amp * shape).unsqueeze(0)
    amps = torch.linspace(0.3, 1.0, args.batch, dtype=torch.float64)
    many = amps.unsqueeze(1) * shape.unsqueeze(0)
    threads = torch.get_num_threads()
    print(f"cell {swc.name}: {int((comp.area > 0).sum())} compartments ({comp.n_nodes} nodes with junctions), "
          f"{args.channels} channels, {args.t_stop:g} ms at dt {DT}, {threads} threads, CPU {os.cpu_count()} cores")

    ours_1 = best_of(lambda: cable.simulate(one, DT, V_INIT, backend="fused", n_threads=1), args.repeats)
    torch.set_num_threads(1)  # eager steps on a few hundred numbers: threads only add contention
    ours_torch = best_of(lambda: cable.simulate(one, DT, V_INIT, backend="torch"), 1)
    torch.set_num_threads(threads)
    ours_b = best_of(lambda: cable.simulate(many, DT, V_INIT, backend="fused"), max(1, args.repeats // 2))
    print(f"ours fused, batch 1:              {ours_1 * 1e3:9.1f} ms")
    print(f"ours torch (differentiable), b 1: {ours_torch * 1e3:9.1f} ms")
    per = ours_b / args.batch * 1e3
    print(f"ours fused, batch {args.batch:<4d}:          {ours_b * 1e3:9.1f} ms  ({per:.2f} ms/trace)")
    if not neuron_available():
        print("NEURON not installed: no comparison")
        return
    cell = build_cell(swc, channels, ra=100.0, cm=1.0, nseg=nseg)
    h = cell.h
    run = lambda a=amp: cell.run(a, DELAY, DUR, args.t_stop, DT, V_INIT, celsius, record=False)[1]  # noqa: E731
    run()
    n_cont = min(run() for _ in range(args.repeats))
    pc = h.ParallelContext()
    pc.set_maxstep(10)

    def psolve() -> None:
        h.finitialize(V_INIT)
        pc.psolve(args.t_stop)

    n_psolve = best_of(psolve, args.repeats)
    start = time.perf_counter()
    for a in amps.tolist():
        run(a)
    n_seq = time.perf_counter() - start
    cell.close()
    print(f"NEURON continuerun, 1 trace:      {n_cont * 1e3:9.1f} ms")
    print(f"NEURON psolve, 1 trace:           {n_psolve * 1e3:9.1f} ms")
    per = n_seq / args.batch * 1e3
    print(f"NEURON {args.batch} traces one by one:     {n_seq * 1e3:9.1f} ms  ({per:.2f} ms/trace)")
    print(f"ratio batch 1 (NEURON psolve / ours fused):      {n_psolve / ours_1:6.2f}x  (target >= 0.33)")
    print(f"ratio batch 1 (NEURON continuerun / ours fused): {n_cont / ours_1:6.2f}x")
    print(f"ratio batch 1 (NEURON psolve / ours torch):      {n_psolve / ours_torch:6.2f}x")
    print(f"ratio batched (NEURON one by one / ours):        {n_seq / ours_b:6.2f}x  (target >= 5)")


if __name__ == "__main__":
    main()
