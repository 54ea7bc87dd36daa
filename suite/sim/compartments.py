"""Sections into compartments: node areas and axial conductances as NEURON computes them from 3-D points.

Each section of ``nseg`` segments gives ``nseg`` nodes at the segment centres. As in NEURON, a
section's 1 end is a node of its own (zero area) where children attached at x = 1 meet, and the root
section's 0 end likewise; such junction nodes exist here only when something is attached to them.
Areas are the lateral areas of the frusta between 3-D points, and the axial resistance between two
nodes is the integral of 4 Ra / (pi d1 d2) over the half segments between them (NEURON's
``diam_from_list``), so a cell here and in NEURON has the same conductance matrix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from suite.sim.morphology import Morphology, MorphologyError, Section, sections

DEFAULT_D_LAMBDA = 0.1
DEFAULT_FREQUENCY_HZ = 100.0


@dataclass(frozen=True, eq=False)
class Compartments:
    """A cable tree in Hines order (``parent[i] < i``, node 0 the root).

    ``area`` is um2 (0 at junction nodes), ``g_axial[i]`` the conductance (uS) between node i and its
    parent (0 at the root); ``region`` per node (soma, axon, basal, apical; "junction" at zero-area
    nodes); ``section``/``x`` say where a node sits. ``soma`` is the node of the soma's middle.
    """

    parent: np.ndarray  # [N] int
    area: np.ndarray  # [N] um2
    g_axial: np.ndarray  # [N] uS
    region: tuple[str, ...]
    section: np.ndarray  # [N] int
    x: np.ndarray  # [N] position along the section (0..1)
    xyz: np.ndarray  # [N, 3] um, for plots
    soma: int
    sections: tuple[Section, ...]

    @property
    def n_nodes(self) -> int:
        return int(self.parent.shape[0])

    @property
    def total_area(self) -> float:
        return float(self.area.sum())

    def depth(self) -> np.ndarray:
        """Distance (edges) of each node from the root."""
        depth = np.zeros(self.n_nodes, dtype=np.int64)
        for i in range(1, self.n_nodes):
            depth[i] = depth[self.parent[i]] + 1
        return depth

    def nodes_of(self, region: str) -> np.ndarray:
        return np.array([i for i, r in enumerate(self.region) if r == region], dtype=np.int64)


def segment_geometry(sec: Section, nseg: int, ra: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per segment: area (um2), left and right half resistances (MOhm), by NEURON's trapezoidal rule."""
    arc = sec.arc
    d = np.abs(sec.diam)
    npt = len(arc)
    ds = arc[-1] / nseg
    area = np.zeros(nseg)
    r_half = np.zeros((nseg, 2))
    j = 0
    x1, y1 = arc[0], d[0]
    for k in range(nseg):
        si = k * ds
        for half in range(2):
            ri = 0.0
            sip = si + ds / 2.0
            while True:
                jp = j + 1
                xj, xjp = arc[j], arc[jp]
                if xjp > sip or jp == npt - 1:
                    frac = 1.0 if abs(xjp - xj) < 1e-10 else (sip - xj) / (xjp - xj)
                    x2, y2, jnext = sip, (1.0 - frac) * d[j] + frac * d[jp], j
                else:
                    x2, y2, jnext = xjp, d[jp], jp
                delta = max(x2 - x1, 1e-15)
                ri += 1.0 / max(y2 * y1 / delta, 1e-15)
                area[k] += (y2 + y1) * math.sqrt((x2 - x1) ** 2 + (0.5 * (y2 - y1)) ** 2)
                x1, y1 = x2, y2
                if j == jnext:
                    break
                j = jnext
            r_half[k, half] = ri * ra / math.pi * 4e-2  # um / um2 * Ohm cm -> MOhm
            si = sip
    return area * 0.5 * math.pi, r_half[:, 0], r_half[:, 1]


def lambda_f(sec: Section, frequency_hz: float, ra: float, cm: float) -> float:
    """The AC length constant (um) at ``frequency_hz``, NEURON's ``lambda_f`` over the 3-D points."""
    arc, d = sec.arc, sec.diam
    if len(arc) < 2 or arc[-1] <= 0:
        return 1e5 * math.sqrt(float(d.mean()) / (4 * math.pi * frequency_hz * ra * cm))
    lam = float(np.sum(np.diff(arc) / np.sqrt(d[:-1] + d[1:])))
    lam *= math.sqrt(2) * 1e-5 * math.sqrt(4 * math.pi * frequency_hz * ra * cm)
    return arc[-1] / lam


def nseg_d_lambda(sec: Section, ra: float, cm: float, d_lambda: float = DEFAULT_D_LAMBDA,
                  frequency_hz: float = DEFAULT_FREQUENCY_HZ) -> int:
    """NEURON's d_lambda rule: an odd number of segments, each at most ``d_lambda`` of lambda_f."""
    return int((sec.length / (d_lambda * lambda_f(sec, frequency_hz, ra, cm)) + 0.9) / 2) * 2 + 1


def compartmentalise(morphology: Morphology | list[Section], nseg: int | str = 1, ra: float = 100.0,
                     cm: float = 1.0, d_lambda: float = DEFAULT_D_LAMBDA,
                     ra_by_region: Mapping[str, float] | None = None) -> Compartments:
    """The compartment tree of a morphology: ``nseg`` per section (an int), or ``"d_lambda"``.

    ``ra`` is the axial resistivity (Ohm cm), per region through ``ra_by_region``; ``cm`` (uF/cm2)
    only enters the d_lambda rule.
    """
    secs = sections(morphology) if isinstance(morphology, Morphology) else list(morphology)
    ra_of = {**dict.fromkeys(("soma", "axon", "basal", "apical"), ra), **dict(ra_by_region or {})}
    if isinstance(nseg, str):
        if nseg != "d_lambda":
            raise MorphologyError(f"nseg must be a positive integer or 'd_lambda', got {nseg!r}", field="nseg")
        counts = [nseg_d_lambda(s, ra_of[s.region], cm, d_lambda) for s in secs]
    else:
        if int(nseg) < 1:
            raise MorphologyError(f"nseg must be a positive integer or 'd_lambda', got {nseg!r}", field="nseg")
        counts = [int(nseg)] * len(secs)
    attached: dict[tuple[int, float], bool] = {}
    for s in secs[1:]:
        attached[(s.parent, s.parent_x)] = True

    parent: list[int] = []
    area: list[float] = []
    g: list[float] = []
    region: list[str] = []
    where_s: list[int] = []
    where_x: list[float] = []
    xyz: list[np.ndarray] = []
    centre: dict[int, list[int]] = {}  # section -> its centre nodes
    end: dict[tuple[int, float], int] = {}  # (section, 0 or 1) -> junction node
    base: dict[int, int] = {}  # section -> the node its 0 end joins

    def add(p: int, a: float, conductance: float, reg: str, s: int, x: float, pos: np.ndarray) -> int:
        parent.append(p)
        area.append(a)
        g.append(conductance)
        region.append(reg)
        where_s.append(s)
        where_x.append(x)
        xyz.append(pos)
        return len(parent) - 1

    for s in secs:
        n = counts[s.index]
        seg_area, r_left, r_right = segment_geometry(s, n, ra_of[s.region])
        pos = _positions(s, n)
        if s.parent < 0:
            if attached.get((0, 0.0)):
                end[(0, 0.0)] = add(-1, 0.0, 0.0, "junction", 0, 0.0, s.xyz[0])
                up, r_up = end[(0, 0.0)], 0.0
            else:
                up, r_up = -1, 0.0
        else:
            up, r_up = _attachment(s, counts, centre, end, base), 0.0
        base[s.index] = up
        nodes = []
        for k in range(n):
            r = r_up + r_left[k]
            nodes.append(add(up, float(seg_area[k]), 0.0 if up < 0 else 1.0 / r, s.region, s.index,
                             (k + 0.5) / n, pos[k]))
            up, r_up = nodes[-1], r_right[k]
        centre[s.index] = nodes
        if attached.get((s.index, 1.0)):
            end[(s.index, 1.0)] = add(up, 0.0, 1.0 / r_up, "junction", s.index, 1.0, s.xyz[-1])
    soma_secs = [s.index for s in secs if s.region == "soma"]
    soma_sec = soma_secs[0] if soma_secs else 0
    soma = centre[soma_sec][len(centre[soma_sec]) // 2]
    return Compartments(np.array(parent, dtype=np.int64), np.array(area), np.array(g), tuple(region),
                        np.array(where_s, dtype=np.int64), np.array(where_x), np.array(xyz).reshape(-1, 3),
                        soma, tuple(secs))


def _attachment(s: Section, counts: list[int], centre: dict[int, list[int]], end: dict[tuple[int, float], int],
                base: dict[int, int]) -> int:
    """The node a section's 0 end joins: the parent's junction at 0 or 1, else its segment holding parent_x."""
    if s.parent_x in (0.0, 1.0):
        key = (s.parent, s.parent_x)
        if key in end:
            return end[key]
        if s.parent_x == 0.0:  # x = 0 of a non-root section is the node that section hangs from
            return base[s.parent]
    nodes = centre[s.parent]
    return nodes[min(int(s.parent_x * counts[s.parent]), len(nodes) - 1)]


def _positions(s: Section, n: int) -> np.ndarray:
    """3-D positions of the segment centres, interpolated along the arc."""
    arc = s.arc
    targets = (np.arange(n) + 0.5) / n * arc[-1]
    return np.stack([np.interp(targets, arc, s.xyz[:, k]) for k in range(3)], axis=1)
