"""The recording experiment: its config, its scores, and the expert fit on a synthetic recording."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from channelzoo.errors import InputError
from suite.cli import main
from suite.config import ConfigError, load_config
from suite.experiments.recording import RecordingConfig, load_sweeps
from suite.recordings.cell import F64, RecordingCell
from suite.recordings.scores import score_sweep, stimulus_window, subthreshold_rmse

pytestmark = pytest.mark.usefixtures("one_thread")


def small_config(tmp_path: Path) -> Path:
    """A config file naming a three-sample CSV recording (sweep 1), so no test needs the shared data."""
    f = tmp_path / "c_1.csv"
    f.write_text("t [ms],I [nA],V [mV]\n0,0,-70\n0.25,0,-70\n0.5,0,-70\n")
    config = tmp_path / "recording.yaml"
    config.write_text(f"recording: [{f}]\ntrain_sweeps: [1]\ntest_sweeps: []\n")
    return config


def test_config_rejects_bad_values(tmp_path: Path) -> None:
    path = small_config(tmp_path)
    assert load_config(RecordingConfig, path).train_sweeps == (1,)
    with pytest.raises(ConfigError, match="kinds"):
        load_config(RecordingConfig, path, ["kinds=[expert, bogus]"])
    with pytest.raises(ConfigError, match="both trained and tested"):
        load_config(RecordingConfig, path, ["test_sweeps=[1, 2]"])
    with pytest.raises(ConfigError, match="window_ms"):
        load_config(RecordingConfig, path, ["window_ms=0"])
    with pytest.raises(ConfigError, match=r"nope\.csv.*no such file"):
        load_config(RecordingConfig, path, [f"recording=[{tmp_path}/nope.csv]"])


def test_missing_sweep_or_file_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = small_config(tmp_path)
    config = load_config(RecordingConfig, path, ["test_sweeps=[2]"])
    with pytest.raises(InputError, match=r"no sweep\(s\) \[2\]"):
        load_sweeps(config)
    code = main(["--results", str(tmp_path / "res"), "run", "recording", "--config", str(path), "--set",
                 f"recording=[{tmp_path}/nope.csv]", "--tracking-uri", "none"])
    assert code == 2
    assert "nope.csv" in capsys.readouterr().err
    assert not (tmp_path / "res").exists()  # nothing written


def test_scores_of_a_trace_against_itself_and_a_shifted_one() -> None:
    t = np.arange(0, 1000, 0.25)
    i = np.where((t >= 200) & (t < 800), 0.2, -0.02)
    v = np.full_like(t, -80.0)
    for s in np.arange(250, 800, 50.0):  # 11 spikes, 1 ms wide
        v[(t >= s) & (t < s + 1)] = 20.0
    assert stimulus_window(t, i) == (200.0, 800.0)
    same = score_sweep(t, i, v, v)
    assert same["gamma"] == pytest.approx(1.0) and same["n_spikes"] == 11 and same["rmse_subthreshold_mv"] == 0.0
    late = np.roll(v, 40) + 1.0  # every spike 10 ms late, 1 mV up: no coincidence within 4 ms
    shifted = score_sweep(t, i, v, late)
    assert shifted["gamma"] < 0.1 and shifted["n_spikes"] == 11
    assert shifted["rmse_subthreshold_mv"] == pytest.approx(1.0)
    assert subthreshold_rmse(t, v, v + 2.0, []) == pytest.approx(2.0)


def test_hybrid_gate_starts_at_the_expert_gate() -> None:
    cell = RecordingCell("hybrid_gate", seed=1)
    v = torch.linspace(-90, 30, 61, dtype=F64)
    with torch.no_grad():
        inf, tau = cell.gate_rates(v)
        inf_e, tau_e = cell.expert_rates(v)
    assert float((inf[2] - inf_e[2]).abs().max()) < 0.05
    assert float((tau[2].log() - tau_e[2].log()).abs().max()) < 0.3
