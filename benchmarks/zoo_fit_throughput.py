"""Throughput of the zoo fit: G gates in one batched fit against the same gates fitted one at a time.

Prints gate-steps per second (one gate advanced by one optimiser step) for the batched fit at
``--gates`` and for a G = 1 loop over a sample of gates (extrapolated per gate), and their ratio,
for the neural gate and for the ICG supermodel set (SM1..SM5, as "omni best" fits all five).
Batched and single runs alternate round by round so both see the same machine load (the CPU may
be shared); the ratio is the median over rounds. Targets are synthetic Boltzmann / bell gates,
so the script needs no catalogue.

    python benchmarks/zoo_fit_throughput.py                      # G = 1,024: torch eager, compiled, and the kernel
    python benchmarks/zoo_fit_throughput.py --steps 50 --rounds 2 --compile off   # a quick look

The fused C kernel (suite/train/fused_gates.py) only runs the neural gate; ``--kernel`` picks whether it is
measured beside torch (the supermodels always fit with torch).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable

import torch

from channelzoo.forms import apply_form
from channelzoo.grid import ICG_GRID_MV
from suite.gates import SUPERMODEL_KINDS, make_model
from suite.train.curve_fit import CurveFitConfig, fit_curves

PAPER_SECONDS_PER_GATE = 74.0  # PAPER.md: their NODE, 2 x 10,000 steps, one one-gate channel, this CPU
PAPER_STEPS_PER_GATE = 20_000
ZOO_GATES = 2462  # PAPER.md: the ICG channels kept; at least one gate each


def synthetic_targets(gates: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boltzmann x_inf (rising or falling) and bell-shaped tau (ms) on the ICG grid, ``[G, 56]`` each."""
    g = torch.Generator().manual_seed(seed)

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.empty(gates, 1, dtype=torch.float64).uniform_(lo, hi, generator=g)

    v = torch.tensor(ICG_GRID_MV, dtype=torch.float64)
    sign = torch.where(torch.rand(gates, 1, generator=g) < 0.5, -1.0, 1.0).double()
    p_inf = torch.cat([torch.ones(gates, 1, dtype=torch.float64), uniform(-70, 10), sign * uniform(4, 20)], 1)
    centre = uniform(-80, 0)
    p_tau = torch.cat([uniform(0.05, 1), uniform(1, 30), centre, uniform(8, 30), centre + uniform(-10, 10),
                       uniform(8, 30)], 1)
    grid = v.expand(gates, -1)
    return v, apply_form("HHSigmoidVariable", grid, p_inf), apply_form("BellTau", grid, p_tau)


def timed_fit(kinds: tuple[str, ...], index: torch.Tensor, v: torch.Tensor, inf: torch.Tensor, tau: torch.Tensor,
              steps: int, compile_it: bool, threads: int, kernel: bool = False) -> float:
    """Seconds to fit the gates ``index`` (one batch) with every model kind in ``kinds``, ``steps`` steps each."""
    config = CurveFitConfig(steps_per_stage=steps, stages=1, compile=compile_it, num_threads=threads,
                            check_every=max(steps // 2, 1), kernel=kernel)
    total = 0.0
    for kind in kinds:
        model = make_model(kind, index.numel(), inf[index], tau[index], v, seed=0)
        total += fit_curves(model, v, inf[index], tau[index], config).wall_s
    return total


def measure(label: str, kinds: tuple[str, ...], args: argparse.Namespace, mode: str,
            targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> dict[str, float]:
    v, inf, tau = targets
    batch = torch.arange(args.gates)
    sample = torch.linspace(0, args.gates - 1, args.single_sample).round().long()
    single_threads = (1, args.threads) if args.threads != 1 else (1,)
    compile_it, kernel = mode == "compiled", mode == "kernel"

    def warm(fn: Callable[[], float]) -> None:
        fn()  # first calls compile (if asked) and touch memory; not timed

    warm(lambda: timed_fit(kinds, batch, v, inf, tau, 3, compile_it, args.threads, kernel))
    for t in single_threads:
        warm(lambda t=t: timed_fit(kinds, sample[:1], v, inf, tau, 3, compile_it, t, kernel))

    batched_rates, single_rates, ratios = [], [], []
    for _ in range(args.rounds):
        wall = timed_fit(kinds, batch, v, inf, tau, args.steps, compile_it, args.threads, kernel)
        batched = args.gates * args.steps / wall
        best_single = 0.0
        for t in single_threads:  # the loop gets its best thread count
            walls = [timed_fit(kinds, sample[i:i + 1], v, inf, tau, args.single_steps, compile_it, t, kernel)
                     for i in range(sample.numel())]
            best_single = max(best_single, args.single_steps / statistics.mean(walls))
        batched_rates.append(batched)
        single_rates.append(best_single)
        ratios.append(batched / best_single)
    out = {"batched": statistics.median(batched_rates), "single": statistics.median(single_rates),
           "ratio": statistics.median(ratios)}
    per_set = f" (a gate-step = one step of all {len(kinds)} models)" if len(kinds) > 1 else ""
    print(f"{label:<8} {mode:<8} batched G={args.gates}: {out['batched']:>9.0f} gate-steps/s | "
          f"one at a time: {out['single']:>7.0f} gate-steps/s | ratio {out['ratio']:5.1f}x "
          f"(rounds: {', '.join(f'{r:.1f}' for r in ratios)}){per_set}", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gates", type=int, default=1024, help="gates in the batched fit")
    parser.add_argument("--steps", type=int, default=100, help="optimiser steps per batched round")
    parser.add_argument("--single-sample", type=int, default=8, help="gates fitted one at a time per round")
    parser.add_argument("--single-steps", type=int, default=200, help="optimiser steps per single-gate fit")
    parser.add_argument("--rounds", type=int, default=3, help="alternating batched / single rounds")
    parser.add_argument("--models", default="node,sm", help="comma list: node, sm (SM1..SM5 together)")
    parser.add_argument("--compile", choices=("off", "on", "both"), default="both", help="torch.compile the torch path")
    parser.add_argument("--kernel", choices=("off", "on", "both"), default="both",
                        help="the fused C kernel for the neural gate: instead of torch (on), or beside it (both)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads for the batched fit")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*torch.jit.script_method.*")  # raised inside torch.compile

    targets = synthetic_targets(args.gates)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads available, float32, CPU; "
          f"{args.rounds} rounds of {args.steps} batched steps and {args.single_sample} gates x "
          f"{args.single_steps} steps alone")
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"note: load average {load:.1f} before starting: other processes share the CPU, so absolute rates "
              "are low and noisy; batched and single runs alternate, so the ratios suffer less")
    torch_modes = {"off": ["eager"], "on": ["compiled"], "both": ["eager", "compiled"]}[args.compile]
    sets = {"node": ("node",), "sm": SUPERMODEL_KINDS}
    best: dict[str, dict[str, float]] = {}
    for name in args.models.split(","):
        modes = torch_modes if name != "node" or args.kernel != "on" else []
        if name == "node" and args.kernel != "off":
            modes = [*modes, "kernel"]
        for mode in modes:
            start = time.perf_counter()
            out = measure(name, sets[name], args, mode, targets)
            out["elapsed"] = time.perf_counter() - start
            mine = best.setdefault(name, {"batched": 0.0, "single": 0.0})
            mine["batched"] = max(mine["batched"], out["batched"])
            mine["single"] = max(mine["single"], out["single"])
    for name, rates in best.items():
        ratio = rates["batched"] / rates["single"]
        zoo_batched_h = ZOO_GATES * PAPER_STEPS_PER_GATE / rates["batched"] / 3600
        zoo_single_h = ZOO_GATES * PAPER_STEPS_PER_GATE / rates["single"] / 3600
        print(f"{name:<8} best vs best: {ratio:.1f}x; the {ZOO_GATES}-gate zoo at 2 x 10,000 steps: "
              f"{zoo_batched_h:.2f} h batched, {zoo_single_h:.1f} h one at a time", end="")
        if name == "node":
            paper = PAPER_STEPS_PER_GATE / PAPER_SECONDS_PER_GATE
            print(f"; the paper's code one at a time: {paper:.0f} gate-steps/s "
                  f"({rates['batched'] / paper:.0f}x slower than batched)", end="")
        print()


if __name__ == "__main__":
    main()
