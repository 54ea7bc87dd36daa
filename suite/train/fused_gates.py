"""A compiled forward + backward for tanh neural gate ensembles: per-gate loss and every parameter's gradient.

Batched torch spends the zoo fit on memory-bound passes over ``[G, 56, W]`` tensors. This kernel runs one
gate at a time entirely in cache (56 points x W units: a few tens of KB), as small register-blocked matrix
products in GCC/Clang vector extensions, parallel over gates with OpenMP (``suite/native/gates.c``, built
once per dtype, float32 and float64, by ``suite.native``); without a compiler ``load()`` returns None and
the fit stays on torch. The optimiser stays in torch: the kernel only fills
``p.grad``, in the parameters' own layout.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from suite.gates.neural import NeuralGateEnsemble, scaled_voltage
from suite.native import GatesArgs, args, library

if TYPE_CHECKING:
    from suite.train.curve_fit import Targets

LOSS_CODES = {"paper": 0, "log_tau": 1}

ENTRY_POINTS = {torch.float32: "hb_gates_f32", torch.float64: "hb_gates_f64"}


def load(dtype: torch.dtype) -> ctypes.CDLL | None:
    """The compiled library if it has a kernel for ``dtype`` (float32, float64), else None (also without a
    compiler or with $HYBRIDBENCH_NO_NATIVE set)."""
    return library() if dtype in ENTRY_POINTS else None


def unsupported(model: torch.nn.Module, loss: str) -> str | None:
    """Why the kernel cannot fit ``model`` with ``loss`` (the caller falls back to torch), or None if it can."""
    if not isinstance(model, NeuralGateEnsemble):
        return f"{type(model).__name__} is not a NeuralGateEnsemble"
    if model.activation != "tanh":
        return f"activation {model.activation!r} (the kernel knows tanh)"
    if loss not in LOSS_CODES:
        return f"loss {loss!r} (the kernel knows {', '.join(LOSS_CODES)})"
    params = list(model.parameters())
    if any(p.device.type != "cpu" for p in params):
        return "parameters not on the CPU"
    if len({p.dtype for p in params}) != 1 or params[0].dtype not in ENTRY_POINTS:
        return f"dtype {params[0].dtype} (the kernel knows float32 and float64)"
    if not all(p.requires_grad and p.is_contiguous() for p in params):
        return "frozen or non-contiguous parameters"
    if load(params[0].dtype) is None:
        return "no C compiler (or HYBRIDBENCH_NO_NATIVE is set)"
    return None


class FusedGateLoss:
    """The kernel bound to one model and its targets: ``self(active) -> (per-gate loss, x_inf, tau)``, with the
    gradient of the active gates' summed loss in each ``p.grad`` (zero for inactive gates).

    ``v`` is ``[G, N]`` mV (an expanded ``[N]`` grid is passed once, not G times). The parameter objects are taken
    here and the C arguments built once; their storage and ``.grad`` tensors are checked on every call, so an
    optimiser or ``p.grad = None`` in between is safe.
    """

    def __init__(self, model: NeuralGateEnsemble, v: Tensor, targets: Targets, loss: str) -> None:
        why = unsupported(model, loss)
        if why is not None:
            raise ValueError(f"the fused gate kernel cannot run this model: {why}")
        if v.dim() != 2 or v.shape[0] != model.size or targets.inf.shape != v.shape:
            raise ValueError(f"v and the targets must both be [{model.size}, N] for {model.size} gates, got "
                             f"{tuple(v.shape)} and {tuple(targets.inf.shape)}")
        self.dtype = model.out_weight.dtype
        self.lib = load(self.dtype)
        self.size, self.n_points = v.shape
        shared_grid = v.stride(0) == 0
        cast = {"dtype": self.dtype, "device": "cpu"}
        u = scaled_voltage((v[:1] if shared_grid else v).to(**cast)).contiguous()
        self._inputs = [u] + [getattr(targets, f).to(**cast).contiguous() for f in
                              ("inf", "tau", "log_tau", "inv_scale_inf", "inv_scale_tau")]
        self._u_stride = 0 if shared_grid else self.n_points
        # Per layer lists (weights, biases, LayerNorm weights and biases), then the output layer's two tensors.
        self._groups = [list(model.weights), list(model.biases), list(model.ln_weights), list(model.ln_biases),
                        [model.out_weight], [model.out_bias]]
        self._flat = [p for group in self._groups for p in group]
        self._head = {"G": self.size, "N": self.n_points, "W": model.width, "D": model.depth,
                      "loss_kind": LOSS_CODES[loss]}
        self._entry = getattr(self.lib, ENTRY_POINTS[self.dtype])
        self._bound: list[tuple[int, Tensor | None]] = []
        self._pointers: dict[str, object] = {}

    def _bind(self) -> None:
        """(Re)build the parameter and gradient pointer arguments when a storage or a ``.grad`` changed."""
        if self._bound and all(p.data_ptr() == ptr and p.grad is grad
                               for p, (ptr, grad) in zip(self._flat, self._bound, strict=True)):
            return
        for p in self._flat:
            g = p.grad
            if g is None or g.shape != p.shape or g.dtype != p.dtype or not g.is_contiguous():
                p.grad = torch.zeros_like(p, memory_format=torch.contiguous_format)
        self._bound = [(p.data_ptr(), p.grad) for p in self._flat]

        def table(group: list[Tensor]) -> ctypes.Array:  # per-layer pointers
            return (ctypes.c_void_p * len(group))(*(t.data_ptr() for t in group))

        self._pointers = {}
        for name, group in zip(("w", "b", "lg", "lb", "wo", "bo"), self._groups, strict=True):
            grads = [p.grad for p in group]
            if name in ("wo", "bo"):  # the output layer: one tensor each
                self._pointers[name], self._pointers["g" + name] = group[0], grads[0]
            else:
                self._pointers[name], self._pointers["g" + name] = table(group), table(grads)

    def __call__(self, active: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        self._bind()
        active = active.to(device="cpu", dtype=torch.bool).contiguous()
        loss = torch.empty(self.size, dtype=self.dtype)
        inf = torch.empty(self.size, self.n_points, dtype=self.dtype)
        tau = torch.empty_like(inf)
        u, t_inf, t_tau, t_log, s_inf, s_tau = self._inputs
        failed = self._entry(args(
            GatesArgs, **self._head, threads=torch.get_num_threads(), u=u, u_stride=self._u_stride, t_inf=t_inf,
            t_tau=t_tau, t_logtau=t_log, s_inf=s_inf, s_tau=s_tau, active=active, **self._pointers, loss=loss,
            inf=inf, tau=tau))
        if failed:
            raise MemoryError("the fused gate kernel could not allocate its scratch memory")
        return loss, inf, tau


def gate_loss_and_grad(model: NeuralGateEnsemble, v_grid: Tensor, targets: Targets, loss_name: str,
                       active: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One call of the kernel: (per-gate loss, x_inf, tau), gradients in ``p.grad``; ``v_grid`` ``[N]`` or
    ``[G, N]`` mV. Binding costs a little: a training loop keeps one ``FusedGateLoss`` instead."""
    v = v_grid.expand(model.size, -1) if v_grid.dim() == 1 else v_grid
    return FusedGateLoss(model, v, targets, loss_name)(active)
