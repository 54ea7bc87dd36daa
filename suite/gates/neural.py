"""The neural gate (PAPER.md): x_inf = sigmoid(o1), tau = exp(o2), (o1, o2) = MLP(u), as an ensemble.

One module holds G independent MLPs as stacked weights (``[G, in, out]``) and runs them with
batched matmuls, so thousands of gates train in one pass; gate i of the ensemble computes
exactly what a one-gate ensemble with gate i's weights computes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "silu": F.silu,
    "gelu": F.gelu,
    "relu": F.relu,
    "softplus": F.softplus,
}

# u = 2 (V + 80) / 140 - 1 maps [-80, 60] mV onto [-1, 1] (the paper's input scaling).
V_CENTER_MV = -10.0
V_HALF_RANGE_MV = 70.0
LAST_LAYER_INIT_STD = 0.1
LAYER_NORM_EPS = 1e-5


def scaled_voltage(v: Tensor) -> Tensor:
    """The network's input u = 2 (V + 80) / 140 - 1 for V in mV."""
    return (v - V_CENTER_MV) / V_HALF_RANGE_MV


def make_generator(seed: int | torch.Generator | None) -> torch.Generator:
    """A CPU generator: initial weights are drawn on CPU so a seed means the same weights on any device."""
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator()
    g.manual_seed(0 if seed is None else int(seed))
    return g


class NeuralGateEnsemble(nn.Module):
    """G independent neural gates: ``forward(v [G, N] mV) -> (x_inf [G, N], tau [G, N] ms)``.

    Hidden layers are Linear -> LayerNorm (per-gate affine) -> activation; the last layer maps to
    (o1, o2) and starts with weights ~ N(0, 0.1^2) and zero bias, so every gate starts near
    x_inf = 0.5, tau = 1 ms. Other layers use PyTorch's Linear default init.
    """

    def __init__(self, size: int, width: int = 32, depth: int = 2, activation: str = "tanh",
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 seed: int | torch.Generator | None = 0) -> None:
        super().__init__()
        if size < 1 or width < 1 or depth < 1:
            raise ValueError(f"size, width and depth must be positive, got {size}, {width}, {depth}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {', '.join(sorted(ACTIVATIONS))}")
        self.size, self.width, self.depth, self.activation = size, width, depth, activation
        self._act = ACTIVATIONS[activation]
        gen = make_generator(seed)
        dims = [1] + [width] * depth
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.ln_weights = nn.ParameterList()
        self.ln_biases = nn.ParameterList()
        for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            self.weights.append(_param(_uniform((size, fan_in, fan_out), bound, gen), device, dtype))
            self.biases.append(_param(_uniform((size, 1, fan_out), bound, gen), device, dtype))
            self.ln_weights.append(_param(torch.ones(size, 1, fan_out), device, dtype))
            self.ln_biases.append(_param(torch.zeros(size, 1, fan_out), device, dtype))
        self.out_weight = _param(torch.randn(size, width, 2, generator=gen) * LAST_LAYER_INIT_STD, device, dtype)
        self.out_bias = _param(torch.zeros(size, 1, 2), device, dtype)

    def outputs(self, v: Tensor) -> Tensor:
        """The raw network outputs (o1, o2), ``[G, N, 2]``."""
        u = scaled_voltage(v).unsqueeze(-1)  # [G, N, 1]
        h = u
        for i, (w, b, g, beta) in enumerate(
            zip(self.weights, self.biases, self.ln_weights, self.ln_biases, strict=True)
        ):
            # The first layer has one input: a broadcast product is cheaper than a matmul.
            h = u * w + b if i == 0 else torch.baddbmm(b, h, w)
            h = F.layer_norm(h, (h.shape[-1],), eps=LAYER_NORM_EPS) * g + beta
            h = self._act(h)
        return torch.baddbmm(self.out_bias, h, self.out_weight)

    def forward(self, v: Tensor) -> tuple[Tensor, Tensor]:
        o = self.outputs(v)
        return torch.sigmoid(o[..., 0]), torch.exp(o[..., 1])

    def extra_repr(self) -> str:
        return f"size={self.size}, width={self.width}, depth={self.depth}, activation={self.activation!r}"


def _uniform(shape: tuple[int, ...], bound: float, gen: torch.Generator) -> Tensor:
    return (torch.rand(shape, generator=gen) * 2.0 - 1.0) * bound


def _param(t: Tensor, device: torch.device | str, dtype: torch.dtype) -> nn.Parameter:
    return nn.Parameter(t.to(device=device, dtype=dtype))
