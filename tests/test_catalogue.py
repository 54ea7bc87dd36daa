"""The catalogue: Parquet round trip, determinism, atomic writes, filters and SQL."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from channelzoo.catalogue import Zoo, read_catalogue, write_catalogue
from channelzoo.channel import Channel
from channelzoo.errors import ZooError
from channelzoo.gates import AlphaBeta, Gate, InfTau, Rate, Tabulated
from channelzoo.grid import ICG_GRID_MV


def ab(alpha: tuple[str, list[float]], beta: tuple[str, list[float]]) -> AlphaBeta:
    return AlphaBeta(Rate.of(*alpha), Rate.of(*beta))


def hh_channels() -> list[Channel]:
    m = Gate("m", 3, ab(("HHExpLinearRate", [1.0, -40.0, 10.0]), ("HHExpRate", [4.0, -65.0, -18.0])))
    h = Gate("h", 1, ab(("HHExpRate", [0.07, -65.0, -20.0]), ("HHSigmoidRate", [1.0, -35.0, 10.0])))
    n = Gate("n", 4, ab(("HHExpLinearRate", [0.1, -55.0, 10.0]), ("HHExpRate", [0.125, -65.0, -80.0])), q10=3.0)
    t = Gate("x", 1, Tabulated((-100.0, 0.0, 100.0), (0.0, 0.5, 1.0), (1.0, 5.0, 1.0)), metadata={"note": "table"})
    bell = Rate.of("BellTau", [5, 100, -80, 15, -80, 15])
    b = Gate("q", 1, InfTau(Rate.of("HHSigmoidVariable", [1.0, -80.0, -8.0]), bell))
    return [
        Channel("hh-na", "Na", "test", 0.12, 50.0, (m, h), {"ref": "Hodgkin & Huxley 1952"}),
        Channel("hh-k", "K", "test", 0.036, -77.0, (n,)),
        Channel("tab-k", "K", "test", 0.01, -80.0, (t,)),
        Channel("ih", "IH", "test", 1e-4, -30.0, (b,)),
    ]


def test_round_trip_rebuilds_channels(tmp_path: Path) -> None:
    channels = hh_channels()
    zoo = Zoo.load(write_catalogue(channels, tmp_path / "z.parquet"))
    assert len(zoo) == 4 and len(zoo.rows) == 5
    assert zoo.channels() == channels
    assert zoo.channel("hh-na").metadata == {"ref": "Hodgkin & Huxley 1952"}
    assert zoo.channel("tab-k").gates[0].metadata == {"note": "table"}
    row = zoo.rows.iloc[0]
    assert len(row["x_inf"]) == len(ICG_GRID_MV) == len(row["tau"])
    assert row["structure"] == "m3h"


def test_same_channels_same_bytes(tmp_path: Path) -> None:
    a = write_catalogue(hh_channels(), tmp_path / "a.parquet").read_bytes()
    b = write_catalogue(hh_channels(), tmp_path / "b.parquet").read_bytes()
    assert a == b


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = write_catalogue(hh_channels(), tmp_path / "z.parquet")
    before = path.read_bytes()
    with pytest.raises(ZooError, match="appears twice"):
        write_catalogue(hh_channels() * 2, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["z.parquet"]


def test_filters_and_sql(tmp_path: Path) -> None:
    zoo = Zoo.load(write_catalogue(hh_channels(), tmp_path / "z.parquet"))
    assert zoo.filter(ion_class="K").ids == ["hh-k", "tab-k"]
    assert zoo.filter(ion_class=["Na", "IH"], source="test").ids == ["hh-na", "ih"]
    assert zoo.filter(ids=["ih"]).channel("ih").ion_class == "IH"
    counts = zoo.query('SELECT "class", count(*) AS gates FROM zoo GROUP BY 1 ORDER BY 1')
    assert counts.to_dict("records") == [{"class": "IH", "gates": 1}, {"class": "K", "gates": 2},
                                         {"class": "Na", "gates": 2}]
    with pytest.raises(ZooError, match="unknown channel"):
        zoo.channel("nope")
    with pytest.raises(ZooError, match="query failed"):
        zoo.query("SELECT nope FROM zoo")


def test_reading_something_else_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(ZooError, match="bad.parquet"):
        read_catalogue(bad)
    table = pq.read_table(write_catalogue(hh_channels(), tmp_path / "z.parquet"))
    pq.write_table(table.replace_schema_metadata({}), tmp_path / "old.parquet")
    with pytest.raises(ZooError, match="schema"):
        read_catalogue(tmp_path / "old.parquet")
