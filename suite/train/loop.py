"""The one staged training loop of many independent members (gates, cells, models) trained as a batch.

Every trainer (zoo fit, recovery, reduction) is a list of ``Stage``s run by ``train``. Members share
nothing but the batch: the total loss is the sum of per-member losses, the optimiser acts per element
and gradients are clipped per member, so each member follows exactly the trajectory it would follow
alone. A member whose loss stops being finite is, by ``on_nonfinite``:

- ``"freeze"``: put back on its best weights of the stage and trained no further (its step recorded);
- ``"skip"``: given no step this time only (a transient blow-up, e.g. of a rollout at a high rate).

Either way a member with a non-finite gradient takes no step, so its NaNs reach nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

# (step within the stage, active members [M] bool) -> per-member losses [M], their gradients left in .grad
LossAndGrad = Callable[[int, Tensor], Tensor]
Schedule = Callable[[int, float], Sequence[float]]  # (steps, peak lr) -> the lr of every step
Optimizer = Callable[[list[Tensor], float], torch.optim.Optimizer]  # (parameters, lr) -> a fresh optimiser


def constant(steps: int, lr: float) -> list[float]:
    """The same learning rate at every step."""
    return [lr] * steps


@dataclass(frozen=True)
class Stage:
    """``steps`` optimiser steps of ``loss_and_grad`` at rates ``schedule(steps, lr)``, from fresh moments."""

    name: str
    steps: int
    lr: float
    loss_and_grad: LossAndGrad
    schedule: Schedule = constant
    clip: float | None = None  # per-member gradient norm limit; None: no clipping
    clip_eps: float = 1e-6  # added to the norm before dividing (torch's clip_grad_norm_ value)


@dataclass(frozen=True)
class StepInfo:
    """What a hook sees after each step's loss, before the optimiser moves: ``losses`` of the weights now."""

    stage: Stage
    stage_index: int
    step: int  # within the stage
    global_step: int  # over all stages
    losses: Tensor  # [M], detached
    active: Tensor  # [M] bool: finite loss and not frozen


@dataclass
class LoopResult:
    """Per member: best loss of each stage (+inf if never finite) and the step it diverged at (-1: never)."""

    best: list[Tensor]  # one [M] per stage, float64
    diverged_at: Tensor  # [M] long: first global step with a non-finite loss
    frozen: Tensor  # [M] bool
    best_params: list[Tensor]  # the last stage's best weights, one per parameter
    steps: int
    stage_wall_s: list[float] = field(default_factory=list)


def adam(params: list[Tensor], lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, foreach=True)


def _may_hold(mask: Tensor) -> bool:
    """Whether any of ``mask`` may be set: checked on a CPU; assumed on an accelerator, where the check
    would stall the queue every step and doing the masked work anyway is cheaper."""
    return bool(mask.any()) if mask.device.type == "cpu" else True


def _view(mask: Tensor, p: Tensor) -> Tensor:
    return mask.view((-1,) + (1,) * (p.dim() - 1))


@torch.no_grad()
def restore_(params: Sequence[Tensor], saved: Sequence[Tensor], mask: Tensor) -> None:
    """params[m] = saved[m] for the members where ``mask`` holds, tensor by tensor."""
    for p, s in zip(params, saved, strict=True):
        p.copy_(torch.where(_view(mask, p), s, p))


@torch.no_grad()
def clip_per_member_(params: Sequence[Tensor], max_norm: float | None, skip: Tensor | None = None,
                     eps: float = 1e-6) -> Tensor | None:
    """Scale each member's gradient (leading dimension) to norm <= ``max_norm`` (None: no limit).

    A member in ``skip`` or with any non-finite gradient element gets a zero gradient. Returns each
    member's norm before clipping (zero for those; None without a limit, when no norm is computed).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(0)
    m = grads[0].shape[0]
    # Element by element: a huge but finite gradient (its square overflowing) is not a bad one.
    bad = torch.zeros(m, dtype=torch.bool, device=grads[0].device) if skip is None else skip
    for g in grads:
        bad = bad | ~torch.isfinite(g.reshape(m, -1)).all(1)
    if _may_hold(bad):
        for g in grads:
            g.copy_(torch.where(_view(bad, g), torch.zeros_like(g), g))
    if max_norm is None:
        return None
    norm = None
    for g in grads:
        sq = g.reshape(m, -1).square().sum(1)
        norm = sq if norm is None else norm + sq
    norm = norm.sqrt()
    # eps: a zero gradient stays zero, a tiny one is not blown up. A norm that overflows scales its
    # member to zero, as an infinite one would.
    scale = (max_norm / (norm + eps)).clamp(max=1.0)
    for g in grads:
        g.mul_(_view(scale, g))
    return norm


def backward_finite(losses: Tensor) -> Tensor:
    """Backpropagate the sum of the finite per-member ``losses``; returns them detached.

    Leaving the non-finite ones out of the sum keeps their NaNs out of every other member's gradient
    whatever the graph does in between (a sum's gradient is 1 for each term regardless).
    """
    torch.where(torch.isfinite(losses), losses, torch.zeros_like(losses)).sum().backward()
    return losses.detach()


def train(params: Sequence[Tensor], stages: Sequence[Stage], *, optimizer: Optimizer = adam,
          on_nonfinite: str = "freeze", check_every: int = 1, end_on_best: bool = False,
          hook: Callable[[StepInfo], None] | None = None) -> LoopResult:
    """Run ``stages`` in order on ``params`` (each ``[M, ...]``, member first), trained in place.

    Each stage starts a fresh optimiser (a warm restart). Best weights per member are kept from the
    steps whose global index is a multiple of ``check_every``; ``end_on_best`` puts every member on
    its stage's best weights when the stage ends (else only the frozen ones are there). ``hook`` sees
    every step (records, progress).
    """
    if on_nonfinite not in ("freeze", "skip"):
        raise ValueError(f"on_nonfinite must be 'freeze' or 'skip', got {on_nonfinite!r}")
    params = list(params)
    m = params[0].shape[0]
    if any(p.shape[0] != m for p in params):
        raise ValueError(f"every parameter must have the {m} members as its leading dimension")
    device = params[0].device
    frozen = torch.zeros(m, dtype=torch.bool, device=device)
    diverged_at = torch.full((m,), -1, dtype=torch.long, device=device)
    bests: list[Tensor] = []
    walls: list[float] = []
    snap = [p.detach().clone() for p in params]
    global_step = 0
    for index, stage in enumerate(stages):
        if stage.steps < 1:
            continue
        start = time.perf_counter()
        lrs = list(stage.schedule(stage.steps, stage.lr))
        opt = optimizer(params, lrs[0])
        best = torch.full((m,), float("inf"), dtype=torch.float64, device=device)
        snap = [p.detach().clone() for p in params]
        for k, lr in enumerate(lrs):
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=False)  # kept, not freed: a kernel may write into bound .grad storage
            losses = stage.loss_and_grad(k, ~frozen).detach()
            finite = torch.isfinite(losses)
            newly = ~finite & (diverged_at < 0)
            if _may_hold(newly):
                diverged_at = torch.where(newly, torch.full_like(diverged_at, global_step), diverged_at)
                if on_nonfinite == "freeze":
                    frozen = frozen | ~finite
            active = finite & ~frozen
            if global_step % check_every == 0:
                improved = active & (losses < best)
                best = torch.where(improved, losses.to(best.dtype), best)
                restore_(snap, params, improved)
            if hook is not None:
                hook(StepInfo(stage, index, k, global_step, losses, active))
            clip_per_member_(params, stage.clip, ~active, stage.clip_eps)
            opt.step()
            if _may_hold(frozen):  # the optimiser's moments and weight decay move even a zero-gradient member
                restore_(params, snap, frozen)
            global_step += 1
        if end_on_best:  # a member never checked finite goes back to where the stage began
            restore_(params, snap, torch.ones_like(frozen))
        bests.append(best)
        walls.append(time.perf_counter() - start)
    return LoopResult(bests, diverged_at, frozen, snap, global_step, walls)
