"""The cost of the reduction's models, side by side in one run: full cell (ours, NEURON), hybrid, plain soma.

    python benchmarks/reduction_cost.py [--t-stop 70] [--batch 256] [--width 64] [--latents 8]

Every model simulates the same ``--t-stop`` ms of the soma step at dt 0.025 ms, one trace and
``--batch`` traces. The hybrid's cost does not depend on its weights, so an untrained one of the
chosen architecture stands in. Eager torch paths run on one intra-op thread (faster for steps on a
handful of numbers). Where the time goes in the eager hybrid step is printed first: it is why the
step is fused.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from channelzoo.models import pospischil_jaxley
from suite.sim.cable import Cable
from suite.sim.compartments import compartmentalise
from suite.sim.generated_morphology import pyramidal
from suite.sim.morphology import read_swc
from suite.sim.neuron_cable import build_cell, neuron_available
from suite.sim.reduced import AxialODE, ReducedSoma, run_fused

SHARED = Path(os.environ.get("HYBRIDBENCH_SHARED", Path(__file__).resolve().parents[2] / "shared"))
CA1 = SHARED / "data" / "morphologies" / "ca1_n120_single_point_soma.swc"
DT, AMP, DELAY, V_INIT, CELSIUS = 0.025, 0.65, 10.0, -70.0, 36.0


def best_of(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def eager_breakdown(model: ReducedSoma, steps: int = 400) -> dict[str, float]:
    """Microseconds per step of the eager hybrid's parts: the MLP, the membrane, the whole step."""
    m = model.axial.size
    v = torch.full((m, 1), -65.0, dtype=torch.float64)
    z = torch.zeros(m, 1, model.axial.z_max, dtype=torch.float64)
    x = model.membrane.init_state(v.reshape(-1))
    out = {}
    with torch.no_grad():
        start = time.perf_counter()
        for _ in range(steps):
            model.axial(v, z)
        out["mlp"] = (time.perf_counter() - start) / steps * 1e6
        start = time.perf_counter()
        for _ in range(steps):
            model.ionic(x, m, 1)
            model.membrane.step_gates(x, v.reshape(-1), DT)
        out["membrane"] = (time.perf_counter() - start) / steps * 1e6
        stim = torch.zeros(steps, dtype=torch.float64)
        start = time.perf_counter()
        model.simulate(stim, DT, keep=False)
        out["whole step"] = (time.perf_counter() - start) / steps * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--swc", help="SWC file (default: the paper's CA1 cell, else the generated one)")
    parser.add_argument("--t-stop", type=float, default=70.0)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--latents", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-eager", action="store_true", help="skip the (slow) eager torch timings")
    args = parser.parse_args()
    swc = Path(args.swc) if args.swc else CA1 if CA1.exists() else None
    if swc is None:
        swc = pyramidal().write_swc(Path(os.environ.get("TMPDIR", "/tmp")) / "hybridbench_pyramidal.swc")
    channels = pospischil_jaxley().channels
    comp = compartmentalise(read_swc(swc), 1, ra=100.0)
    full = Cable(comp, channels, 1.0, temperature=CELSIUS)
    soma = Cable(compartmentalise(comp.sections[:1], 1), channels, 1.0, temperature=CELSIUS)
    a_soma, a_total = float(comp.area[comp.soma]), comp.total_area
    steps = int(round(args.t_stop / DT))
    mid = (torch.arange(steps, dtype=torch.float64) + 0.5) * DT
    stim = AMP * (mid >= DELAY).double()
    batch = stim.unsqueeze(0).expand(args.batch, -1).contiguous()
    hybrid = ReducedSoma(channels, a_soma, AxialODE([args.latents], args.width, dtype=torch.float64),
                         a_soma / a_total, temperature=CELSIUS)
    threads = torch.get_num_threads()
    print(f"cell {swc.name}: {int((comp.area > 0).sum())} compartments; {args.t_stop:g} ms per trace at dt {DT}; "
          f"hybrid N_z={args.latents}, MLP {args.width}x2; {threads} threads")

    torch.set_num_threads(1)
    parts = eager_breakdown(hybrid)
    print("eager hybrid step, us: " + ", ".join(f"{k} {v:.0f}" for k, v in parts.items())
          + f"  ->  {parts['whole step'] * steps / 1e6:.2f} s per trace: per-call overhead, not arithmetic")
    rows: list[tuple[str, float, float]] = []  # (model, one trace s, per trace in the batch s)
    nan = float("nan")
    eager_full = eager_hybrid = eager_soma = nan
    if not args.skip_eager:
        eager_full = best_of(lambda: full.simulate(stim.unsqueeze(0), DT, V_INIT, backend="torch"), 0)
        eager_hybrid = best_of(lambda: hybrid.simulate(stim, DT, keep=False), 0)
        eager_soma = best_of(lambda: soma.simulate(stim.unsqueeze(0) * a_soma / a_total, DT, V_INIT,
                                                   backend="torch"), 0)
    torch.set_num_threads(threads)
    r = args.repeats
    rows.append(("multicompartment, ours fused", best_of(lambda: full.simulate(stim.unsqueeze(0), DT, V_INIT,
                                                                               backend="fused", n_threads=1), r),
                 best_of(lambda: full.simulate(batch, DT, V_INIT, backend="fused"), 1) / args.batch))
    rows.append(("multicompartment, ours torch (eager)", eager_full, float("nan")))
    if neuron_available():
        cell = build_cell(swc, channels, ra=100.0, cm=1.0, nseg=1)
        one = min(cell.run(AMP, DELAY, args.t_stop, args.t_stop, DT, V_INIT, CELSIUS, record=False)[1]
                  for _ in range(r + 1))
        start = time.perf_counter()
        for _ in range(min(args.batch, 32)):  # one after another: the per-trace cost is the same at any batch
            cell.run(AMP, DELAY, args.t_stop, args.t_stop, DT, V_INIT, CELSIUS, record=False)
        seq = (time.perf_counter() - start) / min(args.batch, 32)
        cell.close()
        rows.append(("multicompartment, NEURON", one, seq))
    rows.append(("hybrid, fused", best_of(lambda: run_fused(hybrid, stim, DT, n_threads=1), r),
                 best_of(lambda: run_fused(hybrid, batch, DT), 1) / args.batch))
    rows.append(("hybrid, torch (eager)", eager_hybrid, float("nan")))
    rows.append(("soma, fused", best_of(lambda: soma.simulate(stim.unsqueeze(0) * a_soma / a_total, DT, V_INIT,
                                                              backend="fused", n_threads=1), r),
                 best_of(lambda: soma.simulate(batch * a_soma / a_total, DT, V_INIT, backend="fused"), 1)
                 / args.batch))
    rows.append(("soma, torch (eager)", eager_soma, float("nan")))
    print(f"\n{'model':40s} {'1 trace (ms)':>14s} {'per trace in ' + str(args.batch) + ' (ms)':>24s}")
    for name, one, per in rows:
        print(f"{name:40s} {one * 1e3:14.2f} {per * 1e3:24.3f}")
    by = {name: (one, per) for name, one, per in rows}
    ours, hyb = by["multicompartment, ours fused"], by["hybrid, fused"]
    print(f"\nhybrid cheaper than the full cell in ours: {ours[0] / hyb[0]:.1f}x (1 trace), "
          f"{ours[1] / hyb[1]:.1f}x (batched)   target >= 10x")
    if "multicompartment, NEURON" in by:
        nrn = by["multicompartment, NEURON"]
        print(f"hybrid cheaper than NEURON's full cell: {nrn[0] / hyb[0]:.1f}x (1 trace), "
              f"{nrn[1] / hyb[1]:.1f}x (batched vs one by one)   target > 1x")
        print(f"ours full cell vs NEURON: {nrn[0] / ours[0]:.2f}x (1 trace), {nrn[1] / ours[1]:.2f}x (batched)")
    print(f"hybrid vs plain soma (fused): {hyb[0] / by['soma, fused'][0]:.1f}x the soma's cost")
    print("paper (JAX, per 70 ms): multi 1.110 s, hybrid 0.117 s (9.5x), soma 0.047 s")


if __name__ == "__main__":
    main()
