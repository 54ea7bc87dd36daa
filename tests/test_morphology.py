"""SWC reading and sectioning: Import3d's conventions, and bad files stopped with the file and line named."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from suite.sim.compartments import compartmentalise
from suite.sim.generated_morphology import pyramidal
from suite.sim.morphology import MorphologyError, parse_swc, read_swc, sections

SINGLE_POINT = """# soma and two dendrites
1 1 0 0 0 10 -1
2 3 0 -12 0 1 1
3 3 0 -30 0 1 2
4 4 0 12 0 2 1
5 4 0 40 0 1.5 4
"""


def test_single_point_soma_is_a_cylinder_with_length_equal_to_diameter() -> None:
    secs = sections(parse_swc(SINGLE_POINT))
    soma = secs[0]
    assert soma.region == "soma" and len(secs) == 3
    assert soma.length == pytest.approx(20.0) and np.allclose(soma.diam, 20.0)
    assert all(s.parent == 0 and s.parent_x == 0.5 for s in secs[1:])
    # A dendrite hangs off the soma's middle by a wire: it starts at its own first sample.
    assert np.allclose(secs[1].xyz[0], [0, -12, 0])


def test_three_point_soma_is_read_as_the_same_sphere() -> None:
    three = """1 1 0 0 0 10 -1
2 1 0 -10 0 10 1
3 1 0 10 0 10 1
4 3 0 -12 0 1 1
5 3 0 -30 0 1 4
"""
    one = sections(parse_swc("1 1 0 0 0 10 -1\n4 3 0 -12 0 1 1\n5 3 0 -30 0 1 4\n"))
    secs = sections(parse_swc(three))
    assert len(secs) == len(one) == 2
    assert secs[0].length == pytest.approx(one[0].length)
    assert compartmentalise(secs).total_area == pytest.approx(compartmentalise(one).total_area)


def test_child_sections_start_at_their_parent_point() -> None:
    text = "1 1 0 0 0 5 -1\n2 3 0 -6 0 1 1\n3 3 0 -20 0 1 2\n4 3 5 -30 0 0.5 3\n5 3 -5 -30 0 0.5 3\n"
    secs = sections(parse_swc(text))
    assert len(secs) == 4  # soma, the trunk, two branches
    branch = secs[2]
    assert branch.parent == 1 and branch.parent_x == 1.0
    assert np.allclose(branch.xyz[0], [0, -20, 0]) and branch.diam[0] == pytest.approx(2.0)


@pytest.mark.parametrize(("text", "line", "what"), [
    ("1 1 0 0 0 5 -1\n2 3 0 1 0 1 -1\n", "line 2", "2 roots"),
    ("1 1 0 0 0 5 -1\n2 3 0 1 0 1\n", "line 2", "expected 7 fields"),
    ("1 1 0 0 0 5 -1\n2 3 0 one 0 1 1\n", "line 2", "must be numbers"),
    ("1 1 0 0 0 5 -1\n2 3 0 1 0 1 7\n", "line 2", "not in the file"),
    ("1 1 0 0 0 5 -1\n1 3 0 1 0 1 1\n", "line 2", "duplicate id"),
    ("1 1 0 0 0 5 -1\n2 3 0 1 0 0 1\n", "line 2", "radius must be positive"),
])
def test_bad_files_name_the_line(tmp_path: Path, text: str, line: str, what: str) -> None:
    f = tmp_path / "bad.swc"
    f.write_text(text)
    with pytest.raises(MorphologyError) as e:
        read_swc(f)
    assert e.value.field == line and e.value.file == str(f) and what in str(e.value)


def test_a_cycle_and_an_empty_file_are_refused() -> None:
    with pytest.raises(MorphologyError, match="no root"):
        parse_swc("1 1 0 0 0 5 2\n2 3 0 1 0 1 1\n")
    with pytest.raises(MorphologyError, match="no points"):
        parse_swc("# only a comment\n")


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(MorphologyError) as e:
        read_swc(tmp_path / "nope.swc")
    assert "nope.swc" in str(e.value)


@st.composite
def trees(draw: st.DrawFn) -> str:
    n = draw(st.integers(2, 40))
    lines = ["1 1 0 0 0 5 -1"]
    for i in range(2, n + 1):
        parent = draw(st.integers(1, i - 1))
        kind = draw(st.sampled_from([2, 3, 4]))
        x, y, z = (draw(st.floats(-100, 100, allow_nan=False)) for _ in range(3))
        r = draw(st.floats(0.1, 5))
        lines.append(f"{i} {kind} {x} {y} {z} {r} {parent}")
    return "\n".join(lines) + "\n"


@settings(max_examples=40, deadline=None)
@given(trees())
def test_any_tree_round_trips_through_swc_text(text: str) -> None:
    m = parse_swc(text)
    again = parse_swc(m.to_swc())
    assert np.array_equal(m.parent, again.parent) and np.array_equal(m.types, again.types)
    assert np.allclose(m.xyz, again.xyz, rtol=1e-5, atol=1e-4)
    assert len(sections(m)) == len(sections(again))
    comp = compartmentalise(m)
    assert (comp.parent[1:] < np.arange(1, comp.n_nodes)).all() and comp.n_nodes >= len(sections(m))


def test_the_generated_pyramidal_cell_is_deterministic_and_has_every_region() -> None:
    a, b = pyramidal(), pyramidal()
    assert np.array_equal(a.xyz, b.xyz) and np.array_equal(a.parent, b.parent)
    assert {s.region for s in sections(a)} == {"soma", "axon", "basal", "apical"}


def test_the_paper_ca1_cell_has_154_sections(morphologies: Path) -> None:
    secs = sections(read_swc(morphologies / "ca1_n120_single_point_soma.swc"))
    assert len(secs) == 154 and secs[0].region == "soma"
    assert compartmentalise(secs, "d_lambda").area.astype(bool).sum() == 624  # NEURON's d_lambda count
