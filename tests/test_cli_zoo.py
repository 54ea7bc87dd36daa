"""`hybridbench zoo ...` as a user runs it: outputs, files, and exit code 2 on bad input."""

from pathlib import Path

import pytest
from conftest import ICG_FIXTURE

from suite.cli import main


def test_build_list_show_plot_generated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = str(tmp_path / "results")
    assert main(["--results", results, "zoo", "build", "--n", "40", "--seed", "1"]) == 0
    assert "40 channels" in capsys.readouterr().out
    assert main(["--results", results, "zoo", "list", "--class", "Na"]) == 0
    listing = capsys.readouterr().out
    assert "gen-Na-" in listing and "gen-K-" not in listing
    channel_id = listing.splitlines()[1].split()[0]
    assert main(["--results", results, "zoo", "show", channel_id]) == 0
    assert '"power": 3' in capsys.readouterr().out
    png = tmp_path / "na.png"
    assert main(["--results", results, "zoo", "plot", channel_id, "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_build_icg(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = str(tmp_path / "results")
    assert main(["--results", results, "zoo", "build", "--source", "icg", str(ICG_FIXTURE)]) == 0
    out = capsys.readouterr().out
    assert "4 channels" in out and "no omnimodel.md" in out and "116094_kca.mod" in out
    assert main(["--results", results, "zoo", "show", "114637_ical"]) == 0


@pytest.mark.parametrize("args", [
    ["zoo", "show", "no-such-channel"],
    ["zoo", "build", "--source", "icg"],
    ["zoo", "build", "--source", "icg", "/nonexistent/icg"],
    ["zoo", "build", "--n", "0"],
])
def test_bad_input_exits_2_with_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
                                            ) -> None:
    results = tmp_path / "results"
    if args[1] == "show":
        main(["--results", str(results), "zoo", "build", "--n", "5"])
        capsys.readouterr()
    assert main(["--results", str(results), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hybridbench: error:")
    assert not list(results.glob("zoo/.*.tmp"))


def test_corrupt_catalogue_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "generated.parquet").write_text("garbage")
    assert main(["--results", str(tmp_path), "zoo", "list"]) == 2
    assert "generated.parquet" in capsys.readouterr().err
