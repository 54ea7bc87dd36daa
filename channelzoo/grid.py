"""The Ion Channel Genealogy's 56-point voltage grid (mV) on which curves are tabulated."""

from __future__ import annotations

ICG_GRID_MV: tuple[float, ...] = (
    (-100.0, -90.0)
    + tuple(float(v) for v in range(-80, 9, 2))
    + tuple(float(v) for v in range(10, 71, 10))
    + (80.0, 100.0)
)
assert len(ICG_GRID_MV) == 56

VALID_RANGE_MV: tuple[float, float] = (-100.0, 100.0)
ICG_TEMPERATURE_C = 6.3
