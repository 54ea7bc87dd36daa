"""The reduced cell: the soma alone with its channels, plus a learned axial current (PAPER.md, experiment 3).

    C dV/dt = -I_ion(V, x) + s I_stim(t) + I_ax(V, z),    dz/dt = f(V, z),    (I_ax, f) = MLP([V, z])

An ensemble: M independent hybrids (different seeds, latent counts) share one module, with their
MLPs stacked as ``[M, in, out]`` weights, so a sweep trains in one batched pass. A model with fewer
latents than the ensemble's widest is the same model with its extra latents masked to zero. The
step is NEURON's: V linearly implicit in the ionic conductance (I_ax explicit), gates exponential
Euler at the new V, z explicit Euler.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from channelzoo.channel import Channel
from suite.gates.neural import (
    ACTIVATIONS,
    LAYER_NORM_EPS,
    V_CENTER_MV,
    V_HALF_RANGE_MV,
    make_generator,
    scaled_voltage,
)
from suite.sim import native
from suite.sim.membrane import Membrane
from suite.sim.tables import channel_layout, gate_table

MEMBRANE_TO_NA = 1e-2  # (S/cm2 or mA/cm2) * um2 -> uS or nA
CAP_TO_NA = 1e-5  # uF/cm2 * um2 -> nA ms/mV
AXIAL_SCALE_NA = 0.1  # the network's first output is I_ax in units of 0.1 nA
LATENT_RATE_PER_MS = 1.0  # its other outputs are dz/dt in 1/ms
LAST_LAYER_INIT_STD = 0.1
ACTIVATION_CODES = {"tanh": 0, "silu": 1}  # the activations the compiled kernel knows


@dataclass
class ReducedTrace:
    """Voltages ``[M, T+1]`` mV, axial currents ``[M, T]`` nA and latents ``[M, T+1, Z]``."""

    v: Tensor
    i_axial: Tensor
    z: Tensor


class AxialODE(nn.Module):
    """M stacked MLPs ``[u(V), z] -> [I_ax / 0.1 nA, dz/dt ms]``, LayerNorm after each hidden layer."""

    def __init__(self, n_latents: Sequence[int], width: int = 64, depth: int = 2, activation: str = "tanh",
                 seeds: Sequence[int] | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, z_max: int = 1) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {', '.join(sorted(ACTIVATIONS))}")
        self.n_latents = tuple(int(k) for k in n_latents)
        # z_max: the latent slots of every model (at least its widest; a saved member keeps its ensemble's)
        m, self.z_max = len(self.n_latents), max(1, z_max, max(self.n_latents))
        self.width, self.depth, self.activation = width, depth, activation
        self._act = ACTIVATIONS[activation]
        seeds = list(seeds) if seeds is not None else list(range(m))
        dims = [1 + self.z_max] + [width] * depth + [1 + self.z_max]
        weights, biases = [], []
        for seed in seeds:  # each model from its own seed: model i is the same whatever the ensemble
            gen = make_generator(seed)
            w_m, b_m = [], []
            for k, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
                if k == len(dims) - 2:
                    w_m.append(torch.randn(fan_in, fan_out, generator=gen) * LAST_LAYER_INIT_STD)
                    b_m.append(torch.zeros(1, fan_out))
                else:
                    bound = 1.0 / math.sqrt(fan_in)
                    w_m.append((torch.rand(fan_in, fan_out, generator=gen) * 2 - 1) * bound)
                    b_m.append((torch.rand(1, fan_out, generator=gen) * 2 - 1) * bound)
            weights.append(w_m)
            biases.append(b_m)
        as_t = {"device": device, "dtype": dtype}
        self.weights = nn.ParameterList(nn.Parameter(torch.stack([w[k] for w in weights]).to(**as_t))
                                        for k in range(len(dims) - 1))
        self.biases = nn.ParameterList(nn.Parameter(torch.stack([b[k] for b in biases]).to(**as_t))
                                       for k in range(len(dims) - 1))
        self.ln_weights = nn.ParameterList(nn.Parameter(torch.ones(m, 1, width, **as_t)) for _ in range(depth))
        self.ln_biases = nn.ParameterList(nn.Parameter(torch.zeros(m, 1, width, **as_t)) for _ in range(depth))
        mask = torch.zeros(m, 1, self.z_max, **as_t)
        for i, k in enumerate(self.n_latents):
            mask[i, :, :k] = 1.0
        self.register_buffer("latent_mask", mask)

    @property
    def size(self) -> int:
        return len(self.n_latents)

    def forward(self, v: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """``v`` ``[M, B]`` mV, ``z`` ``[M, B, Z]`` -> (I_ax ``[M, B]`` nA, dz/dt ``[M, B, Z]`` 1/ms)."""
        h = torch.cat([scaled_voltage(v).unsqueeze(-1), z * self.latent_mask], dim=-1)
        n = len(self.weights)
        for k in range(n):
            h = torch.baddbmm(self.biases[k], h, self.weights[k])
            if k < n - 1:
                h = self._act(F.layer_norm(h, (h.shape[-1],), eps=LAYER_NORM_EPS) * self.ln_weights[k]
                              + self.ln_biases[k])
        return h[..., 0] * AXIAL_SCALE_NA, h[..., 1:] * (LATENT_RATE_PER_MS * self.latent_mask)


class ReducedSoma(nn.Module):
    """M hybrids sharing a soma (``area`` um2, ``capacitance`` uF/cm2, ``channels``), each with its own
    axial ODE and stimulus scale ``s`` (trainable, nA per nA of the full cell's stimulus)."""

    def __init__(self, channels: Sequence[Channel], area_um2: float, axial: AxialODE, stim_scale: float,
                 capacitance: float = 1.0, temperature: float | None = None, batch: int = 1) -> None:
        super().__init__()
        self.axial = axial
        self.channels = tuple(channels)
        self.area_um2 = float(area_um2)
        self.capacitance = float(capacitance)
        self.temperature = temperature
        self.batch = batch
        p = next(axial.parameters())
        self.membrane = Membrane(self.channels, n_sites=axial.size * batch, device=p.device, dtype=p.dtype,
                                 temperature=temperature)
        self.stim_scale = nn.Parameter(torch.full((axial.size,), float(stim_scale), device=p.device, dtype=p.dtype))

    def fused_table(self, dt: float) -> tuple[float, float, np.ndarray]:
        """The soma's gate table for the compiled kernel at ``dt`` (built once per dt)."""
        cache = self.__dict__.setdefault("_table_cache", {})
        if dt not in cache:
            cache[dt] = gate_table(self.channels, dt, self.temperature)
        return cache[dt]

    @property
    def cap_nA(self) -> float:  # noqa: N802 - unit name
        return self.capacitance * self.area_um2 * CAP_TO_NA

    def ionic(self, x: Tensor, m: int, b: int) -> tuple[Tensor, Tensor]:
        """Membrane conductance (uS) and g E (nA) of the soma, ``[M, B]`` each."""
        g_total, g_e = self.membrane.conductance_terms(x)
        scale = self.area_um2 * MEMBRANE_TO_NA
        return g_total.reshape(m, b) * scale, g_e.reshape(m, b) * scale

    def simulate(self, stim: Tensor, dt: float, v0: float = -70.0, v_clamp: Tensor | None = None,
                 keep: bool = True) -> ReducedTrace:
        """Run ``stim`` ``[T]`` or ``[B, T]`` nA (the full cell's stimulus at step midpoints) for every model.

        With ``v_clamp`` ``[B, T+1]`` the voltage follows the given trace instead (teacher forcing):
        the returned ``i_axial`` is then the network's output along it and ``v`` the voltage each step
        would have produced from the clamped one.
        """
        stim = stim if stim.dim() == 2 else stim.unsqueeze(0)
        b, steps = stim.shape
        m = self.axial.size
        if b != self.batch:
            raise ValueError(f"stimulus batch {b} but the model was built for batch {self.batch}")
        dtype, dev = self.stim_scale.dtype, self.stim_scale.device
        stim = stim.to(dev, dtype)
        v = torch.full((m, b), float(v0), device=dev, dtype=dtype)
        if v_clamp is not None:
            v = v_clamp[:, 0].to(dev, dtype).expand(m, b)
        x = self.membrane.init_state(v.reshape(-1))
        z = torch.zeros(m, b, self.axial.z_max, device=dev, dtype=dtype)
        cap = self.cap_nA / dt
        vs, currents, zs = [v], [], [z]
        s = self.stim_scale.unsqueeze(1)
        for k in range(steps):
            i_ax, dz = self.axial(v, z)
            g, ge = self.ionic(x, m, b)
            v_next = (cap * v + ge + s * stim[:, k] + i_ax) / (cap + g)
            z = z + dt * dz
            if v_clamp is not None:
                vs.append(v_next)
                v = v_clamp[:, k + 1].to(dev, dtype).expand(m, b)
            else:
                v = v_next
                vs.append(v)
            x = self.membrane.step_gates(x, v.reshape(-1), dt)
            if keep:
                currents.append(i_ax)
                zs.append(z)
        i_axial = torch.stack(currents, dim=-1) if keep else torch.empty(0)
        return ReducedTrace(torch.stack(vs, dim=-1), i_axial,
                            torch.stack(zs, dim=-2) if keep else torch.empty(0))


@dataclass
class FusedRun:
    """One compiled run: losses ``[M, R]``, voltages ``[M, R, T+1]``, I_ax ``[M, R, T]``, latents ``[M, R, T+1, Z]``."""

    loss: np.ndarray
    v: np.ndarray
    i_axial: np.ndarray
    z: np.ndarray


def _param_order(model: ReducedSoma) -> list[tuple[Tensor, int]]:
    """The parameters in the kernel's per-model layout, each with its number of values per model."""
    ax = model.axial
    order = []
    for w, b in zip(ax.weights, ax.biases, strict=True):
        order += [w, b]
    for g, b in zip(ax.ln_weights, ax.ln_biases, strict=True):
        order += [g, b]
    order.append(model.stim_scale)
    return [(p, int(np.prod(p.shape[1:])) if p.dim() > 1 else 1) for p in order]


def pack_params(model: ReducedSoma) -> np.ndarray:
    """Every model's parameters as one row, ``[M, P]`` float64, in the kernel's layout."""
    m = model.axial.size
    parts = [p.detach().to("cpu", torch.float64).reshape(m, n) for p, n in _param_order(model)]
    return np.ascontiguousarray(torch.cat(parts, dim=1).numpy())


def unpack_grads(model: ReducedSoma, grads: np.ndarray) -> None:
    """Write kernel gradients ``[M, P]`` into the parameters' ``.grad``."""
    col = 0
    g = torch.from_numpy(grads)
    for p, n in _param_order(model):
        block = g[:, col:col + n].reshape(p.shape).to(p.device, p.dtype)
        p.grad = block.clone() if p.grad is None else p.grad.copy_(block)
        col += n


def run_fused(model: ReducedSoma, stim: Tensor, dt: float, v_target: Tensor | None = None, v0: float = -70.0,
              teacher: bool = False, every: int = 4, scale: float = 0.1, want_grad: bool = False,
              n_threads: int | None = None) -> FusedRun:
    """Every model over every trace of ``stim`` (``[T]`` or ``[R, T]`` nA), in one compiled call.

    Loss per model and trace: free run, mean of ((V - V_target) scale)^2 over every ``every``-th
    step; teacher forcing, V clamped to ``v_target`` (``[T+1]`` or ``[R, T+1]``) and the loss on each
    one-step prediction. ``want_grad`` writes the gradient of each model's summed loss over its
    traces into its parameters' ``.grad``. Without the compiled kernels, or off the CPU, this is
    ``run_torch`` (which adds to ``.grad``: zero it first).
    """
    if native.load() is None or model.stim_scale.device.type != "cpu":
        return run_torch(model, stim, dt, v_target, v0, teacher, every, scale, want_grad)
    ax = model.axial
    m = ax.size
    stim_np = np.atleast_2d(stim.detach().to("cpu", torch.float64).numpy())
    r, steps = stim_np.shape
    target = np.zeros((r, steps + 1)) if v_target is None else np.atleast_2d(
        v_target.detach().to("cpu", torch.float64).numpy())
    target = np.ascontiguousarray(np.broadcast_to(target, (r, steps + 1)))
    v_lo, inv_h, table = model.fused_table(dt)
    index, power = channel_layout(model.membrane)
    params = np.ascontiguousarray(pack_params(model))  # [m, P]
    n = m * r
    losses = np.zeros(n)
    v = np.empty((n, steps + 1))
    i_ax = np.empty((n, steps))
    z = np.empty((n, steps + 1, ax.z_max))
    gbar = np.ascontiguousarray(model.membrane.gbar[:, 0].detach().cpu().double().numpy())
    e_rev = np.ascontiguousarray(model.membrane.e_rev[:, 0].detach().cpu().double().numpy())
    nz = np.asarray(ax.n_latents, dtype=np.int32)
    threads = max(1, int(n_threads or torch.get_num_threads()))
    grads = None
    common = {"Zmax": ax.z_max, "H": ax.width, "D": ax.depth, "G": model.membrane.n_gates, "C": len(model.channels),
              "M": index.shape[1], "K": table.shape[0], "T": steps, "every": every, "n_threads": threads,
              "Af": model.area_um2 * MEMBRANE_TO_NA, "cap": model.cap_nA / dt, "v_lo": v_lo, "inv_h": inv_h,
              "v0": float(v0), "scale": scale, "dt": dt, "v_center": V_CENTER_MV, "v_half": V_HALF_RANGE_MV,
              "axial_scale": AXIAL_SCALE_NA, "latent_rate": LATENT_RATE_PER_MS, "gate_index": index,
              "gate_power": power, "gbar": gbar, "erev": e_rev, "tab": table, "losses": losses, "v_out": v,
              "iax_out": i_ax, "z_out": z}
    if r > 1 and not (want_grad or teacher) and ax.activation == "tanh":
        # Several traces of one model and no gradient: four traces at a time in SIMD lanes.
        n_bad = native.hybrid_lanes(n_models=m, P=params.shape[1], act=0, R=r, params=params, nz=nz,
                                    stim=np.ascontiguousarray(stim_np), v_target=target, **common)
    else:
        # One instance per (model, trace): instance i is model i // r on trace i % r.
        stim_all = np.ascontiguousarray(np.tile(stim_np, (m, 1)))
        target_all = np.ascontiguousarray(np.tile(target, (m, 1)))
        params = np.ascontiguousarray(np.repeat(params, r, axis=0))
        grads = np.zeros_like(params)
        n_bad = native.hybrid_run(
            n_models=n, P=params.shape[1], act=ACTIVATION_CODES.get(ax.activation, -1), mode=0 if teacher else 1,
            want_grad=int(want_grad), stim_stride=steps, target_stride=steps + 1, params=params, grads=grads,
            nz=np.repeat(nz, r), stim=stim_all, v_target=target_all, **common)
    if n_bad < 0:
        raise RuntimeError("parameter layout mismatch between the module and the kernel")
    if want_grad:
        unpack_grads(model, grads.reshape(m, r, -1).sum(1))
    return FusedRun(losses.reshape(m, r), v.reshape(m, r, steps + 1), i_ax.reshape(m, r, steps),
                    z.reshape(m, r, steps + 1, ax.z_max))


def run_torch(model: ReducedSoma, stim: Tensor, dt: float, v_target: Tensor | None = None, v0: float = -70.0,
              teacher: bool = False, every: int = 4, scale: float = 0.1, want_grad: bool = False) -> FusedRun:
    """``run_fused`` in torch (autograd, any device): its reference, and its stand-in without a C compiler.

    The traces run together when the model was built for that batch, else one at a time; with
    ``want_grad`` each finite loss's gradient is added to the parameters' ``.grad``, and only the
    losses and voltages are returned (the currents and latents are empty).
    """
    stim = torch.atleast_2d(stim.detach())
    r, steps = stim.shape
    dev, dtype = model.stim_scale.device, model.stim_scale.dtype
    target = torch.zeros(r, steps + 1) if v_target is None else torch.atleast_2d(v_target.detach())
    target = target.to(dev, dtype).expand(r, steps + 1)
    groups = [slice(0, r)] if model.batch == r else [slice(i, i + 1) for i in range(r)]
    if model.batch not in (1, r):
        raise ValueError(f"the model was built for batch {model.batch}, the stimulus has {r} traces")
    runs = []
    for rows in groups:
        with torch.set_grad_enabled(want_grad):
            if teacher:
                out = model.simulate(stim[rows], dt, v_clamp=target[rows], keep=not want_grad)
                loss = ((out.v[..., 1:] - target[rows, 1:]) * scale).pow(2).mean(-1)
            else:
                out = model.simulate(stim[rows], dt, v0=v0, keep=not want_grad)
                loss = ((out.v[..., every::every] - target[rows, every::every]) * scale).pow(2).mean(-1)
            if want_grad:
                total = torch.where(torch.isfinite(loss), loss, torch.zeros_like(loss)).sum()
                if total.requires_grad:
                    total.backward()
        runs.append((loss, out))

    def cat(parts: list[Tensor]) -> np.ndarray:
        if not parts[0].numel():
            return np.empty(0)
        return torch.cat(parts, dim=1).detach().to("cpu", torch.float64).numpy()

    return FusedRun(cat([loss for loss, _ in runs]), cat([o.v for _, o in runs]), cat([o.i_axial for _, o in runs]),
                    cat([o.z for _, o in runs]))
