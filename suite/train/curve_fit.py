"""Fit gate ensembles to x_inf(V) and tau(V) curves, thousands of gates in one full-batch loop.

The total loss is the sum of per-gate losses and AdamW acts per element, so each gate follows
exactly the trajectory it would follow alone. The stages run in ``suite.train.loop``: a gate whose
loss stops being finite is frozen there (its loss leaves the sum, it is reported as diverged) and
ends on its best checked parameters with a finite loss; since nothing mixes gates, its NaNs cannot
reach the others, which go on.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from suite.train import fused_gates
from suite.train.loop import Stage, StepInfo, restore_, train
from suite.train.schedule import warmup_cosine

ERR1_TARGET = 0.05  # "a fit": ICG's err1 below this on both curves
SMALL_PROBLEM_WORK = 2**22  # parameters x grid points below which one thread is as fast (2-core CPU) and robust
RECOMPILE_LIMIT = 64  # compiled graphs of the loss step allowed per process (dynamo's default is 8)
CHUNK_WORK = 2**24  # parameters x grid points per CPU pass: ~230 neural 32x2 gates, the measured sweet spot


@dataclass(frozen=True)
class CurveFitConfig:
    """Training schedule and loss (defaults: the paper's 2 x 10,000 AdamW steps, warm-up then cosine)."""

    steps_per_stage: int = 10_000
    stages: int = 2
    lr: float = 1e-3
    warmup_fraction: float = 0.05
    final_lr_fraction: float = 0.0
    weight_decay: float = 1e-4
    loss: str = "paper"  # a key of LOSSES
    check_every: int = 100  # steps between convergence checks and parameter snapshots
    err1_threshold: float = ERR1_TARGET
    compile: bool = False  # torch.compile the loss step (falls back to eager if compiling fails)
    # torch intra-op threads during the fit; None: one thread for small problems, where more only add
    # synchronisation (and stall badly on a shared CPU), else torch's current setting.
    num_threads: int | None = None
    # Gates per forward/backward pass. Gates are independent, so splitting the batch changes no result,
    # only speed: None sizes chunks to the CPU's cache (about 230 neural gates; GPUs take all at once).
    gate_chunk: int | None = None
    # The fused C kernel (suite/train/fused_gates.py) for the forward and backward: None uses it where it can run
    # (tanh neural gates on the CPU with a C compiler), True asks for it (a warning if it cannot run), False keeps
    # torch. It replaces torch.compile and gate_chunk, which only shape the torch path.
    kernel: bool | None = None

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; known: {', '.join(LOSSES)}")
        for name in ("steps_per_stage", "stages", "check_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.gate_chunk is not None and self.gate_chunk < 1:
            raise ValueError(f"gate_chunk must be at least 1 (or None for automatic), got {self.gate_chunk}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be at least 1 (or None for automatic), got {self.num_threads}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")

    @property
    def total_steps(self) -> int:
        return self.steps_per_stage * self.stages


@dataclass
class Targets:
    """Target curves ``[G, N]`` and the per-gate scales every loss and metric needs, computed once."""

    inf: Tensor
    tau: Tensor
    std_inf: Tensor  # [G, 1], err1's denominator: population std over the grid (see err1_scale)
    std_tau: Tensor
    inv_scale_inf: Tensor  # [G, 1], 1 / max(std, 1): the paper's residual scaling
    inv_scale_tau: Tensor
    log_tau: Tensor

    @classmethod
    def of(cls, inf: Tensor, tau: Tensor) -> Targets:
        # maximum() keeps a NaN std NaN, so a poisoned target shows up as a non-finite loss.
        one = torch.ones_like(inf[:, :1])
        scale_inf = torch.maximum(inf.std(-1, correction=0, keepdim=True), one)
        scale_tau = torch.maximum(tau.std(-1, correction=0, keepdim=True), one)
        return cls(inf, tau, err1_scale(inf).unsqueeze(-1), err1_scale(tau).unsqueeze(-1), 1.0 / scale_inf,
                   1.0 / scale_tau, torch.log(tau))

    def rows(self, start: int, stop: int) -> Targets:
        """The targets of gates ``start:stop`` (views)."""
        return Targets(*(getattr(self, f.name)[start:stop] for f in fields(self)))


def paper_loss(inf: Tensor, tau: Tensor, t: Targets) -> Tensor:
    """Per gate: MSE(x_inf) + MSE(tau), each residual divided by max(std(target), 1)."""
    return ((inf - t.inf) * t.inv_scale_inf).square().mean(-1) + ((tau - t.tau) * t.inv_scale_tau).square().mean(-1)


def log_tau_loss(inf: Tensor, tau: Tensor, t: Targets) -> Tensor:
    """Per gate: scaled MSE(x_inf) + MSE(log tau), which weighs fast and slow time constants alike."""
    return ((inf - t.inf) * t.inv_scale_inf).square().mean(-1) + (torch.log(tau) - t.log_tau).square().mean(-1)


LOSSES: dict[str, Callable[[Tensor, Tensor, Targets], Tensor]] = {"paper": paper_loss, "log_tau": log_tau_loss}


FLAT_TARGET = 1e-6  # std below this fraction of the RMS: a flat curve, e.g. a constant tau


def err1_scale(target: Tensor) -> Tensor:
    """err1's denominator per gate: std(target) (ICG's), or RMS(target) where the target is flat.

    ICG's err1 = RMSE / std is undefined for a flat curve (ICG publishes null there); dividing by
    the RMS instead makes it err3's relative error, so a constant tau can still count as fitted.
    """
    std = target.std(-1, correction=0)
    rms = target.square().mean(-1).sqrt()
    return torch.where(std > FLAT_TARGET * rms, std, rms)


def curve_metrics(inf: Tensor, tau: Tensor, inf_target: Tensor, tau_target: Tensor) -> dict[str, Tensor]:
    """Per-gate plain MSE, ICG's err1 (RMSE / std(target); see err1_scale) and err3 (||target - fit|| / ||target||)."""
    out: dict[str, Tensor] = {}
    for name, fit, target in (("inf", inf, inf_target), ("tau", tau, tau_target)):
        diff = fit - target
        mse = diff.square().mean(-1)
        out[f"mse_{name}"] = mse
        out[f"err1_{name}"] = mse.sqrt() / err1_scale(target)
        out[f"err3_{name}"] = diff.norm(dim=-1) / target.norm(dim=-1)
    return out


@dataclass
class CurveFitResult:
    """Per-gate outcome of a fit; tensors on CPU, one entry per gate of the ensemble."""

    loss: Tensor  # [G] final training loss
    diverged: Tensor  # [G] bool
    diverged_step: Tensor  # [G] step at which the gate was frozen, -1 if never
    steps_to_err1: Tensor  # [G] first checked step with err1 < threshold on both curves, -1 if never
    metrics: dict[str, Tensor]  # mse_inf, mse_tau, err1_inf, err1_tau, err3_inf, err3_tau, each [G]
    inf_fit: Tensor  # [G, N]
    tau_fit: Tensor  # [G, N] (ms)
    check_steps: Tensor  # [C] steps at which the loss was recorded
    loss_history: Tensor  # [C, G]
    steps: int
    wall_s: float
    compiled: bool  # torch.compile ran the loss step
    backend: str = "torch"  # what computed the gradients: "kernel", "torch" (eager) or "torch-compiled"

    @property
    def status(self) -> list[str]:
        return ["diverged" if d else "ok" for d in self.diverged.tolist()]

    def columns(self) -> dict[str, np.ndarray]:
        """Per-gate scalar columns for a tidy table (``pandas.DataFrame(result.columns())``)."""
        cols = {"loss": self.loss, "diverged_step": self.diverged_step, "steps_to_err1": self.steps_to_err1,
                **self.metrics}
        out = {k: v.numpy() for k, v in cols.items()}
        out["status"] = np.array(self.status, dtype=object)
        return out


def repeat_for_seeds(inf: Tensor, tau: Tensor, seeds: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Targets repeated gate-major for ``seeds`` copies each: (inf, tau, gate_index, seed_index), G * seeds rows."""
    g = inf.shape[0]
    gate_index = torch.arange(g, device=inf.device).repeat_interleave(seeds)
    seed_index = torch.arange(seeds, device=inf.device).repeat(g)
    return inf.repeat_interleave(seeds, 0), tau.repeat_interleave(seeds, 0), gate_index, seed_index


def best_per_group(score: Tensor, group: Tensor, n_groups: int) -> Tensor:
    """Index of the lowest finite ``score`` within each group (e.g. best seed or best supermodel per gate).

    Non-finite scores count as +inf; a group with none finite points at its first member.
    """
    s = torch.where(torch.isfinite(score), score, torch.full_like(score, float("inf")))
    best = torch.full((n_groups,), float("inf"), dtype=s.dtype, device=s.device).scatter_reduce(
        0, group, s, reduce="amin")
    is_best = s == best[group]
    # Among ties (or all-inf groups) keep the first member: the smallest index with is_best.
    candidate = torch.where(is_best, torch.arange(s.numel(), device=s.device), torch.full_like(group, s.numel()))
    first = torch.full((n_groups,), s.numel(), dtype=torch.long, device=s.device).scatter_reduce(
        0, group, candidate, reduce="amin")
    return first


class _LossStep(nn.Module):
    """Forward pass, per-gate loss and the still-finite mask; a module so ``torch.compile`` sees one graph.

    ``params`` (name -> tensor), when given, replaces the model's own parameters: how a chunk of
    gates runs on slices of the stacked weights.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable[[Tensor, Tensor, Targets], Tensor]) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, v: Tensor, targets: Targets, active: Tensor,
                params: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        inf, tau = self.model(v) if params is None else functional_call(self.model, params, (v,))
        per_gate = self.loss_fn(inf, tau, targets)
        # The sum's gradient is 1 for every gate whatever its value, so a NaN gate cannot reach another
        # gate's gradient; zeroing it only keeps the total readable.
        total = torch.where(active, per_gate, torch.zeros_like(per_gate)).sum()
        return total, per_gate.detach(), inf.detach(), tau.detach(), active & torch.isfinite(per_gate)


class _Stepper:
    """Runs the loss step compiled when asked and possible, else eagerly.

    Compilation is lazy (the backward graph may only compile when first used), so the first
    compiled call also runs a throw-away backward; any failure there means: fit eagerly.
    """

    def __init__(self, step: _LossStep, compile_it: bool) -> None:
        self.eager = step
        self.compiled = None
        if compile_it:
            _allow_recompiles()
            self.compiled = torch.compile(step, dynamic=False)
        self._tried = False

    def __call__(self, v: Tensor, targets: Targets, active: Tensor,
                 params: dict[str, Tensor] | None = None) -> tuple[Tensor, ...]:
        if self.compiled is not None:
            try:
                if not self._tried:
                    # A throw-away forward and backward: the backward graph compiles here, and a
                    # compiled backward with donated buffers cannot be run twice on one graph.
                    inputs = list(params.values()) if params else [p for p in self.eager.parameters()
                                                                  if p.requires_grad]
                    probe = self.compiled(v, targets, active, params)
                    torch.autograd.grad(probe[0], inputs, allow_unused=True)
                    self._tried = True
                return self.compiled(v, targets, active, params)
            except Exception as e:  # noqa: BLE001 - any backend failure means: run eagerly
                warnings.warn(f"torch.compile failed, fitting eagerly: {type(e).__name__}: {e}", stacklevel=2)
                self.compiled = None
        return self.eager(v, targets, active, params)


def _allow_recompiles(at_least: int = RECOMPILE_LIMIT) -> None:
    """Every (model kind, chunk shape, dtype, thread count) is its own graph of the one loss step; past
    dynamo's default of 8 per function it would silently run eagerly, so raise the process-wide limit."""
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit"):  # the name changed in torch 2.6
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), at_least))
            return


class _Gradients:
    """Per-gate losses of all gates and their gradients in ``p.grad``, one chunk of gates at a time.

    On a CPU a chunk's activations then stay in cache (measured: ~1.5x faster than one 1,024-gate
    pass); each chunk runs on slices of the stacked weights, its gradients copied into place.
    """

    def __init__(self, model: nn.Module, v: Tensor, targets: Targets, config: CurveFitConfig) -> None:
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.stepper = _Stepper(_LossStep(model, LOSSES[config.loss]), config.compile)
        size = v.shape[0]
        per_gate_work = sum(p[0].numel() for _, p in self.named) * v.shape[1]
        chunk = config.gate_chunk or (max(1, CHUNK_WORK // per_gate_work) if v.device.type == "cpu" else size)
        n_chunks = -(-size // chunk)
        even = -(-size // n_chunks)  # equal chunks: at most two distinct shapes to compile
        self.bounds = [(a, min(a + even, size)) for a in range(0, size, even)]
        self.v, self.targets = v, targets
        self.chunks = [(v[a:b], targets.rows(a, b)) for a, b in self.bounds]

    @property
    def compiled(self) -> bool:
        return self.stepper.compiled is not None

    @property
    def backend(self) -> str:
        return "torch-compiled" if self.compiled else "torch"

    def __call__(self, active: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(per-gate loss, x_inf, tau, still-finite mask), all gates; gradients left in ``p.grad``."""
        if len(self.bounds) == 1:
            total, per_gate, inf, tau, active = self.stepper(self.v, self.targets, active)
            for _, p in self.named:
                p.grad = None
            total.backward()
            return per_gate, inf, tau, active
        outs = []
        for (a, b), (v, targets) in zip(self.bounds, self.chunks, strict=True):
            leaves = {n: p.detach()[a:b].requires_grad_() for n, p in self.named}
            total, *rest = self.stepper(v, targets, active[a:b], leaves)
            total.backward()
            for n, p in self.named:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                p.grad[a:b].copy_(leaves[n].grad)
            outs.append(rest)
        per_gate, inf, tau, active = (torch.cat(parts) for parts in zip(*outs, strict=True))
        return per_gate, inf, tau, active


class _KernelGradients:
    """``_Gradients`` computed by the fused C kernel, one gate at a time in cache (suite/train/fused_gates.py)."""

    compiled = False
    backend = "kernel"

    def __init__(self, model: nn.Module, v: Tensor, targets: Targets, config: CurveFitConfig) -> None:
        self.fused = fused_gates.FusedGateLoss(model, v, targets, config.loss)

    def __call__(self, active: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        per_gate, inf, tau = self.fused(active)
        return per_gate, inf, tau, active & torch.isfinite(per_gate)


def _gradients(model: nn.Module, v: Tensor, targets: Targets, config: CurveFitConfig) -> _Gradients | _KernelGradients:
    """The kernel where the config allows it and it can run, else torch (the reference, and the GPU path)."""
    if config.kernel is not False:
        why = fused_gates.unsupported(model, config.loss)
        if why is None:
            return _KernelGradients(model, v, targets, config)
        if config.kernel:
            warnings.warn(f"the fused gate kernel cannot run ({why}); fitting with torch", stacklevel=3)
    return _Gradients(model, v, targets, config)


def _adamw(params: list[nn.Parameter], config: CurveFitConfig, lr: float) -> torch.optim.Optimizer:
    """AdamW, fused (one kernel per tensor) where the device supports it, else foreach."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay, foreach=True)


def fit_curves(model: nn.Module, v_grid: Tensor, inf_target: Tensor, tau_target: Tensor,
               config: CurveFitConfig | None = None) -> CurveFitResult:
    """Fit every gate of ``model`` to its row of ``inf_target``/``tau_target`` (``[G, N]`` on ``v_grid`` ``[N]`` mV).

    The model's parameters are trained in place; a diverged gate is left at its last checked
    parameters with a finite loss. Gradients come from the fused C kernel where ``config.kernel`` allows
    and it can run (tanh neural gates on the CPU), else from torch; ``result.backend`` says which.
    """
    config = config or CurveFitConfig()
    params = [p for p in model.parameters() if p.requires_grad]
    device, dtype = params[0].device, params[0].dtype
    size = inf_target.shape[0]
    if inf_target.shape != tau_target.shape or inf_target.dim() != 2 or inf_target.shape[1] != v_grid.numel():
        raise ValueError(f"targets must both be [G, {v_grid.numel()}], got {tuple(inf_target.shape)} "
                         f"and {tuple(tau_target.shape)}")
    if any(p.shape[0] != size for p in params):
        raise ValueError(f"every parameter must have the {size} gates as its leading dimension")
    threads_before = torch.get_num_threads()
    work = sum(p.numel() for p in params) * v_grid.numel()
    threads = config.num_threads or (1 if work < SMALL_PROBLEM_WORK else threads_before)
    if threads != threads_before:
        torch.set_num_threads(threads)
    try:
        return _fit(model, params, v_grid.to(device, dtype).expand(size, -1),
                    Targets.of(inf_target.to(device, dtype), tau_target.to(device, dtype)), config)
    finally:
        if threads != threads_before:
            torch.set_num_threads(threads_before)


def _fit(model: nn.Module, params: list[nn.Parameter], v: Tensor, targets: Targets,
         config: CurveFitConfig) -> CurveFitResult:
    size, device = v.shape[0], v.device
    gradients = _gradients(model, v, targets, config)
    reached = torch.full((size,), -1, dtype=torch.long, device=device)
    check_steps: list[int] = []
    history: list[Tensor] = []
    last: dict[str, Tensor] = {}

    def loss_and_grad(_: int, active: Tensor) -> Tensor:
        per_gate, last["inf"], last["tau"], _finite = gradients(active)
        return per_gate

    def record(info: StepInfo) -> None:
        nonlocal reached
        if info.global_step % config.check_every == 0:
            reached = _record(reached, info.global_step, last["inf"], last["tau"], targets, config.err1_threshold)
            check_steps.append(info.global_step)
            history.append(info.losses)

    schedule = lambda n, lr: warmup_cosine(n, lr, round(config.warmup_fraction * n),  # noqa: E731
                                           config.final_lr_fraction * lr)
    # Each stage is a warm restart: fresh moments, warm-up again. Parameters are kept every check_every
    # steps, so a gate that diverges goes back to its best checked parameters.
    stages = [Stage(f"stage_{i}", config.steps_per_stage, config.lr, loss_and_grad, schedule)
              for i in range(config.stages)]
    start = time.perf_counter()
    out = train(params, stages, optimizer=lambda ps, lr: _adamw(ps, config, lr), check_every=config.check_every,
                hook=record)
    wall = time.perf_counter() - start
    step = out.steps

    with torch.no_grad():
        inf, tau = model(v)
        per_gate = LOSSES[config.loss](inf, tau, targets)
        active = ~out.frozen & torch.isfinite(per_gate)
        # A gate that went non-finite on the last step also goes back to its best checked parameters.
        restore_(params, out.best_params, ~active)
        inf, tau = model(v)
        per_gate = LOSSES[config.loss](inf, tau, targets)
        reached = _record(reached, step, inf, tau, targets, config.err1_threshold)
        metrics = curve_metrics(inf, tau, targets.inf, targets.tau)
    diverged_step = torch.where(out.frozen, out.diverged_at, torch.full_like(out.diverged_at, step))
    check_steps.append(step)
    history.append(per_gate)
    cpu = {"device": "cpu"}
    return CurveFitResult(
        loss=per_gate.to(**cpu), diverged=(~active).to(**cpu),
        diverged_step=torch.where(active, torch.full_like(diverged_step, -1), diverged_step).to(**cpu),
        steps_to_err1=reached.to(**cpu), metrics={k: m.to(**cpu) for k, m in metrics.items()},
        inf_fit=inf.to(**cpu), tau_fit=tau.to(**cpu), check_steps=torch.tensor(check_steps),
        loss_history=torch.stack(history).to(**cpu), steps=step, wall_s=wall, compiled=gradients.compiled,
        backend=gradients.backend)


def _record(reached: Tensor, step: int, inf: Tensor, tau: Tensor, t: Targets, threshold: float) -> Tensor:
    """First step at which both curves reach err1 < threshold (ICG's RMSE / std(target))."""
    err1_inf = (inf - t.inf).square().mean(-1).sqrt() / t.std_inf[:, 0]
    err1_tau = (tau - t.tau).square().mean(-1).sqrt() / t.std_tau[:, 0]
    now = (reached < 0) & (err1_inf < threshold) & (err1_tau < threshold)
    return torch.where(now, torch.full_like(reached, step), reached)
