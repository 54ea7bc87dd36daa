"""Readers of current-clamp recordings: each format on a file the test writes, and the shared B6 cell."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from channelzoo.errors import InputError
from suite.recordings import Units, read_recording
from tests.conftest import SHARED

B6 = SHARED / "data" / "recordings" / "bluepyefe_B6"


def write_csv(path: Path, header: str, rows: np.ndarray) -> Path:
    path.write_text(header + "\n" + "\n".join(",".join(f"{x:.6g}" for x in r) for r in rows) + "\n")
    return path


def test_csv_converts_units_and_names_the_sweep(tmp_path: Path) -> None:
    t = np.arange(5) * 0.2  # ms
    rows = np.column_stack([t * 1e-3, [0, 100, 100, 100, 0], [-0.07, -0.06, 0.02, -0.05, -0.07]])
    write_csv(tmp_path / "cellA_sweep12.csv", "t [s],I [pA],V [V]", rows)
    (s,) = read_recording([tmp_path], Units(junction_mv=10.0))
    assert (s.cell, s.sweep) == ("cellA", 12)
    assert s.dt == pytest.approx(0.2)
    np.testing.assert_allclose(s.i, [0, 0.1, 0.1, 0.1, 0])
    np.testing.assert_allclose(s.v, [-70, -60, 20, -50, -70])
    np.testing.assert_allclose(s.v_corrected, [-80, -70, 10, -60, -80])


def test_csv_without_units_takes_the_callers_and_fails_without(tmp_path: Path) -> None:
    f = write_csv(tmp_path / "c_1.csv", "t,I,V", np.array([[0, 1, -70], [0.1, 1, -69]]))
    (s,) = read_recording([f], Units(current="nA", voltage="mV", time="ms"))
    np.testing.assert_allclose(s.i, [1, 1])
    with pytest.raises(InputError, match=r"c_1\.csv.*current unit"):
        read_recording([f], Units(voltage="mV", time="ms"))


@pytest.mark.parametrize("header, body, match", [
    ("t [ms],I [nA]", "0,1\n0.1,1\n", "missing column"),
    ("t [ms],I [nA],V [mV]", "0,1,-70\n0.1,1\n", "readable CSV"),
    ("t [ms],I [nA],V [furlong]", "0,1,-70\n0.1,1,-70\n", "unknown voltage unit"),
    ("t [ms],I [nA],V [mV]", "0,1,-70\n0.1,1,nan\n", "non-finite voltage"),
    ("t [ms],I [nA],V [mV]", "0,1,-70\n0.1,1,-70\n0.3,1,-70\n", "equal steps"),
])
def test_bad_csv_is_an_input_error_naming_the_file(tmp_path: Path, header: str, body: str, match: str) -> None:
    f = tmp_path / "bad_3.csv"
    f.write_text(header + "\n" + body)
    with pytest.raises(InputError, match=match) as err:
        read_recording([f])
    assert "bad_3.csv" in str(err.value)


def test_missing_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_recording([tmp_path / "nope.csv"])
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(InputError, match="unknown recording format"):
        read_recording([tmp_path / "x.txt"])


def write_nwb(path: Path, n: int = 200, rate: float = 10000.0, stim_len: int | None = None,
              with_stimulus: bool = True) -> None:
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.icephys import CurrentClampSeries, CurrentClampStimulusSeries

    nwb = NWBFile("test", "cell7", datetime(2024, 1, 1, tzinfo=UTC))
    dev = nwb.create_device("amp")
    elec = nwb.create_icephys_electrode(name="e0", description="", device=dev)
    for sweep in (3, 4):
        v = (-0.07 + 0.001 * sweep * np.sin(np.arange(n) / 10)).astype(np.float32)  # V
        i = np.full(stim_len or n, 50.0 * sweep, dtype=np.float32)  # pA via conversion 1e-12
        nwb.add_acquisition(CurrentClampSeries(name=f"resp{sweep}", data=v, electrode=elec, rate=rate, gain=1.0,
                                               sweep_number=sweep, starting_time=0.0))
        if with_stimulus:
            nwb.add_stimulus(CurrentClampStimulusSeries(name=f"stim{sweep}", data=i, electrode=elec, rate=rate,
                                                        gain=1.0, sweep_number=sweep, conversion=1e-12,
                                                        starting_time=0.0))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


def test_nwb_pairs_series_by_sweep_number_and_converts_si(tmp_path: Path) -> None:
    write_nwb(tmp_path / "c.nwb")
    sweeps = read_recording([tmp_path / "c.nwb"], Units(junction_mv=5.0))
    assert [(s.cell, s.sweep) for s in sweeps] == [("cell7", 3), ("cell7", 4)]
    assert sweeps[0].dt == pytest.approx(0.1)
    np.testing.assert_allclose(sweeps[1].i, 0.2, rtol=1e-6)  # 200 pA
    assert sweeps[0].v[0] == pytest.approx(-70.0, abs=1e-3)
    assert sweeps[0].junction_mv == 5.0


def test_nwb_missing_stimulus_or_length_mismatch(tmp_path: Path) -> None:
    write_nwb(tmp_path / "a.nwb", with_stimulus=False)
    with pytest.raises(InputError, match=r"a\.nwb.*no CurrentClampStimulusSeries"):
        read_recording([tmp_path / "a.nwb"])
    write_nwb(tmp_path / "b.nwb", stim_len=150)
    with pytest.raises(InputError, match=r"b\.nwb.*differ in length"):
        read_recording([tmp_path / "b.nwb"])
    (tmp_path / "c.nwb").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match=r"c\.nwb.*not a readable NWB"):
        read_recording([tmp_path / "c.nwb"])


def test_abf_voltage_with_no_stimulus_is_an_error_and_garbage_is_unreadable(tmp_path: Path) -> None:
    # pyabf writes single-channel ABF1 files only: a voltage channel without any stimulus.
    from pyabf.abfWriter import writeABF1

    writeABF1(np.full((2, 1000), -70.0, dtype=np.float32), str(tmp_path / "v.abf"), 10000, units="mV")
    with pytest.raises(InputError, match=r"v\.abf.*no current channel"):
        read_recording([tmp_path / "v.abf"])
    writeABF1(np.ones((2, 1000), dtype=np.float32), str(tmp_path / "i.abf"), 10000, units="pA")
    with pytest.raises(InputError, match=r"i\.abf.*no voltage channel"):
        read_recording([tmp_path / "i.abf"])
    (tmp_path / "g.abf").write_bytes(b"\0" * 64)
    with pytest.raises(InputError, match=r"g\.abf.*not a readable ABF"):
        read_recording([tmp_path / "g.abf"])


def test_abf_reads_voltage_and_command_current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A voltage channel plus the protocol's command (pA): pyabf cannot write a protocol, so the
    command waveform of a written file is supplied by patching the reader's view of it."""
    import pyabf
    from pyabf.abfWriter import writeABF1

    v = np.tile(np.linspace(-70, -60, 1000, dtype=np.float32), (2, 1))
    writeABF1(v, str(tmp_path / "cc.abf"), 20000, units="mV")
    monkeypatch.setattr(pyabf.ABF, "sweepC", property(lambda self: np.full(1000, 25.0 * (self.sweepNumber + 1))))
    monkeypatch.setattr(pyabf.ABF, "_getDacNameAndUnits", lambda self, channel: ("cmd", "pA"))
    sweeps = read_recording([tmp_path / "cc.abf"])
    assert [s.sweep for s in sweeps] == [0, 1]
    assert sweeps[0].dt == pytest.approx(0.05)
    np.testing.assert_allclose(sweeps[1].i, 0.05)
    np.testing.assert_allclose(sweeps[0].v, v[0], atol=0.01)


def copy_b6(tmp_path: Path, names: dict[str, str]) -> Path:
    """B6 waves copied under other names (Igor files are the shared ones: nothing here writes .ibw)."""
    if not B6.is_dir():
        pytest.skip(f"no B6 recordings at {B6}")
    for src, dst in names.items():
        (tmp_path / dst).write_bytes((B6 / src).read_bytes())
    return tmp_path


def test_igor_pairs_channels_by_name_and_unit(tmp_path: Path) -> None:
    copy_b6(tmp_path, {"B6_Ch0_IDRest_181.ibw": "C1_Ch0_X_7.ibw", "B6_Ch3_IDRest_181.ibw": "C1_Ch3_X_7.ibw"})
    (s,) = read_recording([tmp_path], Units(junction_mv=14.0))
    assert (s.cell, s.sweep, s.dt) == ("C1", 7, pytest.approx(0.25))
    (ref,) = read_recording([B6 / "B6_Ch0_IDRest_181.ibw", B6 / "B6_Ch3_IDRest_181.ibw"])
    np.testing.assert_allclose(s.v_corrected, ref.v - 14.0)


def test_igor_missing_channel_mismatched_sweeps_and_junk(tmp_path: Path) -> None:
    copy_b6(tmp_path, {"B6_Ch3_IDRest_181.ibw": "C1_Ch3_X_7.ibw"})
    with pytest.raises(InputError, match=r"C1_Ch3_X_7\.ibw.*no current wave"):
        read_recording([tmp_path])
    copy_b6(tmp_path, {"B6_Ch3_IDRest_182.ibw": "C1_Ch0_X_7.ibw"})  # two voltage waves
    with pytest.raises(InputError, match="two voltage waves"):
        read_recording([tmp_path])
    (tmp_path / "C1_Ch0_X_7.ibw").write_bytes(b"junk")
    with pytest.raises(InputError, match=r"C1_Ch0_X_7\.ibw.*not a readable Igor"):
        read_recording([tmp_path])
    (tmp_path / "oddname.ibw").write_bytes(b"junk")
    with pytest.raises(InputError, match=r"oddname\.ibw.*names must read"):
        read_recording([tmp_path / "oddname.ibw"])


def test_b6_sweeps_read_in_the_readme_units() -> None:
    if not B6.is_dir():
        pytest.skip(f"no B6 recordings at {B6}")
    sweeps = read_recording([B6], Units(junction_mv=14.0))
    assert [s.sweep for s in sweeps] == [181, 182, 183, 184, 185]
    for s in sweeps:
        assert s.cell == "B6" and s.dt == pytest.approx(0.25) and len(s.t) == 12000
        assert -0.05 < np.median(s.i[:2000]) < 0.0  # holding about -20 pA, in nA
        assert -95 < np.median(s.v_corrected[:2000]) < -75  # rest after the 14 mV junction potential
    steps = [np.median(s.i[4000:10000]) - np.median(s.i[:2000]) for s in sweeps]
    np.testing.assert_allclose(np.diff(steps), 0.06, atol=0.005)  # five amplitudes 60 pA apart
    assert 0.09 < steps[0] < 0.13
