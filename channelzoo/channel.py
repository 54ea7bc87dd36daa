"""A channel: conductance, reversal potential and gates, as declarative data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from channelzoo.gates import Gate

ION_CLASSES: tuple[str, ...] = ("K", "Na", "Ca", "KCa", "IH")


@dataclass(frozen=True)
class Channel:
    """g = gbar * prod_j x_j^p_j; I = g (V - e_rev). Units: S/cm2, mV."""

    id: str
    ion_class: str
    source: str
    gbar: float
    e_rev: float
    gates: tuple[Gate, ...]
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def structure(self) -> str:
        """Gates and powers in ICG's notation, e.g. ``m3h``."""
        return "".join(f"{g.name}{g.power if g.power != 1 else ''}" for g in self.gates)
