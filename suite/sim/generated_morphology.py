"""A deterministic pyramidal-like morphology: the embedded default when no SWC file is given.

A single-point soma, an apical trunk with oblique branches that splits into a tuft, basal dendrites
that bifurcate twice, and a short axon. Geometry is built from a few numbers (no randomness beyond a
fixed-seed jitter of branch angles), so the same call gives the same tree everywhere.
"""

from __future__ import annotations

import math

import numpy as np

from suite.sim.morphology import APICAL, AXON, BASAL, SOMA, Morphology

SOMA_RADIUS_UM = 10.0
POINT_SPACING_UM = 10.0


def pyramidal(seed: int = 0) -> Morphology:
    """Soma (r 10 um), apical trunk 350 um with 4 obliques and a 3-level tuft, 5 basal trees, a 100 um axon."""
    rng = np.random.default_rng(seed)
    points: list[tuple[int, np.ndarray, float, int]] = [(SOMA, np.zeros(3), SOMA_RADIUS_UM, -1)]

    def cable(parent: int, kind: int, start: np.ndarray, direction: np.ndarray, length: float, r0: float,
              r1: float) -> int:
        """Points every POINT_SPACING_UM from ``start``; returns the index of the last."""
        direction = direction / np.linalg.norm(direction)
        n = max(2, int(round(length / POINT_SPACING_UM)))
        last = parent
        for k in range(1, n + 1):
            f = k / n
            points.append((kind, start + direction * length * f, r0 + (r1 - r0) * f, last))
            last = len(points) - 1
        return last

    def rotate(direction: np.ndarray, angle_deg: float, around: float) -> np.ndarray:
        """Tilt ``direction`` by ``angle_deg`` towards an azimuth ``around`` (deg) about its own axis."""
        direction = direction / np.linalg.norm(direction)
        helper = np.array([0.0, 0.0, 1.0]) if abs(direction[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        u = np.cross(direction, helper)
        u /= np.linalg.norm(u)
        w = np.cross(direction, u)
        side = math.cos(math.radians(around)) * u + math.sin(math.radians(around)) * w
        a = math.radians(angle_deg)
        return math.cos(a) * direction + math.sin(a) * side

    def tree(parent: int, kind: int, start: np.ndarray, direction: np.ndarray, length: float, radius: float,
             levels: int) -> None:
        """A branch that bifurcates ``levels`` more times, children thinner by Rall's 3/2 rule."""
        end = cable(parent, kind, start, direction, length, radius, radius * 0.9)
        if levels == 0:
            return
        child_r = radius * 0.9 * 2 ** (-2 / 3)
        spin = float(rng.uniform(0, 360))
        for side in (0.0, 180.0):
            tree(end, kind, points[end][1], rotate(direction, 30.0 + float(rng.uniform(-5, 5)), spin + side),
                 length * 0.8, child_r, levels - 1)

    up = np.array([0.0, 1.0, 0.0])
    trunk_start = up * SOMA_RADIUS_UM
    joint = 0
    position = trunk_start
    # Apical trunk in four pieces, an oblique branch leaving at each joint.
    for k in range(4):
        r0 = 2.0 - 0.25 * k
        joint = cable(joint, APICAL, position, up, 87.5, r0, r0 - 0.25)
        position = points[joint][1]
        tree(joint, APICAL, position, rotate(up, 60.0, 90.0 * k), 120.0, 0.6, 1)
    for azimuth in (0.0, 120.0, 240.0):  # tuft
        tree(joint, APICAL, position, rotate(up, 35.0, azimuth), 100.0, 0.8, 2)
    for k in range(5):  # basal dendrites around the lower half of the soma
        direction = rotate(-up, 50.0, 72.0 * k)
        start = direction / np.linalg.norm(direction) * SOMA_RADIUS_UM
        tree(0, BASAL, start, direction, 60.0, 0.8, 2)
    axon_dir = np.array([0.2, -1.0, 0.1])
    cable(0, AXON, axon_dir / np.linalg.norm(axon_dir) * SOMA_RADIUS_UM, axon_dir, 100.0, 0.5, 0.5)

    return Morphology(
        ids=np.arange(1, len(points) + 1, dtype=np.int64),
        types=np.array([p[0] for p in points], dtype=np.int64),
        xyz=np.array([p[1] for p in points], dtype=np.float64),
        radius=np.array([p[2] for p in points], dtype=np.float64),
        parent=np.array([p[3] for p in points], dtype=np.int64),
        source=f"generated:pyramidal(seed={seed})",
    )
