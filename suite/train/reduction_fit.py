"""Fit the reduced cell's axial ODE to a soma voltage trace: teacher forcing, then closed loop.

Stage 1 clamps V to the target trace and trains one-step predictions: each step's error is the
axial current the network got wrong, so the stage is a stable sequence regression (the latents are
driven by the true V) with no spike-timing chaos in the loss. Stage 2 runs the hybrid freely and
fits MSE(V) on a curriculum of growing windows (PAPER.md, experiment 2's recipe), from stage 1's
weights. Each stage runs in ``suite.train.loop``: the ensemble's loss is the sum of per-model
losses, AdamW acts per element and gradients are clipped per model, so each model trains as it
would alone; a model whose loss stops being finite goes back to its best weights and is frozen, and
every model ends each stage on its best weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from suite.sim import native
from suite.sim.reduced import AXIAL_SCALE_NA, ReducedSoma, run_fused, run_torch
from suite.train.loop import Stage, train
from suite.train.schedule import warmup_cosine

V_SCALE_MV = 10.0


@dataclass(frozen=True)
class ReductionFitConfig:
    """Stages and optimiser. ``curriculum`` fractions of the trace, one per entry of ``closed_steps``."""

    teacher_steps: int = 300
    closed_steps: tuple[int, ...] = (100, 100, 200)
    curriculum: tuple[float, ...] = (0.3, 0.6, 1.0)
    lr: float = 3e-3
    closed_lr: float = 1e-3
    warmup_fraction: float = 0.05
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    loss_every: int = 4  # compare every 4th sample (0.1 ms at dt 0.025)

    def __post_init__(self) -> None:
        if len(self.closed_steps) != len(self.curriculum):
            raise ValueError("closed_steps and curriculum need the same length")
        if any(not 0 < f <= 1 for f in self.curriculum):
            raise ValueError(f"curriculum fractions must be in (0, 1], got {self.curriculum}")


@dataclass
class FitResult:
    """Per model: best loss of each stage, the step it diverged at (-1: never) and wall times."""

    teacher_loss: Tensor
    closed_loss: Tensor
    diverged_at: Tensor
    teacher_time_s: float
    closed_time_s: float
    history: list[list[float]] = field(default_factory=list)


def fit_reduced(model: ReducedSoma, stim: Tensor, v_true: Tensor, dt: float,
                cfg: ReductionFitConfig | None = None, backend: str = "auto") -> FitResult:
    """Train every model of ``model`` on traces: ``stim`` ``[T]`` or ``[R, T]`` nA, ``v_true`` ``[(R,) T+1]`` mV.

    ``backend``: "fused" (the compiled forward and backward, CPU), "torch" (autograd, any device) or
    "auto" (fused where it can run).
    """
    cfg = cfg or ReductionFitConfig()
    if backend == "auto":
        backend = "fused" if native.load() is not None and model.stim_scale.device.type == "cpu" else "torch"
    params = [p for p in model.parameters() if p.requires_grad]
    m = model.axial.size
    history: list[list[float]] = []
    dtype = model.stim_scale.dtype
    v_true = torch.atleast_2d(v_true.to(dtype))
    stim = torch.atleast_2d(stim.to(dtype))
    every = cfg.loss_every
    teacher_scale = model.cap_nA / dt / AXIAL_SCALE_NA  # a one-step error as the axial current that closes it
    run = run_fused if backend == "fused" else run_torch

    def teacher(_: int, __: Tensor) -> Tensor:
        return torch.from_numpy(run(model, stim, dt, v_true, teacher=True, scale=teacher_scale,
                                    want_grad=True).loss.sum(1)).double()

    def closed(n: int) -> Callable[[int, Tensor], Tensor]:
        return lambda _, __: torch.from_numpy(run(
            model, stim[:, :n], dt, v_true[:, :n + 1], v0=float(v_true[0, 0]), every=every, scale=1.0 / V_SCALE_MV,
            want_grad=True).loss.sum(1)).double()

    def schedule(steps: int, lr: float) -> list[float]:
        return warmup_cosine(steps, lr, int(cfg.warmup_fraction * steps))

    # The clip's eps stays this trainer's 1e-12: its results move with it. Measured on the quick preset,
    # torch's 1e-6 (a 1e-6 relative change of a clipped step) moves a model's training RMSE from 3.4 to
    # 5.4 mV: closed-loop training amplifies it, so compare models over seeds, not one run.
    clip = {"clip": cfg.grad_clip, "clip_eps": 1e-12}
    stages = [Stage("teacher", cfg.teacher_steps, cfg.lr, teacher, schedule, **clip)]
    for steps, fraction in zip(cfg.closed_steps, cfg.curriculum, strict=True):
        n = max(every, int(round(fraction * stim.shape[1])))
        stages.append(Stage(f"closed_{fraction:g}", steps, cfg.closed_lr, closed(n), schedule, **clip))
    out = train(params, stages, optimizer=lambda ps, lr: torch.optim.AdamW(ps, lr=lr, weight_decay=cfg.weight_decay),
                end_on_best=True, hook=lambda info: history.append(info.losses.tolist()))

    nan = torch.full((m,), float("nan"), dtype=torch.float64)
    ran = [i for i, stage in enumerate(stages) if stage.steps >= 1]  # out.best has one entry per stage run
    teacher_best = out.best[0] if cfg.teacher_steps else nan
    closed_best = out.best[-1] if ran and ran[-1] > 0 else nan
    teacher_time = out.stage_wall_s[0] if cfg.teacher_steps else 0.0
    closed_time = sum(out.stage_wall_s) - teacher_time
    return FitResult(teacher_best, closed_best, out.diverged_at, teacher_time, closed_time, history)
