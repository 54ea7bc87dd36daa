"""`run zoo-fit --set zoo=icg` says which ICG folders it left out and why, in the words `zoo build` uses."""

import shutil
from pathlib import Path

import pytest
from conftest import SHARED

from channelzoo.icg import import_icg
from suite.cli import main

ICG = SHARED / "data" / "icg"
KD = ICG / "icg-channels-K" / "101629_kd.mod"
NA = ICG / "icg-channels-Na" / "101629_na3n.mod"
pytestmark = pytest.mark.skipif(not ICG.is_dir(), reason=f"needs the ICG clones at {ICG}")
FIT = ["--set", "models=[sm1]", "--set", "steps_per_stage=20", "--set", "stages=1", "--set", "seeds=1",
       "--tracking-uri", "none"]


def channel(root: Path, src: Path, name: str, omnimodel: str | None = None) -> Path:
    dst = root / src.parent.name / name
    dst.mkdir(parents=True)
    shutil.copy(src / "Readme.md", dst / "Readme.md")
    (dst / "omnimodel.md").write_text(omnimodel if omnimodel is not None else (src / "omnimodel.md").read_text())
    return dst


def clone_with_bad_folders(root: Path) -> Path:
    """Two good channels, one flagged by ICG (skipped), one truncated file (malformed), one without a file."""
    text = (KD / "omnimodel.md").read_text()
    channel(root, NA, NA.name)
    channel(root, KD, KD.name)
    channel(root, KD, "900001_kdflag.mod", text.replace("## ERROR FLAGS\n\n[]", "## ERROR FLAGS\n\n- 4\n- 11"))
    channel(root, KD, "900002_kdcut.mod", text[: text.index('"n_37"')])
    (channel(root, KD, "900003_kdnone.mod") / "omnimodel.md").unlink()
    return root


def test_run_reports_skipped_and_malformed_folders_as_zoo_build_does(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = clone_with_bad_folders(tmp_path / "icg")
    report = import_icg(root).report()
    assert "skipped     1: error flags 4, 11" in report and "skipped     1: no omnimodel.md" in report
    assert "900002_kdcut.mod/omnimodel.md" in report

    assert main(["--results", str(tmp_path / "r"), "zoo", "build", "--source", "icg", str(root)]) == 0
    assert report in capsys.readouterr().out

    args = ["--results", str(tmp_path / "r"), "run", "zoo-fit", "--set", "zoo=icg", "--set", f"zoo_path={root}"]
    assert main([*args, *FIT]) == 0
    err = capsys.readouterr().err
    assert f"ICG {root}: 2 channels; left out:\n{report}" in err


def test_icg_folder_with_no_usable_channel_is_exit_2_with_the_reasons(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "icg"
    text = (KD / "omnimodel.md").read_text()
    channel(root, KD, "900001_kdflag.mod", text.replace("## ERROR FLAGS\n\n[]", "## ERROR FLAGS\n\n- 4\n- 11"))
    args = ["--results", str(tmp_path / "r"), "run", "zoo-fit", "--set", "zoo=icg", "--set", f"zoo_path={root}"]
    assert main([*args, *FIT]) == 2
    err = capsys.readouterr().err
    assert "field 'zoo_path'" in err and "no usable ICG channel" in err and "error flags 4, 11" in err
    assert not (tmp_path / "r" / "sweeps").exists()
