"""Gate ensembles: G independent gates in one module, ``forward(v [G, N] mV) -> (x_inf, tau ms)``.

Models are chosen by name from ``MODELS`` ("node", "sm1".."sm5", "boltzmann_bell"); every factory
has the same signature, so an experiment can loop over kinds without knowing which needs data.
Every parameter of an ensemble has the gate as its leading dimension: gates never mix.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from suite.gates.expert import EXPERT_KINDS, ExpertGateEnsemble
from suite.gates.neural import ACTIVATIONS, NeuralGateEnsemble, scaled_voltage


class GateEnsemble(Protocol):
    """What training and evaluation rely on: a module of ``size`` gates mapping V to (x_inf, tau)."""

    size: int

    def __call__(self, v: Tensor) -> tuple[Tensor, Tensor]: ...

    def parameters(self) -> Any: ...


def _node(size: int, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
          seed: int | torch.Generator | None = 0, inf_target: Tensor | None = None,
          tau_target: Tensor | None = None, v_grid: Tensor | None = None, **arch: Any) -> NeuralGateEnsemble:
    del inf_target, tau_target, v_grid  # the neural gate starts from its own random init
    return NeuralGateEnsemble(size, device=device, dtype=dtype, seed=seed, **arch)


def _expert(kind: str) -> Callable[..., ExpertGateEnsemble]:
    def factory(size: int, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                seed: int | torch.Generator | None = 0, inf_target: Tensor | None = None,
                tau_target: Tensor | None = None, v_grid: Tensor | None = None, **arch: Any) -> ExpertGateEnsemble:
        if inf_target is None or tau_target is None or v_grid is None:
            raise ValueError(f"model kind {kind!r} starts from the data: give inf_target, tau_target and v_grid")
        if inf_target.shape[0] != size:
            raise ValueError(f"model kind {kind!r}: size {size} but targets hold {inf_target.shape[0]} gates")
        return ExpertGateEnsemble(kind, inf_target, tau_target, v_grid, device=device, dtype=dtype, seed=seed,
                                  **arch)

    return factory


MODELS: dict[str, Callable[..., nn.Module]] = {"node": _node, **{kind: _expert(kind) for kind in EXPERT_KINDS}}
SUPERMODEL_KINDS: tuple[str, ...] = ("sm1", "sm2", "sm3", "sm4", "sm5")


def make_model(kind: str, size: int, inf_target: Tensor | None = None, tau_target: Tensor | None = None,
               v_grid: Tensor | None = None, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
               seed: int | torch.Generator | None = 0, **arch: Any) -> nn.Module:
    """An ensemble of ``size`` gates of model ``kind``; ``arch`` goes to the model (width, depth, ...)."""
    try:
        factory = MODELS[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(MODELS)}") from None
    return factory(size, device=device, dtype=dtype, seed=seed, inf_target=inf_target, tau_target=tau_target,
                   v_grid=v_grid, **arch)


def select_gates(model: nn.Module, index: Tensor | list[int]) -> nn.Module:
    """A new ensemble holding copies of the gates ``index`` of ``model`` (same kind, same weights)."""
    idx = torch.as_tensor(index, dtype=torch.long)
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(p.detach()[idx.to(p.device)].clone(), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = b[idx.to(b.device)].clone()
    new = copy.deepcopy(model, memo)
    new.size = int(idx.numel())
    return new


__all__ = [
    "ACTIVATIONS",
    "EXPERT_KINDS",
    "MODELS",
    "SUPERMODEL_KINDS",
    "ExpertGateEnsemble",
    "GateEnsemble",
    "NeuralGateEnsemble",
    "make_model",
    "scaled_voltage",
    "select_gates",
]
