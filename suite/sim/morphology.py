"""SWC morphologies: read, validate and turn into unbranched sections the way NEURON's Import3d does.

A ``Morphology`` is the point tree of an SWC file (ids, types, positions and radii in um). ``sections``
cuts it into unbranched runs of same-type points and applies Import3d's conventions, so that the
same file gives the same cable in NEURON and here: a single-point (or NeuroMorpho three-point)
soma becomes a cylinder with length = diameter, dendrites hang off its middle by a "wire" (their
first 3-D point is their own first sample), and every other child section starts with a copy of
its parent point (with the child's diameter where the parent is soma).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from channelzoo.errors import ZooError

SOMA, AXON, BASAL, APICAL = 1, 2, 3, 4
REGIONS: dict[int, str] = {SOMA: "soma", AXON: "axon", BASAL: "basal", APICAL: "apical"}
OTHER_REGION = "basal"  # custom SWC types (5+) and undefined (0) count as dendrite
MAX_COORD_UM = 1e7  # 10 m: beyond any neuron; larger values overflow lengths and areas
MIN_RADIUS_UM = 1e-3  # 1 nm, a fifth of a membrane's thickness: below it areas underflow to nothing


class MorphologyError(ZooError):
    """A morphology that cannot be used: names the file and the line or field at fault."""


def region_of(swc_type: int) -> str:
    return REGIONS.get(int(swc_type), OTHER_REGION)


@dataclass(frozen=True, eq=False)
class Morphology:
    """An SWC point tree, points in parent-first order: ``parent[i] < i``, -1 only at index 0 (the root)."""

    ids: np.ndarray  # [P] int, the file's ids
    types: np.ndarray  # [P] int, SWC structure identifiers (1 soma, 2 axon, 3 basal, 4 apical)
    xyz: np.ndarray  # [P, 3] um
    radius: np.ndarray  # [P] um
    parent: np.ndarray  # [P] int, index of the parent point
    source: str = "<memory>"

    @property
    def n_points(self) -> int:
        return int(self.ids.shape[0])

    def to_swc(self) -> str:
        """SWC text of the tree (ids renumbered 1..P in parent-first order)."""
        lines = [f"# {self.source}"]
        for i in range(self.n_points):
            x, y, z = self.xyz[i]
            p = -1 if self.parent[i] < 0 else int(self.parent[i]) + 1
            lines.append(f"{i + 1} {int(self.types[i])} {x:.6g} {y:.6g} {z:.6g} {self.radius[i]:.6g} {p}")
        return "\n".join(lines) + "\n"

    def write_swc(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_swc())
        return path


def read_swc_text(path: str | Path) -> str:
    """The text of SWC file ``path``; a MorphologyError if it cannot be read or is not UTF-8 text."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise MorphologyError(f"cannot read ({e.strerror})", file=str(path)) from None
    try:
        return blob.decode()
    except UnicodeDecodeError as e:
        line = blob.count(b"\n", 0, e.start) + 1
        raise MorphologyError(f"not UTF-8 text (byte {e.start} is {blob[e.start:e.start + 1]!r}); SWC is text",
                              file=str(path), field=f"line {line}") from None


def read_swc(path: str | Path) -> Morphology:
    """The morphology in SWC file ``path``; a MorphologyError names the file and line otherwise."""
    return parse_swc(read_swc_text(path), str(path))


def parse_swc(text: str, source: str = "<string>") -> Morphology:
    """Parse SWC text: ``id type x y z radius parent`` per line, ``#`` comments, one tree."""
    rows: list[tuple[int, int, float, float, float, float, int]] = []
    lines: list[int] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 7:
            raise MorphologyError(f"expected 7 fields (id type x y z radius parent), got {len(fields)}: {raw!r}",
                                  file=source, field=f"line {lineno}")
        try:
            ident, kind, parent = int(fields[0]), int(fields[1]), int(fields[6])
        except ValueError:
            raise MorphologyError(f"id, type and parent must be integers: {raw!r}", file=source,
                                  field=f"line {lineno}") from None
        try:
            x, y, z, r = (float(f) for f in fields[2:6])
        except ValueError:
            raise MorphologyError(f"x, y, z and radius must be numbers: {raw!r}", file=source,
                                  field=f"line {lineno}") from None
        if not all(math.isfinite(v) for v in (x, y, z, r)):
            raise MorphologyError(f"non-finite coordinate or radius: {raw!r}", file=source, field=f"line {lineno}")
        if r <= 0:
            raise MorphologyError(f"radius must be positive (a zero-diameter cable has infinite axial "
                                  f"resistance), got {r:g}", file=source, field=f"line {lineno}")
        if r < MIN_RADIUS_UM:
            raise MorphologyError(f"radius {r:g} um is below {MIN_RADIUS_UM:g} um (1 nm): not a neurite",
                                  file=source, field=f"line {lineno}")
        if max(abs(x), abs(y), abs(z), r) > MAX_COORD_UM:
            raise MorphologyError(f"coordinate or radius beyond {MAX_COORD_UM:g} um (10 m): {raw!r}", file=source,
                                  field=f"line {lineno}")
        if ident < 0:
            raise MorphologyError(f"id must be non-negative, got {ident}", file=source, field=f"line {lineno}")
        rows.append((ident, kind, x, y, z, r, parent))
        lines.append(lineno)
    if not rows:
        raise MorphologyError("no points (an SWC file needs at least a root line)", file=source)
    return _build(rows, lines, source)


def _build(rows: list[tuple], lines: list[int], source: str) -> Morphology:
    line_of: dict[int, int] = {}
    for (ident, *_), lineno in zip(rows, lines, strict=True):
        if ident in line_of:
            raise MorphologyError(f"duplicate id {ident} (first on line {line_of[ident]})", file=source,
                                  field=f"line {lineno}")
        line_of[ident] = lineno
    roots = [lineno for (_, _, _, _, _, _, p), lineno in zip(rows, lines, strict=True) if p < 0]
    if not roots:
        raise MorphologyError("no root (a point with parent -1); the tree has a cycle", file=source, field="parent")
    if len(roots) > 1:
        shown = ", ".join(str(n) for n in roots[:5]) + (" ..." if len(roots) > 5 else "")
        raise MorphologyError(f"{len(roots)} roots (lines {shown}); one connected tree is needed", file=source,
                              field=f"line {roots[1]}")
    children: dict[int, list[int]] = {}
    for k, (ident, *_, parent) in enumerate(rows):
        if parent >= 0:
            if parent not in line_of:
                raise MorphologyError(f"parent {parent} of point {ident} is not in the file", file=source,
                                      field=f"line {lines[k]}")
            if parent == ident:
                raise MorphologyError(f"point {ident} is its own parent", file=source, field=f"line {lines[k]}")
            children.setdefault(parent, []).append(k)
    index_of_id = {row[0]: k for k, row in enumerate(rows)}
    root = next(k for k, row in enumerate(rows) if row[6] < 0)
    # Depth-first, parent-first order; children in file order so that ids stay close to the file's.
    order: list[int] = []
    stack = [root]
    while stack:
        k = stack.pop()
        order.append(k)
        stack.extend(reversed(children.get(rows[k][0], [])))
    if len(order) != len(rows):
        missing = sorted(set(range(len(rows))) - set(order))
        raise MorphologyError("points unreachable from the root (a cycle)", file=source,
                              field=f"line {lines[missing[0]]}")
    by_id = sorted(range(len(rows)), key=lambda k: rows[k][0])
    if all(rows[k][6] < rows[k][0] for k in by_id):
        order = by_id  # the usual file: id order is parent-first, and Import3d cuts sections in that order
    new_index = {k: i for i, k in enumerate(order)}
    parent = np.array([-1 if rows[k][6] < 0 else new_index[index_of_id[rows[k][6]]] for k in order], dtype=np.int64)
    return Morphology(
        ids=np.array([rows[k][0] for k in order], dtype=np.int64),
        types=np.array([rows[k][1] for k in order], dtype=np.int64),
        xyz=np.array([rows[k][2:5] for k in order], dtype=np.float64).reshape(-1, 3),
        radius=np.array([rows[k][5] for k in order], dtype=np.float64),
        parent=parent,
        source=source,
    )


@dataclass(frozen=True, eq=False)
class Section:
    """An unbranched cable: 3-D points (um) with diameters, attached at ``parent_x`` of section ``parent``."""

    index: int
    swc_type: int
    xyz: np.ndarray  # [n, 3]
    diam: np.ndarray  # [n]
    parent: int  # -1 for the root section
    parent_x: float  # 0, 0.5 or 1 along the parent
    points: tuple[int, ...]  # the morphology points it holds (not the copied parent point)

    @property
    def region(self) -> str:
        return region_of(self.swc_type)

    @property
    def arc(self) -> np.ndarray:
        """Cumulative path length at each 3-D point (um), 0 at the first."""
        steps = np.linalg.norm(np.diff(self.xyz, axis=0), axis=1)
        return np.concatenate([[0.0], np.cumsum(steps)])

    @property
    def length(self) -> float:
        return float(self.arc[-1])


def _is_three_point_soma(m: Morphology) -> bool:
    """NeuroMorpho's policy (Import3d's too): root and two children of equal radius spanning one diameter."""
    soma = np.flatnonzero(m.types == SOMA)
    if len(soma) != 3 or soma[0] != 0 or m.types[0] != SOMA:
        return False
    a, b = soma[1], soma[2]
    if m.parent[a] != 0 or m.parent[b] != 0 or (m.parent == a).any() or (m.parent == b).any():
        return False
    if not np.allclose(m.radius[[a, b]], m.radius[0]):
        return False
    span = np.linalg.norm(m.xyz[a] - m.xyz[0]) + np.linalg.norm(m.xyz[b] - m.xyz[0])
    return abs(span / (2 * m.radius[0]) - 1) < 0.01


def sections(m: Morphology) -> list[Section]:
    """Unbranched same-type runs of points, parent sections first, with Import3d's 3-D point conventions."""
    keep = np.ones(m.n_points, dtype=bool)
    if _is_three_point_soma(m):
        keep[np.flatnonzero(m.types == SOMA)[1:]] = False  # the two outer points only describe the sphere
    n_children = np.zeros(m.n_points, dtype=np.int64)
    for i in range(1, m.n_points):
        if keep[i]:
            n_children[m.parent[i]] += 1
    # A point continues its section into its child when that is its only child, of its own type and next
    # in point order (Import3d ends a section at a child that is not contiguous).
    continues = np.zeros(m.n_points, dtype=bool)
    for i in range(1, m.n_points):
        p = m.parent[i]
        if keep[i] and p == i - 1 and n_children[p] == 1 and m.types[p] == m.types[i]:
            continues[p] = True
    # Soma points in a chain stay one section even where dendrites branch off them (Import3d).
    for i in range(1, m.n_points):
        p = m.parent[i]
        if keep[i] and p == i - 1 and m.types[i] == SOMA and m.types[p] == SOMA:
            soma_children = sum(1 for c in np.flatnonzero(m.parent == p) if keep[c] and m.types[c] == SOMA)
            if soma_children == 1 or p == 0:
                continues[p] = True
    section_of = np.full(m.n_points, -1, dtype=np.int64)
    runs: list[list[int]] = []
    for i in range(m.n_points):
        if not keep[i]:
            continue
        p = m.parent[i]
        if p >= 0 and continues[p] and section_of[p] >= 0 and runs[section_of[p]][-1] == p:
            section_of[i] = section_of[p]
            runs[section_of[i]].append(i)
        else:
            section_of[i] = len(runs)
            runs.append([i])
    out: list[Section] = []
    for s, run in enumerate(runs):
        first = run[0]
        pts = np.array(run)
        xyz, diam = m.xyz[pts], 2.0 * m.radius[pts]
        if s == 0:
            if len(run) == 1:  # a sphere: NEURON's 3-point cylinder along x with L = diam
                d = diam[0]
                xyz = m.xyz[[first] * 3] + np.array([[-d / 2, 0, 0], [0, 0, 0], [d / 2, 0, 0]])
                diam = np.full(3, d)
            out.append(Section(0, int(m.types[first]), xyz, diam, -1, 0.0, tuple(run)))
            continue
        p = int(m.parent[first])
        ps = int(section_of[p])
        parent_run = runs[ps]
        parent_is_soma = m.types[p] == SOMA
        single_point_root = ps == 0 and len(parent_run) == 1
        dendrite = m.types[first] != SOMA and len(run) > 1
        # Import3d wires a dendrite to a soma point that branches into more soma (no parent point copied).
        soma_fork = parent_is_soma and int(np.sum((m.parent == p) & (m.types == SOMA) & keep)) > 1
        if single_point_root and parent_is_soma and m.types[first] != SOMA:
            parent_x, wire = 0.5, len(run) > 1
        elif ps == 0 and p == parent_run[0] and len(parent_run) > 1:
            parent_x, wire = 0.0, dendrite and soma_fork
        elif p == parent_run[-1]:
            parent_x, wire = 1.0, dendrite and soma_fork
        else:  # interior point of a multi-point soma
            parent_x, wire = 0.5, dendrite
        if not wire:
            first_d = diam[0] if (parent_is_soma and m.types[first] != SOMA) else 2.0 * m.radius[p]
            xyz = np.vstack([m.xyz[p], xyz])
            diam = np.concatenate([[first_d], diam])
        out.append(Section(s, int(m.types[first]), xyz, diam, ps, parent_x, tuple(run)))
    return out
