"""Fit the reduced cell's axial ODE to a soma voltage trace: teacher forcing, then closed loop.

Stage 1 clamps V to the target trace and trains one-step predictions: each step's error is the
axial current the network got wrong, so the stage is a stable sequence regression (the latents are
driven by the true V) with no spike-timing chaos in the loss. Stage 2 runs the hybrid freely and
fits MSE(V) on a curriculum of growing windows (PAPER.md, experiment 2's recipe), from stage 1's
weights. The ensemble's loss is the sum of per-model losses and AdamW acts per element; gradients
are clipped per model, so each model trains as it would alone. A model whose loss stops being
finite goes back to its best weights and is frozen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from suite.sim import native
from suite.sim.reduced import AXIAL_SCALE_NA, ReducedSoma, run_fused, run_torch
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


def _per_model_clip(params: list[Tensor], max_norm: float, frozen: Tensor) -> None:
    """Scale each model's gradient (leading dimension) to norm <= max_norm; zero frozen or non-finite ones."""
    sq = None
    for p in params:
        if p.grad is None:
            continue
        g = p.grad.reshape(p.grad.shape[0], -1)
        s = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0).pow(2).sum(1)
        bad = ~torch.isfinite(g).all(1)
        s = torch.where(bad, torch.full_like(s, float("inf")), s)
        sq = s if sq is None else sq + s
    if sq is None:
        return
    norm = sq.sqrt()
    scale = torch.where(torch.isfinite(norm) & ~frozen, (max_norm / (norm + 1e-12)).clamp(max=1.0),
                        torch.zeros_like(norm))
    for p in params:
        if p.grad is not None:
            g = torch.nan_to_num(p.grad, nan=0.0, posinf=0.0, neginf=0.0)
            p.grad.copy_(g * scale.reshape(-1, *([1] * (g.dim() - 1))))


def _snapshot(params: list[Tensor]) -> list[Tensor]:
    return [p.detach().clone() for p in params]


def _restore(params: list[Tensor], snap: list[Tensor], which: Tensor) -> None:
    with torch.no_grad():
        for p, s in zip(params, snap, strict=True):
            p[which] = s[which]


def _stage(params: list[Tensor], steps: int, lr: float, cfg: ReductionFitConfig, loss_and_grad: Callable[[], Tensor],
           frozen: Tensor, diverged_at: Tensor, step0: int, history: list[list[float]]) -> Tensor:
    """One stage of AdamW with warm-up and cosine decay; returns each model's best loss (best weights kept).

    ``loss_and_grad()`` returns the per-model losses ``[M]`` and leaves their gradients in ``.grad``.
    """
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    lrs = warmup_cosine(steps, lr, int(cfg.warmup_fraction * steps))
    m = frozen.shape[0]
    best = torch.full((m,), float("inf"), dtype=torch.float64)
    snap = _snapshot(params)
    for k in range(steps):
        for group in opt.param_groups:
            group["lr"] = lrs[k]
        opt.zero_grad(set_to_none=False)
        losses = loss_and_grad().detach().double()
        finite = torch.isfinite(losses)
        newly = ~finite & ~frozen
        if newly.any():  # back to the best weights, and stop training that model
            diverged_at[newly & (diverged_at < 0)] = step0 + k
            frozen |= newly
        improved = finite & (losses < best) & ~frozen
        if improved.any():
            best = torch.where(improved, losses, best)
            with torch.no_grad():
                for p, s in zip(params, snap, strict=True):
                    s[improved] = p.detach()[improved]
        history.append(losses.tolist())
        _per_model_clip(params, cfg.grad_clip, frozen)
        opt.step()
        if frozen.any():
            _restore(params, snap, frozen)
    _restore(params, snap, torch.ones(m, dtype=torch.bool))  # end on each model's best weights
    return best


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
    frozen = torch.zeros(m, dtype=torch.bool)
    diverged_at = torch.full((m,), -1, dtype=torch.long)
    history: list[list[float]] = []
    dtype = model.stim_scale.dtype
    v_true = torch.atleast_2d(v_true.to(dtype))
    stim = torch.atleast_2d(stim.to(dtype))
    every = cfg.loss_every
    teacher_scale = model.cap_nA / dt / AXIAL_SCALE_NA  # a one-step error as the axial current that closes it
    run = run_fused if backend == "fused" else run_torch

    def teacher() -> Tensor:
        return torch.from_numpy(run(model, stim, dt, v_true, teacher=True, scale=teacher_scale,
                                    want_grad=True).loss.sum(1))

    def closed(n: int) -> Tensor:
        return torch.from_numpy(run(model, stim[:, :n], dt, v_true[:, :n + 1], v0=float(v_true[0, 0]), every=every,
                                    scale=1.0 / V_SCALE_MV, want_grad=True).loss.sum(1))

    start = time.perf_counter()
    teacher_best = torch.full((m,), float("nan"), dtype=torch.float64)
    if cfg.teacher_steps:
        teacher_best = _stage(params, cfg.teacher_steps, cfg.lr, cfg, teacher, frozen, diverged_at, 0, history)
    teacher_time = time.perf_counter() - start

    start = time.perf_counter()
    closed_best = torch.full((m,), float("nan"), dtype=torch.float64)
    step0 = cfg.teacher_steps
    for steps, fraction in zip(cfg.closed_steps, cfg.curriculum, strict=True):
        n = max(every, int(round(fraction * stim.shape[1])))
        if steps:
            closed_best = _stage(params, steps, cfg.closed_lr, cfg, lambda n=n: closed(n), frozen, diverged_at,
                                 step0, history)
        step0 += steps
    return FitResult(teacher_best, closed_best, diverged_at, teacher_time, time.perf_counter() - start, history)
