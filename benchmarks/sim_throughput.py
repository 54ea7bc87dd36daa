"""Simulated cell-milliseconds per wall second: our single compartment against NEURON, same HH somata.

    python benchmarks/sim_throughput.py [--cells 1 1024 16384] [--torch]

NEURON runs its fastest way: all cells as sections of one model, fixed step 0.025 ms,
``ParallelContext.psolve`` (1 and 2 threads, the faster counts), ``hh`` with its default rate
tables. Ours runs the compiled kernel (``suite.sim.kernel``: rate tables at 0.1 mV, float64,
backward Euler as NEURON's default, OpenMP over cells). ``--torch`` adds the plain torch
simulator (eager; ``torch.compile``d chunks of 50 steps) for comparison. Every cell gets a step
current of its own amplitude (5 to 15 uA/cm2) from 5 to 95 ms of 100 ms; the script also prints
the mean |dV| between NEURON and us on one cell, so the speed is for the same computation.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from channelzoo.models import hh
from suite.sim import Membrane, SingleCompartment, StepCurrent, kernel

DT, T_STOP, T_ON, T_OFF = 0.025, 100.0, 5.0, 95.0


def amplitudes(n: int) -> np.ndarray:
    return np.linspace(5.0, 15.0, n) if n > 1 else np.array([10.0])


def neuron_run(n: int, threads: int, tables: bool = True) -> tuple[float, np.ndarray]:
    from neuron import h

    h.load_file("stdrun.hoc")
    h.usetable_hh = int(tables)  # NEURON's default: rates from 1-mV tables
    model = hh()
    secs, clamps = [], []
    amps = amplitudes(n) * model.area_cm2 * 1e3  # uA/cm2 -> nA
    for i in range(n):
        s = h.Section(name=f"c{i}")
        s.L, s.diam, s.nseg = model.length_um, model.diam_um, 1
        s.insert("hh")
        c = h.IClamp(s(0.5))
        c.delay, c.dur, c.amp = T_ON, T_OFF - T_ON, float(amps[i])
        secs.append(s)
        clamps.append(c)
    rec = h.Vector().record(secs[0](0.5)._ref_v)
    pc = h.ParallelContext()
    pc.nthread(threads)
    h.celsius, h.dt = model.temperature, DT
    h.cvode_active(0)
    pc.set_maxstep(10)
    h.finitialize(model.v_init)
    start = time.perf_counter()
    pc.psolve(T_STOP)
    wall = time.perf_counter() - start
    trace = np.array(rec)
    pc.nthread(1)
    del clamps, secs
    return wall, trace


def ours_kernel(n: int) -> tuple[float, np.ndarray]:
    model = hh()
    f64 = torch.float64
    mem = Membrane(model.channels, n_sites=1, dtype=f64, temperature=model.temperature)
    layout = kernel.GateLayout.of(mem)
    dv = 0.1
    grid = -100.0 + dv * torch.arange(1601, dtype=f64)
    inf, tau = mem.gate_rates(grid)
    steps = round(T_STOP / DT)
    profile = StepCurrent(torch.ones(1, dtype=f64), T_ON, T_OFF).sample(DT, steps).T.contiguous()  # [1, T]
    v0 = torch.full((n,), model.v_init, dtype=f64)
    x0 = mem.init_state(v0[:1]).T.expand(n, -1)
    args = (v0, x0, profile, torch.ones(n, dtype=f64), mem.gbar.T.expand(n, -1), mem.e_rev.T.expand(n, -1),
            inf[None], torch.exp(-DT / tau)[None], layout, -100.0, dv, DT, 0.0)
    scale = torch.tensor(amplitudes(n), dtype=f64)
    kernel.simulate(*args, record_every=1, current_scale=scale)  # warm: compile once, touch memory
    reps = max(1, int(2e6 // (n * steps)))
    start = time.perf_counter()
    for _ in range(reps):
        v = kernel.simulate(*args, record_every=40 if n > 1 else 1, current_scale=scale)
    wall = (time.perf_counter() - start) / reps
    return wall, v[0].numpy()


def ours_torch(n: int, compile_it: bool) -> float:
    model = hh()
    cell = SingleCompartment(Membrane(model.channels, n_sites=n, dtype=torch.float64, temperature=model.temperature))
    stim = StepCurrent(torch.tensor(amplitudes(n), dtype=torch.float64), T_ON, T_OFF).sample(DT, round(T_STOP / DT))
    with torch.no_grad():
        cell.simulate(stim[:100], DT, model.v_init, compile=compile_it, unroll=50)  # warm / compile
        start = time.perf_counter()
        cell.simulate(stim, DT, model.v_init, compile=compile_it, unroll=50)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[1, 1024, 16384])
    parser.add_argument("--torch", action="store_true", help="also time the torch simulator (slow to compile)")
    args = parser.parse_args()
    if not kernel.available():
        raise SystemExit("no C compiler: the kernel is unavailable")
    print(f"HH somata, {T_STOP:g} ms at dt {DT} ms; cell-ms/s = cells x {T_STOP:g} ms / wall s")
    print(f"{'cells':>6} {'NEURON cell-ms/s':>17} {'ours cell-ms/s':>15} {'ratio':>6} {'NEURON ms':>10} {'ours ms':>8}")
    for n in args.cells:
        nrn = min((neuron_run(n, t) for t in (1, 2)), key=lambda r: r[0])
        ours = ours_kernel(n)
        if n == 1:
            exact = neuron_run(1, 1, tables=False)[1]
            print(f"(one cell: mean |V_NEURON - V_ours| = {np.abs(exact - ours[1]).mean():.3f} mV over {T_STOP:g} ms "
                  f"with NEURON's exact rates; {np.abs(nrn[1] - ours[1]).mean():.3f} mV with its 1-mV tables)")
        nrn_rate, our_rate = n * T_STOP / nrn[0], n * T_STOP / ours[0]
        print(f"{n:>6} {nrn_rate:>17.3g} {our_rate:>15.3g} {our_rate / nrn_rate:>6.2f} {nrn[0] * 1e3:>10.2f} "
              f"{ours[0] * 1e3:>8.2f}")
        if args.torch:
            for compile_it in (False, True):
                wall = ours_torch(n, compile_it)
                print(f"{'':>6} torch {'compiled' if compile_it else 'eager'}: {n * T_STOP / wall:.3g} cell-ms/s "
                      f"({wall * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
