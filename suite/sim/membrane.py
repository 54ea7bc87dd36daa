"""The channels of a membrane at N sites (cells of a batch, or compartments): gates, conductances, currents.

Shared by the single-compartment and the cable simulator, so it sits in both hot loops: every
mechanistic gate is evaluated in one ``GateBank`` call, every channel's open probability
``prod_j x_j^p_j`` in one padded gather, and no Python loop runs over channels or sites.

State layout: ``x`` is ``[G, N]``, one row per gate in ``gate_keys`` order (the mechanistic
gates in channel order, then the replaced ones in channel order). Units are NEURON's: mV, ms,
S/cm2, and currents in mA/cm2 (``g * (V - E)`` with g in S/cm2 and V in mV).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from channelzoo.channel import Channel
from channelzoo.gates import Gate, GateBank

GateKey = tuple[str, str]  # (channel id, gate name)


class Membrane(nn.Module):
    """Channels present at ``n_sites`` sites; any gate may be replaced by a module ``v[1, N] -> (x_inf, tau)``.

    ``gbar`` is ``[C, N]`` (or ``[C]``) S/cm2, default each channel's own gbar everywhere; ``e_rev``
    likewise ``[C, N]`` or ``[C]`` mV. Either may be an ``nn.Parameter`` to be trained; otherwise
    both are buffers. ``temperature`` (C) scales mechanistic gates by their Q10 from their ``t_ref``
    (None: each gate at its own reference); replaced gates are taken as they are.
    """

    def __init__(self, channels: Sequence[Channel], gbar: Tensor | None = None, n_sites: int = 1,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 temperature: float | None = None, replace: Mapping[GateKey, nn.Module] | None = None,
                 e_rev: Tensor | None = None) -> None:
        super().__init__()
        if not channels:
            raise ValueError("a Membrane needs at least one channel")
        ids = [c.id for c in channels]
        if len(set(ids)) != len(ids):
            raise ValueError(f"channel ids must be unique, got {ids}")
        replace = dict(replace or {})
        all_keys = [(c.id, g.name) for c in channels for g in c.gates]
        unknown = sorted(set(replace) - set(all_keys))
        if unknown:
            raise ValueError(f"cannot replace {unknown}: no such (channel, gate); known: {all_keys}")
        self.channels = tuple(channels)
        self.channel_ids = tuple(ids)
        self.n_sites = int(n_sites)
        self.temperature = temperature
        mech = [(key, g) for c in channels for g in c.gates if (key := (c.id, g.name)) not in replace]
        self.gate_keys: tuple[GateKey, ...] = tuple(k for k, _ in mech) + tuple(k for k in all_keys if k in replace)
        self._mech_gates: tuple[Gate, ...] = tuple(g for _, g in mech)
        self.n_mech = len(mech)
        self.n_gates = len(self.gate_keys)
        self.replaced = nn.ModuleList(replace[k] for k in self.gate_keys[self.n_mech:])
        self._bank = GateBank(self._mech_gates, device, dtype) if mech else None

        # Padded [C, M] gather into the state with a row of ones appended (index G): a channel's
        # open probability is the product over its row, padding contributing 1^1.
        row = {k: i for i, k in enumerate(self.gate_keys)}
        width = max(1, max(len(c.gates) for c in channels))
        index = torch.full((len(channels), width), self.n_gates, dtype=torch.long)
        power = torch.ones(len(channels), width, dtype=dtype)
        for ci, c in enumerate(channels):
            for j, g in enumerate(c.gates):
                index[ci, j] = row[(c.id, g.name)]
                power[ci, j] = float(g.power)
        self.register_buffer("gate_index", index.to(device), persistent=False)
        self.register_buffer("gate_power", power.to(device).unsqueeze(-1), persistent=False)  # [C, M, 1]
        self._integer_powers = bool((power == power.round()).all() and power.min() >= 1 and power.max() <= 4)

        as_t = {"device": device, "dtype": dtype}
        default_g = torch.tensor([c.gbar for c in channels], **as_t)
        default_e = torch.tensor([c.e_rev for c in channels], **as_t)
        self._register("_gbar", self._per_site(gbar, default_g, "gbar"))
        self._register("_e_rev", self._per_site(e_rev, default_e, "e_rev"))

    # -- construction helpers -------------------------------------------------------------------
    def _per_site(self, value: Tensor | None, default: Tensor, name: str) -> Tensor:
        c, n = len(self.channels), self.n_sites
        if value is None:
            return default.unsqueeze(1).expand(c, n).clone()
        shape = tuple(value.shape)
        if value.shape[0] != c or value.dim() > 2 or (value.dim() == 2 and value.shape[1] not in (1, n)):
            raise ValueError(f"{name} must be [C={c}] or [C={c}, N={n}], got {shape}")
        if isinstance(value, nn.Parameter):
            return value  # trained as given; broadcast over sites when used
        return value.to(default.device, default.dtype).reshape(c, -1).expand(c, n).clone()

    def _register(self, name: str, value: Tensor) -> None:
        if isinstance(value, nn.Parameter):
            self.register_parameter(name, value)
        else:
            self.register_buffer(name, value)

    @property
    def gbar(self) -> Tensor:
        """``[C, N]`` (or ``[C, 1]`` for a per-channel parameter) S/cm2."""
        return self._gbar if self._gbar.dim() == 2 else self._gbar.unsqueeze(1)

    @property
    def e_rev(self) -> Tensor:
        """``[C, N]`` (or ``[C, 1]``) mV."""
        return self._e_rev if self._e_rev.dim() == 2 else self._e_rev.unsqueeze(1)

    def _bank_for(self, v: Tensor) -> GateBank:
        """The gate bank on ``v``'s device and dtype (rebuilt once if the module was moved)."""
        bank = self._bank
        if bank.device != v.device or bank.dtype != v.dtype:
            bank = self._bank = GateBank(self._mech_gates, v.device, v.dtype)
        return bank

    # -- the hot path ---------------------------------------------------------------------------
    def gate_rates(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """x_inf and tau (ms) of every gate at voltages ``v`` ``[N]`` (mV): each ``[G, N]``."""
        infs, taus = [], []
        if self.n_mech:
            inf, tau = self._bank_for(v)(v.expand(self.n_mech, -1), self.temperature)
            infs.append(inf)
            taus.append(tau)
        v_row = v.unsqueeze(0)
        for module in self.replaced:
            inf, tau = module(v_row)
            infs.append(inf.reshape(1, -1))
            taus.append(tau.reshape(1, -1))
        if len(infs) == 1:
            return infs[0], taus[0]
        return torch.cat(infs), torch.cat(taus)

    def init_state(self, v: Tensor) -> Tensor:
        """Every gate at its steady state for ``v`` ``[N]``: ``[G, N]``."""
        return self.gate_rates(v)[0]

    def step_gates(self, x: Tensor, v: Tensor, dt: float) -> Tensor:
        """Exponential Euler (NEURON's cnexp) over ``dt`` ms with V held at ``v``: x_inf + (x - x_inf) e^(-dt/tau)."""
        inf, tau = self.gate_rates(v)
        return inf + (x - inf) * torch.exp(-dt / tau)

    def open_fraction(self, x: Tensor) -> Tensor:
        """prod_j x_j^p_j per channel and site: ``[C, N]`` (1 for gate-less channels)."""
        padded = torch.cat([x, x.new_ones(1, x.shape[1])])[self.gate_index]  # [C, M, N]
        if self._integer_powers:
            p = self.gate_power
            x2 = padded * padded
            # x^p for p in 1..4 without pow(): exact, cheaper, and with clean gradients at x = 0.
            powered = torch.where(p == 1, padded, torch.where(p == 2, x2, torch.where(p == 3, x2 * padded, x2 * x2)))
        else:
            powered = padded.pow(self.gate_power)
        return powered.prod(1)

    def conductances(self, x: Tensor) -> Tensor:
        """g_k = gbar_k prod_j x_j^p_j, ``[C, N]`` S/cm2."""
        return self.gbar * self.open_fraction(x)

    def conductance_terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(sum_k g_k [N] S/cm2, sum_k g_k E_k [N] mA/cm2), so that I_ion = g_total V - g_e (for implicit steps)."""
        g = self.conductances(x)
        return g.sum(0), (g * self.e_rev).sum(0)

    def current(self, x: Tensor, v: Tensor) -> Tensor:
        """Total ionic current, ``[N]`` mA/cm2 (outward positive)."""
        g_total, g_e = self.conductance_terms(x)
        return g_total * v - g_e

    def channel_currents(self, x: Tensor, v: Tensor) -> Tensor:
        """Each channel's current, ``[C, N]`` mA/cm2 (for analysis; not in the hot loop)."""
        return self.conductances(x) * (v - self.e_rev)

    # -- lookups --------------------------------------------------------------------------------
    def gate_row(self, channel_id: str, gate_name: str) -> int:
        """The row of ``x`` holding gate ``gate_name`` of channel ``channel_id``."""
        try:
            return self.gate_keys.index((channel_id, gate_name))
        except ValueError:
            raise KeyError(f"no gate {gate_name!r} in channel {channel_id!r}; known: {self.gate_keys}") from None

    def channel_row(self, channel_id: str) -> int:
        try:
            return self.channel_ids.index(channel_id)
        except ValueError:
            raise KeyError(f"no channel {channel_id!r}; known: {self.channel_ids}") from None

    def extra_repr(self) -> str:
        return f"channels={list(self.channel_ids)}, sites={self.n_sites}, gates={len(self.gate_keys)}, " \
               f"replaced={list(self.gate_keys[self.n_mech:])}, temperature={self.temperature}"
