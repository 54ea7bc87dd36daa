"""Configuration: YAML, then --set overrides; unknown keys and bad values are named."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from suite.cli import main
from suite.config import ConfigError, load_config


@dataclass(frozen=True)
class Example:
    steps: int = 10
    lr: float = 1e-3
    kinds: tuple[str, ...] = ("node",)
    device: str | None = None
    compile: bool = False


def test_defaults_then_file_then_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("steps: 20\nkinds: [node, sm1]\n")
    c = load_config(Example, f, ["lr=1e-2", "compile=true", "device=cuda"])
    assert c == Example(steps=20, lr=0.01, kinds=("node", "sm1"), device="cuda", compile=True)


@pytest.mark.parametrize(("yaml_text", "overrides", "field"), [
    ("stepz: 3\n", [], "stepz"),
    ("", ["stepz=3"], "stepz"),
    ("steps: many\n", [], "steps"),
    ("", ["compile=3"], "compile"),
    ("", ["steps"], "steps"),
])
def test_bad_keys_and_values_name_the_field(tmp_path: Path, yaml_text: str, overrides: list[str], field: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        load_config(Example, f, overrides)
    assert e.value.field == field


def test_unreadable_or_non_mapping_file_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("- a list\n")
    with pytest.raises(ConfigError, match=str(f)):
        load_config(Example, f)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(Example, tmp_path / "missing.yaml")


@dataclass(frozen=True)
class Paired:
    source: str = "generated"
    path: str = ""

    def __post_init__(self) -> None:
        if self.source == "file" and not self.path:
            raise ConfigError("source=file needs path", field="path")


def test_overrides_that_only_make_sense_together_are_checked_together() -> None:
    assert load_config(Paired, None, ["source=file", "path=/data"]) == Paired("file", "/data")
    with pytest.raises(ConfigError) as e:
        load_config(Paired, None, ["source=file"])
    assert e.value.field == "path"


@pytest.mark.parametrize(("experiment", "override", "field"), [
    ("zoo-fit", "width=0", "width"), ("zoo-fit", "depth=-1", "depth"), ("zoo-fit", "lr=nan", "lr"),
    ("zoo-fit", "lr=-1", "lr"), ("zoo-fit", "activation=foo", "activation"), ("zoo-fit", "loss=foo", "loss"),
    ("zoo-fit", "max_gates=-5", "max_gates"),
    ("recovery", "width=0", "width"), ("recovery", "dt=0", "dt"), ("recovery", "stage_steps=[-5, -5, -5]",
                                                                         "stage_steps"),
    ("recovery", "tf_steps=-1", "tf_steps"), ("recovery", "lr=inf", "lr"), ("recovery", "t_off=60", "t_off"),
    ("reduction", "dt=0", "dt"), ("reduction", "ra=-100", "ra"), ("reduction", "closed_lr=nan", "closed_lr"),
    ("reduction", "curriculum=[0.5, 2.0, 1.0]", "curriculum"),
])
def test_a_bad_value_stops_the_run_before_any_job(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   experiment: str, override: str, field: str) -> None:
    """Exit 2 naming the field, and nothing written: no table, no sweep record, no tracking database."""
    code = main(["--results", str(tmp_path / "results"), "run", experiment, "--preset", "quick", "--set", override,
                 "--tracking-uri", "none"])
    assert code == 2
    assert field in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
